#include "proxy/cluster.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/dns.h"
#include "discovery/endpoints.h"
#include "discovery/health_check.h"
#include "discovery/lb.h"
#include "discovery/lb_hash.h"
#include "discovery/outlier.h"
#include "discovery/priority_set.h"
#include "proxy/config_source.h"
#include "proxy/hash.h"
#include "proxy/metadata.h"
#include "proxy/http.h"
#include "proxy/log.h"
#include "proxy/transport_match.h"
#include "proxy/worker.h"
#include "tls/context.h"
#include "tls/transport.h"

/* Cluster fields Envoy has that petrel does not implement (yet): using one is an error
 * that says so, never silently ignored. */
static const char *const cluster_unsupported[] = {
    "alt_stat_name",
    "lb_subset_config",
    "protocol_selection",
    "close_connections_on_host_health_failure", "filters",
    "lrs_server", "track_timeout_budgets", "upstream_config",
    "track_cluster_stats", "preconnect_policy", "connection_pool_per_downstream_connection",
    "upstream_bind_config",
    "hosts", NULL};

/* In the order of pt_cluster_type_t. */
static const char *const type_names[] = {"STATIC", "EDS", "STRICT_DNS", "LOGICAL_DNS",
                                         "ORIGINAL_DST", NULL};
/* In the order of pt_lb_policy_t. */
static const char *const lb_names[] = {"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH",
                                       "MAGLEV", "CLUSTER_PROVIDED", NULL};
static const char *const lb_known[] = {"LOAD_BALANCING_POLICY_CONFIG", NULL};

static void refuse_stale_after(pt_cfg_t *r, const pt_cluster_t *c);

/* ---- HTTP protocol options --------------------------------------------------------- */

#define HTTP_PROTOCOL_OPTIONS "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

/* HttpProtocolOptions.common_http_protocol_options (reader inside it). */
static void parse_common_http_options(pt_cfg_t *r, pt_cluster_t *c)
{
    static const char *const unsupported[] = {
        "max_headers_count", "max_stream_duration",
        "headers_with_underscores_action", "max_response_headers_kb", NULL};
    pt_cfg_unsupported(r, unsupported);
    pt_cfg_duration_ms(r, "idle_timeout", &c->http_idle_timeout_ms, 3600 * 1000);
    pt_cfg_duration_ms(r, "max_connection_duration", &c->max_connection_duration_ms, 0);
    uint64_t mr;
    if (pt_cfg_uint(r, "max_requests_per_connection", &mr, 0, 0, UINT32_MAX) > 0)
        c->max_requests_per_connection = (uint32_t)mr;
}

/* Http1ProtocolOptions for the upstream side (reader inside it): petrel's HTTP/1 client
 * has no options, so only the empty message, the usual way to say "HTTP/1.1 upstream",
 * is accepted. */
static void parse_upstream_http1_options(pt_cfg_t *r)
{
    static const char *const unsupported[] = {
        "allow_absolute_url", "accept_http_10", "default_host_for_http_10", "header_key_format",
        "enable_trailers", "allow_chunked_length", "override_stream_error_on_invalid_http_message",
        "send_fully_qualified_url", "use_balsa_parser", "allow_custom_methods",
        "ignore_http_11_upgrade", NULL};
    pt_cfg_unsupported(r, unsupported);
}

/* Http2ProtocolOptions for the upstream side (reader inside it). */
static void parse_upstream_http2_options(pt_cfg_t *r, pt_cluster_t *c)
{
    static const char *const unsupported[] = {
        "allow_metadata", "max_outbound_frames", "max_outbound_control_frames",
        "max_consecutive_inbound_frames_with_empty_payload",
        "max_inbound_priority_frames_per_stream",
        "max_inbound_window_update_frames_per_data_frame_sent",
        "stream_error_on_invalid_http_messaging", "override_stream_error_on_invalid_http_message",
        "custom_settings_parameters", "use_oghttp2_codec", "max_metadata_size",
        "enable_huffman_encoding", NULL};
    pt_cfg_unsupported(r, unsupported);
    /* The deprecated and the current spelling may both be read: the last one read counts. */
    pt_cluster_http2_t *o = (pt_cluster_http2_t *)c->http2;
    if (o == NULL && (o = pt_arena_alloc(&c->arena, sizeof(*o))) == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        return;
    }
    memset(o, 0, sizeof(*o));
    c->http2 = o;
    uint64_t v;
    pt_cfg_uint(r, "hpack_table_size", &v, 4096, 0, UINT32_MAX);
    o->hpack_table_size = (uint32_t)v;
    pt_cfg_uint(r, "max_concurrent_streams", &v, 2147483647, 1, 2147483647);
    o->max_concurrent_streams = (uint32_t)v;
    pt_cfg_uint(r, "initial_stream_window_size", &v, 65535, 65535, 2147483647);
    o->initial_stream_window_size = (uint32_t)v;
    pt_cfg_uint(r, "initial_connection_window_size", &v, 1024 * 1024, 65535, 2147483647);
    o->initial_connection_window_size = (uint32_t)v;
    pt_cfg_bool(r, "allow_connect", &o->allow_connect, 0);
    if (pt_cfg_enter(r, "connection_keepalive") > 0) {
        static const char *const ka_unsupported[] = {"interval_jitter",
                                                     "connection_idle_interval", NULL};
        pt_cfg_unsupported(r, ka_unsupported);
        pt_cfg_duration_ms(r, "interval", &o->keepalive_interval_ms, 0);
        if (pt_cfg_duration_ms(r, "timeout", &o->keepalive_timeout_ms, 0) == 0 ||
            o->keepalive_timeout_ms == 0)
            pt_cfg_error(r, "timeout", "is required (at least 1ms)");
        pt_cfg_leave(r);
    }
}

/* The protocol choices of explicit_http_config, use_downstream_protocol_config and
 * auto_config (reader inside one of them): HTTP/1 and HTTP/2 options are read; HTTP/3 is not
 * supported. */
static void parse_protocol_choice(pt_cfg_t *r, pt_cluster_t *c, int oneof, int *has_h2)
{
    static const char *const h3[] = {"http3_protocol_options", "alternate_protocols_cache_options",
                                     NULL};
    static const char *const protocols[] = {"http_protocol_options", "http2_protocol_options",
                                            "http3_protocol_options", NULL};
    pt_cfg_unsupported(r, h3);
    /* explicit_http_config is a oneof; the other two may give both (either may be used). */
    if (oneof && pt_cfg_oneof(r, protocols, !pt_cfg_has(r, "http3_protocol_options")) < 0)
        return;
    if (pt_cfg_enter(r, "http_protocol_options") > 0) {
        parse_upstream_http1_options(r);
        pt_cfg_leave(r);
    }
    *has_h2 = 0;
    if (pt_cfg_enter(r, "http2_protocol_options") > 0) {
        *has_h2 = 1;
        parse_upstream_http2_options(r, c);
        pt_cfg_leave(r);
    }
}

/* envoy.config.core.v3.UpstreamHttpProtocolOptions (reader inside it). As in Envoy, the
 * options need an UpstreamTlsContext to have an effect: a raw transport has no SNI and no
 * certificate, so they are accepted there and change nothing. */
static void parse_upstream_http_protocol_options(pt_cfg_t *r, pt_cluster_t *c)
{
    int sni, san;
    pt_cfg_bool(r, "auto_sni", &sni, 0);
    pt_cfg_bool(r, "auto_san_validation", &san, 0);
    c->auto_sni = sni != 0;
    c->auto_san_validation = san != 0;
    const char *hdr;
    c->auto_sni_header = NULL;
    if (pt_cfg_string(r, "override_auto_sni_header", &hdr, NULL) > 0 && hdr != NULL &&
        hdr[0] != '\0') {
        if (!pt_http_header_name_valid(hdr, 0)) {
            pt_cfg_error(r, "override_auto_sni_header", "\"%s\" is not a valid header name",
                         hdr);
            return;
        }
        char *lower = pt_arena_strdup(&c->arena, hdr);
        if (lower != NULL)
            for (char *q = lower; *q; q++)
                if (*q >= 'A' && *q <= 'Z')
                    *q = (char)(*q - 'A' + 'a');
        c->auto_sni_header = lower;
    }
}

/* envoy.extensions.upstreams.http.v3.HttpProtocolOptions (reader inside the Any): which
 * protocol the cluster speaks upstream (upstream_protocol_options, a oneof), and the options
 * common to all. */
static void parse_http_protocol_options(pt_cfg_t *r, pt_cluster_t *c)
{
    static const char *const unsupported[] = {
        "http_filters", "header_validation_config", "outlier_detection", NULL};
    pt_cfg_unsupported(r, unsupported);
    if (pt_cfg_enter(r, "upstream_http_protocol_options") > 0) {
        parse_upstream_http_protocol_options(r, c);
        pt_cfg_leave(r);
    }
    if (pt_cfg_enter(r, "common_http_protocol_options") > 0) {
        parse_common_http_options(r, c);
        pt_cfg_leave(r);
    }
    static const char *const choices[] = {"explicit_http_config",
                                          "use_downstream_protocol_config", "auto_config", NULL};
    int which = pt_cfg_oneof(r, choices, 0);
    if (which < 0)
        return;
    int has_h2 = 0;
    c->http2 = NULL; /* this spelling's HTTP/2 options, or the defaults */
    if (pt_cfg_enter(r, choices[which]) <= 0)
        return;
    parse_protocol_choice(r, c, which == 0, &has_h2);
    switch (which) {
    case 0:
        c->protocol = has_h2 ? PT_UPSTREAM_HTTP2 : PT_UPSTREAM_HTTP1;
        break;
    case 1:
        c->protocol = PT_UPSTREAM_DOWNSTREAM;
        break;
    default:
        c->protocol = PT_UPSTREAM_AUTO;
        break;
    }
    pt_cfg_leave(r);
}

/* typed_extension_protocol_options: map of extension name to Any. */
static void parse_typed_protocol_options(pt_cfg_t *r, pt_cluster_t *c)
{
    if (pt_cfg_enter(r, "typed_extension_protocol_options") <= 0)
        return;
    json_t *map = r->frames[r->depth - 1].node;
    const char *key;
    json_t *value;
    json_object_foreach(map, key, value) {
        (void)value;
        int rc;
        const char *type = pt_cfg_enter_any(r, key, &rc);
        if (type == NULL)
            continue;
        if (strcmp(key, HTTP_PROTOCOL_OPTIONS) != 0 &&
            strcmp(key, "type.googleapis.com/" HTTP_PROTOCOL_OPTIONS) != 0) {
            pt_cfg_error(r, NULL, "protocol options for \"%s\" are not supported (only %s)",
                         key, HTTP_PROTOCOL_OPTIONS);
            pt_cfg_skip_rest(r);
        } else if (strcmp(type, "type.googleapis.com/" HTTP_PROTOCOL_OPTIONS) != 0) {
            pt_cfg_error(r, "@type", "\"%s\" does not match the key %s", type, key);
            pt_cfg_skip_rest(r);
        } else {
            parse_http_protocol_options(r, c);
        }
        pt_cfg_leave(r);
    }
    pt_cfg_leave(r);
}

/* ---- state by name --------------------------------------------------------------- */

/* Every live cluster state, by name. Taken only when a cluster version is made or freed. */
#define STATE_BUCKETS 1024
static pthread_mutex_t states_lock = PTHREAD_MUTEX_INITIALIZER;
static pt_cluster_state_t *states[STATE_BUCKETS];

pt_cluster_state_t *pt_cluster_state_get(const char *name)
{
    unsigned b = (unsigned)(pt_hash_name(name) % STATE_BUCKETS);
    pthread_mutex_lock(&states_lock);
    pt_cluster_state_t *st = states[b];
    while (st != NULL && strcmp(st->name, name) != 0)
        st = st->next_in_bucket;
    if (st != NULL) {
        atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
        pthread_mutex_unlock(&states_lock);
        return st;
    }
    /* Its name in the same allocation (one malloc block fewer a cluster). */
    size_t len = strlen(name);
    st = calloc(1, sizeof(*st) + len + 1);
    if (st != NULL) {
        st->name = memcpy((char *)(st + 1), name, len + 1);
        atomic_init(&st->refs, 1);
        st->next_in_bucket = states[b];
        states[b] = st;
    }
    pthread_mutex_unlock(&states_lock);
    return st;
}

