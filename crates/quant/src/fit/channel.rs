//! More than one table per layer: one 16-entry table per output channel
//! (`WeightFormat::Lut4PerChannel`), or a few tables that groups of rows share
//! (`WeightFormat::Lut4Groups`, [`grouped`]; `groups.rs` forms the groups).
//!
//! Why: with one shared table, the table lives in the *scaled* domain `w · 2^e`, and a
//! row whose max-fitting exponent leaves its largest weight just above a power of two
//! (`max|w_o| · 2^e` just above 64) uses only half of the table's span — up to one bit of
//! resolution lost on that row. A row's own table, fitted to that row's scaled weights,
//! has no such loss, at 16 bytes of flash per output channel.
//!
//! Rows are independent once each has its own table, so every step works per row and
//! keeps, per row, the candidate of lowest `E_o`:
//!
//! * the shared-table fit of `search.rs` (plain and data-aware) is a candidate, so the
//!   result is never worse than the shared table, row by row (and in total);
//! * per-row weighted k-means tables (element weights `diag(H)_i · s_o²`) at the row's
//!   max-fitting exponent (`PotChannel`; the shared fit's layer exponent with `PotLayer`),
//!   rounded to nearest;
//! * with `data_aware`: the shared table refitted per row for the shared fit's codes, and
//!   GPTQ with each row's own table as grid (one factorization per group, shared by all
//!   its rows) followed by per-row least-squares refits of the table
//!   ([`refit_lut`] on the row's own normal equations) and GPTQ again.
//!
//! Candidates scored by the normal equations are rescored exactly at the end; a row keeps
//! a candidate only if it strictly beats the exactly scored ones. With `PotLayer` all
//! candidates mixed per row share one exponent; the plain fit, if its exponent differs,
//! competes as a whole.

use rayon::prelude::*;

use super::groups::group_tables;
use super::kmeans::kmeans_lut;
use super::problem::Normal;
use super::problem::{Grid, LutGrid, Prep, normal_rows, row_errors, rtn, values};
use super::refit::refit_lut;
use super::search::{
    LutCtx, LutFit, assign, fit_lut_shared, initial_scales, neutralize, sort_table,
};
use super::{FitOptions, Fitted, RowScale, ScaleKind, WeightFormat};

/// Rounds of (per-row normal equations → refit the row tables → GPTQ on the new tables).
/// One: on MobileNetV2's classifier size a second round lowers `E` by 0.3 % for 0.5 s,
/// a quarter of the shared fit's time.
const CHANNEL_ROUNDS: usize = 1;

/// Per row, the best candidate so far: scale, table, codes and `E_o`.
#[derive(Clone)]
struct Rows {
    k: usize,
    scales: Vec<RowScale>,
    luts: Vec<[i8; 16]>,
    codes: Vec<u8>,
    err: Vec<f64>,
}

impl Rows {
    fn from_shared(f: &LutFit, k: usize) -> Rows {
        Rows {
            k,
            scales: f.scales.clone(),
            luts: vec![f.lut; f.scales.len()],
            codes: f.codes.clone(),
            err: f.row_err.clone(),
        }
    }

    /// Row `o` takes the candidate if `e` is strictly lower.
    fn offer(&mut self, o: usize, scale: RowScale, lut: &[i8; 16], codes: &[u8], e: f64) {
        if e < self.err[o] {
            let k = self.k;
            self.scales[o] = scale;
            self.luts[o] = *lut;
            self.codes[o * k..(o + 1) * k].copy_from_slice(codes);
            self.err[o] = e;
        }
    }

    /// Every row of a full candidate (`luts`: one per row).
    fn offer_all(&mut self, scales: &[RowScale], luts: &[[i8; 16]], codes: &[u8], e: &[f64]) {
        let k = self.k;
        for o in 0..self.err.len() {
            self.offer(o, scales[o], &luts[o], &codes[o * k..(o + 1) * k], e[o]);
        }
    }

    fn merge(&mut self, other: &Rows) {
        let k = self.k;
        for o in 0..self.err.len() {
            self.offer(
                o,
                other.scales[o],
                &other.luts[o],
                &other.codes[o * k..(o + 1) * k],
                other.err[o],
            );
        }
    }

    fn levels(&self) -> Vec<i8> {
        let k = self.k.max(1);
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &c)| self.luts[i / k][c as usize])
            .collect()
    }

    fn total(&self) -> f64 {
        self.err.iter().sum()
    }
}

