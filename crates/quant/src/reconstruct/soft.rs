//! The layer being reconstructed, with soft rounding: forward pass, loss and the
//! hand-written backward pass (checked against finite differences in the tests).
//!
//! Weight `(o, k)` of row `o` (scale `s_o = 2^-e_o`, table `t` of the row) is
//! `w = s_o · (t[lo] + h(v) · (t[hi] − t[lo]))`, `lo`/`hi` the indices of the two table
//! levels that bracket it and `h(v) = clamp(σ(v) · (ζ − γ) + γ, 0, 1)` AdaRound's
//! rectified sigmoid. Per group of the layer, on a batch of `B` patch rows `X` (`B × K`):
//! `Y = X Wᵀ + b`, `Ŷ = clamp(Y, lo, hi)` (the fused activation and the 8-bit range, in
//! real units), and the loss is the mean of `((Ŷ − T) / step)²` over the batch and the
//! outputs (`T` the float model's output after its activation, `step` the output's
//! quantization step), plus the rounding regulariser `λ / O · Σ (1 − |2h − 1|^β)`.

use lutq_interp::{row_major, sgemm, transposed};
use rayon::prelude::*;

/// AdaRound's stretch of the sigmoid: `h` reaches 0 and 1 at finite `v`.
pub(crate) const ZETA: f32 = 1.1;
pub(crate) const GAMMA: f32 = -0.1;

/// `h(v)` and `dh/dv` (zero where the clamp is active).
#[inline]
pub(crate) fn rect_sigmoid(v: f32) -> (f32, f32) {
    let s = 1.0 / (1.0 + (-v).exp());
    let h = s * (ZETA - GAMMA) + GAMMA;
    if h <= 0.0 {
        (0.0, 0.0)
    } else if h >= 1.0 {
        (1.0, 0.0)
    } else {
        (h, s * (1.0 - s) * (ZETA - GAMMA))
    }
}

/// The `v` with `h(v) = h` (`h` kept inside `(0, 1)` so that it can still move).
pub(crate) fn inverse_rect_sigmoid(h: f32) -> f32 {
    let h = h.clamp(0.01, 0.99);
    let s = (h - GAMMA) / (ZETA - GAMMA);
    (s / (1.0 - s)).ln()
}

/// The learnable layer: rows `[O][K]`, `groups` groups of `O / groups` rows each reading
/// their own patches.
#[derive(Clone, Debug)]
pub(crate) struct SoftLayer {
    pub o_n: usize,
    pub k: usize,
    pub groups: usize,
    /// Per row: `2^-e_o`.
    pub scale: Vec<f32>,
    /// One table for the layer, or one per row (levels in the scaled domain).
    pub tables: Vec<Vec<f32>>,
    /// Whether the tables are learned (LUT formats; uniform grids are fixed).
    pub learn_tables: bool,
    /// Entries that must keep their value (read by rows kept as they are).
    pub frozen_entry: Vec<Vec<bool>>,
    /// Per weight: the two levels it lies between (equal: the weight is fixed).
    pub lo: Vec<u8>,
    pub hi: Vec<u8>,
    pub v: Vec<f32>,
    /// Per row, in real units.
    pub bias: Vec<f32>,
    /// The output's quantization step.
    pub step: f32,
    /// The output clamp in real units.
    pub clamp: (f32, f32),
    /// Multiplies the output error term (so that it starts near 1 whatever the layer's
    /// scale, and the regulariser's weight means the same in every layer).
    pub loss_scale: f32,
}

/// Gradients of the loss, shaped like the parameters.
pub(crate) struct Grads {
    pub v: Vec<f32>,
    pub tables: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
}

/// The rounding regulariser's weight and exponent for one step (`None`: warm-up).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Regulariser {
    pub lambda: f32,
    pub beta: f32,
}

impl SoftLayer {
    pub fn table_index(&self, o: usize) -> usize {
        if self.tables.len() == 1 { 0 } else { o }
    }

    fn rows_per_group(&self) -> usize {
        self.o_n / self.groups
    }

