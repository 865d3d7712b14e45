//! INT8 quantization on the shipped MNIST ViT: generated code against the
//! interpreter layer by layer, accuracy on the 10,000 test images,
//! smoothing of outlier channels, and the calibration cache.
//!
//! The tests need the MNIST files of `scripts/fetch-test-data`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};
use vitc::codegen::jit::JitModel;
use vitc::data::read_npy;
use vitc::interp;
use vitc::ir::derive::derive_facts;
use vitc::ir::printer::print_graph;
use vitc::ir::{Fact, Graph, NodeId, Op, ValueId};
use vitc::lower::Program;
use vitc::onnx::{ImportOptions, import_file};
use vitc::passes::PassManager;
use vitc::quant::{ActivationMode, DynamicGranularity, QuantConfig, QuantReport, quantize};
use vitc::tensor::{DType, Tensor};
use vitc_runtime::ThreadPool;
use vitc_tests::fetched;

const MNIST_MEAN: f32 = 0.1307;
const MNIST_STD: f32 = 0.3081;
/// Images per batch in these tests.
const BATCH: usize = 100;
/// Calibration batches taken from the training images.
const CALIBRATION_BATCHES: usize = 5;

fn mnist_graph(batch: usize) -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist-vit/mnist_vit.onnx");
    let options = ImportOptions { input_shapes: [("input".to_string(), vec![batch, 1, 28, 28])].into_iter().collect(), ..ImportOptions::default() };
    let mut graph = import_file(&path, &options).unwrap();
    PassManager::canonicalize().run(&mut graph).unwrap();
    graph
}

/// Normalized training images, `count` batches spread over the training set.
fn calibration_batches(count: usize, batch: usize) -> Vec<Tensor> {
    let images = read_npy(&fetched("data/mnist/train_images.npy")).unwrap();
    let Tensor::U8(images) = images else { panic!("train_images.npy is not u8") };
    let pixels = images.as_slice().unwrap();
    let stride = images.shape()[0] / (count * batch);
    (0..count)
        .map(|b| {
            let mut data = Vec::with_capacity(batch * 784);
            for i in 0..batch {
                let image = (b * batch + i) * stride;
                data.extend(pixels[image * 784..(image + 1) * 784].iter().map(|&p| (p as f32 / 255.0 - MNIST_MEAN) / MNIST_STD));
            }
            Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[batch, 1, 28, 28]), data).unwrap())
        })
        .collect()
}

fn test_set() -> (Vec<f32>, Vec<usize>) {
    let images = read_npy(&fetched("data/mnist/test_images_f32.npy")).unwrap();
    let labels = read_npy(&fetched("data/mnist/test_labels.npy")).unwrap().to_i64_vec();
    (images.as_f32().unwrap().iter().copied().collect(), labels.into_iter().map(|l| l as usize).collect())
}

/// Top-1 accuracy in percent of the generated code on the test set.
fn top1(graph: &Graph, images: &[f32], labels: &[usize]) -> f64 {
    let program = Program::lower(graph).unwrap();
    let mut jit = JitModel::compile(&program, "model").unwrap();
    let pool = ThreadPool::new(2).unwrap();
    let mut correct = 0;
    for (batch, chunk) in images.chunks(BATCH * 784).enumerate() {
        let logits = jit.model.run_simple(chunk, Some(&pool)).unwrap();
        for (i, row) in logits.chunks(10).enumerate() {
            let best = (0..10).fold(0, |b, c| if row[c] > row[b] { c } else { b });
            correct += usize::from(best == labels[batch * BATCH + i]);
        }
    }
    100.0 * correct as f64 / labels.len() as f64
}

fn quantized(config: &QuantConfig) -> (Graph, QuantReport) {
    let mut graph = mnist_graph(BATCH);
    let report = quantize(&mut graph, config, &calibration_batches(CALIBRATION_BATCHES, BATCH)).unwrap();
    (graph, report)
}

