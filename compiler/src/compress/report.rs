//! What each compression pass changed and what it cost.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::calib::Rows;
use super::distill::Refit;
use super::weights::LoadReport;
use crate::ir::summary::{Summary, node_flops};
use crate::ir::{Graph, Op};
use crate::tensor::DType;

/// Parameters and FLOPs of one layer (a node with weights, or an Attention).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cost {
    pub params: u64,
    pub flops: u64,
}

/// Cost of every Linear, Conv and Attention node, by node name.
pub fn layer_costs(graph: &Graph) -> BTreeMap<String, Cost> {
    let mut costs = BTreeMap::new();
    for id in graph.node_ids() {
        let node = graph.node(id);
        if !matches!(node.op, Op::Linear | Op::QLinear | Op::Conv(_) | Op::Attention { .. } | Op::MatMul | Op::Gemm { .. }) {
            continue;
        }
        let params = node.inputs[1..]
            .iter()
            .flatten()
            .filter(|v| graph.konst(**v).is_some_and(|t| t.dtype().is_float() || t.dtype() == DType::I8))
            .map(|v| graph.fact(*v).numel() as u64)
            .sum();
        costs.insert(node.name.clone(), Cost { params, flops: node_flops(graph, id) });
    }
    costs
}

/// One layer whose cost or weights a pass changed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerChange {
    pub layer: String,
    pub before: Cost,
    pub after: Cost,
    /// Ratio, rank or sparsity chosen, as the pass describes it.
    pub detail: String,
}

/// Output of the compressed model against the teacher on calibration data.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OutputError {
    pub samples: usize,
    /// Fraction of samples whose top-1 class matches the teacher's, for
    /// models with `[batch, classes]` outputs.
    pub top1_agreement: Option<f64>,
    /// `|y - t| / |t|` over all outputs.
    pub relative_error: f64,
    pub max_abs_error: f64,
    /// Mean and minimum of the per-sample cosine similarity.
    pub cosine_mean: f64,
    pub cosine_min: f64,
}

impl OutputError {
    /// Compares outputs of `samples` samples with the teacher's.
    pub fn measure(student: &Rows, teacher: &Rows, samples: usize, classifier: bool) -> OutputError {
        let per_sample = student.data.len() / samples.max(1);
        let mut result = OutputError { samples, cosine_min: f64::INFINITY, ..OutputError::default() };
        let (mut diff, mut norm, mut agree, mut cosine_sum) = (0.0f64, 0.0f64, 0usize, 0.0f64);
        for s in 0..samples {
            let y = &student.data[s * per_sample..(s + 1) * per_sample];
            let t = &teacher.data[s * per_sample..(s + 1) * per_sample];
            let (mut dot, mut yy, mut tt) = (0.0f64, 0.0f64, 0.0f64);
            for (&a, &b) in y.iter().zip(t) {
                let (a, b) = (a as f64, b as f64);
                diff += (a - b) * (a - b);
                norm += b * b;
                dot += a * b;
                yy += a * a;
                tt += b * b;
                result.max_abs_error = result.max_abs_error.max((a - b).abs());
            }
            let cosine = if yy > 0.0 && tt > 0.0 { dot / (yy.sqrt() * tt.sqrt()) } else { f64::from(u8::from(yy == tt)) };
            cosine_sum += cosine;
            result.cosine_min = result.cosine_min.min(cosine);
            if argmax(y) == argmax(t) {
                agree += 1;
            }
        }
        result.relative_error = (diff / norm.max(f64::MIN_POSITIVE)).sqrt();
        result.cosine_mean = cosine_sum / samples.max(1) as f64;
        result.top1_agreement = classifier.then(|| agree as f64 / samples.max(1) as f64);
        result
    }
}

fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

/// Outcome of a finetune pass, measured on the batches that pick the best
/// step (held out, or the training batches when none is held out).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FinetuneOutcome {
    /// The loss: `kl` or `mse`.
    pub loss: &'static str,
    pub parameter_tensors: usize,
    pub steps: usize,
    /// The step whose parameters were kept; 0 when no step improved the loss.
    pub best_step: usize,
    /// Samples that picked the best step.
    pub checked_samples: usize,
    /// Whether those samples were held out from training.
    pub held_out: bool,
    pub loss_before: f64,
    pub loss_after: f64,
    /// The measure in `figure_before` and `figure_after`: `top-1
    /// agreement` for KL, `mean cosine` for MSE.
    pub figure: &'static str,
    pub figure_before: f64,
    pub figure_after: f64,
}

/// What one pass did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PassReport {
    pub pass: String,
    /// Settings of the pass, with the defaults filled in.
    pub settings: super::recipe::PassSpec,
    pub params_before: u64,
    pub params_after: u64,
    pub flops_before: u64,
    pub flops_after: u64,
    pub layers: Vec<LayerChange>,
    /// Refits made by a distill pass.
    pub refits: Vec<Refit>,
    pub loaded: Option<LoadReport>,
    /// Scales and decisions of a quantize pass.
    pub quantization: Option<crate::quant::QuantReport>,
    /// The parameters a finetune pass trained and the loss it reached.
    pub finetune: Option<FinetuneOutcome>,
    /// Against the teacher, after this pass; `None` without calibration data.
    pub output_error: Option<OutputError>,
    pub seconds: f64,
}

/// The whole compression: every pass in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CompressReport {
    pub recipe: String,
    pub calibration: Option<String>,
    pub calibration_samples: usize,
    /// Batch of the graph whose FLOPs the report gives.
    pub batch: usize,
    pub params_before: u64,
    pub params_after: u64,
    pub flops_before: u64,
    pub flops_after: u64,
    /// FLOPs of the attention and MLP units (the encoder), before and after.
    pub encoder_flops_before: u64,
    pub encoder_flops_after: u64,
    pub passes: Vec<PassReport>,
}

