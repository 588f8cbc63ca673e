//! Linear layers (convolution and dense): the i32 accumulators, then the per-channel
//! rescale and clamp.
//!
//! The accumulation is split from the epilogue so that the quantizer can look at the
//! accumulators (bias correction); executing a `Linear` node is exactly
//! `finish_linear(linear_accumulators(..))`.
//!
//! Convolutions take one of two paths, chosen by size only (both compute the same sums;
//! a unit test holds them equal on random geometries):
//! * panel (fan-in `K = I/g·kH·kW ≥ 16` and at least 4 output channels per group:
//!   pointwise and full convolutions): im2col in blocks of `T` output pixels, a panel
//!   `[K][T]` with zeros for taps in the padding, then blocks of `OB` output channels
//!   accumulate `w[o][k] · panel[k][..]` in registers. 8-bit inputs go in u8 quads of
//!   taps (AVX-512 VNNI: four multiply-adds per instruction and lane) where the CPU has
//!   VNNI, else in i16 pairs (`vpmaddwd`);
//! * direct (depthwise and other small kernels): each input channel is copied
//!   zero-padded and split by stride phase, so that every tap of an output channel is
//!   one long contiguous loop over a "wide" output plane (see `conv_direct`).
//!
//! Zero padding is exact either way (a padded tap adds `w · 0`); taps whose weight is
//! zero are skipped in the direct path (exact as well). The hot loops are compiled for
//! AVX-512 and AVX2 as well and picked at run time (`simd::multiversion`); integer
//! arithmetic is the same on every instruction set.
//!
//! Accumulation is in i32 with wrapping arithmetic: [`IntGraph::validate`] proves
//! (`accumulator_bound`) that no partial sum of a valid layer leaves i32, in any order,
//! so the wrapping never happens there; for a layer that fails that proof the results are
//! the two's-complement wrap-around and not meaningful.
//!
//! [`IntGraph::validate`]: lutq_ir::int::IntGraph

use lutq_ir::int::{ConvGeom, IntElem, QLinear, QType, Rescale, Rounding};

use super::IntData;

use crate::simd::multiversion;

/// The accumulators of a linear layer, bias included, before the rescale:
/// `acc[n][o][y][x] = bias[o] + Σ_{ic,ky,kx} x[..] · w[o][ic][ky][kx]` for a convolution
/// (NCHW, `out_shape` = `[N, O, OH, OW]`), `acc[n][o] = bias[o] + Σ_k x[n][k] · w[o][k]`
/// for a dense layer (`[N, K]` → `[N, O]`).
///
/// `decoded_weights` are the layer's weights as int8, `[O][K]` row-major
/// (`layer.weights.decode()`), `x` holds `in_shape`'s elements.
///
/// # Panics
///
/// If the shapes do not fit the layer (a graph that passed [`IntGraph::validate`] always
/// fits; `exec_node` checks before calling).
///
/// [`IntGraph::validate`]: lutq_ir::int::IntGraph::validate
pub fn linear_accumulators(
    layer: &QLinear,
    decoded_weights: &[i8],
    x: &IntData,
    in_shape: &[usize],
    out_shape: &[usize],
) -> Vec<i32> {
    let [_, i_g, kh, kw] = layer.weights.shape();
    let weights = LinearWeights::new(decoded_weights, i_g * kh * kw);
    linear_accumulators_prepared(layer, &weights, x, in_shape, out_shape)
}

/// A linear layer's decoded int8 weights (`[O][K]`) in the forms the kernels multiply:
/// widened to i32, and as i16 pairs of consecutive taps of a row packed into one i32
/// (the i16-pair panel path). Callers that run one layer on many inputs prepare them
/// once ([`linear_accumulators_prepared`]).
#[derive(Clone, Debug)]
pub struct LinearWeights {
    wide: Vec<i32>,
    pairs: Vec<i32>,
    /// Four consecutive taps of a row as the bytes of one i32, tap `4q` lowest (the
    /// u8-quad panel path; a row's last quad padded with zero weights).
    quads: Vec<i32>,
    /// `Σ_k w[o][k]` per row: the quad path's correction for signed inputs.
    row_sums: Vec<i32>,
}

impl LinearWeights {
    /// From the decoded weights, `row_len` (`K`) per output channel (a partial last row
    /// is ignored by the pairs, and makes the layer's size check fail).
    pub fn new(decoded_weights: &[i8], row_len: usize) -> LinearWeights {
        let pair =
            |a: i8, b: i8| (a as i16 as u16 as u32 | ((b as i16 as u16 as u32) << 16)) as i32;
        let pairs = decoded_weights
            .chunks_exact(row_len.max(1))
            .flat_map(|row| {
                row.chunks(2)
                    .map(|c| pair(c[0], c.get(1).copied().unwrap_or(0)))
            })
            .collect();
        let rows = decoded_weights.chunks_exact(row_len.max(1));
        let quads = rows
            .clone()
            .flat_map(|row| {
                row.chunks(4).map(|c| {
                    let byte = |i: usize| c.get(i).map_or(0, |&w| w as u8 as u32) << (8 * i);
                    (byte(0) | byte(1) | byte(2) | byte(3)) as i32
                })
            })
            .collect();
        // Wrapping: the correction is taken modulo 2^32 like the accumulators.
        let row_sums = rows
            .map(|row| row.iter().fold(0i32, |s, &w| s.wrapping_add(w as i32)))
            .collect();
        LinearWeights {
            wide: decoded_weights.iter().map(|&w| w as i32).collect(),
            pairs,
            quads,
            row_sums,
        }
    }

    /// A layer's weights, decoded and prepared.
    pub fn of(layer: &QLinear) -> LinearWeights {
        LinearWeights::new(&layer.weights.decode(), layer.weights.row_len())
    }

    /// Number of weights.
    pub fn len(&self) -> usize {
        self.wide.len()
    }

    pub fn is_empty(&self) -> bool {
        self.wide.is_empty()
    }
}

