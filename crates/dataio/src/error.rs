//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading or writing NPY/IDX data or photo crops.
///
/// Each variant's documentation says whose fault it is: a *user/data error* is caused by
/// a missing, unreadable or malformed input and is reported to the user; a *lutq bug* means a
/// caller inside lutq broke an invariant of this crate's API.
#[derive(Debug, thiserror::Error)]
pub enum DataIoError {
    /// A file could not be opened, read or written. User/data error (missing file,
    /// permissions, full disk, ...).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Writing to a caller-supplied writer failed. User/data error (the destination refused
    /// the bytes).
    #[error("writing failed: {0}")]
    Write(#[source] std::io::Error),

    /// The bytes are not a well-formed NPY file (bad magic, truncated header or data,
    /// unparsable header, trailing bytes, ...). User/data error.
    #[error("malformed NPY data: {0}")]
    MalformedNpy(String),

    /// The NPY file is well formed but holds an element type, layout or structure this crate
    /// does not read (e.g. complex, strings, structured records, Fortran order). User/data
    /// error.
    #[error("unsupported NPY content: {0}")]
    UnsupportedNpy(String),

    /// The bytes are not a well-formed IDX file (bad magic, wrong element type, truncated,
    /// trailing bytes, ...). User/data error.
    #[error("malformed IDX data: {0}")]
    MalformedIdx(String),

    /// Gzip-compressed input could not be decompressed. User/data error.
    #[error("corrupt gzip stream: {0}")]
    Gzip(#[source] std::io::Error),

    /// An array has a different shape from the one required where it is used (e.g. a photo
    /// source that is not HxWx3, labels that are not 1-D). User/data error.
    #[error("{what}: expected shape {expected}, found {found:?}")]
    ShapeMismatch {
        /// What was being read.
        what: String,
        /// The expected shape, in words.
        expected: String,
        /// The shape found.
        found: Vec<usize>,
    },

    /// A value cannot be represented in the requested type (e.g. a `u64` label above
    /// `i64::MAX`). User/data error.
    #[error("value out of range: {0}")]
    ValueOutOfRange(String),

    /// The crop recipe CSV is malformed. User/data error.
    #[error("crops CSV line {line}: {message}")]
    MalformedCsv {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },

    /// A crop window does not lie inside its source image. User/data error (the recipe does
    /// not match the committed sources).
    #[error("crop {photo}@{scale} at ({x},{y}) does not fit in a {width}x{height} source")]
    CropOutOfBounds {
        /// Photo name.
        photo: String,
        /// Scale (short side) of the source.
        scale: u32,
        /// Left column of the window.
        x: usize,
        /// Top row of the window.
        y: usize,
        /// Source width.
        width: usize,
        /// Source height.
        height: usize,
    },

    /// The number of elements does not match the product of the shape given alongside.
    /// A lutq bug when raised for data built inside lutq (e.g. [`crate::NpyArray::new`] called
    /// with inconsistent arguments); the readers never produce it for file input.
    #[error("shape {shape:?} needs {expected} elements but {found} were given")]
    ShapeDataMismatch {
        /// The shape.
        shape: Vec<usize>,
        /// Product of the shape (saturating).
        expected: usize,
        /// Number of elements supplied.
        found: usize,
    },

    /// A caller-supplied output buffer has the wrong length. Lutq bug.
    #[error("output buffer holds {found} floats, {expected} needed")]
    BufferSize {
        /// Required length.
        expected: usize,
        /// Supplied length.
        found: usize,
    },
}

/// Result alias for this crate.
pub type Result<T, E = DataIoError> = std::result::Result<T, E>;

pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| DataIoError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn write_file(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| DataIoError::Io {
        path: path.to_path_buf(),
        source,
    })
}
