/* Safety limits (base_limits.h): each one refuses with one line naming the
 * file and the limit, can be raised from the command line, and in a batch
 * run turns only the offending file into an error row. Also the in-memory
 * entry points the fuzzers use, which must agree with the file ones. */
#include <sys/stat.h>

#include "test_util.h"
#include "vit.h"

#define FIXTURES VITC_SOURCE_DIR "/tests/fixtures"
#define MODEL FIXTURES "/parity/hf_vit_d48_h3"
#define APPLE FIXTURES "/real/apple.png" /* 256 x 256 */

TEMP_DIR_SUITE(limits);

static void expect_one_line(const char *message, const char *needle1, const char *needle2) {
    cr_expect(strchr(message, '\n') == NULL || strchr(message, '\n')[1] == '\0',
              "not one line: %s", message);
    cr_expect(strstr(message, needle1), "'%s' not in: %s", needle1, message);
    if (needle2) cr_expect(strstr(message, needle2), "'%s' not in: %s", needle2, message);
}

static char *read_file(const char *path, size_t *size) {
    FILE *fp = fopen(path, "rb");
    cr_assert(fp, "cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    *size = (size_t)ftell(fp);
    rewind(fp);
    char *bytes = malloc(*size + 1);
    cr_assert(bytes && fread(bytes, 1, *size, fp) == *size);
    bytes[*size] = '\0';
    fclose(fp);
    return bytes;
}

static void write_file(const char *path, const char *text, size_t size) {
    FILE *fp = fopen(path, "wb");
    cr_assert(fp, "cannot write %s", path);
    cr_assert(fwrite(text, 1, size, fp) == size);
    fclose(fp);
}

/* A copy of the model directory whose config.json gets extra text inserted
 * after its opening brace. */
static void model_with_config_extra(const char *extra) {
    shell("mkdir -p %s/model && cp " MODEL "/model.safetensors %s/model/", dir, dir);
    size_t size;
    char *config = read_file(MODEL "/config.json", &size);
    char *brace = strchr(config, '{');
    cr_assert(brace);
    size_t extra_len = strlen(extra), head = (size_t)(brace + 1 - config);
    char *edited = malloc(size + extra_len + 1);
    memcpy(edited, config, head);
    memcpy(edited + head, extra, extra_len);
    memcpy(edited + head + extra_len, config + head, size - head);
    char path[128];
    snprintf(path, sizeof path, "%s/model/config.json", dir);
    write_file(path, edited, size + extra_len);
    free(edited);
    free(config);
}

/* --------------------------------------------------------------- images */

/* An 8-bit grey PGM of w x h pixels. */
static void write_pgm(const char *path, int w, int h) {
    char header[64];
    int n = snprintf(header, sizeof header, "P5 %d %d 255\n", w, h);
    char *bytes = calloc(1, (size_t)n + (size_t)w * h);
    memcpy(bytes, header, (size_t)n);
    for (int i = 0; i < w * h; i++) bytes[n + i] = (char)(i * 37);
    write_file(path, bytes, (size_t)n + (size_t)w * h);
    free(bytes);
}

Test(limits, pixel_cap_is_checked_before_decoding_and_can_be_set) {
    char path[128];
    snprintf(path, sizeof path, "%s/small.pgm", dir);
    write_pgm(path, 6, 5);
    data_image img;
    base_error err = {0};
    cr_expect_eq(data_image_load_capped(path, 29, &img, &err), BASE_E_LIMIT);
    expect_one_line(err.message, path, "30 pixels exceeds the limit of 29 pixels");
    cr_expect_null(img.pixels);
    cr_assert_eq(data_image_load_capped(path, 30, &img, &err), BASE_OK, "%s", err.message);
    data_image_free(&img);
    /* A PNG header claiming 200000 x 200000 with no pixel data behind it:
     * refused on its size, not on its missing data. */
    size_t size;
    char *png = read_file(APPLE, &size);
    for (int i = 0; i < 2; i++) {
        png[16 + 4 * i] = 0;
        png[17 + 4 * i] = 0x03;
        png[18 + 4 * i] = 0x0d;
        png[19 + 4 * i] = 0x40;
    }
    cr_expect_eq(data_image_load_memory(png, 64, "claims.png", &img, &err), BASE_E_LIMIT);
    expect_one_line(err.message, "claims.png", "exceeds the limit of 100 megapixels");
    free(png);
    /* Found by fuzz_image: sides near 2^32 whose product overflows int64. */
    cr_expect_eq(data_image_load(VITC_SOURCE_DIR "/tests/fuzz/corpus/image/regress-png-dims-overflow.png",
                                 &img, &err), BASE_E_LIMIT);
    expect_one_line(err.message, "4290904064x3082272960", "exceeds the limit");
}

Test(limits, resizing_past_the_pixel_cap_is_refused) {
    /* 2 x 400 pixels, shorter side to 18: 18 x 3600 = 64800 pixels. */
    data_image img = {2, 400, calloc(2 * 400 * 3, 1)};
    data_preprocess p;
    data_preprocess_default(&p, 16);
    p.max_pixels = 60000;
    float *out = malloc(sizeof(float) * 3 * 16 * 16);
    base_error err = {0};
    cr_expect_eq(data_preprocess_apply(&p, &img, out, &err), BASE_E_LIMIT);
    expect_one_line(err.message, "resizing 2x400 to 18x3600", "limit of 60000 pixels");
    p.max_pixels = 64800;
    cr_expect_eq(data_preprocess_apply(&p, &img, out, &err), BASE_OK, "%s", err.message);
    free(out);
    data_image_free(&img);
}

Test(limits, files_that_claim_more_data_than_they_hold_are_refused) {
    char path[128];
    snprintf(path, sizeof path, "%s/short.pgm", dir);
    write_file(path, "P5 100 100 255\n\1\2\3", 18);
    data_image img;
    base_error err = {0};
    cr_expect_eq(data_image_load(path, &img, &err), BASE_E_FORMAT);
    expect_one_line(err.message, path, "truncated");
    size_t size;
    char *png = read_file(APPLE, &size);
    cr_expect_neq(data_image_load_memory(png, size / 2, "half.png", &img, &err), BASE_OK);
    expect_one_line(err.message, "half.png", NULL);
    free(png);
    /* Found by fuzz_image with stb instrumented: Huffman tables with over
     * 256 codes make stb 2.27 write past a table (also cut short, and
     * behind 0xFF fill bytes before the start-of-image marker). */
    const char *const dht[] = {"", "-cut", "-fill"};
    for (int i = 0; i < 3; i++) {
        char name[256];
        snprintf(name, sizeof name, VITC_SOURCE_DIR "/tests/fuzz/corpus/image/regress-jpeg-dht-overflow%s.jpg",
                 dht[i]);
        cr_expect_eq(data_image_load(name, &img, &err), BASE_E_FORMAT, "%s", name);
        expect_one_line(err.message, name, "Huffman table with over 256 codes");
    }
    /* Found by fuzz_image with stb instrumented: a progressive AC scan with
     * an AC table no DHT defined makes stb 2.27 index past its tables with
     * uninitialised memory. Valid baseline and progressive JPEGs still load. */
    const char *const undefined = VITC_SOURCE_DIR "/tests/fuzz/corpus/image/regress-jpeg-undefined-huffman.jpg";
    cr_expect_eq(data_image_load(undefined, &img, &err), BASE_E_FORMAT);
    expect_one_line(err.message, undefined, "table the file never defines");
    const char *const valid[] = {VITC_SOURCE_DIR "/tests/fuzz/corpus/image/baseline.jpg",
                                 VITC_SOURCE_DIR "/tests/fuzz/corpus/image/progressive.jpg",
                                 VITC_SOURCE_DIR "/tests/fuzz/corpus/image/grey.jpg"};
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(data_image_load(valid[i], &img, &err), BASE_OK, "%s", err.message);
        data_image_free(&img);
    }
    /* An empty IDAT chunk first (legal, no data) made stb 2.27 add 0 to a
     * NULL pointer (found by fuzz_image with stb instrumented); the image
     * must still decode, to the same pixels as without the chunk. */
    {
        const char *const png_path = VITC_SOURCE_DIR "/tests/fuzz/corpus/image/rgb.png";
        char *png_bytes = read_file(png_path, &size);
        const unsigned char empty_idat[12] = {0, 0, 0, 0, 'I', 'D', 'A', 'T', 0x35, 0xaf, 0x06, 0x1e};
        size_t at = 8;
        while (memcmp(png_bytes + at + 4, "IDAT", 4) != 0)
            at += 12 + (((size_t)(unsigned char)png_bytes[at] << 24) | ((size_t)(unsigned char)png_bytes[at + 1] << 16) |
                        ((size_t)(unsigned char)png_bytes[at + 2] << 8) | (unsigned char)png_bytes[at + 3]);
        char *with_empty = malloc(size + 12);
        memcpy(with_empty, png_bytes, at);
        memcpy(with_empty + at, empty_idat, 12);
        memcpy(with_empty + at + 12, png_bytes + at, size - at);
        data_image plain, padded;
        cr_assert_eq(data_image_load_memory(png_bytes, size, "plain", &plain, &err), BASE_OK, "%s", err.message);
        cr_assert_eq(data_image_load_memory(with_empty, size + 12, "padded", &padded, &err), BASE_OK, "%s",
                     err.message);
        cr_expect(plain.width == padded.width && plain.height == padded.height &&
                      memcmp(plain.pixels, padded.pixels, (size_t)plain.width * plain.height * 3) == 0,
                  "an empty IDAT changed the pixels");
        data_image_free(&plain);
        data_image_free(&padded);
        free(with_empty);
        free(png_bytes);
    }
    /* stb pads missing GIF and TGA data with zeros: checked by us. */
    const char *const whole[] = {VITC_SOURCE_DIR "/tests/fuzz/corpus/image/anim.gif",
                                 VITC_SOURCE_DIR "/tests/fuzz/corpus/image/rgb.tga"};
    for (int i = 0; i < 2; i++) {
        char *bytes = read_file(whole[i], &size);
        cr_assert_eq(data_image_load_memory(bytes, size, whole[i], &img, &err), BASE_OK, "%s", err.message);
        data_image_free(&img);
        cr_expect_eq(data_image_load_memory(bytes, size / 2, "cut", &img, &err), BASE_E_FORMAT, "%s", whole[i]);
        expect_one_line(err.message, "cut: truncated ", i ? "TGA" : "GIF");
        free(bytes);
    }
}

