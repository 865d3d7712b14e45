//! Kernel bodies, one family per file, and how many tasks each call splits into.

mod attention;
mod elementwise;
pub mod gemm;
mod layout;
pub mod qgemm;
mod quantize;
mod rows;

use super::builder::Kb;
use crate::lower::Kernel;

/// Elements per task of elementwise kernels: large enough that a task
/// costs far more than its dispatch (about 10 us of work).
const ELEMENTS_PER_TASK: usize = 1 << 16;
/// Rows per task of row kernels (LayerNorm, Softmax).
const ROWS_PER_TASK: usize = 32;

/// Number of tasks a call of `kernel` is split into (1 runs it directly).
pub fn task_count(kernel: &Kernel) -> u32 {
    match kernel {
        Kernel::Gemm { m, n, .. } | Kernel::SparseGemm { m, n, .. } | Kernel::QGemm { m, n, .. } => gemm::task_count(*m, *n),
        Kernel::Attention { batch, heads, .. } => (batch * heads) as u32,
        Kernel::LayerNorm { rows, .. } | Kernel::Softmax { rows, .. } => rows.div_ceil(ROWS_PER_TASK) as u32,
        Kernel::Unary { len, .. } => len.div_ceil(ELEMENTS_PER_TASK) as u32,
        Kernel::Col2im { geometry, .. } => geometry.c.min(64) as u32,
        Kernel::Quantize { len, .. } => len.div_ceil(ELEMENTS_PER_TASK) as u32,
        Kernel::DynamicQuantize { rows, .. } => rows.div_ceil(quantize::ROWS_PER_TASK) as u32,
        _ => 1,
    }
}

/// Emits the body of `kernel` for the task in `kb.task`.
pub fn emit(kb: &mut Kb, kernel: &Kernel) {
    let tasks = task_count(kernel) as usize;
    match kernel {
        Kernel::Gemm { m, n, k, bias, activation, residual } => gemm::emit_kernel(kb, *m, *n, *k, *bias, *activation, *residual),
        Kernel::SparseGemm { m, n, k, bias, activation, residual, .. } => {
            gemm::emit_sparse_kernel(kb, *m, *n, *k, *bias, *activation, *residual)
        }
        Kernel::Attention { batch: _, tokens, heads, head_dim, scale } => {
            attention::emit(kb, *tokens, *heads, *head_dim, *scale)
        }
        Kernel::LayerNorm { rows, cols, epsilon, bias } => rows::layernorm(kb, *rows, *cols, *epsilon, *bias, ROWS_PER_TASK),
        Kernel::Softmax { rows, cols } => rows::softmax(kb, *rows, *cols, ROWS_PER_TASK),
        Kernel::Unary { len, function } => elementwise::unary(kb, *len, *function, ELEMENTS_PER_TASK),
        Kernel::Binary { function, shape, a_strides, b_strides } => elementwise::binary(kb, *function, shape, a_strides, b_strides),
        Kernel::ChannelAffine { outer, channels, inner } => elementwise::channel_affine(kb, *outer, *channels, *inner),
        Kernel::Fill { len, value } => elementwise::fill(kb, *len, *value),
        Kernel::Copy { shape, out_offset, out_strides, in_offset, in_strides } => {
            layout::copy(kb, shape, *out_offset, out_strides, *in_offset, in_strides)
        }
        Kernel::Resize2d { planes, in_h, in_w, out_h, out_w, taps } => layout::resize2d(kb, *planes, *in_h, *in_w, *out_h, *out_w, *taps),
        Kernel::Im2col { geometry } => layout::im2col(kb, geometry),
        Kernel::Col2im { geometry, bias } => layout::col2im(kb, geometry, *bias, tasks),
        Kernel::QGemm { m, n, k, per_row_params, bias, narrow_weights, activation } => {
            qgemm::emit_kernel(kb, *m, *n, *k, *per_row_params, *bias, *narrow_weights, *activation)
        }
        Kernel::Quantize { len, scale, zero_point } => quantize::quantize(kb, *len, *scale, *zero_point, ELEMENTS_PER_TASK),
        Kernel::DynamicQuantize { rows, cols } => quantize::dynamic_quantize(kb, *rows, *cols),
        Kernel::Dequantize { len, scale, zero_point } => quantize::dequantize(kb, *len, *scale, *zero_point),
    }
}
