//! MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, and ReduceMean / ReduceMax /
//! ReduceSum over the spatial axes of NCHW (a global pool, plus a Reshape for
//! keepdims=0). ReduceSum is the global sum-pool that QDQ exports use to keep a pooled
//! value on a power-of-two grid (the 1/N then lives in the next layer's weights).

use lutq_ir::{Op, Pool};

use super::constant::{self, Red, reduce_axes_13, reduce_axes_18};
use super::{OpDef, auto_pad, no_const, window_pads};
use crate::error::{DiagnosticKind, ImportError};
use crate::import::{NodeCx, Value};

pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "MaxPool",
        convert: max_pool,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "AveragePool",
        convert: average_pool,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "GlobalAveragePool",
        convert: global_average_pool,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "GlobalMaxPool",
        convert: global_max_pool,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "ReduceMean",
        convert: |cx| reduce_spatial(cx, Red::Mean),
        const_inputs: reduce_axes_18,
        ignored_inputs: &[],
        eval_const: Some(|cx, ins| eval_reduce(cx, ins, Red::Mean)),
    },
    OpDef {
        op_type: "ReduceSum",
        convert: |cx| reduce_spatial(cx, Red::Sum),
        const_inputs: reduce_axes_13,
        ignored_inputs: &[],
        eval_const: Some(|cx, ins| constant::eval_reduce(cx, ins, Red::Sum)),
    },
    OpDef {
        op_type: "ReduceMax",
        convert: |cx| reduce_spatial(cx, Red::Max),
        const_inputs: reduce_axes_18,
        ignored_inputs: &[],
        eval_const: Some(|cx, ins| eval_reduce(cx, ins, Red::Max)),
    },
];

fn eval_reduce(
    cx: &mut NodeCx<'_, '_>,
    ins: constant::Inputs<'_>,
    op: Red,
) -> Result<Option<Vec<crate::ConstValue>>, ImportError> {
    let x = constant::input(cx, ins, 0, "data")?;
    let axes = constant::reduce_axes(cx, x.shape().len(), 18)?;
    let keep = cx.attrs().flag("keepdims", true)?;
    Ok(Some(vec![constant::reduce(cx, x, &axes, keep, op)?]))
}

/// Max over the whole plane: a MaxPool whose kernel is the plane.
fn global_max(
    cx: &mut NodeCx<'_, '_>,
    x: lutq_ir::NodeId,
    aux: bool,
) -> Result<lutq_ir::NodeId, ImportError> {
    let shape = cx.ty(x).shape;
    if shape.len() != 4 {
        return Err(cx.invalid(format!("input must be [N, C, H, W], got {shape:?}")));
    }
    let op = Op::MaxPool(Pool::new([shape[2], shape[3]]));
    if aux {
        cx.emit_aux("max", op, &[x])
    } else {
        cx.emit(op, &[x])
    }
}

