//! Random small integer programs for the backends' property tests: every op, every
//! weight format (LUT per layer or per channel, int8), odd geometries (groups,
//! depthwise, strides, pads, dilations), negative and fixed-point rescales, residual
//! adds, concats, pools, i32 outputs, and inputs with NaN and ±∞.

use lutq_ir::infer::infer;
use lutq_ir::int::{
    ConvGeom, Extremum, IntElem, IntGraph, IntInput, IntNode, IntOp, IntOutput, QAdd, QLinear,
    QMul, QResize, QSoftmax, QTable, QType, QWeights, Rescale, ResizeTap, Rounding, ValueId,
};
use lutq_ir::{Op, Pool, TensorType};

/// A xorshift generator: deterministic, seeded by its value.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }
    /// True with probability `percent` %.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn elem8(r: &mut Rng) -> IntElem {
    if r.chance(50) {
        IntElem::I8
    } else {
        IntElem::U8
    }
}

/// A clamp within `elem`'s range, sometimes tightened (a fused activation).
fn clamp_for(r: &mut Rng, elem: IntElem) -> (i32, i32) {
    let (lo, hi) = elem.range();
    match r.below(4) {
        0 => (lo.max(0), hi),
        1 => (lo.max(0), hi.min(100)),
        2 if elem == IntElem::I8 => (-60, 90),
        _ => (lo, hi),
    }
}

fn rescale(r: &mut Rng, pot: bool, k: usize) -> Rescale {
    // Bigger fan-ins get bigger shifts (keeps outputs in range, like real layers).
    let base = (usize::BITS - k.leading_zeros()) as i64 + 4;
    if pot {
        Rescale::Shift(r.range(-2, base + 4) as i32)
    } else {
        let f = (r.range(1, 1 << 20) as f64) * 2f64.powi(-(base as i32) - 20);
        Rescale::from_factor(f).unwrap()
    }
}

fn weights(r: &mut Rng, shape: [usize; 4]) -> QWeights {
    let [o, i, kh, kw] = shape;
    let k = i * kh * kw;
    let mag = r.range(1, 127);
    if r.chance(50) {
        let n_luts = if r.chance(50) { 1 } else { o };
        let luts = (0..n_luts)
            .map(|_| std::array::from_fn(|_| r.range(-mag - 1, mag) as i8))
            .collect();
        let codes: Vec<u8> = (0..o * k).map(|_| r.below(16) as u8).collect();
        QWeights::Lut {
            shape,
            luts,
            codes: QWeights::pack_codes(o, k, &codes),
        }
    } else {
        let values = (0..o * k)
            .map(|_| {
                if r.chance(15) {
                    0
                } else {
                    r.range(-mag - 1, mag) as i8
                }
            })
            .collect();
        QWeights::Int8 { shape, values }
    }
}

fn linear(r: &mut Rng, conv: Option<ConvGeom>, shape: [usize; 4], out_elem: IntElem) -> QLinear {
    let o = shape[0];
    let k = shape[1] * shape[2] * shape[3];
    let pot = r.chance(70);
    let (lo, hi) = clamp_for(r, out_elem);
    QLinear {
        conv,
        weights: weights(r, shape),
        bias: (0..o).map(|_| r.range(-3000, 3000) as i32).collect(),
        rescale: (0..o).map(|_| rescale(r, pot, k)).collect(),
        lo,
        hi,
        weight_exps: vec![0; o],
    }
}

fn node(
    name: String,
    op: IntOp,
    inputs: Vec<ValueId>,
    elem: IntElem,
    shape: Vec<usize>,
) -> IntNode {
    IntNode {
        name,
        op,
        inputs,
        ty: QType {
            elem,
            shape,
            exp: 0,
        },
    }
}

fn conv_out(size: usize, k: usize, s: usize, d: usize, p: usize) -> Option<usize> {
    (size + p).checked_sub(d * (k - 1) + 1).map(|v| v / s + 1)
}

