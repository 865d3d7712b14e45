//! Rules for normalizations, softmax, reductions, convolutions and resampling.

use ndarray::{ArrayD, Axis, IxDyn};

use super::rules::{Grads, f32_operand, unbroadcast, when};
use crate::error::{OpError, OpResult};
use crate::interp::conv::{conv, conv_transpose};
use crate::interp::resize::resize_vjp;
use crate::ir::op::{ConvAttrs, ConvTransposeAttrs, ReduceKind};
use crate::ir::Op;
use crate::op_bail;
use crate::tensor::Tensor;

pub(super) fn supported(op: &Op) -> bool {
    matches!(
        op,
        Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::LayerNorm { .. }
            | Op::BatchNorm { .. }
            | Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::Resize(_)
    ) || matches!(op, Op::Reduce { kind, .. } if *kind != ReduceKind::Prod)
}

pub(super) fn vjp(op: &Op, operands: &[Option<&Tensor>], output: &Tensor, grad: ArrayD<f32>, needed: &[bool]) -> OpResult<Grads> {
    let y = output.as_f32().ok_or_else(|| OpError::new("gradients need an f32 result"))?;
    match op {
        Op::Softmax { axis, flatten_tail } => Ok(vec![Some(softmax(y, grad, *axis, *flatten_tail, false)?)]),
        Op::LogSoftmax { axis, flatten_tail } => Ok(vec![Some(softmax(y, grad, *axis, *flatten_tail, true)?)]),
        Op::LayerNorm { axis, epsilon } => layer_norm(operands, grad, *axis, *epsilon, needed),
        Op::BatchNorm { epsilon } => batch_norm(operands, grad, *epsilon, needed),
        Op::Conv(attrs) => {
            no_parameter_gradient(needed, "Conv")?;
            let w = operands[1].ok_or_else(|| OpError::new("missing Conv weight"))?;
            let x_shape = f32_operand(operands, 0, "Conv input")?.shape();
            Ok(vec![Some(conv_input_grad(&grad, w, attrs, x_shape)?)])
        }
        Op::ConvTranspose(attrs) => {
            no_parameter_gradient(needed, "ConvTranspose")?;
            let w = operands[1].ok_or_else(|| OpError::new("missing ConvTranspose weight"))?;
            let adjoint = ConvAttrs {
                kernel: attrs.kernel.clone(),
                strides: attrs.strides.clone(),
                pads: attrs.pads.clone(),
                dilations: attrs.dilations.clone(),
                group: attrs.group,
            };
            let dx = conv(&Tensor::F32(grad), w, None, &adjoint)?;
            Ok(vec![Some(dx.into_f32().ok_or_else(|| OpError::new("ConvTranspose gradient is not f32"))?)])
        }
        Op::Resize(attrs) => {
            let x_shape = f32_operand(operands, 0, "Resize input")?.shape();
            let operand = |i: usize| operands.get(i).copied().flatten();
            Ok(vec![Some(resize_vjp(x_shape, operand(1), operand(2), operand(3), attrs, &grad)?)])
        }
        Op::Reduce { kind, axes, keepdims, noop_with_empty_axes } => {
            let x = f32_operand(operands, 0, "Reduce input")?;
            let axes = match axes.as_deref() {
                Some(axes) if !axes.is_empty() => axes.to_vec(),
                _ if *noop_with_empty_axes => return Ok(vec![Some(grad)]),
                _ => (0..x.ndim() as i64).collect(),
            };
            Ok(vec![Some(reduce(x, y, grad, *kind, &axes, *keepdims)?)])
        }
        _ => op_bail!("no gradient rule for {}", op.name()),
    }
}

