//! `lutq report`: the page of `lutq_report`, from the numbers `eval --per-layer` and
//! `compile` compute (this file only runs them and hands the results over).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use lutq_interp::int::IntInterpreter;
use lutq_quant::Mode;

use crate::ModelArgs;
use crate::eval::{argmax, per_layer_observed, sqnr_db};
use crate::pipeline::{self, QuantArgs};

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Evaluation samples (NPY, first dimension = samples). Without it the calibration
    /// samples stand in, and the page says so (they flatter every mode).
    #[arg(long, value_name = "X.npy")]
    data: Option<PathBuf>,
    /// Integer class labels (NPY, one per sample of --data): adds top-1 accuracy.
    #[arg(long, value_name = "Y.npy", requires = "data")]
    labels: Option<PathBuf>,
    /// Use at most this many evaluation samples (the first ones).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Integer modes to compare, comma separated (fp32 is always the reference).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "int8-pot-channel,lut4-pot-layer,lut4-pot-channel"
    )]
    modes: Vec<Mode>,
    #[command(flatten)]
    quant: QuantArgs,
    #[command(flatten)]
    cle: crate::CleArgs,
    /// Write the HTML page here (one self-contained file: opens offline).
    #[arg(short, long, value_name = "report.html")]
    output: Option<PathBuf>,
    /// Print the report's data as JSON on standard output (with or without -o).
    #[arg(long)]
    json: bool,
}

pub fn report(args: &ReportArgs) -> anyhow::Result<()> {
    if args.output.is_none() && !args.json {
        bail!("nothing to write: pass -o report.html for the page, --json for the data, or both");
    }
    if args.modes.is_empty() {
        bail!("--modes lists no mode");
    }
    if args.modes.contains(&Mode::Fp32) {
        bail!(
            "--modes: fp32 is the reference every mode is measured against; list integer \
             modes only (e.g. int8-pot-channel,lut4-pot-channel)"
        );
    }
    let Some(calib_path) = &args.quant.calib else {
        bail!(
            "the report quantizes the model: pass --calib C.npy (a few hundred samples like \
             the model's inputs)"
        );
    };
    let imported = args.model.import()?;
    // The reference: the float model before CLE (ReLU6 -> ReLU changes the function).
    let graph = pipeline::optimize(
        &imported,
        crate::CleArgs {
            cle: crate::CleMode::Off,
            ..args.cle
        },
    )?;
    let limit = args.limit.unwrap_or(usize::MAX);
    let (data_path, data, which) = match &args.data {
        Some(p) => (p, pipeline::read_samples(p, limit)?, "evaluation"),
        None => (
            calib_path,
            pipeline::read_samples(calib_path, limit.min(args.quant.calib_limit))?,
            "calibration",
        ),
    };
    pipeline::check_sample_shape(&graph, &data, data_path)?;
    let samples = data.shape()[0];
    let labels = match &args.labels {
        Some(path) => Some(pipeline::read_labels(path, samples)?),
        None => None,
    };

    let bar = pipeline::bar(samples, "fp32");
    let reference =
        lutq_interp::run_batch(&graph, &data, Some(&|d: usize| bar.set_position(d as u64)))?;
    bar.finish_and_clear();
    let reference = reference.as_f32().context("float output")?.to_vec();
    let per = reference.len() / samples;
    let ref_top: Vec<usize> = reference.chunks(per).map(argmax).collect();

    let mut builder = lutq_report::ReportBuilder::new(
        args.model.model.display().to_string(),
        samples,
        which,
        format!("{:?}", args.cle.cle).to_lowercase(),
        samples.min(PER_LAYER_SAMPLES),
    );
    let mut seen = std::collections::HashSet::new();
    let prefix = crate::compile::default_prefix(&args.model.model);
    for (i, &mode) in args.modes.iter().enumerate() {
        eprintln!("[{}/{}] {mode}", i + 1, args.modes.len());
        let compiled = pipeline::compile(&imported, args.cle, mode, &args.quant, false)?;
        let (int_graph, report) = (&compiled.int_graph, &compiled.report);
        let range = pipeline::input_range_warnings(int_graph, report, &data, data_path);
        pipeline::print_warnings(report.warnings.iter().chain(&range), &mut seen);
        if let Some(w) = &range {
            builder.warn(w);
        }
        let bar = pipeline::bar(samples, mode.name());
        let out = IntInterpreter::new(int_graph)?
            .run_batch(&data, Some(&|d: usize| bar.set_position(d as u64)))?
            .swap_remove(0);
        bar.finish_and_clear();
        let outputs = out.as_f32().context("output")?;
        let top: Vec<usize> = outputs.chunks(per).map(argmax).collect();
        let agreement =
            top.iter().zip(&ref_top).filter(|(a, b)| a == b).count() as f64 / samples as f64;
        let accuracy = labels.as_ref().map(|l| {
            top.iter().zip(l).filter(|(p, y)| **p as i64 == **y).count() as f64 / samples as f64
        });
        // The linear layers' float outputs, counted per step of their integer type while
        // the per-layer pass runs the float model (no extra pass).
        let mut activations: Vec<(String, lutq_report::ActivationCounts)> =
            (0..int_graph.nodes.len())
                .filter_map(|i| {
                    lutq_report::ActivationCounts::for_node(int_graph, i)
                        .map(|c| (int_graph.nodes[i].name.clone(), c))
                })
                .collect();
        let index: std::collections::HashMap<String, usize> = activations
            .iter()
            .enumerate()
            .map(|(k, (n, _))| (n.clone(), k))
            .collect();
        let layers: Vec<(String, f64)> = per_layer_observed(
            &compiled.float_graph,
            int_graph,
            &data,
            &mut |name, values| {
                if let Some(&k) = index.get(name) {
                    activations[k].1.add(values);
                }
            },
        )?
        .into_iter()
        .map(|l| (l.name, l.sqnr_db))
        .collect();
        let float_weights = float_weights(&compiled.float_graph, int_graph);
        let options = lutq_backend_c::EmitOptions::new(prefix.clone());
        let c = lutq_backend_c::emit(int_graph, &options)
            .context("cannot generate the C code the memory numbers come from")?;
        let m4_flash = m4_flash(int_graph, &options)?;
        let arena = lutq_backend_c::arena_blocks(int_graph);
        builder.add_mode(lutq_report::ModeInput {
            mode: mode.name(),
            cle: compiled.cle_used,
            graph: int_graph,
            quant: report,
            c: &c.summary,
            top1_accuracy: accuracy,
            top1_agreement: agreement,
            sqnr_db: Some(sqnr_db(&reference, outputs)),
            layer_sqnr: &layers,
            arena: &arena,
            float_weights: &float_weights,
            activations: &activations,
            m4_flash,
        })?;
    }
    let report = builder.finish();
    if let Some(path) = &args.output {
        std::fs::write(path, report.to_html())
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!(
            "wrote {} ({} modes, {} linear layers)",
            path.display(),
            report.modes.len(),
            report.layers.len()
        );
    }
    if args.json {
        println!("{}", report.to_json());
    }
    Ok(())
}

