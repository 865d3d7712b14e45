//! Fusion of matrix products with constant weights into `Linear`.
//!
//! Rewritten forms, all with an f32 constant rank-2 weight:
//!
//! - `MatMul(x, W[in, out])`, followed when possible by `Add` of a constant
//!   bias with `out` elements along the last axis (in either operand order);
//! - `Gemm(a, B, C?)` with `alpha = beta = 1`, no `transA`, and `C` absent
//!   or a per-column bias.
//!
//! `Linear` stores its weight as `[out, in]` (PyTorch layout), so the MatMul
//! weight is transposed once here, at compile time. A bias that is not
//! per-column (e.g. a full `[rows, out]` matrix) stays a separate `Add`.

use std::sync::Arc;

use ndarray::Ix2;

use super::Pass;
use super::pattern::{other_operand, result, single_use};
use crate::error::{Error, Result};
use crate::ir::op::BinaryOp;
use crate::ir::{Fact, Graph, NodeId, Op, ValueId};
use crate::tensor::{DType, Tensor};

pub struct FuseLinear;

impl Pass for FuseLinear {
    fn name(&self) -> &'static str {
        "fuse-linear"
    }

    fn run(&self, graph: &mut Graph) -> Result<usize> {
        let mut fused = 0;
        for node in graph.topo_order() {
            if !graph.contains_node(node) {
                continue;
            }
            let rewritten = match graph.node(node).op {
                Op::MatMul => fuse_matmul(graph, node)?,
                Op::Gemm { .. } => fuse_gemm(graph, node)?,
                _ => false,
            };
            fused += rewritten as usize;
        }
        graph.remove_dead_nodes();
        Ok(fused)
    }
}

/// The f32 rank-2 constant data of `v`, if it is one.
fn weight_matrix(graph: &Graph, v: ValueId) -> Option<ndarray::Array2<f32>> {
    let data = graph.konst(v)?.as_f32()?;
    data.clone().into_dimensionality::<Ix2>().ok()
}

/// A per-column bias of `columns` elements (`[N]` or `[1, .., 1, N]`), flattened.
fn column_bias(graph: &Graph, v: ValueId, columns: usize) -> Option<Tensor> {
    let fact = graph.fact(v);
    let per_column = fact.dtype == DType::F32
        && fact.shape.last() == Some(&columns)
        && fact.shape.iter().rev().skip(1).all(|&d| d == 1);
    if !per_column {
        return None;
    }
    graph.konst(v)?.reshaped(&[columns]).ok()
}

fn fuse_matmul(graph: &mut Graph, matmul: NodeId) -> Result<bool> {
    let (Some(x), Some(w)) = (graph.node(matmul).inputs[0], graph.node(matmul).inputs[1]) else { return Ok(false) };
    let Some(weight) = weight_matrix(graph, w) else { return Ok(false) };
    if graph.fact(x).dtype != DType::F32 || graph.fact(x).rank() < 2 {
        return Ok(false);
    }
    let out_features = weight.ncols();
    let product = result(graph, matmul);
    let name = graph.node(matmul).name.trim_end_matches("/MatMul").to_string();

    // A following bias Add, if it adds one value per output column.
    let mut out = product;
    let mut bias = None;
    if single_use(graph, product) {
        let (user, _) = graph.users(product)[0];
        if graph.node(user).op == Op::Binary(BinaryOp::Add) {
            let b = other_operand(graph, user, product).expect("user reads the product");
            if let Some(data) = column_bias(graph, b, out_features)
                && graph.fact(result(graph, user)).shape == graph.fact(product).shape
            {
                bias = Some(graph.add_constant(format!("{name}/bias"), Arc::new(data)));
                out = result(graph, user);
            }
        }
    }

    let transposed = Tensor::F32(weight.t().as_standard_layout().into_owned().into_dyn());
    let weight = graph.add_constant(format!("{name}/weight"), Arc::new(transposed));
    let fact = Fact::new(DType::F32, graph.fact(out).shape.clone());
    let linear = graph.add_simple(Op::Linear, name, vec![Some(x), Some(weight), bias], fact);
    graph.replace_all_uses(out, linear);
    Ok(true)
}

fn fuse_gemm(graph: &mut Graph, gemm: NodeId) -> Result<bool> {
    let Op::Gemm { alpha, beta, trans_a, trans_b } = graph.node(gemm).op.clone() else {
        return Err(Error::Internal("fuse_gemm: node is not a Gemm".into()));
    };
    if alpha != 1.0 || trans_a {
        return Ok(false);
    }
    let inputs = graph.node(gemm).inputs.clone();
    let (Some(a), Some(b)) = (inputs[0], inputs[1]) else { return Ok(false) };
    let Some(matrix) = weight_matrix(graph, b) else { return Ok(false) };
    if graph.fact(a).dtype != DType::F32 {
        return Ok(false);
    }
    // Linear wants [out, in]: B is [in, out] unless transB.
    let weight = if trans_b { matrix } else { matrix.t().as_standard_layout().into_owned() };
    let out_features = weight.nrows();
    let name = graph.node(gemm).name.clone();
    // Constants named after the layer (`/head/weight`), as for MatMul, so
    // that load-weights matches a state dict's `head.weight`.
    let prefix = name.trim_end_matches("/Gemm").to_string();
    let bias = match inputs.get(2).copied().flatten() {
        None => None,
        Some(c) if beta == 1.0 => match column_bias(graph, c, out_features) {
            Some(data) => Some(graph.add_constant(format!("{prefix}/bias"), Arc::new(data))),
            None => return Ok(false),
        },
        Some(_) => return Ok(false),
    };
    let out = result(graph, gemm);
    let weight = graph.add_constant(format!("{prefix}/weight"), Arc::new(Tensor::F32(weight.into_dyn())));
    let fact = Fact::new(DType::F32, graph.fact(out).shape.clone());
    let linear = graph.add_simple(Op::Linear, name, vec![Some(a), Some(weight), bias], fact);
    graph.replace_all_uses(out, linear);
    Ok(true)
}
