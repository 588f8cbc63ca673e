//! `lutq eval`: accuracy of quantization modes against the float model.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Args;
use lutq_interp::int::IntInterpreter;
use lutq_ir::Tensor;
use lutq_quant::Mode;
use serde::Serialize;

use crate::ModelArgs;
use crate::pipeline::{self, QuantArgs};

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Evaluation samples (NPY, first dimension = samples).
    #[arg(long, value_name = "X.npy")]
    data: PathBuf,
    /// Integer class labels (NPY, one per sample): adds top-1 accuracy.
    #[arg(long, value_name = "Y.npy")]
    labels: Option<PathBuf>,
    /// Use at most this many evaluation samples (the first ones).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Modes to compare, comma separated (see `lutq run --help` for the list).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fp32,int8-pc,int4-pc,int8-pot-channel,int4-pot-channel,lut4-pot-layer,lut4-pot-channel"
    )]
    modes: Vec<Mode>,
    #[command(flatten)]
    quant: QuantArgs,
    #[command(flatten)]
    cle: crate::CleArgs,
    /// Also print the SQNR of every layer's output (on the first 32 samples).
    #[arg(long)]
    per_layer: bool,
    /// Print the results as JSON on standard output.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct ModeResult {
    mode: String,
    /// Whether this row's model was equalized (with `--cle auto`, per mode).
    cle: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    top1_accuracy: Option<f64>,
    top1_agreement: f64,
    /// Output SQNR against fp32 in dB (`null` for fp32 itself).
    sqnr_db: Option<f64>,
    weight_bytes: usize,
    /// Quantizing (with `--cle auto`, both variants) plus evaluating.
    seconds: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    layers: Vec<LayerSqnr>,
}

#[derive(Serialize)]
struct LayerSqnr {
    name: String,
    op: String,
    sqnr_db: f64,
}

