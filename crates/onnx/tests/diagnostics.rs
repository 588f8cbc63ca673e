//! Unsupported features are all collected before the import fails, each naming its node,
//! op and a fix.

mod common;

use common::*;
use lutq_onnx::proto::tensor_proto::{DataLocation, DataType};
use lutq_onnx::proto::{StringStringEntryProto, TypeProto, ValueInfoProto, type_proto};
use lutq_onnx::{DiagnosticKind, ImportError, Location};

#[test]
fn three_unsupported_things_are_reported_in_one_error() {
    let m = Model::new(13)
        // 1. a dynamic dimension other than the batch.
        .input_typed(
            "x",
            DataType::Float,
            vec![D::S("N"), D::N(3), D::S("H"), D::N(8)],
        )
        .weight("w", &[4, 3, 3, 3])
        .named_node("conv1", "Conv", &["x", "w"], &["c"], vec![])
        // 2. an op lutq does not have.
        .named_node("act", "Hardmax", &["c"], &["t"], vec![])
        // 3. an attribute value it does not support.
        .named_node(
            "pad",
            "Pad",
            &["t", "pads"],
            &["y"],
            vec![string("mode", "reflect")],
        )
        .init_i64("pads", &[8], vec![0, 0, 1, 1, 0, 0, 1, 1])
        .output("y");
    let err = import(&m).unwrap_err();
    let ImportError::Unsupported(d) = &err else {
        panic!("expected Unsupported, got {err}");
    };
    assert_eq!(d.len(), 3, "{err}");
    assert_eq!(d[0].location, Location::GraphInput { name: "x".into() });
    assert_eq!(d[0].kind, DiagnosticKind::DynamicDimension);
    assert_eq!(d[1].kind, DiagnosticKind::UnsupportedOp);
    assert_eq!(d[2].kind, DiagnosticKind::UnsupportedAttribute);
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], "the model uses 3 features lutq does not support:");
    assert_eq!(
        lines[1],
        "  graph input 'x': dimension 2 is symbolic ('H'); only the first (batch) dimension may be dynamic unless the input's shape is given; fix: pass --input-shape x=1,3,H,8 with H replaced by the sizes to compile for (ImportOptions::input_shapes), or export with a fixed input size"
    );
    assert!(
        lines[2].starts_with("  node 'act' (Hardmax): op type 'Hardmax' is not supported; fix: "),
        "{}",
        lines[2]
    );
    assert_eq!(
        lines[3],
        "  node 'pad' (Pad): attribute 'mode': 'reflect' padding is not supported (only 'constant'); fix: use constant (zero) padding, or pad the data before it enters the model"
    );
}

#[test]
fn every_kind_of_unsupported_feature_is_found() {
    let mut m = Model::new(15)
        .input("x", &[1, 2, 8, 8])
        .input_typed("ids", DataType::Int8, vec![D::N(4)])
        .input("line", &[1, 2, 16])
        .weight("w1d", &[2, 2, 3])
        .weight("s", &[2])
        .weight("b", &[2])
        .weight("mean", &[2])
        .weight("var", &[2])
        .named_node("fused", "FusedConv", &["x"], &["f"], vec![])
        .named_node("conv1d", "Conv", &["line", "w1d"], &["l"], vec![])
        .named_node("relu", "Relu", &["x"], &["r"], vec![])
        .named_node("reshape", "Reshape", &["x", "r"], &["rs"], vec![])
        .named_node(
            "pool",
            "MaxPool",
            &["x"],
            &["p", "idx"],
            vec![ints("kernel_shape", &[2, 2])],
        )
        .named_node("drop", "Dropout", &["p"], &["dp", "mask"], vec![])
        .named_node(
            "bn",
            "BatchNormalization",
            &["x", "s", "b", "mean", "var"],
            &["bn_y", "rm", "rv"],
            vec![int("training_mode", 1)],
        )
        .named_node("use_ids", "Identity", &["ids"], &["ids2"], vec![])
        .named_node("ext", "Add", &["x", "ext_w"], &["e"], vec![])
        .output("f")
        .output("l")
        .output("rs")
        .output("idx")
        .output("mask")
        .output("dp")
        .output("bn_y")
        .output("rm")
        .output("ids2")
        .output("e");
    m.graph().node[0].domain = Some("com.microsoft".into());
    m.proto
        .opset_import
        .push(lutq_onnx::proto::OperatorSetIdProto {
            domain: Some("com.microsoft".into()),
            version: Some(1),
        });
    let mut ext = tensor_f32(&[1], vec![]);
    ext.name = Some("ext_w".into());
    ext.raw_data = None;
    ext.data_location = Some(DataLocation::External as i32);
    ext.external_data = vec![StringStringEntryProto {
        key: Some("location".into()),
        value: Some("weights.bin".into()),
    }];
    m.graph().initializer.push(ext);
    m.graph().input.push(ValueInfoProto {
        name: Some("seq".into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::SequenceType(Box::new(
                type_proto::Sequence { elem_type: None },
            ))),
            ..Default::default()
        }),
        ..Default::default()
    });

    let d = diagnostics(&m);
    let found: Vec<(String, DiagnosticKind)> =
        d.iter().map(|d| (d.location.to_string(), d.kind)).collect();
    use DiagnosticKind::*;
    let expected = [
        ("graph input 'ids'", UnsupportedType),
        ("graph input 'seq'", UnsupportedType),
        ("node 'fused' (com.microsoft::FusedConv)", UnsupportedOp),
        ("node 'conv1d' (Conv)", UnsupportedAttribute),
        ("node 'reshape' (Reshape)", NonConstantInput),
        ("node 'pool' (MaxPool)", UnsupportedOutput),
        ("node 'drop' (Dropout)", UnsupportedOutput),
        ("node 'bn' (BatchNormalization)", UnsupportedAttribute),
        ("node 'bn' (BatchNormalization)", UnsupportedOutput),
        ("node 'ext' (Add)", UnsupportedStorage),
    ];
    let expected: Vec<(String, DiagnosticKind)> =
        expected.iter().map(|(l, k)| (l.to_string(), *k)).collect();
    assert_eq!(found, expected, "{}", ImportError::Unsupported(d.clone()));
    // Every message names what is wrong, and every fix says something.
    for d in &d {
        assert!(!d.message.is_empty() && d.fix.len() > 10, "{d}");
    }
    let reshape = d.iter().find(|d| d.kind == NonConstantInput).unwrap();
    assert_eq!(
        reshape.message,
        "input 1 (shape) 'r' must be a constant, but it is computed at run time"
    );
}

