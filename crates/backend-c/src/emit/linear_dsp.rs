//! Convolutions as dual 16-bit multiply-accumulates (issue #15, first step).
//!
//! A convolution with one group (3×3, 1×1 pointwise, any stride, dilation and padding)
//! whose weights are 4-bit codes (decoded through pair tables, or in the loop where
//! they do not fit the scratch or do not pay, see [`lane_options`]), or plain int8, runs as
//! blocks of [`LANES`] output pixels:
//!
//! 1. **im2col**: each pixel's window (`K = C·KH·KW` inputs, zeros where it hangs over
//!    the border) is copied into the scratch as pairs of int16 in 32-bit words
//!    (`lutq_pair`). Only this copy knows about padding, so the multiply-accumulate loop
//!    has no border case at all; it costs about one load per tap and one store per
//!    pair, shared by every output channel. Pair `j` of lane `l` is word
//!    `j · LANES + l`: the words one weight pair meets are adjacent.
//! 2. **dot products**: every output channel runs over the `LANES` columns at once, one
//!    weight pair (two int16 halves of a word) against one column word per lane:
//!    `lutq_dot2` = one `SMLAD` on a core with the DSP extension.
//!    * 4-bit weights: each code byte holds taps `2j` (low nibble) and `2j + 1`, so a
//!      256-entry table built per layer in the scratch turns a byte into the pair
//!      `(LUT[b & 15], LUT[b >> 4])` with one load: the decode is one byte load and one
//!      word load per two weights, shared by the `LANES` pixels. A layer with several
//!      tables (table groups) gets one pair table per table, and each output channel
//!      reads its own.
//!    * int8 weights: four weights are one word; `SXTB16` splits it into the pairs
//!      `(w0, w2)` and `(w1, w3)`, so the columns of an int8 layer pair their taps the
//!      same way ([`pair_taps`]).
//!
//! Both paths compute the contract's i32 sums: every product is exact, an integer sum
//! does not depend on the order, and no partial sum can overflow because
//! `IntGraph::validate` bounds `|bias| + Σ|w|·max|x|` (SMLAD wraps modulo 2^32 anyway,
//! so not even its intermediate results could make a difference).
//!
//! Without `__ARM_FEATURE_DSP` (the host, a Cortex-M0/M3) the same loops run with the
//! portable `lutq_dot2`, two C multiplications; `-DLUTQ_NO_DSP` forces that path.
//!
//! The scratch (the 1 KiB tables, `LANES` columns, [`scratch_bytes`]) lives in the
//! arena, in bytes no activation live at that step uses (`scratch::place_scratch`).

use std::fmt::Write as _;

use lutq_ir::int::{IntGraph, IntNode, IntOp, QLinear, QWeights, TableLayout};

use super::c_elem;
use super::kernels::{linear_value, write};
use super::weights::{RescaleForm, rescale_form};
use lutq_ir::int::{Rescale, Rounding};

/// Output pixels per block: every weight pair loaded feeds this many `SMLAD`s (8
/// accumulators, the table base or second weight pair, two pointers, a pair and a
/// column word fill the Cortex-M4's registers; 4 pixels measured worse: IC ResNet-8
/// 1.81 vs 1.71 instructions per MAC with 4-bit weights).
pub(crate) const LANES: usize = 8;

/// The 4-bit decode table: 256 32-bit weight pairs.
const PAIR_TABLE_BYTES: usize = 256 * 4;

/// Most distinct LUTs whose pair tables a layer always tries to build in the scratch (1
/// KiB of arena each, while the layer runs). Table groups (`--lut-tables N`) store at
/// most `N + 1` tables (the groups' and the shared one), so the default 8 groups fit. A
/// layer with more (`--lut-tables 32`, a table per channel) builds pair tables only
/// where they pay ([`pair_tables_pay`]) and fit the scratch limit, else decodes its
/// pairs in the loop ([`KernelChoice::decode_in_loop`]), which needs no scratch for
/// tables.
const MAX_PAIR_TABLES: usize = 9;

/// Most pair tables any layer builds (64 KiB of scratch).
const MOST_PAIR_TABLES: usize = 64;

