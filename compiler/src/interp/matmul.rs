//! Matrix products: `MatMul`, `Gemm`, `Linear` and `Attention`.
//!
//! Float products go through `ndarray::linalg::general_mat_mul`, which calls
//! the threaded `matrixmultiply` kernels for `f32` and `f64` on 2-D views of
//! any strides, so batch slices and transposes need no copies. Integer
//! products use a plain triple loop with wrapping arithmetic. `f16` operands
//! are widened to `f32`, multiplied, and rounded back.

use half::f16;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, Array3, ArrayD, ArrayView2, ArrayView3, ArrayViewD, ArrayViewMut2, Axis, Ix2, Ix3, s};

use super::common::{Real, TensorElement, array_from_vec, expect_dtype, float_kernel};
use super::elementwise::{Arith, broadcast_shape, broadcast_view};
use super::norm::softmax_in_place;
use crate::error::{OpError, OpResult};
use crate::op_bail;
use crate::tensor::{Element, Tensor};

/// An element type with a matrix product `c = alpha * a * b + beta * c`.
pub(crate) trait GemmScalar: TensorElement + Copy {
    fn gemm(
        alpha: Self,
        a: &ArrayView2<'_, Self>,
        b: &ArrayView2<'_, Self>,
        beta: Self,
        c: &mut ArrayViewMut2<'_, Self>,
    );
}

macro_rules! impl_gemm_float {
    ($t:ty) => {
        impl GemmScalar for $t {
            fn gemm(
                alpha: Self,
                a: &ArrayView2<'_, Self>,
                b: &ArrayView2<'_, Self>,
                beta: Self,
                c: &mut ArrayViewMut2<'_, Self>,
            ) {
                general_mat_mul(alpha, a, b, beta, c);
            }
        }
    };
}
impl_gemm_float!(f32);
impl_gemm_float!(f64);

macro_rules! impl_gemm_int {
    ($t:ty) => {
        impl GemmScalar for $t {
            fn gemm(
                alpha: Self,
                a: &ArrayView2<'_, Self>,
                b: &ArrayView2<'_, Self>,
                beta: Self,
                c: &mut ArrayViewMut2<'_, Self>,
            ) {
                let (m, k) = a.dim();
                let n = b.dim().1;
                for i in 0..m {
                    for j in 0..n {
                        let mut acc: $t = 0;
                        for p in 0..k {
                            acc = acc.add(a[[i, p]].mul(b[[p, j]]));
                        }
                        c[[i, j]] = alpha.mul(acc).add(beta.mul(c[[i, j]]));
                    }
                }
            }
        }
    };
}
impl_gemm_int!(i64);
impl_gemm_int!(i32);
impl_gemm_int!(i8);
impl_gemm_int!(u8);

/// Evaluates `$body` for two operands of the same numeric type with
/// `$x`, `$y` bound to `ArrayViewD<T>` (`f16` widened to `f32`);
/// `$body` evaluates to `OpResult<ArrayD<T>>`.
macro_rules! gemm_pair {
    ($a:expr, $b:expr, $label:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (Tensor::F32(p), Tensor::F32(q)) => {
                let ($x, $y) = (p.view(), q.view());
                Ok(Tensor::F32($body?))
            }
            (Tensor::F64(p), Tensor::F64(q)) => {
                let ($x, $y) = (p.view(), q.view());
                Ok(Tensor::F64($body?))
            }
            (Tensor::I64(p), Tensor::I64(q)) => {
                let ($x, $y) = (p.view(), q.view());
                Ok(Tensor::I64($body?))
            }
            (Tensor::I32(p), Tensor::I32(q)) => {
                let ($x, $y) = (p.view(), q.view());
                Ok(Tensor::I32($body?))
            }
            (Tensor::I8(p), Tensor::I8(q)) => {
                let ($x, $y) = (p.view(), q.view());
                Ok(Tensor::I8($body?))
            }
            (Tensor::U8(p), Tensor::U8(q)) => {
                let ($x, $y) = (p.view(), q.view());
                Ok(Tensor::U8($body?))
            }
            (Tensor::F16(p), Tensor::F16(q)) => {
                let (wide_p, wide_q) = (p.mapv(f16::to_f32), q.mapv(f16::to_f32));
                let ($x, $y) = (wide_p.view(), wide_q.view());
                Ok(Tensor::F16($body?.mapv(f16::from_f32)))
            }
            (p, q) if p.dtype() != q.dtype() => {
                op_bail!("{}: operands must have the same element type, got {} and {}", $label, p.dtype(), q.dtype())
            }
            (p, _) => op_bail!("{}: operands must be numeric, got {}", $label, p.dtype()),
        }
    };
}

