//! The C emitter: an [`IntGraph`] as three C99 files (plus a harness on request).
//!
//! * `NAME.h`: the API and every size a caller needs as `#define`s.
//! * `NAME.c`: one `static` function per op, specialised at compile time (shapes,
//!   strides, padding, shifts and clamp bounds are literals), and `NAME_run`, the
//!   schedule: the ops in program order on fixed arena offsets ([`plan_memory`]).
//! * `NAME_weights.c`: packed 4-bit codes, tables, biases and rescales as `const`
//!   arrays, so that a microcontroller keeps them in flash.
//!
//! The API is `int NAME_run(const NAME_input0_t *input0, …, NAME_output0_t *output0, …,
//! uint8_t *arena)`: inputs arrive **already quantized** (the graph's `quantize_input`
//! is the caller's job, with the `NAME_quantize_input0` helper of `--float-io` or on
//! the sensor side), so the generated code has no floating point at all; the outputs are
//! the raw integers of the graph outputs (`real = q · 2^-NAME_OUTPUT0_EXP`). The caller
//! owns the arena (`NAME_ARENA_SIZE` bytes, any alignment: 32-bit values are accessed
//! with `memcpy`). No malloc, no recursion, no VLAs, no writable globals.
//!
//! The arithmetic is the numeric contract, op by op, written as the golden interpreter
//! computes it (`lutq_interp::int`): accumulation in `int32_t` (the graph's
//! [`validate`](IntGraph::validate) proves it cannot overflow), rescales in `int64_t`,
//! `rshift_round` ties toward +∞ with an arithmetic right shift (checked at compile time
//! by a negative-array-size trick), left shifts as multiplications (a left shift of a
//! negative value is undefined in C).

mod depthwise_dsp;
mod harness;
mod kernels;
mod linear_dsp;
mod scratch;
mod weights;
pub use weights::constant_bytes;

use std::fmt::Write as _;
use std::path::Path;

use lutq_ir::int::{IntElem, IntGraph, IntOp, Rounding};

use crate::error::CError;
use crate::memory::{MemoryPlan, plan_memory};
use kernels::comment;
use linear_dsp::KernelChoice;

/// What to generate.
#[derive(Clone, Debug)]
pub struct EmitOptions {
    /// Names the files and prefixes every external symbol (a C identifier).
    pub prefix: String,
    /// Also write `main.c` and a `Makefile`: a program that reads raw input tensors and
    /// writes raw outputs.
    pub harness: bool,
    /// Also generate `NAME_quantize_inputK` / `NAME_dequantize_outputK` (the only
    /// floating point of the generated code).
    pub float_io: bool,
    /// One line for the file headers (e.g. the model and the quantization mode).
    pub description: String,
    /// Bytes the kernels' scratch may add to the activations' arena (`None`: a tenth of
    /// the activations' lower bound). A kernel whose scratch would reach past the limit
    /// runs fewer pixels per block (less scratch), or the plain kernels (none).
    pub scratch_limit: Option<usize>,
}

impl EmitOptions {
    pub fn new(prefix: impl Into<String>) -> Self {
        EmitOptions {
            prefix: prefix.into(),
            harness: false,
            float_io: false,
            description: String::new(),
            scratch_limit: None,
        }
    }
}

/// The generated files, by name.
#[derive(Clone, Debug)]
pub struct CSources {
    pub files: Vec<(String, String)>,
    /// Sizes the header also states.
    pub summary: CSummary,
}

/// Sizes of the generated program.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CSummary {
    pub prefix: String,
    /// Bytes of constant data: codes, tables, biases, rescales.
    pub weight_bytes: usize,
    /// The weights alone: packed codes and tables (or int8 values).
    pub packed_weight_bytes: usize,
    /// Number of weights (what int8 weights take in bytes).
    pub weight_count: usize,
    /// The largest stack buffer of a kernel: one decoded weight row (the fan-in of the
    /// widest LUT layer), in bytes.
    pub stack_row_bytes: usize,
    /// What the same weights take as int8 (1 byte per weight), plus the same biases and
    /// rescales: an int8 build's flash for constants.
    pub int8_weight_bytes: usize,
    /// `NAME_ARENA_SIZE`: the activations' plan and every kernel's scratch.
    pub arena_size: usize,
    /// The largest kernel scratch (im2col columns, 4-bit decode tables, padded planes):
    /// each kernel's lies in arena bytes no live activation uses at its step, past the
    /// activations' plan only where no gap is large enough.
    pub scratch_bytes: usize,
    pub arena_lower_bound: usize,
    pub arena_naive: usize,
    pub macs: u64,
}

impl CSources {
    /// Writes every file into `dir` (created if missing).
    pub fn write_to(&self, dir: &Path) -> Result<(), CError> {
        std::fs::create_dir_all(dir).map_err(|source| CError::Io {
            what: format!("cannot create {}", dir.display()),
            source,
        })?;
        for (name, text) in &self.files {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| CError::Io {
                what: format!("cannot write {}", path.display()),
                source,
            })?;
        }
        Ok(())
    }

    /// The C files to compile (the harness's `main.c` included when present).
    pub fn c_files(&self) -> Vec<&str> {
        self.files
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| n.ends_with(".c"))
            .collect()
    }
}

