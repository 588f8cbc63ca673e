//! Depthwise convolutions (one input channel per output channel) with dual 16-bit
//! multiply-accumulates (issue #15, first step).
//!
//! Per channel, the input plane is copied into the scratch as int16 with its zero
//! padding around it (the border is zeroed once per layer, only the interior is
//! rewritten per channel), so every output pixel runs the same unrolled taps at literal
//! offsets with no border case. The channel's weights are decoded once into registers:
//! horizontally adjacent taps as pairs (`lutq_pair`), which meet two adjacent int16 of
//! the padded plane in one 32-bit load (`lutq_dot2m`: one unaligned `LDR` and one
//! `SMLAD` on a core with the DSP extension), the odd tap of a row as a plain
//! multiply-accumulate.
//!
//! The sums are the contract's (exact products, integer sums in any order, bounded by
//! `IntGraph::validate`); the padded zeros add nothing, exactly as zero padding does.

use std::fmt::Write as _;

use lutq_ir::int::{IntGraph, IntOp, QLinear, QWeights};

use super::c_elem;
use super::kernels::write;
use super::linear_dsp::store_value;

/// Kernels up to this many taps run unrolled (larger ones keep the old kernel).
const MAX_TAPS: usize = 25;

/// The padded plane of node `i`, if it is a depthwise convolution this path takes:
/// `(rows, columns)` of int16.
fn padded(graph: &IntGraph, i: usize) -> Option<(usize, usize)> {
    let node = &graph.nodes[i];
    let IntOp::Linear(layer) = &node.op else {
        return None;
    };
    let g = layer.conv.as_ref()?;
    let [o_n, i_g, kh, kw] = layer.weights.shape();
    if i_g != 1 || g.group != o_n || kh * kw > MAX_TAPS {
        return None;
    }
    let x = &graph.ty(node.inputs[0]).shape;
    let (oh, ow) = (node.ty.shape[2], node.ty.shape[3]);
    let rows = (x[2] + g.pads[0]).max((oh - 1) * g.strides[0] + (kh - 1) * g.dilations[0] + 1);
    let cols = (x[3] + g.pads[1]).max((ow - 1) * g.strides[1] + (kw - 1) * g.dilations[1] + 1);
    Some((rows, cols))
}

/// Scratch bytes node `i` needs (0: it does not take this path): the padded plane,
/// plus 1 byte to align it to 2.
pub(crate) fn scratch_bytes(graph: &IntGraph, i: usize) -> usize {
    padded(graph, i).map_or(0, |(r, c)| 1 + 2 * r * c)
}

/// The copy of one input row (`src`, `w` values) into the padded plane (`dst`): four
/// values per `lutq_widen4u` / `lutq_widen4s` (one load, two byte extensions, two packs,
/// two stores on a core with the DSP extension), the last `w % 4` one by one.
fn widen_row(w: usize, x_elem: &str) -> String {
    let widen = if x_elem == "uint8_t" {
        "lutq_widen4u"
    } else {
        "lutq_widen4s"
    };
    let main = w - w % 4;
    let mut c = String::new();
    if main > 0 {
        write!(
            c,
            "for (k = 0; k < {main}; k += 4) {{\n                {widen}(src + k, dst + k);\n            }}"
        )
        .unwrap();
    }
    for k in main..w {
        if !c.is_empty() {
            c.push_str("\n            ");
        }
        write!(c, "dst[{k}] = src[{k}];").unwrap();
    }
    c
}

