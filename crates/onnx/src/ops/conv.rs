//! Conv, and ConvTranspose as stride-1 Convs (one per output phase) interleaved.

use lutq_ir::{Conv, Op};

use super::{AutoPad, OpDef, auto_pad, no_const, window_pads};
use crate::attrs::MAX_ATTR_VALUE;
use crate::error::{DiagnosticKind, ImportError};
use crate::import::NodeCx;
use crate::tensor::ConstValue;

pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "Conv",
        convert: conv,
        const_inputs: no_const,
        ignored_inputs: &[],
        eval_const: None,
    },
    OpDef {
        op_type: "ConvTranspose",
        convert: conv_transpose,
        const_inputs: weights_const,
        ignored_inputs: &[],
        eval_const: None,
    },
];

/// ConvTranspose's weights must be known at import: they are rearranged into the phase
/// convolutions' weights.
fn weights_const(_: i64) -> &'static [usize] {
    &[1]
}

/// Conv-1/11/22: `X [N,C,H,W]`, `W [M,C/group,kH,kW]`, optional `B [M]`. Only 2-D.
fn conv(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let a = cx.attrs();
    let auto = auto_pad(cx)?;
    let kernel_shape = a.ints("kernel_shape")?;
    let x = cx.tensor(0, "X")?;
    let w = cx.tensor(1, "W")?;
    let b = cx.opt_tensor(2, "B");

    let w_rank = w.map(|w| cx.ty(w).rank());
    require_2d(cx, "convolution", kernel_shape, w_rank, x);
    let (Some(x), Some(w)) = (x, w) else {
        return Ok(());
    };
    if cx.failed() {
        return Ok(());
    }

    let (xt, wt) = (cx.ty(x), cx.ty(w));
    if xt.rank() != 4 || wt.rank() != 4 {
        return Err(cx.invalid(format!("input {xt} and weights {wt} must both have rank 4")));
    }
    let kernel = [wt.shape[2], wt.shape[3]];
    let Window {
        strides,
        dilations,
        group,
    } = window(cx, kernel_shape, kernel)?;
    let pads = a.usize_array::<4>("pads", 0)?;
    let pads = window_pads(
        auto,
        pads,
        [xt.shape[2], xt.shape[3]],
        kernel,
        strides,
        dilations,
    );
    let op = Op::Conv(Conv {
        strides,
        pads,
        dilations,
        group,
        activation: None,
    });
    let inputs: Vec<_> = [x, w].into_iter().chain(b).collect();
    cx.emit_output(op, &inputs)
}

/// Reports a convolution whose spatial rank (from whatever is known: the kernel_shape
/// attribute, the weights' rank, the input's) is not 2.
fn require_2d(
    cx: &mut NodeCx<'_, '_>,
    what: &str,
    kernel_shape: Option<&[i64]>,
    w_rank: Option<usize>,
    x: Option<lutq_ir::NodeId>,
) {
    let rank = kernel_shape
        .map(|k| k.len())
        .or_else(|| w_rank.map(|r| r.saturating_sub(2)))
        .or_else(|| x.map(|x| cx.ty(x).rank().saturating_sub(2)));
    if let Some(r) = rank
        && r != 2
    {
        cx.unsupported(
            DiagnosticKind::UnsupportedAttribute,
            format!("{r}-D {what} is not supported (only 2-D, NCHW)"),
            format!("express it as a 2-D {what} (e.g. a 1-D one as 1×k over an unsqueezed input)"),
        );
    }
}

/// The sliding-window attributes Conv and ConvTranspose share.
struct Window {
    strides: [usize; 2],
    dilations: [usize; 2],
    group: usize,
}

/// Reads [`Window`], checking `kernel_shape` (when given) against the weights' `kernel`.
fn window(
    cx: &NodeCx<'_, '_>,
    kernel_shape: Option<&[i64]>,
    kernel: [usize; 2],
) -> Result<Window, ImportError> {
    let a = cx.attrs();
    if let Some(ks) = kernel_shape
        && ks != [kernel[0] as i64, kernel[1] as i64]
    {
        return Err(a.error(
            "kernel_shape",
            format!("{ks:?} contradicts the weights' spatial dims {kernel:?}"),
        ));
    }
    let group = a.int_or("group", 1)?;
    Ok(Window {
        strides: a.usize_array::<2>("strides", 1)?.unwrap_or([1, 1]),
        dilations: a.usize_array::<2>("dilations", 1)?.unwrap_or([1, 1]),
        group: usize::try_from(group)
            .ok()
            .filter(|&g| (1..=MAX_ATTR_VALUE).contains(&g))
            .ok_or_else(|| a.error("group", format!("must be >= 1, got {group}")))?,
    })
}

