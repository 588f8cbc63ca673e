//! Block reconstruction in the lowering (`ReconstructOptions::blocks`): which chains of
//! convs form blocks, and retraining a block's layers once the last of them is lowered
//! (the arithmetic is `reconstruct::block`).

use std::collections::HashSet;
use std::time::Instant;

use lutq_interp::int::{IntData, LinearWeights, exec_with};
use lutq_ir::int::{IntNode, IntOp, QLinear, ValueId};
use lutq_ir::{Activation, BinaryOp, FusedActivation, Graph, NodeId, Op};
use rayon::prelude::*;

use super::Lowering;
use crate::QuantError;
use crate::hessian::PatchGeometry;
use crate::reconstruct::block::{Block, ChainLayer, sample_rows, train_block};
use crate::reconstruct::{LayerData, LayerReconstruction, ReconstructOptions};

/// Most layers in one block (an inverted-residual block's three convs).
const MAX_BLOCK_LAYERS: usize = 3;

/// A chain of convs, each the only reader of the one before, trained as one unit.
#[derive(Clone, Debug)]
pub(super) struct BlockPlan {
    pub layers: Vec<NodeId>,
    /// The float node the first layer reads.
    pub input: NodeId,
    /// The residual Add of `input` to the last layer's output, if the chain ends in one.
    pub residual: Option<NodeId>,
    /// The node whose float value the block reproduces: the last layer, or the Add (or
    /// the activation fused into it).
    pub end: NodeId,
}

/// What the fit of a block's layer leaves for the block's training.
pub(super) struct BlockLayerFit {
    /// The rows the fast fit aimed at (float targets or weights).
    pub init_rows: Vec<f32>,
    /// Rows kept as the fast fit made them (constant channels).
    pub frozen_rows: Vec<bool>,
    /// Whether the layer's tables are learned (one table, or one per row).
    pub learn_tables: bool,
}

fn is_conv(graph: &Graph, id: NodeId) -> bool {
    matches!(graph.node(id).op, Op::Conv(_))
}

/// The blocks of `graph`: in topological order, each conv not yet in a block starts a
/// chain that extends over the convs that are the only reader of the one before (at most
/// [`MAX_BLOCK_LAYERS`]: from the front, so that MobileNetV2's and EfficientNet's
/// expansion–depthwise–projection triples stay together); a chain whose last conv is
/// read only by an Add of the chain's input (of the same shape) is a residual block. A
/// single conv without a residual Add is left to the per-layer reconstruction.
pub(super) fn find_blocks(
    graph: &Graph,
    activation_of: impl Fn(NodeId) -> Option<(NodeId, FusedActivation)>,
) -> Vec<BlockPlan> {
    let outputs: HashSet<NodeId> = graph.outputs().iter().map(|o| o.node).collect();
    let mut taken: HashSet<NodeId> = HashSet::new();
    let mut plans = Vec::new();
    for first in graph.topo_order() {
        if !is_conv(graph, first) || taken.contains(&first) {
            continue;
        }
        let mut layers = vec![first];
        while layers.len() < MAX_BLOCK_LAYERS {
            let cur = *layers.last().expect("one layer");
            match graph.users(cur).as_slice() {
                [next]
                    if is_conv(graph, *next)
                        && !taken.contains(next)
                        && !outputs.contains(&cur)
                        && graph.node_inputs(*next).first() == Some(&cur) =>
                {
                    layers.push(*next)
                }
                _ => break,
            }
        }
        let last = *layers.last().expect("one layer");
        let input = graph.node_inputs(first)[0];
        let residual = match graph.users(last).as_slice() {
            [add]
                if !outputs.contains(&last)
                    && matches!(graph.node(*add).op, Op::Binary(BinaryOp::Add))
                    && {
                        let ins = graph.node_inputs(*add);
                        ins.len() == 2 && ins.contains(&input) && ins.contains(&last)
                    }
                    // The block's samples read the residual at the output's own
                    // positions: an Add that broadcasts one side is no residual block.
                    && graph.node(input).ty.shape == graph.node(last).ty.shape =>
            {
                Some(*add)
            }
            _ => None,
        };
        if layers.len() < 2 && residual.is_none() {
            continue;
        }
        taken.extend(layers.iter().copied());
        let end = match residual {
            Some(add) => activation_of(add).map_or(add, |(act, _)| act),
            None => last,
        };
        plans.push(BlockPlan {
            layers,
            input,
            residual,
            end,
        });
    }
    plans
}

