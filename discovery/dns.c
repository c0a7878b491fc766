#include "discovery/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <ev.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/cluster.h"
#include "proxy/config_address.h"
#include "proxy/hash.h"
#include "proxy/log.h"
#include "proxy/random.h"

/* ---- lookup families and refresh rules ------------------------------------------------- */

void pt_dns_family_plan(pt_dns_family_t f, int *first, int *second)
{
    switch (f) {
    case PT_DNS_V4_ONLY:
        *first = AF_INET, *second = 0;
        break;
    case PT_DNS_V6_ONLY:
        *first = AF_INET6, *second = 0;
        break;
    case PT_DNS_V4_PREFERRED:
        *first = AF_INET, *second = AF_INET6;
        break;
    case PT_DNS_ALL:
        *first = AF_UNSPEC, *second = 0;
        break;
    case PT_DNS_AUTO:
    default:
        *first = AF_INET6, *second = AF_INET;
        break;
    }
}

void pt_dns_backoff_reset(pt_dns_backoff_t *b, const pt_dns_config_t *cfg)
{
    b->next_interval_ms = cfg->has_failure_rate ? cfg->failure_base_ms : cfg->refresh_ms;
}

uint64_t pt_dns_backoff_next(pt_dns_backoff_t *b, const pt_dns_config_t *cfg, uint64_t random)
{
    /* Without dns_failure_refresh_rate a failure is retried at dns_refresh_rate, unjittered
     * (Envoy's fixed backoff). */
    if (!cfg->has_failure_rate)
        return cfg->refresh_ms;
    if (b->next_interval_ms == 0)
        pt_dns_backoff_reset(b, cfg);
    uint64_t interval = b->next_interval_ms;
    /* The interval doubles until doubling would pass max_interval, then stays there. */
    b->next_interval_ms = interval <= cfg->failure_max_ms / 2 ? interval * 2 : cfg->failure_max_ms;
    return random % interval;
}

uint64_t pt_dns_refresh_ms(const pt_dns_config_t *cfg, unsigned naddresses, uint32_t min_ttl_s,
                           uint64_t random)
{
    /* A TTL of 0 would ask again at once, forever: dns_refresh_rate then, as Envoy does. */
    uint64_t ms = cfg->refresh_ms;
    if (cfg->respect_ttl && naddresses > 0 && min_ttl_s > 0)
        ms = (uint64_t)min_ttl_s * 1000;
    /* Spreads the refreshes of many proxies asking for one name. */
    if (cfg->jitter_ms > 0)
        ms += random % cfg->jitter_ms;
    return ms;
}

/* ---- configuration ------------------------------------------------------------------- */

#define CARES_NAME "envoy.network.dns_resolver.cares"
#define CARES_TYPE                                                                                 \
    "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig"

/* A list of Address (resolvers, dns_resolvers) into out (reader in the object holding it). */
static void parse_resolver_list(pt_cfg_t *r, pt_arena_t *arena, const char *field,
                                pt_dns_resolver_config_t *out)
{
    int present;
    size_t n = pt_cfg_array(r, field, &present);
    out->resolvers = NULL;
    out->nresolvers = 0;
    if (n > 0 && (out->resolvers = pt_arena_alloc(arena, n * sizeof(pt_addr_t))) == NULL) {
        pt_cfg_error(r, NULL, "out of memory");
        n = 0;
    }
    for (size_t i = 0; i < n; i++) {
        pt_addr_t a;
        if (pt_config_read_address_at(r, i, &a) > 0)
            out->resolvers[out->nresolvers++] = a;
    }
    if (present)
        pt_cfg_leave_array(r);
}

/* DnsResolverOptions (reader inside it). */
static void parse_resolver_options(pt_cfg_t *r, pt_dns_resolver_config_t *out)
{
    pt_cfg_bool(r, "use_tcp_for_dns_lookups", &out->use_tcp, 0);
    pt_cfg_bool(r, "no_default_search_domain", &out->no_default_search_domain, 0);
}

void pt_dns_resolver_config_parse_typed(pt_cfg_t *r, pt_arena_t *arena,
                                        pt_dns_resolver_config_t *out)
{
    const char *name;
    pt_cfg_string(r, "name", &name, NULL);
    int rc;
    const char *type = pt_cfg_enter_any(r, "typed_config", &rc);
    if (type == NULL) {
        if (rc == 0)
            pt_cfg_error(r, "typed_config", "is required");
        return;
    }
    if (strcmp(type, CARES_TYPE) != 0) {
        pt_cfg_error(r, "@type", "\"%s\" is not supported (only %s, %s)", type, CARES_NAME,
                     CARES_TYPE);
        pt_cfg_skip_rest(r);
        pt_cfg_leave(r);
        return;
    }
    static const char *const unsupported[] = {"udp_max_queries", "edns0_max_payload_size",
                                              "max_udp_channel_duration",
                                              "reinit_channel_on_timeout", NULL};
    pt_cfg_unsupported(r, unsupported);
    int filter;
    /* Reading the host's interfaces to drop a family it cannot route is not implemented. */
    if (pt_cfg_bool(r, "filter_unroutable_families", &filter, 0) > 0 && filter)
        pt_cfg_error(r, "filter_unroutable_families", "true is not supported");
    parse_resolver_list(r, arena, "resolvers", out);
    pt_cfg_bool(r, "use_resolvers_as_fallback", &out->use_resolvers_as_fallback, 0);
    pt_cfg_bool(r, "rotate_nameservers", &out->rotate_nameservers, 0);
    if (pt_cfg_enter(r, "dns_resolver_options") > 0) {
        parse_resolver_options(r, out);
        pt_cfg_leave(r);
    }
    uint64_t v;
    /* UInt64Value / UInt32Value: proto3 JSON gives the number itself. */
    if (pt_cfg_uint(r, "query_timeout_seconds", &v, 5, 1, 3600) > 0)
        out->query_timeout_ms = v * 1000;
    if (pt_cfg_uint(r, "query_tries", &v, 4, 1, 100) > 0)
        out->query_tries = (unsigned)v;
    pt_cfg_leave(r);
}

