//! Graph building, rewriting helpers, the text dump and serde round trips.

use lutq_ir::{Activation, BinaryOp, Conv, Gemm, Graph, IrError, Op, Pool, Tensor, TensorType};

/// Deterministic pseudo-random weights (xorshift), so dumps are stable.
fn weights(shape: &[usize], seed: u32) -> Tensor {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    Tensor::f32(shape, data).unwrap()
}

/// A conv → relu6 → depthwise conv → add (residual) → global pool → gemm net.
fn small_net() -> Graph {
    let mut g = Graph::new("small_net");
    let x = g.add_input("image", TensorType::f32([1, 4, 8, 8]));
    let w1 = g.add_constant("pw.weight", weights(&[4, 4, 1, 1], 1));
    let b1 = g.add_constant("pw.bias", weights(&[4], 2));
    let c1 = g
        .add_node("pw", Op::Conv(Conv::default()), &[x, w1, b1])
        .unwrap();
    let r = g
        .add_node(
            "relu6",
            Op::Activation(Activation::Clip {
                min: Some(0.0),
                max: Some(6.0),
            }),
            &[c1],
        )
        .unwrap();
    let w2 = g.add_constant("dw.weight", weights(&[4, 1, 3, 3], 3));
    let dw = Conv {
        pads: [1, 1, 1, 1],
        group: 4,
        ..Conv::default()
    };
    let c2 = g.add_node("dw", Op::Conv(dw), &[r, w2]).unwrap();
    let add = g
        .add_node("residual", Op::Binary(BinaryOp::Add), &[x, c2])
        .unwrap();
    let pool = g
        .add_node("pool", Op::MaxPool(Pool::new([2, 2])), &[add])
        .unwrap();
    let gap = g.add_node("gap", Op::GlobalAveragePool, &[pool]).unwrap();
    let flat = g
        .add_node("flatten", Op::Reshape { shape: vec![1, 4] }, &[gap])
        .unwrap();
    let fc_w = g.add_constant("fc.weight", weights(&[3, 4], 4));
    let gemm = Gemm {
        trans_b: true,
        ..Gemm::default()
    };
    let fc = g.add_node("fc", Op::Gemm(gemm), &[flat, fc_w]).unwrap();
    g.add_output("logits", fc).unwrap();
    g
}

fn snapshot(name: &str, text: &str) {
    insta::with_settings!({snapshot_path => "../../../snapshots/ir", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn dump_of_small_net() {
    let g = small_net();
    g.validate().unwrap();
    snapshot("small_net", &g.dump());
}

#[test]
fn dump_does_not_depend_on_node_ids() {
    // The same graph built with its constants added in another order prints the same.
    let mut g = Graph::new("order");
    let w = g.add_constant("w", weights(&[2, 1, 1, 1], 7));
    let x = g.add_input("x", TensorType::f32([1, 1, 2, 2]));
    let c = g.add_node("c", Op::Conv(Conv::default()), &[x, w]).unwrap();
    g.add_output("y", c).unwrap();

    let mut h = Graph::new("order");
    let x = h.add_input("x", TensorType::f32([1, 1, 2, 2]));
    let w = h.add_constant("w", weights(&[2, 1, 1, 1], 7));
    let c = h.add_node("c", Op::Conv(Conv::default()), &[x, w]).unwrap();
    h.add_output("y", c).unwrap();

    assert_eq!(g.dump(), h.dump());
}

#[test]
fn serde_round_trip_preserves_everything() {
    let g = small_net();
    let json = serde_json::to_string(&g).unwrap();
    let back: Graph = serde_json::from_str(&json).unwrap();
    back.validate().unwrap();
    assert_eq!(g.dump(), back.dump());
    for id in g.node_ids() {
        assert_eq!(g.node(id), back.node(id));
        assert_eq!(g.node_inputs(id), back.node_inputs(id));
    }
    assert_eq!(g.outputs(), back.outputs());
}

#[test]
fn type_errors_name_the_node() {
    let mut g = Graph::new("bad");
    let x = g.add_input("x", TensorType::f32([1, 3, 8, 8]));
    let w = g.add_constant("w", weights(&[8, 4, 3, 3], 1));
    let err = g
        .add_node("conv1", Op::Conv(Conv::default()), &[x, w])
        .unwrap_err();
    match err {
        IrError::InvalidNode { node, op, .. } => {
            assert_eq!(node, "conv1");
            assert_eq!(op, "conv");
        }
        other => panic!("unexpected error {other:?}"),
    }
}

#[test]
fn stats_count_macs_and_parameters() {
    let g = small_net();
    let s = g.stats();
    // pointwise 4·4·64 + depthwise 4·9·64 + fc 3·4.
    assert_eq!(s.macs, 4 * 4 * 64 + 4 * 9 * 64 + 3 * 4);
    assert_eq!(s.parameters, 16 + 4 + 36 + 12);
    assert_eq!(s.op_histogram["conv"], 2);
    assert_eq!(s.op_histogram["clip"], 1);
    assert!(!s.op_histogram.contains_key("const"));
}

#[test]
fn replace_uses_and_remove_dead_nodes() {
    let mut g = Graph::new("rewrite");
    let x = g.add_input("x", TensorType::f32([1, 2]));
    let id = g.add_node("id", Op::Identity, &[x]).unwrap();
    let relu = g
        .add_node("relu", Op::Activation(Activation::Relu), &[id])
        .unwrap();
    g.add_output("y", relu).unwrap();
    // The identity cannot go while the relu reads it.
    assert!(matches!(g.remove_node(id), Err(IrError::NodeInUse(_))));
    g.replace_all_uses(id, x).unwrap();
    assert_eq!(g.node_inputs(relu), vec![x]);
    assert_eq!(g.remove_dead_nodes(), 1);
    assert_eq!(g.node_count(), 2);
    g.validate().unwrap();
    // Replacing by a tensor of another type would break typing, so it is refused.
    let c = g.add_constant("c", weights(&[3], 1));
    assert!(matches!(
        g.replace_all_uses(relu, c),
        Err(IrError::TypeMismatch { .. })
    ));
}

#[test]
fn validate_catches_tampered_types() {
    let mut g = small_net();
    let fc = g.outputs()[0].node;
    g.node_mut(fc).ty = TensorType::f32([1, 5]);
    assert!(matches!(g.validate(), Err(IrError::TypeMismatch { .. })));
}
