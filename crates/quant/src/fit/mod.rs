//! Fitting one linear layer's weights to a quantized format: the exponents, the 16-entry
//! LUT and the code of every weight (or the uniform integer levels).
//!
//! The objective is the layer's *output* error on calibration data. For the rows `o` of
//! group `g` (output channels that read the same inputs), with `H_g = Σ_p x_p x_pᵀ` the
//! second moment of the layer's input patches (im2col rows, real units):
//!
//! ```text
//! E = Σ_o (w_o − ŵ_o)ᵀ H_g(o) (w_o − ŵ_o)
//! ```
//!
//! which is `Σ_p ‖(W − Ŵ) x_p‖²`, the squared error the quantized weights add to the
//! layer's output over the calibration patches.
//!
//! See `docs/quantization.md` ("Weight fitting") for the algorithm. In short:
//! max-fitting power-of-two exponents ([`max_fit_exponent`]), a weighted k-means table on
//! the int8 grid ([`kmeans_lut`]), and with `data_aware` GPTQ code assignment
//! ([`GptqFactor`]), least-squares refits of the table, and exponents `e ± 1`, each
//! candidate scored by `E` itself.
//!
//! Files: `exponent.rs` (exponents), `kmeans.rs` (the table), `gptq.rs` (codes),
//! `refit.rs` (table given codes), `problem.rs` (passes over the rows: rounding, `E`,
//! normal equations), `search.rs` (which candidates are tried and kept), `channel.rs`
//! (one table per output channel, or per group of them), `groups.rs` (which rows share a
//! table), `linalg.rs`.

mod channel;
mod dead;
mod exponent;
mod gptq;
mod groups;
mod kmeans;
mod linalg;
mod problem;
mod refit;
mod search;
mod target;

pub use dead::constant_rows;
pub(crate) use dead::requantize_row;
pub use exponent::{EXP_LIMIT, max_fit_exponent};
pub use gptq::{DAMP, GptqFactor};
pub use kmeans::{KMeans, LUT_SIZE, kmeans_lut};
pub use target::{
    TARGET_DAMP, TARGET_MIN_PATCHES_PER_INPUT, TARGET_RIDGES, TargetChoice, TargetMoments,
    choose_float_target, cross_times_rows, float_target_rows, float_target_rows_damped,
    held_out_samples,
};

/// One layer's fitting problem.
pub struct LayerProblem<'a> {
    /// Float weights, `rows × row_len`, row-major (row = output channel).
    pub weights: &'a [f32],
    pub rows: usize,
    pub row_len: usize,
    /// Rows are split into `hessians.len()` equal consecutive groups; group `g` uses
    /// `hessians[g]`, a `row_len × row_len` row-major matrix `Σ x xᵀ` over the layer's
    /// calibration input patches. An empty slice means "no data": the objective becomes
    /// plain weight MSE (`H = I`).
    pub hessians: &'a [Vec<f64>],
}

/// The integer grid the weights live on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// 4-bit codes into one 16-entry int8 table per layer.
    Lut4,
    /// 4-bit codes into one 16-entry int8 table per output channel (16 bytes of flash
    /// per channel). Best with `ScaleKind::PotChannel`; `PotLayer` (one exponent, a table
    /// per row) and `FloatChannel` are accepted too.
    Lut4PerChannel,
    /// 4-bit codes into up to this many 16-entry int8 tables per layer, each output
    /// channel reading one (table groups: rows of a similar shape share a table, which
    /// costs a byte per channel for the index instead of 16 for a table of its own).
    Lut4Groups(usize),
    /// Uniform integer levels `min..=max` (int8: -128..=127, int4: -8..=7).
    /// Precondition: `-128 <= min <= 0 <= max <= 127`.
    Uniform { min: i32, max: i32 },
}

impl WeightFormat {
    /// The integer range of the levels (`-128..=127` for the LUT formats).
    pub fn range(self) -> (i32, i32) {
        match self {
            WeightFormat::Lut4 | WeightFormat::Lut4PerChannel | WeightFormat::Lut4Groups(_) => {
                (-128, 127)
            }
            WeightFormat::Uniform { min, max } => (min, max),
        }
    }

    /// Whether the weights are 4-bit codes into tables (`Lut4`, `Lut4PerChannel`).
    pub fn is_lut(self) -> bool {
        matches!(
            self,
            WeightFormat::Lut4 | WeightFormat::Lut4PerChannel | WeightFormat::Lut4Groups(_)
        )
    }
}

/// How integer levels map to real weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleKind {
    /// One power of two `2^-exp` for the whole layer.
    PotLayer,
    /// One power of two per output channel.
    PotChannel,
    /// One float scale per output channel (the `*-pc` baselines).
    FloatChannel,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitOptions {
    pub format: WeightFormat,
    pub scale: ScaleKind,
    /// GPTQ-style code assignment and exponent choice by output error `E`; without it,
    /// round-to-nearest (and plain weighted k-means for LUTs) with max-fitting exponents.
    pub data_aware: bool,
}

