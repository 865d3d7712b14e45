//! Every rule against central differences of the interpreter's kernel,
//! evaluated in f64: `<dx, v>` must match `d/dt <g, f(x + t v)>` at `t = 0`
//! for random `x`, `v` and cotangent `g`.

use ndarray::{ArrayD, IxDyn};
use rand_core::{Rng, SeedableRng};
use rand_xorshift::XorShiftRng;

use super::rules;
use crate::interp::eval_op;
use crate::ir::op::{
    BinaryOp, ConvAttrs, ConvTransposeAttrs, CoordinateTransform, GeluApprox, NearestMode, PadMode, ResizeAttrs,
    ResizeMode, UnaryOp,
};
use crate::ir::Op;
use crate::tensor::Tensor;

fn uniform(rng: &mut XorShiftRng, shape: &[usize], low: f32, high: f32) -> ArrayD<f32> {
    let values = (0..shape.iter().product::<usize>()).map(|_| low + (high - low) * (rng.next_u32() as f32 / u32::MAX as f32));
    ArrayD::from_shape_vec(IxDyn(shape), values.collect()).unwrap()
}

fn f32s(rng: &mut XorShiftRng, shape: &[usize]) -> Tensor {
    Tensor::F32(uniform(rng, shape, -1.0, 1.0))
}

fn ints(values: &[i64]) -> Tensor {
    Tensor::from_i64s(values)
}

/// `sum_o <g_o, op(operands)_o>` in f64, with `shift * direction` added to operand `slot`.
fn objective(op: &Op, operands: &[Option<Tensor>], grads: &[ArrayD<f32>], slot: usize, direction: &ArrayD<f32>, shift: f64) -> f64 {
    let widened: Vec<Option<Tensor>> = operands
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.as_ref().map(|t| match t {
                Tensor::F32(a) => {
                    let mut a = a.mapv(f64::from);
                    if i == slot {
                        a.zip_mut_with(direction, |x, &d| *x += shift * f64::from(d));
                    }
                    Tensor::F64(a)
                }
                other => other.clone(),
            })
        })
        .collect();
    let refs: Vec<Option<&Tensor>> = widened.iter().map(Option::as_ref).collect();
    let results = eval_op(op, &refs).unwrap();
    results.iter().zip(grads).map(|(r, g)| r.to_f64_vec().iter().zip(g.iter()).map(|(y, &g)| y * f64::from(g)).sum::<f64>()).sum()
}

/// Checks the gradient of every operand slot in `slots`.
fn check(op: Op, operands: Vec<Option<Tensor>>, slots: &[usize]) {
    let mut rng = XorShiftRng::seed_from_u64(7);
    let refs: Vec<Option<&Tensor>> = operands.iter().map(Option::as_ref).collect();
    let outputs = eval_op(&op, &refs).unwrap();
    let output_refs: Vec<&Tensor> = outputs.iter().collect();
    let grads: Vec<ArrayD<f32>> = outputs.iter().map(|o| uniform(&mut rng, o.shape(), -1.0, 1.0)).collect();
    let needed: Vec<bool> = (0..operands.len()).map(|i| slots.contains(&i)).collect();
    let got = rules::vjp(&op, &refs, &output_refs, grads.clone(), &needed).unwrap();
    for &slot in slots {
        let shape = operands[slot].as_ref().unwrap().shape().to_vec();
        let direction = uniform(&mut rng, &shape, -1.0, 1.0);
        let step = 1e-4;
        let numeric = (objective(&op, &operands, &grads, slot, &direction, step)
            - objective(&op, &operands, &grads, slot, &direction, -step))
            / (2.0 * step);
        let grad = got[slot].as_ref().unwrap_or_else(|| panic!("{}: no gradient for slot {slot}", op.name()));
        assert_eq!(grad.shape(), shape.as_slice(), "{}: gradient shape of slot {slot}", op.name());
        let analytic: f64 = grad.iter().zip(direction.iter()).map(|(&g, &d)| f64::from(g) * f64::from(d)).sum();
        let tolerance = 1e-3 * numeric.abs().max(1.0);
        assert!((analytic - numeric).abs() <= tolerance, "{} slot {slot}: analytic {analytic}, numeric {numeric}", op.name());
    }
}

