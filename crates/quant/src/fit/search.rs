//! The drivers: which exponents, tables and assignments are tried, and which one is kept.
//!
//! Why a search and not one fixed recipe: every step (exponent, table, codes) is a
//! heuristic for a non-convex integer problem; each candidate is scored by the objective
//! itself and the best is kept. The plain fit (max-fitting exponents, k-means table,
//! round to nearest) is always one of the candidates, scored exactly like the others, so
//! the data-aware fit can never report a higher output error than the plain one.

use rayon::prelude::*;

use super::exponent::{max_fit_exponent, min_max, shifted};
use super::gptq::{GptqFactor, factors, gptq};
use super::groups::row_proxy;
use super::kmeans::{KMeans, kmeans_lut};
use super::problem::{
    Assignment, Grid, LutGrid, Normal, Prep, h_times_w, normal, row_errors, rtn, values,
};
use super::refit::refit_lut;
use super::{FitOptions, Fitted, RowScale, ScaleKind};

/// Rounds of (normal equations → LUT refit → GPTQ) of the data-aware LUT fit.
const LUT_ROUNDS: usize = 2;

/// The start scales: max-fitting exponents (per layer or per row) or float scales
/// `max|w_o| / max_level`. All-zero rows get `Pot(0)` / `Float(1)`.
pub(crate) fn initial_scales(p: &Prep<'_>, kind: ScaleKind, lo: i32, hi: i32) -> Vec<RowScale> {
    match kind {
        ScaleKind::PotLayer => {
            let (mn, mx) = min_max(p.w);
            let e = max_fit_exponent(mn, mx, lo, hi).unwrap_or(0);
            vec![RowScale::Pot(e); p.rows]
        }
        ScaleKind::PotChannel => (0..p.rows)
            .map(|o| {
                let (mn, mx) = min_max(p.row(o));
                RowScale::Pot(max_fit_exponent(mn, mx, lo, hi).unwrap_or(0))
            })
            .collect(),
        ScaleKind::FloatChannel => {
            let max_level = if hi > 0 { hi } else { (-lo).max(1) } as f64;
            (0..p.rows)
                .map(|o| {
                    let m = p
                        .row(o)
                        .iter()
                        .fold(0.0f64, |m, &x| m.max((x as f64).abs()));
                    if m > 0.0 && m.is_finite() {
                        RowScale::Float(m / max_level)
                    } else {
                        RowScale::Float(1.0)
                    }
                })
                .collect()
        }
    }
}

/// Exponent candidates around the start: `[e, e − 1, e + 1]` for power-of-two scales,
/// just the start for float scales.
fn exponent_candidates(p: &Prep<'_>, base: &[RowScale], kind: ScaleKind) -> Vec<Vec<RowScale>> {
    match kind {
        ScaleKind::FloatChannel => vec![base.to_vec()],
        _ => [0, -1, 1]
            .iter()
            .map(|&d| shifted(base, d, &p.zero_rows))
            .collect(),
    }
}

/// How many steps finer than the max-fitting one a layer exponent may go
/// ([`clipping_layer_exponent`]): up to `2^8` times finer, clipping the weights above
/// `127 · 2^-e` of the few rows that reach that far.
const MAX_CLIP_SHIFT: i32 = 8;

