//! Structured pruning: whole attention heads and MLP neurons.
//!
//! Removing head `h` drops rows `h*d..(h+1)*d` of the query, key and value
//! weights and biases, the same columns of the output projection, and one
//! head from the Attention node. Removing neuron `j` drops row `j` of fc1
//! and its bias, and column `j` of fc2. The kept model is a smaller dense
//! model, so the generated code does less work with the same kernels.

use super::PassOutcome;
use super::calib::Calibration;
use super::edit::Edit;
use super::importance::{self, Scores, head_layout, linear_bias, linear_weight};
use super::recipe::{Importance, PruneSpec};
use super::units::Units;
use crate::error::{Error, Result};
use crate::ir::summary::node_flops;
use crate::ir::{Graph, NodeId, Op};
use crate::tensor::Tensor;

/// Kept head indices per attention unit and kept neuron indices per MLP
/// unit, sorted ascending.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub heads: Vec<Vec<usize>>,
    pub neurons: Vec<Vec<usize>>,
}

/// Checks the settings against the model, before anything runs.
pub fn check(graph: &Graph, units: &Units, spec: &PruneSpec) -> Result<()> {
    if units.attention.is_empty() && units.mlp.is_empty() {
        return Err(Error::Recipe(
            "prune: the model has no attention or MLP unit that can be pruned (a unit needs constant Linear weights and no other users of its inner values)".into(),
        ));
    }
    for pattern in spec.layers.keys() {
        let glob = glob::Pattern::new(pattern).map_err(|e| Error::Recipe(format!("prune: '{pattern}': {e}")))?;
        if !units.names().iter().any(|name| glob.matches(name)) {
            return Err(Error::Recipe(format!(
                "prune: layers pattern '{pattern}' matches no unit; the units are: {}",
                units.names().join(", ")
            )));
        }
    }
    for unit in &units.attention {
        let (count, _) = head_layout(graph, unit);
        let ratio = unit_ratio(spec, &unit.name, spec.heads);
        if kept_count(count, ratio) == 0 {
            return Err(Error::Recipe(format!(
                "prune: ratio {ratio} would remove all {count} heads of '{}'; keep at least one (ratio below {:.3})",
                unit.name,
                (count as f64 - 0.5) / count as f64
            )));
        }
    }
    for unit in &units.mlp {
        let count = linear_weight(graph, unit.fc1).shape()[0];
        let ratio = unit_ratio(spec, &unit.name, spec.neurons);
        if kept_count(count, ratio) == 0 {
            return Err(Error::Recipe(format!("prune: ratio {ratio} would remove all {count} neurons of '{}'", unit.name)));
        }
    }
    Ok(())
}

/// Runs the pass: scores, selection, then the edits.
pub fn run(graph: &Graph, units: &Units, spec: &PruneSpec, calibration: Option<&Calibration>) -> Result<(PassOutcome, Selection)> {
    // Uniform ratios may ask for more than max-unit-ratio of a unit.
    let deepest = spec.layers.values().copied().chain([spec.heads.unwrap_or(0.0), spec.neurons.unwrap_or(0.0), spec.max_unit_ratio]);
    let max_ratio = deepest.fold(0.0f64, f64::max);
    let precomputed = spec.taylor_scores.as_deref().filter(|s| {
        spec.importance == Importance::Taylor && s.heads.len() == units.attention.len() && s.neurons.len() == units.mlp.len()
    });
    let scores = match precomputed {
        Some(scores) => scores.clone(),
        None => importance::compute(graph, units, spec.importance, calibration, max_ratio)?,
    };
    let selection = if spec.flops.is_some() || spec.params.is_some() {
        select_global(graph, units, spec, &scores)
    } else {
        select_uniform(units, spec, &scores)
    };
    let outcome = edits_for(graph, units, &selection)?;
    Ok((outcome, selection))
}

/// The ratio that applies to a unit: the first matching `layers` pattern,
/// else the pass-wide one.
fn unit_ratio(spec: &PruneSpec, unit: &str, default: Option<f64>) -> f64 {
    spec.layers
        .iter()
        .find(|(pattern, _)| glob::Pattern::new(pattern).is_ok_and(|g| g.matches(unit)))
        .map(|(_, ratio)| *ratio)
        .or(default)
        .unwrap_or(0.0)
}

fn kept_count(count: usize, ratio: f64) -> usize {
    count - ((ratio * count as f64).round() as usize).min(count)
}

/// The `keep` highest-scoring indices, ascending.
fn top_indices(scores: &[f64], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept = order[..keep.min(order.len())].to_vec();
    kept.sort_unstable();
    kept
}

fn round_up(count: usize, multiple: usize, max: usize) -> usize {
    count.div_ceil(multiple).saturating_mul(multiple).min(max)
}

