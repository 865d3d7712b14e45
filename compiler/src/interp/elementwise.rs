//! Elementwise kernels: unary math, binary arithmetic, comparisons and logic
//! with NumPy broadcasting, `Where`, `Clip`, `HardSigmoid`, `LeakyRelu`, `Gelu`.
//!
//! Binary operands must have the same element type, except the exponent
//! of `Pow`. Integer arithmetic wraps on overflow like NumPy's fixed-width
//! integers. Integer `Div` truncates toward zero like C, and an integer
//! division or modulo by zero is an error rather than a panic. `f16`
//! data is computed in `f32` and rounded back.

use half::f16;
use ndarray::{ArrayD, ArrayViewD, IxDyn, Zip};

use super::common::{Real, TensorElement, dtype_error, float_kernel, scalar_as, typed, with_any_dtype};
use super::erf::{erf, erfc};
use crate::error::{OpError, OpResult};
use crate::ir::op::{BinaryOp, GeluApprox, UnaryOp};
use crate::op_bail;
use crate::tensor::{DType, Element, Tensor};

// Broadcasting.

/// Computes the NumPy multidirectional broadcast of two shapes.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> OpResult<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut shape = vec![0; rank];
    for i in 0..rank {
        let da = if i < rank - a.len() { 1 } else { a[i - (rank - a.len())] };
        let db = if i < rank - b.len() { 1 } else { b[i - (rank - b.len())] };
        shape[i] = match (da, db) {
            _ if da == db => da,
            (1, _) => db,
            (_, 1) => da,
            _ => op_bail!(
                "shapes {a:?} and {b:?} cannot be broadcast together: dimension {i} of the broadcast result is {da} in one and {db} in the other"
            ),
        };
    }
    Ok(shape)
}

/// Returns a read-only view of `array` broadcast to `shape`.
pub(crate) fn broadcast_view<'a, T>(
    array: &'a ArrayViewD<'_, T>,
    shape: &[usize],
    label: &str,
) -> OpResult<ArrayViewD<'a, T>> {
    array
        .broadcast(IxDyn(shape))
        .ok_or_else(|| OpError::new(format!("{label} of shape {:?} cannot be broadcast to {shape:?}", array.shape())))
}

/// Applies `f` to the broadcast pairs of `a` and `b` and returns a standard-layout result.
pub(crate) fn zip_broadcast<A: Copy, B: Copy, C: Clone>(
    a: ArrayViewD<'_, A>,
    b: ArrayViewD<'_, B>,
    f: impl Fn(A, B) -> C,
) -> OpResult<ArrayD<C>> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let av = broadcast_view(&a, &shape, "the first operand")?;
    let bv = broadcast_view(&b, &shape, "the second operand")?;
    let result = Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y));
    Ok(into_standard(result))
}

/// Returns `array` itself if it is in standard layout, else a standard copy.
pub(crate) fn into_standard<T: Clone>(array: ArrayD<T>) -> ArrayD<T> {
    if array.is_standard_layout() { array } else { array.as_standard_layout().into_owned() }
}

// Scalar arithmetic.

/// Element types with arithmetic: the integer types wrap, the floats follow IEEE 754.
pub(crate) trait Arith: TensorElement + PartialOrd {
    fn add(self, other: Self) -> Self;
    fn sub(self, other: Self) -> Self;
    fn mul(self, other: Self) -> Self;
    /// Divides. The caller rejects integer division by zero first.
    fn div(self, other: Self) -> Self;
    /// Returns the remainder with the divisor's sign (Python `%`). An integer divisor must be nonzero.
    fn rem_floor(self, other: Self) -> Self;
    /// Returns the remainder with the dividend's sign (C `fmod`). An integer divisor must be nonzero.
    fn rem_trunc(self, other: Self) -> Self;
    /// Returns the maximum, or NaN if either is NaN, like `numpy.maximum`.
    fn max_nan(self, other: Self) -> Self;
    fn min_nan(self, other: Self) -> Self;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    fn signum(self) -> Self;
    fn is_zero(self) -> bool;
}

