//! Row kernels: LayerNorm and Softmax over the last axis.
//!
//! Each row is processed in F32X4 steps plus a scalar tail (computed in
//! lane 0 of a vector so the same math code serves both). Softmax
//! subtracts the row maximum before `exp`, so huge logits cannot overflow;
//! LayerNorm takes the mean first and the variance of the centered values
//! second, in f32, with `epsilon` inside the square root.

use cranelift_codegen::ir::{InstBuilder, Value, types};

use crate::codegen::builder::{F32X4, Kb};
use crate::codegen::math;

/// Row range `[start, end)` of this task for `rows` rows, `per_task` at a time.
fn task_rows(kb: &mut Kb, rows: usize, per_task: usize) -> (Value, Value) {
    let task = kb.task_i64();
    let start = kb.b.ins().imul_imm_s(task, per_task as i64);
    let end = kb.b.ins().iadd_imm_s(start, per_task as i64);
    let limit = kb.iconst(rows as i64);
    let end = kb.b.ins().smin(end, limit);
    (start, end)
}

/// Sum over `cols` elements at `ptr` of `f(x)` (per lane).
fn row_sum(kb: &mut Kb, ptr: Value, cols: usize, f: &mut dyn FnMut(&mut Kb, Value) -> Value) -> Value {
    let vectors = cols / 4;
    let zero = kb.splat(0.0);
    let start = kb.iconst(0);
    let end = kb.iconst(vectors as i64);
    let acc = kb.fold_range(start, end, 1, &[zero], &[F32X4], |kb, i, acc| {
        let p = kb.offset(ptr, i, 16);
        let x = kb.load_v(p, 0);
        let fx = f(kb, x);
        vec![kb.b.ins().fadd(acc[0], fx)]
    });
    let mut total = kb.hsum(acc[0]);
    for t in vectors * 4..cols {
        let x = kb.load_f32(ptr, (t * 4) as i32);
        let xv = kb.b.ins().splat(F32X4, x);
        let fx = f(kb, xv);
        let lane = kb.b.ins().extractlane(fx, 0);
        total = kb.b.ins().fadd(total, lane);
    }
    total
}

/// Applies `out[i] = f(x[i])` over a row, vector by vector.
fn row_map(kb: &mut Kb, src: Value, dst: Value, cols: usize, f: &mut dyn FnMut(&mut Kb, Value, usize) -> Value) {
    let vectors = cols / 4;
    kb.for_count(0, vectors as i64, 1, |kb, i| {
        let s = kb.offset(src, i, 16);
        let d = kb.offset(dst, i, 16);
        let x = kb.load_v(s, 0);
        let y = f(kb, x, usize::MAX);
        kb.store(y, d, 0);
    });
    for t in vectors * 4..cols {
        let x = kb.load_f32(src, (t * 4) as i32);
        let xv = kb.b.ins().splat(F32X4, x);
        let y = f(kb, xv, t);
        let lane = kb.b.ins().extractlane(y, 0);
        kb.store(lane, dst, (t * 4) as i32);
    }
}

/// Operands `out, x, scale, bias?`.
pub fn layernorm(kb: &mut Kb, rows: usize, cols: usize, epsilon: f32, bias: bool, per_task: usize) {
    let out = kb.arg(0);
    let x = kb.arg(1);
    let scale = kb.arg(2);
    let bias_ptr = bias.then(|| kb.arg(3));
    let (start, end) = task_rows(kb, rows, per_task);
    let inv_cols = 1.0 / cols as f32;
    kb.for_range(start, end, 1, |kb, row| {
        let elem = kb.b.ins().imul_imm_s(row, cols as i64);
        let src = kb.offset(x, elem, 4);
        let dst = kb.offset(out, elem, 4);

        // The mean is taken of x - x[0], so that a large common offset does
        // not cost the f32 sum its precision (shifted-data algorithm).
        let shift = kb.load_f32(src, 0);
        let shift_v = kb.b.ins().splat(F32X4, shift);
        let sum = row_sum(kb, src, cols, &mut |kb, v| kb.b.ins().fsub(v, shift_v));
        let inv = kb.fconst(inv_cols);
        let mean = kb.b.ins().fmul(sum, inv);
        let mean = kb.b.ins().fadd(mean, shift);
        let mean_v = kb.b.ins().splat(F32X4, mean);
        let sq = row_sum(kb, src, cols, &mut |kb, v| {
            let d = kb.b.ins().fsub(v, mean_v);
            kb.b.ins().fmul(d, d)
        });
        let var = kb.b.ins().fmul(sq, inv);
        let eps = kb.fconst(epsilon);
        let var = kb.b.ins().fadd(var, eps);
        let std = kb.b.ins().sqrt(var);
        let one = kb.fconst(1.0);
        let rstd = kb.b.ins().fdiv(one, std);
        let rstd_v = kb.b.ins().splat(F32X4, rstd);

        // The column index of vector i is not known inside row_map, so walk
        // the scale and bias with their own pointers.
        let vectors = cols / 4;
        kb.for_count(0, vectors as i64, 1, |kb, i| {
            let s = kb.offset(src, i, 16);
            let d = kb.offset(dst, i, 16);
            let g = kb.offset(scale, i, 16);
            let v = kb.load_v(s, 0);
            let c = kb.b.ins().fsub(v, mean_v);
            let n = kb.b.ins().fmul(c, rstd_v);
            let gv = kb.load_v(g, 0);
            let mut y = kb.b.ins().fmul(n, gv);
            if let Some(b) = bias_ptr {
                let bp = kb.offset(b, i, 16);
                let bv = kb.load_v(bp, 0);
                y = kb.b.ins().fadd(y, bv);
            }
            kb.store(y, d, 0);
        });
        for t in vectors * 4..cols {
            let v = kb.load_f32(src, (t * 4) as i32);
            let c = kb.b.ins().fsub(v, mean);
            let n = kb.b.ins().fmul(c, rstd);
            let g = kb.load_f32(scale, (t * 4) as i32);
            let mut y = kb.b.ins().fmul(n, g);
            if let Some(b) = bias_ptr {
                let bv = kb.load_f32(b, (t * 4) as i32);
                y = kb.b.ins().fadd(y, bv);
            }
            kb.store(y, dst, (t * 4) as i32);
        }
    });
}

