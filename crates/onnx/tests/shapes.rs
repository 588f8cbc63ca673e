//! Shape sub-graphs fold to constants at import (one test per folding rule, and the
//! cases that must not fold), `ImportOptions::input_shapes`, and end to end: models with
//! PyTorch's `x.view(x.size(0), -1)` and PaddleOCR's dynamic H/W import to the same IR
//! and compute the same as the models without the shape sub-graph.

mod common;

use std::collections::BTreeMap;

use common::*;
use lutq_ir::{Graph, Op, Tensor};
use lutq_onnx::proto::tensor_proto::DataType;
use lutq_onnx::{DiagnosticKind, ImportError, ImportOptions};

fn options(batch: usize, shapes: &[(&str, &[usize])]) -> ImportOptions {
    ImportOptions {
        batch,
        input_shapes: shapes
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_vec()))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    }
}

fn import_with(m: &Model, o: &ImportOptions) -> Result<Graph, ImportError> {
    lutq_onnx::import(&m.bytes(), o)
}

/// The first graph output of a model whose output folds to a constant, as f32 (the model
/// casts it to FLOAT so that the IR can hold it).
fn folded(m: Model) -> (Vec<usize>, Vec<f32>) {
    let g = import_with(&m, &options(1, &[])).unwrap_or_else(|e| panic!("{e}"));
    let id = g.outputs()[0].node;
    let t = g
        .constant(id)
        .unwrap_or_else(|| panic!("output is not a constant:\n{}", g.dump()));
    (t.shape().to_vec(), t.as_f32().unwrap().to_vec())
}

/// A model computing `y = Cast<FLOAT>(f(x))` where `f` is the node list given, from an
/// input `x` of static shape `[2, 3, 4, 5]`.
fn shape_model(opset: i64, build: impl FnOnce(Model) -> Model) -> Model {
    let m = Model::new(opset).input("x", &[2, 3, 4, 5]);
    build(m)
        .node(
            "Cast",
            &["r"],
            &["y"],
            vec![int("to", DataType::Float as i64)],
        )
        .output("y")
}

fn unsupported(r: Result<Graph, ImportError>) -> Vec<lutq_onnx::Diagnostic> {
    match r {
        Err(ImportError::Unsupported(d)) => d,
        Err(e) => panic!("expected Unsupported, got {e}"),
        Ok(g) => panic!("expected Unsupported, imported:\n{}", g.dump()),
    }
}

#[test]
fn shape_of_a_static_tensor_with_start_and_end() {
    let m = shape_model(15, |m| {
        m.node(
            "Shape",
            &["x"],
            &["r"],
            vec![int("start", 1), int("end", -1)],
        )
    });
    assert_eq!(folded(m), (vec![2], vec![3.0, 4.0]));
    let m = shape_model(13, |m| m.node("Shape", &["x"], &["r"], vec![]));
    assert_eq!(folded(m), (vec![4], vec![2.0, 3.0, 4.0, 5.0]));
    let m = shape_model(13, |m| m.node("Size", &["x"], &["r"], vec![]));
    assert_eq!(folded(m), (vec![], vec![120.0]));
}

