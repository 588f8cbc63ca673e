//! Shape computations folded at import, as onnx-simplifier and tract's `prop_const` do.
//!
//! `Shape` (and `Size`) of any tensor with a static shape is an INT64 constant of the
//! import; every op of this file's table, and the ops of the other tables that have an
//! [`super::OpDef::eval_const`], are then evaluated when all their inputs are constants
//! (`import.rs` calls the evaluator instead of the handler). Ops whose results are only
//! read as constants (Reshape shapes, Pad pads, …) therefore never enter the IR.
//!
//! The ops of this table have no IR form: with an input that is not known at import they
//! are reported ([`DiagnosticKind::NonConstantInput`]), with a hint to fix the input
//! shapes (`--batch`, `--input-shape`). A folded constant may hold at most
//! [`MAX_FOLD_ELEMENTS`] elements; ops that only make constants (ConstantOfShape, Range,
//! Expand, …) report a larger result, ops with an IR form are converted as usual instead.
//!
//! Integer arithmetic wraps like two's complement i64 and divides truncating toward zero
//! (as onnxruntime's C++ does); a division by zero is an error of the model.

use std::rc::Rc;

use lutq_ir::{CoordMode, NearestMode, Op, Resize, ResizeMode};

use super::{EvalConst, OpDef, normalize_axis};
use crate::error::{DiagnosticKind, ImportError};
use crate::import::{NodeCx, Value};
use crate::proto::tensor_proto::DataType;
use crate::tensor::{ConstData, ConstValue, TensorIssue, tensor_value};

pub(crate) use crate::limits::MAX_FOLD_ELEMENTS;

pub(crate) type Inputs<'a> = &'a [Option<Rc<ConstValue>>];

const fn row(
    op_type: &'static str,
    eval: EvalConst,
    const_inputs: fn(i64) -> &'static [usize],
) -> OpDef {
    OpDef {
        op_type,
        convert: const_only,
        const_inputs,
        ignored_inputs: &[],
        eval_const: Some(eval),
    }
}

fn none(_: i64) -> &'static [usize] {
    &[]
}

pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "Shape",
        convert: shape,
        const_inputs: none,
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "Size",
        convert: size,
        const_inputs: none,
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "Cast",
        convert: cast,
        const_inputs: none,
        ignored_inputs: &[],
        eval_const: Some(eval_cast),
    },
    OpDef {
        op_type: "Expand",
        convert: expand,
        const_inputs: |_| &[1],
        ignored_inputs: &[],
        eval_const: Some(eval_expand),
    },
    row("Gather", eval_gather, none),
    row("ConstantOfShape", eval_constant_of_shape, |_| &[0]),
    row("Range", eval_range, |_| &[0, 1, 2]),
    row("Equal", |cx, ins| eval_binary(cx, ins, Bin::Equal), none),
    row(
        "Greater",
        |cx, ins| eval_binary(cx, ins, Bin::Greater),
        none,
    ),
    row("Less", |cx, ins| eval_binary(cx, ins, Bin::Less), none),
    row(
        "GreaterOrEqual",
        |cx, ins| eval_binary(cx, ins, Bin::GreaterEq),
        none,
    ),
    row(
        "LessOrEqual",
        |cx, ins| eval_binary(cx, ins, Bin::LessEq),
        none,
    ),
    row("And", |cx, ins| eval_binary(cx, ins, Bin::And), none),
    row("Or", |cx, ins| eval_binary(cx, ins, Bin::Or), none),
    row("Xor", |cx, ins| eval_binary(cx, ins, Bin::Xor), none),
    row("Mod", |cx, ins| eval_binary(cx, ins, Bin::Mod), none),
    row("Not", |cx, ins| eval_unary(cx, ins, Un::Not), none),
    row("Where", eval_where, none),
    row(
        "ReduceProd",
        |cx, ins| eval_reduce(cx, ins, Red::Prod),
        reduce_axes_18,
    ),
    row(
        "ReduceMin",
        |cx, ins| eval_reduce(cx, ins, Red::Min),
        reduce_axes_18,
    ),
];

/// The `axes` input slot of ReduceSum, an input from opset 13 on.
pub(crate) fn reduce_axes_13(opset: i64) -> &'static [usize] {
    if opset >= 13 { &[1] } else { &[] }
}

/// The `axes` input slot of the Reduce ops that took `axes` as an attribute before 18.
pub(crate) fn reduce_axes_18(opset: i64) -> &'static [usize] {
    if opset >= 18 { &[1] } else { &[] }
}

/// The handler of an op that exists only at import: reached when some input is not a
/// constant, which is reported.
fn const_only(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    report_non_constant(cx, 0..cx.input_count());
    Ok(())
}

/// Reports every input among `slots` that is not known at import.
pub(crate) fn report_non_constant(cx: &mut NodeCx<'_, '_>, slots: impl Iterator<Item = usize>) {
    let op = cx.op_type();
    for slot in slots {
        let Some(name) = cx.input_name(slot) else {
            continue;
        };
        match cx.input_value(slot) {
            Some(Value::Tensor(_) | Value::Unbound) => cx.unsupported(
                DiagnosticKind::NonConstantInput,
                format!(
                    "{op} is evaluated only at import, but input {slot} '{name}' is not known there (it depends on run-time data)"
                ),
                format!(
                    "if '{name}' is computed from an input's shape, make that shape static (--batch N, --input-shape NAME=D0,D1,…) so it folds; otherwise rewrite the model without {op} on run-time data"
                ),
            ),
            Some(Value::Unusable(_)) => {
                // Reported like any unusable operand.
                let _ = cx.opt_constant(slot, "input");
            }
            _ => {}
        }
    }
}

