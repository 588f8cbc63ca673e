//! The integer IR: what the quantizer produces and every integer backend consumes.
//!
//! An [`IntGraph`] is a straight-line program: its nodes are stored in execution order
//! and every node's inputs are earlier nodes ([`ValueId`] = position). Backends need a
//! fixed schedule anyway (the memory planner assigns offsets along it), and the float
//! graph's canonical order already gives one, so the integer IR keeps that order instead
//! of rediscovering it.
//!
//! Every value is an integer tensor ([`QType`]): 8-bit (`i8`/`u8`) between ops, `i32`
//! only where the last linear layer emits its accumulator. A value's real meaning is
//! `q · 2^-exp`. The arithmetic of every op is the numeric contract of the design brief;
//! [`rshift_round`] is its one rounding rule, defined here so that every backend and the
//! golden interpreter link the same definition.
//!
//! Shapes keep the float graph's batch dimension, which is always 1 (an integer program
//! runs one sample; callers loop over samples).

mod check;
mod print;

use serde::{Deserialize, Serialize};

use crate::op::Pool;

pub use check::{
    AccumulatorBound, IntCheckError, accumulator_bound, channel_bound, input_magnitude,
    transpose_sources, transposed_shape,
};

/// Element type of an integer tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IntElem {
    I8,
    U8,
    I32,
}

impl IntElem {
    /// The representable range.
    pub fn range(self) -> (i32, i32) {
        match self {
            IntElem::I8 => (-128, 127),
            IntElem::U8 => (0, 255),
            IntElem::I32 => (i32::MIN, i32::MAX),
        }
    }

    pub fn size_bytes(self) -> usize {
        match self {
            IntElem::I8 | IntElem::U8 => 1,
            IntElem::I32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            IntElem::I8 => "i8",
            IntElem::U8 => "u8",
            IntElem::I32 => "i32",
        }
    }
}

/// Type of an integer value: element type, static shape (batch dimension 1 included) and
/// exponent: the real value of element `q` is `q · 2^-exp`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QType {
    pub elem: IntElem,
    pub shape: Vec<usize>,
    pub exp: i32,
}

impl QType {
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn size_bytes(&self) -> usize {
        self.num_elements() * self.elem.size_bytes()
    }

    /// `2^-exp`, the real value of one step.
    pub fn step(&self) -> f64 {
        (-(self.exp as f64)).exp2()
    }
}

/// Index of a node (and of the value it produces) in [`IntGraph::nodes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ValueId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// `rshift_round(a, s)`: `(a + 2^(s-1)) >> s` for `s > 0` (arithmetic shift, ties toward
/// +∞), `a` for `s = 0`, `a << -s` for `s < 0`. Computed in i64 so that callers choose
/// how to saturate; the planner proves that results of accumulators fit i32.
#[inline]
pub fn rshift_round(a: i64, s: i32) -> i64 {
    if s > 0 {
        if s >= 63 {
            // (a + 2^62) >> 63 is 0 for every |a| < 2^62, far beyond any accumulator.
            return 0;
        }
        (a + (1i64 << (s - 1))) >> s
    } else if s == 0 {
        a
    } else {
        a << (-s).min(62)
    }
}

/// `rshift_round` with ties to the even result (what ONNX `QuantizeLinear` does):
/// `(a + 2^(s-1) − 1 + ((a >> s) & 1)) >> s` for `s > 0` — the low bits `r` of `a` round
/// up when `r > 2^(s-1)`, or when `r = 2^(s-1)` and `a >> s` is odd — and the same as
/// [`rshift_round`] for `s ≤ 0`. Its intermediate never exceeds `rshift_round`'s.
#[inline]
pub fn rshift_round_even(a: i64, s: i32) -> i64 {
    if s > 0 {
        if s >= 63 {
            return 0;
        }
        (a + (1i64 << (s - 1)) - 1 + ((a >> s) & 1)) >> s
    } else {
        rshift_round(a, s)
    }
}

