//! Compression passes driven by a [`Recipe`]: low-rank rewriting,
//! structured pruning (heads and MLP neurons), unstructured sparsity,
//! layer-wise distillation, logit-level fine-tuning and weights loaded
//! from elsewhere.
//!
//! [`compress`] runs on a canonical graph. It checks the recipe against the
//! model and the calibration data before any pass runs, keeps the
//! uncompressed graph as the teacher, and after every pass measures the
//! output error against the teacher on the calibration data. Passes express
//! their changes as [`Edit`]s addressed by node name, so [`Compressed::edits`]
//! replays onto the same model bound to another batch size (see
//! [`compress_for`]).

pub mod analyze;
pub mod calib;
mod distill;
mod finetune;
pub mod edit;
mod importance;
mod linalg;
mod lowrank;
mod obs;
mod prune;
pub mod recipe;
pub mod report;
mod sparsify;
mod taylor;
mod tune;
pub mod units;
mod weights;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

pub use calib::Calibration;
pub use edit::{Edit, apply};
pub use recipe::{PassSpec, Preset, Recipe};
pub use report::CompressReport;
pub use units::Units;

use crate::error::{Error, Result};
use crate::eval::NormalizeOptions;
use crate::ir::{Graph, NodeId};
use report::{OutputError, PassReport, changes, layer_costs, totals};

/// Output of one pass, before it is applied.
#[derive(Clone, Debug, Default)]
pub(crate) struct PassOutcome {
    pub edits: Vec<Edit>,
    /// Ratio, rank or sparsity per layer or unit, for the report.
    pub details: BTreeMap<String, String>,
    /// Linear layers that a later distill pass refits.
    pub refit: Vec<String>,
    /// For pruned layers: the teacher output channel of each kept output.
    pub lineage: HashMap<String, Vec<usize>>,
    /// Layers whose zeros a refit must keep.
    pub sparse: Vec<String>,
    /// Layers replaced by two factors.
    pub factored: Vec<String>,
    /// Outcome of a finetune pass, for the report.
    pub finetune: Option<report::FinetuneOutcome>,
}

/// The result of [`compress`].
pub struct Compressed {
    /// Every edit, in order; [`apply`] replays them onto another binding.
    pub edits: Vec<Edit>,
    pub report: CompressReport,
}

/// A recipe with the data it needs, as `vitc build` and `vitc eval` take it.
#[derive(Clone, Debug)]
pub struct Compression {
    pub recipe: Recipe,
    /// Calibration dataset; overrides the recipe's `calibration.data`.
    pub data: Option<PathBuf>,
    /// Preprocessing of u8 and image calibration samples.
    pub normalize: NormalizeOptions,
}

impl Compression {
    pub fn data_path(&self) -> Option<&std::path::Path> {
        self.data.as_deref().or(self.recipe.calibration.data.as_deref())
    }

    /// Checks that a recipe needing calibration data has some.
    pub fn check(&self) -> Result<()> {
        if self.recipe.needs_calibration() && self.data_path().is_none() {
            let passes: Vec<&str> =
                self.recipe.passes.iter().filter(|p| p.needs_calibration()).map(PassSpec::kind).collect();
            let hint = match self.recipe.passes.iter().find_map(|p| match p {
                PassSpec::Quantize(c) if c.activations == crate::quant::ActivationMode::Dynamic => Some(c),
                _ => None,
            }) {
                Some(c) if c.has_fixed_scale_overrides() => {
                    "; dynamic quantize needs it for the fixed scales of INT8 LayerNorm, Add or GELU results (an ops or layers override)"
                }
                Some(_) => "; dynamic quantize needs it only for smoothing, which smoothing-alpha = 0 turns off",
                None => "",
            };
            return Err(Error::Recipe(format!(
                "pass(es) {} need calibration data: give --calib-data DATA or set calibration.data in the recipe{hint}",
                passes.join(", ")
            )));
        }
        if let Some(path) = self.data_path()
            && !path.exists()
        {
            return Err(Error::Recipe(format!("calibration data {} does not exist", path.display())));
        }
        Ok(())
    }
}

