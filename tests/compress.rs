//! Compression passes on the shipped MNIST ViT: the IR after each pass,
//! accuracy after pruning and low-rank rewriting with and without
//! distillation on the 10,000 test images, replay onto another batch size,
//! external weights, and recipe errors that must come before any work.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use vitc::compress::{Calibration, Compression, Recipe, compress, compress_for};
use vitc::eval::{EvalOptions, NormalizeOptions, Report, evaluate};
use vitc::ir::Graph;
use vitc::ir::printer::print_graph;
use vitc::onnx::{ImportOptions, import_file};
use vitc::passes::PassManager;
use vitc::tensor::Tensor;
use vitc_tests::fetched;

const MNIST_MEAN: f32 = 0.1307;
const MNIST_STD: f32 = 0.3081;
/// Top-1 of the uncompressed model on the 10,000 test images, with the
/// JIT and with ONNX Runtime (models/mnist-vit/accuracy.json).
const BASELINE_TOP1: f64 = 0.9903;

fn mnist_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist-vit/mnist_vit.onnx")
}

fn mnist_normalize() -> NormalizeOptions {
    NormalizeOptions { mean: Some(vec![MNIST_MEAN]), std: Some(vec![MNIST_STD]), ..Default::default() }
}

/// Imports the MNIST ViT for `batch` samples and canonicalizes it.
fn mnist_graph(batch: usize) -> Graph {
    let options = ImportOptions {
        input_shapes: HashMap::from([("input".to_string(), vec![batch, 1, 28, 28])]),
        ..ImportOptions::default()
    };
    let mut graph = import_file(&mnist_model(), &options).expect("MNIST ViT imports");
    PassManager::canonicalize().run(&mut graph).expect("MNIST ViT canonicalizes");
    graph
}

/// Training images as calibration batches of 32.
fn calibration(samples: usize) -> Calibration {
    Calibration::load(&fetched("data/mnist/train_images.npy"), &[32, 1, 28, 28], samples, &mnist_normalize())
        .expect("MNIST training images load")
}

fn compression(recipe: &str) -> Compression {
    Compression {
        recipe: Recipe::from_toml_str(recipe).expect("test recipe is valid"),
        data: Some(fetched("data/mnist/train_images.npy")),
        normalize: mnist_normalize(),
    }
}

/// `vitc eval` of the MNIST ViT compressed by `recipe` on the 10,000 test
/// images, compared with the uncompressed model.
fn eval_compressed(recipe: &str) -> Report {
    let mut options = EvalOptions::new(fetched("data/mnist/test_images_f32.npy"));
    options.labels = Some(fetched("data/mnist/test_labels.npy"));
    options.batch = Some(100);
    options.compression = Some(compression(recipe));
    evaluate(&mnist_model(), &options).unwrap_or_else(|e| panic!("evaluation failed: {e:?}"))
}