// MatMul.

/// `MatMul` with NumPy semantics: 1-D operands are promoted to a row
/// (first operand) or a column (second operand) and the promoted axis is
/// removed from the result, and batch dimensions broadcast.
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    gemm_pair!(a, b, "MatMul", |x, y| matmul_typed(x, y))
}

fn matmul_typed<T: GemmScalar>(a: ArrayViewD<'_, T>, b: ArrayViewD<'_, T>) -> OpResult<ArrayD<T>> {
    if a.ndim() == 0 || b.ndim() == 0 {
        op_bail!("MatMul operands must have rank 1 or more, got shapes {:?} and {:?}", a.shape(), b.shape());
    }

    // Promote vectors to matrices.
    let a_is_vector = a.ndim() == 1;
    let b_is_vector = b.ndim() == 1;
    let a = if a_is_vector { a.insert_axis(Axis(0)) } else { a };
    let b = if b_is_vector { b.insert_axis(Axis(1)) } else { b };
    let (a_rank, b_rank) = (a.ndim(), b.ndim());
    let (m, k) = (a.shape()[a_rank - 2], a.shape()[a_rank - 1]);
    let (k_b, n) = (b.shape()[b_rank - 2], b.shape()[b_rank - 1]);
    if k != k_b {
        op_bail!(
            "MatMul inner dimensions differ: the first operand has {k} columns but the second has {k_b} rows (shapes {:?} and {:?})",
            a.shape(),
            b.shape()
        );
    }

    // Multiply, one matrix per broadcast batch index.
    let batch = broadcast_shape(&a.shape()[..a_rank - 2], &b.shape()[..b_rank - 2])?;
    let batch_len: usize = batch.iter().product();
    let product = if b_rank == 2 && a.is_standard_layout() {
        // The common `x @ W` case: one product over all batch rows of `a`.
        let rows = a.into_shape_with_order((batch_len * m, k)).map_err(|e| OpError::new(format!("MatMul: {e}")))?;
        multiply(&rows, &b.into_dimensionality::<Ix2>().map_err(|e| OpError::new(format!("MatMul: {e}")))?)
            .into_shape_with_order((batch_len, m, n))
            .map_err(|e| OpError::new(format!("MatMul: {e}")))?
    } else {
        batched_product(&a, &b, &batch, (m, k, n))?
    };

    // Drop the promoted axes.
    let mut shape = batch;
    if !a_is_vector {
        shape.push(m);
    }
    if !b_is_vector {
        shape.push(n);
    }
    array_from_vec(&shape, product.into_raw_vec_and_offset().0)
}

fn batched_product<T: GemmScalar>(
    a: &ArrayViewD<'_, T>,
    b: &ArrayViewD<'_, T>,
    batch: &[usize],
    (m, k, n): (usize, usize, usize),
) -> OpResult<Array3<T>> {
    let batch_len: usize = batch.iter().product();
    let a_full = broadcast_view(a, &[batch, &[m, k]].concat(), "MatMul first operand")?;
    let b_full = broadcast_view(b, &[batch, &[k, n]].concat(), "MatMul second operand")?;
    let mut product = Array3::from_elem((batch_len, m, n), T::default());
    let mut index = vec![0usize; batch.len()];
    for (flat, mut out) in product.outer_iter_mut().enumerate() {
        unravel(flat, batch, &mut index);
        let am = matrix_at(&a_full, &index)?;
        let bm = matrix_at(&b_full, &index)?;
        T::gemm(T::from_i64(1), &am, &bm, T::default(), &mut out);
    }
    Ok(product)
}

