//! Second moments of a linear layer's input patches: `H_g = Σ x xᵀ` per group (the
//! weight-fit objective) and the mean patch per group (exact bias correction).

use lutq_ir::int::ConvGeom;
use rayon::prelude::*;

/// A sample's element as the statistics read it: a real value (`f32`), or an integer `q`
/// of a quantized tensor standing for `q · step` (exact in f32, see [`SampleView`]).
pub(crate) trait Element: Copy + Sync {
    fn real(self, step: f32) -> f32;
    /// `Σ_t real(row[t · stride])` for `t < len`, as f64.
    fn row_sum(row: &[Self], stride: usize, len: usize, step: f32) -> f64;
}

impl Element for f32 {
    #[inline(always)]
    fn real(self, _step: f32) -> f32 {
        self
    }

    fn row_sum(row: &[f32], stride: usize, len: usize, _step: f32) -> f64 {
        if stride == 1 {
            sum32(&row[..len])
        } else {
            row.iter().step_by(stride).take(len).sum::<f32>() as f64
        }
    }
}

/// Integers sum exactly (in `i64`); the f32 sum of their real values gives the same
/// value whenever it is exact itself (every partial sum below 2^24 steps: a row of
/// fewer than 65 793 bytes).
macro_rules! integer_element {
    ($t:ty) => {
        impl Element for $t {
            #[inline(always)]
            fn real(self, step: f32) -> f32 {
                self as f32 * step
            }

            fn row_sum(row: &[$t], stride: usize, len: usize, step: f32) -> f64 {
                let total: i64 = if stride == 1 {
                    row[..len].iter().map(|&q| q as i64).sum()
                } else {
                    row.iter()
                        .step_by(stride)
                        .take(len)
                        .map(|&q| q as i64)
                        .sum()
                };
                total as f64 * step as f64
            }
        }
    };
}
integer_element!(i8);
integer_element!(u8);

/// One sample as [`patch_statistics`] reads it: real values, or a quantized tensor's
/// integers with their step `2^-exp` (dequantized only where a patch reads them).
#[derive(Clone, Copy)]
pub enum SampleView<'a> {
    Real(&'a [f32]),
    I8(&'a [i8], f32),
    U8(&'a [u8], f32),
}

/// Calls `$body` with `$x` bound to the view's elements and `$step` to its step.
macro_rules! with_elements {
    ($view:expr, |$x:ident, $step:ident| $body:expr) => {
        match $view {
            SampleView::Real($x) => {
                let $step = 1.0f32;
                $body
            }
            SampleView::I8($x, $step) => $body,
            SampleView::U8($x, $step) => $body,
        }
    };
}

/// A layer's input geometry, dense layers included (`1×1` kernel on a `K×1×1` input).
#[derive(Clone)]
pub struct PatchGeometry {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    /// top, left, bottom, right.
    pub pads: [usize; 4],
    pub dilations: [usize; 2],
    pub groups: usize,
    pub out_height: usize,
    pub out_width: usize,
}

impl PatchGeometry {
    /// A conv's (or, with `conv = None`, a dense layer's) input geometry, from its input
    /// and output shapes and its `[O, C/groups, kh, kw]` weight shape.
    pub(crate) fn of_layer(
        in_shape: &[usize],
        out_shape: &[usize],
        weights: [usize; 4],
        conv: Option<&ConvGeom>,
    ) -> PatchGeometry {
        match conv {
            Some(c) => PatchGeometry {
                channels: in_shape[1],
                height: in_shape[2],
                width: in_shape[3],
                kernel: [weights[2], weights[3]],
                strides: c.strides,
                pads: c.pads,
                dilations: c.dilations,
                groups: c.group,
                out_height: out_shape[2],
                out_width: out_shape[3],
            },
            None => PatchGeometry {
                channels: weights[1] * weights[2] * weights[3],
                height: 1,
                width: 1,
                kernel: [1, 1],
                strides: [1, 1],
                pads: [0; 4],
                dilations: [1, 1],
                groups: 1,
                out_height: 1,
                out_width: 1,
            },
        }
    }

    /// Elements per patch (per group).
    pub fn patch_len(&self) -> usize {
        self.channels / self.groups * self.kernel[0] * self.kernel[1]
    }

    /// A 1×1 convolution with stride 1 and no padding (or a dense layer): each patch is
    /// the input's channels at one position.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1]
            && self.strides == [1, 1]
            && self.pads == [0; 4]
            && (self.out_height, self.out_width) == (self.height, self.width)
    }

    /// Output positions per sample.
    pub(crate) fn positions(&self) -> usize {
        self.out_height * self.out_width
    }

    /// Writes the patch of group `g` at output position `pos` (row-major) of `x`.
    pub(crate) fn patch_at(&self, x: &[f32], g: usize, pos: usize, out: &mut [f32]) {
        self.patch(x, 1.0, g, pos / self.out_width, pos % self.out_width, out);
    }

    /// Writes the patch of group `g` at output position `(oy, ox)` of `x` (`[C][H][W]`,
    /// elements of `step`).
    fn patch<T: Element>(
        &self,
        x: &[T],
        step: f32,
        g: usize,
        oy: usize,
        ox: usize,
        out: &mut [f32],
    ) {
        let cg = self.channels / self.groups;
        let [kh, kw] = self.kernel;
        let iy0 = (oy * self.strides[0]) as isize - self.pads[0] as isize;
        let ix0 = (ox * self.strides[1]) as isize - self.pads[1] as isize;
        let last_y = iy0 + ((kh - 1) * self.dilations[0]) as isize;
        let last_x = ix0 + ((kw - 1) * self.dilations[1]) as isize;
        if iy0 >= 0 && ix0 >= 0 && last_y < self.height as isize && last_x < self.width as isize {
            // Interior window (most positions): no padding checks.
            let (iy0, ix0) = (iy0 as usize, ix0 as usize);
            let mut i = 0;
            for ic in g * cg..(g + 1) * cg {
                let plane = &x[ic * self.height * self.width..(ic + 1) * self.height * self.width];
                for ky in 0..kh {
                    let row = (iy0 + ky * self.dilations[0]) * self.width + ix0;
                    for kx in 0..kw {
                        out[i] = plane[row + kx * self.dilations[1]].real(step);
                        i += 1;
                    }
                }
            }
            return;
        }
        let mut i = 0;
        for ic in g * cg..(g + 1) * cg {
            let plane = &x[ic * self.height * self.width..(ic + 1) * self.height * self.width];
            for ky in 0..kh {
                let iy = (oy * self.strides[0] + ky * self.dilations[0]) as isize
                    - self.pads[0] as isize;
                for kx in 0..kw {
                    let ix = (ox * self.strides[1] + kx * self.dilations[1]) as isize
                        - self.pads[1] as isize;
                    out[i] = if iy >= 0
                        && ix >= 0
                        && (iy as usize) < self.height
                        && (ix as usize) < self.width
                    {
                        plane[iy as usize * self.width + ix as usize].real(step)
                    } else {
                        0.0
                    };
                    i += 1;
                }
            }
        }
    }
}

impl PatchGeometry {
    /// For the kernel taps `(ky, kx)` in patch order, the plane offset of each of
    /// `positions`' input at that tap (`u32::MAX` where it falls into padding):
    /// `kh · kw` rows of `positions.len()` offsets.
    fn tap_offsets(&self, positions: &[(usize, usize)]) -> Vec<u32> {
        let [kh, kw] = self.kernel;
        let n = positions.len();
        let mut taps = vec![u32::MAX; kh * kw * n];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = &mut taps[(ky * kw + kx) * n..][..n];
                for (slot, &(oy, ox)) in row.iter_mut().zip(positions) {
                    let iy = (oy * self.strides[0] + ky * self.dilations[0]) as isize
                        - self.pads[0] as isize;
                    let ix = (ox * self.strides[1] + kx * self.dilations[1]) as isize
                        - self.pads[1] as isize;
                    if iy >= 0
                        && ix >= 0
                        && (iy as usize) < self.height
                        && (ix as usize) < self.width
                    {
                        *slot = (iy as usize * self.width + ix as usize) as u32;
                    }
                }
            }
        }
        taps
    }

    /// The patches of group `g` of `x` (`[C][H][W]`) at the positions of `taps`
    /// ([`Self::tap_offsets`], `n` of them) as columns: `cols[i · col_stride + q]` is
    /// element `i` of the patch at position `q`, exactly what [`Self::patch`] writes
    /// there (0 in padding).
    #[allow(clippy::too_many_arguments)]
    fn gather_columns<T: Element>(
        &self,
        x: &[T],
        step: f32,
        g: usize,
        taps: &[u32],
        n: usize,
        cols: &mut [f32],
        col_stride: usize,
    ) {
        let cg = self.channels / self.groups;
        let taps_per_channel = self.kernel[0] * self.kernel[1];
        let plane_len = self.height * self.width;
        for ic in 0..cg {
            let c = g * cg + ic;
            let plane = &x[c * plane_len..(c + 1) * plane_len];
            for t in 0..taps_per_channel {
                let i = ic * taps_per_channel + t;
                let out = &mut cols[i * col_stride..i * col_stride + n];
                for (v, &o) in out.iter_mut().zip(&taps[t * n..(t + 1) * n]) {
                    *v = plane.get(o as usize).map_or(0.0, |q| q.real(step));
                }
            }
        }
    }

    /// The patches of group `g` of `x` at the output positions `positions` (row-major
    /// indices) as rows: the patch at `positions[q]` into `rows[q · row_stride..][..k]`,
    /// what [`Self::patch_at`] writes. A pointwise layer's are copied channel by channel
    /// (each channel's plane read in position order).
    fn gather_rows<T: Element>(
        &self,
        x: &[T],
        step: f32,
        g: usize,
        positions: &[usize],
        rows: &mut [f32],
        row_stride: usize,
    ) {
        let k = self.patch_len();
        if self.is_pointwise() {
            let plane_len = self.height * self.width;
            for ic in 0..k {
                let plane = &x[(g * k + ic) * plane_len..][..plane_len];
                for (q, &p) in positions.iter().enumerate() {
                    rows[q * row_stride + ic] = plane[p].real(step);
                }
            }
        } else {
            for (q, &p) in positions.iter().enumerate() {
                let out = &mut rows[q * row_stride..q * row_stride + k];
                self.patch(x, step, g, p / self.out_width, p % self.out_width, out);
            }
        }
    }
}