/// Whether building `tables` pair tables (256 entries each, about 5 instructions per
/// entry on the Cortex-M4) costs less than decoding every pair in the loop, which adds
/// about 0.28 instructions per MAC (Fashion MobileNetV2 with a table per channel: 1.93
/// against 1.65 instructions per MAC with pair tables): more than 4,600 MACs per table.
fn pair_tables_pay(tables: usize, macs: usize) -> bool {
    tables <= MOST_PAIR_TABLES && macs > 4_600 * tables
}

/// How node `i`'s kernel runs (one of [`lane_options`], chosen to fit the scratch limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KernelChoice {
    /// Pixels per block of the dual-MAC kernel; 0: the plain kernels.
    pub lanes: usize,
    /// Decode every weight pair in the loop, from the channel's own 16-entry table (one
    /// code byte, two table loads and a pack), instead of from a pair table in the
    /// scratch: the variant of a layer with several tables when their pair tables fit
    /// no gap within the scratch limit (the plain kernel would take 2–3× its
    /// instructions).
    pub decode_in_loop: bool,
}

impl KernelChoice {
    /// The plain kernels (no scratch).
    pub const PLAIN: KernelChoice = KernelChoice::pairs(0);

    /// `lanes` pixels per block, 4-bit codes through pair tables (int8 weights: none).
    const fn pairs(lanes: usize) -> KernelChoice {
        KernelChoice {
            lanes,
            decode_in_loop: false,
        }
    }

    /// `lanes` pixels per block, 4-bit codes decoded in the loop.
    const fn in_loop(lanes: usize) -> KernelChoice {
        KernelChoice {
            lanes,
            decode_in_loop: true,
        }
    }
}

/// Kernels up to this many taps per input channel get their im2col copy unrolled.
const MAX_UNROLLED_TAPS: usize = 25;

/// What the kernel of a layer needs, when it takes this path.
struct Plan {
    lut: bool,
    /// Distinct 4-bit tables (0 for int8 weights): each a pair table in the scratch
    /// where the kernel builds them ([`lane_options`]).
    tables: usize,
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
    // Fewer than 4 pixels: too few to share a weight pair; the plain kernel.
    if pixels < 4 {
        return None;
    }
    let (lut, tables) = match &layer.weights {
        QWeights::Lut { luts, .. } => (true, TableLayout::of(luts).tables.len()),
        QWeights::Int8 { .. } => (false, 0),
    };
    let k = layer.weights.row_len();
    let kp = if lut {
        k.next_multiple_of(2)
    } else {
        k.next_multiple_of(4)
    };
    Some(Plan { lut, tables, k, kp })
}

/// The lane counts the kernel of node `i` can run with, most preferred first (the
/// scratch grows with the lanes, [`scratch_bytes`]); with several tables, then the same
/// decoding in the loop (no pair tables in the scratch); with more than
/// [`MAX_PAIR_TABLES`], pair tables only where [`pair_tables_pay`], each lane count
/// before the loop's decoding at fewer lanes; for a depthwise layer of this path `[1]`
/// (its scratch does not depend on lanes); empty where the plain kernels run.
pub(crate) fn lane_options(graph: &IntGraph, i: usize) -> &'static [KernelChoice] {
    use KernelChoice as K;
    const SEVERAL_TABLES: [KernelChoice; 6] = [
        K::pairs(LANES),
        K::pairs(4),
        K::pairs(2),
        K::in_loop(LANES),
        K::in_loop(4),
        K::in_loop(2),
    ];
    const MANY_TABLES: [KernelChoice; 3] = [K::in_loop(LANES), K::in_loop(4), K::in_loop(2)];
    // Pair tables where they fit, but never at fewer lanes than the loop's decoding.
    const MANY_TABLES_PAIRS: [KernelChoice; 6] = [
        K::pairs(LANES),
        K::in_loop(LANES),
        K::pairs(4),
        K::in_loop(4),
        K::pairs(2),
        K::in_loop(2),
    ];
    const ONE_TABLE: [KernelChoice; 3] = [K::pairs(LANES), K::pairs(4), K::pairs(2)];
    const DEPTHWISE: [KernelChoice; 1] = [K::pairs(1)];
    let node = &graph.nodes[i];
    match plan(node) {
        Some(pl) if pl.tables > MAX_PAIR_TABLES => {
            let macs = node.ty.shape[1] * node.ty.shape[2] * node.ty.shape[3] * pl.k;
            if pair_tables_pay(pl.tables, macs) {
                &MANY_TABLES_PAIRS
            } else {
                &MANY_TABLES
            }
        }
        Some(pl) if pl.tables > 1 => &SEVERAL_TABLES,
        Some(_) => &ONE_TABLE,
        None if super::depthwise_dsp::scratch_bytes(graph, i) > 0 => &DEPTHWISE,
        None => &[],
    }
}

