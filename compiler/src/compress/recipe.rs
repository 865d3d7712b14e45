//! Compression recipes: which passes run, in what order, with what settings.
//!
//! A recipe is a TOML file with an optional `[calibration]` table and an
//! ordered list of `[[pass]]` tables, each naming its `kind`:
//!
//! ```toml
//! [calibration]
//! samples = 1024
//!
//! [[pass]]
//! kind = "low-rank"
//! scope = "mlp"
//! param-cut = 0.3
//!
//! [[pass]]
//! kind = "prune"
//! flops = 0.4
//!
//! [[pass]]
//! kind = "distill"
//! ```
//!
//! Unknown keys and pass kinds are errors, so a misspelled setting never
//! silently falls back to a default. [`Recipe::validate`] checks every value
//! that can be checked without the model; [`super::plan`] checks the rest
//! against the model before any pass runs.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A parsed recipe.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Recipe {
    #[serde(default)]
    pub calibration: CalibrationSettings,
    /// The passes, in the order they run.
    #[serde(default, rename = "pass")]
    pub passes: Vec<PassSpec>,
}

/// How much calibration data the passes see.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CalibrationSettings {
    /// Dataset path; `--calib-data` on the command line overrides it.
    pub data: Option<PathBuf>,
    /// Samples taken from the start of the dataset.
    pub samples: usize,
    /// Samples per interpreter run.
    pub batch: usize,
}

impl Default for CalibrationSettings {
    fn default() -> CalibrationSettings {
        CalibrationSettings { data: None, samples: 512, batch: 32 }
    }
}

/// One pass of a recipe.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PassSpec {
    LowRank(LowRankSpec),
    Prune(PruneSpec),
    Sparsify(SparsifySpec),
    Distill(DistillSpec),
    Finetune(FinetuneSpec),
    LoadWeights(LoadWeightsSpec),
    /// INT8 quantization; it must be the last pass.
    Quantize(crate::quant::QuantConfig),
}

impl PassSpec {
    /// Returns the pass kind as a recipe spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            PassSpec::LowRank(_) => "low-rank",
            PassSpec::Prune(_) => "prune",
            PassSpec::Sparsify(_) => "sparsify",
            PassSpec::Distill(_) => "distill",
            PassSpec::Finetune(_) => "finetune",
            PassSpec::LoadWeights(_) => "load-weights",
            PassSpec::Quantize(_) => "quantize",
        }
    }

    /// Returns whether the pass reads calibration data.
    pub fn needs_calibration(&self) -> bool {
        match self {
            PassSpec::LowRank(spec) => spec.method == LowRankMethod::Activation,
            PassSpec::Prune(spec) => spec.importance != Importance::L1 && spec.importance != Importance::L2,
            PassSpec::Sparsify(_) | PassSpec::LoadWeights(_) => false,
            PassSpec::Distill(_) | PassSpec::Finetune(_) => true,
            PassSpec::Quantize(config) => {
                config.activations == crate::quant::ActivationMode::Static
                    || config.smoothing_alpha.is_some_and(|a| a > 0.0)
                    || config.has_fixed_scale_overrides()
            }
        }
    }
}

/// Set of Linear layers that a pass considers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// The two Linear layers of every MLP (fc1 and fc2).
    #[default]
    Mlp,
    /// The query, key, value and output projections of every attention.
    Attention,
    /// Both of the above: every Linear of the transformer blocks.
    Encoder,
    /// Every Linear of the model, the classifier head included.
    All,
}

/// Low-rank rewriting of Linear layers by a truncated factorization.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LowRankSpec {
    #[serde(default)]
    pub scope: Scope,
    /// Glob patterns on Linear node names that narrow the scope.
    #[serde(default)]
    pub layers: Vec<String>,
    /// A fixed rank for every selected layer.
    pub rank: Option<usize>,
    /// Keep the smallest rank whose singular values (or output variance,
    /// for the activation method) hold this fraction of the energy.
    pub energy: Option<f64>,
    /// Remove this fraction of each selected layer's weight parameters.
    pub param_cut: Option<f64>,
    #[serde(default)]
    pub method: LowRankMethod,
}