/// The constant in `slot`, required.
pub(crate) fn input<'a>(
    cx: &NodeCx<'_, '_>,
    ins: Inputs<'a>,
    slot: usize,
    role: &str,
) -> Result<&'a ConstValue, ImportError> {
    ins.get(slot)
        .and_then(|c| c.as_deref())
        .ok_or_else(|| cx.invalid(format!("required input {slot} ({role}) is missing")))
}

/// The element count of `shape` if a folded constant may have it; otherwise reports it
/// (when `report`) and returns `None`.
pub(crate) fn fold_size(cx: &mut NodeCx<'_, '_>, shape: &[usize], report: bool) -> Option<usize> {
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_FOLD_ELEMENTS);
    if n.is_none() && report {
        cx.unsupported(
            DiagnosticKind::TooLarge,
            format!(
                "the constant it makes has shape {shape:?}, more than the {MAX_FOLD_ELEMENTS} elements lutq folds at import (MAX_FOLD_ELEMENTS)"
            ),
            "check the shape computation feeding it; lutq folds only small constants",
        );
    }
    n
}

/// An integer list (rank 0 or 1).
pub(crate) fn ints<'c>(
    cx: &NodeCx<'_, '_>,
    c: &'c ConstValue,
    role: &str,
) -> Result<&'c [i64], ImportError> {
    match c.as_i64() {
        Some(v) if c.shape().len() <= 1 => Ok(v),
        _ => Err(cx.invalid(format!(
            "{role} must be a 1-D integer tensor, got {} of shape {:?}",
            c.data().type_name(),
            c.shape()
        ))),
    }
}

fn one(
    cx: &NodeCx<'_, '_>,
    v: Result<ConstValue, lutq_ir::IrError>,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    v.map(|v| Some(vec![v]))
        .map_err(|e| cx.invalid(e.to_string()))
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// For each element of `out` (row-major), the offset of the element of a tensor with the
/// given per-axis strides over `out`'s axes.
fn offsets(out: &[usize], strides: &[usize]) -> Vec<usize> {
    let n: usize = out.iter().product();
    let r = out.len();
    let mut res = Vec::with_capacity(n);
    let mut idx = vec![0usize; r];
    let mut off = 0usize;
    for _ in 0..n {
        res.push(off);
        for d in (0..r).rev() {
            idx[d] += 1;
            off += strides[d];
            if idx[d] < out[d] {
                break;
            }
            off -= strides[d] * out[d];
            idx[d] = 0;
        }
    }
    res
}

/// numpy broadcasting of two shapes.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let db = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// Offsets into a tensor of `shape` broadcast to `out`.
fn broadcast_offsets(out: &[usize], shape: &[usize]) -> Vec<usize> {
    let r = out.len();
    let own = contiguous_strides(shape);
    let mut strides = vec![0; r];
    for (i, (&d, &s)) in shape.iter().zip(&own).enumerate() {
        strides[r - shape.len() + i] = if d == 1 { 0 } else { s };
    }
    offsets(out, &strides)
}

/// Element-wise binary ops evaluated on constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
    Mod,
    Equal,
    Greater,
    Less,
    GreaterEq,
    LessEq,
    And,
    Or,
    Xor,
}

