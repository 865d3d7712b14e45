//! Elementwise operators.
//!
//! Opset notes: `Clip` takes `min`/`max` as attributes before opset 11 and as
//! optional operands from 11 on; `Mod`'s `fmod` attribute picks C-style
//! remainder; `Max`, `Min`, `Sum` and `Mean` are variadic and become chains
//! of binary nodes; `Gelu` exists from opset 20 with `approximate` =
//! "none" | "tanh"; `Dropout` is an identity at inference (a constant
//! `training_mode` of true is rejected).

use ndarray::{ArrayD, IxDyn};

use crate::error::Result;
use crate::ir::op::{BinaryOp, GeluApprox, UnaryOp};
use crate::ir::{Op, ValueId};
use crate::onnx::import::NodeCx;
use crate::tensor::{DType, Tensor};

pub(super) fn import(cx: &mut NodeCx, op: &str) -> Result<()> {
    if let Some(unary) = unary_op(op) {
        return cx.emit(Op::Unary(unary), vec![Some(cx.input(0)?)]);
    }
    if let Some(binary) = binary_op(op) {
        return cx.emit(Op::Binary(binary), vec![Some(cx.input(0)?), Some(cx.input(1)?)]);
    }
    match op {
        "Mod" => {
            let kind = if cx.attrs.bool("fmod", false)? { BinaryOp::Fmod } else { BinaryOp::Mod };
            cx.emit(Op::Binary(kind), vec![Some(cx.input(0)?), Some(cx.input(1)?)])
        }
        "Max" | "Min" | "Sum" | "Mean" => variadic(cx, op),
        "Where" => cx.emit(Op::Where, vec![Some(cx.input(0)?), Some(cx.input(1)?), Some(cx.input(2)?)]),
        "Clip" => clip(cx),
        "HardSigmoid" => {
            let alpha = cx.attrs.float("alpha", 0.2)?;
            let beta = cx.attrs.float("beta", 0.5)?;
            cx.emit(Op::HardSigmoid { alpha, beta }, vec![Some(cx.input(0)?)])
        }
        "LeakyRelu" => {
            let alpha = cx.attrs.float("alpha", 0.01)?;
            cx.emit(Op::LeakyRelu { alpha }, vec![Some(cx.input(0)?)])
        }
        "Gelu" => {
            let approximate = match cx.attrs.string("approximate", "none")?.as_str() {
                "none" => GeluApprox::None,
                "tanh" => GeluApprox::Tanh,
                other => return Err(cx.err(format!("attribute 'approximate' is '{other}', expected 'none' or 'tanh'"))),
            };
            cx.emit(Op::Gelu { approximate }, vec![Some(cx.input(0)?)])
        }
        "Cast" => {
            let code = cx.attrs.int_opt("to")?.ok_or_else(|| cx.err("attribute 'to' is missing"))?;
            let to = DType::from_onnx(code as i32)
                .ok_or_else(|| cx.err(format!("casting to {} is not supported", DType::onnx_name(code as i32))))?;
            cx.emit(Op::Cast { to }, vec![Some(cx.input(0)?)])
        }
        "CastLike" => {
            let to = cx.fact(cx.input(1)?).dtype;
            cx.emit(Op::Cast { to }, vec![Some(cx.input(0)?)])
        }
        "Identity" => cx.alias(cx.input(0)?),
        "Dropout" => dropout(cx),
        _ => Err(cx.err("internal: operator listed as elementwise but not mapped")),
    }
}

fn unary_op(op: &str) -> Option<UnaryOp> {
    Some(match op {
        "Relu" => UnaryOp::Relu,
        "Sigmoid" => UnaryOp::Sigmoid,
        "Tanh" => UnaryOp::Tanh,
        "Erf" => UnaryOp::Erf,
        "Sqrt" => UnaryOp::Sqrt,
        "Exp" => UnaryOp::Exp,
        "Log" => UnaryOp::Log,
        "Neg" => UnaryOp::Neg,
        "Abs" => UnaryOp::Abs,
        "Reciprocal" => UnaryOp::Reciprocal,
        "Floor" => UnaryOp::Floor,
        "Ceil" => UnaryOp::Ceil,
        "Round" => UnaryOp::Round,
        "Sign" => UnaryOp::Sign,
        "Sin" => UnaryOp::Sin,
        "Cos" => UnaryOp::Cos,
        "Not" => UnaryOp::Not,
        "IsNaN" => UnaryOp::IsNaN,
        "Softplus" => UnaryOp::Softplus,
        _ => return None,
    })
}

