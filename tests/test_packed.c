/* test_packed.c — packed copies (vit/packed.c, docs/quantize.md): a copy
 * made by vit quantize maps its packed matrices at load and gives the same
 * bits as the same tensors packed at load; its parts are 64-byte aligned in
 * the mapping; a copy packed for another layout is packed again with one
 * notice line, and parts that do not fit their layout refuse the load.
 * The PyTorch parity of the float32 copies follows from the same bits (the
 * source passes tests/test_parity.c) and is checked here too. */
#define _GNU_SOURCE /* memmem */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels.h"
#include "test_util.h"
#include "vit.h"

#define FIXTURES VITC_SOURCE_DIR "/tests/fixtures/parity/"
#define PREFIX "vitc_packed."

static const char *const NAMES[] = {"timm_d128_h2", "timm_dist_d96_h4", "hf_vit_d48_h3",
                                    "hf_deit_teacher_d64_h2"};

static void tmp_path(char *path, size_t size, const char *name, const char *what) {
    snprintf(path, size, "/tmp/vitc-packed-%d-%s-%s.safetensors", (int)getpid(), name, what);
}

/* `in` with every packed part and the packing's metadata left out: the
 * same tensors, which a load packs itself. If `shrink` names a part, it is
 * kept with its last 64 bytes cut instead (a damaged file). */
static void strip(const char *in, const char *out, const char *shrink) {
    weights_file *f;
    base_error err;
    cr_assert(weights_open(in, &f, &err) == BASE_OK, "%s", err.message);
    const size_t n = weights_count(f), n_meta = weights_metadata_count(f);
    weights_tensor *t = calloc(n, sizeof *t);
    const char **k = calloc(n_meta + 1, sizeof *k), **v = calloc(n_meta + 1, sizeof *v);
    size_t kept = 0, kept_meta = 0;
    for (size_t i = 0; i < n; i++) {
        const weights_tensor *w = weights_at(f, i);
        if (strncmp(w->name, PREFIX, strlen(PREFIX)) != 0) {
            t[kept++] = *w;
        } else if (shrink && strcmp(w->name, shrink) == 0) {
            t[kept] = *w;
            t[kept].shape[0] -= 64;
            t[kept].numel -= 64;
            t[kept++].nbytes -= 64;
        } else if (shrink) {
            t[kept++] = *w;
        }
    }
    for (size_t i = 0; i < n_meta; i++) {
        const char *key = weights_metadata_key(f, i);
        if (shrink || strncmp(key, "vitc_packed", 11) != 0)
            k[kept_meta] = key, v[kept_meta++] = weights_metadata_value(f, i);
    }
    cr_assert(weights_write(out, t, kept, k, v, kept_meta, &err) == BASE_OK, "%s", err.message);
    free(t);
    free(k);
    free(v);
    weights_close(f);
}

/* `in` with byte `at` of tensor `part` flipped (xor 0x40) into `out`. */
static void flip(const char *in, const char *out, const char *part, size_t at) {
    weights_file *f;
    base_error err;
    cr_assert(weights_open(in, &f, &err) == BASE_OK, "%s", err.message);
    const size_t n = weights_count(f), n_meta = weights_metadata_count(f);
    weights_tensor *t = calloc(n, sizeof *t);
    const char **k = calloc(n_meta + 1, sizeof *k), **v = calloc(n_meta + 1, sizeof *v);
    unsigned char *copy = NULL;
    for (size_t i = 0; i < n; i++) {
        t[i] = *weights_at(f, i);
        if (strcmp(t[i].name, part) != 0) continue;
        copy = malloc(t[i].nbytes);
        memcpy(copy, t[i].data, t[i].nbytes);
        copy[at] ^= 0x40;
        t[i].data = copy;
    }
    cr_assert(copy, "%s: no %s", in, part);
    for (size_t i = 0; i < n_meta; i++) k[i] = weights_metadata_key(f, i), v[i] = weights_metadata_value(f, i);
    cr_assert(weights_write(out, t, n, k, v, n_meta, &err) == BASE_OK, "%s", err.message);
    free(copy);
    free(t);
    free(k);
    free(v);
    weights_close(f);
}

/* The fixture's PyTorch input through the model at path into *logits
 * (malloc'd); returns the count. options NULL: the defaults. */
