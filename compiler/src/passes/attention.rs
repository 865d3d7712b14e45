//! Fusion of multi-head scaled dot-product attention into `Attention`.
//!
//! PyTorch exports of ViT attention (timm with separate projections, Hugging
//! Face, and `scaled_dot_product_attention`) split heads and compute
//!
//! ```text
//! qh = Transpose(Reshape(q, [B, N, H, D]), perm=[0,2,1,3])        [B, H, N, D]
//! kt = Transpose(Reshape(k, [B, N, H, D]), perm=[0,2,3,1])        [B, H, D, N]
//!      (or Transpose(.., [0,1,3,2]) of the [0,2,1,3] form)
//! vh = Transpose(Reshape(v, [B, N, H, D]), perm=[0,2,1,3])
//! s  = MatMul(qh * c1, kt * c2) * c3          each scale optional, Mul or Div
//! o  = Reshape(Transpose(MatMul(Softmax(s, axis=-1), vh), [0,2,1,3]), [B, N, H*D])
//! ```
//!
//! and the pass replaces it by `Attention{heads: H, head_dim: D, scale:
//! c1*c2*c3}(q, k, v)`. The projections producing `q`, `k`, `v` and
//! consuming `o` stay `Linear` nodes, so head pruning edits their rows and
//! columns. The pass starts from each `Softmax` over the last axis of a
//! rank-4 tensor and checks every permutation, shape and scale constant;
//! masked attention (an `Add` before the Softmax) is not fused.

use super::Pass;
use super::pattern::{binary, const_scalar, operands2, producer_if, result, single_use};
use crate::error::Result;
use crate::ir::op::BinaryOp;
use crate::ir::{Fact, Graph, NodeId, Op, ValueId};
use crate::tensor::DType;

pub struct FuseAttention;

impl Pass for FuseAttention {
    fn name(&self) -> &'static str {
        "fuse-attention"
    }

    fn run(&self, graph: &mut Graph) -> Result<usize> {
        let mut fused = 0;
        for node in graph.topo_order() {
            if !graph.contains_node(node) {
                continue;
            }
            let Some(m) = match_attention(graph, node) else { continue };
            let fact = Fact::new(DType::F32, graph.fact(m.out).shape.clone());
            let name = graph.node(node).name.trim_end_matches("/Softmax").to_string();
            let op = Op::Attention { heads: m.heads, head_dim: m.head_dim, scale: m.scale as f32 };
            let attention = graph.add_simple(op, name, vec![Some(m.q), Some(m.k), Some(m.v)], fact);
            graph.replace_all_uses(m.out, attention);
            fused += 1;
        }
        graph.remove_dead_nodes();
        Ok(fused)
    }
}

struct AttentionMatch {
    q: ValueId,
    k: ValueId,
    v: ValueId,
    out: ValueId,
    heads: usize,
    head_dim: usize,
    scale: f64,
}

/// Strips an optional `Mul`/`Div` by a scalar constant; returns the operand
/// and the factor it was multiplied by.
fn strip_scale(graph: &Graph, v: ValueId) -> Option<(ValueId, f64)> {
    if let Some(mul) = binary(graph, v, BinaryOp::Mul) {
        let (a, b) = operands2(graph, mul)?;
        if let Some(c) = const_scalar(graph, b).filter(|_| graph.fact(b).numel() == 1) {
            return Some((a, c));
        }
        if let Some(c) = const_scalar(graph, a).filter(|_| graph.fact(a).numel() == 1) {
            return Some((b, c));
        }
        return None;
    }
    if let Some(div) = binary(graph, v, BinaryOp::Div) {
        let (a, b) = operands2(graph, div)?;
        let c = const_scalar(graph, b)?;
        return (c != 0.0).then_some((a, 1.0 / c));
    }
    Some((v, 1.0))
}

/// The single-use Transpose with `perm` producing `v`, and its operand.
fn transposed_from(graph: &Graph, v: ValueId, perm: &[usize]) -> Option<ValueId> {
    let t = producer_if(graph, v, |op| matches!(op, Op::Transpose { perm: p } if p == perm))?;
    single_use(graph, v).then_some(())?;
    graph.node(t).inputs[0]
}

