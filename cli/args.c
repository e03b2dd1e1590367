/* Options: the table-driven parser and its help, numbers, threads and the
 * safety limits (args.h). */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cli_mpi.h"
#include "hub_cache.h"

/* Prints text wrapped at 80 columns, every line after the first indented
 * by indent columns (the first continues where the caller left off, at
 * column indent). Words longer than a line are not broken. */
static void print_wrapped(const char *text, int indent) {
    const int width = 80 - indent;
    int column = 0;
    while (*text) {
        while (*text == ' ') text++;
        const int word = (int)strcspn(text, " ");
        if (word == 0) break;
        if (column > 0 && column + 1 + word > width) {
            printf("\n%*s", indent, "");
            column = 0;
        } else if (column > 0) {
            putchar(' ');
            column++;
        }
        printf("%.*s", word, text);
        column += word;
        text += word;
    }
    putchar('\n');
}

static void print_help(const char *usage, const cli_option *options, int num_options) {
    enum { LEFT = 26, INDENT = LEFT + 3 };
    printf("%s\n\noptions:\n", usage);
    for (int i = 0; i <= num_options; i++) {
        char left[64];
        const cli_option *o = &options[i];
        if (i == num_options)
            snprintf(left, sizeof left, "-h, --help");
        else if (o->short_name)
            snprintf(left, sizeof left, "-%c, --%s%s%s", o->short_name, o->long_name,
                     o->takes_value ? " " : "", o->takes_value ? o->value_name : "");
        else
            snprintf(left, sizeof left, "    --%s%s%s", o->long_name, o->takes_value ? " " : "",
                     o->takes_value ? o->value_name : "");
        /* A long option name pushes its help to the next line. */
        if ((int)strlen(left) > LEFT)
            printf("  %s\n%*s", left, INDENT, "");
        else
            printf("  %-*s ", LEFT, left);
        print_wrapped(i == num_options ? "show this help" : o->help, INDENT);
    }
}

/* getopt_long's val for the option at index (short names keep their char). */
enum { LONG_ONLY_BASE = 256 };

/* The long option an unrecognised "--text[=value]" matches as a prefix:
 * fills possibilities and returns how many options it could be. */
static int long_matches(const cli_option *options, int num_options, const char *text,
                        char *possibilities, size_t size) {
    const size_t length = strcspn(text, "=");
    int matches = 0;
    size_t used = 0;
    possibilities[0] = '\0';
    for (int i = 0; i <= num_options; i++) {
        const char *name = i < num_options ? options[i].long_name : "help";
        if (strncmp(name, text, length) != 0) continue;
        matches++;
        if (used < size)
            used += (size_t)snprintf(possibilities + used, size - used, " '--%s'", name);
    }
    return matches;
}

/* The option getopt_long's val stands for (-1: none of ours). */
static int option_index(const cli_option *options, int num_options, int val) {
    if (val >= LONG_ONLY_BASE) return val - LONG_ONLY_BASE < num_options ? val - LONG_ONLY_BASE : -1;
    for (int i = 0; val > 0 && i < num_options; i++)
        if (options[i].short_name == val) return i;
    return -1;
}

/* One line for what getopt_long refused, worded as glibc words it, with the
 * command and the way to its help. result is its '?' or ':', bad its optopt
 * (0 for a long option it could not match), arg the last argument it read. */
static void report_bad_option(FILE *say, const char *command, const cli_option *options,
                              int num_options, int result, int bad, const char *arg) {
    if (!say) return;
    const int index = option_index(options, num_options, bad);
    const int length = (int)strcspn(arg, "=");
    if (result == ':') { /* a value missing at the end of the line */
        if (arg[0] == '-' && arg[1] == '-')
            fprintf(say, "vit %s: option '%.*s' requires an argument (%s)\n", command, length, arg,
                    index >= 0 ? options[index].value_name : "");
        else
            fprintf(say, "vit %s: option requires an argument -- '%c'\n", command, bad);
    } else if (index >= 0) { /* only a long option given =value gets here with one of ours */
        fprintf(say, "vit %s: option '--%s' doesn't allow an argument\n", command,
                options[index].long_name);
    } else if (bad != 0) {
        fprintf(say, "vit %s: invalid option -- '%c' (see 'vit %s -h')\n", command, bad, command);
    } else {
        char possibilities[1024];
        if (long_matches(options, num_options, arg + 2, possibilities, sizeof possibilities) > 1)
            fprintf(say, "vit %s: option '%.*s' is ambiguous; possibilities:%s\n", command, length,
                    arg, possibilities);
        else
            fprintf(say, "vit %s: unrecognized option '%.*s' (see 'vit %s -h')\n", command, length,
                    arg, command);
    }
}

