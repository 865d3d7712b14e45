//! Elementwise operators: unary and binary arithmetic, comparisons, logical
//! operators, Where, Clip, the activations, Softmax and Cast.

use super::{Operands, broadcast_shapes, normalize_axis, prefix_error};
use crate::error::OpResult;
use crate::ir::graph::Fact;
use crate::ir::op::{BinaryOp, UnaryOp};
use crate::op_bail;
use crate::tensor::{DType, ShapeDisplay};

pub(super) fn identity(operands: &Operands) -> OpResult<Vec<Fact>> {
    let x = operands.required(0)?;
    Ok(vec![Fact::new(x.dtype, x.shape.clone())])
}

pub(super) fn unary(operands: &Operands, op: UnaryOp) -> OpResult<Vec<Fact>> {
    let x = match op {
        UnaryOp::Not => operands.require_dtype_in(0, &[DType::Bool])?,
        // ONNX defines Relu and Neg for floats and signed integers only.
        UnaryOp::Relu | UnaryOp::Neg => {
            operands.require_dtype_in(0, &[DType::F32, DType::F16, DType::F64, DType::I64, DType::I32, DType::I8])?
        }
        UnaryOp::Abs | UnaryOp::Sign => operands.require_numeric(0)?,
        UnaryOp::Sigmoid
        | UnaryOp::Tanh
        | UnaryOp::Erf
        | UnaryOp::Sqrt
        | UnaryOp::Exp
        | UnaryOp::Log
        | UnaryOp::Reciprocal
        | UnaryOp::Floor
        | UnaryOp::Ceil
        | UnaryOp::Round
        | UnaryOp::Sin
        | UnaryOp::Cos
        | UnaryOp::IsNaN
        | UnaryOp::Softplus => operands.require_float(0)?,
    };
    let dtype = if op == UnaryOp::IsNaN { DType::Bool } else { x.dtype };
    Ok(vec![Fact::new(dtype, x.shape.clone())])
}

pub(super) fn binary(operands: &Operands, op: BinaryOp) -> OpResult<Vec<Fact>> {
    let a = operands.required(0)?;
    let b = operands.required(1)?;

    // Element types. Pow alone allows an exponent of another type.
    if op.is_logical() {
        operands.require_dtype_in(0, &[DType::Bool])?;
        operands.require_dtype_in(1, &[DType::Bool])?;
    } else if op == BinaryOp::Pow {
        operands.require_numeric(0)?;
        operands.require_numeric(1)?;
    } else {
        operands.require_same_dtype(1, 0)?;
        // Equal is the one comparison that ONNX defines on bool.
        if op != BinaryOp::Equal {
            operands.require_numeric(0)?;
        }
        if op == BinaryOp::Mod && a.dtype.is_float() {
            op_bail!(
                "Mod with fmod=0 takes the divisor's sign, which ONNX defines for integer operands only, \
                 but the operands are {}. Use fmod=1 for floating-point operands",
                a.dtype
            );
        }
    }

    let shape = broadcast_shapes(&a.shape, &b.shape)
        .map_err(|e| prefix_error(e, &format!("{} and {}", operands.label(0), operands.label(1))))?;
    let dtype = if op.is_comparison() || op.is_logical() { DType::Bool } else { a.dtype };
    Ok(vec![Fact::new(dtype, shape)])
}

pub(super) fn where_(operands: &Operands) -> OpResult<Vec<Fact>> {
    let condition = operands.require_dtype_in(0, &[DType::Bool])?;
    let x = operands.required(1)?;
    let y = operands.required(2)?;
    operands.require_same_dtype(2, 1)?;

    let shape = broadcast_shapes(&condition.shape, &x.shape)
        .and_then(|shape| broadcast_shapes(&shape, &y.shape))
        .map_err(|e| {
            let context = format!(
                "condition {}, x {} and y {}",
                ShapeDisplay(&condition.shape),
                ShapeDisplay(&x.shape),
                ShapeDisplay(&y.shape)
            );
            prefix_error(e, &context)
        })?;
    Ok(vec![Fact::new(x.dtype, shape)])
}

