//! Compression options shared by `vitc build`, `vitc eval` and `vitc analyze`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use vitc::compress::recipe::{DistillSpec, Importance, LoadWeightsSpec, LowRankSpec, PruneSpec, Scope, SparsifySpec};
use vitc::compress::{Compression, PassSpec, Preset, Recipe};
use vitc::eval::NormalizeOptions;
use vitc::quant::{ActivationMode, CalibrationMethod, QuantConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    Lossless,
    Balanced,
    Fast,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ImportanceArg {
    L1,
    L2,
    Activation,
    Reconstruction,
    Taylor,
}

impl From<ImportanceArg> for Importance {
    fn from(arg: ImportanceArg) -> Importance {
        match arg {
            ImportanceArg::L1 => Importance::L1,
            ImportanceArg::L2 => Importance::L2,
            ImportanceArg::Activation => Importance::Activation,
            ImportanceArg::Reconstruction => Importance::Reconstruction,
            ImportanceArg::Taylor => Importance::Taylor,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    Mlp,
    Attention,
    Encoder,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Int8Arg {
    /// Activation scales from calibration data.
    Static,
    /// Activation scales computed per token on every call.
    Dynamic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Int8CalibrationArg {
    MinMax,
    Percentile,
    Entropy,
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("prune_pass").multiple(true))]
pub struct CompressArgs {
    /// A TOML compression recipe (see the README for its passes and keys).
    #[arg(long, value_name = "FILE", help_heading = "Compression")]
    pub recipe: Option<PathBuf>,

    /// A built-in recipe: lossless, balanced or fast.
    #[arg(long, value_enum, help_heading = "Compression")]
    pub preset: Option<PresetArg>,

    /// Calibration samples (.npy, .npz or image folder, like --data of
    /// vitc eval). Needed by pruning with activation, reconstruction (the
    /// default) or taylor importance, low-rank's activation method (the
    /// default), distill, finetune and static INT8.
    #[arg(long, value_name = "DATA", help_heading = "Compression")]
    pub calib_data: Option<PathBuf>,

    /// Calibration samples taken from the start of --calib-data
    /// (default: the recipe's, else 512).
    #[arg(long, value_name = "N", help_heading = "Compression")]
    pub calib_samples: Option<usize>,

    /// Factor Linear layers so they keep 1 - F of their parameters
    /// (a low-rank pass with param-cut = F).
    #[arg(long, value_name = "F", help_heading = "Compression", allow_negative_numbers = true)]
    pub low_rank_cut: Option<f64>,

    /// Layers the low-rank pass factors.
    #[arg(long, value_enum, default_value_t = ScopeArg::Mlp, requires = "low_rank_cut", help_heading = "Compression")]
    pub low_rank_scope: ScopeArg,

    /// Remove this fraction of the encoder's FLOPs as whole heads and MLP
    /// neurons (a prune pass with flops = F).
    #[arg(long, value_name = "F", help_heading = "Compression", allow_negative_numbers = true, group = "prune_pass")]
    pub prune_flops: Option<f64>,

    /// Remove this fraction of every attention's heads.
    #[arg(long, value_name = "F", help_heading = "Compression", allow_negative_numbers = true, group = "prune_pass")]
    pub prune_heads: Option<f64>,

    /// Remove this fraction of every MLP's hidden neurons.
    #[arg(long, value_name = "F", help_heading = "Compression", allow_negative_numbers = true, group = "prune_pass")]
    pub prune_neurons: Option<f64>,

    /// Criterion by which the prune pass ranks heads and neurons.
    #[arg(long, value_enum, default_value_t = ImportanceArg::Reconstruction, requires = "prune_pass", help_heading = "Compression")]
    pub importance: ImportanceArg,

    /// Zero this fraction of the MLP weights by magnitude (a sparsify pass).
    #[arg(long, value_name = "F", help_heading = "Compression", allow_negative_numbers = true)]
    pub sparsity: Option<f64>,

    /// Weights zeroed together by --sparsity: N consecutive inputs of one
    /// output, or ROWSxN (outputs x inputs). 8x4 matches the tiles that the
    /// block-sparse GEMM skips.
    #[arg(long, value_name = "N|ROWSxN", default_value = "1", value_parser = parse_block, requires = "sparsity", help_heading = "Compression")]
    pub sparsity_block: (usize, usize),

    /// Refit the compressed layers to the original model's outputs on the
    /// calibration data (a distill pass, after the pruning and low-rank
    /// passes and before --int8).
    #[arg(long, help_heading = "Compression")]
    pub distill: bool,

    /// Replace weights by those in a .safetensors or .onnx file, matched
    /// by name (a load-weights pass, run first).
    #[arg(long, value_name = "FILE", help_heading = "Compression")]
    pub load_weights: Option<PathBuf>,

    /// Quantize the Linear layers to INT8 (a quantize pass, run last):
    /// per-channel weights, with static or dynamic activation scales.
    /// With --calib-data, dynamic INT8 also migrates activation outliers
    /// into the weights (smoothing); without it, it skips that step.
    #[arg(long, value_enum, value_name = "MODE", help_heading = "Compression")]
    pub int8: Option<Int8Arg>,

    /// Method by which static INT8 chooses activation ranges from
    /// calibration data [default: min-max].
    #[arg(long, value_enum, requires = "int8", help_heading = "Compression")]
    pub int8_calibration: Option<Int8CalibrationArg>,
}

impl CompressArgs {
    /// Returns the recipe these options select, or `None` when no compression is requested.
    pub fn recipe(&self) -> Result<Option<Recipe>> {
        if self.int8 == Some(Int8Arg::Dynamic) && self.int8_calibration.is_some() {
            bail!("--int8-calibration chooses static activation ranges; --int8 dynamic computes them on every call, so drop one of the two");
        }
        let flags = self.flag_recipe();
        let sources = [self.recipe.is_some(), self.preset.is_some(), flags.is_some()];
        if sources.iter().filter(|s| **s).count() > 1 {
            bail!("give only one of --recipe, --preset and the single-pass options (--prune-flops, --low-rank-cut, --int8, ...)");
        }
        let mut recipe = if let Some(path) = &self.recipe {
            Recipe::from_file(path)?
        } else if let Some(preset) = self.preset {
            preset_of(preset).recipe()
        } else if let Some(recipe) = flags {
            recipe.validate()?;
            recipe
        } else {
            let option = if self.calib_data.is_some() { Some("--calib-data") } else { self.calib_samples.map(|_| "--calib-samples") };
            if let Some(option) = option {
                bail!("{option} is given but no compression is: add --recipe, --preset or a pass option such as --prune-flops");
            }
            return Ok(None);
        };
        if let Some(samples) = self.calib_samples {
            if samples == 0 {
                bail!("--calib-samples must be at least 1");
            }
            recipe.calibration.samples = samples;
            recipe.validate()?;
        }
        // INT8 calibration statistics are kept between builds unless the
        // recipe names its own folder.
        for pass in &mut recipe.passes {
            if let PassSpec::Quantize(config) = pass
                && config.cache_dir.is_none()
            {
                config.cache_dir = Some(calibration_cache_dir());
            }
        }
        Ok(Some(recipe))
    }

    /// The compression for `model`, with calibration preprocessing from
    /// its `MODEL.preprocess.json` or `normalize`.
    pub fn compression(&self, normalize: NormalizeOptions) -> Result<Option<Compression>> {
        let Some(recipe) = self.recipe()? else { return Ok(None) };
        let compression = Compression { recipe, data: self.calib_data.clone(), normalize };
        compression.check()?;
        Ok(Some(compression))
    }

    fn flag_recipe(&self) -> Option<Recipe> {
        let mut passes = Vec::new();
        if let Some(path) = &self.load_weights {
            passes.push(PassSpec::LoadWeights(LoadWeightsSpec { path: path.clone(), allow_unmatched: false }));
        }
        if let Some(cut) = self.low_rank_cut {
            let mut spec: LowRankSpec = toml::from_str("param-cut = 0.0").expect("valid low-rank table");
            spec.param_cut = Some(cut);
            spec.scope = scope_of(self.low_rank_scope);
            passes.push(PassSpec::LowRank(spec));
        }
        if self.prune_flops.is_some() || self.prune_heads.is_some() || self.prune_neurons.is_some() {
            let mut spec: PruneSpec = toml::from_str("").expect("valid prune table");
            spec.flops = self.prune_flops;
            spec.heads = self.prune_heads;
            spec.neurons = self.prune_neurons;
            spec.importance = self.importance.into();
            passes.push(PassSpec::Prune(spec));
        }
        if let Some(sparsity) = self.sparsity {
            let mut spec: SparsifySpec = toml::from_str("sparsity = 0.0").expect("valid sparsify table");
            spec.sparsity = sparsity;
            (spec.block_rows, spec.block) = self.sparsity_block;
            passes.push(PassSpec::Sparsify(spec));
        }
        if self.distill {
            passes.push(PassSpec::Distill(toml::from_str::<DistillSpec>("").expect("valid distill table")));
        }
        if let Some(mode) = self.int8 {
            let mut config = QuantConfig::default();
            config.activations = match mode {
                Int8Arg::Static => ActivationMode::Static,
                Int8Arg::Dynamic => ActivationMode::Dynamic,
            };
            config.calibration = match self.int8_calibration.unwrap_or(Int8CalibrationArg::MinMax) {
                Int8CalibrationArg::MinMax => CalibrationMethod::MinMax,
                Int8CalibrationArg::Percentile => CalibrationMethod::Percentile,
                Int8CalibrationArg::Entropy => CalibrationMethod::Entropy,
            };
            // Dynamic INT8 needs no calibration data; without any, it skips
            // the smoothing that would need it.
            if mode == Int8Arg::Dynamic && self.calib_data.is_none() {
                config.smoothing_alpha = None;
            }
            passes.push(PassSpec::Quantize(config));
        }
        (!passes.is_empty()).then(|| Recipe { passes, ..Recipe::default() })
    }
}

fn preset_of(preset: PresetArg) -> Preset {
    match preset {
        PresetArg::Lossless => Preset::Lossless,
        PresetArg::Balanced => Preset::Balanced,
        PresetArg::Fast => Preset::Fast,
    }
}

fn scope_of(scope: ScopeArg) -> Scope {
    match scope {
        ScopeArg::Mlp => Scope::Mlp,
        ScopeArg::Attention => Scope::Attention,
        ScopeArg::Encoder => Scope::Encoder,
        ScopeArg::All => Scope::All,
    }
}

/// Calibration preprocessing for `model`: its stored spec, else defaults.
pub fn normalize_for(model: &Path) -> Result<NormalizeOptions> {
    let spec = vitc::data::PreprocessSpec::for_model(model)?.unwrap_or_default();
    Ok(NormalizeOptions { mean: spec.mean.clone(), std: spec.std.clone(), layout: spec.layout() })
}

/// Parses `--sparsity-block`: `N` (one row of N inputs) or `ROWSxN`.
fn parse_block(text: &str) -> std::result::Result<(usize, usize), String> {
    let number = |part: &str| part.trim().parse::<usize>().ok().filter(|&v| v > 0);
    let parsed = match text.split_once(['x', 'X']) {
        Some((rows, cols)) => number(rows).zip(number(cols)),
        None => number(text).map(|cols| (1, cols)),
    };
    parsed.ok_or_else(|| format!("expected N or ROWSxN with positive integers (e.g. 4 or 8x4), got {text:?}"))
}

/// `$VITC_CACHE/calibration` when `VITC_CACHE` is set and not empty, or
/// `~/.cache/vitc/calibration`.
fn calibration_cache_dir() -> PathBuf {
    let root = std::env::var_os("VITC_CACHE").filter(|dir| !dir.is_empty()).map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        home.join(".cache").join("vitc")
    });
    root.join("calibration")
}
