//! Layer-wise distillation: refit each compressed Linear by ridge least
//! squares so that, on calibration data, its outputs match the teacher's
//! (the uncompressed model's) at the same point.
//!
//! Layers are refit in topological order, each from the student's actual
//! inputs, which already include the earlier refits; layers that read the
//! same value are refit from one calibration run. Each run also keeps the
//! values that the later layers read from the part of the graph that no
//! later refit changes (the residual stream of a ViT). The next run starts
//! from them instead of from the model's input, so all runs together cost
//! about one pass through the model. The teacher runs the same way, group
//! by group, so only one group's inputs and targets are kept in memory,
//! not those of every layer. With the residual
//! target, a layer whose output is added to the residual stream matches
//! `teacher stream after the add - student stream before it`, so every
//! refit also absorbs the error that earlier layers left in the stream.
//! A per-channel constant scale between the layer and the add (the layer
//! scale of DINOv2-style blocks) divides that difference channel by channel.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::calib::{Calibration, Rows, run_taps_seeded};
use super::edit::{Edit, apply};
use super::importance::linear_weight;
use super::linalg::{matrix_of, ridge_fit, tensor_of, tensor_of_vector};
use super::recipe::{DistillSpec, DistillTarget, RidgeToward};
use crate::error::{Error, Result};
use crate::ir::op::BinaryOp;
use crate::ir::{Graph, NodeId, Op, ValueId};
use crate::tensor::DType;

/// Outcome of one refit.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Refit {
    pub layer: String,
    pub target: &'static str,
    /// `|y - t|^2 / |t|^2` on calibration data, before and after.
    pub relative_error_before: f64,
    pub relative_error_after: f64,
}

/// Source of a refit layer's target.
struct Target {
    /// Teacher value whose rows (or selected columns) are the target.
    teacher: ValueId,
    /// Teacher output channels that the student's outputs correspond to.
    channels: Option<Vec<usize>>,
    /// Student residual value subtracted from the teacher's stream.
    residual: Option<ValueId>,
    /// Per-channel scale applied between the layer and the residual add,
    /// by which the target is divided.
    scale: Option<Vec<f32>>,
}

/// Refits `layers` (student node names) against `teacher`.
pub fn run(
    teacher: &Graph,
    student: &mut Graph,
    layers: &[String],
    lineage: &HashMap<String, Vec<usize>>,
    sparse: &[String],
    spec: &DistillSpec,
    calibration: &Calibration,
) -> Result<Vec<Refit>> {
    let teacher_names: HashMap<&str, NodeId> = teacher.node_ids().map(|id| (teacher.node(id).name.as_str(), id)).collect();
    let order = refit_order(student, layers, &teacher_names);
    if order.is_empty() {
        return Ok(Vec::new());
    }

    let mut targets = BTreeMap::new();
    for name in &order {
        let target = target_for(teacher, student, name, &teacher_names, lineage, spec.target)?;
        targets.insert(name.clone(), target);
    }

    let mut refits = Vec::new();
    let groups = groups_by_input(student, &order);
    // Values computed by the previous run that no refit from here on changes.
    let mut seeds: Vec<(ValueId, Rows)> = Vec::new();
    // The teacher runs group by group too, so that only one group's targets
    // are in memory at a time.
    let mut teacher_seeds: Vec<(ValueId, Rows)> = Vec::new();
    for (index, group) in groups.iter().enumerate() {
        let teacher_layers: Vec<NodeId> = groups[index..].iter().flatten().map(|name| teacher_names[name.as_str()]).collect();
        let teacher_unchanged = boundary(teacher, &teacher_layers);
        let group_targets: Vec<ValueId> = group.iter().map(|name| targets[name].teacher).collect();
        let teacher_taps = dedup(group_targets.iter().chain(&teacher_unchanged).copied().collect());
        let seed_rows: Vec<_> = teacher_seeds.iter().map(|(value, rows)| (*value, rows)).collect();
        let rows = run_taps_seeded(teacher, calibration, &teacher_taps, &seed_rows, "teacher")?;
        let mut teacher_rows: HashMap<ValueId, Rows> = teacher_taps.into_iter().zip(rows).collect();
        // Seeds move out of the map, unless this group's refits also read them as targets.
        teacher_seeds.clear();
        for value in teacher_unchanged {
            let rows = if group_targets.contains(&value) {
                teacher_rows[&value].clone()
            } else {
                teacher_rows.remove(&value).expect("every seed value is tapped")
            };
            teacher_seeds.push((value, rows));
        }

        let ids = node_ids(student);
        let input = student.node(ids[&group[0]]).inputs[0].expect("Linear has an input");
        let mut taps = vec![input];
        taps.extend(group.iter().filter_map(|name| targets[name].residual));
        taps.extend(group.iter().map(|name| student.node(ids[name]).outputs[0]));
        let remaining: Vec<NodeId> = groups[index..].iter().flatten().map(|name| ids[name]).collect();
        let unchanged = boundary(student, &remaining);
        let taps = dedup(taps.into_iter().chain(unchanged.iter().copied()).collect());
        let seed_rows: Vec<_> = seeds.iter().map(|(value, rows)| (*value, rows)).collect();
        let rows = run_taps_seeded(student, calibration, &taps, &seed_rows, "distill")?;
        let tapped: HashMap<ValueId, Rows> = taps.into_iter().zip(rows).collect();

        let mut edits = Vec::new();
        for name in group {
            let node = ids[name];
            let target = &targets[name];
            let wanted = target_rows(&teacher_rows[&target.teacher], target, &tapped)?;
            let before = relative_error(&tapped[&student.node(node).outputs[0]], &wanted);
            let support = sparse.contains(name).then(|| weight_support(student, node));
            let prior = match spec.ridge_toward {
                RidgeToward::Weights => Some(matrix_of(linear_weight(student, node), name)?),
                RidgeToward::Zero => None,
            };
            let fit = ridge_fit(&tapped[&input], &wanted, spec.ridge, prior.as_ref(), support.as_deref())
                .map_err(|e| Error::Compress(format!("distill '{name}': {e}")))?;
            let after = fit_error(&tapped[&input], &wanted, &fit);
            edits.push(Edit::Linear { node: name.clone(), weight: tensor_of(&fit.weight), bias: Some(tensor_of_vector(&fit.bias)) });
            let kind = if target.residual.is_some() { "residual" } else { "output" };
            refits.push(Refit { layer: name.clone(), target: kind, relative_error_before: before, relative_error_after: after });
        }
        apply(student, &edits, "pass 'distill'")?;
        seeds = unchanged.into_iter().filter(|value| student.contains_value(*value)).map(|value| (value, tapped[&value].clone())).collect();
    }
    Ok(refits)
}