/// `name` made into a C identifier (for a default prefix from a file name).
pub fn c_identifier(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert_str(0, "model_");
    }
    s
}

fn is_c_identifier(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// C type of an element as kernels see it: 8-bit values by type, 32-bit values as raw
/// bytes (read and written with `memcpy`, so the arena needs no alignment and no
/// strict-aliasing rule is bent).
pub(crate) fn c_elem(elem: IntElem) -> &'static str {
    match elem {
        IntElem::I8 => "int8_t",
        IntElem::U8 => "uint8_t",
        IntElem::I32 => "uint8_t",
    }
}

/// The type a caller's buffer has (`int32_t` for 32-bit outputs).
fn c_api_elem(elem: IntElem) -> &'static str {
    match elem {
        IntElem::I8 => "int8_t",
        IntElem::U8 => "uint8_t",
        IntElem::I32 => "int32_t",
    }
}

/// One graph input as the C API sees it: the value its `quantize_input` produces.
struct ApiInput {
    node: usize,
}

/// The arena as [`emit`] and [`arena_blocks`] lay it out.
struct Layout {
    /// The activations' plan (its offsets may come from the plan made with the scratch).
    plan: MemoryPlan,
    scratch_at: Vec<Option<usize>>,
    /// Per node: how its kernel runs (the dual-MAC kernel's pixels per block, …).
    choices: Vec<KernelChoice>,
    arena_size: usize,
}

/// Each dual-MAC kernel's pixels per block: the most whose scratch, placed in the lowest
/// gap of the activations' `plan`, stays within the scratch limit (default a tenth of
/// the lower bound); then the scratch either in the gaps of the plan, or planned with
/// the activations as buffers of one step: whichever arena is smaller.
fn layout(graph: &IntGraph, plan: MemoryPlan, scratch_limit: Option<usize>) -> Layout {
    let limit = scratch_limit.unwrap_or(plan.lower_bound / 10);
    let budget = plan.arena_size + limit;
    let choices: Vec<KernelChoice> = (0..graph.nodes.len())
        .map(|i| {
            linear_dsp::lane_options(graph, i)
                .iter()
                .copied()
                .find(|&k| {
                    scratch::gap_end(&plan, i, linear_dsp::scratch_bytes(graph, i, k)) <= budget
                })
                .unwrap_or(KernelChoice::PLAIN)
        })
        .collect();
    let scratch_of = |i: usize| linear_dsp::scratch_bytes(graph, i, choices[i]);
    let (gap_at, gap_arena) = scratch::place_scratch(&plan, scratch_of);
    let (joint, joint_at) = crate::memory::plan_with_scratch(graph, scratch_of);
    let (plan, scratch_at, arena_size) = if joint.arena_size < gap_arena {
        let arena = joint.arena_size;
        (joint, joint_at, arena)
    } else {
        (plan, gap_at, gap_arena)
    };
    Layout {
        plan,
        scratch_at,
        choices,
        arena_size,
    }
}

/// The arena exactly as the generated C uses it (with the default scratch limit): every
/// activation buffer of the memory plan and every kernel's scratch, each with its offset
/// and the steps it is live (for `lutq report`'s memory chart; [`emit`] places the same
/// blocks at the same offsets).
pub fn arena_blocks(graph: &IntGraph) -> ArenaBlocks {
    let Layout {
        plan,
        scratch_at,
        choices,
        arena_size,
    } = layout(graph, plan_memory(graph), None);
    let mut blocks: Vec<ArenaBlock> = (0..graph.nodes.len())
        .filter(|&v| plan.alias_of[v].is_none() && plan.input_of[v].is_none())
        .map(|v| ArenaBlock {
            node: v,
            scratch: false,
            offset: plan.offsets[v],
            size: plan.sizes[v],
            start: plan.live[v].0,
            end: plan.live[v].1,
        })
        .collect();
    blocks.extend(scratch_at.iter().enumerate().filter_map(|(i, at)| {
        at.map(|offset| ArenaBlock {
            node: i,
            scratch: true,
            offset,
            size: linear_dsp::scratch_bytes(graph, i, choices[i]),
            start: i,
            end: i,
        })
    }));
    ArenaBlocks {
        blocks,
        arena_size,
        lower_bound: plan.lower_bound,
    }
}

/// See [`arena_blocks`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ArenaBlocks {
    /// Activation buffers (one per value that owns bytes: reshapes and in-place ops
    /// share their operand's), then kernel scratch.
    pub blocks: Vec<ArenaBlock>,
    /// `NAME_ARENA_SIZE` ([`CSummary::arena_size`]).
    pub arena_size: usize,
    /// The most activation bytes live at one step ([`MemoryPlan::lower_bound`]).
    pub lower_bound: usize,
}