/// [`linear_accumulators`] with the decoded weights already prepared
/// ([`LinearWeights`]).
///
/// # Panics
///
/// As [`linear_accumulators`].
pub fn linear_accumulators_prepared(
    layer: &QLinear,
    prepared: &LinearWeights,
    x: &IntData,
    in_shape: &[usize],
    out_shape: &[usize],
) -> Vec<i32> {
    let [o_n, i_g, kh, kw] = layer.weights.shape();
    let k_n = i_g * kh * kw;
    let weights = &prepared.wide;
    assert_eq!(
        weights.len(),
        o_n * k_n,
        "decoded weights do not fit the layer"
    );
    assert_eq!(
        prepared.pairs.len(),
        o_n * k_n.div_ceil(2),
        "weight pairs do not fit the layer"
    );
    assert!(
        prepared.quads.len() == o_n * k_n.div_ceil(4) && prepared.row_sums.len() == o_n,
        "weight quads do not fit the layer"
    );
    assert_eq!(layer.bias.len(), o_n, "one bias per output channel");
    assert_eq!(
        x.len(),
        in_shape.iter().product::<usize>(),
        "input does not fit its shape"
    );
    match &layer.conv {
        None => {
            let xs = x.to_i32();
            assert!(
                in_shape.len() == 2 && in_shape[1] == k_n && out_shape == [in_shape[0], o_n],
                "dense shapes {in_shape:?} -> {out_shape:?} do not fit weights {:?}",
                layer.weights.shape()
            );
            let mut acc = Vec::with_capacity(in_shape[0] * o_n);
            for n in 0..in_shape[0] {
                let xn = &xs[n * k_n..(n + 1) * k_n];
                for o in 0..o_n {
                    let w = &weights[o * k_n..(o + 1) * k_n];
                    acc.push(layer.bias[o].wrapping_add(dot(w, xn)));
                }
            }
            acc
        }
        Some(geom) => {
            let job = ConvJob::new(geom, layer.weights.shape(), in_shape, out_shape);
            let mut acc = vec![0i32; out_shape.iter().product()];
            // 8-bit inputs (always, in a valid graph) times int8 weights: the panel path
            // may multiply in i16 pairs. The kernels read the stored elements (no widened
            // copy of the input).
            match x {
                IntData::U8(v) => conv(&job, prepared, &layer.bias, v, true, &mut acc),
                IntData::I8(v) => conv(&job, prepared, &layer.bias, v, true, &mut acc),
                IntData::I32(v) => conv(&job, prepared, &layer.bias, v, false, &mut acc),
            }
            acc
        }
    }
}

/// The layer's epilogue: `clamp(rescale[o](acc), lo, hi)` for every accumulator, with
/// the output channel `o` = dimension 1 of `out.shape` (the plane size is the product of
/// the dimensions after it), stored as `out.elem`.
pub fn finish_linear(layer: &QLinear, acc: &[i32], out: &QType, rounding: Rounding) -> IntData {
    assert_eq!(
        acc.len(),
        out.num_elements(),
        "accumulators do not fit the output type"
    );
    let channels = out.shape.get(1).copied().unwrap_or(1).max(1);
    let plane: usize = out.shape.iter().skip(2).product();
    if plane == 0 {
        return IntData::zeros(out.elem, acc.len());
    }
    // Stored as the output element type at once, saturated to its range as
    // `IntData::from_i32` stores.
    let planes = |store: &mut dyn FnMut(&[i32])| {
        rescale_planes(layer, acc, plane, channels, rounding, store)
    };
    match out.elem {
        IntElem::I8 => {
            let mut v = Vec::with_capacity(acc.len());
            planes(&mut |q| v.extend(q.iter().map(|&q| q.clamp(-128, 127) as i8)));
            IntData::I8(v)
        }
        IntElem::U8 => {
            let mut v = Vec::with_capacity(acc.len());
            planes(&mut |q| v.extend(q.iter().map(|&q| q.clamp(0, 255) as u8)));
            IntData::U8(v)
        }
        IntElem::I32 => {
            let mut v = Vec::with_capacity(acc.len());
            planes(&mut |q| v.extend_from_slice(q));
            IntData::I32(v)
        }
    }
}

/// Rescales and clamps `acc` plane by plane (channel `i % channels` for plane `i`) into
/// a scratch plane that stays in cache, handing each plane's values to `store` in order.
fn rescale_planes(
    layer: &QLinear,
    acc: &[i32],
    plane: usize,
    channels: usize,
    rounding: Rounding,
    store: &mut dyn FnMut(&[i32]),
) {
    let mut scratch = vec![0i32; plane.min(acc.len())];
    for (i, block) in acc.chunks(plane).enumerate() {
        let dst = &mut scratch[..block.len()];
        rescale_block(
            layer.rescale[i % channels],
            rounding,
            layer.lo,
            layer.hi,
            block,
            dst,
        );
        store(dst);
    }
}

multiversion! {
    /// `dst[i] = clamp(rescale(acc[i]), lo, hi)`.
    fn rescale_block(
        rescale: Rescale,
        rounding: Rounding,
        lo: i32,
        hi: i32,
        acc: &[i32],
        dst: &mut [i32],
    ) {
        match rescale {
            Rescale::Shift(s) if s > 0 && s < 63 && rounding == Rounding::HalfUp => {
                // `rshift_round`, specialised so that it vectorises: i64 cannot overflow.
                let half = 1i64 << (s - 1);
                for (d, &a) in dst.iter_mut().zip(acc) {
                    *d = ((a as i64).wrapping_add(half) >> s).clamp(lo as i64, hi as i64) as i32;
                }
            }
            r => {
                for (d, &a) in dst.iter_mut().zip(acc) {
                    *d = lutq_ir::int::clamp(r.apply(a as i64, rounding), lo, hi);
                }
            }
        }
    }
}

/// `Σ w[k] · x[k]`, wrapping (see the module docs).
fn dot(w: &[i32], x: &[i32]) -> i32 {
    let mut s = 0;
    dot_mv(w, x, &mut s);
    s
}

