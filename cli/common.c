#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
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
    vit_error err;
    if (hub_cache_resolve(value, revision, buf, size, &err) != VIT_OK) {
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

int cli_limits(const char *command, const char *const *values, int count, vit_limits *limits,
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

const char *cli_default_model(char *buf, size_t size) {
#ifdef VITC_DEFAULT_MODEL
    if (access(VITC_DEFAULT_MODEL, R_OK) == 0) return VITC_DEFAULT_MODEL;
#endif
    /* A copied or installed tree: weights/ beside the program or one up. */
    char exe[4096];
    const ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return NULL;
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash) return NULL;
    *slash = '\0';
    static const char *const PLACES[] = {"%s/weights/%s", "%s/../weights/%s"};
    for (size_t i = 0; i < sizeof PLACES / sizeof *PLACES; i++) {
        snprintf(buf, size, PLACES[i], exe, CLI_DEFAULT_MODEL_NAME);
        if (access(buf, R_OK) == 0) return buf;
    }
    return NULL;
}

vit_model *cli_load_model(const char *command, const char *model_path, const char *labels_path,
                          const char *pos_resample, int allow_unused) {
    return cli_load_model_limited(command, model_path, labels_path, pos_resample, NULL, 0,
                                  allow_unused);
}

vit_model *cli_load_model_limited(const char *command, const char *model_path,
                                  const char *labels_path, const char *pos_resample,
                                  const vit_limits *limits, int input_size, int allow_unused) {
    char shipped[4200];
    if (!model_path && !(model_path = cli_default_model(shipped, sizeof shipped))) {
        fprintf(stderr, "vit %s: no model given (use -m DIR or -m FILE.safetensors), and the "
                        "shipped model weights/%s is not found\n", command, CLI_DEFAULT_MODEL_NAME);
        return NULL;
    }
    char resolved[8192]; /* -m org/name where no option table resolved it (train --init) */
    if (cli_resolve_model(command, model_path, NULL, resolved, sizeof resolved, stderr, &model_path) != 0)
        return NULL;
    /* -t, as cli_set_threads left it for this thread: the library takes
     * thread counts as arguments only. */
    vit_load_options options = {.labels_path = labels_path, .limits = limits, .input_size = input_size,
                                .allow_unused = allow_unused, .threads = omp_get_max_threads()};
    if (!pos_resample || strcmp(pos_resample, "auto") == 0) {
        options.pos_resample = VIT_POS_RESAMPLE_AUTO;
    } else if (strcmp(pos_resample, "bicubic") == 0) {
        options.pos_resample = VIT_POS_RESAMPLE_BICUBIC;
    } else if (strcmp(pos_resample, "bicubic-aa") == 0) {
        options.pos_resample = VIT_POS_RESAMPLE_BICUBIC_AA;
    } else {
        fprintf(stderr, "vit %s: --pos-resample expects auto, bicubic or bicubic-aa, got '%s'\n",
                command, pos_resample);
        return NULL;
    }
    vit_model *model;
    vit_error err;
    if (vit_model_load(model_path, &options, &model, &err) != VIT_OK) {
        fprintf(stderr, "vit %s: %s\n", command, err.message);
        return NULL;
    }
    const char *notices = vit_model_notices(model);
    if (notices[0]) fprintf(stderr, "%s", notices);
    return model;
}

void cli_timings_take(cli_timings *t, const vit_pipeline *pipeline) {
    const vit_pipeline_timings *p = vit_pipeline_get_timings(pipeline);
    t->start = p->start;
    t->decode = p->decode;
    t->forward = p->forward;
}

double cli_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cli_print_summary(const char *command, const char *verbed, size_t files, size_t failed,
                       const char *note, const cli_timings *t) {
    if (!note) note = "";
    const char *noun = files == 1 ? "file" : "files";
    if (files == 0) {
        fprintf(stderr, "vit %s: nothing to do: no files\n", command);
        return;
    }
    if (files > 0 && failed == files) {
        fprintf(stderr, "vit %s: %zu %s, %zu failed%s: nothing %s\n", command, files, noun, failed,
                note, verbed);
        return;
    }
    char split[128] = "";
    if (t->split)
        snprintf(split, sizeof split, ", decode wait %.2f s, forward %.2f s", t->decode, t->forward);
    else /* over MPI ranks: the batches ran on every rank at once */
        snprintf(split, sizeof split, ", run %.2f s", t->total);
    fprintf(stderr, "vit %s: %zu %s, %zu failed%s; load %.2f s%s; %.1f images/s\n", command, files,
            noun, failed, note, t->load, split, t->total > 0 ? files / t->total : 0.0);
}

void cli_print_timings(const char *command, const cli_timings *t) {
    if (!getenv("VITC_TIMINGS")) return;
    fprintf(stderr, "vit %s: timings: load %.2f ms, start %.2f ms, decode wait %.2f ms, forward %.2f ms\n",
            command, t->load * 1e3, t->start * 1e3, t->decode * 1e3, t->forward * 1e3);
}

char *cli_csv_quote(const char *s) {
    if (!strpbrk(s, ",\"\n\r")) return strdup(s);
    char *quoted = malloc(2 * strlen(s) + 3), *q = quoted;
    if (!quoted) return NULL;
    *q++ = '"';
    for (; *s; s++) {
        if (*s == '"') *q++ = '"';
        *q++ = *s;
    }
    *q++ = '"';
    *q = '\0';
    return quoted;
}

int cli_csv_write_field(FILE *out, const char *s) {
    char *quoted = cli_csv_quote(s);
    if (!quoted) return -1;
    fputs(quoted, out);
    free(quoted);
    return 0;
}

int cli_inputs_add(cli_inputs *in, const char *path, const char *name) {
    if (in->count == in->capacity) {
        size_t capacity = in->capacity ? in->capacity * 2 : 1024;
        char **paths = realloc(in->paths, capacity * sizeof *paths);
        if (paths) in->paths = paths;
        char **names = realloc(in->names, capacity * sizeof *names);
        if (names) in->names = names;
        if (!paths || !names) return -1;
        in->capacity = capacity;
    }
    in->paths[in->count] = strdup(path);
    in->names[in->count] = strdup(name);
    if (!in->paths[in->count] || !in->names[in->count]) {
        free(in->paths[in->count]);
        free(in->names[in->count]);
        return -1;
    }
    in->count++;
    return 0;
}

void cli_inputs_free(cli_inputs *in) {
    for (size_t i = 0; i < in->count; i++) {
        free(in->paths[i]);
        free(in->names[i]);
    }
    free(in->paths);
    free(in->names);
    memset(in, 0, sizeof *in);
}

/* "A, B and C" of the directory arguments (for "no images found in ..."). */
static void join_args(const char *const *paths, int num_paths, char *buf, size_t size) {
    size_t n = 0;
    buf[0] = '\0';
    for (int a = 0; a < num_paths && n < size; a++)
        n += (size_t)snprintf(buf + n, size - n, "%s%s", a == 0 ? "" : a + 1 < num_paths ? ", " : " and ",
                              paths[a]);
}

/* cli_inputs_collect; list (NULL: none) names the --files-from list that is
 * read after, for the message when nothing at all is found. */
static int collect_paths(const char *command, const char *const *paths, int num_paths,
                         const data_walk_options *walk, cli_naming naming, cli_inputs *in,
                         const char *list) {
    const int relative = naming == CLI_NAMES_OUTPUTS || num_paths == 1;
    for (int a = 0; a < num_paths; a++) {
        const char *arg = paths[a];
        struct stat st;
        if (stat(arg, &st) != 0 || !S_ISDIR(st.st_mode)) {
            const char *slash = strrchr(arg, '/');
            const char *name = naming == CLI_NAMES_OUTPUTS && slash && slash[1] ? slash + 1 : arg;
            if (cli_inputs_add(in, arg, name) != 0) goto nomem;
            continue;
        }
        data_file_list files = {0}, problems = {0};
        vit_error err;
        if (data_walk_collect(arg, walk, &files, &problems, &err) != VIT_OK) {
            fprintf(stderr, "vit %s: %s\n", command, err.message);
            data_file_list_free(&files);
            data_file_list_free(&problems);
            return -1;
        }
        /* A directory that cannot be listed is not a file, so it gets no
         * row (rows are what --resume and --shard count by name); its line
         * here and exit status 2 say that part of the tree was left out. */
        for (size_t i = 0; i < problems.count; i++)
            fprintf(stderr, "vit %s: %s\n", command, problems.paths[i]);
        in->problems += problems.count;
        data_file_list_free(&problems);
        size_t prefix = strlen(arg);
        while (prefix > 1 && arg[prefix - 1] == '/') prefix--;
        for (size_t i = 0; i < files.count; i++) {
            const char *name = relative ? files.paths[i] + prefix + 1 : files.paths[i];
            if (cli_inputs_add(in, files.paths[i], name) != 0) {
                data_file_list_free(&files);
                goto nomem;
            }
        }
        data_file_list_free(&files);
    }
    if (in->count == 0 && !list) {
        /* Only directories were given (a file named is always an input) and
         * they hold nothing: a mistyped path or --ext is likelier than an
         * intended empty run, and "0 files" with status 0 hides it. */
        char where[2048], ext[512] = "";
        join_args(paths, num_paths, where, sizeof where);
        if (walk && walk->extensions) {
            size_t n = (size_t)snprintf(ext, sizeof ext, " with extension");
            for (size_t i = 0; i < walk->num_extensions && n < sizeof ext; i++)
                n += (size_t)snprintf(ext + n, sizeof ext - n, "%s%s", i ? ", " : " ",
                                      walk->extensions[i]);
        }
        fprintf(stderr, "vit %s: no images found in %s%s\n", command, where, ext);
        return -1;
    }
    return 0;
nomem:
    fprintf(stderr, "vit %s: out of memory\n", command);
    return -1;
}

int cli_inputs_collect(const char *command, const char *const *paths, int num_paths,
                       const data_walk_options *walk, cli_naming naming, cli_inputs *in) {
    return collect_paths(command, paths, num_paths, walk, naming, in, NULL);
}

int cli_inputs_gather(const char *command, const char *const *paths, int num_paths,
                      const data_walk_options *walk, cli_naming naming, const char *list, int nul,
                      cli_inputs *in) {
    if (!list && nul) {
        fprintf(stderr, "vit %s: -0 (--null) goes with --files-from\n", command);
        return -1;
    }
    if (!list) return collect_paths(command, paths, num_paths, walk, naming, in, NULL);
    size_t added;
    if (collect_paths(command, paths, num_paths, walk, naming, in, list) != 0 ||
        cli_inputs_read_list(command, list, nul, naming, in, &added) != 0)
        return -1;
    if (in->count == 0) {
        /* As "no images found": an empty list is likelier a find that
         * matched nothing than a run meant to do nothing. */
        const char *name = strcmp(list, "-") == 0 ? "standard input" : list;
        if (num_paths == 0)
            fprintf(stderr, "vit %s: no paths in --files-from %s\n", command, name);
        else
            fprintf(stderr, "vit %s: no images found in the PATHs given nor in --files-from %s\n",
                    command, name);
        return -1;
    }
    return 0;
}

size_t cli_split_list(char *text, const char **list, size_t max) {
    size_t n = 0;
    for (char *save = NULL, *tok = strtok_r(text, ",", &save); tok && n < max;
         tok = strtok_r(NULL, ",", &save))
        list[n++] = tok;
    return n;
}

/* The width of the terminal on stderr (COLUMNS, else 80, when not known). */
static int terminal_columns(void) {
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    const char *columns = getenv("COLUMNS");
    const long n = columns ? strtol(columns, NULL, 10) : 0;
    return n > 0 && n < 10000 ? (int)n : 80;
}

void cli_progress_line(const char *format, ...) {
    char line[512];
    va_list ap;
    va_start(ap, format);
    vsnprintf(line, sizeof line, format, ap);
    va_end(ap);
    /* One column short of the width: a full line would put some terminals'
     * cursor on the next row. \033[K erases what a longer line left. */
    const int width = terminal_columns() - 1;
    fprintf(stderr, "\r%.*s\033[K", width > 0 ? width : 0, line);
    fflush(stderr);
}

void cli_progress_clear(void) { fputs("\r\033[K", stderr); }

void cli_show_progress(size_t done, size_t total, size_t failed, double elapsed) {
    const double rate = elapsed > 0 ? done / elapsed : 0.0;
    const long eta = rate > 0 ? (long)((total - done) / rate + 0.5) : 0;
    cli_progress_line("  %zu/%zu files  %.1f images/s  ETA %ld:%02ld:%02ld  %zu failed", done, total,
                      rate, eta / 3600, eta / 60 % 60, eta % 60, failed);
}

/* ---------------------------------------------------------- JSON text */

/* The length of the valid UTF-8 sequence at s (1..4), or 0 when the byte
 * there does not start one (overlong forms and surrogates are invalid). */
static int utf8_length(const unsigned char *s) {
    const unsigned char c = s[0];
    if (c < 0x80) return 1;
    int n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c == 0xE0) n = 3, lo = 0xA0;
    else if (c == 0xED) n = 3, hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF) n = 3;
    else if (c == 0xF0) n = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) n = 4;
    else if (c == 0xF4) n = 4, hi = 0x8F;
    else return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return n;
}

