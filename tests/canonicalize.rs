//! Canonicalization on small hand-made graphs: each real pattern fuses, each
//! lookalike stays as it was, and in every case the canonical graph computes
//! what the imported graph computes. The printed IR is snapshot-tested.

use vitc::interp;
use vitc::ir::printer::print_graph;
use vitc::ir::summary::Summary;
use vitc::ir::{Graph, Op};
use vitc::onnx::{ImportOptions, OnnxModel, import_model};
use vitc::passes::PassManager;
use vitc_tests::{Dim, ModelBuilder, attr_int, attr_ints, max_abs_diff, random_tensor};

const F32: i32 = 1;

/// Imports `model`, canonicalizes it, checks that both graphs give the same
/// output on a random input, and returns the canonical graph.
fn canonicalize(model: &ModelBuilder) -> Graph {
    let dir = tempfile::tempdir().unwrap();
    let path = model.write(&dir.path().join("model.onnx"));
    let onnx = OnnxModel::load(&path).unwrap();
    let imported = import_model(&onnx, &ImportOptions::default()).unwrap();
    let mut canonical = imported.clone();
    PassManager::canonicalize().run(&mut canonical).unwrap();

    let input = imported.inputs()[0];
    let x = random_tensor(&imported.fact(input).shape, 7);
    let before = interp::run(&imported, &[(input, x.clone())]).unwrap();
    let after = interp::run(&canonical, &[(canonical.inputs()[0], x)]).unwrap();
    let diff = max_abs_diff(&before[0], &after[0]);
    assert!(diff <= 1e-5, "canonicalization changed the output by {diff}");
    canonical
}

fn count(graph: &Graph, name: &str) -> usize {
    Summary::of(graph).op_counts.get(name).copied().unwrap_or(0)
}

fn has_op(graph: &Graph, pred: impl Fn(&Op) -> bool) -> bool {
    graph.node_ids().any(|n| pred(&graph.node(n).op))
}

/// Decomposed LayerNorm over the last axis of `[1, 8, 8]`, as PyTorch exports it.
fn layernorm_model(mean_axes: &[i64], keepdims: i64, exponent: f32, scale_dims: &[i64]) -> ModelBuilder {
    let mut m = ModelBuilder::new(14);
    let scale_len: i64 = scale_dims.iter().product();
    m.input("x", F32, &[Dim::Fixed(1), Dim::Fixed(8), Dim::Fixed(8)])
        .init_f32("two", &[], &[exponent])
        .init_f32("eps", &[], &[1e-6])
        .init_f32("gamma", scale_dims, &(0..scale_len).map(|i| 0.5 + i as f32 * 0.01).collect::<Vec<_>>())
        .init_f32("beta", &[8], &(0..8).map(|i| i as f32 * -0.1).collect::<Vec<_>>())
        .node("ReduceMean", &["x"], &["m"], vec![attr_ints("axes", mean_axes), attr_int("keepdims", keepdims)])
        .node("Sub", &["x", "m"], &["d"], vec![])
        .node("Pow", &["d", "two"], &["d2"], vec![])
        .node("ReduceMean", &["d2"], &["v"], vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)])
        .node("Add", &["v", "eps"], &["ve"], vec![])
        .node("Sqrt", &["ve"], &["s"], vec![])
        .node("Div", &["d", "s"], &["n"], vec![])
        .node("Mul", &["n", "gamma"], &["g"], vec![])
        .node("Add", &["g", "beta"], &["y"], vec![])
        .output("y");
    m
}

#[test]
fn layernorm_fuses() {
    let g = canonicalize(&layernorm_model(&[-1], 1, 2.0, &[8]));
    assert_eq!(count(&g, "LayerNorm"), 1);
    assert_eq!(count(&g, "ReduceMean"), 0);
    insta::assert_snapshot!(print_graph(&g));
}

#[test]
fn layernorm_other_axis_stays() {
    let g = canonicalize(&layernorm_model(&[1], 1, 2.0, &[8]));
    assert_eq!(count(&g, "LayerNorm"), 0);
    assert_eq!(count(&g, "ReduceMean"), 2);
}

#[test]
fn layernorm_keepdims0_stays() {
    let g = canonicalize(&layernorm_model(&[-1], 0, 2.0, &[8]));
    assert_eq!(count(&g, "LayerNorm"), 0);
    insta::assert_snapshot!(print_graph(&g));
}

#[test]
fn layernorm_cubed_stays() {
    let g = canonicalize(&layernorm_model(&[-1], 1, 3.0, &[8]));
    assert_eq!(count(&g, "LayerNorm"), 0);
    assert_eq!(count(&g, "Pow"), 1);
}

