//! Vector kernels, 128-bit (what Cranelift lowers on x86-64).
//!
//! **Convolutions** (every geometry, grouped and depthwise included) are one GEMM per
//! group on a *wide plane*, the interpreter's direct-path trick: the input channels are
//! copied zero-padded and split by stride phase (stage A; skipped for stride 1 without
//! padding, which reads the input in place), so that over wide positions
//! `q = oy · cols + ox` every tap `(ic, ky, kx)` is a contiguous run of bytes starting at
//! a compile-time offset. Stage B gathers, for a tile of wide positions, the taps in
//! groups, chunk by chunk of 8 positions (`panel[chunk][group]`, so stage C reads it in
//! order), and stage C multiplies blocks of 6 output channels × 8 positions:
//! - **quads** ([`Dot::Quads`], on CPUs with VNNI): four taps' bytes interleaved per
//!   position, multiplied by four int8 weights with Cranelift's widening product tree
//!   that it folds into one `vpdpbusd` (16 MACs). The instruction takes unsigned
//!   activations: an i8 input is flipped to `x + 128` in stage B and the accumulators
//!   start at `−128 · Σ w`; i32 sums wrap, so the total is exact.
//! - **pairs** ([`Dot::Pairs`]): two taps widened to i16 and interleaved, multiplied with
//!   `pmaddwd` (Cranelift's `iadd_pairwise(imul(swiden_low ..), imul(swiden_high ..))`),
//!   8 MACs per instruction in exact i32.
//!
//! Groups run over input channels where there are enough (same tap), then over the
//! remaining channels' taps, with zero partners to fill the last. Depthwise layers (one
//! input and one output channel per group) skip the panel, since no other output
//! channel would reuse it: with VNNI they go by runs of consecutive taps, whose inputs
//! for four positions are already adjacent bytes (`runs_step`, no shuffle); else
//! (and for i32 outputs or fixed-point multipliers) pairs of taps are interleaved in
//! registers (`punpcklwd`/`punpckhwd`), 8 positions per step. Stage A copies rows 16
//! bytes at a time (stride 1) or de-interleaves even and odd columns with one byte
//! shuffle (stride 2), rows ending in an overlapping chunk. Columns `ox ≥ OW` of
//! the wide plane are computed and thrown away: results go to a wide buffer and are
//! compacted, except when the wide plane is the output plane (pointwise, stride 1,
//! `OH · OW` a multiple of 8), where they are stored in place.
//!
//! The epilogue is vector code in i32 when every channel rescales by a power of two
//! `|s| ≤ 30`: [`IntGraph::validate`](lutq_ir::int::IntGraph::validate) proves that
//! `acc + 2^(s-1)` and `acc << -s` fit i32 then, so the i32 lanes compute exactly the
//! interpreter's i64 values. Fixed-point multipliers (`*-pc` modes) take the scalar i64
//! epilogue lane by lane.
//!
//! **Dense layers** are dot products over `K`: `vpdpbusd` quads (the input copied once
//! as u8, flipped if i8) or `pmaddwd` pairs (the input widened to i16 once). **Global
//! sum-pools** sum each plane 16 bytes at a time. **Add** is element-wise in i32 lanes when its shifts keep every intermediate
//! within i32.

use cranelift_codegen::ir::types::{I8, I8X16, I16X8, I32, I32X4, I64, I64X2};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value};
use lutq_ir::int::{IntElem, QAdd, QLinear, Rescale};

use crate::emit::{Emitter, flags};
use crate::linear::{Epilogue, LinearData};
use crate::ops::Operand;

/// Lane-order flags for vector bitcasts.
fn le() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

/// Output positions per chunk: two i32x4 accumulators per output channel.
const CHUNK: usize = 8;
/// Output channels per block in stage C: 12 i32x4 accumulators + 2 panel vectors + 1
/// weight pair fill the 16 xmm registers (6 measured ~3 % faster than 4 on MobileNetV2).
const OB: usize = 6;
/// Bytes per stored weight pair: 4 (one i16 pair, splatted at run time) or 16 (the pair
/// stored splatted).
const PAIR_BYTES: usize = 16;
/// Bytes per stored weight quad of the dot-product kernel: 4 (four int8, splatted as
/// they are loaded) or 16 (stored splatted).
const QUAD_BYTES: usize = 16;
/// Whether stage C is unrolled over its `blocks` blocks of `OB` output channels, with
/// the epilogue parameters as immediates: the fewer tap groups `kp` per channel, the
/// larger the epilogue's share (~13 % faster on MobileNetV2's layers with K ≤ 32); code
/// and compile time grow with the blocks, so only layers of at least
/// [`CompileOptions::unroll_min_macs`](crate::CompileOptions) multiply-accumulates.
fn unroll_blocks(blocks: usize, kp: usize, macs: usize, min_macs: usize) -> bool {
    macs >= min_macs && (blocks <= 16 || (kp <= 16 && blocks <= 48))
}
/// Largest buffer the vector kernels address with 32-bit immediate offsets.
const MAX_OFFSET: usize = 1 << 30;
/// Target size of a stage-B panel (bytes): a tile of positions stays in L2.
const PANEL_BYTES: usize = 256 * 1024;

/// Where the rows of a group of taps (a pair, or a quad for the dot-product kernel)
/// start, relative to the group's first channel, in bytes of the (stage-A or input)
/// channel buffers; `None` is a zero partner. Only the first `width` entries are used.
type TapGroup = [Option<usize>; 4];

/// How the reduction is multiplied in stage C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dot {
    /// `pmaddwd`: pairs of taps widened to i16, 8 MACs per instruction.
    Pairs,
    /// `vpdpbusd` (VNNI): quads of u8 activations × int8 weights, 16 MACs per
    /// instruction. An i8 input is flipped to u8 (`x + 128`) in stage B and the
    /// accumulators start at `−128 · Σ w` per channel, which wraps to the exact sum.
    Quads,
}

/// See [`LinearPlan::padded_key`].
pub(crate) type PaddedKey = ([usize; 7], [usize; 2], [usize; 2]);

pub(crate) struct ConvPlan {
    c: usize,
    h: usize,
    w: usize,
    group: usize,
    i_g: usize,
    o_per_g: usize,
    oh: usize,
    ow: usize,
    strides: [usize; 2],
    pads: [usize; 2],
    /// Phase-plane rows and columns (the wide plane's row pitch is `cols`).
    rows: usize,
    cols: usize,
    /// Stage A is needed (strides or padding); else the input is read in place.
    stage_a: bool,
    /// Bytes per channel in the stage-A buffer, or `h · w` in place.
    chan_len: usize,
    /// Byte offset of each tap `(ky, kx)` inside a channel buffer.
    taps: Vec<usize>,
    /// Pairs or quads (`width` taps each).
    dot: Dot,
    /// Depthwise by runs of consecutive taps (`runs_step`); the groups are runs.
    tap_runs: bool,
    width: usize,
    /// Groups: first `i_g / width · taps` channel groups (loop), then the remaining
    /// channels' taps in groups.
    tail: Vec<TapGroup>,
    /// Tap groups per output channel.
    kp: usize,
    /// Wide positions, rounded up to whole chunks.
    q8: usize,
    /// Positions per tile (a multiple of `CHUNK`).
    qt: usize,
    /// Write results straight into the output value.
    direct: bool,
    /// `[O][Kp]` i16 pairs (splatted, `PAIR_BYTES` each) or int8 quads (`QUAD_BYTES`).
    wpairs: *const u8,
    /// `[O]` i32 initial accumulators (`Quads` on an i8 input: `−128 · Σ w`).
    acc_init: Option<*const u8>,
    /// `[O][4]` i32 `(bias, lsh, add, rsh)` for the vector epilogue, if it applies, and
    /// whether no channel shifts left (see `vector_table`).
    vtab: Option<(*const u8, bool)>,
    /// The same table as compile-time values, when stage C is unrolled over blocks of
    /// output channels (one group, see `unroll_blocks`): every channel's
    /// epilogue then has its bias and shifts as immediates.
    const_ep: Option<Vec<[i32; 4]>>,
    /// Bytes of the stage-A buffer, which is the layer's own (not in the shared scratch),
    /// and its arena offset (set once the arena is laid out): the arena starts zeroed and
    /// stage A rewrites the same interior bytes on every run, so its padding stays zero.
    padded_bytes: usize,
    padded_at: usize,
    // Scratch layout, relative to the scratch base.
    panel_off: usize,
    wide_off: usize,
    total: usize,
}

