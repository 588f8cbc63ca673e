//! Sampled im2col rows of a linear layer's input: the layer becomes a matrix problem
//! `Y = X Wᵀ + b` per group, on the quantized input and, in step, on the float model's.

/// Where a linear layer reads its input: a conv's geometry, or a dense layer as a 1×1
/// conv over a 1×1 plane of `channels` inputs.
#[derive(Clone, Debug)]
pub(crate) struct Geometry {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    /// top, left, bottom, right.
    pub pads: [usize; 4],
    pub dilations: [usize; 2],
    pub groups: usize,
    pub out_height: usize,
    pub out_width: usize,
}

impl Geometry {
    /// Elements of one group's patch (`K`).
    pub fn patch_len(&self) -> usize {
        self.channels / self.groups * self.kernel[0] * self.kernel[1]
    }

    fn positions(&self) -> usize {
        self.out_height * self.out_width
    }

    /// Writes group `g`'s patch at output position `pos` of `x` (`[C][H][W]`) into `out`.
    fn patch(&self, x: &[f32], g: usize, pos: usize, out: &mut [f32]) {
        let cg = self.channels / self.groups;
        let [kh, kw] = self.kernel;
        let (oy, ox) = (pos / self.out_width, pos % self.out_width);
        let mut i = 0;
        for c in g * cg..(g + 1) * cg {
            let plane = &x[c * self.height * self.width..(c + 1) * self.height * self.width];
            for ky in 0..kh {
                let iy = (oy * self.strides[0] + ky * self.dilations[0]) as isize
                    - self.pads[0] as isize;
                for kx in 0..kw {
                    let ix = (ox * self.strides[1] + kx * self.dilations[1]) as isize
                        - self.pads[1] as isize;
                    out[i] = if iy >= 0
                        && ix >= 0
                        && (iy as usize) < self.height
                        && (ix as usize) < self.width
                    {
                        plane[iy as usize * self.width + ix as usize]
                    } else {
                        0.0
                    };
                    i += 1;
                }
            }
        }
    }
}

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
    geom: &Geometry,
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
                geom.patch(&quantized[s], g, pos, &mut x[g][r * k..(r + 1) * k]);
                geom.patch(float[s], g, pos, &mut f[g][r * k..(r + 1) * k]);
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
