//! The differential target: random integer programs (`lutq_bundled::random`, the same
//! generator as the backends' property tests) through the golden interpreter, the
//! Cranelift JIT (vector kernels, and the scalar kernels) and the generated C.
//!
//! An input of `n` bytes makes `⌈n / 8⌉` programs (at most [`PROGRAMS_PER_INPUT`]),
//! each from a seed that hashes the *whole* input and the program's index: a mutation
//! of any byte gives all new programs, so no execution re-checks programs its parent
//! input already checked (with one seed per 8-byte chunk, a one-byte mutation re-ran
//! the other seven programs unchanged). The interpreter and the JIT run every program at once; the C
//! backend's programs are collected and compiled together into one executable once
//! [`Backends::batch`] of them are pending ([`Backends::flush`]), so the C compiler runs
//! once per batch rather than once per program; with [`Backends::c_every`] > 1 only every
//! n-th program goes to C (the fuzz target samples, the replay test compiles them all).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use lutq_backend_c::{EmitOptions, decode_outputs, emit, quantize_samples};
use lutq_backend_jit::{CompileOptions, compile_with};
use lutq_bundled::random::{Rng, random_graph};
use lutq_interp::int::IntInterpreter;
use lutq_ir::int::IntGraph;

/// The most programs one input makes.
pub const PROGRAMS_PER_INPUT: usize = crate::PROGRAMS;

/// A program waiting for the C batch, with the interpreter's outputs.
struct Pending {
    seed: u64,
    graph: IntGraph,
    x: Vec<f32>,
    expected: Vec<Vec<i32>>,
}

/// The differential checker: counts and the pending C batch.
pub struct Backends {
    /// Programs per C compilation.
    pub batch: usize,
    /// Every how many programs one goes to the C batch (1: all). The C compiler costs
    /// ~0.1 s per program, the interpreter and the JIT milliseconds: the fuzzer samples.
    pub c_every: usize,
    /// Programs compared between interpreter and JIT.
    pub programs: usize,
    /// Programs also compared with the generated C.
    pub programs_c: usize,
    /// Drawn programs that did not validate (skipped).
    pub invalid: usize,
    pending: Vec<Pending>,
    /// `Some(compiler)` when C is checked.
    compiler: Option<String>,
}

