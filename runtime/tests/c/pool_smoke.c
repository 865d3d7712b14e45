/* Uses the runtime's C API the way a C app and generated code do: creates
   pools, runs loops through the vitc_thread_pool table and destroys them.
   Exits with 0 if every check passes. tests/c_api.rs compiles and runs it. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "vitc_runtime.h"

#if VITC_ABI_VERSION != EXPECTED_ABI_VERSION
#error "VITC_ABI_VERSION in vitc_runtime.h differs from ABI_VERSION in the Rust crate"
#endif

#define MAX_TASKS 10000

struct count_args {
    atomic_uint counts[MAX_TASKS];
};

static void count_task(const void *args, uint32_t index) {
    struct count_args *counts = (struct count_args *)args;
    atomic_fetch_add(&counts->counts[index], 1);
}

/* Runs one loop of n_tasks tasks and returns the number of failed checks. */
static int check_loop(const vitc_thread_pool *pool, uint32_t threads, uint32_t n_tasks) {
    static struct count_args args;
    for (uint32_t i = 0; i < MAX_TASKS; i++) {
        atomic_store(&args.counts[i], 0);
    }

    pool->parallel_for(pool->ctx, n_tasks, count_task, &args);

    int failures = 0;
    for (uint32_t i = 0; i < MAX_TASKS; i++) {
        unsigned expected = i < n_tasks ? 1 : 0;
        unsigned count = atomic_load(&args.counts[i]);
        if (count != expected) {
            fprintf(stderr, "%u threads, %u tasks: task %u ran %u times, expected %u\n",
                    threads, n_tasks, i, count, expected);
            failures++;
        }
    }
    return failures;
}

int main(void) {
    static const uint32_t thread_counts[] = {0, 1, 2, 4};
    static const uint32_t task_counts[] = {0, 1, 2, 3, 1000, MAX_TASKS};
    int failures = 0;

    for (size_t t = 0; t < sizeof thread_counts / sizeof thread_counts[0]; t++) {
        vitc_thread_pool *pool = vitc_runtime_pool_create(thread_counts[t]);
        if (pool == NULL) {
            fprintf(stderr, "vitc_runtime_pool_create(%u) returned NULL\n", thread_counts[t]);
            return 1;
        }
        for (size_t n = 0; n < sizeof task_counts / sizeof task_counts[0]; n++) {
            failures += check_loop(pool, thread_counts[t], task_counts[n]);
        }
        vitc_runtime_pool_destroy(pool);
    }
    vitc_runtime_pool_destroy(NULL);

    if (failures != 0) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    return 0;
}
