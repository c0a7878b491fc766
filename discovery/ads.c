#include "discovery/ads.h"

#include <stdlib.h>
#include <string.h>

#include "discovery/discovery_request.h"
#include "discovery/grpc_stream.h"
#include "discovery/rest_fetch.h"
#include "proxy/cluster.h"
#include "proxy/cluster_manager.h"
#include "proxy/heap.h"
#include "proxy/log.h"
#include "proxy/proto_json.h"
#include "proxy/protobuf.h"
#include "proxy/random.h"
#include "proxy/stats.h"
#include "proxy/time.h"
#include "proxy/view.h"
#include "proxy/worker.h"

#define ADS_PATH        "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define DELTA_PATH      "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
#define TYPE_PREFIX     "type.googleapis.com/"
#define BACKOFF_BASE_MS 500
#define BACKOFF_MAX_MS  30000

/* One resource type on the stream: its watches, and what the control plane last said. */
typedef struct type_state {
    char *type_url;
    pt_ads_watch_t *watches;
    char *version; /* version_info last accepted ("" before one): sent in every request */
    char *nonce;   /* of the last response on this stream ("" before one) */
    int wildcard;  /* LDS and CDS: a watch wants every resource unless it names some */
    int asked;     /* a request went out on this stream: an empty list then unsubscribes */
    /* Delta: `subscribed` is what the watches want (no watch came, went or changed its
     * names since the last request): an ACK then computes no subscription change, so it
     * costs the same among 10,000 names as among one. */
    int names_settled;
    /* Delta: the resources in force (what the watches accepted last), name -> version for
     * named types, name -> {"version", "text"} for wildcard types, whose watches are handed
     * the whole set each time (see delta_apply); and the names subscribed on this stream
     * (an object used as a set; "*" for the wildcard). */
    json_t *have;
    json_t *subscribed;
    char *nack; /* REST: why the last response was refused, for the next poll (or NULL) */
    struct type_state *next;
} type_state_t;

struct pt_ads_watch {
    pt_ads_t *ads;
    type_state_t *type;
    pt_file_subscription_cb cb;
    void *data;
    pt_subscription_stats_t stats;
    char *what;
    char *version;
    char **names; /* NULL with nnames 0: the wildcard */
    size_t nnames;
    json_t *name_set; /* the names as an object used as a set (NULL for the wildcard) */
    int by_resource;        /* reads a response with pt_discovery_response_next, to its end */
    int dead;               /* unwatched while a response was being delivered: freed after it */
    int fetched;            /* a response of its type came (the initial fetch is over) */
    uint64_t warm_until_ms; /* the initial fetch's deadline (UINT64_MAX: none) */
    pt_ads_watch_t *next;
};

struct pt_ads {
    char *cluster_name;
    int delta; /* DELTA_GRPC: incremental requests and responses */
    int node_first_only;
    json_t *node;
    /* A source's own stream: its one type and its key (pt_xds_mux_for); NULL for ADS. */
    char *type_url, *key;
    const char *path; /* the gRPC method */
    char log_name[8]; /* "ads", or the type's "cds", "eds", ... */
    pt_grpc_stream_t *stream; /* NULL between streams */
    int node_sent;            /* on this stream */
    int connected;
    int started;         /* the server runs: streams may open */
    int stopped;         /* shutting down: no more streams */
    uint64_t backoff_ms; /* the next retry's ceiling */
    ev_timer retry;
    ev_timer idle;       /* a source's own stream without watches: closed from a loop turn */
    unsigned delivering; /* responses being handed out (watches are not freed then) */
    type_state_t *types;
    pt_stat_t connected_state;
    /* REST-JSON (api_type REST): no stream; the type's DiscoveryRequest is POSTed as JSON
     * to rest_path every refresh_ms (and at once when the names wanted change). */
    int rest;
    uint64_t refresh_ms, request_timeout_ms;
    const char *rest_path;
    pt_rest_fetch_t *fetch; /* the poll in flight */
    int poll_again;         /* the names changed while it was: the next one at once */
    ev_timer poll;          /* the next poll */
    pt_ads_t *next;      /* every mux of the process */
};

/* What every mux shares (pt_xds_init). */
static struct {
    pt_cluster_manager_t *cm;
    pt_worker_t *worker;
    json_t *node;
    pt_ads_t *ads;  /* the aggregated stream, if the bootstrap has one */
    pt_ads_t *all;  /* every mux, ADS among them */
    int started, stopped;
} xds;

pt_ads_t *pt_ads_current(void)
{
    return xds.ads;
}

static int set_str(char **slot, const char *v)
{
    char *copy = strdup(v != NULL ? v : "");
    if (copy == NULL)
        return -1;
    free(*slot);
    *slot = copy;
    return 0;
}

/* ---- requests ------------------------------------------------------------------------ */

static json_t *node_of(const pt_ads_t *a);

/* Sends the type's DiscoveryRequest: its names (the union of its watches', or none for a
 * wildcard), the version it has, the last nonce, and error_detail for a NACK. */
/* Sends an encoded request (w is disposed). */
static void send_encoded(pt_ads_t *a, const type_state_t *t, pt_pb_writer_t *w, int rc,
                         const char *err)
{
    if (rc != 0 || w->failed)
        pt_error("ads: cannot encode a request for %s: %s", t->type_url, err);
    else if (pt_grpc_stream_send(a->stream, w->buf, w->len) == 0)
        a->node_sent = 1;
    pt_pb_writer_dispose(w);
}

/* The names the type's live watches want: a set (object), with "*" for a wildcard. */
static json_t *wanted_names(const type_state_t *t)
{
    json_t *set = json_object();
    for (pt_ads_watch_t *w = t->watches; w != NULL; w = w->next) {
        if (w->dead)
            continue;
        if (w->names == NULL && t->wildcard)
            json_object_set_new(set, "*", json_true());
        for (size_t i = 0; i < w->nnames; i++)
            json_object_set_new(set, w->names[i], json_true());
    }
    return set;
}

/* The keys of an object (borrowed, valid while it is), in a new array; *n of them. */
static const char **keys_of(json_t *obj, size_t *n)
{
    const char **keys = malloc((json_object_size(obj) + 1) * sizeof(*keys));
    const char *k;
    json_t *v;
    *n = 0;
    if (keys != NULL)
        json_object_foreach(obj, k, v) keys[(*n)++] = k;
    return keys;
}

