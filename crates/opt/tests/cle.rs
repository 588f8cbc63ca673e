//! Cross-layer equalization ([`lutq_opt::cle`]) on small hand-built graphs and the
//! bundled models: the imbalance drops, exact pairs compute the same, and the pairs CLE
//! must not touch are left alone.

mod common;

use std::path::{Path, PathBuf};

use common::Builder;
use lutq_dataio::NpyArray;
use lutq_ir::{Activation, Conv, FusedActivation, Graph, NodeId, Op, Tensor, TensorType};
use lutq_opt::{
    CleOptions, CleReport, OptOptions, Relu6Policy, equalize, layer_imbalances, optimize,
};

impl Builder {
    fn new(name: &str) -> Self {
        Builder::seeded(name, 0x2545_f491_4f6c_dd1d)
    }

    /// A conv with `cout` output channels, `cin / group` inputs per group and kernel `k`;
    /// output channel `i`'s weights and bias are multiplied by `gain[i % gain.len()]`.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        x: NodeId,
        cin: usize,
        cout: usize,
        group: usize,
        k: usize,
        gain: &[f32],
    ) -> NodeId {
        let per = cin / group * k * k;
        let mut w = self.uniform(cout * per, -0.5, 0.5);
        let mut bias = self.uniform(cout, -0.2, 0.2);
        for i in 0..cout {
            let gi = gain[i % gain.len()];
            w[i * per..(i + 1) * per].iter_mut().for_each(|v| *v *= gi);
            bias[i] *= gi;
        }
        let w = self.g.add_constant(
            format!("{name}.w"),
            Tensor::f32([cout, cin / group, k, k], w).unwrap(),
        );
        let b = self
            .g
            .add_constant(format!("{name}.b"), Tensor::f32([cout], bias).unwrap());
        let attrs = Conv {
            pads: [k / 2; 4],
            group,
            ..Conv::default()
        };
        self.g.add_node(name, Op::Conv(attrs), &[x, w, b]).unwrap()
    }

    fn act(&mut self, name: &str, x: NodeId, act: Activation) -> NodeId {
        self.g.add_node(name, Op::Activation(act), &[x]).unwrap()
    }
}

const GAIN: &[f32] = &[0.01, 0.1, 1.0, 10.0, 0.5, 3.0];
const RELU6: Activation = Activation::Clip {
    min: Some(0.0),
    max: Some(6.0),
};

/// `conv1 (4→6, channels imbalanced by GAIN) → act → conv2 (6→5)`, optimized (the
/// activation fused into conv1).
fn pair(act: Activation, depthwise: bool) -> Graph {
    let mut b = Builder::new("cle_pair");
    let c = if depthwise { 6 } else { 4 };
    let x = b.g.add_input("x", TensorType::f32([1, c, 6, 6]));
    let c1 = if depthwise {
        b.conv("conv1", x, 6, 6, 6, 3, GAIN)
    } else {
        b.conv("conv1", x, 4, 6, 1, 3, GAIN)
    };
    let a = b.act("act1", c1, act);
    let k2 = if depthwise { 1 } else { 3 };
    let c2 = b.conv("conv2", a, 6, 5, 1, k2, &[1.0]);
    b.g.add_output("y", c2).unwrap();
    optimize(&b.g, &OptOptions::default()).unwrap().0
}

/// `max |a − b| / max |a|` over every output.
fn max_rel_diff(g: &Graph, h: &Graph) -> f32 {
    let mut b = Builder::new("inputs");
    let inputs: Vec<Tensor> = g
        .inputs()
        .iter()
        .map(|&i| {
            let shape = g.node(i).ty.shape.clone();
            Tensor::f32(shape.clone(), b.uniform(shape.iter().product(), -2.0, 2.0)).unwrap()
        })
        .collect();
    let before = lutq_interp::run(g, &inputs).unwrap();
    let after = lutq_interp::run(h, &inputs).unwrap();
    let mut worst = 0.0f32;
    for (x, y) in before.iter().zip(&after) {
        worst = worst.max(rel(x.as_f32().unwrap(), y.as_f32().unwrap()));
    }
    worst
}

fn rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / scale)
        .fold(0.0f32, f32::max)
}

fn snapshot(name: &str, g: &Graph, report: &CleReport) {
    insta::with_settings!({snapshot_path => "../../../snapshots/opt", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, format!("{report}\n{}", g.dump()));
    });
}

fn first_activation(g: &Graph) -> Option<FusedActivation> {
    g.node_ids()
        .find(|&id| g.node(id).name == "conv1")
        .and_then(|id| match &g.node(id).op {
            Op::Conv(c) => c.activation,
            _ => None,
        })
}

