//! Conv and ConvTranspose, 1-D and 2-D, with explicit pads.
//!
//! Output sizes per spatial axis, as in the ONNX operator specification:
//!
//! - Conv: `floor((in + pad_begin + pad_end - dilation * (kernel - 1) - 1) / stride) + 1`
//! - ConvTranspose: `stride * (in - 1) + output_padding + (kernel - 1) * dilation + 1 - pad_begin - pad_end`
//!
//! A size below 1 is an error. The arithmetic runs in checked `i128`, so
//! that no attribute value can overflow it.

use super::{Operands, checked_dim_mul, dim_from_i128};
use crate::error::{OpError, OpResult};
use crate::ir::graph::Fact;
use crate::ir::op::{ConvAttrs, ConvTransposeAttrs};
use crate::op_bail;
use crate::tensor::ShapeDisplay;

pub(super) fn conv(operands: &Operands, attrs: &ConvAttrs) -> OpResult<Vec<Fact>> {
    let x = operands.require_float(0)?;
    let weight = operands.required(1)?;
    operands.require_same_dtype(1, 0)?;
    let spatial = spatial_rank(operands, "Conv")?;
    check_attribute_lengths(spatial, &attrs.kernel, &attrs.strides, &attrs.pads, &attrs.dilations)?;

    // Channels: weight is [out_channels, in_channels / group, kernel..].
    let group = check_group(attrs.group)?;
    let (batch, channels) = (x.shape[0], x.shape[1]);
    if channels % group != 0 {
        op_bail!(
            "operand 0 (x) {} has {channels} channels, which is not divisible by group={group}",
            ShapeDisplay(&x.shape)
        );
    }
    let out_channels = weight.shape[0];
    if weight.shape[1] != channels / group {
        op_bail!(
            "operand 1 (weight) has shape {}, but its dimension 1 must be channels / group = {channels} / {group} = {} \
             for operand 0 (x) {}",
            ShapeDisplay(&weight.shape),
            channels / group,
            ShapeDisplay(&x.shape)
        );
    }
    if out_channels % group != 0 {
        op_bail!(
            "operand 1 (weight) {} has {out_channels} output channels, which is not divisible by group={group}",
            ShapeDisplay(&weight.shape)
        );
    }
    check_kernel(&attrs.kernel, &weight.shape)?;
    check_bias(operands, 2, out_channels)?;

    // Spatial output sizes.
    let mut shape = vec![batch, out_channels];
    for axis in 0..spatial {
        let input = wide(x.shape[2 + axis]);
        let padded = input + wide(attrs.pads[axis]) + wide(attrs.pads[spatial + axis]);
        let dilated_kernel = dilated_kernel_size(attrs.kernel[axis], attrs.dilations[axis])?;
        let size = (padded - dilated_kernel).div_euclid(wide(attrs.strides[axis])) + 1;
        if size < 1 {
            op_bail!(
                "spatial axis {axis} would have output size {size}, because the input size {} plus pads {}+{} \
                 is smaller than the dilated kernel size {dilated_kernel}",
                x.shape[2 + axis],
                attrs.pads[axis],
                attrs.pads[spatial + axis]
            );
        }
        shape.push(dim_from_i128(size, &format!("the output size of spatial axis {axis}"))?);
    }
    Ok(vec![Fact::new(x.dtype, shape)])
}

pub(super) fn conv_transpose(operands: &Operands, attrs: &ConvTransposeAttrs) -> OpResult<Vec<Fact>> {
    let x = operands.require_float(0)?;
    let weight = operands.required(1)?;
    operands.require_same_dtype(1, 0)?;
    let spatial = spatial_rank(operands, "ConvTranspose")?;
    check_attribute_lengths(spatial, &attrs.kernel, &attrs.strides, &attrs.pads, &attrs.dilations)?;
    if attrs.output_padding.len() != spatial {
        op_bail!(
            "attribute output_padding {} has {} entries, but a {spatial}-D convolution needs {spatial}",
            ShapeDisplay(&attrs.output_padding),
            attrs.output_padding.len()
        );
    }

    // Channels: weight is [in_channels, out_channels / group, kernel..].
    let group = check_group(attrs.group)?;
    let (batch, channels) = (x.shape[0], x.shape[1]);
    if weight.shape[0] != channels {
        op_bail!(
            "operand 1 (weight) has shape {}, but its dimension 0 must be the {channels} channels of operand 0 (x) {}",
            ShapeDisplay(&weight.shape),
            ShapeDisplay(&x.shape)
        );
    }
    if channels % group != 0 {
        op_bail!(
            "operand 0 (x) {} has {channels} channels, which is not divisible by group={group}",
            ShapeDisplay(&x.shape)
        );
    }
    let out_channels = checked_dim_mul(weight.shape[1], group)?;
    check_kernel(&attrs.kernel, &weight.shape)?;
    check_bias(operands, 2, out_channels)?;

    let mut shape = vec![batch, out_channels];
    shape.extend(transposed_spatial(attrs, &x.shape[2..])?);
    Ok(vec![Fact::new(x.dtype, shape)])
}

