//! Folding explicit zero padding into the convolution that reads it.
//!
//! TensorFlow-style "same" padding exports as `Pad(value = 0)` in front of a Conv
//! without pads (EfficientNet-Lite's `static_padding`, tf2onnx's asymmetric pads).
//! A convolution's own padding taps are zeros too, so `Conv(Pad(x, p), w)` equals
//! `Conv(x, w)` with `p`'s spatial pads added to the Conv's: exact, and one op fewer.
//!
//! * `fold-zero-pad`: fires for a Pad of value 0 (or −0) that pads only the two spatial
//!   axes of an NCHW tensor, with non-negative pads; the Conv may have a bias.

use egg::{Applier, Id, Language as _, PatternAst, Rewrite, Subst, Symbol};
use lutq_ir::Op;

use super::{ClassesWith, Rule};
use crate::analysis::{IrAnalysis, IrEGraph, add_op, attr_of};
use crate::lang::IrLang;

pub fn rules() -> Vec<Rule> {
    vec![
        Rewrite::new(
            "fold-zero-pad",
            ClassesWith(|n| matches!(n, IrLang::Conv(_))),
            FoldZeroPad,
        )
        .unwrap(),
    ]
}

/// The spatial pads `[top, left, bottom, right]` of a zero Pad of an NCHW tensor, if
/// it is one.
fn spatial_zero_pads(op: &Op) -> Option<[usize; 4]> {
    let Op::Pad { pads, value } = op else {
        return None;
    };
    if *value != 0.0 || pads.len() != 8 {
        return None;
    }
    let [n0, c0, t, l, n1, c1, b, r] = pads[..] else {
        return None;
    };
    (n0 == 0 && c0 == 0 && n1 == 0 && c1 == 0).then_some([t, l, b, r])
}

struct FoldZeroPad;

impl Applier<IrLang, IrAnalysis> for FoldZeroPad {
    fn apply_one(
        &self,
        egraph: &mut IrEGraph,
        class: Id,
        _: &Subst,
        _: Option<&PatternAst<IrLang>>,
        _: Symbol,
    ) -> Vec<Id> {
        let convs: Vec<IrLang> = egraph[class]
            .nodes
            .iter()
            .filter(|n| matches!(n, IrLang::Conv(_)))
            .cloned()
            .collect();
        let mut changed = vec![];
        for conv in convs {
            let children = conv.children().to_vec();
            let Some(&x) = children.get(1) else { continue };
            let pads: Vec<(Id, [usize; 4])> = egraph[x]
                .nodes
                .iter()
                .filter(|n| matches!(n, IrLang::Pad(_)))
                .filter_map(|n| {
                    let c = n.children();
                    let p = spatial_zero_pads(&attr_of(egraph, c[0]).op)?;
                    Some((*c.get(1)?, p))
                })
                .collect();
            for (input, [t, l, b, r]) in pads {
                let entry = attr_of(egraph, children[0]);
                let Op::Conv(mut c) = entry.op.clone() else {
                    continue;
                };
                c.pads = [c.pads[0] + t, c.pads[1] + l, c.pads[2] + b, c.pads[3] + r];
                let name = entry.name.clone();
                let mut inputs = children[1..].to_vec();
                inputs[0] = input;
                if let Some(folded) = add_op(egraph, name, Op::Conv(c), &inputs)
                    && egraph.union(class, folded)
                {
                    changed.push(folded);
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_spatial_zero_pads_fold() {
        let pad = |pads: Vec<usize>, value: f32| Op::Pad { pads, value };
        assert_eq!(
            spatial_zero_pads(&pad(vec![0, 0, 1, 2, 0, 0, 3, 4], 0.0)),
            Some([1, 2, 3, 4])
        );
        assert_eq!(
            spatial_zero_pads(&pad(vec![0, 0, 1, 1, 0, 0, 1, 1], -0.0)),
            Some([1, 1, 1, 1])
        );
        // A non-zero value, a padded channel axis or another rank do not fold.
        assert_eq!(
            spatial_zero_pads(&pad(vec![0, 0, 1, 1, 0, 0, 1, 1], 1.0)),
            None
        );
        assert_eq!(
            spatial_zero_pads(&pad(vec![0, 1, 1, 1, 0, 0, 1, 1], 0.0)),
            None
        );
        assert_eq!(spatial_zero_pads(&pad(vec![1, 1, 1, 1], 0.0)), None);
    }
}
