//! Weighted k-means (Lloyd) in one dimension with the centroids on the int8 grid: the
//! starting LUT, and the whole fit when no calibration data is given.
//!
//! Why this shape: the LUT entries must be int8, so the centroids are rounded to integers
//! after every update. In one dimension the clusters of sorted data are contiguous
//! ranges, so after one sort every Lloyd iteration costs `O(16 log N)` through prefix sums
//! of `ω`, `ω v` and `ω v²` — the pooled weights of a 1280×1000 layer cost one sort, not
//! a pass per iteration.
//!
//! The objective `Σ_n ω_n (v_n − c(v_n))²` never increases:
//! * assigning each value to its nearest centroid cannot increase it;
//! * for a fixed cluster the best *integer* centroid is the rounded weighted mean (the
//!   cost is a parabola in `c`), so the rounded update cannot increase it either;
//! * an empty cluster or a centroid that rounded onto another one is re-seeded at a new,
//!   unused integer inside the cluster with the largest error: adding a centroid to a
//!   nearest-assignment quantizer cannot increase the objective;
//! * and as a guard against floating-point rounding, a new table is accepted only if its
//!   computed objective is strictly lower; otherwise the previous table is kept and the
//!   iteration stops.
//!
//! Initialization is deterministic: two starts, weighted quantiles of the data and
//! quantiles of the cube root of its histogram (the asymptotically optimal density of a
//! quantizer's levels for squared error), each run to convergence; the better one wins.

/// Number of LUT entries.
pub const LUT_SIZE: usize = 16;
const GRID_MIN: i32 = -128;
const GRID_MAX: i32 = 127;
const MAX_ITERS: usize = 100;

/// The result of [`kmeans_lut`].
#[derive(Clone, Debug, PartialEq)]
pub struct KMeans {
    /// Sixteen distinct int8 centroids, ascending.
    pub lut: [i8; LUT_SIZE],
    /// The weighted objective after initialization and after every accepted iteration
    /// (strictly decreasing) of the winning start.
    pub history: Vec<f64>,
}

impl KMeans {
    /// The final objective.
    pub fn objective(&self) -> f64 {
        *self.history.last().expect("history is never empty")
    }
}

/// Weighted k-means of `values` (already scaled to the int8 grid) into 16 integer
/// centroids in `[-128, 127]`, minimizing `Σ weights_n (values_n − lut[code_n])²` with
/// nearest-centroid codes. Negative or non-finite weights count as zero; if no weight is
/// positive, all weights count as one. Empty input gives the initial table.
pub fn kmeans_lut(values: &[f64], weights: &[f64]) -> KMeans {
    assert_eq!(values.len(), weights.len(), "one weight per value");
    let data = Sorted::new(values, weights);
    let a = data.lloyd(data.quantile_init());
    let b = data.lloyd(data.cube_root_init());
    let best = if b.1.last() < a.1.last() { b } else { a };
    let mut lut = [0i8; LUT_SIZE];
    for (l, c) in lut.iter_mut().zip(best.0) {
        *l = c as i8;
    }
    KMeans {
        lut,
        history: best.1,
    }
}

/// Data sorted by value with prefix sums of `ω`, `ω v`, `ω v²`.
struct Sorted {
    v: Vec<f64>,
    p0: Vec<f64>,
    p1: Vec<f64>,
    p2: Vec<f64>,
}

/// Sums of `ω`, `ω v`, `ω v²` over a range.
#[derive(Clone, Copy)]
struct Moments {
    s0: f64,
    s1: f64,
    s2: f64,
}

impl Moments {
    fn cost(self, c: f64) -> f64 {
        (self.s2 - 2.0 * c * self.s1 + c * c * self.s0).max(0.0)
    }
    fn best_integer(self) -> Option<i32> {
        (self.s0 > 0.0).then(|| round_to_grid(self.s1 / self.s0))
    }
}

fn round_to_grid(x: f64) -> i32 {
    if x.is_nan() {
        return 0;
    }
    (x.round().clamp(GRID_MIN as f64, GRID_MAX as f64)) as i32
}

/// Sixteen distinct integers in the grid from sorted (possibly repeated) ones.
fn make_distinct(c: &mut [i32; LUT_SIZE]) {
    c.sort_unstable();
    for k in 1..LUT_SIZE {
        c[k] = c[k].max(c[k - 1] + 1);
    }
    if c[LUT_SIZE - 1] > GRID_MAX {
        c[LUT_SIZE - 1] = GRID_MAX;
        for k in (0..LUT_SIZE - 1).rev() {
            c[k] = c[k].min(c[k + 1] - 1);
        }
    }
}

