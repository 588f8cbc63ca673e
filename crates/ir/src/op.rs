//! The float IR's operations and their attributes.
//!
//! Ops are normalised at import so that every backend sees one form: attributes are
//! resolved to static values (`auto_pad` to explicit pads, negative axes to positive ones,
//! shape inputs to attributes), Flatten/Squeeze/Unsqueeze become [`Op::Reshape`], and
//! every op produces exactly one tensor.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::tensor::Tensor;

/// A node's operation. Inputs are listed per variant in the order of the node's input
/// slots; `[x]` marks an optional trailing input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// A graph input. No inputs.
    Input,
    /// A constant tensor owned by the graph (weights, biases, statistics). No inputs.
    Constant(Tensor),
    /// 2-D convolution, NCHW. Inputs: x, w `[M, C/group, kH, kW]`, [bias `[M]`].
    Conv(Conv),
    /// Inference-mode batch normalisation. Inputs: x `[N, C, …]`, scale, bias, mean, var
    /// (each `[C]`).
    BatchNorm { epsilon: f32 },
    /// Elementwise activation. Input: x.
    Activation(Activation),
    /// `x < 0 ? slope * x : x`, slope broadcast to x. Inputs: x, slope.
    PRelu,
    /// Elementwise binary op with numpy broadcasting. Inputs: a, b.
    Binary(BinaryOp),
    /// Max pooling, NCHW; padding never wins the max. Input: x.
    MaxPool(Pool),
    /// Average pooling, NCHW. Input: x.
    AveragePool(Pool),
    /// Sum over each window, NCHW: AveragePool without the division (made by `lutq-opt`
    /// where every window has the same divisor, folded into the next linear layer); taps
    /// outside the input count as 0. `count_include_pad` is unused. Input: x.
    SumPool(Pool),
    /// Mean over all spatial dims, which become 1. Input: x `[N, C, …]`.
    GlobalAveragePool,
    /// Sum over all spatial dims, which become 1: GlobalAveragePool without the division
    /// (made by `lutq-opt`, which folds the 1/N into the next linear layer). Input: x
    /// `[N, C, …]`.
    GlobalSumPool,
    /// `alpha · op(A) · op(B) + beta · C`. Inputs: A `[M,K]`, B `[K,N]` (before
    /// transposition), [C broadcast to `[M,N]`].
    Gemm(Gemm),
    /// numpy `matmul`, with batch broadcasting. Inputs: a, b.
    MatMul,
    /// Same elements, new static shape. Input: x.
    Reshape { shape: Vec<usize> },
    /// Input: x.
    Transpose { perm: Vec<usize> },
    /// Inputs: one or more tensors of equal rank.
    Concat { axis: usize },
    /// Constant-value padding; `pads` = begins of every axis, then ends (ONNX order).
    Pad { pads: Vec<usize>, value: f32 },
    /// Softmax along one axis. Input: x.
    Softmax { axis: usize },
    /// Input: x.
    Identity,
    /// Inference-mode dropout, i.e. identity. Input: x.
    Dropout,
    /// Elements `start, start + step, …` below `end` along `axis` (ONNX Slice with its
    /// bounds resolved at import: `start <= end <= dim`, `step >= 1`); the output has
    /// `ceil((end - start) / step)` elements on that axis. Input: x.
    Slice {
        axis: usize,
        start: usize,
        end: usize,
        step: usize,
    },
    /// Spatial resize of an NCHW tensor to `out = [h, w]` (ONNX Resize/Upsample with
    /// constant scales or sizes). `scales` are the factors the coordinate transform uses
    /// (the given scales, or `out / in` when sizes were given), as onnxruntime does.
    /// Input: x `[N, C, H, W]`.
    Resize(Resize),
}

/// How [`Op::Resize`] samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResizeMode {
    /// The nearest input pixel, rounded by [`NearestMode`].
    Nearest,
    /// Bilinear interpolation of the four neighbours.
    Linear,
}

/// ONNX `coordinate_transformation_mode`: the input coordinate `x_in` of output
/// coordinate `x` for a scale `s`, input length `n_in`, output length `n_out` and scaled
/// length `l = n_in · s` (not rounded, as the ONNX reference and onnxruntime use it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordMode {
    /// `(x + 0.5) / s - 0.5`.
    HalfPixel,
    /// `l > 1 ? (x + 0.5) / s - 0.5 : 0`.
    PytorchHalfPixel,
    /// `x · (n_in - 1) / (l - 1)` (0 when `l == 1`).
    AlignCorners,
    /// `x / s`.
    Asymmetric,
    /// `(x + 0.5) / s` (nearest only).
    TfHalfPixelForNearest,
    /// Opset 19: `(n_in / 2)·(1 - n_out / (s·n_in)) + (x + 0.5) / s - 0.5`.
    HalfPixelSymmetric,
}

