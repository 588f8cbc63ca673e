//! Lowering the float graph to the integer IR, layer by layer over the calibration set.

use std::collections::HashMap;
use std::time::Instant;

use lutq_interp::int::{IntData, exec_with};
use lutq_ir::int::{
    ConvGeom, Extremum, IntElem, IntGraph, IntInput, IntNode, IntOp, IntOutput, QAdd, QLinear,
    QMul, QResize, QSoftmax, QType, QWeights, Rescale, ValueId,
};
use lutq_ir::{Activation, BinaryOp, FusedActivation, Graph, NodeId, Op, Pool, Tensor};
use rayon::prelude::*;
use serde::Serialize;

use crate::budget::{Candidate, LayerCandidates};
use crate::calib::{Calibration, LogHistogram, StepStatistics};
use crate::elementwise::{self, Regions};
use crate::fit::{
    self, FitOptions, LayerProblem, RowScale, ScaleKind, TargetMoments, WeightFormat,
};
use crate::hessian::{Dequantized, FloatTargets, PatchGeometry, PatchStatistics, patch_statistics};
use crate::{LayerFormat, Progress, QuantError, QuantOptions};

mod blocks;
mod guard;
pub(crate) mod trained;
mod warn;

/// What the quantizer decided for one linear layer.
#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    pub name: String,
    /// `lut4`, `int4` (4-bit codes on a uniform table), `int8`.
    pub weights: String,
    pub input_exp: i32,
    pub output_exp: i32,
    pub output_type: String,
    pub weight_exp_min: i32,
    pub weight_exp_max: i32,
    /// The fit objective `Σ (w* − ŵ)ᵀ H (w* − ŵ)` relative to `Σ wᵀ H w` (`w*` the fit's
    /// target rows: the float targets when used, else the float weights `w`).
    pub relative_output_error: f64,
    /// Whether the weights were fitted to float targets (compensating the error
    /// upstream; see `fit/target.rs`).
    pub float_target: bool,
    /// The float targets' ridge relative to the mean diagonal of `Ĥ`, chosen on held-out
    /// calibration samples (`fit::choose_float_target`); `None` without float targets
    /// (too few patches, option off, or the float weights did best on held-out data).
    pub float_target_ridge: Option<f64>,
    /// Largest |bias change| from bias correction, in units of the layer's output step.
    pub bias_correction_steps: f64,
    /// Worst-case accumulator magnitude over 2^31 − 1.
    pub accumulator_headroom: f64,
    pub weight_bytes: usize,
    /// Output channels treated as constants: weights that move the output by less than
    /// half an output step over the input range (BatchNorm with γ ≈ 0, zero rows),
    /// quantized to zero, the bias carrying the channel.
    pub constant_channels: usize,
    /// Output channels whose weight exponent was lowered below the fitted one so that
    /// their bias and accumulator fit i32 and their rescale is representable.
    pub capped_exponents: usize,
}

/// What [`crate::quantize`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct QuantReport {
    pub mode: String,
    pub calibration_samples: usize,
    /// The LUT modes' most tables per layer (`QuantOptions::lut_tables`, resolved).
    pub lut_tables: usize,
    /// Linear layers given int8 weights because 4 bits would not take fewer bytes
    /// (`QuantOptions::int8_where_smaller`).
    pub int8_where_smaller: Vec<String>,
    pub layers: Vec<LayerReport>,
    pub weight_bytes: usize,
    pub float_weight_bytes: usize,
    /// Residual Adds whose operands arrive at one exponent (no alignment shift).
    pub aligned_adds: usize,
    /// All residual Adds.
    pub adds: usize,
    pub seconds: f64,
    /// Where `seconds` went (wall time; the rest is bookkeeping).
    pub stage_seconds: StageSeconds,
    /// Problems with the calibration data or the fit that did not stop quantization
    /// (constant inputs, too few samples or patches, constant layer inputs); the CLI
    /// prints them before its results.
    pub warnings: Vec<String>,
    /// The range of every graph input over the calibration set (what `quantize_input`
    /// was calibrated for), so callers can warn about inputs far outside it.
    pub calibrated_inputs: Vec<CalibratedInput>,
    /// With a flash budget: what it chose per layer (set by the caller that planned it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flash_budget: Option<crate::budget::BudgetReport>,
    /// With `QuantOptions::reconstruct`: what it did per linear layer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reconstruction: Vec<crate::reconstruct::LayerReconstruction>,
    /// Of a QDQ model with trained grids: the nodes whose exponent came from the
    /// calibration data because no QuantizeLinear/DequantizeLinear pair fixes it (empty
    /// for a float model, where every exponent does). Empty means the calibration data
    /// chose nothing in the program.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub calibrated_without_pair: Vec<String>,
}

/// Wall seconds of quantization's stages (`cargo xtask bench-quant` prints them), each
/// summed over the nodes.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StageSeconds {
    /// The float model, node by node over every calibration sample.
    pub float_pass: f64,
    /// Histograms and channel means of the float values.
    pub float_statistics: f64,
    /// Patch moments (`H`, the float targets' cross moments) of each linear layer's
    /// quantized input.
    pub input_moments: f64,
    /// Choosing exponents, fitting weights and everything else of lowering a node.
    pub fit: f64,
    /// The lowered integer nodes over every calibration sample.
    pub integer_pass: f64,
}

/// A graph input's calibrated range.
#[derive(Clone, Debug, Serialize)]
pub struct CalibratedInput {
    pub name: String,
    pub min: f32,
    pub max: f32,
}

/// How much more activation MSE [`Lowering::aligned_exponent`] accepts to save an Add's
/// alignment shifts.
const ALIGN_MSE_SLACK: f64 = 1.5;

/// Checks every op before any work, reporting all problems at once.
pub fn check_supported(graph: &Graph) -> Result<(), QuantError> {
    let found = unsupported(graph);
    if found.is_empty() {
        return Ok(());
    }
    let nodes: Vec<NodeId> = found.iter().filter_map(|(id, _)| *id).collect();
    let mut problems: Vec<String> = found.into_iter().map(|(_, p)| p).collect();
    problems.extend(cut_hint(graph, &nodes));
    Err(QuantError::Unsupported(problems))
}

/// Where to end the model when every unsupported node is post-processing (no linear
/// layer at or after any of them, e.g. a detector's box decoding against anchors): the
/// nodes just before that tail, whose outputs would become the graph's, as the fix
/// `--outputs A,B` (the import then drops the tail).
fn cut_hint(graph: &Graph, problems: &[NodeId]) -> Option<String> {
    // The tail: the unsupported nodes and everything after them.
    let mut tail = std::collections::HashSet::new();
    for id in graph.topo_order() {
        if problems.contains(&id) || graph.node_inputs(id).iter().any(|i| tail.contains(i)) {
            tail.insert(id);
        }
    }
    let linear = |id: &NodeId| matches!(graph.node(*id).op, Op::Conv(_) | Op::Gemm(_) | Op::MatMul);
    if tail.is_empty() || tail.iter().any(linear) {
        return None;
    }
    // Computed nodes before the tail that feed it or are outputs themselves.
    let cut: Vec<NodeId> = graph
        .topo_order()
        .into_iter()
        .filter(|id| !tail.contains(id) && graph.constant(*id).is_none())
        .filter(|id| !matches!(graph.node(*id).op, Op::Input))
        .filter(|&id| {
            graph.users(id).iter().any(|u| tail.contains(u))
                || graph.outputs().iter().any(|o| o.node == id)
        })
        .collect();
    let names: Vec<&str> = cut.iter().map(|&id| graph.node(id).name.as_str()).collect();
    // A linear layer here may carry a BatchNorm, bias Add or activation that lutq-opt
    // folded into it under the layer's own name: the cut belongs after those.
    let folded = cut.iter().any(linear).then_some(
        "; for a Conv or Gemm listed, name the last BatchNorm or activation that directly follows it instead, if any",
    );
    (!names.is_empty()).then(|| {
        format!(
            "fix: these nodes only post-process the network's outputs; to compile the network without them and compute them on the host, end the model before them with --outputs {} (those nodes' outputs become the graph's{})",
            names.join(","),
            folded.unwrap_or("")
        )
    })
}

/// What the integer program of an optimized float graph will consist of, before any
/// calibration (`lutq inspect`): integer ops by kind, and every node that has no
/// integer form, with the reason.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IntegerForms {
    /// Integer op (`IntOp::name`) → how many float nodes become one.
    pub ops: std::collections::BTreeMap<&'static str, usize>,
    /// Element-wise float nodes folded into a table (not materialized).
    pub inside_tables: usize,
    /// Activations folded into their producer's clamp.
    pub fused: usize,
    pub unsupported: Vec<String>,
}

/// [`IntegerForms`] of `graph` (optimized, batch 1).
pub fn integer_forms(graph: &Graph) -> IntegerForms {
    let regions = Regions::analyze(graph);
    let mut forms = IntegerForms {
        unsupported: unsupported(graph).into_iter().map(|(_, p)| p).collect(),
        ..Default::default()
    };
    for id in graph.topo_order() {
        let node = graph.node(id);
        let form = match &node.op {
            Op::Constant(_) => continue,
            Op::Input => "quantize_input",
            _ if regions.root(id).is_some() => {
                let root = regions.root(id).unwrap_or(id);
                let producer = &graph.node(root).op;
                let fusable = matches!(
                    producer,
                    Op::Conv(_) | Op::Gemm(_) | Op::MatMul | Op::Binary(_)
                ) && graph.users(root).len() == 1;
                if elementwise::is_plain_clamp(graph, id, root) && fusable {
                    forms.fused += 1;
                    continue;
                } else if elementwise::is_plain_clamp(graph, id, root) && !regions.is_interior(id) {
                    "requant"
                } else if regions.is_interior(id) {
                    forms.inside_tables += 1;
                    continue;
                } else {
                    "table"
                }
            }
            Op::Conv(_) => "conv",
            Op::Gemm(_) | Op::MatMul => "dense",
            Op::Binary(BinaryOp::Add) => "add",
            Op::Binary(BinaryOp::Mul) => "mul",
            Op::Softmax { .. } => "softmax",
            Op::Transpose { .. } => "transpose",
            Op::Slice { .. } => "slice",
            Op::Resize(_) => "resize",
            Op::Binary(BinaryOp::Max) => "max",
            Op::Binary(BinaryOp::Min) => "min",
            Op::Reshape { .. } => "reshape",
            Op::Concat { .. } => "concat",
            Op::MaxPool(_) => "max_pool",
            Op::AveragePool(_) | Op::SumPool(_) | Op::GlobalAveragePool | Op::GlobalSumPool => {
                "sum_pool"
            }
            _ => continue,
        };
        *forms.ops.entry(form).or_default() += 1;
    }
    forms
}