fn binary_op(op: &str) -> Option<BinaryOp> {
    Some(match op {
        "Add" => BinaryOp::Add,
        "Sub" => BinaryOp::Sub,
        "Mul" => BinaryOp::Mul,
        "Div" => BinaryOp::Div,
        "Pow" => BinaryOp::Pow,
        "Equal" => BinaryOp::Equal,
        "Less" => BinaryOp::Less,
        "LessOrEqual" => BinaryOp::LessOrEqual,
        "Greater" => BinaryOp::Greater,
        "GreaterOrEqual" => BinaryOp::GreaterOrEqual,
        "And" => BinaryOp::And,
        "Or" => BinaryOp::Or,
        "Xor" => BinaryOp::Xor,
        _ => return None,
    })
}

/// `Max`, `Min`, `Sum` and `Mean` over any number of operands.
fn variadic(cx: &mut NodeCx, op: &str) -> Result<()> {
    let operands: Vec<ValueId> = cx.inputs.iter().flatten().copied().collect();
    let Some((&first, rest)) = operands.split_first() else {
        return Err(cx.err("needs at least one operand"));
    };
    let step = match op {
        "Max" => BinaryOp::Max,
        "Min" => BinaryOp::Min,
        _ => BinaryOp::Add,
    };
    let mut acc = first;
    for (i, &next) in rest.iter().enumerate() {
        acc = cx.emit_hidden(Op::Binary(step), vec![Some(acc), Some(next)], &format!("step{i}"))?[0];
    }
    if op == "Mean" && operands.len() > 1 {
        let count = Tensor::from_i64s(&[operands.len() as i64]).cast(cx.fact(acc).dtype).reshaped(&[])?;
        let divisor = cx.constant("count", count);
        return cx.emit(Op::Binary(BinaryOp::Div), vec![Some(acc), Some(divisor)]);
    }
    cx.alias(acc)
}

fn clip(cx: &mut NodeCx) -> Result<()> {
    let x = cx.input(0)?;
    if cx.opset() >= 11 {
        return cx.emit(Op::Clip, vec![Some(x), cx.opt_input(1), cx.opt_input(2)]);
    }
    let dtype = cx.fact(x).dtype;
    let min = cx.attrs.float_opt("min")?;
    let max = cx.attrs.float_opt("max")?;
    let min = min.map(|v| cx.constant("min", Tensor::scalar_f32(v).cast(dtype)));
    let max = max.map(|v| cx.constant("max", Tensor::scalar_f32(v).cast(dtype)));
    cx.emit(Op::Clip, vec![Some(x), min, max])
}

fn dropout(cx: &mut NodeCx) -> Result<()> {
    if cx.opset() >= 12
        && let Some(training) = cx.const_input(2, "training_mode")?
        && training.to_i64_vec().first().copied().unwrap_or(0) != 0
    {
        return Err(cx.err("training_mode is true; vitc compiles models for inference only"));
    }
    let x = cx.input(0)?;
    if cx.node.output.len() > 1 && !cx.node.output[1].is_empty() {
        // The mask of an inference-mode Dropout is all true.
        let shape = cx.fact(x).shape.clone();
        let mask = Tensor::Bool(ArrayD::from_elem(IxDyn(&shape), true));
        let identity = cx.emit_hidden(Op::Identity, vec![Some(x)], "")?[0];
        let mask = cx.constant("mask", mask);
        return cx.bind_outputs(&[identity, mask]);
    }
    cx.alias(x)
}
