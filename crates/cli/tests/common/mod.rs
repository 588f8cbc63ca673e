//! What every CLI test needs: the repository root and the `lutq` binary run from it.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (models and data paths in the tests are relative to it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the `lutq` binary with `args` in the repository root.
pub fn lutq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lutq"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}
