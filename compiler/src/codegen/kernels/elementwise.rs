//! Elementwise kernels: unary functions, broadcasting binary operators,
//! per-channel affine maps and fills.
//!
//! Binary operators pick a vector loop when both operands walk the
//! innermost axis contiguously or one of them is constant along it (a
//! per-row scalar); other layouts use a scalar loop over the index space.

use cranelift_codegen::ir::{InstBuilder, Value};

use crate::codegen::builder::{F32X4, Kb};
use crate::codegen::math;
use crate::lower::kernel::{BinaryFn, UnaryFn};

fn apply_unary(kb: &mut Kb, function: UnaryFn, x: Value) -> Value {
    match function {
        UnaryFn::Copy => x,
        UnaryFn::Relu => {
            let zero = kb.splat(0.0);
            kb.b.ins().fmax(x, zero)
        }
        UnaryFn::Sigmoid => math::sigmoid(kb, x),
        UnaryFn::Tanh => math::tanh(kb, x),
        UnaryFn::Erf => math::erf(kb, x),
        UnaryFn::Gelu => math::gelu(kb, x),
        UnaryFn::GeluTanh => math::gelu_tanh(kb, x),
        UnaryFn::Exp => math::exp(kb, x),
        UnaryFn::Sqrt => kb.b.ins().sqrt(x),
        UnaryFn::Neg => kb.b.ins().fneg(x),
        UnaryFn::Abs => kb.b.ins().fabs(x),
        UnaryFn::Reciprocal => {
            let one = kb.splat(1.0);
            kb.b.ins().fdiv(one, x)
        }
    }
}

/// Operands `out, x`; this task covers elements `[task * per_task, ..)`.
pub fn unary(kb: &mut Kb, len: usize, function: UnaryFn, per_task: usize) {
    let out = kb.arg(0);
    let x = kb.arg(1);
    let task = kb.task_i64();
    let start = kb.b.ins().imul_imm_s(task, per_task as i64);
    let end = kb.b.ins().iadd_imm_s(start, per_task as i64);
    let len_v = kb.iconst(len as i64);
    let end = kb.b.ins().smin(end, len_v);
    // Whole vectors up to a multiple of 4 (per_task is a multiple of 4).
    let vec_end = {
        let limit = kb.iconst((len / 4 * 4) as i64);
        kb.b.ins().smin(end, limit)
    };
    kb.for_range(start, vec_end, 4, |kb, i| {
        let s = kb.offset(x, i, 4);
        let d = kb.offset(out, i, 4);
        let v = kb.load_v(s, 0);
        let y = apply_unary(kb, function, v);
        kb.store(y, d, 0);
    });
    kb.for_range(vec_end, end, 1, |kb, i| {
        let s = kb.offset(x, i, 4);
        let d = kb.offset(out, i, 4);
        let v = kb.load_f32(s, 0);
        let v = kb.b.ins().splat(F32X4, v);
        let y = apply_unary(kb, function, v);
        let y = kb.b.ins().extractlane(y, 0);
        kb.store(y, d, 0);
    });
}

fn apply_binary(kb: &mut Kb, function: BinaryFn, a: Value, b: Value) -> Value {
    match function {
        BinaryFn::Add => kb.b.ins().fadd(a, b),
        BinaryFn::Sub => kb.b.ins().fsub(a, b),
        BinaryFn::Mul => kb.b.ins().fmul(a, b),
        BinaryFn::Div => kb.b.ins().fdiv(a, b),
        BinaryFn::Max => kb.b.ins().fmax(a, b),
        BinaryFn::Min => kb.b.ins().fmin(a, b),
    }
}

