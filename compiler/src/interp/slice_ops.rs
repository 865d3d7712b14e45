//! Operators that select, join or repeat elements: `Concat`, `Split`,
//! `Slice`, `Gather`, `Tile` and `Pad`.
//!
//! They work on every element type and return standard-layout arrays.

use ndarray::{ArrayD, ArrayViewD, Axis, Slice};

use super::common::{
    TensorElement, array_from_vec, checked_numel, int_values, normalize_axes, normalize_axis, scalar_as, typed,
    with_any_dtype,
};
use super::elementwise::into_standard;
use crate::error::{OpError, OpResult};
use crate::ir::op::PadMode;
use crate::op_bail;
use crate::tensor::Tensor;

// Concat and Split.

/// `Concat` along `axis`; every operand has the same element type and rank,
/// and the same dimensions except along `axis`.
pub(crate) fn concat(inputs: &[&Tensor], axis: i64) -> OpResult<Tensor> {
    let Some(first) = inputs.first() else {
        op_bail!("Concat needs at least one operand");
    };
    let rank = first.shape().len();
    let axis = normalize_axis(axis, rank, "Concat axis")?;
    for (i, t) in inputs.iter().enumerate() {
        let same = t.shape().len() == rank && (0..rank).all(|d| d == axis || t.shape()[d] == first.shape()[d]);
        if !same {
            op_bail!(
                "Concat operand {i} has shape {:?}, which differs from the first operand's {:?} outside axis {axis}",
                t.shape(),
                first.shape()
            );
        }
    }
    with_any_dtype!(first.dtype(), T => {
        let mut views: Vec<ArrayViewD<'_, T>> = Vec::with_capacity(inputs.len());
        for (i, t) in inputs.iter().enumerate() {
            views.push(typed::<T>(t, &format!("Concat operand {i}"))?.view());
        }
        let joined = ndarray::concatenate(Axis(axis), &views).map_err(|e| OpError::new(format!("Concat: {e}")))?;
        Ok(T::into_tensor(into_standard(joined)))
    })
}

/// `Split` along `axis` into pieces of the listed sizes.
pub(crate) fn split(x: &Tensor, axis: i64, sizes: &[usize]) -> OpResult<Vec<Tensor>> {
    let axis = normalize_axis(axis, x.shape().len(), "Split axis")?;
    let dim = x.shape()[axis];
    let total: usize = sizes.iter().sum();
    if total != dim {
        op_bail!(
            "Split sizes {sizes:?} add up to {total}, but axis {axis} of the input of shape {:?} has size {dim}",
            x.shape()
        );
    }
    let mut pieces = Vec::with_capacity(sizes.len());
    let mut start = 0isize;
    for &size in sizes {
        let end = start + size as isize;
        pieces.push(slice_axis_of(x, axis, Slice::new(start, Some(end), 1)));
        start = end;
    }
    Ok(pieces)
}

fn slice_axis_of(x: &Tensor, axis: usize, slice: Slice) -> Tensor {
    crate::map_tensor_same!(x, a => a.slice_axis(Axis(axis), slice).as_standard_layout().into_owned())
}

// Slice.

/// `Slice(data, starts, ends, axes?, steps?)` with the clamping rules of
/// the ONNX specification: after adding the dimension to negative values,
/// `start` is clamped to `[0, dim]` for positive steps and `[0, dim - 1]`
/// for negative steps, and `end` to `[0, dim]` or `[-1, dim - 1]`.
pub(crate) fn slice(
    data: &Tensor,
    starts: &Tensor,
    ends: &Tensor,
    axes: Option<&Tensor>,
    steps: Option<&Tensor>,
) -> OpResult<Tensor> {
    let starts = int_values(starts, "Slice starts")?;
    let ends = int_values(ends, "Slice ends")?;
    let rank = data.shape().len();
    let axes = match axes {
        Some(t) => normalize_axes(&int_values(t, "Slice axes")?, rank, "Slice axes")?,
        None => (0..starts.len()).collect(),
    };
    let steps = match steps {
        Some(t) => int_values(t, "Slice steps")?,
        None => vec![1; starts.len()],
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        op_bail!(
            "Slice starts, ends, axes and steps must have the same length, got {}, {}, {} and {}",
            starts.len(),
            ends.len(),
            axes.len(),
            steps.len()
        );
    }
    if axes.iter().any(|&a| a >= rank) {
        op_bail!("Slice lists {} axes, but the input of shape {:?} has only {rank}", axes.len(), data.shape());
    }

    let mut result = data.clone();
    for i in 0..axes.len() {
        let axis = axes[i];
        let slice = resolve_slice(starts[i], ends[i], steps[i], data.shape()[axis])?;
        result = slice_axis_of(&result, axis, slice);
    }
    Ok(result)
}

