//! Property test: random small integer programs (every op, every weight format, odd
//! geometries; `lutq_bundled::random`) emitted as C give bit for bit the interpreter's
//! outputs, under ASan and UBSan. All programs go into one executable (each in its own
//! translation unit with its own prefix), so the compiler runs once.

use std::fmt::Write as _;
use std::process::Command;

use lutq_backend_c::{EmitOptions, decode_outputs, emit, quantize_samples};
use lutq_bundled::random::{Rng, random_graph};
use lutq_interp::int::IntInterpreter;
use lutq_ir::int::IntGraph;

const CASES: usize = 100;

#[test]
fn random_programs_match_the_interpreter_under_sanitizers() {
    let mut r = Rng(0x5eed_c0de_1234_5678);
    let mut cases: Vec<(IntGraph, Vec<f32>)> = Vec::new();
    while cases.len() < CASES {
        let (g, x) = random_graph(&mut r);
        if g.validate().is_ok() {
            cases.push((g, x));
        }
    }
    let dir = std::env::temp_dir().join(format!("lutq-c-random-{}", std::process::id()));
    let mut main = String::from("#include <stdio.h>\n#include <stdint.h>\n");
    let mut body = String::new();
    let mut units = vec!["main.c".to_string()];
    let mut input = Vec::new();
    for (k, (g, x)) in cases.iter().enumerate() {
        let p = format!("m{k}");
        let sources = emit(g, &EmitOptions::new(&p)).unwrap_or_else(|e| panic!("case {k}: {e}"));
        sources.write_to(&dir).unwrap();
        units.push(format!("{p}.c"));
        units.push(format!("{p}_weights.c"));
        let up = p.to_ascii_uppercase();
        writeln!(main, "#include \"{p}.h\"").unwrap();
        writeln!(
            body,
            "    {{\n        static uint8_t arena[{up}_ARENA_SIZE > 0 ? {up}_ARENA_SIZE : 1];"
        )
        .unwrap();
        let mut args = Vec::new();
        for i in 0..g.inputs.len() {
            writeln!(
                body,
                "        static {p}_input{i}_t in{i}[{up}_INPUT{i}_SIZE];\n        \
                 if (fread(in{i}, sizeof in{i}[0], {up}_INPUT{i}_SIZE, stdin) != {up}_INPUT{i}_SIZE) return 2;"
            )
            .unwrap();
            args.push(format!("in{i}"));
        }
        for o in 0..g.outputs.len() {
            writeln!(
                body,
                "        static {p}_output{o}_t out{o}[{up}_OUTPUT{o}_SIZE];"
            )
            .unwrap();
            args.push(format!("out{o}"));
        }
        args.push("arena".into());
        writeln!(
            body,
            "        if ({p}_run({}) != 0) return 3;",
            args.join(", ")
        )
        .unwrap();
        for o in 0..g.outputs.len() {
            writeln!(
                body,
                "        fwrite(out{o}, sizeof out{o}[0], {up}_OUTPUT{o}_SIZE, stdout);"
            )
            .unwrap();
        }
        body.push_str("    }\n");
        input.extend(quantize_samples(g, &[vec![&x[..]]]).unwrap());
    }
    write!(main, "\nint main(void)\n{{\n{body}    return 0;\n}}\n").unwrap();
    std::fs::write(dir.join("main.c"), main).unwrap();

    // Compile the units on every core, then link.
    let flags = [
        "-O1",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
    ];
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunks: Vec<&[String]> = units.chunks(units.len().div_ceil(threads)).collect();
    std::thread::scope(|scope| {
        for chunk in chunks {
            let dir = &dir;
            scope.spawn(move || {
                for unit in chunk {
                    let cc = Command::new("cc")
                        .current_dir(dir)
                        .args(lutq_backend_c::host::STRICT_FLAGS)
                        .args(flags)
                        .arg("-c")
                        .arg(unit)
                        .output()
                        .unwrap();
                    assert!(
                        cc.status.success(),
                        "{unit}: {}",
                        String::from_utf8_lossy(&cc.stderr)
                    );
                }
            });
        }
    });
    let exe = dir.join("random");
    let objects: Vec<String> = units.iter().map(|u| u.replace(".c", ".o")).collect();
    let cc = Command::new("cc")
        .current_dir(&dir)
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .args(&objects)
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let stdout = lutq_backend_c::host::pipe_through(&exe, &input).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_dir_all(&dir).unwrap();

    let mut at = 0;
    for (k, (g, x)) in cases.iter().enumerate() {
        let bytes: usize = g.outputs.iter().map(|o| g.ty(o.value).size_bytes()).sum();
        let got = decode_outputs(g, &stdout[at..at + bytes]).unwrap();
        at += bytes;
        let expected: Vec<Vec<i32>> = IntInterpreter::new(g)
            .unwrap()
            .run(&[x])
            .unwrap()
            .iter()
            .map(|d| d.to_i32())
            .collect();
        assert_eq!(got[0], expected, "case {k}: {g:#?}");
    }
    assert_eq!(at, stdout.len());
}
