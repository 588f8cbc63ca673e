//! `lutq eval`: accuracy of quantization modes against the float model.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
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
    /// Use at most this many evaluation samples (the first ones; of each set).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Further evaluation sets (NPY, same sample shape, no labels), each scored on its own
    /// with the same quantized models: e.g. crops of the calibration photos next to crops
    /// of other photos, to see how much of a result is fitted to the calibration set.
    #[arg(long = "also-data", value_name = "X.npy")]
    also_data: Vec<PathBuf>,
    /// Modes to compare, comma separated (see `lutq run --help` for the list).
    /// Default: fp32,int8-pc,int4-pc,int8-pot-channel,int4-pot-channel,lut4-pot-layer,
    /// lut4-pot-channel; for a QDQ model with power-of-two scales, fp32 and the mode its
    /// trained weights imply (a listed mode that contradicts them is refused).
    #[arg(long, value_delimiter = ',')]
    modes: Option<Vec<Mode>>,
    #[command(flatten)]
    quant: QuantArgs,
    #[command(flatten)]
    cle: crate::CleArgs,
    /// What runs the integer modes: the golden interpreter, the generated C built with
    /// the system compiler ($CC, else cc; -O2) — the whole job an MCU user ships, with its
    /// flash, constant and arena bytes in the table — or the Cranelift JIT.
    #[arg(long, value_enum, default_value = "interp")]
    backend: IntBackend,
    /// Also print the SQNR of every layer's output (on the first 32 samples).
    #[arg(long)]
    per_layer: bool,
    /// Print the results as JSON on standard output.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IntBackend {
    /// The golden integer interpreter.
    Interp,
    /// The generated C99 (`lutq compile --target c`), built and run on the host.
    C,
    /// The Cranelift JIT.
    Jit,
}

/// Memory of the generated C (`--backend c`).
#[derive(Serialize)]
struct CFootprint {
    /// Cortex-M4 flash of the model: code + constants (`arm-none-eabi-size`; absent
    /// when the cross compiler is not installed).
    #[serde(skip_serializing_if = "Option::is_none")]
    flash_bytes: Option<u64>,
    /// Constants (codes, tables, biases, shifts).
    constant_bytes: usize,
    /// The same constants with int8 weights (1 byte per weight).
    int8_constant_bytes: usize,
    arena_bytes: usize,
    arena_lower_bound: usize,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    c: Option<CFootprint>,
    /// The same model on each `--also-data` set, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    also: Vec<SetResult>,
    /// Constants (weights, tables, biases, shifts) as the C backend stores them; `null`
    /// for fp32.
    #[serde(skip_serializing_if = "Option::is_none")]
    constant_bytes: Option<usize>,
    /// With --flash-budget: the plan (format, bytes and sensitivity per layer).
    #[serde(skip_serializing_if = "Option::is_none")]
    flash_budget: Option<lutq_quant::budget::BudgetReport>,
}

/// Top-1 agreement and SQNR of one mode on one `--also-data` set.
#[derive(Serialize)]
struct SetResult {
    data: String,
    samples: usize,
    top1_agreement: f64,
    sqnr_db: Option<f64>,
}

#[derive(Serialize)]
pub(crate) struct LayerSqnr {
    pub(crate) name: String,
    op: String,
    pub(crate) sqnr_db: f64,
    /// Linear layers: output channels the quantizer treated as constants (weights
    /// zero, bias kept) and channels whose weight exponent it capped so their i32
    /// arithmetic fits (`lutq_quant::LayerReport`).
    #[serde(skip_serializing_if = "Option::is_none")]
    constant_channels: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capped_exponents: Option<usize>,
}

#[derive(Serialize)]
struct EvalSummary {
    model: String,
    samples: usize,
    calibration_samples: usize,
    /// `on`, `off` or `auto`.
    cle: String,
    /// `interp` or `c`.
    backend: String,
    /// The quantizer's and the input-range warnings, each once (also on standard error).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    results: Vec<ModeResult>,
}

pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

pub use lutq_interp::metrics::sqnr_db;

