//! Reconstruction (opt-in, `QuantOptions::reconstruct`, `--reconstruct`): after the fast
//! fit of a linear layer, gradient steps (Adam) on the calibration set learn, for every
//! weight, its rounding between the fast fit's level and the next level toward the
//! weight's target (AdaRound's soft rounding: rectified sigmoid, annealed regulariser),
//! the table values (LUT formats) and
//! the biases, so that the layer's output **after its activation and the 8-bit clamp**
//! reproduces the float model's, on the quantized upstream network's activations.
//!
//! The layer is a matrix problem on sampled im2col rows ([`patches`]); the forward and
//! backward passes are hand-written ([`soft`]). The last quarter of the calibration
//! samples is held out: the reconstructed layer, rounded to the contract's integers, is
//! kept only if its exact integer output error on the held-out patches is lower than the
//! fast fit's. The result is an ordinary `QLinear` (codes, int8 tables, i32 biases,
//! the fast fit's shifts and output exponent): backends need no change.
//!
//! `docs/quantization.md` ("Reconstruction") describes the algorithm and its measured
//! cost and gain.

pub(crate) mod block;
mod patches;
pub(crate) mod soft;

use std::time::Instant;

use lutq_interp::{row_major, sgemm, transposed};
use lutq_ir::FusedActivation;
use lutq_ir::int::{IntElem, QLinear, QWeights, Rescale, Rounding};
use rayon::prelude::*;
use serde::Serialize;

use crate::hessian::PatchGeometry;

pub(crate) use patches::Patches;
use soft::{Adam, Regulariser, SoftLayer};

/// Options of the reconstruction.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconstructOptions {
    /// Adam steps per layer.
    pub iterations: usize,
    /// Patch rows per step.
    pub batch: usize,
    /// Most sampled patches per layer (training and held-out together); per block, its
    /// sampled output positions.
    pub max_patches: usize,
    /// Chains of convs (an inverted-residual block's expansion, depthwise and
    /// projection, with its residual Add) are trained as one unit (`block`), each layer's
    /// rounding judged after the activations and roundings downstream of it in the
    /// block; layers in no chain are reconstructed one by one.
    pub blocks: bool,
}

impl Default for ReconstructOptions {
    fn default() -> Self {
        ReconstructOptions {
            iterations: 500,
            batch: 256,
            max_patches: 8192,
            blocks: false,
        }
    }
}

/// What the reconstruction of one layer did (`QuantReport::reconstruction`).
#[derive(Clone, Debug, Serialize)]
pub struct LayerReconstruction {
    pub name: String,
    /// The fast fit's output error on the held-out patches (after the clamp, against
    /// the float model's output), relative to the held-out output energy.
    pub fast_error: f64,
    /// The same for the reconstructed layer, rounded to integers.
    pub reconstructed_error: f64,
    /// Whether the reconstructed layer replaced the fast fit (its held-out error is lower).
    pub kept: bool,
    /// Weights whose integer value differs from the fast fit's.
    pub changed_weights: usize,
    pub seconds: f64,
}

/// One linear layer's problem, as the lowering holds it.
pub(crate) struct LayerData<'a> {
    pub name: &'a str,
    pub geometry: PatchGeometry,
    /// The quantized input of every calibration sample, in real units.
    pub input: &'a [Vec<f32>],
    pub x_exp: i32,
    pub x_elem: IntElem,
    /// The float model's value of the same input (else the quantized input is used).
    pub float_input: Option<&'a [Vec<f32>]>,
    /// The float model's weights `[O][K]` and biases.
    pub float_rows: &'a [f32],
    pub float_bias: &'a [f64],
    /// The rows the fast fit aimed at (float targets or weights): which neighbour of its
    /// fast-fit level each weight may round to.
    pub init_rows: &'a [f32],
    pub act: Option<FusedActivation>,
    pub rounding: Rounding,
    /// LUT formats learn their tables; uniform grids keep them.
    pub learn_tables: bool,
    /// Rows kept as the fast fit made them (constant channels).
    pub frozen_rows: &'a [bool],
    /// Seeds the batch order (deterministic).
    pub seed: u64,
}

