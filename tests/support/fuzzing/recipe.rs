//! Runs one fuzzer input as a compression recipe. The stages are TOML
//! parsing with [`Recipe::validate`], a serialize-and-parse round trip of
//! every accepted recipe, and the recipe's passes on the shipped MNIST ViT,
//! which include the checks against the model.
//!
//! Two kinds of valid recipe stop after the round trip. Recipes that name
//! files (`load-weights`, `calibration.data`, a quantize `cache-dir`) stop
//! because the fuzzer must not read or write files outside its own folders.
//! Recipes that need calibration data stop because every calibration run
//! JIT-compiles the model, which took over 30 seconds per input under
//! AddressSanitizer (prune with distill); the compression tests cover those
//! passes on real data.

use std::path::Path;
use std::sync::OnceLock;

use vitc::compress::{PassSpec, Recipe, compress};
use vitc::ir::Graph;
use vitc::onnx::{ImportOptions, import_file};
use vitc::passes::PassManager;

/// The last stage a recipe reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecipeStage {
    /// The input is not UTF-8, so it is not TOML.
    Utf8,
    /// Rejected by the TOML parser or by `Recipe::validate`.
    Parse,
    /// Accepted, but it names files, so no pass ran.
    NamesFiles,
    /// Accepted, but it needs calibration data, so no pass ran.
    NeedsCalibration,
    /// Rejected by the checks against the model or by a pass.
    Compress,
    /// Every pass ran.
    Compressed,
}

/// Imports and canonicalizes the MNIST ViT for batch 1, once per process.
fn mnist_graph() -> &'static Graph {
    static GRAPH: OnceLock<Graph> = OnceLock::new();
    GRAPH.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist-vit/mnist_vit.onnx");
        let options = ImportOptions {
            input_shapes: [("input".to_string(), vec![1, 1, 28, 28])].into_iter().collect(),
            ..ImportOptions::default()
        };
        let mut graph = import_file(&path, &options).expect("the shipped MNIST ViT imports");
        PassManager::canonicalize().run(&mut graph).expect("the shipped MNIST ViT canonicalizes");
        graph
    })
}

fn names_files(recipe: &Recipe) -> bool {
    recipe.calibration.data.is_some()
        || recipe.passes.iter().any(|pass| match pass {
            PassSpec::LoadWeights(_) => true,
            PassSpec::Quantize(config) => config.cache_dir.is_some(),
            _ => false,
        })
}

/// Parses `bytes` as a recipe and, when it is valid, runs it on the MNIST ViT.
///
/// Panics when an error message is empty or when a valid recipe does not
/// survive serialization.
pub fn run_recipe_bytes(bytes: &[u8]) -> RecipeStage {
    let Ok(text) = std::str::from_utf8(bytes) else { return RecipeStage::Utf8 };
    let recipe = match Recipe::from_toml_str(text) {
        Ok(recipe) => recipe,
        Err(error) => {
            assert!(!error.to_string().trim().is_empty(), "a rejected recipe got an empty error message");
            return RecipeStage::Parse;
        }
    };

    // What validation accepted must serialize and parse back unchanged.
    let serialized = toml::to_string(&recipe).unwrap_or_else(|e| panic!("valid recipe {recipe:?} does not serialize: {e}"));
    let reparsed = Recipe::from_toml_str(&serialized)
        .unwrap_or_else(|e| panic!("serialized recipe is rejected: {e}\n{serialized}"));
    assert_eq!(reparsed, recipe, "recipe changed in a TOML round trip:\n{serialized}");
    if names_files(&recipe) {
        return RecipeStage::NamesFiles;
    }
    if recipe.needs_calibration() {
        return RecipeStage::NeedsCalibration;
    }

    // The passes on a real model.
    let mut graph = mnist_graph().clone();
    match compress(&mut graph, &recipe, None) {
        Ok(_) => RecipeStage::Compressed,
        Err(error) => {
            assert!(!error.to_string().trim().is_empty(), "compress failed with an empty error message");
            RecipeStage::Compress
        }
    }
}
