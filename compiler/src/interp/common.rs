//! Helpers shared by the kernels: typed access to [`Tensor`] variants,
//! dispatch on element types, operand access and axis normalization.
//!
//! Float kernels are written once, generic over [`Real`] (`f32` and `f64`).
//! `f16` tensors are widened to `f32`, computed, and rounded back to `f16`,
//! which is what the `float_kernel!` macro does.

use half::f16;
use ndarray::{ArrayD, ArrayViewD, CowArray, IxDyn, NdFloat};

use crate::error::{OpError, OpResult};
use crate::op_bail;
use crate::tensor::{DType, Element, Tensor};

/// An element type with a [`Tensor`] variant: typed borrowing and wrapping.
pub(crate) trait TensorElement: Element {
    /// Borrows the array if `tensor` has this element type.
    fn array_of(tensor: &Tensor) -> Option<&ArrayD<Self>>;
    fn into_tensor(array: ArrayD<Self>) -> Tensor;
}

macro_rules! impl_tensor_element {
    ($t:ty, $variant:ident) => {
        impl TensorElement for $t {
            fn array_of(tensor: &Tensor) -> Option<&ArrayD<Self>> {
                match tensor {
                    Tensor::$variant(a) => Some(a),
                    _ => None,
                }
            }
            fn into_tensor(array: ArrayD<Self>) -> Tensor {
                Tensor::$variant(array)
            }
        }
    };
}
impl_tensor_element!(f32, F32);
impl_tensor_element!(f16, F16);
impl_tensor_element!(f64, F64);
impl_tensor_element!(i64, I64);
impl_tensor_element!(i32, I32);
impl_tensor_element!(i8, I8);
impl_tensor_element!(u8, U8);
impl_tensor_element!(bool, Bool);

/// A float type that kernels compute in: `f32` (also used for `f16` data) or `f64`.
pub(crate) trait Real: NdFloat + TensorElement {
    /// Views an operand as this type. An `f32` kernel also accepts `f16`
    /// operands, widened, because `f16` kernels compute in `f32`.
    fn view_of<'a>(tensor: &'a Tensor, label: &str) -> OpResult<CowArray<'a, Self, IxDyn>>;
}

impl Real for f32 {
    fn view_of<'a>(tensor: &'a Tensor, label: &str) -> OpResult<CowArray<'a, f32, IxDyn>> {
        match tensor {
            Tensor::F32(a) => Ok(CowArray::from(a.view())),
            Tensor::F16(a) => Ok(CowArray::from(a.mapv(f16::to_f32))),
            other => Err(dtype_error(label, "f32 or f16", other.dtype())),
        }
    }
}

impl Real for f64 {
    fn view_of<'a>(tensor: &'a Tensor, label: &str) -> OpResult<CowArray<'a, f64, IxDyn>> {
        match tensor {
            Tensor::F64(a) => Ok(CowArray::from(a.view())),
            other => Err(dtype_error(label, "f64", other.dtype())),
        }
    }
}

/// Builds the error for an operand of the wrong element type.
pub(crate) fn dtype_error(label: &str, expected: &str, got: DType) -> OpError {
    OpError::new(format!("{label} must be {expected}, got {got}"))
}

/// Evaluates `$body` for the float tensor `$t` with `$T` bound to the
/// compute type (`f32` for `f32` and `f16` data, `f64` for `f64`) and `$x`
/// to the data as a `CowArray<$T, IxDyn>`. `$body` must evaluate to an
/// `ArrayD<$T>`, which is wrapped back into the input's element type.
/// Other element types return an error naming `$label`.
macro_rules! float_kernel {
    ($t:expr, $label:expr, |$x:ident : $T:ident| $body:expr) => {{
        let tensor: &$crate::tensor::Tensor = $t;
        match tensor {
            $crate::tensor::Tensor::F32(_) => {
                type $T = f32;
                let $x = <f32 as $crate::interp::common::Real>::view_of(tensor, $label)?;
                let result: ndarray::ArrayD<f32> = $body;
                Ok($crate::tensor::Tensor::F32(result))
            }
            $crate::tensor::Tensor::F16(_) => {
                type $T = f32;
                let $x = <f32 as $crate::interp::common::Real>::view_of(tensor, $label)?;
                let result: ndarray::ArrayD<f32> = $body;
                Ok($crate::tensor::Tensor::F16(result.mapv(half::f16::from_f32)))
            }
            $crate::tensor::Tensor::F64(_) => {
                type $T = f64;
                let $x = <f64 as $crate::interp::common::Real>::view_of(tensor, $label)?;
                let result: ndarray::ArrayD<f64> = $body;
                Ok($crate::tensor::Tensor::F64(result))
            }
            other => {
                Err($crate::interp::common::dtype_error($label, "a float tensor (f32, f16 or f64)", other.dtype()))
            }
        }
    }};
}
pub(crate) use float_kernel;

