//! Calibration: what the float model computes on the calibration set, summarised per
//! tensor (a log-spaced histogram, for choosing activation exponents) and per linear
//! layer (the per-channel mean of its pre-activation output, the target of bias
//! correction).

use std::collections::HashMap;

use lutq_ir::NodeId;
use rayon::prelude::*;

/// Sub-bins per octave of [`LogHistogram`]: values in one bin differ by at most 3.2 %.
const BINS_PER_OCTAVE: i32 = 32;
/// Smallest and largest magnitude the histogram resolves (octaves); smaller magnitudes
/// count as zero, larger ones land in the last bin (and clip under every candidate).
const MIN_OCTAVE: i32 = -30;
const MAX_OCTAVE: i32 = 30;
const BINS: usize = ((MAX_OCTAVE - MIN_OCTAVE) * BINS_PER_OCTAVE) as usize;

/// Histogram of a tensor's values over the calibration set: counts of magnitudes in
/// log-spaced bins, separately for positive and negative values. Log spacing resolves
/// small activations as well as large ones in one pass, without knowing the range first.
#[derive(Clone, Debug)]
pub struct LogHistogram {
    pos: Vec<u64>,
    neg: Vec<u64>,
    zeros: u64,
    pub min: f32,
    pub max: f32,
    pub count: u64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        LogHistogram {
            pos: vec![0; BINS],
            neg: vec![0; BINS],
            zeros: 0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            count: 0,
        }
    }
}

/// The bin of a positive magnitude, read off its f32 bits: the exponent and the top 5
/// mantissa bits (32 linear sub-bins per octave). [`LogHistogram::add`] computes the same
/// without branches; this is the definition its test checks it against.
#[cfg(test)]
fn bin_of(magnitude: f32) -> Option<usize> {
    let bits = magnitude.to_bits() >> (23 - 5); // sign is 0
    let first = ((127 + MIN_OCTAVE) as u32) << 5;
    if bits < first {
        None
    } else {
        Some(((bits - first) as usize).min(BINS - 1))
    }
}

/// Lower and upper edge of bin `b`.
fn bin_edges(b: usize) -> (f64, f64) {
    let octave = (b / BINS_PER_OCTAVE as usize) as i32 + MIN_OCTAVE;
    let sub = (b % BINS_PER_OCTAVE as usize) as f64;
    let base = (octave as f64).exp2();
    let lo = base * (1.0 + sub / BINS_PER_OCTAVE as f64);
    let hi = base * (1.0 + (sub + 1.0) / BINS_PER_OCTAVE as f64);
    (lo, hi)
}

impl LogHistogram {
    pub fn add(&mut self, values: &[f32]) {
        // Branch-free binning (zero or not, sign: unpredictable branches in ReLU outputs
        // and weights-like tensors) into four interleaved counters per slot (so runs of
        // one bin do not serialise on one counter), folded in after each block. Slot 0
        // counts zeros, 1 + b positive bin b, 1 + BINS + b negative bin b.
        const SLOTS: usize = 1 + 2 * BINS;
        let first = ((127 + MIN_OCTAVE) as u32) << 5;
        // The range in eight lanes (vectorized; `f32::min` chained over every value is one
        // dependent, NaN-aware instruction sequence per value). A comparison with NaN is
        // false, so NaNs never become the minimum or maximum.
        let (mut lo, mut hi) = ([self.min; 8], [self.max; 8]);
        let chunks = values.chunks_exact(8);
        for &v in chunks.remainder() {
            if v < lo[0] {
                lo[0] = v;
            }
            if v > hi[0] {
                hi[0] = v;
            }
        }
        for x in chunks {
            for l in 0..8 {
                lo[l] = if x[l] < lo[l] { x[l] } else { lo[l] };
                hi[l] = if x[l] > hi[l] { x[l] } else { hi[l] };
            }
        }
        // -0.0 and 0.0 compare equal: order them as `f32::min` / `max` do.
        self.min = lo.into_iter().fold(f32::INFINITY, f32::min);
        self.max = hi.into_iter().fold(f32::NEG_INFINITY, f32::max);
        // u32 lanes: at most 2^30 values per block.
        for block in values.chunks(1 << 30) {
            let mut lanes = vec![[0u32; 4]; SLOTS];
            for (i, &v) in block.iter().enumerate() {
                let bits = v.to_bits();
                let magnitude = bits & 0x7fff_ffff;
                if magnitude > 0x7f80_0000 {
                    continue; // NaN
                }
                let m = magnitude >> (23 - 5);
                let bin = (m.saturating_sub(first) as usize).min(BINS - 1);
                let live = usize::from(m >= first);
                let slot = live * (1 + (bits >> 31) as usize * BINS + bin);
                lanes[slot][i & 3] += 1;
            }
            let total = |l: &[u32; 4]| l.iter().map(|&c| c as u64).sum::<u64>();
            let zeros = total(&lanes[0]);
            let mut seen = zeros;
            self.zeros += zeros;
            for b in 0..BINS {
                let (p, n) = (total(&lanes[1 + b]), total(&lanes[1 + BINS + b]));
                self.pos[b] += p;
                self.neg[b] += n;
                seen += p + n;
            }
            self.count += seen;
        }
    }