fn select_uniform(units: &Units, spec: &PruneSpec, scores: &Scores) -> Selection {
    let heads = units
        .attention
        .iter()
        .zip(&scores.heads)
        .map(|(unit, s)| top_indices(s, kept_count(s.len(), unit_ratio(spec, &unit.name, spec.heads))))
        .collect();
    let neurons = units
        .mlp
        .iter()
        .zip(&scores.neurons)
        .map(|(unit, s)| {
            let ratio = unit_ratio(spec, &unit.name, spec.neurons);
            let keep = round_up(kept_count(s.len(), ratio), spec.neuron_multiple, s.len());
            if ratio > 0.0 && keep == s.len() {
                tracing::warn!(
                    unit = %unit.name,
                    "prune: neuron ratio {ratio} removes no neuron of {}, because keeping a multiple of neuron-multiple = {} \
                     keeps all {}; lower neuron-multiple",
                    unit.name,
                    spec.neuron_multiple,
                    s.len()
                );
            }
            top_indices(s, keep)
        })
        .collect();
    Selection { heads, neurons }
}

/// Cost of one head or neuron of each unit, in FLOPs or parameters.
struct Costs {
    head: Vec<f64>,
    neuron: Vec<f64>,
    total: f64,
}

fn costs(graph: &Graph, units: &Units, by_params: bool) -> Costs {
    let params = |n: NodeId| {
        linear_weight(graph, n).len() as f64 + linear_bias(graph, n).map_or(0.0, |b| b.len() as f64)
    };
    let cost_of = |n: NodeId| match (by_params, &graph.node(n).op) {
        (true, Op::Linear) => params(n),
        (true, _) => 0.0,
        (false, _) => node_flops(graph, n) as f64,
    };
    let cost = |nodes: &[NodeId]| -> f64 { nodes.iter().map(|&n| cost_of(n)).sum() };
    let mut result = Costs { head: Vec::new(), neuron: Vec::new(), total: 0.0 };
    for unit in &units.attention {
        let unit_cost = cost(&[unit.q, unit.k, unit.v, unit.attention, unit.proj]);
        result.head.push(unit_cost / head_layout(graph, unit).0 as f64);
        result.total += unit_cost;
    }
    for unit in &units.mlp {
        let unit_cost = cost(&[unit.fc1, unit.activation, unit.fc2]);
        result.neuron.push(unit_cost / linear_weight(graph, unit.fc1).shape()[0] as f64);
        result.total += unit_cost;
    }
    result
}

/// Greedy global selection: remove the heads and neurons with the lowest
/// score per unit of cost until the target fraction of the encoder's cost
/// is gone, keeping at least one head and `1 - max-unit-ratio` of each unit.
fn select_global(graph: &Graph, units: &Units, spec: &PruneSpec, scores: &Scores) -> Selection {
    let costs = costs(graph, units, spec.params.is_some());
    let target = spec.flops.or(spec.params).unwrap_or(0.0) * costs.total;

    // Candidates: (score per cost, is_head, unit, index).
    let mut candidates: Vec<(f64, bool, usize, usize)> = Vec::new();
    for (u, s) in scores.heads.iter().enumerate() {
        candidates.extend(s.iter().enumerate().map(|(i, &v)| (v / costs.head[u].max(1.0), true, u, i)));
    }
    for (u, s) in scores.neurons.iter().enumerate() {
        candidates.extend(s.iter().enumerate().map(|(i, &v)| (v / costs.neuron[u].max(1.0), false, u, i)));
    }
    candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)));

    // Rounding neuron counts up can undershoot the target; aim higher and retry.
    let mut aim = target;
    let mut selection = Selection { heads: Vec::new(), neurons: Vec::new() };
    let mut removed = 0.0;
    for _ in 0..8 {
        selection = greedy(&candidates, scores, &costs, spec, aim);
        removed = removed_cost(&selection, scores, &costs);
        if removed >= target - 1e-9 * costs.total {
            break;
        }
        aim += target - removed;
    }
    // The limits per unit (max-unit-ratio, one head kept, neuron-multiple)
    // can leave less to remove than the target requests.
    let (what, requested) = if spec.params.is_some() { ("parameters", spec.params) } else { ("FLOPs", spec.flops) };
    let reached = removed / costs.total.max(1.0);
    if let Some(requested) = requested
        && reached + 0.01 < requested
    {
        tracing::warn!(
            "prune: removes {:.1}% of the encoder's {what}, short of the {:.1}% requested, because of the limits per unit \
             (max-unit-ratio = {}, at least one head per attention, neuron-multiple = {}); raise max-unit-ratio or lower the target",
            reached * 100.0,
            requested * 100.0,
            spec.max_unit_ratio,
            spec.neuron_multiple
        );
    }
    selection
}

