//! The ONNX backend node tests (shipped in the `onnx` wheel, linked into the
//! cache by `scripts/fetch-test-data`) run through the importer and the
//! reference interpreter.
//!
//! A case whose model uses an operator the importer does not map, or an
//! element type vitc does not support, is not applicable and is counted as
//! such. Every other case must pass, unless `onnx_node_skips.txt` lists it
//! with the reason; a listed case that passes fails the run, so the list
//! cannot go stale. Tolerances are those of the ONNX backend test runner:
//! `|actual - expected| <= 1e-7 + 1e-3 * |expected|`, NaN where NaN is expected.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use onnx_protobuf::{Message, ModelProto, TensorProto};
use vitc::onnx::import::Unsupported;
use vitc::onnx::ops::check_supported;
use vitc::onnx::tensor::{DEFAULT_MAX_TENSOR_BYTES, decode_tensor};
use vitc::onnx::{ImportOptions, OnnxModel, import_model};
use vitc::tensor::{DType, Tensor};
use vitc_tests::fetched;

enum Outcome {
    Passed,
    NotApplicable(String),
    Failed(String),
}

#[test]
fn onnx_backend_node_tests() {
    let root = fetched("onnx-node-tests");
    let skips = read_skip_list();
    let mut cases: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();

    let mut passed = 0;
    let mut not_applicable: BTreeMap<String, usize> = BTreeMap::new();
    let mut skipped = 0;
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let outcome = run_case(case);
        match (outcome, skips.get(&name)) {
            (Outcome::NotApplicable(reason), _) => *not_applicable.entry(reason).or_default() += 1,
            (Outcome::Passed, None) => passed += 1,
            (Outcome::Passed, Some(_)) => failures.push(format!("{name}: passes but is listed in onnx_node_skips.txt; remove it")),
            (Outcome::Failed(_), Some(_)) => skipped += 1,
            (Outcome::Failed(message), None) => failures.push(format!("{name}: {message}")),
        }
    }

    let applicable = passed + skipped + failures.len();
    println!("ONNX node tests: {} cases, {applicable} applicable", cases.len());
    println!("{passed} passed, {} failed, {skipped} skipped (listed in onnx_node_skips.txt)", failures.len());
    let mut reasons: Vec<_> = not_applicable.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1));
    println!("not applicable: {}", not_applicable.values().sum::<usize>());
    for (reason, count) in reasons.iter().take(25) {
        println!("  {count:5}  {reason}");
    }
    assert!(failures.is_empty(), "{} node tests failed:\n{}", failures.len(), failures.join("\n"));
    assert!(passed > 300, "only {passed} node tests passed; the suite did not run");
}

/// `name -> reason` from the skip list next to this file.
fn read_skip_list() -> HashMap<String, String> {
    let text = include_str!("onnx_node_skips.txt");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, reason) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (name.to_string(), reason.trim().to_string())
        })
        .collect()
}

fn run_case(case: &Path) -> Outcome {
    let model_path = case.join("model.onnx");
    let Ok(bytes) = std::fs::read(&model_path) else { return Outcome::NotApplicable("no model.onnx".into()) };
    let Ok(proto) = ModelProto::parse_from_bytes(&bytes) else { return Outcome::Failed("model does not parse".into()) };
    if let Some(reason) = not_applicable(&proto) {
        return Outcome::NotApplicable(reason);
    }

    let data_dir = case.join("test_data_set_0");
    let mut proto = proto;
    let inputs = match read_tensors(&data_dir, "input") {
        Ok(t) => t,
        Err(e) => return Outcome::NotApplicable(format!("test data: {e}")),
    };
    let inputs = bind_shape_operands(&mut proto, &data_dir, inputs);
    let expected = match read_tensors(&data_dir, "output") {
        Ok(t) => t,
        Err(e) => return Outcome::NotApplicable(format!("test data: {e}")),
    };

    // Bind every graph input to the shape of its test tensor.
    let graph_proto = proto.graph.as_ref().unwrap();
    let initializers: Vec<&str> = graph_proto.initializer.iter().map(|t| t.name.as_str()).collect();
    let input_names: Vec<&str> =
        graph_proto.input.iter().map(|i| i.name.as_str()).filter(|n| !initializers.contains(n)).collect();
    let input_shapes =
        input_names.iter().zip(&inputs).map(|(name, t)| (name.to_string(), t.shape().to_vec())).collect();
    let options = ImportOptions { input_shapes, ..ImportOptions::default() };

    let model = OnnxModel { proto, path: model_path.clone(), dir: case.to_path_buf() };
    let graph = match import_model(&model, &options) {
        Ok(g) => g,
        Err(e) => return Outcome::Failed(format!("import: {e}")),
    };
    if let Err(e) = vitc::ir::verify::verify(&graph, "import") {
        return Outcome::Failed(e.to_string());
    }
    let feeds: Vec<_> = graph.inputs().iter().copied().zip(inputs).collect();
    let outputs = match vitc::interp::run(&graph, &feeds) {
        Ok(o) => o,
        Err(e) => return Outcome::Failed(format!("run: {e}")),
    };
    if outputs.len() != expected.len() {
        return Outcome::Failed(format!("{} outputs, expected {}", outputs.len(), expected.len()));
    }
    for (i, (actual, expected)) in outputs.iter().zip(&expected).enumerate() {
        if let Err(message) = compare(actual, expected) {
            return Outcome::Failed(format!("output {i}: {message}"));
        }
    }
    Outcome::Passed
}

