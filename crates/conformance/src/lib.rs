//! Conformance of lutq's ONNX importer and float interpreter with the ONNX backend test
//! data.
//!
//! The test directories (`model.onnx` + `test_data_set_*/{input,output}_*.pb`) of the ops
//! lutq supports are vendored from the `onnx` 1.22.0 wheel into `data/{node,
//! pytorch-converted}` by `cargo xtask conformance --vendor` (see `data/PROVENANCE.md`).
//! Each case is imported (graph inputs that feed constant-only operands, and integer
//! inputs, are bound to their test data as constants), run through
//! [`lutq_interp::run`], and every output compared with [`close`].
//!
//! Expected failures are listed in `expected-failures.txt` (`suite/test  reason`); each
//! must fail at import with diagnostics ([`lutq_onnx::ImportError::Unsupported`]), every
//! other case must pass ([`check`]). `cargo test -p lutq-conformance` enforces this;
//! `cargo xtask conformance` prints the per-op table and writes `docs/conformance.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use lutq_onnx::{ConstValue, Diagnostic, ImportError, ImportOptions};

/// Relative tolerance of the output comparison, see [`close`].
pub const RTOL: f32 = 1e-4;

/// `|got − want| ≤ RTOL · max(1, |want|)`: relative for large values, absolute (1e-4) near
/// zero. NaN matches only NaN; an infinity matches only the same infinity.
pub fn close(got: f32, want: f32) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= RTOL * want.abs().max(1.0)
}

/// Node-test name prefixes selected for vendoring, with the op each one tests. The longest
/// matching prefix wins; [`NODE_EXCLUDED`] removes tests of other ops that share a prefix.
pub const NODE_SELECTION: &[(&str, &str)] = &[
    ("test_abs", "Abs"),
    ("test_add", "Add"),
    ("test_and", "And"),
    ("test_averagepool", "AveragePool"),
    ("test_basic_conv", "Conv"),
    ("test_batchnorm", "BatchNormalization"),
    ("test_cast_", "Cast"),
    ("test_ceil", "Ceil"),
    ("test_clip", "Clip"),
    ("test_concat", "Concat"),
    ("test_constant", "Constant"),
    ("test_constant_pad", "Pad"),
    ("test_constantofshape", "ConstantOfShape"),
    ("test_conv", "Conv"),
    ("test_convtranspose", "ConvTranspose"),
    ("test_depthtospace", "DepthToSpace"),
    ("test_div", "Div"),
    ("test_dropout", "Dropout"),
    ("test_edge_pad", "Pad"),
    ("test_elu", "Elu"),
    ("test_equal", "Equal"),
    ("test_erf", "Erf"),
    ("test_exp", "Exp"),
    ("test_expand", "Expand"),
    ("test_flatten", "Flatten"),
    ("test_floor", "Floor"),
    ("test_gather_", "Gather"),
    ("test_gelu", "Gelu"),
    ("test_gemm", "Gemm"),
    ("test_globalaveragepool", "GlobalAveragePool"),
    ("test_globalmaxpool", "GlobalMaxPool"),
    ("test_greater", "Greater"),
    ("test_greater_equal", "GreaterOrEqual"),
    ("test_hardsigmoid", "HardSigmoid"),
    ("test_hardswish", "HardSwish"),
    ("test_identity", "Identity"),
    ("test_leakyrelu", "LeakyRelu"),
    ("test_less", "Less"),
    ("test_less_equal", "LessOrEqual"),
    ("test_log", "Log"),
    ("test_matmul_", "MatMul"),
    ("test_max_", "Max"),
    ("test_maxpool", "MaxPool"),
    ("test_mean_", "Mean"),
    ("test_min_", "Min"),
    ("test_mod_", "Mod"),
    ("test_mul", "Mul"),
    ("test_neg", "Neg"),
    ("test_not", "Not"),
    ("test_or", "Or"),
    ("test_pad", "Pad"),
    ("test_pow", "Pow"),
    ("test_prelu", "PRelu"),
    ("test_range", "Range"),
    ("test_reciprocal", "Reciprocal"),
    ("test_reduce_max", "ReduceMax"),
    ("test_reduce_mean", "ReduceMean"),
    ("test_reduce_min", "ReduceMin"),
    ("test_reduce_prod", "ReduceProd"),
    ("test_reduce_sum_", "ReduceSum"),
    ("test_reflect_pad", "Pad"),
    ("test_relu", "Relu"),
    ("test_reshape", "Reshape"),
    ("test_resize", "Resize"),
    ("test_round", "Round"),
    ("test_selu", "Selu"),
    ("test_shape", "Shape"),
    ("test_sigmoid", "Sigmoid"),
    ("test_size", "Size"),
    ("test_slice", "Slice"),
    ("test_softmax", "Softmax"),
    ("test_softplus", "Softplus"),
    ("test_spacetodepth", "SpaceToDepth"),
    ("test_split_", "Split"),
    ("test_sqrt", "Sqrt"),
    ("test_squeeze", "Squeeze"),
    ("test_sub", "Sub"),
    ("test_sum_", "Sum"),
    ("test_tanh", "Tanh"),
    ("test_transpose", "Transpose"),
    ("test_unsqueeze", "Unsqueeze"),
    ("test_upsample", "Upsample"),
    ("test_where", "Where"),
    ("test_wrap_pad", "Pad"),
    ("test_xor", "Xor"),
];

