//! On-disk cache of calibration statistics.
//!
//! The key is a BLAKE3 hash of everything the statistics depend on: the
//! printed graph (which identifies every weight by its content hash), the
//! tapped values, the pass, the histogram size and the content of every
//! calibration batch. A rebuild with the same model, settings and data
//! reads the file instead of running the interpreter again.

use std::path::{Path, PathBuf};

use super::calibrate::{Pass, TensorStats};
use crate::error::{Error, Result};
use crate::ir::printer::print_graph;
use crate::ir::{Graph, ValueId};
use crate::tensor::Tensor;

/// Path of the cache file for one calibration pass.
pub fn entry_path(dir: &Path, graph: &Graph, taps: &[ValueId], pass: Pass, bins: usize, calibration: &[Tensor]) -> PathBuf {
    let mut hasher = blake3::Hasher::new();
    hasher.update(print_graph(graph).as_bytes());
    hasher.update(format!("{taps:?} {pass:?} {bins}").as_bytes());
    for batch in calibration {
        hasher.update(batch.content_hash().as_bytes());
    }
    let key = hasher.finalize().to_hex();
    dir.join(format!("calibration-{}.json", &key.as_str()[..32]))
}

/// Reads a cache entry; a missing, unreadable or invalid file is a miss.
/// The file is checked against the taps of `graph` (one entry each, one
/// maximum per channel of the last axis, `bins` histogram bins, finite
/// ranges), since a damaged or edited file would otherwise set wrong
/// scales or stop the build.
pub fn load(path: &Path, graph: &Graph, taps: &[ValueId], bins: usize) -> Option<Vec<TensorStats>> {
    let text = std::fs::read_to_string(path).ok()?;
    let problem = match serde_json::from_str::<Vec<TensorStats>>(&text) {
        Err(e) => format!("unreadable: {e}"),
        Ok(stats) if stats.len() != taps.len() => format!("{} entries for {} tapped values", stats.len(), taps.len()),
        Ok(stats) => match stats.iter().zip(taps).find_map(|(s, &tap)| invalid_entry(s, graph, tap, bins)) {
            Some(problem) => problem,
            None => return Some(stats),
        },
    };
    tracing::warn!(path = %path.display(), "ignoring a calibration cache file that does not match this graph: {problem}");
    None
}

/// Describes what is wrong with the cached statistics `stats` of `tap`.
fn invalid_entry(stats: &TensorStats, graph: &Graph, tap: ValueId, bins: usize) -> Option<String> {
    let name = &graph.value(tap).name;
    if !(stats.min.is_finite() && stats.max.is_finite() && stats.min <= stats.max) {
        return Some(format!("value '{name}' has the range [{}, {}]", stats.min, stats.max));
    }
    let channels = graph.fact(tap).shape.last().copied().unwrap_or(1);
    if let Some(absmax) = &stats.channel_absmax
        && (absmax.len() != channels || absmax.iter().any(|m| !(m.is_finite() && *m >= 0.0)))
    {
        return Some(format!("value '{name}' has {} channel maxima for {channels} channels, or a negative or non-finite one", absmax.len()));
    }
    if let Some(histogram) = &stats.histogram
        && histogram.len() != bins
    {
        return Some(format!("value '{name}' has {} histogram bins, not {bins}", histogram.len()));
    }
    None
}

/// Writes a cache entry through a temporary file, so that a reader never
/// sees half a file.
pub fn store(path: &Path, stats: &[TensorStats]) -> Result<()> {
    let dir = path.parent().expect("cache entries live in a folder");
    std::fs::create_dir_all(dir).map_err(|error| Error::Write { path: dir.to_path_buf(), error })?;
    let text = serde_json::to_string(stats).map_err(|e| Error::Internal(e.to_string()))?;
    let temp = path.with_extension("json.tmp");
    std::fs::write(&temp, text).map_err(|error| Error::Write { path: temp.clone(), error })?;
    std::fs::rename(&temp, path).map_err(|error| Error::Write { path: path.to_path_buf(), error })
}