/// Copies QLinear `node` and the quantization of its input into a graph
/// whose input is that f32 input.
fn single_layer(graph: &Graph, node: NodeId) -> (Graph, ValueId) {
    let n = graph.node(node);
    let quantizer = graph.producer(n.inputs[0].unwrap());
    let x = quantizer.inputs[0].unwrap();
    let mut layer = Graph::new();
    let input = layer.add_input("x", Fact::new(DType::F32, graph.fact(x).shape.clone()));
    let facts = derive_facts(&quantizer.op, &[Some(layer.fact(input))]).unwrap();
    let outputs = facts.into_iter().enumerate().map(|(i, f)| (format!("q{i}"), f)).collect();
    let q = layer.add_node(quantizer.op.clone(), "quantize", vec![Some(input)], outputs);
    let q_outputs = layer.node(q).outputs.clone();
    let mut operands = vec![Some(q_outputs[0])];
    for (slot, value) in n.inputs.iter().enumerate().skip(1) {
        operands.push(value.map(|v| {
            if slot == 1 && graph.konst(v).is_none() {
                return q_outputs[1];
            }
            let copy = layer.add_constant(format!("c{slot}"), Arc::clone(graph.konst(v).unwrap()));
            layer.value_mut(copy).fact.quant = graph.fact(v).quant.clone();
            copy
        }));
    }
    let facts: Vec<Fact> = {
        let operand_facts: Vec<Option<&Fact>> = operands.iter().map(|v| v.map(|v| layer.fact(v))).collect();
        derive_facts(&Op::QLinear, &operand_facts).unwrap()
    };
    let result = layer.add_simple(Op::QLinear, "layer", operands, facts[0].clone());
    layer.set_outputs(vec![result]);
    (layer, x)
}

/// Checks every QLinear of `graph`: the generated code on the layer's real
/// input (from the interpreter) must equal the interpreter bit for bit.
fn check_layers_exact(graph: &Graph, input: &Tensor) -> usize {
    let layers: Vec<NodeId> = graph.topo_order().into_iter().filter(|&n| graph.node(n).op == Op::QLinear).collect();
    let taps: Vec<ValueId> = layers.iter().map(|&n| graph.producer(graph.node(n).inputs[0].unwrap()).inputs[0].unwrap()).collect();
    let (_, inputs) = interp::run_with_taps(graph, &[(graph.inputs()[0], input.clone())], &taps).unwrap();
    for (&node, x) in layers.iter().zip(&inputs) {
        let (layer, _) = single_layer(graph, node);
        let expected = interp::run(&layer, &[(layer.inputs()[0], x.clone())]).unwrap();
        let expected: Vec<f32> = expected[0].as_f32().unwrap().iter().copied().collect();
        let mut jit = JitModel::compile(&Program::lower(&layer).unwrap(), "layer").unwrap();
        let data: Vec<f32> = x.as_f32().unwrap().iter().copied().collect();
        let pool = ThreadPool::new(2).unwrap();
        for pool in [None, Some(&pool)] {
            let got = jit.model.run_simple(&data, pool).unwrap();
            let mismatches = got.iter().zip(&expected).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(mismatches, 0, "layer '{}': {mismatches} of {} results differ from the interpreter", graph.node(node).name, got.len());
        }
    }
    layers.len()
}

#[test]
fn static_layers_match_interpreter_exactly() {
    let (graph, _) = quantized(&QuantConfig::default());
    let checked = check_layers_exact(&graph, &calibration_batches(1, BATCH)[0]);
    assert!(checked >= 10, "only {checked} INT8 layers");
    println!("static: {checked} layers bit-exact");
}

#[test]
fn dynamic_layers_match_interpreter_exactly() {
    for granularity in [DynamicGranularity::PerToken, DynamicGranularity::PerTensor] {
        let config = QuantConfig { activations: ActivationMode::Dynamic, dynamic_granularity: granularity, weight_max: 127, ..QuantConfig::default() };
        let (graph, _) = quantized(&config);
        let checked = check_layers_exact(&graph, &calibration_batches(1, BATCH)[0]);
        println!("dynamic {granularity:?} with 8-bit weights: {checked} layers bit-exact");
    }
}