/// A row's scale: real weight = level · scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RowScale {
    /// `2^-exp`.
    Pot(i32),
    Float(f64),
}

impl RowScale {
    pub fn value(self) -> f64 {
        match self {
            RowScale::Pot(e) => (-(e as f64)).exp2(),
            RowScale::Float(s) => s,
        }
    }
}

/// The fitted layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Fitted {
    /// Integer weight of every element, `rows × row_len` (for the LUT formats,
    /// `luts[o][code]`, or `luts[0][code]` with one shared table).
    pub levels: Vec<i8>,
    /// LUT formats only: the code (0..16) of every element, `rows × row_len`.
    pub codes: Option<Vec<u8>>,
    /// LUT formats only: the first table (`luts[0]`), kept for callers of the shared
    /// table.
    pub lut: Option<[i8; 16]>,
    /// The tables, each sorted ascending: one for `Lut4`, one per row for
    /// `Lut4PerChannel`, none for uniform grids.
    pub luts: Vec<[i8; 16]>,
    /// Per row.
    pub scales: Vec<RowScale>,
    /// The objective `E` of the result (with `H = I` when there is no data).
    pub output_error: f64,
}

impl Fitted {
    /// The real weights the result stands for, `rows × row_len`.
    pub fn dequantized(&self, row_len: usize) -> Vec<f32> {
        self.levels
            .iter()
            .enumerate()
            .map(|(i, &l)| (l as f64 * self.scales[i / row_len].value()) as f32)
            .collect()
    }
}

/// Fits `problem` in the given format. Never fails on finite weights: all-zero rows get
/// level 0 in every format (a LUT they read gets an entry 0, see `dead.rs`) and a neutral
/// scale (`Float(1)`, or with `PotChannel` the layer's max-fitting
/// exponent, which every row whose levels all came out zero also gets, so that no
/// meaningless exponent reaches the shift computation; with `PotLayer` all rows keep the
/// one layer exponent).
///
/// `Lut4PerChannel` fits one table per row (see `channel.rs`); its output error is never
/// higher than `Lut4`'s with the same scale kind and `data_aware`, row by row.
///
/// `FloatChannel` with `Lut4` is accepted (scale `max|w_o| / 127`, table fitted as for
/// `PotChannel`) although no mode uses it.
///
/// Preconditions (asserted): `weights.len() == rows · row_len`; with hessians,
/// `rows % hessians.len() == 0` and each is `row_len²` long; uniform grids satisfy
/// `-128 <= min <= 0 <= max <= 127`. Weights must be finite.
pub fn fit_layer(problem: &LayerProblem<'_>, options: &FitOptions) -> Fitted {
    let prep = problem::Prep::new(problem);
    if let WeightFormat::Uniform { min, max } = options.format {
        assert!(
            (-128..=0).contains(&min) && (0..=127).contains(&max),
            "uniform grid {min}..={max} must contain 0 and fit in i8"
        );
    }
    if prep.rows == 0 || prep.k == 0 {
        let (lo, hi) = options.format.range();
        let scales = search::initial_scales(&prep, options.scale, lo, hi);
        let lut = options.format.is_lut().then(|| kmeans_lut(&[], &[]).lut);
        let luts = match (options.format, lut) {
            (WeightFormat::Lut4PerChannel | WeightFormat::Lut4Groups(_), Some(l)) => {
                vec![l; prep.rows]
            }
            (_, Some(l)) => vec![l],
            _ => Vec::new(),
        };
        return Fitted {
            levels: vec![0; prep.rows * prep.k],
            codes: lut.map(|_| vec![0; prep.rows * prep.k]),
            lut,
            luts,
            scales,
            output_error: 0.0,
        };
    }
    let mut fitted = match options.format {
        WeightFormat::Uniform { min, max } => search::fit_uniform(&prep, min, max, options),
        WeightFormat::Lut4 => search::fit_lut(&prep, options),
        WeightFormat::Lut4PerChannel | WeightFormat::Lut4Groups(_) => {
            channel::fit_lut_per_channel(&prep, options)
        }
    };
    // All-zero rows (constant channels) must come out as exact zeros in every format.
    dead::zero_constant_rows(&prep, options.format, options.scale, &mut fitted);
    fitted
}

/// The objective `E` of arbitrary levels and row scales on `problem` (the same function
/// [`fit_layer`] reports as `output_error`): `Σ_o (w_o − ŵ_o)ᵀ H_g(o) (w_o − ŵ_o)` with
/// `ŵ_o = levels_o · scale_o`, `H = I` without hessians.
pub fn output_error(problem: &LayerProblem<'_>, levels: &[i8], scales: &[RowScale]) -> f64 {
    let prep = problem::Prep::new(problem);
    assert_eq!(levels.len(), problem.weights.len(), "one level per weight");
    assert_eq!(scales.len(), problem.rows, "one scale per row");
    problem::row_errors(&prep, levels, &problem::values(scales))
        .iter()
        .sum()
}
