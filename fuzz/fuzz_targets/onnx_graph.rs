//! `cargo xtask fuzz onnx_graph`: the body is `lutq_fuzz::onnx_graph` (crates/fuzz), which the stable
//! replay test runs on the committed inputs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lutq_fuzz::onnx_graph(data));