#[test]
fn mnist_static_int8_accuracy() {
    let (images, labels) = test_set();
    let f32_top1 = top1(&mnist_graph(BATCH), &images, &labels);
    let (graph, report) = quantized(&QuantConfig::default());
    println!("{report}");
    let int8_top1 = top1(&graph, &images, &labels);
    println!("MNIST top-1: f32 {f32_top1:.2}%, static INT8 {int8_top1:.2}% (drop {:.2} points)", f32_top1 - int8_top1);
    assert!(f32_top1 - int8_top1 <= 0.3, "static INT8 loses {:.2} points", f32_top1 - int8_top1);

    let dynamic = QuantConfig { activations: ActivationMode::Dynamic, ..QuantConfig::default() };
    let (graph, _) = quantized(&dynamic);
    let dynamic_top1 = top1(&graph, &images, &labels);
    println!("MNIST top-1: dynamic per-token INT8 {dynamic_top1:.2}%");
    assert!(f32_top1 - dynamic_top1 <= 0.3, "dynamic INT8 loses {:.2} points", f32_top1 - dynamic_top1);
}

/// Multiplies channels `channels` of every LayerNorm that feeds Linears by
/// `factor` and divides the matching weight columns by it: the f32 model
/// computes the same function, but its LayerNorm results get outliers.
fn inject_outliers(graph: &mut Graph, channels: &[usize], factor: f32) {
    let norms: Vec<NodeId> = graph.topo_order().into_iter().filter(|&n| matches!(graph.node(n).op, Op::LayerNorm { .. })).collect();
    for norm in norms {
        let out = graph.node(norm).outputs[0];
        let users = graph.users(out);
        if users.is_empty() || !users.iter().all(|&(u, _)| graph.node(u).op == Op::Linear) {
            continue;
        }
        for slot in 1..3 {
            scale_constant(graph, norm, slot, |i, cols| if channels.contains(&(i % cols)) { factor } else { 1.0 });
        }
        for (user, _) in users {
            scale_constant(graph, user, 1, |i, cols| if channels.contains(&(i % cols)) { 1.0 / factor } else { 1.0 });
        }
    }
}

fn scale_constant(graph: &mut Graph, node: NodeId, slot: usize, factor: impl Fn(usize, usize) -> f32) {
    let Some(v) = graph.node(node).inputs[slot] else { return };
    let tensor = graph.konst(v).unwrap().as_f32().unwrap().clone();
    let cols = *tensor.shape().last().unwrap();
    let values: Vec<f32> = tensor.iter().enumerate().map(|(i, &x)| x * factor(i, cols)).collect();
    let scaled = graph.add_constant(format!("{}/outliers", graph.value(v).name), Arc::new(Tensor::F32(ArrayD::from_shape_vec(tensor.raw_dim(), values).unwrap())));
    graph.set_input(node, slot, Some(scaled));
}

#[test]
fn smoothing_helps_outlier_channels() {
    let (images, labels) = test_set();
    let calibration = calibration_batches(CALIBRATION_BATCHES, BATCH);
    let mut outliers = mnist_graph(BATCH);
    inject_outliers(&mut outliers, &[3, 17, 42], 40.0);
    let f32_top1 = top1(&outliers, &images, &labels);

    let mut results = vec![];
    for alpha in [None, Some(0.5)] {
        let mut graph = outliers.clone();
        let config = QuantConfig { smoothing_alpha: alpha, ..QuantConfig::default() };
        let report = quantize(&mut graph, &config, &calibration).unwrap();
        let accuracy = top1(&graph, &images, &labels);
        println!("outlier channels x40, smoothing {alpha:?}: top-1 {accuracy:.2}% (f32 {f32_top1:.2}%), output cosine {:.5}", report.output_cosine.unwrap());
        results.push((accuracy, report.output_cosine.unwrap()));
    }
    let (plain, smoothed) = (results[0], results[1]);
    assert!(smoothed.0 > plain.0, "smoothing did not help top-1: {:.2}% with, {:.2}% without", smoothed.0, plain.0);
    assert!(smoothed.1 > plain.1, "smoothing did not raise the output cosine: {:.5} with, {:.5} without", smoothed.1, plain.1);
}

