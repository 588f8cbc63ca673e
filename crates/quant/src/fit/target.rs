//! Float targets: the weights that, applied to the *quantized* input, best reproduce
//! the float layer's output on the float input.
//!
//! The layer objective `Σ_p ‖(W − Ŵ) x̂_p‖²` measures the error the quantized weights add
//! on the quantized input `x̂`; the error upstream layers already made is not its
//! concern. The float model's output is `W x`, though, so the objective that matters is
//! `Σ_p ‖W x_p − Ŵ x̂_p‖²` (GPTAQ's asymmetric calibration, Li et al. 2025). Per row `o`
//! of group `g`, with `Ĥ = Σ x̂ x̂ᵀ` and `C = Σ x̂ xᵀ`:
//!
//! ```text
//! Σ_p (w_oᵀ x_p − ŵ_oᵀ x̂_p)² = (w*_o − ŵ_o)ᵀ Ĥ (w*_o − ŵ_o) + const,   Ĥ w*_o = C w_o
//! ```
//!
//! so fitting `w*_o` with the usual objective (on `Ĥ`) minimises the end-to-end error of
//! this layer's output. Every fitting step stays as it is; only the target rows change.

use rayon::prelude::*;

use super::linalg::{cholesky_lower, dot, dot2};

/// Relative weight of the ridge `λ‖w* − w‖²` (times the mean diagonal of `Ĥ`), as
/// GPTQ's dampening: in directions the calibration inputs do not span, `w*` stays `w`
/// instead of going to zero, which is what generalises to unseen inputs. Without it the
/// 1280 → 1000 classifier of MobileNetV2, fitted on 128 samples, loses most of its rows'
/// unseen directions.
pub const TARGET_DAMP: f64 = 0.01;

/// Float targets are fitted only for layers with at least this many sampled input
/// patches per patch element: `C` and `Ĥ` are `K × K` moments, and with fewer samples
/// `w*` fits the calibration set's noise. It was 8 before the ridge was chosen on
/// held-out samples ([`choose_float_target`]); with that choice 3 lets MobileNetV2's 7 × 7
/// projections (3,136 patches for K = 960 from 64 images) compensate their upstream error:
/// on photos the calibration never saw `int8-pot-channel` 11.5 → 12.8 dB and
/// `lut4-pot-channel` (8 tables) 8.1 → 10.4 dB. On the zoo models the layers it adds are
/// a wash (−1.6 to +1.6 dB per model, sum −2 dB over 14 cells), EfficientNet-Lite0 is
/// unchanged, and 2 added ±4 dB swings on PaddleOCR's classifier (docs/quantization.md).
pub const TARGET_MIN_PATCHES_PER_INPUT: usize = 3;

/// The float-target rows: per row `o` of group `g` (rows split into `hessians.len()`
/// equal groups), `w*_o = argmin Σ_p (w_oᵀ x_p − vᵀ x̂_p)² + λ‖v − w_o‖²`, i.e.
/// `(Ĥ_g + λI) w*_o = C_g w_o + λ w_o` with `λ = TARGET_DAMP · mean diag Ĥ_g`
/// (`rows × k`, row-major). `cross_rows` holds every row's `C_g w_o` (`rows × k`,
/// [`cross_times_rows`] of the matrices, or summed directly by the moments). A group
/// whose damped matrix is not numerically positive definite (or is zero) keeps its rows
/// as they are.
pub fn float_target_rows(
    weights: &[f32],
    rows: usize,
    k: usize,
    hessians: &[Vec<f64>],
    cross_rows: &[f64],
) -> Vec<f32> {
    float_target_rows_damped(weights, rows, k, hessians, cross_rows, TARGET_DAMP)
}

/// [`float_target_rows`] with the ridge `damp · mean diag Ĥ_g` instead of
/// [`TARGET_DAMP`]'s.
pub fn float_target_rows_damped(
    weights: &[f32],
    rows: usize,
    k: usize,
    hessians: &[Vec<f64>],
    cross_rows: &[f64],
    damp: f64,
) -> Vec<f32> {
    assert_eq!(weights.len(), rows * k, "weights must be rows × k");
    if hessians.is_empty() || k == 0 {
        return weights.to_vec();
    }
    assert_eq!(cross_rows.len(), rows * k, "one C w per row");
    damped_targets(weights, rows, k, hessians, cross_rows, damp)
}

