//! `vitc eval`: the accuracy of a classifier on a labeled dataset, run with
//! generated code (JIT) or the reference interpreter, optionally compared
//! with a reference model on the same inputs.
//!
//! [`evaluate`] works in five steps:
//!
//! 1. Read the model's declared input and bind its shape ([`engine`]).
//! 2. Open the dataset for that sample shape ([`dataset`]), so that a bad
//!    dataset fails before anything is compiled.
//! 3. Import and canonicalize the model for the batch size, check the labels
//!    against its class count, then compile it (and the reference model).
//! 4. Run every batch and collect the metrics ([`metrics`]). The last batch
//!    is padded with zeros, and the outputs of the padding are dropped.
//! 5. Assemble the [`Report`] ([`report`]).
//!
//! Only the JIT and the interpreter run models here. Evaluating an object
//! file built by `vitc build` is not supported.

pub mod dataset;
pub mod engine;
pub mod metrics;
mod object;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use vitc_runtime::{RuntimeError, ThreadPool};

pub use dataset::{Dataset, DatasetError, NormalizeOptions, Preprocess};
pub use engine::{BatchModel, DeclaredInput, Engine, ImageSize, ImportedModel};
pub use metrics::{Accumulator, ClassCounts, Comparison, Metrics};
pub use report::{ClassReport, Report, Timing};

use crate::onnx::OnnxModel;

/// Samples per model run when the model's batch dimension is symbolic and
/// the caller gives no batch size.
pub const DEFAULT_BATCH: usize = 16;

/// A failed evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Dataset(#[from] DatasetError),

    /// A model that eval cannot feed or read, with the reason.
    #[error("{}: {message}", path.display())]
    Model { path: PathBuf, message: String },

    #[error("cannot import {}", path.display())]
    Import { path: PathBuf, source: crate::Error },

    #[error("cannot compress {}", path.display())]
    Compress { path: PathBuf, source: crate::Error },

    #[error("cannot compile {} with the JIT", path.display())]
    Compile { path: PathBuf, source: crate::Error },

    #[error("running {} failed", path.display())]
    Run { path: PathBuf, source: Box<dyn std::error::Error + Send + Sync> },

    #[error("cannot start a thread pool of {threads} threads")]
    ThreadPool { threads: usize, source: RuntimeError },

    #[error("{0}")]
    InvalidOption(String),
}

/// Options of an evaluation: the dataset, the engines and the preprocessing.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// A `.npy` of samples, an `.npz` with `images` and `labels`, or a
    /// folder with one subfolder of images per class.
    pub data: PathBuf,
    /// Labels of a `.npy` dataset, one integer per sample.
    pub labels: Option<PathBuf>,
    /// A model run on the same inputs to compare outputs with.
    pub reference: Option<PathBuf>,
    pub engine: Engine,
    /// Engine of the reference model, or `None` for the same as `engine`.
    /// The interpreter here checks the JIT's code on real data.
    pub reference_engine: Option<Engine>,
    /// Samples per run. `None` takes the batch that the model fixes, or
    /// [`DEFAULT_BATCH`] when its batch dimension is symbolic.
    pub batch: Option<usize>,
    /// Threads of the JIT's pool, where 0 means one per core.
    pub threads: usize,
    /// Evaluate only the first samples, in dataset order (for a folder: by
    /// class, then by file name).
    pub limit: Option<usize>,
    /// Mean and std for u8 arrays and image files.
    pub normalize: NormalizeOptions,
    /// Whether `normalize` contains the model's own defaults (from
    /// `MODEL.preprocess.json`) rather than values the user chose. A dataset
    /// that ignores the defaults is then no reason to warn.
    pub normalize_from_model: bool,
    /// Height and width for a model whose input leaves them symbolic.
    pub size: Option<ImageSize>,
    /// The object file that `Engine::Object` runs (written by `vitc build`,
    /// with its `NAME.report.json` beside it).
    pub object: Option<PathBuf>,
    /// Show a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
    /// Compress the model before evaluating it. Without `reference`, the
    /// uncompressed model becomes the reference.
    pub compression: Option<crate::compress::Compression>,
}

impl EvalOptions {
    /// Options for evaluating on `data` with the JIT and every default.
    pub fn new(data: impl Into<PathBuf>) -> EvalOptions {
        EvalOptions {
            data: data.into(),
            labels: None,
            reference: None,
            engine: Engine::Jit,
            reference_engine: None,
            batch: None,
            threads: 0,
            limit: None,
            normalize: NormalizeOptions::default(),
            normalize_from_model: false,
            size: None,
            object: None,
            progress: false,
            compression: None,
        }
    }
}

