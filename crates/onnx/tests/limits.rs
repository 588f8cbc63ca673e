//! The resource limits of `lutq_onnx::limits`: a model over one is refused with an error
//! that names the limit, quickly and without allocating for the hostile size; a model at
//! ordinary sizes is not affected.

mod common;

use common::*;
use lutq_onnx::ImportError;
use lutq_onnx::limits::{MAX_ELEMENTS, MAX_NESTING, MAX_NODES, MAX_RANK};
use lutq_onnx::proto::attribute_proto::AttributeType;
use lutq_onnx::proto::{AttributeProto, GraphProto, NodeProto};

/// A chain of `n` Relu nodes on a [1, 4] input.
fn relu_chain(n: usize) -> Model {
    let mut m = Model::new(13).input("x", &[1, 4]);
    let mut prev = "x".to_string();
    for i in 0..n {
        let out = format!("r{i}");
        m = m.node("Relu", &[&prev], &[&out], vec![]);
        prev = out;
    }
    m.output(&prev)
}

#[test]
fn too_many_nodes_is_a_limit_error_naming_max_nodes() {
    let err = import(&relu_chain(MAX_NODES + 1)).unwrap_err();
    assert!(
        matches!(err, ImportError::Limit { name: "MAX_NODES", actual, .. } if actual == MAX_NODES + 1),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("MAX_NODES") && msg.contains("limits.rs"),
        "{msg}"
    );
    // `inspect` reports the same error in its summary.
    let summary = lutq_onnx::summarize(&relu_chain(MAX_NODES + 1).bytes()).unwrap();
    assert!(
        summary
            .error
            .as_deref()
            .is_some_and(|e| e.contains("MAX_NODES")),
        "{summary:?}"
    );
    // A long chain under the limit imports.
    import(&relu_chain(1000)).unwrap();
}

#[test]
fn too_many_dimensions_name_max_rank() {
    let dims = vec![1i64; MAX_RANK + 1];
    // An initializer.
    let m = Model::new(13)
        .input("x", &[1, 4])
        .init_f32("w", &dims, vec![0.5])
        .node("Add", &["x", "w"], &["y"], vec![])
        .output("y");
    let err = import(&m).unwrap_err().to_string();
    assert!(err.contains("MAX_RANK"), "{err}");
    // A graph input.
    let m = Model::new(13)
        .input("x", &dims)
        .node("Relu", &["x"], &["y"], vec![])
        .output("y");
    let d = diagnostics(&m);
    assert!(d.iter().any(|d| d.message.contains("MAX_RANK")), "{d:?}");
    // A node's result: Unsqueeze past the limit.
    let m = Model::new(13)
        .input("x", &[1, 4])
        .init_i64(
            "axes",
            &[MAX_RANK as i64],
            (2..2 + MAX_RANK as i64).collect(),
        )
        .node("Unsqueeze", &["x", "axes"], &["y"], vec![])
        .output("y");
    let err = import(&m).unwrap_err().to_string();
    assert!(err.contains("MAX_RANK"), "{err}");
    // At the limit it imports.
    let m = Model::new(13)
        .input("x", &[1i64; MAX_RANK])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y");
    import(&m).unwrap();
}

#[test]
fn a_huge_input_names_max_elements() {
    let side = 1i64 << 15;
    assert!((side * side) as usize > MAX_ELEMENTS);
    let m = Model::new(13)
        .input("x", &[1, 1, side, side])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y");
    let d = diagnostics(&m);
    assert!(
        d.iter().any(|d| d.message.contains("MAX_ELEMENTS")),
        "{d:?}"
    );
    // A Pad whose result would be above the limit, from a small input.
    let m = Model::new(13)
        .input("x", &[1, 1, 64, 64])
        .init_i64("pads", &[8], vec![0, 0, side, side, 0, 0, side, side])
        .node("Pad", &["x", "pads"], &["y"], vec![])
        .output("y");
    let err = import(&m).unwrap_err().to_string();
    assert!(err.contains("MAX_ELEMENTS"), "{err}");
}

#[test]
fn deeply_nested_subgraphs_are_a_decode_error_not_a_stack_overflow() {
    let mut g = GraphProto::default();
    for _ in 0..MAX_NESTING + 10 {
        g = GraphProto {
            node: vec![NodeProto {
                op_type: Some("If".into()),
                attribute: vec![AttributeProto {
                    name: Some("then_branch".into()),
                    r#type: Some(AttributeType::Graph as i32),
                    g: Some(g),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
    }
    let mut m = Model::new(13).input("x", &[1, 4]);
    m.graph().node = g.node;
    let m = m.output("x");
    let err = import(&m).unwrap_err();
    assert!(matches!(err, ImportError::Decode(_)), "{err}");
}