char *cli_json_text(const char *s) {
    char *out = malloc(4 * strlen(s) + 1), *o = out;
    if (!out) return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        const int n = utf8_length(p);
        if (*p == '\\') {
            *o++ = '\\';
            *o++ = '\\';
            p++;
        } else if (n == 0) {
            o += sprintf(o, "\\x%02x", *p++);
        } else {
            memcpy(o, p, (size_t)n);
            o += n;
            p += n;
        }
    }
    *o = '\0';
    return out;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

char *cli_json_text_decode(const char *s) {
    char *out = malloc(strlen(s) + 1), *o = out;
    if (!out) return NULL;
    while (*s) {
        int hi, lo;
        if (s[0] == '\\' && s[1] == '\\') {
            *o++ = '\\';
            s += 2;
        } else if (s[0] == '\\' && s[1] == 'x' && (hi = hex_value(s[2])) >= 0 &&
                   (lo = hex_value(s[3])) >= 0) {
            *o++ = (char)(hi << 4 | lo);
            s += 4;
        } else {
            *o++ = *s++; /* not an escape of ours: kept as it is */
        }
    }
    *o = '\0';
    return out;
}

/* ------------------------------------------------------------- signals */

/* Set by the handler, read between batches: the handler does nothing else,
 * as only that is async-signal-safe. */
