//! Property tests: generated code (JIT) against the reference interpreter on
//! random small models and shapes, one property per kernel family that the
//! lowering selects (gemm, sparse_gemm, attention, layernorm, softmax, unary, binary,
//! channel_affine, copy, resize2d, im2col, col2im, and qgemm after INT8
//! quantization, which must match bit for bit, also in a split INT8
//! ConvTranspose). Each property also checks
//! that the family really appears in the lowered program. The `fill` kernel
//! exists in codegen, but no operator lowers to it, so it has no property.
//!
//! Weights and inputs are deterministic functions of a generated seed, so a
//! failure shrinks to small shapes and reproduces from the printed case.

use proptest::prelude::*;
use vitc::lower::Program;
use vitc::quant::{ActivationMode, DynamicGranularity, QuantConfig, WeightGranularity, quantize};
use vitc::tensor::Tensor;
use vitc_tests::engines::{Engine, TestModel};
use vitc_tests::{Dim, ModelBuilder, attr_float, attr_int, attr_ints, attr_string, random_tensor};

const F32: i32 = 1;

/// Cases per property: each compiles a model with Cranelift, which takes
/// tens of milliseconds.
fn config() -> ProptestConfig {
    ProptestConfig { cases: 64, ..ProptestConfig::default() }
}

fn values(len: usize, seed: u64) -> Vec<f32> {
    random_tensor(&[len], seed).as_f32().unwrap().iter().copied().collect()
}

fn dims(shape: &[usize]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::Fixed(d as i64)).collect()
}