impl PatchGeometry {
    /// Adds, for every group and patch element, the sum over all output positions of
    /// that element (zero where it falls into padding) to `sums`. Per tap, the output
    /// positions whose input lies inside the plane form a rectangle: sum it directly.
    fn add_patch_sums<T: Element>(&self, x: &[T], step: f32, sums: &mut [Vec<f64>]) {
        let cg = self.channels / self.groups;
        let [kh, kw] = self.kernel;
        // Per tap of one axis (`taps` of them; axis 0: rows, 1: columns): the input
        // offset `k·d − pad` and the range of output indices `o` whose input
        // `o·s + k·d − pad` is inside the plane (the same for every channel).
        let axis_taps = |axis: usize, taps: usize, out: usize, size: usize| {
            let s = self.strides[axis];
            (0..taps)
                .map(|t| {
                    let off = (t * self.dilations[axis]) as isize - self.pads[axis] as isize;
                    let lo = if off >= 0 {
                        0
                    } else {
                        ((-off) as usize).div_ceil(s)
                    };
                    let hi = if (size as isize) <= off {
                        0
                    } else {
                        ((size as isize - off - 1) as usize / s + 1).min(out)
                    };
                    (off, lo, hi.max(lo))
                })
                .collect::<Vec<(isize, usize, usize)>>()
        };
        let tap_rows = axis_taps(0, kh, self.out_height, self.height);
        let tap_columns = axis_taps(1, kw, self.out_width, self.width);
        // Per tap column `kx`, the sum of every input row over the columns that tap
        // reads (one f64 per row), computed once and shared by the `kh` taps of that
        // column: each tap's total adds the same row sums in the same order as summing
        // its rectangle row by row.
        let mut row_sums = vec![0f64; self.height];
        // The input rows some tap reads (a 1×1 kernel at stride 2 reads every other one).
        let mut needed = vec![false; self.height];
        for &(offy, y0, y1) in &tap_rows {
            for oy in y0..y1 {
                needed[((oy * self.strides[0]) as isize + offy) as usize] = true;
            }
        }
        for c in 0..self.channels {
            let (g, ic) = (c / cg, c % cg);
            let plane = &x[c * self.height * self.width..(c + 1) * self.height * self.width];
            for (kx, &(offx, x0, x1)) in tap_columns.iter().enumerate() {
                let row_sum = |row: usize| -> f64 {
                    // The first valid tap of this row; the rest follow at the stride.
                    let start = ((row * self.width) as isize
                        + (x0 * self.strides[1]) as isize
                        + offx) as usize;
                    T::row_sum(&plane[start..], self.strides[1], x1 - x0, step)
                };
                // A tap column entirely in the padding reads nothing: its taps add 0.
                let columns_in_range = x1 > x0;
                if columns_in_range {
                    for (row, s) in row_sums.iter_mut().enumerate() {
                        if needed[row] {
                            *s = row_sum(row);
                        }
                    }
                }
                for (ky, &(offy, y0, y1)) in tap_rows.iter().enumerate() {
                    let mut total = 0f64;
                    if columns_in_range {
                        for oy in y0..y1 {
                            let row = ((oy * self.strides[0]) as isize + offy) as usize;
                            total += row_sums[row];
                        }
                    }
                    sums[g][(ic * kh + ky) * kw + kx] += total;
                }
            }
        }
    }
}

