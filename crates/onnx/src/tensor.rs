//! Constant tensors: decoding `TensorProto` (initializers, `Constant` values, `.pb` test
//! files) into [`ConstValue`].
//!
//! Float data (FLOAT, and DOUBLE / FLOAT16 / BFLOAT16 converted to f32) and integer data
//! (INT64, INT32 widened to i64, for shape-like operands) are read from `raw_data` or from
//! the typed fields. Anything else is unsupported rather than malformed.

use prost::Message as _;

use crate::error::ImportError;
use crate::proto::TensorProto;
use crate::proto::tensor_proto::{DataLocation, DataType};

/// A constant tensor as the importer holds it before it enters the IR: f32 data, i64 for
/// shape-like operands (Reshape shapes, Pad pads, axes; INT32 is widened to i64), or
/// booleans (masks of shape sub-graphs folded at import).
#[derive(Clone, Debug, PartialEq)]
pub struct ConstValue {
    shape: Vec<usize>,
    data: ConstData,
    /// For integer data read from a narrow ONNX type (INT8, UINT8, INT16, UINT16, INT4,
    /// UINT4) or made by QuantizeLinear: the type's range, which fixes the saturation of
    /// a QuantizeLinear whose zero point this is.
    int_range: Option<(i32, i32)>,
}

/// The elements of a [`ConstValue`], row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