/// Scratch bytes the kernel of `node` needs in the arena when it runs `lanes` pixels per
/// block (0: it uses none, as with `lanes` = 0, the plain kernels), with 3 bytes of
/// slack to align the 32-bit table and the columns.
pub(crate) fn scratch_bytes(graph: &IntGraph, i: usize, choice: KernelChoice) -> usize {
    let KernelChoice {
        lanes,
        decode_in_loop,
    } = choice;
    if lanes == 0 {
        return 0;
    }
    let node = &graph.nodes[i];
    match plan(node) {
        // The columns: kp / 2 pairs of 32 bits per lane.
        Some(pl) => {
            let tables = if decode_in_loop { 0 } else { pl.tables };
            3 + tables * PAIR_TABLE_BYTES + lanes * pl.kp * 2
        }
        None => super::depthwise_dsp::scratch_bytes(graph, i),
    }
}

/// The taps of column pair `j` (within a run of taps starting at a multiple of four):
/// `(2j, 2j + 1)` for 4-bit layers, `(w0, w2)`, `(w1, w3)` of each group of four for
/// int8 layers — the order `SXTB16` splits a word of weights into.
fn pair_taps(j: usize, lut: bool) -> (usize, usize) {
    if lut {
        (2 * j, 2 * j + 1)
    } else {
        let first = 4 * (j / 2) + (j & 1);
        (first, first + 2)
    }
}

