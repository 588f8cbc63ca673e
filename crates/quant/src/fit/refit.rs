//! Refitting the sixteen LUT values for fixed codes: least squares on the output error.
//!
//! Why: k-means places the entries by the *diagonal* of `H` only, and GPTQ then moves
//! codes around; for the codes GPTQ chose, the objective is an exact quadratic in the LUT
//! values, `E(l) = c − 2 bᵀ l + lᵀ M l` ([`super::problem::Normal`]). Its continuous
//! minimizer solves `M l = b` (over the codes in use; unused entries keep their value).
//! The entries must be int8, so the solution is rounded and then improved by integer
//! coordinate descent (each entry set to its best integer given the others: `E` is a
//! parabola in each entry), which never increases `E`. The same descent is also run from
//! the current table, and the better result is returned; the caller keeps it only if it
//! lowers `E`.

use super::linalg::solve_spd;
use super::problem::Normal;

const SWEEPS: usize = 50;

fn to_f64(lut: &[i8; 16]) -> [f64; 16] {
    lut.map(|x| x as f64)
}

fn clamp_i8(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.round().clamp(-128.0, 127.0)
    }
}

/// Integer coordinate descent on `E` from `l` over the used entries.
fn descend(n: &Normal, used: &[usize], mut l: [f64; 16]) -> [f64; 16] {
    for _ in 0..SWEEPS {
        let mut changed = false;
        for &a in used {
            let mkk = n.m[a][a];
            let rest: f64 = (0..16).filter(|&j| j != a).map(|j| n.m[a][j] * l[j]).sum();
            let best = clamp_i8((n.b[a] - rest) / mkk);
            if best != l[a] {
                // Exact per-coordinate improvement check (guards against rounding).
                let mut t = l;
                t[a] = best;
                if n.eval(&t) < n.eval(&l) {
                    l = t;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    l
}

/// The refitted table and its objective (which may be no better than `lut`'s).
pub(crate) fn refit_lut(n: &Normal, lut: &[i8; 16]) -> ([i8; 16], f64) {
    let used: Vec<usize> = (0..16).filter(|&a| n.m[a][a] > 0.0).collect();
    let start = to_f64(lut);
    let mut best = descend(n, &used, start);
    if !used.is_empty() {
        let u = used.len();
        let mut a = vec![0.0; u * u];
        let mut b = vec![0.0; u];
        for (i, &ai) in used.iter().enumerate() {
            b[i] = n.b[ai];
            for (j, &aj) in used.iter().enumerate() {
                a[i * u + j] = n.m[ai][aj];
            }
        }
        // A tiny ridge keeps the solve defined when codes are collinear.
        let trace: f64 = (0..u).map(|i| a[i * u + i]).sum();
        for i in 0..u {
            a[i * u + i] += 1e-12 * trace / u as f64;
        }
        if let Some(x) = solve_spd(&a, &b, u) {
            let mut l = start;
            for (i, &ai) in used.iter().enumerate() {
                l[ai] = clamp_i8(x[i]);
            }
            let cand = descend(n, &used, l);
            if n.eval(&cand) < n.eval(&best) {
                best = cand;
            }
        }
    }
    let e = n.eval(&best);
    (best.map(|x| x as i8), e)
}
