//! One test per rule on a small hand-built graph: the rule fires (or, in the negative
//! tests, does not), the optimized graph computes the same in the float interpreter
//! (within 1e-5 of the output's range), and its dump is snapshot-tested.

mod common;

use common::Builder;
use lutq_ir::{Activation, BinaryOp, Conv, Gemm, Graph, NodeId, Op, Tensor, TensorType};
use lutq_opt::{Kept, OptOptions, OptReport, optimize};

impl Builder {
    fn new(name: &str) -> Self {
        Builder::seeded(name, 0x9e37_79b9_7f4a_7c15)
    }

    fn input(&mut self, shape: &[usize]) -> NodeId {
        self.g.add_input("x", TensorType::f32(shape))
    }

    fn konst(&mut self, name: &str, shape: &[usize], lo: f32, hi: f32) -> NodeId {
        let data = self.uniform(shape.iter().product(), lo, hi);
        self.g.add_constant(name, Tensor::f32(shape, data).unwrap())
    }

    fn op(&mut self, name: &str, op: Op, inputs: &[NodeId]) -> NodeId {
        self.g.add_node(name, op, inputs).unwrap()
    }

    fn conv(&mut self, x: NodeId, cin: usize, cout: usize, bias: bool) -> NodeId {
        let w = self.konst("w", &[cout, cin, 3, 3], -0.5, 0.5);
        let mut ins = vec![x, w];
        if bias {
            ins.push(self.konst("b", &[cout], -0.5, 0.5));
        }
        let attrs = Conv {
            pads: [1; 4],
            ..Conv::default()
        };
        self.op("conv", Op::Conv(attrs), &ins)
    }

    fn bn(&mut self, x: NodeId, c: usize) -> NodeId {
        let s = self.konst("bn.scale", &[c], 0.5, 1.5);
        let b = self.konst("bn.bias", &[c], -0.5, 0.5);
        let m = self.konst("bn.mean", &[c], -0.5, 0.5);
        let v = self.konst("bn.var", &[c], 0.1, 2.0);
        self.op("bn", Op::BatchNorm { epsilon: 1e-5 }, &[x, s, b, m, v])
    }

    fn act(&mut self, x: NodeId, act: Activation) -> NodeId {
        self.op("act", Op::Activation(act), &[x])
    }

    fn output(mut self, y: NodeId) -> Graph {
        self.g.add_output("y", y).unwrap();
        self.g
    }
}

impl Builder {
    /// A 3×3 Conv with bias and the given padding.
    fn conv_padded(&mut self, x: NodeId, cin: usize, cout: usize, pads: usize) -> NodeId {
        let w = self.konst("w", &[cout, cin, 3, 3], -0.5, 0.5);
        let bias = self.konst("b", &[cout], -0.5, 0.5);
        let attrs = Conv {
            pads: [pads; 4],
            ..Conv::default()
        };
        self.op("conv", Op::Conv(attrs), &[x, w, bias])
    }

    fn binary(&mut self, name: &str, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
        self.op(name, Op::Binary(op), &[a, b])
    }

    /// `(x − mean) / std` with per-channel constants of shape `[c, 1, 1]`.
    fn normalise(&mut self, x: NodeId, c: usize) -> NodeId {
        let mean = self.konst("mean", &[c, 1, 1], 0.2, 0.6);
        let std = self.konst("std", &[c, 1, 1], 0.2, 0.3);
        let centred = self.binary("sub", BinaryOp::Sub, x, mean);
        self.binary("div", BinaryOp::Div, centred, std)
    }
}

fn names(kept: &[Kept]) -> Vec<&str> {
    kept.iter().map(|k| k.name.as_str()).collect()
}

fn clip(min: Option<f32>, max: Option<f32>) -> Activation {
    Activation::Clip { min, max }
}

/// Optimizes `graph`, checks equivalence on random inputs, snapshots the dump as `name`,
/// and checks how often each listed rule fired.
fn check(name: &str, graph: &Graph, fired: &[(&str, usize)]) -> (Graph, OptReport) {
    let (opt, report) = optimize(graph, &OptOptions::default()).unwrap();
    assert!(report.saturated, "{report}");
    for &(rule, n) in fired {
        assert_eq!(report.rules[rule], n, "{rule} in {name}:\n{report}");
    }
    let mut b = Builder::new("inputs");
    let inputs: Vec<Tensor> = graph
        .inputs()
        .iter()
        .map(|&i| {
            let shape = graph.node(i).ty.shape.clone();
            Tensor::f32(shape.clone(), b.uniform(shape.iter().product(), -2.0, 2.0)).unwrap()
        })
        .collect();
    let before = lutq_interp::run(graph, &inputs).unwrap();
    let after = lutq_interp::run(&opt, &inputs).unwrap();
    for (x, y) in before.iter().zip(&after) {
        let (x, y) = (x.as_f32().unwrap(), y.as_f32().unwrap());
        let scale = x.iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
        for (a, b) in x.iter().zip(y) {
            assert!((a - b).abs() <= 1e-5 * scale, "{name}: {a} vs {b}");
        }
    }
    insta::with_settings!({snapshot_path => "../../../snapshots/opt", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, opt.dump());
    });
    (opt, report)
}