/// How a program's rounding right shifts break ties (an exact half), and how its
/// `QuantizeInput` rounds: one choice per program ([`IntGraph::rounding`]), obeyed by
/// every op and every backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Ties toward +∞ ([`rshift_round`]): the contract's default, one add and one shift.
    #[default]
    HalfUp,
    /// Ties to even ([`rshift_round_even`]): ONNX `QuantizeLinear`'s rounding, so that
    /// a QDQ model trained with power-of-two scales runs bit for bit as onnxruntime runs
    /// it. One more shift, and and add per rescale.
    HalfEven,
}

impl Rounding {
    /// `a · 2^-s` rounded to an integer with this rounding.
    #[inline]
    pub fn rshift(self, a: i64, s: i32) -> i64 {
        match self {
            Rounding::HalfUp => rshift_round(a, s),
            Rounding::HalfEven => rshift_round_even(a, s),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Rounding::HalfUp => "half_up",
            Rounding::HalfEven => "half_even",
        }
    }
}

/// `QuantizeInput`'s rounding: `clamp(floor(x · 2^exp + 0.5), lo, hi)`, exactly.
/// `x · 2^exp` is exact in f64 (a power of two times an f32) and so is adding 0.5 for
/// every `|x · 2^exp| < 2^52`, beyond which the clamp decides anyway. (In f32 the
/// addition would round: 0.49999997 + 0.5 is 1.0.) ±∞ saturate to `hi` / `lo`; NaN
/// quantizes as 0 (then clamped), like Rust's float → integer cast. Every backend's
/// float boundary (the C backend's `--float-io` helpers included) must match this.
/// With [`Rounding::HalfEven`], ties go to the even integer instead.
pub fn quantize_input(x: f32, exp: i32, lo: i32, hi: i32, rounding: Rounding) -> i32 {
    InputQuantizer::new(exp, lo, hi, rounding).apply(x)
}

/// [`quantize_input`] with `2^exp` computed once, for whole tensors.
#[derive(Clone, Copy, Debug)]
pub struct InputQuantizer {
    scale: f64,
    lo: i32,
    hi: i32,
    rounding: Rounding,
}

impl InputQuantizer {
    pub fn new(exp: i32, lo: i32, hi: i32, rounding: Rounding) -> Self {
        InputQuantizer {
            scale: (exp.clamp(-1074, 1023) as f64).exp2(),
            lo,
            hi,
            rounding,
        }
    }

    /// `clamp(floor(x · 2^exp + 0.5), lo, hi)`, exactly (see [`quantize_input`]), or
    /// with ties to even.
    #[inline]
    pub fn apply(&self, x: f32) -> i32 {
        let scaled = x as f64 * self.scale;
        if self.rounding == Rounding::HalfEven {
            // `as i64` saturates ±∞ and maps NaN to 0, as below.
            return clamp(scaled.round_ties_even() as i64, self.lo, self.hi);
        }
        let v = scaled + 0.5;
        // floor without a libm call (x86-64's baseline has no `roundsd`): truncate, then
        // step down where truncation went up, i.e. for negative non-integers. `as i64`
        // saturates ±∞ (and every |v| ≥ 2^63, already an integer) and maps NaN to 0.
        let t = v as i64;
        let t = if (t as f64) > v {
            t.saturating_sub(1)
        } else {
            t
        };
        clamp(t, self.lo, self.hi)
    }
}

/// Saturates `v` to `[lo, hi]`.
#[inline]
pub fn clamp(v: i64, lo: i32, hi: i32) -> i32 {
    v.clamp(lo as i64, hi as i64) as i32
}