/// With one exponent per layer, the layer's largest row sets the step of every row: a
/// single outlier channel (BatchNorm folded into a channel of tiny variance gives weights
/// hundreds of times larger than the rest) leaves the others one or two levels, which is
/// what cross-layer equalization repairs by changing the function. If clipping that row
/// costs less output error than the resolution gains elsewhere, an exponent `e + d` with
/// `2 ≤ d ≤ MAX_CLIP_SHIFT` is the better one. `proxy` scores exponents cheaply (the
/// diagonal part of `E`); the finer exponent of lowest proxy is returned when it beats
/// the proxy of every regular candidate (`e − 1, e, e + 1`), so that the exact scoring
/// sees it as one more candidate. `None` when nothing finer looks better.
fn clipping_layer_exponent(
    p: &Prep<'_>,
    base: &[RowScale],
    proxy: impl Fn(&[RowScale]) -> f64 + Sync,
) -> Option<Vec<RowScale>> {
    let regular = [-1, 0, 1]
        .par_iter()
        .map(|&d| proxy(&shifted(base, d, &p.zero_rows)))
        .reduce(|| f64::INFINITY, f64::min);
    let far = (2..=MAX_CLIP_SHIFT)
        .into_par_iter()
        .map(|d| {
            let s = shifted(base, d, &p.zero_rows);
            (proxy(&s), d, s)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))?;
    (far.0 < regular).then_some(far.2)
}

/// The diagonal part of `E` of round-to-nearest on a uniform grid: `Σ_o Σ_i H_ii (w_i − ŵ_i)²`.
fn uniform_proxy(p: &Prep<'_>, scales: &[RowScale], min: i32, max: i32) -> f64 {
    let grid = Grid::Uniform { min, max };
    (0..p.rows)
        .into_par_iter()
        .map(|o| row_proxy(p, o, scales[o], &grid))
        .sum()
}

/// With per-channel power-of-two scales, rows whose levels are all zero take the layer's max-fitting exponent, so
/// that their (meaningless) exponent does not produce extreme shifts downstream.
pub(crate) fn neutralize(
    p: &Prep<'_>,
    kind: ScaleKind,
    scales: &mut [RowScale],
    levels: &[i8],
    lo: i32,
    hi: i32,
) {
    if kind != ScaleKind::PotChannel {
        return;
    }
    let (mn, mx) = min_max(p.w);
    let layer = max_fit_exponent(mn, mx, lo, hi).unwrap_or(0);
    for (o, s) in scales.iter_mut().enumerate() {
        if let RowScale::Pot(_) = s
            && levels[o * p.k..(o + 1) * p.k].iter().all(|&l| l == 0)
        {
            *s = RowScale::Pot(layer);
        }
    }
}

/// GPTQ codes (rounding without data) and every row's `E_o` (`grids`: one for all rows,
/// or one per row).
pub(crate) fn assign(
    p: &Prep<'_>,
    f: &[Option<GptqFactor>],
    grids: &[Grid],
    scales: &[RowScale],
) -> (Assignment, Vec<f64>) {
    let s = values(scales);
    if p.identity() {
        let a = rtn(p, grids, &s);
        let e = row_errors(p, &a.levels, &s);
        (a, e)
    } else {
        gptq(p, f, grids, &s)
    }
}