#[test]
fn layernorm_full_scale_keeps_mul() {
    // A per-element [8, 8] scale is not a LayerNorm weight: the normalization
    // fuses, the Mul stays, and the bias Add stays behind it.
    let g = canonicalize(&layernorm_model(&[-1], 1, 2.0, &[8, 8]));
    assert_eq!(count(&g, "LayerNorm"), 1);
    assert_eq!(count(&g, "Mul"), 1);
    assert_eq!(count(&g, "Add"), 1);
    insta::assert_snapshot!(print_graph(&g));
}

/// `0.5 * x * (1 + erf(x / c))` on `[2, 16]`.
fn gelu_erf_model(divisor: f32) -> ModelBuilder {
    let mut m = ModelBuilder::new(14);
    m.input("x", F32, &[Dim::Fixed(2), Dim::Fixed(16)])
        .init_f32("c", &[], &[divisor])
        .init_f32("one", &[], &[1.0])
        .init_f32("half", &[], &[0.5])
        .node("Div", &["x", "c"], &["a"], vec![])
        .node("Erf", &["a"], &["e"], vec![])
        .node("Add", &["e", "one"], &["e1"], vec![])
        .node("Mul", &["x", "e1"], &["p"], vec![])
        .node("Mul", &["p", "half"], &["y"], vec![])
        .output("y");
    m
}

#[test]
fn gelu_erf_fuses() {
    let g = canonicalize(&gelu_erf_model(std::f32::consts::SQRT_2));
    assert_eq!(count(&g, "Gelu"), 1);
    assert_eq!(count(&g, "Erf"), 0);
    insta::assert_snapshot!(print_graph(&g));
}

#[test]
fn gelu_other_constant_stays() {
    let g = canonicalize(&gelu_erf_model(1.5));
    assert_eq!(count(&g, "Gelu"), 0);
    assert_eq!(count(&g, "Erf"), 1);
}

#[test]
fn gelu_tanh_fuses() {
    let mut m = ModelBuilder::new(14);
    m.input("x", F32, &[Dim::Fixed(2), Dim::Fixed(16)])
        .init_f32("three", &[], &[3.0])
        .init_f32("k", &[], &[0.044715])
        .init_f32("c", &[], &[(2.0f64 / std::f64::consts::PI).sqrt() as f32])
        .init_f32("one", &[], &[1.0])
        .init_f32("half", &[], &[0.5])
        .node("Pow", &["x", "three"], &["x3"], vec![])
        .node("Mul", &["k", "x3"], &["kx3"], vec![])
        .node("Add", &["x", "kx3"], &["inner"], vec![])
        .node("Mul", &["c", "inner"], &["arg"], vec![])
        .node("Tanh", &["arg"], &["t"], vec![])
        .node("Add", &["t", "one"], &["t1"], vec![])
        .node("Mul", &["x", "half"], &["hx"], vec![])
        .node("Mul", &["hx", "t1"], &["y"], vec![])
        .output("y");
    let g = canonicalize(&m);
    assert!(has_op(&g, |op| matches!(op, Op::Gelu { approximate: vitc::ir::op::GeluApprox::Tanh })));
    assert_eq!(count(&g, "Tanh"), 0);
}

fn linear_model(bias_dims: &[i64]) -> ModelBuilder {
    let mut m = ModelBuilder::new(14);
    let bias_len: i64 = bias_dims.iter().product();
    m.input("x", F32, &[Dim::Symbolic("batch"), Dim::Fixed(4), Dim::Fixed(8)])
        .init_f32("w", &[8, 16], &(0..128).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>())
        .init_f32("b", bias_dims, &(0..bias_len).map(|i| i as f32 * 0.1).collect::<Vec<_>>())
        .node("MatMul", &["x", "w"], &["p"], vec![])
        .node("Add", &["b", "p"], &["y"], vec![])
        .output("y");
    m
}

#[test]
fn linear_fuses_bias_first() {
    let g = canonicalize(&linear_model(&[16]));
    assert_eq!(count(&g, "Linear"), 1);
    assert_eq!(count(&g, "Add"), 0);
    insta::assert_snapshot!(print_graph(&g));
}

#[test]
fn linear_full_bias_stays_add() {
    let g = canonicalize(&linear_model(&[4, 16]));
    assert_eq!(count(&g, "Linear"), 1);
    assert_eq!(count(&g, "Add"), 1);
}

