//! Per-op tests of the float interpreter against naive reference implementations written
//! here, on pseudo-random data over many random shapes and attributes.

mod common;

use common::*;
use lutq_ir::{Activation, BinaryOp, Conv, Gemm, Graph, Op, Pool, Tensor};

// ---------------------------------------------------------------------------------------
// Conv

/// Direct 7-loop convolution in f64, written from the ONNX definition.
fn naive_conv(
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    bias: Option<&[f32]>,
    c: &Conv,
    os: [usize; 4],
) -> Vec<f32> {
    let [n, ch, h, wd] = xs;
    let [m, cg, kh, kw] = ws;
    let [_, _, oh, ow] = os;
    let mg = m / c.group;
    let mut out = vec![0.0; n * m * oh * ow];
    for b in 0..n {
        for oc in 0..m {
            let g = oc / mg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.map_or(0.0, |b| b[oc] as f64);
                    for ci in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * c.strides[0] + ky * c.dilations[0]) as isize
                                    - c.pads[0] as isize;
                                let ix = (ox * c.strides[1] + kx * c.dilations[1]) as isize
                                    - c.pads[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let (iy, ix) = (iy as usize, ix as usize);
                                let xv = x[((b * ch + g * cg + ci) * h + iy) * wd + ix];
                                let wv = w[((oc * cg + ci) * kh + ky) * kw + kx];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    out[((b * m + oc) * oh + oy) * ow + ox] = acc as f32;
                }
            }
        }
    }
    out
}

/// Output size of one axis, as the ONNX spec defines it (floor mode).
fn conv_out(len: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize) -> Option<usize> {
    let span = d * (k - 1) + 1;
    (len + p0 + p1 >= span).then(|| (len + p0 + p1 - span) / s + 1)
}

fn check_conv(
    rng: &mut Rng,
    xs: [usize; 4],
    ws: [usize; 4],
    c: Conv,
    with_bias: bool,
    weights_const: bool,
) {
    let m = ws[0];
    let mut g = Graph::new("conv");
    let x = input(&mut g, "x", &xs);
    let wt = rng.tensor(&ws);
    let w = if weights_const {
        constant(&mut g, "w", wt.clone())
    } else {
        input(&mut g, "w", &ws)
    };
    let bt = rng.tensor(&[m]);
    let mut ins = vec![x, w];
    if with_bias {
        ins.push(constant(&mut g, "b", bt.clone()));
    }
    let y = node(&mut g, Op::Conv(c.clone()), &ins);
    g.add_output("y", y).unwrap();
    let oh = conv_out(
        xs[2],
        ws[2],
        c.strides[0],
        c.dilations[0],
        c.pads[0],
        c.pads[2],
    )
    .unwrap();
    let ow = conv_out(
        xs[3],
        ws[3],
        c.strides[1],
        c.dilations[1],
        c.pads[1],
        c.pads[3],
    )
    .unwrap();
    let os = [xs[0], m, oh, ow];
    assert_eq!(g.node(y).ty.shape, os, "IR output shape for {c:?}");
    let xt = rng.tensor(&xs);
    let mut inputs = vec![xt.clone()];
    if !weights_const {
        inputs.push(wt.clone());
    }
    let got = run1(&g, &inputs);
    let want = naive_conv(
        xt.as_f32().unwrap(),
        xs,
        wt.as_f32().unwrap(),
        ws,
        with_bias.then(|| bt.as_f32().unwrap()),
        &c,
        os,
    );
    assert_eq!(got.shape(), os);
    assert_close(
        got.as_f32().unwrap(),
        &want,
        1e-4,
        &format!("conv x{xs:?} w{ws:?} {c:?}"),
    );
}

#[test]
fn conv_matches_naive_over_random_configs() {
    let mut rng = Rng::new(1);
    let mut tested = [0usize; 3]; // depthwise-like, pointwise, im2col
    let mut cases = 0;
    while cases < 400 {
        let kind = rng.range(0, 3);
        let group = match kind {
            0 => 1,
            1 => rng.range(1, 3),
            _ => rng.range(1, 6), // depthwise when cg = 1
        };
        let cg = if kind == 3 { 1 } else { rng.range(1, 4) };
        let mg = rng.range(1, 3);
        let (c, m) = (cg * group, mg * group);
        let (h, w) = (rng.range(1, 11), rng.range(1, 11));
        let pointwise = rng.range(0, 3) == 0;
        let (kh, kw) = if pointwise {
            (1, 1)
        } else {
            (rng.range(1, 4), rng.range(1, 4))
        };
        let attrs = if pointwise && rng.bool() {
            Conv {
                group,
                ..Conv::default()
            }
        } else {
            Conv {
                strides: [rng.range(1, 3), rng.range(1, 3)],
                pads: [
                    rng.range(0, 2),
                    rng.range(0, 2),
                    rng.range(0, 2),
                    rng.range(0, 2),
                ],
                dilations: [rng.range(1, 3), rng.range(1, 3)],
                group,
                activation: None,
            }
        };
        let fits = conv_out(
            h,
            kh,
            attrs.strides[0],
            attrs.dilations[0],
            attrs.pads[0],
            attrs.pads[2],
        )
        .is_some()
            && conv_out(
                w,
                kw,
                attrs.strides[1],
                attrs.dilations[1],
                attrs.pads[1],
                attrs.pads[3],
            )
            .is_some();
        if !fits {
            continue;
        }
        let n = rng.range(1, 2);
        let path = if cg == 1 {
            0
        } else if kh == 1 && kw == 1 && attrs.strides == [1, 1] && attrs.pads == [0; 4] {
            1
        } else {
            2
        };
        tested[path] += 1;
        let bias = rng.bool();
        let wconst = rng.bool();
        check_conv(&mut rng, [n, c, h, w], [m, cg, kh, kw], attrs, bias, wconst);
        cases += 1;
    }
    assert!(
        tested.iter().all(|&t| t > 30),
        "every conv path exercised: {tested:?}"
    );
}

