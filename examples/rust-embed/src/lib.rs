//! The MNIST ViT of `models/mnist-vit`, compiled into this crate at build time
//! by `build.rs` with the vitc library and run through [`vitc_runtime::Model`].
//!
//! The binary (`src/main.rs`) is a thin wrapper around [`run`], so tests can
//! check what it prints without starting a process.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use vitc_runtime::{Model, RuntimeError, ThreadPool};

/// Declarations of the generated functions and `model_info()`, written by
/// `build.rs` from the build report.
mod bindings {
    include!(concat!(env!("OUT_DIR"), "/mnist_vit.rs"));
}

pub use bindings::model_info;

/// Bytes of one 28x28 grayscale image.
pub const IMAGE_BYTES: usize = 28 * 28;

/// Mean and standard deviation of the MNIST training pixels scaled to [0, 1],
/// as in the training pipeline.
const PIXEL_MEAN: f32 = 0.1307;
const PIXEL_STD: f32 = 0.3081;

/// Error of the example: invalid input files or a failed model run.
#[derive(Debug)]
pub enum ExampleError {
    /// A file could not be read.
    Io { path: PathBuf, source: std::io::Error },
    /// The image file is empty or its size is not a multiple of 784 bytes.
    ImageFileSize { path: PathBuf, bytes: usize },
    /// The labels file does not contain one label from 0 to 9 per image.
    InvalidLabels { path: PathBuf, message: String },
    /// The runtime rejected a call or the model returned an error.
    Runtime(RuntimeError),
}

impl fmt::Display for ExampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExampleError::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            ExampleError::ImageFileSize { path, bytes } => write!(
                f,
                "{} has {bytes} bytes; expected a positive multiple of {IMAGE_BYTES} (28x28 u8 images)",
                path.display()
            ),
            ExampleError::InvalidLabels { path, message } => write!(f, "{}: {message}", path.display()),
            ExampleError::Runtime(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for ExampleError {}

impl From<RuntimeError> for ExampleError {
    fn from(error: RuntimeError) -> ExampleError {
        ExampleError::Runtime(error)
    }
}

/// Creates the compiled model and allocates its arena.
pub fn load_model() -> Result<Model, RuntimeError> {
    // SAFETY: `build.rs` generated `ENTRY` and `model_info()` from the same
    // build, so the entry point reads and writes exactly the tensors that the
    // info describes and uses at most its arena size. Generated code keeps no
    // thread-local state, so any thread may call it.
    unsafe { Model::new(model_info(), bindings::ENTRY) }
}

/// Turns 784 pixels into the model input: scaled to [0, 1], then normalized.
///
/// The arithmetic is the same f32 sequence as in `examples/c/classify.c` and
/// `scripts/make_mnist.py`, so all three produce the same bits.
pub fn normalize(pixels: &[u8]) -> Vec<f32> {
    pixels.iter().map(|&p| (p as f32 / 255.0 - PIXEL_MEAN) / PIXEL_STD).collect()
}

/// Index of the largest logit; the first one wins a tie.
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (index, &logit) in logits.iter().enumerate() {
        if logit > logits[best] {
            best = index;
        }
    }
    best
}

/// Reads a file of 28x28 u8 images stored back to back.
pub fn read_images(path: &Path) -> Result<Vec<u8>, ExampleError> {
    let bytes = std::fs::read(path).map_err(|source| ExampleError::Io { path: path.into(), source })?;
    if bytes.is_empty() || bytes.len() % IMAGE_BYTES != 0 {
        return Err(ExampleError::ImageFileSize { path: path.into(), bytes: bytes.len() });
    }
    Ok(bytes)
}

/// Reads `count` labels from 0 to 9, separated by white space.
pub fn read_labels(path: &Path, count: usize) -> Result<Vec<usize>, ExampleError> {
    let text = std::fs::read_to_string(path).map_err(|source| ExampleError::Io { path: path.into(), source })?;
    let invalid = |message: String| ExampleError::InvalidLabels { path: path.into(), message };
    let mut labels = Vec::with_capacity(count);
    for (index, word) in text.split_whitespace().enumerate() {
        match word.parse::<usize>() {
            Ok(label) if label <= 9 => labels.push(label),
            _ => return Err(invalid(format!("label {index} is '{word}'; expected a digit from 0 to 9"))),
        }
    }
    if labels.len() != count {
        return Err(invalid(format!("found {} labels; expected one per image, {count} in all", labels.len())));
    }
    Ok(labels)
}

/// Runs the model on each image and returns the predicted digits.
pub fn classify(model: &mut Model, pool: Option<&ThreadPool>, images: &[u8]) -> Result<Vec<usize>, RuntimeError> {
    let mut predictions = Vec::with_capacity(images.len() / IMAGE_BYTES);
    for image in images.chunks(IMAGE_BYTES) {
        let logits = model.run_simple(&normalize(image), pool)?;
        predictions.push(argmax(&logits));
    }
    Ok(predictions)
}

/// Does what the binary does: classifies the images in `images_path`, and
/// returns one line per image and, with `labels_path`, the accuracy.
pub fn run(images_path: &Path, labels_path: Option<&Path>) -> Result<String, ExampleError> {
    let images = read_images(images_path)?;
    let count = images.len() / IMAGE_BYTES;
    let labels = labels_path.map(|path| read_labels(path, count)).transpose()?;

    let mut model = load_model()?;
    let pool = ThreadPool::new(0)?;
    let predictions = classify(&mut model, Some(&pool), &images)?;

    let mut text = String::new();
    let mut correct = 0;
    for (index, &predicted) in predictions.iter().enumerate() {
        // Writing to a String cannot fail.
        match &labels {
            Some(labels) => {
                correct += usize::from(predicted == labels[index]);
                writeln!(text, "image {index}: predicted {predicted}, label {}", labels[index]).unwrap();
            }
            None => writeln!(text, "image {index}: predicted {predicted}").unwrap(),
        }
    }
    if labels.is_some() {
        let percent = 100.0 * correct as f64 / count as f64;
        writeln!(text, "accuracy: {correct}/{count} ({percent:.2}%)").unwrap();
    }
    Ok(text)
}
