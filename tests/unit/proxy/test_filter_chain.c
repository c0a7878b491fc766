/* Unit tests for proxy/filter_chain.c: Envoy's FilterChainMatch precedence. Criteria are
 * applied in order (destination port, destination IP, server name, transport protocol,
 * application protocols, direct source IP, source type, source IP, source port); at each
 * step only the most specific matching chains stay, so an earlier criterion decides before
 * a more specific later one is looked at, and a chain that fails a criterion is out even when
 * it is the most specific on another. Also pt_config_listener_for, the use_original_dst
 * hand-off's lookup. */
#include "proxy/config.h"
#include "pt_test.h"

#define MAXC 8

typedef struct {
    pt_listener_config_t l;
    pt_filter_chain_t chains[MAXC];
    pt_cidr_t cidrs[MAXC][2];
} fixture_t;

static pt_filter_chain_match_t *add_chain(fixture_t *f, const char *name)
{
    pt_filter_chain_t *fc = &f->chains[f->l.nchains++];
    memset(fc, 0, sizeof(*fc));
    fc->name = name;
    f->l.chains = f->chains;
    return &fc->match;
}

static const pt_cidr_t *cidr(fixture_t *f, const char *ip, unsigned len)
{
    pt_cidr_t *c = &f->cidrs[f->l.nchains - 1][0];
    if (c->prefix_len != 0 || c->addr.sa.sa_family != 0)
        c++;
    pt_cidr_parse(c, ip, len);
    return c;
}

typedef struct {
    pt_addr_t local, remote, direct;
    const char *sni, *transport;
    const char *alpn[2];
    unsigned nalpn;
    int has_direct;
} conn_t;

static conn_t conn(const char *lip, unsigned lport, const char *rip, unsigned rport)
{
    conn_t c;
    memset(&c, 0, sizeof(c));
    pt_addr_parse(&c.local, lip, lport);
    pt_addr_parse(&c.remote, rip, rport);
    c.transport = "raw_buffer";
    return c;
}

static const char *pick(const fixture_t *f, const conn_t *c)
{
    pt_chain_query_t q = {.local = &c->local, .remote = &c->remote, .sni = c->sni,
                          .transport_protocol = c->transport, .alpn = c->alpn,
                          .nalpn = c->nalpn, .direct_remote = c->has_direct ? &c->direct : NULL};
    const pt_filter_chain_t *fc = pt_listener_find_chain(&f->l, &q);
    return fc == NULL ? "(none)" : fc->name;
}

static void test_destination_port_first(void)
{
    fixture_t f;
    memset(&f, 0, sizeof(f));
    /* The exact port wins over a more specific destination IP without one. */
    pt_filter_chain_match_t *m = add_chain(&f, "ip32");
    m->prefix_ranges = cidr(&f, "10.0.0.1", 32);
    m->nprefix_ranges = 1;
    m = add_chain(&f, "port80");
    m->destination_port = 80;
    conn_t c = conn("10.0.0.1", 80, "10.1.0.1", 5000);
    PT_CHECK_STR(pick(&f, &c), "port80");
    c = conn("10.0.0.1", 81, "10.1.0.1", 5000);
    PT_CHECK_STR(pick(&f, &c), "ip32");
    c = conn("10.0.0.2", 81, "10.1.0.1", 5000);
    PT_CHECK_STR(pick(&f, &c), "(none)");
}

static void test_longest_destination_prefix(void)
{
    fixture_t f;
    memset(&f, 0, sizeof(f));
    pt_filter_chain_match_t *m = add_chain(&f, "/8");
    m->prefix_ranges = cidr(&f, "10.0.0.0", 8);
    m->nprefix_ranges = 1;
    m = add_chain(&f, "/24");
    m->prefix_ranges = cidr(&f, "10.0.0.0", 24);
    m->nprefix_ranges = 1;
    m = add_chain(&f, "any");
    m->transport_protocol = "raw_buffer";
    conn_t c = conn("10.0.0.9", 80, "1.2.3.4", 1);
    PT_CHECK_STR(pick(&f, &c), "/24");
    c = conn("10.9.0.9", 80, "1.2.3.4", 1);
    PT_CHECK_STR(pick(&f, &c), "/8");
    c = conn("11.0.0.1", 80, "1.2.3.4", 1);
    PT_CHECK_STR(pick(&f, &c), "any");
}