/// How an i32 accumulator is brought to its output exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rescale {
    /// `rshift_round(acc, shift)`: the power-of-two modes. `shift` may be negative.
    Shift(i32),
    /// `rshift_round(acc · multiplier, 31 + shift)` in i64, `multiplier` in
    /// `[2^30, 2^31)`: a fixed-point multiplier for float scales (the `*-pc` baselines,
    /// TFLite style, with a single rounding). `31 + shift` is always positive.
    Multiplier { multiplier: i32, shift: i32 },
}

impl Rescale {
    /// Applies the rescale to `acc` (no clamping), rounding as the program does.
    #[inline]
    pub fn apply(self, acc: i64, rounding: Rounding) -> i64 {
        match self {
            Rescale::Shift(s) => rounding.rshift(acc, s),
            Rescale::Multiplier { multiplier, shift } => {
                rounding.rshift(acc * multiplier as i64, 31 + shift)
            }
        }
    }

    /// The real factor this rescale multiplies by.
    pub fn factor(self) -> f64 {
        match self {
            Rescale::Shift(s) => (-(s as f64)).exp2(),
            Rescale::Multiplier { multiplier, shift } => {
                multiplier as f64 * (-(31.0 + shift as f64)).exp2()
            }
        }
    }

    /// The fixed-point form of a positive real `factor`, or `None` when it is outside
    /// `[2^-32, 2^30)` (no real layer comes near either end).
    pub fn from_factor(factor: f64) -> Option<Rescale> {
        if !(factor.is_finite() && factor > 0.0) {
            return None;
        }
        // factor ≈ m · 2^-(30-e) with factor in [2^e, 2^(e+1)), m in [2^30, 2^31).
        let mut e = factor.log2().floor() as i32;
        let mut m = (factor * f64::from(30 - e).exp2()).round();
        if m >= 2f64.powi(31) {
            m /= 2.0;
            e += 1;
        }
        if !(-32..30).contains(&e) {
            return None;
        }
        Some(Rescale::Multiplier {
            multiplier: m as i32,
            shift: -1 - e,
        })
    }
}

/// Convolution geometry (NCHW, same meaning as the float IR's `Conv`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvGeom {
    pub strides: [usize; 2],
    /// top, left, bottom, right.
    pub pads: [usize; 4],
    pub dilations: [usize; 2],
    pub group: usize,
}

/// The weights of a linear layer, logically `[O, I/group, kH, kW]` (a dense layer is
/// `[O, K, 1, 1]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QWeights {
    /// 4-bit codes into 16-entry int8 tables. `luts` holds one table for the layer, or
    /// one per output channel. Codes are packed two per byte, low nibble first, each
    /// output channel's row starting on a fresh byte (`row_bytes = ceil(K/2)`, K =
    /// `I/group · kH · kW`), elements in `[i][ky][kx]` order.
    Lut {
        shape: [usize; 4],
        luts: Vec<[i8; 16]>,
        codes: Vec<u8>,
    },
    /// Plain int8 weights, `[O][I/group][kH][kW]` row-major.
    Int8 { shape: [usize; 4], values: Vec<i8> },
}

impl QWeights {
    pub fn shape(&self) -> [usize; 4] {
        match self {
            QWeights::Lut { shape, .. } | QWeights::Int8 { shape, .. } => *shape,
        }
    }

    /// Elements per output channel (`I/group · kH · kW`).
    pub fn row_len(&self) -> usize {
        let [_, i, kh, kw] = self.shape();
        i * kh * kw
    }

    /// Packs codes (values 0..16, `[O][K]` row-major) into the `Lut` layout.
    pub fn pack_codes(rows: usize, row_len: usize, codes: &[u8]) -> Vec<u8> {
        assert_eq!(codes.len(), rows * row_len);
        let row_bytes = row_len.div_ceil(2);
        let mut packed = vec![0u8; rows * row_bytes];
        for o in 0..rows {
            for k in 0..row_len {
                let c = codes[o * row_len + k];
                debug_assert!(c < 16);
                packed[o * row_bytes + k / 2] |= (c & 15) << (4 * (k % 2));
            }
        }
        packed
    }

