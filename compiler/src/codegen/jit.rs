//! Running generated code in-process with cranelift-jit.

use cranelift_jit::{ArenaMemoryProvider, JITBuilder, JITModule};
use cranelift_module::default_libcall_names;
use vitc_runtime::{EntryFn, Model, ModelInfo, TensorInfo};

use super::{emit_program, module_error, target};
use crate::error::{Error, Result};
use crate::lower::Program;

/// Address space reserved for generated code, on top of the weights.
const CODE_RESERVE_BYTES: usize = 256 << 20;

/// A model compiled into executable memory. The runtime's [`Model`] wrapper
/// checks shapes and owns the arena; the JIT module keeps the code alive
/// until the `JitModel` is dropped, which frees it.
pub struct JitModel {
    pub model: Model,
    /// Always `Some` until `drop` takes it.
    module: Option<JITModule>,
    /// Address, code bytes and label of every kernel function.
    kernels: Vec<(usize, usize, String)>,
}

impl Drop for JitModel {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: the only pointer into the module's memory is the entry
            // point inside `self.model`. No caller can move `model` out,
            // because `JitModel` implements `Drop`, and `self.model` is
            // dropped right after this function returns without running.
            unsafe { module.free_memory() };
        }
    }
}

impl JitModel {
    /// Appends this model's kernels to `/tmp/perf-PID.map`, the file in
    /// which Linux `perf report` looks up the symbols of JIT code, so a
    /// profile names each sampled kernel by step, kind and ONNX node.
    /// Returns the file's path.
    pub fn write_perf_map(&self) -> std::io::Result<std::path::PathBuf> {
        use std::io::Write;
        let path = std::path::PathBuf::from(format!("/tmp/perf-{}.map", std::process::id()));
        let text: String = self.kernels.iter().map(|(addr, bytes, label)| format!("{addr:x} {bytes:x} {label}\n")).collect();
        std::fs::OpenOptions::new().create(true).append(true).open(&path)?.write_all(text.as_bytes())?;
        Ok(path)
    }

    /// Compiles `program` for the host CPU.
    pub fn compile(program: &Program, name: &str) -> Result<JitModel> {
        JitModel::compile_for(program, name, None)
    }

    /// Compiles `program` for `triple` (as `vitc build --target` takes it),
    /// or the host when `None`. The code runs in this process, so the
    /// target must name the host's architecture and only features the host
    /// has; this is for comparing code generated for a baseline CPU with
    /// code for the host's own features.
    pub fn compile_for(program: &Program, name: &str, triple: Option<&str>) -> Result<JitModel> {
        let isa = target::isa_for(triple, false)?;
        if isa.triple().architecture != target_lexicon::Triple::host().architecture {
            return Err(Error::Model(format!("cannot run code for {} on this {} machine", isa.triple(), target_lexicon::Triple::host())));
        }
        let mut builder = JITBuilder::with_isa(isa, default_libcall_names());
        builder.memory_provider(Box::new(reserve_memory(program)?));
        let mut module = JITModule::new(builder);
        let symbols = emit_program(&mut module, program, name)?;
        module.finalize_definitions().map_err(module_error)?;
        let kernels = symbols.kernels.iter().map(|k| (module.get_finalized_function(k.id) as usize, k.code_bytes, k.label.clone())).collect();
        let code = module.get_finalized_function(symbols.run);
        // SAFETY: `run` was emitted with the `EntryFn` signature (four
        // pointer-sized arguments, an i32 result) in the host calling convention.
        let entry: EntryFn = unsafe { std::mem::transmute::<*const u8, EntryFn>(code) };
        let info = ModelInfo {
            name: name.to_string(),
            abi_version: super::ABI_VERSION,
            arena_bytes: program.arena_bytes as u64,
            inputs: program.inputs.iter().map(|t| TensorInfo::new(t.name.clone(), t.shape.clone())).collect(),
            outputs: program.outputs.iter().map(|t| TensorInfo::new(t.name.clone(), t.shape.clone())).collect(),
        };
        // SAFETY: `entry` implements `info`'s tensors: the program was lowered
        // from the same inputs and outputs, and the code lives in `module`,
        // which outlives `model` inside the returned struct.
        let model = unsafe { Model::new(info, entry) }.map_err(|e| Error::Internal(e.to_string()))?;
        Ok(JitModel { model, module: Some(module), kernels })
    }
}

/// Reserves one contiguous range of address space for the code and the
/// weights. Calls and weight loads are PC-relative with a 32-bit offset, so
/// everything must lie within 2 GiB. Separate allocations can land further
/// apart (AddressSanitizer's allocator did), which made cranelift-jit panic
/// while patching relocations.
fn reserve_memory(program: &Program) -> Result<ArenaMemoryProvider> {
    let bytes = program.weight_bytes().saturating_add(CODE_RESERVE_BYTES);
    if bytes > i32::MAX as usize {
        return Err(Error::Model(format!(
            "{} MiB of weights do not fit the JIT, which reaches code and weights with 32-bit offsets (2 GiB in all)",
            program.weight_bytes() >> 20
        )));
    }
    ArenaMemoryProvider::new_with_size(bytes)
        .map_err(|e| Error::Internal(format!("cannot reserve {} MiB of address space for JIT code: {e}", bytes >> 20)))
}
