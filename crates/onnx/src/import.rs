//! The conversion walk: graph inputs, then every node in topological order through its
//! op handler, then graph outputs.
//!
//! The walk never stops at an unsupported feature: the handler records a [`Diagnostic`]
//! and the node's outputs become *poisoned*, so nodes downstream are still checked (their
//! attributes, their constant operands) but not built. Only when the whole model has been
//! walked does the importer decide: any diagnostic fails the import with all of them;
//! otherwise the first malformed-model error, if any; otherwise the graph.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use lutq_ir::{ElemType, Graph, NodeId, Op, TensorType};

use crate::attrs::Attrs;
use crate::error::{Diagnostic, DiagnosticKind, ImportError, Location};
use crate::model::{self, MAX_OPSET, MIN_OPSET, ModelInfo};
use crate::ops;
use crate::proto::tensor_proto::DataType;
use crate::proto::type_proto;
use crate::proto::{NodeProto, ValueInfoProto};
use crate::tensor::{ConstValue, TensorIssue, data_type_name, tensor_value};

pub(crate) use crate::limits::{MAX_ELEMENTS, MAX_RANK};

/// Element count of a shape, if it does not exceed [`MAX_ELEMENTS`].
pub(crate) fn element_count(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
}

/// How to import a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportOptions {
    /// The value bound to the first dimension of a graph input when it is symbolic or
    /// unknown (the batch dimension). Default 1.
    pub batch: usize,
    /// Graph inputs to replace by constants, by name: for models that take shape-like
    /// operands (Reshape shapes, Clip bounds, Pad pads, …) as graph inputs, as the ONNX
    /// backend tests do. A bound input is not an input of the imported graph.
    pub constant_inputs: BTreeMap<String, ConstValue>,
    /// Every dimension of a graph input, by name (CLI `--input-shape NAME=D0,D1,…`): fixes
    /// symbolic dimensions (dynamic H/W), so that shape computations fold at import. The
    /// rank must match the declared one and a declared static dimension must agree.
    /// Overrides [`ImportOptions::batch`] for that input.
    pub input_shapes: BTreeMap<String, Vec<usize>>,
    /// The scales of QuantizeLinear / DequantizeLinear pairs on run-time data snap to
    /// the nearest power of two (`2^round(log2 s)`, CLI `--round-scales`), so that a QDQ
    /// model with float activation scales maps onto the integer contract; the caller
    /// measures what it costs. Weights keep their dequantized values (snapping a weight
    /// scale would rescale its channel).
    pub round_scales: bool,
    /// Where the imported graph ends (CLI `--outputs`): ONNX tensor names, or node names
    /// (meaning the node's first output), that become the graph's outputs instead of the
    /// model's own. Only the nodes these depend on are imported, so a detector's box
    /// decoding or a classifier's post-processing after them may use any op. Empty: the
    /// model's outputs.
    pub outputs: Vec<String>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            batch: 1,
            constant_inputs: BTreeMap::new(),
            input_shapes: BTreeMap::new(),
            round_scales: false,
            outputs: Vec::new(),
        }
    }
}

/// The value of an ONNX tensor name during the walk.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    /// Computed by (or input to) the IR graph.
    Tensor(NodeId),
    /// Known at import: an initializer, a `Constant` node's output or a bound graph input.
    /// Enters the IR graph as a constant node only where an op reads it as data.
    Const(Rc<ConstValue>),
    /// A constant the importer cannot represent; reported where it is used.
    Unusable(Rc<Unusable>),
    /// A graph input that only feeds operands that must be constant, and that was not
    /// bound by [`ImportOptions::constant_inputs`].
    Unbound,
    /// Produced by a node that was not built (already diagnosed).
    Poisoned,
    /// The integer output of a QuantizeLinear on run-time data: not materialized; a
    /// DequantizeLinear that reads it (directly or through a Clip) becomes one
    /// fake-quantization op (`crate::ops::quantize`).
    Quantized(Rc<Quantized>),
}

/// A [`Value::Quantized`]: `clamp(round(x / scale) + zero_point, lo, hi)`.
#[derive(Debug)]
pub(crate) struct Quantized {
    pub x: NodeId,
    pub scale: f32,
    pub zero_point: i32,
    pub lo: i32,
    pub hi: i32,
    /// The QuantizeLinear node, for messages.
    pub producer: String,
}

impl Quantized {
    /// Why an op other than DequantizeLinear (or Clip) cannot read it, and the fix.
    pub(crate) fn misuse(&self) -> (String, String) {
        (
            format!(
                "it is the integer output of QuantizeLinear '{}', which lutq imports only where a DequantizeLinear reads it (directly or through a Clip)",
                self.producer
            ),
            "export QuantizeLinear → DequantizeLinear pairs around every op (the QDQ format of onnxruntime's quantize_static, PyTorch and Brevitas), or export the float model and let lutq quantize it".into(),
        )
    }
}

#[derive(Debug)]
pub(crate) struct Unusable {
    pub kind: DiagnosticKind,
    pub message: String,
    pub fix: String,
}

/// The result of walking a structurally valid model.
pub(crate) struct Outcome {
    pub graph: Graph,
    pub diagnostics: Vec<Diagnostic>,
    pub error: Option<ImportError>,
}

