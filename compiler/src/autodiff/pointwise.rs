//! Rules for elementwise operators. Binary operators broadcast, so their
//! gradients are summed back over the broadcast axes.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

use ndarray::{ArrayD, IxDyn, Zip};

use super::rules::{Grads, f32_operand, unbroadcast, when};
use crate::error::{OpError, OpResult};
use crate::interp::erf::erfc;
use crate::ir::op::{BinaryOp, GeluApprox, UnaryOp};
use crate::ir::Op;
use crate::op_bail;
use crate::tensor::{DType, Tensor};

pub(super) fn supported(op: &Op) -> bool {
    match op {
        Op::Identity | Op::Where | Op::Clip | Op::HardSigmoid { .. } | Op::LeakyRelu { .. } | Op::Gelu { .. } => true,
        Op::Cast { to } => *to == DType::F32,
        Op::Unary(u) => !matches!(u, UnaryOp::Not | UnaryOp::IsNaN),
        Op::Binary(b) => {
            matches!(b, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Pow | BinaryOp::Max | BinaryOp::Min)
        }
        _ => false,
    }
}

pub(super) fn vjp(op: &Op, operands: &[Option<&Tensor>], output: &Tensor, grad: ArrayD<f32>, needed: &[bool]) -> OpResult<Grads> {
    let y = output.as_f32().ok_or_else(|| OpError::new("gradients need an f32 result"))?;
    let x = || f32_operand(operands, 0, "input");
    let local = |f: &dyn Fn(f32, f32) -> f32| -> OpResult<Grads> {
        let x = x()?;
        let mut dx = grad.clone();
        Zip::from(&mut dx).and(x).and(y).for_each(|g, &x, &y| *g *= f(x, y));
        Ok(vec![Some(dx)])
    };
    match op {
        Op::Identity | Op::Cast { .. } => Ok(vec![Some(grad)]),
        Op::Unary(u) => local(&|x, y| unary_derivative(*u, x, y)),
        Op::Gelu { approximate } => local(&|x, _| gelu_derivative(*approximate, x as f64) as f32),
        Op::LeakyRelu { alpha } => local(&|x, _| if x > 0.0 { 1.0 } else { *alpha }),
        Op::HardSigmoid { alpha, beta } => local(&|x, _| {
            let v = alpha * x + beta;
            if v > 0.0 && v < 1.0 { *alpha } else { 0.0 }
        }),
        Op::Clip => {
            let bound = |i: usize| operands.get(i).copied().flatten().and_then(Tensor::scalar_f64).map(|v| v as f32);
            let (lo, hi) = (bound(1).unwrap_or(f32::NEG_INFINITY), bound(2).unwrap_or(f32::INFINITY));
            let mut grads = local(&|x, _| if x >= lo && x <= hi { 1.0 } else { 0.0 })?;
            grads.resize(operands.len(), None);
            Ok(grads)
        }
        Op::Where => where_grads(operands, grad, needed),
        Op::Binary(b) => binary(*b, operands, grad, needed),
        _ => op_bail!("no elementwise gradient rule for {}", op.name()),
    }
}

/// `dy/dx` of a unary operator at input `x` with result `y`.
fn unary_derivative(op: UnaryOp, x: f32, y: f32) -> f32 {
    match op {
        UnaryOp::Relu => f32::from(x > 0.0),
        UnaryOp::Sigmoid => y * (1.0 - y),
        UnaryOp::Tanh => 1.0 - y * y,
        UnaryOp::Erf => (2.0 / PI.sqrt()) as f32 * (-x * x).exp(),
        UnaryOp::Sqrt => 0.5 / y,
        UnaryOp::Exp => y,
        UnaryOp::Log => 1.0 / x,
        UnaryOp::Neg => -1.0,
        UnaryOp::Abs => x.signum() * f32::from(x != 0.0),
        UnaryOp::Reciprocal => -y * y,
        UnaryOp::Sin => x.cos(),
        UnaryOp::Cos => -x.sin(),
        UnaryOp::Softplus => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round | UnaryOp::Sign | UnaryOp::Not | UnaryOp::IsNaN => 0.0,
    }
}

