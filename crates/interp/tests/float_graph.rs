//! Whole-graph behaviour of the float interpreter: buffer sharing and reuse, outputs,
//! the observer, input checking, batched runs.

mod common;
#[path = "../benches/support/mobilenet_v2.rs"]
mod mobilenet_v2;

use std::sync::Mutex;

use common::*;
use lutq_interp::{InterpError, Interpreter, TensorView};
use lutq_ir::{Activation, BinaryOp, ElemType, Graph, NodeId, Op, Tensor, TensorData, TensorType};

fn relu() -> Op {
    Op::Activation(Activation::Relu)
}

/// x → relu → reshape (read by two ops) → {sigmoid, add(reshape, sigmoid)}; plus the
/// reshape itself and the input as outputs. The relu's buffer is shared by the reshape,
/// so the sigmoid must not overwrite it in place.
#[test]
fn shared_buffers_are_never_overwritten() {
    let mut g = Graph::new("share");
    let x = input(&mut g, "x", &[2, 3]);
    let r = node(&mut g, relu(), &[x]);
    let v = node(&mut g, Op::Reshape { shape: vec![6] }, &[r]);
    let s = node(&mut g, Op::Activation(Activation::Sigmoid), &[v]);
    let a = node(&mut g, Op::Binary(BinaryOp::Add), &[v, s]);
    let n = node(
        &mut g,
        Op::Activation(Activation::LeakyRelu { alpha: 2.0 }),
        &[r],
    );
    g.add_output("sum", a).unwrap();
    g.add_output("flat", v).unwrap();
    g.add_output("x", x).unwrap();
    g.add_output("sum_again", a).unwrap();
    g.add_output("leaky", n).unwrap();
    let xs = vec![-1.0, 2.0, -3.0, 4.0, 0.5, -0.5];
    let xt = Tensor::f32([2, 3], xs.clone()).unwrap();
    let out = lutq_interp::run(&g, std::slice::from_ref(&xt)).unwrap();
    let relu: Vec<f32> = xs.iter().map(|v| v.max(0.0)).collect();
    let sum: Vec<f32> = relu.iter().map(|&v| v + 1.0 / (1.0 + (-v).exp())).collect();
    assert_eq!(out.len(), 5);
    assert_close(out[0].as_f32().unwrap(), &sum, 1e-6, "sum");
    assert_eq!(out[0].shape(), [6]);
    assert_eq!(out[1].as_f32().unwrap(), relu);
    assert_eq!(out[2], xt);
    assert_eq!(out[3], out[0]);
    assert_eq!(out[4].as_f32().unwrap(), relu, "leaky relu of relu is relu");
    assert_eq!(out[4].shape(), [2, 3]);
}

#[test]
fn constant_output_and_dead_nodes() {
    let mut g = Graph::new("const");
    let x = input(&mut g, "x", &[3]);
    let c = constant(&mut g, "c", Tensor::f32([3], vec![1.0, 2.0, 3.0]).unwrap());
    let y = node(&mut g, Op::Binary(BinaryOp::Mul), &[x, c]);
    // Nobody reads this one: it is not run (and so cannot fail).
    let _dead = node(&mut g, relu(), &[y]);
    g.add_output("c", c).unwrap();
    g.add_output("y", y).unwrap();
    let out = lutq_interp::run(&g, &[Tensor::f32([3], vec![2.0, 2.0, 2.0]).unwrap()]).unwrap();
    assert_eq!(out[0].as_f32().unwrap(), [1.0, 2.0, 3.0]);
    assert_eq!(out[1].as_f32().unwrap(), [2.0, 4.0, 6.0]);
}

#[test]
fn observer_sees_inputs_then_every_op_in_order() {
    let g = mobilenet_v2::mobilenet_v2(1, 32, false, 1);
    let mut rng = Rng::new(20);
    let xt = rng.tensor(&[1, 3, 32, 32]);
    let mut seen: Vec<(NodeId, Vec<usize>, f32)> = Vec::new();
    let out =
        lutq_interp::run_with_observer(&g, std::slice::from_ref(&xt), &mut |id, v: TensorView| {
            assert_eq!(v.data.len(), v.shape.iter().product::<usize>());
            seen.push((
                id,
                v.shape.to_vec(),
                v.data.iter().fold(0.0f32, |a, &b| a.max(b.abs())),
            ));
        })
        .unwrap();
    let order: Vec<NodeId> = g
        .topo_order()
        .into_iter()
        .filter(|&id| !matches!(g.node(id).op, Op::Constant(_)))
        .collect();
    let ids: Vec<NodeId> = seen.iter().map(|s| s.0).collect();
    assert_eq!(ids, order);
    assert_eq!(ids[0], g.inputs()[0]);
    for (id, shape, _) in &seen {
        assert_eq!(shape, &g.node(*id).ty.shape);
    }
    // The last observed tensor is the output.
    let last = seen.last().unwrap();
    assert_eq!(last.0, g.outputs()[0].node);
    let max = out[0]
        .as_f32()
        .unwrap()
        .iter()
        .fold(0.0f32, |a, &b| a.max(b.abs()));
    assert_eq!(last.2, max);
    // And observing does not change results.
    assert_eq!(out, lutq_interp::run(&g, &[xt]).unwrap());
}

