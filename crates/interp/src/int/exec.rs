//! One integer op at a time: [`exec_node`] and the kernels of every op but the linear
//! layers (`linear.rs`).

use lutq_ir::infer::infer;
use lutq_ir::int::{
    Extremum, InputQuantizer, IntCheckError, IntElem, IntGraph, IntNode, IntOp, QAdd, QTable,
    QWeights, Rounding, clamp,
};
use lutq_ir::{Op, Pool, TensorType};

use super::IntData;
use super::linear::{LinearWeights, finish_linear, linear_accumulators_prepared};
use crate::InterpError;

/// Executes one node of `graph` on its input values (`inputs`, in slot order, each
/// holding its value type's elements) and returns the value it produces.
/// `float_inputs` are the graph's f32 inputs, read by `QuantizeInput` only.
///
/// Stateless: LUT weights are decoded on every call ([`IntInterpreter`] decodes them once).
/// The graph need not have passed [`IntGraph::validate`] (the quantizer calls this while
/// building one layer by layer), but the node must be well formed: its inputs' types and
/// the data given must fit the op, which is checked; the accumulator bound is not (see
/// `linear_accumulators`).
///
/// [`IntInterpreter`]: super::IntInterpreter
pub fn exec_node(
    graph: &IntGraph,
    node: &IntNode,
    inputs: &[&IntData],
    float_inputs: &[&[f32]],
) -> Result<IntData, InterpError> {
    exec_with(graph, node, inputs, float_inputs, None)
}

pub(super) fn invalid(node: &IntNode, message: impl Into<String>) -> InterpError {
    InterpError::InvalidIntGraph(IntCheckError::Invalid {
        node: node.name.clone(),
        op: node.op.name(),
        message: message.into(),
    })
}

