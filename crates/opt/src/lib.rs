//! lutq's float-graph rewrites on e-graphs ([egg]).
//!
//! [`optimize`] translates a [`Graph`] into an e-graph ([`translate::to_egraph`]), runs
//! the rules of [`rules`] to saturation under node, iteration and time limits, and
//! extracts the cheapest equivalent graph ([`translate::from_egraph`]).
//!
//! * **Language** ([`lang`]): one e-node per IR op; its first child is an attribute leaf
//!   that indexes a table holding the exact [`lutq_ir::Op`] and the node's name; constants and
//!   graph inputs are leaves indexing a constant table and the input list.
//! * **Facts** ([`analysis`]): every e-class knows its tensor type, whether it is a
//!   constant (and which) and whether its tensor has more than one reader.
//! * **Rules** ([`rules`]): one table per topic (`bn_fold`, `activation`, `cleanup`,
//!   `pool`, `affine`).
//!   Rules that compute new tensors (folded weights) are custom appliers that add
//!   constants to the table.
//! * **Cost** ([`translate::OpCount`]): the number of op nodes, constants and inputs free.
//!   Every rule removes at least one op, so the extracted graph has every applicable
//!   rewrite applied.
//!
//! The result is deterministic: translation follows the graph's canonical order, tables
//! are interned, egg's containers iterate in insertion order, and extraction never sees
//! a tie between a rewritten and an unrewritten form, so the same graph (however its
//! nodes were added) always gives byte-identical dumps. The one exception is a run
//! stopped by the time limit, which [`OptReport::stop_reason`] shows.
//!
//! Numeric transforms that are not rewrites run after [`optimize`] as named passes
//! ([`Pass`]): cross-layer equalization ([`cle`]).
//!
//! See `docs/opt.md` for the rule list and what is left for later.

pub mod analysis;
pub mod cle;
pub mod int;
pub mod lang;
pub mod rules;
pub mod translate;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

pub use cle::{
    Cle, CleOptions, CleReport, LayerImbalance, Pass, Relu6Policy, equalize, layer_imbalances,
};
use egg::{Runner, SimpleScheduler, StopReason};
pub use int::{IntOptReport, optimize_int};
use lutq_ir::{Graph, IrError};
pub use rules::affine::Kept;

/// Errors of [`optimize`]. All of them are lutq bugs: a rule produced a graph that
/// does not type-check, or extraction went wrong.
#[derive(Debug, thiserror::Error)]
pub enum OptError {
    /// A rewritten graph failed IR validation (a rule bug).
    #[error("the optimized graph is invalid (lutq bug): {0}")]
    Ir(#[from] IrError),
    /// Extraction found something that is not a tensor (a rule bug).
    #[error("internal error (lutq bug): {0}")]
    Internal(String),
}

/// Limits of the equality-saturation run.
#[derive(Clone, Debug)]
pub struct OptOptions {
    pub iter_limit: usize,
    pub node_limit: usize,
    pub time_limit: Duration,
}

impl Default for OptOptions {
    /// Far above what the bundled models need (they saturate in a handful of iterations
    /// with a few thousand e-nodes).
    fn default() -> Self {
        OptOptions {
            iter_limit: 64,
            node_limit: 200_000,
            time_limit: Duration::from_secs(60),
        }
    }
}

/// What [`optimize`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptReport {
    /// How often each rule fired (newly merged e-classes), by rule name, over all
    /// iterations. Rules that never fired are listed with 0.
    pub rules: BTreeMap<String, usize>,
    /// Why the run stopped: `saturated` (every rule applied everywhere it applies), or the
    /// limit that was hit — the graph is still correct then, but may miss rewrites.
    pub stop_reason: String,
    pub saturated: bool,
    pub iterations: usize,
    /// E-nodes in the final e-graph.
    pub egraph_nodes: usize,
    /// Nodes (inputs and constants included) of the graph in and out.
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// BatchNorms left in the graph, with why neither `bn-fold` (into the producer) nor
    /// `bn-fold-forward` (into the consumer) took them.
    pub unfolded_batch_norms: Vec<Kept>,
    /// Per-channel affine ops (Mul / Div / Add / Sub by a constant) left in the graph,
    /// with why neither `affine-into-producer` nor `affine-into-consumer` took them
    /// (e.g. input normalisation before a padded first Conv: its offset is not exact at
    /// the borders).
    pub kept_affine: Vec<Kept>,
}

