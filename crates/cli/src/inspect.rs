//! `lutq inspect`: what a model declares, what it costs, and what lutq cannot handle.

use std::process::ExitCode;

use clap::Args;
use lutq_ir::GraphStats;
use lutq_onnx::ModelSummary;
use serde::Serialize;

use crate::{ModelArgs, OnOff, Relu6Arg, Stage};

#[derive(Args)]
pub struct InspectArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print the report as JSON on standard output.
    #[arg(long)]
    json: bool,
    /// `import`: what the model declares and costs. `opt`: what the e-graph rewrites did
    /// (rules fired, ops left unfolded and why) and every Conv/Gemm's weight range
    /// imbalance, before and after CLE with `--cle on`.
    #[arg(long, value_enum, default_value = "import")]
    stage: Stage,
    /// Cross-layer equalization after the rewrites (`--stage opt` only).
    #[arg(long, value_enum, default_value = "off")]
    cle: OnOff,
    /// What CLE does with pairs whose first conv ends in ReLU6: `skip` (exact) or
    /// `replace` by ReLU (changes the function).
    #[arg(long, value_enum, default_value = "skip")]
    relu6: Relu6Arg,
}

#[derive(Serialize)]
struct Report {
    model: String,
    onnx: ModelSummary,
    /// Present when the model imports.
    ir: Option<IrReport>,
    /// Why the import failed, when it did.
    import_error: Option<String>,
}

#[derive(Serialize)]
struct IrReport {
    /// Graph inputs and outputs with the batch dimension bound.
    inputs: Vec<(String, String)>,
    outputs: Vec<(String, String)>,
    #[serde(flatten)]
    stats: GraphStats,
    /// Bytes of all constants stored as f32.
    parameter_bytes_f32: u64,
}

