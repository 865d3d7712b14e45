//! Resize, with the opset-18 `axes` attribute already folded into full-rank
//! `scales` or `sizes` by the importer.

use super::{MAX_ELEMENTS, Operands, format_ints};
use crate::error::OpResult;
use crate::ir::graph::Fact;
use crate::ir::op::{CoordinateTransform, ResizeAttrs, ResizeMode};
use crate::op_bail;
use crate::tensor::ShapeDisplay;

/// Resize: each output dimension is `sizes[i]`, or `floor(in[i] * scales[i])`.
/// Exactly one of `scales` and `sizes` must be given. An empty tensor counts
/// as absent, because exporters for opsets 11 to 12 pass an empty `scales`
/// next to `sizes`.
///
/// NOTE: empty inputs and output sizes of 0 are rejected although ONNX
/// permits them, because the coordinate transforms divide by the scale
/// `out / in`, which is then 0 or undefined.
pub(super) fn resize(operands: &Operands, attrs: &ResizeAttrs) -> OpResult<Vec<Fact>> {
    let x = match attrs.mode {
        ResizeMode::Nearest => operands.required(0)?,
        ResizeMode::Linear | ResizeMode::Cubic => operands.require_numeric(0)?,
    };
    let rank = x.rank();
    if rank == 0 {
        op_bail!("operand 0 (x) is a scalar, but Resize needs at least one axis");
    }
    if x.shape.contains(&0) {
        op_bail!("operand 0 (x) {} is empty, so there are no values to interpolate", ShapeDisplay(&x.shape));
    }

    // The region of interest is read only by tf_crop_and_resize.
    if attrs.coordinate_transform == CoordinateTransform::TfCropAndResize {
        let Some(roi) = operands.get(1) else {
            op_bail!("operand 1 (roi) is missing, but coordinate_transform TfCropAndResize needs it");
        };
        operands.require_float(1)?;
        if roi.shape != [2 * rank] {
            op_bail!(
                "operand 1 (roi) has shape {}, but expected [{}], a start and an end for each axis of operand 0 (x) {}",
                ShapeDisplay(&roi.shape),
                2 * rank,
                ShapeDisplay(&x.shape)
            );
        }
    }

    let is_given = |slot: usize| operands.get(slot).is_some_and(|fact| fact.shape.iter().product::<usize>() != 0);
    let shape = match (is_given(2), is_given(3)) {
        (true, true) => {
            op_bail!("operand 2 (scales) and operand 3 (sizes) are both given, but only one of them may be")
        }
        (false, false) => {
            op_bail!("neither operand 2 (scales) nor operand 3 (sizes) is given, but one of them is required")
        }
        (true, false) => shape_from_scales(operands, &x.shape)?,
        (false, true) => shape_from_sizes(operands, &x.shape)?,
    };
    Ok(vec![Fact::new(x.dtype, shape)])
}

fn shape_from_scales(operands: &Operands, input: &[usize]) -> OpResult<Vec<usize>> {
    let fact = operands.require_float(2)?;
    if fact.shape != [input.len()] {
        op_bail!(
            "operand 2 (scales) has shape {}, but expected [{}], one scale per axis of operand 0 (x) {}",
            ShapeDisplay(&fact.shape),
            input.len(),
            ShapeDisplay(input)
        );
    }
    let Some(data) = &fact.konst else {
        op_bail!("{}", operands.not_constant_message(2));
    };
    let scales = data.to_f64_vec();

    let mut shape = Vec::with_capacity(input.len());
    for (axis, (&dim, &scale)) in input.iter().zip(&scales).enumerate() {
        if !(scale > 0.0 && scale.is_finite()) {
            op_bail!("operand 2 (scales) {scales:?} contains {scale}, but every scale must be positive and finite");
        }
        let size = (dim as f64 * scale).floor();
        if size < 1.0 {
            op_bail!("scale {scale} for axis {axis} of size {dim} gives output size 0, but it must be at least 1");
        }
        if size > MAX_ELEMENTS as f64 {
            op_bail!("scale {scale} for axis {axis} of size {dim} gives output size {size}, more than 2^40");
        }
        shape.push(size as usize);
    }
    Ok(shape)
}

