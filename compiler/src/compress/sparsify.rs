//! Unstructured magnitude pruning.
//!
//! Weights are zeroed in blocks of `block` consecutive input columns of one
//! output row, ranked by their L2 norm (single weights when `block = 1`).
//! The zeros only save time where the GEMM can skip them: the lowering
//! picks a block-sparse GEMM for a weight whose `8 x 4` packed tiles are
//! empty often enough, and the build report says which layers got it.

use super::PassOutcome;
use super::edit::Edit;
use super::importance::{linear_bias, linear_weight};
use super::recipe::{SparsifySpec, SparsityGranularity};
use crate::error::{Error, Result};
use crate::ir::{Graph, NodeId};
use crate::tensor::Tensor;

pub fn run(graph: &Graph, layers: &[NodeId], spec: &SparsifySpec) -> Result<PassOutcome> {
    if layers.is_empty() {
        return Err(Error::Recipe("sparsify: no Linear layer matches the scope and layer patterns".into()));
    }
    // Block norms of every selected layer: (layer, row, first column, norm).
    let mut blocks: Vec<Vec<f32>> = Vec::new();
    let mut weights = Vec::new();
    for &node in layers {
        let weight = linear_weight(graph, node).as_f32().ok_or_else(|| Error::Compress("sparsify needs f32 weights".into()))?;
        let (rows, cols) = (weight.shape()[0], weight.shape()[1]);
        let data: Vec<f32> = weight.iter().copied().collect();
        let per_row = cols.div_ceil(spec.block);
        let mut norms = Vec::with_capacity(rows * per_row);
        for r in 0..rows {
            for b in 0..per_row {
                let range = r * cols + b * spec.block..r * cols + ((b + 1) * spec.block).min(cols);
                norms.push(data[range].iter().map(|w| w * w).sum::<f32>().sqrt());
            }
        }
        blocks.push(norms);
        weights.push((data, rows, cols));
    }

    let thresholds: Vec<f32> = match spec.granularity {
        SparsityGranularity::Layer => blocks.iter().map(|norms| threshold(norms, spec.sparsity)).collect(),
        SparsityGranularity::Global => {
            let all: Vec<f32> = blocks.iter().flatten().copied().collect();
            vec![threshold(&all, spec.sparsity); blocks.len()]
        }
    };

    let mut outcome = PassOutcome::default();
    for (((&node, norms), (mut data, rows, cols)), limit) in layers.iter().zip(&blocks).zip(weights).zip(thresholds) {
        let per_row = cols.div_ceil(spec.block);
        for (index, &norm) in norms.iter().enumerate() {
            if norm < limit {
                let (r, b) = (index / per_row, index % per_row);
                let range = r * cols + b * spec.block..r * cols + ((b + 1) * spec.block).min(cols);
                data[range].fill(0.0);
            }
        }
        let zeros = data.iter().filter(|w| **w == 0.0).count();
        let name = graph.node(node).name.clone();
        let weight = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[rows, cols]), data).expect("shape matches data");
        outcome.edits.push(Edit::Linear {
            node: name.clone(),
            weight: Tensor::F32(weight).into(),
            bias: linear_bias(graph, node).cloned().map(Into::into),
        });
        outcome.details.insert(name.clone(), format!("sparsity {:.3}", zeros as f64 / (rows * cols) as f64));
        outcome.refit.push(name.clone());
        outcome.sparse.push(name);
    }
    Ok(outcome)
}

/// The norm below which `fraction` of `norms` fall.
fn threshold(norms: &[f32], fraction: f64) -> f32 {
    let count = (fraction * norms.len() as f64).round() as usize;
    if count == 0 {
        return f32::NEG_INFINITY;
    }
    let mut sorted = norms.to_vec();
    sorted.sort_by(f32::total_cmp);
    // Every norm strictly below the returned value is pruned, so return
    // the first kept one.
    sorted.get(count).copied().unwrap_or(f32::INFINITY)
}
