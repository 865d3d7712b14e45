//! Every error path of loading and importing: each must return an error
//! that names the file, node, tensor or input involved, never panic.

use std::collections::HashMap;
use std::path::Path;

use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::{Message, StringStringEntryProto, TensorProto};
use vitc::Error;
use vitc::onnx::{ImportOptions, import_file};
use vitc_tests::{Dim, ModelBuilder, tensor_f32};

const F32: i32 = 1;

fn import(path: &Path) -> Result<vitc::ir::Graph, Error> {
    import_file(path, &ImportOptions::default())
}

/// `y = x + w` with `w` given by `weight`.
fn add_model(weight: TensorProto) -> ModelBuilder {
    let mut m = ModelBuilder::new(14);
    m.input("x", F32, &[Dim::Fixed(4)]).initializer(weight).node("Add", &["x", "w"], &["y"], vec![]).output("y");
    m
}

fn external_weight(location: &str, offset: u64) -> TensorProto {
    let entry = |key: &str, value: String| StringStringEntryProto { key: key.into(), value, ..Default::default() };
    TensorProto {
        name: "w".into(),
        dims: vec![4],
        data_type: 1,
        data_location: DataLocation::EXTERNAL.into(),
        external_data: vec![entry("location", location.into()), entry("offset", offset.to_string())],
        ..Default::default()
    }
}

#[test]
fn missing_file_names_path() {
    let err = import(Path::new("/nonexistent/model.onnx")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/model.onnx"));
}

#[test]
fn garbage_bytes_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.onnx");
    std::fs::write(&path, [0xffu8, 0xff, 0xff, 0xff, 0x0f]).unwrap();
    let err = import(&path).unwrap_err();
    assert!(matches!(err, Error::Protobuf { .. }), "{err}");
    assert!(err.to_string().contains("bad.onnx"));
}

#[test]
fn truncated_model_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = add_model(tensor_f32("w", &[4], &[1.0, 2.0, 3.0, 4.0])).write(&dir.path().join("m.onnx"));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = import(&path).unwrap_err();
    assert!(matches!(err, Error::Protobuf { .. }), "{err}");
}

/// Exporters that write fields in number order (PyTorch's C++ protobuf)
/// put the opset imports (field 8) after the graph (field 7). A file cut
/// right after its graph then parses with no opset imports, and the error
/// names that likely cause.
#[test]
fn cut_after_graph_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = add_model(tensor_f32("w", &[4], &[1.0, 2.0, 3.0, 4.0])).build();
    model.opset_import.clear();
    let cut = model.write_to_bytes().unwrap();
    let path = dir.path().join("cut.onnx");
    std::fs::write(&path, &cut).unwrap();
    let err = import(&path).unwrap_err().to_string();
    assert!(err.contains("cut.onnx"), "{err}");
    assert!(err.contains("cut short"), "{err}");
}

#[test]
fn unsupported_ops_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = ModelBuilder::new(14);
    m.input("x", F32, &[Dim::Fixed(4)])
        .node("Relu", &["x"], &["a"], vec![])
        .node("NonMaxSuppression", &["a"], &["b"], vec![])
        .node("Einsum", &["b"], &["c"], vec![])
        .output("c");
    let err = import(&m.write(&dir.path().join("m.onnx"))).unwrap_err();
    let Error::Unsupported(ops) = &err else { panic!("expected Unsupported, got {err}") };
    assert_eq!(ops.len(), 2);
    let text = err.to_string();
    assert!(text.contains("NonMaxSuppression"), "{text}");
    assert!(text.contains("Einsum"), "{text}");
    assert!(text.contains("/NonMaxSuppression_1"), "{text}");
    assert!(text.contains("opset 14"), "{text}");
}

