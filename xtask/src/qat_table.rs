//! `cargo xtask qat-table`: the quantization-aware training results of
//! docs/quantization.md, regenerated from the committed files.
//!
//! * For each bundled Fashion-MNIST net: its fp32 top-1 and lutq's post-training
//!   quantization (PTQ) in the two LUT-4 modes, then every committed QAT model of that net
//!   (`models/qdq/fashion_NET_qat_*.onnx`, made by `scripts/qat_fashion.py`) in the mode
//!   it implies: the release `lutq eval --json` on the full test set.
//! * The training runs: the records `scripts/qat_fashion.py` writes next to each model
//!   (settings, validation top-1 per epoch, test top-1 of the exported file, wall time),
//!   kept in `models/qdq/qat_runs/` for the runs the docs report, committed model or not.
//!
//! Training stays a script (minutes to an hour per run on a CPU); this task only reads
//! its outputs, so the table is what the committed models give.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::Value;

const USAGE: &str = "cargo xtask qat-table [--write FILE.md] [--limit N] [--cache DIR] [--only NET]

Runs the release `lutq eval --json` on the full Fashion-MNIST test set for fashion_resnet8
and fashion_mobilenetv2: fp32 and PTQ (lut4-pot-layer, lut4-pot-channel; calibration on the
first 1,000 training images, CLE off) of the bundled nets, and every committed QAT model
models/qdq/fashion_NET_qat_*.onnx in the mode its trained weights imply (64 calibration
images: a trained model needs none, the count only feeds what eval prints). Integer modes
run on the JIT, bit-exact with the golden interpreter. Then lists the training runs
recorded in models/qdq/qat_runs/*.json (written by scripts/qat_fashion.py).
--write FILE.md replaces the section `qat-results` of FILE.md (docs/quantization.md).
--only NET runs one net (fashion_resnet8 or fashion_mobilenetv2); the section then holds only it.
--limit N evaluates only the first N test images (quick checks; refused with --write).
--cache DIR keeps every `lutq eval` result in DIR, keyed by the sha256 of the lutq binary,
the command line and the length and modification time of every file it names (as
`cargo xtask accuracy --cache` does), and reuses it (e.g. after adding a run record, only
the tables are rewritten).
Needs `cargo xtask data` (data/full/fashion_mnist).";

const NETS: &[&str] = &["fashion_resnet8", "fashion_mobilenetv2"];
const TEST_X: &str = "data/full/fashion_mnist/test_x.npy";
const TEST_Y: &str = "data/full/fashion_mnist/test_y.npy";
const CALIB: &str = "data/fashion_mnist/train_x.npy";
const QDQ_DIR: &str = "models/qdq";
const RUNS_DIR: &str = "models/qdq/qat_runs";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut write: Option<PathBuf> = None;
    let mut limit: Option<String> = None;
    let mut cache: Option<PathBuf> = None;
    let mut only: Option<String> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--write" => write = Some(it.next().context("--write needs a file")?.into()),
            "--limit" => limit = Some(it.next().context("--limit needs a number")?.clone()),
            "--only" => only = Some(it.next().context("--only needs a net")?.clone()),
            "--cache" => cache = Some(it.next().context("--cache needs a folder")?.into()),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n\n{USAGE}"),
        }
    }
    if write.is_some() && limit.is_some() {
        bail!("--limit is for quick checks: the docs get the full test set (drop --limit)");
    }
    for path in [TEST_X, TEST_Y, CALIB] {
        if !Path::new(path).exists() {
            bail!("{path} is missing: run `cargo xtask data` first");
        }
    }
    let lutq = crate::accuracy::build_lutq()?;

    let mut table = String::from(
        "| net | model | mode | top-1 | vs fp32 | integer vs the QDQ file | weights KB |\n\
         |---|---|---|---:|---:|---|---:|\n",
    );
    if let Some(o) = &only
        && !NETS.contains(&o.as_str())
    {
        bail!("--only {o}: expected one of {}", NETS.join(", "));
    }
    for net in NETS
        .iter()
        .filter(|n| only.as_deref().is_none_or(|o| o == **n))
    {
        let model = format!("models/{net}.onnx");
        eprintln!("qat-table: {net}, fp32 and PTQ");
        let ptq = eval(
            lutq,
            cache.as_deref(),
            &model,
            &[
                "--calib-limit",
                "1000",
                "--cle",
                "off",
                "--modes",
                "fp32,lut4-pot-layer,lut4-pot-channel",
            ],
            limit.as_deref(),
        )?;
        let rows = results(&ptq, &model)?;
        let fp32 = top1(&rows[0], &model)?;
        for r in &rows {
            let mode = r["mode"].as_str().unwrap_or("?");
            let what = if mode == "fp32" {
                "fp32 (bundled)"
            } else {
                "PTQ"
            };
            table.push_str(&row(net, what, mode, top1(r, &model)?, fp32, "–", r));
        }
        for qat in qat_models(net)? {
            let path = qat.to_string_lossy().into_owned();
            eprintln!("qat-table: {path}");
            let json = eval(
                lutq,
                cache.as_deref(),
                &path,
                &["--calib-limit", "64"],
                limit.as_deref(),
            )?;
            let rows = results(&json, &path)?;
            // rows: the QDQ file in lutq's float interpreter, then its integer program.
            let [_, int] = rows.as_slice() else {
                bail!(
                    "{path}: lutq eval gave {} rows, expected fp32 and the mode the model implies",
                    rows.len()
                );
            };
            let against = format!(
                "{:.2} % agreement, {}",
                int["top1_agreement"].as_f64().unwrap_or(f64::NAN) * 100.0,
                match int["sqnr_db"].as_f64() {
                    None => "identical outputs (SQNR ∞)".to_string(),
                    Some(db) => format!("{db:.1} dB"),
                }
            );
            let name = qat.file_name().unwrap_or_default().to_string_lossy();
            let mode = int["mode"].as_str().unwrap_or("?");
            table.push_str(&row(
                net,
                &format!("QAT `{name}`"),
                mode,
                top1(int, &path)?,
                fp32,
                &against,
                int,
            ));
        }
    }
    let runs = runs_table()?;
    print!("{table}\n{runs}");
    if let Some(path) = write {
        let body = format!(
            "<!-- generated by `cargo xtask qat-table {}`; do not edit -->\n\n\
             Full 10,000-image Fashion-MNIST test set. fp32: the bundled net in lutq's float \
             interpreter. PTQ: lutq's quantizer on it (calibration: the first 1,000 training \
             images, CLE off; the \"CLE off\" columns of docs/results.md). QAT: each committed \
             model of `models/qdq/` (training commands: `models/qdq/README.md`) in the mode \
             its trained weights imply. \"Integer vs the QDQ file\": lutq's integer program \
             against lutq's float execution of the same QDQ file (top-1 agreement, output \
             SQNR). Integer modes run by the JIT (bit-exact with the golden interpreter). \
             Weights: bytes of weights, tables and biases.\n\n{table}\n\
             ### Training runs\n\n\
             Every run of `scripts/qat_fashion.py` these docs report, from its record in \
             `models/qdq/qat_runs/` (written by the script next to the model). The recipe \
             is chosen on the validation images (the last 5,000 training images, held out \
             from fine-tuning; the fp32 nets were trained on them, so compare runs with each \
             other there, not with fp32; – where a run trained on all 60,000 with `--val 0`); \
             the test top-1 is onnxruntime's execution of the \
             exported file. Minutes: wall time with the run's torch threads on the shared \
             machine, whose load varied; CPU: the one the record names.\n\n{runs}",
            args.join(" "),
        );
        crate::docs::replace_section(&path, "qat-results", "QAT results on Fashion-MNIST", &body)?;
    }
    Ok(())
}

/// `lutq eval --json` of `model` on the test set with `extra` options (from `cache`
/// when it holds the result of the same binary, command line and files).
fn eval(
    lutq: &Path,
    cache: Option<&Path>,
    model: &str,
    extra: &[&str],
    limit: Option<&str>,
) -> anyhow::Result<Value> {
    let mut cmd = Command::new(lutq);
    cmd.args(["eval", model, "--data", TEST_X, "--labels", TEST_Y])
        .args(["--calib", CALIB, "--backend", "jit", "--json"])
        .args(extra);
    if let Some(n) = limit {
        cmd.args(["--limit", n]);
    }
    crate::accuracy::eval_json_cached(lutq, cache, &mut cmd, model)
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(format!("{:x}", sha2::Sha256::digest(&bytes)))
}

fn results(json: &Value, model: &str) -> anyhow::Result<Vec<Value>> {
    json["results"]
        .as_array()
        .cloned()
        .filter(|r| !r.is_empty())
        .with_context(|| format!("{model}: lutq eval --json has no results"))
}

fn top1(r: &Value, model: &str) -> anyhow::Result<f64> {
    r["top1_accuracy"]
        .as_f64()
        .with_context(|| format!("{model}: no top-1 accuracy in lutq eval --json"))
}

/// One table row; accuracies as fractions.
fn row(net: &str, what: &str, mode: &str, acc: f64, fp32: f64, against: &str, r: &Value) -> String {
    let delta = if what.starts_with("fp32") {
        "–".to_string()
    } else {
        format!("{:+.2}", (acc - fp32) * 100.0).replace('-', "−")
    };
    let kb = r["weight_bytes"].as_f64().unwrap_or(f64::NAN) / 1024.0;
    format!(
        "| {net} | {what} | `{mode}` | {:.2} % | {delta} | {against} | {kb:.1} |\n",
        acc * 100.0
    )
}

/// The committed QAT models of `net`, sorted by name.
fn qat_models(net: &str) -> anyhow::Result<Vec<PathBuf>> {
    let prefix = format!("{net}_qat_");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(QDQ_DIR).with_context(|| format!("cannot read {QDQ_DIR}"))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".onnx") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// The training runs recorded in `models/qdq/qat_runs/*.json`, in file-name order.
fn runs_table() -> anyhow::Result<String> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(RUNS_DIR) {
        Ok(dir) => dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {RUNS_DIR}")),
    };
    files.sort();
    // Every committed QDQ model with its sha256.
    let mut committed: Vec<(PathBuf, String)> = Vec::new();
    for entry in std::fs::read_dir(QDQ_DIR).with_context(|| format!("cannot read {QDQ_DIR}"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "onnx") {
            let sha = sha256_of(&path)?;
            committed.push((path, sha));
        }
    }
    committed.sort();
    let mut s = String::from(
        "| run | net | mode | tables | epochs | lr | kd weight | T | validation: fp32 | validation: before | validation after each epoch | test top-1 | minutes | threads | CPU | model |\n\
         |---|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---|\n",
    );
    for f in files {
        let text = std::fs::read_to_string(&f).with_context(|| format!("{}", f.display()))?;
        let r: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", f.display()))?;
        let a = &r["args"];
        let num = |v: &Value| v.as_f64().map_or("?".to_string(), |x| format!("{x}"));
        // null: no validation images (`--val 0`, trained on all 60,000).
        let pct = |v: &Value| match v {
            Value::Null => "–".to_string(),
            v => v
                .as_f64()
                .map_or("?".to_string(), |x| format!("{:.2} %", x * 100.0)),
        };
        let per_epoch = r["val_top1_per_epoch"]
            .as_array()
            .map(|v| {
                if v.iter().all(Value::is_null) {
                    return "–".to_string();
                }
                v.iter()
                    .map(|x| {
                        x.as_f64()
                            .map_or("?".into(), |x| format!("{:.2}", x * 100.0))
                    })
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
            .unwrap_or_default();
        // The table layout (`--lut-per-channel`, `--lut-tables N`; records from before
        // the options have neither: one table per layer).
        let mut tables = match (a["lut_per_channel"].as_bool(), a["lut_tables"].as_u64()) {
            (Some(true), _) => "per channel".to_string(),
            (_, Some(n)) if n > 1 => format!("≤ {n} per layer"),
            _ => "one per layer".to_string(),
        };
        // `--weight-exponents search` (records from before the option: max).
        if a["weight_exponents"].as_str() == Some("search") {
            tables.push_str(", exponents searched");
        }
        // The committed model this run exported, if any (same sha256, under any name).
        let sha = r["sha256"].as_str().unwrap_or("");
        let committed = committed
            .iter()
            .find(|(_, s)| s == sha)
            .map(|(path, _)| path.clone());
        s.push_str(&format!(
            "| `{}` | {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} % | {:.0} | {} | {} | {} |\n",
            f.file_stem().unwrap_or_default().to_string_lossy(),
            a["model"].as_str().unwrap_or("?"),
            a["mode"].as_str().unwrap_or("?"),
            tables,
            num(&a["epochs"]),
            num(&a["lr"]),
            num(&a["kd_weight"]),
            num(&a["temperature"]),
            pct(&r["fp32_val_top1"]),
            pct(&r["fake_quant_val_top1_before"]),
            per_epoch,
            r["onnxruntime_reference_top1"].as_f64().unwrap_or(f64::NAN) * 100.0,
            r["wall_s"].as_f64().unwrap_or(f64::NAN) / 60.0,
            num(&a["threads"]),
            // (The first record, cut from a log, names none.)
            r["cpu"].as_str().unwrap_or("–"),
            match &committed {
                Some(path) => format!("`{}` (committed)", path.display()),
                None => "not kept".to_string(),
            },
        ));
    }
    Ok(s)
}
