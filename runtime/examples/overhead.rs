//! Measures the overhead of `parallel_for`, called through the function table
//! as generated code calls it.
//!
//! Run with `cargo run --release --example overhead -p vitc-runtime`.
//! Optional arguments: the number of threads (default 2) and the number of
//! timed calls per case (default 20000).
//!
//! Cases:
//! - empty tasks, back to back: calls follow each other at once, so the
//!   workers are still spinning, as between the loops of one inference. The
//!   caller may finish all tasks before a worker joins, so this is the
//!   cheapest path;
//! - busy tasks: one task per thread, each spinning for 10 µs. With perfect
//!   parallelism a loop takes 10 µs, so the excess is the cost of handing
//!   the tasks out and waiting for the last one;
//! - empty tasks after 1 ms idle: longer than the pool's spin time, so the
//!   workers have parked, and the caller pays for waking them;
//! - worker wake-up: after 1 ms idle, the time until a parked worker starts
//!   a task, as for the first loop of an inference.
//!
//! The machine's load affects every figure: on a shared machine, run it a few
//! times and compare medians.

use std::ffi::c_void;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use vitc_runtime::{TaskFn, ThreadPool, ThreadPoolAbi};

/// Duration of one busy task.
const BUSY_TASK_TIME: Duration = Duration::from_micros(10);

/// Pause before each call of the idle cases, longer than the pool's spin time.
const IDLE_PAUSE: Duration = Duration::from_millis(1);

/// Time after which task 0 of `wake_probe_task` stops waiting for task 1.
const WAKE_TIMEOUT: Duration = Duration::from_millis(100);

/// Number of busy tasks that ran on a worker thread rather than the caller.
static BUSY_TASKS_ON_WORKERS: AtomicU64 = AtomicU64::new(0);

/// Whether task 1 of `wake_probe_task` has started.
static WAKE_PROBE_STARTED: AtomicBool = AtomicBool::new(false);

/// Task that does nothing.
unsafe extern "C" fn empty_task(_args: *const c_void, _index: u32) {}

/// Task that spins for `BUSY_TASK_TIME`.
unsafe extern "C" fn busy_task(_args: *const c_void, _index: u32) {
    if thread::current().name() != Some("main") {
        BUSY_TASKS_ON_WORKERS.fetch_add(1, Ordering::Relaxed);
    }
    let start = Instant::now();
    while start.elapsed() < BUSY_TASK_TIME {
        std::hint::spin_loop();
    }
}

/// Loop of 2 tasks in which task 0 spins until task 1 has started, so the
/// loop lasts until a second thread runs task 1.
unsafe extern "C" fn wake_probe_task(_args: *const c_void, index: u32) {
    if index == 1 {
        WAKE_PROBE_STARTED.store(true, Ordering::SeqCst);
        return;
    }
    let start = Instant::now();
    while !WAKE_PROBE_STARTED.load(Ordering::SeqCst) && start.elapsed() < WAKE_TIMEOUT {
        std::hint::spin_loop();
    }
}

/// Times `calls` loops of `n_tasks` tasks, each after `pause`, and returns
/// the durations in nanoseconds, sorted.
fn time_loops(
    table: &ThreadPoolAbi,
    task: TaskFn,
    n_tasks: u32,
    calls: usize,
    pause: Duration,
) -> Vec<u64> {
    let mut durations = Vec::with_capacity(calls);
    for _ in 0..calls {
        if !pause.is_zero() {
            thread::sleep(pause);
        }
        WAKE_PROBE_STARTED.store(false, Ordering::SeqCst);

        let start = Instant::now();
        // SAFETY: `table` comes from a live pool, and every task in this file
        // ignores its arguments.
        unsafe {
            (table.parallel_for)(table.ctx, black_box(n_tasks), task, std::ptr::null());
        }
        durations.push(start.elapsed().as_nanos() as u64);
    }
    durations.sort_unstable();
    durations
}

fn percentile(sorted: &[u64], fraction: f64) -> u64 {
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index]
}

fn report(case: &str, sorted: &[u64]) {
    println!(
        "{case:<36} median {:>7} ns   p90 {:>7} ns   p99 {:>8} ns   ({} calls)",
        percentile(sorted, 0.5),
        percentile(sorted, 0.9),
        percentile(sorted, 0.99),
        sorted.len()
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map_or(Ok(2), |arg| arg.parse())?;
    let calls: usize = args.next().map_or(Ok(20_000), |arg| arg.parse())?;
    let idle_calls = (calls / 20).max(10);

    let pool = ThreadPool::new(threads)?;
    let table = pool.abi();
    println!("pool of {} threads", pool.threads());

    // Warm up: start the workers and fault in their stacks.
    time_loops(&table, empty_task, 64, 1000, Duration::ZERO);

    for n_tasks in [2, 64] {
        let back_to_back = time_loops(&table, empty_task, n_tasks, calls, Duration::ZERO);
        report(
            &format!("{n_tasks} empty tasks, back to back"),
            &back_to_back,
        );
    }

    let n_busy = u32::try_from(pool.threads())?;
    time_loops(&table, busy_task, n_busy, 1000, Duration::ZERO);
    BUSY_TASKS_ON_WORKERS.store(0, Ordering::Relaxed);
    let busy = time_loops(&table, busy_task, n_busy, calls / 10, Duration::ZERO);
    report(&format!("{n_busy} busy tasks of 10 us"), &busy);
    let on_workers = BUSY_TASKS_ON_WORKERS.load(Ordering::Relaxed);
    let total = busy.len() as u64 * u64::from(n_busy);
    println!(
        "{:<36} {on_workers} of {total} busy tasks",
        "  ran on workers"
    );

    for n_tasks in [2, 64] {
        let after_idle = time_loops(&table, empty_task, n_tasks, idle_calls, IDLE_PAUSE);
        report(
            &format!("{n_tasks} empty tasks, after 1 ms idle"),
            &after_idle,
        );
    }
    if pool.threads() >= 2 {
        let wake = time_loops(&table, wake_probe_task, 2, idle_calls, IDLE_PAUSE);
        report("worker wake-up after 1 ms idle", &wake);
    }

    let serial_pool = ThreadPool::new(1)?;
    let serial = time_loops(&serial_pool.abi(), empty_task, 64, calls, Duration::ZERO);
    report("64 empty tasks, 1-thread pool", &serial);
    Ok(())
}
