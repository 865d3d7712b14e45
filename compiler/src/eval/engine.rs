//! Running a classifier on batches of samples with generated code (JIT) or
//! the reference interpreter.
//!
//! The model is imported with its input bound to `[batch, ...]`, so one
//! compiled program serves every batch. The caller pads the last batch
//! when fewer samples remain.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use ndarray::{ArrayD, IxDyn};
use onnx_protobuf::tensor_shape_proto::dimension;
use onnx_protobuf::type_proto;
use vitc_runtime::ThreadPool;

use super::EvalError;
use crate::codegen::jit::JitModel;
use crate::ir::{Graph, ValueId};
use crate::lower::Program;
use crate::onnx::{ImportOptions, OnnxModel, import_model};
use crate::passes::PassManager;
use crate::tensor::{DType, ShapeDisplay, Tensor};

/// ONNX `TensorProto.DataType` code of float32.
const ONNX_FLOAT: i32 = 1;

/// Executor of a model: generated code or the interpreter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Generated native code, compiled in memory.
    Jit,
    /// The reference interpreter.
    Interpreter,
    /// An object file written by `vitc build`, linked and loaded.
    Object,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Jit => "jit",
            Engine::Interpreter => "interpreter",
            Engine::Object => "object",
        })
    }
}

/// Height and width of an image input, written `HxW` (e.g. `224x224`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageSize {
    pub height: usize,
    pub width: usize,
}

impl FromStr for ImageSize {
    type Err = String;

    fn from_str(text: &str) -> Result<ImageSize, String> {
        let invalid = || format!("'{text}' is not an image size; write it as HxW, e.g. 224x224");
        let (height, width) = text.split_once(['x', 'X']).ok_or_else(invalid)?;
        let height: usize = height.trim().parse().map_err(|_| invalid())?;
        let width: usize = width.trim().parse().map_err(|_| invalid())?;
        if height == 0 || width == 0 {
            return Err(format!("image size '{text}' must be at least 1x1"));
        }
        Ok(ImageSize { height, width })
    }
}

/// The single graph input of an ONNX model, as its file declares it.
#[derive(Clone, Debug)]
pub struct DeclaredInput {
    pub name: String,
    /// Dimensions, `None` where the model leaves one symbolic.
    pub dims: Vec<Option<usize>>,
}