/// Spreads the reduced gradient over the reduced axes, times each
/// element's local derivative.
fn reduce(x: &ArrayD<f32>, y: &ArrayD<f32>, grad: ArrayD<f32>, kind: ReduceKind, axes: &[i64], keepdims: bool) -> OpResult<ArrayD<f32>> {
    let rank = x.ndim() as i64;
    let mut axes: Vec<usize> = axes.iter().map(|&a| if a < 0 { a + rank } else { a } as usize).collect();
    axes.sort_unstable();
    axes.dedup();
    if axes.iter().any(|&a| a >= x.ndim()) {
        op_bail!("Reduce axes {axes:?} are out of range for rank {rank}");
    }
    let kept: Vec<usize> = (0..x.ndim()).map(|d| if axes.contains(&d) { 1 } else { x.shape()[d] }).collect();
    let reshape = |a: ArrayD<f32>| a.into_shape_with_order(IxDyn(&kept)).map_err(|e| OpError::new(e.to_string()));
    let (grad, y) = if keepdims { (grad, y.clone()) } else { (reshape(grad.as_standard_layout().into_owned())?, reshape(y.as_standard_layout().into_owned())?) };
    let count: usize = axes.iter().map(|&a| x.shape()[a]).product();
    let g = grad.broadcast(x.raw_dim()).ok_or_else(|| OpError::new("Reduce gradient does not broadcast"))?;
    let y = y.broadcast(x.raw_dim()).ok_or_else(|| OpError::new("Reduce result does not broadcast"))?;
    let local = |x: f32, y: f32| -> f32 {
        match kind {
            ReduceKind::Sum => 1.0,
            ReduceKind::Mean => 1.0 / count.max(1) as f32,
            ReduceKind::SumSquare => 2.0 * x,
            ReduceKind::L1 => x.signum() * f32::from(x != 0.0),
            ReduceKind::L2 => if y > 0.0 { x / y } else { 0.0 },
            ReduceKind::Max | ReduceKind::Min => f32::from(x == y),
            ReduceKind::LogSumExp => (x - y).exp(),
            // `supported` excludes Prod, so no gradient is computed for it.
            ReduceKind::Prod => f32::NAN,
        }
    };
    let mut dx = ArrayD::<f32>::zeros(x.raw_dim());
    ndarray::Zip::from(&mut dx).and(x).and(&g).and(&y).for_each(|d, &x, &g, &y| *d = g * local(x, y));
    Ok(dx)
}

fn no_parameter_gradient(needed: &[bool], op: &str) -> OpResult<()> {
    if needed.iter().skip(1).any(|&n| n) {
        op_bail!("gradients with respect to a {op} weight or bias are not implemented; only its input is differentiated");
    }
    Ok(())
}

/// Computes the input gradient of Softmax or LogSoftmax from its result
/// `y`. The rows are the values along `axis` (with `flatten_tail`, along
/// all axes from `axis` on), moved last so that each row is contiguous.
fn softmax(y: &ArrayD<f32>, grad: ArrayD<f32>, axis: i64, flatten_tail: bool, log: bool) -> OpResult<ArrayD<f32>> {
    let rank = y.ndim() as i64;
    let axis = if axis < 0 { axis + rank } else { axis };
    if axis < 0 || axis > rank || (!flatten_tail && axis == rank) {
        op_bail!("Softmax axis {axis} is out of range for rank {rank}");
    }
    let axis = axis as usize;

    // dx = y (g - sum(g y)) for Softmax, g - exp(y) sum(g) for LogSoftmax.
    let row = |g: &mut [f32], y: &[f32]| {
        if log {
            let total: f32 = g.iter().sum();
            g.iter_mut().zip(y).for_each(|(g, &y)| *g -= y.exp() * total);
        } else {
            let dot: f32 = g.iter().zip(y).map(|(g, y)| g * y).sum();
            g.iter_mut().zip(y).for_each(|(g, &y)| *g = y * (*g - dot));
        }
    };

    let mut order: Vec<usize> = (0..y.ndim()).filter(|&d| d != axis).collect();
    let row_len = if flatten_tail {
        order = (0..y.ndim()).collect();
        y.shape()[axis..].iter().product()
    } else {
        order.push(axis);
        y.shape()[axis]
    };
    let y_rows = y.view().permuted_axes(order.clone()).as_standard_layout().into_owned();
    let mut g_rows = grad.permuted_axes(order.clone()).as_standard_layout().into_owned();
    if row_len > 0 {
        let ys = y_rows.as_slice().expect("standard layout");
        let gs = g_rows.as_slice_mut().expect("standard layout");
        for (g, y) in gs.chunks_mut(row_len).zip(ys.chunks(row_len)) {
            row(g, y);
        }
    }

    let mut back = vec![0; order.len()];
    for (position, &dim) in order.iter().enumerate() {
        back[dim] = position;
    }
    Ok(g_rows.permuted_axes(back).as_standard_layout().into_owned())
}

