//! Structural checks of a decoded model, before any op is looked at: the graph exists,
//! every name is defined once, every input is defined, the nodes form a DAG. Produces the
//! order in which to convert the nodes.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::error::ImportError;
use crate::limits::MAX_NODES;
use crate::proto::{GraphProto, ModelProto, NodeProto, ValueInfoProto};

/// The oldest and newest default-domain opsets the importer knows. Every op it supports
/// is handled in each version from the oldest up to the newest (onnx 1.22.0's).
pub const MIN_OPSET: i64 = 6;
pub const MAX_OPSET: i64 = 27;

/// The facts about a structurally valid model that conversion needs.
pub(crate) struct ModelInfo<'m> {
    pub graph: &'m GraphProto,
    /// Version of the default (`""` / `ai.onnx`) domain.
    pub opset: i64,
    /// Node indices in a topological order (the file's order when it is one).
    pub order: Vec<usize>,
    /// Graph inputs that are not initializers, in declaration order.
    pub inputs: Vec<&'m ValueInfoProto>,
    /// How many node input slots read each tensor.
    pub uses: HashMap<&'m str, usize>,
    /// The node (index) that computes each tensor a node outputs.
    pub producer: HashMap<&'m str, usize>,
    pub graph_outputs: HashSet<&'m str>,
}

/// The display name of a node: its name, or its first non-empty output when unnamed.
pub(crate) fn node_name(node: &NodeProto) -> &str {
    if !node.name().is_empty() {
        return node.name();
    }
    node.output
        .iter()
        .find(|o| !o.is_empty())
        .map_or("<unnamed>", |s| s.as_str())
}

/// The default-domain opset version, if the model imports one.
pub(crate) fn default_opset(model: &ModelProto) -> Option<i64> {
    model
        .opset_import
        .iter()
        .filter(|o| o.domain().is_empty() || o.domain() == "ai.onnx")
        .map(|o| o.version())
        .max()
}

pub(crate) fn analyze(model: &ModelProto) -> Result<ModelInfo<'_>, ImportError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::Malformed("the model has no graph".into()))?;
    if graph.node.len() > MAX_NODES {
        return Err(ImportError::Limit {
            what: "the graph's node count".into(),
            actual: graph.node.len(),
            limit: MAX_NODES,
            name: "MAX_NODES",
        });
    }
    let opset = default_opset(model).ok_or_else(|| {
        ImportError::Malformed("the model imports no opset for the default ONNX domain".into())
    })?;

    // Every definition of a tensor name, for duplicate detection.
    let mut defined: HashMap<&str, String> = HashMap::new();
    let mut initializers = HashSet::new();
    for (i, t) in graph.initializer.iter().enumerate() {
        let name = t.name();
        if name.is_empty() {
            return Err(ImportError::Malformed(format!(
                "initializer #{i} has no name"
            )));
        }
        define(&mut defined, name, format!("initializer '{name}'"))?;
        initializers.insert(name);
    }
    if !graph.sparse_initializer.is_empty() {
        // Sparse initializers define names too; reading them is unsupported, which the
        // conversion reports where they are used.
        for s in &graph.sparse_initializer {
            let name = s.values.as_ref().map_or("", |v| v.name());
            if !name.is_empty() {
                define(&mut defined, name, format!("sparse initializer '{name}'"))?;
            }
        }
    }
    let mut inputs = Vec::new();
    let mut input_names = HashSet::new();
    for (i, vi) in graph.input.iter().enumerate() {
        let name = vi.name();
        if name.is_empty() {
            return Err(ImportError::Malformed(format!(
                "graph input #{i} has no name"
            )));
        }
        if !input_names.insert(name) {
            return Err(ImportError::DuplicateName {
                name: name.into(),
                first: format!("graph input '{name}'"),
                second: format!("graph input '{name}'"),
            });
        }
        // Before IR version 4 every initializer is also listed as a graph input: the
        // initializer is its value.
        if !initializers.contains(name) {
            define(&mut defined, name, format!("graph input '{name}'"))?;
            inputs.push(vi);
        }
    }
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (n, node) in graph.node.iter().enumerate() {
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            define(
                &mut defined,
                out,
                format!("node '{}' ({})", node_name(node), node.op_type()),
            )?;
            producer.insert(out, n);
        }
    }

    // Dependencies; undefined inputs.
    let mut uses: HashMap<&str, usize> = HashMap::new();
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); graph.node.len()];
    let mut indegree = vec![0usize; graph.node.len()];
    for (n, node) in graph.node.iter().enumerate() {
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            *uses.entry(input.as_str()).or_default() += 1;
            if let Some(&p) = producer.get(input.as_str()) {
                succs[p].push(n);
                indegree[n] += 1;
            } else if !defined.contains_key(input.as_str()) {
                return Err(ImportError::UndefinedInput {
                    node: node_name(node).to_string(),
                    op_type: node.op_type().to_string(),
                    input: input.clone(),
                });
            }
        }
    }

    // Kahn's algorithm, always taking the lowest-numbered ready node, so a file that is
    // already in topological order keeps its order.
    let mut ready: BTreeSet<usize> = (0..graph.node.len())
        .filter(|&n| indegree[n] == 0)
        .collect();
    let mut order = Vec::with_capacity(graph.node.len());
    while let Some(n) = ready.pop_first() {
        order.push(n);
        for &s in &succs[n] {
            indegree[s] -= 1;
            if indegree[s] == 0 {
                ready.insert(s);
            }
        }
    }
    if order.len() != graph.node.len() {
        let nodes = (0..graph.node.len())
            .filter(|&n| indegree[n] > 0)
            .map(|n| node_name(&graph.node[n]).to_string())
            .collect();
        return Err(ImportError::Cycle { nodes });
    }

    if graph.output.is_empty() {
        return Err(ImportError::Malformed("the graph has no outputs".into()));
    }
    let mut graph_outputs = HashSet::new();
    for out in &graph.output {
        let name = out.name();
        if !defined.contains_key(name) {
            return Err(ImportError::UndefinedOutput(name.to_string()));
        }
        graph_outputs.insert(name);
    }

    Ok(ModelInfo {
        graph,
        opset,
        order,
        inputs,
        uses,
        producer,
        graph_outputs,
    })
}

fn define<'m>(
    defined: &mut HashMap<&'m str, String>,
    name: &'m str,
    by: String,
) -> Result<(), ImportError> {
    if let Some(first) = defined.get(name) {
        return Err(ImportError::DuplicateName {
            name: name.to_string(),
            first: first.clone(),
            second: by,
        });
    }
    defined.insert(name, by);
    Ok(())
}
