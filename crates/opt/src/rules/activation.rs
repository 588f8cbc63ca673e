//! Fusing activations into the Conv or Gemm that produces their input.

use egg::{Applier, Id, Language as _, PatternAst, Rewrite, Subst, Symbol, Var};
use lutq_ir::{Activation, FusedActivation, Op};

use super::Rule;
use crate::analysis::{IrEGraph, add_op, attr_of};
use crate::lang::IrLang;

/// The activation-fusion rules:
///
/// * `fuse-relu`: `Relu(Conv(…))` / `Relu(Gemm(…))` → the Conv / Gemm with
///   `act=relu`.
/// * `fuse-clip`: `Clip(min=0, max=m)` (`m > 0`: ReLU6 and relatives) likewise with
///   `act=clip(0,m)`; `Clip(min=0)` without a maximum fuses as `act=relu`. Clips with
///   any other minimum are left alone.
///
/// Neither fires when the producer's output has other readers (they need it without
/// the activation, so the producer would be computed twice) or when the producer already
/// carries an activation.
pub fn rules() -> Vec<Rule> {
    vec![
        Rewrite::new("fuse-relu", pattern("(relu ?a ?y)"), FuseActivation::new()).unwrap(),
        Rewrite::new("fuse-clip", pattern("(clip ?a ?y)"), FuseActivation::new()).unwrap(),
    ]
}

fn pattern(s: &str) -> egg::Pattern<IrLang> {
    s.parse().expect("a valid pattern")
}

/// The fused form of an activation op, if it has one.
fn fusable(op: &Op) -> Option<FusedActivation> {
    match *op {
        Op::Activation(Activation::Relu) => Some(FusedActivation::Relu),
        Op::Activation(Activation::Clip {
            min: Some(0.0),
            max,
        }) => match max {
            None => Some(FusedActivation::Relu),
            Some(max) if max > 0.0 => Some(FusedActivation::Clip { max }),
            Some(_) => None,
        },
        _ => None,
    }
}

/// Adds, for every Conv / Gemm e-node in `?y`'s class that has no activation yet, the
/// same op with the activation of `?a` over the same inputs, and merges it with the
/// activation's class.
struct FuseActivation {
    a: Var,
    y: Var,
}

impl FuseActivation {
    fn new() -> Self {
        FuseActivation {
            a: "?a".parse().unwrap(),
            y: "?y".parse().unwrap(),
        }
    }
}

impl Applier<IrLang, crate::analysis::IrAnalysis> for FuseActivation {
    fn apply_one(
        &self,
        egraph: &mut IrEGraph,
        class: Id,
        subst: &Subst,
        _: Option<&PatternAst<IrLang>>,
        _: Symbol,
    ) -> Vec<Id> {
        let Some(act) = fusable(&attr_of(egraph, subst[self.a]).op) else {
            return vec![];
        };
        let y = subst[self.y];
        if egraph[y].data.value().shared {
            return vec![];
        }
        let producers: Vec<IrLang> = egraph[y]
            .nodes
            .iter()
            .filter(|n| matches!(n, IrLang::Conv(_) | IrLang::Gemm(_)))
            .cloned()
            .collect();
        let mut changed = vec![];
        for node in producers {
            let children = node.children();
            let entry = attr_of(egraph, children[0]);
            let mut op = entry.op.clone();
            let slot = match &mut op {
                Op::Conv(c) => &mut c.activation,
                Op::Gemm(g) => &mut g.activation,
                _ => continue,
            };
            if slot.is_some() {
                continue;
            }
            *slot = Some(act);
            let name = entry.name.clone();
            if let Some(fused) = add_op(egraph, name, op, &children[1..])
                && egraph.union(class, fused)
            {
                changed.push(fused);
            }
        }
        changed
    }
}