#[test]
fn shape_mismatch_names_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = ModelBuilder::new(14);
    m.input("x", F32, &[Dim::Fixed(1), Dim::Fixed(4)])
        .init_f32("w", &[5, 3], &[0.0; 15])
        .node("MatMul", &["x", "w"], &["y"], vec![])
        .output("y");
    let err = import(&m.write(&dir.path().join("m.onnx"))).unwrap_err();
    assert!(matches!(err, Error::Node { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("/MatMul_0"), "{text}");
    assert!(text.contains("MatMul"), "{text}");
}

#[test]
fn data_length_mismatch_names_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let mut weight = tensor_f32("w", &[4], &[1.0, 2.0, 3.0]);
    weight.dims = vec![4];
    let err = import(&add_model(weight).write(&dir.path().join("m.onnx"))).unwrap_err();
    assert!(matches!(err, Error::Tensor { .. }), "{err}");
    assert!(err.to_string().contains("'w'"));
}

#[test]
fn unsupported_element_type_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let weight = TensorProto { name: "w".into(), dims: vec![4], data_type: 8, ..Default::default() };
    let err = import(&add_model(weight).write(&dir.path().join("m.onnx"))).unwrap_err();
    assert!(err.to_string().contains("STRING"), "{err}");
}

#[test]
fn external_data_loads() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<u8> = [9.0f32, 1.0, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.path().join("weights.bin"), values).unwrap();
    let graph = import(&add_model(external_weight("weights.bin", 4)).write(&dir.path().join("m.onnx"))).unwrap();
    let out = vitc::interp::run(&graph, &[(graph.inputs()[0], vitc::tensor::Tensor::from_f32s(&[0.0; 4]))]).unwrap();
    assert_eq!(out[0].to_f64_vec(), vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn external_data_parent_dir_rejected() {
    let root = tempfile::tempdir().unwrap();
    let model_dir = root.path().join("model");
    std::fs::create_dir(&model_dir).unwrap();
    std::fs::write(root.path().join("secret.bin"), [0u8; 16]).unwrap();
    let err = import(&add_model(external_weight("../secret.bin", 0)).write(&model_dir.join("m.onnx"))).unwrap_err();
    assert!(matches!(err, Error::ExternalData { .. }), "{err}");
    assert!(err.to_string().contains(".."), "{err}");
}

#[test]
fn external_data_absolute_rejected() {
    let root = tempfile::tempdir().unwrap();
    let secret = root.path().join("secret.bin");
    std::fs::write(&secret, [0u8; 16]).unwrap();
    let model_dir = root.path().join("model");
    std::fs::create_dir(&model_dir).unwrap();
    let location = secret.to_str().unwrap();
    let err = import(&add_model(external_weight(location, 0)).write(&model_dir.join("m.onnx"))).unwrap_err();
    assert!(err.to_string().contains("absolute"), "{err}");
}

#[test]
fn external_data_symlink_out_rejected() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("secret.bin"), [0u8; 16]).unwrap();
    let model_dir = root.path().join("model");
    std::fs::create_dir(&model_dir).unwrap();
    std::os::unix::fs::symlink(root.path().join("secret.bin"), model_dir.join("weights.bin")).unwrap();
    let err = import(&add_model(external_weight("weights.bin", 0)).write(&model_dir.join("m.onnx"))).unwrap_err();
    assert!(err.to_string().contains("outside the model's folder"), "{err}");
}

#[test]
fn external_data_past_end_rejected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("weights.bin"), [0u8; 16]).unwrap();
    let err = import(&add_model(external_weight("weights.bin", 8)).write(&dir.path().join("m.onnx"))).unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
}

#[test]
fn external_data_missing_file_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let err = import(&add_model(external_weight("absent.bin", 0)).write(&dir.path().join("m.onnx"))).unwrap_err();
    assert!(err.to_string().contains("absent.bin"), "{err}");
}

fn dynamic_model() -> ModelBuilder {
    let mut m = ModelBuilder::new(14);
    m.input("x", F32, &[Dim::Symbolic("batch"), Dim::Fixed(4)]).node("Relu", &["x"], &["y"], vec![]).output("y");
    m
}

