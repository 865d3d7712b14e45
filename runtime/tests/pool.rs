//! Tests of `ThreadPool::parallel_for` and of the function table that
//! `ThreadPool::abi` returns.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use vitc_runtime::ThreadPool;

/// Repetitions of the stress loops, and the task count of their largest
/// loop. Both are smaller under Miri, which interprets every instruction.
const REPETITIONS: usize = if cfg!(miri) { 5 } else { 200 };
const MANY_TASKS: u32 = if cfg!(miri) { 100 } else { 10_000 };

/// Runs one loop of `n_tasks` tasks and returns how often each index ran.
fn count_calls(pool: &ThreadPool, n_tasks: u32) -> Vec<u32> {
    let counts: Vec<AtomicU32> = (0..n_tasks).map(|_| AtomicU32::new(0)).collect();
    pool.parallel_for(n_tasks, |index| {
        counts[index as usize].fetch_add(1, Ordering::Relaxed);
    });
    counts.into_iter().map(AtomicU32::into_inner).collect()
}

/// Asserts that every index ran exactly once.
fn assert_each_once(counts: &[u32], context: &str) {
    for (index, &count) in counts.iter().enumerate() {
        assert_eq!(count, 1, "{context}: task {index} ran {count} times");
    }
}

#[test]
fn every_index_runs_once() {
    for threads in [2, 3, 4] {
        let pool = ThreadPool::new(threads).unwrap();
        for repetition in 0..REPETITIONS {
            let n_tasks = [MANY_TASKS, 7, 2, 3, 64][repetition % 5];
            let counts = count_calls(&pool, n_tasks);
            assert_each_once(&counts, &format!("{threads} threads, loop {repetition}"));

            // Let the workers park now and then, to cover waking them.
            if repetition % 50 == 0 {
                thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

#[test]
fn zero_tasks_return_at_once() {
    let pool = ThreadPool::new(2).unwrap();
    let calls = AtomicU32::new(0);

    pool.parallel_for(0, |_| {
        calls.fetch_add(1, Ordering::Relaxed);
    });

    assert_eq!(calls.into_inner(), 0);
}

#[test]
fn one_thread_runs_serially_in_order() {
    let pool = ThreadPool::new(1).unwrap();
    let caller = thread::current().id();
    let calls = Mutex::new(Vec::new());

    pool.parallel_for(100, |index| {
        calls.lock().unwrap().push((index, thread::current().id()));
    });

    let calls = calls.into_inner().unwrap();
    assert_eq!(pool.threads(), 1);
    assert_eq!(calls.len(), 100);
    for (position, &(index, thread_id)) in calls.iter().enumerate() {
        assert_eq!(index as usize, position, "tasks ran out of order");
        assert_eq!(thread_id, caller, "task {index} ran on another thread");
    }
}

#[test]
fn single_task_runs_on_caller() {
    let pool = ThreadPool::new(2).unwrap();
    let caller = thread::current().id();
    let task_thread = Mutex::new(None);

    pool.parallel_for(1, |_| {
        *task_thread.lock().unwrap() = Some(thread::current().id());
    });

    assert_eq!(task_thread.into_inner().unwrap(), Some(caller));
}

#[test]
fn default_uses_every_core() {
    let cores = thread::available_parallelism().unwrap().get();

    let pool = ThreadPool::new(0).unwrap();

    assert_eq!(pool.threads(), cores);
    assert_each_once(&count_calls(&pool, 1000), "default pool");
}

#[test]
fn tasks_run_concurrently() {
    // Tasks 0 and 1 each wait for the other to start, which only succeeds if
    // they run on two threads at the same time.
    let pool = ThreadPool::new(2).unwrap();
    let started = [AtomicBool::new(false), AtomicBool::new(false)];
    let saw_other = [AtomicBool::new(false), AtomicBool::new(false)];

    pool.parallel_for(2, |index| {
        let index = index as usize;
        started[index].store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if started[1 - index].load(Ordering::SeqCst) {
                saw_other[index].store(true, Ordering::SeqCst);
                break;
            }
            thread::yield_now();
        }
    });

    assert!(
        saw_other[0].load(Ordering::SeqCst),
        "task 0 never saw task 1 start"
    );
    assert!(
        saw_other[1].load(Ordering::SeqCst),
        "task 1 never saw task 0 start"
    );
}

#[test]
fn returns_after_slow_tasks_finish() {
    // Odd tasks are slow, so the caller runs out of work before the worker
    // does and has to wait for it.
    let pool = ThreadPool::new(2).unwrap();
    for _ in 0..20 {
        let finished: Vec<AtomicBool> = (0..8).map(|_| AtomicBool::new(false)).collect();

        pool.parallel_for(8, |index| {
            if index % 2 == 1 {
                thread::sleep(Duration::from_micros(300));
            }
            finished[index as usize].store(true, Ordering::Relaxed);
        });

        for (index, flag) in finished.iter().enumerate() {
            assert!(
                flag.load(Ordering::Relaxed),
                "returned before task {index} finished"
            );
        }
    }
}

#[test]
fn concurrent_callers_share_pool() {
    let pool = ThreadPool::new(3).unwrap();

    thread::scope(|scope| {
        for caller in 0..3 {
            let pool = &pool;
            scope.spawn(move || {
                for repetition in 0..REPETITIONS {
                    let counts = count_calls(pool, 97);
                    assert_each_once(&counts, &format!("caller {caller}, loop {repetition}"));
                }
            });
        }
    });
}

#[test]
fn nested_loop_runs_serially() {
    let pool = ThreadPool::new(2).unwrap();
    let outer_counts: Vec<AtomicU32> = (0..4).map(|_| AtomicU32::new(0)).collect();
    let inner_counts: Vec<AtomicU32> = (0..4 * 16).map(|_| AtomicU32::new(0)).collect();
    let inner_moved_thread = AtomicBool::new(false);

    // A failed assert inside a task would abort the test binary, so the tasks
    // record what they see and the asserts come after the loop.
    pool.parallel_for(4, |outer| {
        outer_counts[outer as usize].fetch_add(1, Ordering::Relaxed);
        let outer_thread = thread::current().id();
        pool.parallel_for(16, |inner| {
            if thread::current().id() != outer_thread {
                inner_moved_thread.store(true, Ordering::Relaxed);
            }
            inner_counts[(outer * 16 + inner) as usize].fetch_add(1, Ordering::Relaxed);
        });
    });

    let outer_counts: Vec<u32> = outer_counts
        .into_iter()
        .map(AtomicU32::into_inner)
        .collect();
    let inner_counts: Vec<u32> = inner_counts
        .into_iter()
        .map(AtomicU32::into_inner)
        .collect();
    assert_each_once(&outer_counts, "outer loop");
    assert_each_once(&inner_counts, "inner loops");
    assert!(
        !inner_moved_thread.into_inner(),
        "an inner task ran on another thread than its outer task"
    );
}

#[test]
fn pool_moves_between_threads() {
    let pool = ThreadPool::new(2).unwrap();
    let (sender, receiver) = mpsc::channel();

    thread::spawn(move || {
        let counts = count_calls(&pool, 500);
        sender.send((pool, counts)).unwrap();
    });
    let (pool, counts) = receiver.recv().unwrap();

    assert_each_once(&counts, "loop on the spawning thread");
    assert_each_once(&count_calls(&pool, 500), "loop after the move");
}

/// Arguments of `count_task`.
struct CountArgs {
    counts: Vec<AtomicU32>,
}

/// Task in the shape of generated code: increments `counts[index]`.
unsafe extern "C" fn count_task(args: *const c_void, index: u32) {
    // SAFETY: every caller in this file passes a pointer to a live `CountArgs`
    // with more than `index` counters.
    let args = unsafe { &*args.cast::<CountArgs>() };
    args.counts[index as usize].fetch_add(1, Ordering::Relaxed);
}

#[test]
fn abi_table_runs_every_index_once() {
    let pool = ThreadPool::new(2).unwrap();
    let table = pool.abi();

    for n_tasks in [0, 1, 2, 1000] {
        let args = CountArgs {
            counts: (0..n_tasks).map(|_| AtomicU32::new(0)).collect(),
        };
        let args_ptr: *const CountArgs = &args;

        // SAFETY: `table` comes from the live `pool`, and `count_task` gets a
        // `CountArgs` with `n_tasks` counters.
        unsafe { (table.parallel_for)(table.ctx, n_tasks, count_task, args_ptr.cast()) };

        let counts: Vec<u32> = args.counts.into_iter().map(AtomicU32::into_inner).collect();
        assert_each_once(&counts, &format!("{n_tasks} tasks through the ABI"));
    }
}

#[test]
fn raw_loop_runs_every_index_once() {
    let pool = ThreadPool::new(2).unwrap();
    let args = CountArgs {
        counts: (0..300).map(|_| AtomicU32::new(0)).collect(),
    };
    let args_ptr: *const CountArgs = &args;

    // SAFETY: `count_task` gets a `CountArgs` with 300 counters.
    unsafe { pool.parallel_for_raw(300, count_task, args_ptr.cast()) };

    let counts: Vec<u32> = args.counts.into_iter().map(AtomicU32::into_inner).collect();
    assert_each_once(&counts, "raw loop");
}
