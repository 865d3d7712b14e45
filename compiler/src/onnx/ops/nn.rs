//! Neural-network operators: Softmax, normalizations, convolutions, MatMul, Gemm.
//!
//! Opset notes: before opset 13, `Softmax`/`LogSoftmax` default to axis 1 and
//! normalize over the input flattened to 2-D at that axis; from 13 on, the
//! default is -1 and only that axis is normalized. `LayerNormalization`
//! exists from opset 17 (axis -1, epsilon 1e-5, bias optional).
//! `BatchNormalization` is imported in inference mode only. `Conv` and
//! `ConvTranspose` resolve `auto_pad` (and `output_shape`) into explicit pads
//! here, where the input's spatial size is known.

use crate::error::Result;
use crate::ir::Op;
use crate::ir::op::{ConvAttrs, ConvTransposeAttrs};
use crate::onnx::import::NodeCx;

pub(super) fn import(cx: &mut NodeCx, op: &str) -> Result<()> {
    match op {
        "Softmax" | "LogSoftmax" => softmax(cx, op == "LogSoftmax"),
        "LayerNormalization" => {
            let axis = cx.attrs.int("axis", -1)?;
            let epsilon = cx.attrs.float("epsilon", 1e-5)?;
            if cx.node.output.iter().skip(1).any(|o| !o.is_empty()) {
                return Err(cx.err("the Mean and InvStdDev outputs are training outputs, which vitc does not compute"));
            }
            cx.emit(Op::LayerNorm { axis, epsilon }, vec![Some(cx.input(0)?), Some(cx.input(1)?), cx.opt_input(2)])
        }
        "BatchNormalization" => batch_norm(cx),
        "Conv" => conv(cx),
        "ConvTranspose" => conv_transpose(cx),
        "MatMul" => cx.emit(Op::MatMul, vec![Some(cx.input(0)?), Some(cx.input(1)?)]),
        "Gemm" => {
            let op = Op::Gemm {
                alpha: cx.attrs.float("alpha", 1.0)?,
                beta: cx.attrs.float("beta", 1.0)?,
                trans_a: cx.attrs.bool("transA", false)?,
                trans_b: cx.attrs.bool("transB", false)?,
            };
            cx.emit(op, vec![Some(cx.input(0)?), Some(cx.input(1)?), cx.opt_input(2)])
        }
        _ => Err(cx.err("internal: operator listed as nn but not mapped")),
    }
}

fn softmax(cx: &mut NodeCx, log: bool) -> Result<()> {
    let legacy = cx.opset() < 13;
    let axis = cx.attrs.int("axis", if legacy { 1 } else { -1 })?;
    let x = cx.input(0)?;
    let rank = cx.fact(x).rank() as i64;
    // Flattening the tail changes nothing when the axis is the last one.
    let last = axis == -1 || axis == rank - 1;
    let flatten_tail = legacy && !last;
    let op = if log { Op::LogSoftmax { axis, flatten_tail } } else { Op::Softmax { axis, flatten_tail } };
    cx.emit(op, vec![Some(x)])
}

fn batch_norm(cx: &mut NodeCx) -> Result<()> {
    if cx.attrs.bool("training_mode", false)? {
        return Err(cx.err("training_mode=1 is not supported; vitc compiles models for inference"));
    }
    if cx.node.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(cx.err("the running-statistics outputs are training outputs, which vitc does not compute"));
    }
    let epsilon = cx.attrs.float("epsilon", 1e-5)?;
    let inputs = (0..5).map(|i| cx.input(i).map(Some)).collect::<Result<Vec<_>>>()?;
    cx.emit(Op::BatchNorm { epsilon }, inputs)
}

/// Spatial geometry shared by Conv and ConvTranspose.
struct Geometry {
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pads: Option<Vec<usize>>,
    auto_pad: String,
    group: usize,
    input_spatial: Vec<usize>,
}

fn geometry(cx: &NodeCx) -> Result<Geometry> {
    let x = cx.fact(cx.input(0)?).clone();
    let w = cx.fact(cx.input(1)?).clone();
    if x.rank() < 3 || x.rank() > 4 || w.rank() != x.rank() {
        return Err(cx.err(format!(
            "vitc supports 1-D and 2-D convolutions: input {} and weight {} must both have rank 3 or 4",
            x, w
        )));
    }
    let spatial = x.rank() - 2;
    let kernel = cx.attrs.usizes_opt("kernel_shape")?.unwrap_or_else(|| w.shape[2..].to_vec());
    let ones = vec![1; spatial];
    let strides = cx.attrs.usizes_opt("strides")?.unwrap_or_else(|| ones.clone());
    let dilations = cx.attrs.usizes_opt("dilations")?.unwrap_or(ones);
    let pads = cx.attrs.usizes_opt("pads")?;
    let group = cx.attrs.int("group", 1)?;
    let lengths_ok = kernel.len() == spatial
        && strides.len() == spatial
        && dilations.len() == spatial
        && pads.as_ref().is_none_or(|p| p.len() == 2 * spatial);
    if !lengths_ok {
        return Err(cx.err(format!("kernel_shape, strides, dilations and pads must have {spatial} (pads: {}) entries", 2 * spatial)));
    }
    if strides.contains(&0) || dilations.contains(&0) || group < 1 {
        return Err(cx.err("strides, dilations and group must be positive"));
    }
    Ok(Geometry {
        kernel,
        strides,
        dilations,
        pads,
        auto_pad: cx.attrs.string("auto_pad", "NOTSET")?,
        group: group as usize,
        input_spatial: x.shape[2..].to_vec(),
    })
}

