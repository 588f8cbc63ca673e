//! Each supported op imports to the expected IR (snapshots under snapshots/onnx/), and
//! the lowerings that change an op's form compute what ONNX specifies.

mod common;

use common::*;
use lutq_ir::{Activation, Op, Tensor};
use lutq_onnx::proto::tensor_proto::DataType;

/// The op of the node named `name` (ONNX node names become IR node names).
fn op_of(g: &lutq_ir::Graph, name: &str) -> Op {
    g.node_ids()
        .map(|id| g.node(id))
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node '{name}' in\n{}", g.dump()))
        .op
        .clone()
}

fn run(g: &lutq_ir::Graph, inputs: &[Tensor]) -> Vec<f32> {
    let out = lutq_interp::run(g, inputs).unwrap();
    out[0].as_f32().unwrap().to_vec()
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "{got:?} vs {want:?}"
        );
    }
}

#[test]
fn conv_with_bias_strides_and_pads() {
    let m = Model::new(13)
        .input("x", &[1, 3, 8, 8])
        .weight("w", &[4, 3, 3, 3])
        .weight("b", &[4])
        .named_node(
            "conv1",
            "Conv",
            &["x", "w", "b"],
            &["y"],
            vec![
                ints("kernel_shape", &[3, 3]),
                ints("strides", &[2, 2]),
                ints("pads", &[1, 0, 1, 2]),
                ints("dilations", &[1, 1]),
                int("group", 1),
            ],
        )
        .output("y");
    snapshot!("conv_bias_strides_pads", m);
}

#[test]
fn conv_depthwise_dilated_without_bias_or_kernel_shape() {
    let m = Model::new(11)
        .input("x", &[1, 8, 9, 9])
        .weight("w", &[8, 1, 3, 3])
        .named_node(
            "dw",
            "Conv",
            &["x", "w"],
            &["y"],
            vec![int("group", 8), ints("dilations", &[2, 2])],
        )
        .output("y");
    snapshot!("conv_depthwise_dilated", m);
}

#[test]
fn auto_pad_becomes_explicit_pads() {
    let pads_for = |auto: &str, size: i64, k: i64, stride: i64, dilation: i64| {
        let m = Model::new(13)
            .input("x", &[1, 1, size, size])
            .weight("w", &[1, 1, k, k])
            .named_node(
                "c",
                "Conv",
                &["x", "w"],
                &["y"],
                vec![
                    string("auto_pad", auto),
                    ints("strides", &[stride, stride]),
                    ints("dilations", &[dilation, dilation]),
                ],
            )
            .output("y");
        let g = import(&m).unwrap();
        let Op::Conv(c) = op_of(&g, "c") else {
            panic!()
        };
        let out = g.node(g.outputs()[0].node).ty.shape.clone();
        (c.pads, out[2])
    };
    // SAME_*: out = ceil(in / stride); total = (out-1)·stride + (k-1)·d + 1 - in.
    assert_eq!(pads_for("SAME_UPPER", 5, 3, 1, 1), ([1, 1, 1, 1], 5));
    assert_eq!(pads_for("SAME_UPPER", 6, 2, 1, 1), ([0, 0, 1, 1], 6));
    assert_eq!(pads_for("SAME_LOWER", 6, 2, 1, 1), ([1, 1, 0, 0], 6));
    assert_eq!(pads_for("SAME_UPPER", 7, 3, 2, 1), ([1, 1, 1, 1], 4));
    assert_eq!(pads_for("SAME_UPPER", 8, 3, 2, 1), ([0, 0, 1, 1], 4));
    assert_eq!(pads_for("SAME_LOWER", 8, 3, 2, 1), ([1, 1, 0, 0], 4));
    assert_eq!(pads_for("SAME_UPPER", 7, 3, 1, 2), ([2, 2, 2, 2], 7));
    assert_eq!(pads_for("VALID", 7, 3, 2, 1), ([0, 0, 0, 0], 3));
    assert_eq!(pads_for("NOTSET", 7, 3, 1, 1), ([0, 0, 0, 0], 5));

    // Pools use the same rule.
    let m = Model::new(22)
        .input("x", &[1, 2, 32, 32])
        .named_node(
            "p",
            "MaxPool",
            &["x"],
            &["y"],
            vec![
                ints("kernel_shape", &[2, 2]),
                string("auto_pad", "SAME_LOWER"),
            ],
        )
        .output("y");
    let g = import(&m).unwrap();
    let Op::MaxPool(p) = op_of(&g, "p") else {
        panic!()
    };
    assert_eq!(p.pads, [1, 1, 0, 0]);
}

