//! A structured description of an ONNX model that the fuzzer fills from raw
//! bytes with the `arbitrary` crate, and its conversion to a `ModelProto`.
//!
//! Value names come from a small pool (`v0` to `v23`), so nodes often read
//! what other nodes, inputs or initializers define. The same pool makes
//! cycles, duplicate definitions and dangling operands common. Operator
//! types are drawn mostly from the importer's table, attribute names from the
//! ones the importer reads, and dimensions and attribute values include
//! zero, negative and huge numbers.

use arbitrary::{Arbitrary, Unstructured};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::type_proto::{Tensor as TensorType, Value as TypeValue};
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Size of the value-name pool.
const NAME_POOL: u8 = 24;
/// Caps that keep one generated model small enough to run thousands of times a second.
const MAX_INPUTS: usize = 4;
const MAX_INITIALIZERS: usize = 16;
const MAX_NODES: usize = 48;
const MAX_ELEMENTS: usize = 4096;

/// Operator types the generator picks from: the importer's table plus a few
/// it rejects (control flow, a contrib op, a misspelling).
const OP_TYPES: &[&str] = &[
    "Relu", "Sigmoid", "Tanh", "Erf", "Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal", "Floor", "Ceil", "Round",
    "Sign", "Sin", "Cos", "Not", "IsNaN", "Softplus", "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Equal", "Less",
    "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "Max", "Min", "Sum", "Mean", "Where", "Clip",
    "HardSigmoid", "LeakyRelu", "Gelu", "Cast", "CastLike", "Identity", "Dropout", "Softmax", "LogSoftmax",
    "LayerNormalization", "BatchNormalization", "Conv", "ConvTranspose", "MatMul", "Gemm", "Reshape", "Transpose",
    "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather", "Expand", "Tile", "Pad", "Shape", "Size",
    "ConstantOfShape", "Range", "Constant", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
    "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSumExp", "ArgMax", "ArgMin", "Resize", "If", "Loop",
    "FusedMatMul", "relu",
];

/// Attribute names the importer reads.
const ATTR_NAMES: &[&str] = &[
    "allowzero", "alpha", "antialias", "approximate", "auto_pad", "axes", "axis", "beta",
    "coordinate_transformation_mode", "cubic_coeff_a", "dilations", "end", "ends", "epsilon", "exclude_outside",
    "extrapolation_value", "fmod", "group", "keep_aspect_ratio_policy", "keepdims", "kernel_shape", "max", "min",
    "mode", "nearest_mode", "noop_with_empty_axes", "num_outputs", "output_padding", "output_shape", "pads", "perm",
    "select_last_index", "split", "start", "starts", "strides", "to", "training_mode", "transA", "transB", "value",
    "value_float", "value_floats", "value_int", "value_ints",
];

/// String attribute values the importer recognizes, plus one it does not.
const ATTR_STRINGS: &[&str] = &[
    "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "none", "tanh", "nearest", "linear", "cubic", "constant", "reflect",
    "edge", "half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel", "round_prefer_floor", "floor",
    "stretch", "not_larger", "bogus",
];

/// A whole model.
#[derive(Arbitrary, Debug)]
pub struct GraphSpec {
    pub opset: Opset,
    pub inputs: Vec<InputSpec>,
    pub initializers: Vec<InitializerSpec>,
    pub nodes: Vec<NodeSpec>,
    pub outputs: Vec<NameRef>,
}

/// The default-domain opset: usually a supported one, sometimes not.
#[derive(Arbitrary, Debug)]
pub enum Opset {
    Supported(u8),
    Any(i64),
    Missing,
}

/// A value name from the pool, or the empty name (an absent optional operand).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct NameRef(pub u8);

