//! The golden integer interpreter against independent naive references: every op on
//! randomized small graphs, the boundary rounding rules, and the run/exec_node/run_batch
//! agreements.
//!
//! The references below are written from the op docs of `lutq_ir::int`, with plain
//! nested loops, i64/i128 arithmetic and explicit bounds checks, sharing no code with
//! the interpreter (not even `rshift_round`).

// The references index like the formulas they transcribe.
#![allow(clippy::needless_range_loop)]

use lutq_interp::int::{IntData, IntInterpreter, exec_node, finish_linear, linear_accumulators};
use lutq_ir::int::{
    ConvGeom, IntElem, IntGraph, IntInput, IntNode, IntOp, IntOutput, QAdd, QLinear, QType,
    QWeights, Rescale, ValueId,
};
use lutq_ir::{Op, Pool, Tensor, TensorType};

// ---------------------------------------------------------------- helpers

/// xorshift64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `lo..=hi`.
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    fn usize(&mut self, lo: usize, hi: usize) -> usize {
        self.int(lo as i64, hi as i64) as usize
    }
    fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.usize(0, xs.len() - 1)]
    }
}

fn range(elem: IntElem) -> (i64, i64) {
    match elem {
        IntElem::I8 => (-128, 127),
        IntElem::U8 => (0, 255),
        IntElem::I32 => (i32::MIN as i64, i32::MAX as i64),
    }
}

/// The contract's rounding shift, naively: floor((a + 2^(s-1)) / 2^s) over i128.
fn shift_ref(a: i128, s: i32) -> i128 {
    if s > 0 {
        let d = 1i128 << s;
        (a + d / 2).div_euclid(d)
    } else {
        a * (1i128 << -s)
    }
}

fn rescale_ref(r: Rescale, acc: i64) -> i128 {
    match r {
        Rescale::Shift(s) => shift_ref(acc as i128, s),
        Rescale::Multiplier { multiplier, shift } => {
            shift_ref(acc as i128 * multiplier as i128, 31 + shift)
        }
    }
}

fn clamp_ref(v: i128, lo: i64, hi: i64) -> i64 {
    if v < lo as i128 {
        lo
    } else if v > hi as i128 {
        hi
    } else {
        v as i64
    }
}

fn values(d: &IntData) -> Vec<i64> {
    (0..d.len()).map(|i| d.get(i) as i64).collect()
}

fn random_q(rng: &mut Rng, elem: IntElem, n: usize) -> Vec<i64> {
    let (lo, hi) = range(elem);
    (0..n).map(|_| rng.int(lo, hi)).collect()
}

/// f32 inputs that `QuantizeInput` at `exp` maps exactly to `q`.
fn dequant(q: &[i64], exp: i32) -> Vec<f32> {
    q.iter()
        .map(|&v| (v as f64 * (-(exp as f64)).exp2()) as f32)
        .collect()
}

fn qtype(elem: IntElem, shape: &[usize], exp: i32) -> QType {
    QType {
        elem,
        shape: shape.to_vec(),
        exp,
    }
}

/// Adds a graph input and its `QuantizeInput`.
fn input(g: &mut IntGraph, name: &str, elem: IntElem, shape: &[usize], exp: i32) -> ValueId {
    let index = g.inputs.len();
    g.inputs.push(IntInput {
        name: name.into(),
        shape: shape.to_vec(),
    });
    g.push(IntNode {
        name: name.into(),
        op: IntOp::QuantizeInput { input: index },
        inputs: vec![],
        ty: qtype(elem, shape, exp),
    })
}

fn node(g: &mut IntGraph, name: &str, op: IntOp, inputs: &[ValueId], ty: QType) -> ValueId {
    g.push(IntNode {
        name: name.into(),
        op,
        inputs: inputs.to_vec(),
        ty,
    })
}

fn output(g: &mut IntGraph, v: ValueId) {
    g.outputs.push(IntOutput {
        name: format!("out{}", g.outputs.len()),
        value: v,
    });
}

fn run1(g: &IntGraph, inputs: &[&[f32]]) -> Vec<IntData> {
    IntInterpreter::new(g).unwrap().run(inputs).unwrap()
}

// ---------------------------------------------------------------- linear layers

/// The weights of a layer, naively: `w[o][k]` from the codes (low nibble first, rows
/// byte-aligned) or the int8 values.
fn weights_ref(w: &QWeights) -> Vec<Vec<i64>> {
    let [o_n, i, kh, kw] = w.shape();
    let k_n = i * kh * kw;
    (0..o_n)
        .map(|o| {
            (0..k_n)
                .map(|k| match w {
                    QWeights::Int8 { values, .. } => values[o * k_n + k] as i64,
                    QWeights::Lut { luts, codes, .. } => {
                        let byte = codes[o * k_n.div_ceil(2) + k / 2];
                        let code = if k % 2 == 0 { byte & 15 } else { byte >> 4 };
                        let lut = if luts.len() == 1 { &luts[0] } else { &luts[o] };
                        lut[code as usize] as i64
                    }
                })
                .collect()
        })
        .collect()
}

/// Naive convolution accumulators (NCHW), bias included.
fn conv_acc_ref(l: &QLinear, x: &[i64], xs: &[usize], out: &[usize]) -> Vec<i64> {
    let g = l.conv.as_ref().unwrap();
    let w = weights_ref(&l.weights);
    let [o_n, i_g, kh, kw] = l.weights.shape();
    let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (oh, ow) = (out[2], out[3]);
    let o_per_g = o_n / g.group;
    let mut acc = Vec::new();
    for b in 0..n {
        for o in 0..o_n {
            let grp = o / o_per_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut a = l.bias[o] as i64;
                    for ic in 0..i_g {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * g.strides[0] + ky * g.dilations[0]) as i64
                                    - g.pads[0] as i64;
                                let ix = (ox * g.strides[1] + kx * g.dilations[1]) as i64
                                    - g.pads[1] as i64;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                    continue;
                                }
                                let ch = grp * i_g + ic;
                                assert!(ch < c);
                                let xv = x[((b * c + ch) * h + iy as usize) * wd + ix as usize];
                                a += xv * w[o][(ic * kh + ky) * kw + kx];
                            }
                        }
                    }
                    acc.push(a);
                }
            }
        }
    }
    acc
}

fn dense_acc_ref(l: &QLinear, x: &[i64], n: usize) -> Vec<i64> {
    let w = weights_ref(&l.weights);
    let k_n = l.weights.row_len();
    let mut acc = Vec::new();
    for b in 0..n {
        for (o, row) in w.iter().enumerate() {
            let dot: i64 = (0..k_n).map(|k| x[b * k_n + k] * row[k]).sum();
            acc.push(l.bias[o] as i64 + dot);
        }
    }
    acc
}

fn finish_ref(l: &QLinear, acc: &[i64], channels: usize, plane: usize) -> Vec<i64> {
    acc.iter()
        .enumerate()
        .map(|(i, &a)| {
            let o = (i / plane) % channels;
            clamp_ref(rescale_ref(l.rescale[o], a), l.lo as i64, l.hi as i64)
        })
        .collect()
}

fn conv_out_len(len: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize) -> Option<usize> {
    let span = d * (k - 1) + 1;
    (len + p0 + p1).checked_sub(span).map(|v| v / s + 1)
}