#[test]
fn relu_pair_is_equalized_exactly() {
    let g = pair(Activation::Relu, false);
    let (h, report) = equalize(&g, &CleOptions::default()).unwrap();
    assert_eq!(report.pairs.len(), 1, "{report}");
    let p = &report.pairs[0];
    assert_eq!((p.first.as_str(), p.second.as_str()), ("conv1", "conv2"));
    assert!(report.converged, "{report}");
    assert!(p.imbalance_before > 500.0, "{report}");
    // One pair meets the other layer halfway: r1_i becomes sqrt(r1_i · r2_i), and conv2's
    // input ranges are balanced, so the imbalance drops to about its square root.
    assert!(
        p.imbalance_after < 1.2 * p.imbalance_before.sqrt(),
        "{report}"
    );
    let d = max_rel_diff(&g, &h);
    assert!(d <= 1e-5, "{d}");
    snapshot("cle_relu_pair", &h, &report);
}

#[test]
fn relu6_pair_is_skipped_by_default() {
    let g = pair(RELU6, false);
    assert_eq!(
        first_activation(&g),
        Some(FusedActivation::Clip { max: 6.0 })
    );
    let (h, report) = equalize(&g, &CleOptions::default()).unwrap();
    assert!(report.pairs.is_empty(), "{report}");
    assert_eq!(report.skipped.len(), 1, "{report}");
    assert_eq!(h.dump(), g.dump());
}

#[test]
fn relu6_pair_is_equalized_with_relu_when_asked() {
    let g = pair(RELU6, false);
    let options = CleOptions {
        relu6: Relu6Policy::ReplaceWithRelu,
        ..CleOptions::default()
    };
    let (h, report) = equalize(&g, &options).unwrap();
    assert_eq!(report.pairs.len(), 1, "{report}");
    assert!(report.pairs[0].relu6_replaced);
    let p = &report.pairs[0];
    assert!(
        p.imbalance_after < 1.2 * p.imbalance_before.sqrt(),
        "{report}"
    );
    assert_eq!(first_activation(&h), Some(FusedActivation::Relu));
    snapshot("cle_relu6_replaced", &h, &report);
}

#[test]
fn first_conv_with_two_readers_is_untouched() {
    let mut b = Builder::new("cle_shared");
    let x = b.g.add_input("x", TensorType::f32([1, 4, 6, 6]));
    let c1 = b.conv("conv1", x, 4, 6, 1, 3, GAIN);
    let c2 = b.conv("conv2", c1, 6, 5, 1, 3, &[1.0]);
    let m = b.g.add_node("pool", Op::GlobalAveragePool, &[c1]).unwrap();
    b.g.add_output("y", c2).unwrap();
    b.g.add_output("z", m).unwrap();
    let g = optimize(&b.g, &OptOptions::default()).unwrap().0;
    let (h, report) = equalize(&g, &CleOptions::default()).unwrap();
    assert!(report.pairs.is_empty(), "{report}");
    assert_eq!(report.skipped.len(), 1, "{report}");
    assert!(report.skipped[0].contains("other readers"), "{report}");
    assert_eq!(h.dump(), g.dump());
}

#[test]
fn depthwise_then_pointwise_is_equalized() {
    let g = pair(Activation::Relu, true);
    let (h, report) = equalize(&g, &CleOptions::default()).unwrap();
    assert_eq!(report.pairs.len(), 1, "{report}");
    assert!(report.pairs[0].first_is_depthwise());
    assert!(report.pairs[0].imbalance_before > 500.0, "{report}");
    let p = &report.pairs[0];
    assert!(
        p.imbalance_after < 1.2 * p.imbalance_before.sqrt(),
        "{report}"
    );
    let d = max_rel_diff(&g, &h);
    assert!(d <= 1e-5, "{d}");
    snapshot("cle_depthwise_pointwise", &h, &report);
}

#[test]
fn layer_imbalances_agree_with_the_cle_report() {
    let g = pair(Activation::Relu, true);
    let (h, report) = equalize(&g, &CleOptions::default()).unwrap();
    let p = &report.pairs[0];
    let (before, after) = (layer_imbalances(&g), layer_imbalances(&h));
    assert_eq!(before.len(), 2);
    assert!(before[0].depthwise && !before[1].depthwise);
    assert_eq!(before[0].name, p.first);
    assert_eq!(before[0].imbalance, p.imbalance_before);
    assert_eq!(after[0].imbalance, p.imbalance_after);
}

#[test]
fn grouped_and_depthwise_second_layers_are_equalized_exactly() {
    // Pointwise → depthwise (DFQ's expand side of the triplet) and conv → grouped conv:
    // the weights reading input channel i live in one group of the second conv.
    for (name, group) in [("cle_dw_second", 6), ("cle_grouped_second", 2)] {
        let mut b = Builder::new(name);
        let x = b.g.add_input("x", TensorType::f32([1, 4, 6, 6]));
        let c1 = b.conv("conv1", x, 4, 6, 1, 1, GAIN);
        let a = b.act("act1", c1, Activation::Relu);
        let c2 = b.conv("conv2", a, 6, 6, group, 3, &[1.0]);
        b.g.add_output("y", c2).unwrap();
        let g = optimize(&b.g, &OptOptions::default()).unwrap().0;
        let (h, report) = equalize(&g, &CleOptions::default()).unwrap();
        assert_eq!(report.pairs.len(), 1, "{name}: {report}");
        let p = &report.pairs[0];
        assert!(
            p.imbalance_after < p.imbalance_before / 10.0,
            "{name}: {report}"
        );
        let d = max_rel_diff(&g, &h);
        assert!(d <= 1e-5, "{name}: {d}");
    }
}