/// Prefixes of node tests for other ops whose names start like a selected one.
pub const NODE_EXCLUDED: &[&str] = &[
    "test_convinteger",
    "test_softmax_cross_entropy",
    "test_logsoftmax",
    "test_gather_elements",
    "test_split_to_sequence",
    "test_castlike",
    "test_reduce_sum_square",
    "test_reduce_log_sum",
    "test_shrink",
    "test_optional",
];

/// The op a node test exercises, or `None` when it is not selected.
pub fn node_test_op(name: &str) -> Option<&'static str> {
    if NODE_EXCLUDED.iter().any(|p| name.starts_with(p)) {
        return None;
    }
    NODE_SELECTION
        .iter()
        .filter(|(prefix, _)| name.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|&(_, op)| op)
}

/// Ops that only reshape data around the op a pytorch-converted test is about.
const HELPER_OPS: &[&str] = &[
    "Constant",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Flatten",
];

/// One vendored test directory.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Case {
    /// `node` or `pytorch-converted`.
    pub suite: String,
    pub name: String,
    pub dir: PathBuf,
}

impl Case {
    /// `suite/name`, the key of the expected-failures manifest.
    pub fn id(&self) -> String {
        format!("{}/{}", self.suite, self.name)
    }
}

/// The suites, in report order.
pub const SUITES: &[&str] = &["node", "pytorch-converted"];

/// The vendored data folder of this crate.
pub fn default_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// The expected-failures manifest of this crate.
pub fn default_manifest_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("expected-failures.txt")
}

/// Every test directory (one holding `model.onnx`) of every suite under `data`, sorted.
pub fn discover(data: &Path) -> std::io::Result<Vec<Case>> {
    let mut cases = Vec::new();
    for suite in SUITES {
        let dir = data.join(suite);
        if !dir.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.join("model.onnx").is_file() {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                cases.push(Case {
                    suite: suite.to_string(),
                    name,
                    dir: path,
                });
            }
        }
    }
    cases.sort();
    Ok(cases)
}

