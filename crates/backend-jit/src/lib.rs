//! lutq's native backend: an [`IntGraph`] compiled to x86-64 machine code with
//! Cranelift, **bit-exact with the golden integer interpreter**
//! ([`lutq_interp::int::IntInterpreter`]).
//!
//! # Guarantee
//!
//! For every graph the interpreter accepts ([`IntGraph::validate`], which [`compile`]
//! runs too) and every input, [`JitModel::run`] returns exactly the [`IntData`]
//! `IntInterpreter::run` returns, bit for bit. Refused graphs are [`JitError`]s, never
//! panics. The tests hold this on the bundled models in five quantization modes
//! (`tests/models.rs`), on hundreds of random small graphs covering every op, weight
//! format and geometry (`tests/random_graphs.rs`, with both the vector and the scalar
//! kernels), and on the awkward inputs of the input quantization (`tests/api.rs`).
//!
//! How the exactness is kept:
//! * Scalar code computes in i64 exactly as the op definitions do (`rshift_round` ties
//!   toward +∞ as `(a + 2^(s-1)) >> s`, clamps, wrapping i32 accumulators).
//! * Vector code computes in i32 lanes only where i32 is provably exact: products of
//!   8-bit values with `pmaddwd` are exact i32; the accumulators wrap like the
//!   interpreter's; the power-of-two epilogue runs in i32 only because `validate` proves
//!   `acc + 2^(s-1)` and `acc << -s` fit i32 (the accumulator bound); fixed-point
//!   multipliers (`*-pc` modes) and shifts beyond ±30 go lane by lane through the i64
//!   scalar epilogue. `Add` is vectorised only when its alignments and shift keep every
//!   intermediate below 2^31 for 8-bit operands.
//! * `QuantizeInput` (float arithmetic) is done in Rust before the compiled code runs,
//!   with the interpreter's formula: `clamp(floor(x · 2^exp + 0.5), lo, hi)` in f64, NaN
//!   → 0, ±∞ saturate (`lutq_ir::int::quantize_input`, the one definition every
//!   backend shares).
//!
//! # API
//!
//! [`compile`] (or [`compile_with`] and [`CompileOptions`]) → [`JitModel`];
//! [`JitModel::run`] takes the f32 inputs like the interpreter, [`JitModel::run_quantized`]
//! the already-quantized values of the `QuantizeInput` nodes, [`JitModel::run_timed`]
//! also reports every node's time. The model owns its code, its constant buffers and one
//! arena, reused by every run (`run` takes `&mut self`; a model is `Send`, so threads
//! each compile or move their own).
//!
//! # Design
//!
//! * **One function per node** (`fn(arena: *mut u8)`), called in order by `run`. Every
//!   shape, stride, offset, shift and clamp bound is a constant in the code; weights and
//!   per-channel tables live in buffers the model owns, their addresses constants too.
//!   Per-node functions keep Cranelift's compile time linear and small (MobileNetV2:
//!   ~0.45 s for 64 functions, most of it the unrolled small-K layers; the
//!   Fashion-MNIST nets ~40 ms) and give per-node timings for free; the call overhead
//!   (64 indirect calls per run) is negligible.
//! * **Memory**: one 64-byte aligned arena. Each value gets a buffer followed by 256
//!   spare bytes that the vector kernels may over-read, reused once the value's last
//!   reader has run (best fit; a `Reshape` shares its input's buffer and has no code;
//!   graph inputs and outputs are never reused). Then the zero-padded input copies of
//!   padded or strided convolutions (stage A), one per input geometry and kept apart:
//!   zeroed once with the arena, only their interiors are ever written, so they are
//!   never refilled. Then one scratch area shared by all layers (panels, wide
//!   outputs). MobileNetV2: 6.5 MB (one buffer per value: 12.3 MB).
//! * **Weights** are decoded at compile time (4-bit LUT codes → int8, once) and re-laid
//!   out for the kernel that uses them: int8 rows for dense layers; for convolutions,
//!   int8 quads (VNNI) or i16 pairs, stored already splatted to a whole vector (16
//!   bytes per group), which saves the inner loop a broadcast per output channel and
//!   step (measured ~20 % faster than 4-byte quads broadcast from memory: Cranelift
//!   broadcasts through a general register) at the price of memory: 11 MB of constants
//!   for MobileNetV2's 3.5 M weights with quads, 20 MB with pairs. There is no run-time
//!   table lookup left to do: decoding the LUT at compile time beats a `pshufb` per use.
//! * **Kernels**: a scalar kernel for every op (the definition, every tap
//!   bounds-checked; `CompileOptions { vectorize: false, .. }` compiles only those), and
//!   128-bit vector kernels — Cranelift lowers only 128-bit vectors on x86-64 — for
//!   convolutions of any geometry (a GEMM over a zero-padded, stride-phase-split "wide
//!   plane" with VNNI `vpdpbusd` quads, or `pmaddwd` pairs on CPUs without VNNI;
//!   depthwise layers by runs of consecutive taps, no shuffle in the loop), dense layers
//!   (quad or pair dot products, 4 rows sharing each input load), `Add` and global
//!   sum-pools. Other pools, `Concat` and `Requant` stay scalar: well under 1 % of
//!   MobileNetV2's time. See the `simd` module for the kernels.
//!
//! # Measurements
//!
//! `cargo xtask bench-int` measures the JIT against the interpreter, the generated C and
//! onnxruntime, interleaving the JIT's and onnxruntime's runs, and the JIT's MAC rate per
//! kind of layer (tables in docs/results.md). The machine is shared: the same binary
//! runs MobileNetV2 in 8.3 ms in a quiet moment and 19 ms in a busy one, so compare
//! ratios measured in the same run, and per-node times within one `examples/profile.rs`
//! run.
//!
//! What the choices bought on MobileNetV2 (`examples/profile.rs`, sum of per-node
//! medians; before → after, in the same quiet-or-busy state, from the commits):
//! - the panel GEMM, stage-A vector copies, the fused depthwise kernel, 6 channels per
//!   block and splatted weight pairs (pmaddwd): ~450 ms scalar → ~22–35 ms;
//! - VNNI quads for the GEMM (the same loop with `vpdpbusd`): pointwise layers 10 → 22
//!   GMAC/s (busy), total 36 → 20 ms; weight quads stored splatted rather than
//!   broadcast from 4 bytes: pointwise ~20 % faster (Cranelift broadcasts through a
//!   general register: 3 µops, two of them on the shuffle port);
//! - depthwise by runs of taps instead of transposing quads in registers: depthwise
//!   layers ~30 % faster (the transposition kept the shuffle port busy and spilled);
//! - the input quantization with `2^exp` computed once and a branch-free floor: ~0.8 ms
//!   less per run (it called `exp2` and `floor` from libm per element);
//! - stride-2 stage A in whole chunks to the row's end (28→14 and 14→7 depthwise layers
//!   1.2–1.8× faster), a vector global sum-pool (163 → 13 µs);
//! - stage C unrolled over the output-channel blocks of small layers, with the epilogue
//!   parameters as immediates: those layers ~13–17 % faster, compile time 0.2 → 0.45 s;
//! - arena buffers reused after their last reader: arena 12.3 → 6.5 MB.
//!
//! In a quiet moment: pointwise layers ~49 GMAC/s, depthwise ~9, the first (3-channel)
//! convolution ~31, in all 8.3 ms (36 GMAC/s) against 37 ms when the JIT landed.

