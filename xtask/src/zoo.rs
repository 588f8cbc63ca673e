//! `cargo xtask zoo`: every model of the zoo (`models/zoo/manifest.json`, built by
//! `scripts/zoo/build_zoo.py`) through import → every integer mode → golden interpreter
//! against fp32 on the model's evaluation set, and the generated C and the JIT bit for
//! bit against the interpreter.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use lutq_backend_c::{HostProgram, decode_outputs, quantize_samples};
use lutq_interp::Interpreter;
use lutq_interp::int::IntInterpreter;
use lutq_ir::Tensor;
use lutq_ir::int::IntGraph;
use lutq_quant::{Mode, QuantOptions};
use serde_json::Value;

const USAGE: &str =
    "cargo xtask zoo [--models a,b,…] [--modes m1,m2,…] [--exact N] [--write FILE.md]

For each model of models/zoo/manifest.json whose file exists (the big ones are made by
`python scripts/zoo/build_zoo.py`, see models/zoo/README.md): imports it with the
manifest's static input shape, optimizes, and for every integer mode (default: all 7)
quantizes it on the model's calibration set, runs the golden interpreter on its
evaluation set (disjoint source material) and reports agreement and SQNR against the
float model; then checks the first N (default 4) evaluation samples bit for bit in the
generated C (host gcc) and in the JIT. Failures are reported in the table, not fatal.";

struct Row {
    model: String,
    mode: Mode,
    result: Result<Measured, String>,
}

struct Measured {
    agreement: f64,
    sqnr_db: f64,
    flash_bytes: usize,
    arena: usize,
    lower_bound: usize,
    macs: u64,
    ops: String,
    exact: usize,
    seconds: f64,
}

fn load(path: &Path) -> anyhow::Result<Tensor> {
    let a = lutq_dataio::NpyArray::from_npy_file(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Tensor::f32(a.shape.clone(), a.data)?)
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b })
}

fn op_summary(g: &IntGraph) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for n in &g.nodes {
        *counts.entry(n.op.name()).or_insert(0usize) += 1;
    }
    counts
        .iter()
        .filter(|(op, _)| !matches!(**op, "quantize_input" | "reshape"))
        .map(|(op, n)| format!("{op} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bit-exactness of the C program and the JIT on the first `n` samples.
fn check_exact(g: &IntGraph, eval: &Tensor, n: usize) -> anyhow::Result<usize> {
    let rows: Vec<Vec<&[f32]>> = lutq_bundled::rows(eval)
        .into_iter()
        .take(n)
        .map(|r| vec![r])
        .collect();
    let interp = IntInterpreter::new(g)?;
    let want: Vec<Vec<Vec<i32>>> = rows
        .iter()
        .map(|r| Ok(interp.run(r)?.iter().map(|d| d.to_i32()).collect()))
        .collect::<anyhow::Result<_>>()?;
    let program = HostProgram::build(g, "model", "gcc", &["-O2"], None)?;
    let c = decode_outputs(g, &program.run(&quantize_samples(g, &rows)?)?)?;
    if c != want {
        bail!("generated C differs from the golden interpreter");
    }
    let mut jit = lutq_backend_jit::compile(g)?;
    for (k, r) in rows.iter().enumerate() {
        let got: Vec<Vec<i32>> = jit.run(r)?.iter().map(|d| d.to_i32()).collect();
        if got != want[k] {
            bail!("JIT differs from the golden interpreter on sample {k}");
        }
    }
    Ok(rows.len())
}

fn measure(
    float: &lutq_ir::Graph,
    mode: Mode,
    calib: &Tensor,
    eval: &Tensor,
    want: &[f32],
    exact: usize,
) -> anyhow::Result<Measured> {
    let start = Instant::now();
    let g = lutq_quant::quantize(float, calib, &QuantOptions::new(mode), &|_| {})?.0;
    let g = lutq_opt::optimize_int(&g, &Default::default())?.0;
    let out = IntInterpreter::new(&g)?.run_batch(eval, None)?;
    let got = out[0].as_f32().context("float outputs")?;
    let n = eval.shape()[0];
    let per = got.len() / n;
    let agree = (0..n)
        .filter(|&s| argmax(&want[s * per..(s + 1) * per]) == argmax(&got[s * per..(s + 1) * per]))
        .count();
    let exact = check_exact(&g, eval, exact)?;
    let plan = lutq_backend_c::plan_memory(&g);
    Ok(Measured {
        agreement: agree as f64 / n as f64,
        sqnr_db: lutq_interp::metrics::sqnr_db(want, got),
        flash_bytes: g.weight_bytes(),
        arena: plan.arena_size,
        lower_bound: plan.lower_bound,
        macs: g.macs(),
        ops: op_summary(&g),
        exact,
        seconds: start.elapsed().as_secs_f64(),
    })
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut write: Option<PathBuf> = None;
    let mut exact = 4;
    let mut only: Option<Vec<String>> = None;
    let mut modes: Vec<Mode> = Mode::ALL.into_iter().filter(|&m| m != Mode::Fp32).collect();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--write" => write = Some(it.next().context("--write needs a file")?.into()),
            "--exact" => exact = it.next().context("--exact needs N")?.parse()?,
            "--models" => {
                only = Some(
                    it.next()
                        .context("--models needs a list")?
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            "--modes" => modes = crate::parse_modes(it.next())?,
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n\n{USAGE}"),
        }
    }
    let root = lutq_bundled::root();
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("models/zoo/manifest.json"))
            .context("models/zoo/manifest.json")?,
    )?;
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    for m in manifest["models"].as_array().context("manifest: models")? {
        let name = m["name"].as_str().context("manifest: name")?.to_string();
        if only.as_ref().is_some_and(|o| !o.contains(&name)) {
            continue;
        }
        let path = root.join(m["path"].as_str().context("manifest: path")?);
        // The full data sets when built, else the committed slices.
        let data = |key: &str| -> Option<PathBuf> {
            [format!("{key}_full"), key.to_string()]
                .iter()
                .filter_map(|k| m[k.as_str()].as_str())
                .map(|p| root.join(p))
                .find(|p| p.exists())
        };
        let (Some(calib), Some(eval)) = (data("calib"), data("eval")) else {
            missing.push(name);
            continue;
        };
        if !path.exists() {
            missing.push(name);
            continue;
        }
        eprintln!("{name}: {}", path.display());
        let bytes = std::fs::read(&path)?;
        let mut options = lutq_onnx::ImportOptions::default();
        if let (Some(input), Some(shape)) = (m["input"].as_str(), m["input_shape"].as_array()) {
            let dims: Vec<usize> = shape
                .iter()
                .filter_map(|d| d.as_u64())
                .map(|d| d as usize)
                .collect();
            options.input_shapes.insert(input.to_string(), dims);
        }
        let float = lutq_onnx::import(&bytes, &options)
            .map_err(anyhow::Error::from)
            .and_then(|g| Ok(lutq_opt::optimize(&g, &Default::default())?.0));
        let float = match float {
            Ok(g) => g,
            Err(e) => {
                for &mode in &modes {
                    rows.push(Row {
                        model: name.clone(),
                        mode,
                        result: Err(format!("import: {e:#}")),
                    });
                }
                continue;
            }
        };
        let (calib, eval) = (load(&calib)?, load(&eval)?);
        let want = Interpreter::new(&float)?.run_batch(&eval, None)?;
        let want = want.as_f32().context("float outputs")?.to_vec();
        for &mode in &modes {
            let result =
                measure(&float, mode, &calib, &eval, &want, exact).map_err(|e| format!("{e:#}"));
            if let Err(e) = &result {
                eprintln!("  {mode}: {e}");
            }
            rows.push(Row {
                model: name.clone(),
                mode,
                result,
            });
        }
    }
    let body = table(&rows, &missing, exact);
    print!("{body}");
    if let Some(path) = write {
        crate::docs::replace_section(&path, "zoo", "Model zoo", &body)?;
        eprintln!("wrote section 'zoo' of {}", path.display());
    }
    Ok(())
}

