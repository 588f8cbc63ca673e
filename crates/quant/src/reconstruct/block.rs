//! Block reconstruction: a chain of linear layers (an inverted-residual block's
//! expansion, depthwise and projection convs; a basic block's two convs), optionally
//! ending in a residual Add of the chain's input, trained as one unit, so that each
//! layer's rounding is judged by its effect after the activations and roundings
//! downstream of it in the block (BRECQ, Li et al. 2021), which per-layer
//! reconstruction cannot see.
//!
//! The block is a problem on sampled output positions. A position of the last layer's
//! output reads a window of the layer before it, and so on back to a window of the
//! block's input (the receptive field: a 3×3 depthwise conv between two 1×1 convs reads
//! 3×3 of the input). A batch of positions is then a batch of small *valid*
//! convolutions, one per window: im2col and one GEMM per group forward, the transposed
//! GEMMs and col2im backward, all hand-written here. Window cells outside their map are
//! the padding the network's conv reads there: zero, whatever the layer before would
//! compute at that place, and without gradient.
//!
//! Between layers every output is rounded to its 8-bit grid and clamped, as the integer
//! program does, with the straight-through estimator (the gradient passes the rounding
//! and stops at the clamp). The block's output is clamped, not rounded, and compared
//! with the float model's output of the block (after the residual Add).

use lutq_interp::{row_major, sgemm, transposed};
use rayon::prelude::*;

use super::soft::{Adam, Grads, Regulariser, SoftLayer};
use super::{Batches, LR_BIAS_STEPS, LR_TABLE, LR_V, ReconstructOptions, regulariser};
use crate::hessian::PatchGeometry;

/// One layer of a block: its input geometry and its learnable weights.
pub(crate) struct ChainLayer {
    pub geometry: PatchGeometry,
    pub soft: SoftLayer,
}

/// A chain of layers, each reading the one before.
pub(crate) struct Block {
    pub layers: Vec<ChainLayer>,
    /// With a residual Add of the block's input: the Add's output clamp, real units.
    pub residual_clamp: Option<(f32, f32)>,
    /// The block output's quantization step: the loss is measured in these steps.
    pub step: f32,
    /// Multiplies the output error term (1 at the start of training, see `train`).
    pub loss_scale: f32,
    /// Whether intermediate outputs are rounded to their grids (off only to check the
    /// gradients against finite differences, which rounding makes piecewise constant).
    pub round_between: bool,
}

/// Sampled positions of a block: per row, the block input's window and where each
/// layer's input window lies in its map.
#[derive(Clone, Debug, Default)]
pub(crate) struct BlockRows {
    pub rows: usize,
    /// Per row, the block input's window, channels last (`[h][w][C]`), zero outside the
    /// input map.
    pub input: Vec<f32>,
    /// Per row and layer, the top-left cell of the layer's input window in its map
    /// (negative or beyond the map where the window covers padding).
    pub origins: Vec<[isize; 2]>,
    /// Per row, the float model's block output at the position (`O` values).
    pub target: Vec<f32>,
    /// Per row, the block input at the position (the residual Add's other operand), or
    /// empty.
    pub residual: Vec<f32>,
    /// Per row, the sample and the output position `(y, x)`.
    pub positions: Vec<(usize, usize, usize)>,
}

impl Block {
    /// Every layer's input window (rows, cols), the last layer's output window being one
    /// cell; `windows()[n]` is that cell.
    pub fn windows(&self) -> Vec<[usize; 2]> {
        let mut w = vec![[1usize, 1usize]; self.layers.len() + 1];
        for (i, l) in self.layers.iter().enumerate().rev() {
            let g = &l.geometry;
            let [h, wd] = w[i + 1];
            w[i] = [
                (h - 1) * g.strides[0] + (g.kernel[0] - 1) * g.dilations[0] + 1,
                (wd - 1) * g.strides[1] + (g.kernel[1] - 1) * g.dilations[1] + 1,
            ];
        }
        w
    }

    /// Each layer's input-window origin for the output position `(y, x)` of the last
    /// layer.
    pub fn origins(&self, y: usize, x: usize) -> Vec<[isize; 2]> {
        let mut o = vec![[0isize; 2]; self.layers.len()];
        let mut out = [y as isize, x as isize];
        for (i, l) in self.layers.iter().enumerate().rev() {
            let g = &l.geometry;
            out = [
                out[0] * g.strides[0] as isize - g.pads[0] as isize,
                out[1] * g.strides[1] as isize - g.pads[1] as isize,
            ];
            o[i] = out;
        }
        o
    }

    fn out_channels(&self) -> usize {
        self.layers.last().map_or(0, |l| l.soft.o_n)
    }

    /// The block's output per row (`rows × O`, after the residual Add), with hard or
    /// soft rounding of the weights.
    #[cfg(test)]
    pub fn forward(&self, b: &BlockRows, hard: bool) -> Vec<f32> {
        let weights: Vec<Vec<f32>> = self.layers.iter().map(|l| l.soft.weights(hard)).collect();
        let (_, out) = self.run(b, &weights);
        self.add_residual(b, &out).0
    }