/// What [`patch_statistics`] returns, per group.
pub struct PatchStatistics {
    /// `patch_len²`, row-major, summed over the sampled patches.
    pub hessians: Vec<Vec<f64>>,
    /// Mean patch over every position of every sample.
    pub means: Vec<Vec<f64>>,
    /// With float targets: per row `o` of the layer (group `g`), `C_g w_o` with
    /// `C_g = Σ x̂ xᵀ` over the same patches as `H` (`x̂` the quantized input's patch, `x`
    /// the float model's at the same position): `rows × patch_len`, row-major. Empty
    /// without. The fit needs `C` only through these products (`fit/target.rs`).
    pub cross_rows: Vec<f64>,
}

impl PatchStatistics {
    /// The statistics of two disjoint sets of samples together (`a` from `a_samples`
    /// samples, `b` from `b_samples`): the moments add, the means average by sample
    /// count (every sample has the same positions).
    pub fn merged(a: &Self, a_samples: usize, b: &Self, b_samples: usize) -> Self {
        let sum = |x: &[Vec<f64>], y: &[Vec<f64>]| -> Vec<Vec<f64>> {
            x.iter()
                .zip(y)
                .map(|(u, v)| u.iter().zip(v).map(|(p, q)| p + q).collect())
                .collect()
        };
        let n = (a_samples + b_samples).max(1) as f64;
        let (wa, wb) = (a_samples as f64 / n, b_samples as f64 / n);
        PatchStatistics {
            hessians: sum(&a.hessians, &b.hessians),
            means: a
                .means
                .iter()
                .zip(&b.means)
                .map(|(u, v)| u.iter().zip(v).map(|(p, q)| wa * p + wb * q).collect())
                .collect(),
            cross_rows: a
                .cross_rows
                .iter()
                .zip(&b.cross_rows)
                .map(|(p, q)| p + q)
                .collect(),
        }
    }

    /// Sets row `o`'s `C w_o` (`patch_len` long) to zero, as if `w_o` were zero (a
    /// constant channel whose weights are fitted as zeros).
    pub fn zero_cross_row(&mut self, o: usize, patch_len: usize) {
        let k = patch_len;
        if let Some(r) = self.cross_rows.get_mut(o * k..(o + 1) * k) {
            r.fill(0.0);
        }
    }
}

/// The float model's values of a layer's input and the layer's weights: what the cross
/// moments `C_g w_o` of [`PatchStatistics::cross_rows`] are made of.
#[derive(Clone, Copy)]
pub struct FloatTargets<'a> {
    /// One per sample (`[C][H][W]`, the float model's values of the same tensor).
    pub values: &'a [Vec<f32>],
    /// The layer's rows, `rows × patch_len` row-major, split into the geometry's groups
    /// in order.
    pub weights: &'a [f32],
}

/// Patches above this length go through the GEMM in blocks; shorter ones (depthwise
/// 3×3) are summed directly.
const GEMM_MIN_LEN: usize = 32;
const BLOCK_ROWS: usize = 512;
/// Rows of `H` per GEMM call (a multiple of the GEMM's 6-wide micro-tile): each call
/// computes the strip's entries on and right of the diagonal only.
const STRIP: usize = 96;
/// Samples per unit of parallel work.
const CHUNK: usize = 4;

/// How `C_g w_o` is summed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CrossRoute {
    /// No float targets.
    None,
    /// `C_g` (`k × k`) beside `H` in the same GEMMs, multiplied by the rows at the end:
    /// `k²` products per patch; cheaper when a group has at least `k / 2` rows
    /// (expansions, first layers).
    Matrix,
    /// Through the float outputs: per patch `y_o = w_oᵀ x`, then `Σ x̂ y_o`: `2 · rows ·
    /// k` products per patch instead of `k²` (projections, depthwise, 3 × 3 convs).
    Outputs,
}

struct Partial {
    /// Patches through the GEMM: per group, `k × w` (`w = 2k` with the cross matrix,
    /// else `k`), `[H | C]` with only the upper triangle of `H` computed.
    gram: Vec<Vec<f32>>,
    small: Vec<Vec<f64>>,
    cross_small: Vec<Vec<f64>>,
    /// [`CrossRoute::Outputs`] through the GEMM: per group `rows_per_group × k`.
    cross_rows: Vec<Vec<f32>>,
    sums: Vec<Vec<f64>>,
    positions: usize,
}

/// Buffers a chunk of samples reuses: patch rows, columns, float outputs.
#[derive(Default)]
struct Scratch {
    block: Vec<f32>,
    cols: Vec<f32>,
    tcols: Vec<f32>,
    outputs: Vec<f32>,
}

/// The samples [`patch_statistics`] reads (each `[C][H][W]`), one at a time: a
/// quantized layer input as its integers, dequantized only where a patch reads them
/// (most layers sample a small share of their positions; the means sum the integers),
/// so that the whole set never exists in f32.
pub trait Samples: Sync {
    fn count(&self) -> usize;
    /// Sample `s`: borrowed where it can be, otherwise its real values written into
    /// `buf` (replacing its contents).
    fn view<'a>(&'a self, s: usize, buf: &'a mut Vec<f32>) -> SampleView<'a>;
}

impl Samples for [Vec<f32>] {
    fn count(&self) -> usize {
        self.len()
    }

    fn view<'a>(&'a self, s: usize, _buf: &'a mut Vec<f32>) -> SampleView<'a> {
        SampleView::Real(&self[s])
    }
}

