//! Rules for matrix products: `Linear`, `MatMul`, `Gemm` and `Attention`.

use ndarray::{Array2, Array3, ArrayD, ArrayView2, Axis, Ix2, IxDyn, s};

use super::rules::{Grads, f32_operand, unbroadcast, when};
use crate::error::{OpError, OpResult};
use crate::interp::elementwise::broadcast_shape;
use crate::ir::Op;
use crate::op_bail;
use crate::tensor::Tensor;

pub(super) fn supported(op: &Op) -> bool {
    matches!(op, Op::Linear | Op::MatMul | Op::Gemm { .. } | Op::Attention { .. })
}

pub(super) fn vjp(op: &Op, operands: &[Option<&Tensor>], grad: ArrayD<f32>, needed: &[bool]) -> OpResult<Grads> {
    match *op {
        Op::Linear => linear(operands, &grad, needed),
        Op::MatMul => matmul(f32_operand(operands, 0, "A")?, f32_operand(operands, 1, "B")?, &grad, needed),
        Op::Gemm { alpha, beta, trans_a, trans_b } => gemm(operands, &grad, needed, (alpha, beta), (trans_a, trans_b)),
        Op::Attention { heads, head_dim, scale } => {
            let [q, k, v] = [0, 1, 2].map(|i| f32_operand(operands, i, "Attention operand"));
            attention([q?, k?, v?], &grad, heads, head_dim, scale)
        }
        _ => op_bail!("no matrix-product gradient rule for {}", op.name()),
    }
}

/// Views `array` as `[rows, last dimension]`.
fn as_rows(array: &ArrayD<f32>) -> OpResult<Array2<f32>> {
    let cols = array.shape().last().copied().unwrap_or(1);
    let rows = array.len() / cols.max(1);
    array
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((rows, cols))
        .map_err(|e| OpError::new(format!("gradient rows: {e}")))
}

fn reshaped(array: Array2<f32>, shape: &[usize]) -> OpResult<ArrayD<f32>> {
    array.into_shape_with_order(IxDyn(shape)).map_err(|e| OpError::new(format!("gradient shape: {e}")))
}

/// `y = x W^T + b` with `W` of shape `[out, in]`.
fn linear(operands: &[Option<&Tensor>], grad: &ArrayD<f32>, needed: &[bool]) -> OpResult<Grads> {
    let x = f32_operand(operands, 0, "Linear input")?;
    let w = f32_operand(operands, 1, "Linear weight")?;
    let w2 = w.view().into_dimensionality::<Ix2>().map_err(|_| OpError::new("Linear weight must be 2-D"))?;
    let g = as_rows(grad)?;
    let dx = when(needed, 0, || reshaped(g.dot(&w2), x.shape()))?;
    let dw = when(needed, 1, || Ok(g.t().dot(&as_rows(x)?).into_dyn()))?;
    let db = when(needed, 2, || Ok(g.sum_axis(Axis(0)).into_dyn()))?;
    Ok(vec![dx, dw, db])
}

/// `A B` with NumPy's batch broadcasting and 1-D promotion.
fn matmul(a: &ArrayD<f32>, b: &ArrayD<f32>, grad: &ArrayD<f32>, needed: &[bool]) -> OpResult<Grads> {
    let a_shape: Vec<usize> = if a.ndim() == 1 { vec![1, a.len()] } else { a.shape().to_vec() };
    let b_shape: Vec<usize> = if b.ndim() == 1 { vec![b.len(), 1] } else { b.shape().to_vec() };
    let (ar, br) = (a_shape.len(), b_shape.len());
    let (m, k, n) = (a_shape[ar - 2], a_shape[ar - 1], b_shape[br - 1]);
    let batch = broadcast_shape(&a_shape[..ar - 2], &b_shape[..br - 2])?;
    let count: usize = batch.iter().product();

    // Both operands and the gradient as stacks of `count` matrices.
    let full = |shape: &[usize], array: &ArrayD<f32>, rows: usize, cols: usize| -> OpResult<Array3<f32>> {
        let promoted = array.view().into_shape_with_order(IxDyn(shape)).map_err(|e| OpError::new(e.to_string()))?;
        let target: Vec<usize> = batch.iter().copied().chain([rows, cols]).collect();
        let view = promoted.broadcast(IxDyn(&target)).ok_or_else(|| OpError::new("MatMul operand does not broadcast"))?;
        view.as_standard_layout().into_owned().into_shape_with_order((count, rows, cols)).map_err(|e| OpError::new(e.to_string()))
    };
    let a3 = full(&a_shape, a, m, k)?;
    let b3 = full(&b_shape, b, k, n)?;
    let g3 = grad
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((count, m, n))
        .map_err(|e| OpError::new(format!("MatMul gradient: {e}")))?;

    // dA = dY B^T and dB = A^T dY per matrix, summed back over broadcast batch axes.
    let side = |is_a: bool| -> OpResult<ArrayD<f32>> {
        let (rows, cols) = if is_a { (m, k) } else { (k, n) };
        let mut out = Array3::<f32>::zeros((count, rows, cols));
        for i in 0..count {
            let (ai, bi, gi) = (a3.slice(s![i, .., ..]), b3.slice(s![i, .., ..]), g3.slice(s![i, .., ..]));
            let product = if is_a { gi.dot(&bi.t()) } else { ai.t().dot(&gi) };
            out.slice_mut(s![i, .., ..]).assign(&product);
        }

        let target: Vec<usize> = batch.iter().copied().chain([rows, cols]).collect();
        let full = out.into_shape_with_order(IxDyn(&target)).map_err(|e| OpError::new(e.to_string()))?;
        let promoted = if is_a { &a_shape } else { &b_shape };
        let reduced = unbroadcast(full, promoted);
        let original = if is_a { a.shape() } else { b.shape() };
        reduced.into_shape_with_order(IxDyn(original)).map_err(|e| OpError::new(e.to_string()))
    };
    Ok(vec![when(needed, 0, || side(true))?, when(needed, 1, || side(false))?])
}

