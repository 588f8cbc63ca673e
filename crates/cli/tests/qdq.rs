//! QDQ models (`models/qdq/`, made by `scripts/make_qdq_models.py` and, trained with
//! quantization in the loop, `scripts/qat_fashion.py` from the bundled Fashion-MNIST
//! ResNet-8): lutq imports them and computes what onnxruntime computes on the same file
//! and inputs; the mode follows from a trained model and float scales are refused or
//! rounded.

mod common;
use common::{lutq, root};
use std::path::PathBuf;

use lutq_interp::Interpreter;
use lutq_ir::Tensor;

fn npy(rel: &str) -> (Vec<usize>, Vec<f32>) {
    let a = lutq_dataio::NpyArray::from_npy_file(root().join(rel)).unwrap();
    (a.shape, a.data)
}

/// (top-1 agreement, SQNR in dB) of `got` against `want`, rows of `classes`.
fn compare(want: &[f32], got: &[f32], classes: usize) -> (f64, f64) {
    let argmax = |r: &[f32]| {
        r.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
    };
    let rows = want.len() / classes;
    let same = want
        .chunks(classes)
        .zip(got.chunks(classes))
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    (
        same as f64 / rows as f64,
        lutq_interp::metrics::sqnr_db(want, got),
    )
}

#[test]
fn qdq_models_compute_what_onnxruntime_computes() {
    let (shape, x) = npy("models/qdq/fashion_resnet8_qdq_inputs.npy");
    let inputs = Tensor::f32(shape, x).unwrap();
    for model in ["fashion_resnet8_ort_qdq", "fashion_resnet8_pot_int4"] {
        let bytes = std::fs::read(root().join(format!("models/qdq/{model}.onnx"))).unwrap();
        let g = lutq_onnx::import(&bytes, &Default::default())
            .unwrap_or_else(|e| panic!("{model}: {e}"));
        let got = Interpreter::new(&g)
            .unwrap()
            .run_batch(&inputs, None)
            .unwrap();
        let got = got.as_f32().unwrap();
        // onnxruntime with graph optimizations off runs every QuantizeLinear,
        // DequantizeLinear and float op as ONNX defines them: the same arithmetic up to
        // f32 summation order, which may flip a rounding tie somewhere.
        let (_, reference) = npy(&format!("models/qdq/{model}_reference_logits.npy"));
        let (agree, db) = compare(&reference, got, 10);
        eprintln!(
            "{model} vs onnxruntime (reference): {:.1} %, {db:.1} dB",
            agree * 100.0
        );
        assert!(
            agree == 1.0 && db >= 60.0,
            "{model}: agreement {agree}, SQNR {db:.1} dB"
        );
        // By default onnxruntime fuses QDQ groups into integer kernels with their own
        // rounding (measured 2026-12: 63 dB from lutq on the float-scale model, 143 dB on
        // the power-of-two one).
        let (_, fused) = npy(&format!("models/qdq/{model}_logits.npy"));
        let (agree, db) = compare(&fused, got, 10);
        eprintln!(
            "{model} vs onnxruntime (default): {:.1} %, {db:.1} dB",
            agree * 100.0
        );
        assert!(
            agree >= 0.95 && db >= 20.0,
            "{model}: agreement {agree}, SQNR {db:.1} dB"
        );
    }
}

