//! GPTQ code assignment (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization
//! for Generative Pre-trained Transformers"), with the LUT or the uniform levels as grid.
//!
//! Why: round-to-nearest minimizes each weight's own error, but the layer's output error
//! `δᵀ H δ` couples the weights of a row through the input correlations in `H`. GPTQ
//! quantizes one column at a time and spreads the error it just made over the columns not
//! yet quantized, in the direction that `H` says cancels it best (the optimal-brain-
//! surgeon update). With the upper Cholesky factor `U` of `H⁻¹` (`Uᵀ U = H⁻¹`), for
//! `q = 0, 1, …, K−1`:
//!
//! ```text
//! ŵ_q = nearest grid point to w_q          (grid: LUT entries · s_o, or levels · s_o)
//! err = (w_q − ŵ_q) / U_qq
//! w_j ← w_j − err · U_qj                   for j > q
//! ```
//!
//! Rows are independent given `U`, so one factorization per group (`O(K³)`) serves all
//! of its rows (`O(K²)` each); rows go through in blocks that share each row of `U`
//! while it is in cache.
//!
//! `U` without a second factorization: with `P` the reversal permutation and
//! `P H P = L̃ L̃ᵀ`, `U = P L̃⁻¹ P` is upper triangular and `Uᵀ U = H⁻¹`. So one Cholesky
//! of the reversed matrix and one triangular inverse.
//!
//! Dampening: `H + λ I` with `λ = 1 %` of the mean diagonal (GPTQ's default), so that
//! dead inputs and correlated columns keep the factorization defined. If the Cholesky
//! still fails, `λ` grows tenfold (up to five times); after that the group falls back to
//! round-to-nearest.

use rayon::prelude::*;

use super::linalg::{axpy, axpy_rows, cholesky_lower, lower_inverse_columns};

/// Columns per GPTQ block: the columns after a block move once per block.
const COLUMN_BLOCK: usize = 32;
/// Columns per stretch of the deferred update: the block's 32 rows of `U` over 64
/// columns are 16 KiB, in L1 for every row.
const UPDATE_STRETCH: usize = 64;
use super::problem::{Assignment, Grid, Prep, deltas, grid_of, quad_rows};

/// Relative dampening of `H`: `λ = DAMP · mean(diag H)`.
pub const DAMP: f64 = 0.01;

/// The GPTQ factor of one group: `U` (`k × k`, upper triangular, row-major) with
/// `Uᵀ U = (H + λ I)⁻¹`.
#[derive(Clone, Debug)]
pub struct GptqFactor {
    pub k: usize,
    pub u: Vec<f64>,
    /// The dampening `λ` that was added.
    pub lambda: f64,
}

impl GptqFactor {
    /// Factors the dampened `h` (`k × k`, symmetric positive semidefinite); `None` when
    /// even a strongly dampened matrix does not factor (non-finite input).
    pub fn new(h: &[f64], k: usize) -> Option<GptqFactor> {
        assert_eq!(h.len(), k * k);
        if k == 0 {
            return Some(GptqFactor {
                k,
                u: Vec::new(),
                lambda: 0.0,
            });
        }
        let mean_diag = (0..k).map(|i| h[i * k + i]).sum::<f64>() / k as f64;
        let mut lambda = DAMP * mean_diag;
        if !(lambda > 0.0 && lambda.is_finite()) {
            lambda = 1.0;
        }
        for _ in 0..6 {
            // Reversed and dampened.
            let mut a = vec![0.0; k * k];
            for i in 0..k {
                for j in 0..k {
                    a[i * k + j] = h[(k - 1 - i) * k + (k - 1 - j)];
                }
                a[i * k + i] += lambda;
            }
            if cholesky_lower(&mut a, k) {
                let cols = lower_inverse_columns(&a, k);
                // U[q][t] = L̃⁻¹[k-1-q][k-1-t] = cols[k-1-t][t-q].
                let mut u = vec![0.0; k * k];
                for q in 0..k {
                    for t in q..k {
                        u[q * k + t] = cols[k - 1 - t][t - q];
                    }
                }
                if u.iter().all(|x| x.is_finite()) {
                    return Some(GptqFactor { k, u, lambda });
                }
            }
            lambda *= 10.0;
        }
        None
    }
}

/// Factors every group (in parallel); `None` per group that falls back to rounding.
pub(crate) fn factors(p: &Prep<'_>) -> Vec<Option<GptqFactor>> {
    p.hess.par_iter().map(|h| GptqFactor::new(h, p.k)).collect()
}