fn ops(graph: &Graph) -> Vec<&'static str> {
    graph
        .topo_order()
        .into_iter()
        .map(|id| graph.node(id).op.name())
        .filter(|n| !matches!(*n, "input" | "const"))
        .collect()
}

// ---- bn-fold ----------------------------------------------------------------------

#[test]
fn bn_fold_conv_with_bias() {
    let mut b = Builder::new("bn_fold_conv");
    let x = b.input(&[1, 3, 6, 6]);
    let c = b.conv(x, 3, 4, true);
    let y = b.bn(c, 4);
    let (opt, _) = check("rule_bn_fold_conv", &b.output(y), &[("bn-fold", 1)]);
    assert_eq!(ops(&opt), ["conv"]);
}

#[test]
fn bn_fold_conv_without_bias_adds_one() {
    let mut b = Builder::new("bn_fold_conv_no_bias");
    let x = b.input(&[1, 3, 6, 6]);
    let c = b.conv(x, 3, 4, false);
    let y = b.bn(c, 4);
    let (opt, _) = check("rule_bn_fold_conv_no_bias", &b.output(y), &[("bn-fold", 1)]);
    assert_eq!(ops(&opt), ["conv"]);
    let conv = opt.outputs()[0].node;
    assert_eq!(opt.node_inputs(conv).len(), 3);
}

#[test]
fn bn_fold_depthwise_conv() {
    let mut b = Builder::new("bn_fold_depthwise");
    let x = b.input(&[1, 4, 6, 6]);
    let w = b.konst("w", &[4, 1, 3, 3], -0.5, 0.5);
    let attrs = Conv {
        pads: [1; 4],
        group: 4,
        ..Conv::default()
    };
    let c = b.op("dw", Op::Conv(attrs), &[x, w]);
    let y = b.bn(c, 4);
    let (opt, _) = check("rule_bn_fold_depthwise", &b.output(y), &[("bn-fold", 1)]);
    assert_eq!(ops(&opt), ["conv"]);
}

#[test]
fn bn_fold_gemm_trans_b_with_bias() {
    let mut b = Builder::new("bn_fold_gemm");
    let x = b.input(&[2, 5]);
    let w = b.konst("w", &[3, 5], -0.5, 0.5);
    let c = b.konst("c", &[3], -0.5, 0.5);
    let g = Gemm {
        alpha: 0.5,
        beta: 2.0,
        trans_b: true,
        ..Gemm::default()
    };
    let gemm = b.op("gemm", Op::Gemm(g), &[x, w, c]);
    let y = b.bn(gemm, 3);
    let (opt, _) = check("rule_bn_fold_gemm_trans_b", &b.output(y), &[("bn-fold", 1)]);
    assert_eq!(ops(&opt), ["gemm"]);
}

#[test]
fn bn_fold_gemm_without_bias_adds_one() {
    let mut b = Builder::new("bn_fold_gemm_no_bias");
    let x = b.input(&[2, 5]);
    let w = b.konst("w", &[5, 3], -0.5, 0.5);
    let gemm = b.op("gemm", Op::Gemm(Gemm::default()), &[x, w]);
    let y = b.bn(gemm, 3);
    let (opt, _) = check("rule_bn_fold_gemm_no_bias", &b.output(y), &[("bn-fold", 1)]);
    assert_eq!(ops(&opt), ["gemm"]);
    assert_eq!(opt.node_inputs(opt.outputs()[0].node).len(), 3);
}

#[test]
fn bn_fold_gemm_with_full_c() {
    let mut b = Builder::new("bn_fold_gemm_full_c");
    let x = b.input(&[2, 5]);
    let w = b.konst("w", &[5, 3], -0.5, 0.5);
    let c = b.konst("c", &[2, 3], -0.5, 0.5);
    let g = Gemm {
        beta: 0.5,
        ..Gemm::default()
    };
    let gemm = b.op("gemm", Op::Gemm(g), &[x, w, c]);
    let y = b.bn(gemm, 3);
    check("rule_bn_fold_gemm_full_c", &b.output(y), &[("bn-fold", 1)]);
}

#[test]
fn bn_fold_matmul_becomes_gemm() {
    let mut b = Builder::new("bn_fold_matmul");
    let x = b.input(&[2, 5]);
    let w = b.konst("w", &[5, 3], -0.5, 0.5);
    let mm = b.op("matmul", Op::MatMul, &[x, w]);
    let y = b.bn(mm, 3);
    let (opt, _) = check("rule_bn_fold_matmul", &b.output(y), &[("bn-fold", 1)]);
    assert_eq!(ops(&opt), ["gemm"]);
}

#[test]
fn bn_fold_not_when_conv_output_has_other_readers() {
    let mut b = Builder::new("bn_fold_shared");
    let x = b.input(&[1, 3, 6, 6]);
    let c = b.conv(x, 3, 4, true);
    let y = b.bn(c, 4);
    let r = b.act(c, Activation::Relu);
    let sum = b.op("add", Op::Binary(lutq_ir::BinaryOp::Add), &[y, r]);
    let (opt, report) = check(
        "rule_bn_fold_not_shared",
        &b.output(sum),
        &[("bn-fold", 0), ("fuse-relu", 0)],
    );
    assert_eq!(ops(&opt), ["conv", "mul", "add", "relu", "add"]);
    assert_eq!(names(&report.unfolded_batch_norms), ["bn"]);
}

