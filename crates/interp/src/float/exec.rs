//! Running a plan: the value table, buffer reuse and the dispatch of each step to its
//! kernel.

use std::rc::Rc;

use lutq_ir::Op;

use super::conv::{self, ConvGeom, Epilogue, Stage};
use super::elementwise::{self, BatchNormParams, BinFn, Operand};
use super::plan::{Fused, Step, conv_has_bias};
use super::{Interpreter, Observer, TensorView, linalg, pooling, spatial};
use crate::{InterpError, layout};

/// A tensor's elements during a run.
enum Value<'a> {
    /// A constant or a graph input, never copied.
    Borrowed(&'a [f32]),
    /// Computed by the run. Shared between a tensor and its reshapes.
    Owned(Rc<Vec<f32>>),
}

impl Value<'_> {
    fn as_slice(&self) -> &[f32] {
        match self {
            Value::Borrowed(s) => s,
            Value::Owned(v) => v,
        }
    }

    fn share(&self) -> Self {
        match self {
            Value::Borrowed(s) => Value::Borrowed(s),
            Value::Owned(v) => Value::Owned(Rc::clone(v)),
        }
    }

    fn into_vec(self) -> Vec<f32> {
        match self {
            Value::Borrowed(s) => s.to_vec(),
            Value::Owned(v) => Rc::try_unwrap(v).unwrap_or_else(|shared| shared.to_vec()),
        }
    }
}

/// Buffers freed during a run, handed out again for later tensors of this and later runs
/// on the same thread. Reusing them skips the allocator's zeroing of every new output (a
/// full pass over memory per op) and, across runs, the page faults of memory the
/// allocator gave back to the OS in between. Their stale contents are harmless because
/// every kernel writes all of its output; debug builds fill handed-out buffers with NaN
/// so that a kernel breaking that rule fails the tests. Holds at most
/// [`BufferPool::LIMIT`] elements.
#[derive(Default)]
struct BufferPool {
    free: Vec<Vec<f32>>,
    held: usize,
}

thread_local! {
    static POOL: std::cell::RefCell<BufferPool> = Default::default();
}

impl BufferPool {
    /// 64 Mi elements (256 MiB) per thread.
    const LIMIT: usize = 64 << 20;

    /// A buffer of `len` elements with unspecified contents.
    fn take(&mut self, len: usize) -> Vec<f32> {
        // The smallest free buffer that fits without wasting more than half of itself.
        // Free buffers are kept at their full capacity, so this only shortens them.
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() >= len && b.len() <= 2 * len)
            .min_by_key(|(_, b)| b.len())
            .map(|(i, _)| i);
        let Some(i) = best else {
            return vec![0.0; len];
        };
        let mut buf = self.free.swap_remove(i);
        self.held -= buf.len();
        buf.truncate(len);
        if cfg!(debug_assertions) {
            buf.fill(f32::NAN);
        }
        buf
    }

    fn put(&mut self, mut buf: Vec<f32>) {
        if buf.capacity() > 0 && self.held + buf.capacity() <= Self::LIMIT {
            // Writes only the slack a previous, shorter use left.
            buf.resize(buf.capacity(), 0.0);
            self.held += buf.len();
            self.free.push(buf);
        }
    }
}

impl<'g> Interpreter<'g> {
    /// The interpreter loop. `inputs` have been checked to have the right sizes.
    pub(super) fn execute(
        &self,
        inputs: &[&[f32]],
        mut observer: Option<&mut Observer<'_>>,
    ) -> Result<Vec<Vec<f32>>, InterpError> {
        let mut values: Vec<Option<Value>> = Vec::new();
        values.resize_with(self.shapes.len(), || None);
        for (&id, &data) in self.graph.inputs().iter().zip(inputs) {
            values[id.index()] = Some(Value::Borrowed(data));
            if let Some(obs) = observer.as_mut() {
                obs(
                    id,
                    TensorView {
                        shape: self.shapes[id.index()],
                        data,
                    },
                );
            }
        }
        for &(slot, data) in &self.constants {
            values[slot] = Some(Value::Borrowed(data));
        }

        let steps = if observer.is_some() {
            &self.observed_steps
        } else {
            &self.steps
        };
        // The thread's pool, taken for the run and put back after it (a failed run just
        // drops it).
        let mut pool = POOL.with(|p| std::mem::take(&mut *p.borrow_mut()));
        for step in steps {
            let out = self.eval(step, &mut values, &mut pool)?;
            for &slot in &step.free {
                if let Some(Value::Owned(rc)) = values[slot].take()
                    && let Ok(buf) = Rc::try_unwrap(rc)
                {
                    pool.put(buf);
                }
            }
            let slot = step.node.index();
            if let Some(obs) = observer.as_mut() {
                obs(
                    step.node,
                    TensorView {
                        shape: self.shapes[slot],
                        data: out.as_slice(),
                    },
                );
            }
            values[slot] = Some(out);
        }

        let mut outs = Vec::with_capacity(self.outputs.len());
        for (i, &slot) in self.outputs.iter().enumerate() {
            // The last mention of a slot takes its buffer; earlier ones copy it.
            let last = !self.outputs[i + 1..].contains(&slot);
            let value = if last {
                values[slot].take()
            } else {
                values[slot].as_ref().map(Value::share)
            };
            let value = value.ok_or_else(|| {
                InterpError::Internal(format!("output slot {slot} was never computed"))
            })?;
            outs.push(value.into_vec());
        }
        POOL.with(|p| *p.borrow_mut() = pool);
        Ok(outs)
    }