Test(limits, max_pixels_flag_makes_an_error_row_and_the_rest_carries_on) {
    shell("mkdir -p %s/in && cp " APPLE " %s/in/big.png", dir, dir);
    char path[128], args[512];
    snprintf(path, sizeof path, "%s/in/small.pgm", dir);
    write_pgm(path, 100, 100);
    snprintf(args, sizeof args, "classify -q -k 1 -m " MODEL " --max-pixels 20000 -o %s/out.csv %s/in",
             dir, dir);
    run_result *r = run(args);
    cr_expect_eq(r->status, 2, "status %d: %s", r->status, r->err);
    cr_expect_eq(count_lines(r->err), 1, "%s", r->err);
    expect_one_line(r->err, "big.png", "65536 pixels exceeds the limit of 20000 pixels");
    static char csv[65536];
    snprintf(path, sizeof path, "%s/out.csv", dir);
    slurp(path, csv, sizeof csv);
    cr_expect_eq(count_lines(csv), 3, "%s", csv);
    cr_expect(strstr(csv, "big.png,,,,pixels") == NULL); /* the error is in the last column */
    cr_expect(strstr(csv, "\nsmall.pgm,"), "%s", csv);
    /* Raised above the image: all fine. */
    snprintf(args, sizeof args, "classify -q -k 1 -m " MODEL " --max-pixels 70000 %s/in", dir);
    cr_expect_eq(run(args)->status, 0);
    r = run("classify -m " MODEL " --max-pixels 0 " APPLE);
    cr_expect_eq(r->status, 1);
    expect_one_line(r->err, "--max-pixels", NULL);
}

