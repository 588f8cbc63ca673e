//! The optional harness: `main.c` (raw tensors in, raw tensors out) and a `Makefile`.
//!
//! The program reads samples from a file (first argument) or standard input: each sample
//! is every input in order, `NAME_INPUTk_SIZE` elements of `NAME_inputk_t`, native byte
//! order. For each sample it writes every output's elements to a file (second argument)
//! or standard output. Tests and `lutq run --backend c` drive it this way; a user can try
//! the model on a PC with it before flashing anything.

use std::fmt::Write as _;

use lutq_ir::int::IntGraph;

pub(crate) fn main_c(graph: &IntGraph, p: &str, banner: &str) -> String {
    let up = p.to_ascii_uppercase();
    let inputs = graph.inputs.len();
    let outputs = graph.outputs.len();
    let mut c = format!(
        "{banner}#include <stdio.h>\n#include <stdlib.h>\n\n#include \"{p}.h\"\n\n\
         static uint8_t arena[{up}_ARENA_SIZE > 0 ? {up}_ARENA_SIZE : 1];\n"
    );
    for k in 0..inputs {
        writeln!(c, "static {p}_input{k}_t input{k}[{up}_INPUT{k}_SIZE];").unwrap();
    }
    for k in 0..outputs {
        writeln!(c, "static {p}_output{k}_t output{k}[{up}_OUTPUT{k}_SIZE];").unwrap();
    }
    let mut read = String::new();
    for k in 0..inputs {
        let first = if k == 0 {
            "        if (got == 0 && feof(in)) {\n            break;\n        }\n"
        } else {
            ""
        };
        write!(
            read,
            "        got = fread(input{k}, sizeof input{k}[0], {up}_INPUT{k}_SIZE, in);\n\
             {first}        \
             if (got != {up}_INPUT{k}_SIZE) {{\n            \
             fprintf(stderr, \"input ends inside sample %ld (input {k})\\n\", samples);\n            \
             return 2;\n        }}\n"
        )
        .unwrap();
    }
    let args: Vec<String> = (0..inputs)
        .map(|k| format!("input{k}"))
        .chain((0..outputs).map(|k| format!("output{k}")))
        .chain(["arena".to_string()])
        .collect();
    let mut write = String::new();
    for k in 0..outputs {
        write!(
            write,
            "        if (fwrite(output{k}, sizeof output{k}[0], {up}_OUTPUT{k}_SIZE, out) != {up}_OUTPUT{k}_SIZE) {{\n            \
             fprintf(stderr, \"cannot write the outputs\\n\");\n            return 4;\n        }}\n"
        )
        .unwrap();
    }
    write!(
        c,
        "\n/* Usage: {p} [INPUT.bin [OUTPUT.bin]] (default: standard input / output).\n \
         * Each sample: every input's raw elements in order; for each sample, every output's\n \
         * raw elements. */\n\
         int main(int argc, char **argv)\n{{\n    \
         FILE *in = stdin;\n    FILE *out = stdout;\n    long samples = 0;\n    \
         if (argc > 1 && (in = fopen(argv[1], \"rb\")) == NULL) {{\n        \
         perror(argv[1]);\n        return 1;\n    }}\n    \
         if (argc > 2 && (out = fopen(argv[2], \"wb\")) == NULL) {{\n        \
         perror(argv[2]);\n        return 1;\n    }}\n    \
         for (;;) {{\n        size_t got;\n{read}        \
         if ({p}_run({}) != 0) {{\n            \
         fprintf(stderr, \"{p}_run failed on sample %ld\\n\", samples);\n            \
         return 3;\n        }}\n{write}        ++samples;\n    }}\n    \
         if (fflush(out) != 0) {{\n        perror(\"output\");\n        return 4;\n    }}\n    \
         fprintf(stderr, \"%ld samples\\n\", samples);\n    \
         return 0;\n}}\n",
        args.join(", ")
    )
    .unwrap();
    c
}

pub(crate) fn makefile(p: &str) -> String {
    format!(
        "# Builds the harness: `make` then `./{p} input.bin output.bin`.\n\
         CC ?= cc\n\
         CFLAGS ?= -std=c99 -O2 -Wall -Wextra -Werror -pedantic\n\n\
         {p}: main.c {p}.c {p}_weights.c {p}.h\n\
         \t$(CC) $(CFLAGS) -o $@ main.c {p}.c {p}_weights.c\n\n\
         clean:\n\
         \trm -f {p}\n\n\
         .PHONY: clean\n"
    )
}
