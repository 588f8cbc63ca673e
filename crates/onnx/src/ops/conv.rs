//! Conv.

use lutq_ir::{Conv, Op};

use super::{OpDef, auto_pad, no_const, window_pads};
use crate::attrs::MAX_ATTR_VALUE;
use crate::error::{DiagnosticKind, ImportError};
use crate::import::NodeCx;

pub(crate) const OPS: &[OpDef] = &[OpDef {
    op_type: "Conv",
    convert: conv,
    const_inputs: no_const,
    ignored_inputs: &[],
    eval_const: None,
}];

/// Conv-1/11/22: `X [N,C,H,W]`, `W [M,C/group,kH,kW]`, optional `B [M]`. Only 2-D.
fn conv(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let a = cx.attrs();
    let auto = auto_pad(cx)?;
    let kernel_shape = a.ints("kernel_shape")?;
    let x = cx.tensor(0, "X")?;
    let w = cx.tensor(1, "W")?;
    let b = cx.opt_tensor(2, "B");

    // The spatial rank, from whatever is known: the attribute, the weights, the input.
    let rank = kernel_shape
        .map(|k| k.len())
        .or_else(|| w.map(|w| cx.ty(w).rank().saturating_sub(2)))
        .or_else(|| x.map(|x| cx.ty(x).rank().saturating_sub(2)));
    if let Some(r) = rank
        && r != 2
    {
        cx.unsupported(
            DiagnosticKind::UnsupportedAttribute,
            format!("{r}-D convolution is not supported (only 2-D, NCHW)"),
            "express it as a 2-D convolution (e.g. a 1-D conv as 1×k over an unsqueezed input)",
        );
    }
    let (Some(x), Some(w)) = (x, w) else {
        return Ok(());
    };
    if cx.failed() {
        return Ok(());
    }

    let (xt, wt) = (cx.ty(x), cx.ty(w));
    if xt.rank() != 4 || wt.rank() != 4 {
        return Err(cx.invalid(format!("input {xt} and weights {wt} must both have rank 4")));
    }
    let kernel = [wt.shape[2], wt.shape[3]];
    if let Some(ks) = kernel_shape
        && ks != [kernel[0] as i64, kernel[1] as i64]
    {
        return Err(a.error(
            "kernel_shape",
            format!("{ks:?} contradicts the weights' spatial dims {kernel:?}"),
        ));
    }
    let strides = a.usize_array::<2>("strides", 1)?.unwrap_or([1, 1]);
    let dilations = a.usize_array::<2>("dilations", 1)?.unwrap_or([1, 1]);
    let pads = a.usize_array::<4>("pads", 0)?;
    let group = a.int_or("group", 1)?;
    let group = usize::try_from(group)
        .ok()
        .filter(|&g| (1..=MAX_ATTR_VALUE).contains(&g))
        .ok_or_else(|| a.error("group", format!("must be >= 1, got {group}")))?;
    let pads = window_pads(
        auto,
        pads,
        [xt.shape[2], xt.shape[3]],
        kernel,
        strides,
        dilations,
    );
    let op = Op::Conv(Conv {
        strides,
        pads,
        dilations,
        group,
        activation: None,
    });
    let inputs: Vec<_> = [x, w].into_iter().chain(b).collect();
    cx.emit_output(op, &inputs)
}