/* ---------------------------------------------------------- checkpoints */

Test(limits, header_and_tensor_count_caps) {
    weights_file *f;
    base_error err = {0};
    const base_limits small_header = {.max_header_bytes = 4096};
    cr_expect_eq(weights_open_limited(MODEL "/model.safetensors", &small_header, &f, &err), BASE_E_LIMIT);
    expect_one_line(err.message, "model.safetensors", "header length 4240 exceeds the limit of 4096 bytes");
    const base_limits few = {.max_tensors = 10};
    cr_expect_eq(weights_open_limited(MODEL "/model.safetensors", &few, &f, &err), BASE_E_LIMIT);
    expect_one_line(err.message, "model.safetensors", "exceed the limit of 10 tensors");
    const base_limits enough = {.max_header_bytes = 4240, .max_tensors = 45};
    cr_assert_eq(weights_open_limited(MODEL "/model.safetensors", &enough, &f, &err), BASE_OK, "%s",
                 err.message);
    weights_close(f);

    run_result *r = run("info -m " MODEL " --max-tensors 10");
    cr_expect_eq(r->status, 1);
    cr_expect_eq(count_lines(r->err), 1, "%s", r->err);
    expect_one_line(r->err, "model.safetensors", "limit of 10 tensors");
    cr_expect_eq(run("info -m " MODEL " --max-tensors 45 --max-header-mb 1")->status, 0);
}

