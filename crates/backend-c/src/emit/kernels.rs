//! One C function per op, specialised: every size, stride, pad, shift and clamp bound is
//! a literal, so the compiler unrolls the small loops and folds the index arithmetic.
//!
//! Conventions: a kernel is `static void layer_<i>(inputs…, output)`; 8-bit values are
//! `int8_t` / `uint8_t` pointers, 32-bit values raw bytes (`lutq_load_i32` /
//! `lutq_store_i32`). Elementwise kernels may run in place (the memory plan lets an add
//! or a requant overwrite a dying operand): each reads element `i` of its operands
//! before writing element `i`, and no pointer is `restrict`.
//!
//! Linear layers decode the 4-bit codes of one output channel into a stack row of int8
//! weights (`K` bytes) once and reuse it for every output pixel; decoding in the
//! innermost loop would redo the same table lookups `OH·OW` times. Padding is handled
//! outside the hot loop: output pixels whose window lies inside the input run a loop
//! without bounds checks, only the border pixels test each tap.

use std::fmt::Write as _;

use lutq_ir::Pool;
use lutq_ir::int::{
    Extremum, IntElem, IntGraph, IntNode, IntOp, QLinear, QResize, QWeights, Rescale, ResizeTap,
};

use super::c_elem;
use super::linear_dsp::{self, KernelChoice};
use super::weights::{RescaleForm, rescale_form};
use crate::error::CError;

