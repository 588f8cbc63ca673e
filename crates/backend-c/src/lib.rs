//! lutq's C99 backend for microcontrollers.
//!
//! So far: the static memory plan ([`memory`]) that decides where every activation of an
//! integer program lives in the caller's arena. The C emitter builds on it.

pub mod memory;

pub use memory::{Buffer, MemoryPlan, plan_buffers, plan_memory};