fn error_of(recipe: &str, graph: &mut Graph, calibration: Option<&Calibration>) -> String {
    match Recipe::from_toml_str(recipe).and_then(|r| compress(graph, &r, calibration).map(|_| ())) {
        Ok(()) => panic!("recipe was accepted:\n{recipe}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn bad_recipes_fail_before_work() {
    let cases = [
        ("[[pass]]\nkind = \"quantise\"\n", "pass 1: unknown kind \"quantise\"; expected one of low-rank"),
        ("[[pass]]\nkind = \"prune\"\nheads = 1.0\n", "heads must be in [0, 1), not 1"),
        ("[[pass]]\nkind = \"prune\"\nneurons = -0.1\n", "neurons must be in [0, 1)"),
        ("[[pass]]\nkind = \"prune\"\nflops = 0.4\nheads = 0.2\n", "exclude each other"),
        ("[[pass]]\nkind = \"prune\"\n", "set heads and/or neurons"),
        ("[[pass]]\nkind = \"prune\"\nheds = 0.2\n", "pass 1 (prune), key `heds`: unknown field `heds`"),
        ("[[pass]]\nkind = \"prune\"\nflops = 0.3\n[[pass]]\nkind = \"distill\"\nridge-toward = \"foo\"\n", "pass 2 (distill), key `ridge-toward`: unknown variant `foo`, expected `weights` or `zero`"),
        ("[[pass]]\nflops = 0.3\n", "pass 1 has no kind"),
        ("[[pass]]\nkind = \"low-rank\"\nrank = 4\nenergy = 0.9\n", "exactly one of rank, energy and param-cut"),
        ("[[pass]]\nkind = \"sparsify\"\nsparsity = 1.5\n", "sparsity must be in [0, 1)"),
        ("[[pass]]\nkind = \"distill\"\nridge = -1.0\n", "ridge must be"),
        ("[calibration]\nsamples = 0\n", "calibration.samples must be at least 1"),
    ];
    for (recipe, expected) in cases {
        let error = Recipe::from_toml_str(recipe).expect_err(recipe).to_string();
        assert!(error.contains(expected), "recipe:\n{recipe}\nerror: {error}\nexpected: {expected}");
    }
}

#[test]
fn model_checks_fail_before_work() {
    let mut graph = mnist_graph(1);
    let before = print_graph(&graph);

    let error = error_of("[[pass]]\nkind = \"low-rank\"\nrank = 65\nmethod = \"weight\"\n", &mut graph, None);
    assert!(error.contains("rank 65 is larger than the 128x64 weight"), "{error}");

    let error = error_of("[[pass]]\nkind = \"prune\"\nheads = 0.9\nimportance = \"l2\"\n", &mut graph, None);
    assert!(error.contains("would remove all 4 heads of '/blocks.0/attn'"), "{error}");

    let error = error_of("[[pass]]\nkind = \"prune\"\nimportance = \"l2\"\n[pass.layers]\n\"/blocks.9/*\" = 0.5\n", &mut graph, None);
    assert!(error.contains("matches no unit"), "{error}");

    let error = error_of("[[pass]]\nkind = \"distill\"\n", &mut graph, None);
    assert!(error.contains("needs calibration data"), "{error}");

    // Calibration batches of the wrong shape.
    let wrong = Calibration::from_batches(vec![Tensor::zeros(vitc::tensor::DType::F32, &[1, 3, 28, 28])], "test");
    let error = error_of("[[pass]]\nkind = \"distill\"\n", &mut graph, Some(&wrong));
    assert!(error.contains("gives batches of f32[1,3,28,28]"), "{error}");

    assert_eq!(print_graph(&graph), before, "a rejected recipe changed the graph");
}

#[test]
fn pruning_snapshot() {
    let mut graph = mnist_graph(1);
    let recipe = Recipe::from_toml_str("[[pass]]\nkind = \"prune\"\nheads = 0.5\nneurons = 0.5\nimportance = \"l2\"\n").unwrap();
    compress(&mut graph, &recipe, None).unwrap();
    insta::assert_snapshot!(print_graph(&graph));
}

#[test]
fn low_rank_snapshot() {
    let mut graph = mnist_graph(1);
    let recipe =
        Recipe::from_toml_str("[[pass]]\nkind = \"low-rank\"\nscope = \"mlp\"\nrank = 16\nmethod = \"weight\"\n").unwrap();
    compress(&mut graph, &recipe, None).unwrap();
    insta::assert_snapshot!(print_graph(&graph));
}

#[test]
fn sparsify_zeroes_requested_fraction() {
    let mut graph = mnist_graph(1);
    let recipe = Recipe::from_toml_str("[[pass]]\nkind = \"sparsify\"\nsparsity = 0.5\nblock = 4\n").unwrap();
    let report = compress(&mut graph, &recipe, None).unwrap().report;
    let layers = &report.passes[0].layers;
    assert_eq!(layers.len(), 8, "{layers:?}");
    for layer in layers {
        assert!(layer.detail.contains("sparsity 0.50"), "{}: {}", layer.layer, layer.detail);
    }
}

/// ONNX allows empty and repeated node names. Import gives each node a
/// unique one, so pruning still finds every layer.
#[test]
fn prune_nodes_without_unique_names() {
    use onnx_protobuf::Message;
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(mnist_model()).unwrap();
    for (case, name) in [("empty", ""), ("repeated", "x")] {
        let mut model = onnx_protobuf::ModelProto::parse_from_bytes(&bytes).unwrap();
        for node in &mut model.graph.as_mut().unwrap().node {
            node.name = name.to_string();
        }
        let path = dir.path().join(format!("{case}.onnx"));
        std::fs::write(&path, model.write_to_bytes().unwrap()).unwrap();
        let mut graph = import_file(&path, &ImportOptions::default()).unwrap();
        PassManager::canonicalize().run(&mut graph).unwrap();
        let recipe = Recipe::from_toml_str("[[pass]]\nkind = \"prune\"\nflops = 0.3\nimportance = \"l1\"\n").unwrap();
        let report = compress(&mut graph, &recipe, None).unwrap_or_else(|e| panic!("{case} names: {e}")).report;
        let cut = 1.0 - report.flops_after as f64 / report.flops_before as f64;
        assert!(cut > 0.2, "{case} names: FLOPs cut by {cut:.3}");
    }
}

/// A block as large as the matrix is one block, which a ratio of 0.5 must
/// not remove, per layer or globally.
#[test]
fn sparsify_keeps_single_block_layers() {
    for granularity in ["layer", "global"] {
        let mut graph = mnist_graph(1);
        let text = format!("[[pass]]\nkind = \"sparsify\"\nsparsity = 0.5\nblock = 64\nblock-rows = 128\ngranularity = \"{granularity}\"\n");
        let report = compress(&mut graph, &Recipe::from_toml_str(&text).unwrap(), None).unwrap().report;
        for layer in &report.passes[0].layers {
            let sparsity: f64 = layer.detail.trim_start_matches("sparsity ").parse().unwrap();
            assert!(sparsity < 1.0, "{granularity}: {} {}", layer.layer, layer.detail);
            if granularity == "layer" {
                assert!(sparsity <= 0.5, "{}: {}", layer.layer, layer.detail);
            }
        }
    }
}

#[test]
fn edits_replay_onto_batch_one() {
    // The passes run at the calibration batch (32); the batch-1 graph gets
    // the same edits and must compute the same function.
    let recipe = "[calibration]\nsamples = 64\n[[pass]]\nkind = \"prune\"\nflops = 0.3\n[[pass]]\nkind = \"distill\"\n";
    let mut single = mnist_graph(1);
    compress_for(&mnist_model(), &mut single, &compression(recipe)).unwrap();
    let mut batched = mnist_graph(32);
    compress_for(&mnist_model(), &mut batched, &compression(recipe)).unwrap();

    let batch = calibration(32).batches.remove(0);
    let batched_out = vitc::interp::run(&batched, &[(batched.inputs()[0], batch.clone())]).unwrap().remove(0);
    let first = batch.as_f32().unwrap().index_axis(ndarray::Axis(0), 0).insert_axis(ndarray::Axis(0)).to_owned();
    let single_out = vitc::interp::run(&single, &[(single.inputs()[0], Tensor::F32(first))]).unwrap().remove(0);
    let a = single_out.as_f32().unwrap();
    let b = batched_out.as_f32().unwrap();
    for c in 0..10 {
        assert!((a[[0, c]] - b[[0, c]]).abs() < 1e-4, "class {c}: batch 1 gives {}, batch 32 gives {}", a[[0, c]], b[[0, c]]);
    }
}

#[test]
fn pruned_build_does_less_work() {
    let recipe = "[calibration]\nsamples = 64\n[[pass]]\nkind = \"prune\"\nflops = 0.4\n[[pass]]\nkind = \"distill\"\n";
    let plain = vitc::build::build(&mnist_model(), &vitc::build::BuildOptions { name: "plain".into(), ..Default::default() }).unwrap();
    let options = vitc::build::BuildOptions { name: "pruned".into(), compression: Some(compression(recipe)), ..Default::default() };
    let pruned = vitc::build::build(&mnist_model(), &options).unwrap();
    let flops = |p: &vitc::lower::Program| p.steps.iter().map(|s| s.kernel.flops()).sum::<u64>();
    let (before, after) = (flops(&plain.program), flops(&pruned.program));
    println!("generated code: {before} FLOPs uncompressed, {after} pruned");
    assert!((after as f64) < 0.7 * before as f64, "kernels do {after} FLOPs against {before}");
    assert!(pruned.report.to_string().contains("pass prune"));
    let report = pruned.report.compression.expect("the build report includes compression");
    assert_eq!(report.passes.len(), 2);
    // Each pass's settings, defaults included, are in the report.
    let recipe = Recipe::from_toml_str(recipe).unwrap();
    assert_eq!(report.passes[0].settings, recipe.passes[0]);
    assert_eq!(report.passes[1].settings, recipe.passes[1]);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["passes"][1]["settings"]["ridge-toward"], "weights");

    // The passes ran at the calibration batch of 32, and the report states
    // their totals at the build's batch of 1, like the build report's own.
    assert_eq!(report.params_before, plain.report.parameters);
    assert_eq!(report.flops_before, plain.report.flops);
    assert_eq!(report.params_after, pruned.report.parameters);
    assert_eq!(report.flops_after, pruned.report.flops);
    assert_eq!(report.passes[0].params_before, plain.report.parameters);
}

#[test]
fn load_weights_matches_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut graph = mnist_graph(1);
    let fc1 = graph.value_ids().find(|&v| graph.value(v).name == "/blocks.0/mlp/fc1/weight").expect("fc1 weight");
    let original = graph.konst(fc1).unwrap().as_f32().unwrap().clone();
    let doubled: Vec<f32> = original.iter().map(|w| w * 2.0).collect();
    let bytes: Vec<u8> = doubled.iter().flat_map(|w| w.to_le_bytes()).collect();

    // PyTorch-style names: the layer path with dots.
    let write = |name: &str, shape: Vec<usize>, data: &[u8]| -> PathBuf {
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, data).unwrap();
        let path = dir.path().join(format!("{}.safetensors", name.replace('.', "_")));
        safetensors::serialize_to_file([(name, view)], None, &path).unwrap();
        path
    };
    let good = write("blocks.0.mlp.fc1.weight", vec![128, 64], &bytes);
    let recipe = format!("[[pass]]\nkind = \"load-weights\"\npath = \"{}\"\n", good.display());
    let report = compress(&mut graph, &Recipe::from_toml_str(&recipe).unwrap(), None).unwrap().report;
    let loaded = report.passes[0].loaded.as_ref().unwrap();
    assert_eq!(loaded.replaced, ["blocks.0.mlp.fc1.weight"]);
    let fc1 = graph.value_ids().find(|&v| graph.value(v).name == "/blocks.0/mlp/fc1/weight").unwrap();
    assert_eq!(graph.konst(fc1).unwrap().as_f32().unwrap().iter().copied().collect::<Vec<_>>(), doubled);

    let wrong_shape = write("blocks.0.mlp.fc1.weight", vec![64, 128], &bytes);
    let recipe = format!("[[pass]]\nkind = \"load-weights\"\npath = \"{}\"\n", wrong_shape.display());
    let error = error_of(&recipe, &mut mnist_graph(1), None);
    assert!(error.contains("is [64,128] in the file but the model's '/blocks.0/mlp/fc1/weight' is [128,64]"), "{error}");

    let unknown = write("blocks.7.mlp.fc1.weight", vec![128, 64], &bytes);
    let recipe = format!("[[pass]]\nkind = \"load-weights\"\npath = \"{}\"\n", unknown.display());
    let error = error_of(&recipe, &mut mnist_graph(1), None);
    assert!(error.contains("no tensor matches a weight of the model (the file has blocks.7.mlp.fc1.weight)"), "{error}");
}

