//! The importer's error type and its diagnostics.
//!
//! Two kinds of failure are kept apart:
//!
//! * the model is **valid ONNX that lutq does not support** (an op, an attribute value, a
//!   dynamic dimension, …): every such problem is collected as a [`Diagnostic`] before
//!   anything is returned, and the import fails once with [`ImportError::Unsupported`]
//!   listing them all;
//! * the model is **not valid ONNX** (bytes that do not decode, undefined names, cycles,
//!   tensors whose data does not match their dims, shapes that do not fit): a specific
//!   variant, naming the node and op where there is one.

use std::fmt;

use serde::Serialize;

/// Everything that can go wrong while importing a model or decoding a tensor.
///
/// Each variant says whose problem it is: the **model's** (malformed or inconsistent
/// input, fix the model), the **caller's** (bad [`crate::ImportOptions`]), or a **lutq
/// bug**.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The bytes are not a protobuf `ModelProto` / `TensorProto` (truncated, corrupt, not
    /// ONNX at all). The model's problem.
    #[error("not a valid ONNX protobuf: {0}")]
    Decode(#[from] prost::DecodeError),

    /// The protobuf decodes but breaks a rule of the ONNX format (no graph, no opset for
    /// the default domain, an empty tensor name, a graph without outputs, …). The model's
    /// problem.
    #[error("malformed model: {0}")]
    Malformed(String),

    /// A node reads a tensor that no initializer, graph input or node defines. The
    /// model's problem.
    #[error(
        "node '{node}' ({op_type}): input '{input}' is not defined by any initializer, graph input or node"
    )]
    UndefinedInput {
        node: String,
        op_type: String,
        input: String,
    },

    /// A graph output names a tensor that nothing defines. The model's problem.
    #[error("graph output '{0}' is not defined by any initializer, graph input or node")]
    UndefinedOutput(String),

    /// Two definitions (initializers, graph inputs, node outputs) share one tensor name.
    /// The model's problem.
    #[error("tensor name '{name}' is defined twice: by {first} and by {second}")]
    DuplicateName {
        name: String,
        first: String,
        second: String,
    },

    /// The nodes' data dependencies form a cycle (ONNX graphs must be acyclic). The
    /// model's problem. Lists the nodes on the cycle or depending on it.
    #[error("the graph has a cycle through nodes {}", quoted_list(.nodes))]
    Cycle { nodes: Vec<String> },

    /// A tensor's data does not match its declared dims or type (wrong element count,
    /// byte length not a multiple of the element size, negative dims, …). The model's
    /// problem; for [`crate::decode_tensor`], the file's.
    #[error("tensor '{name}': {message}")]
    Tensor { name: String, message: String },

    /// An attribute has the wrong type or an invalid value (negative pads, `group = 0`, a
    /// `kernel_shape` that contradicts the weights, …). The model's problem.
    #[error("node '{node}' ({op_type}), attribute '{attr}': {message}")]
    Attribute {
        node: String,
        op_type: String,
        attr: String,
        message: String,
    },

    /// A node's inputs or constant operands are inconsistent (a Reshape target with the
    /// wrong element count, out-of-range axes, a missing required input, …). The model's
    /// problem.
    #[error("node '{node}' ({op_type}): {message}")]
    InvalidNode {
        node: String,
        op_type: String,
        message: String,
    },

    /// The IR rejected a node while checking its shapes: the model's tensors do not fit
    /// the op (e.g. non-broadcastable Add operands, Conv channels that do not match the
    /// weights). The model's problem, unless the model passes `onnx.checker` with full
    /// shape inference — then the importer lowered the op wrongly, a lutq bug.
    #[error("node '{node}' ({op_type}): {}", ir_message(source))]
    Ir {
        node: String,
        op_type: String,
        #[source]
        source: Box<lutq_ir::IrError>,
    },

    /// [`crate::ImportOptions::constant_inputs`] names a tensor that is not a graph input
    /// or gives it a value that does not fit. The caller's problem.
    #[error("constant input '{name}': {message}")]
    ConstantInput { name: String, message: String },

    /// [`crate::ImportOptions::input_shapes`] names a tensor that is not a graph input, or
    /// gives a shape of the wrong rank or one that contradicts a declared static
    /// dimension. The caller's problem.
    #[error("input shape for '{name}': {message}")]
    InputShape { name: String, message: String },

    /// The model exceeds one of lutq's resource limits ([`crate::limits`]), e.g. more
    /// nodes than [`crate::limits::MAX_NODES`]. The model's size, not a malformation:
    /// the limits are constants in `crates/onnx/src/limits.rs` (no flag raises them).
    #[error(
        "{what} is {actual}, above lutq's limit of {limit} (lutq_onnx::limits::{name}; a constant in crates/onnx/src/limits.rs: raise it there and rebuild if the model is genuine)"
    )]
    Limit {
        what: String,
        actual: usize,
        limit: usize,
        name: &'static str,
    },

    /// The model is valid ONNX but uses features lutq does not support. Lists every such
    /// problem found in the whole model, one per line. The model's limitation, not a bug.
    #[error("{}", UnsupportedList(.0))]
    Unsupported(Vec<Diagnostic>),
}