pub fn inspect(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    match args.stage {
        Stage::Opt => return inspect_opt(args),
        Stage::Quant | Stage::Lowered | Stage::Memory => anyhow::bail!(
            "inspect stops at --stage opt; the quantizer's per-layer report is printed by \
             `lutq dump MODEL --stage quant --calib C.npy` (standard error)"
        ),
        Stage::Import if args.cle == OnOff::On => {
            anyhow::bail!("--cle on needs --stage opt (CLE runs on the optimized graph)")
        }
        Stage::Import => {}
    }
    let bytes = args.model.bytes()?;
    let onnx = lutq_onnx::summarize_with(&bytes, &args.model.options()?).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a readable ONNX model: {e}",
            args.model.model.display()
        )
    })?;
    let (ir, import_error) = match args.model.import() {
        Ok(graph) => {
            let typed = |ids: Vec<(String, lutq_ir::NodeId)>| {
                ids.into_iter()
                    .map(|(name, id)| (name, graph.node(id).ty.to_string()))
                    .collect()
            };
            let inputs = typed(
                graph
                    .inputs()
                    .iter()
                    .map(|&id| (graph.node(id).name.clone(), id))
                    .collect(),
            );
            let outputs = typed(
                graph
                    .outputs()
                    .iter()
                    .map(|o| (o.name.clone(), o.node))
                    .collect(),
            );
            let stats = graph.stats();
            let parameter_bytes_f32 = 4 * stats.parameters;
            (
                Some(IrReport {
                    inputs,
                    outputs,
                    stats,
                    parameter_bytes_f32,
                }),
                None,
            )
        }
        Err(err) => (None, Some(format!("{err:#}"))),
    };
    let report = Report {
        model: args.model.model.display().to_string(),
        onnx,
        ir,
        import_error,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    let ok = report.ir.is_some();
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_report(r: &Report) {
    let s = &r.onnx;
    println!("model     {}", r.model);
    let producer = format!("{} {}", s.producer_name, s.producer_version);
    println!(
        "producer  {} (ONNX IR v{}, opset {})",
        if producer.trim().is_empty() {
            "unknown"
        } else {
            producer.trim()
        },
        s.ir_version,
        s.opset.map_or("none".to_string(), |v| v.to_string())
    );
    let declared = |v: &lutq_onnx::ValueSummary| match &v.dims {
        Some(dims) => {
            let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
            format!("{}[{}]", v.dtype, dims.join(","))
        }
        None => v.dtype.clone(),
    };
    println!("inputs");
    for (i, v) in s.inputs.iter().enumerate() {
        let bound = r.ir.as_ref().and_then(|ir| ir.inputs.get(i));
        match bound {
            Some((_, ty)) => println!("  {:<20} {:<28} bound to {ty}", v.name, declared(v)),
            None => println!("  {:<20} {}", v.name, declared(v)),
        }
    }
    println!("outputs");
    for (i, v) in s.outputs.iter().enumerate() {
        let bound = r.ir.as_ref().and_then(|ir| ir.outputs.get(i));
        match bound {
            Some((_, ty)) => println!("  {:<20} {:<28} → {ty}", v.name, declared(v)),
            None => println!("  {:<20} {}", v.name, declared(v)),
        }
    }
    println!(
        "ONNX ops ({} nodes)",
        s.op_histogram.values().sum::<usize>()
    );
    for (op, n) in &s.op_histogram {
        println!("  {op:<24} {n:>5}");
    }
    if let Some(ir) = &r.ir {
        println!(
            "IR ops after import ({} nodes)",
            ir.stats.op_histogram.values().sum::<usize>()
        );
        for (op, n) in &ir.stats.op_histogram {
            println!("  {op:<24} {n:>5}");
        }
        println!(
            "parameters {} ({:.2} MB as f32)",
            group_digits(ir.stats.parameters),
            ir.parameter_bytes_f32 as f64 / 1e6
        );
        println!("MACs       {} per inference", group_digits(ir.stats.macs));
    }
    if !s.required_constants.is_empty() {
        println!(
            "inputs that must be constants: {}",
            s.required_constants.join(", ")
        );
    }
    if s.diagnostics.is_empty() && r.import_error.is_none() {
        println!("unsupported: none");
    } else {
        println!("unsupported ({}):", s.diagnostics.len());
        for d in &s.diagnostics {
            println!("  {d}");
        }
        if let (Some(err), true) = (&r.import_error, s.diagnostics.is_empty()) {
            println!("  {err}");
        }
    }
}

/// `lutq inspect --stage opt`: the rewrite report, the CLE summary and the per-layer
/// weight range imbalance.
#[derive(Serialize)]
struct OptInspect {
    model: String,
    opt: OptSummary,
    /// Present with `--cle on`.
    cle: Option<CleSummary>,
    /// What "imbalance" means, in words.
    imbalance: &'static str,
    /// Every Conv/Gemm with constant weights, in the dump's order.
    layers: Vec<LayerRow>,
    /// Medians over the depthwise Convs and over all layers.
    depthwise: Medians,
    all: Medians,
}

const IMBALANCE: &str = "max/min over output channels of the per-channel weight range \
    max|w| (channels with a zero range left out)";

#[derive(Serialize)]
struct OptSummary {
    stop_reason: String,
    iterations: usize,
    egraph_nodes: usize,
    nodes_before: usize,
    nodes_after: usize,
    rules: std::collections::BTreeMap<String, usize>,
    unfolded_batch_norms: Vec<KeptRow>,
    kept_affine: Vec<KeptRow>,
}

#[derive(Serialize)]
struct KeptRow {
    name: String,
    op: String,
    reason: String,
}

#[derive(Serialize)]
struct CleSummary {
    relu6: &'static str,
    pairs: usize,
    sweeps: usize,
    converged: bool,
    skipped: Vec<String>,
}

#[derive(Serialize)]
struct LayerRow {
    name: String,
    op: &'static str,
    group: usize,
    channels: usize,
    depthwise: bool,
    /// After the rewrites, before CLE.
    imbalance_before: f32,
    /// After CLE (`--cle on` only).
    imbalance_after: Option<f32>,
    /// CLE equalized this layer as the first of a pair.
    equalized: bool,
}

#[derive(Serialize)]
struct Medians {
    layers: usize,
    median_before: Option<f32>,
    median_after: Option<f32>,
}

fn median(mut v: Vec<f32>) -> Option<f32> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn medians<'a>(rows: impl Iterator<Item = &'a LayerRow>) -> Medians {
    let rows: Vec<&LayerRow> = rows.collect();
    Medians {
        layers: rows.len(),
        median_before: median(rows.iter().map(|r| r.imbalance_before).collect()),
        median_after: rows
            .iter()
            .map(|r| r.imbalance_after)
            .collect::<Option<Vec<f32>>>()
            .and_then(median),
    }
}