/// Appends a random convolution on `x`; `None` if the drawn geometry does not fit.
fn push_conv(r: &mut Rng, g: &mut IntGraph, x: ValueId, out_c: Option<usize>) -> Option<ValueId> {
    let s = g.ty(x).shape.clone();
    let c = s[1];
    let same = out_c.is_some();
    let group = match r.below(4) {
        0 if !same => c,
        1 => {
            let divs: Vec<usize> = (1..=c).filter(|d| c.is_multiple_of(*d)).collect();
            divs[r.below(divs.len())]
        }
        _ => 1,
    };
    let o = match out_c {
        Some(o) if o.is_multiple_of(group) => o,
        Some(_) => return None,
        None => group * r.range(1, if group == c { 2 } else { 9 }) as usize,
    };
    let (kh, kw) = if same {
        let k = [1, 3][r.below(2)];
        (k, k)
    } else {
        (r.range(1, 4) as usize, r.range(1, 4) as usize)
    };
    let (strides, dilations, pads) = if same {
        ([1, 1], [1, 1], [kh / 2, kw / 2, kh / 2, kw / 2])
    } else {
        (
            [r.range(1, 3) as usize, r.range(1, 3) as usize],
            [r.range(1, 2) as usize, r.range(1, 2) as usize],
            [r.below(3), r.below(3), r.below(3), r.below(3)],
        )
    };
    let oh = conv_out(s[2], kh, strides[0], dilations[0], pads[0] + pads[2])?;
    let ow = conv_out(s[3], kw, strides[1], dilations[1], pads[1] + pads[3])?;
    let geom = ConvGeom {
        strides,
        pads,
        dilations,
        group,
    };
    let elem = elem8(r);
    let l = linear(r, Some(geom), [o, c / group, kh, kw], elem);
    let name = format!("conv{}", g.nodes.len());
    Some(g.push(node(
        name,
        IntOp::Linear(l),
        vec![x],
        elem,
        vec![1, o, oh, ow],
    )))
}

fn random_pool(r: &mut Rng) -> Pool {
    let mut p = Pool::new([r.range(1, 3) as usize, r.range(1, 3) as usize]);
    p.strides = [r.range(1, 3) as usize, r.range(1, 3) as usize];
    p.dilations = [r.range(1, 2) as usize, r.range(1, 2) as usize];
    p.pads = std::array::from_fn(|_| r.below(2));
    p.ceil_mode = r.chance(30);
    p
}

