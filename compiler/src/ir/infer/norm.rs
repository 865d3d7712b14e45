//! Normalizations: the canonical LayerNorm and inference-mode BatchNorm.

use super::{Operands, broadcasts_to, normalize_axis};
use crate::error::OpResult;
use crate::ir::graph::Fact;
use crate::op_bail;
use crate::tensor::ShapeDisplay;

/// LayerNorm normalizes over `x.shape[axis..]`, and `scale` and `bias`
/// broadcast unidirectionally to those dimensions.
pub(super) fn layer_norm(operands: &Operands, axis: i64) -> OpResult<Vec<Fact>> {
    let x = operands.require_float(0)?;
    let axis = normalize_axis(axis, x.rank())?;
    let normalized = &x.shape[axis..];
    operands.required(1)?;
    for slot in 1..operands.len() {
        let Some(parameter) = operands.get(slot) else { continue };
        operands.require_same_dtype(slot, 0)?;
        if !broadcasts_to(&parameter.shape, normalized) {
            op_bail!(
                "{} has shape {}, which does not broadcast to the normalized dimensions {} \
                 of operand 0 (x) {} from axis {axis}",
                operands.label(slot),
                ShapeDisplay(&parameter.shape),
                ShapeDisplay(normalized),
                ShapeDisplay(&x.shape)
            );
        }
    }
    Ok(vec![Fact::new(x.dtype, x.shape.clone())])
}

/// BatchNorm: `x` is `[N, C, ..]`, and scale, bias, mean and var are `[C]`.
pub(super) fn batch_norm(operands: &Operands) -> OpResult<Vec<Fact>> {
    let x = operands.require_float(0)?;
    if x.rank() < 2 {
        op_bail!(
            "operand 0 (x) has shape {}, but BatchNorm needs [N, C, ..] of rank 2 or more",
            ShapeDisplay(&x.shape)
        );
    }
    let channels = x.shape[1];
    for slot in 1..5 {
        let parameter = operands.required(slot)?;
        operands.require_same_dtype(slot, 0)?;
        if parameter.shape != [channels] {
            op_bail!(
                "{} has shape {}, but expected [{channels}], one value per channel of operand 0 (x) {}",
                operands.label(slot),
                ShapeDisplay(&parameter.shape),
                ShapeDisplay(&x.shape)
            );
        }
    }
    Ok(vec![Fact::new(x.dtype, x.shape.clone())])
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ErrorCase, ShapeCase, check_errors, check_shapes, f32s, fact};
    use crate::ir::op::Op;
    use crate::tensor::DType;

    fn layer_norm(axis: i64) -> Op {
        Op::LayerNorm { axis, epsilon: 1e-6 }
    }

    fn batch_norm() -> Op {
        Op::BatchNorm { epsilon: 1e-5 }
    }

    #[test]
    fn norm_shapes() {
        check_shapes(&[
            ShapeCase {
                name: "layer norm last axis",
                op: layer_norm(-1),
                inputs: vec![f32s(&[1, 197, 768]), f32s(&[768]), f32s(&[768])],
                shape: vec![1, 197, 768],
            },
            ShapeCase {
                name: "layer norm without bias",
                op: layer_norm(2),
                inputs: vec![f32s(&[1, 197, 768]), f32s(&[768]), None],
                shape: vec![1, 197, 768],
            },
            ShapeCase {
                name: "layer norm two axes broadcast scale",
                op: layer_norm(1),
                inputs: vec![f32s(&[2, 4, 8]), f32s(&[1, 8]), f32s(&[])],
                shape: vec![2, 4, 8],
            },
            ShapeCase {
                name: "batch norm 4-D",
                op: batch_norm(),
                inputs: vec![f32s(&[1, 3, 8, 8]), f32s(&[3]), f32s(&[3]), f32s(&[3]), f32s(&[3])],
                shape: vec![1, 3, 8, 8],
            },
            ShapeCase {
                name: "batch norm 2-D",
                op: batch_norm(),
                inputs: vec![f32s(&[5, 3]), f32s(&[3]), f32s(&[3]), f32s(&[3]), f32s(&[3])],
                shape: vec![5, 3],
            },
        ]);
    }

    #[test]
    fn norm_errors() {
        check_errors(&[
            ErrorCase {
                name: "layer norm scale shape",
                op: layer_norm(-1),
                inputs: vec![f32s(&[1, 197, 768]), f32s(&[384]), None],
                message: "operand 1 (scale) has shape [384], which does not broadcast to the normalized dimensions [768]",
            },
            ErrorCase {
                name: "layer norm scale rank",
                op: layer_norm(-1),
                inputs: vec![f32s(&[1, 197, 768]), f32s(&[197, 768]), None],
                message: "operand 1 (scale) has shape [197,768]",
            },
            ErrorCase {
                name: "layer norm bias shape",
                op: layer_norm(-1),
                inputs: vec![f32s(&[1, 197, 768]), f32s(&[768]), f32s(&[767])],
                message: "operand 2 (bias) has shape [767]",
            },
            ErrorCase {
                name: "layer norm axis",
                op: layer_norm(3),
                inputs: vec![f32s(&[1, 197, 768]), f32s(&[768]), None],
                message: "axis 3 is out of range for a tensor of rank 3",
            },
            ErrorCase {
                name: "layer norm scale dtype",
                op: layer_norm(-1),
                inputs: vec![f32s(&[1, 768]), fact(DType::F16, &[768]), None],
                message: "operand 1 (scale) has element type f16",
            },
            ErrorCase {
                name: "layer norm missing scale",
                op: layer_norm(-1),
                inputs: vec![f32s(&[1, 768]), None, None],
                message: "operand 1 (scale) is missing",
            },
            ErrorCase {
                name: "layer norm of ints",
                op: layer_norm(-1),
                inputs: vec![fact(DType::I64, &[1, 768]), fact(DType::I64, &[768])],
                message: "must be f16, f32 or f64",
            },
            ErrorCase {
                name: "batch norm mean shape",
                op: batch_norm(),
                inputs: vec![f32s(&[1, 3, 8, 8]), f32s(&[3]), f32s(&[3]), f32s(&[4]), f32s(&[3])],
                message: "operand 3 (mean) has shape [4], but expected [3]",
            },
            ErrorCase {
                name: "batch norm var dtype",
                op: batch_norm(),
                inputs: vec![f32s(&[1, 3, 8, 8]), f32s(&[3]), f32s(&[3]), f32s(&[3]), fact(DType::F64, &[3])],
                message: "operand 4 (var) has element type f64",
            },
            ErrorCase {
                name: "batch norm rank",
                op: batch_norm(),
                inputs: vec![f32s(&[3]), f32s(&[3]), f32s(&[3]), f32s(&[3]), f32s(&[3])],
                message: "operand 0 (x) has shape [3], but BatchNorm needs [N, C, ..]",
            },
        ]);
    }
}
