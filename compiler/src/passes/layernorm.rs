//! Fusion of decomposed layer normalization into `LayerNorm`.
//!
//! Exporters that predate `LayerNormalization` (and PyTorch at opset < 17)
//! write it as
//!
//! ```text
//! m = ReduceMean(x, axes=[-1], keepdims=1)      d = Sub(x, m)
//! v = ReduceMean(Pow(d, 2), axes=[-1], keepdims=1)
//! y = Div(d, Sqrt(Add(v, eps)))                 (or Mul(d, Reciprocal(Sqrt(..))))
//! out = Add(Mul(y, scale), bias)                 (affine part optional)
//! ```
//!
//! The pass starts at each `ReduceMean` and walks forward. It fuses only when
//! the pattern really is layer normalization over the last axis: both
//! reductions are over the last axis only and keep dims, the exponent is
//! exactly 2, `eps` is a scalar constant, `scale` and `bias` are constants
//! with one element per channel of the last axis, the result has `x`'s
//! shape, and every intermediate value has no other users. Anything else is
//! left unchanged and still computes its exact ONNX result.

use std::sync::Arc;

use super::Pass;
use super::pattern::{const_scalar, is_const_close, other_operand, producer_if, result, single_use};
use crate::error::Result;
use crate::ir::op::{BinaryOp, ReduceKind, UnaryOp};
use crate::ir::{Fact, Graph, NodeId, Op, ValueId};
use crate::tensor::DType;

pub struct FuseLayerNorm;

impl Pass for FuseLayerNorm {
    fn name(&self) -> &'static str {
        "fuse-layernorm"
    }

    fn run(&self, graph: &mut Graph) -> Result<usize> {
        let mut fused = 0;
        for node in graph.topo_order() {
            if !graph.contains_node(node) {
                continue;
            }
            if let Some(m) = match_layernorm(graph, node) {
                apply(graph, m)?;
                fused += 1;
            }
        }
        graph.remove_dead_nodes();
        Ok(fused)
    }
}

struct LayerNormMatch {
    x: ValueId,
    epsilon: f32,
    scale: Option<ValueId>,
    bias: Option<ValueId>,
    out: ValueId,
    name: String,
}

/// Whether `node` is ReduceMean over exactly the last axis of its operand, keeping dims.
fn is_last_axis_mean(graph: &Graph, node: NodeId) -> bool {
    let n = graph.node(node);
    let Op::Reduce { kind: ReduceKind::Mean, axes: Some(axes), keepdims: true, .. } = &n.op else { return false };
    let Some(Some(x)) = n.inputs.first() else { return false };
    let rank = graph.fact(*x).rank() as i64;
    axes.len() == 1 && rank > 0 && (axes[0] == -1 || axes[0] == rank - 1)
}

/// The single user of `v` if it satisfies `pred`.
fn sole_user(graph: &Graph, v: ValueId, pred: impl Fn(&Op) -> bool) -> Option<NodeId> {
    if !single_use(graph, v) {
        return None;
    }
    let (user, _) = graph.users(v)[0];
    pred(&graph.node(user).op).then_some(user)
}