multiversion! {
    fn dot_mv(w: &[i32], x: &[i32], out: &mut i32) {
        // Sixteen independent partial sums so that the loop vectorises without a
        // reduction dependency chain; wrapping addition is associative, so the result
        // does not depend on the order.
        let mut parts = [0i32; 16];
        let wc = w.chunks_exact(16);
        let xc = x.chunks_exact(16);
        let (wr, xr) = (wc.remainder(), xc.remainder());
        for (a, b) in wc.zip(xc) {
            for j in 0..16 {
                parts[j] = parts[j].wrapping_add(a[j].wrapping_mul(b[j]));
            }
        }
        let mut s = parts.iter().fold(0i32, |s, &p| s.wrapping_add(p));
        for (a, b) in wr.iter().zip(xr) {
            s = s.wrapping_add(a.wrapping_mul(*b));
        }
        *out = s;
    }
}

/// An element type the convolution kernels read their input as: the stored 8-bit
/// values, or i32.
trait Elem: Copy + Default {
    fn widen(self) -> i32;
    /// Whether the u8-quad panel path can read this type (8-bit values).
    const BYTES: bool;
    /// What the quad path adds to every value to make it a u8 (128 for i8).
    const BYTE_OFFSET: i32;
    /// The value plus [`Self::BYTE_OFFSET`] (8-bit types only).
    fn offset_byte(self) -> u8;
}

impl Elem for u8 {
    #[inline(always)]
    fn widen(self) -> i32 {
        self as i32
    }
    const BYTES: bool = true;
    const BYTE_OFFSET: i32 = 0;
    #[inline(always)]
    fn offset_byte(self) -> u8 {
        self
    }
}

impl Elem for i8 {
    #[inline(always)]
    fn widen(self) -> i32 {
        self as i32
    }
    const BYTES: bool = true;
    const BYTE_OFFSET: i32 = 128;
    #[inline(always)]
    fn offset_byte(self) -> u8 {
        (self as u8) ^ 0x80
    }
}

impl Elem for i32 {
    #[inline(always)]
    fn widen(self) -> i32 {
        self
    }
    const BYTES: bool = false;
    const BYTE_OFFSET: i32 = 0;
    fn offset_byte(self) -> u8 {
        unreachable!("i32 inputs do not take the quad path")
    }
}

/// A convolution's sizes, resolved once.
struct ConvJob {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o_n: usize,
    i_g: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    group: usize,
    strides: [usize; 2],
    /// top, left.
    pads: [usize; 2],
    dilations: [usize; 2],
}

impl ConvJob {
    /// A 1×1 kernel with unit strides and no padding: tap `k` of output pixel `p` is
    /// input channel `k` at pixel `p`, so panels copy rows instead of gathering.
    fn plain_pointwise(&self) -> bool {
        let ([sy, sx], [pt, pl]) = (self.strides, self.pads);
        self.kh == 1
            && self.kw == 1
            && sy == 1
            && sx == 1
            && pt == 0
            && pl == 0
            && self.oh == self.h
            && self.ow == self.w
    }
}

impl ConvJob {
    fn new(g: &ConvGeom, wshape: [usize; 4], x: &[usize], out: &[usize]) -> Self {
        let [o_n, i_g, kh, kw] = wshape;
        assert!(
            x.len() == 4
                && out.len() == 4
                && g.group > 0
                && x[1] == i_g * g.group
                && o_n % g.group == 0
                && out[0] == x[0]
                && out[1] == o_n
                && g.strides.iter().all(|&s| s > 0)
                && g.dilations.iter().all(|&d| d > 0),
            "conv shapes {x:?} -> {out:?} do not fit weights {wshape:?} and {g:?}"
        );
        // Every tap of every output position must address the padded input.
        for (d, k) in [(0usize, kh), (1, kw)] {
            let span = g.dilations[d] * (k.max(1) - 1) + 1;
            if out[2 + d] > 0 && k > 0 {
                assert!(
                    (out[2 + d] - 1) * g.strides[d] + span <= x[2 + d] + g.pads[d] + g.pads[d + 2],
                    "conv output {out:?} is larger than the padded input {x:?} allows"
                );
            }
        }
        ConvJob {
            n: x[0],
            c: x[1],
            h: x[2],
            w: x[3],
            o_n,
            i_g,
            kh,
            kw,
            oh: out[2],
            ow: out[3],
            group: g.group,
            strides: g.strides,
            pads: [g.pads[0], g.pads[1]],
            dilations: g.dilations,
        }
    }
}

/// `narrow`: every input value fits i16 (then the i16-pair panel path is exact: the
/// weights are int8).
fn conv<X: Elem>(
    job: &ConvJob,
    weights: &LinearWeights,
    bias: &[i32],
    x: &[X],
    narrow: bool,
    acc: &mut [i32],
) {
    let o_per_g = job.o_n / job.group;
    let k_n = job.i_g * job.kh * job.kw;
    if job.oh * job.ow == 0 {
        return;
    }
    if k_n >= 16 && o_per_g >= 4 && narrow && X::BYTES && has_vnni() {
        conv_panels8(job, weights, bias, x, acc);
    } else if k_n >= 16 && o_per_g >= 4 && narrow {
        conv_panels16(job, &weights.pairs, bias, x, acc);
    } else if k_n >= 16 && o_per_g >= 4 {
        conv_panels(job, &weights.wide, bias, x, acc);
    } else {
        conv_direct(job, &weights.wide, bias, x, acc);
    }
}

// ------------------------------------------------------------------ panel path

/// Output pixels per panel.
const T: usize = 32;
/// Output channels computed together.
const OB: usize = 4;

/// The panel path (im2col in blocks): the input taps of `T` consecutive output pixels
/// are gathered into a panel `[K][T]` (0 for taps in the padding), then for blocks of
/// output channels `acc[o][p0 + t] = bias[o] + Σ_k w[o][k] · panel[k][t]`, in registers.
fn conv_panels<X: Elem>(job: &ConvJob, weights: &[i32], bias: &[i32], x: &[X], acc: &mut [i32]) {
    let k_n = job.i_g * job.kh * job.kw;
    panel_driver(
        job,
        weights,
        k_n,
        k_n * T,
        bias,
        x,
        acc,
        pack_panel,
        panel_block,
    );
}

