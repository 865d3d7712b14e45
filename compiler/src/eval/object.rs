//! Loading an object file written by `vitc build`, so that `vitc eval`
//! measures exactly the code an application links.
//!
//! The object (position-independent, as `vitc build` writes it) is linked
//! into a shared library with the system C compiler (`cc`, or `$CC`) in a
//! temporary folder and loaded with libloading. The tensor shapes and the
//! symbol prefix come from `NAME.report.json`, which `vitc build` writes
//! next to `NAME.o`.

use std::path::{Path, PathBuf};
use std::process::Command;

use vitc_runtime::{EntryFn, Model, ModelInfo, TensorInfo};

use super::EvalError;

/// A built model loaded into this process.
pub struct LoadedObject {
    pub model: Model,
    pub input_shape: Vec<usize>,
    pub output_shapes: Vec<Vec<usize>>,
    // Declared after `model`, so they are dropped after it: the model's
    // entry point lives in the library, which lives in the folder.
    _library: libloading::Library,
    _dir: tempfile::TempDir,
}

fn object_error(path: &Path, message: impl Into<String>) -> EvalError {
    EvalError::Model { path: path.to_path_buf(), message: message.into() }
}

/// The `(name, shape)` pairs of a report's `inputs` or `outputs`.
fn report_tensors(report: &serde_json::Value, field: &str) -> Option<Vec<(String, Vec<usize>)>> {
    report.get(field)?.as_array()?.iter().map(|pair| {
        let name = pair.get(0)?.as_str()?.to_string();
        let shape = pair.get(1)?.as_array()?.iter().map(|d| d.as_u64().map(|d| d as usize)).collect::<Option<Vec<_>>>()?;
        Some((name, shape))
    }).collect()
}

/// Links and loads `object`, reading its shapes from the build report beside
/// it, after checking that it was built from `model`.
pub fn load_object(object: &Path, model: &Path) -> Result<LoadedObject, EvalError> {
    let report_path: PathBuf = object.with_extension("report.json");
    let text = std::fs::read_to_string(&report_path).map_err(|e| {
        object_error(object, format!("cannot read its build report {}: {e}; evaluate an object in the folder `vitc build` wrote", report_path.display()))
    })?;
    let report: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| object_error(object, format!("build report {} is not valid JSON: {e}", report_path.display())))?;
    let built_from = report.get("model_blake3").and_then(|h| h.as_str()).unwrap_or("");
    let expected = crate::build::model_hash(model).map_err(|e| object_error(model, e.to_string()))?;
    if built_from != expected {
        let source = report.get("model").and_then(|m| m.as_str()).unwrap_or("an unknown model");
        return Err(object_error(
            object,
            format!("it was built from {source}, not from {} (the model files differ); rebuild it from this model", model.display()),
        ));
    }
    // The shapes below come from the report, and the object writes that
    // many values, so a report of another build would corrupt memory.
    let object_bytes = std::fs::read(object).map_err(|e| object_error(object, format!("cannot read it: {e}")))?;
    let object_hash = blake3::hash(&object_bytes).to_hex().to_string();
    if report.get("object_blake3").and_then(|h| h.as_str()) != Some(object_hash.as_str()) {
        return Err(object_error(
            object,
            format!("its build report {} describes another object (a different or failed build); rebuild both with vitc build", report_path.display()),
        ));
    }
    let name = report.get("name").and_then(|n| n.as_str()).ok_or_else(|| object_error(object, "the build report has no model name"))?.to_string();
    let inputs = report_tensors(&report, "inputs").ok_or_else(|| object_error(object, "the build report has no input shapes"))?;
    let outputs = report_tensors(&report, "outputs").ok_or_else(|| object_error(object, "the build report has no output shapes"))?;
    let [(input_name, input_shape)] = &inputs[..] else {
        return Err(object_error(object, format!("the object has {} inputs; vitc eval feeds exactly one", inputs.len())));
    };

    // Link the object into a shared library.
    let dir = tempfile::tempdir().map_err(|e| object_error(object, format!("cannot create a temporary folder: {e}")))?;
    let library_path = dir.path().join(format!("lib{name}.so"));
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = Command::new(&compiler)
        .arg("-shared")
        .arg("-o")
        .arg(&library_path)
        .arg(object)
        .status()
        .map_err(|e| object_error(object, format!("cannot run the C compiler '{compiler}' to link it: {e}; install one or set CC")))?;
    if !status.success() {
        return Err(object_error(object, format!("'{compiler} -shared' failed to link it ({status}); was it built for this machine's target?")));
    }

    // SAFETY: the library is a `vitc build` object whose initializers do
    // nothing; loading it runs no foreign code beyond the dynamic linker's.
    let library = unsafe { libloading::Library::new(&library_path) }
        .map_err(|e| object_error(object, format!("cannot load the linked library: {e}")))?;
    let symbol_error = |symbol: &str, e: libloading::Error| object_error(object, format!("symbol {symbol} is missing: {e}"));
    let run_name = format!("{name}_run");
    let arena_name = format!("{name}_arena_bytes");
    let abi_name = format!("{name}_abi_version");
    // SAFETY: the symbols are the functions `vitc build` exports with these
    // exact signatures (see codegen::emit_program).
    let (entry, arena_bytes, abi_version) = unsafe {
        let entry: EntryFn = *library.get::<EntryFn>(run_name.as_bytes()).map_err(|e| symbol_error(&run_name, e))?;
        let arena: unsafe extern "C" fn() -> u64 =
            *library.get::<unsafe extern "C" fn() -> u64>(arena_name.as_bytes()).map_err(|e| symbol_error(&arena_name, e))?;
        let abi: unsafe extern "C" fn() -> u32 =
            *library.get::<unsafe extern "C" fn() -> u32>(abi_name.as_bytes()).map_err(|e| symbol_error(&abi_name, e))?;
        (entry, arena(), abi())
    };
    let info = ModelInfo {
        name: name.clone(),
        abi_version,
        arena_bytes,
        inputs: vec![TensorInfo::new(input_name.clone(), input_shape.clone())],
        outputs: outputs.iter().map(|(n, s)| TensorInfo::new(n.clone(), s.clone())).collect(),
    };
    // SAFETY: `entry` implements the tensors of `info`, read from the report
    // written by the same build, and `library` outlives `model` in the
    // returned struct.
    let model = unsafe { Model::new(info, entry) }.map_err(|e| object_error(object, e.to_string()))?;
    Ok(LoadedObject {
        model,
        input_shape: input_shape.clone(),
        output_shapes: outputs.into_iter().map(|(_, s)| s).collect(),
        _library: library,
        _dir: dir,
    })
}
