//! The importer's resource limits: a model file is untrusted input, and none of these
//! lets a hostile one make lutq allocate without bound or run for minutes. Each is far
//! above any model lutq targets; a model over one gets an error naming the constant.
//! There is no flag to raise them: change the constant here and rebuild.
//!
//! | limit | value | what it bounds | checked |
//! |---|---|---|---|
//! | [`MAX_NODES`] | 100 000 | nodes of the graph | before anything else is looked at ([`crate::ImportError::Limit`]) |
//! | [`MAX_RANK`] | 16 | dimensions of a graph input, an initializer or constant, a node's result | graph inputs, tensor decoding, every IR node the importer emits |
//! | [`MAX_ELEMENTS`] | 2^28 (1 GiB of f32) | elements of any tensor of the imported graph (inputs, results) | graph inputs, every IR node the importer emits |
//! | [`MAX_FOLD_ELEMENTS`] | 2^22 | elements of a constant folded at import (ConstantOfShape, Range, Expand, …) | the constant evaluators |
//! | [`MAX_ATTR_VALUE`] | 2^31 | size-like attribute values (pads, strides, kernel sizes, block sizes, …) | attribute parsing |
//! | [`MAX_NESTING`] | 100 | nesting of protobuf messages (subgraphs in attributes, …) | the protobuf decoder (prost's recursion limit) |
//!
//! Initializers need no limit of their own: their data is read from the model's bytes
//! (a tensor whose dims promise more data than it holds is an error before anything is
//! allocated), and external data is never read.

/// The most nodes a graph may have: real CNNs have hundreds to a few thousand; the
/// optimizer and the quantizer scale with the node count.
pub const MAX_NODES: usize = 100_000;

/// The most dimensions of any tensor: ONNX sets none, real models stay below 8.
pub const MAX_RANK: usize = 16;

/// The most elements any tensor of an imported graph may have (1 GiB of f32): the float
/// interpreter and the quantizer allocate tensors of this size, so it bounds their
/// memory per tensor; low enough that shape arithmetic cannot overflow.
pub const MAX_ELEMENTS: usize = 1 << 28;

/// The most elements a constant folded at import may have (4 Mi): far above any shape
/// computation, low enough that a malformed ConstantOfShape or Range cannot exhaust
/// memory.
pub const MAX_FOLD_ELEMENTS: usize = 1 << 22;

/// The largest size-like attribute value (pads, strides, dilations, kernel sizes,
/// permutation entries) the importer accepts: far above any real model, low enough that
/// shape arithmetic cannot overflow.
pub const MAX_ATTR_VALUE: usize = 1 << 31;

/// The deepest nesting of protobuf messages the decoder accepts (prost's fixed recursion
/// limit): deeper input is [`crate::ImportError::Decode`].
pub const MAX_NESTING: usize = 100;
