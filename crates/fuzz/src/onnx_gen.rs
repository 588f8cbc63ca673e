//! A structure-aware ONNX model generator driven by the fuzzer's bytes
//! ([`arbitrary::Unstructured`]): a float input, a chain of up to [`MAX_NODES`] nodes drawn
//! from the ops lutq supports and some it does not, with initializers, attributes and
//! shapes that mostly fit (the generator tracks the shape of each tensor it knows) and
//! sometimes do not: wrong attribute types, out-of-range values, foreign dtypes, dangling
//! or duplicated names, cycles, external-data paths, symbolic or negative dimensions.
//!
//! The bytes only steer choices, so every input decodes to a model and libFuzzer's
//! mutations move between models of nearby structure.

use arbitrary::{Result, Unstructured};
use lutq_onnx::proto::attribute_proto::AttributeType;
use lutq_onnx::proto::tensor_proto::{DataLocation, DataType};
use lutq_onnx::proto::tensor_shape_proto::{Dimension, dimension};
use lutq_onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};

/// The most nodes a generated graph has (the fuzzer explores structure, not size: the
/// importer's own node limit is tested by the onnx tests).
pub const MAX_NODES: usize = 12;
/// The most elements of a generated initializer in the consistent case.
const MAX_INIT: i64 = 4096;

/// Ops the importer supports (or folds), drawn most of the time.
const SUPPORTED: &[&str] = &[
    "Conv",
    "Relu",
    "Clip",
    "Add",
    "Mul",
    "Sub",
    "Div",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "BatchNormalization",
    "Flatten",
    "Gemm",
    "MatMul",
    "Reshape",
    "Transpose",
    "Concat",
    "Softmax",
    "Sigmoid",
    "HardSwish",
    "HardSigmoid",
    "LeakyRelu",
    "Tanh",
    "Identity",
    "Pad",
    "Resize",
    "Slice",
    "Squeeze",
    "Unsqueeze",
    "ReduceMean",
    "Split",
    "Max",
    "Min",
    "Exp",
    "Neg",
    "Abs",
    "Sqrt",
    "DepthToSpace",
    "SpaceToDepth",
    "QuantizeLinear",
    "DequantizeLinear",
    "Shape",
    "Gather",
    "Cast",
    "ConstantOfShape",
    "Constant",
    "Dropout",
    "Erf",
    "Pow",
    "Upsample",
];

/// Ops and domains beyond the supported set.
const UNSUPPORTED: &[&str] = &[
    "Loop",
    "If",
    "LSTM",
    "Einsum",
    "NonMaxSuppression",
    "ConvTranspose",
    "TopK",
    "Where",
    "Scan",
    "",
];

/// The generator's state: the model so far and what it knows of each tensor.
struct Gen<'a, 'b> {
    u: &'a mut Unstructured<'b>,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    /// Every tensor name defined so far with its shape when the generator knows it.
    tensors: Vec<(String, Option<Vec<i64>>)>,
    count: usize,
    opset: i64,
}

