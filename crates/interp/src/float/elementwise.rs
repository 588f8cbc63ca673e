//! Elementwise kernels: activations, inference BatchNorm, broadcasting binary ops, PRelu.
//! All of them can work in place, which the executor uses whenever it can take over an
//! input buffer whose last reader is this op.

use lutq_ir::{Activation, BinaryOp};

use crate::shape::{broadcast_strides, coalesce, contiguous_strides, for_each_offset};
use crate::simd::multiversion;

multiversion! {
    /// Applies `act` to every element, in place.
    pub(crate) fn activation(act: Activation, x: &mut [f32]) {
        bias_affine_activation(x, None, None, Some(act));
    }
}

/// `x = act((x + bias) · a + b)` for the parts given: the one elementwise loop behind
/// BatchNorm, activations and the conv epilogue, so that all of them round identically
/// whether fused or not. Inlined into multiversioned callers, which compile it for their
/// instruction set.
#[inline(always)]
pub(crate) fn bias_affine_activation(
    x: &mut [f32],
    bias: Option<f32>,
    ab: Option<(f32, f32)>,
    act: Option<Activation>,
) {
    let (a, b) = ab.unwrap_or((1.0, 0.0));
    let (add, scale) = (bias.is_some(), ab.is_some());
    let c = bias.unwrap_or(0.0);
    // The common activations get their own loop so that the compiler vectorises it; the
    // rest go through `Activation::apply`, the IR's definition, unchanged.
    let f = |v: f32| {
        let v = if add { v + c } else { v };
        if scale { v * a + b } else { v }
    };
    // Plain loops rather than `for_each`: a generic std method may not be inlined, and
    // would then run without the caller's instruction set.
    match act {
        None => {
            for v in x.iter_mut() {
                *v = f(*v);
            }
        }
        Some(Activation::Relu) => {
            for v in x.iter_mut() {
                *v = f(*v).max(0.0);
            }
        }
        Some(Activation::Clip {
            min: Some(lo),
            max: Some(hi),
        }) => {
            for v in x.iter_mut() {
                *v = f(*v).max(lo).min(hi);
            }
        }
        Some(act) => {
            for v in x.iter_mut() {
                *v = act.apply(f(*v));
            }
        }
    }
}

/// Per-channel statistics of an inference BatchNorm.
pub(crate) struct BatchNormParams<'a> {
    pub scale: &'a [f32],
    pub bias: &'a [f32],
    pub mean: &'a [f32],
    pub var: &'a [f32],
    pub epsilon: f32,
}

impl BatchNormParams<'_> {
    /// `(a, b)` with `(x - mean) / sqrt(var + eps) * scale + bias == a·x + b` for channel
    /// `c`: the form onnxruntime evaluates too (one multiply-add per element).
    pub(crate) fn affine(&self, c: usize) -> (f32, f32) {
        let a = self.scale[c] / (self.var[c] + self.epsilon).sqrt();
        (a, self.bias[c] - self.mean[c] * a)
    }
}

multiversion! {
    /// BatchNorm in place on `x` laid out as `[outer, channels, inner]`.
    pub(crate) fn batch_norm(x: &mut [f32], channels: usize, inner: usize, p: &BatchNormParams) {
        if channels == 0 || inner == 0 {
            return;
        }
        for (i, plane) in x.chunks_exact_mut(inner).enumerate() {
            bias_affine_activation(plane, None, Some(p.affine(i % channels)), None);
        }
    }
}

/// The function a broadcasting binary kernel applies.
#[derive(Clone, Copy, Debug)]
pub(crate) enum BinFn {
    Op(BinaryOp),
    /// `x < 0 ? slope·x : x`, with `(x, slope)` as the operands.
    PRelu,
}

/// One operand of a binary kernel.
#[derive(Clone, Copy)]
pub(crate) enum Operand<'a> {
    /// A contiguous tensor of the given shape, broadcast to the output.
    Data(&'a [f32], &'a [usize]),
    /// The operand already sits in the output buffer (same shape as the output): the
    /// kernel overwrites it in place.
    InOut,
}