static void test_server_name_then_transport_then_alpn(void)
{
    fixture_t f;
    memset(&f, 0, sizeof(f));
    static const char *const exact[] = {"api.example.com"};
    static const char *const wild[] = {"*.example.com"};
    static const char *const h2[] = {"h2"};
    static const char *const http[] = {"http/1.1", "h2c"};
    pt_filter_chain_match_t *m = add_chain(&f, "wild");
    m->server_names = wild;
    m->nserver_names = 1;
    m = add_chain(&f, "exact-raw");
    m->server_names = exact;
    m->nserver_names = 1;
    m->transport_protocol = "raw_buffer";
    m = add_chain(&f, "exact-tls-h2");
    m->server_names = exact;
    m->nserver_names = 1;
    m->transport_protocol = "tls";
    m->application_protocols = h2;
    m->napplication_protocols = 1;
    m = add_chain(&f, "http-detected");
    m->application_protocols = http;
    m->napplication_protocols = 2;
    conn_t c = conn("10.0.0.1", 443, "1.2.3.4", 1);
    c.sni = "api.example.com";
    c.transport = "tls";
    c.alpn[0] = "h2";
    c.nalpn = 1;
    PT_CHECK_STR(pick(&f, &c), "exact-tls-h2");
    c.nalpn = 0; /* the exact name's TLS chain wants h2: out; nothing else has the name */
    PT_CHECK_STR(pick(&f, &c), "(none)");
    c.sni = "www.example.com";
    PT_CHECK_STR(pick(&f, &c), "wild");
    /* The HTTP inspector's "h2c" on plaintext without SNI. */
    c = conn("10.0.0.1", 80, "1.2.3.4", 1);
    c.alpn[0] = "h2c";
    c.nalpn = 1;
    PT_CHECK_STR(pick(&f, &c), "http-detected");
    c.nalpn = 0;
    PT_CHECK_STR(pick(&f, &c), "(none)");
}

static void test_application_protocols_before_sources(void)
{
    fixture_t f;
    memset(&f, 0, sizeof(f));
    static const char *const http[] = {"http/1.1"};
    pt_filter_chain_match_t *m = add_chain(&f, "from-10/8");
    m->source_prefix_ranges = cidr(&f, "10.0.0.0", 8);
    m->nsource_prefix_ranges = 1;
    m = add_chain(&f, "http");
    m->application_protocols = http;
    m->napplication_protocols = 1;
    conn_t c = conn("192.168.0.1", 80, "10.1.1.1", 4000);
    c.alpn[0] = "http/1.1";
    c.nalpn = 1;
    PT_CHECK_STR(pick(&f, &c), "http"); /* protocols come before the source */
    c.nalpn = 0;
    PT_CHECK_STR(pick(&f, &c), "from-10/8");
}

static void test_direct_source_before_source_type(void)
{
    fixture_t f;
    memset(&f, 0, sizeof(f));
    pt_filter_chain_match_t *m = add_chain(&f, "local");
    m->source_type = PT_SOURCE_SAME_IP_OR_LOOPBACK;
    m = add_chain(&f, "direct-10.0.0.0/16");
    m->direct_source_prefix_ranges = cidr(&f, "10.0.0.0", 16);
    m->ndirect_source_prefix_ranges = 1;
    m = add_chain(&f, "direct-10.0.0.0/8");
    m->direct_source_prefix_ranges = cidr(&f, "10.0.0.0", 8);
    m->ndirect_source_prefix_ranges = 1;
    conn_t c = conn("127.0.0.1", 80, "127.0.0.1", 4000);
    c.direct = c.remote;
    pt_addr_parse(&c.direct, "10.0.5.5", 4000);
    c.has_direct = 1;
    PT_CHECK_STR(pick(&f, &c), "direct-10.0.0.0/16"); /* though the source is local */
    pt_addr_parse(&c.direct, "10.7.5.5", 4000);
    PT_CHECK_STR(pick(&f, &c), "direct-10.0.0.0/8");
    pt_addr_parse(&c.direct, "192.168.0.1", 4000);
    PT_CHECK_STR(pick(&f, &c), "local");
    /* Without a direct source of its own, the connection's source is it. */
    c = conn("127.0.0.1", 80, "10.0.1.1", 4000);
    PT_CHECK_STR(pick(&f, &c), "direct-10.0.0.0/16");
}

static void test_source_type_ip_port_and_default(void)
{
    fixture_t f;
    memset(&f, 0, sizeof(f));
    static const uint32_t p5000[] = {5000};
    pt_filter_chain_match_t *m = add_chain(&f, "external");
    m->source_type = PT_SOURCE_EXTERNAL;
    m = add_chain(&f, "external-/16-port");
    m->source_type = PT_SOURCE_EXTERNAL;
    m->source_prefix_ranges = cidr(&f, "172.16.0.0", 16);
    m->nsource_prefix_ranges = 1;
    m->source_ports = p5000;
    m->nsource_ports = 1;
    m = add_chain(&f, "external-/16");
    m->source_type = PT_SOURCE_EXTERNAL;
    m->source_prefix_ranges = cidr(&f, "172.16.0.0", 16);
    m->nsource_prefix_ranges = 1;
    pt_filter_chain_t def = {.name = "default"};
    f.l.default_chain = &def;
    conn_t c = conn("10.0.0.1", 80, "172.16.3.3", 5000);
    PT_CHECK_STR(pick(&f, &c), "external-/16-port");
    c = conn("10.0.0.1", 80, "172.16.3.3", 5001);
    PT_CHECK_STR(pick(&f, &c), "external-/16");
    c = conn("10.0.0.1", 80, "8.8.8.8", 5000);
    PT_CHECK_STR(pick(&f, &c), "external");
    c = conn("10.0.0.1", 80, "127.0.0.1", 5000); /* local: no chain takes it */
    PT_CHECK_STR(pick(&f, &c), "default");
    c = conn("10.0.0.1", 80, "10.0.0.1", 5000); /* the same IP as the destination */
    PT_CHECK_STR(pick(&f, &c), "default");
}

