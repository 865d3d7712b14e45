//! The operator set of the graph IR.
//!
//! Imported ONNX nodes map onto these operators with opset differences
//! already resolved: attributes that moved to inputs (axes of Squeeze,
//! Unsqueeze and ReduceMean) are read back into attributes when they are
//! constant, legacy Softmax keeps a flag for its flatten-to-2-D semantics,
//! and defaults are filled in. The canonical operators `LayerNorm`, `Gelu`,
//! `Linear` and `Attention` are produced by canonicalization.
//!
//! Operand order follows ONNX. An optional operand that is absent is `None`
//! in [`crate::ir::Node::inputs`].

use std::fmt;

use crate::tensor::{DType, Tensor};

/// One operator with its attributes.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph input; it has no operands.
    Input,
    /// A constant; its data lives in the output value's fact.
    Constant,
    Identity,
    Unary(UnaryOp),
    /// Elementwise with multidirectional (NumPy) broadcasting.
    Binary(BinaryOp),
    /// `Where(cond, x, y)` with broadcasting.
    Where,
    /// `Clip(x, min?, max?)`: bounds are optional operands (opset 11+).
    Clip,
    HardSigmoid { alpha: f32, beta: f32 },
    LeakyRelu { alpha: f32 },
    /// Softmax along `axis`. With `flatten_tail` (ONNX opset < 13) the input
    /// is viewed as 2-D `[prod(dims[..axis]), prod(dims[axis..])]` and
    /// normalized over the second dimension.
    Softmax { axis: i64, flatten_tail: bool },
    LogSoftmax { axis: i64, flatten_tail: bool },
    /// Canonical GELU (also ONNX `Gelu`, opset 20).
    Gelu { approximate: GeluApprox },
    /// Layer normalization over dims `axis..` with operands `(x, scale, bias?)`:
    /// `(x - mean) / sqrt(var + epsilon) * scale + bias`, variance biased.
    LayerNorm { axis: i64, epsilon: f32 },
    /// Inference-mode batch normalization `(x, scale, bias, mean, var)`.
    BatchNorm { epsilon: f32 },
    /// ONNX `MatMul` with NumPy semantics, including broadcast batch dims.
    MatMul,
    /// ONNX `Gemm(a, b, c?)`: `alpha * a' * b' + beta * c`.
    Gemm { alpha: f32, beta: f32, trans_a: bool, trans_b: bool },
    /// Canonical fully connected layer `(x, weight, bias?)`: `x` is `[.., in]`,
    /// `weight` is a constant `[out, in]` (PyTorch layout), `bias` is `[out]`;
    /// the result is `x * weight^T + bias`, shape `[.., out]`.
    Linear,
    /// Canonical multi-head scaled dot-product self-attention core
    /// `(q, k, v)`, each `[batch, tokens, heads * head_dim]`. Each head
    /// computes `softmax(scale * q_h k_h^T) v_h`; the heads are concatenated
    /// back to `[batch, tokens, heads * head_dim]`. The input and output
    /// projections stay separate `Linear` nodes.
    Attention { heads: usize, head_dim: usize, scale: f32 },
    /// `Conv(x, w, b?)`, 1-D or 2-D, with explicit pads `[begin.., end..]`.
    Conv(ConvAttrs),
    /// `ConvTranspose(x, w, b?)`, 1-D or 2-D, with explicit pads and output padding.
    ConvTranspose(ConvTransposeAttrs),
    /// `Col2im(cols, bias?)`: the second half of a `ConvTranspose` whose
    /// product with the weights is already done. `cols` is
    /// `[N, spatial.., M * prod(kernel)]`, one row of `M` channels times the
    /// kernel taps per input pixel (the result of a Linear with the
    /// transposed convolution's weight viewed as `[M * prod(kernel), C]`).
    /// Each value is added at the output position its tap reaches, and then
    /// the bias `[M]`. The result is `[N, M, out spatial..]` with the sizes of
    /// `ConvTranspose`, and `group` is always 1. Quantization produces it so
    /// that the product can run as an INT8 `QLinear`.
    Col2im(ConvTransposeAttrs),
    /// `Reshape(data, shape)`; a 0 in `shape` copies the input dim unless `allowzero`.
    Reshape { allowzero: bool },
    Transpose { perm: Vec<usize> },
    Flatten { axis: i64 },
    /// Removes the listed size-1 axes, or all size-1 axes when `axes` is `None`.
    Squeeze { axes: Option<Vec<i64>> },
    Unsqueeze { axes: Vec<i64> },
    Concat { axis: i64 },
    /// Splits along `axis` into pieces of the listed sizes.
    Split { axis: i64, sizes: Vec<usize> },
    /// `Slice(data, starts, ends, axes?, steps?)`.
    Slice,
    Gather { axis: i64 },
    /// `Expand(data, shape)` with bidirectional broadcasting.
    Expand,
    /// `Tile(data, repeats)`.
    Tile,
    /// `Pad(data, pads, constant_value?)`; pads is `[begin.., end..]`.
    Pad { mode: PadMode },
    Shape { start: i64, end: Option<i64> },
    Size,
    /// A tensor of the shape given by the operand, filled with `value`.
    ConstantOfShape { value: Tensor },
    /// `Range(start, limit, delta)`.
    Range,
    Cast { to: DType },
    Reduce { kind: ReduceKind, axes: Option<Vec<i64>>, keepdims: bool, noop_with_empty_axes: bool },
    ArgMax { axis: i64, keepdims: bool, select_last_index: bool },
    ArgMin { axis: i64, keepdims: bool, select_last_index: bool },
    /// `Resize(x, roi?, scales?, sizes?)`.
    Resize(ResizeAttrs),
    /// f32 to u8: `q = clamp(round_half_even(x * (1 / scale)) + zero_point, 0, 255)`,
    /// with `1 / scale` rounded to f32 once. Produced by quantization.
    Quantize { scale: f32, zero_point: u8 },
    /// `DynamicQuantize(x) -> (q, params)`: like `Quantize`, with the scale
    /// and zero point computed at run time from `lo = min(0, min x)` and
    /// `hi = max(0, max x)` over each row of the last axis (`per_token`) or
    /// over the whole tensor: `scale = (hi - lo) / 255` (1 when that is 0),
    /// `zero_point = clamp(round_half_even(-lo * (1 / scale)), 0, 255)`.
    /// `params` is f32 `[rows, 2]` of (scale, zero point), one row when not
    /// per token.
    DynamicQuantize { per_token: bool },
    /// u8 to f32: `(q - zero_point) * scale`.
    Dequantize { scale: f32, zero_point: u8 },
    /// INT8 fully connected layer `(x, x_params, weight, weight_scale, bias?)`:
    /// `x` is u8 `[.., k]`, `x_params` f32 `[rows or 1, 2]` holds each row's
    /// (scale, zero point), `weight` is a constant i8 `[n, k]`, `weight_scale`
    /// f32 `[n]`, `bias` f32 `[n]`. With the exact i32 dot product
    /// `acc = sum_k x[r, k] * weight[j, k]` and `colsum[j] = sum_k weight[j, k]`,
    /// the f32 result is `f32(acc - zp[r] * colsum[j]) * (scale[r] * weight_scale[j]) + bias[j]`,
    /// each operation rounded to f32 in that order, so that generated code can
    /// reproduce it bit for bit.
    QLinear,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Relu,
    Sigmoid,
    Tanh,
    Erf,
    Sqrt,
    Exp,
    Log,
    Neg,
    Abs,
    Reciprocal,
    Floor,
    Ceil,
    Round,
    Sign,
    Sin,
    Cos,
    Not,
    IsNaN,
    Softplus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// ONNX `Mod` with `fmod = 0`: the result takes the divisor's sign.
    Mod,
    /// ONNX `Mod` with `fmod = 1`: the result takes the dividend's sign.
    Fmod,
    Max,
    Min,
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
    Xor,
}

