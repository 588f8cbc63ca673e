//! What the charts draw: histograms of weights and activations, the arena's blocks, and
//! the Cortex-M4 instruction model. Binning and the model are the only computations of
//! this crate; the values binned come from the quantized program and the float model.

use lutq_backend_c::{ArenaBlocks, LayerKind};
use lutq_ir::int::{IntElem, IntGraph, QLinear, QWeights};
use serde::{Deserialize, Serialize};

/// Bins a weight histogram has (fewer if the values span fewer integer steps).
pub const WEIGHT_BINS: usize = 64;
/// Bins an activation histogram has at most.
pub const ACTIVATION_BINS: usize = 64;

/// The Cortex-M4 instruction model: instructions per MAC by weight format and layer
/// kind, pooled over the models of `docs/results.md`'s per-layer-kind profile table
/// (`cargo xtask mcu --samples 20 --write docs/results.md`, QEMU Cortex-M4, DSP path),
/// read when lutq is built, so the estimate follows the last measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct M4Model {
    /// `(format, kind) → (MACs, instructions)` summed over the table's models.
    sums: Vec<((WeightFormat, LayerKind), (u64, u64))>,
    /// Instructions of the kinds without MACs (adds, pools, other ops) over those of
    /// the linear kinds: what a whole inference adds to its layers.
    pub overhead: f64,
    /// Models the table measured.
    pub models: usize,
}

/// The two weight formats the profile table measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// 4-bit codes through a table (`lut4`, `int4`).
    Codes,
    Int8,
}

impl WeightFormat {
    /// The quantizer report's name of a layer's weights (`lut4`, `int4`, `int8`).
    pub fn of(weights: &str) -> WeightFormat {
        if weights == "int8" {
            WeightFormat::Int8
        } else {
            WeightFormat::Codes
        }
    }
}

/// The profile table lutq was built with.
const RESULTS_MD: &str = include_str!("../../../docs/results.md");

impl M4Model {
    /// The model of the `docs/results.md` lutq was built with.
    pub fn measured() -> &'static M4Model {
        static MODEL: std::sync::OnceLock<M4Model> = std::sync::OnceLock::new();
        MODEL.get_or_init(|| {
            M4Model::parse(RESULTS_MD)
                .expect("docs/results.md holds the mcu section's per-layer-kind table")
        })
    }

    /// Reads the per-layer-kind table of the mcu section of a `docs/results.md` text:
    /// rows `| model | mode | kind | layers | MACs | M4 instr | …`, `mode` naming the
    /// weight format (`int8-…` or a 4-bit mode). `None` when there is no such row.
    pub fn parse(results_md: &str) -> Option<M4Model> {
        let begin = results_md.find("<!-- begin mcu -->")?;
        let section = &results_md[begin..];
        let section = &section[..section.find("<!-- end mcu -->")?];
        let mut sums: Vec<((WeightFormat, LayerKind), (u64, u64))> = Vec::new();
        let mut models: Vec<&str> = Vec::new();
        for line in section.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // ["", model, mode, kind, layers, MACs, instr, …]
            let (Some(kind), Some(macs), Some(instr)) = (
                cells.get(3).and_then(|k| LayerKind::from_name(k)),
                cells.get(5).and_then(|m| m.parse::<u64>().ok()),
                cells.get(6).and_then(|i| i.parse::<u64>().ok()),
            ) else {
                continue;
            };
            let format = if cells[2].starts_with("int8") {
                WeightFormat::Int8
            } else {
                WeightFormat::Codes
            };
            if !models.contains(&cells[1]) {
                models.push(cells[1]);
            }
            match sums.iter_mut().find(|(k, _)| *k == (format, kind)) {
                Some((_, (m, i))) => {
                    *m += macs;
                    *i += instr;
                }
                None => sums.push(((format, kind), (macs, instr))),
            }
        }
        let total = |linear: bool| -> u64 {
            sums.iter()
                .filter(|((_, k), _)| k.is_linear() == linear)
                .map(|(_, (_, i))| i)
                .sum()
        };
        let (linear, rest) = (total(true), total(false));
        if linear == 0 {
            return None;
        }
        Some(M4Model {
            sums,
            overhead: rest as f64 / linear as f64,
            models: models.len(),
        })
    }

    /// Instructions per MAC of a `kind` layer with `format` weights: the table's pooled
    /// figure, or the format's pooled figure over every linear kind where the table has
    /// no such layer.
    pub fn per_mac(&self, format: WeightFormat, kind: LayerKind) -> f64 {
        let pooled = |keep: &dyn Fn(&(WeightFormat, LayerKind)) -> bool| {
            let (m, i) = self
                .sums
                .iter()
                .filter(|(k, _)| keep(k))
                .fold((0u64, 0u64), |(m, i), (_, (dm, di))| (m + dm, i + di));
            (m > 0).then(|| i as f64 / m as f64)
        };
        pooled(&|k| *k == (format, kind))
            .or_else(|| pooled(&|(f, k)| *f == format && k.is_linear()))
            .unwrap_or(2.0)
    }
}