/// ONNX `nearest_mode`: how a fractional input coordinate picks a pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

/// [`Op::Resize`] attributes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resize {
    pub mode: ResizeMode,
    pub coord: CoordMode,
    /// Used by [`ResizeMode::Nearest`] only.
    pub nearest_mode: NearestMode,
    /// Output height and width.
    pub out: [usize; 2],
    /// Scale factors on H and W used by the coordinate transform.
    pub scales: [f32; 2],
}

impl Resize {
    /// Per output coordinate of one axis: the two input indices and their weights (nearest:
    /// the same index twice, weights 1 and 0).
    pub fn axis_taps(&self, axis: usize, n_in: usize) -> Vec<(usize, usize, f32, f32)> {
        let n_out = self.out[axis];
        let scale = self.scales[axis];
        let last = n_in as i64 - 1;
        (0..n_out)
            .map(|o| {
                let c = self.coord.input_coord(o, scale, n_in, n_out);
                match self.mode {
                    ResizeMode::Nearest => {
                        let p = (self.nearest_mode.pick(c) as i64).clamp(0, last) as usize;
                        (p, p, 1.0, 0.0)
                    }
                    // As onnxruntime's bilinear kernel: the coordinate clamped to the input,
                    // the two neighbours, weights |c - i2| and |c - i1| (0.5 each when they
                    // coincide).
                    ResizeMode::Linear => {
                        let c = c.clamp(0.0, last as f32);
                        let i1 = (c as i64).min(last);
                        let i2 = (i1 + 1).min(last);
                        let (mut d1, mut d2) = ((c - i1 as f32).abs(), (c - i2 as f32).abs());
                        if i1 == i2 {
                            d1 = 0.5;
                            d2 = 0.5;
                        }
                        // weight of i1 is d2, of i2 is d1.
                        (i1 as usize, i2 as usize, d2, d1)
                    }
                }
            })
            .collect()
    }
}