/// Every problem [`check_supported`] reports, one line each, with the node it is about
/// (`None`: the graph as a whole).
fn unsupported(graph: &Graph) -> Vec<(Option<NodeId>, String)> {
    let mut problems = Vec::new();
    if graph.inputs().len() != 1 {
        problems.push((
            None,
            format!(
                "the graph has {} inputs; the quantizer takes single-input models",
                graph.inputs().len()
            ),
        ));
    }
    for o in graph.outputs() {
        if graph.constant(o.node).is_some() {
            problems.push((
                Some(o.node),
                format!(
                    "graph output '{}' is a constant, and an integer program computes its outputs from its input (drop that output from the model)",
                    o.name
                ),
            ));
        }
    }
    let regions = Regions::analyze(graph);
    // Nodes that read the graph input, directly or not; an op that does not computes
    // from constants only, and only constants are lowered as such (weights, operands).
    let mut from_input = std::collections::HashSet::new();
    for id in graph.topo_order() {
        let node = graph.node(id);
        let inputs = graph.node_inputs(id);
        if matches!(node.op, Op::Input) || inputs.iter().any(|i| from_input.contains(i)) {
            from_input.insert(id);
        }
        let is_const = |i: usize| inputs.get(i).is_some_and(|&n| graph.constant(n).is_some());
        let batch = node.ty.shape.first().copied().unwrap_or(1);
        let problem = match &node.op {
            Op::Input | Op::Constant(_) => None,
            _ if !from_input.contains(&id) => Some(
                "computes from constants only, which the import does not fold for this op; fold it into a constant in the model (e.g. onnx-simplifier)".to_string(),
            ),
            _ if batch != 1 => Some("the quantizer works on batch-1 graphs (import with --batch 1)".to_string()),
            // Element-wise functions of one tensor: one table per region exit.
            _ if regions.root(id).is_some() => None,
            Op::Binary(BinaryOp::Mul) if !is_const(0) && !is_const(1) => {
                let [a, b] = [inputs[0], inputs[1]];
                let (sa, sb) = (&graph.node(a).ty.shape, &graph.node(b).ty.shape);
                (product_order(sa, sb).is_none()).then(|| format!(
                    "product of activations {sa:?} × {sb:?}: one operand must be the result's shape and the other broadcast over its trailing dimensions (e.g. [1, C, 1, 1] × [1, C, H, W])"
                ))
            }
            Op::Softmax { axis } => (graph.node(inputs[0]).ty.shape[*axis] > lutq_ir::int::QSoftmax::MAX_ROW).then(|| {
                format!("softmax over more than {} elements", lutq_ir::int::QSoftmax::MAX_ROW)
            }),
            Op::Transpose { .. } | Op::Slice { .. } => None,
            Op::Resize(_) => (graph.node(inputs[0]).ty.rank() != 4)
                .then(|| "resize of a tensor that is not [N, C, H, W]".to_string()),
            Op::Binary(BinaryOp::Max | BinaryOp::Min) if !is_const(0) && !is_const(1) => {
                let [a, b] = [inputs[0], inputs[1]];
                let (sa, sb) = (&graph.node(a).ty.shape, &graph.node(b).ty.shape);
                (sa != sb || *sa != node.ty.shape).then(|| format!(
                    "maximum or minimum of activations {sa:?} and {sb:?}: the operands must have one shape (no broadcasting)"
                ))
            }
            Op::Conv(_) if !is_const(1) || (inputs.len() > 2 && !is_const(2)) => {
                Some("weights and bias must be constants".into())
            }
            Op::Conv(_) => None,
            Op::Gemm(g) if g.trans_a || !is_const(1) || (inputs.len() > 2 && !is_const(2)) => Some(
                "only Gemm(x, constant B[, constant C]) without transA is supported".into(),
            ),
            Op::Gemm(_) => None,
            Op::MatMul if !is_const(1) || graph.node(inputs[1]).ty.rank() != 2 || node.ty.rank() != 2 => {
                Some("only MatMul of a [1, K] tensor by constant [K, N] weights is supported".into())
            }
            Op::MatMul => None,
            Op::Binary(BinaryOp::Add) if is_const(0) || is_const(1) => Some(
                "Add of a constant is not folded into a linear layer; fold it (lutq-opt) or remove it"
                    .into(),
            ),
            Op::Binary(BinaryOp::Add) => {
                let [a, b] = [inputs[0], inputs[1]];
                (graph.node(a).ty.shape != graph.node(b).ty.shape)
                    .then(|| "residual Add needs operands of one shape (no broadcasting)".into())
            }
            Op::MaxPool(_) | Op::SumPool(_) | Op::AveragePool(_) | Op::GlobalSumPool | Op::GlobalAveragePool
                if graph.node(inputs[0]).ty.rank() != 4 =>
            {
                Some("pool of a tensor that is not [N, C, H, W]".into())
            }
            Op::Concat { .. } | Op::MaxPool(_) | Op::SumPool(_) | Op::GlobalSumPool | Op::Reshape { .. } => None,
            Op::AveragePool(p) => avg_divisor(p, &graph.node(inputs[0]).ty.shape)
                .err(),
            Op::GlobalAveragePool => {
                let s = &graph.node(inputs[0]).ty.shape;
                let n: usize = s[2..].iter().product();
                (!n.is_power_of_two()).then(|| {
                    format!("GlobalAveragePool over {n} positions, not a power of two, feeds no linear layer that could absorb 1/{n} (lutq-opt folds it when one follows)")
                })
            }
            Op::Activation(Activation::Relu) => None,
            Op::Activation(Activation::Clip { min, max }) if min.unwrap_or(f32::MIN) == 0.0 && max.is_none_or(|m| m > 0.0) => None,
            _ if crate::elementwise::constant_layout(graph, id).is_err() => {
                crate::elementwise::constant_layout(graph, id).err()
            }
            op => Some(format!(
                "op '{}' has no integer form; supported: conv, gemm, matmul, add, mul, max, min, concat, max/avg/sum pools, reshape, transpose, slice, resize, softmax, and element-wise functions of one tensor (tables)",
                op.name()
            )),
        };
        if let Some(p) = problem {
            problems.push((
                Some(id),
                format!("node '{}' ({}): {p}", node.name, node.op.name()),
            ));
        }
    }
    problems
}

/// The divisor of an AveragePool as a power of two (`log2`), or why it is not one.
fn avg_divisor(p: &Pool, input: &[usize]) -> Result<i32, String> {
    let n = p.kernel[0] * p.kernel[1];
    let padded = p.pads.iter().any(|&v| v > 0) || p.ceil_mode;
    if padded && !p.count_include_pad {
        return Err("AveragePool whose border windows have other divisors (padding not counted) cannot be a shift".into());
    }
    let _ = input;
    if n.is_power_of_two() {
        Ok(n.trailing_zeros() as i32)
    } else {
        Err(format!(
            "AveragePool over {n} taps, not a power of two, feeds no linear layer that could absorb 1/{n} (lutq-opt folds it when one follows)"
        ))
    }
}

struct Lowering<'a> {
    graph: &'a Graph,
    regions: Regions,
    /// The float statistics (histograms, pre-activation channel means), gathered node by
    /// node as the float model runs in step with the lowering (`run_float`).
    stats: Calibration,
    options: &'a QuantOptions,
    samples: Vec<&'a [f32]>,
    out: IntGraph,
    /// The integer value computing each lowered float node.
    lowered: HashMap<NodeId, ValueId>,
    /// Each value on every calibration sample, while some reader still needs it.
    data: HashMap<ValueId, Vec<IntData>>,
    /// Float readers (and graph outputs) of each node.
    float_readers: HashMap<NodeId, usize>,
    /// Readers left per value; its data is dropped at zero.
    readers: HashMap<ValueId, usize>,
    /// The float model's value of each node on every calibration sample, while some
    /// reader still needs it, computed in step with the lowering (so only live tensors are
    /// held): the statistics, and with `QuantOptions::float_target` the float targets.
    float_values: HashMap<NodeId, Vec<Vec<f32>>>,
    /// Readers left per float node; its float values are dropped at zero.
    float_left: HashMap<NodeId, usize>,
    /// Float nodes already run (a fused activation runs before its producer is lowered).
    floated: std::collections::HashSet<NodeId>,
    /// Exponents and clamps fixed by a QDQ model's trained grids (`trained.rs`).
    trained: HashMap<NodeId, trained::Grid>,
    /// With trained grids: the nodes whose exponent a histogram chose instead
    /// (`QuantReport::calibrated_without_pair`).
    calibrated_without_pair: std::cell::RefCell<std::collections::BTreeSet<NodeId>>,
    report: QuantReport,
    /// With `QuantOptions::sensitivity`: every linear layer's fit in each format.
    candidates: Vec<LayerCandidates>,
    /// With block reconstruction: the blocks, by their last layer.
    blocks: HashMap<NodeId, blocks::BlockPlan>,
    /// The fits of the blocks' layers, until their block is trained.
    block_fits: HashMap<NodeId, blocks::BlockLayerFit>,
}

