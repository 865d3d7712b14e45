/* One-core peak of 128-bit single-precision FMA on this machine: twelve
   independent vfmadd chains (enough to cover the FMA latency of current
   x86-64 cores), so the loop is bound by FMA throughput alone. Prints
   GFLOP/s, counting a fused multiply-add as two operations.
   Build: cc -O2 -mfma -o fma_peak fma_peak.c */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define FMA(x) x = _mm_fmadd_ps(x, a, b)

int main(void) {
    const long iterations = 100000000L;
    const __m128 a = _mm_set1_ps(0.999999f), b = _mm_set1_ps(1e-7f);
    __m128 c0 = _mm_set1_ps(0), c1 = _mm_set1_ps(1), c2 = _mm_set1_ps(2), c3 = _mm_set1_ps(3);
    __m128 c4 = _mm_set1_ps(4), c5 = _mm_set1_ps(5), c6 = _mm_set1_ps(6), c7 = _mm_set1_ps(7);
    __m128 c8 = _mm_set1_ps(8), c9 = _mm_set1_ps(9), c10 = _mm_set1_ps(10), c11 = _mm_set1_ps(11);
    double best = 0.0;
    for (int round = 0; round < 5; round++) {
        double start = seconds();
        for (long n = 0; n < iterations; n++) {
            FMA(c0); FMA(c1); FMA(c2); FMA(c3); FMA(c4); FMA(c5);
            FMA(c6); FMA(c7); FMA(c8); FMA(c9); FMA(c10); FMA(c11);
        }
        double elapsed = seconds() - start;
        double gflops = (double)iterations * 12 * 4 * 2 / elapsed / 1e9;
        if (gflops > best) best = gflops;
    }
    __m128 sum = _mm_add_ps(_mm_add_ps(_mm_add_ps(c0, c1), _mm_add_ps(c2, c3)), _mm_add_ps(_mm_add_ps(c4, c5), _mm_add_ps(c6, c7)));
    sum = _mm_add_ps(sum, _mm_add_ps(_mm_add_ps(c8, c9), _mm_add_ps(c10, c11)));
    printf("fma_peak_gflops %.2f (checksum %g)\n", best, _mm_cvtss_f32(sum));
    return 0;
}