pub(crate) struct DensePlan {
    /// `K` rounded up to the step: 8 (pairs) or 16 (quads).
    k8: usize,
    /// `[O][K8]` int8 weights (zeros after `K`), widened as they are loaded (pairs).
    w8: *const u8,
    /// `vpdpbusd` on the input flipped to u8, 16 weights per instruction; then `[O]`
    /// i32 corrections `−128 · Σ w` for an i8 input.
    quads: Option<Option<*const u8>>,
}

/// How a linear layer is computed.
pub(crate) enum LinearPlan {
    Scalar,
    Conv(Box<ConvPlan>),
    Dense(DensePlan),
}

impl LinearPlan {
    /// Bytes of the layer's own zero-padded input copy (stage A), 0 if none.
    pub fn padded_bytes(&self) -> usize {
        match self {
            LinearPlan::Conv(p) => p.padded_bytes,
            _ => 0,
        }
    }

    /// What decides which bytes of the stage-A buffer are written (and so which stay
    /// zero): layers with equal keys can share one buffer. `None` without stage A.
    pub fn padded_key(&self) -> Option<PaddedKey> {
        match self {
            LinearPlan::Conv(p) if p.padded_bytes > 0 => Some((
                [p.c, p.h, p.w, p.rows, p.cols, p.chan_len, p.padded_bytes],
                p.strides,
                p.pads,
            )),
            _ => None,
        }
    }

    /// Places the stage-A buffer at arena offset `at`.
    pub fn set_padded_at(&mut self, at: usize) {
        if let LinearPlan::Conv(p) = self {
            p.padded_at = at;
        }
    }

    pub fn scratch_bytes(&self) -> usize {
        match self {
            LinearPlan::Scalar => 0,
            LinearPlan::Conv(p) => p.total,
            LinearPlan::Dense(p) => 2 * p.k8 + 64,
        }
    }
}

fn round_up(v: usize, m: usize) -> usize {
    v.div_ceil(m) * m
}

/// The vector epilogue table, if every channel's rescale is a power of two in reach:
/// per channel `(bias, lsh, add, rsh)` as i32, and whether no channel shifts left. In
/// that case the rounding term is folded into the bias (`bias + 2^(s-1)`, which fits
/// i32 by the same bound), so the epilogue is one add and one shift.
fn vector_table(layer: &QLinear) -> Option<(Vec<u8>, bool)> {
    let mut t = Vec::with_capacity(16 * layer.bias.len());
    let no_lsh = layer
        .rescale
        .iter()
        .all(|r| matches!(r, Rescale::Shift(s) if *s >= 0));
    for (&b, &r) in layer.bias.iter().zip(&layer.rescale) {
        let Rescale::Shift(s) = r else { return None };
        if !(-30..=30).contains(&s) {
            return None;
        }
        let (lsh, add, rsh) = if s > 0 {
            (0, 1i32 << (s - 1), s)
        } else {
            (-s, 0, 0)
        };
        let entry = if no_lsh {
            [b.wrapping_add(add), 0, 0, rsh]
        } else {
            [b, lsh, add, rsh]
        };
        for v in entry {
            t.extend_from_slice(&v.to_le_bytes());
        }
    }
    Some((t, no_lsh))
}

/// Per output row of `decoded` (`k_n` weights each), `−128 · Σ w` as i32 bytes: what
/// flipping an i8 input to `x + 128` adds to a dot product, taken back.
fn flip_corrections(decoded: &[i8], o_n: usize, k_n: usize) -> Vec<u8> {
    (0..o_n)
        .flat_map(|o| {
            let row = &decoded[o * k_n..(o + 1) * k_n];
            let sum: i32 = row.iter().map(|&v| v as i32).sum();
            sum.wrapping_mul(-128).to_le_bytes()
        })
        .collect()
}

pub(crate) fn plan_linear(
    layer: &QLinear,
    x: &Operand,
    y: &Operand,
    dot: Dot,
    unroll_min_macs: usize,
    host: &mut dyn FnMut(&[u8]) -> *const u8,
) -> LinearPlan {
    let [o_n, i_g, kh, kw] = layer.weights.shape();
    let k_n = i_g * kh * kw;
    let decoded = layer.weights.decode();
    let Some(g) = &layer.conv else {
        let quads = dot == Dot::Quads && matches!(x.ty.elem, IntElem::I8 | IntElem::U8);
        let k8 = round_up(k_n, if quads { 16 } else { CHUNK });
        if o_n * k8 > MAX_OFFSET {
            return LinearPlan::Scalar;
        }
        let mut w8 = vec![0u8; o_n * k8];
        for o in 0..o_n {
            for k in 0..k_n {
                w8[o * k8 + k] = decoded[o * k_n + k] as u8;
            }
        }
        let quads = quads.then(|| {
            (x.ty.elem == IntElem::I8).then(|| host(&flip_corrections(&decoded, o_n, k_n)))
        });
        return LinearPlan::Dense(DensePlan {
            k8,
            w8: host(&w8),
            quads,
        });
    };
    let (c, h, w) = (x.ty.shape[1], x.ty.shape[2], x.ty.shape[3]);
    let (oh, ow) = (y.ty.shape[2], y.ty.shape[3]);
    if oh * ow == 0 || o_n == 0 || k_n == 0 {
        return LinearPlan::Scalar;
    }
    let [sy, sx] = g.strides;
    let [dy, dx] = g.dilations;
    let rows = (oh - 1) + ((kh - 1) * dy) / sy + 1;
    let cols = (ow - 1) + ((kw - 1) * dx) / sx + 1;
    // In place, the last taps of the last channel read up to `(kw − 1) · dx + CHUNK`
    // bytes past the input value, into the spare bytes after it.
    let stage_a =
        g.strides != [1, 1] || g.pads != [0; 4] || (kw - 1) * dx + 2 * CHUNK > crate::SLACK;
    let chan_len = if stage_a {
        sy * sx * rows * cols + cols + 2 * CHUNK
    } else {
        h * w
    };
    let taps: Vec<usize> = (0..kh * kw)
        .map(|t| {
            let (ky, kx) = (t / kw, t % kw);
            let (qy, ry) = ((ky * dy) / sy, (ky * dy) % sy);
            let (qx, rx) = ((kx * dx) / sx, (kx * dx) % sx);
            ((ry * sx + rx) * rows + qy) * cols + qx
        })
        .collect();
    let n_t = taps.len();
    let depthwise = i_g == 1 && o_n == g.group;
    // Depthwise with quads and a vector epilogue to 8 bits: runs of taps at consecutive
    // offsets (see `runs_step`; slot j of a group holds the tap at `base + j`).
    // Other depthwise layers (i32 outputs, fixed-point multipliers) take the pair kernel.
    let vtab = vector_table(layer);
    let tap_runs = depthwise
        && dot == Dot::Quads
        && matches!(y.ty.elem, IntElem::I8 | IntElem::U8)
        && vtab.is_some();
    let dot = if depthwise && !tap_runs {
        Dot::Pairs
    } else {
        dot
    };
    let width = match dot {
        Dot::Pairs => 2,
        Dot::Quads => 4,
    };
    // The reduction in tap groups: `width` channels at one tap while whole channel
    // groups remain, then the remaining channels' `(channel, tap)` in order. Each entry
    // is (source offset, weight index k = ic · n_t + t).
    let full = i_g / width;
    let mut groups: Vec<[Option<(usize, usize)>; 4]> = Vec::new();
    for m in 0..full {
        for (t, &off) in taps.iter().enumerate() {
            let mut grp = [None; 4];
            for (j, slot) in grp.iter_mut().enumerate().take(width) {
                let ic = m * width + j;
                *slot = Some((ic * chan_len + off, ic * n_t + t));
            }
            groups.push(grp);
        }
    }
    let rest: Vec<(usize, usize)> = (full * width..i_g)
        .flat_map(|ic| {
            taps.iter()
                .enumerate()
                .map(move |(t, &off)| (ic * chan_len + off, ic * n_t + t))
        })
        .collect();
    if tap_runs {
        let mut sorted = rest.clone();
        sorted.sort_unstable();
        let mut i = 0;
        while i < sorted.len() {
            let base = sorted[i].0;
            let mut grp = [None; 4];
            while i < sorted.len() && sorted[i].0 < base + 4 {
                grp[sorted[i].0 - base] = Some(sorted[i]);
                i += 1;
            }
            groups.push(grp);
        }
    } else {
        for chunk in rest.chunks(width) {
            let mut grp = [None; 4];
            for (slot, &src) in grp.iter_mut().zip(chunk) {
                *slot = Some(src);
            }
            groups.push(grp);
        }
    }
    let kp = groups.len();
    let tail: Vec<TapGroup> = groups[full * n_t..]
        .iter()
        .map(|grp| grp.map(|src| src.map(|(off, _)| off)))
        .collect();
    let group_bytes = match dot {
        Dot::Pairs => PAIR_BYTES,
        Dot::Quads => QUAD_BYTES,
    };
    // Offsets inside the kernels are 32-bit immediates.
    if o_n * kp * group_bytes > MAX_OFFSET || c * chan_len > MAX_OFFSET {
        return LinearPlan::Scalar;
    }
    let mut wp = Vec::with_capacity(o_n * kp * group_bytes);
    for o in 0..o_n {
        for grp in &groups {
            let w = grp.map(|src| src.map_or(0, |(_, k)| decoded[o * k_n + k]));
            match dot {
                Dot::Pairs => {
                    for _ in 0..PAIR_BYTES / 4 {
                        wp.extend_from_slice(&(w[0] as i16).to_le_bytes());
                        wp.extend_from_slice(&(w[1] as i16).to_le_bytes());
                    }
                }
                Dot::Quads => {
                    for _ in 0..QUAD_BYTES / 4 {
                        wp.extend(w.map(|v| v as u8));
                    }
                }
            }
        }
    }
    // The quad kernel multiplies unsigned activations: an i8 input is flipped to
    // `x + 128` and every channel starts from `−128 · Σ w` (i32 sums wrap, and the exact
    // result fits i32 by the overflow proof, so the wrapped sum is exact).
    let acc_init = (dot == Dot::Quads && x.ty.elem == IntElem::I8)
        .then(|| host(&flip_corrections(&decoded, o_n, k_n)));
    let q = oh * cols;
    // The depthwise quad kernel steps 16 positions at a time.
    let q8 = round_up(
        q,
        if depthwise && dot == Dot::Quads {
            16
        } else {
            CHUNK
        },
    );
    let qt = (PANEL_BYTES / (kp * 4) / CHUNK * CHUNK).clamp(CHUNK, q8);
    let direct = cols == ow && q == q8;
    let ez = y.ty.elem.size_bytes();
    let a_bytes = if stage_a {
        round_up(c * chan_len, 64)
    } else {
        0
    };
    let panel_off = 0;
    let wide_off = panel_off + round_up(kp * qt * 4, 64);
    let total = wide_off + if direct { 0 } else { o_n * q8 * ez } + 64;
    let const_ep = match &vtab {
        Some((t, _))
            if g.group == 1
                && !depthwise
                && unroll_blocks(o_n.div_ceil(OB), kp, oh * ow * o_n * k_n, unroll_min_macs) =>
        {
            Some(
                t.chunks_exact(16)
                    .map(|c| {
                        std::array::from_fn(|i| {
                            i32::from_le_bytes(c[4 * i..4 * i + 4].try_into().expect("4 bytes"))
                        })
                    })
                    .collect(),
            )
        }
        _ => None,
    };
    let vtab = vtab.map(|(t, no_lsh)| (host(&t), no_lsh));
    LinearPlan::Conv(Box::new(ConvPlan {
        c,
        h,
        w,
        group: g.group,
        i_g,
        o_per_g: o_n / g.group,
        oh,
        ow,
        strides: g.strides,
        pads: [g.pads[0], g.pads[1]],
        rows,
        cols,
        stage_a,
        chan_len,
        taps,
        dot,
        tap_runs,
        width,
        tail,
        kp,
        q8,
        qt,
        direct,
        wpairs: host(&wp),
        acc_init,
        vtab,
        const_ep,
        padded_bytes: a_bytes,
        padded_at: 0,
        panel_off,
        wide_off,
        total,
    }))
}

