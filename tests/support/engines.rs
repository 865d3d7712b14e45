//! Runs one small model through the three executors: the reference
//! interpreter, generated code compiled in memory (JIT), and an object file
//! written by `vitc build`, linked into a shared library and loaded.

use std::path::PathBuf;
use std::process::Command;

use vitc::build::{BuildOptions, build, write_artifacts};
use vitc::codegen::jit::JitModel;
use vitc::interp;
use vitc::ir::Graph;
use vitc::lower::Program;
use vitc::onnx::{ImportOptions, import_file};
use vitc::passes::PassManager;
use vitc::tensor::Tensor;
use vitc_runtime::{EntryFn, Model, ModelInfo, TensorInfo};

use crate::ModelBuilder;

/// One executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Interpreter,
    Jit,
    Object,
}

pub const ALL_ENGINES: [Engine; 3] = [Engine::Interpreter, Engine::Jit, Engine::Object];

/// A model written to a temporary folder, imported and canonicalized.
pub struct TestModel {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub graph: Graph,
}

impl TestModel {
    /// Writes `model` and canonicalizes it; panics with the error otherwise.
    pub fn new(model: &ModelBuilder) -> TestModel {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = model.write(&dir.path().join("model.onnx"));
        let mut graph = import_file(&path, &ImportOptions::default()).unwrap_or_else(|e| panic!("import failed: {e}"));
        PassManager::canonicalize().run(&mut graph).unwrap_or_else(|e| panic!("canonicalization failed: {e}"));
        TestModel { dir, path, graph }
    }

    /// The shape of the single graph input.
    pub fn input_shape(&self) -> Vec<usize> {
        self.graph.fact(self.graph.inputs()[0]).shape.clone()
    }

    /// Runs the model on `input` (the single input, flattened) with `engine`
    /// and returns the single output, flattened.
    pub fn run(&self, engine: Engine, input: &[f32]) -> Vec<f32> {
        match engine {
            Engine::Interpreter => self.run_interpreter(input),
            Engine::Jit => {
                let program = Program::lower(&self.graph).unwrap_or_else(|e| panic!("lowering failed: {e}"));
                let mut jit = JitModel::compile(&program, "model").unwrap_or_else(|e| panic!("JIT compilation failed: {e}"));
                jit.model.run_simple(input, None).unwrap_or_else(|e| panic!("JIT run failed: {e}"))
            }
            Engine::Object => self.run_object(input),
        }
    }

    fn run_interpreter(&self, input: &[f32]) -> Vec<f32> {
        let shape = self.input_shape();
        let tensor = Tensor::F32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), input.to_vec()).expect("input length matches"));
        let outputs = interp::run(&self.graph, &[(self.graph.inputs()[0], tensor)]).unwrap_or_else(|e| panic!("interpreter failed: {e}"));
        outputs[0].as_f32().expect("f32 output").iter().copied().collect()
    }

    /// Builds the object with `vitc build`, links it into a shared library
    /// with the system C compiler and runs its entry point.
    fn run_object(&self, input: &[f32]) -> Vec<f32> {
        let out_dir = self.dir.path().join("build");
        let options = BuildOptions { name: "model".into(), ..BuildOptions::default() };
        let output = build(&self.path, &options).unwrap_or_else(|e| panic!("vitc build failed: {e}"));
        write_artifacts(&out_dir, &output).unwrap_or_else(|e| panic!("writing the artifacts failed: {e}"));
        let library_path = out_dir.join("libmodel.so");
        let status = Command::new("cc")
            .arg("-shared")
            .arg("-o")
            .arg(&library_path)
            .arg(out_dir.join("model.o"))
            .status()
            .expect("the C compiler `cc` runs");
        assert!(status.success(), "linking model.o failed: {status}");

        // SAFETY: the library holds only the code of `vitc build`, whose
        // object has no initializers.
        let library = unsafe { libloading::Library::new(&library_path) }.expect("the linked library loads");
        // SAFETY: `model_run` is the entry point `vitc build` exports with the
        // `EntryFn` signature.
        let entry: EntryFn = unsafe { *library.get::<EntryFn>(b"model_run").expect("model_run is exported") };
        let program = &output.program;
        let info = ModelInfo {
            name: "model".into(),
            abi_version: vitc::codegen::ABI_VERSION,
            arena_bytes: program.arena_bytes as u64,
            inputs: program.inputs.iter().map(|t| TensorInfo::new(t.name.clone(), t.shape.clone())).collect(),
            outputs: program.outputs.iter().map(|t| TensorInfo::new(t.name.clone(), t.shape.clone())).collect(),
        };
        // SAFETY: `entry` was generated from `program`, whose tensors `info`
        // lists, and `library` stays loaded until after the run below.
        let mut model = unsafe { Model::new(info, entry) }.expect("the model info is valid");
        let result = model.run_simple(input, None).unwrap_or_else(|e| panic!("object run failed: {e}"));
        drop(model);
        drop(library);
        result
    }
}

/// Checks `actual` against `expected` element by element: NaN must match
/// NaN, infinities must match exactly, and finite values must agree within
/// `tolerance` absolutely or relatively. Panics naming the engine and index.
pub fn assert_close(engine: Engine, actual: &[f32], expected: &[f64], tolerance: f64) {
    assert_eq!(actual.len(), expected.len(), "{engine:?}: output length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let a = f64::from(a);
        let ok = if e.is_nan() {
            a.is_nan()
        } else if e.is_infinite() {
            a == e
        } else {
            a.is_finite() && (a - e).abs() <= tolerance * e.abs().max(1.0)
        };
        assert!(ok, "{engine:?}: element {i} is {a:e}, expected {e:e} (tolerance {tolerance:e}); all: {actual:?}");
    }
}