Test(limits, overflowing_shapes_and_deep_headers_are_refused) {
    static const char *const headers[] = {
        /* 2^32 * 2^32 * 16 elements: the product overflows size_t. */
        "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,16]}}",
        /* Nested far beyond what a header needs. */
        "{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]"
        "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
    };
    const base_status expected[] = {BASE_E_FORMAT, BASE_E_LIMIT};
    for (int i = 0; i < 2; i++) {
        const size_t len = strlen(headers[i]);
        char *file = calloc(1, 8 + len + 16);
        for (int b = 0; b < 8; b++) file[b] = (char)((uint64_t)len >> (8 * b));
        memcpy(file + 8, headers[i], len);
        weights_file *f;
        base_error err = {0};
        cr_expect_eq(weights_open_memory(file, 8 + len + 16, "bad.safetensors", NULL, &f, &err),
                     expected[i], "%s", err.message);
        expect_one_line(err.message, "bad.safetensors", i ? "64 levels" : "overflows");
        free(file);
    }
}

/* ----------------------------------------------------------------- JSON */

Test(limits, config_json_depth_and_size_caps) {
    char extra[512] = "\"deep\": ";
    for (int i = 0; i < 70; i++) strcat(extra, "[");
    for (int i = 0; i < 70; i++) strcat(extra, "]");
    strcat(extra, ",");
    model_with_config_extra(extra);
    char model_dir[128], args[512];
    snprintf(model_dir, sizeof model_dir, "%s/model", dir);
    vit_model *model;
    base_error err = {0};
    cr_expect_eq(vit_model_load(model_dir, NULL, &model, &err), BASE_E_LIMIT);
    expect_one_line(err.message, "config.json", "deeper than the limit of 64 levels");
    const base_limits deeper = {.max_json_depth = 80};
    const vit_load_options options = {.limits = &deeper};
    cr_assert_eq(vit_model_load(model_dir, &options, &model, &err), BASE_OK, "%s", err.message);
    vit_model_free(model);
    snprintf(args, sizeof args, "info -m %s --max-json-depth 80", model_dir);
    cr_expect_eq(run(args)->status, 0);

    /* 20 KB of spaces: over a limit of 8 KiB. */
    char *padding = malloc(20001);
    memset(padding, ' ', 20000);
    padding[20000] = '\0';
    model_with_config_extra(padding);
    free(padding);
    snprintf(args, sizeof args, "classify -m %s --max-json-kb 8 " APPLE, model_dir);
    run_result *r = run(args);
    cr_expect_eq(r->status, 1);
    cr_expect_eq(count_lines(r->err), 1, "%s", r->err);
    expect_one_line(r->err, "config.json", "limit of 8192 bytes");
    snprintf(args, sizeof args, "classify -m %s --max-json-kb 64 " APPLE, model_dir);
    cr_expect_eq(run(args)->status, 0);
}