#[test]
fn calibration_cache_skips_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    let config = QuantConfig { cache_dir: Some(PathBuf::from(dir.path())), calibration: vitc::quant::CalibrationMethod::Percentile, ..QuantConfig::default() };
    let calibration = calibration_batches(2, BATCH);
    let mut first = mnist_graph(BATCH);
    let report = quantize(&mut first, &config, &calibration).unwrap();
    assert_eq!(report.cached_passes, 0);
    assert_eq!(report.computed_passes, 3, "smoothing, range and histogram passes");
    let mut second = mnist_graph(BATCH);
    let report = quantize(&mut second, &config, &calibration).unwrap();
    assert_eq!(report.computed_passes, 0, "the rebuild recomputed statistics");
    assert_eq!(report.cached_passes, 3);
    assert_eq!(print_graph(&first), print_graph(&second));
}

/// Edited cache files (a channel list of the wrong length, an inverted
/// range) are recomputed, never used.
#[test]
fn tampered_calibration_cache_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let config = QuantConfig { cache_dir: Some(PathBuf::from(dir.path())), ..QuantConfig::default() };
    let calibration = calibration_batches(2, BATCH);
    let mut reference = mnist_graph(BATCH);
    quantize(&mut reference, &config, &calibration).unwrap();
    let files: Vec<PathBuf> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    let tampers: [(&str, fn(&mut serde_json::Value)); 2] = [
        ("short channel list", |entry| entry["channel_absmax"] = serde_json::json!([1.0])),
        ("inverted range", |entry| (entry["min"], entry["max"]) = (serde_json::json!(1.0), serde_json::json!(-1.0))),
    ];
    for (case, tamper) in tampers {
        for file in &files {
            let mut entries: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
            for entry in entries.as_array_mut().unwrap() {
                if case != "short channel list" || !entry["channel_absmax"].is_null() {
                    tamper(entry);
                }
            }
            std::fs::write(file, entries.to_string()).unwrap();
        }
        let mut graph = mnist_graph(BATCH);
        let report = quantize(&mut graph, &config, &calibration).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert!(report.computed_passes >= 1, "{case}: every pass came from the tampered cache");
        assert_eq!(print_graph(&graph), print_graph(&reference), "{case}");
    }
}

#[test]
fn printed_ir_shows_quantization() {
    let (graph, report) = quantized(&QuantConfig { calibration: vitc::quant::CalibrationMethod::Entropy, ..QuantConfig::default() });
    let text = print_graph(&graph);
    assert!(text.contains("QLinear"), "no QLinear in:\n{text}");
    assert!(text.contains("Quantize"), "no Quantize in:\n{text}");
    assert!(text.contains("q(scale="), "no activation parameters in:\n{text}");
    assert!(text.contains("q(symmetric per-channel"), "no weight scales in:\n{text}");
    assert!(report.decisions.iter().any(|d| d.op == "LayerNorm" && d.precision == "f32"));
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("relative_error"));
}

/// Builds `layer` for AArch64, links it with `tests/aarch64/driver.c`, runs
/// it under qemu on `input` and returns the output.
fn run_layer_on_aarch64(layer: &Graph, input: &[f32], dir: &Path) -> Vec<f32> {
    run_layer_on(layer, input, dir, "aarch64-unknown-linux-gnu", &[])
}

