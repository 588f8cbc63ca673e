//! IR graph → e-graph, and extraction back to an IR graph.

use std::collections::HashMap;

use egg::{CostFunction, Extractor, Id, Language as _};
use lutq_ir::{Graph, NodeId, Op};

use crate::OptError;
use crate::analysis::{IrAnalysis, IrEGraph, add_constant, add_op, attr_of, input_leaf};
use crate::lang::IrLang;

/// An e-graph with the roots of the translated graph's outputs.
pub struct Translated {
    pub egraph: IrEGraph,
    /// The e-class of each graph output, in order, with the output's name.
    pub outputs: Vec<(String, Id)>,
}

/// Translates the nodes some output depends on (dead nodes are dropped), in the graph's
/// canonical order, so the e-graph depends only on the graph's structure.
pub fn to_egraph(graph: &Graph) -> Translated {
    let mut analysis = IrAnalysis::default();
    analysis.tables.inputs = graph
        .inputs()
        .iter()
        .map(|&i| (graph.node(i).name.clone(), graph.node(i).ty.clone()))
        .collect();
    let mut egraph = IrEGraph::new(analysis);

    let live = live_nodes(graph);
    let mut class: HashMap<NodeId, Id> = HashMap::new();
    // Readers of each node's tensor: consumer edges plus graph outputs.
    let mut reads: HashMap<NodeId, usize> = HashMap::new();
    for id in graph.topo_order() {
        let node = graph.node(id);
        let is_input = graph.inputs().contains(&id);
        if !live.contains(&id) && !is_input {
            continue;
        }
        let c = match &node.op {
            Op::Input => {
                let k = graph.inputs().iter().position(|&i| i == id).unwrap_or(0);
                egraph.add(input_leaf(k))
            }
            Op::Constant(t) => add_constant(&mut egraph, node.name.clone(), t.clone()),
            op => {
                let inputs = graph.node_inputs(id);
                for i in &inputs {
                    *reads.entry(*i).or_default() += 1;
                }
                let children: Vec<Id> = inputs.iter().map(|i| class[i]).collect();
                add_op(&mut egraph, node.name.clone(), op.clone(), &children)
                    .expect("a valid graph's nodes are well typed")
            }
        };
        class.insert(id, c);
    }
    for o in graph.outputs() {
        *reads.entry(o.node).or_default() += 1;
    }
    for (id, n) in reads {
        if n > 1
            && let crate::analysis::Facts::Value(v) = &mut egraph[class[&id]].data
        {
            v.shared = true;
        }
    }
    egraph.rebuild();
    let outputs = graph
        .outputs()
        .iter()
        .map(|o| (o.name.clone(), class[&o.node]))
        .collect();
    Translated { egraph, outputs }
}

fn live_nodes(graph: &Graph) -> std::collections::HashSet<NodeId> {
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<NodeId> = graph.outputs().iter().map(|o| o.node).collect();
    while let Some(n) = stack.pop() {
        if seen.insert(n) {
            stack.extend(graph.node_inputs(n));
        }
    }
    seen
}

/// The extraction cost: the number of op nodes in the term (inputs, constants and
/// attributes cost 0), counted as a tree, saturating. An average pool counts as two ops
/// (a sum and a division per output), a sum-pool as one.
///
/// Every rule of this crate replaces ops by strictly fewer ops (a BatchNorm and the
/// linear op before it by one linear op, an activation and its producer by one, an
/// Identity by nothing, two Reshapes by one, an average pool by a sum-pool without the
/// division), so the cheapest term is the one with every applicable rewrite applied, and
/// there are no ties between a rewritten and an unrewritten form. Constants are free:
/// folded weights cost no more than the originals.
pub struct OpCount;

impl CostFunction<IrLang> for OpCount {
    type Cost = usize;

    fn cost<C>(&mut self, enode: &IrLang, mut costs: C) -> usize
    where
        C: FnMut(Id) -> usize,
    {
        let own = match enode {
            IrLang::GlobalAveragePool(_) | IrLang::AveragePool(_) => 2,
            n => usize::from(n.is_op()),
        };
        enode.fold(own, |sum, id| sum.saturating_add(costs(id)))
    }
}

/// Extracts the cheapest graph under [`OpCount`]. Inputs keep their order and names,
/// outputs their order and names; every node keeps the name in its attribute entry.
pub fn from_egraph(
    name: &str,
    egraph: &IrEGraph,
    outputs: &[(String, Id)],
) -> Result<Graph, OptError> {
    let extractor = Extractor::new(egraph, OpCount);
    let mut graph = Graph::new(name);
    let mut built: HashMap<Id, NodeId> = HashMap::new();
    let tables = &egraph.analysis.tables;
    let inputs: Vec<NodeId> = tables
        .inputs
        .iter()
        .map(|(n, ty)| graph.add_input(n.clone(), ty.clone()))
        .collect();
    for (out_name, root) in outputs {
        let node = build(egraph, &extractor, &inputs, &mut graph, &mut built, *root)?;
        graph.add_output(out_name.clone(), node)?;
    }
    graph.validate()?;
    Ok(graph)
}

fn build(
    egraph: &IrEGraph,
    extractor: &Extractor<'_, OpCount, IrLang, IrAnalysis>,
    inputs: &[NodeId],
    graph: &mut Graph,
    built: &mut HashMap<Id, NodeId>,
    class: Id,
) -> Result<NodeId, OptError> {
    let class = egraph.find(class);
    if let Some(&n) = built.get(&class) {
        return Ok(n);
    }
    let best = extractor.find_best_node(class).clone();
    let id = match &best {
        IrLang::Input(i) => inputs[i.index()],
        IrLang::Const(c) => {
            let e = egraph.analysis.tables.constant(*c);
            graph.add_constant(e.name.clone(), e.tensor.clone())
        }
        IrLang::Attr(a) => {
            return Err(OptError::Internal(format!(
                "attribute {a} extracted as a tensor"
            )));
        }
        op => {
            let children = op.children();
            let mut ins = Vec::with_capacity(children.len() - 1);
            for &c in &children[1..] {
                ins.push(build(egraph, extractor, inputs, graph, built, c)?);
            }
            let entry = attr_of(egraph, children[0]);
            graph.add_node(entry.name.clone(), entry.op.clone(), &ins)?
        }
    };
    built.insert(class, id);
    Ok(id)
}
