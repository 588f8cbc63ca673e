//! The integer forms of the ops real models bring beyond plain CNNs — element-wise
//! functions as tables (HardSwish, `x · HardSigmoid(x)` as exported, Sigmoid, PReLU with
//! per-channel slopes, an unfoldable per-channel affine), squeeze-and-excitation products,
//! a transpose and a trailing softmax — on a small synthetic network: every mode
//! quantizes it, the result validates, tracks the float model, and the dump shows one
//! op per region exit.

use lutq_interp::Interpreter;
use lutq_interp::int::IntInterpreter;
use lutq_ir::int::{IntGraph, IntOp};
use lutq_ir::{
    Activation, BinaryOp, Conv, CoordMode, Gemm, Graph, NodeId, Op, ResizeMode, Tensor, TensorType,
};
use lutq_quant::{Mode, QuantOptions, quantize};

/// xorshift64, uniform in [-1, 1).
struct Rng(u64);

impl Rng {
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::f32(shape.to_vec(), (0..n).map(|_| self.f() * scale).collect()).unwrap()
    }
}

fn conv(g: &mut Graph, r: &mut Rng, name: &str, x: NodeId, o: usize, k: usize) -> NodeId {
    let c = g.node(x).ty.shape[1];
    let w = g.add_constant(
        format!("{name}.w"),
        r.tensor(&[o, c, k, k], 0.6 / (c * k * k) as f32 * 3.0),
    );
    let b = g.add_constant(format!("{name}.b"), r.tensor(&[o], 0.2));
    let p = k / 2;
    let op = Op::Conv(Conv {
        pads: [p; 4],
        ..Conv::default()
    });
    g.add_node(name, op, &[x, w, b]).unwrap()
}

fn unary(g: &mut Graph, name: &str, a: Activation, x: NodeId) -> NodeId {
    g.add_node(name, Op::Activation(a), &[x]).unwrap()
}

fn binary(g: &mut Graph, name: &str, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
    g.add_node(name, Op::Binary(op), &[a, b]).unwrap()
}

/// conv → HardSwish → conv → x · HardSigmoid(x) → SE block → PReLU (per channel) →
/// (x − m) · s per channel → Sigmoid·x → transpose pair → global pool → gemm → softmax.
fn network() -> Graph {
    let mut r = Rng(0x5eed_1234_abcd_0001);
    let mut g = Graph::new("new_ops");
    let x = g.add_input("x", TensorType::f32(vec![1, 3, 8, 8]));
    let c1 = conv(&mut g, &mut r, "c1", x, 8, 3);
    let h1 = unary(&mut g, "hswish", Activation::HardSwish, c1);
    let c2 = conv(&mut g, &mut r, "c2", h1, 8, 1);
    let hs = unary(
        &mut g,
        "hsig",
        Activation::HardSigmoid {
            alpha: 1.0 / 6.0,
            beta: 0.5,
        },
        c2,
    );
    let h2 = binary(&mut g, "hswish_exported", BinaryOp::Mul, c2, hs);
    // Squeeze-and-excitation.
    let pooled = g.add_node("se.pool", Op::GlobalAveragePool, &[h2]).unwrap();
    let s1 = conv(&mut g, &mut r, "se.fc1", pooled, 4, 1);
    let s1 = unary(&mut g, "se.relu", Activation::Relu, s1);
    let s2 = conv(&mut g, &mut r, "se.fc2", s1, 8, 1);
    let gate = unary(&mut g, "se.gate", Activation::Sigmoid, s2);
    let se = binary(&mut g, "se.mul", BinaryOp::Mul, h2, gate);
    // PReLU with per-channel slopes, then an affine with per-channel constants that no
    // linear layer can absorb (it reads a PReLU, not a conv).
    let slope = g.add_constant("prelu.slope", r.tensor(&[8, 1, 1], 0.5));
    let p = g.add_node("prelu", Op::PRelu, &[se, slope]).unwrap();
    let m = g.add_constant("affine.m", r.tensor(&[1, 8, 1, 1], 0.3));
    let s = g.add_constant("affine.s", r.tensor(&[1, 8, 1, 1], 1.0));
    let a = binary(&mut g, "affine.sub", BinaryOp::Sub, p, m);
    let a = binary(&mut g, "affine.mul", BinaryOp::Mul, a, s);
    let sig = unary(&mut g, "silu.sigmoid", Activation::Sigmoid, a);
    let silu = binary(&mut g, "silu", BinaryOp::Mul, a, sig);
    let t = g
        .add_node(
            "to_nhwc",
            Op::Transpose {
                perm: vec![0, 2, 3, 1],
            },
            &[silu],
        )
        .unwrap();
    let t = g
        .add_node(
            "to_nchw",
            Op::Transpose {
                perm: vec![0, 3, 1, 2],
            },
            &[t],
        )
        .unwrap();
    let c3 = conv(&mut g, &mut r, "c3", t, 16, 3);
    let gp = g.add_node("pool", Op::GlobalAveragePool, &[c3]).unwrap();
    let flat = g
        .add_node("flat", Op::Reshape { shape: vec![1, 16] }, &[gp])
        .unwrap();
    let w = g.add_constant("fc.w", r.tensor(&[10, 16], 8.0));
    let b = g.add_constant("fc.b", r.tensor(&[10], 0.1));
    let fc = g
        .add_node(
            "fc",
            Op::Gemm(Gemm {
                trans_b: true,
                ..Gemm::default()
            }),
            &[flat, w, b],
        )
        .unwrap();
    let sm = g
        .add_node("softmax", Op::Softmax { axis: 1 }, &[fc])
        .unwrap();
    g.add_output("probs", sm).unwrap();
    g
}

