//! Shape and type inference: the output type of an op from its input types, with every
//! consistency check the op needs. Runs whenever a node is added, so a built graph is
//! always well typed.

use crate::op::{Conv, Gemm, Op, Pool};
use crate::tensor::{ElemType, TensorType};

/// Why an op cannot accept its inputs; the graph wraps it with the node's name.
pub type InferError = String;

/// Output type of `op` applied to inputs of the given types.
pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<TensorType, InferError> {
    let arity = |min: usize, max: usize| -> Result<(), InferError> {
        if inputs.len() < min || inputs.len() > max {
            Err(if min == max {
                format!("expects {min} inputs, got {}", inputs.len())
            } else {
                format!("expects {min} to {max} inputs, got {}", inputs.len())
            })
        } else {
            Ok(())
        }
    };
    match op {
        Op::Input | Op::Constant(_) => {
            arity(0, 0)?;
            Err("input and constant nodes carry their own type".into())
        }
        Op::Conv(c) => {
            arity(2, 3)?;
            all_f32(inputs)?;
            conv(c, inputs)
        }
        Op::BatchNorm { .. } => {
            arity(5, 5)?;
            all_f32(inputs)?;
            let x = inputs[0];
            if x.rank() < 2 {
                return Err(format!("input must have rank >= 2, got {x}"));
            }
            let c = x.shape[1];
            for (name, t) in ["scale", "bias", "mean", "var"].iter().zip(&inputs[1..]) {
                if t.shape != [c] {
                    return Err(format!("{name} must be [{c}] (one per channel), got {t}"));
                }
            }
            Ok(x.clone())
        }
        Op::Activation(_) | Op::Identity | Op::Dropout => {
            arity(1, 1)?;
            all_f32(inputs)?;
            Ok(inputs[0].clone())
        }
        Op::PRelu => {
            arity(2, 2)?;
            all_f32(inputs)?;
            let out = broadcast(&inputs[0].shape, &inputs[1].shape)?;
            if out != inputs[0].shape {
                return Err(format!(
                    "slope {} must broadcast to the input {}",
                    inputs[1], inputs[0]
                ));
            }
            Ok(inputs[0].clone())
        }
        Op::Binary(_) => {
            arity(2, 2)?;
            all_f32(inputs)?;
            Ok(TensorType::f32(broadcast(
                &inputs[0].shape,
                &inputs[1].shape,
            )?))
        }
        Op::MaxPool(p) | Op::AveragePool(p) | Op::SumPool(p) => {
            arity(1, 1)?;
            all_f32(inputs)?;
            pool(p, inputs[0])
        }
        Op::GlobalAveragePool | Op::GlobalSumPool => {
            arity(1, 1)?;
            all_f32(inputs)?;
            let x = inputs[0];
            if x.rank() < 3 {
                return Err(format!("input must be [N, C, spatial…], got {x}"));
            }
            let mut shape = x.shape.clone();
            shape[2..].fill(1);
            Ok(TensorType::f32(shape))
        }
        Op::Gemm(g) => {
            arity(2, 3)?;
            all_f32(inputs)?;
            gemm(g, inputs)
        }
        Op::MatMul => {
            arity(2, 2)?;
            all_f32(inputs)?;
            matmul(&inputs[0].shape, &inputs[1].shape).map(TensorType::f32)
        }
        Op::Reshape { shape } => {
            arity(1, 1)?;
            let x = inputs[0];
            let n: usize = shape.iter().product();
            if n != x.num_elements() {
                return Err(format!(
                    "cannot reshape {x} ({} elements) to {shape:?} ({n} elements)",
                    x.num_elements()
                ));
            }
            Ok(TensorType::new(x.elem, shape.clone()))
        }
        Op::Transpose { perm } => {
            arity(1, 1)?;
            let x = inputs[0];
            let mut seen = vec![false; x.rank()];
            if perm.len() != x.rank() {
                return Err(format!("perm {perm:?} has the wrong length for {x}"));
            }
            for &p in perm {
                if p >= x.rank() || std::mem::replace(&mut seen[p], true) {
                    return Err(format!(
                        "perm {perm:?} is not a permutation of 0..{}",
                        x.rank()
                    ));
                }
            }
            Ok(TensorType::new(
                x.elem,
                perm.iter().map(|&p| x.shape[p]).collect::<Vec<_>>(),
            ))
        }
        Op::Concat { axis } => {
            if inputs.is_empty() {
                return Err("expects at least one input".into());
            }
            let first = inputs[0];
            if *axis >= first.rank() {
                return Err(format!("axis {axis} out of range for {first}"));
            }
            let mut shape = first.shape.clone();
            shape[*axis] = 0;
            for t in inputs {
                let same_elsewhere = t.rank() == first.rank()
                    && (0..t.rank()).all(|d| d == *axis || t.shape[d] == first.shape[d]);
                if t.elem != first.elem || !same_elsewhere {
                    return Err(format!(
                        "operands {first} and {t} differ outside axis {axis}"
                    ));
                }
                shape[*axis] += t.shape[*axis];
            }
            Ok(TensorType::new(first.elem, shape))
        }
        Op::Pad { pads, .. } => {
            arity(1, 1)?;
            let x = inputs[0];
            if pads.len() != 2 * x.rank() {
                return Err(format!(
                    "pads {pads:?} must have 2 × rank = {} entries for {x}",
                    2 * x.rank()
                ));
            }
            let r = x.rank();
            let shape: Vec<usize> = (0..r).map(|d| x.shape[d] + pads[d] + pads[d + r]).collect();
            Ok(TensorType::new(x.elem, shape))
        }
        Op::Slice {
            axis,
            start,
            end,
            step,
        } => {
            arity(1, 1)?;
            let x = inputs[0];
            if *axis >= x.rank() {
                return Err(format!("axis {axis} out of range for {x}"));
            }
            if *step == 0 || start > end || *end > x.shape[*axis] {
                return Err(format!(
                    "slice {start}..{end} step {step} does not fit axis {axis} of {x}"
                ));
            }
            let mut shape = x.shape.clone();
            shape[*axis] = (end - start).div_ceil(*step);
            Ok(TensorType::new(x.elem, shape))
        }
        Op::Resize(r) => {
            arity(1, 1)?;
            all_f32(inputs)?;
            let x = inputs[0];
            if x.rank() != 4 {
                return Err(format!("input must be [N, C, H, W], got {x}"));
            }
            if r.out.contains(&0) || r.scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(format!(
                    "output size {:?} and scales {:?} must be positive",
                    r.out, r.scales
                ));
            }
            Ok(TensorType::f32(vec![
                x.shape[0], x.shape[1], r.out[0], r.out[1],
            ]))
        }
        Op::Softmax { axis } => {
            arity(1, 1)?;
            all_f32(inputs)?;
            if *axis >= inputs[0].rank() {
                return Err(format!("axis {axis} out of range for {}", inputs[0]));
            }
            Ok(inputs[0].clone())
        }
    }
}

