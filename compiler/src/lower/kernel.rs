//! The kernels generated code calls, with the shapes they are specialized for.
//!
//! Every kernel reads and writes contiguous row-major f32 buffers. The
//! operand order of each kernel is documented on its variant; results come
//! first. Sizes are in elements unless a name says otherwise.

use std::fmt;

/// Columns per packed GEMM panel: two F32X4 vectors.
pub const GEMM_NR: usize = 8;

/// Depth of one INT8 GEMM step: each 32-bit lane of a weight vector holds
/// four consecutive k of one column.
pub const QGEMM_KGROUP: usize = 4;

/// Elementwise functions of one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryFn {
    Copy,
    Relu,
    Sigmoid,
    Tanh,
    Erf,
    /// GELU, erf form.
    Gelu,
    /// GELU, tanh approximation.
    GeluTanh,
    Exp,
    Sqrt,
    Neg,
    Abs,
    Reciprocal,
}

/// Elementwise functions of two operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryFn {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

/// Function applied to each GEMM result after the bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    None,
    Gelu,
    GeluTanh,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kernel {
    /// `C[m, n] = act(A[m, k] B[k, n] + bias[n]) + residual[m, n]`, with `B`
    /// packed in panels of [`GEMM_NR`] columns (`[n / NR][k][NR]`, the last
    /// panel zero-padded). Operands: `C, A, B, bias?, residual?`.
    Gemm { m: usize, n: usize, k: usize, bias: bool, activation: Activation, residual: bool },
    /// [`Kernel::Gemm`] over a block-sparse `B`: of the `total` tiles of 4
    /// k by [`GEMM_NR`] columns, only the `kept` nonzero ones are stored,
    /// and the others are skipped. Operands: `C, A, B tiles, tile table,
    /// bias?, residual?` (layout in `lower::select::sparse`).
    SparseGemm { m: usize, n: usize, k: usize, bias: bool, activation: Activation, residual: bool, kept: usize, total: usize },
    /// Multi-head self-attention core on `[batch, tokens, heads * head_dim]`
    /// operands, one task per (batch, head). Operands: `out, q, k, v,
    /// scratch`, where scratch has [`attention_scratch`] floats per task.
    Attention { batch: usize, tokens: usize, heads: usize, head_dim: usize, scale: f32 },
    /// Layer normalization of `rows` rows of `cols` elements. Operands:
    /// `out, x, scale[cols], bias[cols]?`.
    LayerNorm { rows: usize, cols: usize, epsilon: f32, bias: bool },
    /// Softmax of `rows` rows of `cols` elements. Operands: `out, x`.
    Softmax { rows: usize, cols: usize },
    /// `out[i] = f(x[i])` for `len` elements. Operands: `out, x`.
    Unary { len: usize, function: UnaryFn },
    /// `out[idx] = a[idx . a_strides] op b[idx . b_strides]` over `shape`;
    /// a stride of 0 broadcasts. Operands: `out, a, b`.
    Binary { function: BinaryFn, shape: Vec<usize>, a_strides: Vec<usize>, b_strides: Vec<usize> },
    /// `out[o, c, i] = x[o, c, i] * scale[c] + shift[c]` (folded batch
    /// normalization). Operands: `out, x, scale, shift`.
    ChannelAffine { outer: usize, channels: usize, inner: usize },
    /// Strided copy over `shape`: `out[out_offset + idx . out_strides] =
    /// x[in_offset + idx . in_strides]`; a negative input stride walks
    /// backwards (Slice with negative steps), 0 broadcasts. Operands: `out, x`.
    Copy { shape: Vec<usize>, out_offset: usize, out_strides: Vec<usize>, in_offset: usize, in_strides: Vec<isize> },
    /// `out[i] = value` for `len` elements. Operands: `out`.
    Fill { len: usize, value: f32 },
    /// Separable 2-D resize of the last two axes of `[planes, in_h, in_w]`
    /// to `[planes, out_h, out_w]`: each output row and column reads `taps`
    /// source rows and columns with weights. Operands: `out, x, y_index,
    /// y_weight, x_index, x_weight`, the tables `[out_h * taps]` and
    /// `[out_w * taps]` (indices stored as exact f32 integers).
    Resize2d { planes: usize, in_h: usize, in_w: usize, out_h: usize, out_w: usize, taps: usize },
    /// Convolution input unfolding: for each image of `[batch, c, h, w]`,
    /// writes `cols[batch * oh * ow, c * kh * kw]`. Operands: `cols, x`.
    Im2col { geometry: ConvGeometry },
    /// Transposed-convolution folding: accumulates
    /// `cols[batch * ih * iw, c * kh * kw]` into `out[batch, c, oh, ow]`,
    /// which starts at `bias[c]` (or 0). Operands: `out, cols, bias?`.
    Col2im { geometry: ConvGeometry, bias: bool },
    /// f32 to u8 with a fixed scale and zero point (see `Op::Quantize`).
    /// Operands: `out (u8), x`.
    Quantize { len: usize, scale: f32, zero_point: u8 },
    /// Dynamic quantization of `[rows, cols]`, one scale per row (a single
    /// row covers the whole tensor). Operands: `out (u8), params [rows, 2], x`.
    DynamicQuantize { rows: usize, cols: usize },
    /// u8 to f32. Operands: `out, q (u8)`.
    Dequantize { len: usize, scale: f32, zero_point: u8 },
    /// INT8 GEMM with the dequantizing epilogue of `Op::QLinear`:
    /// `C[m, n] = f32(A B - zp[r] colsum) * (scale[r] w_scale) + bias`,
    /// with u8 `A[m, k]` and i8 `B` packed by `pack_int8_panels`.
    /// `narrow_weights` records that every weight is in -64..=63, which
    /// keeps x86-64 `pmaddubsw` from saturating. Operands: `C, A (u8),
    /// params [1 or m, 2], B (packed), colsum (i32), w_scale, bias?`, the
    /// last three padded to whole panels. `activation` is applied to the
    /// f32 result, as the separate unary kernel would apply it.
    QGemm { m: usize, n: usize, k: usize, per_row_params: bool, bias: bool, narrow_weights: bool, activation: Activation },
}

