//! QuantizeLinear-10/13/19/21 and DequantizeLinear-10/13/19/21: models exported in the
//! QDQ format (onnxruntime's `quantize_static`, PyTorch, Brevitas, NNCF).
//!
//! * On constants (weights, biases) both fold at import, per tensor or per axis: the
//!   float IR receives the dequantized values, which lie exactly on the trained grid.
//! * On run-time data a QuantizeLinear makes no node: its integer output stays an
//!   import-time [`Value::Quantized`], which a Clip may narrow (Brevitas' QCDQ) and a
//!   DequantizeLinear with the same scale and zero point turns into one
//!   `Activation::FakeQuant`. Any other reader is reported: the float IR holds no
//!   integer tensors.
//!
//! Rounding is ONNX's: `x / scale` in f32, ties to even, saturation to the zero point's
//! type (uint8 when absent, or `output_dtype`).

use std::rc::Rc;

use lutq_ir::{Activation, Op};

use super::OpDef;
use super::constant::{Inputs, input};
use crate::error::{DiagnosticKind, ImportError};
use crate::import::{NodeCx, Quantized, Value};
use crate::proto::tensor_proto::DataType;
use crate::tensor::{ConstData, ConstValue, narrow_int_range};

pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "QuantizeLinear",
        convert: quantize,
        const_inputs: |_| &[1, 2],
        ignored_inputs: &[],
        eval_const: Some(eval_quantize),
    },
    OpDef {
        op_type: "DequantizeLinear",
        convert: dequantize,
        const_inputs: |_| &[1, 2],
        ignored_inputs: &[],
        eval_const: Some(eval_dequantize),
    },
];

/// Scale, zero point and saturation range of one Q or DQ node, per tensor (one entry)
/// or per `axis`.
struct Params {
    scales: Vec<f32>,
    zero_points: Vec<i64>,
    axis: usize,
    range: (i32, i32),
}

impl Params {
    /// Index of the scale of element `i` of a tensor of `shape`.
    fn channel(&self, shape: &[usize], i: usize) -> usize {
        if self.scales.len() == 1 {
            return 0;
        }
        let inner: usize = shape[self.axis + 1..].iter().product();
        (i / inner) % shape[self.axis]
    }
}

/// Reads the scale (slot 1), zero point (slot 2) and `axis` / `block_size` /
/// `output_dtype` of the node for an input of `shape`.
fn params(
    cx: &NodeCx<'_, '_>,
    ins: Inputs<'_>,
    shape: &[usize],
    quantize: bool,
) -> Result<Params, ImportError> {
    let a = cx.attrs();
    if a.int("block_size")?.is_some_and(|b| b != 0) {
        return Err(a.error(
            "block_size",
            "blocked quantization is not supported (per tensor or per axis only)",
        ));
    }
    let scale = input(cx, ins, 1, "scale")?;
    let scales: Vec<f32> = scale.as_f32().map(<[f32]>::to_vec).ok_or_else(|| {
        cx.invalid(format!(
            "the scale must be float, got {}",
            scale.data().type_name()
        ))
    })?;
    if scales.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        return Err(cx.invalid(format!(
            "scales must be finite and positive, got {scales:?}"
        )));
    }
    let zp = ins.get(2).and_then(|c| c.as_deref());
    let zero_points: Vec<i64> = match zp {
        None => vec![0; scales.len()],
        Some(z) => z.as_i64().map(<[i64]>::to_vec).ok_or_else(|| {
            cx.invalid(format!(
                "the zero point must be an integer tensor, got {} (float8 types are not supported)",
                z.data().type_name()
            ))
        })?,
    };
    if zero_points.len() != scales.len() {
        return Err(cx.invalid(format!(
            "{} scales but {} zero points",
            scales.len(),
            zero_points.len()
        )));
    }
    let output_dtype = if quantize {
        a.int("output_dtype")?
    } else {
        None
    };
    let range = match (zp.and_then(|z| z.int_range()), output_dtype) {
        (Some(r), _) => r,
        (None, Some(t)) if t != 0 => DataType::try_from(t as i32)
            .ok()
            .and_then(narrow_int_range)
            .ok_or_else(|| {
                a.error(
                    "output_dtype",
                    format!("{t} is not an integer type lutq reads"),
                )
            })?,
        // Without a zero point the quantized type is uint8 (ONNX's default).
        _ => (0, 255),
    };
    let rank = shape.len() as i64;
    let axis = a.int("axis")?.unwrap_or(1);
    let axis = if axis < 0 { axis + rank } else { axis };
    if scales.len() > 1 {
        if !(0..rank).contains(&axis) || shape[axis as usize] != scales.len() {
            return Err(cx.invalid(format!(
                "{} scales do not match axis {axis} of the input {shape:?}",
                scales.len()
            )));
        }
    } else if scale.len() != 1 {
        return Err(cx.invalid("the scale is empty"));
    }
    Ok(Params {
        scales,
        zero_points,
        axis: axis.max(0) as usize,
        range,
    })
}