/// One linear layer fitted and lowered in one weight format.
#[derive(Clone)]
struct BuiltLinear {
    layer: QLinear,
    weight_kind: &'static str,
    exp: i32,
    elem: IntElem,
    w_exps: Vec<i32>,
    max_correction: f64,
    capped_exponents: usize,
    relative_error: f64,
    bound: lutq_ir::int::AccumulatorBound,
}

fn elem_name(e: IntElem) -> String {
    e.name().to_string()
}

pub fn lower(
    graph: &Graph,
    calib: &Tensor,
    options: &QuantOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<(IntGraph, QuantReport, Vec<LayerCandidates>), QuantError> {
    let start = Instant::now();
    let input = graph.inputs()[0];
    let per_sample = graph.node(input).ty.num_elements();
    let data = calib
        .as_f32()
        .ok_or_else(|| QuantError::Calibration("calibration data must be float32".into()))?;
    if per_sample == 0 || data.len() % per_sample != 0 || data.is_empty() {
        return Err(QuantError::Calibration(format!(
            "calibration data of shape {:?} does not split into samples of {:?}",
            calib.shape(),
            graph.node(input).ty.shape
        )));
    }
    let mut l = Lowering {
        graph,
        regions: Regions::analyze(graph),
        stats: Calibration::default(),
        options,
        samples: data.chunks(per_sample).collect(),
        out: IntGraph::new(graph.name.clone()),
        lowered: HashMap::new(),
        data: HashMap::new(),
        float_readers: HashMap::new(),
        readers: HashMap::new(),
        float_values: HashMap::new(),
        float_left: HashMap::new(),
        floated: Default::default(),
        trained: HashMap::new(),
        calibrated_without_pair: Default::default(),
        report: QuantReport {
            mode: options.mode.name().into(),
            calibration_samples: data.len() / per_sample.max(1),
            lut_tables: options
                .lut_tables
                .unwrap_or_else(|| crate::default_lut_tables(graph)),
            ..Default::default()
        },
        candidates: Vec::new(),
        blocks: HashMap::new(),
        block_fits: HashMap::new(),
    };
    match trained::trained_grids(graph) {
        Ok(grids) => {
            // The pairs round ties to even (ONNX QuantizeLinear): so does the program
            // that reproduces them.
            if !grids.is_empty() {
                l.out.rounding = lutq_ir::int::Rounding::HalfEven;
            }
            l.trained = grids
        }
        Err(problems) => l.report.warnings.push(format!(
            "the model's QuantizeLinear/DequantizeLinear pairs do not all have power-of-two scales and zero point 0 (which map onto the integer contract exactly), so exponents are calibrated instead of taken from the model: {}",
            problems.join("; ")
        )),
    }
    for id in graph.node_ids() {
        let mut n = graph.users(id).len();
        n += graph.outputs().iter().filter(|o| o.node == id).count();
        l.float_left.insert(id, n);
        l.float_readers.insert(id, l.regions.readers(id));
    }
    if let Some(r) = &options.reconstruct
        && r.blocks
        && l.trained.is_empty()
        && !options.sensitivity
    {
        let plans = blocks::find_blocks(graph, |id| l.fusable_activation(id));
        for plan in plans {
            // A block reads its input's data when its last layer is lowered.
            *l.float_readers.entry(plan.input).or_default() += 1;
            l.blocks.insert(*plan.layers.last().expect("layers"), plan);
        }
    }
    let order: Vec<NodeId> = graph
        .topo_order()
        .into_iter()
        .filter(|&id| !matches!(graph.node(id).op, Op::Constant(_)))
        .collect();
    // The float statistics are gathered during the lowering, as the float model runs
    // node by node in step with it (one float pass over the calibration set).
    l.stats.samples = l.samples.len();
    progress(Progress::Calibrating {
        done: l.samples.len(),
        total: l.samples.len(),
    });
    for (i, &id) in order.iter().enumerate() {
        progress(Progress::Lowering {
            done: i,
            total: order.len(),
            node: &graph.node(id).name,
        });
        l.run_float(id)?;
        // An Add or product lowered with its ReLU as clamp needs the ReLU's statistics.
        if let Some((user, _)) = l.fusable_activation(id) {
            l.run_float(user)?;
        }
        // (An activation fused into its producer is already lowered.)
        if !l.lowered.contains_key(&id) {
            // Whatever of lowering is not a float or integer pass or the moments is fit.
            let stages = l.report.stage_seconds;
            let start = Instant::now();
            l.lower_node(id)?;
            let s = &mut l.report.stage_seconds;
            s.fit += start.elapsed().as_secs_f64()
                - (s.float_pass - stages.float_pass)
                - (s.float_statistics - stages.float_statistics)
                - (s.input_moments - stages.input_moments)
                - (s.integer_pass - stages.integer_pass);
        }
        if let Some(plan) = l.blocks.remove(&id) {
            let r = options
                .reconstruct
                .as_ref()
                .expect("blocks come with the option");
            l.reconstruct_block(&plan, r)?;
        }
        l.release_float_inputs(id);
    }
    debug_assert!(
        l.block_fits.is_empty(),
        "every block's layers are released when the block trains"
    );
    l.report.calibrated_without_pair = l
        .calibrated_without_pair
        .take()
        .into_iter()
        .map(|id| graph.node(id).name.clone())
        .collect();
    for o in graph.outputs() {
        let value = l.lowered[&o.node];
        l.out.outputs.push(IntOutput {
            name: o.name.clone(),
            value,
        });
    }
    l.out.validate()?;
    l.report.weight_bytes = l.out.weight_bytes();
    l.report.seconds = start.elapsed().as_secs_f64();
    Ok((l.out, l.report, l.candidates))
}

/// A fused-activation clamp for an output of exponent `exp`.
fn act_bounds(act: Option<FusedActivation>, elem: IntElem, exp: i32) -> (i32, i32) {
    let (lo, hi) = elem.range();
    match act {
        None => (lo, hi),
        Some(FusedActivation::Relu) => (0, hi),
        Some(FusedActivation::Clip { max }) => {
            let m = (max as f64 * (exp as f64).exp2()).floor();
            (0, (m.min(hi as f64)).max(0.0) as i32)
        }
    }
}

impl<'a> Lowering<'a> {
    /// The exponent of node `id`'s value in `lo..=hi`: the trained grid's, or the best
    /// for its calibration histogram.
    fn exponent(&self, id: NodeId, lo: i32, hi: i32) -> Result<i32, QuantError> {
        match self.trained.get(&id) {
            Some(g) => Ok(g.exp),
            None => {
                self.note_calibrated(id);
                Ok(self.hist(id)?.choose_exponent(lo, hi))
            }
        }
    }

    /// Records that the calibration data chose something of node `id` in a model whose
    /// other grids are trained.
    fn note_calibrated(&self, id: NodeId) {
        if !self.trained.is_empty() {
            self.calibrated_without_pair.borrow_mut().insert(id);
        }
    }

    /// The 8-bit type of node `id`'s value: the trained grid's where there is one (its
    /// range, not the calibration data's sign, so that a QDQ model's program does not
    /// depend on the samples), else unsigned when the calibration values are never
    /// negative.
    fn elem_of(&self, id: NodeId, hist_min: f32) -> IntElem {
        match self.trained.get(&id) {
            Some(g) if g.lo < 0 => IntElem::I8,
            Some(_) => IntElem::U8,
            None if hist_min >= 0.0 => IntElem::U8,
            None => IntElem::I8,
        }
    }

    /// A clamp narrowed to node `id`'s trained grid, if it has one.
    fn trained_clamp(&self, id: NodeId, (lo, hi): (i32, i32)) -> (i32, i32) {
        match self.trained.get(&id) {
            Some(g) if g.lo.max(lo) <= g.hi.min(hi) => (g.lo.max(lo), g.hi.min(hi)),
            _ => (lo, hi),
        }
    }

    /// A copy, so that `self` stays free to mutate.
    fn hist(&self, id: NodeId) -> Result<LogHistogram, QuantError> {
        self.stats.histograms.get(&id).cloned().ok_or_else(|| {
            QuantError::Calibration(format!(
                "no statistics for node '{}'",
                self.graph.node(id).name
            ))
        })
    }

    /// The integer value of input `slot` of `id`, and its type.
    fn input(&self, id: NodeId, slot: usize) -> (ValueId, QType) {
        let v = self.lowered[&self.graph.node_inputs(id)[slot]];
        (v, self.out.ty(v).clone())
    }

    /// Adds `node` as the value of float node `id` (and of `alias`, a fused activation
    /// reading it), runs it on every calibration sample, and releases the data of inputs
    /// nobody reads any more.
    fn emit(&mut self, id: NodeId, node: IntNode, alias: Option<NodeId>) -> Result<(), QuantError> {
        // A node the backends would refuse (e.g. an Add of operands 2^40 apart in scale:
        // alignment shifts beyond 16) is an error naming it, not overflowing arithmetic.
        self.out.validate_node(self.out.nodes.len(), &node)?;
        let samples = &self.samples;
        let graph = &self.out;
        let inputs: Vec<&Vec<IntData>> = node.inputs.iter().map(|v| &self.data[v]).collect();
        // Table weights decoded (and prepared for the kernels) once for all samples.
        let decoded = match &node.op {
            IntOp::Linear(l) => Some(lutq_interp::int::LinearWeights::of(l)),
            _ => None,
        };
        let start = Instant::now();
        let data: Vec<IntData> = (0..samples.len())
            .into_par_iter()
            .map(|s| {
                let ins: Vec<&IntData> = inputs.iter().map(|d| &d[s]).collect();
                exec_with(graph, &node, &ins, &[samples[s]], decoded.as_ref())
            })
            .collect::<Result<_, _>>()?;
        self.report.stage_seconds.integer_pass += start.elapsed().as_secs_f64();
        let value = self.out.push(node);
        let last = alias.unwrap_or(id);
        self.lowered.insert(id, value);
        self.lowered.insert(last, value);
        self.readers.insert(value, self.float_readers[&last]);
        self.data.insert(value, data);
        let mut inputs = self.out.node(value).inputs.clone();
        inputs.sort_unstable();
        inputs.dedup();
        for v in inputs {
            let n = self.readers.entry(v).or_default();
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.data.remove(&v);
            }
        }
        Ok(())
    }

    /// Runs float node `id` on every calibration sample (after its inputs; once) and
    /// records its statistics: the histogram of its values and, for a linear layer, the
    /// per-channel mean of its output before its fused activation.
    fn run_float(&mut self, id: NodeId) -> Result<(), QuantError> {
        if !self.floated.insert(id) {
            return Ok(());
        }
        let graph = self.graph;
        let node = graph.node(id);
        let mut step = StepStatistics::default();
        let start = Instant::now();
        let statistics;
        let values: Vec<Vec<f32>> = if matches!(node.op, Op::Input) {
            let values: Vec<Vec<f32>> = self.samples.iter().map(|s| s.to_vec()).collect();
            step.histogram = crate::calib::histogram(&values);
            statistics = start.elapsed().as_secs_f64();
            values
        } else {
            // A linear layer runs without its fused activation (its channel means are
            // taken before it), which is then applied here as the float IR defines it.
            let (op, act) = match &node.op {
                Op::Conv(c) => {
                    let mut c = c.clone();
                    let act = c.activation.take();
                    (Op::Conv(c), act)
                }
                Op::Gemm(g) => {
                    let mut g = *g;
                    let act = g.activation.take();
                    (Op::Gemm(g), act)
                }
                op => (op.clone(), None),
            };
            let linear = matches!(op, Op::Conv(_) | Op::Gemm(_) | Op::MatMul);
            let channels = node.ty.shape.get(1).copied().unwrap_or(1).max(1);
            let (step_graph, inputs) = single_node_graph(graph, id, op)?;
            let interp = lutq_interp::Interpreter::new(&step_graph)?;
            let data: Vec<&Vec<Vec<f32>>> = inputs.iter().map(|i| &self.float_values[i]).collect();
            // Sample by sample, the statistics are taken while the values are still in
            // cache (one pass over them, not one per statistic), in chunks of
            // `FLOAT_CHUNK` samples whose plane-mean sums are added in chunk order: the
            // same bits on any thread count.
            let index: Vec<usize> = (0..self.samples.len()).collect();
            let chunks: Vec<FloatChunk> = index
                .par_chunks(FLOAT_CHUNK)
                .map(|chunk| {
                    let begin = Instant::now();
                    let mut statistics = std::time::Duration::ZERO;
                    let mut histogram = crate::calib::HistogramBuilder::new();
                    let mut sums = linear.then(|| vec![0.0; channels]);
                    let mut values = Vec::with_capacity(chunk.len());
                    for &s in chunk {
                        let slices: Vec<&[f32]> = data.iter().map(|d| d[s].as_slice()).collect();
                        let mut v = interp.run_slices(&slices, None)?.swap_remove(0);
                        let t = Instant::now();
                        if let Some(sums) = sums.as_mut() {
                            crate::calib::add_plane_means(&v, sums);
                        }
                        statistics += t.elapsed();
                        // `Activation::apply` of the two fused forms (vectorized).
                        match act {
                            Some(FusedActivation::Relu) => {
                                v.iter_mut().for_each(|x| *x = x.max(0.0))
                            }
                            Some(FusedActivation::Clip { max }) => {
                                v.iter_mut().for_each(|x| *x = x.max(0.0).min(max))
                            }
                            None => {}
                        }
                        let t = Instant::now();
                        histogram.add(&v);
                        statistics += t.elapsed();
                        values.push(v);
                    }
                    let t = Instant::now();
                    let histogram = histogram.finish();
                    statistics += t.elapsed();
                    Ok(FloatChunk {
                        values,
                        plane_mean_sums: sums,
                        histogram,
                        seconds: begin.elapsed().as_secs_f64(),
                        statistics_seconds: statistics.as_secs_f64(),
                    })
                })
                .collect::<Result<_, QuantError>>()?;
            // Statistics' share of the wall time: their share of the chunks' time.
            let (busy, stats): (f64, f64) = chunks.iter().fold((0.0, 0.0), |(b, s), c| {
                (b + c.seconds, s + c.statistics_seconds)
            });
            let merge = Instant::now();
            if linear {
                let partials: Vec<Vec<f64>> = chunks
                    .iter()
                    .filter_map(|c| c.plane_mean_sums.clone())
                    .collect();
                step.channel_means = Some(crate::calib::mean_of_chunk_sums(
                    &partials,
                    self.samples.len(),
                ));
            }
            let mut values = Vec::with_capacity(self.samples.len());
            for c in chunks {
                step.histogram.merge(&c.histogram);
                values.extend(c.values);
            }
            statistics = merge.elapsed().as_secs_f64()
                + (merge - start).as_secs_f64() * if busy > 0.0 { stats / busy } else { 0.0 };
            values
        };
        let stages = &mut self.report.stage_seconds;
        stages.float_statistics += statistics;
        stages.float_pass += start.elapsed().as_secs_f64() - statistics;
        self.stats.histograms.insert(id, step.histogram);
        if let Some(m) = step.channel_means {
            self.stats.channel_means.insert(id, m);
        }
        self.float_values.insert(id, values);
        Ok(())
    }

    /// Releases the float values of `id`'s inputs that no node still to run reads.
    fn release_float_inputs(&mut self, id: NodeId) {
        for i in distinct_inputs(self.graph, id) {
            if let Some(n) = self.float_left.get_mut(&i) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.float_values.remove(&i);
                }
            }
        }
    }

    /// The single reader of `id`, if it is a ReLU / Clip(0, m) that can become the
    /// clamp of `id`'s integer op.
    fn fusable_activation(&self, id: NodeId) -> Option<(NodeId, FusedActivation)> {
        if self.graph.outputs().iter().any(|o| o.node == id) {
            return None;
        }
        let users = self.graph.users(id);
        let [user] = users.as_slice() else {
            return None;
        };
        match &self.graph.node(*user).op {
            Op::Activation(Activation::Relu) => Some((*user, FusedActivation::Relu)),
            Op::Activation(Activation::Clip {
                min: Some(min),
                max,
            }) if *min == 0.0 => Some((
                *user,
                match max {
                    Some(m) => FusedActivation::Clip { max: *m },
                    None => FusedActivation::Relu,
                },
            )),
            _ => None,
        }
    }

    fn lower_node(&mut self, id: NodeId) -> Result<(), QuantError> {
        let node = self.graph.node(id);
        let name = node.name.clone();
        if let Some(root) = self.regions.root(id) {
            // An interior member is computed inside its region's tables, a plain clamp
            // too (its root's data is released for the table's reader only).
            if self.regions.is_interior(id) {
                return Ok(());
            }
            if !elementwise::is_plain_clamp(self.graph, id, root) {
                return self.lower_table(id, root);
            }
        }
        match &node.op {
            Op::Binary(BinaryOp::Mul) => self.lower_product(id)?,
            Op::Softmax { axis } => {
                let (x, t) = self.input(id, 0);
                let step = t.step();
                let exp_table = (0..256)
                    .map(|d| {
                        let e = (-(d as f64) * step).exp() * QSoftmax::ONE as f64;
                        e.round().clamp(0.0, QSoftmax::ONE as f64) as i32
                    })
                    .collect();
                let n = IntNode {
                    name,
                    op: IntOp::Softmax(QSoftmax {
                        axis: *axis,
                        exp_table,
                    }),
                    inputs: vec![x],
                    ty: QType {
                        elem: IntElem::U8,
                        shape: node.ty.shape.clone(),
                        exp: QSoftmax::OUT_EXP,
                    },
                };
                self.emit(id, n, None)?;
            }
            Op::Slice {
                axis, start, step, ..
            } => {
                let (x, t) = self.input(id, 0);
                let n = IntNode {
                    name,
                    op: IntOp::Slice {
                        axis: *axis,
                        start: *start,
                        step: *step,
                    },
                    inputs: vec![x],
                    ty: QType {
                        shape: node.ty.shape.clone(),
                        ..t
                    },
                };
                self.emit(id, n, None)?;
            }
            Op::Resize(r) => {
                let (x, t) = self.input(id, 0);
                let q = QResize::from_float(r, [t.shape[2], t.shape[3]]);
                let n = IntNode {
                    name,
                    op: IntOp::Resize(q),
                    inputs: vec![x],
                    ty: QType {
                        shape: node.ty.shape.clone(),
                        ..t
                    },
                };
                self.emit(id, n, None)?;
            }
            Op::Binary(op @ (BinaryOp::Max | BinaryOp::Min)) => {
                let kind = match op {
                    BinaryOp::Max => Extremum::Max,
                    _ => Extremum::Min,
                };
                // The maximum of anything with a u8 is ≥ 0; the minimum only when both are.
                let unsigned = |ins: &[(ValueId, QType)]| match kind {
                    Extremum::Max => ins.iter().any(|(_, t)| t.elem == IntElem::U8),
                    Extremum::Min => ins.iter().all(|(_, t)| t.elem == IntElem::U8),
                };
                self.lower_aligned(id, unsigned, |shifts| IntOp::Extremum {
                    kind,
                    shifts: shifts.into_iter().map(|s| s.clamp(-16, 16)).collect(),
                })?;
            }
            Op::Transpose { perm } => {
                let (x, t) = self.input(id, 0);
                let n = IntNode {
                    name,
                    op: IntOp::Transpose { perm: perm.clone() },
                    inputs: vec![x],
                    ty: QType {
                        shape: node.ty.shape.clone(),
                        ..t
                    },
                };
                self.emit(id, n, None)?;
            }
            Op::Input => {
                let h = self.hist(id)?;
                let elem = self.elem_of(id, h.min);
                let (lo, hi) = elem.range();
                let exp = self.exponent(id, lo, hi)?;
                self.report.calibrated_inputs.push(CalibratedInput {
                    name: name.clone(),
                    min: h.min,
                    max: h.max,
                });
                let index = self
                    .graph
                    .inputs()
                    .iter()
                    .position(|&i| i == id)
                    .unwrap_or(0);
                self.out.inputs.push(IntInput {
                    name: name.clone(),
                    shape: node.ty.shape.clone(),
                });
                let n = IntNode {
                    name,
                    op: IntOp::QuantizeInput { input: index },
                    inputs: vec![],
                    ty: QType {
                        elem,
                        shape: node.ty.shape.clone(),
                        exp,
                    },
                };
                self.emit(id, n, None)?;
            }
            Op::Conv(_) | Op::Gemm(_) | Op::MatMul => self.lower_linear(id)?,
            Op::Binary(BinaryOp::Add) => {
                let ((va, ta), (vb, tb)) = (self.input(id, 0), self.input(id, 1));
                self.report.adds += 1;
                let fused = self.fusable_activation(id);
                let stat_node = fused.map_or(id, |(u, _)| u);
                let elem = if fused.is_some() {
                    IntElem::U8
                } else {
                    IntElem::I8
                };
                let (lo, hi) = elem.range();
                let exp = self.exponent(stat_node, lo, hi)?;
                let (lo, hi) =
                    self.trained_clamp(stat_node, act_bounds(fused.map(|f| f.1), elem, exp));
                let big = ta.exp.max(tb.exp);
                // A fused activation's name: the value is what that node computes.
                let name = fused.map_or(name, |(u, _)| self.graph.node(u).name.clone());
                let n = IntNode {
                    name,
                    op: IntOp::Add(QAdd {
                        align_a: big - ta.exp,
                        align_b: big - tb.exp,
                        shift: big - exp,
                        lo,
                        hi,
                    }),
                    inputs: vec![va, vb],
                    ty: QType {
                        elem,
                        shape: node.ty.shape.clone(),
                        exp,
                    },
                };
                self.emit(id, n, fused.map(|f| f.0))?;
            }
            Op::Activation(act) => {
                let (x, t) = self.input(id, 0);
                let fused = match act {
                    Activation::Clip { max: Some(m), .. } => FusedActivation::Clip { max: *m },
                    _ => FusedActivation::Relu,
                };
                let (lo, hi) = act_bounds(Some(fused), IntElem::U8, t.exp);
                let n = IntNode {
                    name,
                    op: IntOp::Requant {
                        rescale: Rescale::Shift(0),
                        lo,
                        hi,
                    },
                    inputs: vec![x],
                    ty: QType {
                        elem: IntElem::U8,
                        shape: t.shape,
                        exp: t.exp,
                    },
                };
                self.emit(id, n, None)?;
            }
            Op::Reshape { shape } => {
                let (x, t) = self.input(id, 0);
                let n = IntNode {
                    name,
                    op: IntOp::Reshape,
                    inputs: vec![x],
                    ty: QType {
                        shape: shape.clone(),
                        ..t
                    },
                };
                self.emit(id, n, None)?;
            }
            Op::MaxPool(p) => {
                let (x, t) = self.input(id, 0);
                let n = IntNode {
                    name,
                    op: IntOp::MaxPool(p.clone()),
                    inputs: vec![x],
                    ty: QType {
                        shape: node.ty.shape.clone(),
                        ..t
                    },
                };
                self.emit(id, n, None)?;
            }
            Op::SumPool(_) | Op::GlobalSumPool | Op::AveragePool(_) | Op::GlobalAveragePool => {
                let (x, t) = self.input(id, 0);
                let in_shape = &self.graph.node(self.graph.node_inputs(id)[0]).ty.shape;
                let (pool, divisor_log2) = match &node.op {
                    Op::SumPool(p) => (p.clone(), 0),
                    Op::AveragePool(p) => (
                        p.clone(),
                        avg_divisor(p, in_shape).map_err(|e| QuantError::Unsupported(vec![e]))?,
                    ),
                    _ => {
                        let plane = [in_shape[2], in_shape[3]];
                        let n = plane[0] * plane[1];
                        (
                            Pool::new(plane),
                            if matches!(node.op, Op::GlobalAveragePool) {
                                n.trailing_zeros() as i32
                            } else {
                                0
                            },
                        )
                    }
                };
                let elem = if t.elem == IntElem::U8 {
                    IntElem::U8
                } else {
                    IntElem::I8
                };
                let (lo, hi) = elem.range();
                let exp = self.exponent(id, lo, hi)?;
                let n = IntNode {
                    name,
                    op: IntOp::SumPool {
                        pool,
                        shift: t.exp + divisor_log2 - exp,
                        lo,
                        hi,
                    },
                    inputs: vec![x],
                    ty: QType {
                        elem,
                        shape: node.ty.shape.clone(),
                        exp,
                    },
                };
                self.emit(id, n, None)?;
            }
            Op::Concat { axis } => {
                let unsigned =
                    |ins: &[(ValueId, QType)]| ins.iter().all(|(_, t)| t.elem == IntElem::U8);
                self.lower_aligned(id, unsigned, |shifts| IntOp::Concat {
                    axis: *axis,
                    shifts,
                })?;
            }
            op => {
                return Err(QuantError::Unsupported(vec![format!(
                    "node '{name}' ({}): no integer form",
                    op.name()
                )]));
            }
        }
        Ok(())
    }

    /// An op over all of `id`'s inputs, each aligned to the output exponent by its own
    /// shift (`op(shifts)`, shift = input exponent − output exponent): Concat, Max, Min.
    /// The output is u8 when `unsigned(inputs)`, else i8.
    fn lower_aligned(
        &mut self,
        id: NodeId,
        unsigned: impl Fn(&[(ValueId, QType)]) -> bool,
        op: impl FnOnce(Vec<i32>) -> IntOp,
    ) -> Result<(), QuantError> {
        let node = self.graph.node(id);
        let ins: Vec<(ValueId, QType)> = (0..self.graph.node_inputs(id).len())
            .map(|slot| self.input(id, slot))
            .collect();
        let elem = if unsigned(&ins) {
            IntElem::U8
        } else {
            IntElem::I8
        };
        let (lo, hi) = elem.range();
        let exp = self.exponent(id, lo, hi)?;
        let n = IntNode {
            name: node.name.clone(),
            op: op(ins.iter().map(|(_, t)| t.exp - exp).collect()),
            inputs: ins.iter().map(|(v, _)| *v).collect(),
            ty: QType {
                elem,
                shape: node.ty.shape.clone(),
                exp,
            },
        };
        self.emit(id, n, None)
    }

    /// A region exit ([`crate::elementwise`]): one table from the root's codes to the
    /// exit's, at the exit's calibrated exponent.
    fn lower_table(&mut self, id: NodeId, root: NodeId) -> Result<(), QuantError> {
        let node = self.graph.node(id);
        let x = self.lowered[&root];
        let xt = self.out.ty(x).clone();
        let hist = self.hist(id)?;
        let elem = self.elem_of(id, hist.min);
        let (lo, hi) = elem.range();
        let exp = self.exponent(id, lo, hi)?;
        let ty = QType {
            elem,
            shape: node.ty.shape.clone(),
            exp,
        };
        let table = elementwise::build_table(self.graph, root, id, &xt, &ty, (lo, hi));
        let n = IntNode {
            name: node.name.clone(),
            op: IntOp::Table(table),
            inputs: vec![x],
            ty,
        };
        self.emit(id, n, None)
    }

    /// The product of two activations (squeeze-and-excitation gating): the operand of
    /// the result's shape first, the broadcast one second.
    fn lower_product(&mut self, id: NodeId) -> Result<(), QuantError> {
        let node = self.graph.node(id);
        let ((va, ta), (vb, tb)) = (self.input(id, 0), self.input(id, 1));
        let Some(swap) = product_order(&ta.shape, &tb.shape) else {
            return Err(QuantError::Unsupported(vec![format!(
                "node '{}' (mul): operands {:?} and {:?} do not broadcast as a product of activations",
                node.name, ta.shape, tb.shape
            )]));
        };
        let ((va, ta), (vb, tb)) = if swap {
            ((vb, tb), (va, ta))
        } else {
            ((va, ta), (vb, tb))
        };
        let fused = self.fusable_activation(id);
        let stat_node = fused.map_or(id, |(u, _)| u);
        let hist = self.hist(stat_node)?;
        let elem = if fused.is_some() {
            IntElem::U8
        } else {
            self.elem_of(stat_node, hist.min)
        };
        let (lo, hi) = elem.range();
        // The product's own resolution is 2^-(f_a + f_b): a finer output would only
        // shift left.
        let product_exp = ta.exp + tb.exp;
        let exp = self
            .exponent(stat_node, lo, hi)?
            .clamp(product_exp - 30, product_exp);
        let (lo, hi) = act_bounds(fused.map(|f| f.1), elem, exp);
        let name = fused.map_or(node.name.clone(), |(u, _)| self.graph.node(u).name.clone());
        let n = IntNode {
            name,
            op: IntOp::Mul(QMul {
                shift: product_exp - exp,
                lo,
                hi,
            }),
            inputs: vec![va, vb],
            ty: QType {
                elem,
                shape: ta.shape.clone(),
                exp,
            },
        };
        self.emit(id, n, fused.map(|f| f.0))
    }

    /// Requantize-shift alignment at residual Adds: when `id`'s only reader is an Add
    /// whose other operand is already lowered, emit `id` at that operand's exponent, so
    /// both arrive aligned and the Add shifts neither, as long as that costs at most
    /// [`ALIGN_MSE_SLACK`] more quantization MSE than the best exponent `best`.
    fn aligned_exponent(
        &mut self,
        id: NodeId,
        hist: &LogHistogram,
        best: i32,
        lo: i32,
        hi: i32,
    ) -> i32 {
        let users = self.graph.users(id);
        let [add] = users.as_slice() else { return best };
        if !matches!(self.graph.node(*add).op, Op::Binary(BinaryOp::Add))
            || self.graph.outputs().iter().any(|o| o.node == id)
        {
            return best;
        }
        let Some(other) = self
            .graph
            .node_inputs(*add)
            .into_iter()
            .find(|&i| i != id)
            .and_then(|i| self.lowered.get(&i))
        else {
            return best;
        };
        let target = self.out.ty(*other).exp;
        if target == best {
            self.report.aligned_adds += 1;
            return best;
        }
        let cost = |e: i32| hist.quantization_mse(e, lo, hi);
        if cost(target) <= ALIGN_MSE_SLACK * cost(best) {
            self.report.aligned_adds += 1;
            target
        } else {
            best
        }
    }

    /// Whether linear layer `id` (`rows × k` weights) takes int8 weights because its
    /// mode's 4-bit format would not take fewer bytes (`QuantOptions::int8_where_smaller`):
    /// a LUT mode's default format (one table or the table groups), not a trained layer
    /// (its QDQ pairs fix its grid).
    fn int8_is_no_larger(&self, id: NodeId, rows: usize, k: usize) -> bool {
        let lut_mode = matches!(self.options.mode.weights(), Some((WeightFormat::Lut4, _)));
        self.options.int8_where_smaller
            && lut_mode
            && !self.options.lut_per_channel
            && !self.trained.contains_key(&id)
            && crate::lut4_not_smaller(rows, k, self.report.lut_tables)
    }

    fn lower_linear(&mut self, id: NodeId) -> Result<(), QuantError> {
        let graph = self.graph;
        let node = graph.node(id);
        let (xvalue, xt) = self.input(id, 0);
        let in_shape = xt.shape.clone();

        // Float weights as [O][K] rows, bias, geometry, fused activation.
        let (rows, shape4, bias, geom, act) = linear_params(graph, id)?;
        let o_n = shape4[0];
        let k_n = shape4[1] * shape4[2] * shape4[3];

        // Statistics of the quantized input.
        let patch_geom = PatchGeometry::of_layer(&in_shape, &node.ty.shape, shape4, geom.as_ref());
        // Dequantized sample by sample where read (`hessian::Samples`).
        let quantized: &[IntData] = &self.data[&xvalue];
        let real = |range: std::ops::Range<usize>| Dequantized {
            data: &quantized[range],
            exp: xt.exp,
        };
        let n_samples = quantized.len();
        // With float targets (enough samples per input, see `fit/target.rs`): the float
        // model's values of the same input, for the cross moment `Σ x̂ xᵀ`.
        let sampled = (self.samples.len() * patch_geom.out_height * patch_geom.out_width)
            .min(self.options.max_patches);
        // (The float model always runs, for the statistics; its values are targets only
        // with the option.)
        let wants_target = self.options.float_target && self.options.data_aware;
        let targets = self
            .float_values
            .get(&graph.node_inputs(id)[0])
            .filter(|_| wants_target)
            .filter(|_| sampled >= fit::TARGET_MIN_PATCHES_PER_INPUT * patch_geom.patch_len())
            .map(|v| v.as_slice());
        let float_targets = |range: std::ops::Range<usize>| {
            targets.map(|t| FloatTargets {
                values: &t[range],
                weights: &rows,
            })
        };
        // With float targets, the last samples are held out of the targets' fit to
        // choose how strongly they are damped (`fit::choose_float_target`).
        let held_out = targets.map_or(0, |_| fit::held_out_samples(n_samples));
        let moments_start = Instant::now();
        let (mut patch, mut split) = if held_out > 0 {
            let n_fit = n_samples - held_out;
            let budget = |n: usize| (self.options.max_patches * n).div_ceil(n_samples);
            let stats = |range: std::ops::Range<usize>| {
                patch_statistics(
                    &patch_geom,
                    &real(range.clone()),
                    float_targets(range.clone()),
                    budget(range.len()),
                )
            };
            let (a, b) = (stats(0..n_fit), stats(n_fit..n_samples));
            (
                PatchStatistics::merged(&a, n_fit, &b, held_out),
                Some((a, b)),
            )
        } else {
            let all = patch_statistics(
                &patch_geom,
                &real(0..n_samples),
                float_targets(0..n_samples),
                self.options.max_patches,
            );
            (all, None)
        };
        self.report.stage_seconds.input_moments += moments_start.elapsed().as_secs_f64();
        // Without the data-aware fit (`--no-data-aware`, trained QDQ models) `H` picks
        // no codes: too few patches cost nothing.
        if self.options.data_aware {
            self.report.warnings.extend(warn::patch_warning(
                &node.name,
                sampled,
                patch_geom.patch_len(),
                patch_geom.out_height * patch_geom.out_width,
                self.options.max_patches,
                wants_target,
            ));
        }
        let plane = patch_geom.height * patch_geom.width;
        let still = warn::constant_channels(quantized, patch_geom.channels, plane);
        // A trained model's weights are not fitted to the samples (no data-aware fit), so
        // inputs constant over them cost nothing (and `lutq run` without `--calib` lowers
        // a fully paired QDQ model on one all-zero sample).
        if self.trained.is_empty() {
            self.report.warnings.extend(warn::constant_input_warning(
                &node.name,
                &still,
                patch_geom.channels,
                n_samples,
            ));
        }
        // Output type and exponent (a wide output's exponent follows from the fit).
        let is_output = graph.outputs().iter().any(|o| o.node == id);
        let wide = is_output && act.is_none() && graph.users(id).is_empty();
        let (elem, planned_exp) = if wide {
            (IntElem::I32, None)
        } else {
            let elem = if act.is_some() {
                IntElem::U8
            } else {
                IntElem::I8
            };
            let (lo, hi) = elem.range();
            match self.trained.get(&id) {
                Some(g) => (elem, Some(g.exp)),
                None => {
                    self.note_calibrated(id);
                    let hist = self.hist(id)?;
                    let best = hist.choose_exponent(lo, hi);
                    (elem, Some(self.aligned_exponent(id, &hist, best, lo, hi)))
                }
            }
        };

        // The weight format and scale of this layer.
        let depthwise = geom
            .as_ref()
            .is_some_and(|g| g.group > 1 && g.group == in_shape[1] && shape4[1] == 1);
        let first = self.report.layers.is_empty();
        let keep8 =
            self.options.keep_8bit.iter().any(|n| {
                n == &node.name || (n == "depthwise" && depthwise) || (n == "first" && first)
            });
        let layer_format = if keep8 {
            Some(LayerFormat::Int8)
        } else if self.options.sensitivity {
            // The sensitivity pass emits the all-int8 network; the 4-bit fits are kept as
            // candidates below.
            Some(LayerFormat::Int8)
        } else if let Some(&f) = self.options.formats.get(&node.name) {
            Some(f)
        } else if self.int8_is_no_larger(id, o_n, k_n) {
            self.report.int8_where_smaller.push(node.name.clone());
            Some(LayerFormat::Int8)
        } else {
            None
        };
        let base = self.options.mode.weights().ok_or(QuantError::Fp32)?;
        let lut_tables = self.report.lut_tables;
        let (format, scale) = match layer_format {
            Some(f) => f.weights(base.1, lut_tables),
            None => match base {
                (WeightFormat::Lut4, scale) if self.options.lut_per_channel => {
                    (WeightFormat::Lut4PerChannel, scale)
                }
                (WeightFormat::Lut4, scale) => LayerFormat::Lut4Groups.weights(scale, lut_tables),
                other => other,
            },
        };

        // Constant channels (BatchNorm with γ ≈ 0, zero rows): weights that move the
        // output by less than half an output step over the whole input range are fitted
        // as zeros and the bias carries the channel (`fit/dead.rs`, `lower/guard.rs`).
        // A wide output's exponent follows the fit; the coarsest one the fit can reach
        // (every row's max-fitting exponent less one) stands in for it, and is then the
        // output's exponent at most when some channel is constant.
        let x_step = (-(xt.exp as f64)).exp2();
        let detect_exp = match planned_exp {
            Some(e) => e,
            None => {
                let (lo, hi) = format.range();
                xt.exp
                    + rows
                        .chunks(k_n.max(1))
                        .filter_map(|r| {
                            let (mn, mx) = r.iter().fold((0f64, 0f64), |(a, b), &v| {
                                (a.min(v as f64), b.max(v as f64))
                            });
                            fit::max_fit_exponent(mn, mx, lo, hi)
                        })
                        .min()
                        .map_or(0, |e| e - 1)
            }
        };
        let x_max = lutq_ir::int::input_magnitude(xt.elem) as f64 * x_step;
        let constant =
            fit::constant_rows(&rows, o_n, k_n, x_max, 0.5 * (-(detect_exp as f64)).exp2());
        let constant_channels = constant.iter().filter(|&&c| c).count();
        // A constant channel's weights are fitted as zeros: so is its target row.
        for (o, _) in constant.iter().enumerate().filter(|(_, c)| **c) {
            patch.zero_cross_row(o, k_n);
            if let Some((a, b)) = split.as_mut() {
                a.zero_cross_row(o, k_n);
                b.zero_cross_row(o, k_n);
            }
        }
        let fit_rows: std::borrow::Cow<'_, [f32]> = if constant_channels == 0 {
            rows.as_slice().into()
        } else {
            let mut r = rows.clone();
            for (o, _) in constant.iter().enumerate().filter(|(_, c)| **c) {
                r[o * k_n..(o + 1) * k_n].fill(0.0);
            }
            r.into()
        };

        // Fit the rows that reproduce the float output from the quantized input; bias
        // correction still aims at the float model's channel means.
        fn moments(p: &PatchStatistics) -> TargetMoments<'_> {
            TargetMoments {
                hessians: &p.hessians,
                cross_rows: &p.cross_rows,
            }
        }
        let (target_rows, target_ridge): (std::borrow::Cow<'_, [f32]>, _) =
            match (&split, patch.cross_rows.is_empty()) {
                (_, true) => (fit_rows.clone(), None),
                (Some((fit_part, held)), false) => {
                    let choice = fit::choose_float_target(
                        &fit_rows,
                        o_n,
                        k_n,
                        moments(fit_part),
                        moments(held),
                        moments(&patch),
                    );
                    (choice.rows.into(), choice.ridge)
                }
                (None, false) => (
                    fit::float_target_rows(&fit_rows, o_n, k_n, &patch.hessians, &patch.cross_rows)
                        .into(),
                    Some(fit::TARGET_DAMP),
                ),
            };
        drop(split);

        let options = self.options;
        let trained_model = !self.trained.is_empty();
        let build = |format: WeightFormat, scale: ScaleKind| -> Result<BuiltLinear, QuantError> {
            // Fit the weights: a trained model's weights that sit on the format's grid
            // are encoded exactly as they are (`trained::exact_weights`).
            let exact = trained_model
                .then(|| trained::exact_weights(&target_rows, o_n, k_n, format, scale))
                .flatten();
            let mut fitted = exact.unwrap_or_else(|| {
                fit::fit_layer(
                    &LayerProblem {
                        weights: &target_rows,
                        rows: o_n,
                        row_len: k_n,
                        hessians: &patch.hessians,
                    },
                    &FitOptions {
                        format,
                        scale,
                        data_aware: options.data_aware,
                    },
                )
            });
            // Σ_o w_oᵀ H w_o: the output energy the fit's error is measured against (the
            // error of quantizing every weight to 0).
            let problem = LayerProblem {
                weights: &rows,
                rows: o_n,
                row_len: k_n,
                hessians: &patch.hessians,
            };
            let zero = vec![0i8; o_n * k_n];
            let reference_energy = fit::output_error(&problem, &zero, &vec![RowScale::Pot(0); o_n]);

            let exp = planned_exp.unwrap_or_else(|| {
                // The finest exponent every live row's accumulator reaches by a right shift
                // (with constant rows, at most the one they were detected for).
                let live = (0..o_n)
                    .filter(|&o| !constant[o])
                    .map(|o| xt.exp + guard::scale_exponent(fitted.scales[o]))
                    .min();
                match live {
                    Some(e) if constant_channels > 0 => e.min(detect_exp),
                    Some(e) => e,
                    None => detect_exp,
                }
            });
            let (lo, hi) = act_bounds(act, elem, exp);

            // Bias correction: the mean accumulator is exactly Σ_k ŵ_k · E[x_k] (linear in
            // x), so the mean patch gives it without running the layer.
            let groups = patch.means.len();
            let rows_per_group = o_n / groups;
            let target = self
                .stats
                .channel_means
                .get(&id)
                .filter(|_| options.bias_correction);
            let corrected_bias = |o: usize, levels: &[i8], scale: f64| -> f64 {
                let Some(target) = target else {
                    return bias[o];
                };
                let mean = &patch.means[o / rows_per_group];
                let mean_acc: f64 = levels
                    .iter()
                    .zip(mean)
                    .map(|(&w, &m)| w as f64 * m)
                    .sum::<f64>()
                    / x_step;
                let quantized_mean = mean_acc * (x_step * scale) + bias[o];
                bias[o] + (target[o] - quantized_mean)
            };

            // Exponents capped so that every channel's i32 arithmetic fits and its rescale
            // is representable; constant channels get an exponent for their bias.
            let guarded = guard::guard_layer(
                &guard::LayerGuard {
                    target_rows: &target_rows,
                    k: k_n,
                    format,
                    constant: &constant,
                    x_exp: xt.exp,
                    x_elem: xt.elem,
                    lo,
                    hi,
                    wide,
                    bias: &corrected_bias,
                },
                &mut fitted,
                exp,
            )
            .map_err(|channel| lutq_ir::int::IntCheckError::Overflow {
                node: node.name.clone(),
                channel,
                bound: i64::MAX,
                detail: "no weight exponent keeps its bias and accumulator within i32: \
                         its weights or bias span more than 32-bit integer arithmetic holds \
                         (e.g. a weight of 1e30 beside ordinary ones; check the model's \
                         initializers; if they look ordinary, it is a lutq bug: please \
                         report it with the model)"
                    .into(),
            })?;
            let exp = guarded.exp;
            let (lo, hi) = self.trained_clamp(id, act_bounds(act, elem, exp));
            let out_step = (-(exp as f64)).exp2();
            let max_correction = if target.is_some() {
                (0..o_n)
                    .map(|o| (guarded.bias_real[o] - bias[o]).abs() / out_step)
                    .fold(0.0, f64::max)
            } else {
                0.0
            };
            let capped_exponents = (0..o_n).filter(|&o| guarded.capped[o]).count();
            let w_exps: Vec<i32> = fitted
                .scales
                .iter()
                .map(|&s| guard::scale_exponent(s))
                .collect();
            let rescale = guarded.rescale;
            let bias_q = guarded.bias_q;

            let weights = match (&fitted.codes, fitted.lut) {
                (Some(codes), Some(_)) => QWeights::Lut {
                    shape: shape4,
                    // Rows that all read the same table (groups that converged to one, a
                    // trained model's one table under per-channel exponents) store it once,
                    // without an index per row.
                    luts: if fitted.luts.windows(2).all(|w| w[0] == w[1]) {
                        fitted.luts[..fitted.luts.len().min(1)].to_vec()
                    } else {
                        fitted.luts.clone()
                    },
                    codes: QWeights::pack_codes(o_n, k_n, codes),
                },
                _ => match format {
                    // 4-bit uniform levels are stored as codes into the identity table.
                    WeightFormat::Uniform { min, max } if max - min < 16 => {
                        let lut: [i8; 16] =
                            std::array::from_fn(|i| (min + i as i32).min(max) as i8);
                        let codes: Vec<u8> = fitted
                            .levels
                            .iter()
                            .map(|&l| (l as i32 - min) as u8)
                            .collect();
                        QWeights::Lut {
                            shape: shape4,
                            luts: vec![lut],
                            codes: QWeights::pack_codes(o_n, k_n, &codes),
                        }
                    }
                    _ => QWeights::Int8 {
                        shape: shape4,
                        values: fitted.levels.clone(),
                    },
                },
            };
            let layer = QLinear {
                conv: geom.clone(),
                weights,
                bias: bias_q,
                rescale,
                lo,
                hi,
                weight_exps: w_exps.clone(),
            };
            let bound = lutq_ir::int::accumulator_bound(&layer, xt.elem);
            let weight_kind = match (&layer.weights, format) {
                (QWeights::Int8 { .. }, _) => "int8",
                // Rows that all read one table (collapsed above).
                (
                    QWeights::Lut { luts, .. },
                    WeightFormat::Lut4Groups(_) | WeightFormat::Lut4PerChannel,
                ) if luts.len() == 1 && o_n > 1 => "lut4",
                (_, WeightFormat::Lut4) => "lut4",
                (_, WeightFormat::Lut4PerChannel) => "lut4/ch",
                (_, WeightFormat::Lut4Groups(_)) => "lut4/groups",
                _ => "int4",
            };
            Ok(BuiltLinear {
                layer,
                weight_kind,
                exp,
                elem,
                w_exps,
                max_correction,
                capped_exponents,
                relative_error: fitted.output_error / reference_energy.max(f64::MIN_POSITIVE),
                bound,
            })
        };
        let mut built = build(format, scale)?;
        let in_block = self.blocks.values().any(|b| b.layers.contains(&id));
        let reconstruction = match options.reconstruct.as_ref() {
            Some(r) if !options.sensitivity && !trained_model && !in_block => {
                self.reconstruct(id, &mut built, &target_rows, &constant, format, r)?
            }
            _ => None,
        };
        if self.options.sensitivity {
            let formats: &[LayerFormat] = if keep8 {
                &[LayerFormat::Int8]
            } else {
                &LayerFormat::ALL
            };
            let mut options_out = Vec::new();
            // With one table, the groups are `Lut4` itself.
            let distinct = formats
                .iter()
                .filter(|&&f| f != LayerFormat::Lut4Groups || lut_tables > 1);
            for &f in distinct {
                let b = if f == LayerFormat::Int8 {
                    built.clone()
                } else {
                    let (format, scale) = f.weights(base.1, lut_tables);
                    build(format, scale)?
                };
                options_out.push(Candidate {
                    format: f,
                    node: IntNode {
                        name: node.name.clone(),
                        op: IntOp::Linear(b.layer),
                        inputs: vec![xvalue],
                        ty: QType {
                            elem: b.elem,
                            shape: node.ty.shape.clone(),
                            exp: b.exp,
                        },
                    },
                    relative_error: b.relative_error,
                });
            }
            self.candidates.push(LayerCandidates {
                name: node.name.clone(),
                value: ValueId(self.out.nodes.len() as u32),
                candidates: options_out,
            });
        }
        if in_block {
            self.block_fits.insert(
                id,
                blocks::BlockLayerFit {
                    init_rows: target_rows.to_vec(),
                    frozen_rows: constant.clone(),
                    learn_tables: matches!(
                        format,
                        WeightFormat::Lut4 | WeightFormat::Lut4PerChannel
                    ),
                },
            );
        }
        let BuiltLinear {
            layer,
            weight_kind,
            exp,
            elem,
            w_exps,
            max_correction,
            capped_exponents,
            relative_error,
            bound,
        } = built;
        self.report.float_weight_bytes += 4 * o_n * k_n;
        self.report.layers.push(LayerReport {
            name: node.name.clone(),
            weights: weight_kind.into(),
            input_exp: xt.exp,
            output_exp: exp,
            output_type: elem_name(elem),
            weight_exp_min: w_exps.iter().copied().min().unwrap_or(0),
            weight_exp_max: w_exps.iter().copied().max().unwrap_or(0),
            relative_output_error: relative_error,
            float_target: target_ridge.is_some(),
            float_target_ridge: target_ridge,
            bias_correction_steps: max_correction,
            accumulator_headroom: bound.rescaled as f64 / i32::MAX as f64,
            weight_bytes: layer.weights.size_bytes() + 8 * o_n,
            constant_channels,
            capped_exponents,
        });
        self.report.reconstruction.extend(reconstruction);
        let int_node = IntNode {
            name: node.name.clone(),
            op: IntOp::Linear(layer),
            inputs: vec![xvalue],
            ty: QType {
                elem,
                shape: node.ty.shape.clone(),
                exp,
            },
        };
        // Refuse before running (the graph's validate() would too, at the end).
        if bound.rescaled > i32::MAX as i64 {
            return Err(lutq_ir::int::IntCheckError::Overflow {
                node: node.name.clone(),
                channel: bound.channel,
                bound: bound.rescaled,
                detail: format!(
                    "accumulator bound {} (Σ|w| · max|x| + |bias|)",
                    bound.accumulator
                ),
            }
            .into());
        }
        self.emit(id, int_node, None)?;
        Ok(())
    }
}

