//! Unstructured magnitude pruning.
//!
//! Weights are zeroed in blocks of `block-rows` outputs by `block`
//! consecutive inputs, ranked by their L2 norm (single weights when both
//! are 1). The zeros only save time where the GEMM can skip them: the
//! lowering picks a block-sparse GEMM for a weight whose packed tiles of
//! 8 outputs by 4 inputs are empty often enough (see
//! `lower::select::sparse`), so `block-rows = 8, block = 4` is the pattern
//! that pays. Finer patterns leave most tiles with a nonzero weight; they
//! get the sparse kernel only where whole tiles happen to be empty. The
//! build report counts the `sparse_gemm` kernels, and `NAME.program.txt`
//! gives each layer's kept tiles.

use super::PassOutcome;
use super::edit::Edit;
use super::importance::{linear_bias, linear_weight};
use super::recipe::{SparsifySpec, SparsityGranularity};
use crate::error::{Error, Result};
use crate::ir::{Graph, NodeId};
use crate::tensor::Tensor;

/// Block grid of one `[rows, cols]` weight.
struct Grid {
    rows: usize,
    cols: usize,
    block_rows: usize,
    block_cols: usize,
}

impl Grid {
    fn blocks(&self) -> (usize, usize) {
        (self.rows.div_ceil(self.block_rows), self.cols.div_ceil(self.block_cols))
    }

    /// Flat indices of the weights in block `index` (row-major over blocks).
    fn members(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        let per_row = self.blocks().1;
        let (rb, cb) = (index / per_row, index % per_row);
        let rows = rb * self.block_rows..((rb + 1) * self.block_rows).min(self.rows);
        let cols = cb * self.block_cols..((cb + 1) * self.block_cols).min(self.cols);
        rows.flat_map(move |r| cols.clone().map(move |c| r * self.cols + c))
    }
}

pub fn run(graph: &Graph, layers: &[NodeId], spec: &SparsifySpec) -> Result<PassOutcome> {
    if layers.is_empty() {
        return Err(Error::Recipe("sparsify: no Linear layer matches the scope and layer patterns".into()));
    }
    // Block norms of every selected layer, row-major over blocks.
    let mut norms_of = Vec::new();
    let mut weights = Vec::new();
    for &node in layers {
        let weight = linear_weight(graph, node).as_f32().ok_or_else(|| Error::Compress("sparsify needs f32 weights".into()))?;
        let grid = Grid { rows: weight.shape()[0], cols: weight.shape()[1], block_rows: spec.block_rows, block_cols: spec.block };
        let data: Vec<f32> = weight.iter().copied().collect();
        let (row_blocks, col_blocks) = grid.blocks();
        let norms: Vec<f32> =
            (0..row_blocks * col_blocks).map(|b| grid.members(b).map(|i| data[i] * data[i]).sum::<f32>().sqrt()).collect();
        norms_of.push(norms);
        weights.push((data, grid));
    }

    let thresholds: Vec<f32> = match spec.granularity {
        SparsityGranularity::Layer => norms_of.iter().map(|norms| threshold(norms, spec.sparsity)).collect(),
        SparsityGranularity::Global => {
            let all: Vec<f32> = norms_of.iter().flatten().copied().collect();
            let global = threshold(&all, spec.sparsity);
            // A layer keeps at least its largest block: one with every
            // weight zero would cut the network at that point.
            let mut limits = Vec::with_capacity(norms_of.len());
            for norms in &norms_of {
                let largest = norms.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                limits.push(global.min(largest));
            }
            limits
        }
    };

    let mut outcome = PassOutcome::default();
    for (((&node, norms), (mut data, grid)), limit) in layers.iter().zip(&norms_of).zip(weights).zip(thresholds) {
        for (index, &norm) in norms.iter().enumerate() {
            if norm < limit {
                for i in grid.members(index).collect::<Vec<_>>() {
                    data[i] = 0.0;
                }
            }
        }
        let zeros = data.iter().filter(|w| **w == 0.0).count();
        let name = graph.node(node).name.clone();
        let achieved = zeros as f64 / (grid.rows * grid.cols) as f64;
        if spec.granularity == SparsityGranularity::Layer && achieved + 0.05 < spec.sparsity {
            tracing::warn!(
                layer = %name,
                blocks = norms.len(),
                "sparsity {:.3} of {} requested, {achieved:.3} reached: the layer has too few blocks of the chosen size; choose smaller blocks",
                spec.sparsity,
                name
            );
        }
        let weight = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[grid.rows, grid.cols]), data).expect("shape matches data");
        outcome.edits.push(Edit::Linear {
            node: name.clone(),
            weight: Tensor::F32(weight).into(),
            bias: linear_bias(graph, node).cloned().map(Into::into),
        });
        outcome.details.insert(name.clone(), format!("sparsity {achieved:.3}"));
        outcome.refit.push(name.clone());
        outcome.sparse.push(name);
    }
    Ok(outcome)
}

/// Returns the norm below which `fraction` of `norms` fall, rounded down
/// to whole blocks, so at most `fraction` of them are pruned. A layer of
/// one block (a block as large as the matrix) keeps it.
fn threshold(norms: &[f32], fraction: f64) -> f32 {
    let count = (fraction * norms.len() as f64).floor() as usize;
    if count == 0 {
        return f32::NEG_INFINITY;
    }
    let mut sorted = norms.to_vec();
    sorted.sort_by(f32::total_cmp);
    // Every norm strictly below the returned value is pruned, so return
    // the first kept one.
    sorted.get(count).copied().unwrap_or(f32::INFINITY)
}