/// Spatial output sizes of a transposed convolution over spatial input
/// sizes `input`, shared by ConvTranspose and Col2im.
fn transposed_spatial(attrs: &ConvTransposeAttrs, input: &[usize]) -> OpResult<Vec<usize>> {
    let spatial = input.len();
    let mut shape = Vec::with_capacity(spatial);
    for (axis, &size_in) in input.iter().enumerate() {
        let (stride, dilation, output_padding) =
            (attrs.strides[axis], attrs.dilations[axis], attrs.output_padding[axis]);
        let strided_input = overflow_checked(wide(stride).checked_mul(wide(size_in) - 1))?;
        let dilated_kernel = dilated_kernel_size(attrs.kernel[axis], dilation)?;
        let unpadded = strided_input.checked_add(dilated_kernel).and_then(|sum| sum.checked_add(wide(output_padding)));
        let unpadded = overflow_checked(unpadded)?;
        let size = unpadded - wide(attrs.pads[axis]) - wide(attrs.pads[spatial + axis]);
        if size < 1 {
            op_bail!(
                "spatial axis {axis} would have output size {size}, because pads {}+{} remove more than \
                 the transposed convolution produces from input size {}",
                attrs.pads[axis],
                attrs.pads[spatial + axis],
                size_in
            );
        }
        shape.push(dim_from_i128(size, &format!("the output size of spatial axis {axis}"))?);
    }
    Ok(shape)
}

/// `Col2im(cols, bias?)`: `cols` is `[N, spatial.., M * prod(kernel)]`.
pub(super) fn col2im(operands: &Operands, attrs: &ConvTransposeAttrs) -> OpResult<Vec<Fact>> {
    let cols = operands.require_float(0)?;
    if cols.rank() != 3 && cols.rank() != 4 {
        op_bail!(
            "operand 0 (cols) has shape {}, but Col2im supports [N, W, M * kernel] and [N, H, W, M * kernel] only",
            ShapeDisplay(&cols.shape)
        );
    }
    let spatial = cols.rank() - 2;
    check_attribute_lengths(spatial, &attrs.kernel, &attrs.strides, &attrs.pads, &attrs.dilations)?;
    if attrs.output_padding.len() != spatial || attrs.group != 1 {
        op_bail!(
            "attribute output_padding {} must have {spatial} entries and group ({}) must be 1",
            ShapeDisplay(&attrs.output_padding),
            attrs.group
        );
    }
    let taps: usize = attrs.kernel.iter().product();
    let columns = cols.shape[cols.rank() - 1];
    if columns % taps != 0 {
        op_bail!(
            "operand 0 (cols) has {columns} columns, which is not a multiple of the {taps} taps of kernel {}",
            ShapeDisplay(&attrs.kernel)
        );
    }
    let channels = columns / taps;
    check_bias(operands, 1, channels)?;
    let mut shape = vec![cols.shape[0], channels];
    shape.extend(transposed_spatial(attrs, &cols.shape[1..=spatial])?);
    Ok(vec![Fact::new(cols.dtype, shape)])
}

/// Returns the number of spatial axes (1 or 2) after checking that `x` and
/// `weight` have the same rank, 3 or 4.
fn spatial_rank(operands: &Operands, op_name: &str) -> OpResult<usize> {
    let x = operands.required(0)?;
    let weight = operands.required(1)?;
    if x.rank() != 3 && x.rank() != 4 {
        op_bail!(
            "operand 0 (x) has shape {}, but {op_name} supports 1-D and 2-D inputs [N, C, W] and [N, C, H, W] only",
            ShapeDisplay(&x.shape)
        );
    }
    if weight.rank() != x.rank() {
        op_bail!(
            "operand 1 (weight) has shape {}, but its rank must be {} like that of operand 0 (x) {}",
            ShapeDisplay(&weight.shape),
            x.rank(),
            ShapeDisplay(&x.shape)
        );
    }
    Ok(x.rank() - 2)
}

