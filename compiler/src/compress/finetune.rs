//! Logit-level distillation of the classifier head. The modes that also
//! train parameters inside the network, and the squared-error loss for
//! models that are not classifiers, are in [`super::tune`].
//!
//! Full-batch Adam trains the student's head to minimize
//! `T^2 * KL(softmax(teacher / T) || softmax(student / T))` over the
//! calibration samples. The gradient for the head's weight and bias is
//! written out in closed form. The features that feed the head stay fixed,
//! so the loss is convex in those parameters. A held-out share of the
//! samples picks the best step, so on data the descent did not see the
//! result is never worse than the starting head.

use nalgebra::{DMatrix, DVector};

use super::PassOutcome;
use super::calib::{Calibration, Rows, run_rows};
use super::edit::Edit;
use super::importance::{linear_bias, linear_weight};
use super::recipe::{FinetuneLoss, FinetuneParams, FinetuneSpec};
use super::report::FinetuneOutcome;
use super::units::is_constant_linear;
use crate::error::{Error, Result};
use crate::ir::{Graph, NodeId};
use crate::tensor::Tensor;

/// Steps between two checks of the held-out loss.
const CHECK_EVERY: usize = 10;

/// Returns the Linear that produces the model's first output.
pub fn head(graph: &Graph) -> Result<NodeId> {
    let output = *graph.outputs().first().ok_or_else(|| Error::Compress("the model has no output".into()))?;
    let producer = graph.value(output).producer;
    if !is_constant_linear(graph, producer) || graph.fact(output).rank() != 2 {
        let node = graph.node(producer);
        return Err(Error::Recipe(format!(
            "finetune with loss = \"kl\" needs a classifier whose [batch, classes] output comes from a Linear layer \
             with constant weights; the output comes from '{}' ({}); loss = \"mse\" trains biases or norms of any model",
            node.name,
            node.op.name()
        )));
    }
    Ok(producer)
}

/// Checks, before any work, that the pass can train this model: KL needs
/// a classifier head, and the chosen set must contain a constant.
pub fn check(graph: &Graph, spec: &FinetuneSpec) -> Result<()> {
    let head = match spec.loss {
        FinetuneLoss::Kl => Some(head(graph)?),
        FinetuneLoss::Mse => head(graph).ok(),
    };
    if spec.loss == FinetuneLoss::Mse && spec.temperature != super::recipe::default_temperature() {
        tracing::warn!("finetune ignores temperature = {} with loss = \"mse\": the temperature softens KL targets only", spec.temperature);
    }
    if !spec.params.head_only() {
        super::tune::select(graph, spec.params, head)?;
    }
    Ok(())
}

pub fn run(graph: &Graph, teacher: &Graph, spec: &FinetuneSpec, calibration: &Calibration) -> Result<PassOutcome> {
    if spec.loss == FinetuneLoss::Mse {
        return super::tune::run_pass(graph, teacher, spec, calibration, head(graph).ok());
    }
    let head = head(graph)?;
    if !spec.params.head_only() {
        return super::tune::run_pass(graph, teacher, spec, calibration, Some(head));
    }
    let name = graph.node(head).name.clone();
    let input = graph.node(head).inputs[0].expect("Linear has an input");
    let (_, taps) = run_rows(graph, calibration, &[input], "student model")?;
    let (teacher_logits, _) = run_rows(teacher, calibration, &[], "original model")?;
    let features = &taps[0];
    if features.rows() != teacher_logits.rows() {
        return Err(Error::Compress(format!(
            "finetune: head '{name}' reads {} feature rows for {} output rows",
            features.rows(),
            teacher_logits.rows()
        )));
    }

    let problem = Problem::new(features, &teacher_logits, spec);
    if problem.held_out_rows() == 0 && spec.holdout > 0.0 {
        tracing::warn!(
            "finetune holds out no sample: {} calibration sample(s) at holdout {} leave none for checking, so the training \
             samples pick the best step; give more calibration samples to hold some out",
            features.rows(),
            spec.holdout
        );
    }
    let weight = linear_weight(graph, head).as_f32().ok_or_else(|| Error::Compress(format!("head '{name}' is not f32")))?;
    let (out, k) = (weight.shape()[0], weight.shape()[1]);
    let w0 = DMatrix::from_row_iterator(out, k, weight.iter().map(|&v| f64::from(v)));
    let b0 = match linear_bias(graph, head).and_then(Tensor::as_f32) {
        Some(bias) => DVector::from_iterator(out, bias.iter().map(|&v| f64::from(v))),
        None => DVector::zeros(out),
    };
    let trained = descend(&problem, spec, w0, b0);

    let mut outcome = PassOutcome::default();
    outcome.details.insert(name.clone(), trained.summary(spec, problem.held_out_rows()));
    let held_out = problem.held_out_rows();
    outcome.finetune = Some(FinetuneOutcome {
        loss: "kl",
        parameter_tensors: if spec.params == FinetuneParams::Head { 2 } else { 1 },
        steps: trained.steps,
        best_step: trained.best_step,
        checked_samples: if held_out > 0 { held_out } else { problem.train.0.nrows() },
        held_out: held_out > 0,
        loss_before: trained.before.0,
        loss_after: trained.after.0,
        figure: "top-1 agreement",
        figure_before: trained.before.1,
        figure_after: trained.after.1,
    });
    if trained.best_step > 0 {
        let weight = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[out, k]), trained.w.transpose().iter().map(|&v| v as f32).collect())
            .expect("out * k values");
        let bias = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[out]), trained.b.iter().map(|&v| v as f32).collect()).expect("out values");
        outcome.edits.push(Edit::Linear { node: name, weight: Tensor::F32(weight).into(), bias: Some(Tensor::F32(bias).into()) });
    }
    Ok(outcome)
}

