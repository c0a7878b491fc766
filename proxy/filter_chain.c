/* Filter chain selection (envoy.config.listener.v3.FilterChainMatch semantics).
 *
 * Envoy narrows the candidates criterion by criterion, each time keeping only the chains
 * that match most specifically (an exact port beats "any port", a /24 beats a /16, an exact
 * server name beats a wildcard, a wildcard beats "any name"); a chain that does not match
 * a criterion is dropped. The first survivor wins, else the default chain. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/config.h"
#include "proxy/hash.h"

#define MAX_STACK_CHAINS 256

typedef int (*score_fn)(const pt_filter_chain_match_t *m, const pt_chain_query_t *q);

static int score_cidrs(const pt_cidr_t *ranges, unsigned n, const pt_addr_t *a)
{
    if (n == 0)
        return 0;
    int best = -1;
    for (unsigned i = 0; a != NULL && i < n; i++)
        if (pt_cidr_match(&ranges[i], a) && (int)ranges[i].prefix_len + 1 > best)
            best = (int)ranges[i].prefix_len + 1;
    return best;
}

static int score_port(const pt_filter_chain_match_t *m, const pt_chain_query_t *q)
{
    if (m->destination_port == 0)
        return 0;
    return q->local != NULL && pt_addr_port(q->local) == m->destination_port ? 1 : -1;
}

static int score_prefix(const pt_filter_chain_match_t *m, const pt_chain_query_t *q)
{
    return score_cidrs(m->prefix_ranges, m->nprefix_ranges, q->local);
}

static int score_server_name(const pt_filter_chain_match_t *m, const pt_chain_query_t *q)
{
    if (m->nserver_names == 0)
        return 0;
    if (q->sni == NULL || q->sni[0] == '\0')
        return -1;
    int best = -1;
    size_t slen = strlen(q->sni);
    for (unsigned i = 0; i < m->nserver_names; i++) {
        const char *n = m->server_names[i];
        if (strcasecmp(n, q->sni) == 0)
            return 100000; /* exact beats any wildcard */
        if (n[0] == '*' && n[1] == '.') {
            size_t nl = strlen(n + 1); /* ".example.com" */
            if (slen > nl && strcasecmp(q->sni + slen - nl, n + 1) == 0 && (int)nl > best)
                best = (int)nl;
        }
    }
    return best;
}

static int score_transport(const pt_filter_chain_match_t *m, const pt_chain_query_t *q)
{
    if (m->transport_protocol == NULL)
        return 0;
    return q->transport_protocol != NULL && strcmp(m->transport_protocol, q->transport_protocol) == 0
               ? 1
               : -1;
}

/* The client's preference decides, as in Envoy (which walks the client's ALPN list in order
 * and takes the chains listing the first protocol any chain knows): a chain scores higher the
 * earlier the first client protocol it lists, so among chains for "h2" and for "http/1.1" a
 * client offering "h2,http/1.1" gets the h2 chain whatever the config order. */
static int score_alpn(const pt_filter_chain_match_t *m, const pt_chain_query_t *q)
{
    if (m->napplication_protocols == 0)
        return 0;
    for (unsigned j = 0; j < q->nalpn; j++)
        for (unsigned i = 0; i < m->napplication_protocols; i++)
            if (strcmp(m->application_protocols[i], q->alpn[j]) == 0)
                return (int)(q->nalpn - j);
    return -1;
}

static int same_ip(const pt_addr_t *a, const pt_addr_t *b)
{
    if (a == NULL || b == NULL || a->sa.sa_family != b->sa.sa_family)
        return 0;
    if (a->sa.sa_family == AF_INET)
        return a->sin.sin_addr.s_addr == b->sin.sin_addr.s_addr;
    return memcmp(&a->sin6.sin6_addr, &b->sin6.sin6_addr, sizeof(struct in6_addr)) == 0;
}

