//! Validation of integer graphs, including the proof that no accumulator overflows.

use super::{
    IntElem, IntGraph, IntNode, IntOp, QLinear, QResize, QSoftmax, QTable, QWeights, Rescale,
    ResizeTap,
};
use crate::infer::infer;
use crate::op::Op;
use crate::tensor::TensorType;

/// Why an integer graph is not well formed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IntCheckError {
    #[error("node '{node}' ({op}): {message}")]
    Invalid {
        node: String,
        op: &'static str,
        message: String,
    },
    /// The worst case of a layer's i32 arithmetic does not fit 32 bits.
    #[error(
        "node '{node}': output channel {channel} can reach |{bound}| in its i32 arithmetic \
         (limit 2^31 - 1): {detail}. Fix: give the layer fewer weight bits of headroom \
         (a smaller weight exponent), or split it"
    )]
    Overflow {
        node: String,
        channel: usize,
        bound: i64,
        detail: String,
    },
}

/// The worst-case magnitude of a linear layer's i32 values, for its worst output channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccumulatorBound {
    pub channel: usize,
    /// `|bias| + Σ |w| · max|x|` for that channel.
    pub accumulator: i64,
    /// The largest intermediate of the rescale in i32 code: the accumulator plus the
    /// rounding term, or shifted left for a negative shift.
    pub rescaled: i64,
}

/// The largest `|x|` of an input element type (`i8`: 128, `u8`: 255).
pub fn input_magnitude(input: IntElem) -> i64 {
    match input {
        IntElem::I8 => 128,
        IntElem::U8 => 255,
        IntElem::I32 => i32::MAX as i64 + 1,
    }
}

/// One output channel's worst case: `(accumulator, rescaled)` with accumulator
/// `|bias| + Σ|w| · max|x|` (`sum_abs_w` = `Σ|w|` of the decoded weights) and rescaled its
/// largest intermediate in the rescale (the accumulator plus the rounding term, or shifted
/// left for a negative shift; a multiplier's product is i64 by contract). Both must fit
/// i32. [`accumulator_bound`] applies it to every channel; the quantizer uses it to choose
/// exponents that pass.
pub fn channel_bound(sum_abs_w: i64, bias: i32, rescale: Rescale, input: IntElem) -> (i64, i64) {
    let acc = sum_abs_w * input_magnitude(input) + (bias as i64).abs();
    let rescaled = match rescale {
        Rescale::Shift(s) if s > 0 => acc + (1i64 << (s - 1).min(40)),
        Rescale::Shift(s) => acc << (-s).min(31),
        // Computed in i64 by contract; only the accumulator must fit.
        Rescale::Multiplier { .. } => acc,
    };
    (acc, rescaled)
}

/// Worst case over all inputs of the given element type: every product at its largest
/// magnitude with the same sign (exact per channel: the sum of |decoded weight|, which is
/// at most the LUT's extreme times the fan-in).
pub fn accumulator_bound(layer: &QLinear, input: IntElem) -> AccumulatorBound {
    let [o_n, ..] = layer.weights.shape();
    let k_n = layer.weights.row_len();
    let w = layer.weights.decode();
    let mut worst = AccumulatorBound {
        channel: 0,
        accumulator: 0,
        rescaled: 0,
    };
    for o in 0..o_n {
        let sum: i64 = w[o * k_n..(o + 1) * k_n]
            .iter()
            .map(|&v| (v as i64).abs())
            .sum();
        let (acc, rescaled) = channel_bound(sum, layer.bias[o], layer.rescale[o], input);
        if rescaled > worst.rescaled {
            worst = AccumulatorBound {
                channel: o,
                accumulator: acc,
                rescaled,
            };
        }
    }
    worst
}