/// Like [`run_layer_on_aarch64`] for the AArch64 target `triple` (with
/// `+feature` suffixes), under qemu with `qemu_args`.
fn run_layer_on(layer: &Graph, input: &[f32], dir: &Path, triple: &str, qemu_args: &[&str]) -> Vec<f32> {
    use std::process::Command;
    let program = Program::lower(layer).unwrap();
    let object = vitc::codegen::object::emit_object(&program, "layer", Some(triple)).unwrap();
    std::fs::write(dir.join("layer.o"), object).unwrap();
    std::fs::write(dir.join("layer.h"), vitc::codegen::object::emit_header(&program, "layer")).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let driver = dir.join("driver");
    let compile = Command::new("aarch64-linux-gnu-gcc")
        .args(["-std=c11", "-O2", "-static", "-DMODEL=layer", "-DMODEL_UPPER=LAYER", "-DMODEL_HEADER=\"layer.h\"", "-I"])
        .arg(dir)
        .arg("-I")
        .arg(root.join("runtime/include"))
        .arg(root.join("tests/aarch64/driver.c"))
        .arg(dir.join("layer.o"))
        .args(["-lm", "-o"])
        .arg(&driver)
        .output()
        .expect("aarch64-linux-gnu-gcc not found; run scripts/install-test-tools");
    assert!(compile.status.success(), "compiling the AArch64 driver failed:\n{}", String::from_utf8_lossy(&compile.stderr));
    let bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("in.f32"), bytes).unwrap();
    let run = Command::new("qemu-aarch64").args(qemu_args).arg(&driver).arg(dir.join("in.f32")).arg(dir.join("out.f32")).output().expect("qemu-aarch64 not found; run scripts/install-test-tools");
    assert!(run.status.success(), "the AArch64 driver failed under qemu:\n{}", String::from_utf8_lossy(&run.stderr));
    std::fs::read(dir.join("out.f32")).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

#[test]
fn aarch64_layers_match_interpreter_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let dynamic = QuantConfig { activations: ActivationMode::Dynamic, weight_max: 127, ..QuantConfig::default() };
    for config in [QuantConfig::default(), dynamic] {
        let mut graph = mnist_graph(10);
        quantize(&mut graph, &config, &calibration_batches(2, 10)).unwrap();
        let layers: Vec<NodeId> = graph.topo_order().into_iter().filter(|&n| graph.node(n).op == Op::QLinear).collect();
        let taps: Vec<ValueId> = layers.iter().map(|&n| graph.producer(graph.node(n).inputs[0].unwrap()).inputs[0].unwrap()).collect();
        let (_, inputs) = interp::run_with_taps(&graph, &[(graph.inputs()[0], calibration_batches(1, 10)[0].clone())], &taps).unwrap();
        for (&node, x) in layers.iter().zip(&inputs) {
            let (layer, _) = single_layer(&graph, node);
            let expected = interp::run(&layer, &[(layer.inputs()[0], x.clone())]).unwrap();
            let data: Vec<f32> = x.as_f32().unwrap().iter().copied().collect();
            let got = run_layer_on_aarch64(&layer, &data, dir.path());
            let mismatches = got.iter().zip(expected[0].as_f32().unwrap().iter()).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(mismatches, 0, "{:?} layer '{}' on AArch64: {mismatches} of {} results differ", config.activations, graph.node(node).name, got.len());
        }
        println!("AArch64 under qemu, {:?} activations: {} layers bit-exact", config.activations, layers.len());
    }
}

