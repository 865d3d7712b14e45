//! C API for apps written in C, declared in `include/vitc_runtime.h`.
//!
//! These functions are exported unmangled from `libvitc_runtime.a`. Rust apps
//! use [`ThreadPool`] directly.

use crate::{ThreadPool, ThreadPoolAbi};

/// A pool created for C, with the function table first so that a pointer to
/// it is also a pointer to its [`ThreadPoolAbi`].
#[repr(C)]
struct CThreadPool {
    abi: ThreadPoolAbi,
    pool: ThreadPool,
}

/// Creates a thread pool of `threads` threads (0 = one per core) and returns
/// its function table, to pass to `NAME_run`.
///
/// Returns null if a worker thread could not be started. Free the pool with
/// [`vitc_runtime_pool_destroy`].
#[unsafe(no_mangle)]
pub extern "C" fn vitc_runtime_pool_create(threads: u32) -> *mut ThreadPoolAbi {
    let Ok(threads) = usize::try_from(threads) else {
        return std::ptr::null_mut();
    };
    let pool = match ThreadPool::new(threads) {
        Ok(pool) => pool,
        Err(error) => {
            eprintln!("vitc-runtime: {error}");
            return std::ptr::null_mut();
        }
    };

    let abi = pool.abi();
    let owned = Box::new(CThreadPool { abi, pool });
    Box::into_raw(owned).cast::<ThreadPoolAbi>()
}

/// Stops the workers of a pool from [`vitc_runtime_pool_create`] and frees
/// it. A null `pool` is ignored.
///
/// # Safety
///
/// `pool` must be null or a pointer returned by `vitc_runtime_pool_create`
/// that has not been destroyed yet, and no loop may be running on the pool.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vitc_runtime_pool_destroy(pool: *mut ThreadPoolAbi) {
    if pool.is_null() {
        return;
    }
    // SAFETY: `pool` came from `Box::into_raw` of a `CThreadPool` in
    // `vitc_runtime_pool_create`, whose first field is the `ThreadPoolAbi`
    // (`repr(C)`), and the caller promises it is not freed yet.
    drop(unsafe { Box::from_raw(pool.cast::<CThreadPool>()) });
}