    /// The 4-bit code of element `k` of output channel `o` (`Lut` only).
    #[inline]
    pub fn code(codes: &[u8], row_len: usize, o: usize, k: usize) -> u8 {
        let b = codes[o * row_len.div_ceil(2) + k / 2];
        (b >> (4 * (k % 2))) & 15
    }

    /// The int8 weights, decoded: `[O][K]` row-major.
    pub fn decode(&self) -> Vec<i8> {
        let [o_n, ..] = self.shape();
        let k_n = self.row_len();
        match self {
            QWeights::Int8 { values, .. } => values.clone(),
            QWeights::Lut { luts, codes, .. } => {
                let mut out = Vec::with_capacity(o_n * k_n);
                for o in 0..o_n {
                    let lut = if luts.len() == 1 { &luts[0] } else { &luts[o] };
                    for k in 0..k_n {
                        out.push(lut[Self::code(codes, k_n, o, k) as usize]);
                    }
                }
                out
            }
        }
    }

    /// Bytes the weights occupy in flash (codes + tables as [`TableLayout`] stores them,
    /// or int8 values).
    pub fn size_bytes(&self) -> usize {
        match self {
            QWeights::Lut { codes, .. } => {
                codes.len() + self.table_layout().map_or(0, |t| t.size_bytes())
            }
            QWeights::Int8 { values, .. } => values.len(),
        }
    }

    /// How the tables of a `Lut` layer are stored (`None` for int8 weights).
    pub fn table_layout(&self) -> Option<TableLayout> {
        let QWeights::Lut { luts, .. } = self else {
            return None;
        };
        Some(TableLayout::of(luts))
    }
}

/// How a `Lut` layer's tables are stored: every table once, and where rows share
/// tables (table groups: a few tables per layer, each output channel reading one) an
/// index per row, when that takes fewer bytes than a table per row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableLayout {
    /// The tables, in order of first use.
    pub tables: Vec<[i8; 16]>,
    /// Per output channel, its table in `tables`; `None` when `tables` holds one table
    /// for the layer (also when every channel's table is the same) or one per output
    /// channel in order.
    pub row_table: Option<Vec<u8>>,
}

impl TableLayout {
    /// `luts`: one table, or one per output channel.
    pub fn of(luts: &[[i8; 16]]) -> TableLayout {
        let whole = TableLayout {
            tables: luts.to_vec(),
            row_table: None,
        };
        if luts.len() <= 1 {
            return whole;
        }
        // Every row reads the same table (a trained model with one table per layer and
        // per-channel exponents imports as equal per-row tables): one table, no index.
        if luts.iter().all(|l| l == &luts[0]) {
            return TableLayout {
                tables: vec![luts[0]],
                row_table: None,
            };
        }
        let mut tables: Vec<[i8; 16]> = Vec::new();
        // Table → its index: one lookup per row (a table per channel has `rows` of them).
        let mut index: std::collections::HashMap<[i8; 16], usize> = Default::default();
        let mut row_table = Vec::with_capacity(luts.len());
        for l in luts {
            let t = *index.entry(*l).or_insert_with(|| {
                tables.push(*l);
                tables.len() - 1
            });
            if t > u8::MAX as usize {
                return whole;
            }
            row_table.push(t as u8);
        }
        let indexed = TableLayout {
            tables,
            row_table: Some(row_table),
        };
        if indexed.size_bytes() < whole.size_bytes() {
            indexed
        } else {
            whole
        }
    }

    /// Bytes of the tables and the index.
    pub fn size_bytes(&self) -> usize {
        16 * self.tables.len() + self.row_table.as_ref().map_or(0, |r| r.len())
    }
}

