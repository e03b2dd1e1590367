/* WebP through libwebp: pixels as PIL decodes them (tests/gen_webp.py wrote
 * the files with PIL and stored PIL's convert('RGB') bytes beside each),
 * alpha dropped, an animation's first frame, the pixel cap before decoding,
 * one clean error for a cut-off or damaged file, and .webp in directory
 * walks. */
#include "data.h"
#include "test_util.h"

#define WEBP_DIR VITC_SOURCE_DIR "/tests/fixtures/webp"
#define MODEL VITC_SOURCE_DIR "/tests/fixtures/parity/hf_vit_d48_h3"

/* Decodes NAME.webp and compares it with PIL's NAME.rgb; returns the largest
 * difference of any sample. */
static int max_difference_from_pil(const char *name) {
    char path[512], rgb_path[512];
    snprintf(path, sizeof path, WEBP_DIR "/%s.webp", name);
    snprintf(rgb_path, sizeof rgb_path, WEBP_DIR "/%s.rgb", name);
    data_image img;
    base_error err;
    cr_assert_eq(data_image_load(path, &img, &err), BASE_OK, "%s", err.message);
    cr_assert_eq(img.width, 40, "%s", name);
    cr_assert_eq(img.height, 30, "%s", name);
    static unsigned char pil[40 * 30 * 3 + 1];
    FILE *f = fopen(rgb_path, "rb");
    cr_assert(f, "%s", rgb_path);
    const size_t n = fread(pil, 1, sizeof pil, f);
    fclose(f);
    cr_assert_eq(n, (size_t)40 * 30 * 3, "%s: PIL's pixels", rgb_path);
    int worst = 0;
    for (size_t i = 0; i < n; i++) {
        const int d = abs((int)img.pixels[i] - (int)pil[i]);
        if (d > worst) worst = d;
    }
    data_image_free(&img);
    return worst;
}

/* libwebp decodes for both, so even lossy files match to the bit. */
Test(webp, lossless_and_lossy_match_pil_exactly) {
    cr_expect_eq(max_difference_from_pil("lossless"), 0);
    cr_expect_eq(max_difference_from_pil("lossy"), 0);
}

/* Alpha is dropped, not blended: lossless_alpha keeps the colours under a
 * zero alpha (exact=True), which blending on black would have darkened. */
Test(webp, alpha_is_dropped_as_pil_convert_rgb_does) {
    cr_expect_eq(max_difference_from_pil("lossy_alpha"), 0);
    cr_expect_eq(max_difference_from_pil("lossless_alpha"), 0);
    /* and those colours are the image's own, same as the file without alpha */
    data_image a, b;
    base_error err;
    cr_assert_eq(data_image_load(WEBP_DIR "/lossless_alpha.webp", &a, &err), BASE_OK, "%s", err.message);
    cr_assert_eq(data_image_load(WEBP_DIR "/lossless.webp", &b, &err), BASE_OK, "%s", err.message);
    cr_expect(memcmp(a.pixels, b.pixels, 40 * 30 * 3) == 0);
    data_image_free(&a);
    data_image_free(&b);
}

Test(webp, animated_gives_its_first_frame) {
    cr_expect_eq(max_difference_from_pil("animated"), 0);
}

Test(webp, the_pixel_cap_comes_before_decoding) {
    data_image img;
    base_error err;
    const base_status st = data_image_load_capped(WEBP_DIR "/lossy.webp", 1000, &img, &err);
    cr_expect_eq(st, BASE_E_LIMIT, "%s", err.message);
    cr_expect(strstr(err.message, "lossy.webp") && strstr(err.message, "40x30"), "%s", err.message);
    cr_expect_null(img.pixels);
    cr_expect_eq(data_image_load_capped(WEBP_DIR "/lossy.webp", 1200, &img, &err), BASE_OK);
    data_image_free(&img);
}

Test(webp, truncated_and_damaged_files_are_one_clean_error) {
    data_image img;
    base_error err;
    cr_expect_eq(data_image_load(WEBP_DIR "/truncated.webp", &img, &err), BASE_E_FORMAT);
    cr_expect(strstr(err.message, "truncated.webp") && strstr(err.message, "truncated WebP"), "%s",
              err.message);
    cr_expect(!strchr(err.message, '\n'));
    cr_expect_null(img.pixels);
    /* Damage in every part of the file: an error or an image, never a crash
     * (the sanitizer build checks the rest). */
    static unsigned char bytes[8192];
    FILE *f = fopen(WEBP_DIR "/lossy.webp", "rb");
    cr_assert(f);
    const size_t n = fread(bytes, 1, sizeof bytes, f);
    fclose(f);
    for (size_t i = 12; i < n; i++) {
        bytes[i] ^= 0x5a;
        if (data_image_load_memory(bytes, n, "damaged.webp", &img, &err) == BASE_OK) data_image_free(&img);
        else cr_expect(strstr(err.message, "damaged.webp"), "%s", err.message);
        bytes[i] ^= 0x5a;
    }
    /* Only the header: the size is known, the pixels are not there. */
    cr_expect_neq(data_image_load_memory(bytes, 30, "head.webp", &img, &err), BASE_OK);
}

/* The magic decides, not the name. */
Test(webp, recognised_by_content_not_extension) {
    static unsigned char bytes[8192];
    FILE *f = fopen(WEBP_DIR "/lossless.webp", "rb");
    cr_assert(f);
    const size_t n = fread(bytes, 1, sizeof bytes, f);
    fclose(f);
    data_image img;
    base_error err;
    cr_assert_eq(data_image_load_memory(bytes, n, "photo.png", &img, &err), BASE_OK, "%s", err.message);
    cr_expect_eq(img.width, 40);
    data_image_free(&img);
}

Test(webp, walks_pick_up_webp_files) {
    data_file_list files = {0};
    base_error err;
    cr_assert_eq(data_walk(WEBP_DIR, NULL, &files, &err), BASE_OK, "%s", err.message);
    cr_expect_eq(files.count, 6); /* the five images and truncated.webp; not the .rgb files */
    for (size_t i = 0; i < files.count; i++)
        cr_expect(strstr(files.paths[i], ".webp"), "%s", files.paths[i]);
    data_file_list_free(&files);
    cr_expect(data_has_image_extension("a/B.WEBP", NULL));
}

/* And the program reads them: one bad file is one failed row. */
Test(webp, classify_reads_a_directory_of_webp) {
    run_result *r = run("classify -q --format csv -k 1 -m " MODEL " " WEBP_DIR);
    cr_expect_eq(r->status, 2, "stderr: %s", r->err);
    cr_expect(strstr(r->out, "\nlossy.webp,"), "stdout: %s", r->out);
    cr_expect(strstr(r->out, "\nanimated.webp,"), "stdout: %s", r->out);
    cr_expect(strstr(r->err, "truncated.webp") && count_lines(r->err) == 1, "stderr: %s", r->err);
}
