//! The prepared problem and the passes over it: code assignment by rounding, the exact
//! output error, and the normal equations of the LUT values.
//!
//! Why passes over *row blocks*: every `O(rows · K²)` pass streams the group's `K × K`
//! matrix; handling 16 rows per visit of a matrix row keeps that row in L1 for all of
//! them, and the blocks are the unit of parallelism (rayon). A block never crosses a
//! group boundary. Results are concatenated or summed in block order, so they do not
//! depend on the number of threads.

use rayon::prelude::*;

use super::linalg::{dot, dot2};
use super::{LayerProblem, RowScale};

/// Rows handled together in one visit of the group matrix.
pub(crate) const BLOCK_ROWS: usize = 16;

/// A contiguous range of rows inside one group.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Block {
    pub group: usize,
    pub r0: usize,
    pub r1: usize,
}

pub(crate) struct Prep<'a> {
    pub w: &'a [f32],
    pub rows: usize,
    pub k: usize,
    /// Empty: identity.
    pub hess: &'a [Vec<f64>],
    /// Rows per group.
    pub rpg: usize,
    /// Per group, the diagonal of `H` (empty for identity).
    pub diag: Vec<Vec<f64>>,
    /// Per row, whether every weight is zero.
    pub zero_rows: Vec<bool>,
}

impl<'a> Prep<'a> {
    pub fn new(p: &LayerProblem<'a>) -> Prep<'a> {
        assert_eq!(
            p.weights.len(),
            p.rows * p.row_len,
            "weights must be rows × row_len"
        );
        let k = p.row_len;
        let rpg = if p.hessians.is_empty() {
            p.rows.max(1)
        } else {
            assert!(
                p.rows.is_multiple_of(p.hessians.len()),
                "rows ({}) must be a multiple of the number of groups ({})",
                p.rows,
                p.hessians.len()
            );
            for h in p.hessians {
                assert_eq!(h.len(), k * k, "each hessian must be row_len × row_len");
            }
            (p.rows / p.hessians.len()).max(1)
        };
        let diag = p
            .hessians
            .iter()
            .map(|h| (0..k).map(|i| h[i * k + i]).collect())
            .collect();
        let zero_rows = (0..p.rows)
            .map(|o| p.weights[o * k..(o + 1) * k].iter().all(|&x| x == 0.0))
            .collect();
        Prep {
            w: p.weights,
            rows: p.rows,
            k,
            hess: p.hessians,
            rpg,
            diag,
            zero_rows,
        }
    }

    pub fn identity(&self) -> bool {
        self.hess.is_empty()
    }

    pub fn group_of(&self, row: usize) -> usize {
        row / self.rpg
    }

    pub fn row(&self, o: usize) -> &'a [f32] {
        &self.w[o * self.k..(o + 1) * self.k]
    }

    /// The diagonal of row `o`'s matrix, `None` for identity.
    pub fn diag_of(&self, o: usize) -> Option<&[f64]> {
        self.diag.get(self.group_of(o)).map(|d| d.as_slice())
    }

    pub fn blocks(&self) -> Vec<Block> {
        let groups = self.hess.len().max(1);
        let mut out = Vec::new();
        for g in 0..groups {
            let end = ((g + 1) * self.rpg).min(self.rows);
            let mut r0 = g * self.rpg;
            while r0 < end {
                let r1 = (r0 + BLOCK_ROWS).min(end);
                out.push(Block { group: g, r0, r1 });
                r0 = r1;
            }
        }
        out
    }

    /// Runs `f` on every block in parallel; results in block order.
    pub fn map_blocks<T: Send>(&self, f: impl Fn(Block) -> T + Sync + Send) -> Vec<T> {
        self.blocks().into_par_iter().map(f).collect()
    }
}

/// The grid a row's scaled weights are rounded to.
#[derive(Clone, Debug)]
pub(crate) enum Grid {
    Uniform { min: i32, max: i32 },
    Lut(LutGrid),
}

/// A LUT prepared for nearest-entry search.
#[derive(Clone, Debug)]
pub(crate) struct LutGrid {
    /// Entries ascending, with their codes.
    sorted: [(i8, u8); 16],
    /// Midpoints between consecutive sorted entries.
    mids: [f64; 15],
}