/// `parts` interleaved along a new axis: each reshaped to `shape` (a size-1 axis at
/// `axis`), then concatenated along it; a single part is returned as it is.
fn stack(
    cx: &mut NodeCx<'_, '_>,
    parts: &[lutq_ir::NodeId],
    part_name: impl Fn(usize) -> String,
    shape: Vec<usize>,
    axis: usize,
    name: &str,
) -> Result<lutq_ir::NodeId, ImportError> {
    if let [one] = parts {
        return Ok(*one);
    }
    let reshaped: Vec<_> = parts
        .iter()
        .enumerate()
        .map(|(k, &p)| {
            cx.emit_aux(
                &part_name(k),
                Op::Reshape {
                    shape: shape.clone(),
                },
                &[p],
            )
        })
        .collect::<Result<_, _>>()?;
    cx.emit_aux(name, Op::Concat { axis }, &reshaped)
}

/// One spatial axis of a ConvTranspose, split into output phases.
///
/// In the full (unpadded) output of length `full = (in − 1)·s + (k − 1)·d + 1 + output_padding`,
/// input `i` and tap `j` meet at `t = i·s + j·d`. Writing `t = q·s + r`, tap `j` feeds phase
/// `r = (j·d) mod s` with `i = q − m_j`, `m_j = ⌊j·d / s⌋`: each phase is a stride-1
/// correlation of the input with the taps of that residue, flipped. The phase kernel of
/// `r` has length `M_r = max m_j + 1` (1 where no tap has residue `r`: a phase of bias
/// only). Every phase computes `q ∈ [first, first + len)` (`M_r − 1 − first` leading pads):
/// interleaved, they give the outputs `t ∈ [first·s, (first + len)·s)`, which hold the
/// wanted window `[begin, begin + out)` — `begin` the leading pad, negative where
/// `output_shape` asks for more than the full output (those outputs are the bias alone).
#[derive(Clone, Debug, PartialEq)]
struct PhaseAxis {
    stride: usize,
    /// Per phase: for each tap `j`, its position in the phase kernel (`None`: another
    /// phase), and the phase kernel's length.
    taps: Vec<(Vec<Option<usize>>, usize)>,
    /// The first phase index computed (≤ 0).
    first: i64,
    /// Values per phase.
    len: usize,
    /// Where the wanted window starts in the interleaved values.
    crop: usize,
}

impl PhaseAxis {
    /// `begin`: the leading pad of the full output (negative: outputs before it);
    /// `out`: the output length.
    fn new(
        input: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
        begin: i64,
        out: usize,
    ) -> Self {
        let taps = (0..stride)
            .map(|r| {
                let m: Vec<Option<usize>> = (0..kernel)
                    .map(|j| ((j * dilation) % stride == r).then_some(j * dilation / stride))
                    .collect();
                let len = m.iter().flatten().max().map_or(1, |&mx| mx + 1);
                (m.iter().map(|m| m.map(|m| len - 1 - m)).collect(), len)
            })
            .collect();
        let s = stride as i64;
        let first = begin.div_euclid(s).min(0);
        // At least the phase indices of every input (q = i + m ≥ i), so that the
        // trailing pads are never negative.
        let last = (begin + out as i64 - 1).div_euclid(s) + 1;
        let last = last.max(input as i64);
        PhaseAxis {
            stride,
            taps,
            first,
            len: (last - first) as usize,
            crop: (begin - first * s) as usize,
        }
    }

    /// The phase convolution's `(leading, trailing)` pads for a phase kernel of `m` taps.
    fn pads(&self, input: usize, m: usize) -> (usize, usize) {
        let lead = m - 1 + (-self.first) as usize;
        // Output length `input + lead + trail − m + 1 = len`.
        (lead, self.len + m - 1 - input - lead)
    }
}