/// The loops both panel paths share: for every batch item, group and run of `T` output
/// pixels, `pack` gathers the panel (`panel_len` elements of `P`), then `block` computes
/// `OB` output channels at a time from their weight rows (`w_row` elements each) and the
/// bias is added.
#[allow(clippy::too_many_arguments)]
fn panel_driver<P: Copy + Default, X: Elem>(
    job: &ConvJob,
    weights: &[i32],
    w_row: usize,
    panel_len: usize,
    bias: &[i32],
    x: &[X],
    acc: &mut [i32],
    pack: impl Fn(&ConvJob, &[X], usize, usize, &mut [P]),
    block_of: impl Fn(&[P], &[i32], usize, usize, &mut [[i32; T]; OB]),
) {
    let o_per_g = job.o_n / job.group;
    let hw = job.h * job.w;
    let ohw = job.oh * job.ow;
    let mut panel = vec![P::default(); panel_len];
    for b in 0..job.n {
        for grp in 0..job.group {
            let xg = &x[(b * job.c + grp * job.i_g) * hw..][..job.i_g * hw];
            for p0 in (0..ohw).step_by(T) {
                let tn = T.min(ohw - p0);
                pack(job, xg, p0, tn, &mut panel);
                let mut o = grp * o_per_g;
                while o < (grp + 1) * o_per_g {
                    let ob = OB.min((grp + 1) * o_per_g - o);
                    let mut block = [[0i32; T]; OB];
                    block_of(
                        &panel,
                        &weights[o * w_row..(o + ob) * w_row],
                        w_row,
                        ob,
                        &mut block,
                    );
                    for (j, row) in block.iter().take(ob).enumerate() {
                        let dst = &mut acc[(b * job.o_n + o + j) * ohw + p0..][..tn];
                        for (d, &v) in dst.iter_mut().zip(row) {
                            *d = v.wrapping_add(bias[o + j]);
                        }
                    }
                    o += ob;
                }
            }
        }
    }
}

/// The input value tap `(ky, kx)` of channel plane `xc` reads for each output pixel
/// `p0..p0 + tn`, in order; `None` where it falls into the padding. What every panel
/// packing gathers, in whatever form its kernel multiplies.
#[inline(always)]
fn tap_inputs<'a, X: Elem>(
    job: &'a ConvJob,
    xc: &'a [X],
    [ky, kx]: [usize; 2],
    p0: usize,
    tn: usize,
) -> impl Iterator<Item = Option<X>> + 'a {
    let [sy, sx] = job.strides;
    let [dy, dx] = job.dilations;
    let [pt, pl] = job.pads;
    let (mut oy, mut ox) = (p0 / job.ow, p0 % job.ow);
    (0..tn).map(move |_| {
        let iy = (oy * sy + ky * dy).wrapping_sub(pt);
        let ix = (ox * sx + kx * dx).wrapping_sub(pl);
        ox += 1;
        if ox == job.ow {
            ox = 0;
            oy += 1;
        }
        // Out-of-range positions wrapped around to huge values.
        (iy < job.h && ix < job.w).then(|| xc[iy * job.w + ix])
    })
}

/// `panel[k][t]` = the input value tap `k = (ic, ky, kx)` reads for output pixel
/// `p0 + t`, 0 in the padding and for `t ≥ tn`.
fn pack_panel<X: Elem>(job: &ConvJob, xg: &[X], p0: usize, tn: usize, panel: &mut [i32]) {
    let hw = job.h * job.w;
    let pointwise = job.plain_pointwise();
    for ic in 0..job.i_g {
        let xc = &xg[ic * hw..][..hw];
        for ky in 0..job.kh {
            for kx in 0..job.kw {
                let k = (ic * job.kh + ky) * job.kw + kx;
                let row = &mut panel[k * T..][..T];
                if pointwise {
                    for (r, &v) in row.iter_mut().zip(&xc[p0..p0 + tn]) {
                        *r = v.widen();
                    }
                } else {
                    for (r, v) in row.iter_mut().zip(tap_inputs(job, xc, [ky, kx], p0, tn)) {
                        *r = v.map_or(0, Elem::widen);
                    }
                }
                row[tn..].fill(0);
            }
        }
    }
}

multiversion! {
    /// `block[j][t] = Σ_k w[j][k] · panel[k][t]` for `j < ob`.
    fn panel_block(panel: &[i32], w: &[i32], k_n: usize, ob: usize, block: &mut [[i32; T]; OB]) {
        match ob {
            4 => panel_block_n::<4>(panel, w, k_n, block),
            3 => panel_block_n::<3>(panel, w, k_n, block),
            2 => panel_block_n::<2>(panel, w, k_n, block),
            _ => panel_block_n::<1>(panel, w, k_n, block),
        }
    }
}

#[inline(always)]
fn panel_block_n<const N: usize>(panel: &[i32], w: &[i32], k_n: usize, block: &mut [[i32; T]; OB]) {
    let mut a = [[0i32; T]; N];
    for k in 0..k_n {
        let row: &[i32; T] = panel[k * T..(k + 1) * T].try_into().expect("panel row");
        for j in 0..N {
            let wv = w[j * k_n + k];
            for t in 0..T {
                a[j][t] = a[j][t].wrapping_add(wv.wrapping_mul(row[t]));
            }
        }
    }
    block[..N].copy_from_slice(&a);
}

// ------------------------------------------------------- panel path, i16 pairs