#[test]
fn loaded_weights_survive_replay() {
    // With calibration data the passes run at batch 32 and their edits are
    // replayed onto the batch-1 graph. A weight that sparsify changed and
    // load-weights then replaces must end up with the loaded values.
    let dir = tempfile::tempdir().unwrap();
    let graph = mnist_graph(1);
    let fc1 = graph.value_ids().find(|&v| graph.value(v).name == "/blocks.0/mlp/fc1/weight").expect("fc1 weight");
    let negated: Vec<f32> = graph.konst(fc1).unwrap().as_f32().unwrap().iter().map(|w| -w).collect();
    let bytes: Vec<u8> = negated.iter().flat_map(|w| w.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![128, 64], &bytes).unwrap();
    let path = dir.path().join("student.safetensors");
    safetensors::serialize_to_file([("blocks.0.mlp.fc1.weight", view)], None, &path).unwrap();

    let recipe = format!(
        "[calibration]\nsamples = 32\n[[pass]]\nkind = \"sparsify\"\nsparsity = 0.3\n[[pass]]\nkind = \"load-weights\"\npath = \"{}\"\n",
        path.display()
    );
    let mut single = mnist_graph(1);
    compress_for(&mnist_model(), &mut single, &compression(&recipe)).unwrap();
    let live: Vec<_> = single
        .value_ids()
        .filter(|&v| single.value(v).name == "/blocks.0/mlp/fc1/weight" && single.use_count(v) > 0)
        .collect();
    assert_eq!(live.len(), 1, "one fc1 weight in use");
    let weight = single.konst(live[0]).unwrap().as_f32().unwrap().iter().copied().collect::<Vec<_>>();
    assert_eq!(weight, negated, "the compiled graph has the loaded fc1 weight");
}

/// Writes `tensors` (name, dtype, shape, little-endian bytes) to a
/// safetensors file in `dir`.
fn write_safetensors(dir: &Path, file: &str, tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) -> PathBuf {
    let views: Vec<_> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| (*name, safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap()))
        .collect();
    let path = dir.join(file);
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

fn f32_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

#[test]
fn load_weights_reads_state_dicts() {
    let dir = tempfile::tempdir().unwrap();
    let load = |path: &Path, extra: &str| format!("[[pass]]\nkind = \"load-weights\"\npath = \"{}\"\n{extra}", path.display());
    let f32 = safetensors::Dtype::F32;

    // The classifier head (a Gemm in the export) matches its state dict
    // names, and an integer buffer that matches nothing is only listed.
    let head_bias = f32_bytes((0..10).map(|c| c as f32));
    let counter = 7i64.to_le_bytes().to_vec();
    let path = write_safetensors(
        dir.path(),
        "head.safetensors",
        &[("head.bias", f32, vec![10], head_bias), ("norm.num_batches_tracked", safetensors::Dtype::I64, vec![], counter)],
    );
    let mut graph = mnist_graph(1);
    let report = compress(&mut graph, &Recipe::from_toml_str(&load(&path, "allow-unmatched = true\n")).unwrap(), None).unwrap().report;
    let loaded = report.passes[0].loaded.as_ref().unwrap();
    assert_eq!((loaded.replaced.as_slice(), loaded.unmatched.as_slice()), (&["head.bias".to_string()][..], &["norm.num_batches_tracked".to_string()][..]));
    let bias = graph.value_ids().find(|&v| graph.value(v).name == "/head/bias" && graph.use_count(v) > 0).expect("head bias");
    assert_eq!(graph.konst(bias).unwrap().as_f32().unwrap()[[9]], 9.0);

    // Two names for one weight are an error, not a silent choice.
    let ones = f32_bytes(std::iter::repeat_n(1.0, 64));
    let path = write_safetensors(
        dir.path(),
        "alias.safetensors",
        &[("blocks.0.norm1.weight", f32, vec![64], ones.clone()), ("/blocks.0/norm1/scale", f32, vec![64], ones)],
    );
    let error = error_of(&load(&path, ""), &mut mnist_graph(1), None);
    assert!(error.contains("both name the model's '/blocks.0/norm1/scale'"), "{error}");

    // Without allow-unmatched, the buffer is an error that names where to set it.
    let buffer = write_safetensors(
        dir.path(),
        "buffer.safetensors",
        &[("head.bias", f32, vec![10], f32_bytes([0.0; 10])), ("norm.num_batches_tracked", safetensors::Dtype::I64, vec![], 7i64.to_le_bytes().to_vec())],
    );
    let error = error_of(&load(&buffer, ""), &mut mnist_graph(1), None);
    assert!(error.contains("e.g. norm.num_batches_tracked; to load the rest, use a recipe whose load-weights pass sets allow-unmatched = true"), "{error}");

    // A damaged file fails before the passes in front of load-weights run.
    let damaged = dir.path().join("damaged.safetensors");
    std::fs::write(&damaged, b"\x10\x00\x00\x00\x00\x00\x00\x00{").unwrap();
    let recipe = format!("[[pass]]\nkind = \"prune\"\nneurons = 0.5\nimportance = \"l2\"\n{}", load(&damaged, ""));
    let error = error_of(&recipe, &mut mnist_graph(1), None);
    assert!(error.starts_with("recipe: pass 2 (load-weights):"), "{error}");
    assert!(error.contains("not a valid safetensors file"), "{error}");
}