/// Emits the vector kernel of `plan`; `false` if the layer takes the scalar kernel.
pub(crate) fn linear(
    e: &mut Emitter,
    layer: &QLinear,
    plan: &LinearPlan,
    data: &LinearData,
    x: &Operand,
    y: &Operand,
    scratch: usize,
) -> bool {
    match plan {
        LinearPlan::Scalar => false,
        LinearPlan::Dense(p) => {
            dense(e, layer, p, data, x, y, scratch);
            true
        }
        LinearPlan::Conv(p) => {
            conv(e, layer, p, data, x, y, scratch);
            true
        }
    }
}

fn load_widened(e: &mut Emitter, elem: IntElem, addr: Value) -> Value {
    match elem {
        IntElem::U8 => e.b.ins().uload8x8(flags(), addr, 0),
        _ => e.b.ins().sload8x8(flags(), addr, 0),
    }
}

/// A weight group (an i16 pair or an int8 quad: 4 bytes) at `addr + offset` in all four
/// i32 lanes, as `ty`: stored splatted (`bytes` = 16) or splatted as it is loaded.
fn weight_splat(e: &mut Emitter, addr: Value, offset: i32, bytes: usize, ty: Type) -> Value {
    if bytes == 16 {
        e.load_const(ty, addr, offset)
    } else {
        let w = e.load_const(I32, addr, offset);
        let w = e.b.ins().splat(I32X4, w);
        e.b.ins().bitcast(ty, le(), w)
    }
}

/// The weight pair at `addr + offset`, in all four i32 lanes.
fn weight_pair(e: &mut Emitter, addr: Value, offset: i32) -> Value {
    weight_splat(e, addr, offset, PAIR_BYTES, I16X8)
}

/// The weight quad at `addr + offset`, in all four i32 lanes.
fn weight_quad(e: &mut Emitter, addr: Value, offset: i32) -> Value {
    weight_splat(e, addr, offset, QUAD_BYTES, I8X16)
}

/// `pmaddwd`: `a`, `b` i16x8 → i32x4 of adjacent products summed.
fn madd(e: &mut Emitter, a: Value, b: Value) -> Value {
    let (al, bl) = (e.b.ins().swiden_low(a), e.b.ins().swiden_low(b));
    let lo = e.b.ins().imul(al, bl);
    let (ah, bh) = (e.b.ins().swiden_high(a), e.b.ins().swiden_high(b));
    let hi = e.b.ins().imul(ah, bh);
    e.b.ins().iadd_pairwise(lo, hi)
}

/// `acc + Σ` of four adjacent `u8(x) · i8(w)` products per i32 lane: the tree Cranelift
/// folds into one `vpdpbusd` on a CPU with VNNI (AVX-VNNI or AVX512-VNNI), and
/// computes exactly as written elsewhere (every product fits i16; sums wrap in i32).
fn dot_quads(e: &mut Emitter, acc: Value, x: Value, w: Value) -> Value {
    let b = &mut e.b;
    let lo = {
        let (a, x) = (b.ins().swiden_low(w), b.ins().uwiden_low(x));
        b.ins().imul(a, x)
    };
    let hi = {
        let (a, x) = (b.ins().swiden_high(w), b.ins().uwiden_high(x));
        b.ins().imul(a, x)
    };
    let sum4 = |e: &mut Emitter, v: Value| {
        let (l, h) = (e.b.ins().swiden_low(v), e.b.ins().swiden_high(v));
        e.b.ins().iadd_pairwise(l, h)
    };
    let (l, h) = (sum4(e, lo), sum4(e, hi));
    let s = e.b.ins().iadd_pairwise(l, h);
    e.b.ins().iadd(s, acc)
}

fn shuffle(e: &mut Emitter, a: Value, b: Value, mask: [u8; 16]) -> Value {
    let imm = e.b.func.dfg.immediates.push(ConstantData::from(&mask[..]));
    e.b.ins().shuffle(a, b, imm)
}

fn splat32(e: &mut Emitter, v: i32) -> Value {
    let c = e.c32(v);
    e.b.ins().splat(I32X4, c)
}

/// Fills `bytes` (a multiple of 16) at `addr` with zeros.
fn zero_fill(e: &mut Emitter, addr: Value, bytes: usize) {
    let zero = e.c32(0);
    let z = e.b.ins().splat(I32X4, zero);
    e.for_range(0, bytes as i64, 16, &[], |e, i, _| {
        let p = e.add(addr, i);
        e.store(z, p, 0);
        Vec::new()
    });
}