#[test]
fn folded_and_unfolded_mobilenet_agree_with_manual_bn_folding() {
    // Fold the BN of a small conv → BN → ReLU6 chain by hand and compare.
    let mut rng = Rng::new(21);
    let (cin, cout) = (4, 6);
    let w = rng.tensor(&[cout, cin, 3, 3]);
    let [scale, bias, mean] = [0, 1, 2].map(|_| rng.tensor(&[cout]));
    let var = Tensor::f32(
        [cout],
        rng.vec(cout).iter().map(|v| v.abs() + 0.5).collect(),
    )
    .unwrap();
    let conv = Op::Conv(lutq_ir::Conv {
        pads: [1; 4],
        ..Default::default()
    });
    let clip = Op::Activation(Activation::Clip {
        min: Some(0.0),
        max: Some(6.0),
    });
    let mut g = Graph::new("bn");
    let x = input(&mut g, "x", &[1, cin, 5, 5]);
    let wc = constant(&mut g, "w", w.clone());
    let c = node(&mut g, conv.clone(), &[x, wc]);
    let p: Vec<NodeId> = [&scale, &bias, &mean, &var]
        .iter()
        .map(|t| constant(&mut g, "p", (*t).clone()))
        .collect();
    let bn = node(
        &mut g,
        Op::BatchNorm { epsilon: 1e-5 },
        &[c, p[0], p[1], p[2], p[3]],
    );
    let y = node(&mut g, clip.clone(), &[bn]);
    g.add_output("y", y).unwrap();

    let a: Vec<f32> = (0..cout)
        .map(|i| scale.as_f32().unwrap()[i] / (var.as_f32().unwrap()[i] + 1e-5).sqrt())
        .collect();
    let wf: Vec<f32> = w
        .as_f32()
        .unwrap()
        .chunks(cin * 9)
        .enumerate()
        .flat_map(|(o, ch)| ch.iter().map(|&v| v * a[o]).collect::<Vec<_>>())
        .collect();
    let bf: Vec<f32> = (0..cout)
        .map(|i| bias.as_f32().unwrap()[i] - mean.as_f32().unwrap()[i] * a[i])
        .collect();
    let mut f = Graph::new("folded");
    let x2 = input(&mut f, "x", &[1, cin, 5, 5]);
    let wc2 = constant(&mut f, "w", Tensor::f32([cout, cin, 3, 3], wf).unwrap());
    let bc2 = constant(&mut f, "b", Tensor::f32([cout], bf).unwrap());
    let c2 = node(&mut f, conv, &[x2, wc2, bc2]);
    let y2 = node(&mut f, clip, &[c2]);
    f.add_output("y", y2).unwrap();

    let xt = rng.tensor(&[1, cin, 5, 5]);
    let got = run1(&g, std::slice::from_ref(&xt));
    let want = run1(&f, &[xt]);
    assert_close(
        got.as_f32().unwrap(),
        want.as_f32().unwrap(),
        1e-5,
        "bn folding",
    );
}

#[test]
fn input_errors_name_the_input() {
    let g = single_op(relu(), &[&[1, 3]]);
    let err = lutq_interp::run(&g, &[]).unwrap_err();
    assert!(
        matches!(
            err,
            InterpError::InputCount {
                expected: 1,
                actual: 0
            }
        ),
        "{err}"
    );

    let err = lutq_interp::run(&g, &[Tensor::f32([3], vec![0.0; 3]).unwrap()]).unwrap_err();
    assert!(err.to_string().contains("'x0'"), "{err}");
    assert!(err.to_string().contains("f32[1,3]"), "{err}");

    let ints = Tensor::new([1, 3], TensorData::I8(vec![1, 2, 3])).unwrap();
    let err = lutq_interp::run(&g, &[ints]).unwrap_err();
    assert!(matches!(err, InterpError::InputType { .. }), "{err}");
    assert!(err.to_string().contains("i8[1,3]"), "{err}");

    let err = Interpreter::new(&g)
        .unwrap()
        .run_slices(&[&[1.0, 2.0]], None)
        .unwrap_err();
    assert!(err.to_string().contains("'x0'"), "{err}");
}