/// Compresses `graph`, the model at `model` bound for this build or
/// evaluation. The passes run on a copy bound to the calibration batch
/// when the model's batch is symbolic and `graph` uses another one; their
/// edits are then replayed onto `graph`.
pub fn compress_for(model: &std::path::Path, graph: &mut Graph, compression: &Compression) -> Result<CompressReport> {
    compression.check()?;
    let Some(data) = compression.data_path() else {
        return Ok(compress(graph, &compression.recipe, None)?.report);
    };
    let input = *graph.inputs().first().ok_or_else(|| Error::Compress("the model has no input".into()))?;
    let shape = graph.fact(input).shape.clone();
    // Fewer samples than one batch would leave no full batch to calibrate
    // on, so a symbolic batch shrinks to the samples that the data has.
    let samples = Calibration::available(data, &shape, compression.recipe.calibration.samples, &compression.normalize)?;
    let requested = compression.recipe.calibration.batch.min(samples).max(1);
    let batch = calibration_batch(model, &shape, requested)?;
    if batch == shape.first().copied().unwrap_or(1) {
        let calibration = Calibration::load(data, &shape, compression.recipe.calibration.samples, &compression.normalize)?;
        return Ok(compress(graph, &compression.recipe, Some(&calibration))?.report);
    }

    let mut bound = shape.clone();
    bound[0] = batch;
    let options = crate::onnx::ImportOptions {
        input_shapes: [(graph.value(input).name.clone(), bound.clone())].into_iter().collect(),
        ..crate::onnx::ImportOptions::default()
    };
    let mut calibration_graph = crate::onnx::import_file(model, &options)?;
    crate::passes::PassManager::canonicalize().run(&mut calibration_graph)?;
    let calibration = Calibration::load(data, &bound, compression.recipe.calibration.samples, &compression.normalize)?;
    // Quantization rewrites the graph rather than its weights, so it runs
    // on `graph` itself after the other passes' edits are replayed.
    let mut recipe = compression.recipe.clone();
    let quantize = match recipe.passes.last() {
        Some(PassSpec::Quantize(config)) => Some(config.clone()),
        _ => None,
    };
    if quantize.is_some() {
        recipe.passes.pop();
    }
    let original = quantize.is_some().then(|| graph.clone());
    let param_offset = totals(&calibration_graph).0.saturating_sub(totals(graph).0);
    let compressed = compress(&mut calibration_graph, &recipe, Some(&calibration))?;
    apply(graph, &compressed.edits, "compression")?;
    let mut report = compressed.report;
    report.rebase(shape.first().copied().unwrap_or(1), batch, param_offset);
    if let (Some(config), Some(original)) = (quantize, original) {
        let start = Instant::now();
        let (params_before, flops_before) = totals(graph);
        let batches = calibration.rebatched(shape[0]);
        let quantization = crate::quant::quantize(graph, &config, &batches)?;
        let rebatched = Calibration { batches, source: calibration.source.clone() };
        let output_error = measure_against(&original, graph, &rebatched)?;
        let (params_after, flops_after) = totals(graph);
        report.recipe = compression.recipe.to_string();
        report.params_after = params_after;
        report.flops_after = flops_after;
        report.passes.push(PassReport {
            pass: "quantize".into(),
            settings: PassSpec::Quantize(config.clone()),
            params_before,
            params_after,
            flops_before,
            flops_after,
            layers: Vec::new(),
            refits: Vec::new(),
            loaded: None,
            quantization: Some(quantization),
            finetune: None,
            output_error,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    Ok(report)
}

/// Returns `rows` (the original model's outputs on the calibration data)
/// if they are all finite. Inputs with huge values can overflow inside the
/// model, and NaN outputs would make every measurement meaningless.
fn check_finite_outputs(rows: calib::Rows, calibration: &Calibration) -> Result<calib::Rows> {
    let Some(position) = rows.data.iter().position(|v| !v.is_finite()) else { return Ok(rows) };
    let per_sample = rows.data.len() / calibration.samples().max(1);
    Err(Error::Compress(format!(
        "the original model's output on calibration sample {} of {} is {}; check the calibration data's scale and \
         normalization (MODEL.preprocess.json beside the model)",
        position / per_sample.max(1),
        calibration.source,
        rows.data[position]
    )))
}

/// Output error of `student` against `teacher` on `calibration`, or `None`
/// when there is no whole batch to run.
fn measure_against(teacher: &Graph, student: &Graph, calibration: &Calibration) -> Result<Option<OutputError>> {
    if calibration.batches.is_empty() {
        return Ok(None);
    }
    let (teacher_rows, _) = calib::run_rows(teacher, calibration, &[], "original model")?;
    let (student_rows, _) = calib::run_rows(student, calibration, &[], "compressed model")?;
    Ok(Some(OutputError::measure(&student_rows, &teacher_rows, calibration.samples(), is_classifier(student))))
}

/// The batch that calibration runs use: the model's own when its file fixes
/// the batch, else the recipe's.
fn calibration_batch(model: &std::path::Path, shape: &[usize], requested: usize) -> Result<usize> {
    let onnx = crate::onnx::OnnxModel::load(model)?;
    let declared = crate::eval::DeclaredInput::of(&onnx).map_err(|e| Error::Compress(e.to_string()))?;
    Ok(declared.fixed_batch().unwrap_or(if shape.is_empty() { 1 } else { requested }))
}

/// Runs every pass of `recipe` on `graph`.
pub fn compress(graph: &mut Graph, recipe: &Recipe, calibration: Option<&Calibration>) -> Result<Compressed> {
    recipe.validate()?;
    if recipe.needs_calibration() && calibration.is_none() {
        return Err(Error::Recipe("this recipe needs calibration data: give --calib-data DATA".into()));
    }
    if let Some(calibration) = calibration {
        calibration.check_against(graph)?;
    }
    check_plan(graph, recipe)?;

    let teacher = graph.clone();
    let classifier = is_classifier(graph);
    let teacher_outputs = match calibration {
        Some(c) => Some(check_finite_outputs(calib::run_rows(&teacher, c, &[], "original model")?.0, c)?),
        None => None,
    };
    let (params_before, flops_before) = totals(graph);
    let encoder = encoder_names(graph);
    let encoder_before = encoder_flops(graph, &encoder);
    let mut state = State::default();
    let mut report = CompressReport {
        recipe: recipe.to_string(),
        calibration: calibration.map(|c| c.source.clone()),
        calibration_samples: calibration.map_or(0, Calibration::samples),
        batch: graph.inputs().first().and_then(|&input| graph.fact(input).shape.first().copied()).unwrap_or(1),
        params_before,
        flops_before,
        encoder_flops_before: encoder_before,
        ..CompressReport::default()
    };

    for (index, pass) in recipe.passes.iter().enumerate() {
        let span = tracing::info_span!("compress", pass = pass.kind());
        let _guard = span.enter();
        let start = Instant::now();
        let costs_before = layer_costs(graph);
        let (p_before, f_before) = totals(graph);
        let stage = format!("pass {} ({})", index + 1, pass.kind());
        let mut pass_report = run_pass(graph, &teacher, pass, calibration, &mut state, &stage)?;
        let (p_after, f_after) = totals(graph);
        pass_report.params_before = p_before;
        pass_report.params_after = p_after;
        pass_report.flops_before = f_before;
        pass_report.flops_after = f_after;
        let details = std::mem::take(&mut state.details);
        pass_report.layers = changes(&costs_before, &layer_costs(graph), &details);
        if let (Some(c), Some(teacher_rows)) = (calibration, &teacher_outputs) {
            let (student_rows, _) = calib::run_rows(graph, c, &[], "compressed model")?;
            pass_report.output_error = Some(OutputError::measure(&student_rows, teacher_rows, c.samples(), classifier));
        }
        pass_report.seconds = start.elapsed().as_secs_f64();
        tracing::info!(flops_before = f_before, flops_after = f_after, seconds = pass_report.seconds, "pass finished");
        report.passes.push(pass_report);
    }

    let (params_after, flops_after) = totals(graph);
    report.params_after = params_after;
    report.flops_after = flops_after;
    report.encoder_flops_after = encoder_flops(graph, &encoder);
    Ok(Compressed { edits: state.edits, report })
}

/// State that passes hand on to later passes.
#[derive(Default)]
struct State {
    edits: Vec<Edit>,
    refit: Vec<String>,
    lineage: HashMap<String, Vec<usize>>,
    sparse: Vec<String>,
    details: BTreeMap<String, String>,
}

impl State {
    fn absorb(&mut self, outcome: PassOutcome) {
        self.edits.extend(outcome.edits);
        for name in outcome.refit {
            if !self.refit.contains(&name) {
                self.refit.push(name);
            }
        }
        // Channels of a layer pruned twice map through the earlier lineage.
        for (name, channels) in outcome.lineage {
            let composed = match self.lineage.get(&name) {
                Some(earlier) => channels.iter().map(|&c| earlier[c]).collect(),
                None => channels,
            };
            self.lineage.insert(name, composed);
        }
        self.sparse.extend(outcome.sparse);
        self.details.extend(outcome.details);
    }
}

fn run_pass(
    graph: &mut Graph,
    teacher: &Graph,
    pass: &PassSpec,
    calibration: Option<&Calibration>,
    state: &mut State,
    stage: &str,
) -> Result<PassReport> {
    let mut report = PassReport {
        pass: pass.kind().to_string(),
        settings: pass.clone(),
        params_before: 0,
        params_after: 0,
        flops_before: 0,
        flops_after: 0,
        layers: Vec::new(),
        refits: Vec::new(),
        loaded: None,
        quantization: None,
        finetune: None,
        output_error: None,
        seconds: 0.0,
    };
    let outcome = match pass {
        PassSpec::LowRank(spec) => {
            let layers = select_layers(graph, spec.scope, &spec.layers);
            lowrank::run(graph, &layers, spec, calibration)?
        }
        PassSpec::Prune(spec) => {
            let units = Units::find(graph);
            prune::check(graph, &units, spec)?;
            prune::run(graph, &units, spec, calibration)?.0
        }
        PassSpec::Sparsify(spec) => {
            let layers = select_layers(graph, spec.scope, &spec.layers);
            sparsify::run(graph, &layers, spec)?
        }
        PassSpec::Distill(spec) => {
            let calibration = calibration.ok_or_else(|| Error::Recipe("distill needs calibration data".into()))?;
            let mut layers = match spec.layers {
                recipe::DistillLayers::Changed => distill::existing(graph, &state.refit),
                recipe::DistillLayers::Encoder => {
                    let units = Units::find(graph);
                    units.encoder_linears().iter().map(|&n| graph.node(n).name.clone()).collect()
                }
            };
            if layers.is_empty() {
                tracing::warn!(
                    "distill: no earlier pass changed a Linear layer, so there is nothing to refit; \
                     set layers = \"encoder\" to refit every Linear of the encoder"
                );
            }
            if spec.head && !layers.is_empty() {
                layers.extend(head_linears(graph));
            }
            report.refits = distill::run(teacher, graph, &layers, &state.lineage, &state.sparse, spec, calibration)?;
            // The refits are already applied; record them as edits for replay.
            state.edits.extend(refit_edits(graph, &layers));
            return Ok(report);
        }
        PassSpec::Finetune(spec) => {
            let calibration = calibration.ok_or_else(|| Error::Recipe("finetune needs calibration data".into()))?;
            finetune::run(graph, teacher, spec, calibration)?
        }
        PassSpec::Quantize(config) => {
            let batches = calibration.map(|c| c.batches.clone()).unwrap_or_default();
            report.quantization = Some(crate::quant::quantize(graph, config, &batches)?);
            return Ok(report);
        }
        PassSpec::LoadWeights(spec) => {
            let (edits, loaded) = weights::run(graph, spec)?;
            report.loaded = Some(loaded);
            let refit = weights::changed_linears(graph, &edits);
            PassOutcome { edits, refit, ..PassOutcome::default() }
        }
    };
    report.finetune = outcome.finetune.clone();
    apply(graph, &outcome.edits, stage)?;
    state.absorb(outcome);
    Ok(report)
}

/// Linear edits that set the weights of `layers` to those in `after`.
fn refit_edits(after: &Graph, layers: &[String]) -> Vec<Edit> {
    let mut edits = Vec::new();
    for id in after.topo_order() {
        let node = after.node(id);
        if !layers.contains(&node.name) || !units::is_constant_linear(after, id) {
            continue;
        }
        edits.push(Edit::Linear {
            node: node.name.clone(),
            weight: importance::linear_weight(after, id).clone().into(),
            bias: importance::linear_bias(after, id).cloned().map(Into::into),
        });
    }
    edits
}

/// Constant Linear layers after the last unit: the classifier head.
fn head_linears(graph: &Graph) -> Vec<String> {
    let units = Units::find(graph);
    let unit_nodes: Vec<NodeId> = units.encoder_linears();
    let order = graph.topo_order();
    let last_unit = order.iter().rposition(|id| unit_nodes.contains(id));
    let Some(last_unit) = last_unit else { return Vec::new() };
    order[last_unit + 1..]
        .iter()
        .filter(|&&id| units::is_constant_linear(graph, id))
        .map(|&id| graph.node(id).name.clone())
        .collect()
}

/// Linear layers in `scope`, narrowed by glob `patterns` on node names.
fn select_layers(graph: &Graph, scope: recipe::Scope, patterns: &[String]) -> Vec<NodeId> {
    let units = Units::find(graph);
    let candidates: Vec<NodeId> = match scope {
        recipe::Scope::Mlp => units.mlp_linears(),
        recipe::Scope::Attention => units.attention_linears(),
        recipe::Scope::Encoder => units.encoder_linears(),
        recipe::Scope::All => graph.topo_order().into_iter().filter(|&n| units::is_constant_linear(graph, n)).collect(),
    };
    let globs: Vec<glob::Pattern> = patterns.iter().filter_map(|p| glob::Pattern::new(p).ok()).collect();
    candidates.into_iter().filter(|&n| globs.is_empty() || globs.iter().any(|g| g.matches(&graph.node(n).name))).collect()
}

/// Model-dependent checks of every pass, before any work is done.
fn check_plan(graph: &Graph, recipe: &Recipe) -> Result<()> {
    let units = Units::find(graph);
    for (index, pass) in recipe.passes.iter().enumerate() {
        let at = |e: Error| Error::Recipe(format!("pass {} ({}): {}", index + 1, pass.kind(), e.to_string().trim_start_matches("recipe: ")));
        match pass {
            PassSpec::LowRank(spec) => lowrank::check(graph, &select_layers(graph, spec.scope, &spec.layers), spec).map_err(at)?,
            PassSpec::Prune(spec) => prune::check(graph, &units, spec).map_err(at)?,
            PassSpec::Sparsify(spec) => {
                if select_layers(graph, spec.scope, &spec.layers).is_empty() {
                    return Err(at(Error::Recipe("no Linear layer matches the scope and layer patterns".into())));
                }
            }
            PassSpec::Distill(_) | PassSpec::Quantize(_) => {}
            PassSpec::Finetune(spec) => finetune::check(graph, spec).map_err(at)?,
            PassSpec::LoadWeights(spec) => {
                if !spec.path.is_file() {
                    return Err(at(Error::Recipe(format!("{} does not exist or is not a file", spec.path.display()))));
                }
                weights::check_file(&spec.path).map_err(at)?;
            }
        }
    }
    Ok(())
}

/// Names of the nodes of every attention and MLP unit.
pub fn encoder_names(graph: &Graph) -> Vec<String> {
    let units = Units::find(graph);
    let mut nodes: Vec<NodeId> = Vec::new();
    for unit in &units.attention {
        nodes.extend([unit.q, unit.k, unit.v, unit.attention, unit.proj]);
    }
    for unit in &units.mlp {
        nodes.extend([unit.fc1, unit.activation, unit.fc2]);
    }
    nodes.iter().map(|&n| graph.node(n).name.clone()).collect()
}

/// FLOPs of the nodes named in `names`, and of the low-rank factors
/// (`NAME/low_rank`) inserted in front of them.
pub fn encoder_flops(graph: &Graph, names: &[String]) -> u64 {
    graph
        .node_ids()
        .filter(|&id| {
            let name = &graph.node(id).name;
            names.iter().any(|n| n == name || name.strip_suffix("/low_rank") == Some(n.as_str()))
        })
        .map(|id| crate::ir::summary::node_flops(graph, id))
        .sum()
}

/// Returns whether the first output is `[batch, classes]` logits.
fn is_classifier(graph: &Graph) -> bool {
    graph.outputs().first().is_some_and(|&v| graph.fact(v).rank() == 2)
}
