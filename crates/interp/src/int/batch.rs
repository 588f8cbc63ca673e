//! Running an integer graph over many samples, in parallel across samples (the integer
//! twin of the float interpreter's `run_batch`).

use lutq_ir::Tensor;

use super::IntInterpreter;
use crate::InterpError;
use crate::batch::{BatchShape, run_batched};

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
        let input_shape = graph.inputs.first().map_or(&[][..], |i| &i.shape[..]);
        let spec = BatchShape {
            graph_name: &graph.name,
            inputs: graph.inputs.len(),
            input_name: graph.inputs.first().map_or("", |i| &i.name),
            input_shape,
            input_type: format!("{input_shape:?}"),
            outputs: graph
                .outputs
                .iter()
                .map(|o| (o.name.as_str(), &graph.ty(o.value).shape[..]))
                .collect(),
        };
        run_batched(&spec, input, progress, |chunk| {
            self.run_dequantized(&[chunk])
        })
    }
}
