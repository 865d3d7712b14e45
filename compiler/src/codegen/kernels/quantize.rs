//! Quantize, dynamic quantize and dequantize kernels.
//!
//! Each computes exactly what the interpreter's `interp::quant` computes:
//! `round_half_even(x * inv_scale) + zero_point` in f32, a saturating
//! conversion to i32, and saturating narrowing to u8 (`packssdw` then
//! `packuswb` on x86-64), which clamps to 0..=255 like the interpreter.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Value, types};

use crate::codegen::builder::{F32X4, Kb, mem};

/// Elements per vector step: four F32X4 loads narrow into one I8X16 store.
const STEP: usize = 16;
/// Rows per task of per-row dynamic quantization.
pub const ROWS_PER_TASK: usize = 32;

/// Emits `out[start..end] = quantize(x[start..end])` with scalar values `inv` and `zero_point`.
fn quantize_span(kb: &mut Kb, out: Value, x: Value, start: Value, len: Value, inv: Value, zero_point: Value) {
    let inv_v = kb.b.ins().splat(F32X4, inv);
    let zp_v = kb.b.ins().splat(F32X4, zero_point);
    let vectors = kb.b.ins().udiv_imm_u(len, STEP as i64);
    let vector_end = kb.b.ins().imul_imm_s(vectors, STEP as i64);
    let zero = kb.iconst(0);
    kb.for_range(zero, vector_end, STEP as i64, |kb, i| {
        let index = kb.b.ins().iadd(start, i);
        let src = kb.offset(x, index, 4);
        let dst = kb.offset(out, index, 1);
        let mut ints = [index; 4];
        for (part, int) in ints.iter_mut().enumerate() {
            let v = kb.load_v(src, (part * 16) as i32);
            let scaled = kb.b.ins().fmul(v, inv_v);
            let rounded = kb.b.ins().nearest(scaled);
            let shifted = kb.b.ins().fadd(rounded, zp_v);
            *int = kb.b.ins().fcvt_to_sint_sat(types::I32X4, shifted);
        }
        let lo = kb.b.ins().snarrow(ints[0], ints[1]);
        let hi = kb.b.ins().snarrow(ints[2], ints[3]);
        let bytes = kb.b.ins().unarrow(lo, hi);
        kb.store(bytes, dst, 0);
    });
    kb.for_range(vector_end, len, 1, |kb, i| {
        let index = kb.b.ins().iadd(start, i);
        let src = kb.offset(x, index, 4);
        let dst = kb.offset(out, index, 1);
        let v = kb.load_f32(src, 0);
        let scaled = kb.b.ins().fmul(v, inv);
        let rounded = kb.b.ins().nearest(scaled);
        let shifted = kb.b.ins().fadd(rounded, zero_point);
        let int = kb.b.ins().fcvt_to_sint_sat(types::I32, shifted);
        let low = kb.b.ins().iconst(types::I32, 0);
        let high = kb.b.ins().iconst(types::I32, 255);
        let clamped = kb.b.ins().smax(int, low);
        let clamped = kb.b.ins().smin(clamped, high);
        let byte = kb.b.ins().ireduce(types::I8, clamped);
        kb.store(byte, dst, 0);
    });
}

/// `Quantize`: operands `out (u8), x`; task `t` covers elements `t * per_task ..`.
pub fn quantize(kb: &mut Kb, len: usize, scale: f32, zero_point: u8, per_task: usize) {
    let out = kb.arg(0);
    let x = kb.arg(1);
    let task = kb.task_i64();
    let start = kb.b.ins().imul_imm_s(task, per_task as i64);
    let total = kb.iconst(len as i64);
    let left = kb.b.ins().isub(total, start);
    let chunk = kb.iconst(per_task as i64);
    let count = kb.b.ins().smin(left, chunk);
    let inv = kb.fconst(1.0 / scale);
    let zp = kb.fconst(f32::from(zero_point));
    quantize_span(kb, out, x, start, count, inv, zp);
}