/* Names of clusters whose last version went on a worker: their stats wait for the main
 * thread (guarded by states_lock). */
typedef struct reap_name {
    struct reap_name *next;
    char name[];
} reap_name_t;
static reap_name_t *to_reap;
static pthread_t main_thread;
static int main_thread_set;

int pt_cluster_states_on_main_thread(void)
{
    return !main_thread_set || pthread_equal(pthread_self(), main_thread);
}

void pt_cluster_states_set_main_thread(void)
{
    main_thread = pthread_self();
    main_thread_set = 1;
}

static pt_cluster_state_t *find_state_locked(const char *name)
{
    pt_cluster_state_t *st = states[pt_hash_name(name) % STATE_BUCKETS];
    while (st != NULL && strcmp(st->name, name) != 0)
        st = st->next_in_bucket;
    return st;
}

void pt_cluster_states_reap(void)
{
    pthread_mutex_lock(&states_lock);
    reap_name_t *list = to_reap;
    to_reap = NULL;
    /* Under the lock: a cluster of that name made now waits, then makes its stats anew. */
    for (reap_name_t *r = list; r != NULL; r = r->next)
        if (find_state_locked(r->name) == NULL)
            pt_stats_release_tagged("cluster", r->name);
    pthread_mutex_unlock(&states_lock);
    while (list != NULL) {
        reap_name_t *r = list;
        list = r->next;
        free(r);
    }
}

void pt_cluster_state_unref(pt_cluster_state_t *st)
{
    if (st == NULL)
        return;
    pthread_mutex_lock(&states_lock);
    if (atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) != 1) {
        pthread_mutex_unlock(&states_lock);
        return;
    }
    pt_cluster_state_t **pp = &states[pt_hash_name(st->name) % STATE_BUCKETS];
    while (*pp != st)
        pp = &(*pp)->next_in_bucket;
    *pp = st->next_in_bucket;
    if (pt_cluster_states_on_main_thread()) {
        pt_stats_release_tagged("cluster", st->name);
    } else {
        size_t len = strlen(st->name);
        reap_name_t *r = malloc(sizeof(*r) + len + 1);
        if (r != NULL) { /* else its stats stay: harmless, only memory */
            memcpy(r->name, st->name, len + 1);
            r->next = to_reap;
            to_reap = r;
        }
    }
    pthread_mutex_unlock(&states_lock);
    /* Released above, or later by the main thread: either way no gauge reads st after. */
    pt_stats_gauge_fn_clear(st->membership_total_id, st);
    pt_stats_gauge_fn_clear(st->membership_healthy_id, st);
    if (st->membership_degraded_id != 0)
        pt_stats_gauge_fn_clear(st->membership_degraded_id, st);
    if (st->membership_excluded_id != 0)
        pt_stats_gauge_fn_clear(st->membership_excluded_id, st);
    free(st->host_buckets); /* empty: every host held a reference to the state */
    free(st);
}

/* ---- hosts by address ------------------------------------------------------------- */

/* Host registries share the states' lock: hosts are found when a version is prepared and
 * dropped when their last holder lets go, both rare next to requests. */

static uint64_t host_key_hash(const pt_addr_t *a, const char *hostname)
{
    uint64_t h = 1469598103934665603ull;
    const unsigned char *p = (const unsigned char *)a;
    for (size_t i = 0; i < sizeof(*a); i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return hostname != NULL ? h ^ pt_hash_name(hostname) : h;
}

static int same_hostname(const char *a, const char *b)
{
    return (a == NULL || !a[0]) ? (b == NULL || !b[0]) : (b != NULL && strcmp(a, b) == 0);
}

/* The host registry is looked up when a version's hosts are made (and when a worker makes
 * an ORIGINAL_DST host), never on a pick, so chains of two on average cost little: 8
 * buckets for a cluster of 10 endpoints where there were 16, among thousands of clusters. */
#define HOSTS_PER_BUCKET 2

static int grow_hosts(pt_cluster_state_t *st)
{
    unsigned n = st->nhost_buckets ? st->nhost_buckets * 2 : 8;
    pt_host_t **nb = calloc(n, sizeof(*nb));
    if (nb == NULL)
        return -1;
    for (unsigned i = 0; i < st->nhost_buckets; i++) {
        pt_host_t *h = st->host_buckets[i];
        while (h != NULL) {
            pt_host_t *next = h->next_in_bucket;
            unsigned b = (unsigned)(host_key_hash(&h->address, h->hostname) % n);
            h->next_in_bucket = nb[b];
            nb[b] = h;
            h = next;
        }
    }
    free(st->host_buckets);
    st->host_buckets = nb;
    st->nhost_buckets = n;
    return 0;
}

/* The state's host for this endpoint, made on first use (*fresh set), with a reference. */
static pt_host_t *host_get(pt_cluster_state_t *st, const pt_endpoint_t *e, int *fresh)
{
    *fresh = 0;
    const char *hn = e->hostname != NULL && e->hostname[0] ? e->hostname : NULL;
    pthread_mutex_lock(&states_lock);
    pt_host_t *h = NULL;
    if (st->nhost_buckets > 0) {
        h = st->host_buckets[host_key_hash(&e->address, hn) % st->nhost_buckets];
        while (h != NULL && !(pt_addr_equal(&h->address, &e->address) &&
                              same_hostname(h->hostname, hn)))
            h = h->next_in_bucket;
    }
    if (h != NULL) {
        /* Possibly back from zero: its last holder waits for this lock to free it, and will
         * see the reference (pt_host_unref). */
        atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed);
        pthread_mutex_unlock(&states_lock);
        return h;
    }
    if (st->nhost_entries >= HOSTS_PER_BUCKET * st->nhost_buckets && grow_hosts(st) != 0) {
        pthread_mutex_unlock(&states_lock);
        return NULL;
    }
    char buf[PT_ADDR_STRLEN];
    pt_addr_format(&e->address, buf, sizeof(buf));
    size_t len = strlen(buf);
    /* One allocation with its address text (hosts are most of an endpoint's memory). */
    h = calloc(1, sizeof(*h) + len + 1);
    if (h == NULL || (hn != NULL && (h->hostname = strdup(hn)) == NULL)) {
        free(h);
        pthread_mutex_unlock(&states_lock);
        return NULL;
    }
    memcpy(h->address_str, buf, len + 1);
    atomic_init(&h->refs, 1);
    h->address = e->address;
    h->state = st;
    atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
    unsigned b = (unsigned)(host_key_hash(&e->address, hn) % st->nhost_buckets);
    h->next_in_bucket = st->host_buckets[b];
    st->host_buckets[b] = h;
    st->nhost_entries++;
    pthread_mutex_unlock(&states_lock);
    *fresh = 1;
    return h;
}

pt_host_t *pt_host_ref(pt_host_t *h)
{
    if (h != NULL)
        atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed);
    return h;
}

void pt_host_unref(pt_host_t *h)
{
    if (h == NULL || atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) != 1)
        return;
    pt_cluster_state_t *st = h->state;
    if (st == NULL) { /* made by hand (tests) */
        free(h->outlier);
        free(h);
        return;
    }
    pthread_mutex_lock(&states_lock);
    if (atomic_load_explicit(&h->refs, memory_order_acquire) != 0) {
        pthread_mutex_unlock(&states_lock); /* found again meanwhile */
        return;
    }
    pt_host_t **pp = &st->host_buckets[host_key_hash(&h->address, h->hostname) % st->nhost_buckets];
    while (*pp != h)
        pp = &(*pp)->next_in_bucket;
    *pp = h->next_in_bucket;
    st->nhost_entries--;
    pthread_mutex_unlock(&states_lock);
    free(h->outlier);
    free((char *)h->hostname);
    free(h);
    pt_cluster_state_unref(st);
}

/* ---- the cluster resource --------------------------------------------------------- */

static struct pt_odst_hosts *odst_new(void);
static void odst_free(struct pt_odst_hosts *m);
static void choose_host_transports(pt_cluster_t *c);

