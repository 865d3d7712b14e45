//! The graph IR: operators, values with facts, shape inference, the
//! verifier and the deterministic text printer.

pub mod derive;
pub mod graph;
pub mod infer;
pub mod op;
pub mod printer;
pub mod quant;
pub mod summary;
pub mod verify;

pub use graph::{Fact, Graph, Node, NodeId, Use, Value, ValueId};
pub use op::Op;
pub use quant::QuantParams;
