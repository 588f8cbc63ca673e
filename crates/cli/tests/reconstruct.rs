//! `--reconstruct` end to end: every quantizing command offers it with its measured
//! cost in `--help`, and `lutq compile` reconstructs ResNet-8 and says what it did.

mod common;
use common::lutq;

#[test]
fn every_quantizing_command_offers_reconstruct_with_its_cost() {
    for command in ["run", "eval", "compile", "dump"] {
        let out = lutq(&[command, "--help"]);
        assert!(out.status.success(), "{command} --help");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.lines().any(|l| l.trim() == "--reconstruct"),
            "{command}: {help}"
        );
        assert!(help.contains("--reconstruct-iters"), "{command}: {help}");
        assert!(help.contains("--reconstruct-blocks"), "{command}: {help}");
        assert!(
            help.contains("default fit's time on MobileNetV2"),
            "{command}: {help}"
        );
    }
}

#[test]
fn compile_with_reconstruct_reports_the_layers_it_kept() {
    let dir = std::env::temp_dir().join(format!("lutq-reconstruct-{}", std::process::id()));
    let out = lutq(&[
        "compile",
        "models/fashion_resnet8.onnx",
        "--mode",
        "lut4-pot-channel",
        "--calib",
        "data/fashion_mnist/train_x.npy",
        "--calib-limit",
        "32",
        "--reconstruct",
        "--reconstruct-iters",
        "100",
        "-o",
        dir.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The nine convs have enough patches; the classifier (24 training rows for 64
    // inputs) is skipped.
    assert!(
        stderr.contains("reconstruct (lut4-pot-channel): ") && stderr.contains(" of 9 layers"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compile_with_reconstruct_blocks_trains_mobilenet_blocks_as_units() {
    let dir = std::env::temp_dir().join(format!("lutq-reconstruct-blocks-{}", std::process::id()));
    let out = lutq(&[
        "compile",
        "models/fashion_mobilenetv2.onnx",
        "--mode",
        "lut4-pot-channel",
        "--calib",
        "data/fashion_mnist/train_x.npy",
        "--calib-limit",
        "32",
        "--reconstruct-blocks",
        "--reconstruct-iters",
        "50",
        "-o",
        dir.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Seven conv chains, then the head conv alone (the classifier has too few rows).
    assert!(
        stderr.contains(" of 8 units (7 blocks + 1 layer) improved"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