/// `alpha A' B' + beta C`, where `A'` and `B'` may be transposed.
fn gemm(operands: &[Option<&Tensor>], grad: &ArrayD<f32>, needed: &[bool], (alpha, beta): (f32, f32), (ta, tb): (bool, bool)) -> OpResult<Grads> {
    let two = |i: usize, label: &str| -> OpResult<ArrayView2<'_, f32>> {
        f32_operand(operands, i, label)?.view().into_dimensionality::<Ix2>().map_err(|_| OpError::new(format!("Gemm {label} must be 2-D")))
    };
    let (a, b) = (two(0, "A")?, two(1, "B")?);
    let g = grad.view().into_dimensionality::<Ix2>().map_err(|_| OpError::new("Gemm result must be 2-D"))?;
    let a_eff = if ta { a.t() } else { a };
    let b_eff = if tb { b.t() } else { b };
    let da = when(needed, 0, || {
        let d = g.dot(&b_eff.t()) * alpha;
        Ok(if ta { d.reversed_axes() } else { d }.into_dyn())
    })?;
    let db = when(needed, 1, || {
        let d = a_eff.t().dot(&g) * alpha;
        Ok(if tb { d.reversed_axes() } else { d }.into_dyn())
    })?;
    let dc = when(needed, 2, || Ok(unbroadcast(grad * beta, f32_operand(operands, 2, "C")?.shape())))?;
    Ok(vec![da, db, dc])
}

/// Per batch and head, with `P = softmax(scale Q K^T)` and `O = P V`:
/// `dV = P^T dO`, `dS = P * (dO V^T - rowsum(dO V^T * P))`,
/// `dQ = scale dS K`, `dK = scale dS^T Q`.
fn attention(operands: [&ArrayD<f32>; 3], grad: &ArrayD<f32>, heads: usize, head_dim: usize, scale: f32) -> OpResult<Grads> {
    fn three(a: &ArrayD<f32>) -> OpResult<ndarray::ArrayView3<'_, f32>> {
        a.view().into_dimensionality::<ndarray::Ix3>().map_err(|_| OpError::new("Attention operands must be 3-D"))
    }
    let [q, k, v] = [three(operands[0])?, three(operands[1])?, three(operands[2])?];
    let g = three(grad)?;
    let mut dq = Array3::<f32>::zeros(q.raw_dim());
    let mut dk = Array3::<f32>::zeros(k.raw_dim());
    let mut dv = Array3::<f32>::zeros(v.raw_dim());
    for b in 0..q.dim().0 {
        for h in 0..heads {
            let cols = h * head_dim..(h + 1) * head_dim;
            let (qh, kh, vh) = (q.slice(s![b, .., cols.clone()]), k.slice(s![b, .., cols.clone()]), v.slice(s![b, .., cols.clone()]));
            let gh = g.slice(s![b, .., cols.clone()]);
            let mut p = qh.dot(&kh.t()) * scale;
            for mut row in p.rows_mut() {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                row.mapv_inplace(|x| (x - max).exp());
                let sum = row.sum();
                row.mapv_inplace(|x| x / sum);
            }
            dv.slice_mut(s![b, .., cols.clone()]).assign(&p.t().dot(&gh));
            let mut ds = gh.dot(&vh.t());
            for (mut d_row, p_row) in ds.rows_mut().into_iter().zip(p.rows()) {
                let dot: f32 = d_row.iter().zip(p_row).map(|(d, p)| d * p).sum();
                d_row.zip_mut_with(&p_row, |d, &p| *d = p * (*d - dot));
            }
            dq.slice_mut(s![b, .., cols.clone()]).assign(&(ds.dot(&kh) * scale));
            dk.slice_mut(s![b, .., cols]).assign(&(ds.t().dot(&qh) * scale));
        }
    }
    Ok(vec![Some(dq.into_dyn()), Some(dk.into_dyn()), Some(dv.into_dyn())])
}