/// Sizes of a 2-D convolution. For `Im2col`, `(h, w)` is the input and
/// `(oh, ow)` the output; for `Col2im`, `(h, w)` is the transposed
/// convolution's input and `(oh, ow)` its output.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    pub batch: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    /// Padding before the first row and column.
    pub pad: (usize, usize),
    pub dilation: (usize, usize),
}

/// Scratch floats one attention task needs: the score rows and the packed
/// panels of K^T and V.
pub fn attention_scratch(tokens: usize, head_dim: usize) -> usize {
    let panels = |columns: usize| columns.div_ceil(GEMM_NR) * GEMM_NR;
    // Rounded to 16 floats (64 bytes) so each task's block stays aligned.
    let floats = tokens * panels(tokens) + head_dim * panels(tokens) + tokens * panels(head_dim);
    floats.div_ceil(16) * 16
}

impl Kernel {
    /// Kernel family name, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Kernel::Gemm { .. } => "gemm",
            Kernel::SparseGemm { .. } => "sparse_gemm",
            Kernel::Attention { .. } => "attention",
            Kernel::LayerNorm { .. } => "layernorm",
            Kernel::Softmax { .. } => "softmax",
            Kernel::Unary { .. } => "unary",
            Kernel::Binary { .. } => "binary",
            Kernel::ChannelAffine { .. } => "channel_affine",
            Kernel::Copy { .. } => "copy",
            Kernel::Fill { .. } => "fill",
            Kernel::Resize2d { .. } => "resize2d",
            Kernel::Im2col { .. } => "im2col",
            Kernel::Col2im { .. } => "col2im",
            Kernel::Quantize { .. } => "quantize",
            Kernel::DynamicQuantize { .. } => "dynamic_quantize",
            Kernel::Dequantize { .. } => "dequantize",
            Kernel::QGemm { .. } => "qgemm",
        }
    }

    /// Floating-point operations of one call (multiply-add = 2), an estimate
    /// for elementwise work.
    pub fn flops(&self) -> u64 {
        let f = |x: usize| x as u64;
        match self {
            Kernel::Gemm { m, n, k, .. } | Kernel::QGemm { m, n, k, .. } => 2 * f(*m) * f(*n) * f(*k),
            // Only the kept tiles are multiplied.
            Kernel::SparseGemm { m, n, k, kept, total, .. } => 2 * f(*m) * f(*n) * f(*k) * f(*kept) / f(*total).max(1),
            Kernel::Quantize { len, .. } | Kernel::Dequantize { len, .. } => 2 * f(*len),
            Kernel::DynamicQuantize { rows, cols } => 4 * f(*rows) * f(*cols),
            Kernel::Attention { batch, tokens, heads, head_dim, .. } => {
                4 * f(*batch) * f(*heads) * f(*tokens) * f(*tokens) * f(*head_dim)
            }
            Kernel::LayerNorm { rows, cols, .. } | Kernel::Softmax { rows, cols } => 5 * f(*rows) * f(*cols),
            Kernel::Unary { len, .. } => f(*len),
            Kernel::Binary { shape, .. } => shape.iter().map(|&d| d as u64).product(),
            Kernel::ChannelAffine { outer, channels, inner } => 2 * f(*outer) * f(*channels) * f(*inner),
            Kernel::Resize2d { planes, out_h, out_w, taps, .. } => 2 * f(*planes) * f(*out_h) * f(*out_w) * f(*taps) * f(*taps),
            Kernel::Col2im { geometry: g, .. } => f(g.batch) * f(g.h) * f(g.w) * f(g.c) * f(g.kh) * f(g.kw),
            Kernel::Copy { .. } | Kernel::Fill { .. } | Kernel::Im2col { .. } => 0,
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kernel::Gemm { m, n, k, bias, activation, residual } => {
                write!(f, "gemm m={m} n={n} k={k}")?;
                write_epilogue(f, *bias, *activation, *residual)
            }
            Kernel::SparseGemm { m, n, k, bias, activation, residual, kept, total } => {
                write!(f, "sparse_gemm m={m} n={n} k={k} tiles={kept}/{total}")?;
                write_epilogue(f, *bias, *activation, *residual)
            }
            Kernel::Attention { batch, tokens, heads, head_dim, scale } => {
                write!(f, "attention batch={batch} tokens={tokens} heads={heads} head_dim={head_dim} scale={scale:?}")
            }
            Kernel::LayerNorm { rows, cols, epsilon, bias } => {
                write!(f, "layernorm rows={rows} cols={cols} epsilon={epsilon:e} bias={bias}")
            }
            Kernel::Softmax { rows, cols } => write!(f, "softmax rows={rows} cols={cols}"),
            Kernel::Unary { len, function } => write!(f, "unary {function:?} len={len}"),
            Kernel::Binary { function, shape, a_strides, b_strides } => {
                write!(f, "binary {function:?} shape={shape:?} a_strides={a_strides:?} b_strides={b_strides:?}")
            }
            Kernel::ChannelAffine { outer, channels, inner } => {
                write!(f, "channel_affine outer={outer} channels={channels} inner={inner}")
            }
            Kernel::Copy { shape, out_offset, out_strides, in_offset, in_strides } => write!(
                f,
                "copy shape={shape:?} out_offset={out_offset} out_strides={out_strides:?} in_offset={in_offset} in_strides={in_strides:?}"
            ),
            Kernel::Fill { len, value } => write!(f, "fill len={len} value={value:?}"),
            Kernel::Resize2d { planes, in_h, in_w, out_h, out_w, taps } => {
                write!(f, "resize2d planes={planes} {in_h}x{in_w} -> {out_h}x{out_w} taps={taps}")
            }
            Kernel::Im2col { geometry } => write!(f, "im2col {geometry:?}"),
            Kernel::Col2im { geometry, bias } => write!(f, "col2im {geometry:?} bias={bias}"),
            Kernel::Quantize { len, scale, zero_point } => write!(f, "quantize len={len} scale={scale:e} zero_point={zero_point}"),
            Kernel::DynamicQuantize { rows, cols } => write!(f, "dynamic_quantize rows={rows} cols={cols}"),
            Kernel::Dequantize { len, scale, zero_point } => write!(f, "dequantize len={len} scale={scale:e} zero_point={zero_point}"),
            Kernel::QGemm { m, n, k, per_row_params, bias, narrow_weights, activation } => {
                write!(f, "qgemm m={m} n={n} k={k} per_row_params={per_row_params} narrow_weights={narrow_weights}")?;
                write_epilogue(f, *bias, *activation, false)
            }
        }
    }
}

/// Writes the fused epilogue of a GEMM as the printed program shows it.
fn write_epilogue(f: &mut fmt::Formatter<'_>, bias: bool, activation: Activation, residual: bool) -> fmt::Result {
    if bias {
        write!(f, " +bias")?;
    }
    if activation != Activation::None {
        write!(f, " {activation:?}")?;
    }
    if residual {
        write!(f, " +residual")?;
    }
    Ok(())
}
