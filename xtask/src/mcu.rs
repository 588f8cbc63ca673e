//! `cargo xtask mcu`: the C backend on every bundled model — flash, arena, host
//! instructions (callgrind) and Cortex-M4 instructions (QEMU), each run checked bit for
//! bit against the golden interpreter.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use lutq_backend_c::mcu::{Core, McuReport, profile_on_core, run_on_core, run_on_cortex_m4};
use lutq_backend_c::{HostProgram, LayerKind, decode_outputs, quantize_samples};
use lutq_interp::int::IntInterpreter;
use lutq_ir::Tensor;
use lutq_ir::int::IntGraph;
use lutq_quant::{Mode, QuantOptions};

const USAGE: &str =
    "cargo xtask mcu [--samples N] [--modes m1,m2,…] [--models a,b,…] [--skip-mobilenet]
                [--zoo a,b,…] [--lut-tables N] [--write FILE.md]

For each bundled model, each zoo model named by --zoo (default: the MLPerf Tiny IC, KWS
and VWW models of models/zoo/manifest.json) and each mode: quantizes it (Fashion nets:
256 committed training images; MobileNetV2: the 11 bundled photos; zoo models: their
committed calibration slice), emits C, and
  * builds it for the host (gcc -O2) and checks N samples bit-exact with the golden
    interpreter; counts instructions per inference with valgrind --tool=callgrind;
  * cross-compiles it for Cortex-M4 (arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -O2), runs
    it under qemu-system-arm -M mps2-an386 with -icount shift=0, checks N samples (1 for
    MobileNetV2 and zoo models) bit-exact and reads instructions per inference from
    SysTick (the generated code's DSP path: SMLAD);
  * profiles one Cortex-M4 sample per layer (the generated code built with
    -DLUTQ_PROFILE: SysTick read after every layer) and sums instructions and MACs by
    layer kind (3x3 conv, other conv, 1x1 pointwise, depthwise, dense, add, pools,
    other); every layer's figures go to stderr;
  * does the same for a Cortex-M3 (-mcpu=cortex-m3, no DSP extension: the portable
    path) under -M mps2-an385, 1 sample;
  * reports flash (model code + constants, from arm-none-eabi-size), the constants an
    int8 build would store, and the arena next to its lower bound.

Needs gcc, valgrind, gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm
(Debian packages).
--lut-tables N quantizes the LUT modes with up to N tables per layer instead of the default
(what a layer with more than 9 tables costs the Cortex-M4 kernel); refused with --write.";

/// The zoo models `cargo xtask mcu` measures unless `--zoo` says otherwise: the MLPerf
/// Tiny benchmarks issue #15 compares against published Cortex-M4 figures.
const DEFAULT_ZOO: &str = "mlperf_ic_resnet8,mlperf_kws_dscnn,mlperf_vww_mobilenetv1";

struct Row {
    model: String,
    mode: Mode,
    macs: u64,
    flash: u64,
    code: u64,
    constants: usize,
    int8_constants: usize,
    packed_weights: usize,
    weight_count: usize,
    arena: usize,
    lower_bound: usize,
    naive: usize,
    host_instructions: u64,
    m4_instructions: u64,
    m3_instructions: u64,
    /// Per layer kind (in [`LayerKind::ALL`] order): layers, MACs, profiled M4 instructions.
    kinds: Vec<KindSum>,
}

/// What the per-layer profile sums up for one kind of layer.
#[derive(Clone, Copy, Default)]
struct KindSum {
    layers: usize,
    macs: u64,
    instructions: u64,
}

/// CMSIS-NN's int8 kernels measured on the same emulator (issue #15's anchors), per layer
/// kind of the profile table, where there is one.
fn anchor(kind: LayerKind) -> &'static str {
    match kind {
        LayerKind::Conv3x3 => "1.76–2.33",
        LayerKind::Pointwise => "2.11",
        LayerKind::Depthwise => "7.9 (3×3)",
        LayerKind::Dense => "2.86",
        _ => "",
    }
}

fn expected(g: &IntGraph, rows: &[Vec<&[f32]>]) -> anyhow::Result<Vec<Vec<Vec<i32>>>> {
    let interp = IntInterpreter::new(g)?;
    rows.iter()
        .map(|r| Ok(interp.run(r)?.iter().map(|d| d.to_i32()).collect()))
        .collect()
}

