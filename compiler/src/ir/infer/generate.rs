//! Operators that produce new tensors from shapes or scalars: Shape, Size,
//! ConstantOfShape and Range.

use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};

use super::{MAX_ELEMENTS, Operands, checked_numel, dim_from_i128, format_ints};
use crate::error::{OpError, OpResult};
use crate::ir::graph::Fact;
use crate::op_bail;
use crate::tensor::{DType, ShapeDisplay, Tensor};

/// Shape returns `dims[start..end]` as a constant 1-D i64 tensor. Negative
/// bounds count from the end, and both bounds are clamped to `[0, rank]`.
pub(super) fn shape(operands: &Operands, start: i64, end: Option<i64>) -> OpResult<Vec<Fact>> {
    let data = operands.required(0)?;
    let rank = data.rank() as i64;
    let clamp_bound = |bound: i64| {
        let bound = if bound < 0 { bound.saturating_add(rank) } else { bound };
        bound.max(0).min(rank) as usize
    };
    let start = clamp_bound(start);
    let end = clamp_bound(end.unwrap_or(rank));
    let dims = if start < end { &data.shape[start..end] } else { &[][..] };

    let values = dims.iter().map(|&dim| i64::try_from(dim)).collect::<Result<Vec<i64>, _>>().map_err(|_| {
        OpError::new(format!(
            "operand 0 (data) has shape {}, whose dimensions do not fit in i64",
            ShapeDisplay(&data.shape)
        ))
    })?;
    Ok(vec![Fact::of_tensor(Arc::new(Tensor::from_i64s(&values)))])
}

/// Size returns the number of elements as a constant i64 scalar.
pub(super) fn size(operands: &Operands) -> OpResult<Vec<Fact>> {
    let data = operands.required(0)?;
    let numel = checked_numel(&data.shape)?;
    // `checked_numel` bounds the count by 2^40, so it fits in i64.
    let tensor = Tensor::I64(ArrayD::from_elem(IxDyn(&[]), numel as i64));
    Ok(vec![Fact::of_tensor(Arc::new(tensor))])
}

/// ConstantOfShape: a tensor of the shape given by the operand data, with the
/// element type of the one-element `value` attribute.
pub(super) fn constant_of_shape(operands: &Operands, value: &Tensor) -> OpResult<Vec<Fact>> {
    if value.len() != 1 {
        op_bail!("attribute value has shape {}, but it must contain exactly one element", ShapeDisplay(value.shape()));
    }
    let values = operands.const_ints(0)?;
    let mut shape = Vec::with_capacity(values.len());
    for (index, &dim) in values.iter().enumerate() {
        if dim < 0 {
            op_bail!("operand 0 (shape) {} contains {dim}, but dimensions must be non-negative", format_ints(&values));
        }
        shape.push(dim_from_i128(i128::from(dim), &format!("entry {index} of operand 0 (shape)"))?);
    }
    Ok(vec![Fact::new(value.dtype(), shape)])
}