    /// The weights, `[O][K]`: soft (`h(v)`), or hard (`h ≥ ½` picks `hi`).
    pub fn weights(&self, hard: bool) -> Vec<f32> {
        let mut w = vec![0f32; self.o_n * self.k];
        w.par_chunks_mut(self.k.max(1))
            .enumerate()
            .with_min_len(64)
            .for_each(|(o, row)| {
                let t = &self.tables[self.table_index(o)];
                let s = self.scale[o];
                for (j, w) in row.iter_mut().enumerate() {
                    let i = o * self.k + j;
                    let (l, u) = (t[self.lo[i] as usize], t[self.hi[i] as usize]);
                    let h = if self.lo[i] == self.hi[i] {
                        0.0
                    } else if hard {
                        if rect_sigmoid(self.v[i]).0 >= 0.5 {
                            1.0
                        } else {
                            0.0
                        }
                    } else {
                        rect_sigmoid(self.v[i]).0
                    };
                    *w = s * (l + h * (u - l));
                }
            });
        w
    }

    /// Work units: row ranges inside one group (a group's rows, or chunks of a single
    /// group's rows), so that they run in parallel and write disjoint rows.
    fn units(&self) -> Vec<(usize, usize, usize)> {
        let rpg = self.rows_per_group();
        if self.groups == 1 {
            let chunk = 32;
            (0..rpg.div_ceil(chunk))
                .map(|c| (0, c * chunk, ((c + 1) * chunk).min(rpg)))
                .collect()
        } else {
            (0..self.groups)
                .map(|g| (g, g * rpg, (g + 1) * rpg))
                .collect()
        }
    }

    /// Loss and gradients on a batch: `x[g]` (`B × K`) the quantized input's patches of
    /// group `g`, `t[g]` (`B × O/groups`) the targets of the group's rows.
    pub fn loss_and_grad(
        &self,
        x: &[Vec<f32>],
        t: &[Vec<f32>],
        b: usize,
        reg: Option<Regulariser>,
    ) -> (f64, Grads) {
        let k = self.k;
        let rpg = self.rows_per_group();
        let w = self.weights(false);
        let norm = 2.0 * self.loss_scale / (self.step * self.step * (b * self.o_n) as f32);
        let (lo, hi) = self.clamp;
        // Per unit: (loss, dL/dW rows, dL/db rows).
        let parts: Vec<(f64, Vec<f32>, Vec<f32>)> = self
            .units()
            .into_par_iter()
            .map(|(g, o0, o1)| {
                let nr = o1 - o0;
                let mut y = vec![0f32; b * nr];
                sgemm(
                    b,
                    nr,
                    k,
                    1.0,
                    &x[g],
                    row_major(k),
                    &w[o0 * k..o1 * k],
                    transposed(k),
                    false,
                    &mut y,
                    row_major(nr),
                );
                let mut loss = 0f64;
                let mut gb = vec![0f32; nr];
                let first = o0 - g * rpg;
                for p in 0..b {
                    for j in 0..nr {
                        let v = y[p * nr + j] + self.bias[o0 + j];
                        let e = v.clamp(lo, hi) - t[g][p * rpg + first + j];
                        loss += (e as f64) * (e as f64);
                        let gy = if v > lo && v < hi { norm * e } else { 0.0 };
                        y[p * nr + j] = gy;
                        gb[j] += gy;
                    }
                }
                let mut gw = vec![0f32; nr * k];
                sgemm(
                    nr,
                    k,
                    b,
                    1.0,
                    &y,
                    transposed(nr),
                    &x[g],
                    row_major(k),
                    false,
                    &mut gw,
                    row_major(k),
                );
                (loss, gw, gb)
            })
            .collect();
        let loss = parts.iter().map(|p| p.0).sum::<f64>() * self.loss_scale as f64
            / (self.step as f64).powi(2)
            / (b * self.o_n) as f64;
        let mut gw = Vec::with_capacity(self.o_n * k);
        let mut gbias = Vec::with_capacity(self.o_n);
        for (_, w, b) in parts {
            gw.extend(w);
            gbias.extend(b);
        }
        let (reg_loss, grads) = self.parameter_grads(&gw, gbias, reg);
        (loss + reg_loss, grads)
    }

