//! The graph: ops as petgraph nodes, tensors as edges.
//!
//! Every node produces exactly one tensor, whose static type is stored on the node. An edge
//! `a → b` with weight `slot` says that `a`'s tensor is input number `slot` of `b`; a
//! tensor used twice by one node has two edges. Constants are nodes too
//! ([`Op::Constant`]), so weights are owned by the graph and every input is an edge.

use std::collections::BTreeMap;

use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use serde::{Deserialize, Serialize};

use crate::IrError;
use crate::infer::infer;
use crate::op::Op;
use crate::tensor::{Tensor, TensorType};

/// Identifies a node (and so the tensor it produces) within one graph.
pub type NodeId = NodeIndex<u32>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The name the model gave this node (ONNX node name, or tensor name for graph inputs
    /// and constants); used in diagnostics and as a `;` comment in dumps.
    pub name: String,
    pub op: Op,
    /// Type of the tensor this node produces.
    pub ty: TensorType,
}

/// A named graph output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub name: String,
    pub node: NodeId,
}

/// A dataflow graph of ops over statically typed tensors. Always acyclic and well typed:
/// the builder methods infer and check types as nodes are added.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Graph {
    pub name: String,
    graph: StableDiGraph<Node, usize>,
    inputs: Vec<NodeId>,
    outputs: Vec<Output>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            graph: StableDiGraph::default(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Adds a graph input of the given type.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> NodeId {
        let id = self.graph.add_node(Node {
            name: name.into(),
            op: Op::Input,
            ty,
        });
        self.inputs.push(id);
        id
    }

    /// Adds a constant tensor.
    pub fn add_constant(&mut self, name: impl Into<String>, tensor: Tensor) -> NodeId {
        let ty = tensor.ty();
        self.graph.add_node(Node {
            name: name.into(),
            op: Op::Constant(tensor),
            ty,
        })
    }

    /// Adds an op node reading `inputs` (in slot order), inferring and checking its type.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[NodeId],
    ) -> Result<NodeId, IrError> {
        let name = name.into();
        if matches!(op, Op::Input | Op::Constant(_)) {
            return Err(IrError::InvalidNode {
                node: name,
                op: op.name(),
                message: "use add_input / add_constant".into(),
            });
        }
        let mut types = Vec::with_capacity(inputs.len());
        for &i in inputs {
            types.push(&self.try_node(i)?.ty);
        }
        let ty = infer(&op, &types).map_err(|message| IrError::InvalidNode {
            node: name.clone(),
            op: op.name(),
            message,
        })?;
        let id = self.graph.add_node(Node { name, op, ty });
        for (slot, &i) in inputs.iter().enumerate() {
            self.graph.add_edge(i, id, slot);
        }
        Ok(id)
    }

    /// Marks a node's tensor as a graph output.
    pub fn add_output(&mut self, name: impl Into<String>, node: NodeId) -> Result<(), IrError> {
        self.try_node(node)?;
        self.outputs.push(Output {
            name: name.into(),
            node,
        });
        Ok(())
    }

    fn try_node(&self, id: NodeId) -> Result<&Node, IrError> {
        self.graph
            .node_weight(id)
            .ok_or(IrError::NoSuchNode(id.index()))
    }

    /// The node with this id. Panics on an id from another graph or a removed node: ids
    /// only come from this graph's own methods.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.graph[id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.graph[id]
    }

    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[Output] {
        &self.outputs
    }

    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    /// All node ids, in index order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.graph.node_indices()
    }

    /// The producers of `id`'s inputs, in slot order.
    pub fn node_inputs(&self, id: NodeId) -> Vec<NodeId> {
        let mut edges: Vec<(usize, NodeId)> = self
            .graph
            .edges_directed(id, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        edges.sort_unstable();
        edges.into_iter().map(|(_, src)| src).collect()
    }

    /// Input types of `id`, in slot order.
    pub fn input_types(&self, id: NodeId) -> Vec<&TensorType> {
        self.node_inputs(id)
            .into_iter()
            .map(|i| &self.graph[i].ty)
            .collect()
    }

    /// Nodes that read `id`'s tensor, each once, in index order.
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        let mut users: Vec<NodeId> = self
            .graph
            .neighbors_directed(id, Direction::Outgoing)
            .collect();
        users.sort_unstable();
        users.dedup();
        users
    }

    /// The constant tensor produced by `id`, if it is a constant node.
    pub fn constant(&self, id: NodeId) -> Option<&Tensor> {
        match &self.graph[id].op {
            Op::Constant(t) => Some(t),
            _ => None,
        }
    }

    /// Makes every reader of `old` (nodes and graph outputs) read `new` instead. The types
    /// must be equal, so the graph stays well typed.
    pub fn replace_all_uses(&mut self, old: NodeId, new: NodeId) -> Result<(), IrError> {
        let (old_ty, new_ty) = (&self.try_node(old)?.ty, &self.try_node(new)?.ty);
        if old_ty != new_ty {
            return Err(IrError::TypeMismatch {
                node: self.graph[old].name.clone(),
                expected: old_ty.clone(),
                actual: new_ty.clone(),
            });
        }
        let uses: Vec<_> = self
            .graph
            .edges_directed(old, Direction::Outgoing)
            .map(|e| (e.id(), e.target(), *e.weight()))
            .collect();
        for (edge, target, slot) in uses {
            self.graph.remove_edge(edge);
            self.graph.add_edge(new, target, slot);
        }
        for out in &mut self.outputs {
            if out.node == old {
                out.node = new;
            }
        }
        Ok(())
    }

    /// Removes a node nobody reads. Fails if it is still used or is a graph input.
    pub fn remove_node(&mut self, id: NodeId) -> Result<Node, IrError> {
        let node = self.try_node(id)?;
        let used = self
            .graph
            .neighbors_directed(id, Direction::Outgoing)
            .next()
            .is_some()
            || self.outputs.iter().any(|o| o.node == id)
            || self.inputs.contains(&id);
        if used {
            return Err(IrError::NodeInUse(node.name.clone()));
        }
        Ok(self.graph.remove_node(id).expect("checked above"))
    }

    /// Removes every node that no graph output depends on (graph inputs are kept).
    /// Returns how many were removed.
    pub fn remove_dead_nodes(&mut self) -> usize {
        let live: std::collections::HashSet<NodeId> = self.reachable_from_outputs();
        let dead: Vec<NodeId> = self
            .graph
            .node_indices()
            .filter(|id| !live.contains(id) && !self.inputs.contains(id))
            .collect();
        for &id in &dead {
            self.graph.remove_node(id);
        }
        dead.len()
    }

    fn reachable_from_outputs(&self) -> std::collections::HashSet<NodeId> {
        let mut seen = std::collections::HashSet::new();
        let mut stack: Vec<NodeId> = self.outputs.iter().map(|o| o.node).collect();
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                stack.extend(self.graph.neighbors_directed(n, Direction::Incoming));
            }
        }
        seen
    }

    /// A canonical topological order: graph inputs first, then a depth-first post-order
    /// from the outputs visiting inputs in slot order, then any nodes no output depends
    /// on. It depends only on the graph's structure and not on node ids, so rewrites that
    /// produce the same graph print the same dump.
    pub fn topo_order(&self) -> Vec<NodeId> {
        let mut order = Vec::with_capacity(self.graph.node_count());
        let mut state: std::collections::HashMap<NodeId, bool> = Default::default();
        for &i in &self.inputs {
            state.insert(i, true);
            order.push(i);
        }
        let mut roots: Vec<NodeId> = self.outputs.iter().map(|o| o.node).collect();
        roots.extend(self.graph.node_indices());
        for root in roots {
            if state.contains_key(&root) {
                continue;
            }
            // Iterative DFS: (node, inputs expanded?).
            let mut stack = vec![(root, false)];
            while let Some((n, expanded)) = stack.pop() {
                if expanded {
                    state.insert(n, true);
                    order.push(n);
                    continue;
                }
                if state.contains_key(&n) {
                    continue;
                }
                state.insert(n, false);
                stack.push((n, true));
                for i in self.node_inputs(n).into_iter().rev() {
                    if !state.contains_key(&i) {
                        stack.push((i, false));
                    }
                }
            }
        }
        order
    }

    /// Re-checks every invariant: node types agree with inference from their inputs, input
    /// slots are dense, the graph is acyclic, outputs exist. The builder keeps these; this
    /// is for graphs that arrive by deserialisation or after rewrites.
    pub fn validate(&self) -> Result<(), IrError> {
        if petgraph::algo::is_cyclic_directed(&self.graph) {
            return Err(IrError::Cycle);
        }
        for id in self.graph.node_indices() {
            let node = &self.graph[id];
            let mut slots: Vec<usize> = self
                .graph
                .edges_directed(id, Direction::Incoming)
                .map(|e| *e.weight())
                .collect();
            slots.sort_unstable();
            if slots.iter().enumerate().any(|(i, &s)| i != s) {
                return Err(IrError::InvalidNode {
                    node: node.name.clone(),
                    op: node.op.name(),
                    message: format!("input slots {slots:?} are not 0..n"),
                });
            }
            let expected = match &node.op {
                Op::Input => continue,
                Op::Constant(t) => t.ty(),
                op => infer(op, &self.input_types(id)).map_err(|message| IrError::InvalidNode {
                    node: node.name.clone(),
                    op: op.name(),
                    message,
                })?,
            };
            if expected != node.ty {
                return Err(IrError::TypeMismatch {
                    node: node.name.clone(),
                    expected,
                    actual: node.ty.clone(),
                });
            }
        }
        for out in &self.outputs {
            self.try_node(out.node)?;
        }
        for &i in &self.inputs {
            self.try_node(i)?;
        }
        Ok(())
    }

    /// Summary statistics for `lutq inspect`.
    pub fn stats(&self) -> GraphStats {
        let mut stats = GraphStats::default();
        for id in self.graph.node_indices() {
            let node = &self.graph[id];
            match &node.op {
                Op::Input => {}
                Op::Constant(t) => stats.parameters += t.data().len() as u64,
                op => {
                    *stats.op_histogram.entry(op.name().to_string()).or_default() += 1;
                    stats.macs += op.macs(&self.input_types(id), &node.ty);
                }
            }
        }
        stats
    }
}

/// What `lutq inspect` reports about a graph.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GraphStats {
    /// Number of nodes of each op (inputs and constants excluded), sorted by op name.
    pub op_histogram: BTreeMap<String, usize>,
    /// Elements in all constants (weights, biases, normalisation statistics).
    pub parameters: u64,
    /// Multiply-accumulates of one inference at the graph's bound batch size.
    pub macs: u64,
}
