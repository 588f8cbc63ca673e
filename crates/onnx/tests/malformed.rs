//! Malformed or inconsistent models get a specific error, never a panic.

mod common;

use common::*;
use lutq_onnx::ImportError;

fn small() -> Model {
    Model::new(13)
        .input("x", &[1, 2, 4, 4])
        .weight("w", &[3, 2, 1, 1])
        .named_node("conv", "Conv", &["x", "w"], &["c"], vec![])
        .named_node("relu", "Relu", &["c"], &["y"], vec![])
        .output("y")
}

#[test]
fn the_reference_model_imports() {
    import(&small()).unwrap();
}

#[test]
fn truncated_bytes_do_not_decode() {
    let bytes = small().bytes();
    let err = lutq_onnx::import(&bytes[..bytes.len() - 3], &Default::default()).unwrap_err();
    assert!(matches!(err, ImportError::Decode(_)), "{err}");
    assert!(
        err.to_string().starts_with("not a valid ONNX protobuf: "),
        "{err}"
    );
    let err = lutq_onnx::import(b"definitely not a model", &Default::default()).unwrap_err();
    assert!(matches!(err, ImportError::Decode(_)), "{err}");
}

#[test]
fn an_undefined_input_names_the_node() {
    let m = small().named_node("add", "Add", &["y", "missing"], &["z"], vec![]);
    let err = import(&m).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node 'add' (Add): input 'missing' is not defined by any initializer, graph input or node"
    );
}

#[test]
fn cycles_are_detected_and_order_is_repaired() {
    let cyclic = Model::new(13)
        .input("x", &[1, 2])
        .named_node("a", "Add", &["x", "b_out"], &["a_out"], vec![])
        .named_node("b", "Relu", &["a_out"], &["b_out"], vec![])
        .named_node("c", "Relu", &["b_out"], &["y"], vec![])
        .output("y");
    let err = import(&cyclic).unwrap_err();
    let ImportError::Cycle { nodes } = &err else {
        panic!("{err}");
    };
    assert_eq!(nodes, &["a", "b", "c"]);
    assert_eq!(
        err.to_string(),
        "the graph has a cycle through nodes 'a', 'b', 'c'"
    );

    let self_loop = Model::new(13)
        .input("x", &[1, 2])
        .named_node("s", "Add", &["x", "s_out"], &["s_out"], vec![])
        .output("s_out");
    assert!(matches!(import(&self_loop), Err(ImportError::Cycle { .. })));

    // Out of order but acyclic: imported in dependency order.
    let unordered = Model::new(13)
        .input("x", &[1, 2])
        .named_node("second", "Relu", &["h"], &["y"], vec![])
        .named_node("first", "Sigmoid", &["x"], &["h"], vec![])
        .output("y");
    import(&unordered).unwrap();
}

#[test]
fn wrong_initializer_sizes_are_tensor_errors() {
    let m = Model::new(13)
        .input("x", &[1, 4])
        .init_f32("w", &[4, 2], vec![1.0; 7])
        .node("MatMul", &["x", "w"], &["y"], vec![])
        .output("y");
    let err = import(&m).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor 'w': dims need 8 FLOAT elements (32 bytes), raw_data holds 28 bytes"
    );
    // The same inside a Constant node.
    let mut t = tensor_i64(&[3], vec![1, 2]);
    t.name = None;
    let m = Model::new(13)
        .input("x", &[1, 4])
        .node("Constant", &[], &["shape"], vec![tensor("value", t)])
        .node("Reshape", &["x", "shape"], &["y"], vec![])
        .output("y");
    let err = import(&m).unwrap_err();
    assert!(matches!(err, ImportError::Tensor { .. }), "{err}");
    assert!(err.to_string().contains("int64_data holds 2"), "{err}");
}

#[test]
fn duplicate_definitions() {
    let m = small().named_node("again", "Relu", &["x"], &["c"], vec![]);
    let err = import(&m).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor name 'c' is defined twice: by node 'conv' (Conv) and by node 'again' (Relu)"
    );
    let m = small().init_f32("x", &[1], vec![0.0]).input("x", &[1]);
    assert!(matches!(import(&m), Err(ImportError::DuplicateName { .. })));
}

