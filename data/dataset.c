/* Training data: MNIST-format idx files (Fashion-MNIST as Debian ships it)
 * and the random augmentation photos get. */
#include "data.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Opens base + ".gz", else base (gzopen reads plain files too). */
static gzFile open_idx(const char *dir, const char *name, char *path, size_t size) {
    snprintf(path, size, "%s/%s.gz", dir, name);
    gzFile f = gzopen(path, "rb");
    if (f) return f;
    snprintf(path, size, "%s/%s", dir, name);
    return gzopen(path, "rb");
}

/* Reads an idx file of unsigned bytes with `dims` dimensions: the sizes into
 * shape, the data (malloc'd) into *data. */
static base_status read_idx(const char *dir, const char *name, int dims, uint32_t *shape,
                           uint8_t **data, base_error *err) {
    char path[4200];
    *data = NULL;
    gzFile f = open_idx(dir, name, path, sizeof path);
    if (!f)
        return base_error_set(err, BASE_E_IO, "%s/%s(.gz): cannot open: %s (install the Debian "
                             "package dataset-fashion-mnist)", dir, name, strerror(errno));
    uint8_t header[16];
    base_status status = BASE_OK;
    const int header_bytes = 4 + 4 * dims;
    if (gzread(f, header, (unsigned)header_bytes) != header_bytes || header[0] || header[1] ||
        header[2] != 0x08 || header[3] != dims) {
        status = base_error_set(err, BASE_E_FORMAT, "%s: not an idx file of %d-dimensional bytes",
                               path, dims);
        goto done;
    }
    size_t total = 1;
    for (int i = 0; i < dims; i++) {
        shape[i] = base_be32(header + 4 + 4 * i);
        if (shape[i] == 0 || shape[i] > (1u << 24) || total > ((size_t)1 << 34) / shape[i]) {
            status = base_error_set(err, BASE_E_FORMAT, "%s: implausible size %u in dimension %d",
                                   path, shape[i], i);
            goto done;
        }
        total *= shape[i];
    }
    if (!(*data = malloc(total))) {
        status = base_error_set(err, BASE_E_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (size_t done_bytes = 0; done_bytes < total;) {
        const size_t chunk = total - done_bytes < (1u << 30) ? total - done_bytes : (1u << 30);
        const int got = gzread(f, *data + done_bytes, (unsigned)chunk);
        if (got <= 0) {
            status = base_error_set(err, BASE_E_FORMAT, "%s: truncated (%zu of %zu bytes)", path,
                                   done_bytes, total);
            goto done;
        }
        done_bytes += (size_t)got;
    }
done:
    gzclose(f);
    if (status != BASE_OK) {
        free(*data);
        *data = NULL;
    }
    return status;
}

base_status data_mnist_load(const char *dir, int train, data_mnist *out, base_error *err) {
    memset(out, 0, sizeof *out);
    if (!dir) dir = DATA_FASHION_MNIST_DIR;
    const char *split = train ? "train" : "t10k";
    char name[64];
    uint32_t image_shape[3], label_shape[1];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", split);
    base_status status = read_idx(dir, name, 3, image_shape, &out->pixels, err);
    if (status != BASE_OK) return status;
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", split);
    status = read_idx(dir, name, 1, label_shape, &out->labels, err);
    if (status == BASE_OK && label_shape[0] != image_shape[0])
        status = base_error_set(err, BASE_E_FORMAT, "%s/%s: %u labels for %u images", dir, name,
                               label_shape[0], image_shape[0]);
    if (status != BASE_OK) {
        data_mnist_free(out);
        return status;
    }
    out->count = (int)image_shape[0];
    out->height = (int)image_shape[1];
    out->width = (int)image_shape[2];
    return BASE_OK;
}

void data_mnist_free(data_mnist *set) {
    free(set->pixels);
    free(set->labels);
    memset(set, 0, sizeof *set);
}

const char *data_fashion_mnist_label(int index) {
    static const char *const NAMES[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                          "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    return index >= 0 && index < 10 ? NAMES[index] : NULL;
}

/* torchvision RandomResizedCrop.get_params: the crop box (x, y, w, h). */
static void crop_box(int width, int height, double min_scale, data_uniform_fn uniform,
                     void *state, int box[4]) {
    const double area = (double)width * height;
    const double log_lo = log(3.0 / 4.0), log_hi = log(4.0 / 3.0);
    for (int attempt = 0; attempt < 10; attempt++) {
        const double target = area * (min_scale + (1.0 - min_scale) * uniform(state));
        const double ratio = exp(log_lo + (log_hi - log_lo) * uniform(state));
        const int w = (int)lround(sqrt(target * ratio)), h = (int)lround(sqrt(target / ratio));
        if (w > 0 && h > 0 && w <= width && h <= height) {
            box[0] = (int)(uniform(state) * (width - w + 1));
            box[1] = (int)(uniform(state) * (height - h + 1));
            box[2] = w;
            box[3] = h;
            return;
        }
    }
    /* Fallback: the whole image clipped to the ratio range, centred. */
    const double in_ratio = (double)width / height;
    int w = width, h = height;
    if (in_ratio < 3.0 / 4.0) h = (int)lround(w / (3.0 / 4.0));
    else if (in_ratio > 4.0 / 3.0) w = (int)lround(h * (4.0 / 3.0));
    box[0] = (width - w) / 2;
    box[1] = (height - h) / 2;
    box[2] = w;
    box[3] = h;
}

base_status data_random_resized_crop(const data_image *img, int size, double min_scale, int flip,
                                    data_uniform_fn uniform, void *state, data_image *out,
                                    base_error *err) {
    memset(out, 0, sizeof *out);
    int box[4];
    crop_box(img->width, img->height, min_scale, uniform, state, box);
    data_image crop = {box[2], box[3], malloc((size_t)box[2] * box[3] * 3)};
    if (!crop.pixels) return base_error_set(err, BASE_E_NOMEM, "out of memory");
    for (int y = 0; y < box[3]; y++)
        memcpy(crop.pixels + (size_t)y * box[2] * 3,
               img->pixels + ((size_t)(box[1] + y) * img->width + box[0]) * 3, (size_t)box[2] * 3);
    base_status status = data_resize(&crop, size, size, DATA_RESAMPLE_BILINEAR, out, err);
    data_image_free(&crop);
    if (status != BASE_OK) return status;
    if (flip && uniform(state) < 0.5)
        for (int y = 0; y < size; y++) {
            uint8_t *row = out->pixels + (size_t)y * size * 3;
            for (int x = 0; x < size / 2; x++)
                for (int c = 0; c < 3; c++) {
                    const uint8_t t = row[x * 3 + c];
                    row[x * 3 + c] = row[(size - 1 - x) * 3 + c];
                    row[(size - 1 - x) * 3 + c] = t;
                }
        }
    return BASE_OK;
}