/* DnsCluster.RefreshRate / Cluster.RefreshRate (reader in the object holding it). */
static void parse_failure_rate(pt_cfg_t *r, pt_dns_config_t *out)
{
    if (pt_cfg_enter(r, "dns_failure_refresh_rate") <= 0)
        return;
    out->has_failure_rate = 1;
    if (pt_cfg_duration_ms(r, "base_interval", &out->failure_base_ms, 0) == 0)
        pt_cfg_error(r, "base_interval", "is required");
    else if (out->failure_base_ms == 0)
        pt_cfg_error(r, "base_interval", "must be at least 1ms");
    int has_max = pt_cfg_duration_ms(r, "max_interval", &out->failure_max_ms, 0);
    if (has_max <= 0)
        out->failure_max_ms = out->failure_base_ms * 10;
    else if (out->failure_max_ms < out->failure_base_ms)
        pt_cfg_error(r, "max_interval", "must be greater than or equal to the base_interval");
    pt_cfg_leave(r);
}

void pt_dns_bootstrap_parse(pt_cfg_t *r, pt_arena_t *arena, pt_dns_resolver_config_t *out)
{
    memset(out, 0, sizeof(*out));
    pt_dns_resolver_config_t older;
    memset(&older, 0, sizeof(older));
    int typed = pt_cfg_enter(r, "typed_dns_resolver_config") > 0;
    if (typed) {
        pt_dns_resolver_config_parse_typed(r, arena, out);
        pt_cfg_leave(r);
    }
    pt_dns_resolver_config_t *res = typed ? &older : out;
    if (pt_cfg_enter(r, "dns_resolution_config") > 0) {
        parse_resolver_list(r, arena, "resolvers", res);
        if (pt_cfg_enter(r, "dns_resolver_options") > 0) {
            parse_resolver_options(r, res);
            pt_cfg_leave(r);
        }
        pt_cfg_leave(r);
        res = &older;
    }
    pt_cfg_bool(r, "use_tcp_for_dns_lookups", &res->use_tcp, 0);
}

static pt_dns_resolver_config_t default_resolver;

int pt_dns_set_default_resolver(const pt_dns_resolver_config_t *cfg)
{
    pt_addr_t *copy = NULL;
    if (cfg->nresolvers > 0) {
        if ((copy = malloc(cfg->nresolvers * sizeof(*copy))) == NULL)
            return -1;
        memcpy(copy, cfg->resolvers, cfg->nresolvers * sizeof(*copy));
    }
    free(default_resolver.resolvers);
    default_resolver = *cfg;
    default_resolver.resolvers = copy;
    return 0;
}

void pt_dns_clear_default_resolver(void)
{
    free(default_resolver.resolvers);
    memset(&default_resolver, 0, sizeof(default_resolver));
}

void pt_dns_config_parse(pt_cfg_t *r, pt_arena_t *arena, pt_dns_config_t *out,
                         int from_cluster_type)
{
    static const char *const resolver_fields[] = {"typed_dns_resolver_config",
                                                  "dns_resolution_config", "dns_resolvers",
                                                  "use_tcp_for_dns_lookups", NULL};
    out->has_resolver = pt_cfg_has_any(r, resolver_fields);
    out->refresh_ms = 5000;
    out->resolver.query_timeout_ms = 0; /* c-ares' own */
    out->resolver.query_tries = 0;
    if (pt_cfg_duration_ms(r, "dns_refresh_rate", &out->refresh_ms, 5000) > 0 &&
        out->refresh_ms == 0)
        pt_cfg_error(r, "dns_refresh_rate", "must be at least 1ms");
    parse_failure_rate(r, out);
    pt_cfg_bool(r, "respect_dns_ttl", &out->respect_ttl, 0);
    pt_cfg_duration_ms(r, "dns_jitter", &out->jitter_ms, 0);
    if (pt_cfg_enter(r, "typed_dns_resolver_config") > 0) {
        pt_dns_resolver_config_parse_typed(r, arena, &out->resolver);
        pt_cfg_leave(r);
        if (from_cluster_type)
            return;
        /* The older spellings lose to it (Envoy's order); still read, so that an invalid
         * one is reported. */
        pt_dns_resolver_config_t older = {0};
        if (pt_cfg_enter(r, "dns_resolution_config") > 0) {
            parse_resolver_list(r, arena, "resolvers", &older);
            if (pt_cfg_enter(r, "dns_resolver_options") > 0) {
                parse_resolver_options(r, &older);
                pt_cfg_leave(r);
            }
            pt_cfg_leave(r);
        }
        parse_resolver_list(r, arena, "dns_resolvers", &older);
        pt_cfg_bool(r, "use_tcp_for_dns_lookups", &older.use_tcp, 0);
        return;
    }
    if (from_cluster_type)
        return;
    if (pt_cfg_enter(r, "dns_resolution_config") > 0) {
        parse_resolver_list(r, arena, "resolvers", &out->resolver);
        if (pt_cfg_enter(r, "dns_resolver_options") > 0) {
            parse_resolver_options(r, &out->resolver);
            pt_cfg_leave(r);
        }
        pt_cfg_leave(r);
        pt_dns_resolver_config_t older = {0};
        parse_resolver_list(r, arena, "dns_resolvers", &older);
        pt_cfg_bool(r, "use_tcp_for_dns_lookups", &older.use_tcp, 0);
        return;
    }
    parse_resolver_list(r, arena, "dns_resolvers", &out->resolver);
    pt_cfg_bool(r, "use_tcp_for_dns_lookups", &out->resolver.use_tcp, 0);
}

