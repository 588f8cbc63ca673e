//! `cargo xtask budget`: `--flash-budget` against the uniform modes (docs/results.md,
//! section `flash-budget`): MobileNetV2 on the disjoint-photo protocol (64 calibration
//! images) and the Fashion-MNIST nets, each at several multiples of the all-int8 build's
//! constants, next to all-lut4 (`lut4-pot-channel`) and all-int8 (`int8-pot-channel`).
//!
//! Runs the release `lutq eval --json --backend jit` (bit-exact with the golden
//! interpreter) and reads the plan from its `flash_budget` field.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::docs;

struct Net {
    name: &'static str,
    model: &'static str,
    calib: &'static str,
    calib_limit: usize,
    data: &'static str,
    labels: Option<&'static str>,
    /// A second evaluation set (`--also-data`).
    also: Option<&'static str>,
    note: &'static str,
}

const NETS: &[Net] = &[
    Net {
        name: "mobilenet_v2",
        model: "models/mobilenet_v2.onnx",
        calib: "data/full/protocol/calib.npy",
        calib_limit: 64,
        data: "data/full/protocol/eval.npy",
        labels: None,
        also: Some("data/full/protocol/eval_calib_photos.npy"),
        note: "disjoint-photo protocol (`data/protocol/`): 64 calibration crops of 29 photos; \
               agreement and SQNR on 192 crops of 33 other photos, and SQNR on 192 other \
               crops of the calibration photos",
    },
    Net {
        name: "efficientnet_lite0",
        model: "target/zoo/efficientnet_lite0.onnx",
        calib: "data/full/protocol/centered/calib.npy",
        calib_limit: 64,
        data: "data/full/protocol/centered/eval.npy",
        labels: None,
        also: Some("data/full/protocol/centered/eval_calib_photos.npy"),
        note: "the zoo's EfficientNet-Lite0 (`cargo xtask zoo --build` builds it; inputs (v − 127) / 128), \
               same disjoint-photo protocol as mobilenet_v2 (`data/full/protocol/centered/`)",
    },
    Net {
        name: "fashion_resnet8",
        model: "models/fashion_resnet8.onnx",
        calib: "data/fashion_mnist/train_x.npy",
        calib_limit: 1000,
        data: "data/full/fashion_mnist/test_x.npy",
        labels: Some("data/full/fashion_mnist/test_y.npy"),
        also: None,
        note: "full 10k test set; calibration: the first 1,000 training images",
    },
    Net {
        name: "fashion_mobilenetv2",
        model: "models/fashion_mobilenetv2.onnx",
        calib: "data/fashion_mnist/train_x.npy",
        calib_limit: 1000,
        data: "data/full/fashion_mnist/test_x.npy",
        labels: Some("data/full/fashion_mnist/test_y.npy"),
        also: None,
        note: "full 10k test set; calibration: the first 1,000 training images",
    },
];

const USAGE: &str =
    "cargo xtask budget [--write FILE.md] [--only NAME] [--budgets 0.55x,0.6x,0.7x,0.8x]
                   [--limit N]

