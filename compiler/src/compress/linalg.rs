//! Dense linear algebra for the passes, in f64 on `nalgebra` matrices.

use std::sync::Arc;

use nalgebra::{DMatrix, SymmetricEigen};

use super::calib::Rows;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A 2-D f32 constant as an f64 matrix.
pub fn matrix_of(tensor: &Tensor, name: &str) -> Result<DMatrix<f64>> {
    let array = tensor.as_f32().ok_or_else(|| Error::Compress(format!("weight '{name}' is not f32")))?;
    let &[rows, cols] = array.shape() else {
        return Err(Error::Compress(format!("weight '{name}' has shape {:?}, not [out, in]", array.shape())));
    };
    let data: Vec<f64> = array.iter().map(|&x| x as f64).collect();
    Ok(DMatrix::from_row_slice(rows, cols, &data))
}

/// An f64 matrix as a row-major f32 tensor `[rows, cols]`.
pub fn tensor_of(matrix: &DMatrix<f64>) -> Arc<Tensor> {
    let (rows, cols) = matrix.shape();
    let data: Vec<f32> = (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))).map(|(r, c)| matrix[(r, c)] as f32).collect();
    Arc::new(Tensor::F32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[rows, cols]), data).expect("shape matches data")))
}

pub fn tensor_of_vector(values: &[f64]) -> Arc<Tensor> {
    Arc::new(Tensor::from_f32s(&values.iter().map(|&v| v as f32).collect::<Vec<_>>()))
}

/// Rows as an f64 matrix, with a trailing column of ones when `with_ones`.
pub fn design_matrix(rows: &Rows, with_ones: bool) -> DMatrix<f64> {
    let width = rows.cols + usize::from(with_ones);
    DMatrix::from_fn(rows.rows(), width, |r, c| if c < rows.cols { rows.data[r * rows.cols + c] as f64 } else { 1.0 })
}

/// Least-squares fit of `targets ≈ x W^T + b` with ridge `ridge` relative
/// to the mean diagonal of `x^T x` (the bias is not regularized). The
/// ridge pulls `W` towards `prior` (`[outputs, inputs]`), or towards zero
/// without one. `support`, when given, lists for each output row the input
/// columns its weights may use; every other weight stays zero.
pub struct RidgeFit {
    pub weight: DMatrix<f64>,
    pub bias: Vec<f64>,
}

pub fn ridge_fit(x: &Rows, targets: &Rows, ridge: f64, prior: Option<&DMatrix<f64>>, support: Option<&[Vec<usize>]>) -> Result<RidgeFit> {
    if x.rows() != targets.rows() {
        return Err(Error::Internal(format!("least squares: {} input rows but {} target rows", x.rows(), targets.rows())));
    }
    let inputs = x.cols;
    let design = design_matrix(x, true);
    let t = design_matrix(targets, false);
    let mut gram = design.tr_mul(&design);
    let mut cross = design.tr_mul(&t);
    let mean_diagonal = (0..inputs).map(|i| gram[(i, i)]).sum::<f64>() / inputs.max(1) as f64;
    let lambda = ridge * mean_diagonal.max(f64::MIN_POSITIVE) + 1e-12;
    for i in 0..inputs {
        gram[(i, i)] += lambda;
    }
    if let Some(prior) = prior {
        if prior.shape() != (targets.cols, inputs) {
            return Err(Error::Internal(format!("least squares: prior weight has shape {:?}, expected ({}, {inputs})", prior.shape(), targets.cols)));
        }
        // Minimizing |x W^T + b - t|^2 + lambda |W - prior|^2 adds
        // lambda * prior^T to the right-hand side.
        for o in 0..targets.cols {
            for i in 0..inputs {
                cross[(i, o)] += lambda * prior[(o, i)];
            }
        }
    }
    // The bias column gets a tiny ridge too, so a constant-zero input
    // column never makes the system singular.
    gram[(inputs, inputs)] += 1e-12 * gram[(inputs, inputs)].max(1.0);

    let outputs = targets.cols;
    let mut weight = DMatrix::zeros(outputs, inputs);
    let mut bias = vec![0.0; outputs];
    match support {
        None => {
            let solution = solve_spd(gram, cross)?;
            for o in 0..outputs {
                for i in 0..inputs {
                    weight[(o, i)] = solution[(i, o)];
                }
                bias[o] = solution[(inputs, o)];
            }
        }
        Some(support) => {
            for o in 0..outputs {
                let mut index: Vec<usize> = support[o].clone();
                index.push(inputs);
                let sub = DMatrix::from_fn(index.len(), index.len(), |r, c| gram[(index[r], index[c])]);
                let rhs = DMatrix::from_fn(index.len(), 1, |r, _| cross[(index[r], o)]);
                let solution = solve_spd(sub, rhs)?;
                for (k, &i) in index.iter().enumerate() {
                    if i == inputs {
                        bias[o] = solution[(k, 0)];
                    } else {
                        weight[(o, i)] = solution[(k, 0)];
                    }
                }
            }
        }
    }
    Ok(RidgeFit { weight, bias })
}