#[derive(Serialize)]
struct EvalSummary {
    model: String,
    samples: usize,
    calibration_samples: usize,
    /// `on`, `off` or `auto`.
    cle: String,
    results: Vec<ModeResult>,
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// `10 log10(Σ ref² / Σ (ref − x)²)`; infinite when identical.
pub fn sqnr_db(reference: &[f32], x: &[f32]) -> f64 {
    let signal: f64 = reference.iter().map(|&v| (v as f64).powi(2)).sum();
    let noise: f64 = reference
        .iter()
        .zip(x)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    10.0 * (signal / noise).log10()
}

pub fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    let imported = args.model.import()?;
    // The reference: the float model, before CLE (ReLU6 → ReLU changes the function).
    let graph = pipeline::optimize(
        &imported,
        crate::CleArgs {
            cle: crate::CleMode::Off,
            ..args.cle
        },
    )?;
    let data = pipeline::read_samples(&args.data, args.limit.unwrap_or(usize::MAX))?;
    pipeline::check_sample_shape(&graph, &data, &args.data)?;
    let samples = data.shape()[0];
    let labels = match &args.labels {
        Some(path) => {
            let labels = lutq_dataio::read_labels_file(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if labels.len() < samples {
                bail!(
                    "{} has {} labels for {samples} samples",
                    path.display(),
                    labels.len()
                );
            }
            Some(labels[..samples].to_vec())
        }
        None => None,
    };

    let reference = lutq_interp::run_batch(&graph, &data, None)?;
    let reference = reference.as_f32().context("float output")?.to_vec();
    let per = reference.len() / samples;
    let ref_top: Vec<usize> = reference.chunks(per).map(argmax).collect();
    let accuracy = |top: &[usize]| {
        labels.as_ref().map(|l| {
            top.iter().zip(l).filter(|(p, y)| **p as i64 == **y).count() as f64 / samples as f64
        })
    };

    let mut results = Vec::new();
    let mut calibration_samples = 0;
    for &mode in &args.modes {
        let start = Instant::now();
        let bar = pipeline::bar(samples, "evaluating");
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        let progress = |done: usize| bar.set_position(done as u64);
        let mut cle_used = false;
        let (outputs, weight_bytes, layers) = if mode == Mode::Fp32 {
            // With CLE on, the fp32 row shows what ReLU6 -> ReLU did to the float model.
            let float = if args.cle.cle == crate::CleMode::On {
                cle_used = true;
                pipeline::optimize(&imported, args.cle)?
            } else {
                graph.clone()
            };
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            let out = lutq_interp::run_batch(&float, &data, Some(&progress))?;
            let bytes = float.stats().parameters as usize * 4;
            (
                out.as_f32().context("float output")?.to_vec(),
                bytes,
                Vec::new(),
            )
        } else {
            let compiled = pipeline::compile(&imported, args.cle, mode, &args.quant, false)?;
            let (int_graph, report) = (&compiled.int_graph, &compiled.report);
            cle_used = compiled.cle_used;
            calibration_samples = report.calibration_samples;
            let interp = IntInterpreter::new(int_graph)?;
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            let out = interp.run_batch(&data, Some(&progress))?;
            let layers = if args.per_layer {
                per_layer(&compiled.float_graph, int_graph, &data)?
            } else {
                Vec::new()
            };
            (
                out[0].as_f32().context("output")?.to_vec(),
                report.weight_bytes,
                layers,
            )
        };
        bar.finish_and_clear();
        let seconds = start.elapsed().as_secs_f64();
        let top: Vec<usize> = outputs.chunks(per).map(argmax).collect();
        let agreement =
            top.iter().zip(&ref_top).filter(|(a, b)| a == b).count() as f64 / samples as f64;
        let sqnr = sqnr_db(&reference, &outputs);
        results.push(ModeResult {
            mode: mode.name().into(),
            cle: cle_used,
            top1_accuracy: accuracy(&top),
            top1_agreement: agreement,
            sqnr_db: sqnr.is_finite().then_some(sqnr),
            weight_bytes,
            seconds,
            layers,
        });
        if !args.json {
            eprintln!("{} done in {:.1} s", mode.name(), seconds);
        }
    }
    let summary = EvalSummary {
        model: args.model.model.display().to_string(),
        samples,
        calibration_samples,
        cle: format!("{:?}", args.cle.cle).to_lowercase(),
        results,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_table(&summary);
    }
    Ok(())
}

fn print_table(s: &EvalSummary) {
    println!(
        "{}: {} samples, {} calibration samples, CLE {}",
        s.model, s.samples, s.calibration_samples, s.cle
    );
    println!(
        "{:<18} {:>8} {:>10} {:>9} {:>11}",
        "mode", "top-1", "agree", "SQNR dB", "weights KB"
    );
    for r in &s.results {
        let top1 = r
            .top1_accuracy
            .map_or("-".to_string(), |a| format!("{:.2} %", 100.0 * a));
        let sqnr = r.sqnr_db.map_or("inf".to_string(), |v| format!("{v:.2}"));
        println!(
            "{:<18} {:>8} {:>8.2} % {:>9} {:>11.1}",
            r.mode,
            top1,
            100.0 * r.top1_agreement,
            sqnr,
            r.weight_bytes as f64 / 1024.0
        );
        for l in &r.layers {
            println!("    {:<40} {:<10} {:>7.2} dB", l.name, l.op, l.sqnr_db);
        }
    }
}

/// SQNR of every integer value against the float tensor of the node with the same name,
/// over the first 32 samples.
fn per_layer(
    graph: &lutq_ir::Graph,
    int_graph: &lutq_ir::int::IntGraph,
    data: &Tensor,
) -> anyhow::Result<Vec<LayerSqnr>> {
    let float = lutq_interp::Interpreter::new(graph)?;
    let int = IntInterpreter::new(int_graph)?;
    let by_name: HashMap<&str, lutq_ir::NodeId> = graph
        .node_ids()
        .map(|id| (graph.node(id).name.as_str(), id))
        .collect();
    let samples = data.shape()[0].min(32);
    let per = data.shape()[1..].iter().product::<usize>();
    let all = data.as_f32().context("float input")?;
    let mut signal: HashMap<usize, (f64, f64)> = HashMap::new();
    for s in 0..samples {
        let x = &all[s * per..(s + 1) * per];
        let mut float_values: HashMap<lutq_ir::NodeId, Vec<f32>> = HashMap::new();
        float.run_slices(
            &[x],
            Some(&mut |id, view: lutq_interp::TensorView<'_>| {
                float_values.insert(id, view.data.to_vec());
            }),
        )?;
        int.run_with_observer(&[x], &mut |v, d| {
            let node = &int_graph.nodes[v.index()];
            let float = by_name
                .get(node.name.as_str())
                .and_then(|id| float_values.get(id))
                .filter(|f| f.len() == d.len());
            if let Some(f) = float {
                let q = d.to_f32(node.ty.exp);
                let e = signal.entry(v.index()).or_default();
                for (a, b) in f.iter().zip(&q) {
                    e.0 += (*a as f64).powi(2);
                    e.1 += (*a as f64 - *b as f64).powi(2);
                }
            }
        })?;
    }
    let mut out: Vec<LayerSqnr> = signal
        .into_iter()
        .map(|(v, (s, n))| LayerSqnr {
            name: int_graph.nodes[v].name.clone(),
            op: int_graph.nodes[v].op.name().into(),
            sqnr_db: 10.0 * (s / n).log10(),
        })
        .collect();
    out.sort_by_key(|l| int_graph.nodes.iter().position(|n| n.name == l.name));
    Ok(out)
}