fn check_attribute_lengths(
    spatial: usize,
    kernel: &[usize],
    strides: &[usize],
    pads: &[usize],
    dilations: &[usize],
) -> OpResult<()> {
    let attributes = [
        ("kernel", kernel, spatial),
        ("strides", strides, spatial),
        ("dilations", dilations, spatial),
        ("pads", pads, 2 * spatial),
    ];
    for (name, values, expected) in attributes {
        if values.len() != expected {
            op_bail!(
                "attribute {name} {} has {} entries, but a {spatial}-D convolution needs {expected}",
                ShapeDisplay(values),
                values.len()
            );
        }
    }
    for (name, values) in [("kernel", kernel), ("strides", strides), ("dilations", dilations)] {
        if values.contains(&0) {
            op_bail!("attribute {name} {} contains 0, but every entry must be at least 1", ShapeDisplay(values));
        }
    }
    Ok(())
}

fn check_group(group: usize) -> OpResult<usize> {
    if group == 0 {
        op_bail!("attribute group is 0, but it must be at least 1");
    }
    Ok(group)
}

/// Checks the kernel attribute against the spatial dimensions of the weight.
fn check_kernel(kernel: &[usize], weight_shape: &[usize]) -> OpResult<()> {
    let weight_kernel = &weight_shape[2..];
    if kernel != weight_kernel {
        op_bail!(
            "attribute kernel {} does not match operand 1 (weight) {}, whose kernel is {}",
            ShapeDisplay(kernel),
            ShapeDisplay(weight_shape),
            ShapeDisplay(weight_kernel)
        );
    }
    Ok(())
}

fn check_bias(operands: &Operands, slot: usize, out_channels: usize) -> OpResult<()> {
    let Some(bias) = operands.get(slot) else { return Ok(()) };
    operands.require_same_dtype(slot, 0)?;
    if bias.shape != [out_channels] {
        op_bail!(
            "operand {slot} (bias) has shape {}, but expected [{out_channels}], one value per output channel",
            ShapeDisplay(&bias.shape)
        );
    }
    Ok(())
}

/// Returns `dilation * (kernel - 1) + 1`, the extent of a dilated kernel.
/// `kernel` is at least 1, as `check_attribute_lengths` ensures.
fn dilated_kernel_size(kernel: usize, dilation: usize) -> OpResult<i128> {
    let product = overflow_checked(wide(dilation).checked_mul(wide(kernel) - 1))?;
    overflow_checked(product.checked_add(1))
}

fn wide(value: usize) -> i128 {
    value as i128
}