/// `a op b` with numpy broadcasting, or a message for a malformed operand pair.
pub(crate) fn binary(
    a: &ConstValue,
    b: &ConstValue,
    op: Bin,
    fmod: bool,
) -> Result<ConstValue, String> {
    let shape = broadcast_shape(a.shape(), b.shape()).ok_or_else(|| {
        format!(
            "operands of shapes {:?} and {:?} do not broadcast",
            a.shape(),
            b.shape()
        )
    })?;
    let (ia, ib) = (
        broadcast_offsets(&shape, a.shape()),
        broadcast_offsets(&shape, b.shape()),
    );
    fn zip<T: Copy, U: Copy, R>(
        x: &[T],
        ia: &[usize],
        y: &[U],
        ib: &[usize],
        f: impl Fn(T, U) -> R,
    ) -> Vec<R> {
        ia.iter().zip(ib).map(|(&i, &j)| f(x[i], y[j])).collect()
    }
    use ConstData::{Bool, F32, I64};
    let mismatch = || {
        format!(
            "{op:?} of {} and {} operands is not defined",
            a.data().type_name(),
            b.data().type_name()
        )
    };
    let data = match (a.data(), b.data()) {
        (F32(x), F32(y)) => match op {
            Bin::Add => F32(zip(x, &ia, y, &ib, |u, v| u + v)),
            Bin::Sub => F32(zip(x, &ia, y, &ib, |u, v| u - v)),
            Bin::Mul => F32(zip(x, &ia, y, &ib, |u, v| u * v)),
            Bin::Div => F32(zip(x, &ia, y, &ib, |u, v| u / v)),
            Bin::Max => F32(zip(x, &ia, y, &ib, f32::max)),
            Bin::Min => F32(zip(x, &ia, y, &ib, f32::min)),
            Bin::Pow => F32(zip(x, &ia, y, &ib, f32::powf)),
            Bin::Mod if fmod => F32(zip(x, &ia, y, &ib, |u, v| u % v)),
            Bin::Equal => Bool(zip(x, &ia, y, &ib, |u, v| u == v)),
            Bin::Greater => Bool(zip(x, &ia, y, &ib, |u, v| u > v)),
            Bin::Less => Bool(zip(x, &ia, y, &ib, |u, v| u < v)),
            Bin::GreaterEq => Bool(zip(x, &ia, y, &ib, |u, v| u >= v)),
            Bin::LessEq => Bool(zip(x, &ia, y, &ib, |u, v| u <= v)),
            _ => return Err(mismatch()),
        },
        (F32(x), I64(y)) if op == Bin::Pow => F32(zip(x, &ia, y, &ib, |u, v| u.powf(v as f32))),
        (I64(x), F32(y)) if op == Bin::Pow => {
            I64(zip(x, &ia, y, &ib, |u, v| (u as f64).powf(v as f64) as i64))
        }
        (I64(x), I64(y)) => {
            if matches!(op, Bin::Div | Bin::Mod) && ib.iter().any(|&j| y[j] == 0) {
                return Err("integer division by zero".into());
            }
            match op {
                Bin::Add => I64(zip(x, &ia, y, &ib, i64::wrapping_add)),
                Bin::Sub => I64(zip(x, &ia, y, &ib, i64::wrapping_sub)),
                Bin::Mul => I64(zip(x, &ia, y, &ib, i64::wrapping_mul)),
                Bin::Div => I64(zip(x, &ia, y, &ib, i64::wrapping_div)),
                Bin::Max => I64(zip(x, &ia, y, &ib, i64::max)),
                Bin::Min => I64(zip(x, &ia, y, &ib, i64::min)),
                Bin::Pow => I64(zip(x, &ia, y, &ib, |u, v| (u as f64).powf(v as f64) as i64)),
                // fmod=0: the result has the divisor's sign (Python %); fmod=1: C fmod.
                Bin::Mod if fmod => I64(zip(x, &ia, y, &ib, i64::wrapping_rem)),
                Bin::Mod => I64(zip(x, &ia, y, &ib, |u, v| {
                    let r = u.wrapping_rem(v);
                    if r != 0 && ((r < 0) != (v < 0)) {
                        r + v
                    } else {
                        r
                    }
                })),
                Bin::Equal => Bool(zip(x, &ia, y, &ib, |u, v| u == v)),
                Bin::Greater => Bool(zip(x, &ia, y, &ib, |u, v| u > v)),
                Bin::Less => Bool(zip(x, &ia, y, &ib, |u, v| u < v)),
                Bin::GreaterEq => Bool(zip(x, &ia, y, &ib, |u, v| u >= v)),
                Bin::LessEq => Bool(zip(x, &ia, y, &ib, |u, v| u <= v)),
                _ => return Err(mismatch()),
            }
        }
        (Bool(x), Bool(y)) => match op {
            Bin::And => Bool(zip(x, &ia, y, &ib, |u, v| u & v)),
            Bin::Or => Bool(zip(x, &ia, y, &ib, |u, v| u | v)),
            Bin::Xor | Bin::Equal => {
                let eq = op == Bin::Equal;
                Bool(zip(x, &ia, y, &ib, move |u, v| (u == v) == eq))
            }
            _ => return Err(mismatch()),
        },
        _ => return Err(mismatch()),
    };
    ConstValue::new(shape, data).map_err(|e| e.to_string())
}

/// Evaluates an element-wise binary op. For ops that have an IR form, a result too large
/// to fold declines (the node is converted as data).
pub(crate) fn eval_binary(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
    op: Bin,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let a = input(cx, ins, 0, "A")?;
    let b = input(cx, ins, 1, "B")?;
    if cx.opset() < 7
        && matches!(op, Bin::Add | Bin::Sub | Bin::Mul | Bin::Div)
        && cx.attrs().flag("broadcast", false)?
    {
        // Legacy broadcasting with an axis: converted as data.
        return Ok(None);
    }
    let has_ir_form = matches!(
        op,
        Bin::Add | Bin::Sub | Bin::Mul | Bin::Div | Bin::Max | Bin::Min | Bin::Pow
    );
    let Some(shape) = broadcast_shape(a.shape(), b.shape()) else {
        return Err(cx.invalid(format!(
            "operands of shapes {:?} and {:?} do not broadcast",
            a.shape(),
            b.shape()
        )));
    };
    if fold_size(cx, &shape, !has_ir_form).is_none() {
        return Ok(if has_ir_form { None } else { Some(vec![]) });
    }
    let fmod = op == Bin::Mod && cx.attrs().flag("fmod", false)?;
    if op == Bin::Mod && !fmod && a.as_f32().is_some() {
        return Err(cx.invalid("Mod of floats needs fmod=1"));
    }
    binary(a, b, op, fmod)
        .map(|v| Some(vec![v]))
        .map_err(|m| cx.invalid(m))
}

/// n-ary Max/Min/Sum/Mean folded pairwise (Mean divides the sum by the count).
pub(crate) fn eval_variadic(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
    op: Bin,
    mean: bool,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let vals: Vec<&ConstValue> = ins.iter().filter_map(|c| c.as_deref()).collect();
    let Some((&first, rest)) = vals.split_first() else {
        return Err(cx.invalid("needs at least one input"));
    };
    let mut shape = first.shape().to_vec();
    for v in rest {
        shape = broadcast_shape(&shape, v.shape()).ok_or_else(|| {
            cx.invalid(format!(
                "inputs of shapes {shape:?} and {:?} do not broadcast",
                v.shape()
            ))
        })?;
    }
    if fold_size(cx, &shape, false).is_none() {
        return Ok(None);
    }
    let mut acc = first.clone();
    for v in rest {
        acc = binary(&acc, v, op, false).map_err(|m| cx.invalid(m))?;
    }
    if mean {
        let n = match acc.data() {
            ConstData::F32(_) => ConstValue::f32([], vec![vals.len() as f32]),
            _ => return Err(cx.invalid("Mean of non-float inputs is not defined")),
        }
        .map_err(|e| cx.invalid(e.to_string()))?;
        acc = binary(&acc, &n, Bin::Div, false).map_err(|m| cx.invalid(m))?;
    }
    Ok(Some(vec![acc]))
}

/// Element-wise unary ops evaluated on integer or boolean constants (float constants go
/// through `lutq_ir::Activation::apply`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Un {
    Neg,
    Abs,
    Not,
}

