//! Constant folding.
//!
//! Import already computed the data of every result whose operands are all
//! constant (see `ir::derive`), which includes the shape subgraphs that
//! dynamic-batch exports build from `Shape`. This pass turns those nodes
//! into `Constant` nodes and removes whatever is left unused, so that a
//! `Reshape` target or an `Expand` shape becomes a plain constant operand.
//!
//! Cost: one walk over the nodes; no tensor is recomputed.

use super::Pass;
use crate::error::Result;
use crate::ir::{Graph, Op};

pub struct FoldConstants;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }

    fn run(&self, graph: &mut Graph) -> Result<usize> {
        let mut folded = 0;
        for node in graph.topo_order() {
            let n = graph.node(node);
            if matches!(n.op, Op::Input | Op::Constant) {
                continue;
            }
            let outputs = n.outputs.clone();
            if !outputs.iter().all(|&v| graph.konst(v).is_some()) {
                continue;
            }
            for v in outputs {
                let data = graph.konst(v).expect("checked above").clone();
                graph.replace_with_constant(v, data);
            }
            folded += 1;
        }
        graph.remove_dead_nodes();
        Ok(folded)
    }
}