fn random_weights(rng: &mut Rng, shape: [usize; 4]) -> QWeights {
    let [o_n, ..] = shape;
    let k_n = shape[1] * shape[2] * shape[3];
    match rng.usize(0, 2) {
        0 => QWeights::Int8 {
            shape,
            values: (0..o_n * k_n).map(|_| rng.int(-128, 127) as i8).collect(),
        },
        kind => {
            let tables = if kind == 1 { 1 } else { o_n };
            let luts = (0..tables)
                .map(|_| {
                    let mut t = [0i8; 16];
                    for v in &mut t {
                        // Some zeros too, which the interpreter skips.
                        *v = if rng.usize(0, 7) == 0 {
                            0
                        } else {
                            rng.int(-128, 127) as i8
                        };
                    }
                    t
                })
                .collect();
            let codes: Vec<u8> = (0..o_n * k_n).map(|_| rng.int(0, 15) as u8).collect();
            QWeights::Lut {
                shape,
                luts,
                codes: QWeights::pack_codes(o_n, k_n, &codes),
            }
        }
    }
}

fn random_rescales(rng: &mut Rng, o_n: usize, out: IntElem) -> Vec<Rescale> {
    let per_layer = rng.bool();
    let first = random_rescale(rng, out);
    (0..o_n)
        .map(|_| {
            if per_layer {
                first
            } else {
                random_rescale(rng, out)
            }
        })
        .collect()
}

fn random_rescale(rng: &mut Rng, out: IntElem) -> Rescale {
    if rng.usize(0, 4) == 0 {
        let f = (rng.int(1, 1 << 20) as f64) * 2f64.powi(-(rng.int(18, 34) as i32));
        Rescale::from_factor(f).unwrap()
    } else if out == IntElem::I32 {
        Rescale::Shift(rng.int(-2, 3) as i32)
    } else {
        Rescale::Shift(rng.int(-2, 16) as i32)
    }
}

/// A random linear layer in a graph `x → layer`, its input values and the expected
/// accumulators and outputs.
struct LinearCase {
    graph: IntGraph,
    x: Vec<f32>,
    acc: Vec<i64>,
    expected: Vec<i64>,
}

fn random_conv(rng: &mut Rng) -> LinearCase {
    loop {
        let depthwise = rng.usize(0, 2) == 0;
        let group = if depthwise {
            rng.usize(1, 6)
        } else {
            rng.pick(&[1, 1, 2, 3])
        };
        let i_g = if depthwise { 1 } else { rng.usize(1, 4) };
        let o_n = group
            * if depthwise {
                rng.usize(1, 2)
            } else {
                rng.usize(1, 4)
            };
        let (kh, kw) = (rng.usize(1, 4), rng.usize(1, 4));
        let (h, w) = (rng.usize(1, 12), rng.usize(1, 12));
        let strides = [rng.usize(1, 3), rng.usize(1, 3)];
        let dilations = [rng.pick(&[1, 1, 2, 3]), rng.pick(&[1, 1, 2])];
        let pads = [
            rng.usize(0, 3),
            rng.usize(0, 3),
            rng.usize(0, 3),
            rng.usize(0, 3),
        ];
        let n = rng.pick(&[1, 1, 1, 2]);
        let (Some(oh), Some(ow)) = (
            conv_out_len(h, kh, strides[0], dilations[0], pads[0], pads[2]),
            conv_out_len(w, kw, strides[1], dilations[1], pads[1], pads[3]),
        ) else {
            continue;
        };
        let in_elem = rng.pick(&[IntElem::U8, IntElem::I8]);
        let out_elem = rng.pick(&[IntElem::U8, IntElem::I8, IntElem::I8, IntElem::I32]);
        let xs = [n, group * i_g, h, w];
        let out = [n, o_n, oh, ow];
        let layer = random_layer(
            rng,
            Some(ConvGeom {
                strides,
                pads,
                dilations,
                group,
            }),
            [o_n, i_g, kh, kw],
            out_elem,
        );
        let q = random_q(rng, in_elem, xs.iter().product());
        let acc = conv_acc_ref(&layer, &q, &xs, &out);
        return finish_case(layer, in_elem, out_elem, &xs, &out, q, acc);
    }
}

fn random_dense(rng: &mut Rng) -> LinearCase {
    let (k, o_n, n) = (rng.usize(1, 70), rng.usize(1, 12), rng.pick(&[1, 1, 3]));
    let in_elem = rng.pick(&[IntElem::U8, IntElem::I8]);
    let out_elem = rng.pick(&[IntElem::U8, IntElem::I8, IntElem::I32]);
    let layer = random_layer(rng, None, [o_n, k, 1, 1], out_elem);
    let q = random_q(rng, in_elem, n * k);
    let acc = dense_acc_ref(&layer, &q, n);
    finish_case(layer, in_elem, out_elem, &[n, k], &[n, o_n], q, acc)
}

fn random_layer(rng: &mut Rng, conv: Option<ConvGeom>, shape: [usize; 4], out: IntElem) -> QLinear {
    let o_n = shape[0];
    let (t_lo, t_hi) = range(out);
    // Sometimes a fused ReLU-like clamp inside the type's range.
    let (lo, hi) = if out != IntElem::I32 && rng.usize(0, 3) == 0 {
        ((t_lo + 5) as i32, (t_hi - 7) as i32)
    } else {
        (t_lo as i32, t_hi as i32)
    };
    QLinear {
        conv,
        weights: random_weights(rng, shape),
        bias: (0..o_n).map(|_| rng.int(-50_000, 50_000) as i32).collect(),
        rescale: random_rescales(rng, o_n, out),
        lo,
        hi,
        weight_exps: vec![5; o_n],
    }
}

fn finish_case(
    layer: QLinear,
    in_elem: IntElem,
    out_elem: IntElem,
    xs: &[usize],
    out: &[usize],
    q: Vec<i64>,
    acc: Vec<i64>,
) -> LinearCase {
    let plane: usize = out[2..].iter().product();
    let expected = finish_ref(&layer, &acc, out[1], plane);
    let mut g = IntGraph::new("linear");
    let exp = 3;
    let x = input(&mut g, "x", in_elem, xs, exp);
    let y = node(
        &mut g,
        "layer",
        IntOp::Linear(layer),
        &[x],
        qtype(out_elem, out, 4),
    );
    output(&mut g, y);
    g.validate().unwrap();
    LinearCase {
        graph: g,
        x: dequant(&q, exp),
        acc,
        expected,
    }
}

fn check_linear(case: &LinearCase) {
    let g = &case.graph;
    let out = run1(g, &[&case.x]);
    assert_eq!(values(&out[0]), case.expected, "{}", g.dump());
    assert_eq!(out[0].elem(), g.nodes[1].ty.elem);
    // The two public halves, separately.
    let IntOp::Linear(l) = &g.nodes[1].op else {
        unreachable!()
    };
    let x = IntData::from_i32(
        g.nodes[0].ty.elem,
        case.x.iter().map(|&v| (v * 8.0) as i32).collect(),
    );
    let acc = linear_accumulators(
        l,
        &l.weights.decode(),
        &x,
        &g.nodes[0].ty.shape,
        &g.nodes[1].ty.shape,
    );
    assert_eq!(acc.iter().map(|&a| a as i64).collect::<Vec<_>>(), case.acc);
    assert_eq!(finish_linear(l, &acc, &g.nodes[1].ty, g.rounding), out[0]);
}