/// Evaluates the classifier at `model_path` on `options.data`.
pub fn evaluate(model_path: &Path, options: &EvalOptions) -> Result<Report, EvalError> {
    if options.batch == Some(0) {
        return Err(EvalError::InvalidOption("--batch must be at least 1".to_string()));
    }
    if options.limit == Some(0) {
        return Err(EvalError::InvalidOption("--limit must be at least 1".to_string()));
    }

    if options.object.is_some() && options.engine != Engine::Object {
        return Err(EvalError::InvalidOption("--object is used only with --engine object; add --engine object".into()));
    }
    if options.reference_engine == Some(Engine::Object) {
        return Err(EvalError::InvalidOption(
            "--reference-engine object is not supported; compare an object with --reference-engine jit or interpreter".into(),
        ));
    }

    // Step 1: the model's input.
    let onnx = load_onnx(model_path)?;
    let declared = DeclaredInput::of(&onnx)?;
    let model_error = |message: String| EvalError::Model { path: model_path.to_path_buf(), message };
    let probe_shape = declared.bind(1, options.size).map_err(model_error)?;

    // Step 2: the dataset.
    let dataset =
        Dataset::open_first(&options.data, options.labels.as_deref(), &probe_shape[1..], &options.normalize, options.limit)?;
    warn_about_dataset(&dataset, options);

    // Step 3: the model and the reference, for one batch size. A built
    // object runs at the batch it was built for.
    let object = match (options.engine, &options.object) {
        (Engine::Object, Some(path)) => Some(object::load_object(path, model_path)?),
        (Engine::Object, None) => {
            return Err(EvalError::InvalidOption("--engine object needs --object NAME.o, an object written by vitc build".into()));
        }
        _ => None,
    };
    let batch = match &object {
        Some(loaded) => loaded.input_shape[0],
        None => choose_batch(model_path, &declared, options.batch, dataset.len())?,
    };
    let shape = declared.bind(batch, options.size).map_err(model_error)?;
    if let Some(loaded) = &object
        && loaded.input_shape != shape
    {
        return Err(model_error(format!(
            "the object was built for input shape {:?} but the model binds to {:?} here; build it with --input-shape or pass --size",
            loaded.input_shape, shape
        )));
    }
    let mut imported = ImportedModel::import(&onnx, &declared.name, &shape)?;
    let compression = match &options.compression {
        Some(compression) => {
            if options.engine == Engine::Object {
                return Err(EvalError::InvalidOption(
                    "--engine object runs a built object as it is; build it with the recipe instead of passing one here".into(),
                ));
            }
            Some(imported.compress(compression)?)
        }
        None => None,
    };
    let labels = dataset.class_indices(imported.classes())?;
    let classes = imported.classes();
    let mut model = imported.prepare_with(options.engine, object)?;
    // An object's reference runs with the JIT unless another engine is given.
    let default_reference = if options.engine == Engine::Object { Engine::Jit } else { options.engine };
    // A compressed model is compared with the uncompressed one by default.
    let reference_path = options.reference.clone().or_else(|| compression.as_ref().map(|_| model_path.to_path_buf()));
    let reference_engine = reference_path.as_ref().map(|_| options.reference_engine.unwrap_or(default_reference));
    let mut reference = match (&reference_path, reference_engine) {
        (Some(path), Some(engine)) => Some(prepare_reference(path, &shape, classes, engine, options.size)?),
        _ => None,
    };
    let uses_pool = |e: Engine| e == Engine::Jit || e == Engine::Object;
    let pool = if uses_pool(options.engine) || reference_engine.is_some_and(uses_pool) {
        let pool = ThreadPool::new(options.threads).map_err(|source| EvalError::ThreadPool { threads: options.threads, source })?;
        Some(pool)
    } else {
        None
    };
    tracing::info!(
        model = %model_path.display(),
        data = %dataset.path().display(),
        samples = dataset.len(),
        batch,
        engine = %options.engine,
        "evaluating"
    );

    // Step 4: every batch.
    let run = run_batches(&dataset, &labels, &mut model, reference.as_mut(), pool.as_ref(), options.progress)?;

    // Step 5: the report.
    let metrics = run.metrics;
    let model_seconds = run.model_time.as_secs_f64();
    let prepare_seconds = model.prepare_seconds() + reference.as_ref().map_or(0.0, |r| r.prepare_seconds());
    Ok(Report {
        model: model_path.display().to_string(),
        reference: reference_path.as_ref().map(|path| path.display().to_string()),
        reference_engine: reference_engine.map(|engine| engine.to_string()),
        data: dataset.path().display().to_string(),
        engine: options.engine.to_string(),
        batch,
        threads: if options.engine == Engine::Jit { pool.as_ref().map(ThreadPool::threads) } else { None },
        samples: metrics.samples,
        classes,
        top1_accuracy: metrics.top1_accuracy(),
        top1_correct: metrics.top1_correct,
        top5_accuracy: metrics.top5_accuracy(),
        top5_correct: metrics.top5_correct,
        non_finite_outputs: metrics.non_finite_rows,
        per_class: Report::per_class(&metrics, dataset.class_names()),
        reference_comparison: metrics.comparison.clone(),
        compression,
        timing: Timing {
            prepare_seconds,
            model_seconds,
            total_seconds: run.total_time.as_secs_f64(),
            samples_per_second: if model_seconds > 0.0 { metrics.samples as f64 / model_seconds } else { 0.0 },
        },
    })
}

