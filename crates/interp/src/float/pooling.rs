//! MaxPool, AveragePool, SumPool, GlobalAveragePool and GlobalSumPool.
//!
//! Window semantics follow onnxruntime (and the ONNX reference): window `o` of an axis
//! covers input positions `o·stride − pad_begin + k·dilation`; positions outside the
//! input never take part in a max or a sum. The output size (ceil_mode included) comes
//! from the IR's shape inference. AveragePool divides by the number of taps inside the
//! input, or, with `count_include_pad`, inside the padded input `[−pad_begin,
//! len + pad_end)` — taps beyond the end padding, which only ceil_mode creates, never
//! count.

use lutq_ir::Pool;

/// Per output index of one axis: the input positions its window reads, and how many of
/// its taps fall inside the padded input.
struct AxisTaps {
    taps: Vec<Vec<usize>>,
    padded_counts: Vec<usize>,
}

fn axis_taps(
    out: usize,
    len: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
) -> AxisTaps {
    let mut taps = Vec::with_capacity(out);
    let mut padded_counts = Vec::with_capacity(out);
    for o in 0..out {
        let mut t = Vec::with_capacity(kernel);
        let mut padded = 0;
        for k in 0..kernel {
            // Position in padded coordinates (input position + pad_begin).
            let p = o * stride + k * dilation;
            if p < len + pad_begin + pad_end {
                padded += 1;
            }
            if p >= pad_begin && p - pad_begin < len {
                t.push(p - pad_begin);
            }
        }
        taps.push(t);
        padded_counts.push(padded);
    }
    AxisTaps {
        taps,
        padded_counts,
    }
}

struct Windows {
    rows: AxisTaps,
    cols: AxisTaps,
    planes: usize,
    hw: usize,
    ohw: usize,
    w: usize,
}

fn windows(p: &Pool, x: &[usize], out: &[usize]) -> Windows {
    Windows {
        rows: axis_taps(
            out[2],
            x[2],
            p.kernel[0],
            p.strides[0],
            p.dilations[0],
            p.pads[0],
            p.pads[2],
        ),
        cols: axis_taps(
            out[3],
            x[3],
            p.kernel[1],
            p.strides[1],
            p.dilations[1],
            p.pads[1],
            p.pads[3],
        ),
        planes: x[0] * x[1],
        hw: x[2] * x[3],
        ohw: out[2] * out[3],
        w: x[3],
    }
}

/// Max over each window's taps inside the input; −∞ for a window that has none (only
/// possible with dilations that step over the whole input).
pub(crate) fn max_pool(
    p: &Pool,
    x: &[f32],
    x_shape: &[usize],
    out: &mut [f32],
    out_shape: &[usize],
) {
    let win = windows(p, x_shape, out_shape);
    for plane in 0..win.planes {
        let xi = &x[plane * win.hw..(plane + 1) * win.hw];
        let mut o = plane * win.ohw;
        for rows in &win.rows.taps {
            for cols in &win.cols.taps {
                let mut m = f32::NEG_INFINITY;
                for &iy in rows {
                    let r = &xi[iy * win.w..(iy + 1) * win.w];
                    for &ix in cols {
                        m = m.max(r[ix]);
                    }
                }
                out[o] = m;
                o += 1;
            }
        }
    }
}

/// Mean over each window (see the module docs for the divisor).
pub(crate) fn average_pool(
    p: &Pool,
    x: &[f32],
    x_shape: &[usize],
    out: &mut [f32],
    out_shape: &[usize],
) {
    window_sums(p, x, x_shape, out, out_shape, true);
}

/// Sum over each window's taps inside the input (AveragePool without the division).
pub(crate) fn sum_pool(
    p: &Pool,
    x: &[f32],
    x_shape: &[usize],
    out: &mut [f32],
    out_shape: &[usize],
) {
    window_sums(p, x, x_shape, out, out_shape, false);
}

fn window_sums(
    p: &Pool,
    x: &[f32],
    x_shape: &[usize],
    out: &mut [f32],
    out_shape: &[usize],
    divide: bool,
) {
    let win = windows(p, x_shape, out_shape);
    for plane in 0..win.planes {
        let xi = &x[plane * win.hw..(plane + 1) * win.hw];
        let mut o = plane * win.ohw;
        for (rows, &prows) in win.rows.taps.iter().zip(&win.rows.padded_counts) {
            for (cols, &pcols) in win.cols.taps.iter().zip(&win.cols.padded_counts) {
                let mut sum = 0.0f32;
                for &iy in rows {
                    let r = &xi[iy * win.w..(iy + 1) * win.w];
                    for &ix in cols {
                        sum += r[ix];
                    }
                }
                let count = if p.count_include_pad {
                    prows * pcols
                } else {
                    rows.len() * cols.len()
                };
                out[o] = if divide { sum / count as f32 } else { sum };
                o += 1;
            }
        }
    }
}

/// Mean over all spatial positions of each `(n, c)` plane, for any rank ≥ 3. Sums in f64:
/// planes can be large (112×112), and this is the reference.
pub(crate) fn global_average_pool(x: &[f32], x_shape: &[usize], out: &mut [f32]) {
    let spatial: usize = x_shape[2..].iter().product();
    if spatial == 0 {
        out.fill(f32::NAN);
        return;
    }
    for (o, plane) in out.iter_mut().zip(x.chunks_exact(spatial)) {
        let sum: f64 = plane.iter().map(|&v| v as f64).sum();
        *o = (sum / spatial as f64) as f32;
    }
}

/// Sum over all spatial positions of each `(n, c)` plane, for any rank ≥ 3 (an empty
/// plane sums to 0). Sums in f64 like [`global_average_pool`], then rounds once to f32.
pub(crate) fn global_sum_pool(x: &[f32], x_shape: &[usize], out: &mut [f32]) {
    let spatial: usize = x_shape[2..].iter().product();
    if spatial == 0 {
        out.fill(0.0);
        return;
    }
    for (o, plane) in out.iter_mut().zip(x.chunks_exact(spatial)) {
        *o = plane.iter().map(|&v| v as f64).sum::<f64>() as f32;
    }
}