/// Bytes `offset..offset + size` of the arena, used by node `node`'s output (or, if
/// `scratch`, by its kernel's scratch) during steps `start..=end`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ArenaBlock {
    pub node: usize,
    pub scratch: bool,
    pub offset: usize,
    pub size: usize,
    pub start: usize,
    pub end: usize,
}

/// Emits `graph` as C (see the module docs).
pub fn emit(graph: &IntGraph, options: &EmitOptions) -> Result<CSources, CError> {
    graph.validate()?;
    let p = &options.prefix;
    if !is_c_identifier(p) {
        return Err(CError::BadPrefix(p.clone()));
    }
    let inputs = api_inputs(graph)?;
    let plan = plan_memory(graph);
    let Layout {
        plan,
        scratch_at,
        choices,
        arena_size,
    } = layout(graph, plan, options.scratch_limit);
    let scratch_bytes = (0..graph.nodes.len())
        .map(|i| linear_dsp::scratch_bytes(graph, i, choices[i]))
        .max()
        .unwrap_or(0);
    let w = weights::emit_weights(graph, p)?;
    let summary = CSummary {
        prefix: p.clone(),
        weight_bytes: w.bytes,
        packed_weight_bytes: graph
            .nodes
            .iter()
            .map(|n| match &n.op {
                IntOp::Linear(l) => l.weights.size_bytes(),
                _ => 0,
            })
            .sum(),
        weight_count: graph
            .nodes
            .iter()
            .map(|n| match &n.op {
                IntOp::Linear(l) => l.weights.shape()[0] * l.weights.row_len(),
                _ => 0,
            })
            .sum(),
        int8_weight_bytes: w.int8_bytes,
        stack_row_bytes: graph
            .nodes
            .iter()
            .map(|n| match &n.op {
                IntOp::Linear(l) if matches!(l.weights, lutq_ir::int::QWeights::Lut { .. }) => {
                    l.weights.row_len()
                }
                _ => 0,
            })
            .max()
            .unwrap_or(0),
        arena_size,
        scratch_bytes,
        arena_lower_bound: plan.lower_bound,
        arena_naive: plan.naive_sum,
        macs: graph.macs(),
    };
    let header = emit_header(graph, options, &inputs, &summary);
    let source = emit_source(
        graph,
        options,
        &inputs,
        &plan,
        &scratch_at,
        &choices,
        &w.declarations,
    )?;
    let banner = banner(graph, options);
    let mut files = vec![
        (format!("{p}.h"), header),
        (format!("{p}.c"), source),
        (
            format!("{p}_weights.c"),
            format!("{banner}#include <stdint.h>\n\n{}", w.definitions),
        ),
    ];
    if options.harness {
        files.push(("main.c".into(), harness::main_c(graph, p, &banner)));
        files.push(("Makefile".into(), harness::makefile(p)));
    }
    Ok(CSources { files, summary })
}

fn banner(graph: &IntGraph, options: &EmitOptions) -> String {
    let mut s = format!(
        "/* Generated by lutq {} from model '{}'.",
        env!("CARGO_PKG_VERSION"),
        comment(&graph.name)
    );
    if !options.description.is_empty() {
        write!(s, "\n * {}", comment(&options.description)).unwrap();
    }
    s.push_str("\n * Do not edit: regenerate with `lutq compile --target c`. */\n\n");
    s
}

fn api_inputs(graph: &IntGraph) -> Result<Vec<ApiInput>, CError> {
    graph
        .inputs
        .iter()
        .enumerate()
        .map(|(k, inp)| {
            let nodes: Vec<usize> = graph
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| matches!(n.op, IntOp::QuantizeInput { input } if input == k))
                .map(|(i, _)| i)
                .collect();
            match nodes[..] {
                [node] => Ok(ApiInput { node }),
                [] => Err(CError::Unsupported {
                    node: inp.name.clone(),
                    op: "input",
                    message: "no node reads this graph input; remove it from the model".into(),
                }),
                _ => Err(CError::Unsupported {
                    node: inp.name.clone(),
                    op: "input",
                    message: "the input is quantized twice (two exponents); the C API takes \
                              each input once"
                        .into(),
                }),
            }
        })
        .collect()
}