/// A quantized Conv or dense (Gemm) layer:
/// `acc[o] = bias[o] + Σ x · w`, `y[o] = clamp(rescale[o](acc[o]), lo, hi)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QLinear {
    /// `None` for a dense layer: input `[1, K]`, output `[1, O]`.
    pub conv: Option<ConvGeom>,
    pub weights: QWeights,
    /// Per output channel, at exponent `f_x + f_w[o]`.
    pub bias: Vec<i32>,
    /// Per output channel.
    pub rescale: Vec<Rescale>,
    /// Output clamp (the type's range, tightened by a fused activation).
    pub lo: i32,
    pub hi: i32,
    /// Weight exponents `f_w[o]`, kept for dumps, checks and dequantization.
    pub weight_exps: Vec<i32>,
}

/// `y = clamp(rshift_round((a << align_a) + (b << align_b), shift), lo, hi)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QAdd {
    pub align_a: i32,
    pub align_b: i32,
    pub shift: i32,
    pub lo: i32,
    pub hi: i32,
}

/// An element-wise function of one 8-bit value, as 256-entry lookup tables (the
/// contract's table op): `y = table[t][x − min(x's type)]`, i.e. indexed by `x + 128`
/// for an `i8` input and by `x` for a `u8` one. `entries` holds one table (256 values,
/// for every element) or one per channel of axis 1 (`256 · C` values, channel `c`'s
/// table at `256 · c`). Every entry lies in the output type's range, so nothing is
/// clamped at run time. The quantizer builds the tables from the float function as
/// `T[q] = clamp(floor(f(q · 2^-f_x) · 2^f_y + 0.5), lo, hi)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QTable {
    pub entries: Vec<i32>,
}

impl QTable {
    /// Entries per table.
    pub const LEN: usize = 256;

    /// Number of tables (1, or one per channel).
    pub fn tables(&self) -> usize {
        self.entries.len() / Self::LEN
    }

    /// `T[x]` for an element of channel `channel` whose input type's minimum is `x_min`.
    #[inline]
    pub fn lookup(&self, channel: usize, x: i32, x_min: i32) -> i32 {
        let t = if self.tables() == 1 { 0 } else { channel };
        self.entries[t * Self::LEN + (x - x_min) as usize]
    }
}

/// The product of two 8-bit values (squeeze-and-excitation gating):
/// `y = clamp(rshift_round(a · b, shift), lo, hi)`, the product in i32 (at most
/// 255 · 255). `b` is broadcast over `a`'s trailing dimensions: its shape is a prefix of
/// `a`'s followed by ones (`[1, C, 1, 1]` against `[1, C, H, W]`), so element `i` of `a`
/// meets element `i / (len(a) / len(b))` of `b`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QMul {
    pub shift: i32,
    pub lo: i32,
    pub hi: i32,
}

/// One output coordinate of [`QResize`] along one axis: the two input indices it
/// blends and the weight of `hi` in units of `2^-frac` (`lo` weighs `2^frac − w_hi`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizeTap {
    pub lo: u32,
    pub hi: u32,
    pub w_hi: i32,
}

/// Spatial resize of every `[H, W]` plane of an `[N, C, H, W]` tensor, separable: output
/// `(oy, ox)` with row tap `r = rows[oy]` and column tap `c = cols[ox]` is
///
/// ```text
/// y = rshift_round( (2^f − r.w_hi) · ((2^f − c.w_hi) · x[r.lo][c.lo] + c.w_hi · x[r.lo][c.hi])
///                 +        r.w_hi  · ((2^f − c.w_hi) · x[r.hi][c.lo] + c.w_hi · x[r.hi][c.hi]),
///                   2·f )
/// ```
///
/// in i32 with `f = frac ≤ 8` (at most `2^16 · 255` before the shift). Nearest
/// neighbour is `frac = 0`, `w_hi = 0`: a copy of `x[r.lo][c.lo]`. The weights are
/// non-negative and sum to `2^(2f)`, so the result lies within the input's range: same
/// element type and exponent, no clamp.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QResize {
    /// One tap per output row.
    pub rows: Vec<ResizeTap>,
    /// One tap per output column.
    pub cols: Vec<ResizeTap>,
    pub frac: u32,
}

