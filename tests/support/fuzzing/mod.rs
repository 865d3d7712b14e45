//! Inputs and checks shared by the cargo-fuzz targets in `fuzz/` and by the
//! regression test that replays their corpora on stable Rust.
//!
//! [`spec::GraphSpec`] turns fuzzer bytes into an ONNX model that is valid
//! protobuf but may be a broken graph: cycles, dangling operands, duplicate
//! names, wrong operand counts, absurd shapes and attribute values.
//! [`harness`] runs such a model through every stage (import,
//! canonicalization, interpreter, lowering, JIT) under small resource
//! limits. Each stage may reject the model with an error; a panic, an abort
//! or an error with an empty message is a bug. [`recipe`] does the same for
//! compression recipes.

pub mod harness;
pub mod recipe;
pub mod spec;
