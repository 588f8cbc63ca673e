//! Models users bring: constant channels (BatchNorm with γ ≈ 0), huge biases, and bad
//! calibration data. Every integer mode must quantize them into a graph that validates,
//! or refuse the data with a message that says where the problem is.

use lutq_interp::int::IntInterpreter;
use lutq_ir::int::{IntGraph, IntOp};
use lutq_ir::{Conv, FusedActivation, Gemm, Graph, Op, Tensor, TensorType};
use lutq_quant::{Mode, QuantError, QuantOptions, QuantReport, quantize};

/// Every integer mode, and the LUT modes with one table per channel and with table groups
/// too.
fn integer_options() -> Vec<QuantOptions> {
    let mut out = Vec::new();
    for mode in Mode::ALL.into_iter().filter(|&m| m != Mode::Fp32) {
        out.push(QuantOptions::new(mode));
        if matches!(mode, Mode::Lut4PotLayer | Mode::Lut4PotChannel) {
            out.push(QuantOptions {
                lut_per_channel: true,
                ..QuantOptions::new(mode)
            });
            out.push(QuantOptions {
                lut_tables: Some(3),
                ..QuantOptions::new(mode)
            });
        }
    }
    out
}

fn label(o: &QuantOptions) -> String {
    format!(
        "{}{}",
        o.mode,
        if o.lut_per_channel {
            " per-channel tables".to_string()
        } else if let Some(n) = o.lut_tables.filter(|&n| n > 1) {
            format!(" {n} table groups")
        } else {
            String::new()
        }
    )
}

/// A deterministic pseudo-random value in [-1, 1).
fn noise(i: usize) -> f32 {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    (x % 2000) as f32 / 1000.0 - 1.0
}

/// `x [1, 3, 6, 6] → conv 3×3 (8 channels) [→ relu]`: channel 2 has the folded weights of
/// a BatchNorm with γ ≈ 0 (1e-9) and bias 1.0, channel 5 all-zero weights and bias −0.25.
fn gamma_zero_conv(relu: bool) -> Graph {
    let (c, o) = (3, 8);
    let mut w: Vec<f32> = (0..o * c * 9).map(|i| 0.3 * noise(i)).collect();
    let mut b: Vec<f32> = (0..o).map(|i| 0.1 * noise(1000 + i)).collect();
    for (k, v) in w[2 * c * 9..3 * c * 9].iter_mut().enumerate() {
        *v = if k % 2 == 0 { 1e-9 } else { -1e-9 };
    }
    b[2] = 1.0;
    w[5 * c * 9..6 * c * 9].fill(0.0);
    b[5] = -0.25;
    let mut g = Graph::new("gamma_zero");
    let x = g.add_input("x", TensorType::f32([1, c, 6, 6]));
    let wn = g.add_constant("w", Tensor::f32([o, c, 3, 3], w).unwrap());
    let bn = g.add_constant("b", Tensor::f32([o], b).unwrap());
    let conv = Conv {
        pads: [1; 4],
        activation: relu.then_some(FusedActivation::Relu),
        ..Conv::default()
    };
    let y = g.add_node("conv", Op::Conv(conv), &[x, wn, bn]).unwrap();
    g.add_output("y", y).unwrap();
    g
}

/// `x [1, 8] → gemm (3 outputs) [→ relu]` with biases `huge`, `−huge` and 0.
fn huge_bias_gemm(huge: f32, relu: bool) -> Graph {
    let k = 8;
    let mut g = Graph::new("huge_bias");
    let x = g.add_input("x", TensorType::f32([1, k]));
    let w: Vec<f32> = (0..3 * k).map(|i| 0.5 + 0.5 * noise(i)).collect();
    let w = g.add_constant("w", Tensor::f32([k, 3], w).unwrap());
    let b = g.add_constant("b", Tensor::f32([3], vec![huge, -huge, 0.0]).unwrap());
    let gemm = Gemm {
        activation: relu.then_some(FusedActivation::Relu),
        ..Gemm::default()
    };
    let y = g.add_node("huge_fc", Op::Gemm(gemm), &[x, w, b]).unwrap();
    g.add_output("y", y).unwrap();
    g
}

