//! Labeled datasets for `vitc eval`: where samples and labels come from and
//! how each sample becomes one model input.
//!
//! Three layouts are read:
//!
//! - a `.npy` array of samples, with the labels in a second `.npy` file;
//! - an `.npz` archive with an `images` array and a `labels` array;
//! - a folder with one subfolder per class holding PNG or JPEG files. The
//!   sorted subfolder names give the class indices 0, 1, 2, ...
//!
//! A sample array is either preprocessed already (f32 or f64, shaped like
//! one model input) and passed through unchanged, or u8 pixels that
//! [`Preprocess`] turns into model inputs. u8 arrays must already have the
//! input's height and width. Image files are resized to it on load.
//!
//! Arrays are read into memory whole. Image files are decoded batch by batch
//! as the evaluation reads them, so a folder dataset keeps at most one batch
//! of decoded images in memory.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn, OwnedRepr};
use ndarray_npy::{NpzReader, ReadNpyError, ReadNpzError};

use crate::data::{ImageLayout, Normalize, NpyHeader, load_image_with, read_npy, read_npy_header, read_npy_rows};
use crate::tensor::{ShapeDisplay, Tensor};

/// A dataset that cannot be read or does not fit the model.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{what} {} not found", path.display())]
    NotFound { what: &'static str, path: PathBuf },

    #[error("cannot read {}: {message}", path.display())]
    Read { path: PathBuf, message: String },

    #[error("{} is not a dataset vitc eval reads: pass a .npy file, an .npz file or a folder with one subfolder per class", path.display())]
    Format { path: PathBuf },

    #[error("dataset {} is empty: {reason}", path.display())]
    Empty { path: PathBuf, reason: String },

    #[error("{} contains samples without labels: pass their labels with --labels FILE.npy", path.display())]
    MissingLabels { path: PathBuf },

    #[error("--labels applies only to a .npy dataset; {} carries its own labels", path.display())]
    UnexpectedLabels { path: PathBuf },

    #[error("{labels_location} has {labels} labels but {data_location} has {samples} samples; pass exactly one label per sample")]
    LabelCount { labels_location: String, labels: usize, data_location: String, samples: usize },

    #[error("{}: {count} label(s) are outside [0, {classes}), the classes of a model with {classes} outputs; the first is {label}, of sample {index}", path.display())]
    LabelOutOfRange { path: PathBuf, count: usize, index: usize, label: i64, classes: usize },

    #[error("{} has {folders} class subfolders but the model outputs only {classes} classes", path.display())]
    TooManyClasses { path: PathBuf, folders: usize, classes: usize },

    #[error("{location}: expected {expected}, got shape {}", ShapeDisplay(found))]
    Shape { location: String, expected: String, found: Vec<usize> },

    #[error("{location}: element type {dtype} is not supported; expected {expected}")]
    DType { location: String, dtype: String, expected: &'static str },

    #[error("{} has no array named '{name}'; its arrays are: {available}", path.display())]
    MissingArray { path: PathBuf, name: &'static str, available: String },

    #[error("the model input has shape {}, but images feed only an input of shape [N, C, H, W] with C = 1 (grayscale) or 3 (RGB); pass preprocessed f32 samples in a .npy file instead", ShapeDisplay(shape))]
    NotImageInput { shape: Vec<usize> },

    #[error("invalid normalization: {0}")]
    InvalidNormalize(String),

    /// A `.npy` file or an image that `crate::data` failed to read. The
    /// message names the file.
    #[error(transparent)]
    Data(#[from] crate::Error),
}

type Result<T, E = DatasetError> = std::result::Result<T, E>;

/// Element types accepted for samples, as listed in error messages.
const SAMPLE_DTYPES: &str = "u8 images, or f32 or f64 samples that are already preprocessed";
/// Element types accepted for labels, as listed in error messages.
const LABEL_DTYPES: &str = "integer labels (i64, i32, i8 or u8)";

/// Per-channel mean and standard deviation requested by the user. A value
/// left at `None` takes the default for the input's channel count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NormalizeOptions {
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
    /// Resizing and channel order of image files.
    pub layout: ImageLayout,
}

/// Preprocessing that turns an image into one model input of shape
/// `[channels, height, width]`: resizing (image files only), conversion
/// between grayscale and RGB, scaling to [0, 1] and per-channel
/// normalization with `(x - mean) / std`.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub normalize: Normalize,
    pub layout: ImageLayout,
}

impl Preprocess {
    /// Builds the preprocessing for a model sample of shape `[C, H, W]`.
    ///
    /// Without an override, 3-channel inputs are normalized with the
    /// ImageNet statistics and 1-channel inputs are left in [0, 1].
    pub fn for_sample(sample_shape: &[usize], options: &NormalizeOptions) -> Result<Preprocess> {
        let &[channels, height, width] = sample_shape else {
            return Err(DatasetError::NotImageInput { shape: sample_shape.to_vec() });
        };
        if channels != 1 && channels != 3 {
            return Err(DatasetError::NotImageInput { shape: sample_shape.to_vec() });
        }

        let default = if channels == 3 { Normalize::imagenet() } else { Normalize::identity(channels) };
        let normalize = Normalize {
            mean: options.mean.clone().unwrap_or(default.mean),
            std: options.std.clone().unwrap_or(default.std),
        };
        if normalize.mean.len() != channels || normalize.std.len() != channels {
            return Err(DatasetError::InvalidNormalize(format!(
                "--mean and --std need {channels} value(s), one per input channel; got {} and {}",
                normalize.mean.len(),
                normalize.std.len()
            )));
        }
        if normalize.mean.iter().any(|m| !m.is_finite()) {
            return Err(DatasetError::InvalidNormalize(format!("--mean values must be finite, got {:?}", normalize.mean)));
        }
        if normalize.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            return Err(DatasetError::InvalidNormalize(format!(
                "--std values must be finite and nonzero, got {:?}",
                normalize.std
            )));
        }
        Ok(Preprocess { channels, height, width, normalize, layout: options.layout })
    }

    /// Number of f32 values in one preprocessed sample.
    pub fn sample_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Converts one image of `height x width` u8 pixels with `channels_in`
    /// interleaved channels (1 or 3) into a planar `[C, H, W]` sample.
    ///
    /// Grayscale becomes RGB by repeating the value. RGB becomes grayscale
    /// with the integer Rec. 709 luma that `image` 0.25's `to_luma8` uses,
    /// so arrays and image files give the same inputs.
    pub fn convert_pixels(&self, pixels: &[u8], channels_in: usize, out: &mut [f32]) {
        let plane = self.height * self.width;
        debug_assert_eq!(pixels.len(), plane * channels_in);
        debug_assert_eq!(out.len(), plane * self.channels);
        for (position, pixel) in pixels.chunks_exact(channels_in).enumerate() {
            let rgb = match channels_in {
                1 => [pixel[0]; 3],
                _ => [pixel[0], pixel[1], pixel[2]],
            };
            let gray = match channels_in {
                1 => pixel[0],
                _ => luma(rgb),
            };
            for c in 0..self.channels {
                let value = if self.channels == 1 { gray } else { rgb[c] };
                let scaled = value as f32 / 255.0;
                out[c * plane + position] = (scaled - self.normalize.mean[c]) / self.normalize.std[c];
            }
        }
    }
}

