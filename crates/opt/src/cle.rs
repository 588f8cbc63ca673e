//! Cross-layer equalization (Nagel et al., ICCV 2019, "Data-Free Quantization
//! Through Weight Equalization and Bias Correction") as a named pass.
//!
//! CLE is a numeric transform, not a rewrite: it solves for per-channel scales over all
//! chains at once, so it runs on the graph *after* [`crate::optimize`] (BatchNorms
//! folded, activations fused into the Conv as [`FusedActivation`]).
//!
//! # Which pairs
//!
//! A pair is `Conv₁ → Conv₂` where
//! * Conv₁'s output is read by Conv₂ only (as its data input) and is not a graph output;
//! * Conv₁'s fused activation is none, ReLU, or `clip(0, m)` (see [`Relu6Policy`]);
//! * both weights and Conv₁'s bias are constants read by that Conv only.
//!
//! Both convs may have any group, so MobileNetV2's pointwise (expand) → depthwise →
//! pointwise (project) blocks form two chained pairs, DFQ's triplet. Equalizing channel
//! `i` divides output channel `i` of Conv₁ (weight row `i`, bias `i`) by `s_i` and
//! multiplies Conv₂'s weights that read input channel `i` by `s_i`: with Conv₂'s group
//! `G` and `c = C/G` input channels per group, those are `w₂[o, i mod c, :, :]` for the
//! output channels `o` of group `i / c`. Channel `i` reaches Conv₂'s outputs only through
//! them, so the product is unchanged (for a depthwise Conv₂, that is its whole filter
//! `i`: its output `i` keeps its value, and its weight ranges change, which is what the
//! next pair, depthwise → project, equalizes).
//!
//! # Exactness
//!
//! ReLU is positively homogeneous (`relu(x/s) = relu(x)/s` for `s > 0`), so pairs with no
//! activation or ReLU are exact in real arithmetic. `clip(0, m)` is not:
//! `clip(x/s, 0, m) ≠ clip(x, 0, m)/s`. [`Relu6Policy::Skip`] (the default) leaves such
//! pairs alone; [`Relu6Policy::ReplaceWithRelu`] is the DFQ choice: it replaces the clip by
//! ReLU on equalized pairs, which changes the function (measured in `docs/opt.md`).
//!
//! # Solving
//!
//! `s_i = sqrt(r1_i / r2_i)`, `r1_i` = max |w| of Conv₁'s output channel `i`, `r2_i` = max
//! |w| of Conv₂'s input channel `i`; afterwards both ranges are `sqrt(r1_i · r2_i)`. A
//! channel with a zero range keeps `s_i = 1`. Pairs are visited in the graph's canonical
//! order and sweeps repeat (a Conv can be Conv₂ of one pair and Conv₁ of the next) until
//! the largest `|s_i − 1|` of a sweep is below [`CleOptions::tolerance`] or
//! [`CleOptions::max_sweeps`] is reached.

use std::fmt;

use lutq_ir::{FusedActivation, Graph, NodeId, Op, Tensor};

use crate::OptError;

/// What to do with a pair whose first Conv has a fused `clip(0, m)` (ReLU6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Relu6Policy {
    /// Leave the pair unequalized: exact.
    #[default]
    Skip,
    /// Replace `clip(0, m)` by ReLU and equalize (DFQ): changes the function.
    ReplaceWithRelu,
}

/// Options of [`equalize`].
#[derive(Clone, Debug)]
pub struct CleOptions {
    pub relu6: Relu6Policy,
    /// Stop when the largest `|s_i − 1|` of a sweep is below this.
    pub tolerance: f32,
    pub max_sweeps: usize,
}

impl Default for CleOptions {
    fn default() -> Self {
        CleOptions {
            relu6: Relu6Policy::Skip,
            tolerance: 1e-4,
            max_sweeps: 100,
        }
    }
}

/// One equalized pair.
#[derive(Clone, Debug, PartialEq)]
pub struct ClePair {
    pub first: String,
    pub second: String,
    /// Conv₁'s group (= its channel count for a depthwise Conv₁).
    pub first_group: usize,
    /// Conv₁'s output channels.
    pub channels: usize,
    /// Conv₁'s `clip(0, m)` was replaced by ReLU ([`Relu6Policy::ReplaceWithRelu`]).
    pub relu6_replaced: bool,
    /// `max_i r1_i / min_i r1_i` over Conv₁'s output channels with a non-zero range.
    pub imbalance_before: f32,
    pub imbalance_after: f32,
}

