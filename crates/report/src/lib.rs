//! `lutq report`'s library: what quantization did to a model, as data and as one page.
//!
//! A [`Report`] gathers, per quantization mode, the numbers the rest of lutq already
//! computes — the quantizer's [`QuantReport`], the C backend's [`CSummary`] (constants
//! against an int8 build, arena against its lower bound, MACs), the Cortex-M4 flash of
//! the generated C and of its int8 build ([`M4Flash`], measured by the caller with
//! `arm-none-eabi-size`) and its arena layout
//! ([`lutq_backend_c::arena_blocks`]), the lowered [`IntGraph`]'s linear layers (shapes,
//! weights, tables, exponents, shifts) and the per-layer and output metrics the CLI's
//! `eval` measures. This crate measures nothing of its own, so the page always agrees
//! with `lutq eval`, `lutq compile` and `lutq dump`; it only bins the values it is handed
//! (float weights, float activations counted per quantization step by
//! [`ActivationCounts`] while the CLI's per-layer pass runs the float model) and applies
//! one model: estimated Cortex-M4 instructions = MACs × the instructions per MAC measured
//! on the generated C for the layer's kind and weight format ([`data::M4Model`], read
//! from `docs/results.md`'s per-layer-kind profile table when lutq is built). [`ReportBuilder`] assembles the report mode by mode;
//! [`Report::to_html`] renders it; the same struct is the `--json` output (`serde`).
//!
//! # The page
//! One HTML file that opens offline: CSS in a `<style>` element, charts as inline SVG,
//! no script, font, image or style sheet from anywhere else (the tests check that the
//! page holds no URL at all). Sections: summary (model, modes, top-1 / agreement / SQNR
//! per mode, Cortex-M4 flash and constants against the int8 build, arena against its
//! lower bound, MACs, estimated M4 instructions), the per-layer SQNR chart, the per-layer table (shapes,
//! MACs, bytes, LUTs, exponents, shifts, SQNR, shares of flash and instructions), per
//! layer and mode a weight histogram with the table levels and an activation histogram
//! with the clamp range, and per mode the arena over the schedule (one bar per buffer).
//! Every chart is `<svg data-chart="sqnr|weights|activations|memory">` (with
//! `data-layer` / `data-mode`), and every mark has a class (`mark`, `bar`, `level`,
//! `clamp`, `block`) and a `<title>` for the browser's tooltip.
//!
//! # Why our own SVG
//! plotters' SVG backend (the maintained Rust plotting crate) was the candidate. It
//! draws every element anonymously — a `<rect>` or `<circle>` with no class, no
//! `<title>`, no data attribute — so a bar or level can be neither hovered for its layer
//! and value nor found by a test that counts a chart's marks, and its text elements name
//! fonts (the page must load none). Styling by class (one CSS block for all charts) is
//! not possible either. The charts here are four simple kinds — a dot plot, two
//! histograms, a Gantt-like block chart — on linear axes, about 400 lines in [`chart`]
//! with no dependency, each mark carrying its class, data attributes and tooltip. Both
//! histogram kinds and the memory chart were written with that choice in mind; a chart
//! needing real layout work (legends, log axes with many ticks, many series) would be
//! the point to revisit it.
//!
//! **Invariant:** the report holds only values computed elsewhere in lutq, binned, or
//! the documented instruction estimate; [`Report::to_html`] emits no reference to a
//! resource outside the page.

pub mod chart;
pub mod data;
mod html;

pub use data::{
    ActivationCounts, ActivationHistogram, ArenaBlock, ArenaUse, Histogram, Level, WeightHistogram,
};
use lutq_backend_c::{ArenaBlocks, CSummary, LayerKind};
use lutq_ir::int::{IntGraph, IntOp, QWeights, Rescale};
use lutq_quant::QuantReport;
use serde::{Deserialize, Serialize};