impl QResize {
    /// Most fraction bits of a weight (keeps the blend within i32 with headroom).
    pub const MAX_FRAC: u32 = 8;

    /// The integer form of a float resize of `[H, W] = in_hw` planes: the same taps, the
    /// weights in the fewest fraction bits that hold them exactly (bilinear ×2 with half
    /// pixels: 0.25 / 0.75, 2 bits), else rounded to [`Self::MAX_FRAC`] bits (an error
    /// of at most 2^-9 per weight, far below an 8-bit step).
    pub fn from_float(r: &crate::op::Resize, in_hw: [usize; 2]) -> QResize {
        let rows = r.axis_taps(0, in_hw[0]);
        let cols = r.axis_taps(1, in_hw[1]);
        let exact_in = |f: u32| {
            rows.iter().chain(&cols).all(|&(lo, hi, _, w_hi)| {
                let v = w_hi as f64 * (1u32 << f) as f64;
                lo == hi || (v - v.round()).abs() < 1e-6
            })
        };
        let frac = (0..=Self::MAX_FRAC)
            .find(|&f| exact_in(f))
            .unwrap_or(Self::MAX_FRAC);
        let taps = |t: &[(usize, usize, f32, f32)]| -> Vec<ResizeTap> {
            t.iter()
                .map(|&(lo, hi, _, w_hi)| ResizeTap {
                    lo: lo as u32,
                    hi: hi as u32,
                    // Equal neighbours blend to the same pixel: weight 0 keeps the form
                    // of nearest neighbour.
                    w_hi: if lo == hi {
                        0
                    } else {
                        (w_hi as f64 * (1u32 << frac) as f64).round() as i32
                    },
                })
                .collect()
        };
        QResize {
            rows: taps(&rows),
            cols: taps(&cols),
            frac,
        }
    }

    /// The op's definition for one output element of a plane `x` of width `w`.
    #[inline]
    pub fn blend(&self, x: &[i32], w: usize, oy: usize, ox: usize, rounding: Rounding) -> i32 {
        let (r, c) = (self.rows[oy], self.cols[ox]);
        let one = 1i32 << self.frac;
        let at = |y: u32, xx: u32| x[y as usize * w + xx as usize];
        let row = |y: u32| (one - c.w_hi) * at(y, c.lo) + c.w_hi * at(y, c.hi);
        let sum = (one - r.w_hi) * row(r.lo) + r.w_hi * row(r.hi);
        rounding.rshift(sum as i64, 2 * self.frac as i32) as i32
    }
}

/// Whether [`IntOp::Extremum`] takes the maximum or the minimum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Extremum {
    Max,
    Min,
}

/// Softmax along `axis` of an 8-bit value, integer only; output `u8` with exponent 8.
/// For each row (the `n` elements along `axis`, others fixed):
///
/// ```text
/// m    = max_i x_i
/// e_i  = exp_table[m − x_i]                  (m − x_i in 0..=255)
/// s    = Σ_i e_i                             (i32)
/// y_i  = min(255, (e_i · 256 + s / 2) / s)   (operands ≥ 0: / is floor division)
/// ```
///
/// `exp_table[d] = round(2^16 · exp(−d · 2^-f_x))`: 256 entries in `0..=2^16`,
/// `exp_table[0] ≥ 1` (so `s ≥ 1`), and `n ≤ 2^14` so that `e_i · 256 + s / 2` fits
/// i32. This is the one integer division of the contract; a probability of 1 saturates
/// to 255 (0.996).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QSoftmax {
    pub axis: usize,
    pub exp_table: Vec<i32>,
}