impl Outcome {
    pub fn into_result(self) -> Result<Graph, ImportError> {
        if !self.diagnostics.is_empty() {
            return Err(ImportError::Unsupported(self.diagnostics));
        }
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.graph),
        }
    }
}

pub(crate) struct Importer<'m> {
    info: &'m ModelInfo<'m>,
    pub graph: Graph,
    values: HashMap<&'m str, Value>,
    /// Constant nodes already added to the graph, by tensor name and shape.
    materialized: HashMap<(String, Vec<usize>), NodeId>,
    pub diagnostics: Vec<Diagnostic>,
    pub error: Option<ImportError>,
    /// [`ImportOptions::round_scales`].
    round_scales: bool,
}

/// Graph inputs read in some constant-only operand slot (sorted, deduplicated).
pub(crate) fn required_constants(info: &ModelInfo<'_>) -> Vec<String> {
    let mut v: Vec<String> = input_uses(info)
        .in_const
        .into_iter()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// How the non-initializer graph inputs are read.
#[derive(Default)]
struct InputUses<'m> {
    /// In some constant-only slot.
    in_const: HashSet<&'m str>,
    /// As data, or exported as a graph output.
    as_data: HashSet<&'m str>,
    /// In some slot whose value the import ignores (Dropout's ratio).
    ignored: HashSet<&'m str>,
}

fn input_uses<'m>(info: &ModelInfo<'m>) -> InputUses<'m> {
    let inputs: HashSet<&str> = info.inputs.iter().map(|v| v.name()).collect();
    let mut uses = InputUses::default();
    for node in &info.graph.node {
        let def = ops::lookup(node.domain(), node.op_type());
        let const_slots = def.map_or(&[][..], |def| (def.const_inputs)(info.opset));
        let ignored_slots = def.map_or(&[][..], |def| def.ignored_inputs);
        for (slot, name) in node.input.iter().enumerate() {
            let name = name.as_str();
            if inputs.contains(name) {
                if const_slots.contains(&slot) {
                    uses.in_const.insert(name);
                } else if ignored_slots.contains(&slot) {
                    uses.ignored.insert(name);
                } else {
                    uses.as_data.insert(name);
                }
            }
        }
    }
    for out in &info.graph_outputs {
        if inputs.contains(out) {
            uses.as_data.insert(out);
        }
    }
    uses
}

/// Walks a structurally valid model. Fails early only for errors in `options`.
pub(crate) fn convert(
    info: &ModelInfo<'_>,
    options: &ImportOptions,
) -> Result<Outcome, ImportError> {
    let mut imp = Importer {
        info,
        graph: Graph::new(info.graph.name()),
        values: HashMap::new(),
        materialized: HashMap::new(),
        diagnostics: Vec::new(),
        error: None,
        round_scales: options.round_scales,
    };
    imp.check_opsets();
    imp.bind_initializers();
    imp.bind_inputs(options)?;
    let outputs = imp.chosen_outputs(&options.outputs);
    let needed = outputs.as_ref().map(|o| needed_nodes(info, o));
    for &n in &info.order {
        if needed.as_ref().is_none_or(|needed| needed[n]) {
            imp.convert_node(&info.graph.node[n]);
        }
    }
    let names: Vec<&str> = match &outputs {
        Some(o) => o.iter().map(String::as_str).collect(),
        None => info.graph.output.iter().map(|o| o.name()).collect(),
    };
    imp.bind_outputs(&names);
    Ok(Outcome {
        graph: imp.graph,
        diagnostics: imp.diagnostics,
        error: imp.error,
    })
}

/// Per node of the model (index into `graph.node`), whether `outputs` depend on it.
fn needed_nodes(info: &ModelInfo<'_>, outputs: &[String]) -> Vec<bool> {
    let nodes = &info.graph.node;
    let producer = |name: &str| info.producer.get(name).copied();
    let mut needed = vec![false; nodes.len()];
    let mut stack: Vec<usize> = outputs.iter().filter_map(|o| producer(o)).collect();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut needed[i], true) {
            continue;
        }
        stack.extend(nodes[i].input.iter().filter_map(|n| producer(n)));
    }
    needed
}

impl<'m> Importer<'m> {
    fn check_opsets(&mut self) {
        let v = self.info.opset;
        if !(MIN_OPSET..=MAX_OPSET).contains(&v) {
            self.diagnostics.push(Diagnostic {
                location: Location::Model,
                kind: DiagnosticKind::UnsupportedOpset,
                message: format!(
                    "default-domain opset {v} is outside the range lutq knows ({MIN_OPSET} to {MAX_OPSET})"
                ),
                fix: format!(
                    "convert the model: onnx.version_converter.convert_version(model, {})",
                    v.clamp(MIN_OPSET, MAX_OPSET)
                ),
            });
        }
    }