/// A random small integer program and a float input for it. Not every draw is valid:
/// callers skip those `IntGraph::validate` refuses.
pub fn random_graph(r: &mut Rng) -> (IntGraph, Vec<f32>) {
    let mut g = IntGraph::new("random");
    // Sometimes wide rows, for the kernels that work in chunks of 8 and 16 columns.
    let w = if r.chance(30) {
        r.range(16, 48)
    } else {
        r.range(1, 12)
    } as usize;
    let shape = vec![1, r.range(1, 6) as usize, r.range(1, 12) as usize, w];
    g.inputs.push(IntInput {
        name: "x".into(),
        shape: shape.clone(),
    });
    let in_elem = elem8(r);
    let mut cur = g.push(IntNode {
        name: "q".into(),
        op: IntOp::QuantizeInput { input: 0 },
        inputs: vec![],
        ty: QType {
            elem: in_elem,
            shape: shape.clone(),
            exp: r.range(0, 6) as i32,
        },
    });
    let steps = r.range(1, 7);
    for _ in 0..steps {
        let name = format!("n{}", g.nodes.len());
        let s = g.ty(cur).shape.clone();
        match r.below(14) {
            0..=2 => {
                if let Some(v) = push_conv(r, &mut g, cur, None) {
                    cur = v;
                }
            }
            3 => {
                // Residual: a same-shape branch added back.
                let Some(b) = push_conv(r, &mut g, cur, Some(s[1])) else {
                    continue;
                };
                let elem = elem8(r);
                let (lo, hi) = clamp_for(r, elem);
                let q = QAdd {
                    align_a: r.range(0, 5) as i32,
                    align_b: r.range(0, 5) as i32,
                    shift: r.range(-1, 7) as i32,
                    lo,
                    hi,
                };
                let (a, b) = if r.chance(50) { (cur, b) } else { (b, cur) };
                cur = g.push(node(name, IntOp::Add(q), vec![a, b], elem, s));
            }
            4 => {
                let o = r.range(1, 8) as usize;
                let Some(b) = push_conv(r, &mut g, cur, Some(o)) else {
                    continue;
                };
                let mut out = s.clone();
                out[1] += g.ty(b).shape[1];
                let shifts = vec![r.range(-2, 3) as i32, r.range(-2, 3) as i32];
                let (a, b) = if r.chance(50) { (cur, b) } else { (b, cur) };
                let elem = elem8(r);
                cur = g.push(node(
                    name,
                    IntOp::Concat { axis: 1, shifts },
                    vec![a, b],
                    elem,
                    out,
                ));
            }
            5 => {
                let p = random_pool(r);
                let Ok(t) = infer(&Op::MaxPool(p.clone()), &[&TensorType::f32(s.clone())]) else {
                    continue;
                };
                let ty = g.ty(cur).clone();
                cur = g.push(IntNode {
                    name,
                    op: IntOp::MaxPool(p),
                    inputs: vec![cur],
                    ty: QType {
                        shape: t.shape,
                        ..ty
                    },
                });
            }
            6 => {
                let p = if r.chance(30) {
                    Pool::new([s[2], s[3]])
                } else {
                    random_pool(r)
                };
                let Ok(t) = infer(&Op::SumPool(p.clone()), &[&TensorType::f32(s.clone())]) else {
                    continue;
                };
                let elem = elem8(r);
                let (lo, hi) = clamp_for(r, elem);
                let op = IntOp::SumPool {
                    pool: p,
                    shift: r.range(-1, 5) as i32,
                    lo,
                    hi,
                };
                cur = g.push(node(name, op, vec![cur], elem, t.shape));
            }
            7 => {
                // An element-wise table, one per layer or one per channel.
                let elem = elem8(r);
                let count = if r.chance(50) { 1 } else { s[1] };
                let (lo, hi) = elem.range();
                let entries = (0..256 * count)
                    .map(|_| r.range(lo as i64, hi as i64) as i32)
                    .collect();
                let op = IntOp::Table(QTable { entries });
                cur = g.push(node(name, op, vec![cur], elem, s));
            }
            8 => {
                // Squeeze-and-excitation: a per-channel gate from a global sum-pool.
                let elem = elem8(r);
                let gate = g.push(node(
                    format!("{name}_gate"),
                    IntOp::SumPool {
                        pool: Pool::new([s[2], s[3]]),
                        shift: r.range(0, 6) as i32,
                        lo: 0,
                        hi: 255,
                    },
                    vec![cur],
                    IntElem::U8,
                    vec![1, s[1], 1, 1],
                ));
                let (lo, hi) = clamp_for(r, elem);
                let op = IntOp::Mul(QMul {
                    shift: r.range(0, 12) as i32,
                    lo,
                    hi,
                });
                cur = g.push(node(name, op, vec![cur, gate], elem, s));
            }
            9 => {
                let perm = match r.below(3) {
                    0 => vec![0, 2, 3, 1],
                    1 => vec![0, 3, 1, 2],
                    _ => vec![0, 1, 3, 2],
                };
                let ty = g.ty(cur).clone();
                let shape = perm.iter().map(|&p| s[p]).collect();
                cur = g.push(IntNode {
                    name,
                    op: IntOp::Transpose { perm },
                    inputs: vec![cur],
                    ty: QType { shape, ..ty },
                });
            }
            10 => {
                let axis = r.range(1, 3) as usize;
                let step = r.range(1, 2) as usize;
                let start = r.below(s[axis]);
                let mut shape = s.clone();
                shape[axis] = (s[axis] - start).div_ceil(step);
                let ty = g.ty(cur).clone();
                cur = g.push(IntNode {
                    name,
                    op: IntOp::Slice { axis, start, step },
                    inputs: vec![cur],
                    ty: QType { shape, ..ty },
                });
            }
            11 => {
                // A resize: arbitrary taps (the op's definition does not need them
                // monotone), nearest (frac 0) or blended.
                let frac = [0, 1, 2, 8][r.below(4)];
                let mut taps = |n_in: usize| -> Vec<ResizeTap> {
                    (0..r.range(1, 20))
                        .map(|_| ResizeTap {
                            lo: r.below(n_in) as u32,
                            hi: r.below(n_in) as u32,
                            w_hi: if frac == 0 {
                                0
                            } else {
                                r.range(0, 1 << frac) as i32
                            },
                        })
                        .collect()
                };
                let (rows, cols) = (taps(s[2]), taps(s[3]));
                let ty = g.ty(cur).clone();
                let shape = vec![s[0], s[1], rows.len(), cols.len()];
                cur = g.push(IntNode {
                    name,
                    op: IntOp::Resize(QResize { rows, cols, frac }),
                    inputs: vec![cur],
                    ty: QType { shape, ..ty },
                });
            }
            12 => {
                // Max or min of the value and a same-shape branch, aligned by shifts.
                let Some(b) = push_conv(r, &mut g, cur, Some(s[1])) else {
                    continue;
                };
                let kind = if r.chance(50) {
                    Extremum::Max
                } else {
                    Extremum::Min
                };
                let shifts = vec![r.range(-2, 3) as i32, r.range(-2, 3) as i32];
                let elem = elem8(r);
                let op = IntOp::Extremum { kind, shifts };
                cur = g.push(node(name, op, vec![cur, b], elem, s));
            }
            _ => {
                let elem = elem8(r);
                let (lo, hi) = clamp_for(r, elem);
                let pot = r.chance(50);
                let op = IntOp::Requant {
                    rescale: rescale(r, pot, 1),
                    lo,
                    hi,
                };
                cur = g.push(node(name, op, vec![cur], elem, s));
            }
        }
    }
    let mut outputs = vec![cur];
    if r.chance(20) {
        // A convolution emitting its rescaled i32 values (full range, no clamp).
        if let Some(v) = push_conv(r, &mut g, cur, None) {
            let n = &mut g.nodes[v.index()];
            n.ty.elem = IntElem::I32;
            if let IntOp::Linear(l) = &mut n.op {
                (l.lo, l.hi) = IntElem::I32.range();
            }
            outputs = vec![v, cur];
        }
    } else if r.chance(50) {
        // Flatten and a dense layer, maybe emitting its i32 accumulator.
        let n = g.ty(cur).num_elements();
        let flat = g.push(node(
            "flat".into(),
            IntOp::Reshape,
            vec![cur],
            g.ty(cur).elem,
            vec![1, n],
        ));
        let o = r.range(1, 12) as usize;
        let wide = r.chance(50);
        let elem = if wide { IntElem::I32 } else { elem8(r) };
        let mut l = linear(r, None, [o, n, 1, 1], elem);
        if wide {
            (l.lo, l.hi) = IntElem::I32.range();
            l.rescale = vec![Rescale::Shift(0); o];
        }
        let d = g.push(node(
            "dense".into(),
            IntOp::Linear(l),
            vec![flat],
            elem,
            vec![1, o],
        ));
        outputs = vec![d];
        if !wide && r.chance(50) {
            // A classifier's softmax over the dense outputs.
            let exp = g.ty(d).exp;
            let exp_table = (0..256)
                .map(|k| ((-(k as f64) * (-(exp as f64)).exp2()).exp() * 65536.0).round() as i32)
                .collect();
            let sm = g.push(IntNode {
                name: "softmax".into(),
                op: IntOp::Softmax(QSoftmax { axis: 1, exp_table }),
                inputs: vec![d],
                ty: QType {
                    elem: IntElem::U8,
                    shape: vec![1, o],
                    exp: QSoftmax::OUT_EXP,
                },
            });
            outputs = vec![sm];
        }
        if r.chance(50) {
            outputs.push(cur);
        }
    }
    g.outputs = outputs
        .into_iter()
        .enumerate()
        .map(|(i, value)| IntOutput {
            name: format!("y{i}"),
            value,
        })
        .collect();
    let len: usize = shape.iter().product();
    let x = (0..len)
        .map(|_| match r.below(50) {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => f32::NEG_INFINITY,
            _ => (r.range(-4000, 4000) as f32) / 997.0,
        })
        .collect();
    // Drawn last, so that the programs and inputs of earlier seeds stay what they were.
    g.rounding = if r.chance(50) {
        Rounding::HalfEven
    } else {
        Rounding::HalfUp
    };
    (g, x)
}
