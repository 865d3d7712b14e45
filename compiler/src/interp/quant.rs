//! The quantized operators, computed exactly as the generated code does.
//!
//! These kernels are the oracle for the INT8 code generator, so each f32
//! operation happens in the order that [`crate::ir::Op`] documents and that
//! the kernels in `codegen/kernels` emit: no fused multiply-add, rounding
//! half to even, and exact i32 dot products. The scalar helpers are public
//! to the crate so that calibration computes the same numbers.

use ndarray::{ArrayD, IxDyn};

use super::common::{array_from_vec, typed};
use crate::error::OpResult;
use crate::op_bail;
use crate::tensor::Tensor;

/// Quantizes one value: `clamp(round_half_even(x * inv_scale) + zero_point, 0, 255)`.
///
/// The sum is formed in f32 and converted with saturation, so NaN becomes
/// 0 and infinities clamp, as `fcvt_to_sint_sat` does in generated code.
pub(crate) fn quantize_value(x: f32, inv_scale: f32, zero_point: f32) -> u8 {
    let q = (x * inv_scale).round_ties_even() + zero_point;
    (q as i32).clamp(0, 255) as u8
}

/// Scale and zero point of dynamic quantization over the range `lo..hi`
/// (with `lo <= 0 <= hi`): `scale = (hi - lo) / 255`, or 1 when that is 0.
pub(crate) fn dynamic_params(lo: f32, hi: f32) -> (f32, f32) {
    let mut scale = (hi - lo) / 255.0;
    if scale == 0.0 {
        scale = 1.0;
    }
    let inv = 1.0 / scale;
    let zero_point = (-lo * inv).round_ties_even().max(0.0).min(255.0);
    (scale, zero_point)
}

/// `Quantize`: f32 to u8 with a fixed scale and zero point.
pub(crate) fn quantize(x: &Tensor, scale: f32, zero_point: u8) -> OpResult<Tensor> {
    let x = typed::<f32>(x, "input")?;
    let inv = 1.0 / scale;
    let zp = f32::from(zero_point);
    Ok(Tensor::U8(x.mapv(|v| quantize_value(v, inv, zp))))
}

/// `DynamicQuantize`: returns the u8 tensor and the `[rows, 2]` parameters.
pub(crate) fn dynamic_quantize(x: &Tensor, per_token: bool) -> OpResult<Vec<Tensor>> {
    let x = typed::<f32>(x, "input")?;
    let Some(&cols) = x.shape().last() else { op_bail!("DynamicQuantize needs an input of rank 1 or more") };
    let data: Vec<f32> = x.iter().copied().collect();
    let row_len = if per_token { cols.max(1) } else { data.len().max(1) };
    let mut q = Vec::with_capacity(data.len());
    let mut params = Vec::new();
    for row in data.chunks(row_len) {
        // NOTE: `f32::min` skips NaN where the generated code's `fmin`
        // propagates it, so rows containing NaN may get different parameters.
        let lo = row.iter().copied().fold(0.0f32, f32::min);
        let hi = row.iter().copied().fold(0.0f32, f32::max);
        let (scale, zero_point) = dynamic_params(lo, hi);
        let inv = 1.0 / scale;
        q.extend(row.iter().map(|&v| quantize_value(v, inv, zero_point)));
        params.extend([scale, zero_point]);
    }
    if params.is_empty() {
        params.extend([1.0, 0.0]);
    }
    let rows = params.len() / 2;
    Ok(vec![Tensor::U8(array_from_vec(x.shape(), q)?), Tensor::F32(array_from_vec(&[rows, 2], params)?)])
}

/// `Dequantize`: `(q - zero_point) * scale`.
pub(crate) fn dequantize(q: &Tensor, scale: f32, zero_point: u8) -> OpResult<Tensor> {
    let q = typed::<u8>(q, "input")?;
    let zp = i32::from(zero_point);
    Ok(Tensor::F32(q.mapv(|v| (i32::from(v) - zp) as f32 * scale)))
}