/* ---- the resolver ---------------------------------------------------------------------- */

/* One socket of the channel, watched for what c-ares asks. */
typedef struct dns_io {
    ev_io io;
    pt_dns_resolver_t *res;
    struct dns_io *next;
} dns_io_t;

/* Query flags (one bit each). */
enum {
    PT_DNS_QUERY_CANCELLED = 1u << 0, /* its owner let go: no callback; freed when c-ares ends it */
    PT_DNS_QUERY_STARTING = 1u << 1,  /* inside ares_getaddrinfo: an answer now is deferred */
    PT_DNS_QUERY_DEFERRED = 1u << 2,  /* answered while starting: delivered by `later` */
    PT_DNS_QUERY_QUEUED = 1u << 3,    /* waiting for a place among the lookups in flight */
    PT_DNS_QUERY_IN_FLIGHT = 1u << 4, /* holds one of those places */
};

/* Lookups one resolver has in flight at once; more wait their turn. A refresh of a cluster of
 * a thousand names would otherwise send a thousand queries in one burst, and their answers,
 * arriving together, overflow the socket's receive buffer (~200 KB by default, each small
 * datagram counting about 1 KB): dropped answers are lookups that time out. */
#define PT_DNS_MAX_IN_FLIGHT 64

struct pt_dns_query {
    pt_dns_resolver_t *res;
    struct pt_dns_query *prev, *next; /* the resolver's live queries */
    char *name;
    int second; /* the family to try when the first gave no address, 0: none */
    unsigned flags;
    pt_dns_resolve_cb cb;
    void *data;
    struct pt_dns_query *wnext; /* the resolver's queue, while PT_DNS_QUERY_QUEUED */
    int first;                  /* the family to ask first */
    /* A deferred answer, delivered from the loop (the caller has its handle by then). */
    ev_timer later;
    pt_dns_status_t status;
    pt_dns_answer_t *answers;
    unsigned nanswers;
    const char *why;
};

/* Resolver flags. */
enum {
    PT_DNS_RES_PROCESSING = 1u << 0, /* inside ares_process_fd: freeing waits */
    PT_DNS_RES_DEAD = 1u << 1,       /* freed while processing: goes once processing returns */
};

struct pt_dns_resolver {
    struct ev_loop *loop;
    ares_channel channel;
    ev_timer timeout;
    dns_io_t *ios;
    pt_dns_query_t *queries;
    unsigned flags;
    unsigned in_flight;                    /* lookups holding a place */
    pt_dns_query_t *queued, **queued_tail; /* waiting for one, in order (linked by wnext) */
    ev_timer dequeue;                      /* starts waiting lookups from the loop */
};

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_status = ARES_SUCCESS;

static void ares_lib_init(void)
{
    ares_init_status = ares_library_init(ARES_LIB_INIT_ALL);
}

static void resolver_destroy(pt_dns_resolver_t *res);
static void on_dequeue(struct ev_loop *loop, ev_timer *t, int revents);

/* Arms the timeout timer for c-ares' next deadline (none: stopped). */
static void rearm_timeout(pt_dns_resolver_t *res)
{
    ev_timer_stop(res->loop, &res->timeout);
    if (res->ios == NULL && res->queries == NULL)
        return;
    struct timeval tv, *tvp = ares_timeout(res->channel, NULL, &tv);
    if (tvp == NULL)
        return;
    double after = (double)tvp->tv_sec + (double)tvp->tv_usec / 1e6;
    ev_timer_set(&res->timeout, after > 0 ? after : 0.001, 0.);
    ev_timer_start(res->loop, &res->timeout);
}

static void process(pt_dns_resolver_t *res, ares_socket_t rfd, ares_socket_t wfd)
{
    res->flags |= PT_DNS_RES_PROCESSING;
    ares_process_fd(res->channel, rfd, wfd);
    res->flags &= ~(unsigned)PT_DNS_RES_PROCESSING;
    if (res->flags & PT_DNS_RES_DEAD) {
        resolver_destroy(res);
        return;
    }
    rearm_timeout(res);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    dns_io_t *io = (dns_io_t *)w;
    process(io->res, (revents & EV_READ) ? w->fd : ARES_SOCKET_BAD,
            (revents & EV_WRITE) ? w->fd : ARES_SOCKET_BAD);
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    pt_dns_resolver_t *res = t->data;
    process(res, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

/* c-ares opens, changes and closes its sockets through this. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    pt_dns_resolver_t *res = data;
    dns_io_t **pp = &res->ios;
    while (*pp != NULL && (*pp)->io.fd != fd)
        pp = &(*pp)->next;
    dns_io_t *io = *pp;
    if (!readable && !writable) {
        if (io != NULL) {
            ev_io_stop(res->loop, &io->io);
            *pp = io->next;
            free(io);
        }
        return;
    }
    if (io == NULL) {
        if ((io = calloc(1, sizeof(*io))) == NULL) {
            /* The socket goes unwatched: its lookups end by their timeout. */
            pt_error("dns: out of memory watching a resolver socket");
            return;
        }
        io->res = res;
        io->next = res->ios;
        res->ios = io;
        ev_io_init(&io->io, on_io, fd, 0);
    }
    ev_io_stop(res->loop, &io->io);
    ev_io_set(&io->io, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    ev_io_start(res->loop, &io->io);
}

