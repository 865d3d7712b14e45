//! Thread pool behind [`ThreadPoolAbi`].
//!
//! A pool of `threads` threads runs each parallel loop on the calling thread
//! and `threads - 1` worker threads. Tasks are handed out one index at a time
//! through an atomic counter, so threads that finish early take more tasks.
//!
//! # Protocol of one loop
//!
//! `epoch` counts loops: it is odd while a loop is open for workers to join
//! and even otherwise. Only the thread that has locked `dispatch` writes `epoch`
//! and `job` and resets `next_index`.
//!
//! 1. Open: the caller writes `job`, resets `next_index`, stores the next odd
//!    `epoch` and wakes parked workers.
//! 2. Work: every participating thread takes indices from `next_index` until
//!    they run out. A worker joins by incrementing `active` and then checking
//!    that the epoch is still the open one it saw, so it reads `job` only
//!    while the loop is open.
//! 3. Close: once the caller draws an index past the end, every task has been
//!    handed out. It stores the next even `epoch`, so workers stop joining,
//!    and waits until `active` is 0, which means every task has returned and no
//!    worker still reads `job` or `next_index`.
//!
//! The join check and the close form a store-then-load pair on each side
//! (`active` then `epoch` in the worker, `epoch` then `active` in the caller)
//! with `SeqCst` ordering: either the caller sees the worker in `active` and
//! waits for it, or the worker sees the closed epoch and backs off.
//!
//! Between loops, workers spin for [`SPIN_TIME`] and then park on a condition
//! variable, so a busy inference keeps them awake and an idle app costs no
//! CPU time. The caller waits for the last workers the same way.

use std::cell::{Cell, UnsafeCell};
use std::ffi::c_void;
use std::fmt;
use std::hint;
use std::num::NonZeroUsize;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::{RuntimeError, TaskFn, ThreadPoolAbi};

/// Time a waiting thread spins before it parks.
///
/// NOTE: a tuning choice, not a measured optimum. It should exceed the usual
/// gap between two parallel loops of one inference, and stays short so that
/// idle workers park soon after an inference ends.
const SPIN_TIME: Duration = Duration::from_micros(50);

/// Busy-wait rounds between two checks of the clock and two yields.
const SPIN_ROUNDS_PER_CHECK: u32 = 64;

thread_local! {
    /// Whether this thread runs tasks of some pool. Workers set it for their
    /// whole life, and the calling thread for the duration of a loop.
    static IN_POOL: Cell<bool> = const { Cell::new(false) };
}

