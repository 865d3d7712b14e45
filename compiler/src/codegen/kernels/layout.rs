//! Data-movement kernels: strided copies, 2-D resizing, and the unfolding
//! and folding steps of convolutions.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value, types};

use crate::codegen::builder::{F32X4, Kb};
use crate::lower::kernel::ConvGeometry;

/// Operands `out, x`: `out[out_offset + idx . out_strides] = x[in_offset + idx . in_strides]`.
pub fn copy(kb: &mut Kb, shape: &[usize], out_offset: usize, out_strides: &[usize], in_offset: usize, in_strides: &[isize]) {
    let out = kb.arg(0);
    let x = kb.arg(1);
    let o = kb.iconst(out_offset as i64);
    let i = kb.iconst(in_offset as i64);
    if shape.is_empty() {
        let v = kb.load_f32(x, (in_offset * 4) as i32);
        kb.store(v, out, (out_offset * 4) as i32);
        return;
    }
    copy_axis(kb, shape, 0, o, i, out_strides, in_strides, out, x);
}

#[allow(clippy::too_many_arguments)]
fn copy_axis(kb: &mut Kb, shape: &[usize], axis: usize, o: Value, i: Value, out_strides: &[usize], in_strides: &[isize], out: Value, x: Value) {
    let last = axis + 1 == shape.len();
    if !last {
        kb.for_count(0, shape[axis] as i64, 1, |kb, idx| {
            let so = kb.b.ins().imul_imm_s(idx, out_strides[axis] as i64);
            let si = kb.b.ins().imul_imm_s(idx, in_strides[axis] as i64);
            let o2 = kb.b.ins().iadd(o, so);
            let i2 = kb.b.ins().iadd(i, si);
            copy_axis(kb, shape, axis + 1, o2, i2, out_strides, in_strides, out, x);
        });
        return;
    }
    let n = shape[axis];
    let dst = kb.offset(out, o, 4);
    let src = kb.offset(x, i, 4);
    if out_strides[axis] == 1 && in_strides[axis] == 1 {
        kb.for_count(0, (n / 4) as i64, 1, |kb, v| {
            let s = kb.offset(src, v, 16);
            let d = kb.offset(dst, v, 16);
            let value = kb.load_v(s, 0);
            kb.store(value, d, 0);
        });
        for t in n / 4 * 4..n {
            let value = kb.load_f32(src, (t * 4) as i32);
            kb.store(value, dst, (t * 4) as i32);
        }
        return;
    }
    let (so, si) = (out_strides[axis] as i64, in_strides[axis] as i64);
    kb.for_count(0, n as i64, 1, |kb, t| {
        let s = kb.offset(src, t, si * 4);
        let d = kb.offset(dst, t, so * 4);
        let value = kb.load_f32(s, 0);
        kb.store(value, d, 0);
    });
}

/// Operands `out, x, y_index, y_weight, x_index, x_weight`.
pub fn resize2d(kb: &mut Kb, planes: usize, in_h: usize, in_w: usize, out_h: usize, out_w: usize, taps: usize) {
    let out = kb.arg(0);
    let x = kb.arg(1);
    let (yi, yw, xi, xw) = (kb.arg(2), kb.arg(3), kb.arg(4), kb.arg(5));
    kb.for_count(0, planes as i64, 1, |kb, p| {
        let plane_in = kb.offset(x, p, (in_h * in_w * 4) as i64);
        let plane_out = kb.offset(out, p, (out_h * out_w * 4) as i64);
        kb.for_count(0, out_h as i64, 1, |kb, oy| {
            let row_tables = kb.b.ins().imul_imm_s(oy, (taps * 4) as i64);
            let yi_row = kb.b.ins().iadd(yi, row_tables);
            let yw_row = kb.b.ins().iadd(yw, row_tables);
            let rows: Vec<(Value, Value)> = (0..taps)
                .map(|t| {
                    let index = kb.load_f32(yi_row, (t * 4) as i32);
                    let index = kb.b.ins().fcvt_to_sint_sat(types::I64, index);
                    let ptr = kb.offset(plane_in, index, (in_w * 4) as i64);
                    let weight = kb.load_f32(yw_row, (t * 4) as i32);
                    (ptr, weight)
                })
                .collect();
            let out_row = kb.offset(plane_out, oy, (out_w * 4) as i64);
            kb.for_count(0, out_w as i64, 1, |kb, ox| {
                let col_tables = kb.b.ins().imul_imm_s(ox, (taps * 4) as i64);
                let xi_col = kb.b.ins().iadd(xi, col_tables);
                let xw_col = kb.b.ins().iadd(xw, col_tables);
                let mut acc = kb.fconst(0.0);
                for tx in 0..taps {
                    let index = kb.load_f32(xi_col, (tx * 4) as i32);
                    let index = kb.b.ins().fcvt_to_sint_sat(types::I64, index);
                    let byte = kb.b.ins().ishl_imm_u(index, 2);
                    let wx = kb.load_f32(xw_col, (tx * 4) as i32);
                    for &(row_ptr, wy) in &rows {
                        let p = kb.b.ins().iadd(row_ptr, byte);
                        let v = kb.load_f32(p, 0);
                        let w = kb.b.ins().fmul(wy, wx);
                        acc = kb.b.ins().fma(v, w, acc);
                    }
                }
                let d = kb.offset(out_row, ox, 4);
                kb.store(acc, d, 0);
            });
        });
    });
    let _ = F32X4;
}