pub(crate) fn fit_uniform(p: &Prep<'_>, min: i32, max: i32, opts: &FitOptions) -> Fitted {
    let grid = Grid::Uniform { min, max };
    let base = initial_scales(p, opts.scale, min, max);
    let plain = rtn(p, std::slice::from_ref(&grid), &values(&base));
    let plain_err = row_errors(p, &plain.levels, &values(&base));
    let (mut scales, levels, err) = if !opts.data_aware {
        let err = plain_err.iter().sum();
        (base, plain.levels, err)
    } else {
        let plain_total: f64 = plain_err.iter().sum();
        let f = factors(p);
        let mut cands: Vec<(Vec<RowScale>, Vec<i8>, Vec<f64>)> =
            vec![(base.clone(), plain.levels, plain_err)];
        let mut exps = exponent_candidates(p, &base, opts.scale);
        if opts.scale == ScaleKind::PotLayer {
            exps.extend(clipping_layer_exponent(p, &base, |s| {
                uniform_proxy(p, s, min, max)
            }));
        }
        for s in exps {
            if p.identity() && s == base {
                continue; // identical to the plain candidate
            }
            let (a, e) = assign(p, &f, std::slice::from_ref(&grid), &s);
            cands.push((s, a.levels, e));
        }
        let chosen = match opts.scale {
            ScaleKind::PotLayer => {
                let total = |c: &(Vec<RowScale>, Vec<i8>, Vec<f64>)| c.2.iter().sum::<f64>();
                let mut best = 0;
                for i in 1..cands.len() {
                    if total(&cands[i]) < total(&cands[best]) {
                        best = i;
                    }
                }
                let (s, l, _) = cands[best].clone();
                (s, l)
            }
            // Rows are independent: the best candidate per row.
            ScaleKind::PotChannel | ScaleKind::FloatChannel => {
                let k = p.k;
                let mut scales = Vec::with_capacity(p.rows);
                let mut levels = Vec::with_capacity(p.w.len());
                for o in 0..p.rows {
                    let mut best = 0;
                    for i in 1..cands.len() {
                        if cands[i].2[o] < cands[best].2[o] {
                            best = i;
                        }
                    }
                    scales.push(cands[best].0[o]);
                    levels.extend_from_slice(&cands[best].1[o * k..(o + 1) * k]);
                }
                (scales, levels)
            }
        };
        // The candidates' errors from GPTQ are exact up to rounding: score the choice
        // exactly, like the plain fit, and keep the plain fit unless strictly beaten.
        let err: f64 = row_errors(p, &chosen.1, &values(&chosen.0)).iter().sum();
        if err < plain_total {
            (chosen.0, chosen.1, err)
        } else {
            let (s, l, _) = cands.swap_remove(0);
            (s, l, plain_total)
        }
    };
    neutralize(p, opts.scale, &mut scales, &levels, min, max);
    Fitted {
        output_error: err,
        levels,
        codes: None,
        lut: None,
        luts: Vec::new(),
        scales,
    }
}

/// Weighted k-means of the layer's weights scaled by `scales`; element weights
/// `diag(H)_i · s_o²` (`s_o²` without data), the diagonal part of the objective in the
/// scaled domain.
pub(crate) fn kmeans_for(p: &Prep<'_>, scales: &[RowScale]) -> KMeans {
    let k = p.k;
    let (v, w): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (0..p.rows)
        .into_par_iter()
        .map(|o| {
            let s = scales[o].value();
            let inv = 1.0 / s;
            let d = p.diag_of(o);
            let v = p.row(o).iter().map(|&x| x as f64 * inv).collect();
            let w = (0..k).map(|i| d.map_or(1.0, |d| d[i]) * s * s).collect();
            (v, w)
        })
        .unzip();
    kmeans_lut(&v.concat(), &w.concat())
}

/// Per row, the exponent among `e, e − 1, e + 1` whose round-to-nearest on `lut` has
/// the lowest diagonal error `Σ_i H_ii (w_i − ŵ_i)²` (a cheap proxy of the row's `E`).
fn proxy_exponents(p: &Prep<'_>, base: &[RowScale], lut: &[i8; 16]) -> Vec<RowScale> {
    let grid = Grid::Lut(LutGrid::new(lut));
    (0..p.rows)
        .into_par_iter()
        .map(|o| {
            let RowScale::Pot(e0) = base[o] else {
                return base[o];
            };
            if p.zero_rows[o] {
                return base[o];
            }
            let cost = |s: RowScale| row_proxy(p, o, s, &grid);
            let mut best = (cost(base[o]), base[o]);
            for d in [-1, 1] {
                let s = shifted(&[RowScale::Pot(e0)], d, &[false])[0];
                let c = cost(s);
                if c < best.0 {
                    best = (c, s);
                }
            }
            best.1
        })
        .collect()
}

struct LutCand {
    scales: Vec<RowScale>,
    lut: [i8; 16],
    codes: Vec<u8>,
    err: f64,
}

/// What the data-aware LUT fits share: the GPTQ factors (one per group) and `H_g w_o`.
pub(crate) struct LutCtx<'p, 'a> {
    pub p: &'p Prep<'a>,
    pub f: Vec<Option<GptqFactor>>,
    pub hw: Vec<f64>,
    pub c: f64,
}