/// Per row, the weighted k-means table of the row's scaled weights (element weights
/// `diag(H)_i · s_o²`, `s_o²` without data).
fn row_tables(p: &Prep<'_>, scales: &[RowScale]) -> Vec<[i8; 16]> {
    (0..p.rows)
        .into_par_iter()
        .map(|o| {
            let s = scales[o].value();
            let inv = 1.0 / s;
            let d = p.diag_of(o);
            let v: Vec<f64> = p.row(o).iter().map(|&x| x as f64 * inv).collect();
            let w: Vec<f64> = (0..p.k).map(|i| d.map_or(1.0, |d| d[i]) * s * s).collect();
            kmeans_lut(&v, &w).lut
        })
        .collect()
}

fn grids(luts: &[[i8; 16]]) -> Vec<Grid> {
    luts.iter().map(|l| Grid::Lut(LutGrid::new(l))).collect()
}

/// Per row, the table refitted for fixed codes (`luts`: one per row) and its `E_o`, when
/// that is strictly lower than the table's own; `None` otherwise.
fn refit_rows(
    p: &Prep<'_>,
    ctx: &LutCtx<'_, '_>,
    scales: &[RowScale],
    luts: &[[i8; 16]],
    codes: &[u8],
) -> Vec<Option<([i8; 16], f64)>> {
    let normals = normal_rows(p, codes, &values(scales), &ctx.hw);
    normals
        .par_iter()
        .zip(luts)
        .map(|(n, lut)| {
            let e0 = n.eval(&lut.map(|x| x as f64));
            let (l, e1) = refit_lut(n, lut);
            (e1 < e0).then_some((l, e1))
        })
        .collect()
}

/// `Lut4PerChannel` and `Lut4Groups`: the shared-table fit first, then more tables.
pub(crate) fn fit_lut_per_channel(p: &Prep<'_>, opts: &FitOptions) -> Fitted {
    let ctx = opts.data_aware.then(|| LutCtx::new(p));
    let (sh_plain, sh_best) = fit_lut_shared(p, opts, ctx.as_ref());
    let result = match opts.format {
        WeightFormat::Lut4Groups(count) => grouped(p, opts, ctx.as_ref(), &sh_best, count),
        _ => own_tables(p, opts, ctx.as_ref(), &sh_plain, &sh_best),
    };
    finish(p, opts, result)
}

/// One table per row: the candidates of the module docs, the best per row.
fn own_tables(
    p: &Prep<'_>,
    opts: &FitOptions,
    ctx: Option<&LutCtx<'_, '_>>,
    sh_plain: &LutFit,
    sh_best: &LutFit,
) -> Rows {
    let k = p.k;
    // Plain: the shared plain fit, or per row its own k-means table at the same scales.
    let mut plain = Rows::from_shared(sh_plain, k);
    let own = row_tables(p, &sh_plain.scales);
    let s = values(&sh_plain.scales);
    let a = rtn(p, &grids(&own), &s);
    let e = row_errors(p, &a.levels, &s);
    plain.offer_all(&sh_plain.scales, &own, &a.codes, &e);

    match ctx {
        None => plain,
        Some(ctx) => {
            // Rows may mix candidates only if they share the exponent with `PotLayer`.
            let mixable = opts.scale != ScaleKind::PotLayer || sh_best.scales == sh_plain.scales;
            // Exactly scored candidates.
            let mut exact = Rows::from_shared(sh_best, k);
            if mixable {
                exact.merge(&plain);
            }
            let mut best = exact.clone();

            // The shared table refitted per row for the shared codes.
            let shared_luts = vec![sh_best.lut; p.rows];
            let re = refit_rows(p, ctx, &sh_best.scales, &shared_luts, &sh_best.codes);
            for (o, r) in re.iter().enumerate() {
                if let Some((l, e)) = r {
                    let codes = &sh_best.codes[o * k..(o + 1) * k];
                    best.offer(o, sh_best.scales[o], l, codes, *e);
                }
            }

            // Own tables, GPTQ codes, per-row refits. With `PotLayer`, the exponent the
            // shared fit chose; otherwise the start scales (max-fitting per row).
            let scales = if opts.scale == ScaleKind::PotLayer {
                sh_best.scales.clone()
            } else {
                sh_plain.scales.clone()
            };
            let mut luts = if scales == sh_plain.scales {
                own
            } else {
                row_tables(p, &scales)
            };
            let (mut a, e) = assign(p, &ctx.f, &grids(&luts), &scales);
            best.offer_all(&scales, &luts, &a.codes, &e);
            for round in 0..CHANNEL_ROUNDS {
                let re = refit_rows(p, ctx, &scales, &luts, &a.codes);
                let mut changed = false;
                for (o, r) in re.iter().enumerate() {
                    if let Some((l, e)) = r {
                        best.offer(o, scales[o], l, &a.codes[o * k..(o + 1) * k], *e);
                        luts[o] = *l;
                        changed = true;
                    }
                }
                if !changed || round + 1 == CHANNEL_ROUNDS {
                    break;
                }
                let (a2, e) = assign(p, &ctx.f, &grids(&luts), &scales);
                a = a2;
                best.offer_all(&scales, &luts, &a.codes, &e);
            }

            // Exact scores: a row keeps its candidate only if it strictly beats the
            // exactly scored ones.
            let e = row_errors(p, &best.levels(), &values(&best.scales));
            for (o, &e) in e.iter().enumerate() {
                best.err[o] = e;
            }
            exact.merge(&best);
            if !mixable && plain.total() < exact.total() {
                plain
            } else {
                exact
            }
        }
    }
}

