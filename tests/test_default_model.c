/* The default model (weights/README.md): the int8 copy of timm's ViT-Ti/16
 * AugReg checkpoint that every command uses without -m. It labels the
 * shipped sample photo, and (with ../shared) its top-1 matches the float32
 * checkpoint's on the shared photos. */
#include "test_util.h"

#include <sys/stat.h>

#define SHARED VITC_SOURCE_DIR "/../shared"
#define FP32 SHARED "/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
#define SAMPLE VITC_SOURCE_DIR "/data/samples/chelsea.png"

/* Without -m: the shipped ImageNet model, named by info. */
Test(default_model, is_the_shipped_imagenet_vit_tiny) {
    run_result *r = run("info");
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->out, "weights/vit-tiny-augreg-int8.safetensors"), "%s", r->out);
    cr_expect(strstr(r->out, "1000 classes"), "%s", r->out);
    cr_expect(strstr(r->out, "int8 layers"), "%s", r->out);
}

/* The README's first command: the sample photo (a tabby, "chelsea" from
 * scikit-image) is a cat, Egyptian cat first. */
Test(default_model, classifies_the_sample_photo) {
    run_result *r = run("classify -k 3 " SAMPLE);
    cr_assert_eq(r->status, 0, "%s", r->err);
    const char *first = strchr(r->out, '\n');
    cr_assert(first, "%s", r->out);
    cr_expect(strstr(first, "Egyptian cat (285)") && strstr(first, "Egyptian cat (285)") <
                                                         strstr(first, "tiger cat (282)"),
              "%s", r->out);
    cr_expect(strstr(r->out, "tabby, tabby cat (281)"), "%s", r->out);
}

/* The Fashion-MNIST model stays shipped and is one -m away. */
Test(default_model, fashion_mnist_model_by_m) {
    run_result *r = run("classify -k 1 -m " VITC_SOURCE_DIR "/weights/fashion-mnist-vit.safetensors "
                        VITC_SOURCE_DIR "/data/samples/ankle-boot-0000.png");
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->out, "Ankle boot"), "%s", r->out);
}

enum { MAX_ROWS = 600 };
#ifdef __SANITIZE_ADDRESS__
/* The sanitizer build checks memory, not accuracy: the everyday photos only. */
#define REAL_INPUTS SHARED "/images"
#define MIN_REAL_IMAGES 9
#else
#define REAL_INPUTS SHARED "/imagenet-sample " SHARED "/images"
#define MIN_REAL_IMAGES 509
#endif

/* path,top-1 of each row of `vit classify -k 1 --format csv` output. */
static int rows(const char *csv, char (*paths)[256], int *top1) {
    int n = 0;
    for (const char *line = strchr(csv, '\n'); line && line[1] && n < MAX_ROWS;
         line = strchr(line + 1, '\n')) {
        const char *comma = strchr(line + 1, ',');
        cr_assert(comma, "bad CSV row");
        snprintf(paths[n], sizeof paths[n], "%.*s", (int)(comma - line - 1), line + 1);
        top1[n++] = atoi(comma + 1);
    }
    return n;
}

/* On the 509 shared photos the default (int8) model's top-1 is float32's
 * on all but two, both near ties (measured; the same on every CPU and path
 * since vitc's own GEMM gives the same bits everywhere): int8 gives
 * n04505470_typewriter_keyboard.JPEG the true class 878 (50.9% against
 * 49.0%) where float32 says 810 (space bar, 50.3% against 49.6%), and
 * n12267677_acorn.JPEG 995 (30.5% against 29.9%) where float32 says 993
 * (30.3% against 29.2%). n02979186_cassette_player.JPEG is the next
 * nearest (int8 17.40% against 17.24%, the same order as float32's) and
 * did flip with earlier rounding; it is allowed too. On OpenBLAS, int8
 * agreed on all but the typewriter with Haswell's sgemm kernel and
 * differed on the acorn too with SkylakeX's. */
static int known_near_tie(const char *path) {
    return strstr(path, "n04505470_typewriter_keyboard") || strstr(path, "n02979186_cassette_player") ||
           strstr(path, "n12267677_acorn");
}

Test(default_model, top1_matches_float32_on_shared_photos, .timeout = 600) {
    struct stat st;
    if (stat(FP32, &st) != 0 || stat(SHARED "/imagenet-sample", &st) != 0 ||
        stat(SHARED "/images", &st) != 0)
        cr_skip_test("../shared is absent: default-model agreement with float32 skipped");
    static char paths_a[MAX_ROWS][256], paths_b[MAX_ROWS][256];
    static int a[MAX_ROWS], b[MAX_ROWS];
    run_result *r = run("classify -q -k 1 --format csv " REAL_INPUTS);
    cr_assert_eq(r->status, 0, "%s", r->err);
    const int n = rows(r->out, paths_a, a);
    r = run("classify -q -k 1 --format csv -m " FP32 " " REAL_INPUTS);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_assert_eq(rows(r->out, paths_b, b), n);
    cr_assert_geq(n, MIN_REAL_IMAGES, "%d photos", n);
    int differ = 0;
    for (int i = 0; i < n; i++) {
        cr_assert_str_eq(paths_a[i], paths_b[i]);
        if (a[i] == b[i]) continue;
        differ++;
        fprintf(stderr, "test_default_model: %s: int8 %d, float32 %d\n", paths_a[i], a[i], b[i]);
        cr_expect(known_near_tie(paths_a[i]), "%s: int8 top-1 %d, float32 %d", paths_a[i], a[i], b[i]);
    }
    cr_expect_leq(differ, 2, "top-1 differs from float32 on %d of %d photos", differ, n);
}
