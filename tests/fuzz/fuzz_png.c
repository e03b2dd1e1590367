/* fuzz_png — data/png_plain.c against stb_image: whenever png_plain decodes
 * a file, stb must decode it too, to the same pixels (png_plain.h: it may
 * leave any file to stb, never succeed where stb fails or differ from it).
 * Input: one PNG file. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image.h>

#include "base_io.h"
#include "png_plain.h"

#define FUZZ_MAX_PIXELS ((int64_t)1 << 20)

/* An empty IDAT before the data: stb 2.27 does pointer arithmetic on NULL
 * there (image.c strips them before stb sees a file), so such files are
 * not handed to stb here. */
static int has_empty_idat(const uint8_t *b, size_t n) {
    for (size_t i = 8; i + 12 <= n && base_be32(b + i) <= n - i - 12; i += 12 + base_be32(b + i))
        if (base_be32(b + i) == 0 && memcmp(b + i + 4, "IDAT", 4) == 0) return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    data_image img;
    if (size > INT32_MAX || !data_png_plain_decode(data, size, FUZZ_MAX_PIXELS, &img)) return 0;
    if (has_empty_idat(data, size)) {
        data_image_free(&img);
        return 0;
    }
    int w, h, c;
    uint8_t *ref = stbi_load_from_memory(data, (int)size, &w, &h, &c, 3);
    if (!ref || w != img.width || h != img.height ||
        memcmp(ref, img.pixels, (size_t)w * (size_t)h * 3) != 0)
        abort();
    stbi_image_free(ref);
    data_image_free(&img);
    return 0;
}
