//! Loading model inputs from files: `.npy` tensors and images.
//!
//! Images (PNG, JPEG) are decoded with the `image` crate, converted to RGB
//! or grayscale to match the input's channel count, resized to the input's
//! height and width (Catmull-Rom filter), scaled to [0, 1], normalized per
//! channel with `(x - mean) / std`, and laid out as NCHW with batch 1.

use std::path::Path;

use image::imageops::FilterType;
use ndarray::{Array4, ArrayD};

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Per-channel normalization applied after scaling pixels to [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    /// Returns the ImageNet statistics that most ViT checkpoints are trained with.
    pub fn imagenet() -> Normalize {
        Normalize { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] }
    }

    /// No normalization: pixels stay in [0, 1].
    pub fn identity(channels: usize) -> Normalize {
        Normalize { mean: vec![0.0; channels], std: vec![1.0; channels] }
    }
}

/// Order of the color channels in the model input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    #[default]
    Rgb,
    Bgr,
}

/// Resizing and channel layout that bring an image to the model input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageLayout {
    /// Resize so the shorter side has this many pixels (keeping the aspect
    /// ratio), then center-crop to the input's height and width. `None`
    /// resizes straight to the input's height and width.
    pub resize_shorter: Option<u32>,
    pub channel_order: ChannelOrder,
}

/// The preprocessing a model expects, stored beside it as
/// `MODEL.preprocess.json` (e.g. `mnist_vit.preprocess.json` next to
/// `mnist_vit.onnx`). Command-line options override its fields.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessSpec {
    /// Per-channel mean subtracted from pixels scaled to [0, 1].
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation the centered pixels are divided by.
    pub std: Option<Vec<f32>>,
    /// See [`ImageLayout::resize_shorter`].
    pub resize_shorter: Option<u32>,
    #[serde(default)]
    pub channel_order: ChannelOrder,
}

impl PreprocessSpec {
    /// Returns the path of the spec stored with `model`.
    pub fn path_for(model: &Path) -> std::path::PathBuf {
        model.with_extension("preprocess.json")
    }

    /// Reads the spec stored with `model`, if there is one.
    pub fn for_model(model: &Path) -> Result<Option<PreprocessSpec>> {
        let path = PreprocessSpec::path_for(model);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|error| Error::Io { path: path.clone(), error })?;
        let spec = serde_json::from_str(&text).map_err(|e| Error::Input {
            input: path.display().to_string(),
            message: format!("invalid preprocessing spec: {e}; expected fields mean, std, resize_shorter, channel_order"),
        })?;
        Ok(Some(spec))
    }

    pub fn layout(&self) -> ImageLayout {
        ImageLayout { resize_shorter: self.resize_shorter, channel_order: self.channel_order }
    }
}

/// Checks that `path` is a regular file. Reading a FIFO would block, and
/// reading a device such as `/dev/zero` would never end.
pub fn check_regular_file(path: &Path) -> Result<()> {
    let io_error = |error| Error::Io { path: path.to_path_buf(), error };
    let metadata = std::fs::metadata(path).map_err(io_error)?;
    if !metadata.is_file() {
        let message = "not a regular file; give the path of a file, not a device, FIFO or folder";
        return Err(io_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, message)));
    }
    Ok(())
}

/// Reads a whole file after [`check_regular_file`].
pub fn read_regular_file(path: &Path) -> Result<Vec<u8>> {
    check_regular_file(path)?;
    std::fs::read(path).map_err(|error| Error::Io { path: path.to_path_buf(), error })
}

/// Largest `.npy` header accepted, in bytes. Headers that numpy writes are
/// padded to a multiple of 64 bytes and rarely pass 200.
const MAX_NPY_HEADER: usize = 1 << 20;

/// The fields of an `.npy` header.
#[derive(Clone, Debug)]
pub struct NpyHeader {
    /// Element type, such as `'<f4'`.
    pub descr: String,
    /// Shape, when the header's text parses.
    pub shape: Option<Vec<usize>>,
    pub fortran_order: bool,
}

impl NpyHeader {
    /// Length of the leading axis, when the shape parses and has one.
    pub fn rows(&self) -> Option<usize> {
        self.shape.as_ref().and_then(|shape| shape.first().copied())
    }
}