/// The C function computing node `i`, or `None` for ops without code (`quantize_input`:
/// the caller quantizes; `reshape`: a view of the same bytes).
/// `choice`: how node `i`'s kernel runs (one of `linear_dsp::lane_options`, chosen to fit
/// the scratch limit; `KernelChoice::PLAIN`: the plain kernels).
pub(crate) fn emit_kernel(
    graph: &IntGraph,
    i: usize,
    p: &str,
    choice: KernelChoice,
) -> Result<Option<String>, CError> {
    let node = &graph.nodes[i];
    let ins: Vec<&lutq_ir::int::QType> = node.inputs.iter().map(|&v| graph.ty(v)).collect();
    let mut c = format!("/* %{i} {} '{}' */\n", node.op.name(), comment(&node.name));
    let params = params(graph, i, choice);
    if choice.lanes > 0 {
        // The dual-MAC kernels stay functions of their own: inlined into `NAME_run`,
        // their register allocation depended on the rest of the model (IC ResNet-8's
        // 3×3 convs varied 1.42–1.61 instructions per MAC with unrelated changes).
        c.push_str("#ifdef __GNUC__\n__attribute__((noinline))\n#endif\n");
    }
    writeln!(c, "static void layer_{i}({params})\n{{").unwrap();
    match &node.op {
        IntOp::QuantizeInput { .. } | IntOp::Reshape => return Ok(None),
        IntOp::Linear(layer) => linear(&mut c, graph, i, p, layer, choice)?,
        IntOp::Add(a) => {
            let n = node.ty.num_elements();
            let sum = format!(
                "(int64_t){} * {} + (int64_t){} * {}",
                read(ins[0].elem, "x0", "i"),
                1i64 << a.align_a,
                read(ins[1].elem, "x1", "i"),
                1i64 << a.align_b
            );
            let v = format!(
                "lutq_clamp(lutq_rshift({sum}, {}), {}, {})",
                a.shift, a.lo, a.hi
            );
            writeln!(
                c,
                "    long i;\n    for (i = 0; i < {n}; ++i) {{\n        {}\n    }}",
                write(node.ty.elem, "y", "i", &v)
            )
            .unwrap();
        }
        IntOp::Requant { rescale, lo, hi } => {
            let n = node.ty.num_elements();
            let v = format!(
                "lutq_clamp({}, {lo}, {hi})",
                rescale_literal(*rescale, &read(ins[0].elem, "x0", "i"))
            );
            writeln!(
                c,
                "    long i;\n    for (i = 0; i < {n}; ++i) {{\n        {}\n    }}",
                write(node.ty.elem, "y", "i", &v)
            )
            .unwrap();
        }
        IntOp::Concat { axis, shifts } => {
            let out = &node.ty;
            let outer: usize = out.shape[..*axis].iter().product();
            let inner: usize = out.shape[axis + 1..].iter().product();
            let total = out.shape[*axis] * inner;
            let (lo, hi) = out.elem.range();
            writeln!(c, "    long o, i;\n    for (o = 0; o < {outer}; ++o) {{").unwrap();
            let mut offset = 0;
            for (j, (t, &s)) in ins.iter().zip(shifts).enumerate() {
                let chunk = t.shape[*axis] * inner;
                let src = format!("o * {chunk} + i");
                let dst = format!("o * {total} + {offset} + i");
                let v = format!(
                    "lutq_clamp(lutq_rshift({}, {s}), {lo}, {hi})",
                    read(t.elem, &format!("x{j}"), &src)
                );
                writeln!(
                    c,
                    "        for (i = 0; i < {chunk}; ++i) {{\n            {}\n        }}",
                    write(out.elem, "y", &dst, &v)
                )
                .unwrap();
                offset += chunk;
            }
            c.push_str("    }\n");
        }
        IntOp::Table(t) => {
            // Channel `c`'s table at `256 · c` (one table: every channel reads table 0).
            let shape = &node.ty.shape;
            let (outer, channels) = (
                shape.first().copied().unwrap_or(1),
                shape.get(1).copied().unwrap_or(1),
            );
            let plane: usize = shape.iter().skip(2).product();
            let (x_min, _) = ins[0].elem.range();
            let table = format!("{p}_table_{i}");
            let per_channel = if t.tables() == 1 { "0" } else { "256 * c" };
            let v = format!("t[{} - ({x_min})]", read(ins[0].elem, "x0", "j"));
            writeln!(
                c,
                "    long n, c, j;\n    for (n = 0; n < {outer}; ++n) {{\n        \
                 for (c = 0; c < {channels}; ++c) {{\n            \
                 const {} *t = {table} + {per_channel};\n            \
                 const long base = (n * {channels} + c) * {plane};\n            \
                 for (j = base; j < base + {plane}; ++j) {{\n                {}\n            }}\n        }}\n    }}",
                super::c_elem(node.ty.elem),
                write(node.ty.elem, "y", "j", &v)
            )
            .unwrap();
        }
        IntOp::Mul(m) => {
            let n = node.ty.num_elements();
            let inner = n / ins[1].num_elements().max(1);
            let outer = n / inner.max(1);
            let v = format!(
                "lutq_clamp32(lutq_rshift32((int32_t){} * g, {}), {}, {})",
                read(ins[0].elem, "x0", "j"),
                m.shift,
                m.lo,
                m.hi
            );
            writeln!(
                c,
                "    long o, j;\n    for (o = 0; o < {outer}; ++o) {{\n        \
                 const int32_t g = {};\n        \
                 for (j = o * {inner}; j < (o + 1) * {inner}; ++j) {{\n            {}\n        }}\n    }}",
                read(ins[1].elem, "x1", "o"),
                write(node.ty.elem, "y", "j", &v)
            )
            .unwrap();
        }
        IntOp::Softmax(sm) => {
            let shape = &ins[0].shape;
            let n = shape[sm.axis];
            let inner: usize = shape[sm.axis + 1..].iter().product();
            let outer = ins[0].num_elements() / (n * inner).max(1);
            let table = format!("{p}_exp_{i}");
            let at = format!("(o * {n} + k) * {inner} + j");
            let x = read(ins[0].elem, "x0", &at);
            writeln!(
                c,
                "    long o, j, k;\n    for (o = 0; o < {outer}; ++o) {{\n        \
                 for (j = 0; j < {inner}; ++j) {{\n            \
                 int32_t m = {x_first}, s = 0;\n            \
                 for (k = 1; k < {n}; ++k) {{\n                \
                 const int32_t v = {x};\n                \
                 if (v > m) {{\n                    m = v;\n                }}\n            }}\n            \
                 for (k = 0; k < {n}; ++k) {{\n                s += {table}[m - {x}];\n            }}\n            \
                 for (k = 0; k < {n}; ++k) {{\n                \
                 const int32_t q = ({table}[m - {x}] * 256 + s / 2) / s;\n                \
                 {}\n            }}\n        }}\n    }}",
                write(node.ty.elem, "y", &at, "(q > 255 ? 255 : q)"),
                x_first = read(ins[0].elem, "x0", &format!("o * {n} * {inner} + j")),
            )
            .unwrap();
        }
        IntOp::Transpose { perm } => {
            // Loops over the output in order; the source index advances by each output
            // axis's input stride.
            let in_shape = &ins[0].shape;
            let rank = in_shape.len();
            let mut in_strides = vec![1usize; rank];
            for d in (0..rank.saturating_sub(1)).rev() {
                in_strides[d] = in_strides[d + 1] * in_shape[d + 1];
            }
            let vars: Vec<String> = (0..rank).map(|d| format!("i{d}")).collect();
            writeln!(c, "    long j = 0, {};", vars.join(", ")).unwrap();
            let mut close = String::new();
            for (d, (v, n)) in vars.iter().zip(&node.ty.shape).enumerate() {
                let pad = "    ".repeat(d + 1);
                writeln!(c, "{pad}for ({v} = 0; {v} < {n}; ++{v}) {{").unwrap();
                close = format!("{pad}}}\n{close}");
            }
            let src: Vec<String> = (0..rank)
                .map(|d| format!("{} * {}", vars[d], in_strides[perm[d]]))
                .collect();
            let pad = "    ".repeat(rank + 1);
            let v = read(ins[0].elem, "x0", &src.join(" + "));
            writeln!(c, "{pad}{}\n{pad}++j;", write(node.ty.elem, "y", "j", &v)).unwrap();
            c.push_str(&close);
        }
        IntOp::Slice { axis, start, step } => {
            let s = &ins[0].shape;
            let inner: usize = s[axis + 1..].iter().product();
            let outer: usize = s[..*axis].iter().product();
            let (n_in, n_out) = (s[*axis], node.ty.shape[*axis]);
            let v = read(
                ins[0].elem,
                "x0",
                &format!("(o * {n_in} + {start} + k * {step}) * {inner} + j"),
            );
            writeln!(
                c,
                "    long o, k, j;\n    for (o = 0; o < {outer}; ++o) {{\n        \
                 for (k = 0; k < {n_out}; ++k) {{\n            \
                 for (j = 0; j < {inner}; ++j) {{\n                {}\n            }}\n        }}\n    }}",
                write(node.ty.elem, "y", &format!("(o * {n_out} + k) * {inner} + j"), &v)
            )
            .unwrap();
        }
        IntOp::Resize(r) => resize(&mut c, node, &ins[0].shape, r),
        IntOp::Extremum { kind, shifts } => {
            let n = node.ty.num_elements();
            let (lo, hi) = node.ty.elem.range();
            let better = match kind {
                Extremum::Max => ">",
                Extremum::Min => "<",
            };
            let aligned = |k: usize| {
                format!(
                    "lutq_clamp(lutq_rshift({}, {}), {lo}, {hi})",
                    read(ins[k].elem, &format!("x{k}"), "i"),
                    shifts[k]
                )
            };
            writeln!(c, "    long i;\n    for (i = 0; i < {n}; ++i) {{").unwrap();
            writeln!(c, "        int32_t m = {};", aligned(0)).unwrap();
            for k in 1..ins.len() {
                writeln!(
                    c,
                    "        {{\n            const int32_t v = {};\n            \
                     if (v {better} m) {{\n                m = v;\n            }}\n        }}",
                    aligned(k)
                )
                .unwrap();
            }
            writeln!(c, "        {}\n    }}", write(node.ty.elem, "y", "i", "m")).unwrap();
        }
        IntOp::MaxPool(pool) => {
            let (type_min, _) = node.ty.elem.range();
            pool_loops(
                &mut c,
                pool,
                &ins[0].shape,
                &node.ty.shape,
                &format!("int32_t m = {type_min};"),
                "if (v > m) {\n                        m = v;\n                    }",
                &write(node.ty.elem, "y", "(c * OH + oy) * OW + ox", "m"),
            );
        }
        IntOp::SumPool {
            pool,
            shift,
            lo,
            hi,
        } => {
            let area = (pool.kernel[0] * pool.kernel[1]) as u64;
            if area * 255 > i32::MAX as u64 {
                return Err(unsupported(
                    node,
                    "the pooling window is too large for an i32 sum",
                ));
            }
            pool_loops(
                &mut c,
                pool,
                &ins[0].shape,
                &node.ty.shape,
                "int32_t m = 0;",
                "m += v;",
                &write(
                    node.ty.elem,
                    "y",
                    "(c * OH + oy) * OW + ox",
                    &format!("lutq_clamp(lutq_rshift(m, {shift}), {lo}, {hi})"),
                ),
            );
        }
    }
    c.push_str("}\n");
    Ok(Some(c))
}