#[test]
fn bn_without_linear_producer_becomes_a_channel_affine_and_is_reported() {
    let mut b = Builder::new("bn_alone");
    let x = b.input(&[1, 4, 3, 3]);
    let y = b.bn(x, 4);
    let (opt, report) = check("rule_bn_alone", &b.output(y), &[("bn-fold", 0)]);
    // Left unfolded, it is computed as the per-channel affine it is (which the quantizer
    // makes a table of, with the element-wise ops around it).
    assert_eq!(ops(&opt), ["mul", "add"]);
    assert_eq!(names(&report.unfolded_batch_norms), ["bn"]);
    assert!(
        report.unfolded_batch_norms[0]
            .reason
            .contains("computed as a per-channel Mul and Add"),
        "{}",
        report.unfolded_batch_norms[0].reason
    );
}

#[test]
fn bn_folds_through_an_interleave_into_the_phase_convs() {
    // A transposed convolution as the import writes it: two convs interleaved along W by
    // Reshape + Concat, cropped by Slice; then a bias Add, a BatchNorm and a ReLU. Every
    // element of the crop is one conv's output, so the bias and the BN fold into both
    // convs' weights and biases, and only the convs, the layout ops and the ReLU remain.
    let mut b = Builder::new("bn_through_layout");
    let x = b.input(&[1, 3, 6, 6]);
    let c0 = b.conv(x, 3, 4, true);
    let c1 = b.conv(x, 3, 4, false);
    let col = |b: &mut Builder, c| {
        b.op(
            "col",
            Op::Reshape {
                shape: vec![1, 4, 6, 6, 1],
            },
            &[c],
        )
    };
    let (r0, r1) = (col(&mut b, c0), col(&mut b, c1));
    let row = b.op("row", Op::Concat { axis: 4 }, &[r0, r1]);
    let wide = b.op(
        "wide",
        Op::Reshape {
            shape: vec![1, 4, 6, 12],
        },
        &[row],
    );
    let crop = b.op(
        "crop",
        Op::Slice {
            axis: 3,
            start: 1,
            end: 11,
            step: 1,
        },
        &[wide],
    );
    let bias = b.konst("bias", &[1, 4, 1, 1], -0.5, 0.5);
    let biased = b.binary("bias_add", BinaryOp::Add, crop, bias);
    let n = b.bn(biased, 4);
    let y = b.act(n, Activation::Relu);
    let (opt, report) = check(
        "rule_bn_through_layout",
        &b.output(y),
        &[("bn-fold", 0), ("fold-through-layout", 3)],
    );
    assert_eq!(
        ops(&opt),
        [
            "conv", "reshape", "conv", "reshape", "concat", "reshape", "slice", "relu"
        ]
    );
    assert!(report.unfolded_batch_norms.is_empty(), "{report}");
    assert!(report.kept_affine.is_empty(), "{report}");
}

#[test]
fn an_affine_does_not_fold_through_a_layout_op_with_another_reader() {
    // The Concat is also a graph output: it must stay unscaled, so the BN stays too.
    let mut b = Builder::new("bn_through_shared_layout");
    let x = b.input(&[1, 3, 6, 6]);
    let c0 = b.conv(x, 3, 4, true);
    let c1 = b.conv(x, 3, 4, true);
    let cat = b.op("cat", Op::Concat { axis: 3 }, &[c0, c1]);
    let n = b.bn(cat, 4);
    let mut g = b.output(n);
    g.add_output("cat", cat).unwrap();
    let (opt, report) = optimize(&g, &OptOptions::default()).unwrap();
    assert_eq!(report.rules["fold-through-layout"], 0);
    assert_eq!(ops(&opt), ["conv", "conv", "concat", "mul", "add"]);
}

#[test]
fn bn_fold_not_into_conv_with_activation() {
    let mut b = Builder::new("bn_after_relu");
    let x = b.input(&[1, 3, 6, 6]);
    let c = b.conv(x, 3, 4, true);
    let r = b.act(c, Activation::Relu);
    let y = b.bn(r, 4);
    let (opt, _) = check(
        "rule_bn_after_relu",
        &b.output(y),
        &[("bn-fold", 0), ("fuse-relu", 1)],
    );
    assert_eq!(ops(&opt), ["conv", "mul", "add"]);
}

// ---- activation fusion -------------------------------------------------------------

#[test]
fn fuse_relu_into_conv() {
    let mut b = Builder::new("fuse_relu_conv");
    let x = b.input(&[1, 3, 6, 6]);
    let c = b.conv(x, 3, 4, true);
    let y = b.act(c, Activation::Relu);
    let (opt, _) = check("rule_fuse_relu_conv", &b.output(y), &[("fuse-relu", 1)]);
    assert_eq!(ops(&opt), ["conv"]);
    assert!(opt.dump().contains(" act=relu "));
}

#[test]
fn fuse_relu6_into_gemm() {
    let mut b = Builder::new("fuse_relu6_gemm");
    let x = b.input(&[2, 5]);
    let w = b.konst("w", &[5, 3], -2.0, 2.0);
    let gemm = b.op("gemm", Op::Gemm(Gemm::default()), &[x, w]);
    let y = b.act(gemm, clip(Some(0.0), Some(6.0)));
    let (opt, _) = check("rule_fuse_relu6_gemm", &b.output(y), &[("fuse-clip", 1)]);
    assert_eq!(ops(&opt), ["gemm"]);
    assert!(opt.dump().contains(" act=clip(0,6) "));
}

