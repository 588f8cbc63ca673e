//! The generated C on a Cortex-M4, emulated: cross-compile with `arm-none-eabi-gcc`, link
//! with the start-up file and linker script in `crates/backend-c/mcu/`, run under
//! `qemu-system-arm -M mps2-an386`, read the outputs back over semihosting.
//!
//! The firmware runs each embedded sample through `NAME_run` and prints one line per
//! sample: `sample S ticks T out HEX` (HEX = the raw output bytes). Ticks come from
//! SysTick under `-icount shift=0,sleep=off`: QEMU advances virtual time 1 ns per
//! instruction and SysTick (25 MHz processor clock) ticks every 40 ns, so one tick is 40
//! instructions on every run ([`INSTRUCTIONS_PER_TICK`]).
//!
//! [`profile_on_core`] builds the same firmware with `-DLUTQ_PROFILE`: the generated
//! `NAME_run` then calls `lutq_profile_mark(node)` after every layer, the firmware adds
//! the ticks since the previous mark to that node, and prints `node I ticks T` lines
//! after the first sample ([`McuReport::per_node`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lutq_ir::int::{IntElem, IntGraph};

use crate::emit::{EmitOptions, emit};
use crate::error::CError;

pub const INSTRUCTIONS_PER_TICK: u64 = 40;

const STARTUP_C: &str = include_str!("../mcu/startup.c");
const MCU_H: &str = include_str!("../mcu/lutq_mcu.h");
const LINKER_SCRIPT: &str = include_str!("../mcu/mps2_an386.ld");

/// The cross-compiler's flags (the issue's: Cortex-M4, Thumb, -O2), plus the strict
/// warnings every generated file must pass.
pub const MCU_FLAGS: &[&str] = &[
    "-mcpu=cortex-m4",
    "-mthumb",
    "-O2",
    "-std=c99",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-pedantic",
    "-ffunction-sections",
    "-fdata-sections",
];

/// The emulated cores: the generated code's DSP path runs on the Cortex-M4, its
/// portable path on the Cortex-M3 (no DSP extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Core {
    /// QEMU `mps2-an386`, `-mcpu=cortex-m4`.
    CortexM4,
    /// QEMU `mps2-an385`, `-mcpu=cortex-m3`: same memory map and SysTick as the AN386.
    CortexM3,
}

impl Core {
    fn mcpu(self) -> &'static str {
        match self {
            Core::CortexM4 => "-mcpu=cortex-m4",
            Core::CortexM3 => "-mcpu=cortex-m3",
        }
    }

    fn qemu(self) -> [&'static str; 4] {
        match self {
            Core::CortexM4 => ["-M", "mps2-an386", "-cpu", "cortex-m4"],
            Core::CortexM3 => ["-M", "mps2-an385", "-cpu", "cortex-m3"],
        }
    }
}

/// Section sizes (bytes) from `arm-none-eabi-size`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sizes {
    pub text: u64,
    pub data: u64,
    pub bss: u64,
}