    /// The loss on `b` and its gradient for every layer.
    pub fn loss_and_grad(&self, b: &BlockRows, reg: Option<Regulariser>) -> (f64, Vec<Grads>) {
        let weights: Vec<Vec<f32>> = self.layers.iter().map(|l| l.soft.weights(false)).collect();
        let (states, out) = self.run(b, &weights);
        let (y, pass) = self.add_residual(b, &out);
        let o_n = self.out_channels();
        let count = (b.rows * o_n).max(1) as f32;
        let norm = 2.0 * self.loss_scale / (self.step * self.step * count);
        let mut loss = 0f64;
        let mut grad: Vec<f32> = y
            .iter()
            .zip(&b.target)
            .zip(&pass)
            .map(|((&y, &t), &p)| {
                let e = y - t;
                loss += (e as f64) * (e as f64);
                if p { norm * e } else { 0.0 }
            })
            .collect();
        let mut loss = loss * self.loss_scale as f64 / (self.step as f64).powi(2) / count as f64;
        let windows = self.windows();
        let mut grads: Vec<Option<Grads>> = (0..self.layers.len()).map(|_| None).collect();
        for (i, (layer, state)) in self.layers.iter().zip(&states).enumerate().rev() {
            let (gw, gb, gx) = layer_backward(
                layer,
                &weights[i],
                state,
                &grad,
                (windows[i], windows[i + 1]),
                b.rows,
                i > 0,
            );
            let (reg_loss, g) = layer.soft.parameter_grads(&gw, gb, reg);
            loss += reg_loss;
            grads[i] = Some(g);
            grad = gx;
        }
        (
            loss,
            grads.into_iter().map(|g| g.expect("every layer")).collect(),
        )
    }

    /// Runs the layers; returns each layer's saved state and the last layer's output.
    fn run(&self, b: &BlockRows, weights: &[Vec<f32>]) -> (Vec<LayerState>, Vec<f32>) {
        let windows = self.windows();
        let n = self.layers.len();
        let mut states = Vec::with_capacity(n);
        let mut x = b.input.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            // Layer i's output window is layer i + 1's input window (or the one cell).
            let valid = output_mask(b, i, n, &layer.geometry, windows[i + 1]);
            let last = i + 1 == n;
            let state = layer_forward(
                layer,
                &weights[i],
                &x,
                (windows[i], windows[i + 1]),
                b.rows,
                &valid,
                !last && self.round_between,
            );
            x = state.out.clone();
            states.push(state);
        }
        (states, x)
    }

    /// The block output after the residual Add (if any), and where a gradient passes
    /// its clamp.
    fn add_residual(&self, b: &BlockRows, out: &[f32]) -> (Vec<f32>, Vec<bool>) {
        match self.residual_clamp {
            None => (out.to_vec(), vec![true; out.len()]),
            Some((lo, hi)) => out
                .iter()
                .zip(&b.residual)
                .map(|(&o, &r)| {
                    let s = o + r;
                    (s.clamp(lo, hi), s > lo && s < hi)
                })
                .unzip(),
        }
    }
}

/// Whether each cell of layer `i`'s output window lies inside its output map (per row,
/// `rows × h × w`).
fn output_mask(b: &BlockRows, i: usize, n: usize, g: &PatchGeometry, win: [usize; 2]) -> Vec<bool> {
    let mut valid = Vec::with_capacity(b.rows * win[0] * win[1]);
    for r in 0..b.rows {
        // The last layer's one output cell is a sampled position: inside.
        let origin = if i + 1 < n {
            b.origins[r * n + i + 1]
        } else {
            [0, 0]
        };
        for cy in 0..win[0] {
            for cx in 0..win[1] {
                let (y, x) = (origin[0] + cy as isize, origin[1] + cx as isize);
                valid.push(
                    i + 1 == n
                        || (y >= 0
                            && x >= 0
                            && y < g.out_height as isize
                            && x < g.out_width as isize),
                );
            }
        }
    }
    valid
}

/// What a layer's forward pass keeps for its backward pass.
struct LayerState {
    /// Per group, the im2col rows (`cells × K`); empty on the direct paths.
    cols: Vec<Vec<f32>>,
    /// The input windows (kept by the direct paths).
    input: Vec<f32>,
    /// Before the clamp, `cells × O`.
    z: Vec<f32>,
    valid: Vec<bool>,
    /// The output (`cells × O`, channels last): clamped, rounded if asked, zero outside
    /// the map.
    out: Vec<f32>,
}

/// How a layer's windows are computed: a depthwise conv (one input and one output
/// channel per group) directly, channels innermost; a 1×1 conv at stride 1 with one
/// group as one GEMM on the input windows themselves (they are its im2col rows); any
/// other through im2col.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Depthwise,
    Pointwise,
    Im2col,
}