/// The float model's output after its activation, per group `[rows][O / groups]`.
pub(crate) fn targets(
    p: &Patches,
    rows: &[f32],
    bias: &[f64],
    act: Option<FusedActivation>,
    groups: usize,
) -> Vec<Vec<f32>> {
    let k = p.k;
    let rpg = bias.len() / groups;
    (0..groups)
        .into_par_iter()
        .map(|g| {
            let mut y = vec![0f32; p.rows * rpg];
            sgemm(
                p.rows,
                rpg,
                k,
                1.0,
                &p.float[g],
                row_major(k),
                &rows[g * rpg * k..(g + 1) * rpg * k],
                transposed(k),
                false,
                &mut y,
                row_major(rpg),
            );
            for r in y.chunks_mut(rpg.max(1)) {
                for (j, v) in r.iter_mut().enumerate() {
                    let z = *v + bias[g * rpg + j] as f32;
                    *v = match act {
                        None => z,
                        Some(FusedActivation::Relu) => z.max(0.0),
                        Some(FusedActivation::Clip { max }) => z.clamp(0.0, max),
                    };
                }
            }
            y
        })
        .collect()
}

/// `Σ (y − T)²` of the integer layer (exactly as the contract computes it) on the
/// patches, and `Σ T²`.
pub(crate) fn exact_error(
    layer: &QLinear,
    p: &Patches,
    t: &[Vec<f32>],
    x_exp: i32,
    out_exp: i32,
    rounding: Rounding,
) -> (f64, f64) {
    let w = layer.weights.decode();
    let o_n = layer.bias.len();
    let groups = p.x.len();
    let rpg = o_n / groups;
    let k = p.k;
    let q: Vec<Vec<i32>> =
        p.x.par_iter()
            .map(|x| {
                x.iter()
                    .map(|&v| (v as f64 * (x_exp as f64).exp2()).round() as i32)
                    .collect()
            })
            .collect();
    let step = (-(out_exp as f64)).exp2();
    let per_row: Vec<(f64, f64)> = (0..o_n)
        .into_par_iter()
        .map(|o| {
            let g = o / rpg;
            let row = &w[o * k..(o + 1) * k];
            let (mut err, mut energy) = (0f64, 0f64);
            for r in 0..p.rows {
                let x = &q[g][r * k..(r + 1) * k];
                let acc: i64 = layer.bias[o] as i64
                    + x.iter().zip(row).map(|(&a, &b)| a * b as i32).sum::<i32>() as i64;
                let y = layer.rescale[o]
                    .apply(acc, rounding)
                    .clamp(layer.lo as i64, layer.hi as i64);
                let target = t[g][r * rpg + o % rpg] as f64;
                err += (y as f64 * step - target).powi(2);
                energy += target * target;
            }
            (err, energy)
        })
        .collect();
    per_row
        .iter()
        .fold((0.0, 0.0), |(a, b), &(e, n)| (a + e, b + n))
}

/// A small deterministic generator (SplitMix64) for the batch order.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Batches of row indices without replacement, reshuffled after each pass over the rows
/// (deterministic for a seed).
pub(crate) struct Batches {
    rng: Rng,
    order: Vec<usize>,
    at: usize,
    size: usize,
}

impl Batches {
    pub fn new(rows: usize, size: usize, seed: u64) -> Batches {
        Batches {
            rng: Rng(seed),
            order: (0..rows).collect(),
            at: rows,
            size,
        }
    }

    pub fn next_batch(&mut self) -> Vec<usize> {
        let mut batch = Vec::with_capacity(self.size);
        while batch.len() < self.size {
            if self.at == self.order.len() {
                for i in (1..self.order.len()).rev() {
                    self.order
                        .swap(i, (self.rng.next() % (i as u64 + 1)) as usize);
                }
                self.at = 0;
            }
            batch.push(self.order[self.at]);
            self.at += 1;
        }
        batch
    }
}

/// The rounding regulariser at step `it` of `iterations`: none during the warm-up, then
/// `β` annealed from 20 to 2.
pub(crate) fn regulariser(it: usize, iterations: usize) -> Option<Regulariser> {
    let warmup = (iterations as f64 * WARMUP) as usize;
    (it >= warmup).then(|| {
        let rel = (it - warmup) as f32 / (iterations - warmup).max(1) as f32;
        Regulariser {
            lambda: LAMBDA,
            beta: BETA.1 + (BETA.0 - BETA.1) * (1.0 - rel).max(0.0),
        }
    })
}

