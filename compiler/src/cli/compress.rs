//! Compression options shared by `vitc build`, `vitc eval` and `vitc analyze`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use vitc::compress::recipe::{DistillSpec, Importance, LoadWeightsSpec, LowRankSpec, PruneSpec, Scope, SparsifySpec};
use vitc::compress::{Compression, PassSpec, Preset, Recipe};
use vitc::eval::NormalizeOptions;
use vitc::quant::{ActivationMode, QuantConfig};

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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum QuantizeArg {
    /// Activation scales fixed from the calibration data.
    Static,
    /// Activation scales computed on every call, per token.
    Dynamic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    Mlp,
    Attention,
    Encoder,
    All,
}

#[derive(Args, Debug)]
pub struct CompressArgs {
    /// A TOML compression recipe (see the README for its passes and keys).
    #[arg(long, value_name = "FILE", help_heading = "Compression")]
    pub recipe: Option<PathBuf>,

    /// A built-in recipe: lossless, balanced or fast.
    #[arg(long, value_enum, help_heading = "Compression")]
    pub preset: Option<PresetArg>,

    /// Calibration samples (.npy, .npz or image folder, like --data of
    /// vitc eval); needed by activation and reconstruction importance,
    /// low-rank's activation method, distill and static quantization.
    #[arg(long, value_name = "DATA", help_heading = "Compression")]
    pub calib_data: Option<PathBuf>,

    /// Calibration samples taken from the start of --calib-data
    /// (default: the recipe's, else 512).
    #[arg(long, value_name = "N", help_heading = "Compression")]
    pub calib_samples: Option<usize>,

    /// Factor Linear layers so they keep 1 - F of their parameters
    /// (a low-rank pass with param-cut = F).
    #[arg(long, value_name = "F", help_heading = "Compression")]
    pub low_rank_cut: Option<f64>,

    /// Layers the low-rank pass factors.
    #[arg(long, value_enum, default_value_t = ScopeArg::Mlp, help_heading = "Compression")]
    pub low_rank_scope: ScopeArg,

    /// Remove this fraction of the encoder's FLOPs as whole heads and MLP
    /// neurons (a prune pass with flops = F).
    #[arg(long, value_name = "F", help_heading = "Compression")]
    pub prune_flops: Option<f64>,

    /// Remove this fraction of every attention's heads.
    #[arg(long, value_name = "F", help_heading = "Compression")]
    pub prune_heads: Option<f64>,

    /// Remove this fraction of every MLP's hidden neurons.
    #[arg(long, value_name = "F", help_heading = "Compression")]
    pub prune_neurons: Option<f64>,

    /// How the prune pass ranks heads and neurons.
    #[arg(long, value_enum, default_value_t = ImportanceArg::Reconstruction, help_heading = "Compression")]
    pub importance: ImportanceArg,

    /// Zero this fraction of the MLP weights by magnitude (a sparsify pass).
    #[arg(long, value_name = "F", help_heading = "Compression")]
    pub sparsity: Option<f64>,

    /// Consecutive input weights zeroed together by --sparsity.
    #[arg(long, value_name = "N", default_value_t = 1, help_heading = "Compression")]
    pub sparsity_block: usize,

    /// Refit the compressed layers to the original model's outputs on the
    /// calibration data (a distill pass, run last).
    #[arg(long, help_heading = "Compression")]
    pub distill: bool,

    /// Replace weights by those in a .safetensors or .onnx file, matched
    /// by name (a load-weights pass, run first).
    #[arg(long, value_name = "FILE", help_heading = "Compression")]
    pub load_weights: Option<PathBuf>,

    /// Quantize every Linear layer to INT8 with per-channel weight scales
    /// (a quantize pass with its other settings at their defaults, run
    /// last). Static activation scales need --calib-data; dynamic ones
    /// skip outlier smoothing without it.
    #[arg(long, value_enum, value_name = "MODE", help_heading = "Compression")]
    pub quantize: Option<QuantizeArg>,
}

impl CompressArgs {
    /// The recipe these options select, or `None` when no compression is asked for.
    pub fn recipe(&self) -> Result<Option<Recipe>> {
        let flags = self.flag_recipe();
        let sources = [self.recipe.is_some(), self.preset.is_some(), flags.is_some()];
        if sources.iter().filter(|s| **s).count() > 1 {
            bail!("give only one of --recipe, --preset and the single-pass options (--prune-flops, --low-rank-cut, --quantize, ...)");
        }
        let mut recipe = if let Some(path) = &self.recipe {
            Recipe::from_file(path)?
        } else if let Some(preset) = self.preset {
            preset_of(preset).recipe()
        } else if let Some(recipe) = flags {
            recipe.validate()?;
            recipe
        } else {
            if self.calib_data.is_some() {
                bail!("--calib-data is given but no compression is: add --recipe, --preset or a pass option such as --prune-flops");
            }
            return Ok(None);
        };
        if let Some(samples) = self.calib_samples {
            recipe.calibration.samples = samples;
            recipe.validate()?;
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
            spec.importance = match self.importance {
                ImportanceArg::L1 => Importance::L1,
                ImportanceArg::L2 => Importance::L2,
                ImportanceArg::Activation => Importance::Activation,
                ImportanceArg::Reconstruction => Importance::Reconstruction,
            };
            passes.push(PassSpec::Prune(spec));
        }
        if let Some(sparsity) = self.sparsity {
            let mut spec: SparsifySpec = toml::from_str("sparsity = 0.0").expect("valid sparsify table");
            spec.sparsity = sparsity;
            spec.block = self.sparsity_block;
            passes.push(PassSpec::Sparsify(spec));
        }
        if self.distill {
            passes.push(PassSpec::Distill(toml::from_str::<DistillSpec>("").expect("valid distill table")));
        }
        if let Some(mode) = self.quantize {
            let activations = match mode {
                QuantizeArg::Static => ActivationMode::Static,
                QuantizeArg::Dynamic => ActivationMode::Dynamic,
            };
            // Smoothing reads calibration data, so dynamic INT8 without
            // --calib-data runs without it.
            let mut config = QuantConfig { activations, ..QuantConfig::default() };
            if mode == QuantizeArg::Dynamic && self.calib_data.is_none() {
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