/// Pool of threads that runs the parallel loops of compiled models.
///
/// [`ThreadPool::abi`] returns the function table that generated code takes.
/// One loop runs at a time: a thread that starts a loop while another thread's
/// loop is running waits for it to finish. A loop started from inside a task
/// runs serially on the thread that started it.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl ThreadPool {
    /// Creates a pool that runs loops on `threads` threads: the calling
    /// thread plus `threads - 1` workers. 0 means one thread per core, as
    /// [`std::thread::available_parallelism`] reports it.
    ///
    /// A pool of 1 thread starts no workers and runs every loop serially.
    pub fn new(threads: usize) -> Result<ThreadPool, RuntimeError> {
        let threads = if threads == 0 {
            thread::available_parallelism().map_or(1, NonZeroUsize::get)
        } else {
            threads
        };
        let worker_count = threads - 1;
        let mut pool = ThreadPool {
            shared: Arc::new(Shared::new(worker_count)),
            // No `with_capacity`: an absurd thread count should fail to spawn
            // and return an error, not abort on a huge allocation.
            workers: Vec::new(),
        };

        for index in 0..worker_count {
            let shared = Arc::clone(&pool.shared);
            let worker = thread::Builder::new()
                .name(format!("vitc-worker-{index}"))
                .spawn(move || shared.run_worker())
                .map_err(|source| RuntimeError::ThreadSpawn {
                    threads,
                    index,
                    source,
                })?;
            pool.workers.push(worker);
        }
        Ok(pool)
    }

    /// Returns the number of threads that run a loop, counting the caller.
    pub fn threads(&self) -> usize {
        self.shared.worker_count + 1
    }

    /// Returns the function table to pass to generated code.
    ///
    /// The table points into this pool: it is valid until the pool is
    /// dropped, and moving the `ThreadPool` value does not invalidate it.
    pub fn abi(&self) -> ThreadPoolAbi {
        ThreadPoolAbi {
            ctx: Arc::as_ptr(&self.shared).cast_mut().cast(),
            parallel_for: parallel_for_abi,
        }
    }

    /// Calls `f(i)` once for every `i` in `0..n_tasks`, on the calling thread
    /// and the pool's workers, and returns after all calls have returned.
    ///
    /// A panic in `f` aborts the process, because `f` runs behind the C ABI
    /// of [`TaskFn`], which cannot unwind.
    pub fn parallel_for<F>(&self, n_tasks: u32, f: F)
    where
        F: Fn(u32) + Sync,
    {
        unsafe extern "C" fn call_closure<F: Fn(u32) + Sync>(args: *const c_void, index: u32) {
            // SAFETY: `args` is the `&F` that `parallel_for` passes below, and
            // the closure outlives the loop because `parallel_for` returns only
            // after every task has returned.
            let f = unsafe { &*args.cast::<F>() };
            f(index);
        }

        let args: *const F = &f;
        // SAFETY: `call_closure::<F>` reads `args` as `&F`, which is what it
        // points to. `F: Sync`, so calling `f` from several threads at once is
        // sound.
        unsafe {
            self.shared
                .parallel_for(n_tasks, call_closure::<F>, args.cast())
        };
    }

    /// Calls `task(args, i)` once for every `i` in `0..n_tasks` and returns
    /// after all calls have returned, like the `parallel_for` of [`Self::abi`].
    ///
    /// # Safety
    ///
    /// `task` must be safe to call with `args` and any index in `0..n_tasks`,
    /// from any thread and concurrently with the calls for other indices.
    pub unsafe fn parallel_for_raw(&self, n_tasks: u32, task: TaskFn, args: *const c_void) {
        // SAFETY: the caller upholds the contract of `Shared::parallel_for`,
        // which is the contract of this function.
        unsafe { self.shared.parallel_for(n_tasks, task, args) };
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _sleep = lock(&self.shared.sleep);
            self.shared.wake_workers.notify_all();
        }
        for worker in self.workers.drain(..) {
            // A worker cannot panic, because `AbortOnUnwind` turns a panic in
            // it into an abort, so the join result carries no information.
            let _ = worker.join();
        }
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads())
            .finish_non_exhaustive()
    }
}

/// `parallel_for` entry of the function table that [`ThreadPool::abi`]
/// returns.
///
/// A panic cannot unwind out of this function: Rust (1.81 and later) aborts
/// the process when a panic reaches an `extern "C"` function boundary.
unsafe extern "C" fn parallel_for_abi(
    ctx: *mut c_void,
    n_tasks: u32,
    task: TaskFn,
    args: *const c_void,
) {
    // SAFETY: `ctx` comes from `ThreadPool::abi`, so it points to the pool's
    // `Shared`, which the ABI contract keeps alive while generated code runs.
    let shared = unsafe { &*ctx.cast_const().cast::<Shared>() };
    // SAFETY: the ABI contract requires generated code to pass a task that
    // may run concurrently for every index in `0..n_tasks`.
    unsafe { shared.parallel_for(n_tasks, task, args) };
}

/// Loop description that the caller publishes to the workers.
#[derive(Clone, Copy)]
struct Job {
    task: Option<TaskFn>,
    args: *const c_void,
    n_tasks: u32,
}

/// State that the pool's threads share. See the module docs for the protocol.
struct Shared {
    /// Loop counter: odd while a loop is open for workers to join.
    epoch: CachePadded<AtomicU64>,
    /// Next task index to hand out in the current loop.
    next_index: CachePadded<AtomicU64>,
    /// Number of workers that joined the current loop and have not left it.
    active: CachePadded<AtomicUsize>,
    /// Current loop, written only while `epoch` is even and `active` was
    /// seen to be 0, by the thread that has locked `dispatch`.
    job: UnsafeCell<Job>,
    worker_count: usize,
    /// Held by the thread that runs a loop, so loops run one at a time.
    dispatch: Mutex<()>,
    /// Lock that workers hold to park on `wake_workers`, and the caller to
    /// wait on `wake_caller`.
    sleep: Mutex<()>,
    sleeping_workers: AtomicUsize,
    caller_waiting: AtomicBool,
    wake_workers: Condvar,
    wake_caller: Condvar,
    shutdown: AtomicBool,
}

// SAFETY: `job` is the only field that is not `Send` and `Sync` by itself. Its
// raw `args` pointer is shared with other threads only as the `parallel_for`
// contract allows, and access to the cell follows the protocol in the module
// docs: one writer while no worker reads, readers only while the loop is open.
unsafe impl Send for Shared {}
// SAFETY: see the `Send` impl above.
unsafe impl Sync for Shared {}