/// Method that chooses the factors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LowRankMethod {
    /// Truncated SVD of the weight matrix.
    Weight,
    /// Project the layer's outputs on calibration data onto their top
    /// principal directions (the rank-r least-squares optimum for the
    /// outputs, rather than for the weights).
    #[default]
    Activation,
}

/// Structured pruning of attention heads and MLP neurons.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PruneSpec {
    /// Fraction of heads removed from every attention.
    pub heads: Option<f64>,
    /// Fraction of hidden neurons removed from every MLP.
    pub neurons: Option<f64>,
    /// Global target: remove this fraction of the encoder's FLOPs,
    /// taking the least important heads and neurons across all layers.
    pub flops: Option<f64>,
    /// Global target: remove this fraction of the encoder's parameters.
    pub params: Option<f64>,
    /// Per-unit ratios (unit name or glob to fraction) that override
    /// `heads` and `neurons`, e.g. `{ "/blocks.0/mlp" = 0.25 }`.
    #[serde(default)]
    pub layers: std::collections::BTreeMap<String, f64>,
    #[serde(default)]
    pub importance: Importance,
    /// Kept neuron counts are rounded up to a multiple of this, which
    /// suits the register tiles of the generated GEMM.
    #[serde(default = "default_neuron_multiple")]
    pub neuron_multiple: usize,
    /// With a global target, the largest fraction of any one unit removed.
    #[serde(default = "default_max_unit_ratio")]
    pub max_unit_ratio: f64,
    /// Taylor scores already computed for this graph and calibration data,
    /// by `vitc analyze`, which prunes the same graph once per unit and
    /// ratio. Never read from or written to a recipe file.
    #[serde(skip)]
    pub(crate) taylor_scores: Option<std::sync::Arc<super::importance::Scores>>,
}

fn default_neuron_multiple() -> usize {
    4
}

fn default_max_unit_ratio() -> f64 {
    0.9
}

/// Criterion that ranks heads and neurons.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Importance {
    /// Sum of absolute weights that belong to the head or neuron.
    L1,
    /// Euclidean norm of those weights.
    L2,
    /// Mean squared contribution to the layer's output on calibration data.
    Activation,
    /// Increase of the unit's output error on calibration data when the
    /// head or neuron is removed and the rest are refit by least squares
    /// (the Optimal Brain Surgeon criterion, applied greedily).
    #[default]
    Reconstruction,
    /// First-order Taylor estimate of the squared error that removing the
    /// head or neuron adds to the model's output, from gradients on
    /// calibration data.
    Taylor,
}

/// Unstructured magnitude pruning.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SparsifySpec {
    /// Fraction of weights set to zero.
    pub sparsity: f64,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default)]
    pub layers: Vec<String>,
    /// `layer` prunes every layer to `sparsity`; `global` ranks the
    /// weights of all selected layers together.
    #[serde(default)]
    pub granularity: SparsityGranularity,
    /// Zero whole blocks of `block` consecutive inputs (columns of the
    /// `[out, in]` weight). 1 prunes single weights.
    #[serde(default = "default_block")]
    pub block: usize,
    /// Rows (outputs) per block. `block-rows = 8` with `block = 4` matches
    /// the tiles that the block-sparse GEMM skips.
    #[serde(default = "default_block")]
    pub block_rows: usize,
}

