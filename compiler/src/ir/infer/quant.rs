//! The quantized operators: Quantize, DynamicQuantize, Dequantize and QLinear.
//!
//! Their results carry [`QuantParams`] in the fact, so the verifier, which
//! compares element type and shape, and the printer both see them.

use super::Operands;
use crate::error::OpResult;
use crate::ir::graph::Fact;
use crate::ir::quant::QuantParams;
use crate::op_bail;
use crate::tensor::{DType, ShapeDisplay};

/// Quantize: f32 in, u8 of the same shape out.
pub(super) fn quantize(operands: &Operands, scale: f32, zero_point: u8) -> OpResult<Vec<Fact>> {
    check_scale(scale)?;
    let x = operands.require_dtype_in(0, &[DType::F32])?;
    let mut fact = Fact::new(DType::U8, x.shape.clone());
    fact.quant = Some(QuantParams::Affine { scale, zero_point });
    Ok(vec![fact])
}

/// DynamicQuantize: u8 of the input's shape and f32 `[rows, 2]` parameters.
pub(super) fn dynamic_quantize(operands: &Operands, per_token: bool) -> OpResult<Vec<Fact>> {
    let x = operands.require_dtype_in(0, &[DType::F32])?;
    let Some(&cols) = x.shape.last() else { op_bail!("operand 0 (input) is a scalar, but DynamicQuantize needs rank 1 or more") };
    let rows = if per_token { x.numel() / cols.max(1) } else { 1 };
    let mut q = Fact::new(DType::U8, x.shape.clone());
    q.quant = Some(QuantParams::Dynamic { per_token });
    Ok(vec![q, Fact::new(DType::F32, vec![rows, 2])])
}

/// Dequantize: u8 in, f32 of the same shape out.
pub(super) fn dequantize(operands: &Operands, scale: f32) -> OpResult<Vec<Fact>> {
    check_scale(scale)?;
    let q = operands.require_dtype_in(0, &[DType::U8])?;
    Ok(vec![Fact::new(DType::F32, q.shape.clone())])
}

/// QLinear: u8 `[.., k]`, parameters `[rows or 1, 2]`, i8 `[n, k]`, scales `[n]`, bias `[n]`.
pub(super) fn qlinear(operands: &Operands) -> OpResult<Vec<Fact>> {
    let x = operands.require_dtype_in(0, &[DType::U8])?;
    let params = operands.require_dtype_in(1, &[DType::F32])?;
    let weight = operands.require_dtype_in(2, &[DType::I8])?;
    let scales = operands.require_dtype_in(3, &[DType::F32])?;
    let [n, k] = weight.shape[..] else {
        op_bail!("operand 2 (weight) has shape {}, but it must be [out, in]", ShapeDisplay(&weight.shape))
    };
    if x.shape.last() != Some(&k) {
        op_bail!("operand 0 (x) has shape {}, but its last dimension must be {k} to match the weight", ShapeDisplay(&x.shape));
    }
    let rows = x.numel() / k.max(1);
    let params_ok = params.shape.len() == 2 && params.shape[1] == 2 && (params.shape[0] == 1 || params.shape[0] == rows);
    if !params_ok {
        op_bail!("operand 1 (x_params) has shape {}, but it must be [1, 2] or [{rows}, 2]", ShapeDisplay(&params.shape));
    }
    if scales.shape != [n] {
        op_bail!("operand 3 (weight_scale) has shape {}, but it must be [{n}]", ShapeDisplay(&scales.shape));
    }
    if let Some(bias) = operands.get(4)
        && (bias.dtype != DType::F32 || bias.shape != [n])
    {
        op_bail!("operand 4 (bias) is {bias}, but it must be f32[{n}]");
    }
    if let (Some(QuantParams::Affine { scale, zero_point }), Some(data)) = (&x.quant, &params.konst) {
        let values = data.to_f64_vec();
        if values.len() != 2 || values[0] as f32 != *scale || values[1] != f64::from(*zero_point) {
            op_bail!("operand 1 (x_params) {values:?} disagrees with the quantization of operand 0 (x): scale {scale:e}, zero point {zero_point}");
        }
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("x has rank 1 or more") = n;
    Ok(vec![Fact::new(DType::F32, shape)])
}

fn check_scale(scale: f32) -> OpResult<()> {
    if !(scale.is_finite() && scale > 0.0) {
        op_bail!("the scale is {scale}, but it must be a positive finite number");
    }
    Ok(())
}