fn conv(
    e: &mut Emitter,
    layer: &QLinear,
    p: &ConvPlan,
    data: &LinearData,
    x: &Operand,
    y: &Operand,
    scratch: usize,
) {
    let xb = e.arena(x.offset);
    let src = if p.stage_a {
        let buf = e.arena(p.padded_at);
        stage_a(e, p, xb, buf);
        buf
    } else {
        xb
    };
    let panel = e.arena(scratch + p.panel_off);
    let ye = y.ty.elem;
    let (out, plane) = if p.direct {
        (e.arena(y.offset), p.q8)
    } else {
        (e.arena(scratch + p.wide_off), p.q8)
    };
    if p.i_g == 1 && p.o_per_g == 1 {
        depthwise(e, layer, p, data, x.ty.elem, src, (out, plane, ye))
    } else {
        tiled(e, layer, p, data, x.ty.elem, src, panel, (out, plane, ye));
    }
    if !p.direct {
        compact(e, p, out, plane, y);
    }
}

/// Output channel `o`'s accumulators before the first product: `−128 · Σ w` in every
/// lane for a flipped i8 input (quads), else 0.
fn acc_start(e: &mut Emitter, p: &ConvPlan, o: Value) -> Value {
    match p.acc_init {
        Some(t) => {
            let tb = e.host(t);
            let a = e.index(tb, o, 4);
            let v = e.load_const(I32, a, 0);
            e.b.ins().splat(I32X4, v)
        }
        None => splat32(e, 0),
    }
}

/// Depthwise (one input and one output channel per group), without a panel: per
/// channel, its weights and epilogue, then the wide plane in steps of 16 positions by
/// runs of taps (`tap_runs`, see `runs_step`) or of 8 by pairs (`pairs_step`).
fn depthwise(
    e: &mut Emitter,
    layer: &QLinear,
    p: &ConvPlan,
    data: &LinearData,
    xe: IntElem,
    src: Value,
    (out, plane, ye): (Value, usize, IntElem),
) {
    let ez = ye.size_bytes() as i64;
    let (lo, hi) = (layer.lo, layer.hi);
    let wbase = e.host(p.wpairs);
    let (group_bytes, step) = if p.tap_runs {
        (QUAD_BYTES, 16)
    } else {
        (PAIR_BYTES, CHUNK)
    };
    e.for_each(0, p.group as i64, |e, g| {
        let xg = e.index(src, g, p.chan_len as i64);
        let wg = e.index(wbase, g, (p.kp * group_bytes) as i64);
        let ws: Vec<Value> = (0..p.tail.len())
            .map(|i| {
                let at = (group_bytes * i) as i32;
                if p.tap_runs {
                    weight_quad(e, wg, at)
                } else {
                    weight_pair(e, wg, at)
                }
            })
            .collect();
        let init = acc_start(e, p, g);
        let ep = Ep::load(e, p, data, g);
        let bounds = ((lo, hi), (splat32(e, lo), splat32(e, hi)));
        let d0 = e.index(out, g, plane as i64 * ez);
        e.for_range(0, (p.q8 / step) as i64, 1, &[xg, d0], |e, _, cur| {
            let (xq, d) = (cur[0], cur[1]);
            let ch = DwChannel {
                p,
                xe,
                ws: &ws,
                init,
                ep: &ep,
                bounds,
                ye,
            };
            if p.tap_runs {
                runs_step(e, &ch, xq, d);
            } else {
                pairs_step(e, &ch, xq, d);
            }
            vec![e.addi(xq, step as i64), e.addi(d, step as i64 * ez)]
        });
    });
}

/// One depthwise channel's constants for its steps.
struct DwChannel<'a> {
    p: &'a ConvPlan,
    xe: IntElem,
    /// Weight groups, splatted.
    ws: &'a [Value],
    /// Accumulators' start (see `acc_start`).
    init: Value,
    ep: &'a Ep,
    /// `(lo, hi)` and the same splatted.
    bounds: ((i32, i32), (Value, Value)),
    ye: IntElem,
}

/// 8 positions of a depthwise channel by pairs of taps, interleaved in registers
/// (`punpcklwd`/`punpckhwd`) and multiplied with `pmaddwd`.
fn pairs_step(e: &mut Emitter, ch: &DwChannel, xq: Value, d: Value) {
    let xe = ch.xe;
    let mut acc = [ch.init, ch.init];
    for (grp, &w) in ch.p.tail.iter().zip(ch.ws) {
        let (a, b) = (grp[0].expect("a group's first tap"), grp[1]);
        let va = load_widened_at(e, xe, xq, a);
        let vb = match b {
            Some(b) => load_widened_at(e, xe, xq, b),
            None => {
                let z = e.b.ins().iconst(cranelift_codegen::ir::types::I16, 0);
                e.b.ins().splat(I16X8, z)
            }
        };
        let ba = e.b.ins().bitcast(I8X16, le(), va);
        let bb = e.b.ins().bitcast(I8X16, le(), vb);
        let lo = shuffle(e, ba, bb, LO_WORDS);
        let lo = e.b.ins().bitcast(I16X8, le(), lo);
        let hi = shuffle(e, ba, bb, HI_WORDS);
        let hi = e.b.ins().bitcast(I16X8, le(), hi);
        let m0 = madd(e, lo, w);
        let m1 = madd(e, hi, w);
        acc = [e.b.ins().iadd(acc[0], m0), e.b.ins().iadd(acc[1], m1)];
    }
    ch.ep.store(e, acc, ch.bounds.0, ch.bounds.1, ch.ye, d);
}

/// 16 positions of a depthwise channel by runs of taps, without any shuffle in the loop.
/// A run is up to four taps at consecutive offsets `base + j` of the wide plane (a kernel
/// row at stride 1; the taps of one stride phase otherwise), its weights one quad
/// `(w_0, w_1, w_2, w_3)` (0 where no tap). The 16 bytes loaded from `base + k` give, in
/// lane i, the run's four inputs for position `4i + k`, so four loads (`k = 0..3`) and
/// four dot products per run leave accumulator k with positions `k, k + 4, k + 8,
/// k + 12`; the epilogue narrows the four to 16 bytes (8-bit outputs only) and one byte
/// shuffle restores position order.
fn runs_step(e: &mut Emitter, ch: &DwChannel, xq: Value, d: Value) {
    let (xe, ye) = (ch.xe, ch.ye);
    let mut acc = [ch.init; 4];
    for (grp, &w) in ch.p.tail.iter().zip(ch.ws) {
        let base = grp[0].expect("a run starts at a tap");
        for (k, a) in acc.iter_mut().enumerate() {
            let mut v = e.load(I8X16, xq, (base + k) as i32);
            if xe == IntElem::I8 {
                let m = e.b.ins().iconst(I8, -128);
                let flip = e.b.ins().splat(I8X16, m);
                v = e.b.ins().bxor(v, flip);
            }
            *a = dot_quads(e, *a, v, w);
        }
    }
    let v = acc.map(|a| ch.ep.rescale_lanes(e, a, ch.bounds.0, ch.bounds.1, ye));
    let n01 = e.b.ins().snarrow(v[0], v[1]);
    let n23 = e.b.ins().snarrow(v[2], v[3]);
    let n = if ye == IntElem::U8 {
        e.b.ins().unarrow(n01, n23)
    } else {
        e.b.ins().snarrow(n01, n23)
    };
    let n = shuffle(e, n, n, UNSTRIDE4);
    e.store(n, d, 0);
}

fn load_widened_at(e: &mut Emitter, elem: IntElem, addr: Value, offset: usize) -> Value {
    match elem {
        IntElem::U8 => e.b.ins().uload8x8(flags(), addr, offset as i32),
        _ => e.b.ins().sload8x8(flags(), addr, offset as i32),
    }
}

/// The general case: per group, tiles of wide positions, stage B then stage C.
#[allow(clippy::too_many_arguments)]
fn tiled(
    e: &mut Emitter,
    layer: &QLinear,
    p: &ConvPlan,
    data: &LinearData,
    xe: IntElem,
    src: Value,
    panel: Value,
    (out, plane, ye): (Value, usize, IntElem),
) {
    let full_tiles = p.q8 / p.qt;
    let rest = (p.q8 % p.qt) / CHUNK;
    e.for_each(0, p.group as i64, |e, g| {
        let xg = e.index(src, g, (p.i_g * p.chan_len) as i64);
        let tile = |e: &mut Emitter, q0: Value, nc: usize| {
            stage_b(e, p, xe, xg, panel, q0, nc);
            stage_c(e, layer, p, data, g, panel, q0, nc, (out, plane, ye));
        };
        e.for_range(0, full_tiles as i64, 1, &[], |e, t, _| {
            let q0 = e.muli(t, p.qt as i64);
            tile(e, q0, p.qt / CHUNK);
            Vec::new()
        });
        if rest > 0 {
            let q0 = e.c64((full_tiles * p.qt) as i64);
            tile(e, q0, rest);
        }
    });
}

