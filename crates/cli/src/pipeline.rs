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

use crate::{CleArgs, CleMode};

/// `--lut-tables`: a number of tables per layer, `size` or `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LutTables {
    Count(usize),
    /// [`lutq_quant::default_lut_tables`]: 8, or 16 or 32 where their bytes stay a small
    /// share of the codes' (networks of a million weights and more).
    BySize,
    /// 1 or the `BySize` count, whichever quantizes better on the calibration samples.
    Auto,
}

impl std::fmt::Display for LutTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LutTables::Count(n) => write!(f, "{n}"),
            LutTables::BySize => f.write_str("size"),
            LutTables::Auto => f.write_str("auto"),
        }
    }
}

fn parse_lut_tables(s: &str) -> Result<LutTables, String> {
    match s {
        "auto" => return Ok(LutTables::Auto),
        "size" => return Ok(LutTables::BySize),
        _ => {}
    }
    match s.parse::<usize>() {
        Ok(n) if (1..=64).contains(&n) => Ok(LutTables::Count(n)),
        _ => Err(format!(
            "`{s}`: a number of tables per layer from 1 to 64, `size` or `auto`"
        )),
    }
}

/// How to quantize: shared by every command that needs the integer model.
#[derive(Args, Clone)]
pub struct QuantArgs {
    /// Calibration samples (NPY, first dimension = samples, same layout as the model
    /// input): activation exponents and the data-aware weight fit come from them. A QDQ
    /// model whose QuantizeLinear/DequantizeLinear pairs fix every exponent needs none.
    #[arg(long, value_name = "C.npy")]
    pub calib: Option<PathBuf>,
    /// Use at most this many calibration samples (the first ones).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub calib_limit: usize,
    /// Keep these Conv/Gemm layers at int8 weights (mixed precision), comma separated:
    /// node names, `first` (the first layer), `depthwise` (every depthwise conv). They
    /// hold few weights but lose most at 4 bits (measured in docs/results.md).
    #[arg(long, value_delimiter = ',', value_name = "NODES")]
    pub keep_8bit: Vec<String>,
    /// LUT modes: one 16-entry table per output channel instead of one per layer (16
    /// bytes of flash per channel; lower weight error).
    #[arg(long)]
    pub lut_per_channel: bool,
    /// LUT modes: up to N 16-entry tables per layer, each output channel reading one
    /// (table groups). Channels of a similar weight distribution share a table, fitted
    /// to them: most of --lut-per-channel's gain for a byte of flash per channel (the
    /// index) and 16 per table. 1 is one shared table per layer (the paper's format,
    /// least flash). `size` (the default): 32 tables per layer where all layers' tables
    /// take at most 2 % of the 4-bit codes' bytes, else 16 where they fit that, else 8 —
    /// networks of about a million weights and more take 32 (MobileNetV2,
    /// EfficientNet-Lite0), MCU-sized ones 8 (MLPerf Tiny, the Fashion nets), where more
    /// tables would eat the flash 4 bits saved and, on the Cortex-M4, not fit the
    /// scratch as pair tables (decoding in the loop costs about 0.28 instructions per
    /// MAC). Measured on photos the calibration never saw (mean of 4 calibration sets of
    /// 64): 8 tables gained 0.1–15 dB over one in 16 of 18 cases and lost up to 0.35 dB
    /// in two; 32 gain 0.5 dB on EfficientNet-Lite0 and 0.2 dB on MobileNetV2 over 8
    /// (docs/quantization.md "Table groups", "Stop 41"). `auto` quantizes with 1 and with
    /// `size`'s count and keeps the one with the higher output SQNR on the first 64
    /// calibration samples (twice the time)
    #[arg(long, default_value_t = LutTables::BySize, value_name = "N|size|auto", value_parser = parse_lut_tables)]
    pub lut_tables: LutTables,
    /// LUT modes: keep 4-bit weights even in layers where they take no fewer bytes than
    /// int8 weights. By default such layers (a stem of 27-weight rows, 3 × 3 depthwise
    /// convs of up to 170 channels at 32 tables or 46 at 8: codes, tables and table
    /// indices at least one byte per weight) get int8 weights, which fit closer for the
    /// same flash (EfficientNet-Lite0 on new photos, mean of 4 calibration sets: 12.00 →
    /// 12.09 dB); the quant report lists them
    #[arg(long)]
    pub no_int8_where_smaller: bool,
    /// Round weights to the nearest grid point and fit LUTs by plain k-means, ignoring
    /// the calibration data (for comparisons; loses accuracy at 4 bits).
    #[arg(long)]
    pub no_data_aware: bool,
    /// Do not correct biases for the mean shift quantization causes.
    #[arg(long)]
    pub no_bias_correction: bool,
    /// Fit each layer to the float weights on the quantized input instead of to the
    /// float model's output (for comparisons: by default each layer's weights also
    /// compensate the error of the layers upstream, which costs one more float pass over
    /// the calibration data and is worth several dB of SQNR on deep nets).
    #[arg(long)]
    pub no_float_target: bool,
    /// Fit the weights into this many bytes of constants (weights, tables, biases,
    /// shifts, counted exactly as the C backend stores them) with the least output
    /// error: each Conv/Gemm layer gets lut4 with one table, lut4 with the --lut-tables
    /// table groups, lut4 with one table per output channel, or int8 (per-channel
    /// power-of-two). Bytes
    /// (`120000`), with a suffix (`120k` = 120 × 1024, `1.5M` = 1.5 × 1024²), or a
    /// multiple of the all-int8 build's constants (`0.6x`). Layers are ranked by their
    /// measured sensitivity: the output error on calibration samples when only that
    /// layer is 4-bit and every other one int8. Costs one extra quantization (the
    /// all-int8 network, every layer fitted in all four formats) plus the measurement;
    /// the plan, per layer, goes to standard error (and into --json). The base --mode
    /// must be lut4-pot-channel or lut4-pot-layer; below the smallest plan (every layer
    /// lut4 with one table) is an error that names it, at or above all-int8 every layer
    /// is int8. A budget that holds the plain mode (every layer in its table groups)
    /// gives no layer fewer tables than the plain mode: the plan only upgrades from it.
    #[arg(long, value_name = "BYTES")]
    pub flash_budget: Option<crate::budget::FlashBudget>,
    /// With --flash-budget: calibration samples (the first ones) the sensitivity is
    /// measured on; the cost of the measurement grows with them.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub sensitivity_samples: usize,
    /// With --flash-budget: measure only lut4 and scale the per-channel-table format's
    /// sensitivity from it by the ratio of the two fits' errors (halves the measurement;
    /// a proxy that overstates per-channel tables' gain on MobileNetV2 by 3 dB in the
    /// median, up to 22 dB: docs/quantization.md).
    #[arg(long, hide = true)]
    pub sensitivity_proxy: bool,
    /// After each Conv/Gemm layer's fit, learn each weight's rounding between its fitted
    /// table level and the next one toward its target (AdaRound-style soft rounding),
    /// the LUT values and the biases by gradient steps on the calibration samples, so that the layer's output
    /// *after its ReLU/ReLU6 clamp* matches the float model's on the quantized network's
    /// activations. The last quarter of the samples is held out: a layer keeps its
    /// reconstruction only where that lowers the held-out error. Shift-only modes (not
    /// int8-pc / int4-pc). Cost: about 10x the default fit's time on MobileNetV2 with 64
    /// calibration images (lut4-pot-channel: 1,011 s more on top of 112 s, a loaded
    /// 2-core AMD EPYC), 2-4x on the Fashion-MNIST nets; the gain is small and not
    /// guaranteed for the whole network (docs/quantization.md, "Reconstruction").
    #[arg(long)]
    pub reconstruct: bool,
    /// With --reconstruct: Adam steps per layer (the cost grows with them).
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub reconstruct_iters: usize,
    /// Reconstruction by blocks (implies --reconstruct): chains of up to three convs, each
    /// the only reader of the one before (an inverted-residual block's expansion,
    /// depthwise and projection convs, with its residual Add), are trained as one unit
    /// against the float model's block output, so that each layer's rounding is judged
    /// after the activations and 8-bit roundings that follow it in the block (BRECQ).
    /// A block keeps its training only where that lowers the block output's error on
    /// the held-out samples; layers in no block are reconstructed one by one. Cost:
    /// EfficientNet-Lite0 with 64 calibration images, 989 s of block training on top of
    /// the fast fit's ~30 s (2 shared Xeon cores), MobileNetV2 336 s; the Fashion-MNIST
    /// nets 10-30 s. Gain: +0.2-0.4 dB output SQNR with 1,000 calibration images;
    /// with 64 photos MobileNetV2 +0.54 dB on new photos, but EfficientNet-Lite0
    /// overfits (-0.24 dB): docs/quantization.md, "Block reconstruction".
    #[arg(long)]
    pub reconstruct_blocks: bool,
}