#[test]
fn fuse_clip_zero_to_x_and_open_clip_as_relu() {
    let mut b = Builder::new("fuse_clip");
    let x = b.input(&[1, 3, 6, 6]);
    let c = b.conv(x, 3, 4, true);
    let y = b.act(c, clip(Some(0.0), Some(0.25)));
    let c2 = b.conv(y, 4, 4, false);
    let z = b.act(c2, clip(Some(0.0), None));
    let (opt, _) = check("rule_fuse_clip", &b.output(z), &[("fuse-clip", 2)]);
    assert_eq!(ops(&opt), ["conv", "conv"]);
    let dump = opt.dump();
    assert!(dump.contains(" act=clip(0,0.25) ") && dump.contains(" act=relu "));
}

#[test]
fn conv_bn_relu_becomes_one_conv() {
    let mut b = Builder::new("conv_bn_relu");
    let x = b.input(&[1, 3, 6, 6]);
    let c = b.conv(x, 3, 4, false);
    let n = b.bn(c, 4);
    let y = b.act(n, Activation::Relu);
    let (opt, _) = check(
        "rule_conv_bn_relu",
        &b.output(y),
        &[("bn-fold", 1), ("fuse-relu", 1)],
    );
    assert_eq!(ops(&opt), ["conv"]);
}

#[test]
fn activation_not_fused_where_inexact() {
    let mut b = Builder::new("no_fusion");
    let x = b.input(&[1, 3, 6, 6]);
    // The conv's output is also a graph output: it is needed without the activation.
    let c = b.conv(x, 3, 4, true);
    let r = b.act(c, Activation::Relu);
    // Clip with a non-zero minimum and leaky ReLU are no output-range clamps.
    let c2 = b.conv(r, 4, 4, true);
    let k = b.act(c2, clip(Some(-1.0), Some(1.0)));
    let c3 = b.conv(k, 4, 4, true);
    let l = b.act(c3, Activation::LeakyRelu { alpha: 0.1 });
    b.g.add_output("conv", c).unwrap();
    let (opt, _) = check(
        "rule_no_fusion",
        &b.output(l),
        &[("fuse-relu", 0), ("fuse-clip", 0)],
    );
    assert_eq!(
        ops(&opt),
        ["conv", "relu", "conv", "clip", "conv", "leaky_relu"]
    );
}

// ---- cleanup ----------------------------------------------------------------------

#[test]
fn identity_and_dropout_removed() {
    let mut b = Builder::new("identity_dropout");
    let x = b.input(&[1, 4]);
    let i = b.op("identity", Op::Identity, &[x]);
    let r = b.act(i, Activation::Sigmoid);
    let d = b.op("dropout", Op::Dropout, &[r]);
    let (opt, _) = check(
        "rule_identity_dropout",
        &b.output(d),
        &[("remove-identity", 1), ("remove-dropout", 1)],
    );
    assert_eq!(ops(&opt), ["sigmoid"]);
}

#[test]
fn reshapes_merged_and_noop_reshape_removed() {
    let mut b = Builder::new("reshapes");
    let x = b.input(&[1, 4, 2, 2]);
    let r1 = b.op("r1", Op::Reshape { shape: vec![1, 16] }, &[x]);
    let r2 = b.op("r2", Op::Reshape { shape: vec![4, 4] }, &[r1]);
    let s = b.act(r2, Activation::Sigmoid);
    let same = b.op("same", Op::Reshape { shape: vec![4, 4] }, &[s]);
    let (opt, _) = check(
        "rule_reshapes",
        &b.output(same),
        &[("merge-reshapes", 1), ("remove-noop-reshape", 1)],
    );
    assert_eq!(ops(&opt), ["reshape", "sigmoid"]);
    assert!(opt.dump().contains("reshape %0 shape=[4,4]"));
}

#[test]
fn reshape_that_changes_the_shape_is_kept() {
    let mut b = Builder::new("reshape_kept");
    let x = b.input(&[1, 4, 2, 2]);
    let r = b.op("r", Op::Reshape { shape: vec![1, 16] }, &[x]);
    let (opt, _) = check(
        "rule_reshape_kept",
        &b.output(r),
        &[("remove-noop-reshape", 0)],
    );
    assert_eq!(ops(&opt), ["reshape"]);
}

// ---- determinism -------------------------------------------------------------------

