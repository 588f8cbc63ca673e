//! Truncated and bit-flipped copies of real models: the importer returns Ok or Err, and
//! never panics. Deterministic (a fixed-seed xorshift), a few hundred mutations.
//!
//! `models/mobilenet_v2.onnx` must exist: a missing file fails the test, it is not skipped.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use common::*;

/// xorshift64*: deterministic and good enough to pick offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `bytes`: a truncation, 1–4 flipped bits, or an overwritten byte with a
/// boundary value; `focus` bytes at the start and end get most of the flips (where the
/// node list and graph inputs/outputs are in a model dominated by weights).
fn mutate(bytes: &[u8], rng: &mut Rng, focus: usize) -> Vec<u8> {
    let len = bytes.len();
    let pick = |rng: &mut Rng| {
        if rng.below(4) == 0 || len <= 2 * focus {
            rng.below(len)
        } else if rng.below(2) == 0 {
            rng.below(focus)
        } else {
            len - 1 - rng.below(focus)
        }
    };
    match rng.below(3) {
        0 => bytes[..rng.below(len)].to_vec(),
        1 => {
            let mut b = bytes.to_vec();
            for _ in 0..1 + rng.below(4) {
                let i = pick(rng);
                b[i] ^= 1 << rng.below(8);
            }
            b
        }
        _ => {
            let mut b = bytes.to_vec();
            let i = pick(rng);
            b[i] = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.below(5)];
            b
        }
    }
}

/// Imports and summarizes every mutation; returns how many imported successfully.
fn survive(name: &str, bytes: &[u8], mutations: usize, seed: u64, focus: usize) -> usize {
    let mut rng = Rng(seed);
    let mut ok = 0;
    for i in 0..mutations {
        let m = mutate(bytes, &mut rng, focus);
        let result = catch_unwind(AssertUnwindSafe(|| {
            let imported = lutq_onnx::import(&m, &lutq_onnx::ImportOptions::default());
            if let Ok(g) = &imported {
                g.validate().expect("an imported graph is valid");
            }
            let _ = lutq_onnx::summarize(&m);
            imported.is_ok()
        }));
        match result {
            Ok(true) => ok += 1,
            Ok(false) => {}
            Err(_) => panic!("{name}: mutation {i} (seed {seed}) panicked"),
        }
    }
    ok
}

fn small_model() -> Vec<u8> {
    Model::new(13)
        .input_typed(
            "x",
            lutq_onnx::proto::tensor_proto::DataType::Float,
            vec![D::S("N"), D::N(3), D::N(8), D::N(8)],
        )
        .weight("w", &[4, 3, 3, 3])
        .weight("b", &[4])
        .init_i64("shape", &[2], vec![0, -1])
        .named_node(
            "conv",
            "Conv",
            &["x", "w", "b"],
            &["c"],
            vec![ints("pads", &[1, 1, 1, 1]), ints("strides", &[2, 2])],
        )
        .node(
            "Constant",
            &[],
            &["six"],
            vec![tensor("value", tensor_f32(&[], vec![6.0]))],
        )
        .named_node("clip", "Clip", &["c", "", "six"], &["r"], vec![])
        .named_node(
            "pool",
            "MaxPool",
            &["r"],
            &["p"],
            vec![
                ints("kernel_shape", &[2, 2]),
                string("auto_pad", "SAME_UPPER"),
            ],
        )
        .named_node("flat", "Reshape", &["p", "shape"], &["f"], vec![])
        .named_node("sm", "Softmax", &["f"], &["y"], vec![int("axis", -1)])
        .output("y")
        .bytes()
}

#[test]
fn mutated_small_model_never_panics() {
    let bytes = small_model();
    lutq_onnx::import(&bytes, &Default::default()).unwrap();
    let ok = survive("small model", &bytes, 400, 0x5eed_0001, 64);
    // Some mutations leave the model valid; most do not.
    assert!(ok < 400, "{ok} of 400 mutations imported");
}

#[test]
fn mutated_mobilenet_never_panics() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/mobilenet_v2.onnx"
    );
    let bytes = std::fs::read(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (the bundled model is required, see models/)"));
    lutq_onnx::import(&bytes, &Default::default()).unwrap();
    // Each import of the full model takes a few tens of ms: fewer mutations, focused on
    // the 64 KiB at each end where the structure lives.
    survive("mobilenet_v2", &bytes, 80, 0x5eed_0002, 64 * 1024);
}
