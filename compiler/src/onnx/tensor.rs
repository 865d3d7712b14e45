//! Decoding `TensorProto` into [`Tensor`], including external data.
//!
//! Data may be in `raw_data` (little-endian), in the typed repeated fields
//! (`float_data`, `int32_data` for 8/16-bit and bool types, `int64_data`,
//! `double_data`), or in an external file. An external `location` must be a
//! relative path that stays inside the model's folder after resolving
//! symlinks; anything else is rejected before the file is opened.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use half::f16;
use ndarray::{ArrayD, IxDyn};
use onnx_protobuf::TensorProto;

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor, bytes_bound};

/// Upper bound on the bytes of one tensor, checked before allocating.
pub const DEFAULT_MAX_TENSOR_BYTES: u64 = 8 << 30;

/// `TensorProto.DataLocation.EXTERNAL`.
const DATA_LOCATION_EXTERNAL: i32 = 1;

/// Decodes `proto`, reading external data relative to `model_dir`.
pub fn decode_tensor(proto: &TensorProto, model_dir: &Path, max_bytes: u64) -> Result<Tensor> {
    let name = proto.name.as_str();
    let err = |message: String| Error::Tensor { tensor: name.to_string(), message };

    let dtype = DType::from_onnx(proto.data_type).ok_or_else(|| {
        err(format!(
            "element type {} (code {}) is not supported; vitc supports float32, float16, float64, int64, int32, int8, uint8 and bool",
            DType::onnx_name(proto.data_type),
            proto.data_type
        ))
    })?;
    let shape = dims_to_shape(&proto.dims).map_err(err)?;
    let numel = checked_numel(&shape).ok_or_else(|| err(format!("shape {:?} has too many elements", proto.dims)))?;
    let bytes = (numel as u64).saturating_mul(dtype.size_bytes() as u64);
    let bound = bytes_bound(dtype, &shape);
    if bound > max_bytes {
        let need = if bound == bytes { "needs" } else { "is empty, but its nonzero axes alone need" };
        return Err(Error::Limit(format!(
            "tensor '{name}' of shape {:?} {need} {bound} bytes, more than the limit of {max_bytes}; raise the limit (--max-tensor-mib) if the model is really this large",
            proto.dims
        )));
    }

    let external = proto.data_location.value() == DATA_LOCATION_EXTERNAL;
    if external {
        let raw = read_external(proto, model_dir, bytes)?;
        return from_raw(dtype, &shape, &raw).map_err(err);
    }
    if !proto.raw_data.is_empty() || numel == 0 {
        return from_raw(dtype, &shape, &proto.raw_data).map_err(err);
    }
    from_typed_fields(proto, dtype, &shape, numel).map_err(err)
}

fn dims_to_shape(dims: &[i64]) -> std::result::Result<Vec<usize>, String> {
    dims.iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d} in shape {dims:?} is negative")))
        .collect()
}

fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

fn length_error(numel: usize, shape: &[usize], got: usize, unit: &str) -> String {
    format!("shape {shape:?} needs {numel} elements but the tensor holds {got} {unit}; the file is corrupt or was written by a broken exporter")
}