/// Integer values `q · 2^-exp` ([`IntData::to_f32_into`](lutq_interp::IntData::to_f32_into)).
pub struct Dequantized<'a> {
    pub data: &'a [lutq_interp::IntData],
    pub exp: i32,
}

/// Exponents whose steps and byte multiples are normal f32 numbers: `q · 2^-exp` is then
/// the same f32 however it is computed.
const EXACT_EXPONENTS: std::ops::RangeInclusive<i32> = -100..=100;

impl Samples for Dequantized<'_> {
    fn count(&self) -> usize {
        self.data.len()
    }

    fn view<'a>(&'a self, s: usize, buf: &'a mut Vec<f32>) -> SampleView<'a> {
        use lutq_interp::IntData;
        let exact = EXACT_EXPONENTS.contains(&self.exp);
        let step = (-(self.exp as f64)).exp2() as f32;
        match &self.data[s] {
            IntData::I8(v) if exact => SampleView::I8(v, step),
            IntData::U8(v) if exact => SampleView::U8(v, step),
            other => {
                other.to_f32_into(self.exp, buf);
                SampleView::Real(buf)
            }
        }
    }
}

/// Statistics of the patches of `samples`: `H` from at most `max_patches` positions
/// spread evenly over all samples, means from all of them. With `targets`, also the
/// rows' cross moments `C_g w_o` over the same positions: through the float outputs
/// where that is cheaper ([`CrossRoute::Outputs`]), otherwise through the cross matrix.
/// The sums run in blocks across the `CHUNK` samples of a chunk.
pub fn patch_statistics(
    geom: &PatchGeometry,
    samples: &(impl Samples + ?Sized),
    targets: Option<FloatTargets<'_>>,
    max_patches: usize,
) -> PatchStatistics {
    patch_statistics_with(geom, samples, targets, max_patches, None)
}

