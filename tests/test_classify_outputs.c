/* The outputs users ask for: classify --all-classes (CSV, JSONL, .npy)
 * against PyTorch's logits for the real checkpoints (tests/fixtures/real,
 * tests/gen_real_reference.py), its probabilities against the top-k rows,
 * --format hf against the CSV rows, --resume refusals, the wording of the
 * summary line, and features --pool / --l2 end to end (their numbers are
 * checked against PyTorch in test_inspect.c). */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_util.h"
#include "vit.h"

#define SHARED VITC_SOURCE_DIR "/../shared"
#define DEIT SHARED "/models/deit-tiny-patch16-224"
#define REAL VITC_SOURCE_DIR "/tests/fixtures/real"
#define SMALL VITC_SOURCE_DIR "/tests/fixtures/parity/hf_vit_d48_h3"
#define CLASSES 1000
/* As tests/test_real.c: PIL-decoded PNGs, only our resampling and the
 * network between us and PyTorch. */
#define LOGIT_TOLERANCE 2e-3f

TEMP_DIR_SUITE(outputs_formats);

/* A whole file (malloc'd, NUL-terminated); the test fails if it cannot be read. */
static char *read_all(const char *path, size_t *size) {
    FILE *fp = fopen(path, "rb");
    cr_assert(fp, "cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    const long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    cr_assert(fread(text, 1, (size_t)n, fp) == (size_t)n);
    text[n] = '\0';
    fclose(fp);
    if (size) *size = (size_t)n;
    return text;
}

/* The records of a CSV file: rows[r][f] (at most max_rows). */
typedef struct csv_table {
    size_t rows, columns[8];
    char **cell[8];
} csv_table;

static void read_csv(const char *path, csv_table *t) {
    size_t size;
    char *text = read_all(path, &size);
    data_csv csv;
    data_csv_init(&csv, text, size);
    base_error err;
    int got;
    memset(t, 0, sizeof *t);
    while (data_csv_next(&csv, path, &got, &err) == BASE_OK && got) {
        cr_assert(t->rows < 8);
        t->columns[t->rows] = csv.num_fields;
        t->cell[t->rows] = malloc(csv.num_fields * sizeof(char *));
        for (size_t f = 0; f < csv.num_fields; f++) t->cell[t->rows][f] = strdup(csv.fields[f]);
        t->rows++;
    }
    data_csv_free(&csv);
    free(text);
}

/* A float32 .npy: its shape (ndim written) and data (malloc'd). */
static float *read_npy(const char *path, int64_t *shape, int *ndim) {
    size_t size;
    char *bytes = read_all(path, &size);
    cr_assert(size > 10 && memcmp(bytes, "\x93NUMPY", 6) == 0, "%s is not a .npy", path);
    const size_t header = 10 + (size_t)(unsigned char)bytes[8] + 256 * (size_t)(unsigned char)bytes[9];
    cr_assert(strstr(bytes + 10, "'descr': '<f4'"), "%s: not float32", path);
    const char *s = strstr(bytes + 10, "'shape': (");
    cr_assert(s);
    s += strlen("'shape': (");
    *ndim = 0;
    size_t numel = 1;
    while (*s != ')') {
        char *end;
        shape[*ndim] = strtoll(s, &end, 10);
        numel *= (size_t)shape[(*ndim)++];
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    cr_assert_eq(size, header + numel * sizeof(float), "%s: %zu bytes", path, size);
    float *data = malloc(numel * sizeof(float));
    memcpy(data, bytes + header, numel * sizeof(float));
    free(bytes);
    return data;
}

/* PyTorch's logits of png:apple.png and png:polars.png (rows of the real
 * fixture), into want[2][CLASSES]. */
static void reference_logits(const char *model, float *want) {
    char path[1024];
    snprintf(path, sizeof path, REAL "/%s.safetensors", model);
    weights_file *ref;
    base_error err;
    cr_assert(weights_open(path, &ref, &err) == BASE_OK, "%s", err.message);
    float *all = tensor_f32(ref, "logits", NULL);
    char images[4096];
    snprintf(images, sizeof images, "%s", weights_metadata(ref, "images"));
    int row = 0, found = 0;
    for (char *name = strtok(images, ","); name; name = strtok(NULL, ","), row++) {
        const int which = strcmp(name, "png:apple.png") == 0 ? 0 : strcmp(name, "png:polars.png") == 0 ? 1 : -1;
        if (which < 0) continue;
        memcpy(want + (size_t)which * CLASSES, all + (size_t)row * CLASSES, CLASSES * sizeof(float));
        found++;
    }
    cr_assert_eq(found, 2, "the fixture lacks the PNG rows");
    free(all);
    weights_close(ref);
}

static void softmax_double(const float *logits, double *probs) {
    double max = logits[0], sum = 0.0;
    for (int c = 1; c < CLASSES; c++) max = logits[c] > max ? logits[c] : max;
    for (int c = 0; c < CLASSES; c++) sum += probs[c] = exp((double)logits[c] - max);
    for (int c = 0; c < CLASSES; c++) probs[c] /= sum;
}

static void require_shared(void) {
    struct stat st;
    if (stat(DEIT, &st) != 0) cr_skip_test("../shared/models is absent: real-checkpoint outputs not checked");
}

/* --all-classes logits (CSV and JSONL) and probs (.npy) against PyTorch;
 * the probabilities against the top-k CSV and --format hf against both. */
Test(outputs_formats, all_classes_match_pytorch, .timeout = 600) {
    require_shared();
    shell("cp %s/apple.png %s/polars.png %s/ && printf 'no image' >%s/bad.png", REAL, REAL, dir, dir);
    float want[2 * CLASSES];
    reference_logits("deit-tiny-patch16-224", want);
    char args[4096], path[1024];
    const char *images = "%s/apple.png %s/polars.png %s/bad.png";
    char inputs[1024];
    snprintf(inputs, sizeof inputs, images, dir, dir, dir);

    /* Logits, CSV: one column per class named by its label, then error. */
    snprintf(args, sizeof args, "classify -m " DEIT " %s --all-classes logits -o %s/l.csv", inputs, dir);
    run_result *r = run(args);
    cr_assert_eq(r->status, 2, "%s", r->err);
    cr_expect(strstr(r->err, "bad.png") && strstr(r->err, "3 files, 1 failed; load "), "%s", r->err);
    csv_table t;
    snprintf(path, sizeof path, "%s/l.csv", dir);
    read_csv(path, &t);
    cr_assert_eq(t.rows, 4);
    cr_assert_eq(t.columns[0], CLASSES + 2);
    cr_expect_str_eq(t.cell[0][0], "path");
    cr_expect_str_eq(t.cell[0][1], "tench, Tinca tinca");
    cr_expect_str_eq(t.cell[0][CLASSES + 1], "error");
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(t.columns[i + 1], CLASSES + 2);
        float worst = 0.0f;
        for (int c = 0; c < CLASSES; c++) {
            const float d = fabsf(strtof(t.cell[i + 1][c + 1], NULL) - want[i * CLASSES + c]);
            worst = d > worst || d != d ? d : worst;
        }
        cr_expect(worst <= LOGIT_TOLERANCE, "row %d: CSV logits differ from PyTorch by %g", i, worst);
        cr_expect_str_empty(t.cell[i + 1][CLASSES + 1]);
    }
    cr_expect_str_empty(t.cell[3][1]);
    cr_expect(strstr(t.cell[3][CLASSES + 1], "bad.png"), "%s", t.cell[3][CLASSES + 1]);

    /* The same as JSON Lines: the same numbers as the CSV, to the digit. */
    snprintf(args, sizeof args, "classify -m " DEIT " %s --all-classes logits -o %s/l.jsonl", inputs, dir);
    cr_assert_eq(run(args)->status, 2);
    snprintf(path, sizeof path, "%s/l.jsonl", dir);
    char *jsonl = read_all(path, NULL);
    char *line = strtok(jsonl, "\n");
    for (int i = 0; i < 3; i++, line = strtok(NULL, "\n")) {
        cr_assert(line);
        cJSON *obj = cJSON_Parse(line);
        const cJSON *logits = cJSON_GetObjectItemCaseSensitive(obj, "logits");
        if (i == 2) {
            cr_expect(cJSON_IsNull(logits));
            cr_expect(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(obj, "error")));
        } else {
            cr_assert_eq(cJSON_GetArraySize(logits), CLASSES);
            for (int c = 0; c < CLASSES; c++)
                cr_expect_eq((float)cJSON_GetArrayItem(logits, c)->valuedouble,
                             strtof(t.cell[i + 1][c + 1], NULL), "row %d class %d", i, c);
        }
        cJSON_Delete(obj);
    }
    free(jsonl);

    /* Probabilities as .npy: softmax of PyTorch's logits, rows sum to 1, a
     * failed image a row of NaN, OUT.files.jsonl names the rows. */
    snprintf(args, sizeof args, "classify -m " DEIT " %s --all-classes probs -o %s/p.npy", inputs, dir);
    r = run(args);
    cr_assert_eq(r->status, 2, "%s", r->err);
    cr_expect(strstr(r->err, "bad.png"), "%s", r->err);
    int64_t shape[4];
    int ndim;
    snprintf(path, sizeof path, "%s/p.npy", dir);
    float *probs = read_npy(path, shape, &ndim);
    cr_assert(ndim == 2 && shape[0] == 3 && shape[1] == CLASSES);
    for (int i = 0; i < 2; i++) {
        double expect[CLASSES], sum = 0.0, worst = 0.0;
        softmax_double(want + (size_t)i * CLASSES, expect);
        for (int c = 0; c < CLASSES; c++) {
            sum += probs[i * CLASSES + c];
            const double d = fabs(probs[i * CLASSES + c] - expect[c]);
            worst = d > worst ? d : worst;
        }
        cr_expect(fabs(sum - 1.0) < 1e-5, "row %d sums to %.8f", i, sum);
        cr_expect(worst <= LOGIT_TOLERANCE, "row %d: probabilities differ from PyTorch's by %g", i, worst);
    }
    for (int c = 0; c < CLASSES; c++) cr_expect(isnan(probs[2 * CLASSES + c]));
    snprintf(path, sizeof path, "%s/p.files.jsonl", dir);
    char names[4096], want_names[4096];
    slurp(path, names, sizeof names);
    snprintf(want_names, sizeof want_names, "\"%s/apple.png\"\n\"%s/polars.png\"\n\"%s/bad.png\"\n", dir, dir, dir);
    cr_expect_str_eq(names, want_names); /* rows are named by their paths, several given */
    snprintf(path, sizeof path, "%s/l.csv", dir);
    for (int i = 0; i < 2; i++) /* the probabilities are the softmax of the logits given */
        for (int c = 0; c < CLASSES; c += 97) {
            float row[CLASSES];
            for (int k = 0; k < CLASSES; k++) row[k] = strtof(t.cell[i + 1][k + 1], NULL);
            vit_softmax(row, CLASSES);
            cr_expect(fabsf(row[c] - probs[i * CLASSES + c]) < 1e-6f, "row %d class %d", i, c);
        }

    /* The top 5 CSV: each probability_k is the all-classes value of index_k. */
    snprintf(args, sizeof args, "classify -m " DEIT " %s -o %s/top.csv", inputs, dir);
    cr_assert_eq(run(args)->status, 2);
    csv_table top;
    snprintf(path, sizeof path, "%s/top.csv", dir);
    read_csv(path, &top);
    cr_assert_eq(top.rows, 4);
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 5; k++) {
            const int index = atoi(top.cell[i + 1][1 + 3 * k]);
            cr_expect_str_eq(top.cell[i + 1][2 + 3 * k], t.cell[0][index + 1], "label of top %d", k + 1);
            cr_expect(fabs(strtod(top.cell[i + 1][3 + 3 * k], NULL) - probs[i * CLASSES + index]) <= 5.1e-7,
                      "row %d top %d: %s against %.9g", i, k + 1, top.cell[i + 1][3 + 3 * k],
                      probs[i * CLASSES + index]);
        }

    /* --format hf: transformers' pipeline lists, in input order, the same
     * labels and scores as the CSV's top 5; a failed image gets []. */
    snprintf(args, sizeof args, "classify -m " DEIT " %s --format hf -o %s/hf.json", inputs, dir);
    cr_assert_eq(run(args)->status, 2);
    snprintf(path, sizeof path, "%s/hf.json", dir);
    char *text = read_all(path, NULL);
    cJSON *hf = cJSON_Parse(text);
    cr_assert(cJSON_IsArray(hf) && cJSON_GetArraySize(hf) == 3, "%s", text);
    for (int i = 0; i < 2; i++) {
        const cJSON *list = cJSON_GetArrayItem(hf, i);
        cr_assert_eq(cJSON_GetArraySize(list), 5);
        for (int k = 0; k < 5; k++) {
            const cJSON *item = cJSON_GetArrayItem(list, k);
            cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(item, "label")->valuestring, top.cell[i + 1][2 + 3 * k]);
            cr_expect_eq(cJSON_GetObjectItemCaseSensitive(item, "score")->valuedouble,
                         strtod(top.cell[i + 1][3 + 3 * k], NULL));
            cr_expect_eq(cJSON_GetArraySize(item), 2, "only label and score, as the pipeline");
        }
    }
    cr_expect(cJSON_IsArray(cJSON_GetArrayItem(hf, 2)) && cJSON_GetArraySize(cJSON_GetArrayItem(hf, 2)) == 0);
    snprintf(path, sizeof path, "%s/hf.files.jsonl", dir);
    slurp(path, names, sizeof names);
    snprintf(want_names, sizeof want_names, "\"%s/apple.png\"\n\"%s/polars.png\"\n\"%s/bad.png\"\n", dir, dir, dir);
    cr_expect_str_eq(names, want_names); /* rows are named by their paths, several given */
    cJSON_Delete(hf);
    free(text);
    free(probs);
}

