//! Convolutions as dual 16-bit multiply-accumulates (issue #15, first step).
//!
//! A convolution with one group (3×3, 1×1 pointwise, any stride, dilation and padding)
//! whose weights are 4-bit codes with one table for the layer, or plain int8, runs as
//! blocks of [`LANES`] output pixels:
//!
//! 1. **im2col**: each pixel's window (`K = C·KH·KW` inputs, zeros where it hangs over
//!    the border) is copied into an int16 column of the scratch. Only this copy knows
//!    about padding, so the multiply-accumulate loop has no border case at all; the copy
//!    costs `K` loads and stores per pixel, shared by every output channel.
//! 2. **dot products**: every output channel runs over the `LANES` columns at once, two
//!    taps per step: one weight pair (two int16 halves of a 32-bit word) against one
//!    column pair each, `lutq_dot2` = one `SMLAD` on a core with the DSP extension.
//!    * 4-bit weights: each code byte holds taps `2j` (low nibble) and `2j + 1`, so a
//!      256-entry table built per layer in the scratch turns a byte into the pair
//!      `(LUT[b & 15], LUT[b >> 4])` with one load: the decode is one load per two
//!      weights, shared by the `LANES` pixels.
//!    * int8 weights: four weights are one word; `SXTB16` splits it into the pairs
//!      `(w0, w2)` and `(w1, w3)`, so the columns of an int8 layer store their taps in
//!      the order 0, 2, 1, 3 within every group of four ([`int8_slot`]).
//!
//! Both paths compute the same i32 sums as the contract's loop: every product is exact
//! and the sum of integers does not depend on the order, and no partial sum can
//! overflow because `IntGraph::validate` bounds `|bias| + Σ|w|·max|x|` (SMLAD wraps
//! modulo 2^32 anyway, so even its intermediate results could not make a difference).
//!
//! Without `__ARM_FEATURE_DSP` (the host, a Cortex-M0/M3) the same loops run with the
//! portable `lutq_dot2`, two C multiplications; `LUTQ_NO_DSP` forces that path.
//!
//! The scratch (256 words for the table, `LANES` columns of int16) lives in the arena
//! after the activations ([`scratch_bytes`]).

use std::fmt::Write as _;

use lutq_ir::int::{IntGraph, IntNode, IntOp, QLinear, QWeights};

use super::c_elem;
use super::kernels::{linear_value, write};

/// Output pixels per block: every weight pair loaded feeds this many `SMLAD`s.
pub(crate) const LANES: usize = 4;

/// The 4-bit decode table: 256 32-bit weight pairs.
const PAIR_TABLE_BYTES: usize = 256 * 4;

/// Kernels up to this many taps per input channel get their im2col copy unrolled.
const MAX_UNROLLED_TAPS: usize = 25;

/// What the kernel of a layer needs, when it takes this path.
struct Plan {
    lut: bool,
    /// Taps per output (`K`), and the column length in int16 (K rounded up: to even for
    /// 4-bit codes, to a multiple of four for int8 weights).
    k: usize,
    kp: usize,
}

fn plan(node: &IntNode) -> Option<Plan> {
    let IntOp::Linear(layer) = &node.op else {
        return None;
    };
    let g = layer.conv.as_ref()?;
    if g.group != 1 {
        return None;
    }
    let pixels = node.ty.shape[2] * node.ty.shape[3];
    if pixels < LANES {
        return None;
    }
    let lut = match &layer.weights {
        QWeights::Lut { luts, .. } => {
            // One table per channel would need a pair table per channel.
            if luts.len() != 1 {
                return None;
            }
            true
        }
        QWeights::Int8 { .. } => false,
    };
    let k = layer.weights.row_len();
    let kp = if lut {
        k.next_multiple_of(2)
    } else {
        k.next_multiple_of(4)
    };
    Some(Plan { lut, k, kp })
}

/// Scratch bytes the kernel of `node` needs in the arena (0: it uses none), with 3 bytes
/// of slack to align the 32-bit table and the columns.
pub(crate) fn scratch_bytes(node: &IntNode) -> usize {
    match plan(node) {
        Some(pl) => 3 + if pl.lut { PAIR_TABLE_BYTES } else { 0 } + LANES * pl.kp * 2,
        None => 0,
    }
}

