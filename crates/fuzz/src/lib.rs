//! The bodies of lutq's fuzz targets, as plain functions of the fuzzer's bytes.
//!
//! The cargo-fuzz crate in `fuzz/` (nightly, libFuzzer) calls them from its
//! `fuzz_targets/*.rs`; `tests/replay.rs` here (stable, part of `cargo test`) replays the
//! committed seed corpus and every crash input under `fuzz/regressions/TARGET/` through
//! the same functions. A target *returns* on any input lutq rejects with an error and
//! *panics* only on a lutq bug: a panic inside lutq, an invariant an error-free stage
//! broke (an imported graph that does not validate, a quantized graph that does not
//! validate), or two backends that disagree. Docs: `docs/fuzzing.md`.
//!
//! | target | input | path |
//! |---|---|---|
//! | [`onnx_import`] | ONNX bytes | import → validate → dump; `inspect`'s summary |
//! | [`onnx_graph`] | bytes steering [`onnx_gen`] | generated model → import → opt → quantize (2 calibration samples) → integer rewrites → validate → golden interpreter |
//! | [`backends`] | bytes → seeds of `lutq_bundled::random` programs | golden interpreter vs JIT (vector and scalar kernels) vs generated C (compiled once per batch) |
//! | [`npy`] | NPY bytes | f32, u8 and label readers; write → read round trip |

#[cfg(feature = "pipeline")]
pub mod backends;
pub mod onnx_gen;

#[cfg(feature = "pipeline")]
use lutq_ir::Tensor;
#[cfg(feature = "pipeline")]
use lutq_quant::{Mode, QuantOptions};
use prost::Message as _;

#[cfg(feature = "pipeline")]
pub use backends::Backends;

/// The fuzz targets, by the names `cargo xtask fuzz` and `fuzz/fuzz_targets/` use.
pub const TARGETS: [&str; 4] = ["onnx_import", "onnx_graph", "backends", "npy"];

#[cfg(feature = "pipeline")]
/// Runs target `name` on one input (for the replay test); `None` for an unknown name.
/// `backends` keeps programs for the C batch: call [`Backends::flush`] on `backends` at
/// the end.
pub fn run_target(name: &str, data: &[u8], backends: &mut Backends) -> Option<()> {
    match name {
        "onnx_import" => onnx_import(data),
        "onnx_graph" => onnx_graph(data),
        "backends" => backends.check(data),
        "npy" => npy(data),
        _ => return None,
    }
    Some(())
}

/// ONNX bytes → import → (validate, dump) and `inspect`'s summary.
pub fn onnx_import(data: &[u8]) {
    let _ = import_checked(data);
}

/// The checks of [`onnx_import`], returning the imported graph (so `onnx_graph` imports
/// each model once).
fn import_checked(data: &[u8]) -> Option<lutq_ir::Graph> {
    let options = lutq_onnx::ImportOptions::default();
    let graph = match lutq_onnx::import(data, &options) {
        Ok(graph) => {
            if let Err(e) = graph.validate() {
                panic!("an imported graph does not validate: {e}");
            }
            let _ = graph.dump();
            Some(graph)
        }
        Err(e) => {
            let _ = e.to_string();
            None
        }
    };
    if let Ok(summary) = lutq_onnx::summarize(data) {
        let _ = format!("{summary:?}");
    }
    graph
}

#[cfg(feature = "pipeline")]
/// The most elements (summed over all nodes) of an imported graph the `onnx_graph`
/// target takes through optimization and quantization: a budget of the fuzz harness, so
/// every input runs in milliseconds; the importer's own limits are far above it.
pub const GRAPH_ELEMENTS_BUDGET: usize = 1 << 16;

#[cfg(feature = "pipeline")]
/// The e-graph limits of the `onnx_graph` target. Every rule removes an op, so a graph
/// of the harness's size saturates in a few iterations and a few hundred e-nodes; the
/// target treats a run that stops at a limit as a bug (it found one: constants holding
/// NaN were never interned, `fuzz/regressions/onnx_graph/timeout-cf92…`). The node limit
/// makes that finding a quick, deterministic panic rather than a libFuzzer timeout; the
/// time limit is lutq's default.
pub const OPT_LIMITS: lutq_opt::OptOptions = lutq_opt::OptOptions {
    iter_limit: 64,
    node_limit: 20_000,
    time_limit: std::time::Duration::from_secs(60),
};

