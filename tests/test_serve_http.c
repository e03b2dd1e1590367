/* The HTTP pieces vit serve parses itself (cli/serve_http.c, compiled in
 * here: the CLI is not part of the library): multipart boundaries, parts
 * counted as a body streams in, bodies split into parts (an empty part is
 * a part of its own), and Accept negotiation by RFC 9110's rules. */
#include <criterion/criterion.h>
#include <string.h>

#include "../cli/serve_http.c"

Test(serve_http, boundary_from_content_type) {
    char b[SERVE_BOUNDARY_MAX + 1];
    cr_expect_eq(serve_form_boundary("multipart/form-data; boundary=abc123", b), 1);
    cr_expect_str_eq(b, "abc123");
    cr_expect_eq(serve_form_boundary("Multipart/Form-Data;Boundary=\"a b;c\"", b), 1);
    cr_expect_str_eq(b, "a b;c");
    cr_expect_eq(serve_form_boundary("multipart/form-data; charset=utf-8; boundary=x", b), 1);
    cr_expect_str_eq(b, "x");
    cr_expect_eq(serve_form_boundary("multipart/form-data", b), -1);
    cr_expect_eq(serve_form_boundary("multipart/form-data; boundary=", b), -1);
    cr_expect_eq(serve_form_boundary("multipart/form-data; boundary=\"open", b), -1);
    char long_type[200];
    snprintf(long_type, sizeof long_type, "multipart/form-data; boundary=%071d", 0);
    cr_expect_eq(serve_form_boundary(long_type, b), -1);
    cr_expect_eq(serve_form_boundary("image/png", b), 0);
    cr_expect_eq(serve_form_boundary("multipart/form-datax; boundary=a", b), 0);
    cr_expect_eq(serve_form_boundary(NULL, b), 0);
}

static const char BODY[] = "preamble\r\n"
                           "--XYZ\r\nContent-Disposition: form-data; name=\"a\"; filename=\"a.png\"\r\n"
                           "Content-Type: image/png\r\n\r\nAAAA\r\n"
                           "--XYZ  \r\ncontent-disposition: form-data; name=\"b\"; filename=\"\"\r\n\r\n\r\n"
                           "--XYZ\r\nContent-Disposition: form-data; filename=\"a.png\"; name=\"c\"\r\n\r\n"
                           "C\r\n--XY\r\n"
                           "--XYZ\r\nContent-Disposition: form-data; name=\"field\"\r\n\r\nvalue\r\n"
                           "--XYZ--\r\nepilogue\r\n--XYZ\r\n--XYZ\r\n";

Test(serve_http, parts_are_counted_as_the_body_streams) {
    serve_form_counter c;
    serve_form_counter_init(&c, "XYZ");
    cr_expect_eq(serve_form_counter_feed(&c, (const unsigned char *)BODY, sizeof BODY - 1), 4);
    serve_form_counter_init(&c, "XYZ"); /* byte by byte: delimiters split across reads */
    size_t parts = 0;
    for (size_t i = 0; i < sizeof BODY - 1; i++)
        parts = serve_form_counter_feed(&c, (const unsigned char *)BODY + i, 1);
    cr_expect_eq(parts, 4);
    /* The delimiter at the very start, without a line break before it. */
    static const char START[] = "--b\r\n\r\nx\r\n--b\r\n\r\ny\r\n--b--";
    serve_form_counter_init(&c, "b");
    cr_expect_eq(serve_form_counter_feed(&c, (const unsigned char *)START, sizeof START - 1), 2);
    /* A boundary of dashes, whose delimiter overlaps itself. */
    static const char DASHES[] = "\r\n----\r\n\r\n---\r\n------\r\n----\r\n";
    serve_form_counter_init(&c, "--");
    cr_expect_eq(serve_form_counter_feed(&c, (const unsigned char *)DASHES, sizeof DASHES - 1), 1);
}

