//! Replays the committed fuzz inputs on stable Rust: the seed corpora and
//! every input that once crashed a fuzz target (`fuzz/seeds/TARGET/` and
//! `fuzz/regressions/TARGET/`). Each input must be rejected with an error
//! or run to the end; a panic fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vitc_tests::fuzzing::harness::{Stage, run_model_bytes, run_spec_bytes};
use vitc_tests::fuzzing::recipe::{RecipeStage, run_recipe_bytes};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `fuzz/KIND/TARGET`, sorted by name.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every input through `run` and counts the stage each one reached.
fn replay<S: Ord>(files: &[PathBuf], run: fn(&[u8]) -> S) -> BTreeMap<S, usize> {
    let mut stages = BTreeMap::new();
    for path in files {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        println!("{}", path.display());
        *stages.entry(run(&bytes)).or_insert(0) += 1;
    }
    stages
}

#[test]
fn graph_import_seeds_replay() {
    let files = inputs("seeds", "graph_import");
    assert!(files.len() >= 50, "expected the committed seed corpus, found {} files", files.len());
    let stages = replay(&files, run_spec_bytes);
    println!("stages reached: {stages:?}");
    assert!(stages.contains_key(&Stage::Ran), "no seed reaches the generated code: {stages:?}");
    assert!(stages.contains_key(&Stage::Import), "no seed is rejected by the importer: {stages:?}");
}

#[test]
fn onnx_loader_seeds_replay() {
    let files = inputs("seeds", "onnx_loader");
    assert!(files.len() >= 50, "expected the committed seed corpus, found {} files", files.len());
    let stages = replay(&files, run_model_bytes);
    println!("stages reached: {stages:?}");
    assert!(stages.contains_key(&Stage::Ran), "no seed reaches the generated code: {stages:?}");
}

#[test]
fn fuzz_crashes_stay_fixed() {
    // A target that never crashed has no regressions folder.
    let graph = inputs("regressions", "graph_import");
    let loader = if fuzz_dir().join("regressions/onnx_loader").is_dir() { inputs("regressions", "onnx_loader") } else { Vec::new() };
    assert!(!graph.is_empty(), "the crash the graph_import target found is missing from fuzz/regressions");
    println!("graph_import stages reached: {:?}", replay(&graph, run_spec_bytes));
    println!("onnx_loader stages reached: {:?}", replay(&loader, run_model_bytes));
    let recipe = inputs("regressions", "recipe");
    assert!(!recipe.is_empty(), "the crash the recipe target found is missing from fuzz/regressions");
    println!("recipe stages reached: {:?}", replay(&recipe, run_recipe_bytes));
}

#[test]
fn recipe_seeds_replay() {
    let files = inputs("seeds", "recipe");
    assert!(files.len() >= 25, "expected the committed seed corpus, found {} files", files.len());
    let stages = replay(&files, run_recipe_bytes);
    println!("stages reached: {stages:?}");
    assert!(stages.contains_key(&RecipeStage::Compressed), "no seed runs its passes: {stages:?}");
    assert!(stages.contains_key(&RecipeStage::Parse), "no seed is rejected by the parser: {stages:?}");
}