/* A state-of-the-world DiscoveryRequest: the names the watches want (none for a
 * wildcard), the version petrel has, the last nonce, error_detail for a NACK. */
static void send_sotw_request(pt_ads_t *a, type_state_t *t, const char *nack)
{
    json_t *want = wanted_names(t);
    if (json_object_size(want) == 0 && !t->asked) {
        json_decref(want); /* nothing named yet: an empty list would ask for everything */
        return;
    }
    t->asked = 1;
    if (json_object_get(want, "*") != NULL)
        json_object_clear(want); /* the legacy wildcard: no names */
    size_t n;
    const char **names = keys_of(want, &n);
    pt_discovery_request_t req = {
        .node = !a->node_sent || !a->node_first_only ? node_of(a) : NULL,
        .type_url = t->type_url,
        .version_info = t->version,
        .response_nonce = t->nonce,
        .resource_names = names,
        .nresource_names = n,
        .error_message = nack,
    };
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    char err[256] = "out of memory";
    int rc = names != NULL ? pt_discovery_request_encode(&req, &w, err, sizeof(err)) : -1;
    send_encoded(a, t, &w, rc, err);
    free(names);
    json_decref(want);
}

/* A DeltaDiscoveryRequest: names subscribed and unsubscribed since the last one on this
 * stream; on a new stream, the versions in force (initial_resource_versions); an ACK or
 * NACK of the last response by its nonce. */
static void send_delta_request(pt_ads_t *a, type_state_t *t, const char *nack)
{
    /* What the watches want, unless it is what was asked for already (names_settled). */
    json_t *want = t->asked && t->names_settled ? json_incref(t->subscribed) : wanted_names(t);
    if (json_object_size(want) == 0 && !t->asked) {
        json_decref(want);
        return;
    }
    json_t *sub = json_object(), *unsub = json_object();
    const char *name;
    json_t *v;
    json_object_foreach(want, name, v)
    {
        if (json_object_get(t->subscribed, name) == NULL)
            json_object_set_new(sub, name, json_true());
    }
    json_object_foreach(t->subscribed, name, v)
    {
        if (json_object_get(want, name) == NULL)
            json_object_set_new(unsub, name, json_true());
    }
    size_t nsub, nunsub, ninit = 0;
    const char **subs = keys_of(sub, &nsub), **unsubs = keys_of(unsub, &nunsub);
    const char **init_names = NULL, **init_versions = NULL;
    if (!t->asked) { /* a new stream: what petrel holds */
        init_names = keys_of(t->have, &ninit);
        init_versions = malloc((ninit + 1) * sizeof(*init_versions));
        for (size_t i = 0; init_versions != NULL && i < ninit; i++) {
            json_t *ver = json_object_get(t->have, init_names[i]);
            if (json_is_object(ver)) /* a wildcard type's entry: {"version", "text"} */
                ver = json_object_get(ver, "version");
            init_versions[i] = json_is_string(ver) ? json_string_value(ver) : "";
        }
    }
    pt_delta_discovery_request_t req = {
        .node = !a->node_sent || !a->node_first_only ? node_of(a) : NULL,
        .type_url = t->type_url,
        .response_nonce = t->nonce,
        .subscribe = subs,
        .nsubscribe = nsub,
        .unsubscribe = unsubs,
        .nunsubscribe = nunsub,
        .initial_names = init_names,
        .initial_versions = init_versions,
        .ninitial = ninit,
        .error_message = nack,
    };
    pt_pb_writer_t w;
    pt_pb_writer_init(&w);
    char err[256] = "out of memory";
    int ok = subs != NULL && unsubs != NULL &&
             (t->asked || (init_names != NULL && init_versions != NULL));
    int rc = ok ? pt_delta_discovery_request_encode(&req, &w, err, sizeof(err)) : -1;
    t->asked = 1;
    send_encoded(a, t, &w, rc, err);
    free(subs);
    free(unsubs);
    free(init_names);
    free(init_versions);
    json_decref(sub);
    json_decref(unsub);
    json_decref(t->subscribed);
    t->subscribed = want;
    t->names_settled = 1;
}

static int live_watches(const pt_ads_t *a);

/* Delta: what no watch wants any more is forgotten (its unsubscription makes the control
 * plane forget it too), so that asking for it again gets it again, on this stream or, with
 * initial_resource_versions, on the next. */
static void prune_have(type_state_t *t)
{
    json_t *want = wanted_names(t);
    if (json_object_get(want, "*") == NULL) {
        const char *name;
        json_t *v, *tmp;
        json_object_foreach_safe(t->have, tmp, name, v)
        {
            if (json_object_get(want, name) == NULL)
                json_object_del(t->have, name);
        }
    }
    json_decref(want);
}

static void rest_poll_soon(pt_ads_t *a);

static void send_request(pt_ads_t *a, type_state_t *t, const char *nack)
{
    if (a != NULL && a->rest) {
        rest_poll_soon(a); /* the names wanted changed: ask now */
        return;
    }
    if (a == NULL || a->stream == NULL)
        return;
    /* A source's own stream without watches is about to close: it asks for nothing. */
    if (a->type_url != NULL && !live_watches(a))
        return;
    if (a->delta)
        send_delta_request(a, t, nack);
    else
        send_sotw_request(a, t, nack);
}

/* ---- responses ----------------------------------------------------------------------- */

static type_state_t *type_of(pt_ads_t *a, const char *type_url)
{
    for (type_state_t *t = a->types; t != NULL; t = t->next)
        if (strcmp(t->type_url, type_url) == 0)
            return t;
    return NULL;
}

/* type_url (field 4) and nonce (field 5) of a response that did not decode: enough to
 * NACK it. */
static void raw_envelope(const void *msg, size_t len, char *type_url, size_t tlen, char *nonce,
                         size_t nlen)
{
    pt_pb_reader_t r;
    pt_pb_reader_init(&r, msg, len);
    type_url[0] = nonce[0] = '\0';
    while (!pt_pb_reader_done(&r)) {
        uint32_t field;
        int wt;
        if (pt_pb_read_tag(&r, &field, &wt) != 0)
            return;
        if (wt == PT_PB_WIRE_LEN && (field == 4 || field == 5)) {
            const uint8_t *p;
            size_t n;
            if (pt_pb_read_len(&r, &p, &n) != 0)
                return;
            char *out = field == 4 ? type_url : nonce;
            size_t cap = field == 4 ? tlen : nlen;
            snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), (const char *)p);
        } else if (pt_pb_skip(&r, wt) != 0) {
            return;
        }
    }
}

