//! `lutq compile`: the whole pipeline down to code for a target.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::ModelArgs;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Standalone C99 for microcontrollers: NAME.h, NAME.c, NAME_weights.c.
    C,
}

#[derive(Args)]
pub struct CompileArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// What to generate.
    #[arg(long, value_enum, default_value = "c")]
    target: Target,
    /// Output directory (created if missing).
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    /// Names the files and prefixes every symbol (default: the model file's name).
    #[arg(long, value_name = "NAME")]
    prefix: Option<String>,
    /// Also write main.c and a Makefile: a program that reads raw quantized inputs from
    /// a file or standard input and writes raw outputs (`make && ./NAME in.bin out.bin`).
    #[arg(long)]
    harness: bool,
    /// Also generate NAME_quantize_input0 / NAME_dequantize_output0: float <-> integer
    /// at the boundary (the only floating point in the generated code).
    #[arg(long)]
    float_io: bool,
    /// Weight quantization mode: int8-pc, int4-pc, int8-pot-channel, int4-pot-layer,
    /// int4-pot-channel, lut4-pot-layer, lut4-pot-channel (the default). A QDQ model
    /// with power-of-two scales implies its mode (printed): then the default is that mode
    /// and a contradicting --mode is refused.
    #[arg(long)]
    mode: Option<lutq_quant::Mode>,
    #[command(flatten)]
    quant: crate::pipeline::QuantArgs,
    #[command(flatten)]
    cle: crate::CleArgs,
    /// Bytes the kernels' scratch (im2col columns, 4-bit decode tables, padded planes)
    /// may add to the activations' arena. Default: a tenth of the activations' lower
    /// bound. A smaller limit gives a smaller arena and slower kernels: a convolution
    /// whose scratch does not fit runs fewer pixels per block, then the plain kernels
    /// (0 keeps every kernel within the gaps of the activations' plan).
    #[arg(long, value_name = "BYTES")]
    scratch_limit: Option<usize>,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    json: bool,
}

/// The default prefix: the model file's stem as a C identifier.
pub fn default_prefix(model: &std::path::Path) -> String {
    lutq_backend_c::c_identifier(
        &model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )
}

pub fn compile(args: &CompileArgs) -> anyhow::Result<()> {
    let Target::C = args.target;
    if args.mode == Some(lutq_quant::Mode::Fp32) {
        anyhow::bail!(
            "--mode fp32 has no integer program to compile; pick an integer mode, e.g. \
             --mode lut4-pot-channel"
        );
    }
    let graph = args.model.import()?;
    let mut quant = args.quant.clone();
    let mode = crate::pipeline::resolve_mode(&args.model, &graph, args.mode, &mut quant)?;
    let compiled = crate::pipeline::compile(&graph, args.cle, mode, &quant, false)?;
    crate::pipeline::print_warnings(&compiled.report.warnings, &mut Default::default());
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| default_prefix(&args.model.model));
    let mut options = lutq_backend_c::EmitOptions::new(prefix);
    options.harness = args.harness;
    options.float_io = args.float_io;
    options.scratch_limit = args.scratch_limit;
    options.description = format!(
        "Mode {}, {}, CLE {}.",
        mode,
        crate::pipeline::calibration_text(compiled.report.calibration_samples),
        if compiled.cle_used { "on" } else { "off" }
    );
    let sources = lutq_backend_c::emit(&compiled.int_graph, &options)?;
    sources
        .write_to(&args.output)
        .with_context(|| format!("cannot write the C sources to {}", args.output.display()))?;
    let s = &sources.summary;
    if args.json {
        // The C summary, and with --flash-budget the plan beside it.
        #[derive(serde::Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            summary: &'a lutq_backend_c::CSummary,
            #[serde(skip_serializing_if = "Option::is_none")]
            flash_budget: Option<&'a lutq_quant::budget::BudgetReport>,
        }
        let json = Json {
            summary: s,
            flash_budget: compiled.report.flash_budget.as_ref(),
        };
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let names: Vec<&str> = sources.files.iter().map(|(n, _)| n.as_str()).collect();
    println!("wrote {} to {}", names.join(", "), args.output.display());
    println!(
        "constants {} B (int8 weights would take {} B: {:.2}x); {} MACs per inference",
        s.weight_bytes,
        s.int8_weight_bytes,
        s.weight_bytes as f64 / s.int8_weight_bytes.max(1) as f64,
        s.macs
    );
    println!(
        "arena {} B, kernel scratch up to {} B of it; activations' lower bound {} B ({:.3}x); no reuse {} B",
        s.arena_size,
        s.scratch_bytes,
        s.arena_lower_bound,
        s.arena_size as f64 / s.arena_lower_bound.max(1) as f64,
        s.arena_naive,
    );
    Ok(())
}
