//! Calibration data and the interpreter runs that the passes make on it.

use std::collections::HashMap;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{ArrayD, IxDyn};

use vitc_runtime::ThreadPool;

use crate::codegen::jit::JitModel;
use crate::error::{Error, Result};
use crate::lower::Program;
use crate::eval::{Dataset, NormalizeOptions};
use crate::interp::run_with_taps;
use crate::ir::{Graph, ValueId};
use crate::tensor::{ShapeDisplay, Tensor};

/// Calibration inputs: whole batches for the graph's single input.
#[derive(Clone, Debug)]
pub struct Calibration {
    pub batches: Vec<Tensor>,
    /// Source of the samples, for reports.
    pub source: String,
}

impl Calibration {
    /// Loads up to `samples` samples of `data` as batches of `batch_shape`
    /// (the graph input's shape, batch first). Samples that do not fill a
    /// last batch are left out, so no padding skews the statistics.
    pub fn load(data: &Path, batch_shape: &[usize], samples: usize, normalize: &NormalizeOptions) -> Result<Calibration> {
        let batch = batch_shape.first().copied().unwrap_or(1).max(1);
        let data_error = |e| data_error(data, e);
        let dataset = Dataset::open_unlabeled(data, &batch_shape[1..], normalize, samples).map_err(data_error)?;
        if !dataset.is_preprocessed() && normalize.mean.is_none() && normalize.std.is_none() {
            tracing::warn!(
                data = %data.display(),
                "the calibration data are pixels (u8 or image files) and no mean or std is known for this model, so they are \
                 scaled to [0, 1] and normalized with ImageNet's mean and std for 3 channels, none otherwise; if the model \
                 expects other values, write MODEL.preprocess.json beside it (see the README)"
            );
        }
        let available = samples.min(dataset.len());
        if samples > dataset.len() && dataset.len() > 0 {
            tracing::warn!(
                data = %data.display(),
                "{samples} calibration samples were asked for, but the data has {}; calibration uses those",
                dataset.len()
            );
        }
        let count = available / batch * batch;
        if count > 0 && count < available {
            tracing::warn!(
                data = %data.display(),
                "calibration uses {count} of {available} samples: whole batches of {batch} only, so the last {} left out",
                match available - count {
                    1 => "one is".to_string(),
                    n => format!("{n} are"),
                }
            );
        }
        if available == 0 {
            return Err(Error::Compress(format!(
                "calibration data {}: no samples to use; give a file with samples, and a sample count of at least 1",
                data.display()
            )));
        }
        if count == 0 {
            return Err(Error::Compress(format!(
                "calibration data {}: {available} sample(s) to use, fewer than one batch of {batch}; this model's batch is \
                 fixed at {batch}, so give a file with at least {batch} samples and --calib-samples (or [calibration] \
                 samples) of at least {batch}",
                data.display()
            )));
        }
        let mut batches = Vec::with_capacity(count / batch);
        let mut buffer = vec![0.0f32; batch * dataset.sample_len()];
        for first in (0..count).step_by(batch) {
            dataset
                .load_batch(first..first + batch, &mut buffer)
                .map_err(data_error)?;
            if let Some(position) = buffer.iter().position(|v| !v.is_finite()) {
                return Err(Error::Compress(format!(
                    "calibration data {}: sample {} contains {}; remove or repair that sample",
                    data.display(),
                    first + position / dataset.sample_len(),
                    buffer[position]
                )));
            }
            let array = ArrayD::from_shape_vec(IxDyn(batch_shape), buffer.clone())
                .map_err(|e| Error::Internal(format!("calibration batch shape: {e}")))?;
            batches.push(Tensor::F32(array));
        }
        Ok(Calibration { batches, source: data.display().to_string() })
    }

    /// Returns how many of the first `samples` samples `data` has, for
    /// inputs of `batch_shape` (batch first).
    pub fn available(data: &Path, batch_shape: &[usize], samples: usize, normalize: &NormalizeOptions) -> Result<usize> {
        let dataset = Dataset::open_unlabeled(data, &batch_shape[1..], normalize, samples).map_err(|e| data_error(data, e))?;
        Ok(samples.min(dataset.len()))
    }

    /// Calibration from tensors already shaped like the graph input.
    pub fn from_batches(batches: Vec<Tensor>, source: impl Into<String>) -> Calibration {
        Calibration { batches, source: source.into() }
    }

