//! `cargo xtask accuracy`: the accuracy tables of docs/results.md — every quantization
//! mode on every reference model and data set, plus onnxruntime's static int8
//! quantization of the same models on the same data as a reference row.
//!
//! * Fashion-MNIST nets (section `accuracy`): CLE off and on, the full test set;
//!   the onnxruntime row comes from running `scripts/ort_int8.py`.
//! * ImageNet MobileNetV2 (section `accuracy-imagenet`): the disjoint-photo protocol of
//!   `scripts/prepare_protocol.py` (`data/protocol/`): calibration crops of 29 photos,
//!   evaluation crops of 33 other photos, and — from the same quantized model — other
//!   crops of the calibration photos, so that every row shows how much of its result is
//!   fitted to the calibration photos. One table per calibration size (64 and 256 by
//!   default); the onnxruntime row is read from the committed
//!   `data/protocol/onnxruntime_int8.json` (`scripts/ort_protocol.py`).
//!
//! Runs the release `lutq eval --json` (so the tables are what users get).

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
    /// A second evaluation set scored by the same quantized models (`--also-data`).
    also: Option<&'static str>,
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
        also: None,
        calib_limit: 1000,
        note: "full 10k test set; calibration: the first 1,000 training images",
    },
    Benchmark {
        name: "fashion_mobilenetv2",
        model: "models/fashion_mobilenetv2.onnx",
        calib: "data/fashion_mnist/train_x.npy",
        data: "data/full/fashion_mnist/test_x.npy",
        labels: Some("data/full/fashion_mnist/test_y.npy"),
        also: None,
        calib_limit: 1000,
        note: "full 10k test set; calibration: the first 1,000 training images",
    },
];

/// An ImageNet model measured on the disjoint-photo protocol (`python
/// scripts/prepare_protocol.py` writes the NPY files, in each normalisation's folder;
/// `data/protocol/files.csv` holds their sha256).
struct ProtocolModel {
    name: &'static str,
    title: &'static str,
    model: &'static str,
    /// How to get the model when it is not committed.
    source: &'static str,
    /// docs/results.md section.
    section: &'static str,
    /// Calibration crops of the calibration photos (256; the first N calibrate).
    calib: &'static str,
    /// Crops of the evaluation photos: the headline numbers.
    eval: &'static str,
    /// Other crops of the calibration photos: the old protocol's kind of evaluation.
    eval_calib_photos: &'static str,
    /// onnxruntime's int8 reference (`scripts/ort_protocol.py`).
    ort: &'static str,
}

const PROTOCOL_MODELS: &[ProtocolModel] = &[
    ProtocolModel {
        name: "mobilenet_v2",
        title: "ImageNet MobileNetV2 (BN folded by lutq)",
        model: "models/mobilenet_v2.onnx",
        source: "committed",
        section: "accuracy-imagenet",
        calib: "data/full/protocol/calib.npy",
        eval: "data/full/protocol/eval.npy",
        eval_calib_photos: "data/full/protocol/eval_calib_photos.npy",
        ort: "data/protocol/onnxruntime_int8.json",
    },
    ProtocolModel {
        name: "efficientnet_lite0",
        title: "ImageNet EfficientNet-Lite0 from the model zoo (BN folded by lutq, inputs (v − 127) / 128)",
        model: "target/zoo/efficientnet_lite0.onnx",
        source: "`python scripts/zoo/build_zoo.py --only efficientnet_lite0` (models/zoo/manifest.json; see models/zoo/README.md)",
        section: "accuracy-efficientnet",
        calib: "data/full/protocol/centered/calib.npy",
        eval: "data/full/protocol/centered/eval.npy",
        eval_calib_photos: "data/full/protocol/centered/eval_calib_photos.npy",
        ort: "data/protocol/onnxruntime_int8_efficientnet_lite0.json",
    },
];
const PROTOCOL_FILES: &str = "data/protocol/files.csv";
/// Where `data/protocol/files.csv`'s paths start.
const PROTOCOL_DIR: &str = "data/full/protocol";