#[test]
fn random_convolutions_match_the_naive_reference() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..400 {
        check_linear(&random_conv(&mut rng));
    }
}

#[test]
fn random_dense_layers_match_the_naive_reference() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for _ in 0..200 {
        check_linear(&random_dense(&mut rng));
    }
}

#[test]
fn mobilenet_shaped_layers_match_the_naive_reference() {
    // Pointwise, 3×3 depthwise stride 1 and 2 with "same" padding, and a strided full
    // convolution: the fast paths (merged rows, column decimation) on realistic shapes.
    let mut rng = Rng(42);
    let cases: [(usize, usize, usize, usize, usize, usize, usize); 4] = [
        // (c_in, c_out, group, k, stride, pad, size)
        (16, 24, 1, 1, 1, 0, 14),
        (24, 24, 24, 3, 1, 1, 14),
        (24, 24, 24, 3, 2, 1, 15),
        (3, 8, 1, 3, 2, 1, 17),
    ];
    for (c, o_n, group, k, s, p, size) in cases {
        let xs = [1, c, size, size];
        let o = conv_out_len(size, k, s, 1, p, p).unwrap();
        let out = [1, o_n, o, o];
        let layer = random_layer(
            &mut rng,
            Some(ConvGeom {
                strides: [s, s],
                pads: [p; 4],
                dilations: [1, 1],
                group,
            }),
            [o_n, c / group, k, k],
            IntElem::I8,
        );
        let q = random_q(&mut rng, IntElem::U8, xs.iter().product());
        let acc = conv_acc_ref(&layer, &q, &xs, &out);
        check_linear(&finish_case(
            layer,
            IntElem::U8,
            IntElem::I8,
            &xs,
            &out,
            q,
            acc,
        ));
    }
}

#[test]
fn rescale_rounds_ties_up_and_clamps_per_channel() {
    // Two channels: shift 1 (ties: 1 → 1, -1 → 0, 3 → 2, -3 → -1) and shift -2; 1×1
    // weights of 1 so the accumulator is bias + x.
    let layer = QLinear {
        conv: None,
        weights: QWeights::Int8 {
            shape: [2, 1, 1, 1],
            values: vec![1, 1],
        },
        bias: vec![0, 0],
        rescale: vec![Rescale::Shift(1), Rescale::Shift(-2)],
        lo: -128,
        hi: 127,
        weight_exps: vec![0, 0],
    };
    let mut out = qtype(IntElem::I8, &[4, 2], 0);
    let acc = [1, 1, -1, -1, 3, 40, -3, -40];
    let y = finish_linear(&layer, &acc, &out, Default::default());
    assert_eq!(values(&y), [1, 4, 0, -4, 2, 127, -1, -128]);
    // The layer's clamp, not the element type, bounds the result.
    out.elem = IntElem::I32;
    let y = finish_linear(&layer, &acc, &out, Default::default());
    assert_eq!(values(&y), [1, 4, 0, -4, 2, 127, -1, -128]);
    let layer = QLinear {
        lo: i32::MIN,
        hi: i32::MAX,
        ..layer
    };
    let y = finish_linear(&layer, &acc, &out, Default::default());
    assert_eq!(values(&y), [1, 4, 0, -4, 2, 160, -1, -160]);
}

// ---------------------------------------------------------------- quantize_input

fn quantize_graph(elem: IntElem, exp: i32, n: usize) -> IntGraph {
    let mut g = IntGraph::new("q");
    let x = input(&mut g, "x", elem, &[1, n], exp);
    output(&mut g, x);
    g
}

#[test]
fn quantize_input_rounds_half_up_for_both_signs() {
    let g = quantize_graph(IntElem::I8, 1, 8);
    // x · 2 = 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.4, -0.6
    let x = [0.25, -0.25, 0.75, -0.75, 1.25, -1.25, 0.2, -0.3];
    assert_eq!(values(&run1(&g, &[&x])[0]), [1, 0, 2, -1, 3, -2, 0, -1]);
}

#[test]
fn quantize_input_is_exact_where_f32_rounding_would_not_be() {
    // 0.49999997 + 0.5 rounds to 1.0 in f32; floor(x + 0.5) is 0.
    let below_half = f32::from_bits(0.5f32.to_bits() - 1);
    let g = quantize_graph(IntElem::I8, 0, 3);
    let x = [below_half, -below_half, 0.5];
    assert_eq!(values(&run1(&g, &[&x])[0]), [0, 0, 1]);
    // Negative exponent: x · 2^-3.
    let g = quantize_graph(IntElem::I8, -3, 3);
    assert_eq!(values(&run1(&g, &[&[4.0, -4.0, 3.99]])[0]), [1, 0, 0]);
}

#[test]
fn quantize_input_saturates_infinities_and_maps_nan_to_zero() {
    let x = [
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e30,
        -1e30,
        300.0,
    ];
    let g = quantize_graph(IntElem::I8, 0, 6);
    assert_eq!(values(&run1(&g, &[&x])[0]), [127, -128, 0, 127, -128, 127]);
    let g = quantize_graph(IntElem::U8, 0, 6);
    assert_eq!(values(&run1(&g, &[&x])[0]), [255, 0, 0, 255, 0, 255]);
}

#[test]
fn quantize_input_matches_the_reference_on_random_values() {
    let mut rng = Rng(7);
    for elem in [IntElem::I8, IntElem::U8] {
        for exp in [-2, 0, 3, 7] {
            let x: Vec<f32> = (0..500)
                .map(|_| (rng.int(-1 << 20, 1 << 20) as f32) * 2f32.powi(-(rng.int(8, 16) as i32)))
                .collect();
            let (lo, hi) = range(elem);
            let expected: Vec<i64> = x
                .iter()
                .map(|&v| {
                    // Exact: v · 2^exp + 1/2 as a fraction over 2^40.
                    let num =
                        (v as f64 * 2f64.powi(40)) as i128 * (1i128 << (exp + 2)) + (1i128 << 41);
                    clamp_ref(num.div_euclid(1i128 << 42), lo, hi)
                })
                .collect();
            let g = quantize_graph(elem, exp, x.len());
            assert_eq!(values(&run1(&g, &[&x])[0]), expected, "{elem:?} exp {exp}");
        }
    }
}

// ---------------------------------------------------------------- add, concat, requant