/// The regulariser's weight (AdaRound's default) and the annealing of `β` (20 → 2 after
/// a warm-up of 20 % of the steps without it).
const LAMBDA: f32 = 10.0;
const BETA: (f32, f32) = (20.0, 2.0);
const WARMUP: f64 = 0.2;
/// Adam step sizes: the rounding variables, the table entries (integer units of the
/// scaled domain), the biases (output steps).
/// Starting from the fast fit: how far along the way to the other level each weight
/// starts (`h` = this, or 1 − this).
const INIT_MARGIN: f32 = 0.1;
const LR_V: f32 = 0.03;
const LR_TABLE: f32 = 0.03;
const LR_BIAS_STEPS: f32 = 0.01;

/// The soft layer that starts at `fast`: its tables, scales and biases, each weight `h`
/// = [`INIT_MARGIN`] of the way from its fast-fit level to the next level toward its
/// `init_rows` value (fixed where there is none). Starting from the fast fit (GPTQ with
/// error compensation) instead of AdaRound's start at the float weight: on
/// fashion_resnet8 the latter rounded to 2–6× the fast fit's held-out error in 300
/// steps, the former improved half of the layers.
pub(crate) fn soft_layer(d: &LayerData, fast: &QLinear, out_exp: i32) -> Option<SoftLayer> {
    let [o_n, ..] = fast.weights.shape();
    let k = fast.weights.row_len();
    let (tables, idx): (Vec<Vec<f32>>, Vec<u8>) = match &fast.weights {
        QWeights::Lut { luts, codes, .. } => (
            luts.iter()
                .map(|l| l.iter().map(|&v| v as f32).collect())
                .collect(),
            (0..o_n * k)
                .map(|i| QWeights::code(codes, k, i / k, i % k))
                .collect(),
        ),
        QWeights::Int8 { values, .. } => (
            vec![(-128..=127).map(|v| v as f32).collect()],
            values.iter().map(|&v| (v as i32 + 128) as u8).collect(),
        ),
    };
    let scale: Vec<f32> = fast
        .weight_exps
        .iter()
        .map(|&e| (-(e as f64)).exp2() as f32)
        .collect();
    if scale.iter().any(|s| !s.is_normal()) {
        return None;
    }
    let table_index = |o: usize| if tables.len() == 1 { 0 } else { o };
    // Each table's entries in increasing order (index, value), duplicates once.
    let sorted: Vec<Vec<(u8, f32)>> = tables
        .iter()
        .map(|t| {
            let mut s: Vec<(u8, f32)> = t.iter().enumerate().map(|(i, &v)| (i as u8, v)).collect();
            s.sort_by(|a, b| a.1.total_cmp(&b.1));
            s.dedup_by(|a, b| a.1 == b.1);
            s
        })
        .collect();
    let mut lo = vec![0u8; o_n * k];
    let mut hi = vec![0u8; o_n * k];
    let mut v = vec![0f32; o_n * k];
    let mut frozen_entry: Vec<Vec<bool>> = tables.iter().map(|t| vec![false; t.len()]).collect();
    for (o, &scale_o) in scale.iter().enumerate() {
        let ti = table_index(o);
        let s = &sorted[ti];
        for j in 0..k {
            let i = o * k + j;
            if d.frozen_rows[o] {
                lo[i] = idx[i];
                hi[i] = idx[i];
                frozen_entry[ti][idx[i] as usize] = true;
                continue;
            }
            let t = d.init_rows[i] / scale_o;
            // Between the fast fit's level and its neighbour toward the target.
            let fv = tables[ti][idx[i] as usize];
            let at = s.partition_point(|e| e.1 < fv);
            let other = if t > fv && at + 1 < s.len() {
                Some(s[at + 1])
            } else if t < fv && at > 0 {
                Some(s[at - 1])
            } else {
                None
            };
            match other {
                None => {
                    lo[i] = idx[i];
                    hi[i] = idx[i];
                }
                Some(n) if n.1 > fv => {
                    lo[i] = idx[i];
                    hi[i] = n.0;
                    v[i] = soft::inverse_rect_sigmoid(INIT_MARGIN);
                }
                Some(n) => {
                    lo[i] = n.0;
                    hi[i] = idx[i];
                    v[i] = soft::inverse_rect_sigmoid(1.0 - INIT_MARGIN);
                }
            }
        }
    }
    let step = (-(out_exp as f64)).exp2() as f32;
    let bias = (0..o_n)
        .map(|o| (fast.bias[o] as f64 * (-((d.x_exp + fast.weight_exps[o]) as f64)).exp2()) as f32)
        .collect();
    Some(SoftLayer {
        o_n,
        k,
        groups: d.geometry.groups,
        scale,
        tables,
        learn_tables: d.learn_tables,
        frozen_entry,
        lo,
        hi,
        v,
        bias,
        step,
        clamp: (fast.lo as f32 * step, fast.hi as f32 * step),
        loss_scale: 1.0,
    })
}