impl LutGrid {
    pub fn new(lut: &[i8; 16]) -> LutGrid {
        let mut sorted = [(0i8, 0u8); 16];
        for (i, s) in sorted.iter_mut().enumerate() {
            *s = (lut[i], i as u8);
        }
        sorted.sort_by_key(|&(v, c)| (v, c));
        let mut mids = [0.0; 15];
        for (i, m) in mids.iter_mut().enumerate() {
            *m = 0.5 * (sorted[i].0 as f64 + sorted[i + 1].0 as f64);
        }
        LutGrid { sorted, mids }
    }

    /// How many midpoints lie below `v` (`v > m`; 0 for NaN): the index of `v`'s nearest
    /// entry in `sorted`. A branchless binary search over the ascending midpoints (4
    /// comparisons instead of 15: the hot loop of every rounding pass).
    #[inline]
    fn mids_below(&self, v: f64) -> usize {
        let m = &self.mids;
        let mut i = if v > m[7] { 8 } else { 0 };
        i += if v > m[i + 3] { 4 } else { 0 };
        i += if v > m[i + 1] { 2 } else { 0 };
        i + usize::from(v > m[i])
    }
}

impl Grid {
    /// The nearest grid point to `v` (ties: the lower LUT entry; `f64::round` for the
    /// uniform grid), as `(level, code)`; the code is 0 on the uniform grid.
    #[inline]
    pub fn nearest(&self, v: f64) -> (i8, u8) {
        match self {
            Grid::Uniform { min, max } => {
                let l = if v.is_nan() {
                    0.0
                } else {
                    v.round().clamp(*min as f64, *max as f64)
                };
                (l as i8, 0)
            }
            Grid::Lut(g) => g.sorted[g.mids_below(v)],
        }
    }
}

/// Row `o`'s grid: `grids` holds one grid for every row, or one per row.
#[inline]
pub(crate) fn grid_of(grids: &[Grid], o: usize) -> &Grid {
    if grids.len() == 1 {
        &grids[0]
    } else {
        &grids[o]
    }
}

/// Levels and codes (`rows × k`); codes are all 0 on a uniform grid.
#[derive(Clone, Debug)]
pub(crate) struct Assignment {
    pub levels: Vec<i8>,
    pub codes: Vec<u8>,
}

/// Round to nearest on the grid (`grids`: one for all rows, or one per row).
pub(crate) fn rtn(p: &Prep<'_>, grids: &[Grid], scales: &[f64]) -> Assignment {
    let mut levels = vec![0i8; p.w.len()];
    let mut codes = vec![0u8; p.w.len()];
    levels
        .par_chunks_mut(p.k.max(1))
        .zip(codes.par_chunks_mut(p.k.max(1)))
        .enumerate()
        .for_each(|(o, (lv, cd))| {
            let inv = 1.0 / scales[o];
            let grid = grid_of(grids, o);
            for ((l, c), &x) in lv.iter_mut().zip(cd.iter_mut()).zip(p.row(o)) {
                (*l, *c) = grid.nearest(x as f64 * inv);
            }
        });
    Assignment { levels, codes }
}

/// Per row, `E_o = (w_o − ŵ_o)ᵀ H (w_o − ŵ_o)` with `ŵ_o = levels_o · scale_o`, computed
/// from the upper triangle (`Σ_i δ_i (H_ii δ_i + 2 Σ_{j>i} H_ij δ_j)`).
pub(crate) fn row_errors(p: &Prep<'_>, levels: &[i8], scales: &[f64]) -> Vec<f64> {
    let k = p.k;
    let parts = p.map_blocks(|b| {
        let local = &levels[b.r0 * k..b.r1 * k];
        let d = deltas(p, b, local, scales);
        quad_rows(p.hess.get(b.group).map(|h| h.as_slice()), &d, k)
    });
    parts.concat()
}

/// `w_o − levels_o · s_o` for the rows of block `b` (`levels` holds the block's rows).
pub(crate) fn deltas(p: &Prep<'_>, b: Block, levels: &[i8], scales: &[f64]) -> Vec<Vec<f64>> {
    let k = p.k;
    (b.r0..b.r1)
        .map(|o| {
            let r = o - b.r0;
            p.row(o)
                .iter()
                .zip(&levels[r * k..(r + 1) * k])
                .map(|(&w, &l)| w as f64 - l as f64 * scales[o])
                .collect()
        })
        .collect()
}

