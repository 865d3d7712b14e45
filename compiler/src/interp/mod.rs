//! The reference interpreter: one kernel per operator and a graph runner.
//!
//! [`eval_op`] computes one operator on concrete tensors with the semantics
//! of the latest ONNX opset (the importer has already mapped older opsets
//! onto the attributes of [`Op`]). [`run`] and [`run_with_taps`] execute a
//! whole [`crate::ir::Graph`].
//!
//! The kernels aim at exactness first: they back the ONNX backend
//! conformance tests and give the reference values that compiled code is
//! checked against. Only the heavy operators (`MatMul`, `Gemm`, `Linear`,
//! `Attention`, `Conv`, `ConvTranspose`) are written for speed, through
//! the threaded `matrixmultiply` GEMM. A bad operand (wrong element type,
//! incompatible shape, index out of range) returns an [`OpError`] naming the
//! operand and what was expected, never a panic.
//!
//! Kernels by family:
//!
//! - `elementwise`: unary math, broadcasting binary operators, `Where`,
//!   `Clip`, `HardSigmoid`, `LeakyRelu`, `Gelu`, with the error function in `erf`.
//! - `matmul`: `MatMul`, `Gemm`, `Linear`, `Attention`.
//! - `norm`: `Softmax`, `LogSoftmax`, `LayerNorm`, `BatchNorm`.
//! - `conv`: `Conv`, `ConvTranspose`.
//! - `shape_ops`: `Reshape`, `Transpose`, `Flatten`, `Squeeze`,
//!   `Unsqueeze`, `Expand`, `Shape`, `Size`, `ConstantOfShape`, `Range`,
//!   `Cast`, `Identity`.
//! - `slice_ops`: `Concat`, `Split`, `Slice`, `Gather`, `Tile`, `Pad`.
//! - `reduce`: `Reduce*`, `ArgMax`, `ArgMin`.
//! - `resize`: `Resize`.
//! - `quant`: `Quantize`, `DynamicQuantize`, `Dequantize`, `QLinear`.

pub(crate) mod common;
pub(crate) mod conv;
pub(crate) mod elementwise;
pub(crate) mod erf;
mod matmul;
mod norm;
pub(crate) mod quant;
mod reduce;
pub(crate) mod resize;
mod runner;
mod shape_ops;
mod slice_ops;

pub use runner::{run, run_with_taps};

use self::common::Operands;
use crate::error::OpResult;
use crate::ir::op::Op;
use crate::op_bail;
use crate::tensor::Tensor;

/// Computes operator `op` on `inputs` (in ONNX operand order, `None` for an
/// absent optional operand) and returns its results.
///
/// `Input` and `Constant` have no kernel: the graph runner supplies their
/// values, so they return an error here.
pub fn eval_op(op: &Op, inputs: &[Option<&Tensor>]) -> OpResult<Vec<Tensor>> {
    let (min, max) = op.arity();
    if inputs.len() < min || inputs.len() > max {
        let expected = if max == usize::MAX {
            format!("at least {min}")
        } else if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        op_bail!("{} takes {expected} operands, got {}", op.name(), inputs.len());
    }
    let operands = Operands::new(inputs);
    if let Op::Split { axis, sizes } = op {
        return slice_ops::split(operands.required(0, "input")?, *axis, sizes);
    }
    if let Op::DynamicQuantize { per_token } = op {
        return quant::dynamic_quantize(operands.required(0, "input")?, *per_token);
    }
    Ok(vec![eval_single(op, &operands)?])
}

