//! Native code generation with Cranelift.
//!
//! A [`Program`] becomes one Cranelift module with:
//!
//! - one read-only data object per weight (64-byte aligned);
//! - one function per kernel call, specialized for its shapes, with the
//!   signature `kernel(args: *const *mut u8, task: u32)`;
//! - the entry point `NAME_run(inputs, outputs, arena, pool) -> i32`, which
//!   resolves each call's operand pointers into a stack array and runs the
//!   call's tasks through `pool->parallel_for`, or serially when `pool` is
//!   null;
//! - `NAME_arena_bytes()` and `NAME_abi_version()`.
//!
//! The same module is either finalized in memory ([`jit::JitModel`]) or
//! written as an object file ([`object::emit_object`]), so `vitc run`,
//! `vitc bench` and `vitc build` execute identical code. Vectors are F32X4:
//! Cranelift lowers 128-bit vectors only.

mod builder;
pub mod jit;
mod kernels;
mod math;
pub mod object;
pub mod target;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind, UserFuncName, types};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};

use crate::error::{Error, Result};
use crate::lower::{Buf, Program};
use builder::{I64, Kb};

/// Version of the calling convention between generated code and the runtime.
pub const ABI_VERSION: u32 = 1;

fn module_error(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("code generation failed: {e}"))
}

/// The signature of every kernel function.
fn kernel_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.push(AbiParam::new(I64));
    sig.params.push(AbiParam::new(types::I32));
    sig
}

/// The signature of `parallel_for(ctx, n_tasks, task, args)`.
fn parallel_for_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.push(AbiParam::new(I64));
    sig.params.push(AbiParam::new(types::I32));
    sig.params.push(AbiParam::new(I64));
    sig.params.push(AbiParam::new(I64));
    sig
}

/// Symbols of the functions emitted for a model.
pub struct ModuleSymbols {
    pub run: FuncId,
    pub arena_bytes: FuncId,
    pub abi_version: FuncId,
    /// Every kernel function with its code size in bytes and a label
    /// naming the step, kernel and node (for profilers' symbol maps).
    pub kernels: Vec<KernelSymbol>,
}

/// One emitted kernel function.
pub struct KernelSymbol {
    pub id: FuncId,
    pub code_bytes: usize,
    pub label: String,
}

/// Symbol names for the model `name`.
pub fn symbol_names(name: &str) -> [String; 3] {
    [format!("{name}_run"), format!("{name}_arena_bytes"), format!("{name}_abi_version")]
}

/// Emits `program` into `module` under the symbol prefix `name`.
pub fn emit_program<M: Module>(module: &mut M, program: &Program, name: &str) -> Result<ModuleSymbols> {
    let call_conv = module.isa().default_call_conv();
    let frontend = module.isa().frontend_config();
    let int8 = kernels::qgemm::DotStrategy::for_isa(module.isa());

    // Weights.
    let mut data_ids = Vec::with_capacity(program.weights.len());
    for (i, weight) in program.weights.iter().enumerate() {
        let id = module.declare_data(&format!("{name}_w{i}"), Linkage::Local, false, false).map_err(module_error)?;
        let mut desc = DataDescription::new();
        let bytes: Vec<u8> = weight.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        desc.define(bytes.into_boxed_slice());
        desc.set_align(64);
        module.define_data(id, &desc).map_err(module_error)?;
        data_ids.push(id);
    }

    // Kernels.
    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    let mut kernel_ids = Vec::with_capacity(program.steps.len());
    let mut kernels = Vec::with_capacity(program.steps.len());
    for (i, step) in program.steps.iter().enumerate() {
        let sig = kernel_signature(call_conv);
        let id = module.declare_function(&format!("{name}_k{i}"), Linkage::Local, &sig).map_err(module_error)?;
        ctx.func.signature = sig;
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let params = b.block_params(entry).to_vec();
            let mut kb = Kb { b, args: params[0], task: params[1], int8 };
            kernels::emit(&mut kb, &step.kernel);
            kb.b.ins().return_(&[]);
            kb.b.seal_all_blocks();
            kb.b.finalize(frontend);
        }
        let dump = std::env::var_os("VITC_DUMP_VCODE").is_some();
        ctx.set_disasm(dump);
        module
            .define_function(id, &mut ctx)
            .map_err(|e| Error::Internal(format!("code generation failed for kernel {i} ({}, node '{}'): {e:?}", step.kernel.name(), step.node)))?;
        if dump && let Some(code) = ctx.compiled_code() && let Some(vcode) = &code.vcode {
            eprintln!("; kernel {i}: {}\n{vcode}", step.kernel);
        }
        let code_bytes = ctx.compiled_code().map_or(0, |code| code.code_buffer().len());
        kernels.push(KernelSymbol { id, code_bytes, label: format!("{name}_k{i}:{}:{}", step.kernel.name(), step.node.replace(char::is_whitespace, "_")) });
        module.clear_context(&mut ctx);
        kernel_ids.push(id);
    }

    let [run_name, arena_name, abi_name] = symbol_names(name);
    let run = emit_entry(module, program, &run_name, &data_ids, &kernel_ids, &mut fctx)?;
    let arena_bytes = emit_constant_fn(module, &arena_name, types::I64, program.arena_bytes as i64, &mut fctx)?;
    let abi_version = emit_constant_fn(module, &abi_name, types::I32, ABI_VERSION as i64, &mut fctx)?;
    Ok(ModuleSymbols { run, arena_bytes, abi_version, kernels })
}