    fn bind_initializers(&mut self) {
        // In file order, so that the first malformed initializer is the one reported.
        for t in &self.info.graph.initializer {
            let name = t.name();
            let value = match tensor_value(t) {
                Ok(v) => Value::Const(Rc::new(v)),
                Err(TensorIssue::Malformed(message)) => {
                    self.fail(ImportError::Tensor {
                        name: name.to_string(),
                        message,
                    });
                    Value::Poisoned
                }
                Err(TensorIssue::Unsupported { message, fix }) => {
                    Value::Unusable(Rc::new(Unusable {
                        kind: if message.contains("element type") {
                            DiagnosticKind::UnsupportedType
                        } else {
                            DiagnosticKind::UnsupportedStorage
                        },
                        message: format!("initializer '{name}': {message}"),
                        fix,
                    }))
                }
            };
            self.values.insert(name, value);
        }
        for s in &self.info.graph.sparse_initializer {
            if let Some(v) = &s.values
                && !v.name().is_empty()
            {
                self.values.insert(
                    v.name(),
                    Value::Unusable(Rc::new(Unusable {
                        kind: DiagnosticKind::UnsupportedStorage,
                        message: format!("'{}' is a sparse initializer", v.name()),
                        fix: "store the tensor densely (onnx.numpy_helper.from_array)".into(),
                    })),
                );
            }
        }
    }

