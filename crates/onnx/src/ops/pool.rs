//! MaxPool, AveragePool, GlobalAveragePool.

use lutq_ir::{Op, Pool};

use super::{OpDef, auto_pad, no_const, window_pads};
use crate::error::{DiagnosticKind, ImportError};
use crate::import::NodeCx;

pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "MaxPool",
        convert: max_pool,
        const_inputs: no_const,
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "AveragePool",
        convert: average_pool,
        const_inputs: no_const,
        ignored_inputs: &[],
    },
    OpDef {
        op_type: "GlobalAveragePool",
        convert: global_average_pool,
        const_inputs: no_const,
        ignored_inputs: &[],
    },
];

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
