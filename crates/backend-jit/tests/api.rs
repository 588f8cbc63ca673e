//! The API's errors: refused graphs and wrong inputs are errors, never panics.

use lutq_backend_jit::{JitError, compile};
use lutq_interp::int::IntData;
use lutq_ir::int::{
    IntElem, IntGraph, IntInput, IntNode, IntOp, IntOutput, QType, Rescale, ValueId,
};

fn requant_graph() -> IntGraph {
    let mut g = IntGraph::new("t");
    g.inputs.push(IntInput {
        name: "x".into(),
        shape: vec![1, 3],
    });
    let ty = |elem| QType {
        elem,
        shape: vec![1, 3],
        exp: 2,
    };
    let q = g.push(IntNode {
        name: "q".into(),
        op: IntOp::QuantizeInput { input: 0 },
        inputs: vec![],
        ty: ty(IntElem::I8),
    });
    let r = g.push(IntNode {
        name: "r".into(),
        op: IntOp::Requant {
            rescale: Rescale::Shift(1),
            lo: 0,
            hi: 127,
        },
        inputs: vec![q],
        ty: ty(IntElem::I8),
    });
    g.outputs.push(IntOutput {
        name: "y".into(),
        value: r,
    });
    g
}

#[test]
fn runs_and_reports() {
    let mut m = compile(&requant_graph()).unwrap();
    // q = floor(x · 4 + 0.5) = [-6, 2, 127]; rshift_round by 1, clamp to [0, 127].
    let out = m.run(&[&[-1.5, 0.375, 1e9]]).unwrap();
    assert_eq!(out, vec![IntData::I8(vec![0, 1, 64])]);
    let q = IntData::I8(vec![5, -3, 100]);
    assert_eq!(
        m.run_quantized(&[&q]).unwrap(),
        vec![IntData::I8(vec![3, 0, 50])]
    );
    assert_eq!(m.quantized_inputs(), vec![(IntElem::I8, 3)]);
    let (_, times) = m.run_timed(&[&[0.0; 3]]).unwrap();
    assert_eq!(times.len(), 1);
    assert!(m.arena_bytes() > 0);
}

#[test]
fn wrong_inputs_are_errors() {
    let mut m = compile(&requant_graph()).unwrap();
    assert!(matches!(m.run(&[]), Err(JitError::InputCount { .. })));
    assert!(matches!(
        m.run(&[&[1.0]]),
        Err(JitError::InputLength { .. })
    ));
    let q = IntData::U8(vec![1, 2, 3]);
    assert!(matches!(
        m.run_quantized(&[&q]),
        Err(JitError::QuantizedInput { .. })
    ));
}

#[test]
fn invalid_graphs_are_refused() {
    let mut g = requant_graph();
    g.nodes[1].inputs = vec![ValueId(1)];
    let e = compile(&g).err().expect("refused");
    assert!(matches!(e, JitError::Invalid(_)), "{e}");
    assert!(e.to_string().contains("'r'"), "{e}");
}

/// The input quantization is the interpreter's, on the awkward values too.
#[test]
fn quantization_matches_the_interpreter() {
    let mut g = requant_graph();
    g.nodes[1].op = IntOp::Requant {
        rescale: Rescale::Shift(0),
        lo: -128,
        hi: 127,
    };
    let values = [
        0.49999997f32,
        -0.49999997,
        0.5,
        -0.5,
        -0.625,
        -0.375,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e30,
        -1e30,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        31.875,
        -32.125,
        -32.0,
    ];
    for exp in [-3, 0, 2, 7] {
        g.nodes[0].ty.exp = exp;
        g.nodes[1].ty.exp = exp;
        let interp = lutq_interp::int::IntInterpreter::new(&g).unwrap();
        let mut m = compile(&g).unwrap();
        for w in values.windows(3) {
            assert_eq!(
                m.run(&[w]).unwrap(),
                interp.run(&[w]).unwrap(),
                "{w:?} exp {exp}"
            );
        }
    }
}