#[test]
fn add_aligns_both_operands_then_rounds() {
    let mut rng = Rng(99);
    for _ in 0..100 {
        let (ea, eb) = (
            rng.pick(&[IntElem::U8, IntElem::I8]),
            rng.pick(&[IntElem::U8, IntElem::I8]),
        );
        let out_elem = rng.pick(&[IntElem::U8, IntElem::I8]);
        let a = QAdd {
            align_a: rng.int(0, 4) as i32,
            align_b: rng.int(0, 4) as i32,
            shift: rng.int(-1, 6) as i32,
            lo: range(out_elem).0 as i32,
            hi: range(out_elem).1 as i32,
        };
        let shape = [1, rng.usize(1, 5), 3, 2];
        let n: usize = shape.iter().product();
        let mut g = IntGraph::new("add");
        let x = input(&mut g, "a", ea, &shape, 2);
        let y = input(&mut g, "b", eb, &shape, 5);
        let z = node(
            &mut g,
            "add",
            IntOp::Add(a.clone()),
            &[x, y],
            qtype(out_elem, &shape, 3),
        );
        output(&mut g, z);
        let (qa, qb) = (random_q(&mut rng, ea, n), random_q(&mut rng, eb, n));
        let expected: Vec<i64> = qa
            .iter()
            .zip(&qb)
            .map(|(&p, &q)| {
                let s = (p as i128) * (1 << a.align_a) + (q as i128) * (1 << a.align_b);
                clamp_ref(shift_ref(s, a.shift), a.lo as i64, a.hi as i64)
            })
            .collect();
        let out = run1(&g, &[&dequant(&qa, 2), &dequant(&qb, 5)]);
        assert_eq!(values(&out[0]), expected);
    }
    // A tie: (1 << 0) + (0 << 0) = 1, shift 1 → 1; -1 → 0.
    let mut g = IntGraph::new("add");
    let x = input(&mut g, "a", IntElem::I8, &[1, 2], 0);
    let y = input(&mut g, "b", IntElem::I8, &[1, 2], 0);
    let add = QAdd {
        align_a: 0,
        align_b: 1,
        shift: 1,
        lo: -128,
        hi: 127,
    };
    let z = node(
        &mut g,
        "add",
        IntOp::Add(add),
        &[x, y],
        qtype(IntElem::I8, &[1, 2], 0),
    );
    output(&mut g, z);
    // a + 2b: 1 + 0 = 1 → 1 (0.5 up), -3 + 2 = -1 → 0 (-0.5 up).
    assert_eq!(values(&run1(&g, &[&[1.0, -3.0], &[0.0, 1.0]])[0]), [1, 0]);
}

#[test]
fn concat_requantizes_each_input_with_its_own_shift() {
    let mut rng = Rng(5);
    for axis in 0..4 {
        let base = [1, 2, 3, 2];
        let specs = [
            (IntElem::U8, 1, 3),
            (IntElem::I8, -1, 2),
            (IntElem::I8, 0, 1),
        ];
        let mut g = IntGraph::new("concat");
        let mut ids = Vec::new();
        let mut qs = Vec::new();
        let mut shapes = Vec::new();
        for (k, &(elem, _, len)) in specs.iter().enumerate() {
            let mut s = base;
            s[axis] = len;
            ids.push(input(&mut g, &format!("x{k}"), elem, &s, 0));
            qs.push(random_q(&mut rng, elem, s.iter().product()));
            shapes.push(s);
        }
        let mut out_shape = base;
        out_shape[axis] = 6;
        let shifts = specs.iter().map(|s| s.1).collect();
        let z = node(
            &mut g,
            "cat",
            IntOp::Concat { axis, shifts },
            &ids,
            qtype(IntElem::I8, &out_shape, 0),
        );
        output(&mut g, z);
        // Reference: walk the output index, find the input it comes from.
        let mut expected = Vec::new();
        let strides = |s: &[usize; 4]| [s[1] * s[2] * s[3], s[2] * s[3], s[3], 1];
        for i0 in 0..out_shape[0] {
            for i1 in 0..out_shape[1] {
                for i2 in 0..out_shape[2] {
                    for i3 in 0..out_shape[3] {
                        let mut idx = [i0, i1, i2, i3];
                        let mut k = 0;
                        while idx[axis] >= shapes[k][axis] {
                            idx[axis] -= shapes[k][axis];
                            k += 1;
                        }
                        let st = strides(&shapes[k]);
                        let flat: usize = (0..4).map(|d| idx[d] * st[d]).sum();
                        expected.push(clamp_ref(
                            shift_ref(qs[k][flat] as i128, specs[k].1),
                            -128,
                            127,
                        ));
                    }
                }
            }
        }
        let xs: Vec<Vec<f32>> = qs.iter().map(|q| dequant(q, 0)).collect();
        let refs: Vec<&[f32]> = xs.iter().map(|v| &v[..]).collect();
        assert_eq!(values(&run1(&g, &refs)[0]), expected, "axis {axis}");
    }
}

#[test]
fn requant_and_reshape() {
    let mut rng = Rng(11);
    for _ in 0..50 {
        let in_elem = rng.pick(&[IntElem::U8, IntElem::I8]);
        let out_elem = rng.pick(&[IntElem::U8, IntElem::I8, IntElem::I32]);
        let rescale = random_rescale(&mut rng, out_elem);
        let rescale = match rescale {
            Rescale::Shift(s) => Rescale::Shift(s.min(9)),
            r => r,
        };
        let (lo, hi) = range(out_elem);
        let (lo, hi) = if out_elem == IntElem::I32 {
            (lo, hi)
        } else {
            (lo + 1, hi - 3)
        };
        let mut g = IntGraph::new("rq");
        let x = input(&mut g, "x", in_elem, &[1, 4, 2, 2], 1);
        let op = IntOp::Requant {
            rescale,
            lo: lo as i32,
            hi: hi as i32,
        };
        let y = node(&mut g, "rq", op, &[x], qtype(out_elem, &[1, 4, 2, 2], 1));
        let r = node(
            &mut g,
            "flat",
            IntOp::Reshape,
            &[y],
            qtype(out_elem, &[1, 16], 1),
        );
        output(&mut g, r);
        output(&mut g, y);
        let q = random_q(&mut rng, in_elem, 16);
        let expected: Vec<i64> = q
            .iter()
            .map(|&v| clamp_ref(rescale_ref(rescale, v), lo, hi))
            .collect();
        let out = run1(&g, &[&dequant(&q, 1)]);
        assert_eq!(values(&out[0]), expected);
        assert_eq!(out[0], out[1]);
    }
}

// ---------------------------------------------------------------- pooling

fn pool_ref(
    p: &Pool,
    x: &[i64],
    xs: &[usize],
    out: &[usize],
    max: bool,
    elem: IntElem,
) -> Vec<i64> {
    let (h, w) = (xs[2], xs[3]);
    let mut res = Vec::new();
    for plane in 0..xs[0] * xs[1] {
        for oy in 0..out[2] {
            for ox in 0..out[3] {
                let mut m: Option<i64> = None;
                let mut s = 0i64;
                for ky in 0..p.kernel[0] {
                    for kx in 0..p.kernel[1] {
                        let iy =
                            (oy * p.strides[0] + ky * p.dilations[0]) as i64 - p.pads[0] as i64;
                        let ix =
                            (ox * p.strides[1] + kx * p.dilations[1]) as i64 - p.pads[1] as i64;
                        if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                            continue;
                        }
                        let v = x[plane * h * w + iy as usize * w + ix as usize];
                        m = Some(m.map_or(v, |m| m.max(v)));
                        s += v;
                    }
                }
                res.push(if max { m.unwrap_or(range(elem).0) } else { s });
            }
        }
    }
    res
}