/* Whether the channel's only server is c-ares' own default (resolv.conf named none). */
static int only_default_server(ares_channel channel)
{
    struct ares_addr_port_node *servers = NULL;
    if (ares_get_servers_ports(channel, &servers) != ARES_SUCCESS)
        return 0;
    int only = servers == NULL || (servers->next == NULL && servers->family == AF_INET &&
                                   servers->addr.addr4.s_addr == htonl(INADDR_LOOPBACK) &&
                                   (servers->udp_port == 0 || servers->udp_port == 53));
    ares_free_data(servers);
    return only;
}

pt_dns_resolver_t *pt_dns_resolver_new(struct ev_loop *loop, const pt_dns_resolver_config_t *cfg,
                                       char *err, size_t errlen)
{
    pthread_once(&ares_once, ares_lib_init);
    if (ares_init_status != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares: %s", ares_strerror(ares_init_status));
        return NULL;
    }
    pt_dns_resolver_t *res = calloc(1, sizeof(*res));
    struct ares_addr_port_node *nodes = NULL;
    if (res == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    res->loop = loop;
    ev_timer_init(&res->timeout, on_timeout, 0., 0.);
    res->timeout.data = res;
    ev_timer_init(&res->dequeue, on_dequeue, 0., 0.);
    res->dequeue.data = res;
    res->queued_tail = &res->queued;
    struct ares_options o;
    memset(&o, 0, sizeof(o));
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_FLAGS;
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = res;
    o.flags = (cfg->use_tcp ? ARES_FLAG_USEVC : 0) |
              (cfg->no_default_search_domain ? ARES_FLAG_NOSEARCH : 0);
    if (cfg->query_timeout_ms > 0) {
        o.timeout = (int)cfg->query_timeout_ms;
        mask |= ARES_OPT_TIMEOUTMS;
    }
    if (cfg->query_tries > 0) {
        o.tries = (int)cfg->query_tries;
        mask |= ARES_OPT_TRIES;
    }
    mask |= cfg->rotate_nameservers ? ARES_OPT_ROTATE : ARES_OPT_NOROTATE;
    int rc = ares_init_options(&res->channel, &o, mask);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
        free(res);
        return NULL;
    }
    /* The configured resolvers replace resolv.conf's, or (use_resolvers_as_fallback) stand
     * in only when it names none, as Envoy's c-ares resolver does. */
    if (cfg->nresolvers > 0 &&
        (!cfg->use_resolvers_as_fallback || only_default_server(res->channel))) {
        if ((nodes = calloc(cfg->nresolvers, sizeof(*nodes))) == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        for (unsigned i = 0; i < cfg->nresolvers; i++) {
            const pt_addr_t *a = &cfg->resolvers[i];
            struct ares_addr_port_node *n = &nodes[i];
            n->next = i + 1 < cfg->nresolvers ? &nodes[i + 1] : NULL;
            n->family = a->sa.sa_family;
            if (a->sa.sa_family == AF_INET6)
                memcpy(&n->addr.addr6, &a->sin6.sin6_addr, sizeof(a->sin6.sin6_addr));
            else
                n->addr.addr4 = a->sin.sin_addr;
            n->udp_port = n->tcp_port = (int)pt_addr_port(a);
        }
        if ((rc = ares_set_servers_ports(res->channel, nodes)) != ARES_SUCCESS) {
            snprintf(err, errlen, "c-ares: setting the resolvers: %s", ares_strerror(rc));
            goto fail;
        }
        free(nodes);
    }
    return res;
fail:
    free(nodes);
    ares_destroy(res->channel);
    free(res);
    return NULL;
}

static void query_unlink(pt_dns_query_t *q)
{
    pt_dns_resolver_t *res = q->res;
    if (q->prev != NULL)
        q->prev->next = q->next;
    else
        res->queries = q->next;
    if (q->next != NULL)
        q->next->prev = q->prev;
    q->prev = q->next = NULL;
}

/* Takes q off its resolver's queue. */
static void query_dequeue(pt_dns_query_t *q)
{
    pt_dns_resolver_t *res = q->res;
    pt_dns_query_t **pp = &res->queued;
    while (*pp != NULL && *pp != q)
        pp = &(*pp)->wnext;
    if (*pp == q) {
        *pp = q->wnext;
        if (res->queued_tail == &q->wnext)
            res->queued_tail = pp;
    }
    q->wnext = NULL;
    q->flags &= ~(unsigned)PT_DNS_QUERY_QUEUED;
}

/* q's lookup is over: its place goes to the next waiting one (started from the loop, not
 * from inside c-ares' callback). */
static void release_place(pt_dns_query_t *q)
{
    pt_dns_resolver_t *res = q->res;
    if (!(q->flags & PT_DNS_QUERY_IN_FLIGHT))
        return;
    q->flags &= ~(unsigned)PT_DNS_QUERY_IN_FLIGHT;
    res->in_flight--;
    if (res->queued != NULL && !(res->flags & PT_DNS_RES_DEAD))
        ev_timer_start(res->loop, &res->dequeue);
}

static void query_free(pt_dns_query_t *q)
{
    ev_timer_stop(q->res->loop, &q->later);
    if (q->flags & PT_DNS_QUERY_QUEUED)
        query_dequeue(q);
    release_place(q);
    query_unlink(q);
    free(q->answers);
    free(q->name);
    free(q);
}

static void resolver_destroy(pt_dns_resolver_t *res)
{
    /* c-ares ends every lookup under way (ARES_EDESTRUCTION: freed, no callback). */
    ares_destroy(res->channel);
    res->flags |= PT_DNS_RES_DEAD; /* no lookup starts from here on */
    while (res->queries != NULL)
        query_free(res->queries); /* deferred answers, or lookups waiting, nobody will read */
    ev_timer_stop(res->loop, &res->dequeue);
    while (res->ios != NULL) {
        dns_io_t *io = res->ios;
        res->ios = io->next;
        ev_io_stop(res->loop, &io->io);
        free(io);
    }
    ev_timer_stop(res->loop, &res->timeout);
    free(res);
}

void pt_dns_resolver_free(pt_dns_resolver_t *res)
{
    if (res == NULL)
        return;
    if (res->flags & PT_DNS_RES_PROCESSING) {
        res->flags |= PT_DNS_RES_DEAD;
        for (pt_dns_query_t *q = res->queries; q != NULL; q = q->next)
            q->flags |= PT_DNS_QUERY_CANCELLED;
        return;
    }
    resolver_destroy(res);
}

static void deliver(pt_dns_query_t *q)
{
    pt_dns_resolve_cb cb = q->cb;
    void *data = q->data;
    pt_dns_status_t status = q->status;
    pt_dns_answer_t *answers = q->answers;
    unsigned n = q->nanswers;
    const char *why = q->why;
    q->answers = NULL;
    query_free(q);
    cb(data, status, answers, n, why);
    free(answers);
}

static void on_later(struct ev_loop *loop, ev_timer *t, int revents)
{
    deliver(t->data);
}

static void start_lookup(pt_dns_query_t *q, int family);

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    pt_dns_query_t *q = arg;
    if (status == ARES_EDESTRUCTION || (q->flags & PT_DNS_QUERY_CANCELLED)) {
        if (ai != NULL)
            ares_freeaddrinfo(ai);
        query_free(q);
        return;
    }
    unsigned n = 0;
    for (struct ares_addrinfo_node *node = ai != NULL ? ai->nodes : NULL; node != NULL;
         node = node->ai_next)
        n++;
    pt_dns_answer_t *answers = n > 0 ? calloc(n, sizeof(*answers)) : NULL;
    unsigned k = 0;
    for (struct ares_addrinfo_node *node = ai != NULL ? ai->nodes : NULL;
         answers != NULL && node != NULL; node = node->ai_next) {
        pt_addr_t a;
        memset(&a, 0, sizeof(a));
        if (node->ai_family == AF_INET && node->ai_addrlen >= sizeof(struct sockaddr_in))
            memcpy(&a.sin, node->ai_addr, sizeof(a.sin));
        else if (node->ai_family == AF_INET6 && node->ai_addrlen >= sizeof(struct sockaddr_in6))
            memcpy(&a.sin6, node->ai_addr, sizeof(a.sin6));
        else
            continue;
        a.sin.sin_port = 0;
        if (a.sa.sa_family == AF_INET6) {
            a.sin6.sin6_port = 0;
            a.sin6.sin6_flowinfo = 0;
        }
        int dup = 0;
        for (unsigned i = 0; i < k && !dup; i++)
            dup = pt_addr_equal(&answers[i].address, &a);
        if (dup)
            continue;
        answers[k].address = a;
        answers[k].ttl_s = node->ai_ttl > 0 ? (uint32_t)node->ai_ttl : 0;
        k++;
    }
    if (ai != NULL)
        ares_freeaddrinfo(ai);
    if (n > 0 && answers == NULL) {
        status = ARES_ENOMEM;
        k = 0;
    }
    /* No address in the preferred family: the other one (AUTO, V4_PREFERRED), in the same
     * place. */
    if (k == 0 && q->second != 0 && status != ARES_ENOMEM) {
        int second = q->second;
        q->second = 0;
        start_lookup(q, second);
        return;
    }
    release_place(q);
    q->status = (status == ARES_SUCCESS || status == ARES_ENODATA || status == ARES_ENOTFOUND)
                    ? PT_DNS_COMPLETED
                    : PT_DNS_FAILED;
    q->why = status == ARES_SUCCESS ? "ok" : ares_strerror(status);
    q->answers = answers;
    q->nanswers = k;
    if (q->flags & PT_DNS_QUERY_STARTING) {
        q->flags |= PT_DNS_QUERY_DEFERRED;
        ev_timer_set(&q->later, 0., 0.);
        ev_timer_start(q->res->loop, &q->later);
        return;
    }
    deliver(q);
}

