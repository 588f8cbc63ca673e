//! `cargo xtask accuracy`: the accuracy table of docs/results.md — every quantization
//! mode on every reference model and data set, with CLE off and on, plus onnxruntime's
//! static int8 quantization of the same models on the same data as a reference row.
//!
//! Runs the release `lutq eval --json` (so the table is what users get) and
//! `scripts/ort_int8.py` (PyPI onnxruntime), and writes the tables into the
//! `accuracy` section of the given Markdown file.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::docs;

struct Benchmark {
    name: &'static str,
    model: &'static str,
    calib: &'static str,
    data: &'static str,
    labels: Option<&'static str>,
    calib_limit: usize,
    note: &'static str,
}

const BENCHMARKS: &[Benchmark] = &[
    Benchmark {
        name: "fashion_resnet8",
        model: "models/fashion_resnet8.onnx",
        calib: "data/fashion_mnist/train_x.npy",
        data: "data/full/fashion_mnist/test_x.npy",
        labels: Some("data/full/fashion_mnist/test_y.npy"),
        calib_limit: 1000,
        note: "full 10k test set; calibration: the first 1,000 training images",
    },
    Benchmark {
        name: "fashion_mobilenetv2",
        model: "models/fashion_mobilenetv2.onnx",
        calib: "data/fashion_mnist/train_x.npy",
        data: "data/full/fashion_mnist/test_x.npy",
        labels: Some("data/full/fashion_mnist/test_y.npy"),
        calib_limit: 1000,
        note: "full 10k test set; calibration: the first 1,000 training images",
    },
    Benchmark {
        name: "mobilenet_v2",
        model: "models/mobilenet_v2.onnx",
        calib: "data/full/photos/calib_mirrored.npy",
        data: "data/full/photos/eval.npy",
        labels: None,
        calib_limit: 256,
        note: "ImageNet MobileNetV2 on the bundled natural-photo crops (no labels: top-1 \
               agreement with fp32 and SQNR); calibration: the 128 calibration crops and \
               their mirror images (256 images, as in `cargo xtask bench-quant`), 96 \
               evaluation crops from disjoint recipes (no mirrored calibration crop is an \
               evaluation crop; some sources overlap in pixels, see data/README.md)",
    },
];

/// Extra rows: the paper's mode with one lever each, to show what each buys.
const LEVERS: &[(&str, &[&str])] = &[
    (
        "lut4-pot-channel, plain fit (no GPTQ, no float targets, no bias correction)",
        &["--no-data-aware", "--no-bias-correction"],
    ),
    (
        "lut4-pot-channel, weight targets (no upstream compensation)",
        &["--no-float-target"],
    ),
    (
        "lut4-pot-channel + int8 first & depthwise layers",
        &["--keep-8bit", "first,depthwise"],
    ),
    (
        "lut4-pot-channel + one LUT per channel",
        &["--lut-per-channel"],
    ),
];

const USAGE: &str =
    "cargo xtask accuracy [--write FILE.md] [--only NAME] [--limit N] [--modes m1,m2,…] [--no-ort]