/// Emits the body of node `i`'s kernel (signature already written, `scratch` among its
/// parameters) when the layer takes this path with `lanes` pixels per block (one of
/// [`lane_options`]; 0: the plain kernels); `false` leaves `c` untouched.
pub(crate) fn emit(
    c: &mut String,
    graph: &IntGraph,
    i: usize,
    p: &str,
    layer: &QLinear,
    choice: KernelChoice,
) -> bool {
    let KernelChoice {
        lanes,
        decode_in_loop,
    } = choice;
    if lanes == 0 {
        return false;
    }
    let node = &graph.nodes[i];
    let Some(Plan { lut, tables, k, kp }) = plan(node) else {
        return super::depthwise_dsp::emit(c, graph, i, p, layer);
    };
    let g = layer.conv.as_ref().expect("plan checked");
    let [o_n, i_g, kh, kw] = layer.weights.shape();
    let x = &graph.ty(node.inputs[0]).shape;
    let geom = Geometry {
        h: x[2],
        w: x[3],
        i_g,
        kh,
        kw,
        dy: g.dilations[0],
        dx: g.dilations[1],
        lut,
        k,
        lanes,
    };
    let (h, w) = (geom.h, geom.w);
    let (oh, ow) = (node.ty.shape[2], node.ty.shape[3]);
    let pixels = oh * ow;
    let [sy, sx] = g.strides;
    let (pt, pl) = (g.pads[0], g.pads[1]);
    let x_elem = c_elem(graph.ty(node.inputs[0]).elem);
    let np = kp / 2;

    c.push_str(
        "    /* The scratch, 4-byte aligned (the arena has any alignment). */\n    \
         uint8_t *const base = scratch + ((4u - (unsigned)((uintptr_t)scratch & 3u)) & 3u);\n",
    );
    // 4-bit codes decode through pair tables in the scratch, or in the loop.
    let pair_tables = lut && !decode_in_loop;
    if pair_tables {
        writeln!(
            c,
            "    uint32_t *const pairs = (uint32_t *)(void *)base;\n    \
             uint32_t *const cols = (uint32_t *)(void *)(base + {});",
            tables * PAIR_TABLE_BYTES
        )
        .unwrap();
    } else {
        c.push_str("    uint32_t *const cols = (uint32_t *)(void *)base;\n");
    }
    c.push_str("    long p, l, o;\n");
    if pair_tables {
        // One pair table per distinct LUT, in `P_lut_i`'s order (table groups: a
        // channel's pair table is its `P_lutrow_i` entry).
        writeln!(
            c,
            "    {{\n        /* Code byte -> (LUT[low nibble], LUT[high nibble]). */\n        \
             const int8_t *lut = {p}_lut_{i};\n        \
             uint32_t *pt = pairs;\n        \
             int t, b;\n        \
             for (t = 0; t < {tables}; ++t, lut += 16, pt += 256) {{\n            \
             for (b = 0; b < 256; ++b) {{\n                \
             pt[b] = lutq_pair(lut[b & 15], lut[b >> 4]);\n            }}\n        }}\n    }}"
        )
        .unwrap();
    }
    // Blocks of `lanes` pixels, then one block of the remaining `pixels % lanes` (its
    // own kernel: no lane computes a pixel that is dropped).
    let main = pixels - pixels % lanes;
    let blocks: Vec<(usize, String)> = [(lanes, main), (pixels % lanes, pixels - main)]
        .into_iter()
        .filter(|&(_, span)| span > 0)
        .map(|(lanes, span)| {
            let mut b = String::new();
            let geom = Geometry { lanes, ..geom };
            // Column pair j of lane l at cols[j * lanes + l]: the `lanes` words one
            // weight pair meets are adjacent (LDRD / LDM).
            if kh * kw == 1 && sy == 1 && sx == 1 && pt == 0 && pl == 0 && (oh, ow) == (h, w) {
                // A pointwise layer at stride 1: pixel p + l reads input pixel p + l (no
                // division per lane in the source; gcc had strength-reduced it already:
                // no measurable change).
                writeln!(
                    b,
                    "for (l = 0; l < {lanes}; ++l) {{\n    \
                     uint32_t *const q = cols + l;\n    \
                     const long iy0 = 0;\n    \
                     const long ix0 = p + l;"
                )
                .unwrap();
            } else {
                writeln!(
                    b,
                    "for (l = 0; l < {lanes}; ++l) {{\n    \
                     uint32_t *const q = cols + l;\n    \
                     const long iy0 = (p + l) / {ow} * {sy} - {pt};\n    \
                     const long ix0 = (p + l) % {ow} * {sx} - {pl};"
                )
                .unwrap();
            }
            let span_y = (kh - 1) * geom.dy;
            let span_x = (kw - 1) * geom.dx;
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
            let interior = geom.interior_copy(x_elem);
            if inside.is_empty() {
                b.push_str(&indent(&interior, 4));
            } else {
                writeln!(b, "    if ({}) {{", inside.join(" && ")).unwrap();
                b.push_str(&indent(&interior, 8));
                b.push_str("    } else {\n");
                b.push_str(&indent(&geom.tap_loop(true), 8));
                b.push_str("    }\n");
            }
            b.push_str("}\n");
            if lanes >= 2 {
                // The columns are written; the dot loops' LDRDs read them.
                b.push_str("lutq_ld2_fence();\n");
            }
            // The dot products, one output channel at a time over the lanes. Two
            // channels at a time (each column word feeding two SMLADs) measured worse:
            // 16 accumulators do not fit, and 2 channels × 4 pixels made gcc spill (IC
            // ResNet-8: 1.89 vs 1.79 for 4-bit layers, 1.84 vs 1.75 for int8).
            let layer_dot = Dot {
                p,
                i,
                layer,
                out_elem: node.ty.elem,
                pixels,
                np,
                k,
                lut,
                lanes,
                decode_in_loop,
                rounding: graph.rounding,
                cheap_store: kh * kw == 1 || k <= 32,
            };
            writeln!(b, "for (o = 0; o < {o_n}; ++o) {{").unwrap();
            layer_dot.channels(&mut b, 1);
            b.push_str("}\n");
            if lanes >= 2 {
                // ... and are read before the next block writes them.
                b.push_str("lutq_ld2_fence();\n");
            }
            (span, b)
        })
        .collect();
    for (n, (span, block)) in blocks.iter().enumerate() {
        if n == 0 && *span > lanes {
            writeln!(c, "    for (p = 0; p < {span}; p += {lanes}) {{").unwrap();
        } else {
            writeln!(c, "    p = {};\n    {{", if n == 0 { 0 } else { main }).unwrap();
        }
        c.push_str(&indent(block, 8));
        c.push_str("    }\n");
    }
    true
}

