/* dataset.h — training data: Fashion-MNIST and augmentation.
 *
 * Fashion-MNIST is read from the idx files the Debian package
 * dataset-fashion-mnist installs (gzip or plain), headers and sizes
 * checked. Augmentation is torchvision's RandomResizedCrop and flip, drawing
 * its numbers from the caller's seeded source so a run is reproducible.
 *
 *     data_mnist train;
 *     data_mnist_load(NULL, 1, &train, &err);  // 60000 x 28 x 28 and labels
 */
#ifndef DATA_DATASET_H
#define DATA_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "base_error.h"

/* Where the Debian package dataset-fashion-mnist puts the idx files. */
#define DATA_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* An MNIST-format split held in memory: count grey images of height x
 * width bytes (rows top to bottom) and a class byte each. */
typedef struct data_mnist {
    int count, height, width;
    uint8_t *pixels; /* count * height * width */
    uint8_t *labels; /* count */
} data_mnist;

/* Reads dir/{train,t10k}-images-idx3-ubyte and -labels-idx1-ubyte (each
 * gzip-compressed with a .gz suffix, or plain) for the training (train 1)
 * or test split. dir NULL: DATA_FASHION_MNIST_DIR. Headers, sizes and
 * labels (< 256 classes, as stored) are checked. */
base_status data_mnist_load(const char *dir, int train, data_mnist *out, base_error *err);
void data_mnist_free(data_mnist *set);

/* The ten Fashion-MNIST class names ("T-shirt/top" .. "Ankle boot"). */
const char *data_fashion_mnist_label(int index);

/* The caller's source of uniform numbers in [0, 1) (state is theirs), so
 * augmentation is seeded and reproducible without hidden state. */
typedef double (*data_uniform_fn)(void *state);

/* torchvision's RandomResizedCrop (area fraction in [min_scale, 1], aspect
 * ratio in [3/4, 4/3] log-uniform, ten tries then a centre crop) resized
 * to size x size bilinearly, then with flip a horizontal mirror half the
 * time. out is allocated. */
base_status data_random_resized_crop(const data_image *img, int size, double min_scale, int flip,
                                    data_uniform_fn uniform, void *state, data_image *out,
                                    base_error *err);

#endif