impl CoordMode {
    /// The input coordinate of output coordinate `x`, computed in f32 as onnxruntime does.
    pub fn input_coord(self, x: usize, scale: f32, n_in: usize, n_out: usize) -> f32 {
        let x = x as f32;
        let scaled = n_in as f32 * scale;
        match self {
            CoordMode::HalfPixel => (x + 0.5) / scale - 0.5,
            CoordMode::PytorchHalfPixel => {
                if scaled > 1.0 {
                    (x + 0.5) / scale - 0.5
                } else {
                    0.0
                }
            }
            CoordMode::AlignCorners => {
                if scaled == 1.0 {
                    0.0
                } else {
                    x * (n_in as f32 - 1.0) / (scaled - 1.0)
                }
            }
            CoordMode::Asymmetric => x / scale,
            CoordMode::TfHalfPixelForNearest => (x + 0.5) / scale,
            CoordMode::HalfPixelSymmetric => {
                let adjustment = n_out as f32 / (scale * n_in as f32);
                let center = n_in as f32 / 2.0;
                let offset = center * (1.0 - adjustment);
                offset + (x + 0.5) / scale - 0.5
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            CoordMode::HalfPixel => "half_pixel",
            CoordMode::PytorchHalfPixel => "pytorch_half_pixel",
            CoordMode::AlignCorners => "align_corners",
            CoordMode::Asymmetric => "asymmetric",
            CoordMode::TfHalfPixelForNearest => "tf_half_pixel_for_nearest",
            CoordMode::HalfPixelSymmetric => "half_pixel_symmetric",
        }
    }
}

impl NearestMode {
    /// The pixel a fractional coordinate picks (before clamping to the input).
    pub fn pick(self, c: f32) -> f32 {
        match self {
            NearestMode::RoundPreferFloor => {
                if c == c.floor() + 0.5 {
                    c.floor()
                } else {
                    c.round()
                }
            }
            NearestMode::RoundPreferCeil => {
                if c == c.floor() + 0.5 {
                    c.ceil()
                } else {
                    c.round()
                }
            }
            NearestMode::Floor => c.floor(),
            NearestMode::Ceil => c.ceil(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            NearestMode::RoundPreferFloor => "round_prefer_floor",
            NearestMode::RoundPreferCeil => "round_prefer_ceil",
            NearestMode::Floor => "floor",
            NearestMode::Ceil => "ceil",
        }
    }
}

/// Elementwise activation functions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Activation {
    Relu,
    /// `min(max(x, min), max)`; `None` bounds are open.
    Clip {
        min: Option<f32>,
        max: Option<f32>,
    },
    LeakyRelu {
        alpha: f32,
    },
    /// `max(0, min(1, alpha·x + beta))`.
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// `x · max(0, min(1, x/6 + 1/2))`.
    HardSwish,
    Sigmoid,
    Tanh,
    /// `e^x`.
    Exp,
    /// The error function.
    Erf,
    /// `x/2 · (1 + erf(x/√2))`, or with `tanh`: `x/2 · (1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    Gelu {
        tanh: bool,
    },
    /// `ln(1 + e^x)`.
    Softplus,
    /// `x < 0 ? alpha·(e^x - 1) : x`.
    Elu {
        alpha: f32,
    },
    /// `gamma · (x <= 0 ? alpha·(e^x - 1) : x)`.
    Selu {
        alpha: f32,
        gamma: f32,
    },
    /// `-x`.
    Neg,
    /// `|x|`.
    Abs,
    /// `√x` (NaN below 0).
    Sqrt,
    /// `1/x`.
    Reciprocal,
    /// Natural logarithm (NaN below 0, -inf at 0).
    Log,
    Floor,
    Ceil,
    /// Round half to even.
    Round,
    /// A QuantizeLinear → DequantizeLinear pair (QDQ) with one scale and zero point:
    /// `(clamp(round_half_even(x / scale) + zero_point, lo, hi) − zero_point) · scale`,
    /// `lo..=hi` the quantized type's range (int8, uint8, int4, uint4, …, narrowed by a
    /// Clip between the two as Brevitas exports). Per-axis pairs only occur on constant
    /// weights, which the importer folds.
    FakeQuant {
        scale: f32,
        zero_point: i32,
        lo: i32,
        hi: i32,
    },
}

/// ONNX QuantizeLinear then DequantizeLinear on one element, in f32 as onnxruntime
/// computes them: the division rounded to f32, ties to even, saturation to the type.
/// NaN quantizes to the zero point's code clamped (0 after dequantization).
pub fn fake_quant(x: f32, scale: f32, zero_point: i32, lo: i32, hi: i32) -> f32 {
    let q = (x / scale).round_ties_even();
    let q = if q.is_nan() {
        zero_point as f32
    } else {
        (q + zero_point as f32).clamp(lo as f32, hi as f32)
    };
    (q - zero_point as f32) * scale
}

/// The error function in f32, from the complementary error function's Chebyshev fit
/// (Numerical Recipes `erfcc`, fractional error below 1.2e-7) evaluated in f64.
fn erf(x: f32) -> f32 {
    let z = (x as f64).abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    let r = 1.0 - erfc;
    (if x < 0.0 { -r } else { r }) as f32
}

