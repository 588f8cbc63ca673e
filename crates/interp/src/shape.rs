//! Index arithmetic shared by the kernels: strides, broadcasting, dimension coalescing and
//! iteration over multi-indices. Type-independent, so the integer interpreter reuses it.

/// Row-major strides of a contiguous tensor.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut s = 1;
    for d in (0..shape.len()).rev() {
        strides[d] = s;
        s *= shape[d];
    }
    strides
}

/// Strides with which a contiguous tensor of `shape` is read when broadcast (numpy rules,
/// dimensions aligned at the right) to `out`: 0 along every broadcast dimension.
pub(crate) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let own = contiguous_strides(shape);
    let lead = out.len() - shape.len();
    (0..out.len())
        .map(|d| {
            if d < lead || shape[d - lead] == 1 {
                0
            } else {
                own[d - lead]
            }
        })
        .collect()
}

/// Simplifies an iteration space: drops size-1 dimensions and merges neighbours that are
/// contiguous in every operand (`stride[d] == stride[d+1] * size[d+1]`), so that kernels
/// run long inner loops. `strides` holds one stride vector per operand, each as long as
/// `shape`. Returns the new shape (at least one dimension) and strides.
pub(crate) fn coalesce<const N: usize>(
    shape: &[usize],
    strides: [&[usize]; N],
) -> (Vec<usize>, [Vec<usize>; N]) {
    let mut out_shape: Vec<usize> = Vec::with_capacity(shape.len());
    let mut out_strides: [Vec<usize>; N] = std::array::from_fn(|_| Vec::new());
    for d in 0..shape.len() {
        let size = shape[d];
        if size == 1 {
            continue;
        }
        let mergeable = !out_shape.is_empty()
            && (0..N).all(|o| {
                let prev = *out_strides[o].last().unwrap_or(&0);
                prev == strides[o][d] * size
            });
        if mergeable {
            *out_shape.last_mut().expect("checked non-empty") *= size;
            for o in 0..N {
                *out_strides[o].last_mut().expect("same length as shape") = strides[o][d];
            }
        } else {
            out_shape.push(size);
            for o in 0..N {
                out_strides[o].push(strides[o][d]);
            }
        }
    }
    if out_shape.is_empty() {
        out_shape.push(1);
        for s in &mut out_strides {
            s.push(0);
        }
    }
    (out_shape, out_strides)
}

/// Calls `f` with the offsets of every operand for each multi-index of `shape`, in
/// row-major order. Nothing is called when a dimension is 0; once for an empty shape.
pub(crate) fn for_each_offset<const N: usize>(
    shape: &[usize],
    strides: [&[usize]; N],
    mut f: impl FnMut([usize; N]),
) {
    if shape.contains(&0) {
        return;
    }
    let rank = shape.len();
    let mut index = vec![0usize; rank];
    let mut offsets = [0usize; N];
    loop {
        f(offsets);
        // Odometer increment from the innermost dimension.
        let mut d = rank;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            index[d] += 1;
            for o in 0..N {
                offsets[o] += strides[o][d];
            }
            if index[d] < shape[d] {
                break;
            }
            for o in 0..N {
                offsets[o] -= strides[o][d] * shape[d];
            }
            index[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_strides_align_right() {
        assert_eq!(broadcast_strides(&[3, 1], &[2, 3, 4]), [0, 1, 0]);
        assert_eq!(broadcast_strides(&[2, 3, 4], &[2, 3, 4]), [12, 4, 1]);
        assert_eq!(broadcast_strides(&[], &[5]), [0]);
    }

    #[test]
    fn coalesce_merges_contiguous_dims() {
        // [N=1, C=8, H=4, W=4] + [8, 1, 1]: batch dropped, H·W merged.
        let out = [1, 8, 4, 4];
        let a = contiguous_strides(&out);
        let b = broadcast_strides(&[8, 1, 1], &out);
        let (shape, [sa, sb]) = coalesce(&out, [&a, &b]);
        assert_eq!(shape, [8, 16]);
        assert_eq!(sa, [16, 1]);
        assert_eq!(sb, [1, 0]);
        let (shape, [sa]) = coalesce(&[1, 1], [&[1, 1]]);
        assert_eq!((shape, sa), (vec![1], vec![0]));
    }

    #[test]
    fn offsets_visit_row_major() {
        let mut seen = Vec::new();
        for_each_offset(&[2, 3], [&[3, 1], &[0, 1]], |[a, b]| seen.push((a, b)));
        assert_eq!(seen, [(0, 0), (1, 1), (2, 2), (3, 0), (4, 1), (5, 2)]);
        let mut n = 0;
        for_each_offset(&[2, 0], [&[0, 0]], |_| n += 1);
        assert_eq!(n, 0);
        for_each_offset(&[], [&[]], |_| n += 1);
        assert_eq!(n, 1);
    }
}