pub fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {wide_msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// The first `samples` integer class labels of an NPY file (an error if it has fewer).
pub fn read_labels(path: &std::path::Path, samples: usize) -> anyhow::Result<Vec<i64>> {
    let labels = lutq_dataio::read_labels_file(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if labels.len() < samples {
        bail!(
            "{} has {} labels for {samples} samples",
            path.display(),
            labels.len()
        );
    }
    Ok(labels[..samples].to_vec())
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

/// The default `--modes` of `eval` for a model without trained quantization.
pub const DEFAULT_MODES: [Mode; 7] = [
    Mode::Fp32,
    Mode::Int8Pc,
    Mode::Int4Pc,
    Mode::Int8PotChannel,
    Mode::Int4PotChannel,
    Mode::Lut4PotLayer,
    Mode::Lut4PotChannel,
];

/// The mode of a command that quantizes once: `requested`, or lut4-pot-channel; for a
/// QDQ model, see [`resolve_modes`].
pub fn resolve_mode(
    model: &crate::ModelArgs,
    imported: &Graph,
    requested: Option<Mode>,
    quant: &mut QuantArgs,
) -> anyhow::Result<Mode> {
    let requested = requested.map(|m| vec![m]);
    let modes = resolve_modes(model, imported, requested.as_deref(), quant, false)?;
    Ok(*modes.last().unwrap_or(&Mode::Lut4PotChannel))
}

/// The modes to quantize `imported` in. Without trained quantization: `requested`, or
/// the defaults. A QDQ model whose pairs all have power-of-two scales and zero point 0
/// implies its mode (and `--lut-per-channel` / `--keep-8bit`, set in `quant`), which is
/// printed; a requested mode that cannot hold its trained weights is refused, naming the
/// first layer it cannot hold. Pairs with other scales are refused, all listed, unless
/// `--round-scales` snapped them: then what snapping costs is printed (the snapped
/// float model against the model as exported, on the calibration samples). `fp32_row`:
/// the derived list starts with fp32 (`eval`'s reference row).
pub fn resolve_modes(
    model: &crate::ModelArgs,
    imported: &Graph,
    requested: Option<&[Mode]>,
    quant: &mut QuantArgs,
    fp32_row: bool,
) -> anyhow::Result<Vec<Mode>> {
    let trained = lutq_quant::trained_quantization(imported);
    if model.round_scales {
        round_scales_cost(model, imported, quant)?;
    }
    if trained.pairs == 0 {
        return Ok(requested.map_or_else(|| DEFAULT_MODES.to_vec(), <[Mode]>::to_vec));
    }
    if !trained.off_grid.is_empty() {
        let layers: Vec<String> = trained
            .layers
            .iter()
            .filter(|l| !l.on_grid())
            .map(|l| format!("layer '{}' (weights '{}')", l.name, l.weights))
            .collect();
        bail!(
            "the QDQ model's quantization does not map onto shift-only integer code: {} of {} QuantizeLinear/DequantizeLinear pairs have a scale that is no power of two or a zero point other than 0:\n  {}{}\n\
             fix: export power-of-two scales (e.g. Brevitas restrict_scaling_type=POWER_OF_TWO), or pass --round-scales to snap the pairs' scales to the nearest power of two (weights keep their values; the cost is measured and printed)",
            trained.off_grid.len(),
            trained.pairs,
            trained.off_grid.join("\n  "),
            if layers.is_empty() {
                String::new()
            } else {
                format!(
                    "\n  and weights on no power-of-two grid (a DequantizeLinear with another scale, or float weights): {}",
                    layers.join(", ")
                )
            }
        );
    }
    let derived = trained.derived();
    let Some(derived) = derived else {
        eprintln!(
            "QDQ model: {} pairs with power-of-two scales; no layer's weights sit on a power-of-two grid, so they are fitted as for a float model",
            trained.pairs
        );
        return Ok(requested.map_or_else(|| DEFAULT_MODES.to_vec(), <[Mode]>::to_vec));
    };
    eprintln!(
        "QDQ model: {} pairs with power-of-two scales; its trained weights imply {derived}",
        trained.pairs
    );
    let Some(requested) = requested else {
        quant.lut_per_channel |= derived.lut_per_channel;
        quant.keep_8bit.extend(derived.keep_8bit.iter().cloned());
        trained.check(derived.mode, quant.lut_per_channel, &quant.keep_8bit)?;
        return Ok(if fp32_row {
            vec![Mode::Fp32, derived.mode]
        } else {
            vec![derived.mode]
        });
    };
    for &mode in requested.iter().filter(|&&m| m != Mode::Fp32) {
        trained.check(mode, quant.lut_per_channel, &quant.keep_8bit)?;
    }
    Ok(requested.to_vec())
}

/// With `--round-scales`: prints how far the snapped float model is from the model as
/// exported on the calibration samples (SQNR and top-1 agreement of their outputs).
fn round_scales_cost(
    model: &crate::ModelArgs,
    snapped: &Graph,
    quant: &QuantArgs,
) -> anyhow::Result<()> {
    let exported = model.import_as_exported()?;
    let before = lutq_quant::trained_quantization(&exported);
    if before.pairs == 0 {
        eprintln!(
            "--round-scales: the model has no QuantizeLinear/DequantizeLinear pair on run-time data"
        );
    }
    let Some(calib_path) = &quant.calib else {
        bail!("--round-scales measures its cost on the calibration samples: pass --calib C.npy");
    };
    let calib = read_samples(calib_path, quant.calib_limit)?;
    check_sample_shape(snapped, &calib, calib_path)?;
    let want = lutq_interp::run_batch(&exported, &calib, None)?;
    let got = lutq_interp::run_batch(snapped, &calib, None)?;
    let (want, got) = (
        want.as_f32().context("float output")?,
        got.as_f32().context("float output")?,
    );
    let per = want.len() / calib.shape()[0].max(1);
    let agree = want
        .chunks(per)
        .zip(got.chunks(per))
        .filter(|(a, b)| crate::eval::argmax(a) == crate::eval::argmax(b))
        .count();
    eprintln!(
        "--round-scales: {} of {} QuantizeLinear/DequantizeLinear pairs snapped to the nearest power of two (weights keep their dequantized values); on {} calibration samples the snapped float model reads {:.2} dB SQNR and {:.2} % top-1 agreement against the model as exported",
        before.off_grid.len(),
        before.pairs,
        calib.shape()[0],
        crate::eval::sqnr_db(want, got),
        100.0 * agree as f64 / calib.shape()[0].max(1) as f64
    );
    Ok(())
}

/// The optimized float graph (rewrites, then CLE if asked).
pub fn optimize(graph: &Graph, cle: CleArgs) -> anyhow::Result<Graph> {
    optimize_with(graph, cle, false)
}

/// [`optimize`], printing what the rewrites and CLE did on standard error.
pub fn optimize_verbose(graph: &Graph, cle: CleArgs) -> anyhow::Result<Graph> {
    optimize_with(graph, cle, true)
}

fn optimize_with(graph: &Graph, cle: CleArgs, verbose: bool) -> anyhow::Result<Graph> {
    let (graph, report) = lutq_opt::optimize(graph, &lutq_opt::OptOptions::default())?;
    if verbose {
        eprint!("{report}");
    }
    Ok(match cle.cle {
        CleMode::On => {
            let (graph, report) = lutq_opt::equalize(&graph, &cle.relu6.cle_options())?;
            if verbose {
                eprint!("{report}");
            }
            graph
        }
        CleMode::Off => graph,
        CleMode::Auto => bail!(
            "--cle auto decides by quantizing: it works with --stage quant, run --backend interp \
             and eval; use --cle on or off here"
        ),
    })
}

/// A model through the whole pipeline.
pub struct Compiled {
    /// The optimized float graph that was quantized (after CLE when it was used).
    pub float_graph: Graph,
    /// The quantizer's program (`--stage quant`).
    pub quant_graph: IntGraph,
    /// After the exact integer rewrites (`--stage lowered`): what backends run.
    pub int_graph: IntGraph,
    pub int_report: lutq_opt::IntOptReport,
    pub report: QuantReport,
    pub cle_used: bool,
}

/// Optimizes and quantizes `imported`. With `--cle auto`, quantizes with and without CLE
/// and keeps the variant whose integer output is closer to the float model's (SQNR) on
/// the first 64 calibration samples.
pub fn compile(
    imported: &Graph,
    cle: CleArgs,
    mode: Mode,
    args: &QuantArgs,
    verbose: bool,
) -> anyhow::Result<Compiled> {
    let build = |mode_cle: CleMode, args: &QuantArgs| -> anyhow::Result<Compiled> {
        let float_graph = optimize_with(
            imported,
            CleArgs {
                cle: mode_cle,
                ..cle
            },
            verbose,
        )?;
        let (quant_graph, report) = quantize(&float_graph, mode, args)?;
        let (int_graph, int_report) =
            lutq_opt::optimize_int(&quant_graph, &lutq_opt::OptOptions::default())?;
        Ok(Compiled {
            float_graph,
            quant_graph,
            int_graph,
            int_report,
            report,
            cle_used: mode_cle == CleMode::On,
        })
    };
    let cles = match cle.cle {
        CleMode::Auto => vec![CleMode::Off, CleMode::On],
        c => vec![c],
    };
    let lut_mode = mode.weights().is_some_and(|(f, _)| f.is_lut());
    let tables = match args.lut_tables {
        LutTables::Auto if lut_mode && !args.lut_per_channel => {
            vec![LutTables::Count(1), LutTables::BySize]
        }
        LutTables::Auto => vec![LutTables::Count(1)],
        t => vec![t],
    };
    let variants: Vec<(CleMode, LutTables)> = cles
        .iter()
        .flat_map(|&c| tables.iter().map(move |&t| (c, t)))
        .collect();
    let build_variant = |(c, t): (CleMode, LutTables)| {
        let args = QuantArgs {
            lut_tables: t,
            ..args.clone()
        };
        build(c, &args)
    };
    if let [only] = variants[..] {
        return build_variant(only);
    }
    // Several variants: the one whose integer output is closest to the float model's on
    // the first 64 calibration samples.
    let calib_path = args.calib.as_ref().expect("quantize checks --calib");
    let mut built = Vec::with_capacity(variants.len());
    for &v in &variants {
        built.push(build_variant(v)?);
    }
    let calib = read_samples(calib_path, args.calib_limit.min(64))?;
    let reference = lutq_interp::run_batch(&built[0].float_graph, &calib, None)?;
    let reference = reference.as_f32().context("float output")?;
    let mut scores = Vec::with_capacity(built.len());
    for c in &built {
        let out = lutq_interp::int::IntInterpreter::new(&c.int_graph)?.run_batch(&calib, None)?;
        scores.push(crate::eval::sqnr_db(
            reference,
            out[0].as_f32().context("output")?,
        ));
    }
    let best = (0..built.len())
        .max_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)))
        .expect("two variants or more");
    let describe = |i: usize| {
        let cle = if variants[i].0 == CleMode::On {
            "CLE on"
        } else {
            "CLE off"
        };
        if tables.len() > 1 {
            let t = built[i].report.lut_tables;
            format!("{cle}, {t} table{}", if t == 1 { "" } else { "s" })
        } else {
            cle.to_string()
        }
    };
    let listed: Vec<String> = (0..variants.len())
        .map(|i| format!("{:.2} dB with {}", scores[i], describe(i)))
        .collect();
    eprintln!(
        "auto ({mode}): calibration SQNR {} -> {}",
        listed.join(", "),
        describe(best)
    );
    Ok(built.swap_remove(best))
}