fn default_block() -> usize {
    1
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SparsityGranularity {
    #[default]
    Layer,
    Global,
}

/// Layer-wise distillation: refit compressed layers by least squares so
/// their outputs match the teacher's on calibration data.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DistillSpec {
    /// Ridge regularization relative to the mean diagonal of `X^T X`.
    #[serde(default = "default_ridge")]
    pub ridge: f64,
    /// Weights that the ridge pulls the refit towards.
    #[serde(default)]
    pub ridge_toward: RidgeToward,
    /// Set of layers that are refit.
    #[serde(default)]
    pub layers: DistillLayers,
    /// Target that each refit output layer matches.
    #[serde(default)]
    pub target: DistillTarget,
    /// Also refit the Linear layers after the last transformer block (the
    /// classifier head) to the teacher's outputs.
    #[serde(default = "default_true")]
    pub head: bool,
}

fn default_true() -> bool {
    true
}

fn default_ridge() -> f64 {
    1e-3
}

/// The weights that the distill pass's ridge term pulls a refit towards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RidgeToward {
    /// The layer's weights before the refit (after pruning or factoring).
    /// Directions that the calibration inputs do not excite keep the
    /// trained weights, so a refit on a narrow calibration set carries over
    /// to other inputs.
    #[default]
    Weights,
    /// Zero: classic ridge regression, which shrinks those directions.
    Zero,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DistillLayers {
    /// Layers that an earlier pass changed, and every Linear of a unit
    /// that lost heads or neurons.
    #[default]
    Changed,
    /// Every Linear of the encoder.
    Encoder,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DistillTarget {
    /// A layer whose output is added to the residual stream matches the
    /// teacher's residual stream after the addition, so each refit also
    /// corrects the error that earlier layers left in the stream.
    Residual,
    /// Every layer matches the teacher's output of the same layer.
    #[default]
    Output,
}

/// Logit-level distillation: gradient descent on the KL divergence between
/// the teacher's and the student's softened outputs, or on the squared
/// error between the outputs of a model that is not a classifier.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FinetuneSpec {
    /// Softmax temperature of both outputs.
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Full-batch Adam steps.
    #[serde(default = "default_steps")]
    pub steps: usize,
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// The parameters that change.
    #[serde(default, deserialize_with = "one_params_set")]
    pub params: FinetuneParams,
    /// The loss that the descent minimizes.
    #[serde(default, deserialize_with = "loss_name")]
    pub loss: FinetuneLoss,
    /// Fraction of the calibration samples held out to pick the best step.
    #[serde(default = "default_holdout")]
    pub holdout: f64,
}

/// Reads `loss` as a string first, so that a value of another type gets
/// serde's plain "expected a string" instead of an enum's message.
fn loss_name<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<FinetuneLoss, D::Error> {
    let name = String::deserialize(deserializer)?;
    FinetuneLoss::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&name))
}

/// Reads `params` as one name, and rejects a list with a message that names the accepted values.
fn one_params_set<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<FinetuneParams, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a name: head, head-bias, biases, norms or all")]
    enum Form {
        One(String),
        Many(Vec<String>),
    }
    match Form::deserialize(deserializer)? {
        Form::One(name) => FinetuneParams::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&name)),
        Form::Many(names) => Err(serde::de::Error::custom(format!(
            "params takes one name (head, head-bias, biases, norms or all), not the list {names:?}; \"all\" trains \
             the biases, the norms and the head's weight together"
        ))),
    }
}

pub(super) fn default_temperature() -> f64 {
    2.0
}

fn default_steps() -> usize {
    300
}

fn default_learning_rate() -> f64 {
    1e-2
}

fn default_holdout() -> f64 {
    0.2
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinetuneParams {
    /// Weight and bias of the classifier head. A LayerNorm right before the
    /// head adds no freedom: its scale and shift fold into the head.
    #[default]
    Head,
    /// The head's bias only.
    HeadBias,
    /// Every Linear layer's bias, the head's included.
    Biases,
    /// Every LayerNorm's scale and shift.
    Norms,
    /// The head's weight, every Linear bias and every LayerNorm's scale
    /// and shift.
    All,
}

/// The loss of the finetune pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinetuneLoss {
    /// `T^2 KL(softmax(teacher / T) || softmax(student / T))` on a
    /// classifier's `[batch, classes]` logits.
    #[default]
    Kl,
    /// Mean squared error between the teacher's and the student's outputs,
    /// of any shape: maps, features or logits.
    Mse,
}

