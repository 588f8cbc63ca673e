//! The golden integer interpreter: executes an [`IntGraph`] with exactly the arithmetic
//! of the numeric contract (design brief), as each [`IntOp`]'s documentation states it.
//! It is the oracle the C and JIT backends are compared with bit for bit, so every
//! kernel is written to be obviously equivalent to the op's definition; speed comes only
//! from loop order and from skipping work that is provably zero (padding taps, zero
//! weights), never from a different rounding.
//!
//! * [`IntInterpreter::new`] validates the graph ([`IntGraph::validate`], which includes
//!   the proof that no accumulator overflows i32) and decodes every layer's LUT weights
//!   to int8 once.
//! * [`IntInterpreter::run`] returns the raw output values ([`IntData`]),
//!   [`IntInterpreter::run_dequantized`] their real values `q · 2^-exp` (f32),
//!   [`IntInterpreter::run_with_observer`] also shows every computed value (per-layer
//!   SQNR), and [`IntInterpreter::run_batch`] runs the samples of a batch in parallel.
//! * [`exec_node`] runs one op statelessly; [`linear_accumulators`] and
//!   [`finish_linear`] are the two halves of a linear layer (the quantizer's bias
//!   correction looks between them). Executing a `Linear` node is exactly
//!   `finish_linear(linear_accumulators(..))`.
//!
//! Decisions the contract leaves open, which every backend must share:
//! * `QuantizeInput` of NaN is 0 (then clamped into the range), ±∞ saturate. The
//!   rounding is exact (computed in f64; see `exec::quantize`).
//! * A max-pool window with no tap inside the input (only possible with dilations)
//!   yields the element type's minimum, what padding counts as.
//!
//! Kernels: `linear` (convolution and dense), `exec` (every other op and the dispatch).

mod batch;
mod exec;
mod linear;

use lutq_ir::int::{IntElem, IntGraph, IntOp, ValueId};

use crate::InterpError;
pub use exec::{exec_node, exec_with};
pub use linear::{LinearWeights, finish_linear, linear_accumulators, linear_accumulators_prepared};

/// The elements of an integer value, in its type's element type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntData {
    I8(Vec<i8>),
    U8(Vec<u8>),
    I32(Vec<i32>),
}

impl IntData {
    /// `values` stored as `elem`, each saturated to `elem`'s range.
    pub fn from_i32(elem: IntElem, values: Vec<i32>) -> IntData {
        match elem {
            IntElem::I8 => IntData::I8(values.iter().map(|&v| v.clamp(-128, 127) as i8).collect()),
            IntElem::U8 => IntData::U8(values.iter().map(|&v| v.clamp(0, 255) as u8).collect()),
            IntElem::I32 => IntData::I32(values),
        }
    }

