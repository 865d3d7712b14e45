/* Measures the one-core peak of the x86-64 INT8 dot-product sequences on
 * 128-bit vectors: pmaddubsw + pmaddwd (by ones) + paddd, and, when the
 * CPU has AVX512-VNNI, one vpdpbusd. Twelve independent accumulators hide
 * the latency; build with -O3 so that they stay in registers. One sequence is 16 u8 x i8 multiply-adds = 32 operations.
 * benches/int8-peak runs it beside the generated INT8 GEMM.
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define CHAINS 12
#define ITERATIONS 20000000L

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

__attribute__((target("ssse3,sse4.1"))) static double pmaddubsw_peak(void) {
    __m128i acc[CHAINS];
    __m128i a = _mm_set1_epi8(3), ones = _mm_set1_epi16(1);
    __m128i b[CHAINS];
    for (int c = 0; c < CHAINS; c++) {
        acc[c] = _mm_setzero_si128();
        b[c] = _mm_set1_epi8((char)(c + 1));
    }
    double start = seconds();
    for (long i = 0; i < ITERATIONS; i++) {
#pragma GCC unroll 12
        for (int c = 0; c < CHAINS; c++) {
            __m128i pairs = _mm_maddubs_epi16(a, b[c]);
            acc[c] = _mm_add_epi32(acc[c], _mm_madd_epi16(pairs, ones));
        }
        __asm__ volatile("" : "+x"(a));
    }
    double elapsed = seconds() - start;
    __m128i sum = acc[0];
    for (int c = 1; c < CHAINS; c++) sum = _mm_add_epi32(sum, acc[c]);
    if (_mm_cvtsi128_si32(sum) == 42) printf("unlikely\n");
    return 32.0 * CHAINS * ITERATIONS / elapsed / 1e9;
}

__attribute__((target("avx512vnni,avx512vl"))) static double vpdpbusd_peak(void) {
    __m128i acc[CHAINS];
    __m128i a = _mm_set1_epi8(3);
    __m128i b[CHAINS];
    for (int c = 0; c < CHAINS; c++) {
        acc[c] = _mm_setzero_si128();
        b[c] = _mm_set1_epi8((char)(c + 1));
    }
    double start = seconds();
    for (long i = 0; i < ITERATIONS; i++) {
#pragma GCC unroll 12
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm_dpbusd_epi32(acc[c], a, b[c]);
        __asm__ volatile("" : "+x"(a));
    }
    double elapsed = seconds() - start;
    __m128i sum = acc[0];
    for (int c = 1; c < CHAINS; c++) sum = _mm_add_epi32(sum, acc[c]);
    if (_mm_cvtsi128_si32(sum) == 42) printf("unlikely\n");
    return 32.0 * CHAINS * ITERATIONS / elapsed / 1e9;
}

int main(void) {
    printf("pmaddubsw_peak_gops %.2f\n", pmaddubsw_peak());
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl"))
        printf("vpdpbusd_peak_gops %.2f\n", vpdpbusd_peak());
    return 0;
}
