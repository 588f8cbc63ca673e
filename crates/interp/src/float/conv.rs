//! 2-D convolution, NCHW, with groups, strides, pads, dilations and an optional bias.
//!
//! Three paths, chosen per node from its static shapes:
//! * one input channel per group (depthwise, and convolutions of a single-channel
//!   image): a direct loop, since there is no reduction over channels for a GEMM to
//!   exploit. The input plane is first copied zero-padded and split by stride phase
//!   ([`PhasePlane`]), so that each output channel is one long branch-free loop;
//! * 1×1 kernel, stride 1, no padding (pointwise): the input plane already is the GEMM's
//!   right-hand matrix `[C/g, H·W]`;
//! * everything else: im2col into `[C/g·kH·kW, OH·OW]`, then one GEMM per group.
//!
//! The bias and any BatchNorm/activation fused into the convolution ([`Epilogue`]) are
//! applied to each block of output right after it is computed, while it is in cache.

use lutq_ir::{Activation, Conv};

use super::elementwise::bias_affine_activation;

use crate::sgemm::{row_major, sgemm};
use crate::simd::multiversion;

/// The sizes and attributes one convolution needs, resolved once from the static shapes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub m: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub group: usize,
    pub strides: [usize; 2],
    /// top, left (the end pads only shape the output size, which is already resolved).
    pub pads: [usize; 2],
    /// Whether bottom or right padding exists (it makes a 1×1 convolution's output larger
    /// than its input).
    pub end_pads: bool,
    pub dilations: [usize; 2],
}

impl ConvGeom {
    pub(crate) fn new(attrs: &Conv, x: &[usize], w: &[usize], out: &[usize]) -> Self {
        ConvGeom {
            n: x[0],
            c: x[1],
            h: x[2],
            w: x[3],
            m: w[0],
            kh: w[2],
            kw: w[3],
            oh: out[2],
            ow: out[3],
            group: attrs.group,
            strides: attrs.strides,
            pads: [attrs.pads[0], attrs.pads[1]],
            end_pads: attrs.pads[2] != 0 || attrs.pads[3] != 0,
            dilations: attrs.dilations,
        }
    }

    fn pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.strides == [1, 1]
            && self.pads == [0, 0]
            && !self.end_pads
    }
}

