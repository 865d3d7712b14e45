//! Reductions and ArgMax/ArgMin.
//!
//! Opset notes: `axes` is an attribute until opset 17 and an optional
//! operand from 18 on, except for `ReduceSum`, which switched at opset 13.
//! `noop_with_empty_axes` arrives with the operand form.

use crate::error::Result;
use crate::ir::Op;
use crate::ir::op::ReduceKind;
use crate::onnx::import::NodeCx;

pub(super) fn import(cx: &mut NodeCx, op: &str) -> Result<()> {
    let x = cx.input(0)?;
    if op == "ArgMax" || op == "ArgMin" {
        let axis = cx.attrs.int("axis", 0)?;
        let keepdims = cx.attrs.bool("keepdims", true)?;
        let select_last_index = cx.attrs.bool("select_last_index", false)?;
        let op = if op == "ArgMax" {
            Op::ArgMax { axis, keepdims, select_last_index }
        } else {
            Op::ArgMin { axis, keepdims, select_last_index }
        };
        return cx.emit(op, vec![Some(x)]);
    }

    let kind = match op {
        "ReduceMean" => ReduceKind::Mean,
        "ReduceSum" => ReduceKind::Sum,
        "ReduceMax" => ReduceKind::Max,
        "ReduceMin" => ReduceKind::Min,
        "ReduceProd" => ReduceKind::Prod,
        "ReduceSumSquare" => ReduceKind::SumSquare,
        "ReduceL1" => ReduceKind::L1,
        "ReduceL2" => ReduceKind::L2,
        "ReduceLogSumExp" => ReduceKind::LogSumExp,
        _ => return Err(cx.err("internal: operator listed as a reduction but not mapped")),
    };
    let operand_from = if kind == ReduceKind::Sum { 13 } else { 18 };
    let keepdims = cx.attrs.bool("keepdims", true)?;
    let noop_with_empty_axes = cx.attrs.bool("noop_with_empty_axes", false)?;
    let axes = if cx.opset() < operand_from {
        cx.attrs.ints_opt("axes")?
    } else {
        cx.const_input(1, "axes")?.map(|t| t.to_i64_vec())
    };
    // An empty axes list means "all axes" unless noop_with_empty_axes is set.
    let axes = match axes {
        Some(a) if a.is_empty() && !noop_with_empty_axes => None,
        other => other,
    };
    cx.emit(Op::Reduce { kind, axes, keepdims, noop_with_empty_axes }, vec![Some(x)])
}
