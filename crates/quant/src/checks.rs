//! Checks of the calibration data before any work: non-finite values are errors
//! ([`check_finite`]); constant inputs and too few samples are warnings
//! ([`input_warnings`]) that end up in `QuantReport::warnings`.
//!
//! Why: NaN passes the float statistics silently (histograms skip it) and then poisons
//! the integer run; ±Inf turns into an absurd exponent and surfaces much later as an
//! accumulator overflow; constant data quietly yields a useless model. Each case is
//! reported where it is visible: in the data, with the sample and element.

use std::fmt;

use lutq_ir::{Graph, Tensor};

/// Fewer calibration samples than this get a warning.
pub const MIN_CALIBRATION_SAMPLES: usize = 16;

/// A NaN or infinite calibration value and where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct NonFiniteValue {
    /// Sample index (first dimension of the calibration tensor).
    pub sample: usize,
    /// Element index inside the sample (row-major over the model input's shape).
    pub element: usize,
    /// The element's coordinates, e.g. `channel 1, y 4, x 3` (NCHW inputs), or
    /// `feature 5` (`[1, F]` inputs); empty for other ranks.
    pub position: String,
    /// `NaN`, `+inf` or `-inf`.
    pub value: &'static str,
}

impl fmt::Display for NonFiniteValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sample {}, element {}", self.sample, self.element)?;
        if !self.position.is_empty() {
            write!(f, " ({})", self.position)?;
        }
        write!(
            f,
            " is {}. Fix: repair or drop that sample (NaN and infinities usually come from a \
             division by zero or a missing value in preprocessing); every calibration value \
             must be finite",
            self.value
        )
    }
}

/// The coordinates of element `e` of a sample of shape `shape` (batch dimension first).
fn position(shape: &[usize], e: usize) -> String {
    match shape {
        [_, c, h, w] if c * h * w > 0 => {
            let plane = h * w;
            format!("channel {}, y {}, x {}", e / plane, (e % plane) / w, e % w)
        }
        [_, _] => format!("feature {e}"),
        _ => String::new(),
    }
}

/// The first non-finite value of `data` (samples of `sample_shape`), if any.
pub fn first_non_finite(data: &[f32], sample_shape: &[usize]) -> Option<NonFiniteValue> {
    let per: usize = sample_shape.iter().product::<usize>().max(1);
    let i = data.iter().position(|v| !v.is_finite())?;
    let v = data[i];
    Some(NonFiniteValue {
        sample: i / per,
        element: i % per,
        position: position(sample_shape, i % per),
        value: if v.is_nan() {
            "NaN"
        } else if v > 0.0 {
            "+inf"
        } else {
            "-inf"
        },
    })
}

/// The model input's shape (batch 1), when the graph has one input.
fn input_shape(graph: &Graph) -> Option<Vec<usize>> {
    graph
        .inputs()
        .first()
        .map(|&i| graph.node(i).ty.shape.clone())
}

/// Refuses calibration data with a NaN or an infinity.
pub fn check_finite(graph: &Graph, calib: &Tensor) -> Result<(), crate::QuantError> {
    let (Some(shape), Some(data)) = (input_shape(graph), calib.as_f32()) else {
        return Ok(()); // other problems are reported by the calibration itself
    };
    match first_non_finite(data, &shape) {
        Some(v) => Err(crate::QuantError::NonFinite(v)),
        None => Ok(()),
    }
}

/// Constant calibration data (as a whole or per input channel) and too few samples.
pub fn input_warnings(graph: &Graph, calib: &Tensor) -> Vec<String> {
    let mut warnings = Vec::new();
    let (Some(shape), Some(data)) = (input_shape(graph), calib.as_f32()) else {
        return warnings;
    };
    let per: usize = shape.iter().product();
    if per == 0 || data.is_empty() || !data.len().is_multiple_of(per) {
        return warnings;
    }
    let samples = data.len() / per;
    if samples < MIN_CALIBRATION_SAMPLES {
        warnings.push(format!(
            "only {samples} calibration sample{}: activation ranges and the weight fit rest on \
             very few examples (fewer than {MIN_CALIBRATION_SAMPLES}). Fix: pass a few hundred \
             samples like the model's inputs (--calib-limit defaults to 256)",
            if samples == 1 { "" } else { "s" }
        ));
    }
    let (lo, hi) = min_max(data.iter().copied());
    if lo == hi {
        warnings.push(format!(
            "calibration data is constant (every value is {lo}{}): activation exponents and \
             the weight fit learn nothing from it and the quantized model will be useless. \
             Fix: calibrate on real inputs, preprocessed like the inputs the model will see",
            if lo == 0.0 { ", all zero" } else { "" }
        ));
        return warnings;
    }
    // Per input channel (NCHW, or the features of a [1, F] input).
    let (channels, plane) = match shape.as_slice() {
        [_, c, h, w] => (*c, h * w),
        [_, f] => (*f, 1),
        _ => return warnings,
    };
    let mut constant = Vec::new();
    for c in 0..channels {
        let values = (0..samples).flat_map(|s| {
            let start = s * per + c * plane;
            data[start..start + plane].iter().copied()
        });
        let (lo, hi) = min_max(values);
        if lo == hi {
            constant.push((c, lo));
        }
    }
    if !constant.is_empty() && channels > 1 {
        let what = if plane == 1 { "feature" } else { "channel" };
        let list: Vec<String> = constant
            .iter()
            .take(8)
            .map(|(c, v)| format!("{c} (= {v})"))
            .collect();
        warnings.push(format!(
            "calibration input {what}{} {}{} of {channels} {} constant over all {samples} \
             samples: the quantizer learns nothing about {}. Fix: calibrate on real inputs \
             whose every {what} varies",
            if constant.len() == 1 { "" } else { "s" },
            list.join(", "),
            if constant.len() > 8 { ", …" } else { "" },
            if constant.len() == 1 { "is" } else { "are" },
            if constant.len() == 1 { "it" } else { "them" },
        ));
    }
    warnings
}

fn min_max(values: impl Iterator<Item = f32>) -> (f32, f32) {
    values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_are_located() {
        let shape = [1, 2, 3, 4];
        let mut data = vec![0.0f32; 3 * 24];
        data[2 * 24 + 12 + 5] = f32::NAN;
        let v = first_non_finite(&data, &shape).unwrap();
        assert_eq!((v.sample, v.element, v.value), (2, 17, "NaN"));
        assert_eq!(v.position, "channel 1, y 1, x 1");
        data[3] = f32::NEG_INFINITY;
        let v = first_non_finite(&data, &shape).unwrap();
        assert_eq!((v.sample, v.element, v.value), (0, 3, "-inf"));
        assert!(
            v.to_string()
                .starts_with("sample 0, element 3 (channel 0, y 0, x 3) is -inf. Fix:")
        );
    }
}