#[test]
fn gather_unsqueeze_concat_squeeze() {
    let m = shape_model(13, |m| {
        m.init_i64("i", &[], vec![-1])
            .init_i64("ax", &[1], vec![0])
            .init_i64("minus1", &[1], vec![-1])
            .node("Shape", &["x"], &["s"], vec![])
            .node("Gather", &["s", "i"], &["g"], vec![int("axis", 0)])
            .node("Unsqueeze", &["g", "ax"], &["u"], vec![])
            .node("Concat", &["u", "minus1"], &["c"], vec![int("axis", 0)])
            .node("Unsqueeze", &["c", "ax"], &["c2"], vec![])
            .node("Squeeze", &["c2", "ax"], &["r"], vec![])
    });
    assert_eq!(folded(m), (vec![2], vec![5.0, -1.0]));
    // Gather with 2-D indices along axis 1 of a constant matrix.
    let m = Model::new(13)
        .init_f32("d", &[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        .init_i64("i", &[1, 2], vec![2, 0])
        .node("Gather", &["d", "i"], &["y"], vec![int("axis", 1)])
        .output("y");
    assert_eq!(folded(m), (vec![2, 1, 2], vec![3.0, 1.0, 6.0, 4.0]));
}

#[test]
fn slice_and_cast() {
    // PaddleOCR: Shape → Slice(2:4) → Cast.
    let m = shape_model(13, |m| {
        m.init_i64("st", &[1], vec![2])
            .init_i64("en", &[1], vec![4])
            .node("Shape", &["x"], &["s"], vec![])
            .node("Slice", &["s", "st", "en"], &["r"], vec![])
    });
    assert_eq!(folded(m), (vec![2], vec![4.0, 5.0]));
    // Negative steps on constants; opset 9 attributes.
    let m = shape_model(13, |m| {
        m.init_i64("st", &[1], vec![-1])
            .init_i64("en", &[1], vec![i64::MIN])
            .init_i64("ax", &[1], vec![0])
            .init_i64("sp", &[1], vec![-2])
            .node("Shape", &["x"], &["s"], vec![])
            .node("Slice", &["s", "st", "en", "ax", "sp"], &["r"], vec![])
    });
    assert_eq!(folded(m), (vec![2], vec![5.0, 3.0]));
    let m = shape_model(9, |m| {
        m.node("Shape", &["x"], &["s"], vec![]).node(
            "Slice",
            &["s"],
            &["r"],
            vec![ints("starts", &[1]), ints("ends", &[100])],
        )
    });
    assert_eq!(folded(m), (vec![3], vec![3.0, 4.0, 5.0]));
    // Float → int casts truncate toward zero; int → bool → float.
    let m = Model::new(13)
        .init_f32("f", &[4], vec![2.7, -2.7, 0.0, 3.0])
        .node(
            "Cast",
            &["f"],
            &["i"],
            vec![int("to", DataType::Int64 as i64)],
        )
        .node(
            "Cast",
            &["i"],
            &["b"],
            vec![int("to", DataType::Bool as i64)],
        )
        .node(
            "Cast",
            &["b"],
            &["bf"],
            vec![int("to", DataType::Float as i64)],
        )
        .node(
            "Cast",
            &["i"],
            &["y0"],
            vec![int("to", DataType::Float as i64)],
        )
        .node("Concat", &["y0", "bf"], &["y"], vec![int("axis", 0)])
        .output("y");
    assert_eq!(folded(m).1, [2.0, -2.0, 0.0, 3.0, 1.0, 1.0, 0.0, 1.0]);
}

#[test]
fn arithmetic_on_int64_truncates_and_float_math() {
    // H/W arithmetic as exporters write it: (s * 2 - 1) / 3, with Neg, Abs, Min, Max.
    let m = shape_model(13, |m| {
        m.init_i64("two", &[], vec![2])
            .init_i64("one", &[], vec![1])
            .init_i64("three", &[], vec![-3])
            .init_i64("cap", &[4], vec![100, 100, 4, 100])
            .node("Shape", &["x"], &["s"], vec![])
            .node("Mul", &["s", "two"], &["a"], vec![])
            .node("Sub", &["a", "one"], &["b"], vec![])
            .node("Div", &["b", "three"], &["c"], vec![])
            .node("Neg", &["c"], &["d"], vec![])
            .node("Abs", &["d"], &["e"], vec![])
            .node("Min", &["e", "cap"], &["f"], vec![])
            .node("Max", &["f", "one"], &["g"], vec![])
            .node("Add", &["g", "one"], &["r"], vec![])
    });
    // s = [2,3,4,5] → 2s-1 = [3,5,7,9] → /-3 = [-1,-1,-2,-3] → neg/abs [1,1,2,3]
    // → min cap [1,1,2,3] → max 1 → +1 = [2,2,3,4].
    assert_eq!(folded(m).1, [2.0, 2.0, 3.0, 4.0]);
    // Float: Floor/Ceil/Sqrt/Pow on constants, then Cast to int.
    let m = Model::new(13)
        .init_f32("v", &[3], vec![2.5, 9.0, -1.5])
        .init_f32("p", &[], vec![2.0])
        .node("Floor", &["v"], &["fl"], vec![])
        .node("Ceil", &["v"], &["ce"], vec![])
        .node("Abs", &["v"], &["ab"], vec![])
        .node("Sqrt", &["ab"], &["sq"], vec![])
        .node("Pow", &["fl", "p"], &["pw"], vec![])
        .node(
            "Concat",
            &["fl", "ce", "sq", "pw"],
            &["y"],
            vec![int("axis", 0)],
        )
        .output("y");
    let (_, y) = folded(m);
    assert_eq!(&y[..6], [2.0, 9.0, -2.0, 3.0, 9.0, -1.0]);
    assert_eq!(&y[6..8], [2.5f32.sqrt(), 3.0]);
    assert_eq!(&y[9..], [4.0, 81.0, 4.0]);
}

#[test]
fn constant_of_shape_range_expand_where_reduce() {
    let m = Model::new(13)
        .init_i64("shape", &[2], vec![2, 3])
        .node(
            "ConstantOfShape",
            &["shape"],
            &["c"],
            vec![tensor("value", tensor_i64(&[1], vec![7]))],
        )
        .node("ReduceSum", &["c"], &["r"], vec![int("keepdims", 0)])
        .node(
            "Cast",
            &["r"],
            &["y"],
            vec![int("to", DataType::Float as i64)],
        )
        .output("y");
    assert_eq!(folded(m), (vec![], vec![42.0]));
    let m = Model::new(13)
        .init_i64("start", &[], vec![10])
        .init_i64("limit", &[], vec![1])
        .init_i64("delta", &[], vec![-3])
        .init_i64("shape", &[2], vec![2, 1])
        .init_i64("zero", &[], vec![4])
        .node("Range", &["start", "limit", "delta"], &["rg"], vec![])
        .node("Expand", &["rg", "shape"], &["ex"], vec![])
        .node("Equal", &["ex", "zero"], &["eq"], vec![])
        .node("Not", &["eq"], &["ne"], vec![])
        .node("Where", &["ne", "ex", "zero"], &["w"], vec![])
        .node("ReduceProd", &["w"], &["r"], vec![ints("axes", &[0])])
        .node(
            "Cast",
            &["r"],
            &["y"],
            vec![int("to", DataType::Float as i64)],
        )
        .output("y");
    // Range 10, 7, 4 → expanded to [2, 3] → prod over axis 0 = 100, 49, 16.
    assert_eq!(folded(m), (vec![1, 3], vec![100.0, 49.0, 16.0]));
}

#[test]
fn folded_shape_ops_never_enter_the_ir() {
    let m = Model::new(13)
        .input("x", &[2, 3, 4, 4])
        .init_i64("ax", &[1], vec![0])
        .init_i64("i0", &[], vec![0])
        .init_i64("m1", &[1], vec![-1])
        .node("Shape", &["x"], &["s"], vec![])
        .node("Gather", &["s", "i0"], &["b"], vec![int("axis", 0)])
        .node("Unsqueeze", &["b", "ax"], &["bu"], vec![])
        .node("Concat", &["bu", "m1"], &["shape"], vec![int("axis", 0)])
        .node("Reshape", &["x", "shape"], &["y"], vec![])
        .output("y");
    let g = import(&m).unwrap();
    let ops: Vec<&str> = g.node_ids().map(|id| g.node(id).op.name()).collect();
    assert_eq!(ops, ["input", "reshape"], "{}", g.dump());
    assert_eq!(g.node(g.outputs()[0].node).ty.shape, [2, 48]);
}

#[test]
fn a_symbolic_dimension_does_not_fold_and_names_the_flag() {
    let m = Model::new(13)
        .input_typed(
            "x",
            DataType::Float,
            vec![D::S("N"), D::N(3), D::S("H"), D::S("W")],
        )
        .init_i64("st", &[1], vec![2])
        .init_i64("en", &[1], vec![4])
        .node("Shape", &["x"], &["s"], vec![])
        .node("Slice", &["s", "st", "en"], &["hw"], vec![])
        .node(
            "Cast",
            &["hw"],
            &["y"],
            vec![int("to", DataType::Float as i64)],
        )
        .output("y");
    let d = unsupported(import_with(&m, &options(1, &[])));
    assert_eq!(d.len(), 2, "{d:#?}");
    for (diag, (i, sym)) in d.iter().zip([(2, "H"), (3, "W")]) {
        assert_eq!(diag.kind, DiagnosticKind::DynamicDimension);
        let text = diag.to_string();
        assert!(text.starts_with("graph input 'x'"), "{text}");
        assert!(
            text.contains(&format!("dimension {i} is symbolic ('{sym}')")),
            "{text}"
        );
        assert!(text.contains("fix: pass --input-shape x=1,3,H,W"), "{text}");
    }
    // With the shape given, it folds; --batch does not override it.
    let g = import_with(&m, &options(4, &[("x", &[1, 3, 48, 192])])).unwrap();
    let t = g.constant(g.outputs()[0].node).unwrap();
    assert_eq!(t.as_f32().unwrap(), [48.0, 192.0]);
    assert_eq!(g.node(g.inputs()[0]).ty.shape, [1, 3, 48, 192]);
}

#[test]
fn shape_only_ops_on_run_time_data_are_reported() {
    let m = Model::new(13)
        .input("x", &[1, 4])
        .init_i64("i", &[1], vec![0])
        .node("Gather", &["x", "i"], &["g"], vec![int("axis", 1)])
        .node("Relu", &["g"], &["y"], vec![])
        .output("y");
    let d = unsupported(import_with(&m, &options(1, &[])));
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].kind, DiagnosticKind::NonConstantInput);
    let text = d[0].to_string();
    assert!(text.starts_with("node 'g_node' (Gather)"), "{text}");
    assert!(text.contains("input 0 'x'"), "{text}");
}