impl Sorted {
    fn new(values: &[f64], weights: &[f64]) -> Sorted {
        let mut pairs: Vec<(f64, f64)> = values
            .iter()
            .zip(weights)
            .map(|(&v, &w)| (v, if w.is_finite() && w > 0.0 { w } else { 0.0 }))
            .collect();
        let total: f64 = pairs.iter().map(|p| p.1).sum();
        if !(total > 0.0 && total.is_finite()) {
            for p in &mut pairs {
                p.1 = 1.0;
            }
        }
        pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let n = pairs.len();
        let mut p0 = Vec::with_capacity(n + 1);
        let mut p1 = Vec::with_capacity(n + 1);
        let mut p2 = Vec::with_capacity(n + 1);
        let (mut a, mut b, mut c) = (0.0, 0.0, 0.0);
        p0.push(0.0);
        p1.push(0.0);
        p2.push(0.0);
        for &(v, w) in &pairs {
            a += w;
            b += w * v;
            c += w * v * v;
            p0.push(a);
            p1.push(b);
            p2.push(c);
        }
        Sorted {
            v: pairs.into_iter().map(|p| p.0).collect(),
            p0,
            p1,
            p2,
        }
    }

    fn moments(&self, a: usize, b: usize) -> Moments {
        Moments {
            s0: self.p0[b] - self.p0[a],
            s1: self.p1[b] - self.p1[a],
            s2: self.p2[b] - self.p2[a],
        }
    }

    /// Cluster boundaries of the sorted table `c` (ascending, duplicates allowed): cluster
    /// `k` is `bounds[k]..bounds[k+1]`. A value exactly between two centroids goes to the
    /// lower one (the same rule as the code assignment).
    fn bounds(&self, c: &[i32]) -> Vec<usize> {
        let mut b = Vec::with_capacity(c.len() + 1);
        b.push(0);
        for k in 0..c.len() - 1 {
            let mid = 0.5 * (c[k] as f64 + c[k + 1] as f64);
            b.push(self.v.partition_point(|&x| x <= mid));
        }
        b.push(self.v.len());
        b
    }

    fn objective(&self, c: &[i32]) -> f64 {
        let b = self.bounds(c);
        (0..c.len())
            .map(|k| self.moments(b[k], b[k + 1]).cost(c[k] as f64))
            .sum()
    }

    fn quantile_init(&self) -> [i32; LUT_SIZE] {
        let total = *self.p0.last().unwrap_or(&0.0);
        let mut c = [0i32; LUT_SIZE];
        if !self.v.is_empty() {
            for (k, ck) in c.iter_mut().enumerate() {
                let target = (k as f64 + 0.5) / LUT_SIZE as f64 * total;
                let i = self
                    .p0
                    .partition_point(|&p| p < target)
                    .clamp(1, self.v.len());
                *ck = round_to_grid(self.v[i - 1]);
            }
        }
        make_distinct(&mut c);
        c
    }

    fn cube_root_init(&self) -> [i32; LUT_SIZE] {
        let bins = (GRID_MAX - GRID_MIN + 1) as usize;
        let mut hist = vec![0.0f64; bins];
        for i in 0..self.v.len() {
            let bin = (round_to_grid(self.v[i]) - GRID_MIN) as usize;
            hist[bin] += self.p0[i + 1] - self.p0[i];
        }
        let density: Vec<f64> = hist.iter().map(|h| h.cbrt()).collect();
        let total: f64 = density.iter().sum();
        let mut c = [0i32; LUT_SIZE];
        if total > 0.0 {
            let mut acc = 0.0;
            let mut k = 0;
            for (bin, d) in density.iter().enumerate() {
                acc += d;
                while k < LUT_SIZE && acc >= (k as f64 + 0.5) / LUT_SIZE as f64 * total {
                    c[k] = bin as i32 + GRID_MIN;
                    k += 1;
                }
            }
            for ck in c.iter_mut().skip(k) {
                *ck = GRID_MAX;
            }
        }
        make_distinct(&mut c);
        c
    }