impl<'p, 'a> LutCtx<'p, 'a> {
    pub fn new(p: &'p Prep<'a>) -> Self {
        let (hw, c) = h_times_w(p);
        LutCtx {
            p,
            f: factors(p),
            hw,
            c,
        }
    }

    /// GPTQ codes on `lut` and every row's `E_o`.
    fn assign(&self, scales: &[RowScale], lut: &[i8; 16]) -> (Assignment, Vec<f64>) {
        assign(self.p, &self.f, &[Grid::Lut(LutGrid::new(lut))], scales)
    }

    /// Up to `rounds` × (normal equations of the codes → refit the table → GPTQ on the
    /// new table), starting from the codes `a` of `lut`; every scored (scales, table,
    /// codes) goes into `best`. Stops when a refit does not lower `E`.
    fn refine(
        &self,
        scales: &[RowScale],
        mut lut: [i8; 16],
        mut a: Assignment,
        rounds: usize,
        best: &mut Option<LutCand>,
    ) {
        let s = values(scales);
        for round in 0..rounds {
            let n: Normal = normal(self.p, &a.codes, &s, &self.hw, self.c);
            let e0 = n.eval(&lut.map(|x| x as f64));
            let (lut2, e1) = refit_lut(&n, &lut);
            let improved = e1 < e0;
            let (l, e) = if improved { (lut2, e1) } else { (lut, e0) };
            if best.as_ref().is_none_or(|b| e < b.err) {
                *best = Some(LutCand {
                    scales: scales.to_vec(),
                    lut: l,
                    codes: a.codes.clone(),
                    err: e,
                });
            }
            if !improved || round + 1 == rounds {
                break;
            }
            lut = lut2;
            a = self.assign(scales, &lut).0;
        }
    }
}

/// One shared-table fit before its table is sorted: scales, table, codes, and the exact
/// `E_o` of every row.
#[derive(Clone, Debug)]
pub(crate) struct LutFit {
    pub scales: Vec<RowScale>,
    pub lut: [i8; 16],
    pub codes: Vec<u8>,
    pub row_err: Vec<f64>,
    pub err: f64,
}

pub(crate) fn fit_lut(p: &Prep<'_>, opts: &FitOptions) -> Fitted {
    let ctx = opts.data_aware.then(|| LutCtx::new(p));
    let (_, out) = fit_lut_shared(p, opts, ctx.as_ref());
    let LutFit {
        mut scales,
        lut,
        codes,
        err,
        ..
    } = out;
    let (sorted, new_code) = sort_table(&lut);
    let codes: Vec<u8> = codes.iter().map(|&c| new_code[c as usize]).collect();
    let levels: Vec<i8> = codes.iter().map(|&c| sorted[c as usize]).collect();
    neutralize(p, opts.scale, &mut scales, &levels, -128, 127);
    Fitted {
        levels,
        codes: Some(codes),
        lut: Some(sorted),
        luts: vec![sorted],
        scales,
        output_error: err,
    }
}

/// The table sorted ascending (ties by code) and the new code of every old one, so that
/// codes are ordered like their values.
pub(crate) fn sort_table(lut: &[i8; 16]) -> ([i8; 16], [u8; 16]) {
    let mut order: Vec<usize> = (0..16).collect();
    order.sort_by_key(|&i| (lut[i], i));
    let mut new_code = [0u8; 16];
    let mut sorted = [0i8; 16];
    for (new, &old) in order.iter().enumerate() {
        new_code[old] = new as u8;
        sorted[new] = lut[old];
    }
    (sorted, new_code)
}