// ---- bundled models ---------------------------------------------------------------

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn import_opt(name: &str) -> (Graph, Graph) {
    let path = root().join(format!("models/{name}.onnx"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let g = lutq_onnx::import(&bytes, &lutq_onnx::ImportOptions::default()).unwrap();
    let opt = optimize(&g, &OptOptions::default()).unwrap().0;
    (g, opt)
}

fn samples(data: &str, n: usize) -> Tensor {
    let npy = NpyArray::from_npy_file(root().join(data)).unwrap();
    let n = n.min(npy.shape[0]);
    let per: usize = npy.shape[1..].iter().product();
    let mut shape = npy.shape.clone();
    shape[0] = n;
    Tensor::f32(shape, npy.data[..n * per].to_vec()).unwrap()
}

#[test]
fn fashion_resnet8_cle_is_exact() {
    let (g, opt) = import_opt("fashion_resnet8");
    let (cle, report) = equalize(&opt, &CleOptions::default()).unwrap();
    eprint!("{report}");
    assert!(!report.pairs.is_empty(), "{report}");
    assert!(report.converged, "{report}");
    let input = samples("data/fashion_mnist/test_x.npy", 64);
    let a = lutq_interp::run_batch(&g, &input, None).unwrap();
    let b = lutq_interp::run_batch(&cle, &input, None).unwrap();
    let d = rel(a.as_f32().unwrap(), b.as_f32().unwrap());
    eprintln!("fashion_resnet8: max |before - after| / max |before| = {d:e}");
    assert!(d <= 1e-4, "{d}");
}

fn median(mut v: Vec<f32>) -> f32 {
    v.sort_by(f32::total_cmp);
    if v.is_empty() {
        f32::NAN
    } else {
        v[v.len() / 2]
    }
}

fn top1(t: &Tensor) -> Vec<usize> {
    let classes = t.shape()[1];
    t.as_f32()
        .unwrap()
        .chunks(classes)
        .map(|row| {
            (0..classes)
                .max_by(|&i, &j| row[i].total_cmp(&row[j]))
                .unwrap()
        })
        .collect()
}

/// The measurements in `docs/opt.md` (CLE section):
/// `cargo test -p lutq-opt --test cle -- --ignored --nocapture cle_measure`.
#[test]
#[ignore = "slow: measures CLE with ReLU6 → ReLU on the MobileNetV2s for docs/opt.md"]
fn cle_measure_relu6_models() {
    for (name, data, n) in [
        ("fashion_mobilenetv2", "data/fashion_mnist/test_x.npy", 1000),
        ("mobilenet_v2", "data/photos/photos.npy", 11),
    ] {
        let (g, opt) = import_opt(name);
        let input = samples(data, n);
        let reference = lutq_interp::run_batch(&g, &input, None).unwrap();
        for relu6 in [Relu6Policy::Skip, Relu6Policy::ReplaceWithRelu] {
            let options = CleOptions {
                relu6,
                ..CleOptions::default()
            };
            let (cle, report) = equalize(&opt, &options).unwrap();
            let dw: Vec<_> = report
                .pairs
                .iter()
                .filter(|p| p.first_is_depthwise())
                .collect();
            let before: Vec<f32> = dw.iter().map(|p| p.imbalance_before).collect();
            let after: Vec<f32> = dw.iter().map(|p| p.imbalance_after).collect();
            let all_before: Vec<f32> = report.pairs.iter().map(|p| p.imbalance_before).collect();
            let all_after: Vec<f32> = report.pairs.iter().map(|p| p.imbalance_after).collect();
            let out = lutq_interp::run_batch(&cle, &input, None).unwrap();
            let (t0, t1) = (top1(&reference), top1(&out));
            let agree = t0.iter().zip(&t1).filter(|(a, b)| a == b).count();
            let d = rel(reference.as_f32().unwrap(), out.as_f32().unwrap());
            println!(
                "{name} {relu6:?}: {} pairs ({} depthwise first), {} sweeps, converged {}; \
                 depthwise imbalance median {:.1} -> {:.2}, max {:.1} -> {:.2}; \
                 all pairs median {:.1} -> {:.2}, max {:.1} -> {:.2}; \
                 top-1 agreement {agree}/{}, max |ref - cle| / max |ref| = {d:.3e}",
                report.pairs.len(),
                dw.len(),
                report.sweeps,
                report.converged,
                median(before.clone()),
                median(after.clone()),
                before.iter().copied().fold(f32::NAN, f32::max),
                after.iter().copied().fold(f32::NAN, f32::max),
                median(all_before.clone()),
                median(all_after.clone()),
                all_before.iter().copied().fold(f32::NAN, f32::max),
                all_after.iter().copied().fold(f32::NAN, f32::max),
                t0.len(),
            );
        }
    }
}