fn i64s(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

/// Runs `model` with the interpreter and the JIT on a random input and
/// checks that the lowered program uses `family` and that the outputs agree
/// within `tolerance` relative to `1 + |expected|`.
fn check_family(model: &ModelBuilder, family: &str, seed: u64, tolerance: f32) -> Result<(), TestCaseError> {
    let model = TestModel::new(model);
    let program = Program::lower(&model.graph).map_err(|e| TestCaseError::fail(format!("lowering failed: {e}")))?;
    let counts = program.kernel_counts();
    prop_assert!(counts.contains_key(family), "no {family} kernel in {counts:?}");

    let len: usize = model.input_shape().iter().product();
    let input = values(len, seed);
    let expected = model.run(Engine::Interpreter, &input);
    let actual = model.run(Engine::Jit, &input);
    prop_assert_eq!(actual.len(), expected.len());
    for (i, (&a, &e)) in actual.iter().zip(&expected).enumerate() {
        let same = (a.is_nan() && e.is_nan()) || a == e || (a - e).abs() <= tolerance * (1.0 + e.abs());
        prop_assert!(same, "element {} of {}: JIT {:e}, interpreter {:e}", i, actual.len(), a, e);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn gemm_matches(m in 1usize..6, k in 1usize..24, n in 1usize..24, bias: bool, activation in 0u8..3, residual: bool, seed: u64) {
        // A residual Add needs the output shape of the input, so n = k then.
        let n = if residual { k } else { n };
        let mut b = ModelBuilder::new(20);
        b.input("x", F32, &dims(&[m, k])).init_f32("w", &[k as i64, n as i64], &values(k * n, seed ^ 1));
        b.node("MatMul", &["x", "w"], &["mm"], vec![]);
        let mut last = "mm";
        if bias {
            b.init_f32("b", &[n as i64], &values(n, seed ^ 2)).node("Add", &[last, "b"], &["biased"], vec![]);
            last = "biased";
        }
        if activation > 0 {
            let form = if activation == 1 { "none" } else { "tanh" };
            b.node("Gelu", &[last], &["act"], vec![attr_string("approximate", form)]);
            last = "act";
        }
        if residual {
            b.node("Add", &[last, "x"], &["res"], vec![]);
            last = "res";
        }
        b.node("Identity", &[last], &["y"], vec![]).output("y");
        check_family(&b, "gemm", seed, 1e-4)?;
    }

    #[test]
    fn sparse_gemm_matches(m in 1usize..9, groups in 1usize..8, n in 1usize..24, bias: bool, gelu: bool, residual: bool, seed: u64) {
        // Zero about three quarters of the 4 x 8 weight tiles, so panels with
        // no kept tile occur too. At least a fifth must be empty for the
        // lowering to pick the block-sparse kernel, so a single tile is zeroed.
        let k = groups * 4;
        let n = if residual { k } else { n };
        let panels = n.div_ceil(8);
        let mut kept: Vec<bool> = (0..panels * groups).map(|t| (t as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 62 == 0).collect();
        while kept.iter().filter(|&&k| !k).count() * 5 < kept.len() {
            let first = kept.iter().position(|&k| k).unwrap();
            kept[first] = false;
        }
        let mut w = values(k * n, seed ^ 1);
        for (index, value) in w.iter_mut().enumerate() {
            let (row, col) = (index / n, index % n);
            if !kept[(col / 8) * groups + row / 4] {
                *value = 0.0;
            }
        }
        let mut b = ModelBuilder::new(20);
        b.input("x", F32, &dims(&[m, k])).init_f32("w", &[k as i64, n as i64], &w);
        b.node("MatMul", &["x", "w"], &["mm"], vec![]);
        let mut last = "mm";
        if bias {
            b.init_f32("b", &[n as i64], &values(n, seed ^ 2)).node("Add", &[last, "b"], &["biased"], vec![]);
            last = "biased";
        }
        if gelu {
            b.node("Gelu", &[last], &["act"], vec![]);
            last = "act";
        }
        if residual {
            b.node("Add", &[last, "x"], &["res"], vec![]);
            last = "res";
        }
        b.node("Identity", &[last], &["y"], vec![]).output("y");
        check_family(&b, "sparse_gemm", seed, 1e-4)?;
    }

    #[test]
    fn attention_matches(tokens in 1usize..7, heads in 1usize..4, head_dim in 1usize..6, seed: u64) {
        let width = heads * head_dim;
        let w = width as i64;
        let mut b = ModelBuilder::new(14);
        b.input("x", F32, &dims(&[1, tokens, width]))
            .init_f32("wq", &[w, w], &values(width * width, seed ^ 1))
            .init_f32("wk", &[w, w], &values(width * width, seed ^ 2))
            .init_f32("wv", &[w, w], &values(width * width, seed ^ 3))
            .init_i64("heads_shape", &[4], &[1, tokens as i64, heads as i64, head_dim as i64])
            .init_i64("merged_shape", &[3], &[1, tokens as i64, w])
            .init_f32("scale", &[], &[1.0 / (head_dim as f32).sqrt()])
            .node("MatMul", &["x", "wq"], &["q"], vec![])
            .node("MatMul", &["x", "wk"], &["k"], vec![])
            .node("MatMul", &["x", "wv"], &["v"], vec![])
            .node("Reshape", &["q", "heads_shape"], &["qr"], vec![])
            .node("Reshape", &["k", "heads_shape"], &["kr"], vec![])
            .node("Reshape", &["v", "heads_shape"], &["vr"], vec![])
            .node("Transpose", &["qr"], &["qh"], vec![attr_ints("perm", &[0, 2, 1, 3])])
            .node("Transpose", &["kr"], &["kt"], vec![attr_ints("perm", &[0, 2, 3, 1])])
            .node("Transpose", &["vr"], &["vh"], vec![attr_ints("perm", &[0, 2, 1, 3])])
            .node("MatMul", &["qh", "kt"], &["s0"], vec![])
            .node("Mul", &["s0", "scale"], &["s"], vec![])
            .node("Softmax", &["s"], &["p"], vec![attr_int("axis", -1)])
            .node("MatMul", &["p", "vh"], &["c"], vec![])
            .node("Transpose", &["c"], &["ct"], vec![attr_ints("perm", &[0, 2, 1, 3])])
            .node("Reshape", &["ct", "merged_shape"], &["y"], vec![])
            .output("y");
        check_family(&b, "attention", seed, 1e-4)?;
    }

    #[test]
    fn layernorm_matches(rows in 1usize..6, cols in 1usize..48, bias: bool, large_epsilon: bool, seed: u64) {
        let epsilon = if large_epsilon { 1e-2 } else { 1e-5 };
        let mut b = ModelBuilder::new(17);
        b.input("x", F32, &dims(&[rows, cols])).init_f32("gamma", &[cols as i64], &values(cols, seed ^ 1));
        let mut operands = vec!["x", "gamma"];
        if bias {
            b.init_f32("beta", &[cols as i64], &values(cols, seed ^ 2));
            operands.push("beta");
        }
        b.node("LayerNormalization", &operands, &["y"], vec![attr_float("epsilon", epsilon), attr_int("axis", -1)]).output("y");
        // A row of one element normalizes to 0 / sqrt(epsilon): exact in both.
        check_family(&b, "layernorm", seed, 2e-4)?;
    }

    #[test]
    fn softmax_matches(shape in prop::collection::vec(1usize..9, 1..4), scale in prop::sample::select(vec![1.0f32, 30.0, 1000.0]), seed: u64) {
        let mut b = ModelBuilder::new(13);
        b.input("x", F32, &dims(&shape))
            .init_f32("scale", &[], &[scale])
            .node("Mul", &["x", "scale"], &["z"], vec![])
            .node("Softmax", &["z"], &["y"], vec![attr_int("axis", -1)])
            .output("y");
        check_family(&b, "softmax", seed, 1e-5)?;
    }

    #[test]
    fn unary_matches(
        op in prop::sample::select(vec!["Relu", "Sigmoid", "Tanh", "Erf", "Exp", "Sqrt", "Neg", "Abs", "Reciprocal"]),
        shape in prop::collection::vec(1usize..6, 1..4),
        scale in prop::sample::select(vec![1.0f32, 10.0, 100.0]),
        seed: u64,
    ) {
        // Sqrt of negative inputs is NaN in both engines; Exp of 100 overflows to inf in both.
        let mut b = ModelBuilder::new(13);
        b.input("x", F32, &dims(&shape))
            .init_f32("scale", &[], &[scale])
            .node("Mul", &["x", "scale"], &["z"], vec![])
            .node(op, &["z"], &["y"], vec![])
            .output("y");
        check_family(&b, "unary", seed, 1e-5)?;
    }

    #[test]
    fn binary_matches(
        op in prop::sample::select(vec!["Add", "Sub", "Mul", "Div", "Max", "Min"]),
        shape in prop::collection::vec(1usize..5, 1..5),
        broadcast_mask in prop::collection::vec(any::<bool>(), 4),
        drop_leading in 0usize..3,
        constant_first: bool,
        seed: u64,
    ) {
        // The constant's shape is the input's, with some axes set to 1 and
        // some leading axes dropped: every NumPy broadcasting case.
        let mut other: Vec<usize> = shape.iter().zip(&broadcast_mask).map(|(&d, &one)| if one { 1 } else { d }).collect();
        let drop = drop_leading.min(other.len() - 1);
        other.drain(..drop);
        let len: usize = other.iter().product();
        let mut b = ModelBuilder::new(13);
        b.input("x", F32, &dims(&shape)).init_f32("c", &i64s(&other), &values(len, seed ^ 1));
        // Relu keeps a Binary node whose operands are the input and a constant.
        let operands = if constant_first { ["c", "x"] } else { ["x", "c"] };
        b.node(op, &operands, &["z"], vec![]).node("Relu", &["z"], &["y"], vec![]).output("y");
        check_family(&b, "binary", seed, 1e-5)?;
    }

    #[test]
    fn channel_affine_matches(n in 1usize..3, c in 1usize..6, h in 1usize..5, w in 1usize..5, seed: u64) {
        let variance: Vec<f32> = values(c, seed ^ 4).iter().map(|v| v.abs() + 0.1).collect();
        let mut b = ModelBuilder::new(15);
        b.input("x", F32, &dims(&[n, c, h, w]))
            .init_f32("scale", &[c as i64], &values(c, seed ^ 1))
            .init_f32("bias", &[c as i64], &values(c, seed ^ 2))
            .init_f32("mean", &[c as i64], &values(c, seed ^ 3))
            .init_f32("var", &[c as i64], &variance)
            .node("BatchNormalization", &["x", "scale", "bias", "mean", "var"], &["y"], vec![attr_float("epsilon", 1e-5)])
            .output("y");
        check_family(&b, "channel_affine", seed, 1e-5)?;
    }

    #[test]
    fn transpose_matches(shape in prop::collection::vec(1usize..5, 2..5), perm_seed: u64, seed: u64) {
        // A random non-identity permutation (Simplify removes the identity).
        let rank = shape.len();
        let mut perm: Vec<i64> = (0..rank as i64).collect();
        let mut state = perm_seed;
        for i in (1..rank).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            perm.swap(i, (state >> 33) as usize % (i + 1));
        }
        if perm.iter().enumerate().all(|(i, &p)| i as i64 == p) {
            perm.swap(0, 1);
        }
        let mut b = ModelBuilder::new(13);
        b.input("x", F32, &dims(&shape)).node("Transpose", &["x"], &["y"], vec![attr_ints("perm", &perm)]).output("y");
        check_family(&b, "copy", seed, 0.0)?;
    }

    #[test]
    fn slice_matches(len in 2usize..12, start in -12i64..12, end in -12i64..12, step in prop::sample::select(vec![-3i64, -2, -1, 1, 2, 3]), seed: u64) {
        let mut b = ModelBuilder::new(13);
        b.input("x", F32, &dims(&[3, len]))
            .init_i64("starts", &[1], &[start])
            .init_i64("ends", &[1], &[end])
            .init_i64("axes", &[1], &[1])
            .init_i64("steps", &[1], &[step])
            .node("Slice", &["x", "starts", "ends", "axes", "steps"], &["s"], vec![])
            .init_f32("pad", &[3, 1], &[7.0, 8.0, 9.0])
            // The Concat keeps the output non-empty when the slice is empty.
            .node("Concat", &["s", "pad"], &["y"], vec![attr_int("axis", 1)])
            .output("y");
        check_family(&b, "copy", seed, 0.0)?;
    }

    #[test]
    fn gather_matches(rows in 1usize..8, cols in 1usize..6, picks in prop::collection::vec(any::<i64>(), 1..6), axis in 0i64..2, seed: u64) {
        let extent = if axis == 0 { rows } else { cols } as i64;
        // Indices in [-extent, extent), negative ones counting from the end.
        let indices: Vec<i64> = picks.iter().map(|p| p.rem_euclid(2 * extent) - extent).collect();
        let mut b = ModelBuilder::new(13);
        b.input("x", F32, &dims(&[rows, cols]))
            .init_i64("idx", &[indices.len() as i64], &indices)
            .node("Gather", &["x", "idx"], &["y"], vec![attr_int("axis", axis)])
            .output("y");
        check_family(&b, "copy", seed, 0.0)?;
    }

    #[test]
    fn resize_matches(
        c in 1usize..3, h in 1usize..6, w in 1usize..6,
        scale_h in prop::sample::select(vec![0.5f32, 1.5, 2.0, 3.0]),
        scale_w in prop::sample::select(vec![0.5f32, 1.0, 2.0, 2.5]),
        mode in prop::sample::select(vec!["nearest", "linear", "cubic"]),
        transform in prop::sample::select(vec!["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]),
        seed: u64,
    ) {
        let out_h = (h as f32 * scale_h).floor() as usize;
        let out_w = (w as f32 * scale_w).floor() as usize;
        prop_assume!(out_h > 0 && out_w > 0);
        let mut b = ModelBuilder::new(13);
        b.input("x", F32, &dims(&[1, c, h, w]))
            .init_f32("roi", &[0], &[])
            .init_f32("scales", &[4], &[1.0, 1.0, scale_h, scale_w])
            .node(
                "Resize",
                &["x", "roi", "scales"],
                &["y"],
                vec![attr_string("mode", mode), attr_string("coordinate_transformation_mode", transform)],
            )
            .output("y");
        check_family(&b, "resize2d", seed, 1e-5)?;
    }

    #[test]
    fn conv_matches(
        c in 1usize..4, oc in 1usize..5, h in 1usize..8, w in 1usize..8,
        kh in 1usize..4, kw in 1usize..4, stride in 1usize..3, pad in 0usize..2, dilation in 1usize..3,
        seed: u64,
    ) {
        prop_assume!(h + 2 * pad >= dilation * (kh - 1) + 1 && w + 2 * pad >= dilation * (kw - 1) + 1);
        let p = pad as i64;
        let mut b = ModelBuilder::new(13);
        b.input("x", F32, &dims(&[1, c, h, w]))
            .init_f32("k", &i64s(&[oc, c, kh, kw]), &values(oc * c * kh * kw, seed ^ 1))
            .init_f32("b", &[oc as i64], &values(oc, seed ^ 2))
            .node(
                "Conv",
                &["x", "k", "b"],
                &["y"],
                vec![
                    attr_ints("strides", &[stride as i64; 2]),
                    attr_ints("pads", &[p, p, p, p]),
                    attr_ints("dilations", &[dilation as i64; 2]),
                ],
            )
            .output("y");
        check_family(&b, "im2col", seed, 1e-4)?;
    }

    #[test]
    fn conv_transpose_matches(
        c in 1usize..4, oc in 1usize..4, h in 1usize..6, w in 1usize..6,
        kh in 1usize..4, kw in 1usize..4, stride in 1usize..3, pad in 0usize..2,
        seed: u64,
    ) {
        // Output size (h - 1) * stride - 2 * pad + kh must be positive.
        prop_assume!((h - 1) * stride + kh > 2 * pad && (w - 1) * stride + kw > 2 * pad);
        let p = pad as i64;
        let mut b = ModelBuilder::new(13);
        b.input("x", F32, &dims(&[1, c, h, w]))
            .init_f32("k", &i64s(&[c, oc, kh, kw]), &values(c * oc * kh * kw, seed ^ 1))
            .init_f32("b", &[oc as i64], &values(oc, seed ^ 2))
            .node(
                "ConvTranspose",
                &["x", "k", "b"],
                &["y"],
                vec![attr_ints("strides", &[stride as i64; 2]), attr_ints("pads", &[p, p, p, p])],
            )
            .output("y");
        check_family(&b, "col2im", seed, 1e-4)?;
    }
}

/// Builds the quantization settings that [`qgemm_matches`] draws.
fn quant_config(static_scales: bool, per_token: bool, per_channel: bool, full_range: bool) -> QuantConfig {
    QuantConfig {
        activations: if static_scales { ActivationMode::Static } else { ActivationMode::Dynamic },
        dynamic_granularity: if per_token { DynamicGranularity::PerToken } else { DynamicGranularity::PerTensor },
        weights: if per_channel { WeightGranularity::PerChannel } else { WeightGranularity::PerTensor },
        weight_max: if full_range { 127 } else { 63 },
        // Smoothing applies only to a Linear that reads a LayerNorm.
        smoothing_alpha: None,
        ..QuantConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// INT8 Linear layers: the generated code must equal the interpreter's
    /// integer arithmetic bit for bit, for every scale mode.
    #[test]
    fn qgemm_matches(
        m in 1usize..6, k in 1usize..40, n in 1usize..24, bias: bool,
        static_scales: bool, per_token: bool, per_channel: bool, full_range: bool, seed: u64,
    ) {
        let mut b = ModelBuilder::new(20);
        b.input("x", F32, &dims(&[m, k])).init_f32("w", &[k as i64, n as i64], &values(k * n, seed ^ 1));
        b.node("MatMul", &["x", "w"], &["mm"], vec![]);
        let mut last = "mm";
        if bias {
            b.init_f32("b", &[n as i64], &values(n, seed ^ 2)).node("Add", &[last, "b"], &["biased"], vec![]);
            last = "biased";
        }
        b.node("Identity", &[last], &["y"], vec![]).output("y");

        let mut model = TestModel::new(&b);
        let input = values(m * k, seed);
        let calibration = vec![Tensor::F32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[m, k]), values(m * k, seed ^ 3)).unwrap())];
        let config = quant_config(static_scales, per_token, per_channel, full_range);
        quantize(&mut model.graph, &config, &calibration).map_err(|e| TestCaseError::fail(format!("quantize failed: {e}")))?;

        let program = Program::lower(&model.graph).map_err(|e| TestCaseError::fail(format!("lowering failed: {e}")))?;
        let counts = program.kernel_counts();
        prop_assert!(counts.contains_key("qgemm"), "no qgemm kernel in {counts:?}");
        let expected = model.run(Engine::Interpreter, &input);
        let actual = model.run(Engine::Jit, &input);
        prop_assert_eq!(actual.len(), expected.len());
        for (i, (&a, &e)) in actual.iter().zip(&expected).enumerate() {
            prop_assert!(a.to_bits() == e.to_bits(), "element {} of {}: JIT {:e}, interpreter {:e}", i, actual.len(), a, e);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// An INT8 ConvTranspose: quantization splits it into Transpose, an INT8
    /// Linear and Col2im. The generated code must match the interpreter on
    /// the quantized graph: the product bit for bit, and col2im within
    /// rounding, because it adds the bias first where the interpreter adds it
    /// last. The quantized result must also stay close to the f32 layer.
    #[test]
    fn quantized_conv_transpose_matches(
        two_d: bool, c in 1usize..20, oc in 1usize..5, h in 1usize..5, w in 1usize..6,
        kh in 1usize..4, kw in 1usize..4, stride in 1usize..3, pad in 0usize..2, bias: bool,
        static_scales: bool, per_token: bool, seed: u64,
    ) {
        let (h, kh) = if two_d { (h, kh) } else { (1, 1) };
        prop_assume!((h - 1) * stride + kh > 2 * pad && (w - 1) * stride + kw > 2 * pad);
        let spatial: Vec<usize> = if two_d { vec![h, w] } else { vec![w] };
        let kernel: Vec<usize> = if two_d { vec![kh, kw] } else { vec![kw] };
        let rank = spatial.len();
        let p = pad as i64;
        let mut b = ModelBuilder::new(13);
        let x_shape = [&[1, c][..], &spatial].concat();
        let k_shape = [&[c, oc][..], &kernel].concat();
        b.input("x", F32, &dims(&x_shape)).init_f32("k", &i64s(&k_shape), &values(k_shape.iter().product(), seed ^ 1));
        let mut inputs = vec!["x", "k"];
        if bias {
            b.init_f32("b", &[oc as i64], &values(oc, seed ^ 2));
            inputs.push("b");
        }
        let attrs = vec![attr_ints("strides", &vec![stride as i64; rank]), attr_ints("pads", &vec![p; 2 * rank])];
        b.node("ConvTranspose", &inputs, &["y"], attrs.clone()).output("y");
        // The same layer on absolute values, without bias: the sum of the
        // magnitudes of the products that each output adds up, the scale
        // of the rounding error INT8 may make even when the products cancel.
        let mut magnitudes = ModelBuilder::new(13);
        let abs_weights: Vec<f32> = values(k_shape.iter().product(), seed ^ 1).iter().map(|v| v.abs()).collect();
        magnitudes.input("x", F32, &dims(&x_shape)).init_f32("k", &i64s(&k_shape), &abs_weights);
        magnitudes.node("ConvTranspose", &["x", "k"], &["y"], attrs).output("y");

        let f32_model = TestModel::new(&b);
        let mut model = TestModel::new(&b);
        let len: usize = x_shape.iter().product();
        let input = values(len, seed ^ 3);
        let calibration = vec![Tensor::F32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&x_shape), input.clone()).unwrap())];
        let config = quant_config(static_scales, per_token, true, false);
        quantize(&mut model.graph, &config, &calibration).map_err(|e| TestCaseError::fail(format!("quantize failed: {e}")))?;

        let program = Program::lower(&model.graph).map_err(|e| TestCaseError::fail(format!("lowering failed: {e}")))?;
        let counts = program.kernel_counts();
        prop_assert!(counts.contains_key("qgemm"), "no qgemm kernel in {counts:?}");
        prop_assert!(counts.contains_key("col2im"), "no col2im kernel in {counts:?}");
        let expected = model.run(Engine::Interpreter, &input);
        let actual = model.run(Engine::Jit, &input);
        prop_assert_eq!(actual.len(), expected.len());
        for (i, (&a, &e)) in actual.iter().zip(&expected).enumerate() {
            prop_assert!((a - e).abs() <= 1e-5 * (1.0 + e.abs()), "element {} of {}: JIT {:e}, interpreter {:e}", i, actual.len(), a, e);
        }

        let reference = f32_model.run(Engine::Interpreter, &input);
        let abs_input: Vec<f32> = input.iter().map(|v| v.abs()).collect();
        let scale = TestModel::new(&magnitudes).run(Engine::Interpreter, &abs_input);
        let error: f32 = reference.iter().zip(&expected).map(|(r, q)| (r - q).powi(2)).sum::<f32>().sqrt();
        let norm: f32 = scale.iter().map(|r| r * r).sum::<f32>().sqrt();
        prop_assert!(error <= 0.05 * norm + 1e-6, "INT8 error {:e} against the product magnitudes {:e}", error, norm);
    }
}
