//! Elementwise ops: activations and unary math (each an [`Activation`], a pure scalar
//! function), PRelu, the broadcasting binaries (Add, Sub, Mul, Div, Pow) and the n-ary
//! Max, Min, Sum, Mean (folded to chains of binaries). Each is also evaluated on
//! constants.

use lutq_ir::{Activation, BinaryOp, Op};

use super::constant::{self, Bin};
use super::{EvalConst, OpDef, no_const};
use crate::error::{DiagnosticKind, ImportError};
use crate::import::{NodeCx, Value};
use crate::tensor::{ConstData, ConstValue};

/// A row for an activation without attributes.
const fn act(
    op_type: &'static str,
    convert: fn(&mut NodeCx<'_, '_>) -> Result<(), ImportError>,
    eval: EvalConst,
) -> OpDef {
    OpDef {
        op_type,
        convert,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: Some(eval),
    }
}

pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "Relu",
        convert: |cx| activation(cx, Activation::Relu),
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: Some(|cx, ins| constant::eval_activation(cx, ins, Activation::Relu)),
    },
    OpDef {
        op_type: "Sigmoid",
        convert: |cx| activation(cx, Activation::Sigmoid),
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: Some(|cx, ins| constant::eval_activation(cx, ins, Activation::Sigmoid)),
    },
    OpDef {
        op_type: "HardSwish",
        convert: |cx| activation(cx, Activation::HardSwish),
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: Some(|cx, ins| constant::eval_activation(cx, ins, Activation::HardSwish)),
    },
    OpDef {
        op_type: "LeakyRelu",
        convert: leaky_relu,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "HardSigmoid",
        convert: hard_sigmoid,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "Clip",
        convert: clip,
        const_inputs: |opset| if opset >= 11 { &[1, 2] } else { &[] },
        ignored_inputs: &[],
        // Integer constants only (QCDQ weights); float constants convert as usual.
        eval_const: Some(super::quantize::eval_clip_ints),
    },
    OpDef {
        op_type: "PRelu",
        convert: prelu,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "Add",
        convert: |cx| binary(cx, BinaryOp::Add),
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: Some(|cx, ins| constant::eval_binary(cx, ins, Bin::Add)),
    },
    OpDef {
        op_type: "Sub",
        convert: |cx| binary(cx, BinaryOp::Sub),
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: Some(|cx, ins| constant::eval_binary(cx, ins, Bin::Sub)),
    },
    OpDef {
        op_type: "Mul",
        convert: |cx| binary(cx, BinaryOp::Mul),
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: Some(|cx, ins| constant::eval_binary(cx, ins, Bin::Mul)),
    },
    OpDef {
        op_type: "Div",
        convert: |cx| binary(cx, BinaryOp::Div),
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: Some(|cx, ins| constant::eval_binary(cx, ins, Bin::Div)),
    },
    act("Pow", pow, |cx, ins| {
        constant::eval_binary(cx, ins, Bin::Pow)
    }),
    act(
        "Max",
        |cx| variadic(cx, BinaryOp::Max, false),
        |cx, ins| constant::eval_variadic(cx, ins, Bin::Max, false),
    ),
    act(
        "Min",
        |cx| variadic(cx, BinaryOp::Min, false),
        |cx, ins| constant::eval_variadic(cx, ins, Bin::Min, false),
    ),
    act(
        "Sum",
        |cx| variadic(cx, BinaryOp::Add, false),
        |cx, ins| constant::eval_variadic(cx, ins, Bin::Add, false),
    ),
    act(
        "Mean",
        |cx| variadic(cx, BinaryOp::Add, true),
        |cx, ins| constant::eval_variadic(cx, ins, Bin::Add, true),
    ),
    act(
        "Tanh",
        |cx| activation(cx, Activation::Tanh),
        |cx, ins| constant::eval_activation(cx, ins, Activation::Tanh),
    ),
    act(
        "Exp",
        |cx| activation(cx, Activation::Exp),
        |cx, ins| constant::eval_activation(cx, ins, Activation::Exp),
    ),
    act(
        "Erf",
        |cx| activation(cx, Activation::Erf),
        |cx, ins| constant::eval_activation(cx, ins, Activation::Erf),
    ),
    act(
        "Softplus",
        |cx| activation(cx, Activation::Softplus),
        |cx, ins| constant::eval_activation(cx, ins, Activation::Softplus),
    ),
    act(
        "Neg",
        |cx| activation(cx, Activation::Neg),
        |cx, ins| constant::eval_activation(cx, ins, Activation::Neg),
    ),
    act(
        "Abs",
        |cx| activation(cx, Activation::Abs),
        |cx, ins| constant::eval_activation(cx, ins, Activation::Abs),
    ),
    act(
        "Sqrt",
        |cx| activation(cx, Activation::Sqrt),
        |cx, ins| constant::eval_activation(cx, ins, Activation::Sqrt),
    ),
    act(
        "Reciprocal",
        |cx| activation(cx, Activation::Reciprocal),
        |cx, ins| constant::eval_activation(cx, ins, Activation::Reciprocal),
    ),
    act(
        "Log",
        |cx| activation(cx, Activation::Log),
        |cx, ins| constant::eval_activation(cx, ins, Activation::Log),
    ),
    act(
        "Floor",
        |cx| activation(cx, Activation::Floor),
        |cx, ins| constant::eval_activation(cx, ins, Activation::Floor),
    ),
    act(
        "Ceil",
        |cx| activation(cx, Activation::Ceil),
        |cx, ins| constant::eval_activation(cx, ins, Activation::Ceil),
    ),
    act(
        "Round",
        |cx| activation(cx, Activation::Round),
        |cx, ins| constant::eval_activation(cx, ins, Activation::Round),
    ),
    OpDef {
        op_type: "Gelu",
        convert: gelu,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "Elu",
        convert: elu,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "Selu",
        convert: selu,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
];

