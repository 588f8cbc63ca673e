//! Splitting a batch of samples into the chunks a graph is bound to, running them in
//! parallel and concatenating the outputs: shared by the float and integer interpreters.

use std::sync::Mutex;

use lutq_ir::Tensor;
use rayon::prelude::*;

use crate::InterpError;

/// What a batched run needs to know of a graph.
pub(crate) struct BatchShape<'a> {
    pub graph_name: &'a str,
    /// Number of graph inputs (batched runs need exactly one).
    pub inputs: usize,
    pub input_name: &'a str,
    /// The input's static shape; dimension 0 is the batch B the graph is bound to.
    pub input_shape: &'a [usize],
    /// The input's type as messages print it.
    pub input_type: String,
    /// Name and shape of every output, in order.
    pub outputs: Vec<(&'a str, &'a [usize])>,
}

/// Runs `run_chunk` (one chunk of B samples in, every output's f32 elements out) on every
/// chunk of `input` (`[N, …]`, N a multiple of B) in parallel and concatenates each
/// output along dimension 0. `progress`, if given, sees increasing sample counts.
pub(crate) fn run_batched(
    spec: &BatchShape<'_>,
    input: &Tensor,
    progress: Option<&(dyn Fn(usize) + Sync)>,
    run_chunk: impl Fn(&[f32]) -> Result<Vec<Vec<f32>>, InterpError> + Sync,
) -> Result<Vec<Tensor>, InterpError> {
    if spec.inputs != 1 {
        return Err(InterpError::Unsupported {
            node: spec.graph_name.to_string(),
            message: format!(
                "batched runs need a graph with exactly one input; this one has {}",
                spec.inputs
            ),
        });
    }
    let bound = spec.input_shape;
    let batch_err = |message: String| InterpError::Batch {
        name: spec.input_name.to_string(),
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
            spec.input_type
        )));
    }
    if shape.len() != bound.len() || shape[1..] != bound[1..] {
        return Err(batch_err(format!(
            "expected a batch of shape [N{}] (the graph's input is {}), got {}",
            bound[1..]
                .iter()
                .map(|d| format!(",{d}"))
                .collect::<String>(),
            spec.input_type,
            input.ty()
        )));
    }
    let (n, b) = (shape[0], bound[0]);
    if n % b != 0 {
        return Err(batch_err(format!(
            "{n} samples is not a multiple of the graph's batch size {b}"
        )));
    }
    for (name, shape) in &spec.outputs {
        if shape.is_empty() {
            return Err(InterpError::Unsupported {
                node: name.to_string(),
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
            let out = run_chunk(&data[i * chunk..(i + 1) * chunk]);
            if let Some(report) = progress {
                // Reporting under the lock keeps the reported counts increasing.
                let mut finished = done.lock().unwrap_or_else(|e| e.into_inner());
                *finished += b;
                report(*finished);
            }
            out
        })
        .collect::<Result<_, _>>()?;

    spec.outputs
        .iter()
        .enumerate()
        .map(|(k, (name, out_shape))| {
            let mut shape = out_shape.to_vec();
            shape[0] *= chunks;
            let mut data = Vec::with_capacity(shape.iter().product());
            for r in &results {
                data.extend_from_slice(&r[k]);
            }
            Tensor::f32(shape, data)
                .map_err(|e| InterpError::Internal(format!("batched output '{name}': {e}")))
        })
        .collect()
}
