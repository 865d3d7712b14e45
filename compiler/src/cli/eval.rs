//! `vitc eval`: the accuracy of a classifier on a labeled dataset.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use vitc::data::PreprocessSpec;
use vitc::eval::{EvalOptions, ImageSize, NormalizeOptions, evaluate};

use super::compress::CompressArgs;

/// What runs the evaluated model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// Generated native code, compiled in memory.
    Jit,
    /// The reference interpreter.
    Interpreter,
    /// An object file written by `vitc build` (see --object).
    Object,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The ONNX classifier to evaluate. Its first output must be
    /// [batch, classes] logits.
    pub model: PathBuf,

    /// The dataset: a .npy of samples (with --labels), an .npz with 'images'
    /// and 'labels' arrays, or a folder with one subfolder of PNG/JPEG
    /// images per class (sorted subfolder names are the class indices).
    /// Arrays contain u8 images [N, H, W] or [N, H, W, C], or f32 samples
    /// already preprocessed and shaped like the model input.
    #[arg(long)]
    pub data: PathBuf,

    /// Labels of a .npy dataset: a .npy of integers, one per sample.
    #[arg(long)]
    pub labels: Option<PathBuf>,

    /// An ONNX model run on the same inputs, to report top-1 agreement,
    /// the KL divergence and the abs error of the outputs against it.
    #[arg(long)]
    pub reference: Option<PathBuf>,

    /// Engine of the model: generated code (jit), the reference
    /// interpreter, or an object built by `vitc build` (object, with --object).
    #[arg(long, value_enum, default_value_t = Engine::Jit)]
    pub engine: Engine,

    /// The NAME.o that `--engine object` links and runs; the build report
    /// NAME.report.json beside it gives its shapes. It runs at the batch
    /// size it was built for.
    #[arg(long, value_name = "NAME.o")]
    pub object: Option<PathBuf>,

    /// Engine of the --reference model (default: the same as --engine).
    /// `--reference MODEL --reference-engine interpreter` checks the JIT's
    /// code against the interpreter on the whole dataset.
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub reference_engine: Option<Engine>,

    /// Samples per model run (default: 16, or the batch the model fixes).
    /// The last batch is padded.
    #[arg(long)]
    pub batch: Option<usize>,

    /// Threads of the JIT's pool, where 0 means one per core. The
    /// interpreter ignores it.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,

    /// Evaluate only the first N samples.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,

    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,

    /// Per-channel mean subtracted from u8 and image pixels scaled to [0, 1]
    /// (default: MODEL.preprocess.json's, else the ImageNet mean for RGB
    /// inputs and 0 for grayscale).
    #[arg(long, value_delimiter = ',')]
    pub mean: Option<Vec<f32>>,

    /// Per-channel standard deviation that u8 and image pixels are divided
    /// by (default: MODEL.preprocess.json's, else the ImageNet std for RGB
    /// inputs and 1 for grayscale).
    #[arg(long, value_delimiter = ',')]
    pub std: Option<Vec<f32>>,

    /// Input height and width as HxW, for a model that leaves them symbolic.
    #[arg(long, value_name = "HxW")]
    pub size: Option<ImageSize>,

    /// Compress the model first; without --reference, the uncompressed
    /// model is the reference.
    #[command(flatten)]
    pub compress: CompressArgs,
}

pub fn run(args: EvalArgs) -> Result<()> {
    if args.threads > 256 {
        anyhow::bail!("--threads must be at most 256 (0 means one per core)");
    }
    if let Some(path) = &args.json {
        let mut inputs = vec![args.model.as_path(), args.data.as_path()];
        inputs.extend(args.labels.as_deref());
        inputs.extend(args.reference.as_deref());
        inputs.extend(args.compress.calib_data.as_deref());
        super::check_output_file(path, "--json", &inputs)?;
    }
    // The spec stored with the model gives the defaults; options override it.
    let spec = PreprocessSpec::for_model(&args.model)?.unwrap_or_default();
    let normalize_from_model = args.mean.is_none() && args.std.is_none();
    let normalize = NormalizeOptions { mean: args.mean.or(spec.mean.clone()), std: args.std.or(spec.std.clone()), layout: spec.layout() };
    let compression = args.compress.compression(normalize.clone())?;
    let options = EvalOptions {
        data: args.data,
        labels: args.labels,
        reference: args.reference,
        engine: library_engine(args.engine),
        reference_engine: args.reference_engine.map(library_engine),
        batch: args.batch,
        threads: args.threads,
        limit: args.limit,
        normalize,
        normalize_from_model,
        size: args.size,
        object: args.object,
        progress: true,
        compression,
    };
    let report = evaluate(&args.model, &options)?;
    println!("{report}");

    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).context("cannot serialize the report as JSON")?;
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    Ok(())
}

fn library_engine(engine: Engine) -> vitc::eval::Engine {
    match engine {
        Engine::Jit => vitc::eval::Engine::Jit,
        Engine::Interpreter => vitc::eval::Engine::Interpreter,
        Engine::Object => vitc::eval::Engine::Object,
    }
}