impl QSoftmax {
    /// Largest table entry (`2^16`: the probability weight of the row's maximum).
    pub const ONE: i32 = 1 << 16;
    /// Most elements along the axis (keeps `e · 256 + s / 2` within i32).
    pub const MAX_ROW: usize = 1 << 14;
    /// The output exponent.
    pub const OUT_EXP: i32 = 8;

    /// The op's definition on one row of codes (the golden arithmetic every backend
    /// reproduces).
    pub fn row(&self, x: &[i32]) -> Vec<i32> {
        let m = x.iter().copied().max().unwrap_or(0);
        let e: Vec<i32> = x
            .iter()
            .map(|&v| self.exp_table[(m - v).clamp(0, 255) as usize])
            .collect();
        // i64 so that an unvalidated op cannot overflow here; within the validated
        // bounds every intermediate fits i32, as the backends compute it.
        let s: i64 = e.iter().map(|&v| v as i64).sum::<i64>().max(1);
        e.iter()
            .map(|&v| ((v as i64 * 256 + s / 2) / s).min(255) as i32)
            .collect()
    }
}

/// An integer op. Inputs per variant in slot order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntOp {
    /// Graph input `input` (f32) quantized: `clamp(floor(x · 2^exp + 0.5), lo, hi)` with
    /// the output type's exponent and range. No inputs.
    QuantizeInput { input: usize },
    /// Inputs: x.
    Linear(QLinear),
    /// Residual add. Inputs: a, b (same shape).
    Add(QAdd),
    /// Inputs: one or more; each is `clamp(rshift_round(x, shifts[i]))` to the output.
    Concat { axis: usize, shifts: Vec<i32> },
    /// Max over each window; padding never wins. Output type = input type. Inputs: x.
    MaxPool(Pool),
    /// Sum over each window in i32 (taps outside the input count 0), then
    /// `clamp(rshift_round(sum, shift), lo, hi)`. A global sum-pool is a window of the
    /// whole plane. Inputs: x.
    SumPool {
        pool: Pool,
        shift: i32,
        lo: i32,
        hi: i32,
    },
    /// `clamp(rescale(x), lo, hi)`: exponent or type change, or a standalone clamp
    /// (an activation that could not be fused). Inputs: x.
    Requant { rescale: Rescale, lo: i32, hi: i32 },
    /// Same elements, new shape. Inputs: x.
    Reshape,
    /// Element-wise lookup tables ([`QTable`]). Inputs: x (8-bit).
    Table(QTable),
    /// Product of two activations, `b` broadcast ([`QMul`]). Inputs: a, b (8-bit).
    Mul(QMul),
    /// Integer softmax ([`QSoftmax`]). Inputs: x (8-bit); output `u8`, exponent 8.
    Softmax(QSoftmax),
    /// Axes permuted (output axis `d` is input axis `perm[d]`); same element type and
    /// exponent. Inputs: x.
    Transpose { perm: Vec<usize> },
    /// Elements `start, start + step, …` along `axis` (as many as the output's `axis`
    /// dimension); same element type and exponent. Inputs: x.
    Slice {
        axis: usize,
        start: usize,
        step: usize,
    },
    /// Spatial resize, nearest or bilinear ([`QResize`]); same element type and exponent.
    /// Inputs: x `[N, C, H, W]`.
    Resize(QResize),
    /// Element-wise maximum or minimum of operands of the output's shape, each aligned
    /// first: `y = max_i / min_i clamp(rshift_round(x_i, shifts[i]), lo, hi)` with the
    /// output type's range (shifts in `-16..=16`). Inputs: one or more.
    Extremum { kind: Extremum, shifts: Vec<i32> },
}

