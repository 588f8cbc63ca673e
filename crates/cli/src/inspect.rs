//! `lutq inspect`: what a model declares, what it costs, and what lutq cannot handle.

use std::process::ExitCode;

use clap::Args;
use lutq_ir::GraphStats;
use lutq_onnx::ModelSummary;
use serde::Serialize;

use crate::ModelArgs;

#[derive(Args)]
pub struct InspectArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print the report as JSON on standard output.
    #[arg(long)]
    json: bool,
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
    let bytes = args.model.bytes()?;
    let onnx = lutq_onnx::summarize(&bytes).map_err(|e| {
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
    fn group_digits_inserts_separators() {
        assert_eq!(super::group_digits(0), "0");
        assert_eq!(super::group_digits(999), "999");
        assert_eq!(super::group_digits(1000), "1,000");
        assert_eq!(super::group_digits(300_774_272), "300,774,272");
    }
}