/// Instructions of `object` as `aarch64-linux-gnu-objdump -d` prints them.
fn aarch64_disassembly(object: &[u8], dir: &Path) -> String {
    let path = dir.join("model.o");
    std::fs::write(&path, object).unwrap();
    let output = std::process::Command::new("aarch64-linux-gnu-objdump")
        .arg("-d")
        .arg(&path)
        .output()
        .expect("aarch64-linux-gnu-objdump not found; run scripts/install-test-tools");
    assert!(output.status.success(), "objdump failed:\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn aarch64_i8mm_target_emits_usdot() {
    let dir = tempfile::tempdir().unwrap();
    let mut graph = mnist_graph(10);
    quantize(&mut graph, &QuantConfig::default(), &calibration_batches(2, 10)).unwrap();
    let program = Program::lower(&graph).unwrap();
    let count = |triple: &str, mnemonic: &str| {
        let object = vitc::codegen::object::emit_object(&program, "model", Some(triple)).unwrap();
        aarch64_disassembly(&object, dir.path()).lines().filter(|line| line.split_whitespace().any(|word| word == mnemonic)).count()
    };
    let plain = count("aarch64-unknown-linux-gnu", "usdot");
    let i8mm = count("aarch64-unknown-linux-gnu+i8mm", "usdot");
    // Without FEAT_I8MM: widen to i16 (uxtl, sxtl), multiply, add pairs (saddlp).
    let widening = count("aarch64-unknown-linux-gnu", "saddlp");
    let widening_i8mm = count("aarch64-unknown-linux-gnu+i8mm", "saddlp");
    println!("usdot: {plain} without FEAT_I8MM, {i8mm} with it; saddlp: {widening} without, {widening_i8mm} with");
    assert_eq!(plain, 0, "usdot emitted for a target without FEAT_I8MM");
    assert!(i8mm > 0, "no usdot in the INT8 kernels of an i8mm target");
    assert!(widening > 0, "the plain target's INT8 kernels have no widening multiply");
    assert!(widening_i8mm < widening, "usdot did not replace the widening sequence");
}

#[test]
fn aarch64_usdot_layers_match_interpreter_exactly() {
    // qemu's "max" CPU implements FEAT_I8MM.
    let dir = tempfile::tempdir().unwrap();
    let mut graph = mnist_graph(10);
    quantize(&mut graph, &QuantConfig::default(), &calibration_batches(2, 10)).unwrap();
    let layers: Vec<NodeId> = graph.topo_order().into_iter().filter(|&n| graph.node(n).op == Op::QLinear).collect();
    let taps: Vec<ValueId> = layers.iter().map(|&n| graph.producer(graph.node(n).inputs[0].unwrap()).inputs[0].unwrap()).collect();
    let (_, inputs) = interp::run_with_taps(&graph, &[(graph.inputs()[0], calibration_batches(1, 10)[0].clone())], &taps).unwrap();
    for (&node, x) in layers.iter().zip(&inputs) {
        let (layer, _) = single_layer(&graph, node);
        let expected = interp::run(&layer, &[(layer.inputs()[0], x.clone())]).unwrap();
        let data: Vec<f32> = x.as_f32().unwrap().iter().copied().collect();
        let got = run_layer_on(&layer, &data, dir.path(), "aarch64-unknown-linux-gnu+i8mm", &["-cpu", "max"]);
        let mismatches = got.iter().zip(expected[0].as_f32().unwrap().iter()).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(mismatches, 0, "layer '{}' with usdot: {mismatches} of {} results differ", graph.node(node).name, got.len());
    }
    println!("AArch64 with usdot under qemu: {} layers bit-exact", layers.len());
}

#[test]
fn unknown_target_feature_is_named() {
    let program = Program::lower(&mnist_graph(1)).unwrap();
    let error = vitc::codegen::object::emit_object(&program, "model", Some("aarch64-unknown-linux-gnu+warp9")).unwrap_err().to_string();
    assert!(error.contains("unknown CPU feature 'warp9'"), "{error}");
    assert!(error.contains("i8mm"), "the message suggests a valid feature: {error}");
}

#[test]
fn x86_64_vnni_target_emits_vpdpbusd() {
    let dir = tempfile::tempdir().unwrap();
    let mut graph = mnist_graph(10);
    quantize(&mut graph, &QuantConfig::default(), &calibration_batches(2, 10)).unwrap();
    let program = Program::lower(&graph).unwrap();
    let count = |triple: &str, mnemonic: &str| {
        let object = vitc::codegen::object::emit_object(&program, "model", Some(triple)).unwrap();
        let path = dir.path().join("model.o");
        std::fs::write(&path, object).unwrap();
        let output = std::process::Command::new("objdump").arg("-d").arg(&path).output().expect("objdump (binutils) not found");
        assert!(output.status.success(), "objdump failed:\n{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).lines().filter(|line| line.split_whitespace().any(|word| word == mnemonic)).count()
    };
    let baseline = "x86_64-unknown-linux-gnu";
    let vnni = "x86_64-unknown-linux-gnu+avx512vnni+avx512vl";
    let counts = [count(baseline, "vpmaddubsw"), count(baseline, "vpdpbusd"), count(vnni, "vpmaddubsw"), count(vnni, "vpdpbusd")];
    println!("x86-64-v3: {} vpmaddubsw, {} vpdpbusd; with VNNI: {} vpmaddubsw, {} vpdpbusd", counts[0], counts[1], counts[2], counts[3]);
    assert!(counts[0] > 0, "baseline target has no vpmaddubsw: {counts:?}");
    assert_eq!(counts[1], 0, "baseline target has vpdpbusd: {counts:?}");
    assert_eq!(counts[2], 0, "VNNI target still has vpmaddubsw: {counts:?}");
    assert!(counts[3] > 0, "VNNI target has no vpdpbusd: {counts:?}");
}

/// Quantizes a one-node ConvTranspose model with `layers` overrides and
/// returns the operator names of the result.
fn quantized_conv_transpose_ops(layers: Vec<vitc::quant::LayerOverride>) -> Vec<String> {
    let mut b = vitc_tests::ModelBuilder::new(13);
    b.input("x", 1, &[1, 4, 3, 3].map(vitc_tests::Dim::Fixed))
        .init_f32("w", &[4, 2, 2, 2], &(0..32).map(|i| (i as f32 - 15.5) / 16.0).collect::<Vec<_>>())
        .node("ConvTranspose", &["x", "w"], &["y"], vec![vitc_tests::attr_ints("strides", &[2, 2])])
        .output("y");
    let dir = tempfile::tempdir().unwrap();
    let mut graph = import_file(&b.write(&dir.path().join("ct.onnx")), &ImportOptions::default()).unwrap();
    PassManager::canonicalize().run(&mut graph).unwrap();
    let name = graph.node_ids().map(|id| graph.node(id).name.clone()).find(|n| n.contains("ConvTranspose")).unwrap();
    let layers = layers.into_iter().map(|l| vitc::quant::LayerOverride { name: l.name.replace("NAME", &name), ..l }).collect();
    let calibration = vec![Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[1, 4, 3, 3]), (0..36).map(|i| i as f32 / 36.0).collect()).unwrap())];
    quantize(&mut graph, &QuantConfig { layers, ..QuantConfig::default() }, &calibration).unwrap();
    graph.node_ids().map(|id| graph.node(id).op.name().to_string()).collect()
}

