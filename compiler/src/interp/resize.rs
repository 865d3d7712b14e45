//! `Resize(x, roi?, scales?, sizes?)` with nearest, linear and cubic
//! interpolation on any axes.
//!
//! The kernel follows the ONNX reference implementation
//! (`onnx/reference/ops/op_resize.py`, onnx 1.22) step for step, because
//! the backend tests are generated from it:
//!
//! 1. Output size per axis: `sizes`, or `floor(in * scale)` from `scales`.
//!    The scale used for coordinates is `scales[d]`, or `out / in` when
//!    `sizes` is given.
//! 2. The data is converted to `f64` and resized one axis at a time
//!    (interpolation is separable), skipping axes whose scale is 1 and
//!    whose size does not change. Values stay in `f64` between axes.
//! 3. Per output index, the coordinate transform gives a source coordinate
//!    `x`, and `ratio` is `x - floor(x)`, or 1 when `x` is an integer. That
//!    way the left neighbour is preferred. The kernel has 2 taps (nearest,
//!    linear) or 4 taps (cubic). Taps outside the input are clamped to the
//!    edge, or dropped with renormalized weights under `exclude_outside`.
//! 4. The result is rounded back to the input type. Integers round half
//!    to even and saturate, like `onnx.numpy_helper.saturate_cast`.
//!
//! Antialiasing, `axes` and `keep_aspect_ratio_policy` are not attributes
//! of [`ResizeAttrs`]; the importer resolves the last two into full-rank
//! `scales` or `sizes`.

use super::common::{TensorElement, array_from_vec, with_any_dtype};
use crate::error::OpResult;
use crate::ir::op::{CoordinateTransform, NearestMode, ResizeAttrs, ResizeMode};
use crate::op_bail;
use crate::tensor::{DType, Element, Tensor};

/// Computes `Resize` with the algorithm of the module documentation.
pub(crate) fn resize(
    x: &Tensor,
    roi: Option<&Tensor>,
    scales: Option<&Tensor>,
    sizes: Option<&Tensor>,
    attrs: &ResizeAttrs,
) -> OpResult<Tensor> {
    if x.dtype() == DType::Bool {
        op_bail!("Resize input must be numeric, got bool");
    }
    let input = x.shape().to_vec();
    let rank = input.len();
    let (scale, output) = output_geometry(&input, scales, sizes)?;
    if let Some(axis) = (0..rank).find(|&d| input[d] == 0 && output[d] > 0) {
        op_bail!(
            "Resize cannot interpolate axis {axis}: it is empty in the input of shape {input:?} but has size {} in the output",
            output[axis]
        );
    }
    let roi = resolve_roi(roi, rank, attrs.coordinate_transform)?;

    // Resize one axis at a time in f64.
    let mut data = x.to_f64_vec();
    for (axis, taps, before) in axis_steps(attrs, &input, &output, &scale, roi.as_deref()) {
        data = taps.apply(&data, &before, axis);
    }
    let shape = output;

    with_any_dtype!(x.dtype(), T => {
        let values: Vec<T> = if T::DTYPE.is_float() {
            data.into_iter().map(T::from_f64).collect()
        } else {
            // `as` conversions saturate, so only the rounding is explicit.
            data.into_iter().map(|v| T::from_f64(v.round_ties_even())).collect()
        };
        Ok(T::into_tensor(array_from_vec(&shape, values)?))
    })
}

