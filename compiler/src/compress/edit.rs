//! Edits that compression passes make, addressed by node name.
//!
//! Passes run on a graph bound to the calibration batch, while a build
//! usually binds the batch to 1. Because every edit names the node it
//! changes, the same list replays onto any binding of the same model:
//! [`apply`] is used both while the passes run and afterwards on the graph
//! that gets compiled.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ir::derive::derive_facts_with;
use crate::ir::verify::verify;
use crate::ir::{Fact, Graph, NodeId, Op};
use crate::tensor::Tensor;

/// One change to a named node.
#[derive(Clone, Debug)]
pub enum Edit {
    /// New weight `[out, in]` and bias `[out]` of the Linear named `node`.
    Linear { node: String, weight: Arc<Tensor>, bias: Option<Arc<Tensor>> },
    /// New head count of the Attention named `node`.
    Heads { node: String, heads: usize },
    /// Inserts a bias-free Linear named `name` with `weight` in front of
    /// the Linear `node`, whose input becomes the new layer's output.
    Factor { node: String, name: String, weight: Arc<Tensor> },
    /// New tensor for the constant value named `value`.
    Constant { value: String, tensor: Arc<Tensor> },
    /// New constant for operand `slot` of the node named `node`, of the
    /// same type and shape as the old one.
    Operand { node: String, slot: usize, tensor: Arc<Tensor> },
}

impl Edit {
    /// The node or value the edit addresses.
    pub fn target(&self) -> &str {
        match self {
            Edit::Linear { node, .. } | Edit::Heads { node, .. } | Edit::Factor { node, .. } | Edit::Operand { node, .. } => node,
            Edit::Constant { value, .. } => value,
        }
    }
}

/// Applies `edits` in order, then re-derives every fact and verifies the graph.
pub fn apply(graph: &mut Graph, edits: &[Edit], stage: &str) -> Result<()> {
    let mut names = node_names(graph);
    for edit in edits {
        apply_one(graph, &mut names, edit)?;
    }
    graph.remove_dead_nodes();
    refresh_facts(graph)?;
    verify(graph, stage)
}

fn node_names(graph: &Graph) -> HashMap<String, NodeId> {
    graph.node_ids().map(|id| (graph.node(id).name.clone(), id)).collect()
}

fn find(names: &HashMap<String, NodeId>, name: &str) -> Result<NodeId> {
    names.get(name).copied().ok_or_else(|| Error::Compress(format!("the graph has no node named '{name}'")))
}

fn apply_one(graph: &mut Graph, names: &mut HashMap<String, NodeId>, edit: &Edit) -> Result<()> {
    match edit {
        Edit::Linear { node, weight, bias } => {
            let id = find(names, node)?;
            expect_op(graph, id, "Linear")?;
            replace_operand(graph, id, 1, Some(weight.clone()));
            replace_operand(graph, id, 2, bias.clone());
        }
        Edit::Heads { node, heads } => {
            let id = find(names, node)?;
            match &mut graph.node_mut(id).op {
                Op::Attention { heads: h, .. } => *h = *heads,
                other => {
                    return Err(Error::Compress(format!("node '{node}' is {}, not Attention", other.name())));
                }
            }
        }
        Edit::Factor { node, name, weight } => {
            let id = find(names, node)?;
            expect_op(graph, id, "Linear")?;
            let input = graph.node(id).inputs[0].ok_or_else(|| Error::Compress(format!("Linear '{node}' has no input")))?;
            let weight_value = graph.add_constant(format!("{name}/weight"), weight.clone());
            // The fact is a placeholder: refresh_facts derives the real one.
            let placeholder = graph.fact(input).clone();
            let factor = graph.add_simple(Op::Linear, name.clone(), vec![Some(input), Some(weight_value), None], placeholder);
            graph.set_input(id, 0, Some(factor));
            names.insert(name.clone(), graph.value(factor).producer);
        }
        Edit::Constant { value, tensor } => {
            // An earlier edit in this list may have replaced the constant
            // under the same name, and the old one stays until dead nodes
            // are removed. So the constant still in use is the target.
            let id = graph
                .value_ids()
                .filter(|&v| graph.value(v).name == *value && graph.producer(v).op == Op::Constant)
                .filter(|&v| graph.use_count(v) > 0)
                .last()
                .ok_or_else(|| Error::Compress(format!("the graph has no constant named '{value}'")))?;
            let old = graph.fact(id);
            if old.shape != tensor.shape() || old.dtype != tensor.dtype() {
                return Err(Error::Compress(format!(
                    "constant '{value}' is {old}, but the replacement is {}{:?}",
                    tensor.dtype(),
                    tensor.shape()
                )));
            }
            let replacement = graph.add_constant(value.clone(), tensor.clone());
            graph.replace_all_uses(id, replacement);
        }
        Edit::Operand { node, slot, tensor } => {
            let id = find(names, node)?;
            let old = graph.node(id).inputs.get(*slot).copied().flatten().and_then(|v| graph.konst(v).map(|_| graph.fact(v)));
            let Some(old) = old else {
                return Err(Error::Compress(format!("operand {slot} of node '{node}' is not a constant")));
            };
            if old.shape != tensor.shape() || old.dtype != tensor.dtype() {
                return Err(Error::Compress(format!(
                    "operand {slot} of node '{node}' is {old}, but the replacement is {}{:?}",
                    tensor.dtype(),
                    tensor.shape()
                )));
            }
            replace_operand(graph, id, *slot, Some(tensor.clone()));
        }
    }
    Ok(())
}

fn expect_op(graph: &Graph, id: NodeId, op: &str) -> Result<()> {
    let node = graph.node(id);
    if node.op.name() == op {
        Ok(())
    } else {
        Err(Error::Compress(format!("node '{}' is {}, not {op}", node.name, node.op.name())))
    }
}

/// Points operand `slot` of `node` at a new constant holding `tensor`
/// (named like the old operand), or removes the operand.
fn replace_operand(graph: &mut Graph, node: NodeId, slot: usize, tensor: Option<Arc<Tensor>>) {
    let old = graph.node(node).inputs.get(slot).copied().flatten();
    let name = match old {
        Some(v) => graph.value(v).name.clone(),
        None => format!("{}/{}", graph.node(node).name, if slot == 1 { "weight" } else { "bias" }),
    };
    let value = tensor.map(|t| graph.add_constant(name, t));
    if slot >= graph.node(node).inputs.len() {
        graph.node_mut(node).inputs.resize(slot + 1, None);
    }
    graph.set_input(node, slot, value);
}

/// Re-derives the facts of every computed value from the graph's constants
/// and inputs, without folding, so shapes follow edited weights.
pub fn refresh_facts(graph: &mut Graph) -> Result<()> {
    for id in graph.topo_order() {
        let node = graph.node(id);
        if matches!(node.op, Op::Input | Op::Constant) {
            continue;
        }
        let inputs: Vec<Option<Fact>> = node.inputs.iter().map(|v| v.map(|v| graph.fact(v).clone())).collect();
        let refs: Vec<Option<&Fact>> = inputs.iter().map(Option::as_ref).collect();
        let facts = derive_facts_with(&node.op, &refs, false).map_err(|e| e.at(&node.name, node.op.name()))?;
        let outputs = node.outputs.clone();
        for (value, mut fact) in outputs.into_iter().zip(facts) {
            let old = &graph.value(value).fact;
            if old.konst.is_some() && old.same_type(&fact) {
                fact.konst = old.konst.clone();
            }
            graph.value_mut(value).fact = fact;
        }
    }
    Ok(())
}
