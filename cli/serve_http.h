/* serve_http.h — the parts of HTTP vit serve parses itself: multipart/
 * form-data bodies (RFC 7578, RFC 2046 5.1) and Accept headers (RFC 9110
 * 12.5.1). Pure functions on bytes, no libmicrohttpd: libmicrohttpd's post
 * processor reports parts in a way that cannot tell an empty part from the
 * start of the next one with the same file name, and only after it has
 * taken them, so the body is kept whole and split here, and its parts are
 * counted while it streams in. */
#ifndef SERVE_HTTP_H
#define SERVE_HTTP_H

#include <stddef.h>

#define SERVE_BOUNDARY_MAX 70 /* RFC 2046: 1 to 70 characters */

/* The boundary parameter of a multipart/form-data Content-Type (quoted or
 * not) into boundary (SERVE_BOUNDARY_MAX + 1 bytes); 0 when the type is
 * not multipart/form-data, -1 when its boundary is missing or invalid,
 * 1 when found. */
int serve_form_boundary(const char *content_type, char *boundary);

/* Counts the parts of a multipart body while it streams in: a part
 * begins at each delimiter line ("\r\n--" boundary, or "--" boundary at the
 * very start) that is not the closing one ("--" after it). */
typedef struct serve_form_counter {
    unsigned char delimiter[SERVE_BOUNDARY_MAX + 4];
    unsigned char fail[SERVE_BOUNDARY_MAX + 4]; /* KMP: the longest proper border */
    size_t length, matched;
    int after;      /* bytes seen after the last delimiter (0-2; -1: none yet) */
    int dashes;     /* how many of those were '-' */
    int closed;     /* the closing delimiter was seen: the rest is epilogue */
    size_t parts;
} serve_form_counter;

void serve_form_counter_init(serve_form_counter *c, const char *boundary);

/* Feeds the next n bytes of the body; returns the parts begun so far. */
size_t serve_form_counter_feed(serve_form_counter *c, const unsigned char *data, size_t n);

typedef struct serve_form_part {
    size_t offset, length; /* the part's content within the body */
    char *field;           /* its form field name ("" when none), malloc'd */
    char *filename;        /* NULL: a plain form field, not a file; malloc'd */
} serve_form_part;

/* Splits a whole multipart body at boundary into at most max_parts parts
 * (views into body). Returns 0, or -1 with a one-line reason in message
 * (a body without the boundary, a part without its header block or cut
 * off before the closing delimiter, more than max_parts parts, no
 * memory). Free the parts with serve_form_parts_free either way. */
int serve_form_split(const unsigned char *body, size_t n, const char *boundary, size_t max_parts,
                     serve_form_part **parts, size_t *count, char *message, size_t message_size);
void serve_form_parts_free(serve_form_part *parts, size_t count);

/* Which answer an Accept header asks for, of the two /features gives:
 * media ranges compared without regard to case, the most specific range
 * (type/subtype, then type/star, then star/star) deciding each type's
 * q-value, q=0 meaning not acceptable, the higher q winning and JSON
 * winning ties. NULL or an empty header: JSON. */
typedef enum serve_answer_type { SERVE_ANSWER_JSON, SERVE_ANSWER_NPY, SERVE_ANSWER_NONE } serve_answer_type;
serve_answer_type serve_accept(const char *accept);

#endif