#[test]
fn conv_mobilenet_like_layers() {
    let mut rng = Rng::new(2);
    // Stem (im2col, stride 2), depthwise stride 1 and 2, depthwise with channel
    // multiplier 2, pointwise expand/project, a larger dilated depthwise.
    let s2 = Conv {
        strides: [2, 2],
        pads: [1; 4],
        ..Conv::default()
    };
    check_conv(
        &mut rng,
        [1, 3, 32, 32],
        [16, 3, 3, 3],
        s2.clone(),
        true,
        true,
    );
    let dw = |group, strides| Conv {
        strides,
        pads: [1; 4],
        group,
        ..Conv::default()
    };
    check_conv(
        &mut rng,
        [1, 24, 28, 28],
        [24, 1, 3, 3],
        dw(24, [1, 1]),
        true,
        true,
    );
    check_conv(
        &mut rng,
        [2, 24, 29, 29],
        [24, 1, 3, 3],
        dw(24, [2, 2]),
        false,
        true,
    );
    check_conv(
        &mut rng,
        [1, 8, 9, 9],
        [16, 1, 3, 3],
        dw(8, [1, 1]),
        true,
        true,
    );
    check_conv(
        &mut rng,
        [1, 32, 14, 14],
        [96, 32, 1, 1],
        Conv::default(),
        true,
        true,
    );
    check_conv(
        &mut rng,
        [1, 96, 7, 7],
        [24, 96, 1, 1],
        Conv::default(),
        false,
        true,
    );
    let dil = Conv {
        pads: [4; 4],
        dilations: [2, 2],
        group: 16,
        ..Conv::default()
    };
    check_conv(&mut rng, [1, 16, 20, 20], [16, 1, 5, 5], dil, true, true);
    // Grouped (not depthwise) 3×3 convolution, as in ResNeXt.
    check_conv(
        &mut rng,
        [1, 16, 10, 10],
        [8, 4, 3, 3],
        dw(4, [1, 1]),
        true,
        false,
    );
}

// ---------------------------------------------------------------------------------------
// BatchNorm, activations, PRelu, binary ops

#[test]
fn batch_norm_matches_definition() {
    let mut rng = Rng::new(3);
    for shape in [
        vec![2, 5],
        vec![1, 3, 7],
        vec![2, 4, 3, 5],
        vec![1, 2, 2, 3, 2],
    ] {
        let c = shape[1];
        let mut g = Graph::new("bn");
        let x = input(&mut g, "x", &shape);
        let scale = rng.tensor(&[c]);
        let bias = rng.tensor(&[c]);
        let mean = rng.tensor(&[c]);
        let var = Tensor::f32([c], rng.vec(c).iter().map(|v| v.abs() + 0.1).collect()).unwrap();
        let ids: Vec<_> = [&scale, &bias, &mean, &var]
            .iter()
            .enumerate()
            .map(|(i, t)| constant(&mut g, &format!("p{i}"), (*t).clone()))
            .collect();
        let eps = 1e-3;
        let y = node(
            &mut g,
            Op::BatchNorm { epsilon: eps },
            &[x, ids[0], ids[1], ids[2], ids[3]],
        );
        g.add_output("y", y).unwrap();
        let xt = rng.tensor(&shape);
        let got = run1(&g, std::slice::from_ref(&xt));
        let inner: usize = shape[2..].iter().product();
        let [s, b, m, v] = [&scale, &bias, &mean, &var].map(|t| t.as_f32().unwrap());
        let want: Vec<f32> = xt
            .as_f32()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let ch = (i / inner) % c;
                (x - m[ch]) / (v[ch] + eps).sqrt() * s[ch] + b[ch]
            })
            .collect();
        assert_close(
            got.as_f32().unwrap(),
            &want,
            1e-5,
            &format!("batchnorm {shape:?}"),
        );
    }
}

#[test]
fn activations_match_ir_definitions() {
    let mut rng = Rng::new(4);
    let acts = [
        Activation::Relu,
        Activation::Clip {
            min: Some(0.0),
            max: Some(6.0),
        },
        Activation::Clip {
            min: None,
            max: Some(0.5),
        },
        Activation::Clip {
            min: Some(-0.25),
            max: None,
        },
        Activation::LeakyRelu { alpha: 0.1 },
        Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        Activation::HardSwish,
        Activation::Sigmoid,
    ];
    for act in acts {
        let g = single_op(Op::Activation(act), &[&[2, 3, 5]]);
        let xs: Vec<f32> = rng.vec(30).iter().map(|v| v * 8.0).collect();
        let xt = Tensor::f32([2, 3, 5], xs.clone()).unwrap();
        let got = run1(&g, &[xt]);
        let want: Vec<f32> = xs.iter().map(|&x| act.apply(x)).collect();
        assert_eq!(got.as_f32().unwrap(), want, "{act:?}");
    }
    // Spot values from the ONNX definitions.
    let g = single_op(Op::Activation(Activation::HardSwish), &[&[3]]);
    let out = run1(&g, &[Tensor::f32([3], vec![-4.0, 1.5, 4.0]).unwrap()]);
    assert_close(
        out.as_f32().unwrap(),
        &[0.0, 1.5 * 0.75, 4.0],
        1e-7,
        "hardswish",
    );
}