/// `s` made safe inside a C block comment (a name containing `*/` would end it).
pub(crate) fn comment(s: &str) -> String {
    s.replace("*/", "* /")
}

/// [`QResize`]: the row and column taps as constant arrays in the function, a loop over
/// planes and output pixels; nearest neighbour (`frac = 0`) is a gather.
fn resize(c: &mut String, node: &IntNode, in_shape: &[usize], r: &QResize) {
    let (h, w) = (in_shape[2], in_shape[3]);
    let planes = in_shape[0] * in_shape[1];
    let (oh, ow) = (r.rows.len(), r.cols.len());
    let index_type = if h.max(w) <= u16::MAX as usize {
        "uint16_t"
    } else {
        "uint32_t"
    };
    let list = |v: Vec<String>| v.join(", ");
    let mut arrays = |name: &str, taps: &[ResizeTap]| {
        let lo = list(taps.iter().map(|t| t.lo.to_string()).collect());
        writeln!(
            c,
            "    static const {index_type} {name}_lo[{}] = {{{lo}}};",
            taps.len()
        )
        .unwrap();
        if r.frac > 0 {
            let hi = list(taps.iter().map(|t| t.hi.to_string()).collect());
            let wt = list(taps.iter().map(|t| t.w_hi.to_string()).collect());
            writeln!(
                c,
                "    static const {index_type} {name}_hi[{}] = {{{hi}}};",
                taps.len()
            )
            .unwrap();
            writeln!(
                c,
                "    static const int16_t {name}_w[{}] = {{{wt}}};",
                taps.len()
            )
            .unwrap();
        }
    };
    arrays("row", &r.rows);
    arrays("col", &r.cols);
    let elem = node.ty.elem;
    let dst = "(p * {oh} + oy) * {ow} + ox"
        .replace("{oh}", &oh.to_string())
        .replace("{ow}", &ow.to_string());
    let body = if r.frac == 0 {
        let v = read(elem, "x0", "a + col_lo[ox]");
        write(elem, "y", &dst, &v)
    } else {
        let one = 1i32 << r.frac;
        let v = format!(
            "lutq_rshift32(({one} - wy) * (({one} - wx) * {} + wx * {})\n                \
             + wy * (({one} - wx) * {} + wx * {}), {})",
            read(elem, "x0", "a + col_lo[ox]"),
            read(elem, "x0", "a + col_hi[ox]"),
            read(elem, "x0", "b + col_lo[ox]"),
            read(elem, "x0", "b + col_hi[ox]"),
            2 * r.frac
        );
        format!(
            "const int32_t wx = col_w[ox];\n            {}",
            write(elem, "y", &dst, &v)
        )
    };
    let row_setup = if r.frac == 0 {
        format!("const long a = p * {} + (long)row_lo[oy] * {w};", h * w)
    } else {
        format!(
            "const long a = p * {hw} + (long)row_lo[oy] * {w};\n        \
             const long b = p * {hw} + (long)row_hi[oy] * {w};\n        \
             const int32_t wy = row_w[oy];",
            hw = h * w
        )
    };
    writeln!(
        c,
        "    long p, oy, ox;\n    for (p = 0; p < {planes}; ++p) {{\n    \
         for (oy = 0; oy < {oh}; ++oy) {{\n        {row_setup}\n        \
         for (ox = 0; ox < {ow}; ++ox) {{\n            {body}\n        }}\n    }}\n    }}"
    )
    .unwrap();
}

