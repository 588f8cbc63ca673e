//! `cargo xtask bench-int`: integer inference speed, single thread, batch 1, warm — the
//! Cranelift JIT against the golden interpreter, the generated C (gcc -O3
//! -march=native), onnxruntime fp32 / int8 (static QDQ, per-channel) and tract fp32, on
//! the same model and the same machine in one run.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use lutq_backend_c::{HostProgram, quantize_samples};
use lutq_interp::int::IntInterpreter;
use lutq_ir::int::IntGraph;
use lutq_quant::Mode;

const USAGE: &str = "cargo xtask bench-int [--iters N] [--write FILE.md]

Median milliseconds per inference (batch 1, warm, one thread) of lutq-jit, the golden
integer interpreter, the generated C built with gcc -O3 -march=native, and onnxruntime
fp32 and int8 (scripts/ort_bench.py; PyPI onnxruntime) on the bundled models, all in
lut4-pot-channel for lutq, and tract fp32 (bench/tract, built on first use: minutes). Also
the JIT's MAC rate.";

/// Turns the JIT and onnxruntime take (after one warm-up round).
const ROUNDS: usize = 5;

struct Bench {
    name: &'static str,
    calib: &'static str,
    calib_limit: usize,
}

const MODELS: [Bench; 3] = [
    Bench {
        name: "mobilenet_v2",
        calib: "data/photos/photos.npy",
        calib_limit: 11,
    },
    Bench {
        name: "fashion_resnet8",
        calib: "data/fashion_mnist/train_x.npy",
        calib_limit: 256,
    },
    Bench {
        name: "fashion_mobilenetv2",
        calib: "data/fashion_mnist/train_x.npy",
        calib_limit: 256,
    },
];

