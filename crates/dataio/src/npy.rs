//! NPY reading and writing on top of the `npyz` crate.
//!
//! Readers take the whole file as bytes (or a reader, which is read to its end). Before the
//! bytes reach `npyz`, a pre-check validates the magic, the header length and the shape (with
//! checked arithmetic) and checks that the data section holds exactly the number of bytes the
//! header promises, so truncated or hostile files produce an error instead of an overflow, a
//! huge allocation or a panic.

use std::io::{Read, Write};
use std::path::Path;

use npyz::{DType, NpyFile, NpyHeader, Order, TypeChar, WriterBuilder};

use crate::error::{DataIoError, Result, read_file, write_file};

/// A dense float tensor in C (row-major) order, as read from or written to an NPY file.
///
/// Invariant (checked by [`NpyArray::new`] and by every writer): `data.len()` equals the
/// product of `shape` (1 for a scalar, `shape == []`).
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Elements in C order.
    pub data: Vec<f32>,
}

/// A dense `u8` tensor in C order (used for photo sources, which must stay exact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyU8 {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Elements in C order.
    pub data: Vec<u8>,
}

fn shape_len(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl NpyArray {
    /// Builds an array, checking that `data` has as many elements as `shape` requires.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        check_shape_data(&shape, data.len())?;
        Ok(NpyArray { shape, data })
    }

    /// Reads an NPY file held in memory. Accepts `f32`, `f64`, `u8`, `i8`, `u16`, `i16`,
    /// `u32`, `i32`, `u64` and `i64` elements (either byte order, C or Fortran order) and
    /// converts them to `f32` (integers above 2^24 lose precision, as `as f32` does).
    pub fn from_npy_bytes(bytes: &[u8]) -> Result<Self> {
        let parsed = parse(bytes)?;
        let data: Vec<f32> = match parsed.kind()? {
            (TypeChar::Float, 4) => parsed.read::<f32>()?,
            (TypeChar::Float, 8) => parsed
                .read::<f64>()?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
            (TypeChar::Uint, 1) => parsed.read::<u8>()?.into_iter().map(f32::from).collect(),
            (TypeChar::Int, 1) => parsed.read::<i8>()?.into_iter().map(f32::from).collect(),
            (TypeChar::Uint, 2) => parsed.read::<u16>()?.into_iter().map(f32::from).collect(),
            (TypeChar::Int, 2) => parsed.read::<i16>()?.into_iter().map(f32::from).collect(),
            (TypeChar::Uint, 4) => parsed
                .read::<u32>()?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
            (TypeChar::Int, 4) => parsed
                .read::<i32>()?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
            (TypeChar::Uint, 8) => parsed
                .read::<u64>()?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
            (TypeChar::Int, 8) => parsed
                .read::<i64>()?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
            _ => return Err(parsed.unsupported("a real number or integer dtype")),
        };
        let data = parsed.to_c_order(data);
        Ok(NpyArray {
            shape: parsed.shape,
            data,
        })
    }

    /// Reads an NPY file from a reader (read to its end).
    pub fn from_reader(mut reader: impl Read) -> Result<Self> {
        Self::from_npy_bytes(&read_all(&mut reader)?)
    }

    /// Convenience: reads an NPY file from disk.
    pub fn from_npy_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_npy_bytes(&read_file(path.as_ref())?)
    }

    /// Writes the array as a little-endian `f32` NPY file (format version 1.0, C order).
    pub fn write_npy(&self, writer: impl Write) -> Result<()> {
        check_shape_data(&self.shape, self.data.len())?;
        let shape: Vec<u64> = self.shape.iter().map(|&d| d as u64).collect();
        let mut w = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape)
            .writer(writer)
            .begin_nd()
            .map_err(DataIoError::Write)?;
        w.extend(self.data.iter().copied())
            .map_err(DataIoError::Write)?;
        w.finish().map_err(DataIoError::Write)
    }

    /// Serialises the array as `f32` NPY bytes.
    pub fn to_npy_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(128 + 4 * self.data.len());
        self.write_npy(&mut out)?;
        Ok(out)
    }

    /// Convenience: writes the array as an `f32` NPY file on disk.
    pub fn write_npy_file(&self, path: impl AsRef<Path>) -> Result<()> {
        write_file(path.as_ref(), &self.to_npy_bytes()?)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The `i`-th sub-array along the first axis (e.g. one image of a batch), or `None` when
    /// the array is a scalar or `i` is out of range.
    pub fn outer(&self, i: usize) -> Option<&[f32]> {
        let (&n, rest) = self.shape.split_first()?;
        if i >= n {
            return None;
        }
        let inner = shape_len(rest)?;
        self.data.get(i * inner..(i + 1) * inner)
    }
}

