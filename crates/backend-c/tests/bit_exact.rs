//! The generated C, built with the host compiler, against the golden interpreter: every
//! output integer of every sample of the committed data, for every quantization mode.

use lutq_ir::int::Rounding;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use lutq_backend_c::{HostProgram, decode_outputs, quantize_samples};
use lutq_interp::int::IntInterpreter;
use lutq_ir::Tensor;
use lutq_ir::int::{IntGraph, IntOp, QWeights};
use lutq_quant::Mode;

/// The lowered integer program of a bundled model, quantized on `calib` — once per
/// (model, mode, calibration size) for the whole test binary: several tests build the
/// same program with different compilers and flags.
fn quantized(model: &str, mode: Mode, calib: &Tensor) -> Arc<IntGraph> {
    type Cache = Mutex<HashMap<(String, Mode, usize), Arc<OnceLock<Arc<IntGraph>>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (model.to_string(), mode, calib.shape()[0]);
    let cell = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(key)
        .or_default()
        .clone();
    cell.get_or_init(|| Arc::new(lutq_bundled::lowered(model, mode, calib).unwrap()))
        .clone()
}

/// Runs `data` through the interpreter and through the C program built with `compiler`
/// and `flags`; asserts that every output integer agrees and returns how many samples
/// were compared.
fn assert_bit_exact(
    g: &IntGraph,
    data: &Tensor,
    compiler: &str,
    flags: &[&str],
    what: &str,
) -> usize {
    let options = lutq_backend_c::EmitOptions::new("model");
    assert_bit_exact_with(g, data, &options, compiler, flags, what)
}

/// [`assert_bit_exact`] with the emitter's `options`.
fn assert_bit_exact_with(
    g: &IntGraph,
    data: &Tensor,
    options: &lutq_backend_c::EmitOptions,
    compiler: &str,
    flags: &[&str],
    what: &str,
) -> usize {
    let program = HostProgram::build_with(g, options, compiler, flags, None)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let n = data.shape()[0];
    let rows: Vec<Vec<&[f32]>> = lutq_bundled::rows(data)
        .into_iter()
        .map(|r| vec![r])
        .collect();
    let bytes = quantize_samples(g, &rows).unwrap();
    let interp = IntInterpreter::new(g).unwrap();
    // The C program and the interpreter run side by side (two processes' worth of work).
    let (c_out, expected) = std::thread::scope(|scope| {
        let c = scope.spawn(|| decode_outputs(g, &program.run(&bytes).unwrap()).unwrap());
        let expected: Vec<Vec<Vec<i32>>> = rows
            .iter()
            .map(|row| {
                interp
                    .run(row)
                    .unwrap()
                    .iter()
                    .map(|d| d.to_i32())
                    .collect()
            })
            .collect();
        (c.join().unwrap(), expected)
    });
    assert_eq!(c_out.len(), n, "{what}: sample count");
    for (s, (c, e)) in c_out.iter().zip(&expected).enumerate() {
        assert_eq!(
            c, e,
            "{what}: sample {s} differs from the golden interpreter"
        );
    }
    n
}

/// A compiler that must be installed (CI installs it); elsewhere a missing one skips the
/// check with a note, unless `LUTQ_REQUIRE_TOOLS` is set.
fn optional_tool(name: &str) -> bool {
    let found = std::process::Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("LUTQ_REQUIRE_TOOLS").is_none(),
            "{name} is not installed (apt-get install {name})"
        );
        eprintln!("note: {name} is not installed; skipping its check (apt-get install {name})");
    }
    found
}

/// The modes the backend must support (the list) and the baselines with
/// fixed-point multipliers.
const REQUIRED: [Mode; 4] = [
    Mode::Lut4PotLayer,
    Mode::Lut4PotChannel,
    Mode::Int4PotChannel,
    Mode::Int8PotChannel,
];
const OTHERS: [Mode; 3] = [Mode::Int4PotLayer, Mode::Int8Pc, Mode::Int4Pc];

const FASHION: [&str; 2] = lutq_bundled::FASHION_MODELS;

fn fashion_calib() -> Tensor {
    lutq_bundled::fashion_calib(32).unwrap()
}

fn samples(rel: &str, skip: usize, limit: usize) -> Tensor {
    lutq_bundled::samples(rel, skip, limit).unwrap()
}