/// Evaluates `$body` with `$T` bound to the Rust type of `$dtype`, for
/// kernels that only move or compare elements and so work on any type.
macro_rules! with_any_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            $crate::tensor::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::tensor::DType::F16 => {
                type $T = half::f16;
                $body
            }
            $crate::tensor::DType::F64 => {
                type $T = f64;
                $body
            }
            $crate::tensor::DType::I64 => {
                type $T = i64;
                $body
            }
            $crate::tensor::DType::I32 => {
                type $T = i32;
                $body
            }
            $crate::tensor::DType::I8 => {
                type $T = i8;
                $body
            }
            $crate::tensor::DType::U8 => {
                type $T = u8;
                $body
            }
            $crate::tensor::DType::Bool => {
                type $T = bool;
                $body
            }
        }
    };
}
pub(crate) use with_any_dtype;

/// Borrows the array of `tensor` as element type `T`, or returns an error
/// saying that `label` must have the same element type as the first operand.
pub(crate) fn typed<'a, T: TensorElement>(tensor: &'a Tensor, label: &str) -> OpResult<&'a ArrayD<T>> {
    T::array_of(tensor)
        .ok_or_else(|| dtype_error(label, &format!("{} like the first operand", T::DTYPE), tensor.dtype()))
}

/// Copies a view into a new array in standard (row-major) layout.
pub(crate) fn to_standard<T: Clone>(view: ArrayViewD<'_, T>) -> ArrayD<T> {
    view.as_standard_layout().into_owned()
}

/// Builds an array from row-major data whose length the caller has checked.
pub(crate) fn array_from_vec<T>(shape: &[usize], data: Vec<T>) -> OpResult<ArrayD<T>> {
    let len = data.len();
    ArrayD::from_shape_vec(IxDyn(shape), data)
        .map_err(|_| OpError::new(format!("internal error: {len} elements do not fill shape {shape:?}")))
}

/// Maps `axis` in `[-rank, rank - 1]` to `[0, rank - 1]`.
pub(crate) fn normalize_axis(axis: i64, rank: usize, label: &str) -> OpResult<usize> {
    let rank_i = rank as i64;
    if axis < -rank_i || axis >= rank_i {
        op_bail!(
            "{label} {axis} is out of range for a tensor of rank {rank}, which allows [{}, {}]",
            -rank_i,
            rank_i - 1
        );
    }
    Ok(if axis < 0 { (axis + rank_i) as usize } else { axis as usize })
}

/// Normalizes a list of axes and rejects duplicates.
pub(crate) fn normalize_axes(axes: &[i64], rank: usize, label: &str) -> OpResult<Vec<usize>> {
    let mut normalized = Vec::with_capacity(axes.len());
    for &axis in axes {
        let a = normalize_axis(axis, rank, label)?;
        if normalized.contains(&a) {
            op_bail!("{label} {axes:?} lists axis {a} more than once");
        }
        normalized.push(a);
    }
    Ok(normalized)
}

/// Reads a shape or index operand (any integer type) as `i64` values.
pub(crate) fn int_values(tensor: &Tensor, label: &str) -> OpResult<Vec<i64>> {
    if !tensor.dtype().is_int() {
        return Err(dtype_error(label, "an integer tensor (i64 or i32)", tensor.dtype()));
    }
    Ok(tensor.to_i64_vec())
}

/// Reads the single element of a one-element operand converted to `T`
/// with ONNX `Cast` semantics.
pub(crate) fn scalar_as<T: TensorElement>(tensor: &Tensor, label: &str) -> OpResult<T> {
    if tensor.len() != 1 {
        op_bail!("{label} must have exactly one element, got shape {:?}", tensor.shape());
    }
    let cast = tensor.cast(T::DTYPE);
    let array = typed::<T>(&cast, label)?;
    Ok(*array.iter().next().expect("length checked above"))
}

/// Counts the elements of a shape, or returns an error if the count overflows `usize`.
pub(crate) fn checked_numel(shape: &[usize], label: &str) -> OpResult<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| OpError::new(format!("{label} {shape:?} has more elements than fit in memory")))
}

/// The operands of one node, with accessors that name missing operands.
pub(crate) struct Operands<'a, 'b> {
    inputs: &'b [Option<&'a Tensor>],
}

impl<'a, 'b> Operands<'a, 'b> {
    pub(crate) fn new(inputs: &'b [Option<&'a Tensor>]) -> Self {
        Operands { inputs }
    }

    /// Returns operand `index`, which must be present. `label` names it in the error.
    pub(crate) fn required(&self, index: usize, label: &str) -> OpResult<&'a Tensor> {
        match self.inputs.get(index) {
            Some(Some(t)) => Ok(t),
            _ => Err(OpError::new(format!("missing required operand {index} ({label})"))),
        }
    }

    pub(crate) fn optional(&self, index: usize) -> Option<&'a Tensor> {
        self.inputs.get(index).copied().flatten()
    }

    pub(crate) fn len(&self) -> usize {
        self.inputs.len()
    }
}

/// Rejects `operand` unless it has the element type `expected` of the first operand.
pub(crate) fn expect_dtype(operand: &Tensor, expected: DType, label: &str) -> OpResult<()> {
    if operand.dtype() != expected {
        return Err(dtype_error(label, &format!("{expected} like the first operand"), operand.dtype()));
    }
    Ok(())
}
