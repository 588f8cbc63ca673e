//! The rewrite rules, one table per topic file. Policy (as in cranelift's
//! `opts/README.md`): a rule only fires where the rewrite is exact in real arithmetic,
//! and it must replace ops by strictly fewer ops, so that extraction
//! ([`crate::translate::OpCount`]) always prefers the rewritten form.

pub mod activation;
pub mod affine;
pub mod bn_fold;
pub mod cleanup;
pub mod pad;
pub mod pool;

use egg::{Id, SearchMatches, Searcher, Subst, Var};

use crate::analysis::{IrAnalysis, IrEGraph};
use crate::lang::IrLang;

/// A rule of this crate.
pub type Rule = egg::Rewrite<IrLang, IrAnalysis>;

/// Every rule, topic by topic.
pub fn all() -> Vec<Rule> {
    let mut rules = bn_fold::rules();
    rules.extend(activation::rules());
    rules.extend(cleanup::rules());
    rules.extend(pool::rules());
    rules.extend(pad::rules());
    rules.extend(affine::rules());
    rules
}

/// A searcher that matches every e-class holding an e-node for which the predicate
/// holds, with an empty substitution; the applier looks at the e-nodes itself. Used
/// where a pattern cannot say it: a pattern has one operator and a fixed arity, while
/// Conv and Gemm come with or without a bias and the affine rules take four operators.
pub(crate) struct ClassesWith(pub fn(&IrLang) -> bool);

impl Searcher<IrLang, IrAnalysis> for ClassesWith {
    fn search_eclass_with_limit(
        &self,
        egraph: &IrEGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, IrLang>> {
        let hit = egraph[eclass].nodes.iter().any(self.0);
        (hit && limit > 0).then(|| SearchMatches {
            eclass,
            substs: vec![Subst::default()],
            ast: None,
        })
    }

    fn vars(&self) -> Vec<Var> {
        vec![]
    }
}

/// A Conv or Gemm e-node.
pub(crate) fn is_linear(n: &IrLang) -> bool {
    matches!(n, IrLang::Conv(_) | IrLang::Gemm(_))
}
