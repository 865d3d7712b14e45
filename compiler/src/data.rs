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
    /// The ImageNet statistics most ViT checkpoints are trained with.
    pub fn imagenet() -> Normalize {
        Normalize { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] }
    }

    /// No normalization: pixels stay in [0, 1].
    pub fn identity(channels: usize) -> Normalize {
        Normalize { mean: vec![0.0; channels], std: vec![1.0; channels] }
    }
}

/// Reads an `.npy` file as a tensor (f32, f64, i64, i32, u8, i8 or bool).
pub fn read_npy(path: &Path) -> Result<Tensor> {
    use ndarray_npy::ReadNpyExt;
    let open = || std::fs::File::open(path).map_err(|error| Error::Io { path: path.to_path_buf(), error });
    let bad = |e: ndarray_npy::ReadNpyError| Error::Input {
        input: path.display().to_string(),
        message: format!("cannot read as .npy: {e}"),
    };
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
        message: "the .npy element type is not one of f32, f64, i64, i32, u8, i8, bool".into(),
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

/// Loads an image as a `[1, channels, height, width]` f32 tensor.
pub fn load_image(path: &Path, channels: usize, height: usize, width: usize, normalize: &Normalize) -> Result<Tensor> {
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
    let resized = if img.width() == w && img.height() == h { img } else { img.resize_exact(w, h, FilterType::CatmullRom) };

    let mut out = Array4::<f32>::zeros((1, channels, height, width));
    if channels == 3 {
        let rgb = resized.to_rgb8();
        for (x, y, pixel) in rgb.enumerate_pixels() {
            for c in 0..3 {
                let value = pixel.0[c] as f32 / 255.0;
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
