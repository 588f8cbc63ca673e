//! Shape ops: Reshape, Flatten, Squeeze, Unsqueeze (all become a static IR Reshape),
//! Transpose, Concat, Pad.

use lutq_ir::Op;

use super::{OpDef, no_const, normalize_axis};
use crate::attrs::MAX_ATTR_VALUE;
use crate::error::{DiagnosticKind, ImportError};
use crate::import::{MAX_ELEMENTS, NodeCx};
use crate::tensor::ConstValue;

pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "Reshape",
        convert: reshape,
        const_inputs: |_| &[1],
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "Flatten",
        convert: flatten,
        const_inputs: no_const,
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "Squeeze",
        convert: squeeze,
        const_inputs: axes_input_from_13,
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "Unsqueeze",
        convert: unsqueeze,
        const_inputs: axes_input_from_13,
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "Transpose",
        convert: transpose,
        const_inputs: no_const,
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "Concat",
        convert: concat,
        const_inputs: no_const,
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "Pad",
        convert: pad,
        const_inputs: |opset| if opset >= 11 { &[1, 2, 3] } else { &[] },
        ignored_inputs: &[],
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
    let allowzero = cx.attrs().flag("allowzero", false)?;
    let x = cx.tensor(0, "data")?;
    let shape = cx.constant(1, "shape")?;
    let (Some(x), Some(shape)) = (x, shape) else {
        return Ok(());
    };
    if cx.failed() {
        return Ok(());
    }
    let spec = int_list(cx, &shape, "shape")?;
    let input = cx.ty(x).shape;
    let target = reshape_target(&input, spec, allowzero).map_err(|m| cx.invalid(m))?;
    cx.emit_output(Op::Reshape { shape: target }, &[x])
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
    let a = cx.attrs();
    let axis = a.int_or("axis", 1)?;
    let x = cx.tensor(0, "input")?;
    let Some(x) = x else {
        return Ok(());
    };
    if cx.failed() {
        return Ok(());
    }
    let shape = cx.ty(x).shape;
    let r = shape.len() as i64;
    let k = if axis < 0 { axis + r } else { axis };
    if !(0..=r).contains(&k) {
        return Err(a.error("axis", format!("{axis} is out of range for rank {r}")));
    }
    let k = k as usize;
    let outer = shape[..k].iter().product();
    let inner = shape[k..].iter().product();
    cx.emit_output(
        Op::Reshape {
            shape: vec![outer, inner],
        },
        &[x],
    )
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
    let x = cx.tensor(0, "data")?;
    let axes = axes(cx)?;
    let Some(x) = x else {
        return Ok(());
    };
    if cx.failed() {
        return Ok(());
    }
    let shape = cx.ty(x).shape;
    let drop: Vec<usize> = match axes {
        None => (0..shape.len()).filter(|&d| shape[d] == 1).collect(),
        Some(axes) => {
            let mut drop = Vec::with_capacity(axes.len());
            for &a in &axes {
                let d = normalize_axis(a, shape.len())
                    .ok_or_else(|| cx.invalid(format!("axis {a} is out of range for {shape:?}")))?;
                if shape[d] != 1 {
                    return Err(cx.invalid(format!(
                        "cannot squeeze axis {a}: dimension {d} of {shape:?} is not 1"
                    )));
                }
                drop.push(d);
            }
            drop
        }
    };
    let out = (0..shape.len())
        .filter(|d| !drop.contains(d))
        .map(|d| shape[d])
        .collect();
    cx.emit_output(Op::Reshape { shape: out }, &[x])
}

/// Unsqueeze-1/11/13/…: inserts size-1 axes at the listed positions of the output.
fn unsqueeze(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let x = cx.tensor(0, "data")?;
    let axes = axes(cx)?;
    if axes.is_none() && !cx.failed() {
        return Err(cx.invalid("axes are required"));
    }
    let (Some(x), Some(axes)) = (x, axes) else {
        return Ok(());
    };
    if cx.failed() {
        return Ok(());
    }
    let shape = cx.ty(x).shape;
    let rank = shape.len() + axes.len();
    let mut ones = vec![false; rank];
    for &a in &axes {
        let d = normalize_axis(a, rank).ok_or_else(|| {
            cx.invalid(format!("axis {a} is out of range for output rank {rank}"))
        })?;
        if std::mem::replace(&mut ones[d], true) {
            return Err(cx.invalid(format!("axes {axes:?} repeat axis {d}")));
        }
    }
    let mut dims = shape.iter();
    let out = ones
        .iter()
        .map(|&one| {
            if one {
                1
            } else {
                dims.next().copied().unwrap_or(1)
            }
        })
        .collect();
    cx.emit_output(Op::Reshape { shape: out }, &[x])
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