/// conv → bn → relu → conv → clip, plus a residual add, built in two node orders.
fn two_layer(reverse_constants: bool) -> Graph {
    let mut g = Graph::new("order");
    let x = g.add_input("x", TensorType::f32([1, 2, 4, 4]));
    let t = |shape: &[usize], v: f32| {
        let n: usize = shape.iter().product();
        Tensor::f32(shape, (0..n).map(|i| v + 0.01 * i as f32).collect()).unwrap()
    };
    let specs: Vec<(&str, Vec<usize>, f32)> = vec![
        ("w1", vec![2, 2, 3, 3], -0.2),
        ("s", vec![2], 0.9),
        ("b", vec![2], 0.1),
        ("m", vec![2], -0.1),
        ("v", vec![2], 0.5),
        ("w2", vec![2, 2, 3, 3], -0.1),
    ];
    let mut ids = std::collections::HashMap::new();
    let order: Vec<_> = if reverse_constants {
        specs.iter().rev().collect()
    } else {
        specs.iter().collect()
    };
    for (name, shape, v) in order {
        ids.insert(*name, g.add_constant(*name, t(shape, *v)));
    }
    let conv = Op::Conv(Conv {
        pads: [1; 4],
        ..Conv::default()
    });
    let c1 = g.add_node("c1", conv.clone(), &[x, ids["w1"]]).unwrap();
    let n = g
        .add_node(
            "bn",
            Op::BatchNorm { epsilon: 1e-5 },
            &[c1, ids["s"], ids["b"], ids["m"], ids["v"]],
        )
        .unwrap();
    let r = g
        .add_node("relu", Op::Activation(Activation::Relu), &[n])
        .unwrap();
    let c2 = g.add_node("c2", conv, &[r, ids["w2"]]).unwrap();
    let k = g
        .add_node("clip", Op::Activation(clip(Some(0.0), Some(6.0))), &[c2])
        .unwrap();
    let sum = g
        .add_node("add", Op::Binary(lutq_ir::BinaryOp::Add), &[k, r])
        .unwrap();
    g.add_output("y", sum).unwrap();
    g
}

#[test]
fn same_graph_gives_byte_identical_dumps() {
    let options = OptOptions::default();
    let a = optimize(&two_layer(false), &options).unwrap().0.dump();
    let again = optimize(&two_layer(false), &options).unwrap().0.dump();
    let reordered = optimize(&two_layer(true), &options).unwrap().0.dump();
    assert_eq!(a, again);
    assert_eq!(a, reordered);
    check(
        "determinism_two_layer",
        &two_layer(false),
        &[("bn-fold", 1), ("fuse-clip", 1)],
    );
}

// ---- avgpool-to-sumpool ------------------------------------------------------------

/// `x [1,4,5,5]` → GlobalAveragePool → Flatten (a Reshape to `[1,4]`).
fn pooled_and_flattened(b: &mut Builder) -> (NodeId, NodeId) {
    let x = b.input(&[1, 4, 5, 5]);
    let p = b.op("gap", Op::GlobalAveragePool, &[x]);
    let f = b.op("flatten", Op::Reshape { shape: vec![1, 4] }, &[p]);
    (p, f)
}

fn gemm_trans_b(b: &mut Builder, a: NodeId) -> NodeId {
    let w = b.konst("fc.weight", &[3, 4], -0.5, 0.5);
    let c = b.konst("fc.bias", &[3], -0.5, 0.5);
    let g = Gemm {
        trans_b: true,
        ..Gemm::default()
    };
    b.op("fc", Op::Gemm(g), &[a, w, c])
}

#[test]
fn avgpool_folds_through_flatten_into_gemm() {
    let mut b = Builder::new("avgpool_gemm");
    let (_, f) = pooled_and_flattened(&mut b);
    let g = gemm_trans_b(&mut b, f);
    let y = b.act(g, Activation::Relu);
    let (opt, _) = check(
        "rule_avgpool_gemm",
        &b.output(y),
        &[("avgpool-to-sumpool", 1), ("fuse-relu", 2)],
    );
    assert_eq!(ops(&opt), ["global_sum_pool", "reshape", "gemm"]);
}

#[test]
fn avgpool_folds_into_pointwise_conv() {
    let mut b = Builder::new("avgpool_conv");
    let x = b.input(&[1, 4, 3, 6]);
    let p = b.op("gap", Op::GlobalAveragePool, &[x]);
    let w = b.konst("pw.weight", &[6, 4, 1, 1], -0.5, 0.5);
    let bias = b.konst("pw.bias", &[6], -0.5, 0.5);
    let c = b.op("pw", Op::Conv(Conv::default()), &[p, w, bias]);
    let (opt, _) = check(
        "rule_avgpool_conv",
        &b.output(c),
        &[("avgpool-to-sumpool", 1)],
    );
    assert_eq!(ops(&opt), ["global_sum_pool", "conv"]);
}

#[test]
fn avgpool_not_folded_where_inexact() {
    // The pool's output is also a graph output: it must stay a mean.
    let mut b = Builder::new("avgpool_shared");
    let (p, f) = pooled_and_flattened(&mut b);
    let g = gemm_trans_b(&mut b, f);
    b.g.add_output("pooled", p).unwrap();
    let (opt, _) = check(
        "rule_avgpool_shared",
        &b.output(g),
        &[("avgpool-to-sumpool", 0)],
    );
    assert!(ops(&opt).contains(&"global_average_pool"));

    // The Gemm's B is not a constant: nothing to fold the 1/N into.
    let mut b = Builder::new("avgpool_runtime_weights");
    let (_, f) = pooled_and_flattened(&mut b);
    let w = b.g.add_input("w", TensorType::f32([4, 3]));
    let g = b.op("fc", Op::Gemm(Gemm::default()), &[f, w]);
    let (opt, _) = check(
        "rule_avgpool_runtime_weights",
        &b.output(g),
        &[("avgpool-to-sumpool", 0)],
    );
    assert_eq!(ops(&opt), ["global_average_pool", "reshape", "gemm"]);
}