#[test]
fn conv_transpose_override_by_either_name() {
    use vitc::quant::{LayerOverride, Precision};
    let ops = quantized_conv_transpose_ops(vec![]);
    assert!(ops.iter().any(|op| op == "QLinear"), "{ops:?}");
    assert!(ops.iter().any(|op| op == "Col2im"), "{ops:?}");
    for name in ["NAME", "NAME/gemm"] {
        let ops = quantized_conv_transpose_ops(vec![LayerOverride { name: name.into(), precision: Precision::F32 }]);
        assert!(ops.iter().any(|op| op == "ConvTranspose"), "override {name}: {ops:?}");
        assert!(!ops.iter().any(|op| op == "QLinear"), "override {name}: {ops:?}");
    }
}

/// INT8 has no NaN, so quantizing a weight or bias that contains one
/// would turn a broken layer into finite, wrong outputs. The quantize pass
/// rejects it instead and names the constant.
#[test]
fn nan_constant_rejected_by_quantize() {
    for (slot, what) in [(1, "weight"), (2, "bias")] {
        let mut graph = mnist_graph(1);
        let fc1 = graph.node_ids().find(|&n| graph.node(n).name == "/blocks.0/mlp/fc1").expect("fc1 of block 0");
        scale_constant(&mut graph, fc1, slot, |i, _| if i == 5 { f32::NAN } else { 1.0 });
        let config = QuantConfig { activations: vitc::quant::ActivationMode::Dynamic, smoothing_alpha: None, ..QuantConfig::default() };
        let error = quantize(&mut graph, &config, &[]).unwrap_err().to_string();
        assert!(error.contains(&format!("/blocks.0/mlp/fc1/{what}")), "{error}");
        assert!(error.contains("1 NaN value"), "{error}");
    }
}