impl Lowering<'_> {
    /// `--reconstruct`: learns the rounding, tables and biases of the fast fit `built`
    /// of linear node `id` (the `reconstruct` module), keeping the result only where it
    /// lowers the held-out error.
    fn reconstruct(
        &self,
        id: NodeId,
        built: &mut BuiltLinear,
        init_rows: &[f32],
        constant: &[bool],
        format: WeightFormat,
        options: &crate::reconstruct::ReconstructOptions,
    ) -> Result<Option<crate::reconstruct::LayerReconstruction>, QuantError> {
        use crate::reconstruct::{LayerData, reconstruct_linear};
        let graph = self.graph;
        let node = graph.node(id);
        let (xvalue, xt) = self.input(id, 0);
        let (rows, shape4, bias, geom, act) = linear_params(graph, id)?;
        let input: Vec<Vec<f32>> = self.data[&xvalue]
            .par_iter()
            .map(|d| d.to_f32(xt.exp))
            .collect();
        let data = LayerData {
            name: &node.name,
            geometry: PatchGeometry::of_layer(&xt.shape, &node.ty.shape, shape4, geom.as_ref()),
            input: &input,
            x_exp: xt.exp,
            x_elem: xt.elem,
            float_input: self
                .float_values
                .get(&graph.node_inputs(id)[0])
                .map(|v| v.as_slice()),
            float_rows: &rows,
            float_bias: &bias,
            init_rows,
            act,
            rounding: self.out.rounding,
            // Tables shared by a group of rows would need their gradients summed over the
            // group; the reconstruction learns one table per layer or per row.
            learn_tables: matches!(format, WeightFormat::Lut4 | WeightFormat::Lut4PerChannel),
            frozen_rows: constant,
            seed: self.report.layers.len() as u64,
        };
        let Some((layer, report)) = reconstruct_linear(&data, &built.layer, built.exp, options)
        else {
            return Ok(None);
        };
        if let Some(layer) = layer {
            built.bound = lutq_ir::int::accumulator_bound(&layer, xt.elem);
            built.layer = layer;
        }
        Ok(Some(report))
    }
}