/// The power-of-two QDQ model maps onto the integer contract: its trained exponents and
/// weights, not a calibrated refit, in a ties-to-even program (QuantizeLinear's rounding).
/// Compared with onnxruntime's reference execution of the same file; the JIT is bit-exact
/// with the interpreter on it.
#[test]
fn a_power_of_two_qdq_model_runs_as_trained_in_integers() {
    let (shape, x) = npy("models/qdq/fashion_resnet8_qdq_inputs.npy");
    let inputs = Tensor::f32(shape, x).unwrap();
    let (cshape, c) = npy("data/fashion_mnist/train_x.npy");
    let per: usize = cshape[1..].iter().product();
    let calib = Tensor::f32([&[16][..], &cshape[1..]].concat(), c[..16 * per].to_vec()).unwrap();
    let bytes = std::fs::read(root().join("models/qdq/fashion_resnet8_pot_int4.onnx")).unwrap();
    let g = lutq_onnx::import(&bytes, &Default::default()).unwrap();
    let g = lutq_opt::optimize(&g, &Default::default()).unwrap().0;
    let (_, reference) = npy("models/qdq/fashion_resnet8_pot_int4_reference_logits.npy");
    for mode in [
        lutq_quant::Mode::Lut4PotChannel,
        lutq_quant::Mode::Int8PotChannel,
    ] {
        let q = lutq_quant::quantize(&g, &calib, &lutq_quant::QuantOptions::new(mode), &|_| {})
            .unwrap()
            .0;
        assert_eq!(q.rounding, lutq_ir::int::Rounding::HalfEven, "{mode}");
        let interp = lutq_interp::int::IntInterpreter::new(&q).unwrap();
        let got = interp.run_batch(&inputs, None).unwrap();
        let got = got[0].as_f32().unwrap();
        let (agree, db) = compare(&reference, got, 10);
        eprintln!("{mode}: agreement {:.1} %, SQNR {db:.1} dB", agree * 100.0);
        assert!(agree >= 0.995 && db >= 30.0, "{mode}: {agree} / {db} dB");
        let mut jit = lutq_backend_jit::compile(&q).unwrap();
        let per_sample: usize = inputs.shape()[1..].iter().product();
        let flat = inputs.as_f32().unwrap();
        for (s, x) in flat.chunks(per_sample).enumerate() {
            assert_eq!(
                jit.run(&[x]).unwrap(),
                interp.run(&[x]).unwrap(),
                "{mode}, sample {s}: JIT"
            );
        }
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh temporary directory for one test.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lutq-qdq-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The quantization-aware-trained nets of `scripts/qat_fashion.py` (LUT-4 weights,
/// power-of-two scales): lutq derives the mode from the weights and prints it, the
/// golden interpreter computes what onnxruntime's reference execution of the same file
/// computes (≥ 99.5 % top-1 agreement, ≥ 30 dB), and the C backend and the JIT are
/// bit-exact with it.
#[test]
fn qat_models_run_as_trained_with_the_mode_they_imply() {
    let dir = temp_dir("qat");
    let inputs = "models/qdq/fashion_resnet8_qdq_inputs.npy";
    for (model, mode) in [
        ("fashion_resnet8_qat_lut4_layer", "lut4-pot-layer"),
        ("fashion_resnet8_qat_lut4_channel", "lut4-pot-channel"),
        (
            "fashion_resnet8_qat_lut4_channel_tables",
            "lut4-pot-channel --lut-per-channel",
        ),
        (
            "fashion_resnet8_qat_lut4_layer_tables",
            "lut4-pot-layer --lut-per-channel",
        ),
        // Trained with 8 tables per layer shared by groups of channels, exported with a
        // table per channel.
        (
            "fashion_resnet8_qat_lut4_layer_groups",
            "lut4-pot-layer --lut-per-channel",
        ),
        (
            "fashion_resnet8_qat_lut4_channel_groups",
            "lut4-pot-channel --lut-per-channel",
        ),
        // Fashion MobileNetV2 (depthwise convs, residual Adds), trained the same way.
        (
            "fashion_mobilenetv2_qat_lut4_layer_groups",
            "lut4-pot-layer --lut-per-channel",
        ),
        (
            "fashion_mobilenetv2_qat_lut4_channel_groups",
            "lut4-pot-channel --lut-per-channel",
        ),
        // One exponent per layer and a table per output channel.
        (
            "fashion_mobilenetv2_qat_lut4_layer_tables",
            "lut4-pot-layer --lut-per-channel",
        ),
    ] {
        let path = format!("models/qdq/{model}.onnx");
        let mut outputs = Vec::new();
        for backend in ["interp", "c", "jit"] {
            let out_path = dir.join(format!("{model}_{backend}.npy"));
            let out = lutq(&[
                "run",
                &path,
                "--backend",
                backend,
                "--input",
                inputs,
                "--output",
                out_path.to_str().unwrap(),
                "--calib",
                "data/fashion_mnist/train_x.npy",
                "--calib-limit",
                "16",
            ]);
            let err = stderr(&out);
            assert!(out.status.success(), "{model} {backend}: {err}");
            assert!(
                err.contains(&format!("its trained weights imply --mode {mode}\n")),
                "{model}: the derived mode is printed\n{err}"
            );
            let a = lutq_dataio::NpyArray::from_npy_file(&out_path).unwrap();
            outputs.push(a.data);
        }
        assert_eq!(outputs[1], outputs[0], "{model}: C against the interpreter");
        assert_eq!(
            outputs[2], outputs[0],
            "{model}: JIT against the interpreter"
        );
        let (_, reference) = npy(&format!("models/qdq/{model}_reference_logits.npy"));
        let (agree, db) = compare(&reference, &outputs[0], 10);
        eprintln!(
            "{model} ({mode}) vs onnxruntime: {:.1} %, {db:.1} dB",
            agree * 100.0
        );
        assert!(
            agree >= 0.995 && db >= 30.0,
            "{model}: {agree} / {db:.1} dB"
        );
    }
}

/// A QDQ model whose pairs fix every exponent needs no calibration data: without
/// `--calib` lutq computes exactly what it computes with it, and warns about no samples.
/// A model that leaves a tensor without a pair is refused without `--calib`, naming it.
#[test]
fn fully_paired_qdq_models_need_no_calibration_data() {
    let dir = temp_dir("no_calib");
    let inputs = "models/qdq/fashion_resnet8_qdq_inputs.npy";
    for model in [
        "fashion_resnet8_qat_lut4_layer",
        "fashion_mobilenetv2_qat_lut4_layer_tables",
    ] {
        let path = format!("models/qdq/{model}.onnx");
        let mut outputs = Vec::new();
        for calib in [false, true] {
            let out_path = dir.join(format!("{model}_{calib}.npy"));
            let mut args = vec![
                "run",
                &path,
                "--backend",
                "interp",
                "--input",
                inputs,
                "--output",
                out_path.to_str().unwrap(),
            ];
            if calib {
                args.extend([
                    "--calib",
                    "data/fashion_mnist/train_x.npy",
                    "--calib-limit",
                    "16",
                ]);
            }
            let out = lutq(&args);
            let err = stderr(&out);
            assert!(out.status.success(), "{model} (--calib: {calib}): {err}");
            if !calib {
                assert!(
                    err.contains("no --calib: every exponent and weight of this QDQ model"),
                    "{model}: says where its grids come from\n{err}"
                );
                assert!(
                    !err.contains("warning:"),
                    "{model}: no warning about samples it did not need\n{err}"
                );
            }
            outputs.push(
                lutq_dataio::NpyArray::from_npy_file(&out_path)
                    .unwrap()
                    .data,
            );
        }
        assert_eq!(outputs[0], outputs[1], "{model}: the samples chose nothing");
    }
    // `eval` says no calibration data went in (not the one all-zero sample it ran on).
    let out = lutq(&[
        "eval",
        "models/qdq/fashion_resnet8_qat_lut4_layer.onnx",
        "--data",
        inputs,
        "--backend",
        "interp",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("no calibration data (every exponent from the model's QDQ pairs)")
            && !text.contains("calibration sample"),
        "eval names where the exponents came from\n{text}"
    );
    // Its global pool's output has no pair (the exponent is calibrated).
    let out = lutq(&[
        "run",
        "models/qdq/fashion_resnet8_pot_int4.onnx",
        "--backend",
        "interp",
        "--input",
        inputs,
        "--output",
        dir.join("partial.npy").to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("'/pool/GlobalAveragePool'") && err.contains("pass --calib"),
        "names the tensor without a pair and the fix\n{err}"
    );
}

/// A model trained with at most 8 tables per layer, each shared by a group of output
/// channels (`scripts/qat_fashion.py --lut-tables 8`), exports a table per channel whose
/// rows use only some of their group's levels: lutq still stores at most 8 tables of 16
/// entries per layer (and a row index), not one per channel.
/// Compiles a committed QDQ model with its implied mode; its weights file's text.
fn compiled_weights(model: &str) -> String {
    let dir = temp_dir(model);
    let out = lutq(&[
        "compile",
        &format!("models/qdq/{model}.onnx"),
        "--calib",
        "data/fashion_mnist/train_x.npy",
        "--calib-limit",
        "8",
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::read_to_string(dir.join(format!("{model}_weights.c"))).unwrap()
}

/// Entries of every `const int8_t NAME_lut_7[128] = {` (one per layer with tables).
fn table_array_sizes(c: &str) -> Vec<usize> {
    c.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("const int8_t ")?;
            let (name, rest) = rest.split_once('[')?;
            name.contains("_lut_")
                .then(|| rest.split_once(']'))??
                .0
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn a_model_trained_with_table_groups_stores_one_table_per_group() {
    let c = compiled_weights("fashion_resnet8_qat_lut4_layer_groups");
    let sizes = table_array_sizes(&c);
    assert!(sizes.len() >= 8, "every convolution has tables: {sizes:?}");
    assert!(
        sizes.iter().all(|&n| n <= 8 * 16),
        "at most 8 tables per layer: {sizes:?}"
    );
    assert!(c.contains("_lutrow_"), "rows index their group's table");
}

/// One trained table per layer under the default table groups: stored once, with no
/// index per row (each row reading the same table cost a byte per channel).
#[test]
fn a_model_trained_with_one_table_per_layer_stores_one_table() {
    let c = compiled_weights("fashion_resnet8_qat_lut4_layer");
    let sizes = table_array_sizes(&c);
    assert!(sizes.len() >= 8, "every convolution has a table: {sizes:?}");
    assert!(
        sizes.iter().all(|&n| n == 16),
        "one table per layer: {sizes:?}"
    );
    assert!(!c.contains("_lutrow_"), "no row index");
}

/// A requested mode that cannot hold the trained weights is refused, naming the first
/// layer and the mode the model implies; one that holds them (int8 holds every 4-bit
/// table) is taken.
#[test]
fn a_mode_that_contradicts_the_trained_weights_is_refused() {
    let dir = temp_dir("contradiction");
    let out_dir = dir.to_str().unwrap();
    let model = "models/qdq/fashion_resnet8_qat_lut4_channel.onnx";
    let calib = "data/fashion_mnist/train_x.npy";
    let out = lutq(&[
        "compile",
        model,
        "--mode",
        "lut4-pot-layer",
        "--calib",
        calib,
        "--calib-limit",
        "8",
        "-o",
        out_dir,
    ]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("layer '/stem/stem.0/Conv'")
            && err.contains("do not fit lut4-pot-layer")
            && err.contains("implies --mode lut4-pot-channel"),
        "{err}"
    );
    let out = lutq(&[
        "compile",
        model,
        "--mode",
        "int8-pot-channel",
        "--calib",
        calib,
        "--calib-limit",
        "8",
        "-o",
        out_dir,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Float activation scales (onnxruntime's symmetric int8 QDQ): refused with every pair
/// listed; with `--round-scales` snapped to powers of two, and the cost printed.
#[test]
fn float_scales_are_refused_or_rounded_with_their_cost() {
    let model = "models/qdq/fashion_resnet8_ort_qdq_sym.onnx";
    let args = [
        "dump",
        model,
        "--stage",
        "quant",
        "--mode",
        "int8-pot-channel",
        "--calib",
        "data/fashion_mnist/train_x.npy",
        "--calib-limit",
        "16",
    ];
    let out = lutq(&args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    let bytes = std::fs::read(root().join(model)).unwrap();
    let g = lutq_onnx::import(&bytes, &Default::default()).unwrap();
    let pairs = g
        .node_ids()
        .filter(|&id| {
            matches!(
                g.node(id).op,
                lutq_ir::Op::Activation(lutq_ir::Activation::FakeQuant { .. })
            )
        })
        .collect::<Vec<_>>();
    assert!(pairs.len() > 10);
    for id in &pairs {
        assert!(
            err.contains(&format!("node '{}': scale", g.node(*id).name)),
            "{} is listed\n{err}",
            g.node(*id).name
        );
    }
    assert!(err.contains("--round-scales"), "the fix is named\n{err}");
    let out = lutq(&[&args[..], &["--round-scales"]].concat());
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("--round-scales:"))
        .unwrap_or_else(|| panic!("the cost is printed\n{err}"));
    assert!(
        line.contains(&format!("{n} of {n} ", n = pairs.len())) && line.contains("dB SQNR"),
        "{line}"
    );
}