/// The element-wise math ops against naive f64 definitions (the ONNX formulas), on
/// inputs inside each function's domain.
#[test]
fn element_wise_math_matches_naive_definitions() {
    let mut rng = Rng::new(41);
    let erf = |x: f64| {
        // Abramowitz–Stegun 7.1.26 is too coarse; integrate e^{-t²} with Simpson's rule.
        let n = 2000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    };
    type Naive = Box<dyn Fn(f64) -> f64>;
    let cases: Vec<(Activation, Naive, bool)> = vec![
        (Activation::Tanh, Box::new(f64::tanh), false),
        (Activation::Exp, Box::new(f64::exp), false),
        (Activation::Erf, Box::new(erf), false),
        (
            Activation::Gelu { tanh: false },
            Box::new(move |x| 0.5 * x * (1.0 + erf(x / 2f64.sqrt()))),
            false,
        ),
        (
            Activation::Gelu { tanh: true },
            Box::new(|x| {
                0.5 * x
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
            }),
            false,
        ),
        (
            Activation::Softplus,
            Box::new(|x| (1.0 + x.exp()).ln()),
            false,
        ),
        (
            Activation::Elu { alpha: 0.7 },
            Box::new(|x| if x < 0.0 { 0.7 * (x.exp() - 1.0) } else { x }),
            false,
        ),
        (
            Activation::Selu {
                alpha: 1.673_263_2,
                gamma: 1.050_701,
            },
            Box::new(|x| {
                let (a, g) = (1.673_263_2f32 as f64, 1.050_701f32 as f64);
                if x <= 0.0 {
                    g * (a * x.exp() - a)
                } else {
                    g * x
                }
            }),
            false,
        ),
        (Activation::Neg, Box::new(|x| -x), false),
        (Activation::Abs, Box::new(f64::abs), false),
        (Activation::Sqrt, Box::new(f64::sqrt), true),
        (Activation::Reciprocal, Box::new(|x| 1.0 / x), true),
        (Activation::Log, Box::new(f64::ln), true),
        (Activation::Floor, Box::new(f64::floor), false),
        (Activation::Ceil, Box::new(f64::ceil), false),
        (Activation::Round, Box::new(f64::round_ties_even), false),
    ];
    for (act, naive, positive) in cases {
        let mut xs: Vec<f32> = rng.vec(60).iter().map(|v| v * 6.0).collect();
        xs.extend([0.5, 1.5, 2.5, -0.5, -2.5]);
        if positive {
            xs.iter_mut().for_each(|v| *v = v.abs() + 0.05);
        }
        let n = xs.len();
        let g = single_op(Op::Activation(act), &[&[n]]);
        let got = run1(&g, &[Tensor::f32([n], xs.clone()).unwrap()]);
        let want: Vec<f32> = xs.iter().map(|&x| naive(x as f64) as f32).collect();
        assert_close(got.as_f32().unwrap(), &want, 2e-6, &format!("{act:?}"));
    }
    // Pow with a broadcast exponent, positive bases.
    let g = single_op(Op::Binary(BinaryOp::Pow), &[&[2, 3], &[3]]);
    let a = Tensor::f32([2, 3], vec![0.5, 2.0, 3.0, 1.5, 4.0, 9.0]).unwrap();
    let b = Tensor::f32([3], vec![2.0, -1.0, 0.5]).unwrap();
    let got = run1(&g, &[a, b]);
    assert_close(
        got.as_f32().unwrap(),
        &[0.25, 0.5, 3f32.sqrt(), 2.25, 0.25, 3.0],
        1e-7,
        "pow",
    );
}

#[test]
fn prelu_broadcasts_slope() {
    let mut rng = Rng::new(5);
    let x_shape = [2, 3, 4, 5];
    for slope_shape in [
        vec![3, 1, 1],
        vec![1],
        vec![5],
        vec![2, 3, 4, 5],
        vec![1, 3, 1, 1],
    ] {
        let g = single_op(Op::PRelu, &[&x_shape, &slope_shape]);
        let xt = rng.tensor(&x_shape);
        let st = rng.tensor(&slope_shape);
        let got = run1(&g, &[xt.clone(), st.clone()]);
        let (x, s) = (xt.as_f32().unwrap(), st.as_f32().unwrap());
        let want: Vec<f32> = (0..x.len())
            .map(|i| {
                let slope = s[broadcast_index(&unravel(i, &x_shape), &slope_shape)];
                if x[i] < 0.0 { slope * x[i] } else { x[i] }
            })
            .collect();
        assert_close(
            got.as_f32().unwrap(),
            &want,
            0.0,
            &format!("prelu {slope_shape:?}"),
        );
    }
}

/// Random pair of numpy-broadcastable shapes.
fn broadcast_pair(rng: &mut Rng) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let rank = rng.range(0, 4);
    let out: Vec<usize> = (0..rank).map(|_| rng.range(1, 4)).collect();
    let derive = |rng: &mut Rng| -> Vec<usize> {
        let r = rng.range(0, rank);
        out[rank - r..]
            .iter()
            .map(|&d| if rng.range(0, 2) == 0 { 1 } else { d })
            .collect()
    };
    let a = derive(rng);
    let b = derive(rng);
    // The true output: where both are 1 the dim may have shrunk.
    let r = a.len().max(b.len());
    let get = |s: &[usize], i: usize| {
        if i + s.len() >= r {
            s[i + s.len() - r]
        } else {
            1
        }
    };
    let o = (0..r).map(|i| get(&a, i).max(get(&b, i))).collect();
    (a, b, o)
}