/// `0 <= v < limit` as a boolean.
fn in_range(kb: &mut Kb, v: Value, limit: usize) -> Value {
    let lower = kb.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, v, 0);
    let upper = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, v, limit as i64);
    kb.b.ins().band(lower, upper)
}

/// Operands `cols, x`: `cols[(b * oh + oy) * ow + ox, (c * kh + ky) * kw + kx]`.
pub fn im2col(kb: &mut Kb, g: &ConvGeometry) {
    let cols = kb.arg(0);
    let x = kb.arg(1);
    let row_len = (g.c * g.kh * g.kw) as i64;
    let no_padding = g.pad == (0, 0)
        && (g.oh - 1) * g.stride.0 + (g.kh - 1) * g.dilation.0 < g.h
        && (g.ow - 1) * g.stride.1 + (g.kw - 1) * g.dilation.1 < g.w;
    kb.for_count(0, (g.batch * g.oh) as i64, 1, |kb, by| {
        let b = kb.b.ins().udiv_imm_u(by, g.oh as i64);
        let oy = kb.b.ins().urem_imm_u(by, g.oh as i64);
        let image = kb.offset(x, b, (g.c * g.h * g.w * 4) as i64);
        kb.for_count(0, g.ow as i64, 1, |kb, ox| {
            let row = {
                let r = kb.b.ins().imul_imm_s(by, g.ow as i64);
                kb.b.ins().iadd(r, ox)
            };
            let dst_row = kb.offset(cols, row, row_len * 4);
            let y0 = kb.b.ins().imul_imm_s(oy, g.stride.0 as i64);
            let y0 = kb.b.ins().iadd_imm_s(y0, -(g.pad.0 as i64));
            let x0 = kb.b.ins().imul_imm_s(ox, g.stride.1 as i64);
            let x0 = kb.b.ins().iadd_imm_s(x0, -(g.pad.1 as i64));
            kb.for_count(0, g.c as i64, 1, |kb, c| {
                let channel = kb.offset(image, c, (g.h * g.w * 4) as i64);
                let dst = kb.offset(dst_row, c, (g.kh * g.kw * 4) as i64);
                kb.for_count(0, g.kh as i64, 1, |kb, ky| {
                    let dy = kb.b.ins().imul_imm_s(ky, g.dilation.0 as i64);
                    let iy = kb.b.ins().iadd(y0, dy);
                    let dst_ky = kb.offset(dst, ky, (g.kw * 4) as i64);
                    for kx in 0..g.kw {
                        let ix = kb.b.ins().iadd_imm_s(x0, (kx * g.dilation.1) as i64);
                        let value = if no_padding {
                            let e = kb.b.ins().imul_imm_s(iy, g.w as i64);
                            let e = kb.b.ins().iadd(e, ix);
                            let p = kb.offset(channel, e, 4);
                            kb.load_f32(p, 0)
                        } else {
                            // Load from a clamped address, then zero what lies outside.
                            let inside_y = in_range(kb, iy, g.h);
                            let inside_x = in_range(kb, ix, g.w);
                            let inside = kb.b.ins().band(inside_y, inside_x);
                            let zero_i = kb.iconst(0);
                            let cy = kb.b.ins().select(inside, iy, zero_i);
                            let cx = kb.b.ins().select(inside, ix, zero_i);
                            let e = kb.b.ins().imul_imm_s(cy, g.w as i64);
                            let e = kb.b.ins().iadd(e, cx);
                            let p = kb.offset(channel, e, 4);
                            let v = kb.load_f32(p, 0);
                            let zero = kb.fconst(0.0);
                            kb.b.ins().select(inside, v, zero)
                        };
                        kb.store(value, dst_ky, (kx * 4) as i32);
                    }
                });
            });
        });
    });
}

