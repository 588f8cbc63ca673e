//! Shape ops: Reshape, Flatten, Squeeze, Unsqueeze (all become a static IR Reshape),
//! Transpose, Concat, Pad, Slice and Split (one IR Slice per sliced axis). Each but Pad
//! and Split is also evaluated on constants (shape sub-graphs folded at import).

use std::rc::Rc;

use lutq_ir::Op;

use super::constant::{self, Inputs, fold_size};
use super::{OpDef, no_const, normalize_axis};
use crate::attrs::MAX_ATTR_VALUE;
use crate::error::{DiagnosticKind, ImportError};
use crate::import::{MAX_ELEMENTS, NodeCx, Value};
use crate::tensor::ConstValue;

pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "Reshape",
        convert: reshape,
        const_inputs: |_| &[1],
        ignored_inputs: &[],
        eval_const: Some(eval_reshape),
    },
    OpDef {
        op_type: "Flatten",
        convert: flatten,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: Some(eval_reshape),
    },
    OpDef {
        op_type: "Squeeze",
        convert: squeeze,
        const_inputs: axes_input_from_13,
        ignored_inputs: &[],
        eval_const: Some(eval_reshape),
    },
    OpDef {
        op_type: "Unsqueeze",
        convert: unsqueeze,
        const_inputs: axes_input_from_13,
        ignored_inputs: &[],
        eval_const: Some(eval_reshape),
    },
    OpDef {
        op_type: "Transpose",
        convert: transpose,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: Some(eval_transpose),
    },
    OpDef {
        op_type: "Concat",
        convert: concat,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: Some(eval_concat),
    },
    OpDef {
        op_type: "Pad",
        convert: pad,
        const_inputs: |opset| if opset >= 11 { &[1, 2, 3] } else { &[] },
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "Slice",
        convert: slice,
        const_inputs: |opset| if opset >= 10 { &[1, 2, 3, 4] } else { &[] },
        ignored_inputs: &[],
        eval_const: Some(eval_slice),
    },
    OpDef {
        op_type: "Split",
        convert: split,
        const_inputs: |opset| if opset >= 13 { &[1] } else { &[] },
        ignored_inputs: &[],
        eval_const: Some(eval_split),
    },
    OpDef {
        op_type: "DepthToSpace",
        convert: depth_space,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "SpaceToDepth",
        convert: depth_space,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
];

fn axes_input_from_13(opset: i64) -> &'static [usize] {
    if opset >= 13 { &[1] } else { &[] }
}

/// The elements of an integer constant of rank 0 or 1.
fn int_list<'c>(
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

/// Reshape-5/13/14/…: a constant `shape` input where 0 copies the input dim (unless
/// `allowzero`) and one -1 is inferred.
fn reshape(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let x = cx.tensor(0, "data")?;
    let target = match x {
        Some(x) => {
            let shape = cx.ty(x).shape;
            reshape_like(cx, &shape)?
        }
        None => {
            // Still check the constant operands.
            axes_or_shape_operands(cx)?;
            None
        }
    };
    let (Some(x), Some(target)) = (x, target) else {
        return Ok(());
    };
    if cx.failed() {
        return Ok(());
    }
    cx.emit_output(Op::Reshape { shape: target }, &[x])
}

/// Reads the shape-like operands of a reshaping op without an input shape (for
/// diagnostics only).
fn axes_or_shape_operands(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    match cx.op_type() {
        "Reshape" => {
            let _ = cx.constant(1, "shape")?;
        }
        "Squeeze" | "Unsqueeze" => {
            let _ = axes(cx)?;
        }
        _ => {}
    }
    Ok(())
}