#[test]
fn distill_refits_loaded_layers() {
    // Loaded weights that move fc1 of block 0 away from the teacher: a
    // distill pass after load-weights refits that layer, and only it.
    let dir = tempfile::tempdir().unwrap();
    let graph = mnist_graph(1);
    let fc1 = graph.value_ids().find(|&v| graph.value(v).name == "/blocks.0/mlp/fc1/weight").unwrap();
    let halved = f32_bytes(graph.konst(fc1).unwrap().as_f32().unwrap().iter().map(|w| w * 0.5));
    let path = write_safetensors(dir.path(), "student.safetensors", &[("blocks.0.mlp.fc1.weight", safetensors::Dtype::F32, vec![128, 64], halved)]);
    let recipe = format!(
        "[calibration]\nsamples = 64\n[[pass]]\nkind = \"load-weights\"\npath = \"{}\"\n[[pass]]\nkind = \"distill\"\nhead = false\n",
        path.display()
    );
    let mut graph = mnist_graph(32);
    let report = compress(&mut graph, &Recipe::from_toml_str(&recipe).unwrap(), Some(&calibration(64))).unwrap().report;
    let refits: Vec<&str> = report.passes[1].refits.iter().map(|r| r.layer.as_str()).collect();
    assert_eq!(refits, ["/blocks.0/mlp/fc1"]);
    let refit = &report.passes[1].refits[0];
    assert!(refit.relative_error_after < 0.5 * refit.relative_error_before, "{refit:?}");
}

#[test]
fn load_weights_special_files_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("weights.safetensors");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let zero = dir.path().join("zero.safetensors");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    for path in [fifo, zero] {
        let recipe = format!("[[pass]]\nkind = \"load-weights\"\npath = \"{}\"\n", path.display());
        let error = error_of(&recipe, &mut mnist_graph(1), None);
        assert!(error.contains("does not exist or is not a file"), "{error}");
    }
}

#[test]
fn mnist_pruning_with_and_without_distillation() {
    let pruned_only = eval_compressed("[calibration]\nsamples = 2048\n[[pass]]\nkind = \"prune\"\nflops = 0.4\n");
    let distilled = eval_compressed("[calibration]\nsamples = 2048\n[[pass]]\nkind = \"prune\"\nflops = 0.4\n[[pass]]\nkind = \"distill\"\n");

    let report = distilled.compression.as_ref().unwrap();
    let cut = 1.0 - report.encoder_flops_after as f64 / report.encoder_flops_before as f64;
    let drop_pruned = (BASELINE_TOP1 - pruned_only.top1_accuracy) * 100.0;
    let drop_distilled = (BASELINE_TOP1 - distilled.top1_accuracy) * 100.0;
    println!(
        "encoder FLOPs cut {:.1}%: top-1 {:.2}% pruned only ({drop_pruned:+.2} points lost), {:.2}% with distillation ({drop_distilled:+.2} points lost)",
        cut * 100.0,
        pruned_only.top1_accuracy * 100.0,
        distilled.top1_accuracy * 100.0
    );
    assert!(cut >= 0.40, "only {:.1}% of encoder FLOPs removed", cut * 100.0);
    assert!(drop_distilled <= 0.5, "distilled model loses {drop_distilled:.2} points");
    assert!(drop_pruned > drop_distilled, "distillation did not help: {drop_pruned:.2} vs {drop_distilled:.2} points");
    let comparison = distilled.reference_comparison.as_ref().expect("the uncompressed model is the reference");
    assert!(comparison.top1_agreement >= 0.99, "agreement {}", comparison.top1_agreement);
}

/// Taylor importance ranks heads and neurons by the output error their
/// removal adds, from gradients of the whole network. Without any
/// distillation it must keep more accuracy than the activation criterion,
/// which measures only each unit's own output.
#[test]
fn mnist_taylor_importance() {
    let recipe = |importance: &str| format!("[[pass]]\nkind = \"prune\"\nflops = 0.4\nimportance = \"{importance}\"\n");
    let taylor = eval_compressed(&recipe("taylor"));
    let activation = eval_compressed(&recipe("activation"));
    let drop = (BASELINE_TOP1 - taylor.top1_accuracy) * 100.0;
    println!(
        "40% of encoder FLOPs pruned, no distillation: top-1 {:.2}% with taylor importance ({drop:+.2} points lost), {:.2}% with activation importance",
        taylor.top1_accuracy * 100.0,
        activation.top1_accuracy * 100.0
    );
    let report = taylor.compression.as_ref().unwrap();
    assert!(report.encoder_flops_after as f64 <= 0.6 * report.encoder_flops_before as f64, "less than 40% pruned");
    assert!(drop <= 1.0, "taylor-pruned model loses {drop:.2} points");
    assert!(taylor.top1_accuracy > activation.top1_accuracy, "taylor importance is no better than activation importance");
}

/// Inserts `x -> Mul(1e4) -> Op -> Div(1e4)` after the value named `name`,
/// so the model computes nearly the same outputs.
fn insert_after(graph: &mut Graph, name: &str, op: vitc::ir::Op) {
    use std::sync::Arc;
    use vitc::ir::Op;
    use vitc::ir::op::BinaryOp;
    let value = graph.value_ids().find(|&v| graph.value(v).name == name).unwrap_or_else(|| panic!("no value {name}"));
    let fact = graph.fact(value).clone();
    let scale = graph.add_constant("test/scale", Arc::new(Tensor::scalar_f32(1e4)));
    let up = graph.add_simple(Op::Binary(BinaryOp::Mul), "test/up", vec![Some(value), Some(scale)], fact.clone());
    let middle = graph.add_simple(op, "test/middle", vec![Some(up)], fact.clone());
    let down = graph.add_simple(Op::Binary(BinaryOp::Div), "test/down", vec![Some(middle), Some(scale)], fact);
    graph.replace_all_uses(value, down);
    graph.set_input(graph.value(up).producer, 0, Some(value));
}