/// `Reshape(x [B, N, H*D]) -> [B, N, H, D]`: returns `x` if the shapes fit.
fn split_heads_source(graph: &Graph, v: ValueId, shape: &[usize]) -> Option<ValueId> {
    let reshape = producer_if(graph, v, |op| matches!(op, Op::Reshape { .. }))?;
    single_use(graph, v).then_some(())?;
    let x = graph.node(reshape).inputs[0]?;
    let (b, n, h, d) = (shape[0], shape[1], shape[2], shape[3]);
    (graph.fact(v).shape == shape && graph.fact(x).shape == [b, n, h * d] && graph.fact(x).dtype == DType::F32)
        .then_some(x)
}

/// Head-split `[B, H, N, D]` value back to its `[B, N, H*D]` source.
fn heads_source(graph: &Graph, vh: ValueId) -> Option<ValueId> {
    let [b, h, n, d] = graph.fact(vh).shape[..] else { return None };
    let r = transposed_from(graph, vh, &[0, 2, 1, 3])?;
    split_heads_source(graph, r, &[b, n, h, d])
}

/// Key transposed to `[B, H, D, N]`, back to its `[B, N, H*D]` source.
fn key_source(graph: &Graph, kt: ValueId) -> Option<ValueId> {
    let [b, h, d, n] = graph.fact(kt).shape[..] else { return None };
    if let Some(r) = transposed_from(graph, kt, &[0, 2, 3, 1]) {
        return split_heads_source(graph, r, &[b, n, h, d]);
    }
    let kh = transposed_from(graph, kt, &[0, 1, 3, 2])?;
    heads_source(graph, kh)
}

fn match_attention(graph: &Graph, softmax: NodeId) -> Option<AttentionMatch> {
    // Phase 1: the softmax over the last axis of [B, H, N, N] scores.
    let Op::Softmax { axis, flatten_tail: false } = graph.node(softmax).op else { return None };
    let scores = graph.node(softmax).inputs[0]?;
    let [b, h, n, n2] = graph.fact(scores).shape[..] else { return None };
    if n != n2 || !(axis == -1 || axis == 3) || !single_use(graph, scores) {
        return None;
    }

    // Phase 2: scores = (qh * c1) @ (kt * c2) * c3.
    let (product, c3) = strip_scale(graph, scores)?;
    if product != scores && !single_use(graph, product) {
        return None;
    }
    let matmul = producer_if(graph, product, |op| *op == Op::MatMul)?;
    let (qs, ks) = operands2(graph, matmul)?;
    let (qh, c1) = strip_scale(graph, qs)?;
    let (kt, c2) = strip_scale(graph, ks)?;
    if (qs != qh && !single_use(graph, qs)) || (ks != kt && !single_use(graph, ks)) {
        return None;
    }
    let q = heads_source(graph, qh)?;
    let k = key_source(graph, kt)?;
    let d = graph.fact(qh).shape[3];

    // Phase 3: out = merge_heads(softmax @ vh).
    let probs = result(graph, softmax);
    if !single_use(graph, probs) {
        return None;
    }
    let (context_mm, slot) = graph.users(probs)[0];
    if graph.node(context_mm).op != Op::MatMul || slot != 0 {
        return None;
    }
    let vh = graph.node(context_mm).inputs[1]?;
    let v = heads_source(graph, vh)?;
    let context = result(graph, context_mm);
    if !single_use(graph, context) {
        return None;
    }
    let (transpose, _) = graph.users(context)[0];
    if !matches!(&graph.node(transpose).op, Op::Transpose { perm } if perm == &[0, 2, 1, 3]) {
        return None;
    }
    let merged = result(graph, transpose);
    if !single_use(graph, merged) {
        return None;
    }
    let (reshape, _) = graph.users(merged)[0];
    if !matches!(graph.node(reshape).op, Op::Reshape { .. }) {
        return None;
    }
    let out = result(graph, reshape);
    let same_shapes = [q, k, v].iter().all(|&x| graph.fact(x).shape == [b, n, h * d]);
    if graph.fact(out).shape != [b, n, h * d] || !same_shapes {
        return None;
    }
    Some(AttentionMatch { q, k, v, out, heads: h, head_dim: d, scale: c1 * c2 * c3 })
}
