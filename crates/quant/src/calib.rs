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
/// mantissa bits (32 linear sub-bins per octave). [`LogHistogram::add`] counts by those
/// bits and maps them to bins once per batch (`Tally`); this is the definition its test
/// checks it against.
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

/// Keys of [`Tally`]: the top 14 bits of an f32 (sign, exponent, the top 5 mantissa
/// bits), i.e. one key per sign and bin of [`LogHistogram`] (more below and above its
/// range).
const KEYS: usize = 1 << 14;

/// Counts of values by [`KEYS`] key, four interleaved counters per key (so runs of one
/// bin, e.g. a ReLU's zeros, do not serialise on one counter): per value, a shift and
/// one increment, no arithmetic on bins. [`Tally::fold_into`] turns the keys into the
/// histogram's bins (and clears the counters), once per batch of values. One table per
/// thread, reused ([`HistogramBuilder`]): it is 256 KB, and only the keys in use are hot.
struct Tally {
    counts: Box<[[u32; 4]; KEYS]>,
    /// Values counted since the last fold (each counter holds at most a quarter of them,
    /// plus one: kept below `u32::MAX`).
    pending: u64,
    /// Positive zeros met in whole runs of [`ZERO_RUN`] (a ReLU's dead regions), counted
    /// here instead of one by one (they are key 0's).
    zero_runs: u64,
}

/// Values checked at once for being all `+0.0`: where they are, one add counts them
/// (a ReLU's output is zero over whole regions; the per-value increments of key 0 are
/// most of a histogram's time there).
const ZERO_RUN: usize = 16;

impl Tally {
    fn new() -> Tally {
        Tally {
            counts: vec![[0u32; 4]; KEYS]
                .into_boxed_slice()
                .try_into()
                .expect("KEYS counters"),
            pending: 0,
            zero_runs: 0,
        }
    }

    /// Counts `values` (NaNs are skipped); at most `u32::MAX` of them between folds.
    fn add(&mut self, values: &[f32]) {
        self.pending += values.len() as u64;
        let runs = values.chunks_exact(ZERO_RUN);
        let rest = runs.remainder();
        for run in runs {
            // All bits zero: all `+0.0` (an OR over the run, vectorized).
            if run.iter().fold(0u32, |a, v| a | v.to_bits()) == 0 {
                self.zero_runs += ZERO_RUN as u64;
            } else {
                self.count_each(run);
            }
        }
        self.count_each(rest);
    }

    /// Counts `values` one by one (NaNs are skipped).
    #[inline]
    fn count_each(&mut self, values: &[f32]) {
        for (i, &v) in values.iter().enumerate() {
            let bits = v.to_bits();
            if bits & 0x7fff_ffff > 0x7f80_0000 {
                continue; // NaN
            }
            self.counts[(bits >> 18) as usize][i & 3] += 1;
        }
    }

    /// Adds the counts to `h`'s bins (magnitudes below the first bin count as zeros,
    /// above the last one in the last one, as `bin_of` defines) and clears them.
    fn fold_into(&mut self, h: &mut LogHistogram) {
        let first = ((127 + MIN_OCTAVE) as u32) << 5;
        // Key 0 (`+0.0`) is below the first bin: a zero.
        h.zeros += self.zero_runs;
        let mut seen = std::mem::take(&mut self.zero_runs);
        for (key, lanes) in self.counts.iter_mut().enumerate() {
            let n: u64 = lanes.iter().map(|&c| c as u64).sum();
            if n == 0 {
                continue;
            }
            *lanes = [0; 4];
            let m = key as u32 & 0x1fff; // magnitude bits
            if m < first {
                h.zeros += n;
            } else {
                let bin = ((m - first) as usize).min(BINS - 1);
                if key >> 13 == 0 {
                    h.pos[bin] += n;
                } else {
                    h.neg[bin] += n;
                }
            }
            seen += n;
        }
        h.count += seen;
        self.pending = 0;
    }
}

thread_local! {
    /// This thread's spare [`Tally`] (empty), lent to one [`HistogramBuilder`] at a time.
    static SPARE_TALLY: std::cell::Cell<Option<Tally>> = const { std::cell::Cell::new(None) };
}

/// Adds batches of values to a histogram, folding the counts into its bins once, at
/// [`finish`](Self::finish): the caller may compute between batches (e.g. run the next
/// sample while this one's values are still in cache). Borrows the thread's spare
/// [`Tally`] (a nested builder on the same thread allocates its own).
pub(crate) struct HistogramBuilder {
    histogram: LogHistogram,
    tally: Tally,
}