/// A Round between the pruned layers and the output stops every gradient;
/// Taylor importance must refuse rather than rank blindly.
#[test]
fn taylor_importance_refuses_blocked_gradients() {
    let mut graph = mnist_graph(32);
    insert_after(&mut graph, "/blocks.1/Add_1_output_0", vitc::ir::Op::Unary(vitc::ir::op::UnaryOp::Round));
    let recipe = "[[pass]]\nkind = \"prune\"\nflops = 0.4\nimportance = \"taylor\"\n";
    let error = error_of(recipe, &mut graph, Some(&calibration(64)));
    assert!(error.contains("no gradient reaches '/blocks.0/attn'"), "{error}");
}

/// Calibration inputs that overflow inside the model are rejected before
/// any pass runs, instead of measuring every pass against NaN.
#[test]
fn calibration_that_overflows_the_model_is_rejected() {
    let mut graph = mnist_graph(32);
    let huge: Vec<Tensor> = calibration(32).batches.iter().map(|b| Tensor::F32(b.as_f32().unwrap().mapv(|v| v * 1e37))).collect();
    let calibration = Calibration::from_batches(huge, "scaled images");
    let error = error_of("[[pass]]\nkind = \"prune\"\nflops = 0.4\n", &mut graph, Some(&calibration));
    assert!(error.contains("output on calibration sample 0 of scaled images is"), "{error}");
}

#[test]
fn mnist_low_rank_mlp() {
    let report = eval_compressed(
        "[calibration]\nsamples = 2048\n[[pass]]\nkind = \"low-rank\"\nscope = \"mlp\"\nparam-cut = 0.3\n[[pass]]\nkind = \"distill\"\n",
    );
    let compression = report.compression.as_ref().unwrap();
    let mlp: Vec<_> = compression.passes[0].layers.iter().filter(|l| l.layer.contains("/mlp/")).collect();
    let before: u64 = mlp.iter().map(|l| l.before.params).sum();
    let after: u64 = mlp.iter().map(|l| l.after.params).sum();
    let cut = 1.0 - after as f64 / before as f64;
    let drop = (BASELINE_TOP1 - report.top1_accuracy) * 100.0;
    println!("MLP parameters cut {:.1}%: top-1 {:.2}% ({drop:+.2} points lost)", cut * 100.0, report.top1_accuracy * 100.0);
    assert!(cut >= 0.30 - 0.01, "MLP parameters cut by {:.1}%", cut * 100.0);
    assert!(drop <= 0.5, "low-rank model loses {drop:.2} points");
}

/// `vitc analyze` with Taylor importance scores the graph once, measures
/// every unit, and its search returns a recipe within the budget.
#[test]
fn sensitivity_with_taylor_importance() {
    use vitc::compress::analyze::{AnalyzeOptions, analyze};
    use vitc::compress::recipe::Importance;

    let graph = mnist_graph(32);
    let options = AnalyzeOptions { ratios: vec![0.5], importance: Importance::Taylor, distill: false, max_drop: Some(1.0) };
    let sensitivity = analyze(&graph, &calibration(128), &options).expect("analysis runs");
    println!("{sensitivity}");
    assert_eq!(sensitivity.units.len(), 8, "every attention and MLP unit is measured once");
    assert!(sensitivity.units.iter().all(|r| r.flops_saved > 0.0));
    let errors: Vec<f64> = sensitivity.units.iter().map(|r| r.error.relative_error).collect();
    assert!(errors.iter().any(|&e| e != errors[0]), "every unit costs the same: {errors:?}");
    let search = sensitivity.search.as_ref().expect("a classifier gets a search");
    assert!(search.recipe.contains("importance = \"taylor\""), "{}", search.recipe);
    // The recipe names the samples the passes were fitted on.
    assert!(search.recipe.contains("samples = 64"), "{}", search.recipe);
    let drop = (1.0 - search.error.top1_agreement.unwrap()) * 100.0;
    assert!(drop <= 1.0, "the searched recipe loses {drop:.2} points");
    assert!(search.flops_saved > 0.0, "the search pruned nothing");
}

#[test]
fn sensitivity_analysis_and_search() {
    use vitc::compress::analyze::{AnalyzeOptions, analyze};
    use vitc::compress::recipe::Importance;

    let graph = mnist_graph(32);
    let calibration = calibration(128);
    let options = AnalyzeOptions {
        ratios: vec![0.25, 0.75],
        importance: Importance::Reconstruction,
        distill: false,
        max_drop: Some(1.0),
    };
    let sensitivity = analyze(&graph, &calibration, &options).expect("analysis runs");
    println!("{sensitivity}");
    // Half of the 4 batches fit the passes, the other half is measured.
    assert!(sensitivity.held_out);
    assert_eq!((sensitivity.fit_samples, sensitivity.samples), (64, 64));

    // Every attention and MLP unit is measured at both ratios, and the
    // larger ratio always saves more FLOPs.
    let units: std::collections::BTreeSet<&str> = sensitivity.units.iter().map(|r| r.unit.as_str()).collect();
    assert!(units.len() >= 4, "units measured: {units:?}");
    assert_eq!(sensitivity.units.len(), units.len() * 2);
    for pair in sensitivity.units.chunks(2) {
        assert_eq!(pair[0].unit, pair[1].unit);
        assert!(pair[1].error.relative_error > 0.0, "{} lost nothing at 0.75", pair[1].unit);
        assert!(pair[0].flops_saved > 0.0, "{} saves nothing at 0.25", pair[0].unit);
        assert!(pair[1].flops_saved > pair[0].flops_saved, "{} saves no more at 0.75", pair[1].unit);
    }
    // Units differ in how much pruning costs them; a constant would mean
    // the measurement does not see the model.
    let errors: Vec<f64> = sensitivity.units.iter().map(|r| r.error.relative_error).collect();
    assert!(errors.iter().any(|&e| (e - errors[0]).abs() > 1e-3), "{errors:?}");

    // The searched recipe stays within the budget, saves FLOPs, and gives the
    // same saving when parsed back and applied.
    let search = sensitivity.search.expect("--max-drop searches on a classifier");
    let agreement = search.error.top1_agreement.expect("classifier agreement");
    assert!((1.0 - agreement) * 100.0 <= 1.0, "agreement {agreement}");
    assert!(search.flops_saved > 0.05, "searched recipe saves {:.3}", search.flops_saved);
    let recipe = Recipe::from_toml_str(&search.recipe).expect("searched recipe parses");
    let mut student = graph.clone();
    let report = compress(&mut student, &recipe, Some(&calibration)).expect("searched recipe applies").report;
    let saved = 1.0 - report.encoder_flops_after as f64 / report.encoder_flops_before as f64;
    assert!((saved - search.flops_saved).abs() < 1e-9, "applied recipe saves {saved}, search said {}", search.flops_saved);
}

