//! Running generated code in-process with cranelift-jit.

use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::default_libcall_names;
use vitc_runtime::{EntryFn, Model, ModelInfo, TensorInfo};

use super::{emit_program, module_error, target};
use crate::error::{Error, Result};
use crate::lower::Program;

/// A model compiled into executable memory. The runtime's [`Model`] wrapper
/// checks shapes and owns the arena; the JIT module keeps the code alive.
pub struct JitModel {
    pub model: Model,
    // Dropped after `model`, whose entry pointer refers into this module.
    _module: JITModule,
}

impl JitModel {
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
        let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
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
        Ok(JitModel { model, _module: module })
    }
}