fn solve_spd(matrix: DMatrix<f64>, rhs: DMatrix<f64>) -> Result<DMatrix<f64>> {
    let size = matrix.nrows();
    match matrix.clone().cholesky() {
        Some(cholesky) => Ok(cholesky.solve(&rhs)),
        None => matrix.lu().solve(&rhs).ok_or_else(|| {
            Error::Compress(format!("the {size}x{size} least-squares system is singular; raise distill.ridge"))
        }),
    }
}

/// Eigenvalues (descending) and matching eigenvectors (columns) of a
/// symmetric matrix.
pub fn symmetric_eigen(matrix: DMatrix<f64>) -> (Vec<f64>, DMatrix<f64>) {
    let eigen = SymmetricEigen::new(matrix);
    let mut order: Vec<usize> = (0..eigen.eigenvalues.len()).collect();
    order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
    let values = order.iter().map(|&i| eigen.eigenvalues[i].max(0.0)).collect();
    let vectors = DMatrix::from_fn(eigen.eigenvectors.nrows(), order.len(), |r, c| eigen.eigenvectors[(r, order[c])]);
    (values, vectors)
}

/// Singular values (descending) with the left and right singular vectors
/// as columns of `u` and `v`.
pub fn svd(matrix: &DMatrix<f64>) -> Result<(Vec<f64>, DMatrix<f64>, DMatrix<f64>)> {
    let svd = matrix.clone().svd(true, true);
    let (Some(u), Some(v_t)) = (svd.u, svd.v_t) else {
        return Err(Error::Internal("SVD returned no singular vectors".into()));
    };
    let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
    order.sort_by(|&a, &b| svd.singular_values[b].total_cmp(&svd.singular_values[a]));
    let values = order.iter().map(|&i| svd.singular_values[i]).collect();
    let u = DMatrix::from_fn(u.nrows(), order.len(), |r, c| u[(r, order[c])]);
    let v = DMatrix::from_fn(v_t.ncols(), order.len(), |r, c| v_t[(order[c], r)]);
    Ok((values, u, v))
}

