//! `cargo xtask fuzz npy`: the body is `lutq_fuzz::npy` (crates/fuzz), which the stable
//! replay test runs on the committed inputs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lutq_fuzz::npy(data));
