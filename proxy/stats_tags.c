#include "proxy/stats_tags.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/regex.h"

typedef enum extractor_kind {
    EX_REGEX,
    EX_TOKENS,
    EX_FIXED,
} extractor_kind_t;

typedef struct extractor {
    extractor_kind_t kind;
    const char *tag_name;
    const pt_regex_t *re; /* EX_REGEX */
    const char *substr;   /* EX_REGEX: skipped unless the name contains it ("" none) */
    const char *negative; /* EX_REGEX: a value that is no tag (listener "admin") */
    const char *tokens;   /* EX_TOKENS: the pattern; EX_FIXED: the value */
    struct extractor *next;
} extractor_t;

struct pt_tag_producer {
    pt_arena_t *arena;
    extractor_t *fixed, *first, **tail; /* fixed values, then the extractors in order */
    extractor_t **fixed_tail;
};

/* Envoy's default extractors, in Envoy's order. Regexes are Envoy's with its macros
 * written out: <TAG_VALUE> is [^\.]+, <ADDRESS> an IPv4 or bracketed IPv6 address and
 * port joined by '_', <CIPHER> [\w-]+, <TLS_VERSION> TLSv\d\.\d,
 * <LISTENER_OR_CLUSTER_WITH_NAME> (?:listener|cluster)\..*? . */
#define ADDRESS "(?:(?:\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}|\\[[a-fA-F_\\d]+\\])_\\d+)"
static const struct default_extractor {
    const char *name;
    const char *regex;  /* or NULL */
    const char *tokens; /* or NULL */
    const char *substr;
    const char *negative;
} defaults[] = {
    {"envoy.response_code", "_rq(_(\\d{3}))$", NULL, "_rq_", NULL},
    {"envoy.response_code_class", "_rq_((\\d))xx$", NULL, "_rq_", NULL},
    {"envoy.dynamo_partition_id",
     "^http\\.[^\\.]+\\.dynamodb\\.table\\.[^\\.]+\\.capacity\\.[^\\.]+(\\.__partition_id=(\\w{7}))"
     "$",
     NULL, ".dynamodb.table.", NULL},
    {"envoy.dynamo_operation",
     "^http\\.[^\\.]+\\.dynamodb.(?:operation|table\\.[^\\.]+\\.capacity)(\\.([^\\.]+))(?:\\.|$)",
     NULL, ".dynamodb.", NULL},
    {"envoy.mongo_callsite", NULL, "mongo.*.collection.*.callsite.$.query.**", NULL, NULL},
    {"envoy.dynamo_table", "^http\\.[^\\.]+\\.dynamodb.(?:table|error)\\.(([^\\.]+)\\.)", NULL,
     ".dynamodb.", NULL},
    {"envoy.mongo_collection", NULL, "mongo.*.collection.$.**.query.*", NULL, NULL},
    {"envoy.mongo_cmd", NULL, "mongo.*.cmd.$.**", NULL, NULL},
    {"envoy.grpc_bridge_method", NULL, "cluster.*.grpc.*.$.**", NULL, NULL},
    {"envoy.http_user_agent", NULL, "http.*.user_agent.$.**", NULL, NULL},
    {"envoy.virtual_cluster", NULL, "vhost.*.vcluster.$.**", NULL, NULL},
    {"envoy.fault_downstream_cluster", NULL, "http.*.fault.$.**", NULL, NULL},
    {"envoy.ssl_cipher", "^listener\\..*?\\.ssl\\.ciphers(\\.([\\w-]+))$", NULL, ".ssl.ciphers.",
     NULL},
    {"envoy.ssl_curve", "^(?:listener|cluster)\\..*?\\.ssl\\.curves(\\.([\\w-]+))$", NULL,
     ".ssl.curves.", NULL},
    {"envoy.ssl_sigalg", "^(?:listener|cluster)\\..*?\\.ssl\\.sigalgs(\\.([\\w-]+))$", NULL,
     ".ssl.sigalgs.", NULL},
    {"envoy.ssl_version", "^(?:listener|cluster)\\..*?\\.ssl\\.versions(\\.(TLSv\\d\\.\\d))$", NULL,
     ".ssl.versions.", NULL},
    {"envoy.ssl_cipher_suite", "^cluster\\.[^\\.]+\\.ssl\\.ciphers(\\.([\\w-]+))$", NULL,
     ".ssl.ciphers.", NULL},
    {"envoy.grpc_bridge_service", NULL, "cluster.*.grpc.$.**", NULL, NULL},
    {"envoy.tcp_prefix", NULL, "tcp.$.**", NULL, NULL},
    {"envoy.udp_prefix", NULL, "udp.$.**", NULL, NULL},
    {"envoy.clientssl_prefix", NULL, "auth.clientssl.$.**", NULL, NULL},
    {"envoy.ratelimit_prefix", NULL, "ratelimit.$.**", NULL, NULL},
    {"envoy.cluster_name", NULL, "cluster.$.**", NULL, NULL},
    {"envoy.http_conn_manager_prefix", "^listener\\..*?\\.http\\.(([^\\.]+)\\.)", NULL, ".http.",
     NULL},
    {"envoy.ext_authz_prefix", NULL, "cluster.*.ext_authz.$.**", NULL, NULL},
    {"envoy.ext_authz_prefix", NULL, "http.*.ext_authz.$.**", NULL, NULL},
    {"envoy.http_conn_manager_prefix", NULL, "http.$.**", NULL, NULL},
    {"envoy.worker_id",
     "^(?:listener\\.(?:" ADDRESS "|[^\\.]+)\\.|server\\.|listener_manager\\.)worker_((\\d+)\\.)",
     NULL, "", NULL},
    {"envoy.listener_address", "^listener\\.((" ADDRESS "|[^\\.]+)\\.)", NULL, "", "admin"},
    {"envoy.virtual_host", NULL, "vhost.$.**", NULL, NULL},
    {"envoy.mongo_prefix", NULL, "mongo.$.**", NULL, NULL},
    {"envoy.rds_route_config", "^http\\.[^\\.]+\\.rds\\.(([\\w\\-\\.]+)\\.)\\w+?$", NULL, ".rds.",
     NULL},
    {"envoy.route", NULL, "vhost.*.route.$.**", NULL, NULL},
    {"envoy.thrift_prefix", NULL, "thrift.$.**", NULL, NULL},
    {"envoy.redis_prefix", NULL, "redis.$.**", NULL, NULL},
    {"envoy.local_http_ratelimit_prefix", NULL, "$.http_local_rate_limit.**", NULL, NULL},
    {"envoy.local_network_ratelimit_prefix", NULL, "local_rate_limit.$.**", NULL, NULL},
    {"envoy.local_listener_ratelimit_prefix", NULL, "listener_local_ratelimit.$.**", NULL, NULL},
    {"envoy.dns_filter_prefix", NULL, "dns_filter.$.**", NULL, NULL},
};
#define NDEFAULTS (sizeof(defaults) / sizeof(defaults[0]))

