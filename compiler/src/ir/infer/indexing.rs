//! Operators that select or assemble parts of tensors: Concat, Split, Slice,
//! Gather and Pad.

use super::{Operands, check_unique_axes, dim_from_i128, format_ints, normalize_axis};
use crate::error::OpResult;
use crate::ir::graph::Fact;
use crate::ir::op::PadMode;
use crate::op_bail;
use crate::tensor::{DType, ShapeDisplay};

pub(super) fn concat(operands: &Operands, axis: i64) -> OpResult<Vec<Fact>> {
    let first = operands.required(0)?;
    let axis = normalize_axis(axis, first.rank())?;
    let mut shape = first.shape.clone();
    for slot in 1..operands.len() {
        let input = operands.required(slot)?;
        operands.require_same_dtype(slot, 0)?;
        let same_other_dims = input.rank() == first.rank()
            && input.shape.iter().zip(&first.shape).enumerate().all(|(i, (a, b))| i == axis || a == b);
        if !same_other_dims {
            op_bail!(
                "{} has shape {}, but operand 0 (input) has {}. All operands must have the same rank \
                 and the same dimensions except on axis {axis}",
                operands.label(slot),
                ShapeDisplay(&input.shape),
                ShapeDisplay(&first.shape)
            );
        }
        let sum = shape[axis] as i128 + input.shape[axis] as i128;
        shape[axis] = dim_from_i128(sum, &format!("the concatenated size of axis {axis}"))?;
    }
    Ok(vec![Fact::new(first.dtype, shape)])
}

pub(super) fn split(operands: &Operands, axis: i64, sizes: &[usize]) -> OpResult<Vec<Fact>> {
    let input = operands.required(0)?;
    let axis = normalize_axis(axis, input.rank())?;
    if sizes.is_empty() {
        op_bail!("attribute sizes is empty, but Split needs at least one output");
    }
    let total = sizes.iter().try_fold(0usize, |sum, &size| sum.checked_add(size));
    if total != Some(input.shape[axis]) {
        op_bail!(
            "attribute sizes {} does not add up to {}, the size of axis {axis} of operand 0 (input) {}",
            ShapeDisplay(sizes),
            input.shape[axis],
            ShapeDisplay(&input.shape)
        );
    }
    let outputs = sizes
        .iter()
        .map(|&size| {
            let mut shape = input.shape.clone();
            shape[axis] = size;
            Fact::new(input.dtype, shape)
        })
        .collect();
    Ok(outputs)
}

/// Slice with ONNX clamping. For a step `s` on a dimension of size `d`,
/// negative starts and ends first get `d` added. Then, for `s > 0`, both are
/// clamped to `[0, d]`, and the length is `ceil((end - start) / s)`. For
/// `s < 0`, the start is clamped to `[0, d - 1]`, the end to `[-1, d - 1]`,
/// and the length is `ceil((start - end) / -s)`. A negative length is 0.
pub(super) fn slice(operands: &Operands) -> OpResult<Vec<Fact>> {
    let data = operands.required(0)?;
    let starts = operands.const_ints(1)?;
    let ends = operands.const_ints(2)?;
    let count = starts.len();
    if ends.len() != count {
        op_bail!(
            "operand 2 (ends) {} has {} entries, but operand 1 (starts) {} has {count}",
            format_ints(&ends),
            ends.len(),
            format_ints(&starts)
        );
    }

    // Optional operands: axes default to 0..count, steps to 1.
    let axes_values = match operands.get(3) {
        Some(_) => operands.const_ints(3)?,
        None => (0..count as i64).collect(),
    };
    let steps = match operands.get(4) {
        Some(_) => operands.const_ints(4)?,
        None => vec![1; count],
    };
    for (slot, len) in [(3, axes_values.len()), (4, steps.len())] {
        if len != count {
            op_bail!("{} has {len} entries, but operand 1 (starts) has {count}", operands.label(slot));
        }
    }
    let axes = axes_values.iter().map(|&axis| normalize_axis(axis, data.rank())).collect::<OpResult<Vec<_>>>()?;
    check_unique_axes(&axes, &axes_values, data.rank())?;

    let mut shape = data.shape.clone();
    for i in 0..count {
        let axis = axes[i];
        let step = i128::from(steps[i]);
        if step == 0 {
            op_bail!("operand 4 (steps) {} contains 0, but a step must be nonzero", format_ints(&steps));
        }
        let dim = data.shape[axis] as i128;
        let resolve = |value: i64| {
            let value = i128::from(value);
            if value < 0 { value + dim } else { value }
        };
        let (start, end) = (resolve(starts[i]), resolve(ends[i]));
        // Clamp with max and min, not `clamp`, because for an empty axis the
        // negative-step range [0, d - 1] is empty and `clamp` would panic.
        let len = if step > 0 {
            let start = start.max(0).min(dim);
            let end = end.max(0).min(dim);
            ceil_div(end - start, step)
        } else {
            let start = start.max(0).min(dim - 1);
            let end = end.max(-1).min(dim - 1);
            ceil_div(start - end, -step)
        };
        shape[axis] = dim_from_i128(len.max(0), &format!("the sliced size of axis {axis}"))?;
    }
    Ok(vec![Fact::new(data.dtype, shape)])
}

