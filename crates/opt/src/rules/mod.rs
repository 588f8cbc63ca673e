//! The rewrite rules, one table per topic file. Policy (as in cranelift's
//! `opts/README.md`): a rule only fires where the rewrite is exact in real arithmetic,
//! and it must replace ops by strictly fewer ops, so that extraction
//! ([`crate::translate::OpCount`]) always prefers the rewritten form.

pub mod activation;
pub mod bn_fold;
pub mod cleanup;
pub mod pool;

use crate::analysis::IrAnalysis;
use crate::lang::IrLang;

/// A rule of this crate.
pub type Rule = egg::Rewrite<IrLang, IrAnalysis>;

/// Every rule, topic by topic.
pub fn all() -> Vec<Rule> {
    let mut rules = bn_fold::rules();
    rules.extend(activation::rules());
    rules.extend(cleanup::rules());
    rules.extend(pool::rules());
    rules
}