/// How one case ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Every output of every data set matched.
    Pass { data_sets: usize },
    /// The import failed with unsupported-feature diagnostics.
    Unsupported(Vec<Diagnostic>),
    /// The import failed otherwise (malformed model, shape error).
    ImportFailed(String),
    /// The model imported but the case has no data set to run (an expected failure
    /// vendored without data that now imports).
    NoData,
    /// A test file could not be read or decoded.
    BadData(String),
    /// The interpreter returned an error.
    RunFailed(String),
    /// An output differs from the expected one.
    Mismatch(String),
    /// Something panicked (always a lutq bug).
    Panic(String),
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Pass { .. })
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Pass { data_sets } => format!("pass ({data_sets} data set(s))"),
            Outcome::Unsupported(d) => {
                let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
                format!("unsupported: {}", lines.join(" | "))
            }
            Outcome::ImportFailed(e) => format!("import failed: {e}"),
            Outcome::NoData => "imports, but no data set is vendored".into(),
            Outcome::BadData(e) => format!("bad test data: {e}"),
            Outcome::RunFailed(e) => format!("interpreter failed: {e}"),
            Outcome::Mismatch(e) => format!("mismatch: {e}"),
            Outcome::Panic(e) => format!("PANIC: {e}"),
        }
    }
}

/// The result of one case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub case: Case,
    /// The ONNX op the case is about (for the per-op table).
    pub op: String,
    pub outcome: Outcome,
}

/// Runs one case; never panics (a panic inside becomes [`Outcome::Panic`]).
pub fn run_case(case: &Case) -> CaseResult {
    let bytes = std::fs::read(case.dir.join("model.onnx"));
    let op = match &bytes {
        Ok(b) => op_of(case, b),
        Err(_) => "?".to_string(),
    };
    let outcome = match bytes {
        Err(e) => Outcome::BadData(format!("model.onnx: {e}")),
        Ok(bytes) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_model(&case.dir, &bytes)
        }))
        .unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic payload".into());
            Outcome::Panic(msg)
        }),
    };
    CaseResult {
        case: case.clone(),
        op,
        outcome,
    }
}

/// Runs every case, in order.
pub fn run_all(cases: &[Case]) -> Vec<CaseResult> {
    cases.iter().map(run_case).collect()
}

fn op_of(case: &Case, model: &[u8]) -> String {
    if case.suite == "node"
        && let Some(op) = node_test_op(&case.name)
    {
        return op.to_string();
    }
    match lutq_onnx::summarize(model) {
        Ok(s) => {
            let ops: Vec<&String> = s.op_histogram.keys().collect();
            ops.iter()
                .find(|op| !HELPER_OPS.contains(&op.as_str()))
                .or_else(|| ops.iter().find(|op| op.as_str() != "Constant"))
                .or(ops.first())
                .map_or_else(|| "?".to_string(), |s| s.to_string())
        }
        Err(_) => "?".to_string(),
    }
}

/// The `test_data_set_*` folders of a case, sorted.
fn data_sets(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut sets = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let is_set = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"));
        if is_set && path.is_dir() {
            sets.push(path);
        }
    }
    sets.sort();
    Ok(sets)
}