/// Values in equal bins: `counts[i]` of them in `[lo + i·w, lo + (i + 1)·w)`,
/// `w = (hi − lo) / counts.len()`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
}

impl Histogram {
    /// `values` in `bins` bins over `[lo, hi]` (the last bin holds `hi`).
    fn of(values: impl Iterator<Item = f64>, lo: f64, hi: f64, bins: usize) -> Histogram {
        let mut counts = vec![0u64; bins];
        let w = (hi - lo) / bins as f64;
        for v in values {
            let i = ((v - lo) / w).floor();
            counts[(i.max(0.0) as usize).min(bins - 1)] += 1;
        }
        Histogram { lo, hi, counts }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A layer's weights against its table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightHistogram {
    /// Of `w · 2^f_w[o]`: each float weight (as the quantizer fitted it) times its output
    /// channel's exponent, i.e. in the units of the int8 table entries (int8 weights: of
    /// the int8 values), so one table's levels apply to every channel.
    pub hist: Histogram,
    /// The distinct table entries, ascending, each with the number of output channels
    /// whose table holds it (a table per layer: every channel). Empty for int8 weights.
    pub levels: Vec<Level>,
}

/// One table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    pub value: i32,
    pub channels: usize,
}

impl WeightHistogram {
    /// `rows`: the float weights as `[O][K]` rows (`lutq_quant::linear_weights`);
    /// `None` if they do not match the layer's shape.
    pub fn of(l: &QLinear, rows: &[f32]) -> Option<WeightHistogram> {
        let o_n = l.weights.shape()[0];
        let k = l.weights.row_len();
        if rows.len() != o_n * k || l.weight_exps.len() != o_n || rows.is_empty() {
            return None;
        }
        let scaled = || {
            rows.chunks(k)
                .zip(&l.weight_exps)
                .flat_map(|(row, &e)| row.iter().map(move |&w| w as f64 * (e as f64).exp2()))
        };
        let mut levels: Vec<Level> = Vec::new();
        if let QWeights::Lut { luts, .. } = &l.weights {
            let per_table = if luts.len() == 1 { o_n } else { 1 };
            for lut in luts {
                let mut values: Vec<i32> = lut.iter().map(|&v| v as i32).collect();
                values.sort_unstable();
                values.dedup();
                for v in values {
                    match levels.iter_mut().find(|l| l.value == v) {
                        Some(l) => l.channels += per_table,
                        None => levels.push(Level {
                            value: v,
                            channels: per_table,
                        }),
                    }
                }
            }
            levels.sort_by_key(|l| l.value);
        }
        let (mut lo, mut hi) = scaled().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        for l in &levels {
            lo = lo.min(l.value as f64);
            hi = hi.max(l.value as f64);
        }
        // Whole steps, half a step of margin: a level never sits on the frame.
        let (lo, hi) = ((lo - 0.5).floor(), (hi + 0.5).ceil());
        let bins = WEIGHT_BINS.min((hi - lo) as usize).max(1);
        Some(WeightHistogram {
            hist: Histogram::of(scaled(), lo, hi, bins),
            levels,
        })
    }
}

/// An activation's float values, counted per quantization step of its integer type while
/// the float model runs (one pass, no values kept): [`ActivationCounts::finish`] bins
/// them for the chart.
#[derive(Clone, Debug)]
pub struct ActivationCounts {
    exp: i32,
    lo: i32,
    hi: i32,
    /// Codes `−RANGE ..= RANGE`.
    counts: Vec<u64>,
    below: u64,
    above: u64,
}

