//! An op that computes from constants only (a Softmax of an initializer the import does
//! not fold) has no integer form: the quantizer reports it by name instead of panicking
//! when lowering reads the constant as an activation. Found by the `onnx_graph` fuzz
//! target (`fuzz/regressions/onnx_graph/crash-ddf271c84aef38a0b98015fd95b7b3e6e487de5c`).

use lutq_ir::{BinaryOp, Graph, Op, Tensor, TensorType};
use lutq_quant::{Mode, QuantError, QuantOptions, quantize};

/// `x` and `softmax(c) / softmax(c)` (or `softmax(x)` with `from_input`) as the output.
fn graph(from_input: bool) -> Graph {
    let mut g = Graph::new("constant_subgraph");
    let x = g.add_input("x", TensorType::f32([1, 2]));
    let c = g.add_constant("c", Tensor::f32([1, 2], vec![0.0, 0.0]).unwrap());
    let s = g
        .add_node(
            "soft",
            Op::Softmax { axis: 1 },
            &[if from_input { x } else { c }],
        )
        .unwrap();
    let y = if from_input {
        s
    } else {
        g.add_node("div", Op::Binary(BinaryOp::Div), &[s, s])
            .unwrap()
    };
    g.add_output("y", y).unwrap();
    g
}

fn calibration() -> Tensor {
    Tensor::f32([4, 2], vec![0.5, -1.0, 2.0, 0.25, -0.75, 1.5, 0.0, 1.0]).unwrap()
}

#[test]
fn ops_on_constants_only_are_reported_by_name() {
    let err = quantize(
        &graph(false),
        &calibration(),
        &QuantOptions::new(Mode::Int8Pc),
        &|_| {},
    )
    .unwrap_err();
    let QuantError::Unsupported(problems) = &err else {
        panic!("expected Unsupported, got {err}");
    };
    for node in ["'soft' (softmax)", "'div' (div)"] {
        assert!(
            problems
                .iter()
                .any(|p| p.contains(node) && p.contains("constants only")),
            "{node} not reported: {problems:?}"
        );
    }
}

#[test]
fn the_same_op_on_the_input_quantizes() {
    let (int, _) = quantize(
        &graph(true),
        &calibration(),
        &QuantOptions::new(Mode::Int8Pc),
        &|_| {},
    )
    .unwrap();
    int.validate().unwrap();
}