/// `DynamicQuantize` of `[rows, cols]`: operands `out (u8), params, x`.
pub fn dynamic_quantize(kb: &mut Kb, rows: usize, cols: usize) {
    let out = kb.arg(0);
    let params = kb.arg(1);
    let x = kb.arg(2);
    let task = kb.task_i64();
    let first = kb.b.ins().imul_imm_s(task, ROWS_PER_TASK as i64);
    let last = kb.b.ins().iadd_imm_s(first, ROWS_PER_TASK as i64);
    let rows_v = kb.iconst(rows as i64);
    let last = kb.b.ins().smin(last, rows_v);
    kb.for_range(first, last, 1, |kb, row| {
        let start = kb.b.ins().imul_imm_s(row, cols as i64);
        let (lo, hi) = row_range(kb, x, start, cols);

        // scale = (hi - lo) / 255, or 1 when 0; zero point as in `dynamic_params`.
        let span = kb.b.ins().fsub(hi, lo);
        let c255 = kb.fconst(255.0);
        let scale = kb.b.ins().fdiv(span, c255);
        let zero = kb.fconst(0.0);
        let one = kb.fconst(1.0);
        let is_zero = kb.b.ins().fcmp(FloatCC::Equal, scale, zero);
        let scale = kb.b.ins().select(is_zero, one, scale);
        let inv = kb.b.ins().fdiv(one, scale);
        let neg_lo = kb.b.ins().fneg(lo);
        let zp = kb.b.ins().fmul(neg_lo, inv);
        let zp = kb.b.ins().nearest(zp);
        let zp = kb.b.ins().fmax(zp, zero);
        let zp = kb.b.ins().fmin(zp, c255);

        let p = kb.offset(params, row, 8);
        kb.store(scale, p, 0);
        kb.store(zp, p, 4);
        let len = kb.iconst(cols as i64);
        quantize_span(kb, out, x, start, len, inv, zp);
    });
}

/// `(min(0, min x), max(0, max x))` over `x[start..start + cols]`.
fn row_range(kb: &mut Kb, x: Value, start: Value, cols: usize) -> (Value, Value) {
    let zero_v = kb.splat(0.0);
    let vector_cols = (cols / 4 * 4) as i64;
    let begin = kb.iconst(0);
    let vector_end = kb.iconst(vector_cols);
    let state = kb.fold_range(begin, vector_end, 4, &[zero_v, zero_v], &[F32X4, F32X4], |kb, i, carried| {
        let index = kb.b.ins().iadd(start, i);
        let src = kb.offset(x, index, 4);
        let v = kb.load_v(src, 0);
        // NaNs are skipped, as the interpreter's `f32::min` fold skips them.
        vec![kb.min_v(carried[0], v), kb.max_v(carried[1], v)]
    });
    let mut lo = horizontal(kb, state[0], false);
    let mut hi = horizontal(kb, state[1], true);
    for c in vector_cols as usize..cols {
        let index = kb.b.ins().iadd_imm_s(start, c as i64);
        let src = kb.offset(x, index, 4);
        let v = kb.load_f32(src, 0);
        lo = kb.b.ins().fmin(lo, v);
        hi = kb.b.ins().fmax(hi, v);
    }
    (lo, hi)
}

fn horizontal(kb: &mut Kb, v: Value, max: bool) -> Value {
    if max { kb.hmax(v) } else {
        let lanes: Vec<Value> = (0..4).map(|l| kb.b.ins().extractlane(v, l as u8)).collect();
        let a = kb.b.ins().fmin(lanes[0], lanes[1]);
        let c = kb.b.ins().fmin(lanes[2], lanes[3]);
        kb.b.ins().fmin(a, c)
    }
}

/// `Dequantize`: operands `out, q (u8)`.
pub fn dequantize(kb: &mut Kb, len: usize, scale: f32, zero_point: u8) {
    let out = kb.arg(0);
    let q = kb.arg(1);
    let scale = kb.fconst(scale);
    kb.for_count(0, len as i64, 1, |kb, i| {
        let src = kb.offset(q, i, 1);
        let byte = kb.b.ins().uload8(types::I32, mem(), src, 0);
        let centered = kb.b.ins().iadd_imm_s(byte, -i64::from(zero_point));
        let real = kb.b.ins().fcvt_from_sint(types::F32, centered);
        let value = kb.b.ins().fmul(real, scale);
        let dst = kb.offset(out, i, 4);
        kb.store(value, dst, 0);
    });
}
