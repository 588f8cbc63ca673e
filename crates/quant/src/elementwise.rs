//! Element-wise regions: every chain of element-wise ops whose only non-constant input is
//! one tensor (the region's *root*) becomes one table op (`IntOp::Table`) per *exit* (a
//! member read from outside the region, or a graph output).
//!
//! The contract's table op is exact by construction: for each input code `q` of the
//! root's 8-bit type, `T[q] = quantize(f(q · 2^-f_x))` with the float function `f` of
//! the region, evaluated here one scalar at a time with the float IR's own scalar
//! definitions ([`Activation::apply`], [`BinaryOp::apply`]). So HardSwish, Sigmoid,
//! `x · HardSigmoid(x)` as exported, LeakyReLU, PReLU, Tanh, an unfoldable `(x − m) / s`
//! and any mix of them share one path. Constants may vary along the channel axis (1)
//! only: then there is one table per channel.
//!
//! Which nodes are members is decided on the float graph alone ([`Regions::analyze`]),
//! before lowering: a member whose readers are all members of the same region is
//! *interior* and never materialized.

use std::collections::HashMap;

use lutq_ir::int::{QTable, QType, Rounding, quantize_input};
use lutq_ir::{Activation, Graph, NodeId, Op};

/// The element-wise regions of a float graph.
pub(crate) struct Regions {
    /// Member → root.
    root: HashMap<NodeId, NodeId>,
    /// Readers of each node that exist in the integer graph: users that are not members
    /// of a region rooted at it, one per region exit rooted at it, and graph outputs.
    materialized_readers: HashMap<NodeId, usize>,
    interior: HashMap<NodeId, bool>,
}

/// Whether `op` computes each output element from the same element of its inputs.
fn elementwise(op: &Op) -> bool {
    matches!(
        op,
        Op::Activation(_) | Op::PRelu | Op::Binary(_) | Op::Identity | Op::Dropout
    )
}

impl Regions {
    pub fn analyze(graph: &Graph) -> Regions {
        let mut root: HashMap<NodeId, NodeId> = HashMap::new();
        for id in graph.topo_order() {
            let node = graph.node(id);
            if !elementwise(&node.op) {
                continue;
            }
            let mut roots = graph
                .node_inputs(id)
                .into_iter()
                .filter(|&i| graph.constant(i).is_none())
                .map(|i| root.get(&i).copied().unwrap_or(i));
            let Some(r) = roots.next() else { continue };
            let same_shape = graph.node(r).ty.shape == node.ty.shape;
            let constants_ok = constant_layout(graph, id).is_ok();
            // PRelu's slope must be a constant: a data-dependent slope is a product.
            let prelu_ok = !matches!(node.op, Op::PRelu)
                || graph
                    .node_inputs(id)
                    .get(1)
                    .is_some_and(|&s| graph.constant(s).is_some());
            if roots.all(|o| o == r) && same_shape && constants_ok && prelu_ok {
                root.insert(id, r);
            }
        }
        let is_output = |id: NodeId| graph.outputs().iter().any(|o| o.node == id);
        let mut interior = HashMap::new();
        for (&m, &r) in &root {
            let users = graph.users(m);
            let inside =
                !is_output(m) && !users.is_empty() && users.iter().all(|u| root.get(u) == Some(&r));
            interior.insert(m, inside);
        }
        let mut materialized_readers = HashMap::new();
        for id in graph.node_ids() {
            let outside = graph
                .users(id)
                .iter()
                .filter(|u| root.get(u) != Some(&id))
                .count();
            let outputs = graph.outputs().iter().filter(|o| o.node == id).count();
            materialized_readers.insert(id, outside + outputs);
        }
        for (&m, &r) in &root {
            if !interior[&m] {
                *materialized_readers.entry(r).or_default() += 1;
            }
        }
        Regions {
            root,
            materialized_readers,
            interior,
        }
    }

    /// The root of `id` if it is a member of a region.
    pub fn root(&self, id: NodeId) -> Option<NodeId> {
        self.root.get(&id).copied()
    }

    /// A member all of whose readers are members of its region: never materialized.
    pub fn is_interior(&self, id: NodeId) -> bool {
        self.interior.get(&id).copied().unwrap_or(false)
    }

    /// How many integer nodes will read `id`'s value.
    pub fn readers(&self, id: NodeId) -> usize {
        self.materialized_readers.get(&id).copied().unwrap_or(0)
    }
}

