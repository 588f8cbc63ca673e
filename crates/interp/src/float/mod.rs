//! The float reference interpreter: f32, ONNX semantics, every op of [`lutq_ir::Op`].
//!
//! [`Interpreter::new`] validates a graph and plans its execution once (`plan`): the
//! order (the graph's canonical topological order, without nodes no output depends on),
//! after which step each intermediate buffer can be freed, and which ops may overwrite an
//! input buffer they are the last reader of (activations, BatchNorm, residual adds, …).
//! Plain runs also fuse BatchNorms and activations into the Conv before them, applied per
//! output block while it is in cache; this is bit-identical to running them separately,
//! which observed runs do so that every tensor exists. A Conv's own `activation` attribute
//! (set by `lutq-opt`) runs first in that same epilogue, in plain and observed runs; a
//! Gemm's runs over its output right after the GEMM, with the same activation kernel.
//!
//! Running a plan (`exec`) allocates only intermediate tensors, from a per-thread pool of
//! freed buffers; constants and inputs are read in place and Reshape/Identity/Dropout
//! share their input's buffer. Kernels live in one module per op family.

mod batch;
mod conv;
mod elementwise;
mod exec;
mod linalg;
mod plan;
mod pooling;
mod spatial;

use lutq_ir::{ElemType, Graph, NodeId, Op, Tensor, TensorType};

use crate::InterpError;
pub use batch::{run_batch, run_batch_all_outputs};
use plan::{Step, fuse, plan_lifetimes};

/// Runs `graph` once. `inputs` are in [`Graph::inputs`] order and must match their types
/// exactly; the outputs come in [`Graph::outputs`] order.
///
/// Plans the graph on every call; to run one graph many times, build an [`Interpreter`].
pub fn run(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
    Interpreter::new(graph)?.run(inputs)
}

/// Like [`run`], and calls `observer` with every tensor the run computes: each graph
/// input first, then every op's output as soon as it is computed (constants are not
/// reported; nor are nodes that no graph output depends on, which are not run).
pub fn run_with_observer(
    graph: &Graph,
    inputs: &[Tensor],
    observer: &mut Observer<'_>,
) -> Result<Vec<Tensor>, InterpError> {
    Interpreter::new(graph)?.run_with_observer(inputs, observer)
}

/// What [`run_with_observer`] calls with each computed tensor: the node that produced it
/// and its contents.
pub type Observer<'o> = dyn FnMut(NodeId, TensorView<'_>) + 'o;

/// A borrowed f32 tensor, as handed to observers.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

/// A graph planned for execution. Cheap to share between threads (`run_batch` does).
pub struct Interpreter<'g> {
    graph: &'g Graph,
    /// The plan for plain runs: BatchNorms and activations that directly follow a Conv
    /// run inside it (bit-identical, see `conv::Epilogue`), so their tensors never
    /// exist.
    steps: Vec<Step<'g>>,
    /// The plan for observed runs, one step per op, so that every tensor can be shown.
    observed_steps: Vec<Step<'g>>,
    /// Value slot (node index) of every graph output, in order.
    outputs: Vec<usize>,
    /// Constants, read in place from the graph.
    constants: Vec<(usize, &'g [f32])>,
    /// Static shape of each slot's tensor (empty for slots no node occupies).
    shapes: Vec<&'g [usize]>,
}

fn is_f32(ty: &TensorType) -> bool {
    ty.elem == ElemType::F32
}