mod emit;
mod linear;
mod ops;
mod simd;

use std::time::{Duration, Instant};

use cranelift_codegen::Context;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{AbiParam, UserFuncName};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};
use lutq_interp::int::IntData;
use lutq_ir::int::{
    InputQuantizer, IntCheckError, IntElem, IntGraph, IntNode, IntOp, QWeights, Rounding,
};

use emit::Emitter;
use ops::Operand;

/// Why a graph cannot be compiled or run.
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    /// The graph fails [`IntGraph::validate`] (the interpreter refuses it as well).
    #[error("invalid integer graph: {0}")]
    Invalid(#[from] IntCheckError),
    /// A node the backend has no code for.
    #[error("node '{node}' ({op}) is not supported by the JIT backend: {message}")]
    Unsupported {
        node: String,
        op: &'static str,
        message: String,
    },
    /// Cranelift refused the generated code (a bug of this crate).
    #[error("code generation failed for node '{node}': {message}")]
    Codegen { node: String, message: String },
    /// The host is not a target Cranelift supports.
    #[error("host not supported by Cranelift: {0}")]
    Host(String),
    #[error("expected {expected} inputs, got {actual}")]
    InputCount { expected: usize, actual: usize },
    #[error("input '{name}' needs {expected} elements, got {actual}")]
    InputLength {
        name: String,
        expected: usize,
        actual: usize,
    },
    #[error(
        "quantized input {index} ('{node}') must be {expected_len} {expected_elem} elements, got {actual_len} {actual_elem}"
    )]
    QuantizedInput {
        index: usize,
        node: String,
        expected_len: usize,
        expected_elem: &'static str,
        actual_len: usize,
        actual_elem: &'static str,
    },
}