/// The smallest `r` whose leading values hold `fraction` of the total.
pub fn rank_for_energy(values: &[f64], fraction: f64) -> usize {
    let total: f64 = values.iter().sum();
    if total <= 0.0 {
        return 1;
    }
    let mut kept = 0.0;
    for (index, value) in values.iter().enumerate() {
        kept += value;
        if kept >= fraction * total - 1e-12 * total {
            return index + 1;
        }
    }
    values.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(data: Vec<f32>, cols: usize) -> Rows {
        Rows { data, cols }
    }

    #[test]
    fn ridge_fit_recovers_exact_linear_map() {
        // targets = x * [[2, -1], [0.5, 3]]^T + [1, -2]
        let mut x = Vec::new();
        let mut t = Vec::new();
        for i in 0..20 {
            let (a, b) = ((i as f32 * 0.37).sin(), (i as f32 * 0.91).cos());
            x.extend([a, b]);
            t.extend([2.0 * a - b + 1.0, 0.5 * a + 3.0 * b - 2.0]);
        }
        let fit = ridge_fit(&rows(x, 2), &rows(t, 2), 0.0, None, None).unwrap();
        let expected = [[2.0, -1.0], [0.5, 3.0]];
        for o in 0..2 {
            for i in 0..2 {
                assert!((fit.weight[(o, i)] - expected[o][i]).abs() < 1e-4, "w[{o},{i}] = {}", fit.weight[(o, i)]);
            }
        }
        assert!((fit.bias[0] - 1.0).abs() < 1e-4);
        assert!((fit.bias[1] + 2.0).abs() < 1e-4);
    }

    #[test]
    fn ridge_fit_respects_support() {
        let mut x = Vec::new();
        let mut t = Vec::new();
        for i in 0..30 {
            let (a, b) = ((i as f32 * 0.37).sin(), (i as f32 * 0.91).cos());
            x.extend([a, b]);
            t.push(a + b);
        }
        let fit = ridge_fit(&rows(x, 2), &rows(t, 1), 0.0, None, Some(&[vec![1]])).unwrap();
        assert_eq!(fit.weight[(0, 0)], 0.0);
        assert!(fit.weight[(0, 1)].abs() > 0.1);
    }

    /// Fits `t = 2 a` from inputs `[a, 0]`. The second input is always
    /// zero, so only the ridge determines its weight.
    fn fit_with_silent_input(prior: Option<&DMatrix<f64>>) -> RidgeFit {
        let mut x = Vec::new();
        let mut t = Vec::new();
        for i in 0..30 {
            let a = (i as f32 * 0.37).sin();
            x.extend([a, 0.0]);
            t.push(2.0 * a);
        }
        ridge_fit(&rows(x, 2), &rows(t, 1), 1e-3, prior, None).unwrap()
    }

    #[test]
    fn ridge_prior_keeps_unexcited_weight() {
        let prior = DMatrix::from_row_slice(1, 2, &[1.5, -0.75]);
        let fit = fit_with_silent_input(Some(&prior));
        assert!((fit.weight[(0, 0)] - 2.0).abs() < 1e-2, "seen weight {}", fit.weight[(0, 0)]);
        assert!((fit.weight[(0, 1)] + 0.75).abs() < 1e-9, "unseen weight {}", fit.weight[(0, 1)]);
    }

    #[test]
    fn ridge_zero_clears_unexcited_weight() {
        let fit = fit_with_silent_input(None);
        assert!((fit.weight[(0, 0)] - 2.0).abs() < 1e-2, "seen weight {}", fit.weight[(0, 0)]);
        assert!(fit.weight[(0, 1)].abs() < 1e-9, "unseen weight {}", fit.weight[(0, 1)]);
    }

    #[test]
    fn ridge_fit_rejects_prior_of_wrong_shape() {
        let prior = DMatrix::from_row_slice(2, 2, &[1.0, 0.0, 0.0, 1.0]);
        let x = rows(vec![1.0, 2.0], 2);
        let t = rows(vec![1.0], 1);
        assert!(ridge_fit(&x, &t, 1e-3, Some(&prior), None).is_err());
    }

    #[test]
    fn rank_for_energy_counts_leading_values() {
        assert_eq!(rank_for_energy(&[4.0, 3.0, 2.0, 1.0], 0.7), 2);
        assert_eq!(rank_for_energy(&[4.0, 3.0, 2.0, 1.0], 1.0), 4);
        assert_eq!(rank_for_energy(&[1.0, 0.0], 0.5), 1);
    }

    #[test]
    fn svd_reconstructs_matrix() {
        let m = DMatrix::from_row_slice(2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        let (s, u, v) = svd(&m).unwrap();
        assert!(s[0] >= s[1]);
        let rebuilt = &u * DMatrix::from_diagonal(&nalgebra::DVector::from_vec(s)) * v.transpose();
        assert!((rebuilt - m).abs().max() < 1e-9);
    }
}