/// Derivative of GELU: `Phi(x) + x phi(x)` exactly, or of its tanh form.
pub(super) fn gelu_derivative(approximate: GeluApprox, x: f64) -> f64 {
    match approximate {
        GeluApprox::None => {
            let cdf = 0.5 * erfc(-x * FRAC_1_SQRT_2);
            let density = (-0.5 * x * x).exp() / (2.0 * PI).sqrt();
            cdf + x * density
        }
        GeluApprox::Tanh => {
            let c = (2.0 / PI).sqrt();
            let t = (c * (x + 0.044715 * x * x * x)).tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x)
        }
    }
}

fn where_grads(operands: &[Option<&Tensor>], grad: ArrayD<f32>, needed: &[bool]) -> OpResult<Grads> {
    let condition = operands[0].ok_or_else(|| OpError::new("missing condition"))?;
    let Tensor::Bool(condition) = condition else { op_bail!("Where condition must be bool, got {}", condition.dtype()) };
    let condition = condition
        .broadcast(IxDyn(grad.shape()))
        .ok_or_else(|| OpError::new("Where condition does not broadcast to the result"))?;
    let pick = |take: bool, index: usize| -> OpResult<ArrayD<f32>> {
        let shape = f32_operand(operands, index, "Where branch")?.shape().to_vec();
        let mut g = grad.clone();
        Zip::from(&mut g).and(&condition).for_each(|g, &c| {
            if c != take {
                *g = 0.0;
            }
        });
        Ok(unbroadcast(g, &shape))
    };
    Ok(vec![None, when(needed, 1, || pick(true, 1))?, when(needed, 2, || pick(false, 2))?])
}

fn binary(op: BinaryOp, operands: &[Option<&Tensor>], grad: ArrayD<f32>, needed: &[bool]) -> OpResult<Grads> {
    let a = f32_operand(operands, 0, "A")?;
    let b = f32_operand(operands, 1, "B")?;
    let shape = IxDyn(grad.shape());
    let av = a.broadcast(shape.clone()).ok_or_else(|| OpError::new("A does not broadcast to the result"))?;
    let bv = b.broadcast(shape).ok_or_else(|| OpError::new("B does not broadcast to the result"))?;
    // Each operand's local derivative, given (a, b).
    type Local = fn(f32, f32) -> f32;
    let (da, db): (Local, Local) = match op {
        BinaryOp::Add => (|_, _| 1.0, |_, _| 1.0),
        BinaryOp::Sub => (|_, _| 1.0, |_, _| -1.0),
        BinaryOp::Mul => (|_, b| b, |a, _| a),
        BinaryOp::Div => (|_, b| 1.0 / b, |a, b| -a / (b * b)),
        BinaryOp::Pow => (|a, b| b * a.powf(b - 1.0), |a, b| if a > 0.0 { a.powf(b) * a.ln() } else { 0.0 }),
        BinaryOp::Max => (|a, b| f32::from(a >= b), |a, b| f32::from(b > a)),
        BinaryOp::Min => (|a, b| f32::from(a <= b), |a, b| f32::from(b < a)),
        _ => op_bail!("no gradient rule for {op:?}"),
    };
    let side = |f: fn(f32, f32) -> f32, target: &[usize]| -> OpResult<ArrayD<f32>> {
        let mut g = grad.clone();
        Zip::from(&mut g).and(&av).and(&bv).for_each(|g, &a, &b| *g *= f(a, b));
        Ok(unbroadcast(g, target))
    };
    Ok(vec![when(needed, 0, || side(da, a.shape()))?, when(needed, 1, || side(db, b.shape()))?])
}
