//! Resize-10/11/13/18/19 and Upsample-7/9 with constant scales or sizes, NCHW, scaling H
//! and W only: one IR [`Op::Resize`].
//!
//! The output size is `floor(in · scale)` (computed in f32, as onnxruntime) or the given
//! size; the coordinate transform uses the given scale, or `out / in` with sizes. Before
//! opset 11 (Upsample, Resize-10) the transform is `asymmetric` and nearest rounds as
//! onnxruntime's legacy rule does: down when upsampling, up when downsampling.

use lutq_ir::{CoordMode, NearestMode, Op, Resize, ResizeMode};

use super::OpDef;
use crate::error::{DiagnosticKind, ImportError};
use crate::import::NodeCx;
use crate::tensor::ConstValue;

pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "Resize",
        convert: resize,
        const_inputs: |opset| if opset >= 11 { &[1, 2, 3] } else { &[1] },
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "Upsample",
        convert: resize,
        const_inputs: |opset| if opset >= 9 { &[1] } else { &[] },
        ignored_inputs: &[],
        eval_const: None,
    },
];

/// Scales or sizes, as given.
enum Target {
    Scales(Vec<f32>),
    Sizes(Vec<i64>),
}

fn floats_of(cx: &NodeCx<'_, '_>, c: &ConstValue, role: &str) -> Result<Vec<f32>, ImportError> {
    match c.as_f32() {
        Some(v) if c.shape().len() <= 1 => Ok(v.to_vec()),
        _ => Err(cx.invalid(format!(
            "{role} must be a 1-D float tensor, got {} of shape {:?}",
            c.data().type_name(),
            c.shape()
        ))),
    }
}

