//! Sensitivity analysis: prune one unit at a time and measure what the
//! model's output loses on calibration data, then optionally search for
//! per-unit ratios that stay within an agreement budget.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::calib::{Calibration, run_rows};
use super::recipe::{CalibrationSettings, DistillSpec, Importance, PassSpec, PruneSpec, Recipe};
use super::report::OutputError;
use super::{Units, compress, encoder_flops, encoder_names};
use crate::error::{Error, Result};
use crate::ir::Graph;

/// Settings of one analysis.
#[derive(Clone, Debug)]
pub struct AnalyzeOptions {
    /// Fractions of each unit's heads or neurons tried, one at a time.
    pub ratios: Vec<f64>,
    pub importance: Importance,
    /// Refit the pruned unit before measuring.
    pub distill: bool,
    /// Largest loss of top-1 agreement with the original model, in
    /// percentage points, that the searched recipe may cost.
    pub max_drop: Option<f64>,
}

/// The effect of pruning one unit by one ratio.
#[derive(Clone, Debug, Serialize)]
pub struct UnitResult {
    pub unit: String,
    pub ratio: f64,
    /// Fraction of the encoder's FLOPs removed.
    pub flops_saved: f64,
    pub error: OutputError,
}

/// A searched recipe and what it measured.
#[derive(Clone, Debug, Serialize)]
pub struct SearchResult {
    pub max_drop: f64,
    pub ratios: BTreeMap<String, f64>,
    pub flops_saved: f64,
    pub error: OutputError,
    /// The recipe as TOML, ready to save and pass to `--recipe`.
    pub recipe: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sensitivity {
    /// Samples the measurements use.
    pub samples: usize,
    /// Samples the passes fit on (importance, distill): the other
    /// calibration batches, or the same ones when there is only one.
    pub fit_samples: usize,
    /// Whether the measured samples differ from the fitted ones.
    pub held_out: bool,
    pub importance: String,
    pub distill: bool,
    pub units: Vec<UnitResult>,
    pub search: Option<SearchResult>,
}

/// Runs the analysis on a canonical graph bound to the calibration batch.
pub fn analyze(graph: &Graph, calibration: &Calibration, options: &AnalyzeOptions) -> Result<Sensitivity> {
    calibration.check_against(graph)?;
    let held_out = calibration.batches.len() >= 2;
    let (fit, measured) = split(calibration);
    let (fit, calibration) = (&fit, &measured);
    let units = Units::find(graph);
    if units.attention.is_empty() && units.mlp.is_empty() {
        return Err(Error::Compress(
            "the model has no attention or MLP unit that prune can shrink (an Attention node between Q, K, V and output \
             Linear layers, or Linear, activation, Linear), so there is nothing to analyze"
                .into(),
        ));
    }
    let output = graph.outputs().first().map(|&v| graph.fact(v).shape.clone()).unwrap_or_default();
    // NOTE: a rank-2 output of pooled features passes this check too, and
    // the search then treats the features as logits.
    let classifier = output.len() == 2;
    if options.max_drop.is_some() && !classifier {
        return Err(Error::Compress(format!(
            "--max-drop is a budget of top-1 agreement, which needs a classifier output [batch, classes], but the model's \
             output is {}; leave out --max-drop and choose ratios from the output errors in the table",
            crate::tensor::ShapeDisplay(&output)
        )));
    }
    if let Some(budget) = options.max_drop {
        let step = 100.0 / calibration.samples().max(1) as f64;
        if step > budget {
            tracing::warn!(
                "the search measures agreement on {} held-out samples, so one sample is {step:.2} points, coarser than \
                 --max-drop {budget}; give more --samples, and check the written recipe with vitc eval on a test set",
                calibration.samples()
            );
        }
    }
    let names = encoder_names(graph);
    let total = encoder_flops(graph, &names) as f64;
    let (teacher, _) = run_rows(graph, calibration, &[], "original model")?;
    let trial = Trial::new(graph, &units, fit, options)?;

    let mut results = Vec::new();
    let mut first_error = None;
    for unit in units.names() {
        for &ratio in &options.ratios {
            let ratios = BTreeMap::from([(unit.to_string(), ratio)]);
            let Ok(recipe) = prune_recipe(&ratios, &trial) else { continue };
            let mut student = graph.clone();
            // A ratio that would empty a unit is skipped, not an error.
            if let Err(error) = compress(&mut student, &recipe, Some(fit)) {
                tracing::warn!(unit, ratio, %error, "unit skipped");
                first_error.get_or_insert(error);
                continue;
            }
            let (rows, _) = run_rows(&student, calibration, &[], unit)?;
            let saved = 1.0 - encoder_flops(&student, &names) as f64 / total;
            let error = OutputError::measure(&rows, &teacher, calibration.samples(), classifier);
            tracing::info!(unit, ratio, saved, "unit measured");
            results.push(UnitResult { unit: unit.to_string(), ratio, flops_saved: saved, error });
        }
    }

    if let (true, Some(error)) = (results.is_empty(), first_error) {
        return Err(error);
    }
    let search = match options.max_drop {
        Some(budget) => Some(search(graph, (fit, calibration), &trial, &results, budget, &teacher, &names, total)?),
        _ => None,
    };
    Ok(Sensitivity {
        samples: calibration.samples(),
        fit_samples: fit.samples(),
        held_out,
        importance: format!("{:?}", options.importance).to_lowercase(),
        distill: options.distill,
        units: results,
        search,
    })
}

/// Splits the calibration batches into the first half, which the passes
/// fit on, and the rest, which the measurements use, so that a refit is
/// not judged on the samples it was fitted to. One batch serves both.
fn split(calibration: &Calibration) -> (Calibration, Calibration) {
    let half = calibration.batches.len().div_ceil(2);
    let source = calibration.source.clone();
    if calibration.batches.len() < 2 {
        return (calibration.clone(), calibration.clone());
    }
    let fit = Calibration { batches: calibration.batches[..half].to_vec(), source: source.clone() };
    let measured = Calibration { batches: calibration.batches[half..].to_vec(), source };
    (fit, measured)
}

/// The prune pass that every trial starts from, and whether a distill
/// pass follows it.
struct Trial {
    spec: PruneSpec,
    distill: bool,
    /// The samples the passes fit on, which a saved recipe names.
    calibration: CalibrationSettings,
}

impl Trial {
    /// Computes Taylor scores once here: every trial prunes the same
    /// graph, and the scores cost a backward sweep through all of it.
    fn new(graph: &Graph, units: &Units, fit: &Calibration, options: &AnalyzeOptions) -> Result<Trial> {
        let mut spec: PruneSpec = toml::from_str("").expect("an empty prune table is valid");
        spec.importance = options.importance;
        if options.importance == Importance::Taylor {
            let scores = super::importance::compute(graph, units, Importance::Taylor, Some(fit), spec.max_unit_ratio)?;
            spec.taylor_scores = Some(std::sync::Arc::new(scores));
        }
        let batch = fit.batches.first().and_then(|b| b.shape().first().copied()).unwrap_or(1);
        let calibration = CalibrationSettings { data: None, samples: fit.samples(), batch };
        Ok(Trial { spec, distill: options.distill, calibration })
    }
}

fn prune_recipe(ratios: &BTreeMap<String, f64>, trial: &Trial) -> Result<Recipe> {
    let mut spec = trial.spec.clone();
    spec.layers = ratios.clone();
    let mut passes = vec![PassSpec::Prune(spec)];
    if trial.distill {
        passes.push(PassSpec::Distill(toml::from_str::<DistillSpec>("").expect("an empty distill table is valid")));
    }
    let recipe = Recipe { passes, calibration: trial.calibration.clone() };
    recipe.validate()?;
    Ok(recipe)
}

fn agreement_drop(error: &OutputError) -> f64 {
    (1.0 - error.top1_agreement.unwrap_or(1.0)) * 100.0
}

/// Greedy search in two phases. First, choices are added in order of
/// agreement lost per FLOP saved while the sum of the measured single-unit
/// losses stays within the budget; the combination is then measured, and
/// while it loses more than the budget the last choice is undone. Second,
/// since losses seldom add up, the remaining choices (a new unit, or a
/// larger ratio for a chosen one) are tried one at a time in the same
/// order and kept when the measured combination still fits, with at most
/// one measurement per unit.
#[allow(clippy::too_many_arguments)]
fn search(
    graph: &Graph,
    (fit, calibration): (&Calibration, &Calibration),
    trial: &Trial,
    results: &[UnitResult],
    budget: f64,
    teacher: &super::calib::Rows,
    names: &[String],
    total: f64,
) -> Result<SearchResult> {
    let measure = |ratios: &BTreeMap<String, f64>| -> Result<SearchResult> {
        let recipe = prune_recipe(ratios, trial)?;
        let mut student = graph.clone();
        if !ratios.is_empty() {
            compress(&mut student, &recipe, Some(fit))?;
        }
        let (rows, _) = run_rows(&student, calibration, &[], "searched recipe")?;
        let error = OutputError::measure(&rows, teacher, calibration.samples(), true);
        let flops_saved = 1.0 - encoder_flops(&student, names) as f64 / total;
        let text = toml::to_string(&recipe).unwrap_or_default();
        Ok(SearchResult { max_drop: budget, ratios: ratios.clone(), flops_saved, error, recipe: text })
    };

    let mut candidates: Vec<&UnitResult> = results.iter().filter(|r| r.flops_saved > 0.0).collect();
    candidates.sort_by(|a, b| {
        let cost = |r: &UnitResult| agreement_drop(&r.error).max(0.0) / r.flops_saved;
        cost(a).total_cmp(&cost(b)).then(b.flops_saved.total_cmp(&a.flops_saved))
    });
    let mut chosen: Vec<&UnitResult> = Vec::new();
    let mut spent = 0.0;
    for &candidate in &candidates {
        let drop = agreement_drop(&candidate.error).max(0.0);
        if chosen.iter().any(|c| c.unit == candidate.unit) || spent + drop > budget {
            continue;
        }
        spent += drop;
        chosen.push(candidate);
    }
    let mut best = loop {
        let ratios: BTreeMap<String, f64> = chosen.iter().map(|c| (c.unit.clone(), c.ratio)).collect();
        let result = measure(&ratios)?;
        if agreement_drop(&result.error) <= budget || chosen.is_empty() {
            break result;
        }
        chosen.pop();
    };

    let units = results.iter().map(|r| r.unit.as_str()).collect::<std::collections::BTreeSet<_>>().len();
    let mut tries = 0;
    for candidate in candidates {
        if tries == units {
            break;
        }
        if best.ratios.get(&candidate.unit).is_some_and(|&r| r >= candidate.ratio) {
            continue;
        }
        let mut ratios = best.ratios.clone();
        ratios.insert(candidate.unit.clone(), candidate.ratio);
        tries += 1;
        let result = measure(&ratios)?;
        tracing::info!(unit = %candidate.unit, ratio = candidate.ratio, saved = result.flops_saved, "search step measured");
        if agreement_drop(&result.error) <= budget && result.flops_saved > best.flops_saved {
            best = result;
        }
    }
    Ok(best)
}

impl fmt::Display for Sensitivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let refit = if self.distill { ", each refit by distill" } else { "" };
        let samples = |n: usize| if n == 1 { "1 sample".to_string() } else { format!("{n} samples") };
        if !self.held_out {
            writeln!(
                f,
                "sensitivity on {} of calibration data ({} importance{refit}), fitted and measured on the same samples; \
                 give two batches or more to measure on held-out ones",
                samples(self.samples),
                self.importance
            )?;
        } else {
            writeln!(
                f,
                "sensitivity on {} of held-out calibration data, passes fitted on {} ({} importance{refit})",
                samples(self.samples),
                samples(self.fit_samples),
                self.importance
            )?;
        }
        writeln!(f, "{:<28} {:>6} {:>12} {:>10} {:>10} {:>10}", "unit", "ratio", "FLOPs saved", "agreement", "rel.error", "cosine")?;
        for r in &self.units {
            let agreement = r.error.top1_agreement.map_or("-".to_string(), |a| format!("{:.2}%", a * 100.0));
            writeln!(
                f,
                "{:<28} {:>6.2} {:>11.1}% {:>10} {:>10.4} {:>10.5}",
                r.unit,
                r.ratio,
                r.flops_saved * 100.0,
                agreement,
                r.error.relative_error,
                r.error.cosine_mean
            )?;
        }
        if let Some(search) = &self.search {
            writeln!(f)?;
            writeln!(
                f,
                "search within {:.2} points of agreement: {:.1}% of encoder FLOPs saved, agreement {:.2}%",
                search.max_drop,
                search.flops_saved * 100.0,
                search.error.top1_agreement.unwrap_or(1.0) * 100.0
            )?;
            writeln!(f, "recipe:\n{}", search.recipe)?;
        }
        Ok(())
    }
}