static size_t forward(const char *name, const char *path, const vit_load_options *options,
                      float **logits, char *notices, size_t size) {
    char expected_path[512];
    snprintf(expected_path, sizeof expected_path, FIXTURES "%s/expected.safetensors", name);
    base_error err;
    vit_model *m;
    cr_assert(vit_model_load(path, options, &m, &err) == BASE_OK, "%s: %s", path, err.message);
    if (notices) snprintf(notices, size, "%s", vit_model_notices(m));
    weights_file *expected;
    cr_assert(weights_open(expected_path, &expected, &err) == BASE_OK, "%s", err.message);
    const weights_tensor *input_t, *logits_t;
    float *input = tensor_f32(expected, "input", &input_t);
    free(tensor_f32(expected, "logits", &logits_t));
    const int batch = (int)input_t->shape[0];
    vit_context *ctx;
    cr_assert(vit_context_create(m, batch, (int)input_t->shape[2], 0, &ctx, &err) == BASE_OK, "%s",
              err.message);
    *logits = malloc(logits_t->numel * sizeof(float));
    cr_assert(vit_forward(ctx, input, batch, *logits, &err) == BASE_OK, "%s", err.message);
    const size_t n = logits_t->numel;
    free(input);
    vit_context_free(ctx);
    weights_close(expected);
    vit_model_free(m);
    return n;
}

/* Every part of the packed file at path starts 64-byte aligned in the
 * mapping; returns how many parts it has. */
static int aligned_parts(const char *path) {
    weights_file *f;
    base_error err;
    cr_assert(weights_open(path, &f, &err) == BASE_OK, "%s", err.message);
    int parts = 0;
    for (size_t i = 0; i < weights_count(f); i++) {
        const weights_tensor *t = weights_at(f, i);
        if (strncmp(t->name, PREFIX, strlen(PREFIX)) != 0) continue;
        parts++;
        cr_expect((uintptr_t)t->data % 64 == 0 && t->nbytes % 64 == 0, "%s: %s at %p, %zu bytes",
                  path, t->name, t->data, t->nbytes);
    }
    weights_close(f);
    return parts;
}

static void check_same_bits(const char *name, const char *dtype) {
    char model[512], packed[512], plain[512], args[2048];
    snprintf(model, sizeof model, FIXTURES "%s", name);
    tmp_path(packed, sizeof packed, name, dtype);
    tmp_path(plain, sizeof plain, name, "plain");
    snprintf(args, sizeof args, "quantize -m %s -o %s --dtype %s", model, packed, dtype);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "vit %s: %s", args, r->err);
    cr_expect(aligned_parts(packed) > 0, "%s %s: no packed parts", name, dtype);
    strip(packed, plain, NULL);
    float *a, *b;
    char notes[1024];
    const size_t n = forward(name, packed, NULL, &a, notes, sizeof notes);
    cr_expect(strstr(notes, "packed for another") == NULL, "%s %s: %s", name, dtype, notes);
    forward(name, plain, NULL, &b, NULL, 0);
    cr_expect(memcmp(a, b, n * sizeof(float)) == 0, "%s %s: the packed copy's logits differ",
              name, dtype);
    if (strcmp(dtype, "fp32") == 0) { /* the source's bits, and PyTorch's within parity */
        float *c, *want;
        forward(name, model, NULL, &c, NULL, 0);
        /* A BF16 source computes in bf16 (activations rounded to bf16), its
         * fp32 copy in float32: the same bits only from a float source; the
         * copy is still held to PyTorch's float32 below. */
        vit_model *source;
        base_error load_err;
        cr_assert(vit_model_load(model, NULL, &source, &load_err) == BASE_OK, "%s", load_err.message);
        if (!vit_model_bf16_kernels(source))
            cr_expect(memcmp(a, c, n * sizeof(float)) == 0, "%s: fp32 copy differs from source", name);
        vit_model_free(source);
        char expected_path[512];
        snprintf(expected_path, sizeof expected_path, FIXTURES "%s/expected.safetensors", name);
        weights_file *e;
        base_error err;
        cr_assert(weights_open(expected_path, &e, &err) == BASE_OK, "%s", err.message);
        const weights_tensor *t;
        want = tensor_f32(e, "logits", &t);
        float worst = 0.0f, scale = 0.0f;
        for (size_t i = 0; i < n; i++) {
            worst = fmaxf(worst, fabsf(a[i] - want[i]));
            scale = fmaxf(scale, fabsf(want[i]));
        }
        cr_expect(worst <= 1e-4f * scale, "%s: fp32 copy off PyTorch by %g", name, worst / scale);
        free(want);
        free(c);
        weights_close(e);
    }
    free(a);
    free(b);
    remove(packed);
    remove(plain);
}