/// Dispatches every operator with a single result.
fn eval_single(op: &Op, operands: &Operands<'_, '_>) -> OpResult<Tensor> {
    let x = || operands.required(0, "input");
    let required = |index: usize, label: &str| operands.required(index, label);
    let optional = |index: usize| operands.optional(index);
    Ok(match op {
        Op::Input | Op::Constant => {
            op_bail!("{} nodes have no kernel because the graph runner supplies their values", op.name())
        }
        Op::Split { .. } | Op::DynamicQuantize { .. } => op_bail!("internal error: {} has several results", op.name()),

        // Elementwise.
        Op::Identity => shape_ops::identity(x()?),
        Op::Unary(u) => elementwise::unary(*u, x()?)?,
        Op::Binary(b) => elementwise::binary(*b, required(0, "A")?, required(1, "B")?)?,
        Op::Where => elementwise::where_op(required(0, "condition")?, required(1, "X")?, required(2, "Y")?)?,
        Op::Clip => elementwise::clip(x()?, optional(1), optional(2))?,
        Op::HardSigmoid { alpha, beta } => elementwise::hard_sigmoid(*alpha, *beta, x()?)?,
        Op::LeakyRelu { alpha } => elementwise::leaky_relu(*alpha, x()?)?,
        Op::Gelu { approximate } => elementwise::gelu(*approximate, x()?)?,

        // Normalization.
        Op::Softmax { axis, flatten_tail } => norm::softmax(x()?, *axis, *flatten_tail, false)?,
        Op::LogSoftmax { axis, flatten_tail } => norm::softmax(x()?, *axis, *flatten_tail, true)?,
        Op::LayerNorm { axis, epsilon } => norm::layer_norm(x()?, required(1, "scale")?, optional(2), *axis, *epsilon)?,
        Op::BatchNorm { epsilon } => {
            let params = [required(1, "scale")?, required(2, "bias")?, required(3, "mean")?, required(4, "var")?];
            norm::batch_norm(x()?, params, *epsilon)?
        }

        // Matrix products and convolutions.
        Op::MatMul => matmul::matmul(required(0, "A")?, required(1, "B")?)?,
        Op::Gemm { alpha, beta, trans_a, trans_b } => {
            matmul::gemm(required(0, "A")?, required(1, "B")?, optional(2), *alpha, *beta, *trans_a, *trans_b)?
        }
        Op::Linear => matmul::linear(x()?, required(1, "weight")?, optional(2))?,
        Op::Attention { heads, head_dim, scale } => matmul::attention(
            required(0, "query")?,
            required(1, "key")?,
            required(2, "value")?,
            *heads,
            *head_dim,
            *scale,
        )?,
        Op::Conv(attrs) => conv::conv(x()?, required(1, "weight")?, optional(2), attrs)?,
        Op::ConvTranspose(attrs) => conv::conv_transpose(x()?, required(1, "weight")?, optional(2), attrs)?,
        Op::Col2im(attrs) => conv::col2im_op(x()?, optional(1), attrs)?,

        // Shapes.
        Op::Reshape { allowzero } => shape_ops::reshape(required(0, "data")?, required(1, "shape")?, *allowzero)?,
        Op::Transpose { perm } => shape_ops::transpose(x()?, perm)?,
        Op::Flatten { axis } => shape_ops::flatten(x()?, *axis)?,
        Op::Squeeze { axes } => shape_ops::squeeze(x()?, axes.as_deref())?,
        Op::Unsqueeze { axes } => shape_ops::unsqueeze(x()?, axes)?,
        Op::Expand => shape_ops::expand(x()?, required(1, "shape")?)?,
        Op::Shape { start, end } => shape_ops::shape_of(x()?, *start, *end)?,
        Op::Size => shape_ops::size(x()?),
        Op::ConstantOfShape { value } => shape_ops::constant_of_shape(x()?, value)?,
        Op::Range => shape_ops::range(required(0, "start")?, required(1, "limit")?, required(2, "delta")?)?,
        Op::Cast { to } => shape_ops::cast(x()?, *to),

        // Selection.
        Op::Concat { axis } => {
            let mut parts = Vec::with_capacity(operands.len());
            for i in 0..operands.len() {
                parts.push(required(i, "a Concat input")?);
            }
            slice_ops::concat(&parts, *axis)?
        }
        Op::Slice => slice_ops::slice(
            required(0, "data")?,
            required(1, "starts")?,
            required(2, "ends")?,
            optional(3),
            optional(4),
        )?,
        Op::Gather { axis } => slice_ops::gather(required(0, "data")?, required(1, "indices")?, *axis)?,
        Op::Tile => slice_ops::tile(x()?, required(1, "repeats")?)?,
        Op::Pad { mode } => slice_ops::pad(required(0, "data")?, required(1, "pads")?, optional(2), *mode)?,

        // Reductions and resampling.
        Op::Reduce { kind, axes, keepdims, noop_with_empty_axes } => {
            reduce::reduce(x()?, *kind, axes.as_deref(), *keepdims, *noop_with_empty_axes)?
        }
        Op::ArgMax { axis, keepdims, select_last_index } => {
            reduce::arg_extreme(x()?, *axis, *keepdims, *select_last_index, true)?
        }
        Op::ArgMin { axis, keepdims, select_last_index } => {
            reduce::arg_extreme(x()?, *axis, *keepdims, *select_last_index, false)?
        }
        Op::Resize(attrs) => resize::resize(x()?, optional(1), optional(2), optional(3), attrs)?,

        // Quantization.
        Op::Quantize { scale, zero_point } => quant::quantize(x()?, *scale, *zero_point)?,
        Op::Dequantize { scale, zero_point } => quant::dequantize(x()?, *scale, *zero_point)?,
        Op::QLinear => quant::qlinear(
            required(0, "x")?,
            required(1, "x_params")?,
            required(2, "weight")?,
            required(3, "weight_scale")?,
            optional(4),
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::{BinaryOp, UnaryOp};

    #[test]
    fn eval_op_checks_arity() {
        let x = Tensor::scalar_f32(1.0);
        let err = eval_op(&Op::Binary(BinaryOp::Add), &[Some(&x)]).unwrap_err();
        assert!(err.message.contains("takes 2 operands"), "{}", err.message);
        let err = eval_op(&Op::Binary(BinaryOp::Add), &[Some(&x), None]).unwrap_err();
        assert!(err.message.contains("missing required operand 1"), "{}", err.message);
    }

    #[test]
    fn eval_op_rejects_input_and_constant() {
        assert!(eval_op(&Op::Input, &[]).is_err());
        assert!(eval_op(&Op::Constant, &[]).is_err());
    }

    #[test]
    fn eval_op_split_returns_every_piece() {
        let x = Tensor::from_i64s(&[1, 2, 3]);
        let pieces = eval_op(&Op::Split { axis: 0, sizes: vec![1, 2] }, &[Some(&x)]).unwrap();
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[1].to_i64_vec(), vec![2, 3]);
    }

    #[test]
    fn eval_op_unary() {
        let x = Tensor::scalar_f32(-2.0);
        let y = eval_op(&Op::Unary(UnaryOp::Abs), &[Some(&x)]).unwrap();
        assert_eq!(y[0].to_f64_vec(), vec![2.0]);
    }
}