/// Checks that the `.npy` data read from `reader`, `available` bytes in
/// all, is exactly as long as its header declares, and returns the header (`None`
/// when it is malformed, which ndarray-npy then reports). It leaves
/// `reader` at the start of the data. ndarray-npy allocates the declared
/// size before reading, so a header that overstates the shape would abort
/// the process on a failed allocation.
pub fn check_npy_length(reader: &mut impl std::io::Read, available: u64) -> std::result::Result<Option<NpyHeader>, String> {
    let mut prefix = [0u8; 8];
    reader.read_exact(&mut prefix).map_err(|_| "shorter than an .npy header".to_string())?;
    if &prefix[..6] != b"\x93NUMPY" {
        return Err("not an .npy array: the magic string is missing".into());
    }
    // Version 1 stores the header length in 2 bytes, versions 2 and 3 in 4.
    let length_bytes = if prefix[6] == 1 { 2 } else { 4 };
    let mut length = [0u8; 4];
    reader.read_exact(&mut length[..length_bytes]).map_err(|_| "the .npy header is cut short".to_string())?;
    let header_len = u32::from_le_bytes(length) as usize;
    if header_len > MAX_NPY_HEADER {
        return Err(format!("the .npy header declares {header_len} bytes, more than the {MAX_NPY_HEADER} accepted"));
    }
    let mut header = vec![0u8; header_len];
    reader.read_exact(&mut header).map_err(|_| "the .npy header is cut short".to_string())?;
    let header = String::from_utf8_lossy(&header);

    let (Some(descr), Some(shape)) = (npy_field(&header, "descr"), npy_field(&header, "shape")) else {
        // ndarray-npy reports a malformed header itself.
        return Ok(None);
    };
    let item_size: Option<u64> = descr.trim_matches(|c| c == '\'' || c == '"').trim_start_matches(|c: char| !c.is_ascii_digit()).parse().ok();
    let dims: Option<Vec<u64>> =
        shape.trim_matches(|c| c == '(' || c == ')').split(',').map(str::trim).filter(|d| !d.is_empty()).map(|d| d.parse().ok()).collect();
    let parsed = NpyHeader {
        descr: descr.to_string(),
        shape: dims.as_ref().map(|d| d.iter().map(|&v| v as usize).collect()),
        fortran_order: npy_field(&header, "fortran_order") == Some("True"),
    };
    let (Some(item_size), Some(dims)) = (item_size, dims) else {
        return Ok(Some(parsed));
    };
    let data = available.saturating_sub((8 + length_bytes + header_len) as u64);
    let needed = dims.iter().try_fold(item_size, |total, &d| total.checked_mul(d));
    match needed {
        Some(needed) if needed == data => Ok(Some(parsed)),
        Some(needed) if needed < data => Err(format!(
            "the header declares shape {shape} of {descr}, {needed} bytes, but {data} bytes follow it; \
             the header is wrong or other data was appended, so write the file again"
        )),
        _ => Err(format!(
            "the header declares shape {shape} of {descr}, more data than the {data} bytes that follow it; \
             the file is cut short or its header is wrong, so write it again"
        )),
    }
}

/// Returns the text of `key`'s value in an `.npy` header dictionary, such
/// as `'<f4'` for `descr` or `(2, 3)` for `shape`.
fn npy_field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find(',')? };
    Some(rest[..end].trim())
}

/// Reads the header of the `.npy` file at `path` and checks that the data
/// after it has the length that the header declares. `None` when the
/// header is malformed, which [`read_npy`] then reports.
pub fn read_npy_header(path: &Path) -> Result<Option<NpyHeader>> {
    check_regular_file(path)?;
    let io_error = |error| Error::Io { path: path.to_path_buf(), error };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let available = file.metadata().map_err(io_error)?.len();
    let mut reader = std::io::BufReader::new(file);
    check_npy_length(&mut reader, available).map_err(|message| Error::Input { input: path.display().to_string(), message })
}

/// Reads at most the first `max_rows` entries of the leading axis of an
/// `.npy` file, and only those bytes, so that a few calibration samples
/// taken from a large file cost little memory. Other layouts than C-order
/// little-endian f32, f64, i64, i32, u8, i8 and bool are read whole by
/// [`read_npy`] and then cut.
pub fn read_npy_rows(path: &Path, max_rows: usize) -> Result<Tensor> {
    check_regular_file(path)?;
    let io_error = |error| Error::Io { path: path.to_path_buf(), error };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let available = file.metadata().map_err(io_error)?.len();
    let mut reader = std::io::BufReader::new(file);
    let header = check_npy_length(&mut reader, available).map_err(|message| Error::Input { input: path.display().to_string(), message })?;
    if let Some(header) = header
        && let Some(tensor) = npy_rows_from(&mut reader, &header, max_rows).map_err(io_error)?
    {
        return Ok(tensor);
    }
    Ok(first_rows(read_npy(path)?, max_rows))
}