#[test]
fn matrix_products() {
    let mut rng = XorShiftRng::seed_from_u64(1);
    let mut t = |shape: &[usize]| Some(f32s(&mut rng, shape));
    check(Op::Linear, vec![t(&[2, 3, 4]), t(&[5, 4]), t(&[5])], &[0, 1, 2]);
    check(Op::MatMul, vec![t(&[2, 3, 4]), t(&[4, 5])], &[0, 1]);
    check(Op::MatMul, vec![t(&[3, 4]), t(&[2, 4, 5])], &[0, 1]);
    check(Op::MatMul, vec![t(&[4]), t(&[4, 5])], &[0, 1]);
    check(Op::MatMul, vec![t(&[2, 1, 3, 4]), t(&[3, 4, 2])], &[0, 1]);
    let gemm = Op::Gemm { alpha: 0.5, beta: 2.0, trans_a: true, trans_b: true };
    check(gemm, vec![t(&[4, 3]), t(&[5, 4]), t(&[1, 5])], &[0, 1, 2]);
    check(Op::Attention { heads: 2, head_dim: 3, scale: 0.7 }, vec![t(&[2, 4, 6]), t(&[2, 5, 6]), t(&[2, 5, 6])], &[0, 1, 2]);
}

#[test]
fn elementwise() {
    let mut rng = XorShiftRng::seed_from_u64(2);
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Max, BinaryOp::Min] {
        check(Op::Binary(op), vec![Some(f32s(&mut rng, &[2, 3])), Some(f32s(&mut rng, &[3]))], &[0, 1]);
    }
    let positive = |rng: &mut XorShiftRng, shape: &[usize]| Some(Tensor::F32(uniform(rng, shape, 0.5, 2.0)));
    check(Op::Binary(BinaryOp::Div), vec![Some(f32s(&mut rng, &[2, 1, 3])), positive(&mut rng, &[4, 1])], &[0, 1]);
    check(Op::Binary(BinaryOp::Pow), vec![positive(&mut rng, &[2, 3]), Some(f32s(&mut rng, &[1]))], &[0, 1]);
    use UnaryOp::*;
    for op in [Relu, Sigmoid, Tanh, Erf, Exp, Neg, Abs, Sin, Cos, Softplus] {
        check(Op::Unary(op), vec![Some(f32s(&mut rng, &[3, 4]))], &[0]);
    }
    for op in [Sqrt, Log, Reciprocal] {
        check(Op::Unary(op), vec![positive(&mut rng, &[3, 4])], &[0]);
    }
    for approximate in [GeluApprox::None, GeluApprox::Tanh] {
        check(Op::Gelu { approximate }, vec![Some(Tensor::F32(uniform(&mut rng, &[3, 4], -3.0, 3.0)))], &[0]);
    }
    check(Op::LeakyRelu { alpha: 0.1 }, vec![Some(f32s(&mut rng, &[5]))], &[0]);
    check(Op::HardSigmoid { alpha: 0.4, beta: 0.5 }, vec![Some(Tensor::F32(uniform(&mut rng, &[6], -4.0, 4.0)))], &[0]);
    let bounds = (Some(Tensor::scalar_f32(-0.5)), Some(Tensor::scalar_f32(0.5)));
    check(Op::Clip, vec![Some(f32s(&mut rng, &[6])), bounds.0, bounds.1], &[0]);
    let condition = Tensor::Bool(ArrayD::from_shape_vec(IxDyn(&[3]), vec![true, false, true]).unwrap());
    check(Op::Where, vec![Some(condition), Some(f32s(&mut rng, &[2, 3])), Some(f32s(&mut rng, &[1]))], &[1, 2]);
}

