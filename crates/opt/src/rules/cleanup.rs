//! Removing ops that compute nothing.

use egg::{Id, Subst, Var, rewrite as rw};

use super::Rule;
use crate::analysis::IrEGraph;

/// The cleanup rules:
///
/// * `remove-identity`: `Identity(x)` is `x`.
/// * `remove-dropout`: inference-mode `Dropout(x)` is `x`.
/// * `remove-noop-reshape`: a Reshape to the shape `x` already has is `x`.
/// * `merge-reshapes`: `Reshape(Reshape(x))` is one Reshape of `x` to the outer shape
///   (Reshape is a view of the same row-major elements, so only the last shape counts).
pub fn rules() -> Vec<Rule> {
    vec![
        rw!("remove-identity";     "(identity ?a ?x)"            => "?x"),
        rw!("remove-dropout";      "(dropout ?a ?x)"             => "?x"),
        rw!("remove-noop-reshape"; "(reshape ?a ?x)"             => "?x" if same_type("?x")),
        rw!("merge-reshapes";      "(reshape ?a (reshape ?b ?x))" => "(reshape ?a ?x)"),
    ]
}

/// The matched class has the same tensor type as `x`.
fn same_type(x: &str) -> impl Fn(&mut IrEGraph, Id, &Subst) -> bool + use<> {
    let x: Var = x.parse().expect("a pattern variable");
    move |egraph, class, subst| egraph[class].data.value().ty == egraph[subst[x]].data.value().ty
}