fn emit_header(
    graph: &IntGraph,
    options: &EmitOptions,
    inputs: &[ApiInput],
    summary: &CSummary,
) -> String {
    let p = &options.prefix;
    let up = p.to_ascii_uppercase();
    let mut h = banner(graph, options);
    writeln!(h, "#ifndef {up}_H\n#define {up}_H\n\n#include <stdint.h>\n").unwrap();
    writeln!(
        h,
        "/* Bytes the caller's arena must have (any alignment). The activations' lower\n \
         * bound (most bytes live at once) is {up}_ARENA_LOWER_BOUND; the arena also holds\n \
         * the kernels' scratch (the largest: {up}_SCRATCH_BYTES), in bytes no live\n \
         * activation uses where a gap is large enough. */\n\
         #define {up}_ARENA_SIZE {}\n\
         #define {up}_ARENA_LOWER_BOUND {}\n\
         #define {up}_SCRATCH_BYTES {}\n\
         /* Constant data (codes, tables, biases, rescales) in {p}_weights.c. */\n\
         #define {up}_WEIGHT_BYTES {}\n\
         /* Multiply-accumulates per inference. */\n\
         #define {up}_MACS {}\n\
         /* The largest kernel stack buffer (one decoded weight row); budget a few hundred\n \
         * bytes more for {p}_run's frames. */\n\
         #define {up}_STACK_ROW_BYTES {}\n",
        summary.arena_size,
        summary.arena_lower_bound,
        summary.scratch_bytes,
        summary.weight_bytes,
        summary.macs,
        summary.stack_row_bytes
    )
    .unwrap();
    writeln!(
        h,
        "#define {up}_NUM_INPUTS {}\n#define {up}_NUM_OUTPUTS {}\n",
        inputs.len(),
        graph.outputs.len()
    )
    .unwrap();
    let describe = |h: &mut String, kind: &str, k: usize, name: &str, v: usize| {
        let ty = &graph.nodes[v].ty;
        let shape: Vec<String> = ty.shape.iter().map(|d| d.to_string()).collect();
        let kind_up = kind.to_ascii_uppercase();
        writeln!(
            h,
            "/* {kind} {k} '{}': {} [{}], real value = q * 2^-{up}_{kind_up}{k}_EXP. */\n\
             typedef {} {p}_{kind}{k}_t;\n\
             #define {up}_{kind_up}{k}_SIZE {}\n\
             #define {up}_{kind_up}{k}_EXP {}\n\
             #define {up}_{kind_up}{k}_MIN {}\n\
             #define {up}_{kind_up}{k}_MAX {}\n\
             #define {up}_{kind_up}{k}_RANK {}\n\
             #define {up}_{kind_up}{k}_SHAPE {{ {} }}\n",
            comment(name),
            ty.elem.name(),
            shape.join(", "),
            c_api_elem(ty.elem),
            ty.num_elements(),
            ty.exp,
            ty.elem.range().0,
            ty.elem.range().1,
            ty.shape.len(),
            shape.join(", "),
        )
        .unwrap();
    };
    for (k, inp) in inputs.iter().enumerate() {
        describe(&mut h, "input", k, &graph.inputs[k].name, inp.node);
    }
    for (k, out) in graph.outputs.iter().enumerate() {
        describe(&mut h, "output", k, &out.name, out.value.index());
    }
    writeln!(
        h,
        "/* Runs one inference: reads the quantized inputs, writes the outputs, uses\n \
         * arena[0 .. {up}_ARENA_SIZE) as scratch. Returns 0, or -1 if a pointer is NULL. */\n\
         int {p}_run({});\n",
        run_params(graph, p, inputs.len())
    )
    .unwrap();
    if options.float_io {
        for k in 0..inputs.len() {
            writeln!(
                h,
                "/* x (float) -> q = clamp(floor(x * 2^EXP + 0.5)); NaN -> 0, +-inf saturate. */\n\
                 void {p}_quantize_input{k}(const float *x, {p}_input{k}_t *q);"
            )
            .unwrap();
        }
        for k in 0..graph.outputs.len() {
            writeln!(
                h,
                "/* q -> q * 2^-EXP as float. */\n\
                 void {p}_dequantize_output{k}(const {p}_output{k}_t *q, float *y);"
            )
            .unwrap();
        }
        h.push('\n');
    }
    writeln!(h, "#endif /* {up}_H */").unwrap();
    h
}

fn run_params(graph: &IntGraph, p: &str, num_inputs: usize) -> String {
    let mut params: Vec<String> = (0..num_inputs)
        .map(|k| format!("const {p}_input{k}_t *input{k}"))
        .collect();
    params.extend((0..graph.outputs.len()).map(|k| format!("{p}_output{k}_t *output{k}")));
    params.push("uint8_t *arena".into());
    params.join(", ")
}

/// Where value `v` lives, as a pointer expression of the kernels' parameter type.
fn value_ptr(graph: &IntGraph, plan: &MemoryPlan, v: usize, writable: bool) -> String {
    let elem = c_elem(graph.nodes[v].ty.elem);
    let konst = if writable { "" } else { "const " };
    match plan.input_of[v] {
        Some(k) => format!("({konst}{elem} *)input{k}"),
        None if elem == "uint8_t" => format!("arena + {}", plan.offsets[v]),
        None => format!("({konst}{elem} *)(arena + {})", plan.offsets[v]),
    }
}

/// The arithmetic-shift check every file needs.
const SHIFT_CHECK: &str = r#"/* rshift_round needs an arithmetic right shift of negative values (implementation-
 * defined in C99; every compiler lutq targets does it): refuse to build otherwise. */
typedef char lutq_requires_arithmetic_shift[((-1) >> 1) == -1 ? 1 : -1];
"#;

