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

/// The largest magnitude of a scaled weight the bins tell apart: beyond ±`BIN_LIMIT`
/// every value's nearest entry is a table's extreme (entries are int8), so the outermost
/// bins take everything beyond.
const BIN_LIMIT: f64 = 130.0;

/// Bins of a row's scaled weights: one per half unit, from `-BIN_LIMIT` to `BIN_LIMIT`.
const BINS: usize = 4 * BIN_LIMIT as usize + 1;

/// The bin of scaled value `v`.
///
/// Why half units: a table's entries are integers, so the midpoints between them, where
/// the nearest entry changes, are integers or half-integers. Every value of a bin's open
/// interval has the same nearest entry as the middle of the interval, and a value on its
/// lower edge is either that far from it or on a midpoint, equally far from both entries
/// around it: the same squared error.
#[inline]
fn bin_of(v: f64) -> usize {
    let t = (2.0 * v).clamp(-2.0 * BIN_LIMIT, 2.0 * BIN_LIMIT);
    (t.floor() + 2.0 * BIN_LIMIT) as usize
}

/// The middle of bin `b`'s interval.
fn bin_value(b: usize) -> f64 {
    0.5 * (b as f64 - 2.0 * BIN_LIMIT) + 0.25
}

/// Per bin of `table`: the bin's value less its nearest entry (in scaled units).
fn bin_offsets(table: &[i8; 16]) -> Vec<f64> {
    let grid = Grid::Lut(LutGrid::new(table));
    (0..BINS)
        .map(|b| {
            let v = bin_value(b);
            v - grid.nearest(v).0 as f64
        })
        .collect()
}

/// One row's weights summed by bin, so that its [`row_proxy`] on every candidate table
/// costs a pass over its occupied bins instead of over its weights: per bin, with the
/// weights `x` and diagonal `d`, the sums of `d`, `d (x − c)` and `d (x − c)²` around the
/// bin's value `c` (unscaled), so that a table whose nearest entry `q` lies `δ = c − q`
/// below `c` costs `Σ d (x − c + δ)² = s2 + 2 δ s1 + δ² s0` per bin without
/// cancellation.
#[derive(Default)]
struct RowBins {
    /// Per bin: `[s0 · sv², s1 · sv, s2]` (`sv` the row's scale, so that `δ` is taken in
    /// scaled units).
    sums: Vec<[f64; 3]>,
    /// The occupied bins, ascending.
    used: Vec<usize>,
}

impl RowBins {
    fn fill(&mut self, p: &Prep<'_>, o: usize, scale: RowScale) {
        if self.sums.len() != BINS {
            self.sums = vec![[0.0; 3]; BINS];
        }
        for &b in &self.used {
            self.sums[b] = [0.0; 3];
        }
        self.used.clear();
        let (sv, inv) = (scale.value(), 1.0 / scale.value());
        let d = p.diag_of(o);
        for (i, &x) in p.row(o).iter().enumerate() {
            let x = x as f64;
            let b = bin_of(x * inv);
            let w = d.map_or(1.0, |d| d[i]);
            let dx = x - bin_value(b) * sv;
            let s = &mut self.sums[b];
            if *s == [0.0; 3] {
                self.used.push(b);
            }
            s[0] += w * sv * sv;
            s[1] += w * dx * sv;
            s[2] += w * dx * dx;
        }
        // A bin whose weights all had zero diagonal reads as unused above; its sums are
        // zero, so listing it twice or not at all changes no cost.
        self.used.sort_unstable();
        self.used.dedup();
    }

    /// The occupied bins' sums, ascending by bin: what [`PackedBins::proxy`] reads.
    fn packed(&self) -> PackedBins {
        PackedBins(self.used.iter().map(|&b| (b, self.sums[b])).collect())
    }
}

/// A row's occupied [`RowBins`], kept across the rounds of [`group_tables`] (a row's
/// scale does not change there, so neither do its bins).
struct PackedBins(Vec<(usize, [f64; 3])>);