impl BinaryOp {
    /// Whether the result is boolean rather than of the operand type.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Equal | BinaryOp::Less | BinaryOp::LessOrEqual | BinaryOp::Greater | BinaryOp::GreaterOrEqual
        )
    }

    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or | BinaryOp::Xor)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GeluApprox {
    /// `0.5 x (1 + erf(x / sqrt 2))`.
    None,
    /// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`.
    Tanh,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
    SumSquare,
    L1,
    L2,
    LogSumExp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
}

/// Attributes of `Conv`, with `auto_pad` already resolved into `pads`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvAttrs {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    /// `[begin_0, begin_1, .., end_0, end_1, ..]`.
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub group: usize,
}

/// Attributes of `ConvTranspose`, with `auto_pad` and `output_shape` resolved
/// into `pads` and `output_padding`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvTransposeAttrs {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub output_padding: Vec<usize>,
    pub group: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResizeMode {
    Nearest,
    Linear,
    Cubic,
}

/// Mapping from an output coordinate back to an input coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoordinateTransform {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResizeAttrs {
    pub mode: ResizeMode,
    pub coordinate_transform: CoordinateTransform,
    pub nearest_mode: NearestMode,
    pub cubic_coeff_a: f32,
    pub exclude_outside: bool,
    pub extrapolation_value: f32,
}