static int score_direct_source_prefix(const pt_filter_chain_match_t *m, const pt_chain_query_t *q)
{
    return score_cidrs(m->direct_source_prefix_ranges, m->ndirect_source_prefix_ranges,
                       q->direct_remote != NULL ? q->direct_remote : q->remote);
}

static int score_source_type(const pt_filter_chain_match_t *m, const pt_chain_query_t *q)
{
    if (m->source_type == PT_SOURCE_ANY)
        return 0;
    int local = q->remote != NULL && (pt_addr_is_loopback(q->remote) || same_ip(q->remote, q->local));
    if (m->source_type == PT_SOURCE_SAME_IP_OR_LOOPBACK)
        return local ? 1 : -1;
    return local ? -1 : 1;
}

static int score_source_prefix(const pt_filter_chain_match_t *m, const pt_chain_query_t *q)
{
    return score_cidrs(m->source_prefix_ranges, m->nsource_prefix_ranges, q->remote);
}

static int score_source_port(const pt_filter_chain_match_t *m, const pt_chain_query_t *q)
{
    if (m->nsource_ports == 0)
        return 0;
    unsigned port = q->remote ? pt_addr_port(q->remote) : 0;
    for (unsigned i = 0; i < m->nsource_ports; i++)
        if (m->source_ports[i] == port)
            return 1;
    return -1;
}

/* Envoy's order (FilterChainMatch): destination port, destination IP, server name,
 * transport protocol, application protocols, direct source IP, source type, source IP,
 * source port. */
static const score_fn criteria[] = {
    score_port,         score_prefix,      score_server_name,   score_transport,
    score_alpn,         score_direct_source_prefix, score_source_type, score_source_prefix,
    score_source_port,
};

const pt_filter_chain_t *pt_listener_find_chain(const pt_listener_config_t *l,
                                                const pt_chain_query_t *q)
{
    const pt_filter_chain_t *small[MAX_STACK_CHAINS];
    const pt_filter_chain_t **stack = small;
    unsigned n = l->nchains;
    if (n > MAX_STACK_CHAINS) {
        stack = malloc(n * sizeof(*stack));
        if (stack == NULL)
            return NULL;
    }
    for (unsigned i = 0; i < n; i++)
        stack[i] = &l->chains[i];
    for (size_t c = 0; c < sizeof(criteria) / sizeof(criteria[0]) && n > 0; c++) {
        int best = -1;
        for (unsigned i = 0; i < n; i++) {
            int sc = criteria[c](&stack[i]->match, q);
            if (sc > best)
                best = sc;
        }
        if (best < 0) {
            n = 0;
            break;
        }
        unsigned o = 0;
        for (unsigned i = 0; i < n; i++)
            if (criteria[c](&stack[i]->match, q) == best)
                stack[o++] = stack[i];
        n = o;
    }
    const pt_filter_chain_t *found = n > 0 ? stack[0] : l->default_chain;
    if (stack != small)
        free(stack);
    return found;
}

/* The bytes that make an address a listener's key: IP and port (not flow or scope). */
static uint64_t listener_key_hash(const pt_addr_t *a)
{
    unsigned port = pt_addr_port(a);
    uint64_t seed = 0x9e3779b97f4a7c15ull ^ port ^ ((uint64_t)a->sa.sa_family << 16);
    if (a->sa.sa_family == AF_INET)
        return pt_hash64(&a->sin.sin_addr, sizeof(a->sin.sin_addr), seed);
    return pt_hash64(&a->sin6.sin6_addr, sizeof(a->sin6.sin6_addr), seed);
}

static int same_address(const pt_addr_t *a, const pt_addr_t *b)
{
    return a->sa.sa_family == b->sa.sa_family && pt_addr_port(a) == pt_addr_port(b) &&
           same_ip(a, b);
}