/// Input positions `lo..hi` along one axis whose every tap lands inside
/// the output: `i * stride - pad >= 0` and `i * stride - pad + (k - 1) *
/// dilation < out`. Empty (`lo >= hi`) when there are none.
fn interior_span(input: usize, out: usize, k: usize, stride: usize, pad: usize, dilation: usize) -> (i64, i64) {
    let (stride, pad) = (stride.max(1) as i64, pad as i64);
    let lo = (pad + stride - 1) / stride;
    let reach = out as i64 - 1 + pad - ((k.max(1) - 1) * dilation) as i64;
    let hi = if reach < 0 { 0 } else { (reach / stride + 1).min(input as i64) };
    (lo, hi)
}

/// Returns whether `lo <= v < hi` for an i64 value `v`.
fn in_span(kb: &mut Kb, v: Value, (lo, hi): (i64, i64)) -> Value {
    let lower = kb.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, v, lo);
    let upper = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, v, hi);
    kb.b.ins().band(lower, upper)
}

/// Adds the f32 at `src + src_offset` to the one at `out + out_offset`.
fn scatter_add(kb: &mut Kb, out: Value, out_offset: i32, src: Value, src_offset: i32) {
    let acc = kb.load_f32(out, out_offset);
    let v = kb.load_f32(src, src_offset);
    let sum = kb.b.ins().fadd(acc, v);
    kb.store(sum, out, out_offset);
}