/// Softmax of one row of `cols` elements, from `src` into `dst` (may be equal).
pub fn softmax_row(kb: &mut Kb, src: Value, dst: Value, cols: usize) {
    // Phase 1 of 3: the row maximum.
    let vectors = cols / 4;
    let neg_inf = kb.splat(f32::NEG_INFINITY);
    let start = kb.iconst(0);
    let end = kb.iconst(vectors as i64);
    let acc = kb.fold_range(start, end, 1, &[neg_inf], &[F32X4], |kb, i, acc| {
        let p = kb.offset(src, i, 16);
        let x = kb.load_v(p, 0);
        // A NaN element does not become the maximum here, but its
        // exponential below is NaN and so is then the whole row.
        vec![kb.max_v(acc[0], x)]
    });
    let mut max = kb.hmax(acc[0]);
    for t in vectors * 4..cols {
        let x = kb.load_f32(src, (t * 4) as i32);
        max = kb.b.ins().fmax(max, x);
    }
    let max_v = kb.b.ins().splat(F32X4, max);

    // Phase 2 of 3: exponentials and their sum, in one pass.
    let zero = kb.splat(0.0);
    let start = kb.iconst(0);
    let end = kb.iconst(vectors as i64);
    let acc = kb.fold_range(start, end, 1, &[zero], &[F32X4], |kb, i, acc| {
        let s = kb.offset(src, i, 16);
        let d = kb.offset(dst, i, 16);
        let x = kb.load_v(s, 0);
        let shifted = kb.b.ins().fsub(x, max_v);
        let e = math::exp(kb, shifted);
        kb.store(e, d, 0);
        vec![kb.b.ins().fadd(acc[0], e)]
    });
    let mut sum = kb.hsum(acc[0]);
    for t in vectors * 4..cols {
        let x = kb.load_f32(src, (t * 4) as i32);
        let shifted = kb.b.ins().fsub(x, max);
        let shifted = kb.b.ins().splat(F32X4, shifted);
        let e = math::exp(kb, shifted);
        let e = kb.b.ins().extractlane(e, 0);
        kb.store(e, dst, (t * 4) as i32);
        sum = kb.b.ins().fadd(sum, e);
    }

    // Phase 3 of 3: normalize.
    let one = kb.fconst(1.0);
    let inv = kb.b.ins().fdiv(one, sum);
    let inv_v = kb.b.ins().splat(F32X4, inv);
    row_map(kb, dst, dst, cols, &mut |kb, x, _| kb.b.ins().fmul(x, inv_v));
}

/// Operands `out, x`.
pub fn softmax(kb: &mut Kb, rows: usize, cols: usize, per_task: usize) {
    let out = kb.arg(0);
    let x = kb.arg(1);
    let (start, end) = task_rows(kb, rows, per_task);
    kb.for_range(start, end, 1, |kb, row| {
        let elem = kb.b.ins().imul_imm_s(row, cols as i64);
        let src = kb.offset(x, elem, 4);
        let dst = kb.offset(out, elem, 4);
        softmax_row(kb, src, dst, cols);
    });
    let _ = types::F32;
}
