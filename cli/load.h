/* load.h — the model a command names: the shipped default and loading
 * with the command's options, notices printed (private to cli/; cli/load.c) */
#ifndef CLI_LOAD_H
#define CLI_LOAD_H

#include <stddef.h>
#include "vit.h"

/* The model vitc ships as the default (weights/README.md: timm's ViT-Ti/16
 * AugReg ImageNet-1k checkpoint, int8), used when a command is given no -m. */
#define CLI_DEFAULT_MODEL_NAME "vit-tiny-augreg-int8.safetensors"

/* Its path: where the build says the source tree keeps it, else weights/
 * beside the program or one directory up (path written to buf); NULL when
 * none is readable. */
const char *cli_default_model(char *buf, size_t size);

/* Loads the model named by -m (NULL: the shipped model) with --labels,
 * --pos-resample (NULL: auto) and --allow-unused (vit_load_options),
 * printing notices and, on failure, one error line. Returns NULL on failure. */
vit_model *cli_load_model(const char *command, const char *model_path, const char *labels_path,
                          const char *pos_resample, int allow_unused);

/* The same with safety limits (NULL: defaults) and the --size the run
 * will use (0: the model's own; vit_load_options.input_size). */
vit_model *cli_load_model_limited(const char *command, const char *model_path,
                                  const char *labels_path, const char *pos_resample,
                                  const base_limits *limits, int input_size, int allow_unused);

#endif