static void free_watch(pt_ads_watch_t *w)
{
    json_decref(w->name_set);
    for (size_t i = 0; i < w->nnames; i++)
        free(w->names[i]);
    free(w->names);
    free(w->what);
    free(w->version);
    free(w);
}

static int live_watches(const pt_ads_t *a)
{
    for (const type_state_t *t = a->types; t != NULL; t = t->next)
        for (const pt_ads_watch_t *w = t->watches; w != NULL; w = w->next)
            if (!w->dead)
                return 1;
    return 0;
}

/* Frees the watches unwatched while responses were handed out; a source's own stream left
 * without watches is closed from a loop turn of its own (not under its callbacks). */
static void reap_watches(pt_ads_t *a)
{
    for (type_state_t *t = a->types; t != NULL; t = t->next)
        for (pt_ads_watch_t **pp = &t->watches; *pp != NULL;) {
            pt_ads_watch_t *w = *pp;
            if (!w->dead) {
                pp = &w->next;
                continue;
            }
            *pp = w->next;
            free_watch(w);
        }
    if (a->type_url != NULL && (a->stream != NULL || a->rest) && a->started && !a->stopped &&
        !live_watches(a)) {
        ev_timer_stop(xds.worker->loop, &a->idle);
        ev_timer_set(&a->idle, 0., 0.);
        ev_timer_start(xds.worker->loop, &a->idle);
    }
}

/* Whether a watch wants to hear of a response that touched these names (an object used as
 * a set; NULL: it touched everything): a wildcard watch hears of all, a watch of names of
 * those that have, change or remove one of its names. */
static int concerns(const pt_ads_watch_t *w, const json_t *touched)
{
    if (touched == NULL || w->names == NULL)
        return 1;
    if (w->name_set != NULL && json_object_size(touched) < w->nnames) {
        /* a few names touched among many watched: looked up the other way */
        const char *name;
        json_t *v;
        json_object_foreach((json_t *)touched, name, v)
            if (json_object_get(w->name_set, name) != NULL)
                return 1;
        return 0;
    }
    for (size_t i = 0; i < w->nnames; i++)
        if (json_object_get(touched, w->names[i]) != NULL)
            return 1;
    return 0;
}

/* Hands a checked response to each watch of its type it concerns; 0 when every one
 * accepted it, else -1 with the first refusal in err. */
static int deliver(pt_ads_t *a, type_state_t *t, const pt_discovery_response_t *resp,
                   const json_t *touched, char *err, size_t errlen)
{
    int refused = 0;
    a->delivering++;
    for (pt_ads_watch_t *w = t->watches; w != NULL; w = w->next) {
        if (w->dead || !concerns(w, touched))
            continue;
        char why[2048];
        why[0] = '\0';
        w->fetched = 1;
        pt_stat_inc(w->stats.update_attempt);
        if (w->cb(w->data, resp, why, sizeof(why)) != 0) {
            pt_stat_inc(w->stats.update_rejected);
            pt_warn("%s: %s version %s rejected: %s", a->log_name, w->what, resp->version_info,
                    why);
            if (!refused)
                snprintf(err, errlen, "%s", why[0] ? why : "rejected");
            refused = 1;
            continue;
        }
        if (w->dead)
            continue;
        pt_stat_inc(w->stats.update_success);
        pt_stat_set_text(w->stats.version_text, resp->version_info);
        set_str(&w->version, resp->version_info);
    }
    if (--a->delivering == 0)
        reap_watches(a);
    return refused ? -1 : 0;
}

/* The type a response is of and its nonce, from the raw fields (the message is decoded by
 * the type's reading, resource by resource): NULL when nothing watches the type. */
static type_state_t *response_type(pt_ads_t *a, const void *msg, size_t len, char *type_url,
                                   size_t tlen)
{
    char nonce[256];
    raw_envelope(msg, len, type_url, tlen, nonce, sizeof(nonce));
    /* A type's own stream carries its type: a response that does not say is of it. */
    if (type_url[0] == '\0' && a->type_url != NULL)
        snprintf(type_url, tlen, "%s", a->type_url);
    type_state_t *t = type_of(a, type_url);
    if (t == NULL) {
        pt_warn("%s: a response for %s, which nothing watches: ignored", a->log_name,
                type_url[0] ? type_url : "(no type_url)");
        return NULL;
    }
    set_str(&t->nonce, nonce);
    return t;
}

/* A response that cannot be judged (it does not decode, its envelope is invalid): every
 * watch of its type counts an attempt rejected. */
static void reject_all(pt_ads_t *a, type_state_t *t, const char *err)
{
    for (pt_ads_watch_t *w = t->watches; w != NULL; w = w->next) {
        w->fetched = 1;
        pt_stat_inc(w->stats.update_attempt);
        pt_stat_inc(w->stats.update_rejected);
    }
    pt_warn("%s: %s rejected: %s", a->log_name, t->type_url, err);
}

/* Whether a watch the response concerns wants its resources at once (resp->resources):
 * then every one is decoded first, as the response read whole. */
static int wants_whole(const type_state_t *t, const json_t *touched)
{
    for (const pt_ads_watch_t *w = t->watches; w != NULL; w = w->next)
        if (!w->dead && !w->by_resource && concerns(w, touched))
            return 1;
    return 0;
}

/* Judges a response read resource by resource and hands it to the type's watches it
 * concerns (touched: the names a delta response touched; NULL for a state-of-the-world
 * one, whose resources are what it touches): 0 accepted by all, else -1 with why in err.
 *
 * Whole or not at all, as Envoy: each watch that reads resource by resource reads every
 * element and refuses the response for any invalid one, before it applies anything; the
 * elements no watch read are checked after (a response that concerns no watch changes
 * nothing, but an invalid one is NACKed all the same); a watch that wants them at once
 * gets them all decoded first. */