/// Compaction: the first OW columns of every wide row, to the output value.
fn compact(e: &mut Emitter, p: &ConvPlan, out: Value, plane: usize, y: &Operand) {
    let ez = y.ty.elem.size_bytes() as i64;
    let yb = e.arena(y.offset);
    let (oh, ow, cols) = (p.oh as i64, p.ow as i64, p.cols as i64);
    e.for_each(0, (p.group * p.o_per_g) as i64, |e, o| {
        let s0 = e.index(out, o, plane as i64 * ez);
        let d0 = e.index(yb, o, oh * ow * ez);
        e.for_each(0, oh, |e, oy| {
            let s = e.index(s0, oy, cols * ez);
            let d = e.index(d0, oy, ow * ez);
            copy_bytes(e, s, d, (ow * ez) as usize);
        });
    });
}

/// Stage A: every input channel copied zero-padded, split by stride phase:
/// `buf[c][ry][rx][a][b] = padded[c][a·sy + ry][b·sx + rx]`.
fn stage_a(e: &mut Emitter, p: &ConvPlan, xb: Value, buf: Value) {
    let [sy, sx] = p.strides;
    let [pt, pl] = p.pads;
    // No zero fill: the buffer is this layer's own, zero from the start, and only its
    // interior is ever written.
    // Input rows that land in a phase row `a < rows`.
    let iy_end = p.h.min((p.rows * sy).saturating_sub(pt));
    let (rows, cols, w) = (p.rows as i64, p.cols as i64, p.w as i64);
    e.for_each(0, p.c as i64, |e, ch| {
        let xc = e.index(xb, ch, (p.h * p.w) as i64);
        let bc = e.index(buf, ch, p.chan_len as i64);
        e.for_each(0, iy_end as i64, |e, iy| {
            let py = e.addi(iy, pt as i64);
            let syv = e.c64(sy as i64);
            let a = e.b.ins().udiv(py, syv);
            let ry = e.b.ins().urem(py, syv);
            let srow = e.index(xc, iy, w);
            // Stride 2 along x: 16 input bytes at a time, split into even and odd
            // columns with one byte shuffle, as long as both halves land inside their
            // phase rows; the rest column by column below.
            let mut ix_start = 0;
            if sx == 2 && p.cols >= 8 + pl.div_ceil(2) {
                let nj = (p.w / 16).min((p.cols - 8 - pl.div_ceil(2)) / 8 + 1);
                if nj > 0 {
                    let phase_row = |e: &mut Emitter, rx: usize| {
                        let ph = e.muli(ry, 2);
                        let ph = e.addi(ph, rx as i64);
                        let ph = e.muli(ph, rows);
                        let ph = e.add(ph, a);
                        e.index(bc, ph, cols)
                    };
                    // Even input columns go to phase pl % 2 from b = pl / 2, odd ones to
                    // phase (pl + 1) % 2 from b = (pl + 1) / 2.
                    let re = phase_row(e, pl % 2);
                    let re = e.addi(re, (pl / 2) as i64);
                    let ro = phase_row(e, (pl + 1) % 2);
                    let ro = e.addi(ro, pl.div_ceil(2) as i64);
                    e.for_each(0, nj as i64, |e, j| {
                        let sa = e.index(srow, j, 16);
                        let v = e.load(I8X16, sa, 0);
                        let v = shuffle(e, v, v, EVEN_ODD);
                        let v = e.b.ins().bitcast(I64X2, le(), v);
                        let lo = e.b.ins().extractlane(v, 0);
                        let hi = e.b.ins().extractlane(v, 1);
                        let de = e.index(re, j, 8);
                        e.store(lo, de, 0);
                        let d_o = e.index(ro, j, 8);
                        e.store(hi, d_o, 0);
                    });
                    ix_start = 16 * nj;
                }
            }
            // The rest of a stride-2 row in whole chunks too (16 bytes, or 8 for rows
            // shorter than 16), the last one ending at the row's end (it rewrites some
            // columns with the same values), where every chunk's columns land inside
            // their phase rows; else column by column below.
            let size = if p.w >= 16 { 16 } else { 8 };
            if sx == 2 && ix_start < p.w && p.w >= size {
                let mut starts: Vec<usize> = (ix_start..p.w - size).step_by(size).collect();
                starts.push(p.w - size);
                // Bytes at even offsets from `ix0` go to phase (ix0 + pl) % 2 from
                // b = (ix0 + pl) / 2; odd offsets to the other phase, from
                // (ix0 + 1 + pl) / 2.
                let fits = |ix0: usize| {
                    (ix0 + pl) / 2 + size / 2 <= p.cols && (ix0 + 1 + pl) / 2 + size / 2 <= p.cols
                };
                if starts.iter().all(|&ix0| fits(ix0)) {
                    for ix0 in starts {
                        let dst = |e: &mut Emitter, c: usize| {
                            let rx = (c + pl) % 2;
                            let ph = e.muli(ry, 2);
                            let ph = e.addi(ph, rx as i64);
                            let ph = e.muli(ph, rows);
                            let ph = e.add(ph, a);
                            let row = e.index(bc, ph, cols);
                            e.addi(row, ((c + pl) / 2) as i64)
                        };
                        let (de, d_o) = (dst(e, ix0), dst(e, ix0 + 1));
                        let sa = e.addi(srow, ix0 as i64);
                        // Even bytes to the low half, odd ones to the next, stored as
                        // two lanes of half the chunk each.
                        let (v, mask, halves) = if size == 16 {
                            (e.load(I8X16, sa, 0), EVEN_ODD, I64X2)
                        } else {
                            let v = e.load(I64, sa, 0);
                            let v = e.b.ins().scalar_to_vector(I64X2, v);
                            (e.b.ins().bitcast(I8X16, le(), v), EVEN_ODD8, I32X4)
                        };
                        let v = shuffle(e, v, v, mask);
                        let v = e.b.ins().bitcast(halves, le(), v);
                        let lo = e.b.ins().extractlane(v, 0);
                        let hi = e.b.ins().extractlane(v, 1);
                        e.store(lo, de, 0);
                        e.store(hi, d_o, 0);
                    }
                    ix_start = p.w;
                }
            }
            for rx in 0..sx {
                // Phase column b holds input column b·sx + rx − pl: the first such input
                // column at or after `ix_start`.
                let first = pl.saturating_sub(rx).div_ceil(sx) * sx + rx - pl;
                let ix0 = if ix_start > first {
                    first + (ix_start - first).div_ceil(sx) * sx
                } else {
                    first
                };
                let b0 = (ix0 + pl - rx) / sx;
                if ix0 >= p.w || b0 >= p.cols {
                    continue;
                }
                let count = (p.cols - b0).min((p.w - ix0).div_ceil(sx));
                // dst = bc + ((ry·sx + rx)·rows + a)·cols + b0
                let ph = e.muli(ry, sx as i64);
                let ph = e.addi(ph, rx as i64);
                let ph = e.muli(ph, rows);
                let ph = e.add(ph, a);
                let d = e.index(bc, ph, cols);
                let d = e.addi(d, b0 as i64);
                let s = e.addi(srow, ix0 as i64);
                if sx == 1 {
                    copy_bytes(e, s, d, count);
                    continue;
                }
                e.for_each(0, count as i64, |e, j| {
                    let sa = e.index(s, j, sx as i64);
                    let v =
                        e.b.ins()
                            .load(cranelift_codegen::ir::types::I8, flags(), sa, 0);
                    let da = e.add(d, j);
                    e.b.ins().store(flags(), v, da, 0);
                });
            }
        });
    });
}

/// Copies `n` bytes (known at compile time) from `src` to `dst` (not overlapping): 16- or
/// 8-byte chunks, the last one ending exactly at `n` (it may rewrite bytes already
/// copied, with the same values).
fn copy_bytes(e: &mut Emitter, src: Value, dst: Value, n: usize) {
    let chunk = |e: &mut Emitter, ty, at: Value| {
        let s = e.add(src, at);
        let v = e.load(ty, s, 0);
        let d = e.add(dst, at);
        e.store(v, d, 0);
    };
    use cranelift_codegen::ir::types::{I8, I16};
    for (size, ty) in [(16usize, I8X16), (8, I64), (4, I32), (2, I16)] {
        if n >= size {
            let body_end = ((n - 1) / size * size) as i64;
            e.for_range(0, body_end, size as i64, &[], |e, i, _| {
                chunk(e, ty, i);
                Vec::new()
            });
            let last = e.c64((n - size) as i64);
            chunk(e, ty, last);
            return;
        }
    }
    if n == 1 {
        let at = e.c64(0);
        chunk(e, I8, at);
    }
}

