//! The bundled models, quantized in every weight mode, give bit for bit the
//! interpreter's outputs on all the bundled data.

use std::time::Instant;

use lutq_backend_jit::{CompileOptions, compile_with};
use lutq_interp::int::IntInterpreter;
use lutq_ir::Tensor;
use lutq_ir::int::IntGraph;
use lutq_quant::Mode;

/// Runs every sample of `data` through the interpreter and the JIT and compares.
fn check(int_graph: &IntGraph, data: &Tensor, what: &str) {
    check_with(int_graph, data, what, &CompileOptions::default());
}

fn check_with(int_graph: &IntGraph, data: &Tensor, what: &str, options: &CompileOptions) {
    let interp = IntInterpreter::new(int_graph).unwrap();
    let mut jit = compile_with(int_graph, options).unwrap();
    for (i, sample) in lutq_bundled::rows(data).into_iter().enumerate() {
        let expected = interp.run(&[sample]).unwrap();
        let got = jit.run(&[sample]).unwrap();
        assert!(got == expected, "{what}: sample {i} differs");
    }
}

fn fashion(name: &str) {
    let calib = lutq_bundled::fashion_calib(32).unwrap();
    // The whole committed test slice (1,000 images).
    let test = lutq_bundled::fashion_test(usize::MAX).unwrap();
    for mode in [
        Mode::Lut4PotChannel,
        Mode::Lut4PotLayer,
        Mode::Int4PotChannel,
        Mode::Int8PotChannel,
        Mode::Int8Pc,
    ] {
        let t = Instant::now();
        let int_graph = lutq_bundled::lowered(name, mode, &calib).unwrap();
        let tq = t.elapsed();
        let t = Instant::now();
        check(&int_graph, &test, &format!("{name} {mode}"));
        if mode == Mode::Lut4PotChannel {
            // The scalar kernels too (slower: fewer samples).
            let few = lutq_bundled::fashion_test(10).unwrap();
            let scalar = CompileOptions {
                vectorize: false,
                ..CompileOptions::default()
            };
            check_with(&int_graph, &few, &format!("{name} {mode} scalar"), &scalar);
            // The other dot-product kernel (pmaddwd pairs or VNNI quads).
            let other = CompileOptions {
                vnni: !CompileOptions::default().vnni,
                ..CompileOptions::default()
            };
            let some = lutq_bundled::fashion_test(100).unwrap();
            let what = format!("{name} {mode} vnni={}", other.vnni);
            check_with(&int_graph, &some, &what, &other);
        }
        eprintln!(
            "{name} {mode}: quantized in {tq:.2?}, {} samples compared in {:.2?}",
            test.shape()[0],
            t.elapsed()
        );
    }
}

/// A program whose weights, tables and biases `--reconstruct` learned (at least one layer
/// kept) runs bit for bit like the interpreter.
#[test]
fn reconstructed_program_is_bit_exact() {
    let calib = lutq_bundled::fashion_calib(32).unwrap();
    let options = lutq_quant::QuantOptions {
        reconstruct: Some(lutq_quant::reconstruct::ReconstructOptions {
            iterations: 150,
            ..Default::default()
        }),
        ..lutq_quant::QuantOptions::new(Mode::Lut4PotChannel)
    };
    let int_graph = lutq_bundled::lowered_with("fashion_resnet8", &options, &calib).unwrap();
    let fast = lutq_bundled::lowered("fashion_resnet8", Mode::Lut4PotChannel, &calib).unwrap();
    assert_ne!(int_graph, fast, "no layer kept its reconstruction");
    let test = lutq_bundled::fashion_test(usize::MAX).unwrap();
    check(
        &int_graph,
        &test,
        "fashion_resnet8 lut4-pot-channel --reconstruct",
    );
}

/// The same for block reconstruction (`ReconstructOptions::blocks`: MobileNetV2's
/// inverted-residual chains trained as units, at least one kept).
#[test]
fn block_reconstructed_program_is_bit_exact() {
    let calib = lutq_bundled::fashion_calib(32).unwrap();
    let options = lutq_quant::QuantOptions {
        reconstruct: Some(lutq_quant::reconstruct::ReconstructOptions {
            iterations: 100,
            blocks: true,
            ..Default::default()
        }),
        ..lutq_quant::QuantOptions::new(Mode::Lut4PotChannel)
    };
    let int_graph = lutq_bundled::lowered_with("fashion_mobilenetv2", &options, &calib).unwrap();
    let fast = lutq_bundled::lowered("fashion_mobilenetv2", Mode::Lut4PotChannel, &calib).unwrap();
    assert_ne!(int_graph, fast, "no block kept its reconstruction");
    let test = lutq_bundled::fashion_test(2000).unwrap();
    check(
        &int_graph,
        &test,
        "fashion_mobilenetv2 lut4-pot-channel --reconstruct-blocks",
    );
}

#[test]
fn fashion_resnet8_is_bit_exact() {
    fashion("fashion_resnet8");
}

#[test]
fn fashion_mobilenetv2_is_bit_exact() {
    fashion("fashion_mobilenetv2");
}

#[test]
fn mobilenet_v2_is_bit_exact() {
    let calib = lutq_bundled::photos(8).unwrap();
    let photos = lutq_bundled::photos(usize::MAX).unwrap();
    let t = Instant::now();
    let int_graph = lutq_bundled::lowered("mobilenet_v2", Mode::Lut4PotChannel, &calib).unwrap();
    let tq = t.elapsed();
    let t = Instant::now();
    check(&int_graph, &photos, "mobilenet_v2 lut4-pot-channel");
    eprintln!(
        "mobilenet_v2: quantized in {tq:.2?}, {} photos compared in {:.2?}",
        photos.shape()[0],
        t.elapsed()
    );
}