fn path(layer: &ChainLayer) -> Path {
    let g = &layer.geometry;
    if g.groups == g.channels && layer.soft.o_n == g.groups {
        Path::Depthwise
    } else if g.groups == 1 && g.kernel == [1, 1] && g.strides == [1, 1] {
        Path::Pointwise
    } else {
        Path::Im2col
    }
}

/// The taps of a depthwise conv's output cell `(oy, ox)`: `(tap, input cell)` in the
/// window.
fn depthwise_taps(
    g: &PatchGeometry,
    win_in: [usize; 2],
    oy: usize,
    ox: usize,
) -> impl Iterator<Item = (usize, usize)> + '_ {
    let [kh, kw] = g.kernel;
    (0..kh).flat_map(move |ky| {
        (0..kw).map(move |kx| {
            let y = oy * g.strides[0] + ky * g.dilations[0];
            let x = ox * g.strides[1] + kx * g.dilations[1];
            (ky * kw + kx, y * win_in[1] + x)
        })
    })
}

/// `z = conv(x) + b` on the windows, `cells × O`.
fn layer_forward(
    layer: &ChainLayer,
    w: &[f32],
    x: &[f32],
    wins: ([usize; 2], [usize; 2]),
    rows: usize,
    valid: &[bool],
    round: bool,
) -> LayerState {
    let s = &layer.soft;
    let g = &layer.geometry;
    let (k, o_n) = (s.k, s.o_n);
    let rpg = o_n / s.groups;
    let cells = valid.len();
    let mut z = vec![0f32; cells * o_n];
    let mut cols = Vec::new();
    match path(layer) {
        Path::Depthwise => {
            let ([hi, wi], [ho, wo]) = wins;
            let (c_n, taps) = (g.channels, k);
            // Weights tap-major, so that the channel loop reads them contiguously.
            let wt: Vec<f32> = (0..taps)
                .flat_map(|t| (0..c_n).map(move |c| w[c * taps + t]))
                .collect();
            z.par_chunks_mut(ho * wo * c_n)
                .enumerate()
                .for_each(|(r, zr)| {
                    let xr = &x[r * hi * wi * c_n..(r + 1) * hi * wi * c_n];
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let zc = &mut zr[(oy * wo + ox) * c_n..(oy * wo + ox + 1) * c_n];
                            zc.copy_from_slice(&s.bias);
                            for (t, cell) in depthwise_taps(g, [hi, wi], oy, ox) {
                                let xc = &xr[cell * c_n..(cell + 1) * c_n];
                                let wc = &wt[t * c_n..(t + 1) * c_n];
                                for ((z, &x), &w) in zc.iter_mut().zip(xc).zip(wc) {
                                    *z += x * w;
                                }
                            }
                        }
                    }
                });
        }
        Path::Pointwise => {
            sgemm(
                cells,
                o_n,
                k,
                1.0,
                x,
                row_major(k),
                w,
                transposed(k),
                false,
                &mut z,
                row_major(o_n),
            );
            add_bias(&mut z, &s.bias);
        }
        Path::Im2col => {
            let per_group: Vec<(Vec<f32>, Vec<f32>)> = (0..s.groups)
                .into_par_iter()
                .map(|grp| {
                    let cols = im2col(g, wins, rows, x, grp);
                    let mut y = vec![0f32; cells * rpg];
                    sgemm(
                        cells,
                        rpg,
                        k,
                        1.0,
                        &cols,
                        row_major(k),
                        &w[grp * rpg * k..(grp + 1) * rpg * k],
                        transposed(k),
                        false,
                        &mut y,
                        row_major(rpg),
                    );
                    (cols, y)
                })
                .collect();
            for (grp, (_, y)) in per_group.iter().enumerate() {
                for c in 0..cells {
                    z[c * o_n + grp * rpg..c * o_n + (grp + 1) * rpg]
                        .copy_from_slice(&y[c * rpg..(c + 1) * rpg]);
                }
            }
            add_bias(&mut z, &s.bias);
            cols = per_group.into_iter().map(|(c, _)| c).collect();
        }
    }
    let (lo, hi) = s.clamp;
    let mut out = vec![0f32; cells * o_n];
    out.par_chunks_mut(o_n)
        .zip(z.par_chunks(o_n))
        .zip(valid.par_iter())
        .with_min_len(256)
        .filter(|(_, v)| **v)
        .for_each(|((oc, zc), _)| {
            for (o, &z) in oc.iter_mut().zip(zc) {
                *o = if round {
                    ((z / s.step).round() * s.step).clamp(lo, hi)
                } else {
                    z.clamp(lo, hi)
                };
            }
        });
    let input = if cols.is_empty() {
        x.to_vec()
    } else {
        Vec::new()
    };
    LayerState {
        cols,
        input,
        z,
        valid: valid.to_vec(),
        out,
    }
}