macro_rules! impl_arith_int {
    ($t:ty) => {
        impl Arith for $t {
            fn add(self, other: Self) -> Self {
                self.wrapping_add(other)
            }
            fn sub(self, other: Self) -> Self {
                self.wrapping_sub(other)
            }
            fn mul(self, other: Self) -> Self {
                self.wrapping_mul(other)
            }
            fn div(self, other: Self) -> Self {
                self.wrapping_div(other)
            }
            #[allow(unused_comparisons)]
            fn rem_floor(self, other: Self) -> Self {
                let r = self.wrapping_rem(other);
                if r != 0 && ((r < 0) != (other < 0)) { r.wrapping_add(other) } else { r }
            }
            fn rem_trunc(self, other: Self) -> Self {
                self.wrapping_rem(other)
            }
            fn max_nan(self, other: Self) -> Self {
                Ord::max(self, other)
            }
            fn min_nan(self, other: Self) -> Self {
                Ord::min(self, other)
            }
            fn neg(self) -> Self {
                self.wrapping_neg()
            }
            #[allow(unused_comparisons)]
            fn abs(self) -> Self {
                if self < 0 { self.wrapping_neg() } else { self }
            }
            #[allow(unused_comparisons)]
            fn signum(self) -> Self {
                if self > 0 {
                    1
                } else if self < 0 {
                    (0 as $t).wrapping_sub(1)
                } else {
                    0
                }
            }
            fn is_zero(self) -> bool {
                self == 0
            }
        }
    };
}
impl_arith_int!(i64);
impl_arith_int!(i32);
impl_arith_int!(i8);
impl_arith_int!(u8);

macro_rules! impl_arith_float {
    ($t:ty) => {
        impl Arith for $t {
            fn add(self, other: Self) -> Self {
                self + other
            }
            fn sub(self, other: Self) -> Self {
                self - other
            }
            fn mul(self, other: Self) -> Self {
                self * other
            }
            fn div(self, other: Self) -> Self {
                self / other
            }
            fn rem_floor(self, other: Self) -> Self {
                let r = self % other;
                if r != 0.0 && ((r < 0.0) != (other < 0.0)) { r + other } else { r }
            }
            fn rem_trunc(self, other: Self) -> Self {
                self % other
            }
            fn max_nan(self, other: Self) -> Self {
                if self.is_nan() || other.is_nan() { <$t>::NAN } else { self.max(other) }
            }
            fn min_nan(self, other: Self) -> Self {
                if self.is_nan() || other.is_nan() { <$t>::NAN } else { self.min(other) }
            }
            fn neg(self) -> Self {
                -self
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn signum(self) -> Self {
                if self > 0.0 {
                    1.0
                } else if self < 0.0 {
                    -1.0
                } else {
                    // Zero keeps its value and NaN stays NaN, like `numpy.sign`.
                    self
                }
            }
            fn is_zero(self) -> bool {
                self == 0.0
            }
        }
    };
}
impl_arith_float!(f32);
impl_arith_float!(f64);

/// Evaluates `$body` for two numeric operands of the same element type,
/// with `$x` and `$y` bound to `&ArrayD<T>` (`f16` widened to `f32`).
/// `$body` evaluates to `OpResult<ArrayD<T>>`.
macro_rules! numeric_pair {
    ($a:expr, $b:expr, $label:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (Tensor::F32($x), Tensor::F32($y)) => Ok(Tensor::F32($body?)),
            (Tensor::F64($x), Tensor::F64($y)) => Ok(Tensor::F64($body?)),
            (Tensor::I64($x), Tensor::I64($y)) => Ok(Tensor::I64($body?)),
            (Tensor::I32($x), Tensor::I32($y)) => Ok(Tensor::I32($body?)),
            (Tensor::I8($x), Tensor::I8($y)) => Ok(Tensor::I8($body?)),
            (Tensor::U8($x), Tensor::U8($y)) => Ok(Tensor::U8($body?)),
            (Tensor::F16(p), Tensor::F16(q)) => {
                let $x = &p.mapv(f16::to_f32);
                let $y = &q.mapv(f16::to_f32);
                Ok(Tensor::F16($body?.mapv(f16::from_f32)))
            }
            (a, b) => Err(pair_dtype_error($label, a.dtype(), b.dtype(), "numeric")),
        }
    };
}