/// `y = xhat * scale + bias` with `xhat = (x - mean) / sqrt(var + eps)` over
/// the axes from `axis` on: `dx = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / sqrt(var + eps)`.
fn layer_norm(operands: &[Option<&Tensor>], grad: ArrayD<f32>, axis: i64, epsilon: f32, needed: &[bool]) -> OpResult<Grads> {
    let x = f32_operand(operands, 0, "LayerNorm input")?;
    let scale = f32_operand(operands, 1, "LayerNorm scale")?;
    let shape = x.shape().to_vec();
    let axis = if axis < 0 { axis + shape.len() as i64 } else { axis } as usize;
    if axis >= shape.len() {
        op_bail!("LayerNorm axis is out of range for shape {shape:?}");
    }

    let row_len: usize = shape[axis..].iter().product();
    let x = x.as_standard_layout();
    let mut xhat = Vec::with_capacity(x.len());
    let mut inv_std = Vec::with_capacity(x.len() / row_len.max(1));
    for row in x.as_slice().expect("standard layout").chunks(row_len.max(1)) {
        let n = row.len() as f64;
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
        let inv = 1.0 / (var + f64::from(epsilon)).sqrt();
        inv_std.push(inv);
        xhat.extend(row.iter().map(|&v| ((f64::from(v) - mean) * inv) as f32));
    }

    let xhat = ArrayD::from_shape_vec(IxDyn(&shape), xhat).map_err(|e| OpError::new(e.to_string()))?;
    let dx = when(needed, 0, || {
        let scale = scale.broadcast(IxDyn(&shape)).ok_or_else(|| OpError::new("LayerNorm scale does not broadcast"))?;
        let mut dxhat = (&grad * &scale).as_standard_layout().into_owned();
        let data = dxhat.as_slice_mut().expect("standard layout");
        let xh = xhat.as_slice().expect("standard layout");
        for ((d, xh), inv) in data.chunks_mut(row_len).zip(xh.chunks(row_len)).zip(&inv_std) {
            let n = d.len() as f64;
            let mean_d = d.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let mean_dx = d.iter().zip(xh).map(|(&d, &x)| f64::from(d) * f64::from(x)).sum::<f64>() / n;
            d.iter_mut().zip(xh).for_each(|(d, &x)| *d = ((f64::from(*d) - mean_d - f64::from(x) * mean_dx) * inv) as f32);
        }
        Ok(dxhat)
    })?;

    let dscale = when(needed, 1, || Ok(unbroadcast(&grad * &xhat, scale.shape())))?;
    let dbias = when(needed, 2, || Ok(unbroadcast(grad.clone(), f32_operand(operands, 2, "LayerNorm bias")?.shape())))?;
    Ok(vec![dx, dscale, dbias])
}

/// Inference-mode BatchNorm is affine per channel (axis 1).
fn batch_norm(operands: &[Option<&Tensor>], mut grad: ArrayD<f32>, epsilon: f32, needed: &[bool]) -> OpResult<Grads> {
    no_parameter_gradient(needed, "BatchNorm")?;
    let param = |i: usize| operands.get(i).copied().flatten().map(Tensor::to_f64_vec).ok_or_else(|| OpError::new("missing BatchNorm parameter"));
    let (scale, var) = (param(1)?, param(4)?);
    let factor: Vec<f32> = scale.iter().zip(&var).map(|(s, v)| (s / (v + f64::from(epsilon)).sqrt()) as f32).collect();
    if grad.ndim() < 2 {
        grad.mapv_inplace(|g| g * factor[0]);
    } else {
        for (c, mut plane) in grad.axis_iter_mut(Axis(1)).enumerate() {
            let f = *factor.get(c).ok_or_else(|| OpError::new("BatchNorm has fewer parameters than channels"))?;
            plane.mapv_inplace(|g| g * f);
        }
    }
    Ok(vec![Some(grad)])
}

/// Computes a Conv's input gradient as the transposed convolution with the
/// same weight. Its `output_padding` restores the input size that the
/// convolution's floor division dropped.
fn conv_input_grad(grad: &ArrayD<f32>, w: &Tensor, attrs: &ConvAttrs, x_shape: &[usize]) -> OpResult<ArrayD<f32>> {
    let spatial = attrs.kernel.len();
    let mut output_padding = Vec::with_capacity(spatial);
    for d in 0..spatial {
        let (s, k, dil) = (attrs.strides[d] as i64, attrs.kernel[d] as i64, attrs.dilations[d] as i64);
        let pads = (attrs.pads[d] + attrs.pads[d + spatial]) as i64;
        let out = grad.shape()[2 + d] as i64;
        let padding = x_shape[2 + d] as i64 - (s * (out - 1) + dil * (k - 1) + 1 - pads);
        if padding < 0 {
            op_bail!("cannot size the Conv input gradient: axis {d} gives output padding {padding}");
        }
        output_padding.push(padding as usize);
    }
    let adjoint = ConvTransposeAttrs {
        kernel: attrs.kernel.clone(),
        strides: attrs.strides.clone(),
        pads: attrs.pads.clone(),
        dilations: attrs.dilations.clone(),
        output_padding,
        group: attrs.group,
    };
    let dx = conv_transpose(&Tensor::F32(grad.clone()), w, None, &adjoint)?;
    let dx = dx.into_f32().ok_or_else(|| OpError::new("Conv gradient is not f32"))?;
    if dx.shape() != x_shape {
        op_bail!("Conv input gradient has shape {:?}, expected {x_shape:?}", dx.shape());
    }
    Ok(dx)
}