/// Reads the first `max_rows` entries of the leading axis from `reader`,
/// which is at the start of the data that `header` describes. Returns
/// `None` for scalars and for layouts other than C-order little-endian
/// f32, f64, i64, i32, u8, i8 and bool.
pub fn npy_rows_from(reader: &mut impl std::io::Read, header: &NpyHeader, max_rows: usize) -> std::io::Result<Option<Tensor>> {
    let dtype = match header.descr.trim_matches('\'') {
        "<f4" => DType::F32,
        "<f8" => DType::F64,
        "<i8" => DType::I64,
        "<i4" => DType::I32,
        "|u1" => DType::U8,
        "|i1" => DType::I8,
        "|b1" => DType::Bool,
        _ => return Ok(None),
    };
    let Some(shape) = header.shape.as_ref().filter(|s| !s.is_empty() && !header.fortran_order) else {
        return Ok(None);
    };
    let mut read_shape = shape.clone();
    read_shape[0] = read_shape[0].min(max_rows);
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidData, message);
    let length = read_shape
        .iter()
        .try_fold(dtype.size_bytes(), |total, &d| total.checked_mul(d))
        .ok_or_else(|| invalid(format!("shape {read_shape:?} is too large")))?;
    // The buffer grows with the data read, so a size that an archive
    // overstates cannot make it allocate more than the data it contains.
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(reader.by_ref(), length as u64), &mut bytes)?;
    if bytes.len() != length {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the data ends after {} of the {length} bytes of the first {} rows", bytes.len(), read_shape[0]),
        ));
    }
    let tensor = crate::onnx::tensor::from_raw(dtype, &read_shape, &bytes)
        .map_err(|message| std::io::Error::new(std::io::ErrorKind::InvalidData, message))?;
    Ok(Some(tensor))
}

/// Keeps the first `rows` entries of the leading axis.
fn first_rows(tensor: Tensor, rows: usize) -> Tensor {
    crate::map_tensor_same!(tensor, a => {
        if a.ndim() == 0 || a.shape()[0] <= rows {
            a
        } else {
            a.slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..rows)).to_owned()
        }
    })
}

/// Reads an `.npy` file as a tensor (f32, f64, i64, i32, u8, i8 or bool).
pub fn read_npy(path: &Path) -> Result<Tensor> {
    use ndarray_npy::ReadNpyExt;
    check_regular_file(path)?;
    let open = || std::fs::File::open(path).map_err(|error| Error::Io { path: path.to_path_buf(), error });
    let bad = |e: ndarray_npy::ReadNpyError| Error::Input {
        input: path.display().to_string(),
        message: format!("cannot read as .npy: {e}"),
    };
    let file = open()?;
    let available = file.metadata().map_err(|error| Error::Io { path: path.to_path_buf(), error })?.len();
    let descr = check_npy_length(&mut std::io::BufReader::new(file), available)
        .map_err(|message| Error::Input { input: path.display().to_string(), message })?
        .map(|header| header.descr);
    // Try the element types in turn; ndarray-npy rejects a mismatched dtype
    // before reading the data.
    match ArrayD::<f32>::read_npy(open()?) {
        Ok(a) => return Ok(Tensor::F32(a)),
        Err(ndarray_npy::ReadNpyError::WrongDescriptor(_)) => {}
        Err(e) => return Err(bad(e)),
    }
    macro_rules! try_type {
        ($t:ty, $variant:ident) => {
            match ArrayD::<$t>::read_npy(open()?) {
                Ok(a) => return Ok(Tensor::$variant(a)),
                Err(ndarray_npy::ReadNpyError::WrongDescriptor(_)) => {}
                Err(e) => return Err(bad(e)),
            }
        };
    }
    try_type!(f64, F64);
    try_type!(i64, I64);
    try_type!(i32, I32);
    try_type!(u8, U8);
    try_type!(i8, I8);
    try_type!(bool, Bool);
    Err(Error::Input {
        input: path.display().to_string(),
        message: format!(
            "the .npy element type {} is not one of f32, f64, i64, i32, u8, i8, bool; convert the array, e.g. with numpy's astype",
            descr.as_deref().unwrap_or("(unreadable)")
        ),
    })
}

