//! `cargo xtask data`: materialise the full (uncommitted) data sets under `data/full/`.
//!
//! * `data/full/fashion_mnist/{train_x,train_y,test_x,test_y}.npy`: the whole Fashion-MNIST
//!   set (60 000 / 10 000 images) from Debian's `dataset-fashion-mnist` IDX files, images as
//!   float32 `(N,1,28,28)` = pixel / 255, labels as int64 `(N,)`: the same encoding as the
//!   committed 1000-image slices in `data/fashion_mnist/`.
//! * `data/full/photos/{calib,eval}.npy`: the calibration and evaluation photo crops listed in
//!   `data/photos/crops.csv`, cut from `data/photos/sources/`, float32 `(N,3,224,224)`;
//!   `calib_mirrored.npy`: the calibration crops followed by their mirror images (256).
//!
//! `data/full` is git-ignored. See data/README.md.
//!
//! Usage: `cargo xtask data [--fashion-dir DIR] [--root DIR] [--skip-fashion] [--skip-photos]`
//! (`--fashion-dir` defaults to /usr/share/datasets/fashion-mnist, `--root` to the workspace).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use lutq_dataio::{
    Split, materialise_split_dir, read_idx_images_file, read_idx_labels_file, write_labels_npy_file,
};

/// Where Debian's `dataset-fashion-mnist` package installs the IDX files.
pub const DEBIAN_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

const USAGE: &str = "usage: data [--fashion-dir DIR] [--root DIR] [--skip-fashion] [--skip-photos]";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut fashion_dir = PathBuf::from(DEBIAN_FASHION_MNIST);
    let mut root = default_root();
    let (mut fashion, mut photos) = (true, true);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--fashion-dir" => fashion_dir = it.next().context(USAGE)?.into(),
            "--root" => root = it.next().context(USAGE)?.into(),
            "--skip-fashion" => fashion = false,
            "--skip-photos" => photos = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("data: unknown argument '{other}'\n{USAGE}"),
        }
    }
    if fashion {
        fashion_mnist(&fashion_dir, &root.join("data/full/fashion_mnist"))?;
    }
    if photos {
        photo_crops(&root.join("data/photos"), &root.join("data/full/photos"))?;
    }
    Ok(())
}

fn default_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn fashion_mnist(idx_dir: &Path, out: &Path) -> anyhow::Result<()> {
    if !idx_dir.is_dir() {
        bail!(
            "{} not found: install Debian's dataset-fashion-mnist (apt-get install \
             dataset-fashion-mnist) or pass --fashion-dir",
            idx_dir.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (split, prefix) in [("train", "train"), ("test", "t10k")] {
        let find = |kind: &str| -> anyhow::Result<PathBuf> {
            let base = idx_dir.join(format!("{prefix}-{kind}"));
            let gz = base.with_file_name(format!("{prefix}-{kind}.gz"));
            [gz, base.clone()]
                .into_iter()
                .find(|p| p.is_file())
                .with_context(|| format!("{}[.gz] not found", base.display()))
        };
        let images_path = find("images-idx3-ubyte")?;
        let labels_path = find("labels-idx1-ubyte")?;
        let images = read_idx_images_file(&images_path)
            .with_context(|| format!("reading {}", images_path.display()))?;
        let labels = read_idx_labels_file(&labels_path)
            .with_context(|| format!("reading {}", labels_path.display()))?;
        if images.count != labels.len() {
            bail!(
                "{} holds {} images but {} holds {} labels",
                images_path.display(),
                images.count,
                labels_path.display(),
                labels.len()
            );
        }
        if let Some(bad) = labels.iter().find(|&&l| l > 9) {
            bail!("{}: label {bad} is outside 0..=9", labels_path.display());
        }
        let x = images.to_unit_f32();
        let x_path = out.join(format!("{split}_x.npy"));
        x.write_npy_file(&x_path)
            .with_context(|| format!("writing {}", x_path.display()))?;
        let y_path = out.join(format!("{split}_y.npy"));
        let y: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
        write_labels_npy_file(&y_path, &y)
            .with_context(|| format!("writing {}", y_path.display()))?;
        println!(
            "{}: {:?} float32, {} labels",
            x_path.display(),
            x.shape,
            y.len()
        );
    }
    Ok(())
}

fn photo_crops(photos_dir: &Path, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for split in [Split::Calib, Split::Eval] {
        let batch = materialise_split_dir(photos_dir, split).with_context(|| {
            format!(
                "materialising the {} crops of {}",
                split.as_str(),
                photos_dir.display()
            )
        })?;
        let path = out.join(format!("{}.npy", split.as_str()));
        batch
            .write_npy_file(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("{}: {:?} float32", path.display(), batch.shape);
        if split == Split::Calib {
            let mirrored = with_mirror_images(&batch)?;
            let path = out.join(CALIB_MIRRORED);
            mirrored
                .write_npy_file(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("{}: {:?} float32", path.display(), mirrored.shape);
        }
    }
    Ok(())
}

/// The calibration crops followed by their left-right mirror images, in
/// `data/full/photos/`: the 256 calibration images of `cargo xtask accuracy` and
/// `cargo xtask bench-quant`. No mirrored crop is an evaluation crop (the recipe of a
/// mirror is its crop's with `flip` inverted; checked when this was introduced: none of
/// the 128 is in the evaluation split).
pub const CALIB_MIRRORED: &str = "calib_mirrored.npy";

/// `batch` (`N, C, H, W`) followed by its images mirrored left-right.
fn with_mirror_images(batch: &lutq_dataio::NpyArray) -> anyhow::Result<lutq_dataio::NpyArray> {
    let [n, c, h, w] = batch.shape[..] else {
        bail!("expected NCHW crops, got shape {:?}", batch.shape);
    };
    let mut data = batch.data.clone();
    for row in batch.data.chunks(w) {
        data.extend(row.iter().rev());
    }
    Ok(lutq_dataio::NpyArray {
        shape: vec![2 * n, c, h, w],
        data,
    })
}