fn overflow_checked(value: Option<i128>) -> OpResult<i128> {
    value.ok_or_else(|| {
        OpError::new("the kernel, stride or dilation attributes are too large to compute the output size")
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ErrorCase, ShapeCase, check_errors, check_shapes, f32s, fact};
    use crate::ir::op::{ConvAttrs, ConvTransposeAttrs, Op};
    use crate::tensor::DType;

    fn conv2d(kernel: usize, stride: usize, pad: usize, group: usize) -> Op {
        Op::Conv(ConvAttrs {
            kernel: vec![kernel, kernel],
            strides: vec![stride, stride],
            pads: vec![pad; 4],
            dilations: vec![1, 1],
            group,
        })
    }

    fn conv_transpose2d(kernel: usize, stride: usize, pad: usize, output_padding: usize, group: usize) -> Op {
        Op::ConvTranspose(ConvTransposeAttrs {
            kernel: vec![kernel, kernel],
            strides: vec![stride, stride],
            pads: vec![pad; 4],
            dilations: vec![1, 1],
            output_padding: vec![output_padding; 2],
            group,
        })
    }

    #[test]
    fn conv_shapes() {
        check_shapes(&[
            ShapeCase {
                name: "vit patch embedding",
                op: conv2d(16, 16, 0, 1),
                inputs: vec![f32s(&[1, 3, 224, 224]), f32s(&[768, 3, 16, 16]), f32s(&[768])],
                shape: vec![1, 768, 14, 14],
            },
            ShapeCase {
                name: "same padding",
                op: conv2d(3, 1, 1, 1),
                inputs: vec![f32s(&[2, 8, 7, 9]), f32s(&[4, 8, 3, 3])],
                shape: vec![2, 4, 7, 9],
            },
            ShapeCase {
                name: "stride rounds down",
                op: conv2d(3, 2, 0, 1),
                inputs: vec![f32s(&[1, 1, 8, 8]), f32s(&[1, 1, 3, 3])],
                shape: vec![1, 1, 3, 3],
            },
            ShapeCase {
                name: "depthwise",
                op: conv2d(3, 1, 1, 32),
                inputs: vec![f32s(&[1, 32, 10, 10]), f32s(&[32, 1, 3, 3]), f32s(&[32])],
                shape: vec![1, 32, 10, 10],
            },
            ShapeCase {
                name: "1-D dilated asymmetric pads",
                op: Op::Conv(ConvAttrs {
                    kernel: vec![3],
                    strides: vec![1],
                    pads: vec![2, 0],
                    dilations: vec![2],
                    group: 1,
                }),
                inputs: vec![f32s(&[1, 4, 10]), f32s(&[6, 4, 3])],
                shape: vec![1, 6, 8],
            },
            ShapeCase {
                name: "transpose doubles",
                op: conv_transpose2d(4, 2, 1, 0, 1),
                inputs: vec![f32s(&[1, 16, 7, 7]), f32s(&[16, 8, 4, 4]), f32s(&[8])],
                shape: vec![1, 8, 14, 14],
            },
            ShapeCase {
                name: "transpose output padding",
                op: conv_transpose2d(3, 2, 1, 1, 1),
                inputs: vec![f32s(&[1, 4, 5, 5]), f32s(&[4, 2, 3, 3])],
                shape: vec![1, 2, 10, 10],
            },
            ShapeCase {
                name: "transpose grouped",
                op: conv_transpose2d(2, 2, 0, 0, 2),
                inputs: vec![f32s(&[1, 4, 3, 3]), f32s(&[4, 3, 2, 2]), f32s(&[6])],
                shape: vec![1, 6, 6, 6],
            },
        ]);
    }

    #[test]
    fn conv_errors() {
        check_errors(&[
            ErrorCase {
                name: "channel mismatch",
                op: conv2d(16, 16, 0, 1),
                inputs: vec![f32s(&[1, 4, 224, 224]), f32s(&[768, 3, 16, 16])],
                message: "operand 1 (weight) has shape [768,3,16,16], but its dimension 1 must be channels / group = 4 / 1 = 4",
            },
            ErrorCase {
                name: "channels not divisible by group",
                op: conv2d(3, 1, 1, 2),
                inputs: vec![f32s(&[1, 3, 8, 8]), f32s(&[4, 1, 3, 3])],
                message: "has 3 channels, which is not divisible by group=2",
            },
            ErrorCase {
                name: "output channels not divisible by group",
                op: conv2d(3, 1, 1, 2),
                inputs: vec![f32s(&[1, 4, 8, 8]), f32s(&[3, 2, 3, 3])],
                message: "has 3 output channels, which is not divisible by group=2",
            },
            ErrorCase {
                name: "group zero",
                op: conv2d(3, 1, 1, 0),
                inputs: vec![f32s(&[1, 4, 8, 8]), f32s(&[4, 4, 3, 3])],
                message: "attribute group is 0",
            },
            ErrorCase {
                name: "kernel attribute mismatch",
                op: conv2d(16, 16, 0, 1),
                inputs: vec![f32s(&[1, 3, 224, 224]), f32s(&[768, 3, 14, 14])],
                message: "attribute kernel [16,16] does not match operand 1 (weight) [768,3,14,14], whose kernel is [14,14]",
            },
            ErrorCase {
                name: "weight rank",
                op: conv2d(3, 1, 1, 1),
                inputs: vec![f32s(&[1, 3, 8, 8]), f32s(&[4, 3, 3])],
                message: "operand 1 (weight) has shape [4,3,3], but its rank must be 4",
            },
            ErrorCase {
                name: "3-D convolution",
                op: conv2d(3, 1, 1, 1),
                inputs: vec![f32s(&[1, 3, 8, 8, 8]), f32s(&[4, 3, 3, 3, 3])],
                message: "operand 0 (x) has shape [1,3,8,8,8], but Conv supports 1-D and 2-D inputs",
            },
            ErrorCase {
                name: "strides length",
                op: Op::Conv(ConvAttrs {
                    kernel: vec![3, 3],
                    strides: vec![1],
                    pads: vec![0; 4],
                    dilations: vec![1, 1],
                    group: 1,
                }),
                inputs: vec![f32s(&[1, 3, 8, 8]), f32s(&[4, 3, 3, 3])],
                message: "attribute strides [1] has 1 entries, but a 2-D convolution needs 2",
            },
            ErrorCase {
                name: "pads length",
                op: Op::Conv(ConvAttrs {
                    kernel: vec![3, 3],
                    strides: vec![1, 1],
                    pads: vec![0; 2],
                    dilations: vec![1, 1],
                    group: 1,
                }),
                inputs: vec![f32s(&[1, 3, 8, 8]), f32s(&[4, 3, 3, 3])],
                message: "attribute pads [0,0] has 2 entries, but a 2-D convolution needs 4",
            },
            ErrorCase {
                name: "zero stride",
                op: conv2d(3, 0, 1, 1),
                inputs: vec![f32s(&[1, 3, 8, 8]), f32s(&[4, 3, 3, 3])],
                message: "attribute strides [0,0] contains 0",
            },
            ErrorCase {
                name: "kernel larger than input",
                op: conv2d(5, 1, 0, 1),
                inputs: vec![f32s(&[1, 3, 4, 4]), f32s(&[4, 3, 5, 5])],
                message: "spatial axis 0 would have output size 0",
            },
            ErrorCase {
                name: "bias shape",
                op: conv2d(3, 1, 1, 1),
                inputs: vec![f32s(&[1, 3, 8, 8]), f32s(&[4, 3, 3, 3]), f32s(&[3])],
                message: "operand 2 (bias) has shape [3], but expected [4]",
            },
            ErrorCase {
                name: "weight dtype",
                op: conv2d(3, 1, 1, 1),
                inputs: vec![f32s(&[1, 3, 8, 8]), fact(DType::F16, &[4, 3, 3, 3])],
                message: "operand 1 (weight) has element type f16",
            },
            ErrorCase {
                name: "integer input",
                op: conv2d(3, 1, 1, 1),
                inputs: vec![fact(DType::I8, &[1, 3, 8, 8]), fact(DType::I8, &[4, 3, 3, 3])],
                message: "operand 0 (x) has element type i8",
            },
            ErrorCase {
                name: "huge dilation",
                op: Op::Conv(ConvAttrs {
                    kernel: vec![3],
                    strides: vec![1],
                    pads: vec![0, 0],
                    dilations: vec![usize::MAX],
                    group: 1,
                }),
                inputs: vec![f32s(&[1, 1, 8]), f32s(&[1, 1, 3])],
                message: "would have output size",
            },
            ErrorCase {
                name: "transpose weight channels",
                op: conv_transpose2d(4, 2, 1, 0, 1),
                inputs: vec![f32s(&[1, 16, 7, 7]), f32s(&[8, 16, 4, 4])],
                message: "operand 1 (weight) has shape [8,16,4,4], but its dimension 0 must be the 16 channels",
            },
            ErrorCase {
                name: "transpose channels not divisible by group",
                op: conv_transpose2d(2, 2, 0, 0, 2),
                inputs: vec![f32s(&[1, 3, 4, 4]), f32s(&[3, 1, 2, 2])],
                message: "has 3 channels, which is not divisible by group=2",
            },
            ErrorCase {
                name: "transpose non-positive output",
                op: conv_transpose2d(1, 1, 1, 0, 1),
                inputs: vec![f32s(&[1, 4, 1, 1]), f32s(&[4, 2, 1, 1])],
                message: "spatial axis 0 would have output size -1",
            },
            ErrorCase {
                name: "transpose bias",
                op: conv_transpose2d(2, 2, 0, 0, 2),
                inputs: vec![f32s(&[1, 4, 3, 3]), f32s(&[4, 3, 2, 2]), f32s(&[3])],
                message: "operand 2 (bias) has shape [3], but expected [6]",
            },
            ErrorCase {
                name: "transpose output padding length",
                op: Op::ConvTranspose(ConvTransposeAttrs {
                    kernel: vec![2, 2],
                    strides: vec![2, 2],
                    pads: vec![0; 4],
                    dilations: vec![1, 1],
                    output_padding: vec![0],
                    group: 1,
                }),
                inputs: vec![f32s(&[1, 4, 3, 3]), f32s(&[4, 3, 2, 2])],
                message: "attribute output_padding [0] has 1 entries",
            },
        ]);
    }
}