/// What can go wrong assembling or reading a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A lutq bug: two modes of one model lowered to different linear layers (the
    /// quantizer keeps the float graph's layers in every mode).
    #[error(
        "mode {mode}: linear layer '{layer}' is not among the first mode's layers (a lutq bug: every mode keeps the float graph's layers)"
    )]
    LayerMismatch { mode: String, layer: String },
    /// A user error: the same mode given twice.
    #[error("mode {0} is listed twice")]
    DuplicateMode(String),
    /// A user error: a `--json` file that is not a report.
    #[error("not a lutq report: {0}")]
    Json(#[from] serde_json::Error),
}

/// Everything the page shows; also the `--json` output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The model file as the user named it.
    pub model: String,
    /// The samples top-1, agreement and output SQNR are measured on.
    pub samples: usize,
    /// `evaluation` (from `--data`) or `calibration` (no `--data`: the calibration
    /// samples stand in, which flatters every mode).
    pub data: String,
    pub calibration_samples: usize,
    /// Samples the per-layer SQNR is measured on (the first ones, as `eval --per-layer`).
    pub per_layer_samples: usize,
    /// `on`, `off` or `auto`.
    pub cle: String,
    /// Multiply-accumulates of one inference (every mode has the same).
    pub macs: u64,
    /// Parameters of the float model in bytes (fp32).
    pub float_weight_bytes: usize,
    pub modes: Vec<ModeSummary>,
    /// The linear layers of the lowered program, in execution order.
    pub layers: Vec<Layer>,
    /// The quantizer's and the input-range warnings, each once.
    pub warnings: Vec<String>,
}

/// One mode's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModeSummary {
    pub mode: String,
    /// Whether this mode's model was equalized (with `--cle auto`, per mode).
    pub cle: bool,
    /// Top-1 accuracy against the labels (`--labels`).
    pub top1_accuracy: Option<f64>,
    /// Top-1 agreement with the float model.
    pub top1_agreement: f64,
    /// Output SQNR against the float model in dB (`None`: identical outputs).
    pub sqnr_db: Option<f64>,
    /// The quantizer's weight bytes (`QuantReport::weight_bytes`).
    pub weight_bytes: usize,
    /// The generated C's sizes (`lutq compile`'s summary).
    pub c: CBuild,
    /// Estimated Cortex-M4 instructions of one inference: the layers' estimates
    /// ([`LayerMode::m4_instructions`]) times one plus the measured share of the ops
    /// without MACs ([`data::M4Model::overhead`]); an estimate, not a measurement.
    pub m4_instructions: u64,
    /// The arena over the schedule (the memory chart).
    pub arena: ArenaUse,
}

/// Sizes of the generated C ([`CSummary`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CBuild {
    /// Constants in flash: codes, tables, biases, rescales.
    pub constant_bytes: usize,
    /// The same constants with int8 weights: an int8 build's flash for constants.
    pub int8_constant_bytes: usize,
    /// The caller's scratch buffer.
    pub arena_bytes: usize,
    /// The most bytes live at once: no plan can use less.
    pub arena_lower_bound: usize,
    /// Every buffer separate.
    pub arena_naive: usize,
    /// Cortex-M4 flash of the model and of its int8 build (`None`: `arm-none-eabi-gcc`
    /// is not installed, and the page compares constants only).
    #[serde(default)]
    pub m4_flash: Option<M4Flash>,
}

/// Flash of the generated C built for a Cortex-M4: `NAME.c` + `NAME_weights.c` compiled
/// as `cargo xtask mcu` builds them, code + constants (`text + data` of
/// `arm-none-eabi-size`); no start-up code, no C library.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct M4Flash {
    /// This mode's program.
    pub bytes: u64,
    /// The same program with int8 weights ([`IntGraph::with_int8_weights`]: the same
    /// integers, one byte per weight, the int8 kernels' code).
    pub int8_build_bytes: u64,
}

