//! Elementwise ops: activations, PRelu, and the four arithmetic binaries.

use lutq_ir::{Activation, BinaryOp, Op};

use super::{OpDef, no_const};
use crate::error::ImportError;
use crate::import::NodeCx;

pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "Relu",
        convert: |cx| activation(cx, Activation::Relu),
        const_inputs: no_const,
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "Sigmoid",
        convert: |cx| activation(cx, Activation::Sigmoid),
        const_inputs: no_const,
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "HardSwish",
        convert: |cx| activation(cx, Activation::HardSwish),
        const_inputs: no_const,
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "LeakyRelu",
        convert: leaky_relu,
        const_inputs: no_const,
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "HardSigmoid",
        convert: hard_sigmoid,
        const_inputs: no_const,
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "Clip",
        convert: clip,
        const_inputs: |opset| if opset >= 11 { &[1, 2] } else { &[] },
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "PRelu",
        convert: prelu,
        const_inputs: no_const,
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "Add",
        convert: |cx| binary(cx, BinaryOp::Add),
        const_inputs: no_const,
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "Sub",
        convert: |cx| binary(cx, BinaryOp::Sub),
        const_inputs: no_const,
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "Mul",
        convert: |cx| binary(cx, BinaryOp::Mul),
        const_inputs: no_const,
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "Div",
        convert: |cx| binary(cx, BinaryOp::Div),
        const_inputs: no_const,
        ignored_inputs: &[],
    },
];

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