/// `C_g w_o` for every row `o` of group `g` (`rows × k`, row `o` at `o · k`) from the
/// cross matrices `C_g` (`k × k` each), each entry one [`dot`] of a row of `C_g` with
/// `w_o`.
pub fn cross_times_rows(weights: &[f32], rows: usize, k: usize, cross: &[Vec<f64>]) -> Vec<f64> {
    let groups = cross.len().max(1);
    let rpg = rows / groups;
    let mut out = vec![0.0; rows * k];
    if cross.is_empty() || k == 0 {
        return out;
    }
    // Rows in blocks of `ROW_BLOCK` of one group: each row of `C` is read once per block
    // while it is in cache.
    out.par_chunks_mut(rpg * k)
        .zip(weights.par_chunks(rpg * k))
        .zip(cross)
        .for_each(|((og, wg), c)| {
            og.par_chunks_mut(ROW_BLOCK * k)
                .zip(wg.par_chunks(ROW_BLOCK * k))
                .for_each(|(ob, wb)| {
                    let w: Vec<Vec<f64>> = wb
                        .chunks(k)
                        .map(|row| row.iter().map(|&v| v as f64).collect())
                        .collect();
                    for i in 0..k {
                        let ci = &c[i * k..(i + 1) * k];
                        // Two rows at a time (`dot2`: the same sums as one by one).
                        for (p, wp) in w.chunks(2).enumerate() {
                            let r = 2 * p;
                            match wp {
                                [w0, w1] => {
                                    (ob[r * k + i], ob[(r + 1) * k + i]) = dot2(ci, w0, w1);
                                }
                                _ => ob[r * k + i] = dot(ci, &wp[0]),
                            }
                        }
                    }
                });
        });
    out
}

/// [`float_target_rows_damped`] from the rows' `C_g w_o` ([`cross_times_rows`]).
fn damped_targets(
    weights: &[f32],
    rows: usize,
    k: usize,
    hessians: &[Vec<f64>],
    cw: &[f64],
    damp: f64,
) -> Vec<f32> {
    let groups = hessians.len();
    assert!(rows.is_multiple_of(groups), "rows must split into groups");
    let rpg = rows / groups;
    // Per group, the factor `L` of `Ĥ + λI` and its transpose (both row-major, so both
    // triangular solves read contiguous rows); `None` keeps the group's rows.
    let lambdas: Vec<f64> = hessians
        .iter()
        .map(|h| damp * (0..k).map(|i| h[i * k + i]).sum::<f64>() / k as f64)
        .collect();
    let factors: Vec<Option<(Vec<f64>, Vec<f64>)>> = hessians
        .par_iter()
        .zip(&lambdas)
        .map(|(h, &lambda)| {
            if lambda <= 0.0 || !lambda.is_finite() {
                return None;
            }
            let mut l = h.clone();
            for i in 0..k {
                l[i * k + i] += lambda;
            }
            if !cholesky_lower(&mut l, k) {
                return None;
            }
            let mut lt = vec![0.0; k * k];
            for i in 0..k {
                for j in 0..=i {
                    lt[j * k + i] = l[i * k + j];
                }
            }
            Some((l, lt))
        })
        .collect();
    // Rows in blocks of `ROW_BLOCK` of one group: each row of `L` and `Lᵀ` is read once
    // per block while it is in cache (for K = 960 a factor is 7 MB), and every row still
    // sees exactly its own sequence of operations.
    let mut out = weights.to_vec();
    out.par_chunks_mut(rpg * k)
        .zip(cw.par_chunks(rpg * k))
        .zip(&factors)
        .zip(&lambdas)
        .for_each(|(((group, cwg), factor), &lambda)| {
            let Some((l, lt)) = factor else {
                return;
            };
            group
                .par_chunks_mut(ROW_BLOCK * k)
                .zip(cwg.par_chunks(ROW_BLOCK * k))
                .for_each(|(block, cwb)| {
                    let rhs: Vec<Vec<f64>> = block
                        .chunks(k)
                        .zip(cwb.chunks(k))
                        .map(|(row, cr)| {
                            row.iter()
                                .zip(cr)
                                .map(|(&w, &c)| c + lambda * w as f64)
                                .collect()
                        })
                        .collect();
                    let solved = triangular_solves(l, lt, &rhs, k);
                    for (row, x) in block.chunks_mut(k).zip(solved) {
                        if let Some(x) = x {
                            for (r, v) in row.iter_mut().zip(x) {
                                *r = v as f32;
                            }
                        }
                    }
                });
        });
    out
}