pub fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    let imported = args.model.import()?;
    let mut quant = args.quant.clone();
    let modes = pipeline::resolve_modes(
        &args.model,
        &imported,
        args.modes.as_deref(),
        &mut quant,
        true,
    )?;
    // The reference: the float model, before CLE (ReLU6 → ReLU changes the function).
    let graph = pipeline::optimize(
        &imported,
        crate::CleArgs {
            cle: crate::CleMode::Off,
            ..args.cle
        },
    )?;
    let limit = args.limit.unwrap_or(usize::MAX);
    let data = pipeline::read_samples(&args.data, limit)?;
    pipeline::check_sample_shape(&graph, &data, &args.data)?;
    let samples = data.shape()[0];
    // `--also-data` sets run after the main one in a single batch: `sets[k]` is the
    // file and the sample range of the k-th extra set.
    let mut sets = Vec::new();
    let data = if args.also_data.is_empty() {
        data
    } else {
        let mut shape = data.shape().to_vec();
        let mut all = data.as_f32().context("float input")?.to_vec();
        for path in &args.also_data {
            let extra = pipeline::read_samples(path, limit)?;
            pipeline::check_sample_shape(&graph, &extra, path)?;
            let n = extra.shape()[0];
            sets.push((path.display().to_string(), shape[0]..shape[0] + n));
            all.extend_from_slice(extra.as_f32().context("float input")?);
            shape[0] += n;
        }
        Tensor::f32(shape, all)?
    };
    let labels = match &args.labels {
        Some(path) => Some(pipeline::read_labels(path, samples)?),
        None => None,
    };

    let reference = lutq_interp::run_batch(&graph, &data, None)?;
    let reference = reference.as_f32().context("float output")?.to_vec();
    let per = reference.len() / data.shape()[0];
    let ref_top: Vec<usize> = reference.chunks(per).map(argmax).collect();
    let accuracy = |top: &[usize]| {
        labels.as_ref().map(|l| {
            top.iter().zip(l).filter(|(p, y)| **p as i64 == **y).count() as f64 / samples as f64
        })
    };
    // Agreement and SQNR of `outputs` (all sets) on the samples `range`.
    let score = |top: &[usize], outputs: &[f32], range: std::ops::Range<usize>| {
        let n = range.len();
        let agree = top[range.clone()]
            .iter()
            .zip(&ref_top[range.clone()])
            .filter(|(a, b)| a == b)
            .count() as f64
            / n as f64;
        let (lo, hi) = (range.start * per, range.end * per);
        let sqnr = sqnr_db(&reference[lo..hi], &outputs[lo..hi]);
        (agree, sqnr.is_finite().then_some(sqnr))
    };

    let mut results = Vec::new();
    let mut calibration_samples = 0;
    let mut seen = std::collections::HashSet::new();
    let mut warnings = Vec::new();
    for &mode in &modes {
        let start = Instant::now();
        let bar = pipeline::bar(data.shape()[0], "evaluating");
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        let progress = |done: usize| bar.set_position(done as u64);
        let mut cle_used = false;
        let mut footprint = None;
        let mut flash_budget = None;
        let mut constant_bytes = None;
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
            let compiled = pipeline::compile(&imported, args.cle, mode, &quant, false)?;
            let (int_graph, report) = (&compiled.int_graph, &compiled.report);
            flash_budget = report.flash_budget.clone();
            constant_bytes = Some(
                int_graph
                    .nodes
                    .iter()
                    .map(lutq_backend_c::constant_bytes)
                    .sum(),
            );
            cle_used = compiled.cle_used;
            calibration_samples = report.calibration_samples;
            let range = pipeline::input_range_warnings(int_graph, report, &data, &args.data);
            for w in report.warnings.iter().chain(&range) {
                if !warnings.contains(w) {
                    warnings.push(w.clone());
                }
            }
            pipeline::print_warnings(report.warnings.iter().chain(&range), &mut seen);
            let out = match args.backend {
                IntBackend::Interp => {
                    let interp = IntInterpreter::new(int_graph)?;
                    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    interp.run_batch(&data, Some(&progress))?.swap_remove(0)
                }
                IntBackend::C => {
                    let program = pipeline::build_c(int_graph, &args.model.model)?;
                    let s = &program.sources.summary;
                    let flash =
                        lutq_backend_c::mcu::cortex_m4_flash(program.dir(), &program.prefix)?;
                    footprint = Some(CFootprint {
                        flash_bytes: flash.map(|f| f.text + f.data),
                        constant_bytes: s.weight_bytes,
                        int8_constant_bytes: s.int8_weight_bytes,
                        arena_bytes: s.arena_size,
                        arena_lower_bound: s.arena_lower_bound,
                    });
                    if !args.json {
                        eprintln!(
                            "{}: running the generated C on {samples} samples",
                            mode.name()
                        );
                    }
                    pipeline::run_c(&program, int_graph, &data)?
                }
                IntBackend::Jit => {
                    let mut model = lutq_backend_jit::compile(int_graph)?;
                    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    pipeline::run_jit(&mut model, int_graph, &data, Some(&progress))?
                }
            };
            let layers = if args.per_layer {
                let mut layers = per_layer(&compiled.float_graph, int_graph, &data)?;
                for l in &mut layers {
                    if let Some(r) = report.layers.iter().find(|r| r.name == l.name) {
                        l.constant_channels = Some(r.constant_channels);
                        l.capped_exponents = Some(r.capped_exponents);
                    }
                }
                layers
            } else {
                Vec::new()
            };
            (
                out.as_f32().context("output")?.to_vec(),
                report.weight_bytes,
                layers,
            )
        };
        bar.finish_and_clear();
        let seconds = start.elapsed().as_secs_f64();
        let top: Vec<usize> = outputs.chunks(per).map(argmax).collect();
        let (agreement, sqnr) = score(&top, &outputs, 0..samples);
        let also = sets
            .iter()
            .map(|(path, range)| {
                let (top1_agreement, sqnr_db) = score(&top, &outputs, range.clone());
                SetResult {
                    data: path.clone(),
                    samples: range.len(),
                    top1_agreement,
                    sqnr_db,
                }
            })
            .collect();
        results.push(ModeResult {
            mode: mode.name().into(),
            cle: cle_used,
            top1_accuracy: accuracy(&top[..samples]),
            top1_agreement: agreement,
            sqnr_db: sqnr,
            weight_bytes,
            seconds,
            layers,
            c: footprint,
            also,
            constant_bytes,
            flash_budget,
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
        backend: match args.backend {
            IntBackend::Interp => "interp".into(),
            IntBackend::C => "c".into(),
            IntBackend::Jit => "jit".into(),
        },
        warnings,
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
        "{}: {} samples, {}, CLE {}, integer modes run by {}",
        s.model,
        s.samples,
        crate::pipeline::calibration_text(s.calibration_samples),
        s.cle,
        match s.backend.as_str() {
            "c" => "the generated C",
            "jit" => "the Cranelift JIT",
            _ => "the golden interpreter",
        }
    );
    let with_c = s.results.iter().any(|r| r.c.is_some());
    print!(
        "{:<18} {:>8} {:>10} {:>9} {:>11}",
        "mode", "top-1", "agree", "SQNR dB", "weights KB"
    );
    if with_c {
        print!(
            " {:>9} {:>9} {:>9} {:>16}",
            "flash B", "consts B", "int8 B", "arena B (bound)"
        );
    }
    println!();
    for r in &s.results {
        let top1 = r
            .top1_accuracy
            .map_or("-".to_string(), |a| format!("{:.2} %", 100.0 * a));
        let sqnr = r.sqnr_db.map_or("inf".to_string(), |v| format!("{v:.2}"));
        print!(
            "{:<18} {:>8} {:>8.2} % {:>9} {:>11.1}",
            r.mode,
            top1,
            100.0 * r.top1_agreement,
            sqnr,
            r.weight_bytes as f64 / 1024.0
        );
        if let Some(c) = &r.c {
            let flash = c.flash_bytes.map_or("-".to_string(), |f| f.to_string());
            print!(
                " {:>9} {:>9} {:>9} {:>8} ({})",
                flash, c.constant_bytes, c.int8_constant_bytes, c.arena_bytes, c.arena_lower_bound
            );
        }
        println!();
        for a in &r.also {
            let sqnr = a.sqnr_db.map_or("inf".to_string(), |v| format!("{v:.2}"));
            println!(
                "  on {} ({} samples): {:.2} % agree, SQNR {sqnr} dB",
                a.data,
                a.samples,
                100.0 * a.top1_agreement
            );
        }
        for l in &r.layers {
            let channels = match (l.constant_channels, l.capped_exponents) {
                (Some(c), Some(e)) if c > 0 || e > 0 => {
                    format!("  {c} constant channels, {e} capped exponents")
                }
                _ => String::new(),
            };
            println!(
                "    {:<40} {:<10} {:>7.2} dB{channels}",
                l.name, l.op, l.sqnr_db
            );
        }
    }
    if with_c {
        println!(
            "flash B: Cortex-M4 code + constants (arm-none-eabi-gcc -O2; '-' if not installed); \
             consts B: codes, tables, biases, shifts; int8 B: the same constants with 1 byte \
             per weight; arena B: the caller's scratch buffer, (bound) the most bytes live at once"
        );
    }
}

/// SQNR of every integer value against the float tensor of the node with the same name,
/// over the first 32 samples.
pub(crate) fn per_layer(
    graph: &lutq_ir::Graph,
    int_graph: &lutq_ir::int::IntGraph,
    data: &Tensor,
) -> anyhow::Result<Vec<LayerSqnr>> {
    per_layer_observed(graph, int_graph, data, &mut |_, _| {})
}

/// [`per_layer`], handing every float tensor (node name, values of one sample) to
/// `observe` as the float model computes it (`lutq report`'s activation histograms).
pub(crate) fn per_layer_observed(
    graph: &lutq_ir::Graph,
    int_graph: &lutq_ir::int::IntGraph,
    data: &Tensor,
    observe: &mut dyn FnMut(&str, &[f32]),
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
                observe(&graph.node(id).name, view.data);
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
            constant_channels: None,
            capped_exponents: None,
        })
        .collect();
    out.sort_by_key(|l| int_graph.nodes.iter().position(|n| n.name == l.name));
    Ok(out)
}
