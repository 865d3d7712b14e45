//! INT8 quantization of a canonical graph.
//!
//! [`quantize`] turns Linear layers into INT8 `QLinear` nodes and returns a
//! [`QuantReport`]. It works in five steps:
//!
//! 1. Decide each operator's precision from [`QuantConfig`]: Linear and
//!    ConvTranspose are INT8, LayerNorm, residual Add and GELU stay f32
//!    unless overridden, and Softmax stays inside the f32 Attention kernel.
//!    An INT8 ConvTranspose is split into Transpose, Linear and Col2im
//!    ([`split`]), and its Linear is quantized like the others.
//! 2. Smooth outlier channels of LayerNorm results read by INT8 Linears
//!    ([`smooth`]), with per-channel maxima from the calibration data.
//! 3. Calibrate static activation ranges ([`calibrate`]): the interpreter
//!    runs the graph on the calibration batches, and the statistics are
//!    cached on disk when `cache_dir` is set.
//! 4. Rewrite the graph ([`rewrite`]).
//! 5. Measure each layer's output against the f32 model on the calibration
//!    data for the report.
//!
//! Activations are u8 (asymmetric) and weights symmetric i8, so the
//! kernels compute u8 x i8 dot products in i32; see [`crate::ir::Op::QLinear`].

pub mod cache;
pub mod calibrate;
pub mod config;
pub mod report;
pub mod rewrite;
pub mod smooth;
pub mod split;

use std::collections::HashMap;

use indicatif::{ProgressBar, ProgressStyle};

pub use config::{ActivationMode, CalibrationMethod, DynamicGranularity, LayerOverride, Precision, QuantConfig, WeightGranularity};
pub use report::QuantReport;

use self::calibrate::{Pass, TensorStats};
use self::report::{ErrorSums, LayerReport, PrecisionDecision};
use crate::error::{Error, Result};
use crate::interp;
use crate::ir::op::BinaryOp;
use crate::ir::{Graph, NodeId, Op, ValueId};
use crate::tensor::{DType, Tensor};