Runs `lutq eval --json --backend jit` (release build) on mobilenet_v2 (disjoint-photo
protocol, 64 calibration images; needs `python scripts/prepare_protocol.py`),
efficientnet_lite0 (the same protocol; skipped unless `cargo xtask zoo --build` built it)
and the Fashion-MNIST nets (needs `cargo xtask data`): lut4-pot-channel, int8-pot-channel and
lut4-pot-channel with each --flash-budget; CLE off. --limit N evaluates only the first N
samples (quick checks; not for the docs).";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut write: Option<PathBuf> = None;
    let mut only: Option<String> = None;
    let mut limit: Option<String> = None;
    let mut budgets = "0.55x,0.6x,0.7x,0.8x".to_string();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--write" => write = Some(it.next().context("--write needs a file")?.into()),
            "--only" => only = Some(it.next().context("--only needs a name")?.clone()),
            "--limit" => limit = Some(it.next().context("--limit needs a number")?.clone()),
            "--budgets" => budgets = it.next().context("--budgets needs a list")?.clone(),
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
    let cpu = crate::bench_float::cpu_name();
    for net in NETS {
        if only.as_deref().is_some_and(|o| o != net.name) {
            continue;
        }
        if !Path::new(net.model).exists() {
            eprintln!(
                "skipping {}: {} is not there (`cargo xtask zoo --build` builds the zoo's models)",
                net.name, net.model
            );
            continue;
        }
        let mut page = format!(
            "<!-- generated by `cargo xtask budget --only {} --write docs/results.md`; do not edit -->\n\n\
             `--flash-budget B` (base mode `lut4-pot-channel`) gives each Conv/Gemm layer lut4,\n\
             lut4 with one table per channel (`lut4/ch`) or int8 weights so that the constants\n\
             (weights, tables, biases, shifts, counted as the generated C stores them) fit B,\n\
             ranked by each layer's measured sensitivity (output error with only that layer in\n\
             lut4 or lut4/ch, the rest int8, on the first 8 calibration samples). **constants**: bytes as the C backend counts them, and as a multiple\n\
             of the all-int8 build's; **layers**: lut4 / lut4/ch / int8; **s**: seconds to quantize\n\
             (budget rows: the sensitivity pass, then the quantization of the plan) and evaluate,\n\
             on {cpu}, a shared 2-core machine (compare within a table). Evaluation by the JIT\n\
             (bit-exact with the golden interpreter); CLE off.\n",
            net.name
        );
        page.push_str(&table(lutq, net, &budgets, limit.as_deref())?);
        print!("{page}");
        if let Some(path) = &write {
            docs::replace_section(
                path,
                &format!("flash-budget-{}", net.name),
                &format!("Flash budget: {}", net.name),
                &page,
            )?;
            eprintln!(
                "wrote section flash-budget-{} of {}",
                net.name,
                path.display()
            );
        }
    }
    Ok(())
}

