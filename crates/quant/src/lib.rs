//! lutq's quantizer: from an optimized float graph and calibration data to the integer IR
//! (`lutq_ir::int`).
//!
//! [`quantize`] lowers the graph node by node, in schedule order, while the float model
//! runs node by node in step with it (one float pass over the calibration set):
//!
//! 1. **Float statistics** ([`calib`]): as each float node runs on every sample, its
//!    values go into a log-spaced histogram (activation exponents are chosen from it by
//!    least quantization MSE), and each linear layer's per-channel output mean before its
//!    activation is kept (the target of bias correction).
//! 2. **Layer by layer** ([`lower`]): every lowered node is run on the whole calibration
//!    set with the golden integer kernels
//!    (`lutq_interp::int`), so each layer is fitted on the activations of the *already
//!    quantized* network upstream of it: its input second moment `H = Σ x xᵀ` drives the
//!    weight fit ([`fit`]), and its bias is corrected so that its mean output matches the
//!    float model's.
//!
//! The numeric contract is the design brief's; `docs/quantization.md` documents the
//! algorithm and its objective.

pub mod budget;
pub mod calib;
pub mod checks;
mod elementwise;
pub mod fit;
mod hessian;
mod lower;
pub mod reconstruct;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// The LUT modes' number of tables per layer where more do not fit the flash share
/// below (`QuantOptions::lut_tables`, `--lut-tables`). Measured with 64 calibration
/// images on photos or samples the calibration never saw (docs/quantization.md, "Table
/// groups"): against one shared table (and the float-target rule of that time), 8 tables
/// gain 0.1–15 dB in 16 of 18 LUT-mode cells over ImageNet MobileNetV2,
/// EfficientNet-Lite0 and the 7 zoo models, and lose 0.2–0.35 dB in two, for 1–11 % more
/// flash; 4 tables gain less.
pub const DEFAULT_LUT_TABLES: usize = 8;

/// Table counts above [`DEFAULT_LUT_TABLES`] that a network takes by default when they
/// fit [`TABLE_FLASH_SHARE`], the most first ([`default_lut_tables`]). Mean of 4
/// calibration sets of 64 images, new photos (docs/quantization.md "Stop 41"):
/// EfficientNet-Lite0 8 → 16 → 32 tables 11.52 → 11.77 → 12.00 dB, MobileNetV2 10.28 →
/// 10.31 → 10.51.
pub const MORE_LUT_TABLES: [usize; 2] = [32, 16];

/// The largest share of the 4-bit codes' bytes that the tables of [`MORE_LUT_TABLES`]
/// may take. Why a share: a table costs 16 bytes whatever the layer's size, so on a
/// million-weight network 32 tables per layer cost about 1 % of the flash (MobileNetV2
/// 1.5 %, EfficientNet-Lite0 1.1 % at most), while on the MCU-sized ones (MLPerf Tiny,
/// the Fashion nets: 2–44 %) they would take the flash 4 bits saved, and on the
/// Cortex-M4 their pair tables do not fit a small arena's scratch (the kernel then
/// decodes in the loop, about 0.28 more instructions per MAC).
pub const TABLE_FLASH_SHARE: f64 = 0.02;

/// The tables per layer that [`QuantOptions::lut_tables`] `None` stands for: the most of
/// [`MORE_LUT_TABLES`] whose tables (`min(count, rows) × 16` bytes per linear layer) take
/// at most [`TABLE_FLASH_SHARE`] of all linear layers' 4-bit codes, else
/// [`DEFAULT_LUT_TABLES`].
pub fn default_lut_tables(graph: &Graph) -> usize {
    let shapes = lower::linear_shapes(graph);
    let code_bytes: f64 = shapes
        .iter()
        .map(|&(rows, k)| (rows * k) as f64 / 2.0)
        .sum();
    MORE_LUT_TABLES
        .into_iter()
        .find(|&count| {
            let table_bytes: usize = shapes.iter().map(|&(rows, _)| count.min(rows) * 16).sum();
            table_bytes as f64 <= TABLE_FLASH_SHARE * code_bytes
        })
        .unwrap_or(DEFAULT_LUT_TABLES)
}

