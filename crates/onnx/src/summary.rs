//! [`summarize`]: what a model declares and what lutq would make of it, without failing on
//! unsupported parts (for `lutq inspect`).

use std::collections::BTreeMap;

use prost::Message as _;
use serde::Serialize;

use crate::error::{Diagnostic, ImportError};
use crate::import::{ImportOptions, convert, required_constants};
use crate::model::{analyze, default_opset};
use crate::proto::tensor_shape_proto::dimension::Value as DimValue;
use crate::proto::{ModelProto, ValueInfoProto, type_proto};
use crate::tensor::data_type_name;

/// A model's declared interface and lutq's verdict on it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelSummary {
    pub ir_version: i64,
    pub producer_name: String,
    pub producer_version: String,
    /// Every opset import, as declared (the default domain is `""`).
    pub opset_imports: Vec<OpsetImport>,
    /// The default-domain opset, if any.
    pub opset: Option<i64>,
    pub graph_name: String,
    /// Graph inputs that are not initializers, in order.
    pub inputs: Vec<ValueSummary>,
    pub outputs: Vec<ValueSummary>,
    pub initializers: usize,
    /// Nodes per op type; ops of other domains are keyed `domain::OpType`.
    pub op_histogram: BTreeMap<String, usize>,
    /// Graph inputs that feed operands lutq needs as constants (shapes, clip bounds, …):
    /// the model imports only with them bound ([`ImportOptions::constant_inputs`]).
    pub required_constants: Vec<String>,
    /// Every unsupported feature, as [`crate::import`] would report it (with the options given to [`summarize_with`]; batch 1 for [`summarize`]).
    pub diagnostics: Vec<Diagnostic>,
    /// Why the model is malformed, if it is (then `diagnostics` may be incomplete).
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpsetImport {
    pub domain: String,
    pub version: i64,
}

/// A graph input or output as declared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ValueSummary {
    pub name: String,
    /// ONNX element type name (`FLOAT`, `INT64`, …), or the kind of a non-tensor type
    /// (`sequence`, `map`, `optional`, `sparse_tensor`, `undeclared`).
    pub dtype: String,
    /// `None` when no shape is declared.
    pub dims: Option<Vec<Dim>>,
}

/// One declared dimension.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(i64),
    Symbolic(String),
    /// Neither a value nor a name.
    Unknown,
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(v) => write!(f, "{v}"),
            Dim::Symbolic(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

fn value_summary(vi: &ValueInfoProto) -> ValueSummary {
    let (dtype, dims) = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => {
            let dims = t.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(DimValue::DimValue(v)) => Dim::Fixed(*v),
                        Some(DimValue::DimParam(p)) if !p.is_empty() => Dim::Symbolic(p.clone()),
                        _ => Dim::Unknown,
                    })
                    .collect()
            });
            (data_type_name(t.elem_type.unwrap_or(0)), dims)
        }
        Some(type_proto::Value::SequenceType(_)) => ("sequence".into(), None),
        Some(type_proto::Value::MapType(_)) => ("map".into(), None),
        Some(type_proto::Value::OptionalType(_)) => ("optional".into(), None),
        Some(type_proto::Value::SparseTensorType(_)) => ("sparse_tensor".into(), None),
        None => ("undeclared".into(), None),
    };
    ValueSummary {
        name: vi.name().to_string(),
        dtype,
        dims,
    }
}

/// Summarizes a model. Fails only when the bytes do not decode; a model that is
/// malformed in other ways is summarized with [`ModelSummary::error`] set.
pub fn summarize(model_bytes: &[u8]) -> Result<ModelSummary, ImportError> {
    summarize_with(model_bytes, &ImportOptions::default())
}

/// [`summarize`], with the diagnostics of an import with `options` (batch, input
/// shapes, bound constants).
pub fn summarize_with(
    model_bytes: &[u8],
    options: &ImportOptions,
) -> Result<ModelSummary, ImportError> {
    let model = ModelProto::decode(model_bytes)?;
    let empty = crate::proto::GraphProto::default();
    let graph = model.graph.as_ref().unwrap_or(&empty);
    let initializer_names: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name()).collect();
    let mut op_histogram = BTreeMap::new();
    for node in &graph.node {
        let key = match node.domain() {
            "" | "ai.onnx" => node.op_type().to_string(),
            d => format!("{d}::{}", node.op_type()),
        };
        *op_histogram.entry(key).or_default() += 1;
    }
    let mut summary = ModelSummary {
        ir_version: model.ir_version(),
        producer_name: model.producer_name().to_string(),
        producer_version: model.producer_version().to_string(),
        opset_imports: model
            .opset_import
            .iter()
            .map(|o| OpsetImport {
                domain: o.domain().to_string(),
                version: o.version(),
            })
            .collect(),
        opset: default_opset(&model),
        graph_name: graph.name().to_string(),
        inputs: graph
            .input
            .iter()
            .filter(|vi| !initializer_names.contains(vi.name()))
            .map(value_summary)
            .collect(),
        outputs: graph.output.iter().map(value_summary).collect(),
        initializers: graph.initializer.len(),
        op_histogram,
        required_constants: Vec::new(),
        diagnostics: Vec::new(),
        error: None,
    };
    match analyze(&model) {
        Err(e) => summary.error = Some(e.to_string()),
        Ok(info) => {
            summary.required_constants = required_constants(&info);
            match convert(&info, options) {
                Err(e) => summary.error = Some(e.to_string()),
                Ok(outcome) => {
                    summary.diagnostics = outcome.diagnostics;
                    summary.error = outcome.error.map(|e| e.to_string());
                }
            }
        }
    }
    Ok(summary)
}