fn pair_dtype_error(label: &str, a: DType, b: DType, expected: &str) -> OpError {
    if a != b {
        OpError::new(format!("{label}: operands must have the same element type, got {a} and {b}"))
    } else {
        OpError::new(format!("{label}: operands must be {expected}, got {a}"))
    }
}

// Binary operators.

/// Computes a binary operator with NumPy broadcasting.
pub(crate) fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    let name = op.name();
    match op {
        BinaryOp::Pow => pow(a, b),
        BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => logical(op, a, b),
        _ if op.is_comparison() => compare(op, a, b),
        _ => numeric_pair!(a, b, name, |x, y| arithmetic(op, x, y)),
    }
}

fn arithmetic<T: Arith>(op: BinaryOp, a: &ArrayD<T>, b: &ArrayD<T>) -> OpResult<ArrayD<T>> {
    let needs_nonzero = matches!(op, BinaryOp::Div | BinaryOp::Mod | BinaryOp::Fmod) && !T::DTYPE.is_float();
    if needs_nonzero && b.iter().any(|v| v.is_zero()) {
        op_bail!("{}: the integer divisor (second operand) contains a zero", op.name());
    }
    let f: fn(T, T) -> T = match op {
        BinaryOp::Add => T::add,
        BinaryOp::Sub => T::sub,
        BinaryOp::Mul => T::mul,
        BinaryOp::Div => T::div,
        BinaryOp::Mod => T::rem_floor,
        BinaryOp::Fmod => T::rem_trunc,
        BinaryOp::Max => T::max_nan,
        BinaryOp::Min => T::min_nan,
        _ => op_bail!("internal error: {} is not an arithmetic operator", op.name()),
    };
    zip_broadcast(a.view(), b.view(), f)
}

// Bool operands are ordered `false < true`, so the generic comparisons also cover them.
#[allow(clippy::bool_comparison)]
fn compare(op: BinaryOp, a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    if a.dtype() != b.dtype() {
        return Err(pair_dtype_error(op.name(), a.dtype(), b.dtype(), "comparable"));
    }
    with_any_dtype!(a.dtype(), T => {
        let x = typed::<T>(a, "the first operand")?;
        let y = typed::<T>(b, "the second operand")?;
        let f: fn(T, T) -> bool = match op {
            BinaryOp::Equal => |p, q| p == q,
            BinaryOp::Less => |p, q| p < q,
            BinaryOp::LessOrEqual => |p, q| p <= q,
            BinaryOp::Greater => |p, q| p > q,
            BinaryOp::GreaterOrEqual => |p, q| p >= q,
            _ => op_bail!("internal error: {} is not a comparison", op.name()),
        };
        Ok(Tensor::Bool(zip_broadcast(x.view(), y.view(), f)?))
    })
}

fn logical(op: BinaryOp, a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    let (Tensor::Bool(x), Tensor::Bool(y)) = (a, b) else {
        return Err(pair_dtype_error(op.name(), a.dtype(), b.dtype(), "bool"));
    };
    let f: fn(bool, bool) -> bool = match op {
        BinaryOp::And => |p, q| p && q,
        BinaryOp::Or => |p, q| p || q,
        _ => |p, q| p != q,
    };
    Ok(Tensor::Bool(zip_broadcast(x.view(), y.view(), f)?))
}