    fn bind_inputs(&mut self, options: &ImportOptions) -> Result<(), ImportError> {
        let info = self.info;
        for name in options.constant_inputs.keys() {
            if !info.inputs.iter().any(|vi| vi.name() == name) {
                return Err(ImportError::ConstantInput {
                    name: name.clone(),
                    message:
                        "the model has no graph input of this name (initializers cannot be rebound)"
                            .into(),
                });
            }
        }
        let names: Vec<&str> = info.inputs.iter().map(|vi| vi.name()).collect();
        for (name, dims) in &options.input_shapes {
            let Some(vi) = info.inputs.iter().find(|vi| vi.name() == name) else {
                return Err(ImportError::InputShape {
                    name: name.clone(),
                    message: format!(
                        "the model has no graph input of this name; its inputs are {}",
                        names
                            .iter()
                            .map(|n| format!("'{n}'"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            };
            check_input_shape(vi, dims)?;
        }
        let uses = input_uses(info);
        for vi in &info.inputs {
            let name = vi.name();
            let value = if let Some(c) = options.constant_inputs.get(name) {
                check_bound_input(vi, c)?;
                Value::Const(Rc::new(c.clone()))
            } else if (uses.in_const.contains(name) || uses.ignored.contains(name))
                && !uses.as_data.contains(name)
            {
                // Read only where a constant is needed (reported there) or where the
                // value does not matter: not an input of the imported graph.
                Value::Unbound
            } else {
                match input_type(vi, options.batch, options.input_shapes.get(name)) {
                    Ok(ty) => Value::Tensor(self.graph.add_input(name, ty)),
                    Err(diags) => {
                        self.diagnostics.extend(diags);
                        Value::Poisoned
                    }
                }
            };
            self.values.insert(name, value);
        }
        Ok(())
    }

    fn convert_node(&mut self, node: &'m NodeProto) {
        let name = model::node_name(node);
        let Some(def) = ops::lookup(node.domain(), node.op_type()) else {
            let domain = node.domain();
            let (message, fix) = if domain.is_empty() || domain == "ai.onnx" {
                (
                    format!("op type '{}' is not supported", node.op_type()),
                    "rewrite it with supported ops (listed by lutq_onnx::supported_ops and in docs/conformance.md)"
                        .to_string(),
                )
            } else {
                (
                    format!(
                        "op '{}' of domain '{domain}' is not supported (lutq reads standard ONNX ops only)",
                        node.op_type()
                    ),
                    "export with standard ONNX ops, without vendor or contrib extensions".into(),
                )
            };
            self.diagnostics.push(Diagnostic {
                location: node_location(node, name),
                kind: DiagnosticKind::UnsupportedOp,
                message,
                fix,
            });
            self.poison_outputs(node);
            return;
        };
        if def.eval_const.is_some() && self.poisoned_constants(node) {
            // Would have been folded but for a poisoned (already reported) input: its
            // constant operands are not data, so converting it would report them.
            self.poison_outputs(node);
            return;
        }
        if let Some(eval) = def.eval_const
            && let Some(consts) = self.constant_inputs(node)
        {
            let mut cx = NodeCx {
                imp: self,
                node,
                name,
                failed: false,
                outputs: vec![None; node.output.len()],
            };
            match eval(&mut cx, &consts) {
                Ok(None) => {}
                Ok(Some(values)) => {
                    let failed = cx.failed;
                    let mut values = values.into_iter();
                    for out in &node.output {
                        let v = values.next();
                        if out.is_empty() {
                            continue;
                        }
                        let v = match v {
                            Some(c) if !failed => Value::Const(Rc::new(c)),
                            _ => Value::Poisoned,
                        };
                        self.values.insert(out.as_str(), v);
                    }
                    return;
                }
                Err(e) => {
                    self.fail(e);
                    self.poison_outputs(node);
                    return;
                }
            }
        }
        let mut cx = NodeCx {
            imp: self,
            node,
            name,
            failed: false,
            outputs: vec![None; node.output.len()],
        };
        let result = (def.convert)(&mut cx);
        let outputs = std::mem::take(&mut cx.outputs);
        if let Err(e) = result {
            self.fail(e);
        }
        for (out, value) in node.output.iter().zip(outputs) {
            if !out.is_empty() {
                self.values
                    .insert(out.as_str(), value.unwrap_or(Value::Poisoned));
            }
        }
    }

    /// The node's inputs by slot when every present one is a constant of the import and
    /// at least one is present.
    fn constant_inputs(&self, node: &NodeProto) -> Option<Vec<Option<Rc<ConstValue>>>> {
        let mut any = false;
        let mut consts = Vec::with_capacity(node.input.len());
        for name in &node.input {
            if name.is_empty() {
                consts.push(None);
                continue;
            }
            match self.values.get(name.as_str()) {
                Some(Value::Const(c)) => {
                    any = true;
                    consts.push(Some(Rc::clone(c)));
                }
                _ => return None,
            }
        }
        any.then_some(consts)
    }

    /// Whether every present input is a constant or poisoned, and one is poisoned.
    fn poisoned_constants(&self, node: &NodeProto) -> bool {
        let mut poisoned = false;
        for name in node.input.iter().filter(|n| !n.is_empty()) {
            match self.values.get(name.as_str()) {
                Some(Value::Const(_)) => {}
                Some(Value::Poisoned) | None => poisoned = true,
                _ => return false,
            }
        }
        poisoned
    }

    fn poison_outputs(&mut self, node: &'m NodeProto) {
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            self.values.insert(out.as_str(), Value::Poisoned);
        }
    }

    /// `--outputs`: each name as an ONNX tensor name, else as a node name (its first
    /// output). `None`: none given (the model's outputs). A name that is neither is a
    /// diagnostic, and so the import fails.
    fn chosen_outputs(&mut self, requested: &[String]) -> Option<Vec<String>> {
        if requested.is_empty() {
            return None;
        }
        let graph = &self.info.graph;
        let mut tensors = Vec::new();
        for name in requested {
            let is_tensor = graph.input.iter().any(|i| i.name() == name)
                || graph
                    .node
                    .iter()
                    .any(|n| n.output.iter().any(|o| o == name));
            let node_output = graph
                .node
                .iter()
                .find(|n| n.name() == name)
                .and_then(|n| n.output.iter().find(|o| !o.is_empty()));
            match (is_tensor, node_output) {
                (true, _) => tensors.push(name.clone()),
                (false, Some(o)) => tensors.push(o.clone()),
                (false, None) => self.diagnostics.push(Diagnostic {
                    location: Location::GraphOutput { name: name.clone() },
                    kind: DiagnosticKind::UnknownName,
                    message: format!("--outputs names '{name}', which is neither a tensor nor a node of the model"),
                    fix: "name a tensor (a node's output, as Netron shows it) or a node of the model; `lutq inspect MODEL` lists the nodes".into(),
                }),
            }
        }
        Some(tensors)
    }

    fn bind_outputs(&mut self, names: &[&str]) {
        for &name in names {
            let value = self.values.get(name).cloned().unwrap_or(Value::Poisoned);
            let id = match value {
                Value::Tensor(id) => Ok(id),
                Value::Const(c) => self
                    .materialize(name, &c)
                    .map_err(|(message, fix)| (DiagnosticKind::UnsupportedType, message, fix)),
                Value::Unusable(u) => Err((u.kind, u.message.clone(), u.fix.clone())),
                Value::Quantized(q) => {
                    let (message, fix) = q.misuse();
                    Err((DiagnosticKind::UnsupportedType, message, fix))
                }
                Value::Unbound | Value::Poisoned => continue,
            };
            let id = match id {
                Ok(id) => id,
                Err((kind, message, fix)) => {
                    self.diagnostics.push(Diagnostic {
                        location: Location::GraphOutput {
                            name: name.to_string(),
                        },
                        kind,
                        message,
                        fix,
                    });
                    continue;
                }
            };
            if let Err(e) = self.graph.add_output(name, id) {
                self.fail(ImportError::Malformed(format!(
                    "graph output '{name}': {e}"
                )));
            }
        }
    }

    fn fail(&mut self, e: ImportError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// The IR constant node for `c`, added on first use.
    fn materialize(&mut self, name: &str, c: &ConstValue) -> Result<NodeId, (String, String)> {
        let key = (name.to_string(), c.shape().to_vec());
        if let Some(&id) = self.materialized.get(&key) {
            return Ok(id);
        }
        let Some(t) = c.to_ir() else {
            return Err((
                format!(
                    "'{name}' is an {} tensor used as data (lutq's float IR computes in f32)",
                    c.data().type_name()
                ),
                "compute this value in float32, or fold it into a constant before import".into(),
            ));
        };
        let id = self.graph.add_constant(name, t);
        self.materialized.insert(key, id);
        Ok(id)
    }
}

fn node_location(node: &NodeProto, name: &str) -> Location {
    let domain = node.domain();
    Location::Node {
        name: name.to_string(),
        op_type: node.op_type().to_string(),
        domain: if domain == "ai.onnx" {
            String::new()
        } else {
            domain.to_string()
        },
    }
}

/// The IR type of a graph input, or every reason it has none.
fn input_type(
    vi: &ValueInfoProto,
    batch: usize,
    fixed: Option<&Vec<usize>>,
) -> Result<TensorType, Vec<Diagnostic>> {
    let name = vi.name();
    let diag = |kind, message: String, fix: &str| Diagnostic {
        location: Location::GraphInput {
            name: name.to_string(),
        },
        kind,
        message,
        fix: fix.to_string(),
    };
    let tensor = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t,
        other => {
            let what = match other {
                Some(type_proto::Value::SequenceType(_)) => "a sequence",
                Some(type_proto::Value::MapType(_)) => "a map",
                Some(type_proto::Value::OptionalType(_)) => "an optional",
                Some(type_proto::Value::SparseTensorType(_)) => "a sparse tensor",
                _ => "of no declared type",
            };
            return Err(vec![diag(
                DiagnosticKind::UnsupportedType,
                format!("the input is {what}; lutq takes dense f32 tensors only"),
                "make the input a dense float32 tensor",
            )]);
        }
    };
    let mut diags = Vec::new();
    let elem = tensor.elem_type.unwrap_or(0);
    if elem != DataType::Float as i32 {
        diags.push(diag(
            DiagnosticKind::UnsupportedType,
            format!(
                "element type {} is not supported (lutq's float IR takes FLOAT inputs)",
                data_type_name(elem)
            ),
            "export the model with float32 inputs (or bind this input as a constant if it is a shape)",
        ));
    }
    if let Some(dims) = fixed {
        // Checked against the declaration by `check_input_shape`.
        if diags.is_empty() && (dims.len() > MAX_RANK || element_count(dims).is_none()) {
            diags.push(diag(
                DiagnosticKind::TooLarge,
                format!("shape {dims:?} has more than {MAX_ELEMENTS} elements (lutq_onnx::limits::MAX_ELEMENTS)"),
                "use a smaller input size",
            ));
        }
        return if diags.is_empty() {
            Ok(TensorType::new(ElemType::F32, dims.clone()))
        } else {
            Err(diags)
        };
    }
    let Some(shape) = &tensor.shape else {
        diags.push(diag(
            DiagnosticKind::DynamicDimension,
            "the input has no declared shape".into(),
            "declare the input shape when exporting (or set it with onnx.tools.update_model_dims)",
        ));
        return Err(diags);
    };
    if shape.dim.len() > MAX_RANK {
        diags.push(diag(
            DiagnosticKind::TooLarge,
            format!(
                "the input has {} dimensions, above lutq's limit of {MAX_RANK} (lutq_onnx::limits::MAX_RANK)",
                shape.dim.len()
            ),
            "use an input of at most 16 dimensions (or raise MAX_RANK in crates/onnx/src/limits.rs)",
        ));
        return Err(diags);
    }
    let (suggestion, placeholders) = suggested_shape(shape, batch);
    let mut dims = Vec::with_capacity(shape.dim.len());
    for (i, d) in shape.dim.iter().enumerate() {
        use crate::proto::tensor_shape_proto::dimension::Value as D;
        let known = match &d.value {
            Some(D::DimValue(v)) => usize::try_from(*v).ok(),
            _ => None,
        };
        match known {
            Some(v) => dims.push(v),
            None if i == 0 => dims.push(batch),
            None => {
                let what = match &d.value {
                    Some(D::DimParam(p)) if !p.is_empty() => format!("symbolic ('{p}')"),
                    _ => "unknown".to_string(),
                };
                diags.push(diag(
                    DiagnosticKind::DynamicDimension,
                    format!(
                        "dimension {i} is {what}; only the first (batch) dimension may be dynamic unless the input's shape is given"
                    ),
                    &format!(
                        "pass --input-shape {name}={suggestion} with {} replaced by the sizes to compile for (ImportOptions::input_shapes), or export with a fixed input size",
                        placeholders.join(", ")
                    ),
                ));
            }
        }
    }
    if diags.is_empty() && element_count(&dims).is_none() {
        diags.push(diag(
            DiagnosticKind::TooLarge,
            format!("shape {dims:?} has more than {MAX_ELEMENTS} elements (lutq_onnx::limits::MAX_ELEMENTS)"),
            "use a smaller input (or batch) size",
        ));
    }
    if diags.is_empty() {
        Ok(TensorType::new(ElemType::F32, dims))
    } else {
        Err(diags)
    }
}

/// `D0,D1,…` for `--input-shape`: static dims as declared, a symbolic first dim as the
/// batch, other symbolic dims by their name (or `?`).
fn suggested_shape(shape: &crate::proto::TensorShapeProto, batch: usize) -> (String, Vec<String>) {
    use crate::proto::tensor_shape_proto::dimension::Value as D;
    let mut placeholders = Vec::new();
    let dims = shape
        .dim
        .iter()
        .enumerate()
        .map(|(i, d)| match &d.value {
            Some(D::DimValue(v)) if *v >= 0 => v.to_string(),
            _ if i == 0 => batch.to_string(),
            other => {
                // A short symbol the user recognises (`H`, `width`) stays; exporters'
                // generated ones (`p2o.DynamicDimension.1`, `unk__42`) and unnamed
                // dimensions become `d{i}`, which reads as a placeholder.
                let label = match other {
                    Some(D::DimParam(p)) if is_plain_symbol(p) => p.clone(),
                    _ => format!("d{i}"),
                };
                placeholders.push(label.clone());
                label
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    (dims, placeholders)
}

/// A symbolic dimension name worth repeating in a suggestion: a short identifier with no
/// digits (exporters number the names they make up).
fn is_plain_symbol(p: &str) -> bool {
    !p.is_empty() && p.len() <= 12 && p.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
}

/// A shape given in [`ImportOptions::input_shapes`] must have the declared rank and agree
/// with every declared static dimension.
fn check_input_shape(vi: &ValueInfoProto, dims: &[usize]) -> Result<(), ImportError> {
    use crate::proto::tensor_shape_proto::dimension::Value as D;
    let err = |message: String| ImportError::InputShape {
        name: vi.name().to_string(),
        message,
    };
    let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Ok(());
    };
    let Some(shape) = &t.shape else {
        return Ok(());
    };
    if shape.dim.len() != dims.len() {
        return Err(err(format!(
            "the given shape {dims:?} has rank {}, the input is declared with rank {} ({})",
            dims.len(),
            shape.dim.len(),
            suggested_shape(shape, 1).0
        )));
    }
    for (i, (d, &given)) in shape.dim.iter().zip(dims).enumerate() {
        // A negative declared size (Paddle writes -1 for a dynamic batch) is as unknown
        // as a symbol.
        if let Some(D::DimValue(v)) = d.value
            && v >= 0
            && v != given as i64
        {
            return Err(err(format!(
                "dimension {i} is given as {given}, but the model declares it {v}"
            )));
        }
    }
    Ok(())
}

/// A bound constant must agree with the input's declared element type and static dims.
fn check_bound_input(vi: &ValueInfoProto, c: &ConstValue) -> Result<(), ImportError> {
    let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Ok(());
    };
    let err = |message: String| ImportError::ConstantInput {
        name: vi.name().to_string(),
        message,
    };
    let elem = t.elem_type.unwrap_or(0);
    let float_like = [
        DataType::Float,
        DataType::Double,
        DataType::Float16,
        DataType::Bfloat16,
    ]
    .iter()
    .any(|&d| d as i32 == elem);
    let int_like = [DataType::Int64, DataType::Int32, DataType::Bool]
        .iter()
        .any(|&d| d as i32 == elem);
    let ok = match c.data() {
        crate::tensor::ConstData::F32(_) => float_like || elem == 0,
        crate::tensor::ConstData::I64(_) | crate::tensor::ConstData::Bool(_) => {
            int_like || elem == 0
        }
    };
    if !ok {
        return Err(err(format!(
            "the input is declared {}, the bound value is {}",
            data_type_name(elem),
            c.data().type_name()
        )));
    }
    if let Some(shape) = &t.shape {
        use crate::proto::tensor_shape_proto::dimension::Value as D;
        let declared: Vec<Option<i64>> = shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(D::DimValue(v)) => Some(v),
                _ => None,
            })
            .collect();
        let fits = declared.len() == c.shape().len()
            && declared
                .iter()
                .zip(c.shape())
                .all(|(d, &s)| d.is_none_or(|d| d == s as i64));
        if !fits {
            return Err(err(format!(
                "the bound value has shape {:?}, the input is declared {:?}",
                c.shape(),
                declared
            )));
        }
    }
    Ok(())
}

/// What an op handler sees of its node, and the only way it touches the graph.
pub(crate) struct NodeCx<'a, 'm> {
    imp: &'a mut Importer<'m>,
    node: &'m NodeProto,
    name: &'m str,
    /// A diagnostic was recorded for this node or an input is poisoned: do not build.
    failed: bool,
    outputs: Vec<Option<Value>>,
}

impl<'m> NodeCx<'_, 'm> {
    pub fn name(&self) -> &'m str {
        self.name
    }

    /// [`ImportOptions::round_scales`].
    pub fn round_scales(&self) -> bool {
        self.imp.round_scales
    }

    pub fn op_type(&self) -> &'m str {
        self.node.op_type()
    }