static void start_lookup(pt_dns_query_t *q, int family)
{
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = family;
    hints.ai_flags = ARES_AI_NOSORT;
    ares_getaddrinfo(q->res->channel, q->name, NULL, &hints, on_addrinfo, q);
}

/* Starts q's lookup in a place of its own. */
static void begin(pt_dns_query_t *q)
{
    pt_dns_resolver_t *res = q->res;
    q->flags |= PT_DNS_QUERY_IN_FLIGHT;
    res->in_flight++;
    q->flags |= PT_DNS_QUERY_STARTING;
    start_lookup(q, q->first);
    q->flags &= ~(unsigned)PT_DNS_QUERY_STARTING;
    rearm_timeout(res);
}

static void on_dequeue(struct ev_loop *loop, ev_timer *t, int revents)
{
    pt_dns_resolver_t *res = t->data;
    while (res->queued != NULL && res->in_flight < PT_DNS_MAX_IN_FLIGHT) {
        pt_dns_query_t *q = res->queued;
        query_dequeue(q);
        begin(q);
    }
}

pt_dns_query_t *pt_dns_resolve(pt_dns_resolver_t *res, const char *name, pt_dns_family_t f,
                               pt_dns_resolve_cb cb, void *data)
{
    pt_dns_query_t *q = calloc(1, sizeof(*q));
    if (q == NULL || (q->name = strdup(name)) == NULL) {
        free(q);
        return NULL;
    }
    q->res = res;
    q->cb = cb;
    q->data = data;
    ev_timer_init(&q->later, on_later, 0., 0.);
    q->later.data = q;
    q->next = res->queries;
    if (res->queries != NULL)
        res->queries->prev = q;
    res->queries = q;
    int first;
    pt_dns_family_plan(f, &first, &q->second);
    pt_addr_t literal;
    if (pt_addr_parse(&literal, name, 0) == 0) {
        /* An IP literal is its own answer, without asking a server (in a family the lookups
         * do not take, none). Delivered from the loop like any other. */
        int af = literal.sa.sa_family;
        int fits = first == AF_UNSPEC || first == af || q->second == af;
        q->status = PT_DNS_COMPLETED;
        q->why = "ok";
        if (fits && (q->answers = calloc(1, sizeof(*q->answers))) != NULL) {
            q->answers[0].address = literal;
            q->nanswers = 1;
        }
        q->flags |= PT_DNS_QUERY_DEFERRED;
        ev_timer_start(res->loop, &q->later);
        return q;
    }
    q->first = first;
    if (res->in_flight >= PT_DNS_MAX_IN_FLIGHT) {
        q->flags |= PT_DNS_QUERY_QUEUED;
        *res->queued_tail = q;
        res->queued_tail = &q->wnext;
        return q;
    }
    begin(q);
    return q;
}

