//! Small dense kernels in `f64`: dot products, Cholesky, triangular inverse.
//!
//! Why hand-written and not a BLAS crate: the fitting needs only these three kernels, on
//! matrices of at most a few thousand rows, and the workspace keeps its dependency list
//! short. The loops are written over contiguous slices with independent accumulators so
//! that the compiler vectorizes them; the two `O(K³)` kernels run once per group.

use rayon::prelude::*;

/// `Σ a_i b_i` over the common length.
///
/// Sixteen independent accumulators in a fixed order: enough to hide the add latency of
/// two- or four-wide vectors, and the same additions in the same order whatever the
/// vector width, so the result is bit-identical with and without AVX2.
#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { dot_avx2(a, b) };
    }
    dot_impl(a, b)
}

/// `(a · b0, a · b1)` for `b0`, `b1` of one length: each exactly [`dot`]'s arithmetic
/// (the same bits), computed together so that `a` is loaded once for both and their
/// dependent adds overlap.
#[inline]
pub(crate) fn dot2(a: &[f64], b0: &[f64], b1: &[f64]) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if b0.len() == b1.len() && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { dot2_avx2(a, b0, b1) };
    }
    (dot(a, b0), dot(a, b1))
}

/// [`dot2`] with AVX: per dot product the sixteen accumulators of [`dot_avx2`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot2_avx2(a: &[f64], b0: &[f64], b1: &[f64]) -> (f64, f64) {
    use std::arch::x86_64::*;
    let n = a.len().min(b0.len()).min(b1.len());
    let (a, b0, b1) = (&a[..n], &b0[..n], &b1[..n]);
    let full = n / 16 * 16;
    let (mut s0, mut s1) = ([0.0f64; 16], [0.0f64; 16]);
    // SAFETY: every load reads 4 elements at `i + 4q` with `i + 16 <= full <= n`, inside
    // the three slices (all `n` long); the stores write into `s0`, `s1` (16 elements).
    unsafe {
        let (pa, p0, p1) = (a.as_ptr(), b0.as_ptr(), b1.as_ptr());
        let mut r0 = [_mm256_setzero_pd(); 4];
        let mut r1 = [_mm256_setzero_pd(); 4];
        let mut i = 0;
        while i < full {
            for q in 0..4 {
                let x = _mm256_loadu_pd(pa.add(i + 4 * q));
                let y0 = _mm256_loadu_pd(p0.add(i + 4 * q));
                let y1 = _mm256_loadu_pd(p1.add(i + 4 * q));
                r0[q] = _mm256_add_pd(r0[q], _mm256_mul_pd(x, y0));
                r1[q] = _mm256_add_pd(r1[q], _mm256_mul_pd(x, y1));
            }
            i += 16;
        }
        for q in 0..4 {
            _mm256_storeu_pd(s0.as_mut_ptr().add(4 * q), r0[q]);
            _mm256_storeu_pd(s1.as_mut_ptr().add(4 * q), r1[q]);
        }
    }
    (
        finish_dot(s0, &a[full..], &b0[full..]),
        finish_dot(s1, &a[full..], &b1[full..]),
    )
}

/// `y += a · x` over the common length.
#[inline]
pub(crate) fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { axpy_avx2(y, a, x) };
    }
    axpy_impl(y, a, x)
}

/// [`dot_impl`] with AVX: the sixteen accumulators are four 4-lane registers (register
/// `r`, lane `t` is accumulator `4r + t`), reduced in the same order, so the result is
/// bit-identical to the portable version.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_avx2(a: &[f64], b: &[f64]) -> f64 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let full = n / 16 * 16;
    let mut s = [0.0f64; 16];
    // SAFETY: every load reads 4 elements at `i + 4r` with `i + 16 <= full <= n`, inside
    // both slices; the stores write into `s` (16 elements).
    unsafe {
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut r = [_mm256_setzero_pd(); 4];
        let mut i = 0;
        while i < full {
            for (q, acc) in r.iter_mut().enumerate() {
                let x = _mm256_loadu_pd(pa.add(i + 4 * q));
                let y = _mm256_loadu_pd(pb.add(i + 4 * q));
                *acc = _mm256_add_pd(*acc, _mm256_mul_pd(x, y));
            }
            i += 16;
        }
        for (q, acc) in r.iter().enumerate() {
            _mm256_storeu_pd(s.as_mut_ptr().add(4 * q), *acc);
        }
    }
    finish_dot(s, &a[full..], &b[full..])
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn axpy_avx2(y: &mut [f64], a: f64, x: &[f64]) {
    use std::arch::x86_64::*;
    let n = y.len().min(x.len());
    let full = n / 4 * 4;
    // SAFETY: each access covers 4 elements at `i` with `i + 4 <= full <= n`.
    unsafe {
        let va = _mm256_set1_pd(a);
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        let mut i = 0;
        while i < full {
            let v = _mm256_add_pd(
                _mm256_loadu_pd(py.add(i)),
                _mm256_mul_pd(va, _mm256_loadu_pd(px.add(i))),
            );
            _mm256_storeu_pd(py.add(i), v);
            i += 4;
        }
    }
    axpy_impl(&mut y[full..n], a, &x[full..n]);
}