#[test]
fn huge_generated_constants_are_reported_with_the_limit() {
    let m = Model::new(13)
        .init_i64("shape", &[2], vec![1 << 20, 1 << 20])
        .node("ConstantOfShape", &["shape"], &["y"], vec![])
        .output("y");
    let d = unsupported(import_with(&m, &options(1, &[])));
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].kind, DiagnosticKind::TooLarge);
    assert!(d[0].message.contains("4194304"), "{}", d[0]);
    let m = Model::new(13)
        .init_f32("a", &[], vec![0.0])
        .init_f32("b", &[], vec![1e9])
        .init_f32("c", &[], vec![1.0])
        .node("Range", &["a", "b", "c"], &["y"], vec![])
        .output("y");
    let d = unsupported(import_with(&m, &options(1, &[])));
    assert_eq!(d[0].kind, DiagnosticKind::TooLarge);
    // Integer division by zero is malformed, not a panic.
    let m = Model::new(13)
        .init_i64("a", &[], vec![1])
        .init_i64("z", &[], vec![0])
        .node("Div", &["a", "z"], &["d"], vec![])
        .node("Cast", &["d"], &["y"], vec![int("to", 1)])
        .output("y");
    assert!(matches!(
        import_with(&m, &options(1, &[])),
        Err(ImportError::InvalidNode { .. })
    ));
}