/// `Pow(base, exponent)`: the result has the base's type, and the exponent
/// may have any numeric type. Float powers are computed in `f64`. An
/// integer base with a non-negative integral exponent uses exact wrapping
/// integer powers, and other integer cases truncate the `f64` power.
fn pow(base: &Tensor, exponent: &Tensor) -> OpResult<Tensor> {
    if exponent.dtype() == DType::Bool {
        return Err(dtype_error("Pow exponent", "numeric", DType::Bool));
    }
    let exponent = exponent.cast(DType::F64);
    let e = typed::<f64>(&exponent, "Pow exponent")?;
    match base {
        Tensor::F32(x) => Ok(Tensor::F32(zip_broadcast(x.view(), e.view(), |b, p| (b as f64).powf(p) as f32)?)),
        Tensor::F64(x) => Ok(Tensor::F64(zip_broadcast(x.view(), e.view(), f64::powf)?)),
        Tensor::F16(x) => Ok(Tensor::F16(zip_broadcast(x.view(), e.view(), |b, p| f16::from_f64(b.to_f64().powf(p)))?)),
        Tensor::I64(x) => Ok(Tensor::I64(zip_broadcast(x.view(), e.view(), int_pow)?)),
        Tensor::I32(x) => Ok(Tensor::I32(zip_broadcast(x.view(), e.view(), int_pow)?)),
        Tensor::I8(x) => Ok(Tensor::I8(zip_broadcast(x.view(), e.view(), int_pow)?)),
        Tensor::U8(x) => Ok(Tensor::U8(zip_broadcast(x.view(), e.view(), int_pow)?)),
        Tensor::Bool(_) => Err(dtype_error("Pow base", "numeric", DType::Bool)),
    }
}

fn int_pow<T: Element>(base: T, exponent: f64) -> T {
    if exponent >= 0.0 && exponent.fract() == 0.0 && exponent <= u32::MAX as f64 {
        T::from_i64(base.to_i64().wrapping_pow(exponent as u32))
    } else {
        T::from_f64(base.to_f64().powf(exponent))
    }
}

// Unary operators.

/// Computes a unary operator.
pub(crate) fn unary(op: UnaryOp, x: &Tensor) -> OpResult<Tensor> {
    let label = op.name();
    match (op, x) {
        (UnaryOp::Not, Tensor::Bool(a)) => Ok(Tensor::Bool(a.mapv(|v| !v))),
        (UnaryOp::Not, other) => Err(dtype_error("Not operand", "bool", other.dtype())),
        (UnaryOp::IsNaN, _) => is_nan(x),
        (UnaryOp::Relu | UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign, _) if x.dtype().is_int() => int_unary(op, x),
        _ => float_kernel!(x, label, |a: T| a.mapv(float_unary_fn::<T>(op))),
    }
}

fn is_nan(x: &Tensor) -> OpResult<Tensor> {
    match x {
        Tensor::F32(a) => Ok(Tensor::Bool(a.mapv(f32::is_nan))),
        Tensor::F64(a) => Ok(Tensor::Bool(a.mapv(f64::is_nan))),
        Tensor::F16(a) => Ok(Tensor::Bool(a.mapv(f16::is_nan))),
        other => Err(dtype_error("IsNaN operand", "a float tensor", other.dtype())),
    }
}

fn int_unary(op: UnaryOp, x: &Tensor) -> OpResult<Tensor> {
    fn apply<T: Arith>(op: UnaryOp, a: &ArrayD<T>) -> ArrayD<T> {
        match op {
            UnaryOp::Relu => a.mapv(|v| if v > T::default() { v } else { T::default() }),
            UnaryOp::Neg => a.mapv(T::neg),
            UnaryOp::Abs => a.mapv(T::abs),
            _ => a.mapv(T::signum),
        }
    }
    match x {
        Tensor::I64(a) => Ok(Tensor::I64(apply(op, a))),
        Tensor::I32(a) => Ok(Tensor::I32(apply(op, a))),
        Tensor::I8(a) => Ok(Tensor::I8(apply(op, a))),
        Tensor::U8(a) => Ok(Tensor::U8(apply(op, a))),
        other => Err(dtype_error(op.name(), "an integer tensor", other.dtype())),
    }
}