/// The `{prefix}_{i}.pb` files of a data set, in index order.
fn pb_files(set: &Path, prefix: &str) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<(usize, PathBuf)> = Vec::new();
    let entries = std::fs::read_dir(set).map_err(|e| format!("{}: {e}", set.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let index = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.strip_prefix('_'))
            .and_then(|n| n.strip_suffix(".pb"))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(i) = index {
            files.push((i, path));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

enum TensorError {
    /// An element type lutq does not read.
    Unsupported(String),
    Other(String),
}

impl From<TensorError> for String {
    fn from(e: TensorError) -> String {
        match e {
            TensorError::Unsupported(s) | TensorError::Other(s) => s,
        }
    }
}

fn read_tensor(path: &Path) -> Result<ConstValue, TensorError> {
    let bytes =
        std::fs::read(path).map_err(|e| TensorError::Other(format!("{}: {e}", path.display())))?;
    lutq_onnx::decode_tensor(&bytes)
        .map(|t| t.value)
        .map_err(|e| match e {
            ImportError::Unsupported(_) => {
                TensorError::Unsupported(format!("{}: {e}", path.display()))
            }
            e => TensorError::Other(format!("{}: {e}", path.display())),
        })
}

fn import_outcome(e: ImportError) -> Outcome {
    match e {
        ImportError::Unsupported(d) => Outcome::Unsupported(d),
        e => Outcome::ImportFailed(e.to_string()),
    }
}

fn run_model(dir: &Path, model: &[u8]) -> Outcome {
    let summary = match lutq_onnx::summarize(model) {
        Ok(s) => s,
        Err(e) => return import_outcome(e),
    };
    let sets = match data_sets(dir) {
        Ok(s) => s,
        Err(e) => return Outcome::BadData(e),
    };
    if sets.is_empty() {
        return match lutq_onnx::import(model, &ImportOptions::default()) {
            Ok(_) => Outcome::NoData,
            Err(e) => import_outcome(e),
        };
    }
    for set in &sets {
        if let Err(outcome) = run_data_set(&summary, model, set) {
            return outcome;
        }
    }
    Outcome::Pass {
        data_sets: sets.len(),
    }
}

/// Imports with this data set's constant-like inputs bound, runs, compares.
fn run_data_set(
    summary: &lutq_onnx::ModelSummary,
    model: &[u8],
    set: &Path,
) -> Result<(), Outcome> {
    let input_files = pb_files(set, "input").map_err(Outcome::BadData)?;
    let output_files = pb_files(set, "output").map_err(Outcome::BadData)?;
    // input_i.pb belongs to the i-th graph input that is not an initializer.
    let mut constant_inputs = BTreeMap::new();
    let mut runtime_files = BTreeMap::new();
    for (vi, file) in summary.inputs.iter().zip(&input_files) {
        let bind = summary.required_constants.contains(&vi.name) || vi.dtype == "INT64";
        if bind {
            // A value of an element type lutq does not read stays unbound: the import
            // then reports that type.
            match read_tensor(file) {
                Ok(value) => {
                    constant_inputs.insert(vi.name.clone(), value);
                }
                Err(TensorError::Unsupported(_)) => {}
                Err(TensorError::Other(e)) => return Err(Outcome::BadData(e)),
            }
        } else {
            runtime_files.insert(vi.name.clone(), file);
        }
    }
    let options = ImportOptions {
        batch: 1,
        constant_inputs,
        ..Default::default()
    };
    let graph = lutq_onnx::import(model, &options).map_err(import_outcome)?;

    let mut inputs = Vec::with_capacity(graph.inputs().len());
    for &id in graph.inputs() {
        let name = &graph.node(id).name;
        let file = runtime_files
            .get(name)
            .ok_or_else(|| Outcome::BadData(format!("no input file for graph input '{name}'")))?;
        let value = read_tensor(file).map_err(|e| Outcome::BadData(e.into()))?;
        let tensor = value
            .to_ir()
            .ok_or_else(|| Outcome::BadData(format!("input '{name}' is not f32 data")))?;
        inputs.push(tensor);
    }
    let outputs =
        lutq_interp::run(&graph, &inputs).map_err(|e| Outcome::RunFailed(e.to_string()))?;
    if outputs.len() != output_files.len() {
        return Err(Outcome::Mismatch(format!(
            "{} outputs, the test data has {}",
            outputs.len(),
            output_files.len()
        )));
    }
    for (i, (got, file)) in outputs.iter().zip(&output_files).enumerate() {
        let want = read_tensor(file).map_err(|e| Outcome::BadData(e.into()))?;
        let name = &graph.outputs()[i].name;
        compare(name, got, &want).map_err(Outcome::Mismatch)?;
    }
    Ok(())
}

/// Compares one output: same shape, every element [`close`].
pub fn compare(name: &str, got: &lutq_ir::Tensor, want: &ConstValue) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "output '{name}': shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let (Some(g), Some(w)) = (got.as_f32(), want.as_f32()) else {
        return Err(format!("output '{name}': not f32 data"));
    };
    let bad: Vec<usize> = (0..w.len()).filter(|&i| !close(g[i], w[i])).collect();
    if let Some(&i) = bad.first() {
        return Err(format!(
            "output '{name}': {} of {} elements differ; first at flat index {i}: got {}, expected {}",
            bad.len(),
            w.len(),
            g[i],
            w[i]
        ));
    }
    Ok(())
}