/// Whether a layer of `rows` output channels and `k` weights per channel takes at least as
/// many bytes of weights with 4-bit codes into up to `tables` tables as with int8 weights:
/// codes `rows · ⌈k/2⌉` (each row starts on a byte), `min(tables, rows)` tables of 16
/// bytes, and with more than one table a byte per row for its table index, against
/// `rows · k`. Biases and shifts are the same in both. Decided before the fit, by the
/// format's table allowance: the fit may use fewer distinct tables (or, with constant
/// channels' own tables, one or two more).
pub fn lut4_not_smaller(rows: usize, k: usize, tables: usize) -> bool {
    lut4_weight_bytes(rows, k, tables) >= rows * k
}

/// The bytes 4-bit weights of `rows × k` take with `tables` tables (see
/// [`lut4_not_smaller`]; the C backend stores each distinct table once).
pub fn lut4_weight_bytes(rows: usize, k: usize, tables: usize) -> usize {
    let tables = tables.clamp(1, rows.max(1));
    let index = if tables > 1 { rows } else { 0 };
    rows * k.div_ceil(2) + tables * 16 + index
}

pub use lower::trained::{
    DerivedMode, ModeContradiction, TrainedLayer, TrainedQuantization, trained_quantization,
};
pub use lower::{
    CalibratedInput, IntegerForms, LayerReport, QuantReport, StageSeconds, integer_forms,
    linear_weights,
};

use fit::{ScaleKind, WeightFormat};
use lutq_ir::int::IntGraph;
use lutq_ir::{Graph, Tensor};

/// A weight quantization mode (`--mode`); see the table in the design brief.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Mode {
    Fp32,
    Int8Pc,
    Int4Pc,
    Int8PotChannel,
    Int4PotLayer,
    Int4PotChannel,
    Lut4PotLayer,
    Lut4PotChannel,
}

impl Mode {
    pub const ALL: [Mode; 8] = [
        Mode::Fp32,
        Mode::Int8Pc,
        Mode::Int4Pc,
        Mode::Int8PotChannel,
        Mode::Int4PotLayer,
        Mode::Int4PotChannel,
        Mode::Lut4PotLayer,
        Mode::Lut4PotChannel,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Fp32 => "fp32",
            Mode::Int8Pc => "int8-pc",
            Mode::Int4Pc => "int4-pc",
            Mode::Int8PotChannel => "int8-pot-channel",
            Mode::Int4PotLayer => "int4-pot-layer",
            Mode::Int4PotChannel => "int4-pot-channel",
            Mode::Lut4PotLayer => "lut4-pot-layer",
            Mode::Lut4PotChannel => "lut4-pot-channel",
        }
    }

    /// The weight grid and scale of this mode; `None` for `fp32`.
    pub fn weights(self) -> Option<(WeightFormat, ScaleKind)> {
        const INT8: WeightFormat = WeightFormat::Uniform {
            min: -128,
            max: 127,
        };
        // Symmetric like TFLite's int8 weights: -128 is never used.
        const INT8_SYM: WeightFormat = WeightFormat::Uniform {
            min: -127,
            max: 127,
        };
        const INT4: WeightFormat = WeightFormat::Uniform { min: -8, max: 7 };
        Some(match self {
            Mode::Fp32 => return None,
            Mode::Int8Pc => (INT8_SYM, ScaleKind::FloatChannel),
            Mode::Int4Pc => (INT4, ScaleKind::FloatChannel),
            Mode::Int8PotChannel => (INT8, ScaleKind::PotChannel),
            Mode::Int4PotLayer => (INT4, ScaleKind::PotLayer),
            Mode::Int4PotChannel => (INT4, ScaleKind::PotChannel),
            Mode::Lut4PotLayer => (WeightFormat::Lut4, ScaleKind::PotLayer),
            Mode::Lut4PotChannel => (WeightFormat::Lut4, ScaleKind::PotChannel),
        })
    }

    /// Whether requantization uses only shifts (every mode but the `*-pc` baselines).
    pub fn shift_only(self) -> bool {
        !matches!(self, Mode::Int8Pc | Mode::Int4Pc)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
                format!("unknown mode '{s}'; modes: {}", names.join(", "))
            })
    }
}

/// A linear layer's weight format under mixed precision (`QuantOptions::formats`,
/// chosen per layer by `--flash-budget`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum LayerFormat {
    /// 4-bit codes into one 16-entry table for the layer, the mode's exponents: the
    /// fewest bytes a 4-bit layer takes (the paper's format).
    Lut4,
    /// 4-bit codes into up to `QuantOptions::lut_tables` tables, each shared by a group
    /// of output channels (the LUT modes' default; the same as `Lut4` with one table).
    Lut4Groups,
    /// 4-bit codes into one table per output channel (16 more bytes per channel).
    Lut4PerChannel,
    /// int8 weights with per-channel power-of-two exponents.
    Int8,
}

