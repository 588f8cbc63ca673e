//! Gemm, MatMul.

use lutq_ir::{Gemm, Op};

use super::{OpDef, no_const};
use crate::error::ImportError;
use crate::import::NodeCx;

pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "Gemm",
        convert: gemm,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "MatMul",
        convert: matmul,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
];

/// Gemm-1/6/7/9/11/13: `alpha·A'·B' + beta·C`, C optional from opset 11. The pre-7
/// `broadcast` attribute needs no handling: C broadcasts unidirectionally either way.
fn gemm(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let a = cx.attrs();
    let op = Op::Gemm(Gemm {
        alpha: a.float_or("alpha", 1.0)?,
        beta: a.float_or("beta", 1.0)?,
        trans_a: a.flag("transA", false)?,
        trans_b: a.flag("transB", false)?,
        activation: None,
    });
    let x = cx.tensor(0, "A")?;
    let w = cx.tensor(1, "B")?;
    let c = cx.opt_tensor(2, "C");
    match (x, w) {
        (Some(x), Some(w)) if !cx.failed() => {
            let inputs: Vec<_> = [x, w].into_iter().chain(c).collect();
            cx.emit_output(op, &inputs)
        }
        _ => Ok(()),
    }
}

/// MatMul-1/9/13, numpy semantics.
fn matmul(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let x = cx.tensor(0, "A")?;
    let w = cx.tensor(1, "B")?;
    match (x, w) {
        (Some(x), Some(w)) if !cx.failed() => cx.emit_output(Op::MatMul, &[x, w]),
        _ => Ok(()),
    }
}