static volatile sig_atomic_t stop_signal;

static void note_stop_signal(int signo) { stop_signal = signo; }

void cli_catch_stop_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = note_stop_signal;
    sigemptyset(&sa.sa_mask);
    /* Interrupted writes restart, so a row is never cut by the signal; the
     * handler resets to the default, so a second signal stops at once. */
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int cli_stop_requested(void) { return stop_signal; }
/* ------------------------------------------------------ the user's files */

static int compare_file_ids(const void *a, const void *b) {
    const cli_protected_file *x = a, *y = b;
    if (x->dev != y->dev) return x->dev < y->dev ? -1 : 1;
    return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* Adds the file st describes, named path in messages. */
static int protect_stat(cli_protected *p, const char *path, const struct stat *st, int is_input) {
    if (p->count == p->capacity) {
        const size_t capacity = p->capacity ? p->capacity * 2 : 16;
        cli_protected_file *grown = realloc(p->files, capacity * sizeof *grown);
        if (!grown) return -1;
        p->files = grown;
        p->capacity = capacity;
    }
    cli_protected_file *f = &p->files[p->count];
    if (!(f->path = strdup(path))) return -1;
    f->dev = st->st_dev;
    f->ino = st->st_ino;
    f->is_input = is_input;
    p->count++;
    p->sorted = 0;
    return 0;
}

int cli_protect_file(cli_protected *p, const char *path, int is_input) {
    struct stat st;
    if (!path || stat(path, &st) != 0) return 0; /* nothing there to overwrite */
    return protect_stat(p, path, &st, is_input);
}

int cli_protect_list(const char *command, cli_protected *p, const char *list) {
    if (!list) return 0;
    struct stat st;
    int status = 0;
    if (strcmp(list, "-") != 0) {
        status = cli_protect_file(p, list, 2);
    } else if (fstat(STDIN_FILENO, &st) == 0 && S_ISREG(st.st_mode)) {
        /* `--files-from - < list.txt -o list.txt`: the shell opened the
         * list, and -o would cut it. */
        status = protect_stat(p, "standard input", &st, 2);
    }
    if (status != 0) fprintf(stderr, "vit %s: out of memory\n", command);
    return status;
}

int cli_protect_model(cli_protected *p, const vit_model *model, const char *labels_path) {
    /* The loader reads the configs from the weights file's directory. */
    const char *weights = vit_model_weights_path(model);
    const char *slash = strrchr(weights, '/');
    const int dir_len = slash ? (int)(slash - weights) : 1;
    const char *dir = slash ? weights : ".";
    char path[4200];
    if (cli_protect_file(p, weights, 0) != 0) return -1;
    snprintf(path, sizeof path, "%.*s/config.json", dir_len, dir);
    if (cli_protect_file(p, path, 0) != 0) return -1;
    snprintf(path, sizeof path, "%.*s/preprocessor_config.json", dir_len, dir);
    if (cli_protect_file(p, path, 0) != 0) return -1;
    return cli_protect_file(p, labels_path, 0);
}

void cli_protect_inputs(cli_protected *p, const char *const *paths, size_t count) {
    p->inputs = paths;
    p->num_inputs = count;
    p->inputs_added = 0;
}

int cli_protect_run(const char *command, cli_protected *p, const vit_model *model,
                    const char *labels_path, const char *const *inputs, size_t num_inputs) {
    cli_protect_inputs(p, inputs, num_inputs);
    if (model && cli_protect_model(p, model, labels_path) != 0) {
        fprintf(stderr, "vit %s: out of memory\n", command);
        return -1;
    }
    return 0;
}

int cli_check_output(const char *command, cli_protected *p, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return 0; /* a new file: it cannot be one we read */
    if (!p->inputs_added) {
        for (size_t i = 0; i < p->num_inputs; i++)
            if (cli_protect_file(p, p->inputs[i], 1) != 0) {
                fprintf(stderr, "vit %s: out of memory\n", command);
                return -1;
            }
        p->inputs_added = 1;
        p->sorted = 0;
    }
    if (!p->sorted) {
        if (p->count) qsort(p->files, p->count, sizeof *p->files, compare_file_ids);
        p->sorted = 1;
    }
    const cli_protected_file key = {.dev = st.st_dev, .ino = st.st_ino};
    const cli_protected_file *hit =
        p->count ? bsearch(&key, p->files, p->count, sizeof *p->files, compare_file_ids) : NULL;
    if (!hit) return 0;
    /* Name the protected file as the user gave it: a link or another
     * spelling of it may be what -o says. */
    if (hit->is_input == 2)
        fprintf(stderr, "vit %s: %s: would overwrite the --files-from list %s; choose another "
                        "output\n", command, path, hit->path);
    else if (hit->is_input)
        fprintf(stderr, "vit %s: %s: would overwrite the input %s; choose another output\n",
                command, path, hit->path);
    else
        fprintf(stderr, "vit %s: %s: would overwrite the model it reads (%s); choose another "
                        "output\n", command, path, hit->path);
    return -1;
}

void cli_protected_free(cli_protected *p) {
    for (size_t i = 0; i < p->count; i++) free(p->files[i].path);
    free(p->files);
    memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------------ output locks */

static int lock_refused(const char *command, const char *path, int fd) {
    fprintf(stderr, "vit %s: %s: is being written by another vit process\n", command, path);
    close(fd);
    return -1;
}

static int lock_failed(const char *command, const char *path, int e) {
    fprintf(stderr, "vit %s: %s: cannot write: %s\n", command, path, strerror(e));
    return -1;
}

/* flock errors other than "held by someone else" (a file system without
 * flock, such as some NFS setups): carry on unlocked rather than refuse to
 * work at all. */
static int lock_unsupported(int e) { return e == ENOLCK || e == EINVAL || e == EBADF || e == EOPNOTSUPP; }

/* Takes the lock on fd (just opened on path; -1: the open failed): lock
 * holds it, or the run is refused (another holder) or fails. */
static int lock_opened(const char *command, const char *path, int fd, cli_lock *lock) {
    if (fd < 0) return lock_failed(command, path, errno);
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        const int e = errno;
        if (e == EWOULDBLOCK) return lock_refused(command, path, fd);
        close(fd);
        return lock_unsupported(e) ? 0 : lock_failed(command, path, e);
    }
    lock->held = 1;
    lock->fd = fd;
    return 0;
}

int cli_lock_output(const char *command, const char *path, int in_place, cli_lock *lock) {
    memset(lock, 0, sizeof *lock);
    struct stat st;
    const int exists = stat(path, &st) == 0;
    if (exists && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return 0; /* /dev/null, a FIFO */
    if (exists && S_ISDIR(st.st_mode))
        return lock_opened(command, path, open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), lock);
    /* No O_TRUNC: the file is cut only once the lock is ours. */
    if (in_place)
        return lock_opened(command, path, open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0666), lock);
    const size_t size = strlen(path) + 6;
    char *lock_path = malloc(size);
    if (!lock_path) {
        fprintf(stderr, "vit %s: out of memory\n", command);
        return -1;
    }
    snprintf(lock_path, size, "%s.lock", path);
    /* The holder removes PATH.lock before letting go, so a lock won on a
     * file that has meanwhile been removed (or replaced) is worth nothing:
     * try again on the file now there. */
    for (int attempt = 0; attempt < 100; attempt++) {
        const int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        if (fd < 0) {
            lock_failed(command, path, errno);
            free(lock_path);
            return -1;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            const int e = errno;
            if (e == EWOULDBLOCK) {
                free(lock_path);
                return lock_refused(command, path, fd);
            }
            close(fd);
            free(lock_path);
            return lock_unsupported(e) ? 0 : lock_failed(command, path, e);
        }
        struct stat held, now;
        if (fstat(fd, &held) == 0 && stat(lock_path, &now) == 0 && held.st_dev == now.st_dev &&
            held.st_ino == now.st_ino) {
            lock->held = 1;
            lock->fd = fd;
            lock->remove_path = lock_path;
            return 0;
        }
        close(fd);
    }
    free(lock_path);
    fprintf(stderr, "vit %s: %s: is being written by another vit process\n", command, path);
    return -1;
}