impl IntOp {
    pub fn name(&self) -> &'static str {
        match self {
            IntOp::QuantizeInput { .. } => "quantize_input",
            IntOp::Linear(l) if l.conv.is_some() => "conv",
            IntOp::Linear(_) => "dense",
            IntOp::Add(_) => "add",
            IntOp::Concat { .. } => "concat",
            IntOp::MaxPool(_) => "max_pool",
            IntOp::SumPool { .. } => "sum_pool",
            IntOp::Requant { .. } => "requant",
            IntOp::Reshape => "reshape",
            IntOp::Table(_) => "table",
            IntOp::Mul(_) => "mul",
            IntOp::Softmax(_) => "softmax",
            IntOp::Transpose { .. } => "transpose",
            IntOp::Slice { .. } => "slice",
            IntOp::Resize(_) => "resize",
            IntOp::Extremum {
                kind: Extremum::Max,
                ..
            } => "max",
            IntOp::Extremum {
                kind: Extremum::Min,
                ..
            } => "min",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntNode {
    /// The float node this op came from (for messages and per-layer reports).
    pub name: String,
    pub op: IntOp,
    pub inputs: Vec<ValueId>,
    pub ty: QType,
}

/// A float graph input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntInput {
    pub name: String,
    pub shape: Vec<usize>,
}

/// A graph output: the value, dequantized at the boundary as `q · 2^-exp` (exact in f32
/// for 8-bit values).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntOutput {
    pub name: String,
    pub value: ValueId,
}

/// A quantized program; see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntGraph {
    pub name: String,
    pub inputs: Vec<IntInput>,
    pub nodes: Vec<IntNode>,
    pub outputs: Vec<IntOutput>,
    /// How every rounding shift of the program breaks ties ([`Rounding::HalfUp`] unless
    /// the program reproduces a QDQ model).
    #[serde(default)]
    pub rounding: Rounding,
}

impl IntGraph {
    pub fn new(name: impl Into<String>) -> Self {
        IntGraph {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Appends a node (its inputs must already exist) and returns its value.
    pub fn push(&mut self, node: IntNode) -> ValueId {
        debug_assert!(node.inputs.iter().all(|v| v.index() < self.nodes.len()));
        self.nodes.push(node);
        ValueId(self.nodes.len() as u32 - 1)
    }

    pub fn node(&self, v: ValueId) -> &IntNode {
        &self.nodes[v.index()]
    }

    pub fn ty(&self, v: ValueId) -> &QType {
        &self.nodes[v.index()].ty
    }

    /// For every value, the index of the last node that reads it (outputs live to the
    /// end: `nodes.len()`); `None` for values nobody reads.
    pub fn last_use(&self) -> Vec<Option<usize>> {
        let mut last = vec![None; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for v in &n.inputs {
                last[v.index()] = Some(i);
            }
        }
        for o in &self.outputs {
            last[o.value.index()] = Some(self.nodes.len());
        }
        last
    }

    /// The same program with every table layer's weights decoded to plain int8: it
    /// computes the same integers (a table entry is the int8 weight), so it is the int8
    /// build of this program — what flash comparisons against int8 measure.
    pub fn with_int8_weights(&self) -> IntGraph {
        let mut g = self.clone();
        for n in &mut g.nodes {
            if let IntOp::Linear(l) = &mut n.op
                && matches!(l.weights, QWeights::Lut { .. })
            {
                l.weights = QWeights::Int8 {
                    shape: l.weights.shape(),
                    values: l.weights.decode(),
                };
            }
        }
        g
    }
    /// Multiply-accumulates of one run.
    pub fn macs(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| match &n.op {
                IntOp::Linear(l) => (n.ty.num_elements() * l.weights.row_len()) as u64,
                _ => 0,
            })
            .sum()
    }

    /// Bytes of constant data (weights, tables, biases, rescales).
    pub fn weight_bytes(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| match &n.op {
                IntOp::Linear(l) => l.weights.size_bytes() + 4 * l.bias.len() + 4 * l.rescale.len(),
                // 8-bit tables; the softmax's exp table holds 17-bit values.
                IntOp::Table(t) => t.entries.len(),
                IntOp::Softmax(s) => 4 * s.exp_table.len(),
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests;
