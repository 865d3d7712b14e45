//! Runs the `mnist-embed` binary itself. The numeric checks against the
//! interpreter are in `tests/embedding.rs` at the repository root.

use std::path::PathBuf;
use std::process::Command;

/// Returns the path of a MNIST file that `scripts/fetch-test-data` writes,
/// failing with the fix when it is missing.
fn mnist_file(name: &str) -> PathBuf {
    let cache = match std::env::var_os("VITC_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/vitc"),
    };
    let path = cache.join("data/mnist").join(name);
    assert!(path.exists(), "{} is missing; run scripts/fetch-test-data first", path.display());
    path
}

#[test]
fn binary_prints_accuracy() {
    let output = Command::new(env!("CARGO_BIN_EXE_mnist-embed"))
        .arg(mnist_file("test_first100.u8"))
        .arg(mnist_file("test_first100_labels.txt"))
        .output()
        .expect("mnist-embed starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "mnist-embed failed with {}:\n{}", output.status, String::from_utf8_lossy(&output.stderr));

    assert_eq!(stdout.lines().count(), 101, "expected 100 image lines and the accuracy:\n{stdout}");
    let accuracy = stdout.lines().last().unwrap();
    let correct: usize = accuracy
        .strip_prefix("accuracy: ")
        .and_then(|rest| rest.split('/').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("last line is not 'accuracy: C/N (P%)': {accuracy}"));
    assert!(correct >= 95, "accuracy {correct}/100 is below 95%");
}

#[test]
fn binary_reports_missing_file() {
    let output = Command::new(env!("CARGO_BIN_EXE_mnist-embed"))
        .arg("/nonexistent/images.u8")
        .output()
        .expect("mnist-embed starts");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "wrong exit status; stderr:\n{stderr}");
    assert!(stderr.contains("cannot read /nonexistent/images.u8"), "stderr does not name the file:\n{stderr}");
}