Runs `lutq eval` (release build) for every mode on fashion_resnet8, fashion_mobilenetv2
(full Fashion-MNIST test set) and mobilenet_v2 (bundled photo crops), CLE off and on, and
onnxruntime's static int8 QDQ quantization (scripts/ort_int8.py) as a reference row.
Needs `cargo xtask data` first (data/full/) and, for the reference row, PyPI onnxruntime.
--limit N evaluates only the first N samples (quick checks; not for the docs).";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut write: Option<PathBuf> = None;
    let mut only: Option<String> = None;
    let mut limit: Option<String> = None;
    let mut modes = "fp32,int8-pc,int4-pc,int8-pot-channel,int4-pot-layer,int4-pot-channel,lut4-pot-layer,lut4-pot-channel".to_string();
    let mut ort = true;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--write" => write = Some(it.next().context("--write needs a file")?.into()),
            "--only" => only = Some(it.next().context("--only needs a name")?.clone()),
            "--limit" => limit = Some(it.next().context("--limit needs a number")?.clone()),
            "--modes" => modes = it.next().context("--modes needs a list")?.clone(),
            "--no-ort" => ort = false,
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n\n{USAGE}"),
        }
    }
    let status = Command::new("cargo")
        .args(["build", "--release", "--locked", "-p", "lutq-cli"])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building lutq failed");
    }
    let lutq = Path::new("target/release/lutq");

    let mut page = String::new();
    for b in BENCHMARKS {
        if only.as_deref().is_some_and(|o| o != b.name) {
            continue;
        }
        for path in [b.model, b.calib, b.data].into_iter().chain(b.labels) {
            if !Path::new(path).exists() {
                bail!("{path} is missing: run `cargo xtask data` first");
            }
        }
        // rows[i] = (label, [result with CLE off, result with CLE on]).
        let mut rows: Vec<(String, Vec<Value>)> = Vec::new();
        for (i, cle) in ["off", "on"].into_iter().enumerate() {
            eprintln!("accuracy: {} with CLE {cle}", b.name);
            let json = eval(lutq, b, cle, &modes, &[], limit.as_deref())?;
            for (k, r) in json["results"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                if i == 0 {
                    rows.push((r["mode"].as_str().unwrap_or("?").to_string(), vec![r]));
                } else {
                    rows[k].1.push(r);
                }
            }
        }
        for (label, flags) in LEVERS {
            let mut cells = Vec::new();
            for cle in ["off", "on"] {
                eprintln!("accuracy: {} {label} with CLE {cle}", b.name);
                let json = eval(lutq, b, cle, "lut4-pot-channel", flags, limit.as_deref())?;
                cells.push(json["results"][0].clone());
            }
            rows.push((label.to_string(), cells));
        }
        let reference = if ort {
            eprintln!("accuracy: {} with onnxruntime int8", b.name);
            Some(ort_reference(b, limit.as_deref())?)
        } else {
            None
        };
        page.push_str(&table(b, &rows, reference.as_ref()));
        if b.labels.is_none() {
            eprintln!("accuracy: {} per-layer SQNR", b.name);
            page.push_str(&per_layer(lutq, b, limit.as_deref())?);
        }
    }
    print!("{page}");
    if let Some(path) = write {
        let body = format!(
            "<!-- generated by `cargo xtask accuracy {}`; do not edit -->\n\n\
             Columns: top-1 accuracy against the labels (Fashion-MNIST), top-1 agreement with\n\
             the fp32 model, and output SQNR against fp32 (dB), each with cross-layer\n\
             equalization off and on (ReLU6 → ReLU on equalized pairs, which changes the fp32\n\
             function a little: the fp32 row with CLE on shows by how much). Weights: flash\n\
             bytes of weights, tables, biases and rescales.\n\n{page}",
            args.join(" ")
        );
        docs::replace_section(&path, "accuracy", "Quantization accuracy", &body)?;
    }
    Ok(())
}

