//! Operators that change a tensor's shape or describe it without doing
//! arithmetic: `Reshape`, `Transpose`, `Flatten`, `Squeeze`, `Unsqueeze`,
//! `Expand`, `Shape`, `Size`, `ConstantOfShape` and `Range`.
//!
//! Results are always in standard (row-major) layout.

use ndarray::{ArrayD, IxDyn};

use super::common::{
    TensorElement, array_from_vec, checked_numel, int_values, normalize_axes, scalar_as, to_standard, with_any_dtype,
};
use super::elementwise::{broadcast_shape, broadcast_view};
use crate::error::{OpError, OpResult};
use crate::map_tensor_same;
use crate::op_bail;
use crate::tensor::{DType, Tensor};

/// Returns `x` with the same elements in row-major order and a new shape
/// of the same element count.
pub(crate) fn with_shape(x: &Tensor, shape: &[usize]) -> OpResult<Tensor> {
    if checked_numel(shape, "shape")? != x.len() {
        op_bail!("cannot view a tensor of shape {:?} ({} elements) as shape {shape:?}", x.shape(), x.len());
    }
    Ok(map_tensor_same!(x, a => {
        let standard = a.as_standard_layout().into_owned();
        standard.into_shape_with_order(IxDyn(shape)).expect("element count checked above")
    }))
}

// Reshape.

/// `Reshape(data, shape)`: a 0 copies the input dimension at the same
/// index unless `allowzero` is set, and one -1 is inferred.
pub(crate) fn reshape(data: &Tensor, shape: &Tensor, allowzero: bool) -> OpResult<Tensor> {
    let requested = int_values(shape, "Reshape shape")?;
    if shape.shape().len() != 1 {
        op_bail!("Reshape shape must be 1-D, got shape {:?}", shape.shape());
    }
    let output = resolve_reshape(data.shape(), &requested, allowzero)?;
    with_shape(data, &output)
}

fn resolve_reshape(input: &[usize], requested: &[i64], allowzero: bool) -> OpResult<Vec<usize>> {
    let mut output = Vec::with_capacity(requested.len());
    let mut inferred = None;
    for (i, &d) in requested.iter().enumerate() {
        match d {
            -1 if inferred.is_some() => op_bail!("Reshape shape {requested:?} has more than one -1"),
            -1 => {
                inferred = Some(i);
                output.push(1);
            }
            0 if allowzero => output.push(0),
            0 => match input.get(i) {
                Some(&copied) => output.push(copied),
                None => op_bail!(
                    "Reshape shape {requested:?} has a 0 at index {i}, but the input of shape {input:?} has no dimension there to copy"
                ),
            },
            d if d < 0 => op_bail!(
                "Reshape shape {requested:?} has the invalid dimension {d}. Only -1 and values >= 0 are allowed"
            ),
            d => output.push(d as usize),
        }
    }
    let total: usize = input.iter().product();
    if let Some(i) = inferred {
        let known: usize = output.iter().product();
        if known == 0 || !total.is_multiple_of(known) {
            op_bail!(
                "Reshape cannot infer the -1 in {requested:?}: the input of shape {input:?} has {total} elements, which the other dimensions ({known} elements) do not divide"
            );
        }
        output[i] = total / known;
    }
    if checked_numel(&output, "Reshape result shape")? != total {
        op_bail!(
            "Reshape cannot turn shape {input:?} ({total} elements) into {output:?} (from the requested shape {requested:?})"
        );
    }
    Ok(output)
}

// Transpose, Flatten, Squeeze, Unsqueeze.

/// `Transpose` with `perm`. An empty `perm` reverses the axes, the ONNX default.
pub(crate) fn transpose(x: &Tensor, perm: &[usize]) -> OpResult<Tensor> {
    let rank = x.shape().len();
    let perm: Vec<usize> = if perm.is_empty() { (0..rank).rev().collect() } else { perm.to_vec() };
    let mut seen = vec![false; rank];
    if perm.len() != rank || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true)) {
        op_bail!(
            "Transpose perm {perm:?} is not a permutation of the {rank} axes of the input of shape {:?}",
            x.shape()
        );
    }
    Ok(map_tensor_same!(x, a => to_standard(a.view().permuted_axes(IxDyn(&perm)))))
}

/// `Flatten` at `axis` in `[-rank, rank]` to `[prod(dims[..axis]), prod(dims[axis..])]`.
pub(crate) fn flatten(x: &Tensor, axis: i64) -> OpResult<Tensor> {
    let shape = x.shape();
    let rank = shape.len() as i64;
    if axis < -rank || axis > rank {
        op_bail!("Flatten axis {axis} is out of range for rank {rank}, which allows [{}, {rank}]", -rank);
    }
    let axis = if axis < 0 { axis + rank } else { axis } as usize;
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis..].iter().product();
    with_shape(x, &[outer, inner])
}