type Kernel = unsafe extern "C" fn(*mut u8);

/// Per compiled node, its name and wall time ([`JitModel::run_timed`]).
pub type NodeTimes = Vec<(String, Duration)>;

/// A `QuantizeInput` node: done in Rust before the compiled code runs (it is float
/// arithmetic: `lutq_ir::int::quantize_input`, the interpreter's definition).
struct QuantizeStep {
    node: String,
    input: usize,
    exp: i32,
    lo: i32,
    hi: i32,
    elem: IntElem,
    offset: usize,
    len: usize,
}

/// A compiled [`IntGraph`]: machine code for every node, the constant buffers it reads
/// (decoded weights, epilogue tables) and one arena for every value and scratch buffer,
/// reused across runs.
pub struct JitModel {
    /// Keeps the code alive; freed on drop.
    module: Option<JITModule>,
    kernels: Vec<Kernel>,
    /// Per kernel, the node it computes.
    kernel_nodes: Vec<String>,
    /// Constant data the code reads by absolute address (never moved once compiled).
    consts: Vec<Vec<u128>>,
    /// 16-byte aligned storage (`u128`) for every value and the scratch area.
    arena: Vec<u128>,
    quantize: Vec<QuantizeStep>,
    /// The program's rounding (its input quantization follows it too).
    rounding: Rounding,
    input_sizes: Vec<(String, usize)>,
    /// Output value slots: offset, element type, length.
    outputs: Vec<(usize, IntElem, usize)>,
    compile_time: Duration,
    arena_bytes: usize,
    /// Collects node times while `run_timed` runs.
    timing: Option<NodeTimes>,
}

// The code and constants are immutable after compilation and the arena is only touched
// through `&mut self`.
unsafe impl Send for JitModel {}

impl Drop for JitModel {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: no function pointer into this module outlives `self`.
            unsafe { m.free_memory() };
        }
    }
}

/// Alignment of every arena buffer.
const ALIGN: usize = 64;
/// Spare bytes after the arena's last buffer: vector loads may read up to one vector past
/// the end of a buffer (the values read there are discarded).
pub(crate) const SLACK: usize = 256;

/// Code generation choices.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Use the vector kernels where they apply (default); `false` compiles every op with
    /// its scalar kernel (a second, independent implementation the tests compare).
    pub vectorize: bool,
    /// Multiply convolutions with the `u8 × i8` four-way dot product that VNNI CPUs do
    /// in one instruction (`vpdpbusd`, 16 MACs), instead of `pmaddwd` on i16 pairs (8
    /// MACs). Defaults to whether this CPU has VNNI; on one without, the same code is
    /// still exact (Cranelift expands the product tree) but slower.
    pub vnni: bool,
    /// Convolutions of at least this many multiply-accumulates (and few enough output
    /// channels) get their channel blocks unrolled with the epilogue's bias and shifts as
    /// immediates: ~13–17 % faster on MobileNetV2's small-K layers, but more code to
    /// compile (unrolling every layer of a small Fashion-MNIST net took its compile time
    /// from 65 to 340 ms). Default 2 M.
    pub unroll_min_macs: usize,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            vectorize: true,
            vnni: host_has_vnni(),
            unroll_min_macs: 2_000_000,
        }
    }
}

