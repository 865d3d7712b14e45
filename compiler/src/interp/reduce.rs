//! Reductions: `ReduceMean`, `ReduceSum` and the other `Reduce*`
//! operators, and `ArgMax` / `ArgMin`.
//!
//! The reduced axes are moved last so that each output element reduces
//! one contiguous group. Float groups are accumulated in `f64`. Integer
//! `Sum`, `Prod`, `SumSquare`, `L1`, `Max` and `Min` are exact, wrapping
//! on overflow, while integer `Mean`, `L2` and `LogSumExp` go through
//! `f64` and truncate toward zero, as a NumPy `astype` does. An empty
//! group gives the identity of the reduction, as ONNX opset 18 specifies:
//! 0 for sums, 1 for `Prod`, the lowest value for `Max`, the highest for
//! `Min`, `-inf` for `LogSumExp` and NaN for a float `Mean`.

use ndarray::{ArrayViewD, IxDyn};

use super::common::{TensorElement, array_from_vec, normalize_axes, normalize_axis, typed, with_any_dtype};
use crate::error::OpResult;
use crate::ir::op::ReduceKind;
use crate::op_bail;
use crate::tensor::{DType, Tensor};

/// Axis order, group length and result shape of one reduction.
struct Grouping {
    /// Input axes permuted so that the reduced ones come last.
    order: Vec<usize>,
    group_len: usize,
    out_shape: Vec<usize>,
}

impl Grouping {
    fn new(shape: &[usize], reduced: &[usize], keepdims: bool) -> Grouping {
        let kept: Vec<usize> = (0..shape.len()).filter(|d| !reduced.contains(d)).collect();
        let order = [kept.as_slice(), reduced].concat();
        let group_len = reduced.iter().map(|&d| shape[d]).product();
        let out_shape = if keepdims {
            (0..shape.len()).map(|d| if reduced.contains(&d) { 1 } else { shape[d] }).collect()
        } else {
            kept.iter().map(|&d| shape[d]).collect()
        };
        Grouping { order, group_len, out_shape }
    }

    /// Collects the elements of `x` in group order (one contiguous run per output element).
    fn arrange<T: Clone>(&self, x: &ArrayViewD<'_, T>) -> Vec<T> {
        let permuted = x.clone().permuted_axes(IxDyn(&self.order));
        permuted.iter().cloned().collect()
    }

    fn group_count(&self) -> usize {
        self.out_shape.iter().product()
    }
}

// Reduce.

/// Computes a `Reduce*` operator. `axes` of `None` or empty reduces every axis,
/// unless `noop_with_empty_axes` is set, which returns the input unchanged.
pub(crate) fn reduce(
    x: &Tensor,
    kind: ReduceKind,
    axes: Option<&[i64]>,
    keepdims: bool,
    noop_with_empty_axes: bool,
) -> OpResult<Tensor> {
    let rank = x.shape().len();
    let reduced = match axes {
        Some(axes) if !axes.is_empty() => normalize_axes(axes, rank, &format!("{} axes", kind.name()))?,
        _ if noop_with_empty_axes => return Ok(x.clone()),
        _ => (0..rank).collect(),
    };
    let grouping = Grouping::new(x.shape(), &reduced, keepdims);
    match x.dtype() {
        DType::Bool => reduce_bool(x, kind, &grouping),
        DType::F32 | DType::F64 | DType::F16 => with_any_dtype!(x.dtype(), T => reduce_float::<T>(x, kind, &grouping)),
        _ => with_any_dtype!(x.dtype(), T => reduce_int::<T>(x, kind, &grouping)),
    }
}

fn reduce_float<T: TensorElement>(x: &Tensor, kind: ReduceKind, grouping: &Grouping) -> OpResult<Tensor> {
    let data = grouping.arrange(&typed::<T>(x, "Reduce input")?.view());
    let values: Vec<T> =
        groups(&data, grouping).map(|group| T::from_f64(reduce_f64(kind, group.iter().map(|v| v.to_f64())))).collect();
    Ok(T::into_tensor(array_from_vec(&grouping.out_shape, values)?))
}