/// `Squeeze`: removes the listed axes, which must have size 1, or every
/// size-1 axis when `axes` is `None`.
pub(crate) fn squeeze(x: &Tensor, axes: Option<&[i64]>) -> OpResult<Tensor> {
    let shape = x.shape();
    let removed: Vec<usize> = match axes {
        None => (0..shape.len()).filter(|&d| shape[d] == 1).collect(),
        Some(axes) => {
            let axes = normalize_axes(axes, shape.len(), "Squeeze axes")?;
            if let Some(&bad) = axes.iter().find(|&&a| shape[a] != 1) {
                op_bail!(
                    "Squeeze axis {bad} has size {}, but only axes of size 1 can be removed (input shape {shape:?})",
                    shape[bad]
                );
            }
            axes
        }
    };
    let output: Vec<usize> = (0..shape.len()).filter(|d| !removed.contains(d)).map(|d| shape[d]).collect();
    with_shape(x, &output)
}

/// `Unsqueeze`: inserts size-1 axes at the listed positions of the output,
/// whose rank is the input rank plus the number of axes.
pub(crate) fn unsqueeze(x: &Tensor, axes: &[i64]) -> OpResult<Tensor> {
    let shape = x.shape();
    let rank = shape.len() + axes.len();
    let inserted = normalize_axes(axes, rank, "Unsqueeze axes")?;
    let mut input_dims = shape.iter();
    let output: Vec<usize> = (0..rank)
        .map(|d| if inserted.contains(&d) { 1 } else { *input_dims.next().expect("rank counts every input dim") })
        .collect();
    with_shape(x, &output)
}

// Expand.

/// `Expand(data, shape)`: broadcasts `data` and `shape` against each other.
pub(crate) fn expand(x: &Tensor, shape: &Tensor) -> OpResult<Tensor> {
    let requested = int_values(shape, "Expand shape")?;
    if let Some(bad) = requested.iter().find(|&&d| d < 0) {
        op_bail!("Expand shape {requested:?} has the negative dimension {bad}");
    }
    let requested: Vec<usize> = requested.iter().map(|&d| d as usize).collect();
    let output = broadcast_shape(x.shape(), &requested)?;
    Ok(map_tensor_same!(x, a => {
        let view = a.view();
        to_standard(broadcast_view(&view, &output, "Expand input")?)
    }))
}

// Shape, Size, ConstantOfShape, Range.