impl IntGraph {
    /// Checks that every node's inputs come before it, that stored types are consistent
    /// with the op and its inputs, and that no linear layer's i32 arithmetic can
    /// overflow ([`accumulator_bound`]).
    pub fn validate(&self) -> Result<(), IntCheckError> {
        for (i, node) in self.nodes.iter().enumerate() {
            self.validate_node(i, node)?;
        }
        for o in &self.outputs {
            if o.value.index() >= self.nodes.len() {
                return Err(IntCheckError::Invalid {
                    node: o.name.clone(),
                    op: "output",
                    message: format!("refers to %{}, which does not exist", o.value.0),
                });
            }
        }
        Ok(())
    }

    /// Checks `node` as node `i` of this graph (its inputs must be nodes before `i`): the
    /// per-node part of [`IntGraph::validate`]. The quantizer checks each node this way
    /// before it runs it on the calibration data (`i` = the nodes so far), so that a node
    /// the backends would refuse (an alignment shift beyond 16, a clamp outside its type)
    /// is an error that names it instead of arithmetic that overflows.
    pub fn validate_node(&self, i: usize, node: &IntNode) -> Result<(), IntCheckError> {
        let fail = |message: String| IntCheckError::Invalid {
            node: node.name.clone(),
            op: node.op.name(),
            message,
        };
        if let Some(v) = node.inputs.iter().find(|v| v.index() >= i) {
            return Err(fail(format!(
                "reads %{}, which is not computed before it",
                v.0
            )));
        }
        let (lo_t, hi_t) = node.ty.elem.range();
        let check_clamp = |lo: i32, hi: i32| {
            if lo > hi || lo < lo_t || hi > hi_t {
                Err(fail(format!(
                    "clamp [{lo}, {hi}] is not within {}'s range",
                    node.ty.elem.name()
                )))
            } else {
                Ok(())
            }
        };
        let inputs: Vec<_> = node.inputs.iter().map(|&v| self.ty(v)).collect();
        // Operands of ops that shift or sum in i32 are 8-bit: the bounds below (and
        // the contract's "add in i32") rely on it.
        let eight_bit_operands = !matches!(
            node.op,
            IntOp::Add(_)
                | IntOp::Concat { .. }
                | IntOp::MaxPool(_)
                | IntOp::SumPool { .. }
                | IntOp::Table(_)
                | IntOp::Mul(_)
                | IntOp::Softmax(_)
                | IntOp::Resize(_)
                | IntOp::Extremum { .. }
        ) || inputs.iter().all(|t| t.elem != IntElem::I32);
        if !eight_bit_operands {
            return Err(fail("operands must be 8-bit".into()));
        }
        let pool_ok = |p: &crate::op::Pool| {
            if p.kernel.contains(&0) || p.strides.contains(&0) || p.dilations.contains(&0) {
                Err(fail(
                    "kernel, strides and dilations must be positive".into(),
                ))
            } else {
                Ok(())
            }
        };
        let arity = |n: usize| {
            if inputs.len() == n {
                Ok(())
            } else {
                Err(fail(format!("has {} inputs, expected {n}", inputs.len())))
            }
        };
        match &node.op {
            IntOp::QuantizeInput { input } => {
                arity(0)?;
                let Some(inp) = self.inputs.get(*input) else {
                    return Err(fail(format!("graph input {input} does not exist")));
                };
                if inp.shape != node.ty.shape || node.ty.elem == IntElem::I32 {
                    return Err(fail("type does not match the graph input".into()));
                }
            }
            IntOp::Linear(l) => {
                arity(1)?;
                check_clamp(l.lo, l.hi)?;
                check_linear(node, l, &inputs[0].shape, inputs[0].elem).map_err(fail)?;
                let bound = accumulator_bound(l, inputs[0].elem);
                if bound.rescaled > i32::MAX as i64 {
                    return Err(IntCheckError::Overflow {
                        node: node.name.clone(),
                        channel: bound.channel,
                        bound: bound.rescaled,
                        detail: format!(
                            "accumulator bound {} (Σ|w| · max|x| + |bias|), rescale {:?}",
                            bound.accumulator, l.rescale[bound.channel]
                        ),
                    });
                }
            }
            IntOp::Add(a) => {
                arity(2)?;
                check_clamp(a.lo, a.hi)?;
                if inputs[0].shape != node.ty.shape || inputs[1].shape != node.ty.shape {
                    return Err(fail("operands and output must have one shape".into()));
                }
                if a.align_a < 0 || a.align_b < 0 || a.align_a > 16 || a.align_b > 16 {
                    return Err(fail("alignment shifts must be in 0..=16".into()));
                }
            }
            IntOp::Concat { axis, shifts } => {
                if inputs.is_empty() || shifts.len() != inputs.len() {
                    return Err(fail("needs one shift per input".into()));
                }
                let mut shape = inputs[0].shape.clone();
                if *axis >= shape.len() {
                    return Err(fail(format!("axis {axis} out of range")));
                }
                for t in &inputs {
                    let same_rank = t.shape.len() == shape.len();
                    if !same_rank || (0..shape.len()).any(|d| d != *axis && t.shape[d] != shape[d])
                    {
                        return Err(fail("inputs differ outside the concat axis".into()));
                    }
                }
                shape[*axis] = inputs.iter().map(|t| t.shape[*axis]).sum();
                if shape != node.ty.shape {
                    return Err(fail(format!("output shape should be {shape:?}")));
                }
            }
            IntOp::MaxPool(p) => {
                arity(1)?;
                pool_ok(p)?;
                let shape = pool_shape(Op::MaxPool(p.clone()), &inputs[0].shape).map_err(&fail)?;
                if shape != node.ty.shape
                    || inputs[0].elem != node.ty.elem
                    || inputs[0].exp != node.ty.exp
                {
                    return Err(fail("max-pool keeps element type and exponent".into()));
                }
            }
            IntOp::SumPool { pool, lo, hi, .. } => {
                arity(1)?;
                pool_ok(pool)?;
                check_clamp(*lo, *hi)?;
                let shape =
                    pool_shape(Op::SumPool(pool.clone()), &inputs[0].shape).map_err(&fail)?;
                if shape != node.ty.shape {
                    return Err(fail(format!("output shape should be {shape:?}")));
                }
            }
            IntOp::Requant { lo, hi, .. } => {
                arity(1)?;
                check_clamp(*lo, *hi)?;
                if inputs[0].shape != node.ty.shape {
                    return Err(fail("requant keeps the shape".into()));
                }
            }
            IntOp::Table(t) => {
                arity(1)?;
                if inputs[0].shape != node.ty.shape || node.ty.elem == IntElem::I32 {
                    return Err(fail(
                        "a table keeps the shape and has an 8-bit output".into(),
                    ));
                }
                let channels = node.ty.shape.get(1).copied().unwrap_or(1);
                let n = t.tables();
                if t.entries.len() != n * QTable::LEN || !(n == 1 || n == channels) {
                    return Err(fail(format!(
                        "needs 256 entries, or 256 per channel ({channels}), has {}",
                        t.entries.len()
                    )));
                }
                if t.entries.iter().any(|&v| v < lo_t || v > hi_t) {
                    return Err(fail(format!(
                        "table entries must lie in {}'s range",
                        node.ty.elem.name()
                    )));
                }
            }
            IntOp::Mul(m) => {
                arity(2)?;
                check_clamp(m.lo, m.hi)?;
                let (a, b) = (&inputs[0].shape, &inputs[1].shape);
                let prefix = (0..=a.len()).any(|k| {
                    b.len() == a.len() && b[..k] == a[..k] && b[k..].iter().all(|&d| d == 1)
                });
                if *a != node.ty.shape || !prefix {
                    return Err(fail(format!(
                        "operand b {b:?} must be a prefix of a {a:?} followed by ones, and a the output's shape"
                    )));
                }
                if !(0..=30).contains(&m.shift) {
                    return Err(fail("the product's shift must be in 0..=30".into()));
                }
            }
            IntOp::Softmax(sm) => {
                arity(1)?;
                let shape = &inputs[0].shape;
                if *shape != node.ty.shape
                    || node.ty.elem != IntElem::U8
                    || node.ty.exp != QSoftmax::OUT_EXP
                {
                    return Err(fail(
                        "output must be u8 with exponent 8, of the input's shape".into(),
                    ));
                }
                if sm.axis >= shape.len() || shape[sm.axis] > QSoftmax::MAX_ROW {
                    return Err(fail(format!(
                        "axis {} must exist and hold at most {} elements",
                        sm.axis,
                        QSoftmax::MAX_ROW
                    )));
                }
                if sm.exp_table.len() != 256
                    || sm.exp_table[0] < 1
                    || sm
                        .exp_table
                        .iter()
                        .any(|&e| !(0..=QSoftmax::ONE).contains(&e))
                {
                    return Err(fail(
                        "the exp table needs 256 entries in 0..=65536, the first ≥ 1".into(),
                    ));
                }
            }
            IntOp::Transpose { perm } => {
                arity(1)?;
                let t = inputs[0];
                match transposed_shape(&t.shape, perm) {
                    Some(s)
                        if s == node.ty.shape && t.elem == node.ty.elem && t.exp == node.ty.exp => {
                    }
                    _ => {
                        return Err(fail(format!(
                            "perm {perm:?} is not a permutation of {:?}'s axes giving the output",
                            t.shape
                        )));
                    }
                }
            }
            IntOp::Slice { axis, start, step } => {
                arity(1)?;
                let t = inputs[0];
                let (s, o) = (&t.shape, &node.ty.shape);
                let fits = *axis < s.len()
                    && o.len() == s.len()
                    && *step >= 1
                    && (0..s.len()).all(|d| d == *axis || s[d] == o[d])
                    && o[*axis] >= 1
                    && start + (o[*axis] - 1) * step < s[*axis];
                if !fits || t.elem != node.ty.elem || t.exp != node.ty.exp {
                    return Err(fail(format!(
                        "slice axis {axis} from {start} by {step} does not fit {s:?} -> {o:?}"
                    )));
                }
            }
            IntOp::Resize(r) => {
                arity(1)?;
                let t = inputs[0];
                let (s, o) = (&t.shape, &node.ty.shape);
                let shaped = s.len() == 4
                    && o.len() == 4
                    && s[..2] == o[..2]
                    && r.rows.len() == o[2]
                    && r.cols.len() == o[3];
                if !shaped || t.elem != node.ty.elem || t.exp != node.ty.exp {
                    return Err(fail(format!(
                        "resize of {s:?} to {o:?} needs one tap per output row and column and keeps type and exponent"
                    )));
                }
                if r.frac > QResize::MAX_FRAC {
                    return Err(fail(format!(
                        "weights have at most {} fraction bits",
                        QResize::MAX_FRAC
                    )));
                }
                let one = 1i32 << r.frac;
                let bad = |taps: &[ResizeTap], n: usize| {
                    taps.iter().any(|t| {
                        t.lo as usize >= n || t.hi as usize >= n || !(0..=one).contains(&t.w_hi)
                    })
                };
                if bad(&r.rows, s[2]) || bad(&r.cols, s[3]) {
                    return Err(fail(format!(
                        "taps must index the input ({}×{}) with weights in 0..={one}",
                        s[2], s[3]
                    )));
                }
            }
            IntOp::Extremum { shifts, .. } => {
                if inputs.is_empty() || shifts.len() != inputs.len() {
                    return Err(fail("needs one shift per input".into()));
                }
                if inputs.iter().any(|t| t.shape != node.ty.shape) {
                    return Err(fail("operands and output must have one shape".into()));
                }
                if shifts.iter().any(|s| !(-16..=16).contains(s)) {
                    return Err(fail("alignment shifts must be in -16..=16".into()));
                }
            }
            IntOp::Reshape => {
                arity(1)?;
                let t = inputs[0];
                if t.num_elements() != node.ty.num_elements()
                    || t.elem != node.ty.elem
                    || t.exp != node.ty.exp
                {
                    return Err(fail(
                        "reshape keeps element count, type and exponent".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The shape of a tensor of `shape` with its axes permuted by `perm` (output axis `d` is
/// input axis `perm[d]`), or `None` if `perm` is not a permutation of its axes.
pub fn transposed_shape(shape: &[usize], perm: &[usize]) -> Option<Vec<usize>> {
    let mut seen = vec![false; shape.len()];
    if perm.len() != shape.len() {
        return None;
    }
    for &p in perm {
        if p >= shape.len() || std::mem::replace(&mut seen[p], true) {
            return None;
        }
    }
    Some(perm.iter().map(|&p| shape[p]).collect())
}

/// For every element of the transposed tensor (row-major), the index of its source
/// element in the input of `shape` (`perm` must be a permutation of its axes).
pub fn transpose_sources(shape: &[usize], perm: &[usize]) -> Vec<usize> {
    let rank = shape.len();
    let mut in_strides = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        in_strides[d] = in_strides[d + 1] * shape[d + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let total: usize = shape.iter().product();
    let mut idx = vec![0usize; rank];
    let mut out = Vec::with_capacity(total);
    for _ in 0..total {
        out.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

fn pool_shape(op: Op, input: &[usize]) -> Result<Vec<usize>, String> {
    infer(&op, &[&TensorType::f32(input.to_vec())])
        .map(|t| t.shape)
        .map_err(|e| e.to_string())
}

fn check_linear(node: &IntNode, l: &QLinear, input: &[usize], elem: IntElem) -> Result<(), String> {
    if elem == IntElem::I32 {
        return Err("input must be 8-bit".into());
    }
    let [o_n, i_g, kh, kw] = l.weights.shape();
    if l.bias.len() != o_n || l.rescale.len() != o_n || l.weight_exps.len() != o_n {
        return Err(format!(
            "bias, rescale and weight exponents need {o_n} entries"
        ));
    }
    match &l.weights {
        QWeights::Lut { luts, codes, .. } => {
            if luts.len() != 1 && luts.len() != o_n {
                return Err(format!("needs 1 or {o_n} tables, has {}", luts.len()));
            }
            if codes.len() != o_n * l.weights.row_len().div_ceil(2) {
                return Err("packed codes have the wrong length".into());
            }
        }
        QWeights::Int8 { values, .. } => {
            if values.len() != o_n * l.weights.row_len() {
                return Err("int8 weights have the wrong length".into());
            }
        }
    }
    let expected = match &l.conv {
        None => {
            if input.len() != 2 || input[1] != i_g || kh != 1 || kw != 1 {
                return Err(format!(
                    "dense input {input:?} does not fit weights {:?}",
                    l.weights.shape()
                ));
            }
            vec![input[0], o_n]
        }
        Some(g) => {
            if kh == 0 || kw == 0 || g.strides.contains(&0) || g.dilations.contains(&0) {
                return Err("kernel, strides and dilations must be positive".into());
            }
            if input.len() != 4 || g.group == 0 || input[1] != i_g * g.group || o_n % g.group != 0 {
                return Err(format!(
                    "conv input {input:?} does not fit weights {:?} group {}",
                    l.weights.shape(),
                    g.group
                ));
            }
            let out = |size: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize| {
                let span = d * (k - 1) + 1;
                (size + p0 + p1).checked_sub(span).map(|v| v / s + 1)
            };
            let (Some(oh), Some(ow)) = (
                out(
                    input[2],
                    kh,
                    g.strides[0],
                    g.dilations[0],
                    g.pads[0],
                    g.pads[2],
                ),
                out(
                    input[3],
                    kw,
                    g.strides[1],
                    g.dilations[1],
                    g.pads[1],
                    g.pads[3],
                ),
            ) else {
                return Err("kernel larger than the padded input".into());
            };
            vec![input[0], o_n, oh, ow]
        }
    };
    if expected != node.ty.shape {
        return Err(format!("output shape should be {expected:?}"));
    }
    Ok(())
}
