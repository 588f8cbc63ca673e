//! The stable-toolchain side of the fuzzing (docs/fuzzing.md): every generated seed, every
//! committed corpus input (`fuzz/corpus-min/TARGET/`) and every crash input the fuzzer
//! found (`fuzz/regressions/TARGET/`) runs through the same target functions as
//! `cargo xtask fuzz`, in the normal `cargo test`. A regression input that panics again
//! fails the test with its file name.

use std::path::{Path, PathBuf};

use lutq_fuzz::{Backends, TARGETS, run_target, seeds};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The committed inputs of `target` under `fuzz/{dir}/{target}/`, sorted by name.
fn committed(dir: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let path = fuzz_dir().join(dir).join(target);
    let Ok(entries) = std::fs::read_dir(&path) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|e| e.expect("read_dir entry").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), bytes)
        })
        .collect()
}

fn replay(target: &str) -> usize {
    let mut inputs = seeds(target);
    inputs.extend(committed("corpus-min", target));
    inputs.extend(committed("regressions", target));
    // One C compilation for the seeds (64 programs).
    let mut backends = Backends::new(64);
    for (name, data) in &inputs {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_target(target, data, &mut backends).expect("a known target");
        }));
        assert!(result.is_ok(), "{target}: input {name} panics");
    }
    backends.flush();
    if target == "backends" {
        assert!(backends.programs > 0, "no program compared");
    }
    inputs.len()
}

#[test]
fn onnx_import_inputs_do_not_panic() {
    assert!(replay("onnx_import") > 0);
}

#[test]
fn onnx_graph_inputs_do_not_panic() {
    assert!(replay("onnx_graph") > 0);
}

#[test]
fn backends_agree_on_every_input() {
    assert!(replay("backends") > 0);
}

#[test]
fn npy_inputs_do_not_panic() {
    assert!(replay("npy") > 0);
}

#[test]
fn every_target_has_a_test_and_a_fuzz_target() {
    for t in TARGETS {
        let path = fuzz_dir().join("fuzz_targets").join(format!("{t}.rs"));
        assert!(path.is_file(), "{} is missing", path.display());
        assert!(!seeds(t).is_empty(), "{t} has no seeds");
    }
}