/// Returns the scalar function of a float unary operator.
fn float_unary_fn<T: Real>(op: UnaryOp) -> fn(T) -> T {
    match op {
        UnaryOp::Relu => |v| if v > T::zero() || v.is_nan() { v } else { T::zero() },
        UnaryOp::Sigmoid => sigmoid,
        UnaryOp::Tanh => |v| v.tanh(),
        UnaryOp::Erf => |v| T::from_f64(erf(Element::to_f64(v))),
        UnaryOp::Sqrt => |v| v.sqrt(),
        UnaryOp::Exp => |v| v.exp(),
        UnaryOp::Log => |v| v.ln(),
        UnaryOp::Neg => |v| -v,
        UnaryOp::Abs => |v| v.abs(),
        UnaryOp::Reciprocal => |v| v.recip(),
        UnaryOp::Floor => |v| v.floor(),
        UnaryOp::Ceil => |v| v.ceil(),
        // Halves round to even, as ONNX `Round` requires.
        UnaryOp::Round => |v| T::from_f64(Element::to_f64(v).round_ties_even()),
        UnaryOp::Sign => |v| {
            if v > T::zero() {
                T::one()
            } else if v < T::zero() {
                -T::one()
            } else {
                v
            }
        },
        UnaryOp::Sin => |v| v.sin(),
        UnaryOp::Cos => |v| v.cos(),
        UnaryOp::Softplus => softplus,
        // `unary` handles these before dispatching here.
        UnaryOp::Not | UnaryOp::IsNaN => |v| v,
    }
}

/// Computes `1 / (1 + exp(-v))` with `exp` of a non-positive argument only, so it cannot overflow.
fn sigmoid<T: Real>(v: T) -> T {
    if v >= T::zero() {
        T::one() / (T::one() + (-v).exp())
    } else {
        let e = v.exp();
        e / (T::one() + e)
    }
}

/// Computes `ln(1 + exp(v))` with `exp` of a non-positive argument only, so it cannot overflow.
fn softplus<T: Real>(v: T) -> T {
    if v > T::zero() { v + (-v).exp().ln_1p() } else { v.exp().ln_1p() }
}

/// `Gelu`: the erf form computed in `f64` through `erfc`, so that the
/// left tail (where `1 + erf` would cancel) keeps its relative precision.
pub(crate) fn gelu(approximate: GeluApprox, x: &Tensor) -> OpResult<Tensor> {
    float_kernel!(x, "Gelu input", |a: T| a.mapv(|v| T::from_f64(gelu_scalar(approximate, Element::to_f64(v)))))
}

fn gelu_scalar(approximate: GeluApprox, x: f64) -> f64 {
    match approximate {
        GeluApprox::None => 0.5 * x * erfc(-x * std::f64::consts::FRAC_1_SQRT_2),
        GeluApprox::Tanh => {
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + inner.tanh())
        }
    }
}

/// `HardSigmoid`: `max(0, min(1, alpha * x + beta))`.
pub(crate) fn hard_sigmoid(alpha: f32, beta: f32, x: &Tensor) -> OpResult<Tensor> {
    fn apply<T: Real>(a: &ArrayViewD<'_, T>, alpha: f32, beta: f32) -> ArrayD<T> {
        let (alpha, beta) = (T::from_f64(alpha as f64), T::from_f64(beta as f64));
        a.mapv(|v| (alpha * v + beta).max(T::zero()).min(T::one()))
    }
    float_kernel!(x, "HardSigmoid input", |a: T| apply::<T>(&a.view(), alpha, beta))
}

/// `LeakyRelu`: `alpha * x` for negative `x`, else `x`.
pub(crate) fn leaky_relu(alpha: f32, x: &Tensor) -> OpResult<Tensor> {
    fn apply<T: Real>(a: &ArrayViewD<'_, T>, alpha: f32) -> ArrayD<T> {
        let alpha = T::from_f64(alpha as f64);
        a.mapv(|v| if v < T::zero() { alpha * v } else { v })
    }
    float_kernel!(x, "LeakyRelu input", |a: T| apply::<T>(&a.view(), alpha))
}

// Selection.