/// `dᵀ H d` for each of `deltas` (`H = I` when `h` is `None`).
pub(crate) fn quad_rows(h: Option<&[f64]>, deltas: &[Vec<f64>], k: usize) -> Vec<f64> {
    match h {
        None => deltas.iter().map(|d| dot(d, d)).collect(),
        Some(h) => {
            let mut e = vec![0.0; deltas.len()];
            // Rows with a nonzero `δ_i`, two at a time (`dot2`: the same sums as one by
            // one).
            let mut live: Vec<usize> = Vec::with_capacity(deltas.len());
            for i in 0..k {
                let hrow = &h[i * k..(i + 1) * k];
                live.clear();
                live.extend((0..deltas.len()).filter(|&r| deltas[r][i] != 0.0));
                for pair in live.chunks(2) {
                    match *pair {
                        [r0, r1] => {
                            let (d0, d1) = (&deltas[r0], &deltas[r1]);
                            let (o0, o1) = dot2(&hrow[i + 1..], &d0[i + 1..], &d1[i + 1..]);
                            e[r0] += d0[i] * (hrow[i] * d0[i] + 2.0 * o0);
                            e[r1] += d1[i] * (hrow[i] * d1[i] + 2.0 * o1);
                        }
                        [r] => {
                            let d = &deltas[r];
                            let off = dot(&hrow[i + 1..], &d[i + 1..]);
                            e[r] += d[i] * (hrow[i] * d[i] + 2.0 * off);
                        }
                        _ => unreachable!("chunks of one or two"),
                    }
                }
            }
            e
        }
    }
}

/// `H_g w_o` for every row (`rows × k`), and `Σ_o w_oᵀ H_g w_o`.
pub(crate) fn h_times_w(p: &Prep<'_>) -> (Vec<f64>, f64) {
    let k = p.k;
    let parts = p.map_blocks(|b| {
        let ws: Vec<Vec<f64>> = (b.r0..b.r1)
            .map(|o| p.row(o).iter().map(|&x| x as f64).collect())
            .collect();
        let mut out = vec![0.0; ws.len() * k];
        match p.hess.get(b.group) {
            None => {
                for (r, w) in ws.iter().enumerate() {
                    out[r * k..(r + 1) * k].copy_from_slice(w);
                }
            }
            Some(h) => {
                for i in 0..k {
                    let hrow = &h[i * k..(i + 1) * k];
                    // Two rows at a time (`dot2`: the same sums as one by one).
                    for (p, wp) in ws.chunks(2).enumerate() {
                        let r = 2 * p;
                        match wp {
                            [w0, w1] => {
                                (out[r * k + i], out[(r + 1) * k + i]) = dot2(hrow, w0, w1);
                            }
                            _ => out[r * k + i] = dot(hrow, &wp[0]),
                        }
                    }
                }
            }
        }
        let c: f64 = ws
            .iter()
            .enumerate()
            .map(|(r, w)| dot(w, &out[r * k..(r + 1) * k]))
            .sum();
        (out, c)
    });
    let c = parts.iter().map(|x| x.1).sum();
    (parts.into_iter().flat_map(|x| x.0).collect(), c)
}

/// The objective as a function of the sixteen LUT values for fixed codes and scales:
/// `E(l) = c − 2 bᵀ l + lᵀ M l` with `M = Σ_o s_o² A_oᵀ H A_o`, `b = Σ_o s_o A_oᵀ H w_o`,
/// `c = Σ_o w_oᵀ H w_o` (`A_o`: the one-hot code matrix of row `o`).
#[derive(Clone, Debug)]
pub(crate) struct Normal {
    pub m: [[f64; 16]; 16],
    pub b: [f64; 16],
    pub c: f64,
}

impl Normal {
    /// The normal equations of a table shared by several rows: the sum of theirs.
    pub fn sum<'a>(rows: impl IntoIterator<Item = &'a Normal>) -> Normal {
        let mut n = Normal {
            m: [[0.0; 16]; 16],
            b: [0.0; 16],
            c: 0.0,
        };
        for r in rows {
            for a in 0..16 {
                n.b[a] += r.b[a];
                for (x, y) in n.m[a].iter_mut().zip(&r.m[a]) {
                    *x += y;
                }
            }
            n.c += r.c;
        }
        n
    }

    pub fn eval(&self, lut: &[f64; 16]) -> f64 {
        let mut e = self.c;
        for k in 0..16 {
            e -= 2.0 * self.b[k] * lut[k];
            e += lut[k] * dot(&self.m[k], lut);
        }
        e.max(0.0)
    }
}

