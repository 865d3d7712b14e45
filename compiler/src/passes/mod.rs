//! Graph passes and the manager that runs them.
//!
//! A pass edits the graph and reports how many rewrites it made. The
//! [`PassManager`] owns the order, runs the verifier after every pass, can
//! stop after a named pass (for `vitc inspect --after`), and times each pass
//! in a `tracing` span. Passes never call the verifier themselves.

mod attention;
mod fold;
mod gelu;
mod layernorm;
mod linear;
mod pattern;
mod simplify;

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::ir::verify::verify;

pub use attention::FuseAttention;
pub use fold::FoldConstants;
pub use gelu::FuseGelu;
pub use layernorm::FuseLayerNorm;
pub use linear::FuseLinear;
pub use simplify::Simplify;

/// A graph transformation.
pub trait Pass {
    /// The pass's name, as `vitc inspect --after NAME` spells it.
    fn name(&self) -> &'static str;
    /// Runs the pass; returns the number of rewrites made.
    fn run(&self, graph: &mut Graph) -> Result<usize>;
}

/// What one pass did.
#[derive(Clone, Debug)]
pub struct PassRecord {
    pub name: &'static str,
    pub rewrites: usize,
    pub nodes_after: usize,
    pub elapsed: Duration,
}

/// An ordered list of passes.
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
}

impl PassManager {
    pub fn new(passes: Vec<Box<dyn Pass>>) -> PassManager {
        PassManager { passes }
    }

    /// The canonicalization pipeline: fold constants and shape subgraphs,
    /// remove no-ops, then fuse LayerNorm, GELU, Linear and Attention.
    pub fn canonicalize() -> PassManager {
        PassManager::new(vec![
            Box::new(FoldConstants),
            Box::new(Simplify),
            Box::new(FuseLayerNorm),
            Box::new(FuseGelu),
            Box::new(FuseLinear),
            Box::new(FuseAttention),
        ])
    }

    /// Names of the passes, in order.
    pub fn pass_names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Runs every pass, verifying the graph after each.
    pub fn run(&self, graph: &mut Graph) -> Result<Vec<PassRecord>> {
        self.run_until(graph, None)
    }

    /// Runs passes up to and including `stop_after` (all when `None`).
    pub fn run_until(&self, graph: &mut Graph, stop_after: Option<&str>) -> Result<Vec<PassRecord>> {
        if let Some(name) = stop_after
            && !self.passes.iter().any(|p| p.name() == name)
        {
            return Err(Error::Model(format!(
                "there is no pass named '{name}'; the passes are: {}",
                self.pass_names().join(", ")
            )));
        }
        let mut records = Vec::new();
        for pass in &self.passes {
            let span = tracing::info_span!("pass", name = pass.name());
            let _guard = span.enter();
            let start = Instant::now();
            let rewrites = pass.run(graph)?;
            let elapsed = start.elapsed();
            verify(graph, &format!("pass '{}'", pass.name()))?;
            tracing::debug!(rewrites, nodes = graph.node_count(), ?elapsed, "pass finished");
            records.push(PassRecord { name: pass.name(), rewrites, nodes_after: graph.node_count(), elapsed });
            if stop_after == Some(pass.name()) {
                break;
            }
        }
        Ok(records)
    }
}