/// Operands `out, a, b`: loops over all axes but the last, then the last
/// axis in vectors when its strides allow.
pub fn binary(kb: &mut Kb, function: BinaryFn, shape: &[usize], a_strides: &[usize], b_strides: &[usize]) {
    let out = kb.arg(0);
    let a = kb.arg(1);
    let b = kb.arg(2);
    let rank = shape.len();
    if rank == 0 {
        let x = kb.load_f32(a, 0);
        let y = kb.load_f32(b, 0);
        let xv = kb.b.ins().splat(F32X4, x);
        let yv = kb.b.ins().splat(F32X4, y);
        let r = apply_binary(kb, function, xv, yv);
        let r = kb.b.ins().extractlane(r, 0);
        kb.store(r, out, 0);
        return;
    }
    let inner = shape[rank - 1];
    let (sa, sb) = (a_strides[rank - 1], b_strides[rank - 1]);
    let out_strides = crate::lower::kernel_strides(shape);
    let zero = kb.iconst(0);
    nest(kb, shape, 0, [zero, zero, zero], &[&out_strides, a_strides, b_strides], &mut |kb, [o, ia, ib]| {
        let pa = kb.offset(a, ia, 4);
        let pb = kb.offset(b, ib, 4);
        let po = kb.offset(out, o, 4);
        let vectorizable = (sa == 1 || sa == 0) && (sb == 1 || sb == 0);
        let vectors = if vectorizable { inner / 4 } else { 0 };
        let broadcast = |kb: &mut Kb, p: Value| {
            let s = kb.load_f32(p, 0);
            kb.b.ins().splat(F32X4, s)
        };
        let av_fixed = (sa == 0).then(|| broadcast(kb, pa));
        let bv_fixed = (sb == 0).then(|| broadcast(kb, pb));
        kb.for_count(0, vectors as i64, 1, |kb, i| {
            let av = match av_fixed {
                Some(v) => v,
                None => {
                    let p = kb.offset(pa, i, 16);
                    kb.load_v(p, 0)
                }
            };
            let bv = match bv_fixed {
                Some(v) => v,
                None => {
                    let p = kb.offset(pb, i, 16);
                    kb.load_v(p, 0)
                }
            };
            let r = apply_binary(kb, function, av, bv);
            let d = kb.offset(po, i, 16);
            kb.store(r, d, 0);
        });
        for t in vectors * 4..inner {
            let x = kb.load_f32(pa, (t * sa * 4) as i32);
            let y = kb.load_f32(pb, (t * sb * 4) as i32);
            let xv = kb.b.ins().splat(F32X4, x);
            let yv = kb.b.ins().splat(F32X4, y);
            let r = apply_binary(kb, function, xv, yv);
            let r = kb.b.ins().extractlane(r, 0);
            kb.store(r, po, (t * 4) as i32);
        }
    });
}

/// Emits loops over axes `axis..rank-1` of `shape`, tracking one element
/// offset per stride list, and calls `body` with the offsets at the start
/// of each innermost row.
fn nest(kb: &mut Kb, shape: &[usize], axis: usize, offsets: [Value; 3], strides: &[&[usize]; 3], body: &mut dyn FnMut(&mut Kb, [Value; 3])) {
    if axis + 1 >= shape.len() {
        body(kb, offsets);
        return;
    }
    kb.for_count(0, shape[axis] as i64, 1, |kb, i| {
        let next: Vec<Value> = (0..3)
            .map(|s| {
                let step = kb.b.ins().imul_imm_s(i, strides[s][axis] as i64);
                kb.b.ins().iadd(offsets[s], step)
            })
            .collect();
        nest(kb, shape, axis + 1, [next[0], next[1], next[2]], strides, body);
    });
}

/// Operands `out, x, scale, shift`.
pub fn channel_affine(kb: &mut Kb, outer: usize, channels: usize, inner: usize) {
    let out = kb.arg(0);
    let x = kb.arg(1);
    let scale = kb.arg(2);
    let shift = kb.arg(3);
    kb.for_count(0, (outer * channels) as i64, 1, |kb, plane| {
        let c = kb.b.ins().urem_imm_u(plane, channels as i64);
        let sp = kb.offset(scale, c, 4);
        let tp = kb.offset(shift, c, 4);
        let s = kb.load_f32(sp, 0);
        let t = kb.load_f32(tp, 0);
        let sv = kb.b.ins().splat(F32X4, s);
        let tv = kb.b.ins().splat(F32X4, t);
        let base = kb.b.ins().imul_imm_s(plane, inner as i64);
        let src = kb.offset(x, base, 4);
        let dst = kb.offset(out, base, 4);
        kb.for_count(0, (inner / 4) as i64, 1, |kb, i| {
            let p = kb.offset(src, i, 16);
            let v = kb.load_v(p, 0);
            let y = kb.b.ins().fma(v, sv, tv);
            let d = kb.offset(dst, i, 16);
            kb.store(y, d, 0);
        });
        for t_ in inner / 4 * 4..inner {
            let v = kb.load_f32(src, (t_ * 4) as i32);
            let y = kb.b.ins().fma(v, s, t);
            kb.store(y, dst, (t_ * 4) as i32);
        }
    });
}

/// Operands `out`.
pub fn fill(kb: &mut Kb, len: usize, value: f32) {
    let out = kb.arg(0);
    let v = kb.fconst(value);
    kb.for_count(0, len as i64, 1, |kb, i| {
        let p = kb.offset(out, i, 4);
        kb.store(v, p, 0);
    });
}