impl ClePair {
    /// Conv₁ is depthwise (one input and one output channel per group).
    pub fn first_is_depthwise(&self) -> bool {
        self.first_group > 1 && self.first_group == self.channels
    }
}

/// What [`equalize`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CleReport {
    pub pairs: Vec<ClePair>,
    /// Conv → Conv chains left alone, with the reason (`first → second: reason`).
    pub skipped: Vec<String>,
    pub sweeps: usize,
    pub converged: bool,
}

impl fmt::Display for CleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cle: {} pairs, {} sweeps ({}), {} skipped",
            self.pairs.len(),
            self.sweeps,
            if self.converged {
                "converged"
            } else {
                "sweep limit"
            },
            self.skipped.len()
        )?;
        for p in &self.pairs {
            writeln!(
                f,
                "  {} -> {}: imbalance {:.3} -> {:.3}{}",
                p.first,
                p.second,
                p.imbalance_before,
                p.imbalance_after,
                if p.relu6_replaced {
                    " (relu6 -> relu)"
                } else {
                    ""
                }
            )?;
        }
        for s in &self.skipped {
            writeln!(f, "  skipped {s}")?;
        }
        Ok(())
    }
}

/// A numeric pass over the float graph that is not an e-graph rewrite.
pub trait Pass {
    type Report: fmt::Display;
    /// The pass's name, as on the command line and in reports.
    fn name(&self) -> &'static str;
    fn run(&self, graph: &Graph) -> Result<(Graph, Self::Report), OptError>;
}

/// Cross-layer equalization as a [`Pass`].
#[derive(Clone, Debug, Default)]
pub struct Cle(pub CleOptions);

impl Pass for Cle {
    type Report = CleReport;
    fn name(&self) -> &'static str {
        "cle"
    }
    fn run(&self, graph: &Graph) -> Result<(Graph, CleReport), OptError> {
        equalize(graph, &self.0)
    }
}

struct Pair {
    first: NodeId,
    second: NodeId,
    w1: NodeId,
    b1: Option<NodeId>,
    w2: NodeId,
    /// Conv₂'s group.
    group2: usize,
}

/// Equalizes every pair of `graph` (see the module doc) and returns the new graph with a
/// report. Shapes, names and structure are unchanged; only constants and, with
/// [`Relu6Policy::ReplaceWithRelu`], fused activations change.
pub fn equalize(graph: &Graph, options: &CleOptions) -> Result<(Graph, CleReport), OptError> {
    let mut g = graph.clone();
    let mut report = CleReport::default();
    let pairs = find_pairs(&g, options, &mut report.skipped);

    let mut before = Vec::with_capacity(pairs.len());
    let mut replaced = Vec::with_capacity(pairs.len());
    for p in &pairs {
        before.push(imbalance(&out_ranges(&g, p.w1)));
        let Op::Conv(c) = &mut g.node_mut(p.first).op else {
            unreachable!("pairs start at a Conv")
        };
        let r = matches!(c.activation, Some(FusedActivation::Clip { .. }));
        if r {
            c.activation = Some(FusedActivation::Relu);
        }
        replaced.push(r);
    }

    while report.sweeps < options.max_sweeps && !pairs.is_empty() {
        report.sweeps += 1;
        let mut max_change = 0.0f32;
        for p in &pairs {
            let r1 = out_ranges(&g, p.w1);
            let r2 = in_ranges(&g, p.w2, p.group2);
            let s: Vec<f32> = r1
                .iter()
                .zip(&r2)
                .map(|(&a, &b)| {
                    if a > 0.0 && b > 0.0 {
                        (a / b).sqrt()
                    } else {
                        1.0
                    }
                })
                .collect();
            for &si in &s {
                max_change = max_change.max((si - 1.0).abs());
            }
            scale_out_channels(&mut g, p.w1, &s);
            if let Some(b1) = p.b1 {
                scale_out_channels(&mut g, b1, &s);
            }
            scale_in_channels(&mut g, p.w2, p.group2, &s);
        }
        if max_change < options.tolerance {
            report.converged = true;
            break;
        }
    }
    if pairs.is_empty() {
        report.converged = true;
    }

    for ((p, before), relu6_replaced) in pairs.iter().zip(before).zip(replaced) {
        report.pairs.push(ClePair {
            first: g.node(p.first).name.clone(),
            second: g.node(p.second).name.clone(),
            first_group: match &g.node(p.first).op {
                Op::Conv(c) => c.group,
                _ => 1,
            },
            channels: g.node(p.w1).ty.shape[0],
            relu6_replaced,
            imbalance_before: before,
            imbalance_after: imbalance(&out_ranges(&g, p.w1)),
        });
    }
    g.validate()?;
    Ok((g, report))
}