int pt_config_index_listeners(pt_config_t *c)
{
    unsigned n = 8;
    while (n < 2 * c->nlisteners)
        n *= 2;
    uint32_t *slots = pt_arena_alloc(&c->arena, n * sizeof(*slots));
    if (slots == NULL)
        return -1;
    for (unsigned i = 0; i < c->nlisteners; i++) {
        const pt_addr_t *a = &c->listeners[i].address;
        if (a->sa.sa_family != AF_INET && a->sa.sa_family != AF_INET6)
            continue;
        unsigned k = (unsigned)(listener_key_hash(a) & (n - 1));
        while (slots[k] != 0)
            k = (k + 1) & (n - 1);
        slots[k] = i + 1;
    }
    c->listener_slots = slots;
    c->nlistener_slots = n;
    return 0;
}

static const pt_listener_config_t *listener_at(const pt_config_t *c, const pt_addr_t *a)
{
    if (c->nlistener_slots == 0)
        return NULL;
    unsigned mask = c->nlistener_slots - 1;
    for (unsigned k = (unsigned)(listener_key_hash(a) & mask); c->listener_slots[k] != 0;
         k = (k + 1) & mask) {
        const pt_listener_config_t *l = &c->listeners[c->listener_slots[k] - 1];
        if (same_address(&l->address, a))
            return l;
    }
    return NULL;
}

const pt_listener_config_t *pt_config_listener_for(const pt_config_t *c, const pt_addr_t *dst)
{
    if (c == NULL || (dst->sa.sa_family != AF_INET && dst->sa.sa_family != AF_INET6))
        return NULL;
    const pt_listener_config_t *l = listener_at(c, dst);
    if (l != NULL)
        return l;
    pt_addr_t any;
    memset(&any, 0, sizeof(any));
    any.sa.sa_family = dst->sa.sa_family;
    if (dst->sa.sa_family == AF_INET)
        any.sin.sin_port = dst->sin.sin_port;
    else
        any.sin6.sin6_port = dst->sin6.sin6_port;
    return listener_at(c, &any);
}

static int strs_equal(const char *const *a, unsigned na, const char *const *b, unsigned nb)
{
    if (na != nb)
        return 0;
    for (unsigned i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0)
            return 0;
    return 1;
}

static int cidrs_equal(const pt_cidr_t *a, unsigned na, const pt_cidr_t *b, unsigned nb)
{
    if (na != nb)
        return 0;
    for (unsigned i = 0; i < na; i++)
        if (a[i].prefix_len != b[i].prefix_len || !same_ip(&a[i].addr, &b[i].addr))
            return 0;
    return 1;
}

int pt_chain_match_equal(const pt_filter_chain_match_t *a, const pt_filter_chain_match_t *b)
{
    if (a->destination_port != b->destination_port || a->source_type != b->source_type)
        return 0;
    if ((a->transport_protocol == NULL) != (b->transport_protocol == NULL) ||
        (a->transport_protocol && strcmp(a->transport_protocol, b->transport_protocol) != 0))
        return 0;
    if (!cidrs_equal(a->prefix_ranges, a->nprefix_ranges, b->prefix_ranges, b->nprefix_ranges) ||
        !cidrs_equal(a->source_prefix_ranges, a->nsource_prefix_ranges, b->source_prefix_ranges,
                     b->nsource_prefix_ranges) ||
        !cidrs_equal(a->direct_source_prefix_ranges, a->ndirect_source_prefix_ranges,
                     b->direct_source_prefix_ranges, b->ndirect_source_prefix_ranges))
        return 0;
    if (!strs_equal(a->server_names, a->nserver_names, b->server_names, b->nserver_names) ||
        !strs_equal(a->application_protocols, a->napplication_protocols,
                    b->application_protocols, b->napplication_protocols))
        return 0;
    if (a->nsource_ports != b->nsource_ports)
        return 0;
    for (unsigned i = 0; i < a->nsource_ports; i++)
        if (a->source_ports[i] != b->source_ports[i])
            return 0;
    return 1;
}
