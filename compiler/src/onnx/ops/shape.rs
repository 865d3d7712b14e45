//! Shape and data-movement operators, and `Constant`.
//!
//! Opset notes: `Squeeze`/`Unsqueeze` take `axes` as an attribute before
//! opset 13 and as an operand from 13 on (it must be constant here).
//! `Split` takes `split` as an attribute before 13, as an optional operand
//! from 13, and also accepts `num_outputs` from 18. `Slice` takes `starts`,
//! `ends` and `axes` as attributes before opset 10. `Pad` takes `pads` and
//! `value` as attributes before 11 and an optional `axes` operand from 18.
//! `Reshape` gains `allowzero` at 14, `Shape` gains `start`/`end` at 15.

use std::sync::Arc;

use crate::error::Result;
use crate::ir::Op;
use crate::ir::op::PadMode;
use crate::onnx::import::{NodeCx, warn_non_finite};
use crate::tensor::Tensor;

pub(super) fn import(cx: &mut NodeCx, op: &str) -> Result<()> {
    match op {
        "Reshape" => {
            let allowzero = cx.attrs.bool("allowzero", false)?;
            cx.emit(Op::Reshape { allowzero }, vec![Some(cx.input(0)?), Some(cx.input(1)?)])
        }
        "Transpose" => {
            let x = cx.input(0)?;
            let rank = cx.fact(x).rank();
            let perm = match cx.attrs.ints_opt("perm")? {
                Some(p) => p
                    .iter()
                    .map(|&a| usize::try_from(a).map_err(|_| cx.err(format!("perm entry {a} is negative"))))
                    .collect::<Result<Vec<_>>>()?,
                None => (0..rank).rev().collect(),
            };
            cx.emit(Op::Transpose { perm }, vec![Some(x)])
        }
        "Flatten" => {
            let axis = cx.attrs.int("axis", 1)?;
            cx.emit(Op::Flatten { axis }, vec![Some(cx.input(0)?)])
        }
        "Squeeze" => {
            let axes = axes_attr_or_operand(cx, 13)?;
            cx.emit(Op::Squeeze { axes }, vec![Some(cx.input(0)?)])
        }
        "Unsqueeze" => {
            let axes = axes_attr_or_operand(cx, 13)?.ok_or_else(|| cx.err("axes are required"))?;
            cx.emit(Op::Unsqueeze { axes }, vec![Some(cx.input(0)?)])
        }
        "Concat" => {
            let axis = cx.attrs.int_opt("axis")?.ok_or_else(|| cx.err("attribute 'axis' is missing"))?;
            let inputs = cx.inputs.iter().filter(|v| v.is_some()).copied().collect();
            cx.emit(Op::Concat { axis }, inputs)
        }
        "Split" => split(cx),
        "Slice" => slice(cx),
        "Gather" => {
            let axis = cx.attrs.int("axis", 0)?;
            cx.emit(Op::Gather { axis }, vec![Some(cx.input(0)?), Some(cx.input(1)?)])
        }
        "Expand" => cx.emit(Op::Expand, vec![Some(cx.input(0)?), Some(cx.input(1)?)]),
        "Tile" => cx.emit(Op::Tile, vec![Some(cx.input(0)?), Some(cx.input(1)?)]),
        "Pad" => pad(cx),
        "Shape" => {
            let start = cx.attrs.int("start", 0)?;
            let end = cx.attrs.int_opt("end")?;
            cx.emit(Op::Shape { start, end }, vec![Some(cx.input(0)?)])
        }
        "Size" => cx.emit(Op::Size, vec![Some(cx.input(0)?)]),
        "ConstantOfShape" => {
            let value = match cx.attrs.tensor("value", cx.builder.model_dir, cx.builder.options.max_tensor_bytes)? {
                Some(t) if t.len() == 1 => t.reshaped(&[])?,
                Some(_) => return Err(cx.err("attribute 'value' must hold exactly one element")),
                None => Tensor::scalar_f32(0.0),
            };
            cx.emit(Op::ConstantOfShape { value }, vec![Some(cx.input(0)?)])
        }
        "Range" => cx.emit(Op::Range, vec![Some(cx.input(0)?), Some(cx.input(1)?), Some(cx.input(2)?)]),
        "Constant" => constant(cx),
        _ => Err(cx.err("internal: operator listed as shape but not mapped")),
    }
}

/// Reads `axes` from the attribute (before `operand_from`) or from the
/// constant operand 1 (from `operand_from` on).
fn axes_attr_or_operand(cx: &NodeCx, operand_from: i64) -> Result<Option<Vec<i64>>> {
    if cx.opset() < operand_from {
        return cx.attrs.ints_opt("axes");
    }
    Ok(cx.const_input(1, "axes")?.map(|t| t.to_i64_vec()))
}