fn random_pool(rng: &mut Rng, h: usize, w: usize) -> Option<(Pool, Vec<usize>)> {
    let mut p = Pool::new([rng.usize(1, 4), rng.usize(1, 4)]);
    p.strides = [rng.usize(1, 3), rng.usize(1, 3)];
    p.dilations = [rng.pick(&[1, 1, 2]), rng.pick(&[1, 1, 2])];
    p.pads = [
        rng.usize(0, p.kernel[0] - 1),
        rng.usize(0, p.kernel[1] - 1),
        rng.usize(0, p.kernel[0] - 1),
        rng.usize(0, p.kernel[1] - 1),
    ];
    p.ceil_mode = rng.bool();
    let t = lutq_ir::infer::infer(
        &Op::MaxPool(p.clone()),
        &[&TensorType::f32(vec![1, 3, h, w])],
    )
    .ok()?;
    Some((p, t.shape))
}

#[test]
fn max_pool_padding_never_wins() {
    let mut rng = Rng(3);
    let mut tested = 0;
    while tested < 200 {
        let (h, w) = (rng.usize(1, 9), rng.usize(1, 9));
        let Some((p, out)) = random_pool(&mut rng, h, w) else {
            continue;
        };
        tested += 1;
        let elem = rng.pick(&[IntElem::I8, IntElem::U8]);
        let xs = [1, 3, h, w];
        // All-negative i8 input: a zero-padded max would show a 0.
        let q: Vec<i64> = if elem == IntElem::I8 && rng.bool() {
            (0..3 * h * w).map(|_| rng.int(-128, -1)).collect()
        } else {
            random_q(&mut rng, elem, 3 * h * w)
        };
        let mut g = IntGraph::new("mp");
        let x = input(&mut g, "x", elem, &xs, 2);
        let y = node(
            &mut g,
            "mp",
            IntOp::MaxPool(p.clone()),
            &[x],
            qtype(elem, &out, 2),
        );
        output(&mut g, y);
        let got = values(&run1(&g, &[&dequant(&q, 2)])[0]);
        assert_eq!(got, pool_ref(&p, &q, &xs, &out, true, elem), "{p:?} {xs:?}");
        if q.iter().all(|&v| v < 0) {
            assert!(got.iter().all(|&v| v < 0));
        }
    }
}

#[test]
fn sum_pool_windowed_and_global() {
    let mut rng = Rng(8);
    let mut tested = 0;
    while tested < 200 {
        let (h, w) = (rng.usize(1, 9), rng.usize(1, 9));
        let global = tested % 4 == 0;
        let (p, out) = if global {
            (Pool::new([h, w]), vec![1, 3, 1, 1])
        } else {
            let Some(pw) = random_pool(&mut rng, h, w) else {
                continue;
            };
            pw
        };
        tested += 1;
        let elem = rng.pick(&[IntElem::I8, IntElem::U8]);
        let out_elem = rng.pick(&[IntElem::I8, IntElem::U8]);
        let shift = rng.int(-1, 5) as i32;
        let (lo, hi) = range(out_elem);
        let xs = [1, 3, h, w];
        let q = random_q(&mut rng, elem, 3 * h * w);
        let mut g = IntGraph::new("sp");
        let x = input(&mut g, "x", elem, &xs, 0);
        let op = IntOp::SumPool {
            pool: p.clone(),
            shift,
            lo: lo as i32,
            hi: hi as i32,
        };
        let y = node(&mut g, "sp", op, &[x], qtype(out_elem, &out, 0));
        output(&mut g, y);
        let expected: Vec<i64> = pool_ref(&p, &q, &xs, &out, false, elem)
            .into_iter()
            .map(|s| clamp_ref(shift_ref(s as i128, shift), lo, hi))
            .collect();
        assert_eq!(
            values(&run1(&g, &[&dequant(&q, 0)])[0]),
            expected,
            "{p:?} {xs:?}"
        );
    }
}

// ---------------------------------------------------------------- whole graphs

/// A small residual network: quantize → conv (u8, ReLU) → depthwise → pointwise (i8) →
/// add with a requantized skip → max-pool → global sum-pool → dense emitting i32, plus
/// a second output.
fn small_net(rng: &mut Rng) -> IntGraph {
    let mut g = IntGraph::new("net");
    let x = input(&mut g, "x", IntElem::I8, &[1, 3, 9, 9], 5);
    let conv = |g: &mut IntGraph,
                rng: &mut Rng,
                x: ValueId,
                c: usize,
                o: usize,
                group: usize,
                k: usize,
                s: usize,
                elem: IntElem| {
        let xs = g.ty(x).shape.clone();
        let oh = conv_out_len(xs[2], k, s, 1, k / 2, k / 2).unwrap();
        let mut l = random_layer(
            rng,
            Some(ConvGeom {
                strides: [s, s],
                pads: [k / 2; 4],
                dilations: [1, 1],
                group,
            }),
            [o, c / group, k, k],
            elem,
        );
        l.rescale = vec![Rescale::Shift(rng.int(9, 12) as i32); o];
        node(
            g,
            "conv",
            IntOp::Linear(l),
            &[x],
            qtype(elem, &[1, o, oh, oh], 4),
        )
    };
    let a = conv(&mut g, rng, x, 3, 8, 1, 3, 2, IntElem::U8);
    let b = conv(&mut g, rng, a, 8, 8, 8, 3, 1, IntElem::U8);
    let c = conv(&mut g, rng, b, 8, 8, 1, 1, 1, IntElem::I8);
    let skip = node(
        &mut g,
        "skip",
        IntOp::Requant {
            rescale: Rescale::Shift(1),
            lo: -128,
            hi: 127,
        },
        &[a],
        qtype(IntElem::I8, &[1, 8, 5, 5], 3),
    );
    let add = QAdd {
        align_a: 0,
        align_b: 1,
        shift: 1,
        lo: -128,
        hi: 127,
    };
    let sum = node(
        &mut g,
        "add",
        IntOp::Add(add),
        &[c, skip],
        qtype(IntElem::I8, &[1, 8, 5, 5], 3),
    );
    let mut p = Pool::new([2, 2]);
    p.strides = [2, 2];
    p.ceil_mode = true;
    let mp = node(
        &mut g,
        "mp",
        IntOp::MaxPool(p),
        &[sum],
        qtype(IntElem::I8, &[1, 8, 3, 3], 3),
    );
    let gp = node(
        &mut g,
        "gp",
        IntOp::SumPool {
            pool: Pool::new([3, 3]),
            shift: 3,
            lo: -128,
            hi: 127,
        },
        &[mp],
        qtype(IntElem::I8, &[1, 8, 1, 1], 0),
    );
    let flat = node(
        &mut g,
        "flat",
        IntOp::Reshape,
        &[gp],
        qtype(IntElem::I8, &[1, 8], 0),
    );
    let mut fc = random_layer(rng, None, [5, 8, 1, 1], IntElem::I32);
    fc.rescale = vec![Rescale::Shift(0); 5];
    let logits = node(
        &mut g,
        "fc",
        IntOp::Linear(fc),
        &[flat],
        qtype(IntElem::I32, &[1, 5], 5),
    );
    output(&mut g, logits);
    output(&mut g, sum);
    g.validate().unwrap();
    g
}