#[test]
fn binary_ops_broadcast_like_numpy() {
    let mut rng = Rng::new(6);
    for case in 0..300 {
        let (sa, sb, so) = broadcast_pair(&mut rng);
        let op = rng.pick(&[
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Max,
            BinaryOp::Min,
        ]);
        let g = single_op(Op::Binary(op), &[&sa, &sb]);
        assert_eq!(g.node(g.outputs()[0].node).ty.shape, so);
        let at = rng.tensor(&sa);
        let bt = rng.tensor(&sb);
        let got = run1(&g, &[at.clone(), bt.clone()]);
        let (a, b) = (at.as_f32().unwrap(), bt.as_f32().unwrap());
        let n: usize = so.iter().product();
        let want: Vec<f32> = (0..n)
            .map(|i| {
                let idx = unravel(i, &so);
                op.apply(a[broadcast_index(&idx, &sa)], b[broadcast_index(&idx, &sb)])
            })
            .collect();
        assert_eq!(got.shape(), so);
        assert_close(
            got.as_f32().unwrap(),
            &want,
            0.0,
            &format!("case {case}: {op:?} {sa:?} {sb:?}"),
        );
    }
}

/// The in-place paths: an operand that is an intermediate whose last reader is the binary
/// op gets overwritten, on either side, broadcasting or not.
#[test]
fn binary_ops_in_place_on_either_operand() {
    let mut rng = Rng::new(7);
    for (sa, sb) in [
        (vec![2, 3, 4], vec![2, 3, 4]),
        (vec![2, 3, 4], vec![3, 1]),
        (vec![4], vec![2, 3, 4]),
        (vec![1, 3, 1], vec![2, 1, 4]),
    ] {
        for op in [BinaryOp::Sub, BinaryOp::Div] {
            let mut g = Graph::new("inplace");
            let a = input(&mut g, "a", &sa);
            let b = input(&mut g, "b", &sb);
            // Identity-like producers that allocate a fresh buffer.
            let relu = Op::Activation(Activation::LeakyRelu { alpha: 1.0 });
            let ra = node(&mut g, relu.clone(), &[a]);
            let rb = node(&mut g, relu, &[b]);
            let y = node(&mut g, Op::Binary(op), &[ra, rb]);
            g.add_output("y", y).unwrap();
            let reference = single_op(Op::Binary(op), &[&sa, &sb]);
            let inputs = [rng.tensor(&sa), rng.tensor(&sb)];
            let got = run1(&g, &inputs);
            let want = run1(&reference, &inputs);
            assert_eq!(got, want, "{op:?} {sa:?} {sb:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pooling

/// Naive pooling following onnxruntime: window start `o·s − pad_begin`, taps every
/// `dilation`; the divisor with count_include_pad counts taps before `len + pad_end`.
fn naive_pool(x: &[f32], xs: [usize; 4], p: &Pool, oh: usize, ow: usize, max: bool) -> Vec<f32> {
    let [n, c, h, w] = xs;
    let mut out = Vec::new();
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                let (mut valid, mut padded_y, mut padded_x) = (0, 0, 0);
                for ky in 0..p.kernel[0] {
                    let iy =
                        (oy * p.strides[0] + ky * p.dilations[0]) as isize - p.pads[0] as isize;
                    if iy < (h + p.pads[2]) as isize {
                        padded_y += 1;
                    }
                    for kx in 0..p.kernel[1] {
                        let ix =
                            (ox * p.strides[1] + kx * p.dilations[1]) as isize - p.pads[1] as isize;
                        if ky == 0 && ix < (w + p.pads[3]) as isize {
                            padded_x += 1;
                        }
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            let v = x[plane * h * w + iy as usize * w + ix as usize];
                            valid += 1;
                            if max {
                                acc = acc.max(v);
                            } else {
                                acc += v;
                            }
                        }
                    }
                }
                if !max {
                    let count = if p.count_include_pad {
                        padded_y * padded_x
                    } else {
                        valid
                    };
                    acc /= count as f32;
                }
                out.push(acc);
            }
        }
    }
    out
}

fn pool_out(len: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize, ceil: bool) -> usize {
    let span = d * (k - 1) + 1;
    let steps = len + p0 + p1 - span;
    let mut out = if ceil {
        steps.div_ceil(s) + 1
    } else {
        steps / s + 1
    };
    if ceil && (out - 1) * s >= len + p0 {
        out -= 1;
    }
    out
}