/// What one firmware run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct McuReport {
    /// Per sample, per output: the raw integers.
    #[serde(skip)]
    pub outputs: Vec<Vec<Vec<i32>>>,
    /// Per sample: Cortex-M4 instructions of one `NAME_run` (multiples of 40).
    pub instructions: Vec<u64>,
    /// The model alone: `NAME.o` + `NAME_weights.o` (code and constants: flash).
    pub model: Sizes,
    /// The model's constants alone (`NAME_weights.o`).
    pub weights: Sizes,
    /// The whole firmware (start-up, test inputs and the arena included).
    pub firmware: Sizes,
    /// What the emitter reported (constant bytes, arena, MACs).
    pub summary: crate::CSummary,
    /// Profiled runs only ([`profile_on_core`]): per node of the graph, the
    /// instructions from the previous layer's end to its own (multiples of 40; 0 for
    /// nodes without a kernel), in the first sample. They add up to that sample's
    /// instructions less the final output copy; each includes about 50 instructions of
    /// the mark itself.
    pub per_node: Vec<u64>,
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<std::process::Output, CError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|source| CError::NoCompiler {
        compiler: program.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(CError::CompileFailed {
            command: format!("{program} ({what})"),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out)
}

fn size_of(files: &[PathBuf]) -> Result<Sizes, CError> {
    let out = run_tool(
        Command::new("arm-none-eabi-size").arg("-t").args(files),
        "section sizes",
    )?;
    // Berkeley format; with -t the last line is the total: text data bss dec hex (TOTALS).
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    let n: Vec<u64> = last
        .split_whitespace()
        .take(3)
        .filter_map(|w| w.parse().ok())
        .collect();
    match n[..] {
        [text, data, bss] => Ok(Sizes { text, data, bss }),
        _ => Err(CError::Data(format!(
            "cannot read arm-none-eabi-size's output:\n{text}"
        ))),
    }
}

fn firmware_main(graph: &IntGraph, p: &str, samples: usize) -> String {
    let up = p.to_ascii_uppercase();
    let out_bytes: usize = graph.ty(graph.outputs[0].value).size_bytes();
    let nodes = graph.nodes.len();
    format!(
        r#"/* Test firmware: runs every embedded sample and prints its outputs and cost. */
#include <stdint.h>

#include "lutq_mcu.h"
#include "{p}.h"

#define SAMPLES {samples}

extern const {p}_input0_t mcu_inputs[SAMPLES][{up}_INPUT0_SIZE];

static uint8_t arena[{up}_ARENA_SIZE > 0 ? {up}_ARENA_SIZE : 1];
static {p}_output0_t output[{up}_OUTPUT0_SIZE];
static char line[64 + 2 * {out_bytes}];

#ifdef LUTQ_PROFILE
/* Ticks per node (the generated code's LUTQ_PROFILE_MARK after each layer). */
#define NODES {nodes}
static uint64_t profile_last;
static uint32_t profile_ticks[NODES];

void lutq_profile_mark(int node);
void lutq_profile_mark(int node)
{{
    const uint64_t now = mcu_ticks();
    profile_ticks[node] += (uint32_t)(now - profile_last);
    profile_last = now;
}}
#endif

static char *put_decimal(char *at, uint64_t v)
{{
    char digits[24];
    int n = 0;
    do {{
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    }} while (v != 0);
    while (n > 0) {{
        *at++ = digits[--n];
    }}
    return at;
}}

static char *put_text(char *at, const char *s)
{{
    while (*s != 0) {{
        *at++ = *s++;
    }}
    return at;
}}

int main(void)
{{
    static const char hex[] = "0123456789abcdef";
    long s;
    for (s = 0; s < SAMPLES; ++s) {{
#ifdef LUTQ_PROFILE
        profile_last = mcu_ticks();
#endif
        const uint64_t start = mcu_ticks();
        const int status = {p}_run(mcu_inputs[s], output, arena);
        const uint64_t ticks = mcu_ticks() - start;
        const uint8_t *bytes = (const uint8_t *)output;
        char *at = line;
        unsigned i;
        if (status != 0) {{
            mcu_print("lutq-mcu: run failed\n");
            return 1;
        }}
        at = put_text(at, "sample ");
        at = put_decimal(at, (uint64_t)s);
        at = put_text(at, " ticks ");
        at = put_decimal(at, ticks);
        at = put_text(at, " out ");
        for (i = 0; i < sizeof output; ++i) {{
            *at++ = hex[bytes[i] >> 4];
            *at++ = hex[bytes[i] & 15];
        }}
        *at++ = '\n';
        *at = 0;
        mcu_print(line);
#ifdef LUTQ_PROFILE
        if (s == 0) {{
            int k;
            for (k = 0; k < NODES; ++k) {{
                at = put_text(line, "node ");
                at = put_decimal(at, (uint64_t)k);
                at = put_text(at, " ticks ");
                at = put_decimal(at, profile_ticks[k]);
                *at++ = '\n';
                *at = 0;
                mcu_print(line);
            }}
        }}
#endif
    }}
    mcu_print("done\n");
    return 0;
}}
"#
    )
}

fn inputs_c(graph: &IntGraph, p: &str, quantized: &[u8], samples: usize) -> String {
    let up = p.to_ascii_uppercase();
    let mut c = format!(
        "#include <stdint.h>\n\n#include \"{p}.h\"\n\n\
         const {p}_input0_t mcu_inputs[{samples}][{up}_INPUT0_SIZE] = {{\n"
    );
    let signed = graph
        .nodes
        .iter()
        .find(|n| matches!(n.op, lutq_ir::int::IntOp::QuantizeInput { .. }))
        .is_some_and(|n| n.ty.elem == IntElem::I8);
    let per = quantized.len() / samples.max(1);
    for sample in quantized.chunks(per.max(1)) {
        c.push_str("    {");
        for (i, &b) in sample.iter().enumerate() {
            if i % 24 == 0 {
                c.push_str("\n        ");
            }
            if signed {
                write!(c, "{},", b as i8).unwrap();
            } else {
                write!(c, "{b},").unwrap();
            }
        }
        c.push_str("\n    },\n");
    }
    c.push_str("};\n");
    c
}

/// Compiles C files of `dir` for `core` ([`MCU_FLAGS`] with its `-mcpu`) and returns
/// their objects.
fn cross_compile(
    dir: &Path,
    units: &[String],
    core: Core,
    defines: &[&str],
) -> Result<Vec<PathBuf>, CError> {
    let mut objects = Vec::new();
    for unit in units {
        let obj = dir.join(unit.replace(".c", ".o"));
        // The start-up file is platform code (a vector table mixes the stack address
        // with function pointers, and semihosting needs inline assembly): GNU C.
        let flags: Vec<&str> = if unit == "startup.c" {
            MCU_FLAGS
                .iter()
                .map(|&f| if f == "-std=c99" { "-std=gnu99" } else { f })
                .filter(|&f| f != "-pedantic")
                .collect()
        } else {
            MCU_FLAGS.to_vec()
        };
        let flags: Vec<&str> = flags
            .into_iter()
            .map(|f| {
                if f.starts_with("-mcpu=") {
                    core.mcpu()
                } else {
                    f
                }
            })
            .collect();
        run_tool(
            Command::new("arm-none-eabi-gcc")
                .current_dir(dir)
                .args(flags)
                .args(defines)
                .arg("-c")
                .arg(unit)
                .arg("-o")
                .arg(&obj),
            unit,
        )?;
        objects.push(obj);
    }
    Ok(objects)
}

/// The Cortex-M4 flash of the generated model in `dir` (`NAME.c` + `NAME_weights.c`,
/// as written by [`crate::CSources::write_to`]): code and constants, from
/// `arm-none-eabi-size`. `None` when the cross compiler is not installed.
pub fn cortex_m4_flash(dir: &Path, prefix: &str) -> Result<Option<Sizes>, CError> {
    let present = Command::new("arm-none-eabi-gcc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        return Ok(None);
    }
    let objects = cross_compile(
        dir,
        &[format!("{prefix}.c"), format!("{prefix}_weights.c")],
        Core::CortexM4,
        &[],
    )?;
    size_of(&objects).map(Some)
}

/// [`cortex_m4_flash`] of `graph` as [`emit`] generates it with `options`, built in a
/// temporary directory that is removed afterwards.
pub fn cortex_m4_flash_of(
    graph: &IntGraph,
    options: &EmitOptions,
) -> Result<Option<Sizes>, CError> {
    let dir = crate::host::fresh_dir();
    let result = emit(graph, options)
        .and_then(|sources| sources.write_to(&dir))
        .and_then(|()| cortex_m4_flash(&dir, &options.prefix));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Builds the firmware for `graph` in `dir` with the quantized samples `quantized`
/// (`samples` of them, see [`crate::quantize_samples`]) and runs it under QEMU (killed
/// after `timeout`).
pub fn run_on_cortex_m4(
    graph: &IntGraph,
    prefix: &str,
    quantized: &[u8],
    samples: usize,
    dir: &Path,
    timeout: Duration,
) -> Result<McuReport, CError> {
    run_on_core(
        graph,
        prefix,
        quantized,
        samples,
        dir,
        timeout,
        Core::CortexM4,
    )
}

/// [`run_on_cortex_m4`] on any emulated [`Core`]; the firmware stays in `dir`
/// (`firmware.elf`).
pub fn run_on_core(
    graph: &IntGraph,
    prefix: &str,
    quantized: &[u8],
    samples: usize,
    dir: &Path,
    timeout: Duration,
    core: Core,
) -> Result<McuReport, CError> {
    let options = EmitOptions::new(prefix);
    run_on_core_with(graph, &options, quantized, samples, dir, timeout, core)
}

/// [`run_on_core`] with the C emitted under `options` (a scratch limit, …).
pub fn run_on_core_with(
    graph: &IntGraph,
    options: &EmitOptions,
    quantized: &[u8],
    samples: usize,
    dir: &Path,
    timeout: Duration,
    core: Core,
) -> Result<McuReport, CError> {
    run_firmware(
        graph, options, quantized, samples, dir, timeout, core, false,
    )
}

/// [`run_on_core`] with the per-layer profile ([`McuReport::per_node`], first sample):
/// everything built with `-DLUTQ_PROFILE`. The marks cost instructions of their own, so
/// [`McuReport::instructions`] of a profiled run are not the model's.
pub fn profile_on_core(
    graph: &IntGraph,
    prefix: &str,
    quantized: &[u8],
    samples: usize,
    dir: &Path,
    timeout: Duration,
    core: Core,
) -> Result<McuReport, CError> {
    let options = EmitOptions::new(prefix);
    run_firmware(
        graph, &options, quantized, samples, dir, timeout, core, true,
    )
}

#[allow(clippy::too_many_arguments)]
fn run_firmware(
    graph: &IntGraph,
    options: &EmitOptions,
    quantized: &[u8],
    samples: usize,
    dir: &Path,
    timeout: Duration,
    core: Core,
    profile: bool,
) -> Result<McuReport, CError> {
    if graph.inputs.len() != 1 || graph.outputs.len() != 1 {
        return Err(CError::Data(
            "the test firmware handles models with one input and one output".into(),
        ));
    }
    let prefix = options.prefix.as_str();
    let sources = emit(graph, options)?;
    sources.write_to(dir)?;
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|source| CError::Io {
            what: format!("cannot write {}", dir.join(name).display()),
            source,
        })
    };
    write("startup.c", STARTUP_C)?;
    write("lutq_mcu.h", MCU_H)?;
    write("mps2_an386.ld", LINKER_SCRIPT)?;
    write("mcu_main.c", &firmware_main(graph, prefix, samples))?;
    write("mcu_inputs.c", &inputs_c(graph, prefix, quantized, samples))?;

    let units = [
        format!("{prefix}.c"),
        format!("{prefix}_weights.c"),
        "startup.c".into(),
        "mcu_main.c".into(),
        "mcu_inputs.c".into(),
    ];
    let defines: &[&str] = if profile { &["-DLUTQ_PROFILE"] } else { &[] };
    let objects = cross_compile(dir, &units, core, defines)?;
    let elf = dir.join("firmware.elf");
    run_tool(
        Command::new("arm-none-eabi-gcc")
            .current_dir(dir)
            .args([core.mcpu(), "-mthumb", "-nostartfiles"])
            .args(["--specs=nano.specs", "-Tmps2_an386.ld", "-Wl,--gc-sections"])
            .args(&objects)
            .arg("-o")
            .arg(&elf),
        "link",
    )?;
    let model = size_of(&objects[..2])?;
    let weights = size_of(&objects[1..2])?;
    let firmware = size_of(std::slice::from_ref(&elf))?;

    let stdout = run_qemu(&elf, timeout, core)?;
    let (outputs, instructions) = parse_firmware_output(graph, &stdout, samples)?;
    let per_node = if profile {
        parse_profile(graph, &stdout)?
    } else {
        Vec::new()
    };
    Ok(McuReport {
        outputs,
        instructions,
        per_node,
        model,
        weights,
        firmware,
        summary: sources.summary,
    })
}