impl Backends {
    /// A checker compiling C in batches of `batch` programs with `$CC` (else `cc`); with
    /// no compiler on the machine, C is skipped with a note, unless `LUTQ_REQUIRE_TOOLS`
    /// is set.
    pub fn new(batch: usize) -> Backends {
        let compiler = lutq_backend_c::host::default_compiler();
        let found = Command::new(&compiler)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                std::env::var_os("LUTQ_REQUIRE_TOOLS").is_none(),
                "C compiler '{compiler}' not found (LUTQ_REQUIRE_TOOLS is set)"
            );
            eprintln!("note: C compiler '{compiler}' not found: the C backend is not compared");
        }
        Backends {
            batch: batch.max(1),
            c_every: 1,
            programs: 0,
            programs_c: 0,
            invalid: 0,
            pending: Vec::new(),
            compiler: found.then_some(compiler),
        }
    }

    /// The programs of one input: interpreter vs JIT now, C when the batch is full.
    pub fn check(&mut self, data: &[u8]) {
        let programs = data.len().div_ceil(8).clamp(1, PROGRAMS_PER_INPUT);
        let input_hash = fnv1a(data);
        for k in 0..programs {
            // xorshift needs a non-zero state.
            let seed = mix(input_hash ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
            let (g, x) = random_graph(&mut Rng(seed));
            if g.validate().is_err() {
                self.invalid += 1;
                continue;
            }
            let expected: Vec<Vec<i32>> = IntInterpreter::new(&g)
                .unwrap_or_else(|e| {
                    panic!("seed {seed:#x}: interpreter refused a valid graph: {e}")
                })
                .run(&[&x])
                .unwrap_or_else(|e| panic!("seed {seed:#x}: interpreter failed: {e}"))
                .iter()
                .map(|d| d.to_i32())
                .collect();
            // Vector kernels on the first program of an input, scalar on the others
            // alternately: both paths see every kind of program.
            let options = CompileOptions {
                vectorize: k % 2 == 0,
                unroll_min_macs: if k % 4 == 0 {
                    0
                } else {
                    CompileOptions::default().unroll_min_macs
                },
                ..CompileOptions::default()
            };
            let mut model = compile_with(&g, &options).unwrap_or_else(|e| {
                panic!(
                    "seed {seed:#x}: JIT refused a valid graph: {e}\n{}",
                    g.dump()
                )
            });
            let got: Vec<Vec<i32>> = model
                .run(&[&x])
                .unwrap_or_else(|e| panic!("seed {seed:#x}: JIT failed: {e}"))
                .iter()
                .map(|d| d.to_i32())
                .collect();
            assert_eq!(
                got,
                expected,
                "seed {seed:#x}: JIT ({options:?}) differs from the interpreter\n{}",
                g.dump()
            );
            self.programs += 1;
            if self.compiler.is_some() && self.programs.is_multiple_of(self.c_every.max(1)) {
                self.pending.push(Pending {
                    seed,
                    graph: g,
                    x,
                    expected,
                });
                if self.pending.len() >= self.batch {
                    self.flush();
                }
            }
        }
    }

    /// Compiles the pending programs into one executable and compares its outputs with
    /// the interpreter's.
    pub fn flush(&mut self) {
        let Some(compiler) = self.compiler.clone() else {
            return;
        };
        if self.pending.is_empty() {
            return;
        }
        let cases = std::mem::take(&mut self.pending);
        let dir = fresh_dir();
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let mut main = String::from("#include <stdio.h>\n#include <stdint.h>\n");
        let mut body = String::new();
        let mut units = vec!["main.c".to_string()];
        let mut input = Vec::new();
        for (k, case) in cases.iter().enumerate() {
            let g = &case.graph;
            let p = format!("m{k}");
            let sources = emit(g, &EmitOptions::new(&p)).unwrap_or_else(|e| {
                panic!(
                    "seed {:#x}: C backend refused a valid graph: {e}\n{}",
                    case.seed,
                    g.dump()
                )
            });
            sources.write_to(&dir).expect("write C sources");
            units.push(format!("{p}.c"));
            units.push(format!("{p}_weights.c"));
            let up = p.to_ascii_uppercase();
            let _ = writeln!(main, "#include \"{p}.h\"");
            let _ = writeln!(
                body,
                "    {{\n        static uint8_t arena[{up}_ARENA_SIZE > 0 ? {up}_ARENA_SIZE : 1];"
            );
            let mut args = Vec::new();
            for i in 0..g.inputs.len() {
                let _ = writeln!(
                    body,
                    "        static {p}_input{i}_t in{i}[{up}_INPUT{i}_SIZE];\n        \
                     if (fread(in{i}, sizeof in{i}[0], {up}_INPUT{i}_SIZE, stdin) != {up}_INPUT{i}_SIZE) return 2;"
                );
                args.push(format!("in{i}"));
            }
            for o in 0..g.outputs.len() {
                let _ = writeln!(
                    body,
                    "        static {p}_output{o}_t out{o}[{up}_OUTPUT{o}_SIZE];"
                );
                args.push(format!("out{o}"));
            }
            args.push("arena".into());
            let _ = writeln!(
                body,
                "        if ({p}_run({}) != 0) return 3;",
                args.join(", ")
            );
            for o in 0..g.outputs.len() {
                let _ = writeln!(
                    body,
                    "        fwrite(out{o}, sizeof out{o}[0], {up}_OUTPUT{o}_SIZE, stdout);"
                );
            }
            body.push_str("    }\n");
            input.extend(quantize_samples(g, &[vec![&case.x[..]]]).expect("quantize input"));
        }
        let _ = write!(main, "\nint main(void)\n{{\n{body}    return 0;\n}}\n");
        std::fs::write(dir.join("main.c"), main).expect("write main.c");
        let exe = dir.join("batch");
        // -O0: the batch's cost is the compiler's; the sanitizer build of the same
        // programs is the backend-c property test.
        let cc = Command::new(&compiler)
            .current_dir(&dir)
            .args(lutq_backend_c::host::STRICT_FLAGS)
            .arg("-O0")
            .arg("-o")
            .arg(&exe)
            .args(&units)
            .output()
            .expect("run the C compiler");
        assert!(
            cc.status.success(),
            "generated C does not compile ({}): {}",
            dir.display(),
            String::from_utf8_lossy(&cc.stderr)
        );
        let stdout = lutq_backend_c::host::pipe_through(&exe, &input)
            .unwrap_or_else(|e| panic!("generated C failed ({}): {e}", dir.display()));
        let mut at = 0;
        for case in &cases {
            let g = &case.graph;
            let bytes: usize = g.outputs.iter().map(|o| g.ty(o.value).size_bytes()).sum();
            let got = decode_outputs(g, &stdout[at..at + bytes]).expect("decode C outputs");
            at += bytes;
            assert_eq!(
                got[0],
                case.expected,
                "seed {:#x}: C differs from the interpreter\n{}",
                case.seed,
                g.dump()
            );
        }
        assert_eq!(at, stdout.len(), "C wrote more than the programs' outputs");
        let _ = std::fs::remove_dir_all(&dir);
        self.programs_c += cases.len();
    }
}

/// 64-bit FNV-1a of the input.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64's finaliser: every bit of the result depends on every bit of `x`.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn fresh_dir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("lutq-fuzz-c-{}-{n}", std::process::id()))
}
