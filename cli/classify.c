/* vit classify: top-k labels for image files. */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum { OPT_MODEL, OPT_TOPK, OPT_THREADS, OPT_SIZE, OPT_LABELS, OPT_FORMAT, OPT_BATCH,
       OPT_POS_RESAMPLE, NUM_OPTS };

static const cli_option OPTIONS[NUM_OPTS] = {
    [OPT_MODEL] = {"model", 'm', 1, "PATH", "model directory or .safetensors file"},
    [OPT_TOPK] = {"top-k", 'k', 1, "N", "labels to print per image (default 5)"},
    [OPT_THREADS] = {"threads", 't', 1, "N", "threads (default: all cores)"},
    [OPT_SIZE] = {"size", 0, 1, "S", "input size, position embeddings resampled (default: native)"},
    [OPT_LABELS] = {"labels", 0, 1, "FILE", "class labels, one per line"},
    [OPT_FORMAT] = {"format", 0, 1, "FMT", "text or json (default text)"},
    [OPT_BATCH] = {"batch", 'b', 1, "N", "images per forward pass (default 8)"},
    [OPT_POS_RESAMPLE] = CLI_POS_RESAMPLE_OPTION,
};

static const char USAGE[] =
    "usage: vit classify -m MODEL [options] IMAGE...\n"
    "\n"
    "Prints the top-k labels and probabilities of each image. Exit status: 0 all\n"
    "images classified, 2 some images failed (each named on stderr), 1 fatal error.";

typedef struct classify_output {
    const vit_model *model;
    int top_k, json, printed_any;
} classify_output;

static void print_text(const classify_output *o, const char *path, const float *probs) {
    int top[1000];
    const int n = vit_top_k(probs, vit_model_output_size(o->model), o->top_k, top);
    printf("%s\n", path);
    for (int i = 0; i < n; i++) {
        const char *label = vit_model_label(o->model, top[i]);
        printf("  %6.2f%%  %s (%d)\n", 100.0 * probs[top[i]], label ? label : "class", top[i]);
    }
}

static void print_json(classify_output *o, const char *path, const float *probs,
                       const char *error) {
    cJSON *obj = cJSON_CreateObject();
    cJSON_AddStringToObject(obj, "file", path);
    if (error) {
        cJSON_AddStringToObject(obj, "error", error);
    } else {
        int top[1000];
        const int n = vit_top_k(probs, vit_model_output_size(o->model), o->top_k, top);
        cJSON *list = cJSON_AddArrayToObject(obj, "top");
        for (int i = 0; i < n; i++) {
            cJSON *item = cJSON_CreateObject();
            const char *label = vit_model_label(o->model, top[i]);
            cJSON_AddNumberToObject(item, "index", top[i]);
            if (label) cJSON_AddStringToObject(item, "label", label);
            cJSON_AddNumberToObject(item, "probability", probs[top[i]]);
            cJSON_AddItemToArray(list, item);
        }
    }
    char *text = cJSON_PrintUnformatted(obj);
    printf("%s%s", o->printed_any ? ",\n" : "[\n", text ? text : "{}");
    o->printed_any = 1;
    free(text);
    cJSON_Delete(obj);
}

int cli_classify(int argc, char **argv) {
    cli_args args;
    int parsed = cli_parse("classify", USAGE, OPTIONS, NUM_OPTS, argc, argv, &args);
    if (parsed != 0) {
        free(args.positional);
        return parsed > 0 ? CLI_EXIT_OK : CLI_EXIT_FATAL;
    }
    int exit_code = CLI_EXIT_FATAL;
    vit_model *model = NULL;
    cli_batch batch_run = {0};
    long top_k = 5, threads = 0, size = 0, batch = 8;
    if ((args.values[OPT_TOPK] && cli_int("classify", "-k", args.values[OPT_TOPK], 1, 1000, &top_k)) ||
        (args.values[OPT_THREADS] && cli_int("classify", "-t", args.values[OPT_THREADS], 1, 1024, &threads)) ||
        (args.values[OPT_SIZE] && cli_int("classify", "--size", args.values[OPT_SIZE], 1, 8192, &size)) ||
        (args.values[OPT_BATCH] && cli_int("classify", "-b", args.values[OPT_BATCH], 1, 1024, &batch)))
        goto done;
    const char *format = args.values[OPT_FORMAT] ? args.values[OPT_FORMAT] : "text";
    if (strcmp(format, "text") != 0 && strcmp(format, "json") != 0) {
        fprintf(stderr, "vit classify: --format expects text or json, got '%s'\n", format);
        goto done;
    }
    if (args.num_positional == 0) {
        fprintf(stderr, "vit classify: no images given (see 'vit classify -h')\n");
        goto done;
    }
    cli_set_threads((int)threads);
    model = cli_load_model("classify", args.values[OPT_MODEL], args.values[OPT_LABELS],
                           args.values[OPT_POS_RESAMPLE]);
    if (!model) goto done;
    if (batch > args.num_positional) batch = args.num_positional;
    if (cli_batch_init(&batch_run, model, (int)batch, (int)size, "classify") != 0) goto done;

    classify_output out = {.model = model, .top_k = (int)top_k, .json = strcmp(format, "json") == 0};
    int failed = 0;
    for (int start = 0; start < args.num_positional; start += (int)batch) {
        const char *const *paths = args.positional + start;
        int count = args.num_positional - start;
        if (count > batch) count = (int)batch;
        cli_batch_run(&batch_run, paths, count);
        for (int i = 0; i < count; i++) {
            const float *probs = cli_batch_output(&batch_run, i);
            if (!probs) {
                failed++;
                fprintf(stderr, "vit classify: %s\n", batch_run.errors[i].message);
                if (out.json) print_json(&out, paths[i], NULL, batch_run.errors[i].message);
            } else if (out.json) {
                print_json(&out, paths[i], probs, NULL);
            } else {
                print_text(&out, paths[i], probs);
            }
        }
        fflush(stdout);
    }
    if (out.json) printf("%s]\n", out.printed_any ? "\n" : "[\n");
    exit_code = failed ? CLI_EXIT_SOME_FAILED : CLI_EXIT_OK;

done:
    cli_batch_free(&batch_run);
    vit_model_free(model);
    free(args.positional);
    return exit_code;
}