/// Rec. 709 luma of an sRGB pixel, computed as `image` 0.25 does:
/// `(2126 R + 7152 G + 722 B) / 10000`, truncated.
fn luma([r, g, b]: [u8; 3]) -> u8 {
    ((2126 * r as u32 + 7152 * g as u32 + 722 * b as u32) / 10000) as u8
}

/// Storage of a dataset's samples.
enum Samples {
    /// Preprocessed samples, one after another.
    Preprocessed(Vec<f32>),
    /// u8 images with interleaved channels, one after another.
    Pixels { data: Vec<u8>, channels: usize, preprocess: Preprocess },
    /// Image files, decoded when their batch is loaded.
    Files { paths: Vec<PathBuf>, preprocess: Preprocess },
}

/// A labeled dataset whose samples fit one model input each.
pub struct Dataset {
    path: PathBuf,
    /// Source file (or folder) of the labels, for error messages.
    labels_path: PathBuf,
    samples: Samples,
    labels: Vec<i64>,
    /// Class subfolder names of a folder dataset, by class index.
    class_names: Option<Vec<String>>,
    sample_len: usize,
    /// Files in class subfolders that are not PNG or JPEG images.
    ignored_files: usize,
}

impl Dataset {
    /// Opens the dataset at `path` for a model whose input sample (the input
    /// shape without its batch dimension) is `sample_shape`.
    ///
    /// `labels` is required for a `.npy` dataset and rejected for the
    /// others. `normalize` applies to u8 arrays and image files only.
    pub fn open(path: &Path, labels: Option<&Path>, sample_shape: &[usize], normalize: &NormalizeOptions) -> Result<Dataset> {
        Dataset::open_first(path, labels, sample_shape, normalize, None)
    }

    /// Opens the dataset like [`Dataset::open`] but keeps only its first
    /// `limit` samples. Of an `.npy` or `.npz`, only those samples and
    /// labels are read, after a check of the declared counts.
    pub fn open_first(
        path: &Path,
        labels: Option<&Path>,
        sample_shape: &[usize],
        normalize: &NormalizeOptions,
        limit: Option<usize>,
    ) -> Result<Dataset> {
        if !path.exists() {
            return Err(DatasetError::NotFound { what: "dataset", path: path.to_path_buf() });
        }
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let mut dataset = if path.is_dir() {
            if labels.is_some() {
                return Err(DatasetError::UnexpectedLabels { path: path.to_path_buf() });
            }
            open_folder(path, sample_shape, normalize, true)?
        } else if extension == "npy" {
            let labels = labels.ok_or_else(|| DatasetError::MissingLabels { path: path.to_path_buf() })?;
            open_npy(path, labels, sample_shape, normalize, limit)?
        } else if extension == "npz" {
            if labels.is_some() {
                return Err(DatasetError::UnexpectedLabels { path: path.to_path_buf() });
            }
            open_npz(path, sample_shape, normalize, true, limit)?
        } else {
            return Err(DatasetError::Format { path: path.to_path_buf() });
        };

        // A folder and an array layout that is read whole still contain
        // every sample here.
        if let Some(limit) = limit {
            dataset.truncate(limit);
        }
        Ok(dataset)
    }

    /// Opens samples whose labels are not needed, such as calibration data:
    /// a `.npy` of samples needs no labels file, an `.npz` no `labels`
    /// array, and a folder may contain its images directly, without class
    /// subfolders. Samples without a label get label 0. Of an `.npy` or
    /// `.npz`, only the first `max_samples` are read.
    pub fn open_unlabeled(path: &Path, sample_shape: &[usize], normalize: &NormalizeOptions, max_samples: usize) -> Result<Dataset> {
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if extension == "npz" && path.is_file() {
            return open_npz(path, sample_shape, normalize, false, Some(max_samples));
        }
        if path.is_dir() {
            return open_folder(path, sample_shape, normalize, false);
        }
        if extension != "npy" || !path.is_file() {
            return Dataset::open(path, None, sample_shape, normalize);
        }
        let samples = crate::data::read_npy_rows(path, max_samples)?;
        let count = samples.shape().first().copied().unwrap_or(0);
        from_arrays(path, path, &path.display().to_string(), samples, vec![0; count], sample_shape, normalize)
    }

    /// Returns the dataset file or folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of f32 values in one sample.
    pub fn sample_len(&self) -> usize {
        self.sample_len
    }

    /// Returns true when samples go to the model unchanged, so that
    /// `--mean` and `--std` do not apply.
    pub fn is_preprocessed(&self) -> bool {
        matches!(self.samples, Samples::Preprocessed(_))
    }