fn split(cx: &mut NodeCx) -> Result<()> {
    let x = cx.input(0)?;
    let shape = cx.fact(x).shape.clone();
    let axis = cx.attrs.int("axis", 0)?;
    let rank = shape.len() as i64;
    if axis < -rank || axis >= rank {
        return Err(cx.err(format!("axis {axis} is out of range for rank {rank}")));
    }
    let dim = shape[axis.rem_euclid(rank.max(1)) as usize];
    let outputs = cx.node.output.len();

    let given = if cx.opset() < 13 { cx.attrs.ints_opt("split")? } else { cx.const_input(1, "split")?.map(|t| t.to_i64_vec()) };
    let sizes: Vec<usize> = match given {
        Some(sizes) => sizes
            .iter()
            .map(|&s| usize::try_from(s).map_err(|_| cx.err(format!("split size {s} is negative"))))
            .collect::<Result<_>>()?,
        None => {
            let parts = match cx.attrs.int_opt("num_outputs")? {
                Some(n) if n > 0 => n as usize,
                Some(n) => return Err(cx.err(format!("num_outputs is {n}, expected a positive number"))),
                None => outputs,
            };
            if parts == 0 {
                return Err(cx.err("the node has no outputs"));
            }
            // Equal parts; with num_outputs the last part may be smaller.
            let chunk = dim.div_ceil(parts);
            if cx.attrs.has("num_outputs") {
                (0..parts).map(|i| chunk.min(dim.saturating_sub(i * chunk))).collect()
            } else if !dim.is_multiple_of(parts) {
                return Err(cx.err(format!("cannot split dimension {dim} into {parts} equal parts")));
            } else {
                vec![dim / parts; parts]
            }
        }
    };
    if sizes.iter().sum::<usize>() != dim {
        return Err(cx.err(format!("split sizes {sizes:?} do not add up to the dimension {dim}")));
    }
    if sizes.len() != outputs {
        return Err(cx.err(format!("split gives {} parts but the node has {outputs} outputs", sizes.len())));
    }
    cx.emit(Op::Split { axis, sizes }, vec![Some(x)])
}

fn slice(cx: &mut NodeCx) -> Result<()> {
    let x = cx.input(0)?;
    if cx.opset() >= 10 {
        return cx.emit(
            Op::Slice,
            vec![Some(x), Some(cx.input(1)?), Some(cx.input(2)?), cx.opt_input(3), cx.opt_input(4)],
        );
    }
    let starts = cx.attrs.ints_opt("starts")?.ok_or_else(|| cx.err("attribute 'starts' is missing"))?;
    let ends = cx.attrs.ints_opt("ends")?.ok_or_else(|| cx.err("attribute 'ends' is missing"))?;
    let axes = cx.attrs.ints_opt("axes")?;
    let starts = cx.constant("starts", Tensor::from_i64s(&starts));
    let ends = cx.constant("ends", Tensor::from_i64s(&ends));
    let axes = axes.map(|a| cx.constant("axes", Tensor::from_i64s(&a)));
    cx.emit(Op::Slice, vec![Some(x), Some(starts), Some(ends), axes, None])
}

fn pad(cx: &mut NodeCx) -> Result<()> {
    let x = cx.input(0)?;
    let rank = cx.fact(x).rank();
    let mode = match cx.attrs.string("mode", "constant")?.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        other => return Err(cx.err(format!("pad mode '{other}' is not supported; vitc supports constant, reflect and edge"))),
    };
    if cx.opset() < 11 {
        let pads = cx.attrs.ints_opt("pads")?.ok_or_else(|| cx.err("attribute 'pads' is missing"))?;
        let value = cx.attrs.float("value", 0.0)?;
        let dtype = cx.fact(x).dtype;
        let pads = cx.constant("pads", Tensor::from_i64s(&pads));
        let value = cx.constant("value", Tensor::scalar_f32(value).cast(dtype));
        return cx.emit(Op::Pad { mode }, vec![Some(x), Some(pads), Some(value)]);
    }
    let pads_operand = cx.input(1)?;
    let pads = match cx.const_input(3, "axes")? {
        None => Some(pads_operand),
        Some(axes) => {
            // Spread the pads given for `axes` over all dims.
            let given = cx.const_input(1, "pads")?.expect("operand 1 is present").to_i64_vec();
            let axes = axes.to_i64_vec();
            if given.len() != 2 * axes.len() {
                return Err(cx.err(format!("pads has {} entries, expected twice the {} axes", given.len(), axes.len())));
            }
            let mut full = vec![0i64; 2 * rank];
            for (i, &a) in axes.iter().enumerate() {
                let a = if a < 0 { a + rank as i64 } else { a };
                if a < 0 || a >= rank as i64 {
                    return Err(cx.err(format!("pad axis {a} is out of range for rank {rank}")));
                }
                full[a as usize] = given[i];
                full[a as usize + rank] = given[i + axes.len()];
            }
            Some(cx.constant("pads", Tensor::from_i64s(&full)))
        }
    };
    cx.emit(Op::Pad { mode }, vec![Some(x), pads, cx.opt_input(2)])
}

fn constant(cx: &mut NodeCx) -> Result<()> {
    let dir = cx.builder.model_dir;
    let max = cx.builder.options.max_tensor_bytes;
    let tensor = if let Some(t) = cx.attrs.tensor("value", dir, max)? {
        Arc::unwrap_or_clone(t)
    } else if let Some(v) = cx.attrs.float_opt("value_float")? {
        Tensor::scalar_f32(v)
    } else if let Some(v) = cx.attrs.floats_opt("value_floats")? {
        Tensor::from_f32s(&v)
    } else if let Some(v) = cx.attrs.int_opt("value_int")? {
        Tensor::from_i64s(&[v]).reshaped(&[])?
    } else if let Some(v) = cx.attrs.ints_opt("value_ints")? {
        Tensor::from_i64s(&v)
    } else {
        return Err(cx.err("only the value, value_float(s) and value_int(s) forms of Constant are supported"));
    };
    let name = cx.node.output.first().cloned().unwrap_or_default();
    warn_non_finite(&name, &tensor);
    let v = cx.builder.graph.add_constant(name, Arc::new(tensor));
    cx.bind_outputs(&[v])
}
