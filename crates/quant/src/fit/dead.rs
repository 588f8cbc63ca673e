//! Constant ("dead") output channels: rows whose weights cannot move the output.
//!
//! Trained networks often hold channels whose BatchNorm scale γ is (nearly) zero: after
//! folding, the row's weights are ~1e-9 while its bias is of order 1. Fitted like any
//! other row, such a row gets the largest exponent the grid allows, and its bias,
//! quantized at `f_x + f_w`, no longer fits i32. The row is a constant: its weights move
//! the output by less than half an output step over the whole input range, so the
//! lowering treats it as one — every weight quantized to exactly zero, the bias carried
//! in full ([`constant_rows`]).
//!
//! Every format must then be able to express an exact zero weight: the uniform grids
//! contain level 0; a LUT need not, so [`zero_constant_rows`] makes sure every table a
//! zero row reads has an entry 0 (the entry nearest to zero becomes 0, which keeps the
//! table sorted; the codes of other rows that used it now read 0 — the fit already put a
//! zero entry in most tables, as the zero rows' elements pull a k-means centroid onto 0).

use super::kmeans::kmeans_lut;
use super::problem::{Grid, LutGrid, Prep, row_errors, values};
use super::search::neutralize;
use super::{Fitted, RowScale, WeightFormat};

/// Per row of `weights` (`rows × k`), whether it is a constant: all its weights are zero,
/// or `Σ_k |w_k| · x_max < tolerance`, i.e. over every input with `|x| ≤ x_max` the row
/// moves the output by less than `tolerance` (the lowering passes half an output step).
pub fn constant_rows(
    weights: &[f32],
    rows: usize,
    k: usize,
    x_max: f64,
    tolerance: f64,
) -> Vec<bool> {
    assert_eq!(weights.len(), rows * k, "weights must be rows × k");
    weights
        .chunks(k.max(1))
        .take(rows)
        .map(|row| {
            let sum: f64 = row.iter().map(|&w| (w as f64).abs()).sum();
            sum == 0.0 || sum * x_max < tolerance
        })
        .collect()
}

/// Makes every all-zero row of the problem come out as exact zero levels: a LUT read by
/// such a row gets an entry 0 if it lacks one (see the module docs), the zero rows read
/// it, and per-channel exponents of rows that became all zero are neutralized. Rescores
/// `output_error` when anything changed. Uniform grids already give zero rows level 0.
pub(crate) fn zero_constant_rows(
    p: &Prep<'_>,
    format: WeightFormat,
    kind: super::ScaleKind,
    fitted: &mut Fitted,
) {
    let k = p.k;
    let needs_fix =
        |o: usize| p.zero_rows[o] && fitted.levels[o * k..(o + 1) * k].iter().any(|&l| l != 0);
    if !(0..p.rows).any(needs_fix) {
        return;
    }
    let (lo, hi) = format.range();
    match (&mut fitted.codes, format.is_lut()) {
        (Some(codes), true) => {
            let shared = fitted.luts.len() == 1;
            for o in 0..p.rows {
                if !p.zero_rows[o] {
                    continue;
                }
                let t = if shared { 0 } else { o };
                let lut = &mut fitted.luts[t];
                let zero = match lut.iter().position(|&v| v == 0) {
                    Some(c) => c,
                    None => {
                        // The entry nearest zero becomes zero: the table stays sorted.
                        let c = (0..16)
                            .min_by_key(|&c| (lut[c] as i32).abs())
                            .expect("16 entries");
                        lut[c] = 0;
                        c
                    }
                };
                codes[o * k..(o + 1) * k].fill(zero as u8);
            }
            for (i, &c) in codes.iter().enumerate() {
                let t = if shared { 0 } else { i / k };
                fitted.levels[i] = fitted.luts[t][c as usize];
            }
            fitted.lut = fitted.luts.first().copied();
        }
        _ => {
            // Uniform grids contain 0: zero rows' levels are 0 unless a caller
            // bypassed rounding; set them anyway.
            for o in 0..p.rows {
                if p.zero_rows[o] {
                    fitted.levels[o * k..(o + 1) * k].fill(0);
                }
            }
        }
    }
    neutralize(p, kind, &mut fitted.scales, &fitted.levels, lo, hi);
    fitted.output_error = row_errors(p, &fitted.levels, &values(&fitted.scales))
        .iter()
        .sum();
}

/// Re-rounds row `o` of `fitted` to `scale` (round to nearest on the row's grid: the
/// shared table, the row's own table refitted by k-means at the new scale, the layer's
/// table (of a group) that rounds the row best, or the uniform levels of `format`) from the real weights `row`. The lowering
/// uses it when it has to coarsen a row's exponent so that the row's i32 arithmetic fits.
pub(crate) fn requantize_row(
    format: WeightFormat,
    fitted: &mut Fitted,
    o: usize,
    row: &[f32],
    scale: RowScale,
) {
    let k = row.len();
    let inv = 1.0 / scale.value();
    if format == WeightFormat::Lut4PerChannel {
        // The row's own table, refitted for its new scale.
        let v: Vec<f64> = row.iter().map(|&w| w as f64 * inv).collect();
        fitted.luts[o] = kmeans_lut(&v, &vec![1.0; k]).lut;
        fitted.lut = fitted.luts.first().copied();
    }
    if let WeightFormat::Lut4Groups(_) = format {
        // Any of the layer's tables (the row's index is free): the one that rounds the
        // row best at its new scale.
        let err = |t: &[i8; 16]| {
            let g = Grid::Lut(LutGrid::new(t));
            row.iter()
                .map(|&w| {
                    let v = w as f64 * inv;
                    (v - g.nearest(v).0 as f64).powi(2)
                })
                .sum::<f64>()
        };
        // Distinct tables only: the layer holds at most a group count of them.
        let mut tables: Vec<[i8; 16]> = Vec::new();
        for t in &fitted.luts {
            if !tables.contains(t) {
                tables.push(*t);
            }
        }
        let cost: Vec<f64> = tables.iter().map(err).collect();
        if !tables.is_empty() {
            fitted.luts[o] = tables[super::groups::first_min(&cost)];
            fitted.lut = fitted.luts.first().copied();
        }
    }
    let grid = match format {
        WeightFormat::Uniform { min, max } => Grid::Uniform { min, max },
        _ => {
            let t = if fitted.luts.len() == 1 { 0 } else { o };
            Grid::Lut(LutGrid::new(&fitted.luts[t]))
        }
    };
    for (i, &w) in row.iter().enumerate() {
        let (level, code) = grid.nearest(w as f64 * inv);
        fitted.levels[o * k + i] = level;
        if let Some(codes) = &mut fitted.codes {
            codes[o * k + i] = code;
        }
    }
    fitted.scales[o] = scale;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_rows_are_zero_or_below_the_tolerance() {
        let w = [0.0, 0.0, 1e-9, -1e-9, 0.5, 0.0];
        assert_eq!(constant_rows(&w, 3, 2, 1.0, 1e-3), vec![true, true, false]);
        // A larger input range makes the tiny row matter.
        assert_eq!(constant_rows(&w, 3, 2, 1e7, 1e-3), vec![true, false, false]);
    }
}