/// Writes a tensor as `.npy` with its own element type (float16 as f32).
pub fn write_npy(path: &Path, tensor: &Tensor) -> Result<()> {
    use ndarray_npy::WriteNpyExt;
    let file = std::fs::File::create(path).map_err(|error| Error::Write { path: path.to_path_buf(), error })?;
    let writer = std::io::BufWriter::new(file);
    let written = match tensor {
        Tensor::F32(a) => a.write_npy(writer),
        Tensor::F64(a) => a.write_npy(writer),
        Tensor::I64(a) => a.write_npy(writer),
        Tensor::I32(a) => a.write_npy(writer),
        Tensor::I8(a) => a.write_npy(writer),
        Tensor::U8(a) => a.write_npy(writer),
        Tensor::Bool(a) => a.write_npy(writer),
        Tensor::F16(_) => tensor.cast(DType::F32).into_f32().expect("cast to f32 gives f32").write_npy(writer),
    };
    written.map_err(|e| Error::Write { path: path.to_path_buf(), error: std::io::Error::other(e.to_string()) })
}

/// Loads an image as a `[1, channels, height, width]` f32 tensor, resized
/// straight to that size, RGB channel order.
pub fn load_image(path: &Path, channels: usize, height: usize, width: usize, normalize: &Normalize) -> Result<Tensor> {
    load_image_with(path, channels, height, width, normalize, &ImageLayout::default())
}

