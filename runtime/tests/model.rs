//! Tests of the `Model` wrapper, with hand-written `extern "C"` functions in
//! place of generated code.

use std::ffi::c_void;
use std::ptr;

use vitc_runtime::{
    ABI_VERSION, Model, ModelInfo, RuntimeError, TaskFn, TensorInfo, ThreadPool, ThreadPoolAbi,
};

const ROWS: usize = 4;
const COLUMNS: usize = 1000;
const ELEMENTS: usize = ROWS * COLUMNS;
const CHUNK: usize = 256;
const ARENA_BYTES: u64 = 1000;

/// Status that the stand-in models return when the arena is misaligned.
const STATUS_MISALIGNED_ARENA: i32 = 2;

/// Arguments of `add_one_task`.
struct AddOneArgs {
    input: *const f32,
    output: *mut f32,
    len: usize,
}

/// Task of `add_one_run`: adds 1 to the elements of chunk `index`.
unsafe extern "C" fn add_one_task(args: *const c_void, index: u32) {
    // SAFETY: `add_one_run` passes a live `AddOneArgs`.
    let args = unsafe { &*args.cast::<AddOneArgs>() };
    let start = index as usize * CHUNK;
    let end = (start + CHUNK).min(args.len);
    for i in start..end {
        // SAFETY: `i < len`, and tasks write disjoint chunks of the output.
        unsafe { *args.output.add(i) = *args.input.add(i) + 1.0 };
    }
}

/// Runs `task` for every index in `0..n_tasks`, as generated code does:
/// through the pool when there is one, serially otherwise.
///
/// # Safety
///
/// `pool` must be null or a valid table, and `task` must accept `args`.
unsafe fn run_loop(pool: *const ThreadPoolAbi, n_tasks: u32, task: TaskFn, args: *const c_void) {
    // SAFETY: the caller promises that `pool` is null or valid.
    match unsafe { pool.as_ref() } {
        // SAFETY: the caller promises that `task` accepts `args`.
        Some(pool) => unsafe { (pool.parallel_for)(pool.ctx, n_tasks, task, args) },
        None => {
            for index in 0..n_tasks {
                // SAFETY: as above.
                unsafe { task(args, index) };
            }
        }
    }
}

/// Stand-in for a generated `NAME_run` with one input and one output of
/// `ELEMENTS` floats: adds 1 to every element in chunks of `CHUNK`, and
/// fills its `ARENA_BYTES`-byte arena to check that the arena is usable.
unsafe extern "C" fn add_one_run(
    inputs: *const *const f32,
    outputs: *const *mut f32,
    arena: *mut c_void,
    pool: *const ThreadPoolAbi,
) -> i32 {
    if !arena.addr().is_multiple_of(64) {
        return STATUS_MISALIGNED_ARENA;
    }
    // SAFETY: the wrapper provides at least `ARENA_BYTES` bytes of arena.
    unsafe { ptr::write_bytes(arena.cast::<u8>(), 0xA5, ARENA_BYTES as usize) };

    let args = AddOneArgs {
        // SAFETY: the wrapper passes one input and one output pointer.
        input: unsafe { *inputs },
        // SAFETY: as above.
        output: unsafe { *outputs },
        len: ELEMENTS,
    };
    let args_ptr: *const AddOneArgs = &args;
    let n_tasks = ELEMENTS.div_ceil(CHUNK) as u32;
    // SAFETY: `pool` comes from the wrapper, and `add_one_task` accepts
    // `AddOneArgs`.
    unsafe { run_loop(pool, n_tasks, add_one_task, args_ptr.cast()) };
    0
}

/// Stand-in for a model with inputs `a` and `b` of 3 floats and output `a - b`.
unsafe extern "C" fn subtract_run(
    inputs: *const *const f32,
    outputs: *const *mut f32,
    _arena: *mut c_void,
    _pool: *const ThreadPoolAbi,
) -> i32 {
    for i in 0..3 {
        // SAFETY: the wrapper passes two inputs and one output of 3 floats.
        unsafe { *(*outputs).add(i) = *(*inputs).add(i) - *(*inputs.add(1)).add(i) };
    }
    0
}

/// Stand-in for a model whose run always fails with status 7.
unsafe extern "C" fn failing_run(
    _inputs: *const *const f32,
    _outputs: *const *mut f32,
    _arena: *mut c_void,
    _pool: *const ThreadPoolAbi,
) -> i32 {
    7
}