/// Quantizes `graph` in place. Each calibration tensor is one f32 batch for
/// the model's single input, of the input's bound shape.
pub fn quantize(graph: &mut Graph, config: &QuantConfig, calibration: &[Tensor]) -> Result<QuantReport> {
    config.validate()?;
    reject_nan_constants(graph)?;
    let mut counter = PassCounter::default();

    // Step 1 of 5: precisions. A split graph computes the same f32 function
    // up to rounding, so the error report compares against it.
    let mut plan = plan_precisions(graph, config);
    for node in std::mem::take(&mut plan.conv_transposes) {
        plan.linears.push(split::split(graph, node)?);
    }
    let reference = graph.clone();
    let needs_ranges = config.activations == ActivationMode::Static || !plan.fake_quant.is_empty();
    if needs_ranges && calibration.is_empty() {
        let message = if config.activations == ActivationMode::Static {
            "static activation scales need calibration data; give calibration batches or set activations to \"dynamic\""
        } else {
            "INT8 results of LayerNorm, Add or GELU (an ops or layers override) have fixed scales, which need calibration data"
        };
        return Err(Error::Quant(message.into()));
    }

    // Step 2 of 5: smoothing.
    let mut smoothed = vec![];
    if let Some(alpha) = config.smoothing_alpha
        && alpha > 0.0
        && !calibration.is_empty()
    {
        let candidates = smooth::candidates(graph, config);
        let taps: Vec<ValueId> = candidates.iter().map(|(norm, _)| graph.node(*norm).outputs[0]).collect();
        if !taps.is_empty() {
            let stats = calibrate_cached(graph, &taps, calibration, Pass::Range { per_channel: true }, config, None, &mut counter)?;
            let absmax: HashMap<ValueId, Vec<f32>> =
                taps.iter().zip(stats).filter_map(|(&v, s)| s.channel_absmax.map(|m| (v, m))).collect();
            smoothed = smooth::apply(graph, &candidates, &absmax, alpha);
        }
    }

    // Step 3 of 5: static ranges.
    let mut taps: Vec<ValueId> = vec![];
    if config.activations == ActivationMode::Static {
        for &linear in &plan.linears {
            let x = graph.node(linear).inputs[0].expect("Linear has an input");
            if !taps.contains(&x) {
                taps.push(x);
            }
        }
    }
    taps.extend(plan.fake_quant.iter().copied().filter(|v| !taps.contains(v)).collect::<Vec<_>>());
    let mut ranges: HashMap<ValueId, (f32, f32)> = HashMap::new();
    if !taps.is_empty() {
        let range_stats = calibrate_cached(graph, &taps, calibration, Pass::Range { per_channel: false }, config, None, &mut counter)?;
        let histogram_pass = match config.calibration {
            CalibrationMethod::MinMax => None,
            CalibrationMethod::Percentile => Some(Pass::Signed),
            CalibrationMethod::Entropy => Some(Pass::Magnitude),
        };
        let final_stats = match histogram_pass {
            Some(pass) => calibrate_cached(graph, &taps, calibration, pass, config, Some(&range_stats), &mut counter)?,
            None => range_stats,
        };
        for (&v, stats) in taps.iter().zip(&final_stats) {
            let (lo, hi) = calibrate::choose_range(stats, config);
            if hi <= lo {
                tracing::warn!(
                    value = %graph.value(v).name,
                    "every calibration value here is {lo}, so its INT8 scale is a guess; calibrate on data that varies"
                );
            }
            ranges.insert(v, (lo, hi));
        }
    }
    let params: HashMap<ValueId, (f32, u8)> = ranges.iter().map(|(&v, &(lo, hi))| (v, calibrate::affine_params(lo, hi))).collect();

    // Step 4 of 5: rewrite.
    let rewritten = rewrite::quantize_linears(graph, &plan.linears, config, &params)?;
    for &value in &plan.fake_quant {
        let (scale, zero_point) = params[&value];
        rewrite::insert_fake_quant(graph, value, scale, zero_point)?;
    }
    crate::ir::verify::verify(graph, "quantize")?;

    // Step 5 of 5: error against f32.
    let mut layers: Vec<LayerReport> = rewritten
        .iter()
        .map(|r| {
            let activation = match config.activations {
                ActivationMode::Static => {
                    let (scale, zero_point) = params[&r.input];
                    format!("static scale={scale:.3e} zp={zero_point}")
                }
                ActivationMode::Dynamic => format!("dynamic {:?}", config.dynamic_granularity).to_lowercase(),
            };
            LayerReport {
                name: r.name.clone(),
                activation,
                input_range: ranges.get(&r.input).copied(),
                weight_scale_min: r.weight_scale_min,
                weight_scale_max: r.weight_scale_max,
                relative_error: None,
                cosine: None,
            }
        })
        .collect();
    let mut output_error = None;
    if !calibration.is_empty() {
        let pairs: Vec<(ValueId, ValueId)> = rewritten.iter().map(|r| (r.f32_output, r.output)).collect();
        let (per_layer, output) = compare(&reference, graph, &pairs, calibration)?;
        for (layer, sums) in layers.iter_mut().zip(per_layer) {
            layer.relative_error = Some(sums.relative_error());
            layer.cosine = Some(sums.cosine());
        }
        output_error = Some(output);
    }

    Ok(QuantReport {
        activations: match config.activations {
            ActivationMode::Static => "static u8".into(),
            ActivationMode::Dynamic => format!("dynamic u8 {}", recipe_spelling(&config.dynamic_granularity)),
        },
        weights: format!("symmetric i8 {}, |q| <= {}", recipe_spelling(&config.weights), config.weight_max),
        calibration: recipe_spelling(&config.calibration),
        calibration_batches: calibration.len(),
        cached_passes: counter.cached,
        computed_passes: counter.computed,
        layers,
        decisions: plan.decisions,
        smoothed,
        output_relative_error: output_error.map(|s| s.relative_error()),
        output_cosine: output_error.map(|s| s.cosine()),
    })
}