/// The normal equations of the one shared table (`hw`, `c` from [`h_times_w`]); the
/// per-row matrices come from [`code_matrices`].
#[allow(clippy::needless_range_loop)] // 16 × 16 matrix code reads best with indices
pub(crate) fn normal(p: &Prep<'_>, codes: &[u8], scales: &[f64], hw: &[f64], c: f64) -> Normal {
    let k = p.k;
    let parts = p.map_blocks(|b| {
        let mut m = [[0.0f64; 16]; 16];
        let mut bv = [0.0f64; 16];
        for o in b.r0..b.r1 {
            let s = scales[o];
            for (&ci, &t) in codes[o * k..(o + 1) * k]
                .iter()
                .zip(&hw[o * k..(o + 1) * k])
            {
                bv[ci as usize & 15] += s * t;
            }
        }
        let mo = code_matrices(p, b, codes);
        for (r, mo) in mo.iter().enumerate() {
            let s = scales[b.r0 + r];
            let s2 = s * s;
            for a in 0..16 {
                for l in 0..16 {
                    m[a][l] += s2 * mo[a][l];
                }
            }
        }
        (m, bv)
    });
    let mut out = Normal {
        m: [[0.0; 16]; 16],
        b: [0.0; 16],
        c,
    };
    for (m, b) in parts {
        for a in 0..16 {
            out.b[a] += b[a];
            for l in 0..16 {
                out.m[a][l] += m[a][l];
            }
        }
    }
    out
}

/// The normal equations of every row's own table (per-channel tables): `M_o = s_o² A_oᵀ
/// H A_o`, `b_o = s_o A_oᵀ H w_o`, `c_o = w_oᵀ H w_o`, so that `Normal::eval` of row
/// `o`'s table is `E_o` (`hw` from [`h_times_w`]). Same passes as [`normal`].
pub(crate) fn normal_rows(p: &Prep<'_>, codes: &[u8], scales: &[f64], hw: &[f64]) -> Vec<Normal> {
    let k = p.k;
    let parts = p.map_blocks(|b| {
        let mo = code_matrices(p, b, codes);
        mo.iter()
            .enumerate()
            .map(|(r, mo)| {
                let o = b.r0 + r;
                let s = scales[o];
                let hwo = &hw[o * k..(o + 1) * k];
                let mut n = Normal {
                    m: [[0.0; 16]; 16],
                    b: [0.0; 16],
                    c: 0.0,
                };
                for ((&ci, &t), &w) in codes[o * k..(o + 1) * k].iter().zip(hwo).zip(p.row(o)) {
                    n.b[ci as usize & 15] += s * t;
                    n.c += w as f64 * t;
                }
                let s2 = s * s;
                for (nm, mo) in n.m.iter_mut().zip(mo) {
                    for (x, &y) in nm.iter_mut().zip(mo) {
                        *x = s2 * y;
                    }
                }
                n
            })
            .collect::<Vec<_>>()
    });
    parts.concat()
}

/// Per row of block `b`, the unscaled `A_oᵀ H A_o`:
/// `M_o[k][l] = Σ_{i: c_i = k} Σ_{j: c_j = l} H_ij`. Per row, the columns are sorted by
/// code once (counting sort); then for every matrix row `i` the sums over each code's
/// columns are gathers into register accumulators (no scatter into memory, whose
/// store-to-load chains on repeated codes are slow), and only the blocks `l ≥ c_i` are
/// summed: `M` is symmetric.
#[allow(clippy::needless_range_loop)] // 16 × 16 matrix code reads best with indices
fn code_matrices(p: &Prep<'_>, b: Block, codes: &[u8]) -> Vec<[[f64; 16]; 16]> {
    let k = p.k;
    let n = b.r1 - b.r0;
    let mut mo = vec![[[0.0f64; 16]; 16]; n];
    match p.hess.get(b.group) {
        None => {
            for (r, mo) in mo.iter_mut().enumerate() {
                for &ci in &codes[(b.r0 + r) * k..(b.r0 + r + 1) * k] {
                    mo[ci as usize & 15][ci as usize & 15] += 1.0;
                }
            }
        }
        Some(h) => {
            // Per row: columns sorted by code, and each code's segment.
            let sorted: Vec<(Vec<u32>, [usize; 17])> = (b.r0..b.r1)
                .map(|o| {
                    let cd = &codes[o * k..(o + 1) * k];
                    let mut seg = [0usize; 17];
                    for &ci in cd {
                        seg[(ci as usize & 15) + 1] += 1;
                    }
                    for l in 0..16 {
                        seg[l + 1] += seg[l];
                    }
                    let mut next = seg;
                    let mut order = vec![0u32; k];
                    for (j, &ci) in cd.iter().enumerate() {
                        let l = ci as usize & 15;
                        order[next[l]] = j as u32;
                        next[l] += 1;
                    }
                    (order, seg)
                })
                .collect();
            for i in 0..k {
                let hrow = &h[i * k..(i + 1) * k];
                for (r, (order, seg)) in sorted.iter().enumerate() {
                    let ci = codes[(b.r0 + r) * k + i] as usize & 15;
                    for l in ci..16 {
                        let idx = &order[seg[l]..seg[l + 1]];
                        mo[r][ci][l] += gather_sum(hrow, idx);
                    }
                }
            }
            for mo in &mut mo {
                for a in 0..16 {
                    for l in a + 1..16 {
                        mo[l][a] = mo[a][l];
                    }
                }
            }
        }
    }
    mo
}