#[test]
fn exec_node_reproduces_every_value_of_a_run() {
    let mut rng = Rng(21);
    let g = small_net(&mut rng);
    let interp = IntInterpreter::new(&g).unwrap();
    let x: Vec<f32> = (0..3 * 81)
        .map(|_| rng.int(-200, 200) as f32 / 64.0)
        .collect();
    let mut seen: Vec<Option<IntData>> = vec![None; g.nodes.len()];
    let outs = interp
        .run_with_observer(&[&x], &mut |v, d| {
            assert!(seen[v.index()].replace(d.clone()).is_none());
        })
        .unwrap();
    let seen: Vec<IntData> = seen
        .into_iter()
        .map(|d| d.expect("every node observed"))
        .collect();
    for (i, n) in g.nodes.iter().enumerate() {
        let args: Vec<&IntData> = n.inputs.iter().map(|v| &seen[v.index()]).collect();
        assert_eq!(
            exec_node(&g, n, &args, &[&x]).unwrap(),
            seen[i],
            "node {i} ({})",
            n.name
        );
    }
    assert_eq!(outs[0], seen[g.outputs[0].value.index()]);
    assert_eq!(outs[1], seen[g.outputs[1].value.index()]);
    // Something non-trivial flows through.
    assert!(values(&outs[1]).iter().any(|&v| v != 0));
    // Dequantized outputs are q · 2^-exp.
    let deq = interp.run_dequantized(&[&x]).unwrap();
    for (k, o) in g.outputs.iter().enumerate() {
        let exp = g.ty(o.value).exp;
        let want: Vec<f32> = values(&outs[k])
            .iter()
            .map(|&q| (q as f64 * (-(exp as f64)).exp2()) as f32)
            .collect();
        assert_eq!(deq[k], want);
    }
}

#[test]
fn run_batch_equals_per_sample_runs() {
    let mut rng = Rng(77);
    let g = small_net(&mut rng);
    let interp = IntInterpreter::new(&g).unwrap();
    let n = 5;
    let data: Vec<f32> = (0..n * 3 * 81)
        .map(|_| rng.int(-300, 300) as f32 / 64.0)
        .collect();
    let batch = Tensor::f32([n, 3, 9, 9], data.clone()).unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let report = |k: usize| seen.lock().unwrap().push(k);
    let outs = interp.run_batch(&batch, Some(&report)).unwrap();
    assert_eq!(outs[0].shape(), [n, 5]);
    assert_eq!(outs[1].shape(), [n, 8, 5, 5]);
    for s in 0..n {
        let one = interp
            .run_dequantized(&[&data[s * 243..(s + 1) * 243]])
            .unwrap();
        for k in 0..2 {
            let len = one[k].len();
            assert_eq!(
                &outs[k].as_f32().unwrap()[s * len..(s + 1) * len],
                &one[k][..]
            );
        }
    }
    let mut seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), n);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    seen.sort();
    assert_eq!(seen.last(), Some(&n));
    // A batch whose sample shape is wrong is refused.
    let bad = Tensor::f32([2, 3, 9, 8], vec![0.0; 2 * 3 * 72]).unwrap();
    assert!(interp.run_batch(&bad, None).is_err());
}

#[test]
fn invalid_graphs_and_inputs_are_refused() {
    let mut rng = Rng(1);
    let mut g = small_net(&mut rng);
    let interp = IntInterpreter::new(&g).unwrap();
    assert!(interp.run(&[]).is_err());
    assert!(interp.run(&[&[0.0; 5]]).is_err());
    // An output type that does not fit the layer.
    g.nodes[1].ty.shape = vec![1, 8, 4, 4];
    assert!(IntInterpreter::new(&g).is_err());
    let x = IntData::zeros(IntElem::I8, 3 * 81);
    let err = exec_node(&g, &g.nodes[1], &[&x], &[]).unwrap_err();
    assert!(err.to_string().contains("conv"), "{err}");
    // Input data that does not fit its type.
    let g = small_net(&mut rng);
    let short = IntData::zeros(IntElem::I8, 10);
    assert!(exec_node(&g, &g.nodes[1], &[&short], &[]).is_err());
    // Stored weights that do not fit their shape are an error, not a panic.
    let mut g = small_net(&mut rng);
    if let IntOp::Linear(l) = &mut g.nodes[1].op {
        l.weights = match &l.weights {
            QWeights::Int8 { shape, values } => QWeights::Int8 {
                shape: *shape,
                values: values[1..].to_vec(),
            },
            QWeights::Lut { shape, luts, codes } => QWeights::Lut {
                shape: *shape,
                luts: luts.clone(),
                codes: codes[1..].to_vec(),
            },
        };
    }
    let x = IntData::zeros(IntElem::I8, 3 * 81);
    assert!(exec_node(&g, &g.nodes[1], &[&x], &[]).is_err());
    assert!(IntInterpreter::new(&g).is_err());
}

// ---------------------------------------------------------------- throughput

/// `cargo test -p lutq-interp --release --test int_ops -- --ignored --nocapture`:
/// single-threaded GMAC/s on MobileNetV2-shaped layers.
#[test]
#[ignore]
fn int_conv_throughput() {
    let mut rng = Rng(5);
    // (c_in, c_out, group, k, stride, size)
    let layers = [
        (3, 32, 1, 3, 2, 224),
        (32, 32, 32, 3, 1, 112),
        (32, 16, 1, 1, 1, 112),
        (16, 96, 1, 1, 1, 112),
        (96, 96, 96, 3, 2, 112),
        (96, 24, 1, 1, 1, 56),
        (24, 144, 1, 1, 1, 56),
        (144, 144, 144, 3, 1, 56),
        (144, 24, 1, 1, 1, 56),
        (192, 192, 192, 3, 1, 28),
        (192, 32, 1, 1, 1, 28),
        (384, 64, 1, 1, 1, 14),
        (64, 384, 1, 1, 1, 14),
        (384, 384, 384, 3, 1, 14),
        (960, 160, 1, 1, 1, 7),
        (160, 960, 1, 1, 1, 7),
        (960, 960, 960, 3, 1, 7),
        (320, 1280, 1, 1, 1, 7),
    ];
    let (mut total_macs, mut total_s) = (0f64, 0f64);
    for (c, o_n, group, k, s, size) in layers {
        let p = k / 2;
        let xs = [1, c, size, size];
        let o = conv_out_len(size, k, s, 1, p, p).unwrap();
        let out = [1, o_n, o, o];
        let mut layer = random_layer(
            &mut rng,
            Some(ConvGeom {
                strides: [s, s],
                pads: [p; 4],
                dilations: [1, 1],
                group,
            }),
            [o_n, c / group, k, k],
            IntElem::U8,
        );
        layer.rescale = vec![Rescale::Shift(12); o_n];
        let x = IntData::from_i32(
            IntElem::U8,
            random_q(&mut rng, IntElem::U8, xs.iter().product())
                .iter()
                .map(|&v| v as i32)
                .collect(),
        );
        let w = layer.weights.decode();
        let ty = qtype(IntElem::U8, &out, 0);
        let macs = (out.iter().product::<usize>() * (c / group) * k * k) as f64;
        // The best of several runs: the machine is shared.
        let reps = (2e8 / macs).ceil().max(5.0) as usize;
        let (mut t_acc, mut t_fin) = (f64::MAX, f64::MAX);
        for _ in 0..reps {
            let t = std::time::Instant::now();
            let acc = linear_accumulators(&layer, &w, &x, &xs, &out);
            t_acc = t_acc.min(t.elapsed().as_secs_f64());
            let t = std::time::Instant::now();
            std::hint::black_box(finish_linear(&layer, &acc, &ty, Default::default()));
            t_fin = t_fin.min(t.elapsed().as_secs_f64());
        }
        let dt = t_acc + t_fin;
        total_macs += macs;
        total_s += dt;
        println!(
            "{c:4}->{o_n:4} g{group:<4} k{k} s{s} {size:3}²: {:6.2} GMAC/s ({:.2} ms, of which rescale {:.2} ms)",
            macs / dt / 1e9,
            dt * 1e3,
            t_fin * 1e3
        );
    }
    println!(
        "total: {:.1} M MACs, {:.2} GMAC/s",
        total_macs / 1e6,
        total_macs / total_s / 1e9
    );
}