#[test]
fn normalizations() {
    let mut rng = XorShiftRng::seed_from_u64(3);
    let mut t = |shape: &[usize]| Some(f32s(&mut rng, shape));
    for (axis, flatten_tail) in [(1, false), (-1, false), (1, true)] {
        check(Op::Softmax { axis, flatten_tail }, vec![t(&[2, 3, 4])], &[0]);
        check(Op::LogSoftmax { axis, flatten_tail }, vec![t(&[2, 3, 4])], &[0]);
    }
    check(Op::LayerNorm { axis: -1, epsilon: 1e-5 }, vec![t(&[2, 3, 4]), t(&[4]), t(&[4])], &[0, 1, 2]);
    check(Op::LayerNorm { axis: 1, epsilon: 1e-5 }, vec![t(&[2, 3, 4]), t(&[3, 4]), t(&[4])], &[0, 1, 2]);
    let variance = Some(Tensor::F32(uniform(&mut rng, &[3], 0.5, 2.0)));
    let mut t = |shape: &[usize]| Some(f32s(&mut rng, shape));
    use crate::ir::op::ReduceKind::*;
    for kind in [Mean, Sum, SumSquare, L1, L2, Max, Min, LogSumExp] {
        for (axes, keepdims) in [(Some(vec![1]), true), (Some(vec![-1, 0]), false), (None, false)] {
            check(Op::Reduce { kind, axes, keepdims, noop_with_empty_axes: false }, vec![t(&[2, 3, 4])], &[0]);
        }
    }
    check(Op::BatchNorm { epsilon: 1e-5 }, vec![t(&[2, 3, 4, 4]), t(&[3]), t(&[3]), t(&[3]), variance], &[0]);
}

#[test]
fn convolutions() {
    let mut rng = XorShiftRng::seed_from_u64(4);
    let mut t = |shape: &[usize]| Some(f32s(&mut rng, shape));
    let conv = |strides: usize, pads: usize, group: usize| {
        Op::Conv(ConvAttrs { kernel: vec![3, 3], strides: vec![strides; 2], pads: vec![pads; 4], dilations: vec![1, 1], group })
    };
    check(conv(2, 1, 1), vec![t(&[1, 2, 6, 5]), t(&[4, 2, 3, 3]), t(&[4])], &[0]);
    check(conv(1, 0, 2), vec![t(&[2, 4, 5, 5]), t(&[4, 2, 3, 3]), None], &[0]);
    let transpose = Op::ConvTranspose(ConvTransposeAttrs {
        kernel: vec![4, 4],
        strides: vec![2, 2],
        pads: vec![1, 1, 1, 1],
        dilations: vec![1, 1],
        output_padding: vec![1, 0],
        group: 1,
    });
    check(transpose, vec![t(&[1, 4, 3, 3]), t(&[4, 2, 4, 4]), t(&[2])], &[0]);
}

#[test]
fn resize() {
    let mut rng = XorShiftRng::seed_from_u64(5);
    for mode in [ResizeMode::Linear, ResizeMode::Cubic, ResizeMode::Nearest] {
        for coordinate_transform in [CoordinateTransform::HalfPixel, CoordinateTransform::AlignCorners] {
            let attrs = ResizeAttrs {
                mode,
                coordinate_transform,
                nearest_mode: NearestMode::RoundPreferFloor,
                cubic_coeff_a: -0.75,
                exclude_outside: false,
                extrapolation_value: 0.0,
            };
            let operands = vec![Some(f32s(&mut rng, &[1, 2, 3, 4])), None, None, Some(ints(&[1, 2, 5, 7]))];
            check(Op::Resize(attrs), operands, &[0]);
        }
    }
}