fn run_qemu(elf: &Path, timeout: Duration, core: Core) -> Result<String, CError> {
    let mut child = Command::new("qemu-system-arm")
        .args(core.qemu())
        .args(["-nographic", "-monitor", "none", "-serial", "none"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .args(["-icount", "shift=0,sleep=off"])
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CError::NoCompiler {
            compiler: "qemu-system-arm".into(),
            source,
        })?;
    // Drain both pipes on threads so that QEMU never blocks on a full pipe.
    let mut out_pipe = child.stdout.take().expect("piped");
    let mut err_pipe = child.stderr.take().expect("piped");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out_pipe, &mut s).map(|_| s)
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err_pipe, &mut s).map(|_| s)
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CError::RunFailed {
                    status: format!("killed after {} s", timeout.as_secs()),
                    stderr: "QEMU did not finish in time".into(),
                });
            }
            Err(source) => {
                return Err(CError::Io {
                    what: "cannot wait for qemu-system-arm".into(),
                    source,
                });
            }
        }
    };
    let stdout = out_thread.join().expect("reader").unwrap_or_default();
    let stderr = err_thread.join().expect("reader").unwrap_or_default();
    if !status.success() {
        return Err(CError::RunFailed {
            status: status.to_string(),
            stderr: format!("{stdout}{stderr}"),
        });
    }
    // Semihosting output may arrive on either stream depending on the QEMU build.
    Ok(format!("{stdout}{stderr}"))
}

