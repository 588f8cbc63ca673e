use lutq_ir::int::IntCheckError;

/// Why a program could not be emitted as C, or the generated C not built or run.
#[derive(Debug, thiserror::Error)]
pub enum CError {
    #[error(transparent)]
    InvalidGraph(#[from] IntCheckError),
    #[error(
        "'{0}' is not a C identifier: the prefix names every symbol of the generated code \
         (letters, digits and '_', not starting with a digit)"
    )]
    BadPrefix(String),
    #[error("node '{node}' ({op}): {message}")]
    Unsupported {
        node: String,
        op: &'static str,
        message: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot start the C compiler '{compiler}': {source}. Fix: install gcc or clang, or \
         name a compiler with the CC environment variable"
    )]
    NoCompiler {
        compiler: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the generated C did not compile with '{command}':\n{stderr}")]
    CompileFailed { command: String, stderr: String },
    #[error("the generated program failed ({status}):\n{stderr}")]
    RunFailed { status: String, stderr: String },
    #[error("{0}")]
    Data(String),
}