/// Returns the f32 activations that the nodes reachable from `layers`
/// (`layers` included) read from the rest of the graph. Refitting `layers`
/// does not change them, so a run before the refit can feed them to the
/// runs after it. Constants and graph inputs are left out.
fn boundary(graph: &Graph, layers: &[NodeId]) -> Vec<ValueId> {
    let mut reached: HashSet<NodeId> = HashSet::new();
    let mut stack = layers.to_vec();
    while let Some(node) = stack.pop() {
        if reached.insert(node) {
            for &output in &graph.node(node).outputs {
                stack.extend(graph.users(output).into_iter().map(|(user, _)| user));
            }
        }
    }
    let mut values = Vec::new();
    for node in graph.topo_order().into_iter().filter(|node| reached.contains(node)) {
        for value in graph.node(node).inputs.iter().flatten().copied() {
            let producer = graph.value(value).producer;
            let outside = !reached.contains(&producer) && !matches!(graph.node(producer).op, Op::Input);
            if outside && graph.konst(value).is_none() && graph.fact(value).dtype == DType::F32 && !values.contains(&value) {
                values.push(value);
            }
        }
    }
    values
}

fn node_ids(graph: &Graph) -> HashMap<String, NodeId> {
    graph.node_ids().map(|id| (graph.node(id).name.clone(), id)).collect()
}

fn dedup(mut values: Vec<ValueId>) -> Vec<ValueId> {
    let mut seen = std::collections::HashSet::new();
    values.retain(|v| seen.insert(*v));
    values
}

/// The layers that exist in both graphs, in the student's topological order.
fn refit_order(student: &Graph, layers: &[String], teacher_names: &HashMap<&str, NodeId>) -> Vec<String> {
    student
        .topo_order()
        .into_iter()
        .map(|id| student.node(id).name.clone())
        .filter(|name| layers.contains(name) && teacher_names.contains_key(name.as_str()))
        .collect()
}

/// Consecutive layers that read the same value form one group.
fn groups_by_input(student: &Graph, order: &[String]) -> Vec<Vec<String>> {
    let ids = node_ids(student);
    let mut groups: Vec<Vec<String>> = Vec::new();
    let mut last_input = None;
    for name in order {
        let input = student.node(ids[name]).inputs[0];
        match groups.last_mut() {
            Some(group) if input == last_input => group.push(name.clone()),
            _ => groups.push(vec![name.clone()]),
        }
        last_input = input;
    }
    groups
}

/// Finds the residual connection after `node`: the Add that is the only
/// user of its output (or of a per-channel scale Mul that is its only
/// user). Returns the Add, its other operand (a computed value) and the scale.
fn residual_add(graph: &Graph, node: NodeId) -> Option<(NodeId, ValueId, Option<Vec<f32>>)> {
    let mut output = graph.node(node).outputs[0];
    let mut scale = None;
    if let Some((mul, factors)) = channel_scale(graph, output) {
        output = graph.node(mul).outputs[0];
        scale = Some(factors);
    }
    let [(user, slot)] = graph.users(output)[..] else { return None };
    let add = graph.node(user);
    if add.op != Op::Binary(BinaryOp::Add) || graph.is_graph_output(output) {
        return None;
    }
    let other = add.inputs[1 - slot.min(1)]?;
    if graph.konst(other).is_some() || graph.fact(other).shape != graph.fact(output).shape {
        return None;
    }
    Some((user, other, scale))
}

