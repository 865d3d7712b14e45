//! Reductions: the Reduce* family, ArgMax and ArgMin.

use super::{Operands, check_unique_axes, normalize_axis};
use crate::error::OpResult;
use crate::ir::graph::Fact;
use crate::ir::op::ReduceKind;
use crate::op_bail;
use crate::tensor::{DType, ShapeDisplay};

/// Reduce* with ONNX (opset 18) axis rules: missing or empty `axes` reduce
/// every axis, unless `noop_with_empty_axes` makes the node an identity.
pub(super) fn reduce(
    operands: &Operands,
    kind: ReduceKind,
    axes: Option<&[i64]>,
    keepdims: bool,
    noop_with_empty_axes: bool,
) -> OpResult<Vec<Fact>> {
    // ReduceMax and ReduceMin accept bool from opset 20 on.
    let x = match kind {
        ReduceKind::Max | ReduceKind::Min => operands.required(0)?,
        _ => operands.require_numeric(0)?,
    };
    let reduced: Vec<usize> = match axes {
        Some(axes) if !axes.is_empty() => {
            let normalized = axes.iter().map(|&axis| normalize_axis(axis, x.rank())).collect::<OpResult<Vec<_>>>()?;
            check_unique_axes(&normalized, axes, x.rank())?;
            normalized
        }
        _ if noop_with_empty_axes => return Ok(vec![Fact::new(x.dtype, x.shape.clone())]),
        _ => (0..x.rank()).collect(),
    };
    Ok(vec![Fact::new(x.dtype, reduced_shape(&x.shape, &reduced, keepdims))])
}

/// ArgMax and ArgMin: i64 indices along one axis, which must not be empty.
pub(super) fn arg_reduce(operands: &Operands, axis: i64, keepdims: bool) -> OpResult<Vec<Fact>> {
    let x = operands.require_numeric(0)?;
    let axis = normalize_axis(axis, x.rank())?;
    if x.shape[axis] == 0 {
        op_bail!(
            "axis {axis} of operand 0 (input) {} is empty, so it has no maximum or minimum element",
            ShapeDisplay(&x.shape)
        );
    }
    Ok(vec![Fact::new(DType::I64, reduced_shape(&x.shape, &[axis], keepdims))])
}

fn reduced_shape(shape: &[usize], reduced: &[usize], keepdims: bool) -> Vec<usize> {
    let mut output = Vec::with_capacity(shape.len());
    for (axis, &dim) in shape.iter().enumerate() {
        if !reduced.contains(&axis) {
            output.push(dim);
        } else if keepdims {
            output.push(1);
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ErrorCase, ShapeCase, check_errors, check_shapes, f32s, fact, run};
    use crate::ir::op::{Op, ReduceKind};
    use crate::tensor::DType;

    fn reduce(axes: Option<&[i64]>, keepdims: bool, noop_with_empty_axes: bool) -> Op {
        Op::Reduce { kind: ReduceKind::Mean, axes: axes.map(<[i64]>::to_vec), keepdims, noop_with_empty_axes }
    }

    fn arg_max(axis: i64, keepdims: bool) -> Op {
        Op::ArgMax { axis, keepdims, select_last_index: false }
    }

    #[test]
    fn reduce_shapes() {
        check_shapes(&[
            ShapeCase {
                name: "mean last keepdims",
                op: reduce(Some(&[-1]), true, false),
                inputs: vec![f32s(&[1, 197, 768])],
                shape: vec![1, 197, 1],
            },
            ShapeCase {
                name: "mean two axes dropped",
                op: reduce(Some(&[2, 3]), false, false),
                inputs: vec![f32s(&[1, 768, 14, 14])],
                shape: vec![1, 768],
            },
            ShapeCase { name: "all axes", op: reduce(None, false, false), inputs: vec![f32s(&[2, 3])], shape: vec![] },
            ShapeCase {
                name: "all axes keepdims",
                op: reduce(None, true, false),
                inputs: vec![f32s(&[2, 3])],
                shape: vec![1, 1],
            },
            ShapeCase {
                name: "empty axes reduce all",
                op: reduce(Some(&[]), false, false),
                inputs: vec![f32s(&[2, 3])],
                shape: vec![],
            },
            ShapeCase {
                name: "noop with empty axes",
                op: reduce(Some(&[]), false, true),
                inputs: vec![f32s(&[2, 3])],
                shape: vec![2, 3],
            },
            ShapeCase {
                name: "noop without axes",
                op: reduce(None, true, true),
                inputs: vec![f32s(&[2, 3])],
                shape: vec![2, 3],
            },
            ShapeCase {
                name: "argmax keepdims",
                op: arg_max(1, true),
                inputs: vec![f32s(&[1, 1000])],
                shape: vec![1, 1],
            },
            ShapeCase {
                name: "argmin dropped",
                op: Op::ArgMin { axis: -1, keepdims: false, select_last_index: true },
                inputs: vec![fact(DType::I32, &[4, 5])],
                shape: vec![4],
            },
        ]);
    }

    #[test]
    fn reduce_output_dtypes() {
        let sum = Op::Reduce { kind: ReduceKind::Sum, axes: None, keepdims: false, noop_with_empty_axes: false };
        let sum_dtype = run(&sum, &[fact(DType::I64, &[3])]).ok().map(|outputs| outputs[0].dtype);
        assert_eq!(sum_dtype, Some(DType::I64));
        let arg_dtype = run(&arg_max(0, false), &[f32s(&[3])]).ok().map(|outputs| outputs[0].dtype);
        assert_eq!(arg_dtype, Some(DType::I64));
    }

    #[test]
    fn reduce_errors() {
        check_errors(&[
            ErrorCase {
                name: "axis out of range",
                op: reduce(Some(&[3]), true, false),
                inputs: vec![f32s(&[1, 197, 768])],
                message: "axis 3 is out of range for a tensor of rank 3",
            },
            ErrorCase {
                name: "repeated axis",
                op: reduce(Some(&[2, -1]), true, false),
                inputs: vec![f32s(&[1, 197, 768])],
                message: "axes [2,-1] refer to axis 2 more than once",
            },
            ErrorCase {
                name: "bool input",
                op: reduce(None, true, false),
                inputs: vec![fact(DType::Bool, &[3])],
                message: "operand 0 (input) has element type bool",
            },
            ErrorCase {
                name: "argmax axis",
                op: arg_max(-3, true),
                inputs: vec![f32s(&[1, 1000])],
                message: "axis -3 is out of range for a tensor of rank 2",
            },
            ErrorCase {
                name: "argmax empty axis",
                op: arg_max(1, true),
                inputs: vec![f32s(&[1, 0])],
                message: "axis 1 of operand 0 (input) [1,0] is empty",
            },
            ErrorCase { name: "argmax of scalar", op: arg_max(0, true), inputs: vec![f32s(&[])], message: "rank 0" },
            ErrorCase {
                name: "argmax of bools",
                op: arg_max(0, true),
                inputs: vec![fact(DType::Bool, &[3])],
                message: "must be a numeric type",
            },
        ]);
    }
}