impl ConstData {
    pub fn len(&self) -> usize {
        match self {
            ConstData::F32(v) => v.len(),
            ConstData::I64(v) => v.len(),
            ConstData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ONNX name of the element type.
    pub fn type_name(&self) -> &'static str {
        match self {
            ConstData::F32(_) => "FLOAT",
            ConstData::I64(_) => "INT64",
            ConstData::Bool(_) => "BOOL",
        }
    }

    /// The elements at the given flat indices (each `< len()`), in that order.
    pub(crate) fn select(&self, idx: &[usize]) -> ConstData {
        match self {
            ConstData::F32(v) => ConstData::F32(idx.iter().map(|&i| v[i]).collect()),
            ConstData::I64(v) => ConstData::I64(idx.iter().map(|&i| v[i]).collect()),
            ConstData::Bool(v) => ConstData::Bool(idx.iter().map(|&i| v[i]).collect()),
        }
    }
}

impl ConstValue {
    /// Checks that the element count matches the shape.
    pub fn new(shape: impl Into<Vec<usize>>, data: ConstData) -> Result<Self, lutq_ir::IrError> {
        let shape = shape.into();
        let expected = shape.iter().product::<usize>();
        if expected != data.len() {
            return Err(lutq_ir::IrError::ConstantSize {
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(ConstValue {
            shape,
            data,
            int_range: None,
        })
    }

    /// The same value, marked as holding integers of a narrow type with range `lo..=hi`.
    pub(crate) fn with_int_range(mut self, range: (i32, i32)) -> Self {
        self.int_range = Some(range);
        self
    }

    /// The range of the narrow integer type the data came from, if any.
    pub fn int_range(&self) -> Option<(i32, i32)> {
        self.int_range
    }

    pub fn f32(shape: impl Into<Vec<usize>>, data: Vec<f32>) -> Result<Self, lutq_ir::IrError> {
        Self::new(shape, ConstData::F32(data))
    }

    pub fn i64(shape: impl Into<Vec<usize>>, data: Vec<i64>) -> Result<Self, lutq_ir::IrError> {
        Self::new(shape, ConstData::I64(data))
    }

    pub fn bool(shape: impl Into<Vec<usize>>, data: Vec<bool>) -> Result<Self, lutq_ir::IrError> {
        Self::new(shape, ConstData::Bool(data))
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &ConstData {
        &self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            ConstData::F32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            ConstData::I64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<&[bool]> {
        match &self.data {
            ConstData::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// Consumes the value into its shape and data.
    pub(crate) fn into_parts(self) -> (Vec<usize>, ConstData) {
        (self.shape, self.data)
    }

    /// The IR tensor of an f32 constant (`None` for i64 data, which the float IR does not
    /// hold).
    pub fn to_ir(&self) -> Option<lutq_ir::Tensor> {
        let data = self.as_f32()?.to_vec();
        lutq_ir::Tensor::f32(self.shape.clone(), data).ok()
    }

    /// The same elements under another shape of equal element count.
    pub(crate) fn reshaped(&self, shape: Vec<usize>) -> Option<ConstValue> {
        ConstValue::new(shape, self.data.clone()).ok()
    }
}

/// A tensor read from a `.pb` file: its name (may be empty) and value.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub value: ConstValue,
}

/// Decodes a serialized `TensorProto` (the `input_0.pb` / `output_0.pb` files of the ONNX
/// backend test data) into its name, shape and f32 or i64 data.
pub fn decode_tensor(bytes: &[u8]) -> Result<NamedTensor, ImportError> {
    let proto = TensorProto::decode(bytes)?;
    let name = proto.name().to_string();
    match tensor_value(&proto) {
        Ok(value) => Ok(NamedTensor { name, value }),
        Err(TensorIssue::Malformed(message)) => Err(ImportError::Tensor { name, message }),
        Err(TensorIssue::Unsupported { message, fix }) => {
            Err(ImportError::Unsupported(vec![crate::error::Diagnostic {
                location: crate::error::Location::GraphInput { name },
                kind: crate::error::DiagnosticKind::UnsupportedType,
                message,
                fix,
            }]))
        }
    }
}

/// Why a `TensorProto` could not become a [`ConstValue`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TensorIssue {
    /// The proto contradicts itself (data length vs dims, negative dims).
    Malformed(String),
    /// Valid ONNX that lutq does not read (element type, external data).
    Unsupported { message: String, fix: String },
}

/// The ONNX name of a `TensorProto.DataType` code.
pub(crate) fn data_type_name(code: i32) -> String {
    match DataType::try_from(code) {
        Ok(t) => t.as_str_name().to_string(),
        Err(_) => format!("unknown data type {code}"),
    }
}

/// Converts a `TensorProto` into a [`ConstValue`].
pub(crate) fn tensor_value(t: &TensorProto) -> Result<ConstValue, TensorIssue> {
    if t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty() {
        return Err(TensorIssue::Unsupported {
            message: "its data is stored in an external file, and lutq reads models from bytes".into(),
            fix: "save the model with its data inside: onnx.save_model(onnx.load(path), out, save_as_external_data=False)".into(),
        });
    }
    if t.segment.is_some() {
        return Err(TensorIssue::Unsupported {
            message: "it is stored in segments".into(),
            fix: "re-save the model with onnx.save_model so each tensor is stored whole".into(),
        });
    }
    if t.dims.len() > crate::limits::MAX_RANK {
        return Err(TensorIssue::Malformed(format!(
            "it has {} dimensions, above lutq's limit of {} (lutq_onnx::limits::MAX_RANK, a constant in crates/onnx/src/limits.rs)",
            t.dims.len(),
            crate::limits::MAX_RANK
        )));
    }
    let mut shape = Vec::with_capacity(t.dims.len());
    let mut count: usize = 1;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| {
            TensorIssue::Malformed(format!("negative dimension in dims {:?}", t.dims))
        })?;
        count = count
            .checked_mul(d)
            .ok_or_else(|| TensorIssue::Malformed(format!("dims {:?} overflow", t.dims)))?;
        shape.push(d);
    }
    let code = t.data_type.unwrap_or(0);
    let raw = t.raw_data.as_deref();
    let data = match DataType::try_from(code) {
        Ok(DataType::Float) => ConstData::F32(match raw {
            Some(raw) => le_chunks::<4>(raw, count, "FLOAT")?
                .map(f32::from_le_bytes)
                .collect(),
            None => typed(&t.float_data, count, "float_data")?.to_vec(),
        }),
        Ok(DataType::Double) => ConstData::F32(match raw {
            Some(raw) => le_chunks::<8>(raw, count, "DOUBLE")?
                .map(|b| f64::from_le_bytes(b) as f32)
                .collect(),
            None => typed(&t.double_data, count, "double_data")?
                .iter()
                .map(|&x| x as f32)
                .collect(),
        }),
        Ok(DataType::Float16) => ConstData::F32(match raw {
            Some(raw) => le_chunks::<2>(raw, count, "FLOAT16")?
                .map(|b| f16_to_f32(u16::from_le_bytes(b)))
                .collect(),
            None => typed(&t.int32_data, count, "int32_data")?
                .iter()
                .map(|&x| f16_to_f32(x as u16))
                .collect(),
        }),
        Ok(DataType::Bfloat16) => ConstData::F32(match raw {
            Some(raw) => le_chunks::<2>(raw, count, "BFLOAT16")?
                .map(|b| f32::from_bits((u16::from_le_bytes(b) as u32) << 16))
                .collect(),
            None => typed(&t.int32_data, count, "int32_data")?
                .iter()
                .map(|&x| f32::from_bits((x as u16 as u32) << 16))
                .collect(),
        }),
        Ok(DataType::Int64) => ConstData::I64(match raw {
            Some(raw) => le_chunks::<8>(raw, count, "INT64")?
                .map(i64::from_le_bytes)
                .collect(),
            None => typed(&t.int64_data, count, "int64_data")?.to_vec(),
        }),
        Ok(DataType::Int32) => ConstData::I64(match raw {
            Some(raw) => le_chunks::<4>(raw, count, "INT32")?
                .map(|b| i32::from_le_bytes(b) as i64)
                .collect(),
            None => typed(&t.int32_data, count, "int32_data")?
                .iter()
                .map(|&x| x as i64)
                .collect(),
        }),
        Ok(
            ty @ (DataType::Int8
            | DataType::Uint8
            | DataType::Int16
            | DataType::Uint16
            | DataType::Int4
            | DataType::Uint4),
        ) => {
            let range = narrow_int_range(ty).unwrap_or((0, 0));
            let values = narrow_ints(ty, raw, &t.int32_data, count)?;
            return ConstValue::new(shape, ConstData::I64(values))
                .map(|c| c.with_int_range(range))
                .map_err(|e| TensorIssue::Malformed(e.to_string()));
        }
        Ok(DataType::Bool) => ConstData::Bool(match raw {
            Some(raw) => le_chunks::<1>(raw, count, "BOOL")?
                .map(|b| b[0] != 0)
                .collect(),
            None => typed(&t.int32_data, count, "int32_data")?
                .iter()
                .map(|&x| x != 0)
                .collect(),
        }),
        Ok(DataType::Undefined) => {
            return Err(TensorIssue::Malformed("data_type is not set".into()));
        }
        _ => {
            return Err(TensorIssue::Unsupported {
                message: format!(
                    "element type {} is not supported (lutq's float IR holds f32 data; integers only as shapes, axes, masks and QDQ weights)",
                    data_type_name(code)
                ),
                fix: "export the model in float32: lutq quantizes it itself".into(),
            });
        }
    };
    ConstValue::new(shape, data).map_err(|e| TensorIssue::Malformed(e.to_string()))
}

/// The range of a narrow integer ONNX type (the quantized types of QDQ models).
pub(crate) fn narrow_int_range(ty: DataType) -> Option<(i32, i32)> {
    Some(match ty {
        DataType::Int8 => (-128, 127),
        DataType::Uint8 => (0, 255),
        DataType::Int16 => (-32768, 32767),
        DataType::Uint16 => (0, 65535),
        DataType::Int4 => (-8, 7),
        DataType::Uint4 => (0, 15),
        _ => return None,
    })
}

/// The elements of a narrow integer tensor: 1 or 2 bytes each, or two 4-bit values per
/// byte (low nibble first) for INT4 / UINT4, in `raw_data` or one per `int32_data`
/// entry (one packed byte per entry for the 4-bit types).
fn narrow_ints(
    ty: DataType,
    raw: Option<&[u8]>,
    int32_data: &[i32],
    count: usize,
) -> Result<Vec<i64>, TensorIssue> {
    let signed = matches!(ty, DataType::Int8 | DataType::Int16 | DataType::Int4);
    let name = data_type_name(ty as i32);
    match ty {
        DataType::Int4 | DataType::Uint4 => {
            let bytes: Vec<u8> = match raw {
                Some(raw) => raw.to_vec(),
                None => int32_data.iter().map(|&v| v as u8).collect(),
            };
            if bytes.len() != count.div_ceil(2) {
                return Err(TensorIssue::Malformed(format!(
                    "{name} data holds {} bytes, {count} elements need {}",
                    bytes.len(),
                    count.div_ceil(2)
                )));
            }
            Ok((0..count)
                .map(|i| {
                    let nibble = (bytes[i / 2] >> (4 * (i % 2))) & 0xf;
                    if signed && nibble >= 8 {
                        nibble as i64 - 16
                    } else {
                        nibble as i64
                    }
                })
                .collect())
        }
        DataType::Int16 | DataType::Uint16 => match raw {
            Some(raw) => Ok(le_chunks::<2>(raw, count, name.as_str())?
                .map(|b| {
                    if signed {
                        i16::from_le_bytes(b) as i64
                    } else {
                        u16::from_le_bytes(b) as i64
                    }
                })
                .collect()),
            None => Ok(typed(int32_data, count, "int32_data")?
                .iter()
                .map(|&v| {
                    if signed {
                        v as i16 as i64
                    } else {
                        v as u16 as i64
                    }
                })
                .collect()),
        },
        _ => match raw {
            Some(raw) => Ok(le_chunks::<1>(raw, count, name.as_str())?
                .map(|b| {
                    if signed {
                        b[0] as i8 as i64
                    } else {
                        b[0] as i64
                    }
                })
                .collect()),
            None => Ok(typed(int32_data, count, "int32_data")?
                .iter()
                .map(|&v| {
                    if signed {
                        v as i8 as i64
                    } else {
                        v as u8 as i64
                    }
                })
                .collect()),
        },
    }
}

/// Splits little-endian raw data into `count` elements of `N` bytes.
fn le_chunks<'a, const N: usize>(
    raw: &'a [u8],
    count: usize,
    ty: &str,
) -> Result<impl Iterator<Item = [u8; N]> + 'a, TensorIssue> {
    match count.checked_mul(N) {
        Some(n) if n == raw.len() => Ok(raw.chunks_exact(N).map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            b
        })),
        _ => Err(TensorIssue::Malformed(format!(
            "dims need {count} {ty} elements ({} bytes), raw_data holds {} bytes",
            count.saturating_mul(N),
            raw.len()
        ))),
    }
}