/// The im2col rows of group `group` of windows `x` (`rows × h_in × w_in × C`) for the
/// layer's valid convolution onto `rows × h_out × w_out` cells; a row holds the group's
/// channels, then kernel rows, then kernel columns (the weights' `[O][C/g][kh][kw]`
/// order).
fn im2col(
    g: &PatchGeometry,
    wins: ([usize; 2], [usize; 2]),
    rows: usize,
    x: &[f32],
    group: usize,
) -> Vec<f32> {
    let ([hi, wi], [ho, wo]) = wins;
    let (c_n, cg) = (g.channels, g.channels / g.groups);
    let [kh, kw] = g.kernel;
    let k = cg * kh * kw;
    let mut cols = vec![0f32; rows * ho * wo * k];
    let mut dst = 0;
    for r in 0..rows {
        for oy in 0..ho {
            for ox in 0..wo {
                for ci in 0..cg {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let y = oy * g.strides[0] + ky * g.dilations[0];
                            let xx = ox * g.strides[1] + kx * g.dilations[1];
                            cols[dst] = x[((r * hi + y) * wi + xx) * c_n + group * cg + ci];
                            dst += 1;
                        }
                    }
                }
            }
        }
    }
    cols
}

/// The transpose of [`im2col`]: adds `cols` into `dx`.
fn col2im(
    g: &PatchGeometry,
    wins: ([usize; 2], [usize; 2]),
    rows: usize,
    cols: &[f32],
    group: usize,
    dx: &mut [f32],
) {
    let ([hi, wi], [ho, wo]) = wins;
    let (c_n, cg) = (g.channels, g.channels / g.groups);
    let [kh, kw] = g.kernel;
    let mut src = 0;
    for r in 0..rows {
        for oy in 0..ho {
            for ox in 0..wo {
                for ci in 0..cg {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let y = oy * g.strides[0] + ky * g.dilations[0];
                            let xx = ox * g.strides[1] + kx * g.dilations[1];
                            dx[((r * hi + y) * wi + xx) * c_n + group * cg + ci] += cols[src];
                            src += 1;
                        }
                    }
                }
            }
        }
    }
}

fn add_bias(z: &mut [f32], bias: &[f32]) {
    z.par_chunks_mut(bias.len())
        .with_min_len(256)
        .for_each(|zc| {
            for (z, &b) in zc.iter_mut().zip(bias) {
                *z += b;
            }
        });
}

/// `∂L/∂W` (`[O][K]`), `∂L/∂b` and, with `input_grad`, `∂L/∂x` of the layer's input
/// windows, from `∂L/∂out`.
fn layer_backward(
    layer: &ChainLayer,
    w: &[f32],
    state: &LayerState,
    gout: &[f32],
    wins: ([usize; 2], [usize; 2]),
    rows: usize,
    input_grad: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let s = &layer.soft;
    let g = &layer.geometry;
    let (k, o_n) = (s.k, s.o_n);
    let rpg = o_n / s.groups;
    let cells = state.valid.len();
    let (lo, hi) = s.clamp;
    // Through the clamp (the rounding passes the gradient unchanged).
    let mut gz = vec![0f32; cells * o_n];
    gz.par_chunks_mut(o_n)
        .zip(gout.par_chunks(o_n))
        .zip(state.z.par_chunks(o_n))
        .zip(state.valid.par_iter())
        .with_min_len(256)
        .filter(|(_, v)| **v)
        .for_each(|(((gzc, gc), zc), _)| {
            for ((g, &gr), &z) in gzc.iter_mut().zip(gc).zip(zc) {
                if z > lo && z < hi {
                    *g = gr;
                }
            }
        });
    let gb = gz
        .par_chunks(o_n * 64)
        .map(|block| {
            let mut b = vec![0f32; o_n];
            for row in block.chunks(o_n) {
                for (b, &v) in b.iter_mut().zip(row) {
                    *b += v;
                }
            }
            b
        })
        .reduce(
            || vec![0f32; o_n],
            |mut a, b| {
                for (a, b) in a.iter_mut().zip(b) {
                    *a += b;
                }
                a
            },
        );
    let [hi_, wi] = wins.0;
    match path(layer) {
        Path::Depthwise => {
            let [ho, wo] = wins.1;
            let (c_n, taps) = (g.channels, k);
            let wt: Vec<f32> = (0..taps)
                .flat_map(|t| (0..c_n).map(move |c| w[c * taps + t]))
                .collect();
            // Per row: its weight gradient (tap-major) and input gradient.
            let per_row: Vec<(Vec<f32>, Vec<f32>)> = (0..rows)
                .into_par_iter()
                .map(|r| {
                    let xr = &state.input[r * hi_ * wi * c_n..(r + 1) * hi_ * wi * c_n];
                    let mut gwt = vec![0f32; taps * c_n];
                    let mut gxr = vec![0f32; if input_grad { hi_ * wi * c_n } else { 0 }];
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let cell = (r * ho + oy) * wo + ox;
                            let gc = &gz[cell * c_n..(cell + 1) * c_n];
                            for (t, icell) in depthwise_taps(g, [hi_, wi], oy, ox) {
                                let xc = &xr[icell * c_n..(icell + 1) * c_n];
                                for ((gw, &gr), &x) in
                                    gwt[t * c_n..(t + 1) * c_n].iter_mut().zip(gc).zip(xc)
                                {
                                    *gw += gr * x;
                                }
                                if input_grad {
                                    let wc = &wt[t * c_n..(t + 1) * c_n];
                                    for ((gx, &gr), &w) in gxr[icell * c_n..(icell + 1) * c_n]
                                        .iter_mut()
                                        .zip(gc)
                                        .zip(wc)
                                    {
                                        *gx += gr * w;
                                    }
                                }
                            }
                        }
                    }
                    (gwt, gxr)
                })
                .collect();
            let mut gwt = vec![0f32; taps * c_n];
            let mut gx = Vec::with_capacity(if input_grad { rows * hi_ * wi * c_n } else { 0 });
            for (gw, gxr) in per_row {
                for (a, b) in gwt.iter_mut().zip(gw) {
                    *a += b;
                }
                gx.extend(gxr);
            }
            let gw = (0..c_n)
                .flat_map(|c| (0..taps).map(move |t| (c, t)))
                .map(|(c, t)| gwt[t * c_n + c])
                .collect();
            (gw, gb, gx)
        }
        Path::Pointwise => {
            // The input windows are the im2col rows, and their gradient the input's.
            let (gw, gx) = group_grads(&gz, o_n, &state.input, w, k, input_grad);
            (gw, gb, gx)
        }
        Path::Im2col => {
            let per_group: Vec<(Vec<f32>, Vec<f32>)> = (0..s.groups)
                .into_par_iter()
                .map(|grp| {
                    let gzg: Vec<f32> = gz
                        .chunks(o_n)
                        .flat_map(|r| r[grp * rpg..(grp + 1) * rpg].iter().copied())
                        .collect();
                    let w_g = &w[grp * rpg * k..(grp + 1) * rpg * k];
                    group_grads(&gzg, rpg, &state.cols[grp], w_g, k, input_grad)
                })
                .collect();
            let mut gx = Vec::new();
            if input_grad {
                gx = vec![0f32; rows * hi_ * wi * g.channels];
                for (grp, (_, gcols)) in per_group.iter().enumerate() {
                    col2im(g, wins, rows, gcols, grp, &mut gx);
                }
            }
            let gw = per_group.into_iter().flat_map(|(gw, _)| gw).collect();
            (gw, gb, gx)
        }
    }
}

