//! Vector-Jacobian products, one rule per operator.
//!
//! A rule receives the operator's operands and results from the forward
//! run, the cotangent of each result, and which operands need a gradient.
//! It returns one gradient per operand slot, `None` where none was asked
//! for. Gradients with respect to integer or boolean operands (shapes,
//! indices, conditions) are never asked for: those values are not active.

use ndarray::ArrayD;

use super::{layout, linalg, pointwise, spatial};
use crate::error::{OpError, OpResult};
use crate::ir::Op;
use crate::op_bail;
use crate::tensor::Tensor;

pub(super) type Grads = Vec<Option<ArrayD<f32>>>;

/// Returns whether [`vjp`] has a rule for `op`.
pub(super) fn supported(op: &Op) -> bool {
    pointwise::supported(op) || layout::supported(op) || linalg::supported(op) || spatial::supported(op)
}

/// Computes the gradient of every operand slot that `needed` marks.
pub(super) fn vjp(
    op: &Op,
    operands: &[Option<&Tensor>],
    outputs: &[&Tensor],
    grads: Vec<ArrayD<f32>>,
    needed: &[bool],
) -> OpResult<Grads> {
    if layout::supported(op) {
        return layout::vjp(op, operands, &grads, needed);
    }
    let [grad] = <[ArrayD<f32>; 1]>::try_from(grads).map_err(|g| OpError::new(format!("{} results, expected 1", g.len())))?;
    let output = outputs[0];
    if pointwise::supported(op) {
        pointwise::vjp(op, operands, output, grad, needed)
    } else if linalg::supported(op) {
        linalg::vjp(op, operands, grad, needed)
    } else if spatial::supported(op) {
        spatial::vjp(op, operands, output, grad, needed)
    } else {
        op_bail!("no gradient rule for {}", op.name())
    }
}

/// Returns the `f32` data of operand `index`.
pub(super) fn f32_operand<'a>(operands: &[Option<&'a Tensor>], index: usize, label: &str) -> OpResult<&'a ArrayD<f32>> {
    let tensor = operands.get(index).copied().flatten().ok_or_else(|| OpError::new(format!("missing {label}")))?;
    tensor.as_f32().ok_or_else(|| OpError::new(format!("gradients need an f32 {label}, got {}", tensor.dtype())))
}

/// Sums `grad` over the axes that broadcasting added to or stretched in
/// `shape`, giving a gradient of that shape.
pub(super) fn unbroadcast(mut grad: ArrayD<f32>, shape: &[usize]) -> ArrayD<f32> {
    use ndarray::Axis;
    while grad.ndim() > shape.len() {
        grad = grad.sum_axis(Axis(0));
    }
    for (axis, &dim) in shape.iter().enumerate() {
        if dim == 1 && grad.shape()[axis] != 1 {
            grad = grad.sum_axis(Axis(axis)).insert_axis(Axis(axis));
        }
    }
    grad
}

/// `Some(f())` where `needed[index]`, else `None`.
pub(super) fn when<T>(needed: &[bool], index: usize, f: impl FnOnce() -> OpResult<T>) -> OpResult<Option<T>> {
    if needed.get(index).copied().unwrap_or(false) { f().map(Some) } else { Ok(None) }
}