Test(limits, help_lists_the_limit_flags) {
    const char *commands[] = {"classify -h", "eval -h", "info -h"};
    for (int i = 0; i < 3; i++) {
        run_result *r = run(commands[i]);
        cr_expect_eq(r->status, 0);
        const char *flags[] = {"--max-pixels", "--max-header-mb", "--max-tensors", "--max-json-kb",
                               "--max-json-depth"};
        /* info reads no image: no pixel limit to offer. */
        for (int k = i == 2; k < 5; k++)
            cr_expect(strstr(r->out, flags[k]), "%s lacks %s", commands[i], flags[k]);
    }
}

/* --------------------------------------------------------------- labels */

Test(limits, labels_csv_rows_header_quotes_and_errors) {
    const char text[] = "file,class_index\r\n\"a,\"\"b\"\".jpg\",3,extra\n\nc.png,0";
    data_labelled_files rows = {0};
    base_error err = {0};
    cr_assert_eq(data_labels_csv_parse(text, sizeof text - 1, "l.csv", 5, &rows, &err), BASE_OK, "%s",
                 err.message);
    cr_assert_eq(rows.count, 2);
    cr_expect_str_eq(rows.files[0], "a,\"b\".jpg");
    cr_expect_eq(rows.classes[0], 3);
    cr_expect_str_eq(rows.files[1], "c.png");
    data_labelled_files_free(&rows);
    static const char *const bad[] = {"a.jpg,5\n", "a.jpg,1\nb.jpg,x\n", "file,class\n", "file,class\na.jpg,\"1\n2\"\n"};
    static const char *const needle[] = {"l.csv:1: class index 5 is outside 0..4", "l.csv:2: second column 'x'",
                                         "l.csv: no rows", "second column '1?2'"};
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(data_labels_csv_parse(bad[i], strlen(bad[i]), "l.csv", 5, &rows, &err), BASE_E_FORMAT,
                     "%s", bad[i]);
        expect_one_line(err.message, needle[i], NULL);
        data_labelled_files_free(&rows);
    }
    char **labels;
    int count;
    cr_assert_eq(data_labels_parse("a\r\nb\n\nc", "l.txt", 10, &labels, &count, &err), BASE_OK);
    cr_expect_eq(count, 4);
    cr_expect_str_eq(labels[0], "a");
    cr_expect_str_eq(labels[2], "");
    cr_expect_str_eq(labels[3], "c");
    data_labels_free(labels, count);
    cr_expect_eq(data_labels_parse("a\nb\nc\n", "l.txt", 2, &labels, &count, &err), BASE_E_LIMIT);
    expect_one_line(err.message, "l.txt", "limit of 2 labels");
}

/* ------------------------------------------------------- memory loaders */

Test(limits, memory_loader_agrees_with_the_file_loader) {
    size_t size;
    char *weights = read_file(MODEL "/model.safetensors", &size);
    char *config = read_file(MODEL "/config.json", &size);
    size_t weights_size;
    free(read_file(MODEL "/model.safetensors", &weights_size));
    vit_model *from_file, *from_memory;
    base_error err = {0};
    cr_assert_eq(vit_model_load(MODEL, NULL, &from_file, &err), BASE_OK, "%s", err.message);
    cr_assert_eq(vit_model_load_memory(weights, weights_size, "mem", config, NULL, NULL, &from_memory,
                                       &err), BASE_OK, "%s", err.message);
    cr_expect_eq(memcmp(vit_model_config(from_file), vit_model_config(from_memory), sizeof(vit_config)), 0);
    cr_expect_eq(vit_model_num_labels(from_file), vit_model_num_labels(from_memory));
    cr_expect_str_eq(vit_model_label(from_memory, 4), "class four");
    const data_preprocess *a = vit_model_preprocess(from_file), *b = vit_model_preprocess(from_memory);
    cr_expect_eq(a->crop_width, b->crop_width);
    cr_expect_eq(a->resize_mode, b->resize_mode);
    cr_expect_eq(a->max_pixels, BASE_DEFAULT_MAX_PIXELS);
    vit_model_free(from_file);
    vit_model_free(from_memory);
    cr_expect_eq(vit_model_load_memory(weights, 7, "short", NULL, NULL, NULL, &from_memory, &err),
                 BASE_E_FORMAT);
    expect_one_line(err.message, "short", "too short");
    free(weights);
    free(config);
}
