/* Classifies MNIST digits with the model that `vitc build` compiled into
 * mnist_vit.o and mnist_vit.h.
 *
 * usage: classify IMAGES.u8 [LABELS.txt]
 *
 * IMAGES.u8 contains N 28x28 grayscale images as raw bytes, row-major, one image
 * after the other. LABELS.txt, if given, contains N labels (0 to 9) separated by
 * white space. The program prints one line per image and, with labels, the
 * accuracy. It exits with 0 on success, 1 on an error and 2 on wrong usage.
 * examples/c/README.md shows how to build it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mnist_vit.h"

#define IMAGE_BYTES (28 * 28)
#define CLASS_COUNT 10
#define ARENA_ALIGNMENT 64

_Static_assert(MNIST_VIT_NUM_INPUTS == 1 && MNIST_VIT_NUM_OUTPUTS == 1,
               "the model must have one input and one output");
_Static_assert(MNIST_VIT_INPUT0_ELEMENTS == IMAGE_BYTES,
               "the model input must be one 28x28 image");
_Static_assert(MNIST_VIT_OUTPUT0_ELEMENTS == CLASS_COUNT,
               "the model output must be 10 logits");

/* Normalization of the training pipeline: pixels scaled to [0, 1], then
   mean 0.1307 and standard deviation 0.3081. */
#define PIXEL_MEAN 0.1307f
#define PIXEL_STD 0.3081f

/* Reads the whole file at `path` into a new buffer; returns NULL after
   printing an error. */
static unsigned char *read_file(const char *path, size_t *size) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        fprintf(stderr, "error: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t capacity = 1 << 16;
    size_t length = 0;
    unsigned char *data = malloc(capacity);
    while (data != NULL) {
        length += fread(data + length, 1, capacity - length, file);
        if (length < capacity) {
            break;
        }
        capacity *= 2;
        unsigned char *grown = realloc(data, capacity);
        if (grown == NULL) {
            free(data);
        }
        data = grown;
    }
    int failed = data == NULL || ferror(file);
    fclose(file);
    if (failed) {
        fprintf(stderr, "error: cannot read %s: %s\n", path,
                data == NULL ? "out of memory" : "read error");
        free(data);
        return NULL;
    }
    *size = length;
    return data;
}

/* Reads `count` labels from `path` into `labels`; returns 0 on success or -1
   after printing an error. */
static int read_labels(const char *path, size_t count, int *labels) {
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        fprintf(stderr, "error: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t index = 0;
    int scanned = 0;
    int label = 0;
    while (index < count && (scanned = fscanf(file, "%d", &label)) == 1 && label >= 0 && label < CLASS_COUNT) {
        labels[index++] = label;
    }
    int extra = index == count && fscanf(file, "%d", &label) == 1;
    fclose(file);

    if (index == count && !extra) {
        return 0;
    }
    if (extra) {
        fprintf(stderr, "error: %s has more than %zu labels; expected one per image\n", path, count);
    } else if (scanned == 1) {
        fprintf(stderr, "error: %s: label %zu is %d; expected 0 to 9\n", path, index, label);
    } else if (scanned == 0) {
        fprintf(stderr, "error: %s: label %zu is not an integer\n", path, index);
    } else {
        fprintf(stderr, "error: %s has %zu labels; expected one per image, %zu in all\n", path, index, count);
    }
    return -1;
}

static int argmax(const float *values, int count) {
    int best = 0;
    for (int i = 1; i < count; i++) {
        if (values[i] > values[best]) {
            best = i;
        }
    }
    return best;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s IMAGES.u8 [LABELS.txt]\n", argv[0]);
        return 2;
    }
    if (mnist_vit_abi_version() != VITC_ABI_VERSION) {
        fprintf(stderr, "error: mnist_vit.o was built for ABI version %u, but vitc_runtime.h is version %d; rebuild it\n",
                mnist_vit_abi_version(), VITC_ABI_VERSION);
        return 1;
    }

    /* Step 1: read the images and the labels. */
    size_t size = 0;
    unsigned char *pixels = read_file(argv[1], &size);
    if (pixels == NULL) {
        return 1;
    }
    if (size == 0 || size % IMAGE_BYTES != 0) {
        fprintf(stderr, "error: %s has %zu bytes; expected a positive multiple of %d (28x28 u8 images)\n",
                argv[1], size, IMAGE_BYTES);
        free(pixels);
        return 1;
    }
    size_t count = size / IMAGE_BYTES;
    int *labels = NULL;
    if (argc == 3) {
        labels = malloc(count * sizeof *labels);
        if (labels == NULL || read_labels(argv[2], count, labels) != 0) {
            free(labels);
            free(pixels);
            return 1;
        }
    }

    /* Step 2: the arena and the thread pool. aligned_alloc needs a size that
       is a multiple of the alignment, and 0 bytes would allocate nothing. */
    size_t arena_bytes = (size_t)mnist_vit_arena_bytes();
    size_t arena_size = (arena_bytes / ARENA_ALIGNMENT + 1) * ARENA_ALIGNMENT;
    void *arena = aligned_alloc(ARENA_ALIGNMENT, arena_size);
    vitc_thread_pool *pool = vitc_runtime_pool_create(0);
    int status = 0;
    if (arena == NULL) {
        fprintf(stderr, "error: cannot allocate the %zu-byte arena\n", arena_size);
        status = 1;
    } else if (pool == NULL) {
        fprintf(stderr, "error: cannot create the thread pool\n");
        status = 1;
    }

    /* Step 3: normalize and classify each image. */
    size_t correct = 0;
    for (size_t image = 0; status == 0 && image < count; image++) {
        float input[IMAGE_BYTES];
        float logits[CLASS_COUNT];
        const unsigned char *source = pixels + image * IMAGE_BYTES;
        for (int i = 0; i < IMAGE_BYTES; i++) {
            input[i] = ((float)source[i] / 255.0f - PIXEL_MEAN) / PIXEL_STD;
        }
        const float *inputs[1] = {input};
        float *outputs[1] = {logits};
        int32_t result = mnist_vit_run(inputs, outputs, arena, pool);
        if (result != 0) {
            fprintf(stderr, "error: mnist_vit_run returned %d on image %zu\n", (int)result, image);
            status = 1;
            break;
        }
        int predicted = argmax(logits, CLASS_COUNT);
        if (labels != NULL) {
            correct += predicted == labels[image];
            printf("image %zu: predicted %d, label %d\n", image, predicted, labels[image]);
        } else {
            printf("image %zu: predicted %d\n", image, predicted);
        }
    }
    if (status == 0 && labels != NULL) {
        printf("accuracy: %zu/%zu (%.2f%%)\n", correct, count, 100.0 * (double)correct / (double)count);
    }

    vitc_runtime_pool_destroy(pool);
    free(arena);
    free(labels);
    free(pixels);
    return status;
}