#[test]
fn fashion_nets_are_bit_exact_on_the_whole_slice() {
    let calib = fashion_calib();
    let test = samples("data/fashion_mnist/test_x.npy", 0, 1000);
    for model in FASHION {
        for mode in REQUIRED {
            let g = quantized(model, mode, &calib);
            let what = format!("{model} {mode}");
            let n = assert_bit_exact(&g, &test, "cc", &["-O3", "-march=native"], &what);
            assert_eq!(n, 1000);
        }
    }
}

/// A program whose weights, tables and biases `--reconstruct` learned (at least one layer
/// kept) compiles to C that agrees bit for bit.
#[test]
fn reconstructed_program_is_bit_exact() {
    let calib = fashion_calib();
    let options = lutq_quant::QuantOptions {
        reconstruct: Some(lutq_quant::reconstruct::ReconstructOptions {
            iterations: 150,
            ..Default::default()
        }),
        ..lutq_quant::QuantOptions::new(Mode::Lut4PotChannel)
    };
    let g = lutq_bundled::lowered_with("fashion_resnet8", &options, &calib).unwrap();
    let fast = quantized("fashion_resnet8", Mode::Lut4PotChannel, &calib);
    assert_ne!(&g, fast.as_ref(), "no layer kept its reconstruction");
    let test = samples("data/fashion_mnist/test_x.npy", 0, 1000);
    let n = assert_bit_exact(
        &g,
        &test,
        "cc",
        &["-O3", "-march=native"],
        "fashion_resnet8 lut4-pot-channel --reconstruct",
    );
    assert_eq!(n, 1000);
}

/// Table groups (`--lut-tables`): the C stores each distinct table once with a table
/// index per channel, counts exactly those bytes, and agrees bit for bit — with the
/// default scratch limit, and with limits under which the dual-MAC kernel
/// (`linear_dsp.rs`) decodes a grouped layer's codes through a pair table per LUT, or
/// pair by pair from the channel's own 16-entry table.
#[test]
fn table_groups_are_bit_exact_and_stored_once() {
    let calib = fashion_calib();
    let options = lutq_quant::QuantOptions {
        lut_tables: Some(4),
        ..lutq_quant::QuantOptions::new(Mode::Lut4PotChannel)
    };
    let g = lutq_bundled::lowered_with("fashion_mobilenetv2", &options, &calib).unwrap();
    let mut indexed = 0;
    for node in &g.nodes {
        let IntOp::Linear(layer) = &node.op else {
            continue;
        };
        let QWeights::Lut { luts, codes, .. } = &layer.weights else {
            continue;
        };
        let distinct: std::collections::BTreeSet<_> = luts.iter().collect();
        assert!(
            distinct.len() <= 5,
            "{}: {} tables",
            node.name,
            distinct.len()
        );
        if luts.len() > 1 && distinct.len() < luts.len() {
            indexed += 1;
            // Each distinct table once and a byte per channel, not 16.
            assert_eq!(
                layer.weights.size_bytes(),
                codes.len() + 16 * distinct.len() + luts.len(),
                "{}",
                node.name
            );
        }
    }
    assert!(indexed > 0, "no layer uses table groups");
    let test = samples("data/fashion_mnist/test_x.npy", 0, 500);
    let n = assert_bit_exact(
        &g,
        &test,
        "cc",
        &["-O2"],
        "fashion_mobilenetv2 lut4-pot-channel --lut-tables 4",
    );
    assert_eq!(n, 500);

    // The two ways the dual-MAC kernel (`linear_dsp.rs`) decodes a grouped layer's
    // codes: a pair table per LUT where the scratch limit leaves room for them (here a
    // roomy limit), else pair by pair from the channel's own 16-entry table (Fashion
    // ResNet-8 at the default limit: one layer's step already holds the arena's lower
    // bound, so only the columns fit).
    let resnet = lutq_bundled::lowered_with("fashion_resnet8", &options, &calib).unwrap();
    let roomy = lutq_backend_c::EmitOptions {
        scratch_limit: Some(1 << 20),
        ..lutq_backend_c::EmitOptions::new("model")
    };
    let default = lutq_backend_c::EmitOptions::new("model");
    for (graph, emit, decode, what) in [
        (
            &g,
            &roomy,
            "const uint32_t *const tp0 = pairs + 256 * model_lutrow_",
            "fashion_mobilenetv2 --lut-tables 4, a pair table per LUT",
        ),
        (
            &resnet,
            &default,
            "const int8_t *const lut0 = model_lut_",
            "fashion_resnet8 --lut-tables 4, pairs decoded in the loop",
        ),
    ] {
        let source: String = lutq_backend_c::emit(graph, emit)
            .unwrap()
            .files
            .iter()
            .map(|(_, text)| text.as_str())
            .collect();
        assert!(source.contains(decode), "{what}: not in the C");
        let n = assert_bit_exact_with(graph, &test, emit, "cc", &["-O2"], what);
        assert_eq!(n, 500);
    }
}

