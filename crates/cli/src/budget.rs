//! `--flash-budget`: per-layer weight formats (lut4 with one table, lut4 with table
//! groups, lut4 with one table per channel, int8) that fit a byte budget with the least output error. The sensitivity pass and the
//! plan are `lutq_quant::budget`'s; the bytes are the C backend's own count
//! (`lutq_backend_c::constant_bytes`), so the plan fits the generated C exactly.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, bail};
use lutq_ir::int::IntGraph;
use lutq_ir::{Graph, Tensor};
use lutq_quant::budget::{
    BudgetLayer, BudgetOption, BudgetReport, LayerChoices, measure_sensitivity, plan_from_default,
};
use lutq_quant::{LayerFormat, Mode, Progress, QuantOptions, QuantReport};

use crate::pipeline::bar;

/// A budget as the user wrote it: bytes, or a multiple of the all-int8 build's constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FlashBudget {
    Bytes(usize),
    /// `0.6x`: 0.6 × the constants of the same model with every layer at int8.
    Ratio(f64),
}

impl std::str::FromStr for FlashBudget {
    type Err = String;

    /// `123456`, `120k` / `120K` / `120KiB` (× 1024), `1.5M` / `1.5MiB` (× 1024²), `0.6x`.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let bad = || {
            format!(
                "'{s}' is not a flash budget: write bytes (120000), with a suffix (120k = \
                 120 × 1024 B, 1.5M = 1.5 × 1024² B) or as a multiple of the all-int8 build's \
                 constants (0.6x)"
            )
        };
        if let Some(r) = t.strip_suffix(['x', 'X']) {
            let r: f64 = r.trim().parse().map_err(|_| bad())?;
            if !(r.is_finite() && r > 0.0) {
                return Err(bad());
            }
            return Ok(FlashBudget::Ratio(r));
        }
        let lower = t.to_ascii_lowercase();
        let body = lower
            .strip_suffix("ib")
            .or_else(|| lower.strip_suffix('b'))
            .unwrap_or(&lower);
        let (number, unit) = match body.chars().last() {
            Some('k') => (&body[..body.len() - 1], 1024.0),
            Some('m') => (&body[..body.len() - 1], 1024.0 * 1024.0),
            _ => (body, 1.0),
        };
        let v: f64 = number.trim().parse().map_err(|_| bad())?;
        if !(v.is_finite() && v > 0.0) {
            return Err(bad());
        }
        Ok(FlashBudget::Bytes((v * unit).floor() as usize))
    }
}

/// Constants of every node the plan does not choose (tables, softmax), C backend count.
fn constants(graph: &IntGraph) -> usize {
    graph.nodes.iter().map(lutq_backend_c::constant_bytes).sum()
}

