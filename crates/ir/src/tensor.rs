//! Element types, tensor types and constant tensors.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::IrError;

/// Element type of a tensor. The float IR uses only `F32`; the integer types exist for the
/// quantized IR (8-bit activations, int32 accumulators and biases).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ElemType {
    F32,
    I8,
    U8,
    I32,
}

impl ElemType {
    pub fn size_bytes(self) -> usize {
        match self {
            ElemType::F32 | ElemType::I32 => 4,
            ElemType::I8 | ElemType::U8 => 1,
        }
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ElemType::F32 => "f32",
            ElemType::I8 => "i8",
            ElemType::U8 => "u8",
            ElemType::I32 => "i32",
        })
    }
}

/// Static type of a tensor: element type and shape. Every dimension is known; symbolic
/// dimensions are bound when a model is imported.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorType {
    pub elem: ElemType,
    pub shape: Vec<usize>,
}

impl TensorType {
    pub fn new(elem: ElemType, shape: impl Into<Vec<usize>>) -> Self {
        TensorType {
            elem,
            shape: shape.into(),
        }
    }

    pub fn f32(shape: impl Into<Vec<usize>>) -> Self {
        Self::new(ElemType::F32, shape)
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements (1 for a scalar).
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn size_bytes(&self) -> usize {
        self.num_elements() * self.elem.size_bytes()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.elem)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The elements of a constant tensor, row-major.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TensorData {
    F32(Vec<f32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I32(Vec<i32>),
}

impl TensorData {
    pub fn elem(&self) -> ElemType {
        match self {
            TensorData::F32(_) => ElemType::F32,
            TensorData::I8(_) => ElemType::I8,
            TensorData::U8(_) => ElemType::U8,
            TensorData::I32(_) => ElemType::I32,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::I32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Little-endian bytes of the elements, for hashing.
    fn le_bytes(&self) -> Vec<u8> {
        match self {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
            TensorData::U8(v) => v.clone(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// Minimum and maximum as f64 (NaN elements are skipped); `None` when empty.
    fn min_max(&self) -> Option<(f64, f64)> {
        let values: Box<dyn Iterator<Item = f64>> = match self {
            TensorData::F32(v) => Box::new(v.iter().map(|&x| x as f64)),
            TensorData::I8(v) => Box::new(v.iter().map(|&x| x as f64)),
            TensorData::U8(v) => Box::new(v.iter().map(|&x| x as f64)),
            TensorData::I32(v) => Box::new(v.iter().map(|&x| x as f64)),
        };
        values
            .filter(|x| !x.is_nan())
            .fold(None, |acc, x| match acc {
                None => Some((x, x)),
                Some((lo, hi)) => Some((lo.min(x), hi.max(x))),
            })
    }
}

/// A constant tensor owned by the graph (weights, biases, BatchNorm statistics, …).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// Checks that the number of elements matches the shape.
    pub fn new(shape: impl Into<Vec<usize>>, data: TensorData) -> Result<Self, IrError> {
        let shape = shape.into();
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(IrError::ConstantSize {
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(Tensor { shape, data })
    }

    pub fn f32(shape: impl Into<Vec<usize>>, data: Vec<f32>) -> Result<Self, IrError> {
        Self::new(shape, TensorData::F32(data))
    }

    /// A rank-0 f32 tensor.
    pub fn scalar_f32(value: f32) -> Self {
        Tensor {
            shape: vec![],
            data: TensorData::F32(vec![value]),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn ty(&self) -> TensorType {
        TensorType::new(self.data.elem(), self.shape.clone())
    }

    /// The elements when this is an f32 tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Summary used by the text dump: content hash, min and max. Never the full content.
    pub fn summary(&self) -> TensorSummary {
        TensorSummary {
            hash: content_hash(&self.shape, &self.data),
            min_max: self.data.min_max(),
        }
    }
}

/// What the text dump prints of a constant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorSummary {
    /// 32-bit FNV-1a hash of element type, shape and little-endian contents: stable across
    /// platforms and runs, so snapshot diffs show which weights changed.
    pub hash: u32,
    pub min_max: Option<(f64, f64)>,
}

impl fmt::Display for TensorSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:08x}", self.hash)?;
        if let Some((lo, hi)) = self.min_max {
            write!(f, " [{}, {}]", fmt_value(lo), fmt_value(hi))?;
        }
        Ok(())
    }
}

/// Four significant digits in scientific notation: short, and independent of magnitude.
fn fmt_value(x: f64) -> String {
    if x == 0.0 {
        "0".to_string()
    } else if x.fract() == 0.0 && x.abs() < 1e6 {
        format!("{x}")
    } else {
        format!("{x:.3e}")
    }
}

fn content_hash(shape: &[usize], data: &TensorData) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(PRIME);
        }
    };
    feed(data.elem().to_string().as_bytes());
    for &d in shape {
        feed(&(d as u64).to_le_bytes());
    }
    feed(&data.le_bytes());
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_mismatch_is_an_error() {
        let err = Tensor::f32([2, 3], vec![0.0; 5]).unwrap_err();
        assert!(matches!(
            err,
            IrError::ConstantSize {
                expected: 6,
                actual: 5,
                ..
            }
        ));
    }

    #[test]
    fn hash_depends_on_shape_and_content() {
        let a = Tensor::f32([2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let b = Tensor::f32([4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let c = Tensor::f32([2, 2], vec![1.0, 2.0, 3.0, 4.5]).unwrap();
        let ha = a.summary().hash;
        assert_ne!(ha, b.summary().hash);
        assert_ne!(ha, c.summary().hash);
        assert_eq!(ha, a.clone().summary().hash);
    }

    #[test]
    fn summary_skips_nan_and_formats_compactly() {
        let t = Tensor::f32([3], vec![f32::NAN, -0.125, 3.0]).unwrap();
        let s = t.summary();
        assert_eq!(s.min_max, Some((-0.125, 3.0)));
        assert!(s.to_string().ends_with("[-1.250e-1, 3]"), "{s}");
    }

    #[test]
    fn type_display() {
        assert_eq!(
            TensorType::f32([1, 3, 224, 224]).to_string(),
            "f32[1,3,224,224]"
        );
        assert_eq!(TensorType::new(ElemType::U8, []).to_string(), "u8[]");
    }
}
