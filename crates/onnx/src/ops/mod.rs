//! ONNX op handlers, one topic per file, each exporting a table of [`OpDef`]s.
//!
//! A handler reads its node through [`NodeCx`]: first everything that can be diagnosed
//! (attribute values, constant operands, used optional outputs), each unsupported feature
//! reported with [`NodeCx::unsupported`]; then, unless [`NodeCx::failed`], it emits IR
//! nodes. Malformed attributes or operands are returned as errors.
//!
//! To add an op: write the handler in the topic file, add a row to its `OPS` table with the
//! input slots that must be constant, and add a test in `tests/ops.rs`.

mod constant;
mod conv;
mod elementwise;
mod linalg;
mod nn;
mod pool;
mod quantize;
mod resize;
mod shape;

use std::rc::Rc;

use crate::error::ImportError;
use crate::import::NodeCx;
use crate::tensor::ConstValue;

/// Evaluates a node whose every present input is a constant of the import (the inputs
/// are given by slot, `None` for empty slots), as tract's `prop_const` and onnx-simplifier
/// do: `Ok(Some(outputs))` makes the node's outputs constants, so it never enters the IR;
/// `Ok(None)` declines (e.g. a result above [`constant::MAX_FOLD_ELEMENTS`] of an op that
/// has an IR form) and the node is converted as usual. Unsupported cases are reported
/// with [`NodeCx::unsupported`] (the outputs are then poisoned), malformed ones returned
/// as errors.
pub(crate) type EvalConst = fn(
    &mut NodeCx<'_, '_>,
    &[Option<Rc<ConstValue>>],
) -> Result<Option<Vec<ConstValue>>, ImportError>;

/// One supported ONNX op (default domain).
pub(crate) struct OpDef {
    pub op_type: &'static str,
    pub convert: fn(&mut NodeCx<'_, '_>) -> Result<(), ImportError>,
    /// The input slots that must be known at import for a given opset version (shape
    /// operands, clip bounds, …). Graph inputs read only there need binding
    /// ([`crate::ImportOptions::constant_inputs`]).
    pub const_inputs: fn(i64) -> &'static [usize],
    /// Input slots whose value the import ignores (Dropout's ratio): graph inputs read only
    /// there are dropped from the imported graph.
    pub ignored_inputs: &'static [usize],
    /// Constant evaluation when every input is known at import (see [`EvalConst`]).
    pub eval_const: Option<EvalConst>,
}

/// For ops without constant operands.
pub(crate) fn no_const(_: i64) -> &'static [usize] {
    &[]
}

const TABLES: &[&[OpDef]] = &[
    conv::OPS,
    pool::OPS,
    elementwise::OPS,
    linalg::OPS,
    shape::OPS,
    nn::OPS,
    constant::OPS,
    resize::OPS,
    quantize::OPS,
];

/// The handler for an op, if supported.
pub(crate) fn lookup(domain: &str, op_type: &str) -> Option<&'static OpDef> {
    if !(domain.is_empty() || domain == "ai.onnx") {
        return None;
    }
    TABLES
        .iter()
        .flat_map(|t| t.iter())
        .find(|d| d.op_type == op_type)
}

/// The supported op types, sorted.
pub fn supported_ops() -> Vec<&'static str> {
    let mut v: Vec<&str> = TABLES
        .iter()
        .flat_map(|t| t.iter())
        .map(|d| d.op_type)
        .collect();
    v.sort_unstable();
    v
}

/// `axis` in `[-rank, rank)` as a non-negative index.
pub(crate) fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// ONNX `auto_pad`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// Reads `auto_pad`; an unknown value is reported and read as `NOTSET`.
pub(crate) fn auto_pad(cx: &mut NodeCx<'_, '_>) -> Result<AutoPad, ImportError> {
    let value = cx.attrs().string("auto_pad")?;
    Ok(match value.unwrap_or("NOTSET") {
        "NOTSET" | "" => AutoPad::NotSet,
        "SAME_UPPER" => AutoPad::SameUpper,
        "SAME_LOWER" => AutoPad::SameLower,
        "VALID" => AutoPad::Valid,
        other => {
            cx.unsupported_attr(
                "auto_pad",
                &format!("value '{other}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID"),
                "use explicit pads",
            );
            AutoPad::NotSet
        }
    })
}

