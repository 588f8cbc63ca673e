//! IDX reading (the MNIST / Fashion-MNIST container), plain or gzip-compressed.
//!
//! An IDX file is: two zero bytes, an element-type byte (only `0x08`, unsigned byte, is
//! accepted), the number of dimensions, each dimension as a big-endian `u32`, then the data.

use std::io::Read;
use std::path::Path;

use crate::error::{DataIoError, Result, read_file};

/// The contents of an IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions as stored in the header, outermost first.
    pub shape: Vec<usize>,
    /// Elements in C order.
    pub data: Vec<u8>,
}

/// A stack of greyscale images read from an IDX file with three dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count * rows * cols` pixels, image after image, row-major.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// The pixels of image `i`, or `None` when out of range.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        if i >= self.count {
            return None;
        }
        let n = self.rows.checked_mul(self.cols)?;
        self.pixels.get(i.checked_mul(n)?..(i + 1).checked_mul(n)?)
    }

    /// The images as an `(N,1,rows,cols)` float tensor of `pixel / 255`.
    pub fn to_unit_f32(&self) -> crate::NpyArray {
        crate::NpyArray {
            shape: vec![self.count, 1, self.rows, self.cols],
            data: self.pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
        }
    }
}

fn malformed(msg: impl Into<String>) -> DataIoError {
    DataIoError::MalformedIdx(msg.into())
}

/// Upper bound on the size of a decompressed IDX file (the full Fashion-MNIST training set is
/// 47 MB); larger streams are rejected rather than exhausting memory.
pub const MAX_DECOMPRESSED_BYTES: u64 = 1 << 30;

/// Returns the raw IDX bytes, decompressing gzip input (recognised by its `1f 8b` magic).
pub fn decompress_if_gzip(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .take(MAX_DECOMPRESSED_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(DataIoError::Gzip)?;
        if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
            return Err(malformed("decompressed size exceeds 1 GiB"));
        }
        Ok(out.into())
    } else {
        Ok(bytes.into())
    }
}

/// Reads an IDX file of unsigned bytes (plain or gzipped) held in memory.
pub fn read_idx(bytes: &[u8]) -> Result<IdxArray> {
    let raw = decompress_if_gzip(bytes)?;
    let raw: &[u8] = &raw;
    let head = raw
        .get(..4)
        .ok_or_else(|| malformed("shorter than the 4-byte magic"))?;
    if head[0] != 0 || head[1] != 0 {
        return Err(malformed("magic does not start with two zero bytes"));
    }
    if head[2] != 0x08 {
        return Err(malformed(format!(
            "element type 0x{:02x} is not unsigned byte (0x08)",
            head[2]
        )));
    }
    let ndim = usize::from(head[3]);
    let dims_end = 4 + 4 * ndim;
    let dims = raw
        .get(4..dims_end)
        .ok_or_else(|| malformed("truncated dimensions"))?;
    let shape: Vec<usize> = dims
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| malformed("dimension product overflows"))?;
    let data = &raw[dims_end..];
    if data.len() != count {
        return Err(malformed(format!(
            "shape {shape:?} needs {count} bytes of data, found {}",
            data.len()
        )));
    }
    Ok(IdxArray {
        shape,
        data: data.to_vec(),
    })
}

/// Reads an IDX image file: three dimensions `(count, rows, cols)`.
pub fn read_idx_images(bytes: &[u8]) -> Result<IdxImages> {
    let a = read_idx(bytes)?;
    match a.shape[..] {
        [count, rows, cols] => Ok(IdxImages {
            count,
            rows,
            cols,
            pixels: a.data,
        }),
        _ => Err(DataIoError::ShapeMismatch {
            what: "IDX images".into(),
            expected: "(count, rows, cols)".into(),
            found: a.shape,
        }),
    }
}

/// Reads an IDX label file: one dimension.
pub fn read_idx_labels(bytes: &[u8]) -> Result<Vec<u8>> {
    let a = read_idx(bytes)?;
    if a.shape.len() != 1 {
        return Err(DataIoError::ShapeMismatch {
            what: "IDX labels".into(),
            expected: "(count,)".into(),
            found: a.shape,
        });
    }
    Ok(a.data)
}

/// Convenience: [`read_idx_images`] on a file.
pub fn read_idx_images_file(path: impl AsRef<Path>) -> Result<IdxImages> {
    read_idx_images(&read_file(path.as_ref())?)
}

/// Convenience: [`read_idx_labels`] on a file.
pub fn read_idx_labels_file(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    read_idx_labels(&read_file(path.as_ref())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 0x08, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn reads_images_and_labels_plain_and_gzipped() {
        let pixels: Vec<u8> = (0..2 * 3 * 2).map(|i| i as u8 * 20).collect();
        let img = idx(&[2, 3, 2], &pixels);
        for bytes in [img.clone(), gzip(&img)] {
            let im = read_idx_images(&bytes).unwrap();
            assert_eq!((im.count, im.rows, im.cols), (2, 3, 2));
            assert_eq!(im.image(1).unwrap(), &pixels[6..12]);
            assert!(im.image(2).is_none());
            let t = im.to_unit_f32();
            assert_eq!(t.shape, vec![2, 1, 3, 2]);
            assert_eq!(t.data[1], 20.0 / 255.0);
        }
        let lab = idx(&[4], &[3, 0, 9, 1]);
        assert_eq!(read_idx_labels(&gzip(&lab)).unwrap(), vec![3, 0, 9, 1]);
        // Labels are not images and vice versa.
        assert!(matches!(
            read_idx_images(&lab),
            Err(DataIoError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            read_idx_labels(&img),
            Err(DataIoError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn truncated_and_corrupt_inputs_are_errors() {
        let img = idx(&[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8]);
        for cut in 0..img.len() {
            assert!(read_idx(&img[..cut]).is_err(), "cut at {cut} accepted");
        }
        let gz = gzip(&img);
        for cut in 2..gz.len() {
            assert!(read_idx(&gz[..cut]).is_err(), "gzip cut at {cut} accepted");
        }
        let mut extra = img.clone();
        extra.push(0);
        assert!(read_idx(&extra).is_err());
        let mut wrong_type = img.clone();
        wrong_type[2] = 0x0d; // float
        assert!(matches!(
            read_idx(&wrong_type),
            Err(DataIoError::MalformedIdx(_))
        ));
        let mut bad_magic = img.clone();
        bad_magic[0] = 1;
        assert!(read_idx(&bad_magic).is_err());
        // Dimensions whose product overflows or exceeds the data.
        assert!(read_idx(&idx(&[u32::MAX, u32::MAX, u32::MAX], &[])).is_err());
        assert!(read_idx(&idx(&[60000, 28, 28], &[0; 10])).is_err());
        // Corrupt gzip body.
        let mut bad_gz = gz.clone();
        let mid = bad_gz.len() / 2;
        bad_gz[mid] ^= 0xff;
        assert!(read_idx(&bad_gz).is_err());
    }
}