/// Multiplies `a * b` into a new row-major matrix.
fn multiply<T: GemmScalar>(a: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>) -> Array2<T> {
    let mut c = Array2::from_elem((a.nrows(), b.ncols()), T::default());
    T::gemm(T::from_i64(1), a, b, T::default(), &mut c.view_mut());
    c
}

/// Writes the row-major multi-index of `flat` within `shape` into `index`.
fn unravel(mut flat: usize, shape: &[usize], index: &mut [usize]) {
    for (i, &d) in shape.iter().enumerate().rev() {
        index[i] = flat % d;
        flat /= d;
    }
}

/// Returns the trailing 2-D matrix of `full` at batch `index`.
fn matrix_at<'a, T>(full: &ArrayViewD<'a, T>, index: &[usize]) -> OpResult<ArrayView2<'a, T>> {
    let mut view = full.clone();
    for &i in index {
        view = view.index_axis_move(Axis(0), i);
    }
    view.into_dimensionality::<Ix2>().map_err(|e| OpError::new(format!("internal error in MatMul: {e}")))
}

// Gemm.

/// `Gemm(a, b, c?)`: `alpha * op(a) * op(b) + beta * c`, where `op`
/// transposes when the flag is set and `c` broadcasts to `[M, N]`.
pub(crate) fn gemm(
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
) -> OpResult<Tensor> {
    if let Some(c) = c {
        expect_dtype(c, a.dtype(), "Gemm operand C")?;
    }
    let c_wide = match c {
        Some(Tensor::F16(h)) => Some(Tensor::F32(h.mapv(f16::to_f32))),
        Some(other) => Some(other.clone()),
        None => None,
    };
    gemm_pair!(a, b, "Gemm", |x, y| gemm_typed(x, y, c_wide.as_ref(), alpha, beta, trans_a, trans_b))
}

fn gemm_typed<T: GemmScalar>(
    a: ArrayViewD<'_, T>,
    b: ArrayViewD<'_, T>,
    c: Option<&Tensor>,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
) -> OpResult<ArrayD<T>> {
    let a = as_matrix(a, "Gemm operand A")?;
    let b = as_matrix(b, "Gemm operand B")?;
    let a = if trans_a { a.reversed_axes() } else { a };
    let b = if trans_b { b.reversed_axes() } else { b };
    let (m, k) = a.dim();
    let (k_b, n) = b.dim();
    if k != k_b {
        op_bail!("Gemm inner dimensions differ: op(A) is [{m}, {k}] and op(B) is [{k_b}, {n}]");
    }
    let mut y = match c {
        Some(c) => {
            let c = T::array_of(c).ok_or_else(|| OpError::new("Gemm operand C must have the type of A"))?.view();
            let full = broadcast_view(&c, &[m, n], "Gemm operand C")?;
            full.into_dimensionality::<Ix2>().map_err(|e| OpError::new(format!("Gemm operand C: {e}")))?.to_owned()
        }
        None => Array2::from_elem((m, n), T::default()),
    };
    let beta = if c.is_some() { T::from_f64(beta as f64) } else { T::default() };
    T::gemm(T::from_f64(alpha as f64), &a, &b, beta, &mut y.view_mut());
    Ok(y.into_dyn())
}

fn as_matrix<'a, T>(a: ArrayViewD<'a, T>, label: &str) -> OpResult<ArrayView2<'a, T>> {
    let shape = a.shape().to_vec();
    a.into_dimensionality::<Ix2>().map_err(|_| OpError::new(format!("{label} must be 2-D, got shape {shape:?}")))
}

// Linear.

/// `Linear(x, weight, bias?)`: `x [.., in] * weight[out, in]^T + bias[out]`,
/// computed as one product over all leading dimensions of `x`.
pub(crate) fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> OpResult<Tensor> {
    expect_dtype(weight, x.dtype(), "Linear weight")?;
    if let Some(bias) = bias {
        expect_dtype(bias, x.dtype(), "Linear bias")?;
    }
    float_kernel!(x, "Linear input", |xv: T| {
        let w = T::view_of(weight, "Linear weight")?;
        let b = bias.map(|b| T::view_of(b, "Linear bias")).transpose()?;
        linear_typed::<T>(xv.view(), w.view(), b.as_ref().map(|b| b.view()))?
    })
}