/// The opt-in per-layer profiling hook: built with `-DLUTQ_PROFILE`, `NAME_run` calls
/// `lutq_profile_mark(i)` (defined by the caller, e.g. the QEMU firmware of
/// [`crate::mcu`], which reads a cycle or instruction counter) after node `i`'s kernel;
/// otherwise the mark is an empty statement and the compiled code is unchanged.
const PROFILE_HOOK: &str = r#"/* -DLUTQ_PROFILE: lutq_profile_mark(node) (the caller's) runs after every layer. */
#ifdef LUTQ_PROFILE
void lutq_profile_mark(int node);
#define LUTQ_PROFILE_MARK(node) lutq_profile_mark(node)
#else
#define LUTQ_PROFILE_MARK(node) ((void)0)
#endif
"#;

/// Helper functions by name, emitted only where a kernel calls them (clang warns about
/// unused static functions, and the generated code must build with `-Werror`).
const HELPERS: [(&str, &str); 20] = [
    (
        "lutq_clamp",
        r#"static inline int32_t lutq_clamp(int64_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : v > hi ? hi : (int32_t)v;
}
"#,
    ),
    (
        "lutq_rshift",
        r#"/* The contract's rounding shift: (a + 2^(s-1)) >> s for s > 0 (ties toward +inf),
 * a * 2^-s for s < 0. */
static inline int64_t lutq_rshift(int64_t a, int s)
{
    if (s > 62) {
        return 0;
    }
    if (s > 0) {
        return (a + ((int64_t)1 << (s - 1))) >> s;
    }
    return a * ((int64_t)1 << (s < -62 ? 62 : -s));
}
"#,
    ),
    (
        "lutq_rshift32",
        r#"/* rshift_round of a linear layer's accumulator: the graph's overflow proof
 * (IntGraph::validate) bounds |acc| + 2^(s-1) and |acc| * 2^-s by 2^31 - 1, so 32-bit
 * arithmetic is exact here (s <= 31; a left shift of 31 or more only ever meets 0). */
static inline int32_t lutq_rshift32(int32_t a, int s)
{
    if (s > 0) {
        return (a + ((int32_t)1 << (s - 1))) >> s;
    }
    return s < -30 ? 0 : a * ((int32_t)1 << -s);
}
"#,
    ),
    (
        "lutq_clamp32",
        r#"static inline int32_t lutq_clamp32(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}
"#,
    ),
    (
        "lutq_pair",
        r#"/* The dual 16-bit multiply-accumulate kernels' DSP path: Arm cores with the DSP
 * extension (Cortex-M4/M7/M33/M55), little-endian; -DLUTQ_NO_DSP forces the portable
 * C path, which computes the same integers. */
#if defined(__ARM_FEATURE_DSP) && !defined(__ARM_BIG_ENDIAN) && !defined(LUTQ_NO_DSP)
#include <arm_acle.h>
#define LUTQ_DSP 1
#endif

/* Weight and column pairs: two int16 in one 32-bit word, tap 2j in the low half. */
static inline uint32_t lutq_pair(int32_t lo, int32_t hi)
{
    return ((uint32_t)lo & 0xffffu) | (((uint32_t)hi & 0xffffu) << 16);
}
"#,
    ),
    (
        "lutq_dot2",
        r#"/* acc + w.lo * x.lo + w.hi * x.hi, the halves as signed 16-bit values: one SMLAD.
 * Portable: (v ^ 0x8000) - 0x8000 sign-extends a half without implementation-defined
 * conversions. */
static inline int32_t lutq_dot2(uint32_t w, uint32_t x, int32_t acc)
{
#ifdef LUTQ_DSP
    return __smlad((int16x2_t)w, (int16x2_t)x, acc);
#else
    return acc
        + (((int32_t)(w & 0xffffu) ^ 0x8000) - 0x8000) * (((int32_t)(x & 0xffffu) ^ 0x8000) - 0x8000)
        + (((int32_t)(w >> 16) ^ 0x8000) - 0x8000) * (((int32_t)(x >> 16) ^ 0x8000) - 0x8000);
#endif
}
"#,
    ),
    (
        "lutq_ld2",
        r#"/* a = p[off / 4], b = p[off / 4 + 1] (off: a literal byte offset, p 4-byte aligned):
 * one LDRD (GNU inline assembly: gcc splits a 64-bit load into two LDRs on Cortex-M4).
 * The assembly names no memory operand (with one, gcc kept every p + off in a register
 * or on the stack); instead it is volatile, so it stays in order with the other volatile
 * assembly, and lutq_ld2_fence(), a compiler barrier, follows the stores it reads. */
#if defined(LUTQ_DSP) && defined(__GNUC__)
#define lutq_ld2(p, off, a, b) __asm__ volatile("ldrd %0, %1, [%2, #" #off "]" : "=r"(a), "=r"(b) : "r"(p))
#define lutq_ld2_fence() __asm__ volatile("" ::: "memory")
#else
#define lutq_ld2(p, off, a, b) ((a) = (p)[(off) / 4], (b) = (p)[(off) / 4 + 1])
#define lutq_ld2_fence() ((void)0)
#endif
"#,
    ),
    (
        "lutq_dot2m",
        r#"/* acc + w.lo * q[0] + w.hi * q[1], q anywhere 2-byte aligned: one (unaligned) LDR
 * and one SMLAD. */
static inline int32_t lutq_dot2m(uint32_t w, const int16_t *q, int32_t acc)
{
#ifdef LUTQ_DSP
    uint32_t x;
    memcpy(&x, q, sizeof x);
    return __smlad((int16x2_t)w, (int16x2_t)x, acc);
#else
    return acc + (((int32_t)(w & 0xffffu) ^ 0x8000) - 0x8000) * q[0]
        + (((int32_t)(w >> 16) ^ 0x8000) - 0x8000) * q[1];
#endif
}
"#,
    ),
    (
        "lutq_load2",
        r#"/* q[0] (low half) and q[1] (high half) as one word: one (unaligned) LDR. */
static inline uint32_t lutq_load2(const int16_t *q)
{
#ifdef LUTQ_DSP
    uint32_t x;
    memcpy(&x, q, sizeof x);
    return x;
#else
    return lutq_pair(q[0], q[1]);
#endif
}
"#,
    ),
    (
        "lutq_smlabt",
        r#"/* acc + w.lo * x.hi (signed 16-bit halves): one SMLABT. */
static inline int32_t lutq_smlabt(uint32_t w, uint32_t x, int32_t acc)
{
#ifdef LUTQ_DSP
    return __smlabt((int32_t)w, (int32_t)x, acc);
#else
    return acc + (((int32_t)(w & 0xffffu) ^ 0x8000) - 0x8000) * (((int32_t)(x >> 16) ^ 0x8000) - 0x8000);
#endif
}
"#,
    ),
    (
        "lutq_smlatb",
        r#"/* acc + w.hi * x.lo (signed 16-bit halves): one SMLATB. */
static inline int32_t lutq_smlatb(uint32_t w, uint32_t x, int32_t acc)
{
#ifdef LUTQ_DSP
    return __smlatb((int32_t)w, (int32_t)x, acc);
#else
    return acc + (((int32_t)(w >> 16) ^ 0x8000) - 0x8000) * (((int32_t)(x & 0xffffu) ^ 0x8000) - 0x8000);
#endif
}
"#,
    ),
    (
        "lutq_widen4u",
        r#"/* x[0..3] (uint8_t) widened to dst[0..3] (int16, anywhere 2-byte aligned): one
 * load, two UXTB16, two halfword packs and two stores instead of four of each. */
static inline void lutq_widen4u(const uint8_t *x, int16_t *dst)
{
#ifdef LUTQ_DSP
    uint32_t v, even, odd, lo, hi;
    memcpy(&v, x, sizeof v);
    even = (uint32_t)__uxtb16((uint8x4_t)v);
#if defined(__GNUC__)
    __asm__("uxtb16 %0, %1, ror #8" : "=r"(odd) : "r"(v));
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(lo) : "r"(even), "r"(odd));
    __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(hi) : "r"(odd), "r"(even));
