/* Fuzz build only (VITC_FUZZ): stb_image's implementation compiled here, so
 * it is instrumented like our own code (coverage, ASan, UBSan) instead of
 * running uninstrumented inside Debian's libstb.so. Same header, default
 * options, as libstb is built. */
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