/// Turns ONNX `(start, end, step)` on a dimension of size `dim` into an
/// `ndarray` slice, which takes `[start, end)` and then steps from the
/// front (positive step) or the back (negative step).
fn resolve_slice(start: i64, end: i64, step: i64, dim: usize) -> OpResult<Slice> {
    if step == 0 {
        op_bail!("Slice steps must be nonzero");
    }
    let (start, end, step, dim) = (start as i128, end as i128, step as i128, dim as i128);
    let wrap = |v: i128| if v < 0 { v + dim } else { v };
    let empty = Slice::new(0, Some(0), 1);
    if step > 0 {
        let first = wrap(start).clamp(0, dim);
        let stop = wrap(end).clamp(0, dim);
        if stop <= first {
            return Ok(empty);
        }
        let count = (stop - first - 1) / step + 1;
        let last = first + (count - 1) * step;
        Ok(Slice::new(first as isize, Some((last + 1) as isize), step as isize))
    } else {
        if dim == 0 {
            return Ok(empty);
        }
        let first = wrap(start).clamp(0, dim - 1);
        let stop = wrap(end).clamp(-1, dim - 1);
        if stop >= first {
            return Ok(empty);
        }
        let count = (first - stop - 1) / -step + 1;
        let last = first + (count - 1) * step;
        Ok(Slice::new(last as isize, Some((first + 1) as isize), step as isize))
    }
}

// Gather.

/// `Gather(data, indices)` along `axis`: the result has shape
/// `data[..axis] + indices + data[axis + 1..]`. Negative indices count from
/// the end; indices outside `[-dim, dim - 1]` are an error.
pub(crate) fn gather(data: &Tensor, indices: &Tensor, axis: i64) -> OpResult<Tensor> {
    let shape = data.shape();
    let axis = normalize_axis(axis, shape.len(), "Gather axis")?;
    let dim = shape[axis];
    let raw = int_values(indices, "Gather indices")?;
    let mut resolved = Vec::with_capacity(raw.len());
    for &i in &raw {
        let wrapped = if i < 0 { i + dim as i64 } else { i };
        if wrapped < 0 || wrapped >= dim as i64 {
            op_bail!(
                "Gather index {i} is out of range for axis {axis} of size {dim}; expected a value in [{}, {}]",
                -(dim as i64),
                dim as i64 - 1
            );
        }
        resolved.push(wrapped as usize);
    }

    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let out_shape = [&shape[..axis], indices.shape(), &shape[axis + 1..]].concat();
    with_any_dtype!(data.dtype(), T => {
        let source = typed::<T>(data, "Gather data")?.as_standard_layout();
        let values = source.as_slice().expect("standard layout is contiguous");
        let mut out = Vec::with_capacity(outer * resolved.len() * inner);
        for o in 0..outer {
            for &i in &resolved {
                let start = (o * dim + i) * inner;
                out.extend_from_slice(&values[start..start + inner]);
            }
        }
        Ok(T::into_tensor(array_from_vec(&out_shape, out)?))
    })
}

// Tile and Pad.

/// `Tile(data, repeats)`: repeats the whole tensor `repeats[d]` times along each axis.
pub(crate) fn tile(data: &Tensor, repeats: &Tensor) -> OpResult<Tensor> {
    let repeats = int_values(repeats, "Tile repeats")?;
    let shape = data.shape();
    if repeats.len() != shape.len() {
        op_bail!("Tile repeats {repeats:?} must have one value per input axis ({} for shape {shape:?})", shape.len());
    }
    if let Some(bad) = repeats.iter().find(|&&r| r < 0) {
        op_bail!("Tile repeats {repeats:?} has the negative value {bad}");
    }
    let mut out_shape = Vec::with_capacity(shape.len());
    for (&d, &r) in shape.iter().zip(&repeats) {
        let Some(size) = d.checked_mul(r as usize) else {
            op_bail!("Tile repeats {repeats:?} make the result of shape {shape:?} too large");
        };
        out_shape.push(size);
    }
    checked_numel(&out_shape, "Tile result shape")?;
    let maps: Vec<Vec<Option<usize>>> =
        out_shape.iter().zip(shape).map(|(&o, &d)| (0..o).map(|i| Some(i % d)).collect()).collect();
    with_any_dtype!(data.dtype(), T => {
        let source = typed::<T>(data, "Tile data")?;
        Ok(T::into_tensor(gather_with_maps(source, &maps, T::default())?))
    })
}