#[test]
fn pools_match_naive_over_random_configs() {
    let mut rng = Rng::new(8);
    let mut cases = 0;
    while cases < 400 {
        let kernel = [rng.range(1, 4), rng.range(1, 4)];
        let mut p = Pool::new(kernel);
        p.strides = [rng.range(1, 3), rng.range(1, 3)];
        p.dilations = if rng.range(0, 3) == 0 {
            [rng.range(1, 3), rng.range(1, 3)]
        } else {
            [1, 1]
        };
        p.pads = [
            rng.range(0, kernel[0] - 1),
            rng.range(0, kernel[1] - 1),
            rng.range(0, kernel[0] - 1),
            rng.range(0, kernel[1] - 1),
        ];
        p.ceil_mode = rng.bool();
        p.count_include_pad = rng.bool();
        let xs = [
            rng.range(1, 2),
            rng.range(1, 3),
            rng.range(1, 9),
            rng.range(1, 9),
        ];
        let span = |a: usize| p.dilations[a] * (kernel[a] - 1) + 1;
        if xs[2] + p.pads[0] + p.pads[2] < span(0) || xs[3] + p.pads[1] + p.pads[3] < span(1) {
            continue;
        }
        let oh = pool_out(
            xs[2],
            kernel[0],
            p.strides[0],
            p.dilations[0],
            p.pads[0],
            p.pads[2],
            p.ceil_mode,
        );
        let ow = pool_out(
            xs[3],
            kernel[1],
            p.strides[1],
            p.dilations[1],
            p.pads[1],
            p.pads[3],
            p.ceil_mode,
        );
        let xt = rng.tensor(&xs);
        for max in [true, false] {
            let op = if max {
                Op::MaxPool(p.clone())
            } else {
                Op::AveragePool(p.clone())
            };
            let g = single_op(op, &[&xs]);
            let got = run1(&g, std::slice::from_ref(&xt));
            assert_eq!(got.shape(), [xs[0], xs[1], oh, ow], "{p:?} on {xs:?}");
            let want = naive_pool(xt.as_f32().unwrap(), xs, &p, oh, ow, max);
            assert_close(
                got.as_f32().unwrap(),
                &want,
                1e-6,
                &format!("max={max} {p:?} on {xs:?}"),
            );
        }
        cases += 1;
    }
}

/// Values computed with onnxruntime 1.22 (opset 19) on x = 1..25 as a 5×5 image: they pin
/// the ceil_mode and count_include_pad conventions, independently of the naive model
/// above.
#[test]
fn pools_match_onnxruntime_golden_values() {
    let x = Tensor::f32([1, 1, 5, 5], (1..=25).map(|v| v as f32).collect()).unwrap();
    let pool = |kernel: [usize; 2], strides, pads, dilations, ceil_mode, count_include_pad| Pool {
        kernel,
        strides,
        pads,
        dilations,
        ceil_mode,
        count_include_pad,
    };
    let cases: Vec<(Op, Vec<f32>)> = vec![
        (
            Op::AveragePool(pool([2, 2], [2, 2], [1, 1, 1, 1], [1, 1], true, false)),
            vec![1.0, 2.5, 4.5, 8.5, 10.0, 12.0, 18.5, 20.0, 22.0],
        ),
        (
            Op::AveragePool(pool([2, 2], [2, 2], [1, 1, 1, 1], [1, 1], true, true)),
            vec![0.25, 1.25, 2.25, 4.25, 10.0, 12.0, 9.25, 20.0, 22.0],
        ),
        (
            Op::AveragePool(pool([3, 3], [2, 2], [1, 1, 1, 1], [1, 1], true, true)),
            vec![
                1.777_777_8,
                3.666_666_7,
                3.111_111_2,
                7.666_666_5,
                13.0,
                9.666_667,
                8.444_445,
                13.666_667,
                9.777_778,
            ],
        ),
        (
            Op::AveragePool(pool([2, 3], [3, 2], [1, 0, 1, 2], [1, 1], true, true)),
            vec![1.0, 2.0, 0.833_333_3, 14.5, 16.5, 5.833_333_5],
        ),
        (
            Op::AveragePool(pool([2, 3], [3, 2], [1, 0, 1, 2], [1, 1], true, false)),
            vec![2.0, 4.0, 5.0, 14.5, 16.5, 17.5],
        ),
        (
            Op::AveragePool(pool([2, 2], [1, 1], [1, 1, 1, 1], [2, 2], false, true)),
            vec![
                1.75, 3.5, 4.0, 4.5, 2.25, 3.5, 7.0, 8.0, 9.0, 4.5, 6.0, 12.0, 13.0, 14.0, 7.0,
                8.5, 17.0, 18.0, 19.0, 9.5, 4.25, 8.5, 9.0, 9.5, 4.75,
            ],
        ),
        (
            Op::MaxPool(pool([2, 2], [2, 2], [1, 1, 1, 1], [1, 1], true, false)),
            vec![1.0, 3.0, 5.0, 11.0, 13.0, 15.0, 21.0, 23.0, 25.0],
        ),
        (
            Op::MaxPool(pool([2, 2], [2, 2], [0, 0, 1, 1], [2, 2], true, false)),
            vec![13.0, 15.0, 15.0, 23.0, 25.0, 25.0, 23.0, 25.0, 25.0],
        ),
    ];
    for (op, want) in cases {
        let g = single_op(op.clone(), &[&[1, 1, 5, 5]]);
        let got = run1(&g, std::slice::from_ref(&x));
        assert_close(got.as_f32().unwrap(), &want, 1e-6, &format!("{op:?}"));
    }
}

#[test]
fn global_sum_pool_is_the_mean_times_n() {
    let mut rng = Rng::new(10);
    for shape in [vec![1, 3, 4], vec![2, 3, 5, 7], vec![1, 2, 3, 2, 4]] {
        let xt = rng.tensor(&shape);
        let sum = run1(
            &single_op(Op::GlobalSumPool, &[&shape]),
            std::slice::from_ref(&xt),
        );
        let mean = run1(
            &single_op(Op::GlobalAveragePool, &[&shape]),
            std::slice::from_ref(&xt),
        );
        let n = shape[2..].iter().product::<usize>() as f32;
        let want: Vec<f32> = mean.as_f32().unwrap().iter().map(|&m| m * n).collect();
        assert_eq!(sum.shape(), mean.shape());
        assert_close(
            sum.as_f32().unwrap(),
            &want,
            1e-5,
            &format!("gsp {shape:?}"),
        );
    }
}

