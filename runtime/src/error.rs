//! Errors of the runtime.

use std::collections::TryReserveError;
use std::io;

/// Error returned by the runtime's safe API.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The model was compiled for another ABI version.
    #[error(
        "model `{model}` was compiled for vitc ABI version {found}, but this runtime \
         implements version {expected}; recompile the model with a vitc release that \
         matches this vitc-runtime, or link the runtime that the model was built for"
    )]
    AbiVersionMismatch {
        /// Model name.
        model: String,
        /// Version that the model's `NAME_abi_version()` returned.
        found: u32,
        /// Version that this runtime implements, [`crate::ABI_VERSION`].
        expected: u32,
    },

    /// A tensor shape has more elements than `usize` can count.
    #[error(
        "tensor `{tensor}` of model `{model}` has shape {shape:?}, whose element count \
         overflows usize; check the shape in ModelInfo"
    )]
    ShapeOverflow {
        /// Model name.
        model: String,
        /// Tensor name.
        tensor: String,
        /// Shape from [`crate::TensorInfo`].
        shape: Vec<usize>,
    },

    /// The model's arena does not fit in memory.
    #[error(
        "failed to allocate the {bytes}-byte arena of model `{model}`; free memory or \
         run on a machine with more of it"
    )]
    ArenaAllocation {
        /// Model name.
        model: String,
        /// Arena size from `NAME_arena_bytes()`.
        bytes: u64,
        /// Allocator error, absent when `bytes` exceeds the address space.
        #[source]
        source: Option<TryReserveError>,
    },

    /// `run` got another number of input slices than the model has inputs.
    #[error(
        "model `{model}` takes {expected} input tensor(s), but {given} were given; pass one \
         slice per entry of ModelInfo::inputs, in that order"
    )]
    InputCount {
        /// Model name.
        model: String,
        /// Number of model inputs.
        expected: usize,
        /// Number of slices given.
        given: usize,
    },

    /// `run` got another number of output slices than the model has outputs.
    #[error(
        "model `{model}` produces {expected} output tensor(s), but {given} output slice(s) \
         were given; pass one slice per entry of ModelInfo::outputs, in that order"
    )]
    OutputCount {
        /// Model name.
        model: String,
        /// Number of model outputs.
        expected: usize,
        /// Number of slices given.
        given: usize,
    },

    /// An input slice does not have the length of its tensor.
    #[error(
        "input `{tensor}` of model `{model}` has shape {shape:?}, so it needs {expected} \
         f32 values, but the slice given has {given}; pass the whole row-major tensor"
    )]
    InputLength {
        /// Model name.
        model: String,
        /// Tensor name.
        tensor: String,
        /// Expected shape.
        shape: Vec<usize>,
        /// Expected number of elements.
        expected: usize,
        /// Length of the slice given.
        given: usize,
    },

    /// An output slice does not have the length of its tensor.
    #[error(
        "output `{tensor}` of model `{model}` has shape {shape:?}, so it needs {expected} \
         f32 values, but the slice given has {given}; allocate the output with that length"
    )]
    OutputLength {
        /// Model name.
        model: String,
        /// Tensor name.
        tensor: String,
        /// Expected shape.
        shape: Vec<usize>,
        /// Expected number of elements.
        expected: usize,
        /// Length of the slice given.
        given: usize,
    },

    /// `run_simple` was called on a model without exactly one input and one
    /// output.
    #[error(
        "model `{model}` has {inputs} input(s) and {outputs} output(s), but run_simple \
         needs exactly one of each; call Model::run instead"
    )]
    NotSingleInputOutput {
        /// Model name.
        model: String,
        /// Number of model inputs.
        inputs: usize,
        /// Number of model outputs.
        outputs: usize,
    },

    /// The generated code returned a nonzero status.
    #[error(
        "model `{model}` failed with status {status}, so the outputs are not valid; \
         look the status up in the documentation of the vitc release that compiled the model"
    )]
    ModelFailed {
        /// Model name.
        model: String,
        /// Status that `NAME_run` returned.
        status: i32,
    },

    /// A worker thread could not be started.
    #[error(
        "failed to start worker thread {index} of a {threads}-thread pool; \
         create the pool with fewer threads"
    )]
    ThreadSpawn {
        /// Number of threads requested.
        threads: usize,
        /// Index of the worker that failed to start.
        index: usize,
        /// Error from the operating system.
        #[source]
        source: io::Error,
    },
}