pub(crate) fn eval_unary(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
    op: Un,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let x = input(cx, ins, 0, "X")?;
    let data = match (op, x.data()) {
        (Un::Neg, ConstData::I64(v)) => {
            ConstData::I64(v.iter().map(|a| a.wrapping_neg()).collect())
        }
        (Un::Abs, ConstData::I64(v)) => {
            ConstData::I64(v.iter().map(|a| a.wrapping_abs()).collect())
        }
        (Un::Neg, ConstData::F32(v)) => ConstData::F32(v.iter().map(|a| -a).collect()),
        (Un::Abs, ConstData::F32(v)) => ConstData::F32(v.iter().map(|a| a.abs()).collect()),
        (Un::Not, ConstData::Bool(v)) => ConstData::Bool(v.iter().map(|a| !a).collect()),
        (_, d) => {
            return Err(cx.invalid(format!("{op:?} of {} is not defined", d.type_name())));
        }
    };
    one(cx, ConstValue::new(x.shape().to_vec(), data))
}

/// A float activation applied to a float constant; integer Neg/Abs through [`eval_unary`].
pub(crate) fn eval_activation(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
    act: lutq_ir::Activation,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let x = input(cx, ins, 0, "X")?;
    match x.as_f32() {
        Some(v) => one(
            cx,
            ConstValue::f32(
                x.shape().to_vec(),
                v.iter().map(|&a| act.apply(a)).collect(),
            ),
        ),
        None => match act {
            lutq_ir::Activation::Neg => eval_unary(cx, ins, Un::Neg),
            lutq_ir::Activation::Abs => eval_unary(cx, ins, Un::Abs),
            _ => Err(cx.invalid(format!(
                "{} of {} data is not supported",
                cx.op_type(),
                x.data().type_name()
            ))),
        },
    }
}

/// Where(condition, X, Y) with three-way broadcasting.
fn eval_where(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let c = input(cx, ins, 0, "condition")?;
    let x = input(cx, ins, 1, "X")?;
    let y = input(cx, ins, 2, "Y")?;
    let Some(cond) = c.as_bool() else {
        return Err(cx.invalid(format!(
            "condition must be BOOL, got {}",
            c.data().type_name()
        )));
    };
    let shape = broadcast_shape(c.shape(), x.shape())
        .and_then(|s| broadcast_shape(&s, y.shape()))
        .ok_or_else(|| {
            cx.invalid(format!(
                "shapes {:?}, {:?} and {:?} do not broadcast",
                c.shape(),
                x.shape(),
                y.shape()
            ))
        })?;
    if fold_size(cx, &shape, true).is_none() {
        return Ok(Some(vec![]));
    }
    let (ic, ix, iy) = (
        broadcast_offsets(&shape, c.shape()),
        broadcast_offsets(&shape, x.shape()),
        broadcast_offsets(&shape, y.shape()),
    );
    fn pick<T: Copy>(
        cond: &[bool],
        ic: &[usize],
        x: &[T],
        ix: &[usize],
        y: &[T],
        iy: &[usize],
    ) -> Vec<T> {
        (0..ic.len())
            .map(|k| if cond[ic[k]] { x[ix[k]] } else { y[iy[k]] })
            .collect()
    }
    let data = match (x.data(), y.data()) {
        (ConstData::F32(a), ConstData::F32(b)) => ConstData::F32(pick(cond, &ic, a, &ix, b, &iy)),
        (ConstData::I64(a), ConstData::I64(b)) => ConstData::I64(pick(cond, &ic, a, &ix, b, &iy)),
        (ConstData::Bool(a), ConstData::Bool(b)) => {
            ConstData::Bool(pick(cond, &ic, a, &ix, b, &iy))
        }
        (a, b) => {
            return Err(cx.invalid(format!(
                "X and Y differ in type ({} and {})",
                a.type_name(),
                b.type_name()
            )));
        }
    };
    one(cx, ConstValue::new(shape, data))
}

/// Reductions evaluated on constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Red {
    Sum,
    Prod,
    Min,
    Max,
    Mean,
}

/// The axes a Reduce op reduces: attribute `axes` before `input_from`, input 1 from it;
/// `None` means all axes (or none, with `noop_with_empty_axes`), returned as the list.
pub(crate) fn reduce_axes(
    cx: &mut NodeCx<'_, '_>,
    rank: usize,
    input_from: i64,
) -> Result<Vec<usize>, ImportError> {
    let a = cx.attrs();
    let listed: Option<Vec<i64>> = if cx.opset() < input_from {
        a.ints("axes")?.map(<[i64]>::to_vec)
    } else {
        match cx.opt_constant(1, "axes") {
            Some(c) => Some(ints(cx, &c, "axes")?.to_vec()),
            None => None,
        }
    };
    let noop = a.flag("noop_with_empty_axes", false)?;
    match listed {
        Some(v) if !v.is_empty() => {
            let mut axes = Vec::with_capacity(v.len());
            for &x in &v {
                let d = normalize_axis(x, rank).ok_or_else(|| {
                    cx.invalid(format!("axis {x} is out of range for rank {rank}"))
                })?;
                if !axes.contains(&d) {
                    axes.push(d);
                }
            }
            axes.sort_unstable();
            Ok(axes)
        }
        _ if noop => Ok(Vec::new()),
        _ => Ok((0..rank).collect()),
    }
}

pub(crate) fn eval_reduce(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
    op: Red,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let x = input(cx, ins, 0, "data")?;
    let input_from = if cx.op_type() == "ReduceSum" { 13 } else { 18 };
    let axes = reduce_axes(cx, x.shape().len(), input_from)?;
    let keep = cx.attrs().flag("keepdims", true)?;
    Ok(Some(vec![reduce(cx, x, &axes, keep, op)?]))
}

