//! Gemm and MatMul on the strided GEMM.

use lutq_ir::Gemm;

use crate::sgemm::{Strides, row_major, sgemm, transposed};
use crate::shape::{broadcast_strides, contiguous_strides, for_each_offset};

/// `out = alpha · op(A) · op(B) + beta · C`, C broadcast to `[M, N]`.
/// Operands are `(elements, shape)`.
pub(crate) fn gemm(
    g: &Gemm,
    (a, a_shape): (&[f32], &[usize]),
    (b, b_shape): (&[f32], &[usize]),
    c: Option<(&[f32], &[usize])>,
    out: &mut [f32],
    out_shape: &[usize],
) {
    let (m, n) = (out_shape[0], out_shape[1]);
    let k = if g.trans_a { a_shape[0] } else { a_shape[1] };
    // Transposition is only a change of strides.
    let sa: Strides = if g.trans_a {
        transposed(a_shape[1])
    } else {
        row_major(a_shape[1])
    };
    let sb: Strides = if g.trans_b {
        transposed(b_shape[1])
    } else {
        row_major(b_shape[1])
    };
    // beta = 0 ignores C entirely, as BLAS does (so an Inf or NaN in C does not leak).
    let accumulate = match c {
        Some((c, c_shape)) if g.beta != 0.0 => {
            let sc = broadcast_strides(c_shape, out_shape);
            for i in 0..m {
                for j in 0..n {
                    out[i * n + j] = g.beta * c[i * sc[0] + j * sc[1]];
                }
            }
            true
        }
        _ => false,
    };
    sgemm(
        m,
        n,
        k,
        g.alpha,
        a,
        sa,
        b,
        sb,
        accumulate,
        out,
        row_major(n),
    );
}

/// numpy `matmul`: 1-D operands are promoted to matrices (and the added axis dropped
/// from the result, which the output shape already reflects); batch dimensions broadcast.
pub(crate) fn matmul(a: &[f32], a_shape: &[usize], b: &[f32], b_shape: &[usize], out: &mut [f32]) {
    let a2: Vec<usize> = if a_shape.len() == 1 {
        vec![1, a_shape[0]]
    } else {
        a_shape.to_vec()
    };
    let b2: Vec<usize> = if b_shape.len() == 1 {
        vec![b_shape[0], 1]
    } else {
        b_shape.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let n = b2[b2.len() - 1];
    let (ab, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let rank = ab.len().max(bb.len());
    // Broadcast batch shape; the graph was validated, so dims are equal or 1.
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    let batch: Vec<usize> = (0..rank).map(|i| dim(ab, i).max(dim(bb, i))).collect();
    let scale = |strides: Vec<usize>, size: usize| -> Vec<usize> {
        strides.into_iter().map(|s| s * size).collect()
    };
    let sa = scale(broadcast_strides(ab, &batch), m * k);
    let sb = scale(broadcast_strides(bb, &batch), k * n);
    let so = scale(contiguous_strides(&batch), m * n);
    for_each_offset(&batch, [&sa, &sb, &so], |[oa, ob, oo]| {
        sgemm(
            m,
            n,
            k,
            1.0,
            &a[oa..],
            row_major(k),
            &b[ob..],
            row_major(n),
            false,
            &mut out[oo..],
            row_major(n),
        );
    });
}

/// Softmax along `axis`, in place: `exp(x − max) / Σ exp(x − max)`, the max taken per
/// slice so that no exponential overflows.
pub(crate) fn softmax(x: &mut [f32], shape: &[usize], axis: usize) {
    let len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let block = len * inner;
    if block == 0 {
        return;
    }
    let mut max = vec![0.0f32; inner];
    let mut sum = vec![0.0f32; inner];
    for blk in x.chunks_exact_mut(block) {
        // Walk the axis as `len` rows of `inner` contiguous lanes, one lane per slice.
        max.copy_from_slice(&blk[..inner]);
        for row in blk.chunks_exact(inner).skip(1) {
            for (m, &v) in max.iter_mut().zip(row) {
                *m = m.max(v);
            }
        }
        sum.fill(0.0);
        for row in blk.chunks_exact_mut(inner) {
            for ((v, &m), s) in row.iter_mut().zip(&max).zip(sum.iter_mut()) {
                *v = (*v - m).exp();
                *s += *v;
            }
        }
        for row in blk.chunks_exact_mut(inner) {
            for (v, &s) in row.iter_mut().zip(&sum) {
                *v /= s;
            }
        }
    }
}