/// Trains every layer of `block` on `rows` for `options.iterations` Adam steps of
/// `options.batch` rows (the schedule, step sizes and regulariser of the per-layer
/// [`train`](super::train), the regulariser on every layer).
pub(crate) fn train_block(
    block: &mut Block,
    rows: &BlockRows,
    options: &ReconstructOptions,
    seed: u64,
) {
    let n_layers = block.layers.len();
    let b = options.batch.min(rows.rows).max(1);
    let mut adams: Vec<(Adam, Adam, Vec<Adam>)> = block
        .layers
        .iter()
        .map(|l| {
            let s = &l.soft;
            (
                Adam::new(s.v.len(), LR_V),
                Adam::new(s.o_n, LR_BIAS_STEPS * s.step),
                s.tables
                    .iter()
                    .map(|t| Adam::new(t.len(), LR_TABLE))
                    .collect(),
            )
        })
        .collect();
    // The error term relative to the start's on (up to 4096) rows.
    let probe: Vec<usize> = (0..rows.rows.min(4096)).collect();
    block.loss_scale = 1.0;
    let (start, _) = block.loss_and_grad(&select(rows, &probe, n_layers), None);
    block.loss_scale = if start > 0.0 {
        (1.0 / start) as f32
    } else {
        1.0
    };
    let mut batches = Batches::new(rows.rows, b, seed);
    for it in 0..options.iterations {
        let batch = batches.next_batch();
        let reg = regulariser(it, options.iterations);
        let (_, grads) = block.loss_and_grad(&select(rows, &batch, n_layers), reg);
        for ((layer, g), (adam_v, adam_b, adam_t)) in
            block.layers.iter_mut().zip(&grads).zip(&mut adams)
        {
            let s = &mut layer.soft;
            adam_v.step(&mut s.v, &g.v);
            adam_b.step(&mut s.bias, &g.bias);
            if s.learn_tables {
                for ((a, t), g) in adam_t.iter_mut().zip(&mut s.tables).zip(&g.tables) {
                    a.step(t, g);
                }
            }
        }
    }
}

