//! The integer e-graph pass: requantization and shift fusion on an [`IntGraph`].
//!
//! [`optimize_int`] translates the program into an e-graph ([`translate::to_egraph`]:
//! one e-node per op, its parameters, output type and name in an attribute table as in
//! the float pass), runs the rules of [`rules`] under the limits of [`OptOptions`],
//! extracts the cheapest equivalent program ([`translate::IntCost`]: ops first, then
//! `Multiplier` rescales) and schedules it in the original order wherever the rewrites
//! allow ([`translate::from_egraph`]). The result passes [`IntGraph::validate`].
//!
//! * **Language** ([`lang`]): `quantize_input`, `linear` (conv and dense), `add`,
//!   `concat`, `max_pool`, `sum_pool`, `requant`, `reshape`; the first child of every op
//!   is its attribute leaf.
//! * **Facts** ([`analysis`]): the value type, a proven value range and whether the value
//!   has more than one reader.
//! * **Rules** ([`rules`]): each bit-exact under the numeric contract, proved in its doc
//!   comment; `merge-left-shifts`, `requant-into-linear`, `requant-into-add`,
//!   `requant-into-sumpool`, `identity-requant`, `pot-multiplier-to-shift`,
//!   `align-add-operand`.
//!
//! Deterministic: translation follows the schedule, the attribute table is interned,
//! egg iterates in insertion order, extraction has no ties between a rewritten form and
//! the one it came from, and scheduling breaks ties by position. A run stopped by the
//! time limit is the exception; the report says so.

pub mod analysis;
pub mod lang;
pub mod rules;
pub mod translate;

use std::collections::BTreeMap;
use std::fmt;

use lutq_ir::int::{IntGraph, IntOp, Rescale};

use crate::{OptError, OptOptions, Saturated, saturate};

/// What [`optimize_int`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntOptReport {
    /// How often each rule fired (new e-class merges), by rule name, over all
    /// iterations; rules that never fired are listed with 0.
    pub rules: BTreeMap<String, usize>,
    /// `saturated`, or the limit that stopped the run (the program is still exact then,
    /// but may miss rewrites).
    pub stop_reason: String,
    pub saturated: bool,
    pub iterations: usize,
    /// E-nodes in the final e-graph.
    pub egraph_nodes: usize,
    /// Nodes of the program in and out.
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// `requant` nodes in and out.
    pub requants_before: usize,
    pub requants_after: usize,
    /// `Rescale::Multiplier`s (per channel) in and out.
    pub multipliers_before: usize,
    pub multipliers_after: usize,
}

impl fmt::Display for IntOptReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "opt-int: {} after {} iterations, {} e-nodes; nodes {} -> {}, requants {} -> {}, \
             multipliers {} -> {}",
            self.stop_reason,
            self.iterations,
            self.egraph_nodes,
            self.nodes_before,
            self.nodes_after,
            self.requants_before,
            self.requants_after,
            self.multipliers_before,
            self.multipliers_after
        )?;
        for (rule, n) in &self.rules {
            writeln!(f, "  {rule:<24} {n}")?;
        }
        Ok(())
    }
}

fn count(graph: &IntGraph) -> (usize, usize) {
    let requants = graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, IntOp::Requant { .. }))
        .count();
    let multipliers = graph
        .nodes
        .iter()
        .map(|n| match &n.op {
            IntOp::Linear(l) => l
                .rescale
                .iter()
                .filter(|r| matches!(r, Rescale::Multiplier { .. }))
                .count(),
            IntOp::Requant {
                rescale: Rescale::Multiplier { .. },
                ..
            } => 1,
            _ => 0,
        })
        .sum();
    (requants, multipliers)
}

/// Rewrites `graph` with every rule of [`rules::rules`] and returns the extracted
/// program (valid, same name, inputs and outputs, node names kept; nodes no output
/// depends on are dropped) with a report.
///
/// Errors are lutq bugs: the input must be a valid graph, and a rule that produced an
/// invalid one is reported as [`OptError::Internal`].
pub fn optimize_int(
    graph: &IntGraph,
    options: &OptOptions,
) -> Result<(IntGraph, IntOptReport), OptError> {
    graph.validate().map_err(|e| {
        OptError::Internal(format!(
            "optimize_int was given an invalid integer graph: {e}"
        ))
    })?;
    let translated = translate::to_egraph(graph);
    let Saturated {
        runner,
        fired,
        stop_reason,
        saturated,
    } = saturate(translated.egraph, &rules::rules(), options);
    let out = translate::from_egraph(graph, &runner.egraph, &translated.outputs)?;
    let (requants_before, multipliers_before) = count(graph);
    let (requants_after, multipliers_after) = count(&out);
    let report = IntOptReport {
        rules: fired,
        stop_reason,
        saturated,
        iterations: runner.iterations.len(),
        egraph_nodes: runner.egraph.total_number_of_nodes(),
        nodes_before: graph.nodes.len(),
        nodes_after: out.nodes.len(),
        requants_before,
        requants_after,
        multipliers_before,
        multipliers_after,
    };
    Ok((out, report))
}