impl ActivationCounts {
    /// Steps counted either side of zero; values beyond land in the edge bins.
    pub const RANGE: i64 = 8192;

    /// For the output of a linear node of `graph` (`None`: not 8-bit, nothing clamps it
    /// to a small range).
    pub fn for_node(graph: &IntGraph, node: usize) -> Option<ActivationCounts> {
        let n = &graph.nodes[node];
        let lutq_ir::int::IntOp::Linear(l) = &n.op else {
            return None;
        };
        if n.ty.elem == IntElem::I32 {
            return None;
        }
        Some(ActivationCounts {
            exp: n.ty.exp,
            lo: l.lo,
            hi: l.hi,
            counts: vec![0; 2 * Self::RANGE as usize + 1],
            below: 0,
            above: 0,
        })
    }

    /// Counts `values` (float activations of the tensor).
    pub fn add(&mut self, values: &[f32]) {
        let scale = (self.exp as f64).exp2();
        for &v in values {
            let q = (v as f64 * scale).round();
            if q < -(Self::RANGE as f64) || q.is_nan() {
                self.below += 1;
            } else if q > Self::RANGE as f64 {
                self.above += 1;
            } else {
                self.counts[(q as i64 + Self::RANGE) as usize] += 1;
            }
        }
    }

    /// The chart's data: at most [`ACTIVATION_BINS`] bins of whole steps over the values
    /// and the clamp range, in real units.
    pub fn finish(&self, samples: usize) -> Option<ActivationHistogram> {
        let r = Self::RANGE;
        let code = |i: usize| i as i64 - r;
        let first = if self.below > 0 {
            Some(-r)
        } else {
            self.counts.iter().position(|&c| c > 0).map(code)
        };
        let last = if self.above > 0 {
            Some(r)
        } else {
            self.counts.iter().rposition(|&c| c > 0).map(code)
        };
        let (first, last) = (first?, last?);
        let a = first.min(self.lo as i64);
        let b = last.max(self.hi as i64);
        let span = (b - a + 1) as usize;
        let width = span.div_ceil(ACTIVATION_BINS);
        let bins = span.div_ceil(width);
        let mut counts = vec![0u64; bins];
        for (i, &c) in self.counts.iter().enumerate() {
            let q = code(i);
            if c > 0 {
                counts[((q - a) as usize / width).min(bins - 1)] += c;
            }
        }
        counts[0] += self.below;
        counts[bins - 1] += self.above;
        let step = (-(self.exp as f64)).exp2();
        let outside: u64 = self
            .counts
            .iter()
            .enumerate()
            .filter(|&(i, _)| code(i) < self.lo as i64 || code(i) > self.hi as i64)
            .map(|(_, &c)| c)
            .sum::<u64>()
            + self.below
            + self.above;
        let total = self.counts.iter().sum::<u64>() + self.below + self.above;
        Some(ActivationHistogram {
            hist: Histogram {
                lo: (a as f64 - 0.5) * step,
                hi: (a as f64 - 0.5 + (bins * width) as f64) * step,
                counts,
            },
            samples,
            clamp: [self.lo as f64 * step, self.hi as f64 * step],
            clipped: outside as f64 / total.max(1) as f64,
            beyond: self.below + self.above,
        })
    }
}

/// A linear layer's float output (as the float model computes it on the per-layer
/// samples) against the range its integer type and fused activation clamp it to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivationHistogram {
    /// In real units; each bin holds whole quantization steps (`2^−f_y`).
    pub hist: Histogram,
    /// Samples the values come from.
    pub samples: usize,
    /// `[lo · 2^−f_y, hi · 2^−f_y]`: what the integer output can hold.
    pub clamp: [f64; 2],
    /// Fraction of the values outside the clamp range (clipped by quantization).
    pub clipped: f64,
    /// Values beyond ±[`ActivationCounts::RANGE`] steps, counted in the edge bins.
    pub beyond: u64,
}