    pub fn merge(&mut self, other: &LogHistogram) {
        for (a, b) in self.pos.iter_mut().zip(&other.pos) {
            *a += b;
        }
        for (a, b) in self.neg.iter_mut().zip(&other.neg) {
            *a += b;
        }
        self.zeros += other.zeros;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.count += other.count;
    }

    /// Estimated mean squared error of representing the values as
    /// `clamp(round(x · 2^exp), lo, hi) · 2^-exp`.
    ///
    /// Per bin: clipped values cost their distance to the clip bound (at the bin's
    /// centre); rounding costs `step²/12` where the bin is wider than a step (the values
    /// are spread over many steps), else the rounding error of the bin's centre.
    pub fn quantization_mse(&self, exp: i32, lo: i32, hi: i32) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let step = (-(exp as f64)).exp2();
        let mut total = 0.0;
        for (counts, sign, bound) in [(&self.pos, 1.0, hi), (&self.neg, -1.0, lo)] {
            // Values of a sign the range cannot hold at all clip to 0.
            let clip = if (sign > 0.0) == (bound > 0) && bound != 0 {
                (bound as f64).abs() * step
            } else {
                0.0
            };
            for (b, &n) in counts.iter().enumerate() {
                if n == 0 {
                    continue;
                }
                let (l, u) = bin_edges(b);
                let c = 0.5 * (l + u);
                let err = if c > clip {
                    (c - clip).powi(2)
                } else if u - l >= step {
                    step * step / 12.0
                } else {
                    let r = c / step;
                    ((r - r.round()) * step).powi(2) + (u - l).powi(2) / 12.0
                };
                total += n as f64 * err;
            }
        }
        total / self.count as f64
    }

    /// The exponent with the least [`Self::quantization_mse`] for range `[lo, hi]`, among
    /// the one that just avoids clipping and its neighbours (8 finer, 2 coarser). Ties
    /// prefer the coarser exponent (less clipping).
    pub fn choose_exponent(&self, lo: i32, hi: i32) -> i32 {
        let largest = (self.max.max(0.0) as f64 / hi.max(1) as f64).max(if lo < 0 {
            (-self.min.min(0.0)) as f64 / -(lo as f64)
        } else {
            0.0
        });
        if largest <= 0.0 || !largest.is_finite() {
            return 0;
        }
        // Largest exponent with max|x| · 2^exp ≤ range: no clipping.
        let no_clip = (-largest.log2()).floor() as i32;
        let mut best = (f64::INFINITY, no_clip);
        for exp in no_clip - 2..=no_clip + 8 {
            let mse = self.quantization_mse(exp, lo, hi);
            if mse < best.0 * (1.0 - 1e-9) {
                best = (mse, exp);
            }
        }
        best.1
    }
}