impl LayerFormat {
    /// In order of bytes (for layers of more than 16 weights per channel).
    pub const ALL: [LayerFormat; 4] = [
        LayerFormat::Lut4,
        LayerFormat::Lut4Groups,
        LayerFormat::Lut4PerChannel,
        LayerFormat::Int8,
    ];

    /// As `LayerReport::weights` names it.
    pub fn name(self) -> &'static str {
        match self {
            LayerFormat::Lut4 => "lut4",
            LayerFormat::Lut4Groups => "lut4/groups",
            LayerFormat::Lut4PerChannel => "lut4/ch",
            LayerFormat::Int8 => "int8",
        }
    }

    /// The grid and scale: LUT formats keep the mode's `scale`; int8 is per channel.
    /// `lut_tables`: the table groups `Lut4Groups` stands for.
    pub fn weights(self, scale: ScaleKind, lut_tables: usize) -> (WeightFormat, ScaleKind) {
        match self {
            LayerFormat::Lut4 => (WeightFormat::Lut4, scale),
            LayerFormat::Lut4Groups if lut_tables > 1 => {
                (WeightFormat::Lut4Groups(lut_tables), scale)
            }
            LayerFormat::Lut4Groups => (WeightFormat::Lut4, scale),
            LayerFormat::Lut4PerChannel => (WeightFormat::Lut4PerChannel, scale),
            LayerFormat::Int8 => (
                WeightFormat::Uniform {
                    min: -128,
                    max: 127,
                },
                ScaleKind::PotChannel,
            ),
        }
    }
}

/// Options of [`quantize`].
#[derive(Clone, Debug)]
pub struct QuantOptions {
    pub mode: Mode,
    /// GPTQ code assignment and exponent choice by output error (else round to nearest
    /// and plain k-means). On by default: without it 4-bit modes lose points.
    pub data_aware: bool,
    /// Correct each layer's bias so its mean output on the calibration set matches the
    /// float model's.
    pub bias_correction: bool,
    /// Linear layers kept at int8 weights with per-channel power-of-two exponents
    /// whatever the mode (mixed precision): node names, `first` (the first linear layer)
    /// and `depthwise` (every depthwise conv). Depthwise convs and the first layer hold
    /// few of a CNN's weights but suffer most from 4 bits.
    pub keep_8bit: Vec<String>,
    /// LUT modes: one 16-entry table per output channel instead of one per layer
    /// (16 more bytes of flash per channel; each channel's table spans its own range at
    /// full 8-bit resolution).
    pub lut_per_channel: bool,
    /// LUT modes without `lut_per_channel`: a layer whose 4-bit weights would take at
    /// least as many bytes as int8 weights ([`lut4_not_smaller`]) gets int8 weights
    /// (per-channel power-of-two, as `keep_8bit`): 4 bits save no flash there, and 8
    /// bits fit closer. Only small layers: stems of 27-weight rows, 3 × 3 depthwise convs
    /// of up to 170 channels at 32 tables (46 at 8).
    pub int8_where_smaller: bool,
    /// LUT modes without `lut_per_channel`: up to this many 16-entry tables per layer,
    /// each output channel reading one (`WeightFormat::Lut4Groups`; a byte of flash per
    /// channel for the index, 16 per table). 1: one shared table. `None` (the default):
    /// [`default_lut_tables`] of the graph, 8 or more by the flash the tables take.
    pub lut_tables: Option<usize>,
    /// With `data_aware`: fit each layer's weights so that, on the *quantized* input, they
    /// reproduce the float model's output on the float input (`W x ≈ Ŵ x̂`), compensating
    /// the error of the layers upstream, instead of fitting the float weights on the
    /// quantized input (`fit::float_target_rows`). Costs one float pass over the
    /// calibration set and a cross moment per layer; layers with fewer than
    /// `fit::TARGET_MIN_PATCHES_PER_INPUT` sampled patches per input keep the float
    /// weights as the target.
    pub float_target: bool,
    /// Most input patches per layer that enter `H = Σ x xᵀ` (sampled evenly over the
    /// calibration set); bias correction always uses every position.
    pub max_patches: usize,
    /// Per linear layer (node name): its weight format, overriding the mode and
    /// `lut_per_channel` (a `--flash-budget` plan). `keep_8bit` still wins.
    pub formats: HashMap<String, LayerFormat>,
    /// The sensitivity pass of `--flash-budget` ([`sensitivity_pass`] sets it): every
    /// linear layer is emitted at int8 and also fitted in every [`LayerFormat`].
    pub sensitivity: bool,
    /// Reconstruction after each linear layer's fast fit (`reconstruct` module,
    /// `--reconstruct`): soft rounding, tables and biases learned by gradient steps on
    /// the calibration set against the float model's output after the activation; kept
    /// per layer only where it lowers the held-out error. `None`: the fast fit alone.
    pub reconstruct: Option<reconstruct::ReconstructOptions>,
}