    /// Executes one step, returning its output value.
    fn eval<'a>(
        &self,
        step: &Step<'g>,
        values: &mut [Option<Value<'a>>],
        pool: &mut BufferPool,
    ) -> Result<Value<'a>, InterpError>
    where
        'g: 'a,
    {
        let missing = |slot: usize| {
            InterpError::Internal(format!(
                "input slot {slot} of node {} is not available",
                step.node.index()
            ))
        };
        // Take over the reusable operand's buffer if nothing else holds it.
        let mut reused: Option<Vec<f32>> = None;
        if let Some(pos) = step.reuse {
            let slot = step.inputs[pos];
            match values[slot].take() {
                Some(Value::Owned(rc)) => match Rc::try_unwrap(rc) {
                    Ok(buf) => reused = Some(buf),
                    Err(rc) => values[slot] = Some(Value::Owned(rc)),
                },
                other => values[slot] = other,
            }
        }

        // Ops that only relabel their input share its buffer.
        if matches!(step.op, Op::Reshape { .. } | Op::Identity | Op::Dropout) {
            return Ok(match reused {
                Some(buf) => Value::Owned(Rc::new(buf)),
                None => values[step.inputs[0]]
                    .as_ref()
                    .ok_or_else(|| missing(step.inputs[0]))?
                    .share(),
            });
        }

        let values: &[Option<Value<'a>>] = values;
        let mut ins: Vec<&[f32]> = Vec::with_capacity(step.inputs.len());
        for (pos, &slot) in step.inputs.iter().enumerate() {
            if reused.is_some() && step.reuse == Some(pos) {
                // Its data now lives in `reused`.
                ins.push(&[]);
            } else {
                ins.push(
                    values[slot]
                        .as_ref()
                        .ok_or_else(|| missing(slot))?
                        .as_slice(),
                );
            }
        }
        let in_shapes: Vec<&[usize]> = step.inputs.iter().map(|&s| self.shapes[s]).collect();
        let out_shape = self.shapes[step.node.index()];
        let out_len: usize = out_shape.iter().product();
        // The output buffer of ops that compute in place: the reused operand, or a copy
        // of operand 0.
        let in_place = |pool: &mut BufferPool, reused: Option<Vec<f32>>| {
            reused.unwrap_or_else(|| {
                let mut buf = pool.take(out_len);
                buf.copy_from_slice(ins[0]);
                buf
            })
        };

        let out = match step.op {
            Op::Conv(attrs) => {
                let geom = ConvGeom::new(attrs, in_shapes[0], in_shapes[1], out_shape);
                let epilogue = Epilogue {
                    stages: step
                        .fused
                        .iter()
                        .map(|f| match *f {
                            Fused::BatchNorm { epsilon, params } => {
                                let p = BatchNormParams {
                                    scale: ins[params],
                                    bias: ins[params + 1],
                                    mean: ins[params + 2],
                                    var: ins[params + 3],
                                    epsilon,
                                };
                                let (a, b) = (0..geom.m).map(|c| p.affine(c)).unzip();
                                Stage::Affine { a, b }
                            }
                            Fused::Activation(act) => Stage::Activation(act),
                        })
                        .collect(),
                };
                // The bias, if any, is input 2; fused BatchNorm parameters come after.
                let bias = conv_has_bias(step).then(|| ins[2]);
                let mut out = pool.take(out_len);
                conv::conv2d(&geom, ins[0], ins[1], bias, &epilogue, &mut out);
                out
            }
            Op::BatchNorm { epsilon } => {
                let mut x = in_place(pool, reused);
                let shape = in_shapes[0];
                let params = BatchNormParams {
                    scale: ins[1],
                    bias: ins[2],
                    mean: ins[3],
                    var: ins[4],
                    epsilon: *epsilon,
                };
                elementwise::batch_norm(&mut x, shape[1], shape[2..].iter().product(), &params);
                x
            }
            Op::Activation(act) => {
                let mut x = in_place(pool, reused);
                elementwise::activation(*act, &mut x);
                x
            }
            Op::PRelu | Op::Binary(_) => {
                let f = match step.op {
                    Op::Binary(b) => BinFn::Op(*b),
                    _ => BinFn::PRelu,
                };
                let operand = |pos: usize| {
                    if reused.is_some() && step.reuse == Some(pos) {
                        Operand::InOut
                    } else {
                        Operand::Data(ins[pos], in_shapes[pos])
                    }
                };
                let (a, b) = (operand(0), operand(1));
                let mut out = reused.unwrap_or_else(|| pool.take(out_len));
                elementwise::binary(f, a, b, &mut out, out_shape);
                out
            }
            Op::MaxPool(p) => {
                let mut out = pool.take(out_len);
                pooling::max_pool(p, ins[0], in_shapes[0], &mut out, out_shape);
                out
            }
            Op::AveragePool(p) => {
                let mut out = pool.take(out_len);
                pooling::average_pool(p, ins[0], in_shapes[0], &mut out, out_shape);
                out
            }
            Op::SumPool(p) => {
                let mut out = pool.take(out_len);
                pooling::sum_pool(p, ins[0], in_shapes[0], &mut out, out_shape);
                out
            }
            Op::GlobalAveragePool => {
                let mut out = pool.take(out_len);
                pooling::global_average_pool(ins[0], in_shapes[0], &mut out);
                out
            }
            Op::GlobalSumPool => {
                let mut out = pool.take(out_len);
                pooling::global_sum_pool(ins[0], in_shapes[0], &mut out);
                out
            }
            Op::Gemm(g) => {
                let mut out = pool.take(out_len);
                let c = ins.get(2).map(|&c| (c, in_shapes[2]));
                let (a, b) = ((ins[0], in_shapes[0]), (ins[1], in_shapes[1]));
                linalg::gemm(g, a, b, c, &mut out, out_shape);
                if let Some(act) = g.activation {
                    elementwise::activation(act.to_activation(), &mut out);
                }
                out
            }
            Op::MatMul => {
                let mut out = pool.take(out_len);
                linalg::matmul(ins[0], in_shapes[0], ins[1], in_shapes[1], &mut out);
                out
            }
            Op::Softmax { axis } => {
                let mut x = in_place(pool, reused);
                linalg::softmax(&mut x, out_shape, *axis);
                x
            }
            Op::Transpose { perm } => {
                let mut out = pool.take(out_len);
                layout::transpose(ins[0], in_shapes[0], perm, &mut out);
                out
            }
            Op::Concat { axis } => {
                let parts: Vec<(&[f32], &[usize])> =
                    ins.iter().copied().zip(in_shapes.iter().copied()).collect();
                let mut out = pool.take(out_len);
                layout::concat(&parts, *axis, &mut out);
                out
            }
            Op::Pad { pads, value } => {
                let mut out = pool.take(out_len);
                layout::pad(ins[0], in_shapes[0], pads, *value, &mut out, out_shape);
                out
            }
            Op::Slice {
                axis, start, step, ..
            } => {
                let mut out = pool.take(out_len);
                spatial::slice(
                    ins[0],
                    in_shapes[0],
                    *axis,
                    *start,
                    *step,
                    &mut out,
                    out_shape,
                );
                out
            }
            Op::Resize(r) => {
                let mut out = pool.take(out_len);
                spatial::resize(r, ins[0], in_shapes[0], &mut out);
                out
            }
            Op::Input | Op::Constant(_) | Op::Reshape { .. } | Op::Identity | Op::Dropout => {
                return Err(InterpError::Internal(format!(
                    "{} node {} reached the kernel dispatch",
                    step.op.name(),
                    step.node.index()
                )));
            }
        };
        if out.len() != out_len {
            return Err(InterpError::Internal(format!(
                "{} node {} produced {} elements, expected {out_len}",
                step.op.name(),
                step.node.index(),
                out.len()
            )));
        }
        Ok(Value::Owned(Rc::new(out)))
    }
}
