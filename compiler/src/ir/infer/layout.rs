//! Operators that change a tensor's shape or dimension order: Reshape,
//! Transpose, Flatten, Squeeze, Unsqueeze, Expand and Tile.

use super::{
    Operands, broadcast_shapes, check_unique_axes, checked_dim_mul, checked_numel, dim_from_i128, format_ints,
    normalize_axis, prefix_error,
};
use crate::error::OpResult;
use crate::ir::graph::Fact;
use crate::op_bail;
use crate::tensor::ShapeDisplay;

/// Reshape with ONNX semantics: a 0 copies the input dimension at the same
/// index (or is a literal 0 with `allowzero`), and one -1 is inferred from
/// the number of elements.
pub(super) fn reshape(operands: &Operands, allowzero: bool) -> OpResult<Vec<Fact>> {
    let data = operands.required(0)?;
    let target = operands.const_ints(1)?;
    if allowzero && target.contains(&0) && target.contains(&-1) {
        op_bail!(
            "operand 1 (shape) {} contains both 0 and -1 with allowzero set, so the -1 dimension cannot be inferred",
            format_ints(&target)
        );
    }

    // Resolve every entry except -1, which stays a placeholder 1.
    let mut shape = Vec::with_capacity(target.len());
    let mut inferred_index = None;
    for (index, &value) in target.iter().enumerate() {
        let dim = match value {
            -1 => {
                if inferred_index.is_some() {
                    op_bail!(
                        "operand 1 (shape) {} contains -1 more than once, but only one dimension can be inferred",
                        format_ints(&target)
                    );
                }
                inferred_index = Some(index);
                1
            }
            0 if !allowzero => match data.shape.get(index) {
                Some(&dim) => dim,
                None => op_bail!(
                    "operand 1 (shape) {} has 0 at index {index}, which copies input dimension {index}, \
                     but operand 0 (data) {} has rank {}",
                    format_ints(&target),
                    ShapeDisplay(&data.shape),
                    data.rank()
                ),
            },
            value if value < 0 => op_bail!(
                "operand 1 (shape) {} contains {value}, but an entry must be non-negative or -1",
                format_ints(&target)
            ),
            value => dim_from_i128(i128::from(value), &format!("entry {index} of operand 1 (shape)"))?,
        };
        shape.push(dim);
    }

    // Infer the -1 entry, or check that the sizes agree.
    let total = checked_numel(&data.shape)?;
    let known = shape.iter().try_fold(1usize, |product, &dim| product.checked_mul(dim));
    match (inferred_index, known) {
        (Some(_), Some(0)) => op_bail!(
            "operand 1 (shape) {} resolves to {} with a dimension of 0, so the -1 dimension cannot be inferred",
            format_ints(&target),
            ShapeDisplay(&shape)
        ),
        (Some(index), Some(known)) if total % known == 0 => shape[index] = total / known,
        (Some(_), _) => op_bail!(
            "cannot reshape operand 0 (data) {} with {total} elements to operand 1 (shape) {}, \
             because {total} is not divisible by the product of the other dimensions",
            ShapeDisplay(&data.shape),
            format_ints(&target)
        ),
        (None, Some(known)) if known == total => {}
        (None, _) => op_bail!(
            "cannot reshape operand 0 (data) {} with {total} elements to operand 1 (shape) {}, which resolves to {} \
             with a different number of elements",
            ShapeDisplay(&data.shape),
            format_ints(&target),
            ShapeDisplay(&shape)
        ),
    }
    Ok(vec![Fact::new(data.dtype, shape)])
}

pub(super) fn transpose(operands: &Operands, perm: &[usize]) -> OpResult<Vec<Fact>> {
    let data = operands.required(0)?;
    if perm.len() != data.rank() {
        op_bail!(
            "attribute perm {} has {} entries, but operand 0 (data) {} has rank {}",
            ShapeDisplay(perm),
            perm.len(),
            ShapeDisplay(&data.shape),
            data.rank()
        );
    }
    let mut seen = vec![false; perm.len()];
    for &axis in perm {
        if axis >= perm.len() || seen[axis] {
            op_bail!("attribute perm {} is not a permutation of 0..{}", ShapeDisplay(perm), perm.len());
        }
        seen[axis] = true;
    }
    let shape = perm.iter().map(|&axis| data.shape[axis]).collect();
    Ok(vec![Fact::new(data.dtype, shape)])
}

