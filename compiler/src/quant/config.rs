//! Settings of INT8 quantization, as a recipe or a JSON file spells them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where activation scales come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationMode {
    /// Fixed at compile time from calibration data.
    Static,
    /// Computed by generated code on every call.
    Dynamic,
}

/// Scope of one dynamic scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DynamicGranularity {
    PerTensor,
    /// One scale per row of the last axis (per token in a ViT).
    PerToken,
}

/// Scope of one weight scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightGranularity {
    PerChannel,
    PerTensor,
}

/// How a static activation range is chosen from calibration statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalibrationMethod {
    /// The observed minimum and maximum.
    MinMax,
    /// The `percentile` and `100 - percentile` percentiles of all values.
    Percentile,
    /// The clipping threshold that minimizes the KL divergence between the
    /// histogram of magnitudes and its 128-level quantization.
    Entropy,
}

/// Precision of one operator kind or one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    F32,
    Int8,
}

/// Precision of the layers whose node name contains `name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerOverride {
    pub name: String,
    pub precision: Precision,
}

/// Operator kinds that quantization can touch, as the config names them.
pub const OP_KINDS: [&str; 5] = ["Linear", "ConvTranspose", "LayerNorm", "Add", "Gelu"];

/// Settings of [`super::quantize`]. The default is static per-channel INT8
/// for every Linear and ConvTranspose with min-max calibration, LayerNorm, residual Add and
/// GELU kept in f32, and SmoothQuant smoothing with alpha 0.5.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct QuantConfig {
    pub activations: ActivationMode,
    /// Used when `activations` is `dynamic`.
    pub dynamic_granularity: DynamicGranularity,
    pub weights: WeightGranularity,
    /// Largest weight magnitude in quantized units: 127 uses all of i8, and
    /// 63 leaves x86-64 `pmaddubsw` (which adds two u8 x i8 products in
    /// saturating i16) exact, so code for CPUs without VNNI takes that fast path.
    #[serde(deserialize_with = "weight_max_in_range")]
    pub weight_max: u8,
    pub calibration: CalibrationMethod,
    /// Percentile kept by the `percentile` method, in (50, 100].
    pub percentile: f64,
    /// Histogram bins of the `percentile` and `entropy` methods.
    pub histogram_bins: usize,
    /// SmoothQuant migration strength for Linear layers that read a
    /// LayerNorm, in [0, 1]. 0 or `None` turns smoothing off.
    pub smoothing_alpha: Option<f32>,
    /// Precision per operator kind (one of [`OP_KINDS`]). Kinds not listed
    /// keep their default: Linear and ConvTranspose are INT8, the others stay f32. An INT8
    /// LayerNorm, Add or GELU has its result quantized and dequantized.
    pub ops: std::collections::BTreeMap<String, Precision>,
    /// Per-layer overrides, matched against node names in order; the last
    /// match wins over `ops`.
    pub layers: Vec<LayerOverride>,
    /// Folder of the calibration statistics cache; `None` disables it.
    pub cache_dir: Option<PathBuf>,
}

impl Default for QuantConfig {
    fn default() -> QuantConfig {
        QuantConfig {
            activations: ActivationMode::Static,
            dynamic_granularity: DynamicGranularity::PerToken,
            weights: WeightGranularity::PerChannel,
            weight_max: 63,
            calibration: CalibrationMethod::MinMax,
            percentile: 99.99,
            histogram_bins: 2048,
            smoothing_alpha: Some(0.5),
            ops: Default::default(),
            layers: vec![],
            cache_dir: None,
        }
    }
}