/// [`exec_node`] with the layer's weights already decoded
/// ([`QWeights::decode`](lutq_ir::int::QWeights::decode)) and prepared for the kernels
/// ([`LinearWeights`](super::LinearWeights)), if the caller has them: a caller running
/// one node on many samples decodes and prepares once.
pub fn exec_with(
    graph: &IntGraph,
    node: &IntNode,
    inputs: &[&IntData],
    float_inputs: &[&[f32]],
    decoded: Option<&LinearWeights>,
) -> Result<IntData, InterpError> {
    if inputs.len() != node.inputs.len() {
        return Err(invalid(
            node,
            format!(
                "{} input values given, the node has {}",
                inputs.len(),
                node.inputs.len()
            ),
        ));
    }
    for (k, (&v, data)) in node.inputs.iter().zip(inputs).enumerate() {
        let Some(ty) = graph.nodes.get(v.index()).map(|n| &n.ty) else {
            return Err(invalid(
                node,
                format!("input {k} refers to a missing value %{}", v.0),
            ));
        };
        if data.elem() != ty.elem || data.len() != ty.num_elements() {
            return Err(invalid(
                node,
                format!(
                    "input {k} holds {} {} elements, its type is {}{:?}",
                    data.len(),
                    data.elem().name(),
                    ty.elem.name(),
                    ty.shape
                ),
            ));
        }
    }
    let in_shape = |k: usize| &graph.ty(node.inputs[k]).shape;
    let out = &node.ty;
    let rounding = graph.rounding;
    let (t_lo, t_hi) = out.elem.range();
    let result = match &node.op {
        IntOp::QuantizeInput { input } => {
            let Some(x) = float_inputs.get(*input) else {
                return Err(InterpError::InputCount {
                    expected: input + 1,
                    actual: float_inputs.len(),
                });
            };
            if x.len() != out.num_elements() {
                return Err(InterpError::InputType {
                    name: graph
                        .inputs
                        .get(*input)
                        .map_or_else(|| node.name.clone(), |i| i.name.clone()),
                    expected: TensorType::f32(out.shape.clone()),
                    actual: TensorType::f32([x.len()]),
                });
            }
            let quantizer = InputQuantizer::new(out.exp, t_lo, t_hi, rounding);
            IntData::from_i32(out.elem, x.iter().map(|&v| quantizer.apply(v)).collect())
        }
        IntOp::Linear(layer) => {
            let x_shape = in_shape(0);
            check_linear_shapes(node, layer, x_shape, inputs[0].elem())?;
            let owned;
            let w = match decoded {
                Some(w) => w,
                None => {
                    owned = LinearWeights::of(layer);
                    &owned
                }
            };
            if w.len() != layer.weights.shape()[0] * layer.weights.row_len() {
                return Err(invalid(node, "weights do not fit their shape"));
            }
            let acc = linear_accumulators_prepared(layer, w, inputs[0], x_shape, &out.shape);
            finish_linear(layer, &acc, out, rounding)
        }
        IntOp::Add(a) => {
            if inputs[0].len() != out.num_elements() || inputs[1].len() != out.num_elements() {
                return Err(invalid(node, "operands and output must have one shape"));
            }
            add(a, inputs[0], inputs[1], out.elem, rounding)
        }
        IntOp::Concat { axis, shifts } => concat(graph, node, inputs, *axis, shifts)?,
        IntOp::MaxPool(p) => {
            check_pool_shape(node, Op::MaxPool(p.clone()), in_shape(0))?;
            if inputs[0].elem() != out.elem {
                return Err(invalid(node, "max-pool keeps the element type"));
            }
            max_pool(p, inputs[0], in_shape(0), &out.shape)
        }
        IntOp::SumPool {
            pool,
            shift,
            lo,
            hi,
        } => {
            check_pool_shape(node, Op::SumPool(pool.clone()), in_shape(0))?;
            let sums = sum_pool(pool, inputs[0], in_shape(0), &out.shape);
            IntData::from_i32(
                out.elem,
                sums.into_iter()
                    .map(|s| clamp(rounding.rshift(s, *shift), *lo, *hi))
                    .collect(),
            )
        }
        IntOp::Requant { rescale, lo, hi } => {
            if inputs[0].len() != out.num_elements() {
                return Err(invalid(node, "requant keeps the shape"));
            }
            let x = inputs[0];
            IntData::from_i32(
                out.elem,
                (0..x.len())
                    .map(|i| clamp(rescale.apply(x.get(i) as i64, rounding), *lo, *hi))
                    .collect(),
            )
        }
        IntOp::Reshape => {
            if inputs[0].len() != out.num_elements() || inputs[0].elem() != out.elem {
                return Err(invalid(node, "reshape keeps element count and type"));
            }
            inputs[0].clone()
        }
        IntOp::Table(t) => {
            let x = inputs[0];
            let channels = out.shape.get(1).copied().unwrap_or(1);
            let ok = x.len() == out.num_elements()
                && x.elem() != IntElem::I32
                && (t.tables() == 1 || t.tables() == channels)
                && t.entries.len() == t.tables() * QTable::LEN;
            if !ok {
                return Err(invalid(node, "table does not fit its input"));
            }
            let (x_min, _) = x.elem().range();
            let plane: usize = out.shape.iter().skip(2).product();
            IntData::from_i32(
                out.elem,
                (0..x.len())
                    .map(|i| t.lookup((i / plane) % channels, x.get(i), x_min))
                    .collect(),
            )
        }
        IntOp::Mul(m) => {
            let (a, b) = (inputs[0], inputs[1]);
            if a.len() != out.num_elements() || b.is_empty() || a.len() % b.len() != 0 {
                return Err(invalid(
                    node,
                    "b must broadcast over a's trailing dimensions",
                ));
            }
            let inner = a.len() / b.len();
            IntData::from_i32(
                out.elem,
                (0..a.len())
                    .map(|i| {
                        let p = a.get(i) as i64 * b.get(i / inner) as i64;
                        clamp(rounding.rshift(p, m.shift), m.lo, m.hi)
                    })
                    .collect(),
            )
        }
        IntOp::Softmax(sm) => {
            let x = inputs[0];
            let shape = in_shape(0);
            if sm.axis >= shape.len() || x.len() != out.num_elements() || sm.exp_table.len() != 256
            {
                return Err(invalid(node, "softmax axis or table does not fit"));
            }
            let n = shape[sm.axis];
            let inner: usize = shape[sm.axis + 1..].iter().product();
            let outer = x.len() / (n * inner).max(1);
            let mut values = vec![0i32; x.len()];
            for o in 0..outer {
                for j in 0..inner {
                    let at = |k: usize| (o * n + k) * inner + j;
                    let row: Vec<i32> = (0..n).map(|k| x.get(at(k))).collect();
                    for (k, v) in sm.row(&row).into_iter().enumerate() {
                        values[at(k)] = v;
                    }
                }
            }
            IntData::from_i32(out.elem, values)
        }
        IntOp::Transpose { perm } => {
            let x = inputs[0];
            let Some(shape) = lutq_ir::int::transposed_shape(in_shape(0), perm) else {
                return Err(invalid(
                    node,
                    "perm is not a permutation of the input's axes",
                ));
            };
            if shape != out.shape || x.len() != out.num_elements() {
                return Err(invalid(node, "output shape does not match the permutation"));
            }
            let src = lutq_ir::int::transpose_sources(in_shape(0), perm);
            IntData::from_i32(out.elem, src.iter().map(|&i| x.get(i)).collect())
        }
        IntOp::Slice { axis, start, step } => {
            let x = inputs[0];
            let s = in_shape(0);
            let fits = *axis < s.len()
                && out.shape.len() == s.len()
                && out.shape[*axis] >= 1
                && start + (out.shape[*axis] - 1) * step < s[*axis];
            if !fits {
                return Err(invalid(node, "slice does not fit its input"));
            }
            let inner: usize = s[axis + 1..].iter().product();
            let (n_in, n_out) = (s[*axis], out.shape[*axis]);
            let outer: usize = s[..*axis].iter().product();
            let mut values = Vec::with_capacity(out.num_elements());
            for o in 0..outer {
                for k in 0..n_out {
                    let row = (o * n_in + start + k * step) * inner;
                    values.extend((row..row + inner).map(|i| x.get(i)));
                }
            }
            IntData::from_i32(out.elem, values)
        }
        IntOp::Resize(r) => {
            let x = inputs[0];
            let s = in_shape(0);
            let fits = s.len() == 4
                && out.shape.len() == 4
                && r.rows.len() == out.shape[2]
                && r.cols.len() == out.shape[3]
                && r.frac <= lutq_ir::int::QResize::MAX_FRAC
                && r.rows.iter().all(|t| t.lo.max(t.hi) < s[2] as u32)
                && r.cols.iter().all(|t| t.lo.max(t.hi) < s[3] as u32);
            if !fits || x.len() != s.iter().product::<usize>() {
                return Err(invalid(node, "resize taps do not fit the input"));
            }
            let (h, w) = (s[2], s[3]);
            let planes = s[0] * s[1];
            let mut values = Vec::with_capacity(out.num_elements());
            for p in 0..planes {
                let plane: Vec<i32> = (p * h * w..(p + 1) * h * w).map(|i| x.get(i)).collect();
                for oy in 0..r.rows.len() {
                    values.extend((0..r.cols.len()).map(|ox| r.blend(&plane, w, oy, ox, rounding)));
                }
            }
            IntData::from_i32(out.elem, values)
        }
        IntOp::Extremum { kind, shifts } => {
            let n = out.num_elements();
            if shifts.len() != inputs.len() || inputs.iter().any(|x| x.len() != n) {
                return Err(invalid(
                    node,
                    "needs one shift per input, all of the output's shape",
                ));
            }
            let aligned = |k: usize, i: usize| {
                clamp(
                    rounding.rshift(inputs[k].get(i) as i64, shifts[k]),
                    t_lo,
                    t_hi,
                )
            };
            let pick = |a: i32, b: i32| match kind {
                Extremum::Max => a.max(b),
                Extremum::Min => a.min(b),
            };
            IntData::from_i32(
                out.elem,
                (0..n)
                    .map(|i| (1..inputs.len()).fold(aligned(0, i), |m, k| pick(m, aligned(k, i))))
                    .collect(),
            )
        }
    };
    debug_assert_eq!(result.len(), out.num_elements());
    debug_assert_eq!(result.elem(), out.elem);
    Ok(result)
}

