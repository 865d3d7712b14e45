//! Normalizations: `Softmax`, `LogSoftmax`, `LayerNorm` and `BatchNorm`.
//!
//! Softmax subtracts the row maximum before `exp`, so huge logits neither
//! overflow nor lose the small ones. Rows that contain NaN or `+inf`, and
//! rows that are all `-inf`, come out as all NaN. This matches ONNX Runtime
//! 1.32 on CPU, checked on such rows, and is what the max-subtracted formula
//! gives, because `-inf - -inf` and `inf - inf` are NaN.
//!
//! LayerNorm computes each row's mean and biased variance in `f64` with two
//! passes (mean first, then the mean of squared deviations), so rows of
//! magnitude `1e20` and constant rows come out right.

use ndarray::{ArrayD, ArrayViewD, ArrayViewMut1, IxDyn, Zip};

use super::common::{Real, array_from_vec, expect_dtype, float_kernel, normalize_axis};
use super::elementwise::broadcast_view;
use crate::error::OpResult;
use crate::op_bail;
use crate::tensor::{Element, Tensor};

// Softmax.

/// `Softmax` or, with `log`, `LogSoftmax` along `axis`. With `flatten_tail`
/// (ONNX opset < 13) the input is viewed as 2-D at `axis` and each row of
/// `prod(dims[axis..])` elements is normalized as a whole.
pub(crate) fn softmax(x: &Tensor, axis: i64, flatten_tail: bool, log: bool) -> OpResult<Tensor> {
    let label = if log { "LogSoftmax input" } else { "Softmax input" };
    float_kernel!(x, label, |a: T| softmax_typed::<T>(a.view(), axis, flatten_tail, log)?)
}

fn softmax_typed<T: Real>(x: ArrayViewD<'_, T>, axis: i64, flatten_tail: bool, log: bool) -> OpResult<ArrayD<T>> {
    let rank = x.ndim();
    if flatten_tail {
        let axis = normalize_flatten_axis(axis, rank)?;
        let row_len: usize = x.shape()[axis..].iter().product();
        let mut data = x.as_standard_layout().into_owned();
        normalize_rows(data.as_slice_mut().expect("standard layout is contiguous"), row_len, log);
        return Ok(data);
    }

    // Move `axis` last so that each softmax row is contiguous, then move it back.
    let axis = normalize_axis(axis, rank, "Softmax axis")?;
    let mut to_last: Vec<usize> = (0..rank).filter(|&d| d != axis).collect();
    to_last.push(axis);
    let row_len = x.shape()[axis];
    let moved = x.permuted_axes(to_last.clone());
    let mut data = moved.as_standard_layout().into_owned();
    normalize_rows(data.as_slice_mut().expect("standard layout is contiguous"), row_len, log);
    let mut back = vec![0; rank];
    for (position, &dim) in to_last.iter().enumerate() {
        back[dim] = position;
    }
    Ok(data.permuted_axes(back).as_standard_layout().into_owned())
}

/// Accepts `axis` in `[-rank, rank]`, the range of opset < 13 `Softmax`.
fn normalize_flatten_axis(axis: i64, rank: usize) -> OpResult<usize> {
    let r = rank as i64;
    if axis < -r || axis > r {
        op_bail!("Softmax axis {axis} is out of range for a tensor of rank {rank}, which allows [{}, {r}]", -r);
    }
    Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
}

fn normalize_rows<T: Real>(data: &mut [T], row_len: usize, log: bool) {
    if row_len == 0 {
        return;
    }
    for row in data.chunks_mut(row_len) {
        if log { log_softmax_slice(row) } else { softmax_slice(row) }
    }
}

fn row_max<T: Real>(row: impl Iterator<Item = T>) -> T {
    row.fold(T::neg_infinity(), |m, v| if v > m || v.is_nan() { v } else { m })
}