fn match_layernorm(graph: &Graph, mean_node: NodeId) -> Option<LayerNormMatch> {
    // Phase 1: mean and centering.
    if !is_last_axis_mean(graph, mean_node) {
        return None;
    }
    let x = graph.node(mean_node).inputs[0]?;
    let channels = *graph.fact(x).shape.last()?;
    if graph.fact(x).dtype != DType::F32 {
        return None;
    }
    let mean = result(graph, mean_node);
    let sub = sole_user(graph, mean, |op| *op == Op::Binary(BinaryOp::Sub))?;
    if graph.node(sub).inputs != [Some(x), Some(mean)] {
        return None;
    }
    let d = result(graph, sub);

    // Phase 2: variance. `d` feeds the square and the division, nothing else.
    let d_users = graph.users(d);
    if d_users.len() != 2 || graph.is_graph_output(d) {
        return None;
    }
    let is_square = |node: NodeId| match &graph.node(node).op {
        Op::Binary(BinaryOp::Pow) => graph.node(node).inputs[0] == Some(d) && graph.node(node).inputs[1].is_some_and(|e| is_const_close(graph, e, 2.0)),
        Op::Binary(BinaryOp::Mul) => graph.node(node).inputs == [Some(d), Some(d)],
        _ => false,
    };
    let (square, normalize) = match (d_users[0].0, d_users[1].0) {
        (a, b) if is_square(a) => (a, b),
        (a, b) if is_square(b) => (b, a),
        _ => return None,
    };
    let var_node = sole_user(graph, result(graph, square), |_| true)?;
    if !is_last_axis_mean(graph, var_node) {
        return None;
    }
    let var = result(graph, var_node);
    let add_eps = sole_user(graph, var, |op| *op == Op::Binary(BinaryOp::Add))?;
    let eps_value = other_operand(graph, add_eps, var)?;
    let epsilon = const_scalar(graph, eps_value)? as f32;
    let sqrt = sole_user(graph, result(graph, add_eps), |op| *op == Op::Unary(UnaryOp::Sqrt))?;
    let std = result(graph, sqrt);

    // Phase 3: normalization, as Div(d, std) or Mul(d, Reciprocal(std)).
    let normalized = match &graph.node(normalize).op {
        Op::Binary(BinaryOp::Div) if graph.node(normalize).inputs == [Some(d), Some(std)] && single_use(graph, std) => {
            result(graph, normalize)
        }
        Op::Binary(BinaryOp::Mul) => {
            let inv = other_operand(graph, normalize, d)?;
            let recip = producer_if(graph, inv, |op| *op == Op::Unary(UnaryOp::Reciprocal))?;
            if graph.node(recip).inputs != [Some(std)] || !single_use(graph, std) || !single_use(graph, inv) {
                return None;
            }
            result(graph, normalize)
        }
        _ => return None,
    };

    // Phase 4: the optional affine part, with per-channel constants.
    let mut out = normalized;
    let mut scale = None;
    let mut bias = None;
    if let Some(mul) = sole_user(graph, out, |op| *op == Op::Binary(BinaryOp::Mul)) {
        let s = other_operand(graph, mul, out)?;
        if is_per_channel(graph, s, channels) {
            scale = Some(s);
            out = result(graph, mul);
        }
    }
    if let Some(add) = sole_user(graph, out, |op| *op == Op::Binary(BinaryOp::Add)) {
        let b = other_operand(graph, add, out)?;
        if is_per_channel(graph, b, channels) {
            bias = Some(b);
            out = result(graph, add);
        }
    }
    if graph.fact(out).shape != graph.fact(x).shape {
        return None;
    }
    Some(LayerNormMatch { x, epsilon, scale, bias, out, name: graph.node(mean_node).name.clone() })
}

/// Whether `v` is an f32 constant with `channels` elements laid out along
/// the last axis (`[C]` or `[1, .., 1, C]`).
fn is_per_channel(graph: &Graph, v: ValueId, channels: usize) -> bool {
    let fact = graph.fact(v);
    fact.konst.is_some()
        && fact.dtype == DType::F32
        && fact.shape.last() == Some(&channels)
        && fact.shape.iter().rev().skip(1).all(|&d| d == 1)
}

fn apply(graph: &mut Graph, m: LayerNormMatch) -> Result<()> {
    let channels = *graph.fact(m.x).shape.last().expect("matched x has rank >= 1");
    let name = m.name.trim_end_matches("/ReduceMean").to_string();
    let flatten = |graph: &mut Graph, v: ValueId, suffix: &str| -> Result<ValueId> {
        let data = graph.konst(v).expect("per-channel operand is constant").reshaped(&[channels])?;
        Ok(graph.add_constant(format!("{name}/{suffix}"), Arc::new(data)))
    };
    let scale = match m.scale {
        Some(s) => flatten(graph, s, "scale")?,
        None => graph.add_constant(format!("{name}/scale"), Arc::new(crate::tensor::Tensor::from_f32s(&vec![1.0; channels]))),
    };
    let bias = match m.bias {
        Some(b) => Some(flatten(graph, b, "bias")?),
        None => None,
    };
    let fact = Fact::new(DType::F32, graph.fact(m.x).shape.clone());
    let ln = graph.add_simple(Op::LayerNorm { axis: -1, epsilon: m.epsilon }, name, vec![Some(m.x), Some(scale), bias], fact);
    graph.replace_all_uses(m.out, ln);
    Ok(())
}
