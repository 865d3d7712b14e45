//! One rule for every operator that only moves or copies elements
//! (`Reshape`, `Transpose`, `Slice`, `Gather`, `Concat`, `Split`, `Pad`, ...).
//!
//! The operator runs once more on tensors of element indices in place of its
//! data operands: each data element gets a distinct `i64` number, counting
//! on across operands. Every result element then names the element it was
//! copied from (or -1 for a `Pad` fill value), and the result's gradient is
//! added back there. Broadcast copies (`Expand`, `Tile`, `Pad` in edge or
//! reflect mode) add up, as they should.

use ndarray::ArrayD;

use super::rules::Grads;
use crate::error::{OpError, OpResult};
use crate::interp::eval_op;
use crate::ir::Op;
use crate::op_bail;
use crate::tensor::Tensor;

pub(super) fn supported(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Flatten { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Expand
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Slice
            | Op::Gather { .. }
            | Op::Tile
            | Op::Pad { .. }
    )
}

/// Returns the operand slots that carry data. The others are shapes,
/// indices or pad widths.
fn data_slots(op: &Op, count: usize) -> Vec<usize> {
    match op {
        Op::Concat { .. } => (0..count).collect(),
        _ => vec![0],
    }
}

pub(super) fn vjp(op: &Op, operands: &[Option<&Tensor>], grads: &[ArrayD<f32>], needed: &[bool]) -> OpResult<Grads> {
    let slots = data_slots(op, operands.len());
    // Data operands are replaced by index tensors below, so only the others are copied.
    let mut indexed: Vec<Option<Tensor>> =
        operands.iter().enumerate().map(|(i, t)| if slots.contains(&i) { None } else { t.cloned() }).collect();
    let mut starts = Vec::with_capacity(slots.len());
    let mut next = 0i64;
    for &slot in &slots {
        let data = operands[slot].ok_or_else(|| OpError::new(format!("missing data operand {slot}")))?;
        starts.push(next);
        let numbers: Vec<i64> = (next..next + data.len() as i64).collect();
        next += data.len() as i64;
        let array = ArrayD::from_shape_vec(data.shape(), numbers).map_err(|e| OpError::new(e.to_string()))?;
        indexed[slot] = Some(Tensor::I64(array));
    }
    if let Op::Pad { .. } = op {
        indexed.resize(3, None);
        indexed[2] = Some(Tensor::I64(ArrayD::from_elem(ndarray::IxDyn(&[]), -1)));
    }
    let refs: Vec<Option<&Tensor>> = indexed.iter().map(Option::as_ref).collect();
    let sources = eval_op(op, &refs)?;
    if sources.len() != grads.len() {
        op_bail!("{} gave {} results for {} gradients", op.name(), sources.len(), grads.len());
    }

    let mut total = vec![0.0f32; next as usize];
    for (source, grad) in sources.iter().zip(grads) {
        let Tensor::I64(source) = source else { op_bail!("index run of {} did not give i64 results", op.name()) };
        if source.shape() != grad.shape() {
            op_bail!("gradient of shape {:?} for a result of shape {:?}", grad.shape(), source.shape());
        }
        for (&from, &g) in source.iter().zip(grad.iter()) {
            if from >= 0 {
                total[from as usize] += g;
            }
        }
    }

    let mut result: Grads = vec![None; operands.len()];
    for (i, &slot) in slots.iter().enumerate() {
        if !needed.get(slot).copied().unwrap_or(false) {
            continue;
        }
        let data = operands[slot].expect("checked above");
        let start = starts[i] as usize;
        let values = total[start..start + data.len()].to_vec();
        result[slot] = Some(ArrayD::from_shape_vec(data.shape(), values).map_err(|e| OpError::new(e.to_string()))?);
    }
    Ok(result)
}