/// Explicit `[top, left, bottom, right]` pads of a 2-D sliding window.
///
/// `SAME_*` pads so that `out = ceil(in / stride)`, splitting the total
/// `max(0, (out - 1)·stride + (kernel - 1)·dilation + 1 - in)` evenly, the odd unit at the
/// end (`SAME_UPPER`) or the beginning (`SAME_LOWER`). `VALID` pads nothing; `NOTSET`
/// uses the `pads` attribute (ONNX order `[x1_begin, x2_begin, x1_end, x2_end]`, which is
/// the IR's order).
pub(crate) fn window_pads(
    auto: AutoPad,
    explicit: Option<[usize; 4]>,
    input: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
) -> [usize; 4] {
    match auto {
        AutoPad::NotSet => explicit.unwrap_or([0; 4]),
        AutoPad::Valid => [0; 4],
        AutoPad::SameUpper | AutoPad::SameLower => {
            let mut pads = [0; 4];
            for d in 0..2 {
                let stride = strides[d].max(1);
                let out = input[d].div_ceil(stride);
                let span = dilations[d] * kernel[d].saturating_sub(1) + 1;
                let total = ((out.saturating_sub(1)) * stride + span).saturating_sub(input[d]);
                let small = total / 2;
                let large = total - small;
                let (begin, end) = if auto == AutoPad::SameUpper {
                    (small, large)
                } else {
                    (large, small)
                };
                pads[d] = begin;
                pads[d + 2] = end;
            }
            pads
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_pads_put_the_odd_unit_at_the_right_end() {
        // 5 wide, kernel 3, stride 2: out 3, total = 2·2 + 3 - 5 = 2 → 1/1.
        let p = window_pads(AutoPad::SameUpper, None, [5, 5], [3, 3], [2, 2], [1, 1]);
        assert_eq!(p, [1, 1, 1, 1]);
        // 32 wide, kernel 2, stride 1: total 1 → upper pads the end, lower the beginning.
        let up = window_pads(AutoPad::SameUpper, None, [32, 32], [2, 2], [1, 1], [1, 1]);
        assert_eq!(up, [0, 0, 1, 1]);
        let low = window_pads(AutoPad::SameLower, None, [32, 32], [2, 2], [1, 1], [1, 1]);
        assert_eq!(low, [1, 1, 0, 0]);
        // Dilation widens the window: kernel 3, dilation 2 → span 5, total 4.
        let d = window_pads(AutoPad::SameUpper, None, [7, 7], [3, 3], [1, 1], [2, 2]);
        assert_eq!(d, [2, 2, 2, 2]);
        // A stride larger than the window can need no padding at all.
        let s = window_pads(AutoPad::SameUpper, None, [6, 6], [1, 1], [3, 3], [1, 1]);
        assert_eq!(s, [0; 4]);
        let v = window_pads(AutoPad::Valid, Some([1; 4]), [6, 6], [3, 3], [1, 1], [1, 1]);
        assert_eq!(v, [0; 4]);
    }

    #[test]
    fn axes_normalize() {
        assert_eq!(normalize_axis(-1, 4), Some(3));
        assert_eq!(normalize_axis(0, 4), Some(0));
        assert_eq!(normalize_axis(4, 4), None);
        assert_eq!(normalize_axis(-5, 4), None);
    }

    #[test]
    fn op_table_has_no_duplicates() {
        let ops = supported_ops();
        let mut dedup = ops.clone();
        dedup.dedup();
        assert_eq!(ops, dedup);
        assert_eq!(ops.len(), 82);
    }
}