static int judge_lazy(pt_ads_t *a, type_state_t *t, pt_discovery_response_t *resp,
                      const json_t *touched, char *err, size_t errlen)
{
    json_t *mine = (json_t *)touched;
    if (mine == NULL && !t->wildcard) {
        mine = json_object();
        size_t n = pt_discovery_response_count(resp);
        for (size_t i = 0; mine != NULL && i < n; i++) {
            pt_discovery_element_t el;
            pt_discovery_response_element(resp, i, &el);
            if (el.name != NULL)
                json_object_set_new(mine, el.name, json_true());
        }
    }
    int rc = 0;
    if (wants_whole(t, mine) && pt_discovery_response_materialize(resp, err, errlen) != 0) {
        reject_all(a, t, err);
        rc = -1;
    }
    if (rc == 0)
        rc = deliver(a, t, resp, mine, err, errlen);
    if (rc == 0 && pt_discovery_response_check_rest(resp, err, errlen) != 0) {
        pt_warn("%s: %s version %s rejected: %s", a->log_name, t->type_url,
                resp->version_info, err);
        rc = -1;
    }
    if (mine != touched)
        json_decref(mine);
    if (rc == 0)
        set_str(&t->version, resp->version_info);
    return rc;
}

static void on_delta_message(pt_ads_t *a, const void *msg, size_t len, uint64_t begun_us,
                             char *err, size_t errlen);

/* The names a delta response touches (added, changed or removed), into touched: 0, or -1
 * with why in err when one has no name. */
static int delta_touched(const pt_discovery_response_t *resp, json_t *touched, char *err,
                         size_t errlen)
{
    size_t n = pt_discovery_response_count(resp), i;
    for (i = 0; i < n; i++) {
        pt_discovery_element_t el;
        pt_discovery_response_element(resp, i, &el);
        if (el.name == NULL) {
            snprintf(err, errlen, "resources[%zu].name: is required", i);
            return -1;
        }
        json_object_set_new(touched, el.name, json_true());
    }
    json_t *r;
    json_array_foreach(json_object_get(resp->root, "removed_resources"), i, r)
        if (json_is_string(r))
            json_object_set_new(touched, json_string_value(r), json_true());
    return 0;
}

/* An accepted delta response applied to the type's resources in force (have): the
 * resources it adds or changes, less those it removes (or names without a body). Wildcard
 * types (LDS, CDS) keep each body as its canonical text, as their watches read the whole
 * set (the response's resources and these texts, pt_discovery_response_add_text); named
 * types (EDS, RDS, SDS) only the versions, as their watches get the resources a response
 * carries (one missing from a response is unchanged for them, as in the state of the
 * world): what a response costs follows what it changes, and bodies already applied are
 * not held twice. */
static void delta_commit(const type_state_t *t, const pt_discovery_response_t *resp)
{
    size_t n = pt_discovery_response_count(resp), i;
    for (i = 0; i < n; i++) {
        pt_discovery_element_t el;
        pt_discovery_response_element(resp, i, &el);
        if (el.version == NULL) /* an element of the set in force, not of the response */
            continue;
        if (!el.has_body) {
            json_object_del(t->have, el.name); /* known not to exist */
            continue;
        }
        json_t *version = json_string(el.version);
        if (!t->wildcard) { /* the version alone */
            json_object_set_new(t->have, el.name, version);
            continue;
        }
        json_t *entry = json_object();
        json_object_set_new(entry, "version", version);
        if (el.text != NULL)
            json_object_set_new(entry, "text", json_stringn(el.text, el.text_len));
        json_object_set_new(t->have, el.name, entry);
    }
    json_t *r;
    json_array_foreach(json_object_get(resp->root, "removed_resources"), i, r)
        if (json_is_string(r))
            json_object_del(t->have, json_string_value(r));
}

/* Judges a response (a state-of-the-world tree, from REST) and hands it to the type's
 * watches it concerns: 0 accepted by all, else -1 with why in err. */
static int judge(pt_ads_t *a, type_state_t *t, json_t *root, const char *type_url,
                 json_t *touched, char *err, size_t errlen)
{
    pt_discovery_response_t resp;
    int rc = pt_discovery_response_parse(root, type_url, &resp, err, errlen);
    if (rc == 0) {
        json_t *mine = touched;
        if (mine == NULL && !t->wildcard) {
            mine = json_object();
            for (size_t i = 0; i < resp.nresources; i++)
                if (resp.resources[i].name != NULL)
                    json_object_set_new(mine, resp.resources[i].name, json_true());
        }
        rc = deliver(a, t, &resp, mine, err, errlen);
        if (mine != touched)
            json_decref(mine);
        if (rc == 0)
            set_str(&t->version, resp.version_info);
    } else {
        reject_all(a, t, err);
    }
    pt_discovery_response_dispose(&resp);
    return rc;
}

static void note_connected(pt_ads_t *a)
{
    if (a->connected)
        return;
    a->connected = 1;
    pt_stat_inc(a->connected_state);
    pt_info("%s: connected to %s", a->log_name, a->cluster_name);
}

static void note_disconnected(pt_ads_t *a)
{
    if (!a->connected)
        return;
    a->connected = 0;
    pt_stat_dec(a->connected_state);
}

/* A big response is freed next (its message, and the trees of its resources when a watch
 * wanted them at once): the heap's peak is noted first, so that the housekeeping tick sees
 * the drop and gives the free pages back (proxy/heap.h). */
static void note_peak(size_t len)
{
    if (len >= 64 * 1024)
        pt_heap_note_peak();
}

/* The outcome of a response, once answered: an accepted one is logged with its size and the
 * time from its last byte (the whole message in hand) to its ACK, everything applied. */
static void log_accepted(const pt_ads_t *a, const type_state_t *t, const char *type_url,
                         size_t len, uint64_t begun_us)
{
    pt_info("%s: %s version %s accepted (%zu bytes, applied and ACKed in %.3f ms)", a->log_name,
            type_url, t->version != NULL ? t->version : "", len,
            (double)(pt_now_us() - begun_us) / 1000.0);
}