/// The output shape of Reshape, Flatten, Squeeze or Unsqueeze for an input of `shape`:
/// `None` when an operand is not usable (reported).
fn reshape_like(
    cx: &mut NodeCx<'_, '_>,
    shape: &[usize],
) -> Result<Option<Vec<usize>>, ImportError> {
    match cx.op_type() {
        "Reshape" => {
            let allowzero = cx.attrs().flag("allowzero", false)?;
            let Some(spec) = cx.constant(1, "shape")? else {
                return Ok(None);
            };
            let spec = int_list(cx, &spec, "shape")?;
            reshape_target(shape, spec, allowzero)
                .map(Some)
                .map_err(|m| cx.invalid(m))
        }
        "Flatten" => {
            let a = cx.attrs();
            let axis = a.int_or("axis", 1)?;
            let r = shape.len() as i64;
            let k = if axis < 0 { axis + r } else { axis };
            if !(0..=r).contains(&k) {
                return Err(a.error("axis", format!("{axis} is out of range for rank {r}")));
            }
            let k = k as usize;
            Ok(Some(vec![
                shape[..k].iter().product(),
                shape[k..].iter().product(),
            ]))
        }
        "Squeeze" => {
            let axes = axes(cx)?;
            if cx.failed() {
                return Ok(None);
            }
            squeeze_target(shape, axes.as_deref())
                .map(Some)
                .map_err(|m| cx.invalid(m))
        }
        "Unsqueeze" => {
            let axes = axes(cx)?;
            if cx.failed() {
                return Ok(None);
            }
            let Some(axes) = axes else {
                return Err(cx.invalid("axes are required"));
            };
            unsqueeze_target(shape, &axes)
                .map(Some)
                .map_err(|m| cx.invalid(m))
        }
        // Identity, Dropout.
        _ => Ok(Some(shape.to_vec())),
    }
}

/// Reshape, Flatten, Squeeze, Unsqueeze, Identity and Dropout of a constant: the same
/// elements under the new shape.
pub(crate) fn eval_reshape(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let x = constant::input(cx, ins, 0, "data")?;
    let Some(target) = reshape_like(cx, x.shape())? else {
        return Ok(Some(vec![]));
    };
    match x.reshaped(target.clone()) {
        Some(v) => Ok(Some(vec![v])),
        None => Err(cx.invalid(format!("cannot reshape {:?} to {target:?}", x.shape()))),
    }
}

/// The static shape a Reshape produces.
pub(crate) fn reshape_target(
    input: &[usize],
    spec: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            -1 if infer.is_some() => return Err(format!("shape {spec:?} has more than one -1")),
            -1 => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => match input.get(i) {
                Some(&d) => out.push(d),
                None => {
                    return Err(format!(
                        "shape {spec:?} copies dimension {i} (0), but the input {input:?} has rank {}",
                        input.len()
                    ));
                }
            },
            s if s < 0 => return Err(format!("shape {spec:?} has a negative dimension {s}")),
            s => match usize::try_from(s) {
                Ok(s) if s <= MAX_ELEMENTS => out.push(s),
                _ => {
                    return Err(format!(
                        "shape {spec:?} has a dimension {s} that is too large"
                    ));
                }
            },
        }
    }
    if allowzero && infer.is_some() && spec.contains(&0) {
        return Err(format!(
            "shape {spec:?} has both 0 and -1, which allowzero=1 forbids"
        ));
    }
    let product = |dims: &[usize]| {
        dims.iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= MAX_ELEMENTS)
    };
    if let Some(i) = infer {
        let Some(known) = product(&out) else {
            return Err(format!("shape {spec:?} is too large"));
        };
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!(
                "cannot infer the -1 of shape {spec:?} for an input {input:?} of {total} elements"
            ));
        }
        out[i] = total / known;
    }
    let Some(n) = product(&out) else {
        return Err(format!("shape {spec:?} is too large"));
    };
    if n != total {
        return Err(format!(
            "shape {spec:?} gives {out:?} ({n} elements), but the input {input:?} has {total}"
        ));
    }
    Ok(out)
}

/// Flatten-1/9/11/13/…: `[prod(dims[..axis]), prod(dims[axis..])]`, axis in `[-r, r]`.
fn flatten(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    reshape(cx)
}

/// The `axes` of Squeeze/Unsqueeze: an attribute before opset 13, a constant input from
/// 13. `Ok(None)` when absent (or not constant: then reported and the node failed).
fn axes(cx: &mut NodeCx<'_, '_>) -> Result<Option<Vec<i64>>, ImportError> {
    if cx.opset() < 13 {
        return Ok(cx.attrs().ints("axes")?.map(<[i64]>::to_vec));
    }
    match cx.opt_constant(1, "axes") {
        Some(c) => Ok(Some(int_list(cx, &c, "axes")?.to_vec())),
        None => Ok(None),
    }
}