impl Activation {
    /// The function itself, on one element: every activation is a pure scalar function
    /// (the integer side tabulates it over the 256 codes of its input).
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Clip { min, max } => {
                let x = min.map_or(x, |m| x.max(m));
                max.map_or(x, |m| x.min(m))
            }
            Activation::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha * x
                } else {
                    x
                }
            }
            Activation::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
            Activation::Exp => x.exp(),
            Activation::Erf => erf(x),
            Activation::Gelu { tanh: false } => {
                (0.5 * x as f64 * (1.0 + erf((x as f64 / std::f64::consts::SQRT_2) as f32) as f64))
                    as f32
            }
            Activation::Gelu { tanh: true } => {
                let x = x as f64;
                let k = (2.0 / std::f64::consts::PI).sqrt();
                (0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())) as f32
            }
            // As onnxruntime: log1p(e^-|x|) + max(x, 0), stable for large |x|.
            Activation::Softplus => {
                if x > 0.0 {
                    x + (-x).exp().ln_1p()
                } else {
                    x.exp().ln_1p()
                }
            }
            Activation::Elu { alpha } => {
                if x < 0.0 {
                    alpha * (x.exp() - 1.0)
                } else {
                    x
                }
            }
            Activation::Selu { alpha, gamma } => {
                if x <= 0.0 {
                    gamma * (alpha * x.exp() - alpha)
                } else {
                    gamma * x
                }
            }
            Activation::Neg => -x,
            Activation::Abs => x.abs(),
            Activation::Sqrt => x.sqrt(),
            Activation::Reciprocal => 1.0 / x,
            Activation::Log => x.ln(),
            Activation::Floor => x.floor(),
            Activation::Ceil => x.ceil(),
            Activation::Round => x.round_ties_even(),
            Activation::FakeQuant {
                scale,
                zero_point,
                lo,
                hi,
            } => fake_quant(x, scale, zero_point, lo, hi),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Clip { .. } => "clip",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::HardSigmoid { .. } => "hard_sigmoid",
            Activation::HardSwish => "hard_swish",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Exp => "exp",
            Activation::Erf => "erf",
            Activation::Gelu { .. } => "gelu",
            Activation::Softplus => "softplus",
            Activation::Elu { .. } => "elu",
            Activation::Selu { .. } => "selu",
            Activation::Neg => "neg",
            Activation::Abs => "abs",
            Activation::Sqrt => "sqrt",
            Activation::Reciprocal => "reciprocal",
            Activation::Log => "log",
            Activation::Floor => "floor",
            Activation::Ceil => "ceil",
            Activation::Round => "round",
            Activation::FakeQuant { .. } => "fake_quant",
        }
    }

    fn write_attrs(self, out: &mut String) {
        match self {
            Activation::Clip { min, max } => {
                if let Some(min) = min {
                    write!(out, " min={min}").unwrap();
                }
                if let Some(max) = max {
                    write!(out, " max={max}").unwrap();
                }
            }
            Activation::LeakyRelu { alpha } => write!(out, " alpha={alpha}").unwrap(),
            Activation::HardSigmoid { alpha, beta } => {
                write!(out, " alpha={alpha} beta={beta}").unwrap()
            }
            Activation::Gelu { tanh } => {
                if tanh {
                    out.push_str(" approximate=tanh");
                }
            }
            Activation::Elu { alpha } => write!(out, " alpha={alpha}").unwrap(),
            Activation::Selu { alpha, gamma } => {
                write!(out, " alpha={alpha} gamma={gamma}").unwrap()
            }
            Activation::FakeQuant {
                scale,
                zero_point,
                lo,
                hi,
            } => write!(
                out,
                " scale={scale} zero_point={zero_point} range=[{lo},{hi}]"
            )
            .unwrap(),
            Activation::Relu
            | Activation::HardSwish
            | Activation::Sigmoid
            | Activation::Tanh
            | Activation::Exp
            | Activation::Erf
            | Activation::Softplus
            | Activation::Neg
            | Activation::Abs
            | Activation::Sqrt
            | Activation::Reciprocal
            | Activation::Log
            | Activation::Floor
            | Activation::Ceil
            | Activation::Round => {}
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// The larger operand (NaN if either is NaN, as onnxruntime).
    Max,
    /// The smaller operand (NaN if either is NaN, as onnxruntime).
    Min,
    /// `a^b` (`powf`).
    Pow,
}

impl BinaryOp {
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Max => {
                if a.is_nan() || b.is_nan() {
                    f32::NAN
                } else {
                    a.max(b)
                }
            }
            BinaryOp::Min => {
                if a.is_nan() || b.is_nan() {
                    f32::NAN
                } else {
                    a.min(b)
                }
            }
            BinaryOp::Pow => a.powf(b),
        }
    }
}

/// An activation fused into the Conv or Gemm that produces its input, applied to every
/// output element after the bias. Limited to what an integer backend can apply as a
/// clamp of the output range: ReLU and `clip(0, max)` (ReLU6 and relatives). Set only by
/// rewrite passes; the importer always leaves it `None`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum FusedActivation {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), max)`, `max > 0`.
    Clip { max: f32 },
}

impl FusedActivation {
    /// The same function as an elementwise [`Activation`].
    pub fn to_activation(self) -> Activation {
        match self {
            FusedActivation::Relu => Activation::Relu,
            FusedActivation::Clip { max } => Activation::Clip {
                min: Some(0.0),
                max: Some(max),
            },
        }
    }

    pub fn apply(self, x: f32) -> f32 {
        self.to_activation().apply(x)
    }
}