fn add(a: &QAdd, x: &IntData, y: &IntData, elem: IntElem, rounding: Rounding) -> IntData {
    let f = |i: usize| {
        let s = ((x.get(i) as i64) << a.align_a) + ((y.get(i) as i64) << a.align_b);
        clamp(rounding.rshift(s, a.shift), a.lo, a.hi)
    };
    IntData::from_i32(elem, (0..x.len()).map(f).collect())
}

fn concat(
    graph: &IntGraph,
    node: &IntNode,
    inputs: &[&IntData],
    axis: usize,
    shifts: &[i32],
) -> Result<IntData, InterpError> {
    let out = &node.ty;
    if inputs.is_empty() || shifts.len() != inputs.len() || axis >= out.shape.len() {
        return Err(invalid(
            node,
            "needs one shift per input and an axis inside the shape",
        ));
    }
    let shapes: Vec<&[usize]> = node
        .inputs
        .iter()
        .map(|&v| &graph.ty(v).shape[..])
        .collect();
    let mut expected = shapes[0].to_vec();
    if expected.len() != out.shape.len() {
        return Err(invalid(node, "inputs and output must have one rank"));
    }
    expected[axis] = shapes
        .iter()
        .map(|s| s.get(axis).copied().unwrap_or(0))
        .sum();
    let agree = shapes.iter().all(|s| {
        s.len() == out.shape.len()
            && s.iter()
                .zip(&out.shape)
                .enumerate()
                .all(|(d, (a, b))| d == axis || a == b)
    });
    if !agree || expected != out.shape {
        return Err(invalid(
            node,
            format!("output shape should be {expected:?}"),
        ));
    }
    let (lo, hi) = out.elem.range();
    let outer: usize = out.shape[..axis].iter().product();
    let inner: usize = out.shape[axis + 1..].iter().product();
    let mut values = Vec::with_capacity(out.num_elements());
    for o in 0..outer {
        for ((x, s), &shift) in inputs.iter().zip(&shapes).zip(shifts) {
            let chunk = s[axis] * inner;
            values.extend(
                (o * chunk..(o + 1) * chunk)
                    .map(|i| clamp(graph.rounding.rshift(x.get(i) as i64, shift), lo, hi)),
            );
        }
    }
    Ok(IntData::from_i32(out.elem, values))
}