#[test]
fn gemm_trans_b_fuses() {
    let mut m = ModelBuilder::new(13);
    m.input("x", F32, &[Dim::Fixed(3), Dim::Fixed(8)])
        .init_f32("w", &[5, 8], &(0..40).map(|i| (i as f32).cos()).collect::<Vec<_>>())
        .init_f32("b", &[5], &[0.1, 0.2, 0.3, 0.4, 0.5])
        .node("Gemm", &["x", "w", "b"], &["y"], vec![attr_int("transB", 1)])
        .output("y");
    let g = canonicalize(&m);
    assert_eq!(count(&g, "Linear"), 1);
    assert_eq!(count(&g, "Gemm"), 0);
}

/// Hugging Face-style self-attention on `[1, 5, 8]` with 2 heads of 4.
fn attention_model(softmax_axis: i64, masked: bool) -> ModelBuilder {
    let mut m = ModelBuilder::new(14);
    let weight = |seed: f32| (0..64).map(|i| ((i as f32 + seed) * 0.13).sin() * 0.3).collect::<Vec<_>>();
    m.input("x", F32, &[Dim::Fixed(1), Dim::Fixed(5), Dim::Fixed(8)])
        .init_f32("wq", &[8, 8], &weight(1.0))
        .init_f32("wk", &[8, 8], &weight(2.0))
        .init_f32("wv", &[8, 8], &weight(3.0))
        .init_f32("wo", &[8, 8], &weight(4.0))
        .init_f32("bq", &[8], &[0.1; 8])
        .init_i64("heads_shape", &[4], &[1, 5, 2, 4])
        .init_i64("merged_shape", &[3], &[1, 5, 8])
        .init_f32("scale", &[], &[0.5])
        .init_f32("mask", &[1, 1, 5, 5], &[0.0; 25])
        .node("MatMul", &["x", "wq"], &["q0"], vec![])
        .node("Add", &["q0", "bq"], &["q"], vec![])
        .node("MatMul", &["x", "wk"], &["k"], vec![])
        .node("MatMul", &["x", "wv"], &["v"], vec![])
        .node("Reshape", &["q", "heads_shape"], &["qr"], vec![])
        .node("Reshape", &["k", "heads_shape"], &["kr"], vec![])
        .node("Reshape", &["v", "heads_shape"], &["vr"], vec![])
        .node("Transpose", &["qr"], &["qh"], vec![attr_ints("perm", &[0, 2, 1, 3])])
        .node("Transpose", &["kr"], &["kt"], vec![attr_ints("perm", &[0, 2, 3, 1])])
        .node("Transpose", &["vr"], &["vh"], vec![attr_ints("perm", &[0, 2, 1, 3])])
        .node("MatMul", &["qh", "kt"], &["s0"], vec![])
        .node("Mul", &["s0", "scale"], &["s1"], vec![]);
    if masked {
        m.node("Add", &["s1", "mask"], &["s"], vec![]);
    } else {
        m.node("Identity", &["s1"], &["s"], vec![]);
    }
    m.node("Softmax", &["s"], &["p"], vec![attr_int("axis", softmax_axis)])
        .node("MatMul", &["p", "vh"], &["c"], vec![])
        .node("Transpose", &["c"], &["ct"], vec![attr_ints("perm", &[0, 2, 1, 3])])
        .node("Reshape", &["ct", "merged_shape"], &["cm"], vec![])
        .node("MatMul", &["cm", "wo"], &["y"], vec![])
        .output("y");
    m
}

#[test]
fn attention_fuses() {
    let g = canonicalize(&attention_model(-1, false));
    assert_eq!(count(&g, "Attention"), 1);
    assert_eq!(count(&g, "Linear"), 4);
    assert_eq!(count(&g, "Softmax"), 0);
    insta::assert_snapshot!(print_graph(&g));
}

#[test]
fn attention_with_mask_stays() {
    let g = canonicalize(&attention_model(-1, true));
    assert_eq!(count(&g, "Attention"), 0);
    assert_eq!(count(&g, "Softmax"), 1);
}

#[test]
fn attention_softmax_over_queries_stays() {
    // Normalizing over the query axis (axis 2) is a valid graph, but not attention.
    let g = canonicalize(&attention_model(2, false));
    assert_eq!(count(&g, "Attention"), 0);
    assert_eq!(count(&g, "Softmax"), 1);
}