/// Whether this CPU multiplies `u8 × i8` quads in one instruction (AVX-VNNI or
/// AVX512-VNNI, which Cranelift's x64 back end both use).
pub fn host_has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avxvnni") || std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Compiles `graph` (validated first, like the interpreter does) with the default
/// options.
pub fn compile(graph: &IntGraph) -> Result<JitModel, JitError> {
    compile_with(graph, &CompileOptions::default())
}

/// Compiles `graph` (validated first, like the interpreter does).
pub fn compile_with(graph: &IntGraph, options: &CompileOptions) -> Result<JitModel, JitError> {
    let start = Instant::now();
    graph.validate()?;

    let (offsets, mut end) = plan_values(graph);
    let operand = |v: lutq_ir::int::ValueId| Operand {
        offset: offsets[v.index()],
        ty: graph.ty(v),
    };

    // Plans of the linear layers, then each one's own zero-padded input buffer (if it
    // pads or strides) after the values, then the scratch area they share.
    let mut consts: Vec<Vec<u128>> = Vec::new();
    let dot = if options.vnni {
        simd::Dot::Quads
    } else {
        simd::Dot::Pairs
    };
    let mut plans: Vec<Option<simd::LinearPlan>> = graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| match &node.op {
            // The vector kernels fold the rounding term into the bias: half-up only.
            IntOp::Linear(layer) if options.vectorize && graph.rounding == Rounding::HalfUp => {
                let out = Operand {
                    offset: offsets[i],
                    ty: &node.ty,
                };
                let host = &mut |b: &[u8]| host_bytes(&mut consts, b);
                Some(simd::plan_linear(
                    layer,
                    &operand(node.inputs[0]),
                    &out,
                    dot,
                    options.unroll_min_macs,
                    host,
                ))
            }
            IntOp::Linear(_) => Some(simd::LinearPlan::Scalar),
            _ => None,
        })
        .collect();
    // Layers whose stage A writes the same positions (same input and padding geometry)
    // share one buffer: the padding stays zero all the same.
    let mut padded: std::collections::HashMap<simd::PaddedKey, usize> = Default::default();
    for plan in plans.iter_mut().flatten() {
        let Some(key) = plan.padded_key() else {
            continue;
        };
        let at = *padded.entry(key).or_insert_with(|| {
            let at = end;
            end = (end + plan.padded_bytes() + SLACK).next_multiple_of(ALIGN);
            at
        });
        plan.set_padded_at(at);
    }
    let scratch = end;

    let mut flag_builder = settings::builder();
    let set = |fb: &mut settings::Builder, k: &str, v: &str| {
        fb.set(k, v)
            .map_err(|e| JitError::Host(format!("{k}={v}: {e}")))
    };
    set(&mut flag_builder, "opt_level", "speed")?;
    set(&mut flag_builder, "is_pic", "false")?;
    set(&mut flag_builder, "use_colocated_libcalls", "false")?;
    let isa = cranelift_native::builder()
        .map_err(|e| JitError::Host(e.to_string()))?
        .finish(settings::Flags::new(flag_builder))
        .map_err(|e| JitError::Host(e.to_string()))?;
    let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();

    let mut funcs: Vec<FuncId> = Vec::new();
    let mut kernel_nodes = Vec::new();
    let mut quantize = Vec::new();
    let mut scratch_need = 0usize;

    for (i, node) in graph.nodes.iter().enumerate() {
        let out = Operand {
            offset: offsets[i],
            ty: &node.ty,
        };
        let body: Box<dyn FnOnce(&mut Emitter)> = match &node.op {
            IntOp::QuantizeInput { input } => {
                let (lo, hi) = node.ty.elem.range();
                quantize.push(QuantizeStep {
                    node: node.name.clone(),
                    input: *input,
                    exp: node.ty.exp,
                    lo,
                    hi,
                    elem: node.ty.elem,
                    offset: offsets[i],
                    len: node.ty.num_elements(),
                });
                continue;
            }
            IntOp::Reshape => continue,
            IntOp::Linear(layer) => {
                let x = operand(node.inputs[0]);
                let plan = plans[i].take().expect("every linear layer is planned");
                // The scalar kernel's weights, only where it runs.
                let weights = match plan {
                    simd::LinearPlan::Scalar => {
                        host_bytes(&mut consts, &decoded_bytes(&layer.weights))
                    }
                    _ => std::ptr::null(),
                };
                let table = host_bytes(&mut consts, &linear::epilogue_table(layer, graph.rounding));
                let data = linear::LinearData { weights, table };
                scratch_need = scratch_need.max(plan.scratch_bytes());
                Box::new(move |e: &mut Emitter| {
                    if !simd::linear(e, layer, &plan, &data, &x, &out, scratch) {
                        linear::scalar(e, layer, &data, &x, &out);
                    }
                })
            }
            IntOp::Add(q) => {
                let (a, b) = (operand(node.inputs[0]), operand(node.inputs[1]));
                let vectorize = options.vectorize;
                Box::new(move |e: &mut Emitter| ops::add(e, &a, &b, &out, q, vectorize))
            }
            IntOp::Concat { axis, shifts } => {
                let xs: Vec<Operand> = node.inputs.iter().map(|&v| operand(v)).collect();
                Box::new(move |e: &mut Emitter| ops::concat(e, &xs, shifts, *axis, &out))
            }
            IntOp::MaxPool(p) => {
                let x = operand(node.inputs[0]);
                Box::new(move |e: &mut Emitter| ops::pool(e, p, &ops::PoolKind::Max, &x, &out))
            }
            IntOp::SumPool {
                pool,
                shift,
                lo,
                hi,
            } => {
                let x = operand(node.inputs[0]);
                let (shift, lo, hi) = (*shift, *lo, *hi);
                let kind = ops::PoolKind::Sum { shift, lo, hi };
                let vectorize = options.vectorize;
                Box::new(move |e: &mut Emitter| {
                    if !(vectorize && simd::global_sum_pool(e, pool, (shift, lo, hi), &x, &out)) {
                        ops::pool(e, pool, &kind, &x, &out)
                    }
                })
            }
            IntOp::Requant { rescale, lo, hi } => {
                let x = operand(node.inputs[0]);
                let (r, lo, hi) = (*rescale, *lo, *hi);
                Box::new(move |e: &mut Emitter| ops::requant(e, &x, &out, r, lo, hi))
            }
            IntOp::Table(t) => {
                let x = operand(node.inputs[0]);
                let bytes: Vec<u8> = t.entries.iter().map(|&v| v as u8).collect();
                let tables = host_bytes(&mut consts, &bytes);
                let count = t.tables();
                Box::new(move |e: &mut Emitter| ops::table(e, &x, &out, tables, count))
            }
            IntOp::Mul(q) => {
                let (a, b) = (operand(node.inputs[0]), operand(node.inputs[1]));
                Box::new(move |e: &mut Emitter| ops::mul(e, &a, &b, &out, q))
            }
            IntOp::Softmax(sm) => {
                let x = operand(node.inputs[0]);
                let bytes: Vec<u8> = sm.exp_table.iter().flat_map(|v| v.to_le_bytes()).collect();
                let exp = host_bytes(&mut consts, &bytes);
                let axis = sm.axis;
                Box::new(move |e: &mut Emitter| ops::softmax(e, &x, &out, axis, exp))
            }
            IntOp::Transpose { perm } => {
                let x = operand(node.inputs[0]);
                let sources: Vec<u8> = lutq_ir::int::transpose_sources(&x.ty.shape, perm)
                    .into_iter()
                    .flat_map(|i| (i as u32).to_le_bytes())
                    .collect();
                let sources = host_bytes(&mut consts, &sources);
                Box::new(move |e: &mut Emitter| ops::gather(e, &x, &out, sources))
            }
            IntOp::Slice { axis, start, step } => {
                let x = operand(node.inputs[0]);
                let (axis, start, step) = (*axis, *start, *step);
                Box::new(move |e: &mut Emitter| ops::slice(e, &x, &out, axis, start, step))
            }
            IntOp::Resize(r) => {
                let x = operand(node.inputs[0]);
                let taps = |taps: &[lutq_ir::int::ResizeTap]| -> Vec<u8> {
                    taps.iter()
                        .flat_map(|t| [t.lo as i32, t.hi as i32, t.w_hi])
                        .flat_map(i32::to_le_bytes)
                        .collect()
                };
                let rows = host_bytes(&mut consts, &taps(&r.rows));
                let cols = host_bytes(&mut consts, &taps(&r.cols));
                let frac = r.frac;
                Box::new(move |e: &mut Emitter| ops::resize(e, &x, &out, rows, cols, frac))
            }
            IntOp::Extremum { kind, shifts } => {
                let xs: Vec<Operand> = node.inputs.iter().map(|&v| operand(v)).collect();
                let kind = *kind;
                Box::new(move |e: &mut Emitter| ops::extremum(e, &xs, &out, kind, shifts))
            }
        };
        kernel_nodes.push(node.name.clone());
        funcs.push(define(
            &mut module,
            &mut ctx,
            &mut fctx,
            node,
            (funcs.len(), graph.rounding),
            body,
        )?);
    }
    module
        .finalize_definitions()
        .map_err(|e| JitError::Codegen {
            node: graph.name.clone(),
            message: e.to_string(),
        })?;
    let kernels = funcs
        .iter()
        .map(|&f| {
            let p = module.get_finalized_function(f);
            // SAFETY: every function was defined with the signature `fn(*mut u8)`.
            unsafe { std::mem::transmute::<*const u8, Kernel>(p) }
        })
        .collect();
    let arena_bytes = scratch + scratch_need + SLACK;
    let outputs = graph
        .outputs
        .iter()
        .map(|o| {
            let ty = graph.ty(o.value);
            (offsets[o.value.index()], ty.elem, ty.num_elements())
        })
        .collect();
    Ok(JitModel {
        module: Some(module),
        kernels,
        kernel_nodes,
        consts,
        arena: vec![0u128; arena_bytes.div_ceil(16)],
        quantize,
        rounding: graph.rounding,
        input_sizes: graph
            .inputs
            .iter()
            .map(|i| (i.name.clone(), i.shape.iter().product()))
            .collect(),
        outputs,
        compile_time: start.elapsed(),
        arena_bytes,
        timing: None,
    })
}

