//! Fine-tuning of parameters inside the network: Linear biases,
//! LayerNorm scales and shifts, and the head's weight.
//!
//! The head-only modes of [`super::finetune`] keep the head's input
//! features fixed and solve a convex problem. Here the features change
//! with the parameters, so every step runs the student on the training
//! batches with the interpreter, differentiates the loss back to the
//! parameters with [`crate::autodiff`], and takes one full-batch Adam step.
//! The loss is `T^2 * KL(softmax(teacher / T) || softmax(student / T))`
//! for a classifier, or the mean squared error between the two models'
//! outputs for any other model (`loss = "mse"`).
//! The held-out batches pick the best step, so on data the descent did not
//! see the result is never worse than the starting model.

use std::sync::Arc;

use ndarray::{ArrayD, Axis, Ix2};

use super::PassOutcome;
use super::calib::{Calibration, progress_bar};
use super::edit::Edit;
use super::recipe::{FinetuneLoss, FinetuneParams, FinetuneSpec};
use super::report::FinetuneOutcome;
use super::units::is_constant_linear;
use crate::autodiff::Backward;
use crate::error::{Error, Result};
use crate::interp::run;
use crate::ir::{Graph, NodeId, Op, ValueId};
use crate::tensor::Tensor;

/// Steps between two checks of the held-out loss.
const CHECK_EVERY: usize = 10;

/// One trained constant: operand `slot` of `node`, with its Adam moments.
struct Param {
    node: NodeId,
    slot: usize,
    value: ValueId,
    data: ArrayD<f32>,
    first: ArrayD<f32>,
    second: ArrayD<f32>,
}

/// Returns the constant operands that `params` selects, in graph order,
/// or an error when it selects none. `all` trains the head's weight only
/// when the model has a head.
pub(super) fn select(graph: &Graph, params: FinetuneParams, head: Option<NodeId>) -> Result<Vec<(NodeId, usize)>> {
    let all = params == FinetuneParams::All;
    let mut chosen = Vec::new();
    for id in graph.topo_order() {
        let node = graph.node(id);
        let constant = |slot: usize| node.inputs.get(slot).copied().flatten().is_some_and(|v| graph.konst(v).is_some());
        match node.op {
            Op::Linear if is_constant_linear(graph, id) => {
                if all && Some(id) == head {
                    chosen.push((id, 1));
                }
                if (all || params == FinetuneParams::Biases) && constant(2) {
                    chosen.push((id, 2));
                }
            }
            Op::LayerNorm { .. } if all || params == FinetuneParams::Norms => {
                chosen.extend((1..=2).filter(|&slot| constant(slot)).map(|slot| (id, slot)));
            }
            _ => {}
        }
    }
    if chosen.is_empty() {
        let params = crate::quant::recipe_spelling(&params);
        return Err(Error::Recipe(format!("finetune params = \"{params}\" selects no constant in this model")));
    }
    Ok(chosen)
}

/// One calibration batch and the teacher's outputs on it.
struct Batch {
    input: Tensor,
    /// `softmax(teacher / T)` of `[batch, classes]` logits for KL, the
    /// teacher's output as it is for MSE.
    target: ArrayD<f32>,
}