#[test]
fn batch_norm_across_opsets() {
    // Opset 7 still has `spatial` (default 1); opset 15 does not.
    for (opset, name) in [(7, "batchnorm_opset7"), (15, "batchnorm_opset15")] {
        let m = Model::new(opset)
            .input("x", &[1, 3, 4, 4])
            .weight("s", &[3])
            .weight("b", &[3])
            .weight("mean", &[3])
            .init_f32("var", &[3], vec![1.0, 2.0, 3.0])
            .named_node(
                "bn",
                "BatchNormalization",
                &["x", "s", "b", "mean", "var"],
                &["y"],
                vec![float("epsilon", 1e-3), float("momentum", 0.9)],
            )
            .output("y");
        snapshot!(name, m);
    }
}

#[test]
fn activations() {
    let m = Model::new(14)
        .input("x", &[2, 5])
        .node("Relu", &["x"], &["a"], vec![])
        .node("LeakyRelu", &["a"], &["b"], vec![float("alpha", 0.2)])
        .node("HardSigmoid", &["b"], &["c"], vec![])
        .node("HardSwish", &["c"], &["d"], vec![])
        .node("Sigmoid", &["d"], &["e"], vec![])
        .output("e");
    snapshot!("activations", m);
}

#[test]
fn clip_bounds_from_attributes_and_constant_inputs() {
    // Opset 6: attributes.
    let m = Model::new(6)
        .input("x", &[1, 4])
        .node(
            "Clip",
            &["x"],
            &["y"],
            vec![float("min", 0.0), float("max", 6.0)],
        )
        .output("y");
    snapshot!("clip_opset6", m);
    // Opset 13: optional inputs; an empty name skips `min`, `max` comes from a Constant.
    let m = Model::new(13)
        .input("x", &[1, 4])
        .node(
            "Constant",
            &[],
            &["six"],
            vec![tensor("value", tensor_f32(&[], vec![6.0]))],
        )
        .node("Clip", &["x", "", "six"], &["y"], vec![])
        .node("Clip", &["y"], &["z"], vec![])
        .output("z");
    snapshot!("clip_opset13", m);
}

#[test]
fn prelu_slope_broadcasts_and_legacy_per_channel_slope() {
    let m = Model::new(16)
        .input("x", &[1, 3, 2, 2])
        .init_f32("slope", &[3, 1, 1], vec![0.1, 0.2, 0.3])
        .node("PRelu", &["x", "slope"], &["y"], vec![])
        .output("y");
    snapshot!("prelu_opset16", m);

    // Opset 6: a [C] slope is per channel; it is reshaped to [C,1,1].
    let m = Model::new(6)
        .input("x", &[1, 3, 2, 2])
        .init_f32("slope", &[3], vec![0.1, 0.2, 0.3])
        .node("PRelu", &["x", "slope"], &["y"], vec![])
        .output("y");
    let g = snapshot!("prelu_opset6_per_channel", m);
    let x = Tensor::f32([1, 3, 2, 2], vec![-1.0; 12]).unwrap();
    let y = run(&g, &[x]);
    assert_close(
        &y,
        &[
            -0.1, -0.1, -0.1, -0.1, -0.2, -0.2, -0.2, -0.2, -0.3, -0.3, -0.3, -0.3,
        ],
    );
}

#[test]
fn binary_ops_with_tensors_and_constants() {
    let m = Model::new(14)
        .input("a", &[1, 4, 2, 2])
        .input("b", &[4, 1, 1])
        .init_f32("half", &[], vec![0.5])
        .node("Add", &["a", "b"], &["s"], vec![])
        .node("Sub", &["s", "half"], &["d"], vec![])
        .node("Mul", &["half", "d"], &["p"], vec![])
        .node("Div", &["p", "b"], &["q"], vec![])
        .output("q");
    snapshot!("binary", m);
}