/// [`patch_statistics`]; `route`: the cross moments' [`CrossRoute`] instead of the
/// default one.
fn patch_statistics_with(
    geom: &PatchGeometry,
    samples: &(impl Samples + ?Sized),
    targets: Option<FloatTargets<'_>>,
    max_patches: usize,
    route: Option<CrossRoute>,
) -> PatchStatistics {
    let sample_count = samples.count();
    let k = geom.patch_len();
    let groups = geom.groups;
    if let Some(t) = targets {
        assert_eq!(t.values.len(), sample_count, "one float target per sample");
        assert!(
            k > 0 && t.weights.len().is_multiple_of(k * groups),
            "the rows must split into the groups"
        );
    }
    let rpg = targets.map_or(0, |t| t.weights.len() / (k * groups));
    let route = route.unwrap_or(match targets {
        None => CrossRoute::None,
        Some(_) if 2 * rpg < k => CrossRoute::Outputs,
        Some(_) => CrossRoute::Matrix,
    });
    let per_sample = geom.out_height * geom.out_width;
    let total = per_sample * sample_count;
    let stride = total.div_ceil(max_patches.max(1)).max(1);
    let big = k >= GEMM_MIN_LEN;
    // A copied GEMM row: the patch, then (with targets) the target's patch at the same
    // position; the GEMM's accumulator: `H`, then `C` with the cross matrix.
    let row_width = if targets.is_some() { 2 * k } else { k };
    let gram_width = if route == CrossRoute::Matrix {
        2 * k
    } else {
        k
    };
    let empty = || Partial {
        gram: if big {
            vec![vec![0f32; k * gram_width]; groups]
        } else {
            Vec::new()
        },
        small: if big {
            Vec::new()
        } else {
            vec![vec![0f64; k * k]; groups]
        },
        cross_small: match (big, route) {
            (false, CrossRoute::Matrix) => vec![vec![0f64; k * k]; groups],
            (false, CrossRoute::Outputs) => vec![vec![0f64; rpg * k]; groups],
            _ => Vec::new(),
        },
        cross_rows: if big && route == CrossRoute::Outputs {
            vec![vec![0f32; rpg * k]; groups]
        } else {
            Vec::new()
        },
        sums: vec![vec![0f64; k]; groups],
        positions: 0,
    };
    let group_rows = |g: usize| -> &[f32] {
        targets.map_or(&[], |t| &t.weights[g * rpg * k..(g + 1) * rpg * k])
    };
    // `H` (and `C`) in one GEMM per strip of rows of `H`: `Xᵀ [X | T]` over the block's
    // patch rows `[x | t]`, from the strip's diagonal rightwards (`H` is symmetric:
    // its lower triangle is the upper one mirrored at the end). Every entry is the
    // same sum as in one whole `Xᵀ X` or `Xᵀ T` product: the GEMM sums each entry
    // over the block's rows in order, whatever the shape around it.
    let flush = |acc: &mut Partial, g: usize, rows: &[f32], outputs: &mut Vec<f32>| {
        let n = rows.len() / row_width;
        for i0 in (0..k).step_by(STRIP) {
            let m = STRIP.min(k - i0);
            lutq_interp::sgemm(
                m,
                gram_width - i0,
                n,
                1.0,
                &rows[i0..],
                lutq_interp::transposed(row_width),
                &rows[i0..],
                lutq_interp::row_major(row_width),
                true,
                &mut acc.gram[g][i0 * gram_width + i0..],
                lutq_interp::row_major(gram_width),
            );
        }
        if route == CrossRoute::Outputs {
            // The block's float outputs `Y = W Tᵀ` (`rows × n`), then `C w += Y X`
            // (`rows × k`).
            outputs.resize(rpg * n, 0.0);
            lutq_interp::sgemm(
                rpg,
                n,
                k,
                1.0,
                group_rows(g),
                lutq_interp::row_major(k),
                &rows[k..],
                lutq_interp::transposed(row_width),
                false,
                outputs,
                lutq_interp::row_major(n),
            );
            lutq_interp::sgemm(
                rpg,
                k,
                n,
                1.0,
                outputs,
                lutq_interp::row_major(n),
                rows,
                lutq_interp::row_major(row_width),
                true,
                &mut acc.cross_rows[g],
                lutq_interp::row_major(k),
            );
        }
    };
    // One chunk of samples (`xs`, read in order) into `acc`: their patches in blocks of
    // up to `BLOCK_ROWS` positions across the chunk's samples (deeper GEMM sums, fewer
    // passes over the accumulators), the short patches' columns over the whole chunk.
    let add_chunk = |acc: &mut Partial,
                     chunk: &[usize],
                     xs: &[SampleView<'_>],
                     scratch: &mut Scratch| {
        for x in xs {
            with_elements!(*x, |v, step| geom.add_patch_sums(v, step, &mut acc.sums));
            acc.positions += per_sample;
        }
        // Global positions t = s · per_sample + p with t % stride == 0.
        let sampled: Vec<Vec<usize>> = chunk
            .iter()
            .map(|&s| {
                let first = (stride - (s * per_sample) % stride) % stride;
                (first..per_sample).step_by(stride).collect()
            })
            .collect();
        let total: usize = sampled.iter().map(Vec::len).sum();
        if total == 0 {
            return;
        }
        if big {
            // Rows `[x | t]` per position, `cap` of them per group.
            let cap = total.min(BLOCK_ROWS);
            scratch.block.resize(cap * row_width * groups, 0.0);
            let mut filled = 0;
            let mut left = total;
            for ((&s, x), positions) in chunk.iter().zip(xs).zip(&sampled) {
                let target = targets.map(|t| t.values[s].as_slice());
                let mut rest = positions.as_slice();
                while !rest.is_empty() {
                    let run = rest.len().min(cap - filled);
                    let (now, later) = rest.split_at(run);
                    for (g, rows) in scratch.block.chunks_exact_mut(cap * row_width).enumerate() {
                        let rows = &mut rows[filled * row_width..];
                        with_elements!(*x, |v, step| {
                            geom.gather_rows(v, step, g, now, rows, row_width)
                        });
                        if let Some(t) = target {
                            geom.gather_rows(t, 1.0, g, now, &mut rows[k..], row_width);
                        }
                    }
                    filled += run;
                    left -= run;
                    rest = later;
                    if filled == cap || left == 0 {
                        for g in 0..groups {
                            let rows = &scratch.block[g * cap * row_width..][..filled * row_width];
                            flush(acc, g, rows, &mut scratch.outputs);
                        }
                        filled = 0;
                    }
                }
            }
        } else {
            // Short patches (depthwise 3×3: 9 elements, hundreds of groups): per group,
            // the chunk's patches column by column, then one contiguous dot product per
            // matrix entry (vectorized), the upper triangle of the symmetric `H` only.
            // Every group reads its channels at the same plane offsets: they are computed
            // once per sample (`taps`), and each column is one gather from a plane.
            let n = total;
            let taps: Vec<Vec<u32>> = sampled
                .iter()
                .map(|p| {
                    let yx: Vec<(usize, usize)> = p
                        .iter()
                        .map(|&p| (p / geom.out_width, p % geom.out_width))
                        .collect();
                    geom.tap_offsets(&yx)
                })
                .collect();
            let (cols, tcols, outputs) =
                (&mut scratch.cols, &mut scratch.tcols, &mut scratch.outputs);
            cols.resize(k * n, 0.0);
            tcols.resize(if targets.is_some() { k * n } else { 0 }, 0.0);
            for g in 0..groups {
                let mut at = 0;
                for (((&s, x), positions), taps) in chunk.iter().zip(xs).zip(&sampled).zip(&taps) {
                    let m = positions.len();
                    with_elements!(*x, |v, step| {
                        geom.gather_columns(v, step, g, taps, m, &mut cols[at..], n)
                    });
                    if let Some(t) = targets {
                        let t = &t.values[s];
                        geom.gather_columns(t, 1.0, g, taps, m, &mut tcols[at..], n);
                    }
                    at += m;
                }
                // Per row `i`, the dot products of column `i` with the columns `j ≥ i`
                // (`H`), several at a time ([`dots32`]: column `i` is loaded once for all
                // of them, and their independent sums overlap), each added to its entry.
                let h = &mut acc.small[g];
                for i in 0..k {
                    let ci = &cols[i * n..(i + 1) * n];
                    add_dots(ci, &mut h[i * k + i..(i + 1) * k], &cols[i * n..], n);
                }
                match route {
                    CrossRoute::None => {}
                    CrossRoute::Matrix => {
                        // With every target column (`C`).
                        let c = &mut acc.cross_small[g];
                        for i in 0..k {
                            let ci = &cols[i * n..(i + 1) * n];
                            add_dots(ci, &mut c[i * k..(i + 1) * k], tcols, n);
                        }
                    }
                    CrossRoute::Outputs => {
                        // Per row, its float outputs `y_q = Σ_i w_i t_iq` (in tap order),
                        // then the dot products of `y` with every column.
                        let c = &mut acc.cross_small[g];
                        outputs.resize(n, 0.0);
                        for (o, w) in group_rows(g).chunks_exact(k).enumerate() {
                            outputs.fill(0.0);
                            for (&wi, ti) in w.iter().zip(tcols.chunks_exact(n)) {
                                for (y, &t) in outputs.iter_mut().zip(ti) {
                                    *y += wi * t;
                                }
                            }
                            add_dots(outputs, &mut c[o * k..(o + 1) * k], cols, n);
                        }
                    }
                }
            }
        }
    };
    // Fixed chunks summed in order: the result does not depend on the thread count
    // (float sums are not associative, and the fit must be reproducible).
    let partials: Vec<Partial> = (0..sample_count.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let chunk: Vec<usize> = (c * CHUNK..((c + 1) * CHUNK).min(sample_count)).collect();
            let (mut acc, mut scratch) = (empty(), Scratch::default());
            let mut buffers = vec![Vec::new(); chunk.len()];
            let xs: Vec<SampleView<'_>> = chunk
                .iter()
                .zip(&mut buffers)
                .map(|(&s, buf)| samples.view(s, buf))
                .collect();
            add_chunk(&mut acc, &chunk, &xs, &mut scratch);
            acc
        })
        .collect();
    let partial = partials.into_iter().fold(empty(), |mut a, b| {
        add_into(&mut a.gram, &b.gram);
        add_into(&mut a.small, &b.small);
        add_into(&mut a.cross_small, &b.cross_small);
        add_into(&mut a.cross_rows, &b.cross_rows);
        add_into(&mut a.sums, &b.sums);
        a.positions += b.positions;
        a
    });
    let n = partial.positions.max(1) as f64;
    let (hessians, cross) = if big {
        split_gram(&partial.gram, k, route == CrossRoute::Matrix)
    } else {
        // Only the upper triangle was accumulated.
        let mut small = partial.small;
        for h in &mut small {
            for i in 0..k {
                for j in 0..i {
                    h[i * k + j] = h[j * k + i];
                }
            }
        }
        (small, partial.cross_small)
    };
    let cross_rows = match (route, targets) {
        (CrossRoute::Matrix, Some(t)) => {
            crate::fit::cross_times_rows(t.weights, rpg * groups, k, &cross)
        }
        (CrossRoute::Outputs, _) if big => partial
            .cross_rows
            .iter()
            .flatten()
            .map(|&v| v as f64)
            .collect(),
        (CrossRoute::Outputs, _) => cross.concat(),
        _ => Vec::new(),
    };
    PatchStatistics {
        hessians,
        means: partial
            .sums
            .into_iter()
            .map(|s| s.into_iter().map(|v| v / n).collect())
            .collect(),
        cross_rows,
    }
}