pub(super) fn clip(operands: &Operands) -> OpResult<Vec<Fact>> {
    let x = operands.require_numeric(0)?;
    for slot in 1..operands.len() {
        let Some(bound) = operands.get(slot) else { continue };
        operands.require_same_dtype(slot, 0)?;
        // ONNX requires a scalar. A one-element 1-D tensor is accepted too,
        // because some exporters emit [1] and its meaning is the same.
        if bound.rank() > 1 || bound.shape.iter().product::<usize>() != 1 {
            op_bail!("{} has shape {}, but it must be a scalar", operands.label(slot), ShapeDisplay(&bound.shape));
        }
    }
    Ok(vec![Fact::new(x.dtype, x.shape.clone())])
}

/// Gelu, HardSigmoid and LeakyRelu: a float input and an output of the same type.
pub(super) fn float_activation(operands: &Operands) -> OpResult<Vec<Fact>> {
    let x = operands.require_float(0)?;
    Ok(vec![Fact::new(x.dtype, x.shape.clone())])
}

/// Softmax and LogSoftmax. The legacy flatten-to-2-D form accepts the same
/// axes, so one check serves both.
pub(super) fn softmax(operands: &Operands, axis: i64) -> OpResult<Vec<Fact>> {
    let x = operands.require_float(0)?;
    normalize_axis(axis, x.rank())?;
    Ok(vec![Fact::new(x.dtype, x.shape.clone())])
}