#[test]
fn legacy_broadcast_with_axis_aligns_b_at_axis() {
    // Opset 6, broadcast=1, axis=1: B [3] is aligned with A's dim 1.
    let m = Model::new(6)
        .input("a", &[2, 3, 2])
        .init_f32("b", &[3], vec![10.0, 20.0, 30.0])
        .node(
            "Add",
            &["a", "b"],
            &["y"],
            vec![int("broadcast", 1), int("axis", 1)],
        )
        .output("y");
    let g = snapshot!("add_legacy_broadcast_axis", m);
    let a = Tensor::f32([2, 3, 2], vec![0.0; 12]).unwrap();
    let y = run(&g, &[a]);
    assert_close(
        &y,
        &[10., 10., 20., 20., 30., 30., 10., 10., 20., 20., 30., 30.],
    );
}

#[test]
fn pools() {
    let m = Model::new(22)
        .input("x", &[1, 2, 9, 9])
        .named_node(
            "max",
            "MaxPool",
            &["x"],
            &["a"],
            vec![
                ints("kernel_shape", &[3, 3]),
                ints("strides", &[2, 2]),
                ints("pads", &[1, 1, 1, 1]),
                int("ceil_mode", 1),
                int("storage_order", 0),
            ],
        )
        .named_node(
            "avg",
            "AveragePool",
            &["a"],
            &["b"],
            vec![
                ints("kernel_shape", &[2, 2]),
                ints("dilations", &[2, 2]),
                ints("pads", &[1, 1, 1, 1]),
                int("count_include_pad", 1),
            ],
        )
        .named_node("gap", "GlobalAveragePool", &["b"], &["c"], vec![])
        .output("c");
    snapshot!("pools", m);
}

#[test]
fn gemm_and_matmul() {
    let m = Model::new(13)
        .input("x", &[4, 3])
        .weight("w", &[5, 4])
        .weight("c", &[5])
        .weight("m", &[5, 2])
        .named_node(
            "gemm",
            "Gemm",
            &["x", "w", "c"],
            &["y"],
            vec![
                float("alpha", 0.5),
                float("beta", 2.0),
                int("transA", 1),
                int("transB", 1),
            ],
        )
        .named_node("nobias", "Gemm", &["y", "m"], &["z"], vec![])
        .named_node("mm", "MatMul", &["z", "z2"], &["out"], vec![])
        .init_f32("z2", &[2], vec![1.0, -1.0])
        .output("out");
    snapshot!("gemm_matmul", m);
}

#[test]
fn flatten_reshape_squeeze_unsqueeze_become_static_reshapes() {
    let m = Model::new(13)
        .input("x", &[2, 3, 4, 1])
        .init_i64("shape", &[3], vec![0, -1, 2])
        .init_i64("axes_sq", &[1], vec![-1])
        .init_i64("axes_unsq", &[2], vec![0, -1])
        .named_node("flat", "Flatten", &["x"], &["f"], vec![int("axis", -2)])
        .named_node("re", "Reshape", &["f", "shape"], &["r"], vec![])
        .named_node("unsq", "Unsqueeze", &["r", "axes_unsq"], &["u"], vec![])
        .named_node("sq", "Squeeze", &["u", "axes_sq"], &["s"], vec![])
        .named_node("sq_all", "Squeeze", &["s"], &["t"], vec![])
        .output("t");
    snapshot!("reshapes_opset13", m);

    // Before opset 13 the axes are attributes; Reshape's shape comes from a Constant.
    let m = Model::new(11)
        .input("x", &[1, 6])
        .node(
            "Constant",
            &[],
            &["shape"],
            vec![ints("value_ints", &[3, 2])],
        )
        .named_node("re", "Reshape", &["x", "shape"], &["r"], vec![])
        .named_node(
            "unsq",
            "Unsqueeze",
            &["r"],
            &["u"],
            vec![ints("axes", &[1, 3])],
        )
        .named_node("sq", "Squeeze", &["u"], &["s"], vec![ints("axes", &[1])])
        .output("s");
    snapshot!("reshapes_opset11", m);

    // allowzero=1 keeps a 0 in the target shape.
    let m = Model::new(14)
        .input("x", &[0, 3, 4])
        .init_i64("shape", &[3], vec![3, 4, 0])
        .named_node(
            "re",
            "Reshape",
            &["x", "shape"],
            &["r"],
            vec![int("allowzero", 1)],
        )
        .output("r");
    let g = import(&m).unwrap();
    assert_eq!(
        op_of(&g, "re"),
        Op::Reshape {
            shape: vec![3, 4, 0]
        }
    );
}

