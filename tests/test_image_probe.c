/* data_image_probe_memory: the size and decoding cost of an image from its
 * header, which vit serve admits against its decode budget. It must agree
 * with the decoder (same size; a refusal with the decoder's status and
 * message) and its peak must not be below what decoding really holds:
 * measured here in a child process, whose high-water mark is its own. */
#include <sys/wait.h>

#include "data.h"
#include "test_util.h"

#define FIXTURES VITC_SOURCE_DIR "/tests/fixtures"

TEMP_DIR_SUITE(probe);

static unsigned char *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    rewind(f);
    unsigned char *bytes = malloc(*size ? *size : 1);
    cr_assert(bytes && fread(bytes, 1, *size, f) == *size);
    fclose(f);
    return bytes;
}

/* The probe agrees with a real decode on size; its peak covers the pixels. */
static void expect_agrees(const unsigned char *bytes, size_t size, const char *what) {
    data_image_probe p;
    data_image img;
    base_error err;
    cr_assert_eq(data_image_probe_memory(bytes, size, what, 0, &p, &err), BASE_OK, "%s: %s", what,
                 err.message);
    cr_assert_eq(data_image_load_memory(bytes, size, what, &img, &err), BASE_OK, "%s: %s", what,
                 err.message);
    cr_expect_eq(p.width, img.width, "%s: width", what);
    cr_expect_eq(p.height, img.height, "%s: height", what);
    cr_expect_geq(p.peak_bytes, (size_t)img.width * img.height * 6 + size, "%s: peak %zu", what,
                  p.peak_bytes);
    data_image_free(&img);
}

Test(probe, agrees_with_the_decoder_on_every_format) {
    const char *files[] = {FIXTURES "/real/apple.png", FIXTURES "/real/polars.png",
                           FIXTURES "/webp/lossy.webp", FIXTURES "/webp/lossless.webp",
                           FIXTURES "/webp/lossy_alpha.webp", FIXTURES "/webp/animated.webp"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        size_t size;
        unsigned char *bytes = read_all(files[i], &size);
        expect_agrees(bytes, size, files[i]);
        free(bytes);
    }
    /* JPEG, GIF, BMP, PNM: made here (PIL through the shell would need PIL). */
    static const unsigned char gif[] = "GIF89a\x03\0\x02\0\x80\0\0\0\0\0\xff\xff\xff"
                                       ",\0\0\0\0\x03\0\x02\0\0\x02\x02\x44\x01\0;";
    expect_agrees(gif, sizeof gif - 1, "tiny.gif");
    unsigned char ppm[64 + 5 * 4 * 3];
    const int head = snprintf((char *)ppm, 64, "P6\n5 4\n255\n");
    memset(ppm + head, 0x80, 5 * 4 * 3);
    expect_agrees(ppm, (size_t)head + 5 * 4 * 3, "tiny.ppm");
    unsigned char bmp[54 + 8 * 3] = "BM";
    const uint32_t fields[] = {sizeof bmp, 0, 54, 40, 3, 2, 1 | 24 << 16, 0, 24, 2835, 2835, 0, 0};
    memcpy(bmp + 2, fields, sizeof fields);
    expect_agrees(bmp, sizeof bmp, "tiny.bmp");
}

/* The same status and message as the decoder, for what both refuse at the
 * header. */
static void expect_same_refusal(const void *bytes, size_t size, int64_t cap, const char *what) {
    data_image_probe p;
    data_image img;
    base_error perr, derr;
    const base_status ps = data_image_probe_memory(bytes, size, what, cap, &p, &perr);
    const base_status ds = data_image_load_memory_capped(bytes, size, what, cap, &img, &derr);
    cr_expect_neq(ps, BASE_OK, "%s: probed", what);
    cr_expect_eq(ps, ds, "%s: probe %d, decoder %d", what, (int)ps, (int)ds);
    if (ds == ps) cr_expect_str_eq(perr.message, derr.message, "%s", what);
    if (ds == BASE_OK) data_image_free(&img);
}

Test(probe, refuses_as_the_decoder_does) {
    expect_same_refusal("", 0, 0, "empty");
    expect_same_refusal("just some text, no image", 24, 0, "text");
    expect_same_refusal("II*\0\0\0\0\0", 8, 0, "tiff");
    expect_same_refusal("P3\n1 1\n255\n0 0 0\n", 17, 0, "ascii.ppm");
    size_t size;
    unsigned char *bytes = read_all(FIXTURES "/webp/truncated.webp", &size);
    expect_same_refusal(bytes, 20, 0, "cut.webp");
    free(bytes);
    bytes = read_all(FIXTURES "/real/apple.png", &size); /* 256 x 256 */
    expect_same_refusal(bytes, size, 1000, "apple.png over a 1000-pixel cap");
    free(bytes);
    bytes = read_all(FIXTURES "/webp/animated.webp", &size);
    expect_same_refusal(bytes, size, 100, "animated.webp over a 100-pixel cap");
    free(bytes);
}

/* A JPEG header (SOI, a DHT before the frame as encoders write it, SOF):
 * a progressive frame costs more than a baseline one, four components
 * more than three; a header without a frame is refused. */