pub(super) fn cast(operands: &Operands, to: DType) -> OpResult<Vec<Fact>> {
    let x = operands.required(0)?;
    Ok(vec![Fact::new(to, x.shape.clone())])
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ErrorCase, ShapeCase, check_errors, check_shapes, f32s, fact, run};
    use crate::ir::op::{BinaryOp, GeluApprox, Op, UnaryOp};
    use crate::tensor::DType;

    fn output_dtype(op: Op, inputs: &[Option<crate::ir::graph::Fact>]) -> Option<DType> {
        run(&op, inputs).ok().and_then(|outputs| outputs.first().map(|f| f.dtype))
    }

    #[test]
    fn elementwise_shapes() {
        check_shapes(&[
            ShapeCase { name: "identity", op: Op::Identity, inputs: vec![f32s(&[2, 3])], shape: vec![2, 3] },
            ShapeCase {
                name: "relu",
                op: Op::Unary(UnaryOp::Relu),
                inputs: vec![f32s(&[1, 197, 768])],
                shape: vec![1, 197, 768],
            },
            ShapeCase {
                name: "add broadcasts bias",
                op: Op::Binary(BinaryOp::Add),
                inputs: vec![f32s(&[1, 197, 768]), f32s(&[768])],
                shape: vec![1, 197, 768],
            },
            ShapeCase {
                name: "mul broadcasts both ways",
                op: Op::Binary(BinaryOp::Mul),
                inputs: vec![f32s(&[4, 1, 3]), f32s(&[5, 1])],
                shape: vec![4, 5, 3],
            },
            ShapeCase {
                name: "add of scalars",
                op: Op::Binary(BinaryOp::Add),
                inputs: vec![f32s(&[]), f32s(&[])],
                shape: vec![],
            },
            ShapeCase {
                name: "where broadcasts three",
                op: Op::Where,
                inputs: vec![fact(DType::Bool, &[1, 1, 4]), f32s(&[3, 1]), f32s(&[])],
                shape: vec![1, 3, 4],
            },
            ShapeCase {
                name: "clip with bounds",
                op: Op::Clip,
                inputs: vec![f32s(&[2, 3]), f32s(&[]), f32s(&[1])],
                shape: vec![2, 3],
            },
            ShapeCase {
                name: "clip without min",
                op: Op::Clip,
                inputs: vec![f32s(&[2, 3]), None, f32s(&[])],
                shape: vec![2, 3],
            },
            ShapeCase {
                name: "softmax last axis",
                op: Op::Softmax { axis: -1, flatten_tail: false },
                inputs: vec![f32s(&[1, 12, 197, 197])],
                shape: vec![1, 12, 197, 197],
            },
            ShapeCase {
                name: "gelu",
                op: Op::Gelu { approximate: GeluApprox::Tanh },
                inputs: vec![f32s(&[1, 197, 3072])],
                shape: vec![1, 197, 3072],
            },
            ShapeCase {
                name: "hard sigmoid",
                op: Op::HardSigmoid { alpha: 0.2, beta: 0.5 },
                inputs: vec![f32s(&[5])],
                shape: vec![5],
            },
            ShapeCase { name: "cast", op: Op::Cast { to: DType::I64 }, inputs: vec![f32s(&[2, 2])], shape: vec![2, 2] },
        ]);
    }

    #[test]
    fn elementwise_output_dtypes() {
        let bools = || fact(DType::Bool, &[3]);
        assert_eq!(output_dtype(Op::Binary(BinaryOp::Less), &[f32s(&[3]), f32s(&[3])]), Some(DType::Bool));
        assert_eq!(output_dtype(Op::Binary(BinaryOp::Equal), &[bools(), bools()]), Some(DType::Bool));
        assert_eq!(output_dtype(Op::Binary(BinaryOp::Xor), &[bools(), bools()]), Some(DType::Bool));
        assert_eq!(output_dtype(Op::Unary(UnaryOp::Not), &[bools()]), Some(DType::Bool));
        assert_eq!(output_dtype(Op::Unary(UnaryOp::IsNaN), &[f32s(&[3])]), Some(DType::Bool));
        assert_eq!(output_dtype(Op::Binary(BinaryOp::Add), &[f32s(&[3]), f32s(&[3])]), Some(DType::F32));
        assert_eq!(
            output_dtype(Op::Binary(BinaryOp::Pow), &[f32s(&[3]), fact(DType::I64, &[])]),
            Some(DType::F32),
            "Pow keeps the base type"
        );
        assert_eq!(
            output_dtype(Op::Binary(BinaryOp::Mod), &[fact(DType::I64, &[3]), fact(DType::I64, &[3])]),
            Some(DType::I64)
        );
        assert_eq!(output_dtype(Op::Cast { to: DType::F16 }, &[fact(DType::I32, &[3])]), Some(DType::F16));
        assert_eq!(
            output_dtype(Op::Where, &[fact(DType::Bool, &[3]), fact(DType::I64, &[3]), fact(DType::I64, &[])]),
            Some(DType::I64)
        );
    }

    #[test]
    fn elementwise_errors() {
        check_errors(&[
            ErrorCase {
                name: "add broadcast mismatch",
                op: Op::Binary(BinaryOp::Add),
                inputs: vec![f32s(&[1, 197, 768]), f32s(&[384])],
                message: "operand 0 (a) and operand 1 (b): shapes [1,197,768] and [384] cannot be broadcast",
            },
            ErrorCase {
                name: "add dtype mismatch",
                op: Op::Binary(BinaryOp::Add),
                inputs: vec![f32s(&[3]), fact(DType::I64, &[3])],
                message: "operand 1 (b) has element type i64, but operand 0 (a) has f32",
            },
            ErrorCase {
                name: "add of bools",
                op: Op::Binary(BinaryOp::Add),
                inputs: vec![fact(DType::Bool, &[3]), fact(DType::Bool, &[3])],
                message: "operand 0 (a) has element type bool, but it must be a numeric type",
            },
            ErrorCase {
                name: "less of bools",
                op: Op::Binary(BinaryOp::Less),
                inputs: vec![fact(DType::Bool, &[3]), fact(DType::Bool, &[3])],
                message: "must be a numeric type",
            },
            ErrorCase {
                name: "comparison dtype mismatch",
                op: Op::Binary(BinaryOp::Greater),
                inputs: vec![f32s(&[3]), fact(DType::F64, &[3])],
                message: "operand 1 (b) has element type f64",
            },
            ErrorCase {
                name: "and of floats",
                op: Op::Binary(BinaryOp::And),
                inputs: vec![f32s(&[3]), fact(DType::Bool, &[3])],
                message: "operand 0 (a) has element type f32, but it must be bool",
            },
            ErrorCase {
                name: "or of ints",
                op: Op::Binary(BinaryOp::Or),
                inputs: vec![fact(DType::Bool, &[3]), fact(DType::I64, &[3])],
                message: "operand 1 (b) has element type i64, but it must be bool",
            },
            ErrorCase {
                name: "float mod without fmod",
                op: Op::Binary(BinaryOp::Mod),
                inputs: vec![f32s(&[3]), f32s(&[3])],
                message: "Use fmod=1",
            },
            ErrorCase {
                name: "pow of bools",
                op: Op::Binary(BinaryOp::Pow),
                inputs: vec![f32s(&[3]), fact(DType::Bool, &[])],
                message: "operand 1 (b) has element type bool",
            },
            ErrorCase {
                name: "not of floats",
                op: Op::Unary(UnaryOp::Not),
                inputs: vec![f32s(&[3])],
                message: "operand 0 (input) has element type f32, but it must be bool",
            },
            ErrorCase {
                name: "exp of ints",
                op: Op::Unary(UnaryOp::Exp),
                inputs: vec![fact(DType::I64, &[3])],
                message: "has element type i64, but it must be f16, f32 or f64",
            },
            ErrorCase {
                name: "sqrt of bools",
                op: Op::Unary(UnaryOp::Sqrt),
                inputs: vec![fact(DType::Bool, &[3])],
                message: "must be f16, f32 or f64",
            },
            ErrorCase {
                name: "neg of unsigned",
                op: Op::Unary(UnaryOp::Neg),
                inputs: vec![fact(DType::U8, &[3])],
                message: "has element type u8, but it must be f32, f16, f64, i64, i32 or i8",
            },
            ErrorCase {
                name: "abs of bools",
                op: Op::Unary(UnaryOp::Abs),
                inputs: vec![fact(DType::Bool, &[3])],
                message: "must be a numeric type",
            },
            ErrorCase {
                name: "where condition not bool",
                op: Op::Where,
                inputs: vec![f32s(&[3]), f32s(&[3]), f32s(&[3])],
                message: "operand 0 (condition) has element type f32, but it must be bool",
            },
            ErrorCase {
                name: "where branch dtypes differ",
                op: Op::Where,
                inputs: vec![fact(DType::Bool, &[3]), f32s(&[3]), fact(DType::I64, &[3])],
                message: "operand 2 (y) has element type i64, but operand 1 (x) has f32",
            },
            ErrorCase {
                name: "where broadcast mismatch",
                op: Op::Where,
                inputs: vec![fact(DType::Bool, &[2]), f32s(&[3]), f32s(&[3])],
                message: "condition [2], x [3] and y [3]: shapes [2] and [3] cannot be broadcast",
            },
            ErrorCase {
                name: "clip bound not scalar",
                op: Op::Clip,
                inputs: vec![f32s(&[2, 3]), f32s(&[3]), None],
                message: "operand 1 (min) has shape [3], but it must be a scalar",
            },
            ErrorCase {
                name: "clip bound dtype",
                op: Op::Clip,
                inputs: vec![f32s(&[2, 3]), None, fact(DType::F64, &[])],
                message: "operand 2 (max) has element type f64",
            },
            ErrorCase {
                name: "clip of bools",
                op: Op::Clip,
                inputs: vec![fact(DType::Bool, &[2])],
                message: "must be a numeric type",
            },
            ErrorCase {
                name: "softmax axis out of range",
                op: Op::Softmax { axis: 3, flatten_tail: false },
                inputs: vec![f32s(&[2, 3, 4])],
                message: "axis 3 is out of range for a tensor of rank 3",
            },
            ErrorCase {
                name: "log softmax of scalar",
                op: Op::LogSoftmax { axis: 0, flatten_tail: true },
                inputs: vec![f32s(&[])],
                message: "rank 0",
            },
            ErrorCase {
                name: "softmax of ints",
                op: Op::Softmax { axis: -1, flatten_tail: false },
                inputs: vec![fact(DType::I32, &[4])],
                message: "must be f16, f32 or f64",
            },
            ErrorCase {
                name: "gelu of ints",
                op: Op::Gelu { approximate: GeluApprox::None },
                inputs: vec![fact(DType::I64, &[4])],
                message: "must be f16, f32 or f64",
            },
            ErrorCase {
                name: "leaky relu of ints",
                op: Op::LeakyRelu { alpha: 0.01 },
                inputs: vec![fact(DType::I8, &[4])],
                message: "must be f16, f32 or f64",
            },
        ]);
    }
}