#[inline(always)]
fn dot_impl(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let full = n / 16 * 16;
    let mut s = [0.0f64; 16];
    for (x, y) in a[..full].chunks_exact(16).zip(b[..full].chunks_exact(16)) {
        for l in 0..16 {
            s[l] += x[l] * y[l];
        }
    }
    finish_dot(s, &a[full..n], &b[full..n])
}

/// Adds the tail (fewer than 16 elements, element `l` into accumulator `l`) and reduces
/// the accumulators pairwise: `s[l] += s[l + w]` for `w = 8, 4, 2, 1`.
#[inline(always)]
fn finish_dot(mut s: [f64; 16], a: &[f64], b: &[f64]) -> f64 {
    for (l, (x, y)) in a.iter().zip(b).enumerate() {
        s[l] += x * y;
    }
    let mut w = 16;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            s[l] += s[l + w];
        }
    }
    s[0]
}

/// `y += a[q] · x_q` for each `q` in turn, skipping every `a[q] == 0`, where `x_q` is
/// `x[q · stride..][..y.len()]`: element by element the same operations in the same
/// order as one [`axpy`] per `q` (so the same bits), with each stretch of `y` held in
/// registers across all the `q` instead of loaded and stored once per `q`.
pub(crate) fn axpy_rows(y: &mut [f64], a: &[f64], x: &[f64], stride: usize) {
    if let Some(last) = a.len().checked_sub(1) {
        assert!(
            last * stride + y.len() <= x.len(),
            "axpy_rows: the rows of x end past x"
        );
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { axpy_rows_avx2(y, a, x, stride) };
    }
    axpy_rows_impl(y, a, x, stride)
}

fn axpy_rows_impl(y: &mut [f64], a: &[f64], x: &[f64], stride: usize) {
    for (q, &aq) in a.iter().enumerate() {
        if aq != 0.0 {
            axpy_impl(y, aq, &x[q * stride..q * stride + y.len()]);
        }
    }
}

/// [`axpy_rows`] with AVX: sixteen elements of `y` (four registers) at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn axpy_rows_avx2(y: &mut [f64], a: &[f64], x: &[f64], stride: usize) {
    use std::arch::x86_64::*;
    let n = y.len();
    let full = n / 16 * 16;
    // SAFETY: every access covers 4 elements at `i + 4r < full <= n` of `y`, or of
    // row `q` of `x`, which `axpy_rows` checked to hold `n` elements from `q · stride`.
    unsafe {
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        let mut i = 0;
        while i < full {
            let mut acc = [_mm256_setzero_pd(); 4];
            for (r, v) in acc.iter_mut().enumerate() {
                *v = _mm256_loadu_pd(py.add(i + 4 * r));
            }
            for (q, &aq) in a.iter().enumerate() {
                if aq == 0.0 {
                    continue;
                }
                let va = _mm256_set1_pd(aq);
                let row = px.add(q * stride + i);
                for (r, v) in acc.iter_mut().enumerate() {
                    *v = _mm256_add_pd(*v, _mm256_mul_pd(va, _mm256_loadu_pd(row.add(4 * r))));
                }
            }
            for (r, v) in acc.iter().enumerate() {
                _mm256_storeu_pd(py.add(i + 4 * r), *v);
            }
            i += 16;
        }
    }
    for (q, &aq) in a.iter().enumerate() {
        if aq != 0.0 {
            axpy_impl(&mut y[full..], aq, &x[q * stride + full..q * stride + n]);
        }
    }
}

