//! `lutq`: compile float CNNs (ONNX) to integer-only inference code.
//!
//! This binary is a thin layer over the library crates: it reads files, drives progress
//! bars and prints results; every numeric decision lives in a library.

mod budget;
mod compile;
mod eval;
mod inspect;
mod pipeline;
mod report;
mod run;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "lutq",
    version,
    about = "Compile float CNNs (ONNX) to integer-only inference: 4-bit LUT weights, 8-bit \
             activations, power-of-two scales",
    long_about = None,
    after_help = "Examples:
  lutq inspect models/mobilenet_v2.onnx
      what the model contains, its size and cost, and anything lutq cannot handle
  lutq dump models/fashion_resnet8.onnx --stage import
      the IR as text, one line per node
  lutq run models/mobilenet_v2.onnx --input data/photos/photos.npy --output logits.npy \\
      --classes models/imagenet_classes.txt
      float inference on a batch of images, with the top classes of each

Run `lutq <command> --help` for the options of each command."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarise a model: inputs and outputs, op histogram, parameters, MACs per
    /// inference, and every part lutq does not support.
    #[command(after_help = "Examples:
  lutq inspect models/mobilenet_v2.onnx
  lutq inspect model.onnx --json | jq .macs
  lutq inspect models/fashion_mobilenetv2.onnx --stage opt --cle on --relu6 replace
      what the rewrites did and each Conv/Gemm's weight range imbalance before and
      after cross-layer equalization

A model with unsupported parts is still summarised; the list names every unsupported op,
attribute and dynamic dimension with its node, and the command exits with status 1.")]
    Inspect(inspect::InspectArgs),

    /// Print the IR of a model as text: one line per node with its op, attributes, input
    /// and output types; constants as content hash and range.
    #[command(after_help = "Examples:
  lutq dump models/mobilenet_v2.onnx
  lutq dump models/mobilenet_v2.onnx --stage import -o mobilenet.ir
  lutq dump models/fashion_resnet8.onnx --stage opt --cle on
  lutq dump models/mobilenet_v2.onnx --stage opt --cle on --relu6 replace

The text is stable: the same model always prints the same bytes, so dumps can be diffed
and snapshot-tested.")]
    Dump(DumpArgs),

    /// Run a model on a batch of inputs from an NPY file and write the outputs as NPY.
    #[command(after_help = "Examples:
  lutq run models/fashion_resnet8.onnx --input data/fashion_mnist/test_x.npy \\
      --output logits.npy --labels data/fashion_mnist/test_y.npy
      prints the top-1 accuracy against the labels
  lutq run models/mobilenet_v2.onnx --input data/photos/photos.npy --output logits.npy \\
      --classes models/imagenet_classes.txt --top 3
      prints the three best classes of every image

The input is float32 NCHW; its first dimension is the number of samples, which run in
parallel on all cores. Integer inputs (u8, i64, …) are converted to float32 as they are.")]
    Run(run::RunArgs),

    /// Compare quantization modes against the float model on a data set: top-1 accuracy
    /// (with labels), top-1 agreement with fp32, output SQNR, optionally per layer.
    #[command(after_help = "Examples:
  lutq eval models/fashion_resnet8.onnx --data data/fashion_mnist/test_x.npy \\
      --labels data/fashion_mnist/test_y.npy --calib data/fashion_mnist/train_x.npy
      every mode on the bundled Fashion-MNIST slice
  lutq eval models/mobilenet_v2.onnx --data eval.npy --calib calib.npy \\
      --modes int8-pc,lut4-pot-channel --cle on --relu6 replace --per-layer
      where the error comes from, layer by layer

The fp32 row is the float model itself (after the exact rewrites). Quantization runs
once per mode; calibration data should look like the evaluation data but not be it.")]
    Eval(eval::EvalArgs),

    /// Compile a model to integer-only code: quantize it (--calib, --mode) and write
    /// standalone C99 for microcontrollers with a static memory plan.
    #[command(after_help = "Examples:
  lutq compile models/fashion_resnet8.onnx --calib data/fashion_mnist/train_x.npy -o out/
      out/fashion_resnet8.h, .c and _weights.c; the header #defines the arena size, the
      input and output shapes, types and exponents
  lutq compile models/fashion_resnet8.onnx --calib data/fashion_mnist/train_x.npy -o out/ \\
      --harness && make -C out
      plus main.c and a Makefile: `out/fashion_resnet8 in.bin out.bin` runs raw tensors