impl Shared {
    fn new(worker_count: usize) -> Shared {
        Shared {
            epoch: CachePadded(AtomicU64::new(0)),
            next_index: CachePadded(AtomicU64::new(0)),
            active: CachePadded(AtomicUsize::new(0)),
            job: UnsafeCell::new(Job {
                task: None,
                args: std::ptr::null(),
                n_tasks: 0,
            }),
            worker_count,
            dispatch: Mutex::new(()),
            sleep: Mutex::new(()),
            sleeping_workers: AtomicUsize::new(0),
            caller_waiting: AtomicBool::new(false),
            wake_workers: Condvar::new(),
            wake_caller: Condvar::new(),
            shutdown: AtomicBool::new(false),
        }
    }

    /// Runs one loop, on the pool's threads where possible.
    ///
    /// # Safety
    ///
    /// `task` must be safe to call with `args` and any index in `0..n_tasks`,
    /// from any thread and concurrently with the calls for other indices.
    unsafe fn parallel_for(&self, n_tasks: u32, task: TaskFn, args: *const c_void) {
        let _abort = AbortOnUnwind;
        if n_tasks == 0 {
            return;
        }
        if n_tasks == 1 || self.worker_count == 0 || IN_POOL.get() {
            // SAFETY: the caller's contract covers every index in `0..n_tasks`.
            unsafe { run_serially(n_tasks, task, args) };
            return;
        }

        let _dispatch = lock(&self.dispatch);
        let _in_pool = InPoolScope::enter();

        // Phase 1: open the loop. The previous loop ended with an even epoch
        // and `active == 0`, and `dispatch` excludes other callers.
        // SAFETY: no worker reads `job` while the epoch is even (see the
        // module docs), and no other thread writes it without `dispatch`.
        unsafe {
            *self.job.get() = Job {
                task: Some(task),
                args,
                n_tasks,
            };
        }
        self.next_index.store(0, Ordering::Relaxed);
        let open_epoch = self.epoch.load(Ordering::Relaxed) + 1;
        self.epoch.store(open_epoch, Ordering::SeqCst);
        if self.sleeping_workers.load(Ordering::SeqCst) > 0 {
            // Taking the lock waits until a worker that is about to park is
            // inside `wait`. Notifying after unlocking spares the woken
            // workers from blocking on the lock again.
            drop(lock(&self.sleep));
            self.wake_workers.notify_all();
        }

        // Phase 2: take part in the work.
        // SAFETY: the caller's contract covers every index in `0..n_tasks`.
        unsafe { self.run_tasks(task, args, n_tasks) };

        // Phase 3: every index has been handed out. Close the loop and wait
        // for the workers that still run tasks.
        self.epoch.store(open_epoch + 1, Ordering::SeqCst);
        self.wait_for_workers();
    }

    /// Takes task indices from `next_index` and runs them until none is left.
    ///
    /// # Safety
    ///
    /// As for [`Shared::parallel_for`], and the caller must be the thread
    /// that opened the loop or a worker counted in `active`.
    unsafe fn run_tasks(&self, task: TaskFn, args: *const c_void, n_tasks: u32) {
        loop {
            // Relaxed is enough: the atomic increment alone makes each index
            // unique, and the epoch and `active` order everything else.
            let index = self.next_index.fetch_add(1, Ordering::Relaxed);
            let Ok(index) = u32::try_from(index) else {
                break;
            };
            if index >= n_tasks {
                break;
            }
            // SAFETY: `index` is in `0..n_tasks` and was handed out only once.
            unsafe { task(args, index) };
        }
    }

    /// Blocks the caller until every worker has left the closed loop.
    fn wait_for_workers(&self) {
        let mut spin = SpinWait::new();
        while self.active.load(Ordering::Acquire) != 0 {
            if !spin.wait() {
                break;
            }
        }
        if self.active.load(Ordering::Acquire) == 0 {
            return;
        }

        let mut sleep = lock(&self.sleep);
        self.caller_waiting.store(true, Ordering::SeqCst);
        while self.active.load(Ordering::SeqCst) != 0 {
            sleep = self
                .wake_caller
                .wait(sleep)
                .unwrap_or_else(PoisonError::into_inner);
        }
        self.caller_waiting.store(false, Ordering::Relaxed);
    }

