//! Numerically hard inputs, each run through the interpreter, generated code
//! compiled in memory (JIT) and an object file from `vitc build`.
//!
//! Expected values are computed here in f64 from the ONNX operator
//! definitions, or, for GELU, with Python's `math.erf` and `math.tanh` in
//! f64, so that every engine is checked against the specification and not
//! only against the other engines.

use vitc_tests::engines::{ALL_ENGINES, Engine, TestModel, assert_close};
use vitc_tests::{Dim, ModelBuilder, attr_float, attr_int, attr_string};

/// Runs `model` on `input` with every engine and checks each output.
fn check_all_engines(model: &ModelBuilder, input: &[f32], expected: &[f64], tolerance: f64) {
    let model = TestModel::new(model);
    for engine in ALL_ENGINES {
        let actual = model.run(engine, input);
        assert_close(engine, &actual, expected, tolerance);
    }
}

/// Softmax over the last axis in f64, with the maximum subtracted first.
fn softmax_rows(x: &[f32], cols: usize) -> Vec<f64> {
    x.chunks(cols)
        .flat_map(|row| {
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
            let exps: Vec<f64> = row.iter().map(|&v| (f64::from(v) - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            exps.into_iter().map(move |e| e / sum)
        })
        .collect()
}

fn softmax_model(rows: i64, cols: i64) -> ModelBuilder {
    let mut m = ModelBuilder::new(13);
    m.input("x", 1, &[Dim::Fixed(rows), Dim::Fixed(cols)]).node("Softmax", &["x"], &["y"], vec![attr_int("axis", -1)]).output("y");
    m
}

#[test]
fn softmax_huge_and_tiny_logits() {
    let input: Vec<f32> = vec![
        1000.0, 0.0, -1000.0, 5.0, 999.0, 1.0, 2.0, 3.0, // large spread
        -1e30, -1e30, -3e38, -2e30, -1e30, -1e30, -1e30, -1e30, // all very negative
        3e38, 3e38, -3e38, 0.0, 1.0, 2.0, 3e38, 3e38, // near f32::MAX
        88.0, 89.0, 90.0, 91.0, 92.0, 93.0, 94.0, 95.0, // exp overflows f32 without the max subtraction
    ];
    let expected = softmax_rows(&input, 8);
    assert!(expected.iter().all(|v| v.is_finite()), "the reference itself must be finite");
    check_all_engines(&softmax_model(4, 8), &input, &expected, 1e-5);
}

#[test]
fn softmax_row_of_negative_infinity_is_nan() {
    // ONNX Softmax is exp(x - max(x)) / sum; with every x = -inf, x - max
    // is -inf - (-inf) = NaN. The other row checks that NaN stays in its row.
    let input = vec![f32::NEG_INFINITY; 4].into_iter().chain([0.0, 1.0, 2.0, 3.0]).collect::<Vec<_>>();
    let mut expected = vec![f64::NAN; 4];
    expected.extend(softmax_rows(&input[4..], 4));
    check_all_engines(&softmax_model(2, 4), &input, &expected, 1e-6);
}

/// Attention probabilities times V: `softmax(scores + mask) @ v`, with the
/// scores as the model input. Generated code has no kernel for a MatMul of
/// two activations, so the scores stand in for `Q K^T`, which keeps the
/// masked Softmax and the weighted sum of V in generated code.
fn masked_attention_model(mask: &[f32], v: &[f32]) -> ModelBuilder {
    let mut m = ModelBuilder::new(13);
    m.input("scores", 1, &[Dim::Fixed(3), Dim::Fixed(4)])
        .init_f32("mask", &[3, 4], mask)
        .init_f32("v", &[4, 2], v)
        .node("Add", &["scores", "mask"], &["masked"], vec![])
        .node("Softmax", &["masked"], &["probs"], vec![attr_int("axis", -1)])
        .node("MatMul", &["probs", "v"], &["y"], vec![])
        .output("y");
    m
}

/// `softmax(scores + mask) @ v` in f64.
fn masked_attention_reference(scores: &[f32], mask: &[f32], v: &[f32]) -> Vec<f64> {
    let masked: Vec<f32> = scores.iter().zip(mask).map(|(s, m)| s + m).collect();
    let probs = softmax_rows(&masked, 4);
    probs
        .chunks(4)
        .flat_map(|p| (0..2).map(move |j| (0..4).map(|k| p[k] * f64::from(v[k * 2 + j])).sum::<f64>()))
        .collect()
}

const SCORES: [f32; 12] = [0.5, -1.0, 2.0, 0.25, 3.0, 1.0, -2.0, 0.0, 1.5, 1.5, -0.5, 4.0];
const V: [f32; 8] = [1.0, -1.0, 2.0, 0.5, -3.0, 4.0, 0.25, 8.0];

#[test]
fn fully_masked_row_with_float_min_is_uniform() {
    // PyTorch and Hugging Face exports mask with the lowest finite float.
    // Every score of row 1 then rounds to f32::MIN, so ONNX Softmax gives
    // equal weights and the row is the mean of V's rows.
    let min = f32::MIN;
    let mask = [0.0, min, 0.0, min, min, min, min, min, 0.0, 0.0, 0.0, 0.0];
    let expected = masked_attention_reference(&SCORES, &mask, &V);
    let mean_v0 = (1.0 + 2.0 - 3.0 + 0.25) / 4.0;
    assert!((expected[2] - mean_v0).abs() < 1e-12, "reference row 1 is the mean of V");
    check_all_engines(&masked_attention_model(&mask, &V), &SCORES, &expected, 1e-5);
}

#[test]
fn fully_masked_row_with_negative_infinity_is_nan() {
    // With -inf in the mask, ONNX semantics give NaN for the fully masked
    // row (see softmax_row_of_negative_infinity_is_nan); the partly masked
    // rows stay finite and ignore the masked keys.
    let inf = f32::NEG_INFINITY;
    let mask = [0.0, inf, 0.0, inf, inf, inf, inf, inf, 0.0, 0.0, 0.0, 0.0];
    let expected = masked_attention_reference(&SCORES, &mask, &V);
    assert!(expected[2].is_nan() && expected[3].is_nan(), "reference row 1 is NaN");
    assert!(expected[0].is_finite() && expected[4].is_finite(), "reference rows 0 and 2 are finite");
    check_all_engines(&masked_attention_model(&mask, &V), &SCORES, &expected, 1e-5);
}

fn layernorm_model(cols: i64, epsilon: f32) -> ModelBuilder {
    let mut m = ModelBuilder::new(17);
    let gamma: Vec<f32> = (0..cols).map(|i| 1.0 + i as f32 / 8.0).collect();
    let beta: Vec<f32> = (0..cols).map(|i| i as f32 / 4.0 - 1.0).collect();
    m.input("x", 1, &[Dim::Fixed(4), Dim::Fixed(cols)])
        .init_f32("gamma", &[cols], &gamma)
        .init_f32("beta", &[cols], &beta)
        .node("LayerNormalization", &["x", "gamma", "beta"], &["y"], vec![attr_float("epsilon", epsilon), attr_int("axis", -1)])
        .output("y");
    m
}

/// LayerNormalization in f64: `(x - mean) / sqrt(var + epsilon) * gamma + beta`.
fn layernorm_reference(x: &[f32], cols: usize, epsilon: f32) -> Vec<f64> {
    x.chunks(cols)
        .flat_map(|row| {
            let n = cols as f64;
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
            let denominator = (var + f64::from(epsilon)).sqrt();
            row.iter().enumerate().map(move |(i, &v)| {
                let gamma = 1.0 + i as f64 / 8.0;
                let beta = i as f64 / 4.0 - 1.0;
                (f64::from(v) - mean) / denominator * gamma + beta
            })
        })
        .collect()
}

#[test]
fn layernorm_huge_and_constant_rows() {
    let cols = 16;
    let mut input = Vec::new();
    // Row 0: magnitude 1e15; the squared deviations stay below f32::MAX.
    input.extend((0..cols).map(|i| (i as f32 - 7.5) * 1e15));
    // Row 1: a large offset with small spread (catastrophic cancellation
    // when the variance is computed as E[x^2] - E[x]^2 in f32).
    input.extend((0..cols).map(|i| 1e6 + (i % 4) as f32 * 0.25));
    // Row 2: a constant row, whose output is exactly beta.
    input.extend(std::iter::repeat_n(7.0f32, cols));
    // Row 3: a constant row near f32::MAX.
    input.extend(std::iter::repeat_n(3e38f32, cols));
    let expected = layernorm_reference(&input, cols, 1e-5);
    check_all_engines(&layernorm_model(cols as i64, 1e-5), &input, &expected, 2e-4);
}

#[test]
fn layernorm_epsilon_inside_square_root() {
    // The variance (2.5e-7) is far below epsilon (1e-2), so placing epsilon
    // outside the square root would give about 0.05 instead of 0.005.
    let cols = 8;
    let input: Vec<f32> = (0..4 * cols).map(|i| if i % 2 == 0 { 0.0 } else { 1e-3 }).collect();
    let expected = layernorm_reference(&input, cols, 1e-2);
    let first = (0.0 - 5e-4) / (2.5e-7f64 + 1e-2).sqrt() - 1.0;
    assert!((expected[0] - first).abs() < 1e-9, "reference puts epsilon inside the root");
    check_all_engines(&layernorm_model(cols as i64, 1e-2), &input, &expected, 1e-5);
}

const GELU_X: [f32; 12] = [-80.0, -10.0, -3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 10.0, 80.0];

/// GELU of GELU_X, erf form: 0.5 x (1 + erf(x / sqrt 2)), from Python's math.erf in f64.
const GELU_ERF: [f64; 12] = [
    0.0, 0.0, -0.00404969409489031, -0.15865525393145707, -0.15426876936299344, 0.0, 0.34573123063700656,
    0.8413447460685429, 1.9544997361036416, 2.99595030590511, 10.0, 80.0,
];

/// GELU of GELU_X, tanh form: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), from Python's math.tanh in f64.
const GELU_TANH: [f64; 12] = [
    0.0, 0.0, -0.0036373920817729943, -0.15880800939172324, -0.15428599017485606, 0.0, 0.34571400982514394,
    0.8411919906082768, 1.954597694087775, 2.996362607918227, 10.0, 80.0,
];

fn gelu_model(approximate: &str) -> ModelBuilder {
    let mut m = ModelBuilder::new(20);
    m.input("x", 1, &[Dim::Fixed(12)]).node("Gelu", &["x"], &["y"], vec![attr_string("approximate", approximate)]).output("y");
    m
}

#[test]
fn gelu_erf_form() {
    check_all_engines(&gelu_model("none"), &GELU_X, &GELU_ERF, 2e-6);
}

#[test]
fn gelu_tanh_form() {
    check_all_engines(&gelu_model("tanh"), &GELU_X, &GELU_TANH, 2e-6);
}

#[test]
fn gelu_forms_differ_measurably() {
    // At x = -3 the two forms differ by 4e-4, far above the 2e-6 tolerance
    // of the tests above, so a kernel that mixed them up would fail there.
    let gap = (GELU_ERF[2] - GELU_TANH[2]).abs();
    assert!(gap > 1e-4, "the erf and tanh forms differ by only {gap:e} at x = -3");
}

#[test]
fn zero_size_concat_operand() {
    // An empty [2, 0] constant concatenated with x leaves x unchanged.
    let mut m = ModelBuilder::new(13);
    m.input("x", 1, &[Dim::Fixed(2), Dim::Fixed(3)])
        .init_f32("empty", &[2, 0], &[])
        .node("Concat", &["empty", "x", "empty"], &["y"], vec![attr_int("axis", 1)])
        .output("y");
    let input = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let expected: Vec<f64> = input.iter().map(|&v| f64::from(v)).collect();
    check_all_engines(&m, &input, &expected, 0.0);
}

#[test]
fn zero_size_slice_feeds_concat() {
    // Slice [1:1] of axis 1 is empty; the Concat result is x again.
    let mut m = ModelBuilder::new(13);
    m.input("x", 1, &[Dim::Fixed(2), Dim::Fixed(3)])
        .init_i64("starts", &[1], &[1])
        .init_i64("ends", &[1], &[1])
        .init_i64("axes", &[1], &[1])
        .node("Slice", &["x", "starts", "ends", "axes"], &["nothing"], vec![])
        .node("Concat", &["x", "nothing"], &["y"], vec![attr_int("axis", 1)])
        .output("y");
    let input = [1.0, -2.0, 3.0, -4.0, 5.0, -6.0];
    let expected: Vec<f64> = input.iter().map(|&v| f64::from(v)).collect();
    check_all_engines(&m, &input, &expected, 0.0);
}

#[test]
fn float16_initializer_keeps_its_rounding() {
    // 0.1 and 1/3 are not float16 values; the weight must be the rounded
    // float16 value, widened to f32, not the f32 literal.
    let to_f16 = |v: f32| half::f16::from_f32(v);
    let weights = [to_f16(0.1), to_f16(1.0 / 3.0), to_f16(70000.0), to_f16(1e-8)];
    let mut m = ModelBuilder::new(13);
    m.input("x", 1, &[Dim::Fixed(4)])
        .initializer(onnx_protobuf::TensorProto {
            name: "w16".into(),
            dims: vec![4],
            data_type: 10,
            int32_data: weights.iter().map(|w| i32::from(w.to_bits())).collect(),
            ..Default::default()
        })
        .node("Cast", &["w16"], &["w"], vec![attr_int("to", 1)])
        .node("Add", &["x", "w"], &["y"], vec![])
        .output("y");
    let expected: Vec<f64> = weights.iter().map(|w| f64::from(w.to_f32())).collect();
    assert_eq!(expected[0], 0.0999755859375, "0.1 rounds to this float16 value");
    assert!(expected[2].is_infinite(), "70000 overflows float16");
    assert_eq!(expected[3], 0.0, "1e-8 underflows float16");
    check_all_engines(&m, &[0.0; 4], &expected, 0.0);
}

#[test]
fn constant_cast_chain_rounds_through_float16() {
    // w (f32) -> Cast f16 -> Cast f32 is folded at compile time, and the fold
    // must round to float16 instead of treating the pair as an identity.
    let w = [0.1f32, 1.0 / 3.0, 70000.0, 1e-8];
    let mut m = ModelBuilder::new(13);
    m.input("x", 1, &[Dim::Fixed(4)])
        .init_f32("w", &[4], &w)
        .node("Cast", &["w"], &["w16"], vec![attr_int("to", 10)])
        .node("Cast", &["w16"], &["w32"], vec![attr_int("to", 1)])
        .node("Add", &["x", "w32"], &["y"], vec![])
        .output("y");
    let expected: Vec<f64> = w.iter().map(|&v| f64::from(half::f16::from_f32(v).to_f32())).collect();
    check_all_engines(&m, &[0.0; 4], &expected, 0.0);
}

#[test]
fn runtime_cast_chain_is_kept() {
    // On a graph input the f32 -> f16 -> f32 pair rounds at run time. The
    // canonical graph must keep both Casts, and the interpreter must round.
    let mut m = ModelBuilder::new(13);
    m.input("x", 1, &[Dim::Fixed(4)])
        .node("Cast", &["x"], &["x16"], vec![attr_int("to", 10)])
        .node("Cast", &["x16"], &["y"], vec![attr_int("to", 1)])
        .output("y");
    let model = TestModel::new(&m);
    let casts = model.graph.node_ids().filter(|&n| matches!(model.graph.node(n).op, vitc::ir::Op::Cast { .. })).count();
    assert_eq!(casts, 2, "both Casts must survive canonicalization");

    let input = [0.1f32, 70000.0, 1e-8, -2.5];
    let expected: Vec<f64> = input.iter().map(|&v| f64::from(half::f16::from_f32(v).to_f32())).collect();
    let actual = model.run(Engine::Interpreter, &input);
    assert_close(Engine::Interpreter, &actual, &expected, 0.0);
}

#[test]
fn exp_near_the_f32_limits() {
    // e^x is finite up to x = 88.72 and subnormal below x = -87.33; the
    // generated exp scales by 2^n in two steps so that both ends hold.
    let input: Vec<f32> = vec![88.0, 88.5, 88.7, 88.72, 88.73, 89.0, 100.0, -87.0, -90.0, -100.0, -110.0, 0.0];
    let expected: Vec<f64> = input.iter().map(|&x| f64::from(f64::from(x).exp() as f32)).collect();
    assert!(expected[3].is_finite(), "the reference of e^88.72 is finite");
    assert!(expected[4].is_infinite(), "the reference of e^88.73 overflows");
    let mut m = ModelBuilder::new(13);
    m.input("x", 1, &[Dim::Fixed(input.len() as i64)]).node("Exp", &["x"], &["y"], vec![]).output("y");
    check_all_engines(&m, &input, &expected, 1e-5);
}