/// Features, softened teacher targets and the train / held-out split.
struct Problem {
    train: (DMatrix<f64>, DMatrix<f64>),
    held_out: Option<(DMatrix<f64>, DMatrix<f64>)>,
    temperature: f64,
}

impl Problem {
    fn new(features: &Rows, teacher: &Rows, spec: &FinetuneSpec) -> Problem {
        let n = features.rows();
        let x = DMatrix::from_row_iterator(n, features.cols, features.data.iter().map(|&v| f64::from(v)));
        let logits = DMatrix::from_row_iterator(n, teacher.cols, teacher.data.iter().map(|&v| f64::from(v)));
        let targets = softmax_rows(&(logits / spec.temperature));
        let held_rows = ((n as f64 * spec.holdout).round() as usize).min(n.saturating_sub(1));
        let split = n - held_rows;
        let train = (x.rows(0, split).into_owned(), targets.rows(0, split).into_owned());
        let held_out = (held_rows > 0).then(|| (x.rows(split, held_rows).into_owned(), targets.rows(split, held_rows).into_owned()));
        Problem { train, held_out, temperature: spec.temperature }
    }

    fn held_out_rows(&self) -> usize {
        self.held_out.as_ref().map_or(0, |(x, _)| x.nrows())
    }

    /// Returns the data that picks the best step: the held-out rows, or
    /// the training rows when nothing is held out.
    fn check_set(&self) -> (&DMatrix<f64>, &DMatrix<f64>) {
        let (x, t) = self.held_out.as_ref().unwrap_or(&self.train);
        (x, t)
    }
}

/// Loss and top-1 agreement of `(w, b)` on `x` against soft targets `t`.
fn evaluate(x: &DMatrix<f64>, t: &DMatrix<f64>, w: &DMatrix<f64>, b: &DVector<f64>, temperature: f64) -> (f64, f64) {
    let student = logits(x, w, b);
    let p = softmax_rows(&(&student / temperature));
    let mut kl = 0.0;
    let mut agree = 0usize;
    for r in 0..x.nrows() {
        for c in 0..t.ncols() {
            let target = t[(r, c)];
            if target > 0.0 {
                kl += target * (target.ln() - p[(r, c)].max(f64::MIN_POSITIVE).ln());
            }
        }
        agree += usize::from(argmax(&student.row(r).transpose()) == argmax(&t.row(r).transpose()));
    }
    let rows = x.nrows().max(1) as f64;
    (temperature * temperature * kl / rows, agree as f64 / rows)
}

/// The trained head and how it got there.
struct Trained {
    w: DMatrix<f64>,
    b: DVector<f64>,
    best_step: usize,
    steps: usize,
    before: (f64, f64),
    after: (f64, f64),
    /// Loss at the last check: far above `before` when the run diverged.
    last: f64,
}