fn greedy(candidates: &[(f64, bool, usize, usize)], scores: &Scores, costs: &Costs, spec: &PruneSpec, aim: f64) -> Selection {
    let mut removed_heads: Vec<Vec<bool>> = scores.heads.iter().map(|s| vec![false; s.len()]).collect();
    let mut removed_neurons: Vec<Vec<bool>> = scores.neurons.iter().map(|s| vec![false; s.len()]).collect();
    let mut head_count: Vec<usize> = vec![0; scores.heads.len()];
    let mut neuron_count: Vec<usize> = vec![0; scores.neurons.len()];
    let mut removed = 0.0;
    for &(_, is_head, unit, index) in candidates {
        if removed >= aim {
            break;
        }
        if is_head {
            let total = scores.heads[unit].len();
            let limit = ((spec.max_unit_ratio * total as f64).floor() as usize).min(total - 1);
            if head_count[unit] < limit {
                removed_heads[unit][index] = true;
                head_count[unit] += 1;
                removed += costs.head[unit];
            }
        } else {
            let total = scores.neurons[unit].len();
            let limit = ((spec.max_unit_ratio * total as f64).floor() as usize).min(total - 1);
            if neuron_count[unit] < limit {
                removed_neurons[unit][index] = true;
                neuron_count[unit] += 1;
                removed += costs.neuron[unit];
            }
        }
    }
    let heads = removed_heads.iter().map(|r| (0..r.len()).filter(|&i| !r[i]).collect()).collect();
    let neurons = removed_neurons
        .iter()
        .zip(&scores.neurons)
        .map(|(r, s)| {
            let kept = r.iter().filter(|x| !**x).count();
            top_indices(s_masked(s, r).as_slice(), round_up(kept, spec.neuron_multiple, s.len()))
        })
        .collect();
    Selection { heads, neurons }
}

/// Scores with removed entries pushed below every kept one, so that
/// rounding a count up re-admits the best of the removed.
fn s_masked(scores: &[f64], removed: &[bool]) -> Vec<f64> {
    scores.iter().zip(removed).map(|(&s, &r)| if r { s - 1e300 } else { s }).collect()
}

fn removed_cost(selection: &Selection, scores: &Scores, costs: &Costs) -> f64 {
    let heads: f64 = selection.heads.iter().enumerate().map(|(u, k)| (scores.heads[u].len() - k.len()) as f64 * costs.head[u]).sum();
    let neurons: f64 =
        selection.neurons.iter().enumerate().map(|(u, k)| (scores.neurons[u].len() - k.len()) as f64 * costs.neuron[u]).sum();
    heads + neurons
}

/// The edits that keep only the selected heads and neurons.
fn edits_for(graph: &Graph, units: &Units, selection: &Selection) -> Result<PassOutcome> {
    let mut outcome = PassOutcome::default();
    for (unit, kept) in units.attention.iter().zip(&selection.heads) {
        let (count, size) = head_layout(graph, unit);
        if kept.len() == count {
            continue;
        }
        let channels: Vec<usize> = kept.iter().flat_map(|&h| h * size..(h + 1) * size).collect();
        for node in [unit.q, unit.k, unit.v] {
            outcome.edits.push(keep_outputs(graph, node, &channels)?);
            outcome.lineage.insert(graph.node(node).name.clone(), channels.clone());
        }
        outcome.edits.push(Edit::Heads { node: graph.node(unit.attention).name.clone(), heads: kept.len() });
        outcome.edits.push(keep_inputs(graph, unit.proj, &channels)?);
        outcome.details.insert(unit.name.clone(), format!("heads {count} -> {} (kept {:?})", kept.len(), kept));
        outcome.refit.extend([unit.q, unit.k, unit.v, unit.proj].map(|n| graph.node(n).name.clone()));
    }
    for (unit, kept) in units.mlp.iter().zip(&selection.neurons) {
        let count = linear_weight(graph, unit.fc1).shape()[0];
        if kept.len() == count {
            continue;
        }
        outcome.edits.push(keep_outputs(graph, unit.fc1, kept)?);
        outcome.lineage.insert(graph.node(unit.fc1).name.clone(), kept.clone());
        outcome.edits.push(keep_inputs(graph, unit.fc2, kept)?);
        outcome.details.insert(unit.name.clone(), format!("neurons {count} -> {}", kept.len()));
        outcome.refit.extend([unit.fc1, unit.fc2].map(|n| graph.node(n).name.clone()));
    }
    Ok(outcome)
}

/// Keeps the listed output channels (weight rows and bias entries) of a Linear.
fn keep_outputs(graph: &Graph, node: NodeId, channels: &[usize]) -> Result<Edit> {
    let weight = linear_weight(graph, node);
    let bias = linear_bias(graph, node);
    Ok(Edit::Linear {
        node: graph.node(node).name.clone(),
        weight: select(weight, 0, channels)?.into(),
        bias: bias.map(|b| select(b, 0, channels)).transpose()?.map(Into::into),
    })
}

/// Keeps the listed input channels (weight columns) of a Linear.
fn keep_inputs(graph: &Graph, node: NodeId, channels: &[usize]) -> Result<Edit> {
    Ok(Edit::Linear {
        node: graph.node(node).name.clone(),
        weight: select(linear_weight(graph, node), 1, channels)?.into(),
        bias: linear_bias(graph, node).cloned().map(Into::into),
    })
}

fn select(tensor: &Tensor, axis: usize, indices: &[usize]) -> Result<Tensor> {
    let array = tensor.as_f32().ok_or_else(|| Error::Compress("pruning needs f32 weights".into()))?;
    Ok(Tensor::F32(array.select(ndarray::Axis(axis), indices)))
}