    /// The default-domain opset version.
    pub fn opset(&self) -> i64 {
        self.imp.info.opset
    }

    pub fn attrs(&self) -> Attrs<'m> {
        Attrs::new(self.node, self.name)
    }

    /// True once anything about this node prevents building it.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The tensor name in input `slot`, if the slot is present and non-empty.
    pub fn input_name(&self, slot: usize) -> Option<&'m str> {
        self.node
            .input
            .get(slot)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Number of input slots, empty trailing ones included.
    pub fn input_count(&self) -> usize {
        self.node.input.len()
    }

    /// An [`ImportError::InvalidNode`] for this node.
    pub fn invalid(&self, message: impl Into<String>) -> ImportError {
        ImportError::InvalidNode {
            node: self.name.to_string(),
            op_type: self.op_type().to_string(),
            message: message.into(),
        }
    }

    /// Records an unsupported feature of this node.
    pub fn unsupported(&mut self, kind: DiagnosticKind, message: String, fix: impl Into<String>) {
        self.failed = true;
        self.imp.diagnostics.push(Diagnostic {
            location: node_location(self.node, self.name),
            kind,
            message,
            fix: fix.into(),
        });
    }

    /// Records an unsupported value of attribute `attr`.
    pub fn unsupported_attr(&mut self, attr: &str, message: &str, fix: impl Into<String>) {
        self.unsupported(
            DiagnosticKind::UnsupportedAttribute,
            format!("attribute '{attr}': {message}"),
            fix,
        );
    }

    /// The walk's value of input `slot` (`None` for an absent or empty slot).
    pub fn input_value(&self, slot: usize) -> Option<Value> {
        self.input_name(slot).map(|n| self.value(n))
    }

    /// Whether the tensor named by output `slot` is read by some node or is a graph
    /// output.
    pub fn output_used(&self, slot: usize) -> bool {
        self.node.output.get(slot).is_some_and(|out| {
            !out.is_empty()
                && (self.imp.info.uses.get(out.as_str()).copied().unwrap_or(0) > 0
                    || self.imp.info.graph_outputs.contains(out.as_str()))
        })
    }

    /// Number of output slots, empty ones included.
    pub fn output_count(&self) -> usize {
        self.node.output.len()
    }

    /// The IR constant node for a value this handler made (e.g. an integer operand
    /// converted to f32), named `{node}:{suffix}`. `None` (and the node failed) when it
    /// cannot be represented.
    pub fn constant_node(&mut self, suffix: &str, c: &ConstValue) -> Option<NodeId> {
        let name = format!("{}:{suffix}", self.name);
        match self.imp.materialize(&name, c) {
            Ok(id) => Some(id),
            Err((message, fix)) => {
                self.unsupported(DiagnosticKind::UnsupportedType, message, fix);
                None
            }
        }
    }

    fn value(&self, name: &str) -> Value {
        // `analyze` proved every input defined and the order topological, so a missing
        // entry cannot happen; treat it as poisoned rather than panic.
        self.imp
            .values
            .get(name)
            .cloned()
            .unwrap_or(Value::Poisoned)
    }

    fn report_unusable(&mut self, slot: usize, role: &str, u: &Unusable) {
        self.unsupported(
            u.kind,
            format!("input {slot} ({role}): {}", u.message),
            u.fix.clone(),
        );
    }

    /// Required data input: the IR node producing it. `None` when it cannot be built
    /// (reported, or poisoned upstream); the node is then marked failed.
    pub fn tensor(&mut self, slot: usize, role: &str) -> Result<Option<NodeId>, ImportError> {
        match self.input_name(slot) {
            None => Err(self.invalid(format!("required input {slot} ({role}) is missing"))),
            Some(name) => Ok(self.tensor_named(slot, role, name, None)),
        }
    }

    /// Optional data input: `None` when absent, or when present but unusable — then the
    /// node is marked failed, so after checking [`NodeCx::failed`] `None` means absent.
    pub fn opt_tensor(&mut self, slot: usize, role: &str) -> Option<NodeId> {
        let name = self.input_name(slot)?;
        self.tensor_named(slot, role, name, None)
    }

    /// Like [`NodeCx::tensor`], but a constant input enters the IR with shape `shape`
    /// (same element count) instead of its own: used to rewrite legacy broadcasting.
    pub fn tensor_reshaped(
        &mut self,
        slot: usize,
        role: &str,
        shape: Vec<usize>,
    ) -> Result<Option<NodeId>, ImportError> {
        match self.input_name(slot) {
            None => Err(self.invalid(format!("required input {slot} ({role}) is missing"))),
            Some(name) => Ok(self.tensor_named(slot, role, name, Some(shape))),
        }
    }

    fn tensor_named(
        &mut self,
        slot: usize,
        role: &str,
        name: &str,
        reshape: Option<Vec<usize>>,
    ) -> Option<NodeId> {
        let id = match self.value(name) {
            Value::Tensor(id) => match reshape {
                None => Some(id),
                Some(shape) => {
                    let out = self.emit_aux("reshape", Op::Reshape { shape }, &[id]);
                    match out {
                        Ok(id) => Some(id),
                        Err(e) => {
                            self.imp.fail(e);
                            None
                        }
                    }
                }
            },
            Value::Const(c) => {
                let c = match reshape {
                    None => Some(c),
                    Some(shape) => c.reshaped(shape).map(Rc::new),
                };
                match c {
                    None => {
                        let e = self.invalid(format!(
                            "input {slot} ({role}) '{name}' cannot be reshaped for broadcasting"
                        ));
                        self.imp.fail(e);
                        None
                    }
                    Some(c) => match self.imp.materialize(name, &c) {
                        Ok(id) => Some(id),
                        Err((message, fix)) => {
                            self.unsupported(
                                DiagnosticKind::UnsupportedType,
                                format!("input {slot} ({role}): {message}"),
                                fix,
                            );
                            None
                        }
                    },
                }
            }
            Value::Unusable(u) => {
                self.report_unusable(slot, role, &u);
                None
            }
            Value::Unbound => {
                // Only reachable when the op table's constant slots disagree with the
                // handler; report it rather than panic.
                self.unsupported(
                    DiagnosticKind::NonConstantInput,
                    format!("input {slot} ({role}) '{name}' is an unbound graph input"),
                    format!("bind '{name}' with ImportOptions::constant_inputs"),
                );
                None
            }
            Value::Quantized(q) => {
                let (message, fix) = q.misuse();
                self.unsupported(
                    DiagnosticKind::UnsupportedType,
                    format!("input {slot} ({role}): {message}"),
                    fix,
                );
                None
            }
            Value::Poisoned => None,
        };
        if id.is_none() {
            self.failed = true;
        }
        id
    }

    /// The shape of input `slot` if it is known without adding anything to the graph.
    pub fn peek_shape(&self, slot: usize) -> Option<Vec<usize>> {
        match self.value(self.input_name(slot)?) {
            Value::Tensor(id) => Some(self.imp.graph.node(id).ty.shape.clone()),
            Value::Const(c) => Some(c.shape().to_vec()),
            Value::Quantized(q) => Some(self.imp.graph.node(q.x).ty.shape.clone()),
            Value::Unusable(_) | Value::Unbound | Value::Poisoned => None,
        }
    }

    /// Required operand that must be known at import (initializer, `Constant` output or
    /// bound graph input). `None` when it is not (reported) or is poisoned.
    pub fn constant(
        &mut self,
        slot: usize,
        role: &str,
    ) -> Result<Option<Rc<ConstValue>>, ImportError> {
        match self.input_name(slot) {
            None => Err(self.invalid(format!("required input {slot} ({role}) is missing"))),
            Some(name) => Ok(self.constant_named(slot, role, name)),
        }
    }

    /// Optional constant operand: `None` when absent, or when present but not usable —
    /// then the node is marked failed, so after checking [`NodeCx::failed`] `None` means
    /// absent.
    pub fn opt_constant(&mut self, slot: usize, role: &str) -> Option<Rc<ConstValue>> {
        let name = self.input_name(slot)?;
        self.constant_named(slot, role, name)
    }

    fn constant_named(&mut self, slot: usize, role: &str, name: &str) -> Option<Rc<ConstValue>> {
        let fix = format!(
            "make '{name}' an initializer or Constant (e.g. fold it with onnxsim), or bind it with ImportOptions::constant_inputs"
        );
        let c = match self.value(name) {
            Value::Const(c) => Some(c),
            Value::Tensor(id) => {
                let what = if self.imp.graph.inputs().contains(&id) {
                    "a graph input"
                } else {
                    "computed at run time"
                };
                self.unsupported(
                    DiagnosticKind::NonConstantInput,
                    format!("input {slot} ({role}) '{name}' must be a constant, but it is {what}"),
                    fix,
                );
                None
            }
            Value::Unbound => {
                self.unsupported(
                    DiagnosticKind::NonConstantInput,
                    format!(
                        "input {slot} ({role}) '{name}' must be a constant, but it is a graph input"
                    ),
                    fix,
                );
                None
            }
            Value::Unusable(u) => {
                self.report_unusable(slot, role, &u);
                None
            }
            Value::Quantized(q) => {
                let (message, fix) = q.misuse();
                self.unsupported(
                    DiagnosticKind::NonConstantInput,
                    format!("input {slot} ({role}) '{name}' must be a constant: {message}"),
                    fix,
                );
                None
            }
            Value::Poisoned => None,
        };
        if c.is_none() {
            self.failed = true;
        }
        c
    }

    /// Reports every output from `from` on that the model reads: lutq computes only the
    /// first output of multi-output ops.
    pub fn reject_used_outputs(&mut self, from: usize, what: &[&str]) {
        for (i, out) in self.node.output.iter().enumerate().skip(from) {
            if out.is_empty() {
                continue;
            }
            let used = self.imp.info.uses.get(out.as_str()).copied().unwrap_or(0) > 0
                || self.imp.info.graph_outputs.contains(out.as_str());
            if used {
                let role = what.get(i - from).copied().unwrap_or("optional output");
                self.unsupported(
                    DiagnosticKind::UnsupportedOutput,
                    format!("output {i} ({role}) '{out}' is used, but lutq computes only the first output"),
                    format!("remove the uses of '{out}' (inference needs only output 0)"),
                );
            }
        }
    }

    /// The type of an IR node.
    pub fn ty(&self, id: NodeId) -> TensorType {
        self.imp.graph.node(id).ty.clone()
    }

    /// Adds the IR node for this ONNX node, named after it.
    pub fn emit(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId, ImportError> {
        self.add(self.name.to_string(), op, inputs)
    }

    /// Adds a helper IR node of a multi-node lowering, named `{node}:{suffix}`.
    pub fn emit_aux(
        &mut self,
        suffix: &str,
        op: Op,
        inputs: &[NodeId],
    ) -> Result<NodeId, ImportError> {
        self.add(format!("{}:{suffix}", self.name), op, inputs)
    }

    fn add(&mut self, name: String, op: Op, inputs: &[NodeId]) -> Result<NodeId, ImportError> {
        let id = self
            .imp
            .graph
            .add_node(name, op, inputs)
            .map_err(|source| ImportError::Ir {
                node: self.name.to_string(),
                op_type: self.op_type().to_string(),
                source: Box::new(source),
            })?;
        let ty = &self.imp.graph.node(id).ty;
        if ty.shape.len() > MAX_RANK {
            return Err(self.invalid(format!(
                "its result {ty} has {} dimensions, above lutq's limit of {MAX_RANK} (lutq_onnx::limits::MAX_RANK, a constant in crates/onnx/src/limits.rs)",
                ty.shape.len()
            )));
        }
        if element_count(&ty.shape).is_none() {
            return Err(self.invalid(format!(
                "its result {ty} would have more than {MAX_ELEMENTS} elements (lutq_onnx::limits::MAX_ELEMENTS, a constant in crates/onnx/src/limits.rs)"
            )));
        }
        Ok(id)
    }

    /// Emits `op` and makes it the node's first output.
    pub fn emit_output(&mut self, op: Op, inputs: &[NodeId]) -> Result<(), ImportError> {
        let id = self.emit(op, inputs)?;
        self.set_output(0, Value::Tensor(id));
        Ok(())
    }

    pub fn set_output(&mut self, slot: usize, value: Value) {
        if let Some(o) = self.outputs.get_mut(slot) {
            *o = Some(value);
        }
    }
}
