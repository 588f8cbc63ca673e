//! The generated C on an emulated Cortex-M4 (QEMU mps2-an386): bit-exact with the golden
//! interpreter, and instruction counts that do not drift between runs.

use std::time::Duration;

use lutq_backend_c::mcu::run_on_cortex_m4;
use lutq_backend_c::quantize_samples;
use lutq_interp::int::IntInterpreter;
use lutq_quant::Mode;

/// The cross toolchain and QEMU must be installed (CI installs them); elsewhere their
/// absence skips the test with a note, unless `LUTQ_REQUIRE_TOOLS` is set.
fn tools_present() -> bool {
    let missing: Vec<&str> = ["arm-none-eabi-gcc", "qemu-system-arm"]
        .into_iter()
        .filter(|t| {
            !std::process::Command::new(t)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("LUTQ_REQUIRE_TOOLS").is_none(),
        "not installed: {missing:?} (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)"
    );
    eprintln!("note: {missing:?} not installed; skipping the Cortex-M4 test");
    false
}

#[test]
fn fashion_nets_run_bit_exact_on_a_cortex_m4() {
    if !tools_present() {
        return;
    }
    let calib = lutq_bundled::fashion_calib(32).unwrap();
    let test = lutq_bundled::fashion_test(4).unwrap();
    for model in lutq_bundled::FASHION_MODELS {
        let g = lutq_bundled::lowered(model, Mode::Lut4PotChannel, &calib).unwrap();
        let rows: Vec<Vec<&[f32]>> = lutq_bundled::rows(&test)
            .into_iter()
            .map(|r| vec![r])
            .collect();
        let quantized = quantize_samples(&g, &rows).unwrap();
        let dir = std::env::temp_dir().join(format!("lutq-mcu-{model}-{}", std::process::id()));
        let report = run_on_cortex_m4(
            &g,
            "net",
            &quantized,
            rows.len(),
            &dir,
            Duration::from_secs(300),
        )
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let interp = IntInterpreter::new(&g).unwrap();
        for (s, row) in rows.iter().enumerate() {
            let expected: Vec<Vec<i32>> = interp
                .run(row)
                .unwrap()
                .iter()
                .map(|d| d.to_i32())
                .collect();
            assert_eq!(report.outputs[s], expected, "{model}: sample {s}");
        }
        // Every sample runs nearly the same instructions: the kernels branch on data only
        // in the clamps, a few instructions per output.
        let (lo, hi) = (
            *report.instructions.iter().min().unwrap(),
            *report.instructions.iter().max().unwrap(),
        );
        assert!(
            lo > g.macs(),
            "{model}: fewer instructions ({lo}) than MACs"
        );
        assert!((hi - lo) as f64 <= 0.01 * lo as f64, "{model}: {lo}..{hi}");
        // The model's constants are in flash (.text/.rodata), nothing in writable data.
        assert_eq!(report.model.data, 0, "{model}: {:?}", report.model);
        assert_eq!(report.model.bss, 0, "{model}: {:?}", report.model);
        // Constants: what the emitter counted, plus at most alignment padding per array.
        let counted = report.summary.weight_bytes as u64;
        assert!(
            (counted..counted + 1024).contains(&report.weights.text),
            "{model}: {} vs {counted}",
            report.weights.text
        );
        eprintln!(
            "{model} on Cortex-M4: {:.2} instructions per MAC, model {:?}",
            lo as f64 / g.macs() as f64,
            report.model
        );
    }
}