#else
    odd = (uint32_t)__uxtb16((uint8x4_t)(v >> 8));
    lo = (even & 0xffffu) | (odd << 16);
    hi = (even >> 16) | (odd & 0xffff0000u);
#endif
    memcpy(dst, &lo, sizeof lo);
    memcpy(dst + 2, &hi, sizeof hi);
#else
    dst[0] = x[0];
    dst[1] = x[1];
    dst[2] = x[2];
    dst[3] = x[3];
#endif
}
"#,
    ),
    (
        "lutq_widen4s",
        r#"/* x[0..3] (int8_t) widened to dst[0..3] (int16, anywhere 2-byte aligned): one
 * load, two SXTB16, two halfword packs and two stores instead of four of each. */
static inline void lutq_widen4s(const int8_t *x, int16_t *dst)
{
#ifdef LUTQ_DSP
    uint32_t v, even, odd, lo, hi;
    memcpy(&v, x, sizeof v);
    even = (uint32_t)__sxtb16((int8x4_t)v);
#if defined(__GNUC__)
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(odd) : "r"(v));
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(lo) : "r"(even), "r"(odd));
    __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(hi) : "r"(odd), "r"(even));
#else
    odd = (uint32_t)__sxtb16((int8x4_t)(v >> 8));
    lo = (even & 0xffffu) | (odd << 16);
    hi = (even >> 16) | (odd & 0xffff0000u);
#endif
    memcpy(dst, &lo, sizeof lo);
    memcpy(dst + 2, &hi, sizeof hi);
#else
    dst[0] = x[0];
    dst[1] = x[1];
    dst[2] = x[2];
    dst[3] = x[3];