    /// Class subfolder names of a folder dataset, by class index.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    /// Number of files in class subfolders that were skipped because they
    /// are not PNG or JPEG images.
    pub fn ignored_files(&self) -> usize {
        self.ignored_files
    }

    /// Keeps only the first `limit` samples.
    pub fn truncate(&mut self, limit: usize) {
        if limit >= self.len() {
            return;
        }
        self.labels.truncate(limit);
        match &mut self.samples {
            Samples::Preprocessed(data) => data.truncate(limit * self.sample_len),
            Samples::Pixels { data, channels, preprocess } => {
                data.truncate(limit * preprocess.height * preprocess.width * *channels)
            }
            Samples::Files { paths, .. } => paths.truncate(limit),
        }
    }

    /// Returns the labels as class indices of a model with `classes`
    /// outputs, or an error if any label is outside `[0, classes)`.
    pub fn class_indices(&self, classes: usize) -> Result<Vec<usize>> {
        if let Some(names) = &self.class_names
            && names.len() > classes
        {
            return Err(DatasetError::TooManyClasses { path: self.path.clone(), folders: names.len(), classes });
        }

        let out_of_range = |label: i64| label < 0 || label as u64 >= classes as u64;
        let count = self.labels.iter().filter(|&&label| out_of_range(label)).count();
        if let Some((index, &label)) = self.labels.iter().enumerate().find(|(_, label)| out_of_range(**label)) {
            return Err(DatasetError::LabelOutOfRange { path: self.labels_path.clone(), count, index, label, classes });
        }
        Ok(self.labels.iter().map(|&label| label as usize).collect())
    }

