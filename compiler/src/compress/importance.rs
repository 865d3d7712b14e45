//! Importance scores of attention heads and MLP neurons.
//!
//! Weight scores (L1, L2) measure the weights that belong to a head (its
//! query, key and value rows and its columns of the output projection) or
//! a neuron (its fc1 row and fc2 column). Activation scores measure what
//! the head or neuron adds to the unit's output on calibration data: the
//! mean squared norm of `o_h W_proj,h^T` for a head, and
//! `E[a_j^2] * |W_fc2[:, j]|^2` for a neuron. Both are in the units of the
//! residual stream, so heads and neurons of all layers compare directly.

use super::calib::{Calibration, Rows, run_taps};
use super::obs::removal_scores;
use super::linalg::{design_matrix, matrix_of};
use super::taylor;
use super::units::{AttentionUnit, MlpUnit, Units};
use crate::error::{Error, Result};
use crate::ir::{Graph, NodeId, Op};
use crate::tensor::Tensor;

use super::recipe::Importance;

/// Scores per head of each attention unit and per neuron of each MLP unit,
/// in the order of [`Units`].
#[derive(Clone, Debug, PartialEq)]
pub struct Scores {
    pub heads: Vec<Vec<f64>>,
    pub neurons: Vec<Vec<f64>>,
}

/// Number of heads and head size of an attention unit.
pub fn head_layout(graph: &Graph, unit: &AttentionUnit) -> (usize, usize) {
    match graph.node(unit.attention).op {
        Op::Attention { heads, head_dim, .. } => (heads, head_dim),
        _ => unreachable!("attention units hold Attention nodes"),
    }
}

/// The weight tensor of a constant Linear.
pub fn linear_weight(graph: &Graph, node: NodeId) -> &Tensor {
    let weight = graph.node(node).inputs[1].expect("constant Linear has a weight");
    graph.konst(weight).expect("constant Linear weight")
}

/// The bias tensor of a constant Linear, if it has one.
pub fn linear_bias(graph: &Graph, node: NodeId) -> Option<&Tensor> {
    let bias = graph.node(node).inputs.get(2).copied().flatten()?;
    graph.konst(bias).map(|t| &**t)
}

/// Scores of every head and neuron; `max_ratio` bounds how much of one
/// unit the reconstruction criterion orders.
pub fn compute(
    graph: &Graph,
    units: &Units,
    importance: Importance,
    calibration: Option<&Calibration>,
    max_ratio: f64,
) -> Result<Scores> {
    if importance == Importance::L1 || importance == Importance::L2 {
        return weight_scores(graph, units, importance == Importance::L1);
    }
    let calibration = calibration.ok_or_else(|| {
        Error::Compress("importance = \"activation\", \"reconstruction\" or \"taylor\" needs calibration data (--calib-data)".into())
    })?;
    if importance == Importance::Taylor {
        return taylor::scores(graph, units, calibration);
    }
    let mut taps = Vec::new();
    taps.extend(units.attention.iter().map(|u| graph.node(u.attention).outputs[0]));
    taps.extend(units.mlp.iter().map(|u| graph.node(u.activation).outputs[0]));
    let tapped = run_taps(graph, calibration, &taps, "importance")?;
    let (attention_rows, mlp_rows) = tapped.split_at(units.attention.len());

    let mut scores = Scores { heads: Vec::new(), neurons: Vec::new() };
    for (unit, rows) in units.attention.iter().zip(attention_rows) {
        let (count, size) = head_layout(graph, unit);
        scores.heads.push(match importance {
            Importance::Reconstruction => {
                let proj = matrix_of(linear_weight(graph, unit.proj), &graph.node(unit.proj).name)?;
                removal_scores(rows, &proj, size, max_removed(count, max_ratio))
            }
            _ => head_contributions(graph, unit, rows)?,
        });
    }
    for (unit, rows) in units.mlp.iter().zip(mlp_rows) {
        scores.neurons.push(match importance {
            Importance::Reconstruction => {
                let fc2 = matrix_of(linear_weight(graph, unit.fc2), &graph.node(unit.fc2).name)?;
                removal_scores(rows, &fc2, 1, max_removed(rows.cols, max_ratio))
            }
            _ => neuron_contributions(graph, unit, rows)?,
        });
    }
    Ok(scores)
}