/// The integer layer of a trained soft layer: hard rounding, tables and biases rounded.
pub(crate) fn hard_layer(s: &SoftLayer, fast: &QLinear, x_exp: i32) -> QLinear {
    let (o_n, k) = (s.o_n, s.k);
    let pick: Vec<u8> = (0..o_n * k)
        .map(|i| {
            if s.lo[i] != s.hi[i] && soft::rect_sigmoid(s.v[i]).0 >= 0.5 {
                s.hi[i]
            } else {
                s.lo[i]
            }
        })
        .collect();
    let round_table = |t: &Vec<f32>| -> Vec<i8> {
        t.iter()
            .map(|&v| v.round().clamp(-128.0, 127.0) as i8)
            .collect()
    };
    let weights = match &fast.weights {
        QWeights::Lut { shape, luts, .. } => QWeights::Lut {
            shape: *shape,
            luts: if s.learn_tables {
                s.tables
                    .iter()
                    .map(|t| round_table(t).try_into().expect("16 entries"))
                    .collect()
            } else {
                luts.clone()
            },
            codes: QWeights::pack_codes(o_n, k, &pick),
        },
        QWeights::Int8 { shape, .. } => QWeights::Int8 {
            shape: *shape,
            values: pick.iter().map(|&i| (i as i32 - 128) as i8).collect(),
        },
    };
    let bias = (0..o_n)
        .map(|o| {
            let b = s.bias[o] as f64 * ((x_exp + fast.weight_exps[o]) as f64).exp2();
            b.round().clamp(i32::MIN as f64, i32::MAX as f64) as i32
        })
        .collect();
    QLinear {
        weights,
        bias,
        ..fast.clone()
    }
}

/// Trains `soft` on the patches for `iterations` Adam steps.
pub(crate) fn train(
    soft: &mut SoftLayer,
    train: &Patches,
    t: &[Vec<f32>],
    options: &ReconstructOptions,
    seed: u64,
) {
    let b = options.batch.min(train.rows).max(1);
    let k = train.k;
    let rpg = soft.o_n / soft.groups;
    let mut adam_v = Adam::new(soft.v.len(), LR_V);
    let mut adam_b = Adam::new(soft.o_n, LR_BIAS_STEPS * soft.step);
    let mut adam_t: Vec<Adam> = soft
        .tables
        .iter()
        .map(|t| Adam::new(t.len(), LR_TABLE))
        .collect();
    // The error term relative to the starting point's on (up to 4096) training rows.
    let probe = train.rows.min(4096);
    let rows: Vec<Vec<f32>> = train.x.iter().map(|x| x[..probe * k].to_vec()).collect();
    let targets: Vec<Vec<f32>> = t.iter().map(|t| t[..probe * rpg].to_vec()).collect();
    soft.loss_scale = 1.0;
    let (start, _) = soft.loss_and_grad(&rows, &targets, probe, None);
    soft.loss_scale = if start > 0.0 {
        (1.0 / start) as f32
    } else {
        1.0
    };
    let mut batches = Batches::new(train.rows, b, seed);
    for it in 0..options.iterations {
        let batch = batches.next_batch();
        let (xb, tb): (Vec<Vec<f32>>, Vec<Vec<f32>>) = (0..soft.groups)
            .into_par_iter()
            .map(|g| {
                let mut x = Vec::with_capacity(b * k);
                let mut y = Vec::with_capacity(b * rpg);
                for &r in &batch {
                    x.extend_from_slice(&train.x[g][r * k..(r + 1) * k]);
                    y.extend_from_slice(&t[g][r * rpg..(r + 1) * rpg]);
                }
                (x, y)
            })
            .unzip();
        let (_, grads) = soft.loss_and_grad(&xb, &tb, b, regulariser(it, options.iterations));
        adam_v.step(&mut soft.v, &grads.v);
        adam_b.step(&mut soft.bias, &grads.bias);
        if soft.learn_tables {
            for ((a, t), g) in adam_t.iter_mut().zip(&mut soft.tables).zip(&grads.tables) {
                a.step(t, g);
            }
        }
    }
}

