//! Facts of a node's results: the shape rule of [`super::infer`], plus
//! compile-time evaluation when every operand is constant.
//!
//! Evaluating on constant operands is how shape subgraphs (Shape, Gather,
//! Concat, ...) become known: each such node's result fact carries its data,
//! so that a later Reshape can read its target shape. The data is computed
//! with the reference interpreter's kernel, and its shape must agree with the
//! shape rule, which checks both against each other.

use std::sync::Arc;

use super::graph::Fact;
use super::infer::infer_op;
use super::op::Op;
use crate::error::{OpError, OpResult};
use crate::interp::eval_op;

/// Results with more elements than this are not evaluated at compile time;
/// they keep their shape fact but carry no data.
pub const FOLD_MAX_ELEMENTS: usize = 1 << 24;

/// Infers the facts of `op` applied to `inputs`, attaching data when all
/// operands are constant and the result is small enough.
pub fn derive_facts(op: &Op, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
    derive_facts_with(op, inputs, true)
}

/// Like [`derive_facts`]; evaluates constant operands only when `fold` is set.
pub fn derive_facts_with(op: &Op, inputs: &[Option<&Fact>], fold: bool) -> OpResult<Vec<Fact>> {
    let mut facts = infer_op(op, inputs)?;
    if !fold || !op.is_foldable() || facts.iter().all(|f| f.konst.is_some()) {
        return Ok(facts);
    }
    let all_constant = inputs.iter().all(|f| f.is_none_or(|f| f.konst.is_some()));
    let small = facts.iter().map(Fact::numel).sum::<usize>() <= FOLD_MAX_ELEMENTS;
    if !(all_constant && small) {
        return Ok(facts);
    }

    let tensors: Vec<Option<&crate::tensor::Tensor>> =
        inputs.iter().map(|f| f.and_then(|f| f.konst.as_deref())).collect();
    let results = eval_op(op, &tensors)?;
    if results.len() != facts.len() {
        return Err(OpError::new(format!(
            "internal: the kernel returned {} results but the shape rule expects {}",
            results.len(),
            facts.len()
        )));
    }
    for (fact, tensor) in facts.iter_mut().zip(results) {
        if tensor.dtype() != fact.dtype || tensor.shape() != fact.shape.as_slice() {
            return Err(OpError::new(format!(
                "internal: the kernel produced {}{:?} but the shape rule inferred {}",
                tensor.dtype(),
                tensor.shape(),
                fact
            )));
        }
        fact.konst = Some(Arc::new(tensor));
    }
    Ok(facts)
}
