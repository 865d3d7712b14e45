//! Runtime for models compiled ahead of time by `vitc`.
//!
//! `vitc build` turns an ONNX Vision Transformer into an object file `NAME.o`
//! and a C header `NAME.h`. An app links the object file together with this
//! crate, which provides the thread pool that the generated code runs its
//! parallel loops on, the C declarations of the ABI, and a safe Rust wrapper.
//!
//! # The ABI (version 1)
//!
//! The generated object file exports three functions per model, where `NAME`
//! is the model name given to `vitc build`:
//!
//! ```c
//! uint32_t NAME_abi_version(void);  // returns VITC_ABI_VERSION
//! uint64_t NAME_arena_bytes(void);  // scratch bytes the caller provides
//! int32_t  NAME_run(const float *const *inputs, float *const *outputs,
//!                   void *arena, const vitc_thread_pool *pool);
//! ```
//!
//! - `inputs` and `outputs` point to arrays with one pointer per tensor, in the
//!   order of the model's inputs and outputs. Every tensor is a dense,
//!   row-major `float` array of the shape that the compiler recorded.
//! - `arena` points to at least `NAME_arena_bytes()` bytes of scratch memory,
//!   aligned to 64 bytes. Its contents need not be preserved between runs.
//! - `pool` is either NULL, in which case the generated code runs every loop
//!   serially on the calling thread, or a function table ([`ThreadPoolAbi`],
//!   `vitc_thread_pool` in C) whose `parallel_for` runs the tasks of one loop.
//! - `NAME_run` returns 0 on success.
//!
//! `parallel_for(ctx, n_tasks, task, args)` must call `task(args, i)` exactly
//! once for every `i` in `0..n_tasks`, possibly on several threads at once, and
//! return only after all these calls have returned.
//!
//! The C header `include/vitc_runtime.h` in this crate declares the same types
//! and the C API of [`capi`]. Each generated `NAME.h` includes it.
//!
//! # Rust apps
//!
//! Declare the generated functions in an `extern "C"` block, describe the
//! model's tensors in a [`ModelInfo`], and wrap the entry point in a [`Model`].
//! The example below uses a hand-written function in place of generated code:
//!
//! ```
//! use std::ffi::c_void;
//! use vitc_runtime::{ABI_VERSION, Model, ModelInfo, TensorInfo, ThreadPool, ThreadPoolAbi};
//!
//! /// Stand-in for a generated `NAME_run`: doubles its only input.
//! unsafe extern "C" fn double_run(
//!     inputs: *const *const f32,
//!     outputs: *const *mut f32,
//!     _arena: *mut c_void,
//!     _pool: *const ThreadPoolAbi,
//! ) -> i32 {
//!     // SAFETY: `Model::run` passes one input and one output of 4 floats each.
//!     unsafe {
//!         for i in 0..4 {
//!             *(*outputs).add(i) = 2.0 * *(*inputs).add(i);
//!         }
//!     }
//!     0
//! }
//!
//! let info = ModelInfo {
//!     name: "double".to_string(),
//!     abi_version: ABI_VERSION,
//!     arena_bytes: 0,
//!     inputs: vec![TensorInfo::new("x", [2, 2])],
//!     outputs: vec![TensorInfo::new("y", [2, 2])],
//! };
//! // SAFETY: `double_run` reads and writes exactly the tensors that `info` describes.
//! let mut model = unsafe { Model::new(info, double_run) }?;
//! let pool = ThreadPool::new(2)?;
//! let y = model.run_simple(&[1.0, 2.0, 3.0, 4.0], Some(&pool))?;
//! assert_eq!(y, [2.0, 4.0, 6.0, 8.0]);
//! # Ok::<(), vitc_runtime::RuntimeError>(())
//! ```
//!
//! # C apps
//!
//! `cargo build --release -p vitc-runtime` builds the static library
//! `libvitc_runtime.a` in `target/release/`, or in `$CARGO_TARGET_DIR/release/`
//! when that variable is set. Create a pool with
//! `vitc_runtime_pool_create` and pass it to `NAME_run`. On Linux with glibc,
//! link the app like this (`rustc --print native-static-libs` lists the
//! system libraries for other targets):
//!
//! ```sh
//! cc app.c NAME.o -I runtime/include target/release/libvitc_runtime.a \
//!     -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
//! ```

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::c_void;

pub mod capi;
mod error;
mod model;
mod pool;

pub use error::RuntimeError;
pub use model::{Model, ModelInfo, TensorInfo};
pub use pool::ThreadPool;

/// Version of the ABI between generated code and this runtime.
///
/// Generated code returns the version it was built for from
/// `NAME_abi_version()`, and [`Model::new`] rejects any other version.
pub const ABI_VERSION: u32 = 1;

/// One task of a parallel loop: called as `task(args, index)` once for each
/// index in `0..n_tasks`.
pub type TaskFn = unsafe extern "C" fn(args: *const c_void, index: u32);

/// Entry point of a compiled model, `NAME_run` in C.
///
/// The arguments are the input pointers, the output pointers, the arena and
/// the thread pool (or null). It returns 0 on success.
pub type EntryFn = unsafe extern "C" fn(
    inputs: *const *const f32,
    outputs: *const *mut f32,
    arena: *mut c_void,
    pool: *const ThreadPoolAbi,
) -> i32;

/// Function table through which generated code runs parallel loops,
/// `vitc_thread_pool` in C.
///
/// `parallel_for(ctx, n_tasks, task, args)` calls `task(args, i)` exactly once
/// for every `i` in `0..n_tasks` and returns only after all calls have
/// returned. Calls may run concurrently on several threads.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ThreadPoolAbi {
    /// Opaque pointer passed back as the first argument of `parallel_for`.
    pub ctx: *mut c_void,
    /// Runs one parallel loop, with `ctx`, the number of tasks, the task
    /// function and the argument pointer that is passed to every task.
    pub parallel_for:
        unsafe extern "C" fn(ctx: *mut c_void, n_tasks: u32, task: TaskFn, args: *const c_void),
}