#[derive(Arbitrary, Debug)]
pub struct InputSpec {
    pub name: NameRef,
    pub elem_type: ElemType,
    pub dims: Option<Vec<DimSpec>>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum ElemType {
    Float,
    Float16,
    Double,
    Int64,
    Int32,
    Int8,
    Uint8,
    Bool,
    Code(i32),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum DimSpec {
    Small(u8),
    Symbolic(u8),
    Value(i64),
    Unset,
}

#[derive(Arbitrary, Debug)]
pub struct InitializerSpec {
    pub name: NameRef,
    pub tensor: TensorSpec,
}

#[derive(Arbitrary, Debug)]
pub struct TensorSpec {
    pub elem_type: ElemType,
    pub dims: Vec<DimSpec>,
    pub data: DataSpec,
}

/// Where and how a tensor stores its elements.
#[derive(Arbitrary, Debug)]
pub enum DataSpec {
    /// As many elements as the shape needs (when it needs at most
    /// [`MAX_ELEMENTS`]), cycling through `values`.
    Filled(Vec<Special>),
    Raw(Vec<u8>),
    Floats(Vec<f32>),
    Int64s(Vec<i64>),
    Int32s(Vec<i32>),
    External { location: String, offset: String, length: Option<String> },
}

/// Element values that break naive numerics.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Special {
    Small(i8),
    Nan,
    Infinity,
    NegInfinity,
    Huge,
    Tiny,
    Any(f32),
}

#[derive(Arbitrary, Debug)]
pub struct NodeSpec {
    pub op: OpChoice,
    pub contrib_domain: bool,
    pub unnamed: bool,
    pub inputs: Vec<NameRef>,
    pub outputs: Vec<NameRef>,
    pub attributes: Vec<AttrSpec>,
}

#[derive(Arbitrary, Debug)]
pub enum OpChoice {
    Known(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
pub struct AttrSpec {
    pub name: u8,
    pub value: AttrValue,
}

#[derive(Arbitrary, Debug)]
pub enum AttrValue {
    Int(i8),
    BigInt(i64),
    Ints(Vec<i8>),
    BigInts(Vec<i64>),
    Float(f32),
    Floats(Vec<f32>),
    Word(u8),
    Bytes(Vec<u8>),
    Tensor(TensorSpec),
    /// An attribute whose declared type does not match its filled field.
    Mismatched { type_code: i32, int: i64 },
}

impl GraphSpec {
    /// Decodes a spec from fuzzer bytes, using all of them.
    pub fn from_bytes(bytes: &[u8]) -> arbitrary::Result<GraphSpec> {
        GraphSpec::arbitrary_take_rest(Unstructured::new(bytes))
    }

    /// Builds the ONNX model this spec describes.
    pub fn to_model(&self) -> ModelProto {
        let mut graph = GraphProto { name: "fuzz".into(), ..Default::default() };
        for input in self.inputs.iter().take(MAX_INPUTS) {
            graph.input.push(value_info(&input.name.to_name(), input.elem_type.code(), input.dims.as_deref()));
        }
        for init in self.initializers.iter().take(MAX_INITIALIZERS) {
            graph.initializer.push(init.tensor.to_proto(&init.name.to_name()));
        }
        for (i, node) in self.nodes.iter().take(MAX_NODES).enumerate() {
            graph.node.push(node.to_proto(i));
        }
        for output in &self.outputs {
            graph.output.push(value_info(&output.to_name(), 0, None));
        }
        let opset_import = match self.opset {
            Opset::Supported(v) => vec![opset_entry(13 + i64::from(v % 13))],
            Opset::Any(v) => vec![opset_entry(v)],
            Opset::Missing => Vec::new(),
        };
        ModelProto {
            ir_version: 8,
            producer_name: "vitc-fuzz".into(),
            opset_import,
            graph: Some(graph).into(),
            ..Default::default()
        }
    }
}

fn opset_entry(version: i64) -> OperatorSetIdProto {
    OperatorSetIdProto { domain: String::new(), version, ..Default::default() }
}

impl NameRef {
    /// `v0` to `v23`; byte 255 is the empty name.
    pub fn to_name(self) -> String {
        if self.0 == u8::MAX { String::new() } else { format!("v{}", self.0 % NAME_POOL) }
    }
}

impl ElemType {
    fn code(self) -> i32 {
        match self {
            ElemType::Float => 1,
            ElemType::Uint8 => 2,
            ElemType::Int8 => 3,
            ElemType::Int32 => 6,
            ElemType::Int64 => 7,
            ElemType::Bool => 9,
            ElemType::Float16 => 10,
            ElemType::Double => 11,
            ElemType::Code(code) => code,
        }
    }
}

impl DimSpec {
    /// The dimension as a `TensorProto.dims` entry: a symbolic one becomes 1.
    fn to_i64(&self) -> i64 {
        match self {
            DimSpec::Small(v) => i64::from(v % 6),
            DimSpec::Symbolic(_) | DimSpec::Unset => 1,
            DimSpec::Value(v) => *v,
        }
    }

    fn to_dimension(&self) -> Dimension {
        let value = match self {
            DimSpec::Small(v) => Some(dimension::Value::DimValue(i64::from(v % 6))),
            DimSpec::Symbolic(v) => Some(dimension::Value::DimParam(format!("d{}", v % 3))),
            DimSpec::Value(v) => Some(dimension::Value::DimValue(*v)),
            DimSpec::Unset => None,
        };
        Dimension { value, ..Default::default() }
    }
}

impl Special {
    fn to_f32(self) -> f32 {
        match self {
            Special::Small(v) => f32::from(v) / 4.0,
            Special::Nan => f32::NAN,
            Special::Infinity => f32::INFINITY,
            Special::NegInfinity => f32::NEG_INFINITY,
            Special::Huge => 3.0e38,
            Special::Tiny => 1.0e-40,
            Special::Any(v) => v,
        }
    }
}

impl TensorSpec {
    fn to_proto(&self, name: &str) -> TensorProto {
        let dims: Vec<i64> = self.dims.iter().take(6).map(DimSpec::to_i64).collect();
        let data_type = self.elem_type.code();
        let mut proto = TensorProto { name: name.into(), dims: dims.clone(), data_type, ..Default::default() };
        match &self.data {
            DataSpec::Filled(values) => fill(&mut proto, &dims, values),
            DataSpec::Raw(bytes) => proto.raw_data = bytes.clone(),
            DataSpec::Floats(values) => proto.float_data = values.clone(),
            DataSpec::Int64s(values) => proto.int64_data = values.clone(),
            DataSpec::Int32s(values) => proto.int32_data = values.clone(),
            DataSpec::External { location, offset, length } => {
                proto.data_location = DataLocation::EXTERNAL.into();
                proto.external_data.push(entry("location", location));
                proto.external_data.push(entry("offset", offset));
                if let Some(length) = length {
                    proto.external_data.push(entry("length", length));
                }
            }
        }
        proto
    }
}

fn entry(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto { key: key.into(), value: value.into(), ..Default::default() }
}

/// Stores exactly the number of elements `dims` needs, in the field the
/// ONNX spec assigns to the element type, when that number is small.
fn fill(proto: &mut TensorProto, dims: &[i64], values: &[Special]) {
    let count = dims.iter().try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)));
    let Some(count) = count.filter(|&c| c <= MAX_ELEMENTS) else { return };
    let value = |i: usize| values.get(i % values.len().max(1)).map_or(0.0, |v| v.to_f32());
    match proto.data_type {
        1 => proto.float_data = (0..count).map(value).collect(),
        11 => proto.double_data = (0..count).map(|i| f64::from(value(i))).collect(),
        7 => proto.int64_data = (0..count).map(|i| value(i) as i64).collect(),
        10 => proto.int32_data = (0..count).map(|i| i32::from(half::f16::from_f32(value(i)).to_bits())).collect(),
        _ => proto.int32_data = (0..count).map(|i| value(i) as i32).collect(),
    }
}