impl fmt::Display for FusedActivation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FusedActivation::Relu => f.write_str("relu"),
            FusedActivation::Clip { max } => write!(f, "clip(0,{max})"),
        }
    }
}

/// Convolution attributes, all resolved to explicit values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv {
    pub strides: [usize; 2],
    /// top, left, bottom, right.
    pub pads: [usize; 4],
    pub dilations: [usize; 2],
    pub group: usize,
    /// Applied to the output (after the bias); printed as ` act=…` only when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<FusedActivation>,
}

impl Default for Conv {
    fn default() -> Self {
        Conv {
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
            group: 1,
            activation: None,
        }
    }
}

/// Pooling window attributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    /// top, left, bottom, right.
    pub pads: [usize; 4],
    pub dilations: [usize; 2],
    /// Output size rounds up; a window that would start in the end padding is dropped.
    pub ceil_mode: bool,
    /// AveragePool only: padded positions count in the divisor.
    pub count_include_pad: bool,
}

impl Pool {
    pub fn new(kernel: [usize; 2]) -> Self {
        Pool {
            kernel,
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
            ceil_mode: false,
            count_include_pad: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gemm {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
    /// Applied to the output (after `beta · C`); printed as ` act=…` only when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<FusedActivation>,
}

impl Default for Gemm {
    fn default() -> Self {
        Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
            activation: None,
        }
    }
}

impl Op {
    /// The op's name in the text dump and in op histograms.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Constant(_) => "const",
            Op::Conv(_) => "conv",
            Op::BatchNorm { .. } => "batch_norm",
            Op::Activation(a) => a.name(),
            Op::PRelu => "prelu",
            Op::Binary(BinaryOp::Add) => "add",
            Op::Binary(BinaryOp::Sub) => "sub",
            Op::Binary(BinaryOp::Mul) => "mul",
            Op::Binary(BinaryOp::Div) => "div",
            Op::Binary(BinaryOp::Max) => "max",
            Op::Binary(BinaryOp::Min) => "min",
            Op::Binary(BinaryOp::Pow) => "pow",
            Op::MaxPool(_) => "max_pool",
            Op::AveragePool(_) => "average_pool",
            Op::SumPool(_) => "sum_pool",
            Op::GlobalAveragePool => "global_average_pool",
            Op::GlobalSumPool => "global_sum_pool",
            Op::Gemm(_) => "gemm",
            Op::MatMul => "matmul",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Concat { .. } => "concat",
            Op::Pad { .. } => "pad",
            Op::Softmax { .. } => "softmax",
            Op::Identity => "identity",
            Op::Dropout => "dropout",
            Op::Slice { .. } => "slice",
            Op::Resize(_) => "resize",
        }
    }

    /// Attributes as ` key=value` pairs, in a fixed order, for the text dump.
    pub fn attrs_text(&self) -> String {
        let mut s = String::new();
        match self {
            Op::Conv(c) => {
                write!(
                    s,
                    " strides={} pads={} dilations={} group={}",
                    list(&c.strides),
                    list(&c.pads),
                    list(&c.dilations),
                    c.group
                )
                .unwrap();
                if let Some(act) = c.activation {
                    write!(s, " act={act}").unwrap();
                }
            }
            Op::BatchNorm { epsilon } => write!(s, " epsilon={epsilon}").unwrap(),
            Op::Activation(a) => a.write_attrs(&mut s),
            Op::MaxPool(p) | Op::AveragePool(p) | Op::SumPool(p) => {
                write!(
                    s,
                    " kernel={} strides={} pads={}",
                    list(&p.kernel),
                    list(&p.strides),
                    list(&p.pads)
                )
                .unwrap();
                if p.dilations != [1, 1] {
                    write!(s, " dilations={}", list(&p.dilations)).unwrap();
                }
                if p.ceil_mode {
                    s.push_str(" ceil_mode");
                }
                if matches!(self, Op::AveragePool(_)) && p.count_include_pad {
                    s.push_str(" count_include_pad");
                }
            }
            Op::Gemm(g) => {
                write!(s, " alpha={} beta={}", g.alpha, g.beta).unwrap();
                if g.trans_a {
                    s.push_str(" trans_a");
                }
                if g.trans_b {
                    s.push_str(" trans_b");
                }
                if let Some(act) = g.activation {
                    write!(s, " act={act}").unwrap();
                }
            }
            Op::Reshape { shape } => write!(s, " shape={}", list(shape)).unwrap(),
            Op::Transpose { perm } => write!(s, " perm={}", list(perm)).unwrap(),
            Op::Concat { axis } | Op::Softmax { axis } => write!(s, " axis={axis}").unwrap(),
            Op::Pad { pads, value } => write!(s, " pads={} value={value}", list(pads)).unwrap(),
            Op::Slice {
                axis,
                start,
                end,
                step,
            } => write!(s, " axis={axis} start={start} end={end} step={step}").unwrap(),
            Op::Resize(r) => {
                let mode = match r.mode {
                    ResizeMode::Nearest => "nearest",
                    ResizeMode::Linear => "linear",
                };
                write!(
                    s,
                    " mode={mode} coord={} out={} scales={}",
                    r.coord.name(),
                    list(&r.out),
                    list(&r.scales)
                )
                .unwrap();
                if r.mode == ResizeMode::Nearest {
                    write!(s, " nearest_mode={}", r.nearest_mode.name()).unwrap();
                }
            }
            Op::Input
            | Op::Constant(_)
            | Op::PRelu
            | Op::Binary(_)
            | Op::GlobalAveragePool
            | Op::GlobalSumPool
            | Op::MatMul
            | Op::Identity
            | Op::Dropout => {}
        }
        s
    }