/// Computes the gradient of `Resize` with respect to its data: the transposed
/// interpolation, applied one axis at a time in the reverse order.
pub(crate) fn resize_vjp(
    input: &[usize],
    roi: Option<&Tensor>,
    scales: Option<&Tensor>,
    sizes: Option<&Tensor>,
    attrs: &ResizeAttrs,
    grad: &ndarray::ArrayD<f32>,
) -> OpResult<ndarray::ArrayD<f32>> {
    let rank = input.len();
    let (scale, output) = output_geometry(input, scales, sizes)?;
    if grad.shape() != output.as_slice() {
        op_bail!("Resize gradient of shape {:?} for a result of shape {output:?}", grad.shape());
    }
    let roi = resolve_roi(roi, rank, attrs.coordinate_transform)?;
    let mut data: Vec<f64> = grad.iter().map(|&v| f64::from(v)).collect();
    for (axis, taps, before) in axis_steps(attrs, input, &output, &scale, roi.as_deref()).into_iter().rev() {
        data = taps.apply_transposed(&data, &before, axis);
    }
    array_from_vec(input, data.into_iter().map(|v| v as f32).collect())
}

/// Plans the per-axis passes: each axis that changes, its taps, and the
/// data's shape before that axis is resized. Axes whose scale is 1, whose
/// size stays and whose region of interest is the whole axis are skipped.
fn axis_steps(
    attrs: &ResizeAttrs,
    input: &[usize],
    output: &[usize],
    scale: &[f64],
    roi: Option<&[f64]>,
) -> Vec<(usize, AxisTaps, Vec<usize>)> {
    let rank = input.len();
    let mut steps = Vec::new();
    let mut shape = input.to_vec();
    for axis in 0..rank {
        let identity_roi = roi.is_none_or(|r| is_close(r[axis], 0.0) && is_close(r[axis + rank], 1.0));
        if is_close(scale[axis], 1.0) && output[axis] == shape[axis] && identity_roi {
            continue;
        }
        let axis_roi = roi.map(|r| (r[axis], r[axis + rank]));
        steps.push((axis, AxisTaps::new(attrs, shape[axis], output[axis], scale[axis], axis_roi), shape.clone()));
        shape[axis] = output[axis];
    }
    steps
}

/// `math.isclose` with its default relative tolerance, as the reference uses.
fn is_close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// Returns the per-axis scale and output size from exactly one of `scales` and `sizes`.
fn output_geometry(
    input: &[usize],
    scales: Option<&Tensor>,
    sizes: Option<&Tensor>,
) -> OpResult<(Vec<f64>, Vec<usize>)> {
    let rank = input.len();
    let scales = scales.filter(|t| !t.is_empty());
    let sizes = sizes.filter(|t| !t.is_empty());
    match (scales, sizes) {
        (Some(_), Some(_)) => op_bail!("Resize takes either scales or sizes, not both"),
        (None, None) => op_bail!("Resize needs scales or sizes, but both are missing or empty"),
        (Some(scales), None) => {
            if !scales.dtype().is_float() {
                op_bail!("Resize scales must be a float tensor, got {}", scales.dtype());
            }
            let scale = scales.to_f64_vec();
            if scale.len() != rank {
                op_bail!("Resize scales {scale:?} must have one value per input axis ({rank})");
            }
            if let Some(bad) = scale.iter().find(|&&s| !(s > 0.0 && s.is_finite())) {
                op_bail!("Resize scales {scale:?} must be positive and finite, got {bad}");
            }
            let output = input.iter().zip(&scale).map(|(&d, &s)| (d as f64 * s).floor() as usize).collect();
            Ok((scale, output))
        }
        (None, Some(sizes)) => {
            if !sizes.dtype().is_int() {
                op_bail!("Resize sizes must be an integer tensor, got {}", sizes.dtype());
            }
            let requested = sizes.to_i64_vec();
            if requested.len() != rank {
                op_bail!("Resize sizes {requested:?} must have one value per input axis ({rank})");
            }
            if let Some(bad) = requested.iter().find(|&&s| s < 0) {
                op_bail!("Resize sizes {requested:?} has the negative size {bad}");
            }
            let output: Vec<usize> = requested.iter().map(|&s| s as usize).collect();
            let scale = output.iter().zip(input).map(|(&o, &i)| o as f64 / i as f64).collect();
            Ok((scale, output))
        }
    }
}