/// What the dot-product loops of a layer need.
struct Dot<'a> {
    p: &'a str,
    i: usize,
    layer: &'a QLinear,
    out_elem: lutq_ir::int::IntElem,
    pixels: usize,
    np: usize,
    k: usize,
    lut: bool,
    /// Pixels of the block (all of them computed and stored).
    lanes: usize,
    /// 4-bit weights: decode each pair from the channel's 16-entry table
    /// ([`KernelChoice::decode_in_loop`]) rather than from its pair table.
    decode_in_loop: bool,
    rounding: Rounding,
    /// The store through [`store_value`] (rounding term once per channel, `USAT` /
    /// `SSAT`) rather than the general rescale.
    cheap_store: bool,
}

impl Dot<'_> {
    /// Output channels `o .. o + ocs` over the LANES columns: accumulators `a{c}_{l}`,
    /// then the stores. Indented for the body of the channel loop.
    fn channels(&self, c: &mut String, ocs: usize) {
        let Dot {
            p,
            i,
            layer,
            out_elem,
            pixels,
            np,
            k,
            lut,
            lanes,
            decode_in_loop,
            ..
        } = *self;
        let pad = "    ";
        let at = |ch: usize| {
            if ch == 0 {
                "o".to_string()
            } else {
                format!("(o + {ch})")
            }
        };
        for ch in 0..ocs {
            let accs: Vec<String> = (0..lanes)
                .map(|l| format!("a{ch}_{l} = {p}_bias_{i}[{}]", at(ch)))
                .collect();
            writeln!(c, "{pad}int32_t {};", accs.join(", ")).unwrap();
        }
        writeln!(c, "{pad}const uint32_t *q = cols;").unwrap();
        // Weight pair `w{ch}` (per channel) against column pair `pair` of every lane.
        // One channel: two lanes' column words per `lutq_ld2` (one LDRD; IC ResNet-8's
        // 16-channel 3×3 conv: 1.77 -> 1.42 instructions per MAC).
        let lanes_at = |c: &mut String, wv: &str, pair: usize, pad: &str| {
            let paired = if ocs == 1 { lanes - lanes % 2 } else { 0 };
            for l in (0..paired).step_by(2) {
                let off = (pair * lanes + l) * 4;
                assert!(off <= 1016, "LDRD reaches 1020 bytes");
                writeln!(
                    c,
                    "{pad}{{\n{pad}    uint32_t xa, xb;\n{pad}    lutq_ld2(q, {off}, xa, xb);\n\
                     {pad}    a0_{l} = lutq_dot2({wv}0, xa, a0_{l});\n\
                     {pad}    a0_{} = lutq_dot2({wv}0, xb, a0_{});\n{pad}}}",
                    l + 1,
                    l + 1
                )
                .unwrap();
            }
            for l in paired..lanes {
                writeln!(
                    c,
                    "{pad}{{\n{pad}    const uint32_t x = q[{}];",
                    pair * lanes + l
                )
                .unwrap();
                for ch in 0..ocs {
                    writeln!(c, "{pad}    a{ch}_{l} = lutq_dot2({wv}{ch}, x, a{ch}_{l});").unwrap();
                }
                writeln!(c, "{pad}}}").unwrap();
            }
        };
        let inner = "        ";
        if lut {
            writeln!(c, "{pad}const uint8_t *cp = {p}_codes_{i} + o * {np};").unwrap();
            // This channel's table: its 16-entry table, or that table's pair table
            // (the same offset in pair tables).
            let QWeights::Lut { luts, .. } = &layer.weights else {
                unreachable!("a 4-bit plan has LUT weights")
            };
            for ch in 0..ocs {
                let table = |entries| super::weights::table_offset(p, i, luts, &at(ch), entries);
                if decode_in_loop {
                    let offset = table(16);
                    writeln!(c, "{pad}const int8_t *const lut{ch} = {p}_lut_{i}{offset};").unwrap();
                } else {
                    let offset = table(PAIR_TABLE_BYTES / 4);
                    writeln!(c, "{pad}const uint32_t *const tp{ch} = pairs{offset};").unwrap();
                }
            }
            // One channel: 4 pairs per iteration; two: 1 (more would need registers the
            // compiler spills).
            let unroll = if ocs == 1 { 4 } else { 1 };
            let main = np - np % unroll;
            let load = |c: &mut String, u: usize, pad: &str| {
                for ch in 0..ocs {
                    let byte = ch * np + u;
                    if decode_in_loop {
                        writeln!(
                            c,
                            "{pad}const unsigned b{ch} = cp[{byte}];\n\
                             {pad}const uint32_t w{ch} = lutq_pair(lut{ch}[b{ch} & 15u], lut{ch}[b{ch} >> 4]);"
                        )
                        .unwrap();
                    } else {
                        writeln!(c, "{pad}const uint32_t w{ch} = tp{ch}[cp[{byte}]];").unwrap();
                    }
                }
            };
            if main > 0 {
                writeln!(
                    c,
                    "{pad}long j;\n{pad}for (j = 0; j < {main}; j += {unroll}) {{"
                )
                .unwrap();
                for u in 0..unroll {
                    writeln!(c, "{inner}{{").unwrap();
                    load(c, u, &format!("{inner}    "));
                    lanes_at(c, "w", u, &format!("{inner}    "));
                    writeln!(c, "{inner}}}").unwrap();
                }
                writeln!(
                    c,
                    "{inner}cp += {unroll};\n{inner}q += {};\n{pad}}}",
                    unroll * lanes
                )
                .unwrap();
            }
            for u in 0..np - main {
                writeln!(c, "{pad}{{").unwrap();
                load(c, u, inner);
                lanes_at(c, "w", u, inner);
                writeln!(c, "{pad}}}").unwrap();
            }
        } else {
            let groups = k / 4;
            writeln!(c, "{pad}const int8_t *wp = {p}_w_{i} + o * {k};").unwrap();
            // Groups of four weights, two per iteration: each pair widened from the
            // weight word where it is used (`lutq_w02`, `lutq_w13`: a load and one
            // SXTB16 each), so the word is not kept in a register across the eight
            // SMLADs of the first pair (with `lutq_split4` gcc spilled in the loop: VWW's
            // int8 pointwise layers ran 1.67 instructions per MAC vs 1.59 for 4-bit).
            let unroll = if groups >= 2 { 2 } else { 1 };
            let main = groups - groups % unroll;
            let group = |c: &mut String, u: usize, pad: &str| {
                for (half, helper) in [(0, "lutq_w02"), (1, "lutq_w13")] {
                    writeln!(c, "{pad}{{").unwrap();
                    let wv = if half == 0 { "w02" } else { "w13" };
                    for ch in 0..ocs {
                        writeln!(
                            c,
                            "{pad}    const uint32_t {wv}{ch} = {helper}(wp + {});",
                            ch * k + 4 * u
                        )
                        .unwrap();
                    }
                    lanes_at(c, wv, 2 * u + half, &format!("{pad}    "));
                    writeln!(c, "{pad}}}").unwrap();
                }
            };
            if main > 0 {
                writeln!(
                    c,
                    "{pad}long j;\n{pad}for (j = 0; j < {main}; j += {unroll}) {{"
                )
                .unwrap();
                for u in 0..unroll {
                    group(c, u, inner);
                }
                writeln!(
                    c,
                    "{inner}wp += {};\n{inner}q += {};\n{pad}}}",
                    4 * unroll,
                    2 * unroll * lanes
                )
                .unwrap();
            }
            if groups > main {
                group(c, 0, pad);
                writeln!(c, "{pad}wp += 4;\n{pad}q += {};", 2 * lanes).unwrap();
            }
            let r = k % 4;
            if r > 0 {
                // The last 1–3 weights of each row one by one (a word load would read
                // past the row, and past the array on the last channel).
                writeln!(c, "{pad}{{").unwrap();
                for ch in 0..ocs {
                    let w = |t: usize| {
                        if t < r {
                            format!("wp[{}]", ch * k + t)
                        } else {
                            "0".into()
                        }
                    };
                    writeln!(
                        c,
                        "{inner}const uint32_t w02{ch} = lutq_pair({}, {});\n\
                         {inner}const uint32_t w13{ch} = lutq_pair({}, {});",
                        w(0),
                        w(2),
                        w(1),
                        w(3)
                    )
                    .unwrap();
                }
                lanes_at(c, "w02", 0, inner);
                lanes_at(c, "w13", 1, inner);
                writeln!(c, "{pad}}}").unwrap();
            }
        }
        // The stores, a block per channel (its rescale may declare locals). The general
        // rescale, not `store_value`: with the cheaper epilogue gcc allocated the dot
        // loop's registers worse (IC ResNet-8 1.71 -> 1.87 instructions per MAC).
        for ch in 0..ocs {
            writeln!(c, "{pad}{{").unwrap();
            let mut decls = String::new();
            let value = if self.cheap_store {
                store_value(&mut decls, p, i, layer, 16, self.rounding)
            } else {
                linear_value(&mut decls, p, i, layer, 16)
            }
            .replace("[o]", &format!("[{}]", at(ch)));
            c.push_str(&decls.replace("[o]", &format!("[{}]", at(ch))));
            for l in 0..lanes {
                let store = write(
                    out_elem,
                    "y",
                    &format!("{} * {pixels} + p + {l}", at(ch)),
                    &value.replace("ACC", &format!("a{ch}_{l}")),
                );
                writeln!(c, "{inner}{store}").unwrap();
            }
            writeln!(c, "{pad}}}").unwrap();
        }
    }
}