API: int NAME_run(const NAME_input0_t *input0, NAME_output0_t *output0, uint8_t *arena).
Inputs are quantized by the caller (real = q * 2^-NAME_INPUT0_EXP; --float-io generates
the conversion); the caller owns the arena. No malloc, no floating point, no recursion.
`lutq run --backend c` builds and runs the same code on the host.")]
    Compile(compile::CompileArgs),

    /// Write one self-contained HTML page on what quantization did: per mode top-1,
    /// agreement and SQNR, constants (flash) against an int8 build, arena against its
    /// lower bound, estimated Cortex-M4 instructions; per linear layer shapes, MACs,
    /// weight bytes, LUTs, exponents, shifts, SQNR and shares of flash and instructions;
    /// charts of the per-layer SQNR across modes, each layer's weights against its LUT
    /// levels and float output against its clamp range, and the arena over the schedule.
    #[command(after_help = "Examples:
  lutq report models/fashion_resnet8.onnx --calib data/fashion_mnist/train_x.npy \\
      --data data/fashion_mnist/test_x.npy --labels data/fashion_mnist/test_y.npy \\
      -o resnet8.html
      the default modes (int8-pot-channel, lut4-pot-layer, lut4-pot-channel) side by side
  lutq report models/mobilenet_v2.onnx --calib data/photos/photos.npy \\
      --modes int8-pc,lut4-pot-channel --keep-8bit first,depthwise -o mnv2.html
      without --data the calibration samples stand in (the page says so)
  lutq report model.onnx --calib calib.npy --data eval.npy --json | jq '.layers[].name'
      the same numbers for scripts

The page opens offline: CSS and the charts (SVG) are inline, nothing is loaded from
anywhere. Its numbers are those of `lutq eval --per-layer` (the golden interpreter;
per-layer SQNR and activation histograms on the first 32 samples) and `lutq compile`
(constants, arena and its buffers, MACs). The M4 instruction counts are an estimate:
MACs times the instructions per MAC measured in docs/results.md (`cargo xtask mcu`).")]
    Report(report::ReportArgs),
}

/// The model file and how to bind its dimensions; shared by every command.
#[derive(Args)]
pub(crate) struct ModelArgs {
    /// The ONNX model file.
    model: PathBuf,
    /// Batch size to bind a symbolic first input dimension to (unless --input-shape
    /// gives it).
    #[arg(long, default_value_t = 1, value_name = "N")]
    batch: usize,
    /// Every dimension of graph input NAME, e.g. `--input-shape x=1,3,48,192`: fixes
    /// symbolic sizes (dynamic H/W) so that shape computations fold at import. Repeat it
    /// for several inputs.
    #[arg(long = "input-shape", value_name = "NAME=D0,D1,…", value_parser = parse_input_shape)]
    input_shape: Vec<(String, Vec<usize>)>,
    /// QDQ models: snap every QuantizeLinear / DequantizeLinear scale to the nearest
    /// power of two (2^round(log2 s)), so that a model trained with float scales maps
    /// onto shift-only integer code. Commands that quantize print what it costs: the
    /// snapped float model against the model as exported, on the calibration samples.
    /// Without it, a QDQ model with other scales is refused with every such pair listed.
    #[arg(long)]
    round_scales: bool,
    /// End the model at these tensors (or nodes: their first output), comma-separated:
    /// they become its outputs, and nothing after them is imported. For post-processing
    /// that has no integer form, e.g. a detector's box decoding against anchors or NMS:
    /// compile the network up to its raw head outputs and decode on the host, e.g.
    /// `--outputs /model.22/Concat_output_0,/model.22/Concat_1_output_0`. A quantizer
    /// error about such nodes suggests the cut.
    #[arg(long, value_name = "NAME[,NAME…]", value_delimiter = ',')]
    outputs: Vec<String>,
}