Test(serve_http, a_body_splits_into_its_parts) {
    serve_form_part *parts;
    size_t n;
    char message[200];
    const unsigned char *body = (const unsigned char *)BODY;
    cr_assert_eq(serve_form_split(body, sizeof BODY - 1, "XYZ", 10, &parts, &n, message,
                                  sizeof message), 0, "%s", message);
    cr_assert_eq(n, 4);
    cr_expect_str_eq(parts[0].filename, "a.png");
    cr_expect_str_eq(parts[0].field, "a");
    cr_expect_eq(parts[0].length, 4);
    cr_expect_eq(memcmp(body + parts[0].offset, "AAAA", 4), 0);
    /* An empty part is a part (here with an empty file name), not glued
     * to the next one with the same name. */
    cr_expect_str_eq(parts[1].filename, "");
    cr_expect_eq(parts[1].length, 0);
    cr_expect_str_eq(parts[2].filename, "a.png");
    cr_expect_eq(parts[2].length, 7, "content with a near-delimiter inside: %zu", parts[2].length);
    cr_expect_eq(parts[3].filename, NULL, "a plain field has no file name");
    cr_expect_str_eq(parts[3].field, "field");
    serve_form_parts_free(parts, n);
    /* Bare tokens end at the line's end. */
    static const char BARE[] = "--B\r\nContent-Disposition: form-data; name=f; filename=x.png\r\n\r\n"
                               "x\r\n--B--";
    cr_assert_eq(serve_form_split((const unsigned char *)BARE, sizeof BARE - 1, "B", 10, &parts, &n,
                                  message, sizeof message), 0, "%s", message);
    cr_expect_str_eq(parts[0].filename, "x.png");
    cr_expect_str_eq(parts[0].field, "f");
    serve_form_parts_free(parts, n);
    cr_expect_eq(serve_form_split(body, sizeof BODY - 1, "XYZ", 3, &parts, &n, message,
                                  sizeof message), -1);
    cr_expect(strstr(message, "more than 3 files"), "%s", message);
    serve_form_parts_free(parts, n);
}

Test(serve_http, broken_bodies_are_refused) {
    const char *cases[] = {
        "no boundary here at all",
        "--B\r\nContent-Disposition: form-data; name=\"a\"; filename=\"x\"\r\n\r\ncut off",
        "--B\r\nContent-Disposition: form-data; name=\"a\"\r\nno blank line\r\n--B--",
        "--Bjunk\r\n\r\nx\r\n--B--",
        "--B\r\nContent-Disposition: form-data; name=\"a\"; filename=\"unclosed\r\n\r\nx\r\n--B--",
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        serve_form_part *parts;
        size_t n;
        char message[200] = "";
        cr_expect_eq(serve_form_split((const unsigned char *)cases[i], strlen(cases[i]), "B", 8, &parts,
                                      &n, message, sizeof message), -1, "case %zu", i);
        cr_expect(strstr(message, "multipart/form-data body"), "case %zu: %s", i, message);
        serve_form_parts_free(parts, n);
    }
    /* Bare LF line ends after the delimiter and a part without headers. */
    static const char LF[] = "--B\n\r\nraw\r\n--B--";
    serve_form_part *parts;
    size_t n;
    char message[200];
    cr_expect_eq(serve_form_split((const unsigned char *)LF, sizeof LF - 1, "B", 8, &parts, &n,
                                  message, sizeof message), 0, "%s", message);
    cr_expect_eq(n, 1);
    cr_expect_eq(parts[0].length, 3);
    serve_form_parts_free(parts, n);
}

Test(serve_http, accept_by_media_type_and_q) {
    cr_expect_eq(serve_accept(NULL), SERVE_ANSWER_JSON);
    cr_expect_eq(serve_accept(""), SERVE_ANSWER_JSON);
    cr_expect_eq(serve_accept("application/octet-stream"), SERVE_ANSWER_NPY);
    cr_expect_eq(serve_accept("Application/Octet-Stream"), SERVE_ANSWER_NPY, "case-insensitive");
    cr_expect_eq(serve_accept("application/octet-stream;q=0, application/json"), SERVE_ANSWER_JSON);
    cr_expect_eq(serve_accept("application/octet-stream; q=0.0"), SERVE_ANSWER_NONE);
    cr_expect_eq(serve_accept("application/json;q=0.5, application/octet-stream;q=0.9"), SERVE_ANSWER_NPY);
    cr_expect_eq(serve_accept("application/json;q=0.9, application/octet-stream;q=0.9"), SERVE_ANSWER_JSON);
    cr_expect_eq(serve_accept("*/*"), SERVE_ANSWER_JSON);
    cr_expect_eq(serve_accept("application/*"), SERVE_ANSWER_JSON);
    cr_expect_eq(serve_accept("application/*;q=0.2, application/octet-stream"), SERVE_ANSWER_NPY);
    cr_expect_eq(serve_accept("*/*;q=0.1, application/json;q=0"), SERVE_ANSWER_NPY,
                 "json refused by its own range, octet-stream through */*");
    cr_expect_eq(serve_accept("text/html, image/png"), SERVE_ANSWER_NONE);
    cr_expect_eq(serve_accept("application/octet-streamx"), SERVE_ANSWER_NONE);
    cr_expect_eq(serve_accept("application/octet-stream;q=abc, application/json;q=0.1"),
                 SERVE_ANSWER_JSON, "a range with a malformed q is ignored");
    cr_expect_eq(serve_accept("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
                 SERVE_ANSWER_JSON, "a browser's header");
    cr_expect_eq(serve_accept("  application/octet-stream  ;  q=1 , application/json ; q=0.999"),
                 SERVE_ANSWER_NPY);
}