/// `x [1,2,4,5]` → AveragePool(2×2, stride 2, `pads`) → Flatten → Gemm.
fn windowed_avgpool_gemm(name: &str, pads: [usize; 4]) -> Graph {
    let mut b = Builder::new(name);
    let x = b.input(&[1, 2, 4, 5]);
    let mut p = lutq_ir::Pool::new([2, 2]);
    p.strides = [2, 2];
    p.pads = pads;
    let pool = b.op("pool", Op::AveragePool(p), &[x]);
    let cells = b.g.node(pool).ty.shape.iter().product::<usize>();
    let f = b.op(
        "flatten",
        Op::Reshape {
            shape: vec![1, cells],
        },
        &[pool],
    );
    let w = b.konst("fc.weight", &[cells, 3], -0.5, 0.5);
    let g = b.op("fc", Op::Gemm(Gemm::default()), &[f, w]);
    b.output(g)
}

#[test]
fn windowed_avgpool_folds_where_every_window_has_the_same_divisor() {
    let (opt, _) = check(
        "rule_avgpool_windowed",
        &windowed_avgpool_gemm("avgpool_windowed", [0; 4]),
        &[("avgpool-to-sumpool", 1)],
    );
    assert_eq!(ops(&opt), ["sum_pool", "reshape", "gemm"]);

    // Padding left out of the count: border windows divide by fewer taps.
    let (opt, _) = check(
        "rule_avgpool_windowed_padded",
        &windowed_avgpool_gemm("avgpool_windowed_padded", [1, 1, 1, 1]),
        &[("avgpool-to-sumpool", 0)],
    );
    assert_eq!(ops(&opt), ["average_pool", "reshape", "gemm"]);
}

// ---- affine folding ----------------------------------------------------------------

#[test]
fn input_normalisation_folds_into_unpadded_conv() {
    let mut b = Builder::new("affine_norm_unpadded");
    let x = b.input(&[1, 3, 6, 6]);
    let n = b.normalise(x, 3);
    let c = b.conv_padded(n, 3, 4, 0);
    let (opt, report) = check(
        "rule_affine_norm_unpadded",
        &b.output(c),
        &[("affine-into-consumer", 2), ("affine-into-producer", 0)],
    );
    assert_eq!(ops(&opt), ["conv"]);
    assert!(report.kept_affine.is_empty(), "{report}");
}

#[test]
fn input_normalisation_offset_kept_before_padded_conv() {
    // The scaling (÷ std) folds under zero padding; the offset (− mean) would also
    // shift the padding zeros, so the Sub stays and is reported.
    let mut b = Builder::new("affine_norm_padded");
    let x = b.input(&[1, 3, 6, 6]);
    let n = b.normalise(x, 3);
    let c = b.conv_padded(n, 3, 4, 1);
    let (opt, report) = check(
        "rule_affine_norm_padded",
        &b.output(c),
        &[("affine-into-consumer", 1)],
    );
    assert_eq!(ops(&opt), ["sub", "conv"]);
    assert_eq!(names(&report.kept_affine), ["sub"]);
    let reason = &report.kept_affine[0].reason;
    assert!(reason.contains("pads=[1, 1, 1, 1]"), "{reason}");
    assert!(
        report.to_string().contains("affine kept: sub (sub)"),
        "{report}"
    );
}

#[test]
fn scalar_mul_folds_into_padded_depthwise_conv() {
    let mut b = Builder::new("affine_mul_depthwise");
    let x = b.input(&[1, 4, 6, 6]);
    let k = b.konst("k", &[], 0.5, 2.0);
    let m = b.binary("mul", BinaryOp::Mul, k, x);
    let w = b.konst("w", &[4, 1, 3, 3], -0.5, 0.5);
    let attrs = Conv {
        pads: [1; 4],
        group: 4,
        ..Conv::default()
    };
    let c = b.op("dw", Op::Conv(attrs), &[m, w]);
    let (opt, _) = check(
        "rule_affine_mul_depthwise",
        &b.output(c),
        &[("affine-into-consumer", 1)],
    );
    assert_eq!(ops(&opt), ["conv"]);
}

#[test]
fn affine_after_conv_and_gemm_folds_into_producer() {
    let mut b = Builder::new("affine_into_producer");
    let x = b.input(&[1, 3, 6, 6]);
    let c = b.conv_padded(x, 3, 4, 1);
    let k = b.konst("k", &[1, 4, 1, 1], -2.0, 2.0);
    let m = b.binary("mul", BinaryOp::Mul, c, k);
    let d = b.konst("d", &[4, 1, 1], -1.0, 1.0);
    let a = b.binary("add", BinaryOp::Add, m, d);
    let (opt, _) = check(
        "rule_affine_into_conv",
        &b.output(a),
        &[("affine-into-producer", 2), ("affine-into-consumer", 0)],
    );
    assert_eq!(ops(&opt), ["conv"]);

    // c − Gemm(x) / 4 with a scalar c: Div and Sub(c, ·) fold too.
    let mut b = Builder::new("affine_into_gemm");
    let x = b.input(&[2, 5]);
    let w = b.konst("w", &[3, 5], -0.5, 0.5);
    let g = Gemm {
        trans_b: true,
        alpha: 0.5,
        ..Gemm::default()
    };
    let gemm = b.op("gemm", Op::Gemm(g), &[x, w]);
    let four = b.g.add_constant("four", Tensor::scalar_f32(4.0));
    let q = b.binary("div", BinaryOp::Div, gemm, four);
    let c = b.konst("c", &[3], -1.0, 1.0);
    let y = b.binary("sub", BinaryOp::Sub, c, q);
    let (opt, _) = check(
        "rule_affine_into_gemm",
        &b.output(y),
        &[("affine-into-producer", 2)],
    );
    assert_eq!(ops(&opt), ["gemm"]);
}