/// For a product `a · b` of activations: `Some(false)` if `b` broadcasts over `a`'s
/// trailing dimensions (`b` = a prefix of `a`'s shape, then ones), `Some(true)` if `a`
/// over `b`'s, `None` if neither.
fn product_order(a: &[usize], b: &[usize]) -> Option<bool> {
    let over = |full: &[usize], part: &[usize]| {
        full.len() == part.len()
            && (0..=full.len()).any(|k| part[..k] == full[..k] && part[k..].iter().all(|&d| d == 1))
    };
    if over(a, b) {
        Some(false)
    } else if over(b, a) {
        Some(true)
    } else {
        None
    }
}

/// The inputs of `id`, each once: `Graph::users` counts a reader once however many of
/// its slots read the same node, so reader counts drop once per distinct input.
fn distinct_inputs(graph: &Graph, id: NodeId) -> Vec<NodeId> {
    let mut inputs = graph.node_inputs(id);
    inputs.sort_unstable();
    inputs.dedup();
    inputs
}

/// A graph computing float node `id` alone: its non-constant inputs become graph inputs
/// (returned in order), its constant inputs stay constants.
fn single_node_graph(
    graph: &Graph,
    id: NodeId,
    op: Op,
) -> Result<(Graph, Vec<NodeId>), QuantError> {
    let node = graph.node(id);
    let mut step = Graph::new(node.name.clone());
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    let mut inputs = Vec::new();
    for i in graph.node_inputs(id) {
        if map.contains_key(&i) {
            continue;
        }
        let n = graph.node(i);
        let new = match graph.constant(i) {
            Some(t) => step.add_constant(n.name.clone(), t.clone()),
            None => {
                inputs.push(i);
                step.add_input(n.name.clone(), n.ty.clone())
            }
        };
        map.insert(i, new);
    }
    let ins: Vec<NodeId> = graph.node_inputs(id).iter().map(|i| map[i]).collect();
    let out = step.add_node(node.name.clone(), op, &ins)?;
    step.add_output(node.name.clone(), out)?;
    Ok((step, inputs))
}