void pt_dns_query_cancel(pt_dns_query_t *q)
{
    if (q == NULL)
        return;
    if (q->flags & (PT_DNS_QUERY_DEFERRED | PT_DNS_QUERY_QUEUED)) {
        query_free(q); /* c-ares is done with it, or never had it */
        return;
    }
    q->flags |= PT_DNS_QUERY_CANCELLED;
}

/* ---- one cluster's resolving ----------------------------------------------------------- */

/* Where a target is. */
typedef enum dns_target_state {
    PT_DNS_TARGET_IDLE,      /* not started */
    PT_DNS_TARGET_RESOLVING, /* a lookup under way */
    PT_DNS_TARGET_WAITING,   /* the refresh timer runs */
} dns_target_state_t;

typedef struct dns_target {
    pt_dns_cluster_t *dc;
    char *name, *hostname;
    unsigned port;
    uint32_t weight;
    /* What its hosts take from the endpoint (strings owned: loc[] and metadata). */
    uint32_t priority, locality_weight;
    pt_eds_health_t health;
    char *loc[3], *metadata;
    pt_addr_t *addrs; /* its hosts now (with the port), as the last good lookup gave them */
    unsigned naddrs;
    dns_target_state_t state;
    int failing; /* its last lookup failed: the next failures are logged at debug level */
    pt_dns_query_t *query;
    ev_timer timer;
} dns_target_t;

/* Cluster flags. */
enum {
    PT_DNS_CLUSTER_INITIALIZED = 1u << 0, /* a first lookup ended */
    PT_DNS_CLUSTER_LOGICAL = 1u << 1,     /* one host: the first address */
};

struct pt_dns_cluster {
    struct ev_loop *loop;
    pt_dns_resolver_t *res;
    pt_dns_config_t cfg; /* its scalars (targets are below) */
    char *name;
    dns_target_t *targets;
    unsigned ntargets;
    pt_dns_backoff_t backoff; /* shared by the targets, as Envoy's per cluster */
    unsigned flags;
    pt_stat_t update_attempt, update_success, update_failure, update_no_rebuild, membership_change;
    pt_dns_cluster_update_fn update;
    pt_dns_cluster_init_fn init;
    void *data;
    /* Lookups that change hosts in one turn of the loop, or within PT_DNS_PUBLISH_GAP_S of
     * the last publish, publish one host set: a refresh's answers arrive together (or, with
     * dns_jitter, spread over the period), and each publish costs a new version of the
     * cluster, O(its hosts). */
    ev_timer publish_timer;
    int publish_pending;
    ev_tstamp last_publish; /* loop time of the last publish */
};

/* The least time between two host sets a DNS cluster publishes (the first is at once). */
#define PT_DNS_PUBLISH_GAP_S 0.05

static void target_resolve(dns_target_t *t);

static void on_refresh(struct ev_loop *loop, ev_timer *w, int revents)
{
    target_resolve(w->data);
}

static void target_wait(dns_target_t *t, uint64_t ms)
{
    t->state = PT_DNS_TARGET_WAITING;
    ev_timer_set(&t->timer, (double)ms / 1000.0, 0.);
    ev_timer_start(t->dc->loop, &t->timer);
}

/* Same addresses, in any order. */
static int same_set(const pt_addr_t *a, unsigned na, const pt_addr_t *b, unsigned nb)
{
    if (na != nb)
        return 0;
    for (unsigned i = 0; i < na; i++) {
        int found = 0;
        for (unsigned j = 0; j < nb && !found; j++)
            found = pt_addr_equal(&a[i], &b[j]);
        if (!found)
            return 0;
    }
    return 1;
}

/* A hash of an address a lookup gave (IPv4 or IPv6, with its port) and a hostname. */
static uint64_t host_key(const pt_addr_t *a, const char *hostname)
{
    uint64_t h = pt_hash_name(hostname);
    if (a->sa.sa_family == AF_INET6)
        return pt_hash64(&a->sin6.sin6_addr, 16, h) ^ a->sin6.sin6_port;
    return pt_hash64(&a->sin.sin_addr, 4, h) ^ a->sin.sin_port;
}

