//! The importer's operator table: which ONNX op types map to IR, and the
//! dispatch to one file per family.

mod elementwise;
mod nn;
mod reduce;
mod resize;
mod shape;

use onnx_protobuf::NodeProto;

use super::import::{NodeCx, Unsupported};
use crate::error::Result;

/// Op types of the default domain that the importer maps, by family.
const ELEMENTWISE: &[&str] = &[
    "Relu", "Sigmoid", "Tanh", "Erf", "Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal", "Floor", "Ceil", "Round",
    "Sign", "Sin", "Cos", "Not", "IsNaN", "Softplus", "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Equal", "Less",
    "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "Max", "Min", "Sum", "Mean", "Where", "Clip",
    "HardSigmoid", "LeakyRelu", "Gelu", "Cast", "CastLike", "Identity", "Dropout",
];
const NN: &[&str] = &[
    "Softmax", "LogSoftmax", "LayerNormalization", "BatchNormalization", "Conv", "ConvTranspose", "MatMul", "Gemm",
];
const SHAPE: &[&str] = &[
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather", "Expand", "Tile",
    "Pad", "Shape", "Size", "ConstantOfShape", "Range", "Constant",
];
const REDUCE: &[&str] = &[
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare", "ReduceL1", "ReduceL2",
    "ReduceLogSumExp", "ArgMax", "ArgMin",
];

/// Oldest default-domain opset the importer accepts: from opset 7 on,
/// elementwise operators broadcast the NumPy way without attributes.
pub const MIN_OPSET: i64 = 7;
/// Newest default-domain opset the importer has been checked against.
pub const MAX_OPSET: i64 = 25;

/// Returns why `node` cannot be imported at default-domain `opset`, if it cannot.
pub fn check_supported(node: &NodeProto, opset: i64) -> Option<Unsupported> {
    let op = node.op_type.as_str();
    let known = ELEMENTWISE.contains(&op)
        || NN.contains(&op)
        || SHAPE.contains(&op)
        || REDUCE.contains(&op)
        || op == "Resize";
    if !known {
        return Some(Unsupported::OpType);
    }
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Some(Unsupported::Variant(format!("vitc supports default-domain opsets {MIN_OPSET} to {MAX_OPSET}")));
    }
    if op == "Gelu" && opset < 20 {
        return Some(Unsupported::Variant("Gelu is an ai.onnx operator only from opset 20".into()));
    }
    if op == "LayerNormalization" && opset < 17 {
        return Some(Unsupported::Variant("LayerNormalization is an ai.onnx operator only from opset 17".into()));
    }
    None
}

/// Imports one node whose op type passed [`check_supported`].
pub(crate) fn import(cx: &mut NodeCx) -> Result<()> {
    let op = cx.node.op_type.clone();
    let op = op.as_str();
    if ELEMENTWISE.contains(&op) {
        elementwise::import(cx, op)
    } else if NN.contains(&op) {
        nn::import(cx, op)
    } else if SHAPE.contains(&op) {
        shape::import(cx, op)
    } else if REDUCE.contains(&op) {
        reduce::import(cx, op)
    } else {
        resize::import(cx)
    }
}