/// Reconstructs one linear layer after its fast fit `fast` (output exponent `out_exp`).
/// `None` when the layer is not reconstructed (a `*-pc` rescale, fewer sampled patch
/// rows than the layer's fan-in);
/// otherwise the report and, if it beats the fast fit on the held-out patches, the new
/// layer.
pub(crate) fn reconstruct_linear(
    d: &LayerData,
    fast: &QLinear,
    out_exp: i32,
    options: &ReconstructOptions,
) -> Option<(Option<QLinear>, LayerReconstruction)> {
    let start = Instant::now();
    if !fast.rescale.iter().all(|r| matches!(r, Rescale::Shift(_))) || options.iterations == 0 {
        return None;
    }
    let n = d.input.len();
    if n < 2 {
        return None;
    }
    let held_n = (n / 4).max(1);
    let fit_n = n - held_n;
    let float: Vec<&[f32]> = match d.float_input {
        Some(f) => f.iter().map(Vec::as_slice).collect(),
        None => d.input.iter().map(Vec::as_slice).collect(),
    };
    let budget = |m: usize| (options.max_patches * m).div_ceil(n);
    let train_p = patches::sample(
        &d.geometry,
        &d.input[..fit_n],
        &float[..fit_n],
        budget(fit_n),
    );
    let held_p = patches::sample(
        &d.geometry,
        &d.input[fit_n..],
        &float[fit_n..],
        budget(held_n),
    );
    // Fewer patch rows than inputs leave the layer's matrix problem underdetermined:
    // the rounding would fit the training rows, not the layer (MobileNetV2's classifier
    // at 64 images: 48 rows for 1280 inputs changed 64 % of its weights and lost on the
    // held-out samples).
    if train_p.rows < train_p.k {
        return None;
    }
    let groups = d.geometry.groups;
    let t_train = targets(&train_p, d.float_rows, d.float_bias, d.act, groups);
    let t_held = targets(&held_p, d.float_rows, d.float_bias, d.act, groups);

    let mut soft = soft_layer(d, fast, out_exp)?;
    train(&mut soft, &train_p, &t_train, options, d.seed);
    let candidate = hard_layer(&soft, fast, d.x_exp);
    let (fast_err, energy) = exact_error(fast, &held_p, &t_held, d.x_exp, out_exp, d.rounding);
    // The exact error sums in i32, which only a layer within the overflow proof allows.
    let fits = lutq_ir::int::accumulator_bound(&candidate, d.x_elem).rescaled <= i32::MAX as i64;
    let rec_err = if fits {
        exact_error(&candidate, &held_p, &t_held, d.x_exp, out_exp, d.rounding).0
    } else {
        f64::INFINITY
    };
    let kept = fits && rec_err < fast_err;
    let changed_weights = fast
        .weights
        .decode()
        .iter()
        .zip(candidate.weights.decode())
        .filter(|(a, b)| **a != *b)
        .count();
    let energy = energy.max(f64::MIN_POSITIVE);
    let report = LayerReconstruction {
        name: d.name.to_string(),
        fast_error: fast_err / energy,
        reconstructed_error: rec_err / energy,
        kept,
        changed_weights,
        seconds: start.elapsed().as_secs_f64(),
    };
    Some((kept.then_some(candidate), report))
}

#[cfg(test)]
mod tests;