/// `roi` as `[start.., end..]` in `f64`, required only by `tf_crop_and_resize`.
fn resolve_roi(roi: Option<&Tensor>, rank: usize, transform: CoordinateTransform) -> OpResult<Option<Vec<f64>>> {
    let roi = roi.filter(|t| !t.is_empty()).map(Tensor::to_f64_vec);
    match &roi {
        Some(values) if values.len() != 2 * rank => {
            op_bail!("Resize roi has {} values, expected 2 * rank = {} ([start..., end...])", values.len(), 2 * rank)
        }
        None if transform == CoordinateTransform::TfCropAndResize => {
            op_bail!("Resize with coordinate transform tf_crop_and_resize needs the roi operand")
        }
        _ => Ok(roi),
    }
}

/// The interpolation taps of every output index along one axis.
struct AxisTaps {
    kernel_len: usize,
    /// `kernel_len` clamped source indices per output index.
    indices: Vec<usize>,
    /// `kernel_len` weights per output index.
    weights: Vec<f64>,
    /// Output indices that take the extrapolation value (tf_crop_and_resize).
    extrapolated: Vec<bool>,
    extrapolation_value: f64,
}

impl AxisTaps {
    fn new(attrs: &ResizeAttrs, input: usize, output: usize, scale: f64, roi: Option<(f64, f64)>) -> AxisTaps {
        let kernel_len = if attrs.mode == ResizeMode::Cubic { 4 } else { 2 };
        let mut taps = AxisTaps {
            kernel_len,
            indices: Vec::with_capacity(output * kernel_len),
            weights: Vec::with_capacity(output * kernel_len),
            extrapolated: vec![false; output],
            extrapolation_value: attrs.extrapolation_value as f64,
        };
        for y in 0..output {
            let x = source_coordinate(attrs.coordinate_transform, y as f64, scale, input, output, roi);
            if attrs.coordinate_transform == CoordinateTransform::TfCropAndResize && (x < 0.0 || x > input as f64 - 1.0)
            {
                taps.extrapolated[y] = true;
            }
            taps.push_taps(attrs, x, input);
        }
        taps
    }

    fn push_taps(&mut self, attrs: &ResizeAttrs, x: f64, input: usize) {
        let n = self.kernel_len;
        let ratio = if x == x.floor() { 1.0 } else { x - x.floor() };
        let mut weights = match attrs.mode {
            ResizeMode::Nearest => nearest_weights(ratio, attrs.nearest_mode).to_vec(),
            ResizeMode::Linear => vec![1.0 - ratio, ratio],
            ResizeMode::Cubic => cubic_weights(ratio, attrs.cubic_coeff_a as f64).to_vec(),
        };

        // The window of `n` source indices nearest to `x`, ties to the smaller ones.
        let pad = n.div_ceil(2) as f64;
        let x_padded = x + pad;
        let p = x_padded.floor();
        let offset = if x_padded - p == 0.0 { -((n / 2) as f64) } else { -((n / 2) as f64) + 1.0 };
        let start = p + offset - pad;
        let window: Vec<i64> = (0..n).map(|k| (start as i64).saturating_add(k as i64)).collect();

        if attrs.exclude_outside {
            for (w, &i) in weights.iter_mut().zip(&window) {
                if i < 0 || i >= input as i64 {
                    *w = 0.0;
                }
            }
            let sum: f64 = weights.iter().sum();
            let sum = if sum == 0.0 { 1.0 } else { sum };
            weights.iter_mut().for_each(|w| *w /= sum);
        }
        let last = input.saturating_sub(1) as i64;
        self.indices.extend(window.iter().map(|&i| i.clamp(0, last) as usize));
        self.weights.extend(weights);
    }

