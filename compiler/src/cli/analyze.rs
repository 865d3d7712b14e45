//! `vitc analyze`: how much each attention and MLP unit can be pruned.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use vitc::compress::analyze::{AnalyzeOptions, analyze};
use vitc::compress::Calibration;
use vitc::onnx::ImportOptions;
use vitc::passes::PassManager;

use super::compress::{ImportanceArg, normalize_for};

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// The ONNX model.
    pub model: PathBuf,

    /// Calibration samples: a .npy, an .npz or a folder of images, as for
    /// `vitc eval --data`.
    #[arg(long)]
    pub data: PathBuf,

    /// Samples taken from the start of --data.
    #[arg(long, default_value_t = 256)]
    pub samples: usize,

    /// Samples per run, for a model whose batch is symbolic.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,

    /// Fractions of each unit's heads or neurons to try, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [0.25, 0.5, 0.75])]
    pub ratio: Vec<f64>,

    /// Ranking of heads and neurons.
    #[arg(long, value_enum, default_value_t = ImportanceArg::Reconstruction)]
    pub importance: ImportanceArg,

    /// Refit each pruned unit by layer-wise distillation before measuring.
    #[arg(long)]
    pub distill: bool,

    /// Search per-unit ratios that lose at most this many points of top-1
    /// agreement with the original model, and print the recipe.
    #[arg(long, value_name = "POINTS")]
    pub max_drop: Option<f64>,

    /// Write the searched recipe to this TOML file.
    #[arg(long, value_name = "FILE", requires = "max_drop")]
    pub save_recipe: Option<PathBuf>,

    /// Also write the analysis as JSON.
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,
}

pub fn run(args: AnalyzeArgs) -> Result<()> {
    if args.ratio.is_empty() || args.ratio.iter().any(|r| !(0.0..1.0).contains(r) || *r == 0.0) {
        bail!("--ratio values must be in (0, 1), got {:?}", args.ratio);
    }
    if args.max_drop.is_some_and(|d| !(d >= 0.0 && d.is_finite())) {
        bail!("--max-drop must be a number of points >= 0");
    }
    if args.batch == 0 || args.samples == 0 {
        bail!("--batch and --samples must be at least 1");
    }
    for (path, option) in [(&args.json, "--json"), (&args.save_recipe, "--save-recipe")] {
        if let Some(path) = path {
            super::check_output_file(path, option, &[args.model.as_path(), args.data.as_path()])?;
        }
    }
    let onnx = vitc::onnx::OnnxModel::load(&args.model)?;
    let declared = vitc::eval::DeclaredInput::of(&onnx)?;
    let bind = |batch| declared.bind(batch, None).map_err(|message| anyhow::anyhow!("{}: {message}", args.model.display()));
    // A symbolic batch shrinks to the samples that the data has, so that one whole batch remains.
    let available = Calibration::available(&args.data, &bind(1)?, args.samples, &normalize_for(&args.model)?)?;
    let shape = bind(args.batch.min(available.max(1)))?;
    let options = ImportOptions { input_shapes: HashMap::from([(declared.name.clone(), shape.clone())]), ..ImportOptions::default() };
    let mut graph = vitc::onnx::import_model(&onnx, &options).with_context(|| format!("cannot import {}", args.model.display()))?;
    PassManager::canonicalize().run(&mut graph)?;
    let calibration = Calibration::load(&args.data, &shape, args.samples, &normalize_for(&args.model)?)?;

    let options = AnalyzeOptions { ratios: args.ratio.clone(), importance: args.importance.into(), distill: args.distill, max_drop: args.max_drop };
    let sensitivity = analyze(&graph, &calibration, &options)?;
    print!("{sensitivity}");

    if let (Some(path), Some(search)) = (&args.save_recipe, &sensitivity.search) {
        std::fs::write(path, &search.recipe).with_context(|| format!("cannot write {}", path.display()))?;
        println!("recipe written to {}", path.display());
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&sensitivity).context("cannot serialize the analysis")?;
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
