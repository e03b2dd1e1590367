/* vit — command-line front end of vitc. Each subcommand parses its
 * arguments and calls the library; nothing here knows how a ViT works. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_mpi.h"

#define VITC_VERSION "0.1.0"

/* OpenMP threads sleep at a barrier unless the user asks otherwise: with
 * libgomp's default they spin 300 000 times first, holding a core the
 * image loader's thread or another process needs (one photo: 40 ms against
 * 31 on an idle 2-core machine, bench/README.md). libgomp reads the
 * environment in its own constructor; it is linked into the program
 * (VITC_STATIC_DEPS), so a constructor with a priority runs before it.
 * A user's OMP_WAIT_POLICY or GOMP_SPINCOUNT wins. */
__attribute__((constructor(101))) static void default_wait_policy(void) {
    if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT"))
        setenv("OMP_WAIT_POLICY", "passive", 0);
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: vit <command> [options]\n"
            "\n"
            "commands:\n"
            "  classify   print the top-k labels of images\n"
            "  eval       top-1 / top-5 accuracy on a labelled image directory\n"
            "  info       describe a checkpoint and the preprocessing it uses\n"
            "  attention  class-token attention (or rollout) heatmaps over images\n"
            "  features   token embeddings of images as a .npy array\n"
            "  segment    unsupervised part segmentation: k-means on patch tokens\n"
            "  patches    the classifier applied to every patch token, as a class map\n"
            "  train      train a ViT (from scratch or fine-tuned) on labelled images\n"
            "  quantize   write a bf16 or int8 copy of a checkpoint (smaller files)\n"
            "  serve      an HTTP server: classify and embed images sent in requests\n"
            "\n"
            "'vit <command> -h' shows a command's options; 'vit --version' the version.\n");
}

static int run_command(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_FATAL;
    }
    const char *command = argv[1];
    if (strcmp(command, "-h") == 0 || strcmp(command, "--help") == 0 || strcmp(command, "help") == 0) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(command, "--version") == 0) {
        printf("vit (vitc) %s\n", VITC_VERSION);
        return CLI_EXIT_OK;
    }
    if (cli_mpi_active() && strcmp(command, "classify") && strcmp(command, "eval") &&
        strcmp(command, "features") && strcmp(command, "train")) {
        if (cli_mpi_rank() == 0)
            fprintf(stderr, "vit %s: does not run on several MPI processes (classify, eval, "
                            "features and train do); start it without mpirun, or with -np 1\n",
                    command);
        return CLI_EXIT_FATAL;
    }
    if (strcmp(command, "classify") == 0) return cli_classify(argc - 2, argv + 2);
    if (strcmp(command, "info") == 0) return cli_info(argc - 2, argv + 2);
    if (strcmp(command, "eval") == 0) return cli_eval(argc - 2, argv + 2);
    if (strcmp(command, "attention") == 0) return cli_attention(argc - 2, argv + 2);
    if (strcmp(command, "features") == 0) return cli_features(argc - 2, argv + 2);
    if (strcmp(command, "segment") == 0) return cli_segment(argc - 2, argv + 2);
    if (strcmp(command, "patches") == 0) return cli_patches(argc - 2, argv + 2);
    if (strcmp(command, "train") == 0) return cli_train(argc - 2, argv + 2);
    if (strcmp(command, "quantize") == 0) return cli_quantize(argc - 2, argv + 2);
    if (strcmp(command, "serve") == 0) return cli_serve(argc - 2, argv + 2);
    fprintf(stderr, "vit: unknown command '%s' (see 'vit -h')\n", command);
    return CLI_EXIT_FATAL;
}

/* VITC_TIMINGS (bench/oneshot.sh): the CPU time the process spent before
 * main, loading and initialising its libraries (before main there is one
 * thread, so CPU time is that thread's), and the time from main to its end,
 * on stderr; a command's own stages come in its own line
 * (cli_print_timings). */
static void print_process_timings(double cpu_before_main, double main_start) {
    fprintf(stderr, "vit: timings: before main %.2f ms CPU, main %.2f ms\n",
            cpu_before_main * 1e3, (cli_now_seconds() - main_start) * 1e3);
}

int main(int argc, char **argv) {
    const int timings = getenv("VITC_TIMINGS") != NULL;
    struct timespec cpu = {0, 0};
    if (timings) clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
    const double main_start = timings ? cli_now_seconds() : 0.0;
    /* Under mpirun or srun: joins the job (cli_mpi.h); a plain vit does not. */
    int status = cli_mpi_start(&argc, &argv) != 0 ? CLI_EXIT_FATAL : -1;
    status = cli_mpi_finish(status >= 0 ? status : run_command(argc, argv));
    if (timings) print_process_timings((double)cpu.tv_sec + cpu.tv_nsec * 1e-9, main_start);
    return status;
}
