//! Dense tensors of the element types that ViT exports use.
//!
//! A [`Tensor`] is an `ndarray` dynamic-rank array tagged with its element
//! type. It is the value type of the reference interpreter and of constant
//! data in value facts. Strings, complex numbers and the other ONNX element
//! types are rejected at import.

use std::fmt;

use half::f16;
use ndarray::{ArrayD, IxDyn};

use crate::error::{Error, Result};

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F16,
    F64,
    I64,
    I32,
    I8,
    U8,
    Bool,
}

impl DType {
    /// Maps an ONNX `TensorProto.DataType` code to a supported element type.
    pub fn from_onnx(code: i32) -> Option<DType> {
        Some(match code {
            1 => DType::F32,
            2 => DType::U8,
            3 => DType::I8,
            6 => DType::I32,
            7 => DType::I64,
            9 => DType::Bool,
            10 => DType::F16,
            11 => DType::F64,
            _ => return None,
        })
    }

    /// The ONNX `TensorProto.DataType` code of this element type.
    pub fn onnx_code(self) -> i32 {
        match self {
            DType::F32 => 1,
            DType::U8 => 2,
            DType::I8 => 3,
            DType::I32 => 6,
            DType::I64 => 7,
            DType::Bool => 9,
            DType::F16 => 10,
            DType::F64 => 11,
        }
    }

    /// Name of an ONNX data type code, for error messages about unsupported types.
    pub fn onnx_name(code: i32) -> &'static str {
        match code {
            0 => "UNDEFINED",
            1 => "FLOAT",
            2 => "UINT8",
            3 => "INT8",
            4 => "UINT16",
            5 => "INT16",
            6 => "INT32",
            7 => "INT64",
            8 => "STRING",
            9 => "BOOL",
            10 => "FLOAT16",
            11 => "DOUBLE",
            12 => "UINT32",
            13 => "UINT64",
            14 => "COMPLEX64",
            15 => "COMPLEX128",
            16 => "BFLOAT16",
            _ => "a float8/int4 or unknown type",
        }
    }

    /// Size of one element in bytes.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::F64 | DType::I64 => 8,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::F64)
    }

    pub fn is_int(self) -> bool {
        matches!(self, DType::I64 | DType::I32 | DType::I8 | DType::U8)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bool => "bool",
        })
    }
}

/// A dense tensor with its element type.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    F16(ArrayD<f16>),
    F64(ArrayD<f64>),
    I64(ArrayD<i64>),
    I32(ArrayD<i32>),
    I8(ArrayD<i8>),
    U8(ArrayD<u8>),
    Bool(ArrayD<bool>),
}

/// Runs `$body` with `$a` bound to the inner array, whatever the element type.
#[macro_export]
macro_rules! map_tensor {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::tensor::Tensor::F32($a) => $body,
            $crate::tensor::Tensor::F16($a) => $body,
            $crate::tensor::Tensor::F64($a) => $body,
            $crate::tensor::Tensor::I64($a) => $body,
            $crate::tensor::Tensor::I32($a) => $body,
            $crate::tensor::Tensor::I8($a) => $body,
            $crate::tensor::Tensor::U8($a) => $body,
            $crate::tensor::Tensor::Bool($a) => $body,
        }
    };
}

/// Like [`map_tensor!`], but wraps the result back into the same variant.
#[macro_export]
macro_rules! map_tensor_same {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::tensor::Tensor::F32($a) => $crate::tensor::Tensor::F32($body),
            $crate::tensor::Tensor::F16($a) => $crate::tensor::Tensor::F16($body),
            $crate::tensor::Tensor::F64($a) => $crate::tensor::Tensor::F64($body),
            $crate::tensor::Tensor::I64($a) => $crate::tensor::Tensor::I64($body),
            $crate::tensor::Tensor::I32($a) => $crate::tensor::Tensor::I32($body),
            $crate::tensor::Tensor::I8($a) => $crate::tensor::Tensor::I8($body),
            $crate::tensor::Tensor::U8($a) => $crate::tensor::Tensor::U8($body),
            $crate::tensor::Tensor::Bool($a) => $crate::tensor::Tensor::Bool($body),
        }
    };
}

/// A scalar element converted between types with ONNX `Cast` semantics
/// (float to int truncates toward zero, saturating at the type's range; any
/// nonzero value is `true`).
pub trait Element: Copy + Default + PartialEq + fmt::Debug + Send + Sync + 'static {
    const DTYPE: DType;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn to_i64(self) -> i64 {
        self.to_f64() as i64
    }
    fn from_i64(v: i64) -> Self {
        Self::from_f64(v as f64)
    }
}