/// Extra rows of the ImageNet tables beyond [`LEVERS`]: (label, mode, flags).
const IMAGENET_LEVERS: &[(&str, &str, &[&str])] = &[(
    "int8-pot-channel, weight targets (no upstream compensation)",
    "int8-pot-channel",
    &["--no-float-target"],
)];

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

/// The row `--reconstruct` adds (opt-in: it costs about 10× the default fit's time on
/// MobileNetV2, docs/quantization.md "Reconstruction").
const RECONSTRUCT_LEVER: (&str, &[&str]) = (
    "lut4-pot-channel + reconstruction (--reconstruct)",
    &["--reconstruct"],
);

/// Whether `--reconstruct` was given.
static RECONSTRUCT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// [`LEVERS`], and the reconstruction row with `--reconstruct`.
fn levers() -> Vec<(&'static str, &'static [&'static str])> {
    let mut l = LEVERS.to_vec();
    if RECONSTRUCT.get().copied().unwrap_or(false) {
        l.push(RECONSTRUCT_LEVER);
    }
    l
}

const USAGE: &str =
    "cargo xtask accuracy [--write FILE.md] [--only NAME] [--limit N] [--modes m1,m2,…] [--no-ort]
                     [--calib-sizes 64,256] [--cache DIR] [--reconstruct]

Runs `lutq eval` (release build) for every mode on fashion_resnet8, fashion_mobilenetv2
(full Fashion-MNIST test set; CLE off and on; onnxruntime's static int8 QDQ quantization,
scripts/ort_int8.py, as a reference row) and on mobilenet_v2 and efficientnet_lite0 (the
zoo's; skipped with a note when target/zoo/efficientnet_lite0.onnx was not built) with
the disjoint-photo protocol (data/protocol/: calibration on the first N of 256 crops of 29
photos for each N of --calib-sizes, evaluation on 192 crops of 33 other photos and on 192
other crops of the calibration photos; CLE off; the onnxruntime rows from
data/protocol/onnxruntime_int8*.json, made by scripts/ort_protocol.py).
Needs `cargo xtask data` (data/full/fashion_mnist), `python scripts/prepare_protocol.py`
(data/full/protocol) and, for the Fashion-MNIST reference rows, PyPI onnxruntime.
--only NAME runs one model (fashion_resnet8, fashion_mobilenetv2, mobilenet_v2 or
efficientnet_lite0); with --write, only the sections of the models that ran are replaced.
--limit N evaluates only the first N samples of each set (quick checks; not for the docs).
--cache DIR keeps every `lutq eval` result in DIR, keyed by the lutq binary's sha256, the
command line and its files' sizes and times, and reuses it: an interrupted run resumes.
--reconstruct adds the row `lut4-pot-channel + reconstruction` (lutq's --reconstruct) to
every table; it costs about 10x the default fit's time on MobileNetV2 (64 images).";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut write: Option<PathBuf> = None;
    let mut only: Option<String> = None;
    let mut limit: Option<String> = None;
    let mut modes = "fp32,int8-pc,int4-pc,int8-pot-channel,int4-pot-layer,int4-pot-channel,lut4-pot-layer,lut4-pot-channel".to_string();
    let mut ort = true;
    let mut calib_sizes = vec![64, 256];
    let mut cache = None;
    let mut reconstruct = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--write" => write = Some(it.next().context("--write needs a file")?.into()),
            "--only" => only = Some(it.next().context("--only needs a name")?.clone()),
            "--limit" => limit = Some(it.next().context("--limit needs a number")?.clone()),
            "--modes" => modes = it.next().context("--modes needs a list")?.clone(),
            "--no-ort" => ort = false,
            "--reconstruct" => reconstruct = true,
            "--cache" => cache = Some(PathBuf::from(it.next().context("--cache needs a folder")?)),
            "--calib-sizes" => {
                calib_sizes = it
                    .next()
                    .context("--calib-sizes needs a list")?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .context("--calib-sizes: numbers, comma separated")?;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n\n{USAGE}"),
        }
    }
    CACHE.get_or_init(|| cache);
    RECONSTRUCT.get_or_init(|| reconstruct);
    let lutq = build_lutq()?;

    // (model, its tables) of the protocol models that ran.
    let mut protocol_pages: Vec<(&ProtocolModel, String)> = Vec::new();
    for pm in PROTOCOL_MODELS {
        if only.as_deref().is_some_and(|o| o != pm.name) {
            continue;
        }
        if !Path::new(pm.model).exists() {
            if only.is_some() {
                bail!("{} is missing: {}", pm.model, pm.source);
            }
            eprintln!(
                "accuracy: skipping {}: {} is missing ({})",
                pm.name, pm.model, pm.source
            );
            continue;
        }
        let tables = imagenet_tables(lutq, pm, &modes, &calib_sizes, limit.as_deref())?;
        protocol_pages.push((pm, tables));
    }
    // (model, its tables) of the Fashion-MNIST models that ran: one section each, so that
    // `--only` replaces its model's tables and keeps the other's.
    let mut pages: Vec<(&str, String)> = Vec::new();
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
        for (label, flags) in levers() {
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
        let mut tables = table(b, &rows, reference.as_ref());
        if b.labels.is_none() {
            eprintln!("accuracy: {} per-layer SQNR", b.name);
            tables.push_str(&per_layer(lutq, b, limit.as_deref())?);
        }
        pages.push((b.name, tables));
    }
    for (_, tables) in &pages {
        print!("{tables}");
    }
    for (_, tables) in &protocol_pages {
        print!("{tables}");
    }
    if let Some(path) = write {
        for (pm, tables) in &protocol_pages {
            let body = format!(
                "<!-- generated by `cargo xtask accuracy {}`; do not edit -->\n\n{tables}",
                args.join(" ")
            );
            docs::replace_section(
                &path,
                pm.section,
                &format!(
                    "Quantization accuracy: {} on photos the calibration never saw",
                    pm.name
                ),
                &body,
            )?;
        }
        for (name, tables) in &pages {
            let body = format!(
                "<!-- generated by `cargo xtask accuracy {}`; do not edit -->\n\n\
                 Columns: top-1 accuracy against the labels (Fashion-MNIST), top-1 agreement \
                 with\nthe fp32 model, and output SQNR against fp32 (dB), each with \
                 cross-layer\nequalization off and on (ReLU6 → ReLU on equalized pairs, which \
                 changes the fp32\nfunction a little: the fp32 row with CLE on shows by how \
                 much). Weights: flash\nbytes of weights, tables, biases and rescales.\n\n{tables}",
                args.join(" ")
            );
            docs::replace_section(
                &path,
                &format!("accuracy-{name}"),
                &format!("Quantization accuracy: {name}"),
                &body,
            )?;
        }
    }
    Ok(())
}

/// `--cache DIR`: where `lutq eval` results are kept, keyed by the sha256 of the lutq
/// binary, the command line and the length and modification time of every file it names.
static CACHE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

/// Builds the release `lutq` (what the tables are made with) and returns its path.
pub(crate) fn build_lutq() -> anyhow::Result<&'static Path> {
    let status = Command::new("cargo")
        .args(["build", "--release", "--locked", "-p", "lutq-cli"])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building lutq failed");
    }
    Ok(Path::new("target/release/lutq"))
}

