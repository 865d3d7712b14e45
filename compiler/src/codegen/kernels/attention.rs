//! Multi-head attention, one task per (batch, head).
//!
//! Phase 1 of 4: pack this head's keys as the GEMM panels of K^T.
//! Phase 2 of 4: scores `S = scale * Q_h K_h^T` with the GEMM micro-kernel,
//! into the task's scratch (rows padded to a multiple of 8 columns).
//! Phase 3 of 4: softmax of each score row over the real tokens.
//! Phase 4 of 4: pack this head's values as panels and compute `S V_h`
//! straight into the head's columns of the output.

use cranelift_codegen::ir::{InstBuilder, Value};

use super::gemm::{GemmCall, emit_block};
use super::rows::softmax_row;
use crate::codegen::builder::Kb;
use crate::lower::kernel::{Activation, GEMM_NR, attention_scratch};

/// Operands `out, q, k, v, scratch`.
pub fn emit(kb: &mut Kb, tokens: usize, heads: usize, head_dim: usize, scale: f32) {
    let out = kb.arg(0);
    let q = kb.arg(1);
    let k = kb.arg(2);
    let v = kb.arg(3);
    let scratch = kb.arg(4);
    let channels = heads * head_dim;
    let padded_tokens = tokens.div_ceil(GEMM_NR) * GEMM_NR;
    let padded_dim = head_dim.div_ceil(GEMM_NR) * GEMM_NR;

    let task = kb.task_i64();
    let batch = kb.b.ins().udiv_imm_u(task, heads as i64);
    let head = kb.b.ins().urem_imm_u(task, heads as i64);
    // Offset of this (batch, head) in q, k, v and out, in elements.
    let base = {
        let b_off = kb.b.ins().imul_imm_s(batch, (tokens * channels) as i64);
        let h_off = kb.b.ins().imul_imm_s(head, head_dim as i64);
        kb.b.ins().iadd(b_off, h_off)
    };
    let q_h = kb.offset(q, base, 4);
    let k_h = kb.offset(k, base, 4);
    let v_h = kb.offset(v, base, 4);
    let out_h = kb.offset(out, base, 4);
    let scores = kb.offset(scratch, task, (attention_scratch(tokens, head_dim) * 4) as i64);
    let k_panels = kb.b.ins().iadd_imm_s(scores, (tokens * padded_tokens * 4) as i64);
    let v_panels = kb.b.ins().iadd_imm_s(k_panels, (head_dim * padded_tokens * 4) as i64);

    // Phase 1 of 4: K^T panels, [tokens / 8][head_dim][8].
    pack(kb, k_h, k_panels, tokens, head_dim, channels, PackOrder::Transposed);

    // Phase 2 of 4: scores.
    let zero = kb.iconst(0);
    let rows = kb.iconst(tokens as i64);
    let score_call = GemmCall {
        a: q_h,
        lda: channels as i64,
        b: k_panels,
        k: head_dim,
        n: tokens,
        c: scores,
        ldc: padded_tokens as i64,
        bias: None,
        residual: None,
        scale,
        activation: Activation::None,
        tiles: None,
    };
    let t_panels = kb.iconst(tokens.div_ceil(GEMM_NR) as i64);
    emit_block(kb, &score_call, zero, rows, zero, t_panels);

    // Phase 3 of 4: softmax per row.
    kb.for_count(0, tokens as i64, 1, |kb, row| {
        let p = kb.offset(scores, row, (padded_tokens * 4) as i64);
        softmax_row(kb, p, p, tokens);
    });

    // Phase 4 of 4: V panels, [head_dim / 8][tokens][8], then S V.
    pack(kb, v_h, v_panels, tokens, head_dim, channels, PackOrder::Direct);
    let context_call = GemmCall {
        a: scores,
        lda: padded_tokens as i64,
        b: v_panels,
        k: tokens,
        n: head_dim,
        c: out_h,
        ldc: channels as i64,
        bias: None,
        residual: None,
        scale: 1.0,
        activation: Activation::None,
        tiles: None,
    };
    let d_panels = kb.iconst(padded_dim.div_ceil(GEMM_NR) as i64);
    emit_block(kb, &context_call, zero, rows, zero, d_panels);
}

#[derive(Clone, Copy, PartialEq)]
enum PackOrder {
    /// Panels of K^T: column j of B is token j, row kk is feature kk.
    Transposed,
    /// Panels of V: column j of B is feature j, row kk is token kk.
    Direct,
}

/// Packs a head's `[tokens, head_dim]` slice (rows `channels` apart) into
/// GEMM panels. Padding columns of the last panel are left as they are:
/// the GEMM never stores them (K^T) or they multiply nothing that is read.
fn pack(kb: &mut Kb, src: Value, dst: Value, tokens: usize, head_dim: usize, channels: usize, order: PackOrder) {
    match order {
        PackOrder::Transposed => {
            // dst[(j / 8) * head_dim * 8 + d * 8 + j % 8] = src[j * channels + d]
            kb.for_count(0, tokens as i64, 1, |kb, j| {
                let row = kb.offset(src, j, (channels * 4) as i64);
                let panel = kb.b.ins().udiv_imm_u(j, GEMM_NR as i64);
                let lane = kb.b.ins().urem_imm_u(j, GEMM_NR as i64);
                let panel_off = kb.b.ins().imul_imm_s(panel, (head_dim * GEMM_NR * 4) as i64);
                let lane_off = kb.b.ins().ishl_imm_u(lane, 2);
                let col = kb.b.ins().iadd(panel_off, lane_off);
                let col = kb.b.ins().iadd(dst, col);
                for d in 0..head_dim {
                    let x = kb.load_f32(row, (d * 4) as i32);
                    kb.store(x, col, (d * GEMM_NR * 4) as i32);
                }
            });
        }
        PackOrder::Direct => {
            // dst[(d / 8) * tokens * 8 + t * 8 + d % 8] = src[t * channels + d]
            kb.for_count(0, tokens as i64, 1, |kb, t| {
                let row = kb.offset(src, t, (channels * 4) as i64);
                let out = kb.offset(dst, t, (GEMM_NR * 4) as i64);
                for d in 0..head_dim {
                    let panel = d / GEMM_NR;
                    let x = kb.load_f32(row, (d * 4) as i32);
                    kb.store(x, out, ((panel * tokens * GEMM_NR + d % GEMM_NR) * 4) as i32);
                }
                // Zero the padding lanes so that S V stays finite in them.
                for d in head_dim..head_dim.div_ceil(GEMM_NR) * GEMM_NR {
                    let panel = d / GEMM_NR;
                    let z = kb.fconst(0.0);
                    kb.store(z, out, ((panel * tokens * GEMM_NR + d % GEMM_NR) * 4) as i32);
                }
            });
        }
    }
}