fn linear_typed<T: Real + GemmScalar>(
    x: ArrayViewD<'_, T>,
    w: ArrayViewD<'_, T>,
    bias: Option<ArrayViewD<'_, T>>,
) -> OpResult<ArrayD<T>> {
    let w = as_matrix(w, "Linear weight")?;
    let (out_features, in_features) = w.dim();
    if x.ndim() == 0 || x.shape()[x.ndim() - 1] != in_features {
        op_bail!(
            "Linear input of shape {:?} must end in the weight's input size {in_features} (weight shape [{out_features}, {in_features}])",
            x.shape()
        );
    }
    if let Some(b) = &bias
        && b.len() != out_features
    {
        op_bail!("Linear bias must have {out_features} elements (the weight's output size), got shape {:?}", b.shape());
    }

    let rows = x.len() / in_features.max(1);
    let x_standard = x.as_standard_layout();
    let x2 = x_standard
        .view()
        .into_shape_with_order((rows, in_features))
        .map_err(|e| OpError::new(format!("Linear: {e}")))?;
    let mut y = Array2::from_elem((rows, out_features), T::zero());
    if let Some(b) = &bias {
        let b_row =
            b.view().into_shape_with_order(out_features).map_err(|e| OpError::new(format!("Linear bias: {e}")))?;
        y.rows_mut().into_iter().for_each(|mut row| row.assign(&b_row));
    }
    let beta = if bias.is_some() { T::one() } else { T::zero() };
    T::gemm(T::one(), &x2, &w.t(), beta, &mut y.view_mut());

    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank checked above") = out_features;
    array_from_vec(&shape, y.into_raw_vec_and_offset().0)
}

// Attention.

/// Multi-head scaled dot-product attention on `[batch, tokens, heads * head_dim]`
/// operands: per batch and head, `softmax(scale * q_h k_h^T) v_h`.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    head_dim: usize,
    scale: f32,
) -> OpResult<Tensor> {
    expect_dtype(k, q.dtype(), "Attention key")?;
    expect_dtype(v, q.dtype(), "Attention value")?;
    float_kernel!(q, "Attention query", |qv: T| {
        let kv = T::view_of(k, "Attention key")?;
        let vv = T::view_of(v, "Attention value")?;
        attention_typed::<T>(qv.view(), kv.view(), vv.view(), heads, head_dim, T::from_f64(scale as f64))?
    })
}

fn attention_typed<T: Real + GemmScalar>(
    q: ArrayViewD<'_, T>,
    k: ArrayViewD<'_, T>,
    v: ArrayViewD<'_, T>,
    heads: usize,
    head_dim: usize,
    scale: T,
) -> OpResult<ArrayD<T>> {
    let width = heads * head_dim;
    let q = attention_operand(q, width, "query")?;
    let k = attention_operand(k, width, "key")?;
    let v = attention_operand(v, width, "value")?;
    let (batch, q_tokens, _) = q.dim();
    let kv_tokens = k.dim().1;
    if k.dim().0 != batch || v.dim() != k.dim() {
        op_bail!(
            "Attention operands disagree: query {:?}, key {:?}, value {:?}; key and value must have the same shape and all the same batch size",
            q.shape(),
            k.shape(),
            v.shape()
        );
    }

    let mut out = Array3::from_elem((batch, q_tokens, width), T::zero());
    let mut scores = Array2::from_elem((q_tokens, kv_tokens), T::zero());
    for bi in 0..batch {
        for h in 0..heads {
            let columns = h * head_dim..(h + 1) * head_dim;
            let qh = q.slice(s![bi, .., columns.clone()]);
            let kh = k.slice(s![bi, .., columns.clone()]);
            let vh = v.slice(s![bi, .., columns.clone()]);
            T::gemm(scale, &qh, &kh.t(), T::zero(), &mut scores.view_mut());
            for row in scores.rows_mut() {
                softmax_in_place(row);
            }
            let mut target = out.slice_mut(s![bi, .., columns]);
            T::gemm(T::one(), &scores.view(), &vh, T::zero(), &mut target);
        }
    }
    Ok(out.into_dyn())
}