/// How a node's constant operands vary: `Ok(true)` if some varies along the channel axis
/// (1), `Ok(false)` if all are scalars (after broadcasting), `Err` naming the problem if
/// one varies along another axis (no table can express it).
pub(crate) fn constant_layout(graph: &Graph, id: NodeId) -> Result<bool, String> {
    let out = &graph.node(id).ty.shape;
    let mut per_channel = false;
    for i in graph.node_inputs(id) {
        let Some(c) = graph.constant(i) else { continue };
        let shape = c.shape();
        if shape.len() > out.len() {
            return Err(format!(
                "constant '{}' of shape {shape:?} has more dimensions than the result {out:?}",
                graph.node(i).name
            ));
        }
        let offset = out.len() - shape.len();
        for (k, &d) in shape.iter().enumerate() {
            if d == 1 {
                continue;
            }
            if offset + k != 1 {
                return Err(format!(
                    "constant '{}' of shape {shape:?} varies along axis {} of {out:?}; \
                     an integer table can vary along the channel axis (1) only",
                    graph.node(i).name,
                    offset + k
                ));
            }
            per_channel = true;
        }
    }
    Ok(per_channel)
}

/// Element `channel` of constant `c` broadcast to a result of rank `rank` (its only
/// non-1 dimension, if any, is the channel axis: [`constant_layout`]).
fn constant_at(graph: &Graph, c: NodeId, channel: usize) -> f32 {
    let Some(t) = graph.constant(c) else {
        return f32::NAN;
    };
    let values = t.as_f32().unwrap_or(&[]);
    if values.len() <= 1 {
        return values.first().copied().unwrap_or(f32::NAN);
    }
    values[channel.min(values.len() - 1)]
}

/// The region's float function at one element of channel `channel`, the root's value
/// being `x`.
pub(crate) fn eval(graph: &Graph, root: NodeId, id: NodeId, x: f32, channel: usize) -> f32 {
    if id == root {
        return x;
    }
    if graph.constant(id).is_some() {
        return constant_at(graph, id, channel);
    }
    let inputs = graph.node_inputs(id);
    let arg = |k: usize| eval(graph, root, inputs[k], x, channel);
    match &graph.node(id).op {
        Op::Activation(a) => a.apply(arg(0)),
        Op::Binary(b) => b.apply(arg(0), arg(1)),
        Op::PRelu => {
            let v = arg(0);
            if v < 0.0 { arg(1) * v } else { v }
        }
        Op::Identity | Op::Dropout => arg(0),
        // Not a member: `analyze` never roots a region below a non-element-wise node.
        _ => f32::NAN,
    }
}

/// The table of region exit `exit` over root values of type `root_ty`, for an output of
/// type `out` (`lo..=hi` its clamp): one table, or one per channel when a constant varies
/// along the channel axis.
pub(crate) fn build_table(
    graph: &Graph,
    root: NodeId,
    exit: NodeId,
    root_ty: &QType,
    out: &QType,
    (lo, hi): (i32, i32),
) -> QTable {
    let per_channel = region_per_channel(graph, root, exit);
    let channels = if per_channel {
        out.shape.get(1).copied().unwrap_or(1)
    } else {
        1
    };
    let (x_min, _) = root_ty.elem.range();
    let step = root_ty.step() as f32;
    let mut entries = Vec::with_capacity(channels * QTable::LEN);
    for c in 0..channels {
        for k in 0..QTable::LEN as i32 {
            let x = (x_min + k) as f32 * step;
            let y = eval(graph, root, exit, x, c);
            // A table is data: its rounding is a compile-time choice (the quantizer makes
            // half-up programs).
            entries.push(quantize_input(y, out.exp, lo, hi, Rounding::HalfUp));
        }
    }
    QTable { entries }
}

/// Whether any member between `root` and `exit` has a per-channel constant.
fn region_per_channel(graph: &Graph, root: NodeId, id: NodeId) -> bool {
    if id == root || graph.constant(id).is_some() {
        return false;
    }
    constant_layout(graph, id).unwrap_or(false)
        || graph
            .node_inputs(id)
            .into_iter()
            .any(|i| region_per_channel(graph, root, i))
}

/// A lone ReLU or `clip(0, m)` right on its root: lowered as a clamp (exact, and
/// cheaper than a table), as before tables existed.
pub(crate) fn is_plain_clamp(graph: &Graph, id: NodeId, root: NodeId) -> bool {
    let direct = graph.node_inputs(id).first() == Some(&root);
    direct
        && match &graph.node(id).op {
            Op::Activation(Activation::Relu) => true,
            Op::Activation(Activation::Clip { min, max }) => {
                *min == Some(0.0) && max.is_none_or(|m| m > 0.0)
            }
            _ => false,
        }
}