#[test]
fn transpose_and_concat() {
    let m = Model::new(13)
        .input("a", &[2, 3, 4])
        .input("b", &[4, 3, 1])
        .named_node("t_default", "Transpose", &["a"], &["at"], vec![])
        .named_node(
            "t_perm",
            "Transpose",
            &["b"],
            &["bt"],
            vec![ints("perm", &[0, 1, 2])],
        )
        .named_node(
            "cat",
            "Concat",
            &["at", "bt"],
            &["c"],
            vec![int("axis", -1)],
        )
        .output("c");
    snapshot!("transpose_concat", m);
}

#[test]
fn pad_across_opsets() {
    // Opset 2: attributes.
    let m = Model::new(6)
        .input("x", &[1, 2, 3, 3])
        .node(
            "Pad",
            &["x"],
            &["y"],
            vec![
                string("mode", "constant"),
                ints("pads", &[0, 0, 1, 2, 0, 0, 3, 4]),
                float("value", 1.5),
            ],
        )
        .output("y");
    snapshot!("pad_opset6", m);
    // Opset 18: pads and axes inputs, constant_value skipped with an empty name.
    let m = Model::new(18)
        .input("x", &[1, 2, 3, 3])
        .init_i64("pads", &[4], vec![1, 2, 3, 4])
        .init_i64("axes", &[2], vec![-1, 2])
        .node("Pad", &["x", "pads", "", "axes"], &["y"], vec![])
        .output("y");
    let g = snapshot!("pad_opset18_axes", m);
    // axes [-1, 2] = [3, 2]: begins 1 (axis 3), 2 (axis 2); ends 3 (axis 3), 4 (axis 2).
    assert_eq!(
        op_of(&g, "y_node"),
        Op::Pad {
            pads: vec![0, 0, 2, 1, 0, 0, 4, 3],
            value: 0.0
        }
    );
}

#[test]
fn softmax_legacy_coercion_and_per_axis() {
    // Opset 11, axis 1 of a [2,3,4] input: normalised over 12 values jointly.
    let m = Model::new(11)
        .input("x", &[2, 3, 4])
        .named_node("sm", "Softmax", &["x"], &["y"], vec![int("axis", 1)])
        .output("y");
    let g = snapshot!("softmax_opset11_coerced", m);
    let x = Tensor::f32([2, 3, 4], vec![0.0; 24]).unwrap();
    assert_close(&run(&g, &[x]), &[1.0 / 12.0; 24]);

    // Opset 11 on the last axis needs no coercion; opset 13 is per axis.
    let m = Model::new(11)
        .input("x", &[2, 3, 1])
        .named_node("sm", "Softmax", &["x"], &["y"], vec![int("axis", 1)])
        .named_node("sm2", "Softmax", &["y"], &["z"], vec![int("axis", -1)])
        .output("z");
    snapshot!("softmax_opset11_last_axis", m);
    let m = Model::new(13)
        .input("x", &[2, 3, 4])
        .named_node("sm", "Softmax", &["x"], &["y"], vec![int("axis", 1)])
        .output("y");
    let g = snapshot!("softmax_opset13", m);
    let x = Tensor::f32([2, 3, 4], vec![0.0; 24]).unwrap();
    assert_close(&run(&g, &[x]), &[1.0 / 3.0; 24]);
}

#[test]
fn identity_dropout_constant() {
    let m = Model::new(13)
        .input("x", &[1, 3])
        .init_f32("ratio", &[], vec![0.5])
        .node(
            "Constant",
            &[],
            &["c"],
            vec![floats("value_floats", &[1.0, 2.0, 3.0])],
        )
        .node("Identity", &["x"], &["i"], vec![])
        // The mask output is declared but unused: fine.
        .node("Dropout", &["i", "ratio"], &["d", "mask"], vec![])
        .node("Add", &["d", "c"], &["y"], vec![])
        .output("y");
    snapshot!("identity_dropout_constant", m);
}

