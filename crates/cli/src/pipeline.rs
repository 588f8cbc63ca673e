//! The compile pipeline shared by `dump --stage quant`, `run --backend interp` and `eval`:
//! import → e-graph rewrites → optional CLE → calibration and quantization, with
//! progress bars.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lutq_dataio::NpyArray;
use lutq_ir::int::IntGraph;
use lutq_ir::{Graph, Tensor};
use lutq_quant::{Mode, Progress, QuantOptions, QuantReport};

use crate::{CleArgs, OnOff};

/// How to quantize: shared by every command that needs the integer model.
#[derive(Args, Clone)]
pub struct QuantArgs {
    /// Calibration samples (NPY, first dimension = samples, same layout as the model
    /// input): activation exponents and the data-aware weight fit come from them.
    #[arg(long, value_name = "C.npy")]
    pub calib: Option<PathBuf>,
    /// Use at most this many calibration samples (the first ones).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub calib_limit: usize,
    /// Keep these Conv/Gemm layers (node names, comma separated) at int8 weights.
    #[arg(long, value_delimiter = ',', value_name = "NODES")]
    pub keep_8bit: Vec<String>,
    /// Round weights to the nearest grid point and fit LUTs by plain k-means, ignoring
    /// the calibration data (for comparisons; loses accuracy at 4 bits).
    #[arg(long)]
    pub no_data_aware: bool,
    /// Do not correct biases for the mean shift quantization causes.
    #[arg(long)]
    pub no_bias_correction: bool,
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {wide_msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Reads an NPY batch as a float tensor (first dimension = samples), at most `limit`
/// samples.
pub fn read_samples(path: &std::path::Path, limit: usize) -> anyhow::Result<Tensor> {
    let mut arr =
        NpyArray::from_npy_file(path).with_context(|| format!("cannot read {}", path.display()))?;
    let samples = arr.shape.first().copied().unwrap_or(0);
    if samples == 0 {
        bail!(
            "{} holds no samples (shape {:?}): the first dimension counts samples",
            path.display(),
            arr.shape
        );
    }
    if samples > limit {
        let per = arr.data.len() / samples;
        arr.data.truncate(per * limit);
        arr.shape[0] = limit;
    }
    Ok(Tensor::f32(arr.shape, arr.data)?)
}

/// The optimized float graph (rewrites, then CLE if asked).
pub fn optimize(graph: &Graph, cle: CleArgs) -> anyhow::Result<Graph> {
    let (graph, _) = lutq_opt::optimize(graph, &lutq_opt::OptOptions::default())?;
    Ok(match cle.cle {
        OnOff::On => lutq_opt::equalize(&graph, &cle.relu6.cle_options())?.0,
        OnOff::Off => graph,
    })
}

/// [`optimize`], printing what the rewrites and CLE did on standard error.
pub fn optimize_verbose(graph: &Graph, cle: CleArgs) -> anyhow::Result<Graph> {
    let (graph, report) = lutq_opt::optimize(graph, &lutq_opt::OptOptions::default())?;
    eprint!("{report}");
    Ok(match cle.cle {
        OnOff::On => {
            let (graph, report) = lutq_opt::equalize(&graph, &cle.relu6.cle_options())?;
            eprint!("{report}");
            graph
        }
        OnOff::Off => graph,
    })
}

/// The quantizer's report as a table: one line per linear layer.
pub fn report_text(r: &QuantReport) -> String {
    let mut s = format!(
        "quant: {} on {} calibration samples in {:.1} s; weights {:.1} KB (fp32 {:.1} KB)\n",
        r.mode,
        r.calibration_samples,
        r.seconds,
        r.weight_bytes as f64 / 1024.0,
        r.float_weight_bytes as f64 / 1024.0
    );
    s.push_str("  layer                                    weights  f_x  f_w      f_y  out  rel.err  bias-corr  acc-headroom\n");
    for l in &r.layers {
        s.push_str(&format!(
            "  {:<40} {:<7} {:>4} {:>3}..{:<3} {:>3}  {:<4} {:>7.4} {:>8.2} st {:>9.3}\n",
            l.name,
            l.weights,
            l.input_exp,
            l.weight_exp_min,
            l.weight_exp_max,
            l.output_exp,
            l.output_type,
            l.relative_output_error,
            l.bias_correction_steps,
            l.accumulator_headroom
        ));
    }
    s
}

/// Quantizes the optimized `graph` in `mode`, with progress bars on standard error.
pub fn quantize(
    graph: &Graph,
    mode: Mode,
    args: &QuantArgs,
) -> anyhow::Result<(IntGraph, QuantReport)> {
    let Some(calib_path) = &args.calib else {
        bail!(
            "quantizing needs calibration data: pass --calib C.npy (a few hundred samples like the model's inputs)"
        );
    };
    let calib = read_samples(calib_path, args.calib_limit)?;
    check_sample_shape(graph, &calib, calib_path)?;
    let options = QuantOptions {
        data_aware: !args.no_data_aware,
        bias_correction: !args.no_bias_correction,
        keep_8bit: args.keep_8bit.clone(),
        ..QuantOptions::new(mode)
    };
    let calib_bar = bar(calib.shape()[0], "calibrating");
    let lower_bar = bar(0, mode.name());
    lower_bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    let progress = |p: Progress<'_>| match p {
        Progress::Calibrating { done, .. } => calib_bar.set_position(done as u64),
        Progress::Lowering { done, total, node } => {
            if done == 0 {
                calib_bar.finish_and_clear();
                lower_bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                lower_bar.set_length(total as u64);
            }
            lower_bar.set_position(done as u64);
            lower_bar.set_message(format!("{} {node}", mode.name()));
        }
    };
    let result = lutq_quant::quantize(graph, &calib, &options, &progress);
    calib_bar.finish_and_clear();
    lower_bar.finish_and_clear();
    result.with_context(|| format!("cannot quantize in mode {mode}"))
}

/// Refuses sample files whose samples do not have the model input's shape.
pub fn check_sample_shape(
    graph: &Graph,
    data: &Tensor,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let Some(&input) = graph.inputs().first() else {
        bail!("the model has no input");
    };
    let expected = &graph.node(input).ty.shape;
    let per_sample: usize = expected.iter().product();
    let got: usize = data.shape()[1..].iter().product();
    if got != per_sample {
        bail!(
            "{}: samples of shape {:?} do not match the model input {:?} (first dimension = samples)",
            path.display(),
            &data.shape()[1..],
            expected
        );
    }
    Ok(())
}