#[test]
fn input_shapes_are_checked_against_the_model() {
    let m = Model::new(13)
        .input_typed("x", DataType::Float, vec![D::S("N"), D::N(3), D::S("H")])
        .input("z", &[1])
        .node("Relu", &["x"], &["y"], vec![])
        .node("Relu", &["z"], &["y2"], vec![])
        .output("y")
        .output("y2");
    let err = import_with(&m, &options(1, &[("nope", &[1])])).unwrap_err();
    assert!(matches!(err, ImportError::InputShape { .. }), "{err}");
    assert!(err.to_string().contains("'x', 'z'"), "{err}");
    let err = import_with(&m, &options(1, &[("x", &[1, 3])])).unwrap_err();
    assert!(err.to_string().contains("rank 2"), "{err}");
    let err = import_with(&m, &options(1, &[("x", &[1, 4, 8])])).unwrap_err();
    assert!(
        err.to_string()
            .contains("dimension 1 is given as 4, but the model declares it 3"),
        "{err}"
    );
    let g = import_with(&m, &options(1, &[("x", &[2, 3, 8])])).unwrap();
    assert_eq!(g.node(g.inputs()[0]).ty.shape, [2, 3, 8]);
}

fn run(g: &Graph, x: &Tensor) -> Vec<f32> {
    lutq_interp::run(g, std::slice::from_ref(x)).unwrap()[0]
        .as_f32()
        .unwrap()
        .to_vec()
}