#[test]
fn integer_graphs_are_refused() {
    let mut g = Graph::new("int");
    let x = g.add_input("q", TensorType::new(ElemType::I8, [4]));
    let y = g
        .add_node("r", Op::Reshape { shape: vec![2, 2] }, &[x])
        .unwrap();
    g.add_output("y", y).unwrap();
    let err = Interpreter::new(&g).err().expect("refused");
    assert!(matches!(err, InterpError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("'q'"), "{err}");
}

#[test]
fn run_batch_equals_per_sample_runs() {
    let mut rng = Rng::new(22);
    for bound in [1, 2] {
        let g = mobilenet_v2::mobilenet_v2(bound, 32, true, 2);
        let n = 6;
        let batch = rng.tensor(&[n, 3, 32, 32]);
        let reports = Mutex::new(Vec::new());
        let progress = |done: usize| reports.lock().unwrap().push(done);
        let out = lutq_interp::run_batch(&g, &batch, Some(&progress)).unwrap();
        assert_eq!(out.shape(), [n, 1000]);
        let reports = reports.into_inner().unwrap();
        let expected: Vec<usize> = (1..=n / bound).map(|i| i * bound).collect();
        assert_eq!(reports, expected, "progress reports increase to N");

        let interp = Interpreter::new(&g).unwrap();
        let per = 3 * 32 * 32 * bound;
        let data = batch.as_f32().unwrap();
        for chunk in 0..n / bound {
            let x = Tensor::f32(
                [bound, 3, 32, 32],
                data[chunk * per..(chunk + 1) * per].to_vec(),
            )
            .unwrap();
            let want = interp.run(&[x]).unwrap().pop().unwrap();
            let got = &out.as_f32().unwrap()[chunk * bound * 1000..(chunk + 1) * bound * 1000];
            assert_eq!(
                got,
                want.as_f32().unwrap(),
                "chunk {chunk}, bound batch {bound}"
            );
        }
        let all = lutq_interp::run_batch_all_outputs(&g, &batch, None).unwrap();
        assert_eq!(all, vec![out]);
    }
}

#[test]
fn run_batch_errors() {
    let g = mobilenet_v2::mobilenet_v2(2, 32, true, 3);
    let mut rng = Rng::new(23);
    let err = lutq_interp::run_batch(&g, &rng.tensor(&[3, 3, 32, 32]), None).unwrap_err();
    assert!(
        err.to_string()
            .contains("not a multiple of the graph's batch size 2"),
        "{err}"
    );
    let err = lutq_interp::run_batch(&g, &rng.tensor(&[2, 3, 32, 31]), None).unwrap_err();
    assert!(err.to_string().contains("[N,3,32,32]"), "{err}");
    let empty = lutq_interp::run_batch(&g, &Tensor::f32([0, 3, 32, 32], vec![]).unwrap(), None);
    assert_eq!(empty.unwrap().shape(), [0, 1000]);

    let two = single_op(Op::Binary(BinaryOp::Add), &[&[1, 2], &[1, 2]]);
    let err = lutq_interp::run_batch(&two, &rng.tensor(&[4, 2]), None).unwrap_err();
    assert!(err.to_string().contains("exactly one input"), "{err}");
}

/// Plain runs fuse BatchNorms and activations into the Conv before them; observed runs
/// do not. Both must agree bit for bit, on every fusable and non-fusable shape of chain.
#[test]
fn fused_and_unfused_runs_are_bit_identical() {
    let mut rng = Rng::new(24);
    let mut g = Graph::new("chains");
    let x = input(&mut g, "x", &[1, 4, 9, 9]);
    let bn_params = |g: &mut Graph, rng: &mut Rng, c: usize| -> Vec<NodeId> {
        let var = Tensor::f32([c], rng.vec(c).iter().map(|v| v.abs() + 0.5).collect()).unwrap();
        let mut p: Vec<NodeId> = (0..3)
            .map(|i| constant(g, &format!("p{i}"), rng.tensor(&[c])))
            .collect();
        p.push(constant(g, "var", var));
        p
    };
    let conv = |g: &mut Graph,
                rng: &mut Rng,
                x: NodeId,
                cin: usize,
                cout: usize,
                group: usize,
                bias: bool| {
        let w = constant(g, "w", rng.tensor(&[cout, cin / group, 3, 3]));
        let mut ins = vec![x, w];
        if bias {
            ins.push(constant(g, "b", rng.tensor(&[cout])));
        }
        let attrs = lutq_ir::Conv {
            pads: [1; 4],
            group,
            ..Default::default()
        };
        node(g, Op::Conv(attrs), &ins)
    };
    let bn = |g: &mut Graph, x: NodeId, p: &[NodeId]| {
        node(
            g,
            Op::BatchNorm { epsilon: 1e-3 },
            &[x, p[0], p[1], p[2], p[3]],
        )
    };
    // conv(bias) → relu → bn → clip: all three fused.
    let c1 = conv(&mut g, &mut rng, x, 4, 8, 1, true);
    let r1 = node(&mut g, relu(), &[c1]);
    let p1 = bn_params(&mut g, &mut rng, 8);
    let b1 = bn(&mut g, r1, &p1);
    let clip = Op::Activation(Activation::Clip {
        min: Some(-0.5),
        max: Some(0.5),
    });
    let a1 = node(&mut g, clip, &[b1]);
    // Depthwise conv whose output is also read by an add: nothing fused.
    let c2 = conv(&mut g, &mut rng, a1, 8, 8, 8, false);
    let h2 = node(&mut g, Op::Activation(Activation::HardSwish), &[c2]);
    let s2 = node(&mut g, Op::Binary(BinaryOp::Add), &[c2, h2]);
    // BatchNorm whose scale is computed: not fused; conv output that is a graph output.
    let c3 = conv(&mut g, &mut rng, s2, 8, 8, 2, true);
    let p3 = bn_params(&mut g, &mut rng, 8);
    let scale = node(&mut g, Op::Activation(Activation::Sigmoid), &[p3[0]]);
    let b3 = bn(&mut g, c3, &[scale, p3[1], p3[2], p3[3]]);
    let c4 = conv(&mut g, &mut rng, b3, 8, 4, 1, false);
    let l4 = node(
        &mut g,
        Op::Activation(Activation::LeakyRelu { alpha: 0.1 }),
        &[c4],
    );
    g.add_output("y", l4).unwrap();
    g.add_output("c4", c4).unwrap();

    let xt = rng.tensor(&[1, 4, 9, 9]);
    let plain = lutq_interp::run(&g, std::slice::from_ref(&xt)).unwrap();
    let mut count = 0;
    let observed = lutq_interp::run_with_observer(&g, &[xt], &mut |_, _| count += 1).unwrap();
    assert_eq!(plain, observed);
    // Every non-constant node was observed: the input and 12 ops.
    assert_eq!(count, 13);

    for fold_bn in [false, true] {
        let g = mobilenet_v2::mobilenet_v2(1, 64, fold_bn, 4);
        let xt = rng.tensor(&[1, 3, 64, 64]);
        let plain = lutq_interp::run(&g, std::slice::from_ref(&xt)).unwrap();
        let observed = lutq_interp::run_with_observer(&g, &[xt], &mut |_, _| {}).unwrap();
        assert_eq!(plain, observed, "mobilenet fold_bn={fold_bn}");
    }
}

#[test]
fn fused_activation_attributes_equal_separate_activations() {
    // Conv and Gemm with `activation` set compute exactly what the op followed by the
    // activation computes, in plain and in observed runs.
    let mut rng = Rng::new(5);
    let acts = [
        lutq_ir::FusedActivation::Relu,
        lutq_ir::FusedActivation::Clip { max: 0.5 },
    ];
    for act in acts {
        let build = |fused: bool, rng: &mut Rng| {
            let mut g = Graph::new("fused");
            let x = input(&mut g, "x", &[1, 3, 5, 5]);
            let w = constant(&mut g, "w", rng.tensor(&[4, 3, 3, 3]));
            let conv = lutq_ir::Conv {
                pads: [1; 4],
                activation: fused.then_some(act),
                ..Default::default()
            };
            let mut c = node(&mut g, Op::Conv(conv), &[x, w]);
            if !fused {
                c = node(&mut g, Op::Activation(act.to_activation()), &[c]);
            }
            let flat = node(
                &mut g,
                Op::Reshape {
                    shape: vec![1, 100],
                },
                &[c],
            );
            let wg = constant(&mut g, "wg", rng.tensor(&[100, 7]));
            let gemm = lutq_ir::Gemm {
                activation: fused.then_some(act),
                ..Default::default()
            };
            let mut y = node(&mut g, Op::Gemm(gemm), &[flat, wg]);
            if !fused {
                y = node(&mut g, Op::Activation(act.to_activation()), &[y]);
            }
            g.add_output("y", y).unwrap();
            g
        };
        let fused = build(true, &mut Rng::new(9));
        let separate = build(false, &mut Rng::new(9));
        let xt = rng.tensor(&[1, 3, 5, 5]);
        let want = run1(&separate, std::slice::from_ref(&xt));
        assert_eq!(run1(&fused, std::slice::from_ref(&xt)), want, "{act}");
        let observed = Interpreter::new(&fused)
            .unwrap()
            .run_with_observer(std::slice::from_ref(&xt), &mut |_, _| {})
            .unwrap();
        assert_eq!(observed[0], want, "{act} observed");
    }
}