const EVEN_ODD: [u8; 16] = [0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15];
/// The even then the odd bytes of the low 8 (the high 8 bytes are don't-cares).
const EVEN_ODD8: [u8; 16] = [0, 2, 4, 6, 1, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15];
const LO_BYTES: [u8; 16] = [0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23];
/// Bytes `[p0, p4, p8, p12, p1, p5, …]` back to `[p0, p1, p2, …]`.
const UNSTRIDE4: [u8; 16] = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];
const LO_WORDS: [u8; 16] = [0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23];
const HI_WORDS: [u8; 16] = [8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31];

/// Stage B: `panel[chunk][group]`, 8 positions from `q0 + 8 · chunk` for `nc` chunks:
/// interleaved i16 pairs (`Pairs`) or byte quads, flipped to unsigned (`Quads`).
fn stage_b(
    e: &mut Emitter,
    p: &ConvPlan,
    xe: IntElem,
    xg: Value,
    panel: Value,
    q0: Value,
    nc: usize,
) {
    // Chunk-major: a chunk's groups are contiguous, so stage C reads the panel in order.
    let chunk_bytes = (p.kp * CHUNK * 4) as i64;
    let emit_group = |e: &mut Emitter, srcs: [Option<Value>; 4], kp: Value| {
        let prow = e.index(panel, kp, (CHUNK * 4) as i64);
        let srcs = srcs.map(|s| s.map(|s| e.add(s, q0)));
        e.for_each(0, nc as i64, |e, c| {
            let off = e.muli(c, CHUNK as i64);
            let d = e.index(prow, c, chunk_bytes);
            let (lo, hi) = match p.dot {
                Dot::Pairs => {
                    let v = srcs[..2].iter().map(|s| match s {
                        Some(s) => {
                            let a = e.add(*s, off);
                            let v = load_widened(e, xe, a);
                            e.b.ins().bitcast(I8X16, le(), v)
                        }
                        None => zero8(e),
                    });
                    let v: Vec<Value> = v.collect();
                    (
                        shuffle(e, v[0], v[1], LO_WORDS),
                        shuffle(e, v[0], v[1], HI_WORDS),
                    )
                }
                Dot::Quads => {
                    let v: Vec<Value> = srcs
                        .iter()
                        .map(|s| match s {
                            Some(s) => {
                                let a = e.add(*s, off);
                                let v = e.load(I64, a, 0);
                                let v = e.b.ins().scalar_to_vector(I64X2, v);
                                e.b.ins().bitcast(I8X16, le(), v)
                            }
                            None => zero8(e),
                        })
                        .collect();
                    let ab = shuffle(e, v[0], v[1], LO_BYTES);
                    let cd = shuffle(e, v[2], v[3], LO_BYTES);
                    let mut lo = shuffle(e, ab, cd, LO_WORDS);
                    let mut hi = shuffle(e, ab, cd, HI_WORDS);
                    if xe == IntElem::I8 {
                        let k = e.b.ins().iconst(I8, -128);
                        let flip = e.b.ins().splat(I8X16, k);
                        lo = e.b.ins().bxor(lo, flip);
                        hi = e.b.ins().bxor(hi, flip);
                    }
                    (lo, hi)
                }
            };
            e.store(lo, d, 0);
            e.store(hi, d, 16);
        });
    };
    let n_t = p.taps.len() as i64;
    let w = p.width;
    e.for_each(0, (p.i_g / w) as i64, |e, m| {
        let c0 = e.index(xg, m, (w * p.chan_len) as i64);
        for (t, &off) in p.taps.iter().enumerate() {
            let kp = e.muli(m, n_t);
            let kp = e.addi(kp, t as i64);
            let mut srcs = [None; 4];
            for (j, s) in srcs.iter_mut().enumerate().take(w) {
                *s = Some(e.addi(c0, (j * p.chan_len + off) as i64));
            }
            emit_group(e, srcs, kp);
        }
    });
    let base = (p.i_g / w) * p.taps.len();
    for (i, grp) in p.tail.iter().enumerate() {
        let kp = e.c64((base + i) as i64);
        let srcs = grp.map(|s| s.map(|s| e.addi(xg, s as i64)));
        emit_group(e, srcs, kp);
    }
}

/// An all-zero byte vector.
fn zero8(e: &mut Emitter) -> Value {
    let z = e.b.ins().iconst(I8, 0);
    e.b.ins().splat(I8X16, z)
}

