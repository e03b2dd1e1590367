/* data.h — images in, model-ready tensors out: the data/ module's topics.
 *
 * Follow one image from file to the model's input:
 *   files.h       which files (walks, labels, CSV) and the batch loader
 *   image.h       decoding a file into 8-bit RGB (stb_image, checked first)
 *   preprocess.h  resize, crop, normalise exactly as timm / Hugging Face do
 * and, beside that path:
 *   dataset.h     training data (Fashion-MNIST) and augmentation
 *   picture.h     .npy arrays, PNG pictures, heatmaps and overlays for people
 * Everything is built on base/ (errors, limits, capped reads, atomic writes).
 */
#ifndef DATA_H
#define DATA_H

#include "dataset.h"
#include "files.h"
#include "image.h"
#include "picture.h"
#include "preprocess.h"

#endif
