//! Planning a run: which steps run in which order, which ops are fused into the Conv
//! before them, when each buffer is freed and which buffers are overwritten in place.

use lutq_ir::{Activation, NodeId, Op};

/// One op to execute.
#[derive(Clone)]
pub(super) struct Step<'g> {
    /// The node whose tensor the step produces: the op's own node, or the last node of
    /// the chain fused into it.
    pub node: NodeId,
    pub op: &'g Op,
    /// Value slots of the op's inputs, in input order, then those of fused BatchNorms.
    pub inputs: Vec<usize>,
    /// Ops fused into a Conv and applied, in order, to its output: first the Conv's own
    /// activation attribute, if any, then the BatchNorms and activations after it.
    pub fused: Vec<Fused>,
    /// Position in `inputs` of an operand whose buffer may become the output buffer: this
    /// step is its last reader, it is not a graph output, it is read once by this step,
    /// and it has the output's shape. Whether the buffer is really free (not shared with
    /// a Reshape) is checked when running.
    pub reuse: Option<usize>,
    /// Slots whose last reader is this step, freed after it runs.
    pub free: Vec<usize>,
}

/// An op fused into the Conv before it.
#[derive(Clone, Copy)]
pub(super) enum Fused {
    /// Its scale, bias, mean and var are the step's inputs `params..params + 4`.
    BatchNorm {
        epsilon: f32,
        params: usize,
    },
    Activation(Activation),
}

/// Whether a Conv step has a bias input (input 2 of the Conv itself; the parameters of
/// fused BatchNorms are appended after the Conv's own inputs).
pub(super) fn conv_has_bias(step: &Step) -> bool {
    let own = step
        .fused
        .iter()
        .find_map(|f| match f {
            Fused::BatchNorm { params, .. } => Some(*params),
            Fused::Activation(_) => None,
        })
        .unwrap_or(step.inputs.len());
    own == 3
}

/// The plan with BatchNorms and activations fused into the Conv they directly follow.
/// An op is fused when it is the only reader of the Conv chain's tensor, reads it as its
/// first input, the tensor is not a graph output, and (for BatchNorm) its parameters are
/// constants or graph inputs, hence available when the Conv runs.
pub(super) fn fuse<'g>(steps: &[Step<'g>], outputs: &[usize], slots: usize) -> Vec<Step<'g>> {
    let mut reads = vec![0usize; slots];
    let mut reader = vec![usize::MAX; slots];
    let mut computed = vec![false; slots];
    for (i, step) in steps.iter().enumerate() {
        computed[step.node.index()] = true;
        for &slot in &step.inputs {
            reads[slot] += 1;
            reader[slot] = i;
        }
    }
    let mut absorbed = vec![false; steps.len()];
    let mut plan = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        if absorbed[i] {
            continue;
        }
        let mut step = step.clone();
        if matches!(step.op, Op::Conv(_)) {
            loop {
                let slot = step.node.index();
                if reads[slot] != 1 || outputs.contains(&slot) {
                    break;
                }
                let j = reader[slot];
                let next = &steps[j];
                if next.inputs[0] != slot {
                    break;
                }
                match next.op {
                    Op::Activation(act) => step.fused.push(Fused::Activation(*act)),
                    Op::BatchNorm { epsilon } if next.inputs[1..].iter().all(|&p| !computed[p]) => {
                        step.fused.push(Fused::BatchNorm {
                            epsilon: *epsilon,
                            params: step.inputs.len(),
                        });
                        step.inputs.extend_from_slice(&next.inputs[1..]);
                    }
                    _ => break,
                }
                absorbed[j] = true;
                step.node = next.node;
            }
        }
        plan.push(step);
    }
    plan
}

/// Fills in each step's `free` list and `reuse` operand from the last reader of every
/// slot.
pub(super) fn plan_lifetimes(steps: &mut [Step], outputs: &[usize], shapes: &[&[usize]]) {
    let mut last_reader = vec![usize::MAX; shapes.len()];
    for (i, step) in steps.iter().enumerate() {
        for &slot in &step.inputs {
            last_reader[slot] = i;
        }
    }
    let is_output = |slot: usize| outputs.contains(&slot);
    // Which slots are computed (not inputs or constants, which are borrowed and so are
    // never worth taking over).
    let mut computed = vec![false; shapes.len()];
    for step in steps.iter() {
        computed[step.node.index()] = true;
    }
    for i in 0..steps.len() {
        let mut free: Vec<usize> = steps[i]
            .inputs
            .iter()
            .copied()
            .filter(|&s| last_reader[s] == i && !is_output(s))
            .collect();
        free.sort_unstable();
        free.dedup();
        let out_shape = shapes[steps[i].node.index()];
        let candidates: &[usize] = match steps[i].op {
            Op::BatchNorm { .. }
            | Op::Activation(_)
            | Op::Softmax { .. }
            | Op::PRelu
            | Op::Reshape { .. }
            | Op::Identity
            | Op::Dropout => &[0],
            Op::Binary(_) => &[0, 1],
            _ => &[],
        };
        let inputs = &steps[i].inputs;
        let reuse = candidates.iter().copied().find(|&pos| {
            let slot = inputs[pos];
            computed[slot]
                && last_reader[slot] == i
                && !is_output(slot)
                && inputs.iter().filter(|&&s| s == slot).count() == 1
                && shapes[slot].iter().product::<usize>() == out_shape.iter().product::<usize>()
                // Binary ops may only overwrite an operand that is not broadcast.
                && (!matches!(steps[i].op, Op::Binary(_)) || shapes[slot] == out_shape)
        });
        steps[i].free = free;
        steps[i].reuse = reuse;
    }
}