Test(packed, copies_map_their_matrices_and_give_the_same_bits, .timeout = 300) {
    static const char *const DTYPES[] = {"fp32", "bf16", "int8"};
    for (size_t i = 0; i < sizeof NAMES / sizeof *NAMES; i++)
        for (size_t d = 0; d < sizeof DTYPES / sizeof *DTYPES; d++) check_same_bits(NAMES[i], DTYPES[d]);
}

/* Packed for the portable int8 layout (int16 pairs), loaded on the VNNI
 * layout (quads; its C reference runs on any CPU): packed again silently
 * (another CPU's copy), the same bits; a layout name no kernel of this
 * vitc uses (another version): packed again, one line saying so. */
Test(packed, another_layout_is_packed_again_with_one_line) {
    const char *name = "timm_d128_h2";
    char out[512];
    tmp_path(out, sizeof out, name, "generic");
    base_error err;
    vit_model *m;
    const vit_load_options generic = {.isa = "generic"}, quads = {.isa = "vnni-reference"};
    cr_assert(vit_model_load(FIXTURES "timm_d128_h2", &generic, &m, &err) == BASE_OK, "%s", err.message);
    cr_assert(vit_model_quantize(m, WEIGHTS_QUANT_INT8, 1, out, &err) == BASE_OK, "%s", err.message);
    vit_model_free(m);
    float *a, *b, *c;
    char notes[1024];
    /* Another CPU's int8 layout: packed at load without a word. */
    const size_t n = forward(name, out, &quads, &a, notes, sizeof notes);
    cr_expect(strstr(notes, "packed for another") == NULL, "%s", notes);
    forward(name, out, &generic, &b, notes, sizeof notes);
    cr_expect(strstr(notes, "packed for another") == NULL, "%s", notes);
    cr_expect(memcmp(a, b, n * sizeof(float)) == 0, "the repacked copy's logits differ");
    /* A layout no kernel of this vitc packs (another version): one line. */
    FILE *f = fopen(out, "r+b");
    cr_assert(f);
    cr_assert(fseek(f, 0, SEEK_END) == 0);
    const size_t size = (size_t)ftell(f);
    char *bytes = malloc(size);
    rewind(f);
    cr_assert(bytes && fread(bytes, 1, size, f) == size);
    const char *const from = "qmatrix-s16-pair-panel16-v1";
    char *at = memmem(bytes, size, from, strlen(from));
    cr_assert(at, "the copy names its int8 layout");
    at[strlen(from) - 1] = '0';
    cr_assert(fseek(f, at - bytes, SEEK_SET) == 0 && fwrite(at, 1, strlen(from), f) == strlen(from));
    fclose(f);
    free(bytes);
    forward(name, out, &generic, &c, notes, sizeof notes);
    const char *line = strstr(notes, "packed for another layout, qmatrix-s16-pair-panel16-v0");
    cr_expect(line && !strstr(line + 1, "packed for another"), "%s", notes);
    cr_expect(memcmp(c, b, n * sizeof(float)) == 0, "the repacked copy's logits differ");
    free(a);
    free(b);
    free(c);
    remove(out);
}

/* The int8 layouts across paths (issue 30): a copy packed on any path
 * loads on any other this CPU runs with the same bits; the NEON paths but
 * i8mm map the VNNI quads as they are (one layout, x86-64 or aarch64), and
 * i8mm's octs are packed again at load elsewhere, silently. On x86-64 the
 * loop is the portable paths'; under qemu -cpu max every NEON one. */
Test(packed, int8_copies_load_on_every_path_with_the_same_bits, .timeout = 600) {
    static const char *const ISAS[] = {"generic", "vnni-reference", "neon", "neon-dotprod",
                                       "neon-i8mm"};
    const size_t count = sizeof ISAS / sizeof *ISAS;
    const char *name = "timm_d128_h2";
    float *want = NULL;
    size_t n = 0;
    for (size_t p = 0; p < count; p++) {
        kernels_isa packed_isa, isa;
        base_error err;
        if (kernels_isa_choose(ISAS[p], &packed_isa, &err) != BASE_OK) continue;
        const vit_load_options packer = {.isa = ISAS[p]};
        char out[512];
        tmp_path(out, sizeof out, name, ISAS[p]);
        vit_model *m;
        cr_assert(vit_model_load(FIXTURES "timm_d128_h2", &packer, &m, &err) == BASE_OK, "%s",
                  err.message);
        cr_assert(vit_model_quantize(m, WEIGHTS_QUANT_INT8, 1, out, &err) == BASE_OK, "%s", err.message);
        vit_model_free(m);
        for (size_t l = 0; l < count; l++) {
            if (kernels_isa_choose(ISAS[l], &isa, &err) != BASE_OK) continue;
            const vit_load_options loader = {.isa = ISAS[l]};
            float *got;
            char notes[1024];
            n = forward(name, out, &loader, &got, notes, sizeof notes);
            cr_expect(strstr(notes, "packed for another") == NULL, "%s on %s: %s", ISAS[p],
                      ISAS[l], notes);
            if (!want) want = got;
            else {
                cr_expect(memcmp(got, want, n * sizeof(float)) == 0,
                          "packed on %s, run on %s: other logits", ISAS[p], ISAS[l]);
                free(got);
            }
            if (strcmp(kernels_qmatrix_layout(isa), kernels_qmatrix_layout(packed_isa)) == 0) {
                vit_model *loaded;
                cr_assert(vit_model_load(out, &loader, &loaded, &err) == BASE_OK, "%s", err.message);
                cr_expect(strcmp(vit_model_packing(loaded), "mapped from the file") == 0,
                          "packed on %s, loaded on %s (one layout): %s", ISAS[p], ISAS[l],
                          vit_model_packing(loaded));
                vit_model_free(loaded);
            }
        }
        remove(out);
    }
    free(want);
}