/// "N calibration samples", or where the exponents came from without any (a fully
/// paired QDQ model quantized without `--calib`).
pub fn calibration_text(samples: usize) -> String {
    match samples {
        0 => "no calibration data (every exponent from the model's QDQ pairs)".into(),
        1 => "1 calibration sample".into(),
        n => format!("{n} calibration samples"),
    }
}

/// The quantizer's report as a table: one line per linear layer. `target`: `float` when
/// the layer's weights were fitted to float targets (compensating the error upstream),
/// `w` when to the float weights.
pub fn report_text(r: &QuantReport) -> String {
    let mut s = format!(
        "quant: {} on {} in {:.1} s; weights {:.1} KB (fp32 {:.1} KB)\n",
        r.mode,
        calibration_text(r.calibration_samples),
        r.seconds,
        r.weight_bytes as f64 / 1024.0,
        r.float_weight_bytes as f64 / 1024.0
    );
    if r.layers.iter().any(|l| l.weights == "lut4/groups") {
        s.push_str(&format!(
            "  table groups: up to {} tables per layer (--lut-tables)\n",
            r.lut_tables
        ));
    }
    if !r.int8_where_smaller.is_empty() {
        s.push_str(&format!(
            "  int8 where 4 bits would take no fewer bytes: {} layer(s) (--no-int8-where-smaller keeps them 4-bit)\n",
            r.int8_where_smaller.len()
        ));
    }
    s.push_str("  layer                                    weights  f_x  f_w      f_y  out  target  rel.err  bias-corr  acc-headroom  const  capped\n");
    for l in &r.layers {
        s.push_str(&format!(
            "  {:<40} {:<7} {:>4} {:>3}..{:<3} {:>3}  {:<4} {:<6} {:>8.4} {:>8.2} st {:>9.3} {:>6} {:>7}\n",
            l.name,
            l.weights,
            l.input_exp,
            l.weight_exp_min,
            l.weight_exp_max,
            l.output_exp,
            l.output_type,
            match l.float_target_ridge {
                Some(r) => format!("λ={r}"),
                None => "w".into(),
            },
            l.relative_output_error,
            l.bias_correction_steps,
            l.accumulator_headroom,
            l.constant_channels,
            l.capped_exponents
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
    let options = quant_options(mode, args);
    let Some(calib_path) = &args.calib else {
        return quantize_trained_without_samples(graph, &options, args);
    };
    let calib = read_samples(calib_path, args.calib_limit)?;
    check_sample_shape(graph, &calib, calib_path)?;
    if let Some(budget) = args.flash_budget {
        return crate::budget::quantize_to_budget(
            graph,
            &calib,
            calib_path,
            options,
            budget,
            args.sensitivity_samples,
            !args.sensitivity_proxy,
        );
    }
    quantize_with(graph, &calib, calib_path, &options)
}

/// A QDQ model whose pairs fix every exponent needs no calibration data: it is lowered on
/// one all-zero sample (which then chooses nothing) and refused, naming the tensors, if
/// some exponent would have come from the samples after all.
fn quantize_trained_without_samples(
    graph: &Graph,
    options: &QuantOptions,
    args: &QuantArgs,
) -> anyhow::Result<(IntGraph, QuantReport)> {
    const NEEDS_CALIB: &str = "quantizing needs calibration data: pass --calib C.npy (a few hundred samples like the model's inputs)";
    if lutq_quant::trained_quantization(graph).pairs == 0 || args.flash_budget.is_some() {
        bail!("{NEEDS_CALIB}");
    }
    let [input] = graph.inputs() else {
        bail!("{NEEDS_CALIB}");
    };
    let dims = &graph.node(*input).ty.shape;
    if dims.is_empty() || dims[1..].contains(&0) {
        bail!("{NEEDS_CALIB}");
    }
    let mut shape = dims.clone();
    shape[0] = 1;
    let zero = Tensor::f32(shape.clone(), vec![0.0; shape.iter().product()])?;
    let (program, mut report) = quantize_with(
        graph,
        &zero,
        std::path::Path::new("(no --calib: one all-zero sample)"),
        options,
    )?;
    // The all-zero sample chose nothing: no calibration data went into the program.
    report.calibration_samples = 0;
    if !report.calibrated_without_pair.is_empty() {
        bail!(
            "this QDQ model has no QuantizeLinear/DequantizeLinear pair on {} tensor{} whose exponent lutq must then choose from calibration data: {}\n\
             fix: pass --calib C.npy (samples like the model's inputs), or export the model with a pair on every activation",
            report.calibrated_without_pair.len(),
            if report.calibrated_without_pair.len() == 1 {
                ""
            } else {
                "s"
            },
            report
                .calibrated_without_pair
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    eprintln!(
        "no --calib: every exponent and weight of this QDQ model comes from its QuantizeLinear/DequantizeLinear pairs"
    );
    Ok((program, report))
}

/// The quantizer's options from the command line.
fn quant_options(mode: Mode, args: &QuantArgs) -> QuantOptions {
    QuantOptions {
        data_aware: !args.no_data_aware,
        bias_correction: !args.no_bias_correction,
        keep_8bit: args.keep_8bit.clone(),
        lut_per_channel: args.lut_per_channel,
        int8_where_smaller: !args.no_int8_where_smaller,
        // `compile` resolves `auto` into counts before it quantizes.
        lut_tables: match args.lut_tables {
            LutTables::Count(n) => Some(n),
            LutTables::BySize => None,
            LutTables::Auto => Some(1),
        },
        float_target: !args.no_float_target,
        reconstruct: (args.reconstruct || args.reconstruct_blocks).then(|| {
            lutq_quant::reconstruct::ReconstructOptions {
                iterations: args.reconstruct_iters,
                blocks: args.reconstruct_blocks,
                ..Default::default()
            }
        }),
        ..QuantOptions::new(mode)
    }
}

/// Quantizes with `options`, with progress bars on standard error.
pub fn quantize_with(
    graph: &Graph,
    calib: &Tensor,
    calib_path: &std::path::Path,
    options: &QuantOptions,
) -> anyhow::Result<(IntGraph, QuantReport)> {
    let mode = options.mode;
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
    let result = lutq_quant::quantize(graph, calib, options, &progress);
    calib_bar.finish_and_clear();
    lower_bar.finish_and_clear();
    if let Ok((_, report)) = &result
        && !report.reconstruction.is_empty()
    {
        eprintln!("{}", reconstruction_summary(report));
    }
    match result {
        Err(lutq_quant::QuantError::NonFinite(v)) => {
            bail!("calibration data '{}': {v}", calib_path.display())
        }
        r => r.with_context(|| format!("cannot quantize in mode {mode}")),
    }
}

/// One line on what `--reconstruct` did: layers kept, the held-out error before and
/// after (summed relative errors), the time it took.
pub fn reconstruction_summary(r: &QuantReport) -> String {
    let rec = &r.reconstruction;
    let kept = rec.iter().filter(|l| l.kept).count();
    let fast: f64 = rec.iter().map(|l| l.fast_error).sum();
    let after: f64 = rec
        .iter()
        .map(|l| {
            if l.kept {
                l.reconstructed_error
            } else {
                l.fast_error
            }
        })
        .sum();
    let seconds: f64 = rec.iter().map(|l| l.seconds).sum();
    // A block's entry names its layers joined by arrows.
    let blocks = rec.iter().filter(|l| l.name.contains(" → ")).count();
    let units = if blocks > 0 {
        let singles = rec.len() - blocks;
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        format!(
            "units ({} + {})",
            plural(blocks, "block"),
            plural(singles, "layer")
        )
    } else {
        "layers".into()
    };
    format!(
        "reconstruct ({}): {kept} of {} {units} improved on held-out samples; mean relative output error {:.4} -> {:.4}; {seconds:.1} s of {:.1} s",
        r.mode,
        rec.len(),
        fast / rec.len() as f64,
        after / rec.len() as f64,
        r.seconds
    )
}

/// Prints the quantizer's warnings on standard error, each once per `seen` set (`eval`
/// quantizes once per mode and the calibration warnings repeat).
pub fn print_warnings<'a>(
    warnings: impl IntoIterator<Item = &'a String>,
    seen: &mut std::collections::HashSet<String>,
) {
    for w in warnings {
        if seen.insert(w.clone()) {
            eprintln!("warning: {w}");
        }
    }
}

/// Inputs an integer backend will see far outside the range the model input was
/// calibrated for: more than [`CLIP_WARN_FRACTION`] of the values clip in
/// `quantize_input`, the largest `|x|` is over twice the calibrated one, or values are
/// not finite (they quantize as 0 or the range's end). One message naming `path`, or none.
pub fn input_range_warnings(
    graph: &IntGraph,
    report: &QuantReport,
    data: &Tensor,
    path: &std::path::Path,
) -> Option<String> {
    let quantizer = graph
        .nodes
        .iter()
        .find(|n| matches!(n.op, lutq_ir::int::IntOp::QuantizeInput { input: 0 }))?;
    let calibrated = report.calibrated_inputs.first()?;
    let x = data.as_f32()?;
    if x.is_empty() {
        return None;
    }
    let (lo, hi) = quantizer.ty.elem.range();
    let scale = (quantizer.ty.exp as f64).exp2();
    let mut clipped = 0usize;
    let mut non_finite = 0usize;
    let mut largest = 0f32;
    for &v in x {
        if !v.is_finite() {
            non_finite += 1;
            continue;
        }
        largest = largest.max(v.abs());
        let q = (v as f64 * scale + 0.5).floor();
        if q < lo as f64 || q > hi as f64 {
            clipped += 1;
        }
    }
    let fraction = clipped as f64 / x.len() as f64;
    let cal_max = calibrated.min.abs().max(calibrated.max.abs());
    let far = cal_max > 0.0 && largest > 2.0 * cal_max;
    if fraction <= CLIP_WARN_FRACTION && !far && non_finite == 0 {
        return None;
    }
    let mut problems = vec![format!(
        "{:.2} % of its values clip when quantized to [{}, {}] (the calibration data spanned \
         [{}, {}])",
        100.0 * fraction,
        lo as f64 / scale,
        hi as f64 / scale,
        calibrated.min,
        calibrated.max
    )];
    if far {
        problems.push(format!(
            "its largest |x| is {largest}, {:.1}× the calibrated {cal_max}",
            largest / cal_max
        ));
    }
    if non_finite > 0 {
        problems.push(format!("{non_finite} values are NaN or infinite"));
    }
    Some(format!(
        "input data '{}': {}; outputs on these inputs are unreliable. Fix: calibrate on data \
         preprocessed like these inputs (same scaling and normalization)",
        path.display(),
        problems.join("; ")
    ))
}

/// Fraction of clipped input values above which [`input_range_warnings`] warns.
pub const CLIP_WARN_FRACTION: f64 = 0.02;

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

/// The generated C of `graph`, built for the host with the system compiler (`$CC`, else
/// `cc`; `-O2` and the strict warning flags) in a temporary directory.
pub fn build_c(
    graph: &IntGraph,
    model: &std::path::Path,
) -> anyhow::Result<lutq_backend_c::HostProgram> {
    let prefix = crate::compile::default_prefix(model);
    let compiler = lutq_backend_c::host::default_compiler();
    Ok(lutq_backend_c::HostProgram::build(
        graph,
        &prefix,
        &compiler,
        &["-O2"],
        None,
    )?)
}

/// Runs every sample of `input` through the generated C program and returns the
/// dequantized outputs (the first graph output), shaped `[samples, …]`.
pub fn run_c(
    program: &lutq_backend_c::HostProgram,
    graph: &lutq_ir::int::IntGraph,
    input: &Tensor,
) -> anyhow::Result<Tensor> {
    let x = input.as_f32().context("the input is not float32")?;
    let samples = input.shape()[0];
    let per = x.len() / samples.max(1);
    let rows: Vec<Vec<&[f32]>> = x.chunks(per.max(1)).map(|r| vec![r]).collect();
    let bytes = lutq_backend_c::quantize_samples(graph, &rows)?;
    let outputs = lutq_backend_c::decode_outputs(graph, &program.run(&bytes)?)?;
    let Some(first) = graph.outputs.first() else {
        bail!("the model has no outputs");
    };
    let ty = graph.ty(first.value);
    let step = ty.step();
    let values: Vec<f32> = outputs
        .iter()
        .flat_map(|o| o[0].iter().map(|&q| (q as f64 * step) as f32))
        .collect();
    let mut shape = vec![samples];
    shape.extend_from_slice(&ty.shape[1..]);
    Ok(Tensor::f32(shape, values)?)
}

/// Runs every sample of `input` through the JIT-compiled program (one thread: the model
/// owns one arena) and returns the dequantized first output, shaped `[samples, …]`.
pub fn run_jit(
    model: &mut lutq_backend_jit::JitModel,
    graph: &IntGraph,
    input: &Tensor,
    progress: Option<&dyn Fn(usize)>,
) -> anyhow::Result<Tensor> {
    let x = input.as_f32().context("the input is not float32")?;
    let samples = input.shape()[0];
    let per = x.len() / samples.max(1);
    let Some(first) = graph.outputs.first() else {
        bail!("the model has no outputs");
    };
    let ty = graph.ty(first.value);
    let mut values = Vec::with_capacity(samples * ty.num_elements());
    for (i, row) in x.chunks(per.max(1)).enumerate() {
        let out = model.run(&[row])?;
        values.extend(out[0].to_f32(ty.exp));
        if let Some(p) = progress {
            p(i + 1);
        }
    }
    let mut shape = vec![samples];
    shape.extend_from_slice(&ty.shape[1..]);
    Ok(Tensor::f32(shape, values)?)
}