fn kb(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// Quantizes `graph` with per-layer formats chosen for `budget` (see the module docs).
/// `options` are the command's quantization options in `mode` (a lut4 mode).
pub fn quantize_to_budget(
    graph: &Graph,
    calib: &Tensor,
    calib_path: &Path,
    options: QuantOptions,
    budget: FlashBudget,
    sensitivity_samples: usize,
    measure_all: bool,
) -> anyhow::Result<(IntGraph, QuantReport)> {
    let mode = options.mode;
    if !matches!(mode, Mode::Lut4PotLayer | Mode::Lut4PotChannel) {
        bail!(
            "--flash-budget chooses lut4 (one table, table groups or a table per channel) or \
             int8 for each layer: \
             its base is a lut4 mode. Fix: pass --mode lut4-pot-channel (or lut4-pot-layer)"
        );
    }
    if options.lut_per_channel {
        bail!(
            "--flash-budget chooses per-channel tables layer by layer itself. Fix: drop \
             --lut-per-channel"
        );
    }
    let start = Instant::now();
    // 1. The sensitivity pass: the all-int8 network, every layer fitted in every format.
    let calib_bar = bar(calib.shape()[0], "calibrating");
    let lower_bar = bar(0, "sensitivity");
    lower_bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    let progress = |p: Progress<'_>| match p {
        Progress::Calibrating { done, .. } => calib_bar.set_position(done as u64),
        Progress::Lowering { done, total, node } => {
            if done == 0 {
                calib_bar.finish_and_clear();
                lower_bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                lower_bar.set_length(total as u64);
            }
            lower_bar.set_position(done as u64);
            lower_bar.set_message(format!("int8 + candidates {node}"));
        }
    };
    let pass = lutq_quant::sensitivity_pass(graph, calib, &options, &progress);
    calib_bar.finish_and_clear();
    lower_bar.finish_and_clear();
    let (int8_graph, _, layers) = match pass {
        Err(lutq_quant::QuantError::NonFinite(v)) => {
            bail!("calibration data '{}': {v}", calib_path.display())
        }
        r => r.context("flash budget: the sensitivity pass (all-int8 quantization) failed")?,
    };
    // 2. Measured sensitivity on the first calibration samples.
    let per_sample: usize = calib.shape()[1..].iter().product();
    let data = calib.as_f32().context("calibration data must be float32")?;
    let samples: Vec<&[f32]> = data
        .chunks(per_sample.max(1))
        .take(sensitivity_samples.max(1))
        .collect();
    let measure_bar = bar(layers.len(), "sensitivity");
    measure_bar.set_message("measuring: one layer 4-bit, the rest int8");
    let measure_start = Instant::now();
    let (costs, energy) =
        measure_sensitivity(&int8_graph, &layers, &samples, measure_all, &|done, _| {
            measure_bar.set_position(done as u64)
        })?;
    measure_bar.finish_and_clear();
    let measure_seconds = measure_start.elapsed().as_secs_f64();
    let sensitivity_seconds = start.elapsed().as_secs_f64();

    // 3. Bytes as the C backend counts them, and the plan.
    let int8_bytes = constants(&int8_graph);
    let planned: usize = layers
        .iter()
        .map(|l| lutq_backend_c::constant_bytes(&int8_graph.nodes[l.value.index()]))
        .sum();
    let fixed = int8_bytes - planned;
    let choices: Vec<LayerChoices> = layers
        .iter()
        .zip(&costs)
        .map(|(l, cost)| LayerChoices {
            name: l.name.clone(),
            options: l
                .candidates
                .iter()
                .zip(cost)
                .map(|(c, &e)| (c.format, lutq_backend_c::constant_bytes(&c.node), e))
                .collect(),
        })
        .collect();
    let budget_bytes = match budget {
        FlashBudget::Bytes(b) => b,
        FlashBudget::Ratio(r) => (r * int8_bytes as f64).floor() as usize,
    };
    let min_bytes = fixed
        + choices
            .iter()
            .map(|c| c.options.iter().map(|o| o.1).min().unwrap_or(0))
            .sum::<usize>();
    let all_int8 = budget_bytes >= int8_bytes;
    if all_int8 {
        eprintln!(
            "flash budget {} B is at least the all-int8 build's constants ({} B): every layer \
             keeps int8 weights",
            budget_bytes, int8_bytes
        );
    }
    // The final graph's layers are refitted on their own upstream network, so their
    // bytes may differ from the candidates' (a rescale that became uniform, …): plan,
    // quantize, count, and plan again below the overshoot if it does not fit.
    let mut target = budget_bytes.min(int8_bytes);
    let mut attempt = 0;
    let (final_graph, mut report, chosen) = loop {
        // Above the plain mode's size the plan only adds bytes to it (`plan_from_default`).
        let p = plan_from_default(&choices, fixed, target, LayerFormat::Lut4Groups)?;
        let formats: HashMap<String, LayerFormat> = choices
            .iter()
            .zip(&p.choice)
            .map(|(c, &k)| (c.name.clone(), c.options[k].0))
            .collect();
        let opts = QuantOptions {
            formats,
            ..options.clone()
        };
        let (g, r) = quantize_plain(graph, calib, calib_path, &opts)?;
        let bytes = constants(&g);
        if bytes <= budget_bytes {
            break (g, r, p);
        }
        // Already every layer's smallest candidate: nothing smaller exists, and the
        // estimate `min_bytes` was short of what the refitted plan takes.
        let smallest = choices.iter().zip(&p.choice).all(|(c, &k)| {
            let least = c.options.iter().map(|o| o.1).min().unwrap_or(0);
            c.options[k].1 == least
        });
        if smallest {
            bail!(
                "a flash budget of {budget_bytes} B is below the smallest plan: every layer in \
                 its smallest 4-bit format takes {bytes} B once refitted on its own upstream \
                 (the candidates' estimate was {min_bytes} B). Fix: pass --flash-budget \
                 {bytes} or more"
            );
        }
        attempt += 1;
        if attempt >= 4 {
            bail!(
                "flash budget: the quantized plan takes {bytes} B, over the budget of \
                 {budget_bytes} B after {attempt} attempts (internal error: lutq bug, please \
                 report it); a budget a little higher fits"
            );
        }
        target = target.saturating_sub(bytes - budget_bytes);
    };
    let bytes = constants(&final_graph);
    let by_name: HashMap<&str, usize> = final_graph
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), lutq_backend_c::constant_bytes(n)))
        .collect();
    let layers_report: Vec<BudgetLayer> = choices
        .iter()
        .zip(&chosen.choice)
        .map(|(c, &k)| BudgetLayer {
            name: c.name.clone(),
            format: c.options[k].0.name().into(),
            bytes: by_name.get(c.name.as_str()).copied().unwrap_or(0),
            options: c
                .options
                .iter()
                .map(|&(f, b, e)| BudgetOption {
                    format: f.name().into(),
                    bytes: b,
                    sensitivity_db: (e > 0.0).then(|| 10.0 * (energy / e).log10()),
                })
                .collect(),
        })
        .collect();
    let budget_report = BudgetReport {
        budget_bytes,
        bytes,
        min_bytes,
        int8_bytes,
        all_int8,
        sensitivity_samples: samples.len(),
        sensitivity_seconds,
        measure_seconds,
        layers: layers_report,
    };
    eprint!("{}", budget_text(&budget_report, mode));
    report.flash_budget = Some(budget_report);
    Ok((final_graph, report))
}

