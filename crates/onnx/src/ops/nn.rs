//! BatchNormalization, Softmax, Dropout, Identity, Constant.

use std::rc::Rc;

use lutq_ir::Op;

use super::{OpDef, no_const, normalize_axis};
use crate::error::{DiagnosticKind, ImportError};
use crate::import::{NodeCx, Value};
use crate::tensor::{ConstValue, TensorIssue, tensor_value};

pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "BatchNormalization",
        convert: batch_norm,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "Softmax",
        convert: softmax,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "Dropout",
        convert: dropout,
        const_inputs: |opset| if opset >= 12 { &[2] } else { &[] },
        ignored_inputs: &[1],
        eval_const: None,
    },
    OpDef {
        op_type: "Identity",
        convert: identity,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: Some(super::shape::eval_reshape),
    },
    OpDef {
        op_type: "Constant",
        convert: constant,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
];

/// BatchNormalization-6/7/9/14/15, inference only: `spatial=0` (before 9), `is_test=0`
/// (before 7), `training_mode=1` (from 14) and the training outputs are unsupported.
fn batch_norm(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let a = cx.attrs();
    let epsilon = a.float_or("epsilon", 1e-5)?;
    let opset = cx.opset();
    let inference = "export the model in inference mode (model.eval() in PyTorch)";
    if opset < 9 && a.int_or("spatial", 1)? == 0 {
        cx.unsupported_attr(
            "spatial",
            "per-activation statistics (spatial=0) are not supported",
            "export with per-channel statistics (spatial=1)",
        );
    }
    if opset < 7 && a.int_or("is_test", 0)? == 0 {
        cx.unsupported_attr(
            "is_test",
            "training mode (is_test=0) is not supported",
            inference,
        );
    }
    if opset >= 14 && a.flag("training_mode", false)? {
        cx.unsupported_attr(
            "training_mode",
            "training mode (training_mode=1) is not supported",
            inference,
        );
    }
    cx.reject_used_outputs(
        1,
        &["running_mean", "running_var", "saved_mean", "saved_var"],
    );
    let roles = ["X", "scale", "B", "input_mean", "input_var"];
    let mut inputs = Vec::with_capacity(5);
    for (slot, role) in roles.iter().enumerate() {
        inputs.push(cx.tensor(slot, role)?);
    }
    let inputs: Option<Vec<_>> = inputs.into_iter().collect();
    match inputs {
        Some(inputs) if !cx.failed() => cx.emit_output(Op::BatchNorm { epsilon }, &inputs),
        _ => Ok(()),
    }
}

/// Softmax. From opset 13 along one axis (default -1). Before 13 (default axis 1) the
/// input is coerced to 2-D `[prod(dims[..axis]), prod(dims[axis..])]` and normalised
/// along the second dim; that is imported as Reshape → Softmax(axis=1) → Reshape, or as
/// one Softmax when the dims after `axis` are all 1 (the two then agree).
fn softmax(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let a = cx.attrs();
    let legacy = cx.opset() < 13;
    let axis = a.int_or("axis", if legacy { 1 } else { -1 })?;
    let x = cx.tensor(0, "input")?;
    let Some(x) = x else {
        return Ok(());
    };
    if cx.failed() {
        return Ok(());
    }
    let shape = cx.ty(x).shape;
    let k = normalize_axis(axis, shape.len()).ok_or_else(|| {
        a.error(
            "axis",
            format!("{axis} is out of range for rank {}", shape.len()),
        )
    })?;
    if !legacy || shape[k + 1..].iter().all(|&d| d == 1) {
        return cx.emit_output(Op::Softmax { axis: k }, &[x]);
    }
    let outer = shape[..k].iter().product();
    let inner = shape[k..].iter().product();
    let flat = cx.emit_aux(
        "coerce_2d",
        Op::Reshape {
            shape: vec![outer, inner],
        },
        &[x],
    )?;
    let sm = cx.emit_aux("softmax", Op::Softmax { axis: 1 }, &[flat])?;
    cx.emit_output(Op::Reshape { shape }, &[sm])
}

/// Dropout, inference only: the identity. Training mode (`is_test=0` before opset 7, a
/// true `training_mode` input from 12) and a used `mask` output are unsupported; `ratio`
/// is irrelevant.
fn dropout(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let inference = "export the model in inference mode (model.eval() in PyTorch)";
    if cx.opset() < 7 && cx.attrs().int_or("is_test", 0)? == 0 {
        cx.unsupported_attr(
            "is_test",
            "training mode (is_test=0) is not supported",
            inference,
        );
    }
    if cx.opset() >= 12
        && let Some(t) = cx.opt_constant(2, "training_mode")
    {
        match t.as_i64() {
            Some([0]) => {}
            Some([_]) => cx.unsupported(
                DiagnosticKind::UnsupportedAttribute,
                "input 2 (training_mode) is true: training mode is not supported".into(),
                inference,
            ),
            _ => return Err(cx.invalid("training_mode must be a boolean scalar")),
        }
    }
    cx.reject_used_outputs(1, &["mask"]);
    let x = cx.tensor(0, "data")?;
    match x {
        Some(x) if !cx.failed() => cx.emit_output(Op::Dropout, &[x]),
        _ => Ok(()),
    }
}

fn identity(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let x = cx.tensor(0, "input")?;
    match x {
        Some(x) if !cx.failed() => cx.emit_output(Op::Identity, &[x]),
        _ => Ok(()),
    }
}

/// Constant-1/9/11/12/13/…: its output is a constant of the import (no IR node unless an
/// op reads it as data).
fn constant(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    const FORMS: [&str; 8] = [
        "value",
        "value_float",
        "value_floats",
        "value_int",
        "value_ints",
        "value_string",
        "value_strings",
        "sparse_value",
    ];
    let a = cx.attrs();
    let present: Vec<&str> = FORMS.into_iter().filter(|f| a.has(f)).collect();
    let [form] = present[..] else {
        return Err(cx.invalid(format!(
            "needs exactly one of the attributes {FORMS:?}, found {present:?}"
        )));
    };
    let out_name = cx.name();
    let value = match form {
        "value" => {
            let t = a
                .tensor("value")?
                .ok_or_else(|| a.error("value", "holds no tensor"))?;
            match tensor_value(t) {
                Ok(v) => Ok(v),
                Err(TensorIssue::Malformed(message)) => {
                    return Err(ImportError::Tensor {
                        name: out_name.to_string(),
                        message,
                    });
                }
                Err(TensorIssue::Unsupported { message, fix }) => {
                    cx.unsupported(
                        DiagnosticKind::UnsupportedType,
                        format!("attribute 'value': {message}"),
                        fix,
                    );
                    return Ok(());
                }
            }
        }
        "value_float" => ConstValue::f32([], vec![a.float_or(form, 0.0)?]),
        "value_floats" => {
            let v = a.floats(form)?.unwrap_or_default().to_vec();
            ConstValue::f32([v.len()], v)
        }
        "value_int" => ConstValue::i64([], vec![a.int_or(form, 0)?]),
        "value_ints" => {
            let v = a.ints(form)?.unwrap_or_default().to_vec();
            ConstValue::i64([v.len()], v)
        }
        _ => {
            cx.unsupported_attr(
                form,
                "string and sparse constants are not supported",
                "use a dense float or integer constant",
            );
            return Ok(());
        }
    };
    let value = value.map_err(|e| cx.invalid(e.to_string()))?;
    cx.set_output(0, Value::Const(Rc::new(value)));
    Ok(())
}