/// Why the case cannot apply to vitc, if it cannot: an unsupported
/// operator, domain, opset or element type.
fn not_applicable(proto: &ModelProto) -> Option<String> {
    let Some(opset) = proto.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version)
    else {
        return Some("no default-domain opset (ai.onnx.ml or training)".into());
    };
    let graph = proto.graph.as_ref()?;
    for node in &graph.node {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Some(format!("domain {}", node.domain));
        }
        match check_supported(node, opset) {
            None => {}
            Some(Unsupported::Variant(reason)) => return Some(format!("operator {}: {reason}", node.op_type)),
            Some(_) => return Some(format!("operator {}", node.op_type)),
        }
    }
    let value_types = graph.input.iter().chain(&graph.output).map(|v| {
        use onnx_protobuf::type_proto::Value;
        match v.type_.as_ref().and_then(|t| t.value.as_ref()) {
            Some(Value::TensorType(t)) => Some(t.elem_type),
            _ => None,
        }
    });
    let tensor_types = graph.initializer.iter().map(|t| Some(t.data_type));
    for elem_type in value_types.chain(tensor_types) {
        match elem_type {
            None => return Some("non-tensor input or output type".into()),
            Some(code) if DType::from_onnx(code).is_none() => {
                return Some(format!("element type {}", DType::onnx_name(code)));
            }
            Some(_) => {}
        }
    }
    None
}

/// Operand slots whose data determines a result's shape (or that select
/// inference behaviour), by op type. vitc needs these at compile time.
const SHAPE_OPERANDS: &[(&str, &[usize])] = &[
    ("Reshape", &[1]),
    ("Expand", &[1]),
    ("Tile", &[1]),
    ("Slice", &[1, 2, 3, 4]),
    ("Split", &[1]),
    ("Pad", &[1, 3]),
    ("Resize", &[1, 2, 3]),
    ("Squeeze", &[1]),
    ("Unsqueeze", &[1]),
    ("Range", &[0, 1, 2]),
    ("ConstantOfShape", &[0]),
    ("Dropout", &[1, 2]),
    ("ReduceMean", &[1]),
    ("ReduceSum", &[1]),
    ("ReduceMax", &[1]),
    ("ReduceMin", &[1]),
    ("ReduceProd", &[1]),
    ("ReduceSumSquare", &[1]),
    ("ReduceL1", &[1]),
    ("ReduceL2", &[1]),
    ("ReduceLogSumExp", &[1]),
];

/// Turns graph inputs that feed a shape operand into initializers holding
/// the test's data, as a real export has them; returns the remaining inputs.
fn bind_shape_operands(proto: &mut ModelProto, data_dir: &Path, inputs: Vec<Tensor>) -> Vec<Tensor> {
    let graph = proto.graph.as_mut().unwrap();
    let initializers: Vec<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let input_names: Vec<String> =
        graph.input.iter().map(|i| i.name.clone()).filter(|n| !initializers.contains(n)).collect();
    let mut bound = Vec::new();
    for node in &graph.node {
        let Some((_, slots)) = SHAPE_OPERANDS.iter().find(|(op, _)| *op == node.op_type) else { continue };
        for &slot in slots.iter() {
            if let Some(name) = node.input.get(slot).filter(|n| input_names.contains(n)) {
                bound.push(name.clone());
            }
        }
    }
    let mut remaining = Vec::new();
    for (i, (name, tensor)) in input_names.iter().zip(inputs).enumerate() {
        if !bound.contains(name) {
            remaining.push(tensor);
            continue;
        }
        let bytes = std::fs::read(data_dir.join(format!("input_{i}.pb"))).unwrap();
        let mut init = TensorProto::parse_from_bytes(&bytes).unwrap();
        init.name = name.clone();
        graph.initializer.push(init);
        graph.input.retain(|input| &input.name != name);
    }
    remaining
}

fn read_tensors(dir: &Path, prefix: &str) -> Result<Vec<Tensor>, String> {
    let mut tensors = Vec::new();
    for i in 0.. {
        let path = dir.join(format!("{prefix}_{i}.pb"));
        if !path.exists() {
            break;
        }
        let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
        let proto = TensorProto::parse_from_bytes(&bytes).map_err(|e| format!("{prefix}_{i}.pb: {e}"))?;
        let tensor = decode_tensor(&proto, dir, DEFAULT_MAX_TENSOR_BYTES).map_err(|e| e.to_string())?;
        tensors.push(tensor);
    }
    Ok(tensors)
}

fn compare(actual: &Tensor, expected: &Tensor) -> Result<(), String> {
    if actual.dtype() != expected.dtype() {
        return Err(format!("element type {} but expected {}", actual.dtype(), expected.dtype()));
    }
    if actual.shape() != expected.shape() {
        return Err(format!("shape {:?} but expected {:?}", actual.shape(), expected.shape()));
    }
    let (a, e) = (actual.to_f64_vec(), expected.to_f64_vec());
    let tolerance = |x: f64| if actual.dtype().is_float() { 1e-7 + 1e-3 * x.abs() } else { 0.0 };
    // float16 results carry about 3 decimal digits.
    let f16_slack = if actual.dtype() == DType::F16 { 1e-3 } else { 0.0 };
    for (i, (&x, &y)) in a.iter().zip(&e).enumerate() {
        let both_nan = x.is_nan() && y.is_nan();
        let same_inf = x.is_infinite() && x == y;
        if !(both_nan || same_inf || (x - y).abs() <= tolerance(y) + f16_slack * y.abs()) {
            return Err(format!("element {i} is {x} but expected {y}"));
        }
    }
    Ok(())
}