/// Emits the kernel body of depthwise node `i` when it takes this path.
pub(crate) fn emit(c: &mut String, graph: &IntGraph, i: usize, p: &str, layer: &QLinear) -> bool {
    let Some((hp, wp)) = padded(graph, i) else {
        return false;
    };
    let node = &graph.nodes[i];
    let g = layer.conv.as_ref().expect("padded checked");
    let [o_n, _, kh, kw] = layer.weights.shape();
    let x = &graph.ty(node.inputs[0]).shape;
    let (h, w) = (x[2], x[3]);
    let (oh, ow) = (node.ty.shape[2], node.ty.shape[3]);
    let [sy, sx] = g.strides;
    let [dy, dx] = g.dilations;
    let (pt, pl) = (g.pads[0], g.pads[1]);
    let x_elem = c_elem(graph.ty(node.inputs[0]).elem);
    let taps = kh * kw;
    writeln!(
        c,
        "    /* The padded plane, 2-byte aligned (the arena has any alignment). */\n    \
         int16_t *const pad = (int16_t *)(void *)(scratch + ((uintptr_t)scratch & 1u));\n    \
         long o, oy, ox, r, k;\n    \
         for (k = 0; k < {}; ++k) {{\n        pad[k] = 0;\n    }}\n    \
         for (o = 0; o < {o_n}; ++o) {{\n        \
         const {x_elem} *xc = x0 + o * {};\n        \
         for (r = 0; r < {h}; ++r) {{\n            \
         int16_t *const dst = pad + (r + {pt}) * {wp} + {pl};\n            \
         const {x_elem} *const src = xc + r * {w};\n            {}\n        }}",
        hp * wp,
        h * w,
        widen_row(w, x_elem),
    )
    .unwrap();
    // The taps t0 … of this channel as int32 locals.
    match &layer.weights {
        QWeights::Lut { luts, .. } => {
            let rb = taps.div_ceil(2);
            let table = super::weights::table_offset(p, i, luts, "o", 16);
            writeln!(
                c,
                "        const uint8_t *cd = {p}_codes_{i} + o * {rb};\n        \
                 const int8_t *lut = {p}_lut_{i}{table};"
            )
            .unwrap();
            for t in 0..taps {
                let nibble = if t % 2 == 0 { "& 15" } else { ">> 4" };
                writeln!(
                    c,
                    "        const int32_t t{t} = lut[cd[{}] {nibble}];",
                    t / 2
                )
                .unwrap();
            }
        }
        QWeights::Int8 { .. } => {
            writeln!(c, "        const int8_t *wr = {p}_w_{i} + o * {taps};").unwrap();
            for t in 0..taps {
                writeln!(c, "        const int32_t t{t} = wr[{t}];").unwrap();
            }
        }
    }
    // Rows of three adjacent taps with two adjacent pixels per step (stride 1): per row
    // two words, x[0..1] and x[2..3], serve both pixels with two SMLADs, the pairs
    // (t0, t1) and (t1, t2), and two single multiply-accumulates on the halves already
    // loaded: x[2]·t2 (SMLATB) and x[1]·t0 (SMLABT): 6 instructions for 6 MACs
    // instead of 8 (VWW's stride-1 depthwise layers: 2.6 → 2.2 instructions per MAC).
    let rows3 = kw == 3 && dx == 1 && sx == 1;
    // Horizontal pairs where the taps are adjacent in the plane (no dilation).
    let paired = dx == 1;
    let mut body = Vec::new();
    for ky in 0..kh {
        let mut kx = 0;
        while kx < kw {
            let t = ky * kw + kx;
            let at = ky * dy * wp + kx * dx;
            if paired && kx + 1 < kw {
                writeln!(
                    c,
                    "        const uint32_t w{t} = lutq_pair(t{t}, t{});",
                    t + 1
                )
                .unwrap();
                body.push((format!("w{t}"), at, true));
                kx += 2;
            } else {
                body.push((format!("t{t}"), at, false));
                kx += 1;
            }
        }
    }
    if rows3 {
        for ky in 0..kh {
            let t = ky * kw;
            writeln!(
                c,
                "        const uint32_t v{t} = lutq_pair(t{}, t{});",
                t + 1,
                t + 2
            )
            .unwrap();
        }
    }
    writeln!(c, "        const int32_t bias = {p}_bias_{i}[o];").unwrap();
    let value = store_value(c, p, i, layer, 8, graph.rounding);
    // The taps of the pixel at xp + `shift` into `acc`.
    let taps_into = |acc: &str, shift: usize| -> String {
        body.iter()
            .map(|(wv, at, pair)| {
                let at = at + shift;
                if *pair {
                    format!("{acc} = lutq_dot2m({wv}, xp + {at}, {acc});")
                } else {
                    format!("{acc} += {wv} * xp[{at}];")
                }
            })
            .collect::<Vec<_>>()
            .join("\n                ")
    };
    let store = |acc: &str, ox: &str| {
        write(
            node.ty.elem,
            "y",
            &format!("(o * {oh} + oy) * {ow} + {ox}"),
            &value.replace("ACC", acc),
        )
    };
    let pair_step = if rows3 {
        (0..kh)
            .map(|ky| {
                let (t, at) = (ky * kw, ky * dy * wp);
                format!(
                    "{{\n                    \
                     const uint32_t xa = lutq_load2(xp + {at});\n                    \
                     const uint32_t xb = lutq_load2(xp + {});\n                    \
                     acc0 = lutq_dot2(w{t}, xa, acc0);\n                    \
                     acc0 = lutq_smlatb(v{t}, xb, acc0);\n                    \
                     acc1 = lutq_dot2(v{t}, xb, acc1);\n                    \
                     acc1 = lutq_smlabt(w{t}, xa, acc1);\n                }}",
                    at + 2
                )
            })
            .collect::<Vec<_>>()
            .join("\n                ")
    } else {
        format!(
            "{}\n                {}",
            taps_into("acc0", 0),
            taps_into("acc1", sx)
        )
    };
    // Two horizontally adjacent pixels per step: the channel's weights (more than the
    // registers hold beside the pointers) are reloaded once per two pixels.
    writeln!(
        c,
        "        for (oy = 0; oy < {oh}; ++oy) {{\n            \
         const int16_t *const row = pad + oy * {};\n            \
         for (ox = 0; ox + 1 < {ow}; ox += 2) {{\n                \
         const int16_t *const xp = row + ox * {sx};\n                \
         int32_t acc0 = bias, acc1 = bias;\n                {}\n                \
         {}\n                {}\n            }}",
        sy * wp,
        pair_step,
        store("acc0", "ox"),
        store("acc1", "ox + 1"),
    )
    .unwrap();
    if ow % 2 == 1 {
        writeln!(
            c,
            "            {{\n                \
             const int16_t *const xp = row + {};\n                \
             int32_t acc = bias;\n                {}\n                {}\n            }}",
            (ow - 1) * sx,
            taps_into("acc", 0),
            store("acc", &(ow - 1).to_string()),
        )
        .unwrap();
    }
    c.push_str("        }\n    }\n");
    true
}
