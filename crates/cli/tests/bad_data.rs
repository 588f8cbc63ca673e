//! The CLI on bad calibration and input data: NaN is an error naming the file, sample and
//! element; constant data, too few samples and inputs outside the calibrated range are
//! warnings on standard error; nothing panics.

mod common;
use common::{lutq, root};
use std::path::{Path, PathBuf};

use lutq_dataio::NpyArray;

/// A fresh temporary directory for one test.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lutq-bad-data-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The first `n` Fashion-MNIST training images, `[n, 1, 28, 28]`.
fn fashion(n: usize) -> (Vec<usize>, Vec<f32>) {
    let a = NpyArray::from_npy_file(root().join("data/fashion_mnist/train_x.npy")).unwrap();
    let per = a.data.len() / a.shape[0];
    let mut shape = a.shape.clone();
    shape[0] = n;
    (shape, a.data[..n * per].to_vec())
}

fn write(path: &Path, shape: Vec<usize>, data: Vec<f32>) {
    NpyArray::new(shape, data)
        .unwrap()
        .write_npy_file(path)
        .unwrap();
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn nan_in_calibration_data_names_file_sample_and_element() {
    let dir = temp_dir("nan");
    let (shape, mut data) = fashion(8);
    // Sample 3, element 500 = row 17, column 24 of the one channel.
    data[3 * 784 + 500] = f32::NAN;
    let calib = dir.join("calib.npy");
    write(&calib, shape, data);
    let out = lutq(&[
        "dump",
        "models/fashion_resnet8.onnx",
        "--stage",
        "quant",
        "--calib",
        calib.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    let expected = format!(
        "error: calibration data '{}': sample 3, element 500 (channel 0, y 17, x 24) is NaN. Fix: ",
        calib.display()
    );
    // (`dump` prints what the rewrites did first.)
    assert!(err.lines().any(|l| l.starts_with(&expected)), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn constant_and_scarce_calibration_data_warn_before_the_results() {
    let dir = temp_dir("constant");
    let calib = dir.join("zeros.npy");
    write(&calib, vec![4, 1, 28, 28], vec![0.0; 4 * 784]);
    let out = lutq(&[
        "dump",
        "models/fashion_resnet8.onnx",
        "--stage",
        "quant",
        "--mode",
        "int8-pc",
        "--calib",
        calib.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: calibration data is constant (every value is 0, all zero)"),
        "{err}"
    );
    assert!(err.contains("warning: only 4 calibration samples"), "{err}");
    // Warnings come before the per-layer report.
    let warning = err.find("warning:").unwrap();
    assert!(warning < err.find("quant: int8-pc").unwrap(), "{err}");
    // The report has the constant-channel and capped-exponent columns.
    assert!(err.contains("const  capped"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inputs_far_outside_the_calibrated_range_warn_in_run_and_eval() {
    let dir = temp_dir("range");
    let (shape, data) = fashion(16);
    let calib = dir.join("calib.npy");
    write(&calib, shape.clone(), data.clone());
    // Inputs scaled by 4: Fashion-MNIST lies in [0, 1], these in [0, 4].
    let scaled = dir.join("scaled.npy");
    write(&scaled, shape, data.iter().map(|v| 4.0 * v).collect());
    let output = dir.join("out.npy");
    let out = lutq(&[
        "run",
        "models/fashion_resnet8.onnx",
        "--backend",
        "interp",
        "--mode",
        "int8-pot-channel",
        "--calib",
        calib.to_str().unwrap(),
        "--input",
        scaled.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let expected = format!("warning: input data '{}': ", scaled.display());
    assert!(err.contains(&expected), "{err}");
    assert!(err.contains("of its values clip when quantized"), "{err}");
    assert!(err.contains("× the calibrated"), "{err}");

    // The calibration data itself: no range warning.
    let out = lutq(&[
        "eval",
        "models/fashion_resnet8.onnx",
        "--modes",
        "int8-pot-channel,lut4-pot-channel",
        "--calib",
        calib.to_str().unwrap(),
        "--data",
        calib.to_str().unwrap(),
        "--json",
        "--per-layer",
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("input data"), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The per-layer rows of linear layers say how many channels were constant or capped.
    let layers = summary["results"][0]["layers"].as_array().unwrap();
    assert!(
        layers.iter().any(|l| l["op"] == "conv"
            && l["constant_channels"] == 0
            && l["capped_exponents"] == 0),
        "{summary}"
    );
    // Warnings are printed once, not once per mode.
    assert_eq!(err.matches("warning: only 16").count(), 0, "{err}");
    let dense = err.matches("input patches for a fan-in").count();
    let listed = summary["warnings"].as_array().map_or(0, |w| {
        w.iter()
            .filter(|w| w.as_str().unwrap().contains("input patches for a fan-in"))
            .count()
    });
    assert_eq!(dense, listed, "{err}");

    // eval on the scaled inputs warns once.
    let out = lutq(&[
        "eval",
        "models/fashion_resnet8.onnx",
        "--modes",
        "int8-pot-channel,lut4-pot-channel",
        "--calib",
        calib.to_str().unwrap(),
        "--data",
        scaled.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches(&expected).count(), 1, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
