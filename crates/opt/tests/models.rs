//! The bundled models through `optimize`: snapshots of the optimized dumps, no
//! BatchNorm/Identity/Dropout/GlobalAveragePool left, and float-interpreter equivalence on real inputs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use lutq_dataio::NpyArray;
use lutq_ir::{Graph, Op, Tensor};
use lutq_opt::{OptOptions, optimize};

/// Every bundled model with its input data and how many samples to compare. Outputs
/// agree when `max |before − after| ≤ 1e-4 · max |before|` (relative to the output's
/// range: a per-element ratio is meaningless for logits near zero).
const MODELS: &[(&str, &str, usize)] = &[
    ("mobilenet_v2", "data/photos/photos.npy", 3),
    ("fashion_resnet8", "data/fashion_mnist/test_x.npy", 64),
    ("fashion_mobilenetv2", "data/fashion_mnist/test_x.npy", 64),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every bundled model: a missing file fails the tests rather than skipping them.
fn models() -> impl Iterator<Item = (&'static str, &'static str, usize)> {
    MODELS.iter().copied()
}

fn import(name: &str, batch: usize) -> Graph {
    let path = root().join(format!("models/{name}.onnx"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let options = lutq_onnx::ImportOptions {
        batch,
        ..Default::default()
    };
    lutq_onnx::import(&bytes, &options).unwrap()
}

fn count(graph: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    graph
        .node_ids()
        .filter(|&id| pred(&graph.node(id).op))
        .count()
}

#[test]
fn optimized_dumps_match_snapshots_and_drop_bn_identity_dropout() {
    for (name, ..) in models() {
        let graph = import(name, 1);
        let start = Instant::now();
        let (opt, report) = optimize(&graph, &OptOptions::default()).unwrap();
        eprintln!("{name}: {:?}\n{report}", start.elapsed());
        assert!(report.saturated, "{name}: {}", report.stop_reason);
        assert!(report.unfolded_batch_norms.is_empty(), "{name}: {report}");
        // No constant Mul/Div/Add/Sub in the bundled models: nothing to fold or keep.
        assert!(report.kept_affine.is_empty(), "{name}: {report}");
        for rule in [
            "affine-into-producer",
            "affine-into-consumer",
            "bn-fold-forward",
        ] {
            assert_eq!(report.rules[rule], 0, "{name}: {report}");
        }
        let left = count(&opt, |op| {
            matches!(op, Op::BatchNorm { .. } | Op::Identity | Op::Dropout)
        });
        assert_eq!(left, 0, "{name}: BatchNorm/Identity/Dropout left");
        assert!(report.rules["avgpool-to-sumpool"] > 0, "{name}: {report}");
        let pools = count(&opt, |op| matches!(op, Op::GlobalAveragePool));
        assert_eq!(pools, 0, "{name}: GlobalAveragePool left");
        assert_eq!(
            count(&opt, |op| matches!(op, Op::GlobalSumPool)),
            1,
            "{name}"
        );
        insta::with_settings!({snapshot_path => "../../../snapshots/opt", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(name, opt.dump());
        });
    }
}

#[test]
fn optimized_models_compute_the_same_on_real_inputs() {
    for (name, data, samples) in models() {
        let npy = NpyArray::from_npy_file(root().join(data)).unwrap();
        let per: usize = npy.shape[1..].iter().product();
        let mut shape = npy.shape.clone();
        shape[0] = samples;
        let input = Tensor::f32(shape, npy.data[..samples * per].to_vec()).unwrap();
        let graph = import(name, samples);
        let (opt, _) = optimize(&graph, &OptOptions::default()).unwrap();
        let before = lutq_interp::run(&graph, std::slice::from_ref(&input)).unwrap();
        let after = lutq_interp::run(&opt, &[input]).unwrap();
        let (a, b) = (before[0].as_f32().unwrap(), after[0].as_f32().unwrap());
        let scale = a.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let max_rel = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / scale)
            .fold(0.0f32, f32::max);
        let max_abs = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{name}: max |before - after| = {max_abs:e}, / max |before| = {max_rel:e}");
        assert!(max_rel <= 1e-4, "{name}: {max_rel}");
    }
}
