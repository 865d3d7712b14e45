//! First-order Taylor importance of heads and neurons against the model's
//! output.
//!
//! Removing a head or neuron is multiplying its output by a mask `m = 0`
//! instead of 1. To first order the model's output `y_s` on sample `s`
//! then changes by `-dy_s/dm`, where `dy_s/dm = sum_t g_t . a_t` over the
//! sample's tokens: `a_t` is the head's slice of the attention output (or
//! the neuron's activation) and `g_t` the gradient of `y_s` that reaches
//! it. A unit's score is `|dy_s/dm|^2` averaged over the samples: the
//! squared output error its removal adds, to first order. Heads and neurons
//! of every layer are scored in the same units, those of the output.
//!
//! `|dy_s/dm|^2` sums over the output's elements. For outputs of at most
//! [`EXACT_OUTPUTS`] elements per sample (classifiers) there is one
//! backward sweep per element and the sum is exact. For larger outputs (maps)
//! each sweep starts from random signs `v`, and since `E[(v . J)^2] = |J|^2`,
//! random sweeps give an unbiased estimate: [`MAX_PROBES`] per batch with
//! few samples, fewer with many, so that samples times probes stays near
//! [`PROBE_BUDGET`] and the cost does not grow with the sample count.

use ndarray::{ArrayD, Axis, IxDyn};
use rand_core::{Rng, SeedableRng};
use rand_xorshift::XorShiftRng;

use super::calib::{Calibration, progress_bar};
use super::importance::{Scores, head_layout};
use super::units::Units;
use crate::autodiff::Backward;
use crate::error::{Error, Result};
use crate::ir::Graph;

/// Largest output per sample whose Jacobian is swept element by element.
pub const EXACT_OUTPUTS: usize = 16;

/// Most random-sign sweeps per batch for larger outputs.
pub const MAX_PROBES: usize = 8;

/// Samples times random-sign sweeps that the estimate aims at.
pub const PROBE_BUDGET: usize = 128;

pub fn scores(graph: &Graph, units: &Units, calibration: &Calibration) -> Result<Scores> {
    let output = *graph.outputs().first().ok_or_else(|| Error::Compress("the model has no output".into()))?;
    let input = graph.inputs()[0];
    let mut taps = Vec::new();
    taps.extend(units.attention.iter().map(|u| graph.node(u.attention).outputs[0]));
    taps.extend(units.mlp.iter().map(|u| graph.node(u.activation).outputs[0]));
    let backward = Backward::new(graph, &taps, output).map_err(|e| {
        Error::Compress(format!(
            "taylor importance needs gradients from the model's output back to every pruned layer: {e}; \
             use importance = \"reconstruction\" or \"activation\", which need none"
        ))
    })?;

    // Channels per scored unit: a head's width, or 1 for a neuron.
    let widths: Vec<usize> = units
        .attention
        .iter()
        .map(|u| head_layout(graph, u).1)
        .chain(units.mlp.iter().map(|_| 1))
        .collect();
    let mut sums: Vec<Vec<f64>> =
        taps.iter().zip(&widths).map(|(&t, &w)| vec![0.0; graph.fact(t).shape.last().copied().unwrap_or(0) / w]).collect();

    let shape = graph.fact(output).shape.clone();
    let input_batch = graph.fact(input).shape.first().copied();
    if shape.len() < 2 || input_batch != Some(shape[0]) {
        return Err(Error::Compress(format!(
            "taylor importance needs a model output of shape [batch, ...]; '{}' has shape {shape:?} for an input batch \
             of {}",
            graph.value(output).name,
            input_batch.map_or("none".to_string(), |b| b.to_string())
        )));
    }
    let samples_per_batch = shape[0];
    let (exact, sweeps) = sweep_plan(&shape, calibration.samples());
    tracing::info!(
        "taylor importance: {} batches, {sweeps} backward sweeps each ({})",
        calibration.batches.len(),
        if exact { "one per output element" } else { "random-sign probes of the output" }
    );
    let progress = progress_bar(calibration.batches.len() * sweeps, "taylor importance");
    for (index, batch) in calibration.batches.iter().enumerate() {
        let tape = backward.forward(&[(input, batch.clone())])?;
        let mut rng = XorShiftRng::seed_from_u64(index as u64);
        for sweep in 0..sweeps {
            let seed = if exact { one_hot(&shape, sweep) } else { random_signs(&shape, &mut rng) };
            let grads = backward.gradients(&tape, seed)?;
            for (((sum, &tap), grad), &width) in sums.iter_mut().zip(&taps).zip(&grads).zip(&widths) {
                let activation = tape
                    .get(tap)
                    .and_then(|t| t.as_f32())
                    .ok_or_else(|| Error::Internal(format!("the tape lacks '{}'", graph.value(tap).name)))?;
                accumulate(sum, activation, grad, width, samples_per_batch)?;
            }
            progress.inc(1);
        }
    }
    progress.finish_and_clear();

    let probes = if exact { 1 } else { sweeps };
    let count = (calibration.samples() * probes).max(1) as f64;
    let mut scaled = sums.into_iter().map(|s| s.into_iter().map(|v| v / count).collect::<Vec<f64>>());
    let heads: Vec<Vec<f64>> = scaled.by_ref().take(units.attention.len()).collect();
    let neurons: Vec<Vec<f64>> = scaled.collect();
    let names = units.attention.iter().map(|u| &u.name).chain(units.mlp.iter().map(|u| &u.name));
    if let Some((name, _)) = names.zip(heads.iter().chain(&neurons)).find(|(_, s)| s.iter().all(|&v| v == 0.0)) {
        return Err(Error::Compress(format!(
            "taylor importance: no gradient reaches '{name}' from the model's output on the calibration data, so its \
             scores are all zero; an operator between them has a zero derivative (Round, Floor, Ceil, Sign, a Cast to \
             an integer type) or the output does not depend on it. Use importance = \"reconstruction\" or \"activation\""
        )));
    }
    Ok(Scores { heads, neurons })
}