impl From<&CSummary> for CBuild {
    fn from(s: &CSummary) -> Self {
        CBuild {
            constant_bytes: s.weight_bytes,
            int8_constant_bytes: s.int8_weight_bytes,
            arena_bytes: s.arena_size,
            arena_lower_bound: s.arena_lower_bound,
            arena_naive: s.arena_naive,
            m4_flash: None,
        }
    }
}

/// A Conv or dense layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// The float node's name (what `eval --per-layer` and `dump` print).
    pub name: String,
    /// `conv`, `dense` (the integer op's name); `depthwise` convolutions say so.
    pub op: String,
    /// The kernel kind the instruction estimate uses (`3×3 conv`, `1×1 pointwise`,
    /// `depthwise`, `dense`, `other conv`: [`LayerKind::name`]).
    #[serde(default)]
    pub kind: String,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub macs: u64,
    /// One entry per mode, in [`Report::modes`] order.
    pub modes: Vec<LayerMode>,
}

/// A layer as one mode quantized it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerMode {
    pub mode: String,
    /// `lut4`, `int4` or `int8` (the quantizer's report).
    pub weights: String,
    /// Codes + tables or int8 values, biases and rescales (the quantizer's report).
    pub weight_bytes: usize,
    /// Lookup tables the layer stores (each distinct table once, `TableLayout`): 0 for
    /// int8 weights, 1 for one per layer, up to 9 for 8 table groups, or one per channel.
    pub luts: usize,
    pub input_exp: i32,
    pub output_exp: i32,
    pub weight_exp_min: i32,
    pub weight_exp_max: i32,
    /// The requantization after the accumulator, over the output channels.
    pub rescale: RescaleRange,
    /// SQNR of this layer's output against the float model's in dB (`None`: not
    /// measured — no float tensor of that name — or exact).
    pub sqnr_db: Option<f64>,
    /// Estimated Cortex-M4 instructions: MACs × the weight format's measured
    /// instructions per MAC (see [`ModeSummary::m4_instructions`]).
    pub m4_instructions: u64,
    /// `weight_bytes` over the mode's Cortex-M4 flash, code included ([`M4Flash::bytes`]),
    /// or over its constants ([`CBuild::constant_bytes`]) where that was not measured.
    pub flash_share: f64,
    /// `m4_instructions` over the mode's estimate.
    pub instruction_share: f64,
    /// The float weights against the table levels (`None`: no float weights given).
    pub weight_hist: Option<WeightHistogram>,
    /// The float output against the clamp range (`None`: an i32 output, or not
    /// measured).
    pub activation_hist: Option<ActivationHistogram>,
}

/// The range of a layer's per-channel rescales.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RescaleRange {
    /// Power-of-two: `rshift_round(acc, shift)`, shifts from `min` to `max`.
    Shift { min: i32, max: i32 },
    /// Fixed-point multipliers (the `*-pc` baselines): `31 + shift` from `min` to `max`.
    Multiplier { min: i32, max: i32 },
}

impl RescaleRange {
    fn of(rescale: &[Rescale]) -> RescaleRange {
        let shifts = || {
            rescale.iter().map(|r| match *r {
                Rescale::Shift(s) => s,
                Rescale::Multiplier { shift, .. } => 31 + shift,
            })
        };
        let (min, max) = (shifts().min().unwrap_or(0), shifts().max().unwrap_or(0));
        if rescale
            .iter()
            .any(|r| matches!(r, Rescale::Multiplier { .. }))
        {
            RescaleRange::Multiplier { min, max }
        } else {
            RescaleRange::Shift { min, max }
        }
    }
}

