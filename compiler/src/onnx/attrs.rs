//! Typed access to a node's attributes, with errors that name the node,
//! its operator and the attribute.

use std::sync::Arc;

use onnx_protobuf::NodeProto;
use onnx_protobuf::attribute_proto::AttributeType;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The attributes of one node.
pub struct Attrs<'a> {
    node: &'a NodeProto,
}

impl<'a> Attrs<'a> {
    pub fn new(node: &'a NodeProto) -> Attrs<'a> {
        Attrs { node }
    }

    fn err(&self, name: &str, message: impl std::fmt::Display) -> Error {
        Error::node(self.node.name.as_str(), self.node.op_type.as_str(), format!("attribute '{name}': {message}"))
    }

    fn find(&self, name: &str, kind: AttributeType) -> Result<Option<&'a onnx_protobuf::AttributeProto>> {
        let Some(attr) = self.node.attribute.iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        if !attr.ref_attr_name.is_empty() {
            return Err(self.err(name, "refers to a function attribute, which vitc does not support"));
        }
        match attr.type_.enum_value() {
            Ok(t) if t == kind => Ok(Some(attr)),
            // Some exporters leave the type unset; accept the field that matches.
            Ok(AttributeType::UNDEFINED) => Ok(Some(attr)),
            Ok(t) => Err(self.err(name, format!("has type {t:?}, expected {kind:?}"))),
            Err(code) => Err(self.err(name, format!("has unknown type code {code}"))),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.node.attribute.iter().any(|a| a.name == name)
    }

    pub fn int_opt(&self, name: &str) -> Result<Option<i64>> {
        Ok(self.find(name, AttributeType::INT)?.map(|a| a.i))
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.int_opt(name)?.unwrap_or(default))
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool> {
        match self.int_opt(name)? {
            None => Ok(default),
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(v) => Err(self.err(name, format!("is {v}, expected 0 or 1"))),
        }
    }

    pub fn float_opt(&self, name: &str) -> Result<Option<f32>> {
        Ok(self.find(name, AttributeType::FLOAT)?.map(|a| a.f))
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.float_opt(name)?.unwrap_or(default))
    }

    pub fn ints_opt(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self.find(name, AttributeType::INTS)?.map(|a| a.ints.clone()))
    }

    pub fn floats_opt(&self, name: &str) -> Result<Option<Vec<f32>>> {
        Ok(self.find(name, AttributeType::FLOATS)?.map(|a| a.floats.clone()))
    }

    pub fn string_opt(&self, name: &str) -> Result<Option<String>> {
        match self.find(name, AttributeType::STRING)? {
            None => Ok(None),
            Some(a) => String::from_utf8(a.s.clone()).map(Some).map_err(|_| self.err(name, "is not valid UTF-8")),
        }
    }

    pub fn string(&self, name: &str, default: &str) -> Result<String> {
        Ok(self.string_opt(name)?.unwrap_or_else(|| default.to_string()))
    }

    /// A non-negative list of integers, e.g. strides or kernel sizes.
    pub fn usizes_opt(&self, name: &str) -> Result<Option<Vec<usize>>> {
        match self.ints_opt(name)? {
            None => Ok(None),
            Some(v) => v
                .iter()
                .map(|&x| usize::try_from(x).map_err(|_| self.err(name, format!("contains negative value {x}"))))
                .collect::<Result<Vec<_>>>()
                .map(Some),
        }
    }

    /// The raw tensor attribute, decoded by the caller's decoder.
    pub fn tensor_proto(&self, name: &str) -> Result<Option<&'a onnx_protobuf::TensorProto>> {
        Ok(self.find(name, AttributeType::TENSOR)?.and_then(|a| a.t.as_ref()))
    }

    /// A tensor attribute decoded in memory (no external data).
    pub fn tensor(&self, name: &str, model_dir: &std::path::Path, max_bytes: u64) -> Result<Option<Arc<Tensor>>> {
        match self.tensor_proto(name)? {
            None => Ok(None),
            Some(t) => Ok(Some(Arc::new(super::tensor::decode_tensor(t, model_dir, max_bytes)?))),
        }
    }
}
