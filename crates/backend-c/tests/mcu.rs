//! The generated C on an emulated Cortex-M4 (QEMU mps2-an386): bit-exact with the golden
//! interpreter, and instruction counts that do not drift between runs.

use std::time::Duration;

use lutq_backend_c::EmitOptions;
use lutq_backend_c::mcu::{Core, run_on_core_with};
use lutq_backend_c::quantize_samples;
use lutq_interp::int::IntInterpreter;
use lutq_ir::int::Rounding;
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
    let plain = lutq_quant::QuantOptions::new(Mode::Lut4PotChannel);
    // Table groups: indexed tables; each convolution's pair tables (one per distinct
    // LUT) where they fit the scratch limit, else pairs decoded in the loop.
    let grouped = lutq_quant::QuantOptions {
        lut_tables: Some(4),
        ..plain.clone()
    };
    // A table per channel: more distinct tables than pair tables, so every 4-bit
    // convolution decodes its pairs in the loop.
    let per_channel = lutq_quant::QuantOptions {
        lut_per_channel: true,
        ..plain.clone()
    };
    // The same with room in the scratch: layers of at most 64 channels whose MACs pay
    // for building a pair table per channel build them (`pair_tables_pay`).
    const ROOMY_SCRATCH: usize = 128 * 1024;
    let builds = lutq_bundled::FASHION_MODELS
        .iter()
        .map(|&m| (m, "default", &plain, None))
        .chain([
            ("fashion_resnet8", "4 tables", &grouped, None),
            (
                "fashion_mobilenetv2",
                "a table per channel",
                &per_channel,
                None,
            ),
            (
                "fashion_mobilenetv2",
                "a table per channel, roomy scratch",
                &per_channel,
                Some(ROOMY_SCRATCH),
            ),
        ]);
    let mut per_mac = std::collections::HashMap::new();
    for (model, variant, options, scratch_limit) in builds {
        let g = lutq_bundled::lowered_with(model, options, &calib).unwrap();
        let rows: Vec<Vec<&[f32]>> = lutq_bundled::rows(&test)
            .into_iter()
            .map(|r| vec![r])
            .collect();
        let quantized = quantize_samples(&g, &rows).unwrap();
        let dir = std::env::temp_dir().join(format!("lutq-mcu-{model}-{}", std::process::id()));
        let emit = EmitOptions {
            scratch_limit,
            ..EmitOptions::new("net")
        };
        let report = run_on_core_with(
            &g,
            &emit,
            &quantized,
            rows.len(),
            &dir,
            Duration::from_secs(300),
            Core::CortexM4,
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
            assert_eq!(
                report.outputs[s], expected,
                "{model} ({variant}): sample {s}"
            );
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
            "{model} ({variant}) on Cortex-M4: {:.2} instructions per MAC, model {:?}",
            lo as f64 / g.macs() as f64,
            report.model
        );
        per_mac.insert((model, variant), lo as f64 / g.macs() as f64);
    }
    // Decoding in the loop costs a code byte, two table loads and a pack per weight
    // pair, shared by the lanes: far from the plain kernel's 2–3× the instructions.
    let (tables, default) = (
        per_mac[&("fashion_mobilenetv2", "a table per channel")],
        per_mac[&("fashion_mobilenetv2", "default")],
    );
    assert!(
        tables < 1.3 * default,
        "a table per channel: {tables:.2} instructions per MAC against {default:.2}"
    );
    // Where the scratch has room, the pair tables that pay are built, and they do pay.
    let roomy = per_mac[&("fashion_mobilenetv2", "a table per channel, roomy scratch")];
    assert!(
        roomy < tables,
        "a table per channel with pair tables: {roomy:.2} instructions per MAC against \
         {tables:.2} decoding every pair in the loop"
    );
}

/// Whether the firmware in `dir` contains an `SMLAD` (the DSP path was compiled in).
fn has_smlad(dir: &std::path::Path) -> bool {
    let out = std::process::Command::new("arm-none-eabi-objdump")
        .arg("-d")
        .arg(dir.join("firmware.elf"))
        .output()
        .expect("arm-none-eabi-objdump (binutils-arm-none-eabi) runs");
    assert!(out.status.success(), "objdump failed");
    String::from_utf8_lossy(&out.stdout).contains("smlad")
}

