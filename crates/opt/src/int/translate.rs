//! [`IntGraph`] → e-graph, and extraction back to an [`IntGraph`] in schedule order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use egg::{CostFunction, Extractor, Id, Language as _};
use lutq_ir::int::{IntGraph, IntNode, IntOp, IntOutput, Rescale, ValueId};

use super::analysis::{IntAnalysis, IntAttrEntry, IntEGraph, IntFacts, add_op, attr_of};
use super::lang::IntLang;
use crate::OptError;

/// An e-graph with the classes of the translated graph's outputs.
pub struct IntTranslated {
    pub egraph: IntEGraph,
    /// The class of each graph output, in order.
    pub outputs: Vec<Id>,
}

/// Translates every node, in schedule order (a node's `order` is its index). Readers
/// are counted over node inputs and graph outputs; a value with more than one is
/// *shared*.
pub fn to_egraph(graph: &IntGraph) -> IntTranslated {
    let mut egraph = IntEGraph::new(IntAnalysis {
        rounding: graph.rounding,
        ..Default::default()
    });
    let mut class: Vec<Id> = Vec::with_capacity(graph.nodes.len());
    let mut reads = vec![0usize; graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        let inputs: Vec<Id> = node.inputs.iter().map(|v| class[v.index()]).collect();
        for v in &node.inputs {
            reads[v.index()] += 1;
        }
        let entry = IntAttrEntry {
            name: node.name.clone(),
            op: node.op.clone(),
            ty: node.ty.clone(),
            order: i as u32,
        };
        class.push(add_op(&mut egraph, entry, &inputs));
    }
    for o in &graph.outputs {
        reads[o.value.index()] += 1;
    }
    for (i, &n) in reads.iter().enumerate() {
        if n > 1
            && let IntFacts::Value(v) = &mut egraph[class[i]].data
        {
            v.shared = true;
        }
    }
    egraph.rebuild();
    let outputs = graph
        .outputs
        .iter()
        .map(|o| class[o.value.index()])
        .collect();
    IntTranslated { egraph, outputs }
}

/// Cost units of one op; a Multiplier rescale adds [`MULTIPLIER_COST`] per channel.
pub const OP_COST: u64 = 1 << 20;
/// The extra cost of one `Rescale::Multiplier` (a 32×32-bit multiply per element).
pub const MULTIPLIER_COST: u64 = 1;

/// The extraction cost, counted as a tree, saturating: every op (a `requant` included)
/// costs [`OP_COST`], plus [`MULTIPLIER_COST`] for each `Rescale::Multiplier` it holds
/// (per channel for a linear layer); attribute leaves cost 0. So the op count decides
/// first, and among forms with as many ops the one with fewer multipliers wins.
///
/// Every rule of [`super::rules`] removes an op, or keeps the ops and replaces a
/// multiplier by a shift, so the cheapest term has every applicable rewrite applied and
/// a rewritten form never ties with the form it came from.
pub struct IntCost<'a> {
    pub egraph: &'a IntEGraph,
}

impl CostFunction<IntLang> for IntCost<'_> {
    type Cost = u64;

    fn cost<C>(&mut self, enode: &IntLang, mut costs: C) -> u64
    where
        C: FnMut(Id) -> u64,
    {
        let own = match enode {
            IntLang::Attr(_) => 0,
            n => {
                let entry = attr_of(self.egraph, n.children()[0]);
                let multipliers = match &entry.op {
                    IntOp::Linear(l) => l
                        .rescale
                        .iter()
                        .filter(|r| matches!(r, Rescale::Multiplier { .. }))
                        .count() as u64,
                    IntOp::Requant {
                        rescale: Rescale::Multiplier { .. },
                        ..
                    } => 1,
                    _ => 0,
                };
                OP_COST + MULTIPLIER_COST * multipliers
            }
        };
        enode.fold(own, |sum, id| sum.saturating_add(costs(id)))
    }
}

/// Extracts the cheapest program and schedules it: among the nodes whose inputs are
/// computed, the one with the smallest schedule position (`order`, then first visit)
/// comes next, so the original order is kept wherever the rewrites allow. Graph name,
/// inputs and outputs are kept; nodes no output depends on are dropped.
pub fn from_egraph(
    source: &IntGraph,
    egraph: &IntEGraph,
    outputs: &[Id],
) -> Result<IntGraph, OptError> {
    let extractor = Extractor::new(egraph, IntCost { egraph });
    // Depth-first from the outputs: the chosen node of every needed class.
    let mut seq: HashMap<Id, usize> = HashMap::new();
    let mut chosen: Vec<(Id, IntLang)> = Vec::new();
    let mut stack: Vec<Id> = outputs.iter().rev().map(|&c| egraph.find(c)).collect();
    while let Some(c) = stack.pop() {
        if seq.contains_key(&c) {
            continue;
        }
        let best = extractor.find_best_node(c).clone();
        if !best.is_op() {
            return Err(OptError::Internal(format!(
                "integer pass: an attribute was extracted as a value ({best})"
            )));
        }
        seq.insert(c, chosen.len());
        for &child in best.children()[1..].iter().rev() {
            stack.push(egraph.find(child));
        }
        chosen.push((c, best));
    }
    // Kahn's algorithm, ready nodes ordered by (order, first visit).
    let n = chosen.len();
    let mut waiting = vec![0usize; n];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
    let key = |k: usize| {
        let entry = attr_of(egraph, chosen[k].1.children()[0]);
        (entry.order, k)
    };
    for (k, (_, node)) in chosen.iter().enumerate() {
        for child in &node.children()[1..] {
            let j = seq[&egraph.find(*child)];
            waiting[k] += 1;
            readers[j].push(k);
        }
    }
    let mut ready: BinaryHeap<Reverse<(u32, usize)>> = (0..n)
        .filter(|&k| waiting[k] == 0)
        .map(|k| Reverse(key(k)))
        .collect();
    let mut value: Vec<Option<ValueId>> = vec![None; n];
    let mut graph = IntGraph {
        name: source.name.clone(),
        inputs: source.inputs.clone(),
        nodes: Vec::with_capacity(n),
        outputs: Vec::new(),
        rounding: source.rounding,
    };
    while let Some(Reverse((_, k))) = ready.pop() {
        let node = &chosen[k].1;
        let entry = attr_of(egraph, node.children()[0]);
        let inputs = node.children()[1..]
            .iter()
            .map(|c| value[seq[&egraph.find(*c)]].expect("inputs are scheduled first"))
            .collect();
        value[k] = Some(graph.push(IntNode {
            name: entry.name.clone(),
            op: entry.op.clone(),
            inputs,
            ty: entry.ty.clone(),
        }));
        for &r in &readers[k] {
            waiting[r] -= 1;
            if waiting[r] == 0 {
                ready.push(Reverse(key(r)));
            }
        }
    }
    if graph.nodes.len() != n {
        return Err(OptError::Internal(
            "integer pass: the extracted program has a cycle".into(),
        ));
    }
    graph.outputs = source
        .outputs
        .iter()
        .zip(outputs)
        .map(|(o, &c)| IntOutput {
            name: o.name.clone(),
            value: value[seq[&egraph.find(c)]].expect("every output is scheduled"),
        })
        .collect();
    graph.validate().map_err(|e| {
        OptError::Internal(format!(
            "the optimized integer graph is invalid (lutq bug): {e}"
        ))
    })?;
    Ok(graph)
}