// ---------------------------------------------------------------- tables, products, softmax, data movement

#[test]
fn tables_index_by_code_per_layer_and_per_channel() {
    let mut rng = Rng(21);
    for _ in 0..40 {
        let in_elem = rng.pick(&[IntElem::U8, IntElem::I8]);
        let out_elem = rng.pick(&[IntElem::U8, IntElem::I8]);
        let shape = [1, rng.usize(1, 5), rng.usize(1, 3), rng.usize(1, 4)];
        let channels = shape[1];
        let tables = if rng.bool() { 1 } else { channels };
        let entries = random_q(&mut rng, out_elem, 256 * tables);
        let mut g = IntGraph::new("t");
        let x = input(&mut g, "x", in_elem, &shape, 2);
        let op = IntOp::Table(lutq_ir::int::QTable {
            entries: entries.iter().map(|&v| v as i32).collect(),
        });
        let y = node(&mut g, "t", op, &[x], qtype(out_elem, &shape, 5));
        output(&mut g, y);
        let n: usize = shape.iter().product();
        let q = random_q(&mut rng, in_elem, n);
        let plane = shape[2] * shape[3];
        let (x_min, _) = range(in_elem);
        let expected: Vec<i64> = (0..n)
            .map(|i| {
                let t = if tables == 1 { 0 } else { i / plane };
                entries[t * 256 + (q[i] - x_min) as usize]
            })
            .collect();
        assert_eq!(values(&run1(&g, &[&dequant(&q, 2)])[0]), expected);
    }
}

#[test]
fn products_broadcast_the_second_operand_and_round() {
    let mut rng = Rng(22);
    for _ in 0..40 {
        let (ea, eb) = (
            rng.pick(&[IntElem::U8, IntElem::I8]),
            rng.pick(&[IntElem::U8, IntElem::I8]),
        );
        let a_shape = [1, rng.usize(1, 6), rng.usize(1, 3), rng.usize(1, 3)];
        let k = rng.usize(0, 4);
        let b_shape: Vec<usize> = (0..4).map(|d| if d < k { a_shape[d] } else { 1 }).collect();
        let shift = rng.usize(0, 12) as i32;
        let (lo, hi) = range(rng.pick(&[IntElem::U8, IntElem::I8]));
        let out_elem = if lo == 0 { IntElem::U8 } else { IntElem::I8 };
        let mut g = IntGraph::new("m");
        let a = input(&mut g, "a", ea, &a_shape, 3);
        let b = input(&mut g, "b", eb, &b_shape, 4);
        let op = IntOp::Mul(lutq_ir::int::QMul {
            shift,
            lo: lo as i32,
            hi: hi as i32,
        });
        let y = node(
            &mut g,
            "m",
            op,
            &[a, b],
            qtype(out_elem, &a_shape, 7 - shift),
        );
        output(&mut g, y);
        let na: usize = a_shape.iter().product();
        let nb: usize = b_shape.iter().product();
        let (qa, qb) = (random_q(&mut rng, ea, na), random_q(&mut rng, eb, nb));
        // Broadcast by coordinates: b's index keeps a's coordinate where b's dim is not 1.
        let expected: Vec<i64> = (0..na)
            .map(|i| {
                let mut rest = i;
                let mut coords = [0usize; 4];
                for d in (0..4).rev() {
                    coords[d] = rest % a_shape[d];
                    rest /= a_shape[d];
                }
                let mut j = 0;
                for d in 0..4 {
                    j = j * b_shape[d] + if b_shape[d] == 1 { 0 } else { coords[d] };
                }
                clamp_ref(shift_ref(qa[i] as i128 * qb[j] as i128, shift), lo, hi)
            })
            .collect();
        let out = run1(&g, &[&dequant(&qa, 3), &dequant(&qb, 4)]);
        assert_eq!(values(&out[0]), expected);
    }
}

#[test]
fn softmax_normalizes_each_row_with_one_division() {
    let mut rng = Rng(23);
    for _ in 0..30 {
        let in_elem = rng.pick(&[IntElem::U8, IntElem::I8]);
        let shape = [1, rng.usize(1, 12), rng.usize(1, 3)];
        let axis = rng.usize(1, 2);
        let exp = rng.usize(0, 5) as i32;
        let table: Vec<i32> = (0..256)
            .map(|d| ((-(d as f64) * (-(exp as f64)).exp2()).exp() * 65536.0).round() as i32)
            .collect();
        let mut g = IntGraph::new("s");
        let x = input(&mut g, "x", in_elem, &shape, exp);
        let op = IntOp::Softmax(lutq_ir::int::QSoftmax {
            axis,
            exp_table: table.clone(),
        });
        let y = node(&mut g, "s", op, &[x], qtype(IntElem::U8, &shape, 8));
        output(&mut g, y);
        let n: usize = shape.iter().product();
        let q = random_q(&mut rng, in_elem, n);
        let at = |i: usize, j: usize, k: usize| (i * shape[1] + j) * shape[2] + k;
        let mut expected = vec![0i64; n];
        for other in 0..shape[3 - axis] {
            let idx = |t: usize| {
                if axis == 1 {
                    at(0, t, other)
                } else {
                    at(0, other, t)
                }
            };
            let len = shape[axis];
            let m = (0..len).map(|t| q[idx(t)]).max().unwrap();
            let e: Vec<i64> = (0..len)
                .map(|t| table[(m - q[idx(t)]) as usize] as i64)
                .collect();
            let s: i64 = e.iter().sum();
            for t in 0..len {
                expected[idx(t)] = ((e[t] * 256 + s / 2) / s).min(255);
            }
        }
        let out = run1(&g, &[&dequant(&q, exp)]);
        assert_eq!(values(&out[0]), expected);
        // Each row's probabilities sum to about 256 (one code of rounding per element).
        let row_sum: i64 = (0..shape[axis])
            .map(|t| expected[if axis == 1 { at(0, t, 0) } else { at(0, 0, t) }])
            .sum();
        assert!((row_sum - 256).abs() <= shape[axis] as i64 + 1, "{row_sum}");
    }
}

