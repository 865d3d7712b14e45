//! Weights from a model distilled elsewhere: a `.safetensors` file or the
//! initializers of an `.onnx` model, matched to the model's constants by name.
//!
//! A constant matches a file tensor named like its IR value
//! (`/blocks.0/attn/q/weight`) or like a PyTorch state dict entry of the
//! same layer (`blocks.0.attn.q.weight`; a LayerNorm's `scale` also
//! matches `weight`). Linear weights are `[out, in]` in both. Every shape
//! must match exactly; tensors of the file that match nothing are an error
//! unless `allow-unmatched` is set, and are listed in the report either way.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use super::edit::Edit;
use super::recipe::LoadWeightsSpec;
use crate::error::{Error, Result};
use crate::ir::{Graph, Op};
use crate::onnx::{ImportOptions, import_file};
use crate::passes::PassManager;
use crate::tensor::{ShapeDisplay, Tensor};

/// Result of matching file tensors to model weights.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct LoadReport {
    pub source: String,
    pub replaced: Vec<String>,
    /// File tensors that match no constant of the model.
    pub unmatched: Vec<String>,
    /// Float constants of the model that the file does not cover.
    pub kept: usize,
}

pub fn run(graph: &Graph, spec: &LoadWeightsSpec) -> Result<(Vec<Edit>, LoadReport)> {
    let constants = constant_aliases(graph);
    let file = read_tensors(&spec.path, graph, &constants)?;

    let mut edits = Vec::new();
    let mut report = LoadReport { source: spec.path.display().to_string(), unmatched: file.unmatched, ..LoadReport::default() };
    let mut mismatches = Vec::new();
    // Model value name to the file tensor that replaces it.
    let mut covered: HashMap<&str, &str> = HashMap::new();
    for (name, tensor) in &file.matched {
        let value = &constants[name.as_str()];
        if let Some(first) = covered.insert(value, name) {
            return Err(Error::Compress(format!(
                "{}: tensors '{first}' and '{name}' both name the model's '{value}'; keep one of them in the file",
                spec.path.display()
            )));
        }
        let fact = graph.fact(graph.value_ids().find(|&v| graph.value(v).name == *value).expect("alias of an existing value"));
        if fact.shape != tensor.shape() {
            mismatches.push(format!(
                "'{name}' is {} in the file but the model's '{value}' is {}",
                ShapeDisplay(tensor.shape()),
                ShapeDisplay(&fact.shape)
            ));
            continue;
        }
        if tensor.count_non_finite() > 0 {
            return Err(Error::Compress(format!("{}: tensor '{name}' contains NaN or infinite values", spec.path.display())));
        }
        report.replaced.push(name.clone());
        edits.push(Edit::Constant { value: value.clone(), tensor: tensor.clone() });
    }
    if !mismatches.is_empty() {
        return Err(Error::Compress(format!(
            "{}: {} tensor shape(s) do not match the model:\n  {}",
            spec.path.display(),
            mismatches.len(),
            mismatches.join("\n  ")
        )));
    }
    let mut examples = report.unmatched.clone();
    examples.truncate(20);
    if edits.is_empty() {
        return Err(Error::Compress(format!(
            "{}: no tensor matches a weight of the model (the file has {}); names match a weight's IR name \
             (/blocks.0/mlp/fc1/weight) or its PyTorch name (blocks.0.mlp.fc1.weight), so strip any prefix such as module.",
            spec.path.display(),
            examples.join(", ")
        )));
    }
    if !report.unmatched.is_empty() && !spec.allow_unmatched {
        return Err(Error::Compress(format!(
            "{}: {} tensor(s) match no weight of the model, e.g. {}; to load the rest, use a recipe whose load-weights \
             pass sets allow-unmatched = true",
            spec.path.display(),
            report.unmatched.len(),
            examples.join(", ")
        )));
    }
    let distinct_values: std::collections::HashSet<&String> = constants.values().collect();
    report.kept = distinct_values.len() - covered.len();
    Ok((edits, report))
}

/// Names of the Linear layers whose weight or bias `edits` replace: the
/// layers that a later `distill` pass with `layers = "changed"` refits.
pub fn changed_linears(graph: &Graph, edits: &[Edit]) -> Vec<String> {
    let replaced: std::collections::HashSet<&str> = edits
        .iter()
        .filter_map(|edit| match edit {
            Edit::Constant { value, .. } => Some(value.as_str()),
            _ => None,
        })
        .collect();
    graph
        .topo_order()
        .into_iter()
        .filter(|&id| graph.node(id).op == Op::Linear)
        .filter(|&id| graph.node(id).inputs.iter().skip(1).flatten().any(|&v| replaced.contains(graph.value(v).name.as_str())))
        .map(|id| graph.node(id).name.clone())
        .collect()
}