    /// Resizes axis `axis` of the row-major `data` of shape `shape`.
    fn apply(&self, data: &[f64], shape: &[usize], axis: usize) -> Vec<f64> {
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let (input, output) = (shape[axis], self.extrapolated.len());
        let mut result = vec![0.0; outer * output * inner];
        for o in 0..outer {
            for y in 0..output {
                let target = &mut result[(o * output + y) * inner..(o * output + y + 1) * inner];
                if self.extrapolated[y] {
                    target.fill(self.extrapolation_value);
                    continue;
                }
                for k in 0..self.kernel_len {
                    let weight = self.weights[y * self.kernel_len + k];
                    // Zero weights are skipped, so an infinite neighbour does not turn into NaN.
                    if weight == 0.0 {
                        continue;
                    }
                    let source = (o * input + self.indices[y * self.kernel_len + k]) * inner;
                    for (t, &v) in target.iter_mut().zip(&data[source..source + inner]) {
                        *t += weight * v;
                    }
                }
            }
        }
        result
    }
}

impl AxisTaps {
    /// Sends the gradient of each output index back to its taps along
    /// `axis`; `shape` is the shape before this axis was resized.
    fn apply_transposed(&self, grad: &[f64], shape: &[usize], axis: usize) -> Vec<f64> {
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let (input, output) = (shape[axis], self.extrapolated.len());
        let mut result = vec![0.0; outer * input * inner];
        for o in 0..outer {
            for y in (0..output).filter(|&y| !self.extrapolated[y]) {
                let source = &grad[(o * output + y) * inner..(o * output + y + 1) * inner];
                for k in 0..self.kernel_len {
                    let weight = self.weights[y * self.kernel_len + k];
                    let target = (o * input + self.indices[y * self.kernel_len + k]) * inner;
                    for (t, &g) in result[target..target + inner].iter_mut().zip(source) {
                        *t += weight * g;
                    }
                }
            }
        }
        result
    }
}

/// Maps output index `y` to a source coordinate along an axis.
fn source_coordinate(
    transform: CoordinateTransform,
    y: f64,
    scale: f64,
    input: usize,
    output: usize,
    roi: Option<(f64, f64)>,
) -> f64 {
    let input_f = input as f64;
    // The reference compares the unrounded output length `scale * in` with 1.
    let output_f = scale * input_f;
    match transform {
        CoordinateTransform::HalfPixel => (y + 0.5) / scale - 0.5,
        CoordinateTransform::HalfPixelSymmetric => {
            let adjustment = output as f64 / output_f;
            let center = input_f / 2.0;
            let offset = center * (1.0 - adjustment);
            offset + (y + 0.5) / scale - 0.5
        }
        CoordinateTransform::PytorchHalfPixel => {
            if output_f == 1.0 {
                -0.5
            } else {
                (y + 0.5) / scale - 0.5
            }
        }
        CoordinateTransform::AlignCorners => {
            if output_f == 1.0 {
                0.0
            } else {
                y * (input_f - 1.0) / (output_f - 1.0)
            }
        }
        CoordinateTransform::Asymmetric => y / scale,
        CoordinateTransform::TfCropAndResize => {
            let (start, end) = roi.unwrap_or((0.0, 1.0));
            let x = if output_f == 1.0 {
                (end - start) * (input_f - 1.0) / 2.0
            } else {
                y * (end - start) * (input_f - 1.0) / (output_f - 1.0)
            };
            x + start * (input_f - 1.0)
        }
    }
}

/// Weights of the two neighbours `[floor(x), floor(x) + 1]`, or of
/// `[x - 1, x]` when `x` is an integer (`ratio == 1`).
fn nearest_weights(ratio: f64, mode: NearestMode) -> [f64; 2] {
    let pick = |left: bool| if left { [1.0, 0.0] } else { [0.0, 1.0] };
    if ratio == 1.0 {
        return [0.0, 1.0];
    }
    match mode {
        NearestMode::RoundPreferFloor => pick(ratio <= 0.5),
        NearestMode::RoundPreferCeil => pick(ratio < 0.5),
        NearestMode::Floor => pick(true),
        NearestMode::Ceil => pick(false),
    }
}