fn ramp(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::f32(
        shape.to_vec(),
        (0..n)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect(),
    )
    .unwrap()
}

/// PyTorch's `x.view(x.size(0), -1)` before a Gemm, batch bound by `--batch`.
#[test]
fn pytorch_flatten_through_shape_folds_end_to_end() {
    let body = |m: Model| {
        m.input_typed(
            "x",
            DataType::Float,
            vec![D::S("batch"), D::N(2), D::N(3), D::N(3)],
        )
        .weight("w", &[18, 4])
        .weight("b", &[4])
    };
    let with_shape = body(Model::new(13))
        .init_i64("zero", &[], vec![0])
        .init_i64("axes", &[1], vec![0])
        .init_i64("minus1", &[1], vec![-1])
        .named_node("/Shape", "Shape", &["x"], &["s"], vec![])
        .named_node(
            "/Gather",
            "Gather",
            &["s", "zero"],
            &["n"],
            vec![int("axis", 0)],
        )
        .named_node("/Unsqueeze", "Unsqueeze", &["n", "axes"], &["nu"], vec![])
        .named_node(
            "/Concat",
            "Concat",
            &["nu", "minus1"],
            &["shape"],
            vec![int("axis", 0)],
        )
        .named_node("/Reshape", "Reshape", &["x", "shape"], &["flat"], vec![])
        .named_node("/fc/Gemm", "Gemm", &["flat", "w", "b"], &["y"], vec![])
        .output("y");
    let plain = body(Model::new(13))
        .init_i64("shape", &[2], vec![3, -1])
        .named_node("/Reshape", "Reshape", &["x", "shape"], &["flat"], vec![])
        .named_node("/fc/Gemm", "Gemm", &["flat", "w", "b"], &["y"], vec![])
        .output("y");
    let o = options(3, &[]);
    let g = import_with(&with_shape, &o).unwrap();
    let p = import_with(&plain, &o).unwrap();
    insta::with_settings!({snapshot_path => "../../../snapshots/onnx", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("shape_folding_pytorch_flatten", g.dump());
    });
    assert_eq!(g.dump(), p.dump());
    let x = ramp(&[3, 2, 3, 3]);
    assert_eq!(run(&g, &x), run(&p, &x));
}

/// PaddleOCR-style dynamic H/W: `Shape → Slice → Cast` computes the Resize target from
/// the input's size, fixed by `input_shapes`.
#[test]
fn paddle_dynamic_hw_through_shape_slice_cast_folds_end_to_end() {
    let body = |m: Model| {
        m.input_typed(
            "x",
            DataType::Float,
            vec![D::S("n"), D::N(2), D::S("h"), D::S("w")],
        )
        .weight("k", &[2, 2, 3, 3])
    };
    let with_shape = body(Model::new(13))
        .init_i64("st", &[1], vec![2])
        .init_i64("en", &[1], vec![4])
        .init_f32("half", &[], vec![0.5])
        .init_i64("nc", &[2], vec![1, 2])
        .named_node(
            "conv",
            "Conv",
            &["x", "k"],
            &["c"],
            vec![ints("pads", &[1, 1, 1, 1])],
        )
        .named_node("shape", "Shape", &["x"], &["s"], vec![])
        .named_node("slice", "Slice", &["s", "st", "en"], &["hw"], vec![])
        .named_node(
            "cast",
            "Cast",
            &["hw"],
            &["hwf"],
            vec![int("to", DataType::Float as i64)],
        )
        .named_node("mul", "Mul", &["hwf", "half"], &["halff"], vec![])
        .named_node("floor", "Floor", &["halff"], &["fl"], vec![])
        .named_node(
            "cast2",
            "Cast",
            &["fl"],
            &["hwi"],
            vec![int("to", DataType::Int64 as i64)],
        )
        .named_node(
            "concat",
            "Concat",
            &["nc", "hwi"],
            &["sizes"],
            vec![int("axis", 0)],
        )
        .named_node(
            "resize",
            "Resize",
            &["c", "", "", "sizes"],
            &["y"],
            vec![string("mode", "linear")],
        )
        .output("y");
    let plain = body(Model::new(13))
        .init_i64("sizes", &[4], vec![1, 2, 4, 3])
        .named_node(
            "conv",
            "Conv",
            &["x", "k"],
            &["c"],
            vec![ints("pads", &[1, 1, 1, 1])],
        )
        .named_node(
            "resize",
            "Resize",
            &["c", "", "", "sizes"],
            &["y"],
            vec![string("mode", "linear")],
        )
        .output("y");
    // Without the shape, the symbolic H and W are reported, with the flag to pass.
    let d = unsupported(import_with(&with_shape, &options(1, &[])));
    assert!(
        d.iter().all(|d| d.kind == DiagnosticKind::DynamicDimension),
        "{d:#?}"
    );
    let o = options(1, &[("x", &[1, 2, 8, 7])]);
    let g = import_with(&with_shape, &o).unwrap();
    let p = import_with(&plain, &o).unwrap();
    insta::with_settings!({snapshot_path => "../../../snapshots/onnx", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("shape_folding_paddle_dynamic_hw", g.dump());
    });
    let resize = g
        .node_ids()
        .map(|id| &g.node(id).op)
        .find(|op| matches!(op, Op::Resize(_)))
        .unwrap();
    let Op::Resize(r) = resize else {
        unreachable!()
    };
    assert_eq!(r.out, [4, 3]);
    let x = ramp(&[1, 2, 8, 7]);
    assert_eq!(run(&g, &x), run(&p, &x));
}