/// `Σ v` in f64, in eight independent lanes (vectorized: a plain `sum()` is one dependent
/// add per value).
fn sum_f64(values: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = values.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
    for x in chunks {
        for l in 0..8 {
            lanes[l] += x[l] as f64;
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// Calibration results, by node of the float graph.
#[derive(Debug, Default)]
pub struct Calibration {
    /// Values of each op's output (after its fused activation) and of each graph input.
    pub histograms: HashMap<NodeId, LogHistogram>,
    /// Conv / Gemm / MatMul nodes: mean of each output channel before the fused
    /// activation, over positions and samples.
    pub channel_means: HashMap<NodeId, Vec<f64>>,
    pub samples: usize,
}

/// What the quantizer's float run records of one node (`lower.rs`).
#[derive(Default)]
pub(crate) struct StepStatistics {
    pub histogram: LogHistogram,
    pub channel_means: Option<Vec<f64>>,
}

/// The histogram of one tensor's values on every sample (`values[s]`).
pub(crate) fn histogram(values: &[Vec<f32>]) -> LogHistogram {
    values
        .par_chunks(4)
        .map(|chunk| {
            let mut h = LogHistogram::default();
            for v in chunk {
                h.add(v);
            }
            h
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold(LogHistogram::default(), |mut a, b| {
            a.merge(&b);
            a
        })
}

/// Per channel (`channels` planes per sample, `values[s]`), the mean over positions and
/// samples, in a fixed order so that it does not depend on the thread count: each
/// sample's plane mean, added in chunks of 4 samples, the chunks added in order.
pub(crate) fn channel_means(values: &[Vec<f32>], channels: usize) -> Vec<f64> {
    let partials: Vec<Vec<f64>> = values
        .par_chunks(4)
        .map(|chunk| {
            let mut sums = vec![0.0; channels];
            for v in chunk {
                let plane = v.len() / channels;
                for (c, s) in sums.iter_mut().enumerate() {
                    *s += sum_f64(&v[c * plane..(c + 1) * plane]) / plane as f64;
                }
            }
            sums
        })
        .collect();
    let mut total = vec![0.0; channels];
    for p in partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    let n = values.len() as f64;
    total.into_iter().map(|v| v / n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The histogram's meaning, one value at a time: what `add` must count.
    fn add_reference(h: &mut LogHistogram, values: &[f32]) {
        for &v in values {
            if v.is_nan() {
                continue;
            }
            h.count += 1;
            h.min = h.min.min(v);
            h.max = h.max.max(v);
            match bin_of(v.abs()) {
                None => h.zeros += 1,
                Some(b) if v > 0.0 => h.pos[b] += 1,
                Some(b) => h.neg[b] += 1,
            }
        }
    }

    #[test]
    fn add_counts_like_the_one_value_at_a_time_definition() {
        // Every kind of f32: zeros of both signs, subnormals, tiny and huge magnitudes,
        // infinities, NaNs, ReLU-like runs of zeros; odd lengths for the lanes.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut values: Vec<f32> = (0..20_011)
            .map(|_| {
                let r = next();
                match r % 8 {
                    0 => 0.0,
                    1 => f32::from_bits((r >> 8) as u32), // anything, NaNs included
                    2 => -0.0,
                    _ => ((r >> 16) as i32 as f32) * 2f32.powi((r % 40) as i32 - 45),
                }
            })
            .collect();
        values.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e-40,
            -1e-40,
            3.0,
        ]);
        let (mut fast, mut slow) = (LogHistogram::default(), LogHistogram::default());
        for part in values.chunks(997) {
            fast.add(part);
            add_reference(&mut slow, part);
        }
        assert_eq!(fast.pos, slow.pos);
        assert_eq!(fast.neg, slow.neg);
        assert_eq!((fast.zeros, fast.count), (slow.zeros, slow.count));
        assert_eq!((fast.min, fast.max), (slow.min, slow.max));
        assert!(slow.zeros > 0 && slow.neg.iter().sum::<u64>() > 0);
    }

    #[test]
    fn exponent_avoids_clipping_a_uniform_distribution() {
        let mut h = LogHistogram::default();
        let values: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0 * 3.9).collect();
        h.add(&values);
        // 3.9 · 2^5 = 124.8 fits i8, 2^6 would clip half the values.
        assert_eq!(h.choose_exponent(-128, 127), 5);
        // u8 holds twice the range: same exponent plus one.
        assert_eq!(h.choose_exponent(0, 255), 6);
    }

    #[test]
    fn exponent_clips_rare_outliers() {
        let mut h = LogHistogram::default();
        let mut values: Vec<f32> = (0..100_000)
            .map(|i| ((i % 1000) as f32 / 1000.0 - 0.5) * 0.5)
            .collect();
        values.push(10.0);
        h.add(&values);
        // No clipping needs 2^3 (10 · 8 = 80); the bulk lives in ±0.25, so the MSE choice
        // clips the single outlier for resolution.
        let e = h.choose_exponent(-128, 127);
        assert!(e > 3, "{e}");
        assert!(h.quantization_mse(e, -128, 127) < h.quantization_mse(3, -128, 127));
    }

    #[test]
    fn mse_estimate_tracks_the_true_error() {
        let mut x: u32 = 12345;
        let values: Vec<f32> = (0..50_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32 - 0.5) * 8.0
            })
            .collect();
        let mut h = LogHistogram::default();
        h.add(&values);
        for exp in [3, 4, 5, 6] {
            let step = (-(exp as f64)).exp2();
            let truth: f64 = values
                .iter()
                .map(|&v| {
                    let q = (v as f64 / step).round().clamp(-128.0, 127.0);
                    (v as f64 - q * step).powi(2)
                })
                .sum::<f64>()
                / values.len() as f64;
            let est = h.quantization_mse(exp, -128, 127);
            assert!(
                (est / truth - 1.0).abs() < 0.1,
                "exp {exp}: {est} vs {truth}"
            );
        }
    }
}
