//! `lutq run`: inference over an NPY batch.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use lutq_dataio::NpyArray;
use lutq_ir::Tensor;
use serde::Serialize;

use crate::ModelArgs;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The f32 reference interpreter (the model as trained).
    Float,
    /// The golden integer interpreter: quantizes the model (--mode, --calib) and runs the
    /// integer program; outputs are dequantized to float.
    Interp,
    /// The generated C (`lutq compile --target c`), built with the system C compiler
    /// ($CC, else cc; -O2) in a temporary directory and run on the samples; outputs are
    /// dequantized to float. Bit-exact with `interp`.
    C,
    /// The integer program compiled to native code with Cranelift (x86-64, 128-bit
    /// vectors); outputs are dequantized to float. Bit-exact with `interp`.
    Jit,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Input samples: an NPY array whose first dimension counts the samples.
    #[arg(long, value_name = "X.npy")]
    input: PathBuf,
    /// Where to write the outputs (float32 NPY, first dimension = samples).
    #[arg(long, value_name = "Y.npy")]
    output: PathBuf,
    /// Which engine computes the outputs.
    #[arg(long, value_enum, default_value = "float")]
    backend: Backend,
    /// Weight quantization mode of the integer backends: fp32, int8-pc, int4-pc,
    /// int8-pot-channel, int4-pot-layer, int4-pot-channel, lut4-pot-layer,
    /// lut4-pot-channel (4-bit LUT weights, power-of-two scales per channel; the
    /// default). A QDQ model with power-of-two scales implies its mode (printed): then
    /// the default is that mode and a contradicting --mode is refused.
    #[arg(long)]
    mode: Option<lutq_quant::Mode>,
    #[command(flatten)]
    quant: crate::pipeline::QuantArgs,
    #[command(flatten)]
    cle: crate::CleArgs,
    /// Integer class labels (NPY, one per sample): prints the top-1 accuracy.
    #[arg(long, value_name = "LABELS.npy")]
    labels: Option<PathBuf>,
    /// Class names, one per line: prints the best classes of every sample.
    #[arg(long, value_name = "FILE")]
    classes: Option<PathBuf>,
    /// How many classes to print per sample with --classes.
    #[arg(long, default_value_t = 1, value_name = "K")]
    top: usize,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    json: bool,
    /// Report compile steps on standard error (the JIT's compile time).
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Serialize)]
struct RunSummary {
    samples: usize,
    output_shape: Vec<usize>,
    /// Inference only (quantizing for `--backend interp` not included).
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    top1_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    predictions: Vec<Vec<(String, f32)>>,
}

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let graph = args.model.import()?;
    let input = NpyArray::from_npy_file(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let samples = input.shape.first().copied().unwrap_or(0);
    if samples == 0 {
        bail!(
            "{} holds no samples (shape {:?}): the first dimension counts samples",
            args.input.display(),
            input.shape
        );
    }
    let input = Tensor::f32(input.shape, input.data)?;

    let bar = ProgressBar::new(samples as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} samples, {per_sec}, eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message("running");
    // Timed from the start of inference: quantizing (interp backend) is not included.
    let mut start = Instant::now();
    let progress = |done: usize| bar.set_position(done as u64);
    let output = match args.backend {
        Backend::Float => lutq_interp::run_batch(&graph, &input, Some(&progress))?,
        Backend::C => {
            if args.mode == Some(lutq_quant::Mode::Fp32) {
                bail!(
                    "--backend c runs integer code: pick an integer --mode, e.g. lut4-pot-channel"
                );
            }
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            let int_graph = compile_checked(&graph, args, &input)?;
            let program = crate::pipeline::build_c(&int_graph, &args.model.model)?;
            start = Instant::now();
            crate::pipeline::run_c(&program, &int_graph, &input)?
        }
        Backend::Jit => {
            if args.mode == Some(lutq_quant::Mode::Fp32) {
                bail!(
                    "--backend jit runs integer code: pick an integer --mode, e.g. lut4-pot-channel"
                );
            }
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            let int_graph = compile_checked(&graph, args, &input)?;
            let mut model = lutq_backend_jit::compile(&int_graph)?;
            if args.verbose {
                eprintln!(
                    "jit: compiled {} nodes in {:.1} ms ({} arena bytes)",
                    int_graph.nodes.len(),
                    model.compile_time().as_secs_f64() * 1e3,
                    model.arena_bytes()
                );
            }
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            start = Instant::now();
            crate::pipeline::run_jit(&mut model, &int_graph, &input, Some(&progress))?
        }
        Backend::Interp => {
            if args.mode == Some(lutq_quant::Mode::Fp32) {
                let optimized = crate::pipeline::optimize(&graph, args.cle)?;
                lutq_interp::run_batch(&optimized, &input, Some(&progress))?
            } else {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
                let int_graph = compile_checked(&graph, args, &input)?;
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                let interp = lutq_interp::int::IntInterpreter::new(&int_graph)?;
                start = Instant::now();
                interp.run_batch(&input, Some(&progress))?.swap_remove(0)
            }
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let output_shape = output.shape().to_vec();
    let values = output
        .as_f32()
        .context("the model's output is not float32")?
        .to_vec();
    NpyArray::new(output_shape.clone(), values.clone())?
        .write_npy_file(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;

    let per_sample = values.len() / samples;
    let rows: Vec<&[f32]> = values.chunks(per_sample.max(1)).collect();
    let top1_accuracy = match &args.labels {
        Some(path) => Some(accuracy(&rows, path)?),
        None => None,
    };
    let predictions = match &args.classes {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let names: Vec<&str> = text.lines().collect();
            if names.len() != per_sample {
                bail!(
                    "{} has {} class names but the model outputs {per_sample} values per sample",
                    path.display(),
                    names.len()
                );
            }
            rows.iter()
                .map(|row| {
                    top_k(row, args.top)
                        .into_iter()
                        .map(|i| (names[i].to_string(), row[i]))
                        .collect()
                })
                .collect()
        }
        None => Vec::new(),
    };

    let summary = RunSummary {
        samples,
        output_shape,
        seconds,
        top1_accuracy,
        predictions,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary, &args.output);
    }
    Ok(())
}

/// Quantizes the model for an integer backend, printing the quantizer's warnings and a
/// warning when `input` lies far outside the calibrated input range.
fn compile_checked(
    graph: &lutq_ir::Graph,
    args: &RunArgs,
    input: &Tensor,
) -> anyhow::Result<lutq_ir::int::IntGraph> {
    let mut quant = args.quant.clone();
    let mode = crate::pipeline::resolve_mode(&args.model, graph, args.mode, &mut quant)?;
    let compiled = crate::pipeline::compile(graph, args.cle, mode, &quant, false)?;
    let mut seen = std::collections::HashSet::new();
    crate::pipeline::print_warnings(&compiled.report.warnings, &mut seen);
    let range = crate::pipeline::input_range_warnings(
        &compiled.int_graph,
        &compiled.report,
        input,
        &args.input,
    );
    crate::pipeline::print_warnings(&range, &mut seen);
    Ok(compiled.int_graph)
}

fn print_summary(s: &RunSummary, output: &std::path::Path) {
    println!(
        "{} samples in {:.2} s ({:.2} ms/sample); outputs {:?} written to {}",
        s.samples,
        s.seconds,
        1e3 * s.seconds / s.samples as f64,
        s.output_shape,
        output.display()
    );
    if let Some(acc) = s.top1_accuracy {
        println!("top-1 accuracy: {:.2} %", 100.0 * acc);
    }
    for (i, preds) in s.predictions.iter().enumerate() {
        let text: Vec<String> = preds
            .iter()
            .map(|(name, score)| format!("{name} ({score:.2})"))
            .collect();
        println!("sample {i}: {}", text.join(", "));
    }
}

/// Indices of the `k` largest values, best first (ties: lower index first).
fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

fn accuracy(rows: &[&[f32]], labels_path: &std::path::Path) -> anyhow::Result<f64> {
    let labels = lutq_dataio::read_labels_file(labels_path)
        .with_context(|| format!("cannot read {}", labels_path.display()))?;
    if labels.len() != rows.len() {
        bail!(
            "{} has {} labels for {} samples",
            labels_path.display(),
            labels.len(),
            rows.len()
        );
    }
    let correct = rows
        .iter()
        .zip(&labels)
        .filter(|&(row, &label)| top_k(row, 1).first().map(|&i| i as i64) == Some(label))
        .count();
    Ok(correct as f64 / rows.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_best_first_and_breaks_ties_by_index() {
        assert_eq!(top_k(&[0.1, 0.9, 0.5, 0.9], 3), vec![1, 3, 2]);
        assert_eq!(top_k(&[1.0], 5), vec![0]);
    }
}
