/* Tests for the safetensors reader and writer (weights/safetensors.c).
 *
 * PyTorch-made fixtures (tests/gen_safetensors.py) pin the F16/BF16 -> F32
 * conversion to what `.float()` gives; hostile files are built here at run
 * time in a fresh temporary directory for each test. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "weights.h"

#ifndef VITC_SOURCE_DIR
#error "VITC_SOURCE_DIR must be defined (the repository root)"
#endif
#define FIXTURE_DIR VITC_SOURCE_DIR "/tests/fixtures/safetensors/"

static char tmp_dir[256];

static void make_tmp_dir(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/vitc_safetensors_XXXXXX");
    cr_assert_not_null(mkdtemp(tmp_dir), "mkdtemp failed");
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char child[512];
        snprintf(child, sizeof child, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(child, &st) == 0 && S_ISDIR(st.st_mode)) {
            chmod(child, 0700);
            remove_tree(child);
        } else {
            unlink(child);
        }
    }
    closedir(d);
    rmdir(dir);
}

static void remove_tmp_dir(void) {
    remove_tree(tmp_dir);
}

TestSuite(safetensors, .init = make_tmp_dir, .fini = remove_tmp_dir);

/* ----------------------------------------------------------------- helpers */

static void tmp_path(char *out, size_t size, const char *name) {
    snprintf(out, size, "%s/%s", tmp_dir, name);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    cr_assert_not_null(fp, "cannot create %s", path);
    if (n > 0) cr_assert_eq(fwrite(data, 1, n, fp), n);
    cr_assert_eq(fclose(fp), 0);
}

/* A file with the given header length field, JSON text and data bytes. */
static void write_safetensors_raw(const char *path, uint64_t header_len, const char *json,
                                  size_t json_len, const void *data, size_t data_len) {
    size_t total = 8 + json_len + data_len;
    unsigned char *buf = calloc(1, total);
    cr_assert_not_null(buf);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(header_len >> (8 * i));
    memcpy(buf + 8, json, json_len);
    if (data_len > 0) {
        if (data) memcpy(buf + 8 + json_len, data, data_len);
        else memset(buf + 8 + json_len, 0x5a, data_len);
    }
    write_bytes(path, buf, total);
    free(buf);
}