/// `out = f(a, b)` with numpy broadcasting; at most one operand may be [`Operand::InOut`].
pub(crate) fn binary(f: BinFn, a: Operand, b: Operand, out: &mut [f32], out_shape: &[usize]) {
    // One monomorphised loop nest per function: the choice of op is outside the loops.
    match f {
        BinFn::Op(BinaryOp::Add) => binary_with(|x, y| x + y, a, b, out, out_shape),
        BinFn::Op(BinaryOp::Sub) => binary_with(|x, y| x - y, a, b, out, out_shape),
        BinFn::Op(BinaryOp::Mul) => binary_with(|x, y| x * y, a, b, out, out_shape),
        BinFn::Op(BinaryOp::Div) => binary_with(|x, y| x / y, a, b, out, out_shape),
        BinFn::Op(op @ (BinaryOp::Max | BinaryOp::Min | BinaryOp::Pow)) => {
            binary_with(move |x, y| op.apply(x, y), a, b, out, out_shape)
        }
        BinFn::PRelu => binary_with(|x, s| if x < 0.0 { s * x } else { x }, a, b, out, out_shape),
    }
}

fn binary_with<F: Fn(f32, f32) -> f32 + Copy>(
    f: F,
    a: Operand,
    b: Operand,
    out: &mut [f32],
    out_shape: &[usize],
) {
    let out_strides = contiguous_strides(out_shape);
    let strides = |x: Operand| match x {
        Operand::Data(_, shape) => broadcast_strides(shape, out_shape),
        Operand::InOut => out_strides.clone(),
    };
    let (sa, sb) = (strides(a), strides(b));
    let (dims, [so, sa, sb]) = coalesce(out_shape, [&out_strides, &sa, &sb]);
    let last = dims.len() - 1;
    let (inner, ia, ib) = (dims[last], sa[last], sb[last]);
    // The output is contiguous, so after coalescing its innermost stride is 1 (or the
    // whole output is one element): each inner run is one slice.
    for_each_offset(
        &dims[..last],
        [&so[..last], &sa[..last], &sb[..last]],
        |[o, oa, ob]| {
            let dst = &mut out[o..o + inner];
            match (a, b) {
                (Operand::Data(x, _), Operand::Data(y, _)) => {
                    run_data_data(f, dst, &x[oa..], ia, &y[ob..], ib)
                }
                (Operand::InOut, Operand::Data(y, _)) => run_inout(dst, &y[ob..], ib, f),
                (Operand::Data(x, _), Operand::InOut) => {
                    run_inout(dst, &x[oa..], ia, |d, s| f(s, d))
                }
                (Operand::InOut, Operand::InOut) => dst.iter_mut().for_each(|d| *d = f(*d, *d)),
            }
        },
    );
}

/// `dst[j] = f(x[j·sx], y[j·sy])`; strides are 0 (broadcast) or 1 in practice.
#[inline(always)]
fn run_data_data<F: Fn(f32, f32) -> f32>(
    f: F,
    dst: &mut [f32],
    x: &[f32],
    sx: usize,
    y: &[f32],
    sy: usize,
) {
    let n = dst.len();
    match (sx, sy) {
        (1, 1) => {
            for ((d, &u), &v) in dst.iter_mut().zip(&x[..n]).zip(&y[..n]) {
                *d = f(u, v);
            }
        }
        (1, 0) => {
            let v = y[0];
            for (d, &u) in dst.iter_mut().zip(&x[..n]) {
                *d = f(u, v);
            }
        }
        (0, 1) => {
            let u = x[0];
            for (d, &v) in dst.iter_mut().zip(&y[..n]) {
                *d = f(u, v);
            }
        }
        _ => {
            for (j, d) in dst.iter_mut().enumerate() {
                *d = f(x[j * sx], y[j * sy]);
            }
        }
    }
}

/// `dst[j] = f(dst[j], y[j·sy])`.
#[inline(always)]
fn run_inout<F: Fn(f32, f32) -> f32>(dst: &mut [f32], y: &[f32], sy: usize, f: F) {
    let n = dst.len();
    match sy {
        1 => {
            for (d, &v) in dst.iter_mut().zip(&y[..n]) {
                *d = f(*d, v);
            }
        }
        0 => {
            let v = y[0];
            dst.iter_mut().for_each(|d| *d = f(*d, v));
        }
        _ => {
            for (j, d) in dst.iter_mut().enumerate() {
                *d = f(*d, y[j * sy]);
            }
        }
    }
}
