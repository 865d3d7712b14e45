//! Splitting a transposed convolution so that its product can run in INT8.
//!
//! `ConvTranspose(x, W, b)` with `x` `[N, C, spatial..]` and a constant `W`
//! `[C, M, kernel..]` is a matrix product per input pixel followed by a
//! scatter. The split writes it as
//!
//! ```text
//! pixels = Transpose(x)                  [N, spatial.., C]
//! cols   = Linear(pixels, W')            [N, spatial.., M * prod(kernel)]
//! y      = Col2im(cols, b)               [N, M, out spatial..]
//! ```
//!
//! with `W'` the weight viewed as `[C, M * prod(kernel)]` and transposed. The
//! Linear then goes through the same INT8 rewrite as every other Linear.

use std::sync::Arc;

use ndarray::{Array2, ArrayD, IxDyn};

use super::rewrite::add_derived;
use crate::error::{Error, Result};
use crate::ir::op::ConvTransposeAttrs;
use crate::ir::{Graph, NodeId, Op};
use crate::tensor::Tensor;

/// Returns whether [`split`] accepts `node`: an ungrouped 1-D or 2-D
/// ConvTranspose with a constant f32 weight.
pub fn can_split(graph: &Graph, node: NodeId) -> bool {
    let n = graph.node(node);
    let Op::ConvTranspose(attrs) = &n.op else { return false };
    let weight = n.inputs.get(1).copied().flatten().and_then(|w| graph.konst(w));
    attrs.group == 1 && weight.is_some_and(|t| t.as_f32().is_some() && matches!(t.shape().len(), 3 | 4))
}

/// Returns the name of the Linear that [`split`] makes of the ConvTranspose `name`.
pub fn linear_name(name: &str) -> String {
    format!("{name}/gemm")
}

/// Replaces the ConvTranspose `node` by Transpose, Linear and Col2im, and
/// returns the new Linear. The caller checks [`can_split`] first.
pub fn split(graph: &mut Graph, node: NodeId) -> Result<NodeId> {
    let n = graph.node(node).clone();
    let fail = |message: &str| Error::node(&n.name, "ConvTranspose", message);
    let Op::ConvTranspose(attrs) = &n.op else { return Err(fail("internal: not a ConvTranspose")) };
    let (Some(x), Some(w), bias) = (n.inputs[0], n.inputs[1], n.inputs.get(2).copied().flatten()) else {
        return Err(fail("expected operands (x, weight, bias?)"));
    };

    // The weight [C, M, kernel..] viewed as [C, M * prod(kernel)], transposed.
    let weight = graph.konst(w).and_then(|t| t.as_f32()).ok_or_else(|| fail("the weight is not an f32 constant"))?;
    let channels = weight.shape()[0];
    let columns = weight.len() / channels.max(1);
    let rows = weight.as_standard_layout().into_owned().into_shape_with_order((channels, columns)).map_err(|e| fail(&e.to_string()))?;
    let transposed: Array2<f32> = rows.t().as_standard_layout().into_owned();
    let data = transposed.into_raw_vec_and_offset().0;
    let linear_weight = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[columns, channels]), data).expect("columns * channels values"));
    let w_name = graph.value(w).name.clone();
    let linear_weight = graph.add_constant(format!("{w_name}/pixel_major"), Arc::new(linear_weight));

    let rank = graph.fact(x).rank();
    let perm: Vec<usize> = std::iter::once(0).chain(2..rank).chain(std::iter::once(1)).collect();
    let pixels = add_derived(graph, Op::Transpose { perm }, &format!("{}/pixels", n.name), vec![Some(x)])?[0];
    let cols = add_derived(graph, Op::Linear, &linear_name(&n.name), vec![Some(pixels), Some(linear_weight), None])?[0];
    let col2im = Op::Col2im(ConvTransposeAttrs { group: 1, ..attrs.clone() });
    let y = add_derived(graph, col2im, &format!("{}/col2im", n.name), vec![Some(cols), bias])?[0];
    if graph.fact(y).shape != graph.fact(n.outputs[0]).shape {
        return Err(fail("internal: the split has a different result shape"));
    }
    graph.replace_all_uses(n.outputs[0], y);
    graph.remove_node(node);
    Ok(graph.value(cols).producer)
}