/// `Where(condition, x, y)` with three-way broadcasting.
pub(crate) fn where_op(condition: &Tensor, x: &Tensor, y: &Tensor) -> OpResult<Tensor> {
    let Tensor::Bool(c) = condition else {
        return Err(dtype_error("Where condition", "bool", condition.dtype()));
    };
    if x.dtype() != y.dtype() {
        op_bail!("Where: x and y must have the same element type, got {} and {}", x.dtype(), y.dtype());
    }
    with_any_dtype!(x.dtype(), T => {
        let xa = typed::<T>(x, "Where x")?;
        let ya = typed::<T>(y, "Where y")?;
        let shape = broadcast_shape(&broadcast_shape(c.shape(), xa.shape())?, ya.shape())?;
        let (cv, xv, yv) = (c.view(), xa.view(), ya.view());
        let cb = broadcast_view(&cv, &shape, "Where condition")?;
        let xb = broadcast_view(&xv, &shape, "Where x")?;
        let yb = broadcast_view(&yv, &shape, "Where y")?;
        let result = Zip::from(&cb).and(&xb).and(&yb).map_collect(|&c, &p, &q| if c { p } else { q });
        Ok(T::into_tensor(into_standard(result)))
    })
}

/// `Clip(x, min?, max?)`. NaN stays NaN. When `min > max`, every element
/// becomes `max`, as the ONNX specification states.
#[allow(clippy::bool_comparison)]
pub(crate) fn clip(x: &Tensor, min: Option<&Tensor>, max: Option<&Tensor>) -> OpResult<Tensor> {
    for (bound, name) in [(min, "Clip min"), (max, "Clip max")] {
        if let Some(b) = bound {
            if b.dtype() != x.dtype() {
                return Err(dtype_error(name, &format!("{} like the input", x.dtype()), b.dtype()));
            }
            if b.len() != 1 {
                op_bail!("{name} must be a scalar, got shape {:?}", b.shape());
            }
        }
    }
    with_any_dtype!(x.dtype(), T => {
        let a = typed::<T>(x, "Clip input")?;
        let lo: Option<T> = min.map(|t| scalar_as::<T>(t, "Clip min")).transpose()?;
        let hi: Option<T> = max.map(|t| scalar_as::<T>(t, "Clip max")).transpose()?;
        let clipped = a.mapv(|v| {
            let v = match lo { Some(l) if v < l => l, _ => v };
            match hi { Some(h) if v > h => h, _ => v }
        });
        Ok(T::into_tensor(clipped))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ArrayD;

    fn f32s(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), data.to_vec()).unwrap())
    }

    fn i64s(shape: &[usize], data: &[i64]) -> Tensor {
        Tensor::I64(ArrayD::from_shape_vec(IxDyn(shape), data.to_vec()).unwrap())
    }

    fn values(t: &Tensor) -> Vec<f64> {
        t.to_f64_vec()
    }

    #[test]
    fn broadcast_shape_numpy_rules() {
        assert_eq!(broadcast_shape(&[2, 1, 3], &[4, 1]).unwrap(), vec![2, 4, 3]);
        assert_eq!(broadcast_shape(&[], &[5]).unwrap(), vec![5]);
        assert_eq!(broadcast_shape(&[0, 1], &[1, 3]).unwrap(), vec![0, 3]);
        assert!(broadcast_shape(&[2, 3], &[4]).is_err());
    }

    #[test]
    fn add_broadcasts_row_and_column() {
        let a = f32s(&[2, 1], &[10.0, 20.0]);
        let b = f32s(&[3], &[1.0, 2.0, 3.0]);
        let sum = binary(BinaryOp::Add, &a, &b).unwrap();
        assert_eq!(sum.shape(), &[2, 3]);
        assert_eq!(values(&sum), vec![11.0, 12.0, 13.0, 21.0, 22.0, 23.0]);
    }

    #[test]
    fn integer_div_truncates_toward_zero() {
        let a = i64s(&[4], &[7, -7, 7, -7]);
        let b = i64s(&[4], &[2, 2, -2, -2]);
        assert_eq!(binary(BinaryOp::Div, &a, &b).unwrap().to_i64_vec(), vec![3, -3, -3, 3]);
    }

    #[test]
    fn integer_div_by_zero_is_error() {
        let a = i64s(&[2], &[1, 2]);
        let b = i64s(&[2], &[1, 0]);
        let err = binary(BinaryOp::Div, &a, &b).unwrap_err();
        assert!(err.message.contains("zero"), "{}", err.message);
    }

    #[test]
    fn mod_and_fmod_signs() {
        let a = i64s(&[4], &[5, -5, 5, -5]);
        let b = i64s(&[4], &[3, 3, -3, -3]);
        assert_eq!(binary(BinaryOp::Mod, &a, &b).unwrap().to_i64_vec(), vec![2, 1, -1, -2]);
        assert_eq!(binary(BinaryOp::Fmod, &a, &b).unwrap().to_i64_vec(), vec![2, -2, 2, -2]);
        let fa = f32s(&[2], &[-4.3, 4.3]);
        let fb = f32s(&[2], &[2.1, -2.1]);
        let fmod = values(&binary(BinaryOp::Fmod, &fa, &fb).unwrap());
        assert!((fmod[0] - (-0.1)).abs() < 1e-5, "{fmod:?}");
        assert!((fmod[1] - 0.1).abs() < 1e-5, "{fmod:?}");
        let modulo = values(&binary(BinaryOp::Mod, &fa, &fb).unwrap());
        assert!((modulo[0] - 2.0).abs() < 1e-5, "{modulo:?}");
        assert!((modulo[1] - (-2.0)).abs() < 1e-5, "{modulo:?}");
    }

    #[test]
    fn pow_mixed_types() {
        let base = i64s(&[3], &[1, 2, 3]);
        let exponent = f32s(&[3], &[4.0, 5.0, 6.0]);
        let result = binary(BinaryOp::Pow, &base, &exponent).unwrap();
        assert_eq!(result.dtype(), DType::I64);
        assert_eq!(result.to_i64_vec(), vec![1, 32, 729]);
        let fbase = f32s(&[2], &[2.0, 4.0]);
        let half = f32s(&[], &[0.5]);
        assert_eq!(values(&binary(BinaryOp::Pow, &fbase, &half).unwrap()), vec![2f64.sqrt() as f32 as f64, 2.0]);
    }

    #[test]
    fn comparisons_return_bool() {
        let a = f32s(&[3], &[1.0, 2.0, f32::NAN]);
        let b = f32s(&[1], &[2.0]);
        let less = binary(BinaryOp::Less, &a, &b).unwrap();
        assert_eq!(less.dtype(), DType::Bool);
        assert_eq!(less.to_i64_vec(), vec![1, 0, 0]);
        assert_eq!(binary(BinaryOp::Equal, &a, &b).unwrap().to_i64_vec(), vec![0, 1, 0]);
    }

    #[test]
    fn mismatched_dtypes_are_rejected() {
        let err = binary(BinaryOp::Add, &f32s(&[1], &[1.0]), &i64s(&[1], &[1])).unwrap_err();
        assert!(err.message.contains("same element type"), "{}", err.message);
    }

    #[test]
    fn max_propagates_nan() {
        let a = f32s(&[2], &[1.0, f32::NAN]);
        let b = f32s(&[2], &[3.0, 0.0]);
        let max = values(&binary(BinaryOp::Max, &a, &b).unwrap());
        assert_eq!(max[0], 3.0);
        assert!(max[1].is_nan());
    }

    #[test]
    fn f16_add_rounds_back() {
        let a = Tensor::F16(ArrayD::from_elem(IxDyn(&[2]), f16::from_f32(1.5)));
        let sum = binary(BinaryOp::Add, &a, &a).unwrap();
        assert_eq!(sum.dtype(), DType::F16);
        assert_eq!(values(&sum), vec![3.0, 3.0]);
    }

    #[test]
    fn round_half_to_even() {
        let x = f32s(&[6], &[0.5, 1.5, 2.5, -0.5, -1.5, 2.4]);
        assert_eq!(values(&unary(UnaryOp::Round, &x).unwrap()), vec![0.0, 2.0, 2.0, -0.0, -2.0, 2.0]);
    }

    #[test]
    fn sigmoid_and_softplus_extremes() {
        let x = f32s(&[3], &[-1000.0, 0.0, 1000.0]);
        assert_eq!(values(&unary(UnaryOp::Sigmoid, &x).unwrap()), vec![0.0, 0.5, 1.0]);
        let softplus = values(&unary(UnaryOp::Softplus, &x).unwrap());
        assert_eq!(softplus[0], 0.0);
        assert!((softplus[1] - 2f64.ln()).abs() < 1e-6);
        assert_eq!(softplus[2], 1000.0);
    }

    #[test]
    fn integer_unary_ops() {
        let x = i64s(&[3], &[-3, 0, 4]);
        assert_eq!(unary(UnaryOp::Relu, &x).unwrap().to_i64_vec(), vec![0, 0, 4]);
        assert_eq!(unary(UnaryOp::Abs, &x).unwrap().to_i64_vec(), vec![3, 0, 4]);
        assert_eq!(unary(UnaryOp::Sign, &x).unwrap().to_i64_vec(), vec![-1, 0, 1]);
        assert_eq!(unary(UnaryOp::Neg, &x).unwrap().to_i64_vec(), vec![3, 0, -4]);
        assert!(unary(UnaryOp::Exp, &x).is_err());
    }

    #[test]
    fn erf_in_f32() {
        let x = f32s(&[3], &[0.5, -1.0, 3.0]);
        let y = values(&unary(UnaryOp::Erf, &x).unwrap());
        let expected = [0.5204998778130465, -0.8427007929497149, 0.9999779095030014];
        for (got, want) in y.iter().zip(expected) {
            assert_eq!(*got, want as f32 as f64);
        }
    }

    #[test]
    fn gelu_forms() {
        let x = f32s(&[4], &[-10.0, -1.0, 0.0, 2.0]);
        let exact = values(&gelu(GeluApprox::None, &x).unwrap());
        // Values of x * Phi(x) from the normal CDF; the first one shows the
        // left tail is not flushed to zero.
        let expected = [-7.619853024160593e-23, -0.15865525393145707, 0.0, 1.9544997361036416];
        for (got, want) in exact.iter().zip(expected) {
            assert!((got - want).abs() <= 1e-6 * want.abs().max(1e-30), "gelu = {got}, expected {want}");
        }
        let tanh = values(&gelu(GeluApprox::Tanh, &x).unwrap());
        assert!((tanh[1] - (-0.15880800939172324)).abs() < 1e-6, "{}", tanh[1]);
    }

    #[test]
    fn where_broadcasts_three_ways() {
        let c = Tensor::Bool(ArrayD::from_shape_vec(IxDyn(&[2, 1]), vec![true, false]).unwrap());
        let x = f32s(&[3], &[1.0, 2.0, 3.0]);
        let y = f32s(&[], &[-1.0]);
        let result = where_op(&c, &x, &y).unwrap();
        assert_eq!(result.shape(), &[2, 3]);
        assert_eq!(values(&result), vec![1.0, 2.0, 3.0, -1.0, -1.0, -1.0]);
    }

    #[test]
    fn clip_bounds_and_nan() {
        let x = f32s(&[4], &[-5.0, 0.5, 5.0, f32::NAN]);
        let lo = f32s(&[], &[-1.0]);
        let hi = f32s(&[], &[1.0]);
        let y = values(&clip(&x, Some(&lo), Some(&hi)).unwrap());
        assert_eq!(&y[..3], &[-1.0, 0.5, 1.0]);
        assert!(y[3].is_nan());
        let upper_only = values(&clip(&x, None, Some(&hi)).unwrap());
        assert_eq!(&upper_only[..3], &[-5.0, 0.5, 1.0]);
        let inverted = values(&clip(&x, Some(&hi), Some(&lo)).unwrap());
        assert_eq!(&inverted[..3], &[-1.0, -1.0, -1.0]);
    }

    #[test]
    fn hard_sigmoid_and_leaky_relu() {
        let x = f32s(&[3], &[-10.0, 0.0, 1.0]);
        assert_eq!(values(&hard_sigmoid(0.2, 0.5, &x).unwrap()), vec![0.0, 0.5, 0.699999988079071]);
        assert_eq!(values(&leaky_relu(0.1, &x).unwrap()), vec![-1.0, 0.0, 1.0]);
    }
}