#endif
}
"#,
    ),
    (
        "lutq_split4",
        r#"/* Four int8 weights as the pairs (w0, w2) and (w1, w3): one load, two SXTB16. */
static inline void lutq_split4(const int8_t *w, uint32_t *w02, uint32_t *w13)
{
#ifdef LUTQ_DSP
    uint32_t v;
    memcpy(&v, w, sizeof v);
    *w02 = (uint32_t)__sxtb16((int8x4_t)v);
    *w13 = (uint32_t)__sxtb16((int8x4_t)(v >> 8));
#else
    *w02 = lutq_pair(w[0], w[2]);
    *w13 = lutq_pair(w[1], w[3]);
#endif
}
"#,
    ),
    (
        "lutq_w02",
        r#"/* The int8 weights w[0], w[2] as a pair: one load and one SXTB16. */
static inline uint32_t lutq_w02(const int8_t *w)
{
#ifdef LUTQ_DSP
    uint32_t v;
    memcpy(&v, w, sizeof v);
    return (uint32_t)__sxtb16((int8x4_t)v);
#else
    return ((uint32_t)(int32_t)w[0] & 0xffffu) | (((uint32_t)(int32_t)w[2] & 0xffffu) << 16);
#endif
}
"#,
    ),
    (
        "lutq_w13",
        r#"/* The int8 weights w[1], w[3] as a pair: one load and one SXTB16 with its ROR #8
 * (GNU inline assembly: ACLE has no rotated form, and gcc does not fuse the rotate). */
static inline uint32_t lutq_w13(const int8_t *w)
{
#if defined(LUTQ_DSP) && defined(__GNUC__)
    uint32_t v, r;
    memcpy(&v, w, sizeof v);
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
#elif defined(LUTQ_DSP)
    uint32_t v;
    memcpy(&v, w, sizeof v);
    return (uint32_t)__sxtb16((int8x4_t)(v >> 8));
#else
    return ((uint32_t)(int32_t)w[1] & 0xffffu) | (((uint32_t)(int32_t)w[3] & 0xffffu) << 16);
#endif
}
"#,
    ),
    (
        "lutq_usat8",
        r#"/* v clamped to 0..255: one USAT on a core with the DSP extension. */
static inline int32_t lutq_usat8(int32_t v)
{
#ifdef LUTQ_DSP
    return (int32_t)__usat(v, 8);
#else
    return v < 0 ? 0 : v > 255 ? 255 : v;
#endif
}
"#,
    ),
    (
        "lutq_ssat8",
        r#"/* v clamped to -128..127: one SSAT on a core with the DSP extension. */
static inline int32_t lutq_ssat8(int32_t v)
{
#ifdef LUTQ_DSP
    return __ssat(v, 8);
#else
    return v < -128 ? -128 : v > 127 ? 127 : v;
#endif
}
"#,
    ),
    (
        "lutq_load_i32",
        r#"static inline int32_t lutq_load_i32(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}
"#,
    ),
    (
        "lutq_store_i32",
        r#"static inline void lutq_store_i32(uint8_t *p, int32_t v)
{
    memcpy(p, &v, sizeof v);
}
"#,
    ),
];

/// The rounding shifts of a [`Rounding::HalfEven`] program, in place of [`HELPERS`]'
/// (same names, so every kernel calls them unchanged).
const HALF_EVEN_HELPERS: [(&str, &str); 2] = [
    (
        "lutq_rshift",
        r#"/* The program's rounding shift, ties to even (ONNX QuantizeLinear's rounding):
 * (a + 2^(s-1) - 1 + ((a >> s) & 1)) >> s for s > 0, a * 2^-s for s < 0. */
static inline int64_t lutq_rshift(int64_t a, int s)
{
    if (s > 62) {
        return 0;
    }
    if (s > 0) {
        return (a + ((int64_t)1 << (s - 1)) - 1 + ((a >> s) & 1)) >> s;
    }
    return a * ((int64_t)1 << (s < -62 ? 62 : -s));
}
"#,
    ),
    (
        "lutq_rshift32",
        r#"/* rshift_round (ties to even) of a linear layer's accumulator: the graph's overflow
 * proof bounds |acc| + 2^(s-1) and |acc| * 2^-s by 2^31 - 1, and the intermediate here
 * never exceeds the half-up one's, so 32-bit arithmetic is exact (s <= 31). */
static inline int32_t lutq_rshift32(int32_t a, int s)
{
    if (s > 0) {
        return (a + ((int32_t)1 << (s - 1)) - 1 + ((a >> s) & 1)) >> s;
    }
    return s < -30 ? 0 : a * ((int32_t)1 << -s);
}
"#,
    ),
];

