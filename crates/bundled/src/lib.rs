//! The bundled models (`models/`) and data slices (`data/`) as values, and the default
//! pipeline from a bundled model to its lowered integer program. Tests, benchmarks and
//! xtask tasks of the backends share these instead of each re-deriving paths and
//! pipelines; the CLI does not use it (it takes paths from the user).
//!
//! [`random`] makes random small integer programs for property tests; [`synthetic`]
//! small float networks for the ops no bundled model has.
//!
//! Errors are `anyhow`: every caller is a test or a developer task that reports and stops.

pub mod random;
pub mod synthetic;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use lutq_ir::int::IntGraph;
use lutq_ir::{Graph, Tensor};
use lutq_quant::{Mode, QuantOptions};

/// The repository root (this crate lives in `crates/bundled`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Samples `skip..skip + limit` (fewer at the end of the file) of an NPY file under the
/// repository root, as a float tensor whose first dimension counts them.
pub fn samples(rel: &str, skip: usize, limit: usize) -> anyhow::Result<Tensor> {
    let path = root().join(rel);
    let a = lutq_dataio::NpyArray::from_npy_file(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let total = a.shape.first().copied().unwrap_or(0);
    anyhow::ensure!(
        skip <= total,
        "{rel} has {total} samples, cannot skip {skip}"
    );
    let per = a.data.len() / total.max(1);
    let n = limit.min(total - skip);
    let mut shape = a.shape.clone();
    shape[0] = n;
    Ok(Tensor::f32(
        shape,
        a.data[skip * per..(skip + n) * per].to_vec(),
    )?)
}

/// The rows of a sample tensor, one `&[f32]` per sample.
pub fn rows(t: &Tensor) -> Vec<&[f32]> {
    let x = t.as_f32().expect("bundled samples are float32");
    let n = t.shape()[0].max(1);
    x.chunks(x.len() / n).collect()
}

/// `models/NAME.onnx`, imported and optimized with default options.
pub fn optimized(name: &str) -> anyhow::Result<Graph> {
    let path = root().join(format!("models/{name}.onnx"));
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let graph = lutq_onnx::import(&bytes, &Default::default())?;
    Ok(lutq_opt::optimize(&graph, &Default::default())?.0)
}

/// `models/NAME.onnx` through the default pipeline (optimize, quantize in `mode` on
/// `calib`, exact integer rewrites): the program the backends run.
pub fn lowered(name: &str, mode: Mode, calib: &Tensor) -> anyhow::Result<IntGraph> {
    lowered_with(name, &QuantOptions::new(mode), calib)
}

/// [`lowered`] with any quantizer options (e.g. `--reconstruct`'s).
pub fn lowered_with(
    name: &str,
    options: &QuantOptions,
    calib: &Tensor,
) -> anyhow::Result<IntGraph> {
    let graph = optimized(name)?;
    let g = lutq_quant::quantize(&graph, calib, options, &|_| {})?.0;
    Ok(lutq_opt::optimize_int(&g, &Default::default())?.0)
}

/// The first `n` committed Fashion-MNIST training images (calibration).
pub fn fashion_calib(n: usize) -> anyhow::Result<Tensor> {
    samples("data/fashion_mnist/train_x.npy", 0, n)
}

/// The first `n` images of the committed Fashion-MNIST test slice (1,000 images).
pub fn fashion_test(n: usize) -> anyhow::Result<Tensor> {
    samples("data/fashion_mnist/test_x.npy", 0, n)
}

/// The first `n` bundled photos (MobileNetV2 input, 11 in all).
pub fn photos(n: usize) -> anyhow::Result<Tensor> {
    samples("data/photos/photos.npy", 0, n)
}

/// The two bundled Fashion-MNIST nets.
pub const FASHION_MODELS: [&str; 2] = ["fashion_resnet8", "fashion_mobilenetv2"];
