//! Small matching helpers shared by the fusion passes.

use crate::ir::op::BinaryOp;
use crate::ir::{Graph, NodeId, Op, ValueId};

/// The node producing `v` if its operator satisfies `pred`.
pub fn producer_if(graph: &Graph, v: ValueId, pred: impl Fn(&Op) -> bool) -> Option<NodeId> {
    let node = graph.value(v).producer;
    pred(&graph.node(node).op).then_some(node)
}

/// The node producing `v` if it is the binary operator `kind`.
pub fn binary(graph: &Graph, v: ValueId, kind: BinaryOp) -> Option<NodeId> {
    producer_if(graph, v, |op| *op == Op::Binary(kind))
}

/// The two operands of a binary node.
pub fn operands2(graph: &Graph, node: NodeId) -> Option<(ValueId, ValueId)> {
    match graph.node(node).inputs.as_slice() {
        [Some(a), Some(b)] => Some((*a, *b)),
        _ => None,
    }
}

/// Of a commutative binary node, the operand other than `known`.
pub fn other_operand(graph: &Graph, node: NodeId, known: ValueId) -> Option<ValueId> {
    let (a, b) = operands2(graph, node)?;
    if a == known {
        Some(b)
    } else if b == known {
        Some(a)
    } else {
        None
    }
}

/// The value of a constant with exactly one element, as `f64`.
pub fn const_scalar(graph: &Graph, v: ValueId) -> Option<f64> {
    graph.konst(v)?.scalar_f64()
}

/// Whether `v` is a one-element constant equal to `expected` within a
/// relative tolerance of 1e-6 (the precision of an f32 literal).
pub fn is_const_close(graph: &Graph, v: ValueId, expected: f64) -> bool {
    const_scalar(graph, v).is_some_and(|x| (x - expected).abs() <= 1e-6 * expected.abs().max(1e-30))
}

/// Whether `v` has exactly one user node and is not a graph output, so
/// rewriting that user leaves the producer dead.
pub fn single_use(graph: &Graph, v: ValueId) -> bool {
    !graph.is_graph_output(v) && graph.users(v).len() == 1
}

/// The sole result of `node`.
pub fn result(graph: &Graph, node: NodeId) -> ValueId {
    graph.node(node).outputs[0]
}
