//! The interpreters' error type.

use lutq_ir::int::IntCheckError;
use lutq_ir::{IrError, TensorType};

/// Why a graph could not be run. Each variant says whether it is the caller's mistake
/// (wrong inputs, a graph this interpreter does not run) or a bug in lutq.
#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    /// User error: the number of input tensors differs from the graph's inputs.
    #[error("the graph has {expected} input(s), {actual} tensor(s) were given")]
    InputCount { expected: usize, actual: usize },

    /// User error: an input tensor has the wrong element type or shape.
    #[error("input '{name}' must be {expected}, got {actual}")]
    InputType {
        name: String,
        expected: TensorType,
        actual: TensorType,
    },

    /// User error (or a bug in whatever built the graph): the graph fails validation, e.g.
    /// after deserialisation of a corrupted file.
    #[error("invalid graph: {0}")]
    InvalidGraph(#[from] IrError),

    /// User error (or a bug in the quantizer that built it): an integer graph fails
    /// validation ([`lutq_ir::int::IntGraph::validate`]), or a node given to
    /// `int::exec_node` does not fit its inputs.
    #[error("invalid integer graph: {0}")]
    InvalidIntGraph(#[from] IntCheckError),

    /// User error: the graph holds something this interpreter does not execute, e.g. a
    /// quantized (integer) graph given to the float interpreter.
    #[error("node '{node}': {message}")]
    Unsupported { node: String, message: String },

    /// User error: the batch given to `run_batch` does not fit the graph.
    #[error("batch input '{name}': {message}")]
    Batch { name: String, message: String },

    /// Bug in lutq: an internal invariant did not hold. Please report it with the graph.
    #[error("internal error (a bug in lutq): {0}")]
    Internal(String),
}