/// Reduces `x` over `axes` (sorted, distinct).
pub(crate) fn reduce(
    cx: &NodeCx<'_, '_>,
    x: &ConstValue,
    axes: &[usize],
    keep: bool,
    op: Red,
) -> Result<ConstValue, ImportError> {
    let shape = x.shape();
    let kept: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(d, &n)| if axes.contains(&d) { 1 } else { n })
        .collect();
    // Offset of each input element in the kept-dims output.
    let own = contiguous_strides(&kept);
    let strides: Vec<usize> = (0..shape.len())
        .map(|d| if axes.contains(&d) { 0 } else { own[d] })
        .collect();
    let target = offsets(shape, &strides);
    let n_out: usize = kept.iter().product();
    let count = (x.len() / n_out.max(1)).max(1);
    let out_shape: Vec<usize> = if keep {
        kept.clone()
    } else {
        (0..shape.len())
            .filter(|d| !axes.contains(d))
            .map(|d| shape[d])
            .collect()
    };
    let data = match x.data() {
        ConstData::F32(v) => {
            let init = match op {
                Red::Sum | Red::Mean => 0.0,
                Red::Prod => 1.0,
                Red::Min => f32::INFINITY,
                Red::Max => f32::NEG_INFINITY,
            };
            let mut acc = vec![init; n_out];
            for (&t, &a) in target.iter().zip(v) {
                acc[t] = match op {
                    Red::Sum | Red::Mean => acc[t] + a,
                    Red::Prod => acc[t] * a,
                    Red::Min => acc[t].min(a),
                    Red::Max => acc[t].max(a),
                };
            }
            if op == Red::Mean {
                acc.iter_mut().for_each(|a| *a /= count as f32);
            }
            ConstData::F32(acc)
        }
        ConstData::I64(v) => {
            let init = match op {
                Red::Sum | Red::Mean => 0,
                Red::Prod => 1,
                Red::Min => i64::MAX,
                Red::Max => i64::MIN,
            };
            let mut acc = vec![init; n_out];
            for (&t, &a) in target.iter().zip(v) {
                acc[t] = match op {
                    Red::Sum | Red::Mean => acc[t].wrapping_add(a),
                    Red::Prod => acc[t].wrapping_mul(a),
                    Red::Min => acc[t].min(a),
                    Red::Max => acc[t].max(a),
                };
            }
            if op == Red::Mean {
                acc.iter_mut().for_each(|a| *a /= count as i64);
            }
            ConstData::I64(acc)
        }
        ConstData::Bool(_) => return Err(cx.invalid("reduction of BOOL data is not defined")),
    };
    ConstValue::new(out_shape, data).map_err(|e| cx.invalid(e.to_string()))
}

/// Shape-1/13/15/…: the input's static shape as INT64, `start`/`end` (opset 15) clamped.
fn shape(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let a = cx.attrs();
    let (start, end) = if cx.opset() >= 15 {
        (a.int_or("start", 0)?, a.int("end")?)
    } else {
        (0, None)
    };
    let Some(dims) = cx.peek_shape(0) else {
        // Unusable operands are reported there; poisoned ones already were.
        let _ = cx.tensor(0, "data")?;
        return Ok(());
    };
    let r = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v.saturating_add(r) } else { v }).clamp(0, r) as usize;
    let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
    let v: Vec<i64> = dims[s..e.max(s)].iter().map(|&d| d as i64).collect();
    let c = ConstValue::i64([v.len()], v).map_err(|e| cx.invalid(e.to_string()))?;
    cx.set_output(0, Value::Const(Rc::new(c)));
    Ok(())
}

/// Size-1/13: the element count as an INT64 scalar.
fn size(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let Some(dims) = cx.peek_shape(0) else {
        let _ = cx.tensor(0, "data")?;
        return Ok(());
    };
    let n: usize = dims.iter().product();
    let c = ConstValue::i64([], vec![n as i64]).map_err(|e| cx.invalid(e.to_string()))?;
    cx.set_output(0, Value::Const(Rc::new(c)));
    Ok(())
}

/// What Cast's `to` makes of a value.
enum CastTo {
    Float,
    /// Float types narrower than f32: only constants, rounded through f32.
    NarrowFloat,
    Int {
        bits: u32,
        signed: bool,
    },
    Bool,
}

fn cast_target(cx: &mut NodeCx<'_, '_>) -> Result<Option<CastTo>, ImportError> {
    let a = cx.attrs();
    let to = a.int("to")?.ok_or_else(|| a.error("to", "is required"))?;
    let code = i32::try_from(to).unwrap_or(-1);
    Ok(Some(match DataType::try_from(code) {
        Ok(DataType::Float | DataType::Double) => CastTo::Float,
        Ok(DataType::Float16 | DataType::Bfloat16) => CastTo::NarrowFloat,
        Ok(DataType::Int64) => CastTo::Int {
            bits: 64,
            signed: true,
        },
        Ok(DataType::Int32) => CastTo::Int {
            bits: 32,
            signed: true,
        },
        Ok(DataType::Int16) => CastTo::Int {
            bits: 16,
            signed: true,
        },
        Ok(DataType::Int8) => CastTo::Int {
            bits: 8,
            signed: true,
        },
        Ok(DataType::Uint8) => CastTo::Int {
            bits: 8,
            signed: false,
        },
        Ok(DataType::Uint16) => CastTo::Int {
            bits: 16,
            signed: false,
        },
        Ok(DataType::Uint32) => CastTo::Int {
            bits: 32,
            signed: false,
        },
        Ok(DataType::Bool) => CastTo::Bool,
        _ => {
            cx.unsupported_attr(
                "to",
                &format!(
                    "casting to {} is not supported",
                    crate::tensor::data_type_name(code)
                ),
                "cast to FLOAT, an integer type or BOOL",
            );
            return Ok(None);
        }
    }))
}

