//! `cargo xtask fuzz TARGET|all --seconds N`: coverage-guided fuzzing with cargo-fuzz
//! (libFuzzer) on the nightly toolchain; docs/fuzzing.md.
//!
//! Writes the generated seeds (`lutq_fuzz::seeds`, plus the small bundled models for
//! `onnx_import`) into the work corpus `fuzz/corpus/TARGET/` (git-ignored), runs the
//! fuzzer on one core for N seconds with the committed minimized corpus
//! (`fuzz/corpus-min/TARGET/`) and the crash inputs (`fuzz/regressions/TARGET/`) as
//! extra seeds, and prints executions, exec/s and coverage. A crash leaves its input
//! under `fuzz/artifacts/TARGET/` and fails the task.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};

const HELP: &str =
    "usage: cargo xtask fuzz TARGET|all|smoke [--seconds N] [--seed S] [--sanitizer address|none] [-- LIBFUZZER_ARGS…]

Coverage-guided fuzzing of lutq with cargo-fuzz (libFuzzer), one process on one core.

targets:
  onnx_import   ONNX bytes → import → validate → dump, and `lutq inspect`'s summary
  onnx_graph    generated ONNX graphs (supported ops and others, inconsistent shapes,
                dtypes, attributes) → import → opt (must saturate) → quantize →
                integer rewrites → validate → golden interpreter
  backends      random integer programs: golden interpreter vs JIT vs generated C
                (every 16th program also as C, compiled once per batch of 32)
  npy           the NPY readers (f32, u8, labels) and the write → read round trip
  all           each of the above for N seconds, one after the other
  smoke         the CI smoke: onnx_import and npy only, built without the compiler
                crates (lutq-fuzz's `pipeline` feature off) and without a sanitizer, so
                the cold build is small; without the nightly toolchain it prints why
                and succeeds (onnx_graph and backends are covered by the stable replay,
                `cargo test -p lutq-fuzz`)

options:
  --seconds N   how long to fuzz each target (default 60)
  --seed S      libFuzzer's random seed (default: libFuzzer picks one); CI passes 1
  --sanitizer X address (default; catches memory errors in lutq's few unsafe blocks and
                its dependencies, ~2x the build time) or none (panics, debug assertions,
                overflow checks, timeouts and memory limits are checked either way)
  -- ARGS       passed to libFuzzer as they are (e.g. -- -runs=1000000)

Needs the nightly toolchain (`rustup toolchain install nightly`: libFuzzer's coverage
instrumentation and -Zsanitizer are nightly-only) and cargo-fuzz, which this task
installs from crates.io when it is missing. Without nightly, `cargo test -p lutq-fuzz`
replays the same target functions on the generated seeds, the committed corpus and
every regression input, on stable.

A crash: the input is saved under fuzz/artifacts/TARGET/; reproduce with
`cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-…`, fix the bug, copy the
input to fuzz/regressions/TARGET/ (the stable replay test then runs it) and say what it
found in fuzz/regressions/README.md.";

/// Per-target libFuzzer options: the longest input worth mutating.
fn max_len(target: &str) -> usize {
    match target {
        // The bundled models (60-400 KB) start the fuzzer truncated to their first
        // 16 KiB (graph structure and the first initializers): whole models make each
        // execution 10-100× slower and cover nothing the small generated models miss.
        "onnx_import" => 16_384,
        "backends" => 8 * lutq_fuzz::backends::PROGRAMS_PER_INPUT,
        _ => 4096,
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let (ours, extra) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let mut target = None;
    let mut seconds = 60u64;
    let mut seed = None;
    let mut sanitizer = "address".to_string();
    let mut it = ours.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(());
            }
            "--seconds" => {
                seconds = it
                    .next()
                    .context("--seconds needs a number")?
                    .parse()
                    .context("--seconds needs a whole number of seconds")?;
            }
            "--seed" => seed = Some(it.next().context("--seed needs a number")?.clone()),
            "--sanitizer" => {
                sanitizer = it
                    .next()
                    .context("--sanitizer needs address or none")?
                    .clone();
                if !["address", "none"].contains(&sanitizer.as_str()) {
                    bail!("--sanitizer {sanitizer}: address or none");
                }
            }
            t if !t.starts_with('-') && target.is_none() => target = Some(t.to_string()),
            other => bail!("unknown argument '{other}'\n\n{HELP}"),
        }
    }
    let Some(target) = target else {
        bail!("name a target or `all`\n\n{HELP}");
    };
    let smoke = target == "smoke";
    let targets: Vec<&str> = if target == "all" {
        lutq_fuzz::TARGETS.to_vec()
    } else if smoke {
        sanitizer = "none".into();
        vec!["onnx_import", "npy"]
    } else if let Some(t) = lutq_fuzz::TARGETS.iter().find(|t| **t == target) {
        vec![*t]
    } else {
        bail!(
            "unknown target '{target}': one of {}, all or smoke",
            lutq_fuzz::TARGETS.join(", ")
        );
    };
    let root = lutq_bundled::root();
    let fuzz_dir = root.join("fuzz");
    if smoke && !has_nightly() {
        println!(
            "fuzz smoke skipped: no nightly toolchain (libFuzzer needs it); the stable replay \
             of every fuzz target (cargo test -p lutq-fuzz) covers the seeds and regression inputs"
        );
        return Ok(());
    }
    ensure_tools()?;
    // The smoke builds the parsers' targets without the `pipeline` feature (a few small
    // crates); every other run builds with it, so switching targets does not rebuild.
    let pipeline = !smoke;
    let mut build = Command::new("cargo");
    build.args(["+nightly", "fuzz", "build", "--sanitizer", &sanitizer]);
    if !pipeline {
        build.arg("--no-default-features");
    }
    if let [t] = targets[..] {
        build.arg(t);
    }
    eprintln!(
        "building {} (cargo +nightly fuzz build, sanitizer {sanitizer}; a cold build takes minutes)",
        targets.join(", ")
    );
    let started = Instant::now();
    let status = build
        .current_dir(&root)
        .status()
        .context("running cargo +nightly fuzz build")?;
    if !status.success() {
        bail!("cargo +nightly fuzz build failed");
    }
    eprintln!("built in {} s", started.elapsed().as_secs());
    let run = RunOptions {
        seconds,
        seed: seed.as_deref(),
        sanitizer: &sanitizer,
        pipeline,
        extra,
    };
    let cpu = crate::bench_float::cpu_label();
    let mut summary = Vec::new();
    for t in targets {
        let corpus = fuzz_dir.join("corpus").join(t);
        write_seeds(t, &corpus, &root)?;
        let stats = fuzz_one(&root, &fuzz_dir, t, &corpus, &run)?;
        summary.push((t, stats));
    }
    println!("\nCPU: {cpu}, one fuzzing process, sanitizer {sanitizer}");
    println!(
        "{:<12} {:>12} {:>8} {:>8} {:>8} {:>8}",
        "target", "executions", "seconds", "exec/s", "cov", "corpus"
    );
    for (t, s) in &summary {
        println!(
            "{t:<12} {:>12} {:>8} {:>8} {:>8} {:>8}",
            s.runs, s.seconds, s.exec_per_s, s.cov, s.corpus
        );
    }
    Ok(())
}