/// A generated model, and whether the generator meant it to be well formed (it may still
/// be rejected: the generator does not know every op's rules).
pub fn model(u: &mut Unstructured) -> Result<ModelProto> {
    let opset = match u.int_in_range(0..=15)? {
        0 => u.arbitrary::<i64>()?,
        1 => 7,
        2 => 9,
        3 => 11,
        4..=9 => 13,
        10 | 11 => 17,
        12 => 19,
        13 => 21,
        _ => u.int_in_range(1..=30)?,
    };
    let mut g = Gen {
        u,
        nodes: Vec::new(),
        inits: Vec::new(),
        tensors: Vec::new(),
        count: 0,
        opset,
    };
    let input = g.graph_input()?;
    let n = g.u.int_in_range(1..=MAX_NODES)?;
    for _ in 0..n {
        if g.u.is_empty() {
            break;
        }
        g.node()?;
    }
    let mut outputs = vec![g.tensors.last().map(|t| t.0.clone()).unwrap_or_default()];
    if g.rare()? {
        outputs.push(g.any_name()?);
    }
    let graph = GraphProto {
        name: Some("fuzz".into()),
        node: g.nodes,
        initializer: g.inits,
        input: vec![input],
        output: outputs
            .into_iter()
            .map(|name| ValueInfoProto {
                name: Some(name),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut opset_import = vec![OperatorSetIdProto {
        domain: Some(String::new()),
        version: Some(opset),
    }];
    if g.u.ratio(1, 20)? {
        opset_import.push(OperatorSetIdProto {
            domain: Some("com.microsoft".into()),
            version: Some(1),
        });
    }
    Ok(ModelProto {
        ir_version: Some(8),
        producer_name: Some("lutq-fuzz".into()),
        opset_import,
        graph: Some(graph),
        ..Default::default()
    })
}

impl Gen<'_, '_> {
    /// True one time in 16: where the generator leaves the consistent path.
    fn rare(&mut self) -> Result<bool> {
        self.u.ratio(1, 16)
    }

    fn fresh(&mut self) -> String {
        self.count += 1;
        format!("t{}", self.count)
    }

    fn any_name(&mut self) -> Result<String> {
        Ok(match self.u.int_in_range(0..=3)? {
            0 => "undefined".into(),
            1 => format!("t{}", self.count + 1), // defined later: a cycle or dangling
            _ => {
                let i = self.u.choose_index(self.tensors.len().max(1))?;
                self.tensors.get(i).map(|t| t.0.clone()).unwrap_or_default()
            }
        })
    }

    fn graph_input(&mut self) -> Result<ValueInfoProto> {
        let rank4 = !self.u.ratio(1, 5)?;
        let mut dims: Vec<i64> = if rank4 {
            vec![
                1,
                self.u.int_in_range(1..=4)?,
                self.u.int_in_range(1..=8)?,
                self.u.int_in_range(1..=8)?,
            ]
        } else {
            vec![1, self.u.int_in_range(1..=16)?]
        };
        let mut elem = DataType::Float as i32;
        let mut symbolic = None;
        if self.rare()? {
            match self.u.int_in_range(0..=4)? {
                0 => {
                    let i = self.u.choose_index(dims.len())?;
                    dims[i] = self.u.arbitrary()?;
                }
                1 => symbolic = Some(self.u.choose_index(dims.len())?),
                2 => elem = self.u.int_in_range(0..=25)?,
                3 => dims.push(self.u.int_in_range(0..=3)?),
                _ => dims.clear(),
            }
        }
        let shape = TensorShapeProto {
            dim: dims
                .iter()
                .enumerate()
                .map(|(i, &d)| Dimension {
                    value: Some(if symbolic == Some(i) {
                        dimension::Value::DimParam("N".into())
                    } else {
                        dimension::Value::DimValue(d)
                    }),
                    ..Default::default()
                })
                .collect(),
        };
        self.tensors.push(("x".into(), Some(dims)));
        Ok(ValueInfoProto {
            name: Some("x".into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(elem),
                    shape: Some(shape),
                })),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// A float value for weights: small multiples of 1/16, sometimes special.
    fn value(&mut self) -> Result<f32> {
        if self.u.ratio(1, 64)? {
            return Ok(*self.u.choose(&[
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                1e30,
                -1e-30,
                0.0,
            ])?);
        }
        Ok(f32::from(self.u.arbitrary::<i8>()?) / 16.0)
    }

    /// An f32 initializer of `dims` (data filled from the input, then a pattern).
    fn init_f32(&mut self, dims: &[i64]) -> Result<String> {
        let n = dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d));
        let n = n.filter(|n| (0..=MAX_INIT).contains(n)).unwrap_or(0) as usize;
        let mut data = Vec::with_capacity(n);
        for i in 0..n {
            data.push(if self.u.is_empty() {
                ((i % 7) as f32 - 3.0) / 8.0
            } else {
                self.value()?
            });
        }
        let name = self.fresh();
        let mut t = TensorProto {
            name: Some(name.clone()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Float as i32),
            raw_data: Some(data.iter().flat_map(|x| x.to_le_bytes()).collect()),
            ..Default::default()
        };
        if self.rare()? {
            self.break_tensor(&mut t)?;
        }
        self.inits.push(t);
        Ok(name)
    }

    fn init_i64(&mut self, dims: &[i64], data: Vec<i64>) -> Result<String> {
        let name = self.fresh();
        let mut t = TensorProto {
            name: Some(name.clone()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Int64 as i32),
            int64_data: data,
            ..Default::default()
        };
        if self.rare()? {
            self.break_tensor(&mut t)?;
        }
        self.inits.push(t);
        Ok(name)
    }

    /// Makes a tensor inconsistent: a foreign dtype, wrong dims, external data, both
    /// raw and typed data, a truncated payload.
    fn break_tensor(&mut self, t: &mut TensorProto) -> Result<()> {
        match self.u.int_in_range(0..=6)? {
            0 => t.data_type = Some(self.u.int_in_range(0..=25)?),
            1 => {
                if let Some(d) = t.dims.first_mut() {
                    *d = self.u.arbitrary()?;
                } else {
                    t.dims.push(-1);
                }
            }
            2 => {
                t.data_location = Some(DataLocation::External as i32);
                let path = *self
                    .u
                    .choose(&["../../etc/passwd", "/etc/passwd", "w.bin", ""])?;
                t.external_data = vec![StringStringEntryProto {
                    key: Some("location".into()),
                    value: Some(path.into()),
                }];
                t.raw_data = None;
            }
            3 => t.float_data = vec![1.0, 2.0],
            4 => {
                if let Some(r) = &mut t.raw_data {
                    r.pop();
                }
            }
            5 => t.dims.push(self.u.int_in_range(0..=1 << 20)?),
            _ => t.name = Some(String::new()),
        }
        Ok(())
    }

    /// The data input of the next node (mostly the newest tensor) and its shape.
    fn pick_input(&mut self) -> Result<(String, Option<Vec<i64>>)> {
        if self.u.ratio(3, 4)? || self.tensors.len() == 1 {
            return Ok(self.tensors.last().cloned().expect("the graph input"));
        }
        let i = self.u.choose_index(self.tensors.len())?;
        Ok(self.tensors[i].clone())
    }

    fn node(&mut self) -> Result<()> {
        let op: String = if self.u.ratio(1, 20)? {
            if self.u.ratio(1, 4)? {
                self.u.arbitrary::<&str>()?.chars().take(16).collect()
            } else {
                self.u.choose(UNSUPPORTED)?.to_string()
            }
        } else {
            self.u.choose(SUPPORTED)?.to_string()
        };
        let (x, shape) = self.pick_input()?;
        // Tracked dims may be anything a broken input declared: clamp them so the
        // generator's own shape arithmetic cannot overflow.
        let s: Vec<i64> = shape
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|&d| d.clamp(-(1 << 20), 1 << 20))
            .collect();
        let rank = s.len();
        let c = s.get(1).copied().unwrap_or(1).clamp(1, 64);
        let mut inputs = vec![x.clone()];
        let mut attrs = Vec::new();
        let mut out_shape = None;
        match op.as_str() {
            "Conv" => {
                let dw = self.u.ratio(1, 3)?;
                let group = if dw { c } else { 1 };
                let oc = if dw { c } else { self.u.int_in_range(1..=8)? };
                let k = self.u.int_in_range(1..=3)?;
                let stride = self.u.int_in_range(1..=2)?;
                let pad = self.u.int_in_range(0..=1)?;
                let w = self.init_f32(&[oc, c / group, k, k])?;
                inputs.push(w);
                if self.u.arbitrary()? {
                    let b = self.init_f32(&[oc])?;
                    inputs.push(b);
                }
                attrs.push(ints("kernel_shape", &[k, k]));
                attrs.push(ints("strides", &[stride, stride]));
                attrs.push(ints("pads", &[pad, pad, pad, pad]));
                if group > 1 {
                    attrs.push(int("group", group));
                }
                if self.rare()? {
                    attrs.push(ints("dilations", &[2, 2]));
                }
                if rank == 4 {
                    let o = |d: i64| (d + 2 * pad - k) / stride + 1;
                    out_shape = Some(vec![s[0], oc, o(s[2]), o(s[3])]);
                }
            }
            "Relu" | "Sigmoid" | "Tanh" | "HardSwish" | "Identity" | "Exp" | "Neg" | "Abs"
            | "Sqrt" | "Erf" | "Dropout" => out_shape = shape.clone(),
            "HardSigmoid" | "LeakyRelu" => {
                let alpha = self.value()?;
                attrs.push(float("alpha", alpha));
                out_shape = shape.clone();
            }
            "Clip" => {
                if self.opset < 11 {
                    attrs.push(float("min", 0.0));
                    attrs.push(float("max", 6.0));
                } else {
                    let lo = self.init_f32(&[])?;
                    let hi = self.init_f32(&[])?;
                    inputs.push(lo);
                    inputs.push(hi);
                }
                out_shape = shape.clone();
            }
            "Add" | "Mul" | "Sub" | "Div" | "Max" | "Min" | "Pow" => {
                let other = match self.u.int_in_range(0..=3)? {
                    0 => x.clone(),
                    1 if rank == 4 => self.init_f32(&[1, c, 1, 1])?,
                    2 => self.init_f32(&[])?,
                    _ => {
                        let (y, _) = self.pick_input()?;
                        y
                    }
                };
                inputs.push(other);
                out_shape = shape.clone();
            }
            "MaxPool" | "AveragePool" => {
                let k = self.u.int_in_range(1..=3)?;
                let stride = self.u.int_in_range(1..=2)?;
                attrs.push(ints("kernel_shape", &[k, k]));
                attrs.push(ints("strides", &[stride, stride]));
                if self.u.arbitrary()? {
                    attrs.push(string("auto_pad", "SAME_UPPER"));
                } else if rank == 4 {
                    out_shape = Some(vec![
                        s[0],
                        s[1],
                        (s[2] - k) / stride + 1,
                        (s[3] - k) / stride + 1,
                    ]);
                }
                if self.rare()? {
                    attrs.push(int("ceil_mode", 1));
                    out_shape = None;
                }
            }
            "GlobalAveragePool" | "GlobalMaxPool" if rank == 4 => {
                out_shape = Some(vec![s[0], s[1], 1, 1]);
            }
            "BatchNormalization" => {
                for _ in 0..4 {
                    let p = self.init_f32(&[c])?;
                    inputs.push(p);
                }
                // The variance must be positive to be meaningful; the generator leaves
                // it as drawn (negative variances are the importer's to judge).
                attrs.push(float("epsilon", 1e-5));
                out_shape = shape.clone();
            }
            "Flatten" => {
                attrs.push(int("axis", 1));
                if rank >= 1 {
                    out_shape = Some(vec![
                        s[0],
                        s[1..].iter().fold(1i64, |a, &d| a.saturating_mul(d)),
                    ]);
                }
            }
            "Gemm" | "MatMul" => {
                let k = s.last().copied().unwrap_or(1).clamp(1, MAX_INIT);
                let m = self.u.int_in_range(1..=10)?;
                let gemm = op == "Gemm";
                let trans_b = gemm && self.u.arbitrary()?;
                let w = if trans_b {
                    self.init_f32(&[m, k])?
                } else {
                    self.init_f32(&[k, m])?
                };
                inputs.push(w);
                if gemm {
                    if trans_b {
                        attrs.push(int("transB", 1));
                    }
                    let b = self.init_f32(&[m])?;
                    inputs.push(b);
                }
                if rank >= 1 && (rank == 2 || !gemm) {
                    let mut o = s.clone();
                    *o.last_mut().expect("rank >= 1") = m;
                    out_shape = Some(o);
                }
            }
            "Reshape" => {
                let choice = self.u.int_in_range(0..=3)?;
                let target = match choice {
                    0 => vec![self.u.arbitrary()?, -1],
                    1 => vec![0, -1, 1],
                    _ => vec![s.first().copied().unwrap_or(1), -1],
                };
                let t = self.init_i64(&[target.len() as i64], target)?;
                inputs.push(t);
                if rank >= 1 && choice >= 2 {
                    out_shape = Some(vec![
                        s[0],
                        s[1..].iter().fold(1i64, |a, &d| a.saturating_mul(d)),
                    ]);
                }
            }
            "Transpose" => {
                let mut perm: Vec<i64> = (0..rank as i64).collect();
                if rank > 1 {
                    let i = self.u.choose_index(rank)?;
                    let j = self.u.choose_index(rank)?;
                    perm.swap(i, j);
                }
                if self.rare()? {
                    perm.push(7);
                }
                out_shape = Some(
                    perm.iter()
                        .filter_map(|&p| s.get(p as usize))
                        .copied()
                        .collect(),
                );
                attrs.push(ints("perm", &perm));
            }
            "Concat" => {
                let (y, _) = self.pick_input()?;
                inputs.push(y);
                attrs.push(int("axis", self.u.int_in_range(-2..=3)?));
            }
            "Softmax" => {
                attrs.push(int("axis", self.u.int_in_range(-1..=3)?));
                out_shape = shape.clone();
            }
            "Pad" => {
                let p = self.u.int_in_range(0..=2)?;
                let mut pads = vec![0; 2 * rank];
                if rank == 4 {
                    pads[2] = p;
                    pads[3] = p;
                    pads[6] = p;
                    pads[7] = p;
                }
                let mode = *self.u.choose(&["constant", "reflect", "edge", "wrap"])?;
                attrs.push(string("mode", mode));
                if self.opset < 11 {
                    attrs.push(ints("pads", &pads));
                } else {
                    let t = self.init_i64(&[pads.len() as i64], pads)?;
                    inputs.push(t);
                }
                if rank == 4 {
                    out_shape = Some(vec![s[0], s[1], s[2] + 2 * p, s[3] + 2 * p]);
                }
            }
            "Resize" | "Upsample" => {
                let f = self.u.int_in_range(1..=2)? as f32;
                let scales = self.init_f32(&[4])?;
                // Overwrite the drawn scales with a meaningful set most of the time.
                if let Some(t) = self.inits.last_mut()
                    && t.dims == [4]
                    && t.data_type == Some(DataType::Float as i32)
                {
                    t.raw_data = Some(
                        [1.0f32, 1.0, f, f]
                            .iter()
                            .flat_map(|x| x.to_le_bytes())
                            .collect(),
                    );
                }
                if op == "Resize" {
                    inputs.push(String::new());
                }
                inputs.push(scales);
                let mode = *self.u.choose(&["nearest", "linear", "cubic"])?;
                attrs.push(string("mode", mode));
                if rank == 4 {
                    let f = f as i64;
                    out_shape = Some(vec![s[0], s[1], s[2] * f, s[3] * f]);
                }
            }
            "Slice" => {
                let start = self.u.int_in_range(-2..=2)?;
                let end = self.u.int_in_range(-1..=i64::MAX)?;
                let axis = self.u.int_in_range(-1..=3)?;
                let st = self.init_i64(&[1], vec![start])?;
                let en = self.init_i64(&[1], vec![end])?;
                let ax = self.init_i64(&[1], vec![axis])?;
                inputs.extend([st, en, ax]);
            }
            "Squeeze" | "Unsqueeze" | "ReduceMean" => {
                let axis = self.u.int_in_range(-1..=4)?;
                if self.opset < 13 || (op == "ReduceMean" && self.opset < 18) {
                    attrs.push(ints("axes", &[axis]));
                } else {
                    let t = self.init_i64(&[1], vec![axis])?;
                    inputs.push(t);
                }
            }
            "Split" => {
                attrs.push(int("axis", 1));
            }
            "DepthToSpace" | "SpaceToDepth" => {
                attrs.push(int("blocksize", self.u.int_in_range(1..=2)?));
            }
            "QuantizeLinear" | "DequantizeLinear" => {
                let scale = self.init_f32(&[])?;
                inputs.push(scale);
                if self.u.arbitrary()? {
                    let name = self.fresh();
                    self.inits.push(TensorProto {
                        name: Some(name.clone()),
                        data_type: Some(DataType::Int8 as i32),
                        int32_data: vec![0],
                        ..Default::default()
                    });
                    inputs.push(name);
                }
                out_shape = shape.clone();
            }
            "Shape" => out_shape = Some(vec![rank as i64]),
            "Gather" => {
                let i = self.u.int_in_range(-1..=3)?;
                let t = self.init_i64(&[1], vec![i])?;
                inputs.push(t);
                attrs.push(int("axis", 0));
            }
            "Cast" => attrs.push(int("to", self.u.int_in_range(0..=16)?)),
            "ConstantOfShape" => {
                let dims = vec![1, self.u.int_in_range(1..=4)?];
                let t = self.init_i64(&[2], dims.clone())?;
                inputs = vec![t];
                out_shape = Some(dims);
            }
            "Constant" => {
                inputs.clear();
                let v = self.value()?;
                attrs.push(AttributeProto {
                    name: Some("value".into()),
                    r#type: Some(AttributeType::Tensor as i32),
                    t: Some(TensorProto {
                        dims: vec![],
                        data_type: Some(DataType::Float as i32),
                        float_data: vec![v],
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                out_shape = Some(vec![]);
            }
            "If" | "Loop" | "Scan" => {
                // A subgraph attribute, sometimes nested.
                let mut g = GraphProto::default();
                for _ in 0..self.u.int_in_range(0..=3)? {
                    g = GraphProto {
                        node: vec![NodeProto {
                            op_type: Some(op.clone()),
                            attribute: vec![AttributeProto {
                                name: Some("body".into()),
                                r#type: Some(AttributeType::Graph as i32),
                                g: Some(g),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                        ..Default::default()
                    };
                }
                attrs.push(AttributeProto {
                    name: Some("body".into()),
                    r#type: Some(AttributeType::Graph as i32),
                    g: Some(g),
                    ..Default::default()
                });
            }
            _ => {}
        }
        if self.rare()? {
            self.break_node(&mut inputs, &mut attrs)?;
            out_shape = None;
        }
        let out = self.fresh();
        let mut outputs = vec![out.clone()];
        if op == "Split" || (op == "Dropout" && self.u.arbitrary()?) {
            outputs.push(self.fresh());
        }
        if self.rare()? {
            // A duplicate definition.
            outputs.push(x);
        }
        let domain = if self.rare()? {
            Some("com.microsoft".into())
        } else {
            None
        };
        self.nodes.push(NodeProto {
            name: Some(format!("n{}", self.nodes.len())),
            op_type: Some(op),
            domain,
            input: inputs,
            output: outputs,
            attribute: attrs,
            ..Default::default()
        });
        self.tensors.push((out, out_shape));
        Ok(())
    }

    /// Breaks a node: an attribute of the wrong type or value, a dropped, extra or
    /// dangling input.
    fn break_node(
        &mut self,
        inputs: &mut Vec<String>,
        attrs: &mut Vec<AttributeProto>,
    ) -> Result<()> {
        match self.u.int_in_range(0..=6)? {
            0 => {
                if let Some(a) = attrs.first_mut() {
                    a.r#type = Some(self.u.int_in_range(0..=14)?);
                }
            }
            1 => {
                if let Some(a) = attrs.first_mut() {
                    a.ints = vec![self.u.arbitrary()?; self.u.int_in_range(0..=5)?];
                    a.i = Some(self.u.arbitrary()?);
                }
            }
            2 => {
                inputs.pop();
            }
            3 => {
                let n = self.any_name()?;
                inputs.push(n);
            }
            4 => {
                let n = self.any_name()?;
                if let Some(i) = inputs.first_mut() {
                    *i = n;
                }
            }
            5 => {
                let name: String = self.u.arbitrary::<&str>()?.chars().take(12).collect();
                attrs.push(int(&name, self.u.arbitrary()?));
            }
            _ => attrs.push(AttributeProto {
                name: Some("kernel_shape".into()),
                r#type: Some(AttributeType::Floats as i32),
                floats: vec![f32::NAN, 1e20],
                ..Default::default()
            }),
        }
        Ok(())
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}
