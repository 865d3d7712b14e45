//! Vectorized elementary functions on F32X4, emitted inline.
//!
//! `exp` reduces the argument to `r = x - n ln 2` with `n = round(x / ln 2)`,
//! evaluates a degree-6 polynomial for `e^r` on [-ln2/2, ln2/2] and scales
//! by `2^n` through the exponent bits (relative error about 2e-7 on the
//! clamped range [-87.3, 88.7]). `erf` uses Abramowitz and Stegun formula
//! 7.1.26 (absolute error below 1.5e-7). `tanh` and the sigmoid are
//! written with `exp`. Scalars go through the same code in lane 0.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};

use super::builder::{F32X4, Kb};

/// `e^x` per lane.
pub fn exp(kb: &mut Kb, x: Value) -> Value {
    // Beyond these bounds f32 exp is inf or 0 anyway; the clamp keeps n
    // (below) within what the two-step scaling can represent.
    let hi = kb.splat(89.0);
    let lo = kb.splat(-104.0);
    let x = kb.b.ins().fmin(x, hi);
    let x = kb.b.ins().fmax(x, lo);

    // n = round(x * log2(e)); r = x - n * ln2 (ln2 split in two for accuracy).
    let log2e = kb.splat(std::f32::consts::LOG2_E);
    let t = kb.b.ins().fmul(x, log2e);
    let n = kb.b.ins().nearest(t);
    let ln2_hi = kb.splat(0.693_359_4);
    let ln2_lo = kb.splat(-2.121_944_4e-4);
    let neg_n = kb.b.ins().fneg(n);
    let r = kb.b.ins().fma(neg_n, ln2_hi, x);
    let r = kb.b.ins().fma(neg_n, ln2_lo, r);

    // e^r by Horner's rule (Taylor coefficients up to r^6).
    let coefficients = [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0];
    let mut p = kb.splat(coefficients[0]);
    for &c in &coefficients[1..] {
        let cv = kb.splat(c);
        p = kb.b.ins().fma(p, r, cv);
    }

    // 2^n in two factors 2^(n/2) and 2^(n - n/2), each a normal f32 for n in
    // -150..=129: one factor 2^n would overflow at n = 128 although e^x is
    // still finite for x up to 88.72, and would leave the normal range below
    // n = -126, where e^x is still a subnormal.
    let ni = kb.b.ins().fcvt_to_sint_sat(types::I32X4, n);
    let half = kb.b.ins().sshr_imm_u(ni, 1);
    let rest = kb.b.ins().isub(ni, half);
    let (first, second) = (pow2(kb, half), pow2(kb, rest));
    let p = kb.b.ins().fmul(p, first);
    kb.b.ins().fmul(p, second)
}

/// `2^n` per lane for integer lanes `n` in -126..=127, through the exponent field.
fn pow2(kb: &mut Kb, n: Value) -> Value {
    let bias = kb.b.ins().iconst(types::I32, 127);
    let bias = kb.b.ins().splat(types::I32X4, bias);
    let biased = kb.b.ins().iadd(n, bias);
    let shifted = kb.b.ins().ishl_imm_u(biased, 23);
    kb.b.ins().bitcast(F32X4, MemFlagsData::new(), shifted)
}

/// `erf(x)` per lane.
pub fn erf(kb: &mut Kb, x: Value) -> Value {
    let ax = kb.b.ins().fabs(x);
    let one = kb.splat(1.0);
    let p = kb.splat(0.327_591_1);
    let denom = kb.b.ins().fma(p, ax, one);
    let t = kb.b.ins().fdiv(one, denom);
    let coefficients = [1.061_405_4, -1.453_152_1, 1.421_413_8, -0.284_496_74, 0.254_829_6];
    let mut poly = kb.splat(coefficients[0]);
    for &c in &coefficients[1..] {
        let cv = kb.splat(c);
        poly = kb.b.ins().fma(poly, t, cv);
    }
    poly = kb.b.ins().fmul(poly, t);
    let x2 = kb.b.ins().fmul(ax, ax);
    let neg_x2 = kb.b.ins().fneg(x2);
    let e = exp(kb, neg_x2);
    let tail = kb.b.ins().fmul(poly, e);
    let magnitude = kb.b.ins().fsub(one, tail);
    // Copy the sign of x onto the result.
    let zero = kb.splat(0.0);
    let negative = kb.b.ins().fcmp(FloatCC::LessThan, x, zero);
    let negative = kb.b.ins().bitcast(F32X4, MemFlagsData::new(), negative);
    let flipped = kb.b.ins().fneg(magnitude);
    kb.b.ins().bitselect(negative, flipped, magnitude)
}

/// `tanh(x)` per lane, as `1 - 2 / (e^(2x) + 1)`.
pub fn tanh(kb: &mut Kb, x: Value) -> Value {
    let two = kb.splat(2.0);
    let one = kb.splat(1.0);
    let x2 = kb.b.ins().fmul(x, two);
    let e = exp(kb, x2);
    let d = kb.b.ins().fadd(e, one);
    let q = kb.b.ins().fdiv(two, d);
    kb.b.ins().fsub(one, q)
}

/// `1 / (1 + e^-x)` per lane.
pub fn sigmoid(kb: &mut Kb, x: Value) -> Value {
    let one = kb.splat(1.0);
    let neg = kb.b.ins().fneg(x);
    let e = exp(kb, neg);
    let d = kb.b.ins().fadd(e, one);
    kb.b.ins().fdiv(one, d)
}

/// GELU, erf form: `0.5 x (1 + erf(x / sqrt 2))`.
pub fn gelu(kb: &mut Kb, x: Value) -> Value {
    let inv_sqrt2 = kb.splat(std::f32::consts::FRAC_1_SQRT_2);
    let u = kb.b.ins().fmul(x, inv_sqrt2);
    let e = erf(kb, u);
    let one = kb.splat(1.0);
    let half = kb.splat(0.5);
    let s = kb.b.ins().fadd(e, one);
    let hx = kb.b.ins().fmul(x, half);
    kb.b.ins().fmul(hx, s)
}

/// GELU, tanh approximation.
pub fn gelu_tanh(kb: &mut Kb, x: Value) -> Value {
    let c = kb.splat((2.0f64 / std::f64::consts::PI).sqrt() as f32);
    let k = kb.splat(0.044715);
    let x2 = kb.b.ins().fmul(x, x);
    let x3 = kb.b.ins().fmul(x2, x);
    let inner = kb.b.ins().fma(k, x3, x);
    let arg = kb.b.ins().fmul(c, inner);
    let t = tanh(kb, arg);
    let one = kb.splat(1.0);
    let half = kb.splat(0.5);
    let s = kb.b.ins().fadd(t, one);
    let hx = kb.b.ins().fmul(x, half);
    kb.b.ins().fmul(hx, s)
}