static void on_message(void *data, const void *msg, size_t len)
{
    pt_ads_t *a = data;
    uint64_t begun_us = pt_now_us();
    note_connected(a);
    a->backoff_ms = BACKOFF_BASE_MS; /* the control plane answers: start over */
    char err[4096];
    if (a->delta) {
        on_delta_message(a, msg, len, begun_us, err, sizeof(err));
        return;
    }
    char type_url[256];
    type_state_t *t = response_type(a, msg, len, type_url, sizeof(type_url));
    if (t == NULL)
        return;
    pt_discovery_response_t resp;
    int rc = pt_discovery_response_parse_protobuf_lazy(msg, len, t->type_url, &resp, err,
                                                       sizeof(err));
    if (rc == 0)
        rc = judge_lazy(a, t, &resp, NULL, err, sizeof(err));
    else
        reject_all(a, t, err);
    note_peak(len);
    pt_discovery_response_dispose(&resp);
    /* The watches may have ended the stream (the last one gone): nothing to answer then. */
    if (a->stream != NULL)
        send_request(a, t, rc == 0 ? NULL : err);
    if (rc == 0)
        log_accepted(a, t, type_url, len, begun_us);
}

/* A DeltaDiscoveryResponse: for a wildcard type, judged as the whole set it makes with the
 * resources in force (their texts read after its own resources); for a named type, judged
 * by what it carries. Read resource by resource either way; ACKed or NACKed by its nonce. */
static void on_delta_message(pt_ads_t *a, const void *msg, size_t len, uint64_t begun_us,
                             char *err, size_t errlen)
{
    char type_url[256];
    type_state_t *t = response_type(a, msg, len, type_url, sizeof(type_url));
    if (t == NULL)
        return;
    pt_discovery_response_t resp;
    json_t *touched = json_object();
    int rc = pt_discovery_response_parse_delta(msg, len, t->type_url, t->wildcard, &resp, err,
                                               errlen);
    if (rc == 0 && (touched == NULL || delta_touched(&resp, touched, err, errlen) != 0))
        rc = -1;
    if (rc == 0 && t->wildcard) { /* the set in force, whole, as the next state would have it */
        const char *name;
        json_t *v;
        json_object_foreach(t->have, name, v)
        {
            json_t *text = json_object_get(v, "text");
            if (json_object_get(touched, name) == NULL &&
                (!json_is_string(text) ||
                 pt_discovery_response_add_text(&resp, name, json_string_value(text),
                                                json_string_length(text)) != 0)) {
                snprintf(err, errlen, "out of memory"); /* no set rather than one missing a resource */
                rc = -1;
                break;
            }
        }
    }
    if (rc == 0) {
        rc = judge_lazy(a, t, &resp, t->wildcard ? NULL : touched, err, errlen);
        if (rc == 0)
            delta_commit(t, &resp);
    } else {
        reject_all(a, t, err);
    }
    json_decref(touched);
    note_peak(len);
    pt_discovery_response_dispose(&resp);
    if (a->stream != NULL)
        send_request(a, t, rc == 0 ? NULL : err);
    if (rc == 0)
        log_accepted(a, t, type_url, len, begun_us);
}

/* ---- the stream ---------------------------------------------------------------------- */

static void open_stream(pt_ads_t *a);

static void on_retry(struct ev_loop *loop, ev_timer *tm, int revents)
{
    (void)loop, (void)revents;
    open_stream(tm->data);
}

/* The next attempt after a jittered wait: uniform in [0, backoff], the ceiling doubling up
 * to 30 s (Envoy's JitteredExponentialBackOffStrategy with its defaults for xDS). */
static void schedule_retry(pt_ads_t *a)
{
    uint64_t wait = a->backoff_ms > 0 ? pt_random_u64() % (a->backoff_ms + 1) : 0;
    a->backoff_ms = a->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : a->backoff_ms * 2;
    ev_timer_stop(xds.worker->loop, &a->retry);
    ev_timer_set(&a->retry, (double)wait / 1000.0, 0.);
    ev_timer_start(xds.worker->loop, &a->retry);
}

static void on_open(void *data)
{
    note_connected(data);
}

static void on_close(void *data, int status, const char *message)
{
    pt_ads_t *a = data;
    pt_warn("%s: stream to %s closed (grpc-status %d%s%s); the last accepted config stays",
            a->log_name, a->cluster_name, status, message[0] ? ": " : "", message);
    pt_grpc_stream_free(a->stream);
    a->stream = NULL;
    note_disconnected(a);
    if (!a->stopped)
        schedule_retry(a);
}

static const pt_grpc_stream_callbacks_t stream_callbacks = {
    .on_open = on_open,
    .on_message = on_message,
    .on_close = on_close,
};

static void open_stream(pt_ads_t *a)
{
    if (a->stream != NULL || a->stopped || !a->started)
        return;
    /* A source's own stream is for its watches: none, no stream. */
    if (a->type_url != NULL && !live_watches(a))
        return;
    if (a->rest) {
        rest_poll_soon(a);
        return;
    }
    char err[256];
    pt_view_t *view = pt_cluster_manager_view(xds.cm);
    pt_cluster_t *c = view != NULL ? pt_view_find_cluster(view, a->cluster_name) : NULL;
    if (c == NULL) {
        pt_warn("%s: cluster %s does not exist (yet)", a->log_name, a->cluster_name);
    } else {
        a->stream = pt_grpc_stream_open(c, xds.worker, a->path, a->cluster_name,
                                        &stream_callbacks, a, err, sizeof(err));
        if (a->stream == NULL)
            pt_warn("%s: %s", a->log_name, err);
    }
    pt_view_unref(view);
    if (a->stream == NULL) {
        schedule_retry(a);
        return;
    }
    /* A new stream: every type is asked for again, with the version it has (Envoy's
     * resumption), and the node goes with the first request. */
    a->node_sent = 0;
    for (type_state_t *t = a->types; t != NULL; t = t->next) {
        set_str(&t->nonce, "");
        t->asked = 0;
        json_object_clear(t->subscribed); /* a new stream subscribes afresh */
        if (t->watches != NULL)
            send_request(a, t, NULL);
    }
}

/* Ends the stream (no retry): a source's own stream whose last watch went. */
static void close_stream(pt_ads_t *a)
{
    ev_timer_stop(xds.worker->loop, &a->retry);
    if (a->rest) { /* no more polls */
        ev_timer_stop(xds.worker->loop, &a->poll);
        pt_rest_fetch_free(a->fetch);
        a->fetch = NULL;
        return;
    }
    if (a->stream == NULL)
        return;
    pt_info("%s: no more watches: stream to %s closed", a->log_name, a->cluster_name);
    pt_grpc_stream_free(a->stream);
    a->stream = NULL;
    note_disconnected(a);
    a->backoff_ms = BACKOFF_BASE_MS;
}