/// Squeeze-1/11/13/…: drops the listed size-1 axes, or every size-1 axis.
fn squeeze(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    reshape(cx)
}

/// The shape Squeeze leaves of `shape`.
fn squeeze_target(shape: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>, String> {
    let drop: Vec<usize> = match axes {
        None => (0..shape.len()).filter(|&d| shape[d] == 1).collect(),
        Some(axes) => {
            let mut drop = Vec::with_capacity(axes.len());
            for &a in axes {
                let d = normalize_axis(a, shape.len())
                    .ok_or_else(|| format!("axis {a} is out of range for {shape:?}"))?;
                if shape[d] != 1 {
                    return Err(format!(
                        "cannot squeeze axis {a}: dimension {d} of {shape:?} is not 1"
                    ));
                }
                drop.push(d);
            }
            drop
        }
    };
    Ok((0..shape.len())
        .filter(|d| !drop.contains(d))
        .map(|d| shape[d])
        .collect())
}

/// Unsqueeze-1/11/13/…: inserts size-1 axes at the listed positions of the output.
fn unsqueeze(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    reshape(cx)
}

/// The shape Unsqueeze makes of `shape`.
fn unsqueeze_target(shape: &[usize], axes: &[i64]) -> Result<Vec<usize>, String> {
    let rank = shape.len() + axes.len();
    let mut ones = vec![false; rank];
    for &a in axes {
        let d = normalize_axis(a, rank)
            .ok_or_else(|| format!("axis {a} is out of range for output rank {rank}"))?;
        if std::mem::replace(&mut ones[d], true) {
            return Err(format!("axes {axes:?} repeat axis {d}"));
        }
    }
    let mut dims = shape.iter();
    Ok(ones
        .iter()
        .map(|&one| {
            if one {
                1
            } else {
                dims.next().copied().unwrap_or(1)
            }
        })
        .collect())
}

/// Transpose: `perm` defaults to reversing the axes.
fn transpose(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let perm = cx.attrs().usizes("perm", 0)?;
    let x = cx.tensor(0, "data")?;
    let Some(x) = x else {
        return Ok(());
    };
    if cx.failed() {
        return Ok(());
    }
    let perm = perm.unwrap_or_else(|| (0..cx.ty(x).rank()).rev().collect());
    cx.emit_output(Op::Transpose { perm }, &[x])
}

/// DepthToSpace-1/11/13 (`DCR` or `CRD`) and SpaceToDepth-1/13 of an `[N, C, H, W]`
/// tensor: a rank-6 Reshape, a Transpose and a Reshape back, exactly as the ONNX
/// definitions spell them, so both run as data movement in every backend (pixel shuffle
/// in super-resolution heads, space-to-depth stems).
fn depth_space(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let a = cx.attrs();
    let to_space = cx.op_type() == "DepthToSpace";
    let block = a
        .int("blocksize")?
        .ok_or_else(|| a.error("blocksize", "is required"))?;
    if !(1..=MAX_ATTR_VALUE as i64).contains(&block) {
        return Err(a.error("blocksize", format!("{block} must be positive")));
    }
    let crd = match (to_space, a.string("mode")?) {
        (true, None | Some("DCR")) | (false, None) => false,
        (true, Some("CRD")) => true,
        (_, Some(other)) => {
            return Err(a.error("mode", format!("'{other}' is not DCR or CRD")));
        }
    };
    let x = cx.tensor(0, "input")?;
    let Some(x) = x else {
        return Ok(());
    };
    if cx.failed() {
        return Ok(());
    }
    let s = cx.ty(x).shape;
    let &[n, c, h, w] = s.as_slice() else {
        return Err(cx.invalid(format!("the input must be [N, C, H, W], got {s:?}")));
    };
    let b = block as usize;
    let (split, perm, out) = if to_space {
        if c % (b * b) != 0 {
            return Err(cx.invalid(format!("{c} channels do not divide into blocks of {b}×{b}")));
        }
        let c2 = c / (b * b);
        let out = vec![n, c2, h * b, w * b];
        if crd {
            (vec![n, c2, b, b, h, w], vec![0, 1, 4, 2, 5, 3], out)
        } else {
            (vec![n, b, b, c2, h, w], vec![0, 3, 4, 1, 5, 2], out)
        }
    } else {
        if h % b != 0 || w % b != 0 {
            return Err(cx.invalid(format!("{h}×{w} does not divide into blocks of {b}×{b}")));
        }
        (
            vec![n, c, h / b, b, w / b, b],
            vec![0, 3, 5, 1, 2, 4],
            vec![n, c * b * b, h / b, w / b],
        )
    };
    let r = cx.emit_aux("blocks", Op::Reshape { shape: split }, &[x])?;
    let t = cx.emit_aux("permute", Op::Transpose { perm }, &[r])?;
    cx.emit_output(Op::Reshape { shape: out }, &[t])
}

/// Concat-4/11/13: `axis` required, negative from 11.
fn concat(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let a = cx.attrs();
    let axis = a
        .int("axis")?
        .ok_or_else(|| a.error("axis", "is required"))?;
    let mut inputs = Vec::with_capacity(cx.input_count());
    for slot in 0..cx.input_count() {
        if cx.input_name(slot).is_none() {
            return Err(cx.invalid(format!("input {slot} has an empty name")));
        }
        inputs.push(cx.tensor(slot, "inputs")?);
    }
    if inputs.is_empty() {
        return Err(cx.invalid("needs at least one input"));
    }
    let inputs: Option<Vec<_>> = inputs.into_iter().collect();
    let Some(inputs) = inputs else {
        return Ok(());
    };
    if cx.failed() {
        return Ok(());
    }
    let rank = cx.ty(inputs[0]).rank();
    let axis = normalize_axis(axis, rank)
        .ok_or_else(|| a.error("axis", format!("{axis} is out of range for rank {rank}")))?;
    cx.emit_output(Op::Concat { axis }, &inputs)
}

/// Transpose of a constant.
fn eval_transpose(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let x = constant::input(cx, ins, 0, "data")?;
    let rank = x.shape().len();
    let perm = cx
        .attrs()
        .usizes("perm", 0)?
        .unwrap_or_else(|| (0..rank).rev().collect());
    let mut seen = vec![false; rank];
    if perm.len() != rank
        || perm
            .iter()
            .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
    {
        return Err(cx.invalid(format!("perm {perm:?} is not a permutation of 0..{rank}")));
    }
    if fold_size(cx, x.shape(), false).is_none() {
        return Ok(None);
    }
    let sel = constant::transpose_offsets(x.shape(), &perm);
    let out: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    ConstValue::new(out, x.data().select(&sel))
        .map(|v| Some(vec![v]))
        .map_err(|e| cx.invalid(e.to_string()))
}

/// Concat of constants.
fn eval_concat(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let a = cx.attrs();
    let axis = a
        .int("axis")?
        .ok_or_else(|| a.error("axis", "is required"))?;
    let parts: Vec<&ConstValue> = ins.iter().filter_map(|c| c.as_deref()).collect();
    if parts.len() != ins.len() || parts.is_empty() {
        return Err(cx.invalid("every input must be present"));
    }
    let first = parts[0].shape();
    let rank = first.len();
    let d = normalize_axis(axis, rank)
        .ok_or_else(|| a.error("axis", format!("{axis} is out of range for rank {rank}")))?;
    let mut out = first.to_vec();
    out[d] = 0;
    for p in &parts {
        let s = p.shape();
        if s.len() != rank || (0..rank).any(|k| k != d && s[k] != first[k]) {
            return Err(cx.invalid(format!(
                "inputs {first:?} and {s:?} differ outside axis {d}"
            )));
        }
        out[d] += s[d];
    }
    if fold_size(cx, &out, false).is_none() {
        return Ok(None);
    }
    let outer: usize = first[..d].iter().product();
    let inner: usize = first[d + 1..].iter().product();
    let mut runs = Vec::with_capacity(outer * parts.len());
    for o in 0..outer {
        for (i, p) in parts.iter().enumerate() {
            let n = p.shape()[d] * inner;
            runs.push((i, o * n, n));
        }
    }
    let Some(data) = constant::gather_runs(&parts, &runs) else {
        return Err(cx.invalid("inputs differ in element type"));
    };
    ConstValue::new(out, data)
        .map(|v| Some(vec![v]))
        .map_err(|e| cx.invalid(e.to_string()))
}

/// One sliced axis of a Slice or Split: `(axis, start, count, step)`.
type SliceAxis = (usize, usize, usize, i64);

/// The sliced axes of Slice-1/10/11/13 for an input of `shape`: attributes before opset
/// 10, constant inputs from 10 (`axes` and `steps` optional). `None` when an operand is
/// not usable (reported).
fn slice_spec(
    cx: &mut NodeCx<'_, '_>,
    shape: &[usize],
) -> Result<Option<Vec<SliceAxis>>, ImportError> {
    let rank = shape.len();
    let (starts, ends, axes, steps) = if cx.opset() < 10 {
        let a = cx.attrs();
        let starts = a
            .ints("starts")?
            .ok_or_else(|| a.error("starts", "is required"))?
            .to_vec();
        let ends = a
            .ints("ends")?
            .ok_or_else(|| a.error("ends", "is required"))?
            .to_vec();
        (starts, ends, a.ints("axes")?.map(<[i64]>::to_vec), None)
    } else {
        let starts = cx.constant(1, "starts")?;
        let ends = cx.constant(2, "ends")?;
        let axes = cx.opt_constant(3, "axes");
        let steps = cx.opt_constant(4, "steps");
        let (Some(starts), Some(ends)) = (starts, ends) else {
            return Ok(None);
        };
        if cx.failed() {
            return Ok(None);
        }
        let list = |c: Option<Rc<ConstValue>>, role| -> Result<Option<Vec<i64>>, ImportError> {
            c.map(|c| int_list(cx, &c, role).map(<[i64]>::to_vec))
                .transpose()
        };
        (
            int_list(cx, &starts, "starts")?.to_vec(),
            int_list(cx, &ends, "ends")?.to_vec(),
            list(axes, "axes")?,
            list(steps, "steps")?,
        )
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(cx.invalid(format!(
            "starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} differ in length"
        )));
    }
    let mut spec: Vec<SliceAxis> = Vec::with_capacity(axes.len());
    for i in 0..axes.len() {
        let d = normalize_axis(axes[i], rank).ok_or_else(|| {
            cx.invalid(format!("axis {} is out of range for rank {rank}", axes[i]))
        })?;
        if spec.iter().any(|&(a, ..)| a == d) {
            return Err(cx.invalid(format!("axes {axes:?} repeat axis {d}")));
        }
        if steps[i] == 0 {
            return Err(cx.invalid("a step is 0"));
        }
        let (start, count) = constant::slice_axis(shape[d], starts[i], ends[i], steps[i]);
        spec.push((d, start, count, steps[i]));
    }
    Ok(Some(spec))
}

/// Slice of a constant, any step.
fn eval_slice(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let x = constant::input(cx, ins, 0, "data")?;
    let Some(spec) = slice_spec(cx, x.shape())? else {
        return Ok(Some(vec![]));
    };
    let (out, sel) = constant::slice_offsets(x.shape(), &spec);
    ConstValue::new(out, x.data().select(&sel))
        .map(|v| Some(vec![v]))
        .map_err(|e| cx.invalid(e.to_string()))
}

/// Emits one IR Slice per sliced axis that changes something (none: the same tensor).
fn emit_slices(
    cx: &mut NodeCx<'_, '_>,
    x: lutq_ir::NodeId,
    spec: &[SliceAxis],
    out_slot: usize,
) -> Result<(), ImportError> {
    let shape = cx.ty(x).shape;
    let changing: Vec<&SliceAxis> = spec
        .iter()
        .filter(|&&(d, start, count, step)| !(start == 0 && count == shape[d] && step == 1))
        .collect();
    let mut cur = x;
    for (i, &&(axis, start, count, step)) in changing.iter().enumerate() {
        let op = Op::Slice {
            axis,
            start,
            end: start + (count.max(1) - 1) * step as usize + 1,
            step: step as usize,
        };
        let op = if count == 0 {
            Op::Slice {
                axis,
                start: 0,
                end: 0,
                step: 1,
            }
        } else {
            op
        };
        let last = i + 1 == changing.len();
        cur = if last && out_slot == 0 {
            cx.emit(op, &[cur])?
        } else {
            cx.emit_aux(&format!("slice{out_slot}_{axis}"), op, &[cur])?
        };
    }
    cx.set_output(out_slot, Value::Tensor(cur));
    Ok(())
}

/// Slice-1/10/11/13 of run-time data: positive steps only, one IR Slice per axis.
fn slice(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let x = cx.tensor(0, "data")?;
    let spec = match x {
        Some(x) => {
            let shape = cx.ty(x).shape;
            slice_spec(cx, &shape)?
        }
        None => None,
    };
    let (Some(x), Some(spec)) = (x, spec) else {
        return Ok(());
    };
    if let Some(&(d, ..)) = spec.iter().find(|&&(.., step)| step < 0) {
        cx.unsupported(
            DiagnosticKind::UnsupportedAttribute,
            format!("a negative step on axis {d} (reversal) is not supported for run-time data"),
            "slice with positive steps (flip the data before the model if needed)",
        );
    }
    if cx.failed() {
        return Ok(());
    }
    emit_slices(cx, x, &spec, 0)
}

/// The axis and the output sizes of Split-2/11/13/18: `split` as an attribute before 13,
/// an optional input from 13; otherwise `num_outputs` (18) or the number of outputs,
/// equal parts with a smaller last one.
fn split_spec(
    cx: &mut NodeCx<'_, '_>,
    shape: &[usize],
) -> Result<Option<(usize, Vec<usize>)>, ImportError> {
    let a = cx.attrs();
    let axis = a.int_or("axis", 0)?;
    let d = normalize_axis(axis, shape.len())
        .ok_or_else(|| a.error("axis", format!("{axis} is out of range for {shape:?}")))?;
    let listed: Option<Vec<i64>> = if cx.opset() < 13 {
        a.ints("split")?.map(<[i64]>::to_vec)
    } else {
        match cx.opt_constant(1, "split") {
            Some(c) => Some(int_list(cx, &c, "split")?.to_vec()),
            None if cx.failed() => return Ok(None),
            None => None,
        }
    };
    let n_out = cx.output_count();
    let sizes = match listed {
        Some(v) => {
            if v.len() != n_out
                || v.iter().any(|&x| x < 0)
                || v.iter().map(|&x| x as i128).sum::<i128>() != shape[d] as i128
            {
                return Err(cx.invalid(format!(
                    "split {v:?} does not cut dimension {d} ({}) into {n_out} outputs",
                    shape[d]
                )));
            }
            v.iter().map(|&x| x as usize).collect()
        }
        None => {
            let n = if cx.opset() >= 18 {
                a.int("num_outputs")?.map_or(n_out, |v| v.max(1) as usize)
            } else {
                n_out
            };
            if n == 0 || n != n_out {
                return Err(cx.invalid(format!("num_outputs {n} differs from the {n_out} outputs")));
            }
            let part = shape[d].div_ceil(n);
            (0..n)
                .map(|i| shape[d].saturating_sub(i * part).min(part))
                .collect()
        }
    };
    Ok(Some((d, sizes)))
}

/// Split of run-time data: every output a Slice along the axis.
fn split(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let x = cx.tensor(0, "input")?;
    let Some(x) = x else {
        return Ok(());
    };
    let shape = cx.ty(x).shape;
    let Some((d, sizes)) = split_spec(cx, &shape)? else {
        return Ok(());
    };
    if cx.failed() {
        return Ok(());
    }
    let mut start = 0;
    for (i, &n) in sizes.iter().enumerate() {
        if cx.output_used(i) {
            emit_slices(cx, x, &[(d, start, n, 1)], i)?;
        }
        start += n;
    }
    Ok(())
}

/// Split of a constant.
fn eval_split(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let x = constant::input(cx, ins, 0, "input")?;
    let Some((d, sizes)) = split_spec(cx, x.shape())? else {
        return Ok(Some(vec![]));
    };
    let mut outs = Vec::with_capacity(sizes.len());
    let mut start = 0;
    for n in sizes {
        let (shape, sel) = constant::slice_offsets(x.shape(), &[(d, start, n, 1)]);
        outs.push(
            ConstValue::new(shape, x.data().select(&sel)).map_err(|e| cx.invalid(e.to_string()))?,
        );
        start += n;
    }
    Ok(Some(outs))
}

/// Pad-2/11/13/18/19/…, constant mode only. Before opset 11 `pads` and `value` are
/// attributes; from 11 they are constant inputs (`constant_value` optional, possibly an
/// empty name), and from 18 an optional `axes` input selects the padded axes.
fn pad(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let a = cx.attrs();
    let mode = a.string("mode")?.unwrap_or("constant");
    if mode != "constant" {
        cx.unsupported_attr(
            "mode",
            &format!("'{mode}' padding is not supported (only 'constant')"),
            "use constant (zero) padding, or pad the data before it enters the model",
        );
    }
    let x = cx.tensor(0, "data")?;
    let (pads, value, axes): (Option<Vec<i64>>, f32, Option<Vec<i64>>) = if cx.opset() < 11 {
        let pads = a
            .ints("pads")?
            .ok_or_else(|| a.error("pads", "is required"))?
            .to_vec();
        (Some(pads), a.float_or("value", 0.0)?, None)
    } else {
        let pads = cx.constant(1, "pads")?;
        let value = cx.opt_constant(2, "constant_value");
        let axes = if cx.opset() >= 18 {
            cx.opt_constant(3, "axes")
        } else {
            None
        };
        let pads = match pads {
            Some(p) => Some(int_list(cx, &p, "pads")?.to_vec()),
            None => None,
        };
        let value = match value {
            Some(v) => super::elementwise::scalar_f32(cx, &v, "constant_value")?,
            None => 0.0,
        };
        let axes = match axes {
            Some(c) => Some(int_list(cx, &c, "axes")?.to_vec()),
            None => None,
        };
        (pads, value, axes)
    };
    if let Some(p) = &pads
        && p.iter().any(|&v| v > MAX_ATTR_VALUE as i64)
    {
        return Err(cx.invalid(format!("pads {p:?} are too large")));
    }
    if let Some(p) = &pads
        && p.iter().any(|&v| v < 0)
    {
        cx.unsupported(
            DiagnosticKind::UnsupportedAttribute,
            format!("negative pads {p:?} (cropping) are not supported"),
            "remove the cropping from the model, or crop the data before it enters",
        );
    }
    let (Some(x), Some(pads)) = (x, pads) else {
        return Ok(());
    };
    if cx.failed() {
        return Ok(());
    }
    let rank = cx.ty(x).rank();
    let axes: Vec<usize> = match axes {
        None => (0..rank).collect(),
        Some(axes) => axes
            .iter()
            .map(|&a| {
                normalize_axis(a, rank)
                    .ok_or_else(|| cx.invalid(format!("axis {a} is out of range for rank {rank}")))
            })
            .collect::<Result<_, _>>()?,
    };
    if pads.len() != 2 * axes.len() {
        return Err(cx.invalid(format!(
            "pads {pads:?} must have 2 × {} entries",
            axes.len()
        )));
    }
    let mut full = vec![0usize; 2 * rank];
    for (i, &d) in axes.iter().enumerate() {
        full[d] = pads[i] as usize;
        full[d + rank] = pads[i + axes.len()] as usize;
    }
    cx.emit_output(Op::Pad { pads: full, value }, &[x])
}

#[cfg(test)]
mod tests {
    use super::reshape_target;

    #[test]
    fn reshape_zero_and_minus_one() {
        assert_eq!(
            reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(),
            [2, 12]
        );
        assert_eq!(
            reshape_target(&[2, 3, 4], &[4, 0, 2], false).unwrap(),
            [4, 3, 2]
        );
        assert_eq!(reshape_target(&[2, 3, 4], &[-1], false).unwrap(), [24]);
        assert_eq!(
            reshape_target(&[0, 3, 4], &[3, 4, 0], true).unwrap(),
            [3, 4, 0]
        );
        assert!(reshape_target(&[2, 3, 4], &[-1, -1], false).is_err());
        assert!(reshape_target(&[2, 3, 4], &[5, -1], false).is_err());
        assert!(reshape_target(&[2, 3, 4], &[0, 0, 0, 0], false).is_err());
        assert!(reshape_target(&[2, 3, 4], &[2, 3, 5], false).is_err());
        assert!(reshape_target(&[2, 3, 4], &[-2, 12], false).is_err());
    }
}