#[test]
fn sum_pool_is_the_mean_times_the_window() {
    let mut rng = Rng::new(11);
    let shape = [2, 3, 7, 6];
    let xt = rng.tensor(&shape);
    let mut p = Pool::new([3, 2]);
    p.strides = [2, 2];
    let sum = run1(
        &single_op(Op::SumPool(p.clone()), &[&shape]),
        std::slice::from_ref(&xt),
    );
    let mean = run1(
        &single_op(Op::AveragePool(p), &[&shape]),
        std::slice::from_ref(&xt),
    );
    let want: Vec<f32> = mean.as_f32().unwrap().iter().map(|&m| m * 6.0).collect();
    assert_eq!(sum.shape(), mean.shape());
    assert_close(sum.as_f32().unwrap(), &want, 1e-5, "sum_pool");
}

#[test]
fn global_average_pool_any_rank() {
    let mut rng = Rng::new(9);
    for shape in [
        vec![1, 3, 4],
        vec![2, 3, 5, 7],
        vec![1, 2, 3, 2, 4],
        vec![2, 4, 1, 1],
    ] {
        let g = single_op(Op::GlobalAveragePool, &[&shape]);
        let xt = rng.tensor(&shape);
        let got = run1(&g, std::slice::from_ref(&xt));
        let spatial: usize = shape[2..].iter().product();
        let want: Vec<f32> = xt
            .as_f32()
            .unwrap()
            .chunks(spatial)
            .map(|c| c.iter().map(|&v| v as f64).sum::<f64>() as f32 / spatial as f32)
            .collect();
        let mut out_shape = shape.clone();
        out_shape[2..].fill(1);
        assert_eq!(got.shape(), out_shape);
        assert_close(
            got.as_f32().unwrap(),
            &want,
            1e-6,
            &format!("gap {shape:?}"),
        );
    }
}

// ---------------------------------------------------------------------------------------
// Gemm, MatMul

fn naive_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k)
                .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                .sum();
        }
    }
    out
}

fn transpose2(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
    out
}

#[test]
fn gemm_matches_naive_with_transposes_and_c_broadcast() {
    let mut rng = Rng::new(10);
    for case in 0..200 {
        let (m, k, n) = (rng.range(1, 9), rng.range(1, 40), rng.range(1, 9));
        let attrs = Gemm {
            alpha: rng.pick(&[1.0, 0.5, -2.0]),
            beta: rng.pick(&[1.0, 0.0, 0.25]),
            trans_a: rng.bool(),
            trans_b: rng.bool(),
            activation: None,
        };
        let a_shape = if attrs.trans_a { [k, m] } else { [m, k] };
        let b_shape = if attrs.trans_b { [n, k] } else { [k, n] };
        let c_shape: Option<Vec<usize>> = rng
            .pick(&[None, Some(0), Some(1), Some(2), Some(3), Some(4)])
            .map(|i| match i {
                0 => vec![n],
                1 => vec![m, 1],
                2 => vec![1, n],
                3 => vec![m, n],
                _ => vec![],
            });
        let mut shapes: Vec<&[usize]> = vec![&a_shape, &b_shape];
        if let Some(c) = &c_shape {
            shapes.push(c);
        }
        let g = single_op(Op::Gemm(attrs), &shapes);
        let at = rng.tensor(&a_shape);
        let bt = rng.tensor(&b_shape);
        let mut inputs = vec![at.clone(), bt.clone()];
        let ct = c_shape.as_ref().map(|s| rng.tensor(s));
        inputs.extend(ct.clone());
        let got = run1(&g, &inputs);
        let a = if attrs.trans_a {
            transpose2(at.as_f32().unwrap(), k, m)
        } else {
            at.as_f32().unwrap().to_vec()
        };
        let b = if attrs.trans_b {
            transpose2(bt.as_f32().unwrap(), n, k)
        } else {
            bt.as_f32().unwrap().to_vec()
        };
        let ab = naive_matmul(&a, &b, m, k, n);
        let want: Vec<f32> = (0..m * n)
            .map(|i| {
                let cv = match (&ct, &c_shape) {
                    (Some(ct), Some(cs)) => {
                        ct.as_f32().unwrap()[broadcast_index(&unravel(i, &[m, n]), cs)] as f64
                    }
                    _ => 0.0,
                };
                (attrs.alpha as f64 * ab[i] + attrs.beta as f64 * cv) as f32
            })
            .collect();
        assert_close(
            got.as_f32().unwrap(),
            &want,
            1e-5,
            &format!("case {case}: {attrs:?} C {c_shape:?}"),
        );
    }
}