/// Where tap `k` of an int8 layer's column lives: taps 0, 2, 1, 3 of each group of four,
/// the order `SXTB16` yields the weights in (bits 0 and 1 of `k` swapped).
fn int8_slot(k: usize) -> usize {
    (k & !3) | ((k & 1) << 1) | ((k >> 1) & 1)
}

/// Emits the body of node `i`'s kernel (signature already written, `scratch` among its
/// parameters) when the layer takes this path; `false` leaves `c` untouched.
pub(crate) fn emit(c: &mut String, graph: &IntGraph, i: usize, p: &str, layer: &QLinear) -> bool {
    let node = &graph.nodes[i];
    let Some(Plan { lut, k, kp }) = plan(node) else {
        return false;
    };
    let g = layer.conv.as_ref().expect("plan checked");
    let [o_n, i_g, kh, kw] = layer.weights.shape();
    let x = &graph.ty(node.inputs[0]).shape;
    let (h, w) = (x[2], x[3]);
    let (oh, ow) = (node.ty.shape[2], node.ty.shape[3]);
    let pixels = oh * ow;
    let [sy, sx] = g.strides;
    let [dy, dx] = g.dilations;
    let (pt, pl) = (g.pads[0], g.pads[1]);
    let x_elem = c_elem(graph.ty(node.inputs[0]).elem);
    let slot = |k: usize| if lut { k } else { int8_slot(k) };

    c.push_str(
        "    /* The scratch, 4-byte aligned (the arena has any alignment). */\n    \
         uint8_t *const base = scratch + ((4u - (unsigned)((uintptr_t)scratch & 3u)) & 3u);\n",
    );
    if lut {
        writeln!(
            c,
            "    uint32_t *const pairs = (uint32_t *)(void *)base;\n    \
             int16_t *const cols = (int16_t *)(void *)(base + {PAIR_TABLE_BYTES});"
        )
        .unwrap();
    } else {
        c.push_str("    int16_t *const cols = (int16_t *)(void *)base;\n");
    }
    c.push_str("    long p, l, o;\n");
    if lut {
        writeln!(
            c,
            "    {{\n        /* Code byte -> (LUT[low nibble], LUT[high nibble]). */\n        \
             const int8_t *lut = {p}_lut_{i};\n        \
             int b;\n        \
             for (b = 0; b < 256; ++b) {{\n            \
             pairs[b] = lutq_pair(lut[b & 15], lut[b >> 4]);\n        }}\n    }}"
        )
        .unwrap();
    }
    // Column slots no tap fills (K rounded up) stay zero: their weights meet 0.
    let unused: Vec<usize> = (k..kp).map(slot).collect();
    if !unused.is_empty() {
        writeln!(c, "    for (l = 0; l < {LANES}; ++l) {{").unwrap();
        for s in &unused {
            writeln!(c, "        cols[l * {kp} + {s}] = 0;").unwrap();
        }
        c.push_str("    }\n");
    }
    writeln!(
        c,
        "    for (p = 0; p < {pixels}; p += {LANES}) {{\n        \
         const long n = {pixels} - p < {LANES} ? {pixels} - p : {LANES};\n        \
         for (l = 0; l < {LANES}; ++l) {{\n            \
         int16_t *const q = cols + l * {kp};\n            \
         const long iy0 = (p + l) / {ow} * {sy} - {pt};\n            \
         const long ix0 = (p + l) % {ow} * {sx} - {pl};\n            \
         if (l >= n) {{\n                \
         /* Past the last pixel: zeros, computed and dropped. */\n                \
         long k;\n                \
         for (k = 0; k < {kp}; ++k) {{\n                    q[k] = 0;\n                }}\n                \
         continue;\n            }}"
    )
    .unwrap();
    let span_y = (kh - 1) * dy;
    let span_x = (kw - 1) * dx;
    let mut inside = Vec::new();
    if pt > 0 {
        inside.push("iy0 >= 0".to_string());
    }
    if pl > 0 {
        inside.push("ix0 >= 0".to_string());
    }
    // The largest window start any pixel has; tests only where it can overrun.
    if (oh - 1) * sy + span_y >= h + pt {
        inside.push(format!("iy0 + {span_y} < {h}"));
    }
    if (ow - 1) * sx + span_x >= w + pl {
        inside.push(format!("ix0 + {span_x} < {w}"));
    }
    let interior = interior_copy(x_elem, h, w, i_g, kh, kw, dy, dx, &slot);
    let border = border_copy(h, w, i_g, kh, kw, dy, dx, lut);
    if inside.is_empty() {
        c.push_str(&indent(&interior, 12));
    } else {
        writeln!(c, "            if ({}) {{", inside.join(" && ")).unwrap();
        c.push_str(&indent(&interior, 16));
        c.push_str("            } else {\n");
        c.push_str(&indent(&border, 16));
        c.push_str("            }\n");
    }
    c.push_str("        }\n");

    // The dot products, one output channel at a time over the LANES columns.
    writeln!(c, "        for (o = 0; o < {o_n}; ++o) {{").unwrap();
    writeln!(c, "            const int32_t bias = {p}_bias_{i}[o];").unwrap();
    let value = linear_value(c, p, i, layer, 12);
    let accs: Vec<String> = (0..LANES).map(|l| format!("acc{l} = bias")).collect();
    writeln!(c, "            int32_t {};", accs.join(", ")).unwrap();
    c.push_str("            const int16_t *q = cols;\n");
    let lanes_at = |c: &mut String, w: &str, off: usize, pad: &str| {
        for l in 0..LANES {
            writeln!(
                c,
                "{pad}acc{l} = lutq_dot2({w}, q + {}, acc{l});",
                l * kp + off
            )
            .unwrap();
        }
    };
    if lut {
        let rb = k.div_ceil(2);
        writeln!(
            c,
            "            const uint8_t *cp = {p}_codes_{i} + o * {rb};"
        )
        .unwrap();
        let unroll = 2;
        let main = rb - rb % unroll;
        if main > 0 {
            writeln!(
                c,
                "            long j;\n            for (j = 0; j < {main}; j += {unroll}) {{"
            )
            .unwrap();
            for u in 0..unroll {
                writeln!(c, "                const uint32_t w{u} = pairs[cp[{u}]];").unwrap();
            }
            for u in 0..unroll {
                lanes_at(c, &format!("w{u}"), 2 * u, "                ");
            }
            writeln!(
                c,
                "                cp += {unroll};\n                q += {};\n            }}",
                2 * unroll
            )
            .unwrap();
        }
        if rb > main {
            c.push_str("            {\n                const uint32_t w0 = pairs[cp[0]];\n");
            lanes_at(c, "w0", 0, "                ");
            c.push_str("            }\n");
        }
    } else {
        let groups = k / 4;
        writeln!(c, "            const int8_t *wp = {p}_w_{i} + o * {k};").unwrap();
        if groups > 0 {
            writeln!(
                c,
                "            long j;\n            for (j = 0; j < {groups}; ++j) {{\n                \
                 uint32_t w02, w13;\n                \
                 lutq_split4(wp, &w02, &w13);"
            )
            .unwrap();
            lanes_at(c, "w02", 0, "                ");
            lanes_at(c, "w13", 2, "                ");
            c.push_str("                wp += 4;\n                q += 4;\n            }\n");
        }
        let r = k % 4;
        if r > 0 {
            // The last 1–3 weights of the row, one by one (a word load would read past
            // the row, and past the array on the last channel).
            let at = |t: usize| {
                if t < r {
                    format!("wp[{t}]")
                } else {
                    "0".into()
                }
            };
            writeln!(
                c,
                "            {{\n                \
                 const uint32_t w02 = lutq_pair({}, {});\n                \
                 const uint32_t w13 = lutq_pair({}, {});",
                at(0),
                at(2),
                at(1),
                at(3)
            )
            .unwrap();
            lanes_at(c, "w02", 0, "                ");
            lanes_at(c, "w13", 2, "                ");
            c.push_str("            }\n");
        }
    }
    let out_elem = node.ty.elem;
    for l in 0..LANES {
        let store = write(
            out_elem,
            "y",
            &format!("o * {pixels} + p + {l}"),
            &value.replace("ACC", &format!("acc{l}")),
        );
        if l == 0 {
            writeln!(c, "            {store}").unwrap();
        } else {
            writeln!(
                c,
                "            if (n > {l}) {{\n                {store}\n            }}"
            )
            .unwrap();
        }
    }
    c.push_str("        }\n    }\n");
    true
}

