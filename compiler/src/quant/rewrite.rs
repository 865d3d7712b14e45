//! The graph rewrite: INT8 Linear layers and quantize-dequantize pairs.
//!
//! Each INT8 Linear `y = Linear(x, W, b)` becomes
//! `y = QLinear(q, params, Wq, w_scale, b)`, where `q, params` come from a
//! `Quantize` of `x` (static: `params` is a constant) or a
//! `DynamicQuantize` of `x`. Linears that read the same value share one
//! quantization of it. The weights become symmetric i8 constants whose fact
//! records their scales. An INT8 LayerNorm, Add or GELU keeps its f32
//! kernel, and its result goes through `Quantize` and `Dequantize`, so
//! later layers see the rounding that an 8-bit tensor would have.

use std::collections::HashMap;
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};

use super::config::{ActivationMode, DynamicGranularity, QuantConfig, WeightGranularity};
use crate::error::{Error, Result};
use crate::ir::derive::derive_facts_with;
use crate::ir::{Fact, Graph, NodeId, Op, QuantParams, ValueId};
use crate::tensor::Tensor;

/// The quantized form of one activation: the u8 value and its parameters.
#[derive(Clone, Copy)]
struct Quantized {
    q: ValueId,
    params: ValueId,
}

/// Weight scales of one rewritten layer, for the report.
pub struct RewrittenLinear {
    pub name: String,
    /// The Linear's result before the rewrite, which the f32 graph still has.
    pub f32_output: ValueId,
    pub output: ValueId,
    pub input: ValueId,
    pub weight_scale_min: f32,
    pub weight_scale_max: f32,
}

/// Rewrites `linears` into QLinear nodes. `ranges` gives the static range of
/// each quantized input (unused for dynamic activations).
pub fn quantize_linears(graph: &mut Graph, linears: &[NodeId], config: &QuantConfig, ranges: &HashMap<ValueId, (f32, u8)>) -> Result<Vec<RewrittenLinear>> {
    let mut shared: HashMap<ValueId, Quantized> = HashMap::new();
    // A Linear that reads another Linear (the two factors of a low-rank
    // layer) reads the rewritten result; its range was calibrated on the
    // f32 output that result replaced.
    let mut replaced: HashMap<ValueId, ValueId> = HashMap::new();
    let mut rewritten = Vec::new();
    for &node in linears {
        let n = graph.node(node).clone();
        let [Some(x), Some(w), bias] = n.inputs[..] else {
            return Err(Error::node(&n.name, "Linear", "expected operands (x, weight, bias?)"));
        };
        let weight = graph.konst(w).and_then(|t| t.as_f32()).ok_or_else(|| {
            Error::node(&n.name, "Linear", "the weight is not an f32 constant, so it cannot be quantized; keep this layer in f32 with a layer override")
        })?;
        let [out, k] = weight.shape()[..] else { return Err(Error::node(&n.name, "Linear", "the weight is not 2-D")) };
        let values: Vec<f32> = weight.iter().copied().collect();
        let non_finite = values.iter().filter(|v| !v.is_finite()).count();
        if non_finite > 0 {
            let message = format!(
                "the weight contains {non_finite} NaN or infinite value(s), which INT8 cannot represent; \
                 repair the weights or keep this layer in f32 with a layer override"
            );
            return Err(Error::node(&n.name, "Linear", &message));
        }
        let (q_weight, scales) = quantize_weight(&values, out, k, config.weights, config.weight_max);

        let calibrated = replaced.get(&x).copied().unwrap_or(x);
        let quantized = match shared.get(&x) {
            Some(q) => *q,
            None => {
                let q = quantize_activation(graph, x, config, ranges.get(&calibrated).copied(), &n.name)?;
                shared.insert(x, q);
                q
            }
        };

        let w_name = graph.value(w).name.clone();
        let weight_tensor = Tensor::I8(ArrayD::from_shape_vec(IxDyn(&[out, k]), q_weight).expect("out * k values"));
        let wq = graph.add_constant(format!("{w_name}/int8"), Arc::new(weight_tensor));
        graph.value_mut(wq).fact.quant =
            Some(QuantParams::Symmetric { scales: scales.clone().into(), per_channel: config.weights == WeightGranularity::PerChannel });
        let scale_tensor = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[out]), scales.clone()).expect("one scale per row"));
        let w_scale = graph.add_constant(format!("{w_name}/scale"), Arc::new(scale_tensor));

        let operands = vec![Some(quantized.q), Some(quantized.params), Some(wq), Some(w_scale), bias];
        let result = add_derived(graph, Op::QLinear, &n.name, operands)?[0];
        let f32_output = n.outputs[0];
        graph.replace_all_uses(f32_output, result);
        replaced.insert(result, f32_output);
        graph.remove_node(node);
        rewritten.push(RewrittenLinear {
            name: n.name.clone(),
            f32_output,
            output: result,
            // The f32 value whose range was calibrated.
            input: calibrated,
            weight_scale_min: scales.iter().copied().fold(f32::INFINITY, f32::min),
            weight_scale_max: scales.iter().copied().fold(0.0, f32::max),
        });
    }
    graph.remove_dead_nodes();
    Ok(rewritten)
}

