#include "proxy/transport_match.h"

#include <string.h>

#include "tls/context.h"
#include "tls/transport.h"

static void decref(void *v)
{
    json_decref(v);
}

unsigned pt_transport_matches_parse(pt_cfg_t *r, pt_arena_t *a, pt_transport_match_t **out)
{
    *out = NULL;
    int present;
    size_t n = pt_cfg_array(r, "transport_socket_matches", &present);
    if (!present)
        return 0;
    pt_transport_match_t *m = n ? pt_arena_alloc(a, n * sizeof(*m)) : NULL;
    if (n > 0 && m == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        n = 0;
    }
    for (size_t i = 0; i < n; i++) {
        memset(&m[i], 0, sizeof(m[i]));
        if (pt_cfg_enter_index(r, i) <= 0)
            continue;
        const char *name;
        /* Envoy requires a name: its stats are named after it. */
        if (pt_cfg_string(r, "name", &name, NULL) <= 0 || name == NULL || name[0] == '\0')
            pt_cfg_error(r, "name", "is required");
        else
            m[i].name = pt_arena_strdup(a, name);
        json_t *match = pt_cfg_get(r, "match");
        if (match != NULL && !json_is_object(match)) {
            pt_cfg_error(r, "match", "must be an object (google.protobuf.Struct)");
        } else if (match != NULL && json_object_size(match) > 0) {
            m[i].match = json_incref(match);
            if (pt_arena_defer(a, decref, match) != 0) {
                json_decref(match);
                m[i].match = NULL;
                pt_cfg_error(r, "match", "out of memory");
            }
        }
        /* Unset, the endpoints it takes use raw_buffer (Envoy's default socket). */
        pt_tls_transport_socket_parse(r, a, "transport_socket", 0, &m[i].tls);
        pt_cfg_leave(r);
    }
    pt_cfg_leave_array(r);
    *out = m;
    return (unsigned)n;
}

/* Whether every field of match is in md with an equal value. */
static int satisfies(const json_t *match, const json_t *md)
{
    if (match == NULL)
        return 1;
    if (md == NULL)
        return json_object_size(match) == 0;
    const char *key;
    json_t *want;
    json_object_foreach((json_t *)match, key, want)
    {
        if (!json_equal(json_object_get(md, key), want))
            return 0;
    }
    return 1;
}

int pt_transport_match_find(const pt_transport_match_t *m, unsigned n, const char *metadata)
{
    if (n == 0)
        return -1;
    json_t *root = metadata != NULL ? json_loads(metadata, 0, NULL) : NULL;
    const json_t *md =
        json_object_get(json_object_get(root, "filter_metadata"), PT_TRANSPORT_MATCH_NS);
    if (md != NULL && !json_is_object(md))
        md = NULL;
    int found = -1;
    for (unsigned i = 0; i < n && found < 0; i++)
        if (satisfies(m[i].match, md))
            found = (int)i;
    json_decref(root);
    return found;
}