impl FinetuneParams {
    /// Returns whether only the head changes, so that its input features stay fixed.
    pub fn head_only(self) -> bool {
        matches!(self, FinetuneParams::Head | FinetuneParams::HeadBias)
    }
}

/// Replace weights by those of a model distilled elsewhere.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LoadWeightsSpec {
    /// A `.safetensors` file or an `.onnx` model.
    pub path: PathBuf,
    /// Accept a file whose tensors do not all match a weight of the model;
    /// unmatched names are still reported.
    #[serde(default)]
    pub allow_unmatched: bool,
}

/// The documented presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    Lossless,
    Balanced,
    Fast,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Lossless, Preset::Balanced, Preset::Fast];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Lossless => "lossless",
            Preset::Balanced => "balanced",
            Preset::Fast => "fast",
        }
    }

    /// Returns the preset as recipe text.
    pub fn toml(self) -> &'static str {
        match self {
            Preset::Lossless => include_str!("presets/lossless.toml"),
            Preset::Balanced => include_str!("presets/balanced.toml"),
            Preset::Fast => include_str!("presets/fast.toml"),
        }
    }

    pub fn recipe(self) -> Recipe {
        Recipe::from_toml_str(self.toml()).expect("presets are valid recipes")
    }
}

impl std::str::FromStr for Preset {
    type Err = Error;

    fn from_str(text: &str) -> Result<Preset> {
        Preset::ALL.into_iter().find(|p| p.name() == text).ok_or_else(|| {
            recipe_error(format!("unknown preset '{text}'; the presets are lossless, balanced and fast"))
        })
    }
}

fn recipe_error(message: String) -> Error {
    Error::Recipe(message)
}

impl Recipe {
    /// Parses and validates recipe text.
    pub fn from_toml_str(text: &str) -> Result<Recipe> {
        let recipe: Recipe = toml::from_str(text).map_err(|e| recipe_error(pass_error(text).unwrap_or_else(|| e.to_string().trim_end().to_string())))?;
        recipe.validate()?;
        Ok(recipe)
    }

    /// Reads, parses and validates a recipe file. Relative paths (the
    /// calibration data, load-weights files and a quantize cache-dir) are
    /// taken relative to the recipe's folder.
    pub fn from_file(path: &Path) -> Result<Recipe> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::Io { path: path.to_path_buf(), error })?;
        let mut recipe = Recipe::from_toml_str(&text)
            .map_err(|e| recipe_error(format!("{}: {}", path.display(), e.to_string().trim_start_matches("recipe: "))))?;
        if let (Some(data), Some(dir)) = (&recipe.calibration.data, path.parent())
            && data.is_relative()
        {
            recipe.calibration.data = Some(dir.join(data));
        }
        let Some(dir) = path.parent() else { return Ok(recipe) };
        for pass in &mut recipe.passes {
            match pass {
                PassSpec::LoadWeights(spec) if spec.path.is_relative() => spec.path = dir.join(&spec.path),
                PassSpec::Quantize(config) => {
                    if let Some(cache) = config.cache_dir.as_mut().filter(|c| c.is_relative() && !c.as_os_str().is_empty()) {
                        *cache = dir.join(&*cache);
                    }
                }
                _ => {}
            }
        }
        Ok(recipe)
    }

    /// Returns whether any pass reads calibration data.
    pub fn needs_calibration(&self) -> bool {
        self.passes.iter().any(PassSpec::needs_calibration)
    }

    /// Checks every setting that does not depend on the model.
    pub fn validate(&self) -> Result<()> {
        if self.calibration.samples == 0 {
            return Err(recipe_error("calibration.samples must be at least 1".into()));
        }
        if self.calibration.batch == 0 {
            return Err(recipe_error("calibration.batch must be at least 1".into()));
        }
        for (index, pass) in self.passes.iter().enumerate() {
            let at = |message: String| recipe_error(format!("pass {} ({}): {message}", index + 1, pass.kind()));
            validate_pass(pass).map_err(at)?;
            if matches!(pass, PassSpec::Quantize(_)) && index + 1 != self.passes.len() {
                return Err(at("quantize must be the last pass, after every pass that changes f32 weights".into()));
            }
        }
        Ok(())
    }
}