/// The expected failures: test id (`suite/name`) → reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    pub entries: BTreeMap<String, String>,
}

impl Manifest {
    /// One entry per line: `suite/test_name  reason…`; `#` starts a comment line.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut entries = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, reason) = line
                .split_once(char::is_whitespace)
                .map(|(a, b)| (a, b.trim()))
                .unwrap_or((line, ""));
            if reason.is_empty() {
                return Err(format!("line {}: '{id}' has no reason", n + 1));
            }
            if entries.insert(id.to_string(), reason.to_string()).is_some() {
                return Err(format!("line {}: '{id}' is listed twice", n + 1));
            }
        }
        Ok(Manifest { entries })
    }

    pub fn load(path: &Path) -> Result<Manifest, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Every way the results disagree with the manifest: a case not listed that does not
/// pass, a listed case that does not fail with import diagnostics, a listed case that does
/// not exist.
pub fn check(results: &[CaseResult], manifest: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    for r in results {
        let id = r.case.id();
        match (manifest.entries.get(&id), &r.outcome) {
            (None, Outcome::Pass { .. }) => {}
            (None, o) => problems.push(format!("{id}: {}", o.describe())),
            (Some(_), Outcome::Unsupported(_)) => {}
            (Some(_), Outcome::Pass { .. }) => problems.push(format!(
                "{id}: passes now; remove it from expected-failures.txt and re-vendor its data"
            )),
            (Some(_), o) => problems.push(format!(
                "{id}: listed as an expected import failure, but: {}",
                o.describe()
            )),
        }
    }
    for id in manifest.entries.keys() {
        if !results.iter().any(|r| &r.case.id() == id) {
            problems.push(format!(
                "{id}: listed in expected-failures.txt but not vendored"
            ));
        }
    }
    problems
}

/// Passed and total cases per op, sorted by op.
pub fn per_op(results: &[CaseResult]) -> BTreeMap<String, (usize, usize)> {
    let mut table: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in results {
        let row = table.entry(r.op.clone()).or_default();
        row.1 += 1;
        if r.outcome.passed() {
            row.0 += 1;
        }
    }
    table
}

/// The per-op table as plain text.
pub fn text_table(results: &[CaseResult]) -> String {
    let mut s = String::new();
    let table = per_op(results);
    let (mut pass, mut total) = (0, 0);
    writeln!(s, "{:<22} {:>6} {:>6}", "op", "pass", "total").ok();
    for (op, (p, t)) in &table {
        writeln!(s, "{op:<22} {p:>6} {t:>6}").ok();
        pass += p;
        total += t;
    }
    writeln!(s, "{:<22} {pass:>6} {total:>6}", "all").ok();
    s
}