/// The DSP path (Cortex-M4: SMLAD, SXTB16) and the portable path (Cortex-M3, no DSP
/// extension) both compute the golden interpreter's integers, on a net with every kind
/// of convolution the dual-MAC kernels handle (padded 3×3, stride 2, pointwise,
/// depthwise) and its dense layer, with 4-bit and with int8 weights.
#[test]
fn dsp_path_on_cortex_m4_and_portable_path_on_cortex_m3_are_bit_exact() {
    use lutq_backend_c::mcu::{Core, run_on_core};
    if !tools_present() {
        return;
    }
    let calib = lutq_bundled::fashion_calib(32).unwrap();
    let test = lutq_bundled::fashion_test(2).unwrap();
    let rows: Vec<Vec<&[f32]>> = lutq_bundled::rows(&test)
        .into_iter()
        .map(|r| vec![r])
        .collect();
    // The contract's rounding, and ties to even once (the DSP stores' fallback path).
    for (mode, rounding) in [
        (Mode::Lut4PotChannel, Rounding::HalfUp),
        (Mode::Int8PotChannel, Rounding::HalfUp),
        (Mode::Lut4PotChannel, Rounding::HalfEven),
    ] {
        let mut g = lutq_bundled::lowered("fashion_mobilenetv2", mode, &calib).unwrap();
        g.rounding = rounding;
        let interp = IntInterpreter::new(&g).unwrap();
        let expected: Vec<Vec<Vec<i32>>> = rows
            .iter()
            .map(|r| interp.run(r).unwrap().iter().map(|d| d.to_i32()).collect())
            .collect();
        let quantized = quantize_samples(&g, &rows).unwrap();
        let mut instructions = Vec::new();
        for core in [Core::CortexM4, Core::CortexM3] {
            let dir = std::env::temp_dir().join(format!(
                "lutq-mcu-paths-{mode}-{rounding:?}-{core:?}-{}",
                std::process::id()
            ));
            let report = run_on_core(
                &g,
                "net",
                &quantized,
                rows.len(),
                &dir,
                Duration::from_secs(300),
                core,
            )
            .unwrap();
            let dsp = has_smlad(&dir);
            let _ = std::fs::remove_dir_all(&dir);
            assert_eq!(report.outputs, expected, "{mode} {rounding:?} on {core:?}");
            assert_eq!(
                dsp,
                core == Core::CortexM4,
                "{mode} on {core:?}: SMLAD present"
            );
            instructions.push(report.instructions[0]);
        }
        eprintln!(
            "fashion_mobilenetv2 {mode} {rounding:?}: {:.2} (M4, DSP) / {:.2} (M3, portable) instructions per MAC",
            instructions[0] as f64 / g.macs() as f64,
            instructions[1] as f64 / g.macs() as f64
        );
    }
}

/// The per-layer profile (`-DLUTQ_PROFILE`): still bit-exact, every layer with a kernel
/// gets instructions, convolutions at least one per two MACs (one SMLAD), and the
/// layers add up to the profiled inference.
#[test]
fn per_layer_profile_accounts_for_the_whole_inference() {
    use lutq_backend_c::mcu::{Core, profile_on_core};
    if !tools_present() {
        return;
    }
    let calib = lutq_bundled::fashion_calib(32).unwrap();
    let test = lutq_bundled::fashion_test(1).unwrap();
    let rows: Vec<Vec<&[f32]>> = lutq_bundled::rows(&test)
        .into_iter()
        .map(|r| vec![r])
        .collect();
    let g = lutq_bundled::lowered("fashion_mobilenetv2", Mode::Lut4PotChannel, &calib).unwrap();
    let quantized = quantize_samples(&g, &rows).unwrap();
    let dir = std::env::temp_dir().join(format!("lutq-mcu-profile-{}", std::process::id()));
    let report = profile_on_core(
        &g,
        "net",
        &quantized,
        1,
        &dir,
        Duration::from_secs(300),
        Core::CortexM4,
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let expected: Vec<Vec<i32>> = IntInterpreter::new(&g)
        .unwrap()
        .run(&rows[0])
        .unwrap()
        .iter()
        .map(|d| d.to_i32())
        .collect();
    assert_eq!(report.outputs[0], expected);
    assert_eq!(report.per_node.len(), g.nodes.len());
    for (i, node) in g.nodes.iter().enumerate() {
        let has_kernel = !matches!(
            node.op,
            lutq_ir::int::IntOp::QuantizeInput { .. } | lutq_ir::int::IntOp::Reshape
        );
        if let lutq_ir::int::IntOp::Linear(l) = &node.op {
            let macs = (node.ty.num_elements() * l.weights.row_len()) as u64;
            assert!(
                2 * report.per_node[i] >= macs,
                "layer {i}: {} instructions for {macs} MACs",
                report.per_node[i]
            );
        }
        assert_eq!(
            report.per_node[i] > 0,
            has_kernel,
            "layer {i} ({})",
            node.op.name()
        );
    }
    // The marks cover everything but the output copy and the call itself (and the
    // first mark's interval starts a counter read before the total's).
    let sum: u64 = report.per_node.iter().sum();
    let total = report.instructions[0];
    assert!(sum.abs_diff(total) < 2000, "{sum} of {total}");
}