#[test]
fn affine_not_folded_where_inexact_or_not_per_channel() {
    // Conv → ReLU → Mul: the ReLU is fused into the Conv, and the Mul cannot pass it
    // into the weights; the Mul is a graph output, so there is no consumer either.
    let mut b = Builder::new("affine_after_relu");
    let x = b.input(&[1, 3, 6, 6]);
    let c = b.conv_padded(x, 3, 4, 1);
    let r = b.act(c, Activation::Relu);
    let k = b.konst("k", &[4, 1, 1], -2.0, 2.0);
    let m = b.binary("mul", BinaryOp::Mul, r, k);
    // A constant varying along the width is not a per-channel affine.
    let w = b.konst("wide", &[6], 0.5, 1.5);
    let c2 = b.conv_padded(x, 3, 4, 1);
    let m2 = b.binary("mul_wide", BinaryOp::Mul, c2, w);
    let sum = b.binary("sum", BinaryOp::Add, m, m2);
    let (opt, report) = check(
        "rule_affine_not_folded",
        &b.output(sum),
        &[
            ("affine-into-producer", 0),
            ("affine-into-consumer", 0),
            ("fuse-relu", 1),
        ],
    );
    assert_eq!(ops(&opt), ["conv", "mul", "conv", "mul", "add"]);
    assert_eq!(names(&report.kept_affine), ["mul", "mul_wide"]);
    assert!(
        report.kept_affine[0].reason.contains("fused activation"),
        "{report}"
    );
    assert!(
        report.kept_affine[1].reason.contains("not per-channel"),
        "{report}"
    );
}

#[test]
fn affine_folds_through_flatten_into_gemm() {
    let mut b = Builder::new("affine_flatten_gemm");
    let x = b.input(&[2, 3, 2, 2]);
    let k = b.konst("k", &[3, 1, 1], 0.5, 2.0);
    let d = b.konst("d", &[3, 1, 1], -1.0, 1.0);
    let m = b.binary("mul", BinaryOp::Mul, x, k);
    let a = b.binary("add", BinaryOp::Add, m, d);
    let f = b.op("flatten", Op::Reshape { shape: vec![2, 12] }, &[a]);
    let w = b.konst("fc.weight", &[12, 4], -0.5, 0.5);
    let c = b.konst("fc.bias", &[2, 4], -0.5, 0.5);
    let g = Gemm {
        alpha: 2.0,
        beta: 0.5,
        ..Gemm::default()
    };
    let gemm = b.op("fc", Op::Gemm(g), &[f, w, c]);
    let (opt, _) = check(
        "rule_affine_flatten_gemm",
        &b.output(gemm),
        &[("affine-into-consumer", 2)],
    );
    assert_eq!(ops(&opt), ["reshape", "gemm"]);
}

// ---- bn-fold-forward ---------------------------------------------------------------

#[test]
fn bn_without_producer_folds_forward_into_unpadded_conv_and_gemm() {
    let mut b = Builder::new("bn_forward_conv");
    let x = b.input(&[1, 4, 6, 6]);
    let n = b.bn(x, 4);
    let c = b.conv_padded(n, 4, 3, 0);
    let (opt, report) = check(
        "rule_bn_forward_conv",
        &b.output(c),
        &[("bn-fold-forward", 1), ("bn-fold", 0)],
    );
    assert_eq!(ops(&opt), ["conv"]);
    assert!(report.unfolded_batch_norms.is_empty());

    let mut b = Builder::new("bn_forward_gemm");
    let x = b.input(&[1, 4, 6, 6]);
    let p = b.op("gsp", Op::GlobalSumPool, &[x]);
    let n = b.bn(p, 4);
    let f = b.op("flatten", Op::Reshape { shape: vec![1, 4] }, &[n]);
    let w = b.konst("fc.weight", &[3, 4], -0.5, 0.5);
    let g = Gemm {
        trans_b: true,
        ..Gemm::default()
    };
    let gemm = b.op("fc", Op::Gemm(g), &[f, w]);
    let (opt, _) = check(
        "rule_bn_forward_gemm",
        &b.output(gemm),
        &[("bn-fold-forward", 1)],
    );
    assert_eq!(ops(&opt), ["global_sum_pool", "reshape", "gemm"]);
}

#[test]
fn bn_not_folded_forward_into_padded_conv() {
    // Conv → ReLU → BN → padded Conv: the ReLU blocks bn-fold, the padding (and the BN's
    // non-zero offset) blocks bn-fold-forward.
    let mut b = Builder::new("bn_forward_padded");
    let x = b.input(&[1, 3, 6, 6]);
    let c = b.conv_padded(x, 3, 4, 1);
    let r = b.act(c, Activation::Relu);
    let n = b.bn(r, 4);
    let c2 = b.conv_padded(n, 4, 4, 1);
    let (opt, report) = check(
        "rule_bn_forward_padded",
        &b.output(c2),
        &[("bn-fold", 0), ("bn-fold-forward", 0), ("fuse-relu", 1)],
    );
    assert_eq!(ops(&opt), ["conv", "mul", "add", "conv"]);
    assert_eq!(names(&report.unfolded_batch_norms), ["bn"]);
    let reason = &report.unfolded_batch_norms[0].reason;
    assert!(
        reason.contains("fused activation") && reason.contains("padding zeros"),
        "{reason}"
    );
}

