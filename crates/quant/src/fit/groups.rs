//! A few tables per layer, each row reading one of them (`Lut4` with table groups).
//!
//! Why: one shared table fits the rows whose scaled weights dominate the weighted k-means
//! and leaves rows of another shape (heavier tails, a different skew) with levels where
//! they have few weights; one table per row fixes that at 16 bytes of flash per row.
//! Rows fall into a few shapes, so a handful of tables, each fitted to the rows that read
//! it, recovers most of the per-row tables' gain at a byte per row (the table index).
//!
//! The grouping is k-means twice over: rows are first clustered by their own k-means
//! tables (16-dimensional points, weighted by the row's share of the diagonal objective),
//! then alternately each group's table is refitted to its rows' scaled weights and each
//! row moves to the table whose round-to-nearest has the lowest diagonal error.

use rayon::prelude::*;

use super::RowScale;
use super::kmeans::kmeans_lut;
use super::problem::{Grid, LutGrid, Prep};

/// Rounds of (table per group → rows to their best table).
const ASSIGN_ROUNDS: usize = 4;

/// Lloyd iterations of the clustering of the rows' own tables.
const CLUSTER_ITERS: usize = 20;

/// Row `o`'s diagonal error `Σ_i H_ii (w_i − ŵ_i)²` with round-to-nearest on `grid`.
pub(crate) fn row_proxy(p: &Prep<'_>, o: usize, scale: RowScale, grid: &Grid) -> f64 {
    let (sv, inv) = (scale.value(), 1.0 / scale.value());
    let d = p.diag_of(o);
    p.row(o)
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let x = x as f64;
            let q = grid.nearest(x * inv).0 as f64 * sv;
            d.map_or(1.0, |d| d[i]) * (x - q) * (x - q)
        })
        .sum()
}

/// The weighted k-means table of the scaled weights of `rows`.
fn table_of(p: &Prep<'_>, rows: &[usize], scales: &[RowScale]) -> [i8; 16] {
    let mut v = Vec::with_capacity(rows.len() * p.k);
    let mut w = Vec::with_capacity(rows.len() * p.k);
    for &o in rows {
        let s = scales[o].value();
        let d = p.diag_of(o);
        v.extend(p.row(o).iter().map(|&x| x as f64 / s));
        w.extend((0..p.k).map(|i| d.map_or(1.0, |d| d[i]) * s * s));
    }
    kmeans_lut(&v, &w).lut
}

/// Up to `count` tables and the table of every row. `own`: every row's own k-means table
/// (ascending) at `scales`.
pub(crate) fn group_tables(
    p: &Prep<'_>,
    scales: &[RowScale],
    own: &[[i8; 16]],
    count: usize,
) -> (Vec<[i8; 16]>, Vec<usize>) {
    let rows = p.rows;
    let weight: Vec<f64> = (0..rows)
        .map(|o| {
            if p.zero_rows[o] {
                return 0.0;
            }
            let s = scales[o].value();
            p.diag_of(o).map_or(p.k as f64, |d| d.iter().sum::<f64>()) * s * s
        })
        .collect();
    let point = |o: usize| own[o].map(|x| x as f64);
    let dist = |a: &[f64; 16], b: &[f64; 16]| -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
    };
    // Farthest-point start: the heaviest row, then repeatedly the row farthest (weighted)
    // from every centre so far.
    let count = count.clamp(1, rows.max(1));
    let first = (0..rows)
        .max_by(|&a, &b| weight[a].total_cmp(&weight[b]))
        .unwrap_or(0);
    let mut centres = vec![point(first)];
    while centres.len() < count {
        let far = (0..rows)
            .map(|o| {
                let p = point(o);
                let d = centres
                    .iter()
                    .map(|c| dist(c, &p))
                    .fold(f64::INFINITY, f64::min);
                (weight[o] * d, o)
            })
            .max_by(|a, b| a.0.total_cmp(&b.0));
        match far {
            Some((d, o)) if d > 0.0 => centres.push(point(o)),
            _ => break,
        }
    }
    let nearest = |centres: &[[f64; 16]], o: usize| -> usize {
        let p = point(o);
        (0..centres.len())
            .min_by(|&a, &b| dist(&centres[a], &p).total_cmp(&dist(&centres[b], &p)))
            .unwrap_or(0)
    };
    let mut group: Vec<usize> = (0..rows).map(|o| nearest(&centres, o)).collect();
    for _ in 0..CLUSTER_ITERS {
        let mut sum = vec![[0.0f64; 16]; centres.len()];
        let mut tot = vec![0.0f64; centres.len()];
        for o in 0..rows {
            let g = group[o];
            let w = weight[o].max(1e-300);
            for (s, x) in sum[g].iter_mut().zip(point(o)) {
                *s += w * x;
            }
            tot[g] += w;
        }
        for (g, c) in centres.iter_mut().enumerate() {
            if tot[g] > 0.0 {
                for (ci, s) in c.iter_mut().zip(&sum[g]) {
                    *ci = s / tot[g];
                }
            }
        }
        let next: Vec<usize> = (0..rows).map(|o| nearest(&centres, o)).collect();
        if next == group {
            break;
        }
        group = next;
    }
    // Tables fitted to their rows, rows moved to their best table.
    let mut tables: Vec<[i8; 16]> = Vec::new();
    for _ in 0..ASSIGN_ROUNDS {
        let members: Vec<Vec<usize>> = (0..centres.len())
            .map(|g| (0..rows).filter(|&o| group[o] == g).collect())
            .collect();
        let fitted: Vec<Option<[i8; 16]>> = members
            .par_iter()
            .map(|m| (!m.is_empty()).then(|| table_of(p, m, scales)))
            .collect();
        // Empty groups keep their previous table (or none).
        tables = fitted
            .iter()
            .enumerate()
            .map(|(g, t)| t.unwrap_or_else(|| tables.get(g).copied().unwrap_or(own[0])))
            .collect();
        let grids: Vec<Grid> = tables.iter().map(|t| Grid::Lut(LutGrid::new(t))).collect();
        let next: Vec<usize> = (0..rows)
            .into_par_iter()
            .map(|o| {
                let cost: Vec<f64> = grids
                    .iter()
                    .map(|g| row_proxy(p, o, scales[o], g))
                    .collect();
                first_min(&cost)
            })
            .collect();
        if next == group {
            break;
        }
        group = next;
    }
    (tables, group)
}

/// The index of the smallest value (the first of equal ones; 0 when empty).
pub(crate) fn first_min(values: &[f64]) -> usize {
    (0..values.len())
        .min_by(|&a, &b| values[a].total_cmp(&values[b]))
        .unwrap_or(0)
}