/// The GEMM accumulators `[H | C]` (`k × 2k`, or `k × k` without `C`; only the upper
/// triangle of `H`) as f64 matrices: `H` mirrored whole, and `C` (empty without).
fn split_gram(gram: &[Vec<f32>], k: usize, crossed: bool) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let width = if crossed { 2 * k } else { k };
    let hessians = gram
        .iter()
        .map(|m| {
            let mut h = vec![0f64; k * k];
            for i in 0..k {
                for j in i..k {
                    let v = m[i * width + j] as f64;
                    h[i * k + j] = v;
                    h[j * k + i] = v;
                }
            }
            h
        })
        .collect();
    let cross = if crossed {
        gram.iter()
            .map(|m| {
                m.chunks_exact(width)
                    .flat_map(|row| row[k..].iter().map(|&v| v as f64))
                    .collect()
            })
            .collect()
    } else {
        Vec::new()
    };
    (hessians, cross)
}

/// `a += b`, matrix by matrix, element by element.
fn add_into<T: Copy + std::ops::AddAssign>(a: &mut [Vec<T>], b: &[Vec<T>]) {
    for (x, y) in a.iter_mut().zip(b) {
        for (u, v) in x.iter_mut().zip(y) {
            *u += *v;
        }
    }
}

/// `Σ a_i` in f32 lanes (vectorized like [`dots32`]; a plain `sum()` over f32 is one
/// dependent add per element), returned as f64.
fn sum32(a: &[f32]) -> f64 {
    let mut lanes = [0f32; 8];
    let chunks = a.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for x in chunks {
        for l in 0..8 {
            lanes[l] += x[l];
        }
    }
    lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}

/// `dst[j] += Σ_q a_q cols[j · n + q]` for every `j` (`a` has `n` elements), [`DOTS`] at
/// a time ([`dots32`]).
fn add_dots(a: &[f32], dst: &mut [f64], cols: &[f32], n: usize) {
    for (b, d) in dst.chunks_mut(DOTS).enumerate() {
        let col = |t: usize| &cols[(b * DOTS + t) * n..][..n];
        let mut sums = [0f64; DOTS];
        let len = d.len();
        match len {
            1 => sums[..1].copy_from_slice(&dots32(a, [col(0)])),
            2 => sums[..2].copy_from_slice(&dots32(a, [col(0), col(1)])),
            3 => sums[..3].copy_from_slice(&dots32(a, [col(0), col(1), col(2)])),
            4 => sums[..4].copy_from_slice(&dots32(a, [col(0), col(1), col(2), col(3)])),
            5 => sums[..5].copy_from_slice(&dots32(a, [col(0), col(1), col(2), col(3), col(4)])),
            _ => sums = dots32(a, std::array::from_fn(col)),
        }
        for (d, s) in d.iter_mut().zip(&sums[..len]) {
            *d += s;
        }
    }
}

/// Dot products computed together by [`dots32`]: `DOTS` accumulators of 8 lanes and the
/// loads of one chunk fit AVX2's 16 registers.
const DOTS: usize = 6;

/// `Σ a_i b_i` for each of `bs` (each as long as `a`), in 8 f32 lanes (lane `l` sums
/// the elements `i ≡ l mod 8` of the whole chunks, in order), the lanes then added as
/// f64 in lane order and the tail's f32 sum last; returned as f64 for accumulation
/// across samples. Each result is the arithmetic of a dot product of its own, so
/// batching changes no bit; it loads `a` once for all of them and overlaps their
/// dependent adds. Multiplies and adds stay separate (no FMA): the same bits with AVX
/// and without.
fn dots32<const M: usize>(a: &[f32], bs: [&[f32]; M]) -> [f64; M] {
    let n = a.len();
    let bs = bs.map(|b| &b[..n]);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports AVX (checked just above).
        return unsafe { dots32_avx(a, bs) };
    }
    let full = n / 8 * 8;
    let mut lanes = [[0f32; 8]; M];
    for c in (0..full).step_by(8) {
        for (acc, b) in lanes.iter_mut().zip(&bs) {
            for l in 0..8 {
                acc[l] += a[c + l] * b[c + l];
            }
        }
    }
    let mut out = [0f64; M];
    for ((o, acc), b) in out.iter_mut().zip(lanes).zip(&bs) {
        *o = finish_dot32(acc, &a[full..], &b[full..]);
    }
    out
}

/// [`dots32`] with 8-lane AVX registers, one accumulator per dot product; every `b` of
/// `bs` as long as `a`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn dots32_avx<const M: usize>(a: &[f32], bs: [&[f32]; M]) -> [f64; M] {
    use std::arch::x86_64::*;
    let n = a.len();
    assert!(bs.iter().all(|b| b.len() == n), "one length");
    let full = n / 8 * 8;
    let mut acc = [_mm256_setzero_ps(); M];
    // SAFETY: every load reads 8 elements at `c` with `c + 8 <= full <= n`, inside `a`
    // and every `b` (all `n` long); the stores write 8 elements into `lanes`.
    unsafe {
        let mut c = 0;
        while c < full {
            let x = _mm256_loadu_ps(a.as_ptr().add(c));
            for (s, b) in acc.iter_mut().zip(&bs) {
                let y = _mm256_loadu_ps(b.as_ptr().add(c));
                *s = _mm256_add_ps(*s, _mm256_mul_ps(x, y));
            }
            c += 8;
        }
        let mut out = [0f64; M];
        for ((o, s), b) in out.iter_mut().zip(acc).zip(&bs) {
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), s);
            *o = finish_dot32(lanes, &a[full..], &b[full..]);
        }
        out
    }
}