/// The panel path with the taps in i16 pairs: `panel[q][t] = (x[2q][t], x[2q+1][t])`
/// and each weight pair `(w[o][2q], w[o][2q+1])` packed into one i32, so that one
/// multiply-add of i16 pairs into i32 lanes (AVX2 `vpmaddwd`) does two taps. Exact when
/// every input value and weight fits i16 (an 8-bit input times an int8 weight always
/// does): the two products are exact and their sum wraps like the i32 path's sums (two's
/// complement addition is associative), so the accumulators are the same integers.
/// `wp`: the weight pairs ([`LinearWeights`]; the missing partner of an odd fan-in's
/// last tap is 0).
fn conv_panels16<X: Elem>(job: &ConvJob, wp: &[i32], bias: &[i32], x: &[X], acc: &mut [i32]) {
    let pairs = (job.i_g * job.kh * job.kw).div_ceil(2);
    panel_driver(
        job,
        wp,
        pairs,
        pairs * 2 * T,
        bias,
        x,
        acc,
        pack_panel16,
        panel16_block,
    );
}

/// [`pack_panel`] into i16 pairs: tap `k` of pixel `t` at `(k / 2) · 2T + 2t + k % 2`;
/// 0 in the padding, for `t ≥ tn` and for the partner of an odd fan-in's last tap.
fn pack_panel16<X: Elem>(job: &ConvJob, xg: &[X], p0: usize, tn: usize, panel: &mut [i16]) {
    let hw = job.h * job.w;
    let k_n = job.i_g * job.kh * job.kw;
    if k_n % 2 == 1 {
        panel[(k_n / 2) * 2 * T..].fill(0);
    }
    let pointwise = job.plain_pointwise();
    if pointwise {
        // Tap k is channel k: each pair row interleaves two channels' pixels.
        for (q, row) in panel.chunks_exact_mut(2 * T).take(job.i_g / 2).enumerate() {
            let a = &xg[2 * q * hw + p0..][..tn];
            let b = &xg[(2 * q + 1) * hw + p0..][..tn];
            for ((slot, &u), &v) in row.chunks_exact_mut(2).zip(a).zip(b) {
                slot[0] = u.widen() as i16;
                slot[1] = v.widen() as i16;
            }
            row[2 * tn..].fill(0);
        }
        if job.i_g % 2 == 1 {
            let row = &mut panel[(job.i_g / 2) * 2 * T..][..2 * T];
            let a = &xg[(job.i_g - 1) * hw + p0..][..tn];
            for (slot, &u) in row.chunks_exact_mut(2).zip(a) {
                slot[0] = u.widen() as i16;
                slot[1] = 0;
            }
            row[2 * tn..].fill(0);
        }
        return;
    }
    for ic in 0..job.i_g {
        let xc = &xg[ic * hw..][..hw];
        for ky in 0..job.kh {
            for kx in 0..job.kw {
                let k = (ic * job.kh + ky) * job.kw + kx;
                let row = &mut panel[(k / 2) * 2 * T..][..2 * T];
                let mut slots = row[k % 2..].iter_mut().step_by(2);
                for (r, v) in (&mut slots).zip(tap_inputs(job, xc, [ky, kx], p0, tn)) {
                    *r = v.map_or(0, |v| v.widen() as i16);
                }
                slots.for_each(|r| *r = 0);
            }
        }
    }
}

/// `block[j][t] = Σ_q madd(panel[q][t], wp[j][q])` for `j < ob`: with AVX2 where the CPU
/// has it, else the same sums in plain integer arithmetic.
fn panel16_block(panel: &[i16], wp: &[i32], pairs: usize, ob: usize, block: &mut [[i32; T]; OB]) {
    assert!(panel.len() >= pairs * 2 * T && wp.len() >= ob * pairs && ob <= OB);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above); the sizes were checked.
        unsafe { panel16_block_avx2(panel, wp, pairs, ob, block) };
        return;
    }
    for (j, out) in block.iter_mut().take(ob).enumerate() {
        let mut a = [0i32; T];
        for q in 0..pairs {
            let w = wp[j * pairs + q];
            let (w0, w1) = (w as i16 as i32, (w >> 16) as i16 as i32);
            let row = &panel[q * 2 * T..][..2 * T];
            for t in 0..T {
                let two = (row[2 * t] as i32 * w0).wrapping_add(row[2 * t + 1] as i32 * w1);
                a[t] = a[t].wrapping_add(two);
            }
        }
        *out = a;
    }
}

/// [`panel16_block`] with AVX2: per half of the `T` pixels, `OB` channels' accumulators
/// (two registers each) stay in registers over all pairs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn panel16_block_avx2(
    panel: &[i16],
    wp: &[i32],
    pairs: usize,
    ob: usize,
    block: &mut [[i32; T]; OB],
) {
    use std::arch::x86_64::*;
    const HALF: usize = T / 2; // pixels per half: 2 registers of 8 i32
    // SAFETY: the caller checked `panel` (`pairs` rows of `2T` i16) and `wp` (`ob` rows
    // of `pairs`); every load reads 16 i16 at `q · 2T + 2h + 16r`, `h + 8r + 8 <= T`,
    // inside row `q`; the stores write 8 i32 at `h + 8r` of a block row (`T` long).
    unsafe {
        let pp = panel.as_ptr();
        for h in (0..T).step_by(HALF) {
            let mut acc = [[_mm256_setzero_si256(); 2]; OB];
            for q in 0..pairs {
                let base = pp.add(q * 2 * T + 2 * h);
                let x0 = _mm256_loadu_si256(base as *const __m256i);
                let x1 = _mm256_loadu_si256(base.add(16) as *const __m256i);
                for (j, a) in acc.iter_mut().enumerate().take(ob) {
                    let w = _mm256_set1_epi32(*wp.get_unchecked(j * pairs + q));
                    a[0] = _mm256_add_epi32(a[0], _mm256_madd_epi16(x0, w));
                    a[1] = _mm256_add_epi32(a[1], _mm256_madd_epi16(x1, w));
                }
            }
            for (j, a) in acc.iter().enumerate().take(ob) {
                let dst = block[j].as_mut_ptr().add(h);
                _mm256_storeu_si256(dst as *mut __m256i, a[0]);
                _mm256_storeu_si256(dst.add(8) as *mut __m256i, a[1]);
            }
        }
    }
}