/// `Pad(data, pads, constant_value?)` with `pads = [begin.., end..]`.
/// Negative pads remove elements. Reflect and edge modes repeat their
/// pattern when a pad is longer than the axis, like `numpy.pad`.
pub(crate) fn pad(data: &Tensor, pads: &Tensor, constant_value: Option<&Tensor>, mode: PadMode) -> OpResult<Tensor> {
    let pads = int_values(pads, "Pad pads")?;
    let shape = data.shape();
    let rank = shape.len();
    if pads.len() != 2 * rank {
        op_bail!(
            "Pad pads {pads:?} must have 2 * rank = {} values ([begin..., end...]) for the input of shape {shape:?}",
            2 * rank
        );
    }
    let mut maps = Vec::with_capacity(rank);
    for d in 0..rank {
        maps.push(pad_axis_map(shape[d], pads[d], pads[rank + d], mode, d)?);
    }
    with_any_dtype!(data.dtype(), T => {
        let fill: T = match constant_value {
            Some(v) if !v.is_empty() => scalar_as::<T>(v, "Pad constant_value")?,
            _ => T::default(),
        };
        let source = typed::<T>(data, "Pad data")?;
        Ok(T::into_tensor(gather_with_maps(source, &maps, fill)?))
    })
}

/// For each output position along one axis, the source position or `None` for the constant.
fn pad_axis_map(dim: usize, begin: i64, end: i64, mode: PadMode, axis: usize) -> OpResult<Vec<Option<usize>>> {
    let out = dim as i64 + begin + end;
    if out < 0 {
        op_bail!("Pad pads {begin} and {end} remove more than the {dim} elements of axis {axis}");
    }
    if dim == 0 && out > 0 && mode != PadMode::Constant {
        op_bail!("Pad mode {mode:?} cannot pad axis {axis}, which is empty");
    }
    let n = dim as i64;
    let map = (0..out)
        .map(|i| {
            let source = i - begin;
            if (0..n).contains(&source) {
                return Some(source as usize);
            }
            match mode {
                PadMode::Constant => None,
                PadMode::Edge => Some(source.clamp(0, n - 1) as usize),
                PadMode::Reflect if n == 1 => Some(0),
                PadMode::Reflect => {
                    let period = 2 * (n - 1);
                    let folded = source.rem_euclid(period);
                    Some(if folded < n { folded } else { period - folded } as usize)
                }
            }
        })
        .collect();
    Ok(map)
}

