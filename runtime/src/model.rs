//! Safe wrapper around the entry point of a compiled model.

use std::fmt;
use std::ptr;

use crate::{ABI_VERSION, EntryFn, RuntimeError, ThreadPool};

/// Alignment of the arena that generated code requires, in bytes.
const ARENA_ALIGN: usize = 64;

/// Name and shape of one input or output tensor of a model.
///
/// Every tensor of the ABI is a dense, row-major array of `f32`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, as in the ONNX model.
    pub name: String,
    /// Dimensions, outermost first. An empty shape is a scalar.
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Creates a tensor description.
    pub fn new(name: impl Into<String>, shape: impl Into<Vec<usize>>) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            shape: shape.into(),
        }
    }

    /// Returns the number of elements, or `None` if it overflows `usize`.
    pub fn element_count(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(1usize, |count, &dim| count.checked_mul(dim))
    }
}

/// Description of a compiled model: what its `NAME_abi_version()` and
/// `NAME_arena_bytes()` return and the tensors that `NAME_run` reads and
/// writes, in ABI order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// Model name given to `vitc build`.
    pub name: String,
    /// Value of `NAME_abi_version()`.
    pub abi_version: u32,
    /// Value of `NAME_arena_bytes()`.
    pub arena_bytes: u64,
    /// Input tensors, in the order of `NAME_run`'s `inputs` array.
    pub inputs: Vec<TensorInfo>,
    /// Output tensors, in the order of `NAME_run`'s `outputs` array.
    pub outputs: Vec<TensorInfo>,
}

/// One 64-byte block of a model's arena.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct ArenaBlock([u8; ARENA_ALIGN]);

/// A compiled model with its arena, ready to run.
///
/// [`Model::new`] allocates everything that a run needs, so [`Model::run`]
/// allocates nothing unless it returns an error.
pub struct Model {
    info: ModelInfo,
    entry: EntryFn,
    input_lens: Vec<usize>,
    output_lens: Vec<usize>,
    arena: Vec<ArenaBlock>,
    /// Pointer arrays passed to `entry`, kept to avoid allocating per run.
    /// They are filled at the start of each run and cleared at its end.
    input_ptrs: Vec<*const f32>,
    output_ptrs: Vec<*mut f32>,
}

// SAFETY: the pointer arrays are the only fields that are not `Send`. They
// hold pointers only during `run`, which takes `&mut self`, and `Model::new`
// requires an entry point that may be called from any thread.
unsafe impl Send for Model {}
// SAFETY: a shared `&Model` gives access to `info` only. Running needs
// `&mut Model`.
unsafe impl Sync for Model {}

impl Model {
    /// Wraps the entry point of a compiled model and allocates its arena.
    ///
    /// Returns an error if `info.abi_version` is not [`ABI_VERSION`], if a
    /// tensor's element count overflows `usize`, or if the arena cannot be
    /// allocated.
    ///
    /// # Safety
    ///
    /// `entry` must be the `NAME_run` function of the model that `info`
    /// describes: it must read and write exactly the tensors of
    /// `info.inputs` and `info.outputs`, in that order and with those shapes,
    /// and use at most `info.arena_bytes` bytes of arena. It must be safe to
    /// call from any thread.
    pub unsafe fn new(info: ModelInfo, entry: EntryFn) -> Result<Model, RuntimeError> {
        if info.abi_version != ABI_VERSION {
            return Err(RuntimeError::AbiVersionMismatch {
                model: info.name,
                found: info.abi_version,
                expected: ABI_VERSION,
            });
        }

        let input_lens = element_counts(&info.name, &info.inputs)?;
        let output_lens = element_counts(&info.name, &info.outputs)?;
        let arena = allocate_arena(&info.name, info.arena_bytes)?;
        Ok(Model {
            input_ptrs: Vec::with_capacity(input_lens.len()),
            output_ptrs: Vec::with_capacity(output_lens.len()),
            info,
            entry,
            input_lens,
            output_lens,
            arena,
        })
    }