// --------------------------------------------------- panel path, u8 quads (VNNI)

/// Whether the CPU multiplies four u8 by four i8 into an i32 lane in one instruction
/// (AVX-512 VNNI `vpdpbusd`).
fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The panel path with the taps in u8 quads: `panel[q][t]` holds taps `4q..4q+4` of
/// pixel `t` as bytes, each value plus `X::BYTE_OFFSET` (i8 inputs are moved into u8 by
/// +128), and each row's quad of int8 weights is one i32, so that one `vpdpbusd` does four
/// taps of 16 pixels. The sums are `Σ (x + c) · w = Σ x · w + c · Σ w`: the bias less
/// `c · Σ w` per row ([`LinearWeights`] keeps the row sums) gives the same integers as the
/// other paths (products of at most 255 · 128, four of them added into i32 like the i32
/// path's wrapping sums). A tap in the padding reads `0 + c`.
fn conv_panels8<X: Elem>(
    job: &ConvJob,
    weights: &LinearWeights,
    bias: &[i32],
    x: &[X],
    acc: &mut [i32],
) {
    let quads = (job.i_g * job.kh * job.kw).div_ceil(4);
    let corrected: Vec<i32>;
    let bias = if X::BYTE_OFFSET == 0 {
        bias
    } else {
        corrected = bias
            .iter()
            .zip(&weights.row_sums)
            .map(|(&b, &s)| b.wrapping_sub(X::BYTE_OFFSET.wrapping_mul(s)))
            .collect();
        &corrected
    };
    panel_driver(
        job,
        &weights.quads,
        quads,
        quads * 4 * T,
        bias,
        x,
        acc,
        pack_panel8,
        panel8_block,
    );
}

/// [`pack_panel`] into u8 quads: tap `k` of pixel `t` at `(k / 4) · 4T + 4t + k % 4`, as
/// [`Elem::offset_byte`]; the padding reads as a value of 0. Pixels `t ≥ tn` and the taps
/// past the fan-in in the last quad are left as they were (their weights are zero, and
/// the driver keeps only the first `tn` pixels).
fn pack_panel8<X: Elem>(job: &ConvJob, xg: &[X], p0: usize, tn: usize, panel: &mut [u8]) {
    let hw = job.h * job.w;
    let zero = X::BYTE_OFFSET as u8;
    let pointwise = job.plain_pointwise();
    for ic in 0..job.i_g {
        let xc = &xg[ic * hw..][..hw];
        for ky in 0..job.kh {
            for kx in 0..job.kw {
                let k = (ic * job.kh + ky) * job.kw + kx;
                let row = &mut panel[(k / 4) * 4 * T..][..4 * T];
                let slots = row[k % 4..].iter_mut().step_by(4).take(tn);
                if pointwise {
                    for (r, &v) in slots.zip(&xc[p0..p0 + tn]) {
                        *r = v.offset_byte();
                    }
                    continue;
                }
                for (r, v) in slots.zip(tap_inputs(job, xc, [ky, kx], p0, tn)) {
                    *r = v.map_or(zero, Elem::offset_byte);
                }
            }
        }
    }
}

/// `block[j][t] = Σ_q Σ_r panel[q][t][r] · wq[j][q][r]` (u8 times i8) for `j < ob`: with
/// AVX-512 VNNI where the CPU has it, else the same sums in plain integer arithmetic.
fn panel8_block(panel: &[u8], wq: &[i32], quads: usize, ob: usize, block: &mut [[i32; T]; OB]) {
    assert!(panel.len() >= quads * 4 * T && wq.len() >= ob * quads && ob <= OB);
    #[cfg(target_arch = "x86_64")]
    if has_vnni() {
        // SAFETY: the CPU supports AVX-512F and VNNI (checked just above); the sizes were
        // checked.
        unsafe { panel8_block_vnni(panel, wq, quads, ob, block) };
        return;
    }
    panel8_block_portable(panel, wq, quads, ob, block);
}

/// [`panel8_block`] in plain integer arithmetic.
fn panel8_block_portable(
    panel: &[u8],
    wq: &[i32],
    quads: usize,
    ob: usize,
    block: &mut [[i32; T]; OB],
) {
    for (j, out) in block.iter_mut().take(ob).enumerate() {
        let mut a = [0i32; T];
        for q in 0..quads {
            let w = wq[j * quads + q].to_le_bytes();
            let row = &panel[q * 4 * T..][..4 * T];
            for (t, a) in a.iter_mut().enumerate() {
                let four = (0..4).fold(0i32, |s, r| s + row[4 * t + r] as i32 * w[r] as i8 as i32);
                *a = a.wrapping_add(four);
            }
        }
        *out = a;
    }
}