/// Keys' cubic convolution weights of the four neighbours for fraction
/// `ratio`, with coefficient `a` (-0.75 in PyTorch, -0.5 in TensorFlow).
fn cubic_weights(ratio: f64, a: f64) -> [f64; 4] {
    let r = ratio;
    let s = 1.0 - ratio;
    [
        ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
        ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
        ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0,
        ((a * (s + 1.0) - 5.0 * a) * (s + 1.0) + 8.0 * a) * (s + 1.0) - 4.0 * a,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    fn f32s(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), data.to_vec()).unwrap())
    }

    fn attrs(mode: ResizeMode, coordinate_transform: CoordinateTransform) -> ResizeAttrs {
        ResizeAttrs {
            mode,
            coordinate_transform,
            nearest_mode: NearestMode::RoundPreferFloor,
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
        }
    }

    fn close(got: &[f64], expected: &[f64]) {
        assert_eq!(got.len(), expected.len(), "{got:?} vs {expected:?}");
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            assert!((g - e).abs() < 1e-5, "element {i}: {g} vs {e}");
        }
    }

    #[test]
    fn linear_half_pixel_upsample_1d() {
        // Source coordinates of outputs 0..4 at scale 2: -0.25, 0.25, 0.75, 1.25.
        // -0.25 clamps to element 0, 1.25 to element 1.
        let x = f32s(&[1, 2], &[0.0, 4.0]);
        let scales = f32s(&[2], &[1.0, 2.0]);
        let y =
            resize(&x, None, Some(&scales), None, &attrs(ResizeMode::Linear, CoordinateTransform::HalfPixel)).unwrap();
        assert_eq!(y.shape(), &[1, 4]);
        close(&y.to_f64_vec(), &[0.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn linear_half_pixel_2d_sizes() {
        // Separable: rows [0, 4] and [8, 12] become [0, 1, 3, 4] and [8, 9, 11, 12],
        // then the columns are interpolated the same way.
        let x = f32s(&[2, 2], &[0.0, 4.0, 8.0, 12.0]);
        let sizes = Tensor::from_i64s(&[4, 4]);
        let y =
            resize(&x, None, None, Some(&sizes), &attrs(ResizeMode::Linear, CoordinateTransform::HalfPixel)).unwrap();
        let row = |base: f64| [base, base + 1.0, base + 3.0, base + 4.0];
        let expected: Vec<f64> = [0.0, 2.0, 6.0, 8.0].iter().flat_map(|&b| row(b)).collect();
        close(&y.to_f64_vec(), &expected);
    }

    #[test]
    fn cubic_half_pixel_matches_reference() {
        // Expected values from onnx 1.22 `onnx.reference` Resize, mode cubic,
        // half_pixel, cubic_coeff_a -0.75, scales [1, 1, 2, 2].
        let x = f32s(&[1, 1, 2, 3], &[1.0, 2.0, 4.0, 3.0, 7.0, 5.0]);
        let scales = f32s(&[4], &[1.0, 1.0, 2.0, 2.0]);
        let y =
            resize(&x, None, Some(&scales), None, &attrs(ResizeMode::Cubic, CoordinateTransform::HalfPixel)).unwrap();
        assert_eq!(y.shape(), &[1, 1, 4, 6]);
        close(&y.to_f64_vec(), &CUBIC_EXPECTED);
    }

    /// See `cubic_half_pixel_matches_reference`.
    const CUBIC_EXPECTED: [f64; 24] = [
        0.7169647216796875,
        0.858795166015625,
        1.062347412109375,
        2.0934600830078125,
        3.3698577880859375,
        4.14996337890625,
        1.275970458984375,
        1.79522705078125,
        2.63690185546875,
        3.557769775390625,
        4.037811279296875,
        4.3419189453125,
        2.196685791015625,
        3.33758544921875,
        5.23028564453125,
        5.969573974609375,
        5.137969970703125,
        4.6580810546875,
        2.7556915283203125,
        4.274017333984375,
        6.804840087890625,
        7.4338836669921875,
        5.8059234619140625,
        4.85003662109375,
    ];

    #[test]
    fn cubic_exclude_outside_renormalizes() {
        // A constant input stays constant only if the weights sum to 1.
        let x = f32s(&[1, 3], &[2.0, 2.0, 2.0]);
        let mut a = attrs(ResizeMode::Cubic, CoordinateTransform::Asymmetric);
        a.exclude_outside = true;
        a.cubic_coeff_a = -0.5;
        let y = resize(&x, None, None, Some(&Tensor::from_i64s(&[1, 7])), &a).unwrap();
        close(&y.to_f64_vec(), &[2.0; 7]);
    }

    #[test]
    fn nearest_modes() {
        let x = f32s(&[4], &[10.0, 20.0, 30.0, 40.0]);
        let scales = f32s(&[1], &[0.5]);
        // Asymmetric at scale 0.5: source coordinates 0 and 2.
        let y = resize(&x, None, Some(&scales), None, &attrs(ResizeMode::Nearest, CoordinateTransform::Asymmetric))
            .unwrap();
        close(&y.to_f64_vec(), &[10.0, 30.0]);
        // Half pixel at scale 0.5: source coordinates 0.5 and 2.5; prefer floor.
        let y =
            resize(&x, None, Some(&scales), None, &attrs(ResizeMode::Nearest, CoordinateTransform::HalfPixel)).unwrap();
        close(&y.to_f64_vec(), &[10.0, 30.0]);
        let mut ceil = attrs(ResizeMode::Nearest, CoordinateTransform::HalfPixel);
        ceil.nearest_mode = NearestMode::RoundPreferCeil;
        let y = resize(&x, None, Some(&scales), None, &ceil).unwrap();
        close(&y.to_f64_vec(), &[20.0, 40.0]);
    }

    #[test]
    fn align_corners_and_integer_rounding() {
        let x = Tensor::U8(ArrayD::from_shape_vec(IxDyn(&[2]), vec![0, 3]).unwrap());
        let sizes = Tensor::from_i64s(&[3]);
        // Align corners maps outputs to 0, 0.5 and 1: [0, 1.5, 3], and 1.5 rounds to 2.
        let y = resize(&x, None, None, Some(&sizes), &attrs(ResizeMode::Linear, CoordinateTransform::AlignCorners))
            .unwrap();
        assert_eq!(y.dtype(), DType::U8);
        assert_eq!(y.to_i64_vec(), vec![0, 2, 3]);
    }

    #[test]
    fn tf_crop_and_resize_extrapolates() {
        let x = f32s(&[3], &[1.0, 2.0, 3.0]);
        let roi = f32s(&[2], &[0.5, 1.5]);
        let mut a = attrs(ResizeMode::Linear, CoordinateTransform::TfCropAndResize);
        a.extrapolation_value = -1.0;
        // Coordinates 1, 2, 3: the last is past the input.
        let y = resize(&x, Some(&roi), None, Some(&Tensor::from_i64s(&[3])), &a).unwrap();
        close(&y.to_f64_vec(), &[2.0, 3.0, -1.0]);
        assert!(resize(&x, None, None, Some(&Tensor::from_i64s(&[3])), &a).is_err());
    }

    #[test]
    fn resize_operand_errors() {
        let x = f32s(&[2], &[1.0, 2.0]);
        let a = attrs(ResizeMode::Linear, CoordinateTransform::HalfPixel);
        assert!(resize(&x, None, None, None, &a).is_err());
        assert!(resize(&x, None, Some(&f32s(&[2], &[1.0, 1.0])), None, &a).is_err());
        assert!(resize(&x, None, Some(&f32s(&[1], &[0.0])), None, &a).is_err());
        let empty = f32s(&[0], &[]);
        assert!(resize(&empty, None, None, Some(&Tensor::from_i64s(&[2])), &a).is_err());
    }
}