/// Gelu-20: `approximate` none or tanh.
fn gelu(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let tanh = match cx.attrs().string("approximate")?.unwrap_or("none") {
        "none" => false,
        "tanh" => true,
        other => {
            cx.unsupported_attr(
                "approximate",
                &format!("'{other}' is not one of none, tanh"),
                "use approximate=none or tanh",
            );
            false
        }
    };
    activation(cx, Activation::Gelu { tanh })
}

/// Elu-1/6/22, `alpha` default 1.
fn elu(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let alpha = cx.attrs().float_or("alpha", 1.0)?;
    activation(cx, Activation::Elu { alpha })
}

/// Selu-1/6/22, defaults `alpha` 1.67326…, `gamma` 1.05070….
fn selu(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let a = cx.attrs();
    let alpha = a.float_or("alpha", 1.673_263_2)?;
    let gamma = a.float_or("gamma", 1.050_701)?;
    activation(cx, Activation::Selu { alpha, gamma })
}

/// Pow-7/12/13/15: any exponent operand; an integer constant exponent is converted to
/// f32.
fn pow(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let x = cx.tensor(0, "X")?;
    let y = match cx.input_value(1) {
        Some(Value::Const(c)) if c.as_f32().is_none() => {
            let data: Vec<f32> = match c.data() {
                ConstData::I64(v) => v.iter().map(|&a| a as f32).collect(),
                ConstData::Bool(v) => v.iter().map(|&a| a as u8 as f32).collect(),
                ConstData::F32(v) => v.clone(),
            };
            let f =
                ConstValue::f32(c.shape().to_vec(), data).map_err(|e| cx.invalid(e.to_string()))?;
            cx.constant_node("Y", &f)
        }
        _ => cx.tensor(1, "Y")?,
    };
    match (x, y) {
        (Some(x), Some(y)) if !cx.failed() => cx.emit_output(Op::Binary(BinaryOp::Pow), &[x, y]),
        _ => Ok(()),
    }
}

/// Max-8/12/13, Min, Sum-8/13, Mean: numpy broadcasting over any number of inputs, as a
/// chain of binaries (`((a ∘ b) ∘ c) …`); Mean divides the sum by the count. One input is
/// the same tensor.
fn variadic(cx: &mut NodeCx<'_, '_>, op: BinaryOp, mean: bool) -> Result<(), ImportError> {
    if cx.opset() < 8 && cx.input_count() > 1 {
        cx.unsupported(
            DiagnosticKind::UnsupportedAttribute,
            format!(
                "{} before opset 8 (no broadcasting) is not supported",
                cx.op_type()
            ),
            "convert the model to opset 8 or later",
        );
    }
    let mut inputs = Vec::with_capacity(cx.input_count());
    for slot in 0..cx.input_count() {
        if cx.input_name(slot).is_none() {
            return Err(cx.invalid(format!("input {slot} has an empty name")));
        }
        inputs.push(cx.tensor(slot, "data_0")?);
    }
    let Some(inputs) = inputs.into_iter().collect::<Option<Vec<_>>>() else {
        return Ok(());
    };
    if cx.failed() {
        return Ok(());
    }
    let Some((&first, rest)) = inputs.split_first() else {
        return Err(cx.invalid("needs at least one input"));
    };
    let n = inputs.len();
    let mut acc = first;
    for (i, &x) in rest.iter().enumerate() {
        let last = i + 2 == n && !mean;
        acc = if last {
            cx.emit(Op::Binary(op), &[acc, x])?
        } else {
            cx.emit_aux(
                &format!("{}{}", op_suffix(op), i + 1),
                Op::Binary(op),
                &[acc, x],
            )?
        };
    }
    if mean && n > 1 {
        let count = ConstValue::f32([], vec![n as f32]).map_err(|e| cx.invalid(e.to_string()))?;
        let Some(c) = cx.constant_node("count", &count) else {
            return Ok(());
        };
        acc = cx.emit(Op::Binary(BinaryOp::Div), &[acc, c])?;
    }
    cx.set_output(0, Value::Tensor(acc));
    Ok(())
}

