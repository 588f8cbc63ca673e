//! ONNX import: a serialized `ModelProto` → lutq's float IR ([`lutq_ir::Graph`]).
//!
//! ```text
//! bytes ─► decode (prost) ─► structure (names, DAG order) ─► walk: inputs, ops, outputs ─► Graph
//!                                                              └─ every unsupported feature → Diagnostic
//! ```
//!
//! [`import`] checks the whole model before it returns anything: all unsupported features
//! (op types, attribute values, non-constant shape operands, dynamic dimensions, used
//! optional outputs, element types) are collected and reported together as
//! [`ImportError::Unsupported`]; malformed models get a specific [`ImportError`] variant.
//! Nothing panics on model data.
//!
//! Supported: default-domain opsets 6–27 and the ops of [`supported_ops`]; f32 data
//! (DOUBLE / FLOAT16 / BFLOAT16 initializers are converted), i64/i32 for shape operands.
//! Graph inputs bind their first dimension, when symbolic, to [`ImportOptions::batch`],
//! and every dimension to [`ImportOptions::input_shapes`] when given. Shape
//! computations fold to constants during the walk (`Shape` of a static tensor, then
//! every op whose inputs are all constants and that has a constant evaluator), as
//! onnx-simplifier does; what only computes shapes never enters the IR.
//! Flatten, Squeeze and Unsqueeze become static [`lutq_ir::Op::Reshape`]s, `auto_pad`
//! becomes explicit pads, and every IR node has one output. IR node names are the ONNX
//! node names (the first output's name for unnamed nodes); helper nodes of multi-node
//! lowerings are named `{node}:{role}`. Graph outputs keep their ONNX names.
//!
//! The protobuf types in [`proto`] are generated from the vendored `proto/onnx.proto`
//! (onnx 1.22.0) by `cargo xtask gen-proto` and committed.

mod attrs;
mod error;
mod import;
pub mod limits;
mod model;
mod ops;
mod summary;
mod tensor;

/// The ONNX protobuf messages (prost), generated from `proto/onnx.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod proto {
    include!("generated/onnx.rs");
}

use prost::Message as _;

pub use error::{Diagnostic, DiagnosticKind, ImportError, Location};
pub use import::ImportOptions;
pub use model::{MAX_OPSET, MIN_OPSET};
pub use ops::supported_ops;
pub use summary::{Dim, ModelSummary, OpsetImport, ValueSummary, summarize, summarize_with};
pub use tensor::{ConstData, ConstValue, NamedTensor, decode_tensor};

/// Imports a serialized ONNX model into a float IR graph.
pub fn import(model_bytes: &[u8], options: &ImportOptions) -> Result<lutq_ir::Graph, ImportError> {
    let model = proto::ModelProto::decode(model_bytes)?;
    let info = model::analyze(&model)?;
    import::convert(&info, options)?.into_result()
}