fn validate_pass(pass: &PassSpec) -> std::result::Result<(), String> {
    match pass {
        PassSpec::LowRank(spec) => {
            let given = [spec.rank.is_some(), spec.energy.is_some(), spec.param_cut.is_some()];
            if given.iter().filter(|g| **g).count() != 1 {
                return Err("set exactly one of rank, energy and param-cut".into());
            }
            if spec.rank == Some(0) {
                return Err("rank must be at least 1".into());
            }
            if let Some(energy) = spec.energy
                && !(energy > 0.0 && energy <= 1.0)
            {
                return Err(format!("energy must be in (0, 1], not {energy}"));
            }
            check_fraction("param-cut", spec.param_cut)?;
            check_globs(&spec.layers)
        }
        PassSpec::Prune(spec) => {
            let uniform = spec.heads.is_some() || spec.neurons.is_some() || !spec.layers.is_empty();
            let global = spec.flops.is_some() || spec.params.is_some();
            if !uniform && !global {
                return Err("set heads and/or neurons (per-unit ratios), or one global target: flops or params".into());
            }
            if uniform && global {
                return Err("per-unit ratios (heads, neurons, layers) and a global target (flops, params) exclude each other".into());
            }
            if spec.flops.is_some() && spec.params.is_some() {
                return Err("set only one global target: flops or params".into());
            }
            check_fraction("heads", spec.heads)?;
            check_fraction("neurons", spec.neurons)?;
            check_fraction("flops", spec.flops)?;
            check_fraction("params", spec.params)?;
            for (pattern, ratio) in &spec.layers {
                check_fraction(&format!("layers.\"{pattern}\""), Some(*ratio))?;
            }
            check_globs(&spec.layers.keys().cloned().collect::<Vec<_>>())?;
            if spec.neuron_multiple == 0 {
                return Err("neuron-multiple must be at least 1".into());
            }
            if !(spec.max_unit_ratio > 0.0 && spec.max_unit_ratio < 1.0) {
                return Err(format!("max-unit-ratio must be in (0, 1), not {}", spec.max_unit_ratio));
            }
            Ok(())
        }
        PassSpec::Sparsify(spec) => {
            check_fraction("sparsity", Some(spec.sparsity))?;
            if spec.block == 0 || spec.block_rows == 0 {
                return Err(format!("block and block-rows must be at least 1, not {} and {}", spec.block, spec.block_rows));
            }
            check_globs(&spec.layers)
        }
        PassSpec::Finetune(spec) => {
            if !(0.01..=100.0).contains(&spec.temperature) {
                return Err(format!("temperature must be in [0.01, 100], not {}", spec.temperature));
            }
            if spec.steps == 0 || spec.steps > 100_000 {
                return Err(format!("steps must be in 1..=100000, not {}", spec.steps));
            }
            if !(spec.learning_rate > 0.0 && spec.learning_rate.is_finite()) {
                return Err(format!("learning-rate must be a positive number, not {}", spec.learning_rate));
            }
            if !(0.0..0.9).contains(&spec.holdout) {
                return Err(format!("holdout must be in [0, 0.9), not {}", spec.holdout));
            }
            if spec.loss == FinetuneLoss::Mse && spec.params.head_only() {
                return Err(format!(
                    "loss = \"mse\" trains params = \"biases\", \"norms\" or \"all\", not \"{}\" (params defaults to \
                     \"head\"): the head modes minimize KL; set params = \"all\" to train every bias and LayerNorm",
                    crate::quant::recipe_spelling(&spec.params)
                ));
            }
            Ok(())
        }
        PassSpec::Distill(spec) => {
            if !(spec.ridge.is_finite() && spec.ridge >= 0.0) {
                return Err(format!("ridge must be a finite number >= 0, not {}", spec.ridge));
            }
            Ok(())
        }
        PassSpec::Quantize(config) => config.validate().map_err(|e| e.to_string()),
        PassSpec::LoadWeights(spec) => {
            if spec.path.as_os_str().is_empty() {
                return Err("path must name a .safetensors or .onnx file".into());
            }
            Ok(())
        }
    }
}