fn data(n: usize, seed: u64) -> Tensor {
    Rng(seed).tensor(&[n, 3, 8, 8], 1.0)
}

fn quantized(mode: Mode) -> IntGraph {
    let g = lutq_opt::optimize(&network(), &Default::default())
        .unwrap()
        .0;
    quantize(&g, &data(64, 7), &QuantOptions::new(mode), &|_| {})
        .unwrap_or_else(|e| panic!("{mode}: {e}"))
        .0
}

#[test]
fn every_mode_quantizes_the_new_ops_and_tracks_the_float_model() {
    let float = network();
    let interp = Interpreter::new(&float).unwrap();
    let eval = data(32, 99);
    let expected = interp
        .run_batch(&eval, None)
        .unwrap()
        .as_f32()
        .unwrap()
        .to_vec();
    for mode in Mode::ALL.into_iter().filter(|&m| m != Mode::Fp32) {
        let q = quantized(mode);
        q.validate().unwrap();
        let got = IntInterpreter::new(&q)
            .unwrap()
            .run_batch(&eval, None)
            .unwrap()[0]
            .as_f32()
            .unwrap()
            .to_vec();
        // Probabilities (the largest near 0.5): the quantized softmax stays within a few
        // codes (1/256) of the float one.
        let worst = expected
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let mean = expected
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / got.len() as f32;
        assert!(
            mean < 0.01 && worst < 0.05,
            "{mode}: mean |Δp| {mean}, worst {worst}"
        );
    }
}

#[test]
fn each_region_exit_is_one_table_and_interiors_vanish() {
    let q = quantized(Mode::Lut4PotChannel);
    let ops: Vec<(&str, &str)> = q
        .nodes
        .iter()
        .map(|n| (n.op.name(), n.name.as_str()))
        .collect();
    let tables: Vec<&str> = ops
        .iter()
        .filter(|(op, _)| *op == "table")
        .map(|(_, n)| *n)
        .collect();
    // HardSwish; x·HardSigmoid(x) (the HardSigmoid is interior); the SE gate; PReLU →
    // affine → x·sigmoid(x) as one table (all of them a function of the SE product).
    assert_eq!(
        tables,
        ["hswish", "hswish_exported", "se.gate", "silu"],
        "{ops:?}"
    );
    let per_channel = q
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            IntOp::Table(t) => Some((n.name.as_str(), t.tables())),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert!(per_channel.contains(&("silu", 8)), "{per_channel:?}");
    assert!(per_channel.contains(&("hswish", 1)), "{per_channel:?}");
    assert_eq!(
        ops.iter().filter(|(op, _)| *op == "mul").count(),
        1,
        "{ops:?}"
    );
    assert_eq!(ops.iter().filter(|(op, _)| *op == "transpose").count(), 2);
    assert_eq!(ops.last().unwrap().0, "softmax");
}

#[test]
fn a_constant_varying_over_space_has_no_table_and_says_why() {
    let mut g = Graph::new("spatial");
    let x = g.add_input("x", TensorType::f32(vec![1, 2, 4, 4]));
    let c = g.add_constant("ramp", Rng(3).tensor(&[1, 1, 4, 4], 1.0));
    let y = binary(&mut g, "ramp_mul", BinaryOp::Mul, x, c);
    g.add_output("y", y).unwrap();
    let calib = Rng(1).tensor(&[8, 2, 4, 4], 1.0);
    let err = quantize(
        &g,
        &calib,
        &QuantOptions::new(Mode::Lut4PotChannel),
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("ramp_mul") && err.contains("channel axis"),
        "{err}"
    );
}