fn reduce_int<T: TensorElement>(x: &Tensor, kind: ReduceKind, grouping: &Grouping) -> OpResult<Tensor> {
    let data = grouping.arrange(&typed::<T>(x, "Reduce input")?.view());
    let values: Vec<T> = groups(&data, grouping)
        .map(|group| {
            let ints = group.iter().map(|v| v.to_i64());
            match kind {
                ReduceKind::Sum => T::from_i64(ints.fold(0i64, i64::wrapping_add)),
                ReduceKind::Prod => T::from_i64(ints.fold(1i64, i64::wrapping_mul)),
                ReduceKind::SumSquare => T::from_i64(ints.fold(0i64, |acc, v| acc.wrapping_add(v.wrapping_mul(v)))),
                ReduceKind::L1 => T::from_i64(ints.fold(0i64, |acc, v| acc.wrapping_add(v.wrapping_abs()))),
                ReduceKind::Max => ints.max().map_or(T::from_f64(f64::NEG_INFINITY), T::from_i64),
                ReduceKind::Min => ints.min().map_or(T::from_f64(f64::INFINITY), T::from_i64),
                ReduceKind::Mean | ReduceKind::L2 | ReduceKind::LogSumExp => {
                    T::from_f64(reduce_f64(kind, group.iter().map(|v| v.to_f64())))
                }
            }
        })
        .collect();
    Ok(T::into_tensor(array_from_vec(&grouping.out_shape, values)?))
}

/// Computes `ReduceMax` (any) and `ReduceMin` (all) on bool tensors, which
/// ONNX opset 20 allows. An empty group gives `false` and `true`.
fn reduce_bool(x: &Tensor, kind: ReduceKind, grouping: &Grouping) -> OpResult<Tensor> {
    let data = grouping.arrange(&typed::<bool>(x, "Reduce input")?.view());
    let values: Vec<bool> = match kind {
        ReduceKind::Max => groups(&data, grouping).map(|g| g.iter().any(|&v| v)).collect(),
        ReduceKind::Min => groups(&data, grouping).map(|g| g.iter().all(|&v| v)).collect(),
        _ => op_bail!("{} does not support bool tensors (only ReduceMax and ReduceMin do)", kind.name()),
    };
    Ok(Tensor::Bool(array_from_vec(&grouping.out_shape, values)?))
}

/// Splits `data` into one group per output element. Groups are empty when a reduced axis has size 0.
fn groups<'a, T>(data: &'a [T], grouping: &Grouping) -> impl Iterator<Item = &'a [T]> + 'a {
    let len = grouping.group_len;
    (0..grouping.group_count()).map(move |g| if len == 0 { &data[0..0] } else { &data[g * len..(g + 1) * len] })
}

fn reduce_f64(kind: ReduceKind, values: impl Iterator<Item = f64> + Clone) -> f64 {
    match kind {
        ReduceKind::Sum => values.sum(),
        ReduceKind::Mean => {
            let count = values.clone().count();
            values.sum::<f64>() / count as f64
        }
        ReduceKind::Prod => values.product(),
        ReduceKind::SumSquare => values.map(|v| v * v).sum(),
        ReduceKind::L1 => values.map(f64::abs).sum(),
        ReduceKind::L2 => values.map(|v| v * v).sum::<f64>().sqrt(),
        ReduceKind::Max => {
            values.fold(f64::NEG_INFINITY, |m, v| if m.is_nan() || v.is_nan() { f64::NAN } else { m.max(v) })
        }
        ReduceKind::Min => {
            values.fold(f64::INFINITY, |m, v| if m.is_nan() || v.is_nan() { f64::NAN } else { m.min(v) })
        }
        ReduceKind::LogSumExp => {
            let max = reduce_f64(ReduceKind::Max, values.clone());
            if !max.is_finite() {
                // An empty or all -inf group gives -inf, and +inf or NaN propagate.
                return if max.is_nan() || max > 0.0 { max } else { f64::NEG_INFINITY };
            }
            max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
        }
    }
}