/// Rows per block of the row-by-row passes over a `K × K` matrix ([`float_target_rows`],
/// [`choose_float_target`]'s scores).
const ROW_BLOCK: usize = 16;

/// `L Lᵀ x = b` for every right-hand side of `bs`, with `lt = Lᵀ` given row-major;
/// `None` for a result that is not finite. Each row of `L` and `Lᵀ` serves all of them
/// in turn; each solution's arithmetic is that of a solve of its own.
fn triangular_solves(l: &[f64], lt: &[f64], bs: &[Vec<f64>], k: usize) -> Vec<Option<Vec<f64>>> {
    // Two right-hand sides at a time (`dot2`: the same sums as one by one).
    let mut ys = vec![vec![0.0; k]; bs.len()];
    for i in 0..k {
        let (li, lii) = (&l[i * k..i * k + i], l[i * k + i]);
        for (yp, bp) in ys.chunks_mut(2).zip(bs.chunks(2)) {
            match (yp, bp) {
                ([y0, y1], [b0, b1]) => {
                    let (d0, d1) = dot2(li, &y0[..i], &y1[..i]);
                    y0[i] = (b0[i] - d0) / lii;
                    y1[i] = (b1[i] - d1) / lii;
                }
                (yp, bp) => {
                    for (y, b) in yp.iter_mut().zip(bp) {
                        y[i] = (b[i] - dot(li, &y[..i])) / lii;
                    }
                }
            }
        }
    }
    let mut xs = vec![vec![0.0; k]; bs.len()];
    for i in (0..k).rev() {
        let (lti, ltii) = (&lt[i * k + i + 1..(i + 1) * k], lt[i * k + i]);
        for (xp, yp) in xs.chunks_mut(2).zip(ys.chunks(2)) {
            match (xp, yp) {
                ([x0, x1], [y0, y1]) => {
                    let (d0, d1) = dot2(lti, &x0[i + 1..], &x1[i + 1..]);
                    x0[i] = (y0[i] - d0) / ltii;
                    x1[i] = (y1[i] - d1) / ltii;
                }
                (xp, yp) => {
                    for (x, y) in xp.iter_mut().zip(yp) {
                        x[i] = (y[i] - dot(lti, &x[i + 1..])) / ltii;
                    }
                }
            }
        }
    }
    xs.into_iter()
        .map(|x| x.iter().all(|v| v.is_finite()).then_some(x))
        .collect()
}

/// Calibration samples held out of the float targets' fit to choose their ridge
/// ([`choose_float_target`]): the last quarter, with at least 2 held out and 6 fitted
/// (fewer samples: no hold-out, the fixed [`TARGET_DAMP`]). The tail, so that a
/// calibration set ordered by source photo holds out whole photos.
pub fn held_out_samples(samples: usize) -> usize {
    if samples >= 8 { samples / 4 } else { 0 }
}

/// The ridges [`choose_float_target`] tries, relative to the mean diagonal of `Ĥ` (the
/// plain target, the float weights themselves, is the limit of an infinite ridge and is
/// always a candidate). From GPTQ's 1 % dampening to a ridge as strong as the average
/// input energy, in steps of about 3×.
pub const TARGET_RIDGES: [f64; 5] = [0.01, 0.03, 0.1, 0.3, 1.0];

/// The moments of a layer's input patches that [`float_target_rows`] reads: `Ĥ_g =
/// Σ x̂ x̂ᵀ` per group (`k × k`) and every row's `C_g w_o` (`C_g = Σ x̂ xᵀ`; `rows × k`).
#[derive(Clone, Copy)]
pub struct TargetMoments<'a> {
    pub hessians: &'a [Vec<f64>],
    pub cross_rows: &'a [f64],
}

/// What [`choose_float_target`] picked.
pub struct TargetChoice {
    /// The rows to fit (`rows × k`): the float weights or the float targets.
    pub rows: Vec<f32>,
    /// The chosen ridge (relative, see [`TARGET_RIDGES`]); `None`: the float weights.
    pub ridge: Option<f64>,
}