macro_rules! impl_element_float {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
        }
    };
}
impl_element_float!(f32, DType::F32);
impl_element_float!(f64, DType::F64);

macro_rules! impl_element_int {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_i64(self) -> i64 {
                self as i64
            }
            fn from_i64(v: i64) -> Self {
                v as $t
            }
        }
    };
}
impl_element_int!(i64, DType::I64);
impl_element_int!(i32, DType::I32);
impl_element_int!(i8, DType::I8);
impl_element_int!(u8, DType::U8);

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
}

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn to_f64(self) -> f64 {
        if self { 1.0 } else { 0.0 }
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> Self {
        v != 0
    }
}

impl Tensor {
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::F16(_) => DType::F16,
            Tensor::F64(_) => DType::F64,
            Tensor::I64(_) => DType::I64,
            Tensor::I32(_) => DType::I32,
            Tensor::I8(_) => DType::I8,
            Tensor::U8(_) => DType::U8,
            Tensor::Bool(_) => DType::Bool,
        }
    }

    pub fn shape(&self) -> &[usize] {
        map_tensor!(self, a => a.shape())
    }

    pub fn len(&self) -> usize {
        map_tensor!(self, a => a.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A tensor of `shape` filled with zeros of `dtype`.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Tensor {
        let dim = IxDyn(shape);
        match dtype {
            DType::F32 => Tensor::F32(ArrayD::zeros(dim)),
            DType::F16 => Tensor::F16(ArrayD::from_elem(dim, f16::ZERO)),
            DType::F64 => Tensor::F64(ArrayD::zeros(dim)),
            DType::I64 => Tensor::I64(ArrayD::zeros(dim)),
            DType::I32 => Tensor::I32(ArrayD::zeros(dim)),
            DType::I8 => Tensor::I8(ArrayD::zeros(dim)),
            DType::U8 => Tensor::U8(ArrayD::zeros(dim)),
            DType::Bool => Tensor::Bool(ArrayD::from_elem(dim, false)),
        }
    }

    /// A 1-D `i64` tensor, the type of shape and index operands.
    pub fn from_i64s(values: &[i64]) -> Tensor {
        Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[values.len()]), values.to_vec()).expect("1-D shape matches length"))
    }

    /// A 1-D `f32` tensor.
    pub fn from_f32s(values: &[f32]) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[values.len()]), values.to_vec()).expect("1-D shape matches length"))
    }

    /// A rank-0 `f32` tensor.
    pub fn scalar_f32(value: f32) -> Tensor {
        Tensor::F32(ArrayD::from_elem(IxDyn(&[]), value))
    }

    /// Converts every element to `dtype` with ONNX `Cast` semantics.
    pub fn cast(&self, dtype: DType) -> Tensor {
        if self.dtype() == dtype {
            return self.clone();
        }
        match dtype {
            DType::F32 => Tensor::F32(self.convert()),
            DType::F16 => Tensor::F16(self.convert()),
            DType::F64 => Tensor::F64(self.convert()),
            DType::I64 => Tensor::I64(self.convert()),
            DType::I32 => Tensor::I32(self.convert()),
            DType::I8 => Tensor::I8(self.convert()),
            DType::U8 => Tensor::U8(self.convert()),
            DType::Bool => Tensor::Bool(self.convert()),
        }
    }

    fn convert<T: Element>(&self) -> ArrayD<T> {
        // Integer sources go through i64 so that large values keep their
        // exact bits; float sources go through f64.
        match self {
            Tensor::I64(a) => a.mapv(T::from_i64),
            Tensor::I32(a) => a.mapv(|v| T::from_i64(v as i64)),
            Tensor::I8(a) => a.mapv(|v| T::from_i64(v as i64)),
            Tensor::U8(a) => a.mapv(|v| T::from_i64(v as i64)),
            Tensor::Bool(a) => a.mapv(|v| T::from_i64(v as i64)),
            Tensor::F32(a) => a.mapv(|v| T::from_f64(v as f64)),
            Tensor::F16(a) => a.mapv(|v| T::from_f64(v.to_f64())),
            Tensor::F64(a) => a.mapv(T::from_f64),
        }
    }

    /// The elements as `i64`, in row-major order (for shape, axes and index operands).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        map_tensor!(self, a => a.iter().map(|v| v.to_i64()).collect())
    }

    /// The elements as `f64`, in row-major order.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        map_tensor!(self, a => a.iter().map(|v| v.to_f64()).collect())
    }

    pub fn as_f32(&self) -> Option<&ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Some(a),
            _ => None,
        }
    }

    pub fn into_f32(self) -> Option<ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Some(a),
            _ => None,
        }
    }

    /// Reads the single element of a tensor with one element, as `f64`.
    pub fn scalar_f64(&self) -> Option<f64> {
        (self.len() == 1).then(|| self.to_f64_vec()[0])
    }

    /// Returns a tensor with the same elements in a new shape of the same size.
    pub fn reshaped(&self, shape: &[usize]) -> Result<Tensor> {
        let shape_len: usize = shape.iter().product();
        if shape_len != self.len() {
            return Err(Error::Internal(format!(
                "cannot reshape a tensor of shape {:?} to {:?}",
                self.shape(),
                shape
            )));
        }
        Ok(map_tensor_same!(self, a => {
            let flat: Vec<_> = a.iter().cloned().collect();
            ArrayD::from_shape_vec(IxDyn(shape), flat).expect("size checked above")
        }))
    }

    /// A BLAKE3 hash of dtype, shape and elements in row-major order: two
    /// tensors with the same hash have the same contents.
    pub fn content_hash(&self) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&[self.dtype().onnx_code() as u8]);
        for d in self.shape() {
            hasher.update(&(*d as u64).to_le_bytes());
        }
        match self {
            Tensor::F32(a) => a.iter().for_each(|v| {
                hasher.update(&v.to_le_bytes());
            }),
            Tensor::F16(a) => a.iter().for_each(|v| {
                hasher.update(&v.to_le_bytes());
            }),
            Tensor::F64(a) => a.iter().for_each(|v| {
                hasher.update(&v.to_le_bytes());
            }),
            Tensor::I64(a) => a.iter().for_each(|v| {
                hasher.update(&v.to_le_bytes());
            }),
            Tensor::I32(a) => a.iter().for_each(|v| {
                hasher.update(&v.to_le_bytes());
            }),
            Tensor::I8(a) => a.iter().for_each(|v| {
                hasher.update(&v.to_le_bytes());
            }),
            Tensor::U8(a) => {
                hasher.update(a.as_standard_layout().as_slice().expect("standard layout is contiguous"));
            }
            Tensor::Bool(a) => a.iter().for_each(|v| {
                hasher.update(&[*v as u8]);
            }),
        }
        hasher.finalize()
    }

    /// Counts elements that are NaN or infinite (always 0 for integer types).
    pub fn count_non_finite(&self) -> usize {
        match self {
            Tensor::F32(a) => a.iter().filter(|v| !v.is_finite()).count(),
            Tensor::F16(a) => a.iter().filter(|v| !v.is_finite()).count(),
            Tensor::F64(a) => a.iter().filter(|v| !v.is_finite()).count(),
            _ => 0,
        }
    }
}