/* On the small fixture model (no ../shared needed): probabilities of every
 * class against the top-k rows, hf-jsonl against CSV, resume refusals. */
Test(outputs_formats, all_classes_small_model_and_resume) {
    shell("mkdir -p %s/in && cp %s/apple.png %s/polars.png %s/in/", dir, REAL, REAL, dir);
    char args[4096], path[1024];
    snprintf(args, sizeof args, "classify -m " SMALL " %s/in --all-classes probs -o %s/p.csv", dir, dir);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    csv_table all, top;
    snprintf(path, sizeof path, "%s/p.csv", dir);
    read_csv(path, &all);
    cr_assert_eq(all.rows, 3);
    cr_assert_eq(all.columns[0], 7);
    cr_expect_str_eq(all.cell[0][1], "class zero"); /* the config's id2label */
    snprintf(args, sizeof args, "classify -m " SMALL " %s/in -o %s/top.csv", dir, dir);
    cr_assert_eq(run(args)->status, 0);
    snprintf(path, sizeof path, "%s/top.csv", dir);
    read_csv(path, &top);
    for (int i = 1; i <= 2; i++) {
        double sum = 0.0;
        for (int c = 1; c <= 5; c++) sum += strtod(all.cell[i][c], NULL);
        cr_expect(fabs(sum - 1.0) < 1e-5, "row %d sums to %.8f", i, sum);
        cr_expect_str_eq(all.cell[i][0], top.cell[i][0]);
        for (int k = 0; k < 5; k++) {
            const int index = atoi(top.cell[i][1 + 3 * k]);
            cr_expect(fabs(strtod(all.cell[i][1 + index], NULL) - strtod(top.cell[i][3 + 3 * k], NULL)) <= 5.1e-7);
        }
    }

    /* --resume: the same --all-classes continues (nothing left to do);
     * another, or none, is refused in one line; a .npy cannot resume. */
    snprintf(args, sizeof args, "classify -m " SMALL " %s/in --all-classes probs -o %s/p.csv --resume", dir, dir);
    r = run(args);
    cr_expect_eq(r->status, 0, "%s", r->err);
    snprintf(path, sizeof path, "vit classify: nothing to do: all 2 files already in %s/p.csv\n", dir);
    cr_expect_str_eq(r->err, path);
    /* A resume that had work left says how much was done before. */
    shell("head -n 2 %s/p.csv > %s/half.csv && cp %s/p.csv.run.json %s/half.csv.run.json", dir, dir,
          dir, dir);
    snprintf(args, sizeof args, "classify -m " SMALL " %s/in --all-classes probs -o %s/half.csv --resume", dir, dir);
    r = run(args);
    cr_expect_eq(r->status, 0, "%s", r->err);
    snprintf(path, sizeof path, "vit classify: 1 file, 0 failed; 1 more already in %s/half.csv; load ", dir);
    cr_expect(strncmp(r->err, path, strlen(path)) == 0, "%s", r->err);
    const char *refused[] = {"--all-classes logits -o {}/p.csv --resume", "-o {}/p.csv --resume",
                             "--all-classes probs -o {}/p.npy --resume"};
    const char *why[] = {"--all-classes", "--all-classes", "--resume"};
    for (int i = 0; i < 3; i++) {
        char rest[512];
        const char *brace = strstr(refused[i], "{}");
        snprintf(rest, sizeof rest, "%.*s%s%s", (int)(brace - refused[i]), refused[i], dir, brace + 2);
        snprintf(args, sizeof args, "classify -m " SMALL " %s/in %s", dir, rest);
        r = run(args);
        cr_expect_eq(r->status, 1, "%s: %s", rest, r->err);
        cr_expect_eq(count_lines(r->err), 1, "%s: %s", rest, r->err);
        cr_expect(strstr(r->err, why[i]), "%s: %s", rest, r->err);
    }
    /* Every class in text, or a .npy without --all-classes: refused. */
    snprintf(args, sizeof args, "classify -m " SMALL " %s/in --all-classes probs --format text", dir);
    cr_expect_eq(run(args)->status, 1);
    snprintf(args, sizeof args, "classify -m " SMALL " %s/in -o %s/x.npy", dir, dir);
    r = run(args);
    cr_expect(r->status == 1 && strstr(r->err, "--all-classes"), "%s", r->err);

    /* hf-jsonl: the path and the pipeline's list, the CSV's top 5. */
    snprintf(args, sizeof args, "classify -m " SMALL " %s/in --format hf-jsonl", dir);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    char *line = strtok(r->out, "\n");
    for (int i = 1; i <= 2; i++, line = strtok(NULL, "\n")) {
        cJSON *obj = cJSON_Parse(line);
        cr_assert(obj, "%s", line);
        cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(obj, "path")->valuestring, top.cell[i][0]);
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(obj, "predictions");
        cr_assert_eq(cJSON_GetArraySize(list), 5);
        for (int k = 0; k < 5; k++) {
            const cJSON *item = cJSON_GetArrayItem(list, k);
            cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(item, "label")->valuestring, top.cell[i][2 + 3 * k]);
            cr_expect_eq(cJSON_GetObjectItemCaseSensitive(item, "score")->valuedouble, strtod(top.cell[i][3 + 3 * k], NULL));
        }
        cJSON_Delete(obj);
    }
}

