/* fuzz_image — decoding (every format stb_image reads, our PNM decoder,
 * the size and truncation checks) and preprocessing of what decodes: the
 * path every image of a batch run takes. Input: one image file. */
#include <stdint.h>
#include <stdlib.h>

#include "data.h"

/* 1 megapixel: big enough for every decoder path, small enough to be fast. */
#define FUZZ_MAX_PIXELS ((int64_t)1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    data_image img;
    base_error err;
    if (data_image_load_memory_capped(data, size, "fuzz.img", FUZZ_MAX_PIXELS, &img, &err) != BASE_OK)
        return 0;
    if (!img.pixels || img.width <= 0 || img.height <= 0 ||
        (int64_t)img.width * img.height > FUZZ_MAX_PIXELS)
        abort();
    /* The DeiT default (shorter side, bicubic, centre crop) and an exact
     * nearest resize without a crop (Hugging Face ViT style). */
    data_preprocess recipes[2];
    data_preprocess_default(&recipes[0], 16);
    recipes[0].max_pixels = FUZZ_MAX_PIXELS; /* also bounds the resized image */
    recipes[1] = recipes[0];
    recipes[1].resize_mode = DATA_RESIZE_EXACT;
    recipes[1].resize_width = 12;
    recipes[1].resize_height = 20;
    recipes[1].resample = DATA_RESAMPLE_NEAREST;
    recipes[1].do_center_crop = 0;
    for (int r = 0; r < 2; r++) {
        const int h = data_preprocess_out_height(&recipes[r]), w = data_preprocess_out_width(&recipes[r]);
        float *out = malloc(sizeof(float) * 3 * (size_t)h * (size_t)w);
        if (out) (void)data_preprocess_apply(&recipes[r], &img, out, &err);
        free(out);
    }
    data_image_free(&img);
    return 0;
}