fn resize(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let a = cx.attrs();
    let opset = cx.opset();
    let upsample = cx.op_type() == "Upsample";
    let mode = match a.string("mode")?.unwrap_or("nearest") {
        "nearest" => Some(ResizeMode::Nearest),
        "linear" | "bilinear" => Some(ResizeMode::Linear),
        other => {
            cx.unsupported_attr(
                "mode",
                &format!("'{other}' interpolation is not supported (nearest and linear are)"),
                "export with nearest or (bi)linear interpolation",
            );
            None
        }
    };
    let legacy = upsample || opset < 11;
    let coord = if legacy {
        Some(CoordMode::Asymmetric)
    } else {
        match a
            .string("coordinate_transformation_mode")?
            .unwrap_or("half_pixel")
        {
            "half_pixel" => Some(CoordMode::HalfPixel),
            "pytorch_half_pixel" => Some(CoordMode::PytorchHalfPixel),
            "align_corners" => Some(CoordMode::AlignCorners),
            "asymmetric" => Some(CoordMode::Asymmetric),
            "tf_half_pixel_for_nearest" => Some(CoordMode::TfHalfPixelForNearest),
            "half_pixel_symmetric" => Some(CoordMode::HalfPixelSymmetric),
            other => {
                cx.unsupported_attr(
                    "coordinate_transformation_mode",
                    &format!("'{other}' is not supported"),
                    "use half_pixel, pytorch_half_pixel, align_corners or asymmetric",
                );
                None
            }
        }
    };
    if coord == Some(CoordMode::TfHalfPixelForNearest) && mode == Some(ResizeMode::Linear) {
        cx.unsupported_attr(
            "coordinate_transformation_mode",
            "tf_half_pixel_for_nearest with linear interpolation is not supported",
            "use half_pixel",
        );
    }
    let nearest_mode = if legacy {
        None
    } else {
        match a.string("nearest_mode")?.unwrap_or("round_prefer_floor") {
            "round_prefer_floor" => Some(NearestMode::RoundPreferFloor),
            "round_prefer_ceil" => Some(NearestMode::RoundPreferCeil),
            "floor" => Some(NearestMode::Floor),
            "ceil" => Some(NearestMode::Ceil),
            other => {
                cx.unsupported_attr(
                    "nearest_mode",
                    &format!(
                        "'{other}' is not one of round_prefer_floor, round_prefer_ceil, floor, ceil"
                    ),
                    "use round_prefer_floor",
                );
                None
            }
        }
    };
    if opset >= 18 && !upsample {
        if a.int_or("antialias", 0)? != 0 {
            cx.unsupported_attr(
                "antialias",
                "antialiased resizing is not supported",
                "export with antialias=0",
            );
        }
        let policy = a.string("keep_aspect_ratio_policy")?.unwrap_or("stretch");
        if policy != "stretch" {
            cx.unsupported_attr(
                "keep_aspect_ratio_policy",
                &format!("'{policy}' is not supported"),
                "give sizes for every axis (stretch)",
            );
        }
    }
    let axes: Option<Vec<i64>> = if opset >= 18 && !upsample {
        a.ints("axes")?.map(<[i64]>::to_vec)
    } else {
        None
    };

    let x = cx.tensor(0, "X")?;
    let target = if upsample && opset < 9 {
        let scales = a
            .floats("scales")?
            .ok_or_else(|| a.error("scales", "is required"))?;
        Some(Target::Scales(scales.to_vec()))
    } else if legacy {
        cx.constant(1, "scales")?
            .map(|c| floats_of(cx, &c, "scales").map(Target::Scales))
            .transpose()?
    } else {
        let scales = cx.opt_constant(2, "scales");
        let sizes = cx.opt_constant(3, "sizes");
        match (scales, sizes) {
            (_, Some(s)) if !s.is_empty() => match s.as_i64() {
                Some(v) => Some(Target::Sizes(v.to_vec())),
                None => return Err(cx.invalid("sizes must be INT64")),
            },
            (Some(s), _) if !s.is_empty() => Some(Target::Scales(floats_of(cx, &s, "scales")?)),
            _ if cx.failed() => None,
            _ => return Err(cx.invalid("needs scales or sizes")),
        }
    };
    let (Some(x), Some(target), Some(mode), Some(coord)) = (x, target, mode, coord) else {
        return Ok(());
    };
    if cx.failed() {
        return Ok(());
    }
    let shape = cx.ty(x).shape;
    if shape.len() != 4 {
        cx.unsupported(
            DiagnosticKind::UnsupportedAttribute,
            format!(
                "resizing a rank-{} tensor is not supported (only NCHW)",
                shape.len()
            ),
            "resize a [N, C, H, W] tensor",
        );
        return Ok(());
    }
    // Per-axis scale and output size over all four axes.
    let axes: Vec<usize> = match axes {
        None => (0..4).collect(),
        Some(v) => v
            .iter()
            .map(|&d| {
                super::normalize_axis(d, 4)
                    .ok_or_else(|| cx.invalid(format!("axis {d} is out of range for rank 4")))
            })
            .collect::<Result<_, _>>()?,
    };
    let mut scales = [1f32; 4];
    let mut out = shape.clone();
    match &target {
        Target::Scales(s) => {
            if s.len() != axes.len() {
                return Err(cx.invalid(format!("scales {s:?} do not match axes {axes:?}")));
            }
            for (&d, &f) in axes.iter().zip(s) {
                if !(f.is_finite() && f > 0.0) {
                    return Err(cx.invalid(format!("scale {f} must be positive")));
                }
                scales[d] = f;
                out[d] = (shape[d] as f32 * f) as usize;
            }
        }
        Target::Sizes(v) => {
            if v.len() != axes.len() {
                return Err(cx.invalid(format!("sizes {v:?} do not match axes {axes:?}")));
            }
            for (&d, &n) in axes.iter().zip(v) {
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n > 0 && n <= crate::import::MAX_ELEMENTS)
                    .ok_or_else(|| cx.invalid(format!("size {n} must be positive")))?;
                out[d] = n;
                scales[d] = n as f32 / shape[d].max(1) as f32;
            }
        }
    }
    if out[0] != shape[0] || out[1] != shape[1] {
        cx.unsupported(
            DiagnosticKind::UnsupportedAttribute,
            format!("resizing N or C ({shape:?} to {out:?}) is not supported (only H and W)"),
            "use scales 1 (or the same sizes) on the batch and channel axes",
        );
        return Ok(());
    }
    if out[2..].iter().any(|&n| n > crate::import::MAX_ELEMENTS) {
        return Err(cx.invalid(format!("the output {out:?} is too large")));
    }
    if out[2] == 0 || out[3] == 0 {
        return Err(cx.invalid(format!("the output {out:?} would be empty")));
    }
    let nearest_mode = match nearest_mode {
        Some(m) => m,
        None if mode == ResizeMode::Linear => NearestMode::Floor,
        None => {
            let (up, down) = (
                scales[2..].iter().any(|&s| s > 1.0),
                scales[2..].iter().any(|&s| s < 1.0),
            );
            if up && down {
                cx.unsupported(
                    DiagnosticKind::UnsupportedAttribute,
                    format!("legacy nearest resizing that grows one axis and shrinks the other (scales {scales:?}) is not supported"),
                    "convert the model to opset 11 or later",
                );
                return Ok(());
            }
            if down {
                NearestMode::Ceil
            } else {
                NearestMode::Floor
            }
        }
    };
    cx.emit_output(
        Op::Resize(Resize {
            mode,
            coord,
            nearest_mode,
            out: [out[2], out[3]],
            scales: [scales[2], scales[3]],
        }),
        &[x],
    )
}