fn shape_from_sizes(operands: &Operands, input: &[usize]) -> OpResult<Vec<usize>> {
    let sizes = operands.const_ints(3)?;
    if sizes.len() != input.len() {
        op_bail!(
            "operand 3 (sizes) {} has {} entries, but operand 0 (x) {} has rank {}",
            format_ints(&sizes),
            sizes.len(),
            ShapeDisplay(input),
            input.len()
        );
    }
    let mut shape = Vec::with_capacity(sizes.len());
    for &size in &sizes {
        match usize::try_from(size) {
            Ok(size) if (1..=MAX_ELEMENTS).contains(&size) => shape.push(size),
            _ => op_bail!(
                "operand 3 (sizes) {} contains {size}, but every size must be in 1..=2^40",
                format_ints(&sizes)
            ),
        }
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::super::test_support::{
        ErrorCase, ShapeCase, check_errors, check_shapes, f32s, fact, ints, tensor, unknown_ints,
    };
    use crate::ir::graph::Fact;
    use crate::ir::op::{CoordinateTransform, NearestMode, Op, ResizeAttrs, ResizeMode};
    use crate::tensor::{DType, Tensor};

    fn resize(mode: ResizeMode, coordinate_transform: CoordinateTransform) -> Op {
        Op::Resize(ResizeAttrs {
            mode,
            coordinate_transform,
            nearest_mode: NearestMode::RoundPreferFloor,
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
        })
    }

    fn linear() -> Op {
        resize(ResizeMode::Linear, CoordinateTransform::HalfPixel)
    }

    fn floats(values: &[f32]) -> Option<Fact> {
        tensor(Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[values.len()]), values.to_vec()).unwrap_or_default()))
    }

    #[test]
    fn resize_shapes() {
        check_shapes(&[
            ShapeCase {
                name: "scales double",
                op: linear(),
                inputs: vec![f32s(&[1, 3, 14, 14]), None, floats(&[1.0, 1.0, 2.0, 2.0])],
                shape: vec![1, 3, 28, 28],
            },
            ShapeCase {
                name: "scales round down",
                op: linear(),
                inputs: vec![f32s(&[1, 3, 7, 5]), None, floats(&[1.0, 1.0, 0.5, 1.5])],
                shape: vec![1, 3, 3, 7],
            },
            ShapeCase {
                name: "sizes position embedding",
                op: resize(ResizeMode::Cubic, CoordinateTransform::AlignCorners),
                inputs: vec![f32s(&[1, 768, 14, 14]), None, None, ints(&[1, 768, 16, 16])],
                shape: vec![1, 768, 16, 16],
            },
            ShapeCase {
                name: "empty scales next to sizes",
                op: resize(ResizeMode::Nearest, CoordinateTransform::Asymmetric),
                inputs: vec![f32s(&[1, 3, 4, 4]), floats(&[]), floats(&[]), ints(&[1, 3, 8, 2])],
                shape: vec![1, 3, 8, 2],
            },
            ShapeCase {
                name: "nearest on bools",
                op: resize(ResizeMode::Nearest, CoordinateTransform::Asymmetric),
                inputs: vec![fact(DType::Bool, &[2, 2]), None, floats(&[2.0, 2.0])],
                shape: vec![4, 4],
            },
            ShapeCase {
                name: "crop and resize with roi",
                op: resize(ResizeMode::Linear, CoordinateTransform::TfCropAndResize),
                inputs: vec![f32s(&[1, 4, 4]), floats(&[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]), None, ints(&[1, 2, 2])],
                shape: vec![1, 2, 2],
            },
        ]);
    }

    #[test]
    fn resize_errors() {
        check_errors(&[
            ErrorCase {
                name: "both scales and sizes",
                op: linear(),
                inputs: vec![f32s(&[1, 3, 4, 4]), None, floats(&[1.0, 1.0, 2.0, 2.0]), ints(&[1, 3, 8, 8])],
                message: "operand 2 (scales) and operand 3 (sizes) are both given",
            },
            ErrorCase {
                name: "neither scales nor sizes",
                op: linear(),
                inputs: vec![f32s(&[1, 3, 4, 4]), None, floats(&[])],
                message: "neither operand 2 (scales) nor operand 3 (sizes) is given",
            },
            ErrorCase {
                name: "scales length",
                op: linear(),
                inputs: vec![f32s(&[1, 3, 4, 4]), None, floats(&[2.0, 2.0])],
                message: "operand 2 (scales) has shape [2], but expected [4]",
            },
            ErrorCase {
                name: "scale not positive",
                op: linear(),
                inputs: vec![f32s(&[1, 3, 4, 4]), None, floats(&[1.0, 1.0, 0.0, 2.0])],
                message: "contains 0, but every scale must be positive and finite",
            },
            ErrorCase {
                name: "scale gives zero",
                op: linear(),
                inputs: vec![f32s(&[1, 3, 4, 4]), None, floats(&[1.0, 1.0, 0.1, 1.0])],
                message: "for axis 2 of size 4 gives output size 0",
            },
            ErrorCase {
                name: "scale too large",
                op: linear(),
                inputs: vec![f32s(&[1, 3, 4, 4]), None, floats(&[1.0, 1.0, 1e30, 1.0])],
                message: "more than 2^40",
            },
            ErrorCase {
                name: "scales not constant",
                op: linear(),
                inputs: vec![f32s(&[1, 3, 4, 4]), None, f32s(&[4])],
                message: "operand 2 (scales) is not a compile-time constant",
            },
            ErrorCase {
                name: "scales not float",
                op: linear(),
                inputs: vec![f32s(&[1, 3, 4, 4]), None, ints(&[1, 1, 2, 2])],
                message: "operand 2 (scales) has element type i64",
            },
            ErrorCase {
                name: "sizes length",
                op: linear(),
                inputs: vec![f32s(&[1, 3, 4, 4]), None, None, ints(&[8, 8])],
                message: "operand 3 (sizes) [8,8] has 2 entries, but operand 0 (x) [1,3,4,4] has rank 4",
            },
            ErrorCase {
                name: "sizes zero",
                op: linear(),
                inputs: vec![f32s(&[1, 3, 4, 4]), None, None, ints(&[1, 3, 0, 8])],
                message: "contains 0, but every size must be in 1..=2^40",
            },
            ErrorCase {
                name: "sizes not constant",
                op: linear(),
                inputs: vec![f32s(&[1, 3, 4, 4]), None, None, unknown_ints(4)],
                message: "operand 3 (sizes) is not a compile-time constant",
            },
            ErrorCase {
                name: "crop and resize without roi",
                op: resize(ResizeMode::Linear, CoordinateTransform::TfCropAndResize),
                inputs: vec![f32s(&[1, 4, 4]), None, None, ints(&[1, 2, 2])],
                message: "operand 1 (roi) is missing",
            },
            ErrorCase {
                name: "roi length",
                op: resize(ResizeMode::Linear, CoordinateTransform::TfCropAndResize),
                inputs: vec![f32s(&[1, 4, 4]), floats(&[0.0, 1.0]), None, ints(&[1, 2, 2])],
                message: "operand 1 (roi) has shape [2], but expected [6]",
            },
            ErrorCase {
                name: "linear on bools",
                op: linear(),
                inputs: vec![fact(DType::Bool, &[2, 2]), None, floats(&[2.0, 2.0])],
                message: "operand 0 (x) has element type bool",
            },
            ErrorCase {
                name: "scalar input",
                op: linear(),
                inputs: vec![f32s(&[]), None, floats(&[])],
                message: "operand 0 (x) is a scalar",
            },
            ErrorCase {
                name: "empty input",
                op: linear(),
                inputs: vec![f32s(&[1, 0]), None, floats(&[1.0, 2.0])],
                message: "operand 0 (x) [1,0] is empty",
            },
        ]);
    }
}