#[test]
fn matmul_follows_numpy() {
    let mut rng = Rng::new(11);
    let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![3, 4], vec![4, 5]),
        (vec![4], vec![4, 5]),
        (vec![3, 4], vec![4]),
        (vec![4], vec![4]),
        (vec![2, 3, 4], vec![4, 5]),
        (vec![3, 4], vec![2, 4, 5]),
        (vec![2, 1, 3, 4], vec![3, 4, 2]),
        (vec![5], vec![2, 3, 5, 2]),
        (vec![2, 3, 4, 7], vec![7]),
        (vec![1, 1, 17], vec![3, 17, 1]),
    ];
    for (sa, sb) in cases {
        let g = single_op(Op::MatMul, &[&sa, &sb]);
        let out_shape = g.node(g.outputs()[0].node).ty.shape.clone();
        let at = rng.tensor(&sa);
        let bt = rng.tensor(&sb);
        let got = run1(&g, &[at.clone(), bt.clone()]);
        assert_eq!(got.shape(), out_shape);
        // Reference: promote, then index every output element directly.
        let a2 = if sa.len() == 1 {
            vec![1, sa[0]]
        } else {
            sa.clone()
        };
        let b2 = if sb.len() == 1 {
            vec![sb[0], 1]
        } else {
            sb.clone()
        };
        let (m, k, n) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 1]);
        let batch = lutq_ir::infer::broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2]).unwrap();
        let mut full = batch.clone();
        full.extend([m, n]);
        let (a, b) = (at.as_f32().unwrap(), bt.as_f32().unwrap());
        let total: usize = full.iter().product();
        let want: Vec<f32> = (0..total)
            .map(|i| {
                let idx = unravel(i, &full);
                let (bi, i_, j) = (&idx[..batch.len()], idx[batch.len()], idx[batch.len() + 1]);
                (0..k)
                    .map(|p| {
                        let mut ia: Vec<usize> = bi.to_vec();
                        ia.extend([i_, p]);
                        let mut ib: Vec<usize> = bi.to_vec();
                        ib.extend([p, j]);
                        a[broadcast_index(&ia, &a2)] as f64 * b[broadcast_index(&ib, &b2)] as f64
                    })
                    .sum::<f64>() as f32
            })
            .collect();
        assert_close(
            got.as_f32().unwrap(),
            &want,
            1e-5,
            &format!("matmul {sa:?} × {sb:?}"),
        );
    }
}

// ---------------------------------------------------------------------------------------
// Layout ops, softmax

#[test]
fn transpose_any_rank_and_perm() {
    let mut rng = Rng::new(12);
    for _ in 0..100 {
        let rank = rng.range(1, 5);
        let shape: Vec<usize> = (0..rank).map(|_| rng.range(1, 4)).collect();
        let mut perm: Vec<usize> = (0..rank).collect();
        for i in (1..rank).rev() {
            perm.swap(i, rng.range(0, i));
        }
        let g = single_op(Op::Transpose { perm: perm.clone() }, &[&shape]);
        let xt = rng.tensor(&shape);
        let got = run1(&g, std::slice::from_ref(&xt));
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let x = xt.as_f32().unwrap();
        let st = strides(&shape);
        let want: Vec<f32> = (0..x.len())
            .map(|i| {
                let idx = unravel(i, &out_shape);
                x[(0..rank).map(|d| idx[d] * st[perm[d]]).sum::<usize>()]
            })
            .collect();
        assert_eq!(got.shape(), out_shape);
        assert_eq!(got.as_f32().unwrap(), want, "transpose {shape:?} {perm:?}");
    }
}

#[test]
fn concat_along_every_axis() {
    let mut rng = Rng::new(13);
    for _ in 0..60 {
        let rank = rng.range(1, 4);
        let axis = rng.range(0, rank - 1);
        let base: Vec<usize> = (0..rank).map(|_| rng.range(1, 3)).collect();
        let parts: Vec<Vec<usize>> = (0..rng.range(1, 3))
            .map(|_| {
                let mut s = base.clone();
                s[axis] = rng.range(1, 3);
                s
            })
            .collect();
        let refs: Vec<&[usize]> = parts.iter().map(|s| s.as_slice()).collect();
        let g = single_op(Op::Concat { axis }, &refs);
        let inputs: Vec<Tensor> = parts.iter().map(|s| rng.tensor(s)).collect();
        let got = run1(&g, &inputs);
        let mut out_shape = base.clone();
        out_shape[axis] = parts.iter().map(|s| s[axis]).sum();
        let n: usize = out_shape.iter().product();
        let want: Vec<f32> = (0..n)
            .map(|i| {
                let mut idx = unravel(i, &out_shape);
                let mut k = 0;
                while idx[axis] >= parts[k][axis] {
                    idx[axis] -= parts[k][axis];
                    k += 1;
                }
                let st = strides(&parts[k]);
                inputs[k].as_f32().unwrap()[idx.iter().zip(&st).map(|(a, b)| a * b).sum::<usize>()]
            })
            .collect();
        assert_eq!(
            got.as_f32().unwrap(),
            want,
            "concat axis {axis} of {parts:?}"
        );
    }
}

#[test]
fn pad_constant_any_rank() {
    let mut rng = Rng::new(14);
    for _ in 0..60 {
        let rank = rng.range(1, 4);
        let shape: Vec<usize> = (0..rank).map(|_| rng.range(1, 3)).collect();
        let pads: Vec<usize> = (0..2 * rank).map(|_| rng.range(0, 2)).collect();
        let value = rng.f32();
        let g = single_op(
            Op::Pad {
                pads: pads.clone(),
                value,
            },
            &[&shape],
        );
        let xt = rng.tensor(&shape);
        let got = run1(&g, std::slice::from_ref(&xt));
        let out_shape: Vec<usize> = (0..rank)
            .map(|d| shape[d] + pads[d] + pads[d + rank])
            .collect();
        let st = strides(&shape);
        let n: usize = out_shape.iter().product();
        let want: Vec<f32> = (0..n)
            .map(|i| {
                let idx = unravel(i, &out_shape);
                let mut off = 0;
                for d in 0..rank {
                    if idx[d] < pads[d] || idx[d] - pads[d] >= shape[d] {
                        return value;
                    }
                    off += (idx[d] - pads[d]) * st[d];
                }
                xt.as_f32().unwrap()[off]
            })
            .collect();
        assert_eq!(got.shape(), out_shape);
        assert_eq!(got.as_f32().unwrap(), want, "pad {shape:?} {pads:?}");
    }
}