fn typed<'a, T>(values: &'a [T], count: usize, field: &str) -> Result<&'a [T], TensorIssue> {
    if values.len() == count {
        Ok(values)
    } else {
        Err(TensorIssue::Malformed(format!(
            "dims need {count} elements, {field} holds {}",
            values.len()
        )))
    }
}

/// IEEE 754 binary16 → binary32, exact (every half value is representable).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalise.
            let mut e: i32 = -14;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (((e + 127) as u32) << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dt: DataType, dims: &[i64]) -> TensorProto {
        TensorProto {
            data_type: Some(dt as i32),
            dims: dims.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn raw_and_typed_float_data_agree() {
        let mut a = proto(DataType::Float, &[2]);
        a.float_data = vec![1.5, -2.0];
        let mut b = proto(DataType::Float, &[2]);
        b.raw_data = Some(
            [1.5f32, -2.0]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        );
        assert_eq!(tensor_value(&a).unwrap(), tensor_value(&b).unwrap());
    }

    #[test]
    fn wrong_sizes_are_malformed() {
        let mut a = proto(DataType::Float, &[3]);
        a.float_data = vec![1.0, 2.0];
        assert!(matches!(tensor_value(&a), Err(TensorIssue::Malformed(m)) if m.contains("need 3")));
        let mut b = proto(DataType::Int64, &[2]);
        b.raw_data = Some(vec![0; 12]);
        assert!(matches!(tensor_value(&b), Err(TensorIssue::Malformed(_))));
        let c = proto(DataType::Float, &[-1]);
        assert!(matches!(tensor_value(&c), Err(TensorIssue::Malformed(_))));
        let d = proto(DataType::Float, &[i64::MAX, i64::MAX]);
        assert!(matches!(tensor_value(&d), Err(TensorIssue::Malformed(_))));
    }

    #[test]
    fn other_types_convert_or_are_unsupported() {
        let mut h = proto(DataType::Float16, &[3]);
        h.int32_data = vec![0x3c00, 0xc000, 0x0001];
        let v = tensor_value(&h).unwrap();
        assert_eq!(v.as_f32().unwrap(), [1.0, -2.0, 2f32.powi(-24)]);
        let mut d = proto(DataType::Double, &[]);
        d.double_data = vec![0.25];
        assert_eq!(tensor_value(&d).unwrap().as_f32().unwrap(), [0.25]);
        let mut i = proto(DataType::Int32, &[2]);
        i.int32_data = vec![-1, 7];
        assert_eq!(tensor_value(&i).unwrap().as_i64().unwrap(), [-1, 7]);
        // Narrow integers (QDQ weights) widen to i64 and remember their type's range;
        // 4-bit values come two per byte, low nibble first.
        let mut u = proto(DataType::Uint8, &[2]);
        u.raw_data = Some(vec![255, 3]);
        let v = tensor_value(&u).unwrap();
        assert_eq!(
            (v.as_i64().unwrap(), v.int_range()),
            (&[255, 3][..], Some((0, 255)))
        );
        let mut n = proto(DataType::Int4, &[3]);
        n.raw_data = Some(vec![0x8f, 0x07]);
        let v = tensor_value(&n).unwrap();
        assert_eq!(
            (v.as_i64().unwrap(), v.int_range()),
            (&[-1, -8, 7][..], Some((-8, 7)))
        );
        n.raw_data = Some(vec![0x8f]);
        assert!(matches!(tensor_value(&n), Err(TensorIssue::Malformed(m)) if m.contains("need 2")));
        let c = proto(DataType::Complex64, &[0]);
        assert!(
            matches!(tensor_value(&c), Err(TensorIssue::Unsupported { message, .. }) if message.contains("COMPLEX64"))
        );
    }

    #[test]
    fn external_data_is_unsupported() {
        let mut t = proto(DataType::Float, &[1]);
        t.data_location = Some(DataLocation::External as i32);
        assert!(matches!(
            tensor_value(&t),
            Err(TensorIssue::Unsupported { .. })
        ));
    }

    #[test]
    fn decode_tensor_reads_name_and_data() {
        let mut t = proto(DataType::Int64, &[2]);
        t.name = Some("shape".into());
        t.int64_data = vec![4, -1];
        let bytes = t.encode_to_vec();
        let nt = decode_tensor(&bytes).unwrap();
        assert_eq!(nt.name, "shape");
        assert_eq!(nt.value.shape(), [2]);
        assert_eq!(nt.value.as_i64().unwrap(), [4, -1]);
        assert!(decode_tensor(&bytes[..bytes.len() - 1]).is_err());
    }
}