/// The shared-table fit: the plain fit (max-fitting exponents, k-means table, round to
/// nearest), and with `ctx` (data-aware) the best fit found, which is the plain one
/// unless strictly beaten.
pub(crate) fn fit_lut_shared(
    p: &Prep<'_>,
    opts: &FitOptions,
    ctx: Option<&LutCtx<'_, '_>>,
) -> (LutFit, LutFit) {
    let (lo, hi) = (-128, 127);
    let base = initial_scales(p, opts.scale, lo, hi);
    let lut0 = kmeans_for(p, &base).lut;
    let plain = rtn(p, &[Grid::Lut(LutGrid::new(&lut0))], &values(&base));
    let plain_rows = row_errors(p, &plain.levels, &values(&base));
    let plain_err: f64 = plain_rows.iter().sum();
    let plain = LutFit {
        scales: base.clone(),
        lut: lut0,
        codes: plain.codes,
        row_err: plain_rows,
        err: plain_err,
    };
    let mut out = plain.clone();
    if let Some(ctx) = ctx {
        // The start of the refinement: scales, table, codes.
        let (scales, lut, a) = match opts.scale {
            // Three layer exponents (four with a clipping one), each with its own
            // k-means table; the lowest `E`.
            ScaleKind::PotLayer => {
                let mut start: Option<(f64, Vec<RowScale>, [i8; 16], Assignment)> = None;
                let mut exps = exponent_candidates(p, &base, opts.scale);
                exps.extend(clipping_layer_exponent(p, &base, |s| {
                    kmeans_for(p, s).objective()
                }));
                for (i, s) in exps.into_iter().enumerate() {
                    let lut = if i == 0 { lut0 } else { kmeans_for(p, &s).lut };
                    let (a, e) = ctx.assign(&s, &lut);
                    let e: f64 = e.iter().sum();
                    if start.as_ref().is_none_or(|b| e < b.0) {
                        start = Some((e, s, lut, a));
                    }
                }
                let (_, s, l, a) = start.expect("at least three candidates");
                (s, l, a)
            }
            // Exponents by the diagonal proxy, a table for them; then GPTQ with that
            // table for every row's exponent moved by -1, 0, +1, and per row the one of
            // lowest exact `E` (rows are independent for a fixed table).
            ScaleKind::PotChannel => {
                let s1 = proxy_exponents(p, &base, &lut0);
                let lut = if s1 == base {
                    lut0
                } else {
                    kmeans_for(p, &s1).lut
                };
                let cands: Vec<(Vec<RowScale>, Assignment, Vec<f64>)> =
                    exponent_candidates(p, &s1, opts.scale)
                        .into_iter()
                        .map(|s| {
                            let (a, e) = ctx.assign(&s, &lut);
                            (s, a, e)
                        })
                        .collect();
                let k = p.k;
                let mut scales = Vec::with_capacity(p.rows);
                let mut a = Assignment {
                    levels: Vec::with_capacity(p.w.len()),
                    codes: Vec::with_capacity(p.w.len()),
                };
                for o in 0..p.rows {
                    let mut bi = 0;
                    for i in 1..cands.len() {
                        if cands[i].2[o] < cands[bi].2[o] {
                            bi = i;
                        }
                    }
                    scales.push(cands[bi].0[o]);
                    a.levels
                        .extend_from_slice(&cands[bi].1.levels[o * k..(o + 1) * k]);
                    a.codes
                        .extend_from_slice(&cands[bi].1.codes[o * k..(o + 1) * k]);
                }
                (scales, lut, a)
            }
            ScaleKind::FloatChannel => {
                let a = ctx.assign(&base, &lut0).0;
                (base.clone(), lut0, a)
            }
        };
        let mut best: Option<LutCand> = None;
        ctx.refine(&scales, lut, a, LUT_ROUNDS, &mut best);
        if let Some(b) = best {
            let levels: Vec<i8> = b.codes.iter().map(|&c| b.lut[c as usize]).collect();
            let row_err = row_errors(p, &levels, &values(&b.scales));
            let err: f64 = row_err.iter().sum();
            if err < out.err {
                out = LutFit {
                    scales: b.scales,
                    lut: b.lut,
                    codes: b.codes,
                    row_err,
                    err,
                };
            }
        }
    }
    (plain, out)
}