#[test]
fn softmax_along_each_axis_is_stable() {
    let mut rng = Rng::new(15);
    let shape = [2, 3, 4];
    for axis in 0..3 {
        let g = single_op(Op::Softmax { axis }, &[&shape]);
        // Large magnitudes: a naive exp would overflow to inf.
        let xs: Vec<f32> = rng.vec(24).iter().map(|v| v * 200.0).collect();
        let got = run1(&g, &[Tensor::f32(shape, xs.clone()).unwrap()]);
        let st = strides(&shape);
        let want: Vec<f32> = (0..24)
            .map(|i| {
                let idx = unravel(i, &shape);
                let base = i - idx[axis] * st[axis];
                let vals: Vec<f64> = (0..shape[axis])
                    .map(|k| xs[base + k * st[axis]] as f64)
                    .collect();
                let m = vals.iter().cloned().fold(f64::MIN, f64::max);
                let sum: f64 = vals.iter().map(|v| (v - m).exp()).sum();
                ((xs[i] as f64 - m).exp() / sum) as f32
            })
            .collect();
        assert_close(
            got.as_f32().unwrap(),
            &want,
            1e-5,
            &format!("softmax axis {axis}"),
        );
        assert!(got.as_f32().unwrap().iter().all(|v| v.is_finite()));
    }
}

#[test]
fn reshape_identity_dropout_pass_data_through() {
    let mut rng = Rng::new(16);
    let xt = rng.tensor(&[2, 3, 4]);
    for op in [Op::Reshape { shape: vec![6, 4] }, Op::Identity, Op::Dropout] {
        let g = single_op(op.clone(), &[&[2, 3, 4]]);
        let got = run1(&g, std::slice::from_ref(&xt));
        assert_eq!(got.as_f32(), xt.as_f32(), "{op:?}");
        assert_eq!(got.shape(), g.node(g.outputs()[0].node).ty.shape.as_slice());
    }
}

/// Tensors with a zero dimension are legal in the IR; every kernel must cope.
#[test]
fn zero_sized_tensors() {
    let conv = Op::Conv(Conv {
        pads: [1; 4],
        ..Conv::default()
    });
    let dw = Op::Conv(Conv {
        pads: [1; 4],
        group: 2,
        ..Conv::default()
    });
    let cases: Vec<(Op, Vec<Vec<usize>>, Vec<usize>)> = vec![
        (
            conv.clone(),
            vec![vec![1, 2, 4, 4], vec![0, 2, 3, 3]],
            vec![1, 0, 4, 4],
        ),
        (
            conv.clone(),
            vec![vec![0, 2, 4, 4], vec![3, 2, 3, 3]],
            vec![0, 3, 4, 4],
        ),
        (
            conv,
            vec![vec![1, 0, 4, 4], vec![3, 0, 3, 3]],
            vec![1, 3, 4, 4],
        ),
        (
            dw,
            vec![vec![1, 2, 0, 4], vec![2, 1, 1, 3]],
            vec![1, 2, 2, 4],
        ),
        (
            Op::MaxPool(Pool::new([2, 2])),
            vec![vec![1, 0, 4, 4]],
            vec![1, 0, 3, 3],
        ),
        (Op::MatMul, vec![vec![0, 3], vec![3, 4]], vec![0, 4]),
        (Op::MatMul, vec![vec![2, 0], vec![0, 3]], vec![2, 3]),
        (
            Op::Gemm(Gemm::default()),
            vec![vec![2, 0], vec![0, 3], vec![3]],
            vec![2, 3],
        ),
        (
            Op::Transpose {
                perm: vec![2, 0, 1],
            },
            vec![vec![2, 0, 3]],
            vec![3, 2, 0],
        ),
        (
            Op::Concat { axis: 1 },
            vec![vec![2, 0], vec![2, 3]],
            vec![2, 3],
        ),
        (
            Op::Pad {
                pads: vec![1, 0, 1, 0],
                value: 7.0,
            },
            vec![vec![0, 2]],
            vec![2, 2],
        ),
        (Op::Softmax { axis: 1 }, vec![vec![0, 3]], vec![0, 3]),
        (
            Op::Binary(BinaryOp::Add),
            vec![vec![0, 3], vec![3]],
            vec![0, 3],
        ),
        (Op::Activation(Activation::Relu), vec![vec![0]], vec![0]),
    ];
    let mut rng = Rng::new(17);
    for (op, shapes, out_shape) in cases {
        let refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
        let g = single_op(op.clone(), &refs);
        let inputs: Vec<Tensor> = shapes.iter().map(|s| rng.tensor(s)).collect();
        let got = run1(&g, &inputs);
        assert_eq!(got.shape(), out_shape, "{op:?}");
        let data = got.as_f32().unwrap();
        match &op {
            // Empty sums: the bias-free conv over zero channels and products over k = 0.
            Op::Conv(_) | Op::MatMul => assert!(data.iter().all(|&v| v == 0.0), "{op:?}"),
            Op::Gemm(_) => {
                let c = inputs[2].as_f32().unwrap();
                assert_eq!(data, [c, c].concat(), "{op:?}");
            }
            Op::Pad { .. } => assert_eq!(data, [7.0; 4]),
            _ => {}
        }
    }
}