/// Range: a 1-D tensor of `max(ceil((limit - start) / delta), 0)` elements.
/// Integer ranges are counted exactly in `i128`, and float ranges in the
/// arithmetic of their element type, so an f32 range gets the count that
/// f32 arithmetic gives.
pub(super) fn range(operands: &Operands) -> OpResult<Vec<Fact>> {
    let dtype = operands.require_dtype_in(0, &[DType::F32, DType::F64, DType::I32, DType::I64])?.dtype;
    let mut scalars = Vec::with_capacity(3);
    for slot in 0..3 {
        let fact = operands.required(slot)?;
        operands.require_same_dtype(slot, 0)?;
        // ONNX requires scalars. A one-element 1-D tensor means the same and
        // is accepted too.
        if fact.rank() > 1 || fact.shape.iter().product::<usize>() != 1 {
            op_bail!("{} has shape {}, but it must be a scalar", operands.label(slot), ShapeDisplay(&fact.shape));
        }
        let Some(data) = &fact.konst else {
            op_bail!("{}", operands.not_constant_message(slot));
        };
        scalars.push(data.as_ref());
    }

    let count = if dtype.is_int() {
        let [start, limit, delta] =
            [0, 1, 2].map(|i| i128::from(scalars[i].to_i64_vec().first().copied().unwrap_or(0)));
        if delta == 0 {
            op_bail!("operand 2 (delta) is 0, but it must be nonzero");
        }
        // Ceiling division: truncate, then step up when the remainder has
        // the sign of the delta (the quotient was rounded down).
        let span = limit - start;
        let (quotient, remainder) = (span / delta, span % delta);
        let count = if remainder != 0 && (remainder > 0) == (delta > 0) { quotient + 1 } else { quotient };
        count.max(0)
    } else {
        let [start, limit, delta] = [0, 1, 2].map(|i| scalars[i].to_f64_vec().first().copied().unwrap_or(0.0));
        if delta == 0.0 {
            op_bail!("operand 2 (delta) is 0, but it must be nonzero");
        }
        let count = if dtype == DType::F32 {
            (((limit as f32) - (start as f32)) / (delta as f32)).ceil() as f64
        } else {
            ((limit - start) / delta).ceil()
        };
        if !count.is_finite() {
            op_bail!("Range from {start} to {limit} with delta {delta} has no finite number of elements");
        }
        if count > MAX_ELEMENTS as f64 {
            op_bail!("Range from {start} to {limit} with delta {delta} has {count} elements, more than 2^40");
        }
        count.max(0.0) as i128
    };
    Ok(vec![Fact::new(dtype, vec![dim_from_i128(count, "the number of Range elements")?])])
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::super::test_support::{
        ErrorCase, ShapeCase, check_errors, check_shapes, f32s, fact, ints, run, tensor, unknown_ints,
    };
    use crate::ir::graph::Fact;
    use crate::ir::op::Op;
    use crate::tensor::{DType, Tensor};

    fn scalar_i64(value: i64) -> Option<Fact> {
        tensor(Tensor::I64(ArrayD::from_elem(IxDyn(&[]), value)))
    }

    fn scalar_f32(value: f32) -> Option<Fact> {
        tensor(Tensor::scalar_f32(value))
    }

    fn scalar_f64(value: f64) -> Option<Fact> {
        tensor(Tensor::F64(ArrayD::from_elem(IxDyn(&[]), value)))
    }

    fn shape_data(start: i64, end: Option<i64>, input: &[usize]) -> Option<Vec<i64>> {
        let outputs = run(&Op::Shape { start, end }, &[f32s(input)]).ok()?;
        outputs.first()?.konst.as_ref().map(|t| t.to_i64_vec())
    }

    #[test]
    fn shape_values() {
        let input = [1, 3, 224, 224];
        assert_eq!(shape_data(0, None, &input), Some(vec![1, 3, 224, 224]));
        assert_eq!(shape_data(1, None, &input), Some(vec![3, 224, 224]));
        assert_eq!(shape_data(-2, None, &input), Some(vec![224, 224]));
        assert_eq!(shape_data(0, Some(-1), &input), Some(vec![1, 3, 224]));
        assert_eq!(shape_data(-10, Some(2), &input), Some(vec![1, 3]), "start clamped to 0");
        assert_eq!(shape_data(2, Some(100), &input), Some(vec![224, 224]), "end clamped to rank");
        assert_eq!(shape_data(3, Some(1), &input), Some(vec![]), "start after end");
        assert_eq!(shape_data(i64::MIN, Some(i64::MAX), &input), Some(vec![1, 3, 224, 224]));
        assert_eq!(shape_data(0, None, &[]), Some(vec![]), "scalar input");
    }

    #[test]
    fn shape_output_fact() {
        let outputs = run(&Op::Shape { start: 1, end: None }, &[fact(DType::Bool, &[2, 5, 7])]).unwrap_or_default();
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].dtype, DType::I64);
        assert_eq!(outputs[0].shape, vec![2]);
    }

    #[test]
    fn size_output_fact() {
        let outputs = run(&Op::Size, &[f32s(&[2, 3, 4])]).unwrap_or_default();
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].dtype, DType::I64);
        assert_eq!(outputs[0].shape, Vec::<usize>::new());
        assert_eq!(outputs[0].konst.as_ref().map(|t| t.to_i64_vec()), Some(vec![24]));
    }

    #[test]
    fn other_outputs_carry_no_constant() {
        let outputs = run(&Op::Identity, &[ints(&[1, 2])]).unwrap_or_default();
        assert_eq!(outputs.len(), 1);
        assert!(outputs[0].konst.is_none(), "Identity output must not carry constant data");
    }

    #[test]
    fn constant_of_shape_fact() {
        let value = Tensor::from_i64s(&[7]).cast(DType::F16);
        let outputs = run(&Op::ConstantOfShape { value }, &[ints(&[2, 0, 3])]).unwrap_or_default();
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].dtype, DType::F16);
        assert_eq!(outputs[0].shape, vec![2, 0, 3]);
        assert!(outputs[0].konst.is_none());
    }

    #[test]
    fn range_shapes() {
        check_shapes(&[
            ShapeCase {
                name: "integer",
                op: Op::Range,
                inputs: vec![scalar_i64(0), scalar_i64(10), scalar_i64(3)],
                shape: vec![4],
            },
            ShapeCase {
                name: "integer exact",
                op: Op::Range,
                inputs: vec![scalar_i64(0), scalar_i64(9), scalar_i64(3)],
                shape: vec![3],
            },
            ShapeCase {
                name: "integer descending",
                op: Op::Range,
                inputs: vec![scalar_i64(10), scalar_i64(4), scalar_i64(-3)],
                shape: vec![2],
            },
            ShapeCase {
                name: "integer descending uneven",
                op: Op::Range,
                inputs: vec![scalar_i64(10), scalar_i64(3), scalar_i64(-3)],
                shape: vec![3],
            },
            ShapeCase {
                name: "integer empty",
                op: Op::Range,
                inputs: vec![scalar_i64(5), scalar_i64(1), scalar_i64(2)],
                shape: vec![0],
            },
            ShapeCase {
                name: "integer extremes",
                op: Op::Range,
                inputs: vec![scalar_i64(i64::MAX), scalar_i64(i64::MIN), scalar_i64(i64::MIN)],
                shape: vec![2],
            },
            ShapeCase {
                name: "float",
                op: Op::Range,
                inputs: vec![scalar_f32(0.0), scalar_f32(1.0), scalar_f32(0.25)],
                shape: vec![4],
            },
            ShapeCase {
                name: "float rounds up",
                op: Op::Range,
                inputs: vec![scalar_f64(1.0), scalar_f64(2.05), scalar_f64(0.5)],
                shape: vec![3],
            },
            ShapeCase {
                name: "one-element 1-D operands",
                op: Op::Range,
                inputs: vec![ints(&[0]), ints(&[5]), ints(&[1])],
                shape: vec![5],
            },
        ]);
    }

    #[test]
    fn generate_errors() {
        check_errors(&[
            ErrorCase {
                name: "range delta zero",
                op: Op::Range,
                inputs: vec![scalar_i64(0), scalar_i64(10), scalar_i64(0)],
                message: "operand 2 (delta) is 0, but it must be nonzero",
            },
            ErrorCase {
                name: "range float delta zero",
                op: Op::Range,
                inputs: vec![scalar_f32(0.0), scalar_f32(1.0), scalar_f32(0.0)],
                message: "operand 2 (delta) is 0",
            },
            ErrorCase {
                name: "range infinite",
                op: Op::Range,
                inputs: vec![scalar_f64(0.0), scalar_f64(f64::INFINITY), scalar_f64(1.0)],
                message: "has no finite number of elements",
            },
            ErrorCase {
                name: "range nan",
                op: Op::Range,
                inputs: vec![scalar_f64(f64::NAN), scalar_f64(1.0), scalar_f64(1.0)],
                message: "has no finite number of elements",
            },
            ErrorCase {
                name: "range too long",
                op: Op::Range,
                inputs: vec![scalar_i64(0), scalar_i64(i64::MAX), scalar_i64(1)],
                message: "exceeds 2^40",
            },
            ErrorCase {
                name: "range float too long",
                op: Op::Range,
                inputs: vec![scalar_f32(0.0), scalar_f32(1e30), scalar_f32(1.0)],
                message: "more than 2^40",
            },
            ErrorCase {
                name: "range mixed dtypes",
                op: Op::Range,
                inputs: vec![scalar_i64(0), scalar_f32(1.0), scalar_i64(1)],
                message: "operand 1 (limit) has element type f32, but operand 0 (start) has i64",
            },
            ErrorCase {
                name: "range bool",
                op: Op::Range,
                inputs: vec![fact(DType::Bool, &[]), fact(DType::Bool, &[]), fact(DType::Bool, &[])],
                message: "operand 0 (start) has element type bool, but it must be f32, f64, i32 or i64",
            },
            ErrorCase {
                name: "range not scalar",
                op: Op::Range,
                inputs: vec![ints(&[0, 1]), scalar_i64(5), scalar_i64(1)],
                message: "operand 0 (start) has shape [2], but it must be a scalar",
            },
            ErrorCase {
                name: "range limit not constant",
                op: Op::Range,
                inputs: vec![scalar_i64(0), fact(DType::I64, &[]), scalar_i64(1)],
                message: "operand 1 (limit) is not a compile-time constant",
            },
            ErrorCase {
                name: "constant of shape negative",
                op: Op::ConstantOfShape { value: Tensor::scalar_f32(0.0) },
                inputs: vec![ints(&[2, -1])],
                message: "operand 0 (shape) [2,-1] contains -1, but dimensions must be non-negative",
            },
            ErrorCase {
                name: "constant of shape not constant",
                op: Op::ConstantOfShape { value: Tensor::scalar_f32(0.0) },
                inputs: vec![unknown_ints(2)],
                message: "operand 0 (shape) is not a compile-time constant",
            },
            ErrorCase {
                name: "constant of shape value size",
                op: Op::ConstantOfShape { value: Tensor::from_i64s(&[1, 2]) },
                inputs: vec![ints(&[2])],
                message: "attribute value has shape [2], but it must contain exactly one element",
            },
            ErrorCase {
                name: "constant of shape too large",
                op: Op::ConstantOfShape { value: Tensor::scalar_f32(0.0) },
                inputs: vec![ints(&[1 << 30, 1 << 30])],
                message: "more than 2^40 elements",
            },
            ErrorCase {
                name: "size too large",
                op: Op::Size,
                inputs: vec![f32s(&[1 << 30, 1 << 30])],
                message: "more than 2^40 elements",
            },
        ]);
    }
}