#[cfg(feature = "pipeline")]
/// Bytes → generated ONNX model → import → opt → quantize (2 calibration samples) →
/// integer rewrites → validate → golden interpreter.
pub fn onnx_graph(data: &[u8]) {
    let mut u = arbitrary::Unstructured::new(data);
    let Ok(model) = onnx_gen::model(&mut u) else {
        return;
    };
    let mode = Mode::ALL[usize::from(data.first().copied().unwrap_or(0)) % Mode::ALL.len()];
    let bytes = model.encode_to_vec();
    let Some(graph) = import_checked(&bytes) else {
        return;
    };
    let elements = graph.node_ids().try_fold(0usize, |acc, id| {
        let n = graph
            .node(id)
            .ty
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))?;
        acc.checked_add(n)
    });
    if elements.is_none_or(|n| n > GRAPH_ELEMENTS_BUDGET) {
        return;
    }
    let debug = std::env::var_os("LUTQ_FUZZ_DEBUG").is_some();
    if debug {
        eprintln!("onnx_graph: imported\n{}", graph.dump());
    }
    let started = std::time::Instant::now();
    let optimized = lutq_opt::optimize(&graph, &OPT_LIMITS);
    if debug {
        eprintln!("onnx_graph: optimize took {:?}", started.elapsed());
    }
    let Ok((graph, report)) = optimized else {
        return;
    };
    assert!(
        report.saturated,
        "optimize did not saturate on a graph of {} nodes: {report}",
        report.nodes_before
    );
    if let Err(e) = graph.validate() {
        panic!("an optimized graph does not validate: {e}");
    }
    let [input] = graph.inputs() else {
        return;
    };
    let shape = &graph.node(*input).ty.shape;
    let per_sample: usize = shape.iter().skip(1).product();
    let mut calib_shape = shape.clone();
    if calib_shape.is_empty() {
        return;
    }
    calib_shape[0] = 2;
    let values: Vec<f32> = (0..2 * per_sample)
        .map(|i| {
            let b = data.get(i % data.len().max(1)).copied().unwrap_or(0);
            (f32::from(b) - 128.0) / 32.0 + (i % 5) as f32 / 8.0
        })
        .collect();
    let x = values[..per_sample].to_vec();
    let Ok(calib) = Tensor::f32(calib_shape, values) else {
        return;
    };
    if debug {
        eprintln!("onnx_graph: {} on\n{}", mode.name(), graph.dump());
    }
    let Ok((int, _)) = lutq_quant::quantize(&graph, &calib, &QuantOptions::new(mode), &|_| {})
    else {
        return;
    };
    if let Err(e) = int.validate() {
        panic!("a quantized graph does not validate ({}): {e}", mode.name());
    }
    let Ok((int, _)) = lutq_opt::optimize_int(&int, &Default::default()) else {
        return;
    };
    if let Err(e) = int.validate() {
        panic!("a rewritten integer graph does not validate: {e}");
    }
    let _ = int.dump();
    if let Ok(interp) = lutq_interp::int::IntInterpreter::new(&int) {
        let _ = interp.run(&[&x]);
    }
}

/// NPY bytes → the f32, u8 and label readers; what reads as f32 writes and reads back
/// bit for bit.
pub fn npy(data: &[u8]) {
    if let Ok(a) = lutq_dataio::NpyArray::from_npy_bytes(data) {
        let n = a
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        assert_eq!(n, Some(a.data.len()), "shape {:?} vs data", a.shape);
        let bytes = a.to_npy_bytes().expect("a read array writes");
        let b = lutq_dataio::NpyArray::from_npy_bytes(&bytes).expect("a written array reads");
        assert_eq!(a.shape, b.shape);
        assert!(
            a.data
                .iter()
                .zip(&b.data)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "round trip changed the data"
        );
    }
    if let Ok(a) = lutq_dataio::NpyU8::from_npy_bytes(data) {
        let n = a
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        assert_eq!(n, Some(a.data.len()), "shape {:?} vs data", a.shape);
    }
    let _ = lutq_dataio::read_labels(data);
}

/// The generated seed inputs of `target` (name, bytes): deterministic, so the stable
/// replay test runs the same ones `cargo xtask fuzz` starts the fuzzer from.
/// `onnx_import` also gets the small bundled models (`models/`, read by the xtask, not
/// here: this crate reads no files).
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    // xorshift64, the generator of `lutq_bundled::random` (not a dependency here).
    let mut state = 0x5eed_f022u64;
    let mut bytes = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    match target {
        "onnx_import" => (0..32)
            .filter_map(|i| {
                let b = bytes(256);
                let model = onnx_gen::model(&mut arbitrary::Unstructured::new(&b)).ok()?;
                Some((format!("gen-{i:02}.onnx"), model.encode_to_vec()))
            })
            .collect(),
        "onnx_graph" => (0..32)
            .map(|i| (format!("gen-{i:02}"), bytes(64 + 16 * i)))
            .collect(),
        "backends" => (0..4)
            .map(|i| (format!("seeds-{i:02}"), bytes(8 * PROGRAMS)))
            .collect(),
        "npy" => npy_seeds(),
        _ => Vec::new(),
    }
}

/// The most programs one `backends` input makes (one per 8 bytes).
pub const PROGRAMS: usize = 16;

/// NPY files of every element type the readers take, in both byte orders, C and Fortran
/// order, written by hand (numpy's header format 1.0).
fn npy_seeds() -> Vec<(String, Vec<u8>)> {
    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }
    let data: Vec<u8> = (0..48u8).map(|i| i.wrapping_mul(37)).collect();
    let mut seeds = Vec::new();
    for (descr, size) in [
        ("<f4", 4),
        (">f4", 4),
        ("<f8", 8),
        ("|u1", 1),
        ("|i1", 1),
        ("<u2", 2),
        ("<i2", 2),
        ("<u4", 4),
        ("<i4", 4),
        ("<u8", 8),
        ("<i8", 8),
        (">i8", 8),
    ] {
        let n = 48 / size;
        for (fortran, shape) in [
            (false, format!("({n},)")),
            (true, format!("(2, {})", n / 2)),
        ] {
            let name = format!(
                "{}-{}.npy",
                descr.replace(['<', '>', '|'], ""),
                if fortran { "f" } else { "c" }
            );
            seeds.push((name, npy(descr, fortran, &shape, &data[..n * size])));
        }
    }
    seeds.push(("scalar.npy".into(), npy("<f4", false, "()", &data[..4])));
    seeds.push(("empty.npy".into(), npy("<f4", false, "(0, 3)", &[])));
    seeds
}