/// What one mode contributes; [`ReportBuilder::add_mode`] takes it.
pub struct ModeInput<'a> {
    pub mode: &'a str,
    pub cle: bool,
    /// The lowered program (what the backends compile).
    pub graph: &'a IntGraph,
    pub quant: &'a QuantReport,
    pub c: &'a CSummary,
    pub top1_accuracy: Option<f64>,
    pub top1_agreement: f64,
    pub sqnr_db: Option<f64>,
    /// `(node name, SQNR dB)` of every layer `eval --per-layer` measured.
    pub layer_sqnr: &'a [(String, f64)],
    /// The arena as the generated C uses it.
    pub arena: &'a ArenaBlocks,
    /// `(node name, float weights as [O][K] rows)` of the linear layers this mode's
    /// float model fitted (`lutq_quant::linear_weights`).
    pub float_weights: &'a [(String, Vec<f32>)],
    /// `(node name, counts)` of the linear layers' float outputs on the per-layer
    /// samples.
    pub activations: &'a [(String, ActivationCounts)],
    /// The program's and its int8 build's Cortex-M4 flash, when measured.
    pub m4_flash: Option<M4Flash>,
}

/// Assembles a [`Report`] mode by mode.
pub struct ReportBuilder {
    report: Report,
}

impl ReportBuilder {
    /// `samples`: what the output metrics are measured on (`data`: `evaluation` or
    /// `calibration`).
    pub fn new(
        model: impl Into<String>,
        samples: usize,
        data: impl Into<String>,
        cle: impl Into<String>,
        per_layer_samples: usize,
    ) -> Self {
        ReportBuilder {
            report: Report {
                model: model.into(),
                samples,
                data: data.into(),
                calibration_samples: 0,
                per_layer_samples,
                cle: cle.into(),
                macs: 0,
                float_weight_bytes: 0,
                modes: Vec::new(),
                layers: Vec::new(),
                warnings: Vec::new(),
            },
        }
    }

    /// Adds a warning (once).
    pub fn warn(&mut self, warning: &str) {
        if !self.report.warnings.iter().any(|w| w == warning) {
            self.report.warnings.push(warning.to_string());
        }
    }

    /// Adds one mode. The first mode fixes the layer rows; later modes must lower to
    /// the same linear layers.
    pub fn add_mode(&mut self, m: ModeInput<'_>) -> Result<(), ReportError> {
        let r = &mut self.report;
        if r.modes.iter().any(|s| s.mode == m.mode) {
            return Err(ReportError::DuplicateMode(m.mode.to_string()));
        }
        let rows = layers_of(&m, r.per_layer_samples);
        let m4_instructions = model_instructions(&rows);
        // Checked before anything changes: a refused mode leaves the report as it was.
        if !r.modes.is_empty() {
            let mismatch = |layer: &str| ReportError::LayerMismatch {
                mode: m.mode.to_string(),
                layer: layer.to_string(),
            };
            if let Some(extra) = rows
                .iter()
                .find(|row| !r.layers.iter().any(|l| l.name == row.name))
            {
                return Err(mismatch(&extra.name));
            }
            if let Some(missing) = r
                .layers
                .iter()
                .find(|l| !rows.iter().any(|row| row.name == l.name))
            {
                return Err(mismatch(&missing.name));
            }
        }
        if r.modes.is_empty() {
            r.macs = m.c.macs;
            r.float_weight_bytes = m.quant.float_weight_bytes;
            r.calibration_samples = m.quant.calibration_samples;
            r.layers = rows;
        } else {
            for row in rows {
                let layer = r
                    .layers
                    .iter_mut()
                    .find(|l| l.name == row.name)
                    .expect("checked above");
                layer.modes.extend(row.modes);
            }
        }
        for w in &m.quant.warnings {
            if !r.warnings.contains(w) {
                r.warnings.push(w.clone());
            }
        }
        r.modes.push(ModeSummary {
            mode: m.mode.to_string(),
            cle: m.cle,
            top1_accuracy: m.top1_accuracy,
            top1_agreement: m.top1_agreement,
            sqnr_db: m.sqnr_db.filter(|s| s.is_finite()),
            weight_bytes: m.quant.weight_bytes,
            c: CBuild {
                m4_flash: m.m4_flash,
                ..CBuild::from(m.c)
            },
            m4_instructions,
            arena: ArenaUse::of(m.graph, m.arena),
        });
        Ok(())
    }

    pub fn finish(self) -> Report {
        self.report
    }
}

