//! The kinds of layer the generated C has specialised kernels for: what `cargo xtask
//! mcu` profiles per kind and what `lutq report` estimates Cortex-M4 instructions by.

use lutq_ir::int::{IntGraph, IntOp};

/// A node's kind, as the kernels (and the per-kind profile table) tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerKind {
    /// A 3×3 convolution, not depthwise.
    Conv3x3,
    /// Any other convolution: other kernel sizes, grouped.
    OtherConv,
    /// A 1×1 convolution.
    Pointwise,
    /// One filter per channel (`group == channels`).
    Depthwise,
    /// A fully connected layer.
    Dense,
    Add,
    /// Max and sum (average) pools.
    Pools,
    /// Every other op: tables, concatenation, resize, copies.
    Other,
}

impl LayerKind {
    /// Every kind, in the profile table's order.
    pub const ALL: [LayerKind; 8] = [
        LayerKind::Conv3x3,
        LayerKind::OtherConv,
        LayerKind::Pointwise,
        LayerKind::Depthwise,
        LayerKind::Dense,
        LayerKind::Add,
        LayerKind::Pools,
        LayerKind::Other,
    ];

    /// Node `i`'s kind and its multiply-accumulates.
    pub fn of(graph: &IntGraph, i: usize) -> (LayerKind, u64) {
        let n = &graph.nodes[i];
        match &n.op {
            IntOp::Linear(l) => {
                let macs = (n.ty.num_elements() * l.weights.row_len()) as u64;
                let [o, per_group, kh, kw] = l.weights.shape();
                let kind = match &l.conv {
                    None => LayerKind::Dense,
                    Some(c) if c.group == o && per_group == 1 && o > 1 => LayerKind::Depthwise,
                    Some(c) if c.group != 1 => LayerKind::OtherConv,
                    Some(_) if kh == 1 && kw == 1 => LayerKind::Pointwise,
                    Some(_) if kh == 3 && kw == 3 => LayerKind::Conv3x3,
                    Some(_) => LayerKind::OtherConv,
                };
                (kind, macs)
            }
            IntOp::Add(_) => (LayerKind::Add, 0),
            IntOp::MaxPool(_) | IntOp::SumPool { .. } => (LayerKind::Pools, 0),
            _ => (LayerKind::Other, 0),
        }
    }

    /// The name the profile table prints.
    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Conv3x3 => "3×3 conv",
            LayerKind::OtherConv => "other conv",
            LayerKind::Pointwise => "1×1 pointwise",
            LayerKind::Depthwise => "depthwise",
            LayerKind::Dense => "dense",
            LayerKind::Add => "add",
            LayerKind::Pools => "pools",
            LayerKind::Other => "other",
        }
    }

    /// The kind a profile table's name stands for.
    pub fn from_name(name: &str) -> Option<LayerKind> {
        LayerKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Kinds whose kernels multiply-accumulate (the rest have no MACs).
    pub fn is_linear(self) -> bool {
        matches!(
            self,
            LayerKind::Conv3x3
                | LayerKind::OtherConv
                | LayerKind::Pointwise
                | LayerKind::Depthwise
                | LayerKind::Dense
        )
    }
}