void cli_unlock_output(cli_lock *lock) {
    if (!lock->held) return;
    /* Removed while still held (see cli_lock_output), and only when empty:
     * vit never writes into it, so a file with content is someone else's. */
    struct stat st;
    if (lock->remove_path && fstat(lock->fd, &st) == 0 && st.st_size == 0) unlink(lock->remove_path);
    close(lock->fd);
    free(lock->remove_path);
    memset(lock, 0, sizeof *lock);
}

int cli_make_parents(const char *path) {
    char *copy = strdup(path);
    if (!copy) return -1;
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(copy, 0777) != 0 && errno != EEXIST) {
            free(copy);
            return -1;
        }
        *p = '/';
    }
    free(copy);
    return 0;
}

/* ---------------------------------------------- lists of paths (--files-from) */

/* An entry is kept to PATH_MAX bytes: longer is no path open(2) takes, and
 * a list that never ends a line must not grow memory without end. */
#define PATH_READER_MAX PATH_MAX

int cli_path_reader_open(const char *command, const char *list, int nul, cli_path_reader *r) {
    memset(r, 0, sizeof *r);
    r->nul = nul;
    r->fd = -1;
    if (strcmp(list, "-") == 0) {
        r->fd = STDIN_FILENO;
        r->name = "standard input";
    } else {
        /* Blocking open: a FIFO waits here for its writer, as `cat` would. */
        r->fd = open(list, O_RDONLY | O_CLOEXEC);
        r->name = list;
        r->owns_fd = 1;
        struct stat st;
        if (r->fd >= 0 && fstat(r->fd, &st) == 0 && S_ISDIR(st.st_mode)) {
            close(r->fd);
            r->fd = -1;
            errno = EISDIR;
        }
        if (r->fd < 0) {
            fprintf(stderr, "vit %s: --files-from %s: cannot read: %s\n", command, list, strerror(errno));
            return -1;
        }
    }
    r->capacity = PATH_READER_MAX + 1;
    if (!(r->buf = malloc(r->capacity + 1))) {
        cli_path_reader_close(r);
        fprintf(stderr, "vit %s: out of memory\n", command);
        return -1;
    }
    return 0;
}

