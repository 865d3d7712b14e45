//! Running generated code in-process with cranelift-jit.

use cranelift_jit::{ArenaMemoryProvider, JITBuilder, JITModule};
use cranelift_module::default_libcall_names;
use vitc_runtime::{EntryFn, Model, ModelInfo, TensorInfo};

use super::{emit_program, module_error, target};
use crate::error::{Error, Result};
use crate::lower::Program;

/// Address space reserved for one model's code and weights. The x86-64
/// code reaches its weights with 32-bit PC-relative offsets, so code and
/// data must lie within 2 GiB of each other; one reservation of this size
/// keeps them together. Pages are committed only as the JIT fills them.
const JIT_RESERVE_BYTES: usize = (2 << 30) - (1 << 20);

/// A model compiled into executable memory. The runtime's [`Model`] wrapper
/// checks shapes and owns the arena; the JIT module keeps the code alive
/// and frees it on drop.
pub struct JitModel {
    pub model: Model,
    /// Always `Some` until `drop` takes it.
    module: Option<JITModule>,
}

impl Drop for JitModel {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: the only pointer into the module's code is the entry of
            // `self.model`, which cannot be called once `self` is dropped, and
            // `Model` is not `Clone`, so no copy of it outlives `self`.
            unsafe { module.free_memory() };
        }
    }
}

impl JitModel {
    /// Compiles `program` for the host CPU.
    pub fn compile(program: &Program, name: &str) -> Result<JitModel> {
        let isa = target::isa_for(None, false)?;
        // With the default provider, each segment is a separate mapping, and
        // when other threads map memory in between (parallel tests, earlier
        // models), the weights can land more than 2 GiB from the code, which
        // makes cranelift-jit panic while relocating.
        let arena = ArenaMemoryProvider::new_with_size(JIT_RESERVE_BYTES)
            .map_err(|e| Error::Internal(format!("cannot reserve {JIT_RESERVE_BYTES} bytes of address space for JIT code: {e}")))?;
        let mut builder = JITBuilder::with_isa(isa, default_libcall_names());
        builder.memory_provider(Box::new(arena));
        let mut module = JITModule::new(builder);
        let symbols = emit_program(&mut module, program, name)?;
        module.finalize_definitions().map_err(module_error)?;
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
        Ok(JitModel { model, module: Some(module) })
    }
}