// ArgMax and ArgMin.

/// Computes `ArgMax` (`max`) or `ArgMin` along `axis` as `i64` indices. Ties
/// pick the first index, or the last with `select_last_index`. A NaN wins
/// over numbers, and the first NaN wins among several, like `numpy.argmax`.
pub(crate) fn arg_extreme(
    x: &Tensor,
    axis: i64,
    keepdims: bool,
    select_last_index: bool,
    max: bool,
) -> OpResult<Tensor> {
    let name = if max { "ArgMax" } else { "ArgMin" };
    let axis = normalize_axis(axis, x.shape().len(), &format!("{name} axis"))?;
    let grouping = Grouping::new(x.shape(), &[axis], keepdims);
    if x.shape()[axis] == 0 {
        op_bail!("{name} cannot reduce axis {axis} of size 0 (input shape {:?})", x.shape());
    }
    if x.dtype() == DType::Bool {
        op_bail!("{name} does not support bool tensors");
    }
    let indices: Vec<i64> = with_any_dtype!(x.dtype(), T => {
        let data = grouping.arrange(&typed::<T>(x, name)?.view());
        groups(&data, &grouping).map(|group| best_index(group, select_last_index, max)).collect()
    });
    Ok(Tensor::I64(array_from_vec(&grouping.out_shape, indices)?))
}

