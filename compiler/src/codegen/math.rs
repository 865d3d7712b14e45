//! Vectorized elementary functions on F32X4, emitted inline.
//!
//! `exp` reduces the argument to `r = x - n ln 2` with `n = round(x / ln 2)`,
//! evaluates a degree-6 polynomial for `e^r` on [-ln2/2, ln2/2] and scales
//! by `2^n` through the exponent bits (relative error about 2e-7 on the
//! clamped range [-87.3, 88.7]). `erf` is a rational function fitted for
//! this crate (absolute error below 5e-7 in f32). `tanh` and the sigmoid are
//! written with `exp`. Scalars go through the same code in lane 0.

use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};

use super::builder::{F32X4, Kb};
use crate::lower::kernel::Activation;

/// 1.5 * 2^23: adding it to a float of magnitude below 2^22 rounds the sum
/// to an integer (half to even) held in the low mantissa bits.
const SHIFTER: f32 = 12_582_912.0;

/// `e^x` per lane.
pub fn exp(kb: &mut Kb, x: Value) -> Value {
    // Beyond these bounds f32 exp is inf or 0 anyway; the clamp keeps n
    // (below) within what the two-step scaling can represent.
    let hi = kb.splat(89.0);
    let lo = kb.splat(-104.0);
    let x = kb.min_v(x, hi);
    let x = kb.max_v(x, lo);

    // n = round(x * log2(e)); r = x - n * ln2 (ln2 split in two for accuracy).
    // Adding 1.5 * 2^23 rounds to an integer, which the sum's low mantissa
    // bits then hold: cheaper than `nearest` and a float-to-int conversion.
    let log2e = kb.splat(std::f32::consts::LOG2_E);
    let shifter = kb.splat(SHIFTER);
    let t = kb.b.ins().fma(x, log2e, shifter);
    let n = kb.b.ins().fsub(t, shifter);
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
    let t_bits = kb.b.ins().bitcast(types::I32X4, MemFlagsData::new(), t);
    let shifter_bits = kb.b.ins().iconst(types::I32, i64::from(SHIFTER.to_bits()));
    let shifter_bits = kb.b.ins().splat(types::I32X4, shifter_bits);
    let ni = kb.b.ins().isub(t_bits, shifter_bits);
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

/// Returns `erf(x)` per lane, as `x P(x^2) / Q(x^2)` on `x` clamped to
/// [-4, 4], beyond which erf is 1 in f32 within 2e-8. The rational function
/// was fitted for this kernel by weighted least squares on [0, 4], iterated
/// towards the minimax error. Its absolute error is 5.4e-8 in f64 and
/// 4.4e-7 in an f32 evaluation. It needs no `exp`, so GELU takes roughly
/// half the instructions of the Abramowitz-Stegun form used before.
pub fn erf(kb: &mut Kb, x: Value) -> Value {
    const P: [f32; 7] = [1.128_378_7, 0.213_940_76, 0.052_432_94, 0.004_292_884, 1.555_327_2e-4, -1.990_306_3e-6, 1.921_730_8e-8];
    const Q: [f32; 5] = [1.0, 0.522_927_7, 0.120_797_99, 0.015_550_75, 0.001_097_997];
    let hi = kb.splat(4.0);
    let lo = kb.splat(-4.0);
    let x = kb.min_v(x, hi);
    let x = kb.max_v(x, lo);
    let t = kb.b.ins().fmul(x, x);
    let p = horner(kb, &P, t);
    let q = horner(kb, &Q, t);
    let xp = kb.b.ins().fmul(x, p);
    let r = kb.b.ins().fdiv(xp, q);
    // Near the clamp the f32 evaluation overshoots 1 by up to 4e-7, which
    // would make GELU of a large negative x a small positive number
    // instead of 0.
    let one = kb.splat(1.0);
    let minus_one = kb.splat(-1.0);
    let r = kb.min_v(r, one);
    kb.max_v(r, minus_one)
}

/// Evaluates `c[0] + c[1] t + c[2] t^2 + ...` per lane by Horner's rule
/// with fused multiply-adds.
fn horner(kb: &mut Kb, coefficients: &[f32], t: Value) -> Value {
    let (&last, rest) = coefficients.split_last().expect("at least one coefficient");
    let mut acc = kb.splat(last);
    for &c in rest.iter().rev() {
        let cv = kb.splat(c);
        acc = kb.b.ins().fma(acc, t, cv);
    }
    acc
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

/// Applies a GEMM epilogue's activation per lane.
pub fn activation(kb: &mut Kb, activation: Activation, x: Value) -> Value {
    match activation {
        Activation::None => x,
        Activation::Gelu => gelu(kb, x),
        Activation::GeluTanh => gelu_tanh(kb, x),
    }
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