impl Op {
    /// The operator's name as the text IR spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Constant => "const",
            Op::Identity => "Identity",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Where => "Where",
            Op::Clip => "Clip",
            Op::HardSigmoid { .. } => "HardSigmoid",
            Op::LeakyRelu { .. } => "LeakyRelu",
            Op::Softmax { .. } => "Softmax",
            Op::LogSoftmax { .. } => "LogSoftmax",
            Op::Gelu { .. } => "Gelu",
            Op::LayerNorm { .. } => "LayerNorm",
            Op::BatchNorm { .. } => "BatchNorm",
            Op::MatMul => "MatMul",
            Op::Gemm { .. } => "Gemm",
            Op::Linear => "Linear",
            Op::Attention { .. } => "Attention",
            Op::Conv(_) => "Conv",
            Op::ConvTranspose(_) => "ConvTranspose",
            Op::Col2im(_) => "Col2im",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Flatten { .. } => "Flatten",
            Op::Squeeze { .. } => "Squeeze",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::Concat { .. } => "Concat",
            Op::Split { .. } => "Split",
            Op::Slice => "Slice",
            Op::Gather { .. } => "Gather",
            Op::Expand => "Expand",
            Op::Tile => "Tile",
            Op::Pad { .. } => "Pad",
            Op::Shape { .. } => "Shape",
            Op::Size => "Size",
            Op::ConstantOfShape { .. } => "ConstantOfShape",
            Op::Range => "Range",
            Op::Cast { .. } => "Cast",
            Op::Reduce { kind, .. } => kind.name(),
            Op::ArgMax { .. } => "ArgMax",
            Op::ArgMin { .. } => "ArgMin",
            Op::Resize(_) => "Resize",
            Op::Quantize { .. } => "Quantize",
            Op::DynamicQuantize { .. } => "DynamicQuantize",
            Op::Dequantize { .. } => "Dequantize",
            Op::QLinear => "QLinear",
        }
    }

    /// The allowed number of operands, `(min, max)`, counting absent optional ones.
    pub fn arity(&self) -> (usize, usize) {
        match self {
            Op::Input | Op::Constant => (0, 0),
            Op::Binary(_) | Op::MatMul | Op::Reshape { .. } | Op::Expand | Op::Tile | Op::Gather { .. } => (2, 2),
            Op::Where | Op::Range | Op::Attention { .. } => (3, 3),
            Op::Clip => (1, 3),
            Op::LayerNorm { .. } => (2, 3),
            Op::Col2im(_) => (1, 2),
            Op::BatchNorm { .. } => (5, 5),
            Op::Gemm { .. } | Op::Conv(_) | Op::ConvTranspose(_) => (2, 3),
            Op::Linear => (2, 3),
            Op::Concat { .. } => (1, usize::MAX),
            Op::Slice => (3, 5),
            Op::Pad { .. } => (2, 3),
            Op::Resize(_) => (1, 4),
            Op::QLinear => (4, 5),
            _ => (1, 1),
        }
    }

    /// Number of results.
    pub fn num_outputs(&self) -> usize {
        match self {
            Op::Split { sizes, .. } => sizes.len(),
            Op::DynamicQuantize { .. } => 2,
            _ => 1,
        }
    }

    /// Whether evaluating the node on constant operands at compile time is
    /// cheap and safe. Graph inputs and constants are not "folded".
    pub fn is_foldable(&self) -> bool {
        !matches!(self, Op::Input | Op::Constant)
    }

    /// Writes the attributes as ` key=value` pairs for the text IR.
    pub fn fmt_attrs(&self, f: &mut dyn fmt::Write) -> fmt::Result {
        match self {
            Op::HardSigmoid { alpha, beta } => write!(f, " alpha={alpha:?} beta={beta:?}"),
            Op::LeakyRelu { alpha } => write!(f, " alpha={alpha:?}"),
            Op::Softmax { axis, flatten_tail } | Op::LogSoftmax { axis, flatten_tail } => {
                write!(f, " axis={axis}")?;
                if *flatten_tail {
                    write!(f, " flatten_tail")?;
                }
                Ok(())
            }
            Op::Gelu { approximate } => match approximate {
                GeluApprox::None => write!(f, " approximate=none"),
                GeluApprox::Tanh => write!(f, " approximate=tanh"),
            },
            Op::LayerNorm { axis, epsilon } => write!(f, " axis={axis} epsilon={epsilon:e}"),
            Op::BatchNorm { epsilon } => write!(f, " epsilon={epsilon:e}"),
            Op::Gemm { alpha, beta, trans_a, trans_b } => {
                write!(f, " alpha={alpha:?} beta={beta:?} trans_a={trans_a} trans_b={trans_b}")
            }
            Op::Attention { heads, head_dim, scale } => write!(f, " heads={heads} head_dim={head_dim} scale={scale:?}"),
            Op::Conv(c) => write!(
                f,
                " kernel={:?} strides={:?} pads={:?} dilations={:?} group={}",
                c.kernel, c.strides, c.pads, c.dilations, c.group
            ),
            Op::ConvTranspose(c) | Op::Col2im(c) => write!(
                f,
                " kernel={:?} strides={:?} pads={:?} dilations={:?} output_padding={:?} group={}",
                c.kernel, c.strides, c.pads, c.dilations, c.output_padding, c.group
            ),
            Op::Reshape { allowzero } => {
                if *allowzero {
                    write!(f, " allowzero")?;
                }
                Ok(())
            }
            Op::Transpose { perm } => write!(f, " perm={perm:?}"),
            Op::Quantize { scale, zero_point } | Op::Dequantize { scale, zero_point } => {
                write!(f, " scale={scale:e} zero_point={zero_point}")
            }
            Op::DynamicQuantize { per_token } => write!(f, " per_token={per_token}"),
            Op::Flatten { axis } | Op::Concat { axis } | Op::Gather { axis } => write!(f, " axis={axis}"),
            Op::Squeeze { axes: Some(axes) } => write!(f, " axes={axes:?}"),
            Op::Unsqueeze { axes } => write!(f, " axes={axes:?}"),
            Op::Split { axis, sizes } => write!(f, " axis={axis} sizes={sizes:?}"),
            Op::Pad { mode } => write!(f, " mode={mode:?}"),
            Op::Shape { start, end } => {
                if *start != 0 {
                    write!(f, " start={start}")?;
                }
                if let Some(end) = end {
                    write!(f, " end={end}")?;
                }
                Ok(())
            }
            Op::ConstantOfShape { value } => write!(f, " value={}:{}", value.dtype(), value.to_f64_vec()[0]),
            Op::Cast { to } => write!(f, " to={to}"),
            Op::Reduce { axes, keepdims, noop_with_empty_axes, .. } => {
                match axes {
                    Some(axes) => write!(f, " axes={axes:?}")?,
                    None => write!(f, " axes=all")?,
                }
                write!(f, " keepdims={}", *keepdims as u8)?;
                if *noop_with_empty_axes {
                    write!(f, " noop_with_empty_axes")?;
                }
                Ok(())
            }
            Op::ArgMax { axis, keepdims, select_last_index } | Op::ArgMin { axis, keepdims, select_last_index } => {
                write!(f, " axis={axis} keepdims={}", *keepdims as u8)?;
                if *select_last_index {
                    write!(f, " select_last_index")?;
                }
                Ok(())
            }
            Op::Resize(r) => {
                write!(f, " mode={:?} coordinate_transform={:?}", r.mode, r.coordinate_transform)?;
                match r.mode {
                    ResizeMode::Nearest => write!(f, " nearest_mode={:?}", r.nearest_mode),
                    ResizeMode::Cubic => write!(f, " cubic_coeff_a={:?} exclude_outside={}", r.cubic_coeff_a, r.exclude_outside),
                    ResizeMode::Linear => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

impl UnaryOp {
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Relu => "Relu",
            UnaryOp::Sigmoid => "Sigmoid",
            UnaryOp::Tanh => "Tanh",
            UnaryOp::Erf => "Erf",
            UnaryOp::Sqrt => "Sqrt",
            UnaryOp::Exp => "Exp",
            UnaryOp::Log => "Log",
            UnaryOp::Neg => "Neg",
            UnaryOp::Abs => "Abs",
            UnaryOp::Reciprocal => "Reciprocal",
            UnaryOp::Floor => "Floor",
            UnaryOp::Ceil => "Ceil",
            UnaryOp::Round => "Round",
            UnaryOp::Sign => "Sign",
            UnaryOp::Sin => "Sin",
            UnaryOp::Cos => "Cos",
            UnaryOp::Not => "Not",
            UnaryOp::IsNaN => "IsNaN",
            UnaryOp::Softplus => "Softplus",
        }
    }
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "Add",
            BinaryOp::Sub => "Sub",
            BinaryOp::Mul => "Mul",
            BinaryOp::Div => "Div",
            BinaryOp::Pow => "Pow",
            BinaryOp::Mod => "Mod",
            BinaryOp::Fmod => "Fmod",
            BinaryOp::Max => "Max",
            BinaryOp::Min => "Min",
            BinaryOp::Equal => "Equal",
            BinaryOp::Less => "Less",
            BinaryOp::LessOrEqual => "LessOrEqual",
            BinaryOp::Greater => "Greater",
            BinaryOp::GreaterOrEqual => "GreaterOrEqual",
            BinaryOp::And => "And",
            BinaryOp::Or => "Or",
            BinaryOp::Xor => "Xor",
        }
    }
}

impl ReduceKind {
    pub fn name(self) -> &'static str {
        match self {
            ReduceKind::Mean => "ReduceMean",
            ReduceKind::Sum => "ReduceSum",
            ReduceKind::Max => "ReduceMax",
            ReduceKind::Min => "ReduceMin",
            ReduceKind::Prod => "ReduceProd",
            ReduceKind::SumSquare => "ReduceSumSquare",
            ReduceKind::L1 => "ReduceL1",
            ReduceKind::L2 => "ReduceL2",
            ReduceKind::LogSumExp => "ReduceLogSumExp",
        }
    }
}
