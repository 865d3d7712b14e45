/* C interface between models compiled by vitc and the vitc runtime.
 *
 * Every NAME.h that `vitc build` generates includes this header. Link the
 * model's NAME.o together with libvitc_runtime.a, the static library built
 * from the vitc-runtime crate.
 */
#ifndef VITC_RUNTIME_H
#define VITC_RUNTIME_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the ABI below. NAME_abi_version() returns the version that the
   model was compiled for; run a model only if it equals this value. */
#define VITC_ABI_VERSION 1

/* A task of a parallel loop: called once for each index in [0, n_tasks). */
typedef void (*vitc_task_fn)(const void *args, uint32_t index);

/* Function table through which generated code runs parallel loops.
   parallel_for must call task(args, i) exactly once for every i in [0, n_tasks)
   and return only after all calls have returned. Calls may run concurrently. */
typedef struct vitc_thread_pool {
    void *ctx;
    void (*parallel_for)(void *ctx, uint32_t n_tasks, vitc_task_fn task, const void *args);
} vitc_thread_pool;

/* Generated per model (NAME is the model name given to `vitc build`):
   uint32_t NAME_abi_version(void);        returns VITC_ABI_VERSION
   uint64_t NAME_arena_bytes(void);        scratch bytes the caller provides, 64-byte aligned
   int32_t  NAME_run(const float *const *inputs, float *const *outputs, void *arena,
                     const vitc_thread_pool *pool);
   inputs and outputs hold one pointer per tensor, each to a dense row-major
   float array. pool may be NULL: the generated code then runs every loop
   serially on the calling thread. Returns 0 on success. */

/* Creates a thread pool that runs each loop on `threads` threads: the thread
   that calls NAME_run plus threads - 1 workers. 0 means one thread per core.
   Returns NULL if a worker thread could not be started. The pool runs one
   loop at a time, and may be shared by threads that run models. */
vitc_thread_pool *vitc_runtime_pool_create(uint32_t threads);

/* Stops the pool's workers and frees it. Call it only when no NAME_run that
   uses the pool is running. NULL is ignored. */
void vitc_runtime_pool_destroy(vitc_thread_pool *pool);

#ifdef __cplusplus
}
#endif

#endif /* VITC_RUNTIME_H */