fn table(rows: &[Row], missing: &[String], exact: usize) -> String {
    let ok = rows.iter().filter(|r| r.result.is_ok()).count();
    let mut s = format!(
        "Regenerate: `python scripts/zoo/build_zoo.py && cargo xtask zoo --exact {exact} --write docs/results.md`\n\
         (models, data and their provenance: models/zoo/README.md, data/zoo/README.md).\n\n\
         Every model with its own calibration set and an evaluation set from other source\n\
         material; **agree** = top-1 agreement with the fp32 model on the evaluation set,\n\
         **SQNR** of the first output against fp32; **exact** = evaluation samples checked\n\
         bit for bit in the generated C (host gcc -O2) and the JIT against the golden\n\
         interpreter (of {exact}); **flash** = weights, tables, biases and shifts; **arena** = the C\n\
         backend's static plan over its lower bound; **s** = wall seconds to quantize and\n\
         check (release build, {cpu}, a shared 2-core machine: a rough cost, not a benchmark).\n\
         {ok} of {} model × mode runs pass.\n\n\
         | model | mode | agree | SQNR dB | flash B | arena B | arena / bound | MACs | exact | s | integer ops |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        rows.len(),
        cpu = crate::bench_float::cpu_label(),
    );
    for r in rows {
        match &r.result {
            Ok(m) => s.push_str(&format!(
                "| {} | {} | {:.1} % | {:.1} | {} | {} | {:.2} | {} | {} | {:.1} | {} |\n",
                r.model,
                r.mode,
                100.0 * m.agreement,
                m.sqnr_db,
                m.flash_bytes,
                m.arena,
                m.arena as f64 / m.lower_bound.max(1) as f64,
                m.macs,
                m.exact,
                m.seconds,
                m.ops
            )),
            Err(e) => s.push_str(&format!(
                "| {} | {} | fails: {} |||||||||\n",
                r.model,
                r.mode,
                e.replace('|', "\\|").replace('\n', " ")
            )),
        }
    }
    if !missing.is_empty() {
        s.push_str(&format!(
            "\nNot built here (run `python scripts/zoo/build_zoo.py`): {}.\n",
            missing.join(", ")
        ));
    }
    s
}
