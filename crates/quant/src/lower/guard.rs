//! Per-channel guards of a linear layer: every output channel's exponent is capped so
//! that its i32 arithmetic provably fits and its rescale is representable, and constant
//! channels get an exponent chosen for their bias.
//!
//! Why: the fit chooses each row's exponent for its weights alone. A row with tiny
//! weights and an ordinary bias (BatchNorm with γ ≈ 0) or with a huge bias gets a bias
//! `b · 2^(f_x + f_w)` beyond i32, a rounding term beyond i32, or (float scales) a rescale
//! factor outside [`Rescale::from_factor`]'s range. The quantizer must never produce a
//! graph its own proof ([`lutq_ir::int::accumulator_bound`], per channel
//! [`channel_bound`]) refuses, so per row, the largest exponent not above the fitted one
//! for which
//!
//! ```text
//! |bias_q| + Σ|w_q| · max|x| + rounding term (or the left shift) ≤ 2^31 − 1
//! ```
//!
//! holds and the shift (|s| ≤ 31) or multiplier is representable is kept; a row whose
//! exponent had to be lowered is re-rounded on its grid (its table, or the uniform
//! levels) and counted as *capped*. Before lowering anything, a bias beyond the point
//! where the output saturates whatever the input is is clamped to that point, which
//! changes no output (a ReLU channel with bias −10¹² stays 0).
//!
//! Constant channels (see `fit/dead.rs`) have all-zero weights; their exponent only
//! sets the resolution of the bias: the accumulator step starts [`CONSTANT_SHIFT`] bits
//! below the output step, then is capped like any other row.

use lutq_ir::int::{IntElem, Rescale, channel_bound, input_magnitude};

use crate::fit::{self, EXP_LIMIT, Fitted, RowScale, WeightFormat};

/// A constant channel's accumulator step is `2^-CONSTANT_SHIFT` of its output step (when
/// the bias fits): its output is the bias rounded once, to the output step.
pub(super) const CONSTANT_SHIFT: i32 = 16;

/// Most exponent decrements per row before giving up.
const MAX_CAP_STEPS: usize = 96;

/// Largest shift magnitude a power-of-two rescale may have: the C backend computes
/// `1 << (s − 1)` and `a << −s` in 32 bits and stores per-channel shifts as `int8_t`.
const MAX_SHIFT: i32 = 31;

/// The layer as the guard sees it.
pub(super) struct LayerGuard<'a> {
    /// The rows the fit aimed at (`rows × k`, real units): capped rows are re-rounded
    /// from them.
    pub target_rows: &'a [f32],
    pub k: usize,
    pub format: WeightFormat,
    /// Constant channels (all-zero levels).
    pub constant: &'a [bool],
    pub x_exp: i32,
    pub x_elem: IntElem,
    /// The output clamp and whether the output is the i32 accumulator.
    pub lo: i32,
    pub hi: i32,
    pub wide: bool,
    /// The (bias-corrected) real bias of row `o` for its levels and scale value.
    pub bias: &'a (dyn Fn(usize, &[i8], f64) -> f64 + Sync),
}

/// What the guard chose for every row.
pub(super) struct Guarded {
    /// The output exponent (lowered for a wide output when a capped row needs it).
    pub exp: i32,
    pub rescale: Vec<Rescale>,
    pub bias_q: Vec<i32>,
    /// The corrected real bias of every row (before any saturation clamp).
    pub bias_real: Vec<f64>,
    /// Rows whose exponent is below the fitted one (constant rows: below their start).
    pub capped: Vec<bool>,
}

/// The weight exponent the report and a wide output use for a scale.
pub(super) fn scale_exponent(s: RowScale) -> i32 {
    match s {
        RowScale::Pot(e) => e,
        RowScale::Float(v) => (-v.log2()).floor() as i32,
    }
}

/// The scale one step coarser (`e − 1`, or twice the float scale).
fn coarser(s: RowScale) -> RowScale {
    match s {
        RowScale::Pot(e) => RowScale::Pot(e - 1),
        RowScale::Float(v) => RowScale::Float(2.0 * v),
    }
}

/// A constant row's start scale: accumulator step `2^-CONSTANT_SHIFT` output steps.
fn constant_scale(s: RowScale, x_exp: i32, out_exp: i32) -> RowScale {
    let e = (out_exp + CONSTANT_SHIFT - x_exp).clamp(-EXP_LIMIT, EXP_LIMIT);
    match s {
        RowScale::Pot(_) => RowScale::Pot(e),
        RowScale::Float(_) => RowScale::Float((-(e as f64)).exp2()),
    }
}

