//! Builds small ONNX models from the prost types, for the importer's tests.

#![allow(dead_code)]

use lutq_onnx::proto::attribute_proto::AttributeType;
use lutq_onnx::proto::tensor_proto::DataType;
use lutq_onnx::proto::tensor_shape_proto::{Dimension, dimension};
use lutq_onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};
use prost::Message as _;

/// A declared dimension: a number, or a symbolic name.
pub enum D {
    N(i64),
    S(&'static str),
    Unknown,
}

impl From<i64> for D {
    fn from(v: i64) -> D {
        D::N(v)
    }
}

impl From<&'static str> for D {
    fn from(s: &'static str) -> D {
        D::S(s)
    }
}

pub struct Model {
    pub proto: ModelProto,
}

impl Model {
    /// An empty model importing the default domain at `opset`.
    pub fn new(opset: i64) -> Model {
        Model {
            proto: ModelProto {
                ir_version: Some(8),
                producer_name: Some("lutq-tests".into()),
                opset_import: vec![OperatorSetIdProto {
                    domain: Some(String::new()),
                    version: Some(opset),
                }],
                graph: Some(GraphProto {
                    name: Some("test".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }

    pub fn graph(&mut self) -> &mut GraphProto {
        self.proto.graph.get_or_insert_with(Default::default)
    }

    /// A FLOAT graph input of fixed shape.
    pub fn input(self, name: &str, dims: &[i64]) -> Model {
        let dims: Vec<D> = dims.iter().map(|&d| D::N(d)).collect();
        self.input_typed(name, DataType::Float, dims)
    }

    pub fn input_typed(mut self, name: &str, elem: DataType, dims: Vec<D>) -> Model {
        let vi = value_info(name, elem, Some(dims));
        self.graph().input.push(vi);
        self
    }

    /// A graph output (type left undeclared, as the importer infers it).
    pub fn output(mut self, name: &str) -> Model {
        self.graph().output.push(ValueInfoProto {
            name: Some(name.into()),
            ..Default::default()
        });
        self
    }

    pub fn init_f32(mut self, name: &str, dims: &[i64], data: Vec<f32>) -> Model {
        let mut t = tensor_f32(dims, data);
        t.name = Some(name.into());
        self.graph().initializer.push(t);
        self
    }

    pub fn init_i64(mut self, name: &str, dims: &[i64], data: Vec<i64>) -> Model {
        let mut t = tensor_i64(dims, data);
        t.name = Some(name.into());
        self.graph().initializer.push(t);
        self
    }

    /// An f32 initializer filled with `0.1·i - 1` (deterministic, distinct values).
    pub fn weight(self, name: &str, dims: &[i64]) -> Model {
        let n: i64 = dims.iter().product();
        let data = (0..n).map(|i| 0.1 * i as f32 - 1.0).collect();
        self.init_f32(name, dims, data)
    }

    /// A node named after its first output.
    pub fn node(
        self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Model {
        let name = outputs
            .first()
            .map_or(op.to_string(), |o| format!("{o}_node"));
        self.named_node(&name, op, inputs, outputs, attrs)
    }

    pub fn named_node(
        mut self,
        name: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Model {
        self.graph().node.push(NodeProto {
            name: Some(name.into()),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        });
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.proto.encode_to_vec()
    }
}

pub fn value_info(name: &str, elem: DataType, dims: Option<Vec<D>>) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .into_iter()
            .map(|d| Dimension {
                value: match d {
                    D::N(v) => Some(dimension::Value::DimValue(v)),
                    D::S(s) => Some(dimension::Value::DimParam(s.into())),
                    D::Unknown => None,
                },
                ..Default::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn tensor_f32(dims: &[i64], data: Vec<f32>) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(data.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ..Default::default()
    }
}

pub fn tensor_i64(dims: &[i64], data: Vec<i64>) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(DataType::Int64 as i32),
        int64_data: data,
        ..Default::default()
    }
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(ty as i32),
        ..Default::default()
    }
}

pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: Some(v),
        ..attr(name, AttributeType::Int)
    }
}

pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: v.to_vec(),
        ..attr(name, AttributeType::Ints)
    }
}

pub fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: Some(v),
        ..attr(name, AttributeType::Float)
    }
}

pub fn floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        floats: v.to_vec(),
        ..attr(name, AttributeType::Floats)
    }
}

pub fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        s: Some(v.as_bytes().to_vec()),
        ..attr(name, AttributeType::String)
    }
}

pub fn tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        t: Some(t),
        ..attr(name, AttributeType::Tensor)
    }
}

/// Imports with default options.
pub fn import(m: &Model) -> Result<lutq_ir::Graph, lutq_onnx::ImportError> {
    lutq_onnx::import(&m.bytes(), &lutq_onnx::ImportOptions::default())
}

/// The diagnostics of an import that must fail as unsupported.
pub fn diagnostics(m: &Model) -> Vec<lutq_onnx::Diagnostic> {
    match import(m) {
        Err(lutq_onnx::ImportError::Unsupported(d)) => d,
        Err(e) => panic!("expected Unsupported, got: {e}"),
        Ok(g) => panic!("expected Unsupported, the model imported:\n{}", g.dump()),
    }
}

/// Snapshot of the IR dump under snapshots/onnx/.
#[macro_export]
macro_rules! snapshot {
    ($name:expr, $model:expr) => {{
        let graph = match $crate::common::import(&$model) {
            Ok(g) => g,
            Err(e) => panic!("{}: import failed: {e}", $name),
        };
        graph.validate().unwrap();
        insta::with_settings!({snapshot_path => "../../../snapshots/onnx", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!($name, graph.dump());
        });
        graph
    }};
}