/// Arena offsets of every value, and the bytes they take. A value's buffer (its size
/// plus `SLACK`, 64-byte aligned) is reused once its last reader has run: best fit among
/// the freed buffers, split if larger, else a new one at the end. A `Reshape` shares its
/// input's buffer (its readers keep that buffer alive); the graph's quantized inputs are
/// written before any kernel runs, so they are placed first; its outputs are never
/// freed. A node's output never shares a buffer with its inputs (they are freed after it
/// is placed).
fn plan_values(graph: &IntGraph) -> (Vec<usize>, usize) {
    let n = graph.nodes.len();
    let mut root: Vec<usize> = (0..n).collect();
    for (i, node) in graph.nodes.iter().enumerate() {
        if matches!(node.op, IntOp::Reshape) {
            root[i] = root[node.inputs[0].index()];
        }
    }
    let mut last: Vec<usize> = (0..n).collect();
    for (i, node) in graph.nodes.iter().enumerate() {
        for v in &node.inputs {
            let r = root[v.index()];
            last[r] = last[r].max(i);
        }
    }
    for o in &graph.outputs {
        last[root[o.value.index()]] = usize::MAX;
    }
    let bytes = |i: usize| (graph.nodes[i].ty.size_bytes() + SLACK).next_multiple_of(ALIGN);
    let mut offsets = vec![0usize; n];
    let mut end = 0usize;
    let mut free: Vec<(usize, usize)> = Vec::new();
    let is_input = |i: usize| matches!(graph.nodes[i].op, IntOp::QuantizeInput { .. });
    for i in (0..n).filter(|&i| is_input(i)) {
        offsets[i] = end;
        end += bytes(i);
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        if root[i] != i {
            offsets[i] = offsets[root[i]];
        } else if !is_input(i) {
            let need = bytes(i);
            let fit = (0..free.len())
                .filter(|&k| free[k].1 >= need)
                .min_by_key(|&k| free[k].1);
            offsets[i] = match fit {
                Some(k) => {
                    let (at, size) = free.swap_remove(k);
                    if size > need {
                        free.push((at + need, size - need));
                    }
                    at
                }
                None => {
                    end += need;
                    end - need
                }
            };
        }
        // Buffers whose last reader is this node (or, unread, this node itself).
        let mut dying: Vec<usize> = node.inputs.iter().map(|v| root[v.index()]).collect();
        dying.push(root[i]);
        dying.sort_unstable();
        dying.dedup();
        for r in dying {
            if last[r] == i {
                free.push((offsets[r], bytes(r)));
            }
        }
    }
    (offsets, end)
}