    /// The same samples in batches of `batch`; samples that do not fill a
    /// last batch are left out.
    pub fn rebatched(&self, batch: usize) -> Vec<Tensor> {
        let Some(first) = self.batches.first() else { return Vec::new() };
        let mut shape = first.shape().to_vec();
        shape[0] = batch.max(1);
        let sample_len: usize = shape[1..].iter().product();
        let all: Vec<f32> = self.batches.iter().filter_map(Tensor::as_f32).flat_map(|a| a.iter().copied()).collect();
        all.chunks_exact(sample_len * shape[0])
            .map(|chunk| Tensor::F32(ArrayD::from_shape_vec(IxDyn(&shape), chunk.to_vec()).expect("chunk fills the shape")))
            .collect()
    }

    pub fn samples(&self) -> usize {
        self.batches.iter().map(|b| b.shape().first().copied().unwrap_or(1)).sum()
    }

    /// Checks that every batch fits the graph's single input.
    pub fn check_against(&self, graph: &Graph) -> Result<()> {
        let [input] = graph.inputs() else {
            return Err(Error::Compress(format!("the model has {} inputs; compression supports one", graph.inputs().len())));
        };
        let fact = graph.fact(*input);
        if self.batches.is_empty() {
            return Err(Error::Compress(format!("calibration data {} has no batches", self.source)));
        }
        for batch in &self.batches {
            if batch.shape() != fact.shape.as_slice() || batch.dtype() != fact.dtype {
                return Err(Error::Compress(format!(
                    "calibration data {} gives batches of {}{}, but the model's input '{}' is {fact}",
                    self.source,
                    batch.dtype(),
                    ShapeDisplay(batch.shape()),
                    graph.value(*input).name,
                )));
            }
        }
        Ok(())
    }
}

/// Wraps a dataset error in a compression error that names the file once.
fn data_error(data: &Path, error: crate::eval::dataset::DatasetError) -> Error {
    let message = error.to_string();
    let path = data.display().to_string();
    // Most dataset errors already name the file, so it is not repeated.
    if message.contains(&path) {
        Error::Compress(format!("calibration data {message}"))
    } else {
        Error::Compress(format!("calibration data {path}: {message}"))
    }
}

/// Rows of a tapped value: the value flattened to `[rows, cols]`, where
/// `cols` is its last dimension, over all calibration batches.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    pub data: Vec<f32>,
    pub cols: usize,
}

impl Rows {
    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.cols).unwrap_or(0)
    }

    pub fn row(&self, index: usize) -> &[f32] {
        &self.data[index * self.cols..(index + 1) * self.cols]
    }

    fn push(&mut self, tensor: &Tensor, name: &str) -> Result<()> {
        let array = tensor.as_f32().ok_or_else(|| {
            Error::Compress(format!(
                "the passes read f32 values on calibration data, but '{name}' is {}; a model whose first output is \
                 not f32 (for example an ArgMax) cannot be compressed",
                format!("{:?}", tensor.dtype()).to_lowercase()
            ))
        })?;
        let cols = array.shape().last().copied().unwrap_or(1);
        if self.cols != 0 && self.cols != cols {
            return Err(Error::Internal(format!("value '{name}' changed width between batches")));
        }
        self.cols = cols;
        self.data.extend(array.iter().copied());
        Ok(())
    }
}

/// Runs `graph` on every calibration batch and returns the graph's first
/// output and each tapped value as rows.
///
/// The runs use generated code (JIT) with the tapped values as extra
/// outputs, which is several times faster than the interpreter; a graph
/// that the backend cannot lower runs in the interpreter instead.
pub fn run_rows(graph: &Graph, calibration: &Calibration, taps: &[ValueId], label: &str) -> Result<(Rows, Vec<Rows>)> {
    run_rows_fed(graph, calibration, &[], taps, label)
}

/// Runs `graph` like [`run_rows`], feeding the graph's inputs after the
/// first from `feeds`: rows computed earlier on the same calibration
/// batches, one entry per extra input.
fn run_rows_fed(graph: &Graph, calibration: &Calibration, feeds: &[&Rows], taps: &[ValueId], label: &str) -> Result<(Rows, Vec<Rows>)> {
    let feeds = Feeds::new(graph, calibration, feeds)?;
    match JitRunner::new(graph, taps) {
        Ok(mut runner) => runner.run(calibration, &feeds, label),
        Err(error) => {
            tracing::debug!(%error, "calibration runs fall back to the interpreter");
            run_rows_interpreted(graph, calibration, &feeds, taps, label)
        }
    }
}