static void on_idle(struct ev_loop *loop, ev_timer *tm, int revents)
{
    (void)loop, (void)revents;
    pt_ads_t *a = tm->data;
    if (!live_watches(a))
        close_stream(a);
}

/* ---- REST-JSON ------------------------------------------------------------------------ */

static void rest_poll(pt_ads_t *a);

static void on_poll(struct ev_loop *loop, ev_timer *tm, int revents)
{
    (void)loop, (void)revents;
    rest_poll(tm->data);
}

static void rest_schedule(pt_ads_t *a, uint64_t after_ms)
{
    if (a->stopped || !a->started || xds.worker == NULL)
        return;
    ev_timer_stop(xds.worker->loop, &a->poll);
    ev_timer_set(&a->poll, (double)after_ms / 1000.0, 0.);
    ev_timer_start(xds.worker->loop, &a->poll);
}

/* A poll now, unless one is in flight (its answer schedules the next). */
static void rest_poll_soon(pt_ads_t *a)
{
    if (a->fetch == NULL)
        rest_schedule(a, 0);
    else
        a->poll_again = 1;
}

/* Every watch of the mux counts a fetch that failed (Envoy's update_failure). */
static void rest_failed(pt_ads_t *a, const char *why)
{
    for (type_state_t *t = a->types; t != NULL; t = t->next)
        for (pt_ads_watch_t *w = t->watches; w != NULL; w = w->next)
            if (!w->dead)
                pt_stat_inc(w->stats.update_failure);
    pt_warn("%s: poll of %s failed: %s; the last accepted config stays", a->log_name,
            a->cluster_name, why);
}

/* The answer to a poll: 200 with a DiscoveryResponse as JSON (judged as a stream's: ACKed by
 * the next poll's version, or NACKed by its error_detail), 304 (nothing changed), or a
 * failure. The next poll comes refresh_delay later. */
static void on_rest_done(void *data, int status, const char *body, size_t len, const char *why)
{
    pt_ads_t *a = data;
    pt_rest_fetch_free(a->fetch);
    a->fetch = NULL;
    type_state_t *t = a->types;
    if (t == NULL) {
        /* nothing watches any more */
    } else if (status == 200) {
        note_connected(a);
        char err[4096];
        json_t *root = pt_json_parse(body, len, err, sizeof(err));
        int rc = -1;
        if (root != NULL) {
            json_t *nn = json_object_get(root, "nonce");
            set_str(&t->nonce, json_is_string(nn) ? json_string_value(nn) : "");
            uint64_t begun_us = pt_now_us();
            rc = judge(a, t, root, t->type_url, NULL, err, sizeof(err));
            json_decref(root);
            if (rc == 0) /* ACKed by the next poll */
                pt_info("%s: %s version %s accepted (%zu bytes, applied in %.3f ms)",
                        a->log_name, t->type_url, t->version != NULL ? t->version : "", len,
                        (double)(pt_now_us() - begun_us) / 1000.0);
        } else {
            for (pt_ads_watch_t *w = t->watches; w != NULL; w = w->next) {
                w->fetched = 1;
                pt_stat_inc(w->stats.update_attempt);
                pt_stat_inc(w->stats.update_rejected);
            }
            pt_warn("%s: %s rejected: %s", a->log_name, t->type_url, err);
        }
        free(t->nack);
        t->nack = rc == 0 ? NULL : strdup(err);
    } else if (status == 304) {
        note_connected(a); /* unchanged */
    } else {
        char what[320];
        if (status != 0)
            snprintf(what, sizeof(what), "HTTP status %d", status);
        else
            snprintf(what, sizeof(what), "%s", why);
        note_disconnected(a);
        rest_failed(a, what);
    }
    if (live_watches(a))
        rest_schedule(a, a->poll_again ? 0 : a->refresh_ms);
    a->poll_again = 0;
}

/* POSTs the type's DiscoveryRequest as JSON: the names its watches want (none for a
 * wildcard), the version accepted last, the node (every time, as Envoy's REST subscription
 * sends it), and error_detail when the last response was refused. */
static void rest_poll(pt_ads_t *a)
{
    type_state_t *t = a->types;
    if (a->fetch != NULL || a->stopped || !a->started || t == NULL || !live_watches(a))
        return;
    json_t *want = wanted_names(t);
    if (json_object_get(want, "*") != NULL)
        json_object_clear(want);
    size_t n;
    const char **names = keys_of(want, &n);
    pt_discovery_request_t req = {
        .node = node_of(a),
        .type_url = t->type_url,
        .version_info = t->version,
        .response_nonce = t->nonce,
        .resource_names = names,
        .nresource_names = n,
        .error_message = t->nack,
    };
    char err[256] = "out of memory";
    char *body = names != NULL ? pt_discovery_request_json(&req, err, sizeof(err)) : NULL;
    free(names);
    json_decref(want);
    if (body == NULL) {
        pt_error("%s: cannot encode a request for %s: %s", a->log_name, t->type_url, err);
        rest_schedule(a, a->refresh_ms);
        return;
    }
    pt_view_t *view = pt_cluster_manager_view(xds.cm);
    pt_cluster_t *c = view != NULL ? pt_view_find_cluster(view, a->cluster_name) : NULL;
    if (c == NULL)
        snprintf(err, sizeof(err), "cluster %s does not exist (yet)", a->cluster_name);
    else
        a->fetch = pt_rest_fetch_start(c, xds.worker, "POST", a->rest_path, a->cluster_name,
                                       "application/json", body, strlen(body),
                                       a->request_timeout_ms, on_rest_done, a, err, sizeof(err));
    pt_view_unref(view);
    free(body);
    if (a->fetch == NULL) {
        rest_failed(a, err);
        rest_schedule(a, a->refresh_ms);
    }
}