pt_cluster_t *pt_cluster_ref(pt_cluster_t *c)
{
    if (c != NULL)
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

struct pt_cluster_tls {
    _Atomic long refs;
    pt_arena_t arena;   /* the settings and the context (its cleanup frees it) */
    pt_digest_t digest; /* of transport_socket and transport_socket_matches */
    uint32_t id;        /* unique: what hosts' transport choices refer to (pt_host_t) */
};

/* Ids of transport configurations; 0 is none. */
static _Atomic uint32_t next_tls_id = 1;

static void tls_own_unref(struct pt_cluster_tls *t)
{
    if (t == NULL || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    pt_arena_dispose(&t->arena);
    free(t);
}

int pt_cluster_has_tls(const pt_cluster_t *c)
{
    if (c->tls != NULL)
        return 1;
    for (unsigned i = 0; i < c->nmatches; i++)
        if (c->matches[i].tls != NULL)
            return 1;
    return 0;
}

/* Without alpn_protocols of its own, a context offers what the cluster speaks: h2 for
 * HTTP/2, h2 then http/1.1 for auto_config (the upstream's choice picks the codec). */
static void default_alpn(const pt_cluster_t *c, pt_tls_settings_t *t)
{
    if (t->alpn != NULL && t->alpn_len != 0)
        return;
    if (c->protocol == PT_UPSTREAM_HTTP2) {
        t->alpn = (const unsigned char *)"\x02h2";
        t->alpn_len = 3;
    } else if (c->protocol == PT_UPSTREAM_AUTO) {
        t->alpn = (const unsigned char *)"\x02h2\x08http/1.1";
        t->alpn_len = 12;
    }
}

int pt_cluster_build_tls(pt_cluster_t *c, pt_cfg_t *r, const char *where)
{
    if (c->tls_own == NULL || !pt_cluster_has_tls(c))
        return 0;
    /* A context keeps its owner's name: a copy that lives as long as it does (versions
     * that share it come and go). */
    const char *owner = pt_arena_strdup(&c->tls_own->arena, c->name);
    if (owner == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        return -1;
    }
    const char *dot = where[0] ? "." : "";
    char path[512];
    if (c->tls != NULL) {
        default_alpn(c, c->tls);
        snprintf(path, sizeof(path), "%s%stransport_socket", where, dot);
        c->tls_ctx = pt_tls_context_build(r, &c->tls_own->arena, c->tls, "cluster", owner, path);
        if (c->tls_ctx == NULL)
            return -1;
    }
    for (unsigned i = 0; i < c->nmatches; i++) {
        pt_transport_match_t *m = &c->matches[i];
        if (m->tls == NULL)
            continue;
        default_alpn(c, m->tls);
        snprintf(path, sizeof(path), "%s%stransport_socket_matches[%u].transport_socket", where,
                 dot, i);
        m->tls_ctx = pt_tls_context_build(r, &c->tls_own->arena, m->tls, "cluster", owner, path);
        if (m->tls_ctx == NULL)
            return -1;
    }
    return 0;
}

int pt_cluster_share_tls(pt_cluster_t *c, const pt_cluster_t *from)
{
    /* The protocol decides the ALPN a context offers when its settings name none. */
    if (c->tls_own == NULL || from->tls_own == NULL || !pt_cluster_has_tls(from) ||
        !pt_digest_equal(c->tls_own->digest, from->tls_own->digest) ||
        c->protocol != from->protocol)
        return 0;
    /* Built: every context there is (a version whose build failed is never shared). */
    if (from->tls != NULL && from->tls_ctx == NULL)
        return 0;
    for (unsigned i = 0; i < from->nmatches; i++)
        if (from->matches[i].tls != NULL && from->matches[i].tls_ctx == NULL)
            return 0;
    tls_own_unref(c->tls_own);
    atomic_fetch_add_explicit(&from->tls_own->refs, 1, memory_order_relaxed);
    c->tls_own = from->tls_own;
    c->tls = from->tls;
    c->tls_ctx = from->tls_ctx;
    c->matches = from->matches;
    c->nmatches = from->nmatches;
    return 1;
}

void pt_cluster_unref(pt_cluster_t *c)
{
    if (c == NULL || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    pt_lb_hash_cluster_dispose(c);
    if (c->state != NULL) { /* no longer a live version of its cluster */
        pthread_mutex_lock(&states_lock);
        if (c->prev_version != NULL)
            c->prev_version->next_version = c->next_version;
        else if (c->state->versions == c)
            c->state->versions = c->next_version;
        if (c->next_version != NULL)
            c->next_version->prev_version = c->prev_version;
        pthread_mutex_unlock(&states_lock);
    }
    pt_lb_release(c);
    pt_arena_dispose(&c->ep_arena);
    pt_arena_dispose(&c->arena); /* cleanups (stats hooks) before the state */
    tls_own_unref(c->tls_own);   /* the TLS context, unless a newer version shares it */
    free(atomic_load(&c->code_stats));
    free(atomic_load(&c->lb_stats));
    json_decref(c->health_checks_json);
    json_decref(c->source);
    free(c->source_text);
    for (unsigned i = 0; i < c->nhosts; i++)
        pt_host_unref(c->hosts[i]);
    free(c->hosts);
    odst_free(c->odst); /* its hosts hold the state: before it */
    free(c->hinfo);
    free(c->hmeta);
    pt_cluster_state_unref(c->state);
    free(c);
}

/* c's i-th host as an endpoint of a new version: what c says of it (its strings are c's and
 * the host's, alive while c is; the new version's host is the same host, found by address
 * and hostname). */
static pt_endpoint_t endpoint_of(const pt_cluster_t *c, unsigned i)
{
    const pt_host_t *h = c->hosts[i];
    const pt_host_info_t *hi = pt_cluster_host_info(c, i);
    return (pt_endpoint_t){.address = h->address, .hostname = h->hostname,
                           .weight = hi->weight, .priority = hi->priority,
                           .locality = c->localities[hi->locality],
                           .locality_weight = hi->locality_weight,
                           .health = (pt_eds_health_t)hi->eds_health,
                           .metadata = pt_cluster_host_metadata(c, i)};
}

int pt_cluster_adopt_endpoints(pt_cluster_t *c, const pt_cluster_t *from)
{
    /* From its hosts (its endpoints went once it was prepared); the strings are from's,
     * alive while it is, and c's hosts will be the same ones. */
    if (from->nhosts > 0) {
        pt_endpoint_t *eps = pt_arena_alloc(&c->ep_arena, from->nhosts * sizeof(*eps));
        if (eps == NULL)
            return -1;
        for (unsigned i = 0; i < from->nhosts; i++)
            eps[i] = endpoint_of(from, i);
        c->endpoints = eps;
    }
    c->nendpoints = from->nhosts;
    c->npending = from->npending;
    c->has_assignment = 1;
    c->cla_policy = from->cla_policy;
    return 0;
}

char *pt_json_canonical(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}

/* The canonical text of a CDS resource begins with its type URL (keys are sorted, and "@"
 * sorts first): the same 62 bytes in every cluster of an update. A kept text leaves them
 * out (source_typed) and they are put back where the text is read. */
#define SOURCE_TYPE_PREFIX "{\"@type\":\"type.googleapis.com/envoy.config.cluster.v3.Cluster\","

void pt_cluster_keep_source_text(pt_cluster_t *c, char *canonical)
{
    size_t pre = sizeof(SOURCE_TYPE_PREFIX) - 1;
    free(c->source_text);
    c->source_typed = strncmp(canonical, SOURCE_TYPE_PREFIX, pre) == 0;
    if (c->source_typed) {
        size_t rest = strlen(canonical + pre) + 1;
        memmove(canonical + 1, canonical + pre, rest); /* "{" and the rest */
        char *shorter = realloc(canonical, rest + 1);
        if (shorter != NULL)
            canonical = shorter;
    }
    c->source_text = canonical;
}

/* c's kept text whole (the caller frees it), NULL out of memory. */
static char *source_text_whole(const pt_cluster_t *c)
{
    if (!c->source_typed)
        return strdup(c->source_text);
    size_t pre = sizeof(SOURCE_TYPE_PREFIX) - 1, rest = strlen(c->source_text + 1) + 1;
    char *t = malloc(pre + rest);
    if (t != NULL) {
        memcpy(t, SOURCE_TYPE_PREFIX, pre);
        memcpy(t + pre, c->source_text + 1, rest);
    }
    return t;
}

/* c's kept text parsed (a new reference), NULL out of memory. */
static json_t *source_text_tree(const pt_cluster_t *c)
{
    char *t = source_text_whole(c);
    json_t *v = t != NULL ? json_loads(t, 0, NULL) : NULL;
    free(t);
    return v;
}

json_t *pt_cluster_source_copy(const pt_cluster_t *c)
{
    if (c->source != NULL)
        return json_deep_copy(c->source);
    return c->source_text != NULL ? source_text_tree(c) : json_object();
}

int pt_cluster_source_is(const pt_cluster_t *c, const char *canonical)
{
    if (c->source_text != NULL && c->source_typed) {
        size_t pre = sizeof(SOURCE_TYPE_PREFIX) - 1;
        return strncmp(canonical, SOURCE_TYPE_PREFIX, pre) == 0 &&
               strcmp(c->source_text + 1, canonical + pre) == 0;
    }
    if (c->source_text != NULL)
        return strcmp(c->source_text, canonical) == 0;
    char *mine = c->source != NULL ? pt_json_canonical(c->source) : NULL;
    int same = mine != NULL && strcmp(mine, canonical) == 0;
    free(mine);
    return same;
}

#define DNS_CLUSTER_TYPE "type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster"

/* cluster_type (a CustomClusterType, reader in the Cluster): Envoy's newer spelling of the
 * DNS cluster types, envoy.cluster.dns with a DnsCluster. */
static void parse_cluster_type(pt_cfg_t *r, pt_cluster_t *c)
{
    if (pt_cfg_enter(r, "cluster_type") <= 0)
        return;
    const char *name;
    if (pt_cfg_string(r, "name", &name, NULL) == 0 || name == NULL || !name[0])
        pt_cfg_error(r, "name", "is required");
    int rc;
    const char *type = pt_cfg_enter_any(r, "typed_config", &rc);
    if (type == NULL) {
        if (rc == 0)
            pt_cfg_error(r, "typed_config", "is required");
        pt_cfg_leave(r);
        return;
    }
    if (strcmp(type, DNS_CLUSTER_TYPE) != 0) {
        pt_cfg_error(r, "@type", "\"%s\" is not supported (only envoy.cluster.dns, %s)", type,
                     DNS_CLUSTER_TYPE);
        pt_cfg_skip_rest(r);
        pt_cfg_leave(r);
        pt_cfg_leave(r);
        return;
    }
    /* config.core.v3.DnsLookupFamily: UNSPECIFIED first, taken as AUTO. */
    static const char *const families[] = {"UNSPECIFIED", "AUTO", "V4_ONLY", "V6_ONLY",
                                           "V4_PREFERRED", "ALL", NULL};
    int family, logical;
    pt_cfg_enum(r, "dns_lookup_family", families, NULL, &family, 0);
    pt_cfg_bool(r, "all_addresses_in_single_endpoint", &logical, 0);
    c->type = logical ? PT_CLUSTER_LOGICAL_DNS : PT_CLUSTER_STRICT_DNS;
    if ((c->dns = pt_arena_alloc(&c->arena, sizeof(*c->dns))) == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
    } else {
        memset(c->dns, 0, sizeof(*c->dns));
        c->dns->logical = logical;
        c->dns->family = family == 0 ? PT_DNS_AUTO : (pt_dns_family_t)(family - 1);
        pt_dns_config_parse(r, &c->arena, c->dns, 1);
    }
    pt_cfg_leave(r);
    pt_cfg_leave(r);
}

/* load_assignment of a DNS cluster (reader in the Cluster): its endpoints become the names
 * to resolve, kept in the cluster's arena (what a version keeps of them). */
static void parse_dns_endpoints(pt_cfg_t *r, pt_cluster_t *c)
{
    pt_dns_config_t *dns = c->dns;
    /* LOGICAL_DNS: exactly one locality with exactly one endpoint, as Envoy requires. */
    if (c->type == PT_CLUSTER_LOGICAL_DNS) {
        json_t *la = json_object_get(r->frames[r->depth - 1].node, "load_assignment");
        json_t *eps = json_is_object(la) ? json_object_get(la, "endpoints") : NULL;
        json_t *first = json_array_size(eps) == 1 ? json_array_get(eps, 0) : NULL;
        json_t *lbe = json_is_object(first) ? json_object_get(first, "lb_endpoints") : NULL;
        if (json_array_size(lbe) != 1)
            pt_cfg_error(r, "load_assignment",
                         la != NULL ? "LOGICAL_DNS clusters must have a single "
                                      "locality_lb_endpoint and a single lb_endpoint"
                                    : "LOGICAL_DNS clusters must have a single host");
    }
    if (pt_cfg_enter(r, "load_assignment") <= 0)
        return;
    pt_endpoints_t eps;
    if (pt_endpoints_parse_names(r, &c->ep_arena, &eps) == 0 && dns != NULL) {
        dns->targets = pt_arena_alloc(&c->arena, (eps.nendpoints ? eps.nendpoints : 1) *
                                                     sizeof(*dns->targets));
        if (dns->targets == NULL) {
            pt_cfg_error(r, NULL, "out of memory");
        } else {
            for (unsigned i = 0; i < eps.nendpoints; i++) {
                const pt_endpoint_t *e = &eps.endpoints[i];
                pt_dns_target_t *t = &dns->targets[dns->ntargets];
                t->name = pt_arena_strdup(&c->arena, e->dns_name);
                t->hostname = e->hostname != NULL && e->hostname[0]
                                  ? pt_arena_strdup(&c->arena, e->hostname)
                                  : t->name;
                t->port = e->dns_port;
                t->weight = e->weight;
                t->priority = e->priority;
                t->locality.region = pt_arena_strdup(&c->arena, e->locality.region);
                t->locality.zone = pt_arena_strdup(&c->arena, e->locality.zone);
                t->locality.sub_zone = pt_arena_strdup(&c->arena, e->locality.sub_zone);
                t->locality_weight = e->locality_weight;
                t->health = e->health;
                t->metadata = e->metadata ? pt_arena_strdup(&c->arena, e->metadata) : NULL;
                if (t->name != NULL && t->hostname != NULL && t->locality.region != NULL &&
                    t->locality.zone != NULL && t->locality.sub_zone != NULL &&
                    (e->metadata == NULL || t->metadata != NULL))
                    dns->ntargets++;
            }
        }
        c->cla_policy = eps.policy;
        refuse_stale_after(r, c);
    }
    pt_cfg_leave(r);
    /* The names are the cluster's now; its hosts come from resolving them. */
    pt_arena_dispose(&c->ep_arena);
    pt_arena_init_small(&c->ep_arena);
}

/* ORIGINAL_DST's settings (reader in the Cluster, after lb_policy): lb_policy
 * CLUSTER_PROVIDED (required by Envoy for this type and refused for the others),
 * original_dst_lb_config, cleanup_interval; health checks and outlier detection, which
 * petrel runs over a version's fixed hosts, are refused for it. */
static void parse_original_dst(pt_cfg_t *r, pt_cluster_t *c)
{
    int odst = c->type == PT_CLUSTER_ORIGINAL_DST;
    if (odst && c->lb_policy != PT_LB_CLUSTER_PROVIDED)
        pt_cfg_error(r, "lb_policy", "%s is not valid for a cluster of type ORIGINAL_DST: "
                                     "only CLUSTER_PROVIDED is allowed",
                     lb_names[c->lb_policy]);
    else if (!odst && c->lb_policy == PT_LB_CLUSTER_PROVIDED)
        pt_cfg_error(r, "lb_policy", "CLUSTER_PROVIDED is allowed only with a cluster of type "
                                     "ORIGINAL_DST");
    c->odst_port_override = -1;
    pt_cfg_duration_ms(r, "cleanup_interval", &c->odst_cleanup_ms, 5000);
    if (c->odst_cleanup_ms == 0 && pt_cfg_has(r, "cleanup_interval"))
        pt_cfg_error(r, "cleanup_interval", "must be greater than 0");
    if (pt_cfg_enter(r, "original_dst_lb_config") > 0) {
        static const char *const unsupported[] = {"metadata_key", NULL};
        pt_cfg_unsupported(r, unsupported);
        if (!odst)
            pt_cfg_error(r, NULL, "applies only to a cluster of type ORIGINAL_DST");
        int use_header;
        pt_cfg_bool(r, "use_http_header", &use_header, 0);
        const char *name;
        pt_cfg_string(r, "http_header_name", &name, NULL);
        if (name != NULL && name[0] && !use_header)
            pt_cfg_error(r, "http_header_name", "\"%s\" is set but use_http_header is false "
                                                "(set use_http_header to use it)", name);
        if (use_header) {
            char *h = pt_arena_strdup(&c->arena, name != NULL && name[0]
                                                     ? name
                                                     : "x-envoy-original-dst-host");
            for (char *p = h; p != NULL && *p; p++)
                *p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
            c->odst_header = h;
        }
        uint64_t port;
        if (pt_cfg_uint(r, "upstream_port_override", &port, 0, 0, 65535) > 0)
            c->odst_port_override = (int)port;
        pt_cfg_leave(r);
    }
    if (odst && pt_cfg_has(r, "health_checks"))
        pt_cfg_error(r, "health_checks", "are not supported for a cluster of type ORIGINAL_DST");
    if (odst && pt_cfg_has(r, "outlier_detection"))
        pt_cfg_error(r, "outlier_detection", "is not supported for a cluster of type "
                                             "ORIGINAL_DST");
}

/* A load_assignment in the cluster itself never goes stale: only EDS assignments do. */
static void refuse_stale_after(pt_cfg_t *r, const pt_cluster_t *c)
{
    if (c->cla_policy.endpoint_stale_after_ms > 0)
        pt_cfg_error(r, "policy.endpoint_stale_after",
                     "applies only to assignments from EDS (a %s cluster's load_assignment "
                     "is never replaced, so it cannot go stale)",
                     type_names[c->type]);
}

/* A Percent as Envoy rounds it to an integer of 100. */
static int parse_percent(pt_cfg_t *r, const char *field, uint32_t *out, uint32_t def)
{
    *out = def;
    if (pt_cfg_enter(r, field) <= 0)
        return 0;
    double v;
    pt_cfg_double(r, "value", &v, (double)def, 0.0, 100.0);
    pt_cfg_leave(r);
    *out = (uint32_t)(v + 0.5);
    return 1;
}

/* CommonLbConfig.ZoneAwareLbConfig, or LocalityLbConfig.ZoneAwareLbConfig (reader inside). */
static void parse_zone_aware(pt_cfg_t *r, pt_cluster_t *c)
{
    static const char *const unsupported[] = {"force_local_zone", "force_locality_direct_routing",
                                              "locality_basis", NULL};
    pt_cfg_unsupported(r, unsupported);
    c->locality_lb = PT_LOCALITY_ZONE_AWARE;
    parse_percent(r, "routing_enabled", &c->zone_routing_enabled, 100);
    pt_cfg_uint(r, "min_cluster_size", &c->zone_min_cluster_size, 6, 0, UINT64_MAX);
    pt_cfg_bool(r, "fail_traffic_on_panic", &c->fail_traffic_on_panic, 0);
}

/* The oneof zone_aware_lb_config / locality_weighted_lb_config of the object the reader is
 * in (CommonLbConfig, or a policy's LocalityLbConfig). */
static void parse_locality_choice(pt_cfg_t *r, pt_cluster_t *c)
{
    static const char *const choices[] = {"zone_aware_lb_config", "locality_weighted_lb_config",
                                          NULL};
    int which = pt_cfg_oneof(r, choices, 0);
    if (which == 0 && pt_cfg_enter(r, "zone_aware_lb_config") > 0) {
        parse_zone_aware(r, c);
        pt_cfg_leave(r);
    } else if (which == 1 && pt_cfg_enter(r, "locality_weighted_lb_config") > 0) {
        c->locality_lb = PT_LOCALITY_WEIGHTED;
        c->zone_routing_enabled = 100;
        c->zone_min_cluster_size = 6;
        c->fail_traffic_on_panic = 0;
        pt_cfg_leave(r);
    }
}

/* A policy's locality_lb_config (reader in round_robin_lb_config or least_request_lb_config). */
static void parse_locality_lb_config(pt_cfg_t *r, pt_cluster_t *c)
{
    if (pt_cfg_enter(r, "locality_lb_config") <= 0)
        return;
    c->locality_lb = PT_LOCALITY_ZONE_AWARE;
    c->zone_routing_enabled = 100;
    c->zone_min_cluster_size = 6;
    c->fail_traffic_on_panic = 0;
    parse_locality_choice(r, c);
    pt_cfg_leave(r);
}

/* Cluster.CommonLbConfig (reader inside). */
static void parse_common_lb_config(pt_cfg_t *r, pt_cluster_t *c)
{
    static const char *const unsupported[] = {
        "update_merge_window", "ignore_new_hosts_until_first_hc",
        "close_connections_on_host_set_change", "override_host_status", NULL};
    pt_cfg_unsupported(r, unsupported);
    pt_lb_hash_parse_common(r, c); /* consistent_hashing_lb_config */
    parse_percent(r, "healthy_panic_threshold", &c->healthy_panic_threshold, 50);
    parse_locality_choice(r, c);
}

pt_cluster_t *pt_cluster_parse(pt_cfg_t *r)
{
    size_t errors_before = r->nerrors;
    pt_cluster_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    atomic_init(&c->refs, 1);
    pt_arena_init_small(&c->arena); /* thousands of clusters: no 8 KiB block each */
    pt_arena_init_small(&c->ep_arena);
    c->source = json_incref(r->frames[r->depth - 1].node);
    pt_cla_policy_default(&c->cla_policy);
    pt_cfg_unsupported(r, cluster_unsupported);

    const char *name;
    if (pt_cfg_string(r, "name", &name, NULL) == 0 || (name != NULL && name[0] == '\0'))
        pt_cfg_error(r, "name", "is required");
    c->name = pt_arena_strdup(&c->arena, name ? name : "");
    c->metadata = pt_metadata_parse(r, "metadata", &c->arena);

    int type, lb;
    /* cluster_discovery_type is a oneof: type, or an extension in cluster_type. */
    static const char *const discovery[] = {"type", "cluster_type", NULL};
    int which = pt_cfg_oneof(r, discovery, 0);
    pt_cfg_enum(r, "type", type_names, NULL, &type, PT_CLUSTER_STATIC);
    c->type = (pt_cluster_type_t)type;
    if (which == 1)
        parse_cluster_type(r, c);
    pt_cfg_duration_ms(r, "connect_timeout", &c->connect_timeout_ms, 5000);
    /* Resolves hostnames in DNS clusters; a STATIC cluster has none, so it changes nothing
     * (Envoy's examples set it anyway). Checked, kept for the DNS cluster types. */
    static const char *const dns_families[] = {"AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED",
                                               "ALL", NULL};
    pt_cfg_enum(r, "dns_lookup_family", dns_families, NULL, &c->dns_lookup_family, 0);
    pt_cfg_bool(r, "wait_for_warm_on_init", &c->wait_for_warm, 1);
    if (pt_cluster_type_is_dns(c->type) && c->dns == NULL &&
        (c->dns = pt_arena_alloc(&c->arena, sizeof(*c->dns))) != NULL) {
        memset(c->dns, 0, sizeof(*c->dns));
        c->dns->logical = c->type == PT_CLUSTER_LOGICAL_DNS;
        c->dns->family = (pt_dns_family_t)c->dns_lookup_family;
        pt_dns_config_parse(r, &c->arena, c->dns, 0);
    } else if (c->type == PT_CLUSTER_STATIC || c->type == PT_CLUSTER_EDS ||
               c->type == PT_CLUSTER_ORIGINAL_DST) {
        /* Envoy reads the DNS fields of every cluster and uses them in DNS ones only: they
         * are checked all the same. */
        pt_dns_config_t unused;
        memset(&unused, 0, sizeof(unused));
        pt_dns_config_parse(r, &c->arena, &unused, 0);
    } else if (c->dns != NULL) {
        /* From cluster_type: the Cluster's own DNS fields would be silently unused there. */
        static const char *const top[] = {"dns_refresh_rate", "dns_failure_refresh_rate",
                                          "respect_dns_ttl", "dns_jitter",
                                          "typed_dns_resolver_config",
                                          "dns_resolution_config", "dns_resolvers",
                                          "use_tcp_for_dns_lookups", NULL};
        for (int i = 0; top[i] != NULL; i++)
            if (pt_cfg_has(r, top[i])) {
                pt_cfg_error(r, top[i], "is not used with cluster_type (set it in "
                                        "cluster_type.typed_config)");
                (void)pt_cfg_get(r, top[i]);
            }
    }
    if (c->connect_timeout_ms == 0 && pt_cfg_has(r, "connect_timeout"))
        pt_cfg_error(r, "connect_timeout", "must be greater than 0");
    pt_cfg_enum(r, "lb_policy", lb_names, lb_known, &lb, PT_LB_ROUND_ROBIN);
    c->lb_policy = (pt_lb_policy_t)lb;
    parse_original_dst(r, c);
    c->lb_choice_count = 2;
    c->active_request_bias = 1.0;
    /* common_lb_config's locality choice, then the policy's own (which wins, as in
     * Envoy's typed policies). */
    c->healthy_panic_threshold = 50;
    c->zone_routing_enabled = 100;
    c->zone_min_cluster_size = 6;
    if (pt_cfg_enter(r, "common_lb_config") > 0) {
        parse_common_lb_config(r, c);
        pt_cfg_leave(r);
    }
    if (pt_cfg_enter(r, "least_request_lb_config") > 0) {
        static const char *const lr_unsupported[] = {"slow_start_config", NULL};
        pt_cfg_unsupported(r, lr_unsupported);
        uint64_t n;
        pt_cfg_uint(r, "choice_count", &n, 2, 2, 100);
        c->lb_choice_count = (uint32_t)n;
        if (pt_cfg_enter(r, "active_request_bias") > 0) {
            /* A RuntimeDouble: petrel has no runtime, the default value is the value. */
            const char *key;
            pt_cfg_string(r, "runtime_key", &key, NULL);
            pt_cfg_double(r, "default_value", &c->active_request_bias, 1.0, 0.0, 1e9);
            pt_cfg_leave(r);
        }
        parse_locality_lb_config(r, c);
        if (c->lb_policy != PT_LB_LEAST_REQUEST)
            pt_cfg_error(r, NULL, "applies only with lb_policy LEAST_REQUEST");
        pt_cfg_leave(r);
    }
    pt_lb_policy_parse(r, c); /* RING_HASH, MAGLEV, load_balancing_policy */
    pt_lb_hash_apply_common(c);
    if (pt_cfg_enter(r, "round_robin_lb_config") > 0) {
        static const char *const rr_unsupported[] = {"slow_start_config", NULL};
        pt_cfg_unsupported(r, rr_unsupported);
        parse_locality_lb_config(r, c);
        if (c->lb_policy != PT_LB_ROUND_ROBIN)
            pt_cfg_error(r, NULL, "applies only with lb_policy ROUND_ROBIN");
        pt_cfg_leave(r);
    }
    if (pt_cfg_enter(r, "upstream_connection_options") > 0) {
        static const char *const uco_unsupported[] = {
            "set_local_interface_name_on_upstream_connections", "happy_eyeballs_config", NULL};
        pt_cfg_unsupported(r, uco_unsupported);
        if (pt_cfg_enter(r, "tcp_keepalive") > 0) {
            uint64_t v;
            c->tcp_keepalive.enabled = 1;
            pt_cfg_uint(r, "keepalive_probes", &v, 0, 0, 127);
            c->tcp_keepalive.probes = (uint32_t)v;
            pt_cfg_uint(r, "keepalive_time", &v, 0, 0, 32767);
            c->tcp_keepalive.time_s = (uint32_t)v;
            pt_cfg_uint(r, "keepalive_interval", &v, 0, 0, 32767);
            c->tcp_keepalive.interval_s = (uint32_t)v;
            pt_cfg_leave(r);
        }
        pt_cfg_leave(r);
    }
    uint64_t limit;
    pt_cfg_uint(r, "per_connection_buffer_limit_bytes", &limit, 1024 * 1024, 1, UINT32_MAX);
    c->buffer_limit = (uint32_t)limit;

    /* Connection reuse: the deprecated top-level max_requests_per_connection and the one in
     * common_http_protocol_options mean the same; the latter wins when both are set. */
    uint64_t mr;
    pt_cfg_uint(r, "max_requests_per_connection", &mr, 0, 0, UINT32_MAX);
    c->max_requests_per_connection = (uint32_t)mr;
    c->http_idle_timeout_ms = 3600 * 1000;
    if (pt_cfg_enter(r, "common_http_protocol_options") > 0) {
        parse_common_http_options(r, c);
        pt_cfg_leave(r);
    }
    if (pt_cfg_enter(r, "http_protocol_options") > 0) { /* deprecated spelling */
        parse_upstream_http1_options(r);
        pt_cfg_leave(r);
    }
    /* The deprecated spelling of explicit HTTP/2 (Envoy still takes it). */
    if (pt_cfg_enter(r, "http2_protocol_options") > 0) {
        c->protocol = PT_UPSTREAM_HTTP2;
        parse_upstream_http2_options(r, c);
        pt_cfg_leave(r);
    }
    /* Deprecated spelling of HttpProtocolOptions.upstream_http_protocol_options. */
    if (pt_cfg_enter(r, "upstream_http_protocol_options") > 0) {
        parse_upstream_http_protocol_options(r, c);
        pt_cfg_leave(r);
    }
    /* The current spelling of both; it wins over the deprecated fields above. */
    parse_typed_protocol_options(r, c);

    json_t *ts = pt_cfg_get(r, "transport_socket");
    json_t *tsm = pt_cfg_get(r, "transport_socket_matches");
    if ((ts != NULL || tsm != NULL) && (c->tls_own = calloc(1, sizeof(*c->tls_own))) != NULL) {
        atomic_init(&c->tls_own->refs, 1);
        pt_arena_init_small(&c->tls_own->arena);
        c->tls_own->id = atomic_fetch_add_explicit(&next_tls_id, 1, memory_order_relaxed);
        /* Both in one digest: versions share contexts only when both are the same. */
        json_t *both = json_pack("{s:O?, s:O?}", "transport_socket", ts,
                                 "transport_socket_matches", tsm);
        if (both == NULL)
            pt_cfg_error(r, "transport_socket", "out of memory");
        c->tls_own->digest = pt_json_digest(both);
        json_decref(both);
        pt_tls_transport_socket_parse(r, &c->tls_own->arena, "transport_socket", 0, &c->tls);
        c->nmatches = pt_transport_matches_parse(r, &c->tls_own->arena, &c->matches);
    } else if (ts != NULL || tsm != NULL) {
        pt_cfg_error(r, "transport_socket", "out of memory");
    }

    pt_breakers_parse(r, c->breakers);
    json_t *checks = pt_cfg_get(r, "health_checks");
    c->health_checks_json = checks != NULL ? json_incref(checks) : NULL;
    pt_health_checks_parse(r, &c->arena, "health_checks", &c->health_checks,
                           &c->nhealth_checks);
    pt_cfg_bool(r, "ignore_health_on_host_removal", &c->ignore_health_on_host_removal, 0);
    if (pt_cfg_enter(r, "outlier_detection") > 0) {
        c->outlier = pt_outlier_parse(r, &c->arena);
        pt_cfg_leave(r);
    }

    if (pt_cfg_enter(r, "eds_cluster_config") > 0) {
        if (c->type != PT_CLUSTER_EDS)
            pt_cfg_error(r, NULL, "applies only to a cluster of type EDS");
        c->eds_config = pt_arena_alloc(&c->arena, sizeof(*c->eds_config));
        if (c->eds_config != NULL &&
            pt_config_source_parse(r, &c->arena, "eds_config", c->eds_config) == 0)
            pt_cfg_error(r, "eds_config", "is required");
        const char *sn;
        pt_cfg_string(r, "service_name", &sn, NULL);
        pt_config_no_xdstp(r, "service_name", sn);
        c->eds_service_name = pt_arena_strdup(&c->arena, sn != NULL && sn[0] ? sn : c->name);
        pt_cfg_leave(r);
    } else if (c->type == PT_CLUSTER_EDS) {
        pt_cfg_error(r, "eds_cluster_config", "is required for a cluster of type EDS");
    }
    int rc = c->type == PT_CLUSTER_EDS && pt_cfg_has(r, "load_assignment") ? -2 : 0;
    if (pt_cluster_type_is_dns(c->type)) {
        parse_dns_endpoints(r, c);
    } else if (c->type == PT_CLUSTER_ORIGINAL_DST && pt_cfg_has(r, "load_assignment")) {
        /* Its hosts are its connections' destinations, as in Envoy, which refuses this. */
        pt_cfg_error(r, "load_assignment", "ORIGINAL_DST clusters must have no load "
                                           "assignment configured (their hosts are the "
                                           "connections' original destinations)");
        (void)pt_cfg_get(r, "load_assignment");
    } else if (rc == -2) {
        /* Its hosts come from EDS: a load_assignment here would be silently unused. */
        pt_cfg_error(r, "load_assignment", "is not used by a cluster of type EDS (its "
                                           "endpoints come from eds_cluster_config)");
        (void)pt_cfg_get(r, "load_assignment");
    } else if ((rc = pt_cfg_enter(r, "load_assignment")) > 0) {
        pt_endpoints_t eps;
        if (pt_endpoints_parse(r, &c->ep_arena, c->name, &eps) == 0) {
            c->endpoints = eps.endpoints;
            c->nendpoints = eps.nendpoints;
            c->cla_policy = eps.policy;
            refuse_stale_after(r, c);
        }
        pt_cfg_leave(r);
    } else if (rc == 0 && c->type == PT_CLUSTER_STATIC) {
        /* Envoy accepts a STATIC cluster with no endpoints; it simply has no hosts. */
    }
    /* An invalid cluster still enters the name index, so filters naming it do not also
     * report "unknown cluster": the snapshot is not built while any error stands. */
    (void)errors_before;
    return c;
}

static int64_t read_membership_total(const void *st)
{
    return atomic_load(&((const pt_cluster_state_t *)st)->membership_total);
}

static int64_t read_membership_healthy(const void *st)
{
    return atomic_load(&((const pt_cluster_state_t *)st)->membership_healthy);
}

static int64_t read_membership_degraded(const void *st)
{
    return atomic_load(&((const pt_cluster_state_t *)st)->membership_degraded);
}

static int64_t read_membership_excluded(const void *st)
{
    return atomic_load(&((const pt_cluster_state_t *)st)->membership_excluded);
}

/* The membership gauges from c's set (c the newest version; main thread). */
static void set_membership(pt_cluster_t *c)
{
    pt_cluster_state_t *st = c->state;
    pt_lb_set_t *s = atomic_load(&c->lb_set); /* main thread: it publishes the sets */
    uint32_t degraded = s != NULL ? s->degraded_total : 0;
    uint32_t excluded = s != NULL ? s->excluded_total : 0;
    atomic_store(&st->membership_total, c->nhosts);
    atomic_store(&st->membership_healthy, s != NULL ? s->healthy_total : 0);
    atomic_store(&st->membership_degraded, degraded);
    atomic_store(&st->membership_excluded, excluded);
    if (degraded > 0 && st->membership_degraded_id == 0 &&
        (st->membership_degraded_id = pt_stats_gauge("cluster", "envoy_cluster_name", c->name,
                                                     "membership_degraded")) != 0)
        pt_stats_gauge_fn(st->membership_degraded_id, read_membership_degraded, st);
    if (excluded > 0 && st->membership_excluded_id == 0 &&
        (st->membership_excluded_id = pt_stats_gauge("cluster", "envoy_cluster_name", c->name,
                                                     "membership_excluded")) != 0)
        pt_stats_gauge_fn(st->membership_excluded_id, read_membership_excluded, st);
}

static const char *const lb_stat_names[] = {
#define PT_X(n) #n,
    PT_CLUSTER_LB_COUNTERS(PT_X)
#undef PT_X
};

void pt_cluster_lb_stat_make(pt_cluster_t *c, unsigned which)
{
    pt_stat_t *ids = atomic_load_explicit(&c->lb_stats, memory_order_acquire);
    if (ids == NULL) { /* as code_stats: the array on first use, one thread's wins */
        pt_stat_t *fresh = calloc(PT_LB_NSTATS, sizeof(pt_stat_t));
        if (fresh == NULL)
            return;
        if (atomic_compare_exchange_strong(&c->lb_stats, &ids, fresh))
            ids = fresh;
        else
            free(fresh);
    }
    pt_stat_t id = __atomic_load_n(&ids[which], __ATOMIC_RELAXED);
    if (id == 0) {
        /* Find-or-create: two threads making it at once get the same stat. */
        id = pt_stats_counter("cluster", "envoy_cluster_name", c->name, lb_stat_names[which]);
        __atomic_store_n(&ids[which], id, __ATOMIC_RELAXED);
    }
    pt_stat_inc(id);
}

int pt_locality_equal(const pt_locality_t *a, const pt_locality_t *b)
{
    const char *x[3] = {a->region, a->zone, a->sub_zone}, *y[3] = {b->region, b->zone, b->sub_zone};
    for (int i = 0; i < 3; i++)
        if (strcmp(x[i] != NULL ? x[i] : "", y[i] != NULL ? y[i] : "") != 0)
            return 0;
    return 1;
}

/* The distinct localities of c's endpoints, copied into c's arena; each endpoint's index
 * goes to loc_of[i]. */
static int intern_localities(pt_cluster_t *c, uint16_t *loc_of)
{
    unsigned n = c->nendpoints, cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    uint32_t *slots = calloc(cap, sizeof(uint32_t)); /* locality index + 1 */
    pt_locality_t *locs = calloc(n ? n : 1, sizeof(*locs));
    int rc = -1;
    if (slots == NULL || locs == NULL)
        goto out;
    unsigned nl = 0;
    for (unsigned i = 0; i < n; i++) {
        const pt_locality_t *l = &c->endpoints[i].locality;
        const char *f[3] = {l->region ? l->region : "", l->zone ? l->zone : "",
                            l->sub_zone ? l->sub_zone : ""};
        uint64_t h = pt_hash_name(f[0]) * 3 + pt_hash_name(f[1]) * 5 + pt_hash_name(f[2]) * 7;
        size_t k = h & (cap - 1);
        while (slots[k] != 0 && !pt_locality_equal(&locs[slots[k] - 1], l))
            k = (k + 1) & (cap - 1);
        if (slots[k] == 0) {
            pt_locality_t *nlc = &locs[nl];
            /* The usual locality, none at all, costs no copy. */
            int empty = !f[0][0] && !f[1][0] && !f[2][0];
            nlc->region = empty ? "" : pt_arena_strdup(&c->arena, f[0]);
            nlc->zone = empty ? "" : pt_arena_strdup(&c->arena, f[1]);
            nlc->sub_zone = empty ? "" : pt_arena_strdup(&c->arena, f[2]);
            if (nlc->region == NULL || nlc->zone == NULL || nlc->sub_zone == NULL || nl >= 65535)
                goto out;
            slots[k] = ++nl;
        }
        loc_of[i] = (uint16_t)(slots[k] - 1);
    }
    /* No locality at all (most clusters): a shared empty one, so that indices are always
     * valid and nothing is allocated. */
    static pt_locality_t none[1] = {{"", "", ""}};
    if (nl == 0 || (nl == 1 && !locs[0].region[0] && !locs[0].zone[0] && !locs[0].sub_zone[0])) {
        c->localities = none;
    } else {
        c->localities = pt_arena_alloc(&c->arena, nl * sizeof(pt_locality_t));
        if (c->localities == NULL)
            goto out;
        memcpy(c->localities, locs, nl * sizeof(pt_locality_t));
    }
    c->nlocalities = nl;
    rc = 0;
out:
    free(slots);
    free(locs);
    return rc;
}

/* What c's endpoints say of its hosts: one default for all when they all say the same (no
 * per-host array), else one entry each; metadata only when some endpoint has any. */
static int host_infos(pt_cluster_t *c)
{
    unsigned n = c->nendpoints;
    uint16_t *loc_of = malloc((n ? n : 1) * sizeof(uint16_t));
    if (loc_of == NULL || intern_localities(c, loc_of) != 0) {
        free(loc_of);
        return -1;
    }
    int uniform = 1, meta = 0;
    for (unsigned i = 0; i < n; i++) {
        const pt_endpoint_t *e = &c->endpoints[i], *f = &c->endpoints[0];
        uniform &= e->weight == f->weight && e->priority == f->priority &&
                   loc_of[i] == loc_of[0] && e->locality_weight == f->locality_weight &&
                   e->health == f->health;
        meta |= e->metadata != NULL;
    }
    for (unsigned i = 0; i < n || i == 0; i++) {
        const pt_endpoint_t *e = n > 0 ? &c->endpoints[i] : NULL;
        pt_host_info_t hi = {.weight = e && e->weight ? e->weight : 1,
                             .locality_weight = e ? e->locality_weight : 0,
                             .locality = e ? loc_of[i] : 0,
                             .priority = (uint8_t)(e && e->priority <= PT_LB_MAX_PRIORITY
                                                       ? e->priority
                                                       : (e ? PT_LB_MAX_PRIORITY : 0)),
                             .eds_health = (uint8_t)(e ? e->health : PT_EDS_UNKNOWN)};
        if (i == 0) {
            c->hinfo_default = hi;
            if (!uniform && (c->hinfo = calloc(n, sizeof(pt_host_info_t))) == NULL)
                goto oom;
        }
        if (c->hinfo != NULL)
            c->hinfo[i] = hi;
        if (n == 0)
            break;
    }
    if (meta) {
        if ((c->hmeta = calloc(n, sizeof(char *))) == NULL)
            goto oom;
        for (unsigned i = 0; i < n; i++)
            if (c->endpoints[i].metadata != NULL &&
                (c->hmeta[i] = pt_arena_strdup(&c->arena, c->endpoints[i].metadata)) == NULL)
                goto oom;
    }
    free(loc_of);
    return 0;
oom:
    free(loc_of);
    return -1;
}

/* ---- health changes ----------------------------------------------------------------- */

/* Clusters whose hosts' health changed since the last flush (main thread; each holds a
 * reference to its state), and the loop whose turns flush them. */
static pt_cluster_state_t *dirty_states;
static struct ev_loop *health_loop;
static ev_prepare health_flush;

/* Computes again the sets of every live version of st's cluster. */
static void recompute(pt_cluster_state_t *st)
{
    pthread_mutex_lock(&states_lock);
    unsigned n = 0;
    for (pt_cluster_t *v = st->versions; v != NULL; v = v->next_version)
        n++;
    pt_cluster_t **live = malloc((n ? n : 1) * sizeof(*live));
    unsigned k = 0;
    for (pt_cluster_t *v = st->versions; live != NULL && v != NULL; v = v->next_version) {
        /* A version whose last reference is going is left alone. */
        long r = atomic_load_explicit(&v->refs, memory_order_relaxed);
        while (r > 0 && !atomic_compare_exchange_weak(&v->refs, &r, r + 1))
            ;
        if (r > 0)
            live[k++] = v;
    }
    pthread_mutex_unlock(&states_lock);
    if (live == NULL) {
        pt_error("cluster %s: out of memory computing its hosts' health", st->name);
        return;
    }
    for (unsigned i = 0; i < k; i++) {
        if (pt_lb_publish(live[i]) != 0)
            pt_error("cluster %s: out of memory computing its hosts' health", st->name);
        pt_lb_hash_cluster_health_changed(live[i]); /* RING_HASH, MAGLEV: their tables */
        if (i == 0)
            set_membership(live[i]);
    }
    for (unsigned i = 0; i < k; i++)
        pt_cluster_unref(live[i]);
    free(live);
}

void pt_lb_flush(void)
{
    while (dirty_states != NULL) {
        pt_cluster_state_t *st = dirty_states;
        dirty_states = st->next_dirty;
        st->next_dirty = NULL;
        st->health_dirty = 0;
        recompute(st);
        pt_cluster_state_unref(st);
    }
}

static void on_health_flush(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    pt_lb_flush();
}

void pt_lb_set_main_loop(struct ev_loop *loop)
{
    if (health_loop != NULL) {
        ev_ref(health_loop);
        ev_prepare_stop(health_loop, &health_flush);
    }
    pt_lb_flush();
    health_loop = loop;
    if (loop != NULL) {
        ev_prepare_init(&health_flush, on_health_flush);
        ev_prepare_start(loop, &health_flush);
        ev_unref(loop); /* it keeps nothing running by itself */
    }
}

static void mark_dirty(pt_cluster_state_t *st)
{
    if (st == NULL)
        return;
    if (!st->health_dirty) {
        st->health_dirty = 1;
        atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
        st->next_dirty = dirty_states;
        dirty_states = st;
    }
    if (health_loop == NULL)
        pt_lb_flush(); /* no loop to batch in (start, tests): now */
}

void pt_host_health_update(pt_host_t *h, uint32_t set, uint32_t clear)
{
    uint32_t old = atomic_load(&h->health), now;
    do {
        now = (old | set) & ~clear;
    } while (now != old && !atomic_compare_exchange_weak(&h->health, &old, now));
    if (now != old)
        mark_dirty(h->state);
}

void pt_cluster_health_changed(pt_cluster_t *c)
{
    mark_dirty(c->state);
}

int pt_cluster_prepare(pt_cluster_t *c)
{
    if (c->state == NULL && (c->state = pt_cluster_state_get(c->name)) == NULL)
        return -1;
    pt_breakers_prepare(c->breakers, c->state->breaker_counts, c->name, &c->arena);
#define PT_X(n) c->stats.n = pt_stats_counter("cluster", "envoy_cluster_name", c->name, #n);
    PT_CLUSTER_COUNTERS(PT_X)
#undef PT_X
#define PT_X(n) c->stats.n = pt_stats_gauge("cluster", "envoy_cluster_name", c->name, #n);
    PT_CLUSTER_GAUGES(PT_X)
#undef PT_X
#define PT_X(n) c->stats.n = pt_stats_histogram("cluster", "envoy_cluster_name", c->name, #n);
    PT_CLUSTER_HISTOGRAMS(PT_X)
#undef PT_X
    if (c->protocol != PT_UPSTREAM_HTTP1) {
#define PT_X(n)                                                                                \
    c->stats.http2_##n = pt_stats_counter("cluster", "envoy_cluster_name", c->name, "http2." #n);
        PT_CLUSTER_HTTP2_COUNTERS(PT_X)
#undef PT_X
#define PT_X(n)                                                                                \
    c->stats.http2_##n = pt_stats_gauge("cluster", "envoy_cluster_name", c->name, "http2." #n);
        PT_CLUSTER_HTTP2_GAUGES(PT_X)
#undef PT_X
    }
    /* Endpoints become hosts: the same object as in an earlier version of the cluster when
     * one listed the same address, with what petrel learned of it. What the assignment says
     * of each is this version's. */
    if (c->nendpoints > 0 && (c->hosts = calloc(c->nendpoints, sizeof(pt_host_t *))) == NULL)
        return -1;
    if (host_infos(c) != 0)
        return -1;
    for (unsigned i = 0; i < c->nendpoints; i++) {
        const pt_endpoint_t *e = &c->endpoints[i];
        int fresh;
        pt_host_t *h = host_get(c->state, e, &fresh);
        if (h == NULL)
            return -1;
        /* A new host of a health-checked cluster waits for its first check (set before any
         * worker sees it, so no request reaches it in the instant before the checker
         * starts). A host that stays keeps its verdict. */
        if (fresh && c->nhealth_checks > 0)
            atomic_fetch_or(&h->health, (uint32_t)PT_HOST_FAILED_ACTIVE_HC);
        atomic_store_explicit(&h->priority, pt_cluster_host_info(c, c->nhosts)->priority,
                              memory_order_relaxed);
        c->hosts[c->nhosts++] = h;
    }
    choose_host_transports(c);
    /* Priorities and localities, for the workers (before any sees c), and c among the live
     * versions whose sets health changes make again. */
    if (pt_lb_publish(c) != 0)
        return -1;
    pt_cluster_state_t *st = c->state;
    pthread_mutex_lock(&states_lock);
    c->prev_version = NULL;
    c->next_version = st->versions;
    if (st->versions != NULL)
        st->versions->prev_version = c;
    st->versions = c;
    pthread_mutex_unlock(&states_lock);
    /* Membership gauges are the state's, set by the main thread. */
    st->membership_total_id = c->stats.membership_total;
    st->membership_healthy_id = c->stats.membership_healthy;
    set_membership(c);
    pt_stats_gauge_fn(c->stats.membership_total, read_membership_total, st);
    pt_stats_gauge_fn(c->stats.membership_healthy, read_membership_healthy, st);
    if (c->type == PT_CLUSTER_ORIGINAL_DST && c->odst == NULL && (c->odst = odst_new()) == NULL)
        return -1;
    pt_outlier_prepare(c); /* per-host outlier state and stats, before workers see c */
    if (pt_lb_hash_cluster_prepare(c) != 0) /* RING_HASH, MAGLEV: the table */
        return -1;
    /* The endpoints are hosts now: what they were parsed into goes. */
    pt_arena_dispose(&c->ep_arena);
    c->endpoints = NULL;
    return 0;
}

/* ---- ORIGINAL_DST hosts -------------------------------------------------------------
 *
 * An ORIGINAL_DST cluster has no endpoints: each connection's original destination (or the
 * override header's address) is its host, made the first time a worker picks it. Envoy's
 * workers make such a host at once and post it to the main thread, which publishes a new
 * copy of the whole host map to every worker. petrel keeps one table of the hosts made so
 * far in the cluster version, behind a mutex of its own, and gives each worker a copy of
 * what it found there:
 *  - a worker picks from its own copy without a lock, writing nothing shared but the host's
 *    reference count (and its "used" flag when that changes); only a destination new to
 *    that worker takes the lock, to find the host in the table or make it;
 *  - a new host is made at once, by the worker that needs it (the connection is waiting; a
 *    round trip through the main thread would stall it), in the cluster state's host
 *    registry (host_get) like every host, so one address is one host on every worker and
 *    across versions of the cluster: one set of pools and counters;
 *  - no copy of the whole table per new destination (Envoy's copy-on-write costs O(hosts)
 *    per new host and needs a way to reclaim the copies workers read);
 *  - the main thread's cleanup, every cleanup_interval, drops the hosts not picked since the
 *    previous one that carry no connection or request (Envoy's rule), marks them removed
 *    (each worker then frees its empty pools of them) and bumps the table's generation:
 *    a worker whose copy is of an older generation drops it and fills it again.
 * Every other cluster's pick stays as it was, lock-free on its version's host array. A
 * caller holds a reference to the host it picked (pt_cluster_host_done), so no cleanup
 * frees a host in use. */

_Atomic uint64_t pt_odst_removed_epoch;

/* Hosts by address: open addressing, at most half full, a reference per host. */
typedef struct odst_table {
    pt_host_t **slots;
    unsigned nslots, count;
} odst_table_t;

/* A worker's copy of what it found in the shared table, valid while the shared table's
 * generation is the one it was filled under (a cleanup that drops hosts bumps it). */
typedef struct odst_local {
    _Alignas(64) odst_table_t t;
    uint64_t generation;
} odst_local_t;

typedef struct pt_odst_hosts {
    pthread_mutex_t lock;
    odst_table_t t;                   /* the shared table (under lock) */
    _Atomic uint64_t generation;      /* bumped (under lock) when hosts leave t */
    odst_local_t *locals;             /* one per worker (pt_worker_count()), or NULL */
    unsigned nlocals;
    uint64_t next_cleanup_ms;         /* main thread */
} pt_odst_hosts_t;

static unsigned table_slot(const odst_table_t *t, const pt_addr_t *a)
{
    unsigned i = (unsigned)(host_key_hash(a, NULL) % t->nslots);
    while (t->slots[i] != NULL && !pt_addr_equal(&t->slots[i]->address, a))
        i = (i + 1) % t->nslots;
    return i;
}

static pt_host_t *table_find(const odst_table_t *t, const pt_addr_t *a)
{
    return t->nslots ? t->slots[table_slot(t, a)] : NULL;
}

/* Room for one more: 0, or -1 out of memory. */
static int table_grow(odst_table_t *t)
{
    if ((t->count + 1) * 2 <= t->nslots)
        return 0;
    unsigned n = t->nslots ? t->nslots * 2 : 16;
    pt_host_t **old = t->slots;
    unsigned nold = t->nslots;
    if ((t->slots = calloc(n, sizeof(*t->slots))) == NULL) {
        t->slots = old;
        return -1;
    }
    t->nslots = n;
    for (unsigned i = 0; i < nold; i++)
        if (old[i] != NULL)
            t->slots[table_slot(t, &old[i]->address)] = old[i];
    free(old);
    return 0;
}

/* Adds h (the table takes the caller's reference): 0, or -1 out of memory. */
static int table_add(odst_table_t *t, pt_host_t *h)
{
    if (table_grow(t) != 0)
        return -1;
    t->slots[table_slot(t, &h->address)] = h;
    t->count++;
    return 0;
}

static void table_clear(odst_table_t *t)
{
    for (unsigned i = 0; i < t->nslots; i++)
        pt_host_unref(t->slots[i]);
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

static pt_odst_hosts_t *odst_new(void)
{
    pt_odst_hosts_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    unsigned n = pt_worker_count();
    if (n > 0 && (m->locals = aligned_alloc(_Alignof(odst_local_t), n * sizeof(odst_local_t))) ==
                     NULL) {
        free(m);
        return NULL;
    }
    if (m->locals != NULL)
        memset(m->locals, 0, n * sizeof(odst_local_t));
    m->nlocals = m->locals != NULL ? n : 0;
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

static void odst_free(pt_odst_hosts_t *m)
{
    if (m == NULL)
        return;
    for (unsigned i = 0; i < m->nlocals; i++)
        table_clear(&m->locals[i].t);
    free(m->locals);
    table_clear(&m->t);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* "10.0.0.1:80" or "[::1]:80" (what the override header holds). */
static int parse_ip_port(const char *v, pt_addr_t *out)
{
    char ip[64];
    const char *colon, *start = v;
    size_t len;
    if (v[0] == '[') {
        const char *end = strchr(v, ']');
        if (end == NULL || end[1] != ':')
            return -1;
        start = v + 1;
        len = (size_t)(end - start);
        colon = end + 1;
    } else {
        colon = strrchr(v, ':');
        if (colon == NULL || memchr(v, ':', (size_t)(colon - v)) != NULL)
            return -1;
        len = (size_t)(colon - v);
    }
    if (len == 0 || len >= sizeof(ip))
        return -1;
    memcpy(ip, start, len);
    ip[len] = '\0';
    char *endp;
    unsigned long port = strtoul(colon + 1, &endp, 10);
    if (colon[1] < '0' || colon[1] > '9' || *endp != '\0' || port > 65535)
        return -1;
    return pt_addr_parse(out, ip, (unsigned)port);
}

/* Marks h picked (and, if a cleanup had dropped it, back), writing only on a change. */
static void odst_mark_used(pt_host_t *h)
{
    if (atomic_load_explicit(&h->odst_flags, memory_order_relaxed) != PT_HOST_ODST_USED)
        atomic_store_explicit(&h->odst_flags, PT_HOST_ODST_USED, memory_order_relaxed);
}

/* Out of line: inlined, its frame would be set up on every pick of every cluster. */
static __attribute__((noinline)) pt_host_t *odst_pick(pt_cluster_t *c, pt_worker_t *w,
                                                      const pt_lb_context_t *ctx)
{
    pt_addr_t dst;
    int have = 0;
    if (c->odst == NULL || ctx == NULL)
        return NULL;
    if (c->odst_header != NULL && ctx->headers != NULL) {
        const char *v = pt_http_headers_get(ctx->headers, c->odst_header);
        if (v != NULL) {
            have = parse_ip_port(v, &dst) == 0;
            if (!have) /* untrusted input: counted, then the connection's destination */
                pt_stat_inc(c->stats.original_dst_host_invalid);
        }
    }
    if (!have && ctx->original_dst != NULL) {
        dst = *ctx->original_dst;
        have = 1;
    }
    if (!have)
        return NULL;
    if (c->odst_port_override >= 0) {
        if (dst.sa.sa_family == AF_INET)
            dst.sin.sin_port = htons((uint16_t)c->odst_port_override);
        else
            dst.sin6.sin6_port = htons((uint16_t)c->odst_port_override);
    }
    pt_odst_hosts_t *m = c->odst;
    /* The worker's own copy first: no lock, nothing written but the host's flags (when
     * they change) and its reference count. It is dropped whole when a cleanup took hosts
     * out of the shared table. */
    odst_local_t *local = w != NULL && w->id >= 0 && (unsigned)w->id < m->nlocals
                              ? &m->locals[w->id]
                              : NULL;
    if (local != NULL) {
        uint64_t g = atomic_load_explicit(&m->generation, memory_order_acquire);
        if (local->generation != g) {
            table_clear(&local->t);
            local->generation = g;
        }
        pt_host_t *h = table_find(&local->t, &dst);
        if (h != NULL) {
            odst_mark_used(h);
            return pt_host_ref(h); /* the caller's */
        }
    }
    pthread_mutex_lock(&m->lock);
    pt_host_t *h = table_find(&m->t, &dst);
    if (h == NULL && table_grow(&m->t) == 0) {
        pt_endpoint_t e = {.address = dst, .weight = 1};
        int fresh;
        if ((h = host_get(c->state, &e, &fresh)) != NULL) {
            table_add(&m->t, h); /* the table's reference (room was made above) */
            atomic_store(&c->state->membership_total, m->t.count);
            atomic_store(&c->state->membership_healthy, m->t.count);
        }
    }
    if (h != NULL) {
        pt_host_ref(h); /* the caller's */
        odst_mark_used(h);
        /* Under the lock, so no cleanup between the lookup and the copy's generation. */
        if (local != NULL &&
            local->generation == atomic_load_explicit(&m->generation, memory_order_relaxed) &&
            table_add(&local->t, h) == 0)
            pt_host_ref(h); /* the copy's */
    }
    pthread_mutex_unlock(&m->lock);
    return h;
}

unsigned pt_cluster_odst_cleanup(pt_cluster_t *c, uint64_t now_ms)
{
    pt_odst_hosts_t *m = c->odst;
    if (m == NULL || now_ms < m->next_cleanup_ms)
        return 0;
    m->next_cleanup_ms = now_ms + c->odst_cleanup_ms;
    pt_host_t *gone[64];
    unsigned ngone = 0;
    pthread_mutex_lock(&m->lock);
    for (unsigned i = 0; i < m->t.nslots; i++) {
        pt_host_t *h = m->t.slots[i];
        if (h == NULL)
            continue;
        uint32_t f = atomic_load_explicit(&h->odst_flags, memory_order_relaxed);
        if (f & PT_HOST_ODST_USED) { /* picked lately: kept, and asked again next time */
            atomic_fetch_and_explicit(&h->odst_flags, ~(uint32_t)PT_HOST_ODST_USED,
                                      memory_order_relaxed);
            continue;
        }
        if (atomic_load(&h->cx_active) > 0 || atomic_load(&h->rq_active) > 0)
            continue;
        if (ngone == sizeof(gone) / sizeof(gone[0]))
            break; /* the rest at the next cleanup */
        gone[ngone++] = h;
    }
    if (ngone > 0) {
        /* A table without them (open addressing: the others are placed again). */
        odst_table_t kept = {0};
        int oom = 0;
        for (unsigned i = 0; i < m->t.nslots && !oom; i++) {
            pt_host_t *h = m->t.slots[i];
            int going = 0;
            for (unsigned k = 0; h != NULL && k < ngone && !going; k++)
                going = gone[k] == h;
            if (h != NULL && !going)
                oom = table_add(&kept, h) != 0;
        }
        if (oom) { /* no memory to rebuild: try again next time */
            free(kept.slots);
            ngone = 0;
        } else {
            free(m->t.slots);
            m->t = kept;
            for (unsigned k = 0; k < ngone; k++)
                atomic_fetch_or(&gone[k]->odst_flags, (uint32_t)PT_HOST_ODST_REMOVED);
            /* Workers drop their copies at their next pick. */
            atomic_fetch_add_explicit(&m->generation, 1, memory_order_release);
        }
        atomic_store(&c->state->membership_total, m->t.count);
        atomic_store(&c->state->membership_healthy, m->t.count);
    }
    pthread_mutex_unlock(&m->lock);
    for (unsigned i = 0; i < ngone; i++)
        pt_host_unref(gone[i]);
    if (ngone > 0)
        atomic_fetch_add(&pt_odst_removed_epoch, 1);
    return ngone;
}

pt_host_t **pt_cluster_odst_hosts(pt_cluster_t *c, unsigned *n)
{
    *n = 0;
    pt_odst_hosts_t *m = c->odst;
    if (m == NULL)
        return NULL;
    pthread_mutex_lock(&m->lock);
    pt_host_t **out = m->t.count > 0 ? malloc(m->t.count * sizeof(*out)) : NULL;
    for (unsigned i = 0; out != NULL && i < m->t.nslots; i++)
        if (m->t.slots[i] != NULL)
            out[(*n)++] = pt_host_ref(m->t.slots[i]);
    pthread_mutex_unlock(&m->lock);
    return out;
}

pt_host_t *pt_cluster_pick_host(pt_cluster_t *c, pt_worker_t *w, const pt_lb_context_t *ctx,
                                pt_host_t *const *exclude, unsigned nexclude)
{
    switch (c->lb_policy) {
    case PT_LB_RING_HASH:
    case PT_LB_MAGLEV:
        return pt_lb_hash_pick(c, w, ctx, exclude, nexclude);
    case PT_LB_CLUSTER_PROVIDED: /* ORIGINAL_DST only: the destination is the host */
        return c->type == PT_CLUSTER_ORIGINAL_DST ? odst_pick(c, w, ctx) : NULL;
    default:
        break;
    }
    if (__builtin_expect(ctx != NULL && ctx->priority_choice != NULL, 0))
        return pt_lb_pick_choice(c, w, ctx->priority_choice, exclude, nexclude);
    return pt_lb_pick(c, w, exclude, nexclude);
}

void pt_cluster_count_response(pt_cluster_t *c, int status)
{
    static const size_t off[] = {
        offsetof(pt_cluster_stats_t, upstream_rq_1xx), offsetof(pt_cluster_stats_t, upstream_rq_2xx),
        offsetof(pt_cluster_stats_t, upstream_rq_3xx), offsetof(pt_cluster_stats_t, upstream_rq_4xx),
        offsetof(pt_cluster_stats_t, upstream_rq_5xx)};
    if (status < 100 || status > 599)
        return;
    pt_stat_inc(*(const pt_stat_t *)((const char *)&c->stats + off[status / 100 - 1]));
    /* Per-code counters are created the first time a code is seen: a registry lookup once,
     * then a cached id. */
    pt_stat_t *codes = atomic_load_explicit(&c->code_stats, memory_order_acquire);
    if (codes == NULL) {
        pt_stat_t *fresh = calloc(500, sizeof(pt_stat_t));
        if (fresh == NULL)
            return;
        pt_stat_t *expected = NULL;
        if (!atomic_compare_exchange_strong(&c->code_stats, &expected, fresh)) {
            free(fresh);
            codes = expected;
        } else {
            codes = fresh;
        }
    }
    pt_stat_t id = __atomic_load_n(&codes[status - 100], __ATOMIC_RELAXED);
    if (id == 0) {
        char name[32];
        snprintf(name, sizeof(name), "upstream_rq_%d", status);
        id = pt_stats_counter("cluster", "envoy_cluster_name", c->name, name);
        __atomic_store_n(&codes[status - 100], id, __ATOMIC_RELAXED);
    }
    pt_stat_inc(id);
}

/* The transport_socket_matches choice for the i-th host: -1 for the cluster's own socket. */
static int host_match(const pt_cluster_t *c, unsigned i)
{
    return pt_transport_match_find(c->matches, c->nmatches, pt_cluster_host_metadata(c, i));
}

/* Records in c's hosts which transport their metadata picks (main thread, before workers
 * see c): a connection then finds it without looking the host up in c. */
static void choose_host_transports(pt_cluster_t *c)
{
    if (c->nmatches == 0)
        return;
    uint64_t id = (uint64_t)c->tls_own->id << 16;
    for (unsigned i = 0; i < c->nhosts; i++)
        atomic_store_explicit(&c->hosts[i]->transport, id | (uint64_t)(host_match(c, i) + 1),
                              memory_order_relaxed);
}

pt_tls_context_t *pt_cluster_host_tls(const pt_cluster_t *c, const pt_host_t *h)
{
    if (c->nmatches == 0)
        return c->tls_ctx;
    uint64_t v = atomic_load_explicit(&h->transport, memory_order_relaxed);
    int m;
    if (v >> 16 == c->tls_own->id) {
        m = (int)(v & 0xffff) - 1;
    } else {
        /* The host's choice was made for another version's matches (an update in flight
         * changed them): c's own, from c's metadata for it. A host c does not list
         * (ORIGINAL_DST) has no metadata. */
        const char *md = NULL;
        for (unsigned i = 0; i < c->nhosts; i++)
            if (c->hosts[i] == h) {
                md = pt_cluster_host_metadata(c, i);
                break;
            }
        m = pt_transport_match_find(c->matches, c->nmatches, md);
    }
    return m >= 0 ? c->matches[m].tls_ctx : c->tls_ctx;
}

/* Is s an IP address literal (v4, or v6 without brackets)? */
static int is_ip_literal(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

const char *pt_cluster_upstream_name(const pt_cluster_t *c, pt_arena_t *a,
                                     const char *host_value, const char *override_value)
{
    if (!c->auto_sni && !c->auto_san_validation)
        return NULL;
    const char *v = override_value != NULL && override_value[0] ? override_value : host_value;
    if (v == NULL || v[0] == '\0')
        return NULL;
    size_t n = strlen(v);
    if (v[0] == '[') {
        /* "[v6]" or "[v6]:port": the address inside the brackets. */
        const char *close = strchr(v, ']');
        if (close == NULL)
            return pt_arena_strndup(a, v, n);
        return close > v + 1 ? pt_arena_strndup(a, v + 1, (size_t)(close - v - 1)) : NULL;
    }
    const char *colon = strrchr(v, ':');
    /* One colon: host:port. More: a bare IPv6 address, kept whole. */
    if (colon != NULL && memchr(v, ':', (size_t)(colon - v)) == NULL)
        n = (size_t)(colon - v);
    return n > 0 ? pt_arena_strndup(a, v, n) : NULL;
}

pt_conn_t *pt_cluster_connect(const pt_cluster_t *c, pt_worker_t *w, const pt_host_t *host,
                              const pt_conn_handler_t *h, void *data, int *err)
{
    return pt_cluster_connect_named(c, w, host, NULL, h, data, err);
}

pt_conn_t *pt_cluster_connect_named(const pt_cluster_t *c, pt_worker_t *w,
                                    const pt_host_t *host, const char *name,
                                    const pt_conn_handler_t *h, void *data, int *err)
{
    const pt_transport_ops_t *transport = &pt_transport_raw;
    void *tls = NULL;
    pt_tls_context_t *ctx = pt_cluster_host_tls(c, host);
    if (ctx != NULL) {
        const char *sni = ctx->settings->sni;
        const char *san = NULL;
        if (name != NULL) {
            /* Envoy sends no IP address as SNI: the context's own sni stays then. */
            if (c->auto_sni && !is_ip_literal(name))
                sni = name;
            if (c->auto_san_validation)
                san = name;
        }
        tls = pt_tls_conn_new(ctx, 0, sni, san);
        if (tls == NULL) {
            /* An SDS secret has not come (no handshake without it), or out of memory. */
            *err = atomic_load_explicit(&ctx->secrets_missing, memory_order_relaxed) > 0
                       ? -ENOKEY
                       : -ENOMEM;
            return NULL;
        }
        transport = pt_tls_transport();
    }
    /* From here the connection owns the TLS state, even if it cannot be made. */
    pt_conn_t *conn = pt_conn_connect(w, &host->address, c->connect_timeout_ms, transport, tls,
                                      h, data, err);
    if (conn == NULL)
        return NULL;
    conn->high_watermark = c->buffer_limit;
    pt_socket_set_keepalive(conn->fd, &c->tcp_keepalive);
    return conn;
}

/* base's configuration parsed again into a new version (no endpoints, not prepared). It
 * validated when base was made, so it cannot fail but for memory, which is reported in r. */
static pt_cluster_t *reparse(const pt_cluster_t *base, pt_cfg_t *r)
{
    json_t *source = base->source != NULL ? json_incref(base->source)
                                          : source_text_tree(base);
    pt_cluster_t *c = NULL;
    int ok = 0;
    if (source != NULL) {
        pt_cfg_t again;
        pt_cfg_init(&again, source);
        pt_cfg_set_message(&again, "envoy.config.cluster.v3.Cluster");
        (void)pt_cfg_get(&again, "@type"); /* a CDS resource carries its type */
        c = pt_cluster_parse(&again);
        pt_cfg_finish(&again);
        ok = c != NULL && pt_cfg_ok(&again);
        pt_cfg_dispose(&again);
        json_decref(source);
    }
    if (ok && base->source_text != NULL) {
        /* The same configuration as base: its text, not the tree read again. */
        if ((c->source_text = strdup(base->source_text)) == NULL) {
            ok = 0;
        } else {
            c->source_typed = base->source_typed;
            json_decref(c->source);
            c->source = NULL;
        }
    }
    if (!ok) {
        pt_cfg_error(r, NULL, "cluster %s could not be made again (out of memory)", base->name);
        pt_cluster_unref(c);
        return NULL;
    }
    return c;
}

/* Sets c's endpoints (copied into its arena; the last npending are pending removal), then
 * builds its TLS context and prepares it. c is freed on error (recorded in r). */
static pt_cluster_t *finish_version(pt_cluster_t *c, const pt_cluster_t *base,
                                    const pt_endpoint_t *eps, unsigned n, unsigned npending,
                                    pt_cfg_t *r)
{
    if (n > 0) {
        pt_endpoint_t *copy = pt_arena_alloc(&c->ep_arena, n * sizeof(*copy));
        if (copy == NULL)
            goto oom;
        memcpy(copy, eps, n * sizeof(*copy));
        c->endpoints = copy;
    }
    c->nendpoints = n;
    c->npending = npending;
    c->has_assignment = 1;
    /* The same configuration as base: the same TLS context, not one made again. */
    if (pt_cluster_has_tls(c) && !pt_cluster_share_tls(c, base) &&
        pt_cluster_build_tls(c, r, "") != 0) {
        pt_cluster_unref(c);
        return NULL;
    }
    if (pt_cluster_prepare(c) == 0)
        return c;
oom:
    pt_cfg_error(r, NULL, "out of memory");
    pt_cluster_unref(c);
    return NULL;
}

static int lists_host(const pt_endpoint_t *eps, unsigned n, const pt_host_t *h)
{
    for (unsigned i = 0; i < n; i++)
        if (pt_addr_equal(&eps[i].address, &h->address) &&
            same_hostname(eps[i].hostname, h->hostname))
            return 1;
    return 0;
}

int pt_cluster_take_assignment(pt_cluster_t *c, pt_cfg_t *cla)
{
    pt_endpoints_t eps;
    if (pt_endpoints_parse(cla, &c->ep_arena, c->name, &eps) != 0)
        return -1;
    c->endpoints = eps.endpoints;
    c->nendpoints = eps.nendpoints;
    c->cla_policy = eps.policy;
    c->npending = 0;
    c->has_assignment = 1;
    return 0;
}

void pt_cluster_drop_assignment(pt_cluster_t *c)
{
    c->endpoints = NULL; /* in the arena: goes with it */
    c->nendpoints = 0;
    c->has_assignment = 0;
}

static pt_cluster_t *with_endpoints(pt_cluster_t *c, const pt_cluster_t *base,
                                    pt_endpoints_t eps, pt_cfg_t *cla);

pt_cluster_t *pt_cluster_with_assignment(const pt_cluster_t *base, pt_cfg_t *cla)
{
    pt_cluster_t *c = reparse(base, cla);
    if (c == NULL)
        return NULL;
    pt_endpoints_t eps;
    if (pt_endpoints_parse(cla, &c->ep_arena, c->name, &eps) != 0) {
        pt_cluster_unref(c);
        return NULL;
    }
    c->cla_policy = eps.policy;
    return with_endpoints(c, base, eps, cla);
}

pt_cluster_t *pt_cluster_with_endpoints(const pt_cluster_t *base, const pt_endpoint_t *eps,
                                        unsigned n, pt_cfg_t *r)
{
    pt_cluster_t *c = reparse(base, r);
    if (c == NULL)
        return NULL;
    pt_endpoints_t list = {.endpoints = (pt_endpoint_t *)eps, .nendpoints = n};
    return with_endpoints(c, base, list, r);
}

/* c (a new version of base, not prepared) with the endpoints eps: base's hosts that eps drops
 * stay pending removal while health checks find them healthy. */
static pt_cluster_t *with_endpoints(pt_cluster_t *c, const pt_cluster_t *base,
                                    pt_endpoints_t eps, pt_cfg_t *cla)
{
    /* Envoy's default (ignore_health_on_host_removal false): a host the assignment drops
     * stays while active health checks find it healthy, pending removal; one already failed
     * goes now. */
    unsigned keep = 0;
    if (c->nhealth_checks > 0 && !c->ignore_health_on_host_removal)
        for (unsigned i = 0; i < base->nhosts; i++)
            keep += !(atomic_load(&base->hosts[i]->health) & PT_HOST_FAILED_ACTIVE_HC) &&
                    !lists_host(eps.endpoints, eps.nendpoints, base->hosts[i]);
    if (keep == 0)
        return finish_version(c, base, eps.endpoints, eps.nendpoints, 0, cla);
    pt_endpoint_t *all = malloc((eps.nendpoints + keep) * sizeof(*all));
    if (all == NULL) {
        pt_cfg_error(cla, NULL, "out of memory");
        pt_cluster_unref(c);
        return NULL;
    }
    memcpy(all, eps.endpoints, eps.nendpoints * sizeof(*all));
    unsigned n = eps.nendpoints;
    for (unsigned i = 0; i < base->nhosts; i++) {
        const pt_host_t *h = base->hosts[i];
        if ((atomic_load(&h->health) & PT_HOST_FAILED_ACTIVE_HC) ||
            lists_host(eps.endpoints, eps.nendpoints, h))
            continue;
        all[n++] = endpoint_of(base, i);
    }
    c = finish_version(c, base, all, n, keep, cla);
    free(all);
    return c;
}

int pt_cluster_pending_failed(const pt_cluster_t *c)
{
    for (unsigned i = c->nhosts - c->npending; i < c->nhosts; i++)
        if (atomic_load(&c->hosts[i]->health) & PT_HOST_FAILED_ACTIVE_HC)
            return 1;
    return 0;
}

pt_cluster_t *pt_cluster_without_failed_pending(const pt_cluster_t *base)
{
    json_t *none = json_object(); /* r only collects errors */
    pt_cfg_t r;
    pt_cfg_init(&r, none);
    pt_cluster_t *c = reparse(base, &r);
    pt_endpoint_t *eps = c != NULL ? malloc((base->nhosts ? base->nhosts : 1) * sizeof(*eps))
                                   : NULL;
    unsigned n = 0, npending = 0;
    if (eps != NULL) {
        for (unsigned i = 0; i < base->nhosts; i++) {
            const pt_host_t *h = base->hosts[i];
            int pending = i >= base->nhosts - base->npending;
            if (pending && (atomic_load(&h->health) & PT_HOST_FAILED_ACTIVE_HC))
                continue;
            npending += pending;
            eps[n++] = endpoint_of(base, i);
        }
        c->cla_policy = base->cla_policy;
        c = finish_version(c, base, eps, n, npending, &r);
    } else {
        pt_cluster_unref(c);
        c = NULL;
    }
    free(eps);
    pt_cfg_dispose(&r);
    json_decref(none);
    return c;
}
