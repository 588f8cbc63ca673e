//! `--reconstruct` on a bundled model: every layer is reported, no layer ends with a
//! worse held-out error than its fast fit, and the program is an ordinary integer
//! program (it validates and the golden interpreter runs it).

use lutq_interp::int::IntInterpreter;
use lutq_quant::reconstruct::ReconstructOptions;
use lutq_quant::{Mode, QuantOptions, quantize};

#[test]
fn reconstruction_never_ends_worse_than_the_fast_fit_on_held_out_samples() {
    let graph = lutq_bundled::optimized("fashion_resnet8").unwrap();
    let calib = lutq_bundled::fashion_calib(32).unwrap();
    for mode in [Mode::Lut4PotChannel, Mode::Int4PotLayer] {
        let options = QuantOptions {
            reconstruct: Some(ReconstructOptions {
                iterations: 150,
                ..Default::default()
            }),
            ..QuantOptions::new(mode)
        };
        let (program, report) = quantize(&graph, &calib, &options, &|_| {}).unwrap();
        // One entry per linear layer with at least as many training patches as inputs,
        // in order: every conv; not the classifier (24 training images, one row each,
        // for 64 inputs).
        let names: Vec<&str> = report
            .layers
            .iter()
            .map(|l| l.name.as_str())
            .filter(|&n| n != "/fc/Gemm")
            .collect();
        assert_eq!(names.len(), report.layers.len() - 1, "{mode}");
        let done: Vec<&str> = report
            .reconstruction
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, done, "{mode}");
        for l in &report.reconstruction {
            assert!(
                l.fast_error.is_finite() && l.fast_error > 0.0,
                "{mode}: {l:?}"
            );
            // The guard: kept only where it lowers the held-out error.
            assert_eq!(
                l.kept,
                l.reconstructed_error < l.fast_error,
                "{mode}: {l:?}"
            );
            if l.kept {
                assert!(l.changed_weights > 0, "{mode}: {l:?}");
            }
        }
        program.validate().unwrap();
        let test = lutq_bundled::fashion_test(16).unwrap();
        IntInterpreter::new(&program)
            .unwrap()
            .run_batch(&test, None)
            .unwrap();
    }
}

#[test]
fn reconstruction_is_off_by_default_and_reports_nothing() {
    let graph = lutq_bundled::optimized("fashion_resnet8").unwrap();
    let calib = lutq_bundled::fashion_calib(8).unwrap();
    let (_, report) = quantize(
        &graph,
        &calib,
        &QuantOptions::new(Mode::Lut4PotChannel),
        &|_| {},
    )
    .unwrap();
    assert!(report.reconstruction.is_empty());
}

/// `blocks`: MobileNetV2's inverted-residual chains (expansion, depthwise, projection,
/// with the residual Add where there is one) are trained as units; every layer is in at
/// most one unit; a unit keeps its training exactly when that lowers the held-out error;
/// the program is an ordinary one.
#[test]
fn block_reconstruction_trains_each_chain_once_behind_the_held_out_guard() {
    let graph = lutq_bundled::optimized("fashion_mobilenetv2").unwrap();
    let calib = lutq_bundled::fashion_calib(32).unwrap();
    let options = QuantOptions {
        reconstruct: Some(ReconstructOptions {
            iterations: 100,
            blocks: true,
            ..Default::default()
        }),
        ..QuantOptions::new(Mode::Lut4PotChannel)
    };
    let (program, report) = quantize(&graph, &calib, &options, &|_| {}).unwrap();
    let units: Vec<Vec<&str>> = report
        .reconstruction
        .iter()
        .map(|r| {
            r.name
                .trim_end_matches(" (+ residual)")
                .split(" → ")
                .collect()
        })
        .collect();
    let blocks = units.iter().filter(|u| u.len() > 1).count();
    let residual = report
        .reconstruction
        .iter()
        .filter(|r| r.name.ends_with("(+ residual)"))
        .count();
    // The stem with the first block's depthwise and projection convs, then six
    // expansion–depthwise–projection triples (3 with a residual Add); the head conv
    // alone.
    assert_eq!(blocks, 7, "{units:?}");
    assert_eq!(residual, 3, "{units:?}");
    let mut seen = std::collections::HashSet::new();
    for unit in &units {
        for layer in unit {
            assert!(
                report.layers.iter().any(|l| l.name == *layer),
                "{layer} is no layer"
            );
            assert!(seen.insert(*layer), "{layer} trained twice");
        }
    }
    for r in &report.reconstruction {
        assert!(r.fast_error.is_finite() && r.fast_error > 0.0, "{r:?}");
        assert_eq!(r.kept, r.reconstructed_error < r.fast_error, "{r:?}");
        if r.kept {
            assert!(r.changed_weights > 0, "{r:?}");
        }
    }
    program.validate().unwrap();
    let test = lutq_bundled::fashion_test(16).unwrap();
    IntInterpreter::new(&program)
        .unwrap()
        .run_batch(&test, None)
        .unwrap();
}

/// A chain of two convs whose output is added to the chain's input: a residual block
/// when both sides have one shape. An Add that broadcasts a one-channel input over the
/// four channels is refused before any block is formed (the block's samples read the
/// residual at the output's positions), with the node named, not a panic.
#[test]
fn a_same_shape_add_makes_a_residual_block_a_broadcasting_one_is_refused() {
    use lutq_ir::{BinaryOp, Conv, Graph, Op, Tensor, TensorType};
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut uniform = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
            })
            .collect()
    };
    for in_channels in [4, 1] {
        let mut g = Graph::new("residual");
        let x = g.add_input("x", TensorType::f32(vec![1, in_channels, 8, 8]));
        let mut conv = |g: &mut Graph, name: &str, from, c: usize, k: usize| {
            let w = Tensor::f32(vec![4, c, k, k], uniform(4 * c * k * k, 0.5)).unwrap();
            let b = Tensor::f32(vec![4], uniform(4, 0.1)).unwrap();
            let w = g.add_constant(format!("{name}.w"), w);
            let b = g.add_constant(format!("{name}.b"), b);
            let op = Op::Conv(Conv {
                pads: [k / 2; 4],
                ..Conv::default()
            });
            g.add_node(name, op, &[from, w, b]).unwrap()
        };
        let a = conv(&mut g, "a", x, in_channels, 3);
        let b = conv(&mut g, "b", a, 4, 1);
        let sum = g
            .add_node("sum", Op::Binary(BinaryOp::Add), &[x, b])
            .unwrap();
        g.add_output("y", sum).unwrap();
        let calib = Tensor::f32(
            vec![64, in_channels, 8, 8],
            uniform(64 * in_channels * 64, 1.0),
        )
        .unwrap();
        let options = QuantOptions {
            reconstruct: Some(ReconstructOptions {
                iterations: 20,
                blocks: true,
                ..Default::default()
            }),
            ..QuantOptions::new(Mode::Lut4PotLayer)
        };
        let result = quantize(&g, &calib, &options, &|_| {});
        if in_channels == 1 {
            let Err(error) = result else {
                panic!("a broadcasting residual Add was accepted");
            };
            let message = error.to_string();
            assert!(
                message.contains("'sum'") && message.contains("one shape"),
                "{message}"
            );
            continue;
        }
        let (program, report) = result.unwrap();
        let names: Vec<&str> = report
            .reconstruction
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["a → b (+ residual)"]);
        program.validate().unwrap();
    }
}