/// A layer whose rows all read the same table, written out per row (as a producer other
/// than lutq's lowering may leave it): the C stores that table once, with no row index,
/// and addresses it as the layer's one table — in the plain, the dual-MAC (with pair
/// tables and decoding in the loop) and the depthwise kernels — bit-exact.
#[test]
fn equal_row_tables_are_stored_once_and_bit_exact() {
    let calib = fashion_calib();
    let mut g = (*quantized("fashion_mobilenetv2", Mode::Lut4PotLayer, &calib)).clone();
    let mut spread = 0;
    for node in &mut g.nodes {
        let IntOp::Linear(layer) = &mut node.op else {
            continue;
        };
        let QWeights::Lut { luts, shape, .. } = &mut layer.weights else {
            continue;
        };
        *luts = vec![luts[0]; shape[0]];
        spread += 1;
        assert_eq!(
            layer.weights.table_layout().unwrap().size_bytes(),
            16,
            "{}",
            node.name
        );
    }
    assert!(spread > 10);
    let test = samples("data/fashion_mnist/test_x.npy", 0, 200);
    let roomy = lutq_backend_c::EmitOptions {
        scratch_limit: Some(1 << 20),
        ..lutq_backend_c::EmitOptions::new("model")
    };
    for emit in [lutq_backend_c::EmitOptions::new("model"), roomy] {
        let source: String = lutq_backend_c::emit(&g, &emit)
            .unwrap()
            .files
            .iter()
            .map(|(_, text)| text.as_str())
            .collect();
        assert!(!source.contains("_lutrow_"), "a row index for equal tables");
        let n = assert_bit_exact_with(&g, &test, &emit, "cc", &["-O2"], "equal row tables");
        assert_eq!(n, 200);
    }
}

#[test]
fn fashion_nets_are_bit_exact_with_multipliers_and_layer_shifts() {
    let calib = fashion_calib();
    let test = samples("data/fashion_mnist/test_x.npy", 0, 200);
    for model in FASHION {
        for mode in OTHERS {
            let g = quantized(model, mode, &calib);
            assert_bit_exact(&g, &test, "cc", &["-O2"], &format!("{model} {mode}"));
        }
    }
}

#[test]
fn clang_builds_every_mode_warning_free_and_bit_exact() {
    if !optional_tool("clang") {
        return;
    }
    let calib = fashion_calib();
    let test = samples("data/fashion_mnist/test_x.npy", 0, 20);
    for model in FASHION {
        for mode in REQUIRED.iter().chain(&[Mode::Int8Pc]) {
            let g = quantized(model, *mode, &calib);
            assert_bit_exact(
                &g,
                &test,
                "clang",
                &["-O2"],
                &format!("{model} {mode} clang"),
            );
        }
    }
}

#[test]
fn sanitizers_find_nothing() {
    // ASan: every arena, input, output and weight access in bounds; UBSan: no signed
    // overflow, no invalid shift, no misaligned access. Any report aborts the program,
    // which fails the run.
    let calib = fashion_calib();
    let test = samples("data/fashion_mnist/test_x.npy", 0, 20);
    let flags = [
        "-O1",
        "-g",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        "-fno-omit-frame-pointer",
    ];
    for model in FASHION {
        for mode in [Mode::Lut4PotChannel, Mode::Int8Pc] {
            let g = quantized(model, mode, &calib);
            assert_bit_exact(
                &g,
                &test,
                "cc",
                &flags,
                &format!("{model} {mode} sanitized"),
            );
        }
    }
}

