//! Kernel selection for the quantized operators.
//!
//! `QLinear` becomes one INT8 GEMM whose weights are packed here, at
//! compile time, into the micro-kernel's layout (see [`pack_int8_panels`]),
//! with the column sums, weight scales and bias padded to whole panels.
//! `Quantize`, `DynamicQuantize` and `Dequantize` become elementwise or
//! row kernels. u8 buffers get four spare bytes, because the GEMM reads
//! each row in groups of four bytes.

use super::{SelectResult, Selector, SlotKind};
use crate::ir::{NodeId, ValueId};
use crate::lower::kernel::{GEMM_NR, Kernel, QGEMM_KGROUP};

/// Stores bytes in the f32 words of a [`crate::lower::Weight`], which code
/// generation writes out bit for bit in little-endian order.
fn words_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks(4).map(|c| {
        let mut word = [0u8; 4];
        word[..c.len()].copy_from_slice(c);
        f32::from_bits(u32::from_le_bytes(word))
    }).collect()
}

/// Packs i8 `W[n, k]` into panels of [`GEMM_NR`] columns: for each panel and
/// each group of four k, two 16-byte vectors of four columns times four
/// consecutive k. Columns past `n` and k past `k` are zero.
pub(crate) fn pack_int8_panels(weight: &[i8], n: usize, k: usize) -> Vec<u8> {
    let groups = k.div_ceil(QGEMM_KGROUP);
    let panels = n.div_ceil(GEMM_NR);
    let mut packed = vec![0u8; panels * groups * GEMM_NR * QGEMM_KGROUP];
    for p in 0..panels {
        for g in 0..groups {
            for c in 0..GEMM_NR {
                for u in 0..QGEMM_KGROUP {
                    let (col, kk) = (p * GEMM_NR + c, g * QGEMM_KGROUP + u);
                    if col < n && kk < k {
                        packed[((p * groups + g) * GEMM_NR + c) * QGEMM_KGROUP + u] = weight[col * k + kk] as u8;
                    }
                }
            }
        }
    }
    packed
}

impl Selector<'_> {
    /// A result slot for a u8 value, with four spare bytes.
    fn byte_slot(&mut self, v: ValueId) -> usize {
        let floats = (self.graph.fact(v).numel() + QGEMM_KGROUP).div_ceil(4);
        let slot = self.new_slot(SlotKind::Temp, floats);
        self.value_slot.insert(v, slot);
        slot
    }

    pub(super) fn quantize(&mut self, node: NodeId, scale: f32, zero_point: u8) -> SelectResult {
        let x = self.slot_of(self.operand(node, 0)?)?;
        let result = self.graph.node(node).outputs[0];
        let len = self.graph.fact(result).numel();
        let out = self.byte_slot(result);
        self.push(node, Kernel::Quantize { len, scale, zero_point }, vec![out, x]);
        Ok(())
    }

    pub(super) fn dynamic_quantize(&mut self, node: NodeId) -> SelectResult {
        let x_value = self.operand(node, 0)?;
        let x = self.slot_of(x_value)?;
        let [q_value, params_value] = self.graph.node(node).outputs[..] else { return Err("DynamicQuantize has two results".into()) };
        let numel = self.graph.fact(x_value).numel();
        let rows = self.graph.fact(params_value).shape[0];
        let out = self.byte_slot(q_value);
        let params = self.result_slot(params_value);
        self.push(node, Kernel::DynamicQuantize { rows, cols: numel / rows.max(1) }, vec![out, params, x]);
        Ok(())
    }

    pub(super) fn dequantize(&mut self, node: NodeId, scale: f32, zero_point: u8) -> SelectResult {
        let q = self.slot_of(self.operand(node, 0)?)?;
        let result = self.graph.node(node).outputs[0];
        let len = self.graph.fact(result).numel();
        let out = self.result_slot(result);
        self.push(node, Kernel::Dequantize { len, scale, zero_point }, vec![out, q]);
        Ok(())
    }

    pub(super) fn qlinear(&mut self, node: NodeId) -> SelectResult {
        let graph = self.graph;
        let x = self.operand(node, 0)?;
        let params_value = self.operand(node, 1)?;
        let weight = graph.konst(self.operand(node, 2)?).ok_or("the weight is not a constant")?;
        let crate::tensor::Tensor::I8(weight) = weight.as_ref() else { return Err("the weight is not i8".into()) };
        let (n, k) = (weight.shape()[0], weight.shape()[1]);
        let values: Vec<i8> = weight.iter().copied().collect();
        let m = graph.fact(x).numel() / k.max(1);
        let per_row_params = graph.fact(params_value).shape[0] != 1;
        let narrow_weights = values.iter().all(|&w| (-64..=63).contains(&w));
        let padded = n.div_ceil(GEMM_NR) * GEMM_NR;
        let name = graph.node(node).name.clone();

        // Compile-time tables: packed weights, column sums, scales.
        let packed = words_from_bytes(&pack_int8_panels(&values, n, k));
        let mut colsum: Vec<f32> = values.chunks(k.max(1)).map(|row| f32::from_bits(row.iter().map(|&w| i32::from(w)).sum::<i32>() as u32)).collect();
        colsum.resize(padded, 0.0);
        let scales = graph.konst(self.operand(node, 3)?).ok_or("the weight scale is not a constant")?;
        let mut scales: Vec<f32> = scales.as_f32().ok_or("the weight scale is not f32")?.iter().copied().collect();
        scales.resize(padded, 0.0);

        let a = self.slot_of(x)?;
        let params = self.slot_of(params_value)?;
        let b = self.add_weight(&format!("{name}/packed_int8"), packed);
        let colsum = self.add_weight(&format!("{name}/column_sums"), colsum);
        let scales = self.add_weight(&format!("{name}/weight_scale"), scales);
        let mut args = vec![0, a, params, b, colsum, scales];
        let bias = match graph.node(node).inputs.get(4).copied().flatten() {
            Some(bias) => {
                args.push(self.gemm_bias(bias, n)?);
                true
            }
            None => false,
        };
        let (activation, result) = self.fused_gelu(graph.node(node).outputs[0]);
        args[0] = self.result_slot(result);
        self.push(node, Kernel::QGemm { m, n, k, per_row_params, bias, narrow_weights, activation }, args);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_panels_interleave_four_k() {
        // W[9, 5]: two panels, two groups of k.
        let weight: Vec<i8> = (0..45).map(|i| i as i8).collect();
        let packed = pack_int8_panels(&weight, 9, 5);
        assert_eq!(packed.len(), 2 * 2 * 32);
        assert_eq!(&packed[..8], &[0, 1, 2, 3, 5, 6, 7, 8]);
        // Group 1 of column 0 holds k = 4 and zero padding.
        assert_eq!(&packed[32..36], &[4, 0, 0, 0]);
        // Panel 1 starts with column 8; columns 9.. are zero.
        assert_eq!(&packed[64..68], &[40, 41, 42, 43]);
        assert_eq!(&packed[68..72], &[0, 0, 0, 0]);
    }
}
