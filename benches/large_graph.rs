//! Import and canonicalization time of synthetic transformer graphs of
//! about 1,250 to 10,000 ONNX nodes, to show how the front end scales with
//! graph size. Linear growth shows as a constant time per node across the
//! sizes. A quadratic pass would make the 10,000-node case about 8 times
//! slower per node than the 1,250-node one.
//!
//! Each block is what PyTorch exports for a pre-norm transformer MLP block:
//! a decomposed LayerNorm, MatMul + Add, Erf GELU, MatMul + Add and a
//! residual Add, plus a Shape/Gather/Unsqueeze/Concat/Reshape chain that
//! computes a reshape target from the input's shape. Tensors are 4 x 8, so
//! the time measures graph handling, not arithmetic.
//!
//! Run with `cargo bench -p vitc-benches --bench large_graph`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use onnx_protobuf::Message;
use vitc::ir::summary::Summary;
use vitc::onnx::{ImportOptions, OnnxModel, import_model};
use vitc::passes::PassManager;
use vitc_tests::{Dim, ModelBuilder, attr_int, attr_ints};

/// Width of every activation.
const WIDTH: i64 = 8;
/// ONNX nodes per block (see [`add_block`]).
const NODES_PER_BLOCK: usize = 28;

/// Appends one block reading `x` and returns the name of its result.
fn add_block(m: &mut ModelBuilder, block: usize, x: &str) -> String {
    let p = |name: &str| format!("b{block}_{name}");
    let weights: Vec<f32> = (0..WIDTH * WIDTH).map(|i| ((i * 7 + block as i64) % 13) as f32 / 13.0 - 0.5).collect();
    let bias: Vec<f32> = (0..WIDTH).map(|i| i as f32 / 16.0).collect();
    m.init_f32(&p("gamma"), &[WIDTH], &vec![1.0; WIDTH as usize])
        .init_f32(&p("beta"), &[WIDTH], &vec![0.0; WIDTH as usize])
        .init_f32(&p("w1"), &[WIDTH, WIDTH], &weights)
        .init_f32(&p("b1"), &[WIDTH], &bias)
        .init_f32(&p("w2"), &[WIDTH, WIDTH], &weights)
        .init_f32(&p("b2"), &[WIDTH], &bias)
        .init_f32(&p("two"), &[], &[2.0])
        .init_f32(&p("eps"), &[], &[1e-5])
        .init_f32(&p("sqrt2"), &[], &[std::f32::consts::SQRT_2])
        .init_f32(&p("one"), &[], &[1.0])
        .init_f32(&p("half"), &[], &[0.5])
        .init_i64(&p("idx0"), &[], &[0])
        .init_i64(&p("idx1"), &[], &[1])
        .init_i64(&p("minus1"), &[1], &[-1]);

    // Decomposed LayerNorm (9 nodes).
    m.node("ReduceMean", &[x], &[&p("mean")], vec![attr_ints("axes", &[-1])])
        .node("Sub", &[x, &p("mean")], &[&p("centered")], vec![])
        .node("Pow", &[&p("centered"), &p("two")], &[&p("squared")], vec![])
        .node("ReduceMean", &[&p("squared")], &[&p("var")], vec![attr_ints("axes", &[-1])])
        .node("Add", &[&p("var"), &p("eps")], &[&p("var_eps")], vec![])
        .node("Sqrt", &[&p("var_eps")], &[&p("std")], vec![])
        .node("Div", &[&p("centered"), &p("std")], &[&p("normed")], vec![])
        .node("Mul", &[&p("normed"), &p("gamma")], &[&p("scaled")], vec![])
        .node("Add", &[&p("scaled"), &p("beta")], &[&p("ln")], vec![]);

    // MLP with Erf GELU and the residual Add (10 nodes).
    m.node("MatMul", &[&p("ln"), &p("w1")], &[&p("h")], vec![])
        .node("Add", &[&p("h"), &p("b1")], &[&p("hb")], vec![])
        .node("Div", &[&p("hb"), &p("sqrt2")], &[&p("hs")], vec![])
        .node("Erf", &[&p("hs")], &[&p("he")], vec![])
        .node("Add", &[&p("he"), &p("one")], &[&p("he1")], vec![])
        .node("Mul", &[&p("hb"), &p("he1")], &[&p("hm")], vec![])
        .node("Mul", &[&p("hm"), &p("half")], &[&p("gelu")], vec![])
        .node("MatMul", &[&p("gelu"), &p("w2")], &[&p("o")], vec![])
        .node("Add", &[&p("o"), &p("b2")], &[&p("ob")], vec![])
        .node("Add", &[x, &p("ob")], &[&p("res")], vec![]);

    // Reshape target computed from the shape, as dynamic-batch exports do (9 nodes).
    m.node("Shape", &[&p("res")], &[&p("shape")], vec![])
        .node("Gather", &[&p("shape"), &p("idx0")], &[&p("d0")], vec![attr_int("axis", 0)])
        .node("Gather", &[&p("shape"), &p("idx1")], &[&p("d1")], vec![attr_int("axis", 0)])
        .node("Unsqueeze", &[&p("d0")], &[&p("u0")], vec![attr_ints("axes", &[0])])
        .node("Unsqueeze", &[&p("d1")], &[&p("u1")], vec![attr_ints("axes", &[0])])
        .node("Concat", &[&p("u0"), &p("u1"), &p("minus1")], &[&p("target")], vec![attr_int("axis", 0)])
        .node("Reshape", &[&p("res"), &p("target")], &[&p("r3")], vec![])
        .node("Identity", &[&p("r3")], &[&p("r3i")], vec![])
        .node("Squeeze", &[&p("r3i")], &[&p("out")], vec![attr_ints("axes", &[2])]);
    p("out")
}