impl NpyU8 {
    /// Reads an NPY file of `u8` (`|u1`) elements held in memory; any other dtype is an
    /// error, so that no value is silently rounded.
    pub fn from_npy_bytes(bytes: &[u8]) -> Result<Self> {
        let parsed = parse(bytes)?;
        let data = match parsed.kind()? {
            (TypeChar::Uint, 1) => parsed.read::<u8>()?,
            _ => return Err(parsed.unsupported("uint8")),
        };
        let data = parsed.to_c_order(data);
        Ok(NpyU8 {
            shape: parsed.shape,
            data,
        })
    }

    /// Convenience: reads a `u8` NPY file from disk.
    pub fn from_npy_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_npy_bytes(&read_file(path.as_ref())?)
    }
}

/// Reads a 1-D array of integer labels (any integer dtype, either byte order) as `i64`.
pub fn read_labels(bytes: &[u8]) -> Result<Vec<i64>> {
    let parsed = parse(bytes)?;
    if parsed.shape.len() != 1 {
        return Err(DataIoError::ShapeMismatch {
            what: "label array".into(),
            expected: "(N,)".into(),
            found: parsed.shape.clone(),
        });
    }
    Ok(match parsed.kind()? {
        (TypeChar::Int, 8) => parsed.read::<i64>()?,
        (TypeChar::Int, 4) => parsed.read::<i32>()?.into_iter().map(i64::from).collect(),
        (TypeChar::Int, 2) => parsed.read::<i16>()?.into_iter().map(i64::from).collect(),
        (TypeChar::Int, 1) => parsed.read::<i8>()?.into_iter().map(i64::from).collect(),
        (TypeChar::Uint, 4) => parsed.read::<u32>()?.into_iter().map(i64::from).collect(),
        (TypeChar::Uint, 2) => parsed.read::<u16>()?.into_iter().map(i64::from).collect(),
        (TypeChar::Uint, 1) => parsed.read::<u8>()?.into_iter().map(i64::from).collect(),
        (TypeChar::Uint, 8) => parsed
            .read::<u64>()?
            .into_iter()
            .map(|v| {
                i64::try_from(v)
                    .map_err(|_| DataIoError::ValueOutOfRange(format!("label {v} exceeds i64")))
            })
            .collect::<Result<_>>()?,
        _ => return Err(parsed.unsupported("an integer dtype")),
    })
}

/// Reads integer labels from a reader (read to its end). See [`read_labels`].
pub fn read_labels_from_reader(mut reader: impl Read) -> Result<Vec<i64>> {
    read_labels(&read_all(&mut reader)?)
}

/// Convenience: reads integer labels from an NPY file on disk. See [`read_labels`].
pub fn read_labels_file(path: impl AsRef<Path>) -> Result<Vec<i64>> {
    read_labels(&read_file(path.as_ref())?)
}

/// Writes labels as a 1-D little-endian `i64` NPY file.
pub fn write_labels_npy(writer: impl Write, labels: &[i64]) -> Result<()> {
    let mut w = npyz::WriteOptions::<i64>::new()
        .default_dtype()
        .shape(&[labels.len() as u64])
        .writer(writer)
        .begin_nd()
        .map_err(DataIoError::Write)?;
    w.extend(labels.iter().copied())
        .map_err(DataIoError::Write)?;
    w.finish().map_err(DataIoError::Write)
}