/// Compiles one node's code as a function `fn(arena: *mut u8)`.
fn define(
    module: &mut JITModule,
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
    node: &IntNode,
    (index, rounding): (usize, Rounding),
    body: Box<dyn FnOnce(&mut Emitter) + '_>,
) -> Result<FuncId, JitError> {
    let codegen = |message: String| JitError::Codegen {
        node: node.name.clone(),
        message,
    };
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(I64));
    let id = module
        .declare_function(&format!("n{index}"), Linkage::Local, &sig)
        .map_err(|e| codegen(e.to_string()))?;
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let base = b.block_params(entry)[0];
        let mut e = Emitter {
            b: &mut b,
            base,
            rounding,
        };
        body(&mut e);
        use cranelift_codegen::ir::InstBuilder;
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    // Debugging aid: `LUTQ_JIT_DISASM=<node name>` prints that node's machine code.
    let disasm = std::env::var("LUTQ_JIT_DISASM").is_ok_and(|n| n == node.name);
    ctx.set_disasm(disasm);
    module
        .define_function(id, ctx)
        .map_err(|e| codegen(format!("{e:?}")))?;
    if disasm && let Some(code) = ctx.compiled_code() {
        eprintln!("{}", code.vcode.as_deref().unwrap_or(""));
    }
    module.clear_context(ctx);
    Ok(id)
}

