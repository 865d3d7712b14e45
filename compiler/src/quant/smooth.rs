//! SmoothQuant-style outlier smoothing for Linear layers that read a LayerNorm.
//!
//! A few channels of a ViT's LayerNorm output are much larger than the
//! rest, so one per-tensor activation scale wastes most of the 8 bits on
//! them. With `s_j = max|x_j|^alpha / max|W[:, j]|^(1 - alpha)` per input
//! channel `j`, the LayerNorm's scale and bias are divided by `s` and the
//! weight columns of every Linear that reads it are multiplied by `s`. The
//! f32 model computes the same function, but the activation range flattens
//! and the weights, quantized per output channel, absorb the difference.
//!
//! A LayerNorm qualifies when its scale (and bias, if any) are constants and
//! every user of its result is an INT8 Linear with a constant weight.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::config::{Precision, QuantConfig};
use crate::ir::{Graph, NodeId, Op, ValueId};
use crate::tensor::Tensor;

/// Smoothing factors are kept in this range so that no weight or scale
/// overflows or vanishes.
const FACTOR_LIMIT: f32 = 1e4;

/// One smoothed LayerNorm, for the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SmoothedNorm {
    pub layer_norm: String,
    pub linears: Vec<String>,
    pub max_factor: f32,
    pub min_factor: f32,
}

/// The LayerNorm results that can be smoothed, with their Linear users.
pub fn candidates(graph: &Graph, config: &QuantConfig) -> Vec<(NodeId, Vec<NodeId>)> {
    let mut found = Vec::new();
    for node in graph.topo_order() {
        let n = graph.node(node);
        if !matches!(n.op, Op::LayerNorm { .. }) || config.precision_of("LayerNorm", &n.name) == Precision::Int8 {
            continue;
        }
        let constant_params = n.inputs[1..].iter().flatten().all(|&v| graph.konst(v).is_some_and(|t| t.as_f32().is_some()));
        let out = n.outputs[0];
        let users = graph.users(out);
        let all_linear = !users.is_empty()
            && users.iter().all(|&(user, slot)| {
                let u = graph.node(user);
                slot == 0
                    && u.op == Op::Linear
                    && config.precision_of("Linear", &u.name) == Precision::Int8
                    && u.inputs.get(1).copied().flatten().is_some_and(|w| graph.konst(w).is_some_and(|t| t.as_f32().is_some()))
            });
        if constant_params && all_linear && !graph.is_graph_output(out) {
            found.push((node, users.into_iter().map(|(user, _)| user).collect()));
        }
    }
    found
}

/// Smooths each candidate with the per-channel maxima in `absmax` (keyed
/// by the LayerNorm's result).
pub fn apply(graph: &mut Graph, candidates: &[(NodeId, Vec<NodeId>)], absmax: &HashMap<ValueId, Vec<f32>>, alpha: f32) -> Vec<SmoothedNorm> {
    let mut smoothed = Vec::new();
    for (norm, linears) in candidates {
        let out = graph.node(*norm).outputs[0];
        let Some(act) = absmax.get(&out) else { continue };

        // Phase 1 of 2: the factor of each channel.
        let mut weight_max = vec![0.0f32; act.len()];
        for &linear in linears {
            let w = weight_of(graph, linear, 1);
            for row in w.chunks(act.len()) {
                for (m, &v) in weight_max.iter_mut().zip(row) {
                    *m = m.max(v.abs());
                }
            }
        }
        let factors: Vec<f32> = act
            .iter()
            .zip(&weight_max)
            .map(|(&a, &w)| {
                if a > 0.0 && w > 0.0 { (a.powf(alpha) / w.powf(1.0 - alpha)).clamp(1.0 / FACTOR_LIMIT, FACTOR_LIMIT) } else { 1.0 }
            })
            .collect();

        // Phase 2 of 2: divide the LayerNorm's scale and bias, multiply the weight columns.
        for slot in 1..graph.node(*norm).inputs.len() {
            if graph.node(*norm).inputs[slot].is_some() {
                let values: Vec<f32> = weight_of(graph, *norm, slot).iter().zip(&factors).map(|(v, s)| v / s).collect();
                replace_constant(graph, *norm, slot, values);
            }
        }
        for &linear in linears {
            let w = weight_of(graph, linear, 1);
            let values: Vec<f32> = w.iter().enumerate().map(|(i, v)| v * factors[i % factors.len()]).collect();
            replace_constant(graph, linear, 1, values);
        }
        smoothed.push(SmoothedNorm {
            layer_norm: graph.node(*norm).name.clone(),
            linears: linears.iter().map(|&l| graph.node(l).name.clone()).collect(),
            max_factor: factors.iter().copied().fold(0.0, f32::max),
            min_factor: factors.iter().copied().fold(f32::INFINITY, f32::min),
        });
    }
    smoothed
}

fn weight_of(graph: &Graph, node: NodeId, slot: usize) -> Vec<f32> {
    let v = graph.node(node).inputs[slot].expect("candidates have this operand");
    graph.konst(v).and_then(|t| t.as_f32()).expect("candidates have f32 constants").iter().copied().collect()
}

/// Gives operand `slot` of `node` a new constant of the same shape, so that
/// other users of the old constant keep it.
fn replace_constant(graph: &mut Graph, node: NodeId, slot: usize, values: Vec<f32>) {
    let old = graph.node(node).inputs[slot].expect("candidates have this operand");
    let shape = graph.fact(old).shape.clone();
    let name = format!("{}/smoothed", graph.value(old).name);
    let array = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), values).expect("same element count");
    let constant = graph.add_constant(name, Arc::new(Tensor::F32(array)));
    graph.set_input(node, slot, Some(constant));
}