/// The im2col copy of one pixel whose window lies inside the input: `q` (the column)
/// and `iy0`, `ix0` (the window's corner) are in scope. Taps at literal offsets, input
/// channels in steps that bring the slot pattern back to the start (int8 columns
/// permute within groups of four).
#[allow(clippy::too_many_arguments)]
fn interior_copy(
    x_elem: &str,
    h: usize,
    w: usize,
    i_g: usize,
    kh: usize,
    kw: usize,
    dy: usize,
    dx: usize,
    slot: &dyn Fn(usize) -> usize,
) -> String {
    let taps = kh * kw;
    let plane = h * w;
    let mut c = format!("const {x_elem} *xp = x0 + iy0 * {w} + ix0;\n");
    if taps > MAX_UNROLLED_TAPS {
        // Large kernels: loops, slot by slot.
        writeln!(
            c,
            "long ic, ky, kx, k = 0;\n\
             for (ic = 0; ic < {i_g}; ++ic) {{\n    \
             for (ky = 0; ky < {kh}; ++ky) {{\n        \
             for (kx = 0; kx < {kw}; ++kx) {{\n            \
             q[{}] = xp[(ic * {h} + ky * {dy}) * {w} + kx * {dx}];\n            \
             ++k;\n        }}\n    }}\n}}",
            slot_expr(slot)
        )
        .unwrap();
        return c;
    }
    // Channels per step: enough that the step's taps are a multiple of 4, at least 4.
    let step = (4 / gcd(taps, 4)).max(if taps == 1 { 4 } else { 1 });
    let offsets = |chans: usize| -> Vec<String> {
        let mut lines = Vec::new();
        for ic in 0..chans {
            for ky in 0..kh {
                for kx in 0..kw {
                    let k = (ic * kh + ky) * kw + kx;
                    lines.push(format!(
                        "qq[{}] = xp[{}];",
                        slot(k),
                        ic * plane + ky * dy * w + kx * dx
                    ));
                }
            }
        }
        lines
    };
    let main = i_g - i_g % step;
    c.push_str("int16_t *qq = q;\n");
    if main > 0 {
        writeln!(
            c,
            "long ic;\nfor (ic = 0; ic < {main}; ic += {step}) {{\n{}\n    qq += {};\n    xp += {};\n}}",
            indent_by(&offsets(step).join("\n"), 4),
            step * taps,
            step * plane
        )
        .unwrap();
    }
    if i_g > main {
        writeln!(c, "{}", offsets(i_g - main).join("\n")).unwrap();
    }
    c
}

