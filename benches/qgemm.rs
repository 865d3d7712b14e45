//! The generated INT8 GEMM kernel alone, single-threaded, on the Linear
//! shapes of a ViT-S block (257 tokens, width 384, MLP 1536), twice: with
//! 7-bit weights compiled for a baseline x86-64-v3 CPU, which use
//! pmaddubsw + pmaddwd, and compiled for this machine with the widening
//! form, one vpdpbusd on a CPU with VNNI (what vitc picks there). A third
//! group adds the fused GELU epilogue to the fc1 shape. One element of
//! throughput is one operation (a multiply-add is 2), so the figures read
//! as OP/s.
//! Compare them with `benches/int8_peak.c` (`benches/int8-peak` runs both).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vitc::codegen::jit::JitModel;
use vitc::lower::kernel::{Activation, Kernel};
use vitc::lower::{Buf, Program, Step, TensorInfo, Weight};

/// A program with one INT8 GEMM of u8 `m x k` (in the arena) times packed
/// i8 `k x n`, with bias.
fn qgemm_program(m: usize, k: usize, n: usize, narrow_weights: bool, activation: Activation) -> Program {
    let padded = n.div_ceil(8) * 8;
    let packed_bytes = padded * k.div_ceil(4) * 4;
    let words = |bytes: Vec<u8>| bytes.chunks(4).map(|c| f32::from_bits(u32::from_le_bytes(c.try_into().unwrap()))).collect();
    let packed: Vec<f32> = words((0..packed_bytes).map(|i| ((i % 127) as i8 - 63) as u8).collect());
    let params = vec![0.02, 7.0];
    let colsum = vec![f32::from_bits(3); padded];
    let scales = vec![0.01; padded];
    let bias = vec![0.5; padded];
    let weight = |name: &str, data: Vec<f32>| Weight { name: name.into(), data };
    Program {
        inputs: vec![TensorInfo { name: "unused".into(), shape: vec![1] }],
        outputs: vec![TensorInfo { name: "c".into(), shape: vec![m, n] }],
        weights: vec![weight("params", params), weight("b", packed), weight("colsum", colsum), weight("scales", scales), weight("bias", bias)],
        steps: vec![Step {
            node: "qgemm".into(),
            kernel: Kernel::QGemm { m, n, k, per_row_params: false, bias: true, narrow_weights, activation },
            args: vec![Buf::Output(0), Buf::Arena { offset: 0 }, Buf::Weight(0), Buf::Weight(1), Buf::Weight(2), Buf::Weight(3), Buf::Weight(4)],
        }],
        arena_bytes: (m * k + 4).div_ceil(64) * 64,
    }
}

fn qgemm(c: &mut Criterion) {
    // The pmaddubsw form needs x86-64; elsewhere only the host variant runs.
    let baseline = cfg!(target_arch = "x86_64").then_some("x86_64-unknown-linux-gnu");
    let variants = [
        ("pmaddubsw", true, baseline, Activation::None),
        ("widening", false, None, Activation::None),
        ("widening_gelu", false, None, Activation::Gelu),
    ];
    for (variant, narrow_weights, triple, activation) in variants {
        if variant == "pmaddubsw" && triple.is_none() {
            continue;
        }
        let mut group = c.benchmark_group(format!("qgemm_{variant}_1thread"));
        for (m, k, n) in [(257, 384, 384), (257, 384, 1536), (257, 1536, 384)] {
            // GELU follows fc1 only, the 384 -> 1536 shape.
            if activation != Activation::None && n != 1536 {
                continue;
            }
            let program = qgemm_program(m, k, n, narrow_weights, activation);
            let mut jit = JitModel::compile_for(&program, "qgemm", triple).expect("INT8 GEMM compiles");
            let input = [0.0f32];
            let mut out = vec![0.0f32; m * n];
            group.throughput(Throughput::Elements((2 * m * n * k) as u64));
            group.bench_function(format!("{m}x{k}x{n}"), |bench| {
                bench.iter(|| jit.model.run(&[&input], &mut [&mut out], None).expect("INT8 GEMM runs"))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, qgemm);
criterion_main!(benches);
