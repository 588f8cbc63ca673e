//! The committed models of the zoo (`models/zoo/manifest.json`: real MCU and mobile
//! models lutq was not built with, with their own calibration and evaluation inputs):
//! each imports with the manifest's input shape, quantizes in the default mode and in
//! int8, tracks the float model on evaluation inputs from other source material, and
//! runs bit for bit the same in the generated C and the JIT as in the golden
//! interpreter. The whole zoo in every mode is `cargo xtask zoo`.

use std::path::{Path, PathBuf};

use lutq_backend_c::{HostProgram, decode_outputs, quantize_samples};
use lutq_interp::Interpreter;
use lutq_interp::int::IntInterpreter;
use lutq_ir::int::IntGraph;
use lutq_ir::{Graph, Tensor};
use lutq_quant::{Mode, QuantOptions};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load(rel: &str, limit: usize) -> Tensor {
    let a = lutq_dataio::NpyArray::from_npy_file(root().join(rel)).unwrap();
    let n = a.shape[0].min(limit);
    let per = a.data.len() / a.shape[0];
    let mut shape = a.shape.clone();
    shape[0] = n;
    Tensor::f32(shape, a.data[..n * per].to_vec()).unwrap()
}

fn committed() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("models/zoo/manifest.json")).unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    manifest["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["committed"] == true && m["data_committed"] == true)
        .cloned()
        .collect()
}