/// Tensors of a weights file: those that name a float constant of the
/// model (converted to f32), and the names of the rest.
struct FileTensors {
    matched: BTreeMap<String, Arc<Tensor>>,
    unmatched: Vec<String>,
}

/// Every name a float constant answers to, mapped to its value name.
fn constant_aliases(graph: &Graph) -> HashMap<String, String> {
    let mut aliases = HashMap::new();
    for value in graph.value_ids() {
        let v = graph.value(value);
        if graph.producer(value).op != Op::Constant || !v.fact.dtype.is_float() {
            continue;
        }
        let name = v.name.clone();
        let dotted = name.trim_start_matches('/').replace('/', ".");
        if let Some(layer) = dotted.strip_suffix(".scale") {
            aliases.insert(format!("{layer}.weight"), name.clone());
        }
        aliases.insert(dotted, name.clone());
        aliases.insert(name.clone(), name);
    }
    aliases
}

fn read_tensors(path: &Path, graph: &Graph, aliases: &HashMap<String, String>) -> Result<FileTensors> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match extension.as_str() {
        "safetensors" => read_safetensors(path, aliases),
        "onnx" => read_onnx(path, graph, aliases)
            .map_err(|e| Error::Compress(format!("load-weights: failed to read the student model {}: {e}", path.display()))),
        _ => Err(Error::Compress(format!("{}: load-weights reads .safetensors or .onnx files", path.display()))),
    }
}

/// Checks that `path` is a readable safetensors file, so that a damaged
/// file fails before the passes in front of load-weights run. The file is
/// read whole, because the safetensors crate checks the header against the
/// data length, and read again when the pass runs.
pub fn check_file(path: &Path) -> Result<()> {
    if path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("safetensors")) {
        let bytes = crate::data::read_regular_file(path)?;
        SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::Compress(format!("{} is not a valid safetensors file: {e}", path.display())))?;
    }
    Ok(())
}

/// Reads a safetensors file and converts only the tensors that name a
/// constant of the model. The others are only listed: integer buffers
/// such as BatchNorm's `num_batches_tracked`, or a head the model lacks.
fn read_safetensors(path: &Path, aliases: &HashMap<String, String>) -> Result<FileTensors> {
    // NOTE: the whole file is read into memory, the tensors that match
    // nothing included.
    let bytes = crate::data::read_regular_file(path)?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Compress(format!("{} is not a valid safetensors file: {e}", path.display())))?;
    let mut tensors = FileTensors { matched: BTreeMap::new(), unmatched: Vec::new() };
    for (name, view) in file.tensors() {
        if !aliases.contains_key(&name) {
            tensors.unmatched.push(name);
            continue;
        }
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::F64 => data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
            other => {
                return Err(Error::Compress(format!(
                    "{}: tensor '{name}' has element type {other:?}; load-weights reads F32, F16, BF16 and F64",
                    path.display()
                )));
            }
        };
        let array = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(view.shape()), values)
            .map_err(|e| Error::Compress(format!("{}: tensor '{name}': {e}", path.display())))?;
        tensors.matched.insert(name, Arc::new(Tensor::F32(array)));
    }
    tensors.unmatched.sort();
    Ok(tensors)
}

/// Canonical constants of another ONNX model, bound to this graph's input shape.
fn read_onnx(path: &Path, graph: &Graph, aliases: &HashMap<String, String>) -> Result<FileTensors> {
    let input = graph.inputs()[0];
    let options = ImportOptions {
        input_shapes: [(graph.value(input).name.clone(), graph.fact(input).shape.clone())].into_iter().collect(),
        ..ImportOptions::default()
    };
    let mut other = import_file(path, &options)?;
    PassManager::canonicalize().run(&mut other)?;
    let mut tensors = FileTensors { matched: BTreeMap::new(), unmatched: Vec::new() };
    for value in other.value_ids() {
        if other.producer(value).op == Op::Constant && other.fact(value).dtype.is_float() {
            let name = other.value(value).name.clone();
            if !aliases.contains_key(&name) {
                tensors.unmatched.push(name);
                continue;
            }
            let tensor = other.konst(value).expect("constant has data").clone();
            tensors.matched.insert(name, Arc::new(tensor.cast(crate::tensor::DType::F32)));
        }
    }
    tensors.unmatched.sort();
    Ok(tensors)
}