/// Convenience: writes labels as a 1-D `i64` NPY file on disk.
pub fn write_labels_npy_file(path: impl AsRef<Path>, labels: &[i64]) -> Result<()> {
    let mut out = Vec::with_capacity(128 + 8 * labels.len());
    write_labels_npy(&mut out, labels)?;
    write_file(path.as_ref(), &out)
}

fn check_shape_data(shape: &[usize], found: usize) -> Result<()> {
    let expected = shape_len(shape);
    if expected != Some(found) {
        return Err(DataIoError::ShapeDataMismatch {
            shape: shape.to_vec(),
            expected: expected.unwrap_or(usize::MAX),
            found,
        });
    }
    Ok(())
}

fn read_all(reader: &mut impl Read) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|source| DataIoError::Io {
            path: "<reader>".into(),
            source,
        })?;
    Ok(bytes)
}

fn malformed(msg: impl Into<String>) -> DataIoError {
    DataIoError::MalformedNpy(msg.into())
}

/// What [`precheck`] learns from the raw bytes before `npyz` sees them.
#[derive(Debug)]
struct Prechecked {
    shape: Vec<usize>,
    /// Number of elements (product of the shape, checked).
    count: usize,
}

/// Validates the parts of an NPY file that `npyz` trusts: magic, version, header length and
/// shape (whose element count is computed with checked arithmetic).
fn precheck(bytes: &[u8]) -> Result<Prechecked> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < MAGIC.len() + 2 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(malformed("missing \\x93NUMPY magic"));
    }
    let major = bytes[6];
    let (header_len, start): (usize, usize) = match major {
        1 => {
            let b = bytes
                .get(8..10)
                .ok_or_else(|| malformed("truncated header length"))?;
            (usize::from(u16::from_le_bytes([b[0], b[1]])), 10)
        }
        2 | 3 => {
            let b = bytes
                .get(8..12)
                .ok_or_else(|| malformed("truncated header length"))?;
            let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            (
                usize::try_from(len).map_err(|_| malformed("header too long"))?,
                12,
            )
        }
        v => return Err(DataIoError::UnsupportedNpy(format!("format version {v}"))),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| malformed("truncated header"))?;
    let text = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| malformed("header is not valid text"))?;
    let depth = bracket_depth(text);
    if depth > MAX_HEADER_NESTING {
        return Err(malformed(format!(
            "header nests brackets {depth} deep; an NPY header nests at most \
             {MAX_HEADER_NESTING} (a dict holding the shape tuple, or a structured dtype)"
        )));
    }
    let shape = parse_shape(text)?;
    // npyz multiplies out prefix products of the shape (its strides) unchecked, so the
    // product of the non-zero dimensions must fit even when a zero makes the count 0.
    shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| malformed("shape product overflows"))?;
    let count = shape_len(&shape).ok_or_else(|| malformed("shape product overflows"))?;
    Ok(Prechecked { shape, count })
}

/// The deepest bracket nesting a header may have. numpy writes a dict holding the shape
/// tuple (2 deep); a structured dtype, a list of tuples, adds 2. Checked before `npyz`
/// parses the header: its Python-literal parser backtracks exponentially in the nesting
/// depth (12 unclosed `{` took 11 s, 14 took 2 min; the npy fuzz target's
/// `fuzz/regressions/npy/timeout-a1b3…` had 38).
const MAX_HEADER_NESTING: usize = 4;