/// Cast-6/9/13/19/…: float data cast to a float type of at least f32's precision is the
/// same tensor (no IR node); every other cast only on constants.
fn cast(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let to = cast_target(cx)?;
    match cx.input_value(0) {
        Some(Value::Tensor(id)) => match to {
            Some(CastTo::Float) => cx.set_output(0, Value::Tensor(id)),
            Some(_) => cx.unsupported(
                DiagnosticKind::UnsupportedType,
                "casting run-time float data to a narrower or non-float type is not supported (lutq's float IR computes in f32)".into(),
                "remove the Cast, or fold it (it is folded when its input is known at import)",
            ),
            None => {}
        },
        _ => {
            let _ = cx.tensor(0, "input")?;
        }
    }
    Ok(())
}

fn eval_cast(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let x = input(cx, ins, 0, "input")?;
    let Some(to) = cast_target(cx)? else {
        return Ok(Some(vec![]));
    };
    let as_f64: Vec<f64> = match x.data() {
        ConstData::F32(v) => v.iter().map(|&a| a as f64).collect(),
        ConstData::I64(v) => v.iter().map(|&a| a as f64).collect(),
        ConstData::Bool(v) => v.iter().map(|&a| a as u8 as f64).collect(),
    };
    let data = match to {
        CastTo::Float | CastTo::NarrowFloat => match x.data() {
            ConstData::F32(v) => ConstData::F32(v.clone()),
            _ => ConstData::F32(as_f64.iter().map(|&a| a as f32).collect()),
        },
        CastTo::Bool => ConstData::Bool(as_f64.iter().map(|&a| a != 0.0).collect()),
        CastTo::Int { bits, signed } => {
            let wide: Vec<i64> = match x.data() {
                ConstData::I64(v) => v.clone(),
                // Truncation toward zero, as C++'s float-to-int conversion.
                _ => as_f64.iter().map(|&a| a.trunc() as i64).collect(),
            };
            let wrap = |v: i64| -> i64 {
                if bits == 64 {
                    return v;
                }
                let m = v & ((1i64 << bits) - 1);
                if signed && m >= 1i64 << (bits - 1) {
                    m - (1i64 << bits)
                } else {
                    m
                }
            };
            ConstData::I64(wide.into_iter().map(wrap).collect())
        }
    };
    one(cx, ConstValue::new(x.shape().to_vec(), data))
}