/// Caps every row of `fitted` (scales, levels and codes change in place) for output
/// exponent `out_exp` (for a wide output: the exponent the fit's rows ask for, lowered
/// here when a capped row needs it). `Err(channel)` when no scale makes a row fit, which
/// finite weights and biases never cause.
pub(super) fn guard_layer(
    g: &LayerGuard<'_>,
    fitted: &mut Fitted,
    out_exp: i32,
) -> Result<Guarded, usize> {
    let rows = fitted.scales.len();
    for o in 0..rows {
        if g.constant[o] {
            fitted.scales[o] = constant_scale(fitted.scales[o], g.x_exp, out_exp);
        }
    }
    let start = fitted.scales.clone();
    let mut exp = out_exp;
    loop {
        let mut out = Guarded {
            exp,
            rescale: Vec::with_capacity(rows),
            bias_q: Vec::with_capacity(rows),
            bias_real: Vec::with_capacity(rows),
            capped: Vec::with_capacity(rows),
        };
        for (o, first) in start.iter().enumerate() {
            let (rescale, bias_q, bias_real) = guard_row(g, fitted, o, exp).ok_or(o)?;
            out.rescale.push(rescale);
            out.bias_q.push(bias_q);
            out.bias_real.push(bias_real);
            out.capped.push(fitted.scales[o] != *first);
        }
        // A wide output keeps every shift ≥ 0: a row capped below the output exponent
        // lowers it (and the other rows are checked again at their larger shifts).
        let lowest = (0..rows)
            .map(|o| g.x_exp + scale_exponent(fitted.scales[o]))
            .min()
            .unwrap_or(exp);
        if g.wide && lowest < exp {
            exp = lowest;
            continue;
        }
        return Ok(out);
    }
}

/// Row `o`'s rescale, quantized bias and corrected real bias at the largest scale not
/// finer than its current one that passes the bound; the row is re-rounded when its
/// scale changes; `None` when none passes.
fn guard_row(
    g: &LayerGuard<'_>,
    fitted: &mut Fitted,
    o: usize,
    out_exp: i32,
) -> Option<(Rescale, i32, f64)> {
    let k = g.k;
    let x_step = (-(g.x_exp as f64)).exp2();
    let out_step = (-(out_exp as f64)).exp2();
    let x_max = input_magnitude(g.x_elem);
    for _ in 0..MAX_CAP_STEPS {
        let scale = fitted.scales[o];
        let levels = &fitted.levels[o * k..(o + 1) * k];
        let sum_abs: i64 = levels.iter().map(|&l| (l as i64).abs()).sum();
        let acc_step = x_step * scale.value();
        let corrected = (g.bias)(o, levels, scale.value());
        let mut b = corrected;
        if !g.wide {
            // Beyond this the output saturates for every input: clamping the bias there
            // changes no output (two steps of margin for the roundings).
            let limit = (g.lo.unsigned_abs().max(g.hi.unsigned_abs()) as f64 + 2.0) * out_step
                + sum_abs as f64 * x_max as f64 * acc_step;
            if b.abs() > limit {
                b = limit.copysign(b);
            }
        }
        let bq = (b / acc_step).round();
        let rescale = match scale {
            RowScale::Pot(e) => {
                // A wide output's exponent comes down to a row that needs it (the
                // caller checks again): its shift never goes negative.
                let s = g.x_exp + e - out_exp;
                let s = if g.wide { s.max(0) } else { s };
                (s.abs() <= MAX_SHIFT).then_some(Rescale::Shift(s))
            }
            RowScale::Float(_) => Rescale::from_factor(acc_step / out_step),
        };
        if let Some(rescale) = rescale
            && bq.abs() <= i32::MAX as f64
        {
            let bias_q = bq as i32;
            let (_, rescaled) = channel_bound(sum_abs, bias_q, rescale, g.x_elem);
            if rescaled <= i32::MAX as i64 {
                return Some((rescale, bias_q, corrected));
            }
        }
        let next = coarser(scale);
        fit::requantize_row(
            g.format,
            fitted,
            o,
            &g.target_rows[o * k..(o + 1) * k],
            next,
        );
    }
    // Not reached for finite inputs: a coarse enough scale zeroes the weights and the
    // clamped bias fits.
    None
}