/// Operands `out, cols, bias?`; this task covers a range of channels.
/// Input pixels whose taps all land inside the image take a branch-free
/// path; the pixels at the border check each tap.
pub fn col2im(kb: &mut Kb, g: &ConvGeometry, bias: bool, tasks: usize) {
    let out = kb.arg(0);
    let cols = kb.arg(1);
    let bias_ptr = bias.then(|| kb.arg(2));
    let per_task = g.c.div_ceil(tasks.max(1));
    let task = kb.task_i64();
    let c_start = kb.b.ins().imul_imm_s(task, per_task as i64);
    let c_end = kb.b.ins().iadd_imm_s(c_start, per_task as i64);
    let c_limit = kb.iconst(g.c as i64);
    let c_end = kb.b.ins().smin(c_end, c_limit);
    let plane = g.oh * g.ow;
    let row_len = g.c * g.kh * g.kw;
    let interior_rows = interior_span(g.h, g.oh, g.kh, g.stride.0, g.pad.0, g.dilation.0);
    let interior_cols = interior_span(g.w, g.ow, g.kw, g.stride.1, g.pad.1, g.dilation.1);

    kb.for_count(0, g.batch as i64, 1, |kb, b| {
        kb.for_range(c_start, c_end, 1, |kb, c| {
            // Start every output plane at the bias.
            let image_plane = {
                let bc = kb.b.ins().imul_imm_s(b, g.c as i64);
                let bc = kb.b.ins().iadd(bc, c);
                kb.offset(out, bc, (plane * 4) as i64)
            };
            let init = match bias_ptr {
                Some(bp) => {
                    let p = kb.offset(bp, c, 4);
                    kb.load_f32(p, 0)
                }
                None => kb.fconst(0.0),
            };
            kb.for_count(0, plane as i64, 1, |kb, i| {
                let p = kb.offset(image_plane, i, 4);
                kb.store(init, p, 0);
            });

            // Scatter-add every input pixel's contribution.
            let col_c = kb.b.ins().imul_imm_s(c, (g.kh * g.kw) as i64);
            kb.for_count(0, (g.h * g.w) as i64, 1, |kb, pixel| {
                let iy = kb.b.ins().udiv_imm_u(pixel, g.w as i64);
                let ix = kb.b.ins().urem_imm_u(pixel, g.w as i64);
                let row = {
                    let r = kb.b.ins().imul_imm_s(b, (g.h * g.w) as i64);
                    kb.b.ins().iadd(r, pixel)
                };
                let src_row = kb.offset(cols, row, (row_len * 4) as i64);
                let src = kb.offset(src_row, col_c, 4);
                let y0 = kb.b.ins().imul_imm_s(iy, g.stride.0 as i64);
                let y0 = kb.b.ins().iadd_imm_s(y0, -(g.pad.0 as i64));
                let x0 = kb.b.ins().imul_imm_s(ix, g.stride.1 as i64);
                let x0 = kb.b.ins().iadd_imm_s(x0, -(g.pad.1 as i64));
                let interior_y = in_span(kb, iy, interior_rows);
                let interior_x = in_span(kb, ix, interior_cols);
                let interior = kb.b.ins().band(interior_y, interior_x);
                let fast = kb.b.create_block();
                let checked = kb.b.create_block();
                let next = kb.b.create_block();
                kb.b.ins().brif(interior, fast, &[], checked, &[]);

                // Every tap lands inside the image: straight-line adds at
                // constant offsets from the first tap's element.
                kb.b.switch_to_block(fast);
                let first = kb.b.ins().imul_imm_s(y0, g.ow as i64);
                let first = kb.b.ins().iadd(first, x0);
                let base = kb.offset(image_plane, first, 4);
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let offset = ((ky * g.dilation.0 * g.ow + kx * g.dilation.1) * 4) as i32;
                        scatter_add(kb, base, offset, src, ((ky * g.kw + kx) * 4) as i32);
                    }
                }
                kb.b.ins().jump(next, &[]);

                kb.b.switch_to_block(checked);
                for ky in 0..g.kh {
                    let oy = kb.b.ins().iadd_imm_s(y0, (ky * g.dilation.0) as i64);
                    for kx in 0..g.kw {
                        let ox = kb.b.ins().iadd_imm_s(x0, (kx * g.dilation.1) as i64);
                        let inside_y = in_range(kb, oy, g.oh);
                        let inside_x = in_range(kb, ox, g.ow);
                        let inside = kb.b.ins().band(inside_y, inside_x);
                        let then_block = kb.b.create_block();
                        let skip = kb.b.create_block();
                        kb.b.ins().brif(inside, then_block, &[], skip, &[]);
                        kb.b.switch_to_block(then_block);
                        let e = kb.b.ins().imul_imm_s(oy, g.ow as i64);
                        let e = kb.b.ins().iadd(e, ox);
                        let p = kb.offset(image_plane, e, 4);
                        scatter_add(kb, p, 0, src, ((ky * g.kw + kx) * 4) as i32);
                        kb.b.ins().jump(skip, &[]);
                        kb.b.switch_to_block(skip);
                    }
                }
                kb.b.ins().jump(next, &[]);
                kb.b.switch_to_block(next);
            });
        });
    });
}

#[cfg(test)]
mod tests {
    use super::interior_span;

    /// Checks `interior_span` against the definition by brute force: every
    /// input position in the span has all taps inside, and no other one.
    fn check(input: usize, out: usize, k: usize, stride: usize, pad: usize, dilation: usize) {
        let (lo, hi) = interior_span(input, out, k, stride, pad, dilation);
        for i in 0..input as i64 {
            let first = i * stride as i64 - pad as i64;
            let last = first + ((k - 1) * dilation) as i64;
            let inside = first >= 0 && last < out as i64;
            assert_eq!((lo..hi).contains(&i), inside, "i = {i} of {input}, out {out}, k {k}, stride {stride}, pad {pad}, dilation {dilation}");
        }
    }

    #[test]
    fn interior_span_matches_definition() {
        // The ViT-S decoder: 64 -> 128 with k 4, stride 2, pad 1.
        check(64, 128, 4, 2, 1, 1);
        for input in 1..6 {
            for k in 1..5 {
                for stride in 1..4 {
                    for pad in 0..3 {
                        for dilation in 1..3 {
                            let span = (input - 1) * stride + (k - 1) * dilation + 1;
                            if span > 2 * pad {
                                check(input, span - 2 * pad, k, stride, pad, dilation);
                                // With output_padding 1.
                                check(input, span - 2 * pad + 1, k, stride, pad, dilation);
                            }
                        }
                    }
                }
            }
        }
    }
}