/// Builds an array whose element at output multi-index `o` is
/// `source[maps[0][o0], maps[1][o1], ..]`, or `fill` where any map is `None`.
fn gather_with_maps<T: TensorElement>(source: &ArrayD<T>, maps: &[Vec<Option<usize>>], fill: T) -> OpResult<ArrayD<T>> {
    let out_shape: Vec<usize> = maps.iter().map(Vec::len).collect();
    let total = checked_numel(&out_shape, "result shape")?;
    let standard = source.as_standard_layout();
    let values = standard.as_slice().expect("standard layout is contiguous");
    let strides: Vec<usize> = (0..source.ndim()).map(|d| source.shape()[d + 1..].iter().product()).collect();
    let mut out = Vec::with_capacity(total);
    let mut index = vec![0usize; out_shape.len()];
    for _ in 0..total {
        let offset = index.iter().enumerate().try_fold(0usize, |acc, (d, &i)| maps[d][i].map(|s| acc + s * strides[d]));
        out.push(offset.map_or(fill, |o| values[o]));
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < out_shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    array_from_vec(&out_shape, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;
    use ndarray::IxDyn;

    fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as f32).collect()).unwrap())
    }

    fn ints(values: &[i64]) -> Tensor {
        Tensor::from_i64s(values)
    }

    #[test]
    fn concat_middle_axis() {
        let a = iota(&[2, 1]);
        let b = iota(&[2, 2]);
        let c = concat(&[&a, &b], -1).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(c.to_f64_vec(), vec![0.0, 0.0, 1.0, 1.0, 2.0, 3.0]);
        assert!(concat(&[&a, &iota(&[3, 1])], 1).is_err());
        assert!(concat(&[&a, &ints(&[1, 2])], 0).is_err());
    }

    #[test]
    fn split_sizes() {
        let x = iota(&[2, 5]);
        let parts = split(&x, 1, &[2, 3]).unwrap();
        assert_eq!(parts[0].shape(), &[2, 2]);
        assert_eq!(parts[1].to_f64_vec(), vec![2.0, 3.0, 4.0, 7.0, 8.0, 9.0]);
        assert!(split(&x, 1, &[2, 2]).is_err());
    }

    #[test]
    fn slice_positive_steps() {
        let x = iota(&[2, 4]);
        let y = slice(&x, &ints(&[1, 0]), &ints(&[2, 3]), None, Some(&ints(&[1, 2]))).unwrap();
        assert_eq!(y.shape(), &[1, 2]);
        assert_eq!(y.to_f64_vec(), vec![4.0, 6.0]);
        let to_end = slice(&x, &ints(&[-3]), &ints(&[i64::MAX]), Some(&ints(&[-1])), None).unwrap();
        assert_eq!(to_end.to_f64_vec(), vec![1.0, 2.0, 3.0, 5.0, 6.0, 7.0]);
    }

    #[test]
    fn slice_negative_steps() {
        let x = iota(&[6]);
        let reversed = slice(&x, &ints(&[-1]), &ints(&[i64::MIN]), None, Some(&ints(&[-1]))).unwrap();
        assert_eq!(reversed.to_f64_vec(), vec![5.0, 4.0, 3.0, 2.0, 1.0, 0.0]);
        let stride = slice(&x, &ints(&[20]), &ints(&[0]), None, Some(&ints(&[-2]))).unwrap();
        assert_eq!(stride.to_f64_vec(), vec![5.0, 3.0, 1.0]);
        let three = slice(&x, &ints(&[4]), &ints(&[-6]), None, Some(&ints(&[-3]))).unwrap();
        assert_eq!(three.to_f64_vec(), vec![4.0, 1.0]);
        let empty = slice(&x, &ints(&[1]), &ints(&[3]), None, Some(&ints(&[-1]))).unwrap();
        assert_eq!(empty.len(), 0);
        assert!(slice(&x, &ints(&[0]), &ints(&[3]), None, Some(&ints(&[0]))).is_err());
    }

    #[test]
    fn slice_empty_when_start_past_end() {
        let x = iota(&[4]);
        let y = slice(&x, &ints(&[10]), &ints(&[20]), None, None).unwrap();
        assert_eq!(y.shape(), &[0]);
    }

    #[test]
    fn gather_negative_indices() {
        let x = iota(&[3, 2]);
        let idx = Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![0, -1, 2, -3]).unwrap());
        let rows = gather(&x, &idx, 0).unwrap();
        assert_eq!(rows.shape(), &[2, 2, 2]);
        assert_eq!(rows.to_f64_vec(), vec![0.0, 1.0, 4.0, 5.0, 4.0, 5.0, 0.0, 1.0]);
        let columns = gather(&x, &Tensor::I32(ArrayD::from_elem(IxDyn(&[]), -1)), 1).unwrap();
        assert_eq!(columns.shape(), &[3]);
        assert_eq!(columns.to_f64_vec(), vec![1.0, 3.0, 5.0]);
    }

    #[test]
    fn gather_out_of_range_is_error() {
        let x = iota(&[3]);
        let err = gather(&x, &ints(&[3]), 0).unwrap_err();
        assert!(err.message.contains("out of range"), "{}", err.message);
        assert!(gather(&x, &ints(&[-4]), 0).is_err());
        assert!(gather(&x, &iota(&[1]), 0).is_err());
    }

    #[test]
    fn tile_repeats() {
        let x = iota(&[2, 2]);
        let y = tile(&x, &ints(&[1, 2])).unwrap();
        assert_eq!(y.shape(), &[2, 4]);
        assert_eq!(y.to_f64_vec(), vec![0.0, 1.0, 0.0, 1.0, 2.0, 3.0, 2.0, 3.0]);
        assert_eq!(tile(&x, &ints(&[0, 1])).unwrap().shape(), &[0, 2]);
        assert!(tile(&x, &ints(&[2])).is_err());
    }

    #[test]
    fn pad_modes() {
        let x = iota(&[3]);
        let constant = pad(&x, &ints(&[2, 1]), Some(&Tensor::scalar_f32(-1.0)), PadMode::Constant).unwrap();
        assert_eq!(constant.to_f64_vec(), vec![-1.0, -1.0, 0.0, 1.0, 2.0, -1.0]);
        let reflect = pad(&x, &ints(&[5, 0]), None, PadMode::Reflect).unwrap();
        assert_eq!(reflect.to_f64_vec(), vec![1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0]);
        let edge = pad(&x, &ints(&[1, 2]), None, PadMode::Edge).unwrap();
        assert_eq!(edge.to_f64_vec(), vec![0.0, 0.0, 1.0, 2.0, 2.0, 2.0]);
        let cropped = pad(&x, &ints(&[-1, 1]), None, PadMode::Constant).unwrap();
        assert_eq!(cropped.to_f64_vec(), vec![1.0, 2.0, 0.0]);
    }

    #[test]
    fn pad_2d_and_int_dtype() {
        let x = Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1, 2, 3, 4]).unwrap());
        let y = pad(&x, &ints(&[0, 1, 1, 0]), Some(&Tensor::from_i64s(&[9])), PadMode::Constant).unwrap();
        assert_eq!(y.dtype(), DType::I64);
        assert_eq!(y.shape(), &[3, 3]);
        assert_eq!(y.to_i64_vec(), vec![9, 1, 2, 9, 3, 4, 9, 9, 9]);
        assert!(pad(&x, &ints(&[0, 1]), None, PadMode::Constant).is_err());
    }
}