fn median_ms(iters: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The generated C's time per inference: the harness on `n` copies of one sample minus
/// the harness on one copy (process start and I/O cancel out), divided by `n - 1`.
fn c_ms(g: &IntGraph, x: &[f32], n: usize) -> anyhow::Result<f64> {
    let program = HostProgram::build(g, "bench", "gcc", &["-O3", "-march=native"], None)?;
    let one = quantize_samples(g, &[vec![x]])?;
    let many: Vec<u8> = one.iter().copied().cycle().take(one.len() * n).collect();
    let time = |input: &[u8]| -> anyhow::Result<f64> {
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            program.run(input)?;
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(best)
    };
    Ok((time(&many)? - time(&one)?) / (n - 1) as f64)
}

/// tract fp32 (crate `tract-onnx`), from the separate crate in `bench/tract` (outside the
/// workspace: it takes minutes to build, which the normal build should not pay). Built on
/// first use; `None` with a note when it cannot be built.
fn tract_ms(model: &str, iters: usize, shape: &[usize]) -> Option<f64> {
    let out = Command::new("cargo")
        .args([
            "run",
            "--quiet",
            "--release",
            "--manifest-path",
            "bench/tract/Cargo.toml",
            "--",
        ])
        .arg(format!("models/{model}.onnx"))
        .arg(iters.to_string())
        .arg(
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().parse().ok(),
        Ok(o) => {
            eprintln!(
                "note: tract timing failed:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("note: cannot run cargo for tract: {e}");
            None
        }
    }
}

/// onnxruntime, served by `scripts/ort_bench.py` so its runs interleave with the JIT's.
struct Ort {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Ort {
    fn start(model: &str, calib: &str, calib_limit: usize) -> anyhow::Result<Ort> {
        let mut child = Command::new("python3")
            .arg("scripts/ort_bench.py")
            .arg(format!("models/{model}.onnx"))
            .arg(calib)
            .arg(calib_limit.to_string())
            .env("OMP_NUM_THREADS", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start python3 (needs PyPI onnxruntime and numpy)")?;
        let mut out = BufReader::new(child.stdout.take().context("ort stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("scripts/ort_bench.py failed to start (its error is above)");
        }
        Ok(Ort { child, out })
    }

    /// `n` timed runs of the `kind` ("fp32" or "int8") session, in ms.
    fn times(&mut self, kind: &str, n: usize) -> anyhow::Result<Vec<f64>> {
        let stdin = self.child.stdin.as_mut().context("ort stdin")?;
        writeln!(stdin, "{kind} {n}")?;
        stdin.flush()?;
        let mut line = String::new();
        self.out.read_line(&mut line)?;
        serde_json::from_str(&line).with_context(|| format!("ort answered {line:?}"))
    }
}

impl Drop for Ort {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The JIT's MAC rate per kind of linear layer (sum of per-node medians over `iters`
/// timed runs), against this CPU's 128-bit int8 peak: 32 MACs per cycle with VNNI (two
/// `vpdpbusd` of 16), 16 without (two `pmaddwd` of 8), at the nominal clock in the CPU's
/// name.
fn layer_rates(g: &IntGraph, x: &[f32], iters: usize) -> anyhow::Result<String> {
    let mut model = lutq_backend_jit::compile(g)?;
    let runs: Vec<_> = (0..iters)
        .map(|_| model.run_timed(&[x]).map(|r| r.1))
        .collect::<Result<_, _>>()?;
    let peak_macs_per_cycle = if lutq_backend_jit::host_has_vnni() {
        32.0
    } else {
        16.0
    };
    let ghz: Option<f64> = crate::bench_float::cpu_name()
        .rsplit('@')
        .next()
        .and_then(|s| s.trim().strip_suffix("GHz"))
        .and_then(|s| s.trim().parse().ok());
    let mut kinds: Vec<(&str, u64, f64)> = Vec::new();
    for (i, (name, _)) in runs[0].iter().enumerate() {
        let Some(node) = g.nodes.iter().find(|n| &n.name == name) else {
            continue;
        };
        let lutq_ir::int::IntOp::Linear(l) = &node.op else {
            continue;
        };
        let [o, i_g, kh, kw] = l.weights.shape();
        let kind = match &l.conv {
            None => "dense",
            Some(c) if i_g == 1 && c.group == o => "depthwise conv",
            Some(c) if c.group == 1 && kh * kw == 1 => "pointwise conv",
            Some(_) => "other conv",
        };
        let macs = (node.ty.num_elements() * l.weights.row_len()) as u64;
        let ms = median(runs.iter().map(|r| r[i].1.as_secs_f64() * 1e3).collect());
        match kinds.iter_mut().find(|k| k.0 == kind) {
            Some(k) => {
                k.1 += macs;
                k.2 += ms;
            }
            None => kinds.push((kind, macs, ms)),
        }
    }
    let mut out = String::from(
        "| layers | MMAC | ms (sum of per-node medians) | GMAC/s | of 128-bit int8 peak |\n|---|---:|---:|---:|---:|\n",
    );
    for (kind, macs, ms) in kinds {
        let rate = macs as f64 / ms / 1e6;
        let share = ghz.map_or("–".to_string(), |ghz| {
            format!("{:.0} %", 100.0 * rate / (peak_macs_per_cycle * ghz))
        });
        out.push_str(&format!(
            "| {kind} | {:.1} | {ms:.3} | {rate:.1} | {share} |\n",
            macs as f64 / 1e6
        ));
    }
    let peak = ghz.map_or("unknown (no clock in the CPU name)".to_string(), |ghz| {
        format!("{:.0} GMAC/s", peak_macs_per_cycle * ghz)
    });
    Ok(format!(
        "Peak: {peak} ({peak_macs_per_cycle} MACs per cycle at the nominal clock).\n\n{out}"
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `n` timed runs of `f`, in ms.
fn times_ms(n: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Vec<f64>> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f()?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        })
        .collect()
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut iters = 30usize;
    let mut write: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--iters" => iters = it.next().context("--iters needs N")?.parse()?,
            "--write" => write = Some(it.next().context("--write needs a file")?.into()),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n\n{USAGE}"),
        }
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let mut rates = String::new();
    let mut table = String::from(
        "| model | MACs | lutq-jit ms | golden interp ms | generated C ms | onnxruntime fp32 ms | onnxruntime int8 ms | tract fp32 ms | jit / ort int8 | jit / ort fp32 | jit GMAC/s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for b in &MODELS {
        eprintln!("{}: quantizing", b.name);
        let calib = lutq_bundled::samples(b.calib, 0, b.calib_limit)?;
        let g = lutq_bundled::lowered(b.name, Mode::Lut4PotChannel, &calib)?;
        let x = lutq_bundled::rows(&calib)[0];
        let macs = g.macs();

        eprintln!("{}: timing", b.name);
        // The JIT and onnxruntime take turns, ROUNDS times, so that the load of this
        // shared machine weighs on both alike.
        let mut ort = Ort::start(b.name, b.calib, b.calib_limit)?;
        let mut model = lutq_backend_jit::compile(&g)?;
        let per_round = iters.div_ceil(ROUNDS);
        let (mut jit, mut ort_fp32, mut ort_int8) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..=ROUNDS {
            let jit_times = pool.install(|| {
                times_ms(per_round, || {
                    model.run(&[x])?;
                    Ok(())
                })
            })?;
            let fp32 = ort.times("fp32", per_round)?;
            let int8 = ort.times("int8", per_round)?;
            // Round 0 warms up.
            if round > 0 {
                jit.extend(jit_times);
                ort_fp32.extend(fp32);
                ort_int8.extend(int8);
            }
        }
        drop(ort);
        let (jit, ort_fp32, ort_int8) = (median(jit), median(ort_fp32), median(ort_int8));
        let interp = pool.install(|| -> anyhow::Result<f64> {
            let interpreter = IntInterpreter::new(&g)?;
            median_ms(iters.min(10), || {
                interpreter.run(&[x])?;
                Ok(())
            })
        })?;
        let c = c_ms(&g, x, 20)?;
        let tract = tract_ms(b.name, iters, &g.inputs[0].shape)
            .map_or("–".to_string(), |t| format!("{t:.3}"));
        let row = format!(
            "| {} | {macs} | {jit:.3} | {interp:.3} | {c:.3} | {ort_fp32:.3} | {ort_int8:.3} | {tract} | {:.2}× | {:.2}× | {:.2} |\n",
            b.name,
            jit / ort_int8,
            jit / ort_fp32,
            macs as f64 / jit / 1e6
        );
        print!("{row}");
        table.push_str(&row);
        if b.name == "mobilenet_v2" {
            rates = pool.install(|| layer_rates(&g, x, iters))?;
            print!("{rates}");
        }
    }
    if let Some(path) = write {
        let body = format!(
            "Regenerate: `cargo xtask bench-int --iters {iters} --write docs/results.md`.\n\n\
             Median of {iters} warm runs (the interpreter: of {}), batch 1, one thread each, on\n\
             {}; lutq in `lut4-pot-channel`, onnxruntime int8 = static QDQ per-channel\n\
             quantization calibrated on the same images. The generated C: the harness on 20\n\
             copies of one sample minus the harness on one, per copy. The machines are\n\
             shared: compare the ratios within a row. The JIT and onnxruntime take turns\n\
             ({ROUNDS} rounds of {} runs each, after a warm-up round), so that a busy moment\n\
             weighs on both.\n\n{table}\n\
             The JIT's MAC rate by kind of layer on mobilenet_v2 (`run_timed`, {iters}\n\
             runs, measured right after the table's runs: a busier or quieter moment than\n\
             the table's shows in every rate alike):\n\n{rates}",
            iters.min(10),
            crate::bench_float::cpu_label(),
            iters.div_ceil(ROUNDS)
        );
        crate::docs::replace_section(&path, "bench-int", "Integer inference speed", &body)?;
    }
    Ok(())
}