/// `2^round(log2 s)` for a finite positive `s` (ties in the exponent round up).
pub(crate) fn nearest_power_of_two(s: f32) -> f32 {
    (s as f64).log2().round().exp2() as f32
}

fn eval_quantize(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let x = input(cx, ins, 0, "x")?;
    let Some(v) = x.as_f32() else {
        return Err(cx.invalid(format!("QuantizeLinear of {} data", x.data().type_name())));
    };
    let p = params(cx, ins, x.shape(), true)?;
    let (lo, hi) = p.range;
    let q: Vec<i64> = v
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = p.channel(x.shape(), i);
            let q = (v / p.scales[c]).round_ties_even();
            let q = if q.is_nan() { 0.0 } else { q };
            (q as i64 + p.zero_points[c]).clamp(lo as i64, hi as i64)
        })
        .collect();
    let c = ConstValue::new(x.shape().to_vec(), ConstData::I64(q))
        .map_err(|e| cx.invalid(e.to_string()))?;
    Ok(Some(vec![c.with_int_range(p.range)]))
}

fn eval_dequantize(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let x = input(cx, ins, 0, "x")?;
    let Some(v) = x.as_i64() else {
        return Err(cx.invalid(format!(
            "DequantizeLinear of {} data (integer data expected)",
            x.data().type_name()
        )));
    };
    let p = params(cx, ins, x.shape(), false)?;
    let y: Vec<f32> = v
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let c = p.channel(x.shape(), i);
            (q - p.zero_points[c]) as f32 * p.scales[c]
        })
        .collect();
    ConstValue::f32(x.shape().to_vec(), y)
        .map(|c| Some(vec![c]))
        .map_err(|e| cx.invalid(e.to_string()))
}

/// One scale and zero point, and the saturation range.
struct PerTensor {
    scale: f32,
    zero_point: i32,
    range: (i32, i32),
}

/// The scale, zero point and range of a run-time Q or DQ, which must be per tensor.
fn tensor_params(
    cx: &mut NodeCx<'_, '_>,
    shape: &[usize],
    quantize: bool,
) -> Result<Option<PerTensor>, ImportError> {
    let scale = cx.constant(1, "scale")?;
    let zp = cx.opt_constant(2, "zero_point");
    if cx.failed() {
        return Ok(None);
    }
    let ins = [None, scale, zp];
    let mut p = params(cx, &ins, shape, quantize)?;
    // `--round-scales` snaps the pairs on run-time data only: a weight's scale sets its
    // grid, and snapping it would rescale the channel; its dequantized values are kept.
    if cx.round_scales() {
        for s in &mut p.scales {
            *s = nearest_power_of_two(*s);
        }
    }
    if p.scales.len() != 1 {
        cx.unsupported(
            DiagnosticKind::UnsupportedAttribute,
            format!(
                "per-axis quantization of run-time data ({} scales) is not supported",
                p.scales.len()
            ),
            "quantize activations per tensor (weights may be per axis)",
        );
        return Ok(None);
    }
    Ok(Some(PerTensor {
        scale: p.scales[0],
        zero_point: p.zero_points[0] as i32,
        range: p.range,
    }))
}

fn quantize(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let x = cx.tensor(0, "x")?;
    let Some(x) = x else {
        return Ok(());
    };
    let shape = cx.ty(x).shape;
    let Some(PerTensor {
        scale,
        zero_point,
        range: (lo, hi),
    }) = tensor_params(cx, &shape, true)?
    else {
        return Ok(());
    };
    cx.set_output(
        0,
        Value::Quantized(Rc::new(Quantized {
            x,
            scale,
            zero_point,
            lo,
            hi,
            producer: cx.name().to_string(),
        })),
    );
    Ok(())
}