#[test]
fn constant_output_and_initializer_listed_as_input() {
    // A graph output produced by a Constant node becomes an IR constant.
    let m = Model::new(13)
        .node("Constant", &[], &["c"], vec![float("value_float", 2.5)])
        .output("c");
    let g = import(&m).unwrap();
    let out = g.outputs()[0].node;
    assert_eq!(g.constant(out).unwrap().as_f32().unwrap(), [2.5]);

    // IR < 4: an initializer also listed as a graph input is a constant, not an input.
    let m = Model::new(9)
        .input("x", &[1, 2])
        .input("w", &[2, 2])
        .init_f32("w", &[2, 2], vec![1.0, 0.0, 0.0, 1.0])
        .node("MatMul", &["x", "w"], &["y"], vec![])
        .output("y");
    let g = import(&m).unwrap();
    assert_eq!(g.inputs().len(), 1);
}

#[test]
fn symbolic_batch_binds_to_the_option_and_double_weights_convert() {
    let mut m = Model::new(13)
        .input_typed("x", DataType::Float, vec![D::S("N"), D::N(2)])
        .node("MatMul", &["x", "w"], &["y"], vec![])
        .output("y");
    let mut w = tensor_f32(&[2, 1], vec![]);
    w.name = Some("w".into());
    w.data_type = Some(DataType::Double as i32);
    w.raw_data = None;
    w.double_data = vec![0.25, -4.0];
    m.graph().initializer.push(w);
    let opts = lutq_onnx::ImportOptions {
        batch: 8,
        ..Default::default()
    };
    let g = lutq_onnx::import(&m.bytes(), &opts).unwrap();
    assert_eq!(g.node(g.inputs()[0]).ty.shape, [8, 2]);
    assert_eq!(g.node(g.outputs()[0].node).ty.shape, [8, 1]);
    let w = g
        .node_ids()
        .find_map(|id| g.constant(id))
        .unwrap()
        .as_f32()
        .unwrap()
        .to_vec();
    assert_eq!(w, [0.25, -4.0]);
}

#[test]
fn constant_inputs_bind_graph_inputs() {
    let m = Model::new(13)
        .input("x", &[2, 6])
        .input_typed("shape", DataType::Int64, vec![D::N(2)])
        .node("Reshape", &["x", "shape"], &["y"], vec![])
        .output("y");
    // Unbound, the shape input is reported...
    let d = diagnostics(&m);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].to_string().contains("must be a constant"), "{}", d[0]);
    // ...and the summary names it.
    let s = lutq_onnx::summarize(&m.bytes()).unwrap();
    assert_eq!(s.required_constants, ["shape"]);
    // Bound, it disappears from the graph's inputs.
    let mut opts = lutq_onnx::ImportOptions::default();
    opts.constant_inputs.insert(
        "shape".into(),
        lutq_onnx::ConstValue::i64([2], vec![3, -1]).unwrap(),
    );
    let g = lutq_onnx::import(&m.bytes(), &opts).unwrap();
    assert_eq!(g.inputs().len(), 1);
    assert_eq!(g.node(g.outputs()[0].node).ty.shape, [3, 4]);
    // Binding a name that is not a graph input is the caller's error.
    let mut bad = lutq_onnx::ImportOptions::default();
    bad.constant_inputs.insert(
        "nope".into(),
        lutq_onnx::ConstValue::i64([1], vec![1]).unwrap(),
    );
    assert!(matches!(
        lutq_onnx::import(&m.bytes(), &bad),
        Err(lutq_onnx::ImportError::ConstantInput { .. })
    ));
}