    /// Re-seeds the duplicate and empty entries of the sorted table `c` at new integers,
    /// one at a time inside the cluster with the largest cost; returns sixteen distinct
    /// sorted integers.
    fn reseed(&self, c: &[i32; LUT_SIZE]) -> [i32; LUT_SIZE] {
        // Active: distinct values whose cluster is non-empty.
        let mut active: Vec<i32> = Vec::with_capacity(LUT_SIZE);
        {
            let b = self.bounds(c);
            for k in 0..LUT_SIZE {
                let used = self.moments(b[k], b[k + 1]).s0 > 0.0;
                if used && active.last() != Some(&c[k]) {
                    active.push(c[k]);
                }
            }
        }
        if active.is_empty() {
            active.push(c[0]);
        }
        while active.len() < LUT_SIZE {
            let b = self.bounds(&active);
            let mut order: Vec<(f64, usize)> = (0..active.len())
                .map(|k| (self.moments(b[k], b[k + 1]).cost(active[k] as f64), k))
                .collect();
            order.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
            let mut added = None;
            for &(cost, k) in &order {
                if cost <= 0.0 {
                    break;
                }
                if let Some(new) = self.split(b[k], b[k + 1], active[k])
                    && !active.contains(&new)
                {
                    added = Some(new);
                    break;
                }
            }
            // Nothing to split: any unused integer (closest to the middle of the table)
            // keeps the entries distinct without changing the objective.
            let new = added.unwrap_or_else(|| {
                let mid = active[active.len() / 2];
                (0..=(GRID_MAX - GRID_MIN))
                    .flat_map(|d| [mid + d, mid - d])
                    .find(|x| (GRID_MIN..=GRID_MAX).contains(x) && !active.contains(x))
                    .expect("the grid has more than 16 integers")
            });
            let at = active.partition_point(|&x| x < new);
            active.insert(at, new);
        }
        let mut out = [0i32; LUT_SIZE];
        out.copy_from_slice(&active);
        out
    }

    /// A new centroid inside cluster `a..b` around `c`: the rounded mean of the side
    /// (below or above `c`) with the larger cost, moved off `c` if it rounds onto it.
    fn split(&self, a: usize, b: usize, c: i32) -> Option<i32> {
        let cf = c as f64;
        let m = a + self.v[a..b].partition_point(|&x| x < cf);
        let lo = self.moments(a, m);
        let hi = self.moments(m, b);
        let (side, dir) = if lo.cost(cf) >= hi.cost(cf) {
            (lo, -1)
        } else {
            (hi, 1)
        };
        let mut new = side.best_integer()?;
        if new == c {
            new = c + dir;
        }
        (GRID_MIN..=GRID_MAX).contains(&new).then_some(new)
    }

    /// Lloyd iterations from `init` (sorted, distinct); the final table and the history.
    fn lloyd(&self, init: [i32; LUT_SIZE]) -> ([i32; LUT_SIZE], Vec<f64>) {
        let mut c = init;
        let mut obj = self.objective(&c);
        let mut history = vec![obj];
        for _ in 0..MAX_ITERS {
            let b = self.bounds(&c);
            let mut next = c;
            for k in 0..LUT_SIZE {
                if let Some(x) = self.moments(b[k], b[k + 1]).best_integer() {
                    next[k] = x;
                }
            }
            next.sort_unstable();
            let next = self.reseed(&next);
            if next == c {
                break;
            }
            let o = self.objective(&next);
            if o >= obj || o.is_nan() {
                break;
            }
            c = next;
            obj = o;
            history.push(o);
        }
        (c, history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_clusters_are_found() {
        // Sixteen well separated integer clusters: the objective reaches zero.
        let centers: Vec<f64> = (0..16).map(|k| -120.0 + 15.0 * k as f64).collect();
        let values: Vec<f64> = (0..1600).map(|i| centers[i % 16]).collect();
        let weights = vec![1.0; values.len()];
        let r = kmeans_lut(&values, &weights);
        assert_eq!(r.objective(), 0.0);
        let lut: Vec<f64> = r.lut.iter().map(|&x| x as f64).collect();
        assert_eq!(lut, centers);
    }

    #[test]
    fn degenerate_inputs() {
        let r = kmeans_lut(&[], &[]);
        assert!(r.lut.windows(2).all(|w| w[0] < w[1]));
        let r = kmeans_lut(&[0.0; 10], &[0.0; 10]);
        assert!(r.lut.contains(&0));
        assert!(r.lut.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(r.objective(), 0.0);
        let r = kmeans_lut(&[1e9, -1e9, 3.0], &[1.0, 1.0, 1.0]);
        assert!(r.lut.contains(&127) && r.lut.contains(&-128) && r.lut.contains(&3));
    }
}
