//! Property test: random small integer graphs (every op, every weight format, odd
//! geometries) give bit for bit the interpreter's outputs.

use lutq_backend_jit::{CompileOptions, compile_with};
use lutq_bundled::random::{Rng, random_graph};
use lutq_interp::int::{IntData, IntInterpreter, exec_node};
use lutq_ir::int::{IntOp, QWeights};

#[test]
fn random_graphs_match_the_interpreter() {
    let mut r = Rng(0x1234_5678_9abc_def1);
    let (mut tested, mut rejected) = (0, 0);
    let mut seen = std::collections::BTreeMap::new();
    while tested < 400 {
        let (g, x) = random_graph(&mut r);
        if g.validate().is_err() {
            rejected += 1;
            continue;
        }
        tested += 1;
        let expected = IntInterpreter::new(&g).unwrap().run(&[&x]).unwrap();
        // Every layer unrolled (immediate epilogues), however small.
        let unrolled = CompileOptions {
            unroll_min_macs: 0,
            ..CompileOptions::default()
        };
        let mut model =
            compile_with(&g, &unrolled).unwrap_or_else(|e| panic!("case {tested}: {e}\n{g:#?}"));
        let got = model.run(&[&x]).unwrap();
        assert_eq!(got, expected, "case {tested}: {g:#?}");
        // The arena is reused: a second run gives the same result.
        let again = model.run(&[&x]).unwrap();
        assert_eq!(again, expected, "case {tested} (second run)");
        // Both dot-product kernels, whatever this CPU has (without VNNI, Cranelift
        // expands the quad product tree: same values, more instructions), and the
        // default unrolling.
        let other = CompileOptions {
            vnni: !CompileOptions::default().vnni,
            ..CompileOptions::default()
        };
        let mut model = compile_with(&g, &other).unwrap();
        assert_eq!(
            model.run(&[&x]).unwrap(),
            expected,
            "case {tested} (vnni: {})",
            other.vnni
        );
        for n in &g.nodes {
            let key = match &n.op {
                IntOp::Linear(l) => match (&l.conv, &l.weights) {
                    (None, _) => "dense",
                    (Some(c), _) if c.group > 1 && c.group == g.ty(n.inputs[0]).shape[1] => {
                        "depthwise"
                    }
                    (Some(c), _) if c.group > 1 => "grouped",
                    (Some(_), QWeights::Lut { .. }) => "conv-lut",
                    (Some(_), QWeights::Int8 { .. }) => "conv-int8",
                },
                op => op.name(),
            };
            *seen.entry(key).or_insert(0usize) += 1;
        }
        *seen.entry(g.rounding.name()).or_insert(0) += 1;
        // Also through the quantized entry point.
        let scalar = CompileOptions {
            vectorize: false,
            ..CompileOptions::default()
        };
        let mut model = compile_with(&g, &scalar).unwrap();
        assert_eq!(
            model.run(&[&x]).unwrap(),
            expected,
            "case {tested} (scalar kernels)"
        );
        let q: IntData = exec_node(&g, &g.nodes[0], &[], &[&x]).unwrap();
        assert_eq!(
            model.run_quantized(&[&q]).unwrap(),
            expected,
            "case {tested} (quantized)"
        );
    }
    eprintln!("{tested} graphs ({rejected} invalid drawn), ops: {seen:?}");
    assert!(rejected < tested, "too many invalid graphs: {rejected}");
    // Every op kind the generator draws was compared at least once.
    for op in [
        "conv-lut",
        "conv-int8",
        "depthwise",
        "dense",
        "add",
        "concat",
        "max_pool",
        "sum_pool",
        "requant",
        "table",
        "mul",
        "softmax",
        "transpose",
        "slice",
        "resize",
        "max",
        "min",
        "half_up",
        "half_even",
    ] {
        assert!(
            seen.contains_key(op),
            "no random program had a {op}: {seen:?}"
        );
    }
}
