//! Running an integer graph over many samples, in parallel across samples (the integer
//! twin of the float interpreter's `run_batch`).

use std::sync::Mutex;

use lutq_ir::Tensor;
use rayon::prelude::*;

use super::IntInterpreter;
use crate::InterpError;

impl IntInterpreter<'_> {
    /// Runs the single-input graph on every sample of `input` (f32, dimension 0 =
    /// samples, the other dimensions those of the graph's input). The graph is bound to
    /// a batch size B (its input's dimension 0, normally 1); the N samples, N a multiple
    /// of B, run as N/B independent chunks spread over rayon's thread pool. Returns every
    /// graph output dequantized (`q · 2^-exp`, f32), the chunks' results concatenated
    /// along dimension 0, in [`IntGraph::outputs`](lutq_ir::int::IntGraph) order.
    /// `progress`, if given, is called with the number of samples finished so far, with
    /// increasing values, from whichever worker thread finished them.
    pub fn run_batch(
        &self,
        input: &Tensor,
        progress: Option<&(dyn Fn(usize) + Sync)>,
    ) -> Result<Vec<Tensor>, InterpError> {
        let graph = self.graph;
        let [graph_input] = &graph.inputs[..] else {
            return Err(InterpError::Unsupported {
                node: graph.name.clone(),
                message: format!(
                    "batched runs need a graph with exactly one input; this one has {}",
                    graph.inputs.len()
                ),
            });
        };
        let bound = &graph_input.shape;
        let batch_err = |message: String| InterpError::Batch {
            name: graph_input.name.clone(),
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
                "the graph's input {bound:?} has no batch dimension to split along"
            )));
        }
        if shape.len() != bound.len() || shape[1..] != bound[1..] {
            return Err(batch_err(format!(
                "expected a batch of shape [N{}] (the graph's input is {bound:?}), got {}",
                bound[1..]
                    .iter()
                    .map(|d| format!(",{d}"))
                    .collect::<String>(),
                input.ty()
            )));
        }
        let (n, b) = (shape[0], bound[0]);
        if n % b != 0 {
            return Err(batch_err(format!(
                "{n} samples is not a multiple of the graph's batch size {b}"
            )));
        }
        for o in &graph.outputs {
            if graph.ty(o.value).shape.is_empty() {
                return Err(InterpError::Unsupported {
                    node: o.name.clone(),
                    message: "a scalar output cannot be concatenated along dimension 0".into(),
                });
            }
        }

        let chunks = n / b;
        let chunk = bound.iter().product::<usize>();
        let done = Mutex::new(0usize);
        let results: Vec<Vec<Vec<f32>>> = (0..chunks)
            .into_par_iter()
            .map(|i| {
                let out = self.run_dequantized(&[&data[i * chunk..(i + 1) * chunk]]);
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
            .outputs
            .iter()
            .enumerate()
            .map(|(k, o)| {
                let ty = graph.ty(o.value);
                let mut shape = ty.shape.clone();
                shape[0] *= chunks;
                let mut data = Vec::with_capacity(ty.num_elements() * chunks);
                for r in &results {
                    data.extend_from_slice(&r[k]);
                }
                Tensor::f32(shape, data)
                    .map_err(|e| InterpError::Internal(format!("batched output '{}': {e}", o.name)))
            })
            .collect()
    }
}
