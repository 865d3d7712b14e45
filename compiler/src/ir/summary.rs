//! Model statistics: operator counts, parameters and FLOPs.
//!
//! FLOPs count a multiply-add as two operations for matrix products and
//! convolutions; elementwise, normalization and data-movement operators
//! count one operation per result element (an estimate: exp or erf cost far
//! more than one instruction). Constant nodes and shape computations on
//! constants cost nothing.

use std::collections::BTreeMap;
use std::fmt;

use super::graph::{Graph, NodeId};
use super::op::Op;

/// Statistics of one graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Number of nodes per operator name, constants and inputs excluded.
    pub op_counts: BTreeMap<String, usize>,
    /// Elements of floating-point and INT8 constants (weights, biases,
    /// embeddings, quantized weights and their scales). A constant whose
    /// leading axis is the batch and whose batch slices are all equal (a
    /// class token expanded to the batch) counts one slice, so the count
    /// does not depend on the batch.
    pub parameters: u64,
    /// Estimated floating-point operations of one run.
    pub flops: u64,
}

impl Summary {
    pub fn of(graph: &Graph) -> Summary {
        let mut summary = Summary::default();
        let batch = graph.inputs().first().and_then(|&input| graph.fact(input).shape.first().copied()).unwrap_or(1);
        for id in graph.node_ids() {
            let node = graph.node(id);
            match node.op {
                Op::Input => {}
                Op::Constant => {
                    let fact = graph.fact(node.outputs[0]);
                    if fact.dtype.is_float() || fact.dtype == crate::tensor::DType::I8 {
                        let copies = if is_batch_broadcast(graph, node.outputs[0], batch) { batch } else { 1 };
                        summary.parameters += (fact.numel() / copies) as u64;
                    }
                }
                _ => {
                    *summary.op_counts.entry(node.op.name().to_string()).or_default() += 1;
                    summary.flops += node_flops(graph, id);
                }
            }
        }
        summary
    }
}

/// Returns whether constant `value` has `batch` (above 1) as its leading
/// axis and the same f32 values in every batch slice.
fn is_batch_broadcast(graph: &Graph, value: super::graph::ValueId, batch: usize) -> bool {
    let Some(values) = graph.konst(value).and_then(|t| t.as_f32()) else {
        return false;
    };
    if batch <= 1 || values.ndim() < 2 || values.shape()[0] != batch {
        return false;
    }
    let first = values.index_axis(ndarray::Axis(0), 0);
    values.outer_iter().skip(1).all(|slice| slice.iter().zip(first.iter()).all(|(a, b)| a.to_bits() == b.to_bits()))
}

/// Estimated FLOPs of one node (see the module doc for the convention).
pub fn node_flops(graph: &Graph, id: NodeId) -> u64 {
    let node = graph.node(id);
    let out = graph.fact(node.outputs[0]);
    let out_elems = node.outputs.iter().map(|v| graph.fact(*v).numel() as u64).sum::<u64>();
    let operand = |i: usize| node.inputs.get(i).copied().flatten().map(|v| graph.fact(v));
    // Results that are known at compile time cost nothing at run time.
    if out.konst.is_some() {
        return 0;
    }
    match &node.op {
        Op::MatMul => {
            let k = operand(0).and_then(|a| a.shape.last().copied()).unwrap_or(0) as u64;
            2 * out_elems * k
        }
        Op::Gemm { trans_a, .. } => {
            let a = operand(0).map(|a| a.shape.clone()).unwrap_or_default();
            let k = if *trans_a { a.first() } else { a.get(1) }.copied().unwrap_or(0) as u64;
            2 * out_elems * k
        }
        Op::Linear | Op::QLinear => {
            let weight = if node.op == Op::QLinear { 2 } else { 1 };
            let k = operand(weight).and_then(|w| w.shape.get(1).copied()).unwrap_or(0) as u64;
            2 * out_elems * k
        }
        Op::Attention { head_dim, .. } => {
            // scores = q k^T and out = p v: two products of tokens x tokens x head_dim per head.
            let q = operand(0).map(|q| q.shape.clone()).unwrap_or_default();
            let tokens = q.get(1).copied().unwrap_or(0) as u64;
            let scores = out_elems / (*head_dim).max(1) as u64 * tokens;
            4 * scores * *head_dim as u64 + 5 * scores
        }
        Op::Conv(_) => {
            // Each result element is a dot product over weight dims [Cin/group, k..].
            let w = operand(1).map(|w| w.shape.clone()).unwrap_or_default();
            let per_output: u64 = w.iter().skip(1).map(|&d| d as u64).product();
            2 * out_elems * per_output
        }
        Op::ConvTranspose(_) => {
            let x = operand(0).map(|x| x.numel() as u64).unwrap_or(0);
            let w = operand(1).map(|w| w.shape.clone()).unwrap_or_default();
            let per_input: u64 = w.iter().skip(1).map(|&d| d as u64).product();
            2 * x * per_input
        }
        Op::Col2im(_) | Op::Reduce { .. } => operand(0).map(|x| x.numel() as u64).unwrap_or(0),
        // About five passes over the row: max or mean, subtract, exp or
        // square, sum, scale.
        Op::Softmax { .. } | Op::LogSoftmax { .. } | Op::LayerNorm { .. } => 5 * out_elems,
        _ => out_elems,
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "parameters: {} ({:.2} M)", self.parameters, self.parameters as f64 / 1e6)?;
        writeln!(f, "FLOPs:      {} ({:.3} G)", self.flops, self.flops as f64 / 1e9)?;
        writeln!(f, "operators:")?;
        let mut counts: Vec<_> = self.op_counts.iter().collect();
        counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (name, count) in counts {
            writeln!(f, "  {name:<20} {count}")?;
        }
        Ok(())
    }
}