/// Which nodes become INT8, and the decisions for the rest.
struct PrecisionPlan {
    linears: Vec<NodeId>,
    /// ConvTranspose nodes to split so that their products become INT8 Linears.
    conv_transposes: Vec<NodeId>,
    /// Results of LayerNorm, Add and GELU nodes that get a quantize-dequantize pair.
    fake_quant: Vec<ValueId>,
    decisions: Vec<PrecisionDecision>,
}

fn plan_precisions(graph: &Graph, config: &QuantConfig) -> PrecisionPlan {
    let mut plan = PrecisionPlan { linears: vec![], conv_transposes: vec![], fake_quant: vec![], decisions: vec![] };
    for node in graph.topo_order() {
        let n = graph.node(node);
        let kind = match &n.op {
            Op::Linear => "Linear",
            Op::ConvTranspose(_) => "ConvTranspose",
            Op::LayerNorm { .. } => "LayerNorm",
            Op::Binary(BinaryOp::Add) => "Add",
            Op::Gelu { .. } => "Gelu",
            Op::Attention { .. } => {
                plan.decisions.push(decision(n, "f32", "Softmax and the attention products run in the f32 Attention kernel"));
                continue;
            }
            _ => continue,
        };
        let out = n.outputs[0];
        // Adds of constants (position embeddings) and shape arithmetic are not activations worth quantizing.
        let is_activation = graph.fact(out).dtype == DType::F32 && n.inputs.iter().flatten().all(|&v| graph.konst(v).is_none() || kind != "Add");
        // A ConvTranspose's INT8 product is the Linear `NAME/gemm`, the name
        // that the report lists, so a layer override of either name applies.
        let name = if kind == "ConvTranspose" { split::linear_name(&n.name) } else { n.name.clone() };
        let precision = config.precision_of(kind, &name);
        let reason = |default: bool| if default { "default" } else { "override" };
        let is_default = precision == config::QuantConfig::default().precision_of(kind, "") && !config.ops.contains_key(kind);
        match (kind, precision) {
            ("Linear", Precision::Int8) => {
                let weight_ok = n.inputs.get(1).copied().flatten().and_then(|w| graph.konst(w)).is_some_and(|t| t.as_f32().is_some() && t.shape().len() == 2);
                if weight_ok {
                    plan.linears.push(node);
                } else {
                    plan.decisions.push(decision(n, "f32", "the weight is not a 2-D f32 constant"));
                }
            }
            ("ConvTranspose", Precision::Int8) if split::can_split(graph, node) => {
                plan.conv_transposes.push(node);
                plan.decisions.push(decision(n, "int8", "split into Transpose, Linear and Col2im; the Linear is INT8"));
            }
            ("ConvTranspose", Precision::Int8) => {
                plan.decisions.push(decision(n, "f32", "grouped, or the weight is not an f32 constant"));
            }
            (_, Precision::F32) => plan.decisions.push(decision(n, "f32", reason(is_default))),
            (_, Precision::Int8) if is_activation => {
                plan.fake_quant.push(out);
                plan.decisions.push(decision(n, "int8", "override: result quantized and dequantized"));
            }
            (_, Precision::Int8) => plan.decisions.push(decision(n, "f32", "adds a constant, so it is not an activation")),
        }
    }
    warn_unmatched_layers(graph, config);
    plan
}

/// Logs each layer override whose name is part of no node's name, since
/// it changes nothing (a typo or a name from another export).
fn warn_unmatched_layers(graph: &Graph, config: &QuantConfig) {
    for layer in &config.layers {
        let matched = graph.node_ids().any(|id| {
            let name = &graph.node(id).name;
            name.contains(&layer.name) || split::linear_name(name).contains(&layer.name)
        });
        if !matched {
            tracing::warn!(name = %layer.name, "the quantize layer override matches no node name, so it changes nothing");
        }
    }
}

fn decision(node: &crate::ir::Node, precision: &str, reason: &str) -> PrecisionDecision {
    PrecisionDecision { name: node.name.clone(), op: node.op.name().to_string(), precision: precision.into(), reason: reason.into() }
}