impl PackedBins {
    /// [`row_proxy`] for the table of `offsets` ([`bin_offsets`]).
    fn proxy(&self, offsets: &[f64]) -> f64 {
        self.0
            .iter()
            .map(|&(b, [s0, s1, s2])| {
                let e = offsets[b];
                (s2 + 2.0 * e * s1 + e * e * s0).max(0.0)
            })
            .sum()
    }
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
    // Every row's distance to its nearest centre so far, updated with each new centre
    // (the minimum over the same centres as a full recount: the same choice).
    let mut nearest_dist: Vec<f64> = (0..rows).map(|o| dist(&centres[0], &point(o))).collect();
    while centres.len() < count {
        let far = (0..rows)
            .map(|o| (weight[o] * nearest_dist[o], o))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        match far {
            Some((d, o)) if d > 0.0 => {
                let c = point(o);
                nearest_dist
                    .par_iter_mut()
                    .enumerate()
                    .for_each(|(o, d)| *d = d.min(dist(&c, &point(o))));
                centres.push(c);
            }
            _ => break,
        }
    }
    let nearest = |centres: &[[f64; 16]], o: usize| -> usize {
        let p = point(o);
        (0..centres.len())
            .min_by(|&a, &b| dist(&centres[a], &p).total_cmp(&dist(&centres[b], &p)))
            .unwrap_or(0)
    };
    let mut group: Vec<usize> = (0..rows)
        .into_par_iter()
        .map(|o| nearest(&centres, o))
        .collect();
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
        let next: Vec<usize> = (0..rows)
            .into_par_iter()
            .map(|o| nearest(&centres, o))
            .collect();
        if next == group {
            break;
        }
        group = next;
    }
    // Tables fitted to their rows, rows moved to their best table.
    let bins: Vec<PackedBins> = (0..rows)
        .into_par_iter()
        .map_init(RowBins::default, |bins, o| {
            bins.fill(p, o, scales[o]);
            bins.packed()
        })
        .collect();
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
        let offsets: Vec<Vec<f64>> = tables.iter().map(bin_offsets).collect();
        let next: Vec<usize> = bins
            .par_iter()
            .map(|b| {
                let cost: Vec<f64> = offsets.iter().map(|e| b.proxy(e)).collect();
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

#[cfg(test)]
mod tests {
    use super::super::LayerProblem;
    use super::*;

    /// The binned proxy is the direct one, for weights on, between and beyond the tables'
    /// midpoints, with a non-uniform diagonal and power-of-two and float scales.
    #[test]
    fn binned_proxy_equals_the_direct_one() {
        let tables: [[i8; 16]; 3] = [
            std::array::from_fn(|i| (i as i8 - 8) * 9),
            [
                -128, -128, -7, 3, 3, 3, 0, 1, 127, 127, 64, -64, 5, 5, 2, -1,
            ],
            std::array::from_fn(|i| (i as i8) * 3 - 20),
        ];
        let (rows, k) = (4, 200);
        let scales = [
            RowScale::Pot(5),
            RowScale::Pot(0),
            RowScale::Float(0.37),
            RowScale::Pot(9),
        ];
        // Scaled values: every half unit (the midpoints of integer entries), quarter
        // units and values past the int8 range, then unscaled by each row's scale.
        let w: Vec<f32> = (0..rows * k)
            .map(|i| {
                let v = (i % k) as f64 * 1.5 - 150.0 + if i % 3 == 0 { 0.25 } else { 0.0 };
                (v * scales[i / k].value()) as f32
            })
            .collect();
        let h: Vec<f64> = (0..k * k)
            .map(|i| {
                if i % (k + 1) == 0 {
                    1.0 + (i % 7) as f64
                } else {
                    0.0
                }
            })
            .collect();
        let hessians = vec![h];
        let problem = LayerProblem {
            weights: &w,
            rows,
            row_len: k,
            hessians: &hessians,
        };
        let p = Prep::new(&problem);
        let mut bins = RowBins::default();
        for t in &tables {
            let grid = Grid::Lut(LutGrid::new(t));
            let offsets = bin_offsets(t);
            for (o, &scale) in scales.iter().enumerate() {
                bins.fill(&p, o, scale);
                let binned = bins.packed().proxy(&offsets);
                let direct = row_proxy(&p, o, scale, &grid);
                assert!(
                    (direct - binned).abs() <= 1e-9 * direct.max(1e-300),
                    "table {t:?}, row {o}: direct {direct}, binned {binned}"
                );
            }
        }
    }
}