fn attention_operand<'a, T>(x: ArrayViewD<'a, T>, width: usize, label: &str) -> OpResult<ArrayView3<'a, T>> {
    let shape = x.shape().to_vec();
    let x = x.into_dimensionality::<Ix3>().map_err(|_| {
        OpError::new(format!("Attention {label} must be 3-D [batch, tokens, heads * head_dim], got shape {shape:?}"))
    })?;
    if x.dim().2 != width {
        op_bail!("Attention {label} of shape {shape:?} must have a last dimension of heads * head_dim = {width}");
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;
    use ndarray::IxDyn;

    fn f32s(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), data.to_vec()).unwrap())
    }

    fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        f32s(shape, &(0..n).map(|i| i as f32).collect::<Vec<_>>())
    }

    /// Multiplies `[batch, m, k] x [batch, k, n]` operands with a direct triple loop.
    fn naive_batched(a: &[f32], b: &[f32], batch: usize, m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; batch * m * n];
        for t in 0..batch {
            for i in 0..m {
                for j in 0..n {
                    out[t * m * n + i * n + j] =
                        (0..k).map(|p| a[t * m * k + i * k + p] * b[t * k * n + p * n + j]).sum();
                }
            }
        }
        out
    }

    #[test]
    fn matmul_2d() {
        let a = f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = f32s(&[3, 2], &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
        let c = matmul(&a, &b).unwrap();
        assert_eq!(c.shape(), &[2, 2]);
        assert_eq!(c.to_f64_vec(), vec![58.0, 64.0, 139.0, 154.0]);
    }

    #[test]
    fn matmul_vector_promotion() {
        let a = f32s(&[3], &[1.0, 2.0, 3.0]);
        let m = iota(&[3, 2]);
        let left = matmul(&a, &m).unwrap();
        assert_eq!(left.shape(), &[2]);
        assert_eq!(left.to_f64_vec(), vec![16.0, 22.0]);
        let right = matmul(&iota(&[2, 3]), &a).unwrap();
        assert_eq!(right.shape(), &[2]);
        assert_eq!(right.to_f64_vec(), vec![8.0, 26.0]);
        let dot = matmul(&a, &a).unwrap();
        assert_eq!(dot.shape(), &[] as &[usize]);
        assert_eq!(dot.to_f64_vec(), vec![14.0]);
    }

    #[test]
    fn matmul_batch_broadcast() {
        // [2, 1, 2, 3] x [3, 3, 2] -> [2, 3, 2, 2]
        let a = iota(&[2, 1, 2, 3]);
        let b = iota(&[3, 3, 2]);
        let c = matmul(&a, &b).unwrap();
        assert_eq!(c.shape(), &[2, 3, 2, 2]);
        let av = a.to_f64_vec().iter().map(|&v| v as f32).collect::<Vec<_>>();
        let bv = b.to_f64_vec().iter().map(|&v| v as f32).collect::<Vec<_>>();
        let mut expected = Vec::new();
        for i in 0..2 {
            for j in 0..3 {
                expected.extend(naive_batched(&av[i * 6..i * 6 + 6], &bv[j * 6..j * 6 + 6], 1, 2, 3, 2));
            }
        }
        assert_eq!(c.to_f64_vec(), expected.iter().map(|&v| v as f64).collect::<Vec<_>>());
    }

    #[test]
    fn matmul_batched_lhs_with_matrix_rhs() {
        let a = iota(&[2, 2, 3]);
        let b = iota(&[3, 2]);
        let c = matmul(&a, &b).unwrap();
        assert_eq!(c.shape(), &[2, 2, 2]);
        assert_eq!(c.to_f64_vec(), vec![10.0, 13.0, 28.0, 40.0, 46.0, 67.0, 64.0, 94.0]);
    }

    #[test]
    fn matmul_integers_and_errors() {
        let a = Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![2, 3]).unwrap());
        let b = Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[2, 1]), vec![4, 5]).unwrap());
        let c = matmul(&a, &b).unwrap();
        assert_eq!(c.dtype(), DType::I64);
        assert_eq!(c.to_i64_vec(), vec![23]);
        let err = matmul(&iota(&[2, 3]), &iota(&[2, 3])).unwrap_err();
        assert!(err.message.contains("inner dimensions"), "{}", err.message);
        assert!(matmul(&iota(&[2, 3]), &a).is_err());
    }

    #[test]
    fn gemm_transposes_and_bias() {
        // A^T with A = [[1, 3], [2, 4]] is [[1, 2], [3, 4]].
        let a = f32s(&[2, 2], &[1.0, 3.0, 2.0, 4.0]);
        let b = f32s(&[2, 2], &[5.0, 6.0, 7.0, 8.0]);
        let c = f32s(&[2], &[1.0, 2.0]);
        let y = gemm(&a, &b, Some(&c), 2.0, 10.0, true, false).unwrap();
        // A^T B = [[19, 22], [43, 50]], then 2 * that + 10 * [1, 2] broadcast by row.
        assert_eq!(y.to_f64_vec(), vec![48.0, 64.0, 96.0, 120.0]);
        let y_tb = gemm(&f32s(&[1, 2], &[1.0, 1.0]), &b, None, 1.0, 1.0, false, true).unwrap();
        assert_eq!(y_tb.to_f64_vec(), vec![11.0, 15.0]);
        assert!(gemm(&a, &b, Some(&f32s(&[3], &[0.0; 3])), 1.0, 1.0, false, false).is_err());
    }

    #[test]
    fn linear_flattens_leading_dims() {
        let x = iota(&[2, 2, 3]);
        let w = f32s(&[2, 3], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let b = f32s(&[2], &[0.5, -0.5]);
        let y = linear(&x, &w, Some(&b)).unwrap();
        assert_eq!(y.shape(), &[2, 2, 2]);
        assert_eq!(y.to_f64_vec(), vec![0.5, 2.5, 3.5, 11.5, 6.5, 20.5, 9.5, 29.5]);
        let no_bias = linear(&x, &w, None).unwrap();
        assert_eq!(no_bias.to_f64_vec()[..2], [0.0, 3.0]);
        assert!(linear(&iota(&[2, 4]), &w, None).is_err());
    }

    #[test]
    fn attention_matches_per_head_reference() {
        let (batch, tokens, heads, head_dim) = (2, 3, 2, 2);
        let width = heads * head_dim;
        let n = batch * tokens * width;
        let q: Vec<f32> = (0..n).map(|i| ((i * 7) % 5) as f32 * 0.3 - 0.5).collect();
        let k: Vec<f32> = (0..n).map(|i| ((i * 3) % 7) as f32 * 0.2 - 0.6).collect();
        let v: Vec<f32> = (0..n).map(|i| i as f32 * 0.1).collect();
        let shape = [batch, tokens, width];
        let scale = 0.5f32;
        let out = attention(&f32s(&shape, &q), &f32s(&shape, &k), &f32s(&shape, &v), heads, head_dim, scale).unwrap();
        let got = out.to_f64_vec();

        let at = |data: &[f32], b: usize, t: usize, h: usize, d: usize| {
            data[b * tokens * width + t * width + h * head_dim + d] as f64
        };
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..tokens {
                    let logits: Vec<f64> = (0..tokens)
                        .map(|j| {
                            scale as f64 * (0..head_dim).map(|d| at(&q, b, i, h, d) * at(&k, b, j, h, d)).sum::<f64>()
                        })
                        .collect();
                    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    for d in 0..head_dim {
                        let expected: f64 = (0..tokens).map(|j| weights[j] / total * at(&v, b, j, h, d)).sum();
                        let index = b * tokens * width + i * width + h * head_dim + d;
                        assert!(
                            (got[index] - expected).abs() < 1e-5,
                            "b={b} h={h} i={i} d={d}: {} vs {expected}",
                            got[index]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn attention_rejects_bad_width() {
        let x = iota(&[1, 2, 6]);
        let err = attention(&x, &x, &x, 2, 2, 1.0).unwrap_err();
        assert!(err.message.contains("heads * head_dim"), "{}", err.message);
    }
}
