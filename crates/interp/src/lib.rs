//! lutq's reference interpreters.
//!
//! [`float`] executes a float IR graph in f32 with ONNX semantics. It is the reference the
//! rest of the toolchain is measured against and the calibration engine of the quantizer,
//! so it is built for throughput: convolutions run on a maintained GEMM (im2col only where
//! a kernel needs it), depthwise convolutions on a direct loop, buffers are freed (or
//! reused in place) as soon as their last reader has run, and [`run_batch`] spreads the
//! samples of a batch over threads with rayon.
//!
//! [`int`] is the golden integer interpreter: it executes a quantized
//! [`lutq_ir::int::IntGraph`] with exactly the numeric contract's arithmetic, the oracle
//! every integer backend is compared with bit for bit. Both share the error type.
//!
//! ```
//! use lutq_ir::{Activation, Graph, Op, Tensor, TensorType};
//!
//! let mut g = Graph::new("relu");
//! let x = g.add_input("x", TensorType::f32([1, 3]));
//! let y = g.add_node("relu", Op::Activation(Activation::Relu), &[x]).unwrap();
//! g.add_output("y", y).unwrap();
//! let input = Tensor::f32([1, 3], vec![-1.0, 0.5, 2.0]).unwrap();
//! let out = lutq_interp::run(&g, &[input]).unwrap();
//! assert_eq!(out[0].as_f32().unwrap(), &[0.0, 0.5, 2.0]);
//! ```

mod batch;
mod error;
pub mod float;
pub mod int;
mod layout;
pub mod metrics;
mod sgemm;
pub use sgemm::{Strides, accumulate_cross_gram, accumulate_gram, row_major, sgemm, transposed};
mod shape;
mod simd;

pub use error::InterpError;
pub use float::{
    Interpreter, Observer, TensorView, run, run_batch, run_batch_all_outputs, run_with_observer,
};
pub use int::{IntData, IntInterpreter};