/* The path of a type's own service: the last part of its type URL names it. */
static const struct {
    const char *type_url, *service, *stream, *delta, *rest;
} services[] = {
    {TYPE_PREFIX "envoy.config.listener.v3.Listener",
     "envoy.service.listener.v3.ListenerDiscoveryService", "StreamListeners", "DeltaListeners",
     "/v3/discovery:listeners"},
    {TYPE_PREFIX "envoy.config.cluster.v3.Cluster",
     "envoy.service.cluster.v3.ClusterDiscoveryService", "StreamClusters", "DeltaClusters",
     "/v3/discovery:clusters"},
    {TYPE_PREFIX "envoy.config.route.v3.RouteConfiguration",
     "envoy.service.route.v3.RouteDiscoveryService", "StreamRoutes", "DeltaRoutes",
     "/v3/discovery:routes"},
    {TYPE_PREFIX "envoy.config.endpoint.v3.ClusterLoadAssignment",
     "envoy.service.endpoint.v3.EndpointDiscoveryService", "StreamEndpoints",
     "DeltaEndpoints", "/v3/discovery:endpoints"},
    {TYPE_PREFIX "envoy.extensions.transport_sockets.tls.v3.Secret",
     "envoy.service.secret.v3.SecretDiscoveryService", "StreamSecrets", "DeltaSecrets",
     "/v3/discovery:secrets"},
};

static const char *const short_names[] = {"lds", "cds", "rds", "eds", "sds"};

const char *pt_xds_service_path(const char *type_url, int delta)
{
    static char paths[2][sizeof(services) / sizeof(services[0])][128];
    for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++) {
        if (strcmp(services[i].type_url, type_url) != 0)
            continue;
        char *p = paths[delta != 0][i];
        if (p[0] == '\0')
            snprintf(p, sizeof(paths[0][0]), "/%s/%s", services[i].service,
                     delta ? services[i].delta : services[i].stream);
        return p;
    }
    return NULL;
}

static pt_ads_t *mux_new(const pt_ads_config_t *cfg)
{
    pt_ads_t *a = calloc(1, sizeof(*a));
    if (a == NULL || (a->cluster_name = strdup(cfg->cluster_name)) == NULL ||
        (cfg->type_url != NULL && (a->type_url = strdup(cfg->type_url)) == NULL)) {
        if (a != NULL) {
            free(a->cluster_name);
            free(a);
        }
        return NULL;
    }
    a->node_first_only = cfg->set_node_on_first_message_only;
    a->delta = cfg->delta;
    a->node = cfg->node != NULL ? json_incref(cfg->node) : NULL; /* NULL: the process's */
    a->backoff_ms = BACKOFF_BASE_MS;
    ev_timer_init(&a->retry, on_retry, 0., 0.);
    a->retry.data = a;
    ev_timer_init(&a->idle, on_idle, 0., 0.);
    a->idle.data = a;
    ev_timer_init(&a->poll, on_poll, 0., 0.);
    a->poll.data = a;
    if (cfg->type_url == NULL) {
        a->path = a->delta ? DELTA_PATH : ADS_PATH;
        snprintf(a->log_name, sizeof(a->log_name), "ads");
        a->connected_state = pt_stats_gauge("control_plane", NULL, NULL, "connected_state");
    } else {
        a->path = pt_xds_service_path(cfg->type_url, a->delta);
        for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++)
            if (strcmp(services[i].type_url, cfg->type_url) == 0)
                a->rest_path = services[i].rest;
        snprintf(a->log_name, sizeof(a->log_name), "xds");
        for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++)
            if (strcmp(services[i].type_url, cfg->type_url) == 0)
                snprintf(a->log_name, sizeof(a->log_name), "%s", short_names[i]);
        char name[256];
        snprintf(name, sizeof(name), "%scontrol_plane.connected_state",
                 cfg->stat_prefix != NULL ? cfg->stat_prefix : "");
        a->connected_state = pt_stats_gauge(cfg->stat_scope != NULL ? cfg->stat_scope : "xds",
                                            NULL, NULL, name);
    }
    a->started = xds.started;
    a->stopped = xds.stopped;
    a->next = xds.all;
    xds.all = a;
    return a;
}

static void mux_stop(pt_ads_t *a)
{
    a->stopped = 1;
    if (xds.worker != NULL && xds.worker->loop != NULL) {
        ev_timer_stop(xds.worker->loop, &a->retry);
        ev_timer_stop(xds.worker->loop, &a->idle);
        ev_timer_stop(xds.worker->loop, &a->poll);
    }
    pt_rest_fetch_free(a->fetch);
    a->fetch = NULL;
    pt_grpc_stream_free(a->stream);
    a->stream = NULL;
    note_disconnected(a);
}

static void mux_free(pt_ads_t *a)
{
    mux_stop(a);
    while (a->types != NULL) {
        type_state_t *t = a->types;
        a->types = t->next;
        while (t->watches != NULL) {
            pt_ads_watch_t *w = t->watches;
            t->watches = w->next;
            if (w->dead) {
                free_watch(w);
            } else {
                /* Its subscription frees it (pt_ads_unwatch); it hears of nothing more. */
                w->ads = NULL;
                w->type = NULL;
                w->next = NULL;
            }
        }
        free(t->type_url);
        free(t->version);
        free(t->nonce);
        free(t->nack);
        json_decref(t->have);
        json_decref(t->subscribed);
        free(t);
    }
    json_decref(a->node);
    free(a->cluster_name);
    free(a->type_url);
    free(a->key);
    free(a);
}

void pt_xds_init(pt_cluster_manager_t *cm, pt_worker_t *main_worker, json_t *node)
{
    xds.cm = cm;
    xds.worker = main_worker;
    json_decref(xds.node);
    xds.node = node != NULL ? json_incref(node) : NULL;
}

/* The node a mux announces: its own, or the process's. */
static json_t *node_of(const pt_ads_t *a)
{
    return a->node != NULL ? a->node : xds.node;
}

pt_ads_t *pt_xds_ads_new(const pt_ads_config_t *cfg)
{
    pt_ads_config_t c = *cfg;
    c.type_url = NULL;
    pt_ads_t *a = mux_new(&c);
    if (a != NULL)
        xds.ads = a;
    return a;
}