/// `Shape` with `start` and `end` clamped to `[0, rank]` after adding
/// `rank` to negative values, as ONNX opset 15 specifies.
pub(crate) fn shape_of(x: &Tensor, start: i64, end: Option<i64>) -> OpResult<Tensor> {
    let shape = x.shape();
    let rank = shape.len() as i64;
    let clamp = |v: i64| -> usize { (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize };
    let (start, end) = (clamp(start), clamp(end.unwrap_or(rank)));
    let dims: Vec<i64> = if start < end { shape[start..end].iter().map(|&d| d as i64).collect() } else { vec![] };
    Ok(Tensor::from_i64s(&dims))
}

pub(crate) fn size(x: &Tensor) -> Tensor {
    Tensor::I64(ArrayD::from_elem(IxDyn(&[]), x.len() as i64))
}

/// `ConstantOfShape(shape)` filled with the single element of `value`.
pub(crate) fn constant_of_shape(shape: &Tensor, value: &Tensor) -> OpResult<Tensor> {
    let dims = int_values(shape, "ConstantOfShape shape")?;
    if shape.shape().len() > 1 {
        op_bail!("ConstantOfShape shape must be 1-D, got shape {:?}", shape.shape());
    }
    if let Some(bad) = dims.iter().find(|&&d| d < 0) {
        op_bail!("ConstantOfShape shape {dims:?} has the negative dimension {bad}");
    }
    let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    checked_numel(&dims, "ConstantOfShape shape")?;
    if value.len() != 1 {
        op_bail!("ConstantOfShape value must have one element, got shape {:?}", value.shape());
    }
    Ok(map_tensor_same!(value, a => {
        let fill = a.iter().next().cloned().expect("one element checked above");
        ArrayD::from_elem(IxDyn(&dims), fill)
    }))
}

/// `Range(start, limit, delta)`: `max(ceil((limit - start) / delta), 0)`
/// elements `start + i * delta`. Integer ranges are computed exactly.
pub(crate) fn range(start: &Tensor, limit: &Tensor, delta: &Tensor) -> OpResult<Tensor> {
    let dtype = start.dtype();
    for (t, name) in [(limit, "Range limit"), (delta, "Range delta")] {
        if t.dtype() != dtype {
            op_bail!("{name} must have the type of start ({dtype}), got {}", t.dtype());
        }
    }
    if dtype == DType::Bool {
        op_bail!("Range operands must be numeric, got bool");
    }
    with_any_dtype!(dtype, T => range_typed::<T>(start, limit, delta))
}

fn range_typed<T: TensorElement>(start: &Tensor, limit: &Tensor, delta: &Tensor) -> OpResult<Tensor> {
    let values: Vec<T> = if T::DTYPE.is_float() {
        let (s, l, d) = (
            scalar_as::<f64>(start, "Range start")?,
            scalar_as::<f64>(limit, "Range limit")?,
            scalar_as::<f64>(delta, "Range delta")?,
        );
        if d == 0.0 || !d.is_finite() || !s.is_finite() || !l.is_finite() {
            op_bail!("Range needs finite operands and a nonzero delta, got start {s}, limit {l}, delta {d}");
        }
        // The element count is computed in f32 for f32 and f16 operands and in f64 for f64.
        let steps = if T::DTYPE == DType::F64 {
            ((l - s) / d).ceil()
        } else {
            ((l as f32 - s as f32) / d as f32).ceil() as f64
        };
        if steps > u32::MAX as f64 {
            op_bail!("Range from {s} to {l} by {d} has too many elements");
        }
        let count = steps.max(0.0) as usize;
        // Each element is `start + i * delta` rounded to the element type.
        (0..count).map(|i| T::from_f64(s + i as f64 * d)).collect()
    } else {
        let (s, l, d) = (
            scalar_as::<i64>(start, "Range start")?,
            scalar_as::<i64>(limit, "Range limit")?,
            scalar_as::<i64>(delta, "Range delta")?,
        );
        if d == 0 {
            op_bail!("Range delta must be nonzero");
        }
        let span = l as i128 - s as i128;
        let d128 = d as i128;
        let count = if (span > 0 && d > 0) || (span < 0 && d < 0) { (span + d128 - d128.signum()) / d128 } else { 0 };
        let count = usize::try_from(count).map_err(|_| OpError::new("Range has too many elements"))?;
        checked_numel(&[count], "Range length")?;
        (0..count).map(|i| T::from_i64(s.wrapping_add((i as i64).wrapping_mul(d)))).collect()
    };
    Ok(T::into_tensor(array_from_vec(&[values.len()], values)?))
}

/// `Identity`: a copy of the operand.
pub(crate) fn identity(x: &Tensor) -> Tensor {
    x.clone()
}

/// `Cast` with ONNX semantics, as implemented by [`Tensor::cast`].
pub(crate) fn cast(x: &Tensor, to: DType) -> Tensor {
    x.cast(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as f32).collect()).unwrap())
    }

    fn scalar_i64(v: i64) -> Tensor {
        Tensor::I64(ArrayD::from_elem(IxDyn(&[]), v))
    }

    #[test]
    fn reshape_zero_and_minus_one() {
        let x = iota(&[2, 3, 4]);
        let y = reshape(&x, &Tensor::from_i64s(&[0, -1]), false).unwrap();
        assert_eq!(y.shape(), &[2, 12]);
        assert_eq!(y.to_f64_vec(), x.to_f64_vec());
        let z = reshape(&x, &Tensor::from_i64s(&[-1, 0, 2]), false).unwrap();
        assert_eq!(z.shape(), &[4, 3, 2]);
    }

    #[test]
    fn reshape_allowzero() {
        let empty = Tensor::zeros(DType::F32, &[0, 3]);
        let y = reshape(&empty, &Tensor::from_i64s(&[3, 0]), true).unwrap();
        assert_eq!(y.shape(), &[3, 0]);
        assert!(reshape(&iota(&[2, 3]), &Tensor::from_i64s(&[0, 6]), true).is_err());
    }

    #[test]
    fn reshape_errors() {
        let x = iota(&[2, 3]);
        assert!(reshape(&x, &Tensor::from_i64s(&[-1, -1]), false).is_err());
        assert!(reshape(&x, &Tensor::from_i64s(&[4, -1]), false).is_err());
        assert!(reshape(&x, &Tensor::from_i64s(&[5]), false).is_err());
        assert!(reshape(&x, &Tensor::from_i64s(&[-2, 3]), false).is_err());
    }

    #[test]
    fn transpose_perm_and_default() {
        let x = iota(&[2, 3]);
        let t = transpose(&x, &[1, 0]).unwrap();
        assert_eq!(t.shape(), &[3, 2]);
        assert_eq!(t.to_f64_vec(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(transpose(&x, &[]).unwrap(), t);
        assert!(transpose(&x, &[0, 0]).is_err());
    }

    #[test]
    fn flatten_axes() {
        let x = iota(&[2, 3, 4]);
        assert_eq!(flatten(&x, 0).unwrap().shape(), &[1, 24]);
        assert_eq!(flatten(&x, -1).unwrap().shape(), &[6, 4]);
        assert_eq!(flatten(&x, 3).unwrap().shape(), &[24, 1]);
        assert!(flatten(&x, 4).is_err());
    }

    #[test]
    fn squeeze_and_unsqueeze() {
        let x = iota(&[1, 3, 1, 2]);
        assert_eq!(squeeze(&x, None).unwrap().shape(), &[3, 2]);
        assert_eq!(squeeze(&x, Some(&[-2])).unwrap().shape(), &[1, 3, 2]);
        assert!(squeeze(&x, Some(&[1])).is_err());
        let y = iota(&[3, 4]);
        assert_eq!(unsqueeze(&y, &[0, -1]).unwrap().shape(), &[1, 3, 4, 1]);
        assert_eq!(unsqueeze(&y, &[1, 3]).unwrap().shape(), &[3, 1, 4, 1]);
        assert!(unsqueeze(&y, &[0, 0]).is_err());
        assert!(unsqueeze(&y, &[4]).is_err());
    }

    #[test]
    fn expand_bidirectional() {
        let x = iota(&[3, 1]);
        let y = expand(&x, &Tensor::from_i64s(&[2, 1, 2])).unwrap();
        assert_eq!(y.shape(), &[2, 3, 2]);
        assert_eq!(y.to_f64_vec(), vec![0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0]);
        // A 1 in the requested shape keeps the input dimension.
        assert_eq!(expand(&iota(&[2, 3]), &Tensor::from_i64s(&[1, 1])).unwrap().shape(), &[2, 3]);
        assert!(expand(&x, &Tensor::from_i64s(&[4, 4])).is_err());
    }

    #[test]
    fn shape_with_start_end() {
        let x = iota(&[2, 3, 4]);
        assert_eq!(shape_of(&x, 0, None).unwrap().to_i64_vec(), vec![2, 3, 4]);
        assert_eq!(shape_of(&x, -1, None).unwrap().to_i64_vec(), vec![4]);
        assert_eq!(shape_of(&x, 1, Some(-1)).unwrap().to_i64_vec(), vec![3]);
        assert_eq!(shape_of(&x, -10, Some(10)).unwrap().to_i64_vec(), vec![2, 3, 4]);
        assert_eq!(shape_of(&x, 2, Some(1)).unwrap().to_i64_vec(), Vec::<i64>::new());
        assert_eq!(size(&x).to_i64_vec(), vec![24]);
    }

    #[test]
    fn constant_of_shape_fills() {
        let value = Tensor::I32(ArrayD::from_elem(IxDyn(&[1]), 7));
        let y = constant_of_shape(&Tensor::from_i64s(&[2, 2]), &value).unwrap();
        assert_eq!(y.dtype(), DType::I32);
        assert_eq!(y.to_i64_vec(), vec![7; 4]);
        let scalar = constant_of_shape(&Tensor::from_i64s(&[]), &value).unwrap();
        assert_eq!(scalar.shape(), &[] as &[usize]);
        assert!(constant_of_shape(&Tensor::from_i64s(&[-1]), &value).is_err());
    }

    #[test]
    fn range_int_and_float() {
        let y = range(&scalar_i64(10), &scalar_i64(4), &scalar_i64(-3)).unwrap();
        assert_eq!(y.to_i64_vec(), vec![10, 7]);
        let empty = range(&scalar_i64(0), &scalar_i64(5), &scalar_i64(-1)).unwrap();
        assert_eq!(empty.len(), 0);
        let f = range(&Tensor::scalar_f32(1.0), &Tensor::scalar_f32(2.0), &Tensor::scalar_f32(0.25)).unwrap();
        assert_eq!(f.to_f64_vec(), vec![1.0, 1.25, 1.5, 1.75]);
        assert!(range(&scalar_i64(0), &scalar_i64(5), &scalar_i64(0)).is_err());
    }
}
