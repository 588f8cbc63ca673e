//! Data-movement kernels that only copy elements (Transpose, Concat, Pad). Generic over the
//! element type, so the integer interpreter runs the very same code.

use crate::shape::{coalesce, contiguous_strides, for_each_offset};

/// `out = x.transpose(perm)`; `out` has `x.len()` elements.
pub(crate) fn transpose<T: Copy>(x: &[T], shape: &[usize], perm: &[usize], out: &mut [T]) {
    let in_strides = contiguous_strides(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let out_strides = contiguous_strides(&out_shape);
    // Input strides in output dimension order: output dim d walks input dim perm[d].
    let read: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let (dims, [so, si]) = coalesce(&out_shape, [&out_strides, &read]);
    let last = dims.len() - 1;
    let (inner, inner_o, inner_i) = (dims[last], so[last], si[last]);
    for_each_offset(&dims[..last], [&so[..last], &si[..last]], |[o, i]| {
        if inner_o == 1 && inner_i == 1 {
            out[o..o + inner].copy_from_slice(&x[i..i + inner]);
        } else {
            for j in 0..inner {
                out[o + j * inner_o] = x[i + j * inner_i];
            }
        }
    });
}

/// Concatenation along `axis` of tensors that agree on every other dimension.
pub(crate) fn concat<T: Copy>(parts: &[(&[T], &[usize])], axis: usize, out: &mut [T]) {
    let Some(&(_, first)) = parts.first() else {
        return;
    };
    let outer: usize = first[..axis].iter().product();
    let inner: usize = first[axis + 1..].iter().product();
    let mut pos = 0;
    for o in 0..outer {
        for (data, shape) in parts {
            let chunk = shape[axis] * inner;
            out[pos..pos + chunk].copy_from_slice(&data[o * chunk..(o + 1) * chunk]);
            pos += chunk;
        }
    }
}

/// Constant padding: `pads` holds the begin pads of every axis, then the end pads.
pub(crate) fn pad<T: Copy>(
    x: &[T],
    shape: &[usize],
    pads: &[usize],
    value: T,
    out: &mut [T],
    out_shape: &[usize],
) {
    out.fill(value);
    if x.is_empty() {
        return;
    }
    let rank = shape.len();
    if rank == 0 {
        out[0] = x[0];
        return;
    }
    let out_strides = contiguous_strides(out_shape);
    let in_strides = contiguous_strides(shape);
    // Where input element 0 lands in the output.
    let base: usize = (0..rank).map(|d| pads[d] * out_strides[d]).sum();
    let row = shape[rank - 1];
    for_each_offset(
        &shape[..rank - 1],
        [&in_strides[..rank - 1], &out_strides[..rank - 1]],
        |[i, o]| {
            out[base + o..base + o + row].copy_from_slice(&x[i..i + row]);
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_2d_and_4d() {
        let x: Vec<i32> = (0..6).collect();
        let mut out = vec![0; 6];
        transpose(&x, &[2, 3], &[1, 0], &mut out);
        assert_eq!(out, [0, 3, 1, 4, 2, 5]);
        // NCHW → NHWC on [1, 2, 2, 2].
        let x: Vec<i32> = (0..8).collect();
        let mut out = vec![0; 8];
        transpose(&x, &[1, 2, 2, 2], &[0, 2, 3, 1], &mut out);
        assert_eq!(out, [0, 4, 1, 5, 2, 6, 3, 7]);
    }

    #[test]
    fn concat_middle_axis() {
        let a = [1, 2, 3, 4]; // [2, 2]
        let b = [5, 6]; // [2, 1]
        let mut out = [0; 6];
        concat(&[(&a, &[2, 2]), (&b, &[2, 1])], 1, &mut out);
        assert_eq!(out, [1, 2, 5, 3, 4, 6]);
    }

    #[test]
    fn pad_2d() {
        let x = [1, 2, 3, 4];
        let mut out = [0; 12];
        pad(&x, &[2, 2], &[1, 0, 0, 2], 9, &mut out, &[3, 4]);
        assert_eq!(out, [9, 9, 9, 9, 1, 2, 9, 9, 3, 4, 9, 9]);
    }
}
