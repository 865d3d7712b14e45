//! `vitc`: an ahead-of-time compiler for Vision Transformer models exported to ONNX.
//!
//! The pipeline: [`onnx`] loads a `ModelProto` and imports it into the graph
//! [`ir`], binding dynamic dimensions and inferring every value's shape;
//! [`passes`] fold shape subgraphs and canonicalize the graph into the
//! operators later stages work with (LayerNorm, GELU, Linear, Attention);
//! [`interp`] is the reference interpreter that runs any stage of the IR;
//! [`quant`] rewrites Linear layers into INT8.

pub mod autodiff;
pub mod build;
pub mod codegen;
pub mod compress;
pub mod data;
pub mod error;
pub mod eval;
pub mod interp;
pub mod lower;
pub mod ir;
pub mod onnx;
pub mod passes;
pub mod quant;
pub mod tensor;

pub use error::{Error, Result};