impl NodeSpec {
    fn to_proto(&self, index: usize) -> NodeProto {
        let op_type = match &self.op {
            OpChoice::Known(i) => OP_TYPES[usize::from(*i) % OP_TYPES.len()].to_string(),
            OpChoice::Other(name) => name.clone(),
        };
        NodeProto {
            name: if self.unnamed { String::new() } else { format!("/{op_type}_{index}") },
            op_type,
            domain: if self.contrib_domain { "com.microsoft".into() } else { String::new() },
            input: self.inputs.iter().take(6).map(|n| n.to_name()).collect(),
            output: self.outputs.iter().take(4).map(|n| n.to_name()).collect(),
            attribute: self.attributes.iter().take(8).map(AttrSpec::to_proto).collect(),
            ..Default::default()
        }
    }
}

impl AttrSpec {
    fn to_proto(&self) -> AttributeProto {
        let name = ATTR_NAMES[usize::from(self.name) % ATTR_NAMES.len()].to_string();
        let mut attr = AttributeProto { name, ..Default::default() };
        match &self.value {
            AttrValue::Int(v) => set(&mut attr, AttributeType::INT, |a| a.i = i64::from(*v)),
            AttrValue::BigInt(v) => set(&mut attr, AttributeType::INT, |a| a.i = *v),
            AttrValue::Ints(v) => set(&mut attr, AttributeType::INTS, |a| a.ints = v.iter().map(|&x| i64::from(x)).collect()),
            AttrValue::BigInts(v) => set(&mut attr, AttributeType::INTS, |a| a.ints = v.clone()),
            AttrValue::Float(v) => set(&mut attr, AttributeType::FLOAT, |a| a.f = *v),
            AttrValue::Floats(v) => set(&mut attr, AttributeType::FLOATS, |a| a.floats = v.clone()),
            AttrValue::Word(i) => {
                let word = ATTR_STRINGS[usize::from(*i) % ATTR_STRINGS.len()];
                set(&mut attr, AttributeType::STRING, |a| a.s = word.as_bytes().to_vec());
            }
            AttrValue::Bytes(v) => set(&mut attr, AttributeType::STRING, |a| a.s = v.clone()),
            AttrValue::Tensor(t) => set(&mut attr, AttributeType::TENSOR, |a| a.t = Some(t.to_proto("")).into()),
            AttrValue::Mismatched { type_code, int } => {
                attr.type_ = protobuf::EnumOrUnknown::from_i32(*type_code);
                attr.i = *int;
            }
        }
        attr
    }
}

fn set(attr: &mut AttributeProto, kind: AttributeType, fill: impl FnOnce(&mut AttributeProto)) {
    attr.type_ = kind.into();
    fill(attr);
}

fn value_info(name: &str, elem_type: i32, dims: Option<&[DimSpec]>) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto { dim: dims.iter().take(6).map(DimSpec::to_dimension).collect(), ..Default::default() });
    let tensor = TensorType { elem_type, shape: shape.into(), ..Default::default() };
    ValueInfoProto {
        name: name.into(),
        type_: Some(TypeProto { value: Some(TypeValue::TensorType(tensor)), ..Default::default() }).into(),
        ..Default::default()
    }
}