/// Every Conv → Conv pair CLE may equalize, in canonical order; other Conv → Conv chains
/// go to `skipped` with the reason.
fn find_pairs(g: &Graph, options: &CleOptions, skipped: &mut Vec<String>) -> Vec<Pair> {
    let mut pairs = Vec::new();
    for first in g.topo_order() {
        let Op::Conv(c1) = &g.node(first).op else {
            continue;
        };
        let users = g.users(first);
        let convs: Vec<NodeId> = users
            .iter()
            .copied()
            .filter(|&u| matches!(g.node(u).op, Op::Conv(_)) && g.node_inputs(u)[0] == first)
            .collect();
        let &[second] = convs.as_slice() else {
            continue;
        };
        let name = format!("{} -> {}", g.node(first).name, g.node(second).name);
        let skip = |why: &str, skipped: &mut Vec<String>| skipped.push(format!("{name}: {why}"));
        if users.len() != 1 || g.outputs().iter().any(|o| o.node == first) {
            skip("the first conv's output has other readers", skipped);
            continue;
        }
        let Op::Conv(c2) = &g.node(second).op else {
            unreachable!()
        };
        if matches!(c1.activation, Some(FusedActivation::Clip { .. }))
            && options.relu6 == Relu6Policy::Skip
        {
            skip("clip activation (relu6 policy skip)", skipped);
            continue;
        }
        let in1 = g.node_inputs(first);
        let in2 = g.node_inputs(second);
        let own_constant = |id: NodeId, reader: NodeId| {
            g.constant(id).and_then(Tensor::as_f32).is_some() && g.users(id) == [reader]
        };
        let b1 = in1.get(2).copied();
        if !own_constant(in1[1], first)
            || !own_constant(in2[1], second)
            || b1.is_some_and(|b| !own_constant(b, first))
            || in2[1] == first
        {
            skip("weights or bias not constants of their own", skipped);
            continue;
        }
        pairs.push(Pair {
            first,
            second,
            group2: c2.group,
            w1: in1[1],
            b1,
            w2: in2[1],
        });
    }
    pairs
}

fn weights(g: &Graph, id: NodeId) -> (&[usize], &[f32]) {
    let t = g.constant(id).expect("checked by find_pairs");
    (t.shape(), t.as_f32().expect("checked by find_pairs"))
}

/// max |w| per output channel (dimension 0).
fn out_ranges(g: &Graph, w: NodeId) -> Vec<f32> {
    let (shape, data) = weights(g, w);
    let per = data.len() / shape[0];
    data.chunks(per)
        .map(|c| c.iter().fold(0.0f32, |m, x| m.max(x.abs())))
        .collect()
}

/// The conv input channel (of `group · shape[1]`) that the `j`-th `[kH, kW]` slice of a
/// `[N, C/group, kH, kW]` weight reads.
fn input_channel(shape: &[usize], group: usize, j: usize) -> usize {
    let c = shape[1];
    let per_group_out = shape[0] / group;
    (j / c / per_group_out) * c + j % c
}

/// max |w| per conv input channel of a `[N, C/group, kH, kW]` weight (length `C`).
fn in_ranges(g: &Graph, w: NodeId, group: usize) -> Vec<f32> {
    let (shape, data) = weights(g, w);
    let k = shape[2..].iter().product::<usize>();
    let mut r = vec![0.0f32; shape[1] * group];
    for (j, chunk) in data.chunks(k).enumerate() {
        let m = chunk.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let i = input_channel(shape, group, j);
        r[i] = r[i].max(m);
    }
    r
}