#[test]
fn batch_defaults_to_one() {
    let dir = tempfile::tempdir().unwrap();
    let graph = import(&dynamic_model().write(&dir.path().join("m.onnx"))).unwrap();
    assert_eq!(graph.fact(graph.inputs()[0]).shape, vec![1, 4]);
}

#[test]
fn input_shape_binds_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dynamic_model().write(&dir.path().join("m.onnx"));
    let options = ImportOptions { input_shapes: HashMap::from([("x".to_string(), vec![3, 4])]), ..Default::default() };
    let graph = import_file(&path, &options).unwrap();
    assert_eq!(graph.fact(graph.outputs()[0]).shape, vec![3, 4]);
}

#[test]
fn input_shape_conflict_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dynamic_model().write(&dir.path().join("m.onnx"));
    let options = ImportOptions { input_shapes: HashMap::from([("x".to_string(), vec![3, 5])]), ..Default::default() };
    let err = import_file(&path, &options).unwrap_err();
    assert!(matches!(err, Error::Input { .. }), "{err}");
    assert!(err.to_string().contains("[3,5]"), "{err}");
}

#[test]
fn input_shape_unknown_name_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dynamic_model().write(&dir.path().join("m.onnx"));
    let options = ImportOptions { input_shapes: HashMap::from([("image".to_string(), vec![1, 4])]), ..Default::default() };
    let err = import_file(&path, &options).unwrap_err();
    assert!(err.to_string().contains("'image'"), "{err}");
}

#[test]
fn symbolic_inner_dim_needs_binding() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = ModelBuilder::new(14);
    m.input("x", F32, &[Dim::Fixed(1), Dim::Symbolic("tokens")]).node("Relu", &["x"], &["y"], vec![]).output("y");
    let err = import(&m.write(&dir.path().join("m.onnx"))).unwrap_err();
    assert!(err.to_string().contains("--input-shape"), "{err}");
}

#[test]
fn cycle_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = ModelBuilder::new(14);
    m.input("x", F32, &[Dim::Fixed(4)])
        .node("Add", &["x", "b"], &["a"], vec![])
        .node("Relu", &["a"], &["b"], vec![])
        .output("b");
    let err = import(&m.write(&dir.path().join("m.onnx"))).unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
}

#[test]
fn undefined_operand_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = ModelBuilder::new(14);
    m.input("x", F32, &[Dim::Fixed(4)]).node("Add", &["x", "nowhere"], &["y"], vec![]).output("y");
    let err = import(&m.write(&dir.path().join("m.onnx"))).unwrap_err();
    assert!(err.to_string().contains("'nowhere'"), "{err}");
}

#[test]
fn external_data_fifo_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("weights.bin");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let err = import(&add_model(external_weight("weights.bin", 0)).write(&dir.path().join("m.onnx"))).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn model_fifo_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("m.onnx");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let err = import(&fifo).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn model_device_rejected() {
    let err = import(Path::new("/dev/zero")).unwrap_err();
    assert!(err.to_string().contains("/dev/zero"), "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

/// `external_weight` with extra `external_data` entries.
fn external_weight_with(location: &str, entries: &[(&str, &str)]) -> TensorProto {
    let mut weight = external_weight(location, 0);
    weight.external_data.retain(|entry| entry.key != "offset");
    for (key, value) in entries {
        weight.external_data.push(StringStringEntryProto { key: key.to_string(), value: value.to_string(), ..Default::default() });
    }
    weight
}

#[test]
fn external_data_bad_offset_or_length_rejected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("weights.bin"), [0u8; 64]).unwrap();
    let max = u64::MAX.to_string();
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[("offset", &max)], "overflows"),
        (&[("offset", "18446744073709551600")], "overflows"),
        (&[("offset", "49")], "outside"),
        (&[("offset", "-4")], "not a non-negative integer"),
        (&[("offset", "0x10")], "not a non-negative integer"),
        (&[("length", "15")], "'length' is 15 bytes"),
    ];
    for (entries, expected) in cases {
        let model = add_model(external_weight_with("weights.bin", entries)).write(&dir.path().join("m.onnx"));
        let err = import(&model).unwrap_err();
        assert!(matches!(err, Error::ExternalData { .. }), "{entries:?}: {err}");
        assert!(err.to_string().contains(expected), "{entries:?}: {err}");
        assert!(err.to_string().contains("'w'"), "the error names the tensor: {err}");
    }

    // The last 16 bytes are in range.
    let model = add_model(external_weight_with("weights.bin", &[("offset", "48"), ("length", "16")])).write(&dir.path().join("m.onnx"));
    assert!(import(&model).is_ok());
}