fn max_removed(count: usize, ratio: f64) -> usize {
    ((ratio * count as f64).ceil() as usize).min(count.saturating_sub(1))
}

fn weight_scores(graph: &Graph, units: &Units, l1: bool) -> Result<Scores> {
    let norm = |values: &mut dyn Iterator<Item = f64>| -> f64 {
        if l1 { values.map(f64::abs).sum() } else { values.map(|v| v * v).sum::<f64>().sqrt() }
    };
    let mut heads = Vec::new();
    for unit in &units.attention {
        let (count, size) = head_layout(graph, unit);
        let qkv: Vec<_> = [unit.q, unit.k, unit.v]
            .iter()
            .map(|&n| matrix_of(linear_weight(graph, n), &graph.node(n).name))
            .collect::<Result<_>>()?;
        let proj = matrix_of(linear_weight(graph, unit.proj), &graph.node(unit.proj).name)?;
        let scores = (0..count)
            .map(|h| {
                let channels = h * size..(h + 1) * size;
                let rows = qkv.iter().flat_map(|w| channels.clone().flat_map(move |r| w.row(r).iter().copied().collect::<Vec<_>>()));
                let cols = channels.clone().flat_map(|c| proj.column(c).iter().copied().collect::<Vec<_>>());
                norm(&mut rows.chain(cols))
            })
            .collect();
        heads.push(scores);
    }
    let mut neurons = Vec::new();
    for unit in &units.mlp {
        let fc1 = matrix_of(linear_weight(graph, unit.fc1), &graph.node(unit.fc1).name)?;
        let fc2 = matrix_of(linear_weight(graph, unit.fc2), &graph.node(unit.fc2).name)?;
        let scores = (0..fc1.nrows())
            .map(|j| norm(&mut fc1.row(j).iter().copied().chain(fc2.column(j).iter().copied())))
            .collect();
        neurons.push(scores);
    }
    Ok(Scores { heads, neurons })
}

/// Mean over rows of `|o_h W_h^T|^2 = trace(W_h (O_h^T O_h) W_h^T) / rows`.
fn head_contributions(graph: &Graph, unit: &AttentionUnit, rows: &Rows) -> Result<Vec<f64>> {
    let (count, size) = head_layout(graph, unit);
    let proj = matrix_of(linear_weight(graph, unit.proj), &graph.node(unit.proj).name)?;
    let outputs = design_matrix(rows, false);
    let gram = outputs.tr_mul(&outputs);
    let samples = rows.rows().max(1) as f64;
    Ok((0..count)
        .map(|h| {
            let range = h * size..(h + 1) * size;
            let w = proj.columns(range.start, size);
            let g = gram.view((range.start, range.start), (size, size));
            (w * g * w.transpose()).trace() / samples
        })
        .collect())
}

/// `E[a_j^2] * |W_fc2[:, j]|^2` per neuron.
fn neuron_contributions(graph: &Graph, unit: &MlpUnit, rows: &Rows) -> Result<Vec<f64>> {
    let fc2 = matrix_of(linear_weight(graph, unit.fc2), &graph.node(unit.fc2).name)?;
    let mut squares = vec![0.0f64; rows.cols];
    for r in 0..rows.rows() {
        for (sum, &a) in squares.iter_mut().zip(rows.row(r)) {
            *sum += (a as f64) * (a as f64);
        }
    }
    let samples = rows.rows().max(1) as f64;
    Ok(squares.iter().enumerate().map(|(j, s)| s / samples * fc2.column(j).norm_squared()).collect())
}
