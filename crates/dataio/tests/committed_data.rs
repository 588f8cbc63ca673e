//! Checks of the data files committed under `data/` (see data/README.md).

use std::collections::HashSet;
use std::path::PathBuf;

use lutq_dataio::{
    CROP_SIZE, NpyArray, Split, centre_crops_dir, materialise_split_dir, parse_crops_csv,
    parse_names, read_idx_images_file, read_idx_labels_file, read_labels_file,
};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn centre_crops_of_the_256_sources_reproduce_photos_npy() {
    let dir = data_dir().join("photos");
    let photos = NpyArray::from_npy_file(dir.join("photos.npy")).unwrap();
    let names = parse_names(&std::fs::read_to_string(dir.join("names.txt")).unwrap());
    assert_eq!(names.len(), 11);
    assert_eq!(photos.shape, vec![names.len(), 3, CROP_SIZE, CROP_SIZE]);
    let crops = centre_crops_dir(&dir).unwrap();
    assert_eq!(crops.shape, photos.shape);
    let d = max_abs_diff(&crops.data, &photos.data);
    assert!(d <= 1e-6, "centre crops differ from photos.npy by {d}");
}

#[test]
fn calibration_and_evaluation_crops_are_disjoint_and_materialise() {
    let dir = data_dir().join("photos");
    let specs = parse_crops_csv(&std::fs::read_to_string(dir.join("crops.csv")).unwrap()).unwrap();
    let key = |s: &lutq_dataio::CropSpec| (s.photo.clone(), s.scale, s.x, s.y, s.flip);
    let calib: HashSet<_> = specs
        .iter()
        .filter(|s| s.split == Split::Calib)
        .map(key)
        .collect();
    let eval: HashSet<_> = specs
        .iter()
        .filter(|s| s.split == Split::Eval)
        .map(key)
        .collect();
    assert!(calib.len() + eval.len() >= 200);
    assert!(calib.is_disjoint(&eval));
    assert_eq!(calib.len() + eval.len(), specs.len(), "duplicate crop rows");

    for (split, n) in [(Split::Calib, calib.len()), (Split::Eval, eval.len())] {
        let batch = materialise_split_dir(&dir, split).unwrap();
        assert_eq!(batch.shape, vec![n, 3, CROP_SIZE, CROP_SIZE]);
        // Normalised bytes lie in [(0 - 0.485) / 0.229, (1 - 0.406) / 0.225].
        assert!(
            batch
                .data
                .iter()
                .all(|v| v.is_finite() && (-2.2..=2.7).contains(v))
        );
        // Different crops give different tensors.
        assert_ne!(batch.outer(0), batch.outer(1));
    }
}

#[test]
fn onnxruntime_reference_logits_have_the_expected_shape() {
    let logits =
        NpyArray::from_npy_file(data_dir().join("photos/mobilenet_v2_onnxruntime.npy")).unwrap();
    assert_eq!(logits.shape, vec![11, 1000]);
    // Chelsea (index 1) is a cat: ImageNet classes 281..=285.
    let row = logits.outer(1).unwrap();
    let top = (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
        .unwrap();
    assert!((281..=285).contains(&top), "chelsea top-1 is class {top}");
}

#[test]
fn fashion_mnist_slices_have_the_documented_shapes() {
    let dir = data_dir().join("fashion_mnist");
    for split in ["train", "test"] {
        let x = NpyArray::from_npy_file(dir.join(format!("{split}_x.npy"))).unwrap();
        let y = read_labels_file(dir.join(format!("{split}_y.npy"))).unwrap();
        assert_eq!(x.shape, vec![1000, 1, 28, 28]);
        assert_eq!(y.len(), 1000);
        assert!(y.iter().all(|l| (0..=9).contains(l)));
        assert_eq!(
            y.iter().collect::<HashSet<_>>().len(),
            10,
            "{split}: not all classes present"
        );
        assert!(x.data.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(x.data.contains(&1.0));
    }
}

/// When Debian's dataset-fashion-mnist is installed, the committed slices must equal the first
/// 1000 images of its IDX files.
#[test]
fn fashion_mnist_slices_match_the_debian_idx_files() {
    let idx = PathBuf::from("/usr/share/datasets/fashion-mnist");
    if !idx.exists() {
        eprintln!(
            "skipped: {} not installed (apt-get install dataset-fashion-mnist)",
            idx.display()
        );
        return;
    }
    let dir = data_dir().join("fashion_mnist");
    for (split, prefix) in [("train", "train"), ("test", "t10k")] {
        let images =
            read_idx_images_file(idx.join(format!("{prefix}-images-idx3-ubyte.gz"))).unwrap();
        let labels =
            read_idx_labels_file(idx.join(format!("{prefix}-labels-idx1-ubyte.gz"))).unwrap();
        assert_eq!((images.rows, images.cols), (28, 28));
        assert_eq!(images.count, labels.len());
        let full = images.to_unit_f32();
        let x = NpyArray::from_npy_file(dir.join(format!("{split}_x.npy"))).unwrap();
        let y = read_labels_file(dir.join(format!("{split}_y.npy"))).unwrap();
        assert_eq!(&full.data[..x.data.len()], &x.data[..]);
        assert!(y.iter().zip(&labels).all(|(&a, &b)| a == i64::from(b)));
    }
}