/// `QLinear`: the INT8 fully connected layer (see [`crate::ir::Op::QLinear`]).
pub(crate) fn qlinear(x: &Tensor, params: &Tensor, weight: &Tensor, weight_scale: &Tensor, bias: Option<&Tensor>) -> OpResult<Tensor> {
    let x = typed::<u8>(x, "x")?;
    let params = typed::<f32>(params, "x_params")?;
    let weight = typed::<i8>(weight, "weight")?;
    let weight_scale = typed::<f32>(weight_scale, "weight_scale")?;
    let bias = bias.map(|b| typed::<f32>(b, "bias")).transpose()?;
    let &[n, k] = weight.shape() else { op_bail!("operand 2 (weight) must be [out, in]") };
    if x.shape().last() != Some(&k) || weight_scale.len() != n || bias.is_some_and(|b| b.len() != n) {
        op_bail!("QLinear operands disagree in size: x {:?}, weight {:?}, weight_scale {:?}", x.shape(), weight.shape(), weight_scale.shape());
    }
    let rows = x.len() / k.max(1);
    let param_rows = params.len() / 2;
    if !(param_rows == 1 || param_rows == rows) || params.len() % 2 != 0 {
        op_bail!("operand 1 (x_params) has shape {:?} for {rows} rows", params.shape());
    }

    // i16 copies let the compiler vectorize the exact dot products.
    let w: Vec<i16> = weight.iter().map(|&v| i16::from(v)).collect();
    let xs: Vec<i16> = x.iter().map(|&v| i16::from(v)).collect();
    let colsum: Vec<i32> = w.chunks(k.max(1)).map(|row| row.iter().map(|&v| i32::from(v)).sum()).collect();
    let p: Vec<f32> = params.iter().copied().collect();
    let ws: Vec<f32> = weight_scale.iter().copied().collect();
    let b: Option<Vec<f32>> = bias.map(|b| b.iter().copied().collect());

    let mut out = Vec::with_capacity(rows * n);
    for r in 0..rows {
        let pr = if param_rows == 1 { 0 } else { r };
        let (scale, zero_point) = (p[2 * pr], p[2 * pr + 1] as i32);
        let xr = &xs[r * k..(r + 1) * k];
        for j in 0..n {
            let wr = &w[j * k..(j + 1) * k];
            let acc: i32 = xr.iter().zip(wr).map(|(&a, &b)| i32::from(a) * i32::from(b)).sum();
            let corrected = acc.wrapping_sub(zero_point.wrapping_mul(colsum[j]));
            let mut y = corrected as f32 * (scale * ws[j]);
            if let Some(b) = &b {
                y += b[j];
            }
            out.push(y);
        }
    }
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("x has rank 1 or more") = n;
    Ok(Tensor::F32(ArrayD::from_shape_vec(IxDyn(&shape), out).expect("the result has rows * n elements")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_rounds_half_to_even_and_clamps() {
        assert_eq!(quantize_value(0.5, 1.0, 0.0), 0);
        assert_eq!(quantize_value(1.5, 1.0, 0.0), 2);
        assert_eq!(quantize_value(-3.0, 1.0, 2.0), 0);
        assert_eq!(quantize_value(1e9, 1.0, 0.0), 255);
        assert_eq!(quantize_value(f32::NAN, 1.0, 7.0), 0);
    }

    #[test]
    fn dynamic_params_cover_zero() {
        let (scale, zp) = dynamic_params(-1.0, 3.0);
        assert_eq!(scale, 4.0 / 255.0);
        assert_eq!(zp, 64.0);
        assert_eq!(dynamic_params(0.0, 0.0), (1.0, 0.0));
    }

    #[test]
    fn qlinear_matches_float_reference() {
        let x = Tensor::U8(ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![10, 20, 30, 0, 255, 7]).unwrap());
        let params = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![0.5, 10.0]).unwrap());
        let w = Tensor::I8(ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1, -2, 3, -128, 127, 0]).unwrap());
        let ws = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[2]), vec![0.25, 2.0]).unwrap());
        let y = qlinear(&x, &params, &w, &ws, None).unwrap();
        let y: Vec<f32> = y.as_f32().unwrap().iter().copied().collect();
        // Row 0 dequantizes to [0, 5, 10]; row 1 to [-5, 122.5, -1.5].
        let expected = [(0.0 * 1.0 - 5.0 * 2.0 + 10.0 * 3.0) * 0.25, (5.0 * 127.0) * 2.0, (-5.0 - 2.0 * 122.5 - 1.5 * 3.0) * 0.25, (-5.0 * -128.0 + 122.5 * 127.0) * 2.0];
        assert_eq!(y, expected);
    }
}
