//! The deterministic text form of the IR.
//!
//! One line per node in [`Graph::topo_order`], each constant just before
//! its first user:
//!
//! ```text
//! v7 = Conv v0, v5, v6 kernel=[14,14] strides=[14,14] pads=[0,0,0,0] dilations=[1,1] group=1 : f32[1,384,16,16]  # /embeddings/Conv
//! ```
//!
//! Absent optional operands print as `_`. Constants with at most
//! [`INLINE_MAX`] elements print their values; larger ones print a content
//! hash (the first 16 hex digits of BLAKE3 over dtype, shape and data), so
//! weights are identified but never dumped. The text depends only on the
//! graph, so it is what insta snapshots and `vitc inspect` show.

use std::fmt::Write;

use super::graph::{Graph, NodeId};
use super::op::Op;
use crate::map_tensor;
use crate::tensor::Tensor;

/// Constants with at most this many elements are printed in full.
pub const INLINE_MAX: usize = 8;

/// Prints the whole graph.
pub fn print_graph(graph: &Graph) -> String {
    let mut out = String::new();
    let list = |ids: &[super::ValueId]| ids.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ");
    writeln!(out, "graph({}) -> ({})", list(graph.inputs()), list(graph.outputs())).unwrap();
    // Each constant is printed just before its first user, so weights sit
    // next to the layer that reads them.
    let mut printed = std::collections::HashSet::new();
    let mut emit = |out: &mut String, node: NodeId| {
        if printed.insert(node) {
            out.push_str("  ");
            out.push_str(&print_node(graph, node));
            out.push('\n');
        }
    };
    for node in graph.topo_order() {
        if matches!(graph.node(node).op, Op::Constant) {
            continue;
        }
        for operand in graph.node(node).inputs.iter().flatten() {
            let producer = graph.value(*operand).producer;
            if matches!(graph.node(producer).op, Op::Constant) {
                emit(&mut out, producer);
            }
        }
        emit(&mut out, node);
    }
    // Constants that only graph outputs read.
    for &output in graph.outputs() {
        emit(&mut out, graph.value(output).producer);
    }
    out
}

/// Prints one node as a line of the text form, without indentation.
pub fn print_node(graph: &Graph, id: NodeId) -> String {
    let node = graph.node(id);
    let mut line = String::new();
    let results: Vec<String> = node.outputs.iter().map(|v| v.to_string()).collect();
    write!(line, "{} = ", results.join(", ")).unwrap();

    match &node.op {
        Op::Constant => {
            let fact = graph.fact(node.outputs[0]);
            write!(line, "const {fact}").unwrap();
            if let Some(data) = &fact.konst {
                line.push(' ');
                line.push_str(&constant_summary(data));
            }
        }
        Op::Input => {
            write!(line, "input : {}", graph.fact(node.outputs[0])).unwrap();
        }
        op => {
            line.push_str(op.name());
            let operands: Vec<String> =
                node.inputs.iter().map(|v| v.map_or_else(|| "_".to_string(), |v| v.to_string())).collect();
            if !operands.is_empty() {
                write!(line, " {}", operands.join(", ")).unwrap();
            }
            op.fmt_attrs(&mut line).unwrap();
            let facts: Vec<String> = node.outputs.iter().map(|v| graph.fact(*v).to_string()).collect();
            write!(line, " : {}", facts.join(", ")).unwrap();
        }
    }
    if !node.name.is_empty() {
        write!(line, "  # {}", node.name).unwrap();
    }
    line
}

/// The values of a small constant, or the content hash of a large one.
pub fn constant_summary(tensor: &Tensor) -> String {
    if tensor.len() <= INLINE_MAX {
        let values: Vec<String> = map_tensor!(tensor, a => a.iter().map(|v| format!("{v:?}")).collect());
        return format!("[{}]", values.join(", "));
    }
    let hash = tensor.content_hash().to_hex();
    format!("#{}", &hash.as_str()[..16])
}