/* The summary line: timings when something ran, plain words when nothing
 * did, singular and plural right. */
Test(outputs_formats, summary_line_wording) {
    shell("printf 'no image' >%s/bad.png && cp %s/apple.png %s/", dir, REAL, dir);
    char args[2048], want[1024];
    snprintf(args, sizeof args, "classify -m " SMALL " %s/bad.png", dir);
    run_result *r = run(args);
    cr_expect_eq(r->status, 2);
    snprintf(want, sizeof want, "vit classify: %s/bad.png: not an image (unknown format)\n"
             "vit classify: 1 file, 1 failed: nothing classified\n", dir);
    cr_expect_str_eq(r->err, want);
    snprintf(args, sizeof args, "features -m " SMALL " %s/bad.png -o %s/f.npy", dir, dir);
    r = run(args);
    cr_expect(strstr(r->err, "vit features: 1 file, 1 failed: nothing computed\n"), "%s", r->err);
    snprintf(args, sizeof args, "classify -m " SMALL " %s/apple.png -o %s/one.csv", dir, dir);
    r = run(args);
    cr_expect(strstr(r->err, "vit classify: 1 file, 0 failed; load ") && strstr(r->err, " s, decode wait ") &&
              strstr(r->err, " s, forward ") && strstr(r->err, " images/s\n"), "%s", r->err);
    snprintf(args, sizeof args, "classify -m " SMALL " %s/apple.png -o %s/one.csv --resume", dir, dir);
    r = run(args);
    snprintf(want, sizeof want, "vit classify: nothing to do: the one file is already in %s/one.csv\n", dir);
    cr_expect_str_eq(r->err, want);
}