fn dequantize(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let q = match cx.input_value(0) {
        Some(Value::Quantized(q)) => q,
        _ => {
            // A run-time integer tensor that no QuantizeLinear made (an integer graph
            // input): `tensor` reports why it cannot be read.
            let _ = cx.tensor(0, "x")?;
            if !cx.failed() {
                cx.unsupported(
                    DiagnosticKind::UnsupportedType,
                    "DequantizeLinear of run-time data that no QuantizeLinear produced (an integer graph input)".into(),
                    "feed the model float inputs and quantize them inside (QuantizeLinear → DequantizeLinear)",
                );
            }
            return Ok(());
        }
    };
    let shape = cx.ty(q.x).shape;
    let Some(PerTensor {
        scale, zero_point, ..
    }) = tensor_params(cx, &shape, false)?
    else {
        return Ok(());
    };
    if scale != q.scale || zero_point != q.zero_point {
        cx.unsupported(
            DiagnosticKind::UnsupportedAttribute,
            format!(
                "it dequantizes with scale {scale} and zero point {zero_point}, but QuantizeLinear '{}' quantized with {} and {}",
                q.producer, q.scale, q.zero_point
            ),
            "use one scale and zero point per QuantizeLinear → DequantizeLinear pair",
        );
        return Ok(());
    }
    let op = Op::Activation(Activation::FakeQuant {
        scale,
        zero_point,
        lo: q.lo,
        hi: q.hi,
    });
    cx.emit_output(op, &[q.x])
}

/// Clip of a QuantizeLinear's integer output (Brevitas' QCDQ: a narrower range, e.g.
/// −127..127): the same quantized value with its range narrowed. `None` when the Clip
/// reads something else.
pub(crate) fn clip_quantized(cx: &mut NodeCx<'_, '_>) -> Result<Option<()>, ImportError> {
    let Some(Value::Quantized(q)) = cx.input_value(0) else {
        return Ok(None);
    };
    let bound = |cx: &mut NodeCx<'_, '_>, slot: usize, role: &str| -> Option<i64> {
        let c = cx.opt_constant(slot, role)?;
        match c.as_i64() {
            Some([v]) => Some(*v),
            _ => None,
        }
    };
    let lo = bound(cx, 1, "min").map_or(q.lo, |v| (v as i32).max(q.lo));
    let hi = bound(cx, 2, "max").map_or(q.hi, |v| (v as i32).min(q.hi));
    if cx.failed() {
        return Ok(Some(()));
    }
    if lo > hi {
        return Err(cx.invalid(format!("the clip range [{lo}, {hi}] is empty")));
    }
    cx.set_output(
        0,
        Value::Quantized(Rc::new(Quantized {
            lo,
            hi,
            producer: q.producer.clone(),
            ..*q
        })),
    );
    Ok(Some(()))
}

/// Clip of integer constants (QCDQ on weights): the clamped integers, same type range.
pub(crate) fn eval_clip_ints(
    cx: &mut NodeCx<'_, '_>,
    ins: Inputs<'_>,
) -> Result<Option<Vec<ConstValue>>, ImportError> {
    let x = input(cx, ins, 0, "input")?;
    let Some(v) = x.as_i64() else {
        return Ok(None);
    };
    let bound = |slot: usize| -> Option<i64> {
        match ins
            .get(slot)
            .and_then(|c| c.as_deref())
            .and_then(|c| c.as_i64())
        {
            Some([b]) => Some(*b),
            _ => None,
        }
    };
    let (lo, hi) = (bound(1).unwrap_or(i64::MIN), bound(2).unwrap_or(i64::MAX));
    let y = v.iter().map(|&a| a.clamp(lo.min(hi), hi)).collect();
    let c = ConstValue::new(x.shape().to_vec(), ConstData::I64(y))
        .map_err(|e| cx.invalid(e.to_string()))?;
    Ok(Some(vec![match x.int_range() {
        Some(r) => c.with_int_range(r),
        None => c,
    }]))
}
