/* hub_cache.h — models by Hugging Face Hub name, from the local cache.
 *
 * The cache is the one huggingface_hub and transformers fill (and
 * scripts/get-model): $HF_HUB_CACHE, else $HF_HOME/hub, else
 * ~/.cache/huggingface/hub. A model org/name lives in
 *   models--org--name/refs/REV          a file holding a commit hash
 *   models--org--name/snapshots/COMMIT/ the files (symlinks into ../../blobs/)
 * Nothing here touches the network. */
#ifndef HUB_CACHE_H
#define HUB_CACHE_H

#include <stddef.h>

#include "base_error.h"

/* Whether text has the shape of a hub name: org/name, exactly one '/',
 * neither part empty, not starting with '.' or '/'. (Whether it is also an
 * existing path is the caller's question: an existing path wins.) */
int hub_cache_is_name(const char *text);

/* The cache directory (written to out; it need not exist). */
base_status hub_cache_dir(char *out, size_t size, base_error *err);

/* The snapshot directory of name at revision (NULL: "main"): refs/REVISION's
 * commit, else a snapshot named REVISION (a commit hash). BASE_E_IO with one
 * line naming what was looked for and where when the cache does not hold
 * it; BASE_E_ARG for a name or revision that cannot be one. */
base_status hub_cache_resolve(const char *name, const char *revision, char *out, size_t size,
                             base_error *err);

#endif
