/* vit quantize: a BF16, int8 or float32 copy of a checkpoint that every
 * command loads, its matrices packed for the kernels (vit/packed.c).
 * The copy is self-contained: config.json and preprocessor_config.json from
 * beside the source go into its __metadata__. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

enum { OPT_MODEL, OPT_REVISION, OPT_OUTPUT, OPT_DTYPE, OPT_PLAIN, OPT_ALLOW_UNUSED, NUM_OPTS };

static const cli_option OPTIONS[NUM_OPTS] = {
    [OPT_MODEL] = {"model", 'm', 1, "MODEL", CLI_MODEL_HELP},
    [OPT_REVISION] = CLI_REVISION_OPTION,
    [OPT_OUTPUT] = {"output", 'o', 1, "FILE", "the .safetensors file to write"},
    [OPT_DTYPE] = {"dtype", 0, 1, "bf16|int8|fp32|packed",
                   "bf16: every float tensor as BF16; int8: the encoder's linear layers as int8 "
                   "with one scale per 32 weights; fp32: every float tensor as float32; packed: "
                   "every tensor as stored. Each copy also holds its matrices packed for this "
                   "CPU's kernels, so it loads without packing"},
    [OPT_PLAIN] = {"plain", 0, 0, NULL,
                   "without the packed matrices: the smallest file, packed at every load"},
    [OPT_ALLOW_UNUSED] = CLI_ALLOW_UNUSED_OPTION,
};

static const char USAGE[] =
    "usage: vit quantize -m MODEL -o OUT.safetensors --dtype bf16|int8|fp32|packed\n"
    "                    [--plain]\n\n"
    "Writes a copy of a checkpoint, with its config, labels and preprocessing\n"
    "inside, so every command loads it, and its matrices packed for this CPU's\n"
    "kernels beside its tensors, so loading maps them instead of packing (the fast\n"
    "copy; a file packed for other kernels is packed again at load, with a line\n"
    "saying so; --plain leaves them out). bf16 stores the weights in half the\n"
    "size, int8 in about a third (the encoder's linear layers in int8, the rest\n"
    "float32); fp32 and packed keep the values. bf16 linear layers compute in\n"
    "bf16 (bf16 products, float32 sums: AVX-512 BF16 where the CPU has it, the\n"
    "same bits elsewhere); int8 layers compute in int8 (AVX-512 VNNI, AVX2 or\n"
    "portable C, as the CPU allows).";

static double file_mib(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (double)st.st_size / (1024.0 * 1024.0) : 0.0;
}

int cli_quantize(int argc, char **argv) {
    cli_args args;
    int parsed = cli_parse("quantize", USAGE, OPTIONS, NUM_OPTS, argc, argv, &args);
    if (parsed != 0) return cli_parse_exit(parsed);
    if (args.num_positional > 0) {
        fprintf(stderr, "vit quantize: unexpected argument '%s'\n", args.positional[0]);
        free(args.positional);
        return CLI_EXIT_FATAL;
    }
    free(args.positional);
    const char **v = args.values;
    const char *dtype = v[OPT_DTYPE], *out_path = v[OPT_OUTPUT];
    if (!out_path || !dtype) {
        fprintf(stderr, "vit quantize: %s is required (see 'vit quantize -h')\n",
                out_path ? "--dtype" : "-o");
        return CLI_EXIT_FATAL;
    }
    weights_quant to;
    if (strcmp(dtype, "bf16") == 0) {
        to = WEIGHTS_QUANT_BF16;
    } else if (strcmp(dtype, "int8") == 0) {
        to = WEIGHTS_QUANT_INT8;
    } else if (strcmp(dtype, "fp32") == 0) {
        to = WEIGHTS_QUANT_F32;
    } else if (strcmp(dtype, "packed") == 0) {
        to = WEIGHTS_QUANT_KEEP;
    } else {
        fprintf(stderr, "vit quantize: --dtype expects bf16, int8, fp32 or packed, got '%s'\n",
                dtype);
        return CLI_EXIT_FATAL;
    }
    /* Loading first proves the source is a model we can run. */
    vit_model *model = cli_load_model("quantize", v[OPT_MODEL], NULL, NULL, v[OPT_ALLOW_UNUSED] != NULL);
    if (!model) return CLI_EXIT_FATAL;
    const char *source = vit_model_weights_path(model);
    int status = CLI_EXIT_FATAL;
    /* Before anything is written: not over the weights or the configs we
     * read, and no other vit process writing the same copy. */
    cli_protected protect = {0};
    cli_lock lock = {0};
    if (cli_protect_run("quantize", &protect, model, NULL, NULL, 0) != 0 ||
        cli_check_output("quantize", &protect, out_path) != 0 ||
        cli_lock_output("quantize", out_path, 0, &lock) != 0)
        goto done;
    base_error err;
    if (vit_model_quantize(model, to, !v[OPT_PLAIN], out_path, &err) != BASE_OK) {
        fprintf(stderr, "vit quantize: %s\n", err.message);
        goto done;
    }
    /* The copy must load like the original; a failure here is our bug. */
    vit_model *copy = NULL;
    const vit_load_options reload = {.allow_unused = v[OPT_ALLOW_UNUSED] != NULL};
    if (vit_model_load(out_path, &reload, &copy, &err) != BASE_OK) {
        fprintf(stderr, "vit quantize: wrote %s but it does not load: %s\n", out_path, err.message);
        remove(out_path);
        goto done;
    }
    vit_model_free(copy);
    fprintf(stderr, "vit quantize: %s (%.1f MiB) -> %s (%.1f MiB, %s)\n", source, file_mib(source),
            out_path, file_mib(out_path), dtype);
    status = CLI_EXIT_OK;
done:
    cli_unlock_output(&lock);
    cli_protected_free(&protect);
    vit_model_free(model);
    return status;
}