/// [`panel8_block`] with AVX-512 VNNI: the `T` pixels of a channel in two registers, the
/// `OB` channels' accumulators in registers over all quads.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
fn panel8_block_vnni(
    panel: &[u8],
    wq: &[i32],
    quads: usize,
    ob: usize,
    block: &mut [[i32; T]; OB],
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller checked `panel` (`quads` rows of `4T` bytes) and `wq` (`ob`
    // rows of `quads`); every load reads 64 bytes at `q · 4T + 64r`, `r < 2`, inside row
    // `q` (`4T = 128`); the stores write 16 i32 at `16r` of a block row (`T = 32` long).
    unsafe {
        let pp = panel.as_ptr();
        let mut acc = [[_mm512_setzero_si512(); 2]; OB];
        for q in 0..quads {
            let base = pp.add(q * 4 * T);
            let x0 = _mm512_loadu_si512(base as *const _);
            let x1 = _mm512_loadu_si512(base.add(64) as *const _);
            for (j, a) in acc.iter_mut().enumerate().take(ob) {
                let w = _mm512_set1_epi32(*wq.get_unchecked(j * quads + q));
                a[0] = _mm512_dpbusd_epi32(a[0], x0, w);
                a[1] = _mm512_dpbusd_epi32(a[1], x1, w);
            }
        }
        for (j, a) in acc.iter().enumerate().take(ob) {
            let dst = block[j].as_mut_ptr();
            _mm512_storeu_si512(dst as *mut _, a[0]);
            _mm512_storeu_si512(dst.add(16) as *mut _, a[1]);
        }
    }
}

// ------------------------------------------------------------------ direct path

/// The direct path, for few taps per output (depthwise and other small kernels): each
/// input channel is copied zero-padded and split by stride phase, `phase[ry][rx][a][b] =
/// padded[a·sy + ry][b·sx + rx]`. Tap `(ky, kx)` of output `(oy, ox)` then reads phase
/// `(ky·dy mod sy, kx·dx mod sx)` at `(oy + ky·dy div sy, ox + kx·dx div sx)`, so over a
/// "wide" output plane of row pitch `cols` (the phase width) every tap is one
/// contiguous loop; the columns `ox ≥ OW` of the wide plane are discarded.
fn conv_direct<X: Elem>(job: &ConvJob, weights: &[i32], bias: &[i32], x: &[X], acc: &mut [i32]) {
    let o_per_g = job.o_n / job.group;
    let k_n = job.i_g * job.kh * job.kw;
    let hw = job.h * job.w;
    let ohw = job.oh * job.ow;
    let [sy, sx] = job.strides;
    let [dy, dx] = job.dilations;
    let rows = (job.oh - 1) + ((job.kh - 1) * dy) / sy + 1;
    let cols = (job.ow - 1) + ((job.kw - 1) * dx) / sx + 1;
    // The wide plane, rounded up to whole chunks.
    let wide_len = (job.oh * cols).div_ceil(C) * C;
    // Spare elements after the phases: the wide plane's last row reads up to `cols − 1`
    // elements past its phase, and its rounding up up to `C − 1` more.
    let chan_len = sy * sx * rows * cols + cols + C;
    let mut phases = vec![0i32; job.i_g * chan_len];
    let mut wide = vec![0i32; wide_len];
    let mut taps: Vec<(usize, i32)> = Vec::with_capacity(k_n);
    for b in 0..job.n {
        for grp in 0..job.group {
            let xg = &x[(b * job.c + grp * job.i_g) * hw..][..job.i_g * hw];
            for ic in 0..job.i_g {
                let chan = &mut phases[ic * chan_len..][..chan_len];
                load_phases(job, &xg[ic * hw..][..hw], rows, cols, chan);
            }
            for o in grp * o_per_g..(grp + 1) * o_per_g {
                // Where each tap with a non-zero weight reads for wide position 0.
                taps.clear();
                for ic in 0..job.i_g {
                    for ky in 0..job.kh {
                        let (qy, ry) = ((ky * dy) / sy, (ky * dy) % sy);
                        for kx in 0..job.kw {
                            let wv = weights[o * k_n + (ic * job.kh + ky) * job.kw + kx];
                            let (qx, rx) = ((kx * dx) / sx, (kx * dx) % sx);
                            let phase = (ry * sx + rx) * rows * cols;
                            if wv != 0 {
                                taps.push((ic * chan_len + phase + qy * cols + qx, wv));
                            }
                        }
                    }
                }
                wide.fill(bias[o]);
                direct_channel(&taps, &phases, &mut wide);
                let plane = &mut acc[(b * job.o_n + o) * ohw..][..ohw];
                for (dst, src) in plane.chunks_exact_mut(job.ow).zip(wide.chunks_exact(cols)) {
                    dst.copy_from_slice(&src[..job.ow]);
                }
            }
        }
    }
}

/// Fills one input channel's phase planes (`chan`, zeroed first).
fn load_phases<X: Elem>(job: &ConvJob, xc: &[X], rows: usize, cols: usize, chan: &mut [i32]) {
    let [sy, sx] = job.strides;
    let [pt, pl] = job.pads;
    chan.fill(0);
    for iy in 0..job.h {
        let py = iy + pt; // padded row
        let (a, ry) = (py / sy, py % sy);
        if a >= rows {
            continue;
        }
        let src = &xc[iy * job.w..][..job.w];
        for rx in 0..sx {
            let dst = &mut chan[((ry * sx + rx) * rows + a) * cols..][..cols];
            // Phase column b holds padded column b·sx + rx, i.e. input column
            // b·sx + rx − pl: from b0 = ceil((pl − rx) / sx) on, every sx-th input column.
            let b0 = pl.saturating_sub(rx).div_ceil(sx);
            let ix0 = b0 * sx + rx - pl;
            let (dst, src) = (&mut dst[b0.min(cols)..], &src[ix0.min(job.w)..]);
            if sx == 1 {
                // Contiguous (vectorizes).
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = v.widen();
                }
            } else if sx == 2 {
                // Every other column: a constant step, which vectorizes.
                let runs = src.chunks_exact(2);
                let last = runs.remainder().first().copied();
                let copied = dst.len().min(runs.len());
                for (d, run) in dst.iter_mut().zip(runs) {
                    *d = run[0].widen();
                }
                if let (Some(v), Some(d)) = (last, dst.get_mut(copied)) {
                    *d = v.widen();
                }
            } else {
                for (d, run) in dst.iter_mut().zip(src.chunks(sx)) {
                    *d = run[0].widen();
                }
            }
        }
    }
}

/// Wide-plane positions accumulated together, in registers.
const C: usize = 32;