#[test]
fn malformed_split_and_resize_sizes_are_errors_not_panics() {
    let m = Model::new(13)
        .input("x", &[1, 4, 2, 2])
        .init_i64("split", &[2], vec![i64::MAX, i64::MAX])
        .node("Split", &["x", "split"], &["a", "b"], vec![int("axis", 1)])
        .output("a");
    assert!(matches!(
        import_with(&m, &options(1, &[])),
        Err(ImportError::InvalidNode { .. })
    ));
    let m = Model::new(13)
        .input("x", &[1, 1, 2, 2])
        .init_f32("scales", &[4], vec![1.0, 1.0, 1e30, 1e30])
        .node("Resize", &["x", "", "scales"], &["y"], vec![])
        .output("y");
    assert!(import_with(&m, &options(1, &[])).is_err());
}

/// Runs a one-input float model on `0, 1, 2, …`.
fn run_arange(g: &Graph) -> Vec<f32> {
    let shape = g.node(g.inputs()[0]).ty.shape.clone();
    let n: usize = shape.iter().product();
    let x = Tensor::f32(shape, (0..n).map(|v| v as f32).collect()).unwrap();
    let y = lutq_interp::Interpreter::new(g)
        .unwrap()
        .run_batch(&x, None)
        .unwrap();
    y.as_f32().unwrap().to_vec()
}

#[test]
fn run_time_expand_over_space_is_a_broadcast_copy() {
    for dims in [
        &[1i64, 3, 1, 1][..],
        &[3, 1, 1],
        &[1, 3, 4, 1],
        &[1, 3, 1, 5],
    ] {
        let m = Model::new(13)
            .input("x", dims)
            .init_i64("shape", &[4], vec![1, 3, 4, 5])
            .node("Expand", &["x", "shape"], &["y"], vec![])
            .output("y");
        let g = import(&m).unwrap_or_else(|e| panic!("{dims:?}: {e}"));
        let got = run_arange(&g);
        let padded: Vec<usize> = std::iter::repeat_n(1, 4 - dims.len())
            .chain(dims.iter().map(|&d| d as usize))
            .collect();
        let mut want = Vec::new();
        for c in 0..3 {
            for h in 0..4 {
                for w in 0..5 {
                    let (sh, sw) = (h % padded[2], w % padded[3]);
                    want.push(((c * padded[2] + sh) * padded[3] + sw) as f32);
                }
            }
        }
        assert_eq!(got, want, "{dims:?}");
    }
    // Broadcasting channels is not a spatial copy: refused with the reason.
    let m = Model::new(13)
        .input("x", &[1, 1, 4, 5])
        .init_i64("shape", &[4], vec![1, 3, 4, 5])
        .node("Expand", &["x", "shape"], &["y"], vec![])
        .output("y");
    let d = unsupported(import(&m));
    assert!(
        d[0].to_string().contains("only [N, C, 1 or H, 1 or W]"),
        "{}",
        d[0]
    );
}