#[test]
fn unknown_auto_pad_and_used_optional_inputs_of_later_nodes() {
    // A poisoned input does not hide later problems on the same path.
    let m = Model::new(13)
        .input("x", &[1, 1, 4, 4])
        .weight("w", &[1, 1, 3, 3])
        .named_node(
            "c",
            "Conv",
            &["x", "w"],
            &["y"],
            vec![string("auto_pad", "SAME_WHATEVER")],
        )
        .named_node("r", "Reshape", &["y", "dyn"], &["z"], vec![])
        .named_node("dyn_src", "Relu", &["x"], &["dyn"], vec![])
        .output("z");
    let d = diagnostics(&m);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(
        d[0].to_string(),
        "node 'c' (Conv): attribute 'auto_pad': value 'SAME_WHATEVER' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID; fix: use explicit pads"
    );
    assert_eq!(d[1].kind, DiagnosticKind::NonConstantInput);
}

#[test]
fn opsets_outside_the_known_range() {
    for opset in [5, lutq_onnx::MAX_OPSET + 1] {
        let m = Model::new(opset)
            .input("x", &[1, 2])
            .node("Relu", &["x"], &["y"], vec![])
            .output("y");
        let d = diagnostics(&m);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].location, Location::Model);
        assert_eq!(d[0].kind, DiagnosticKind::UnsupportedOpset);
    }
}

#[test]
fn summarize_lists_diagnostics_without_failing() {
    let m = Model::new(13)
        .input_typed(
            "x",
            DataType::Float,
            vec![D::S("batch"), D::N(4), D::Unknown],
        )
        .named_node("t", "Hardmax", &["x"], &["y"], vec![])
        .named_node("r", "Relu", &["y"], &["z"], vec![])
        .output("z");
    let s = lutq_onnx::summarize(&m.bytes()).unwrap();
    assert_eq!(s.opset, Some(13));
    assert_eq!(s.producer_name, "lutq-tests");
    assert_eq!(s.inputs.len(), 1);
    assert_eq!(s.inputs[0].dtype, "FLOAT");
    let dims: Vec<String> = s.inputs[0]
        .dims
        .as_ref()
        .unwrap()
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(dims, ["batch", "4", "?"]);
    assert_eq!(s.op_histogram["Hardmax"], 1);
    assert_eq!(s.op_histogram["Relu"], 1);
    assert_eq!(s.diagnostics.len(), 2);
    assert!(s.error.is_none());

    // A malformed model is summarized too, with the reason.
    let bad = Model::new(13)
        .input("x", &[1])
        .node("Relu", &["nope"], &["y"], vec![])
        .output("y");
    let s = lutq_onnx::summarize(&bad.bytes()).unwrap();
    assert!(s.error.unwrap().contains("'nope' is not defined"));
    assert!(lutq_onnx::summarize(&[0xff, 0xff]).is_err());
}

#[test]
fn the_first_dimension_alone_may_be_dynamic() {
    let m = Model::new(13)
        .input_typed("x", DataType::Float, vec![D::Unknown, D::N(3)])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y");
    let g = import(&m).unwrap();
    assert_eq!(g.node(g.inputs()[0]).ty.shape, [1, 3]);
    let m = Model::new(13)
        .input_typed("x", DataType::Float, vec![D::N(1), D::Unknown])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y");
    let d = diagnostics(&m);
    assert_eq!(
        d[0].message,
        "dimension 1 is unknown; only the first (batch) dimension may be dynamic unless the input's shape is given"
    );
    assert_eq!(
        d[0].fix,
        "pass --input-shape x=1,d1 with d1 replaced by the sizes to compile for (ImportOptions::input_shapes), or export with a fixed input size"
    );
}

#[test]
fn an_exporters_generated_dimension_name_becomes_a_placeholder_in_the_fix() {
    // Paddle2ONNX names dynamic sizes `p2o.DynamicDimension.N`: repeating them in
    // `--input-shape` would look like a value to type in.
    let m = Model::new(13)
        .input_typed(
            "x",
            DataType::Float,
            vec![D::N(1), D::N(3), D::S("p2o.DynamicDimension.1"), D::S("W")],
        )
        .node("Relu", &["x"], &["y"], vec![])
        .output("y");
    let d = diagnostics(&m);
    assert_eq!(d.len(), 2);
    assert_eq!(
        d[0].fix,
        "pass --input-shape x=1,3,d2,W with d2, W replaced by the sizes to compile for (ImportOptions::input_shapes), or export with a fixed input size"
    );
    assert!(
        d[0].message.contains("symbolic ('p2o.DynamicDimension.1')"),
        "{}",
        d[0].message
    );
}