/// Inserts `Quantize` and `Dequantize` after `value` with the static range `(scale, zero_point)`.
pub fn insert_fake_quant(graph: &mut Graph, value: ValueId, scale: f32, zero_point: u8) -> Result<()> {
    let name = graph.producer(value).name.clone();
    let users = graph.users(value);
    let q = add_derived(graph, Op::Quantize { scale, zero_point }, &format!("{name}/quantize"), vec![Some(value)])?[0];
    let dq = add_derived(graph, Op::Dequantize { scale, zero_point }, &format!("{name}/dequantize"), vec![Some(q)])?[0];
    for (user, slot) in users {
        graph.set_input(user, slot, Some(dq));
    }
    if graph.is_graph_output(value) {
        let outputs: Vec<ValueId> = graph.outputs().iter().map(|&o| if o == value { dq } else { o }).collect();
        graph.set_outputs(outputs);
    }
    Ok(())
}

/// Symmetric i8 weights `[out, k]` and one scale per row (the same scale
/// in every row when per tensor), with `|q| <= weight_max`.
pub fn quantize_weight(values: &[f32], out: usize, k: usize, granularity: WeightGranularity, weight_max: u8) -> (Vec<i8>, Vec<f32>) {
    let limit = f32::from(weight_max);
    let row_max: Vec<f32> = values.chunks(k.max(1)).map(|row| row.iter().fold(0.0f32, |m, v| m.max(v.abs()))).collect();
    let scales: Vec<f32> = match granularity {
        WeightGranularity::PerChannel => row_max.iter().map(|&m| if m > 0.0 { m / limit } else { 1.0 }).collect(),
        WeightGranularity::PerTensor => {
            let m = row_max.iter().copied().fold(0.0, f32::max);
            vec![if m > 0.0 { m / limit } else { 1.0 }; out]
        }
    };
    let q = values
        .iter()
        .enumerate()
        .map(|(i, &v)| (v / scales[i / k.max(1)]).round_ties_even().clamp(-limit, limit) as i8)
        .collect();
    (q, scales)
}

fn quantize_activation(graph: &mut Graph, x: ValueId, config: &QuantConfig, range: Option<(f32, u8)>, layer: &str) -> Result<Quantized> {
    let name = graph.value(x).name.clone();
    match config.activations {
        ActivationMode::Static => {
            let (scale, zero_point) = range.ok_or_else(|| Error::Internal(format!("no calibrated range for the input of '{layer}'")))?;
            let q = add_derived(graph, Op::Quantize { scale, zero_point }, &format!("{name}/quantize"), vec![Some(x)])?[0];
            let params = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![scale, f32::from(zero_point)]).expect("two values"));
            let params = graph.add_constant(format!("{name}/quant_params"), Arc::new(params));
            Ok(Quantized { q, params })
        }
        ActivationMode::Dynamic => {
            let per_token = config.dynamic_granularity == DynamicGranularity::PerToken;
            let results = add_derived(graph, Op::DynamicQuantize { per_token }, &format!("{name}/quantize"), vec![Some(x)])?;
            Ok(Quantized { q: results[0], params: results[1] })
        }
    }
}

/// Adds a node whose result facts come from the shape rules.
pub(super) fn add_derived(graph: &mut Graph, op: Op, name: &str, inputs: Vec<Option<ValueId>>) -> Result<Vec<ValueId>> {
    let facts: Vec<Fact> = {
        let operand_facts: Vec<Option<&Fact>> = inputs.iter().map(|v| v.map(|v| graph.fact(v))).collect();
        derive_facts_with(&op, &operand_facts, false).map_err(|e| e.at(name, op.name()))?
    };
    let outputs: Vec<(String, Fact)> = facts.into_iter().enumerate().map(|(i, f)| (if i == 0 { name.to_string() } else { format!("{name}:{i}") }, f)).collect();
    let node = graph.add_node(op, name, inputs, outputs);
    Ok(graph.node(node).outputs.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_rows_scale_independently() {
        let values = [0.6, -1.0, 0.25, 100.0, 40.0, -25.0];
        let (q, scales) = quantize_weight(&values, 2, 3, WeightGranularity::PerChannel, 127);
        assert_eq!(q, vec![76, -127, 32, 127, 51, -32]);
        assert_eq!(scales, vec![1.0 / 127.0, 100.0 / 127.0]);
        let (q, _) = quantize_weight(&values, 2, 3, WeightGranularity::PerTensor, 63);
        assert_eq!(&q[..3], &[0, -1, 0]);
        assert_eq!(&q[3..], &[63, 25, -16]);
    }
}