fn best_index<T: PartialOrd + Copy>(group: &[T], select_last: bool, max: bool) -> i64 {
    #[allow(clippy::eq_op)]
    let is_nan = |v: T| v != v;
    let mut best = 0;
    for (i, &v) in group.iter().enumerate().skip(1) {
        let current = group[best];
        if is_nan(current) {
            break;
        }
        let better = if max { v > current } else { v < current };
        if is_nan(v) || better || (select_last && v == current) {
            best = i;
        }
    }
    best as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ArrayD;

    fn f32s(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), data.to_vec()).unwrap())
    }

    fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        f32s(shape, &(0..n).map(|i| i as f32).collect::<Vec<_>>())
    }

    #[test]
    fn reduce_sum_and_mean_axes() {
        let x = iota(&[2, 3]);
        let sum = reduce(&x, ReduceKind::Sum, Some(&[1]), false, false).unwrap();
        assert_eq!(sum.shape(), &[2]);
        assert_eq!(sum.to_f64_vec(), vec![3.0, 12.0]);
        let mean = reduce(&x, ReduceKind::Mean, Some(&[-2]), true, false).unwrap();
        assert_eq!(mean.shape(), &[1, 3]);
        assert_eq!(mean.to_f64_vec(), vec![1.5, 2.5, 3.5]);
    }

    #[test]
    fn reduce_all_and_noop() {
        let x = iota(&[2, 3]);
        let all = reduce(&x, ReduceKind::Max, None, false, false).unwrap();
        assert_eq!(all.shape(), &[] as &[usize]);
        assert_eq!(all.to_f64_vec(), vec![5.0]);
        let kept = reduce(&x, ReduceKind::Prod, Some(&[]), true, false).unwrap();
        assert_eq!(kept.shape(), &[1, 1]);
        assert_eq!(kept.to_f64_vec(), vec![0.0]);
        assert_eq!(reduce(&x, ReduceKind::Sum, None, true, true).unwrap(), x);
    }

    #[test]
    fn reduce_kinds() {
        let x = f32s(&[3], &[-1.0, 2.0, -2.0]);
        let run = |kind| reduce(&x, kind, None, false, false).unwrap().to_f64_vec()[0];
        assert_eq!(run(ReduceKind::Min), -2.0);
        assert_eq!(run(ReduceKind::SumSquare), 9.0);
        assert_eq!(run(ReduceKind::L1), 5.0);
        assert_eq!(run(ReduceKind::L2), 3.0);
        let lse = run(ReduceKind::LogSumExp);
        let expected = ((-1f64).exp() + 2f64.exp() + (-2f64).exp()).ln();
        assert!((lse - expected).abs() < 1e-6, "{lse} vs {expected}");
    }

    #[test]
    fn reduce_log_sum_exp_huge_values() {
        let x = f32s(&[2], &[1000.0, 1000.0]);
        let lse = reduce(&x, ReduceKind::LogSumExp, None, false, false).unwrap().to_f64_vec()[0];
        assert!((lse - (1000.0 + 2f64.ln())).abs() < 1e-3, "{lse}");
    }

    #[test]
    fn reduce_empty_groups() {
        let x = Tensor::zeros(DType::F32, &[2, 0]);
        let run = |kind| reduce(&x, kind, Some(&[1]), false, false).unwrap().to_f64_vec();
        assert_eq!(run(ReduceKind::Sum), vec![0.0, 0.0]);
        assert_eq!(run(ReduceKind::Prod), vec![1.0, 1.0]);
        assert_eq!(run(ReduceKind::Max), vec![f64::NEG_INFINITY; 2]);
        assert_eq!(run(ReduceKind::LogSumExp), vec![f64::NEG_INFINITY; 2]);
        assert!(run(ReduceKind::Mean)[0].is_nan());
        let ints = Tensor::zeros(DType::I32, &[0]);
        assert_eq!(reduce(&ints, ReduceKind::Min, None, false, false).unwrap().to_i64_vec(), vec![i32::MAX as i64]);
    }

    #[test]
    fn reduce_integers_exact() {
        let x = Tensor::from_i64s(&[i64::MAX - 1, 1, 7]);
        assert_eq!(reduce(&x, ReduceKind::Max, None, false, false).unwrap().to_i64_vec(), vec![i64::MAX - 1]);
        let y = Tensor::from_i64s(&[1, 2, 4]);
        assert_eq!(reduce(&y, ReduceKind::Mean, None, false, false).unwrap().to_i64_vec(), vec![2]);
        assert!(reduce(&y, ReduceKind::Sum, Some(&[0, 0]), false, false).is_err());
    }

    #[test]
    fn reduce_bool_max_min() {
        let x = Tensor::Bool(ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![true, false, false, false]).unwrap());
        assert_eq!(reduce(&x, ReduceKind::Max, Some(&[1]), false, false).unwrap().to_i64_vec(), vec![1, 0]);
        assert_eq!(reduce(&x, ReduceKind::Min, Some(&[1]), false, false).unwrap().to_i64_vec(), vec![0, 0]);
        assert!(reduce(&x, ReduceKind::Sum, None, false, false).is_err());
    }

    #[test]
    fn argmax_ties_and_keepdims() {
        let x = f32s(&[2, 3], &[1.0, 3.0, 3.0, 5.0, 0.0, 5.0]);
        let first = arg_extreme(&x, 1, false, false, true).unwrap();
        assert_eq!(first.dtype(), DType::I64);
        assert_eq!(first.to_i64_vec(), vec![1, 0]);
        let last = arg_extreme(&x, -1, true, true, true).unwrap();
        assert_eq!(last.shape(), &[2, 1]);
        assert_eq!(last.to_i64_vec(), vec![2, 2]);
        let min = arg_extreme(&x, 0, false, false, false).unwrap();
        assert_eq!(min.to_i64_vec(), vec![0, 1, 0]);
    }

    #[test]
    fn argmax_nan_wins() {
        let x = f32s(&[3], &[1.0, f32::NAN, 5.0]);
        assert_eq!(arg_extreme(&x, 0, false, false, true).unwrap().to_i64_vec(), vec![1]);
    }
}