fn calibration(shape: &[usize], samples: usize, offset: usize) -> Tensor {
    let per: usize = shape[1..].iter().product();
    let mut s = shape.to_vec();
    s[0] = samples;
    Tensor::f32(
        s,
        (0..samples * per)
            .map(|i| 0.5 + 0.5 * noise(offset + i))
            .collect(),
    )
    .unwrap()
}

/// Float and integer outputs (dequantized) of `graph` on `data`, and the output step.
fn outputs(graph: &Graph, int: &IntGraph, data: &Tensor) -> (Vec<f32>, Vec<f32>, f64) {
    let float = lutq_interp::run_batch(graph, data, None).unwrap();
    let q = IntInterpreter::new(int)
        .unwrap()
        .run_batch(data, None)
        .unwrap();
    let step = int.ty(int.outputs[0].value).step();
    (
        float.as_f32().unwrap().to_vec(),
        q[0].as_f32().unwrap().to_vec(),
        step,
    )
}

fn linear_layers(g: &IntGraph) -> Vec<&lutq_ir::int::QLinear> {
    g.nodes
        .iter()
        .filter_map(|n| match &n.op {
            IntOp::Linear(l) => Some(l),
            _ => None,
        })
        .collect()
}

#[test]
fn gamma_zero_channels_quantize_in_every_mode_and_keep_their_bias() {
    for relu in [true, false] {
        let graph = gamma_zero_conv(relu);
        let calib = calibration(&[1, 3, 6, 6], 48, 0);
        let data = calibration(&[1, 3, 6, 6], 8, 99_999);
        for options in integer_options() {
            let name = format!("{} (relu: {relu})", label(&options));
            let (g, report): (IntGraph, QuantReport) = quantize(&graph, &calib, &options, &|_| {})
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            g.validate().unwrap();
            let layer = &report.layers[0];
            assert_eq!(layer.constant_channels, 2, "{name}");
            assert!(layer.accumulator_headroom <= 1.0, "{name}");
            // Both constant channels have exact zero weights.
            let l = linear_layers(&g)[0];
            let w = l.weights.decode();
            let k = l.weights.row_len();
            for o in [2, 5] {
                assert!(
                    w[o * k..(o + 1) * k].iter().all(|&v| v == 0),
                    "{name}: row {o}"
                );
            }
            let (float, int, step) = outputs(&graph, &g, &data);
            let plane = 36;
            for o in [2, 5] {
                for s in 0..8 {
                    for p in 0..plane {
                        let i = (s * 8 + o) * plane + p;
                        assert!(
                            (float[i] - int[i]).abs() as f64 <= step,
                            "{name}: channel {o}: float {} vs {} (step {step})",
                            float[i],
                            int[i]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn huge_biases_quantize_in_every_mode() {
    // Quantized at f_x + f_w, a bias of 1e6 (or 1e12) saturates i32 at the exponent the
    // weights would choose. With a ReLU output the output step is so coarse that the
    // weights cannot move it (constant channels); with the i32 accumulator as output the
    // weights still matter and the exponent is capped instead. Either way the graph
    // validates and reproduces the float output within one output step.
    for (huge, relu) in [(1e6, true), (1e6, false), (1e12, true), (1e12, false)] {
        let graph = huge_bias_gemm(huge, relu);
        let calib = calibration(&[1, 8], 32, 7);
        let data = calibration(&[1, 8], 16, 4242);
        for options in integer_options() {
            let options = QuantOptions {
                bias_correction: false,
                ..options
            };
            let name = format!("{} (bias {huge:e}, relu: {relu})", label(&options));
            let (g, report) = quantize(&graph, &calib, &options, &|_| {})
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            g.validate().unwrap();
            let layer = &report.layers[0];
            if relu {
                assert_eq!(layer.constant_channels, 3, "{name}: {layer:?}");
            } else if huge < 1e9 && options.mode == Mode::Lut4PotChannel {
                // 1e6 · 2^(8 + 7) > 2^31 (int4 scales are 2^4 coarser and fit).
                assert!(layer.capped_exponents >= 1, "{name}: {layer:?}");
            }
            if huge > 1e9 {
                // Beyond 2^30 the activation histograms clip (`calib.rs`): the output
                // exponent cannot hold the value, only validity is asked.
                continue;
            }
            let (float, int, step) = outputs(&graph, &g, &data);
            let row_sums = huge_bias_row_sums();
            let mut worst: f64 = 0.0;
            for s in 0..16 {
                for (o, &row_sum) in row_sums.iter().enumerate().take(2) {
                    let i = s * 3 + o;
                    // Plus the f32 rounding of both sides. The i32 output's step is far
                    // finer than 4-bit weights: there the (live, capped) channel is also
                    // off by its weights' quantization error, re-rounded at an exponent 4
                    // below the fitted one; on a shared table, whose entries near zero
                    // are sparse, that is up to 3.4 here against Σ|w| · max x ≈ 4.5 (the
                    // error of dropping the weights); uniform grids and per-channel tables
                    // stay within f32 rounding.
                    let weights = if relu { 0.0 } else { row_sum };
                    let tolerance =
                        step + weights + 2.0 * (float[i].abs() as f64) * f64::from(f32::EPSILON);
                    worst = worst.max((float[i] as f64 - int[i] as f64).abs() - step);
                    assert!(
                        (float[i] as f64 - int[i] as f64).abs() <= tolerance,
                        "{name}: channel {o}: float {} vs {} (step {step})",
                        float[i],
                        int[i]
                    );
                }
            }
            eprintln!("{name}: largest error beyond one step {worst:.3}");
        }
    }
}

/// Σ|w| of each row of [`huge_bias_gemm`].
fn huge_bias_row_sums() -> Vec<f64> {
    let k = 8;
    (0..3)
        .map(|o| {
            (0..k)
                .map(|j| (0.5 + 0.5 * noise(j * 3 + o)).abs() as f64)
                .sum()
        })
        .collect()
}

#[test]
fn non_finite_calibration_values_are_refused_with_their_place() {
    let graph = gamma_zero_conv(true);
    for (value, word) in [
        (f32::NAN, "NaN"),
        (f32::INFINITY, "+inf"),
        (f32::NEG_INFINITY, "-inf"),
    ] {
        let mut calib = calibration(&[1, 3, 6, 6], 5, 0).as_f32().unwrap().to_vec();
        // Sample 3, element 1 · 36 + 4 · 6 + 3 = 63.
        calib[3 * 108 + 63] = value;
        let calib = Tensor::f32([5, 3, 6, 6], calib).unwrap();
        let err = quantize(
            &graph,
            &calib,
            &QuantOptions::new(Mode::Lut4PotChannel),
            &|_| {},
        )
        .unwrap_err();
        let QuantError::NonFinite(v) = &err else {
            panic!("{err}")
        };
        assert_eq!((v.sample, v.element, v.value), (3, 63, word));
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "sample 3, element 63 (channel 1, y 4, x 3) is {word}. Fix:"
            )),
            "{text}"
        );
    }
}

#[test]
fn constant_calibration_data_quantizes_with_warnings() {
    let graph = gamma_zero_conv(true);
    for options in integer_options() {
        for fill in [0.0f32, 0.5] {
            let calib = Tensor::f32([4, 3, 6, 6], vec![fill; 4 * 108]).unwrap();
            let (g, report) = quantize(&graph, &calib, &options, &|_| {})
                .unwrap_or_else(|e| panic!("{}: {e}", label(&options)));
            g.validate().unwrap();
            let all = report.warnings.join("\n");
            assert!(all.contains("calibration data is constant"), "{all}");
            assert!(all.contains("only 4 calibration samples"), "{all}");
            assert!(all.contains("input channels are constant"), "{all}");
        }
    }
    // One constant input channel of three.
    let mut calib = calibration(&[1, 3, 6, 6], 32, 0).as_f32().unwrap().to_vec();
    for s in 0..32 {
        calib[s * 108 + 36..s * 108 + 72].fill(0.0);
    }
    let calib = Tensor::f32([32, 3, 6, 6], calib).unwrap();
    let (_, report) = quantize(
        &graph,
        &calib,
        &QuantOptions::new(Mode::Int8PotChannel),
        &|_| {},
    )
    .unwrap();
    let all = report.warnings.join("\n");
    assert!(
        all.contains("calibration input channel 1 (= 0) of 3 is constant"),
        "{all}"
    );
    assert!(!all.contains("calibration samples:"), "{all}");
}

#[test]
fn too_few_patches_are_reported_with_the_samples_needed() {
    // A dense layer with fan-in 32 fitted on 8 samples: H has rank ≤ 8.
    let k = 32;
    let mut g = Graph::new("wide_fc");
    let x = g.add_input("x", TensorType::f32([1, k]));
    let w: Vec<f32> = (0..4 * k).map(noise).collect();
    let w = g.add_constant("w", Tensor::f32([k, 4], w).unwrap());
    let y = g
        .add_node("fc", Op::Gemm(Gemm::default()), &[x, w])
        .unwrap();
    g.add_output("y", y).unwrap();
    let calib = calibration(&[1, k], 8, 0);
    let (_, report) = quantize(
        &g,
        &calib,
        &QuantOptions::new(Mode::Lut4PotChannel),
        &|_| {},
    )
    .unwrap();
    let all = report.warnings.join("\n");
    assert!(
        all.contains("layer 'fc': the weight fit saw 8 input patches for a fan-in of 32")
            && all.contains("at least 32 samples (96 for float targets)"),
        "{all}"
    );
    // Enough for H, not for float targets.
    let calib = calibration(&[1, k], 64, 0);
    let (_, report) = quantize(
        &g,
        &calib,
        &QuantOptions::new(Mode::Lut4PotChannel),
        &|_| {},
    )
    .unwrap();
    let all = report.warnings.join("\n");
    assert!(
        all.contains("saw 64 input patches for a fan-in of 32, fewer than the 96"),
        "{all}"
    );
    let calib = calibration(&[1, k], 96, 0);
    let (_, report) = quantize(
        &g,
        &calib,
        &QuantOptions::new(Mode::Lut4PotChannel),
        &|_| {},
    )
    .unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[test]
fn a_zero_lut_entry_for_constant_rows_costs_little() {
    // A shared table must hold an exact 0 once any row is constant. Cost: the output
    // error of the live rows with one zero row added, against without it.
    use lutq_quant::fit::{FitOptions, LayerProblem, ScaleKind, WeightFormat, fit_layer};
    let (rows, k) = (32, 48);
    // Weights without any near-zero mass, where a forced 0 entry costs most.
    let live: Vec<f32> = (0..rows * k)
        .map(|i| {
            let v = noise(i);
            v.signum() * (0.2 + 0.8 * v.abs()) * (1.0 + (i / k) as f32 / rows as f32)
        })
        .collect();
    let mut with_zero = live.clone();
    with_zero.extend(std::iter::repeat_n(0.0, k));
    for scale in [ScaleKind::PotLayer, ScaleKind::PotChannel] {
        for data_aware in [false, true] {
            let options = FitOptions {
                format: WeightFormat::Lut4,
                scale,
                data_aware,
            };
            let fit = |w: &[f32], rows: usize| {
                fit_layer(
                    &LayerProblem {
                        weights: w,
                        rows,
                        row_len: k,
                        hessians: &[],
                    },
                    &options,
                )
            };
            let base = fit(&live, rows);
            let zero = fit(&with_zero, rows + 1);
            assert!(zero.levels[rows * k..].iter().all(|&l| l == 0));
            assert!(zero.lut.unwrap().contains(&0));
            let ratio = zero.output_error / base.output_error;
            eprintln!(
                "{scale:?} data-aware {data_aware}: error with a zero row / without: {ratio:.3} \
                 (table {:?} → {:?})",
                base.lut.unwrap(),
                zero.lut.unwrap()
            );
            assert!(ratio < 1.5, "{scale:?} {data_aware}: {ratio}");
        }
    }
}