/// Whether rustup has a nightly toolchain.
fn has_nightly() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// nightly and cargo-fuzz, or a clear error (cargo-fuzz is installed when missing).
fn ensure_tools() -> anyhow::Result<()> {
    if !has_nightly() {
        bail!(
            "cargo fuzz needs the nightly toolchain (it builds with -Zsanitizer=address), and rustup has none: \
             `rustup toolchain install nightly`, where the machine can download toolchains. \
             Without it, `cargo test -p lutq-fuzz` replays the fuzz targets on the seeds, the committed corpus \
             and the regression inputs on stable."
        );
    }
    let has_fuzz = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_fuzz {
        eprintln!(
            "cargo-fuzz is not installed: installing it from crates.io (cargo install cargo-fuzz --locked, a few minutes)"
        );
        let status = Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .status()
            .context("running cargo install cargo-fuzz")?;
        if !status.success() {
            bail!("cargo install cargo-fuzz failed; install it by hand and run again");
        }
    }
    Ok(())
}

/// Writes the generated seeds of `target` into `dir` (and the small bundled models for
/// `onnx_import`).
fn write_seeds(target: &str, dir: &Path, root: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut seeds = lutq_fuzz::seeds(target);
    if target == "onnx_import" {
        for rel in [
            "models/fashion_resnet8.onnx",
            "models/fashion_mobilenetv2.onnx",
            "models/qdq/fashion_resnet8_pot_int4.onnx",
            "models/qdq/fashion_resnet8_ort_qdq.onnx",
        ] {
            let path = root.join(rel);
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            seeds.push((rel.replace('/', "_"), bytes));
        }
    }
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    Ok(())
}

#[derive(Default)]
struct Stats {
    runs: u64,
    seconds: u64,
    exec_per_s: u64,
    cov: u64,
    corpus: u64,
}

