/* Models by Hugging Face Hub name (issue 17, part 1): -m org/name is found
 * in the cache huggingface_hub fills ($HF_HUB_CACHE, else $HF_HOME/hub,
 * else ~/.cache/huggingface/hub), at refs/main or --revision. Each test
 * builds a cache tree in a temporary directory the way the Hub client lays
 * it out (blobs named by checksum, snapshots/COMMIT/ symlinks into
 * ../../blobs/, refs/BRANCH holding the commit) from the small test models.
 * No network. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hub_cache.h"
#include "test_util.h"

#define FIXTURES VITC_SOURCE_DIR "/tests/fixtures/parity/"
#define MAIN_MODEL FIXTURES "hf_vit_d48_h3"        /* ViT, 5 classes "class zero".. */
#define V2_MODEL FIXTURES "hf_deit_plain_d32_h2"   /* DeiT, 4 classes "label 0".. */
#define PHOTO VITC_SOURCE_DIR "/tests/fixtures/real/apple.png"
#define COMMIT_MAIN "0123456789abcdef0123456789abcdef01234567"
#define COMMIT_V2 "fedcba9876543210fedcba9876543210fedcba98"

TEMP_DIR_SUITE(hfcache);

/* Puts model directory src into the cache at root as snapshot commit. */
static void add_snapshot(const char *root, const char *repo, const char *commit, const char *src) {
    shell("cd '%s' && mkdir -p %s/blobs %s/refs %s/snapshots/%s && "
          "for f in model.safetensors config.json; do "
          "h=$(sha256sum '%s'/$f | cut -d' ' -f1) && cp '%s'/$f %s/blobs/$h && "
          "ln -s ../../blobs/$h %s/snapshots/%s/$f; done",
          root, repo, repo, repo, commit, src, src, repo, repo, commit);
}

static void set_ref(const char *root, const char *repo, const char *ref, const char *commit) {
    shell("printf %%s %s > '%s/%s/refs/%s'", commit, root, repo, ref); /* no newline, as the Hub */
}

/* dir/hub: acme/tiny-vit with main -> MAIN_MODEL and v2 -> V2_MODEL. */
static void make_cache(void) {
    char root[128];
    snprintf(root, sizeof root, "%s/hub", dir);
    shell("mkdir -p '%s'", root);
    add_snapshot(root, "models--acme--tiny-vit", COMMIT_MAIN, MAIN_MODEL);
    add_snapshot(root, "models--acme--tiny-vit", COMMIT_V2, V2_MODEL);
    set_ref(root, "models--acme--tiny-vit", "main", COMMIT_MAIN);
    set_ref(root, "models--acme--tiny-vit", "v2", COMMIT_V2);
}

static void use_hub_cache(void) {
    char root[128];
    snprintf(root, sizeof root, "%s/hub", dir);
    cr_assert(setenv("HF_HUB_CACHE", root, 1) == 0);
    unsetenv("HF_HOME");
}

Test(hfcache, names) {
    cr_assert(hub_cache_is_name("facebook/deit-tiny-patch16-224"));
    cr_assert(hub_cache_is_name("timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"));
    cr_assert(!hub_cache_is_name("model.safetensors"));
    cr_assert(!hub_cache_is_name("./a/b"));
    cr_assert(!hub_cache_is_name("../a"));
    cr_assert(!hub_cache_is_name("/a/b"));
    cr_assert(!hub_cache_is_name("a/b/c"));
    cr_assert(!hub_cache_is_name("a/"));
    cr_assert(!hub_cache_is_name("/b"));
    cr_assert(!hub_cache_is_name(""));
}

Test(hfcache, cache_dir_order) {
    char out[4096];
    cr_assert(setenv("HF_HUB_CACHE", "/x/hub-cache", 1) == 0);
    cr_assert(setenv("HF_HOME", "/y/home", 1) == 0);
    cr_assert(setenv("HOME", "/z", 1) == 0);
    cr_assert(hub_cache_dir(out, sizeof out, NULL) == BASE_OK);
    cr_assert_str_eq(out, "/x/hub-cache");
    unsetenv("HF_HUB_CACHE");
    cr_assert(hub_cache_dir(out, sizeof out, NULL) == BASE_OK);
    cr_assert_str_eq(out, "/y/home/hub");
    unsetenv("HF_HOME");
    cr_assert(hub_cache_dir(out, sizeof out, NULL) == BASE_OK);
    cr_assert_str_eq(out, "/z/.cache/huggingface/hub");
}

