//! Safe, single-threaded f32 GEMM over strided matrices, on the `gemm` crate.
//!
//! Matrices are addressed row-major with explicit strides: element `(i, j)` of a matrix
//! with strides `(rs, cs)` is at `i * rs + j * cs`, so transposed operands cost nothing.
//!
//! Why `gemm` and why this orientation: on the AVX-512 machine this was developed on,
//! `gemm` (then with its AVX-512 kernels) ran MobileNetV2's pointwise shapes at 60–125
//! GFLOP/s single-threaded when called column-major, against 20–85 for `matrixmultiply`
//! (which has no AVX-512 kernels) — but only 6–60 for `gemm` when the destination is
//! row-major. So a row-major `C = A·B` is handed to `gemm` as the column-major
//! `Cᵀ = Bᵀ·Aᵀ`, which is the same memory and the same arithmetic with the operands
//! swapped.
//!
//! Same bits on every x86-64 machine: the AVX2/FMA kernels only (crates/interp/Cargo.toml)
//! and `k` in fixed chunks ([`sgemm`]). Other architectures (NEON) sum in their own order.

use gemm_common::Parallelism;

/// Longest sum over `k` handed to one `gemm` call (see [`sgemm`]): the shortest block
/// `gemm` ever makes of `k`.
const MAX_KC: usize = 512;

/// Strides of a matrix view: `(row stride, column stride)` in elements.
pub type Strides = (usize, usize);

/// Row-major strides of a contiguous `rows × cols` matrix.
pub fn row_major(cols: usize) -> Strides {
    (cols, 1)
}

/// Strides of the transpose of a contiguous matrix that has `cols` columns.
pub fn transposed(cols: usize) -> Strides {
    (1, cols)
}

/// Largest offset a `rows × cols` view with strides `s` touches, plus one.
fn extent(rows: usize, cols: usize, s: Strides) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * s.0 + (cols - 1) * s.1 + 1
    }
}

/// `c = alpha · a · b`, or `c += alpha · a · b` when `accumulate`; `a` is `m × k`, `b` is
/// `k × n`, `c` is `m × n`. Runs on the calling thread only.
///
/// Panics when a view reaches past its slice: callers derive the views from validated
/// shapes, so that would be a bug in lutq, and it must not become an out-of-bounds access
/// in the unsafe GEMM.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    sa: Strides,
    b: &[f32],
    sb: Strides,
    accumulate: bool,
    c: &mut [f32],
    sc: Strides,
) {
    assert!(extent(m, k, sa) <= a.len(), "sgemm: A view out of bounds");
    assert!(extent(k, n, sb) <= b.len(), "sgemm: B view out of bounds");
    assert!(extent(m, n, sc) <= c.len(), "sgemm: C view out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // The empty sum; kept out of the GEMM crate, whose handling of k = 0 is undocumented.
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    c[i * sc.0 + j * sc.1] = 0.0;
                }
            }
        }
        return;
    }
    // The sum over `k` in chunks of at most `MAX_KC`, each one GEMM call: `gemm` splits
    // `k` into blocks sized from the CPU's cache geometry and adds each block's partial
    // sums to `c` in turn, so a longer `k` rounded differently on an Intel Xeon (blocks
    // up to 1024) and an AMD EPYC — and so did the quantizer's fit (a MobileNetV2
    // classifier bias). `gemm` sums a chunk of at most 512 as one block on every machine
    // (its blocks are never shorter), so these chunks fix the rounding.
    if k > MAX_KC {
        let chunks = k.div_ceil(MAX_KC);
        let kc = k.div_ceil(chunks);
        let mut k0 = 0;
        while k0 < k {
            let kn = kc.min(k - k0);
            sgemm(
                m,
                n,
                kn,
                alpha,
                &a[k0 * sa.1..],
                sa,
                &b[k0 * sb.0..],
                sb,
                accumulate || k0 > 0,
                c,
                sc,
            );
            k0 += kn;
        }
        return;
    }
    let gemm = gemm_f32::gemm::f32::get_gemm_fn();
    // Column-major Cᵀ (n × m) = Bᵀ (n × k) · Aᵀ (k × m); element (j, i) of Cᵀ lives at
    // row-major (i, j) of C, so Cᵀ's row stride is C's column stride and vice versa.
    // `gemm` computes dst = alpha' · dst + beta' · lhs · rhs, reading dst only when asked.
    //
    // SAFETY: every view was checked above to lie inside its slice; `c` is a unique borrow,
    // so it aliases neither operand; the strides fit in isize because the extents fit in
    // the slices' lengths.
    unsafe {
        gemm(
            n,
            m,
            k,
            c.as_mut_ptr(),
            sc.0 as isize,
            sc.1 as isize,
            accumulate,
            b.as_ptr(),
            sb.0 as isize,
            sb.1 as isize,
            a.as_ptr(),
            sa.0 as isize,
            sa.1 as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// `XᵀX` of a row-major `rows × cols` matrix (`cols × cols`, row-major): the Gram matrix
/// the quantizer's layer objective needs (second moment of a layer's input patches),
/// accumulated into `gram` (`+=`). Single-threaded.
pub fn accumulate_gram(x: &[f32], rows: usize, cols: usize, gram: &mut [f32]) {
    accumulate_cross_gram(x, x, rows, cols, gram);
}

/// `XᵀY` of two row-major `rows × cols` matrices (`cols × cols`, row-major), accumulated
/// into `out` (`+=`): the cross moment of a layer's quantized and float input patches.
/// Single-threaded.
pub fn accumulate_cross_gram(x: &[f32], y: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    assert_eq!(
        x.len(),
        rows * cols,
        "accumulate_cross_gram: x has the wrong size"
    );
    assert_eq!(
        y.len(),
        rows * cols,
        "accumulate_cross_gram: y has the wrong size"
    );
    assert_eq!(
        out.len(),
        cols * cols,
        "accumulate_cross_gram: out has the wrong size"
    );
    sgemm(
        cols,
        cols,
        rows,
        1.0,
        x,
        transposed(cols),
        y,
        row_major(cols),
        true,
        out,
        row_major(cols),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        sa: Strides,
        b: &[f32],
        sb: Strides,
    ) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    s += a[i * sa.0 + p * sa.1] as f64 * b[p * sb.0 + j * sb.1] as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn matches_naive_for_all_transpositions() {
        for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (17, 33, 9), (64, 3, 100), (2, 70, 1)] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
                .collect();
            for (sa, sb) in [
                (row_major(k), row_major(n)),
                (transposed(m), row_major(n)),
                (row_major(k), transposed(k)),
                (transposed(m), transposed(k)),
            ] {
                let want = naive(m, n, k, &a, sa, &b, sb);
                let mut c = vec![1.0; m * n];
                sgemm(m, n, k, 1.0, &a, sa, &b, sb, false, &mut c, row_major(n));
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
                }
                // Accumulating with alpha = 2 onto ones.
                let mut c = vec![1.0; m * n];
                sgemm(m, n, k, 2.0, &a, sa, &b, sb, true, &mut c, row_major(n));
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - (1.0 + 2.0 * y)).abs() <= 1e-4 * (1.0 + y.abs()));
                }
            }
        }
    }

    #[test]
    fn empty_inner_dimension_gives_zeros() {
        let mut c = vec![5.0; 6];
        sgemm(
            2,
            3,
            0,
            1.0,
            &[],
            (0, 1),
            &[],
            (3, 1),
            false,
            &mut c,
            row_major(3),
        );
        assert_eq!(c, vec![0.0; 6]);
    }
}