/// Runs only the part of `graph` that computes `taps` on every calibration
/// batch and returns each tapped value as rows. Nodes that no tap depends
/// on (for example, every layer after the last tap) do not run.
pub fn run_taps(graph: &Graph, calibration: &Calibration, taps: &[ValueId], label: &str) -> Result<Vec<Rows>> {
    if taps.is_empty() {
        return Ok(Vec::new());
    }
    let mut truncated = graph.clone();
    truncated.set_outputs(taps.to_vec());
    truncated.remove_dead_nodes();
    Ok(run_rows(&truncated, calibration, taps, label)?.1)
}

/// A value that a run computed earlier on every calibration batch, as
/// rows, fed to a later run in place of the nodes that produce it.
pub type Seed<'a> = (ValueId, &'a Rows);

/// Runs the part of `graph` that computes `taps`, like [`run_taps`], but
/// takes the values of `seeds` as given: each becomes a graph input, so
/// the nodes that only feed seeds do not run again. The seeds must have
/// been computed on the same calibration batches by nodes that have not
/// changed since. Taps that are seeds return their rows as they are.
pub fn run_taps_seeded(graph: &Graph, calibration: &Calibration, taps: &[ValueId], seeds: &[Seed], label: &str) -> Result<Vec<Rows>> {
    let seeded: HashMap<ValueId, &Rows> = seeds.iter().copied().collect();
    let mut computed: Vec<ValueId> = Vec::new();
    for &tap in taps {
        if !seeded.contains_key(&tap) && !computed.contains(&tap) {
            computed.push(tap);
        }
    }
    let mut rows: HashMap<ValueId, Rows> = HashMap::new();
    if !computed.is_empty() {
        let mut cut = graph.clone();
        let mut feeds = Vec::with_capacity(seeds.len());
        for &(value, values) in seeds {
            let input = cut.add_input(format!("{}/seed", cut.value(value).name), cut.fact(value).clone());
            cut.replace_all_uses(value, input);
            feeds.push(values);
        }
        cut.set_outputs(computed.clone());
        cut.remove_dead_nodes();
        let (_, results) = run_rows_fed(&cut, calibration, &feeds, &computed, label)?;
        rows.extend(computed.into_iter().zip(results));
    }
    taps.iter()
        .map(|tap| match rows.get(tap) {
            Some(values) => Ok(values.clone()),
            None => Ok(seeded[tap].clone()),
        })
        .collect()
}

/// The per-batch inputs of a run: the calibration batch for the graph's
/// first input and a slice of fed rows for each input after it.
struct Feeds<'a> {
    /// Rows of each extra input and the elements that one batch takes.
    extra: Vec<(&'a Rows, Vec<usize>)>,
}

impl<'a> Feeds<'a> {
    fn new(graph: &Graph, calibration: &Calibration, feeds: &[&'a Rows]) -> Result<Feeds<'a>> {
        let inputs = graph.inputs();
        if inputs.len() != feeds.len() + 1 {
            return Err(Error::Internal(format!("a calibration run has {} inputs for {} feeds", inputs.len(), feeds.len())));
        }
        let mut extra = Vec::with_capacity(feeds.len());
        for (&rows, &input) in feeds.iter().zip(&inputs[1..]) {
            let shape = graph.fact(input).shape.clone();
            let per_batch: usize = shape.iter().product();
            if rows.data.len() != per_batch * calibration.batches.len() {
                return Err(Error::Internal(format!(
                    "fed value '{}' has {} elements, not {per_batch} for each of {} batches",
                    graph.value(input).name,
                    rows.data.len(),
                    calibration.batches.len()
                )));
            }
            extra.push((rows, shape));
        }
        Ok(Feeds { extra })
    }

    /// Returns the extra inputs of batch `index` as flat slices.
    fn slices(&self, index: usize) -> Vec<&'a [f32]> {
        self.extra
            .iter()
            .map(|(rows, shape)| {
                let len: usize = shape.iter().product();
                &rows.data[index * len..(index + 1) * len]
            })
            .collect()
    }
}

/// The graph compiled with its first output and the taps as outputs.
struct JitRunner {
    jit: JitModel,
    pool: ThreadPool,
    /// Output buffers, and the row width of each.
    buffers: Vec<Vec<f32>>,
    widths: Vec<usize>,
    /// Output index of each tap.
    tap_outputs: Vec<usize>,
}

impl JitRunner {
    fn new(graph: &Graph, taps: &[ValueId]) -> Result<JitRunner> {
        let first = *graph.outputs().first().ok_or_else(|| Error::Compress("the model has no outputs".into()))?;
        let mut outputs = vec![first];
        let mut tap_outputs = Vec::with_capacity(taps.len());
        for &tap in taps {
            match outputs.iter().position(|&o| o == tap) {
                Some(index) => tap_outputs.push(index),
                None => {
                    outputs.push(tap);
                    tap_outputs.push(outputs.len() - 1);
                }
            }
        }
        let mut tapped = graph.clone();
        tapped.set_outputs(outputs.clone());
        let program = Program::lower(&tapped)?;
        let jit = JitModel::compile(&program, "calibration")?;
        let pool = ThreadPool::new(0).map_err(|e| Error::Internal(format!("cannot start a thread pool: {e}")))?;
        let buffers = outputs.iter().map(|&v| vec![0.0; graph.fact(v).numel()]).collect();
        let widths = outputs.iter().map(|&v| graph.fact(v).shape.last().copied().unwrap_or(1)).collect();
        Ok(JitRunner { jit, pool, buffers, widths, tap_outputs })
    }