pt_ads_t *pt_xds_mux_for(const pt_config_source_t *src, const pt_file_subscription_config_t *cfg,
                         char *err, size_t errlen)
{
    const pt_api_source_t *api = src->api;
    if (api == NULL) {
        snprintf(err, errlen, "not a control plane's source");
        return NULL;
    }
    if (pt_xds_service_path(cfg->type_url, 0) == NULL) {
        snprintf(err, errlen, "%s has no discovery service of its own", cfg->type_url);
        return NULL;
    }
    for (pt_ads_t *a = xds.all; a != NULL; a = a->next)
        if (a->key != NULL && a->type_url != NULL && strcmp(a->key, src->key) == 0 &&
            strcmp(a->type_url, cfg->type_url) == 0)
            return a;
    pt_ads_config_t c = {
        .cluster_name = api->cluster,
        .set_node_on_first_message_only = api->node_first_only,
        .delta = api->api_type == PT_API_DELTA_GRPC,
        .type_url = cfg->type_url,
        .stat_scope = cfg->stat_scope,
        .stat_prefix = cfg->stat_prefix,
    };
    pt_ads_t *a = api->cluster != NULL ? mux_new(&c) : NULL;
    if (a != NULL && api->api_type == PT_API_REST) {
        a->rest = 1;
        a->refresh_ms = api->refresh_delay_ms;
        a->request_timeout_ms = api->request_timeout_ms;
    }
    if (a != NULL && (a->key = strdup(src->key)) == NULL) {
        xds.all = a->next;
        mux_free(a);
        a = NULL;
    }
    if (a == NULL)
        snprintf(err, errlen, "out of memory");
    return a;
}

void pt_xds_start(void)
{
    xds.started = 1;
    for (pt_ads_t *a = xds.all; a != NULL; a = a->next) {
        a->started = 1;
        open_stream(a);
    }
}

void pt_xds_stop(void)
{
    xds.stopped = 1;
    for (pt_ads_t *a = xds.all; a != NULL; a = a->next)
        mux_stop(a);
}

void pt_xds_free(void)
{
    while (xds.all != NULL) {
        pt_ads_t *a = xds.all;
        xds.all = a->next;
        mux_free(a);
    }
    xds.ads = NULL;
    json_decref(xds.node);
    xds.node = NULL;
    xds.cm = NULL;
    xds.worker = NULL;
    xds.started = xds.stopped = 0;
}

/* ---- watches ------------------------------------------------------------------------- */

pt_ads_watch_t *pt_ads_watch(pt_ads_t *a, const pt_file_subscription_config_t *cfg,
                             pt_file_subscription_cb cb, void *data)
{
    type_state_t *t = type_of(a, cfg->type_url);
    if (t == NULL) {
        t = calloc(1, sizeof(*t));
        if (t == NULL || set_str(&t->type_url, cfg->type_url) != 0 ||
            set_str(&t->version, "") != 0 || set_str(&t->nonce, "") != 0 ||
            (t->have = json_object()) == NULL || (t->subscribed = json_object()) == NULL) {
            if (t != NULL) {
                free(t->type_url);
                free(t->version);
                free(t->nonce);
                json_decref(t->have);
                free(t);
            }
            return NULL;
        }
        /* Listeners and clusters are the types a control plane sends whole (wildcard). */
        t->wildcard =
            strcmp(cfg->type_url, "type.googleapis.com/envoy.config.listener.v3.Listener") == 0 ||
            strcmp(cfg->type_url, "type.googleapis.com/envoy.config.cluster.v3.Cluster") == 0;
        t->next = a->types;
        a->types = t;
    }
    pt_ads_watch_t *w = calloc(1, sizeof(*w));
    if (w == NULL || set_str(&w->version, "") != 0 ||
        set_str(&w->what, cfg->what ? cfg->what : cfg->type_url) != 0) {
        if (w != NULL)
            free_watch(w);
        return NULL;
    }
    w->ads = a;
    w->type = t;
    w->by_resource = cfg->resource_by_resource;
    w->cb = cb;
    w->data = data;
    pt_subscription_stats_init(&w->stats, cfg);
    w->next = t->watches;
    t->watches = w;
    t->names_settled = 0;
    if (a->stream == NULL && !ev_is_active(&a->retry))
        open_stream(a); /* a source's own stream, for its first watch */
    else
        send_request(a, t, NULL);
    return w;
}

int pt_ads_watch_set_names(pt_ads_watch_t *w, const char *const *names, size_t n)
{
    int same = names != NULL && w->names != NULL && n == w->nnames;
    for (size_t i = 0; same && i < n; i++)
        same = strcmp(names[i], w->names[i]) == 0;
    if (same || (names == NULL && w->names == NULL))
        return 0;
    char **copy = NULL;
    if (names != NULL) {
        copy = calloc(n ? n : 1, sizeof(*copy));
        if (copy == NULL)
            return -1;
        for (size_t i = 0; i < n; i++)
            if ((copy[i] = strdup(names[i])) == NULL) {
                while (i-- > 0)
                    free(copy[i]);
                free(copy);
                return -1;
            }
    }
    json_t *set = NULL;
    if (names != NULL) {
        set = json_object();
        for (size_t i = 0; set != NULL && i < n; i++)
            if (json_object_set_new(set, names[i], json_true()) != 0) {
                json_decref(set);
                set = NULL; /* concerns() walks the names instead */
            }
    }
    for (size_t i = 0; i < w->nnames; i++)
        free(w->names[i]);
    free(w->names);
    json_decref(w->name_set);
    w->names = copy;
    w->nnames = names != NULL ? n : 0;
    w->name_set = set;
    w->type->names_settled = 0;
    if (w->ads != NULL && w->ads->delta)
        prune_have(w->type);
    if (w->ads != NULL)
        send_request(w->ads, w->type, NULL);
    return 0;
}

void pt_ads_unwatch(pt_ads_watch_t *w)
{
    if (w == NULL)
        return;
    pt_ads_t *a = w->ads;
    if (a == NULL) { /* orphaned: its mux is gone */
        free_watch(w);
        return;
    }
    w->dead = 1;
    w->type->names_settled = 0;
    if (a->delta)
        prune_have(w->type);
    /* The control plane no longer needs to send what only this watch wanted. */
    send_request(a, w->type, NULL);
    if (a->delivering == 0)
        reap_watches(a);
}

void pt_ads_watch_set_initial_fetch(pt_ads_watch_t *w, uint64_t timeout_ms)
{
    w->warm_until_ms = timeout_ms == 0 ? UINT64_MAX : pt_now_ms() + timeout_ms;
}

int pt_ads_watch_warming(const pt_ads_watch_t *w)
{
    return !w->fetched && pt_now_ms() < w->warm_until_ms;
}

const char *pt_ads_watch_version(const pt_ads_watch_t *w)
{
    return w->version;
}

const pt_subscription_stats_t *pt_ads_watch_stats(const pt_ads_watch_t *w)
{
    return &w->stats;
}