/// The chosen rows as a `Fitted`: every table sorted, codes renumbered.
fn finish(p: &Prep<'_>, opts: &FitOptions, result: Rows) -> Fitted {
    let k = p.k;
    let Rows {
        mut scales,
        luts,
        codes,
        err,
        ..
    } = result;
    let mut sorted_luts = Vec::with_capacity(luts.len());
    let mut new_codes = Vec::with_capacity(codes.len());
    for (o, lut) in luts.iter().enumerate() {
        let (sorted, new_code) = sort_table(lut);
        sorted_luts.push(sorted);
        new_codes.extend(
            codes[o * k..(o + 1) * k]
                .iter()
                .map(|&c| new_code[c as usize]),
        );
    }
    let levels: Vec<i8> = new_codes
        .iter()
        .enumerate()
        .map(|(i, &c)| sorted_luts[i / k][c as usize])
        .collect();
    neutralize(p, opts.scale, &mut scales, &levels, -128, 127);
    Fitted {
        levels,
        codes: Some(new_codes),
        lut: sorted_luts.first().copied(),
        luts: sorted_luts,
        scales,
        output_error: err.iter().sum(),
    }
}

/// `count` tables for the layer, each row reading one (`groups.rs` groups the rows);
/// with data, GPTQ codes on each row's group table, then each group's table refitted on
/// the normal equations of its rows and GPTQ again, the better of the two per group. A
/// row keeps the shared fit where that is better, so the result reads at most
/// `count + 1` tables and is never worse than the shared table, row by row.
fn grouped(
    p: &Prep<'_>,
    opts: &FitOptions,
    ctx: Option<&LutCtx<'_, '_>>,
    sh_best: &LutFit,
    count: usize,
) -> Rows {
    let k = p.k;
    // With one exponent per layer, the shared fit's; otherwise every row's max-fitting
    // one (a row's own exponent search gained nothing on EfficientNet-Lite0).
    let scales = if opts.scale == ScaleKind::PotLayer {
        sh_best.scales.clone()
    } else {
        initial_scales(p, opts.scale, -128, 127)
    };
    let sv = values(&scales);
    let own = row_tables(p, &scales);
    let (tables, group) = group_tables(p, &scales, &own, count);
    let version = |t: &[[i8; 16]]| {
        let luts: Vec<[i8; 16]> = group.iter().map(|&g| t[g]).collect();
        // GPTQ's own errors are exact up to rounding: no second pass over `H`.
        let (a, err) = match ctx {
            Some(ctx) => assign(p, &ctx.f, &grids(&luts), &scales),
            None => {
                let a = rtn(p, &grids(&luts), &sv);
                let err = row_errors(p, &a.levels, &sv);
                (a, err)
            }
        };
        Rows {
            k,
            scales: scales.clone(),
            luts,
            codes: a.codes,
            err,
        }
    };
    let first = version(&tables);
    let members: Vec<Vec<usize>> = (0..tables.len())
        .map(|g| (0..p.rows).filter(|&o| group[o] == g).collect())
        .collect();
    let second = ctx.map(|ctx| {
        let normals = normal_rows(p, &first.codes, &sv, &ctx.hw);
        let refitted: Vec<[i8; 16]> = tables
            .iter()
            .zip(&members)
            .map(|(t, m)| {
                let n = Normal::sum(m.iter().map(|&o| &normals[o]));
                let (l, e) = refit_lut(&n, t);
                if e < n.eval(&t.map(|x| x as f64)) {
                    l
                } else {
                    *t
                }
            })
            .collect();
        version(&refitted)
    });
    let mut out = Rows::from_shared(sh_best, k);
    for m in &members {
        let total = |v: &Rows| m.iter().map(|&o| v.err[o]).sum::<f64>();
        let v = match &second {
            Some(s) if total(s) < total(&first) => s,
            _ => &first,
        };
        for &o in m {
            out.offer(
                o,
                v.scales[o],
                &v.luts[o],
                &v.codes[o * k..(o + 1) * k],
                v.err[o],
            );
        }
    }
    out
}