/// Float targets whose strength is chosen on held-out data: for every ridge of
/// [`TARGET_RIDGES`], the targets fitted on the `fit` moments are scored on the
/// `held_out` moments by the end-to-end error `Σ_p ‖W x_p − V x̂_p‖²` (up to the constant
/// `Σ ‖W x‖²`: `Σ_o v_oᵀ Ĥ v_o − 2 v_oᵀ C w_o`), and so are the float weights
/// (`V = W`, no target). The winner's ridge is then refitted on `all` the moments (fit
/// and held-out together). The float targets overfit the calibration images when
/// `Ĥ` and `C` rest on few samples per input (at 8 bits they cost more than they
/// repair); this lets every layer find out for itself, and a layer never ends with a
/// target that does worse on the held-out images than its float weights.
pub fn choose_float_target(
    weights: &[f32],
    rows: usize,
    k: usize,
    fit: TargetMoments<'_>,
    held_out: TargetMoments<'_>,
    all: TargetMoments<'_>,
) -> TargetChoice {
    if fit.hessians.is_empty() || k == 0 {
        return TargetChoice {
            rows: weights.to_vec(),
            ridge: None,
        };
    }
    let (fit_cw, held_cw) = (fit.cross_rows, held_out.cross_rows);
    let plain = held_out_error(weights, held_cw, rows, k, held_out.hessians);
    // The ridges side by side (a single group's factorization is serial), the winner
    // picked in ridge order as one by one.
    let errors: Vec<f64> = TARGET_RIDGES
        .par_iter()
        .map(|&ridge| {
            let v = damped_targets(weights, rows, k, fit.hessians, fit_cw, ridge);
            held_out_error(&v, held_cw, rows, k, held_out.hessians)
        })
        .collect();
    let mut best: (Option<f64>, f64) = (None, plain);
    for (&ridge, &e) in TARGET_RIDGES.iter().zip(&errors) {
        if e < best.1 {
            best = (Some(ridge), e);
        }
    }
    let rows_out = match best.0 {
        Some(ridge) => {
            float_target_rows_damped(weights, rows, k, all.hessians, all.cross_rows, ridge)
        }
        None => weights.to_vec(),
    };
    TargetChoice {
        rows: rows_out,
        ridge: best.0,
    }
}

/// `Σ_o v_oᵀ Ĥ v_o − 2 v_oᵀ C w_o` over the rows (groups as in [`float_target_rows`]):
/// the held-out error `Σ_p ‖W x_p − V x̂_p‖²` less its constant `Σ_p ‖W x_p‖²`.
fn held_out_error(v: &[f32], cw: &[f64], rows: usize, k: usize, hessians: &[Vec<f64>]) -> f64 {
    let groups = hessians.len().max(1);
    let rpg = rows / groups;
    // Per row, in blocks of rows of one group (each matrix row read once per block);
    // summed in row order. `cw` holds the rows' `C w_o` ([`cross_times_rows`]).
    let per_row: Vec<f64> = v
        .par_chunks(rpg * k)
        .zip(cw.par_chunks(rpg * k))
        .enumerate()
        .flat_map_iter(|(g, (vg, cwg))| {
            let h = &hessians[g];
            let blocks: Vec<(&[f32], &[f64])> = vg
                .chunks(ROW_BLOCK * k)
                .zip(cwg.chunks(ROW_BLOCK * k))
                .collect();
            blocks.into_iter().flat_map(move |(vb, cwb)| {
                let vr: Vec<Vec<f64>> = vb
                    .chunks(k)
                    .map(|r| r.iter().map(|&x| x as f64).collect())
                    .collect();
                let cr: Vec<&[f64]> = cwb.chunks(k).collect();
                let mut sums = vec![0.0f64; vr.len()];
                for i in 0..k {
                    let hi = &h[i * k..(i + 1) * k];
                    // Two rows at a time (`dot2`: the same sums as one by one).
                    for ((sp, vp), cp) in sums.chunks_mut(2).zip(vr.chunks(2)).zip(cr.chunks(2)) {
                        match (sp, vp, cp) {
                            ([s0, s1], [v0, v1], [c0, c1]) => {
                                let (d0, d1) = dot2(hi, v0, v1);
                                *s0 += v0[i] * (d0 - 2.0 * c0[i]);
                                *s1 += v1[i] * (d1 - 2.0 * c1[i]);
                            }
                            (sp, vp, cp) => {
                                for ((s, vr), cr) in sp.iter_mut().zip(vp).zip(cp) {
                                    *s += vr[i] * (dot(hi, vr) - 2.0 * cr[i]);
                                }
                            }
                        }
                    }
                }
                sums
            })
        })
        .collect();
    per_row.iter().sum()
}