fn check_linear_shapes(
    node: &IntNode,
    layer: &lutq_ir::int::QLinear,
    x: &[usize],
    x_elem: IntElem,
) -> Result<(), InterpError> {
    let [o_n, i_g, kh, kw] = layer.weights.shape();
    if layer.bias.len() != o_n || layer.rescale.len() != o_n {
        return Err(invalid(
            node,
            format!("bias and rescale need {o_n} entries"),
        ));
    }
    let stored = match &layer.weights {
        QWeights::Lut { luts, codes, .. } => {
            (luts.len() == 1 || luts.len() == o_n)
                && codes.len() == o_n * layer.weights.row_len().div_ceil(2)
        }
        QWeights::Int8 { values, .. } => values.len() == o_n * layer.weights.row_len(),
    };
    if !stored {
        return Err(invalid(node, "the stored weights do not fit their shape"));
    }
    if x_elem == IntElem::I32 {
        return Err(invalid(node, "the input of a linear layer must be 8-bit"));
    }
    let expected = match &layer.conv {
        None => {
            if x.len() != 2 || x[1] != i_g || kh != 1 || kw != 1 {
                return Err(invalid(
                    node,
                    format!("dense input {x:?} does not fit weights"),
                ));
            }
            Some(vec![x[0], o_n])
        }
        Some(g) => {
            if x.len() != 4 || g.group == 0 || x[1] != i_g * g.group || o_n % g.group != 0 {
                return Err(invalid(
                    node,
                    format!("conv input {x:?} does not fit weights"),
                ));
            }
            let conv = lutq_ir::Conv {
                strides: g.strides,
                pads: g.pads,
                dilations: g.dilations,
                group: g.group,
                activation: None,
            };
            infer(
                &Op::Conv(conv),
                &[
                    &TensorType::f32(x.to_vec()),
                    &TensorType::f32(vec![o_n, i_g, kh, kw]),
                ],
            )
            .ok()
            .map(|t| t.shape)
        }
    };
    if expected.as_ref() != Some(&node.ty.shape) {
        return Err(invalid(
            node,
            format!(
                "output shape {:?} does not match the layer ({expected:?})",
                node.ty.shape
            ),
        ));
    }
    Ok(())
}

