//! Turning average pools that feed a linear layer into sum pools.

use std::collections::HashSet;

use egg::{Applier, Id, Language as _, PatternAst, Rewrite, Subst, Symbol};
use lutq_ir::{Op, Tensor};

use super::{ClassesWith, Rule, is_linear};
use crate::analysis::{AttrEntry, IrAnalysis, IrEGraph, add_constant, add_op, attr_of, const_of};
use crate::lang::IrLang;

/// How many Reshapes the rule looks through between the pool and the linear layer
/// (`merge-reshapes` leaves at most one; the bound also stops the walk on the cycles
/// `remove-noop-reshape` makes).
const MAX_RESHAPES: usize = 4;

/// The pooling rules:
///
/// * `avgpool-to-sumpool`: `L(Reshape*(GlobalAveragePool(x)))` — `L` a Gemm with
///   constant B (any `trans_a` / `trans_b`, `alpha`, `beta`, C, activation), or a 1×1
///   Conv (stride 1, no padding, group 1) with constant weights, and any number of
///   Reshapes (Flatten is imported as one) in between — becomes
///   `L'(Reshape*(GlobalSumPool(x)))` with `L`'s weights multiplied by `1/N`
///   (`N` = the product of `x`'s spatial dims) and its bias unchanged. A windowed
///   `AveragePool` likewise becomes a `SumPool` with the same windows and `N` = kernel
///   size, where every window has that divisor (no padding or `count_include_pad`, and
///   no partial window from ceil_mode). `L` is linear in its input, so `L'` computes
///   exactly what `L` did (in real arithmetic) and the integer backends never divide
///   (the sum-pool accumulates in i32). The activation of `L`, if any, stays: `L`'s
///   output is unchanged.
///
/// It does not fire when the pool's output, or any Reshape between it and `L`, has
/// another reader (that reader would see a sum instead of a mean), or when `L`'s weights
/// are not a constant, or for an AveragePool whose windows have different divisors.
///
/// The pool is matched from the linear layer (the class that is rewritten), so the
/// searcher is `ClassesWith` rather than a pattern: a pattern has a fixed arity, and Gemm
/// and Conv come with or without a bias.
pub fn rules() -> Vec<Rule> {
    vec![
        Rewrite::new(
            "avgpool-to-sumpool",
            ClassesWith(is_linear),
            AvgPoolToSumPool,
        )
        .unwrap(),
    ]
}

struct AvgPoolToSumPool;

/// An average pool reached from a linear layer's input: the pool's entry, its sum-pool
/// form and divisor, its input class, and the Reshapes between, outermost first.
struct PoolPath {
    pool: AttrEntry,
    sum: Op,
    n: usize,
    x: Id,
    reshapes: Vec<AttrEntry>,
}

/// The sum-pool form of an average pool over `x` and its divisor, where every output
/// has the same divisor: always for GlobalAveragePool; for AveragePool when no window
/// reaches into padding that is left out of the count (no padding, or
/// `count_include_pad`) and ceil_mode adds no partial window.
fn sum_form(egraph: &IrEGraph, op: &Op, x: Id) -> Option<(Op, usize)> {
    let x_ty = &egraph[x].data.value().ty;
    match op {
        Op::GlobalAveragePool => Some((Op::GlobalSumPool, x_ty.shape[2..].iter().product())),
        Op::AveragePool(p) => {
            if !p.count_include_pad && p.pads != [0; 4] {
                return None;
            }
            if p.ceil_mode {
                let floor = lutq_ir::Pool {
                    ceil_mode: false,
                    ..p.clone()
                };
                let a = lutq_ir::infer::infer(&Op::AveragePool(floor), &[x_ty]).ok()?;
                let b = lutq_ir::infer::infer(op, &[x_ty]).ok()?;
                if a != b {
                    return None;
                }
            }
            let sum = lutq_ir::Pool {
                count_include_pad: false,
                ..p.clone()
            };
            Some((Op::SumPool(sum), p.kernel[0] * p.kernel[1]))
        }
        _ => None,
    }
}

