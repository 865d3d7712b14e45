//! The generated F32 GEMM kernel alone, single-threaded, on the Linear
//! shapes of a ViT-S block (257 tokens, width 384, MLP 1536). Criterion
//! reports throughput in elements per second, where one element is one
//! floating-point operation, so the figures read as FLOP/s. Compare them
//! with the one-core FMA peak measured by `benches/fma_peak.c`
//! (`benches/gemm-peak` runs both).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vitc::codegen::jit::JitModel;
use vitc::lower::kernel::{Activation, Kernel};
use vitc::lower::{Buf, Program, Step, TensorInfo, Weight};

/// A program with one GEMM of `m x k` times `k x n` (+ bias).
fn gemm_program(m: usize, k: usize, n: usize) -> Program {
    let panels = n.div_ceil(8);
    let packed: Vec<f32> = (0..panels * k * 8).map(|i| ((i % 97) as f32 - 48.0) / 97.0).collect();
    let bias: Vec<f32> = (0..panels * 8).map(|i| i as f32 / 1000.0).collect();
    Program {
        inputs: vec![TensorInfo { name: "a".into(), shape: vec![m, k] }],
        outputs: vec![TensorInfo { name: "c".into(), shape: vec![m, n] }],
        weights: vec![Weight { name: "b".into(), data: packed }, Weight { name: "bias".into(), data: bias }],
        steps: vec![Step {
            node: "gemm".into(),
            kernel: Kernel::Gemm { m, n, k, bias: true, activation: Activation::None, residual: false },
            args: vec![Buf::Output(0), Buf::Input(0), Buf::Weight(0), Buf::Weight(1)],
        }],
        arena_bytes: 0,
    }
}

fn gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm_f32_1thread");
    for (m, k, n) in [(257, 384, 384), (257, 384, 1536), (257, 1536, 384)] {
        let program = gemm_program(m, k, n);
        let mut jit = JitModel::compile(&program, "gemm").expect("GEMM compiles");
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 89) as f32 - 44.0) / 89.0).collect();
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.bench_function(format!("{m}x{k}x{n}"), |bench| {
            bench.iter(|| jit.model.run(&[&a], &mut [&mut out], None).expect("GEMM runs"))
        });
    }
    group.finish();
}

criterion_group!(benches, gemm);
criterion_main!(benches);