/// `NAME=D0,D1,…`.
fn parse_input_shape(s: &str) -> Result<(String, Vec<usize>), String> {
    let (name, dims) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=D0,D1,… (e.g. x=1,3,48,192)"))?;
    if name.is_empty() {
        return Err(format!("'{s}' has no input name before '='"));
    }
    let dims = dims
        .split(',')
        .map(|d| {
            d.trim()
                .parse::<usize>()
                .map_err(|_| format!("'{d}' in '{s}' is not a dimension (a non-negative integer)"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name.to_string(), dims))
}

impl ModelArgs {
    fn bytes(&self) -> anyhow::Result<Vec<u8>> {
        std::fs::read(&self.model).with_context(|| format!("cannot read {}", self.model.display()))
    }

    /// The import options `--batch` and `--input-shape` give.
    fn import_options(&self) -> anyhow::Result<lutq_onnx::ImportOptions> {
        let mut input_shapes = std::collections::BTreeMap::new();
        for (name, dims) in &self.input_shape {
            if input_shapes.insert(name.clone(), dims.clone()).is_some() {
                anyhow::bail!("--input-shape gives '{name}' twice");
            }
        }
        Ok(lutq_onnx::ImportOptions {
            batch: self.batch,
            input_shapes,
            round_scales: self.round_scales,
            outputs: self.outputs.clone(),
            ..Default::default()
        })
    }

    /// Imports the model into the float IR (with `--round-scales`, the scales snapped).
    fn import(&self) -> anyhow::Result<lutq_ir::Graph> {
        let bytes = self.bytes()?;
        lutq_onnx::import(&bytes, &self.import_options()?)
            .with_context(|| format!("cannot import {}", self.model.display()))
    }

    /// Imports the model as exported: the scales never snapped.
    fn import_as_exported(&self) -> anyhow::Result<lutq_ir::Graph> {
        let bytes = self.bytes()?;
        let options = lutq_onnx::ImportOptions {
            round_scales: false,
            ..self.import_options()?
        };
        lutq_onnx::import(&bytes, &options)
            .with_context(|| format!("cannot import {}", self.model.display()))
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Stage {
    /// The graph as imported from ONNX, before any rewrite.
    Import,
    /// After the e-graph rewrites (BatchNorm and constant affine folding, activation
    /// fusion, cleanup); a summary of what fired goes to standard error.
    Opt,
    /// The integer program after quantization (needs --calib; --mode picks the weight
    /// format): every op with its exponents, shifts, clamps and weight tables; the
    /// quantizer's per-layer report goes to standard error.
    Quant,
    /// The integer program after the exact integer rewrites (requantize-shift fusion):
    /// what the backends compile. What fired goes to standard error.
    Lowered,
    /// The static memory plan of the lowered program (C backend): every activation's
    /// size, lifetime and offset in the caller's arena, and the arena size next to the
    /// lower bound (most bytes live at once) and the naive sum.
    Memory,
}

#[derive(Args)]
struct DumpArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Which pipeline stage's IR to print.
    #[arg(long, value_enum, default_value = "import")]
    stage: Stage,
    #[command(flatten)]
    cle: CleArgs,
    /// Weight quantization mode (`--stage quant`); default lut4-pot-channel, or for a
    /// QDQ model with power-of-two scales the mode its trained weights imply.
    #[arg(long)]
    mode: Option<lutq_quant::Mode>,
    #[command(flatten)]
    quant: pipeline::QuantArgs,
    /// Write the dump to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Cross-layer equalization options, shared by every command that optimizes.
#[derive(Args, Clone, Copy)]
struct CleArgs {
    /// Cross-layer equalization after the rewrites: rescales the channels of
    /// Conv -> (ReLU|ReLU6) -> Conv pairs so their weight ranges match; its report goes to
    /// standard error. `auto` (quantizing commands only) quantizes with and without it
    /// and keeps the one with the higher output SQNR on the calibration data.
    #[arg(long, value_enum, default_value = "off")]
    cle: CleMode,
    /// What CLE does with a pair whose first conv ends in ReLU6 (clip(0,6)): `skip` leaves
    /// it alone (exact); `replace` replaces ReLU6 by ReLU and equalizes it (changes the
    /// function, as in Nagel et al. 2019; MobileNetV2 needs it for CLE to do anything).
    #[arg(long, value_enum, default_value = "skip")]
    relu6: Relu6Arg,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum CleMode {
    On,
    Off,
    /// Whichever quantizes better on the calibration data.
    Auto,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Relu6Arg {
    /// Leave ReLU6 pairs unequalized.
    Skip,
    /// Replace ReLU6 by ReLU on equalized pairs.
    Replace,
}

impl Relu6Arg {
    fn cle_options(self) -> lutq_opt::CleOptions {
        lutq_opt::CleOptions {
            relu6: match self {
                Relu6Arg::Skip => lutq_opt::Relu6Policy::Skip,
                Relu6Arg::Replace => lutq_opt::Relu6Policy::ReplaceWithRelu,
            },
            ..Default::default()
        }
    }
}

fn dump(args: &DumpArgs) -> anyhow::Result<()> {
    if args.cle.cle != CleMode::Off && matches!(args.stage, Stage::Import) {
        anyhow::bail!(
            "--cle needs --stage opt, quant, lowered or memory (CLE runs on the optimized graph)"
        );
    }
    let text = match args.stage {
        Stage::Import => args.model.import()?.dump(),
        Stage::Opt => pipeline::optimize_verbose(&args.model.import()?, args.cle)?.dump(),
        Stage::Quant | Stage::Lowered | Stage::Memory => {
            let graph = args.model.import()?;
            let mut quant = args.quant.clone();
            let mode = pipeline::resolve_mode(&args.model, &graph, args.mode, &mut quant)?;
            let compiled = pipeline::compile(&graph, args.cle, mode, &quant, true)?;
            pipeline::print_warnings(&compiled.report.warnings, &mut Default::default());
            eprint!("{}", pipeline::report_text(&compiled.report));
            match args.stage {
                Stage::Quant => compiled.quant_graph.dump(),
                Stage::Lowered => {
                    eprint!("{}", compiled.int_report);
                    compiled.int_graph.dump()
                }
                _ => lutq_backend_c::plan_memory(&compiled.int_graph).dump(&compiled.int_graph),
            }
        }
    };
    write_or_print(args.output.as_deref(), &text)
}

fn write_or_print(path: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match path {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Inspect(args) => inspect::inspect(args),
        Command::Dump(args) => dump(args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Run(args) => run::run(args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Eval(args) => eval::eval(args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Compile(args) => compile::compile(args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Report(args) => report::report(args).map(|()| std::process::ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