/// The deepest nesting of `(`, `[` and `{` in `text`, quotes not considered (a valid
/// header holds no brackets inside its strings).
fn bracket_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for c in text.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Extracts the `shape` tuple from a header dict literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_shape(text: &str) -> Result<Vec<usize>> {
    let key_pos = ["'shape'", "\"shape\""]
        .iter()
        .find_map(|k| text.find(k).map(|p| p + k.len()))
        .ok_or_else(|| malformed("header has no 'shape'"))?;
    let rest = text[key_pos..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .ok_or_else(|| malformed("bad 'shape' entry"))?
        .trim_start();
    let rest = rest
        .strip_prefix('(')
        .ok_or_else(|| malformed("'shape' is not a tuple"))?;
    let close = rest
        .find(')')
        .ok_or_else(|| malformed("unterminated 'shape' tuple"))?;
    rest[..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| malformed(format!("bad dimension {s:?}")))
        })
        .collect()
}

/// An NPY file whose header has been parsed and whose data length has been checked.
struct Parsed<'a> {
    header: NpyHeader,
    shape: Vec<usize>,
    data: &'a [u8],
}

fn parse(bytes: &[u8]) -> Result<Parsed<'_>> {
    let pre = precheck(bytes)?;
    let mut cursor = bytes;
    let header =
        NpyHeader::from_reader(&mut cursor).map_err(|e| malformed(format!("header: {e}")))?;
    let npyz_shape: Vec<u64> = pre.shape.iter().map(|&d| d as u64).collect();
    if header.shape() != npyz_shape.as_slice() {
        return Err(malformed("ambiguous 'shape' entry in header"));
    }
    if header.uses_pickled_array() {
        return Err(DataIoError::UnsupportedNpy("pickled Python objects".into()));
    }
    let item = match header.dtype() {
        DType::Plain(ts) => ts.num_bytes(),
        other => {
            return Err(DataIoError::UnsupportedNpy(format!(
                "dtype {}",
                other.descr()
            )));
        }
    }
    .ok_or_else(|| DataIoError::UnsupportedNpy("element size".into()))?;
    let expected = pre
        .count
        .checked_mul(item)
        .ok_or_else(|| malformed("data size overflows"))?;
    if cursor.len() != expected {
        return Err(malformed(format!(
            "data section has {} bytes, shape {:?} needs {expected}",
            cursor.len(),
            pre.shape
        )));
    }
    Ok(Parsed {
        header,
        shape: pre.shape,
        data: cursor,
    })
}

impl Parsed<'_> {
    fn kind(&self) -> Result<(TypeChar, usize)> {
        match self.header.dtype() {
            DType::Plain(ts) => Ok((ts.type_char(), ts.num_bytes().unwrap_or(0))),
            other => Err(DataIoError::UnsupportedNpy(format!(
                "dtype {}",
                other.descr()
            ))),
        }
    }

    fn unsupported(&self, wanted: &str) -> DataIoError {
        DataIoError::UnsupportedNpy(format!(
            "dtype {} (wanted {wanted})",
            self.header.dtype().descr()
        ))
    }

    fn read<T: npyz::Deserialize>(&self) -> Result<Vec<T>> {
        NpyFile::with_header(self.header.clone(), self.data)
            .into_vec::<T>()
            .map_err(|e| malformed(format!("data: {e}")))
    }

    /// Reorders Fortran-order data into C order (no-op for C order).
    fn to_c_order<T: Copy>(&self, data: Vec<T>) -> Vec<T> {
        if self.header.order() == Order::C || self.shape.len() < 2 {
            return data;
        }
        fortran_to_c(&self.shape, &data)
    }
}