#[test]
fn bn_before_conv_folds_backwards_not_forwards() {
    // Conv → BN → Conv (both unpadded): both folds would be exact; the BN goes into its
    // producer (bn-fold) and bn-fold-forward leaves it alone.
    let mut b = Builder::new("bn_between_convs");
    let x = b.input(&[1, 3, 6, 6]);
    let c = b.conv_padded(x, 3, 4, 0);
    let n = b.bn(c, 4);
    let c2 = b.conv_padded(n, 4, 2, 0);
    let (opt, _) = check(
        "rule_bn_between_convs",
        &b.output(c2),
        &[("bn-fold", 1), ("bn-fold-forward", 0)],
    );
    assert_eq!(ops(&opt), ["conv", "conv"]);
    assert!(opt.dump().contains("; w+bn\n"), "{}", opt.dump());
}

// ---- reshapes around Gemm -----------------------------------------------------------

#[test]
fn reshape_undoing_another_and_noop_reshape_after_gemm_removed() {
    let mut b = Builder::new("reshape_roundtrip");
    let x = b.input(&[1, 4, 2, 2]);
    let flat = b.op("flat", Op::Reshape { shape: vec![1, 16] }, &[x]);
    let back = b.op(
        "back",
        Op::Reshape {
            shape: vec![1, 4, 2, 2],
        },
        &[flat],
    );
    let s = b.act(back, Activation::Sigmoid);
    let f = b.op("flatten", Op::Reshape { shape: vec![1, 16] }, &[s]);
    let w = b.konst("fc.weight", &[16, 3], -0.5, 0.5);
    let g = b.op("fc", Op::Gemm(Gemm::default()), &[f, w]);
    let same = b.op("view", Op::Reshape { shape: vec![1, 3] }, &[g]);
    // merge-reshapes turns flat → back into one Reshape to x's own shape, which
    // remove-noop-reshape removes; the Reshape after the Gemm is a no-op too.
    let (opt, _) = check("rule_reshape_roundtrip", &b.output(same), &[]);
    assert_eq!(ops(&opt), ["sigmoid", "reshape", "gemm"]);
}

#[test]
fn offset_folds_into_unpadded_grouped_conv() {
    // c − x before a Conv with two groups: k = −1, shift = c, each output channel
    // summing over its own group's input channels only.
    let mut b = Builder::new("affine_grouped_conv");
    let x = b.input(&[1, 4, 5, 5]);
    let c = b.konst("c", &[1, 4, 1, 1], -1.0, 1.0);
    let s = b.binary("sub", BinaryOp::Sub, c, x);
    let w = b.konst("w", &[6, 2, 3, 3], -0.5, 0.5);
    let attrs = Conv {
        group: 2,
        strides: [2, 2],
        ..Conv::default()
    };
    let conv = b.op("gconv", Op::Conv(attrs), &[s, w]);
    let (opt, _) = check(
        "rule_affine_grouped_conv",
        &b.output(conv),
        &[("affine-into-consumer", 1)],
    );
    assert_eq!(ops(&opt), ["conv"]);
    assert!(opt.dump().contains("; sub.folded_bias"), "{}", opt.dump());
}

// ---- fold-zero-pad ----------------------------------------------------------------

#[test]
fn zero_pad_folds_into_the_conv_pads() {
    let mut b = Builder::new("fold_zero_pad");
    let x = b.input(&[1, 3, 6, 6]);
    let pads = vec![0, 0, 0, 1, 0, 0, 2, 1];
    let p = b.op("pad", Op::Pad { pads, value: 0.0 }, &[x]);
    let c = b.conv(p, 3, 4, true);
    let (opt, _) = check("rule_fold_zero_pad", &b.output(c), &[("fold-zero-pad", 1)]);
    assert_eq!(ops(&opt), ["conv"]);
    let Op::Conv(conv) = &opt.node(opt.outputs()[0].node).op else {
        panic!("not a conv")
    };
    // The builder's conv pads 1 on every side; the Pad adds (0, 1, 2, 1).
    assert_eq!(conv.pads, [1, 2, 3, 2]);
}

#[test]
fn nonzero_pad_does_not_fold() {
    let mut b = Builder::new("no_fold_pad");
    let x = b.input(&[1, 3, 6, 6]);
    let pads = vec![0, 0, 1, 1, 0, 0, 1, 1];
    let p = b.op("pad", Op::Pad { pads, value: 0.5 }, &[x]);
    let c = b.conv(p, 3, 4, true);
    let (opt, report) = optimize(&b.output(c), &OptOptions::default()).unwrap();
    assert_eq!(
        report.rules.get("fold-zero-pad").copied().unwrap_or(0),
        0,
        "{report}"
    );
    assert_eq!(ops(&opt), ["pad", "conv"]);
}