/// A whole inference's estimate from its layers' (each with one mode's entry).
fn model_instructions(rows: &[Layer]) -> u64 {
    let layers: u64 = rows.iter().map(|l| l.modes[0].m4_instructions).sum();
    (layers as f64 * (1.0 + data::M4Model::measured().overhead)).round() as u64
}

/// The linear layers of one mode's program, each with this mode's entry.
fn layers_of(m: &ModeInput<'_>, per_layer_samples: usize) -> Vec<Layer> {
    let mut rows = Vec::new();
    let model = data::M4Model::measured();
    for (index, node) in m.graph.nodes.iter().enumerate() {
        let IntOp::Linear(l) = &node.op else {
            continue;
        };
        let (kind, _) = LayerKind::of(m.graph, index);
        let input = m.graph.ty(node.inputs[0]);
        let quant = m.quant.layers.iter().find(|q| q.name == node.name);
        let [o, i, _, _] = l.weights.shape();
        let depthwise = l
            .conv
            .as_ref()
            .is_some_and(|c| c.group > 1 && c.group == o && i == 1);
        let macs = (node.ty.num_elements() * l.weights.row_len()) as u64;
        let mut entry = LayerMode {
            mode: m.mode.to_string(),
            weights: quant.map_or_else(
                || match l.weights {
                    QWeights::Lut { .. } => "lut4".into(),
                    QWeights::Int8 { .. } => "int8".into(),
                },
                |q| q.weights.clone(),
            ),
            weight_bytes: quant.map_or_else(
                || l.weights.size_bytes() + 4 * l.bias.len() + 4 * l.rescale.len(),
                |q| q.weight_bytes,
            ),
            luts: l.weights.table_layout().map_or(0, |t| t.tables.len()),
            input_exp: input.exp,
            output_exp: node.ty.exp,
            weight_exp_min: l.weight_exps.iter().copied().min().unwrap_or(0),
            weight_exp_max: l.weight_exps.iter().copied().max().unwrap_or(0),
            rescale: RescaleRange::of(&l.rescale),
            sqnr_db: m
                .layer_sqnr
                .iter()
                .find(|(n, _)| *n == node.name)
                .map(|(_, s)| *s)
                .filter(|s| s.is_finite()),
            m4_instructions: 0,
            flash_share: 0.0,
            instruction_share: 0.0,
            weight_hist: m
                .float_weights
                .iter()
                .find(|(n, _)| *n == node.name)
                .and_then(|(_, rows)| WeightHistogram::of(l, rows)),
            activation_hist: m
                .activations
                .iter()
                .find(|(n, _)| *n == node.name)
                .and_then(|(_, c)| c.finish(per_layer_samples)),
        };
        entry.m4_instructions = (macs as f64
            * model.per_mac(data::WeightFormat::of(&entry.weights), kind))
        .round() as u64;
        // Of the whole flash (code included) when it was measured, else of the constants.
        let flash = m.m4_flash.map_or(m.c.weight_bytes as u64, |f| f.bytes);
        entry.flash_share = entry.weight_bytes as f64 / flash.max(1) as f64;
        rows.push(Layer {
            name: node.name.clone(),
            op: if depthwise {
                "depthwise".into()
            } else {
                node.op.name().into()
            },
            input_shape: input.shape.clone(),
            output_shape: node.ty.shape.clone(),
            kind: kind.name().into(),
            macs,
            modes: vec![entry],
        });
    }
    let total = model_instructions(&rows);
    for l in &mut rows {
        l.modes[0].instruction_share = l.modes[0].m4_instructions as f64 / total.max(1) as f64;
    }
    rows
}

impl Report {
    /// The page: one self-contained HTML document (see the crate docs).
    pub fn to_html(&self) -> String {
        html::render(self)
    }

    /// The `--json` form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    /// Reads the `--json` form back.
    pub fn from_json(text: &str) -> Result<Report, ReportError> {
        Ok(serde_json::from_str(text)?)
    }
}