/// Checks that an optional fraction lies in `[0, 1)`.
fn check_fraction(field: &str, value: Option<f64>) -> std::result::Result<(), String> {
    match value {
        Some(v) if !(0.0..1.0).contains(&v) => Err(format!("{field} must be in [0, 1), not {v}")),
        _ => Ok(()),
    }
}

fn check_globs(patterns: &[String]) -> std::result::Result<(), String> {
    for pattern in patterns {
        glob::Pattern::new(pattern).map_err(|e| format!("layer pattern '{pattern}' is not a valid glob: {e}"))?;
    }
    Ok(())
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.passes.iter().map(PassSpec::kind).collect();
        write!(f, "{}", names.join(" -> "))
    }
}
/// Finds the pass that a recipe which failed to parse gets wrong, and
/// names its position, kind and key: serde reports errors inside the
/// internally tagged pass list without them. Returns `None` when every
/// pass parses on its own (the error is elsewhere) or the text is not TOML.
fn pass_error(text: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let passes = table.get("pass")?.as_array()?;
    for (index, pass) in passes.iter().enumerate() {
        let position = index + 1;
        let Some(fields) = pass.as_table() else {
            return Some(format!("pass {position} is not a table; write it as [[pass]] with a kind = \"...\" line"));
        };
        let Some(kind) = fields.get("kind").and_then(toml::Value::as_str) else {
            return Some(format!("pass {position} has no kind = \"...\" (one of {})", PASS_KINDS.join(", ")));
        };
        let mut settings = fields.clone();
        settings.remove("kind");
        let result = match kind {
            "low-rank" => check_spec::<LowRankSpec>(settings),
            "prune" => check_spec::<PruneSpec>(settings),
            "sparsify" => check_spec::<SparsifySpec>(settings),
            "distill" => check_spec::<DistillSpec>(settings),
            "finetune" => check_spec::<FinetuneSpec>(settings),
            "load-weights" => check_spec::<LoadWeightsSpec>(settings),
            "quantize" => check_spec::<crate::quant::QuantConfig>(settings),
            other => return Some(format!("pass {position}: unknown kind \"{other}\"; expected one of {}", PASS_KINDS.join(", "))),
        };
        if let Err((key, message)) = result {
            return Some(match key {
                Some(key) => format!("pass {position} ({kind}), key `{key}`: {message}"),
                None => format!("pass {position} ({kind}): {message}"),
            });
        }
    }
    None
}

/// Pass kinds as a recipe spells them.
const PASS_KINDS: [&str; 7] = ["low-rank", "prune", "sparsify", "distill", "finetune", "load-weights", "quantize"];

/// Deserializes one pass's settings as `T`, returning the failing key
/// (when serde tracked one) and the message.
fn check_spec<T: serde::de::DeserializeOwned>(settings: toml::Table) -> std::result::Result<(), (Option<String>, String)> {
    match serde_path_to_error::deserialize::<_, T>(settings) {
        Ok(_) => Ok(()),
        Err(error) => {
            let path = error.path().to_string();
            let key = (path != "." && !path.is_empty()).then_some(path);
            // Drop the "in `key`" lines that toml appends, because the prefix names the key.
            let message = error.into_inner().to_string();
            let lines: Vec<&str> = message.lines().filter(|line| !line.starts_with("in `")).collect();
            Err((key, lines.join("\n").trim_end().to_string()))
        }
    }
}

