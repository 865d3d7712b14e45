//! Lowering: from the canonical graph IR to a kernel program.
//!
//! A [`Program`] is the list of kernel calls that generated code makes, in
//! order, with every operand resolved to a buffer: a graph input or output
//! (caller memory), a weight (read-only data in the object), or a slice of
//! the scratch arena. The lowering happens in three phases:
//!
//! Phase 1 of 3: pick a kernel for each node ([`select`]); reshapes and
//! other layout-preserving nodes become aliases of their operand and cost
//! nothing.
//! Phase 2 of 3: pack weights into the layouts the kernels read (GEMM panels).
//! Phase 3 of 3: plan the arena ([`plan`]): each intermediate value gets an
//! offset, and values whose lifetimes do not overlap share memory.

pub mod kernel;
pub mod plan;
mod select;

use std::fmt;

pub use kernel::{Kernel, UnaryFn};
pub use select::pack_panels;
pub use select::sparse::{SparsePanels, sparse_panels};

use crate::error::Result;
use crate::ir::Graph;

/// Location of a kernel operand at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Buf {
    /// The caller's input tensor `i`.
    Input(usize),
    /// The caller's output tensor `i`.
    Output(usize),
    /// Read-only data in the object: weight `i` of [`Program::weights`].
    Weight(usize),
    /// Bytes `offset..` of the scratch arena.
    Arena { offset: usize },
}

impl fmt::Display for Buf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Buf::Input(i) => write!(f, "input{i}"),
            Buf::Output(i) => write!(f, "output{i}"),
            Buf::Weight(i) => write!(f, "w{i}"),
            Buf::Arena { offset } => write!(f, "arena+{offset}"),
        }
    }
}

/// Constant data emitted into the object's read-only section.
#[derive(Clone, Debug)]
pub struct Weight {
    pub name: String,
    /// Little-endian f32 elements, already in the kernel's layout.
    pub data: Vec<f32>,
}

/// One kernel call.
#[derive(Clone, Debug)]
pub struct Step {
    /// The IR node this call implements (for reports and profiles).
    pub node: String,
    pub kernel: Kernel,
    /// Operands: results first, then inputs, in the kernel's documented order.
    pub args: Vec<Buf>,
}

/// Name and shape of a graph input or output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A lowered model: kernel calls, weights and the arena size.
#[derive(Clone, Debug)]
pub struct Program {
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    pub weights: Vec<Weight>,
    pub steps: Vec<Step>,
    /// Scratch bytes the caller provides, a multiple of 64.
    pub arena_bytes: usize,
}

impl Program {
    /// Lowers a canonical graph.
    pub fn lower(graph: &Graph) -> Result<Program> {
        let selected = select::select_kernels(graph)?;
        Ok(plan::plan_memory(selected))
    }

    /// Number of kernel calls per kernel name.
    pub fn kernel_counts(&self) -> std::collections::BTreeMap<&'static str, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for step in &self.steps {
            *counts.entry(step.kernel.name()).or_default() += 1;
        }
        counts
    }

    /// Bytes of weight data.
    pub fn weight_bytes(&self) -> usize {
        self.weights.iter().map(|w| w.data.len() * 4).sum()
    }
}

/// Row-major strides of `shape`, in elements.
pub fn kernel_strides(shape: &[usize]) -> Vec<usize> {
    select::contiguous_strides(shape)
}

/// Prints the program, one kernel call per line (the `NAME.program.txt`
/// that `vitc build` writes, and snapshots).
pub fn print_program(program: &Program) -> String {
    let mut out = String::new();
    for (i, info) in program.inputs.iter().enumerate() {
        out.push_str(&format!("input{i} {} {:?}\n", info.name, info.shape));
    }
    for (i, info) in program.outputs.iter().enumerate() {
        out.push_str(&format!("output{i} {} {:?}\n", info.name, info.shape));
    }
    for (i, w) in program.weights.iter().enumerate() {
        out.push_str(&format!("w{i} {} f32[{}]\n", w.name, w.data.len()));
    }
    out.push_str(&format!("arena {} bytes\n", program.arena_bytes));
    for step in &program.steps {
        let args: Vec<String> = step.args.iter().map(|a| a.to_string()).collect();
        out.push_str(&format!("{} {}  # {}\n", step.kernel, args.join(", "), step.node));
    }
    out
}