#[test]
fn upsampling_and_extrema_quantize_in_every_mode_and_track_the_float_model() {
    let float = lutq_bundled::synthetic::decoder([1, 3, 8, 8]);
    let opt = lutq_opt::optimize(&float, &Default::default()).unwrap().0;
    let eval = data(16, 98);
    let expected = Interpreter::new(&float)
        .unwrap()
        .run_batch(&eval, None)
        .unwrap()
        .as_f32()
        .unwrap()
        .to_vec();
    for mode in Mode::ALL.into_iter().filter(|&m| m != Mode::Fp32) {
        let q = quantize(&opt, &data(64, 7), &QuantOptions::new(mode), &|_| {})
            .unwrap_or_else(|e| panic!("{mode}: {e}"))
            .0;
        q.validate().unwrap();
        let names: Vec<&str> = q.nodes.iter().map(|n| n.op.name()).collect();
        for op in ["resize", "max", "min", "transpose"] {
            assert!(names.contains(&op), "{mode}: no {op} in {names:?}");
        }
        let got = IntInterpreter::new(&q)
            .unwrap()
            .run_batch(&eval, None)
            .unwrap()[0]
            .as_f32()
            .unwrap()
            .to_vec();
        let sqnr = lutq_interp::metrics::sqnr_db(&expected, &got);
        // Measured 30 dB at 8 bits and 22-25 dB at 4 bits (2026-12): a broken tap, shift
        // or permutation falls far below.
        let floor = if mode.to_string().contains("int8") {
            25.0
        } else {
            18.0
        };
        eprintln!("{mode}: SQNR {sqnr:.1} dB");
        assert!(sqnr > floor, "{mode}: SQNR {sqnr:.1} dB");
    }
}

/// The integer resize computes the float resize of its (dequantized) input, rounded
/// half up: exactly where the weights are exact in 8 fraction bits (×2 half-pixel,
/// nearest), within one code where they are not (align-corners on 4 → 8 needs 1/7).
#[test]
fn integer_resize_is_the_rounded_float_resize() {
    let mut r = Rng(77);
    for (mode, coord, exact) in [
        (ResizeMode::Nearest, CoordMode::Asymmetric, true),
        (ResizeMode::Nearest, CoordMode::HalfPixel, true),
        (ResizeMode::Linear, CoordMode::HalfPixel, true),
        (ResizeMode::Linear, CoordMode::PytorchHalfPixel, true),
        (ResizeMode::Linear, CoordMode::AlignCorners, false),
    ] {
        let mut g = Graph::new("r");
        let x = g.add_input("x", TensorType::f32(vec![1, 2, 4, 5]));
        let y = lutq_bundled::synthetic::upsample(&mut g, "r", x, mode, coord);
        g.add_output("y", y).unwrap();
        let rz = match &g.node(y).op {
            Op::Resize(rz) => *rz,
            _ => unreachable!(),
        };
        let q = lutq_ir::int::QResize::from_float(&rz, [4, 5]);
        assert_eq!(
            q.frac == 0,
            mode == ResizeMode::Nearest,
            "{mode:?} {coord:?}"
        );
        // Integer-valued input: the float resize of the codes themselves.
        let codes: Vec<i32> = (0..40).map(|_| (r.f() * 127.0).round() as i32).collect();
        let input =
            Tensor::f32(vec![1, 2, 4, 5], codes.iter().map(|&c| c as f32).collect()).unwrap();
        let float = Interpreter::new(&g)
            .unwrap()
            .run_batch(&input, None)
            .unwrap();
        let float = float.as_f32().unwrap();
        let mut k = 0;
        for plane in codes.chunks(20) {
            for oy in 0..8 {
                for ox in 0..10 {
                    let want = (float[k] as f64 + 0.5).floor() as i32;
                    let got = q.blend(plane, 5, oy, ox, lutq_ir::int::Rounding::HalfUp);
                    let tol = if exact { 0 } else { 1 };
                    assert!(
                        (got - want).abs() <= tol,
                        "{mode:?} {coord:?} at ({oy}, {ox}): {got} vs float {}",
                        float[k]
                    );
                    k += 1;
                }
            }
        }
    }
}
