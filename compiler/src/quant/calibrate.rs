//! Calibration: statistics of activations on real inputs, and the static
//! ranges chosen from them.
//!
//! The interpreter runs the f32 graph on every calibration batch and taps
//! the values to be quantized. One pass records the minimum, the maximum
//! and, for values that smoothing needs, the maximum magnitude per channel
//! (last axis). The `percentile` and `entropy` methods need a second pass
//! that fills a histogram over the range found by the first.

use std::collections::HashMap;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::config::{CalibrationMethod, QuantConfig};
use crate::error::{Error, Result};
use crate::interp;
use crate::interp::quant::dynamic_params;
use crate::ir::{Graph, ValueId};
use crate::tensor::Tensor;

/// Statistics that one pass records for each tapped value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Minimum, maximum and, if requested, per-channel maximum magnitude.
    Range { per_channel: bool },
    /// A histogram of values over the range of the previous pass (percentile).
    Signed,
    /// A histogram of magnitudes up to the largest one (entropy).
    Magnitude,
}

/// Statistics of one tapped value over all calibration batches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TensorStats {
    pub min: f32,
    pub max: f32,
    /// Maximum magnitude per channel of the last axis.
    pub channel_absmax: Option<Vec<f32>>,
    pub histogram: Option<Vec<u64>>,
}