/// Copies `bytes` into a 16-byte aligned buffer the model keeps, returns its address.
fn host_bytes(consts: &mut Vec<Vec<u128>>, bytes: &[u8]) -> *const u8 {
    let mut buf = vec![0u128; bytes.len().div_ceil(16) + 2];
    // SAFETY: `buf` holds at least `bytes.len()` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.as_mut_ptr().cast::<u8>(), bytes.len())
    };
    let p = buf.as_ptr().cast::<u8>();
    consts.push(buf);
    p
}

fn decoded_bytes(w: &QWeights) -> Vec<u8> {
    w.decode().into_iter().map(|v| v as u8).collect()
}

impl JitModel {
    /// Wall time [`compile`] took (validation, weight decoding, code generation).
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Bytes of the constant buffers the code reads (re-laid-out weights and tables).
    pub fn constant_bytes(&self) -> usize {
        self.consts.iter().map(|c| 16 * c.len()).sum()
    }

    /// Bytes of the arena (values and scratch).
    pub fn arena_bytes(&self) -> usize {
        self.arena_bytes
    }

    /// The element type and length each [`run_quantized`](Self::run_quantized) input must
    /// have: one per `QuantizeInput` node, in node order.
    pub fn quantized_inputs(&self) -> Vec<(IntElem, usize)> {
        self.quantize.iter().map(|q| (q.elem, q.len)).collect()
    }

    fn arena_ptr(&mut self) -> *mut u8 {
        self.arena.as_mut_ptr().cast::<u8>()
    }

    /// Runs the graph on its f32 inputs ([`IntGraph::inputs`] order) and returns the raw
    /// output values, exactly as [`IntInterpreter::run`] does. The input quantization
    /// (`QuantizeInput`, float arithmetic) runs in Rust, everything after it in the
    /// compiled code.
    ///
    /// [`IntInterpreter::run`]: lutq_interp::int::IntInterpreter::run
    pub fn run(&mut self, inputs: &[&[f32]]) -> Result<Vec<IntData>, JitError> {
        if inputs.len() != self.input_sizes.len() {
            return Err(JitError::InputCount {
                expected: self.input_sizes.len(),
                actual: inputs.len(),
            });
        }
        for (x, (name, n)) in inputs.iter().zip(&self.input_sizes) {
            if x.len() != *n {
                return Err(JitError::InputLength {
                    name: name.clone(),
                    expected: *n,
                    actual: x.len(),
                });
            }
        }
        let base = self.arena_ptr();
        for q in &self.quantize {
            let x = inputs[q.input];
            // SAFETY: the buffer at `q.offset` holds `q.len` elements of `q.elem` (the
            // graph input's size, checked above).
            unsafe {
                let dst = base.add(q.offset);
                let quantizer = InputQuantizer::new(q.exp, q.lo, q.hi, self.rounding);
                match q.elem {
                    IntElem::I8 | IntElem::U8 => {
                        let dst = std::slice::from_raw_parts_mut(dst, x.len());
                        for (d, &v) in dst.iter_mut().zip(x.iter()) {
                            *d = quantizer.apply(v) as u8;
                        }
                    }
                    IntElem::I32 => {
                        for (i, &v) in x.iter().enumerate() {
                            dst.cast::<i32>().add(i).write_unaligned(quantizer.apply(v));
                        }
                    }
                }
            }
        }
        Ok(self.execute())
    }