/// GPTQ assignment of every row on its grid (`grids`: one for all rows, or one per row;
/// the factor is the group's either way) with per-row scales, and every row's `E_o`;
/// groups without a factor are rounded to nearest.
///
/// `E_o` comes for free: the loop ends with `ŵ = w − Uᵀ err` (`err` the vector of scaled
/// errors), so `δ = Uᵀ err` and `δᵀ (H + λI) δ = errᵀ U (H + λI) Uᵀ err = ‖err‖²`, hence
/// `E_o = ‖err‖² − λ ‖δ‖²`, in `O(K)` instead of another `O(K²)` pass.
pub(crate) fn gptq(
    p: &Prep<'_>,
    factors: &[Option<GptqFactor>],
    grids: &[Grid],
    scales: &[f64],
) -> (Assignment, Vec<f64>) {
    let k = p.k;
    let parts = p.map_blocks(|b| {
        let n = b.r1 - b.r0;
        let mut levels = vec![0i8; n * k];
        let mut codes = vec![0u8; n * k];
        let mut work: Vec<f64> = p.w[b.r0 * k..b.r1 * k].iter().map(|&x| x as f64).collect();
        let inv: Vec<f64> = scales[b.r0..b.r1].iter().map(|s| 1.0 / s).collect();
        let grid: Vec<&Grid> = (b.r0..b.r1).map(|o| grid_of(grids, o)).collect();
        let mut errors = vec![0.0f64; n];
        match factors.get(b.group).and_then(|f| f.as_ref()) {
            Some(f) => {
                // Columns in blocks (GPTQ's "lazy batch" updates): a column's error
                // moves the rest of its block at once, and the columns after the
                // block when the block is done, each element by the same operations
                // in the same order as one update per column.
                let mut moves = vec![0.0f64; n * COLUMN_BLOCK];
                for c0 in (0..k).step_by(COLUMN_BLOCK) {
                    let c1 = (c0 + COLUMN_BLOCK).min(k);
                    let width = c1 - c0;
                    for q in c0..c1 {
                        let urow = &f.u[q * k..(q + 1) * k];
                        let d = urow[q];
                        let tail = &urow[q + 1..c1];
                        for r in 0..n {
                            let x = work[r * k + q];
                            let (l, c) = grid[r].nearest(x * inv[r]);
                            levels[r * k + q] = l;
                            codes[r * k + q] = c;
                            let err = (x - l as f64 * scales[b.r0 + r]) / d;
                            errors[r] += err * err;
                            moves[r * width + q - c0] = -err;
                            if err != 0.0 {
                                axpy(&mut work[r * k + q + 1..r * k + c1], -err, tail);
                            }
                        }
                    }
                    // The later columns, a stretch at a time (the block's rows of `U`
                    // over it stay in cache for every row).
                    for j0 in (c1..k).step_by(UPDATE_STRETCH) {
                        let j1 = (j0 + UPDATE_STRETCH).min(k);
                        for r in 0..n {
                            axpy_rows(
                                &mut work[r * k + j0..r * k + j1],
                                &moves[r * width..(r + 1) * width],
                                &f.u[c0 * k + j0..],
                                k,
                            );
                        }
                    }
                }
                for (r, e) in errors.iter_mut().enumerate() {
                    let d2: f64 = (0..k)
                        .map(|q| {
                            let d = p.w[(b.r0 + r) * k + q] as f64
                                - levels[r * k + q] as f64 * scales[b.r0 + r];
                            d * d
                        })
                        .sum();
                    *e = (*e - f.lambda * d2).max(0.0);
                }
            }
            None => {
                for r in 0..n {
                    for q in 0..k {
                        let (l, c) = grid[r].nearest(work[r * k + q] * inv[r]);
                        levels[r * k + q] = l;
                        codes[r * k + q] = c;
                    }
                }
                let deltas = deltas(p, b, &levels, scales);
                errors = quad_rows(p.hess.get(b.group).map(|h| h.as_slice()), &deltas, k);
            }
        }
        (levels, codes, errors)
    });
    let mut levels = Vec::with_capacity(p.w.len());
    let mut codes = Vec::with_capacity(p.w.len());
    let mut errors = Vec::with_capacity(p.rows);
    for (l, c, e) in parts {
        levels.extend(l);
        codes.extend(c);
        errors.extend(e);
    }
    (Assignment { levels, codes }, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_satisfies_definition() {
        let k = 4;
        let h: Vec<f64> = vec![
            4.0, 1.0, 0.5, 0.0, //
            1.0, 3.0, 0.2, 0.1, //
            0.5, 0.2, 2.0, 0.3, //
            0.0, 0.1, 0.3, 1.0,
        ];
        let f = GptqFactor::new(&h, k).unwrap();
        let lambda = DAMP * (4.0 + 3.0 + 2.0 + 1.0) / 4.0;
        // (Uᵀ U)(H + λ I) = I.
        for i in 0..k {
            for j in 0..k {
                let mut s = 0.0;
                for m in 0..k {
                    let utu: f64 = (0..k).map(|t| f.u[t * k + i] * f.u[t * k + m]).sum();
                    let hd = h[m * k + j] + if m == j { lambda } else { 0.0 };
                    s += utu * hd;
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-9, "({i},{j}) {s}");
                if j < i {
                    assert_eq!(f.u[i * k + j], 0.0);
                }
            }
        }
    }

    #[test]
    fn gptq_errors_equal_exact_output_error() {
        use super::super::LayerProblem;
        use super::super::problem::row_errors;
        let (rows, k) = (5, 7);
        let w: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.013)
            .collect();
        // Correlated H = Σ x xᵀ over a few patches.
        let mut h = vec![0.0; k * k];
        for p in 0..12 {
            let x: Vec<f64> = (0..k)
                .map(|j| 1.0 + ((p * 5 + j * 3) % 7) as f64 * 0.3)
                .collect();
            for i in 0..k {
                for j in 0..k {
                    h[i * k + j] += x[i] * x[j];
                }
            }
        }
        let hessians = vec![h];
        let problem = LayerProblem {
            weights: &w,
            rows,
            row_len: k,
            hessians: &hessians,
        };
        let prep = Prep::new(&problem);
        let f = factors(&prep);
        let scales = vec![1.0 / 64.0; rows];
        let grid = Grid::Uniform { min: -8, max: 7 };
        let (a, e) = gptq(&prep, &f, &[grid], &scales);
        let exact = row_errors(&prep, &a.levels, &scales);
        for (x, y) in e.iter().zip(&exact) {
            assert!((x - y).abs() <= 1e-9 * y.max(1e-12), "{x} vs {y}");
        }
    }

    /// The blocked loop against the plain one (one full update per column): the same
    /// codes and error bits, over several column blocks and update stretches.
    #[test]
    fn column_blocks_give_the_bits_of_one_update_per_column() {
        use super::super::LayerProblem;
        let (rows, k) = (3, 2 * COLUMN_BLOCK + UPDATE_STRETCH + 13);
        let w: Vec<f32> = (0..rows * k)
            .map(|i| ((i as f32) * 0.37).sin() * 0.05)
            .collect();
        let x: Vec<Vec<f64>> = (0..3 * k)
            .map(|p| {
                (0..k)
                    .map(|j| ((p * k + j) as f64 * 0.61).cos() + 0.2)
                    .collect()
            })
            .collect();
        let h: Vec<f64> = (0..k * k)
            .map(|e| x.iter().map(|v| v[e / k] * v[e % k]).sum())
            .collect();
        let hessians = vec![h];
        let problem = LayerProblem {
            weights: &w,
            rows,
            row_len: k,
            hessians: &hessians,
        };
        let prep = Prep::new(&problem);
        let f = factors(&prep);
        let u = &f[0].as_ref().unwrap().u;
        let scales = vec![1.0 / 512.0; rows];
        let grid = Grid::Uniform { min: -8, max: 7 };
        let (a, e) = gptq(&prep, &f, std::slice::from_ref(&grid), &scales);
        for r in 0..rows {
            let mut work: Vec<f64> = w[r * k..(r + 1) * k].iter().map(|&v| v as f64).collect();
            let mut err2 = 0.0;
            for q in 0..k {
                let (l, _) = grid.nearest(work[q] * 512.0);
                assert_eq!(a.levels[r * k + q], l, "row {r} column {q}");
                let err = (work[q] - l as f64 / 512.0) / u[q * k + q];
                err2 += err * err;
                if err != 0.0 {
                    axpy(&mut work[q + 1..], -err, &u[q * k + q + 1..(q + 1) * k]);
                }
            }
            let d2: f64 = (0..k)
                .map(|q| {
                    let d = w[r * k + q] as f64 - a.levels[r * k + q] as f64 / 512.0;
                    d * d
                })
                .sum();
            let want = (err2 - f[0].as_ref().unwrap().lambda * d2).max(0.0);
            assert_eq!(e[r].to_bits(), want.to_bits(), "row {r}");
        }
        assert!(a.levels.iter().any(|&l| l != 0));
    }

    #[test]
    fn zero_and_singular_matrices_factor() {
        assert!(GptqFactor::new(&[0.0; 9], 3).is_some());
        // Rank one.
        let x = [1.0, 2.0, 3.0];
        let h: Vec<f64> = (0..9).map(|i| x[i / 3] * x[i % 3]).collect();
        assert!(GptqFactor::new(&h, 3).is_some());
    }
}