fn check_pool_shape(node: &IntNode, op: Op, x: &[usize]) -> Result<(), InterpError> {
    match infer(&op, &[&TensorType::f32(x.to_vec())]) {
        Ok(t) if t.shape == node.ty.shape => Ok(()),
        Ok(t) => Err(invalid(
            node,
            format!("output shape should be {:?}", t.shape),
        )),
        Err(e) => Err(invalid(node, e.to_string())),
    }
}

/// Per output index along one axis, the input positions of its window's taps that lie
/// inside the input: `o·stride − pad_begin + k·dilation ∈ [0, len)`.
fn axis_taps(
    out: usize,
    len: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
) -> Vec<Vec<usize>> {
    (0..out)
        .map(|o| {
            (0..kernel)
                .filter_map(|k| {
                    (o * stride + k * dilation)
                        .checked_sub(pad)
                        .filter(|&p| p < len)
                })
                .collect()
        })
        .collect()
}

/// Calls `f(plane, out_index, rows, cols)` for every output position of a pooling window.
fn for_each_window(
    p: &Pool,
    x: &[usize],
    out: &[usize],
    mut f: impl FnMut(usize, usize, &[usize], &[usize]),
) {
    let rows = axis_taps(
        out[2],
        x[2],
        p.kernel[0],
        p.strides[0],
        p.dilations[0],
        p.pads[0],
    );
    let cols = axis_taps(
        out[3],
        x[3],
        p.kernel[1],
        p.strides[1],
        p.dilations[1],
        p.pads[1],
    );
    let planes = x[0] * x[1];
    let mut o = 0;
    for plane in 0..planes {
        for r in &rows {
            for c in &cols {
                f(plane, o, r, c);
                o += 1;
            }
        }
    }
}

/// Max over each window's taps inside the input (padding never wins); a window with no
/// tap inside the input (possible only with dilations) yields the type's minimum, which
/// is what padding "counts as".
fn max_pool(p: &Pool, x: &IntData, x_shape: &[usize], out_shape: &[usize]) -> IntData {
    let (h, w) = (x_shape[2], x_shape[3]);
    let (type_min, _) = x.elem().range();
    let mut values = vec![0i32; out_shape.iter().product()];
    let xs = x.to_i32();
    for_each_window(p, x_shape, out_shape, |plane, o, rows, cols| {
        let xp = &xs[plane * h * w..][..h * w];
        let mut m = type_min;
        for &iy in rows {
            for &ix in cols {
                m = m.max(xp[iy * w + ix]);
            }
        }
        values[o] = m;
    });
    IntData::from_i32(x.elem(), values)
}

/// Sum over each window's taps inside the input (taps in the padding count 0), in i64.
fn sum_pool(p: &Pool, x: &IntData, x_shape: &[usize], out_shape: &[usize]) -> Vec<i64> {
    let (h, w) = (x_shape[2], x_shape[3]);
    let mut sums = vec![0i64; out_shape.iter().product()];
    let xs = x.to_i32();
    for_each_window(p, x_shape, out_shape, |plane, o, rows, cols| {
        let xp = &xs[plane * h * w..][..h * w];
        let mut s = 0i64;
        for &iy in rows {
            for &ix in cols {
                s += xp[iy * w + ix] as i64;
            }
        }
        sums[o] = s;
    });
    sums
}