type LinearParams = (
    Vec<f32>,
    [usize; 4],
    Vec<f64>,
    Option<ConvGeom>,
    Option<FusedActivation>,
);

/// A linear node's float weights as the quantizer fits them: `[O][K]` rows (row `o` is
/// output channel `o`) and the lowered 4-D shape `[O, I, KH, KW]` (`lutq report`'s
/// weight histograms).
pub fn linear_weights(graph: &Graph, id: NodeId) -> Result<(Vec<f32>, [usize; 4]), QuantError> {
    let (rows, shape, ..) = linear_params(graph, id)?;
    Ok((rows, shape))
}

/// Every linear node's `(rows, row_len)`: output channels and weights per channel (as
/// [`linear_params`] lays them out), from the shapes alone.
pub(crate) fn linear_shapes(graph: &Graph) -> Vec<(usize, usize)> {
    graph
        .node_ids()
        .filter_map(|id| {
            let inputs = graph.node_inputs(id);
            let weights = *inputs.get(1)?;
            graph.constant(weights)?;
            let s = &graph.node(weights).ty.shape;
            match &graph.node(id).op {
                Op::Conv(_) if s.len() == 4 => Some((s[0], s[1] * s[2] * s[3])),
                Op::Gemm(g) if s.len() == 2 => Some(if g.trans_b {
                    (s[0], s[1])
                } else {
                    (s[1], s[0])
                }),
                Op::MatMul if s.len() == 2 => Some((s[1], s[0])),
                _ => None,
            }
        })
        .collect()
}

