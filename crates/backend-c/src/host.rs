//! Building and running the generated C on the host: what `lutq run --backend c` and the
//! tests do behind the scenes.
//!
//! [`HostProgram::build`] writes the sources (with the harness) into a fresh directory
//! and compiles them with the system C compiler (`$CC`, else `cc`) under the strict
//! flags the generated code promises to pass; [`HostProgram::run`] pipes quantized
//! samples through the harness. [`quantize_samples`] and [`decode_outputs`] convert
//! between float / integer values and the harness's raw bytes with the IR's own
//! definitions, so the comparison with the golden interpreter is byte for byte.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lutq_ir::int::{IntElem, IntGraph, IntOp, quantize_input};

use crate::emit::{CSources, EmitOptions, emit};
use crate::error::CError;

/// The flags every generated file must compile cleanly with.
pub const STRICT_FLAGS: &[&str] = &["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"];

/// A compiled harness in its own directory (removed on drop unless kept).
pub struct HostProgram {
    /// The prefix of the generated files and symbols.
    pub prefix: String,
    dir: PathBuf,
    exe: PathBuf,
    keep: bool,
    pub sources: CSources,
}

/// The compiler to use: `$CC` or `cc`.
pub fn default_compiler() -> String {
    std::env::var("CC")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cc".into())
}

pub(crate) fn fresh_dir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!("lutq-c-{}-{n}-{nanos}", std::process::id()))
}

impl HostProgram {
    /// Emits `graph` with the harness and compiles it with `compiler` and `flags`
    /// (appended to [`STRICT_FLAGS`], e.g. `-O2` or sanitizers). `dir`: where to build
    /// (kept); `None`: a temporary directory removed on drop.
    pub fn build(
        graph: &IntGraph,
        prefix: &str,
        compiler: &str,
        flags: &[&str],
        dir: Option<&Path>,
    ) -> Result<HostProgram, CError> {
        Self::build_with(graph, &EmitOptions::new(prefix), compiler, flags, dir)
    }