/// The cache file of one `lutq eval` command line in the folder `dir`.
fn cache_file(lutq: &Path, dir: &Path, args: &[String]) -> anyhow::Result<PathBuf> {
    use sha2::Digest as _;
    // One binary per run of the xtask: hash it once.
    static BINARY: std::sync::OnceLock<(PathBuf, String)> = std::sync::OnceLock::new();
    let binary = match BINARY.get() {
        Some((path, b)) if path == lutq => b.clone(),
        _ => {
            let bytes = std::fs::read(lutq).with_context(|| format!("{}", lutq.display()))?;
            let b = format!("{:x}", sha2::Sha256::digest(&bytes));
            BINARY.get_or_init(|| (lutq.to_path_buf(), b.clone()));
            b
        }
    };
    let mut key = sha2::Sha256::new();
    key.update(binary.as_bytes());
    for a in args {
        key.update(b"\0");
        key.update(a.as_bytes());
        if let Ok(m) = std::fs::metadata(a) {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            key.update(format!("\0{}:{mtime}", m.len()).as_bytes());
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.join(format!("{:x}.json", key.finalize())))
}

/// Runs `cmd`, a `lutq eval --json` command line of the binary `lutq`, and parses its
/// output; with `cache` (a folder), reuses the result of the same binary (sha256), command
/// line and files (the length and modification time of every file it names), and keeps
/// new results there. `what` names the model in errors.
pub(crate) fn eval_json_cached(
    lutq: &Path,
    cache: Option<&Path>,
    cmd: &mut Command,
    what: &str,
) -> anyhow::Result<Value> {
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cached = cache.map(|dir| cache_file(lutq, dir, &args)).transpose()?;
    if let Some(path) = &cached
        && let Ok(bytes) = std::fs::read(path)
    {
        return serde_json::from_slice(&bytes).context("cached lutq eval --json output");
    }
    let out = cmd.output().context("cannot run lutq")?;
    if !out.status.success() {
        bail!(
            "lutq eval failed on {what}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{what}: lutq eval --json output"))?;
    if let Some(path) = cached {
        std::fs::write(&path, &out.stdout)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(value)
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
    if let Some(a) = b.also {
        // Two evaluation sets of MobileNetV2: the JIT (bit-exact with the golden
        // interpreter) runs them in a fraction of the interpreter's time.
        cmd.args(["--also-data", a, "--backend", "jit"]);
    }
    if let Some(n) = limit {
        cmd.args(["--limit", n]);
    }
    let cache = CACHE.get().and_then(|c| c.as_deref());
    eval_json_cached(lutq, cache, &mut cmd, b.name)
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

/// The ImageNet tables of one model: one per calibration size, each row with the
/// evaluation photos, the calibration photos and the gap, then the per-layer SQNR at the
/// first size.
fn imagenet_tables(
    lutq: &Path,
    pm: &ProtocolModel,
    modes: &str,
    calib_sizes: &[usize],
    limit: Option<&str>,
) -> anyhow::Result<String> {
    let hashes = protocol_hashes()?;
    let ort_path = pm.ort;
    let ort: Value =
        serde_json::from_str(&std::fs::read_to_string(ort_path).with_context(|| {
            format!("{ort_path} is missing: python3 scripts/ort_protocol.py (see its --help)")
        })?)
        .with_context(|| format!("{ort_path}: not JSON"))?;
    let inputs = ort["inputs"]
        .as_object()
        .with_context(|| format!("{ort_path}: no inputs"))?;
    for (file, sha) in inputs {
        let current = hashes
            .iter()
            .find(|(f, _)| f == file)
            .map(|(_, s)| s.as_str());
        if current != sha.as_str() {
            bail!(
                "{ort_path} was made from another {file}: rerun {}",
                ort["command"]
            );
        }
    }
    let name = pm.name;
    let mut page = format!(
        "{} (no labels: top-1 agreement with fp32 and \
         logit SQNR against fp32, in dB), on the disjoint-photo protocol of \
         `scripts/prepare_protocol.py` (photos, licences and crop recipes: data/README.md, \
         `data/protocol/`): calibration on the first N of 256 crops of **29 calibration \
         photos**; **new photos** = 192 crops of **33 other photos** (no photo, and no \
         scene, in both sets); **calibration photos** = 192 other crops (other windows) \
         of the 29 calibration photos, scored by the same quantized model — what the \
         tables before this protocol measured. **gap** = SQNR on the calibration photos \
         minus SQNR on the new photos: how much of a fit is fitted to its photos. CLE off, \
         ReLU6 kept as a clamp. Weights: flash bytes of weights, tables, biases and \
         rescales. The onnxruntime rows: `{}` (onnxruntime {}, per-channel int8 QDQ, \
         MinMax calibration on the same N crops), read from `{ort_path}`: first as the \
         QDQ model's own arithmetic (graph optimizations off, so no fused int8 kernel; what \
         an exact int8 engine computes on any CPU), then through this CPU's fused int8 \
         kernels, which saturate int16 sums on CPUs without VNNI.\n\n",
        pm.title,
        ort["command"].as_str().unwrap_or("?"),
        ort["versions"]["onnxruntime"].as_str().unwrap_or("?"),
    );
    let mut per_layer_done = false;
    for &n in calib_sizes {
        let b = Benchmark {
            name,
            model: pm.model,
            calib: pm.calib,
            data: pm.eval,
            labels: None,
            also: Some(pm.eval_calib_photos),
            calib_limit: n,
            note: "",
        };
        let reference = ort["results"]
            .as_array()
            .and_then(|r| {
                r.iter()
                    .find(|r| r["calibration_samples"].as_u64() == Some(n as u64))
            })
            .with_context(|| {
                format!("{ort_path} has no row for {n} calibration images: rerun {} with --calib-sizes …", ort["command"])
            })?;
        eprintln!("accuracy: {name}, {n} calibration images");
        let mut rows: Vec<(String, Value)> = eval(lutq, &b, "off", modes, &[], limit)?["results"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r["mode"].as_str().unwrap_or("?").to_string(), r))
            .collect();
        let levers = levers()
            .into_iter()
            .map(|(label, flags)| (label, "lut4-pot-channel", flags))
            .chain(IMAGENET_LEVERS.iter().copied());
        for (label, mode, flags) in levers {
            eprintln!("accuracy: {name}, {n} calibration images, {label}");
            let json = eval(lutq, &b, "off", mode, flags, limit)?;
            rows.push((label.to_string(), json["results"][0].clone()));
        }
        page.push_str(&format!(
            "### {name}, {n} calibration images\n\n\
             | mode | agree (new photos) | SQNR (new photos) | agree (calibration photos) | SQNR (calibration photos) | gap dB | weights |\n\
             |---|---:|---:|---:|---:|---:|---:|\n"
        ));
        for (label, r) in &rows {
            let also = &r["also"][0];
            let kb = r["weight_bytes"].as_f64().unwrap_or(0.0) / 1024.0;
            page.push_str(&format!(
                "| {label} | {} | {} | {} | {} | {} | {kb:.0} KB |\n",
                pct(r.get("top1_agreement")),
                db(r.get("sqnr_db")),
                pct(also.get("top1_agreement")),
                db(also.get("sqnr_db")),
                gap(also.get("sqnr_db"), r.get("sqnr_db")),
            ));
        }
        // The QDQ model's own arithmetic first (the reference), then this CPU's fused
        // int8 kernels when the file has them (scripts/ort_int8.py says why they differ).
        let executions = [
            (
                ort["mode"].as_str().unwrap_or("onnxruntime int8"),
                reference,
            ),
            (
                ort["kernels_mode"]
                    .as_str()
                    .unwrap_or("onnxruntime int8, fused kernels"),
                &reference["kernels"],
            ),
        ];
        for (label, r) in executions {
            let (new, old) = (&r["eval.npy"], &r["eval_calib_photos.npy"]);
            if new.is_null() {
                continue;
            }
            page.push_str(&format!(
                "| {label} | {} | {} | {} | {} | {} | – |\n",
                pct(new.get("top1_agreement")),
                db(new.get("sqnr_db")),
                pct(old.get("top1_agreement")),
                db(old.get("sqnr_db")),
                gap(old.get("sqnr_db"), new.get("sqnr_db")),
            ));
        }
        page.push('\n');
        if !per_layer_done {
            eprintln!("accuracy: {name} per-layer SQNR");
            let table = per_layer(lutq, &b, limit)?;
            page.push_str(&table.replacen(
                &format!("(dB; first 32 evaluation samples, CLE off) for {name}"),
                &format!(
                    "(dB; first 32 crops of the new photos, CLE off) for {name} \
                     calibrated on {n} images"
                ),
                1,
            ));
            per_layer_done = true;
        }
    }
    Ok(page)
}

/// `data/protocol/files.csv` as (file name, sha256), after checking that the files in
/// `data/full/protocol/` are those.
fn protocol_hashes() -> anyhow::Result<Vec<(String, String)>> {
    use sha2::Digest as _;
    let text = std::fs::read_to_string(PROTOCOL_FILES)
        .with_context(|| format!("cannot read {PROTOCOL_FILES}"))?;
    let mut out = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
        let cols: Vec<&str> = line.split(',').collect();
        let [file, _shape, sha] = cols[..] else {
            bail!("{PROTOCOL_FILES}: bad line {line}");
        };
        let path = Path::new(PROTOCOL_DIR).join(file);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "{} is missing: run python3 scripts/prepare_protocol.py (see data/README.md)",
                path.display()
            )
        })?;
        let got = format!("{:x}", sha2::Sha256::digest(&bytes));
        if got != sha {
            bail!(
                "{} does not match {PROTOCOL_FILES}: rerun python3 scripts/prepare_protocol.py",
                path.display()
            );
        }
        out.push((file.to_string(), sha.to_string()));
    }
    Ok(out)
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