/// Gather: the output shape is `data.shape[..axis] + indices.shape + data.shape[axis + 1..]`.
/// When the indices are constant, each must lie in `[-d, d - 1]` for the
/// size `d` of the gathered axis.
pub(super) fn gather(operands: &Operands, axis: i64) -> OpResult<Vec<Fact>> {
    let data = operands.required(0)?;
    let indices = operands.require_dtype_in(1, &[DType::I64, DType::I32])?;
    let axis = normalize_axis(axis, data.rank())?;
    let dim = data.shape[axis];

    if let Some(values) = &indices.konst {
        let dim = dim as i128;
        let out_of_range = values.to_i64_vec().into_iter().find(|&i| i128::from(i) < -dim || i128::from(i) >= dim);
        if let Some(index) = out_of_range {
            op_bail!(
                "operand 1 (indices) contains {index}, which is out of range for axis {axis} of operand 0 (data) {}. \
                 Expected indices in {}..={}",
                ShapeDisplay(&data.shape),
                -dim,
                dim - 1
            );
        }
    }

    let mut shape = data.shape[..axis].to_vec();
    shape.extend_from_slice(&indices.shape);
    shape.extend_from_slice(&data.shape[axis + 1..]);
    Ok(vec![Fact::new(data.dtype, shape)])
}

/// Pad with `pads = [begin_0, .., begin_n, end_0, .., end_n]`. Negative pads
/// crop, and no output dimension may become negative.
pub(super) fn pad(operands: &Operands, mode: PadMode) -> OpResult<Vec<Fact>> {
    let data = operands.required(0)?;
    let pads = operands.const_ints(1)?;
    let rank = data.rank();
    if pads.len() != 2 * rank {
        op_bail!(
            "operand 1 (pads) {} has {} entries, but operand 0 (data) {} of rank {rank} needs {}",
            format_ints(&pads),
            pads.len(),
            ShapeDisplay(&data.shape),
            2 * rank
        );
    }

    if let Some(value) = operands.get(2) {
        operands.require_same_dtype(2, 0)?;
        if value.rank() > 1 || value.shape.iter().product::<usize>() != 1 {
            op_bail!("operand 2 (constant_value) has shape {}, but it must be a scalar", ShapeDisplay(&value.shape));
        }
    }

    let mut shape = Vec::with_capacity(rank);
    for axis in 0..rank {
        let dim = data.shape[axis];
        let (begin, end) = (pads[axis], pads[rank + axis]);

        // Reflect mirrors without repeating the border element, so it can
        // add at most d - 1 elements on each side. Edge repeats the border
        // element, which an empty axis does not have.
        let largest = i128::from(begin.max(end));
        let reflect_too_far = mode == PadMode::Reflect && largest > 0 && largest >= dim as i128;
        let edge_of_empty = mode == PadMode::Edge && largest > 0 && dim == 0;
        if reflect_too_far || edge_of_empty {
            op_bail!(
                "operand 1 (pads) {} pads axis {axis} of size {dim} by {begin} and {end}, but {mode:?} mode \
                 can add at most {} elements on each side of that axis",
                format_ints(&pads),
                if mode == PadMode::Reflect { dim.saturating_sub(1) } else { 0 }
            );
        }

        let size = dim as i128 + i128::from(begin) + i128::from(end);
        if size < 0 {
            op_bail!(
                "operand 1 (pads) {} crops axis {axis} of operand 0 (data) {} to size {size}",
                format_ints(&pads),
                ShapeDisplay(&data.shape)
            );
        }
        shape.push(dim_from_i128(size, &format!("the padded size of axis {axis}"))?);
    }
    Ok(vec![Fact::new(data.dtype, shape)])
}