impl DeclaredInput {
    /// Reads the model's graph input, which must be a single f32 tensor with
    /// a declared rank.
    pub fn of(onnx: &OnnxModel) -> Result<DeclaredInput, EvalError> {
        let model_error = |message: String| EvalError::Model { path: onnx.path.clone(), message };
        let graph = onnx.proto.graph.as_ref().expect("OnnxModel::load checks that the graph exists");

        // Before IR version 4, initializers may also be listed as inputs.
        let inputs: Vec<_> =
            graph.input.iter().filter(|input| !graph.initializer.iter().any(|init| init.name == input.name)).collect();
        let [input] = inputs[..] else {
            return Err(model_error(format!("the model has {} inputs, but evaluation and calibration feed exactly one", inputs.len())));
        };

        let tensor = match input.type_.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(tensor)) => tensor,
            _ => return Err(model_error(format!("input '{}' is not a tensor", input.name))),
        };
        if tensor.elem_type != ONNX_FLOAT {
            return Err(model_error(format!(
                "input '{}' has element type {}; vitc eval feeds f32 inputs only",
                input.name,
                DType::onnx_name(tensor.elem_type)
            )));
        }
        let Some(shape) = tensor.shape.as_ref() else {
            return Err(model_error(format!("input '{}' declares no shape, so vitc eval cannot bind it", input.name)));
        };

        let mut dims = Vec::with_capacity(shape.dim.len());
        for (axis, dim) in shape.dim.iter().enumerate() {
            dims.push(match dim.value {
                Some(dimension::Value::DimValue(value)) if value >= 0 => Some(value as usize),
                Some(dimension::Value::DimValue(value)) => {
                    return Err(model_error(format!("dimension {axis} of input '{}' is negative ({value})", input.name)));
                }
                _ => None,
            });
        }
        Ok(DeclaredInput { name: input.name.clone(), dims })
    }

    /// Returns the batch size that the model fixes, or `None` when the batch
    /// dimension is symbolic.
    pub fn fixed_batch(&self) -> Option<usize> {
        self.dims.first().copied().flatten()
    }

    /// Binds every dimension: the batch to `batch` unless the model fixes
    /// it, and the height and width of an `[N, C, H, W]` input to `size`.
    pub fn bind(&self, batch: usize, size: Option<ImageSize>) -> Result<Vec<usize>, String> {
        if self.dims.is_empty() {
            return Err(format!("input '{}' is a scalar; vitc eval needs a batch dimension", self.name));
        }
        let mut dims = self.dims.clone();
        if dims[0].is_none() {
            dims[0] = Some(batch);
        }

        if let Some(size) = size {
            if dims.len() != 4 {
                return Err(format!(
                    "--size applies only to an [N, C, H, W] input, but input '{}' has rank {}",
                    self.name,
                    dims.len()
                ));
            }
            for (axis, value) in [(2, size.height), (3, size.width)] {
                match dims[axis] {
                    None => dims[axis] = Some(value),
                    Some(fixed) if fixed != value => {
                        return Err(format!(
                            "--size {}x{} conflicts with input '{}', which the model fixes at {}",
                            size.height,
                            size.width,
                            self.name,
                            format_dims(&self.dims)
                        ));
                    }
                    Some(_) => {}
                }
            }
        }

        let mut bound = Vec::with_capacity(dims.len());
        for (axis, dim) in dims.iter().enumerate() {
            let Some(dim) = dim else {
                let hint = if dims.len() == 4 && (axis == 2 || axis == 3) {
                    "give the image size with --size HxW".to_string()
                } else {
                    "vitc eval binds only the batch dimension, and the height and width with --size".to_string()
                };
                return Err(format!("dimension {axis} of input '{}' is symbolic ({}); {hint}", self.name, format_dims(&self.dims)));
            };
            bound.push(*dim);
        }
        Ok(bound)
    }
}

fn format_dims(dims: &[Option<usize>]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.map_or("?".to_string(), |v| v.to_string())).collect();
    format!("[{}]", parts.join(", "))
}

/// A classifier imported and canonicalized for one batch size, not yet
/// compiled.
pub struct ImportedModel {
    path: PathBuf,
    graph: Graph,
    shape: Vec<usize>,
    classes: usize,
    /// Seconds spent importing and canonicalizing.
    seconds: f64,
}

impl ImportedModel {
    /// Imports and canonicalizes `onnx` with input `input_name` bound to
    /// `shape`, and checks that the first output contains `[batch, classes]`
    /// f32 logits, where the batch is `shape[0]`.
    pub fn import(onnx: &OnnxModel, input_name: &str, shape: &[usize]) -> Result<ImportedModel, EvalError> {
        let start = Instant::now();
        let path = onnx.path.clone();
        let import_error = |source: crate::Error| EvalError::Import { path: path.clone(), source };

        let options = ImportOptions {
            input_shapes: [(input_name.to_string(), shape.to_vec())].into_iter().collect(),
            ..ImportOptions::default()
        };
        let mut graph = import_model(onnx, &options).map_err(import_error)?;
        crate::ir::verify::verify(&graph, "import").map_err(import_error)?;
        PassManager::canonicalize().run(&mut graph).map_err(import_error)?;

        let classes = output_classes(&graph, shape[0]).map_err(|message| EvalError::Model { path: path.clone(), message })?;
        Ok(ImportedModel { path, graph, shape: shape.to_vec(), classes, seconds: start.elapsed().as_secs_f64() })
    }