#[test]
fn external_data_sneaky_paths_rejected() {
    let root = tempfile::tempdir().unwrap();
    let model_dir = root.path().join("model");
    std::fs::create_dir_all(model_dir.join("sub")).unwrap();
    std::fs::write(root.path().join("secret.bin"), [0u8; 16]).unwrap();
    std::fs::write(model_dir.join("weights.bin"), [0u8; 16]).unwrap();
    // A symlinked folder that leads out of the model's folder.
    std::os::unix::fs::symlink(root.path(), model_dir.join("up")).unwrap();

    let cases = [
        ("sub/../../secret.bin", "contains '..'"),
        ("sub/../weights.bin", "contains '..'"),
        ("./../secret.bin", "contains '..'"),
        ("up/secret.bin", "outside the model's folder"),
        ("", "'location' is empty"),
        ("sub", "not a regular file"),
    ];
    for (location, expected) in cases {
        let model = add_model(external_weight(location, 0)).write(&model_dir.join("m.onnx"));
        let err = import(&model).unwrap_err();
        assert!(matches!(err, Error::ExternalData { .. }), "{location}: {err}");
        assert!(err.to_string().contains(expected), "{location}: {err}");
    }

    // Inside the folder, `./` and a symlink that stays inside are accepted.
    std::os::unix::fs::symlink(model_dir.join("weights.bin"), model_dir.join("sub/link.bin")).unwrap();
    for location in ["./weights.bin", "sub/link.bin"] {
        let model = add_model(external_weight(location, 0)).write(&model_dir.join("m.onnx"));
        assert!(import(&model).is_ok(), "{location}");
    }
}

#[test]
fn huge_expand_rejected_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = ModelBuilder::new(14);
    m.input("x", F32, &[Dim::Fixed(1)])
        .init_i64("shape", &[2], &[1 << 20, 1 << 20])
        .node("Expand", &["x", "shape"], &["y"], vec![])
        .output("y");
    let err = import(&m.write(&dir.path().join("m.onnx"))).unwrap_err();
    assert!(matches!(err, Error::Limit(_)), "{err}");
    assert!(err.to_string().contains("Expand"), "{err}");
}

#[test]
fn unsupported_opset_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = ModelBuilder::new(99);
    m.input("x", F32, &[Dim::Fixed(4)]).node("Relu", &["x"], &["a"], vec![]).node("Relu", &["a"], &["y"], vec![]).output("y");
    let err = import(&m.write(&dir.path().join("m.onnx"))).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("opset 99"), "{text}");
    assert_eq!(text.matches("opset 99").count(), 1, "{text}");
}

#[test]
fn output_padding_not_below_stride_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = ModelBuilder::new(14);
    m.input("x", F32, &[Dim::Fixed(1), Dim::Fixed(2), Dim::Fixed(3), Dim::Fixed(3)])
        .init_f32("w", &[2, 1, 3, 3], &[0.5; 18])
        .node(
            "ConvTranspose",
            &["x", "w"],
            &["y"],
            vec![vitc_tests::attr_ints("strides", &[2, 2]), vitc_tests::attr_ints("output_padding", &[2, 2])],
        )
        .output("y");
    let text = import(&m.write(&dir.path().join("m.onnx"))).unwrap_err().to_string();
    assert!(text.contains("ConvTranspose"), "{text}");
    assert!(text.contains("output_padding"), "{text}");
    assert!(text.contains("less than"), "{text}");
}