#[test]
fn new_element_wise_ops_and_n_ary_max_min_sum_mean_pow() {
    let m = Model::new(20)
        .input("x", &[1, 2, 3, 3])
        .input("z", &[1, 2, 1, 1])
        .init_i64("two", &[], vec![2])
        .node("Tanh", &["x"], &["a"], vec![])
        .node("Gelu", &["a"], &["b"], vec![string("approximate", "tanh")])
        .node("Elu", &["b"], &["c"], vec![float("alpha", 0.5)])
        .node("Selu", &["c"], &["d"], vec![])
        .node("Softplus", &["d"], &["e"], vec![])
        .node("Erf", &["e"], &["f"], vec![])
        .node("Exp", &["f"], &["g"], vec![])
        .node("Max", &["g", "z", "x"], &["h"], vec![])
        .node("Mean", &["h", "z"], &["i"], vec![])
        .node("Pow", &["i", "two"], &["y"], vec![])
        .output("y");
    let g = snapshot!("new_element_wise_ops", m);
    let x = Tensor::f32(
        [1, 2, 3, 3],
        (0..18).map(|i| i as f32 / 9.0 - 1.0).collect(),
    )
    .unwrap();
    let z = Tensor::f32([1, 2, 1, 1], vec![0.3, 2.0]).unwrap();
    let got = run(&g, &[x.clone(), z.clone()]);
    let (xs, zs) = (x.as_f32().unwrap(), z.as_f32().unwrap());
    let want: Vec<f32> = (0..18)
        .map(|i| {
            let v = xs[i];
            let mut a = Activation::Tanh.apply(v);
            for act in [
                Activation::Gelu { tanh: true },
                Activation::Elu { alpha: 0.5 },
                Activation::Selu {
                    alpha: 1.673_263_2,
                    gamma: 1.050_701,
                },
                Activation::Softplus,
                Activation::Erf,
                Activation::Exp,
            ] {
                a = act.apply(a);
            }
            let zc = zs[i / 9];
            let h = a.max(zc).max(v);
            ((h + zc) / 2.0).powf(2.0)
        })
        .collect();
    assert_close(&got, &want);
}

#[test]
fn slice_split_reduce_and_resize_become_ir_ops() {
    let m = Model::new(18)
        .input("x", &[1, 4, 6, 8])
        .init_i64("st", &[2], vec![1, 0])
        .init_i64("en", &[2], vec![6, i64::MAX])
        .init_i64("ax", &[2], vec![2, 3])
        .init_i64("sp", &[2], vec![2, 3])
        .init_i64("split", &[2], vec![1, 3])
        .init_i64("raxes", &[2], vec![-2, -1])
        .init_f32("scales", &[4], vec![1.0, 1.0, 2.0, 1.5])
        .named_node(
            "slice",
            "Slice",
            &["x", "st", "en", "ax", "sp"],
            &["s"],
            vec![],
        )
        .named_node(
            "split",
            "Split",
            &["s", "split"],
            &["p0", "p1"],
            vec![int("axis", 1)],
        )
        .named_node(
            "mean",
            "ReduceMean",
            &["p1", "raxes"],
            &["m"],
            vec![int("keepdims", 0)],
        )
        .named_node("max", "ReduceMax", &["p0", "raxes"], &["mx"], vec![])
        .named_node(
            "up",
            "Resize",
            &["p1", "", "scales"],
            &["r"],
            vec![
                string("mode", "nearest"),
                string("coordinate_transformation_mode", "asymmetric"),
                string("nearest_mode", "floor"),
            ],
        )
        .output("m")
        .output("mx")
        .output("r");
    let g = snapshot!("slice_split_reduce_resize", m);
    let x = Tensor::f32([1, 4, 6, 8], (0..192).map(|i| i as f32).collect()).unwrap();
    let outs = lutq_interp::run(&g, &[x]).unwrap();
    // Rows 1, 3, 5; columns 0, 3, 6 of each plane.
    let at = |c: usize, r: usize, col: usize| (c * 48 + r * 8 + col) as f32;
    let mean = |c: usize| {
        let mut s = 0.0;
        for r in [1, 3, 5] {
            for col in [0, 3, 6] {
                s += at(c, r, col);
            }
        }
        s / 9.0
    };
    assert_close(outs[0].as_f32().unwrap(), &[mean(1), mean(2), mean(3)]);
    assert_eq!(outs[1].as_f32().unwrap(), [at(0, 5, 6)]);
    assert_eq!(outs[2].shape(), [1, 3, 6, 4]);
    // Nearest, asymmetric, floor: output (y, x) reads (y / 2, floor(x / 1.5)).
    let r = outs[2].as_f32().unwrap();
    assert_eq!(r[4 + 3], at(1, [1, 3, 5][0], [0, 3, 6][2]));
}