impl QuantConfig {
    /// Checks every field. The error names the field as a recipe spells it
    /// (kebab-case) and gives the accepted values.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field: &str, message: String| Err(Error::Quant(format!("invalid setting '{field}': {message}")));
        if !(1..=127).contains(&self.weight_max) {
            return invalid("weight-max", format!("{} is outside 1..=127", self.weight_max));
        }
        if !(self.percentile > 50.0 && self.percentile <= 100.0) {
            return invalid("percentile", format!("{} is outside (50, 100]", self.percentile));
        }
        if !(256..=1 << 20).contains(&self.histogram_bins) {
            return invalid("histogram-bins", format!("{} is outside 256..=1048576", self.histogram_bins));
        }
        if let Some(alpha) = self.smoothing_alpha
            && !(0.0..=1.0).contains(&alpha)
        {
            return invalid("smoothing-alpha", format!("{alpha} is outside [0, 1]"));
        }
        for kind in self.ops.keys() {
            if !OP_KINDS.contains(&kind.as_str()) {
                let hint = if kind == "Softmax" || kind == "Attention" {
                    "; Softmax runs inside the fused Attention kernel, which has no INT8 form"
                } else {
                    ""
                };
                return invalid("ops", format!("unknown operator kind '{kind}'; expected one of {}{hint}", OP_KINDS.join(", ")));
            }
        }
        for layer in &self.layers {
            if layer.name.is_empty() {
                return invalid("layers.name", "an empty name would match every node; give part of a node name".into());
            }
        }
        if self.cache_dir.as_ref().is_some_and(|dir| dir.to_string_lossy().trim().is_empty()) {
            return invalid("cache-dir", "an empty path; give a folder, or leave the key out for the default".into());
        }
        Ok(())
    }

    /// Returns whether an override makes a LayerNorm, Add or GELU result
    /// INT8, since such results get fixed scales from calibration data. A
    /// layer override to INT8 counts too, because its kinds are unknown here.
    pub fn has_fixed_scale_overrides(&self) -> bool {
        let by_kind = self.ops.iter().any(|(kind, &p)| p == Precision::Int8 && kind != "Linear" && kind != "ConvTranspose");
        by_kind || self.layers.iter().any(|l| l.precision == Precision::Int8)
    }

    /// Precision of node `name` of operator kind `kind`.
    pub fn precision_of(&self, kind: &str, name: &str) -> Precision {
        let default = if kind == "Linear" || kind == "ConvTranspose" { Precision::Int8 } else { Precision::F32 };
        let by_kind = self.ops.get(kind).copied().unwrap_or(default);
        self.layers.iter().rev().find(|l| name.contains(&l.name)).map_or(by_kind, |l| l.precision)
    }
}

/// Reads `weight-max` as any integer, so that an out-of-range value gets
/// the accepted range in its error rather than serde's "expected u8".
fn weight_max_in_range<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<u8, D::Error> {
    let value = <i64 as serde::Deserialize>::deserialize(deserializer)?;
    u8::try_from(value)
        .ok()
        .filter(|v| (1..=127).contains(v))
        .ok_or_else(|| serde::de::Error::custom(format!("weight-max must be in 1..=127, not {value}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_unknown_field() {
        let error = serde_json::from_str::<QuantConfig>(r#"{"activation": "static"}"#).unwrap_err();
        assert!(error.to_string().contains("unknown field `activation`"), "{error}");
    }

    #[test]
    fn config_validate_names_field() {
        let config = QuantConfig { smoothing_alpha: Some(1.5), ..QuantConfig::default() };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("smoothing-alpha"), "{error}");
        let config = QuantConfig { ops: [("Softmax".to_string(), Precision::Int8)].into(), ..QuantConfig::default() };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("Attention"), "{error}");
        assert!(QuantConfig::default().validate().is_ok());
    }

    #[test]
    fn layer_override_wins_over_kind() {
        let config = QuantConfig {
            ops: [("Add".to_string(), Precision::Int8)].into(),
            layers: vec![LayerOverride { name: "blocks.0/".into(), precision: Precision::F32 }],
            ..QuantConfig::default()
        };
        assert_eq!(config.precision_of("Linear", "/blocks.0/mlp/fc1"), Precision::F32);
        assert_eq!(config.precision_of("Linear", "/blocks.1/mlp/fc1"), Precision::Int8);
        assert_eq!(config.precision_of("Add", "/blocks.1/add"), Precision::Int8);
        assert_eq!(config.precision_of("LayerNorm", "/blocks.1/ln"), Precision::F32);
        assert_eq!(config.precision_of("ConvTranspose", "/decoder/upconv1"), Precision::Int8);
    }
}
