//! `cargo xtask bench-quant`: how long quantizing takes, against the float
//! interpreter's time for one pass over the same calibration images in the same run
//! (the machines are shared: the ratio travels, the seconds less so).
//!
//! MobileNetV2 on the 256 calibration images of the honest protocol
//! (`data/full/protocol/calib.npy`, written by `scripts/prepare_protocol.py`: crops of
//! photos disjoint from the evaluation photos, see `cargo xtask accuracy --help`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use lutq_quant::{Mode, QuantOptions};

const USAGE: &str = "cargo xtask bench-quant [--write FILE.md] [--modes m1,m2,…] [--rounds N]

Times lutq-quant on MobileNetV2 with the protocol's 256 calibration images
(data/full/protocol/calib.npy, written by scripts/prepare_protocol.py; see `cargo xtask
accuracy --help`), all cores, against one float interpreter pass over the same images.
After one untimed float pass (the first one pays for cold caches and fresh memory), each
round times a float pass and then each mode's quantization right after it, so that both
sides of a ratio see the same load on a shared machine; the table shows the median of
the rounds' ratios (default 3 rounds) and the rounds' seconds.";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut write: Option<PathBuf> = None;
    let mut modes = vec![Mode::Lut4PotChannel, Mode::Int8PotChannel];
    let mut rounds = 3usize;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--write" => write = Some(it.next().context("--write needs a file")?.into()),
            "--modes" => modes = crate::parse_modes(it.next())?,
            "--rounds" => {
                rounds = it
                    .next()
                    .and_then(|r| r.parse().ok())
                    .filter(|&r: &usize| r > 0)
                    .context("--rounds needs a positive count")?
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n\n{USAGE}"),
        }
    }
    let calib_path = "data/full/protocol/calib.npy";
    let crops = lutq_dataio::NpyArray::from_npy_file(calib_path).with_context(|| {
        format!("cannot read {calib_path}: run scripts/prepare_protocol.py first (cargo xtask accuracy --help)")
    })?;
    let calib = lutq_ir::Tensor::f32(crops.shape.clone(), crops.data)?;

    let bytes = std::fs::read("models/mobilenet_v2.onnx").context("models/mobilenet_v2.onnx")?;
    let graph = lutq_onnx::import(&bytes, &lutq_onnx::ImportOptions::default())?;
    let (graph, _) = lutq_opt::optimize(&graph, &lutq_opt::OptOptions::default())?;

    // Warm-up: the first pass pays for cold caches and fresh memory.
    lutq_interp::run_batch(&graph, &calib, None)?;
    let threads = rayon::current_num_threads();
    let float_pass = || -> anyhow::Result<Timing> {
        let (start, cpu_start) = (Instant::now(), cpu_seconds());
        lutq_interp::run_batch(&graph, &calib, None)?;
        Ok(Timing::since(start, cpu_start))
    };
    let mut floats = Vec::new();
    // Per mode: every round's quantization time and stage seconds.
    let mut runs: Vec<Vec<(Timing, lutq_quant::StageSeconds)>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds {
        let float = float_pass()?;
        eprintln!("round {}: float pass {:.1} s", round + 1, float.wall);
        floats.push(float);
        for (m, &mode) in modes.iter().enumerate() {
            let (start, cpu_start) = (Instant::now(), cpu_seconds());
            let options = QuantOptions::new(mode);
            let (_, report) = lutq_quant::quantize(&graph, &calib, &options, &|_| {})?;
            let t = Timing::since(start, cpu_start);
            eprintln!(
                "round {}: {mode} {:.1} s, {:.1}× the float pass",
                round + 1,
                t.wall,
                t.wall / float.wall
            );
            runs[m].push((t, report.stage_seconds));
        }
    }
    let list = |v: &mut dyn Iterator<Item = f64>| {
        v.map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(" / ")
    };
    let mut table = format!(
        "| mode | seconds, each round | / that round's float pass (median) | CPU / float pass's CPU (median) |\n\
         |---|---|---:|---:|\n\
         | float interpreter, one pass | {} | 1.0× | 1.0× |\n",
        list(&mut floats.iter().map(|f| f.wall))
    );
    let mut stage_table = String::from(
        "\nWall seconds by stage in the median round (`QuantReport::stage_seconds`; the rest is bookkeeping):\n\n\
         | mode | float pass | float statistics | input moments | fit | integer pass |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for (mode, runs) in modes.iter().zip(&runs) {
        let ratios: Vec<f64> = runs
            .iter()
            .zip(&floats)
            .map(|((t, _), f)| t.wall / f.wall)
            .collect();
        let cpu: Vec<f64> = runs
            .iter()
            .zip(&floats)
            .map(|((t, _), f)| t.cpu / f.cpu.max(1e-9))
            .collect();
        let median_round = median_index(&ratios);
        table.push_str(&format!(
            "| {mode} | {} | {:.1}× | {:.1}× |\n",
            list(&mut runs.iter().map(|(t, _)| t.wall)),
            ratios[median_round],
            cpu[median_index(&cpu)]
        ));
        let s = runs[median_round].1;
        stage_table.push_str(&format!(
            "| {mode} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            s.float_pass, s.float_statistics, s.input_moments, s.fit, s.integer_pass
        ));
    }
    table.push_str(&stage_table);
    print!("{table}");
    if let Some(path) = write {
        let body = format!(
            "<!-- generated by `cargo xtask bench-quant {}`; do not edit -->\n\n\
             MobileNetV2 (224×224), the protocol's 256 calibration images, {threads} threads,\n\
             {rounds} rounds on {}, each a float interpreter pass and then every mode's\n\
             quantization (after one untimed float pass).\n\
             Quantizing includes calibration, the layer-by-layer fit and the runs of every\n\
             lowered layer over all images. CPU: user + system time of this process over\n\
             the same span (steadier than wall time on a shared machine).\n\n{table}",
            args.join(" "),
            crate::bench_float::cpu_label()
        );
        crate::docs::replace_section(&path, "bench-quant", "Quantization time", &body)?;
    }
    Ok(())
}

/// Wall and CPU seconds of one timed span.
#[derive(Clone, Copy)]
struct Timing {
    wall: f64,
    cpu: f64,
}

impl Timing {
    fn since(start: Instant, cpu_start: f64) -> Timing {
        Timing {
            wall: start.elapsed().as_secs_f64(),
            cpu: cpu_seconds() - cpu_start,
        }
    }
}

/// The index of the median of `v` (of an even count, the larger of the middle two: a
/// ratio reported from too few rounds errs on the slow side).
fn median_index(v: &[f64]) -> usize {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    order[v.len() / 2]
}

/// User + system CPU seconds of this process so far (`/proc/self/stat`; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Clock ticks are 100 per second on Linux (sysconf(_SC_CLK_TCK)).
    (ticks(11) + ticks(12)) / 100.0
}