/// A linear node's float weights as `[O][K]` rows with their 4-D shape, its bias
/// (zeros if none), conv geometry (`None` for dense) and fused activation.
fn linear_params(graph: &Graph, id: NodeId) -> Result<LinearParams, QuantError> {
    let node = graph.node(id);
    let inputs = graph.node_inputs(id);
    let constant = |slot: usize| -> Result<&[f32], QuantError> {
        inputs
            .get(slot)
            .and_then(|&i| graph.constant(i))
            .and_then(|t| t.as_f32())
            .ok_or_else(|| {
                QuantError::Unsupported(vec![format!(
                    "node '{}': input {slot} must be a float constant",
                    node.name
                )])
            })
    };
    match &node.op {
        Op::Conv(c) => {
            let w = constant(1)?;
            let s = &graph.node(inputs[1]).ty.shape;
            let shape4 = [s[0], s[1], s[2], s[3]];
            let bias = if inputs.len() > 2 {
                constant(2)?.iter().map(|&v| v as f64).collect()
            } else {
                vec![0.0; s[0]]
            };
            Ok((
                w.to_vec(),
                shape4,
                bias,
                Some(ConvGeom {
                    strides: c.strides,
                    pads: c.pads,
                    dilations: c.dilations,
                    group: c.group,
                }),
                c.activation,
            ))
        }
        Op::Gemm(g) => {
            let b = constant(1)?;
            let s = &graph.node(inputs[1]).ty.shape;
            // B is [K, N] (or [N, K] transposed); rows are output features.
            let (k, n) = if g.trans_b {
                (s[1], s[0])
            } else {
                (s[0], s[1])
            };
            let mut rows = vec![0f32; n * k];
            for o in 0..n {
                for j in 0..k {
                    let v = if g.trans_b {
                        b[o * k + j]
                    } else {
                        b[j * n + o]
                    };
                    rows[o * k + j] = v * g.alpha;
                }
            }
            let bias = if inputs.len() > 2 {
                let c = constant(2)?;
                (0..n)
                    .map(|o| g.beta as f64 * c[if c.len() == 1 { 0 } else { o % c.len() }] as f64)
                    .collect()
            } else {
                vec![0.0; n]
            };
            Ok((rows, [n, k, 1, 1], bias, None, g.activation))
        }
        Op::MatMul => {
            let b = constant(1)?;
            let s = &graph.node(inputs[1]).ty.shape;
            let (k, n) = (s[0], s[1]);
            let mut rows = vec![0f32; n * k];
            for o in 0..n {
                for j in 0..k {
                    rows[o * k + j] = b[j * n + o];
                }
            }
            Ok((rows, [n, k, 1, 1], vec![0.0; n], None, None))
        }
        _ => Err(QuantError::Unsupported(vec![format!(
            "node '{}' is not linear",
            node.name
        )])),
    }
}

/// Samples per unit of work of the per-node float pass (and per partial sum of the
/// channel means: [`crate::calib::mean_of_chunk_sums`]).
const FLOAT_CHUNK: usize = 4;

/// What the per-node float pass computes on one chunk of samples.
struct FloatChunk {
    values: Vec<Vec<f32>>,
    /// Linear layers: per channel, the sum of the chunk's plane means.
    plane_mean_sums: Option<Vec<f64>>,
    histogram: LogHistogram,
    seconds: f64,
    statistics_seconds: f64,
}
