//! The library's error type.
//!
//! Every message names the file, node, operator or value involved and, where
//! there is one, states what the user can do about it.

use std::path::PathBuf;

/// Result type of the `vitc` library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An operator the importer cannot map, reported together with all others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedOp {
    pub node: String,
    pub op_type: String,
    pub domain: String,
    pub opset: i64,
    /// Reason the node is unsupported, when it is not simply an unknown op type.
    pub reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The I/O cause is part of the message, and the field is not named
    // `source`, so that error chains do not print it twice.
    #[error("cannot read {}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },

    #[error("cannot write {}: {error}", path.display())]
    Write { path: PathBuf, error: std::io::Error },

    #[error("{0}")]
    Codegen(String),

    #[error("{} is not a valid ONNX model: {message}. Check that it is a complete .onnx file, not a truncated download or an external-data file", path.display())]
    Protobuf { path: PathBuf, message: String },

    #[error("invalid model: {0}")]
    Model(String),

    #[error("tensor '{tensor}': {message}")]
    Tensor { tensor: String, message: String },

    #[error("external data of tensor '{tensor}': {message}")]
    ExternalData { tensor: String, message: String },

    #[error("{}", format_unsupported(.0))]
    Unsupported(Vec<UnsupportedOp>),

    #[error("node '{node}' ({op}): {message}")]
    Node { node: String, op: String, message: String },

    #[error("input '{input}': {message}")]
    Input { input: String, message: String },

    #[error("IR verification failed after {stage}: {message}")]
    Verify { stage: String, message: String },

    #[error("recipe: {0}")]
    Recipe(String),

    #[error("compression: {0}")]
    Compress(String),

    #[error("quantization: {0}")]
    Quant(String),

    #[error("limit exceeded: {0}")]
    Limit(String),

    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {

    /// Builds a node-level error for node `node` of type `op`.
    pub fn node(node: impl Into<String>, op: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Node { node: node.into(), op: op.into(), message: message.into() }
    }
}

fn format_unsupported(ops: &[UnsupportedOp]) -> String {
    let mut text = format!("{} node(s) use operators that vitc does not support:", ops.len());
    for op in ops {
        let domain = if op.domain.is_empty() { "ai.onnx" } else { op.domain.as_str() };
        text.push_str(&format!("\n  node '{}': {} (domain {}, opset {})", op.node, op.op_type, domain, op.opset));
        if let Some(reason) = &op.reason {
            text.push_str(&format!(": {reason}"));
        }
    }
    text.push_str("\nRe-export the model without these operators or at another opset, or file an issue naming them.");
    text
}

/// A failure of one operator's shape rule or kernel, without the node's
/// identity; [`OpError::at`] attaches the node name and operator.
#[derive(Debug, Clone, PartialEq)]
pub struct OpError {
    pub message: String,
}

/// Result of a shape rule or kernel.
pub type OpResult<T> = std::result::Result<T, OpError>;

impl OpError {
    pub fn new(message: impl Into<String>) -> OpError {
        OpError { message: message.into() }
    }

    /// Turns this into an [`Error::Node`] for the named node.
    pub fn at(self, node: &str, op: &str) -> Error {
        Error::node(node, op, self.message)
    }
}

/// Returns early with an [`OpError`] built from a format string.
#[macro_export]
macro_rules! op_bail {
    ($($arg:tt)*) => {
        return Err($crate::error::OpError::new(format!($($arg)*)))
    };
}