Test(packed, a_part_that_does_not_fit_its_layout_refuses_the_load) {
    const char *name = "hf_vit_d48_h3";
    char out[512], bad[512], args[2048];
    tmp_path(out, sizeof out, name, "int8");
    tmp_path(bad, sizeof bad, name, "bad");
    snprintf(args, sizeof args, "quantize -m " FIXTURES "%s -o %s --dtype int8", name, out);
    cr_assert_eq(run(args)->status, 0);
    static const char *const PARTS[] = {PREFIX "blocks.0.fc1.0", PREFIX "blocks.0.proj.0",
                                        PREFIX "patch.0"};
    for (size_t i = 0; i < sizeof PARTS / sizeof *PARTS; i++) {
        strip(out, bad, PARTS[i]);
        base_error err;
        vit_model *m = NULL;
        cr_expect_eq(vit_model_load(bad, NULL, &m, &err), BASE_E_FORMAT, "%s", PARTS[i]);
        cr_expect(strstr(err.message, "packed matrix"), "%s", err.message);
        vit_model_free(m);
    }
    /* An int8 weight packing cannot write, on the C paths (which check):
     * the high byte of an int16 pair out of -127..127 (generic), or a
     * quad's byte no longer its column sum's (vnni-reference). */
    static const char *const ISAS[] = {"generic", "vnni-reference"};
    for (size_t i = 0; i < 2; i++) {
        const vit_load_options on = {.isa = ISAS[i]};
        base_error err;
        vit_model *m;
        cr_assert(vit_model_load(FIXTURES "hf_vit_d48_h3", &on, &m, &err) == BASE_OK, "%s", err.message);
        cr_assert(vit_model_quantize(m, WEIGHTS_QUANT_INT8, 1, out, &err) == BASE_OK, "%s", err.message);
        vit_model_free(m);
        flip(out, bad, PREFIX "blocks.0.fc1.0", 1);
        m = NULL;
        cr_expect_eq(vit_model_load(bad, &on, &m, &err), BASE_E_FORMAT, "%s: a flipped weight loads",
                     ISAS[i]);
        cr_expect(strstr(err.message, "packed matrix 'blocks.0.fc1'"), "%s", err.message);
        vit_model_free(m);
    }
    remove(out);
    remove(bad);
}

/* A packed file handed over in memory at an address that is not 64-byte
 * aligned (vit_model_load_memory) loads, packed at load, with the bits of
 * the same file mapped. */
Test(packed, unaligned_in_memory_packs_at_load) {
    const char *name = "timm_d128_h2";
    char out[512], args[2048];
    tmp_path(out, sizeof out, name, "memory");
    snprintf(args, sizeof args, "quantize -m " FIXTURES "%s -o %s --dtype int8", name, out);
    cr_assert_eq(run(args)->status, 0);
    FILE *f = fopen(out, "rb");
    cr_assert(f);
    fseek(f, 0, SEEK_END);
    const long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buffer = malloc((size_t)size + 8); /* 16-aligned, so buffer + 8 is not 64- */
    cr_assert_eq(fread(buffer + 8, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    base_error err;
    vit_model *m;
    cr_assert(vit_model_load_memory(buffer + 8, (size_t)size, "packed", NULL, NULL, NULL, &m, &err) ==
                  BASE_OK, "%s", err.message);
    cr_expect_str_eq(vit_model_packing(m), "packed at load");
    vit_model_free(m);
    free(buffer);
    remove(out);
}
