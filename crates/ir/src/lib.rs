//! lutq's graph IR.
//!
//! A [`Graph`] holds ops as petgraph nodes and tensors as edges; every tensor has a static
//! shape and element type, checked when a node is added ([`infer`]). Weights are constant
//! nodes owned by the graph. [`Graph::dump`] prints the stable text form that every stage
//! reuses and snapshot tests read; the whole graph round-trips through serde.
//!
//! This crate knows nothing of ONNX or protobuf: importers build graphs through
//! [`Graph::add_input`], [`Graph::add_constant`] and [`Graph::add_node`].

mod graph;
pub mod infer;
mod op;
mod print;
mod tensor;

pub use graph::{Graph, GraphStats, Node, NodeId, Output};
pub use op::{
    Activation, BinaryOp, Conv, CoordMode, FusedActivation, Gemm, NearestMode, Op, Pool, Resize,
    ResizeMode,
};
pub use tensor::{ElemType, Tensor, TensorData, TensorSummary, TensorType};

pub mod int;

/// Errors of graph construction and validation. All of them mean the caller built an
/// inconsistent graph: an importer reports them as a malformed model, a rewrite pass that
/// triggers one has a bug.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IrError {
    #[error("node '{node}' ({op}): {message}")]
    InvalidNode {
        node: String,
        op: &'static str,
        message: String,
    },
    #[error("constant of shape {shape:?} needs {expected} elements, got {actual}")]
    ConstantSize {
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    #[error("node '{node}': type {actual} does not match the inferred {expected}")]
    TypeMismatch {
        node: String,
        expected: TensorType,
        actual: TensorType,
    },
    #[error("node '{0}' is still in use")]
    NodeInUse(String),
    #[error("no node with index {0} in this graph")]
    NoSuchNode(usize),
    #[error("the graph has a cycle")]
    Cycle,
}
