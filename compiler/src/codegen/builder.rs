//! Helpers for emitting kernel bodies: operand pointers, counted loops,
//! vector and scalar memory access.
//!
//! Every kernel is a function `kernel(args: *const *mut u8, task: u32)`:
//! `args` is the array of operand pointers in the kernel's documented
//! order, `task` the index of the slice of work this call does.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{BlockArg, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

pub const F32X4: Type = types::F32X4;
pub const I64: Type = types::I64;

/// Flags for loads and stores of kernel operands: in bounds by
/// construction, alignment unknown.
pub fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Flags for loads of weights and inputs that no kernel call writes, so
/// the compiler may hoist or reorder them.
pub fn mem_readonly() -> MemFlagsData {
    MemFlagsData::new().with_notrap().with_readonly().with_can_move()
}

/// The function being built, with the kernel's `args` and `task` values.
pub struct Kb<'a> {
    pub b: FunctionBuilder<'a>,
    pub args: Value,
    pub task: Value,
    /// How INT8 dot products are emitted for the target.
    pub int8: super::kernels::qgemm::DotStrategy,
}

impl Kb<'_> {
    /// Pointer operand `i`.
    pub fn arg(&mut self, i: usize) -> Value {
        self.b.ins().load(I64, mem_readonly(), self.args, (i * 8) as i32)
    }

    pub fn iconst(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    pub fn fconst(&mut self, v: f32) -> Value {
        self.b.ins().f32const(v)
    }

    pub fn splat(&mut self, v: f32) -> Value {
        let s = self.b.ins().f32const(v);
        self.b.ins().splat(F32X4, s)
    }

    /// `base + index * scale` for an i64 index (scale in bytes).
    pub fn offset(&mut self, base: Value, index: Value, scale: i64) -> Value {
        let scaled = if scale == 1 { index } else { self.b.ins().imul_imm_s(index, scale) };
        self.b.ins().iadd(base, scaled)
    }

    pub fn load_f32(&mut self, ptr: Value, byte_offset: i32) -> Value {
        self.b.ins().load(types::F32, mem(), ptr, byte_offset)
    }

    pub fn load_v(&mut self, ptr: Value, byte_offset: i32) -> Value {
        self.b.ins().load(F32X4, mem(), ptr, byte_offset)
    }

    pub fn store(&mut self, value: Value, ptr: Value, byte_offset: i32) {
        self.b.ins().store(mem(), value, ptr, byte_offset);
    }

    /// Returns the task index widened to i64.
    pub fn task_i64(&mut self) -> Value {
        self.b.ins().uextend(I64, self.task)
    }

    /// Emits `for i in (start..end).step_by(step) { body(i) }` over i64
    /// values; `body` must leave the builder in an open block.
    pub fn for_range(&mut self, start: Value, end: Value, step: i64, mut body: impl FnMut(&mut Self, Value)) {
        let header = self.b.create_block();
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, I64);
        self.b.ins().jump(header, &[BlockArg::Value(start)]);

        self.b.switch_to_block(header);
        let i = self.b.block_params(header)[0];
        let more = self.b.ins().icmp(IntCC::SignedLessThan, i, end);
        self.b.ins().brif(more, body_block, &[], exit, &[]);

        self.b.switch_to_block(body_block);
        body(self, i);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.ins().jump(header, &[BlockArg::Value(next)]);

        self.b.switch_to_block(exit);
    }

    /// Like [`Kb::for_range`] with constant bounds.
    pub fn for_count(&mut self, start: i64, end: i64, step: i64, body: impl FnMut(&mut Self, Value)) {
        let s = self.iconst(start);
        let e = self.iconst(end);
        self.for_range(s, e, step, body);
    }

    /// A loop carrying `init` values (e.g. vector accumulators) through
    /// `count` iterations; returns the final values.
    pub fn fold_range(
        &mut self,
        start: Value,
        end: Value,
        step: i64,
        init: &[Value],
        types_of: &[Type],
        mut body: impl FnMut(&mut Self, Value, &[Value]) -> Vec<Value>,
    ) -> Vec<Value> {
        let header = self.b.create_block();
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, I64);
        for &t in types_of {
            self.b.append_block_param(header, t);
            self.b.append_block_param(exit, t);
        }
        let mut args: Vec<BlockArg> = vec![BlockArg::Value(start)];
        args.extend(init.iter().map(|&v| BlockArg::Value(v)));
        self.b.ins().jump(header, &args);

        self.b.switch_to_block(header);
        let params = self.b.block_params(header).to_vec();
        let (i, carried) = (params[0], &params[1..]);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, i, end);
        let exit_args: Vec<BlockArg> = carried.iter().map(|&v| BlockArg::Value(v)).collect();
        self.b.ins().brif(more, body_block, &[], exit, &exit_args);

        self.b.switch_to_block(body_block);
        let updated = body(self, i, carried);
        let next = self.b.ins().iadd_imm_s(i, step);
        let mut args: Vec<BlockArg> = vec![BlockArg::Value(next)];
        args.extend(updated.iter().map(|&v| BlockArg::Value(v)));
        self.b.ins().jump(header, &args);

        self.b.switch_to_block(exit);
        self.b.block_params(exit).to_vec()
    }

    /// `limit` in the lanes where `limit < x`, else `x`: one `minps` on
    /// x86-64, where Cranelift's `fmin` takes seven instructions to order
    /// signed zeros and NaNs. A NaN in `x` passes through.
    pub fn min_v(&mut self, x: Value, limit: Value) -> Value {
        let below = self.b.ins().fcmp(FloatCC::LessThan, limit, x);
        let mask = self.b.ins().bitcast(F32X4, MemFlagsData::new(), below);
        self.b.ins().bitselect(mask, limit, x)
    }

    /// `limit` in the lanes where `x < limit`, else `x`: one `maxps` on
    /// x86-64 (see [`Kb::min_v`]). A NaN in `x` passes through.
    pub fn max_v(&mut self, x: Value, limit: Value) -> Value {
        let below = self.b.ins().fcmp(FloatCC::LessThan, x, limit);
        let mask = self.b.ins().bitcast(F32X4, MemFlagsData::new(), below);
        self.b.ins().bitselect(mask, limit, x)
    }

    /// Horizontal sum of the four lanes of a vector.
    pub fn hsum(&mut self, v: Value) -> Value {
        let lanes: Vec<Value> = (0..4).map(|l| self.b.ins().extractlane(v, l as u8)).collect();
        let a = self.b.ins().fadd(lanes[0], lanes[1]);
        let c = self.b.ins().fadd(lanes[2], lanes[3]);
        self.b.ins().fadd(a, c)
    }

    /// Horizontal max of the four lanes of a vector.
    pub fn hmax(&mut self, v: Value) -> Value {
        let lanes: Vec<Value> = (0..4).map(|l| self.b.ins().extractlane(v, l as u8)).collect();
        let a = self.b.ins().fmax(lanes[0], lanes[1]);
        let c = self.b.ins().fmax(lanes[2], lanes[3]);
        self.b.ins().fmax(a, c)
    }
}