/// One group's `∂L/∂W = gzᵀ · cols` (`rows × k`) and, with `input_grad`, the im2col rows'
/// gradient `gz · W` (`cells × k`), from `gz` (`cells × rows`, the group's output
/// gradients) and the group's im2col rows `cols`.
fn group_grads(
    gz: &[f32],
    rows: usize,
    cols: &[f32],
    w: &[f32],
    k: usize,
    input_grad: bool,
) -> (Vec<f32>, Vec<f32>) {
    let cells = gz.len() / rows.max(1);
    let mut gw = vec![0f32; rows * k];
    sgemm(
        rows,
        k,
        cells,
        1.0,
        gz,
        transposed(rows),
        cols,
        row_major(k),
        false,
        &mut gw,
        row_major(k),
    );
    let mut gcols = Vec::new();
    if input_grad {
        gcols = vec![0f32; cells * k];
        sgemm(
            cells,
            k,
            rows,
            1.0,
            gz,
            row_major(rows),
            w,
            row_major(k),
            false,
            &mut gcols,
            row_major(k),
        );
    }
    (gw, gcols)
}

/// The rows of `b` at `picks`, in that order.
pub(crate) fn select(b: &BlockRows, picks: &[usize], layers: usize) -> BlockRows {
    let per_in = b.input.len() / b.rows.max(1);
    let per_out = b.target.len() / b.rows.max(1);
    let mut out = BlockRows {
        rows: picks.len(),
        ..Default::default()
    };
    for &r in picks {
        out.input
            .extend_from_slice(&b.input[r * per_in..(r + 1) * per_in]);
        out.origins
            .extend_from_slice(&b.origins[r * layers..(r + 1) * layers]);
        out.target
            .extend_from_slice(&b.target[r * per_out..(r + 1) * per_out]);
        if !b.residual.is_empty() {
            out.residual
                .extend_from_slice(&b.residual[r * per_out..(r + 1) * per_out]);
        }
        out.positions.push(b.positions[r]);
    }
    out
}

