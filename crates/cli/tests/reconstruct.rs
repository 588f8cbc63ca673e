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

/// `lutq compile MODEL` in lut4-pot-channel on 32 calibration images with `flags`; its
/// standard error, after asserting success.
fn compile_reconstructed(model: &str, flags: &[&str]) -> String {
    let dir = std::env::temp_dir().join(format!(
        "lutq-reconstruct-{}-{}",
        flags[0].trim_start_matches('-'),
        std::process::id()
    ));
    let mut args = vec![
        "compile",
        model,
        "--mode",
        "lut4-pot-channel",
        "--calib",
        "data/fashion_mnist/train_x.npy",
        "--calib-limit",
        "32",
        "-o",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    let out = lutq(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
    stderr
}

#[test]
fn compile_with_reconstruct_reports_the_layers_it_kept() {
    let stderr = compile_reconstructed(
        "models/fashion_resnet8.onnx",
        &["--reconstruct", "--reconstruct-iters", "100"],
    );
    // The nine convs have enough patches; the classifier (24 training rows for 64
    // inputs) is skipped.
    assert!(
        stderr.contains("reconstruct (lut4-pot-channel): ") && stderr.contains(" of 9 layers"),
        "{stderr}"
    );
}

#[test]
fn compile_with_reconstruct_blocks_trains_mobilenet_blocks_as_units() {
    let stderr = compile_reconstructed(
        "models/fashion_mobilenetv2.onnx",
        &["--reconstruct-blocks", "--reconstruct-iters", "50"],
    );
    // Seven conv chains, then the head conv alone (the classifier has too few rows).
    assert!(
        stderr.contains(" of 8 units (7 blocks + 1 layer) improved"),
        "{stderr}"
    );
}