#[inline(always)]
fn axpy_impl(y: &mut [f64], a: f64, x: &[f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// In-place lower Cholesky factor `L` (`A = L Lᵀ`) of the symmetric `n × n` row-major
/// matrix `a`; the strict upper triangle is zeroed. Returns `false` when a pivot is not
/// positive (the matrix is not numerically positive definite); `a` is then garbage.
///
/// Entry `(i, j)` is `(a_ij − L_i[..j] · L_j[..j]) / L_jj`: it needs row `j` finished and
/// row `i`'s entries left of it. So rows go in blocks of [`CHOLESKY_BLOCK`]: a block's
/// entries left of the block depend on finished rows only, each row a forward
/// substitution of its own (rows in parallel), and then the block's triangle row by
/// row. Every entry is the same expression on the same values as row by row: the
/// factor has the same bits at any block size or thread count (tested).
pub(crate) fn cholesky_lower(a: &mut [f64], n: usize) -> bool {
    cholesky_lower_blocked(a, n, CHOLESKY_BLOCK)
}

/// Rows per block of [`cholesky_lower`]; below twice this the factorization runs row by
/// row (depthwise layers' 9 × 9 matrices, hundreds of them, already run in parallel).
const CHOLESKY_BLOCK: usize = 64;

fn cholesky_lower_blocked(a: &mut [f64], n: usize, block: usize) -> bool {
    debug_assert_eq!(a.len(), n * n);
    let block = if n < 2 * block { n.max(1) } else { block };
    for i0 in (0..n).step_by(block) {
        let i1 = (i0 + block).min(n);
        if i0 > 0 {
            let (done, rows) = a.split_at_mut(i0 * n);
            let done = &*done;
            rows[..(i1 - i0) * n].par_chunks_mut(n).for_each(|row| {
                for j in 0..i0 {
                    let s = row[j] - dot(&row[..j], &done[j * n..j * n + j]);
                    row[j] = s / done[j * n + j];
                }
            });
        }
        for i in i0..i1 {
            for j in i0..=i {
                let s = a[i * n + j] - dot(&a[i * n..i * n + j], &a[j * n..j * n + j]);
                if i == j {
                    if !(s > 0.0 && s.is_finite()) {
                        return false;
                    }
                    a[i * n + i] = s.sqrt();
                } else {
                    a[i * n + j] = s / a[j * n + j];
                }
            }
            for x in &mut a[i * n + i + 1..(i + 1) * n] {
                *x = 0.0;
            }
        }
    }
    true
}

/// The columns of `L⁻¹` for a lower-triangular `L` (`n × n`, row-major, positive
/// diagonal): entry `j` of the result holds rows `j..n` of column `j` (the rest is zero).
/// Each column is an independent forward substitution whose inner loop is a dot product
/// of contiguous slices, so columns run in parallel.
pub(crate) fn lower_inverse_columns(l: &[f64], n: usize) -> Vec<Vec<f64>> {
    (0..n)
        .into_par_iter()
        .map(|j| {
            let mut x = vec![0.0f64; n - j];
            for i in j..n {
                let row = &l[i * n..(i + 1) * n];
                let rhs = if i == j { 1.0 } else { 0.0 };
                x[i - j] = (rhs - dot(&row[j..i], &x[..i - j])) / row[i];
            }
            x
        })
        .collect()
}

/// Solves the small symmetric positive definite system `A x = b` (`n × n`, row-major) by
/// Cholesky; `None` when `A` is not numerically positive definite.
pub(crate) fn solve_spd(a: &[f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = a.to_vec();
    if !cholesky_lower(&mut l, n) {
        return None;
    }
    // L y = b, then Lᵀ x = y.
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (b[i] - dot(&l[i * n..i * n + i], &y[..i])) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let mut s = y[i];
        for k in i + 1..n {
            s -= l[k * n + i] * x[k];
        }
        x[i] = s / l[i * n + i];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_and_inverse_reconstruct() {
        let n = 5;
        // A = B Bᵀ + I, B fixed.
        let b: Vec<f64> = (0..n * n).map(|i| ((i * 7 % 11) as f64) - 5.0).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = dot(&b[i * n..(i + 1) * n], &b[j * n..(j + 1) * n])
                    + if i == j { 1.0 } else { 0.0 };
            }
        }
        let mut l = a.clone();
        assert!(cholesky_lower(&mut l, n));
        for i in 0..n {
            for j in 0..n {
                let v = dot(&l[i * n..(i + 1) * n], &l[j * n..(j + 1) * n]);
                assert!((v - a[i * n + j]).abs() < 1e-9 * (1.0 + a[i * n + j].abs()));
            }
        }
        let cols = lower_inverse_columns(&l, n);
        // L · L⁻¹ = I.
        for i in 0..n {
            for j in 0..n {
                let mut s = 0.0;
                for k in j..=i {
                    s += l[i * n + k] * cols[j][k - j];
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-9, "({i},{j}) = {s}");
            }
        }
        let x = solve_spd(&a, &[1.0, 2.0, 3.0, 4.0, 5.0], n).unwrap();
        for i in 0..n {
            let s = dot(&a[i * n..(i + 1) * n], &x);
            assert!((s - (i + 1) as f64).abs() < 1e-8);
        }
    }

    #[test]
    fn axpy_rows_has_the_bits_of_one_axpy_per_row() {
        // Lengths around the 16-wide stretches; some coefficients zero (skipped).
        for n in [0, 3, 16, 21, 37, 64] {
            let stride = n + 5;
            let rows = 9;
            let x: Vec<f64> = (0..rows * stride)
                .map(|i| ((i as f64) * 0.917).sin())
                .collect();
            let a: Vec<f64> = (0..rows)
                .map(|q| {
                    if q % 3 == 1 {
                        0.0
                    } else {
                        ((q as f64) * 1.3).cos() * 1e-3
                    }
                })
                .collect();
            let y0: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.37).cos()).collect();
            let mut one_by_one = y0.clone();
            for (q, &aq) in a.iter().enumerate() {
                if aq != 0.0 {
                    axpy(&mut one_by_one, aq, &x[q * stride..q * stride + n]);
                }
            }
            let mut together = y0.clone();
            axpy_rows(&mut together, &a, &x, stride);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&together), bits(&one_by_one), "n = {n}");
            assert!(n == 0 || together != y0, "the rows moved y");
            let mut portable = y0.clone();
            axpy_rows_impl(&mut portable, &a, &x, stride);
            assert_eq!(bits(&portable), bits(&one_by_one), "n = {n}");
        }
    }

    #[test]
    fn blocked_cholesky_has_the_bits_of_row_by_row() {
        // A = B Bᵀ + n I with irregular entries; block 1 is row by row (every row its own
        // block, the triangle only), the others leave partial blocks at the end.
        let n = 150;
        let b: Vec<f64> = (0..n * n).map(|i| ((i as f64) * 0.731).sin()).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = dot(&b[i * n..(i + 1) * n], &b[j * n..(j + 1) * n])
                    + if i == j { n as f64 } else { 0.0 };
            }
        }
        let mut serial = a.clone();
        assert!(cholesky_lower_blocked(&mut serial, n, n));
        for block in [1, 7, 32, 64] {
            let mut l = a.clone();
            assert!(cholesky_lower_blocked(&mut l, n, block));
            let same = l
                .iter()
                .zip(&serial)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "block {block}");
        }
        // Not positive definite: refused at any block size.
        a[(n - 1) * n + n - 1] = -1.0;
        for block in [1, 64, n] {
            assert!(!cholesky_lower_blocked(&mut a.clone(), n, block));
        }
    }

    #[test]
    fn dot_and_axpy_match_portable_bit_for_bit() {
        for n in [0, 1, 5, 16, 17, 33, 100] {
            let a: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin() * 1e3).collect();
            let b: Vec<f64> = (0..n).map(|i| (i as f64 * 1.1).cos() / 7.0).collect();
            assert_eq!(dot(&a, &b).to_bits(), dot_impl(&a, &b).to_bits(), "n = {n}");
            let c: Vec<f64> = b.iter().map(|v| v * 0.7 - 0.3).collect();
            let (x, y) = dot2(&a, &b, &c);
            assert_eq!(x.to_bits(), dot_impl(&a, &b).to_bits(), "n = {n}");
            assert_eq!(y.to_bits(), dot_impl(&a, &c).to_bits(), "n = {n}");
            let mut y1 = b.clone();
            let mut y2 = b.clone();
            axpy(&mut y1, -0.3, &a);
            axpy_impl(&mut y2, -0.3, &a);
            assert_eq!(y1, y2);
        }
    }

    #[test]
    fn cholesky_refuses_indefinite() {
        let mut a = vec![1.0, 2.0, 2.0, 1.0];
        assert!(!cholesky_lower(&mut a, 2));
    }
}