/// The `node I ticks T` lines of a profiled firmware, as instructions per node.
fn parse_profile(graph: &IntGraph, text: &str) -> Result<Vec<u64>, CError> {
    let mut per_node = vec![0; graph.nodes.len()];
    let mut seen = 0;
    for line in text.lines().filter(|l| l.starts_with("node ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(node), Some(ticks)) = (
            words.get(1).and_then(|w| w.parse::<usize>().ok()),
            words.get(3).and_then(|w| w.parse::<u64>().ok()),
        ) else {
            return Err(CError::Data(format!("unexpected profile line: {line}")));
        };
        let Some(slot) = per_node.get_mut(node) else {
            return Err(CError::Data(format!(
                "profile line of a node past the graph: {line}"
            )));
        };
        *slot = ticks * INSTRUCTIONS_PER_TICK;
        seen += 1;
    }
    if seen != graph.nodes.len() {
        return Err(CError::Data(format!(
            "the profiled firmware reported {seen} of {} nodes:\n{text}",
            graph.nodes.len()
        )));
    }
    Ok(per_node)
}

type Parsed = (Vec<Vec<Vec<i32>>>, Vec<u64>);

fn parse_firmware_output(graph: &IntGraph, text: &str, samples: usize) -> Result<Parsed, CError> {
    let mut outputs = Vec::new();
    let mut instructions = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("sample ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(ticks), Some(hex)) = (
            words.get(3).and_then(|w| w.parse::<u64>().ok()),
            words.get(5),
        ) else {
            return Err(CError::Data(format!("unexpected firmware line: {line}")));
        };
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|e| CError::Data(format!("bad hex in firmware output: {e}")))?;
        // The Cortex-M4 runs little-endian.
        let ty = graph.ty(graph.outputs[0].value);
        let values: Vec<i32> = match ty.elem {
            IntElem::I8 => bytes.iter().map(|&b| b as i8 as i32).collect(),
            IntElem::U8 => bytes.iter().map(|&b| b as i32).collect(),
            IntElem::I32 => bytes
                .chunks(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        };
        outputs.push(vec![values]);
        instructions.push(ticks * INSTRUCTIONS_PER_TICK);
    }
    if outputs.len() != samples || !text.contains("done") {
        return Err(CError::Data(format!(
            "the firmware reported {} of {samples} samples:\n{text}",
            outputs.len()
        )));
    }
    Ok((outputs, instructions))
}