/// ConvTranspose-1/11/22: `X [N,C,H,W]`, `W [C, M/group, kH, kW]`, optional `B [M]`.
/// Only 2-D. Imported as `sH·sW` stride-1 Convs, one per output phase ([`PhaseAxis`]),
/// interleaved by Reshape and Concat and cropped to the pads by Slice: ops every stage
/// already quantizes and every backend runs, so a transposed convolution costs no new
/// kernel. The phase kernels hold each weight exactly once.
fn conv_transpose(cx: &mut NodeCx<'_, '_>) -> Result<(), ImportError> {
    let a = cx.attrs();
    let auto = auto_pad(cx)?;
    let kernel_shape = a.ints("kernel_shape")?;
    let x = cx.tensor(0, "X")?;
    let w = cx.constant(1, "W")?;
    let b = cx.opt_tensor(2, "B");
    let w_rank = w.as_ref().map(|w| w.shape().len());
    require_2d(cx, "transposed convolution", kernel_shape, w_rank, x);
    let (Some(x), Some(w)) = (x, w) else {
        return Ok(());
    };
    if cx.failed() {
        return Ok(());
    }
    let xt = cx.ty(x);
    let wshape = w.shape().to_vec();
    if xt.rank() != 4 || wshape.len() != 4 {
        return Err(cx.invalid(format!(
            "input {xt} and weights {wshape:?} must both have rank 4"
        )));
    }
    let Some(wdata) = w.as_f32() else {
        return Err(cx.invalid("the weights W must be floating-point"));
    };
    let [n, c, h, wd] = [xt.shape[0], xt.shape[1], xt.shape[2], xt.shape[3]];
    let kernel = [wshape[2], wshape[3]];
    let Window {
        strides,
        dilations,
        group,
    } = window(cx, kernel_shape, kernel)?;
    let output_padding = a.usize_array::<2>("output_padding", 0)?.unwrap_or([0, 0]);
    if wshape[0] != c || c % group != 0 {
        return Err(cx.invalid(format!(
            "weights {wshape:?} need {c} input channels (dimension 0) in {group} groups"
        )));
    }
    if h == 0 || wd == 0 || kernel.contains(&0) {
        return Err(cx.invalid(format!("empty input {xt} or kernel {kernel:?}")));
    }
    let full = |d: usize, input: usize| {
        ((input - 1) * strides[d] + (kernel[d] - 1) * dilations[d] + 1 + output_padding[d]) as i64
    };
    let full_hw = [full(0, h), full(1, wd)];
    // Leading and trailing pads of the full output, [top, left, bottom, right]: given, or
    // from output_shape or auto_pad by the ONNX rule (the total padding, negative when the
    // shape asked for exceeds the full output, splits with the odd unit at the end for
    // SAME_UPPER and at the beginning otherwise, rounding down as ONNX's reference does).
    let output_shape = a.usizes("output_shape", 1)?;
    let split = |total: i64, upper: bool| {
        let half = total.div_euclid(2);
        if upper {
            (half, total - half)
        } else {
            (total - half, half)
        }
    };
    let pads: [i64; 4] = match (output_shape, auto) {
        (Some(os), _) => {
            let os = &os[os.len().saturating_sub(2)..];
            if os.len() != 2 {
                return Err(a.error(
                    "output_shape",
                    format!("{os:?}: expected the 2 spatial sizes"),
                ));
            }
            let upper = auto == AutoPad::SameUpper;
            let (t, bo) = split(full_hw[0] - os[0] as i64, upper);
            let (l, r) = split(full_hw[1] - os[1] as i64, upper);
            [t, l, bo, r]
        }
        (None, AutoPad::NotSet) => a
            .usize_array::<4>("pads", 0)?
            .unwrap_or([0; 4])
            .map(|p| p as i64),
        (None, AutoPad::Valid) => [0; 4],
        (None, AutoPad::SameUpper | AutoPad::SameLower) => {
            let upper = auto == AutoPad::SameUpper;
            let (t, bo) = split(full_hw[0] - (h * strides[0]) as i64, upper);
            let (l, r) = split(full_hw[1] - (wd * strides[1]) as i64, upper);
            [t, l, bo, r]
        }
    };
    let out_hw = [
        full_hw[0] - pads[0] - pads[2],
        full_hw[1] - pads[1] - pads[3],
    ];
    if out_hw.iter().any(|&o| o <= 0) {
        return Err(cx.invalid(format!(
            "pads {pads:?} leave nothing of the full output {full_hw:?}"
        )));
    }
    let out_hw = out_hw.map(|o| o as usize);

    let m_per_g = wshape[1];
    let c_per_g = c / group;
    let m = m_per_g * group;
    let ay = PhaseAxis::new(h, kernel[0], strides[0], dilations[0], pads[0], out_hw[0]);
    let ax = PhaseAxis::new(wd, kernel[1], strides[1], dilations[1], pads[1], out_hw[1]);
    // Phase convs, row by row of phases.
    let mut rows = Vec::with_capacity(strides[0]);
    for (ry, (ty, ky)) in ay.taps.iter().enumerate() {
        let mut phases = Vec::with_capacity(strides[1]);
        for (rx, (tx, kx)) in ax.taps.iter().enumerate() {
            // Conv weights [M, C/group, ky, kx]: W'[g·M_g + o][i][a][b] = W[g·C_g + i][o][jy][jx].
            let mut pw = vec![0f32; m * c_per_g * ky * kx];
            for g in 0..group {
                for i in 0..c_per_g {
                    for o in 0..m_per_g {
                        for (jy, py) in ty.iter().enumerate() {
                            let Some(py) = py else { continue };
                            for (jx, px) in tx.iter().enumerate() {
                                let Some(px) = px else { continue };
                                let src = (((g * c_per_g + i) * m_per_g + o) * kernel[0] + jy)
                                    * kernel[1]
                                    + jx;
                                let dst = (((g * m_per_g + o) * c_per_g + i) * ky + py) * kx + px;
                                pw[dst] = wdata[src];
                            }
                        }
                    }
                }
            }
            let weights = ConstValue::f32(vec![m, c_per_g, *ky, *kx], pw)
                .map_err(|e| cx.invalid(format!("phase weights: {e}")))?;
            let Some(wid) = cx.constant_node(&format!("phase{ry}_{rx}:weights"), &weights) else {
                return Ok(());
            };
            let op = Op::Conv(Conv {
                strides: [1, 1],
                pads: {
                    let ((t, bo), (l, r)) = (ay.pads(h, *ky), ax.pads(wd, *kx));
                    [t, l, bo, r]
                },
                dilations: [1, 1],
                group,
                activation: None,
            });
            let inputs: Vec<_> = [x, wid].into_iter().chain(b).collect();
            let y = cx.emit_aux(&format!("phase{ry}_{rx}"), op, &inputs)?;
            phases.push(y);
        }
        // Interleave the columns: [N,M,Qy,Qx] each → [N,M,Qy,Qx,sx] → [N,M,Qy,1,Qx·sx].
        let row = stack(
            cx,
            &phases,
            |rx| format!("phase{ry}_{rx}:column"),
            vec![n, m, ay.len, ax.len, 1],
            4,
            &format!("row{ry}"),
        )?;
        rows.push(row);
    }
    let wide = [ay.len * strides[0], ax.len * strides[1]];
    // The rest is a chain: [Concat of the rows,] Reshape to [N,M,·,·], the crops. Its last
    // op carries the node's own name.
    let mut chain: Vec<(String, Op)> = Vec::new();
    let mut y = stack(
        cx,
        &rows,
        |ry| format!("row{ry}:line"),
        vec![n, m, ay.len, 1, wide[1]],
        3,
        "rows",
    )?;
    if strides != [1, 1] {
        chain.push((
            "interleaved".into(),
            Op::Reshape {
                shape: vec![n, m, wide[0], wide[1]],
            },
        ));
    }
    for (d, axis) in [(0, 2), (1, 3)] {
        let crop = [ay.crop, ax.crop][d];
        if crop != 0 || out_hw[d] != wide[d] {
            let op = Op::Slice {
                axis,
                start: crop,
                end: crop + out_hw[d],
                step: 1,
            };
            chain.push((format!("crop{axis}"), op));
        }
    }
    match chain.pop() {
        None => {
            // Stride 1, nothing cropped: the one phase conv is the output (an Identity
            // gives it the node's name).
            let out = cx.emit(Op::Identity, &[y])?;
            cx.set_output(0, crate::import::Value::Tensor(out));
        }
        Some((_, last)) => {
            for (suffix, op) in chain {
                y = cx.emit_aux(&suffix, op, &[y])?;
            }
            cx.emit_output(last, &[y])?;
        }
    }
    Ok(())
}
