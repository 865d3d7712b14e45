//! Reverse-mode differentiation of a graph's `f32` values.
//!
//! [`Backward::new`] picks the region to differentiate: the nodes that read
//! a value depending on one of the requested values (`wrt`) and whose
//! results reach the chosen output. Every operator in that region must have
//! a rule in [`rules`]; an operator without one is named when the region is
//! built, before any tensor is computed. [`Backward::forward`] runs the
//! graph with the reference interpreter and keeps the values the region
//! reads. [`Backward::gradients`] then sweeps the region in reverse
//! topological order from a seed cotangent at the output and returns
//! `d <seed, output> / d value` for every requested value.
//!
//! The sweep computes in `f32`, like the graphs it differentiates. Values
//! that do not depend on a requested value get no gradient, so a region
//! that starts in the middle of a network costs only the part after it.

mod layout;
mod linalg;
mod pointwise;
mod rules;
mod spatial;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use ndarray::ArrayD;

use crate::error::{Error, Result};
use crate::interp::run_with_taps;
use crate::ir::{Graph, NodeId, Op, ValueId};
use crate::tensor::{DType, ShapeDisplay, Tensor};

/// The part of a graph between some values and one output, ready to be
/// differentiated.
pub struct Backward<'g> {
    graph: &'g Graph,
    output: ValueId,
    wrt: Vec<ValueId>,
    /// Region nodes in topological order.
    region: Vec<NodeId>,
    /// `f32` values that depend on a value of `wrt` (the values themselves included).
    active: HashSet<ValueId>,
}

/// The values of one forward run that the backward sweep reads.
pub struct Tape {
    values: HashMap<ValueId, Tensor>,
}

impl Tape {
    /// Returns a value of the forward run, if it was recorded.
    pub fn get(&self, value: ValueId) -> Option<&Tensor> {
        self.values.get(&value)
    }
}