fn conv(cx: &mut NodeCx) -> Result<()> {
    let g = geometry(cx)?;
    let spatial = g.kernel.len();
    let pads = match g.auto_pad.as_str() {
        "NOTSET" => g.pads.clone().unwrap_or_else(|| vec![0; 2 * spatial]),
        "VALID" => vec![0; 2 * spatial],
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut pads = vec![0; 2 * spatial];
            for i in 0..spatial {
                let input = g.input_spatial[i];
                let output = input.div_ceil(g.strides[i]);
                let extent = (g.kernel[i] - 1) * g.dilations[i] + 1;
                let total = ((output - 1) * g.strides[i] + extent).saturating_sub(input);
                let (small, large) = (total / 2, total - total / 2);
                let upper = g.auto_pad == "SAME_UPPER";
                pads[i] = if upper { small } else { large };
                pads[i + spatial] = if upper { large } else { small };
            }
            pads
        }
        other => return Err(cx.err(format!("auto_pad '{other}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID"))),
    };
    let attrs = ConvAttrs { kernel: g.kernel, strides: g.strides, pads, dilations: g.dilations, group: g.group };
    cx.emit(Op::Conv(attrs), vec![Some(cx.input(0)?), Some(cx.input(1)?), cx.opt_input(2)])
}

fn conv_transpose(cx: &mut NodeCx) -> Result<()> {
    let g = geometry(cx)?;
    let spatial = g.kernel.len();
    let mut output_padding = cx.attrs.usizes_opt("output_padding")?.unwrap_or_else(|| vec![0; spatial]);
    if output_padding.len() != spatial {
        return Err(cx.err(format!("output_padding must have {spatial} entries")));
    }
    // The ONNX spec requires each output padding to be smaller than the
    // stride or the dilation of its axis.
    for i in 0..spatial {
        if output_padding[i] >= g.strides[i].max(g.dilations[i]) {
            return Err(cx.err(format!(
                "output_padding {:?} is invalid: entry {i} must be less than the larger of stride {} and dilation {}",
                output_padding, g.strides[i], g.dilations[i]
            )));
        }
    }
    let output_shape = cx.attrs.usizes_opt("output_shape")?;
    let explicit_pads = g.auto_pad == "NOTSET" && output_shape.is_none();
    let pads = if explicit_pads {
        g.pads.clone().unwrap_or_else(|| vec![0; 2 * spatial])
    } else if g.auto_pad == "VALID" && output_shape.is_none() {
        vec![0; 2 * spatial]
    } else {
        let target: Vec<usize> = match &output_shape {
            // output_shape may list only the spatial dims or all of them.
            Some(s) if s.len() == spatial => s.clone(),
            Some(s) if s.len() == spatial + 2 => s[2..].to_vec(),
            Some(_) => return Err(cx.err(format!("output_shape must have {spatial} spatial entries"))),
            None => g.input_spatial.iter().zip(&g.strides).map(|(i, s)| i * s).collect(),
        };
        let mut pads = vec![0; 2 * spatial];
        for i in 0..spatial {
            let full = g.strides[i] * (g.input_spatial[i] - 1) + output_padding[i] + (g.kernel[i] - 1) * g.dilations[i] + 1;
            if full < target[i] {
                // The requested output is larger than the unpadded result: the
                // extra rows come from output padding.
                output_padding[i] += target[i] - full;
                continue;
            }
            let total = full - target[i];
            let (small, large) = (total / 2, total - total / 2);
            // The ONNX spec gives SAME_UPPER the smaller begin pad and every
            // other mode (SAME_LOWER, or NOTSET with output_shape) the larger.
            let upper = g.auto_pad == "SAME_UPPER";
            pads[i] = if upper { small } else { large };
            pads[i + spatial] = if upper { large } else { small };
        }
        pads
    };
    let attrs = ConvTransposeAttrs {
        kernel: g.kernel,
        strides: g.strides,
        pads,
        dilations: g.dilations,
        output_padding,
        group: g.group,
    };
    cx.emit(Op::ConvTranspose(attrs), vec![Some(cx.input(0)?), Some(cx.input(1)?), cx.opt_input(2)])
}