    /// Multiply-accumulates per inference of a node of this op with the given input and
    /// output types (0 for ops without MACs).
    pub fn macs(&self, inputs: &[&crate::TensorType], output: &crate::TensorType) -> u64 {
        match self {
            Op::Conv(_) => {
                let w = &inputs[1].shape;
                (output.num_elements() * w[1] * w[2] * w[3]) as u64
            }
            Op::Gemm(g) => {
                let a = &inputs[0].shape;
                let k = if g.trans_a { a[0] } else { a[1] };
                (output.num_elements() * k) as u64
            }
            Op::MatMul => {
                let a = &inputs[0].shape;
                (output.num_elements() * a[a.len() - 1]) as u64
            }
            _ => 0,
        }
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    let mut s = String::from("[");
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        write!(s, "{x}").unwrap();
    }
    s.push(']');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_match_their_definitions() {
        let relu6 = Activation::Clip {
            min: Some(0.0),
            max: Some(6.0),
        };
        assert_eq!(relu6.apply(-1.0), 0.0);
        assert_eq!(relu6.apply(7.5), 6.0);
        assert_eq!(relu6.apply(2.5), 2.5);
        assert_eq!(Activation::LeakyRelu { alpha: 0.1 }.apply(-2.0), -0.2);
        assert_eq!(Activation::HardSwish.apply(-3.0), 0.0);
        assert_eq!(Activation::HardSwish.apply(3.0), 3.0);
        assert_eq!(Activation::HardSwish.apply(1.0), 1.0 * (1.0 / 6.0 + 0.5));
        let open = Activation::Clip {
            min: None,
            max: Some(1.0),
        };
        assert_eq!(open.apply(-100.0), -100.0);
        assert!((Activation::Sigmoid.apply(0.0) - 0.5).abs() < 1e-7);
    }

    #[test]
    fn attrs_text_is_fixed_order() {
        let op = Op::Conv(Conv {
            strides: [2, 2],
            pads: [1, 1, 1, 1],
            dilations: [1, 1],
            group: 32,
            activation: None,
        });
        assert_eq!(
            op.attrs_text(),
            " strides=[2,2] pads=[1,1,1,1] dilations=[1,1] group=32"
        );
        let fused = Op::Conv(Conv {
            activation: Some(FusedActivation::Clip { max: 6.0 }),
            ..Conv::default()
        });
        assert!(fused.attrs_text().ends_with(" group=1 act=clip(0,6)"));
        let gemm = Op::Gemm(Gemm {
            activation: Some(FusedActivation::Relu),
            ..Gemm::default()
        });
        assert_eq!(gemm.attrs_text(), " alpha=1 beta=1 act=relu");
        let mut p = Pool::new([3, 3]);
        p.count_include_pad = true;
        assert_eq!(
            Op::AveragePool(p.clone()).attrs_text(),
            " kernel=[3,3] strides=[1,1] pads=[0,0,0,0] count_include_pad"
        );
        // count_include_pad means nothing for max pooling, so it is not printed there.
        assert_eq!(
            Op::MaxPool(p).attrs_text(),
            " kernel=[3,3] strides=[1,1] pads=[0,0,0,0]"
        );
    }
}