static void test_equal_matches(void)
{
    fixture_t f;
    memset(&f, 0, sizeof(f));
    pt_filter_chain_match_t *a = add_chain(&f, "a");
    a->direct_source_prefix_ranges = cidr(&f, "10.0.0.0", 8);
    a->ndirect_source_prefix_ranges = 1;
    pt_filter_chain_match_t *b = add_chain(&f, "b");
    b->direct_source_prefix_ranges = cidr(&f, "10.0.0.0", 8);
    b->ndirect_source_prefix_ranges = 1;
    PT_CHECK(pt_chain_match_equal(a, b));
    b->direct_source_prefix_ranges = cidr(&f, "10.0.0.0", 9);
    PT_CHECK(!pt_chain_match_equal(a, b));
}

static void test_listener_for_original_destination(void)
{
    pt_listener_config_t ls[4];
    memset(ls, 0, sizeof(ls));
    ls[0].name = "virtualOutbound";
    pt_addr_parse(&ls[0].address, "0.0.0.0", 15001);
    ls[1].name = "0.0.0.0_80";
    pt_addr_parse(&ls[1].address, "0.0.0.0", 80);
    ls[2].name = "10.96.0.10_80";
    pt_addr_parse(&ls[2].address, "10.96.0.10", 80);
    ls[3].name = "[::]_80";
    pt_addr_parse(&ls[3].address, "::", 80);
    pt_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.listeners = ls;
    cfg.nlisteners = 4;
    PT_CHECK_INT(pt_config_index_listeners(&cfg), 0);
    pt_addr_t dst;
    pt_addr_parse(&dst, "10.96.0.10", 80);
    PT_CHECK_STR(pt_config_listener_for(&cfg, &dst)->name, "10.96.0.10_80");
    pt_addr_parse(&dst, "10.96.0.11", 80);
    PT_CHECK_STR(pt_config_listener_for(&cfg, &dst)->name, "0.0.0.0_80");
    pt_addr_parse(&dst, "fd00::1", 80);
    PT_CHECK_STR(pt_config_listener_for(&cfg, &dst)->name, "[::]_80");
    pt_addr_parse(&dst, "10.96.0.10", 81);
    PT_CHECK(pt_config_listener_for(&cfg, &dst) == NULL);
    pt_addr_parse(&dst, "0.0.0.0", 15001); /* the wildcard itself */
    PT_CHECK_STR(pt_config_listener_for(&cfg, &dst)->name, "virtualOutbound");
    pt_arena_dispose(&cfg.arena);
}

/* Many listeners (Istio writes one per service VIP and port): each found by its address. */
static void test_listener_index_many(void)
{
    enum { N = 3000 };
    pt_listener_config_t *ls = calloc(N, sizeof(*ls));
    PT_CHECK(ls != NULL);
    char ip[32];
    for (unsigned i = 0; i < N; i++) {
        snprintf(ip, sizeof(ip), "10.96.%u.%u", i / 250, i % 250 + 1);
        pt_addr_parse(&ls[i].address, i % 10 == 0 ? "0.0.0.0" : ip, 8000 + i % 50 + (i / 10 % 2));
        ls[i].name = "l";
    }
    pt_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.listeners = ls;
    cfg.nlisteners = N;
    PT_CHECK_INT(pt_config_index_listeners(&cfg), 0);
    for (unsigned i = 0; i < N; i++) {
        const pt_listener_config_t *l = pt_config_listener_for(&cfg, &ls[i].address);
        if (l != &ls[i] && !pt_addr_equal(&l->address, &ls[i].address)) {
            fprintf(stderr, "listener %u not found by its address\n", i);
            PT_CHECK(0);
        }
    }
    pt_arena_dispose(&cfg.arena);
    free(ls);
}

int main(void)
{
    PT_RUN(test_destination_port_first);
    PT_RUN(test_longest_destination_prefix);
    PT_RUN(test_server_name_then_transport_then_alpn);
    PT_RUN(test_application_protocols_before_sources);
    PT_RUN(test_direct_source_before_source_type);
    PT_RUN(test_source_type_ip_port_and_default);
    PT_RUN(test_equal_matches);
    PT_RUN(test_listener_for_original_destination);
    PT_RUN(test_listener_index_many);
    PT_TEST_EXIT();
}