/* features --pool: the shapes, unit norms with --l2, NaN rows for failed
 * images; --pool cannot be mixed with --layer. */
Test(outputs_formats, features_pool_shapes_and_l2) {
    shell("cp %s/apple.png %s/polars.png %s/ && printf 'no image' >%s/bad.png", REAL, REAL, dir, dir);
    const char *pools[] = {"cls", "mean", "none"};
    for (int p = 0; p < 3; p++) {
        char args[2048], path[1024];
        snprintf(args, sizeof args, "features -m " SMALL " %s/apple.png %s/polars.png %s/bad.png --pool %s --l2 -o %s/f.npy",
                 dir, dir, dir, pools[p], dir);
        run_result *r = run(args);
        cr_assert_eq(r->status, 2, "%s", r->err);
        int64_t shape[4];
        int ndim;
        snprintf(path, sizeof path, "%s/f.npy", dir);
        float *a = read_npy(path, shape, &ndim);
        const int none = p == 2;
        cr_assert_eq(ndim, none ? 3 : 2, "--pool %s", pools[p]);
        cr_assert(shape[0] == 3 && shape[ndim - 1] == 48 && (!none || shape[1] == 17));
        const size_t per_image = none ? 17 * 48 : 48;
        for (size_t v = 0; v < 2 * per_image / 48; v++) {
            double ss = 0.0;
            for (int d = 0; d < 48; d++) ss += (double)a[v * 48 + d] * a[v * 48 + d];
            cr_expect(fabs(sqrt(ss) - 1.0) < 1e-5, "--pool %s vector %zu has norm %g", pools[p], v, sqrt(ss));
        }
        for (size_t i = 0; i < per_image; i++) cr_expect(isnan(a[2 * per_image + i]));
        free(a);
    }
    char args[1024];
    snprintf(args, sizeof args, "features -m " SMALL " %s/apple.png --pool cls --layer 0 -o %s/g.npy", dir, dir);
    run_result *r = run(args);
    cr_expect_eq(r->status, 1);
    cr_expect(count_lines(r->err) == 1 && strstr(r->err, "--layer"), "%s", r->err);
}