    /// Returns the model description.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Runs the model once.
    ///
    /// `inputs` and `outputs` hold one slice per tensor of
    /// [`ModelInfo::inputs`] and [`ModelInfo::outputs`], in that order, each
    /// as long as its tensor has elements. With `pool` set to `None`, the
    /// model runs serially on the calling thread.
    pub fn run(
        &mut self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
        pool: Option<&ThreadPool>,
    ) -> Result<(), RuntimeError> {
        self.check_inputs(inputs)?;
        self.check_outputs(outputs)?;

        // The capacities equal the tensor counts checked above, so these
        // pushes do not allocate.
        self.input_ptrs.clear();
        self.input_ptrs
            .extend(inputs.iter().map(|input| input.as_ptr()));
        self.output_ptrs.clear();
        self.output_ptrs
            .extend(outputs.iter_mut().map(|output| output.as_mut_ptr()));
        let pool_abi = pool.map(ThreadPool::abi);
        let pool_ptr = pool_abi.as_ref().map_or(ptr::null(), ptr::from_ref);

        // SAFETY: `Model::new` requires `entry` to match `info`. The checks
        // above ensure one pointer per tensor, each to a slice of the tensor's
        // length, and the borrows ensure that outputs alias neither inputs nor
        // each other. The arena has at least `info.arena_bytes` bytes, aligned
        // to 64, and is borrowed mutably through `self`. `pool_abi` outlives
        // the call and points to a pool that `pool` keeps alive.
        let status = unsafe {
            (self.entry)(
                self.input_ptrs.as_ptr(),
                self.output_ptrs.as_ptr(),
                self.arena.as_mut_ptr().cast(),
                pool_ptr,
            )
        };
        self.input_ptrs.clear();
        self.output_ptrs.clear();

        if status != 0 {
            return Err(RuntimeError::ModelFailed {
                model: self.info.name.clone(),
                status,
            });
        }
        Ok(())
    }

    /// Runs a model that has one input and one output and returns the
    /// output as a new vector.
    pub fn run_simple(
        &mut self,
        input: &[f32],
        pool: Option<&ThreadPool>,
    ) -> Result<Vec<f32>, RuntimeError> {
        if self.input_lens.len() != 1 || self.output_lens.len() != 1 {
            return Err(RuntimeError::NotSingleInputOutput {
                model: self.info.name.clone(),
                inputs: self.input_lens.len(),
                outputs: self.output_lens.len(),
            });
        }

        let mut output = vec![0.0; self.output_lens[0]];
        self.run(&[input], &mut [&mut output], pool)?;
        Ok(output)
    }

    fn check_inputs(&self, inputs: &[&[f32]]) -> Result<(), RuntimeError> {
        if inputs.len() != self.input_lens.len() {
            return Err(RuntimeError::InputCount {
                model: self.info.name.clone(),
                expected: self.input_lens.len(),
                given: inputs.len(),
            });
        }
        let tensors = self.info.inputs.iter().zip(&self.input_lens);
        for ((tensor, &expected), input) in tensors.zip(inputs) {
            if input.len() != expected {
                return Err(RuntimeError::InputLength {
                    model: self.info.name.clone(),
                    tensor: tensor.name.clone(),
                    shape: tensor.shape.clone(),
                    expected,
                    given: input.len(),
                });
            }
        }
        Ok(())
    }

    fn check_outputs(&self, outputs: &[&mut [f32]]) -> Result<(), RuntimeError> {
        if outputs.len() != self.output_lens.len() {
            return Err(RuntimeError::OutputCount {
                model: self.info.name.clone(),
                expected: self.output_lens.len(),
                given: outputs.len(),
            });
        }
        let tensors = self.info.outputs.iter().zip(&self.output_lens);
        for ((tensor, &expected), output) in tensors.zip(outputs) {
            if output.len() != expected {
                return Err(RuntimeError::OutputLength {
                    model: self.info.name.clone(),
                    tensor: tensor.name.clone(),
                    shape: tensor.shape.clone(),
                    expected,
                    given: output.len(),
                });
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Returns the element count of each tensor, or an error naming the first
/// tensor whose count overflows `usize`.
fn element_counts(model: &str, tensors: &[TensorInfo]) -> Result<Vec<usize>, RuntimeError> {
    tensors
        .iter()
        .map(|tensor| {
            tensor
                .element_count()
                .ok_or_else(|| RuntimeError::ShapeOverflow {
                    model: model.to_string(),
                    tensor: tensor.name.clone(),
                    shape: tensor.shape.clone(),
                })
        })
        .collect()
}

/// Allocates a zeroed arena of at least `bytes` bytes, aligned to 64 bytes.
///
/// An arena of 0 bytes allocates nothing, and its pointer is dangling but
/// still aligned to 64 bytes.
fn allocate_arena(model: &str, bytes: u64) -> Result<Vec<ArenaBlock>, RuntimeError> {
    let allocation_error = |source| RuntimeError::ArenaAllocation {
        model: model.to_string(),
        bytes,
        source,
    };
    let block_count =
        usize::try_from(bytes.div_ceil(ARENA_ALIGN as u64)).map_err(|_| allocation_error(None))?;

    let mut arena = Vec::new();
    arena
        .try_reserve_exact(block_count)
        .map_err(|error| allocation_error(Some(error)))?;
    arena.resize(block_count, ArenaBlock([0; ARENA_ALIGN]));
    Ok(arena)
}