#[test]
fn block_sparse_build_skips_tiles_and_matches_interpreter() {
    use vitc::codegen::jit::JitModel;
    use vitc::lower::Program;

    let mut graph = mnist_graph(32);
    let recipe = "[[pass]]\nkind = \"sparsify\"\nsparsity = 0.5\nblock = 4\nblock-rows = 8\n";
    let report = compress(&mut graph, &Recipe::from_toml_str(recipe).unwrap(), None).unwrap().report;
    let sparsified = report.passes[0].layers.len();
    let program = Program::lower(&graph).unwrap();
    let sparse: Vec<String> =
        program.steps.iter().filter(|s| s.kernel.name() == "sparse_gemm").map(|s| s.kernel.to_string()).collect();
    println!("{}", sparse.join("\n"));
    assert_eq!(sparse.len(), sparsified, "every sparsified layer gets the block-sparse kernel");
    // Half the tiles are gone, so the generated code does about half the
    // work in those layers.
    for line in &sparse {
        let tiles = line.split("tiles=").nth(1).unwrap().split_whitespace().next().unwrap();
        let (kept, total) = tiles.split_once('/').unwrap();
        let kept_fraction = kept.parse::<f64>().unwrap() / total.parse::<f64>().unwrap();
        assert!((kept_fraction - 0.5).abs() < 0.02, "{line}");
    }

    let batch = calibration(32).batches.remove(0);
    let expected = vitc::interp::run(&graph, &[(graph.inputs()[0], batch.clone())]).unwrap().remove(0);
    let expected = expected.as_f32().unwrap();
    let data: Vec<f32> = batch.as_f32().unwrap().iter().copied().collect();
    let mut jit = JitModel::compile(&program, "sparse").unwrap();
    let pool = vitc_runtime::ThreadPool::new(2).unwrap();
    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for pool in [None, Some(&pool)] {
        let out = jit.model.run_simple(&data, pool).unwrap();
        let diff = out.iter().zip(expected.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff / scale < 1e-4, "JIT differs from the interpreter by {diff} (scale {scale})");
    }
}

#[test]
fn low_rank_factors_quantize_to_int8() {
    // The two factors of a low-rank layer are chained Linear layers: the
    // second reads the first's output, which quantization rewrites.
    let mut graph = mnist_graph(32);
    let recipe = "[[pass]]\nkind = \"low-rank\"\nparam-cut = 0.3\n[[pass]]\nkind = \"quantize\"\n";
    let calibration = calibration(64);
    let report = compress(&mut graph, &Recipe::from_toml_str(recipe).unwrap(), Some(&calibration)).unwrap().report;
    let quantization = report.passes[1].quantization.as_ref().expect("the quantize pass reports its layers");
    let names: Vec<&str> = quantization.layers.iter().map(|l| l.name.as_str()).collect();
    assert!(names.iter().any(|n| n.ends_with("/low_rank")), "{names:?}");
    assert!(names.contains(&"/blocks.0/mlp/fc1"), "{names:?}");
    let error = report.passes[1].output_error.as_ref().expect("measured against the original");
    println!("low-rank + INT8: agreement {:?}, cosine {:.5}", error.top1_agreement, error.cosine_mean);
    assert!(error.top1_agreement.unwrap() >= 0.97, "agreement {:?}", error.top1_agreement);
}

#[test]
fn every_preset_compresses_the_mnist_vit() {
    use vitc::compress::Preset;

    let calibration = calibration(256);
    for preset in Preset::ALL {
        let mut recipe = preset.recipe();
        recipe.calibration.samples = 256;
        let mut graph = mnist_graph(32);
        let report = compress(&mut graph, &recipe, Some(&calibration))
            .unwrap_or_else(|e| panic!("preset {} fails: {e}", preset.name()))
            .report;
        assert_eq!(report.passes.len(), recipe.passes.len(), "preset {}", preset.name());
        let last = report.passes.last().unwrap().output_error.as_ref().expect("every pass is measured");
        let agreement = last.top1_agreement.unwrap();
        println!("{}: agreement {:.2}% on the calibration data", preset.name(), agreement * 100.0);
        assert!(agreement >= 0.95, "preset {} keeps {agreement} agreement", preset.name());
        vitc::lower::Program::lower(&graph).unwrap_or_else(|e| panic!("preset {} does not lower: {e}", preset.name()));
    }
}

#[test]
fn kl_finetune_of_the_head_recovers_accuracy() {
    let prune = "[calibration]\nsamples = 2048\n[[pass]]\nkind = \"prune\"\nflops = 0.4\n";
    let pruned = eval_compressed(prune);
    let finetuned = eval_compressed(&format!("{prune}[[pass]]\nkind = \"finetune\"\ntemperature = 2.0\n"));
    let report = finetuned.compression.as_ref().unwrap();
    let detail = &report.passes[1].layers[0].detail;
    println!("{detail}");
    println!("top-1 {:.2}% pruned, {:.2}% after KL fine-tuning of the head", pruned.top1_accuracy * 100.0, finetuned.top1_accuracy * 100.0);
    assert!(detail.contains("best at step"), "no step improved the held-out KL: {detail}");
    let outcome = report.passes[1].finetune.as_ref().expect("the pass report has the finetune outcome");
    assert_eq!((outcome.loss, outcome.parameter_tensors), ("kl", 2));
    assert!(outcome.loss_after < outcome.loss_before, "{outcome:?}");
    assert!(finetuned.top1_accuracy > pruned.top1_accuracy + 0.002, "{} vs {}", finetuned.top1_accuracy, pruned.top1_accuracy);
    let agreement = |r: &Report| r.reference_comparison.as_ref().unwrap().top1_agreement;
    assert!(agreement(&finetuned) > agreement(&pruned));
}

