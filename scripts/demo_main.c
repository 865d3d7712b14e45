/* Demo driver for scripts/demo: runs the generated vit_s model on one
   input read from a .npy file (f32, shape [1,3,224,224]) with all cores,
   writes the raw f32 output, and prints the run time. */
#define _POSIX_C_SOURCE 200112L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vit_s.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* Reads the f32 data of a little-endian .npy file of exactly `count` elements. */
static int read_npy_f32(const char *path, float *data, size_t count) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return -1; }
    unsigned char magic[10];
    if (fread(magic, 1, 10, f) != 10 || memcmp(magic, "\x93NUMPY", 6) != 0) {
        fprintf(stderr, "%s: not a .npy file\n", path); fclose(f); return -1;
    }
    size_t header = magic[8] | (magic[9] << 8);
    if (magic[6] >= 2) { fprintf(stderr, "%s: .npy version 2 is not supported here\n", path); fclose(f); return -1; }
    char *text = malloc(header + 1);
    if (fread(text, 1, header, f) != header) { fclose(f); free(text); return -1; }
    text[header] = 0;
    int ok = strstr(text, "'<f4'") != NULL && strstr(text, "'fortran_order': False") != NULL;
    free(text);
    if (!ok) { fprintf(stderr, "%s: expected little-endian f32 in C order\n", path); fclose(f); return -1; }
    size_t got = fread(data, sizeof(float), count, f);
    fclose(f);
    if (got != count) { fprintf(stderr, "%s: expected %zu values, read %zu\n", path, count, got); return -1; }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s INPUT.npy OUTPUT.f32\n", argv[0]); return 2; }
    if (vit_s_abi_version() != VITC_ABI_VERSION) { fprintf(stderr, "ABI version mismatch\n"); return 1; }
    float *input = malloc(VIT_S_INPUT0_ELEMENTS * sizeof(float));
    float *output = malloc(VIT_S_OUTPUT0_ELEMENTS * sizeof(float));
    void *arena = aligned_alloc(64, (vit_s_arena_bytes() + 63) / 64 * 64);
    if (!input || !output || !arena) { fprintf(stderr, "out of memory\n"); return 1; }
    if (read_npy_f32(argv[1], input, VIT_S_INPUT0_ELEMENTS) != 0) return 1;

    vitc_thread_pool *pool = vitc_runtime_pool_create(0);
    const float *inputs[] = {input};
    float *outputs[] = {output};
    double start = now_ms();
    int32_t status = vit_s_run(inputs, outputs, arena, pool);
    double first = now_ms() - start;
    start = now_ms();
    for (int i = 0; i < 5; i++) status |= vit_s_run(inputs, outputs, arena, pool);
    double steady = (now_ms() - start) / 5;
    vitc_runtime_pool_destroy(pool);
    if (status != 0) { fprintf(stderr, "vit_s_run returned %d\n", status); return 1; }

    FILE *f = fopen(argv[2], "wb");
    if (!f || fwrite(output, sizeof(float), VIT_S_OUTPUT0_ELEMENTS, f) != VIT_S_OUTPUT0_ELEMENTS) { perror(argv[2]); return 1; }
    fclose(f);
    printf("vit_s_run: first call %.1f ms, then %.1f ms per call (mean of 5), output written to %s\n", first, steady, argv[2]);
    free(input); free(output); free(arena);
    return 0;
}