/// Instructions of `prefix_run` per sample, from callgrind (its "Collected" total with
/// collection on inside `prefix_run` only).
fn callgrind(program: &HostProgram, prefix: &str, input: &[u8], n: usize) -> anyhow::Result<u64> {
    let dir = program.dir();
    std::fs::write(dir.join("callgrind_in.bin"), input)?;
    let out = Command::new("valgrind")
        .current_dir(dir)
        .args([
            "--tool=callgrind",
            &format!("--toggle-collect={prefix}_run"),
            "--callgrind-out-file=callgrind.out",
        ])
        .arg(program.exe())
        .args(["callgrind_in.bin", "callgrind_out.bin"])
        .output()
        .context("cannot run valgrind (apt-get install valgrind)")?;
    let text = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("valgrind failed:\n{text}");
    }
    let collected = text
        .lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .with_context(|| format!("no 'Collected' line in valgrind's output:\n{text}"))?;
    Ok(collected / n as u64)
}

#[allow(clippy::too_many_arguments)] // one measurement's whole setting
fn measure(
    model: &str,
    mode: Mode,
    lut_tables: Option<usize>,
    calib: &Tensor,
    data: &Tensor,
    m4_samples: usize,
    callgrind_samples: usize,
    zoo: Option<&lutq_ir::Graph>,
) -> anyhow::Result<Row> {
    eprintln!("{model} {mode}: quantizing");
    let options = QuantOptions {
        lut_tables,
        ..QuantOptions::new(mode)
    };
    let g = match zoo {
        Some(float) => {
            let g = lutq_quant::quantize(float, calib, &options, &|_| {})?.0;
            lutq_opt::optimize_int(&g, &Default::default())?.0
        }
        None => lutq_bundled::lowered_with(model, &options, calib)?,
    };
    let n = data.shape()[0];
    let rows: Vec<Vec<&[f32]>> = lutq_bundled::rows(data)
        .into_iter()
        .map(|r| vec![r])
        .collect();
    let want = expected(&g, &rows)?;
    let prefix = "model";

    eprintln!("{model} {mode}: host build, {n} samples");
    let program = HostProgram::build(&g, prefix, "gcc", &["-O2"], None)?;
    let bytes = quantize_samples(&g, &rows)?;
    let got = decode_outputs(&g, &program.run(&bytes)?)?;
    if got != want {
        bail!("{model} {mode}: the host build differs from the golden interpreter");
    }
    let per_sample = bytes.len() / n;
    let callgrind_samples = callgrind_samples.min(n);
    eprintln!("{model} {mode}: callgrind, {callgrind_samples} samples");
    let host_instructions = callgrind(
        &program,
        prefix,
        &bytes[..callgrind_samples * per_sample],
        callgrind_samples,
    )?;

    eprintln!("{model} {mode}: Cortex-M4 under QEMU, {m4_samples} samples");
    let dir = std::env::temp_dir().join(format!("lutq-xtask-mcu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let report: McuReport = run_on_cortex_m4(
        &g,
        prefix,
        &bytes[..m4_samples * per_sample],
        m4_samples,
        &dir,
        Duration::from_secs(590),
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    if report.outputs[..] != want[..m4_samples] {
        bail!("{model} {mode}: the Cortex-M4 run differs from the golden interpreter");
    }
    // The portable path (no DSP extension) on a Cortex-M3, one sample.
    eprintln!("{model} {mode}: Cortex-M3 under QEMU, 1 sample");
    let m3 = run_on_core(
        &g,
        prefix,
        &bytes[..per_sample],
        1,
        &dir,
        Duration::from_secs(590),
        Core::CortexM3,
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    if m3.outputs[..] != want[..1] {
        bail!("{model} {mode}: the Cortex-M3 run differs from the golden interpreter");
    }
    eprintln!("{model} {mode}: Cortex-M4 per-layer profile, 1 sample");
    let prof = profile_on_core(
        &g,
        prefix,
        &bytes[..per_sample],
        1,
        &dir,
        Duration::from_secs(590),
        Core::CortexM4,
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    if prof.outputs[..] != want[..1] {
        bail!("{model} {mode}: the profiled Cortex-M4 run differs from the golden interpreter");
    }
    let mut kinds = vec![KindSum::default(); LayerKind::ALL.len()];
    for (i, &instructions) in prof.per_node.iter().enumerate() {
        let (kind, macs) = LayerKind::of(&g, i);
        if instructions == 0 && macs == 0 {
            continue;
        }
        let index = LayerKind::ALL.iter().position(|&k| k == kind).unwrap_or(0);
        let k = &mut kinds[index];
        k.layers += 1;
        k.macs += macs;
        k.instructions += instructions;
        let node = &g.nodes[i];
        let per_mac = if macs > 0 {
            format!("{:.2}", instructions as f64 / macs as f64)
        } else {
            "-".into()
        };
        eprintln!(
            "  layer {i:3} {:14} {:24} {:?} MACs {macs:9} instr {instructions:9} per MAC {per_mac}",
            kind.name(),
            node.name.chars().take(24).collect::<String>(),
            node.ty.shape,
        );
    }
    let s = &report.summary;
    Ok(Row {
        model: model.to_string(),
        mode,
        macs: s.macs,
        flash: report.model.text + report.model.data,
        code: report.model.text - report.weights.text,
        constants: s.weight_bytes,
        int8_constants: s.int8_weight_bytes,
        packed_weights: s.packed_weight_bytes,
        weight_count: s.weight_count,
        arena: s.arena_size,
        lower_bound: s.arena_lower_bound,
        naive: s.arena_naive,
        host_instructions,
        m4_instructions: *report.instructions.iter().max().expect("samples"),
        m3_instructions: m3.instructions[0],
        kinds,
    })
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut write: Option<PathBuf> = None;
    let mut n = 20;
    let mut modes = vec![Mode::Lut4PotChannel, Mode::Int8PotChannel];
    let mut mobilenet = true;
    // `None`: the quantizer's default (`lutq_quant::default_lut_tables`).
    let mut lut_tables: Option<usize> = None;
    let mut only: Option<Vec<String>> = None;
    let mut zoo: Vec<String> = DEFAULT_ZOO.split(',').map(str::to_string).collect();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--write" => write = Some(it.next().context("--write needs a file")?.into()),
            "--samples" => n = it.next().context("--samples needs N")?.parse()?,
            "--skip-mobilenet" => mobilenet = false,
            "--models" => {
                only = Some(
                    it.next()
                        .context("--models needs a list")?
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            "--zoo" => {
                zoo = it
                    .next()
                    .context("--zoo needs a list")?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            "--modes" => modes = crate::parse_modes(it.next())?,
            "--lut-tables" => {
                lut_tables = Some(
                    it.next()
                        .and_then(|t| t.parse().ok())
                        .filter(|&t: &usize| t > 0)
                        .context("--lut-tables needs a positive count")?,
                )
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n\n{USAGE}"),
        }
    }
    if write.is_some() && lut_tables.is_some() {
        bail!("--lut-tables is for measurements; the table in the docs is the default's");
    }
    let fashion_calib = lutq_bundled::fashion_calib(256)?;
    let fashion_test = lutq_bundled::fashion_test(n)?;
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|m| m == name));
    let mut rows = Vec::new();
    for model in lutq_bundled::FASHION_MODELS {
        if !wanted(model) {
            continue;
        }
        for &mode in &modes {
            rows.push(measure(
                model,
                mode,
                lut_tables,
                &fashion_calib,
                &fashion_test,
                n,
                3,
                None,
            )?);
        }
    }
    if mobilenet && wanted("mobilenet_v2") {
        let photos = lutq_bundled::photos(11)?;
        for &mode in &modes {
            rows.push(measure(
                "mobilenet_v2",
                mode,
                lut_tables,
                &photos,
                &photos,
                1,
                1,
                None,
            )?);
        }
    }
    for name in zoo.iter().filter(|z| wanted(z)) {
        let (float, calib, eval) = zoo_model(name, n)?;
        for &mode in &modes {
            rows.push(measure(
                name,
                mode,
                lut_tables,
                &calib,
                &eval,
                1,
                1,
                Some(&float),
            )?);
        }
    }
    let body = table(&rows, n);
    print!("{body}");
    if let Some(path) = write {
        crate::docs::replace_section(
            Path::new(&path),
            "mcu",
            "C backend: flash, arena, instructions",
            &body,
        )?;
        eprintln!("wrote section 'mcu' of {}", path.display());
    }
    Ok(())
}

/// Zoo model `name` (models/zoo/manifest.json): the optimized float graph at the
/// manifest's static input shape, its committed calibration slice and the first `n`
/// samples of its committed evaluation slice.
fn zoo_model(name: &str, n: usize) -> anyhow::Result<(lutq_ir::Graph, Tensor, Tensor)> {
    let root = lutq_bundled::root();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("models/zoo/manifest.json"))
            .context("models/zoo/manifest.json")?,
    )?;
    let m = manifest["models"]
        .as_array()
        .context("manifest: models")?
        .iter()
        .find(|m| m["name"].as_str() == Some(name))
        .with_context(|| format!("no zoo model named {name}"))?;
    let field = |key: &str| -> anyhow::Result<&str> {
        m[key]
            .as_str()
            .with_context(|| format!("manifest: {name} has no {key}"))
    };
    let path = root.join(field("path")?);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut options = lutq_onnx::ImportOptions::default();
    if let Some(shape) = m["input_shape"].as_array() {
        let dims = shape.iter().filter_map(|d| d.as_u64()).map(|d| d as usize);
        options
            .input_shapes
            .insert(field("input")?.to_string(), dims.collect());
    }
    let float = lutq_opt::optimize(&lutq_onnx::import(&bytes, &options)?, &Default::default())?.0;
    let calib = lutq_bundled::samples(field("calib")?, 0, usize::MAX)?;
    let eval = lutq_bundled::samples(field("eval")?, 0, n)?;
    Ok((float, calib, eval))
}

fn table(rows: &[Row], n: usize) -> String {
    let mut s = format!(
        "Regenerate: `cargo xtask mcu --samples {n} --write docs/results.md` (needs gcc, valgrind,\n\
         gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm).\n\n\
         Every build is checked bit-exact against the golden interpreter: on the host on\n\
         the first {n} test images ({n} photos: all 11 for MobileNetV2), on the Cortex-M4 on the first {n}\n\
         (1 photo for MobileNetV2). Fashion nets calibrated on 256 committed training images,\n\
         MobileNetV2 on the 11 bundled photos.\n\n\
         * **flash** = the model's code + constants as `arm-none-eabi-size` counts them\n  \
         (`-mcpu=cortex-m4 -mthumb -O2`); **weights / int8** = the packed weights (codes +\n  \
         tables) over 1 byte per weight (what an int8 TFLite Micro build stores);\n  \
         **consts / int8** = all constants (biases and shifts included) over the same\n  \
         constants with int8 weights;\n\
         * **arena**: the caller's buffer (the quantized input stays in the caller's own\n  \
         buffer), next to the lower bound (most bytes live at one step);\n\
         * **host instr** from `valgrind --tool=callgrind` on `gcc -O2` (x86-64), inside\n  \
         `NAME_run` only; **M4 instr** from SysTick under QEMU `-icount shift=0` (1 tick =\n  \
         40 instructions): the DSP path (`SMLAD`); **M3 instr** the same on QEMU's\n  \
         `mps2-an385` Cortex-M3 (`-mcpu=cortex-m3`, no DSP extension): the portable path,\n  \
         checked bit-exact on 1 sample.\n\n\
         | model | mode | MACs | flash B | code B | weights B | weights / int8 | consts B | consts / int8 | arena B | lower bound B | arena / bound | naive B | host instr / inference | host instr / MAC | M4 instr / inference | M4 instr / MAC | M3 instr / MAC |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.3} | {} | {:.3} | {} | {} | {:.3} | {} | {} | {:.2} | {} | {:.2} | {:.2} |\n",
            r.model,
            r.mode,
            r.macs,
            r.flash,
            r.code,
            r.packed_weights,
            r.packed_weights as f64 / r.weight_count as f64,
            r.constants,
            r.constants as f64 / r.int8_constants as f64,
            r.arena,
            r.lower_bound,
            r.arena as f64 / r.lower_bound.max(1) as f64,
            r.naive,
            r.host_instructions,
            r.host_instructions as f64 / r.macs as f64,
            r.m4_instructions,
            r.m4_instructions as f64 / r.macs as f64,
            r.m3_instructions as f64 / r.macs as f64,
        ));
    }
    s.push_str(&profile_table(rows));
    s.push_str(
        "\nReference points measured the same way (issue #6): CMSIS-NN's int8 kernels run a\n\
         whole ResNet-8 in 2.20 M4 instructions per MAC, its 4-bit-weight kernels 3.5–4.1 on\n\
         3×3 convs and 15.6 on 3×3 depthwise; a naive C loop with 4-bit LUT decode 6.3–8.6.\n",
    );
    s
}