/// Fine-tuning every Linear bias and LayerNorm parameter and the head,
/// with gradients through the whole network, brings the pruned model
/// closer to the original on the test images than tuning the head alone.
#[test]
fn kl_finetune_inside_the_network() {
    let recipe = |params: &str| {
        format!("[[pass]]\nkind = \"prune\"\nflops = 0.4\n[[pass]]\nkind = \"finetune\"\nparams = \"{params}\"\nsteps = 60\n")
    };
    let head = eval_compressed(&recipe("head"));
    let all = eval_compressed(&recipe("all"));
    let detail = &all.compression.as_ref().unwrap().passes[1].layers[0].detail;
    println!("{detail}");
    let comparison = |r: &Report| r.reference_comparison.clone().unwrap();
    let (head_cmp, all_cmp) = (comparison(&head), comparison(&all));
    println!(
        "head only: top-1 {:.2}%, agreement {:.2}%, KL {:.4}; all: top-1 {:.2}%, agreement {:.2}%, KL {:.4}",
        head.top1_accuracy * 100.0,
        head_cmp.top1_agreement * 100.0,
        head_cmp.mean_kl_divergence,
        all.top1_accuracy * 100.0,
        all_cmp.top1_agreement * 100.0,
        all_cmp.mean_kl_divergence
    );
    assert!(detail.contains("best at step"), "no step improved the held-out KL: {detail}");
    let outcome = all.compression.as_ref().unwrap().passes[1].finetune.as_ref().expect("the pass report has the finetune outcome");
    assert_eq!((outcome.loss, outcome.figure), ("kl", "top-1 agreement"));
    assert!(outcome.loss_after < outcome.loss_before, "{outcome:?}");
    assert!(all_cmp.mean_kl_divergence < head_cmp.mean_kl_divergence, "tuning inside the network did not lower the KL");
    assert!(all_cmp.top1_agreement >= head_cmp.top1_agreement, "tuning inside the network lowered the agreement");
}

/// Returns the relative error `|s - t| / |t|` of `student` against
/// `teacher` on the first 256 MNIST test images, which no pass reads.
fn held_out_relative_error(student: &Graph, teacher: &Graph) -> f64 {
    let images = Calibration::load(&fetched("data/mnist/test_images_f32.npy"), &[32, 1, 28, 28], 256, &NormalizeOptions::default())
        .expect("MNIST test images load");
    let (mut error, mut norm) = (0.0f64, 0.0f64);
    for batch in &images.batches {
        let run = |graph: &Graph| vitc::interp::run(graph, &[(graph.inputs()[0], batch.clone())]).unwrap().swap_remove(0);
        let (s, t) = (run(student), run(teacher));
        for (&s, &t) in s.as_f32().unwrap().iter().zip(t.as_f32().unwrap()) {
            error += f64::from(s - t).powi(2);
            norm += f64::from(t).powi(2);
        }
    }
    (error / norm).sqrt()
}

/// Fine-tunes a model that is not a classifier on the squared error of its
/// outputs. The MNIST ViT cut at its final LayerNorm outputs token
/// features, and their error must fall on images the passes never read.
#[test]
fn mse_finetune_of_a_feature_model() {
    let features_model = || {
        let mut graph = mnist_graph(32);
        let last_norm = graph.topo_order().into_iter().filter(|&n| graph.node(n).op.name() == "LayerNorm").last().unwrap();
        graph.set_outputs(vec![graph.node(last_norm).outputs[0]]);
        graph
    };
    let teacher = features_model();
    let prune = "[[pass]]\nkind = \"prune\"\nflops = 0.4\nimportance = \"activation\"\n";
    let finetune = "[[pass]]\nkind = \"finetune\"\nloss = \"mse\"\nparams = \"all\"\nsteps = 40\nlearning-rate = 0.003\n";
    let mut pruned = features_model();
    compress(&mut pruned, &Recipe::from_toml_str(prune).unwrap(), Some(&calibration(256))).unwrap();
    let mut tuned = features_model();
    let recipe = Recipe::from_toml_str(&format!("{prune}{finetune}")).unwrap();
    let report = compress(&mut tuned, &recipe, Some(&calibration(256))).unwrap().report;
    let detail = &report.passes[1].layers[0].detail;
    println!("{detail}");
    assert!(detail.contains("MSE"), "the finetune detail does not report the MSE: {detail}");
    assert!(detail.contains("best at step"), "no step improved the held-out MSE: {detail}");
    let outcome = report.passes[1].finetune.as_ref().expect("the pass report has the finetune outcome");
    assert_eq!(outcome.loss, "mse");
    assert!(outcome.held_out, "no batch was held out: {outcome:?}");
    assert!(outcome.best_step > 0, "{outcome:?}");
    assert!(outcome.loss_after < outcome.loss_before, "{outcome:?}");
    assert!(outcome.figure_after > outcome.figure_before, "the mean cosine did not rise: {outcome:?}");

    let (before, after) = (held_out_relative_error(&pruned, &teacher), held_out_relative_error(&tuned, &teacher));
    println!("relative error of the features on 256 test images: pruned {before:.4}, pruned + finetune {after:.4}");
    assert!(after < 0.95 * before, "finetune lowered the held-out error only from {before:.4} to {after:.4}");
}

/// `vitc analyze --max-drop` searches by top-1 agreement. A model that
/// outputs features is rejected before any unit is measured, and so is a
/// model without attention or MLP units.
#[test]
fn analyze_rejects_unsearchable_models() {
    use vitc::compress::analyze::{AnalyzeOptions, analyze};
    use vitc::compress::recipe::Importance;

    let mut features = mnist_graph(32);
    let last_norm = features.topo_order().into_iter().filter(|&n| features.node(n).op.name() == "LayerNorm").last().unwrap();
    features.set_outputs(vec![features.node(last_norm).outputs[0]]);
    let options = AnalyzeOptions { ratios: vec![0.5], importance: Importance::L2, distill: false, max_drop: Some(1.0) };
    let error = analyze(&features, &calibration(64), &options).err().expect("rejected").to_string();
    assert!(error.contains("--max-drop is a budget of top-1 agreement"), "{error}");
    assert!(error.contains("output is [32,50,64]"), "{error}");

    // The patch embedding alone: a Conv, then reshapes.
    let mut stem = mnist_graph(32);
    let conv = stem.topo_order().into_iter().find(|&n| stem.node(n).op.name() == "Conv").unwrap();
    stem.set_outputs(vec![stem.node(conv).outputs[0]]);
    stem.remove_dead_nodes();
    let options = AnalyzeOptions { max_drop: None, ..options };
    let error = analyze(&stem, &calibration(64), &options).err().expect("rejected").to_string();
    assert!(error.contains("no attention or MLP unit"), "{error}");
}

/// KL needs a classifier head, so the error names the squared-error loss.
#[test]
fn kl_finetune_rejects_feature_model() {
    let mut graph = mnist_graph(32);
    let last_norm = graph.topo_order().into_iter().filter(|&n| graph.node(n).op.name() == "LayerNorm").last().unwrap();
    graph.set_outputs(vec![graph.node(last_norm).outputs[0]]);
    let error = error_of("[[pass]]\nkind = \"finetune\"\nparams = \"norms\"\n", &mut graph, Some(&calibration(64)));
    assert!(error.contains("loss = \"mse\""), "{error}");
}