/// `Σ_t row[idx[t]]` with four accumulators.
#[inline]
fn gather_sum(row: &[f64], idx: &[u32]) -> f64 {
    let mut s = [0.0f64; 4];
    let chunks = idx.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        s[0] += row[c[0] as usize];
        s[1] += row[c[1] as usize];
        s[2] += row[c[2] as usize];
        s[3] += row[c[3] as usize];
    }
    for &j in rest {
        s[0] += row[j as usize];
    }
    (s[0] + s[1]) + (s[2] + s[3])
}

/// Scale values of row scales.
pub(crate) fn values(scales: &[RowScale]) -> Vec<f64> {
    scales.iter().map(|s| s.value()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_quadratic_forms_are_single_ones_bit_for_bit() {
        // `δᵀ H δ` from the upper triangle, one row at a time (the definition), against
        // the paired evaluation; rows with zeros in varied places, odd row counts.
        let k = 37;
        let value = |i: usize| ((i * 37 % 101) as f64 - 50.0) * 0.173;
        let h: Vec<f64> = (0..k * k)
            .map(|i| {
                let (r, c) = (i / k, i % k);
                value(r.min(c) * k + r.max(c)) + if r == c { 40.0 } else { 0.0 }
            })
            .collect();
        for rows in [1, 2, 5] {
            let deltas: Vec<Vec<f64>> = (0..rows)
                .map(|r| {
                    (0..k)
                        .map(|i| {
                            if (i + r) % 3 == 0 {
                                0.0
                            } else {
                                value(i * 7 + r)
                            }
                        })
                        .collect()
                })
                .collect();
            let got = quad_rows(Some(&h), &deltas, k);
            for (d, g) in deltas.iter().zip(&got) {
                let mut want = 0.0;
                for i in 0..k {
                    if d[i] != 0.0 {
                        let off = dot(&h[i * k + i + 1..(i + 1) * k], &d[i + 1..]);
                        want += d[i] * (h[i * k + i] * d[i] + 2.0 * off);
                    }
                }
                assert_eq!(g.to_bits(), want.to_bits());
            }
        }
    }

    #[test]
    fn nearest_entry_search_counts_the_midpoints_below() {
        // Tables with repeated entries and extremes; values on, between and beyond the
        // midpoints, infinities and NaN: the search gives the plain count.
        let tables: [[i8; 16]; 3] = [
            std::array::from_fn(|i| (i as i8 - 8) * 9),
            [
                -128, -128, -7, 3, 3, 3, 0, 1, 127, 127, 64, -64, 5, 5, 2, -1,
            ],
            [0; 16],
        ];
        for lut in &tables {
            let g = LutGrid::new(lut);
            let mut values: Vec<f64> = vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
            for &m in &g.mids {
                values.extend([m, m - 0.25, m + 0.25, m.next_up(), m.next_down()]);
            }
            values.extend((-140..=140).map(|v| v as f64 * 0.5));
            for v in values {
                let count = g.mids.iter().filter(|&&m| v > m).count();
                assert_eq!(g.mids_below(v), count, "table {lut:?}, value {v}");
            }
        }
    }
}
