//! Power-of-two exponents: the max-fitting start and the candidates around it.
//!
//! A real weight is `level · 2^-e`. The *max-fitting* exponent is the largest `e` for
//! which round-to-nearest never clips by more than half a step: every scaled weight
//! `w · 2^e` lies in `[lo − ½, hi + ½]` for the grid's integer range `lo..=hi`
//! (int8 and the LUT: `[−128.5, 127.5]`; int4: `[−8.5, 7.5]`). Half a step is the
//! rounding error every in-range weight has anyway, so nothing is lost to clipping; one
//! exponent more would clip the extreme weight by more than a step, one less doubles the
//! step of every weight. The asymmetric grid is used as it is (the negative side may use
//! `lo`), which is why positive and negative extremes are checked separately.
//!
//! The data-aware fit then also tries `e − 1` and `e + 1` (resolution against clipping)
//! and keeps whichever gives the lowest output error.

use super::RowScale;

/// Exponents are clamped to `−EXP_LIMIT..=EXP_LIMIT`. A row whose weights are all below
/// `2^-EXP_LIMIT` quantizes to zeros (its error is negligible at that size); the clamp
/// keeps later shift amounts in a sane range for tiny or huge weights.
pub const EXP_LIMIT: i32 = 32;

/// The max-fitting exponent of weights within `[wmin, wmax]` for the integer grid
/// `lo..=hi` (`lo ≤ 0 ≤ hi`), or `None` when every weight is zero (or not finite).
pub fn max_fit_exponent(wmin: f64, wmax: f64, lo: i32, hi: i32) -> Option<i32> {
    let top = hi as f64 + 0.5;
    let bottom = lo as f64 - 0.5;
    let pos = if wmax > 0.0 && wmax.is_finite() {
        (top / wmax).log2()
    } else {
        f64::INFINITY
    };
    let neg = if wmin < 0.0 && wmin.is_finite() {
        (bottom / wmin).log2()
    } else {
        f64::INFINITY
    };
    let bound = pos.min(neg);
    if !bound.is_finite() {
        return None;
    }
    let fits = |e: i32| {
        let s = (e as f64).exp2();
        wmax * s <= top && wmin * s >= bottom
    };
    // `log2` may be off by an ulp at exact powers of two: settle by testing.
    let mut e = (bound.floor() as i32).clamp(-EXP_LIMIT, EXP_LIMIT);
    while e > -EXP_LIMIT && !fits(e) {
        e -= 1;
    }
    while e < EXP_LIMIT && fits(e + 1) {
        e += 1;
    }
    Some(e)
}

/// Min and max of a slice (`(0, 0)` when empty).
pub(crate) fn min_max(w: &[f32]) -> (f64, f64) {
    w.iter().fold((0.0f64, 0.0f64), |(lo, hi), &x| {
        let x = x as f64;
        (lo.min(x), hi.max(x))
    })
}

/// `scales` with every power-of-two exponent moved by `delta` (clamped); rows flagged in `zero_rows`
/// (all-zero rows) and float scales are left alone.
pub(crate) fn shifted(scales: &[RowScale], delta: i32, zero_rows: &[bool]) -> Vec<RowScale> {
    scales
        .iter()
        .zip(zero_rows)
        .map(|(&s, &zero)| match s {
            RowScale::Pot(e) if !zero => RowScale::Pot((e + delta).clamp(-EXP_LIMIT, EXP_LIMIT)),
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_fit_examples() {
        // 1.0 · 2^6 = 64 ≤ 127.5, 2^7 = 128 > 127.5.
        assert_eq!(max_fit_exponent(-0.5, 1.0, -128, 127), Some(6));
        // -1.0 · 2^7 = -128 ≥ -128.5: the negative side may use -128.
        assert_eq!(max_fit_exponent(-1.0, 0.5, -128, 127), Some(7));
        // int4: 7.5 / 0.9 = 8.33 → 2^3.
        assert_eq!(max_fit_exponent(-0.1, 0.9, -8, 7), Some(3));
        assert_eq!(max_fit_exponent(0.0, 0.0, -8, 7), None);
        assert_eq!(max_fit_exponent(-1e-30, 1e-30, -8, 7), Some(EXP_LIMIT));
        assert_eq!(max_fit_exponent(-1e30, 1e30, -8, 7), Some(-EXP_LIMIT));
        // Exactly at the bound: 127.5 · 2^-3 fits with e = 3.
        assert_eq!(max_fit_exponent(0.0, 127.5 / 8.0, -128, 127), Some(3));
    }
}