    /// [`HostProgram::build`] with the emitter's `options` (the harness is added).
    pub fn build_with(
        graph: &IntGraph,
        options: &EmitOptions,
        compiler: &str,
        flags: &[&str],
        dir: Option<&Path>,
    ) -> Result<HostProgram, CError> {
        let prefix = options.prefix.as_str();
        let mut options = options.clone();
        options.harness = true;
        let sources = emit(graph, &options)?;
        let (dir, keep) = match dir {
            Some(d) => (d.to_path_buf(), true),
            None => (fresh_dir(), false),
        };
        sources.write_to(&dir)?;
        let exe = dir.join(prefix);
        let mut cmd = Command::new(compiler);
        cmd.current_dir(&dir)
            .args(STRICT_FLAGS)
            .args(flags)
            .arg("-o")
            .arg(&exe)
            .args(sources.c_files());
        let program = HostProgram {
            prefix: prefix.to_string(),
            dir,
            exe,
            keep,
            sources,
        };
        let output = cmd.output().map_err(|source| CError::NoCompiler {
            compiler: compiler.into(),
            source,
        })?;
        if !output.status.success() {
            return Err(CError::CompileFailed {
                command: format!(
                    "{compiler} {} {} -o {} {}",
                    STRICT_FLAGS.join(" "),
                    flags.join(" "),
                    program.exe.display(),
                    program.sources.c_files().join(" ")
                ),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(program)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Runs the harness on `input` (samples' raw bytes, see [`quantize_samples`]) and
    /// returns what it wrote.
    pub fn run(&self, input: &[u8]) -> Result<Vec<u8>, CError> {
        pipe_through(&self.exe, input)
    }
}

/// Runs the program `exe` with `input` on its standard input and returns its standard
/// output; a non-zero exit is an error carrying its standard error.
pub fn pipe_through(exe: &Path, input: &[u8]) -> Result<Vec<u8>, CError> {
    let mut child = Command::new(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CError::Io {
            what: format!("cannot start {}", exe.display()),
            source,
        })?;
    // Feed stdin from a thread: the program writes while it reads, and a full stdout
    // pipe would otherwise deadlock both sides.
    let mut stdin = child.stdin.take().expect("piped");
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let output = child.wait_with_output().map_err(|source| CError::Io {
        what: format!("cannot run {}", exe.display()),
        source,
    })?;
    let fed = feeder.join().expect("feeder thread");
    if !output.status.success() {
        return Err(CError::RunFailed {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    fed.map_err(|source| CError::Io {
        what: format!("cannot feed {}", exe.display()),
        source,
    })?;
    Ok(output.stdout)
}

impl Drop for HostProgram {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The graph inputs' quantized types, in input order (what the C API takes).
fn input_types(graph: &IntGraph) -> Vec<&lutq_ir::int::QType> {
    (0..graph.inputs.len())
        .filter_map(|k| {
            graph
                .nodes
                .iter()
                .find(|n| matches!(n.op, IntOp::QuantizeInput { input } if input == k))
                .map(|n| &n.ty)
        })
        .collect()
}

fn push_elem(out: &mut Vec<u8>, elem: IntElem, v: i32) {
    match elem {
        IntElem::I8 => out.push(v as i8 as u8),
        IntElem::U8 => out.push(v as u8),
        IntElem::I32 => out.extend_from_slice(&v.to_ne_bytes()),
    }
}

/// `samples[s][k]` (sample `s`, graph input `k`, f32 elements) quantized exactly as the
/// graph's `quantize_input` does, as the harness's raw input bytes.
pub fn quantize_samples(graph: &IntGraph, samples: &[Vec<&[f32]>]) -> Result<Vec<u8>, CError> {
    let types = input_types(graph);
    let mut out = Vec::new();
    for (s, sample) in samples.iter().enumerate() {
        if sample.len() != types.len() {
            return Err(CError::Data(format!(
                "sample {s} has {} inputs, the model {}",
                sample.len(),
                types.len()
            )));
        }
        for (k, (x, ty)) in sample.iter().zip(&types).enumerate() {
            if x.len() != ty.num_elements() {
                return Err(CError::Data(format!(
                    "sample {s}, input {k}: {} values, the model takes {} ({:?})",
                    x.len(),
                    ty.num_elements(),
                    ty.shape
                )));
            }
            let (lo, hi) = ty.elem.range();
            for &v in x.iter() {
                push_elem(
                    &mut out,
                    ty.elem,
                    quantize_input(v, ty.exp, lo, hi, graph.rounding),
                );
            }
        }
    }
    Ok(out)
}

/// The harness's raw output bytes as integers: `[sample][output][element]`.
pub fn decode_outputs(graph: &IntGraph, bytes: &[u8]) -> Result<Vec<Vec<Vec<i32>>>, CError> {
    let types: Vec<&lutq_ir::int::QType> =
        graph.outputs.iter().map(|o| graph.ty(o.value)).collect();
    let per_sample: usize = types.iter().map(|t| t.size_bytes()).sum();
    if per_sample == 0 || !bytes.len().is_multiple_of(per_sample) {
        return Err(CError::Data(format!(
            "{} output bytes are not a whole number of samples of {per_sample} bytes",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks(per_sample)
        .map(|sample| {
            let mut at = 0;
            types
                .iter()
                .map(|t| {
                    let n = t.num_elements();
                    let vals = (0..n)
                        .map(|i| match t.elem {
                            IntElem::I8 => sample[at + i] as i8 as i32,
                            IntElem::U8 => sample[at + i] as i32,
                            IntElem::I32 => {
                                let b = &sample[at + 4 * i..at + 4 * i + 4];
                                i32::from_ne_bytes([b[0], b[1], b[2], b[3]])
                            }
                        })
                        .collect();
                    at += t.size_bytes();
                    vals
                })
                .collect()
        })
        .collect())
}