/* Every target's hosts as endpoints, to the owner. */
static void publish_hosts(pt_dns_cluster_t *dc)
{
    unsigned total = 0;
    for (unsigned i = 0; i < dc->ntargets; i++)
        total += dc->targets[i].naddrs;
    /* Two names for one address and hostname are one host: found through an open
     * addressing table of the endpoints' indexes (+1; 0 is empty), so that a cluster of
     * thousands of names is not compared pairwise. */
    size_t cap = 16;
    while (cap < 2 * (size_t)total)
        cap <<= 1;
    pt_endpoint_t *eps = calloc(total ? total : 1, sizeof(*eps));
    unsigned *seen = calloc(cap, sizeof(*seen));
    if (eps == NULL || seen == NULL) {
        pt_error("dns: cluster %s: out of memory updating its hosts", dc->name);
        free(eps);
        free(seen);
        return;
    }
    unsigned n = 0;
    for (unsigned i = 0; i < dc->ntargets; i++) {
        const dns_target_t *t = &dc->targets[i];
        for (unsigned k = 0; k < t->naddrs; k++) {
            size_t slot = (size_t)host_key(&t->addrs[k], t->hostname) & (cap - 1);
            int dup = 0;
            for (; seen[slot] != 0 && !dup; slot = (slot + 1) & (cap - 1)) {
                const pt_endpoint_t *e = &eps[seen[slot] - 1];
                dup = pt_addr_equal(&e->address, &t->addrs[k]) &&
                      strcmp(e->hostname, t->hostname) == 0;
            }
            if (dup)
                continue;
            seen[slot] = n + 1;
            eps[n].address = t->addrs[k];
            eps[n].hostname = t->hostname;
            eps[n].weight = t->weight;
            eps[n].priority = t->priority;
            eps[n].locality = (pt_locality_t){t->loc[0], t->loc[1], t->loc[2]};
            eps[n].locality_weight = t->locality_weight;
            eps[n].health = t->health;
            eps[n].metadata = t->metadata;
            n++;
        }
    }
    free(seen);
    pt_stat_inc(dc->membership_change);
    dc->last_publish = ev_now(dc->loop);
    dc->update(dc->data, eps, n);
    free(eps);
}

static void on_publish(struct ev_loop *loop, ev_timer *w, int revents)
{
    pt_dns_cluster_t *dc = w->data;
    dc->publish_pending = 0;
    publish_hosts(dc);
}

static void on_resolved(void *data, pt_dns_status_t status, const pt_dns_answer_t *answers,
                        unsigned n, const char *why)
{
    dns_target_t *t = data;
    pt_dns_cluster_t *dc = t->dc;
    t->query = NULL;
    int logical = (dc->flags & PT_DNS_CLUSTER_LOGICAL) != 0;
    uint64_t next;
    int changed = 0;
    /* LOGICAL_DNS keeps its address when a lookup finds none (Envoy: a resolved address
     * never falls back to no host); STRICT_DNS takes "no such name" as no hosts. */
    if (status == PT_DNS_COMPLETED && !(logical && n == 0)) {
        pt_stat_inc(dc->update_success);
        if (t->failing)
            pt_info("dns: cluster %s: %s resolves again", dc->name, t->name);
        t->failing = 0;
        unsigned keep = logical ? 1 : n;
        pt_addr_t *addrs = keep > 0 ? calloc(keep, sizeof(*addrs)) : NULL;
        uint32_t min_ttl = UINT32_MAX;
        if (keep > 0 && addrs == NULL) {
            pt_error("dns: cluster %s: out of memory", dc->name);
            next = dc->cfg.refresh_ms;
            goto schedule;
        }
        for (unsigned i = 0; i < keep; i++) {
            addrs[i] = answers[i].address;
            if (addrs[i].sa.sa_family == AF_INET6)
                addrs[i].sin6.sin6_port = htons((uint16_t)t->port);
            else
                addrs[i].sin.sin_port = htons((uint16_t)t->port);
            if (answers[i].ttl_s < min_ttl)
                min_ttl = answers[i].ttl_s;
        }
        if (same_set(addrs, keep, t->addrs, t->naddrs)) {
            pt_stat_inc(dc->update_no_rebuild);
            free(addrs);
        } else {
            pt_debug("dns: cluster %s: %s now has %u address%s", dc->name, t->name, keep,
                     keep == 1 ? "" : "es");
            free(t->addrs);
            t->addrs = addrs;
            t->naddrs = keep;
            changed = 1;
        }
        pt_dns_backoff_reset(&dc->backoff, &dc->cfg);
        next =
            pt_dns_refresh_ms(&dc->cfg, keep, min_ttl == UINT32_MAX ? 0 : min_ttl, pt_random_u64());
    } else {
        pt_stat_inc(dc->update_failure);
        next = pt_dns_backoff_next(&dc->backoff, &dc->cfg, pt_random_u64());
        /* Once per run of failures: a resolver that stays down does not flood the log at
         * the backoff's pace. */
        pt_log_level_t level = t->failing ? PT_LOG_DEBUG : PT_LOG_WARN;
        t->failing = 1;
        PT_LOG(level,
               "dns: cluster %s: resolving %s: %s (keeping its %u address%s; again in "
               "%llu ms)",
               dc->name, t->name, status == PT_DNS_COMPLETED ? "no address" : why, t->naddrs,
               t->naddrs == 1 ? "" : "es", (unsigned long long)next);
    }
schedule:
    target_wait(t, next);
    if (changed && !(dc->flags & PT_DNS_CLUSTER_INITIALIZED)) {
        publish_hosts(dc); /* before the owner hears the cluster is initialized */
    } else if (changed && !dc->publish_pending) {
        ev_tstamp wait = dc->last_publish + PT_DNS_PUBLISH_GAP_S - ev_now(dc->loop);
        dc->publish_pending = 1;
        ev_timer_set(&dc->publish_timer, wait > 0. ? wait : 0., 0.);
        ev_timer_start(dc->loop, &dc->publish_timer);
    }
    if (!(dc->flags & PT_DNS_CLUSTER_INITIALIZED)) {
        dc->flags |= PT_DNS_CLUSTER_INITIALIZED;
        dc->init(dc->data);
    }
}