impl Lowering<'_> {
    /// Retrains the block `plan` (all its layers lowered) as one unit, keeping the result
    /// only where it lowers the block output's error on the held-out calibration samples
    /// (exact integer arithmetic); then releases the block input's data it held.
    pub(super) fn reconstruct_block(
        &mut self,
        plan: &BlockPlan,
        options: &ReconstructOptions,
    ) -> Result<(), QuantError> {
        let report = self.try_reconstruct_block(plan, options)?;
        self.report.reconstruction.extend(report);
        // Each layer is in one block: its fast fit's rows are not read again (they are
        // the size of the layer's weights, kept until here for the whole network).
        for id in &plan.layers {
            self.block_fits.remove(id);
        }
        // The block held its input's data (see `Lowering::new`'s reader counts).
        let input = self.lowered[&plan.input];
        let n = self.readers.entry(input).or_default();
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.data.remove(&input);
        }
        Ok(())
    }

    fn try_reconstruct_block(
        &mut self,
        plan: &BlockPlan,
        options: &ReconstructOptions,
    ) -> Result<Option<LayerReconstruction>, QuantError> {
        let start = Instant::now();
        let graph = self.graph;
        if let Some(add) = plan.residual {
            self.run_float(add)?;
            if plan.end != add {
                self.run_float(plan.end)?;
            }
        }
        // The integer chain: each layer a Linear reading the one before directly.
        let input_value = self.lowered[&plan.input];
        let values: Vec<ValueId> = plan.layers.iter().map(|l| self.lowered[l]).collect();
        let mut reads = input_value;
        for &v in &values {
            let node = self.out.node(v);
            if !matches!(node.op, IntOp::Linear(_)) || node.inputs != [reads] {
                return Ok(None);
            }
            reads = v;
        }
        let n = self.samples.len();
        if n < 2 || !self.data.contains_key(&input_value) {
            return Ok(None);
        }
        let Some(targets) = self.float_values.get(&plan.end) else {
            return Ok(None);
        };
        let held_n = (n / 4).max(1);
        let fit_n = n - held_n;

        // The soft layers, from the fast fits.
        let mut layers = Vec::with_capacity(values.len());
        for (&id, &v) in plan.layers.iter().zip(&values) {
            let node = self.out.node(v);
            let IntOp::Linear(fast) = &node.op else {
                unreachable!("checked above")
            };
            let x = self.out.ty(node.inputs[0]);
            let fnode = graph.node(id);
            let shape4 = fast.weights.shape();
            let Some(fit) = self.block_fits.get(&id) else {
                return Ok(None);
            };
            let d = LayerData {
                name: &fnode.name,
                geometry: PatchGeometry::of_layer(
                    &x.shape,
                    &node.ty.shape,
                    shape4,
                    fast.conv.as_ref(),
                ),
                input: &[],
                x_exp: x.exp,
                x_elem: x.elem,
                float_input: None,
                float_rows: &[],
                float_bias: &[],
                init_rows: &fit.init_rows,
                act: None,
                rounding: self.out.rounding,
                learn_tables: fit.learn_tables,
                frozen_rows: &fit.frozen_rows,
                seed: 0,
            };
            let Some(soft) = crate::reconstruct::soft_layer(&d, fast, node.ty.exp) else {
                return Ok(None);
            };
            layers.push(ChainLayer {
                geometry: d.geometry,
                soft,
            });
        }
        let act_clamp = |a: Option<FusedActivation>| match a {
            None => (f32::NEG_INFINITY, f32::INFINITY),
            Some(FusedActivation::Relu) => (0.0, f32::INFINITY),
            Some(FusedActivation::Clip { max }) => (0.0, max),
        };
        let residual_clamp = plan.residual.map(|add| {
            act_clamp(match &graph.node(plan.end).op {
                _ if plan.end == add => None,
                Op::Activation(Activation::Relu) => Some(FusedActivation::Relu),
                Op::Activation(Activation::Clip { max, .. }) => Some(match max {
                    Some(m) => FusedActivation::Clip { max: *m },
                    None => FusedActivation::Relu,
                }),
                _ => None,
            })
        });
        let last_step = layers.last().expect("two layers or a residual").soft.step;
        let mut block = Block {
            layers,
            residual_clamp,
            step: last_step,
            loss_scale: 1.0,
            round_between: true,
        };

        // Training rows from the first samples; the rest are held out.
        let x_exp = self.out.ty(input_value).exp;
        let input_data = &self.data[&input_value];
        let budget = (options.max_patches * fit_n).div_ceil(n);
        let rows = sample_rows(
            &block,
            &|s| input_data[s].to_f32(x_exp),
            &|s| targets[s].as_slice(),
            0..fit_n,
            block.residual_clamp.is_some(),
            budget,
        );
        if rows.rows == 0 {
            return Ok(None);
        }
        train_block(&mut block, &rows, options, self.report.layers.len() as u64);

        // The trained layers, rounded, and their exact integer output.
        let candidates: Vec<QLinear> = block
            .layers
            .iter()
            .zip(&values)
            .map(|(l, &v)| {
                let node = self.out.node(v);
                let IntOp::Linear(fast) = &node.op else {
                    unreachable!("checked above")
                };
                crate::reconstruct::hard_layer(&l.soft, fast, self.out.ty(node.inputs[0]).exp)
            })
            .collect();
        let fits = candidates.iter().zip(&values).all(|(c, &v)| {
            let x = self.out.ty(self.out.node(v).inputs[0]);
            lutq_ir::int::accumulator_bound(c, x.elem).rescaled <= i32::MAX as i64
        });
        let last = *values.last().expect("layers");
        let out_exp = self.out.ty(last).exp;
        let error = |data: &[IntData]| -> (f64, f64) {
            let (mut err, mut energy) = (0f64, 0f64);
            for s in fit_n..n {
                let y = data[s].to_f32(out_exp);
                let res = block.residual_clamp.map(|_| input_data[s].to_f32(x_exp));
                for (i, (&y, &t)) in y.iter().zip(&targets[s]).enumerate() {
                    let mut v = y;
                    if let (Some(r), Some((lo, hi))) = (&res, block.residual_clamp) {
                        v = (v + r[i]).clamp(lo, hi);
                    }
                    err += ((v - t) as f64).powi(2);
                    energy += (t as f64).powi(2);
                }
            }
            (err, energy)
        };
        let (fast_err, energy) = error(&self.data[&last]);
        let (candidate_data, rec_err) = if fits {
            let nodes: Vec<IntNode> = candidates
                .iter()
                .zip(&values)
                .map(|(c, &v)| IntNode {
                    op: IntOp::Linear(c.clone()),
                    ..self.out.node(v).clone()
                })
                .collect();
            let decoded: Vec<LinearWeights> = candidates.iter().map(LinearWeights::of).collect();
            let graph_out = &self.out;
            let samples = &self.samples;
            let data: Vec<IntData> = (0..n)
                .into_par_iter()
                .map(|s| {
                    let mut x = input_data[s].clone();
                    for (node, dec) in nodes.iter().zip(&decoded) {
                        x = exec_with(graph_out, node, &[&x], &[samples[s]], Some(dec))?;
                    }
                    Ok(x)
                })
                .collect::<Result<_, lutq_interp::InterpError>>()?;
            let e = error(&data).0;
            (Some(data), e)
        } else {
            (None, f64::INFINITY)
        };
        let kept = rec_err < fast_err;
        let mut changed_weights = 0;
        for (c, &v) in candidates.iter().zip(&values) {
            let IntOp::Linear(fast) = &self.out.node(v).op else {
                unreachable!("checked above")
            };
            changed_weights += fast
                .weights
                .decode()
                .iter()
                .zip(c.weights.decode())
                .filter(|(a, b)| **a != *b)
                .count();
        }
        if kept {
            for (c, &v) in candidates.into_iter().zip(&values) {
                self.out.nodes[v.index()].op = IntOp::Linear(c);
            }
            self.data.insert(last, candidate_data.expect("kept"));
        }
        let energy = energy.max(f64::MIN_POSITIVE);
        let names: Vec<&str> = plan
            .layers
            .iter()
            .map(|&l| graph.node(l).name.as_str())
            .collect();
        Ok(Some(LayerReconstruction {
            name: format!(
                "{}{}",
                names.join(" → "),
                if plan.residual.is_some() {
                    " (+ residual)"
                } else {
                    ""
                }
            ),
            fast_error: fast_err / energy,
            reconstructed_error: rec_err / energy,
            kept,
            changed_weights,
            seconds: start.elapsed().as_secs_f64(),
        }))
    }
}
