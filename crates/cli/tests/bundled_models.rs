//! Whole-model checks on the bundled models and data (see models/README.md).

mod common;
use common::{lutq, root};
use std::process::Command;

use lutq_dataio::NpyArray;
use lutq_ir::Tensor;

/// Every bundled model: a missing file fails the tests rather than skipping them.
const MODELS: &[&str] = &["mobilenet_v2", "fashion_resnet8", "fashion_mobilenetv2"];

fn import(name: &str) -> lutq_ir::Graph {
    let path = root().join(format!("models/{name}.onnx"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    lutq_onnx::import(&bytes, &lutq_onnx::ImportOptions::default()).unwrap()
}

fn npy(rel: &str) -> NpyArray {
    NpyArray::from_npy_file(root().join(rel)).unwrap()
}

#[test]
fn import_dumps_match_snapshots() {
    for name in MODELS {
        let graph = import(name);
        graph.validate().unwrap();
        insta::with_settings!({snapshot_path => "../../../snapshots/import", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(*name, graph.dump());
        });
    }
}

#[test]
fn mobilenet_v2_matches_onnxruntime_on_photos() {
    let graph = import("mobilenet_v2");
    let photos = npy("data/photos/photos.npy");
    let expected = npy("data/photos/mobilenet_v2_onnxruntime.npy");
    let input = Tensor::f32(photos.shape.clone(), photos.data).unwrap();
    let out = lutq_interp::run_batch(&graph, &input, None).unwrap();
    assert_eq!(out.shape(), expected.shape.as_slice());
    let max_abs = out
        .as_f32()
        .unwrap()
        .iter()
        .zip(&expected.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_abs <= 1e-4, "max abs difference {max_abs} > 1e-4");
}

fn top1(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
        .unwrap()
}

/// On the committed 1,000-image test slice; the full-set accuracy (≥ 92 %) is recorded in
/// models/README.md and measured with `lutq run` on `cargo xtask data` output.
#[test]
fn fashion_nets_classify_the_test_slice() {
    let x = npy("data/fashion_mnist/test_x.npy");
    let labels =
        lutq_dataio::read_labels_file(root().join("data/fashion_mnist/test_y.npy")).unwrap();
    let input = Tensor::f32(x.shape.clone(), x.data).unwrap();
    for name in ["fashion_resnet8", "fashion_mobilenetv2"] {
        let out = lutq_interp::run_batch(&import(name), &input, None).unwrap();
        let logits = out.as_f32().unwrap();
        let correct = logits
            .chunks(10)
            .zip(&labels)
            .filter(|&(row, &label)| top1(row) as i64 == label)
            .count();
        let acc = correct as f64 / labels.len() as f64;
        assert!(acc >= 0.90, "{name}: top-1 {acc:.3} on the test slice");
    }
}

#[test]
fn cli_inspect_json_reports_cost_and_no_unsupported_parts() {
    let out = lutq(&["inspect", "models/mobilenet_v2.onnx", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // MobileNetV2 at 224×224 is ~300 M MACs and 3.5 M parameters (torchvision's figures).
    let macs = report["ir"]["macs"].as_u64().unwrap();
    assert!((290_000_000..320_000_000).contains(&macs), "{macs}");
    let params = report["ir"]["parameters"].as_u64().unwrap();
    assert!((3_400_000..3_600_000).contains(&params), "{params}");
    assert_eq!(report["onnx"]["diagnostics"].as_array().unwrap().len(), 0);
    assert_eq!(report["ir"]["op_histogram"]["batch_norm"], 52);
}

#[test]
fn cli_dump_equals_library_dump() {
    let out = lutq(&["dump", "models/fashion_resnet8.onnx", "--stage", "import"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        import("fashion_resnet8").dump()
    );
}

#[test]
fn cli_run_writes_outputs_and_reports_accuracy() {
    let dir = std::env::temp_dir().join(format!("lutq-cli-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = dir.join("logits.npy");
    let out = lutq(&[
        "run",
        "models/fashion_mobilenetv2.onnx",
        "--input",
        "data/fashion_mnist/test_x.npy",
        "--output",
        output.to_str().unwrap(),
        "--labels",
        "data/fashion_mnist/test_y.npy",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["samples"], 1000);
    assert!(summary["top1_accuracy"].as_f64().unwrap() >= 0.90);
    let written = NpyArray::from_npy_file(&output).unwrap();
    assert_eq!(written.shape, [1000, 10]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_errors_are_messages_not_panics() {
    let out = lutq(&[
        "run",
        "models/mobilenet_v2.onnx",
        "--input",
        "data/fashion_mnist/test_x.npy",
        "--output",
        "/dev/null",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("input"), "{err}");

    let out = lutq(&["inspect", "README.md"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a readable ONNX model"), "{err}");
}

#[test]
fn cli_reports_every_unsupported_part() {
    for command in ["inspect", "dump"] {
        let out = lutq(&[command, "examples/unsupported/model.onnx"]);
        assert!(!out.status.success());
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for part in [
            "graph input 'x': dimension 2",
            "node 'up0' (Resize)",
            "node 'pad_reflect' (Pad): attribute 'mode'",
            "node 'lstm' (LSTM)",
        ] {
            assert!(
                text.contains(part),
                "{command}: '{part}' missing in:\n{text}"
            );
        }
    }
}

#[test]
fn cli_input_shape_fixes_symbolic_dims_on_every_command() {
    // The example's symbolic H is fixed by --input-shape: its diagnostic disappears (the
    // other unsupported parts remain).
    for command in ["inspect", "dump"] {
        let out = lutq(&[
            command,
            "examples/unsupported/model.onnx",
            "--input-shape",
            "x=1,3,16,32",
        ]);
        assert!(!out.status.success());
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains("dimension 2"), "{command}: {text}");
        assert!(text.contains("node 'lstm' (LSTM)"), "{command}: {text}");
    }
    // An unknown name lists the model's inputs; a malformed value is a usage error.
    let out = lutq(&[
        "dump",
        "models/fashion_resnet8.onnx",
        "--input-shape",
        "nope=1,2",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("input shape for 'nope'"), "{err}");
    assert!(err.contains("its inputs are"), "{err}");
    let out = lutq(&[
        "dump",
        "models/fashion_resnet8.onnx",
        "--input-shape",
        "x=1,a",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a dimension"));
}

#[test]
fn cli_dump_opt_stage_has_no_batch_norm_left() {
    let out = lutq(&["dump", "models/fashion_mobilenetv2.onnx", "--stage", "opt"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (expected, _) = lutq_opt::optimize(
        &import("fashion_mobilenetv2"),
        &lutq_opt::OptOptions::default(),
    )
    .unwrap();
    assert_eq!(text, expected.dump());
    assert!(!text.contains("batch_norm"));
    assert!(text.contains("act=clip(0,6)"));
}

#[test]
fn cli_dump_opt_with_cle_equals_library_and_reports_pairs() {
    let out = lutq(&[
        "dump",
        "models/fashion_mobilenetv2.onnx",
        "--stage",
        "opt",
        "--cle",
        "on",
        "--relu6",
        "replace",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("cle: "), "{stderr}");
    let (opt, _) = lutq_opt::optimize(
        &import("fashion_mobilenetv2"),
        &lutq_opt::OptOptions::default(),
    )
    .unwrap();
    let options = lutq_opt::CleOptions {
        relu6: lutq_opt::Relu6Policy::ReplaceWithRelu,
        ..Default::default()
    };
    let (expected, _) = lutq_opt::equalize(&opt, &options).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected.dump());
    let bad = lutq(&["dump", "models/fashion_resnet8.onnx", "--cle", "on"]);
    assert!(!bad.status.success());
}

#[test]
fn cli_inspect_opt_reports_imbalance_drop_with_cle() {
    let inspect = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "inspect",
            "models/fashion_mobilenetv2.onnx",
            "--stage",
            "opt",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = lutq(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let median = |r: &serde_json::Value, which: &str| r["depthwise"][which].as_f64().unwrap();

    // The depthwise convs end in ReLU6: equalizing them needs --relu6 replace (DFQ).
    let on = inspect(&["--cle", "on", "--relu6", "replace"]);
    assert_eq!(on["depthwise"]["layers"], 7);
    assert_eq!(
        on["opt"]["unfolded_batch_norms"].as_array().unwrap().len(),
        0
    );
    assert_eq!(on["opt"]["kept_affine"].as_array().unwrap().len(), 0);
    let (before, after) = (median(&on, "median_before"), median(&on, "median_after"));
    assert!(after < before / 2.0, "{before} -> {after}");
    let layers = on["layers"].as_array().unwrap();
    assert!(layers.iter().any(|l| l["op"] == "gemm"));
    assert!(layers.iter().all(|l| l["imbalance_after"].is_number()));

    // With the default (exact) --relu6 skip no depthwise conv is equalized.
    let skip = inspect(&["--cle", "on"]);
    assert_eq!(
        median(&skip, "median_before"),
        median(&skip, "median_after")
    );
    // Without CLE there is no "after" and no CLE section.
    let off = inspect(&[]);
    assert!(off["cle"].is_null() && off["depthwise"]["median_after"].is_null());
    assert_eq!(median(&off, "median_before"), before);

    let text = lutq(&[
        "inspect",
        "models/fashion_mobilenetv2.onnx",
        "--stage",
        "opt",
        "--cle",
        "on",
        "--relu6",
        "replace",
    ]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("depthwise: 7 layers, median imbalance"),
        "{text}"
    );
    let bad = lutq(&["inspect", "models/fashion_resnet8.onnx", "--cle", "on"]);
    assert!(!bad.status.success());
}

#[test]
fn cli_run_interp_matches_eval_and_golden_library_run() {
    // `run --backend interp` writes what the library's quantize + golden interpreter
    // compute, and `eval --json` reports the same accuracy for the same mode.
    let dir = std::env::temp_dir().join(format!("lutq-cli-interp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = dir.join("logits.npy");
    let common = [
        "--calib",
        "data/fashion_mnist/train_x.npy",
        "--calib-limit",
        "128",
    ];
    let mut args = vec![
        "run",
        "models/fashion_resnet8.onnx",
        "--backend",
        "interp",
        "--mode",
        "int4-pot-channel",
        "--input",
        "data/fashion_mnist/test_x.npy",
        "--output",
        output.to_str().unwrap(),
        "--labels",
        "data/fashion_mnist/test_y.npy",
        "--json",
    ];
    args.extend(common);
    let out = lutq(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let written = NpyArray::from_npy_file(&output).unwrap();

    let graph = lutq_opt::optimize(&import("fashion_resnet8"), &Default::default())
        .unwrap()
        .0;
    let calib = npy("data/fashion_mnist/train_x.npy");
    let calib = Tensor::f32([128, 1, 28, 28], calib.data[..128 * 784].to_vec()).unwrap();
    let options = lutq_quant::QuantOptions::new(lutq_quant::Mode::Int4PotChannel);
    let (int_graph, _) = lutq_quant::quantize(&graph, &calib, &options, &|_| {}).unwrap();
    let (lowered, _) = lutq_opt::optimize_int(&int_graph, &Default::default()).unwrap();
    let data = npy("data/fashion_mnist/test_x.npy");
    let data = Tensor::f32(data.shape.clone(), data.data).unwrap();
    let expected = lutq_interp::int::IntInterpreter::new(&lowered)
        .unwrap()
        .run_batch(&data, None)
        .unwrap();
    assert_eq!(
        written.data,
        expected[0].as_f32().unwrap(),
        "run --backend interp"
    );

    let mut args = vec![
        "eval",
        "models/fashion_resnet8.onnx",
        "--data",
        "data/fashion_mnist/test_x.npy",
        "--labels",
        "data/fashion_mnist/test_y.npy",
        "--modes",
        "fp32,int4-pot-channel",
        "--json",
    ];
    args.extend(common);
    let out = lutq(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eval: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = eval["results"].as_array().unwrap();
    assert_eq!(rows[0]["mode"], "fp32");
    assert_eq!(rows[0]["top1_agreement"], 1.0);
    assert_eq!(rows[1]["top1_accuracy"], run["top1_accuracy"]);
    assert!(rows[1]["sqnr_db"].as_f64().unwrap() > 15.0, "{eval}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_quantizing_commands_explain_missing_calibration_and_bad_modes() {
    let out = lutq(&["dump", "models/fashion_resnet8.onnx", "--stage", "quant"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--calib"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = lutq(&[
        "eval",
        "models/fashion_resnet8.onnx",
        "--data",
        "x.npy",
        "--modes",
        "int3",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("lut4-pot-channel"),
        "{err}"
    );
    let out = lutq(&[
        "dump",
        "models/fashion_resnet8.onnx",
        "--stage",
        "opt",
        "--cle",
        "auto",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--cle auto"), "{err}");
}

#[test]
fn cli_dump_memory_reports_the_arena_next_to_its_bounds() {
    let out = lutq(&[
        "dump",
        "models/fashion_resnet8.onnx",
        "--stage",
        "memory",
        "--calib",
        "data/fashion_mnist/train_x.npy",
        "--calib-limit",
        "16",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let numbers: Vec<usize> = text
        .lines()
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let [arena, lower, naive] = numbers[..] else {
        panic!("{text}")
    };
    assert!(lower <= arena && arena < naive, "{text}");
}

#[test]
fn cli_c_and_jit_backends_agree_with_the_interpreter_in_run_eval_and_compile() {
    // `run --backend c` and `--backend jit` write exactly what `run --backend interp`
    // writes; `eval --backend c` reports the same accuracy plus the C footprint; `compile --harness` writes files
    // that `make` builds and whose header states the arena the summary reports.
    let dir = std::env::temp_dir().join(format!("lutq-cli-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let common = [
        "--calib",
        "data/fashion_mnist/train_x.npy",
        "--calib-limit",
        "64",
        "--mode",
        "lut4-pot-layer",
    ];
    let mut outputs = Vec::new();
    let mut accuracies = Vec::new();
    for backend in ["interp", "c", "jit"] {
        let output = dir.join(format!("{backend}.npy"));
        let mut args = vec![
            "run",
            "models/fashion_mobilenetv2.onnx",
            "--backend",
            backend,
            "--input",
            "data/fashion_mnist/test_x.npy",
            "--output",
            output.to_str().unwrap(),
            "--labels",
            "data/fashion_mnist/test_y.npy",
            "--json",
        ];
        args.extend(common);
        let out = lutq(&args);
        assert!(
            out.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        accuracies.push(summary["top1_accuracy"].clone());
        outputs.push(NpyArray::from_npy_file(&output).unwrap());
    }
    assert_eq!(outputs[0].shape, outputs[1].shape);
    assert_eq!(
        outputs[0].data, outputs[1].data,
        "run --backend c vs interp"
    );

    let mut args = vec![
        "eval",
        "models/fashion_mobilenetv2.onnx",
        "--data",
        "data/fashion_mnist/test_x.npy",
        "--labels",
        "data/fashion_mnist/test_y.npy",
        "--backend",
        "c",
        "--json",
    ];
    args.extend(
        common
            .iter()
            .map(|a| if *a == "--mode" { "--modes" } else { a }),
    );
    let out = lutq(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eval: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &eval["results"][0];
    assert_eq!(row["top1_accuracy"], accuracies[0], "{eval}");
    let arena = row["c"]["arena_bytes"].as_u64().unwrap();
    let bound = row["c"]["arena_lower_bound"].as_u64().unwrap();
    let consts = row["c"]["constant_bytes"].as_u64().unwrap();
    let int8 = row["c"]["int8_constant_bytes"].as_u64().unwrap();
    assert!(bound <= arena && arena > 0, "{eval}");
    assert!(
        2 * consts < int8 + int8 / 4,
        "4-bit constants {consts} vs int8 {int8}"
    );

    let src = dir.join("src");
    let mut args = vec![
        "compile",
        "models/fashion_mobilenetv2.onnx",
        "-o",
        src.to_str().unwrap(),
        "--prefix",
        "fmv2",
        "--harness",
        "--float-io",
        "--json",
    ];
    args.extend(common);
    let out = lutq(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["arena_size"].as_u64(), Some(arena));
    let header = std::fs::read_to_string(src.join("fmv2.h")).unwrap();
    assert!(
        header.contains(&format!("#define FMV2_ARENA_SIZE {arena}\n")),
        "{header}"
    );
    assert!(header.contains("void fmv2_quantize_input0(const float *x, fmv2_input0_t *q);"));
    let make = Command::new("make").arg("-C").arg(&src).output().unwrap();
    assert!(
        make.status.success(),
        "{}",
        String::from_utf8_lossy(&make.stderr)
    );
    assert!(src.join("fmv2").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_eval_scores_each_also_data_set_with_the_same_models() {
    // The main set again as an extra set must score exactly like the main set; a second,
    // different set is scored on its own samples.
    let out = lutq(&[
        "eval",
        "models/fashion_resnet8.onnx",
        "--data",
        "data/fashion_mnist/test_x.npy",
        "--also-data",
        "data/fashion_mnist/test_x.npy",
        "--also-data",
        "data/fashion_mnist/train_x.npy",
        "--limit",
        "48",
        "--calib",
        "data/fashion_mnist/train_x.npy",
        "--calib-limit",
        "32",
        "--modes",
        "fp32,int4-pot-layer",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eval: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(eval["samples"], 48);
    let q = &eval["results"][1];
    let also = q["also"].as_array().unwrap();
    assert_eq!(also.len(), 2, "{eval}");
    assert_eq!(also[0]["samples"], 48);
    assert_eq!(also[0]["top1_agreement"], q["top1_agreement"]);
    assert_eq!(also[0]["sqnr_db"], q["sqnr_db"]);
    assert!(also[1]["data"].as_str().unwrap().ends_with("train_x.npy"));
    assert_ne!(also[1]["sqnr_db"], q["sqnr_db"], "{eval}");
    // fp32 against itself: full agreement on every set, no SQNR.
    assert_eq!(eval["results"][0]["also"][1]["top1_agreement"], 1.0);
    assert!(eval["results"][0]["also"][1]["sqnr_db"].is_null());
}

#[test]
fn cli_compile_prints_the_headers_arena_and_a_smaller_scratch_limit_never_grows_the_scratch() {
    // `compile` prints arena, scratch and lower bound as the header states them; with
    // a smaller `--scratch-limit` neither the largest kernel scratch nor the arena grows.
    let dir = std::env::temp_dir().join(format!("lutq-cli-scratch-{}", std::process::id()));
    let define = |header: &str, name: &str| -> u64 {
        let key = format!("#define FMV2_{name} ");
        let line = header.lines().find(|l| l.starts_with(&key));
        line.unwrap_or_else(|| panic!("no {key} in\n{header}"))[key.len()..]
            .trim()
            .parse()
            .unwrap()
    };
    let mut scratch = Vec::new();
    for limit in [None, Some("2048"), Some("0")] {
        let src = dir.join(limit.unwrap_or("default"));
        let mut args = vec![
            "compile",
            "models/fashion_mobilenetv2.onnx",
            "-o",
            src.to_str().unwrap(),
            "--prefix",
            "fmv2",
            "--calib",
            "data/fashion_mnist/train_x.npy",
            "--calib-limit",
            "32",
        ];
        if let Some(l) = limit {
            args.extend(["--scratch-limit", l]);
        }
        let out = lutq(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with("arena "))
            .unwrap_or_else(|| panic!("no arena line in\n{stdout}"));
        let numbers: Vec<u64> = line
            .split(|ch: char| !ch.is_ascii_digit() && ch != '.')
            .filter_map(|w| w.parse().ok())
            .collect();
        let header = std::fs::read_to_string(src.join("fmv2.h")).unwrap();
        assert_eq!(numbers[0], define(&header, "ARENA_SIZE"), "{line}");
        assert_eq!(numbers[1], define(&header, "SCRATCH_BYTES"), "{line}");
        assert_eq!(numbers[2], define(&header, "ARENA_LOWER_BOUND"), "{line}");
        scratch.push((numbers[1], numbers[0]));
    }
    // (scratch, arena) by falling limit: neither grows.
    assert!(
        scratch
            .windows(2)
            .all(|w| w[1].0 <= w[0].0 && w[1].1 <= w[0].1),
        "(scratch, arena) by falling limit: {scratch:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--lut-tables auto` quantizes with one table and with table groups, prints both
/// calibration SQNRs and keeps the higher; a count outside 1..=64 is refused with the
/// accepted values.
/// The quantizer's report says how many tables the layers may take: by default the
/// flash rule's count (8 for the MCU-sized Fashion nets), else `--lut-tables N`.
#[test]
fn the_quant_report_names_the_table_count() {
    for (flag, expected) in [(None, 8), (Some("3"), 3)] {
        let mut args = vec![
            "dump",
            "models/fashion_resnet8.onnx",
            "--stage",
            "quant",
            "--calib",
            "data/fashion_mnist/train_x.npy",
            "--calib-limit",
            "16",
        ];
        if let Some(n) = flag {
            args.extend(["--lut-tables", n]);
        }
        let out = lutq(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let line = format!("table groups: up to {expected} tables per layer");
        assert!(err.contains(&line), "{flag:?}: no '{line}' in\n{err}");
    }
}

#[test]
fn lut_tables_auto_keeps_the_better_variant() {
    let out = lutq(&[
        "eval",
        "models/fashion_resnet8.onnx",
        "--data",
        "data/fashion_mnist/test_x.npy",
        "--limit",
        "64",
        "--calib",
        "data/fashion_mnist/train_x.npy",
        "--calib-limit",
        "64",
        "--modes",
        "lut4-pot-layer",
        "--lut-tables",
        "auto",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("auto (lut4-pot-layer): calibration SQNR"))
        .unwrap_or_else(|| panic!("no choice printed:\n{err}"));
    // "… SQNR A dB with CLE off, 1 table, B dB with CLE off, 8 tables -> CHOICE"
    let (scores, choice) = line.split_once(" -> ").expect("a choice");
    let db: Vec<f64> = scores
        .split(" dB with ")
        .filter_map(|part| part.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(db.len(), 2, "{line}");
    let expected = if db[1] > db[0] { "8 tables" } else { "1 table" };
    assert!(choice.ends_with(expected), "{line}");

    let out = lutq(&[
        "eval",
        "models/fashion_resnet8.onnx",
        "--data",
        "data/fashion_mnist/test_x.npy",
        "--lut-tables",
        "0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("from 1 to 64, `size` or `auto`"),
        "{err}"
    );
}