int cli_path_reader_fill(cli_path_reader *r) {
    if (r->eof) return 0;
    if (r->start > 0) { /* entries handed out: move the rest to the front */
        memmove(r->buf, r->buf + r->start, r->length - r->start);
        r->length -= r->start;
        r->start = 0;
    }
    if (r->length == r->capacity) return 0; /* a full entry waits for cli_path_reader_next */
    ssize_t got;
    do got = read(r->fd, r->buf + r->length, r->capacity - r->length);
    while (got < 0 && errno == EINTR && !cli_stop_requested());
    if (got < 0) return errno == EINTR ? 0 : -1;
    if (got == 0) r->eof = 1;
    r->length += (size_t)got;
    return 0;
}

/* Where the entry starting at r->start ends, and whether it was ended by
 * its separator (0: the buffer holds no separator yet). */
static size_t entry_end(const cli_path_reader *r, int *found) {
    const char *p = r->buf + r->start;
    const char *sep = memchr(p, r->nul ? '\0' : '\n', r->length - r->start);
    *found = sep != NULL;
    return sep ? (size_t)(sep - r->buf) : r->length;
}

int cli_path_reader_next(cli_path_reader *r, const char **path, const char **problem) {
    *problem = NULL;
    for (;;) {
        if (r->start >= r->length) return 0;
        int found;
        size_t end = entry_end(r, &found);
        if (r->skipping) { /* the rest of an overlong entry: dropped */
            r->start = found ? end + 1 : r->length;
            if (found) r->skipping = 0;
            if (!found && !r->eof) return 0;
            continue;
        }
        const size_t len = end - r->start;
        if (!found && len <= PATH_READER_MAX && !r->eof) return 0; /* more may come */
        char *entry = r->buf + r->start;
        if (len > PATH_READER_MAX) {
            /* Named by its start in messages and rows; the rest is skipped. */
            r->line++;
            r->skipping = 1;
            r->start = r->start + PATH_READER_MAX;
            entry[60] = '\0';
            snprintf(r->message, sizeof r->message,
                     "%s: %s %lu is longer than PATH_MAX (%d bytes)", r->name,
                     r->nul ? "entry" : "line", r->line, PATH_READER_MAX);
            snprintf(r->display, sizeof r->display, "%s...", entry);
            *path = r->display;
            *problem = r->message;
            return 1;
        }
        r->start = found ? end + 1 : end;
        r->line++;
        entry[len] = '\0'; /* the separator, or the byte after the data at the end */
        if (len == 0) { /* blank lines are skipped (so is an empty NUL entry) */
            continue;
        }
        *path = entry;
        if (!r->nul && strlen(entry) < len) {
            snprintf(r->message, sizeof r->message,
                     "%s: line %lu holds a NUL byte (a NUL-separated list needs -0)", r->name, r->line);
            *problem = r->message;
        } else if (!r->nul && entry[len - 1] == '\r') {
            /* Not stripped: a name may end in "\r", and a CRLF list would
             * otherwise open "a.jpg\r" and fail with a puzzling message. */
            snprintf(r->message, sizeof r->message,
                     "%s: line %lu ends in a carriage return (a CRLF list? strip it with "
                     "tr -d '\\r', or pass such names with -0)", r->name, r->line);
            *problem = r->message;
        }
        return 1;
    }
}

