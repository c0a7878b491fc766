/* Fuzz target: a DiscoveryResponse from untrusted bytes, as a watched file delivers it: YAML
 * (and so JSON) parsed into a tree, the envelope checked for a type, then every resource's
 * fields read through pt_discovery_resource_reader. Errors must be reported, never crash;
 * an accepted response must hold only resources of the type, each an object, with distinct
 * names and a path. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/discovery_response.h"
#include "proxy/config_reader.h"
#include "proxy/log.h"

static const char *const types[] = {
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
};

static void check(json_t *root, const char *type_url)
{
    pt_discovery_response_t resp;
    char err[2048];
    int rc = pt_discovery_response_parse(root, type_url, &resp, err, sizeof(err));
    if (rc != 0 && err[0] == '\0')
        abort(); /* a refusal always says why */
    if (rc == 0) {
        json_t *names = json_object();
        for (size_t i = 0; i < resp.nresources; i++) {
            const pt_discovery_resource_t *res = &resp.resources[i];
            json_t *t = json_object_get(res->json, "@type");
            if (!json_is_object(res->json) || !json_is_string(t) ||
                strcmp(json_string_value(t), type_url) != 0 || res->path[0] == '\0')
                abort();
            if (res->name != NULL) {
                if (json_object_get(names, res->name) != NULL)
                    abort();
                json_object_set_new(names, res->name, json_true());
            }
            pt_cfg_t r;
            pt_discovery_resource_reader(res, &r);
            const char *name;
            pt_cfg_string(&r, "name", &name, NULL);
            pt_cfg_finish(&r);
            char *joined = pt_cfg_errors_joined(&r);
            free(joined);
            pt_cfg_dispose(&r);
        }
        json_decref(names);
    }
    pt_discovery_response_dispose(&resp);
}

/* A consumer that knew the elements of a first reading (their bytes): a second reading
 * told of them, with guesses of their lengths right, wrong or shifted, must hand out the
 * same elements in the same places, those it knew as known (2), the others as before. (A
 * known element's name is the consumer's to check for duplicates: an element refused as a
 * duplicate of a known one may be handed out.) */
#define MAX_ELEMENTS 64
typedef struct first_reading {
    int got[MAX_ELEMENTS], duplicate[MAX_ELEMENTS];
    const char *text[MAX_ELEMENTS];
    size_t len[MAX_ELEMENTS], index[MAX_ELEMENTS], n;
    unsigned shift;
} first_reading_t;

static int knows(void *data, size_t index, const char *text, size_t len)
{
    const first_reading_t *f = data;
    return index < f->n && f->got[index] == 1 && index % 4 != 3 && len == f->len[index] &&
           memcmp(text, f->text[index], len) == 0;
}

static size_t guess(void *data, size_t index)
{
    const first_reading_t *f = data;
    if (f->n == 0)
        return f->shift;
    size_t at = (index + f->shift % 3) % f->n; /* shift 0: right; else another's length */
    return f->len[at] + (f->shift % 5 == 4 ? 1 : 0);
}

static void check_known(const char *text, size_t size, const char *type_url, unsigned shift)
{
    pt_discovery_response_t a, b;
    char err[2048];
    first_reading_t f = {.shift = shift};
    if (pt_discovery_response_parse_text(text, size, type_url, &a, err, sizeof(err)) != 0)
        return;
    size_t cursor = 0;
    pt_discovery_resource_t res;
    int got;
    while (f.n < MAX_ELEMENTS &&
           (got = pt_discovery_response_next(&a, &cursor, &res, err, sizeof(err))) != 0) {
        f.got[f.n] = got;
        f.duplicate[f.n] = got < 0 && strstr(err, "duplicate name") != NULL;
        if (got == 1) {
            f.text[f.n] = res.text;
            f.len[f.n] = res.text_len;
            f.index[f.n] = res.index;
        }
        f.n++;
    }
    int whole = pt_discovery_response_read_whole(&a);
    if (pt_discovery_response_parse_text(text, size, type_url, &b, err, sizeof(err)) != 0)
        abort(); /* the same text */
    const pt_discovery_known_t k = {.known = knows, .expected_len = guess, .data = &f};
    cursor = 0;
    for (size_t n = 0; n < f.n; n++) {
        got = pt_discovery_response_next_known(&b, &cursor, &res, &k, err, sizeof(err));
        int expect = f.got[n] == 1 && n % 4 != 3 ? 2 : f.got[n];
        if (got != expect && !(f.duplicate[n] && got == 1))
            abort();
        if (got == 1 && f.got[n] == 1 && (res.index != f.index[n] || res.text_len != f.len[n]))
            abort();
    }
    if (f.n < MAX_ELEMENTS &&
        (pt_discovery_response_next_known(&b, &cursor, &res, &k, err, sizeof(err)) != 0 ||
         pt_discovery_response_read_whole(&b) != whole))
        abort(); /* and ends the same way */
    pt_discovery_response_dispose(&a);
    pt_discovery_response_dispose(&b);
}

/* The same bytes read whole and resource by resource must agree: both accept, with the
 * same resources in the same order, or both refuse. */
static void check_stream(const char *text, size_t size, const char *type_url)
{
    pt_discovery_response_t whole, stream;
    char err[2048];
    int src = pt_discovery_response_parse_text(text, size, type_url, &stream, err, sizeof(err));
    if (src == -2)
        return; /* read whole: nothing to compare */
    json_t *root = pt_json_parse(text, size, err, sizeof(err));
    int wrc = root != NULL ? pt_discovery_response_parse(root, type_url, &whole, err, sizeof(err))
                           : -1;
    size_t cursor = 0, k = 0;
    pt_discovery_resource_t res;
    int got = 0, all = src == 0;
    while (all && (got = pt_discovery_response_next(&stream, &cursor, &res, err, sizeof(err))) != 0) {
        if (got < 0) {
            if (err[0] == '\0')
                abort(); /* a refusal always says why */
            if (pt_discovery_response_read_whole(&stream))
                goto done; /* a member after the list: the whole reading decides */
            all = 0;
            break;
        }
        if (wrc == 0) { /* the whole reading must have it at the same place */
            if (k >= whole.nresources || strcmp(whole.resources[k].path, res.path) != 0 ||
                (whole.resources[k].name == NULL) != (res.name == NULL) ||
                (res.name != NULL && strcmp(whole.resources[k].name, res.name) != 0) ||
                !json_equal(whole.resources[k].json, res.json))
                abort();
        }
        k++;
    }
    if (all != (wrc == 0) || (wrc == 0 && k != whole.nresources))
        abort();
done:
    if (root != NULL)
        pt_discovery_response_dispose(&whole);
    json_decref(root);
    pt_discovery_response_dispose(&stream);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        pt_log_threshold = PT_LOG_OFF;
        init = 1;
    }
    if (size > 64 * 1024)
        return 0;
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        check_stream(text, size, types[i]);
        check_known(text, size, types[i], size > 0 ? (unsigned char)text[0] : 0);
    }
    char err[512];
    json_t *root = pt_yaml_parse(text, size, err, sizeof(err));
    free(text);
    if (root == NULL)
        return 0;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        check(root, types[i]);
    json_decref(root);
    return 0;
}