/// The weight-range imbalance of one linear layer ([`layer_imbalances`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerImbalance {
    pub name: String,
    /// `conv` or `gemm`.
    pub op: &'static str,
    /// The Conv's group (1 for a Gemm).
    pub group: usize,
    /// Output channels.
    pub channels: usize,
    /// A depthwise Conv (one input and one output channel per group).
    pub depthwise: bool,
    /// `max_o r_o / min_o r_o` over the output channels with a non-zero range, `r_o` =
    /// max |w| over output channel `o`'s weights ([`imbalance`]).
    pub imbalance: f32,
}

/// The weight-range imbalance of every Conv and Gemm with constant f32 weights, in
/// canonical order: the quantity CLE lowers ([`ClePair::imbalance_before`] is this for
/// the pair's first Conv). A Conv's output channel `o` is `w[o, …]`; a Gemm's is column
/// `o` of `op(B)` (row `o` of `B` with `trans_b`).
pub fn layer_imbalances(graph: &Graph) -> Vec<LayerImbalance> {
    let mut out = vec![];
    for id in graph.topo_order() {
        let node = graph.node(id);
        let (op, group, trans) = match &node.op {
            Op::Conv(c) => ("conv", c.group, false),
            Op::Gemm(g) => ("gemm", 1, !g.trans_b),
            _ => continue,
        };
        let Some(&w) = graph.node_inputs(id).get(1) else {
            continue;
        };
        let Some(t) = graph.constant(w) else {
            continue;
        };
        if t.as_f32().is_none_or(<[f32]>::is_empty) || t.shape().is_empty() {
            continue;
        }
        let ranges = if trans && t.shape().len() == 2 {
            let (shape, data) = weights(graph, w);
            let n = shape[1];
            let mut r = vec![0.0f32; n];
            for (i, x) in data.iter().enumerate() {
                r[i % n] = r[i % n].max(x.abs());
            }
            r
        } else {
            out_ranges(graph, w)
        };
        let channels = ranges.len();
        out.push(LayerImbalance {
            name: node.name.clone(),
            op,
            group,
            channels,
            depthwise: op == "conv" && group > 1 && group == channels,
            imbalance: imbalance(&ranges),
        });
    }
    out
}

/// `max r / min r` over the non-zero ranges (1 if there are none).
pub fn imbalance(ranges: &[f32]) -> f32 {
    let nz = ranges.iter().copied().filter(|&r| r > 0.0);
    let (lo, hi) = nz.fold((f32::INFINITY, 0.0f32), |(lo, hi), r| {
        (lo.min(r), hi.max(r))
    });
    if hi > 0.0 { hi / lo } else { 1.0 }
}

fn replace_constant(g: &mut Graph, id: NodeId, f: impl FnOnce(&[usize], &mut [f32])) {
    let (shape, data) = weights(g, id);
    let shape = shape.to_vec();
    let mut data = data.to_vec();
    f(&shape, &mut data);
    let t = Tensor::f32(shape, data).expect("same shape");
    g.node_mut(id).op = Op::Constant(t);
}

/// Divides output channel `i` (dimension 0) by `s[i]`.
fn scale_out_channels(g: &mut Graph, id: NodeId, s: &[f32]) {
    replace_constant(g, id, |shape, data| {
        let per = data.len() / shape[0];
        for (chunk, &si) in data.chunks_mut(per).zip(s) {
            chunk.iter_mut().for_each(|x| *x /= si);
        }
    });
}

/// Multiplies the weights reading conv input channel `i` by `s[i]`.
fn scale_in_channels(g: &mut Graph, id: NodeId, group: usize, s: &[f32]) {
    replace_constant(g, id, |shape, data| {
        let k = shape[2..].iter().product::<usize>();
        let shape = shape.to_vec();
        for (j, chunk) in data.chunks_mut(k).enumerate() {
            let si = s[input_channel(&shape, group, j)];
            chunk.iter_mut().for_each(|x| *x *= si);
        }
    });
}