/// The number after `key` in a libFuzzer status line.
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// How `cargo fuzz run` runs each target.
struct RunOptions<'a> {
    seconds: u64,
    seed: Option<&'a str>,
    sanitizer: &'a str,
    /// Built with lutq-fuzz's `pipeline` feature (run must ask for the same build).
    pipeline: bool,
    extra: &'a [String],
}

fn fuzz_one(
    root: &Path,
    fuzz_dir: &Path,
    target: &str,
    corpus: &Path,
    run: &RunOptions,
) -> anyhow::Result<Stats> {
    let seconds = run.seconds;
    let mut dirs: Vec<PathBuf> = vec![corpus.to_path_buf()];
    for d in ["corpus-min", "regressions"] {
        let p = fuzz_dir.join(d).join(target);
        if p.is_dir() {
            dirs.push(p);
        }
    }
    let artifacts = fuzz_dir.join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;
    let mut cmd = Command::new("cargo");
    cmd.args(["+nightly", "fuzz", "run", "--sanitizer", run.sanitizer]);
    if !run.pipeline {
        cmd.arg("--no-default-features");
    }
    cmd.arg(target)
        .args(&dirs)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={}", max_len(target)))
        // An input that takes seconds or gigabytes is a finding (resource limits); the
        // backends input that completes a C batch also waits for the C compiler.
        .arg(format!(
            "-timeout={}",
            if target == "backends" { 120 } else { 10 }
        ))
        .arg("-rss_limit_mb=4096")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1");
    if let Some(s) = run.seed {
        cmd.arg(format!("-seed={s}"));
    }
    cmd.args(run.extra).current_dir(root).stderr(Stdio::piped());
    eprintln!(
        "fuzzing {target} for {seconds} s (corpus {})",
        corpus.display()
    );
    let started = Instant::now();
    let mut child = cmd.spawn().context("running cargo +nightly fuzz run")?;
    let mut stats = Stats::default();
    let log_path = fuzz_dir.join("artifacts").join(format!("{target}.log"));
    let mut log = std::fs::File::create(&log_path)?;
    let stderr = child.stderr.take().expect("piped stderr");
    let (mut interrupted, mut wrote_input) = (false, false);
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        use std::io::Write as _;
        writeln!(log, "{line}")?;
        // SIGINT to the fuzzer (a campaign stopped early on purpose): libFuzzer prints
        // this and exits with status 72, writing no input.
        if line.contains("libFuzzer: run interrupted") {
            interrupted = true;
            eprintln!("{target}: {line}");
        }
        if line.contains("Test unit written") {
            wrote_input = true;
        }
        // libFuzzer: `#1234\tNEW    cov: 567 ft: … corp: 89/12Kb … exec/s: 345 rss: …`
        if let Some(rest) = line.strip_prefix('#') {
            if let Some(n) = field(rest, "") {
                stats.runs = stats.runs.max(n);
            }
            if let Some(c) = field(&line, "cov:") {
                stats.cov = c;
            }
            if let Some(c) = field(&line, "corp:") {
                stats.corpus = c;
            }
            if line.contains("pulse") || line.contains("DONE") || line.contains("INITED") {
                eprintln!("{target}: {line}");
            }
        } else if line.starts_with("Done ")
            || line.starts_with("stat::number_of_executed_units")
            || line.contains("ERROR")
            || line.contains("panicked")
            || line.contains("Test unit written")
            || line.starts_with("lutq:")
        {
            eprintln!("{target}: {line}");
            if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
                stats.runs = n.trim().parse().unwrap_or(stats.runs);
            }
            // `Done 1234 runs in 60 second(s)`: libFuzzer's own clock.
            if let (Some(n), Some(s)) = (field(&line, "Done"), field(&line, "runs in")) {
                stats.runs = n;
                stats.seconds = s;
            }
        }
    }
    let status = child.wait()?;
    if stats.seconds == 0 {
        stats.seconds = started.elapsed().as_secs().max(1);
    }
    stats.exec_per_s = stats.runs / stats.seconds;
    let stopped_on_purpose = interrupted && !wrote_input;
    if !status.success() && !stopped_on_purpose {
        bail!(
            "{target}: the fuzzer stopped with {status} after {} executions: a crash, timeout or out-of-memory; \
             the input is under {} and the log in {}",
            stats.runs,
            artifacts.display(),
            log_path.display()
        );
    }
    eprintln!(
        "{target}: {} executions in {} s ({} exec/s), cov {}, corpus {} (log: {})",
        stats.runs,
        stats.seconds,
        stats.exec_per_s,
        stats.cov,
        stats.corpus,
        log_path.display()
    );
    Ok(stats)
}