/// About `budget` positions of the last layer's output over `samples`, spread evenly
/// over the samples and their positions (deterministic): the block input's windows from
/// `input(s)` (the quantized input, real units, `[C][H][W]`), the targets from
/// `target(s)` (the float model's block output, `[O][H'][W']`), and with `residual` the
/// input at the same position.
pub(crate) fn sample_rows<'t>(
    block: &Block,
    input: &(dyn Fn(usize) -> Vec<f32> + Sync),
    target: &(dyn Fn(usize) -> &'t [f32] + Sync),
    samples: std::ops::Range<usize>,
    residual: bool,
    budget: usize,
) -> BlockRows {
    let n = samples.len();
    let layers = block.layers.len();
    let (first, last) = (
        &block.layers[0].geometry,
        &block.layers[layers - 1].geometry,
    );
    let (oh, ow) = (last.out_height, last.out_width);
    let positions = oh * ow;
    let per_sample = budget.div_ceil(n.max(1)).clamp(1, positions.max(1));
    let stride = (positions / per_sample).max(1);
    let [wh, ww] = block.windows()[0];
    let (c_n, h, w) = (first.channels, first.height, first.width);
    let o_n = block.out_channels();
    let parts: Vec<BlockRows> = samples
        .into_par_iter()
        .map(|s| {
            let x = input(s);
            let t = target(s);
            let mut b = BlockRows::default();
            for j in 0..per_sample {
                let pos = j * stride + s % stride;
                let (y, xx) = (pos / ow, pos % ow);
                let origins = block.origins(y, xx);
                let [y0, x0] = origins[0];
                for cy in 0..wh {
                    for cx in 0..ww {
                        let (iy, ix) = (y0 + cy as isize, x0 + cx as isize);
                        let inside = iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize;
                        for c in 0..c_n {
                            b.input.push(if inside {
                                x[(c * h + iy as usize) * w + ix as usize]
                            } else {
                                0.0
                            });
                        }
                    }
                }
                b.origins.extend(origins);
                b.positions.push((s, y, xx));
                for o in 0..o_n {
                    b.target.push(t[(o * oh + y) * ow + xx]);
                    if residual {
                        b.residual.push(x[(o * h + y) * w + xx]);
                    }
                }
                b.rows += 1;
            }
            b
        })
        .collect();
    let mut b = BlockRows::default();
    for p in parts {
        b.rows += p.rows;
        b.input.extend(p.input);
        b.origins.extend(p.origins);
        b.target.extend(p.target);
        b.residual.extend(p.residual);
        b.positions.extend(p.positions);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator for test data.
    fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 2.0 * scale
            })
            .collect()
    }

    fn geometry(c: usize, hw: usize, kernel: usize, stride: usize, groups: usize) -> PatchGeometry {
        let pad = kernel / 2;
        let out = (hw + 2 * pad - kernel) / stride + 1;
        PatchGeometry {
            channels: c,
            height: hw,
            width: hw,
            kernel: [kernel; 2],
            strides: [stride; 2],
            pads: [pad; 4],
            dilations: [1, 1],
            groups,
            out_height: out,
            out_width: out,
        }
    }

    /// A soft layer with random table levels around each weight and soft choices.
    fn soft(o_n: usize, k: usize, groups: usize, clamp: (f32, f32), seed: u64) -> SoftLayer {
        let table: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) * 9.0).collect();
        let lo: Vec<u8> = values(o_n * k, seed, 1.0)
            .iter()
            .map(|&v| ((v + 1.0) * 7.0) as u8)
            .collect();
        SoftLayer {
            o_n,
            k,
            groups,
            scale: vec![1.0 / 128.0; o_n],
            tables: vec![table],
            learn_tables: true,
            frozen_entry: vec![vec![false; 16]],
            hi: lo.iter().map(|&l| l + 1).collect(),
            lo,
            v: values(o_n * k, seed + 1, 2.0),
            bias: values(o_n, seed + 2, 0.3),
            step: 1.0 / 16.0,
            clamp,
            loss_scale: 1.0,
        }
    }

    /// The blocks the tests run, on 5×5 inputs of 4 channels: `0`, `1`: expansion 1×1
    /// (4 → 8, ReLU6), depthwise 3×3 at stride 1 or 2, projection 1×1 (8 → 4), with the
    /// residual Add at stride 1 (the depthwise and pointwise paths); `2`: two 3×3 convs
    /// (4 → 6, ReLU; 6 → 4 in two groups) with the residual Add (the im2col path).
    fn block(kind: usize) -> Block {
        let layers = if kind < 2 {
            let stride = kind + 1;
            let e = geometry(4, 5, 1, 1, 1);
            let d = geometry(8, 5, 3, stride, 8);
            let p = geometry(8, d.out_height, 1, 1, 1);
            vec![
                ChainLayer {
                    geometry: e,
                    soft: soft(8, 4, 1, (0.0, 6.0), 10),
                },
                ChainLayer {
                    geometry: d,
                    soft: soft(8, 9, 8, (0.0, 6.0), 20),
                },
                ChainLayer {
                    geometry: p,
                    soft: soft(4, 8, 1, (-8.0, 7.9), 30),
                },
            ]
        } else {
            vec![
                ChainLayer {
                    geometry: geometry(4, 5, 3, 1, 1),
                    soft: soft(6, 36, 1, (0.0, 7.9), 40),
                },
                ChainLayer {
                    geometry: geometry(6, 5, 3, 1, 2),
                    soft: soft(4, 27, 2, (-8.0, 7.9), 50),
                },
            ]
        };
        let last = &layers.last().expect("layers").geometry;
        let residual = (last.out_height, last.channels >= 4) == (5, true);
        Block {
            layers,
            residual_clamp: residual.then_some((-8.0, 7.9)),
            step: 1.0 / 16.0,
            loss_scale: 1.0,
            round_between: false,
        }
    }

    fn rows(b: &Block, samples: usize) -> BlockRows {
        let (c, h) = (4, 5);
        let last = &b.layers.last().expect("layers").geometry;
        let inputs: Vec<Vec<f32>> = (0..samples)
            .map(|s| values(c * h * h, 100 + s as u64, 2.0))
            .collect();
        let targets: Vec<Vec<f32>> = (0..samples)
            .map(|s| values(4 * last.out_height * last.out_width, 200 + s as u64, 1.0))
            .collect();
        sample_rows(
            b,
            &|s| inputs[s].clone(),
            &|s| targets[s].as_slice(),
            0..samples,
            b.residual_clamp.is_some(),
            64,
        )
    }

    /// A direct convolution of the whole map `x` (`[C][H][W]`), clamped and, with
    /// `round`, rounded to `step` (as the integer program computes each layer).
    fn reference_layer(l: &ChainLayer, w: &[f32], x: &[f32], round: bool) -> Vec<f32> {
        let (g, s) = (&l.geometry, &l.soft);
        let (cg, rpg) = (g.channels / g.groups, s.o_n / g.groups);
        let [kh, kw] = g.kernel;
        let mut out = vec![0f32; s.o_n * g.out_height * g.out_width];
        for o in 0..s.o_n {
            let grp = o / rpg;
            for oy in 0..g.out_height {
                for ox in 0..g.out_width {
                    let mut acc = s.bias[o];
                    for ci in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let y = (oy * g.strides[0] + ky) as isize - g.pads[0] as isize;
                                let xx = (ox * g.strides[1] + kx) as isize - g.pads[1] as isize;
                                if y < 0
                                    || xx < 0
                                    || y >= g.height as isize
                                    || xx >= g.width as isize
                                {
                                    continue;
                                }
                                let c = grp * cg + ci;
                                acc += w[(o * cg + ci) * kh * kw + ky * kw + kx]
                                    * x[(c * g.height + y as usize) * g.width + xx as usize];
                            }
                        }
                    }
                    let v = if round {
                        (acc / s.step).round() * s.step
                    } else {
                        acc
                    };
                    out[(o * g.out_height + oy) * g.out_width + ox] = v.clamp(s.clamp.0, s.clamp.1);
                }
            }
        }
        out
    }

    /// The windows compute what the layers compute on whole maps: at every sampled
    /// position (inside and at the edges, where windows cover padding), the block's
    /// output equals direct convolutions of the whole input, with intermediate rounding.
    #[test]
    fn windows_compute_the_whole_map_convolutions() {
        for kind in 0..3 {
            let mut blk = block(kind);
            blk.round_between = true;
            let (c, h) = (4, 5);
            let inputs: Vec<Vec<f32>> = (0..2).map(|s| values(c * h * h, 300 + s, 2.0)).collect();
            let last = &blk.layers.last().expect("layers").geometry;
            let zero = vec![0f32; 4 * last.out_height * last.out_width];
            let b = sample_rows(
                &blk,
                &|s| inputs[s].clone(),
                &|_| zero.as_slice(),
                0..2,
                blk.residual_clamp.is_some(),
                1000,
            );
            assert_eq!(
                b.rows,
                2 * last.out_height * last.out_width,
                "every position"
            );
            let got = blk.forward(&b, true);
            for (s, input) in inputs.iter().enumerate() {
                let mut x = input.clone();
                for (i, l) in blk.layers.iter().enumerate() {
                    x = reference_layer(l, &l.soft.weights(true), &x, i + 1 < blk.layers.len());
                }
                let (ow, oc) = (last.out_width, 4);
                for (r, &(rs, y, xx)) in b.positions.iter().enumerate() {
                    if rs != s {
                        continue;
                    }
                    for o in 0..oc {
                        let mut want = x[(o * last.out_height + y) * ow + xx];
                        if let Some((lo, hi)) = blk.residual_clamp {
                            want = (want + input[(o * h + y) * h + xx]).clamp(lo, hi);
                        }
                        let have = got[r * oc + o];
                        assert!(
                            (want - have).abs() <= 1e-4,
                            "block {kind} sample {s} ({y}, {xx}) channel {o}: {have} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// Parameter `i` of kind `kind` (`v`, `bias`, `table`: entry of the first table) of
    /// layer `l`.
    fn param<'a>(blk: &'a mut Block, l: usize, kind: &str, i: usize) -> &'a mut f32 {
        let s = &mut blk.layers[l].soft;
        match kind {
            "v" => &mut s.v[i],
            "bias" => &mut s.bias[i],
            _ => &mut s.tables[0][i],
        }
    }

    /// The analytic gradient of every kind of parameter of every layer matches central
    /// finite differences, on each of the test blocks (windows reaching into the padding
    /// at the map's edges).
    #[test]
    fn block_backward_matches_finite_differences() {
        for kind in 0..3 {
            let mut blk = block(kind);
            let mut b = rows(&blk, 1);
            // Targets near the output: small errors keep the loss's f32 rounding far
            // below the differences measured.
            let noise = values(b.target.len(), 7, 0.2);
            b.target = blk
                .forward(&b, false)
                .iter()
                .zip(noise)
                .map(|(y, n)| y + n)
                .collect();
            assert!(b.rows >= 9, "{} rows", b.rows);
            // Some windows cover padding.
            assert!(b.origins.iter().any(|o| o[0] < 0 || o[1] < 0));
            let (_, grads) = blk.loss_and_grad(&b, None);
            // Small steps: every clamp is a kink, and a step across one (some of the hundreds
            // of window cells lie near 0 or 6) skews the difference.
            let eps = 1e-3f32;
            let mut checked = 0;
            // (parameter kind, index): every layer's v, biases and table entries.
            let probes = [
                ("v", 0),
                ("v", 3),
                ("v", 7),
                ("bias", 0),
                ("bias", 3),
                ("table", 6),
                ("table", 8),
            ];
            for (l, g) in grads.iter().enumerate() {
                for &(kind_of, i) in &probes {
                    let analytic = match kind_of {
                        "v" => g.v[i],
                        "bias" => g.bias[i],
                        _ => g.tables[0][i],
                    };
                    let x0 = *param(&mut blk, l, kind_of, i);
                    *param(&mut blk, l, kind_of, i) = x0 + eps;
                    let up = blk.loss_and_grad(&b, None).0;
                    *param(&mut blk, l, kind_of, i) = x0 - eps;
                    let down = blk.loss_and_grad(&b, None).0;
                    *param(&mut blk, l, kind_of, i) = x0;
                    let numeric = ((up - down) / (2.0 * eps as f64)) as f32;
                    assert!(
                        (numeric - analytic).abs()
                            <= 2e-3 + 0.03 * analytic.abs().max(numeric.abs()),
                        "block {kind} layer {l} {kind_of}[{i}]: numeric {numeric} analytic {analytic}"
                    );
                    checked += (analytic != 0.0) as usize;
                }
            }
            // Most of the 7 probed gradients per layer are not zero (a clamp could zero a few).
            assert!(
                checked >= 5 * blk.layers.len(),
                "block {kind}: only {checked} non-zero gradients"
            );
        }
    }
}