void cli_path_reader_close(cli_path_reader *r) {
    if (r->owns_fd && r->fd >= 0) close(r->fd);
    free(r->buf);
    memset(r, 0, sizeof *r);
    r->fd = -1;
}

int cli_inputs_read_list(const char *command, const char *list, int nul, cli_naming naming,
                         cli_inputs *in, size_t *added) {
    cli_path_reader r;
    *added = 0;
    if (cli_path_reader_open(command, list, nul, &r) != 0) return -1;
    int status = 0;
    for (;;) {
        const char *path, *problem;
        const int got = cli_path_reader_next(&r, &path, &problem);
        if (got == 0) {
            if (r.eof) break;
            if (cli_path_reader_fill(&r) != 0) {
                fprintf(stderr, "vit %s: --files-from %s: cannot read: %s\n", command, r.name,
                        strerror(errno));
                status = -1;
                break;
            }
            continue;
        }
        /* Before anything ran, a malformed list is a mistake to fix, not
         * an image that failed (--stream, which has begun, makes it a row). */
        if (problem) {
            fprintf(stderr, "vit %s: --files-from %s\n", command, problem);
            status = -1;
            break;
        }
        const char *slash = strrchr(path, '/');
        const char *name = naming == CLI_NAMES_OUTPUTS && slash && slash[1] ? slash + 1 : path;
        if (cli_inputs_add(in, path, name) != 0) {
            fprintf(stderr, "vit %s: out of memory\n", command);
            status = -1;
            break;
        }
        (*added)++;
    }
    cli_path_reader_close(&r);
    return status;
}