/// Runs the interpreter on every batch and collects `pass` statistics for
/// each of `taps`. `ranges` are the results of an earlier range pass, which
/// the histogram passes need.
pub fn collect(
    graph: &Graph,
    taps: &[ValueId],
    calibration: &[Tensor],
    pass: Pass,
    bins: usize,
    ranges: Option<&[TensorStats]>,
) -> Result<Vec<TensorStats>> {
    let input = match graph.inputs() {
        [input] => *input,
        inputs => return Err(Error::Quant(format!("calibration feeds models with one input, but this one has {}", inputs.len()))),
    };
    let progress = ProgressBar::new(calibration.len() as u64);
    progress.set_style(ProgressStyle::with_template("calibrating {msg} [{bar:30}] {pos}/{len} batches").expect("template is valid"));
    progress.set_message(match pass {
        Pass::Range { .. } => "ranges",
        Pass::Signed => "histograms",
        Pass::Magnitude => "magnitude histograms",
    });

    let mut stats: Vec<TensorStats> =
        taps.iter().map(|_| TensorStats { min: f32::INFINITY, max: f32::NEG_INFINITY, ..TensorStats::default() }).collect();
    for (index, batch) in calibration.iter().enumerate() {
        let expected = &graph.fact(input).shape;
        if batch.shape() != expected.as_slice() {
            return Err(Error::Quant(format!(
                "calibration batch {index} has shape {:?}, but the model input '{}' is {:?}; give batches of the bound input shape",
                batch.shape(),
                graph.value(input).name,
                expected
            )));
        }
        let (_, tapped) = interp::run_with_taps(graph, &[(input, batch.clone())], taps)?;
        for (i, tensor) in tapped.iter().enumerate() {
            let data = tensor.as_f32().ok_or_else(|| Error::Internal(format!("tapped value {} is not f32", taps[i])))?;
            let values = data.as_slice().ok_or_else(|| Error::Internal("tapped value is not contiguous".into()))?;
            let range = ranges.map(|r| &r[i]);
            accumulate(&mut stats[i], values, data.shape().last().copied().unwrap_or(1), pass, bins, range);
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(stats)
}

fn accumulate(stats: &mut TensorStats, values: &[f32], channels: usize, pass: Pass, bins: usize, range: Option<&TensorStats>) {
    match pass {
        Pass::Range { per_channel } => {
            for &v in values {
                stats.min = stats.min.min(v);
                stats.max = stats.max.max(v);
            }
            if per_channel {
                let absmax = stats.channel_absmax.get_or_insert_with(|| vec![0.0; channels]);
                for row in values.chunks(channels) {
                    for (m, &v) in absmax.iter_mut().zip(row) {
                        *m = m.max(v.abs());
                    }
                }
            }
        }
        Pass::Signed | Pass::Magnitude => {
            let range = range.expect("histogram passes follow a range pass");
            let (lo, hi) = if pass == Pass::Signed { (range.min, range.max) } else { (0.0, range.min.abs().max(range.max.abs())) };
            let histogram = stats.histogram.get_or_insert_with(|| vec![0; bins]);
            let width = (hi - lo) / bins as f32;
            for &v in values {
                let v = if pass == Pass::Magnitude { v.abs() } else { v };
                let bin = if width > 0.0 { ((v - lo) / width) as usize } else { 0 };
                histogram[bin.min(bins - 1)] += 1;
            }
            stats.min = range.min;
            stats.max = range.max;
        }
    }
}

/// Static range `lo..hi` (with `lo <= 0 <= hi`) of one value.
pub fn choose_range(stats: &TensorStats, config: &QuantConfig) -> (f32, f32) {
    let (lo, hi) = match (config.calibration, &stats.histogram) {
        (CalibrationMethod::MinMax, _) | (_, None) => (stats.min, stats.max),
        (CalibrationMethod::Percentile, Some(histogram)) => percentile_range(histogram, stats.min, stats.max, config.percentile),
        (CalibrationMethod::Entropy, Some(histogram)) => {
            let threshold = entropy_threshold(histogram, stats.min.abs().max(stats.max.abs()));
            (stats.min.max(-threshold), stats.max.min(threshold))
        }
    };
    (lo.min(0.0), hi.max(0.0))
}

/// Scale and zero point for the range `lo..hi`, with the same arithmetic as
/// dynamic quantization.
pub fn affine_params(lo: f32, hi: f32) -> (f32, u8) {
    let (scale, zero_point) = dynamic_params(lo, hi);
    (scale, zero_point as u8)
}

/// The values at the `100 - percentile` and `percentile` percentiles of a
/// histogram over `lo..hi` (bin edges).
fn percentile_range(histogram: &[u64], lo: f32, hi: f32, percentile: f64) -> (f32, f32) {
    let total: u64 = histogram.iter().sum();
    let width = (hi - lo) / histogram.len() as f32;
    let tail = ((1.0 - percentile / 100.0) * total as f64) as u64;
    let mut seen = 0;
    let mut low_bin = 0;
    for (i, &count) in histogram.iter().enumerate() {
        seen += count;
        if seen > tail {
            low_bin = i;
            break;
        }
    }
    seen = 0;
    let mut high_bin = histogram.len() - 1;
    for (i, &count) in histogram.iter().enumerate().rev() {
        seen += count;
        if seen > tail {
            high_bin = i;
            break;
        }
    }
    (lo + width * low_bin as f32, lo + width * (high_bin + 1) as f32)
}

/// Levels the entropy method quantizes magnitudes into: one sign of 8 bits.
const ENTROPY_LEVELS: usize = 128;

/// The clipping threshold for magnitudes that minimizes KL(P || Q), where P
/// is the histogram cut at the threshold with the clipped tail added to its
/// last bin, and Q is the cut histogram without that tail, merged into
/// [`ENTROPY_LEVELS`] levels and spread back evenly over the bins that were
/// not empty. A low cut loses the tail's mass in Q, a high cut merges many
/// bins into each level; the minimum balances clipping against rounding.
fn entropy_threshold(histogram: &[u64], absmax: f32) -> f32 {
    let bins = histogram.len();
    let width = absmax / bins as f32;
    let mut best = (f64::INFINITY, bins);
    for cut in (ENTROPY_LEVELS..=bins).step_by((bins / 256).max(1)) {
        let mut p: Vec<f64> = histogram[..cut].iter().map(|&c| c as f64).collect();
        p[cut - 1] += histogram[cut..].iter().map(|&c| c as f64).sum::<f64>();
        let total: f64 = p.iter().sum();
        if total == 0.0 {
            continue;
        }

        // Merge into levels, then expand each level over its non-empty bins.
        let mut q = vec![0.0; cut];
        for level in 0..ENTROPY_LEVELS {
            let start = level * cut / ENTROPY_LEVELS;
            let end = ((level + 1) * cut / ENTROPY_LEVELS).max(start + 1);
            let mass: f64 = histogram[start..end].iter().map(|&c| c as f64).sum();
            let nonzero = histogram[start..end].iter().filter(|&&c| c > 0).count();
            for i in start..end {
                if histogram[i] > 0 {
                    q[i] = mass / nonzero as f64;
                }
            }
        }

        let q_total: f64 = q.iter().sum();
        let mut divergence = 0.0;
        for i in 0..cut {
            if p[i] > 0.0 {
                let pi = p[i] / total;
                let qi = (q[i] / q_total).max(1e-12);
                divergence += pi * (pi / qi).ln();
            }
        }
        if divergence < best.0 {
            best = (divergence, cut);
        }
    }
    width * best.1 as f32
}

/// Maps each tapped value to its statistics.
pub fn by_value(taps: &[ValueId], stats: Vec<TensorStats>) -> HashMap<ValueId, TensorStats> {
    taps.iter().copied().zip(stats).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_trims_outliers() {
        // 1000 values in bins 0..10 and one outlier in the last bin.
        let mut histogram = vec![0u64; 100];
        for bin in histogram.iter_mut().take(10) {
            *bin = 100;
        }
        histogram[99] = 1;
        let (lo, hi) = percentile_range(&histogram, 0.0, 100.0, 99.9);
        assert_eq!(lo, 0.0);
        assert_eq!(hi, 10.0);
        let (_, hi_all) = percentile_range(&histogram, 0.0, 100.0, 100.0);
        assert_eq!(hi_all, 100.0);
    }

    #[test]
    fn entropy_clips_long_tail() {
        // Magnitudes falling off exponentially over the first eighth of the
        // range, and a sparse tail of outliers beyond.
        let mut histogram = vec![0u64; 2048];
        for (i, bin) in histogram.iter_mut().enumerate() {
            *bin = if i < 256 { (10000.0 * (-(i as f64) / 40.0).exp()) as u64 } else if i % 128 == 0 { 1 } else { 0 };
        }
        let threshold = entropy_threshold(&histogram, 8.0);
        assert!(threshold > 0.5, "threshold {threshold} clips the dense part");
        assert!(threshold < 4.0, "threshold {threshold} keeps the sparse tail");
    }

    #[test]
    fn affine_params_map_range_ends() {
        let (scale, zp) = affine_params(-2.0, 6.0);
        assert_eq!(zp, 64);
        assert!((scale - 8.0 / 255.0).abs() < 1e-9);
    }
}
