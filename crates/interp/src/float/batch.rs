//! Running a graph over many samples, in parallel across samples.
//!
//! A graph is bound to a batch size B (its input's dimension 0, usually 1). A batch of N
//! samples, N a multiple of B, runs as N/B independent chunks spread over rayon's thread
//! pool; each chunk runs single-threaded (the GEMM included), which scales better than
//! splitting every GEMM for the small per-sample matrices of a CNN.

use lutq_ir::{Graph, Tensor};

use super::Interpreter;
use crate::InterpError;
use crate::batch::{BatchShape, run_batched};

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
        let input_node = graph.inputs().first().map(|&id| graph.node(id));
        let spec = BatchShape {
            graph_name: &graph.name,
            inputs: graph.inputs().len(),
            input_name: input_node.map_or("", |n| &n.name),
            input_shape: input_node.map_or(&[][..], |n| &n.ty.shape[..]),
            input_type: input_node.map_or(String::new(), |n| n.ty.to_string()),
            outputs: graph
                .outputs()
                .iter()
                .map(|o| (o.name.as_str(), &graph.node(o.node).ty.shape[..]))
                .collect(),
        };
        run_batched(&spec, input, progress, |chunk| self.execute(&[chunk], None))
    }
}
