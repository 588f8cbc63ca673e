//! Constants holding NaN: the e-graph's constant table interns folded constants bit for
//! bit, so a rule recomputing the same folded weights adds nothing and the run
//! saturates. Found by the `onnx_graph` fuzz target
//! (`fuzz/regressions/onnx_graph/timeout-cf92d1d614c0574b9e31371618b910ddaccf8e21`):
//! with `==` a NaN bias never equalled itself, each iteration folded every Add again
//! into every copy of the Conv, and `optimize` ran into its 60 s time limit on 24 nodes.

use lutq_ir::{BinaryOp, Conv, Graph, Op, Tensor, TensorType};
use lutq_opt::{OptOptions, optimize};

/// `x → depthwise Conv (bias with a NaN) → five Adds of a [1,3,1,1] constant`.
fn conv_nan_bias_then_adds(adds: usize) -> Graph {
    let mut g = Graph::new("nan");
    let x = g.add_input("x", TensorType::f32([1, 3, 4, 4]));
    let w = g.add_constant("w", Tensor::f32([3, 1, 1, 1], vec![-0.0625; 3]).unwrap());
    let b = g.add_constant(
        "b",
        Tensor::f32([3], vec![0.0625, f32::NAN, -0.0625]).unwrap(),
    );
    let conv = Conv {
        pads: [1; 4],
        strides: [2, 2],
        group: 3,
        ..Conv::default()
    };
    let mut y = g.add_node("conv", Op::Conv(conv), &[x, w, b]).unwrap();
    for i in 0..adds {
        let c = g.add_constant(
            format!("c{i}"),
            Tensor::f32([1, 3, 1, 1], vec![6.5625; 3]).unwrap(),
        );
        y = g
            .add_node(format!("add{i}"), Op::Binary(BinaryOp::Add), &[y, c])
            .unwrap();
    }
    g.add_output("y", y).unwrap();
    g
}

#[test]
fn a_nan_bias_folds_once_and_saturates() {
    let graph = conv_nan_bias_then_adds(5);
    // A node limit far above what the rewrite needs: the regression ran into any limit.
    let options = OptOptions {
        node_limit: 5_000,
        ..OptOptions::default()
    };
    let (out, report) = optimize(&graph, &options).unwrap();
    assert!(report.saturated, "{report}");
    // Translation has 24 e-nodes here; one folded Conv per Add, and its two constants.
    assert!(report.egraph_nodes <= 50, "{report}");
    assert_eq!(report.rules["affine-into-producer"], 5, "{report}");
    // x, the folded weights and bias, and one Conv.
    assert_eq!(out.node_count(), 4, "{}", out.dump());
    let bias = out
        .node_ids()
        .filter_map(|id| match &out.node(id).op {
            Op::Constant(t) if t.shape() == [3] => t.as_f32().map(<[f32]>::to_vec),
            _ => None,
        })
        .next()
        .expect("a folded bias");
    assert_eq!(bias[0], 0.0625 + 5.0 * 6.5625);
    assert!(bias[1].is_nan());
}