impl Trained {
    fn summary(&self, spec: &FinetuneSpec, held_out: usize) -> String {
        let on = if held_out > 0 { format!("{held_out} held-out samples") } else { "the training samples".into() };
        let outcome = match self.best_step {
            0 => no_step_improved(self.before.0, self.last, spec.learning_rate, "head"),
            step => format!("best at step {step}"),
        };
        format!(
            "KL (T={}) {:.5} -> {:.5}, agreement {:.2}% -> {:.2}% on {on}; {} steps, {outcome}",
            spec.temperature,
            self.before.0,
            self.after.0,
            self.before.1 * 100.0,
            self.after.1 * 100.0,
            self.steps
        )
    }
}

fn descend(problem: &Problem, spec: &FinetuneSpec, w: DMatrix<f64>, b: DVector<f64>) -> Trained {
    let (beta1, beta2, epsilon) = (0.9, 0.999, 1e-8);
    let temperature = problem.temperature;
    let (x, t) = &problem.train;
    let (check_x, check_t) = problem.check_set();
    let before = evaluate(check_x, check_t, &w, &b, temperature);
    let mut best = Trained { w: w.clone(), b: b.clone(), best_step: 0, steps: spec.steps, before, after: before, last: before.0 };
    let mut last = before.0;
    let (mut w, mut b) = (w, b);
    let (mut mw, mut vw) = (DMatrix::zeros(w.nrows(), w.ncols()), DMatrix::zeros(w.nrows(), w.ncols()));
    let (mut mb, mut vb) = (DVector::zeros(b.len()), DVector::zeros(b.len()));
    for step in 1..=spec.steps {
        // d(T^2 KL)/d(logits) = T (p_student - p_teacher), averaged over rows.
        let p = softmax_rows(&(logits(x, &w, &b) / temperature));
        let g = (p - t) * (temperature / x.nrows() as f64);
        let gb = g.row_sum().transpose();
        let correction = (1.0 - f64::powi(beta1, step as i32), 1.0 - f64::powi(beta2, step as i32));
        let rate = spec.learning_rate;
        if spec.params == FinetuneParams::Head {
            let gw = g.transpose() * x;
            mw = &mw * beta1 + &gw * (1.0 - beta1);
            vw = &vw * beta2 + gw.component_mul(&gw) * (1.0 - beta2);
            w -= mw.zip_map(&vw, |m, v| rate * (m / correction.0) / ((v / correction.1).sqrt() + epsilon));
        }
        mb = &mb * beta1 + &gb * (1.0 - beta1);
        vb = &vb * beta2 + gb.component_mul(&gb) * (1.0 - beta2);
        b -= mb.zip_map(&vb, |m, v| rate * (m / correction.0) / ((v / correction.1).sqrt() + epsilon));

        if step % CHECK_EVERY == 0 || step == spec.steps {
            let now = evaluate(check_x, check_t, &w, &b, temperature);
            last = now.0;
            if now.0 < best.after.0 {
                best = Trained { w: w.clone(), b: b.clone(), best_step: step, steps: spec.steps, before, after: now, last };
            }
        }
    }
    Trained { last, ..best }
}

/// Describes a run in which no step lowered the checked loss. A loss that
/// ended far above its start, or not finite, points at the learning rate.
pub(crate) fn no_step_improved(before: f64, last: f64, learning_rate: f64, kept_params: &str) -> String {
    if !last.is_finite() || last > 2.0 * before {
        format!(
            "no step improved it: the loss rose to {last:.3e}, so learning-rate = {learning_rate:e} may be too high; \
             {kept_params} kept"
        )
    } else {
        format!("no step improved it, {kept_params} kept")
    }
}

/// `x w^T + b` for rows `x`.
fn logits(x: &DMatrix<f64>, w: &DMatrix<f64>, b: &DVector<f64>) -> DMatrix<f64> {
    let mut s = x * w.transpose();
    for mut row in s.row_iter_mut() {
        row += b.transpose();
    }
    s
}

fn softmax_rows(s: &DMatrix<f64>) -> DMatrix<f64> {
    let mut p = s.clone();
    for mut row in p.row_iter_mut() {
        let max = row.max();
        row.apply(|v| *v = (*v - max).exp());
        let sum = row.sum();
        row /= sum;
    }
    p
}

fn argmax(v: &DVector<f64>) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}
