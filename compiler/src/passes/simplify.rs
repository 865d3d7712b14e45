//! Removal of operators that compute an identity.
//!
//! Removed: `Identity`; `Cast` to the operand's own type; `Reshape`,
//! `Expand`, `Squeeze`/`Unsqueeze`/`Flatten` whose result has the operand's
//! shape; `Transpose` with the identity permutation. Each rewrite makes the
//! node's users read the operand directly. A `Cast` that changes the type
//! (for example f32 -> f16 -> f32, which rounds) is never removed.
//!
//! A `Concat` also loses its empty operands (a zero-length slice, for
//! example), which contribute nothing to the result; generated code cannot
//! hold zero-size tensors, so this keeps such graphs compilable.

use super::Pass;
use crate::error::Result;
use crate::ir::{Graph, Op, ValueId};

pub struct Simplify;

impl Pass for Simplify {
    fn name(&self) -> &'static str {
        "simplify"
    }

    fn run(&self, graph: &mut Graph) -> Result<usize> {
        let mut removed = drop_empty_concat_operands(graph);
        for node in graph.topo_order() {
            let n = graph.node(node);
            let Some(Some(operand)) = n.inputs.first().copied() else { continue };
            let result = n.outputs[0];
            let same_type = graph.fact(operand).same_type(graph.fact(result));
            let identity = match &n.op {
                Op::Identity => true,
                Op::Cast { .. }
                | Op::Reshape { .. }
                | Op::Expand
                | Op::Squeeze { .. }
                | Op::Unsqueeze { .. }
                | Op::Flatten { .. } => same_type,
                Op::Transpose { perm } => perm.iter().enumerate().all(|(i, &p)| i == p),
                _ => false,
            };
            if identity && same_type && !graph.is_graph_output(result) {
                graph.replace_all_uses(result, operand);
                removed += 1;
            }
        }
        graph.remove_dead_nodes();
        Ok(removed)
    }
}

/// Rebuilds each `Concat` that has an empty operand and a non-empty one
/// without its empty operands; returns the number of nodes rebuilt.
fn drop_empty_concat_operands(graph: &mut Graph) -> usize {
    let mut rebuilt = 0;
    for node in graph.topo_order() {
        let n = graph.node(node);
        if !matches!(n.op, Op::Concat { .. }) {
            continue;
        }
        let is_empty = |v: &Option<ValueId>| v.is_some_and(|v| graph.fact(v).numel() == 0);
        let kept: Vec<Option<ValueId>> = n.inputs.iter().copied().filter(|v| !is_empty(v)).collect();
        if kept.len() == n.inputs.len() || kept.is_empty() {
            continue;
        }
        let result = n.outputs[0];
        let (op, name) = (n.op.clone(), n.name.clone());
        let fact = graph.fact(result).clone();
        let value_name = graph.value(result).name.clone();
        let replacement = graph.add_simple(op, name, kept, fact);
        graph.value_mut(replacement).name = value_name;
        graph.replace_all_uses(result, replacement);
        rebuilt += 1;
    }
    rebuilt
}
