//! Quantization parameters carried in value facts.
//!
//! Activations are unsigned 8-bit and affine: `real = scale * (q - zero_point)`
//! with `q` in `0..=255`. Weights are signed 8-bit and symmetric:
//! `real = scale[channel] * q`, one scale per output channel (axis 0) or one
//! for the whole tensor. The operators that produce and consume these values
//! ([`crate::ir::Op::Quantize`], [`crate::ir::Op::QLinear`], ...) hold the
//! same numbers as attributes or operands, which is what the interpreter
//! and the kernels read; the facts let the printer and later passes see
//! them without decoding operands.

use std::fmt;
use std::sync::Arc;

/// How the elements of a quantized value map back to real numbers.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantParams {
    /// u8 with one scale and zero point fixed at compile time.
    Affine { scale: f32, zero_point: u8 },
    /// u8 whose scale and zero point are computed at run time, per row of the
    /// last axis (`per_token`) or for the whole tensor.
    Dynamic { per_token: bool },
    /// Symmetric i8 weights with one scale per output channel (axis 0); a
    /// per-tensor weight repeats its single scale.
    Symmetric { scales: Arc<[f32]>, per_channel: bool },
}

impl fmt::Display for QuantParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantParams::Affine { scale, zero_point } => write!(f, "q(scale={scale:e} zp={zero_point})"),
            QuantParams::Dynamic { per_token: true } => write!(f, "q(dynamic per-token)"),
            QuantParams::Dynamic { per_token: false } => write!(f, "q(dynamic per-tensor)"),
            QuantParams::Symmetric { scales, per_channel: false } => {
                write!(f, "q(symmetric scale={:e})", scales.first().copied().unwrap_or(0.0))
            }
            QuantParams::Symmetric { scales, per_channel: true } => {
                let min = scales.iter().copied().fold(f32::INFINITY, f32::min);
                let max = scales.iter().copied().fold(0.0f32, f32::max);
                write!(f, "q(symmetric per-channel x{} scale={min:e}..{max:e})", scales.len())
            }
        }
    }
}