fn all_f32(inputs: &[&TensorType]) -> Result<(), InferError> {
    match inputs.iter().find(|t| t.elem != ElemType::F32) {
        Some(t) => Err(format!("float op got a non-f32 input {t}")),
        None => Ok(()),
    }
}

/// Output size of one spatial axis of a sliding window; `None` when the window does not fit.
fn window_out(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
    ceil_mode: bool,
) -> Option<usize> {
    if stride == 0 || dilation == 0 || kernel == 0 {
        return None;
    }
    let padded = input + pad_begin + pad_end;
    let span = dilation * (kernel - 1) + 1;
    if padded < span {
        return None;
    }
    let steps = padded - span;
    let mut out = if ceil_mode {
        steps.div_ceil(stride) + 1
    } else {
        steps / stride + 1
    };
    // With ceil_mode the last window must still start inside the input or the begin
    // padding (PyTorch's and onnxruntime's rule), otherwise it is dropped.
    if ceil_mode && (out - 1) * stride >= input + pad_begin {
        out -= 1;
    }
    Some(out)
}

fn conv(c: &Conv, inputs: &[&TensorType]) -> Result<TensorType, InferError> {
    let (x, w) = (inputs[0], inputs[1]);
    if x.rank() != 4 || w.rank() != 4 {
        return Err(format!(
            "only 2-D convolution (NCHW input, 4-D weights) is supported, got {x} and {w}"
        ));
    }
    let (n, ch, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (m, cg, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
    if c.group == 0 || ch != cg * c.group || m % c.group != 0 {
        return Err(format!(
            "input {x} and weights {w} do not fit group={} (need C = w[1]·group and M divisible by group)",
            c.group
        ));
    }
    if let Some(b) = inputs.get(2)
        && b.shape != [m]
    {
        return Err(format!("bias must be [{m}], got {b}"));
    }
    let oh = window_out(
        h,
        kh,
        c.strides[0],
        c.dilations[0],
        c.pads[0],
        c.pads[2],
        false,
    );
    let ow = window_out(
        wd,
        kw,
        c.strides[1],
        c.dilations[1],
        c.pads[1],
        c.pads[3],
        false,
    );
    match (oh, ow) {
        (Some(oh), Some(ow)) => Ok(TensorType::f32([n, m, oh, ow])),
        _ => Err(format!(
            "kernel {kh}×{kw} (dilations {:?}, strides {:?}) does not fit input {x} with pads {:?}",
            c.dilations, c.strides, c.pads
        )),
    }
}

fn pool(p: &Pool, x: &TensorType) -> Result<TensorType, InferError> {
    if x.rank() != 4 {
        return Err(format!(
            "only 2-D pooling (NCHW input) is supported, got {x}"
        ));
    }
    let oh = window_out(
        x.shape[2],
        p.kernel[0],
        p.strides[0],
        p.dilations[0],
        p.pads[0],
        p.pads[2],
        p.ceil_mode,
    );
    let ow = window_out(
        x.shape[3],
        p.kernel[1],
        p.strides[1],
        p.dilations[1],
        p.pads[1],
        p.pads[3],
        p.ceil_mode,
    );
    // A pad as large as the kernel would make windows that see only padding.
    let pads_ok = p.pads[0] < p.kernel[0]
        && p.pads[2] < p.kernel[0]
        && p.pads[1] < p.kernel[1]
        && p.pads[3] < p.kernel[1];
    match (oh, ow) {
        (Some(oh), Some(ow)) if pads_ok => Ok(TensorType::f32([x.shape[0], x.shape[1], oh, ow])),
        _ => Err(format!(
            "window {:?} (strides {:?}, pads {:?}) does not fit input {x}",
            p.kernel, p.strides, p.pads
        )),
    }
}

fn gemm(g: &Gemm, inputs: &[&TensorType]) -> Result<TensorType, InferError> {
    let (a, b) = (inputs[0], inputs[1]);
    if a.rank() != 2 || b.rank() != 2 {
        return Err(format!("A and B must be matrices, got {a} and {b}"));
    }
    let (m, ka) = if g.trans_a {
        (a.shape[1], a.shape[0])
    } else {
        (a.shape[0], a.shape[1])
    };
    let (kb, n) = if g.trans_b {
        (b.shape[1], b.shape[0])
    } else {
        (b.shape[0], b.shape[1])
    };
    if ka != kb {
        return Err(format!(
            "inner dimensions differ: A {a}{} and B {b}{}",
            if g.trans_a { " (transposed)" } else { "" },
            if g.trans_b { " (transposed)" } else { "" }
        ));
    }
    if let Some(c) = inputs.get(2) {
        let out = broadcast(&[m, n], &c.shape)?;
        if out != [m, n] {
            return Err(format!("C {c} does not broadcast to [{m},{n}]"));
        }
    }
    Ok(TensorType::f32([m, n]))
}

/// numpy multidirectional broadcasting.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, InferError> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// numpy `matmul` output shape (1-D operands are promoted and the added axis removed).
pub fn matmul(a: &[usize], b: &[usize]) -> Result<Vec<usize>, InferError> {
    if a.is_empty() || b.is_empty() {
        return Err("matmul operands must have rank >= 1".into());
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != kb {
        return Err(format!("matmul inner dimensions differ: {a:?} × {b:?}"));
    }
    let mut out = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::BinaryOp;

    fn t(shape: &[usize]) -> TensorType {
        TensorType::f32(shape)
    }

    #[test]
    fn conv_output_shape_with_stride_pad_dilation() {
        let c = Conv {
            strides: [2, 2],
            pads: [1, 1, 1, 1],
            dilations: [1, 1],
            group: 1,
            activation: None,
        };
        let out = infer(&Op::Conv(c), &[&t(&[1, 3, 224, 224]), &t(&[32, 3, 3, 3])]).unwrap();
        assert_eq!(out.shape, [1, 32, 112, 112]);
        let d = Conv {
            dilations: [2, 2],
            ..Conv::default()
        };
        let out = infer(&Op::Conv(d), &[&t(&[1, 1, 7, 7]), &t(&[1, 1, 3, 3])]).unwrap();
        assert_eq!(out.shape, [1, 1, 3, 3]);
    }

    #[test]
    fn global_sum_pool_keeps_channels_and_checks_rank() {
        let out = infer(&Op::GlobalSumPool, &[&t(&[2, 8, 7, 5])]).unwrap();
        assert_eq!(out.shape, [2, 8, 1, 1]);
        assert!(infer(&Op::GlobalSumPool, &[&t(&[2, 8])]).is_err());
        assert_eq!(Op::GlobalSumPool.name(), "global_sum_pool");
        let mut p = Pool::new([2, 2]);
        p.strides = [2, 2];
        let out = infer(&Op::SumPool(p), &[&t(&[1, 8, 6, 4])]).unwrap();
        assert_eq!(out.shape, [1, 8, 3, 2]);
    }

    #[test]
    fn depthwise_conv_checks_groups() {
        let dw = Conv {
            group: 32,
            pads: [1; 4],
            ..Conv::default()
        };
        let ok = infer(
            &Op::Conv(dw.clone()),
            &[&t(&[1, 32, 8, 8]), &t(&[32, 1, 3, 3])],
        );
        assert_eq!(ok.unwrap().shape, [1, 32, 8, 8]);
        let bad = infer(&Op::Conv(dw), &[&t(&[1, 16, 8, 8]), &t(&[32, 1, 3, 3])]);
        assert!(bad.unwrap_err().contains("group=32"));
    }

    #[test]
    fn conv_bias_shape_is_checked() {
        let err = infer(
            &Op::Conv(Conv::default()),
            &[&t(&[1, 3, 4, 4]), &t(&[8, 3, 1, 1]), &t(&[4])],
        )
        .unwrap_err();
        assert!(err.contains("bias must be [8]"), "{err}");
    }

    #[test]
    fn pool_ceil_mode_drops_window_starting_in_padding() {
        let mut p = Pool::new([3, 3]);
        p.strides = [2, 2];
        let floor = infer(&Op::MaxPool(p.clone()), &[&t(&[1, 1, 32, 32])]).unwrap();
        assert_eq!(floor.shape, [1, 1, 15, 15]);
        p.ceil_mode = true;
        let ceil = infer(&Op::MaxPool(p.clone()), &[&t(&[1, 1, 32, 32])]).unwrap();
        assert_eq!(ceil.shape, [1, 1, 16, 16]);
        // 5 wide, kernel 2, stride 2, pad 1 at both ends: ceil gives 4 windows, but the
        // fourth would start at padded index 6 = input + pad_begin, so it is dropped.
        let mut q = Pool::new([2, 2]);
        q.strides = [2, 2];
        q.pads = [1, 1, 1, 1];
        q.ceil_mode = true;
        let out = infer(&Op::MaxPool(q), &[&t(&[1, 1, 5, 5])]).unwrap();
        assert_eq!(out.shape, [1, 1, 3, 3]);
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast(&[2, 1, 4], &[3, 1]).unwrap(), [2, 3, 4]);
        assert_eq!(broadcast(&[], &[5]).unwrap(), [5]);
        assert!(broadcast(&[2, 3], &[4]).is_err());
        let out = infer(
            &Op::Binary(BinaryOp::Add),
            &[&t(&[1, 8, 4, 4]), &t(&[8, 1, 1])],
        );
        assert_eq!(out.unwrap().shape, [1, 8, 4, 4]);
    }

    #[test]
    fn matmul_shapes() {
        assert_eq!(matmul(&[2, 3], &[3, 4]).unwrap(), [2, 4]);
        assert_eq!(matmul(&[3], &[3, 4]).unwrap(), [4]);
        assert_eq!(matmul(&[2, 3], &[3]).unwrap(), [2]);
        assert_eq!(matmul(&[5, 1, 2, 3], &[4, 3, 6]).unwrap(), [5, 4, 2, 6]);
        assert!(matmul(&[2, 3], &[4, 5]).is_err());
    }

    #[test]
    fn gemm_transposes() {
        let g = Gemm {
            trans_b: true,
            ..Gemm::default()
        };
        let out = infer(
            &Op::Gemm(g),
            &[&t(&[1, 1280]), &t(&[1000, 1280]), &t(&[1000])],
        );
        assert_eq!(out.unwrap().shape, [1, 1000]);
        let err = infer(
            &Op::Gemm(Gemm::default()),
            &[&t(&[1, 1280]), &t(&[1000, 1280])],
        );
        assert!(err.is_err());
    }

    #[test]
    fn reshape_transpose_concat_pad() {
        let x = t(&[1, 2, 3, 4]);
        let r = infer(&Op::Reshape { shape: vec![1, 24] }, &[&x]).unwrap();
        assert_eq!(r.shape, [1, 24]);
        assert!(infer(&Op::Reshape { shape: vec![1, 25] }, &[&x]).is_err());
        let tr = infer(
            &Op::Transpose {
                perm: vec![0, 2, 3, 1],
            },
            &[&x],
        )
        .unwrap();
        assert_eq!(tr.shape, [1, 3, 4, 2]);
        assert!(
            infer(
                &Op::Transpose {
                    perm: vec![0, 0, 1, 2]
                },
                &[&x]
            )
            .is_err()
        );
        let c = infer(&Op::Concat { axis: 1 }, &[&x, &t(&[1, 5, 3, 4])]).unwrap();
        assert_eq!(c.shape, [1, 7, 3, 4]);
        assert!(infer(&Op::Concat { axis: 1 }, &[&x, &t(&[1, 5, 3, 5])]).is_err());
        let p = infer(
            &Op::Pad {
                pads: vec![0, 0, 1, 2, 0, 0, 3, 4],
                value: 0.0,
            },
            &[&x],
        )
        .unwrap();
        assert_eq!(p.shape, [1, 2, 7, 10]);
    }
}
