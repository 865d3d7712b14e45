//! Low-rank rewriting: `y = x W^T + b` becomes `y = (x A^T) B^T + b` with
//! `A` of shape `[r, in]` and `B` of shape `[out, r]`.
//!
//! The weight method takes the truncated SVD `W ≈ U_r S_r V_r^T`, with
//! `A = S_r V_r^T` and `B = U_r`. The activation method projects the
//! layer's outputs on calibration data onto their top `r` principal
//! directions `U_r` (eigenvectors of `Y^T Y` with `Y = X W^T`): `A = U_r^T W`
//! and `B = U_r`. That minimizes the output error `|X W^T - X (BA)^T|` over
//! all rank-`r` weights, which matters because ViT weights are often close
//! to full rank while their outputs are not.
//!
//! A layer is rewritten only when the factors have fewer parameters (and
//! so fewer FLOPs) than `W`: `r (in + out) < in * out`.

use super::PassOutcome;
use super::calib::{Calibration, run_taps};
use super::edit::Edit;
use super::importance::{linear_bias, linear_weight};
use super::linalg::{design_matrix, matrix_of, rank_for_energy, svd, symmetric_eigen, tensor_of};
use super::recipe::{LowRankMethod, LowRankSpec};
use crate::error::{Error, Result};
use crate::ir::{Graph, NodeId};

/// Checks a fixed rank against every selected layer before anything runs.
pub fn check(graph: &Graph, layers: &[NodeId], spec: &LowRankSpec) -> Result<()> {
    if layers.is_empty() {
        return Err(Error::Recipe("low-rank: no Linear layer matches the scope and layer patterns".into()));
    }
    if let Some(rank) = spec.rank {
        for &node in layers {
            let shape = linear_weight(graph, node).shape();
            let largest = shape[0].min(shape[1]);
            if rank > largest {
                return Err(Error::Recipe(format!(
                    "low-rank: rank {rank} is larger than the {}x{} weight of '{}' allows (at most {largest})",
                    shape[0],
                    shape[1],
                    graph.node(node).name
                )));
            }
        }
    }
    Ok(())
}

pub fn run(graph: &Graph, layers: &[NodeId], spec: &LowRankSpec, calibration: Option<&Calibration>) -> Result<PassOutcome> {
    let inputs: Vec<_> = layers.iter().map(|&n| graph.node(n).inputs[0].expect("Linear has an input")).collect();
    let tapped = match spec.method {
        LowRankMethod::Activation => {
            let calibration = calibration
                .ok_or_else(|| Error::Compress("low-rank method = \"activation\" needs calibration data (--calib-data)".into()))?;
            Some(run_taps(graph, calibration, &inputs, "low-rank")?)
        }
        LowRankMethod::Weight => None,
    };

    let mut outcome = PassOutcome::default();
    for (index, &node) in layers.iter().enumerate() {
        let name = graph.node(node).name.clone();
        let w = matrix_of(linear_weight(graph, node), &name)?;
        let (out, inn) = w.shape();
        let (spectrum, basis_out) = match &tapped {
            Some(rows) => {
                let x = design_matrix(&rows[index], false);
                let y = x * w.transpose();
                symmetric_eigen(y.tr_mul(&y))
            }
            None => {
                let (values, u, _) = svd(&w)?;
                (values.iter().map(|s| s * s).collect(), u)
            }
        };
        let rank = choose_rank(spec, &spectrum, out, inn);
        if rank * (out + inn) >= out * inn {
            outcome.details.insert(name, format!("kept dense: rank {rank} would not save work ({out}x{inn})"));
            continue;
        }
        let u_r = basis_out.columns(0, rank).into_owned();
        let a = u_r.transpose() * &w;
        let energy = spectrum[..rank].iter().sum::<f64>() / spectrum.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        outcome.edits.push(Edit::Factor { node: name.clone(), name: format!("{name}/low_rank"), weight: tensor_of(&a) });
        outcome.edits.push(Edit::Linear {
            node: name.clone(),
            weight: tensor_of(&u_r),
            bias: linear_bias(graph, node).cloned().map(Into::into),
        });
        outcome.details.insert(name.clone(), format!("rank {rank} of {}, energy kept {:.4}", out.min(inn), energy));
        outcome.refit.push(name.clone());
        outcome.factored.push(name);
    }
    Ok(outcome)
}

fn choose_rank(spec: &LowRankSpec, spectrum: &[f64], out: usize, inn: usize) -> usize {
    let largest = out.min(inn);
    if let Some(rank) = spec.rank {
        return rank.min(largest);
    }
    if let Some(energy) = spec.energy {
        return rank_for_energy(spectrum, energy).clamp(1, largest);
    }
    let cut = spec.param_cut.unwrap_or(0.0);
    let budget = (1.0 - cut) * (out * inn) as f64 / (out + inn) as f64;
    (budget.floor() as usize).clamp(1, largest)
}