fn quantize_plain(
    graph: &Graph,
    calib: &Tensor,
    calib_path: &Path,
    options: &QuantOptions,
) -> anyhow::Result<(IntGraph, QuantReport)> {
    crate::pipeline::quantize_with(graph, calib, calib_path, options)
}

/// The plan as a table: per layer its format, bytes and each format's sensitivity.
pub fn budget_text(r: &BudgetReport, mode: Mode) -> String {
    let mut s = format!(
        "flash budget {} B ({}; {:.2}x the all-int8 constants {}): plan {} B ({}); smallest \
         plan {} B ({:.2}x); base {mode}; sensitivity on {} samples in {:.1} s (measuring {:.1} s)\n",
        r.budget_bytes,
        kb(r.budget_bytes),
        r.budget_bytes as f64 / r.int8_bytes.max(1) as f64,
        kb(r.int8_bytes),
        r.bytes,
        kb(r.bytes),
        r.min_bytes,
        r.min_bytes as f64 / r.int8_bytes.max(1) as f64,
        r.sensitivity_samples,
        r.sensitivity_seconds,
        r.measure_seconds,
    );
    s.push_str(
        "  layer                                    format         bytes   output SQNR (dB) with only this layer in lut4 / lut4/groups / lut4/ch\n",
    );
    for l in &r.layers {
        let db = |f: &str| {
            l.options
                .iter()
                .find(|o| o.format == f)
                .map_or("-".to_string(), |o| {
                    o.sensitivity_db
                        .map_or("inf".to_string(), |d| format!("{d:.1}"))
                })
        };
        s.push_str(&format!(
            "  {:<40} {:<11} {:>8}   {:>7} / {:>7} / {:<7}\n",
            l.name,
            l.format,
            l.bytes,
            db("lut4"),
            db("lut4/groups"),
            db("lut4/ch")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_with_suffixes_and_ratios() {
        let p = |s: &str| s.parse::<FlashBudget>();
        assert_eq!(p("120000"), Ok(FlashBudget::Bytes(120_000)));
        assert_eq!(p("120k"), Ok(FlashBudget::Bytes(120 * 1024)));
        assert_eq!(p("120KiB"), Ok(FlashBudget::Bytes(120 * 1024)));
        assert_eq!(p("1.5M"), Ok(FlashBudget::Bytes(1_572_864)));
        assert_eq!(p("2mb"), Ok(FlashBudget::Bytes(2 * 1024 * 1024)));
        assert_eq!(p("0.6x"), Ok(FlashBudget::Ratio(0.6)));
        for bad in ["", "x", "-3k", "0", "0x", "12q", "nanx", "1.5 G"] {
            let err = p(bad).unwrap_err();
            assert!(err.contains("0.6x"), "{bad}: {err}");
        }
    }
}
