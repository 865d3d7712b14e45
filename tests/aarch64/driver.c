/* Runs a model compiled by vitc on raw f32 tensors; tests/embedding.rs
 * cross-compiles it for AArch64 and runs it under qemu.
 *
 * usage: driver INPUTS.f32 OUTPUTS.f32
 *
 * INPUTS.f32 contains N input tensors back to back, as native-endian f32 values.
 * The driver runs the model once per tensor, serially (pool NULL, so it needs
 * no runtime library), and writes the N output tensors to OUTPUTS.f32.
 *
 * Compile with -DMODEL=name -DMODEL_UPPER=NAME -DMODEL_HEADER='"name.h"' for a
 * model with one input and one output.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include MODEL_HEADER

#define PASTE_EXPANDED(a, b) a##b
#define PASTE(a, b) PASTE_EXPANDED(a, b)
#define MODEL_RUN PASTE(MODEL, _run)
#define MODEL_ARENA_BYTES PASTE(MODEL, _arena_bytes)
#define INPUT_ELEMENTS PASTE(MODEL_UPPER, _INPUT0_ELEMENTS)
#define OUTPUT_ELEMENTS PASTE(MODEL_UPPER, _OUTPUT0_ELEMENTS)

_Static_assert(PASTE(MODEL_UPPER, _NUM_INPUTS) == 1 && PASTE(MODEL_UPPER, _NUM_OUTPUTS) == 1,
               "the driver supports models with one input and one output");

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s INPUTS.f32 OUTPUTS.f32\n", argv[0]);
        return 2;
    }

    /* Step 1: read all inputs. */
    FILE *file = fopen(argv[1], "rb");
    if (file == NULL) {
        fprintf(stderr, "error: cannot open %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    fseek(file, 0, SEEK_END);
    long bytes = ftell(file);
    fseek(file, 0, SEEK_SET);
    size_t tensor_bytes = (size_t)INPUT_ELEMENTS * sizeof(float);
    if (bytes <= 0 || (size_t)bytes % tensor_bytes != 0) {
        fprintf(stderr, "error: %s has %ld bytes; expected a positive multiple of %zu\n", argv[1], bytes, tensor_bytes);
        fclose(file);
        return 1;
    }
    size_t count = (size_t)bytes / tensor_bytes;
    float *inputs = malloc((size_t)bytes);
    float *outputs = malloc(count * (size_t)OUTPUT_ELEMENTS * sizeof(float));
    size_t arena_size = ((size_t)MODEL_ARENA_BYTES() / 64 + 1) * 64;
    void *arena = aligned_alloc(64, arena_size);
    if (inputs == NULL || outputs == NULL || arena == NULL) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    if (fread(inputs, 1, (size_t)bytes, file) != (size_t)bytes) {
        fprintf(stderr, "error: cannot read %s\n", argv[1]);
        return 1;
    }
    fclose(file);

    /* Step 2: run the model on each input. */
    for (size_t i = 0; i < count; i++) {
        const float *input[1] = {inputs + i * INPUT_ELEMENTS};
        float *output[1] = {outputs + i * OUTPUT_ELEMENTS};
        int32_t status = MODEL_RUN(input, output, arena, NULL);
        if (status != 0) {
            fprintf(stderr, "error: the model returned %d on input %zu\n", (int)status, i);
            return 1;
        }
    }

    /* Step 3: write all outputs. */
    file = fopen(argv[2], "wb");
    size_t values = count * (size_t)OUTPUT_ELEMENTS;
    if (file == NULL || fwrite(outputs, sizeof(float), values, file) != values || fclose(file) != 0) {
        fprintf(stderr, "error: cannot write %s: %s\n", argv[2], strerror(errno));
        return 1;
    }
    free(arena);
    free(outputs);
    free(inputs);
    return 0;
}
