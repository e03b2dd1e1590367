/* module.c — finds and opens vit's modules (module.h), and vit serve's
 * entry, which only opens its module. */
#include "module.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#ifndef VITC_MODULE_ABI
#error "VITC_MODULE_ABI is set by CMakeLists.txt"
#endif

/* The directory of the running program: /proc/self/exe is the file
 * itself, whatever name or symlink started it. */
static int program_dir(char *dir, size_t size) {
    const ssize_t n = readlink("/proc/self/exe", dir, size - 1);
    if (n <= 0) return -1;
    dir[n] = '\0';
    char *slash = strrchr(dir, '/');
    if (!slash) return -1;
    *slash = '\0';
    return 0;
}

const void *cli_module_open(const char *file, const char *table, int global, char *why,
                            size_t why_size) {
    char path[4096];
    if (program_dir(path, sizeof path - strlen(file) - 1) != 0) {
        snprintf(why, why_size, "cannot find %s: /proc/self/exe does not name vit's directory", file);
        return NULL;
    }
    strcat(strcat(path, "/"), file);
    if (access(path, F_OK) != 0) {
        snprintf(why, why_size, "%s is missing (it is built and installed beside vit)", path);
        return NULL;
    }
    void *h = dlopen(path, RTLD_NOW | (global ? RTLD_GLOBAL : RTLD_LOCAL));
    if (!h) {
        const char *e = dlerror();
        snprintf(why, why_size, "cannot load %s", e ? e : path);
        return NULL;
    }
    void *sym = dlsym(h, table);
    const cli_module_head *head = sym;
    if (!head || !head->abi || strcmp(head->abi, VITC_MODULE_ABI) != 0) {
        snprintf(why, why_size, "%s is from another build of vit (rebuild, or install it with "
                 "this vit)", path);
        dlclose(h);
        return NULL;
    }
    return head;
}

int cli_serve(int argc, char **argv) {
#ifdef VITC_HAVE_MHD
    char why[4400];
    const cli_serve_module *m = cli_module_open(CLI_SERVE_MODULE, CLI_SERVE_MODULE_TABLE, 0, why,
                                                sizeof why);
    if (!m) {
        fprintf(stderr, "vit serve: %s\n", why);
        return CLI_EXIT_FATAL;
    }
    return m->serve(argc, argv);
#else
    (void)argc;
    (void)argv;
    fprintf(stderr, "vit serve: this vit was built without GNU libmicrohttpd (install "
                    "libmicrohttpd-dev, as scripts/setup does, and rebuild)\n");
    return CLI_EXIT_FATAL;
#endif
}