/// Flatten to 2-D `[prod(dims[..axis]), prod(dims[axis..])]`. Unlike most
/// axes, `axis` may equal the rank, which gives `[numel, 1]`.
pub(super) fn flatten(operands: &Operands, axis: i64) -> OpResult<Vec<Fact>> {
    let data = operands.required(0)?;
    let rank = data.rank() as i64;
    if axis < -rank || axis > rank {
        op_bail!(
            "axis {axis} is out of range for Flatten of a tensor of rank {rank}. Expected a value in {}..={rank}",
            -rank
        );
    }
    let axis = if axis < 0 { axis + rank } else { axis } as usize;
    let outer = checked_numel(&data.shape[..axis])?;
    let inner = checked_numel(&data.shape[axis..])?;
    Ok(vec![Fact::new(data.dtype, vec![outer, inner])])
}

pub(super) fn squeeze(operands: &Operands, axes: Option<&[i64]>) -> OpResult<Vec<Fact>> {
    let data = operands.required(0)?;
    let Some(axes) = axes else {
        let shape = data.shape.iter().copied().filter(|&dim| dim != 1).collect();
        return Ok(vec![Fact::new(data.dtype, shape)]);
    };

    let normalized = axes.iter().map(|&axis| normalize_axis(axis, data.rank())).collect::<OpResult<Vec<_>>>()?;
    check_unique_axes(&normalized, axes, data.rank())?;
    for &axis in &normalized {
        if data.shape[axis] != 1 {
            op_bail!(
                "cannot squeeze axis {axis} of operand 0 (data) {}, because its size is {}, not 1",
                ShapeDisplay(&data.shape),
                data.shape[axis]
            );
        }
    }
    let shape =
        data.shape.iter().enumerate().filter(|(axis, _)| !normalized.contains(axis)).map(|(_, &dim)| dim).collect();
    Ok(vec![Fact::new(data.dtype, shape)])
}

/// Unsqueeze inserts size-1 axes. Each entry of `axes` is an axis of the
/// output, so negative entries count from the end of the output shape.
pub(super) fn unsqueeze(operands: &Operands, axes: &[i64]) -> OpResult<Vec<Fact>> {
    let data = operands.required(0)?;
    let output_rank = data.rank() + axes.len();
    let normalized = axes.iter().map(|&axis| normalize_axis(axis, output_rank)).collect::<OpResult<Vec<_>>>()?;
    check_unique_axes(&normalized, axes, output_rank)?;

    let mut input_dims = data.shape.iter();
    let mut shape = Vec::with_capacity(output_rank);
    for axis in 0..output_rank {
        if normalized.contains(&axis) {
            shape.push(1);
        } else if let Some(&dim) = input_dims.next() {
            shape.push(dim);
        }
    }
    Ok(vec![Fact::new(data.dtype, shape)])
}

/// Expand broadcasts the input shape and the target shape in both directions,
/// so a target dimension of 1 keeps the input dimension.
pub(super) fn expand(operands: &Operands) -> OpResult<Vec<Fact>> {
    let data = operands.required(0)?;
    let target_values = operands.const_ints(1)?;
    let mut target = Vec::with_capacity(target_values.len());
    for (index, &value) in target_values.iter().enumerate() {
        if value < 0 {
            op_bail!(
                "operand 1 (shape) {} contains {value}, but every entry must be non-negative",
                format_ints(&target_values)
            );
        }
        target.push(dim_from_i128(i128::from(value), &format!("entry {index} of operand 1 (shape)"))?);
    }
    let shape = broadcast_shapes(&data.shape, &target).map_err(|e| {
        let context = format!(
            "cannot expand operand 0 (input) {} to operand 1 (shape) {}",
            ShapeDisplay(&data.shape),
            format_ints(&target_values)
        );
        prefix_error(e, &context)
    })?;
    Ok(vec![Fact::new(data.dtype, shape)])
}