/// Emits `fn NAME() -> value`.
fn emit_constant_fn<M: Module>(module: &mut M, name: &str, ty: types::Type, value: i64, fctx: &mut FunctionBuilderContext) -> Result<FuncId> {
    let mut sig = module.make_signature();
    sig.returns.push(AbiParam::new(ty));
    let id = module.declare_function(name, Linkage::Export, &sig).map_err(module_error)?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let block = b.create_block();
        b.switch_to_block(block);
        let v = b.ins().iconst(ty, value);
        b.ins().return_(&[v]);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    module.define_function(id, &mut ctx).map_err(module_error)?;
    Ok(id)
}

/// Emits the entry point: resolve operand pointers, run each kernel's tasks.
fn emit_entry<M: Module>(
    module: &mut M,
    program: &Program,
    name: &str,
    data_ids: &[DataId],
    kernel_ids: &[FuncId],
    fctx: &mut FunctionBuilderContext,
) -> Result<FuncId> {
    let call_conv = module.isa().default_call_conv();
    let frontend = module.isa().frontend_config();
    let mut sig = module.make_signature();
    for _ in 0..4 {
        sig.params.push(AbiParam::new(I64));
    }
    sig.returns.push(AbiParam::new(types::I32));
    let id = module.declare_function(name, Linkage::Export, &sig).map_err(module_error)?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, id.as_u32());

    let data_refs: Vec<_> = data_ids.iter().map(|&d| module.declare_data_in_func(d, &mut ctx.func)).collect();
    let kernel_refs: Vec<_> = kernel_ids.iter().map(|&k| module.declare_func_in_func(k, &mut ctx.func)).collect();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let pfor_sig = b.import_signature(parallel_for_signature(call_conv));
        let block = b.create_block();
        b.append_block_params_for_function_params(block);
        b.switch_to_block(block);
        let p = b.block_params(block).to_vec();
        let (inputs, outputs, arena, pool) = (p[0], p[1], p[2], p[3]);
        let flags = MemFlagsData::new().with_notrap();

        let max_args = program.steps.iter().map(|s| s.args.len()).max().unwrap_or(1);
        let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, (max_args * 8) as u32, 4));

        for (i, step) in program.steps.iter().enumerate() {
            // Operand pointers.
            for (j, buf) in step.args.iter().enumerate() {
                let ptr = match *buf {
                    Buf::Input(k) => b.ins().load(I64, flags, inputs, (k * 8) as i32),
                    Buf::Output(k) => b.ins().load(I64, flags, outputs, (k * 8) as i32),
                    Buf::Weight(k) => b.ins().symbol_value(I64, data_refs[k]),
                    Buf::Arena { offset } => b.ins().iadd_imm_s(arena, offset as i64),
                };
                b.ins().stack_store(I64, ptr, slot, (j * 8) as i32);
            }
            let args = b.ins().stack_addr(I64, slot, 0);
            let tasks = kernels::task_count(&step.kernel);
            if tasks <= 1 {
                let zero = b.ins().iconst(types::I32, 0);
                b.ins().call(kernel_refs[i], &[args, zero]);
                continue;
            }

            // Parallel: pool->parallel_for(pool->ctx, tasks, kernel, args),
            // or a serial loop when there is no pool.
            let parallel = b.create_block();
            let serial = b.create_block();
            let next = b.create_block();
            b.ins().brif(pool, parallel, &[], serial, &[]);

            b.switch_to_block(parallel);
            let pool_ctx = b.ins().load(I64, flags, pool, 0);
            let pfor = b.ins().load(I64, flags, pool, 8);
            let n = b.ins().iconst(types::I32, tasks as i64);
            let kernel_addr = b.ins().func_addr(I64, kernel_refs[i]);
            b.ins().call_indirect(pfor_sig, pfor, &[pool_ctx, n, kernel_addr, args]);
            b.ins().jump(next, &[]);

            b.switch_to_block(serial);
            let header = b.create_block();
            let body = b.create_block();
            b.append_block_param(header, types::I32);
            let zero = b.ins().iconst(types::I32, 0);
            b.ins().jump(header, &[zero.into()]);
            b.switch_to_block(header);
            let t = b.block_params(header)[0];
            let more = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, t, tasks as i64);
            b.ins().brif(more, body, &[], next, &[]);
            b.switch_to_block(body);
            let args_again = b.ins().stack_addr(I64, slot, 0);
            b.ins().call(kernel_refs[i], &[args_again, t]);
            let t1 = b.ins().iadd_imm_s(t, 1);
            b.ins().jump(header, &[t1.into()]);

            b.switch_to_block(next);
        }
        let ok = b.ins().iconst(types::I32, 0);
        b.ins().return_(&[ok]);
        b.seal_all_blocks();
        b.finalize(frontend);
    }
    module.define_function(id, &mut ctx).map_err(|e| Error::Internal(format!("code generation failed for {name}: {e:?}")))?;
    Ok(id)
}