static void target_resolve(dns_target_t *t)
{
    pt_dns_cluster_t *dc = t->dc;
    pt_stat_inc(dc->update_attempt);
    t->state = PT_DNS_TARGET_RESOLVING;
    t->query = pt_dns_resolve(dc->res, t->name, dc->cfg.family, on_resolved, t);
    if (t->query == NULL) {
        pt_stat_inc(dc->update_failure);
        pt_error("dns: cluster %s: out of memory resolving %s", dc->name, t->name);
        target_wait(t, pt_dns_backoff_next(&dc->backoff, &dc->cfg, pt_random_u64()));
    }
}

pt_dns_cluster_t *pt_dns_cluster_start(struct ev_loop *loop, const pt_cluster_t *c,
                                       pt_dns_cluster_update_fn update, pt_dns_cluster_init_fn init,
                                       void *data, char *err, size_t errlen)
{
    const pt_dns_config_t *cfg = c->dns;
    pt_dns_cluster_t *dc = calloc(1, sizeof(*dc));
    if (dc == NULL || (dc->name = strdup(c->name)) == NULL)
        goto oom;
    dc->loop = loop;
    dc->cfg = *cfg;
    dc->cfg.targets = NULL;
    dc->cfg.resolver.resolvers = NULL; /* used only by pt_dns_resolver_new, below */
    dc->update = update;
    dc->init = init;
    dc->data = data;
    ev_timer_init(&dc->publish_timer, on_publish, 0., 0.);
    dc->publish_timer.data = dc;
    if (cfg->logical)
        dc->flags |= PT_DNS_CLUSTER_LOGICAL;
    pt_dns_backoff_reset(&dc->backoff, cfg);
    if ((dc->res = pt_dns_resolver_new(loop, cfg->has_resolver ? &cfg->resolver : &default_resolver,
                                       err, errlen)) == NULL)
        goto fail;
    if (cfg->ntargets > 0 && (dc->targets = calloc(cfg->ntargets, sizeof(*dc->targets))) == NULL)
        goto oom;
    for (unsigned i = 0; i < cfg->ntargets; i++) {
        dns_target_t *t = &dc->targets[i];
        const pt_dns_target_t *tc = &cfg->targets[i];
        dc->ntargets++;
        t->dc = dc;
        t->port = tc->port;
        t->weight = tc->weight;
        t->priority = tc->priority;
        t->locality_weight = tc->locality_weight;
        t->health = tc->health;
        ev_timer_init(&t->timer, on_refresh, 0., 0.);
        t->timer.data = t;
        if ((t->name = strdup(tc->name)) == NULL || (t->hostname = strdup(tc->hostname)) == NULL)
            goto oom;
        const char *loc[3] = {tc->locality.region, tc->locality.zone, tc->locality.sub_zone};
        for (int k = 0; k < 3; k++)
            if ((t->loc[k] = strdup(loc[k] != NULL ? loc[k] : "")) == NULL)
                goto oom;
        if (tc->metadata != NULL && (t->metadata = strdup(tc->metadata)) == NULL)
            goto oom;
        /* What the cluster has of this target already (a new version of a cluster that was
         * resolving): its hosts stay until a lookup says otherwise. */
        unsigned have = 0;
        for (unsigned k = 0; k < c->nhosts; k++)
            have += c->hosts[k]->hostname != NULL &&
                    strcmp(c->hosts[k]->hostname, t->hostname) == 0 &&
                    pt_addr_port(&c->hosts[k]->address) == t->port;
        if (have > 0 && (t->addrs = calloc(have, sizeof(*t->addrs))) == NULL)
            goto oom;
        for (unsigned k = 0; k < c->nhosts; k++)
            if (c->hosts[k]->hostname != NULL && strcmp(c->hosts[k]->hostname, t->hostname) == 0 &&
                pt_addr_port(&c->hosts[k]->address) == t->port)
                t->addrs[t->naddrs++] = c->hosts[k]->address;
    }
#define PT_DNS_STAT(f) dc->f = pt_stats_counter("cluster", "envoy_cluster_name", c->name, #f)
    PT_DNS_STAT(update_attempt);
    PT_DNS_STAT(update_success);
    PT_DNS_STAT(update_failure);
    PT_DNS_STAT(update_no_rebuild);
    PT_DNS_STAT(membership_change);
#undef PT_DNS_STAT
    /* No endpoint: nothing to wait for (Envoy initializes such a cluster at once). */
    if (dc->ntargets == 0)
        dc->flags |= PT_DNS_CLUSTER_INITIALIZED;
    for (unsigned i = 0; i < dc->ntargets; i++)
        target_resolve(&dc->targets[i]);
    return dc;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    pt_dns_cluster_stop(dc);
    return NULL;
}

void pt_dns_cluster_stop(pt_dns_cluster_t *dc)
{
    if (dc == NULL)
        return;
    for (unsigned i = 0; i < dc->ntargets; i++) {
        dns_target_t *t = &dc->targets[i];
        pt_dns_query_cancel(t->query);
        ev_timer_stop(dc->loop, &t->timer);
        free(t->addrs);
        free(t->name);
        free(t->hostname);
        for (int k = 0; k < 3; k++)
            free(t->loc[k]);
        free(t->metadata);
    }
    free(dc->targets);
    if (dc->loop != NULL)
        ev_timer_stop(dc->loop, &dc->publish_timer);
    pt_dns_resolver_free(dc->res);
    free(dc->name);
    free(dc);
}

int pt_dns_cluster_initialized(const pt_dns_cluster_t *dc)
{
    return (dc->flags & PT_DNS_CLUSTER_INITIALIZED) != 0;
}
