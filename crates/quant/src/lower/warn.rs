//! Warnings about a linear layer's calibration: too few input patches for its fan-in,
//! and inputs that are constant over the whole calibration set.

use crate::fit::TARGET_MIN_PATCHES_PER_INPUT;

/// The fit of a layer with fan-in `k` saw `sampled` input patches (`per_sample` per
/// calibration sample, at most `max_patches`): fewer than `k` make `H = Σ x xᵀ` singular;
/// with float targets wanted, fewer than `TARGET_MIN_PATCHES_PER_INPUT · k` leave the
/// layer fitted to its float weights. `None` when neither applies (or when no sample
/// count could help: the cap on sampled patches is below what is needed).
pub(super) fn patch_warning(
    layer: &str,
    sampled: usize,
    k: usize,
    per_sample: usize,
    max_patches: usize,
    float_target: bool,
) -> Option<String> {
    let samples_for = |patches: usize| patches.div_ceil(per_sample.max(1));
    if sampled < k {
        return Some(format!(
            "layer '{layer}': the weight fit saw {sampled} input patches for a fan-in of {k}: \
             its input second moment H = Σ x xᵀ has rank at most {sampled} < {k} (singular), \
             so the GPTQ codes rest on the 1 % dampening alone{}. Fix: calibrate on at least \
             {} samples ({} for float targets)",
            if float_target {
                " and the layer gets no float target"
            } else {
                ""
            },
            samples_for(k),
            samples_for(TARGET_MIN_PATCHES_PER_INPUT * k),
        ));
    }
    let needed = TARGET_MIN_PATCHES_PER_INPUT * k;
    if float_target && sampled < needed && needed <= max_patches {
        return Some(format!(
            "layer '{layer}': the weight fit saw {sampled} input patches for a fan-in of {k}, \
             fewer than the {needed} ({TARGET_MIN_PATCHES_PER_INPUT} per input) float targets \
             need: fitted to its float weights instead. Fix: calibrate on at least {} samples",
            samples_for(needed),
        ));
    }
    None
}

/// The input channels (`channels` planes of `plane` values per sample) that hold one
/// value over every sample.
pub(super) fn constant_channels(
    samples: &[lutq_interp::IntData],
    channels: usize,
    plane: usize,
) -> Vec<usize> {
    // The integers, not their real values: dequantizing is exact and one-to-one for the
    // 8-bit inputs of linear layers, so the same channels are constant.
    (0..channels)
        .filter(|&c| {
            let mut values = samples.iter().flat_map(|s| {
                let range = if (c + 1) * plane <= s.len() {
                    c * plane..(c + 1) * plane
                } else {
                    0..0
                };
                range.map(move |i| s.get(i))
            });
            match values.next() {
                Some(first) => values.all(|v| v == first),
                None => false,
            }
        })
        .collect()
}

/// A warning when more than half of a layer's input channels are constant over the
/// calibration set (a few are normal: ReLU channels that never fire).
pub(super) fn constant_input_warning(
    layer: &str,
    constant: &[usize],
    channels: usize,
    samples: usize,
) -> Option<String> {
    (channels > 0 && 2 * constant.len() > channels).then(|| {
        format!(
            "layer '{layer}': {} of its {channels} input channels are constant over all \
             {samples} calibration samples: its weights on them are fitted blind and its \
             output barely depends on the data. Fix: calibrate on more varied inputs",
            constant.len()
        )
    })
}