fn unsupported(node: &IntNode, message: &str) -> CError {
    CError::Unsupported {
        node: node.name.clone(),
        op: node.op.name(),
        message: message.into(),
    }
}

fn params(graph: &IntGraph, i: usize, choice: KernelChoice) -> String {
    let node = &graph.nodes[i];
    let mut ps: Vec<String> = node
        .inputs
        .iter()
        .enumerate()
        .map(|(k, &v)| format!("const {} *x{k}", c_elem(graph.ty(v).elem)))
        .collect();
    ps.push(format!("{} *y", c_elem(node.ty.elem)));
    if linear_dsp::scratch_bytes(graph, i, choice) > 0 {
        ps.push("uint8_t *scratch".into());
    }
    ps.join(", ")
}

/// Element `index` of `ptr`, as an integer expression.
fn read(elem: IntElem, ptr: &str, index: &str) -> String {
    match elem {
        IntElem::I32 => format!("lutq_load_i32({ptr} + 4 * ({index}))"),
        _ => format!("{ptr}[{index}]"),
    }
}

/// A statement storing `value` (already clamped into the type) at element `index`.
pub(super) fn write(elem: IntElem, ptr: &str, index: &str, value: &str) -> String {
    match elem {
        IntElem::I32 => format!("lutq_store_i32({ptr} + 4 * ({index}), {value});"),
        IntElem::I8 => format!("{ptr}[{index}] = (int8_t){value};"),
        IntElem::U8 => format!("{ptr}[{index}] = (uint8_t){value};"),
    }
}

