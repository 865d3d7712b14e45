//! Reconstruction-aware importance: the Optimal Brain Surgeon criterion
//! applied to groups of input columns of a Linear layer.
//!
//! For a layer `y = x W^T` with input covariance `H = X^T X / n`, removing
//! the group of input columns `B` and refitting the remaining weights by
//! least squares raises the mean squared output error by
//! `trace(W_B (H^-1)_BB^-1 W_B^T)`. A neuron is one input column of fc2; a
//! head is `head_dim` columns of the output projection. Groups are removed
//! greedily, cheapest first, updating `H^-1` and `W` after each removal as
//! the refit would, so a group that duplicates one already removed is not
//! counted cheap twice.

use nalgebra::DMatrix;

use super::calib::Rows;
use super::linalg::design_matrix;

/// Dampening added to the diagonal of `H`, relative to its mean.
const DAMPENING: f64 = 1e-2;

/// Removal scores of the `weight.ncols() / group` column groups: the
/// running maximum of the error increments along the greedy removal
/// order, so that the lowest scores are always the first groups removed.
/// At most `max_removed` groups are removed; the rest score infinity.
pub fn removal_scores(inputs: &Rows, weight: &DMatrix<f64>, group: usize, max_removed: usize) -> Vec<f64> {
    let columns = weight.ncols();
    let groups = columns / group;
    let x = design_matrix(inputs, false);
    let mut h = x.tr_mul(&x) / inputs.rows().max(1) as f64;
    let mean_diagonal = h.diagonal().mean().max(f64::MIN_POSITIVE);
    for i in 0..columns {
        h[(i, i)] += DAMPENING * mean_diagonal;
    }
    let Some(mut h_inv) = h.try_inverse() else {
        return vec![f64::INFINITY; groups];
    };
    let mut w = weight.clone();
    let mut removed = vec![false; groups];
    let mut scores = vec![f64::INFINITY; groups];
    let mut running = 0.0f64;
    for _ in 0..max_removed.min(groups.saturating_sub(1)) {
        let Some((best, increment, block_inv)) = cheapest_group(&w, &h_inv, group, &removed) else { break };
        running = running.max(increment);
        scores[best] = running;
        removed[best] = true;
        remove_group(&mut w, &mut h_inv, best * group, group, &block_inv);
    }
    scores
}

/// The group whose removal costs least, with its cost and `(H^-1)_BB^-1`.
fn cheapest_group(w: &DMatrix<f64>, h_inv: &DMatrix<f64>, group: usize, removed: &[bool]) -> Option<(usize, f64, DMatrix<f64>)> {
    let mut best: Option<(usize, f64, DMatrix<f64>)> = None;
    for (g, _) in removed.iter().enumerate().filter(|(_, r)| !**r) {
        let start = g * group;
        let block = h_inv.view((start, start), (group, group)).into_owned();
        let Some(block_inv) = block.try_inverse() else { continue };
        // trace(W_B M W_B^T) = trace(M W_B^T W_B), which needs a group x
        // group product rather than an out x out one.
        let w_b = w.columns(start, group);
        let increment = (&block_inv * (w_b.transpose() * w_b)).trace();
        if best.as_ref().is_none_or(|(_, cost, _)| increment < *cost) {
            best = Some((g, increment, block_inv));
        }
    }
    best
}

/// Applies the least-squares compensation for removing columns
/// `start..start+size` to `w`, and drops them from `h_inv`.
fn remove_group(w: &mut DMatrix<f64>, h_inv: &mut DMatrix<f64>, start: usize, size: usize, block_inv: &DMatrix<f64>) {
    let rows_b = h_inv.rows(start, size).into_owned();
    let w_b = w.columns(start, size).into_owned();
    // W <- W - W_B (H^-1)_BB^-1 (H^-1)_B,:
    *w -= &w_b * block_inv * &rows_b;
    // H^-1 <- H^-1 - (H^-1)_:,B (H^-1)_BB^-1 (H^-1)_B,:
    let cols_b = rows_b.transpose();
    *h_inv -= &cols_b * block_inv * &rows_b;
    // The removed block is now zero; pin its diagonal so it never looks cheap.
    for i in start..start + size {
        w.column_mut(i).fill(0.0);
        h_inv[(i, i)] = 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_neuron_is_removed_first() {
        // Column 2 duplicates column 0, so one of the two costs nothing once
        // the other takes over its weight.
        let mut data = Vec::new();
        for i in 0..200 {
            let (a, b) = ((i as f32 * 0.37).sin(), (i as f32 * 0.91).cos());
            data.extend([a, b, a]);
        }
        let rows = Rows { data, cols: 3 };
        let w = DMatrix::from_row_slice(1, 3, &[1.0, 0.5, 1.0]);
        let scores = removal_scores(&rows, &w, 1, 2);
        let first = (0..3).min_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap();
        assert!(first == 0 || first == 2, "scores {scores:?}");
        assert!(scores[first] < 0.05, "scores {scores:?}");
        assert!(scores[1] > scores[first]);
    }
}