pub fn run_pass(
    graph: &Graph,
    teacher: &Graph,
    spec: &FinetuneSpec,
    calibration: &Calibration,
    head: Option<NodeId>,
) -> Result<PassOutcome> {
    let chosen = select(graph, spec.params, head)?;
    let mut params: Vec<Param> = chosen
        .into_iter()
        .map(|(node, slot)| {
            let value = graph.node(node).inputs[slot].expect("selected operands exist");
            let data = graph.konst(value).and_then(|t| t.as_f32()).cloned().ok_or_else(|| {
                Error::Compress(format!("finetune: operand {slot} of '{}' is not an f32 constant", graph.node(node).name))
            })?;
            let zeros = ArrayD::zeros(data.raw_dim());
            Ok(Param { node, slot, value, data, first: zeros.clone(), second: zeros })
        })
        .collect::<Result<_>>()?;

    let batches = teacher_batches(teacher, calibration, spec)?;
    let held_count = ((batches.len() as f64 * spec.holdout).round() as usize).min(batches.len().saturating_sub(1));
    let (train, held_out) = batches.split_at(batches.len() - held_count);
    if held_out.is_empty() && spec.holdout > 0.0 {
        tracing::warn!(
            "finetune holds out no batch: {} calibration batch(es) at holdout {} leave none for checking, so the training \
             batches pick the best step; give more calibration samples to hold some out",
            batches.len(),
            spec.holdout
        );
    }
    let check = if held_out.is_empty() { train } else { held_out };
    let train_rows: usize = train.iter().map(|b| b.target.shape()[0]).sum();

    let output = graph.outputs()[0];
    let before = evaluate(&with_params(graph, &params), check, spec)?;
    let mut best = (0usize, before, params.iter().map(|p| p.data.clone()).collect::<Vec<_>>());
    let mut last = before.0;
    let progress = progress_bar(spec.steps, "finetune");
    for step in 1..=spec.steps {
        let working = with_params(graph, &params);
        let values: Vec<ValueId> = params.iter().map(|p| p.value).collect();
        let backward = Backward::new(&working, &values, output).map_err(|e| {
            Error::Compress(format!(
                "finetune params = \"{}\" needs gradients from the model's output back to every trained parameter: {e}; \
                 params = \"head\" or \"head-bias\" need none",
                crate::quant::recipe_spelling(&spec.params)
            ))
        })?;
        let mut grads: Vec<ArrayD<f32>> = params.iter().map(|p| ArrayD::zeros(p.data.raw_dim())).collect();
        for batch in train {
            let tape = backward.forward(&[(working.inputs()[0], batch.input.clone())])?;
            let student = tape.get(output).and_then(Tensor::as_f32).ok_or_else(|| Error::Internal("finetune lost the output".into()))?;
            let seed = loss_gradient(student, &batch.target, spec, train_rows);
            for (sum, grad) in grads.iter_mut().zip(backward.gradients(&tape, seed)?) {
                *sum += &grad;
            }
        }
        adam(&mut params, &grads, step, spec.learning_rate as f32);
        if step % CHECK_EVERY == 0 || step == spec.steps {
            let now = evaluate(&with_params(graph, &params), check, spec)?;
            last = now.0;
            if now.0 < best.1.0 {
                best = (step, now, params.iter().map(|p| p.data.clone()).collect());
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();

    let (best_step, after, data) = best;
    let mut outcome = PassOutcome::default();
    let (loss, figure) = match spec.loss {
        FinetuneLoss::Kl => ("kl", "top-1 agreement"),
        FinetuneLoss::Mse => ("mse", "mean cosine"),
    };
    outcome.finetune = Some(FinetuneOutcome {
        loss,
        parameter_tensors: params.len(),
        steps: spec.steps,
        best_step,
        checked_samples: check.iter().map(|b| b.target.shape()[0]).sum(),
        held_out: !held_out.is_empty(),
        loss_before: before.0,
        loss_after: after.0,
        figure,
        figure_before: before.1,
        figure_after: after.1,
    });
    let on = match held_out.len() {
        0 => "the training batches".to_string(),
        1 => "1 held-out batch".to_string(),
        n => format!("{n} held-out batches"),
    };
    let result = match best_step {
        0 => super::finetune::no_step_improved(before.0, last, spec.learning_rate, "parameters"),
        step => format!("best at step {step}"),
    };
    outcome.details.insert(
        format!("{} parameter tensors", params.len()),
        match spec.loss {
            FinetuneLoss::Kl => format!(
                "KL (T={}) {:.5} -> {:.5}, agreement {:.2}% -> {:.2}% on {on}; {} steps, {result}",
                spec.temperature,
                before.0,
                after.0,
                before.1 * 100.0,
                after.1 * 100.0,
                spec.steps
            ),
            FinetuneLoss::Mse => format!(
                "MSE {:.4e} -> {:.4e}, mean cosine {:.5} -> {:.5} on {on}; {} steps, {result}",
                before.0, after.0, before.1, after.1, spec.steps
            ),
        },
    );
    if best_step > 0 {
        for (param, data) in params.iter().zip(data) {
            let node = graph.node(param.node).name.clone();
            outcome.edits.push(Edit::Operand { node, slot: param.slot, tensor: Arc::new(Tensor::F32(data)) });
        }
    }
    Ok(outcome)
}

/// Copies `graph` with the trained constants set to their current values.
fn with_params(graph: &Graph, params: &[Param]) -> Graph {
    let mut working = graph.clone();
    for param in params {
        working.value_mut(param.value).fact.konst = Some(Arc::new(Tensor::F32(param.data.clone())));
    }
    working
}

fn teacher_batches(teacher: &Graph, calibration: &Calibration, spec: &FinetuneSpec) -> Result<Vec<Batch>> {
    let input = teacher.inputs()[0];
    calibration
        .batches
        .iter()
        .map(|batch| {
            let output = run(teacher, &[(input, batch.clone())])?.swap_remove(0);
            let output = output.as_f32().ok_or_else(|| Error::Compress("finetune needs f32 outputs".into()))?;
            let target = match spec.loss {
                FinetuneLoss::Kl => softmax(output, spec.temperature),
                FinetuneLoss::Mse => output.clone(),
            };
            Ok(Batch { input: batch.clone(), target })
        })
        .collect()
}

/// Returns the gradient of the loss, averaged over the `train_rows`
/// training samples, with respect to the student's `output` on one batch.
fn loss_gradient(output: &ArrayD<f32>, target: &ArrayD<f32>, spec: &FinetuneSpec, train_rows: usize) -> ArrayD<f32> {
    match spec.loss {
        FinetuneLoss::Kl => (softmax(output, spec.temperature) - target) * (spec.temperature as f32 / train_rows as f32),
        FinetuneLoss::Mse => {
            let per_row = output.len() / output.shape()[0].max(1);
            (output - target) * (2.0 / (train_rows * per_row.max(1)) as f32)
        }
    }
}

/// Row softmax of `[batch, classes]` logits divided by `temperature`.
fn softmax(logits: &ArrayD<f32>, temperature: f64) -> ArrayD<f32> {
    let mut p = logits.mapv(|v| v / temperature as f32);
    for mut row in p.axis_iter_mut(Axis(0)) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
    p
}

/// Returns the loss of the student on `batches` and a figure a user reads
/// more easily: top-1 agreement for KL, the mean cosine similarity per
/// sample for MSE.
fn evaluate(student: &Graph, batches: &[Batch], spec: &FinetuneSpec) -> Result<(f64, f64)> {
    let (mut loss, mut figure, mut rows) = (0.0f64, 0.0f64, 0usize);
    for batch in batches {
        let output = run(student, &[(student.inputs()[0], batch.input.clone())])?.swap_remove(0);
        let output = output.as_f32().ok_or_else(|| Error::Compress("finetune needs f32 outputs".into()))?;
        let (batch_loss, batch_figure) = match spec.loss {
            FinetuneLoss::Kl => kl_and_agreement(&softmax(output, spec.temperature), &batch.target)?,
            FinetuneLoss::Mse => squared_error_and_cosine(output, &batch.target),
        };
        loss += batch_loss;
        figure += batch_figure;
        rows += batch.target.shape()[0];
    }
    let rows = rows.max(1) as f64;
    let scale = if spec.loss == FinetuneLoss::Kl { spec.temperature * spec.temperature } else { 1.0 };
    Ok((scale * loss / rows, figure / rows))
}

/// Sums, over the rows of a batch, `KL(t || p)` and top-1 agreement.
fn kl_and_agreement(p: &ArrayD<f32>, t: &ArrayD<f32>) -> Result<(f64, f64)> {
    let p = p.view().into_dimensionality::<Ix2>().map_err(|e| Error::Internal(e.to_string()))?;
    let t = t.view().into_dimensionality::<Ix2>().map_err(|e| Error::Internal(e.to_string()))?;
    let (mut kl, mut agree) = (0.0f64, 0usize);
    for (p_row, t_row) in p.rows().into_iter().zip(t.rows()) {
        for (&p, &t) in p_row.iter().zip(t_row) {
            if t > 0.0 {
                kl += f64::from(t) * (f64::from(t).ln() - f64::from(p.max(f32::MIN_POSITIVE)).ln());
            }
        }
        agree += usize::from(argmax(p_row.iter()) == argmax(t_row.iter()));
    }
    Ok((kl, agree as f64))
}

/// Sums, over the samples of a batch, the mean squared error and the
/// cosine similarity between the student's and the teacher's outputs.
fn squared_error_and_cosine(output: &ArrayD<f32>, target: &ArrayD<f32>) -> (f64, f64) {
    let (mut error, mut cosine) = (0.0f64, 0.0f64);
    for (o, t) in output.outer_iter().zip(target.outer_iter()) {
        let (mut squared, mut dot, mut oo, mut tt) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for (&o, &t) in o.iter().zip(t.iter()) {
            let (o, t) = (f64::from(o), f64::from(t));
            squared += (o - t) * (o - t);
            dot += o * t;
            oo += o * o;
            tt += t * t;
        }
        error += squared / o.len().max(1) as f64;
        cosine += if oo > 0.0 && tt > 0.0 { dot / (oo * tt).sqrt() } else { f64::from(u8::from(oo == tt)) };
    }
    (error, cosine)
}

fn argmax<'a>(values: impl Iterator<Item = &'a f32>) -> usize {
    values.enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0
}

/// Takes one Adam step with the usual moment decay rates.
fn adam(params: &mut [Param], grads: &[ArrayD<f32>], step: usize, rate: f32) {
    let (beta1, beta2, epsilon) = (0.9f32, 0.999f32, 1e-8f32);
    let correction = (1.0 - beta1.powi(step as i32), 1.0 - beta2.powi(step as i32));
    for (param, grad) in params.iter_mut().zip(grads) {
        param.first.zip_mut_with(grad, |m, &g| *m = beta1 * *m + (1.0 - beta1) * g);
        param.second.zip_mut_with(grad, |v, &g| *v = beta2 * *v + (1.0 - beta2) * g * g);
        ndarray::Zip::from(&mut param.data).and(&param.first).and(&param.second).for_each(|p, &m, &v| {
            *p -= rate * (m / correction.0) / ((v / correction.1).sqrt() + epsilon);
        });
    }
}