Test(hfcache, revision_names_are_path_components) {
    make_cache();
    use_hub_cache();
    char out[4096];
    base_error err;
    const char *bad[] = {"..", "../x", "a/../b", "/main", "a//b", "main/", "."};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(hub_cache_resolve("acme/tiny-vit", bad[i], out, sizeof out, &err), BASE_E_ARG,
                     "revision '%s'", bad[i]);
    cr_assert_eq(hub_cache_resolve("acme/tiny-vit", NULL, out, sizeof out, &err), BASE_OK, "%s",
                 err.message);
    cr_assert(strstr(out, "/models--acme--tiny-vit/snapshots/" COMMIT_MAIN), "%s", out);
}

Test(hfcache, info_from_hf_hub_cache) {
    make_cache();
    use_hub_cache();
    run_result *r = run("info -m acme/tiny-vit");
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_assert(strstr(r->out, "models--acme--tiny-vit/snapshots/" COMMIT_MAIN "/model.safetensors"),
              "%s", r->out);
    cr_assert(strstr(r->out, "Hugging Face ViT"), "%s", r->out);
    cr_assert(strstr(r->out, "5 classes"), "%s", r->out);
}

Test(hfcache, info_from_hf_home) {
    make_cache();
    unsetenv("HF_HUB_CACHE");
    cr_assert(setenv("HF_HOME", dir, 1) == 0); /* dir/hub */
    run_result *r = run("info -m acme/tiny-vit");
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_assert(strstr(r->out, "snapshots/" COMMIT_MAIN "/model.safetensors"), "%s", r->out);
}

Test(hfcache, info_from_home_cache) {
    char root[128];
    snprintf(root, sizeof root, "%s/.cache/huggingface/hub", dir);
    shell("mkdir -p '%s'", root);
    add_snapshot(root, "models--acme--tiny-vit", COMMIT_MAIN, MAIN_MODEL);
    set_ref(root, "models--acme--tiny-vit", "main", COMMIT_MAIN);
    unsetenv("HF_HUB_CACHE");
    unsetenv("HF_HOME");
    cr_assert(setenv("HOME", dir, 1) == 0);
    run_result *r = run("info -m acme/tiny-vit");
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_assert(strstr(r->out, "snapshots/" COMMIT_MAIN "/model.safetensors"), "%s", r->out);
}

Test(hfcache, classify_by_name) {
    make_cache();
    use_hub_cache();
    run_result *r = run("classify -q -k 1 --format csv -m acme/tiny-vit " PHOTO);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_assert(strstr(r->out, "apple.png"), "%s", r->out);
    cr_assert(strstr(r->out, "class "), "labels of the main snapshot's config.json: %s", r->out);
}

Test(hfcache, revision_by_ref_and_by_commit) {
    make_cache();
    use_hub_cache();
    run_result *r = run("info -m acme/tiny-vit --revision v2");
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_assert(strstr(r->out, "snapshots/" COMMIT_V2 "/model.safetensors"), "%s", r->out);
    cr_assert(strstr(r->out, "4 classes"), "%s", r->out);
    r = run("classify -q -k 1 --format csv -m acme/tiny-vit --revision v2 " PHOTO);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_assert(strstr(r->out, "label "), "labels of the v2 snapshot: %s", r->out);
    r = run("info -m acme/tiny-vit --revision=" COMMIT_V2);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_assert(strstr(r->out, "snapshots/" COMMIT_V2 "/model.safetensors"), "%s", r->out);
    r = run("info -m acme/tiny-vit --revision main");
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_assert(strstr(r->out, "snapshots/" COMMIT_MAIN "/model.safetensors"), "%s", r->out);
}

Test(hfcache, missing_name_says_where_and_what_to_run) {
    make_cache();
    use_hub_cache();
    run_result *r = run("classify -m acme/absent " PHOTO);
    cr_assert_eq(r->status, 1);
    cr_assert_str_empty(r->out);
    cr_assert_eq(count_lines(r->err), 1, "%s", r->err);
    cr_assert(strstr(r->err, "acme/absent"), "%s", r->err);
    cr_assert(strstr(r->err, "models--acme--absent"), "%s", r->err);
    char where[128];
    snprintf(where, sizeof where, "%s/hub", dir);
    cr_assert(strstr(r->err, where), "names the cache directory: %s", r->err);
    cr_assert(strstr(r->err, "scripts/get-model acme/absent"), "%s", r->err);
}