/// Loads an image as a `[1, channels, height, width]` f32 tensor with the
/// given resizing and channel order.
pub fn load_image_with(
    path: &Path,
    channels: usize,
    height: usize,
    width: usize,
    normalize: &Normalize,
    layout: &ImageLayout,
) -> Result<Tensor> {
    let err = |message: String| Error::Input { input: path.display().to_string(), message };
    if channels != 1 && channels != 3 {
        return Err(err(format!("the model input has {channels} channels; images can feed only 1 (grayscale) or 3 (RGB)")));
    }
    if normalize.mean.len() != channels || normalize.std.len() != channels {
        return Err(err(format!("--mean and --std must have {channels} values, one per channel")));
    }
    if normalize.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
        return Err(err("--std values must be finite and nonzero".into()));
    }
    if normalize.mean.iter().any(|m| !m.is_finite()) {
        return Err(err("--mean values must be finite".into()));
    }
    let reader = image::ImageReader::open(path)
        .map_err(|error| Error::Io { path: path.to_path_buf(), error })?
        .with_guessed_format()
        .map_err(|error| Error::Io { path: path.to_path_buf(), error })?;
    let img = reader.decode().map_err(|e| err(format!("cannot decode image: {e}")))?;
    let (w, h) = (width as u32, height as u32);
    let resized = match layout.resize_shorter {
        None if img.width() == w && img.height() == h => img,
        None => img.resize_exact(w, h, FilterType::CatmullRom),
        Some(shorter) => {
            if shorter < w.min(h) {
                return Err(err(format!("resize_shorter {shorter} is smaller than the {h}x{w} crop")));
            }
            // Scale the shorter side to `shorter`, then take the centered crop.
            let scale = shorter as f64 / img.width().min(img.height()).max(1) as f64;
            let sw = ((img.width() as f64 * scale).round() as u32).max(w);
            let sh = ((img.height() as f64 * scale).round() as u32).max(h);
            let scaled = img.resize_exact(sw, sh, FilterType::CatmullRom);
            scaled.crop_imm((sw - w) / 2, (sh - h) / 2, w, h)
        }
    };

    let mut out = Array4::<f32>::zeros((1, channels, height, width));
    if channels == 3 {
        let rgb = resized.to_rgb8();
        for (x, y, pixel) in rgb.enumerate_pixels() {
            for c in 0..3 {
                let source = if layout.channel_order == ChannelOrder::Bgr { 2 - c } else { c };
                let value = pixel.0[source] as f32 / 255.0;
                out[[0, c, y as usize, x as usize]] = (value - normalize.mean[c]) / normalize.std[c];
            }
        }
    } else {
        let gray = resized.to_luma8();
        for (x, y, pixel) in gray.enumerate_pixels() {
            let value = pixel.0[0] as f32 / 255.0;
            out[[0, 0, y as usize, x as usize]] = (value - normalize.mean[0]) / normalize.std[0];
        }
    }
    Ok(Tensor::F32(out.into_dyn()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A version 1.0 `.npy` of f32 whose header declares `shape` (numpy's
    /// text, such as `(2, 3)`) and whose data is `values` zeros.
    pub(crate) fn npy_bytes(shape: &str, values: usize) -> Vec<u8> {
        let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, values * 4));
        bytes
    }

    #[test]
    fn npy_rows_read_only_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let values = ArrayD::from_shape_vec(ndarray::IxDyn(&[5, 2]), (0..10).map(|v| v as f32).collect()).unwrap();
        let pixels = values.mapv(|v| v as u8);
        for tensor in [Tensor::F32(values.clone()), Tensor::U8(pixels), Tensor::I64(values.mapv(|v| v as i64))] {
            let path = dir.path().join("rows.npy");
            write_npy(&path, &tensor).unwrap();
            let rows = read_npy_rows(&path, 3).unwrap();
            assert_eq!(rows.dtype(), tensor.dtype());
            assert_eq!(rows.shape(), &[3, 2]);
            assert_eq!(first_rows(tensor, 3), rows);
            assert_eq!(read_npy_rows(&path, 99).unwrap().shape(), &[5, 2]);
        }
    }

    #[test]
    fn overstated_npy_shape_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.npy");
        std::fs::write(&path, npy_bytes("(900000, 3)", 6)).unwrap();
        let error = read_npy(&path).unwrap_err().to_string();
        assert!(error.contains("big.npy"), "{error}");
        assert!(error.contains("(900000, 3)"), "{error}");
        assert!(error.contains("cut short"), "{error}");
    }

    #[test]
    fn cut_npy_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.npy");
        std::fs::write(&path, npy_bytes("(2, 3)", 5)).unwrap();
        let error = read_npy(&path).unwrap_err().to_string();
        assert!(error.contains("cut short"), "{error}");
    }

    #[test]
    fn read_npy_rejects_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("data.npy");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        let error = read_npy(&fifo).unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
    }

    /// A 4x2 RGB PNG whose columns are red, green, blue and white.
    fn striped_png(dir: &Path) -> std::path::PathBuf {
        let colors = [[255u8, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];
        let img = image::RgbImage::from_fn(4, 2, |x, _| image::Rgb(colors[x as usize]));
        let path = dir.join("stripes.png");
        img.save(&path).unwrap();
        path
    }

    #[test]
    fn center_crop_keeps_middle_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = striped_png(dir.path());
        let layout = ImageLayout { resize_shorter: Some(2), channel_order: ChannelOrder::Rgb };
        let t = load_image_with(&path, 3, 2, 2, &Normalize::identity(3), &layout).unwrap();
        let a = t.as_f32().unwrap();
        // Columns 1 and 2 of the original: green, then blue.
        assert_eq!(a[[0, 1, 0, 0]], 1.0);
        assert_eq!(a[[0, 2, 0, 1]], 1.0);
        assert_eq!(a[[0, 0, 0, 0]], 0.0);
    }

    #[test]
    fn bgr_order_swaps_channels() {
        let dir = tempfile::tempdir().unwrap();
        let path = striped_png(dir.path());
        let layout = ImageLayout { resize_shorter: Some(2), channel_order: ChannelOrder::Bgr };
        let t = load_image_with(&path, 3, 2, 2, &Normalize::identity(3), &layout).unwrap();
        let a = t.as_f32().unwrap();
        // The blue column comes first in BGR order.
        assert_eq!(a[[0, 0, 0, 1]], 1.0);
        assert_eq!(a[[0, 2, 0, 1]], 0.0);
    }

    #[test]
    fn spec_rejects_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        std::fs::write(PreprocessSpec::path_for(&model), r#"{"mean": [0.5], "scale": 2}"#).unwrap();
        let err = PreprocessSpec::for_model(&model).unwrap_err().to_string();
        assert!(err.contains("scale"), "{err}");
    }

    #[test]
    fn mnist_spec_parses() {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist-vit/mnist_vit.onnx");
        let spec = PreprocessSpec::for_model(&model).unwrap().expect("the MNIST ViT ships a spec");
        assert_eq!(spec.mean, Some(vec![0.1307]));
        assert_eq!(spec.std, Some(vec![0.3081]));
    }
}