/// Divides and rounds toward positive infinity; `divisor` is positive.
fn ceil_div(dividend: i128, divisor: i128) -> i128 {
    let quotient = dividend.div_euclid(divisor);
    if dividend.rem_euclid(divisor) == 0 { quotient } else { quotient + 1 }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{
        ErrorCase, ShapeCase, check_errors, check_shapes, f32s, fact, ints, run, unknown_ints,
    };
    use crate::ir::op::{Op, PadMode};
    use crate::tensor::DType;

    fn split_shapes(op: Op, inputs: &[Option<crate::ir::graph::Fact>]) -> Vec<Vec<usize>> {
        run(&op, inputs).map(|outputs| outputs.into_iter().map(|f| f.shape).collect()).unwrap_or_default()
    }

    #[test]
    fn concat_split_gather_shapes() {
        check_shapes(&[
            ShapeCase {
                name: "concat class token",
                op: Op::Concat { axis: 1 },
                inputs: vec![f32s(&[1, 1, 768]), f32s(&[1, 196, 768])],
                shape: vec![1, 197, 768],
            },
            ShapeCase {
                name: "concat negative axis three inputs",
                op: Op::Concat { axis: -1 },
                inputs: vec![f32s(&[2, 1]), f32s(&[2, 2]), f32s(&[2, 0])],
                shape: vec![2, 3],
            },
            ShapeCase { name: "concat single", op: Op::Concat { axis: 0 }, inputs: vec![f32s(&[4])], shape: vec![4] },
            ShapeCase {
                name: "gather scalar index",
                op: Op::Gather { axis: 1 },
                inputs: vec![f32s(&[1, 197, 768]), fact(DType::I64, &[])],
                shape: vec![1, 768],
            },
            ShapeCase {
                name: "gather index matrix",
                op: Op::Gather { axis: 0 },
                inputs: vec![f32s(&[10, 4]), fact(DType::I32, &[2, 3])],
                shape: vec![2, 3, 4],
            },
            ShapeCase {
                name: "gather negative axis constant indices",
                op: Op::Gather { axis: -1 },
                inputs: vec![fact(DType::I64, &[4]), ints(&[-4, 3])],
                shape: vec![2],
            },
        ]);
        assert_eq!(
            split_shapes(Op::Split { axis: -1, sizes: vec![768, 768, 768] }, &[f32s(&[1, 197, 2304])]),
            vec![vec![1, 197, 768], vec![1, 197, 768], vec![1, 197, 768]]
        );
        assert_eq!(
            split_shapes(Op::Split { axis: 0, sizes: vec![1, 0, 2] }, &[f32s(&[3, 2])]),
            vec![vec![1, 2], vec![0, 2], vec![2, 2]]
        );
    }

    #[test]
    fn slice_shapes() {
        let slice = |data: &[usize], starts: &[i64], ends: &[i64], axes: Option<&[i64]>, steps: Option<&[i64]>| {
            vec![f32s(data), ints(starts), ints(ends), axes.and_then(ints), steps.and_then(ints)]
        };
        check_shapes(&[
            ShapeCase {
                name: "class token",
                op: Op::Slice,
                inputs: slice(&[1, 197, 768], &[0], &[1], Some(&[1]), None),
                shape: vec![1, 1, 768],
            },
            ShapeCase {
                name: "default axes",
                op: Op::Slice,
                inputs: slice(&[10, 8], &[2, 1], &[5, 7], None, None),
                shape: vec![3, 6],
            },
            ShapeCase {
                name: "end clamped to dim",
                op: Op::Slice,
                inputs: slice(&[10], &[1], &[i64::MAX], None, None),
                shape: vec![9],
            },
            ShapeCase {
                name: "negative start",
                op: Op::Slice,
                inputs: slice(&[10], &[-3], &[10], None, None),
                shape: vec![3],
            },
            ShapeCase {
                name: "start past end is empty",
                op: Op::Slice,
                inputs: slice(&[10], &[7], &[3], None, None),
                shape: vec![0],
            },
            ShapeCase {
                name: "step rounds up",
                op: Op::Slice,
                inputs: slice(&[10], &[0], &[10], Some(&[0]), Some(&[3])),
                shape: vec![4],
            },
            ShapeCase {
                name: "reverse whole axis",
                op: Op::Slice,
                inputs: slice(&[10], &[-1], &[i64::MIN], Some(&[-1]), Some(&[-1])),
                shape: vec![10],
            },
            ShapeCase {
                name: "negative step partial",
                op: Op::Slice,
                inputs: slice(&[10], &[8], &[2], None, Some(&[-2])),
                shape: vec![3],
            },
            ShapeCase {
                name: "negative step on empty axis",
                op: Op::Slice,
                inputs: slice(&[0], &[0], &[-10], None, Some(&[-1])),
                shape: vec![0],
            },
            ShapeCase {
                name: "start far below zero",
                op: Op::Slice,
                inputs: slice(&[5], &[i64::MIN], &[2], None, None),
                shape: vec![2],
            },
        ]);
    }

    #[test]
    fn pad_shapes() {
        check_shapes(&[
            ShapeCase {
                name: "constant",
                op: Op::Pad { mode: PadMode::Constant },
                inputs: vec![f32s(&[1, 3, 4, 4]), ints(&[0, 0, 1, 2, 0, 0, 3, 4]), f32s(&[])],
                shape: vec![1, 3, 8, 10],
            },
            ShapeCase {
                name: "negative pads crop",
                op: Op::Pad { mode: PadMode::Constant },
                inputs: vec![f32s(&[5, 5]), ints(&[-1, 0, -2, 1]), None],
                shape: vec![2, 6],
            },
            ShapeCase {
                name: "reflect within bounds",
                op: Op::Pad { mode: PadMode::Reflect },
                inputs: vec![f32s(&[4]), ints(&[3, 3])],
                shape: vec![10],
            },
            ShapeCase {
                name: "edge",
                op: Op::Pad { mode: PadMode::Edge },
                inputs: vec![f32s(&[1, 2]), ints(&[2, 0, 0, 5])],
                shape: vec![3, 7],
            },
        ]);
    }

    #[test]
    fn indexing_errors() {
        check_errors(&[
            ErrorCase {
                name: "concat other dim mismatch",
                op: Op::Concat { axis: 1 },
                inputs: vec![f32s(&[1, 1, 768]), f32s(&[1, 196, 384])],
                message: "operand 1 (input) has shape [1,196,384], but operand 0 (input) has [1,1,768]",
            },
            ErrorCase {
                name: "concat rank mismatch",
                op: Op::Concat { axis: 0 },
                inputs: vec![f32s(&[1, 2]), f32s(&[2])],
                message: "must have the same rank",
            },
            ErrorCase {
                name: "concat dtype mismatch",
                op: Op::Concat { axis: 0 },
                inputs: vec![f32s(&[1]), fact(DType::I64, &[1])],
                message: "operand 1 (input) has element type i64",
            },
            ErrorCase {
                name: "concat axis",
                op: Op::Concat { axis: 2 },
                inputs: vec![f32s(&[1, 2]), f32s(&[1, 2])],
                message: "axis 2 is out of range for a tensor of rank 2",
            },
            ErrorCase {
                name: "concat missing operand",
                op: Op::Concat { axis: 0 },
                inputs: vec![f32s(&[1]), None],
                message: "operand 1 (input) is missing",
            },
            ErrorCase {
                name: "split sizes sum",
                op: Op::Split { axis: 1, sizes: vec![2, 2] },
                inputs: vec![f32s(&[1, 5])],
                message: "attribute sizes [2,2] does not add up to 5, the size of axis 1 of operand 0 (input) [1,5]",
            },
            ErrorCase {
                name: "split overflowing sizes",
                op: Op::Split { axis: 0, sizes: vec![usize::MAX, 2] },
                inputs: vec![f32s(&[1])],
                message: "does not add up to 1",
            },
            ErrorCase {
                name: "split no sizes",
                op: Op::Split { axis: 0, sizes: vec![] },
                inputs: vec![f32s(&[0])],
                message: "attribute sizes is empty",
            },
            ErrorCase {
                name: "split axis",
                op: Op::Split { axis: -3, sizes: vec![1] },
                inputs: vec![f32s(&[1, 1])],
                message: "axis -3 is out of range for a tensor of rank 2",
            },
            ErrorCase {
                name: "gather axis out of range",
                op: Op::Gather { axis: 3 },
                inputs: vec![f32s(&[1, 197, 768]), fact(DType::I64, &[])],
                message: "axis 3 is out of range for a tensor of rank 3",
            },
            ErrorCase {
                name: "gather float indices",
                op: Op::Gather { axis: 0 },
                inputs: vec![f32s(&[4]), f32s(&[2])],
                message: "operand 1 (indices) has element type f32, but it must be i64 or i32",
            },
            ErrorCase {
                name: "gather constant index out of range",
                op: Op::Gather { axis: 0 },
                inputs: vec![f32s(&[4, 2]), ints(&[1, 4])],
                message: "operand 1 (indices) contains 4, which is out of range for axis 0 of operand 0 (data) [4,2]. Expected indices in -4..=3",
            },
            ErrorCase {
                name: "gather negative index out of range",
                op: Op::Gather { axis: 0 },
                inputs: vec![f32s(&[4]), ints(&[-5])],
                message: "contains -5",
            },
            ErrorCase {
                name: "gather from scalar",
                op: Op::Gather { axis: 0 },
                inputs: vec![f32s(&[]), fact(DType::I64, &[])],
                message: "rank 0",
            },
        ]);
    }

    #[test]
    fn slice_and_pad_errors() {
        check_errors(&[
            ErrorCase {
                name: "slice step zero",
                op: Op::Slice,
                inputs: vec![f32s(&[10]), ints(&[0]), ints(&[5]), None, ints(&[0])],
                message: "operand 4 (steps) [0] contains 0, but a step must be nonzero",
            },
            ErrorCase {
                name: "slice ends length",
                op: Op::Slice,
                inputs: vec![f32s(&[10, 4]), ints(&[0, 0]), ints(&[5])],
                message: "operand 2 (ends) [5] has 1 entries, but operand 1 (starts) [0,0] has 2",
            },
            ErrorCase {
                name: "slice axes length",
                op: Op::Slice,
                inputs: vec![f32s(&[10, 4]), ints(&[0]), ints(&[5]), ints(&[0, 1])],
                message: "operand 3 (axes) has 2 entries, but operand 1 (starts) has 1",
            },
            ErrorCase {
                name: "slice steps length",
                op: Op::Slice,
                inputs: vec![f32s(&[10, 4]), ints(&[0]), ints(&[5]), None, ints(&[1, 1])],
                message: "operand 4 (steps) has 2 entries",
            },
            ErrorCase {
                name: "slice axis out of range",
                op: Op::Slice,
                inputs: vec![f32s(&[10, 4]), ints(&[0]), ints(&[5]), ints(&[2])],
                message: "axis 2 is out of range for a tensor of rank 2",
            },
            ErrorCase {
                name: "slice repeated axis",
                op: Op::Slice,
                inputs: vec![f32s(&[10, 4]), ints(&[0, 0]), ints(&[5, 5]), ints(&[1, -1])],
                message: "axes [1,-1] refer to axis 1 more than once",
            },
            ErrorCase {
                name: "slice starts not constant",
                op: Op::Slice,
                inputs: vec![f32s(&[10]), unknown_ints(1), ints(&[5])],
                message: "operand 1 (starts) is not a compile-time constant",
            },
            ErrorCase {
                name: "slice ends not constant",
                op: Op::Slice,
                inputs: vec![f32s(&[10]), ints(&[0]), unknown_ints(1)],
                message: "operand 2 (ends) is not a compile-time constant",
            },
            ErrorCase {
                name: "slice axes not constant",
                op: Op::Slice,
                inputs: vec![f32s(&[10]), ints(&[0]), ints(&[5]), unknown_ints(1)],
                message: "operand 3 (axes) is not a compile-time constant",
            },
            ErrorCase {
                name: "slice steps not constant",
                op: Op::Slice,
                inputs: vec![f32s(&[10]), ints(&[0]), ints(&[5]), None, unknown_ints(1)],
                message: "operand 4 (steps) is not a compile-time constant",
            },
            ErrorCase {
                name: "pad length",
                op: Op::Pad { mode: PadMode::Constant },
                inputs: vec![f32s(&[2, 2]), ints(&[1, 1])],
                message: "operand 1 (pads) [1,1] has 2 entries, but operand 0 (data) [2,2] of rank 2 needs 4",
            },
            ErrorCase {
                name: "pad crops below zero",
                op: Op::Pad { mode: PadMode::Constant },
                inputs: vec![f32s(&[2, 2]), ints(&[-2, 0, -1, 0])],
                message: "crops axis 0 of operand 0 (data) [2,2] to size -1",
            },
            ErrorCase {
                name: "pad reflect too far",
                op: Op::Pad { mode: PadMode::Reflect },
                inputs: vec![f32s(&[3]), ints(&[3, 0])],
                message: "pads axis 0 of size 3 by 3 and 0, but Reflect mode can add at most 2 elements",
            },
            ErrorCase {
                name: "pad edge of empty axis",
                op: Op::Pad { mode: PadMode::Edge },
                inputs: vec![f32s(&[0]), ints(&[0, 1])],
                message: "but Edge mode can add at most 0 elements",
            },
            ErrorCase {
                name: "pad value dtype",
                op: Op::Pad { mode: PadMode::Constant },
                inputs: vec![f32s(&[2]), ints(&[1, 1]), fact(DType::F64, &[])],
                message: "operand 2 (constant_value) has element type f64",
            },
            ErrorCase {
                name: "pad value shape",
                op: Op::Pad { mode: PadMode::Constant },
                inputs: vec![f32s(&[2]), ints(&[1, 1]), f32s(&[2])],
                message: "operand 2 (constant_value) has shape [2], but it must be a scalar",
            },
            ErrorCase {
                name: "pads not constant",
                op: Op::Pad { mode: PadMode::Constant },
                inputs: vec![f32s(&[2]), unknown_ints(2)],
                message: "operand 1 (pads) is not a compile-time constant",
            },
            ErrorCase {
                name: "pad overflow",
                op: Op::Pad { mode: PadMode::Constant },
                inputs: vec![f32s(&[2]), ints(&[i64::MAX, i64::MAX])],
                message: "exceeds 2^40",
            },
        ]);
    }
}