/// Upper bound on the bytes of a `dtype` tensor of `shape`: the element
/// size times the product of the axis lengths, counting zero-length axes
/// as 1 and saturating at `u64::MAX`. Size limits compare against this
/// bound so that an empty tensor with a huge axis, such as `[0, 2^61]`,
/// which ndarray cannot represent, is rejected as well.
pub fn bytes_bound(dtype: DType, shape: &[usize]) -> u64 {
    shape.iter().fold(dtype.size_bytes() as u64, |acc, &d| acc.saturating_mul((d as u64).max(1)))
}

/// Formats a shape as `[1,3,224,224]`.
pub struct ShapeDisplay<'a>(pub &'a [usize]);

impl fmt::Display for ShapeDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cast_float_to_int_truncates() {
        let t = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.7, -1.7, 3.0]).unwrap());
        assert_eq!(t.cast(DType::I64).to_i64_vec(), vec![1, -1, 3]);
    }

    #[test]
    fn cast_to_bool_is_nonzero() {
        let t = Tensor::from_i64s(&[0, 2, -1]);
        let b = t.cast(DType::Bool);
        assert_eq!(b.to_i64_vec(), vec![0, 1, 1]);
    }

    #[test]
    fn hash_depends_on_shape() {
        let a = Tensor::from_i64s(&[1, 2, 3, 4]);
        let b = a.reshaped(&[2, 2]).unwrap();
        assert_ne!(a.content_hash(), b.content_hash());
    }
}