/// `rescale(x)` with the constants as literals.
fn rescale_literal(r: Rescale, x: &str) -> String {
    match r {
        Rescale::Shift(s) => format!("lutq_rshift({x}, {s})"),
        Rescale::Multiplier { multiplier, shift } => {
            format!("lutq_rshift((int64_t)({x}) * {multiplier}, {})", 31 + shift)
        }
    }
}

/// Loops over every output element of a pooling op: `init` starts a window, `step`
/// folds tap `v` into `m`, `store` writes the result.
fn pool_loops(
    c: &mut String,
    pool: &Pool,
    x: &[usize],
    out: &[usize],
    init: &str,
    step: &str,
    store: &str,
) {
    let (planes, h, w) = (x[0] * x[1], x[2], x[3]);
    let (oh, ow) = (out[2], out[3]);
    let [kh, kw] = pool.kernel;
    let [sy, sx] = pool.strides;
    let [dy, dx] = pool.dilations;
    let (pt, pl) = (pool.pads[0], pool.pads[1]);
    writeln!(
        c,
        "    enum {{ H = {h}, W = {w}, OH = {oh}, OW = {ow} }};\n    \
         long c, oy, ox, ky, kx;\n    \
         for (c = 0; c < {planes}; ++c) {{\n        \
         for (oy = 0; oy < OH; ++oy) {{\n            \
         for (ox = 0; ox < OW; ++ox) {{\n                \
         {init}\n                \
         for (ky = 0; ky < {kh}; ++ky) {{\n                    \
         const long iy = oy * {sy} - {pt} + ky * {dy};\n                    \
         if (iy < 0 || iy >= H) {{\n                        continue;\n                    }}\n                    \
         for (kx = 0; kx < {kw}; ++kx) {{\n                        \
         const long ix = ox * {sx} - {pl} + kx * {dx};\n                        \
         int32_t v;\n                        \
         if (ix < 0 || ix >= W) {{\n                            continue;\n                        }}\n                        \
         v = x0[(c * H + iy) * W + ix];\n                        \
         {}\n                    }}\n                }}\n                \
         {store}\n            }}\n        }}\n    }}",
        step.replace("\n        ", "\n            ")
    )
    .unwrap();
}

fn linear(
    c: &mut String,
    graph: &IntGraph,
    i: usize,
    p: &str,
    layer: &QLinear,
    choice: KernelChoice,
) -> Result<(), CError> {
    if linear_dsp::emit(c, graph, i, p, layer, choice) {
        return Ok(());
    }
    let node = &graph.nodes[i];
    let [o_n, i_g, kh, kw] = layer.weights.shape();
    let k_n = layer.weights.row_len();
    let out_elem = node.ty.elem;
    // Per output channel: the weight row `w` and the bias, then the pixels.
    if matches!(layer.weights, QWeights::Lut { .. }) {
        writeln!(c, "    int8_t w[{k_n}];").unwrap();
    }
    writeln!(c, "    long o;\n    for (o = 0; o < {o_n}; ++o) {{").unwrap();
    match &layer.weights {
        QWeights::Lut { luts, .. } => {
            let rb = k_n.div_ceil(2);
            let table = super::weights::table_offset(p, i, luts, "o", 16);
            writeln!(
                c,
                "        const uint8_t *codes = {p}_codes_{i} + o * {rb};\n        \
                 const int8_t *lut = {p}_lut_{i}{table};\n        \
                 long k;\n        \
                 for (k = 0; k < {}; ++k) {{\n            \
                 const uint8_t b = codes[k];\n            \
                 w[2 * k] = lut[b & 15];\n            \
                 w[2 * k + 1] = lut[b >> 4];\n        }}",
                k_n / 2
            )
            .unwrap();
            if k_n % 2 == 1 {
                writeln!(c, "        w[{}] = lut[codes[{}] & 15];", k_n - 1, k_n / 2).unwrap();
            }
        }
        QWeights::Int8 { .. } => {
            writeln!(c, "        const int8_t *w = {p}_w_{i} + o * {k_n};").unwrap();
        }
    }
    writeln!(c, "        const int32_t bias = {p}_bias_{i}[o];").unwrap();
    let value = linear_value(c, p, i, layer, 8);
    let x_elem = c_elem(graph.ty(node.inputs[0]).elem);
    match &layer.conv {
        None => {
            writeln!(
                c,
                "        int32_t acc = bias;\n        const int8_t *wp = w;\n        const {x_elem} *xp = x0;\n{}        {}",
                dot_loop(k_n, 1, 8),
                write(out_elem, "y", "o", &value.replace("ACC", "acc"))
            )
            .unwrap();
        }
        Some(g) => {
            let x = &graph.ty(node.inputs[0]).shape;
            let geom = ConvLoops {
                h: x[2],
                w: x[3],
                oh: node.ty.shape[2],
                ow: node.ty.shape[3],
                kh,
                kw,
                i_g,
                strides: g.strides,
                dilations: g.dilations,
                pads: [g.pads[0], g.pads[1]],
            };
            let group_base = if g.group == 1 {
                "x0".to_string()
            } else {
                format!("x0 + (o / {}) * {}", o_n / g.group, i_g * geom.h * geom.w)
            };
            writeln!(c, "        const {x_elem} *xg = {group_base};").unwrap();
            // ACC and OX are filled in per pixel (one or two per iteration).
            c.push_str(&geom.pixels(
                x_elem,
                &write(
                    out_elem,
                    "y",
                    &format!("(o * {} + oy) * {} + OX", geom.oh, geom.ow),
                    &value,
                ),
            ));
        }
    }
    c.push_str("    }\n");
    Ok(())
}