/// Stage C: for every block of output channels of group `g`, `nc` chunks of 8 positions
/// from `q0`: the pair products summed over the panel, then the epilogue, stored to
/// `out[o][q]` (`plane` elements per channel).
#[allow(clippy::too_many_arguments)]
fn stage_c(
    e: &mut Emitter,
    layer: &QLinear,
    p: &ConvPlan,
    data: &LinearData,
    g: Value,
    panel: Value,
    q0: Value,
    nc: usize,
    (out, plane, ye): (Value, usize, IntElem),
) {
    let full = p.o_per_g / OB;
    let rem = p.o_per_g % OB;
    if p.const_ep.is_some() {
        // One group: every block's first channel is a constant.
        for blk in 0..p.o_per_g.div_ceil(OB) {
            let o = e.c64((blk * OB) as i64);
            let ob = if blk < full { OB } else { rem };
            let at = (o, Some(blk * OB));
            block(e, layer, p, data, at, ob, panel, q0, nc, (out, plane, ye));
        }
        return;
    }
    let o_base = e.muli(g, p.o_per_g as i64);
    e.for_each(0, full as i64, |e, blk| {
        let o = e.index(o_base, blk, OB as i64);
        block(
            e,
            layer,
            p,
            data,
            (o, None),
            OB,
            panel,
            q0,
            nc,
            (out, plane, ye),
        );
    });
    if rem > 0 {
        let o = e.addi(o_base, (full * OB) as i64);
        block(
            e,
            layer,
            p,
            data,
            (o, None),
            rem,
            panel,
            q0,
            nc,
            (out, plane, ye),
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn block(
    e: &mut Emitter,
    layer: &QLinear,
    p: &ConvPlan,
    data: &LinearData,
    (o, o_const): (Value, Option<usize>),
    ob: usize,
    panel: Value,
    q0: Value,
    nc: usize,
    (out, plane, ye): (Value, usize, IntElem),
) {
    let ez = ye.size_bytes() as i64;
    let group_bytes = match p.dot {
        Dot::Pairs => PAIR_BYTES,
        Dot::Quads => QUAD_BYTES,
    };
    let wbase = e.host(p.wpairs);
    let wrows: Vec<Value> = (0..ob)
        .map(|j| {
            let oj = e.addi(o, j as i64);
            e.index(wbase, oj, (p.kp * group_bytes) as i64)
        })
        .collect();
    let dsts: Vec<Value> = (0..ob)
        .map(|j| {
            let oj = e.addi(o, j as i64);
            let d = e.index(out, oj, plane as i64 * ez);
            e.index(d, q0, ez)
        })
        .collect();
    // Per-channel epilogue parameters, loaded once per block.
    let eps: Vec<Ep> = (0..ob)
        .map(|j| match (&p.const_ep, o_const) {
            (Some(t), Some(o0)) => {
                let [bias, lsh, add, rsh] = t[o0 + j];
                let no_lsh = p.vtab.is_some_and(|(_, no_lsh)| no_lsh);
                Ep::Const {
                    bias,
                    lsh: (!no_lsh).then_some((lsh, add)),
                    rsh,
                }
            }
            _ => {
                let oj = e.addi(o, j as i64);
                Ep::load(e, p, data, oj)
            }
        })
        .collect();
    let (lo, hi) = (layer.lo, layer.hi);
    let vlo = splat32(e, lo);
    let vhi = splat32(e, hi);
    let row_bytes = (CHUNK * 4) as i64;
    e.for_each(0, nc as i64, |e, c| {
        let zero = splat32(e, 0);
        let pc = e.index(panel, c, (p.kp * CHUNK * 4) as i64);
        // Loop-carried pointers (panel row, first channel's weight pair); the other
        // channels' weights are at constant offsets. (Unrolling this loop by 2 or 4
        // measured 5–8 % slower on MobileNetV2: register pressure with 12 accumulators.)
        let mut init = vec![pc, wrows[0]];
        for j in 0..ob {
            let v = if p.acc_init.is_some() {
                let oj = e.addi(o, j as i64);
                acc_start(e, p, oj)
            } else {
                zero
            };
            init.extend([v, v]);
        }
        let wstride = (p.kp * group_bytes) as i32;
        let step = |e: &mut Emitter, pr: Value, pw: Value, acc: &mut [Value]| match p.dot {
            Dot::Pairs => {
                let x0 = e.load(I16X8, pr, 0);
                let x1 = e.load(I16X8, pr, 16);
                for j in 0..ob {
                    let wv = weight_pair(e, pw, j as i32 * wstride);
                    let m0 = madd(e, x0, wv);
                    let m1 = madd(e, x1, wv);
                    acc[2 * j] = e.b.ins().iadd(acc[2 * j], m0);
                    acc[2 * j + 1] = e.b.ins().iadd(acc[2 * j + 1], m1);
                }
            }
            Dot::Quads => {
                let x0 = e.load(I8X16, pr, 0);
                let x1 = e.load(I8X16, pr, 16);
                for j in 0..ob {
                    let wv = weight_quad(e, pw, j as i32 * wstride);
                    acc[2 * j] = dot_quads(e, acc[2 * j], x0, wv);
                    acc[2 * j + 1] = dot_quads(e, acc[2 * j + 1], x1, wv);
                }
            }
        };
        let carried = e.for_range(0, p.kp as i64, 1, &init, |e, _, cur| {
            let (pr, pw) = (cur[0], cur[1]);
            let mut acc = cur[2..].to_vec();
            step(e, pr, pw, &mut acc);
            let mut next = vec![e.addi(pr, row_bytes), e.addi(pw, group_bytes as i64)];
            next.extend(acc);
            next
        });
        let accs = &carried[2..];
        for (j, ep) in eps.iter().enumerate() {
            let d = e.index(dsts[j], c, CHUNK as i64 * ez);
            ep.store(
                e,
                [accs[2 * j], accs[2 * j + 1]],
                (lo, hi),
                (vlo, vhi),
                ye,
                d,
            );
        }
    });
}

/// One output channel's epilogue parameters.
enum Ep {
    /// i32 lanes: `((acc + bias) << lsh + add) >> rsh` (see the module docs), or
    /// `(acc + bias) >> rsh` when no channel of the layer shifts left (`lsh: None`, the
    /// rounding term folded into `bias`).
    Vector {
        bias: Value,
        lsh: Option<(Value, Value)>,
        rsh: Value,
    },
    /// `Vector` with the values known at compile time (immediates).
    Const {
        bias: i32,
        lsh: Option<(i32, i32)>,
        rsh: i32,
    },
    /// Lane by lane in i64.
    Scalar(Epilogue),
}

impl Ep {
    fn load(e: &mut Emitter, p: &ConvPlan, data: &LinearData, o: Value) -> Ep {
        match p.vtab {
            Some((t, no_lsh)) => {
                let tb = e.host(t);
                let a = e.index(tb, o, 16);
                let bias = e.load_const(I32, a, 0);
                let bias = e.b.ins().splat(I32X4, bias);
                let lsh = if no_lsh {
                    None
                } else {
                    let lsh = e.load_const(I32, a, 4);
                    let add = e.load_const(I32, a, 8);
                    Some((lsh, e.b.ins().splat(I32X4, add)))
                };
                let rsh = e.load_const(I32, a, 12);
                Ep::Vector { bias, lsh, rsh }
            }
            None => {
                let tb = e.host(data.table);
                Ep::Scalar(Epilogue::load(e, tb, o))
            }
        }
    }

    /// The vector epilogue of 4 accumulators (bias not included): rescaled and clamped
    /// i32 lanes, except the clamp at `ye`'s own bounds, which the narrowing that follows
    /// does for free (it saturates).
    fn rescale_lanes(
        &self,
        e: &mut Emitter,
        acc: Value,
        (lo, hi): (i32, i32),
        (vlo, vhi): (Value, Value),
        ye: IntElem,
    ) -> Value {
        let (t_lo, t_hi) = ye.range();
        let mut v = match self {
            Ep::Vector { bias, lsh, rsh } => {
                let mut v = e.b.ins().iadd(acc, *bias);
                if let Some((lsh, add)) = lsh {
                    v = e.b.ins().ishl(v, *lsh);
                    v = e.b.ins().iadd(v, *add);
                }
                e.b.ins().sshr(v, *rsh)
            }
            Ep::Const { bias, lsh, rsh } => {
                let b = splat32(e, *bias);
                let mut v = e.b.ins().iadd(acc, b);
                if let Some((lsh, add)) = *lsh {
                    v = e.b.ins().ishl_imm_u(v, lsh as i64);
                    let a = splat32(e, add);
                    v = e.b.ins().iadd(v, a);
                }
                e.b.ins().sshr_imm_u(v, *rsh as i64)
            }
            Ep::Scalar(_) => unreachable!("rescale_lanes needs a vector epilogue"),
        };
        if lo != t_lo {
            v = e.b.ins().smax(v, vlo);
        }
        if hi != t_hi {
            v = e.b.ins().smin(v, vhi);
        }
        v
    }

    /// Finishes 8 accumulators (two i32x4, bias not included) and stores them at `d`.
    fn store(
        &self,
        e: &mut Emitter,
        accs: [Value; 2],
        (lo, hi): (i32, i32),
        (vlo, vhi): (Value, Value),
        ye: IntElem,
        d: Value,
    ) {
        let ez = ye.size_bytes() as i64;
        match self {
            Ep::Vector { .. } | Ep::Const { .. } => {
                let v = accs.map(|acc| self.rescale_lanes(e, acc, (lo, hi), (vlo, vhi), ye));
                store8(e, ye, v[0], v[1], d);
            }
            Ep::Scalar(ep) => {
                for (h, acc) in accs.into_iter().enumerate() {
                    for lane in 0..4u8 {
                        let a = e.b.ins().extractlane(acc, lane);
                        let a = e.b.ins().sextend(I64, a);
                        let a = e.b.ins().iadd(a, ep.bias);
                        let v = ep.finish(e, a, lo, hi);
                        let at = e.addi(d, (h as i64 * 4 + lane as i64) * ez);
                        e.store_elem(ye, v, at);
                    }
                }
            }
        }
    }
}

/// Stores 8 clamped i32 lanes (`v0`, `v1`) as 8 elements of `ye` at `d`.
fn store8(e: &mut Emitter, ye: IntElem, v0: Value, v1: Value, d: Value) {
    match ye {
        IntElem::I32 => {
            e.store(v0, d, 0);
            e.store(v1, d, 16);
        }
        IntElem::I8 | IntElem::U8 => {
            let n16 = e.b.ins().snarrow(v0, v1);
            let n8 = if ye == IntElem::U8 {
                e.b.ins().unarrow(n16, n16)
            } else {
                e.b.ins().snarrow(n16, n16)
            };
            let q = e.b.ins().bitcast(I64X2, le(), n8);
            let q = e.b.ins().extractlane(q, 0);
            e.store(q, d, 0);
        }
    }
}

/// Dense layers: dot products over `K`, 4 rows sharing each input load. Pairs: the
/// input widened to i16 once, `pmaddwd` against weights widened as they are loaded.
/// Quads: the input copied as u8 (an i8 input flipped to `x + 128`, each row's sum then
/// corrected by `−128 · Σ w`), 16 products per `vpdpbusd`.
fn dense(
    e: &mut Emitter,
    layer: &QLinear,
    p: &DensePlan,
    data: &LinearData,
    x: &Operand,
    y: &Operand,
    scratch: usize,
) {
    let [o_n, i_g, ..] = layer.weights.shape();
    let (xe, ye) = (x.ty.elem, y.ty.elem);
    let xb = e.arena(x.offset);
    let xw = e.arena(scratch);
    let quads = p.quads.is_some();
    let (x_bytes, step) = if quads { (1, 16) } else { (2, CHUNK) };
    zero_fill(e, xw, round_up(x_bytes * p.k8, 16));
    e.for_each(0, i_g as i64, |e, k| {
        let a = e.index(xb, k, xe.size_bytes() as i64);
        let mut v = e.load_elem(xe, a);
        let d = e.index(xw, k, x_bytes as i64);
        if quads {
            if xe == IntElem::I8 {
                v = e.addi(v, 128);
            }
            e.b.ins().istore8(flags(), v, d, 0);
        } else {
            e.b.ins().istore16(flags(), v, d, 0);
        }
    });
    let wb = e.host(p.w8);
    let tb = e.host(data.table);
    let yb = e.arena(y.offset);
    let k8 = p.k8 as i64;
    let corrections = p.quads.flatten();
    // Pointers are loop-carried and the rows are at constant offsets.
    let rows = |e: &mut Emitter, o: Value, n: usize| {
        let wrow = e.index(wb, o, k8);
        let zero = splat32(e, 0);
        let mut init = vec![xw, wrow];
        init.extend(std::iter::repeat_n(zero, n));
        let acc = e.for_range(0, k8, step as i64, &init, |e, _, cur| {
            let (xp, wp) = (cur[0], cur[1]);
            let x_step = (x_bytes * step) as i64;
            let mut next = vec![e.addi(xp, x_step), e.addi(wp, step as i64)];
            let xv = e.load(if quads { I8X16 } else { I16X8 }, xp, 0);
            for j in 0..n {
                let at = (j as i64 * k8) as i32;
                next.push(if quads {
                    let wv = e.load_const(I8X16, wp, at);
                    dot_quads(e, cur[2 + j], xv, wv)
                } else {
                    let wv = e.b.ins().sload8x8(flags(), wp, at);
                    let m = madd(e, xv, wv);
                    e.b.ins().iadd(cur[2 + j], m)
                });
            }
            next
        });
        for (j, &v) in acc[2..].iter().enumerate() {
            let oj = e.addi(o, j as i64);
            let mut s = e.b.ins().extractlane(v, 0);
            for lane in 1..4u8 {
                let l = e.b.ins().extractlane(v, lane);
                s = e.b.ins().iadd(s, l);
            }
            if let Some(t) = corrections {
                let t = e.host(t);
                let a = e.index(t, oj, 4);
                let c = e.load_const(I32, a, 0);
                s = e.b.ins().iadd(s, c);
            }
            let s = e.b.ins().sextend(I64, s);
            let ep = Epilogue::load(e, tb, oj);
            let s = e.b.ins().iadd(s, ep.bias);
            let v = ep.finish(e, s, layer.lo, layer.hi);
            let d = e.index(yb, oj, ye.size_bytes() as i64);
            e.store_elem(ye, v, d);
        }
    };
    let full = o_n / 4;
    e.for_each(0, full as i64, |e, b| {
        let o = e.muli(b, 4);
        rows(e, o, 4);
    });
    if o_n % 4 > 0 {
        let o = e.c64((full * 4) as i64);
        rows(e, o, o_n % 4);
    }
}

/// Whether every intermediate of `Add` on 8-bit operands fits i32 lanes.
pub(crate) fn add_fits_i32(q: &QAdd) -> bool {
    (0..=16).contains(&q.align_a)
        && (0..=16).contains(&q.align_b)
        && (-6..=30).contains(&q.shift)
        && {
            // |a << align_a| + |b << align_b| ≤ 2 · 255 · 2^16 < 2^25; a left shift by up
            // to 6 stays below 2^31.
            let m = (255i64 << q.align_a) + (255i64 << q.align_b);
            let m = if q.shift < 0 {
                m << -q.shift
            } else {
                m + (1i64 << 30)
            };
            m < i32::MAX as i64
        }
}

/// Vector `Add` over the first elements in chunks of 8; returns how many it handled.
pub(crate) fn add_vector(
    e: &mut Emitter,
    (ab, ae): (Value, IntElem),
    (bb, be): (Value, IntElem),
    (yb, ye): (Value, IntElem),
    q: &QAdd,
    n: i64,
) -> i64 {
    let done = n / CHUNK as i64 * CHUNK as i64;
    let vlo = splat32(e, q.lo);
    let vhi = splat32(e, q.hi);
    let (lsh, add, rsh) = if q.shift > 0 {
        (0, 1i32 << (q.shift - 1), q.shift)
    } else {
        (-q.shift, 0, 0)
    };
    let vadd = splat32(e, add);
    e.for_range(0, done, CHUNK as i64, &[], |e, i, _| {
        let pa = e.add(ab, i);
        let pb = e.add(bb, i);
        let va = load_widened(e, ae, pa);
        let vb = load_widened(e, be, pb);
        let halves: Vec<Value> = [e.b.ins().swiden_low(va), e.b.ins().swiden_high(va)]
            .into_iter()
            .zip([e.b.ins().swiden_low(vb), e.b.ins().swiden_high(vb)])
            .map(|(a, b)| {
                let a = e.b.ins().ishl_imm_u(a, q.align_a as i64);
                let b = e.b.ins().ishl_imm_u(b, q.align_b as i64);
                let s = e.b.ins().iadd(a, b);
                let s = if lsh > 0 {
                    e.b.ins().ishl_imm_u(s, lsh as i64)
                } else {
                    s
                };
                let s = e.b.ins().iadd(s, vadd);
                let s = if rsh > 0 {
                    e.b.ins().sshr_imm_u(s, rsh as i64)
                } else {
                    s
                };
                let s = e.b.ins().smax(s, vlo);
                e.b.ins().smin(s, vhi)
            })
            .collect();
        let d = e.add(yb, i);
        store8(e, ye, halves[0], halves[1], d);
        Vec::new()
    });
    done
}

/// Global sum-pool (the window is the whole plane, as in `GlobalAveragePool`) of 8-bit
/// values: each plane summed 16 bytes at a time (pairs, then quads, widened by
/// `pmaddubsw` / `pmaddwd` against ones: Cranelift's extending pairwise adds), the last
/// partial vector masked to the plane. `false` if the pool is not of that kind.
pub(crate) fn global_sum_pool(
    e: &mut Emitter,
    p: &lutq_ir::Pool,
    (shift, lo, hi): (i32, i32, i32),
    x: &Operand,
    y: &Operand,
) -> bool {
    let (xs, ys) = (&x.ty.shape, &y.ty.shape);
    let (h, w) = (xs[2], xs[3]);
    let global =
        ys[2] == 1 && ys[3] == 1 && p.kernel == [h, w] && p.pads == [0; 4] && p.dilations == [1, 1];
    let xe = x.ty.elem;
    // Lanes of i32 add at most 4 · 255 per vector: no overflow below 2^21 elements.
    let n = h * w;
    if !global || !matches!(xe, IntElem::I8 | IntElem::U8) || n == 0 || n >= 1 << 21 {
        return false;
    }
    let ye = y.ty.elem;
    let xb = e.arena(x.offset);
    let yb = e.arena(y.offset);
    let (full, rest) = (n / 16, n % 16);
    let mask: Vec<u8> = (0..16).map(|i| if i < rest { 0xff } else { 0 }).collect();
    let mask = {
        let imm = e.b.func.dfg.constants.insert(ConstantData::from(&mask[..]));
        e.b.ins().vconst(I8X16, imm)
    };
    let widen = |e: &mut Emitter, v: Value| {
        let (l, h) = match xe {
            IntElem::U8 => (e.b.ins().uwiden_low(v), e.b.ins().uwiden_high(v)),
            _ => (e.b.ins().swiden_low(v), e.b.ins().swiden_high(v)),
        };
        let pairs = e.b.ins().iadd_pairwise(l, h);
        let (l, h) = (e.b.ins().swiden_low(pairs), e.b.ins().swiden_high(pairs));
        e.b.ins().iadd_pairwise(l, h)
    };
    e.for_each(0, (xs[0] * xs[1]) as i64, |e, plane| {
        let xp = e.index(xb, plane, n as i64);
        let zero = splat32(e, 0);
        let acc = e.for_range(0, full as i64, 1, &[xp, zero], |e, _, cur| {
            let v = e.load(I8X16, cur[0], 0);
            let s = widen(e, v);
            vec![e.addi(cur[0], 16), e.b.ins().iadd(cur[1], s)]
        });
        let mut acc = acc[1];
        if rest > 0 {
            let last = e.addi(xp, (full * 16) as i64);
            let v = e.load(I8X16, last, 0);
            let v = e.b.ins().band(v, mask);
            let s = widen(e, v);
            acc = e.b.ins().iadd(acc, s);
        }
        let mut sum = e.b.ins().extractlane(acc, 0);
        for lane in 1..4u8 {
            let l = e.b.ins().extractlane(acc, lane);
            sum = e.b.ins().iadd(sum, l);
        }
        let sum = e.b.ins().sextend(I64, sum);
        let v = e.rshift_round(sum, shift);
        let v = e.clamp(v, lo, hi);
        let d = e.index(yb, plane, ye.size_bytes() as i64);
        e.store_elem(ye, v, d);
    });
    true
}