/// Returns whether the sweeps are exact (one per output element of a
/// sample) and how many run per batch.
fn sweep_plan(shape: &[usize], samples: usize) -> (bool, usize) {
    let per_sample: usize = shape.iter().skip(1).product();
    if per_sample <= EXACT_OUTPUTS {
        (true, per_sample)
    } else {
        (false, PROBE_BUDGET.div_ceil(samples.max(1)).clamp(1, MAX_PROBES))
    }
}

/// Builds a seed that selects output element `element` of every sample.
fn one_hot(shape: &[usize], element: usize) -> ArrayD<f32> {
    let mut seed = ArrayD::zeros(IxDyn(shape));
    for mut sample in seed.axis_iter_mut(Axis(0)) {
        if let Some(v) = sample.iter_mut().nth(element) {
            *v = 1.0;
        }
    }
    seed
}

fn random_signs(shape: &[usize], rng: &mut XorShiftRng) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| if rng.next_u32() & 1 == 0 { 1.0 } else { -1.0 })
}

/// Adds `(sum over tokens and the unit's channels of g * a)^2` per sample
/// to each unit's sum; units are `width` consecutive channels. The values
/// are batch-major, so each sample's rows are one contiguous run, whether
/// the value is `[batch, tokens, channels]` or `[batch * tokens, channels]`.
fn accumulate(sums: &mut [f64], activation: &ArrayD<f32>, grad: &ArrayD<f32>, width: usize, samples: usize) -> Result<()> {
    let channels = activation.shape().last().copied().unwrap_or(0);
    if samples == 0 || !activation.len().is_multiple_of(samples) || channels == 0 {
        return Err(Error::Compress(format!(
            "taylor importance: a pruned layer's value of shape {:?} does not split into {samples} samples",
            activation.shape()
        )));
    }
    let (a, g) = (activation.as_standard_layout(), grad.as_standard_layout());
    let sample_len = activation.len() / samples;
    let chunks = a.as_slice().expect("standard layout").chunks(sample_len).zip(g.as_slice().expect("standard layout").chunks(sample_len));
    for (a, g) in chunks {
        let mut per_channel = vec![0.0f64; channels];
        for (i, (&a, &g)) in a.iter().zip(g).enumerate() {
            per_channel[i % channels] += f64::from(a) * f64::from(g);
        }
        for (sum, unit) in sums.iter_mut().zip(per_channel.chunks(width)) {
            let d: f64 = unit.iter().sum();
            *sum += d * d;
        }
    }
    Ok(())
}