/// The IR's message without the node prefix the variant already prints.
fn ir_message(e: &lutq_ir::IrError) -> String {
    match e {
        lutq_ir::IrError::InvalidNode { message, .. } => message.clone(),
        e => e.to_string(),
    }
}

fn quoted_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct UnsupportedList<'a>(&'a [Diagnostic]);

impl fmt::Display for UnsupportedList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "the model uses {n} feature{} lutq does not support:",
            if n == 1 { "" } else { "s" }
        )?;
        for d in self.0 {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

/// Where in the model a [`Diagnostic`] points.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Location {
    /// A node, by its name (or its first output's name when the node is unnamed).
    Node {
        name: String,
        op_type: String,
        /// The operator-set domain; empty for the default ONNX domain.
        domain: String,
    },
    /// A graph input, by name.
    GraphInput { name: String },
    /// A graph output, by name.
    GraphOutput { name: String },
    /// The model as a whole (opset imports).
    Model,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Node {
                name,
                op_type,
                domain,
            } => {
                if domain.is_empty() {
                    write!(f, "node '{name}' ({op_type})")
                } else {
                    write!(f, "node '{name}' ({domain}::{op_type})")
                }
            }
            Location::GraphInput { name } => write!(f, "graph input '{name}'"),
            Location::GraphOutput { name } => write!(f, "graph output '{name}'"),
            Location::Model => f.write_str("model"),
        }
    }
}

/// What kind of unsupported feature a [`Diagnostic`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosticKind {
    /// An op type (or domain) the importer does not know.
    UnsupportedOp,
    /// A known op with an attribute value or a form lutq does not handle (Pad reflect,
    /// 1-D/3-D Conv, training mode, …).
    UnsupportedAttribute,
    /// An element type other than f32 data (or i64 shape operands).
    UnsupportedType,
    /// An input that must be a compile-time constant (Reshape's shape, Clip's bounds, …)
    /// is computed at run time or is a graph input.
    NonConstantInput,
    /// A graph input dimension other than the first that is symbolic or unknown (and not
    /// fixed by [`crate::ImportOptions::input_shapes`]).
    DynamicDimension,
    /// An optional output (MaxPool Indices, Dropout mask, BatchNormalization training
    /// statistics) that the model uses.
    UnsupportedOutput,
    /// An opset version outside the range the importer knows.
    UnsupportedOpset,
    /// Tensor data stored outside the model file, or some other storage form lutq does
    /// not read.
    UnsupportedStorage,
    /// A graph input too large for lutq's size limits, or a constant folded at import
    /// larger than the folding limit.
    TooLarge,
    /// A name the caller gave (`ImportOptions::outputs`, `--outputs`) that is neither a
    /// tensor nor a node of the model.
    UnknownName,
}

/// One unsupported feature: where, what, and how to get rid of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub location: Location,
    pub kind: DiagnosticKind,
    /// What is unsupported, in one sentence.
    pub message: String,
    /// What the user can do about it.
    pub fix: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; fix: {}", self.location, self.message, self.fix)
    }
}