fn add_one_info() -> ModelInfo {
    ModelInfo {
        name: "add_one".to_string(),
        abi_version: ABI_VERSION,
        arena_bytes: ARENA_BYTES,
        inputs: vec![TensorInfo::new("pixels", [ROWS, COLUMNS])],
        outputs: vec![TensorInfo::new("logits", [ROWS, COLUMNS])],
    }
}

fn add_one_model() -> Model {
    // SAFETY: `add_one_run` matches `add_one_info`.
    unsafe { Model::new(add_one_info(), add_one_run) }.unwrap()
}

fn subtract_model() -> Model {
    let info = ModelInfo {
        name: "subtract".to_string(),
        abi_version: ABI_VERSION,
        arena_bytes: 0,
        inputs: vec![TensorInfo::new("a", [3]), TensorInfo::new("b", [3])],
        outputs: vec![TensorInfo::new("difference", [3])],
    };
    // SAFETY: `subtract_run` matches `info`.
    unsafe { Model::new(info, subtract_run) }.unwrap()
}

fn ramp() -> Vec<f32> {
    (0..ELEMENTS).map(|i| i as f32).collect()
}

fn assert_ramp_plus_one(output: &[f32]) {
    for (i, &value) in output.iter().enumerate() {
        assert_eq!(value, i as f32 + 1.0, "element {i}");
    }
}

#[test]
fn run_adds_one_with_each_pool() {
    let input = ramp();
    let pools = [
        None,
        Some(ThreadPool::new(1).unwrap()),
        Some(ThreadPool::new(2).unwrap()),
    ];

    for pool in &pools {
        let mut model = add_one_model();
        let mut output = vec![0.0; ELEMENTS];

        model
            .run(&[&input], &mut [&mut output], pool.as_ref())
            .unwrap();

        assert_ramp_plus_one(&output);
    }
}

#[test]
fn run_repeats_with_same_model() {
    let pool = ThreadPool::new(2).unwrap();
    let mut model = add_one_model();
    let mut input = ramp();

    for _ in 0..10 {
        let output = model.run_simple(&input, Some(&pool)).unwrap();
        for (i, (&before, &after)) in input.iter().zip(&output).enumerate() {
            assert_eq!(after, before + 1.0, "element {i}");
        }
        input = output;
    }
}

#[test]
fn run_simple_returns_output() {
    let pool = ThreadPool::new(2).unwrap();
    let mut model = add_one_model();

    let output = model.run_simple(&ramp(), Some(&pool)).unwrap();

    assert_eq!(output.len(), ELEMENTS);
    assert_ramp_plus_one(&output);
}

#[test]
fn run_passes_inputs_in_order() {
    let mut model = subtract_model();
    let mut difference = [0.0; 3];

    model
        .run(
            &[&[10.0, 20.0, 30.0], &[1.0, 2.0, 3.0]],
            &mut [&mut difference],
            None,
        )
        .unwrap();

    assert_eq!(difference, [9.0, 18.0, 27.0]);
}

#[test]
fn wrong_input_count_is_rejected() {
    let mut model = add_one_model();
    let input = ramp();
    let mut output = vec![0.0; ELEMENTS];

    let error = model
        .run(&[&input, &input], &mut [&mut output], None)
        .unwrap_err();

    assert!(matches!(
        error,
        RuntimeError::InputCount {
            expected: 1,
            given: 2,
            ..
        }
    ));
    let message = error.to_string();
    assert!(message.contains("`add_one` takes 1 input"), "{message}");
    assert!(message.contains("2 were given"), "{message}");
}

#[test]
fn wrong_output_count_is_rejected() {
    let mut model = add_one_model();

    let error = model.run(&[&ramp()], &mut [], None).unwrap_err();

    assert!(matches!(
        error,
        RuntimeError::OutputCount {
            expected: 1,
            given: 0,
            ..
        }
    ));
}

#[test]
fn wrong_input_length_names_tensor() {
    let mut model = add_one_model();
    let short_input = vec![0.0; ELEMENTS - 1];
    let mut output = vec![0.0; ELEMENTS];

    let error = model
        .run(&[&short_input], &mut [&mut output], None)
        .unwrap_err();

    let message = error.to_string();
    assert!(message.contains("input `pixels`"), "{message}");
    assert!(message.contains("[4, 1000]"), "{message}");
    assert!(message.contains("needs 4000 f32 values"), "{message}");
    assert!(message.contains("has 3999"), "{message}");
    assert!(
        output.iter().all(|&value| value == 0.0),
        "the model ran anyway"
    );
}

