//! `Resize`.
//!
//! Opset notes: opset 10 takes `(X, scales)` and always uses the asymmetric
//! coordinate transform; 11 adds `roi` and `sizes` operands and the
//! `coordinate_transformation_mode`, `cubic_coeff_a`, `exclude_outside`,
//! `extrapolation_value` and `nearest_mode` attributes; 18 adds `axes`,
//! `antialias` and `keep_aspect_ratio_policy`. Empty `roi`/`scales` tensors,
//! which exporters use as placeholders, count as absent. Scales or sizes
//! given for a subset of `axes` are spread to full rank here.

use crate::error::Result;
use crate::ir::Op;
use crate::ir::op::{CoordinateTransform, NearestMode, ResizeAttrs, ResizeMode};
use crate::onnx::import::NodeCx;
use crate::tensor::Tensor;

pub(super) fn import(cx: &mut NodeCx) -> Result<()> {
    let attrs = attributes(cx)?;
    let x = cx.input(0)?;
    let rank = cx.fact(x).rank();

    let (roi, scales, sizes) = if cx.opset() < 11 {
        (None, present(cx, 1), None)
    } else {
        (present(cx, 1), present(cx, 2), present(cx, 3))
    };
    let axes = cx.attrs.ints_opt("axes")?;
    let (roi, scales, sizes) = match axes {
        Some(axes) => spread_to_rank(cx, &axes, rank, roi, scales, sizes)?,
        None => (roi, scales, sizes),
    };
    cx.emit(Op::Resize(attrs), vec![Some(x), roi, scales, sizes])
}

fn attributes(cx: &NodeCx) -> Result<ResizeAttrs> {
    if cx.attrs.bool("antialias", false)? {
        return Err(cx.err("antialias=1 is not supported"));
    }
    let policy = cx.attrs.string("keep_aspect_ratio_policy", "stretch")?;
    if policy != "stretch" {
        return Err(cx.err(format!("keep_aspect_ratio_policy '{policy}' is not supported; only 'stretch' is")));
    }
    let mode = match cx.attrs.string("mode", "nearest")?.as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" | "bilinear" | "trilinear" => ResizeMode::Linear,
        "cubic" | "bicubic" => ResizeMode::Cubic,
        other => return Err(cx.err(format!("mode '{other}' is not one of nearest, linear, cubic"))),
    };
    let default_transform = if cx.opset() < 11 { "asymmetric" } else { "half_pixel" };
    let coordinate_transform = match cx.attrs.string("coordinate_transformation_mode", default_transform)?.as_str() {
        "half_pixel" => CoordinateTransform::HalfPixel,
        "half_pixel_symmetric" => CoordinateTransform::HalfPixelSymmetric,
        "pytorch_half_pixel" => CoordinateTransform::PytorchHalfPixel,
        "align_corners" => CoordinateTransform::AlignCorners,
        "asymmetric" => CoordinateTransform::Asymmetric,
        "tf_crop_and_resize" => CoordinateTransform::TfCropAndResize,
        other => return Err(cx.err(format!("coordinate_transformation_mode '{other}' is not supported"))),
    };
    let nearest_mode = match cx.attrs.string("nearest_mode", "round_prefer_floor")?.as_str() {
        "round_prefer_floor" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        other => return Err(cx.err(format!("nearest_mode '{other}' is not supported"))),
    };
    Ok(ResizeAttrs {
        mode,
        coordinate_transform,
        nearest_mode,
        cubic_coeff_a: cx.attrs.float("cubic_coeff_a", -0.75)?,
        exclude_outside: cx.attrs.bool("exclude_outside", false)?,
        extrapolation_value: cx.attrs.float("extrapolation_value", 0.0)?,
    })
}

/// Operand `i` unless it is absent or an empty placeholder tensor.
fn present(cx: &NodeCx, i: usize) -> Option<crate::ir::ValueId> {
    cx.opt_input(i).filter(|&v| cx.fact(v).numel() > 0)
}

type Operand = Option<crate::ir::ValueId>;

/// Expands `roi`, `scales` and `sizes` given for `axes` to every axis:
/// other axes keep their size, scale 1 and the full region [0, 1].
fn spread_to_rank(
    cx: &mut NodeCx,
    axes: &[i64],
    rank: usize,
    roi: Operand,
    scales: Operand,
    sizes: Operand,
) -> Result<(Operand, Operand, Operand)> {
    let mut axes_norm = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = if a < 0 { a + rank as i64 } else { a };
        if n < 0 || n >= rank as i64 {
            return Err(cx.err(format!("axis {a} is out of range for rank {rank}")));
        }
        axes_norm.push(n as usize);
    }
    let shape = cx.fact(cx.input(0)?).shape.clone();
    let roi = match roi {
        None => None,
        Some(_) => {
            let given = cx.const_input(1, "roi")?.expect("operand 1 is present");
            let dtype = given.dtype();
            let given = given.to_f64_vec();
            if given.len() != 2 * axes_norm.len() {
                return Err(cx.err(format!("roi has {} entries, expected twice the {} axes", given.len(), axes_norm.len())));
            }
            let mut full = vec![0.0f32; 2 * rank];
            full[rank..].iter_mut().for_each(|end| *end = 1.0);
            for (i, &a) in axes_norm.iter().enumerate() {
                full[a] = given[i] as f32;
                full[a + rank] = given[i + axes_norm.len()] as f32;
            }
            Some(cx.constant("roi", Tensor::from_f32s(&full).cast(dtype)))
        }
    };
    let scales = match scales {
        None => None,
        Some(_) => {
            let given = cx.const_input(2, "scales")?.expect("operand 2 is present").to_f64_vec();
            let mut full = vec![1.0f32; rank];
            for (i, &a) in axes_norm.iter().enumerate() {
                full[a] = *given.get(i).ok_or_else(|| cx.err("scales has fewer entries than axes"))? as f32;
            }
            Some(cx.constant("scales", Tensor::from_f32s(&full)))
        }
    };
    let sizes = match sizes {
        None => None,
        Some(_) => {
            let given = cx.const_input(3, "sizes")?.expect("operand 3 is present").to_i64_vec();
            let mut full: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            for (i, &a) in axes_norm.iter().enumerate() {
                full[a] = *given.get(i).ok_or_else(|| cx.err("sizes has fewer entries than axes"))?;
            }
            Some(cx.constant("sizes", Tensor::from_i64s(&full)))
        }
    };
    Ok((roi, scales, sizes))
}