/// The program's and its int8 build's Cortex-M4 flash (code + constants), or `None`
/// with a note when `arm-none-eabi-gcc` is not installed (the page then compares
/// constants only).
fn m4_flash(
    graph: &lutq_ir::int::IntGraph,
    options: &lutq_backend_c::EmitOptions,
) -> anyhow::Result<Option<lutq_report::M4Flash>> {
    use lutq_backend_c::mcu::cortex_m4_flash_of;
    let what = "cannot measure the Cortex-M4 flash";
    let Some(own) = cortex_m4_flash_of(graph, options).context(what)? else {
        static NOTED: std::sync::Once = std::sync::Once::new();
        NOTED.call_once(|| {
            eprintln!(
                "note: arm-none-eabi-gcc is not installed: the page compares constants, not \
                 the whole Cortex-M4 flash (apt-get install gcc-arm-none-eabi)"
            )
        });
        return Ok(None);
    };
    let has_tables = graph.nodes.iter().any(|n| {
        matches!(&n.op, lutq_ir::int::IntOp::Linear(l)
            if matches!(l.weights, lutq_ir::int::QWeights::Lut { .. }))
    });
    let int8 = if has_tables {
        cortex_m4_flash_of(&graph.with_int8_weights(), options)
            .context(what)?
            .unwrap_or(own)
    } else {
        own
    };
    Ok(Some(lutq_report::M4Flash {
        bytes: own.text + own.data,
        int8_build_bytes: int8.text + int8.data,
    }))
}

/// Samples `eval --per-layer` measures (`crate::eval::per_layer`'s first 32).
const PER_LAYER_SAMPLES: usize = 32;

/// The float weights of every linear layer of `int_graph`, as `float` (the graph this
/// mode quantized) has them: `(name, [O][K] rows)`.
fn float_weights(
    float: &lutq_ir::Graph,
    int_graph: &lutq_ir::int::IntGraph,
) -> Vec<(String, Vec<f32>)> {
    let by_name: std::collections::HashMap<&str, lutq_ir::NodeId> = float
        .node_ids()
        .map(|id| (float.node(id).name.as_str(), id))
        .collect();
    int_graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, lutq_ir::int::IntOp::Linear(_)))
        .filter_map(|n| {
            let id = by_name.get(n.name.as_str())?;
            // Not every linear node of the program has float weights of its own (a
            // layer the quantizer built): those get no histogram.
            let (rows, _) = lutq_quant::linear_weights(float, *id).ok()?;
            Some((n.name.clone(), rows))
        })
        .collect()
}