/// The im2col copy of a pixel whose window overlaps the border: every tap tested,
/// zeros outside.
#[allow(clippy::too_many_arguments)]
fn border_copy(
    h: usize,
    w: usize,
    i_g: usize,
    kh: usize,
    kw: usize,
    dy: usize,
    dx: usize,
    lut: bool,
) -> String {
    let slot = if lut {
        "k".to_string()
    } else {
        slot_expr(&int8_slot)
    };
    format!(
        "long ic, ky, kx, k = 0;\n\
         for (ic = 0; ic < {i_g}; ++ic) {{\n    \
         for (ky = 0; ky < {kh}; ++ky) {{\n        \
         const long iy = iy0 + ky * {dy};\n        \
         for (kx = 0; kx < {kw}; ++kx) {{\n            \
         const long ix = ix0 + kx * {dx};\n            \
         q[{slot}] = (int16_t)(iy >= 0 && iy < {h} && ix >= 0 && ix < {w} ? x0[(ic * {h} + iy) * {w} + ix] : 0);\n            \
         ++k;\n        }}\n    }}\n}}"
    )
}

/// The C expression of `slot(k)` for a run-time `k` (identity, or int8's permutation).
fn slot_expr(slot: &dyn Fn(usize) -> usize) -> String {
    if slot(1) == 1 {
        "k".into()
    } else {
        "(k & ~3L) | ((k & 1) << 1) | ((k >> 1) & 1)".into()
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("{pad}{l}\n")
            }
        })
        .collect()
}

fn indent_by(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