    /// Compresses the imported graph by `compression`'s recipe.
    pub fn compress(&mut self, compression: &crate::compress::Compression) -> Result<crate::compress::CompressReport, EvalError> {
        let start = Instant::now();
        let report = crate::compress::compress_for(&self.path, &mut self.graph, compression)
            .map_err(|source| EvalError::Compress { path: self.path.clone(), source })?;
        self.seconds += start.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Logits per sample: the size of the first output's second dimension.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Compiles the model when `engine` is the JIT. The interpreter runs
    /// the canonical graph as it is.
    pub fn prepare(self, engine: Engine) -> Result<BatchModel, EvalError> {
        self.prepare_with(engine, None)
    }

    /// Like [`ImportedModel::prepare`]; `Engine::Object` runs `object`.
    pub fn prepare_with(self, engine: Engine, object: Option<super::object::LoadedObject>) -> Result<BatchModel, EvalError> {
        let start = Instant::now();
        let ImportedModel { path, graph, shape, classes, seconds } = self;
        let input = graph.inputs()[0];
        let executor = match engine {
            Engine::Jit => {
                let compile_error = |source: crate::Error| EvalError::Compile { path: path.clone(), source };
                let program = Program::lower(&graph).map_err(compile_error)?;
                let jit = JitModel::compile(&program, "eval").map_err(compile_error)?;
                let other_outputs = program.outputs[1..].iter().map(|t| vec![0.0; t.numel()]).collect();
                Executor::Jit { jit: Box::new(jit), other_outputs }
            }
            Engine::Interpreter => Executor::Interpreter { graph: Box::new(graph), input, shape: shape.clone() },
            Engine::Object => {
                let loaded = object.ok_or_else(|| EvalError::InvalidOption("--engine object needs --object".into()))?;
                let other_outputs = loaded.output_shapes[1..].iter().map(|s| vec![0.0; s.iter().product()]).collect();
                Executor::Object { loaded: Box::new(loaded), other_outputs }
            }
        };
        let batch = shape[0];
        Ok(BatchModel {
            path,
            batch,
            input_len: shape.iter().product(),
            classes,
            prepare_seconds: seconds + start.elapsed().as_secs_f64(),
            executor,
            logits: vec![0.0; batch * classes],
        })
    }
}

/// A classifier compiled for one batch size, ready to run batches.
pub struct BatchModel {
    path: PathBuf,
    batch: usize,
    input_len: usize,
    classes: usize,
    /// Seconds spent importing, canonicalizing and (for the JIT) compiling.
    prepare_seconds: f64,
    executor: Executor,
    /// The first output of the last batch, `batch * classes` values.
    logits: Vec<f32>,
}

enum Executor {
    Jit {
        jit: Box<JitModel>,
        /// Buffers for the outputs after the first, which eval ignores.
        other_outputs: Vec<Vec<f32>>,
    },
    Interpreter {
        graph: Box<Graph>,
        input: ValueId,
        shape: Vec<usize>,
    },
    Object {
        loaded: Box<super::object::LoadedObject>,
        other_outputs: Vec<Vec<f32>>,
    },
}

impl BatchModel {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Samples per run.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Logits per sample: the size of the first output's second dimension.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Seconds spent importing, canonicalizing and compiling the model.
    pub fn prepare_seconds(&self) -> f64 {
        self.prepare_seconds
    }