/// Output positions `o` in `0..out` whose input position `o·stride + offset − pad` lies in
/// `0..len`, as a half-open range (empty ranges have `lo == hi`).
pub(crate) fn valid_range(
    out: usize,
    len: usize,
    stride: usize,
    offset: usize,
    pad: usize,
) -> (usize, usize) {
    let lo = if pad > offset {
        (pad - offset).div_ceil(stride)
    } else {
        0
    };
    let limit = len + pad;
    let hi = if limit > offset {
        ((limit - 1 - offset) / stride + 1).min(out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// What runs on each output channel as soon as it is computed, while it is still in
/// cache: the BatchNorms and activations the executor fused into this convolution. Each
/// stage is the very loop the unfused op would run, so fusing never changes a result.
#[derive(Default)]
pub(crate) struct Epilogue {
    pub stages: Vec<Stage>,
}

pub(crate) enum Stage {
    /// `x · a[c] + b[c]` (an inference BatchNorm, see `BatchNormParams::affine`).
    Affine {
        a: Vec<f32>,
        b: Vec<f32>,
    },
    Activation(Activation),
}

impl Epilogue {
    /// Adds `bias` (the convolution's own, when it was not added already) to elements of
    /// output channel `channel` and applies the stages.
    fn apply(&self, channel: usize, bias: Option<f32>, data: &mut [f32]) {
        if bias.is_some() || !self.stages.is_empty() {
            apply_stages(&self.stages, channel, bias, data);
        }
    }
}

multiversion! {
    fn apply_stages(stages: &[Stage], channel: usize, bias: Option<f32>, data: &mut [f32]) {
        // The usual chains (Conv → BatchNorm → activation and its parts) in one pass;
        // anything longer one pass per stage.
        let ab = |a: &[f32], b: &[f32]| Some((a[channel], b[channel]));
        match stages {
            [] => bias_affine_activation(data, bias, None, None),
            [Stage::Affine { a, b }] => bias_affine_activation(data, bias, ab(a, b), None),
            [Stage::Activation(act)] => bias_affine_activation(data, bias, None, Some(*act)),
            [Stage::Affine { a, b }, Stage::Activation(act)] => {
                bias_affine_activation(data, bias, ab(a, b), Some(*act));
            }
            _ => {
                if bias.is_some() {
                    bias_affine_activation(data, bias, None, None);
                }
                for stage in stages {
                    match stage {
                        Stage::Affine { a, b } => {
                            bias_affine_activation(data, None, ab(a, b), None)
                        }
                        Stage::Activation(act) => {
                            bias_affine_activation(data, None, None, Some(*act))
                        }
                    }
                }
            }
        }
    }
}

/// Columns of the output computed per GEMM call when an epilogue follows: small enough
/// that the block (and its slice of the input) is still in L2 when the epilogue runs,
/// large enough to keep the GEMM efficient.
fn column_block(rows: usize, inner: usize, total: usize) -> usize {
    const FLOATS: usize = 64 * 1024;
    (FLOATS / (rows + inner).max(1))
        .max(256)
        .min(total)
        .next_multiple_of(64)
}

/// `out = epilogue(conv(x, w) + bias)`.
pub(crate) fn conv2d(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epilogue: &Epilogue,
    out: &mut [f32],
) {
    let (cg, mg) = (g.c / g.group, g.m / g.group);
    if cg == 1 {
        conv_direct(g, x, w, bias, epilogue, out);
        return;
    }
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    if ohw == 0 {
        return;
    }
    let kk = cg * g.kh * g.kw;
    let mut col = if g.pointwise() {
        Vec::new()
    } else {
        vec![0.0; kk * ohw]
    };
    let cols: Vec<(usize, usize)> = (0..g.kw)
        .map(|kx| valid_range(g.ow, g.w, g.strides[1], kx * g.dilations[1], g.pads[1]))
        .collect();
    // The bias is added by the epilogue too: a pass over each block while it is in cache
    // instead of a pass over the whole output to pre-fill it.
    let block = if epilogue.stages.is_empty() && bias.is_none() {
        ohw
    } else {
        column_block(mg, kk, ohw)
    };
    for n in 0..g.n {
        let xn = &x[n * g.c * hw..(n + 1) * g.c * hw];
        let on = &mut out[n * g.m * ohw..(n + 1) * g.m * ohw];
        for grp in 0..g.group {
            let xg = &xn[grp * cg * hw..(grp + 1) * cg * hw];
            let wg = &w[grp * mg * kk..(grp + 1) * mg * kk];
            let og = &mut on[grp * mg * ohw..(grp + 1) * mg * ohw];
            let rhs: &[f32] = if g.pointwise() {
                xg
            } else {
                im2col(xg, cg, g, &cols, &mut col);
                &col
            };
            for j0 in (0..ohw).step_by(block) {
                let j1 = (j0 + block).min(ohw);
                sgemm(
                    mg,
                    j1 - j0,
                    kk,
                    1.0,
                    wg,
                    row_major(kk),
                    &rhs[j0..],
                    row_major(ohw),
                    false,
                    &mut og[j0..],
                    row_major(ohw),
                );
                for r in 0..mg {
                    let m = grp * mg + r;
                    let b = bias.map(|b| b[m]);
                    epilogue.apply(m, b, &mut og[r * ohw + j0..r * ohw + j1]);
                }
            }
        }
    }
}

/// `dst[j] = src[j · stride]`.
fn gather(dst: &mut [f32], src: &[f32], stride: usize) {
    match stride {
        1 => dst.copy_from_slice(&src[..dst.len()]),
        2 => gather2(dst, src),
        _ => {
            for (j, d) in dst.iter_mut().enumerate() {
                *d = src[j * stride];
            }
        }
    }
}

multiversion! {
    /// `dst[j] = src[2j]`, written over pairs so that it vectorises into shuffles.
    fn gather2(dst: &mut [f32], src: &[f32]) {
        let n = dst.len();
        if n == 0 {
            return;
        }
        // The last element's partner may lie past the end of `src`.
        let (body, last) = dst.split_at_mut(n - 1);
        for (d, pair) in body.iter_mut().zip(src.chunks_exact(2)) {
            *d = pair[0];
        }
        last[0] = src[2 * (n - 1)];
    }
}

/// Fills `col` (`[cg·kH·kW, OH·OW]`) with the input patches: row `(ci, ky, kx)` holds, for
/// every output position, the input value that tap multiplies (0 in the padding).
fn im2col(x: &[f32], cg: usize, g: &ConvGeom, cols: &[(usize, usize)], col: &mut [f32]) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let [sh, sw] = g.strides;
    let [dh, dw] = g.dilations;
    let [pt, pl] = g.pads;
    let mut r = 0;
    for ci in 0..cg {
        let plane = &x[ci * hw..(ci + 1) * hw];
        for ky in 0..g.kh {
            for (kx, &(lo, hi)) in cols.iter().enumerate() {
                let row = &mut col[r * ohw..(r + 1) * ohw];
                r += 1;
                for oy in 0..g.oh {
                    let seg = &mut row[oy * g.ow..(oy + 1) * g.ow];
                    let iy = oy * sh + ky * dh;
                    if iy < pt || iy - pt >= g.h {
                        seg.fill(0.0);
                        continue;
                    }
                    let irow = &plane[(iy - pt) * g.w..(iy - pt + 1) * g.w];
                    seg[..lo].fill(0.0);
                    seg[hi..].fill(0.0);
                    if lo < hi {
                        let start = lo * sw + kx * dw - pl;
                        let dst = &mut seg[lo..hi];
                        gather(dst, &irow[start..], sw);
                    }
                }
            }
        }
    }
}

/// Zero-padded copy of one input plane, split into `sh × sw` phases by row and column
/// parity under the strides: padded position `(r, c)` lives in phase `(r % sh, c % sw)`
/// at `(r / sh, c / sw)`. In this layout every tap of a strided, dilated window reads
/// the phase plane at a constant offset from the output position, so one output channel
/// is a single long loop over the output, with no bounds tests (see [`direct_channel`]).
/// For stride 1 it is just the zero-padded plane.
struct PhasePlane {
    data: Vec<f32>,
    /// Rows and columns of each phase.
    rows: usize,
    cols: usize,
}

impl PhasePlane {
    fn new(g: &ConvGeom) -> Self {
        let [sh, sw] = g.strides;
        let rows = (g.oh - 1) + ((g.kh - 1) * g.dilations[0]) / sh + 1;
        let cols = (g.ow - 1) + ((g.kw - 1) * g.dilations[1]) / sw + 1;
        // Spare elements at the end: taps of the last output row read up to `cols − 1`
        // elements past their phase (into columns whose results are discarded), and the
        // output is computed in whole vectors, up to `LANES − 1` positions further.
        PhasePlane {
            data: vec![0.0; sh * sw * rows * cols + cols + LANES],
            rows,
            cols,
        }
    }

    fn phase_start(&self, g: &ConvGeom, py: usize, px: usize) -> usize {
        (py * g.strides[1] + px) * self.rows * self.cols
    }

    /// Where tap `(ky, kx)` reads for output position 0.
    fn tap_offset(&self, g: &ConvGeom, ky: usize, kx: usize) -> usize {
        let [sh, sw] = g.strides;
        let (r, c) = (ky * g.dilations[0], kx * g.dilations[1]);
        self.phase_start(g, r % sh, c % sw) + (r / sh) * self.cols + c / sw
    }

    /// Loads input plane `x` (`h × w`).
    fn load(&mut self, x: &[f32], g: &ConvGeom) {
        let [pt, pl] = g.pads;
        let [sh, sw] = g.strides;
        let (rows, cols) = (self.rows, self.cols);
        // One padded row, `sw · cols` wide, before it is split into column phases.
        let mut padded = vec![0.0f32; if sw == 1 { 0 } else { sw * cols }];
        let (lo, hi) = (pl.min(sw * cols), (pl + g.w).min(sw * cols));
        for py in 0..sh {
            for q in 0..rows {
                let r = q * sh + py;
                let row_start = |px: usize| ((py * sw + px) * rows + q) * cols;
                if r < pt || r - pt >= g.h {
                    for px in 0..sw {
                        let s = row_start(px);
                        self.data[s..s + cols].fill(0.0);
                    }
                    continue;
                }
                let src = &x[(r - pt) * g.w..(r - pt + 1) * g.w];
                if sw == 1 {
                    let s = row_start(0);
                    let dst = &mut self.data[s..s + cols];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    dst[lo..hi].copy_from_slice(&src[..hi - lo]);
                    continue;
                }
                padded[lo..hi].copy_from_slice(&src[..hi - lo]);
                if sw == 2 {
                    // The usual case gets a loop the compiler turns into shuffles.
                    let (s0, s1) = (row_start(0), row_start(1));
                    let (head, tail) = self.data.split_at_mut(s1);
                    let (even, odd) = (&mut head[s0..s0 + cols], &mut tail[..cols]);
                    for ((e, o), pair) in even.iter_mut().zip(odd).zip(padded.chunks_exact(2)) {
                        *e = pair[0];
                        *o = pair[1];
                    }
                } else {
                    for px in 0..sw {
                        let s = row_start(px);
                        gather(&mut self.data[s..s + cols], &padded[px..], sw);
                    }
                }
            }
        }
    }
}

/// Convolution for one input channel per group: every output channel `m` is the input
/// plane of its group convolved with its own `kH × kW` kernel.
fn conv_direct(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epilogue: &Epilogue,
    out: &mut [f32],
) {
    let (hw, ohw, kk) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    if ohw == 0 {
        return;
    }
    let mg = g.m / g.group;
    let mut plane = PhasePlane::new(g);
    let offsets: Vec<usize> = (0..g.kh)
        .flat_map(|ky| (0..g.kw).map(move |kx| (ky, kx)))
        .map(|(ky, kx)| plane.tap_offset(g, ky, kx))
        .collect();
    // Output rows are computed `cols` wide (the phase width), as whole vectors, into a
    // scratch block; the extra columns, which mix in the next row, are dropped when
    // copying out.
    let cols = plane.cols;
    let mut wide = vec![0.0; (g.oh * cols).next_multiple_of(LANES)];
    for n in 0..g.n {
        for grp in 0..g.group {
            // Group grp's one input channel is channel grp; load it once for its mg outputs.
            let ci = n * g.c + grp;
            plane.load(&x[ci * hw..(ci + 1) * hw], g);
            for m in grp * mg..(grp + 1) * mg {
                let o = (n * g.m + m) * ohw;
                let dst = &mut out[o..o + ohw];
                let b = bias.map_or(0.0, |b| b[m]);
                let k = &w[m * kk..(m + 1) * kk];
                direct_channel(&plane.data, &offsets, k, b, &mut wide);
                if cols == g.ow {
                    dst.copy_from_slice(&wide[..ohw]);
                } else {
                    for (d, s) in dst.chunks_exact_mut(g.ow).zip(wide.chunks_exact(cols)) {
                        d.copy_from_slice(&s[..g.ow]);
                    }
                }
                // The bias was the taps' starting value.
                epilogue.apply(m, None, dst);
            }
        }
    }
}

multiversion! {
    /// `out[i] = bias + Σ_t k[t] · plane[offsets[t] + i]` over the whole (wide) output.
    fn direct_channel(plane: &[f32], offsets: &[usize], k: &[f32], bias: f32, out: &mut [f32]) {
        // The common kernel sizes keep all taps in registers and make one pass; others go
        // tap by tap. Both add bias then taps in the same order: identical results.
        match offsets.len() {
            9 => all_taps::<9>(plane, offsets, k, bias, out),
            25 => all_taps::<25>(plane, offsets, k, bias, out),
            _ => {
                out.fill(bias);
                let n = out.len();
                for (&off, &kv) in offsets.iter().zip(k) {
                    for (o, &v) in out.iter_mut().zip(&plane[off..off + n]) {
                        *o += kv * v;
                    }
                }
            }
        }
    }
}

/// f32 lanes of the widest vectors the kernels are written for (AVX-512).
const LANES: usize = 16;

/// All taps for each output position, in blocks of outputs whose sums are independent,
/// so that the additions of different blocks overlap instead of waiting on each other.
#[inline(always)]
fn all_taps<const T: usize>(
    plane: &[f32],
    offsets: &[usize],
    k: &[f32],
    bias: f32,
    out: &mut [f32],
) {
    // Copies, not `array::from_fn`, which may stay an out-of-line call compiled without
    // the caller's instruction set.
    let (mut offs, mut kv) = ([0usize; T], [0.0f32; T]);
    offs.copy_from_slice(&offsets[..T]);
    kv.copy_from_slice(&k[..T]);
    let (offsets, k) = (offs, kv);
    let n = out.len();
    let mut j = 0;
    while j + 4 * LANES <= n {
        tap_block::<T, { 4 * LANES }>(plane, &offsets, &k, bias, j, &mut out[j..]);
        j += 4 * LANES;
    }
    while j + LANES <= n {
        tap_block::<T, LANES>(plane, &offsets, &k, bias, j, &mut out[j..]);
        j += LANES;
    }
    while j < n {
        tap_block::<T, 1>(plane, &offsets, &k, bias, j, &mut out[j..]);
        j += 1;
    }
}

/// `out[u] = bias + Σ_t k[t] · plane[offsets[t] + j + u]` for `u < B`, taps in order.
#[inline(always)]
fn tap_block<const T: usize, const B: usize>(
    plane: &[f32],
    offsets: &[usize; T],
    k: &[f32; T],
    bias: f32,
    j: usize,
    out: &mut [f32],
) {
    let mut acc = [bias; B];
    for t in 0..T {
        let src = &plane[offsets[t] + j..offsets[t] + j + B];
        for u in 0..B {
            acc[u] += k[t] * src[u];
        }
    }
    out[..B].copy_from_slice(&acc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_range_matches_brute_force() {
        for out in 0..6 {
            for len in 0..6 {
                for stride in 1..4 {
                    for offset in 0..5 {
                        for pad in 0..4 {
                            let ok: Vec<usize> = (0..out)
                                .filter(|&o| {
                                    let p = (o * stride + offset) as isize - pad as isize;
                                    p >= 0 && (p as usize) < len
                                })
                                .collect();
                            let (lo, hi) = valid_range(out, len, stride, offset, pad);
                            assert_eq!((lo..hi).collect::<Vec<_>>(), ok);
                        }
                    }
                }
            }
        }
    }
}