/// `docs/conformance.md`: method, per-op table, and every expected failure with its
/// reason and the diagnostic lutq prints.
pub fn markdown_report(results: &[CaseResult], manifest: &Manifest, command: &str) -> String {
    let mut s = String::new();
    let table = per_op(results);
    let passed = results.iter().filter(|r| r.outcome.passed()).count();
    let _ = writeln!(
        s,
        "# ONNX conformance\n\n\
         <!-- generated by `{command}`; do not edit -->\n\n\
         lutq runs the ONNX backend test data of the ops it supports (vendored from the\n\
         `onnx` 1.22.0 wheel into `crates/conformance/data`, see its `PROVENANCE.md`)\n\
         through its importer and float interpreter, and compares every output with\n\
         `|got - expected| <= 1e-4 * max(1, |expected|)` (NaN matches only NaN).\n\
         Graph inputs that feed operands lutq needs as constants (Reshape shapes, Clip\n\
         bounds, Pad pads, ...) and integer inputs are bound to their test data at import.\n\n\
         Tests expected to fail are listed with their reason in\n\
         `crates/conformance/expected-failures.txt`; each must fail at import with a\n\
         diagnostic, every other test must pass (`cargo test -p lutq-conformance`).\n\
         Regenerate this page with `{command}`.\n\n\
         Ops the importer supports: {}.\n\n\
         **{passed} of {} tests pass.**\n\n\
         | op | pass | total |\n|---|---:|---:|",
        lutq_onnx::supported_ops().join(", "),
        results.len()
    );
    for (op, (p, t)) in &table {
        let _ = writeln!(s, "| {op} | {p} | {t} |");
    }
    let _ = writeln!(
        s,
        "\n## Expected failures\n\n| test | reason | lutq's diagnostic |\n|---|---|---|"
    );
    for r in results {
        if let Some(reason) = manifest.entries.get(&r.case.id()) {
            let diag = match &r.outcome {
                Outcome::Unsupported(d) => d
                    .iter()
                    .map(|d| format!("{}: {}", d.location, d.message))
                    .collect::<Vec<_>>()
                    .join("<br>"),
                o => o.describe(),
            };
            let _ = writeln!(
                s,
                "| `{}` | {} | {} |",
                r.case.id(),
                reason,
                diag.replace('|', "\\|")
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance() {
        assert!(close(1.0, 1.0));
        assert!(close(0.0, 0.00009));
        assert!(!close(0.0, 0.0002));
        assert!(close(1000.05, 1000.0));
        assert!(!close(1000.2, 1000.0));
        assert!(close(f32::NAN, f32::NAN));
        assert!(!close(0.0, f32::NAN));
        assert!(close(f32::INFINITY, f32::INFINITY));
        assert!(!close(f32::INFINITY, f32::NEG_INFINITY));
    }

    #[test]
    fn selection() {
        assert_eq!(node_test_op("test_conv_with_strides_padding"), Some("Conv"));
        assert_eq!(node_test_op("test_convtranspose_1d"), Some("ConvTranspose"));
        assert_eq!(node_test_op("test_convinteger_with_padding"), None);
        assert_eq!(node_test_op("test_constant_pad_axes"), Some("Pad"));
        assert_eq!(node_test_op("test_constant"), Some("Constant"));
        assert_eq!(
            node_test_op("test_constantofshape_int_zeros"),
            Some("ConstantOfShape")
        );
        assert_eq!(node_test_op("test_expand_dim_changed"), Some("Expand"));
        assert_eq!(node_test_op("test_exp"), Some("Exp"));
        assert_eq!(node_test_op("test_max_example"), Some("Max"));
        assert_eq!(node_test_op("test_maxpool_2d_pads"), Some("MaxPool"));
        assert_eq!(node_test_op("test_logsoftmax_axis_0"), None);
        assert_eq!(node_test_op("test_gather_elements_0"), None);
        assert_eq!(node_test_op("test_matmul_2d"), Some("MatMul"));
        assert_eq!(node_test_op("test_matmulinteger"), None);
        assert_eq!(node_test_op("test_softmax_cross_entropy_mean"), None);
        assert_eq!(node_test_op("test_tanh"), Some("Tanh"));
        assert_eq!(node_test_op("test_hardmax_example"), None);
    }

    #[test]
    fn manifest_parsing() {
        let m = Manifest::parse("# c\n\nnode/test_a   int types: f32 only\n").unwrap();
        assert_eq!(m.entries["node/test_a"], "int types: f32 only");
        assert!(Manifest::parse("node/test_a\n").is_err());
        assert!(Manifest::parse("node/a x\nnode/a y\n").is_err());
    }
}