/// The value a linear layer stores for output channel `o`: `ACC` (a placeholder for the
/// accumulator's name) rescaled and clamped. Per-channel shifts and multipliers are read
/// into locals declared here, indented by `indent` spaces, inside the channel loop.
pub(super) fn linear_value(
    c: &mut String,
    p: &str,
    i: usize,
    layer: &QLinear,
    indent: usize,
) -> String {
    let pad = " ".repeat(indent);
    let rescaled = match rescale_form(&layer.rescale) {
        RescaleForm::Shift(s) => format!("lutq_rshift32(ACC, {s})"),
        RescaleForm::Multiplier { multiplier, shift } => {
            format!("lutq_rshift((int64_t)ACC * {multiplier}, {})", 31 + shift)
        }
        RescaleForm::ShiftTable => {
            writeln!(c, "{pad}const int s = {p}_shift_{i}[o];").unwrap();
            "lutq_rshift32(ACC, s)".into()
        }
        RescaleForm::MultiplierTable => {
            writeln!(
                c,
                "{pad}const int64_t m = {p}_mult_{i}[o];\n{pad}const int s = {p}_shift_{i}[o];"
            )
            .unwrap();
            "lutq_rshift(ACC * m, s)".into()
        }
    };
    // Power-of-two rescales stay in 32 bits (see lutq_rshift32); multipliers need 64.
    let clamp = if rescaled.starts_with("lutq_rshift32") {
        "lutq_clamp32"
    } else {
        "lutq_clamp"
    };
    format!("{clamp}({rescaled}, {}, {})", layer.lo, layer.hi)
}

/// `acc += Σ_k wp[k] · xp[k · stride]` over `n` terms, unrolled by `unroll` (the fan-in
/// of a dense layer, the input channels of a pointwise conv). Indented for a channel
/// loop body.
fn dot_loop(n: usize, stride: usize, unroll: usize) -> String {
    let mut c = String::from("        long j;\n");
    let main = n - n % unroll;
    if main > 0 {
        let terms: Vec<String> = (0..unroll)
            .map(|j| format!("wp[{j}] * xp[{}]", j * stride))
            .collect();
        writeln!(
            c,
            "        for (j = 0; j < {main}; j += {unroll}) {{\n            \
             acc += {};\n            wp += {unroll};\n            xp += {};\n        }}",
            terms.join(" + "),
            unroll * stride
        )
        .unwrap();
    }
    if n > main {
        writeln!(
            c,
            "        for (j = {main}; j < {n}; ++j) {{\n            \
             acc += *wp++ * *xp;\n            xp += {stride};\n        }}"
        )
        .unwrap();
    }
    c
}

/// The loops of one output channel of a convolution, every size a literal.
struct ConvLoops {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    i_g: usize,
    strides: [usize; 2],
    dilations: [usize; 2],
    /// top, left.
    pads: [usize; 2],
}

/// Kernels up to this many taps per input channel get their taps unrolled.
const MAX_UNROLLED_TAPS: usize = 25;