impl HistogramBuilder {
    pub(crate) fn new() -> HistogramBuilder {
        let tally = SPARE_TALLY.with(|t| t.take()).unwrap_or_else(Tally::new);
        HistogramBuilder {
            histogram: LogHistogram::default(),
            tally,
        }
    }

    pub(crate) fn add(&mut self, values: &[f32]) {
        self.histogram.add_to(&mut self.tally, values);
    }

    pub(crate) fn finish(mut self) -> LogHistogram {
        self.tally.fold_into(&mut self.histogram);
        // Empty again: the next builder on this thread reuses it.
        SPARE_TALLY.with(|t| t.set(Some(self.tally)));
        self.histogram
    }
}

impl LogHistogram {
    pub fn add(&mut self, values: &[f32]) {
        let mut b = HistogramBuilder::new();
        b.add(values);
        self.merge(&b.finish());
    }

    /// The range of `values` into `self`, their counts into `tally` (folded into `self`
    /// by the caller, or here before its counters could overflow).
    fn add_to(&mut self, tally: &mut Tally, values: &[f32]) {
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
        // u32 counters: at most 2^30 values between folds.
        const FOLD_AFTER: u64 = 1 << 30;
        for block in values.chunks(FOLD_AFTER as usize) {
            if tally.pending + block.len() as u64 > FOLD_AFTER {
                tally.fold_into(self);
            }
            tally.add(block);
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
    // Counts are integers and the range is a min / max: the result does not depend on
    // how the samples are split. One fold per chunk of samples.
    values
        .par_chunks(8)
        .map(|chunk| {
            let mut b = HistogramBuilder::new();
            for v in chunk {
                b.add(v);
            }
            b.finish()
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold(LogHistogram::default(), |mut a, b| {
            a.merge(&b);
            a
        })
}

/// Adds the mean of each of `sums.len()` planes of one sample to its channel's sum.
pub(crate) fn add_plane_means(values: &[f32], sums: &mut [f64]) {
    let plane = values.len() / sums.len().max(1);
    for (c, s) in sums.iter_mut().enumerate() {
        *s += sum_f64(&values[c * plane..(c + 1) * plane]) / plane as f64;
    }
}

/// Per channel, the mean over positions and samples: `partials` are the plane-mean sums
/// ([`add_plane_means`]) of consecutive chunks of the `samples` samples, added in order,
/// so that the result does not depend on the thread count.
pub(crate) fn mean_of_chunk_sums(partials: &[Vec<f64>], samples: usize) -> Vec<f64> {
    let channels = partials.first().map_or(0, |p| p.len());
    let mut total = vec![0.0; channels];
    for p in partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    let n = samples as f64;
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
        // Runs of `+0.0` (counted a run at a time), one broken by a `-0.0` and one by the
        // smallest subnormal (nonzero bits of either sign).
        values[3000..3100].fill(0.0);
        values[5000..5040].fill(0.0);
        values[5020] = -0.0;
        values[7001..7040].fill(0.0);
        values[7010] = f32::from_bits(1);
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
    fn histogram_of_samples_is_the_sum_of_their_histograms() {
        // More samples than one chunk of `histogram`, so that chunks merge; every sample
        // a different mix of zeros, signs and magnitudes.
        let samples: Vec<Vec<f32>> = (0..19)
            .map(|s| {
                (0..1000 + 37 * s)
                    .map(|i| match (i * 7 + s) % 5 {
                        0 => 0.0,
                        1 => -((i % 97) as f32) * 0.013,
                        _ => ((i * s) % 251) as f32 * 2f32.powi(s - 9),
                    })
                    .collect()
            })
            .collect();
        let all = histogram(&samples);
        let mut one_by_one = LogHistogram::default();
        for v in &samples {
            let mut reference = LogHistogram::default();
            add_reference(&mut reference, v);
            one_by_one.merge(&reference);
        }
        assert_eq!(all.pos, one_by_one.pos);
        assert_eq!(all.neg, one_by_one.neg);
        assert_eq!((all.zeros, all.count), (one_by_one.zeros, one_by_one.count));
        assert_eq!((all.min, all.max), (one_by_one.min, one_by_one.max));
        assert!(all.zeros > 0 && all.neg.iter().sum::<u64>() > 0);
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