/// Builds and serializes a model of `blocks` blocks at opset 12, where Reduce and Squeeze axes are attributes.
fn synthetic_model(blocks: usize) -> Vec<u8> {
    let mut m = ModelBuilder::new(12);
    m.input("x", 1, &[Dim::Fixed(4), Dim::Fixed(WIDTH)]);
    let mut last = "x".to_string();
    for block in 0..blocks {
        last = add_block(&mut m, block, &last);
    }
    m.output(&last);
    m.build().write_to_bytes().expect("model serializes")
}

fn large_graph(c: &mut Criterion) {
    let dir = std::env::temp_dir();
    let mut group = c.benchmark_group("import_and_canonicalize");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    for blocks in [45, 90, 179, 358] {
        let bytes = synthetic_model(blocks);
        let nodes = blocks * NODES_PER_BLOCK;
        let model = OnnxModel::from_bytes(&bytes, &dir).expect("model parses");
        assert_eq!(model.proto.graph.node.len(), nodes, "NODES_PER_BLOCK matches add_block");
        let mut check = import_model(&model, &ImportOptions::default()).expect("model imports");
        PassManager::canonicalize().run(&mut check).expect("canonicalization succeeds");
        // Every block's patterns must fuse, so the timing covers the fusions.
        let ops = Summary::of(&check).op_counts;
        for (op, per_block) in [("LayerNorm", 1), ("Gelu", 1), ("Linear", 2)] {
            assert_eq!(ops.get(op).copied().unwrap_or(0), per_block * blocks, "{op} count in {ops:?}");
        }

        group.throughput(Throughput::Elements(nodes as u64));
        group.bench_with_input(BenchmarkId::from_parameter(nodes), &bytes, |b, bytes| {
            b.iter(|| {
                let model = OnnxModel::from_bytes(bytes, &dir).expect("model parses");
                let mut graph = import_model(&model, &ImportOptions::default()).expect("model imports");
                PassManager::canonicalize().run(&mut graph).expect("canonicalization succeeds");
                graph
            })
        });
    }
    group.finish();
}

criterion_group!(benches, large_graph);
criterion_main!(benches);