    /// The chain rule from `∂L/∂W` (`gw`, `[O][K]`) into `v`, the tables and the
    /// regulariser, row by row; `gbias` (`∂L/∂b`) passes through. Returns the
    /// regulariser's loss with the gradients (which include its gradient).
    pub fn parameter_grads(
        &self,
        gw: &[f32],
        gbias: Vec<f32>,
        reg: Option<Regulariser>,
    ) -> (f64, Grads) {
        let k = self.k;
        let mut loss = 0f64;
        let tsize: Vec<usize> = self.tables.iter().map(Vec::len).collect();
        let rows: Vec<(f64, Vec<f32>, Vec<f32>)> = (0..self.o_n)
            .into_par_iter()
            .map(|o| {
                let ti = self.table_index(o);
                let t = &self.tables[ti];
                let s = self.scale[o];
                let mut gv = vec![0f32; k];
                let mut gt = vec![0f32; if self.learn_tables { tsize[ti] } else { 0 }];
                let mut reg_loss = 0f64;
                #[allow(clippy::needless_range_loop)] // j indexes weights, v and gv alike
                for j in 0..k {
                    let i = o * k + j;
                    let gwi = gw[i] * s;
                    let (li, ui) = (self.lo[i] as usize, self.hi[i] as usize);
                    if li == ui {
                        if self.learn_tables {
                            gt[li] += gwi;
                        }
                        continue;
                    }
                    let (h, dh) = rect_sigmoid(self.v[i]);
                    let mut dldh = gwi * (t[ui] - t[li]);
                    if let Some(r) = reg {
                        let c = 2.0 * h - 1.0;
                        let a = c.abs();
                        reg_loss += (r.lambda / self.o_n as f32 * (1.0 - a.powf(r.beta))) as f64;
                        dldh -= r.lambda / self.o_n as f32
                            * r.beta
                            * a.powf(r.beta - 1.0)
                            * c.signum()
                            * 2.0;
                    }
                    gv[j] = dldh * dh;
                    if self.learn_tables {
                        gt[li] += gwi * (1.0 - h);
                        gt[ui] += gwi * h;
                    }
                }
                (reg_loss, gv, gt)
            })
            .collect();
        let mut grads = Grads {
            v: Vec::with_capacity(self.o_n * k),
            tables: tsize.iter().map(|&n| vec![0f32; n]).collect(),
            bias: gbias,
        };
        for (o, (r, gv, gt)) in rows.into_iter().enumerate() {
            loss += r;
            grads.v.extend(gv);
            if self.learn_tables {
                let ti = self.table_index(o);
                for (a, b) in grads.tables[ti].iter_mut().zip(gt) {
                    *a += b;
                }
            }
        }
        for (g, f) in grads.tables.iter_mut().zip(&self.frozen_entry) {
            for (g, &f) in g.iter_mut().zip(f) {
                if f {
                    *g = 0.0;
                }
            }
        }
        (loss, grads)
    }
}

/// Adam (Kingma & Ba) over one parameter vector.
pub(crate) struct Adam {
    m: Vec<f32>,
    s: Vec<f32>,
    t: i32,
    lr: f32,
}

impl Adam {
    pub fn new(n: usize, lr: f32) -> Adam {
        Adam {
            m: vec![0.0; n],
            s: vec![0.0; n],
            t: 0,
            lr,
        }
    }

    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        self.t += 1;
        let c1 = 1.0 - B1.powi(self.t);
        let c2 = 1.0 - B2.powi(self.t);
        let lr = self.lr;
        params
            .par_iter_mut()
            .zip(self.m.par_iter_mut())
            .zip(self.s.par_iter_mut())
            .zip(grads.par_iter())
            .with_min_len(4096)
            .for_each(|(((p, m), s), &g)| {
                *m = B1 * *m + (1.0 - B1) * g;
                *s = B2 * *s + (1.0 - B2) * g * g;
                *p -= lr * (*m / c1) / ((*s / c2).sqrt() + 1e-8);
            });
    }
}