fn op_suffix(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Max => "max",
        BinaryOp::Min => "min",
        _ => "add",
    }
}

fn activation(cx: &mut NodeCx<'_, '_>, act: Activation) -> Result<(), ImportError> {
    let x = cx.tensor(0, "X")?;
    match x {
        Some(x) if !cx.failed() => cx.emit_output(Op::Activation(act), &[x]),
        _ => Ok(()),
    }
}

/// LeakyRelu-1/6/16, `alpha` default 0.01.
fn leaky_relu(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let alpha = cx.attrs().float_or("alpha", 0.01)?;
    activation(cx, Activation::LeakyRelu { alpha })
}

/// HardSigmoid-1/6/22, `alpha` 0.2, `beta` 0.5.
fn hard_sigmoid(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let a = cx.attrs();
    let alpha = a.float_or("alpha", 0.2)?;
    let beta = a.float_or("beta", 0.5)?;
    activation(cx, Activation::HardSigmoid { alpha, beta })
}

/// Clip: bounds are attributes before opset 11 (Clip-6), optional constant scalar inputs
/// from opset 11 (possibly empty names). A missing bound is open.
fn clip(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    if cx.opset() >= 11 && super::quantize::clip_quantized(cx)?.is_some() {
        return Ok(());
    }
    let (min, max) = if cx.opset() < 11 {
        let a = cx.attrs();
        (a.float("min")?, a.float("max")?)
    } else {
        let min = cx.opt_constant(1, "min");
        let max = cx.opt_constant(2, "max");
        (
            min.map(|c| scalar_f32(cx, &c, "min")).transpose()?,
            max.map(|c| scalar_f32(cx, &c, "max")).transpose()?,
        )
    };
    activation(cx, Activation::Clip { min, max })
}

/// The single f32 element of a scalar (or one-element) constant.
pub(crate) fn scalar_f32(
    cx: &NodeCx<'_, '_>,
    c: &crate::ConstValue,
    role: &str,
) -> Result<f32, ImportError> {
    match c.as_f32() {
        Some([v]) => Ok(*v),
        _ => Err(cx.invalid(format!(
            "{role} must be a single float, got {} of shape {:?}",
            c.data().type_name(),
            c.shape()
        ))),
    }
}

/// PRelu. Before opset 7 a slope of shape `[C]` is per channel (axis 1); it is reshaped
/// to `[C, 1, …]` so that numpy broadcasting means the same.
fn prelu(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let x = cx.tensor(0, "X")?;
    let x_shape = x.map(|x| cx.ty(x).shape);
    let slope_shape = cx.peek_shape(1);
    let slope = match (&x_shape, slope_shape) {
        (Some(xs), Some(ss)) if cx.opset() < 7 && xs.len() > 2 && ss == [xs[1]] && xs[1] != 1 => {
            let mut shape = vec![xs[1]];
            shape.resize(xs.len() - 1, 1);
            cx.tensor_reshaped(1, "slope", shape)?
        }
        _ => cx.tensor(1, "slope")?,
    };
    match (x, slope) {
        (Some(x), Some(s)) if !cx.failed() => cx.emit_output(Op::PRelu, &[x, s]),
        _ => Ok(()),
    }
}

/// Add/Sub/Mul/Div with numpy broadcasting (opset >= 7). Before opset 7, `broadcast=1`
/// with an `axis` aligns B's dims at that axis of A; B is reshaped with trailing ones so
/// numpy broadcasting means the same.
fn binary(cx: &mut NodeCx<'_, '_>, op: BinaryOp) -> Result<(), ImportError> {
    let legacy_axis = if cx.opset() < 7 {
        let a = cx.attrs();
        let broadcast = a.flag("broadcast", false)?;
        if broadcast { a.int("axis")? } else { None }
    } else {
        None
    };
    let x = cx.tensor(0, "A")?;
    let mut b_shape = None;
    if let (Some(axis), Some(x), Some(yshape)) = (legacy_axis, x, cx.peek_shape(1)) {
        let xt = cx.ty(x);
        let axis = super::normalize_axis(axis, xt.rank()).ok_or_else(|| {
            cx.attrs()
                .error("axis", format!("{axis} is out of range for {xt}"))
        })?;
        let trailing = xt.rank().checked_sub(axis + yshape.len()).ok_or_else(|| {
            cx.attrs().error(
                "axis",
                format!("B {yshape:?} does not fit A {xt} at axis {axis}"),
            )
        })?;
        if trailing > 0 {
            let mut shape = yshape;
            shape.resize(shape.len() + trailing, 1);
            b_shape = Some(shape);
        }
    }
    let y = match b_shape {
        Some(shape) => cx.tensor_reshaped(1, "B", shape)?,
        None => cx.tensor(1, "B")?,
    };
    match (x, y) {
        (Some(x), Some(y)) if !cx.failed() => cx.emit_output(Op::Binary(op), &[x, y]),
        _ => Ok(()),
    }
}
