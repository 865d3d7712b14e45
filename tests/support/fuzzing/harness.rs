//! Runs one fuzzer input through the compiler, stage by stage.
//!
//! The limits are far below the defaults so that one input finishes in
//! milliseconds and stays within libFuzzer's memory limit: tensors of at
//! most 16 MiB, graphs of at most 256 nodes, and JIT runs only for programs
//! whose scratch arena and outputs are small.

use std::path::PathBuf;
use std::sync::OnceLock;

use onnx_protobuf::Message;
use vitc::codegen::jit::JitModel;
use vitc::interp;
use vitc::lower::Program;
use vitc::onnx::{ImportOptions, OnnxModel, import_model};
use vitc::passes::PassManager;
use vitc::tensor::Tensor;

use super::spec::GraphSpec;

/// Largest tensor an input may declare or create, in bytes.
pub const MAX_TENSOR_BYTES: u64 = 16 << 20;
/// Largest graph accepted, in nodes.
pub const MAX_NODES: usize = 256;
/// Largest scratch arena plus I/O, in bytes, for which the JIT stage runs.
const MAX_JIT_BYTES: usize = 16 << 20;

/// The last stage an input reached: the one that rejected it, or
/// [`Stage::Ran`] when the generated code ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Decode,
    Load,
    Import,
    Canonicalize,
    Interpret,
    Lower,
    Compile,
    Ran,
}

/// Import options of the fuzz targets.
pub fn fuzz_options() -> ImportOptions {
    ImportOptions { max_tensor_bytes: MAX_TENSOR_BYTES, max_nodes: MAX_NODES, ..ImportOptions::default() }
}

/// An empty folder that external-data locations are resolved against, so
/// that no fuzzer input can name a file that exists.
fn empty_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vitc-fuzz-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary folder can be created");
        dir
    })
}

/// Fails when an error message is empty: every rejection must say why.
fn check_message(stage: Stage, error: &dyn std::fmt::Display) -> Stage {
    let text = error.to_string();
    assert!(!text.trim().is_empty(), "{stage:?} failed with an empty error message");
    stage
}

/// Treats `bytes` as an ONNX file.
pub fn run_model_bytes(bytes: &[u8]) -> Stage {
    match OnnxModel::from_bytes(bytes, empty_dir()) {
        Ok(model) => run_model(&model),
        Err(e) => check_message(Stage::Load, &e),
    }
}

/// Decodes `bytes` into a [`GraphSpec`] and runs the model it describes.
pub fn run_spec_bytes(bytes: &[u8]) -> Stage {
    let Ok(spec) = GraphSpec::from_bytes(bytes) else { return Stage::Decode };
    let encoded = spec.to_model().write_to_bytes().expect("a generated model serializes");
    run_model_bytes(&encoded)
}

/// Imports, canonicalizes, interprets, lowers, compiles and runs `model`,
/// stopping at the first stage that rejects it.
pub fn run_model(model: &OnnxModel) -> Stage {
    let mut graph = match import_model(model, &fuzz_options()) {
        Ok(graph) => graph,
        Err(e) => return check_message(Stage::Import, &e),
    };
    if let Err(e) = PassManager::canonicalize().run(&mut graph) {
        return check_message(Stage::Canonicalize, &e);
    }

    let inputs: Vec<_> = graph.inputs().iter().map(|&v| (v, Tensor::zeros(graph.fact(v).dtype, &graph.fact(v).shape))).collect();
    if let Err(e) = interp::run(&graph, &inputs) {
        return check_message(Stage::Interpret, &e);
    }

    let program = match Program::lower(&graph) {
        Ok(program) => program,
        Err(e) => return check_message(Stage::Lower, &e),
    };
    let io_floats: usize = program.inputs.iter().chain(&program.outputs).map(|t| t.numel()).sum();
    if program.arena_bytes.saturating_add(io_floats.saturating_mul(4)) > MAX_JIT_BYTES {
        return Stage::Lower;
    }
    let mut jit = match JitModel::compile(&program, "fuzz") {
        Ok(jit) => jit,
        Err(e) => return check_message(Stage::Compile, &e),
    };
    let input_data: Vec<Vec<f32>> = program.inputs.iter().map(|t| vec![0.0; t.numel()]).collect();
    let mut output_data: Vec<Vec<f32>> = program.outputs.iter().map(|t| vec![0.0; t.numel()]).collect();
    let inputs: Vec<&[f32]> = input_data.iter().map(Vec::as_slice).collect();
    let mut outputs: Vec<&mut [f32]> = output_data.iter_mut().map(Vec::as_mut_slice).collect();
    if let Err(e) = jit.model.run(&inputs, &mut outputs, None) {
        return check_message(Stage::Compile, &e);
    }
    Stage::Ran
}