/// `lutq eval --json` on one benchmark.
fn eval(
    lutq: &Path,
    b: &Benchmark,
    cle: &str,
    modes: &str,
    flags: &[&str],
    limit: Option<&str>,
) -> anyhow::Result<Value> {
    let mut cmd = Command::new(lutq);
    cmd.args(["eval", b.model, "--data", b.data, "--calib", b.calib])
        .args([
            "--calib-limit",
            &b.calib_limit.to_string(),
            "--cle",
            cle,
            "--relu6",
            "replace",
        ])
        .args(["--modes", modes, "--json"])
        .args(flags);
    if let Some(l) = b.labels {
        cmd.args(["--labels", l]);
    }
    if let Some(n) = limit {
        cmd.args(["--limit", n]);
    }
    let out = cmd.output().context("cannot run lutq")?;
    if !out.status.success() {
        bail!(
            "lutq eval failed on {}:\n{}",
            b.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("lutq eval --json output")
}

/// Where the error comes from: SQNR of every layer's output against the float model,
/// for int8 weights and for 4-bit LUT weights with one table per channel.
fn per_layer(lutq: &Path, b: &Benchmark, limit: Option<&str>) -> anyhow::Result<String> {
    let runs = [
        (
            "int8-pot-channel",
            eval(lutq, b, "off", "int8-pot-channel", &["--per-layer"], limit)?,
        ),
        (
            "lut4-pot-channel",
            eval(lutq, b, "off", "lut4-pot-channel", &["--per-layer"], limit)?,
        ),
        (
            "lut4-pot-channel, one LUT per channel",
            eval(
                lutq,
                b,
                "off",
                "lut4-pot-channel",
                &["--per-layer", "--lut-per-channel"],
                limit,
            )?,
        ),
    ];
    let mut s = format!(
        "Per-layer output SQNR against the float model (dB; first 32 evaluation samples, CLE \
         off) for {}: where the error comes from.\n\n| layer | op |",
        b.name
    );
    for (name, _) in &runs {
        s.push_str(&format!(" {name} |"));
    }
    s.push_str("\n|---|---|");
    s.push_str(&"---:|".repeat(runs.len()));
    s.push('\n');
    let layers = |i: usize| {
        runs[i].1["results"][0]["layers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    for (k, l) in layers(0).iter().enumerate() {
        s.push_str(&format!(
            "| {} | {} |",
            l["name"].as_str().unwrap_or("?"),
            l["op"].as_str().unwrap_or("?")
        ));
        for i in 0..runs.len() {
            s.push_str(&format!(
                " {} |",
                db(layers(i).get(k).and_then(|l| l.get("sqnr_db")))
            ));
        }
        s.push('\n');
    }
    s.push('\n');
    Ok(s)
}

fn ort_reference(b: &Benchmark, limit: Option<&str>) -> anyhow::Result<Value> {
    let data = match limit {
        // The script takes whole files; a limited run slices with numpy first.
        Some(_) => bail!("--limit and the onnxruntime row don't mix: add --no-ort"),
        None => b.data,
    };
    let out = Command::new("python3")
        .args([
            "scripts/ort_int8.py",
            b.model,
            b.calib,
            data,
            b.labels.unwrap_or("-"),
        ])
        .arg(b.calib_limit.to_string())
        .env("OMP_NUM_THREADS", "1")
        .output()
        .context("cannot start python3 (needs PyPI onnxruntime and numpy)")?;
    if !out.status.success() {
        bail!(
            "scripts/ort_int8.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).context("unexpected output from scripts/ort_int8.py")
}

fn pct(v: Option<&Value>) -> String {
    v.and_then(Value::as_f64)
        .map_or("–".into(), |v| format!("{:.2} %", 100.0 * v))
}

fn db(v: Option<&Value>) -> String {
    v.and_then(Value::as_f64)
        .map_or("–".into(), |v| format!("{v:.1}"))
}

fn table(b: &Benchmark, rows: &[(String, Vec<Value>)], reference: Option<&Value>) -> String {
    let mut s = format!("### {}\n\n{}.\n\n", b.name, b.note);
    let labelled = b.labels.is_some();
    let cols = if labelled {
        "top-1 | agree | SQNR"
    } else {
        "agree | SQNR"
    };
    s.push_str(&format!(
        "| mode | {cols} (CLE off) | {cols} (CLE on) | weights |\n"
    ));
    let n = if labelled { 6 } else { 4 };
    s.push_str(&format!(
        "|---{}|\n",
        "|---:".repeat(n + 1).trim_end_matches('|')
    ));
    for (label, cells) in rows {
        let mut line = format!("| {label} ");
        for r in cells {
            if labelled {
                line.push_str(&format!("| {} ", pct(r.get("top1_accuracy"))));
            }
            line.push_str(&format!(
                "| {} | {} ",
                pct(r.get("top1_agreement")),
                db(r.get("sqnr_db"))
            ));
        }
        let kb = cells
            .first()
            .and_then(|r| r["weight_bytes"].as_f64())
            .unwrap_or(0.0)
            / 1024.0;
        line.push_str(&format!("| {kb:.0} KB |\n"));
        s.push_str(&line);
    }
    if let Some(r) = reference {
        let mut line = format!("| {} ", r["mode"].as_str().unwrap_or("onnxruntime int8"));
        if labelled {
            line.push_str(&format!("| {} ", pct(r.get("top1_accuracy"))));
        }
        line.push_str(&format!(
            "| {} | {} ",
            pct(r.get("top1_agreement")),
            db(r.get("sqnr_db"))
        ));
        let blanks = if labelled { 3 } else { 2 };
        line.push_str(&"| ".repeat(blanks));
        line.push_str("| – |\n");
        s.push_str(&line);
    }
    s.push('\n');
    s
}
