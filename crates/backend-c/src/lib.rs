//! lutq's C99 backend for microcontrollers.
//!
//! * [`memory`]: the static memory plan — where every activation lives in the caller's
//!   arena.
//! * [`emit`](mod@emit): the integer program as standalone C99 (`NAME.h`, `NAME.c`,
//!   `NAME_weights.c`, optionally a harness), kernels specialised per layer.
//! * [`host`]: building the generated code with the system C compiler and piping
//!   samples through it (`lutq run --backend c`, the bit-exactness tests).
//! * [`mcu`]: the same code cross-compiled for a Cortex-M4 and run under QEMU, with
//!   section sizes and instruction counts.
//!
//! Invariant: the generated code computes, for every input, exactly the integers the
//! golden interpreter (`lutq_interp::int`) computes.

pub mod emit;
mod error;
pub mod host;
mod layer_kind;
pub mod mcu;
pub mod memory;

pub use emit::{
    ArenaBlock, ArenaBlocks, CSources, CSummary, EmitOptions, arena_blocks, c_identifier,
    constant_bytes, emit,
};
pub use error::CError;
pub use host::{HostProgram, decode_outputs, quantize_samples};
pub use layer_kind::LayerKind;
pub use memory::{Buffer, MemoryPlan, plan_buffers, plan_memory};