impl fmt::Display for OptReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "opt: {} after {} iterations, {} e-nodes; nodes {} -> {}",
            self.stop_reason,
            self.iterations,
            self.egraph_nodes,
            self.nodes_before,
            self.nodes_after
        )?;
        for (rule, n) in &self.rules {
            writeln!(f, "  {rule:<22} {n}")?;
        }
        for bn in &self.unfolded_batch_norms {
            writeln!(f, "  batch_norm not folded: {bn}")?;
        }
        for a in &self.kept_affine {
            writeln!(f, "  affine kept: {a}")?;
        }
        Ok(())
    }
}

/// An equality-saturation run with what both passes report of it.
pub(crate) struct Saturated<L: egg::Language, N: egg::Analysis<L>> {
    pub runner: Runner<L, N>,
    /// How often each rule fired, by name, rules that never fired included (0).
    pub fired: BTreeMap<String, usize>,
    pub stop_reason: String,
    pub saturated: bool,
}

/// Runs `rules` on `egraph` under the limits of `options` with the simple scheduler
/// (every rule every iteration), shared by the float and the integer pass.
pub(crate) fn saturate<L, N>(
    egraph: egg::EGraph<L, N>,
    rules: &[egg::Rewrite<L, N>],
    options: &OptOptions,
) -> Saturated<L, N>
where
    L: egg::Language,
    N: egg::Analysis<L> + Default,
{
    let runner = Runner::default()
        .with_egraph(egraph)
        .with_scheduler(SimpleScheduler)
        .with_iter_limit(options.iter_limit)
        .with_node_limit(options.node_limit)
        .with_time_limit(options.time_limit)
        .run(rules);
    let mut fired: BTreeMap<String, usize> =
        rules.iter().map(|r| (r.name.to_string(), 0)).collect();
    for it in &runner.iterations {
        for (name, n) in &it.applied {
            *fired.entry(name.to_string()).or_default() += n;
        }
    }
    let (stop_reason, saturated) = match &runner.stop_reason {
        Some(StopReason::Saturated) => ("saturated".to_string(), true),
        Some(StopReason::IterationLimit(n)) => (format!("iteration limit {n}"), false),
        Some(StopReason::NodeLimit(n)) => (format!("e-node limit {n}"), false),
        Some(StopReason::TimeLimit(s)) => (format!("time limit {s}s"), false),
        Some(StopReason::Other(s)) => (s.clone(), false),
        None => ("not run".to_string(), false),
    };
    Saturated {
        runner,
        fired,
        stop_reason,
        saturated,
    }
}

/// Rewrites `graph` with every rule of [`rules::all`] and returns the extracted graph
/// with a report. The graph's name, inputs and outputs are kept; nodes no output
/// depends on are dropped.
pub fn optimize(graph: &Graph, options: &OptOptions) -> Result<(Graph, OptReport), OptError> {
    let translated = translate::to_egraph(graph);
    let Saturated {
        runner,
        fired,
        stop_reason,
        saturated,
    } = saturate(translated.egraph, &rules::all(), options);
    let mut out = translate::from_egraph(&graph.name, &runner.egraph, &translated.outputs)?;
    let (mut kept_affine, mut unfolded_batch_norms) = rules::affine::explain_kept(&out);
    let lowered = rules::bn_fold::lower_unfolded(&mut out)?;
    let through_layout = rules::bn_fold::fold_through_layout(&mut out)?;
    // Folded through the layout ops (a lowered BatchNorm: either of its halves): no
    // longer left in the graph.
    let folded = |name: &str| {
        through_layout.iter().any(|f| f == name)
            || lowered
                .iter()
                .any(|l| l.name == name && l.any_half_in(&through_layout))
    };
    unfolded_batch_norms.retain(|bn| !folded(&bn.name));
    kept_affine.retain(|a| !folded(&a.name));
    for bn in &mut unfolded_batch_norms {
        if lowered.iter().any(|l| l.name == bn.name) {
            bn.reason
                .push_str("; computed as a per-channel Mul and Add (one integer table with the element-wise ops around it)");
        }
    }
    let mut fired = fired;
    fired.insert("fold-through-layout".into(), through_layout.len());
    let report = OptReport {
        rules: fired,
        stop_reason,
        saturated,
        iterations: runner.iterations.len(),
        egraph_nodes: runner.egraph.total_number_of_nodes(),
        nodes_before: graph.node_count(),
        nodes_after: out.node_count(),
        unfolded_batch_norms,
        kept_affine,
    };
    Ok((out, report))
}
