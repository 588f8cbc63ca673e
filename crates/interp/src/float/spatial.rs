//! Slice and Resize kernels.

use lutq_ir::{Resize, ResizeMode};

/// `out` = the elements `start, start + step, …` of axis `axis` of `x` (the output's
/// size on that axis is `out_shape[axis]`).
pub(crate) fn slice(
    x: &[f32],
    shape: &[usize],
    axis: usize,
    start: usize,
    step: usize,
    out: &mut [f32],
    out_shape: &[usize],
) {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let (n_in, n_out) = (shape[axis], out_shape[axis]);
    let mut o = 0;
    for b in 0..outer {
        for i in 0..n_out {
            let src = (b * n_in + start + i * step) * inner;
            out[o..o + inner].copy_from_slice(&x[src..src + inner]);
            o += inner;
        }
    }
}

/// Resizes every `[H, W]` plane of `x` (`[N, C, H, W]`) to `r.out`.
pub(crate) fn resize(r: &Resize, x: &[f32], shape: &[usize], out: &mut [f32]) {
    let (h, w) = (shape[2], shape[3]);
    let (oh, ow) = (r.out[0], r.out[1]);
    let ys = r.axis_taps(0, h);
    let xs = r.axis_taps(1, w);
    let planes = shape[0] * shape[1];
    for p in 0..planes {
        let src = &x[p * h * w..(p + 1) * h * w];
        let dst = &mut out[p * oh * ow..(p + 1) * oh * ow];
        for (oy, &(y1, y2, wy1, wy2)) in ys.iter().enumerate() {
            let row = &mut dst[oy * ow..(oy + 1) * ow];
            match r.mode {
                ResizeMode::Nearest => {
                    for (v, &(x1, ..)) in row.iter_mut().zip(&xs) {
                        *v = src[y1 * w + x1];
                    }
                }
                ResizeMode::Linear => {
                    for (v, &(x1, x2, wx1, wx2)) in row.iter_mut().zip(&xs) {
                        let (x11, x21) = (src[y1 * w + x1], src[y1 * w + x2]);
                        let (x12, x22) = (src[y2 * w + x1], src[y2 * w + x2]);
                        *v = wx1 * wy1 * x11 + wx2 * wy1 * x21 + wx1 * wy2 * x12 + wx2 * wy2 * x22;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use lutq_ir::{CoordMode, NearestMode};

    use super::*;

    /// Naive bilinear resize straight from the ONNX definition, in f64.
    fn naive_linear(r: &Resize, x: &[f32], h: usize, w: usize) -> Vec<f32> {
        let coord = |o: usize, s: f32, n: usize, m: usize| -> f64 {
            let c = r.coord.input_coord(o, s, n, m) as f64;
            c.clamp(0.0, (n - 1) as f64)
        };
        let mut out = Vec::new();
        for oy in 0..r.out[0] {
            for ox in 0..r.out[1] {
                let cy = coord(oy, r.scales[0], h, r.out[0]);
                let cx = coord(ox, r.scales[1], w, r.out[1]);
                let (y0, x0) = (cy.floor() as usize, cx.floor() as usize);
                let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
                let (fy, fx) = (cy - y0 as f64, cx - x0 as f64);
                let at = |y: usize, xx: usize| x[y * w + xx] as f64;
                let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                out.push((top * (1.0 - fy) + bottom * fy) as f32);
            }
        }
        out
    }

    #[test]
    fn bilinear_matches_a_naive_implementation() {
        let (h, w) = (3, 5);
        let x: Vec<f32> = (0..h * w).map(|i| ((i * 7) % 11) as f32 - 3.0).collect();
        for coord in [
            CoordMode::HalfPixel,
            CoordMode::PytorchHalfPixel,
            CoordMode::AlignCorners,
            CoordMode::Asymmetric,
        ] {
            for (out, scales) in [
                ([6, 10], [2.0, 2.0]),
                ([2, 3], [2.0 / 3.0, 0.6]),
                ([7, 4], [7.0 / 3.0, 0.8]),
            ] {
                let r = Resize {
                    mode: ResizeMode::Linear,
                    coord,
                    nearest_mode: NearestMode::Floor,
                    out,
                    scales,
                };
                let mut got = vec![0.0; out[0] * out[1]];
                resize(&r, &x, &[1, 1, h, w], &mut got);
                let want = naive_linear(&r, &x, h, w);
                for (g, e) in got.iter().zip(&want) {
                    assert!(
                        (g - e).abs() < 1e-5,
                        "{coord:?} {out:?}: {got:?} vs {want:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn nearest_picks_like_onnx() {
        // 2 → 4, asymmetric + floor: 0 0 1 1; half_pixel + round_prefer_floor: 0 0 1 1;
        // align_corners + round_prefer_ceil: x·1/3 → 0, 0.33→0, 0.67→1, 1 → 1.
        let x = [10.0, 20.0];
        let run = |coord, nearest_mode| {
            let r = Resize {
                mode: ResizeMode::Nearest,
                coord,
                nearest_mode,
                out: [1, 4],
                scales: [1.0, 2.0],
            };
            let mut out = vec![0.0; 4];
            resize(&r, &x, &[1, 1, 1, 2], &mut out);
            out
        };
        assert_eq!(
            run(CoordMode::Asymmetric, NearestMode::Floor),
            [10.0, 10.0, 20.0, 20.0]
        );
        assert_eq!(
            run(CoordMode::HalfPixel, NearestMode::RoundPreferFloor),
            [10.0, 10.0, 20.0, 20.0]
        );
        assert_eq!(
            run(CoordMode::AlignCorners, NearestMode::RoundPreferCeil),
            [10.0, 10.0, 20.0, 20.0]
        );
        assert_eq!(
            run(CoordMode::Asymmetric, NearestMode::Ceil),
            [10.0, 20.0, 20.0, 20.0]
        );
    }

    #[test]
    fn slice_takes_every_step_th_element() {
        let x: Vec<f32> = (0..24).map(|i| i as f32).collect();
        // [2, 3, 4], axis 2, 1..4 step 2 → columns 1, 3.
        let mut out = vec![0.0; 12];
        slice(&x, &[2, 3, 4], 2, 1, 2, &mut out, &[2, 3, 2]);
        let want: Vec<f32> = (0..12)
            .map(|i| (i / 2 * 4 + 1 + (i % 2) * 2) as f32)
            .collect();
        assert_eq!(out, want);
    }
}