/// GlobalMaxPool-1/22 (2-D only): a MaxPool with the whole plane as its window.
fn global_max_pool(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let x = cx.tensor(0, "X")?;
    match x {
        Some(x) if !cx.failed() => {
            let y = global_max(cx, x, false)?;
            cx.set_output(0, Value::Tensor(y));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// ReduceMean / ReduceMax-1/11/13/18 of run-time data: only over the spatial axes
/// `[2, 3]` of a rank-4 tensor (GlobalAveragePool, or a plane-sized MaxPool), with a
/// Reshape to `[N, C]` for keepdims=0.
fn reduce_spatial(cx: &mut NodeCx<'_, '_>, op: Red) -> Result<(), ImportError> {
    let x = cx.tensor(0, "data")?;
    let keep = cx.attrs().flag("keepdims", true)?;
    let Some(x) = x else {
        return Ok(());
    };
    let shape = cx.ty(x).shape;
    let axes_input_from = if op == Red::Sum { 13 } else { 18 };
    let axes = constant::reduce_axes(cx, shape.len(), axes_input_from)?;
    if cx.failed() {
        return Ok(());
    }
    if axes.is_empty() {
        cx.set_output(0, Value::Tensor(x));
        return Ok(());
    }
    if shape.len() != 4 || axes != [2, 3] {
        cx.unsupported(
            DiagnosticKind::UnsupportedAttribute,
            format!(
                "reducing axes {axes:?} of a {shape:?} tensor is not supported (only the spatial axes [2, 3] of NCHW)"
            ),
            "reduce over H and W (axes [2, 3] or [-2, -1]) of a rank-4 tensor",
        );
        return Ok(());
    }
    let y = match (op, keep) {
        (Red::Mean, true) => cx.emit(Op::GlobalAveragePool, &[x])?,
        (Red::Mean, false) => cx.emit_aux("mean", Op::GlobalAveragePool, &[x])?,
        (Red::Sum, true) => cx.emit(Op::GlobalSumPool, &[x])?,
        (Red::Sum, false) => cx.emit_aux("sum", Op::GlobalSumPool, &[x])?,
        (_, keep) => global_max(cx, x, !keep)?,
    };
    let y = if keep {
        y
    } else {
        cx.emit(
            Op::Reshape {
                shape: vec![shape[0], shape[1]],
            },
            &[y],
        )?
    };
    cx.set_output(0, Value::Tensor(y));
    Ok(())
}

/// MaxPool-1/8/10/11/12/22. `storage_order` only affects the Indices output, which is
/// unsupported.
fn max_pool(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    cx.reject_used_outputs(1, &["Indices"]);
    match window(cx)? {
        Some((x, pool)) => cx.emit_output(Op::MaxPool(pool), &[x]),
        None => Ok(()),
    }
}

/// AveragePool-1/7/10/11/19/22.
fn average_pool(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    match window(cx)? {
        Some((x, mut pool)) => {
            pool.count_include_pad = cx.attrs().flag("count_include_pad", false)?;
            cx.emit_output(Op::AveragePool(pool), &[x])
        }
        None => Ok(()),
    }
}

/// The input and window shared by both pools; `None` when the node cannot be built.
fn window(cx: &mut NodeCx<'_, '_>) -> Result<Option<(lutq_ir::NodeId, Pool)>, ImportError> {
    let a = cx.attrs();
    let auto = auto_pad(cx)?;
    let kernel_shape = a
        .ints("kernel_shape")?
        .ok_or_else(|| a.error("kernel_shape", "is required"))?;
    let x = cx.tensor(0, "X")?;
    if kernel_shape.len() != 2 {
        cx.unsupported(
            DiagnosticKind::UnsupportedAttribute,
            format!(
                "{}-D pooling is not supported (only 2-D, NCHW)",
                kernel_shape.len()
            ),
            "express it as 2-D pooling (e.g. a 1-D pool as 1×k over an unsqueezed input)",
        );
    }
    let Some(x) = x else {
        return Ok(None);
    };
    if cx.failed() {
        return Ok(None);
    }
    let xt = cx.ty(x);
    if xt.rank() != 4 {
        return Err(cx.invalid(format!(
            "kernel_shape {kernel_shape:?} is 2-D but the input is {xt}"
        )));
    }
    let kernel = a.usize_array::<2>("kernel_shape", 1)?.unwrap_or([1, 1]);
    let strides = a.usize_array::<2>("strides", 1)?.unwrap_or([1, 1]);
    let dilations = a.usize_array::<2>("dilations", 1)?.unwrap_or([1, 1]);
    let pads = a.usize_array::<4>("pads", 0)?;
    let ceil_mode = a.flag("ceil_mode", false)?;
    let mut pool = Pool::new(kernel);
    pool.strides = strides;
    pool.dilations = dilations;
    pool.ceil_mode = ceil_mode;
    pool.pads = window_pads(
        auto,
        pads,
        [xt.shape[2], xt.shape[3]],
        kernel,
        strides,
        dilations,
    );
    Ok(Some((x, pool)))
}

/// GlobalAveragePool-1/22.
fn global_average_pool(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let x = cx.tensor(0, "X")?;
    match x {
        Some(x) if !cx.failed() => cx.emit_output(Op::GlobalAveragePool, &[x]),
        _ => Ok(()),
    }
}