    /// Runs one batch. `input` contains `batch()` samples one after another,
    /// and the result contains `batch() * classes()` logits. Only the JIT
    /// uses `pool`.
    pub fn run(&mut self, input: &[f32], pool: Option<&ThreadPool>) -> Result<&[f32], EvalError> {
        assert_eq!(input.len(), self.input_len, "BatchModel::run: input length does not match the batch");
        let run_error = |source: Box<dyn std::error::Error + Send + Sync>| EvalError::Run { path: self.path.clone(), source };
        match &mut self.executor {
            Executor::Jit { jit, other_outputs } => {
                let mut outputs: Vec<&mut [f32]> = Vec::with_capacity(1 + other_outputs.len());
                outputs.push(&mut self.logits);
                outputs.extend(other_outputs.iter_mut().map(|o| o.as_mut_slice()));
                jit.model.run(&[input], &mut outputs, pool).map_err(|e| run_error(Box::new(e)))?;
            }
            Executor::Object { loaded, other_outputs } => {
                let mut outputs: Vec<&mut [f32]> = Vec::with_capacity(1 + other_outputs.len());
                outputs.push(&mut self.logits);
                outputs.extend(other_outputs.iter_mut().map(|o| o.as_mut_slice()));
                loaded.model.run(&[input], &mut outputs, pool).map_err(|e| run_error(Box::new(e)))?;
            }
            Executor::Interpreter { graph, input: input_id, shape } => {
                let array = ArrayD::from_shape_vec(IxDyn(shape), input.to_vec()).expect("input length is checked above");
                let outputs = crate::interp::run(graph, &[(*input_id, Tensor::F32(array))]).map_err(|e| run_error(Box::new(e)))?;
                let logits = outputs[0].as_f32().expect("prepare checks that the first output is f32");
                for (to, from) in self.logits.iter_mut().zip(logits.iter()) {
                    *to = *from;
                }
            }
        }
        Ok(&self.logits)
    }
}

/// Returns the class count of a graph whose first output must be f32
/// logits of shape `[batch, classes]`.
fn output_classes(graph: &Graph, batch: usize) -> Result<usize, String> {
    let Some(&output) = graph.outputs().first() else {
        return Err("the model has no outputs".to_string());
    };
    let name = &graph.value(output).name;
    let fact = graph.fact(output);
    if fact.dtype != DType::F32 {
        return Err(format!("the first output '{name}' has element type {}; vitc eval expects f32 logits", fact.dtype));
    }
    match fact.shape[..] {
        [rows, classes] if rows == batch && classes > 0 => Ok(classes),
        _ => Err(format!(
            "the first output '{name}' has shape {} for a batch of {batch}; vitc eval expects logits of shape [{batch}, classes]",
            ShapeDisplay(&fact.shape)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(dims: &[Option<usize>]) -> DeclaredInput {
        DeclaredInput { name: "x".to_string(), dims: dims.to_vec() }
    }

    #[test]
    fn image_size_parses() {
        assert_eq!("224x160".parse::<ImageSize>(), Ok(ImageSize { height: 224, width: 160 }));
        assert!("224".parse::<ImageSize>().is_err());
        assert!("0x4".parse::<ImageSize>().is_err());
    }

    #[test]
    fn bind_sets_symbolic_batch() {
        let input = declared(&[None, Some(1), Some(28), Some(28)]);
        assert_eq!(input.fixed_batch(), None);
        assert_eq!(input.bind(16, None).unwrap(), vec![16, 1, 28, 28]);
    }

    #[test]
    fn bind_keeps_fixed_batch() {
        let input = declared(&[Some(1), Some(3), Some(8), Some(8)]);
        assert_eq!(input.fixed_batch(), Some(1));
        assert_eq!(input.bind(16, None).unwrap(), vec![1, 3, 8, 8]);
    }

    #[test]
    fn bind_size_fills_symbolic_height_width() {
        let input = declared(&[None, Some(3), None, None]);
        assert_eq!(input.bind(2, Some(ImageSize { height: 32, width: 48 })).unwrap(), vec![2, 3, 32, 48]);
        let error = input.bind(2, None).unwrap_err();
        assert!(error.contains("--size"), "{error}");
    }

    #[test]
    fn bind_size_rejects_conflict() {
        let input = declared(&[None, Some(1), Some(28), Some(28)]);
        let error = input.bind(2, Some(ImageSize { height: 32, width: 32 })).unwrap_err();
        assert!(error.contains("conflicts"), "{error}");
    }
}