Test(hfcache, missing_revision) {
    make_cache();
    use_hub_cache();
    run_result *r = run("info -m acme/tiny-vit --revision nope");
    cr_assert_eq(r->status, 1);
    cr_assert_eq(count_lines(r->err), 1, "%s", r->err);
    cr_assert(strstr(r->err, "refs/nope"), "%s", r->err);
    cr_assert(strstr(r->err, "scripts/get-model acme/tiny-vit --revision nope"), "%s", r->err);
}

Test(hfcache, ref_to_a_missing_snapshot) {
    make_cache();
    use_hub_cache();
    char root[128];
    snprintf(root, sizeof root, "%s/hub", dir);
    set_ref(root, "models--acme--tiny-vit", "gone", "1111111111111111111111111111111111111111");
    run_result *r = run("info -m acme/tiny-vit --revision gone");
    cr_assert_eq(r->status, 1);
    cr_assert_eq(count_lines(r->err), 1, "%s", r->err);
    cr_assert(strstr(r->err, "1111111111111111111111111111111111111111"), "%s", r->err);
}

Test(hfcache, existing_relative_path_wins) {
    make_cache();
    use_hub_cache();
    /* ./acme/tiny-vit holds the other model: it is what -m names. */
    shell("mkdir -p '%s/acme/tiny-vit' && cp %s/model.safetensors %s/config.json '%s/acme/tiny-vit/'",
          dir, V2_MODEL, V2_MODEL, dir);
    cr_assert(chdir(dir) == 0);
    run_result *r = run("info -m acme/tiny-vit");
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_assert(strstr(r->out, "file          acme/tiny-vit/model.safetensors"), "%s", r->out);
    cr_assert(strstr(r->out, "4 classes"), "%s", r->out);
    /* --revision belongs to hub names only. */
    r = run("info -m acme/tiny-vit --revision v2");
    cr_assert_eq(r->status, 1);
    cr_assert(strstr(r->err, "--revision"), "%s", r->err);
}

Test(hfcache, revision_without_a_hub_name) {
    run_result *r = run("info -m " MAIN_MODEL " --revision main");
    cr_assert_eq(r->status, 1);
    cr_assert_eq(count_lines(r->err), 1, "%s", r->err);
    cr_assert(strstr(r->err, "--revision"), "%s", r->err);
}

/* Issue 24: refs/ is read as image files are: a FIFO there (no writer)
 * hung `vit info -m org/name --revision fifo` in open(2) forever; a device
 * or an oversized file is no ref either. Each is one error naming it. */
Test(hfcache, refs_that_are_not_small_regular_files_are_errors, .timeout = 60) {
    make_cache();
    use_hub_cache();
    char root[128], path[4096];
    snprintf(root, sizeof root, "%s/hub/models--acme--tiny-vit/refs", dir);
    shell("cd '%s' && mkfifo fifo && ln -s /dev/zero zero && head -c 5000 /dev/zero | tr '\\0' a >big",
          root);
    const char *const cases[][2] = {{"fifo", "not a regular file (a FIFO)"},
                                    {"zero", "not a regular file (a character device)"},
                                    {"big", "5000 bytes"}};
    for (int i = 0; i < 3; i++) {
        base_error err = {0};
        cr_expect_neq(hub_cache_resolve("acme/tiny-vit", cases[i][0], path, sizeof path, &err), BASE_OK,
                      "%s resolved", cases[i][0]);
        cr_expect(strstr(err.message, cases[i][1]) && strstr(err.message, cases[i][0]), "%s: %s",
                  cases[i][0], err.message);
    }
    run_result *r = run("info -m acme/tiny-vit --revision fifo");
    cr_expect_eq(r->status, 1);
    cr_expect(count_lines(r->err) == 1 && strstr(r->err, "refs/fifo: not a regular file"), "%s", r->err);
    /* refs/pr/ is a directory: asked for "pr", there is no such ref. */
    shell("mkdir -p '%s/pr'", root);
    cr_expect_eq(hub_cache_resolve("acme/tiny-vit", "pr", path, sizeof path, NULL), BASE_E_IO);
}