static void write_json_file(const char *path, const char *json, size_t data_len) {
    write_safetensors_raw(path, strlen(json), json, strlen(json), NULL, data_len);
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static size_t count_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

/* Opening must fail with an error naming the file on one line, and leave
 * *out NULL. Returns the status for further checks. */
static base_status expect_rejected(const char *path, const char *label) {
    weights_file *f = (weights_file *)&f; /* non-NULL, so NULL on return means it was reset */
    base_error err = {0};
    base_status s = weights_open(path, &f, &err);
    cr_expect_neq(s, BASE_OK, "%s: accepted a hostile file", label);
    cr_expect_null(f, "%s: *out not NULL after failure", label);
    const char *base = strrchr(path, '/') + 1;
    cr_expect_not_null(strstr(err.message, base), "%s: message does not name the file: %s", label,
                       err.message);
    cr_expect_null(strchr(err.message, '\n'), "%s: message is not one line: %s", label,
                   err.message);
    cr_expect_eq(err.code, s, "%s: err.code differs from the returned status", label);
    if (s == BASE_OK) weights_close(f);
    return s;
}

static weights_file *open_ok(const char *path) {
    weights_file *f = NULL;
    base_error err = {0};
    base_status s = weights_open(path, &f, &err);
    cr_assert_eq(s, BASE_OK, "weights_open(%s) failed: %s", path, err.message);
    cr_assert_not_null(f);
    return f;
}

static uint32_t float_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* ------------------------------------------------- fixtures from PyTorch */

Test(safetensors, fixture_structure) {
    weights_file *f = open_ok(FIXTURE_DIR "mixed.safetensors");
    cr_assert_str_eq(weights_path(f), FIXTURE_DIR "mixed.safetensors");
    cr_assert_eq(weights_count(f), 10);

    const unsigned char *prev = NULL;
    for (size_t i = 0; i < weights_count(f); i++) {
        const weights_tensor *t = weights_at(f, i);
        cr_assert_not_null(t);
        cr_assert(prev == NULL || (const unsigned char *)t->data >= prev,
                  "weights_at is not in file-offset order at %zu", i);
        prev = t->data;
        cr_assert_eq(weights_find(f, t->name), t, "weights_find(%s)", t->name);
    }
    cr_assert_null(weights_at(f, weights_count(f)));
    cr_assert_str_eq(weights_at(f, 0)->name, "f32.weight");

    const weights_tensor *w = weights_find(f, "f32.weight");
    cr_assert_eq(w->dtype, WEIGHTS_F32);
    cr_assert_eq(w->ndim, 2);
    cr_assert_eq(w->shape[0], 3);
    cr_assert_eq(w->shape[1], 5);
    cr_assert_eq(w->numel, 15);
    cr_assert_eq(w->nbytes, 60);

    const weights_tensor *scalar = weights_find(f, "f32.scalar");
    cr_assert_eq(scalar->ndim, 0);
    cr_assert_eq(scalar->numel, 1);
    cr_assert_eq(scalar->nbytes, 4);

    const weights_tensor *empty = weights_find(f, "f32.empty");
    cr_assert_eq(empty->numel, 0);
    cr_assert_eq(empty->nbytes, 0);
    cr_assert_eq(empty->shape[0], 0);
    cr_assert_eq(empty->shape[1], 3);

    const weights_tensor *bf = weights_find(f, "bf16.special");
    cr_assert_eq(bf->dtype, WEIGHTS_BF16);
    cr_assert_eq(weights_find(f, "i64.steps")->dtype, WEIGHTS_I64);

    cr_assert_null(weights_find(f, "missing"));
    cr_assert_null(weights_find(f, ""));
    cr_assert_null(weights_find(f, NULL));
    cr_assert_null(weights_find(f, "__metadata__"));

    cr_assert_str_eq(weights_metadata(f, "format"), "pt");
    cr_assert_str_eq(weights_metadata(f, "producer"), "gen_safetensors.py");
    cr_assert_str_eq(weights_metadata(f, "note"), "caf\xc3\xa9 \xe2\x9c\x93");
    cr_assert_null(weights_metadata(f, "absent"));
    weights_close(f);
}

Test(safetensors, fixture_has_misaligned_f32) {
    weights_file *f = open_ok(FIXTURE_DIR "mixed.safetensors");
    const weights_tensor *t = weights_find(f, "f32.misaligned");
    cr_assert_neq((uintptr_t)t->data % 4, 0, "fixture no longer exercises misaligned F32");
    weights_close(f);
}

/* Every floating tensor converts to exactly the floats PyTorch's .float()
 * gave; NaNs need only stay NaN (payload quieting varies by instruction). */
Test(safetensors, to_f32_matches_pytorch) {
    weights_file *f = open_ok(FIXTURE_DIR "mixed.safetensors");
    weights_file *expected = open_ok(FIXTURE_DIR "expected.safetensors");
    cr_assert_eq(weights_count(expected), 9);
    for (size_t i = 0; i < weights_count(expected); i++) {
        const weights_tensor *want = weights_at(expected, i);
        const weights_tensor *t = weights_find(f, want->name);
        cr_assert_not_null(t, "%s missing", want->name);
        cr_assert_eq(want->dtype, WEIGHTS_F32);
        cr_assert_eq(t->numel, want->numel, "%s", want->name);
        cr_assert_eq(t->ndim, want->ndim, "%s", want->name);
        for (int d = 0; d < t->ndim; d++) cr_assert_eq(t->shape[d], want->shape[d]);

        float *got = malloc((t->numel + 1) * sizeof *got);
        float *ref = malloc((t->numel + 1) * sizeof *ref);
        base_error err = {0};
        cr_assert_eq(weights_to_f32(f, t, got, &err), BASE_OK, "%s", err.message);
        cr_assert_eq(weights_to_f32(expected, want, ref, &err), BASE_OK, "%s", err.message);
        for (size_t k = 0; k < t->numel; k++) {
            if (isnan(ref[k]))
                cr_expect(isnan(got[k]), "%s[%zu]: want NaN, got %a", t->name, k, got[k]);
            else
                cr_expect_eq(float_bits(got[k]), float_bits(ref[k]), "%s[%zu]: got %a want %a",
                             t->name, k, got[k], ref[k]);
        }
        free(got);
        free(ref);
    }
    weights_close(expected);
    weights_close(f);
}

Test(safetensors, to_f32_rejects_integer_dtypes) {
    weights_file *f = open_ok(FIXTURE_DIR "mixed.safetensors");
    const weights_tensor *t = weights_find(f, "i64.steps");
    float dst[4];
    base_error err = {0};
    cr_assert_eq(weights_to_f32(f, t, dst, &err), BASE_E_UNSUPPORTED);
    cr_assert_not_null(strstr(err.message, "mixed.safetensors"), "%s", err.message);
    cr_assert_not_null(strstr(err.message, "i64.steps"), "%s", err.message);
    cr_assert_not_null(strstr(err.message, "I64"), "%s", err.message);
    weights_close(f);
}

/* ------------------------------------------------- exhaustive conversions */

/* Reference half -> float from the IEEE definition, sharing no code with
 * the library. */
static float f16_reference(uint16_t h) {
    int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
    float v;
    if (exp == 0) v = ldexpf((float)mant, -24);
    else if (exp == 31) v = mant ? NAN : INFINITY;
    else v = ldexpf((float)(1024 + mant), exp - 25);
    return sign ? -v : v;
}

/* Writes every 16-bit pattern as dtype after a one-byte U8 tensor, so the
 * 16-bit data starts at an odd address, then checks each conversion. */
static void check_all_16bit_patterns(weights_dtype dtype, const char *file) {
    enum { N = 65536 };
    uint16_t *bits = malloc(N * sizeof *bits);
    for (uint32_t i = 0; i < N; i++) bits[i] = (uint16_t)i;
    unsigned char pad = 7;
    weights_tensor tensors[2] = {
        {.name = "pad", .dtype = WEIGHTS_U8, .ndim = 1, .shape = {1}, .numel = 1, .nbytes = 1,
         .data = &pad},
        {.name = "all", .dtype = dtype, .ndim = 2, .shape = {256, 256}, .numel = N,
         .nbytes = 2 * N, .data = bits},
    };
    char path[512];
    tmp_path(path, sizeof path, file);
    base_error err = {0};
    cr_assert_eq(weights_write(path, tensors, 2, NULL, NULL, 0, &err), BASE_OK, "%s", err.message);

    weights_file *f = open_ok(path);
    const weights_tensor *t = weights_find(f, "all");
    cr_assert_eq((uintptr_t)t->data % 2, 1, "data should be misaligned for this test");
    float *got = malloc(N * sizeof *got);
    cr_assert_eq(weights_to_f32(f, t, got, &err), BASE_OK, "%s", err.message);
    for (uint32_t i = 0; i < N; i++) {
        if (dtype == WEIGHTS_BF16) {
            cr_assert_eq(float_bits(got[i]), i << 16, "bf16 0x%04x", i);
            continue;
        }
        float want = f16_reference((uint16_t)i);
        if (isnan(want)) {
            cr_assert(isnan(got[i]), "f16 0x%04x: want NaN, got %a", i, got[i]);
            cr_assert_eq(float_bits(got[i]) >> 31, i >> 15, "f16 0x%04x: NaN sign", i);
        } else {
            cr_assert_eq(float_bits(got[i]), float_bits(want), "f16 0x%04x: got %a want %a", i,
                         got[i], want);
        }
    }
    free(got);
    free(bits);
    weights_close(f);
}

Test(safetensors, f16_all_patterns_exact) {
    check_all_16bit_patterns(WEIGHTS_F16, "all_f16.safetensors");
}

Test(safetensors, bf16_all_patterns_exact) {
    check_all_16bit_patterns(WEIGHTS_BF16, "all_bf16.safetensors");
}

/* Short tensors exercise the scalar tail after any vector loop. */
Test(safetensors, f16_every_length_up_to_20) {
    uint16_t bits[20];
    for (int i = 0; i < 20; i++) bits[i] = (uint16_t)(0x3c00 + 97 * i);
    char path[512];
    tmp_path(path, sizeof path, "lengths.safetensors");
    for (int n = 0; n < 20; n++) {
        weights_tensor t = {.name = "x", .dtype = WEIGHTS_F16, .ndim = 1, .shape = {n},
                            .numel = (size_t)n, .nbytes = 2 * (size_t)n, .data = bits};
        base_error err = {0};
        cr_assert_eq(weights_write(path, &t, 1, NULL, NULL, 0, &err), BASE_OK, "%s", err.message);
        weights_file *f = open_ok(path);
        float got[21];
        got[n] = 12345.0f;
        cr_assert_eq(weights_to_f32(f, weights_find(f, "x"), got, &err), BASE_OK);
        for (int i = 0; i < n; i++) cr_assert_eq(got[i], f16_reference(bits[i]), "n=%d i=%d", n, i);
        cr_assert_eq(got[n], 12345.0f, "wrote past the end for n=%d", n);
        weights_close(f);
    }
}

/* ---------------------------------------------------------- hostile files */

Test(safetensors, rejects_short_files) {
    char path[512];
    tmp_path(path, sizeof path, "empty.safetensors");
    write_bytes(path, "", 0);
    cr_expect_eq(expect_rejected(path, "empty"), BASE_E_FORMAT);

    tmp_path(path, sizeof path, "seven.safetensors");
    write_bytes(path, "\x02\0\0\0\0\0\0", 7);
    cr_expect_eq(expect_rejected(path, "7 bytes"), BASE_E_FORMAT);

    tmp_path(path, sizeof path, "only_length.safetensors");
    write_bytes(path, "\0\0\0\0\0\0\0\0", 8);
    expect_rejected(path, "zero-length header");
}

Test(safetensors, rejects_bad_header_lengths) {
    char path[512];
    const char *json = "{}";
    tmp_path(path, sizeof path, "len_past_end.safetensors");
    write_safetensors_raw(path, 100, json, 2, NULL, 40);
    cr_expect_eq(expect_rejected(path, "header length past end"), BASE_E_FORMAT);

    tmp_path(path, sizeof path, "len_one_past.safetensors");
    write_safetensors_raw(path, 3, json, 2, NULL, 0);
    expect_rejected(path, "header length one past end");

    tmp_path(path, sizeof path, "len_2_63.safetensors");
    write_safetensors_raw(path, (uint64_t)1 << 63, json, 2, NULL, 0);
    expect_rejected(path, "header length 2^63");

    tmp_path(path, sizeof path, "len_max.safetensors");
    write_safetensors_raw(path, UINT64_MAX, json, 2, NULL, 0);
    expect_rejected(path, "header length 2^64-1");
}

/* The limit is checked on the length alone: a sparse file claims a header
 * just over WEIGHTS_MAX_HEADER_BYTES without any of it being written. */
Test(safetensors, rejects_header_over_limit) {
    char path[512];
    tmp_path(path, sizeof path, "huge_header.safetensors");
    uint64_t len = WEIGHTS_MAX_HEADER_BYTES + 8;
    write_safetensors_raw(path, len, "{", 1, NULL, 0);
    cr_assert_eq(truncate(path, (off_t)(8 + len + 64)), 0);
    cr_expect_eq(expect_rejected(path, "header over limit"), BASE_E_LIMIT);
}

/* cJSON must not read past the header even when it ends exactly at the end
 * of a page-sized file in the middle of a string. */
Test(safetensors, unterminated_json_at_end_of_file) {
    char path[512];
    tmp_path(path, sizeof path, "unterminated.safetensors");
    size_t json_len = 4096 - 8;
    char *json = malloc(json_len);
    memset(json, 'x', json_len);
    memcpy(json, "{\"a", 3);
    write_safetensors_raw(path, json_len, json, json_len, NULL, 0);
    free(json);
    cr_expect_eq(expect_rejected(path, "unterminated"), BASE_E_FORMAT);
}

Test(safetensors, rejects_deep_nesting) {
    char path[512];
    tmp_path(path, sizeof path, "deep.safetensors");
    enum { DEPTH = 100000 };
    char *json = malloc(2 * DEPTH + 16);
    size_t n = 0;
    n += (size_t)sprintf(json, "{\"a\":");
    for (int i = 0; i < DEPTH; i++) json[n++] = '[';
    for (int i = 0; i < DEPTH; i++) json[n++] = ']';
    json[n++] = '}';
    write_safetensors_raw(path, n, json, n, NULL, 0);
    free(json);
    expect_rejected(path, "deep nesting");
}

typedef struct hostile_case {
    const char *label;
    const char *json;
    size_t data_len;
    base_status want; /* BASE_OK: any error will do */
    const char *says; /* a phrase the message must contain, or NULL */
} hostile_case;

#define ENTRY(dtype, shape, offsets) \
    "{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offsets "}"