int cli_parse(const char *command, const char *usage, const cli_option *options, int num_options,
              int argc, char **argv, cli_args *args) {
    memset(args, 0, sizeof *args);
    /* In an MPI job every rank parses the same arguments: rank 0 speaks. */
    FILE *say = cli_mpi_rank() == 0 ? stderr : NULL;
    /* getopt_long wants argv[0] and reorders what it is given: a copy. */
    char **copy = calloc((size_t)argc + 2, sizeof *copy);
    struct option *longs = calloc((size_t)num_options + 2, sizeof *longs);
    char *shorts = malloc(3 * (size_t)num_options + 4);
    args->positional = calloc((size_t)argc + 1, sizeof *args->positional);
    int status = -1;
    if (!copy || !longs || !shorts || !args->positional) {
        if (say) fprintf(say, "vit %s: out of memory\n", command);
        goto done;
    }
    copy[0] = (char *)command;
    memcpy(copy + 1, argv, (size_t)argc * sizeof *argv);
    /* ':' first: a missing value is reported as such, not as '?'. */
    char *s = shorts;
    *s++ = ':';
    for (int i = 0; i < num_options; i++) {
        longs[i] = (struct option){options[i].long_name,
                                   options[i].takes_value ? required_argument : no_argument, NULL,
                                   options[i].short_name ? options[i].short_name : LONG_ONLY_BASE + i};
        if (options[i].short_name) {
            *s++ = options[i].short_name;
            if (options[i].takes_value) *s++ = ':';
        }
    }
    longs[num_options] = (struct option){"help", no_argument, NULL, 'h'};
    *s++ = 'h';
    *s = '\0';
    optind = 0; /* glibc: start afresh (a previous parse leaves state behind) */
    opterr = 0;
    for (;;) {
        const int c = getopt_long(argc + 1, copy, shorts, longs, NULL);
        if (c == -1) break;
        if (c == 'h') {
            if (say) print_help(usage, options, num_options);
            status = 1;
            goto done;
        }
        if (c == '?' || c == ':') {
            /* A long option or a missing value moved optind past its argument. */
            report_bad_option(say, command, options, num_options, c, optopt,
                              optind >= 1 && optind <= argc + 1 ? copy[optind - 1] : "");
            goto done;
        }
        const int index = option_index(options, num_options, c);
        args->values[index] = options[index].takes_value ? optarg : "";
    }
    for (int i = optind; i <= argc; i++) args->positional[args->num_positional++] = copy[i];
    int model = -1, revision = -1;
    for (int i = 0; i < num_options; i++) {
        if (strcmp(options[i].long_name, "model") == 0) model = i;
        if (strcmp(options[i].long_name, "revision") == 0) revision = i;
    }
    if (model >= 0 &&
        cli_resolve_model(command, args->values[model], revision >= 0 ? args->values[revision] : NULL,
                          args->model_path, sizeof args->model_path, say, &args->values[model]) != 0)
        goto done;
    status = 0;
done:
    free(copy);
    free(longs);
    free(shorts);
    if (status != 0) { /* nothing left for a command that stops here to free */
        free(args->positional);
        args->positional = NULL;
        args->num_positional = 0;
    }
    return status;
}

int cli_resolve_model(const char *command, const char *value, const char *revision, char *buf,
                      size_t size, FILE *say, const char **path) {
    *path = value;
    struct stat st;
    const int hub = value && hub_cache_is_name(value) && stat(value, &st) != 0;
    if (revision && !hub) {
        if (say)
            fprintf(say, "vit %s: --revision goes with -m org/name (a model in the Hugging Face "
                         "cache)%s%s%s\n", command, value ? ", not the path '" : "",
                    value ? value : "", value ? "'" : "");
        return -1;
    }
    if (!hub) return 0;
    base_error err;
    if (hub_cache_resolve(value, revision, buf, size, &err) != BASE_OK) {
        if (say)
            fprintf(say, "vit %s: %s; run scripts/get-model %s%s%s\n", command, err.message, value,
                    revision ? " --revision " : "", revision ? revision : "");
        return -1;
    }
    *path = buf;
    return 0;
}

int cli_int(const char *command, const char *option, const char *text, long min, long max,
            long *value) {
    char *end;
    errno = 0;
    long parsed = strtol(text, &end, 10);
    if (errno || end == text || *end || parsed < min || parsed > max) {
        fprintf(stderr, "vit %s: %s expects a whole number from %ld to %ld, got '%s'\n", command,
                option, min, max, text);
        return -1;
    }
    *value = parsed;
    return 0;
}

int cli_thread_count(int threads) { return threads > 0 ? threads : omp_get_num_procs(); }

void cli_set_threads(int threads) {
    threads = cli_thread_count(threads);
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
}

int cli_limits(const char *command, const char *const *values, int count, base_limits *limits,
               int *allow_unused) {
    enum { ALLOW_UNUSED = 4 }; /* the flag among the limit options */
    static const char *const NAMES[CLI_NUM_LIMIT_OPTIONS] = {
        "--max-header-mb", "--max-tensors", "--max-json-kb", "--max-json-depth", "--allow-unused",
        "--max-pixels"};
    static const long MAX[CLI_NUM_LIMIT_OPTIONS] = {1L << 20, 1L << 30, 1L << 30, 100000, 0, 1L << 40};
    long v[CLI_NUM_LIMIT_OPTIONS] = {0};
    for (int i = 0; i < count && i < CLI_NUM_LIMIT_OPTIONS; i++)
        if (i != ALLOW_UNUSED && values[i] &&
            cli_int(command, NAMES[i], values[i], 1, MAX[i], &v[i]) != 0)
            return -1;
    *allow_unused = count > ALLOW_UNUSED && values[ALLOW_UNUSED] != NULL;
    memset(limits, 0, sizeof *limits); /* 0: the default */
    limits->max_header_bytes = (size_t)v[0] << 20;
    limits->max_tensors = (size_t)v[1];
    limits->max_json_bytes = (size_t)v[2] << 10;
    limits->max_json_depth = (int)v[3];
    limits->max_pixels = v[5];
    return 0;
}

size_t cli_split_list(char *text, const char **list, size_t max) {
    size_t n = 0;
    for (char *save = NULL, *tok = strtok_r(text, ",", &save); tok && n < max;
         tok = strtok_r(NULL, ",", &save))
        list[n++] = tok;
    return n;
}