/// Gather-1/11/13 on constants: `data[..., indices, ...]` along `axis`.
fn eval_gather(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let data = input(cx, ins, 0, "data")?;
    let indices = input(cx, ins, 1, "indices")?;
    let a = cx.attrs();
    let axis = a.int_or("axis", 0)?;
    let shape = data.shape();
    let d = normalize_axis(axis, shape.len())
        .ok_or_else(|| a.error("axis", format!("{axis} is out of range for {shape:?}")))?;
    let Some(idx) = indices.as_i64() else {
        return Err(cx.invalid(format!(
            "indices must be integers, got {}",
            indices.data().type_name()
        )));
    };
    let n = shape[d];
    let idx: Vec<usize> = idx
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + n as i64 } else { i };
            usize::try_from(j).ok().filter(|&j| j < n).ok_or_else(|| {
                cx.invalid(format!(
                    "index {i} is out of range for axis {d} of {shape:?}"
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let mut out_shape = shape[..d].to_vec();
    out_shape.extend_from_slice(indices.shape());
    out_shape.extend_from_slice(&shape[d + 1..]);
    if fold_size(cx, &out_shape, true).is_none() {
        return Ok(Some(vec![]));
    }
    let outer: usize = shape[..d].iter().product();
    let inner: usize = shape[d + 1..].iter().product();
    let mut sel = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in &idx {
            let base = (o * n + i) * inner;
            sel.extend(base..base + inner);
        }
    }
    one(cx, ConstValue::new(out_shape, data.data().select(&sel)))
}

/// Expand-8/13 on constants: bidirectional broadcast to `shape`.
fn eval_expand(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let x = input(cx, ins, 0, "input")?;
    let s = input(cx, ins, 1, "shape")?;
    let spec = ints(cx, s, "shape")?;
    let target: Vec<usize> = spec
        .iter()
        .map(|&v| {
            usize::try_from(v)
                .map_err(|_| cx.invalid(format!("shape {spec:?} has a negative dimension")))
        })
        .collect::<Result<_, _>>()?;
    let out = broadcast_shape(x.shape(), &target)
        .ok_or_else(|| cx.invalid(format!("{:?} does not broadcast to {target:?}", x.shape())))?;
    if fold_size(cx, &out, true).is_none() {
        return Ok(Some(vec![]));
    }
    let sel = broadcast_offsets(&out, x.shape());
    one(cx, ConstValue::new(out, x.data().select(&sel)))
}

/// Expand of run-time data: supported only when it changes nothing (the tensor already
/// has the broadcast shape), since the IR has no broadcast-copy op; consumers broadcast
/// themselves.
fn expand(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let x = cx.tensor(0, "input")?;
    let s = cx.constant(1, "shape")?;
    let (Some(x), Some(s)) = (x, s) else {
        return Ok(());
    };
    if cx.failed() {
        return Ok(());
    }
    let spec = ints(cx, &s, "shape")?;
    let target: Vec<usize> = spec.iter().map(|&v| v.max(0) as usize).collect();
    let shape = cx.ty(x).shape;
    match broadcast_shape(&shape, &target) {
        Some(out) if out == shape => {
            cx.set_output(0, Value::Tensor(x));
            Ok(())
        }
        Some(out) => {
            // A spatial broadcast of an [N, C, h, w] tensor (h, w each 1 or the target)
            // is a nearest-neighbour resize whose taps all read row / column 0: it
            // reuses Resize's form in every backend.
            let padded: Vec<usize> = std::iter::repeat_n(1, out.len().saturating_sub(shape.len()))
                .chain(shape.iter().copied())
                .collect();
            let spatial = out.len() == 4
                && padded[..2] == out[..2]
                && (2..4).all(|d| padded[d] == 1 || padded[d] == out[d]);
            if !spatial {
                cx.unsupported(
                    DiagnosticKind::UnsupportedAttribute,
                    format!("Expand of run-time data from {shape:?} to {out:?} is not supported (only [N, C, 1 or H, 1 or W] to [N, C, H, W] is)"),
                    "let the consumer broadcast (Add, Mul, … broadcast numpy-style), or expand before the model",
                );
                return Ok(());
            }
            let x = if padded != shape {
                cx.emit_aux(
                    "rank",
                    Op::Reshape {
                        shape: padded.clone(),
                    },
                    &[x],
                )?
            } else {
                x
            };
            let op = Op::Resize(Resize {
                mode: ResizeMode::Nearest,
                coord: CoordMode::Asymmetric,
                nearest_mode: NearestMode::Floor,
                out: [out[2], out[3]],
                scales: [(out[2] / padded[2]) as f32, (out[3] / padded[3]) as f32],
            });
            cx.emit_output(op, &[x])
        }
        None => Err(cx.invalid(format!("{shape:?} does not broadcast to {target:?}"))),
    }
}

/// ConstantOfShape-9/20: a tensor of `shape` filled with `value` (default f32 0).
fn eval_constant_of_shape(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let s = input(cx, ins, 0, "input")?;
    let spec = ints(cx, s, "input")?;
    let shape: Vec<usize> = spec
        .iter()
        .map(|&v| {
            usize::try_from(v)
                .map_err(|_| cx.invalid(format!("shape {spec:?} has a negative dimension")))
        })
        .collect::<Result<_, _>>()?;
    let a = cx.attrs();
    let value = match a.tensor("value")? {
        None => ConstData::F32(vec![0.0]),
        Some(t) => match tensor_value(t) {
            Ok(v) if v.len() == 1 => v.into_parts().1,
            Ok(v) => {
                return Err(a.error("value", format!("must hold one element, holds {}", v.len())));
            }
            Err(TensorIssue::Malformed(m)) => return Err(a.error("value", m)),
            Err(TensorIssue::Unsupported { message, fix }) => {
                cx.unsupported(
                    DiagnosticKind::UnsupportedType,
                    format!("attribute 'value': {message}"),
                    fix,
                );
                return Ok(Some(vec![]));
            }
        },
    };
    let Some(n) = fold_size(cx, &shape, true) else {
        return Ok(Some(vec![]));
    };
    let data = value.select(&vec![0; n]);
    one(cx, ConstValue::new(shape, data))
}

/// Range-11: `start, start + delta, …` below `limit` (above, for a negative delta).
fn eval_range(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let start = input(cx, ins, 0, "start")?;
    let limit = input(cx, ins, 1, "limit")?;
    let delta = input(cx, ins, 2, "delta")?;
    for (c, role) in [(start, "start"), (limit, "limit"), (delta, "delta")] {
        if c.len() != 1 {
            return Err(cx.invalid(format!(
                "{role} must be a scalar, got shape {:?}",
                c.shape()
            )));
        }
    }
    let (n, data) = match (start.data(), limit.data(), delta.data()) {
        (ConstData::I64(s), ConstData::I64(l), ConstData::I64(d)) => {
            let (s, l, d) = (s[0] as i128, l[0] as i128, d[0] as i128);
            if d == 0 {
                return Err(cx.invalid("delta is 0"));
            }
            let (a, b) = if d < 0 { (s - l, -d) } else { (l - s, d) };
            let n = (a + b - 1).div_euclid(b).max(0);
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if fold_size(cx, &[n], true).is_none() {
                return Ok(Some(vec![]));
            }
            (
                n,
                ConstData::I64((0..n).map(|i| (s + i as i128 * d) as i64).collect()),
            )
        }
        (ConstData::F32(s), ConstData::F32(l), ConstData::F32(d)) => {
            let (s, l, d) = (s[0], l[0], d[0]);
            if d == 0.0 || !(s.is_finite() && l.is_finite() && d.is_finite()) {
                return Err(cx.invalid("delta is 0 or a bound is not finite"));
            }
            let n = ((l - s) / d).ceil().max(0.0);
            let n = if n > MAX_FOLD_ELEMENTS as f32 {
                usize::MAX
            } else {
                n as usize
            };
            if fold_size(cx, &[n], true).is_none() {
                return Ok(Some(vec![]));
            }
            (
                n,
                ConstData::F32((0..n).map(|i| s + i as f32 * d).collect()),
            )
        }
        _ => return Err(cx.invalid("start, limit and delta must be all INT64 or all FLOAT")),
    };
    one(cx, ConstValue::new([n], data))
}

/// The index of every output element in the input of a Transpose.
pub(crate) fn transpose_offsets(shape: &[usize], perm: &[usize]) -> Vec<usize> {
    let own = contiguous_strides(shape);
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let strides: Vec<usize> = perm.iter().map(|&p| own[p]).collect();
    offsets(&out, &strides)
}

/// One sliced axis: ONNX Slice's clamping of `start`/`end` for an axis of size `dim`,
/// as the first index and the element count (`step` ≠ 0).
pub(crate) fn slice_axis(dim: usize, start: i64, end: i64, step: i64) -> (usize, usize) {
    let n = dim as i128;
    let norm = |v: i64| {
        let v = v as i128;
        if v < 0 { v + n } else { v }
    };
    let (s, e) = (norm(start), norm(end));
    let step = step as i128;
    let (s, count) = if step > 0 {
        let s = s.clamp(0, n);
        let e = e.clamp(0, n);
        (s, if e > s { (e - s + step - 1) / step } else { 0 })
    } else {
        let s = s.clamp(0, n - 1);
        let e = e.clamp(-1, n - 1);
        (
            s,
            if s > e {
                (s - e + (-step) - 1) / (-step)
            } else {
                0
            },
        )
    };
    (s.max(0) as usize, count as usize)
}

/// Per-axis selected indices of a slice of `shape`: `(axis, start, count, step)` each.
pub(crate) fn slice_offsets(
    shape: &[usize],
    axes: &[(usize, usize, usize, i64)],
) -> (Vec<usize>, Vec<usize>) {
    let mut per_axis: Vec<Vec<usize>> = shape.iter().map(|&d| (0..d).collect()).collect();
    for &(a, start, count, step) in axes {
        per_axis[a] = (0..count)
            .map(|i| (start as i64 + i as i64 * step) as usize)
            .collect();
    }
    let out: Vec<usize> = per_axis.iter().map(Vec::len).collect();
    let strides = contiguous_strides(shape);
    let n: usize = out.iter().product();
    let mut sel = Vec::with_capacity(n);
    let mut idx = vec![0usize; out.len()];
    if n > 0 {
        loop {
            sel.push(
                idx.iter()
                    .enumerate()
                    .map(|(d, &i)| per_axis[d][i] * strides[d])
                    .sum(),
            );
            let mut d = out.len();
            loop {
                if d == 0 {
                    return (out, sel);
                }
                d -= 1;
                idx[d] += 1;
                if idx[d] < out[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
    (out, sel)
}

/// The elements of the parts, `(part, start, len)` runs in order; `None` when the parts
/// differ in element type.
pub(crate) fn gather_runs(
    parts: &[&ConstValue],
    runs: &[(usize, usize, usize)],
) -> Option<ConstData> {
    fn collect<T: Copy>(
        parts: &[&ConstValue],
        runs: &[(usize, usize, usize)],
        get: fn(&ConstValue) -> Option<&[T]>,
    ) -> Option<Vec<T>> {
        let slices: Vec<&[T]> = parts.iter().map(|p| get(p)).collect::<Option<_>>()?;
        let mut out = Vec::new();
        for &(p, s, n) in runs {
            out.extend_from_slice(&slices[p][s..s + n]);
        }
        Some(out)
    }
    Some(match parts.first()?.data() {
        ConstData::F32(_) => ConstData::F32(collect(parts, runs, ConstValue::as_f32)?),
        ConstData::I64(_) => ConstData::I64(collect(parts, runs, ConstValue::as_i64)?),
        ConstData::Bool(_) => ConstData::Bool(collect(parts, runs, ConstValue::as_bool)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_axis_clamps_like_onnx() {
        assert_eq!(slice_axis(10, 0, 3, 1), (0, 3));
        assert_eq!(slice_axis(10, -3, i64::MAX, 1), (7, 3));
        assert_eq!(slice_axis(10, 2, 9, 3), (2, 3));
        assert_eq!(slice_axis(10, 5, 2, 1), (5, 0));
        assert_eq!(slice_axis(10, -1, i64::MIN, -1), (9, 10));
        assert_eq!(slice_axis(10, 20, -20, -2), (9, 5));
        assert_eq!(slice_axis(4, 1, 1000, 1), (1, 3));
    }

    #[test]
    fn integer_division_truncates_and_mod_follows_the_divisor() {
        let a = ConstValue::i64([4], vec![7, -7, 7, -7]).unwrap();
        let b = ConstValue::i64([4], vec![2, 2, -2, -2]).unwrap();
        let q = binary(&a, &b, Bin::Div, false).unwrap();
        assert_eq!(q.as_i64().unwrap(), [3, -3, -3, 3]);
        let m = binary(&a, &b, Bin::Mod, false).unwrap();
        assert_eq!(m.as_i64().unwrap(), [1, 1, -1, -1]);
        let zero = ConstValue::i64([], vec![0]).unwrap();
        assert!(binary(&a, &zero, Bin::Div, false).is_err());
    }

    #[test]
    fn broadcasting_and_comparisons() {
        let a = ConstValue::i64([2, 1], vec![1, 2]).unwrap();
        let b = ConstValue::i64([3], vec![1, 2, 3]).unwrap();
        let s = binary(&a, &b, Bin::Add, false).unwrap();
        assert_eq!(s.shape(), [2, 3]);
        assert_eq!(s.as_i64().unwrap(), [2, 3, 4, 3, 4, 5]);
        let e = binary(&a, &b, Bin::Equal, false).unwrap();
        assert_eq!(
            e.as_bool().unwrap(),
            [true, false, false, false, true, false]
        );
        let f = ConstValue::f32([1], vec![1.0]).unwrap();
        assert!(binary(&a, &f, Bin::Add, false).is_err());
    }

    #[test]
    fn slices_and_transposes_select_the_right_elements() {
        // [2, 3] → rows all, columns 2, 0 (step -2).
        let (shape, sel) = slice_offsets(&[2, 3], &[(1, 2, 2, -2)]);
        assert_eq!(shape, [2, 2]);
        assert_eq!(sel, [2, 0, 5, 3]);
        assert_eq!(transpose_offsets(&[2, 3], &[1, 0]), [0, 3, 1, 4, 2, 5]);
        assert_eq!(broadcast_offsets(&[2, 3], &[3]), [0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_offsets(&[2, 3], &[2, 1]), [0, 0, 0, 1, 1, 1]);
    }
}