impl CompressReport {
    /// Restates the figures of passes that ran on a copy of the model bound
    /// to `calibration_batch` at the build graph's `batch`.
    ///
    /// FLOPs scale by `batch / calibration_batch`, because every operator's
    /// work is linear in the batch. Parameters lose `param_offset`: the
    /// copy's parameters minus the build graph's, such as a class token
    /// expanded to the batch. The passes leave such constants alone, so the
    /// offset is the same before and after each pass.
    pub fn rebase(&mut self, batch: usize, calibration_batch: usize, param_offset: u64) {
        let flops = |f: &mut u64| *f = (*f as u128 * batch as u128 / calibration_batch.max(1) as u128) as u64;
        self.batch = batch;
        let params = |p: &mut u64| *p = p.saturating_sub(param_offset);
        params(&mut self.params_before);
        params(&mut self.params_after);
        for value in [&mut self.flops_before, &mut self.flops_after, &mut self.encoder_flops_before, &mut self.encoder_flops_after] {
            flops(value);
        }
        for pass in &mut self.passes {
            params(&mut pass.params_before);
            params(&mut pass.params_after);
            flops(&mut pass.flops_before);
            flops(&mut pass.flops_after);
            for layer in &mut pass.layers {
                flops(&mut layer.before.flops);
                flops(&mut layer.after.flops);
            }
        }
    }
}

/// Layers whose cost or detail changed between `before` and `after`.
pub fn changes(
    before: &BTreeMap<String, Cost>,
    after: &BTreeMap<String, Cost>,
    details: &BTreeMap<String, String>,
) -> Vec<LayerChange> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).chain(details.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let b = before.get(name).copied().unwrap_or_default();
            let a = after.get(name).copied().unwrap_or_default();
            let detail = details.get(name).cloned().unwrap_or_default();
            (b != a || !detail.is_empty()).then(|| LayerChange { layer: name.clone(), before: b, after: a, detail })
        })
        .collect()
}

/// Parameters (float and INT8 constants) and FLOPs of a graph.
pub fn totals(graph: &Graph) -> (u64, u64) {
    let summary = Summary::of(graph);
    (summary.parameters, summary.flops)
}

fn percent(before: u64, after: u64) -> String {
    if before == 0 {
        return "n/a".into();
    }
    format!("{:+.1}%", (after as f64 - before as f64) / before as f64 * 100.0)
}

impl fmt::Display for CompressReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "compression: {}", self.recipe)?;
        if let Some(source) = &self.calibration {
            let plural = if self.calibration_samples == 1 { "" } else { "s" };
            writeln!(f, "calibration: {} sample{plural} of {source}", self.calibration_samples)?;
        }
        if self.batch > 1 {
            writeln!(f, "FLOPs below are for a batch of {}", self.batch)?;
        }
        writeln!(f, "parameters:   {} -> {} ({})", self.params_before, self.params_after, percent(self.params_before, self.params_after))?;
        writeln!(f, "FLOPs:        {} -> {} ({})", self.flops_before, self.flops_after, percent(self.flops_before, self.flops_after))?;
        writeln!(
            f,
            "encoder FLOPs: {} -> {} ({})",
            self.encoder_flops_before,
            self.encoder_flops_after,
            percent(self.encoder_flops_before, self.encoder_flops_after)
        )?;
        for pass in &self.passes {
            write!(f, "\npass {}: FLOPs {}, parameters {}", pass.pass, percent(pass.flops_before, pass.flops_after), percent(pass.params_before, pass.params_after))?;
            writeln!(f, " ({:.2} s)", pass.seconds)?;
            if let Some(error) = &pass.output_error {
                write!(f, "  vs original:")?;
                if let Some(agreement) = error.top1_agreement {
                    write!(f, " top-1 agreement {:.2}%,", agreement * 100.0)?;
                }
                writeln!(
                    f,
                    " relative error {:.4}, cosine mean {:.5} min {:.5}, max abs {:.4}",
                    error.relative_error, error.cosine_mean, error.cosine_min, error.max_abs_error
                )?;
            }
            for layer in &pass.layers {
                if layer.before == Cost::default() && layer.after == Cost::default() {
                    writeln!(f, "  {:<32} {}", layer.layer, layer.detail)?;
                    continue;
                }
                writeln!(
                    f,
                    "  {:<32} params {:>9} -> {:<9} FLOPs {:>11} -> {:<11} {}",
                    layer.layer, layer.before.params, layer.after.params, layer.before.flops, layer.after.flops, layer.detail
                )?;
            }
            for refit in &pass.refits {
                writeln!(
                    f,
                    "  refit {:<26} ({:<8}) relative error {:.5} -> {:.5}",
                    refit.layer, refit.target, refit.relative_error_before, refit.relative_error_after
                )?;
            }
            if let Some(quantization) = &pass.quantization {
                for line in quantization.to_string().lines() {
                    writeln!(f, "  {line}")?;
                }
            }
            if let Some(loaded) = &pass.loaded {
                writeln!(f, "  loaded {} tensor(s) from {}; {} unmatched, {} weight(s) kept", loaded.replaced.len(), loaded.source, loaded.unmatched.len(), loaded.kept)?;
                for name in &loaded.unmatched {
                    writeln!(f, "    unmatched: {name}")?;
                }
            }
        }
        Ok(())
    }
}