/// Every average pool that `class` is (through unshared Reshapes) whose windows all
/// have the same divisor; each class on the way must have a single reader.
fn pool_paths(egraph: &IrEGraph, class: Id) -> Vec<PoolPath> {
    let mut out = vec![];
    let mut seen = HashSet::new();
    walk(egraph, class, &mut vec![], &mut seen, &mut out);
    out
}

fn walk(
    egraph: &IrEGraph,
    class: Id,
    reshapes: &mut Vec<AttrEntry>,
    seen: &mut HashSet<Id>,
    out: &mut Vec<PoolPath>,
) {
    let class = egraph.find(class);
    if !seen.insert(class) || egraph[class].data.value().shared {
        return;
    }
    for node in &egraph[class].nodes {
        let children = node.children();
        match node {
            IrLang::GlobalAveragePool(_) | IrLang::AveragePool(_) => {
                let pool = attr_of(egraph, children[0]).clone();
                if let Some((sum, n)) = sum_form(egraph, &pool.op, children[1]) {
                    out.push(PoolPath {
                        pool,
                        sum,
                        n,
                        x: children[1],
                        reshapes: reshapes.clone(),
                    });
                }
            }
            IrLang::Reshape(_) if reshapes.len() < MAX_RESHAPES => {
                reshapes.push(attr_of(egraph, children[0]).clone());
                walk(egraph, children[1], reshapes, seen, out);
                reshapes.pop();
            }
            _ => {}
        }
    }
}

impl Applier<IrLang, IrAnalysis> for AvgPoolToSumPool {
    fn apply_one(
        &self,
        egraph: &mut IrEGraph,
        class: Id,
        _: &Subst,
        _: Option<&PatternAst<IrLang>>,
        _: Symbol,
    ) -> Vec<Id> {
        let linear: Vec<IrLang> = egraph[class]
            .nodes
            .iter()
            .filter(|n| matches!(n, IrLang::Gemm(_) | IrLang::Conv(_)))
            .cloned()
            .collect();
        let mut changed = vec![];
        for node in linear {
            let children = node.children();
            let entry = attr_of(egraph, children[0]).clone();
            if !foldable(&entry.op) {
                continue;
            }
            for path in pool_paths(egraph, children[1]) {
                if let Some(folded) = fold(egraph, &entry, children, &path)
                    && egraph.union(class, folded)
                {
                    changed.push(folded);
                }
            }
        }
        changed
    }
}

/// Whether `op` is a Gemm or a 1×1 Conv with stride 1, no padding and one group.
fn foldable(op: &Op) -> bool {
    match op {
        Op::Gemm(_) => true,
        Op::Conv(c) => c.strides == [1, 1] && c.pads == [0; 4] && c.group == 1,
        _ => false,
    }
}

/// Adds `L'(Reshape*(SumPool(x)))` for the linear node `entry` over `children`;
/// `None` where the fold does not apply.
fn fold(egraph: &mut IrEGraph, entry: &AttrEntry, children: &[Id], path: &PoolPath) -> Option<Id> {
    let w = const_of(egraph, children[2])?.clone();
    if matches!(entry.op, Op::Conv(_)) && w.tensor.shape()[2..] != [1, 1] {
        return None;
    }
    let n = path.n;
    if n == 0 {
        return None;
    }
    let scaled: Vec<f32> = w.tensor.as_f32()?.iter().map(|&v| v / n as f32).collect();
    let scaled = Tensor::f32(w.tensor.shape(), scaled).ok()?;

    let mut y = add_op(egraph, path.pool.name.clone(), path.sum.clone(), &[path.x])?;
    for r in path.reshapes.iter().rev() {
        y = add_op(egraph, r.name.clone(), r.op.clone(), &[y])?;
    }
    let w_id = add_constant(egraph, format!("{}+{}", w.name, path.pool.name), scaled);
    let mut inputs = vec![y, w_id];
    inputs.extend_from_slice(&children[3..]);
    add_op(egraph, entry.name.clone(), entry.op.clone(), &inputs)
}
