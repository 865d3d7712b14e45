//! Fusion of decomposed GELU into `Gelu`.
//!
//! Two forms are recognized, each with any association of the final
//! products (`x * e * 0.5`, `(x * 0.5) * e`, `x * (e * 0.5)`):
//!
//! ```text
//! erf:  e = Add(Erf(Div(x, sqrt(2)) or Mul(x, 1/sqrt(2))), 1)
//! tanh: e = Add(Tanh(Mul(sqrt(2/pi), Add(x, Mul(0.044715, Pow(x, 3) or x*x*x)))), 1)
//! out = 0.5 * x * e
//! ```
//!
//! Every constant must equal its exact value to f32 precision (relative
//! 1e-6), so a GELU-like function with other coefficients is not fused.
//! Intermediate values must have no other users.

use std::f64::consts::{FRAC_1_SQRT_2, PI, SQRT_2};

use super::Pass;
use super::pattern::{binary, is_const_close, operands2, other_operand, producer_if, result, single_use};
use crate::error::Result;
use crate::ir::op::{BinaryOp, GeluApprox, UnaryOp};
use crate::ir::{Fact, Graph, NodeId, Op, ValueId};

pub struct FuseGelu;

impl Pass for FuseGelu {
    fn name(&self) -> &'static str {
        "fuse-gelu"
    }

    fn run(&self, graph: &mut Graph) -> Result<usize> {
        let mut fused = 0;
        for node in graph.topo_order() {
            if !graph.contains_node(node) {
                continue;
            }
            let found = match graph.node(node).op {
                Op::Unary(UnaryOp::Erf) => match_erf(graph, node).map(|x| (x, GeluApprox::None)),
                Op::Unary(UnaryOp::Tanh) => match_tanh(graph, node).map(|x| (x, GeluApprox::Tanh)),
                _ => None,
            };
            let Some((x, approximate)) = found else { continue };
            let Some(out) = match_tail(graph, result(graph, node), x) else { continue };
            let fact = Fact::new(graph.fact(x).dtype, graph.fact(x).shape.clone());
            if graph.fact(out).shape != fact.shape {
                continue;
            }
            let name = graph.node(node).name.trim_end_matches("/Erf").trim_end_matches("/Tanh").to_string();
            let gelu = graph.add_simple(Op::Gelu { approximate }, name, vec![Some(x)], fact);
            graph.replace_all_uses(out, gelu);
            fused += 1;
        }
        graph.remove_dead_nodes();
        Ok(fused)
    }
}

/// `Erf(x / sqrt 2)`: returns `x`.
fn match_erf(graph: &Graph, erf: NodeId) -> Option<ValueId> {
    let arg = graph.node(erf).inputs[0]?;
    if !single_use(graph, arg) {
        return None;
    }
    if let Some(div) = binary(graph, arg, BinaryOp::Div) {
        let (x, c) = operands2(graph, div)?;
        return is_const_close(graph, c, SQRT_2).then_some(x);
    }
    let mul = binary(graph, arg, BinaryOp::Mul)?;
    let (a, b) = operands2(graph, mul)?;
    if is_const_close(graph, b, FRAC_1_SQRT_2) {
        Some(a)
    } else if is_const_close(graph, a, FRAC_1_SQRT_2) {
        Some(b)
    } else {
        None
    }
}

/// `Tanh(sqrt(2/pi) * (x + 0.044715 x^3))`: returns `x`.
fn match_tanh(graph: &Graph, tanh: NodeId) -> Option<ValueId> {
    let arg = graph.node(tanh).inputs[0]?;
    let outer = binary(graph, arg, BinaryOp::Mul)?;
    let (a, b) = operands2(graph, outer)?;
    let sqrt_2_over_pi = (2.0 / PI).sqrt();
    let inner = if is_const_close(graph, a, sqrt_2_over_pi) {
        b
    } else if is_const_close(graph, b, sqrt_2_over_pi) {
        a
    } else {
        return None;
    };
    let add = binary(graph, inner, BinaryOp::Add)?;
    let (p, q) = operands2(graph, add)?;
    for (x, cubic) in [(p, q), (q, p)] {
        if let Some(scaled) = binary(graph, cubic, BinaryOp::Mul) {
            let Some(cube) = [0.044715].iter().find_map(|&c| {
                let (s, t) = operands2(graph, scaled)?;
                if is_const_close(graph, s, c) {
                    Some(t)
                } else if is_const_close(graph, t, c) {
                    Some(s)
                } else {
                    None
                }
            }) else {
                continue;
            };
            let single = [arg, inner, cubic, cube].iter().all(|&v| single_use(graph, v));
            if single && is_cube_of(graph, cube, x) {
                return Some(x);
            }
        }
    }
    None
}

/// Whether `v` is `x^3`, as `Pow(x, 3)`, `Mul(Mul(x, x), x)` or `Mul(x, Mul(x, x))`.
fn is_cube_of(graph: &Graph, v: ValueId, x: ValueId) -> bool {
    if let Some(pow) = binary(graph, v, BinaryOp::Pow) {
        return operands2(graph, pow).is_some_and(|(base, e)| base == x && is_const_close(graph, e, 3.0));
    }
    let Some(mul) = binary(graph, v, BinaryOp::Mul) else { return false };
    let Some(square) = other_operand(graph, mul, x) else { return false };
    let Some(sq) = binary(graph, square, BinaryOp::Mul) else { return false };
    single_use(graph, square) && operands2(graph, sq) == Some((x, x))
}

/// Matches `0.5 * x * e` where `e = Add(activation, 1)`; returns the final value.
fn match_tail(graph: &Graph, activation: ValueId, x: ValueId) -> Option<ValueId> {
    let sole_user = |v: ValueId, kind: BinaryOp| -> Option<NodeId> {
        if !single_use(graph, v) {
            return None;
        }
        let (user, _) = graph.users(v)[0];
        (graph.node(user).op == Op::Binary(kind)).then_some(user)
    };
    let plus_one = sole_user(activation, BinaryOp::Add)?;
    if !is_const_close(graph, other_operand(graph, plus_one, activation)?, 1.0) {
        return None;
    }
    let e = result(graph, plus_one);
    let m1 = sole_user(e, BinaryOp::Mul)?;
    let other = other_operand(graph, m1, e)?;

    // (x * e) * 0.5
    if other == x {
        let m2 = sole_user(result(graph, m1), BinaryOp::Mul)?;
        return is_const_close(graph, other_operand(graph, m2, result(graph, m1))?, 0.5).then(|| result(graph, m2));
    }
    // (e * 0.5) * x
    if is_const_close(graph, other, 0.5) {
        let m2 = sole_user(result(graph, m1), BinaryOp::Mul)?;
        return (other_operand(graph, m2, result(graph, m1))? == x).then(|| result(graph, m2));
    }
    // (x * 0.5) * e
    let half = producer_if(graph, other, |op| *op == Op::Binary(BinaryOp::Mul))?;
    let half_x = other_operand(graph, half, x)?;
    (single_use(graph, other) && is_const_close(graph, half_x, 0.5)).then(|| result(graph, m1))
}