fn table(lutq: &Path, net: &Net, budgets: &str, limit: Option<&str>) -> anyhow::Result<String> {
    let mut s = format!("\n{}.\n\n", net.note);
    let also = net.also.is_some();
    s.push_str("| row | constants | × int8 | layers | ");
    if net.labels.is_some() {
        s.push_str("top-1 | ");
    }
    s.push_str("agree | SQNR dB |");
    if also {
        s.push_str(" SQNR dB, calibration photos |");
    }
    s.push_str(" s |\n|---|---:|---:|---:|");
    if net.labels.is_some() {
        s.push_str("---:|");
    }
    s.push_str("---:|---:|");
    if also {
        s.push_str("---:|");
    }
    s.push_str("---:|\n");
    let mut rows: Vec<(String, Vec<String>)> = vec![
        (
            "all-lut4 (`lut4-pot-channel`)".into(),
            vec!["--modes".into(), "lut4-pot-channel".into()],
        ),
        (
            "all-int8 (`int8-pot-channel`)".into(),
            vec!["--modes".into(), "int8-pot-channel".into()],
        ),
    ];
    for b in budgets.split(',') {
        rows.push((
            format!("`--flash-budget {b}`"),
            vec![
                "--modes".into(),
                "lut4-pot-channel".into(),
                "--flash-budget".into(),
                b.into(),
            ],
        ));
    }
    let mut int8_bytes = None;
    let mut results = Vec::new();
    for (label, flags) in rows {
        let v = match eval(lutq, net, &flags, limit) {
            Ok(v) => v,
            // A budget below the smallest plan is the user error the CLI reports.
            Err(e) if e.to_string().contains("below the smallest plan") => {
                let msg = e.to_string();
                let at = msg.find("a flash budget").unwrap_or(0);
                let line = msg[at..].lines().next().unwrap_or("").to_string();
                results.push((label, serde_json::json!({ "error": line })));
                continue;
            }
            Err(e) => return Err(e),
        };
        let r = v["results"][0].clone();
        if let Some(b) = r["flash_budget"]["int8_bytes"].as_u64() {
            int8_bytes = Some(b);
        }
        if label.starts_with("all-int8") {
            int8_bytes = int8_bytes.or(r["constant_bytes"].as_u64());
        }
        results.push((label, r));
    }
    for (label, r) in &results {
        if let Some(e) = r["error"].as_str() {
            writeln!(s, "| {label} | {e} |").unwrap();
            continue;
        }
        let bytes = r["constant_bytes"].as_u64().context("constant_bytes")?;
        let ratio = int8_bytes.map_or("–".into(), |i| format!("{:.3}", bytes as f64 / i as f64));
        let layers = match r["flash_budget"]["layers"].as_array() {
            Some(ls) => {
                let count = |f: &str| ls.iter().filter(|l| l["format"] == f).count();
                format!(
                    "{} / {} / {}",
                    count("lut4"),
                    count("lut4/ch"),
                    count("int8")
                )
            }
            None => "–".into(),
        };
        write!(s, "| {label} | {} | {ratio} | {layers} | ", kib(bytes)).unwrap();
        if net.labels.is_some() {
            write!(s, "{} | ", pct(&r["top1_accuracy"])).unwrap();
        }
        write!(s, "{} | {} |", pct(&r["top1_agreement"]), db(&r["sqnr_db"])).unwrap();
        if also {
            write!(s, " {} |", db(&r["also"][0]["sqnr_db"])).unwrap();
        }
        writeln!(s, " {:.0} |", r["seconds"].as_f64().unwrap_or(f64::NAN)).unwrap();
    }
    // The plan of the first budget, layer by layer.
    if let Some((label, r)) = results.iter().find(|(_, r)| r["flash_budget"].is_object()) {
        let fb = &r["flash_budget"];
        write!(
            s,
            "\nPlan of {label}: sensitivity pass {:.0} s on {} samples. Per layer: the format \
             chosen, its bytes, and the output SQNR (dB, against all-int8) with only that layer \
             in lut4 / lut4/ch.\n\n| layer | format | bytes | lut4 | lut4/ch |\n|---|---|---:|---:|---:|\n",
            fb["sensitivity_seconds"].as_f64().unwrap_or(f64::NAN),
            fb["sensitivity_samples"]
        )
        .unwrap();
        for l in fb["layers"].as_array().into_iter().flatten() {
            let opt = |f: &str| {
                l["options"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|o| o["format"] == f)
                    .map_or("–".into(), |o| db(&o["sensitivity_db"]))
            };
            writeln!(
                s,
                "| `{}` | {} | {} | {} | {} |",
                l["name"].as_str().unwrap_or(""),
                l["format"].as_str().unwrap_or(""),
                l["bytes"],
                opt("lut4"),
                opt("lut4/ch")
            )
            .unwrap();
        }
    }
    Ok(s)
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("–".into(), |x| format!("{:.2} %", 100.0 * x))
}

fn db(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |x| format!("{x:.1}"))
}

fn eval(lutq: &Path, net: &Net, flags: &[String], limit: Option<&str>) -> anyhow::Result<Value> {
    let mut cmd = Command::new(lutq);
    cmd.args(["eval", net.model, "--data", net.data, "--calib", net.calib])
        .args(["--calib-limit", &net.calib_limit.to_string()])
        .args(["--cle", "off", "--backend", "jit", "--json"])
        .args(flags);
    if let Some(l) = net.labels {
        cmd.args(["--labels", l]);
    }
    if let Some(a) = net.also {
        cmd.args(["--also-data", a]);
    }
    if let Some(n) = limit {
        cmd.args(["--limit", n]);
    }
    eprintln!("{}: lutq eval … {}", net.name, flags.join(" "));
    let out = cmd.output().context("cannot run lutq")?;
    if !out.status.success() {
        bail!(
            "lutq eval failed on {}:\n{}",
            net.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("lutq eval --json output")
}
