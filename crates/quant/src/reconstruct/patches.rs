//! Sampled im2col rows of a linear layer's input: the layer becomes a matrix problem
//! `Y = X Wᵀ + b` per group, on the quantized input and, in step, on the float model's.

use crate::hessian::PatchGeometry;

/// Sampled patches, one row-major `rows × K` matrix per group.
pub(crate) struct Patches {
    pub rows: usize,
    pub k: usize,
    /// Per group: the quantized input's patches (real values).
    pub x: Vec<Vec<f32>>,
    /// Per group: the float model's patches at the same positions.
    pub float: Vec<Vec<f32>>,
}

/// Patches of samples `quantized` (with `float`, the float model's values of the same
/// input, or the quantized ones again), about `budget` in all, spread evenly over the
/// samples and over each sample's output positions (deterministic).
pub(crate) fn sample(
    geom: &PatchGeometry,
    quantized: &[Vec<f32>],
    float: &[&[f32]],
    budget: usize,
) -> Patches {
    let n = quantized.len();
    let positions = geom.positions();
    let per_sample = budget.div_ceil(n.max(1)).clamp(1, positions);
    let stride = positions / per_sample;
    let k = geom.patch_len();
    let rows = n * per_sample;
    let mut x = vec![vec![0f32; rows * k]; geom.groups];
    let mut f = vec![vec![0f32; rows * k]; geom.groups];
    for s in 0..n {
        for j in 0..per_sample {
            let pos = j * stride + s % stride;
            let r = s * per_sample + j;
            for g in 0..geom.groups {
                geom.patch_at(&quantized[s], g, pos, &mut x[g][r * k..(r + 1) * k]);
                geom.patch_at(float[s], g, pos, &mut f[g][r * k..(r + 1) * k]);
            }
        }
    }
    Patches {
        rows,
        k,
        x,
        float: f,
    }
}
