//! Tests of the C API: called from Rust, checked against
//! `include/vitc_runtime.h`, and linked into a C program.

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use vitc_runtime::ABI_VERSION;
use vitc_runtime::capi::{vitc_runtime_pool_create, vitc_runtime_pool_destroy};

const HEADER: &str = include_str!("../include/vitc_runtime.h");

/// Task in the shape of generated code: increments counter `index` of the
/// `Vec<AtomicU32>` that `args` points to.
unsafe extern "C" fn count_task(args: *const c_void, index: u32) {
    // SAFETY: the test passes a pointer to a live `Vec<AtomicU32>` with more
    // than `index` counters.
    let counts = unsafe { &*args.cast::<Vec<AtomicU32>>() };
    counts[index as usize].fetch_add(1, Ordering::Relaxed);
}

#[test]
fn created_pool_runs_loops() {
    for threads in [0, 1, 2, 3] {
        let pool = vitc_runtime_pool_create(threads);
        assert!(!pool.is_null(), "pool of {threads} threads was not created");

        for n_tasks in [0, 1, 5, 2000] {
            let counts: Vec<AtomicU32> = (0..n_tasks).map(|_| AtomicU32::new(0)).collect();
            let counts_ptr: *const Vec<AtomicU32> = &counts;

            // SAFETY: `pool` is a live table from `vitc_runtime_pool_create`,
            // and `count_task` gets a vector of `n_tasks` counters.
            unsafe {
                let table = &*pool;
                (table.parallel_for)(table.ctx, n_tasks, count_task, counts_ptr.cast());
            }

            for (index, count) in counts.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                assert_eq!(
                    count, 1,
                    "{threads} threads: task {index} ran {count} times"
                );
            }
        }

        // SAFETY: `pool` came from `vitc_runtime_pool_create` and no loop runs.
        unsafe { vitc_runtime_pool_destroy(pool) };
    }
}

#[test]
fn destroying_null_is_ignored() {
    // SAFETY: null is explicitly allowed.
    unsafe { vitc_runtime_pool_destroy(std::ptr::null_mut()) };
}

#[test]
fn header_declares_abi() {
    let version_line = format!("#define VITC_ABI_VERSION {ABI_VERSION}\n");
    let declarations = [
        version_line.as_str(),
        "typedef void (*vitc_task_fn)(const void *args, uint32_t index);",
        "    void *ctx;\n    void (*parallel_for)(void *ctx, uint32_t n_tasks, vitc_task_fn task, const void *args);\n} vitc_thread_pool;",
        "vitc_thread_pool *vitc_runtime_pool_create(uint32_t threads);",
        "void vitc_runtime_pool_destroy(vitc_thread_pool *pool);",
    ];

    for declaration in declarations {
        assert!(
            HEADER.contains(declaration),
            "vitc_runtime.h lacks the declaration:\n{declaration}"
        );
    }
}

/// Builds `libvitc_runtime.a` and returns its path.
///
/// `cargo test` builds only the rlib of this crate, so the test runs a nested
/// `cargo build` of the library in its own target folder. That folder sits
/// under `CARGO_TARGET_TMPDIR`, so later runs reuse the build. `--offline`
/// works because the outer `cargo test` has already fetched every dependency,
/// and `--locked` keeps the nested build from rewriting `Cargo.lock`.
fn build_static_library() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("staticlib");

    let build = Command::new(env!("CARGO"))
        .args(["build", "--lib", "--offline", "--locked", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("failed to start cargo");
    assert!(
        build.status.success(),
        "`cargo build --lib` of {} failed:\n{}",
        manifest.display(),
        String::from_utf8_lossy(&build.stderr)
    );
    target_dir.join("debug").join("libvitc_runtime.a")
}

#[cfg(target_os = "linux")]
#[cfg_attr(miri, ignore = "Miri cannot run external processes")]
#[test]
fn c_program_links_and_runs() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let library = build_static_library();
    let program = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vitc_pool_smoke");

    // The system libraries are those that `rustc --print native-static-libs`
    // lists for this crate on Linux with glibc.
    let compile = Command::new("cc")
        .args(["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror"])
        .arg(format!("-DEXPECTED_ABI_VERSION={ABI_VERSION}"))
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("tests/c/pool_smoke.c"))
        .arg(&library)
        .args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ])
        .arg("-o")
        .arg(&program)
        .output()
        .expect("failed to start the C compiler `cc`");
    assert!(
        compile.status.success(),
        "compiling tests/c/pool_smoke.c failed:\n{}",
        String::from_utf8_lossy(&compile.stderr)
    );

    let run = Command::new(&program).output().unwrap();
    assert!(
        run.status.success(),
        "tests/c/pool_smoke.c failed with {}:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
}