/// Returns the Mul that is the only user of `value` and its factors, when it
/// multiplies each channel (last axis) by a nonzero constant.
fn channel_scale(graph: &Graph, value: ValueId) -> Option<(NodeId, Vec<f32>)> {
    let [(user, slot)] = graph.users(value)[..] else { return None };
    let mul = graph.node(user);
    if mul.op != Op::Binary(BinaryOp::Mul) || graph.is_graph_output(value) {
        return None;
    }
    let factor = mul.inputs[1 - slot.min(1)]?;
    let channels = *graph.fact(value).shape.last()?;
    let shape = &graph.fact(factor).shape;
    let per_channel = shape.last() == Some(&channels) && shape.iter().rev().skip(1).all(|&d| d == 1);
    if !per_channel || graph.fact(mul.outputs[0]).shape != graph.fact(value).shape {
        return None;
    }
    let factors: Vec<f32> = graph.konst(factor)?.as_f32()?.iter().copied().collect();
    factors.iter().all(|f| f.is_finite() && *f != 0.0).then_some((user, factors))
}

fn target_for(
    teacher: &Graph,
    student: &Graph,
    name: &str,
    teacher_names: &HashMap<&str, NodeId>,
    lineage: &HashMap<String, Vec<usize>>,
    mode: DistillTarget,
) -> Result<Target> {
    let student_node = node_ids(student)[name];
    let teacher_node = teacher_names[name];
    let channels = lineage.get(name).cloned();
    if mode == DistillTarget::Residual
        && channels.is_none()
        && let Some((student_add, residual, scale)) = residual_add(student, student_node)
        && let Some(&teacher_add) = teacher_names.get(student.node(student_add).name.as_str())
    {
        return Ok(Target { teacher: teacher.node(teacher_add).outputs[0], channels: None, residual: Some(residual), scale });
    }
    Ok(Target { teacher: teacher.node(teacher_node).outputs[0], channels, residual: None, scale: None })
}

fn target_rows(teacher: &Rows, target: &Target, tapped: &HashMap<ValueId, Rows>) -> Result<Rows> {
    let mut rows = match &target.channels {
        None => teacher.clone(),
        Some(channels) => {
            let mut data = Vec::with_capacity(teacher.rows() * channels.len());
            for r in 0..teacher.rows() {
                let row = teacher.row(r);
                data.extend(channels.iter().map(|&c| row[c]));
            }
            Rows { data, cols: channels.len() }
        }
    };
    if let Some(residual) = target.residual {
        let stream = &tapped[&residual];
        if stream.data.len() != rows.data.len() {
            return Err(Error::Internal("residual and target rows differ in size".into()));
        }
        for (t, s) in rows.data.iter_mut().zip(&stream.data) {
            *t -= s;
        }
    }
    if let Some(scale) = &target.scale {
        for row in rows.data.chunks_mut(scale.len()) {
            for (t, f) in row.iter_mut().zip(scale) {
                *t /= f;
            }
        }
    }
    Ok(rows)
}

fn relative_error(output: &Rows, target: &Rows) -> f64 {
    let mut error = 0.0f64;
    let mut norm = 0.0f64;
    for (&y, &t) in output.data.iter().zip(&target.data) {
        error += ((y - t) as f64).powi(2);
        norm += (t as f64).powi(2);
    }
    error / norm.max(f64::MIN_POSITIVE)
}

fn fit_error(x: &Rows, target: &Rows, fit: &super::linalg::RidgeFit) -> f64 {
    let design = super::linalg::design_matrix(x, false);
    let mut outputs = design * fit.weight.transpose();
    for mut row in outputs.row_iter_mut() {
        for (value, bias) in row.iter_mut().zip(&fit.bias) {
            *value += bias;
        }
    }
    let (rows, cols) = outputs.shape();
    let data = (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))).map(|(r, c)| outputs[(r, c)] as f32).collect();
    relative_error(&Rows { data, cols }, target)
}

/// Input columns with a nonzero weight, per output row.
fn weight_support(graph: &Graph, node: NodeId) -> Vec<Vec<usize>> {
    let weight = linear_weight(graph, node).as_f32().expect("constant Linear weight is f32");
    weight.outer_iter().map(|row| row.iter().enumerate().filter(|(_, w)| **w != 0.0).map(|(i, _)| i).collect()).collect()
}

/// Linear nodes named in `names` that exist in `graph`.
pub fn existing(graph: &Graph, names: &[String]) -> Vec<String> {
    let ids = node_ids(graph);
    names.iter().filter(|n| ids.get(n.as_str()).is_some_and(|&id| graph.node(id).op == Op::Linear)).cloned().collect()
}