#[test]
fn missing_graph_opset_and_outputs() {
    let mut m = small();
    m.proto.graph = None;
    assert_eq!(
        import(&m).unwrap_err().to_string(),
        "malformed model: the model has no graph"
    );
    let mut m = small();
    m.proto.opset_import.clear();
    assert!(matches!(import(&m), Err(ImportError::Malformed(_))));
    let m = small().output("nowhere");
    assert_eq!(
        import(&m).unwrap_err().to_string(),
        "graph output 'nowhere' is not defined by any initializer, graph input or node"
    );
    let mut m = small();
    m.graph().output.clear();
    assert!(matches!(import(&m), Err(ImportError::Malformed(_))));
}

#[test]
fn attribute_errors_read_node_op_attribute() {
    let m = Model::new(13)
        .input("x", &[1, 2, 4, 4])
        .weight("w", &[2, 1, 1, 1])
        .named_node("c", "Conv", &["x", "w"], &["y"], vec![float("group", 2.0)])
        .output("y");
    assert_eq!(
        import(&m).unwrap_err().to_string(),
        "node 'c' (Conv), attribute 'group': expected type INT, found FLOAT"
    );
    let m = Model::new(13)
        .input("x", &[1, 2, 4, 4])
        .weight("w", &[2, 2, 1, 1])
        .named_node(
            "c",
            "Conv",
            &["x", "w"],
            &["y"],
            vec![ints("pads", &[0, -1, 0, 0])],
        )
        .output("y");
    let err = import(&m).unwrap_err();
    assert!(matches!(err, ImportError::Attribute { .. }), "{err}");
    let m = Model::new(13)
        .input("x", &[1, 2, 4, 4])
        .weight("w", &[2, 2, 3, 3])
        .named_node(
            "c",
            "Conv",
            &["x", "w"],
            &["y"],
            vec![ints("kernel_shape", &[1, 1])],
        )
        .output("y");
    assert_eq!(
        import(&m).unwrap_err().to_string(),
        "node 'c' (Conv), attribute 'kernel_shape': [1, 1] contradicts the weights' spatial dims [3, 3]"
    );
}

#[test]
fn inconsistent_shapes_name_the_node() {
    let m = Model::new(13)
        .input("a", &[2, 3])
        .input("b", &[4])
        .named_node("sum", "Add", &["a", "b"], &["y"], vec![])
        .output("y");
    let err = import(&m).unwrap_err();
    assert!(matches!(err, ImportError::Ir { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "node 'sum' (Add): shapes [2, 3] and [4] do not broadcast"
    );
    let m = Model::new(13)
        .input("x", &[2, 3])
        .init_i64("shape", &[2], vec![4, -1])
        .named_node("r", "Reshape", &["x", "shape"], &["y"], vec![])
        .output("y");
    assert_eq!(
        import(&m).unwrap_err().to_string(),
        "node 'r' (Reshape): cannot infer the -1 of shape [4, -1] for an input [2, 3] of 6 elements"
    );
    // Absurd sizes are refused before any arithmetic can overflow.
    let m = Model::new(13)
        .input("x", &[2, 3])
        .init_i64("shape", &[3], vec![i64::MAX, i64::MAX, 0])
        .named_node("r", "Reshape", &["x", "shape"], &["y"], vec![])
        .output("y");
    assert!(matches!(import(&m), Err(ImportError::InvalidNode { .. })));
    let m = Model::new(13)
        .input("x", &[1 << 20, 1 << 20, 1 << 20])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y");
    assert!(matches!(import(&m), Err(ImportError::Unsupported(_))));
}

#[test]
fn malformed_errors_wait_for_unsupported_ones() {
    // An unsupported op and an inconsistent Add: the import reports what is unsupported
    // (the inconsistency may be a consequence); fixing that shows the malformed part.
    let m = Model::new(13)
        .input("a", &[2, 3])
        .input("b", &[4])
        .named_node("t", "Hardmax", &["a"], &["t_out"], vec![])
        .named_node("sum", "Add", &["a", "b"], &["y"], vec![])
        .output("y")
        .output("t_out");
    assert!(matches!(import(&m), Err(ImportError::Unsupported(d)) if d.len() == 1));
}