#[test]
fn transpose_and_slice_move_elements() {
    let mut rng = Rng(24);
    for _ in 0..30 {
        let shape = [1, rng.usize(1, 4), rng.usize(1, 4), rng.usize(1, 4)];
        let mut perm = vec![0usize, 1, 2, 3];
        for i in (1..4).rev() {
            let j = rng.usize(0, i);
            perm.swap(i, j);
        }
        let t_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let axis = rng.usize(1, 3);
        let step = rng.usize(1, 2);
        let start = rng.usize(0, shape[axis] - 1);
        let len = (shape[axis] - start).div_ceil(step);
        let mut s_shape = shape.to_vec();
        s_shape[axis] = len;
        let mut g = IntGraph::new("mv");
        let x = input(&mut g, "x", IntElem::I8, &shape, 0);
        let t = node(
            &mut g,
            "t",
            IntOp::Transpose { perm: perm.clone() },
            &[x],
            qtype(IntElem::I8, &t_shape, 0),
        );
        let s = node(
            &mut g,
            "s",
            IntOp::Slice { axis, start, step },
            &[x],
            qtype(IntElem::I8, &s_shape, 0),
        );
        output(&mut g, t);
        output(&mut g, s);
        let n: usize = shape.iter().product();
        let q = random_q(&mut rng, IntElem::I8, n);
        let flat =
            |c: [usize; 4], sh: &[usize]| ((c[0] * sh[1] + c[1]) * sh[2] + c[2]) * sh[3] + c[3];
        let mut want_t = vec![0i64; n];
        let mut want_s = vec![0i64; s_shape.iter().product()];
        for a in 0..shape[0] {
            for b in 0..shape[1] {
                for c in 0..shape[2] {
                    for d in 0..shape[3] {
                        let src = [a, b, c, d];
                        let dst: [usize; 4] = std::array::from_fn(|k| src[perm[k]]);
                        want_t[flat(dst, &t_shape)] = q[flat(src, &shape)];
                        if src[axis] >= start && (src[axis] - start).is_multiple_of(step) {
                            let mut o = src;
                            o[axis] = (src[axis] - start) / step;
                            want_s[flat(o, &s_shape)] = q[flat(src, &shape)];
                        }
                    }
                }
            }
        }
        let out = run1(&g, &[&dequant(&q, 0)]);
        assert_eq!(values(&out[0]), want_t, "perm {perm:?}");
        assert_eq!(
            values(&out[1]),
            want_s,
            "axis {axis} start {start} step {step}"
        );
    }
}

#[test]
fn resize_blends_four_neighbours_and_rounds_half_up() {
    let mut rng = Rng(25);
    for case in 0..40 {
        let elem = rng.pick(&[IntElem::U8, IntElem::I8]);
        let shape = [1, rng.usize(1, 3), rng.usize(1, 5), rng.usize(1, 5)];
        let frac = rng.usize(0, 8) as u32;
        let one = 1i64 << frac;
        let mut taps = |n: usize, count: usize| -> Vec<lutq_ir::int::ResizeTap> {
            (0..count)
                .map(|_| lutq_ir::int::ResizeTap {
                    lo: rng.usize(0, n - 1) as u32,
                    hi: rng.usize(0, n - 1) as u32,
                    w_hi: rng.int(0, one) as i32,
                })
                .collect()
        };
        let rows = taps(shape[2], 1 + case % 7);
        let cols = taps(shape[3], 1 + case % 5);
        let out_shape = [shape[0], shape[1], rows.len(), cols.len()];
        let mut g = IntGraph::new("r");
        let x = input(&mut g, "x", elem, &shape, 1);
        let op = IntOp::Resize(lutq_ir::int::QResize {
            rows: rows.clone(),
            cols: cols.clone(),
            frac,
        });
        let y = node(&mut g, "r", op, &[x], qtype(elem, &out_shape, 1));
        output(&mut g, y);
        g.validate().unwrap();
        let n: usize = shape.iter().product();
        let q = random_q(&mut rng, elem, n);
        let (h, w) = (shape[2], shape[3]);
        let mut expected = Vec::new();
        for c in 0..shape[1] {
            for r in &rows {
                for k in &cols {
                    let at = |y: u32, x: u32| q[c * h * w + y as usize * w + x as usize] as i128;
                    let (wy, wx) = (r.w_hi as i128, k.w_hi as i128);
                    let one = one as i128;
                    let sum = (one - wy) * (one - wx) * at(r.lo, k.lo)
                        + (one - wy) * wx * at(r.lo, k.hi)
                        + wy * (one - wx) * at(r.hi, k.lo)
                        + wy * wx * at(r.hi, k.hi);
                    let v = shift_ref(sum, 2 * frac as i32) as i64;
                    // A convex blend stays within its four neighbours.
                    let four = [
                        at(r.lo, k.lo),
                        at(r.lo, k.hi),
                        at(r.hi, k.lo),
                        at(r.hi, k.hi),
                    ];
                    assert!(
                        (*four.iter().min().unwrap() as i64..=*four.iter().max().unwrap() as i64)
                            .contains(&v)
                    );
                    expected.push(v);
                }
            }
        }
        let out = run1(&g, &[&dequant(&q, 1)]);
        assert_eq!(values(&out[0]), expected, "case {case}");
    }
}

#[test]
fn max_and_min_align_each_operand_then_pick() {
    let mut rng = Rng(26);
    for case in 0..40 {
        let (ea, eb) = (
            rng.pick(&[IntElem::U8, IntElem::I8]),
            rng.pick(&[IntElem::U8, IntElem::I8]),
        );
        let out_elem = rng.pick(&[IntElem::U8, IntElem::I8]);
        let shape = [1, rng.usize(1, 4), rng.usize(1, 3), rng.usize(1, 3)];
        let shifts = vec![rng.int(-3, 3) as i32, rng.int(-3, 3) as i32];
        let max = rng.bool();
        let kind = if max {
            lutq_ir::int::Extremum::Max
        } else {
            lutq_ir::int::Extremum::Min
        };
        // Exponents consistent with the shifts (shift = operand exponent − output exponent).
        let out_exp = 3 - shifts[0];
        let (ea_exp, eb_exp) = (3, out_exp + shifts[1]);
        let mut g = IntGraph::new("m");
        let a = input(&mut g, "a", ea, &shape, ea_exp);
        let b = input(&mut g, "b", eb, &shape, eb_exp);
        let op = IntOp::Extremum {
            kind,
            shifts: shifts.clone(),
        };
        let y = node(&mut g, "m", op, &[a, b], qtype(out_elem, &shape, out_exp));
        output(&mut g, y);
        g.validate().unwrap();
        let n: usize = shape.iter().product();
        let (qa, qb) = (random_q(&mut rng, ea, n), random_q(&mut rng, eb, n));
        let (lo, hi) = range(out_elem);
        let expected: Vec<i64> = (0..n)
            .map(|i| {
                let a = clamp_ref(shift_ref(qa[i] as i128, shifts[0]), lo, hi);
                let b = clamp_ref(shift_ref(qb[i] as i128, shifts[1]), lo, hi);
                if max { a.max(b) } else { a.min(b) }
            })
            .collect();
        let out = run1(&g, &[&dequant(&qa, ea_exp), &dequant(&qb, eb_exp)]);
        assert_eq!(values(&out[0]), expected, "case {case}");
    }
}
