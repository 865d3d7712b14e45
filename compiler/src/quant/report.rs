//! The quantization report: per layer, the chosen scales, what stayed in
//! f32 and why, and the error against the f32 model on the calibration data.

use std::fmt;

use serde::Serialize;

use super::smooth::SmoothedNorm;

/// One INT8 Linear layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerReport {
    pub name: String,
    /// `static` with its scale and zero point, or `dynamic per-token` / `dynamic per-tensor`.
    pub activation: String,
    /// Calibrated input range (static activations only).
    pub input_range: Option<(f32, f32)>,
    pub weight_scale_min: f32,
    pub weight_scale_max: f32,
    /// `||y_int8 - y_f32|| / ||y_f32||` of this layer's output over the
    /// calibration data, with every earlier layer quantized too.
    pub relative_error: Option<f64>,
    pub cosine: Option<f64>,
}

/// An operator left in f32, or given a quantize-dequantize pair.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PrecisionDecision {
    pub name: String,
    pub op: String,
    pub precision: String,
    pub reason: String,
}

/// What [`super::quantize`] did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QuantReport {
    pub activations: String,
    pub weights: String,
    pub calibration: String,
    pub calibration_batches: usize,
    /// Calibration passes whose statistics came from the cache.
    pub cached_passes: usize,
    /// Calibration passes run with the interpreter.
    pub computed_passes: usize,
    pub layers: Vec<LayerReport>,
    pub decisions: Vec<PrecisionDecision>,
    pub smoothed: Vec<SmoothedNorm>,
    /// Error of the first graph output against the f32 model.
    pub output_relative_error: Option<f64>,
    pub output_cosine: Option<f64>,
}

impl fmt::Display for QuantReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "activations: {}", self.activations)?;
        writeln!(f, "weights:     {}", self.weights)?;
        if self.calibration_batches == 0 {
            writeln!(f, "calibration: none (no calibration data, so no smoothing and no static scales)")?;
        } else {
            writeln!(
                f,
                "calibration: {} on {} batches ({} passes computed, {} from cache)",
                self.calibration, self.calibration_batches, self.computed_passes, self.cached_passes
            )?;
        }
        if let (Some(error), Some(cosine)) = (self.output_relative_error, self.output_cosine) {
            writeln!(f, "output:      relative error {error:.4}, cosine {cosine:.6} against f32")?;
        }
        writeln!(f, "INT8 layers:")?;
        for layer in &self.layers {
            write!(f, "  {:<32} {:<36} w_scale {:.2e}..{:.2e}", layer.name, layer.activation, layer.weight_scale_min, layer.weight_scale_max)?;
            if let (Some(error), Some(cosine)) = (layer.relative_error, layer.cosine) {
                write!(f, "  rel.err {error:.4} cos {cosine:.5}")?;
            }
            writeln!(f)?;
        }
        if !self.smoothed.is_empty() {
            writeln!(f, "smoothed LayerNorms:")?;
            for s in &self.smoothed {
                writeln!(f, "  {:<32} factors {:.3}..{:.3} into {}", s.layer_norm, s.min_factor, s.max_factor, s.linears.join(", "))?;
            }
        }
        writeln!(f, "other operators:")?;
        for d in &self.decisions {
            writeln!(f, "  {:<32} {:<10} {:<5} {}", d.name, d.op, d.precision, d.reason)?;
        }
        Ok(())
    }
}

/// Accumulates `||a - b||^2`, `||b||^2`, `a . b` and `||a||^2` over batches.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorSums {
    diff: f64,
    reference: f64,
    dot: f64,
    own: f64,
}

impl ErrorSums {
    pub fn add(&mut self, quantized: &[f32], reference: &[f32]) {
        for (&a, &b) in quantized.iter().zip(reference) {
            let (a, b) = (f64::from(a), f64::from(b));
            self.diff += (a - b) * (a - b);
            self.reference += b * b;
            self.dot += a * b;
            self.own += a * a;
        }
    }

    pub fn relative_error(&self) -> f64 {
        (self.diff / self.reference.max(f64::MIN_POSITIVE)).sqrt()
    }

    pub fn cosine(&self) -> f64 {
        self.dot / (self.own.sqrt() * self.reference.sqrt()).max(f64::MIN_POSITIVE)
    }
}