impl<'g> Backward<'g> {
    /// Prepares the gradients of `output` with respect to `wrt`.
    pub fn new(graph: &'g Graph, wrt: &[ValueId], output: ValueId) -> Result<Backward<'g>> {
        for &value in wrt.iter().chain([&output]) {
            if !graph.contains_value(value) {
                return Err(Error::Internal(format!("cannot differentiate {value}: the graph has no such value")));
            }
            let fact = graph.fact(value);
            if fact.dtype != DType::F32 {
                return Err(Error::Compress(format!(
                    "gradients need f32 values, but '{}' is {}{}",
                    graph.value(value).name,
                    fact.dtype,
                    ShapeDisplay(&fact.shape)
                )));
            }
        }
        let order = graph.topo_order();
        let active = active_values(graph, &order, wrt);
        let ancestors = ancestor_nodes(graph, output);
        let region: Vec<NodeId> = order
            .into_iter()
            .filter(|&id| {
                let node = graph.node(id);
                ancestors.contains(&id) && node.inputs.iter().flatten().any(|v| active.contains(v))
            })
            .collect();
        for &id in &region {
            let node = graph.node(id);
            if !rules::supported(&node.op) {
                return Err(Error::node(
                    &node.name,
                    node.op.name(),
                    "no gradient rule exists for this operator, so gradients cannot flow back through it",
                ));
            }
        }
        Ok(Backward { graph, output, wrt: wrt.to_vec(), region, active })
    }

    /// Runs the graph on `inputs` and keeps what [`Backward::gradients`] reads.
    pub fn forward(&self, inputs: &[(ValueId, Tensor)]) -> Result<Tape> {
        let mut recorded: Vec<ValueId> = Vec::new();
        let mut seen = HashSet::new();
        let reads = self.region.iter().flat_map(|&id| {
            let node = self.graph.node(id);
            node.inputs.iter().flatten().chain(&node.outputs).copied().collect::<Vec<_>>()
        });
        for value in reads.chain(self.wrt.iter().copied()).chain([self.output]) {
            if self.graph.konst(value).is_none() && seen.insert(value) {
                recorded.push(value);
            }
        }
        let (_, tapped) = run_with_taps(self.graph, inputs, &recorded)?;
        Ok(Tape { values: recorded.into_iter().zip(tapped).collect() })
    }

    /// Computes the gradients of `sum(seed * output)` with respect to each
    /// value of `wrt`, in order. `seed` has the output's shape.
    pub fn gradients(&self, tape: &Tape, seed: ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
        let graph = self.graph;
        let output_shape = &graph.fact(self.output).shape;
        if seed.shape() != output_shape.as_slice() {
            return Err(Error::Internal(format!(
                "gradient seed of shape {:?} for an output of shape {output_shape:?}",
                seed.shape()
            )));
        }
        let requested: HashSet<ValueId> = self.wrt.iter().copied().collect();
        let mut grads: HashMap<ValueId, ArrayD<f32>> = HashMap::from([(self.output, seed)]);
        for &id in self.region.iter().rev() {
            let node = graph.node(id);
            let mut output_grads = Vec::with_capacity(node.outputs.len());
            for value in &node.outputs {
                let grad = if requested.contains(value) { grads.get(value).cloned() } else { grads.remove(value) };
                output_grads.push(grad);
            }
            if output_grads.iter().all(Option::is_none) {
                continue;
            }
            let operands: Vec<Option<&Tensor>> =
                node.inputs.iter().map(|slot| slot.and_then(|v| self.value(tape, v))).collect();
            let outputs: Vec<&Tensor> = node.outputs.iter().filter_map(|&v| self.value(tape, v)).collect();
            if outputs.len() != node.outputs.len() || operands.iter().zip(&node.inputs).any(|(t, v)| t.is_none() && v.is_some()) {
                return Err(Error::Internal(format!("the tape lacks a value of node '{}'", node.name)));
            }
            let needed: Vec<bool> = node.inputs.iter().map(|slot| slot.is_some_and(|v| self.active.contains(&v))).collect();
            let output_grads: Vec<ArrayD<f32>> = output_grads
                .into_iter()
                .zip(&outputs)
                .map(|(grad, out)| grad.unwrap_or_else(|| ArrayD::zeros(out.shape())))
                .collect();
            let input_grads = rules::vjp(&node.op, &operands, &outputs, output_grads, &needed)
                .map_err(|e| e.at(&node.name, node.op.name()))?;
            for (slot, grad) in node.inputs.iter().zip(input_grads) {
                let (Some(value), Some(grad)) = (slot, grad) else { continue };
                if !self.active.contains(value) {
                    continue;
                }
                match grads.get_mut(value) {
                    Some(sum) => *sum += &grad,
                    None => {
                        grads.insert(*value, grad);
                    }
                }
            }
        }
        Ok(self
            .wrt
            .iter()
            .map(|v| grads.get(v).cloned().unwrap_or_else(|| ArrayD::zeros(graph.fact(*v).shape.as_slice())))
            .collect())
    }

    fn value<'t>(&'t self, tape: &'t Tape, value: ValueId) -> Option<&'t Tensor> {
        self.graph.konst(value).map(|t| &**t).or_else(|| tape.get(value))
    }
}

/// Returns the `f32` values computed from a value of `wrt`, and those values.
fn active_values(graph: &Graph, order: &[NodeId], wrt: &[ValueId]) -> HashSet<ValueId> {
    let mut active: HashSet<ValueId> = wrt.iter().copied().collect();
    for &id in order {
        let node = graph.node(id);
        if matches!(node.op, Op::Input | Op::Constant) {
            continue;
        }
        if node.inputs.iter().flatten().any(|v| active.contains(v)) {
            active.extend(node.outputs.iter().filter(|&&v| graph.fact(v).dtype == DType::F32));
        }
    }
    active
}

/// Collects the nodes whose results `output` is computed from, its producer included.
fn ancestor_nodes(graph: &Graph, output: ValueId) -> HashSet<NodeId> {
    let mut found = HashSet::new();
    let mut stack = vec![graph.value(output).producer];
    while let Some(id) = stack.pop() {
        if !found.insert(id) {
            continue;
        }
        for value in graph.node(id).inputs.iter().flatten() {
            stack.push(graph.value(*value).producer);
        }
    }
    found
}