/// LayerNorm over the last axis of `[1, 8, 8]` with epsilon added after the
/// square root: `(x - mean) / (sqrt(var) + eps)`, which is not LayerNorm.
#[test]
fn layernorm_epsilon_outside_sqrt_stays() {
    let mut m = ModelBuilder::new(14);
    m.input("x", F32, &[Dim::Fixed(1), Dim::Fixed(8), Dim::Fixed(8)])
        .init_f32("two", &[], &[2.0])
        .init_f32("eps", &[], &[1e-2])
        .node("ReduceMean", &["x"], &["m"], vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)])
        .node("Sub", &["x", "m"], &["d"], vec![])
        .node("Pow", &["d", "two"], &["d2"], vec![])
        .node("ReduceMean", &["d2"], &["v"], vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)])
        .node("Sqrt", &["v"], &["s"], vec![])
        .node("Add", &["s", "eps"], &["se"], vec![])
        .node("Div", &["d", "se"], &["y"], vec![])
        .output("y");
    let g = canonicalize(&m);
    assert_eq!(count(&g, "LayerNorm"), 0);
    assert_eq!(count(&g, "Sqrt"), 1);
}

#[test]
fn layernorm_variance_over_other_axis_stays() {
    // The mean is over the last axis but the variance over axis 1.
    let mut m = ModelBuilder::new(14);
    m.input("x", F32, &[Dim::Fixed(1), Dim::Fixed(8), Dim::Fixed(8)])
        .init_f32("two", &[], &[2.0])
        .init_f32("eps", &[], &[1e-6])
        .node("ReduceMean", &["x"], &["m"], vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)])
        .node("Sub", &["x", "m"], &["d"], vec![])
        .node("Pow", &["d", "two"], &["d2"], vec![])
        .node("ReduceMean", &["d2"], &["v"], vec![attr_ints("axes", &[1]), attr_int("keepdims", 1)])
        .node("Add", &["v", "eps"], &["ve"], vec![])
        .node("Sqrt", &["ve"], &["s"], vec![])
        .node("Div", &["d", "s"], &["y"], vec![])
        .output("y");
    let g = canonicalize(&m);
    assert_eq!(count(&g, "LayerNorm"), 0);
    assert_eq!(count(&g, "ReduceMean"), 2);
}

#[test]
fn layernorm_per_row_bias_keeps_add() {
    // A [8, 1] beta adds one value per row, not per normalized element, so
    // it cannot become the LayerNorm bias.
    let mut m = layernorm_model(&[-1], 1, 2.0, &[8]);
    m.init_f32("beta_rows", &[8, 1], &(0..8).map(|i| i as f32 * 0.3).collect::<Vec<_>>())
        .node("Add", &["g", "beta_rows"], &["z"], vec![])
        .output("z");
    let g = canonicalize(&m);
    assert!(has_op(&g, |op| *op == Op::Binary(vitc::ir::op::BinaryOp::Add)), "the per-row Add must stay");
}

/// `x * (1 + erf(x / sqrt 2))`, optionally times 0.5, where the outer
/// factor is `outer` (usually `x`).
fn gelu_erf_variant(outer_is_x: bool, with_half: bool) -> ModelBuilder {
    let mut m = ModelBuilder::new(14);
    m.input("x", F32, &[Dim::Fixed(2), Dim::Fixed(16)])
        .init_f32("c", &[], &[std::f32::consts::SQRT_2])
        .init_f32("one", &[], &[1.0])
        .init_f32("half", &[], &[0.5])
        .node("Div", &["x", "c"], &["a"], vec![])
        .node("Erf", &["a"], &["e"], vec![])
        .node("Add", &["e", "one"], &["e1"], vec![])
        .node("Add", &["x", "one"], &["x_plus_one"], vec![]);
    let outer = if outer_is_x { "x" } else { "x_plus_one" };
    if with_half {
        m.node("Mul", &[outer, "e1"], &["p"], vec![]).node("Mul", &["p", "half"], &["y"], vec![]);
    } else {
        m.node("Mul", &[outer, "e1"], &["y"], vec![]);
    }
    m.output("y");
    m
}

#[test]
fn gelu_without_half_stays() {
    let g = canonicalize(&gelu_erf_variant(true, false));
    assert_eq!(count(&g, "Gelu"), 0);
    assert_eq!(count(&g, "Erf"), 1);
}

#[test]
fn gelu_of_other_value_stays() {
    // The erf term is of x but multiplies x + 1.
    let g = canonicalize(&gelu_erf_variant(false, true));
    assert_eq!(count(&g, "Gelu"), 0);
    assert_eq!(count(&g, "Erf"), 1);
}