Test(probe, jpeg_frame_header_sets_the_cost) {
    unsigned char jpeg[] = {0xFF, 0xD8, 0xFF, 0xC4, 0, 4, 0, 0, /* DHT (cut short, skipped) */
                            0xFF, 0xC0, 0, 17, 8, 0x03, 0xE8, 0x07, 0xD0, 3,
                            1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0, 0xFF, 0xD9};
    data_image_probe base, prog, cmyk;
    base_error err;
    cr_assert_eq(data_image_probe_memory(jpeg, sizeof jpeg, "j", 0, &base, &err), BASE_OK, "%s",
                 err.message);
    cr_expect_eq(base.width, 2000);
    cr_expect_eq(base.height, 1000);
    cr_expect_str_eq(base.format, "JPEG");
    jpeg[9] = 0xC2;
    cr_assert_eq(data_image_probe_memory(jpeg, sizeof jpeg, "j", 0, &prog, &err), BASE_OK);
    jpeg[9] = 0xC0;
    jpeg[17] = 4;
    cr_assert_eq(data_image_probe_memory(jpeg, sizeof jpeg, "j", 0, &cmyk, &err), BASE_OK);
    cr_expect_gt(prog.peak_bytes, base.peak_bytes + (size_t)2000 * 1000 * 5);
    cr_expect_gt(cmyk.peak_bytes, base.peak_bytes);
    jpeg[9] = 0xDA; /* a scan before any frame header */
    cr_expect_eq(data_image_probe_memory(jpeg, sizeof jpeg, "j", 0, &base, &err), BASE_E_FORMAT);
    cr_expect(strstr(err.message, "no frame header"), "%s", err.message);
}

/* Peak resident growth (bytes) of decoding bytes, in a child process. */
static size_t decode_peak(const unsigned char *bytes, size_t size) {
    int fds[2];
    cr_assert(pipe(fds) == 0);
    const pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        char status[4096];
        slurp("/proc/self/status", status, sizeof status);
        const char *rss = strstr(status, "VmRSS:");
        const long before = rss ? atol(rss + 6) : 0;
        data_image img;
        base_error err;
        long after = 0;
        if (data_image_load_memory(bytes, size, "x", &img, &err) == BASE_OK) {
            slurp("/proc/self/status", status, sizeof status);
            const char *hwm = strstr(status, "VmHWM:");
            after = hwm ? atol(hwm + 6) : 0;
        }
        const long grown = after > before ? (after - before) * 1024 : -1;
        if (write(fds[1], &grown, sizeof grown) != (ssize_t)sizeof grown) _exit(1);
        _exit(0);
    }
    close(fds[1]);
    long grown = -1;
    cr_assert(read(fds[0], &grown, sizeof grown) == (ssize_t)sizeof grown);
    close(fds[0]);
    int wstatus;
    waitpid(pid, &wstatus, 0);
    cr_assert(grown > 0, "the child could not decode");
    return (size_t)grown;
}

/* What a decode really holds stays under the probe's peak, for the costly
 * layouts of each decoder (the full table: bench/decode_memory.py). */
Test(probe, peak_covers_a_real_decode) {
#ifdef __SANITIZE_ADDRESS__
    /* Freed blocks wait in ASan's quarantine and every block has a shadow
     * and red zones: the resident size no longer says what a decoder holds. */
    cr_skip_test("built with AddressSanitizer: resident sizes are not the decoder's");
#endif
    const int w = 1500, h = 1200;
    uint8_t *pixels = malloc((size_t)w * h * 4);
    for (size_t i = 0; i < (size_t)w * h * 4; i++) pixels[i] = (uint8_t)(i * 7 + i / 4093);
    const int channels[] = {3, 4};
    for (int c = 0; c < 2; c++) {
        char path[512];
        snprintf(path, sizeof path, "%s/p%d.png", dir, channels[c]);
        base_error err;
        cr_assert_eq(data_write_png(path, w, h, channels[c], pixels, &err), BASE_OK, "%s", err.message);
        size_t size;
        unsigned char *bytes = read_all(path, &size);
        data_image_probe p;
        cr_assert_eq(data_image_probe_memory(bytes, size, path, 0, &p, &err), BASE_OK);
        const size_t real = decode_peak(bytes, size);
        cr_expect_leq(real, p.peak_bytes, "%d-channel PNG: decoding held %zu, probe says %zu",
                      channels[c], real, p.peak_bytes);
        /* These decode in png_plain.c to their RGB image alone (3 bytes a
         * pixel); the probe keeps stb's peak, which a file png_plain hands
         * back to stb takes: hence three times, not two. */
        cr_expect_geq(real * 3, p.peak_bytes, "%d-channel PNG: probe %zu, over 3x the real %zu",
                      channels[c], p.peak_bytes, real);
        free(bytes);
    }
    free(pixels);
    /* An animated WebP whose 1 x 1 frame sits on a 2000 x 2000 canvas. */
    static const unsigned char anim[] =
        "RIFF\x52\0\0\0WEBPVP8X\x0a\0\0\0\x02\0\0\0\xcf\x07\0\xcf\x07\0ANIM\x06\0\0\0\0\0\0\0\0\0"
        "ANMF\x26\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x64\0\0\0VP8L\x0e\0\0\0"
        "\x2f\0\0\0\0\x07\x10\x11\xfd\x0f\x44\x44\xff\x03";
    data_image_probe p;
    base_error err;
    cr_assert_eq(data_image_probe_memory(anim, sizeof anim - 1, "anim", 0, &p, &err), BASE_OK, "%s",
                 err.message);
    cr_assert_eq(p.width, 2000);
    const size_t real = decode_peak(anim, sizeof anim - 1);
    cr_expect_leq(real, p.peak_bytes, "animated WebP: decoding held %zu, probe says %zu", real,
                  p.peak_bytes);
    cr_expect_geq(real * 2, p.peak_bytes, "animated WebP: probe %zu, real %zu", p.peak_bytes, real);
}