    fn run(&mut self, calibration: &Calibration, feeds: &Feeds, label: &str) -> Result<(Rows, Vec<Rows>)> {
        let progress = progress_bar(calibration.batches.len(), label);
        let mut collected: Vec<Rows> = self.widths.iter().map(|&cols| Rows { data: Vec::new(), cols }).collect();
        for (index, batch) in calibration.batches.iter().enumerate() {
            let array = batch.as_f32().ok_or_else(|| Error::Compress("calibration batches must be f32".into()))?;
            let input: Vec<f32> = array.iter().copied().collect();
            let mut inputs = vec![input.as_slice()];
            inputs.extend(feeds.slices(index));
            let mut outputs: Vec<&mut [f32]> = self.buffers.iter_mut().map(|b| b.as_mut_slice()).collect();
            self.jit
                .model
                .run(&inputs, &mut outputs, Some(&self.pool))
                .map_err(|e| Error::Internal(format!("calibration run failed: {e}")))?;
            for (rows, buffer) in collected.iter_mut().zip(&self.buffers) {
                rows.data.extend_from_slice(buffer);
            }
            progress.inc(1);
        }
        progress.finish_and_clear();
        let tapped = self.tap_outputs.iter().map(|&i| collected[i].clone()).collect();
        Ok((collected.swap_remove(0), tapped))
    }
}

fn run_rows_interpreted(
    graph: &Graph,
    calibration: &Calibration,
    feeds: &Feeds,
    taps: &[ValueId],
    label: &str,
) -> Result<(Rows, Vec<Rows>)> {
    let progress = progress_bar(calibration.batches.len(), label);
    let mut outputs = Rows::default();
    let mut tapped = vec![Rows::default(); taps.len()];
    for (index, batch) in calibration.batches.iter().enumerate() {
        let mut inputs = vec![(graph.inputs()[0], batch.clone())];
        for ((slice, (_, shape)), &input) in feeds.slices(index).into_iter().zip(&feeds.extra).zip(&graph.inputs()[1..]) {
            let array = ArrayD::from_shape_vec(IxDyn(shape), slice.to_vec()).map_err(|e| Error::Internal(e.to_string()))?;
            inputs.push((input, Tensor::F32(array)));
        }
        let (results, values) = run_with_taps(graph, &inputs, taps)?;
        let first = results.first().ok_or_else(|| Error::Compress("the model has no outputs".into()))?;
        outputs.push(first, &graph.value(graph.outputs()[0]).name)?;
        for ((rows, tensor), &tap) in tapped.iter_mut().zip(&values).zip(taps) {
            rows.push(tensor, &graph.value(tap).name)?;
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok((outputs, tapped))
}

pub(super) fn progress_bar(len: usize, label: &str) -> ProgressBar {
    // indicatif hides the bar when stderr is not a terminal.
    let bar = ProgressBar::new(len as u64);
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} [{bar:20}] {pos}/{len} batches").expect("template is valid"));
    bar.set_message(label.to_string());
    bar
}