#[test]
fn diverging_finetune_names_learning_rate() {
    let recipe = "[[pass]]\nkind = \"prune\"\nneurons = 0.5\nimportance = \"l2\"\n[[pass]]\nkind = \"finetune\"\nparams = \"head\"\nlearning-rate = 1e30\n";
    let mut graph = mnist_graph(32);
    let report = compress(&mut graph, &Recipe::from_toml_str(recipe).unwrap(), Some(&calibration(256))).unwrap().report;
    let outcome = report.passes[1].finetune.as_ref().unwrap();
    assert_eq!(outcome.best_step, 0, "{outcome:?}");
    let detail = &report.passes[1].layers[0].detail;
    assert!(detail.contains("learning-rate = 1e30 may be too high; head kept"), "{detail}");
}

#[test]
fn finetune_rejects_bad_settings() {
    let mut graph = mnist_graph(32);
    for (pass, expected) in [
        ("temperature = 0.0", "temperature must be in [0.01, 100]"),
        ("temperature = 1e30", "temperature must be in [0.01, 100]"),
        ("steps = 0", "steps must be in 1..=100000"),
        ("holdout = 0.95", "holdout must be in [0, 0.9)"),
        ("params = \"encoder\"", "unknown variant"),
        ("params = [\"biases\", \"norms\"]", "params takes one name"),
        ("loss = \"mse\"", "loss = \"mse\" trains params = \"biases\", \"norms\" or \"all\", not \"head\""),
        ("loss = \"cross-entropy\"", "unknown variant"),
        ("loss = 3", "expected a string"),
        ("params = 3", "a name: head, head-bias, biases, norms or all"),
    ] {
        let error = error_of(&format!("[[pass]]\nkind = \"finetune\"\n{pass}\n"), &mut graph, None);
        assert!(error.contains(expected), "{pass}: {error}");
    }
}

#[test]
fn taps_skip_later_layers() {
    // run_taps runs only the nodes that the taps need; the tapped values
    // must equal those of a run of the whole graph.
    let graph = mnist_graph(32);
    let calibration = calibration(64);
    let layer_norms: Vec<_> =
        graph.topo_order().into_iter().filter(|&n| graph.node(n).op.name() == "LayerNorm").map(|n| graph.node(n).outputs[0]).collect();
    let taps = [layer_norms[1], layer_norms[0]];
    let (_, full) = vitc::compress::calib::run_rows(&graph, &calibration, &taps, "whole graph").unwrap();
    let truncated = vitc::compress::calib::run_taps(&graph, &calibration, &taps, "taps only").unwrap();
    assert_eq!(truncated.len(), 2);
    for (index, (a, b)) in full.iter().zip(&truncated).enumerate() {
        assert_eq!(a.cols, b.cols, "tap {index}: widths differ");
        assert_eq!(a.rows(), b.rows(), "tap {index}: row counts differ");
        assert_eq!(a.rows() % 64, 0, "tap {index}: {} rows are not whole samples", a.rows());
        let diff = a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff <= 1e-6, "tap {index}: truncated run differs by {diff}");
    }
}

#[test]
fn calibration_with_nan_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibration.npy");
    let mut values = vec![0.5f32; 4 * 28 * 28];
    values[2 * 28 * 28 + 17] = f32::NAN;
    let tensor = Tensor::F32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[4, 1, 28, 28]), values).unwrap());
    vitc::data::write_npy(&path, &tensor).unwrap();
    let error = Calibration::load(&path, &[2, 1, 28, 28], 4, &NormalizeOptions::default()).unwrap_err().to_string();
    assert!(error.contains("calibration.npy"), "{error}");
    assert!(error.contains("sample 2"), "{error}");
    assert!(error.contains("NaN"), "{error}");
}

/// Fewer samples than one batch: the error gives the count that was
/// requested, not the file's size.
#[test]
fn calibration_smaller_than_a_batch_is_rejected() {
    let path = fetched("data/mnist/train_images.npy");
    let error = Calibration::load(&path, &[32, 1, 28, 28], 5, &mnist_normalize()).unwrap_err().to_string();
    assert!(error.contains("5 sample(s) to use, fewer than one batch of 32"), "{error}");
}

/// A run that starts from values computed earlier (seeds) gives the same
/// rows as a run from the model's input.
#[test]
fn seeded_runs_match_full_runs() {
    let graph = mnist_graph(32);
    let calibration = calibration(64);
    let norms: Vec<_> =
        graph.topo_order().into_iter().filter(|&n| graph.node(n).op.name() == "LayerNorm").map(|n| graph.node(n).outputs[0]).collect();
    let adds: Vec<_> = graph
        .topo_order()
        .into_iter()
        .filter(|&n| graph.node(n).op.name() == "Add" && graph.node(n).name.contains("blocks.0"))
        .map(|n| graph.node(n).outputs[0])
        .collect();
    let stream = *adds.last().expect("block 0 ends with a residual Add");
    let taps = [*norms.last().unwrap(), norms[2], stream];
    let full = vitc::compress::calib::run_taps(&graph, &calibration, &taps, "full").unwrap();
    let seed = vitc::compress::calib::run_taps(&graph, &calibration, &[stream], "seed").unwrap();
    let seeded = vitc::compress::calib::run_taps_seeded(&graph, &calibration, &taps, &[(stream, &seed[0])], "seeded").unwrap();
    assert_eq!(seeded.len(), taps.len());
    for (index, (a, b)) in full.iter().zip(&seeded).enumerate() {
        assert_eq!(a.cols, b.cols, "tap {index}: widths differ");
        assert_eq!(a.rows(), b.rows(), "tap {index}: row counts differ");
        let diff = a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff <= 1e-5, "tap {index}: the seeded run differs by {diff}");
    }
}

/// A model whose output is an ArgMax has no f32 output to compare, and
/// the error names the output and its type.
#[test]
fn integer_output_is_rejected() {
    let mut graph = mnist_graph(32);
    let logits = graph.outputs()[0];
    let op = vitc::ir::Op::ArgMax { axis: 1, keepdims: false, select_last_index: false };
    let fact = vitc::ir::Fact::new(vitc::tensor::DType::I64, vec![32]);
    let classes = graph.add_simple(op, "classes", vec![Some(logits)], fact);
    graph.set_outputs(vec![classes]);
    let error = error_of("[[pass]]\nkind = \"prune\"\nflops = 0.3\nimportance = \"activation\"\n", &mut graph, Some(&calibration(32)));
    assert!(error.contains("'classes' is i64"), "{error}");
}