pub(super) fn tile(operands: &Operands) -> OpResult<Vec<Fact>> {
    let data = operands.required(0)?;
    let repeats = operands.const_ints(1)?;
    if repeats.len() != data.rank() {
        op_bail!(
            "operand 1 (repeats) {} has {} entries, but operand 0 (input) {} has rank {}",
            format_ints(&repeats),
            repeats.len(),
            ShapeDisplay(&data.shape),
            data.rank()
        );
    }
    let mut shape = Vec::with_capacity(repeats.len());
    for (&dim, &repeat) in data.shape.iter().zip(&repeats) {
        let Ok(repeat) = usize::try_from(repeat) else {
            op_bail!(
                "operand 1 (repeats) {} contains {repeat}, but repeats must be non-negative",
                format_ints(&repeats)
            );
        };
        shape.push(checked_dim_mul(dim, repeat)?);
    }
    Ok(vec![Fact::new(data.dtype, shape)])
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{
        ErrorCase, ShapeCase, check_errors, check_shapes, f32s, fact, ints, unknown_ints,
    };
    use crate::ir::op::Op;
    use crate::tensor::DType;

    fn reshape() -> Op {
        Op::Reshape { allowzero: false }
    }

    #[test]
    fn reshape_shapes() {
        check_shapes(&[
            ShapeCase {
                name: "explicit",
                op: reshape(),
                inputs: vec![f32s(&[2, 3, 4]), ints(&[6, 4])],
                shape: vec![6, 4],
            },
            ShapeCase {
                name: "infer last",
                op: reshape(),
                inputs: vec![f32s(&[1, 197, 768]), ints(&[1, 197, 12, -1])],
                shape: vec![1, 197, 12, 64],
            },
            ShapeCase {
                name: "zero copies",
                op: reshape(),
                inputs: vec![f32s(&[1, 197, 768]), ints(&[0, 0, 12, 64])],
                shape: vec![1, 197, 12, 64],
            },
            ShapeCase {
                name: "zero copy and infer",
                op: reshape(),
                inputs: vec![f32s(&[2, 768, 14, 14]), ints(&[0, 768, -1])],
                shape: vec![2, 768, 196],
            },
            ShapeCase {
                name: "allowzero literal zero",
                op: Op::Reshape { allowzero: true },
                inputs: vec![f32s(&[0, 4]), ints(&[4, 0])],
                shape: vec![4, 0],
            },
            ShapeCase { name: "to scalar", op: reshape(), inputs: vec![f32s(&[1, 1]), ints(&[])], shape: vec![] },
            ShapeCase {
                name: "i32 shape",
                op: reshape(),
                inputs: vec![
                    f32s(&[4]),
                    super::super::test_support::tensor(crate::tensor::Tensor::from_i64s(&[2, 2]).cast(DType::I32)),
                ],
                shape: vec![2, 2],
            },
        ]);
    }

    #[test]
    fn reshape_errors() {
        check_errors(&[
            ErrorCase {
                name: "size mismatch",
                op: reshape(),
                inputs: vec![f32s(&[2, 3]), ints(&[4, 2])],
                message: "cannot reshape operand 0 (data) [2,3] with 6 elements to operand 1 (shape) [4,2]",
            },
            ErrorCase {
                name: "not divisible",
                op: reshape(),
                inputs: vec![f32s(&[2, 3]), ints(&[4, -1])],
                message: "because 6 is not divisible by the product of the other dimensions",
            },
            ErrorCase {
                name: "two inferred",
                op: reshape(),
                inputs: vec![f32s(&[2, 3]), ints(&[-1, -1])],
                message: "contains -1 more than once",
            },
            ErrorCase {
                name: "allowzero with zero and inferred",
                op: Op::Reshape { allowzero: true },
                inputs: vec![f32s(&[0, 3]), ints(&[0, -1])],
                message: "contains both 0 and -1 with allowzero set",
            },
            ErrorCase {
                name: "inferred next to zero",
                op: reshape(),
                inputs: vec![f32s(&[0, 3]), ints(&[0, -1])],
                message: "resolves to [0,1] with a dimension of 0, so the -1 dimension cannot be inferred",
            },
            ErrorCase {
                name: "zero past input rank",
                op: reshape(),
                inputs: vec![f32s(&[6]), ints(&[6, 0])],
                message: "has 0 at index 1, which copies input dimension 1, but operand 0 (data) [6] has rank 1",
            },
            ErrorCase {
                name: "negative entry",
                op: reshape(),
                inputs: vec![f32s(&[6]), ints(&[-2, 3])],
                message: "contains -2, but an entry must be non-negative or -1",
            },
            ErrorCase {
                name: "shape not constant",
                op: reshape(),
                inputs: vec![f32s(&[6]), unknown_ints(2)],
                message: "operand 1 (shape) is not a compile-time constant",
            },
            ErrorCase {
                name: "shape not integer",
                op: reshape(),
                inputs: vec![f32s(&[6]), f32s(&[2])],
                message: "operand 1 (shape) has element type f32, but it must be i64 or i32",
            },
            ErrorCase {
                name: "shape not 1-D",
                op: reshape(),
                inputs: vec![f32s(&[6]), fact(DType::I64, &[1, 2])],
                message: "operand 1 (shape) has shape [1,2], but it must be 1-D",
            },
            ErrorCase {
                name: "overflowing product",
                op: reshape(),
                inputs: vec![f32s(&[6]), ints(&[1 << 40, 1 << 40, -1])],
                message: "is not divisible by the product",
            },
            ErrorCase {
                name: "huge entry",
                op: reshape(),
                inputs: vec![f32s(&[6]), ints(&[i64::MAX])],
                message: "entry 0 of operand 1 (shape) is 9223372036854775807, which exceeds 2^40",
            },
        ]);
    }

    #[test]
    fn layout_shapes() {
        check_shapes(&[
            ShapeCase {
                name: "transpose heads",
                op: Op::Transpose { perm: vec![0, 2, 1, 3] },
                inputs: vec![f32s(&[1, 197, 12, 64])],
                shape: vec![1, 12, 197, 64],
            },
            ShapeCase {
                name: "transpose scalar",
                op: Op::Transpose { perm: vec![] },
                inputs: vec![f32s(&[])],
                shape: vec![],
            },
            ShapeCase {
                name: "flatten middle",
                op: Op::Flatten { axis: 2 },
                inputs: vec![f32s(&[1, 768, 14, 14])],
                shape: vec![768, 196],
            },
            ShapeCase {
                name: "flatten at rank",
                op: Op::Flatten { axis: 2 },
                inputs: vec![f32s(&[2, 3])],
                shape: vec![6, 1],
            },
            ShapeCase {
                name: "flatten at zero",
                op: Op::Flatten { axis: 0 },
                inputs: vec![f32s(&[2, 3])],
                shape: vec![1, 6],
            },
            ShapeCase {
                name: "flatten negative",
                op: Op::Flatten { axis: -1 },
                inputs: vec![f32s(&[2, 3, 4])],
                shape: vec![6, 4],
            },
            ShapeCase {
                name: "squeeze listed",
                op: Op::Squeeze { axes: Some(vec![0, -1]) },
                inputs: vec![f32s(&[1, 3, 1, 1])],
                shape: vec![3, 1],
            },
            ShapeCase {
                name: "squeeze all",
                op: Op::Squeeze { axes: None },
                inputs: vec![f32s(&[1, 3, 1, 5])],
                shape: vec![3, 5],
            },
            ShapeCase {
                name: "squeeze empty list",
                op: Op::Squeeze { axes: Some(vec![]) },
                inputs: vec![f32s(&[1, 3])],
                shape: vec![1, 3],
            },
            ShapeCase {
                name: "unsqueeze front and back",
                op: Op::Unsqueeze { axes: vec![0, -1] },
                inputs: vec![f32s(&[3, 4])],
                shape: vec![1, 3, 4, 1],
            },
            ShapeCase {
                name: "unsqueeze unsorted",
                op: Op::Unsqueeze { axes: vec![3, 1] },
                inputs: vec![f32s(&[3, 4])],
                shape: vec![3, 1, 4, 1],
            },
            ShapeCase {
                name: "unsqueeze scalar",
                op: Op::Unsqueeze { axes: vec![0] },
                inputs: vec![f32s(&[])],
                shape: vec![1],
            },
            ShapeCase {
                name: "expand class token",
                op: Op::Expand,
                inputs: vec![f32s(&[1, 1, 768]), ints(&[4, 1, 768])],
                shape: vec![4, 1, 768],
            },
            ShapeCase {
                name: "expand keeps larger input dims",
                op: Op::Expand,
                inputs: vec![f32s(&[3, 1]), ints(&[2, 1, 6])],
                shape: vec![2, 3, 6],
            },
            ShapeCase { name: "tile", op: Op::Tile, inputs: vec![f32s(&[2, 3]), ints(&[2, 1])], shape: vec![4, 3] },
            ShapeCase {
                name: "tile zero",
                op: Op::Tile,
                inputs: vec![f32s(&[2, 3]), ints(&[0, 1])],
                shape: vec![0, 3],
            },
        ]);
    }

    #[test]
    fn layout_errors() {
        check_errors(&[
            ErrorCase {
                name: "transpose wrong length",
                op: Op::Transpose { perm: vec![1, 0] },
                inputs: vec![f32s(&[2, 3, 4])],
                message: "attribute perm [1,0] has 2 entries, but operand 0 (data) [2,3,4] has rank 3",
            },
            ErrorCase {
                name: "transpose repeated axis",
                op: Op::Transpose { perm: vec![0, 0, 1] },
                inputs: vec![f32s(&[2, 3, 4])],
                message: "attribute perm [0,0,1] is not a permutation of 0..3",
            },
            ErrorCase {
                name: "transpose axis too large",
                op: Op::Transpose { perm: vec![0, 3, 1] },
                inputs: vec![f32s(&[2, 3, 4])],
                message: "is not a permutation",
            },
            ErrorCase {
                name: "flatten axis",
                op: Op::Flatten { axis: 3 },
                inputs: vec![f32s(&[2, 3])],
                message: "axis 3 is out of range for Flatten of a tensor of rank 2. Expected a value in -2..=2",
            },
            ErrorCase {
                name: "squeeze non-1 dim",
                op: Op::Squeeze { axes: Some(vec![1]) },
                inputs: vec![f32s(&[1, 3, 1])],
                message: "cannot squeeze axis 1 of operand 0 (data) [1,3,1], because its size is 3, not 1",
            },
            ErrorCase {
                name: "squeeze axis out of range",
                op: Op::Squeeze { axes: Some(vec![3]) },
                inputs: vec![f32s(&[1, 3, 1])],
                message: "axis 3 is out of range for a tensor of rank 3",
            },
            ErrorCase {
                name: "squeeze duplicate",
                op: Op::Squeeze { axes: Some(vec![0, -3]) },
                inputs: vec![f32s(&[1, 3, 1])],
                message: "axes [0,-3] refer to axis 0 more than once",
            },
            ErrorCase {
                name: "unsqueeze duplicate",
                op: Op::Unsqueeze { axes: vec![1, -3] },
                inputs: vec![f32s(&[3, 4])],
                message: "axes [1,-3] refer to axis 1 more than once (after normalizing negative axes against rank 4)",
            },
            ErrorCase {
                name: "unsqueeze out of range",
                op: Op::Unsqueeze { axes: vec![3] },
                inputs: vec![f32s(&[3, 4])],
                message: "axis 3 is out of range for a tensor of rank 3",
            },
            ErrorCase {
                name: "expand incompatible",
                op: Op::Expand,
                inputs: vec![f32s(&[3, 2]), ints(&[3, 4])],
                message: "cannot expand operand 0 (input) [3,2] to operand 1 (shape) [3,4]: shapes [3,2] and [3,4] cannot be broadcast",
            },
            ErrorCase {
                name: "expand negative",
                op: Op::Expand,
                inputs: vec![f32s(&[3, 2]), ints(&[-1, 2])],
                message: "contains -1, but every entry must be non-negative",
            },
            ErrorCase {
                name: "expand not constant",
                op: Op::Expand,
                inputs: vec![f32s(&[3, 2]), unknown_ints(2)],
                message: "operand 1 (shape) is not a compile-time constant",
            },
            ErrorCase {
                name: "tile length",
                op: Op::Tile,
                inputs: vec![f32s(&[2, 3]), ints(&[2])],
                message: "operand 1 (repeats) [2] has 1 entries, but operand 0 (input) [2,3] has rank 2",
            },
            ErrorCase {
                name: "tile negative",
                op: Op::Tile,
                inputs: vec![f32s(&[2, 3]), ints(&[2, -1])],
                message: "contains -1, but repeats must be non-negative",
            },
            ErrorCase {
                name: "tile overflow",
                op: Op::Tile,
                inputs: vec![f32s(&[2, 3]), ints(&[i64::MAX, 1])],
                message: "exceeds 2^40",
            },
            ErrorCase {
                name: "tile not constant",
                op: Op::Tile,
                inputs: vec![f32s(&[2, 3]), unknown_ints(2)],
                message: "operand 1 (repeats) is not a compile-time constant",
            },
        ]);
    }
}