impl<'g> Interpreter<'g> {
    /// Validates `graph` and plans its execution. Fails on graphs that are not well
    /// formed or hold non-f32 tensors.
    pub fn new(graph: &'g Graph) -> Result<Self, InterpError> {
        graph.validate()?;
        let slots = graph.node_ids().map(|id| id.index() + 1).max().unwrap_or(0);
        let mut shapes: Vec<&'g [usize]> = vec![&[]; slots];
        for id in graph.node_ids() {
            shapes[id.index()] = &graph.node(id).ty.shape;
        }

        // Nodes some output depends on; the rest is never run.
        let mut live = vec![false; slots];
        let mut stack: Vec<NodeId> = graph.outputs().iter().map(|o| o.node).collect();
        while let Some(id) = stack.pop() {
            if !std::mem::replace(&mut live[id.index()], true) {
                stack.extend(graph.node_inputs(id));
            }
        }

        let mut steps = Vec::new();
        let mut constants = Vec::new();
        for id in graph.topo_order() {
            let node = graph.node(id);
            if !is_f32(&node.ty) {
                return Err(InterpError::Unsupported {
                    node: node.name.clone(),
                    message: format!(
                        "produces {}; the float interpreter runs f32 graphs only",
                        node.ty
                    ),
                });
            }
            if !live[id.index()] {
                continue;
            }
            match &node.op {
                Op::Input => {
                    if !graph.inputs().contains(&id) {
                        return Err(InterpError::Unsupported {
                            node: node.name.clone(),
                            message: "input node is not among the graph's inputs".into(),
                        });
                    }
                }
                Op::Constant(t) => {
                    let data = t.as_f32().ok_or_else(|| {
                        InterpError::Internal(format!(
                            "constant '{}' has type f32 but non-f32 data",
                            node.name
                        ))
                    })?;
                    constants.push((id.index(), data));
                }
                op => steps.push(Step {
                    node: id,
                    op,
                    inputs: graph.node_inputs(id).iter().map(|i| i.index()).collect(),
                    // A Conv's own activation attribute runs in the same epilogue as
                    // activations fused at run time, so both round identically.
                    fused: match op {
                        Op::Conv(c) => c
                            .activation
                            .map(|a| plan::Fused::Activation(a.to_activation()))
                            .into_iter()
                            .collect(),
                        _ => Vec::new(),
                    },
                    reuse: None,
                    free: Vec::new(),
                }),
            }
        }
        let outputs: Vec<usize> = graph.outputs().iter().map(|o| o.node.index()).collect();
        let mut fused = fuse(&steps, &outputs, slots);
        plan_lifetimes(&mut steps, &outputs, &shapes);
        plan_lifetimes(&mut fused, &outputs, &shapes);
        Ok(Interpreter {
            graph,
            steps: fused,
            observed_steps: steps,
            outputs,
            constants,
            shapes,
        })
    }

    pub fn graph(&self) -> &'g Graph {
        self.graph
    }

    /// Runs the graph once; see [`run`].
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
        let slices = self.check_inputs(inputs)?;
        let outs = self.execute(&slices, None)?;
        self.wrap_outputs(outs)
    }

    /// Runs the graph once, reporting every computed tensor; see [`run_with_observer`].
    pub fn run_with_observer(
        &self,
        inputs: &[Tensor],
        observer: &mut Observer<'_>,
    ) -> Result<Vec<Tensor>, InterpError> {
        let slices = self.check_inputs(inputs)?;
        let outs = self.execute(&slices, Some(observer))?;
        self.wrap_outputs(outs)
    }

    /// Runs the graph on raw f32 slices (inputs in graph order, each with exactly the
    /// input's number of elements; shapes are the graph's) and returns the outputs' raw
    /// elements. For callers that hold data in their own buffers and want no copies.
    pub fn run_slices(
        &self,
        inputs: &[&[f32]],
        observer: Option<&mut Observer<'_>>,
    ) -> Result<Vec<Vec<f32>>, InterpError> {
        let ids = self.graph.inputs();
        if inputs.len() != ids.len() {
            return Err(InterpError::InputCount {
                expected: ids.len(),
                actual: inputs.len(),
            });
        }
        for (&id, data) in ids.iter().zip(inputs) {
            let node = self.graph.node(id);
            if data.len() != node.ty.num_elements() {
                return Err(InterpError::InputType {
                    name: node.name.clone(),
                    expected: node.ty.clone(),
                    actual: TensorType::f32([data.len()]),
                });
            }
        }
        self.execute(inputs, observer)
    }

    fn check_inputs<'t>(&self, inputs: &'t [Tensor]) -> Result<Vec<&'t [f32]>, InterpError> {
        let ids = self.graph.inputs();
        if inputs.len() != ids.len() {
            return Err(InterpError::InputCount {
                expected: ids.len(),
                actual: inputs.len(),
            });
        }
        ids.iter()
            .zip(inputs)
            .map(|(&id, t)| {
                let node = self.graph.node(id);
                match t.as_f32() {
                    Some(data) if t.shape() == node.ty.shape => Ok(data),
                    _ => Err(InterpError::InputType {
                        name: node.name.clone(),
                        expected: node.ty.clone(),
                        actual: t.ty(),
                    }),
                }
            })
            .collect()
    }

    fn wrap_outputs(&self, outs: Vec<Vec<f32>>) -> Result<Vec<Tensor>, InterpError> {
        self.graph
            .outputs()
            .iter()
            .zip(outs)
            .map(|(o, data)| {
                Tensor::f32(self.graph.node(o.node).ty.shape.clone(), data)
                    .map_err(|e| InterpError::Internal(format!("output '{}': {e}", o.name)))
            })
            .collect()
    }
}