    /// Writes the preprocessed samples `range` one after another into `out`,
    /// which must have exactly `range.len() * sample_len()` values.
    pub fn load_batch(&self, range: Range<usize>, out: &mut [f32]) -> Result<()> {
        assert_eq!(out.len(), range.len() * self.sample_len, "load_batch: output length does not match the range");
        let len = self.sample_len;
        match &self.samples {
            Samples::Preprocessed(data) => {
                out.copy_from_slice(&data[range.start * len..range.end * len]);
            }
            Samples::Pixels { data, channels, preprocess } => {
                let pixels_len = preprocess.height * preprocess.width * channels;
                for (sample, target) in range.zip(out.chunks_exact_mut(len)) {
                    let pixels = &data[sample * pixels_len..(sample + 1) * pixels_len];
                    preprocess.convert_pixels(pixels, *channels, target);
                }
            }
            Samples::Files { paths, preprocess } => {
                let Preprocess { channels, height, width, normalize, layout } = preprocess;
                for (sample, target) in range.zip(out.chunks_exact_mut(len)) {
                    let image = load_image_with(&paths[sample], *channels, *height, *width, normalize, layout)?;
                    let image = image.as_f32().expect("load_image returns an f32 tensor");
                    for (to, from) in target.iter_mut().zip(image.iter()) {
                        *to = *from;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Opens a `.npy` of samples with its labels in another `.npy`. With
/// `limit`, only the first `limit` rows of each are read, once their headers
/// declare the same number of rows.
fn open_npy(
    path: &Path,
    labels_path: &Path,
    sample_shape: &[usize],
    normalize: &NormalizeOptions,
    limit: Option<usize>,
) -> Result<Dataset> {
    if !labels_path.exists() {
        return Err(DatasetError::NotFound { what: "labels file", path: labels_path.to_path_buf() });
    }
    // A shape error then shows the shape of the rows read, so the location
    // names how many rows were read.
    let read_note = limit.map_or(String::new(), |n| format!(" (first {n} rows read)"));
    let location = format!("{}{read_note}", path.display());
    let (samples, labels) = match limit {
        None => (read_npy(path)?, read_npy(labels_path)?),
        Some(limit) => {
            let rows = |file: &Path| -> Result<Option<usize>> { Ok(read_npy_header(file)?.and_then(|h| h.rows())) };
            if let (Some(samples), Some(labels)) = (rows(path)?, rows(labels_path)?)
                && samples != labels
            {
                return Err(label_count_error(labels_path, path, labels, samples));
            }
            (read_npy_rows(path, limit)?, read_npy_rows(labels_path, limit)?)
        }
    };
    let labels = labels_from_tensor(labels, &format!("{}{read_note}", labels_path.display()))?;
    from_arrays(path, labels_path, &location, samples, labels, sample_shape, normalize)
}

/// Opens an `.npz` with an `images` and a `labels` array. Without
/// `need_labels` the `labels` array is not read (it may be missing) and
/// every sample gets label 0. With `max_samples`, only the first
/// `max_samples` images (and labels) are decompressed, once the headers
/// declare as many labels as images.
fn open_npz(path: &Path, sample_shape: &[usize], normalize: &NormalizeOptions, need_labels: bool, max_samples: Option<usize>) -> Result<Dataset> {
    let read_error = |message: String| DatasetError::Read { path: path.to_path_buf(), message };
    let file = File::open(path).map_err(|e| read_error(e.to_string()))?;
    let mut reader = NpzReader::new(file).map_err(|e| read_error(format!("not a valid .npz archive: {e}")))?;
    let names = reader.names().map_err(|e| read_error(e.to_string()))?;
    let has = |name: &str| names.iter().any(|n| n == name);
    let required: &[&'static str] = if need_labels { &["images", "labels"] } else { &["images"] };
    for &name in required {
        if !has(name) {
            let available = if names.is_empty() { "none".to_string() } else { names.join(", ") };
            return Err(DatasetError::MissingArray { path: path.to_path_buf(), name, available });
        }
    }

    let location = |name: &str, rows_read: bool| match max_samples {
        Some(n) if rows_read => format!("{}, array '{name}' (first {n} rows read)", path.display()),
        _ => format!("{}, array '{name}'", path.display()),
    };
    let (images_header, images) = npz_member_rows(path, "images", max_samples)?;
    let images_location = location("images", images.is_some());
    let images = match images {
        Some(images) => images,
        None => read_npz_array(&mut reader, path, "images", &images_location)?,
    };
    // Calibration needs no labels.
    let labels = if need_labels {
        let (labels_header, labels) = npz_member_rows(path, "labels", max_samples)?;
        let labels_location = location("labels", labels.is_some());
        let declared = (images_header.and_then(|h| h.rows()), labels_header.and_then(|h| h.rows()));
        if let (Some(samples), Some(labels)) = declared
            && samples != labels
        {
            return Err(label_count_error(path, path, labels, samples));
        }
        let labels = match labels {
            Some(labels) => labels,
            None => read_npz_array(&mut reader, path, "labels", &labels_location)?,
        };
        labels_from_tensor(labels, &labels_location)?
    } else {
        vec![0; images.shape().first().copied().unwrap_or(0)]
    };
    from_arrays(path, path, &images_location, images, labels, sample_shape, normalize)
}

/// Checks that the `.npz` member `name` contains as much data as its header
/// declares (see [`crate::data::check_npy_length`]) and returns the header
/// (`None` when malformed) and, with `max_rows`, the first rows,
/// decompressing no more than those (`None` for a layout that
/// [`crate::data::npy_rows_from`] does not read).
fn npz_member_rows(path: &Path, name: &str, max_rows: Option<usize>) -> Result<(Option<NpyHeader>, Option<Tensor>)> {
    let read_error = |message: String| DatasetError::Read { path: path.to_path_buf(), message };
    let file = File::open(path).map_err(|e| read_error(e.to_string()))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| read_error(format!("not a valid .npz archive: {e}")))?;
    let member = if archive.index_for_name(&format!("{name}.npy")).is_some() { format!("{name}.npy") } else { name.to_string() };
    let mut entry = archive.by_name(&member).map_err(|e| read_error(format!("array '{name}': {e}")))?;
    let size = entry.size();
    let header =
        crate::data::check_npy_length(&mut entry, size).map_err(|message| read_error(format!("array '{name}': {message}")))?;
    if let (Some(parsed), Some(max_rows)) = (&header, max_rows) {
        let rows = crate::data::npy_rows_from(&mut entry, parsed, max_rows).map_err(|e| read_error(format!("array '{name}': {e}")))?;
        if rows.is_some() {
            return Ok((header, rows));
        }
    }
    drop(entry);

    // A full read follows, and ndarray-npy allocates the size that the
    // header declares, which the check above took from the archive. So the
    // member is decompressed once to check that it contains that much.
    let mut entry = archive.by_name(&member).map_err(|e| read_error(format!("array '{name}': {e}")))?;
    let damaged = |found: String| {
        read_error(format!(
            "array '{name}': the archive declares {size} bytes but the member {found}; the file is damaged, so write it again"
        ))
    };
    match std::io::copy(&mut entry, &mut std::io::sink()) {
        Ok(held) if held == size => {}
        Ok(held) => return Err(damaged(format!("contains {held}"))),
        Err(error) => return Err(damaged(format!("cannot be read in full ({error})"))),
    }
    Ok((header, None))
}

/// Reads one array of an `.npz`, whatever its element type. The caller
/// checks its length with [`npz_member_rows`] first.
fn read_npz_array(reader: &mut NpzReader<File>, path: &Path, name: &str, location: &str) -> Result<Tensor> {
    // Try the element types in turn, as `crate::data::read_npy` does:
    // ndarray-npy rejects a mismatched dtype before reading the data.
    macro_rules! try_type {
        ($t:ty, $variant:ident) => {
            match reader.by_name::<OwnedRepr<$t>, IxDyn>(name) {
                Ok(array) => return Ok(Tensor::$variant(array)),
                Err(ReadNpzError::Npy(ReadNpyError::WrongDescriptor(_))) => {}
                Err(e) => {
                    return Err(DatasetError::Read { path: path.to_path_buf(), message: format!("array '{name}': {e}") });
                }
            }
        };
    }
    try_type!(f32, F32);
    try_type!(f64, F64);
    try_type!(u8, U8);
    try_type!(i64, I64);
    try_type!(i32, I32);
    try_type!(i8, I8);
    try_type!(bool, Bool);
    Err(DatasetError::DType {
        location: location.to_string(),
        dtype: "not one of f32, f64, u8, i64, i32, i8, bool".to_string(),
        expected: SAMPLE_DTYPES,
    })
}

/// Turns a labels array of shape `[N]` or `[N, 1]` into integers.
fn labels_from_tensor(labels: Tensor, location: &str) -> Result<Vec<i64>> {
    let shape = labels.shape().to_vec();
    if !(shape.len() == 1 || (shape.len() == 2 && shape[1] == 1)) {
        return Err(DatasetError::Shape {
            location: location.to_string(),
            expected: "one label per sample, shape [N] or [N, 1]".to_string(),
            found: shape,
        });
    }
    match labels {
        Tensor::I64(_) | Tensor::I32(_) | Tensor::I8(_) | Tensor::U8(_) => Ok(labels.to_i64_vec()),
        other => Err(DatasetError::DType {
            location: location.to_string(),
            dtype: other.dtype().to_string(),
            expected: LABEL_DTYPES,
        }),
    }
}

/// Labels and samples that differ in number. When both come from one
/// `.npz`, the message names its two arrays rather than the file twice.
fn label_count_error(labels_path: &Path, data_path: &Path, labels: usize, samples: usize) -> DatasetError {
    let (labels_location, data_location) = if labels_path == data_path {
        (format!("{}, array 'labels',", data_path.display()), "array 'images'".to_string())
    } else {
        (labels_path.display().to_string(), data_path.display().to_string())
    };
    DatasetError::LabelCount { labels_location, labels, data_location, samples }
}

/// Builds a dataset from a samples array and its labels.
fn from_arrays(
    path: &Path,
    labels_path: &Path,
    location: &str,
    samples: Tensor,
    labels: Vec<i64>,
    sample_shape: &[usize],
    normalize: &NormalizeOptions,
) -> Result<Dataset> {
    let count = samples.shape().first().copied().unwrap_or(0);
    if samples.shape().is_empty() {
        return Err(DatasetError::Shape {
            location: location.to_string(),
            expected: "an array of samples, [N, ...]".to_string(),
            found: Vec::new(),
        });
    }
    if count == 0 {
        return Err(DatasetError::Empty { path: path.to_path_buf(), reason: format!("{location} has no samples") });
    }
    if labels.len() != count {
        return Err(label_count_error(labels_path, path, labels.len(), count));
    }

    let (samples, sample_len) = match samples {
        Tensor::F32(array) => preprocessed_samples(array, location, sample_shape)?,
        Tensor::F64(array) => preprocessed_samples(array.mapv(|v| v as f32), location, sample_shape)?,
        Tensor::U8(array) => pixel_samples(array, location, sample_shape, normalize)?,
        other => {
            return Err(DatasetError::DType {
                location: location.to_string(),
                dtype: other.dtype().to_string(),
                expected: SAMPLE_DTYPES,
            });
        }
    };
    Ok(Dataset {
        path: path.to_path_buf(),
        labels_path: labels_path.to_path_buf(),
        samples,
        labels,
        class_names: None,
        sample_len,
        ignored_files: 0,
    })
}

/// Checks that preprocessed samples have the model's sample shape. For a
/// 1-channel `[1, H, W]` input, `[N, H, W]` is accepted too.
fn preprocessed_samples(array: ArrayD<f32>, location: &str, sample_shape: &[usize]) -> Result<(Samples, usize)> {
    let found = &array.shape()[1..];
    let without_channel = sample_shape.len() == 3 && sample_shape[0] == 1 && found == &sample_shape[1..];
    if found != sample_shape && !without_channel {
        return Err(DatasetError::Shape {
            location: location.to_string(),
            expected: format!(
                "preprocessed samples shaped like the model input, [N, {}]",
                sample_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
            ),
            found: array.shape().to_vec(),
        });
    }
    let sample_len = sample_shape.iter().product();
    Ok((Samples::Preprocessed(array.iter().copied().collect()), sample_len))
}

/// Checks that u8 images `[N, H, W]` or `[N, H, W, C]` have the model
/// input's height and width and 1 or 3 channels.
fn pixel_samples(
    array: ArrayD<u8>,
    location: &str,
    sample_shape: &[usize],
    normalize: &NormalizeOptions,
) -> Result<(Samples, usize)> {
    let preprocess = Preprocess::for_sample(sample_shape, normalize)?;
    let (height, width) = (preprocess.height, preprocess.width);
    let shape_error = |expected: String| DatasetError::Shape {
        location: location.to_string(),
        expected,
        found: array.shape().to_vec(),
    };

    let channels = match array.shape() {
        [_, _, _] => 1,
        [_, _, _, channels] => *channels,
        _ => {
            return Err(shape_error(format!(
                "u8 images [N, H, W] or [N, H, W, C]; the model takes {height}x{width} pixels"
            )));
        }
    };
    let (found_height, found_width) = (array.shape()[1], array.shape()[2]);
    if (found_height, found_width) != (height, width) {
        return Err(shape_error(format!(
            "u8 images of {height}x{width} pixels, the model input's size (only image files are resized)"
        )));
    }
    if channels != 1 && channels != 3 {
        return Err(shape_error("u8 images with 1 (grayscale) or 3 (RGB) channels in the last dimension".to_string()));
    }

    let sample_len = preprocess.sample_len();
    let data = array.iter().copied().collect();
    Ok((Samples::Pixels { data, channels, preprocess }, sample_len))
}

/// Warns when class folders are named by numbers that differ from their
/// sorted positions (`0` to `7` and `9`, or `10` before `2`). Classes are
/// numbered by sorted name, as torchvision's `ImageFolder` numbers them.
fn warn_if_numbers_differ(root: &Path, class_dirs: &[(String, PathBuf)]) {
    let names: Vec<&str> = class_dirs.iter().map(|(name, _)| name.as_str()).collect();
    if let Some((name, index)) = misnumbered_class(&names) {
        tracing::warn!(
            "{}: class folders are numbered by their sorted position, not by their names, so folder '{name}' is class \
             {index}; rename the folders (00 to 99, with no gaps) if their names are the class numbers",
            root.display()
        );
    }
}

/// Returns the first folder whose number differs from its position, when
/// every folder is named by a number.
fn misnumbered_class<'a>(names: &[&'a str]) -> Option<(&'a str, usize)> {
    if names.is_empty() || names.iter().any(|name| name.parse::<usize>().is_err()) {
        return None;
    }
    names.iter().enumerate().find(|(index, name)| name.parse::<usize>().ok() != Some(*index)).map(|(index, name)| (*name, index))
}

/// Opens a folder with one subfolder of PNG or JPEG images per class.
fn open_folder(root: &Path, sample_shape: &[usize], normalize: &NormalizeOptions, need_labels: bool) -> Result<Dataset> {
    let preprocess = Preprocess::for_sample(sample_shape, normalize)?;

    let mut class_dirs: Vec<(String, PathBuf)> = Vec::new();
    for entry in read_dir_sorted(root)? {
        let name = entry.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if entry.is_dir() && !name.starts_with('.') {
            class_dirs.push((name, entry));
        }
    }
    warn_if_numbers_differ(root, &class_dirs);
    // Unlabeled images may sit in the folder itself.
    if class_dirs.is_empty() && !need_labels {
        class_dirs.push((String::new(), root.to_path_buf()));
    }
    if class_dirs.is_empty() {
        return Err(DatasetError::Empty {
            path: root.to_path_buf(),
            reason: "it has no class subfolders; put the images of each class in their own subfolder".to_string(),
        });
    }

    let mut paths = Vec::new();
    let mut labels = Vec::new();
    let mut ignored_files = 0;
    for (class, (_, dir)) in class_dirs.iter().enumerate() {
        for file in read_dir_sorted(dir)? {
            if !file.is_file() {
                continue;
            }
            if is_image_file(&file) {
                paths.push(file);
                labels.push(class as i64);
            } else {
                ignored_files += 1;
            }
        }
    }
    if paths.is_empty() {
        return Err(DatasetError::Empty {
            path: root.to_path_buf(),
            reason: format!("its {} class subfolder(s) contain no PNG or JPEG files", class_dirs.len()),
        });
    }

    let sample_len = preprocess.sample_len();
    Ok(Dataset {
        path: root.to_path_buf(),
        labels_path: root.to_path_buf(),
        samples: Samples::Files { paths, preprocess },
        labels,
        class_names: Some(class_dirs.into_iter().map(|(name, _)| name).collect()),
        sample_len,
        ignored_files,
    })
}

/// Lists a folder's entries, sorted by file name.
fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let read_error = |e: std::io::Error| DatasetError::Read { path: dir.to_path_buf(), message: e.to_string() };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        entries.push(entry.map_err(read_error)?.path());
    }
    entries.sort();
    Ok(entries)
}

fn is_image_file(path: &Path) -> bool {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    matches!(extension.as_str(), "png" | "jpg" | "jpeg")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes an uncompressed `.npz` with the given members.
    fn write_npz_members(path: &Path, members: &[(&str, Vec<u8>)]) {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in members {
            zip.start_file(*name, options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
    }

    #[test]
    fn npz_without_labels_calibrates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.npz");
        write_npz_members(&path, &[("images.npy", crate::data::tests::npy_bytes("(3, 1, 2, 2)", 12))]);
        let dataset = Dataset::open_unlabeled(&path, &[1, 2, 2], &NormalizeOptions::default(), usize::MAX).unwrap();
        assert_eq!(dataset.len(), 3);
        let error = Dataset::open(&path, None, &[1, 2, 2], &NormalizeOptions::default()).err().expect("rejected").to_string();
        assert!(error.contains("labels"), "{error}");
    }

    #[test]
    fn npz_calibration_reads_first_samples() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.npz");
        write_npz_members(&path, &[("images.npy", crate::data::tests::npy_bytes("(5, 1, 2, 2)", 20))]);
        let dataset = Dataset::open_unlabeled(&path, &[1, 2, 2], &NormalizeOptions::default(), 3).unwrap();
        assert_eq!(dataset.len(), 3);
    }

    #[test]
    fn overstated_npz_member_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.npz");
        let images = crate::data::tests::npy_bytes("(99999999, 1, 2, 2)", 4);
        write_npz_members(&path, &[("images.npy", images), ("labels.npy", crate::data::tests::npy_bytes("(1,)", 1))]);
        let error = Dataset::open(&path, None, &[1, 2, 2], &NormalizeOptions::default()).err().expect("rejected").to_string();
        assert!(error.contains("array 'images'"), "{error}");
        assert!(error.contains("cut short"), "{error}");
    }

    #[test]
    fn npy_with_appended_data_rejected() {
        use ndarray_npy::WriteNpyExt;
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let (data, labels) = (dir.path().join("data.npy"), dir.path().join("labels.npy"));
        ndarray::Array3::<f32>::zeros((2, 1, 2)).write_npy(File::create(&data).unwrap()).unwrap();
        std::fs::OpenOptions::new().append(true).open(&data).unwrap().write_all(&[0; 8]).unwrap();
        ndarray::arr1(&[0i64, 1]).write_npy(File::create(&labels).unwrap()).unwrap();

        for limit in [None, Some(1)] {
            let error = Dataset::open_first(&data, Some(&labels), &[1, 1, 2], &NormalizeOptions::default(), limit)
                .err()
                .expect("rejected")
                .to_string();
            assert!(error.contains("other data was appended"), "limit {limit:?}: {error}");
        }
    }

    #[test]
    fn npz_overstated_sizes_rejected() {
        // The header declares 3.84 GB of f32 data and the archive's size
        // fields agree with it, but the member contains 16 bytes of data.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overstated.npz");
        let images = crate::data::tests::npy_bytes("(240000000, 1, 2, 2)", 4);
        let declared = ((images.len() - 16) as u32 + 240_000_000 * 16).to_le_bytes();
        write_npz_members(&path, &[("images.npy", images), ("labels.npy", crate::data::tests::npy_bytes("(1,)", 1))]);
        let mut bytes = std::fs::read(&path).unwrap();
        let central = bytes.windows(4).position(|w| w == b"PK\x01\x02").expect("central directory");
        for offset in [18, 22, central + 20, central + 24] {
            bytes[offset..offset + 4].copy_from_slice(&declared);
        }
        std::fs::write(&path, bytes).unwrap();

        let error = Dataset::open(&path, None, &[1, 2, 2], &NormalizeOptions::default()).err().expect("rejected").to_string();
        assert!(error.contains("array 'images'"), "{error}");
        assert!(error.contains("the archive declares"), "{error}");
    }

    fn gray_preprocess() -> Preprocess {
        Preprocess::for_sample(&[1, 2, 2], &NormalizeOptions::default()).unwrap()
    }

    #[test]
    fn preprocess_defaults_by_channels() {
        assert_eq!(gray_preprocess().normalize, Normalize::identity(1));
        let rgb = Preprocess::for_sample(&[3, 4, 4], &NormalizeOptions::default()).unwrap();
        assert_eq!(rgb.normalize, Normalize::imagenet());
    }

    #[test]
    fn preprocess_rejects_bad_normalization() {
        let wrong_count = NormalizeOptions { mean: Some(vec![0.5, 0.5]), std: None, ..Default::default() };
        assert!(matches!(Preprocess::for_sample(&[1, 2, 2], &wrong_count), Err(DatasetError::InvalidNormalize(_))));
        let zero_std = NormalizeOptions { mean: None, std: Some(vec![0.0]), ..Default::default() };
        assert!(matches!(Preprocess::for_sample(&[1, 2, 2], &zero_std), Err(DatasetError::InvalidNormalize(_))));
        assert!(matches!(
            Preprocess::for_sample(&[4, 2, 2], &NormalizeOptions::default()),
            Err(DatasetError::NotImageInput { .. })
        ));
    }

    #[test]
    fn gray_pixels_scale_and_normalize() {
        let mut preprocess = gray_preprocess();
        preprocess.normalize = Normalize { mean: vec![0.5], std: vec![0.5] };
        let mut out = [0.0; 4];
        preprocess.convert_pixels(&[0, 255, 51, 102], 1, &mut out);
        let expected = [-1.0, 1.0, -0.6, -0.2];
        for (value, want) in out.iter().zip(expected) {
            assert!((value - want).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn rgb_pixels_become_gray_with_luma() {
        let preprocess = Preprocess::for_sample(&[1, 1, 2], &NormalizeOptions::default()).unwrap();
        let mut out = [0.0; 2];
        preprocess.convert_pixels(&[255, 0, 0, 10, 20, 30], 3, &mut out);
        // 2126 * 255 / 10000 = 54.2 and (21260 + 143040 + 21660) / 10000 = 18.6, truncated.
        assert_eq!(out, [54.0 / 255.0, 18.0 / 255.0]);
    }

    #[test]
    fn gray_pixels_repeat_into_rgb_planes() {
        let options = NormalizeOptions { mean: Some(vec![0.0; 3]), std: Some(vec![1.0; 3]), ..Default::default() };
        let preprocess = Preprocess::for_sample(&[3, 1, 2], &options).unwrap();
        let mut out = [0.0; 6];
        preprocess.convert_pixels(&[0, 255], 1, &mut out);
        assert_eq!(out, [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
    }

    fn dataset_with_labels(labels: Vec<i64>) -> Dataset {
        Dataset {
            path: PathBuf::from("data.npy"),
            labels_path: PathBuf::from("labels.npy"),
            samples: Samples::Preprocessed(vec![0.0; labels.len()]),
            labels,
            class_names: None,
            sample_len: 1,
            ignored_files: 0,
        }
    }

    #[test]
    fn labels_in_range_become_indices() {
        let dataset = dataset_with_labels(vec![0, 3, 1, 2]);
        assert_eq!(dataset.class_indices(4).unwrap(), vec![0, 3, 1, 2]);
    }

    #[test]
    fn labels_out_of_range_are_reported() {
        let dataset = dataset_with_labels(vec![0, 3, -1, 4, 2]);
        let error = dataset.class_indices(4).unwrap_err();
        let DatasetError::LabelOutOfRange { count, index, label, classes, .. } = error else {
            panic!("expected LabelOutOfRange, got {error}");
        };
        assert_eq!((count, index, label, classes), (2, 2, -1, 4));
    }

    #[test]
    fn truncate_keeps_first_samples() {
        let mut dataset = dataset_with_labels(vec![5, 6, 7]);
        dataset.truncate(2);
        assert_eq!(dataset.len(), 2);
        let mut out = [1.0; 2];
        dataset.load_batch(0..2, &mut out).unwrap();
        assert_eq!(out, [0.0, 0.0]);
    }

    fn write_npz(path: &Path, images: &ArrayD<u8>, labels: &ndarray::Array1<i64>, compressed: bool) {
        let file = File::create(path).unwrap();
        let mut writer = if compressed { ndarray_npy::NpzWriter::new_compressed(file) } else { ndarray_npy::NpzWriter::new(file) };
        writer.add_array("images", images).unwrap();
        writer.add_array("labels", labels).unwrap();
        writer.finish().unwrap();
    }

    #[test]
    fn npz_reads_plain_and_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let images = ArrayD::from_shape_vec(IxDyn(&[2, 1, 2]), vec![0u8, 255, 51, 102]).unwrap();
        let labels = ndarray::Array1::from(vec![1i64, 0]);
        for compressed in [false, true] {
            let path = dir.path().join(format!("data-{compressed}.npz"));
            write_npz(&path, &images, &labels, compressed);

            let dataset = Dataset::open(&path, None, &[1, 1, 2], &NormalizeOptions::default()).unwrap();
            assert_eq!(dataset.len(), 2);
            assert_eq!(dataset.class_indices(2).unwrap(), vec![1, 0]);
            let mut out = [0.0; 4];
            dataset.load_batch(0..2, &mut out).unwrap();
            assert_eq!(out, [0.0, 1.0, 0.2, 0.4]);
        }
    }

    #[test]
    fn npz_without_labels_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.npz");
        let mut writer = ndarray_npy::NpzWriter::new(File::create(&path).unwrap());
        writer.add_array("x", &ndarray::Array3::<u8>::zeros((1, 1, 2))).unwrap();
        writer.finish().unwrap();

        let error = Dataset::open(&path, None, &[1, 1, 2], &NormalizeOptions::default()).err().unwrap();
        let DatasetError::MissingArray { name, available, .. } = &error else { panic!("expected MissingArray, got {error}") };
        assert_eq!((*name, available.as_str()), ("images", "x"));
    }

    #[test]
    fn empty_npy_is_rejected() {
        use ndarray_npy::WriteNpyExt;
        let dir = tempfile::tempdir().unwrap();
        let (data, labels) = (dir.path().join("data.npy"), dir.path().join("labels.npy"));
        ndarray::Array3::<u8>::zeros((0, 1, 2)).write_npy(File::create(&data).unwrap()).unwrap();
        ndarray::Array1::<i64>::zeros(0).write_npy(File::create(&labels).unwrap()).unwrap();

        let error = Dataset::open(&data, Some(&labels), &[1, 1, 2], &NormalizeOptions::default()).err().unwrap();
        assert!(matches!(error, DatasetError::Empty { .. }), "{error}");
    }

    #[test]
    fn f32_samples_may_omit_single_channel() {
        use ndarray_npy::WriteNpyExt;
        let dir = tempfile::tempdir().unwrap();
        let (data, labels) = (dir.path().join("data.npy"), dir.path().join("labels.npy"));
        ndarray::Array3::<f32>::from_elem((2, 1, 2), 0.5).write_npy(File::create(&data).unwrap()).unwrap();
        ndarray::Array1::<u8>::from(vec![0, 1]).write_npy(File::create(&labels).unwrap()).unwrap();

        let dataset = Dataset::open(&data, Some(&labels), &[1, 1, 2], &NormalizeOptions::default()).unwrap();
        assert!(dataset.is_preprocessed());
        let mut out = [0.0; 4];
        dataset.load_batch(0..2, &mut out).unwrap();
        assert_eq!(out, [0.5; 4]);
    }

    #[test]
    fn folder_classes_follow_sorted_names() {
        let dir = tempfile::tempdir().unwrap();
        for (class, value) in [("b_dog", 255u8), ("a_cat", 0)] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
            let image = image::GrayImage::from_pixel(4, 4, image::Luma([value]));
            image.save(dir.path().join(class).join("1.png")).unwrap();
        }
        std::fs::write(dir.path().join("a_cat/labels.csv"), "not an image").unwrap();

        let dataset = Dataset::open(dir.path(), None, &[1, 2, 2], &NormalizeOptions::default()).unwrap();
        assert_eq!(dataset.class_names(), Some(&["a_cat".to_string(), "b_dog".to_string()][..]));
        assert_eq!(dataset.class_indices(2).unwrap(), vec![0, 1]);
        assert_eq!(dataset.ignored_files(), 1);
        let mut out = [0.5; 8];
        dataset.load_batch(0..2, &mut out).unwrap();
        assert_eq!(out, [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn flat_image_folder_calibrates() {
        let dir = tempfile::tempdir().unwrap();
        for index in 0..3 {
            image::GrayImage::from_pixel(4, 4, image::Luma([255u8])).save(dir.path().join(format!("{index}.png"))).unwrap();
        }
        let dataset = Dataset::open_unlabeled(dir.path(), &[1, 2, 2], &NormalizeOptions::default(), usize::MAX).unwrap();
        assert_eq!(dataset.len(), 3);
        let error = Dataset::open(dir.path(), None, &[1, 2, 2], &NormalizeOptions::default()).err().expect("rejected").to_string();
        assert!(error.contains("no class subfolders"), "{error}");
    }

    #[test]
    fn limited_npy_reads_first_rows() {
        use ndarray_npy::WriteNpyExt;
        let dir = tempfile::tempdir().unwrap();
        let (data, labels) = (dir.path().join("data.npy"), dir.path().join("labels.npy"));
        let samples = ndarray::Array3::<f32>::from_shape_fn((3, 1, 2), |(n, _, w)| (2 * n + w) as f32);
        samples.write_npy(File::create(&data).unwrap()).unwrap();
        ndarray::arr1(&[2i64, 0, 1]).write_npy(File::create(&labels).unwrap()).unwrap();

        let dataset = Dataset::open_first(&data, Some(&labels), &[1, 1, 2], &NormalizeOptions::default(), Some(2)).unwrap();
        assert_eq!(dataset.len(), 2);
        assert_eq!(dataset.class_indices(3).unwrap(), vec![2, 0]);
        let mut out = [0.0; 4];
        dataset.load_batch(0..2, &mut out).unwrap();
        assert_eq!(out, [0.0, 1.0, 2.0, 3.0]);

        // A labels file of another length is an error with a limit too.
        ndarray::arr1(&[2i64, 0, 1, 1]).write_npy(File::create(&labels).unwrap()).unwrap();
        let error = Dataset::open_first(&data, Some(&labels), &[1, 1, 2], &NormalizeOptions::default(), Some(2)).err().unwrap();
        assert!(matches!(error, DatasetError::LabelCount { labels: 4, samples: 3, .. }), "{error}");

        // A shape error shows the shape of the rows read and names their count.
        ndarray::Array2::<i64>::zeros((3, 2)).write_npy(File::create(&labels).unwrap()).unwrap();
        let error = Dataset::open_first(&data, Some(&labels), &[1, 1, 2], &NormalizeOptions::default(), Some(2)).err().unwrap();
        let message = error.to_string();
        assert!(message.contains("labels.npy (first 2 rows read): expected one label per sample"), "{message}");
    }

    #[test]
    fn numbered_class_folders_checked() {
        assert_eq!(misnumbered_class(&["0", "1", "2"]), None);
        assert_eq!(misnumbered_class(&["0", "1", "9"]), Some(("9", 2)));
        assert_eq!(misnumbered_class(&["0", "1", "10", "2"]), Some(("10", 2)));
        assert_eq!(misnumbered_class(&["cat", "dog"]), None);
    }

    #[test]
    fn limited_npz_reads_first_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.npz");
        let images = ndarray::Array3::<u8>::from_shape_fn((3, 1, 2), |(n, _, w)| (2 * n + w) as u8).into_dyn();
        write_npz(&path, &images, &ndarray::arr1(&[1i64, 0, 1]), true);
        let dataset = Dataset::open_first(&path, None, &[1, 1, 2], &NormalizeOptions::default(), Some(1)).unwrap();
        assert_eq!((dataset.len(), dataset.class_indices(2).unwrap()), (1, vec![1]));

        write_npz(&path, &images, &ndarray::arr1(&[1i64, 0]), true);
        let error = Dataset::open_first(&path, None, &[1, 1, 2], &NormalizeOptions::default(), Some(1)).err().unwrap();
        assert!(matches!(error, DatasetError::LabelCount { labels: 2, samples: 3, .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains("array 'labels', has 2 labels but array 'images' has 3"), "{message}");
    }
}