int pt_tag_is_default_name(const char *name)
{
    for (size_t i = 0; i < NDEFAULTS; i++)
        if (strcmp(defaults[i].name, name) == 0)
            return 1;
    return 0;
}

static void append(pt_tag_producer_t *p, extractor_t *e)
{
    if (e->kind == EX_FIXED) {
        *p->fixed_tail = e;
        p->fixed_tail = &e->next;
    } else {
        *p->tail = e;
        p->tail = &e->next;
    }
}

static int add_default(pt_tag_producer_t *p, const struct default_extractor *d, char *err,
                       size_t errlen)
{
    extractor_t *e = pt_arena_alloc(p->arena, sizeof(*e));
    if (e == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memset(e, 0, sizeof(*e));
    e->tag_name = d->name;
    if (d->tokens != NULL) {
        e->kind = EX_TOKENS;
        e->tokens = d->tokens;
    } else {
        e->kind = EX_REGEX;
        e->substr = d->substr;
        e->negative = d->negative;
        if ((e->re = pt_regex_compile(p->arena, d->regex, 0, err, errlen)) == NULL)
            return -1;
    }
    append(p, e);
    return 0;
}

pt_tag_producer_t *pt_tag_producer_new(pt_arena_t *a, int use_defaults)
{
    pt_tag_producer_t *p = pt_arena_alloc(a, sizeof(*p));
    if (p == NULL)
        return NULL;
    memset(p, 0, sizeof(*p));
    p->arena = a;
    p->tail = &p->first;
    p->fixed_tail = &p->fixed;
    char err[256];
    for (size_t i = 0; use_defaults && i < NDEFAULTS; i++)
        if (add_default(p, &defaults[i], err, sizeof(err)) != 0)
            return NULL;
    return p;
}

int pt_tag_producer_add(pt_tag_producer_t *p, const char *tag_name, const char *regex,
                        const char *fixed_value, char *err, size_t errlen)
{
    if (regex == NULL && fixed_value == NULL) {
        /* Envoy: a name alone means that default's extractor(s). */
        int found = 0;
        for (size_t i = 0; i < NDEFAULTS; i++) {
            if (strcmp(defaults[i].name, tag_name) != 0)
                continue;
            found = 1;
            if (add_default(p, &defaults[i], err, errlen) != 0)
                return -1;
        }
        if (!found)
            snprintf(err, errlen,
                     "has neither regex nor fixed_value, and is not one of Envoy's "
                     "default tag names");
        return found ? 0 : -1;
    }
    extractor_t *e = pt_arena_alloc(p->arena, sizeof(*e));
    const char *name = pt_arena_strdup(p->arena, tag_name);
    if (e == NULL || name == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memset(e, 0, sizeof(*e));
    e->tag_name = name;
    if (fixed_value != NULL) {
        e->kind = EX_FIXED;
        if ((e->tokens = pt_arena_strdup(p->arena, fixed_value)) == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    } else {
        e->kind = EX_REGEX;
        e->substr = "";
        char why[200];
        pt_regex_t *re = pt_regex_compile(p->arena, regex, 0, why, sizeof(why));
        if (re == NULL) {
            snprintf(err, errlen, "%s", why);
            return -1;
        }
        if (pt_regex_groups(re) == 0) {
            snprintf(err, errlen,
                     "has no capture group: the first one names the part of the "
                     "stat name that becomes the tag");
            return -1;
        }
        e->re = re;
    }
    append(p, e);
    return 0;
}

/* ---- extraction ----------------------------------------------------------------------- */

/* Removed byte ranges of the name, kept few: a name rarely has more than three tags. */
typedef struct cuts {
    unsigned n;
    size_t from[PT_STAT_TAGS_MAX], to[PT_STAT_TAGS_MAX];
} cuts_t;

static int has_tag(const pt_stat_tags_t *t, const char *name)
{
    for (unsigned i = 0; i < t->n; i++)
        if (strcmp(t->tag_name[i], name) == 0)
            return 1;
    return 0;
}

static size_t values_used(const pt_stat_tags_t *t)
{
    if (t->n == 0)
        return 0;
    const char *last = t->tag_value[t->n - 1];
    return (size_t)(last - t->values) + strlen(last) + 1;
}

static void add_tag(pt_stat_tags_t *t, const char *name, const char *v, size_t vlen)
{
    size_t used = values_used(t);
    if (t->n >= PT_STAT_TAGS_MAX || used + vlen + 1 > sizeof(t->values))
        return;
    memcpy(t->values + used, v, vlen);
    t->values[used + vlen] = '\0';
    t->tag_name[t->n] = name;
    t->tag_value[t->n] = t->values + used;
    t->n++;
}

/* Envoy's tokenized matcher: pattern and name are dot-separated tokens; `*` is any one
 * token, `**` one token or more, `$` any one token that is the tag's value. */
typedef struct span {
    size_t s, e;
} span_t;
#define MAX_TOKENS 64

static int split_tokens(const char *str, span_t *t)
{
    int n = 0;
    size_t i = 0, start = 0;
    for (;; i++) {
        if (str[i] == '.' || str[i] == '\0') {
            if (n == MAX_TOKENS)
                return -1;
            t[n].s = start;
            t[n].e = i;
            n++;
            if (str[i] == '\0')
                return n;
            start = i + 1;
        }
    }
}

static int tokens_rec(const char *pat, const span_t *pt, int np, int pi, const char *name,
                      const span_t *nt, int nn, int ni, int *value)
{
    if (pi == np)
        return ni == nn;
    size_t plen = pt[pi].e - pt[pi].s;
    const char *p = pat + pt[pi].s;
    if (plen == 2 && p[0] == '*' && p[1] == '*') {
        for (int k = ni + 1; k <= nn; k++)
            if (tokens_rec(pat, pt, np, pi + 1, name, nt, nn, k, value))
                return 1;
        return 0;
    }
    if (ni == nn)
        return 0;
    if (plen == 1 && p[0] == '$') {
        *value = ni;
    } else if (!(plen == 1 && p[0] == '*')) {
        size_t nlen = nt[ni].e - nt[ni].s;
        if (nlen != plen || memcmp(p, name + nt[ni].s, plen) != 0)
            return 0;
    }
    return tokens_rec(pat, pt, np, pi + 1, name, nt, nn, ni + 1, value);
}

/* Returns 1 with the value's span [*vs, *ve) and the span to remove: the value and the dot
 * after it (before it, for the last token). */
static int tokens_extract(const char *pat, const char *name, size_t *vs, size_t *ve, size_t *rs,
                          size_t *re)
{
    span_t pt[MAX_TOKENS], nt[MAX_TOKENS];
    int np = split_tokens(pat, pt), nn = split_tokens(name, nt), v = -1;
    if (np < 0 || nn < 0 || !tokens_rec(pat, pt, np, 0, name, nt, nn, 0, &v) || v < 0)
        return 0;
    *vs = nt[v].s;
    *ve = nt[v].e;
    if (v + 1 < nn) {
        *rs = *vs;
        *re = *ve + 1;
    } else {
        *rs = *vs > 0 ? *vs - 1 : *vs;
        *re = *ve;
    }
    return 1;
}

void pt_tag_producer_extract(const pt_tag_producer_t *p, const char *full_name, pt_stat_tags_t *out)
{
    out->n = 0;
    cuts_t cuts = {0};
    size_t len = strlen(full_name);
    for (const extractor_t *e = p != NULL ? p->fixed : NULL; e != NULL; e = e->next)
        if (!has_tag(out, e->tag_name))
            add_tag(out, e->tag_name, e->tokens, strlen(e->tokens));
    for (const extractor_t *e = p != NULL ? p->first : NULL; e != NULL; e = e->next) {
        if (has_tag(out, e->tag_name))
            continue;
        size_t vs, ve, rs, re;
        if (e->kind == EX_TOKENS) {
            if (!tokens_extract(e->tokens, full_name, &vs, &ve, &rs, &re))
                continue;
        } else {
            if (e->substr != NULL && e->substr[0] != '\0' && strstr(full_name, e->substr) == NULL)
                continue;
            size_t sp[4];
            if (!pt_regex_search_groups(e->re, full_name, len, sp, 2) || sp[0] == SIZE_MAX)
                continue;
            rs = sp[0], re = sp[1];
            if (sp[2] != SIZE_MAX)
                vs = sp[2], ve = sp[3];
            else
                vs = rs, ve = re;
            if (e->negative != NULL && strlen(e->negative) == ve - vs &&
                memcmp(full_name + vs, e->negative, ve - vs) == 0)
                continue;
        }
        add_tag(out, e->tag_name, full_name + vs, ve - vs);
        if (cuts.n < PT_STAT_TAGS_MAX) {
            cuts.from[cuts.n] = rs;
            cuts.to[cuts.n] = re;
            cuts.n++;
        }
    }
    /* The name without the union of the removed ranges. */
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < sizeof(out->name); i++) {
        int cut = 0;
        for (unsigned c = 0; c < cuts.n && !cut; c++)
            cut = i >= cuts.from[c] && i < cuts.to[c];
        if (!cut)
            out->name[o++] = full_name[i];
    }
    out->name[o] = '\0';
}

/* ---- the producer in force ---------------------------------------------------------- */

static pt_tag_producer_t *installed;
static pt_arena_t *installed_owner;
static pt_arena_t defaults_arena;
static pt_tag_producer_t *defaults_producer;

const pt_tag_producer_t *pt_stats_tags_current(void)
{
    if (installed != NULL)
        return installed;
    if (defaults_producer == NULL) {
        pt_arena_init_small(&defaults_arena);
        defaults_producer = pt_tag_producer_new(&defaults_arena, 1);
        /* Out of memory part way: free what was built, so the next call starts clean
         * (callers treat NULL as "no tags"). */
        if (defaults_producer == NULL)
            pt_arena_dispose(&defaults_arena);
    }
    return defaults_producer;
}

void pt_stats_tags_install(pt_tag_producer_t *p, pt_arena_t *owner)
{
    pt_arena_t *old = installed_owner;
    installed = p;
    installed_owner = owner;
    if (old != NULL) {
        pt_arena_dispose(old);
        free(old);
    }
}

void pt_stats_prom_sanitize(const char *in, char *out, size_t len)
{
    size_t o = 0;
    for (; *in != '\0' && o + 1 < len; in++) {
        char c = *in;
        int ok =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        out[o++] = ok ? c : '_';
    }
    if (len > 0)
        out[o] = '\0';
}