#[test]
fn gelu_tanh_other_coefficient_stays() {
    // 0.044 instead of 0.044715 in the cubic term.
    let mut m = ModelBuilder::new(14);
    m.input("x", F32, &[Dim::Fixed(2), Dim::Fixed(16)])
        .init_f32("three", &[], &[3.0])
        .init_f32("k", &[], &[0.044])
        .init_f32("c", &[], &[(2.0f64 / std::f64::consts::PI).sqrt() as f32])
        .init_f32("one", &[], &[1.0])
        .init_f32("half", &[], &[0.5])
        .node("Pow", &["x", "three"], &["x3"], vec![])
        .node("Mul", &["k", "x3"], &["kx3"], vec![])
        .node("Add", &["x", "kx3"], &["inner"], vec![])
        .node("Mul", &["c", "inner"], &["arg"], vec![])
        .node("Tanh", &["arg"], &["t"], vec![])
        .node("Add", &["t", "one"], &["t1"], vec![])
        .node("Mul", &["x", "half"], &["hx"], vec![])
        .node("Mul", &["hx", "t1"], &["y"], vec![])
        .output("y");
    let g = canonicalize(&m);
    assert_eq!(count(&g, "Gelu"), 0);
    assert_eq!(count(&g, "Tanh"), 1);
}

/// Self-attention as in [`attention_model`], but with the scale applied
/// after the Softmax (`scale_after_softmax`) or the heads merged with the
/// permutation `merge_perm` instead of `[0, 2, 1, 3]`.
fn attention_lookalike(scale_after_softmax: bool, merge_perm: &[i64]) -> ModelBuilder {
    let mut m = ModelBuilder::new(14);
    let weight = |seed: f32| (0..64).map(|i| ((i as f32 + seed) * 0.13).sin() * 0.3).collect::<Vec<_>>();
    m.input("x", F32, &[Dim::Fixed(1), Dim::Fixed(5), Dim::Fixed(8)])
        .init_f32("wq", &[8, 8], &weight(1.0))
        .init_f32("wk", &[8, 8], &weight(2.0))
        .init_f32("wv", &[8, 8], &weight(3.0))
        .init_i64("heads_shape", &[4], &[1, 5, 2, 4])
        .init_i64("merged_shape", &[3], &[1, 5, 8])
        .init_f32("scale", &[], &[0.5])
        .node("MatMul", &["x", "wq"], &["q"], vec![])
        .node("MatMul", &["x", "wk"], &["k"], vec![])
        .node("MatMul", &["x", "wv"], &["v"], vec![])
        .node("Reshape", &["q", "heads_shape"], &["qr"], vec![])
        .node("Reshape", &["k", "heads_shape"], &["kr"], vec![])
        .node("Reshape", &["v", "heads_shape"], &["vr"], vec![])
        .node("Transpose", &["qr"], &["qh"], vec![attr_ints("perm", &[0, 2, 1, 3])])
        .node("Transpose", &["kr"], &["kt"], vec![attr_ints("perm", &[0, 2, 3, 1])])
        .node("Transpose", &["vr"], &["vh"], vec![attr_ints("perm", &[0, 2, 1, 3])])
        .node("MatMul", &["qh", "kt"], &["s0"], vec![]);
    if scale_after_softmax {
        m.node("Softmax", &["s0"], &["p0"], vec![attr_int("axis", -1)]).node("Mul", &["p0", "scale"], &["p"], vec![]);
    } else {
        m.node("Mul", &["s0", "scale"], &["s"], vec![]).node("Softmax", &["s"], &["p"], vec![attr_int("axis", -1)]);
    }
    m.node("MatMul", &["p", "vh"], &["c"], vec![])
        .node("Transpose", &["c"], &["ct"], vec![attr_ints("perm", merge_perm)])
        .node("Reshape", &["ct", "merged_shape"], &["y"], vec![])
        .output("y");
    m
}

#[test]
fn attention_lookalike_control_fuses() {
    // The builder's unmodified form is attention, so the two tests below
    // fail only because of their one change.
    let g = canonicalize(&attention_lookalike(false, &[0, 2, 1, 3]));
    assert_eq!(count(&g, "Attention"), 1);
}

#[test]
fn attention_scale_after_softmax_stays() {
    let g = canonicalize(&attention_lookalike(true, &[0, 2, 1, 3]));
    assert_eq!(count(&g, "Attention"), 0);
    assert_eq!(count(&g, "Softmax"), 1);
}

#[test]
fn attention_heads_merged_without_transpose_stays() {
    // [1, 2, 5, 4] reshaped to [1, 5, 8] without moving the head axis back
    // interleaves tokens of different heads.
    let g = canonicalize(&attention_lookalike(false, &[0, 1, 2, 3]));
    assert_eq!(count(&g, "Attention"), 0);
    assert_eq!(count(&g, "Softmax"), 1);
}
