//! Block-sparse weights for the GEMM.
//!
//! The packed F32 GEMM reads its weight in panels of [`GEMM_NR`] columns
//! (`[n / NR][k][NR]`). Split each panel into tiles of [`TILE_K`] rows of k:
//! a tile whose 32 weights are all zero contributes nothing, so a weight
//! with enough empty tiles is stored without them and the kernel
//! (`Kernel::SparseGemm`) walks only the kept tiles. The sparsify pass
//! produces such weights with `block-rows = 8, block = 4`.

use crate::lower::kernel::GEMM_NR;

/// Rows of k per tile: the GEMM's unrolled step.
pub const TILE_K: usize = 4;

/// Smallest fraction of empty tiles for which the block-sparse kernel is
/// chosen. Below it the table lookups cost about what the skipped tiles
/// save (`benches/gemm.rs`, group `sparse_gemm`, measures both kernels).
pub const MIN_EMPTY_FRACTION: f64 = 0.2;

/// A packed weight with its empty tiles removed.
pub struct SparsePanels {
    /// Kept tiles, panel after panel, each `[TILE_K][GEMM_NR]`.
    pub tiles: Vec<f32>,
    /// `panels + 1` tile starts (panel `p` owns tiles `start[p]..start[p + 1]`),
    /// then for each kept tile the byte offset of its first k within a row
    /// of A; all u32 stored bit for bit in f32 words.
    pub index: Vec<f32>,
    pub kept: usize,
    pub total: usize,
}

/// Drops the empty tiles of `packed` (panels of `B[k, n]`), or returns
/// `None` when the kernel cannot use the result: k not a multiple of
/// [`TILE_K`], or too few empty tiles to pay for the indirection.
pub fn sparse_panels(packed: &[f32], k: usize, n: usize) -> Option<SparsePanels> {
    if k == 0 || !k.is_multiple_of(TILE_K) {
        return None;
    }
    let panels = n.div_ceil(GEMM_NR);
    let tile_len = TILE_K * GEMM_NR;
    let per_panel = k / TILE_K;
    let total = panels * per_panel;
    let empty = packed.chunks(tile_len).filter(|tile| tile.iter().all(|&w| w == 0.0)).count();
    if (empty as f64) < MIN_EMPTY_FRACTION * total as f64 {
        return None;
    }

    let word = |v: usize| f32::from_bits(u32::try_from(v).expect("GEMM index fits in u32"));
    let mut tiles = Vec::with_capacity((total - empty) * tile_len);
    let mut starts = Vec::with_capacity(panels + 1);
    let mut offsets = Vec::with_capacity(total - empty);
    for (index, tile) in packed.chunks(tile_len).enumerate() {
        if index % per_panel == 0 {
            starts.push(word(offsets.len()));
        }
        if tile.iter().any(|&w| w != 0.0) {
            tiles.extend_from_slice(tile);
            offsets.push(word((index % per_panel) * TILE_K * 4));
        }
    }
    starts.push(word(offsets.len()));
    let kept = offsets.len();
    starts.extend(offsets);
    Some(SparsePanels { tiles, index: starts, kept, total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::select::pack_panels;

    #[test]
    fn keeps_nonzero_tiles_in_panel_order() {
        // B[8, 16]: two panels, two tiles each; zero the second tile of
        // panel 0 and the first of panel 1.
        let (k, n) = (8, 16);
        let b = |kk: usize, col: usize| {
            let empty = (col < 8 && kk >= 4) || (col >= 8 && kk < 4);
            if empty { 0.0 } else { (kk * n + col) as f32 + 1.0 }
        };
        let packed = pack_panels(k, n, b);
        let sparse = sparse_panels(&packed, k, n).expect("half the tiles are empty");
        assert_eq!((sparse.kept, sparse.total), (2, 4));
        let bits: Vec<u32> = sparse.index.iter().map(|w| w.to_bits()).collect();
        assert_eq!(bits, [0, 1, 2, 0, 16]);
        assert_eq!(sparse.tiles[..32], packed[..32]);
        assert_eq!(sparse.tiles[32..], packed[96..128]);
    }

    #[test]
    fn dense_or_odd_depth_weights_stay_dense() {
        let packed = pack_panels(8, 8, |kk, col| (kk + col) as f32 + 1.0);
        assert!(sparse_panels(&packed, 8, 8).is_none());
        let zeros = pack_panels(6, 8, |_, _| 0.0);
        assert!(sparse_panels(&zeros, 6, 8).is_none());
    }
}