impl QuantOptions {
    pub fn new(mode: Mode) -> Self {
        QuantOptions {
            mode,
            data_aware: true,
            bias_correction: true,
            keep_8bit: Vec::new(),
            lut_per_channel: false,
            int8_where_smaller: true,
            lut_tables: None,
            float_target: true,
            max_patches: 16_384,
            formats: HashMap::new(),
            sensitivity: false,
            reconstruct: None,
        }
    }
}

/// Errors of [`quantize`]. Model problems name the node and say how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// Ops the integer IR cannot express, all of them at once.
    #[error("the model cannot be quantized:\n  {}", .0.join("\n  "))]
    Unsupported(Vec<String>),
    #[error("calibration: {0}")]
    Calibration(String),
    /// A NaN or infinite value in the calibration data (a user data error). The CLI
    /// names the file: `calibration data 'calib.npy': sample 3, element 1027 (…) is NaN`.
    #[error("calibration data: {0}")]
    NonFinite(checks::NonFiniteValue),
    #[error("fp32 is the float model itself: there is nothing to quantize (use the float backend)")]
    Fp32,
    #[error(transparent)]
    Check(#[from] lutq_ir::int::IntCheckError),
    #[error(transparent)]
    Interp(#[from] lutq_interp::InterpError),
    #[error("internal error (lutq bug): {0}")]
    Ir(#[from] lutq_ir::IrError),
}

/// Progress of [`quantize`]: which stage, how far.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    /// Float statistics: samples done of total.
    Calibrating { done: usize, total: usize },
    /// Lowering: nodes done of total, the current one.
    Lowering {
        done: usize,
        total: usize,
        node: &'a str,
    },
}

/// Quantizes the optimized float `graph` (batch 1, one input) on the calibration samples
/// `calib` (`[N, …]`, each sample of the graph input's shape).
pub fn quantize(
    graph: &Graph,
    calib: &Tensor,
    options: &QuantOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<(IntGraph, QuantReport), QuantError> {
    if options.mode == Mode::Fp32 {
        return Err(QuantError::Fp32);
    }
    lower::check_supported(graph)?;
    checks::check_finite(graph, calib)?;
    let warnings = checks::input_warnings(graph, calib);
    // A QDQ model with power-of-two grids carries its trained weights and exponents:
    // encode them as they are instead of refitting them to the calibration data.
    let trained = lower::trained::trained_grids(graph).is_ok_and(|g| !g.is_empty());
    let options = &if trained {
        QuantOptions {
            data_aware: false,
            bias_correction: false,
            float_target: false,
            ..options.clone()
        }
    } else {
        options.clone()
    };
    let (int_graph, mut report, _) = lower::lower(graph, calib, options, progress)?;
    // Warnings about the calibration data (few samples, constant values) matter only
    // where it chose something: a fully paired QDQ model's program does not depend on it.
    if !(trained && report.calibrated_without_pair.is_empty()) {
        report.warnings.splice(0..0, warnings);
    }
    Ok((int_graph, report))
}

/// The sensitivity pass of a flash budget (`budget` module): quantizes `graph` with every
/// linear layer at int8 (per-channel power-of-two; layers of `keep_8bit` too) and returns,
/// besides that all-int8 program, each linear layer's fit in every [`LayerFormat`] on the
/// same statistics (`keep_8bit` layers: int8 only). `options.mode` gives the 4-bit
/// formats' scale (`lut4-pot-layer`: one exponent per layer, else per channel).
pub fn sensitivity_pass(
    graph: &Graph,
    calib: &Tensor,
    options: &QuantOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<(IntGraph, QuantReport, Vec<budget::LayerCandidates>), QuantError> {
    if options.mode == Mode::Fp32 {
        return Err(QuantError::Fp32);
    }
    lower::check_supported(graph)?;
    checks::check_finite(graph, calib)?;
    let options = QuantOptions {
        sensitivity: true,
        ..options.clone()
    };
    lower::lower(graph, calib, &options, progress)
}