#[test]
fn mobilenet_v2_is_bit_exact_on_every_bundled_photo() {
    // Calibrate on the first 3 photos only: the point is the arithmetic, not accuracy.
    let calib = samples("data/photos/photos.npy", 0, 3);
    let photos = samples("data/photos/photos.npy", 0, 100);
    let g = quantized("mobilenet_v2", Mode::Lut4PotChannel, &calib);
    let what = "mobilenet_v2 lut4-pot-channel";
    assert_eq!(assert_bit_exact(&g, &photos, "cc", &["-O2"], what), 11);
}

#[test]
fn float_io_helpers_round_exactly_like_the_ir() {
    // NAME_quantize_input0 (--float-io) against lutq_ir::int::quantize_input on values
    // that stress the rounding: exact halves, the f32 just below a half, ±0, ±∞, NaN,
    // values far outside the range, and random ones. MobileNetV2's input is i8 (negative
    // values), Fashion ResNet-8's u8.
    let cases = [
        (
            "mobilenet_v2",
            quantized(
                "mobilenet_v2",
                Mode::Lut4PotChannel,
                &samples("data/photos/photos.npy", 0, 3),
            ),
        ),
        (
            "fashion_resnet8",
            quantized("fashion_resnet8", Mode::Lut4PotChannel, &fashion_calib()),
        ),
    ];
    // Both roundings: ties up (the contract's default) and to even (QDQ programs).
    let cases = cases.into_iter().flat_map(|(model, g)| {
        [Rounding::HalfUp, Rounding::HalfEven].map(|rounding| {
            let mut g = IntGraph::clone(&g);
            g.rounding = rounding;
            (model, g)
        })
    });
    for (model, g) in cases {
        let node = g
            .nodes
            .iter()
            .find(|n| matches!(n.op, lutq_ir::int::IntOp::QuantizeInput { .. }))
            .unwrap();
        let (exp, size) = (node.ty.exp, node.ty.num_elements());
        let (lo, hi) = node.ty.elem.range();
        let step = (-(exp as f32)).exp2();
        let mut values = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            0.499_999_97 * step,
            -0.499_999_97 * step,
        ];
        for k in -300..300 {
            values.push((k as f32 + 0.5) * step);
            values.push(k as f32 * step);
            values.push(f32::from_bits((k as f32 + 0.5).to_bits() - 1) * step);
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        while values.len() % size != 0 || values.len() < size {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            values.push(((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 600.0 * step);
        }
        let mut options = lutq_backend_c::EmitOptions::new("m");
        options.float_io = true;
        let sources = lutq_backend_c::emit(&g, &options).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "lutq-float-io-{model}-{}-{}",
            g.rounding.name(),
            std::process::id()
        ));
        sources.write_to(&dir).unwrap();
        std::fs::write(
            dir.join("main.c"),
            "#include <stdio.h>\n#include \"m.h\"\n\
             static float x[M_INPUT0_SIZE];\nstatic m_input0_t q[M_INPUT0_SIZE];\n\
             int main(void)\n{\n    \
             while (fread(x, sizeof x[0], M_INPUT0_SIZE, stdin) == M_INPUT0_SIZE) {\n        \
             m_quantize_input0(x, q);\n        fwrite(q, sizeof q[0], M_INPUT0_SIZE, stdout);\n    }\n    \
             return 0;\n}\n",
        )
        .unwrap();
        let exe = dir.join("quantize");
        let cc = std::process::Command::new("cc")
            .current_dir(&dir)
            .args(lutq_backend_c::host::STRICT_FLAGS)
            .args(["-O2", "-o"])
            .arg(&exe)
            .args(["main.c", "m.c", "m_weights.c"])
            .output()
            .unwrap();
        assert!(
            cc.status.success(),
            "{}",
            String::from_utf8_lossy(&cc.stderr)
        );
        let input: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let stdout = lutq_backend_c::host::pipe_through(&exe, &input).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(stdout.len(), values.len(), "{model}");
        for (v, &b) in values.iter().zip(&stdout) {
            let got = if lo < 0 { b as i8 as i32 } else { b as i32 };
            let want = lutq_ir::int::quantize_input(*v, exp, lo, hi, g.rounding);
            assert_eq!(
                got, want,
                "{model}: quantize_input({v:e}) at exp {exp}, {:?}",
                g.rounding
            );
        }
    }
}

