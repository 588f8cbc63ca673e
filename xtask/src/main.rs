//! `cargo xtask <task>`: project chores kept out of the normal build.

use anyhow::bail;

mod accuracy;
mod bench_float;
mod bench_int;
mod bench_quant;
mod budget;
mod conformance;
mod data;
mod docs;
mod fuzz;
mod gen_proto;
mod mcu;
mod qat_table;
mod report_shot;
mod zoo;

const USAGE: &str = "usage: cargo xtask <task> [args]

tasks:
  data [--help]           full-size NPY data sets under data/full/ from the installed packages
  bench-float [--help]    float interpreter vs onnxruntime fp32, single thread
  bench-quant [--help]    time to quantize MobileNetV2 on 256 calibration images
  bench-int [--help]      integer inference speed: lutq-jit vs golden interpreter vs generated
                          C vs onnxruntime fp32/int8 vs tract fp32, single thread
  accuracy [--help]       every quantization mode on the reference models and data
                          (docs/results.md), with onnxruntime int8 as reference
  budget [--help]         --flash-budget on MobileNetV2 (disjoint photos) and the Fashion-MNIST
                          nets against all-lut4 and all-int8 (docs/results.md)
  mcu [--help]            the C backend on every bundled model: flash, arena, host
                          (callgrind) and Cortex-M4 (QEMU) instructions, bit-exact checks
  report-shot [--help]    the README's `lutq report` page rendered to PNG by headless
                          Chromium (docs/report.png), checked not to be blank
  qat-table [--help]      fp32, PTQ and the committed QAT models of the Fashion-MNIST nets, and
                          the recorded QAT training runs (docs/quantization.md)
  zoo [--help]            every model of models/zoo in every integer mode: agreement and
                          SQNR vs fp32, C and JIT bit-exact (docs/results.md)
  fuzz TARGET|all|smoke --seconds N [--sanitizer address|none]
                          coverage-guided fuzzing (cargo-fuzz, nightly) of ONNX import, the
                          whole pipeline on generated graphs, the backends (differential)
                          and the NPY reader; smoke: the parsers only, CI (docs/fuzzing.md)
  gen-proto [--check]     regenerate crates/onnx/src/generated/onnx.rs from onnx.proto
  conformance [--data DIR] | --vendor [--from ONNX_PACKAGE_DIR]
                          run the ONNX backend tests (per-op table, docs/conformance.md),
                          or vendor them from the installed onnx wheel
";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(());
    };
    match task.as_str() {
        "gen-proto" => gen_proto::run(rest),
        "conformance" => conformance::run(rest),
        "data" => data::run(rest),
        "bench-float" => bench_float::run(rest),
        "accuracy" => accuracy::run(rest),
        "bench-quant" => bench_quant::run(rest),
        "mcu" => mcu::run(rest),
        "budget" => budget::run(rest),
        "bench-int" => bench_int::run(rest),
        "zoo" => zoo::run(rest),
        "qat-table" => qat_table::run(rest),
        "report-shot" => report_shot::run(rest),
        "fuzz" => fuzz::run(rest),
        _ => bail!("unknown task '{task}'\n\n{USAGE}"),
    }
}

/// The value of a `--modes m1,m2,…` argument.
fn parse_modes(list: Option<&String>) -> anyhow::Result<Vec<lutq_quant::Mode>> {
    list.ok_or_else(|| anyhow::anyhow!("--modes needs a comma-separated list"))?
        .split(',')
        .map(|m| m.parse().map_err(anyhow::Error::msg))
        .collect()
}