fn import(m: &Value) -> Graph {
    let bytes = std::fs::read(root().join(m["path"].as_str().unwrap())).unwrap();
    let mut options = lutq_onnx::ImportOptions::default();
    let shape: Vec<usize> = m["input_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    options
        .input_shapes
        .insert(m["input"].as_str().unwrap().to_string(), shape);
    let g = lutq_onnx::import(&bytes, &options).unwrap_or_else(|e| panic!("{}: {e}", m["name"]));
    lutq_opt::optimize(&g, &Default::default()).unwrap().0
}

#[test]
fn committed_zoo_models_quantize_and_run_bit_exact_everywhere() {
    let models = committed();
    assert!(models.len() >= 4, "the zoo lost its committed models");
    for m in &models {
        let name = m["name"].as_str().unwrap();
        // The multi-output detectors are checked on their first output only.
        let float = import(m);
        let calib = load(m["calib"].as_str().unwrap(), 32);
        let eval = load(m["eval"].as_str().unwrap(), 8);
        let want = Interpreter::new(&float)
            .unwrap()
            .run_batch(&eval, None)
            .unwrap();
        let want = want.as_f32().unwrap();
        for mode in [Mode::Lut4PotChannel, Mode::Int8PotChannel] {
            let what = format!("{name} {mode}");
            let g = lutq_quant::quantize(&float, &calib, &QuantOptions::new(mode), &|_| {})
                .unwrap_or_else(|e| panic!("{what}: {e}"))
                .0;
            let g = lutq_opt::optimize_int(&g, &Default::default()).unwrap().0;
            let interp = IntInterpreter::new(&g).unwrap();
            let got = interp.run_batch(&eval, None).unwrap();
            let db = lutq_interp::metrics::sqnr_db(want, got[0].as_f32().unwrap());
            assert!(db > 4.0, "{what}: SQNR {db:.1} dB against fp32");
            assert_bit_exact(&g, &interp, &eval, &what);
        }
    }
}

/// Bit for bit on the first 3 samples of `eval`: C (host compiler) and JIT against the
/// interpreter.
fn assert_bit_exact(g: &IntGraph, interp: &IntInterpreter, eval: &Tensor, what: &str) {
    let rows: Vec<Vec<&[f32]>> = lutq_bundled_rows(eval)
        .into_iter()
        .take(3)
        .map(|r| vec![r])
        .collect();
    let expected: Vec<Vec<Vec<i32>>> = rows
        .iter()
        .map(|r| interp.run(r).unwrap().iter().map(|d| d.to_i32()).collect())
        .collect();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let program = HostProgram::build(g, "model", &cc, &["-O1"], None)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let c = decode_outputs(
        g,
        &program.run(&quantize_samples(g, &rows).unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(c, expected, "{what}: generated C");
    let mut jit = lutq_backend_jit::compile(g).unwrap();
    for (k, r) in rows.iter().enumerate() {
        let out: Vec<Vec<i32>> = jit.run(r).unwrap().iter().map(|d| d.to_i32()).collect();
        assert_eq!(out, expected[k], "{what}: JIT sample {k}");
    }
}

/// The ops no zoo model has (nearest and bilinear Resize, Max and Min of activations,
/// channel and pixel shuffles through rank-5 and rank-6 transposes), in a synthetic
/// decoder calibrated on Fashion-MNIST training images and run on test images: every
/// integer mode tracks the float model and runs bit-exact in C and the JIT.
#[test]
fn synthetic_decoder_runs_bit_exact_everywhere() {
    let float = lutq_bundled::synthetic::decoder([1, 1, 28, 28]);
    let float = lutq_opt::optimize(&float, &Default::default()).unwrap().0;
    let calib = lutq_bundled::samples("data/fashion_mnist/train_x.npy", 0, 32).unwrap();
    let eval = lutq_bundled::samples("data/fashion_mnist/test_x.npy", 0, 8).unwrap();
    let want = Interpreter::new(&float)
        .unwrap()
        .run_batch(&eval, None)
        .unwrap();
    let modes: Vec<Mode> = Mode::ALL.into_iter().filter(|&m| m != Mode::Fp32).collect();
    // Measured 27-33 dB (2026-12).
    assert_modes_track_and_run_bit_exact("decoder", &float, &calib, &eval, &want, &modes, 20.0);
}

/// In each of `modes`: quantizes `float` on `calib`, asserts the integer program's SQNR on
/// `eval` against the float outputs `want` is above `min_db`, and that C and the JIT agree
/// with the interpreter bit for bit.
fn assert_modes_track_and_run_bit_exact(
    name: &str,
    float: &Graph,
    calib: &Tensor,
    eval: &Tensor,
    want: &Tensor,
    modes: &[Mode],
    min_db: f64,
) {
    for &mode in modes {
        let what = format!("{name} {mode}");
        let g = lutq_quant::quantize(float, calib, &QuantOptions::new(mode), &|_| {})
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .0;
        let g = lutq_opt::optimize_int(&g, &Default::default()).unwrap().0;
        let interp = IntInterpreter::new(&g).unwrap();
        let got = interp.run_batch(eval, None).unwrap();
        let db = lutq_interp::metrics::sqnr_db(want.as_f32().unwrap(), got[0].as_f32().unwrap());
        eprintln!("{what}: SQNR {db:.1} dB");
        assert!(db > min_db, "{what}: SQNR {db:.1} dB against fp32");
        assert_bit_exact(&g, &interp, eval, &what);
    }
}

/// The samples of a batch as slices.
fn lutq_bundled_rows(t: &Tensor) -> Vec<&[f32]> {
    let data = t.as_f32().unwrap();
    let per = data.len() / t.shape()[0];
    data.chunks(per).collect()
}

/// Transposed convolutions (`models/fashion_autoencoder.onnx`, trained by
/// `scripts/train_fashion_autoencoder.py`: a 2×2 stride-2 one and a 3×3 stride-2 one with
/// pads and output_padding, each followed by a BatchNorm). The import splits each into
/// stride-1 phase convolutions, and the BatchNorms fold into those through the interleave
/// (no per-channel table is left): the float program reproduces torch's reconstructions,
/// and every integer mode tracks it and runs bit-exact in C and the JIT.
#[test]
fn transposed_convolutions_match_torch_and_run_bit_exact_everywhere() {
    let bytes = std::fs::read(root().join("models/fashion_autoencoder.onnx")).unwrap();
    let g = lutq_onnx::import(&bytes, &Default::default()).unwrap();
    let float = lutq_opt::optimize(&g, &Default::default()).unwrap().0;
    let left: Vec<&str> = float
        .node_ids()
        .map(|id| float.node(id).op.name())
        .filter(|op| matches!(*op, "batch_norm" | "mul" | "add"))
        .collect();
    assert!(left.is_empty(), "not folded into the phase convs: {left:?}");
    let eval = lutq_bundled::samples("data/fashion_mnist/test_x.npy", 0, 16).unwrap();
    let want = Interpreter::new(&float)
        .unwrap()
        .run_batch(&eval, None)
        .unwrap();
    let torch = load("models/fashion_autoencoder_reference.npy", 16);
    let worst = want
        .as_f32()
        .unwrap()
        .iter()
        .zip(torch.as_f32().unwrap())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst < 1e-5,
        "float program against torch: max |diff| {worst}"
    );
    let calib = lutq_bundled::samples("data/fashion_mnist/train_x.npy", 0, 64).unwrap();
    let modes = [
        Mode::Lut4PotChannel,
        Mode::Lut4PotLayer,
        Mode::Int8PotChannel,
    ];
    // Measured 32-33 dB (lut4) and 39-40 dB (int8) on 1,000 test images, 256 calibration
    // images (`lutq eval`, 2026-12).
    assert_modes_track_and_run_bit_exact("autoencoder", &float, &calib, &eval, &want, &modes, 25.0);
}