impl ConvLoops {
    /// Output positions along one axis whose whole window lies inside the input: `lo..hi`
    /// (empty when none does).
    fn interior(
        out: usize,
        len: usize,
        kernel: usize,
        stride: usize,
        dil: usize,
        pad: usize,
    ) -> (usize, usize) {
        let lo = pad.div_ceil(stride);
        let span = (kernel - 1) * dil;
        // o·s − pad + span ≤ len − 1  ⇔  o ≤ (len − 1 + pad − span) / s
        let hi = match (len + pad).checked_sub(1 + span) {
            Some(v) => (v / stride + 1).min(out),
            None => 0,
        };
        (lo.min(hi), hi)
    }

    /// Every output pixel of channel `o`: the window's accumulation into `acc` (starting
    /// at `bias`), then `store`. Interior pixels run a loop without bounds checks (taps
    /// unrolled for small kernels); border pixels loop over the taps inside the input
    /// only (ranges computed once per row and per pixel, no test per tap).
    fn pixels(&self, x_elem: &str, store: &str) -> String {
        let ConvLoops {
            h,
            w,
            oh,
            ow,
            kh,
            kw,
            i_g,
            strides: [sy, sx],
            dilations: [dy, dx],
            pads: [pt, pl],
        } = *self;
        let (y0, y1) = Self::interior(oh, h, kh, sy, dy, pt);
        let (x0, x1) = Self::interior(ow, w, kw, sx, dx, pl);
        let plane = h * w;
        let pointwise = kh == 1 && kw == 1;
        // Interior: the window starts at xp; taps at literal offsets. `lanes` > 1:
        // that many horizontally adjacent pixels at once (`acc0`, `acc1`, …), so that
        // every weight load feeds `lanes` multiply-accumulates.
        let sums = |taps: &[(usize, usize)], lanes: usize| -> String {
            let sum = |accum: &str, shift: usize| {
                let terms: Vec<String> = taps
                    .iter()
                    .map(|&(wi, xo)| format!("wp[{wi}] * xp[{}]", xo + shift))
                    .collect();
                let body = terms
                    .chunks(3)
                    .map(|t| t.join(" + "))
                    .collect::<Vec<_>>()
                    .join("\n    + ");
                format!("{accum} += {body};")
            };
            if lanes == 1 {
                sum("acc", 0)
            } else {
                (0..lanes)
                    .map(|l| sum(&format!("acc{l}"), l * sx))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        };
        let fast_for = |lanes: usize| -> Option<String> {
            let head =
                format!("const {x_elem} *xp = xg + iy0 * {w} + ix0;\nconst int8_t *wp = w;\n");
            if pointwise {
                let unroll = 4;
                let main = i_g - i_g % unroll;
                let taps: Vec<(usize, usize)> = (0..unroll).map(|j| (j, j * plane)).collect();
                let mut c = format!("{head}long j;\n");
                if main > 0 {
                    writeln!(
                        c,
                        "for (j = 0; j < {main}; j += {unroll}) {{\n{}\n    wp += {unroll};\n    xp += {};\n}}",
                        indent_by(&sums(&taps, lanes), 4),
                        unroll * plane
                    )
                    .unwrap();
                }
                if i_g > main {
                    writeln!(
                        c,
                        "for (j = {main}; j < {i_g}; ++j) {{\n{}\n    wp += 1;\n    xp += {plane};\n}}",
                        indent_by(&sums(&[(0, 0)], lanes), 4)
                    )
                    .unwrap();
                }
                Some(c)
            } else if kh * kw <= MAX_UNROLLED_TAPS {
                let taps: Vec<(usize, usize)> = (0..kh)
                    .flat_map(|ky| (0..kw).map(move |kx| (ky * kw + kx, ky * dy * w + kx * dx)))
                    .collect();
                Some(format!(
                    "{head}long ic;\nfor (ic = 0; ic < {i_g}; ++ic) {{\n{}\n    wp += {};\n    xp += {plane};\n}}",
                    indent_by(&sums(&taps, lanes), 4),
                    kh * kw
                ))
            } else if lanes > 1 {
                None
            } else {
                Some(format!(
                    "{head}long ic, ky, kx;\n\
                     for (ic = 0; ic < {i_g}; ++ic) {{\n    \
                     for (ky = 0; ky < {kh}; ++ky) {{\n        \
                     for (kx = 0; kx < {kw}; ++kx) {{\n            \
                     acc += *wp++ * xp[(ic * {h} + ky * {dy}) * {w} + kx * {dx}];\n        }}\n    }}\n}}"
                ))
            }
        };
        let fast = fast_for(1).expect("single pixels always have a fast path");
        // Pointwise: 4 pixels share each weight load (registers: 4 accumulators, two
        // pointers); larger kernels: 2 (their unrolled taps need registers too).
        let lanes = if pointwise { 4 } else { 2 };
        let fast_lanes = fast_for(lanes);
        // Border: only the taps inside the input, by range.
        let range = |var: &str, pos: &str, k: usize, d: usize, len: usize| {
            format!(
                "const long {var}0 = {pos} < 0 ? (-{pos} + {}) / {d} : 0;\n\
                 const long {var}1 = {pos} >= {len} ? 0 : ({len} - {pos} + {}) / {d} < {k} ? ({len} - {pos} + {}) / {d} : {k};",
                d - 1,
                d - 1,
                d - 1
            )
        };
        let checked = format!(
            "{}\nlong ic, ky, kx;\n\
             for (ic = 0; ic < {i_g}; ++ic) {{\n    \
             for (ky = ky0; ky < ky1; ++ky) {{\n        \
             const int8_t *wr = w + (ic * {kh} + ky) * {kw};\n        \
             const long row = (ic * {h} + iy0 + ky * {dy}) * {w} + ix0;\n        \
             for (kx = kx0; kx < kx1; ++kx) {{\n            \
             acc += wr[kx] * xg[row + kx * {dx}];\n        }}\n    }}\n}}",
            range("kx", "ix0", kw, dx, w)
        );
        let indent = super::linear_dsp::indent;
        let mut inside = Vec::new();
        if y0 > 0 {
            inside.push(format!("oy >= {y0}"));
        }
        if y1 < oh {
            inside.push(format!("oy < {y1}"));
        }
        if x0 > 0 {
            inside.push(format!("ox >= {x0}"));
        }
        if x1 < ow {
            inside.push(format!("ox < {x1}"));
        }
        let mut c = format!(
            "        long oy, ox;\n        for (oy = 0; oy < {oh}; ++oy) {{\n            \
             const long iy0 = oy * {sy} - {pt};\n"
        );
        let needs_border = !inside.is_empty();
        if needs_border {
            c.push_str(&indent(&range("ky", "iy0", kh, dy, h), 12));
        }
        let store_at = |accum: &str, ox: &str| store.replace("ACC", accum).replace("OX", ox);
        writeln!(
            c,
            "            for (ox = 0; ox < {ow}; ++ox) {{\n                \
             const long ix0 = ox * {sx} - {pl};"
        )
        .unwrap();
        // `lanes` interior pixels at once where all their windows lie inside the input.
        if let Some(block) = &fast_lanes
            && y0 < y1
            && x0 + lanes <= x1
        {
            let mut cond = inside.clone();
            cond.retain(|t| !t.starts_with("ox <"));
            cond.push(format!("ox + {} < {x1}", lanes - 1));
            writeln!(c, "                if ({}) {{", cond.join(" && ")).unwrap();
            for l in 0..lanes {
                writeln!(c, "                    int32_t acc{l} = bias;").unwrap();
            }
            c.push_str(&indent(&format!("{{\n{}}}", indent(block, 4)), 20));
            for l in 0..lanes {
                let ox = if l == 0 {
                    "ox".to_string()
                } else {
                    format!("(ox + {l})")
                };
                writeln!(
                    c,
                    "                    {}",
                    store_at(&format!("acc{l}"), &ox)
                )
                .unwrap();
            }
            writeln!(
                c,
                "                    ox += {};\n                    continue;\n                }}",
                lanes - 1
            )
            .unwrap();
        }
        c.push_str("                int32_t acc = bias;\n");
        if !needs_border {
            c.push_str(&indent(&format!("{{\n{}}}", indent(&fast, 4)), 16));
        } else if y0 >= y1 || x0 >= x1 {
            // No output pixel has its whole window inside the input.
            c.push_str(&indent(&format!("{{\n{}}}", indent(&checked, 4)), 16));
        } else {
            writeln!(c, "                if ({}) {{", inside.join(" && ")).unwrap();
            c.push_str(&indent(&fast, 20));
            c.push_str("                } else {\n");
            c.push_str(&indent(&checked, 20));
            c.push_str("                }\n");
        }
        writeln!(
            c,
            "                {}\n            }}\n        }}",
            store_at("acc", "ox")
        )
        .unwrap();
        c
    }
}

/// `s` with every line indented by `n` spaces, without a final newline.
fn indent_by(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