    /// Main loop of a worker thread.
    fn run_worker(&self) {
        let _abort = AbortOnUnwind;
        IN_POOL.set(true);
        let mut seen_epoch = 0;
        while let Some(epoch) = self.wait_for_new_epoch(seen_epoch) {
            seen_epoch = epoch;
            if epoch % 2 == 0 {
                continue;
            }

            self.active.fetch_add(1, Ordering::SeqCst);
            if self.epoch.load(Ordering::SeqCst) == epoch {
                // SAFETY: this worker is counted in `active` and saw the loop
                // still open after that, so the caller does not write `job`
                // until this worker leaves.
                let job = unsafe { *self.job.get() };
                if let Some(task) = job.task {
                    // SAFETY: the caller of `parallel_for` promised that `task`
                    // may run on any thread for every index in `0..n_tasks`.
                    unsafe { self.run_tasks(task, job.args, job.n_tasks) };
                }
            }
            self.leave_loop();
        }
    }

    /// Removes a worker from `active` and wakes the caller if it was the last.
    fn leave_loop(&self) {
        let was_last = self.active.fetch_sub(1, Ordering::SeqCst) == 1;
        if was_last && self.caller_waiting.load(Ordering::SeqCst) {
            drop(lock(&self.sleep));
            self.wake_caller.notify_one();
        }
    }

    /// Waits until `epoch` differs from `seen_epoch` and returns it, or
    /// returns `None` once the pool shuts down.
    fn wait_for_new_epoch(&self, seen_epoch: u64) -> Option<u64> {
        let mut spin = SpinWait::new();
        loop {
            if self.shutdown.load(Ordering::Relaxed) {
                return None;
            }
            let epoch = self.epoch.load(Ordering::Acquire);
            if epoch != seen_epoch {
                return Some(epoch);
            }
            if !spin.wait() {
                break;
            }
        }

        let mut sleep = lock(&self.sleep);
        self.sleeping_workers.fetch_add(1, Ordering::SeqCst);
        let new_epoch = loop {
            if self.shutdown.load(Ordering::SeqCst) {
                break None;
            }
            let epoch = self.epoch.load(Ordering::SeqCst);
            if epoch != seen_epoch {
                break Some(epoch);
            }
            sleep = self
                .wake_workers
                .wait(sleep)
                .unwrap_or_else(PoisonError::into_inner);
        };
        self.sleeping_workers.fetch_sub(1, Ordering::SeqCst);
        new_epoch
    }
}

/// Calls `task(args, i)` for every `i` in `0..n_tasks` on the calling thread.
///
/// # Safety
///
/// `task` must be safe to call with `args` and any index in `0..n_tasks`.
unsafe fn run_serially(n_tasks: u32, task: TaskFn, args: *const c_void) {
    for index in 0..n_tasks {
        // SAFETY: guaranteed by the caller for every index in `0..n_tasks`.
        unsafe { task(args, index) };
    }
}

/// Locks `mutex`, ignoring poisoning: the pool's mutexes guard no data, and a
/// panic while one is held aborts the process anyway.
fn lock(mutex: &Mutex<()>) -> MutexGuard<'_, ()> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Busy-wait budget of [`SPIN_TIME`], after which the waiting thread parks.
struct SpinWait {
    start: Instant,
    rounds: u32,
}

impl SpinWait {
    fn new() -> SpinWait {
        SpinWait {
            start: Instant::now(),
            rounds: 0,
        }
    }

    /// Waits a little and returns `false` once the budget is used up. Every
    /// [`SPIN_ROUNDS_PER_CHECK`] rounds it yields the core, so that a thread
    /// with work to do can run when the pool has more threads than cores.
    fn wait(&mut self) -> bool {
        self.rounds += 1;
        if !self.rounds.is_multiple_of(SPIN_ROUNDS_PER_CHECK) {
            hint::spin_loop();
            return true;
        }
        if self.start.elapsed() >= SPIN_TIME {
            return false;
        }
        thread::yield_now();
        true
    }
}

/// Marks the calling thread as running tasks until dropped, so that a loop
/// started from one of its tasks runs serially instead of deadlocking on
/// `dispatch`.
struct InPoolScope;

impl InPoolScope {
    fn enter() -> InPoolScope {
        IN_POOL.set(true);
        InPoolScope
    }
}

impl Drop for InPoolScope {
    fn drop(&mut self) {
        IN_POOL.set(false);
    }
}

/// Aborts the process if dropped during a panic.
///
/// A panic inside the pool would leave a worker counted in `active` or a
/// caller without its results, and must not unwind into C callers, so the
/// pool aborts instead.
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("vitc-runtime: panic inside the thread pool, aborting");
            std::process::abort();
        }
    }
}

/// Value aligned to 128 bytes, so that counters written by different threads
/// sit on different cache lines (128 covers adjacent-line prefetching on x86).
#[repr(align(128))]
struct CachePadded<T>(T);

impl<T> Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}