#[test]
fn data_movement() {
    let mut rng = XorShiftRng::seed_from_u64(6);
    let mut t = |shape: &[usize]| Some(f32s(&mut rng, shape));
    check(Op::Reshape { allowzero: false }, vec![t(&[2, 3, 4]), Some(ints(&[4, -1]))], &[0]);
    check(Op::Transpose { perm: vec![2, 0, 1] }, vec![t(&[2, 3, 4])], &[0]);
    check(Op::Flatten { axis: 1 }, vec![t(&[2, 3, 4])], &[0]);
    check(Op::Squeeze { axes: Some(vec![1]) }, vec![t(&[2, 1, 4])], &[0]);
    check(Op::Unsqueeze { axes: vec![0] }, vec![t(&[2, 4])], &[0]);
    check(Op::Expand, vec![t(&[3, 1]), Some(ints(&[2, 3, 4]))], &[0]);
    check(Op::Concat { axis: 1 }, vec![t(&[2, 3]), t(&[2, 1]), t(&[2, 2])], &[0, 1, 2]);
    check(Op::Split { axis: 0, sizes: vec![1, 3] }, vec![t(&[4, 2])], &[0]);
    let slice = vec![t(&[5, 6]), Some(ints(&[4, 1])), Some(ints(&[0, 6])), Some(ints(&[0, 1])), Some(ints(&[-2, 2]))];
    check(Op::Slice, slice, &[0]);
    check(Op::Gather { axis: 1 }, vec![t(&[3, 4]), Some(ints(&[0, 2, 2, -1]))], &[0]);
    check(Op::Tile, vec![t(&[2, 3]), Some(ints(&[2, 1]))], &[0]);
    for mode in [PadMode::Constant, PadMode::Reflect, PadMode::Edge] {
        check(Op::Pad { mode }, vec![t(&[3, 4]), Some(ints(&[1, 2, 2, 0]))], &[0]);
    }
    check(Op::Identity, vec![t(&[3])], &[0]);
}

/// Builds `x -> Relu -> middle -> Tanh`, where `middle` multiplies or takes
/// the remainder by 2 (Mod has no gradient rule).
fn small_graph(middle: BinaryOp) -> (crate::ir::Graph, crate::ir::ValueId, crate::ir::ValueId) {
    use crate::ir::{Fact, Graph};
    use crate::tensor::DType;
    let mut graph = Graph::new();
    let fact = Fact::new(DType::F32, vec![2, 3]);
    let x = graph.add_input("x", fact.clone());
    let relu = graph.add_simple(Op::Unary(UnaryOp::Relu), "relu", vec![Some(x)], fact.clone());
    let two = graph.add_constant("two", std::sync::Arc::new(Tensor::scalar_f32(2.0)));
    let mid = graph.add_simple(Op::Binary(middle), "middle", vec![Some(relu), Some(two)], fact.clone());
    let y = graph.add_simple(Op::Unary(UnaryOp::Tanh), "tanh", vec![Some(mid)], fact);
    graph.set_outputs(vec![y]);
    (graph, x, y)
}

#[test]
fn operator_without_rule_is_named_before_any_run() {
    let (graph, x, y) = small_graph(BinaryOp::Mod);
    let message = match super::Backward::new(&graph, &[x], y) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("Mod has no gradient rule"),
    };
    assert!(message.contains("'middle'"), "{message}");
    assert!(message.contains("Mod"), "{message}");
}

#[test]
fn chain_rule_through_a_graph() {
    let (graph, x, y) = small_graph(BinaryOp::Mul);
    let backward = super::Backward::new(&graph, &[x], y).unwrap();
    let input = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![-1.0, 0.5, 2.0, -0.25, 1.0, 0.1]).unwrap();
    let tape = backward.forward(&[(x, Tensor::F32(input.clone()))]).unwrap();
    let seed = ArrayD::from_elem(IxDyn(&[2, 3]), 1.0f32);
    let grad = backward.gradients(&tape, seed).unwrap().remove(0);
    for (&x, &g) in input.iter().zip(grad.iter()) {
        // d tanh(2 relu(x)) / dx = 2 (1 - tanh(2x)^2) for x > 0, else 0.
        let expected = if x > 0.0 { 2.0 * (1.0 - (2.0 * x).tanh().powi(2)) } else { 0.0 };
        assert!((g - expected).abs() < 1e-6, "x = {x}: gradient {g}, expected {expected}");
    }
}