#[test]
fn depth_to_space_and_space_to_depth_follow_the_onnx_definitions() {
    let (n, c, h, w, b) = (1usize, 8usize, 2usize, 3usize, 2usize);
    let c2 = c / (b * b);
    for mode in ["DCR", "CRD"] {
        let m = Model::new(13)
            .input("x", &[n as i64, c as i64, h as i64, w as i64])
            .node(
                "DepthToSpace",
                &["x"],
                &["y"],
                vec![int("blocksize", b as i64), string("mode", mode)],
            )
            .output("y");
        let g = import(&m).unwrap_or_else(|e| panic!("{mode}: {e}"));
        let got = run_arange(&g);
        let mut want = vec![0.0; n * c * h * w];
        for ci in 0..c2 {
            for y in 0..h * b {
                for x in 0..w * b {
                    let (i, j) = (y % b, x % b);
                    let src_c = match mode {
                        "DCR" => (i * b + j) * c2 + ci,
                        _ => ci * b * b + i * b + j,
                    };
                    want[(ci * h * b + y) * w * b + x] = ((src_c * h + y / b) * w + x / b) as f32;
                }
            }
        }
        assert_eq!(got, want, "{mode}");
    }
    let m = Model::new(13)
        .input("x", &[1, 2, 4, 6])
        .node("SpaceToDepth", &["x"], &["y"], vec![int("blocksize", 2)])
        .output("y");
    let g = import(&m).unwrap();
    assert_eq!(g.node(g.outputs()[0].node).ty.shape, vec![1, 8, 2, 3]);
    let got = run_arange(&g);
    let mut want = vec![0.0; 48];
    for ci in 0..2 {
        for y in 0..4 {
            for x in 0..6 {
                let dst_c = ((y % 2) * 2 + x % 2) * 2 + ci;
                want[(dst_c * 2 + y / 2) * 3 + x / 2] = ((ci * 4 + y) * 6 + x) as f32;
            }
        }
    }
    assert_eq!(got, want);
    // A block that does not divide the input is an error naming the sizes.
    let m = Model::new(13)
        .input("x", &[1, 2, 5, 6])
        .node("SpaceToDepth", &["x"], &["y"], vec![int("blocksize", 2)])
        .output("y");
    let e = import(&m).unwrap_err().to_string();
    assert!(e.contains("5×6 does not divide"), "{e}");
}

/// `ImportOptions::outputs` (`--outputs`): the named tensors, or nodes, become the
/// outputs, and nothing after them is imported, not even an op lutq does not know.
#[test]
fn outputs_end_the_model_and_drop_what_follows() {
    let m = Model::new(17)
        .input("x", &[1, 2, 3, 3])
        .named_node("act", "Relu", &["x"], &["r"], vec![])
        .named_node("post", "NonMaxSuppressionLikeOp", &["r"], &["y"], vec![])
        .output("y");
    // The whole model: the unknown op is refused.
    let d = unsupported(import_with(&m, &options(1, &[])));
    assert_eq!(d[0].kind, DiagnosticKind::UnsupportedOp, "{d:?}");
    // Ended at the Relu's output, by tensor name or by node name.
    for name in ["r", "act"] {
        let o = ImportOptions {
            outputs: vec![name.to_string()],
            ..Default::default()
        };
        let g = import_with(&m, &o).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(g.outputs().len(), 1);
        let out = g.node(g.outputs()[0].node);
        assert_eq!(
            (out.name.as_str(), &out.op),
            ("act", &Op::Activation(lutq_ir::Activation::Relu))
        );
        assert_eq!(g.node_count(), 2, "{}", g.dump());
    }
    // A name that is neither: refused with its name.
    let o = ImportOptions {
        outputs: vec!["nope".to_string()],
        ..Default::default()
    };
    let d = unsupported(import_with(&m, &o));
    assert!(
        d.iter()
            .any(|d| d.kind == DiagnosticKind::UnknownName && d.message.contains("'nope'")),
        "{d:?}"
    );
}