fn softmax_slice<T: Real>(row: &mut [T]) {
    let max = row_max(row.iter().copied());
    let mut sum = T::zero();
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

fn log_softmax_slice<T: Real>(row: &mut [T]) {
    let max = row_max(row.iter().copied());
    let sum = row.iter().fold(T::zero(), |acc, &v| acc + (v - max).exp());
    let log_sum = sum.ln();
    for v in row.iter_mut() {
        *v = *v - max - log_sum;
    }
}

/// Computes the max-subtracted softmax of one row in place, for the attention kernel.
pub(crate) fn softmax_in_place<T: Real>(mut row: ArrayViewMut1<'_, T>) {
    match row.as_slice_mut() {
        Some(slice) => softmax_slice(slice),
        None => {
            let mut copy = row.to_vec();
            softmax_slice(&mut copy);
            row.iter_mut().zip(copy).for_each(|(v, c)| *v = c);
        }
    }
}

// LayerNorm.

/// `LayerNorm(x, scale, bias?)` over dims `axis..`:
/// `(x - mean) / sqrt(var + epsilon) * scale + bias`. `scale` and `bias`
/// broadcast against `x` with NumPy rules, like ONNX `LayerNormalization`.
pub(crate) fn layer_norm(
    x: &Tensor,
    scale: &Tensor,
    bias: Option<&Tensor>,
    axis: i64,
    epsilon: f32,
) -> OpResult<Tensor> {
    expect_dtype(scale, x.dtype(), "LayerNorm scale")?;
    if let Some(bias) = bias {
        expect_dtype(bias, x.dtype(), "LayerNorm bias")?;
    }
    float_kernel!(x, "LayerNorm input", |a: T| {
        let scale = T::view_of(scale, "LayerNorm scale")?;
        let bias = bias.map(|b| T::view_of(b, "LayerNorm bias")).transpose()?;
        layer_norm_typed::<T>(a.view(), scale.view(), bias.as_ref().map(|b| b.view()), axis, epsilon)?
    })
}

fn layer_norm_typed<T: Real>(
    x: ArrayViewD<'_, T>,
    scale: ArrayViewD<'_, T>,
    bias: Option<ArrayViewD<'_, T>>,
    axis: i64,
    epsilon: f32,
) -> OpResult<ArrayD<T>> {
    let shape = x.shape().to_vec();
    let axis = normalize_axis(axis, shape.len(), "LayerNorm axis")?;
    let row_len: usize = shape[axis..].iter().product();
    let standard = x.as_standard_layout();
    let data = standard.as_slice().expect("standard layout is contiguous");

    // Normalize each row in f64.
    let epsilon = epsilon as f64;
    let mut normalized = Vec::with_capacity(data.len());
    if row_len > 0 {
        for row in data.chunks(row_len) {
            let n = row_len as f64;
            let mean = row.iter().map(|&v| Element::to_f64(v)).sum::<f64>() / n;
            let variance = row.iter().map(|&v| (Element::to_f64(v) - mean).powi(2)).sum::<f64>() / n;
            let inv_std = 1.0 / (variance + epsilon).sqrt();
            normalized.extend(row.iter().map(|&v| T::from_f64((Element::to_f64(v) - mean) * inv_std)));
        }
    }
    let mut y = array_from_vec(&shape, normalized)?;

    // Apply scale and bias.
    apply_affine(&mut y, &scale, |v, s| v * s, "LayerNorm scale", axis)?;
    if let Some(bias) = &bias {
        apply_affine(&mut y, bias, |v, b| v + b, "LayerNorm bias", axis)?;
    }
    Ok(y)
}

/// Combines `y` in place with `param` broadcast to `y`'s shape. The fast
/// path views `param` as one row over the normalized dims `axis..`.
fn apply_affine<T: Real>(
    y: &mut ArrayD<T>,
    param: &ArrayViewD<'_, T>,
    f: impl Fn(T, T) -> T,
    label: &str,
    axis: usize,
) -> OpResult<()> {
    let shape = y.shape().to_vec();
    if param.ndim() <= shape.len() - axis
        && let Some(row) = param.broadcast(IxDyn(&shape[axis..]))
    {
        let row: Vec<T> = row.iter().copied().collect();
        if !row.is_empty() {
            let data = y.as_slice_mut().expect("built in standard layout");
            for chunk in data.chunks_mut(row.len()) {
                chunk.iter_mut().zip(&row).for_each(|(v, &p)| *v = f(*v, p));
            }
        }
        return Ok(());
    }
    let full = broadcast_view(param, &shape, label)?;
    Zip::from(y.view_mut()).and(&full).for_each(|v, &p| *v = f(*v, p));
    Ok(())
}

// BatchNorm.

/// Inference-mode `BatchNormalization(x, scale, bias, mean, var)` on
/// `[N, C, ...]` inputs (a 1-D input is `[N]` with one channel). The
/// parameters may have any float type, as ONNX opset 15 allows.
pub(crate) fn batch_norm(x: &Tensor, params: [&Tensor; 4], epsilon: f32) -> OpResult<Tensor> {
    let names = ["scale", "bias", "mean", "var"];
    let channels = if x.shape().len() >= 2 { x.shape()[1] } else { 1 };
    let mut values: Vec<Vec<f64>> = Vec::with_capacity(4);
    for (param, name) in params.iter().zip(names) {
        if !param.dtype().is_float() {
            op_bail!("BatchNorm {name} must be a float tensor, got {}", param.dtype());
        }
        if param.len() != channels {
            op_bail!("BatchNorm {name} must have {channels} elements (one per channel), got shape {:?}", param.shape());
        }
        values.push(param.to_f64_vec());
    }
    float_kernel!(x, "BatchNorm input", |a: T| batch_norm_typed::<T>(a.view(), &values, epsilon as f64)?)
}

fn batch_norm_typed<T: Real>(x: ArrayViewD<'_, T>, params: &[Vec<f64>], epsilon: f64) -> OpResult<ArrayD<T>> {
    if x.ndim() == 0 {
        op_bail!("BatchNorm input must have rank 1 or more, got a scalar");
    }
    let shape = x.shape().to_vec();
    let channels = if shape.len() >= 2 { shape[1] } else { 1 };
    let spatial: usize = shape.iter().skip(2).product();
    let (scale, bias, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
    let standard = x.as_standard_layout();
    let data = standard.as_slice().expect("standard layout is contiguous");
    let mut y = Vec::with_capacity(data.len());
    for (i, &v) in data.iter().enumerate() {
        let c = i.checked_div(spatial).map_or(0, |plane| plane % channels);
        let normalized = (Element::to_f64(v) - mean[c]) / (var[c] + epsilon).sqrt();
        y.push(T::from_f64(normalized * scale[c] + bias[c]));
    }
    array_from_vec(&shape, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), data.to_vec()).unwrap())
    }

    fn close(got: &[f64], expected: &[f64], tolerance: f64) {
        assert_eq!(got.len(), expected.len());
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            assert!((g - e).abs() <= tolerance, "element {i}: {g} vs {e}");
        }
    }

    #[test]
    fn softmax_last_axis() {
        let x = f32s(&[2, 3], &[1.0, 2.0, 3.0, 0.0, 0.0, 0.0]);
        let y = softmax(&x, -1, false, false).unwrap().to_f64_vec();
        close(&y, &[0.09003057, 0.24472847, 0.66524096, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0], 1e-7);
    }

    #[test]
    fn softmax_middle_axis() {
        let x = f32s(&[1, 2, 2], &[0.0, 1.0, 0.0, 3.0]);
        let y = softmax(&x, 1, false, false).unwrap().to_f64_vec();
        // Columns [0, 0] and [1, 3] are normalized separately.
        close(&y, &[0.5, 0.11920292, 0.5, 0.88079708], 1e-7);
    }

    #[test]
    fn softmax_flatten_tail() {
        let x = f32s(&[2, 2], &[0.0, 0.0, 0.0, 0.0]);
        let flat = softmax(&x, 0, true, false).unwrap().to_f64_vec();
        close(&flat, &[0.25; 4], 1e-7);
    }

    #[test]
    fn softmax_extreme_logits() {
        let x = f32s(&[2, 3], &[1e30, -1e30, 1e30, -3e38, -3e38, 0.0]);
        let y = softmax(&x, -1, false, false).unwrap().to_f64_vec();
        close(&y, &[0.5, 0.0, 0.5, 0.0, 0.0, 1.0], 0.0);
        let log = softmax(&x, -1, false, true).unwrap().to_f64_vec();
        close(&log[..1], &[-std::f64::consts::LN_2], 1e-6);
        assert_eq!(log[1], -2e30f32 as f64);
        assert_eq!(log[5], 0.0);
    }

    #[test]
    fn softmax_all_negative_infinity_is_nan() {
        let x = f32s(&[1, 2], &[f32::NEG_INFINITY, f32::NEG_INFINITY]);
        let y = softmax(&x, -1, false, false).unwrap().to_f64_vec();
        assert!(y.iter().all(|v| v.is_nan()), "{y:?}");
        let with_inf = f32s(&[1, 2], &[f32::INFINITY, 0.0]);
        assert!(softmax(&with_inf, -1, false, false).unwrap().to_f64_vec().iter().all(|v| v.is_nan()));
    }

    #[test]
    fn softmax_f16_computes_in_f32() {
        let x = Tensor::F16(
            ArrayD::from_shape_vec(IxDyn(&[2]), vec![half::f16::from_f32(0.0), half::f16::from_f32(1.0)]).unwrap(),
        );
        let y = softmax(&x, 0, false, false).unwrap();
        assert_eq!(y.dtype(), crate::tensor::DType::F16);
        close(&y.to_f64_vec(), &[0.26894142, 0.73105858], 1e-3);
    }

    #[test]
    fn softmax_bad_axis() {
        let x = f32s(&[2], &[0.0, 1.0]);
        assert!(softmax(&x, 1, false, false).is_err());
        assert!(softmax(&Tensor::from_i64s(&[1]), 0, false, false).is_err());
    }

    #[test]
    fn layer_norm_basic_scale_bias() {
        let x = f32s(&[2, 2], &[1.0, 3.0, -2.0, 2.0]);
        let scale = f32s(&[2], &[2.0, 1.0]);
        let bias = f32s(&[2], &[0.5, 0.0]);
        let y = layer_norm(&x, &scale, Some(&bias), -1, 0.0).unwrap().to_f64_vec();
        close(&y, &[-1.5, 1.0, -1.5, 1.0], 1e-6);
    }

    #[test]
    fn layer_norm_constant_row() {
        let x = f32s(&[1, 4], &[7.0; 4]);
        let scale = f32s(&[4], &[1.0; 4]);
        let bias = f32s(&[4], &[0.25; 4]);
        let y = layer_norm(&x, &scale, Some(&bias), -1, 1e-5).unwrap().to_f64_vec();
        close(&y, &[0.25; 4], 0.0);
    }

    #[test]
    fn layer_norm_huge_magnitude() {
        let x = f32s(&[2, 4], &[1e20, -1e20, 1e20, -1e20, -3e25, -3e25, -3e25, -3e25]);
        let scale = f32s(&[4], &[1.0; 4]);
        let y = layer_norm(&x, &scale, None, 1, 1e-5).unwrap().to_f64_vec();
        close(&y, &[1.0, -1.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.0], 1e-6);
    }

    #[test]
    fn layer_norm_over_two_axes_with_broadcast_scale() {
        let x = f32s(&[1, 2, 2], &[0.0, 1.0, 2.0, 3.0]);
        // Scale of shape [1, 1, 2] is broadcast over the full input.
        let scale = f32s(&[1, 1, 2], &[1.0, -1.0]);
        let y = layer_norm(&x, &scale, None, 1, 0.0).unwrap().to_f64_vec();
        let s = 1.25f64.sqrt();
        close(&y, &[-1.5 / s, 0.5 / s, 0.5 / s, -1.5 / s], 1e-6);
    }

    #[test]
    fn batch_norm_per_channel() {
        let x = f32s(&[1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let scale = f32s(&[2], &[1.0, 2.0]);
        let bias = f32s(&[2], &[0.0, 1.0]);
        let mean = f32s(&[2], &[1.0, 3.0]);
        let var = f32s(&[2], &[4.0, 1.0]);
        let y = batch_norm(&x, [&scale, &bias, &mean, &var], 0.0).unwrap().to_f64_vec();
        close(&y, &[0.0, 0.5, 1.0, 3.0], 1e-6);
        assert!(batch_norm(&x, [&scale, &bias, &mean, &f32s(&[3], &[1.0; 3])], 0.0).is_err());
    }
}