/// Decodes little-endian `raw` bytes.
pub(crate) fn from_raw(dtype: DType, shape: &[usize], raw: &[u8]) -> std::result::Result<Tensor, String> {
    let numel: usize = shape.iter().product();
    let size = dtype.size_bytes();
    if raw.len() != numel * size {
        return Err(length_error(numel, shape, raw.len(), "bytes of raw data"));
    }
    let dim = IxDyn(shape);
    let chunks = raw.chunks_exact(size);
    let array_err = |e: ndarray::ShapeError| e.to_string();
    Ok(match dtype {
        DType::F32 => Tensor::F32(
            ArrayD::from_shape_vec(dim, chunks.map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
                .map_err(array_err)?,
        ),
        DType::F16 => Tensor::F16(
            ArrayD::from_shape_vec(dim, chunks.map(|c| f16::from_le_bytes(c.try_into().unwrap())).collect())
                .map_err(array_err)?,
        ),
        DType::F64 => Tensor::F64(
            ArrayD::from_shape_vec(dim, chunks.map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect())
                .map_err(array_err)?,
        ),
        DType::I64 => Tensor::I64(
            ArrayD::from_shape_vec(dim, chunks.map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect())
                .map_err(array_err)?,
        ),
        DType::I32 => Tensor::I32(
            ArrayD::from_shape_vec(dim, chunks.map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect())
                .map_err(array_err)?,
        ),
        DType::I8 => Tensor::I8(ArrayD::from_shape_vec(dim, raw.iter().map(|&b| b as i8).collect()).map_err(array_err)?),
        DType::U8 => Tensor::U8(ArrayD::from_shape_vec(dim, raw.to_vec()).map_err(array_err)?),
        DType::Bool => Tensor::Bool(ArrayD::from_shape_vec(dim, raw.iter().map(|&b| b != 0).collect()).map_err(array_err)?),
    })
}

/// Decodes the typed repeated fields. Per the ONNX spec, float16 values are
/// stored as bit patterns in `int32_data`, as are int8, uint8 and bool.
fn from_typed_fields(proto: &TensorProto, dtype: DType, shape: &[usize], numel: usize) -> std::result::Result<Tensor, String> {
    let dim = IxDyn(shape);
    let check = |got: usize, field: &str| {
        if got == numel { Ok(()) } else { Err(length_error(numel, shape, got, &format!("values in {field}"))) }
    };
    let array_err = |e: ndarray::ShapeError| e.to_string();
    Ok(match dtype {
        DType::F32 => {
            check(proto.float_data.len(), "float_data")?;
            Tensor::F32(ArrayD::from_shape_vec(dim, proto.float_data.clone()).map_err(array_err)?)
        }
        DType::F64 => {
            check(proto.double_data.len(), "double_data")?;
            Tensor::F64(ArrayD::from_shape_vec(dim, proto.double_data.clone()).map_err(array_err)?)
        }
        DType::I64 => {
            check(proto.int64_data.len(), "int64_data")?;
            Tensor::I64(ArrayD::from_shape_vec(dim, proto.int64_data.clone()).map_err(array_err)?)
        }
        DType::I32 => {
            check(proto.int32_data.len(), "int32_data")?;
            Tensor::I32(ArrayD::from_shape_vec(dim, proto.int32_data.clone()).map_err(array_err)?)
        }
        DType::F16 => {
            check(proto.int32_data.len(), "int32_data")?;
            let values = proto.int32_data.iter().map(|&v| f16::from_bits(v as u16)).collect();
            Tensor::F16(ArrayD::from_shape_vec(dim, values).map_err(array_err)?)
        }
        DType::I8 => {
            check(proto.int32_data.len(), "int32_data")?;
            Tensor::I8(ArrayD::from_shape_vec(dim, proto.int32_data.iter().map(|&v| v as i8).collect()).map_err(array_err)?)
        }
        DType::U8 => {
            check(proto.int32_data.len(), "int32_data")?;
            Tensor::U8(ArrayD::from_shape_vec(dim, proto.int32_data.iter().map(|&v| v as u8).collect()).map_err(array_err)?)
        }
        DType::Bool => {
            check(proto.int32_data.len(), "int32_data")?;
            Tensor::Bool(ArrayD::from_shape_vec(dim, proto.int32_data.iter().map(|&v| v != 0).collect()).map_err(array_err)?)
        }
    })
}

/// Reads the external bytes of `proto`: `expected_bytes` from `location`
/// at `offset` (default 0), checking `length` when given.
fn read_external(proto: &TensorProto, model_dir: &Path, expected_bytes: u64) -> Result<Vec<u8>> {
    let name = proto.name.as_str();
    let err = |message: String| Error::ExternalData { tensor: name.to_string(), message };

    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for entry in &proto.external_data {
        let parse = |v: &str| v.parse::<u64>().map_err(|_| err(format!("'{}' value '{v}' is not a non-negative integer", entry.key)));
        match entry.key.as_str() {
            "location" => location = Some(entry.value.clone()),
            "offset" => offset = parse(&entry.value)?,
            "length" => length = Some(parse(&entry.value)?),
            _ => {}
        }
    }
    let location = location.ok_or_else(|| err("the 'location' entry is missing".into()))?;
    let path = resolve_external_path(&location, model_dir).map_err(err)?;

    if let Some(length) = length
        && length != expected_bytes
    {
        return Err(err(format!("'length' is {length} bytes but shape {:?} needs {expected_bytes}", proto.dims)));
    }
    // Only regular files: opening a FIFO or a device could block or never end.
    let metadata = std::fs::metadata(&path).map_err(|e| err(format!("cannot stat {}: {e}", path.display())))?;
    if !metadata.is_file() {
        return Err(err(format!("{} is not a regular file", path.display())));
    }
    let mut file = File::open(&path).map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
    let file_len = file.metadata().map_err(|e| err(format!("cannot stat {}: {e}", path.display())))?.len();
    let end = offset.checked_add(expected_bytes).ok_or_else(|| err("offset + length overflows".into()))?;
    if end > file_len {
        return Err(err(format!(
            "bytes {offset}..{end} lie outside {} ({file_len} bytes); the data file is truncated or the offset is wrong",
            path.display()
        )));
    }
    file.seek(SeekFrom::Start(offset)).map_err(|e| err(format!("cannot seek in {}: {e}", path.display())))?;
    let mut data = vec![0u8; expected_bytes as usize];
    file.read_exact(&mut data).map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    Ok(data)
}

/// Resolves an external-data location against the model folder, rejecting
/// absolute paths, `..` components and symlinks that lead out of the folder.
pub fn resolve_external_path(location: &str, model_dir: &Path) -> std::result::Result<PathBuf, String> {
    let relative = Path::new(location);
    if location.is_empty() {
        return Err("'location' is empty".into());
    }
    for component in relative.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("location '{location}' contains '..'; external data must stay inside the model's folder"));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("location '{location}' is absolute; external data must be a path relative to the model's folder"));
            }
        }
    }
    let joined = model_dir.join(relative);
    let resolved = joined
        .canonicalize()
        .map_err(|e| format!("external data file {} cannot be opened: {e}", joined.display()))?;
    let root = model_dir.canonicalize().map_err(|e| format!("model folder {} cannot be resolved: {e}", model_dir.display()))?;
    if !resolved.starts_with(&root) {
        return Err(format!(
            "location '{location}' resolves to {}, outside the model's folder {} (through a symlink); the file was not read",
            resolved.display(),
            root.display()
        ));
    }
    Ok(resolved)
}
