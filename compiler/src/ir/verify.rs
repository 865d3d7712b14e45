//! The IR verifier, run by the pass manager after every pass.
//!
//! It checks structure (operand lists agree with edges, every result points
//! back at its producer, operand counts fit the operator, no cycles, graph
//! inputs and outputs exist) and re-derives each node's facts from its
//! operands with the shape rules, which must match the stored facts.

use super::graph::Graph;
use super::infer::infer_op;
use super::op::Op;
use super::printer::print_node;
use crate::error::{Error, Result};

/// Checks `graph`; `stage` names the pass that just ran, for the message.
pub fn verify(graph: &Graph, stage: &str) -> Result<()> {
    let fail = |message: String| Err(Error::Verify { stage: stage.to_string(), message });

    if graph.has_cycle() {
        return fail("the graph has a cycle".into());
    }
    for &v in graph.inputs().iter().chain(graph.outputs()) {
        if !graph.contains_value(v) {
            return fail(format!("graph input or output {v} does not exist"));
        }
    }
    for &v in graph.inputs() {
        if !matches!(graph.producer(v).op, Op::Input) {
            return fail(format!("graph input {v} is not produced by an input node"));
        }
    }

    for id in graph.node_ids() {
        let node = graph.node(id);
        let line = || print_node(graph, id);

        // Structure.
        let (min, max) = node.op.arity();
        if node.inputs.len() < min || node.inputs.len() > max {
            return fail(format!("{} has {} operands, expected {min} to {max}: {}", node.op.name(), node.inputs.len(), line()));
        }
        let expected_outputs = node.op.num_outputs();
        if node.outputs.len() != expected_outputs {
            return fail(format!("{} has {} results, expected {expected_outputs}: {}", node.op.name(), node.outputs.len(), line()));
        }
        for &v in &node.outputs {
            if !graph.contains_value(v) || graph.value(v).producer != id {
                return fail(format!("result {v} does not point back at its node: {}", line()));
            }
        }
        let present = node.inputs.iter().flatten().count();
        let edges = graph.nodes.edges_directed(id.0, petgraph::Direction::Incoming).count();
        if present != edges {
            return fail(format!("{present} operands but {edges} incoming edges: {}", line()));
        }
        for (slot, v) in node.inputs.iter().enumerate() {
            let Some(v) = v else { continue };
            if !graph.contains_value(*v) {
                return fail(format!("operand {slot} refers to removed value {v}: {}", line()));
            }
            if !graph.users(*v).contains(&(id, slot)) {
                return fail(format!("operand {slot} ({v}) has no matching edge: {}", line()));
            }
        }

        // Facts.
        match &node.op {
            Op::Input => {}
            Op::Constant => {
                let fact = graph.fact(node.outputs[0]);
                match &fact.konst {
                    Some(t) if t.dtype() == fact.dtype && t.shape() == fact.shape.as_slice() => {}
                    _ => return fail(format!("constant data disagrees with its fact: {}", line())),
                }
            }
            op => {
                let operand_facts: Vec<_> = node.inputs.iter().map(|v| v.map(|v| graph.fact(v))).collect();
                let derived = infer_op(op, &operand_facts).map_err(|e| Error::Verify {
                    stage: stage.to_string(),
                    message: format!("{}: {}", e.message, line()),
                })?;
                for (fact, &v) in derived.iter().zip(&node.outputs) {
                    if !fact.same_type(graph.fact(v)) {
                        return fail(format!("stored fact of {v} is {} but its operands give {fact}: {}", graph.fact(v), line()));
                    }
                }
            }
        }
    }
    Ok(())
}