#[test]
fn wrong_output_length_names_tensor() {
    let mut model = add_one_model();
    let input = ramp();
    let mut long_output = vec![0.0; ELEMENTS + 1];

    let error = model
        .run(&[&input], &mut [&mut long_output], None)
        .unwrap_err();

    let message = error.to_string();
    assert!(message.contains("output `logits`"), "{message}");
    assert!(message.contains("[4, 1000]"), "{message}");
    assert!(message.contains("has 4001"), "{message}");
}

#[test]
fn run_simple_rejects_two_inputs() {
    let mut model = subtract_model();

    let error = model.run_simple(&[1.0, 2.0, 3.0], None).unwrap_err();

    assert!(matches!(
        error,
        RuntimeError::NotSingleInputOutput {
            inputs: 2,
            outputs: 1,
            ..
        }
    ));
    assert!(error.to_string().contains("call Model::run instead"));
}

#[test]
fn run_simple_checks_input_length() {
    let mut model = add_one_model();

    let error = model.run_simple(&[1.0; 10], None).unwrap_err();

    assert!(matches!(
        error,
        RuntimeError::InputLength {
            expected: ELEMENTS,
            given: 10,
            ..
        }
    ));
}

#[test]
fn other_abi_version_is_rejected() {
    let info = ModelInfo {
        abi_version: ABI_VERSION + 1,
        ..add_one_info()
    };

    // SAFETY: `add_one_run` matches the tensors of `info`, and `new` fails
    // before it could be called.
    let error = unsafe { Model::new(info, add_one_run) }.unwrap_err();

    assert!(matches!(
        error,
        RuntimeError::AbiVersionMismatch {
            found: 2,
            expected: 1,
            ..
        }
    ));
    let message = error.to_string();
    assert!(message.contains("ABI version 2"), "{message}");
    assert!(message.contains("implements version 1"), "{message}");
}

#[test]
fn nonzero_status_is_error() {
    let info = ModelInfo {
        name: "failing".to_string(),
        ..add_one_info()
    };
    // SAFETY: `failing_run` touches no tensor.
    let mut model = unsafe { Model::new(info, failing_run) }.unwrap();

    let error = model.run_simple(&ramp(), None).unwrap_err();

    assert!(matches!(error, RuntimeError::ModelFailed { status: 7, .. }));
    assert!(error.to_string().contains("`failing` failed with status 7"));
}

#[test]
fn overflowing_shape_is_rejected() {
    let info = ModelInfo {
        inputs: vec![TensorInfo::new("huge", [usize::MAX, 2])],
        ..add_one_info()
    };

    // SAFETY: `new` fails before `add_one_run` could be called.
    let error = unsafe { Model::new(info, add_one_run) }.unwrap_err();

    assert!(matches!(error, RuntimeError::ShapeOverflow { .. }));
    assert!(error.to_string().contains("tensor `huge`"));
}

#[test]
fn unallocatable_arena_is_error() {
    let info = ModelInfo {
        arena_bytes: u64::MAX,
        ..add_one_info()
    };

    // SAFETY: `new` fails before `add_one_run` could be called.
    let error = unsafe { Model::new(info, add_one_run) }.unwrap_err();

    assert!(matches!(
        error,
        RuntimeError::ArenaAllocation {
            bytes: u64::MAX,
            ..
        }
    ));
}

#[test]
fn scalar_and_empty_tensors_count_elements() {
    assert_eq!(
        TensorInfo::new("scalar", Vec::new()).element_count(),
        Some(1)
    );
    assert_eq!(TensorInfo::new("empty", [3, 0, 5]).element_count(), Some(0));
    assert_eq!(
        TensorInfo::new("image", [1, 3, 224, 224]).element_count(),
        Some(150_528)
    );
    assert_eq!(
        TensorInfo::new("huge", [usize::MAX, 2]).element_count(),
        None
    );
}

#[test]
fn model_moves_between_threads() {
    let mut model = add_one_model();
    let input = ramp();

    let output = std::thread::spawn(move || model.run_simple(&input, None).unwrap())
        .join()
        .unwrap();

    assert_ramp_plus_one(&output);
}