    /// Runs the graph on already-quantized inputs: one per `QuantizeInput` node, in node
    /// order, of the element type and length [`quantized_inputs`](Self::quantized_inputs)
    /// lists.
    pub fn run_quantized(&mut self, inputs: &[&IntData]) -> Result<Vec<IntData>, JitError> {
        if inputs.len() != self.quantize.len() {
            return Err(JitError::InputCount {
                expected: self.quantize.len(),
                actual: inputs.len(),
            });
        }
        let base = self.arena_ptr();
        for (index, (x, q)) in inputs.iter().zip(&self.quantize).enumerate() {
            if x.elem() != q.elem || x.len() != q.len {
                return Err(JitError::QuantizedInput {
                    index,
                    node: q.node.clone(),
                    expected_len: q.len,
                    expected_elem: q.elem.name(),
                    actual_len: x.len(),
                    actual_elem: x.elem().name(),
                });
            }
            // SAFETY: the buffer at `q.offset` holds `q.len` elements of `q.elem`.
            unsafe {
                let dst = base.add(q.offset);
                match x {
                    IntData::I8(v) => {
                        std::ptr::copy_nonoverlapping(v.as_ptr().cast(), dst, v.len())
                    }
                    IntData::U8(v) => std::ptr::copy_nonoverlapping(v.as_ptr(), dst, v.len()),
                    IntData::I32(v) => {
                        std::ptr::copy_nonoverlapping(v.as_ptr().cast(), dst, 4 * v.len())
                    }
                }
            }
        }
        Ok(self.execute())
    }

    /// [`run`](Self::run), also returning the wall time of every compiled node (in
    /// execution order; `QuantizeInput` and `Reshape` have no code).
    pub fn run_timed(&mut self, inputs: &[&[f32]]) -> Result<(Vec<IntData>, NodeTimes), JitError> {
        self.timing = Some(Vec::with_capacity(self.kernels.len()));
        let out = self.run(inputs);
        let times = self.timing.take().unwrap_or_default();
        Ok((out?, times))
    }

    fn execute(&mut self) -> Vec<IntData> {
        let base = self.arena_ptr();
        for (i, k) in self.kernels.iter().enumerate() {
            let start = self.timing.as_ref().map(|_| Instant::now());
            // SAFETY: the code only addresses the arena (sized at compile time for every
            // buffer and scratch area it uses) and the model's constant buffers.
            unsafe { k(base) };
            if let (Some(t), Some(start)) = (self.timing.as_mut(), start) {
                t.push((self.kernel_nodes[i].clone(), start.elapsed()));
            }
        }
        self.outputs
            .iter()
            .map(|&(offset, elem, len)| {
                // SAFETY: the output buffer holds `len` elements of `elem`.
                unsafe {
                    let p = base.add(offset);
                    match elem {
                        IntElem::I8 => {
                            IntData::I8(std::slice::from_raw_parts(p.cast::<i8>(), len).to_vec())
                        }
                        IntElem::U8 => IntData::U8(std::slice::from_raw_parts(p, len).to_vec()),
                        IntElem::I32 => IntData::I32(
                            (0..len)
                                .map(|i| p.cast::<i32>().add(i).read_unaligned())
                                .collect(),
                        ),
                    }
                }
            })
            .collect()
    }
}