fn emit_source(
    graph: &IntGraph,
    options: &EmitOptions,
    inputs: &[ApiInput],
    plan: &MemoryPlan,
    scratch_at: &[Option<usize>],
    choices: &[KernelChoice],
    weight_declarations: &str,
) -> Result<String, CError> {
    let p = &options.prefix;
    let mut c = banner(graph, options);
    writeln!(c, "#include \"{p}.h\"\n\n#include <string.h>\n").unwrap();
    c.push_str(SHIFT_CHECK);
    c.push('\n');
    c.push_str(PROFILE_HOOK);
    c.push('\n');
    let mut schedule = String::new();
    let mut kernel_text = String::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let Some(kernel) = kernels::emit_kernel(graph, i, p, choices[i])? else {
            continue;
        };
        kernel_text.push_str(&kernel);
        kernel_text.push('\n');
        let mut args: Vec<String> = node
            .inputs
            .iter()
            .map(|v| value_ptr(graph, plan, v.index(), false))
            .collect();
        args.push(value_ptr(graph, plan, i, true));
        if let Some(at) = scratch_at[i] {
            args.push(format!("arena + {at}"));
        }
        writeln!(
            schedule,
            "    layer_{i}({}); /* {} */\n    LUTQ_PROFILE_MARK({i});",
            args.join(", "),
            comment(&node.name)
        )
        .unwrap();
    }
    for (name, helper) in HELPERS {
        if kernel_text.contains(&format!("{name}(")) {
            let even = HALF_EVEN_HELPERS.iter().find(|(n, _)| *n == name);
            match (graph.rounding, even) {
                (Rounding::HalfEven, Some((_, even))) => c.push_str(even),
                _ => c.push_str(helper),
            }
            c.push('\n');
        }
    }
    c.push_str(weight_declarations);
    c.push('\n');
    c.push_str(&kernel_text);
    let up = p.to_ascii_uppercase();
    writeln!(c, "int {p}_run({})\n{{", run_params(graph, p, inputs.len())).unwrap();
    let mut null_checks: Vec<String> = (0..inputs.len()).map(|k| format!("!input{k}")).collect();
    null_checks.extend((0..graph.outputs.len()).map(|k| format!("!output{k}")));
    null_checks.push("!arena".into());
    writeln!(
        c,
        "    if ({}) {{\n        return -1;\n    }}",
        null_checks.join(" || ")
    )
    .unwrap();
    c.push_str(&schedule);
    for (k, out) in graph.outputs.iter().enumerate() {
        let v = out.value.index();
        let src = match plan.input_of[v] {
            Some(j) => format!("input{j}"),
            None => format!("arena + {}", plan.offsets[v]),
        };
        writeln!(
            c,
            "    memcpy(output{k}, {src}, {up}_OUTPUT{k}_SIZE * sizeof *output{k});"
        )
        .unwrap();
    }
    c.push_str("    return 0;\n}\n");
    if options.float_io {
        c.push('\n');
        c.push_str(&float_io(graph, p, inputs));
    }
    Ok(c)
}

/// `2^e` as an exact C double literal.
fn pow2_literal(e: i32) -> String {
    format!("0x1p{e}")
}

fn float_io(graph: &IntGraph, p: &str, inputs: &[ApiInput]) -> String {
    let up = p.to_ascii_uppercase();
    let mut c = String::new();
    for (k, inp) in inputs.iter().enumerate() {
        let ty = &graph.nodes[inp.node].ty;
        let (lo, hi) = ty.elem.range();
        // Mirrors lutq_ir::int::quantize_input: exact in double (x * 2^exp is exact, and
        // so is + 0.5 while it matters); the comparisons come first so that no
        // out-of-range double is converted to an integer (undefined in C). Ties to even:
        // a tie is x · 2^exp + 0.5 landing on an integer (r == v, also where the upper
        // clamp took it: 126.5 is a tie below 127); rounded up to an odd r, it goes back
        // down to the even one.
        let even = match graph.rounding {
            Rounding::HalfUp => "",
            Rounding::HalfEven => {
                "\n        if ((double)r == v && r % 2 != 0) {\n            r -= 1;\n        }"
            }
        };
        writeln!(
            c,
            "void {p}_quantize_input{k}(const float *x, {p}_input{k}_t *q)\n{{\n    \
             long i;\n    \
             for (i = 0; i < {up}_INPUT{k}_SIZE; ++i) {{\n        \
             const double v = (double)x[i] * {} + 0.5;\n        \
             long r;\n        \
             if (v != v) {{\n            r = 0 < {lo} ? {lo} : 0 > {hi} ? {hi} : 0;\n        \
             }} else if (v < {lo}.0) {{\n            r = {lo};\n        \
             }} else if (v >= {hi}.0) {{\n            r = {hi};\n        \
             }} else {{\n            r = (long)v;\n            \
             if ((double)r > v) {{\n                r -= 1;\n            }}\n        }}{even}\n        \
             q[i] = ({p}_input{k}_t)r;\n    }}\n}}\n",
            pow2_literal(ty.exp.clamp(-1074, 1023)),
        )
        .unwrap();
    }
    for (k, out) in graph.outputs.iter().enumerate() {
        let ty = &graph.nodes[out.value.index()].ty;
        writeln!(
            c,
            "void {p}_dequantize_output{k}(const {p}_output{k}_t *q, float *y)\n{{\n    \
             long i;\n    \
             for (i = 0; i < {up}_OUTPUT{k}_SIZE; ++i) {{\n        \
             y[i] = (float)((double)q[i] * {});\n    }}\n}}\n",
            pow2_literal(-ty.exp.clamp(-1023, 1074)),
        )
        .unwrap();
    }
    c
}
