//! Removal of operators that compute an identity.
//!
//! Removed: `Identity`; `Cast` to the operand's own type; `Reshape`,
//! `Expand`, `Squeeze`/`Unsqueeze`/`Flatten` whose result has the operand's
//! shape; `Transpose` with the identity permutation. Each rewrite makes the
//! node's users read the operand directly. A `Cast` that changes the type
//! (for example f32 -> f16 -> f32, which rounds) is never removed.

use super::Pass;
use crate::error::Result;
use crate::ir::{Graph, Op};

pub struct Simplify;

impl Pass for Simplify {
    fn name(&self) -> &'static str {
        "simplify"
    }

    fn run(&self, graph: &mut Graph) -> Result<usize> {
        let mut removed = 0;
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