static const hostile_case hostile_cases[] = {
    {"invalid JSON", "{\"a\": {\"dtype\": \"F32\"", 0, BASE_E_FORMAT, "JSON"},
    {"garbage", "\x01\x02\xff\xfe", 0, BASE_E_FORMAT, NULL},
    {"JSON array", "[1, 2, 3]", 0, BASE_E_FORMAT, "not an object"},
    {"JSON string", "\"weights\"", 0, BASE_E_FORMAT, NULL},
    {"trailing bytes", "{} x", 0, BASE_E_FORMAT, NULL},
    {"two objects", "{}{}", 0, BASE_E_FORMAT, NULL},
    {"entry not object", "{\"a\": 5}", 0, BASE_E_FORMAT, "'a'"},
    {"missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, BASE_E_FORMAT, "dtype"},
    {"missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, BASE_E_FORMAT,
     "shape"},
    {"missing offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, BASE_E_FORMAT,
     "data_offsets"},
    {"dtype twice",
     "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     BASE_E_FORMAT, "twice"},
    {"dtype not string", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     BASE_E_FORMAT, NULL},
    {"unknown dtype", "{\"a\":" ENTRY("F33", "[1]", "[0,4]") "}", 4, BASE_E_FORMAT, "F33"},
    {"lowercase dtype", "{\"a\":" ENTRY("f32", "[1]", "[0,4]") "}", 4, BASE_E_FORMAT, NULL},
    {"unsupported dtype", "{\"a\":" ENTRY("U16", "[2]", "[0,4]") "}", 4, BASE_E_UNSUPPORTED,
     "U16"},
    {"shape not array", "{\"a\":" ENTRY("F32", "4", "[0,4]") "}", 4, BASE_E_FORMAT, NULL},
    {"negative dim", "{\"a\":" ENTRY("F32", "[-1]", "[0,4]") "}", 4, BASE_E_FORMAT, "negative"},
    {"float dim", "{\"a\":" ENTRY("F32", "[3.5]", "[0,14]") "}", 14, BASE_E_FORMAT, "integer"},
    {"string dim", "{\"a\":" ENTRY("F32", "[\"4\"]", "[0,16]") "}", 16, BASE_E_FORMAT, NULL},
    {"null dim", "{\"a\":" ENTRY("F32", "[null]", "[0,4]") "}", 4, BASE_E_FORMAT, NULL},
    {"huge dim", "{\"a\":" ENTRY("U8", "[1e300]", "[0,4]") "}", 4, BASE_E_FORMAT, "large"},
    {"dim 2^53+1", "{\"a\":" ENTRY("U8", "[9007199254740993]", "[0,4]") "}", 4, BASE_E_FORMAT,
     NULL},
    {"dim 2^64", "{\"a\":" ENTRY("U8", "[18446744073709551616]", "[0,4]") "}", 4, BASE_E_FORMAT,
     NULL},
    {"too many dims", "{\"a\":" ENTRY("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", 4,
     BASE_E_LIMIT, NULL},
    {"element count overflow",
     "{\"a\":" ENTRY("F32", "[1099511627776,1099511627776]", "[0,0]") "}", 0, BASE_E_FORMAT,
     "overflow"},
    {"byte size overflow", "{\"a\":" ENTRY("F64", "[4503599627370496,1024]", "[0,0]") "}", 0,
     BASE_E_FORMAT, "overflow"},
    {"shape needs more bytes", "{\"a\":" ENTRY("F32", "[2]", "[0,4]") "}", 8, BASE_E_SHAPE,
     "'a'"},
    {"shape needs fewer bytes", "{\"a\":" ENTRY("F16", "[2]", "[0,8]") "}", 8, BASE_E_SHAPE, NULL},
    {"offsets out of range",
     "{\"blocks.0.attn.qkv.weight\":" ENTRY("F32", "[75]", "[100,400]") "}", 300, BASE_E_FORMAT,
     "tensor 'blocks.0.attn.qkv.weight': byte range [100, 400) lies outside the data section "
     "(300 bytes)"},
    {"end one past data", "{\"a\":" ENTRY("F32", "[1]", "[0,4]") "}", 3, BASE_E_FORMAT, "outside"},
    {"begin after end", "{\"a\":" ENTRY("F32", "[1]", "[8,4]") "}", 8, BASE_E_FORMAT, "before"},
    {"one offset", "{\"a\":" ENTRY("F32", "[0]", "[0]") "}", 4, BASE_E_FORMAT, NULL},
    {"three offsets", "{\"a\":" ENTRY("F32", "[1]", "[0,4,8]") "}", 8, BASE_E_FORMAT, NULL},
    {"offsets not array", "{\"a\":" ENTRY("F32", "[1]", "4") "}", 4, BASE_E_FORMAT, NULL},
    {"negative offset", "{\"a\":" ENTRY("F32", "[1]", "[-4,0]") "}", 4, BASE_E_FORMAT,
     "negative"},
    {"float offset", "{\"a\":" ENTRY("U8", "[4]", "[0.5,4.5]") "}", 8, BASE_E_FORMAT, NULL},
    {"huge offsets", "{\"a\":" ENTRY("U8", "[4]", "[18446744073709551612,18446744073709551616]") "}",
     8, BASE_E_FORMAT, NULL},
    {"overlapping tensors",
     "{\"a\":" ENTRY("F32", "[2]", "[0,8]") ",\"b\":" ENTRY("F32", "[2]", "[4,12]") "}", 12,
     BASE_E_FORMAT, "overlaps"},
    {"same range twice",
     "{\"a\":" ENTRY("F32", "[2]", "[0,8]") ",\"b\":" ENTRY("U8", "[8]", "[0,8]") "}", 8,
     BASE_E_FORMAT, "overlaps"},
    {"range inside another",
     "{\"a\":" ENTRY("U8", "[16]", "[0,16]") ",\"b\":" ENTRY("U8", "[2]", "[10,12]")
     ",\"c\":" ENTRY("U8", "[4]", "[16,20]") "}", 20, BASE_E_FORMAT, "overlaps"},
    {"duplicate names",
     "{\"a\":" ENTRY("F32", "[1]", "[0,4]") ",\"a\":" ENTRY("F32", "[1]", "[4,8]") "}", 8,
     BASE_E_FORMAT, "twice"},
    {"metadata value not string", "{\"__metadata__\":{\"k\":1}}", 0, BASE_E_FORMAT, "'k'"},
    {"metadata value object", "{\"__metadata__\":{\"k\":{}}}", 0, BASE_E_FORMAT, NULL},
    {"metadata not object", "{\"__metadata__\":[\"x\"]}", 0, BASE_E_FORMAT, "__metadata__"},
    {"metadata string", "{\"__metadata__\":\"x\"}", 0, BASE_E_FORMAT, NULL},
    {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, BASE_E_FORMAT, NULL},
    {"metadata key twice", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, BASE_E_FORMAT,
     "twice"},
    {"control chars in name", "{\"bad\\nname\":" ENTRY("Q", "[1]", "[0,4]") "}", 4, BASE_E_FORMAT,
     "bad?name"},
};

Test(safetensors, rejects_hostile_headers) {
    for (size_t i = 0; i < sizeof hostile_cases / sizeof hostile_cases[0]; i++) {
        const hostile_case *c = &hostile_cases[i];
        char name[64], path[512];
        snprintf(name, sizeof name, "hostile_%02zu.safetensors", i);
        tmp_path(path, sizeof path, name);
        write_json_file(path, c->json, c->data_len);
        base_error err = {0};
        weights_file *f = NULL;
        base_status s = weights_open(path, &f, &err);
        weights_close(f);
        cr_log_info("%-26s %s", c->label, err.message); /* shown with --verbose */
        base_status got = expect_rejected(path, c->label);
        cr_expect_eq(got, s, "%s: status not repeatable", c->label);
        if (c->want != BASE_OK)
            cr_expect_eq(got, c->want, "%s: status %s, want %s (%s)", c->label,
                         base_status_name(got), base_status_name(c->want), err.message);
        if (c->says)
            cr_expect_not_null(strstr(err.message, c->says), "%s: message lacks \"%s\": %s",
                               c->label, c->says, err.message);
    }
}

Test(safetensors, rejects_too_many_tensors) {
    size_t n = WEIGHTS_MAX_TENSORS + 1;
    size_t cap = n * 64 + 16;
    char *json = malloc(cap);
    size_t len = 0;
    json[len++] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(json + len, cap - len,
                                "%s\"t%zu\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}",
                                i ? "," : "", i);
    json[len++] = '}';
    json[len] = '\0';
    char path[512];
    tmp_path(path, sizeof path, "many.safetensors");
    write_json_file(path, json, 0);
    free(json);
    cr_expect_eq(expect_rejected(path, "too many tensors"), BASE_E_LIMIT);
}

Test(safetensors, rejects_missing_and_non_regular_files) {
    char path[512];
    tmp_path(path, sizeof path, "does_not_exist.safetensors");
    cr_expect_eq(expect_rejected(path, "missing file"), BASE_E_IO);

    tmp_path(path, sizeof path, "a_directory.safetensors");
    cr_assert_eq(mkdir(path, 0700), 0);
    cr_expect_eq(expect_rejected(path, "directory"), BASE_E_IO);
}

Test(safetensors, rejects_bad_arguments) {
    base_error err = {0};
    cr_expect_eq(weights_open(FIXTURE_DIR "mixed.safetensors", NULL, &err), BASE_E_ARG);
    weights_file *f = NULL;
    cr_expect_eq(weights_open(NULL, &f, &err), BASE_E_ARG);
    cr_expect_null(f);
    /* A NULL base_error is allowed: callers may not care about the text. */
    cr_expect_eq(weights_open("/nonexistent/x.safetensors", &f, NULL), BASE_E_IO);
    weights_close(NULL);
    cr_expect_eq(weights_count(NULL), 0);
    cr_expect_null(weights_at(NULL, 0));
    cr_expect_null(weights_find(NULL, "a"));
    cr_expect_null(weights_metadata(NULL, "a"));
}

/* ------------------------------------------------------- edge cases accepted */

Test(safetensors, accepts_valid_edge_cases) {
    char path[512];
    tmp_path(path, sizeof path, "edge.safetensors");
    /* Padding, an empty tensor sharing its offset with a full one, a tensor
     * at the very end, integer-valued floats, unknown extra keys, gaps. */
    const char *json =
        "{\"__metadata__\":null,"
        "\"z\":{\"dtype\":\"U8\",\"shape\":[0,5],\"data_offsets\":[4,4]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[4,8],\"extra\":[1,2]},"
        "\"b\":{\"dtype\":\"BOOL\",\"shape\":[],\"data_offsets\":[8,9]},"
        "\"end\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[12,12]}}  \n\t ";
    write_json_file(path, json, 12);
    weights_file *f = open_ok(path);
    cr_assert_eq(weights_count(f), 4);
    cr_assert_str_eq(weights_at(f, 0)->name, "z");
    cr_assert_str_eq(weights_at(f, 1)->name, "a");
    cr_assert_str_eq(weights_at(f, 2)->name, "b");
    cr_assert_str_eq(weights_at(f, 3)->name, "end");
    cr_assert_eq(weights_find(f, "a")->shape[0], 1);
    cr_assert_eq(weights_find(f, "b")->numel, 1);
    cr_assert_null(weights_metadata(f, "anything"));
    weights_close(f);

    tmp_path(path, sizeof path, "no_tensors.safetensors");
    write_json_file(path, "{}", 0);
    f = open_ok(path);
    cr_assert_eq(weights_count(f), 0);
    cr_assert_null(weights_find(f, "a"));
    weights_close(f);
}

Test(safetensors, find_many_tensors) {
    enum { N = 1500 };
    static float values[N];
    static weights_tensor tensors[N];
    static char names[N][48];
    for (int i = 0; i < N; i++) {
        values[i] = (float)i;
        snprintf(names[i], sizeof names[i], "blocks.%d.mlp.fc%d.weight", i / 2, i % 2 + 1);
        tensors[i] = (weights_tensor){.name = names[i], .dtype = WEIGHTS_F32, .ndim = 1,
                                      .shape = {1}, .numel = 1, .nbytes = 4, .data = &values[i]};
    }
    char path[512];
    tmp_path(path, sizeof path, "many_ok.safetensors");
    base_error err = {0};
    cr_assert_eq(weights_write(path, tensors, N, NULL, NULL, 0, &err), BASE_OK, "%s", err.message);
    weights_file *f = open_ok(path);
    cr_assert_eq(weights_count(f), N);
    for (int i = 0; i < N; i++) {
        const weights_tensor *t = weights_find(f, names[i]);
        cr_assert_not_null(t, "%s", names[i]);
        float v;
        cr_assert_eq(weights_to_f32(f, t, &v, &err), BASE_OK);
        cr_assert_eq(v, (float)i);
        cr_assert_eq(weights_at(f, (size_t)i), t, "offset order differs from write order");
    }
    cr_assert_null(weights_find(f, "blocks.9999.mlp.fc1.weight"));
    weights_close(f);
}

Test(safetensors, dtype_names_and_sizes) {
    static const struct {
        weights_dtype dtype;
        const char *name;
        size_t size;
    } want[] = {{WEIGHTS_F32, "F32", 4}, {WEIGHTS_F16, "F16", 2}, {WEIGHTS_BF16, "BF16", 2},
                {WEIGHTS_F64, "F64", 8}, {WEIGHTS_I8, "I8", 1},   {WEIGHTS_U8, "U8", 1},
                {WEIGHTS_I16, "I16", 2}, {WEIGHTS_I32, "I32", 4}, {WEIGHTS_I64, "I64", 8},
                {WEIGHTS_BOOL, "BOOL", 1}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_expect_str_eq(weights_dtype_name(want[i].dtype), want[i].name);
        cr_expect_eq(weights_dtype_size(want[i].dtype), want[i].size);
    }
    cr_expect_eq(weights_dtype_size((weights_dtype)99), 0);
}

/* ------------------------------------------------------------------ writer */

static uint64_t read_header_length(const char *path) {
    unsigned char b[8];
    FILE *fp = fopen(path, "rb");
    cr_assert_not_null(fp);
    cr_assert_eq(fread(b, 1, 8, fp), 8);
    fclose(fp);
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}

Test(safetensors, write_round_trip) {
    float f32[6] = {1.5f, -2.0f, 0.0f, -0.0f, INFINITY, 3.0e-42f};
    uint16_t f16[3] = {0x3c00, 0x0001, 0xfc00};
    uint16_t bf16[2] = {0x3f80, 0x7fc0};
    int64_t i64[2] = {-1, INT64_MAX};
    unsigned char flag = 1;
    double f64 = 0.1;
    weights_tensor tensors[] = {
        {.name = "f16 \"quoted\" \\ name", .dtype = WEIGHTS_F16, .ndim = 1, .shape = {3},
         .numel = 3, .nbytes = 6, .data = f16},
        {.name = "layer.0.weight", .dtype = WEIGHTS_F32, .ndim = 2, .shape = {2, 3}, .numel = 6,
         .nbytes = 24, .data = f32},
        {.name = "empty", .dtype = WEIGHTS_F32, .ndim = 2, .shape = {0, 7}, .numel = 0,
         .nbytes = 0, .data = NULL},
        {.name = "bf", .dtype = WEIGHTS_BF16, .ndim = 1, .shape = {2}, .numel = 2, .nbytes = 4,
         .data = bf16},
        {.name = "flag", .dtype = WEIGHTS_BOOL, .ndim = 0, .numel = 1, .nbytes = 1,
         .data = &flag},
        {.name = "caf\xc3\xa9/i64", .dtype = WEIGHTS_I64, .ndim = 1, .shape = {2}, .numel = 2,
         .nbytes = 16, .data = i64},
        {.name = "tab\tnewline\n", .dtype = WEIGHTS_F64, .ndim = 3, .shape = {1, 1, 1},
         .numel = 1, .nbytes = 8, .data = &f64},
    };
    size_t n = sizeof tensors / sizeof tensors[0];
    const char *keys[] = {"format", "quote\"s", "unicode"};
    const char *values[] = {"pt", "back\\slash\nnewline\x01", "\xe2\x9c\x93"};
    char path[512];
    tmp_path(path, sizeof path, "round_trip.safetensors");
    base_error err = {0};
    cr_assert_eq(weights_write(path, tensors, n, keys, values, 3, &err), BASE_OK, "%s",
                 err.message);
    cr_assert_eq(count_dir_entries(tmp_dir), 1, "temporary file left behind");
    cr_assert_eq(read_header_length(path) % 8, 0, "data section is not 8-byte aligned");

    weights_file *f = open_ok(path);
    cr_assert_eq(weights_count(f), n);
    for (size_t i = 0; i < n; i++) {
        const weights_tensor *want = &tensors[i];
        const weights_tensor *got = weights_find(f, want->name);
        cr_assert_not_null(got, "%s missing", want->name);
        cr_assert_eq(weights_at(f, i), got, "%s out of order", want->name);
        cr_assert_eq(got->dtype, want->dtype);
        cr_assert_eq(got->ndim, want->ndim);
        for (int d = 0; d < want->ndim; d++) cr_assert_eq(got->shape[d], want->shape[d]);
        cr_assert_eq(got->numel, want->numel);
        cr_assert_eq(got->nbytes, want->nbytes);
        if (want->nbytes) cr_assert_eq(memcmp(got->data, want->data, want->nbytes), 0);
    }
    for (int i = 0; i < 3; i++) cr_assert_str_eq(weights_metadata(f, keys[i]), values[i]);
    weights_close(f);
}

Test(safetensors, write_replaces_existing_file) {
    char path[512];
    tmp_path(path, sizeof path, "replace.safetensors");
    write_bytes(path, "old contents", 12);
    float v = 4.0f;
    weights_tensor t = {.name = "v", .dtype = WEIGHTS_F32, .ndim = 1, .shape = {1}, .numel = 1,
                        .nbytes = 4, .data = &v};
    base_error err = {0};
    cr_assert_eq(weights_write(path, &t, 1, NULL, NULL, 0, &err), BASE_OK, "%s", err.message);
    weights_file *f = open_ok(path);
    cr_assert_eq(weights_count(f), 1);
    weights_close(f);
    cr_assert_eq(count_dir_entries(tmp_dir), 1);
}

Test(safetensors, write_empty_file_round_trips) {
    char path[512];
    tmp_path(path, sizeof path, "nothing.safetensors");
    base_error err = {0};
    cr_assert_eq(weights_write(path, NULL, 0, NULL, NULL, 0, &err), BASE_OK, "%s", err.message);
    weights_file *f = open_ok(path);
    cr_assert_eq(weights_count(f), 0);
    weights_close(f);
}

static weights_tensor one_float(const float *v) {
    return (weights_tensor){.name = "v", .dtype = WEIGHTS_F32, .ndim = 1, .shape = {1},
                            .numel = 1, .nbytes = 4, .data = v};
}

Test(safetensors, failed_write_into_missing_directory) {
    char path[512];
    tmp_path(path, sizeof path, "no_such_dir/out.safetensors");
    float v = 1.0f;
    weights_tensor t = one_float(&v);
    base_error err = {0};
    cr_assert_eq(weights_write(path, &t, 1, NULL, NULL, 0, &err), BASE_E_IO);
    cr_assert_not_null(strstr(err.message, path), "%s", err.message);
    cr_assert_not(file_exists(path));
    cr_assert_eq(count_dir_entries(tmp_dir), 0);
}

/* Renaming a file over a directory fails after the temporary file has been
 * written: it must be removed. */
Test(safetensors, failed_rename_removes_temporary) {
    char path[512];
    tmp_path(path, sizeof path, "target_is_dir");
    cr_assert_eq(mkdir(path, 0700), 0);
    float v = 1.0f;
    weights_tensor t = one_float(&v);
    base_error err = {0};
    cr_assert_eq(weights_write(path, &t, 1, NULL, NULL, 0, &err), BASE_E_IO);
    cr_assert_not_null(strstr(err.message, path), "%s", err.message);
    cr_assert_eq(count_dir_entries(tmp_dir), 1, "temporary file left behind");
    cr_assert_eq(count_dir_entries(path), 0);
}

Test(safetensors, failed_write_into_read_only_directory) {
    if (geteuid() == 0) {
        remove_tmp_dir(); /* a skipped test does not reach .fini */
        cr_skip_test("root ignores directory permissions");
    }
    char dir[512], path[600];
    tmp_path(dir, sizeof dir, "read_only");
    cr_assert_eq(mkdir(dir, 0500), 0);
    snprintf(path, sizeof path, "%s/out.safetensors", dir);
    float v = 1.0f;
    weights_tensor t = one_float(&v);
    base_error err = {0};
    cr_assert_eq(weights_write(path, &t, 1, NULL, NULL, 0, &err), BASE_E_IO);
    cr_assert_not_null(strstr(err.message, path), "%s", err.message);
    cr_assert_eq(count_dir_entries(dir), 0);
}

Test(safetensors, write_rejects_invalid_tensors) {
    char path[512];
    tmp_path(path, sizeof path, "invalid.safetensors");
    float v[2] = {1, 2};
    weights_tensor good = one_float(v);
    struct {
        const char *label;
        weights_tensor t;
    } cases[] = {
        {"nbytes mismatch", {.name = "v", .dtype = WEIGHTS_F32, .ndim = 1, .shape = {2},
                             .numel = 2, .nbytes = 4, .data = v}},
        {"numel mismatch", {.name = "v", .dtype = WEIGHTS_F32, .ndim = 1, .shape = {2},
                            .numel = 1, .nbytes = 8, .data = v}},
        {"negative dim", {.name = "v", .dtype = WEIGHTS_F32, .ndim = 1, .shape = {-1},
                          .numel = 1, .nbytes = 4, .data = v}},
        {"too many dims", {.name = "v", .dtype = WEIGHTS_F32, .ndim = 9, .numel = 1,
                           .nbytes = 4, .data = v}},
        {"bad dtype", {.name = "v", .dtype = (weights_dtype)42, .ndim = 1, .shape = {1},
                       .numel = 1, .nbytes = 4, .data = v}},
        {"NULL data", {.name = "v", .dtype = WEIGHTS_F32, .ndim = 1, .shape = {1}, .numel = 1,
                       .nbytes = 4, .data = NULL}},
        {"NULL name", {.name = NULL, .dtype = WEIGHTS_F32, .ndim = 1, .shape = {1}, .numel = 1,
                       .nbytes = 4, .data = v}},
        {"reserved name", {.name = "__metadata__", .dtype = WEIGHTS_F32, .ndim = 1,
                           .shape = {1}, .numel = 1, .nbytes = 4, .data = v}},
        {"overflow wrapping to 0", {.name = "v", .dtype = WEIGHTS_U8, .ndim = 2,
                                    .shape = {4294967296, 4294967296}, .numel = 0,
                                    .nbytes = 0, .data = v}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        base_error err = {0};
        cr_expect_neq(weights_write(path, &cases[i].t, 1, NULL, NULL, 0, &err), BASE_OK, "%s",
                      cases[i].label);
        cr_expect_not_null(strstr(err.message, path), "%s: %s", cases[i].label, err.message);
    }
    weights_tensor dup[2] = {good, good};
    base_error err = {0};
    cr_expect_eq(weights_write(path, dup, 2, NULL, NULL, 0, &err), BASE_E_ARG);
    cr_expect_not_null(strstr(err.message, "twice"), "%s", err.message);
    const char *keys[] = {"k", "k"}, *values[] = {"1", "2"};
    cr_expect_eq(weights_write(path, &good, 1, keys, values, 2, &err), BASE_E_ARG);
    const char *null_value[] = {"1", NULL};
    cr_expect_eq(weights_write(path, &good, 1, keys, null_value, 2, &err), BASE_E_ARG);
    cr_expect_eq(count_dir_entries(tmp_dir), 0, "a rejected write left a file");
}