/// The arena over the schedule, as the generated C uses it
/// ([`lutq_backend_c::arena_blocks`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArenaUse {
    pub arena_bytes: usize,
    /// The most activation bytes live at one step.
    pub lower_bound: usize,
    /// Steps of the schedule (nodes of the program).
    pub steps: usize,
    /// Activation buffers, then kernel scratch.
    pub blocks: Vec<ArenaBlock>,
    /// Per step: bytes of the blocks live at that step (scratch included).
    pub occupancy: Vec<usize>,
}

/// One block: bytes `offset..offset + size`, live during steps `start..=end`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArenaBlock {
    /// The node whose output (or whose kernel's scratch) it holds.
    pub name: String,
    pub op: String,
    pub scratch: bool,
    pub offset: usize,
    pub size: usize,
    pub start: usize,
    pub end: usize,
}

impl ArenaUse {
    pub fn of(graph: &IntGraph, a: &ArenaBlocks) -> ArenaUse {
        let blocks: Vec<ArenaBlock> = a
            .blocks
            .iter()
            .filter(|b| b.size > 0)
            .map(|b| ArenaBlock {
                name: graph.nodes[b.node].name.clone(),
                op: graph.nodes[b.node].op.name().to_string(),
                scratch: b.scratch,
                offset: b.offset,
                size: b.size,
                start: b.start,
                end: b.end,
            })
            .collect();
        let steps = blocks
            .iter()
            .map(|b| b.end + 1)
            .max()
            .unwrap_or(0)
            .max(graph.nodes.len());
        let occupancy = (0..steps)
            .map(|t| {
                blocks
                    .iter()
                    .filter(|b| b.start <= t && t <= b.end)
                    .map(|b| b.size)
                    .sum()
            })
            .collect();
        ArenaUse {
            arena_bytes: a.arena_size,
            lower_bound: a.lower_bound,
            steps,
            blocks,
            occupancy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_counts_bin_whole_steps_and_count_the_clipped() {
        // exp 2: step 0.25; clamp [0, 127] (a fused ReLU).
        let mut c = ActivationCounts {
            exp: 2,
            lo: 0,
            hi: 127,
            counts: vec![0; 2 * ActivationCounts::RANGE as usize + 1],
            below: 0,
            above: 0,
        };
        c.add(&[-1.0, 0.0, 0.1, 10.0, 40.0, 1e9]);
        let h = c.finish(1).unwrap();
        assert_eq!(h.hist.total(), 6);
        assert_eq!(h.beyond, 1);
        // -1.0 (code -4) and 40.0 (code 160) and 1e9 lie outside [0, 127].
        assert!((h.clipped - 3.0 / 6.0).abs() < 1e-12);
        assert_eq!(h.clamp, [0.0, 127.0 * 0.25]);
        assert!(h.hist.lo <= -1.0 && h.hist.hi >= ActivationCounts::RANGE as f64 * 0.25);
        assert!(h.hist.counts.len() <= ACTIVATION_BINS);
    }

    #[test]
    fn weight_levels_count_the_channels_that_use_them() {
        let mut lut = [0i8; 16];
        for (i, v) in lut.iter_mut().enumerate() {
            *v = (i as i8 - 8) * 3;
        }
        let mut other = lut;
        other[0] = 100;
        let l = QLinear {
            conv: None,
            weights: QWeights::Lut {
                shape: [2, 3, 1, 1],
                luts: vec![lut, other],
                codes: vec![0; 4],
            },
            bias: vec![0; 2],
            rescale: vec![lutq_ir::int::Rescale::Shift(0); 2],
            lo: -128,
            hi: 127,
            weight_exps: vec![4, 5],
        };
        let h = WeightHistogram::of(&l, &[0.5, -0.5, 1.0, 0.25, 0.0, -1.0]).unwrap();
        assert_eq!(
            h.levels.len(),
            17,
            "15 shared entries, -24 and 100 once each"
        );
        assert_eq!(h.levels.iter().filter(|l| l.channels == 2).count(), 15);
        assert_eq!(h.levels.last().unwrap().value, 100);
        assert_eq!(h.hist.total(), 6);
        // Channel 1's 0.25 · 2^5 = 8 and channel 0's -0.5 · 2^4 = -8 are in range.
        assert!(h.hist.lo <= -32.0 && h.hist.hi >= 100.0);
        assert!(WeightHistogram::of(&l, &[0.0; 5]).is_none(), "wrong length");
    }
}
