//! Running a graph over many samples, in parallel across samples.
//!
//! A graph is bound to a batch size B (its input's dimension 0, usually 1). A batch of N
//! samples, N a multiple of B, runs as N/B independent chunks spread over rayon's thread
//! pool; each chunk runs single-threaded (the GEMM included), which scales better than
//! splitting every GEMM for the small per-sample matrices of a CNN.

use std::sync::Mutex;

use lutq_ir::{Graph, Tensor, TensorType};
use rayon::prelude::*;

use super::Interpreter;
use crate::InterpError;

/// Runs the single-input `graph` on every sample of `input` (dimension 0 = samples) and
/// returns its first output, the chunks' results concatenated along dimension 0.
/// `progress`, if given, is called with the number of samples finished so far, with
/// increasing values, from whichever worker thread finished them.
pub fn run_batch(
    graph: &Graph,
    input: &Tensor,
    progress: Option<&(dyn Fn(usize) + Sync)>,
) -> Result<Tensor, InterpError> {
    Interpreter::new(graph)?.run_batch(input, progress)
}

/// [`run_batch`] returning every graph output, in [`Graph::outputs`] order.
pub fn run_batch_all_outputs(
    graph: &Graph,
    input: &Tensor,
    progress: Option<&(dyn Fn(usize) + Sync)>,
) -> Result<Vec<Tensor>, InterpError> {
    Interpreter::new(graph)?.run_batch_all_outputs(input, progress)
}

impl Interpreter<'_> {
    /// See [`run_batch`].
    pub fn run_batch(
        &self,
        input: &Tensor,
        progress: Option<&(dyn Fn(usize) + Sync)>,
    ) -> Result<Tensor, InterpError> {
        if self.graph.outputs().is_empty() {
            return Err(InterpError::Unsupported {
                node: self.graph.name.clone(),
                message: "the graph has no outputs".into(),
            });
        }
        let mut outs = self.run_batch_all_outputs(input, progress)?;
        Ok(outs.swap_remove(0))
    }

    /// See [`run_batch_all_outputs`].
    pub fn run_batch_all_outputs(
        &self,
        input: &Tensor,
        progress: Option<&(dyn Fn(usize) + Sync)>,
    ) -> Result<Vec<Tensor>, InterpError> {
        let graph = self.graph;
        let &[input_id] = graph.inputs() else {
            return Err(InterpError::Unsupported {
                node: graph.name.clone(),
                message: format!(
                    "batched runs need a graph with exactly one input; this one has {}",
                    graph.inputs().len()
                ),
            });
        };
        let node = graph.node(input_id);
        let bound = &node.ty.shape;
        let batch_err = |message: String| InterpError::Batch {
            name: node.name.clone(),
            message,
        };
        let Some(data) = input.as_f32() else {
            return Err(batch_err(format!(
                "must hold f32 samples, got {}",
                input.ty()
            )));
        };
        let shape = input.shape();
        if bound.is_empty() || bound[0] == 0 {
            return Err(batch_err(format!(
                "the graph's input {} has no batch dimension to split along",
                node.ty
            )));
        }
        if shape.len() != bound.len() || shape[1..] != bound[1..] {
            return Err(batch_err(format!(
                "expected a batch of shape [N{}] (the graph's input is {}), got {}",
                bound[1..]
                    .iter()
                    .map(|d| format!(",{d}"))
                    .collect::<String>(),
                node.ty,
                input.ty()
            )));
        }
        let (n, b) = (shape[0], bound[0]);
        if n % b != 0 {
            return Err(batch_err(format!(
                "{n} samples is not a multiple of the graph's batch size {b}"
            )));
        }
        for o in graph.outputs() {
            if graph.node(o.node).ty.shape.is_empty() {
                return Err(InterpError::Unsupported {
                    node: o.name.clone(),
                    message: "a scalar output cannot be concatenated along dimension 0".into(),
                });
            }
        }

        let chunk = data.len() / (n / b).max(1);
        let done = Mutex::new(0usize);
        let results: Vec<Vec<Vec<f32>>> = (0..n / b)
            .into_par_iter()
            .map(|i| {
                let out = self.execute(&[&data[i * chunk..(i + 1) * chunk]], None);
                if let Some(report) = progress {
                    // Reporting under the lock keeps the reported counts increasing.
                    let mut finished = done.lock().unwrap_or_else(|e| e.into_inner());
                    *finished += b;
                    report(*finished);
                }
                out
            })
            .collect::<Result<_, _>>()?;

        graph
            .outputs()
            .iter()
            .enumerate()
            .map(|(k, o)| {
                let ty: &TensorType = &graph.node(o.node).ty;
                let mut shape = ty.shape.clone();
                shape[0] *= n / b;
                let mut data = Vec::with_capacity(ty.num_elements() * (n / b));
                for r in &results {
                    data.extend_from_slice(&r[k]);
                }
                Tensor::f32(shape, data)
                    .map_err(|e| InterpError::Internal(format!("batched output '{}': {e}", o.name)))
            })
            .collect()
    }
}