/// Instructions per MAC by layer kind, from the profiled Cortex-M4 runs.
fn profile_table(rows: &[Row]) -> String {
    let mut s = String::from(
        "\n### Cortex-M4 instructions by layer kind\n\n\
         One sample per model and mode, the generated code built with `-DLUTQ_PROFILE`:\n\
         `NAME_run` calls the firmware's `lutq_profile_mark(node)` after every layer, which\n\
         adds the SysTick ticks since the previous mark to that layer (about 50\n\
         instructions of the mark itself per layer). **share** = of the profiled\n\
         inference; **CMSIS-NN int8** = Arm's int8 kernels measured per layer kind on the\n\
         same emulator (issue #15's anchors).\n\n\
         | model | mode | kind | layers | MACs | M4 instr | M4 instr / MAC | share | CMSIS-NN int8 instr / MAC |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let total: u64 = r.kinds.iter().map(|k| k.instructions).sum();
        for (k, kind) in r.kinds.iter().zip(LayerKind::ALL) {
            let (kind, anchor) = (kind.name(), anchor(kind));
            if k.layers == 0 {
                continue;
            }
            let per_mac = if k.macs > 0 {
                format!("{:.2}", k.instructions as f64 / k.macs as f64)
            } else {
                "—".into()
            };
            s.push_str(&format!(
                "| {} | {} | {kind} | {} | {} | {} | {per_mac} | {:.1} % | {anchor} |\n",
                r.model,
                r.mode,
                k.layers,
                k.macs,
                k.instructions,
                100.0 * k.instructions as f64 / total.max(1) as f64,
            ));
        }
    }
    s
}