    /// All zeros.
    pub fn zeros(elem: IntElem, len: usize) -> IntData {
        match elem {
            IntElem::I8 => IntData::I8(vec![0; len]),
            IntElem::U8 => IntData::U8(vec![0; len]),
            IntElem::I32 => IntData::I32(vec![0; len]),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            IntData::I8(v) => v.len(),
            IntData::U8(v) => v.len(),
            IntData::I32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i`, widened. Panics if `i` is out of bounds.
    #[inline]
    pub fn get(&self, i: usize) -> i32 {
        match self {
            IntData::I8(v) => v[i] as i32,
            IntData::U8(v) => v[i] as i32,
            IntData::I32(v) => v[i],
        }
    }

    pub fn elem(&self) -> IntElem {
        match self {
            IntData::I8(_) => IntElem::I8,
            IntData::U8(_) => IntElem::U8,
            IntData::I32(_) => IntElem::I32,
        }
    }

    /// Every element, widened to i32.
    pub fn to_i32(&self) -> Vec<i32> {
        match self {
            IntData::I8(v) => v.iter().map(|&x| x as i32).collect(),
            IntData::U8(v) => v.iter().map(|&x| x as i32).collect(),
            IntData::I32(v) => v.clone(),
        }
    }

    /// The real values `q · 2^-exp` (the dequantization at the model boundary): exact for
    /// 8-bit values and for i32 values of at most 24 significant bits; other i32 values
    /// are rounded to the nearest f32.
    pub fn to_f32(&self, exp: i32) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len());
        self.to_f32_into(exp, &mut out);
        out
    }

    /// [`Self::to_f32`] into `out` (its contents replaced), reusing its allocation.
    pub fn to_f32_into(&self, exp: i32, out: &mut Vec<f32>) {
        let step = (-(exp.clamp(-1074, 1023) as f64)).exp2();
        // One loop per element type (vectorized), not a match per element.
        let real = |q: i32| (q as f64 * step) as f32;
        out.clear();
        match self {
            IntData::I8(v) => out.extend(v.iter().map(|&q| real(q as i32))),
            IntData::U8(v) => out.extend(v.iter().map(|&q| real(q as i32))),
            IntData::I32(v) => out.extend(v.iter().map(|&q| real(q))),
        }
    }
}

/// What [`IntInterpreter::run_with_observer`] calls with each computed value: the node
/// that produced it (its [`ValueId`]) and its elements.
pub type IntObserver<'o> = dyn FnMut(ValueId, &IntData) + 'o;

/// An [`IntGraph`] ready to run: validated, with its weights decoded. Cheap to share
/// between threads ([`IntInterpreter::run_batch`] does).
pub struct IntInterpreter<'g> {
    graph: &'g IntGraph,
    /// Per node: the int8 weights of a linear layer, `[O][K]`, prepared for the kernels.
    decoded: Vec<Option<LinearWeights>>,
    /// Per value: the index of the last node that reads it (see `IntGraph::last_use`).
    last_use: Vec<Option<usize>>,
}

impl<'g> IntInterpreter<'g> {
    /// Validates `graph` and decodes its weights.
    pub fn new(graph: &'g IntGraph) -> Result<Self, InterpError> {
        graph.validate()?;
        let decoded = graph
            .nodes
            .iter()
            .map(|n| match &n.op {
                IntOp::Linear(l) => Some(LinearWeights::of(l)),
                _ => None,
            })
            .collect();
        Ok(IntInterpreter {
            graph,
            decoded,
            last_use: graph.last_use(),
        })
    }

    pub fn graph(&self) -> &'g IntGraph {
        self.graph
    }

    /// Runs the graph on its f32 inputs (in [`IntGraph::inputs`] order, each holding its
    /// shape's elements, row-major) and returns the raw output values in
    /// [`IntGraph::outputs`] order.
    pub fn run(&self, inputs: &[&[f32]]) -> Result<Vec<IntData>, InterpError> {
        self.execute(inputs, None)
    }

    /// [`run`](Self::run), with every output dequantized: `q · 2^-exp` as f32.
    pub fn run_dequantized(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, InterpError> {
        let raw = self.run(inputs)?;
        Ok(self.dequantize(&raw))
    }

    /// [`run`](Self::run), calling `observer` with every value as soon as it is computed,
    /// in node order (every node runs, whether or not an output depends on it).
    pub fn run_with_observer(
        &self,
        inputs: &[&[f32]],
        observer: &mut IntObserver<'_>,
    ) -> Result<Vec<IntData>, InterpError> {
        self.execute(inputs, Some(observer))
    }

    fn dequantize(&self, raw: &[IntData]) -> Vec<Vec<f32>> {
        raw.iter()
            .zip(&self.graph.outputs)
            .map(|(d, o)| d.to_f32(self.graph.ty(o.value).exp))
            .collect()
    }

    fn execute(
        &self,
        inputs: &[&[f32]],
        mut observer: Option<&mut IntObserver<'_>>,
    ) -> Result<Vec<IntData>, InterpError> {
        let graph = self.graph;
        if inputs.len() != graph.inputs.len() {
            return Err(InterpError::InputCount {
                expected: graph.inputs.len(),
                actual: inputs.len(),
            });
        }
        for (x, inp) in inputs.iter().zip(&graph.inputs) {
            if x.len() != inp.shape.iter().product::<usize>() {
                return Err(InterpError::InputType {
                    name: inp.name.clone(),
                    expected: lutq_ir::TensorType::f32(inp.shape.clone()),
                    actual: lutq_ir::TensorType::f32([x.len()]),
                });
            }
        }
        let mut values: Vec<Option<IntData>> = vec![None; graph.nodes.len()];
        for (i, node) in graph.nodes.iter().enumerate() {
            let args: Vec<&IntData> = node
                .inputs
                .iter()
                .map(|v| {
                    values[v.index()].as_ref().ok_or_else(|| {
                        InterpError::Internal(format!("%{} was freed too early", v.0))
                    })
                })
                .collect::<Result<_, _>>()?;
            let out = exec::exec_with(graph, node, &args, inputs, self.decoded[i].as_ref())?;
            if let Some(obs) = observer.as_mut() {
                obs(ValueId(i as u32), &out);
            }
            // Free the inputs this node was the last reader of.
            for v in &node.inputs {
                if self.last_use[v.index()] == Some(i) {
                    values[v.index()] = None;
                }
            }
            if self.last_use[i].is_some() {
                values[i] = Some(out);
            }
        }
        graph
            .outputs
            .iter()
            .map(|o| {
                values[o.value.index()].clone().ok_or_else(|| {
                    InterpError::Internal(format!("output '{}' was not kept", o.name))
                })
            })
            .collect()
    }
}