fn fortran_to_c<T: Copy>(shape: &[usize], data: &[T]) -> Vec<T> {
    let n = data.len();
    if n == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    // Fortran strides: first axis fastest.
    let mut strides = vec![1usize; shape.len()];
    for k in 1..shape.len() {
        strides[k] = strides[k - 1] * shape[k - 1];
    }
    for _ in 0..n {
        let off: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out.push(data[off]);
        // Increment the C-order multi-index (last axis fastest).
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// Builds an NPY v1.0 file by hand (so the tests do not depend on the writer).
    pub(crate) fn npy_bytes(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    /// A C-order `|u1` NPY file with the given shape.
    pub(crate) fn u8_npy(shape: &[usize], data: &[u8]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let tuple = if shape.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        npy_bytes("|u1", false, &tuple, data)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::npy_bytes;
    use super::*;

    #[test]
    fn f32_round_trip_preserves_shape_and_bits() {
        let mut data: Vec<f32> = (0..24).map(|i| (i as f32 - 7.5) * 0.1).collect();
        data[0] = f32::MIN_POSITIVE;
        data[1] = -0.0;
        let a = NpyArray::new(vec![2, 3, 4], data).unwrap();
        let bytes = a.to_npy_bytes().unwrap();
        let b = NpyArray::from_npy_bytes(&bytes).unwrap();
        assert_eq!(b.shape, vec![2, 3, 4]);
        assert_eq!(
            a.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(b.outer(1).unwrap(), &a.data[12..24]);
        assert!(b.outer(2).is_none());
    }

    #[test]
    fn scalar_and_empty_arrays_round_trip() {
        let s = NpyArray::new(vec![], vec![3.5]).unwrap();
        assert_eq!(
            NpyArray::from_npy_bytes(&s.to_npy_bytes().unwrap()).unwrap(),
            s
        );
        let e = NpyArray::new(vec![0, 5], vec![]).unwrap();
        assert_eq!(
            NpyArray::from_npy_bytes(&e.to_npy_bytes().unwrap()).unwrap(),
            e
        );
    }

    #[test]
    fn new_rejects_inconsistent_shape() {
        assert!(matches!(
            NpyArray::new(vec![2, 2], vec![0.0; 3]),
            Err(DataIoError::ShapeDataMismatch {
                expected: 4,
                found: 3,
                ..
            })
        ));
        let bad = NpyArray {
            shape: vec![5],
            data: vec![1.0],
        };
        assert!(bad.to_npy_bytes().is_err());
    }

    #[test]
    fn reads_other_dtypes_as_f32() {
        let f64s: Vec<u8> = [1.5f64, -2.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a = NpyArray::from_npy_bytes(&npy_bytes("<f8", false, "(2,)", &f64s)).unwrap();
        assert_eq!(a.data, vec![1.5, -2.25]);

        let a =
            NpyArray::from_npy_bytes(&npy_bytes("|u1", false, "(1, 3)", &[0, 128, 255])).unwrap();
        assert_eq!(
            (a.shape.clone(), a.data.clone()),
            (vec![1, 3], vec![0.0, 128.0, 255.0])
        );

        let i64s: Vec<u8> = [-3i64, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = NpyArray::from_npy_bytes(&npy_bytes("<i8", false, "(2,)", &i64s)).unwrap();
        assert_eq!(a.data, vec![-3.0, 9.0]);

        let be: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let a = NpyArray::from_npy_bytes(&npy_bytes(">f4", false, "(2,)", &be)).unwrap();
        assert_eq!(a.data, vec![1.0, 2.0]);
    }

    #[test]
    fn fortran_order_is_transposed_to_c() {
        // Logical array [[0,1,2],[3,4,5]] stored column-major: 0,3,1,4,2,5.
        let a = NpyArray::from_npy_bytes(&npy_bytes("|u1", true, "(2, 3)", &[0, 3, 1, 4, 2, 5]))
            .unwrap();
        assert_eq!(a.data, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn labels_read_from_several_integer_dtypes() {
        let mut out = Vec::new();
        write_labels_npy(&mut out, &[0, 9, 3]).unwrap();
        assert_eq!(read_labels(&out).unwrap(), vec![0, 9, 3]);
        assert_eq!(
            read_labels(&npy_bytes("|u1", false, "(2,)", &[7, 2])).unwrap(),
            vec![7, 2]
        );
        let i32s: Vec<u8> = [-1i32, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            read_labels(&npy_bytes("<i4", false, "(2,)", &i32s)).unwrap(),
            vec![-1, 5]
        );
        let big: Vec<u8> = u64::MAX.to_le_bytes().to_vec();
        assert!(matches!(
            read_labels(&npy_bytes("<u8", false, "(1,)", &big)),
            Err(DataIoError::ValueOutOfRange(_))
        ));
        // Floats are not labels; 2-D is not a label vector.
        assert!(matches!(
            read_labels(
                &NpyArray::new(vec![1], vec![1.0])
                    .unwrap()
                    .to_npy_bytes()
                    .unwrap()
            ),
            Err(DataIoError::UnsupportedNpy(_))
        ));
        assert!(matches!(
            read_labels(&npy_bytes("|u1", false, "(1, 2)", &[1, 2])),
            Err(DataIoError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn u8_reader_refuses_other_dtypes() {
        let a = NpyU8::from_npy_bytes(&npy_bytes("|u1", false, "(2, 1, 3)", &[1, 2, 3, 4, 5, 6]))
            .unwrap();
        assert_eq!(a.shape, vec![2, 1, 3]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
        let f = NpyArray::new(vec![1], vec![1.0])
            .unwrap()
            .to_npy_bytes()
            .unwrap();
        assert!(matches!(
            NpyU8::from_npy_bytes(&f),
            Err(DataIoError::UnsupportedNpy(_))
        ));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let a = NpyArray::new(vec![3, 5], (0..15).map(|i| i as f32).collect()).unwrap();
        let bytes = a.to_npy_bytes().unwrap();
        for cut in 0..bytes.len() {
            assert!(
                NpyArray::from_npy_bytes(&bytes[..cut]).is_err(),
                "cut at {cut} accepted"
            );
            assert!(read_labels(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            NpyArray::from_npy_bytes(&longer),
            Err(DataIoError::MalformedNpy(_))
        ));
    }

    #[test]
    fn deeply_nested_headers_are_refused_before_parsing() {
        // 38 unclosed braces inside the dict (40 with the dict and the shape tuple): npyz's
        // parser would backtrack for hours.
        let deep = npy_bytes(
            &format!("<f4', 'x': {}'", "{".repeat(38)),
            false,
            "(2,)",
            &[0; 8],
        );
        let err = NpyArray::from_npy_bytes(&deep).unwrap_err().to_string();
        assert!(err.contains("nests brackets 40 deep"), "{err}");
        assert!(read_labels(&deep).is_err());
        // Depth 2 (numpy's own headers) and a structured dtype's depth 4 pass the check.
        assert_eq!(bracket_depth("{'descr': '<f4', 'shape': (2, 3), }"), 2);
        assert_eq!(
            bracket_depth("{'descr': [('a', '<f4', (2,))], 'shape': (1,), }"),
            4
        );
        let ok = npy_bytes("<f4", false, "(2,)", &[0; 8]);
        assert_eq!(NpyArray::from_npy_bytes(&ok).unwrap().shape, vec![2]);
    }

    #[test]
    fn hostile_headers_are_errors() {
        // Shape whose product overflows usize.
        let huge = npy_bytes(
            "<f4",
            false,
            "(18446744073709551615, 18446744073709551615)",
            &[],
        );
        assert!(matches!(
            NpyArray::from_npy_bytes(&huge),
            Err(DataIoError::MalformedNpy(_))
        ));
        // A zero dimension does not excuse overflowing partial products.
        let zero = npy_bytes("<f4", false, "(0, 4294967296, 4294967296)", &[]);
        assert!(matches!(
            NpyArray::from_npy_bytes(&zero),
            Err(DataIoError::MalformedNpy(_))
        ));
        let zero_f = npy_bytes("<f4", true, "(4294967296, 4294967296, 0)", &[]);
        assert!(matches!(
            NpyArray::from_npy_bytes(&zero_f),
            Err(DataIoError::MalformedNpy(_))
        ));
        // Shape claiming far more data than present.
        let big = npy_bytes("<f4", false, "(1000000000,)", &[0; 8]);
        assert!(matches!(
            NpyArray::from_npy_bytes(&big),
            Err(DataIoError::MalformedNpy(_))
        ));
        // Negative dimension, missing shape, garbage header, wrong magic, bad version.
        assert!(NpyArray::from_npy_bytes(&npy_bytes("<f4", false, "(-1,)", &[])).is_err());
        let no_shape = npy_bytes("<f4", false, "(1,)", &[0; 4])
            .iter()
            .map(|&b| if b == b's' { b'x' } else { b })
            .collect::<Vec<_>>();
        assert!(NpyArray::from_npy_bytes(&no_shape).is_err());
        assert!(NpyArray::from_npy_bytes(b"\x93NUMPY\x01\x00\x04\x00{{{{").is_err());
        assert!(NpyArray::from_npy_bytes(b"PK\x03\x04 not an npy file").is_err());
        let mut v9 = npy_bytes("<f4", false, "(1,)", &[0; 4]);
        v9[6] = 9;
        assert!(matches!(
            NpyArray::from_npy_bytes(&v9),
            Err(DataIoError::UnsupportedNpy(_))
        ));
        // Header length pointing past the end (v2 with a u32 length).
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        v2.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(NpyArray::from_npy_bytes(&v2).is_err());
        // Unsupported element types.
        assert!(matches!(
            NpyArray::from_npy_bytes(&npy_bytes("<c8", false, "(1,)", &[0; 8])),
            Err(DataIoError::UnsupportedNpy(_))
        ));
        assert!(matches!(
            NpyArray::from_npy_bytes(&npy_bytes("|O", false, "(1,)", &[0; 8])),
            Err(DataIoError::UnsupportedNpy(_)) | Err(DataIoError::MalformedNpy(_))
        ));
    }

    /// Random byte corruptions and truncations of valid files never panic (errors or, for
    /// corruptions inside the data section, a successfully decoded array).
    #[test]
    fn corrupted_files_never_panic() {
        let f32s = NpyArray::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
            .unwrap()
            .to_npy_bytes()
            .unwrap();
        let mut labels = Vec::new();
        write_labels_npy(&mut labels, &[1, 2, 3]).unwrap();
        let fortran = npy_bytes("|u1", true, "(2, 3)", &[0, 3, 1, 4, 2, 5]);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut decoded = 0;
        for base in [&f32s, &labels, &fortran] {
            for _ in 0..3000 {
                let mut b = base.clone();
                for _ in 0..1 + next() % 4 {
                    let i = (next() % b.len() as u64) as usize;
                    b[i] = match next() % 4 {
                        0 => b[i] ^ (1 << (next() % 8)),
                        1 => b"0123456789(),' "[(next() % 15) as usize],
                        2 => 0xff,
                        _ => 0,
                    };
                }
                let cut = b.len() - (next() % 3) as usize;
                let b = &b[..cut];
                decoded += usize::from(NpyArray::from_npy_bytes(b).is_ok());
                let _ = read_labels(b);
                let _ = NpyU8::from_npy_bytes(b);
            }
        }
        assert!(
            decoded > 0,
            "no corrupted file decoded at all: the corruption is too coarse"
        );
    }

    #[test]
    fn reader_and_file_helpers() {
        let a = NpyArray::new(vec![2], vec![1.0, 2.0]).unwrap();
        let bytes = a.to_npy_bytes().unwrap();
        assert_eq!(NpyArray::from_reader(&bytes[..]).unwrap(), a);
        let dir = std::env::temp_dir().join(format!("lutq-dataio-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        a.write_npy_file(&p).unwrap();
        assert_eq!(NpyArray::from_npy_file(&p).unwrap(), a);
        let l = dir.join("l.npy");
        write_labels_npy_file(&l, &[4, 1]).unwrap();
        assert_eq!(read_labels_file(&l).unwrap(), vec![4, 1]);
        let missing = NpyArray::from_npy_file(dir.join("missing.npy"));
        assert!(matches!(missing, Err(DataIoError::Io { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