/// A tight scratch limit changes the kernels (fewer pixels per block, tail blocks of
/// every size, the plain kernels where even 2 pixels do not fit), never the integers;
/// the arena stays within the activations' plan plus the limit.
#[test]
fn scratch_limits_change_kernels_not_results() {
    let calib = fashion_calib();
    let test = samples("data/fashion_mnist/test_x.npy", 0, 50);
    let rows: Vec<Vec<&[f32]>> = lutq_bundled::rows(&test)
        .into_iter()
        .map(|r| vec![r])
        .collect();
    // A plain CNN with 4-bit weights and a depthwise net with int8 weights.
    for (model, mode) in [
        ("fashion_resnet8", Mode::Lut4PotChannel),
        ("fashion_mobilenetv2", Mode::Int8PotChannel),
    ] {
        let g = quantized(model, mode, &calib);
        let plan = lutq_backend_c::plan_memory(&g);
        let interp = IntInterpreter::new(&g).unwrap();
        let expected: Vec<Vec<Vec<i32>>> = rows
            .iter()
            .map(|r| interp.run(r).unwrap().iter().map(|d| d.to_i32()).collect())
            .collect();
        let bytes = quantize_samples(&g, &rows).unwrap();
        let mut sources = Vec::new();
        for limit in [0, 1 << 20] {
            let mut options = lutq_backend_c::EmitOptions::new("model");
            options.scratch_limit = Some(limit);
            let what = format!("{model} {mode}, scratch limit {limit}");
            let program = HostProgram::build_with(&g, &options, "cc", &["-O1"], None)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let got = decode_outputs(&g, &program.run(&bytes).unwrap()).unwrap();
            assert_eq!(got, expected, "{what}");
            let emitted = lutq_backend_c::emit(&g, &options).unwrap();
            let summary = emitted.summary;
            assert!(
                summary.arena_size <= plan.arena_size + limit,
                "{what}: arena {} > {} + {limit}",
                summary.arena_size,
                plan.arena_size
            );
            sources.push(emitted.files[1].1.clone());
        }
        // The limits did change the kernels.
        assert_ne!(sources[0], sources[1], "{model} {mode}");
    }
}

/// The int8 build of a 4-bit program (`IntGraph::with_int8_weights`, what `lutq report`
/// measures flash against) computes the same integers, and its constants are what the
/// 4-bit program's summary promised for an int8 build.
#[test]
fn int8_build_of_a_lut_program_agrees_and_costs_the_promised_constants() {
    let calib = fashion_calib();
    let test = samples("data/fashion_mnist/test_x.npy", 0, 100);
    for model in FASHION {
        let g = quantized(model, Mode::Lut4PotChannel, &calib);
        let twin = g.with_int8_weights();
        assert!(
            twin.nodes.iter().all(
                |n| !matches!(&n.op, IntOp::Linear(l) if matches!(l.weights, QWeights::Lut { .. }))
            ),
            "{model}: table weights left"
        );
        let (a, b) = (
            IntInterpreter::new(&g).unwrap(),
            IntInterpreter::new(&twin).unwrap(),
        );
        for row in lutq_bundled::rows(&test) {
            let (x, y) = (a.run(&[row]).unwrap(), b.run(&[row]).unwrap());
            let ints = |d: Vec<lutq_interp::int::IntData>| {
                d.iter().map(|t| t.to_i32()).collect::<Vec<_>>()
            };
            assert_eq!(ints(x), ints(y), "{model}");
        }
        assert_bit_exact(&twin, &test, "cc", &["-O1"], &format!("{model} int8 build"));
        let options = lutq_backend_c::EmitOptions::new("model");
        let (lut, int8) = (
            lutq_backend_c::emit(&g, &options).unwrap().summary,
            lutq_backend_c::emit(&twin, &options).unwrap().summary,
        );
        assert_eq!(int8.weight_bytes, lut.int8_weight_bytes, "{model}");
        assert_eq!(int8.int8_weight_bytes, int8.weight_bytes, "{model}");
        // 4-bit codes with the default 8 tables per layer: half the int8 bytes plus a
        // table index per channel, the tables and the biases (Fashion MobileNetV2: 0.63).
        assert!(
            lut.weight_bytes * 10 < int8.weight_bytes * 7,
            "{model}: {lut:?} {int8:?}"
        );
    }
}