multiversion! {
    /// `wide[i] += Σ_taps w · phases[start + i]` for one output channel, `C` positions at
    /// a time with the sums in registers. `wide.len()` is a multiple of `C`, and every
    /// tap's reads lie inside `phases`.
    fn direct_channel(taps: &[(usize, i32)], phases: &[i32], wide: &mut [i32]) {
        for (ci, chunk) in wide.chunks_exact_mut(C).enumerate() {
            let mut a: [i32; C] = chunk.try_into().expect("whole chunks");
            for &(start, wv) in taps {
                let src: &[i32; C] = phases[start + ci * C..][..C].try_into().expect("in bounds");
                for t in 0..C {
                    a[t] = a[t].wrapping_add(wv.wrapping_mul(src[t]));
                }
            }
            chunk.copy_from_slice(&a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The VNNI quad kernel against its portable form (which the random-geometry test
    /// below holds equal to the other paths), on every byte and weight value, every
    /// block height and a quad count that is no multiple of anything. Skipped, with a
    /// note, on CPUs without VNNI: they never take the kernel.
    #[test]
    fn quad_kernels_agree() {
        if !has_vnni() {
            eprintln!("quad_kernels_agree: this CPU has no AVX-512 VNNI; kernel not run");
            return;
        }
        let quads = 37;
        let panel: Vec<u8> = (0..quads * 4 * T).map(|i| (i * 97 % 256) as u8).collect();
        let wq: Vec<i32> = (0..OB * quads)
            .map(|i| (i as u32).wrapping_mul(0x9e37_79b9) as i32)
            .collect();
        for ob in 1..=OB {
            let (mut a, mut b) = ([[1i32; T]; OB], [[2i32; T]; OB]);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX-512F and VNNI (checked above); the panel holds
            // `quads` rows of `4T` bytes and `wq` `OB` rows of `quads`.
            unsafe {
                panel8_block_vnni(&panel, &wq, quads, ob, &mut a)
            };
            panel8_block_portable(&panel, &wq, quads, ob, &mut b);
            assert_eq!(a[..ob], b[..ob], "{ob} channels");
            assert!(a[0].iter().any(|&v| v != 0));
        }
    }

    /// The three convolution paths agree on random geometries (which one a layer takes is
    /// decided by its size, so the integration tests cannot steer it).
    #[test]
    fn direct_and_panel_paths_agree() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rand = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut tested = 0;
        while tested < 300 {
            let group = 1 + rand(3);
            let (i_g, o_per_g) = (1 + rand(4), 1 + rand(5));
            let (kh, kw) = (1 + rand(4), 1 + rand(4));
            let (h, w) = (1 + rand(10), 1 + rand(10));
            let strides = [1 + rand(3), 1 + rand(3)];
            let dilations = [1 + rand(2), 1 + rand(3)];
            let pads = [rand(3), rand(3), rand(3), rand(3)];
            let out = |len: usize, k: usize, s: usize, d: usize, p: usize| {
                (len + p).checked_sub(d * (k - 1) + 1).map(|v| v / s + 1)
            };
            let (Some(oh), Some(ow)) = (
                out(h, kh, strides[0], dilations[0], pads[0] + pads[2]),
                out(w, kw, strides[1], dilations[1], pads[1] + pads[3]),
            ) else {
                continue;
            };
            tested += 1;
            let o_n = group * o_per_g;
            let geom = ConvGeom {
                strides,
                pads,
                dilations,
                group,
            };
            let x_shape = [1 + rand(2), group * i_g, h, w];
            let out_shape = [x_shape[0], o_n, oh, ow];
            let job = ConvJob::new(&geom, [o_n, i_g, kh, kw], &x_shape, &out_shape);
            let x: Vec<i32> = (0..x_shape.iter().product())
                .map(|_| rand(384) as i32 - 128)
                .collect();
            let weights: Vec<i32> = (0..o_n * i_g * kh * kw)
                .map(|_| rand(256) as i32 - 128)
                .collect();
            let bias: Vec<i32> = (0..o_n).map(|_| rand(2000) as i32 - 1000).collect();
            let len = out_shape.iter().product();
            let (mut a, mut b, mut c) = (vec![7; len], vec![-7; len], vec![3; len]);
            conv_direct(&job, &weights, &bias, &x, &mut a);
            conv_panels(&job, &weights, &bias, &x, &mut b);
            let decoded: Vec<i8> = weights.iter().map(|&w| w as i8).collect();
            let prepared = LinearWeights::new(&decoded, i_g * kh * kw);
            conv_panels16(&job, &prepared.pairs, &bias, &x, &mut c);
            assert_eq!(a, b, "{x_shape:?} -> {out_shape:?} {geom:?}");
            assert_eq!(a, c, "i16 pairs: {x_shape:?} -> {out_shape:?} {geom:?}");
            // The kernels read 8-bit inputs as stored: the same sums as on the widened
            // values.
            let unsigned: Vec<u8> = x.iter().map(|&v| v.clamp(0, 255) as u8).collect();
            let signed: Vec<i8> = x.iter().map(|&v| v.clamp(-128, 127) as i8).collect();
            let wide_u: Vec<i32> = unsigned.iter().map(|&v| v as i32).collect();
            let wide_s: Vec<i32> = signed.iter().map(|&v| v as i32).collect();
            conv_direct(&job, &weights, &bias, &wide_u, &mut a);
            conv_direct(&job, &weights, &bias, &unsigned, &mut b);
            conv_panels16(&job, &prepared.pairs, &bias, &unsigned, &mut c);
            assert_eq!(a, b, "u8 direct: {x_shape:?} -> {out_shape:?} {geom:?}");
            assert_eq!(a, c, "u8 pairs: {x_shape:?} -> {out_shape:?} {geom:?}");
            c.fill(i32::MIN);
            conv_panels8(&job, &prepared, &bias, &unsigned, &mut c);
            assert_eq!(a, c, "u8 quads: {x_shape:?} -> {out_shape:?} {geom:?}");
            conv_direct(&job, &weights, &bias, &wide_s, &mut a);
            conv_panels(&job, &weights, &bias, &signed, &mut b);
            conv_panels16(&job, &prepared.pairs, &bias, &signed, &mut c);
            assert_eq!(a, b, "i8 panels: {x_shape:?} -> {out_shape:?} {geom:?}");
            assert_eq!(a, c, "i8 pairs: {x_shape:?} -> {out_shape:?} {geom:?}");
            c.fill(i32::MIN);
            conv_panels8(&job, &prepared, &bias, &signed, &mut c);
            assert_eq!(a, c, "i8 quads: {x_shape:?} -> {out_shape:?} {geom:?}");
        }
    }
}