/// A layer's window as the im2col copy sees it.
#[derive(Clone, Copy)]
struct Geometry {
    h: usize,
    w: usize,
    i_g: usize,
    kh: usize,
    kw: usize,
    dy: usize,
    dx: usize,
    lut: bool,
    /// Taps per window.
    k: usize,
    /// Pixels per block (the column words' stride).
    lanes: usize,
}

impl Geometry {
    /// The im2col copy of one pixel whose window lies inside the input: `q` (lane
    /// `l`'s first column word) and `iy0`, `ix0` (the window's corner) are in scope.
    /// Small kernels: taps at literal offsets, input channels in steps whose taps are a
    /// multiple of four (so the pair pattern repeats); large ones: [`Self::tap_loop`].
    fn interior_copy(&self, x_elem: &str) -> String {
        let Geometry {
            h,
            w,
            i_g,
            kh,
            kw,
            dy,
            dx,
            lut,
            lanes,
            ..
        } = *self;
        let taps = kh * kw;
        if taps > MAX_UNROLLED_TAPS {
            return self.tap_loop(false);
        }
        let plane = h * w;
        let offset = |k: usize| {
            let (ic, t) = (k / taps, k % taps);
            ic * plane + (t / kw) * dy * w + (t % kw) * dx
        };
        // The copy of `chans` channels' taps as literal pairs (taps past them: 0).
        let copy = |chans: usize| -> String {
            let n = chans * taps;
            let group = if lut { 2 } else { 4 };
            let words = n.next_multiple_of(group) / 2;
            (0..words)
                .map(|j| {
                    let (a, b) = pair_taps(j, lut);
                    let tap = |t: usize| {
                        if t < n {
                            format!("xp[{}]", offset(t))
                        } else {
                            "0".into()
                        }
                    };
                    format!("qq[{}] = lutq_pair({}, {});", j * lanes, tap(a), tap(b))
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let step = 4 / gcd(taps, 4);
        let step = if taps == 1 { 4 } else { step };
        let main = i_g - i_g % step;
        let mut c = format!("const {x_elem} *xp = x0 + iy0 * {w} + ix0;\nuint32_t *qq = q;\n");
        if main > 0 {
            writeln!(
                c,
                "long ic;\nfor (ic = 0; ic < {main}; ic += {step}) {{\n{}\n    qq += {};\n    xp += {};\n}}",
                indent_by(&copy(step), 4),
                step * taps / 2 * lanes,
                step * plane
            )
            .unwrap();
        }
        if i_g > main {
            writeln!(c, "{}", copy(i_g - main)).unwrap();
        }
        c
    }

    /// The im2col copy tap by tap, `checked`: zeros where the window leaves the input.
    /// Taps gather in `t` until a group (2 for 4-bit layers, 4 for int8) is complete,
    /// then go out as pairs.
    fn tap_loop(&self, checked: bool) -> String {
        let Geometry {
            h,
            w,
            i_g,
            kh,
            kw,
            dy,
            dx,
            lut,
            k,
            lanes,
        } = *self;
        let group = if lut { 2 } else { 4 };
        let flush = |pad: &str| -> String {
            (0..group / 2)
                .map(|j| {
                    let (a, b) = pair_taps(j, lut);
                    format!("{pad}qq[{}] = lutq_pair(t[{a}], t[{b}]);\n", j * lanes)
                })
                .collect()
        };
        let value = if checked {
            format!(
                "iy >= 0 && iy < {h} && ix >= 0 && ix < {w} ? x0[(ic * {h} + iy) * {w} + ix] : 0"
            )
        } else {
            format!("x0[(ic * {h} + iy) * {w} + ix]")
        };
        let mut c = format!(
            "long ic, ky, kx, k = 0;\nint32_t t[{group}] = {{0}};\nuint32_t *qq = q;\n\
             for (ic = 0; ic < {i_g}; ++ic) {{\n    \
             for (ky = 0; ky < {kh}; ++ky) {{\n        \
             const long iy = iy0 + ky * {dy};\n        \
             for (kx = 0; kx < {kw}; ++kx) {{\n            \
             const long ix = ix0 + kx * {dx};\n            \
             t[k & {}] = {value};\n            \
             if ((k & {}) == {}) {{\n{}                qq += {};\n            }}\n            \
             ++k;\n        }}\n    }}\n}}\n",
            group - 1,
            group - 1,
            group - 1,
            flush("                "),
            group / 2 * lanes
        );
        let r = k % group;
        if r > 0 {
            for t in r..group {
                writeln!(c, "t[{t}] = 0;").unwrap();
            }
            c.push_str(&flush(""));
        }
        c
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// `s` with every non-empty line indented by `n` spaces.
pub(super) fn indent(s: &str, n: usize) -> String {
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

/// [`linear_value`] with the common case made cheap (used by the depthwise kernels,
/// where the store is one per 9 or so MACs): when every channel shifts right
/// (1 ≤ s ≤ 31), `rshift_round(acc, s)` is `(acc + 2^(s-1)) >> s` with the rounding term
/// computed once per channel (no sign test per pixel; `IntGraph::validate` bounds
/// `|acc| + 2^(s-1)`), and a clamp to the whole 8-bit range is one `USAT` / `SSAT` on a
/// core with the DSP extension (`lutq_usat8`, `lutq_ssat8`).
pub(super) fn store_value(
    c: &mut String,
    p: &str,
    i: usize,
    layer: &QLinear,
    indent: usize,
    rounding: Rounding,
) -> String {
    let right = layer
        .rescale
        .iter()
        .all(|r| matches!(r, Rescale::Shift(s) if (1..=31).contains(s)));
    // Ties to even need the result's parity: `lutq_rshift32` has it.
    if !right || rounding == Rounding::HalfEven {
        return linear_value(c, p, i, layer, indent);
    }
    let pad = " ".repeat(indent);
    let shifted = match rescale_form(&layer.rescale) {
        RescaleForm::Shift(s) => format!("(ACC + {}) >> {s}", 1i64 << (s - 1)),
        _ => {
            writeln!(
                c,
                "{pad}const int s = {p}_shift_{i}[o];\n{pad}const int32_t rnd = (int32_t)1 << (s - 1);"
            )
            .unwrap();
            "(ACC + rnd) >> s".into()
        }
    };
    match (layer.lo, layer.hi) {
        (0, 255) => format!("lutq_usat8({shifted})"),
        (-128, 127) => format!("lutq_ssat8({shifted})"),
        (lo, hi) => format!("lutq_clamp32({shifted}, {lo}, {hi})"),
    }
}