/// Result of running all batches.
struct BatchRun {
    metrics: Metrics,
    /// Time spent in runs of the evaluated model.
    model_time: Duration,
    /// Wall time of the whole loop.
    total_time: Duration,
}

/// Runs `model` (and `reference`) on every batch of `dataset`, padding the
/// last batch with zeros, and collects the metrics of the real samples.
fn run_batches(
    dataset: &Dataset,
    labels: &[usize],
    model: &mut BatchModel,
    mut reference: Option<&mut BatchModel>,
    pool: Option<&ThreadPool>,
    show_progress: bool,
) -> Result<BatchRun, EvalError> {
    let (batch, classes) = (model.batch(), model.classes());
    let progress = if show_progress { ProgressBar::new(dataset.len() as u64) } else { ProgressBar::hidden() };
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} samples ({per_sec}, {eta} left)")
            .expect("template is valid"),
    );

    let mut accumulator = Accumulator::new(classes, reference.is_some());
    let mut input = vec![0.0f32; batch * dataset.sample_len()];
    let mut model_time = Duration::ZERO;
    let start = Instant::now();
    for first in (0..dataset.len()).step_by(batch) {
        let count = batch.min(dataset.len() - first);
        let filled = count * dataset.sample_len();
        dataset.load_batch(first..first + count, &mut input[..filled])?;
        input[filled..].fill(0.0);

        let run_start = Instant::now();
        let logits = model.run(&input, pool)?;
        model_time += run_start.elapsed();

        let rows = &logits[..count * classes];
        let batch_labels = &labels[first..first + count];
        match reference.as_deref_mut() {
            Some(reference) => {
                let reference_rows = reference.run(&input, pool)?;
                accumulator.add_batch(rows, batch_labels, Some(&reference_rows[..count * classes]));
            }
            None => accumulator.add_batch(rows, batch_labels, None),
        }
        progress.inc(count as u64);
    }
    progress.finish_and_clear();
    Ok(BatchRun { metrics: accumulator.finish(), model_time, total_time: start.elapsed() })
}

fn load_onnx(path: &Path) -> Result<OnnxModel, EvalError> {
    OnnxModel::load(path).map_err(|source| EvalError::Import { path: path.to_path_buf(), source })
}

/// Picks the samples per run: the batch the model fixes, else the requested
/// one (or [`DEFAULT_BATCH`]), but no more than there are samples.
fn choose_batch(path: &Path, declared: &DeclaredInput, requested: Option<usize>, samples: usize) -> Result<usize, EvalError> {
    match declared.fixed_batch() {
        Some(0) => Err(EvalError::Model {
            path: path.to_path_buf(),
            message: format!("input '{}' has a fixed batch of 0, so it cannot take any sample", declared.name),
        }),
        Some(fixed) => {
            if let Some(requested) = requested
                && requested != fixed
            {
                tracing::warn!(
                    "{}: input '{}' has a fixed batch of {fixed}, so --batch {requested} is ignored",
                    path.display(),
                    declared.name
                );
            }
            Ok(fixed)
        }
        None => Ok(requested.unwrap_or(DEFAULT_BATCH).min(samples)),
    }
}

/// Imports and compiles the reference model for the same input shape as
/// the evaluated model, and checks that it has the same class count.
fn prepare_reference(
    path: &Path,
    shape: &[usize],
    classes: usize,
    engine: Engine,
    size: Option<ImageSize>,
) -> Result<BatchModel, EvalError> {
    let model_error = |message: String| EvalError::Model { path: path.to_path_buf(), message };
    let onnx = load_onnx(path)?;
    let declared = DeclaredInput::of(&onnx)?;
    let reference_shape = declared.bind(shape[0], size).map_err(model_error)?;
    if reference_shape != shape {
        return Err(model_error(format!(
            "the reference's input '{}' binds to {:?} but the evaluated model runs on {:?}; a reference model must take the same inputs",
            declared.name, reference_shape, shape
        )));
    }
    let imported = ImportedModel::import(&onnx, &declared.name, shape)?;
    if imported.classes() != classes {
        return Err(model_error(format!(
            "the reference outputs {} classes but the evaluated model outputs {classes}; they must match",
            imported.classes()
        )));
    }
    imported.prepare(engine)
}

/// Logs options that have no effect and files that were skipped.
fn warn_about_dataset(dataset: &Dataset, options: &EvalOptions) {
    let normalize_given = !options.normalize_from_model && (options.normalize.mean.is_some() || options.normalize.std.is_some());
    if dataset.is_preprocessed() && normalize_given {
        let calibration = options.compression.as_ref().and_then(|c| c.data_path()).is_some();
        tracing::warn!(
            "--mean and --std are ignored for {}: it holds f32 samples that are already preprocessed{}",
            dataset.path().display(),
            if calibration { " (they still apply to the calibration data)" } else { "" }
        );
    }
    if dataset.ignored_files() > 0 {
        tracing::warn!(
            "ignored {} file(s) in the class subfolders of {} that are not PNG or JPEG",
            dataset.ignored_files(),
            dataset.path().display()
        );
    }
}
