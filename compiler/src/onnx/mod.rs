//! The ONNX front end: loading `ModelProto` files and importing them into
//! the graph IR. Each operator family maps to IR in its own file under
//! [`ops`], with its opset history and attribute defaults in one place.

pub mod attrs;
pub mod import;
pub mod load;
pub mod ops;
pub mod tensor;

pub use import::{ImportOptions, import_file, import_model};
pub use load::OnnxModel;