/// The lanes added as f64 in lane order, plus the tail's products summed in f32.
#[inline(always)]
fn finish_dot32(lanes: [f32; 8], a: &[f32], b: &[f32]) -> f64 {
    let tail: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Geometry of the direct-computation test: 4 or 12 channels in 2 groups, patches of
    /// 12 (summed directly) or 36 (through the GEMM) elements.
    fn test_geometry(channels: usize) -> PatchGeometry {
        PatchGeometry {
            channels,
            height: 5,
            width: 6,
            kernel: [3, 2],
            strides: [2, 1],
            pads: [1, 0, 1, 1],
            dilations: [1, 2],
            groups: 2,
            out_height: 3,
            out_width: 5,
        }
    }

    #[test]
    fn statistics_match_a_direct_computation() {
        for channels in [4, 12] {
            check_against_direct_computation(&test_geometry(channels));
            // Wide rows: the patch sums' vectorized path (strides[1] == 1, ≥ 8 taps).
            check_against_direct_computation(&PatchGeometry {
                width: 21,
                out_width: 20,
                ..test_geometry(channels)
            });
        }
    }

    #[test]
    fn pointwise_statistics_match_a_direct_computation() {
        // 1×1, two groups of 40 channels (patches through the GEMM), 30 × 31 positions per
        // sample (blocks of rows across samples and within one), every position or every
        // 3rd / 7th one; 4 rows per group (`C w` through the outputs) or 30 (the matrix).
        let geom = PatchGeometry {
            channels: 80,
            height: 30,
            width: 31,
            kernel: [1, 1],
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
            groups: 2,
            out_height: 30,
            out_width: 31,
        };
        assert!(geom.is_pointwise());
        let positions = 6 * geom.positions();
        for max in [usize::MAX, positions / 3, positions / 7] {
            for rows in [4, 30] {
                check_sampled(&geom, 6, rows, max, None);
            }
        }
    }

    #[test]
    fn gathered_rows_are_the_patches() {
        // The pointwise copy and the general one, at scattered positions.
        for geom in [
            test_geometry(12),
            PatchGeometry {
                kernel: [1, 1],
                strides: [1, 1],
                pads: [0; 4],
                dilations: [1, 1],
                out_height: 5,
                out_width: 6,
                ..test_geometry(12)
            },
        ] {
            let len = geom.channels * geom.height * geom.width;
            let x: Vec<f32> = (0..len).map(|i| i as f32 + 1.0).collect();
            let positions: Vec<usize> = (0..geom.positions()).step_by(2).rev().collect();
            let (k, width) = (geom.patch_len(), geom.patch_len() + 3);
            let mut rows = vec![f32::NAN; positions.len() * width];
            let mut patch = vec![0f32; k];
            for g in 0..geom.groups {
                geom.gather_rows(&x, 1.0, g, &positions, &mut rows, width);
                for (q, &p) in positions.iter().enumerate() {
                    geom.patch_at(&x, g, p, &mut patch);
                    assert_eq!(&rows[q * width..q * width + k], patch.as_slice());
                }
            }
        }
    }

    #[test]
    fn batched_dot_products_are_single_ones_bit_for_bit() {
        // The one-at-a-time definition: 8 f32 lanes, lane sums as f64 in order, tail last.
        fn dot32(a: &[f32], b: &[f32]) -> f64 {
            let mut lanes = [0f32; 8];
            let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
            let tail: f32 = ca
                .remainder()
                .iter()
                .zip(cb.remainder())
                .map(|(x, y)| x * y)
                .sum();
            for (x, y) in ca.zip(cb) {
                for l in 0..8 {
                    lanes[l] += x[l] * y[l];
                }
            }
            lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
        }
        for n in [0, 1, 7, 8, 9, 31, 128, 133] {
            let value = |i: usize| ((i * 37 % 101) as f32 - 50.0) * 0.173;
            let a: Vec<f32> = (0..n).map(value).collect();
            // 13 columns: two whole batches of `DOTS` and a short one.
            let cols: Vec<f32> = (0..13 * n).map(|i| value(i * 3 + 1)).collect();
            let mut got = vec![1.5f64; 13];
            add_dots(&a, &mut got, &cols, n);
            for (j, g) in got.iter().enumerate() {
                let want = 1.5 + dot32(&a, &cols[j * n..(j + 1) * n]);
                assert_eq!(g.to_bits(), want.to_bits(), "n {n} column {j}");
            }
        }
    }

    #[test]
    fn dequantized_samples_give_the_statistics_of_their_real_values() {
        // Both paths (GEMM and short patches), with targets; u8 values at exponent 3, i8
        // at exponent -2 (read as integers), i32 (dequantized whole).
        use lutq_interp::IntData;
        type Make = fn(usize) -> IntData;
        let cases: [(Make, i32); 3] = [
            (
                |len| IntData::U8((0..len).map(|i| ((i * 29) % 256) as u8).collect()),
                3,
            ),
            (
                |len| IntData::I8((0..len).map(|i| ((i * 31) % 256) as u8 as i8).collect()),
                -2,
            ),
            (
                |len| IntData::I32((0..len).map(|i| (i as i32 * 37) % 1001 - 500).collect()),
                5,
            ),
        ];
        // Also with a horizontal stride (the row sums step through the integers), and
        // rows of 20 (the f32 sums' 8-lane path).
        let geometries = |c: usize| {
            [
                test_geometry(c),
                PatchGeometry {
                    strides: [1, 2],
                    out_height: 5,
                    out_width: 3,
                    ..test_geometry(c)
                },
                PatchGeometry {
                    width: 20,
                    strides: [1, 1],
                    out_height: 5,
                    out_width: 19,
                    ..test_geometry(c)
                },
            ]
        };
        let setups = [4, 12].into_iter().flat_map(|c| {
            geometries(c)
                .into_iter()
                .flat_map(move |g| cases.map(|m| (g.clone(), m)))
        });
        for (geom, (make, exp)) in setups {
            let len = geom.channels * geom.height * geom.width;
            // Each sample shifted: a different pattern per sample.
            let data: Vec<IntData> = (0..6)
                .map(|s| match make(len + 7 * s) {
                    IntData::U8(v) => IntData::U8(v[7 * s..].to_vec()),
                    IntData::I8(v) => IntData::I8(v[7 * s..].to_vec()),
                    IntData::I32(v) => IntData::I32(v[7 * s..].to_vec()),
                })
                .collect();
            let real: Vec<Vec<f32>> = data.iter().map(|d| d.to_f32(exp)).collect();
            let targets: Vec<Vec<f32>> = real
                .iter()
                .map(|x| x.iter().map(|v| v * 0.75 - 0.5).collect())
                .collect();
            let quantized = Dequantized { data: &data, exp };
            let weights = test_weights(3 * geom.groups * geom.patch_len());
            let t = Some(FloatTargets {
                values: &targets,
                weights: &weights,
            });
            let a = patch_statistics(&geom, &quantized, t, 40);
            let b = patch_statistics(&geom, real.as_slice(), t, 40);
            let bits =
                |m: &[Vec<f64>]| -> Vec<u64> { m.iter().flatten().map(|v| v.to_bits()).collect() };
            assert_eq!(bits(&a.hessians), bits(&b.hessians));
            assert_eq!(bits(&[a.cross_rows]), bits(&[b.cross_rows]));
            assert_eq!(bits(&a.means), bits(&b.means));
            assert!(a.hessians[0].iter().any(|&v| v != 0.0));
        }
    }

    #[test]
    fn gathered_columns_are_the_patches() {
        // Padding on every side, strides, dilations, two groups of two channels.
        let geom = test_geometry(4);
        let len = geom.channels * geom.height * geom.width;
        let x: Vec<f32> = (0..len).map(|i| i as f32 + 1.0).collect();
        let positions: Vec<(usize, usize)> = (0..geom.out_height)
            .flat_map(|oy| (0..geom.out_width).map(move |ox| (oy, ox)))
            .collect();
        let (k, n) = (geom.patch_len(), positions.len());
        let taps = geom.tap_offsets(&positions);
        let mut cols = vec![f32::NAN; k * n];
        let mut patch = vec![0f32; k];
        let mut padded = 0;
        for g in 0..geom.groups {
            geom.gather_columns(&x, 1.0, g, &taps, n, &mut cols, n);
            for (q, &(oy, ox)) in positions.iter().enumerate() {
                geom.patch(&x, 1.0, g, oy, ox, &mut patch);
                for (i, &v) in patch.iter().enumerate() {
                    assert_eq!(cols[i * n + q].to_bits(), v.to_bits(), "g {g} q {q} i {i}");
                    padded += usize::from(v == 0.0);
                }
            }
        }
        assert!(padded > 0, "the geometry must reach into the padding");
    }

    /// Sample `s` of a test set: small integers, varied by sample.
    fn test_sample(len: usize, s: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 + s * 13) % 11) as f32 - 5.0)
            .collect()
    }

    /// The statistics of `count` test samples (targets `0.5 x + 1`, `rows` weight rows per
    /// group, at most `max` patches, `route` or the default one) against
    /// sums in f64 over the same sampled positions.
    fn check_sampled(
        geom: &PatchGeometry,
        count: usize,
        rows: usize,
        max: usize,
        route: Option<CrossRoute>,
    ) {
        let len = geom.channels * geom.height * geom.width;
        let samples: Vec<Vec<f32>> = (0..count).map(|s| test_sample(len, s)).collect();
        let targets: Vec<Vec<f32>> = samples
            .iter()
            .map(|x| x.iter().map(|v| v * 0.5 + 1.0).collect())
            .collect();
        let k = geom.patch_len();
        let weights = test_weights(geom.groups * rows * k);
        let t = Some(FloatTargets {
            values: &targets,
            weights: &weights,
        });
        let stats = patch_statistics_with(geom, samples.as_slice(), t, max, route);
        let per_sample = geom.positions();
        let stride = (count * per_sample).div_ceil(max.max(1)).max(1);
        let mut patch = vec![0f32; k];
        let mut tpatch = vec![0f32; k];
        for g in 0..geom.groups {
            let mut h = vec![0f64; k * k];
            let mut cw = vec![0f64; rows * k];
            let mut m = vec![0f64; k];
            for (s, (x, t)) in samples.iter().zip(&targets).enumerate() {
                for p in 0..per_sample {
                    geom.patch_at(x, g, p, &mut patch);
                    for i in 0..k {
                        m[i] += patch[i] as f64 / (count * per_sample) as f64;
                    }
                    if !(s * per_sample + p).is_multiple_of(stride) {
                        continue;
                    }
                    geom.patch_at(t, g, p, &mut tpatch);
                    for i in 0..k {
                        for j in 0..k {
                            h[i * k + j] += patch[i] as f64 * patch[j] as f64;
                        }
                    }
                    for o in 0..rows {
                        let w = &weights[(g * rows + o) * k..][..k];
                        let y: f64 = w
                            .iter()
                            .zip(&tpatch)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum();
                        for i in 0..k {
                            cw[o * k + i] += patch[i] as f64 * y;
                        }
                    }
                }
            }
            for (a, b) in stats.hessians[g].iter().zip(&h) {
                assert!((a - b).abs() < 1e-6 * (1.0 + b.abs()), "{a} {b}");
            }
            let scale = cw.iter().fold(1f64, |a, v| a.max(v.abs()));
            let got = &stats.cross_rows[g * rows * k..(g + 1) * rows * k];
            for (a, b) in got.iter().zip(&cw) {
                assert!((a - b).abs() < 1e-5 * scale, "{a} {b}");
            }
            for (a, b) in stats.means[g].iter().zip(&m) {
                assert!((a - b).abs() < 1e-9 * (1.0 + b.abs()), "{a} {b}");
            }
        }
    }

    /// `len` weights of varied sign and size.
    fn test_weights(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 23 % 17) as f32 - 8.0) * 0.125)
            .collect()
    }

    fn check_against_direct_computation(geom: &PatchGeometry) {
        // Five samples: a batch of four and one of one.
        for route in [CrossRoute::Matrix, CrossRoute::Outputs] {
            check_sampled(geom, 5, 3, usize::MAX, Some(route));
        }
        let len = geom.channels * geom.height * geom.width;
        let samples: Vec<Vec<f32>> = (0..3).map(|s| test_sample(len, s)).collect();
        assert!(
            patch_statistics(geom, samples.as_slice(), None, usize::MAX)
                .cross_rows
                .is_empty()
        );
        let k = geom.patch_len();
        // The patch at (0, 0) of group 1 starts in the top padding row.
        let mut patch = vec![0f32; k];
        geom.patch(&samples[0], 1.0, 1, 0, 0, &mut patch);
        assert_eq!(patch[0], 0.0);
        assert_eq!(
            patch[2],
            samples[0][geom.channels / 2 * geom.height * geom.width]
        );
    }
}