/// `a − b` in dB, one decimal.
fn gap(a: Option<&Value>, b: Option<&Value>) -> String {
    match (a.and_then(Value::as_f64), b.and_then(Value::as_f64)) {
        (Some(a), Some(b)) => format!("{:+.1}", a - b),
        _ => "–".into(),
    }
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
    // The QDQ model's own arithmetic, then this CPU's fused int8 kernels
    // (scripts/ort_int8.py says why they differ).
    let executions = reference
        .into_iter()
        .flat_map(|r| [r, &r["kernels"]])
        .filter(|r| !r.is_null());
    for r in executions {
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

#[cfg(test)]
mod tests {
    //! The protocol's committed description (`data/protocol/`, written by
    //! `scripts/prepare_protocol.py`): no photo, scene or crop crosses from calibration
    //! to evaluation. Fast: reads only the small committed CSV and JSON files.
    use std::collections::{HashMap, HashSet};

    fn root() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// Rows of a CSV file as written by Python's `csv` module (quoted fields with `""`
    /// escapes; no newlines inside fields), each keyed by the header.
    fn csv(rel: &str) -> Vec<HashMap<String, String>> {
        let text = std::fs::read_to_string(root().join(rel)).unwrap();
        let split = |line: &str| {
            let (mut fields, mut cur, mut quoted) = (Vec::new(), String::new(), false);
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match (c, quoted) {
                    ('"', true) if chars.peek() == Some(&'"') => {
                        cur.push('"');
                        chars.next();
                    }
                    ('"', _) => quoted = !quoted,
                    (',', false) => fields.push(std::mem::take(&mut cur)),
                    _ => cur.push(c),
                }
            }
            fields.push(cur);
            fields
        };
        let mut lines = text.lines();
        let header = split(lines.next().unwrap());
        lines
            .map(|l| {
                let f = split(l);
                assert_eq!(f.len(), header.len(), "{rel}: {l}");
                header.iter().cloned().zip(f).collect()
            })
            .collect()
    }

    #[test]
    fn calibration_and_evaluation_photos_and_crops_are_disjoint() {
        let photos = csv("data/protocol/photos.csv");
        let set: HashMap<&str, &str> = photos
            .iter()
            .map(|p| (p["name"].as_str(), p["set"].as_str()))
            .collect();
        assert_eq!(set.len(), photos.len(), "a photo name twice");
        let files: HashSet<&str> = photos.iter().map(|p| p["sha256"].as_str()).collect();
        assert_eq!(
            files.len(),
            photos.len(),
            "one package file under two names"
        );
        let count = |s: &str| set.values().filter(|v| **v == s).count();
        assert!(count("calib") >= 24 && count("eval") >= 24, "{set:?}");
        assert_eq!(count("calib") + count("eval"), photos.len());
        let mut scenes: HashMap<&str, &str> = HashMap::new();
        for p in photos.iter().filter(|p| !p["scene"].is_empty()) {
            let first = *scenes.entry(&p["scene"]).or_insert(&p["set"]);
            assert_eq!(first, p["set"], "scene {} in both sets", p["scene"]);
        }
        for p in &photos {
            assert!(!p["licence"].is_empty() && p["sha256"].len() == 64, "{p:?}");
            // The zoo evaluates on the lomiri wallpapers: they never calibrate here either.
            if p["package"].contains("lomiri") {
                assert_eq!(p["set"], "eval", "{p:?}");
            }
        }
        // The old protocol's photos (data/photos) may calibrate, never evaluate; the
        // stereo twin of motorcycle_left is left out altogether.
        let old = std::fs::read_to_string(root().join("data/photos/names.txt")).unwrap();
        for name in old.lines().filter(|l| !l.is_empty()) {
            assert_ne!(set.get(name), Some(&"eval"), "{name}");
        }
        assert!(!set.contains_key("motorcycle_right"));

        let crops = csv("data/protocol/crops.csv");
        let mut per_split: HashMap<&str, Vec<&HashMap<String, String>>> = HashMap::new();
        for c in &crops {
            let expected = match c["split"].as_str() {
                "calib" | "eval_calib_photos" => "calib",
                "eval" => "eval",
                other => panic!("unknown split {other}"),
            };
            assert_eq!(set.get(c["photo"].as_str()), Some(&expected), "{c:?}");
            per_split.entry(&c["split"]).or_default().push(c);
        }
        assert_eq!(per_split["calib"].len(), 256);
        assert_eq!(per_split["eval"].len(), 192);
        assert_eq!(per_split["eval_calib_photos"].len(), 192);
        // The first 64 calibration crops (the small tables) cover every calibration photo.
        let first: HashSet<&str> = per_split["calib"][..64]
            .iter()
            .map(|c| c["photo"].as_str())
            .collect();
        assert_eq!(first.len(), count("calib"));
        let recipe =
            |c: &HashMap<String, String>| ["photo", "x", "y", "side", "flip"].map(|k| c[k].clone());
        let calib: HashSet<_> = per_split["calib"].iter().map(|c| recipe(c)).collect();
        for c in &per_split["eval_calib_photos"] {
            assert!(
                !calib.contains(&recipe(c)),
                "calibration crop evaluated: {c:?}"
            );
        }

        // The committed onnxruntime row was made from these very files.
        let hashes: HashMap<String, String> = csv("data/protocol/files.csv")
            .into_iter()
            .map(|f| (f["file"].clone(), f["sha256"].clone()))
            .collect();
        // Every normalisation writes the three files.
        assert_eq!(hashes.len(), 3 * 2);
        for pm in super::PROTOCOL_MODELS {
            let ort: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(root().join(pm.ort)).unwrap())
                    .unwrap();
            let inputs = ort["inputs"].as_object().unwrap();
            assert_eq!(inputs.len(), 3, "{}", pm.ort);
            for (file, sha) in inputs {
                assert_eq!(
                    Some(sha.as_str().unwrap()),
                    hashes.get(file).map(|s| s.as_str())
                );
                let path = format!("{}/{file}", super::PROTOCOL_DIR);
                assert!(
                    [pm.calib, pm.eval, pm.eval_calib_photos].contains(&path.as_str()),
                    "{}: {path} is not one of the model's files",
                    pm.ort
                );
            }
        }
    }
}