#[derive(Default)]
struct PassCounter {
    cached: usize,
    computed: usize,
}

/// Runs one calibration pass, or reads it from the cache.
fn calibrate_cached(
    graph: &Graph,
    taps: &[ValueId],
    calibration: &[Tensor],
    pass: Pass,
    config: &QuantConfig,
    ranges: Option<&[TensorStats]>,
    counter: &mut PassCounter,
) -> Result<Vec<TensorStats>> {
    let bins = config.histogram_bins;
    let path = config.cache_dir.as_ref().map(|dir| cache::entry_path(dir, graph, taps, pass, bins, calibration));
    if let Some(path) = &path
        && let Some(stats) = cache::load(path, graph, taps, bins)
    {
        tracing::info!(path = %path.display(), "calibration statistics read from the cache");
        counter.cached += 1;
        return Ok(stats);
    }
    let stats = calibrate::collect(graph, taps, calibration, pass, bins, ranges)?;
    counter.computed += 1;
    // A cache that cannot be written costs the next build time, not this one.
    if let Some(path) = &path
        && let Err(error) = cache::store(path, &stats)
    {
        tracing::warn!(%error, "calibration statistics not cached");
    }
    Ok(stats)
}

/// Runs both graphs on every batch; returns the error sums of each
/// `(f32 value, quantized value)` pair and of the first output.
fn compare(reference: &Graph, quantized: &Graph, pairs: &[(ValueId, ValueId)], calibration: &[Tensor]) -> Result<(Vec<ErrorSums>, ErrorSums)> {
    let ref_taps: Vec<ValueId> = pairs.iter().map(|p| p.0).collect();
    let q_taps: Vec<ValueId> = pairs.iter().map(|p| p.1).collect();
    let mut sums = vec![ErrorSums::default(); pairs.len()];
    let mut output = ErrorSums::default();
    let progress = ProgressBar::new(calibration.len() as u64);
    progress.set_style(ProgressStyle::with_template("measuring INT8 error [{bar:30}] {pos}/{len} batches").expect("template is valid"));
    for batch in calibration {
        let (ref_out, ref_values) = interp::run_with_taps(reference, &[(reference.inputs()[0], batch.clone())], &ref_taps)?;
        let (q_out, q_values) = interp::run_with_taps(quantized, &[(quantized.inputs()[0], batch.clone())], &q_taps)?;
        for (i, (r, q)) in ref_values.iter().zip(&q_values).enumerate() {
            sums[i].add(f32_slice(q)?, f32_slice(r)?);
        }
        output.add(f32_slice(&q_out[0])?, f32_slice(&ref_out[0])?);
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok((sums, output))
}

fn f32_slice(tensor: &Tensor) -> Result<&[f32]> {
    tensor.as_f32().and_then(|a| a.as_slice()).ok_or_else(|| Error::Internal("expected a contiguous f32 tensor".into()))
}

/// Rejects a NaN in any f32 constant. In f32 it reaches the outputs, but
/// INT8 has no NaN: a quantized layer after it would turn it into finite,
/// wrong values. Infinities stay allowed, since attention masks use them.
fn reject_nan_constants(graph: &Graph) -> Result<()> {
    for node in graph.node_ids() {
        if graph.node(node).op != Op::Constant {
            continue;
        }
        let value = graph.node(node).outputs[0];
        let Some(values) = graph.konst(value).and_then(|t| t.as_f32()) else { continue };
        let nan = values.iter().filter(|v| v.is_nan()).count();
        if nan > 0 {
            return Err(Error::Quant(format!(
                "constant '{}' contains {nan} NaN value(s), which INT8 would turn into finite, wrong results; repair the model's weights first",
                graph.value(value).name
            )));
        }
    }
    Ok(())
}

/// Returns a setting as a recipe spells it (`per-channel`, `min-max`).
pub(crate) fn recipe_spelling<T: serde::Serialize + std::fmt::Debug>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        _ => format!("{value:?}").to_lowercase(),
    }
}