fn inspect_opt(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let graph = args.model.import()?;
    let (opt, report) = lutq_opt::optimize(&graph, &lutq_opt::OptOptions::default())?;
    let before = lutq_opt::layer_imbalances(&opt);
    let (after, cle) = match args.cle {
        OnOff::Off => (None, None),
        OnOff::On => {
            let (eq, cle) = lutq_opt::equalize(&opt, &args.relu6.cle_options())?;
            (Some(lutq_opt::layer_imbalances(&eq)), Some(cle))
        }
    };
    let layers: Vec<LayerRow> = before
        .iter()
        .enumerate()
        .map(|(i, l)| LayerRow {
            name: l.name.clone(),
            op: l.op,
            group: l.group,
            channels: l.channels,
            depthwise: l.depthwise,
            imbalance_before: l.imbalance,
            // equalize keeps every node and its order: the lists line up.
            imbalance_after: after
                .as_ref()
                .and_then(|a| a.get(i))
                .filter(|a| a.name == l.name)
                .map(|a| a.imbalance),
            equalized: cle
                .as_ref()
                .is_some_and(|c| c.pairs.iter().any(|p| p.first == l.name)),
        })
        .collect();
    let kept = |k: &[lutq_opt::Kept]| {
        k.iter()
            .map(|k| KeptRow {
                name: k.name.clone(),
                op: k.op.clone(),
                reason: k.reason.clone(),
            })
            .collect()
    };
    let out = OptInspect {
        model: args.model.model.display().to_string(),
        opt: OptSummary {
            stop_reason: report.stop_reason.clone(),
            iterations: report.iterations,
            egraph_nodes: report.egraph_nodes,
            nodes_before: report.nodes_before,
            nodes_after: report.nodes_after,
            rules: report.rules.clone(),
            unfolded_batch_norms: kept(&report.unfolded_batch_norms),
            kept_affine: kept(&report.kept_affine),
        },
        cle: cle.as_ref().map(|c| CleSummary {
            relu6: match args.relu6 {
                Relu6Arg::Skip => "skip",
                Relu6Arg::Replace => "replace",
            },
            pairs: c.pairs.len(),
            sweeps: c.sweeps,
            converged: c.converged,
            skipped: c.skipped.clone(),
        }),
        imbalance: IMBALANCE,
        depthwise: medians(layers.iter().filter(|l| l.depthwise)),
        all: medians(layers.iter()),
        layers,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("model     {}", out.model);
        print!("{report}");
        if let Some(c) = &cle {
            let first = c.to_string();
            println!("{}", first.lines().next().unwrap_or_default());
            for s in &c.skipped {
                println!("  skipped {s}");
            }
        }
        print_layers(&out);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_layers(r: &OptInspect) {
    let cle = r.cle.is_some();
    println!("weight range imbalance per layer: {}", r.imbalance);
    if cle {
        println!(
            "  {:<48} {:<8} {:>5} {:>10} {:>10}",
            "layer", "op", "ch", "before", "after cle"
        );
    } else {
        println!(
            "  {:<48} {:<8} {:>5} {:>10}",
            "layer", "op", "ch", "imbalance"
        );
    }
    for l in &r.layers {
        let op = if l.depthwise { "conv dw" } else { l.op };
        let mark = if l.equalized { " *" } else { "" };
        match l.imbalance_after {
            Some(a) if cle => println!(
                "  {:<48} {:<8} {:>5} {:>10.2} {:>10.2}{mark}",
                l.name, op, l.channels, l.imbalance_before, a
            ),
            _ => println!(
                "  {:<48} {:<8} {:>5} {:>10.2}",
                l.name, op, l.channels, l.imbalance_before
            ),
        }
    }
    if cle {
        println!("  (* first layer of an equalized pair)");
    }
    let line = |what: &str, m: &Medians| {
        let f = |v: Option<f32>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        if cle {
            println!(
                "{what}: {} layers, median imbalance {} -> {} with cle",
                m.layers,
                f(m.median_before),
                f(m.median_after)
            );
        } else {
            println!(
                "{what}: {} layers, median imbalance {}",
                m.layers,
                f(m.median_before)
            );
        }
    };
    line("depthwise", &r.depthwise);
    line("all linear", &r.all);
}

/// 12345678 → "12,345,678".
fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(super::median(vec![]), None);
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(super::median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn group_digits_inserts_separators() {
        assert_eq!(super::group_digits(0), "0");
        assert_eq!(super::group_digits(999), "999");
        assert_eq!(super::group_digits(1000), "1,000");
        assert_eq!(super::group_digits(300_774_272), "300,774,272");
    }
}
