/* Unit tests for filters/rbac: config errors with their exact messages, then evaluation
 * tables (one row per case) for actions, every permission and principal kind, and/or/not
 * nesting, CIDR edges, ports, headers, url_path, SPIFFE principal names; policy name order,
 * shadow rules, the denial details, the needs bits and the stats names. */
#include "filters/rbac.h"
#include "proxy/stats.h"
#include "pt_test.h"
#include "pt_test_stats.h"
#include "pt_test_json.h"

#include <arpa/inet.h>
#include <stdint.h>

/* Parses a filter typed_config (without @type); the config or NULL, errors checked by the
 * caller through *errs_ok against want (NULL = expect none). */
static pt_rbac_config_t *config_from(pt_arena_t *a, const char *json, pt_rbac_filter_kind_t kind,
                                     const char *const *want, int *errs_ok)
{
    static const char *const none[] = {NULL};
    json_t *root = J(json);
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    pt_rbac_config_t *c = pt_rbac_config_parse(&r, a, kind);
    pt_cfg_finish(&r);
    *errs_ok = errors_are(&r, want ? want : none);
    if (!pt_cfg_ok(&r))
        c = NULL;
    pt_cfg_dispose(&r);
    json_decref(root);
    return c;
}

/* Parses an envoy.config.rbac.v3.RBAC; NULL (errors printed) when it does not parse. */
static pt_rbac_rules_t *rules_from(pt_arena_t *a, const char *json, unsigned flags)
{
    json_t *root = J(json);
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    pt_rbac_rules_t *rules = pt_rbac_rules_parse(&r, a, flags);
    pt_cfg_finish(&r);
    if (!pt_cfg_ok(&r)) {
        for (size_t i = 0; i < r.nerrors; i++)
            fprintf(stderr, "  unexpected error: %s\n", r.errors[i]);
        rules = NULL;
    }
    pt_cfg_dispose(&r);
    json_decref(root);
    return rules;
}

/* ---- config errors ------------------------------------------------------------------- */

#define HTTP PT_RBAC_FILTER_HTTP
#define NET PT_RBAC_FILTER_NETWORK
#define E(...) ((const char *const[]){__VA_ARGS__, NULL})
/* One policy "p" with these permissions and principals (JSON array bodies). */
#define POL(perms, prins)                                                                      \
    "{'rules':{'policies':{'p':{'permissions':[" perms "],'principals':[" prins "]}}}}"
#define PP "rules.policies.p.permissions[0]"
#define PR "rules.policies.p.principals[0]"

static void test_config_errors(void)
{
    const struct {
        pt_rbac_filter_kind_t kind;
        const char *json;
        const char *const *want;
    } cases[] = {
        /* the action */
        {HTTP, "{'rules':{'action':'LOG'}}", E("rules.action: \"LOG\" is not supported")},
        {HTTP, "{'rules':{'action':'MAYBE'}}",
         E("rules.action: \"MAYBE\" is not a valid value (expected one of: ALLOW, DENY)")},
        {HTTP, "{'rules':{'audit_logging_options':{}}}",
         E("rules.audit_logging_options: field is not supported")},
        {HTTP, "{'rules':{'policies':[]}}", E("rules.policies: [] is not an object")},
        {HTTP, "{'rules':{'policies':{'p':3}}}", E("rules.policies.p: 3 is not an object")},
        /* policies */
        {HTTP, "{'rules':{'policies':{'p':{}}}}",
         E("rules.policies.p.permissions: is required",
           "rules.policies.p.principals: is required")},
        {HTTP, "{'rules':{'policies':{'p':{'permissions':[],'principals':[]}}}}",
         E("rules.policies.p.permissions: must not be empty",
           "rules.policies.p.principals: must not be empty")},
        {HTTP, "{'rules':{'policies':{'p':{'permissions':[{'any':true}],'principals':[{'any':"
               "true}],'condition':{}}}}}",
         E("rules.policies.p.condition: field is not supported")},
        {HTTP, "{'rules':{'policies':{'p':{'permissions':[{'any':true}],'principals':[{'any':"
               "true}],'checked_condition':{}}}}}",
         E("rules.policies.p.checked_condition: field is not supported")},
        {HTTP, "{'rules':{'policies':{'p':{'permissions':[{'any':true}],'principals':[{'any':"
               "true}],'colour':'red'}}}}",
         E("rules.policies.p.colour: unknown field")},
        /* permission kinds petrel does not support */
        {HTTP, POL("{'metadata':{'path':[{'key':'k'}],'value':{'present_match':true}}}",
                   "{'any':true}"),
         E(PP ".metadata.filter: is required (the metadata namespace)")},
        {HTTP, POL("{'matcher':{}}", "{'any':true}"), E(PP ".matcher: field is not supported")},
        {HTTP, POL("{'uri_template':{}}", "{'any':true}"),
         E(PP ".uri_template: field is not supported")},
        {HTTP, POL("{'sourced_metadata':{}}", "{'any':true}"),
         E(PP ".sourced_metadata.metadata_matcher: is required")},
        /* principal kinds petrel does not support */
        {HTTP, POL("{'any':true}", "{'metadata':{'filter':'f','path':[],'value':{'present_match':true}}}"),
         E(PR ".metadata.path: is required (at least one key)")},
        {HTTP, POL("{'any':true}", "{'filter_state':{}}"),
         E(PR ".filter_state: field is not supported")},
        {HTTP, POL("{'any':true}", "{'custom':{}}"), E(PR ".custom: field is not supported")},
        /* the oneof */
        {HTTP, POL("{}", "{'any':true}"),
         E(PP ": one of and_rules, or_rules, any, header, url_path, destination_ip, "
              "destination_port, destination_port_range, requested_server_name, not_rule, metadata "
              "or sourced_metadata is required")},
        {HTTP, POL("{'any':true}", "{}"),
         E(PR ": one of and_ids, or_ids, any, authenticated, source_ip, direct_remote_ip, "
              "remote_ip, header, url_path, not_id, metadata or sourced_metadata is required")},
        {HTTP, POL("{'any':true,'destination_port':80}", "{'any':true}"),
         E(PP ": only one of and_rules, or_rules, any, header, url_path, destination_ip, "
              "destination_port, destination_port_range, requested_server_name, not_rule, metadata, "
              "sourced_metadata may be given (found any, destination_port)")},
        {HTTP, POL("{'any':true}", "{'any':true,'remote_ip':{'address_prefix':'::1'}}"),
         E(PR ": only one of and_ids, or_ids, any, authenticated, source_ip, direct_remote_ip, "
              "remote_ip, header, url_path, not_id, metadata, sourced_metadata may be given (found any, "
              "remote_ip)")},
        {HTTP, POL("{'any':false}", "{'any':true}"), E(PP ".any: must be true")},
        {HTTP, POL("{'any':true,'bogus':1}", "{'any':true}"), E(PP ".bogus: unknown field")},
        /* sets */
        {HTTP, POL("{'and_rules':{'rules':[]}}", "{'any':true}"),
         E(PP ".and_rules.rules: must not be empty")},
        {HTTP, POL("{'or_rules':{}}", "{'any':true}"), E(PP ".or_rules.rules: is required")},
        {HTTP, POL("{'any':true}", "{'and_ids':{'ids':[]}}"),
         E(PR ".and_ids.ids: must not be empty")},
        {HTTP, POL("{'and_rules':{'rules':[{'any':true},{'not_rule':{'matcher':{}}}]}}",
                   "{'any':true}"),
         E(PP ".and_rules.rules[1].not_rule.matcher: field is not supported")},
        {HTTP, POL("{'any':true}", "{'or_ids':{'ids':[{'not_id':{'direct_remote_ip':{}}}]}}"),
         E(PR ".or_ids.ids[0].not_id.direct_remote_ip.address_prefix: is required")},
        /* CIDR ranges */
        {HTTP, POL("{'destination_ip':{'address_prefix':'10.0.0.0','prefix_len':33}}",
                   "{'any':true}"),
         E(PP ".destination_ip.prefix_len: 33 is out of range for an IPv4 address (at most 32)")},
        {HTTP, POL("{'any':true}", "{'remote_ip':{'address_prefix':'::','prefix_len':129}}"),
         E(PR ".remote_ip.prefix_len: 129 is out of range [0, 128]")},
        {HTTP, POL("{'any':true}", "{'source_ip':{'address_prefix':'example.com'}}"),
         E(PR ".source_ip.address_prefix: \"example.com\" is not an IP address")},
        {HTTP, POL("{'any':true}", "{'direct_remote_ip':{'address_prefix':'10.0.0.0/8'}}"),
         E(PR ".direct_remote_ip.address_prefix: \"10.0.0.0/8\" is not an IP address")},
        {HTTP, POL("{'destination_ip':{'address_prefix':''}}", "{'any':true}"),
         E(PP ".destination_ip.address_prefix: is required")},
        /* ports */
        {HTTP, POL("{'destination_port':65536}", "{'any':true}"),
         E(PP ".destination_port: 65536 is out of range [0, 65535]")},
        {HTTP, POL("{'destination_port_range':{'start':9000,'end':9000}}", "{'any':true}"),
         E(PP ".destination_port_range: start (9000) must be less than end (9000)")},
        {HTTP, POL("{'destination_port_range':{'start':-1,'end':70000}}", "{'any':true}"),
         E(PP ".destination_port_range.start: -1 is out of range [0, 65536]",
           PP ".destination_port_range.end: 70000 is out of range [0, 65536]")},
        {HTTP, POL("{'destination_port_range':{'start':'x','end':10}}", "{'any':true}"),
         E(PP ".destination_port_range.start: \"x\" is not an integer")},
        /* headers and paths */
        {HTTP, POL("{'header':{'exact_match':'GET'}}", "{'any':true}"),
         E(PP ".header.name: is required")},
        {HTTP, POL("{'header':{'name':'bad name'}}", "{'any':true}"),
         E(PP ".header.name: \"bad name\" is not a valid header name")},
        {HTTP, POL("{'header':{'name':'x','exact_match':'a','prefix_match':'b'}}", "{'any':true}"),
         E(PP ".header: only one of exact_match, safe_regex_match, range_match, present_match, "
              "prefix_match, suffix_match, contains_match, string_match may be given (found "
              "exact_match, prefix_match)")},
        {HTTP, POL("{'header':{'name':'x','prefix_match':''}}", "{'any':true}"),
         E(PP ".header.prefix_match: must not be empty")},
        {HTTP, POL("{'header':{'name':'x','string_match':{}}}", "{'any':true}"),
         E(PP ".header.string_match: one of exact, prefix, suffix, contains or safe_regex is "
              "required")},
        {HTTP, POL("{'url_path':{}}", "{'any':true}"), E(PP ".url_path.path: is required")},
        {HTTP, POL("{'any':true}", "{'url_path':{'path':{'exact':'/a'},'x':1}}"),
         E(PR ".url_path.x: unknown field")},
        {HTTP, POL("{'requested_server_name':{'safe_regex':{'regex':''}}}", "{'any':true}"),
         E(PP ".requested_server_name.safe_regex.regex: must not be empty")},
        {HTTP, POL("{'any':true}", "{'authenticated':{'principal_name':{}}}"),
         E(PR ".authenticated.principal_name: one of exact, prefix, suffix, contains or "
              "safe_regex is required")},
        /* filter-level fields: HTTP */
        {HTTP, "{'stat_prefix':'x'}", E("stat_prefix: unknown field")},
        {HTTP, "{'matcher':{}}", E("matcher: field is not supported")},
        {HTTP, "{'shadow_matcher':{}}", E("shadow_matcher: field is not supported")},
        {HTTP, "{'track_per_rule_stats':true}", E("track_per_rule_stats: true is not supported")},
        {HTTP, "{'enforcement_type':'CONTINUOUS'}", E("enforcement_type: unknown field")},
        {HTTP, "{'rules':[]}", E("rules: [] is not an object")},
        {HTTP, "{'shadow_rules':{'action':'LOG'}}",
         E("shadow_rules.action: \"LOG\" is not supported")},
        /* filter-level fields: network */
        {NET, "{}", E("stat_prefix: is required")},
        {NET, "{'stat_prefix':''}", E("stat_prefix: is required")},
        {NET, "{'stat_prefix':'t','rules_stat_prefix':'x'}", E("rules_stat_prefix: unknown field")},
        {NET, "{'stat_prefix':'t','delay_deny':'1s'}", E("delay_deny: field is not supported")},
        {NET, "{'stat_prefix':'t','enforcement_type':'SOMETIMES'}",
         E("enforcement_type: \"SOMETIMES\" is not a valid value (expected one of: "
           "ONE_TIME_ON_FIRST_BYTE, CONTINUOUS)")},
        {NET, "{'stat_prefix':'t','rules':{'policies':{'p':{'permissions':[{'header':{'name':"
              "':path','exact_match':'/'}}],'principals':[{'any':true}]}}}}",
         E(PP ".header: is not supported by the RBAC network filter (a connection has no HTTP "
              "headers)")},
        {NET, "{'stat_prefix':'t','shadow_rules':{'policies':{'p':{'permissions':[{'any':true}],"
              "'principals':[{'not_id':{'or_ids':{'ids':[{'header':{'name':'x'}}]}}}]}}}}",
         E("shadow_rules.policies.p.principals[0].not_id.or_ids.ids[0].header: is not supported "
           "by the RBAC network filter (a connection has no HTTP headers)")},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pt_arena_t a = {0};
        int ok;
        pt_rbac_config_t *c = config_from(&a, cases[i].json, cases[i].kind, cases[i].want, &ok);
        pt_arena_dispose(&a);
        if (!ok)
            fprintf(stderr, "  case %zu: %s\n", i, cases[i].json);
        PT_CHECK(ok);
        PT_CHECK(c == NULL);
    }
}

static void test_config_valid(void)
{
    static const struct {
        pt_rbac_filter_kind_t kind;
        const char *json;
    } cases[] = {
        {HTTP, "{}"},
        {HTTP, "{'rules':{}}"},
        {HTTP, "{'rules':{'action':'DENY','policies':{}}}"},
        {HTTP, "{'rulesStatPrefix':'r.','shadowRulesStatPrefix':'s','trackPerRuleStats':false}"},
        {HTTP, POL("{'notRule':{'urlPath':{'path':{'prefix':'/a'}}}}",
                   "{'directRemoteIp':{'addressPrefix':'127.0.0.1','prefixLen':32}}")},
        {HTTP, POL("{'header':{'name':':method'}}", "{'authenticated':{}}")},
        {HTTP, POL("{'destination_port_range':{'start':'0','end':'65536'}}",
                   "{'header':{'name':'x','range_match':{'start':'-5','end':5}}}")},
        {NET, "{'stat_prefix':'tcp.','enforcement_type':'CONTINUOUS'}"},
        {NET, "{'stat_prefix':'t','rules':{'policies':{'p':{'permissions':[{'url_path':{'path':"
              "{'exact':'/'}}}],'principals':[{'any':true}]}}}}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pt_arena_t a = {0};
        int ok;
        pt_rbac_config_t *c = config_from(&a, cases[i].json, cases[i].kind, NULL, &ok);
        int good = ok && c != NULL;
        pt_arena_dispose(&a);
        if (!good)
            fprintf(stderr, "  case %zu: %s\n", i, cases[i].json);
        PT_CHECK(good);
    }
}

/* ---- evaluation ---------------------------------------------------------------------- */

/* One request or connection, as a table row describes it. NULL fields are absent. */
typedef struct req {
    const char *method, *path;
    const char *hdrs;   /* extra headers "name: value|name: value" */
    const char *direct; /* the peer; default 127.0.0.1 */
    const char *remote; /* after x-forwarded-for; default = direct */
    const char *local;  /* default 127.0.0.1 */
    unsigned port;      /* local port; default 80 */
    const char *sni;
    const char *uri, *dns, *subject; /* peer certificate; any of them makes a peer */
    int unverified;
    int no_http; /* no header map at all (network filter) */
} req_t;

typedef struct built {
    pt_arena_t arena;
    pt_http_headers_t h;
    pt_peer_identity_t id;
    const char *uris[1], *dnss[1];
    pt_rbac_ctx_t ctx;
} built_t;

static void addr(pt_addr_t *out, const char *ip, unsigned port)
{
    if (pt_addr_parse(out, ip, port) != 0) {
        fprintf(stderr, "bad test address %s\n", ip);
        abort();
    }
}

static void build(built_t *b, const req_t *q)
{
    memset(b, 0, sizeof(*b));
    pt_rbac_ctx_t *c = &b->ctx;
    if (!q->no_http) {
        pt_http_headers_init(&b->h, &b->arena);
        if (q->method)
            pt_http_headers_add_str(&b->h, ":method", q->method);
        if (q->path)
            pt_http_headers_add_str(&b->h, ":path", q->path);
        pt_http_headers_add_str(&b->h, ":authority", "example.com");
        if (q->hdrs) {
            char *all = strdup(q->hdrs), *save = NULL;
            for (char *kv = strtok_r(all, "|", &save); kv; kv = strtok_r(NULL, "|", &save)) {
                char *colon = strchr(kv + 1, ':'); /* names may start with ':' */
                *colon = '\0';
                const char *v = colon + 1;
                while (*v == ' ')
                    v++;
                pt_http_headers_add_str(&b->h, kv, v);
            }
            free(all);
        }
        c->headers = &b->h;
    }
    addr(&c->direct_remote, q->direct ? q->direct : "127.0.0.1", 40000);
    addr(&c->remote, q->remote ? q->remote : q->direct ? q->direct : "127.0.0.1", 40000);
    addr(&c->local, q->local ? q->local : "127.0.0.1", q->port ? q->port : 80);
    c->requested_server_name = q->sni;
    if (q->uri || q->dns || q->subject) {
        if (q->uri) {
            b->uris[0] = q->uri;
            b->id.uri_sans = b->uris;
            b->id.nuri_sans = 1;
        }
        if (q->dns) {
            b->dnss[0] = q->dns;
            b->id.dns_sans = b->dnss;
            b->id.ndns_sans = 1;
        }
        b->id.subject = q->subject;
        b->id.verified = !q->unverified;
        c->peer = &b->id;
    }
}

/* 1 allowed / 0 denied, or -1 when the rules do not parse. */
static int check(const char *rules_json, const req_t *q, const char **policy, pt_arena_t *a)
{
    pt_rbac_rules_t *rules = rules_from(a, rules_json, 0);
    if (rules == NULL)
        return -1;
    built_t b;
    build(&b, q);
    int allowed = pt_rbac_rules_check(rules, &b.ctx, policy);
    pt_arena_dispose(&b.arena);
    return allowed;
}

/* A rule set of one policy "p" (ALLOW): allowed iff the policy matches. */
#define ALLOW1(perm, prin)                                                                     \
    "{'action':'ALLOW','policies':{'p':{'permissions':[" perm "],'principals':[" prin "]}}}"
#define ANY "{'any':true}"
#define R(...) ((req_t){__VA_ARGS__})

typedef struct row {
    const char *perm, *prin;
    req_t req;
    int want; /* 1: the policy matches */
} row_t;

static void run_rows(const row_t *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char json[2048];
        snprintf(json, sizeof(json),
                 "{'action':'ALLOW','policies':{'p':{'permissions':[%s],'principals':[%s]}}}",
                 rows[i].perm, rows[i].prin);
        pt_arena_t a = {0};
        const char *policy = "unset";
        int got = check(json, &rows[i].req, &policy, &a);
        int ok = got == rows[i].want &&
                 (got == 1 ? policy != NULL && strcmp(policy, "p") == 0 : policy == NULL);
        if (!ok)
            fprintf(stderr, "  row %zu: got %d (policy %s), want %d: %s / %s\n", i, got,
                    policy ? policy : "(none)", rows[i].want, rows[i].perm, rows[i].prin);
        pt_arena_dispose(&a);
        PT_CHECK(ok);
    }
}

static void test_permissions_headers(void)
{
    static const row_t rows[] = {
        {ANY, ANY, R(.method = "GET"), 1},
        {ANY, ANY, R(.no_http = 1), 1},
        {"{'header':{'name':':method','exact_match':'GET'}}", ANY, R(.method = "GET"), 1},
        {"{'header':{'name':':method','exact_match':'GET'}}", ANY, R(.method = "POST"), 0},
        {"{'header':{'name':':method','exact_match':'GET'}}", ANY, R(.method = "get"), 0},
        {"{'header':{'name':':method','string_match':{'exact':'get','ignore_case':true}}}", ANY,
         R(.method = "GET"), 1},
        {"{'header':{'name':'X-Env','prefix_match':'prod'}}", ANY, R(.hdrs = "x-env: production"), 1},
        {"{'header':{'name':'x-env','prefix_match':'prod'}}", ANY, R(.hdrs = "x-env: staging"), 0},
        {"{'header':{'name':'x-env','prefix_match':'prod'}}", ANY, R(), 0},
        {"{'header':{'name':'x-env','suffix_match':'-eu'}}", ANY, R(.hdrs = "x-env: prod-eu"), 1},
        {"{'header':{'name':'x-env','suffix_match':'-eu'}}", ANY, R(.hdrs = "x-env: eu"), 0},
        {"{'header':{'name':'x-env','contains_match':'od'}}", ANY, R(.hdrs = "x-env: prod"), 1},
        {"{'header':{'name':'x-ver','safe_regex_match':{'regex':'v[0-9]+'}}}", ANY,
         R(.hdrs = "x-ver: v12"), 1},
        {"{'header':{'name':'x-ver','safe_regex_match':{'regex':'v[0-9]+'}}}", ANY,
         R(.hdrs = "x-ver: v12a"), 0}, /* a full match, not a search */
        {"{'header':{'name':'x-n','range_match':{'start':10,'end':20}}}", ANY, R(.hdrs = "x-n: 10"), 1},
        {"{'header':{'name':'x-n','range_match':{'start':10,'end':20}}}", ANY, R(.hdrs = "x-n: 19"), 1},
        {"{'header':{'name':'x-n','range_match':{'start':10,'end':20}}}", ANY, R(.hdrs = "x-n: 20"), 0},
        {"{'header':{'name':'x-n','range_match':{'start':10,'end':20}}}", ANY, R(.hdrs = "x-n: 1x"), 0},
        {"{'header':{'name':'x-n','range_match':{'start':-5,'end':0}}}", ANY, R(.hdrs = "x-n: -5"), 1},
        {"{'header':{'name':'x-a','present_match':true}}", ANY, R(.hdrs = "x-a: "), 1},
        {"{'header':{'name':'x-a','present_match':true}}", ANY, R(), 0},
        {"{'header':{'name':'x-a','present_match':false}}", ANY, R(), 1},
        {"{'header':{'name':'x-a','present_match':false}}", ANY, R(.hdrs = "x-a: 1"), 0},
        {"{'header':{'name':'x-a','present_match':true,'invert_match':true}}", ANY, R(), 1},
        {"{'header':{'name':'x-a'}}", ANY, R(.hdrs = "x-a: anything"), 1}, /* no specifier */
        {"{'header':{'name':'x-a'}}", ANY, R(), 0},
        /* no specifier is a presence check, so inverted it asks for absence (Envoy) */
        {"{'header':{'name':'x-a','invert_match':true}}", ANY, R(), 1},
        {"{'header':{'name':'x-a','invert_match':true}}", ANY, R(.hdrs = "x-a: 1"), 0},
        /* invert_match: a missing header still fails (Envoy) */
        {"{'header':{'name':':method','exact_match':'GET','invert_match':true}}", ANY,
         R(.method = "POST"), 1},
        {"{'header':{'name':':method','exact_match':'GET','invert_match':true}}", ANY,
         R(.method = "GET"), 0},
        {"{'header':{'name':'x-a','exact_match':'1','invert_match':true}}", ANY, R(), 0},
        /* treat_missing_header_as_empty */
        {"{'header':{'name':'x-a','string_match':{'exact':''},'treat_missing_header_as_empty':"
         "true}}", ANY, R(), 1},
        {"{'header':{'name':'x-a','prefix_match':'a','invert_match':true,"
         "'treat_missing_header_as_empty':true}}", ANY, R(), 1},
        /* ... a presence check then answers present_match != invert_match (Envoy) */
        {"{'header':{'name':'x-a','present_match':true,'treat_missing_header_as_empty':true}}",
         ANY, R(), 1},
        {"{'header':{'name':'x-a','present_match':false,'treat_missing_header_as_empty':true}}",
         ANY, R(), 0},
        /* several values are joined with ',' */
        {"{'header':{'name':'x-a','exact_match':'1,2'}}", ANY, R(.hdrs = "x-a: 1|x-a: 2"), 1},
        {"{'header':{'name':'x-a','exact_match':'1'}}", ANY, R(.hdrs = "x-a: 1|x-a: 2"), 0},
        /* :path as a header keeps the query string */
        {"{'header':{'name':':path','exact_match':'/admin'}}", ANY, R(.path = "/admin?x=1"), 0},
        {"{'header':{'name':':path','exact_match':'/admin?x=1'}}", ANY, R(.path = "/admin?x=1"), 1},
        /* no HTTP at all: header matchers see an empty map */
        {"{'header':{'name':'x-a','present_match':false}}", ANY, R(.no_http = 1), 1},
        {"{'header':{'name':':method','exact_match':'GET'}}", ANY, R(.no_http = 1), 0},
    };
    run_rows(rows, sizeof(rows) / sizeof(rows[0]));
}

static void test_permissions_url_path(void)
{
    static const row_t rows[] = {
        {"{'url_path':{'path':{'exact':'/admin'}}}", ANY, R(.path = "/admin"), 1},
        {"{'url_path':{'path':{'exact':'/admin'}}}", ANY, R(.path = "/admin?x=1"), 1},
        {"{'url_path':{'path':{'exact':'/admin'}}}", ANY, R(.path = "/admin#frag"), 1},
        {"{'url_path':{'path':{'exact':'/admin'}}}", ANY, R(.path = "/admin/x"), 0},
        {"{'url_path':{'path':{'exact':'/admin'}}}", ANY, R(.path = "/Admin"), 0},
        {"{'url_path':{'path':{'exact':'/ADMIN','ignore_case':true}}}", ANY, R(.path = "/admin"), 1},
        {"{'url_path':{'path':{'prefix':'/api/'}}}", ANY, R(.path = "/api/v1"), 1},
        {"{'url_path':{'path':{'prefix':'/api/'}}}", ANY, R(.path = "/api"), 0},
        {"{'url_path':{'path':{'suffix':'.json'}}}", ANY, R(.path = "/a.json?b.html"), 1},
        {"{'url_path':{'path':{'safe_regex':{'regex':'/users/[0-9]+'}}}}", ANY,
         R(.path = "/users/42?x=y"), 1},
        {"{'url_path':{'path':{'safe_regex':{'regex':'/users/[0-9]+'}}}}", ANY,
         R(.path = "/users/42/x"), 0},
        {"{'url_path':{'path':{'prefix':'/'}}}", ANY, R(), 0},           /* no :path */
        {"{'url_path':{'path':{'prefix':'/'}}}", ANY, R(.no_http = 1), 0}, /* network */
        {"{'not_rule':{'url_path':{'path':{'prefix':'/'}}}}", ANY, R(.no_http = 1), 1},
    };
    run_rows(rows, sizeof(rows) / sizeof(rows[0]));
}

static void test_permissions_sets(void)
{
    static const row_t rows[] = {
        {"{'and_rules':{'rules':[{'header':{'name':':method','exact_match':'GET'}},{'url_path':"
         "{'path':{'prefix':'/api'}}}]}}", ANY, R(.method = "GET", .path = "/api/x"), 1},
        {"{'and_rules':{'rules':[{'header':{'name':':method','exact_match':'GET'}},{'url_path':"
         "{'path':{'prefix':'/api'}}}]}}", ANY, R(.method = "POST", .path = "/api/x"), 0},
        {"{'and_rules':{'rules':[{'header':{'name':':method','exact_match':'GET'}},{'url_path':"
         "{'path':{'prefix':'/api'}}}]}}", ANY, R(.method = "GET", .path = "/web"), 0},
        {"{'or_rules':{'rules':[{'destination_port':80},{'destination_port':443}]}}", ANY,
         R(.port = 443), 1},
        {"{'or_rules':{'rules':[{'destination_port':80},{'destination_port':443}]}}", ANY,
         R(.port = 8080), 0},
        {"{'not_rule':{'url_path':{'path':{'prefix':'/admin'}}}}", ANY, R(.path = "/admin/x"), 0},
        {"{'not_rule':{'url_path':{'path':{'prefix':'/admin'}}}}", ANY, R(.path = "/x"), 1},
        {"{'not_rule':{'not_rule':{'any':true}}}", ANY, R(), 1},
        {"{'not_rule':{'any':true}}", ANY, R(), 0},
        /* GET anywhere but /admin, or anything on port 8443 */
        {"{'or_rules':{'rules':[{'and_rules':{'rules':[{'header':{'name':':method',"
         "'exact_match':'GET'}},{'not_rule':{'url_path':{'path':{'prefix':'/admin'}}}}]}},"
         "{'destination_port':8443}]}}", ANY, R(.method = "GET", .path = "/x"), 1},
        {"{'or_rules':{'rules':[{'and_rules':{'rules':[{'header':{'name':':method',"
         "'exact_match':'GET'}},{'not_rule':{'url_path':{'path':{'prefix':'/admin'}}}}]}},"
         "{'destination_port':8443}]}}", ANY, R(.method = "GET", .path = "/admin"), 0},
        {"{'or_rules':{'rules':[{'and_rules':{'rules':[{'header':{'name':':method',"
         "'exact_match':'GET'}},{'not_rule':{'url_path':{'path':{'prefix':'/admin'}}}}]}},"
         "{'destination_port':8443}]}}", ANY, R(.method = "GET", .path = "/admin", .port = 8443), 1},
        /* a policy's permissions are ORed, its principals too, and the two ANDed */
        {"{'destination_port':1},{'destination_port':80}", ANY, R(), 1},
        {"{'destination_port':1},{'destination_port':2}", ANY, R(), 0},
        {ANY, "{'not_id':{'any':true}},{'direct_remote_ip':{'address_prefix':'127.0.0.1'}}", R(), 1},
        {"{'destination_port':1}", ANY, R(), 0},
        {ANY, "{'not_id':{'any':true}}", R(), 0},
    };
    run_rows(rows, sizeof(rows) / sizeof(rows[0]));
}

#define DIP(prefix, len) "{'destination_ip':{'address_prefix':'" prefix "','prefix_len':" #len "}}"

static void test_permissions_destination(void)
{
    static const row_t rows[] = {
        {DIP("10.0.0.0", 8), ANY, R(.local = "10.1.2.3"), 1},
        {DIP("10.0.0.0", 8), ANY, R(.local = "11.0.0.1"), 0},
        {DIP("10.1.2.3", 8), ANY, R(.local = "10.200.0.1"), 1}, /* host bits ignored */
        {DIP("192.168.1.1", 32), ANY, R(.local = "192.168.1.1"), 1},
        {DIP("192.168.1.1", 32), ANY, R(.local = "192.168.1.2"), 0},
        {DIP("0.0.0.0", 0), ANY, R(.local = "203.0.113.9"), 1},
        {DIP("0.0.0.0", 0), ANY, R(.local = "::1"), 0}, /* another family */
        {"{'destination_ip':{'address_prefix':'1.2.3.4'}}", ANY, R(.local = "9.9.9.9"), 1},
        {DIP("192.168.1.0", 31), ANY, R(.local = "192.168.1.1"), 1},
        {DIP("192.168.1.0", 31), ANY, R(.local = "192.168.1.2"), 0},
        {DIP("192.168.1.128", 25), ANY, R(.local = "192.168.1.200"), 1},
        {DIP("192.168.1.128", 25), ANY, R(.local = "192.168.1.127"), 0},
        {DIP("128.0.0.0", 1), ANY, R(.local = "200.0.0.1"), 1},
        {DIP("128.0.0.0", 1), ANY, R(.local = "127.255.255.255"), 0},
        {DIP("::1", 128), ANY, R(.local = "::1"), 1},
        {DIP("::1", 128), ANY, R(.local = "::2"), 0},
        {DIP("::", 0), ANY, R(.local = "2001:db8::1"), 1},
        {DIP("::", 0), ANY, R(.local = "127.0.0.1"), 0},
        {DIP("2001:db8:1:2::", 64), ANY, R(.local = "2001:db8:1:2:ffff::1"), 1},
        {DIP("2001:db8:1:2::", 64), ANY, R(.local = "2001:db8:1:3::1"), 0},
        {DIP("2001:db8::", 127), ANY, R(.local = "2001:db8::1"), 1},
        {DIP("2001:db8::", 127), ANY, R(.local = "2001:db8::2"), 0},
        {DIP("8000::", 1), ANY, R(.local = "ffff::"), 1},
        {DIP("8000::", 1), ANY, R(.local = "7fff::"), 0},
        {DIP("10.0.0.0", 8), ANY, R(.local = "::ffff:10.0.0.1"), 0}, /* v4-mapped: v6 */
        {"{'destination_port':8080}", ANY, R(.port = 8080), 1},
        {"{'destination_port':8080}", ANY, R(.port = 8081), 0},
        {"{'destination_port_range':{'start':8000,'end':9000}}", ANY, R(.port = 8000), 1},
        {"{'destination_port_range':{'start':8000,'end':9000}}", ANY, R(.port = 8999), 1},
        {"{'destination_port_range':{'start':8000,'end':9000}}", ANY, R(.port = 9000), 0},
        {"{'destination_port_range':{'start':8000,'end':9000}}", ANY, R(.port = 7999), 0},
        {"{'destination_port_range':{'start':0,'end':65536}}", ANY, R(.port = 65535), 1},
        {"{'requested_server_name':{'exact':'api.example.com'}}", ANY,
         R(.sni = "api.example.com"), 1},
        {"{'requested_server_name':{'exact':'api.example.com'}}", ANY, R(.sni = "www.example.com"), 0},
        {"{'requested_server_name':{'exact':'api.example.com'}}", ANY, R(), 0},
        {"{'requested_server_name':{'suffix':'.example.com'}}", ANY, R(.sni = "a.example.com"), 1},
        {"{'requested_server_name':{'exact':''}}", ANY, R(), 1}, /* no SNI is "" */
    };
    run_rows(rows, sizeof(rows) / sizeof(rows[0]));
}

#define FRONTEND "spiffe://cluster.local/ns/default/sa/frontend"
#define AUTH(m) "{'authenticated':{'principal_name':" m "}}"

static void test_principals(void)
{
    static const row_t rows[] = {
        {ANY, ANY, R(.direct = "10.9.9.9"), 1},
        /* addresses: direct (the peer) and remote (after x-forwarded-for) differ */
        {ANY, "{'direct_remote_ip':{'address_prefix':'127.0.0.1','prefix_len':32}}", R(), 1},
        {ANY, "{'direct_remote_ip':{'address_prefix':'127.0.0.1','prefix_len':32}}",
         R(.direct = "127.0.0.2"), 0},
        {ANY, "{'direct_remote_ip':{'address_prefix':'10.0.0.0','prefix_len':8}}",
         R(.direct = "127.0.0.1", .remote = "10.1.2.3"), 0},
        {ANY, "{'remote_ip':{'address_prefix':'10.0.0.0','prefix_len':8}}",
         R(.direct = "127.0.0.1", .remote = "10.1.2.3"), 1},
        {ANY, "{'remote_ip':{'address_prefix':'10.0.0.0','prefix_len':8}}",
         R(.direct = "10.1.2.3", .remote = "192.0.2.1"), 0},
        {ANY, "{'source_ip':{'address_prefix':'127.0.0.1','prefix_len':32}}",
         R(.direct = "127.0.0.1", .remote = "10.1.2.3"), 1}, /* source_ip is the peer */
        {ANY, "{'direct_remote_ip':{'address_prefix':'::1','prefix_len':128}}", R(.direct = "::1"), 1},
        /* authenticated: URI SAN (SPIFFE), then DNS SAN, then subject */
        {ANY, AUTH("{'exact':'" FRONTEND "'}"), R(.uri = FRONTEND), 1},
        {ANY, AUTH("{'exact':'" FRONTEND "'}"),
         R(.uri = "spiffe://cluster.local/ns/default/sa/backend"), 0},
        {ANY, AUTH("{'exact':'" FRONTEND "'}"), R(.uri = FRONTEND, .unverified = 1), 0},
        {ANY, AUTH("{'exact':'" FRONTEND "'}"), R(), 0}, /* no certificate */
        {ANY, AUTH("{'prefix':'spiffe://cluster.local/ns/default/'}"), R(.uri = FRONTEND), 1},
        {ANY, AUTH("{'prefix':'spiffe://cluster.local/ns/default/'}"),
         R(.uri = "spiffe://cluster.local/ns/prod/sa/frontend"), 0},
        {ANY, AUTH("{'safe_regex':{'regex':'spiffe://cluster\\\\.local/ns/[^/]+/sa/frontend'}}"),
         R(.uri = "spiffe://cluster.local/ns/prod/sa/frontend"), 1},
        {ANY, AUTH("{'safe_regex':{'regex':'spiffe://cluster\\\\.local/ns/[^/]+/sa/frontend'}}"),
         R(.uri = "spiffe://cluster.local/ns/prod/sa/frontend/x"), 0},
        {ANY, AUTH("{'safe_regex':{'regex':'spiffe://cluster\\\\.local/ns/[^/]+/sa/frontend'}}"),
         R(.uri = "spiffe://clusterXlocal/ns/prod/sa/frontend"), 0},
        {ANY, AUTH("{'exact':'frontend.default.svc'}"), R(.dns = "frontend.default.svc"), 1},
        {ANY, AUTH("{'exact':'frontend.default.svc'}"),
         R(.uri = FRONTEND, .dns = "frontend.default.svc"), 1},
        {ANY, AUTH("{'exact':'CN=frontend,O=acme'}"), R(.subject = "CN=frontend,O=acme"), 1},
        {ANY, AUTH("{'exact':'CN=frontend,O=acme'}"),
         R(.uri = FRONTEND, .subject = "CN=frontend,O=acme"), 1},
        {ANY, "{'authenticated':{}}", R(.uri = FRONTEND), 1},
        {ANY, "{'authenticated':{}}", R(.subject = "CN=x"), 1},
        {ANY, "{'authenticated':{}}", R(.uri = FRONTEND, .unverified = 1), 0},
        {ANY, "{'authenticated':{}}", R(), 0},
        /* header and url_path as principals */
        {ANY, "{'header':{'name':'x-user','exact_match':'alice'}}", R(.hdrs = "x-user: alice"), 1},
        {ANY, "{'header':{'name':'x-user','exact_match':'alice'}}", R(.hdrs = "x-user: bob"), 0},
        {ANY, "{'url_path':{'path':{'prefix':'/public'}}}", R(.path = "/public/a"), 1},
        /* sets */
        {ANY, "{'and_ids':{'ids':[{'direct_remote_ip':{'address_prefix':'127.0.0.0','prefix_len':"
              "8}},{'header':{'name':'x-user','exact_match':'alice'}}]}}",
         R(.hdrs = "x-user: alice"), 1},
        {ANY, "{'and_ids':{'ids':[{'direct_remote_ip':{'address_prefix':'127.0.0.0','prefix_len':"
              "8}},{'header':{'name':'x-user','exact_match':'alice'}}]}}",
         R(.direct = "10.0.0.1", .hdrs = "x-user: alice"), 0},
        {ANY, "{'or_ids':{'ids':[" AUTH("{'exact':'" FRONTEND "'}") ",{'remote_ip':"
              "{'address_prefix':'10.0.0.0','prefix_len':8}}]}}", R(.remote = "10.0.0.7"), 1},
        {ANY, "{'or_ids':{'ids':[" AUTH("{'exact':'" FRONTEND "'}") ",{'remote_ip':"
              "{'address_prefix':'10.0.0.0','prefix_len':8}}]}}", R(.uri = FRONTEND), 1},
        {ANY, "{'or_ids':{'ids':[" AUTH("{'exact':'" FRONTEND "'}") ",{'remote_ip':"
              "{'address_prefix':'10.0.0.0','prefix_len':8}}]}}", R(), 0},
        {ANY, "{'not_id':{'direct_remote_ip':{'address_prefix':'10.0.0.0','prefix_len':8}}}", R(), 1},
        {ANY, "{'not_id':{'direct_remote_ip':{'address_prefix':'10.0.0.0','prefix_len':8}}}",
         R(.direct = "10.0.0.1"), 0},
        {ANY, "{'not_id':{'authenticated':{}}}", R(), 1},
    };
    run_rows(rows, sizeof(rows) / sizeof(rows[0]));
}

static void test_actions(void)
{
    static const struct {
        const char *json;
        req_t req;
        int allowed;
        const char *policy;
    } cases[] = {
        /* ALLOW: allowed iff some policy matches */
        {ALLOW1("{'url_path':{'path':{'prefix':'/public'}}}", ANY), R(.path = "/public/x"), 1, "p"},
        {ALLOW1("{'url_path':{'path':{'prefix':'/public'}}}", ANY), R(.path = "/private"), 0, NULL},
        /* DENY: denied iff some policy matches */
        {"{'action':'DENY','policies':{'p':{'permissions':[{'url_path':{'path':{'prefix':"
         "'/admin'}}}],'principals':[" ANY "]}}}", R(.path = "/admin"), 0, "p"},
        {"{'action':'DENY','policies':{'p':{'permissions':[{'url_path':{'path':{'prefix':"
         "'/admin'}}}],'principals':[" ANY "]}}}", R(.path = "/x"), 1, NULL},
        /* ALLOW is the default action */
        {"{'policies':{'p':{'permissions':[" ANY "],'principals':[" ANY "]}}}", R(), 1, "p"},
        /* no policies: ALLOW denies everything, DENY allows everything */
        {"{'action':'ALLOW'}", R(), 0, NULL},
        {"{'action':'ALLOW','policies':{}}", R(), 0, NULL},
        {"{'action':'DENY'}", R(), 1, NULL},
        /* policy order: byte order of the names, first match wins */
        {"{'policies':{'b':{'permissions':[" ANY "],'principals':[" ANY "]},'a':{'permissions':["
         ANY "],'principals':[" ANY "]}}}", R(), 1, "a"},
        {"{'policies':{'a':{'permissions':[{'destination_port':1}],'principals':[" ANY "]},"
         "'zeta':{'permissions':[" ANY "],'principals':[" ANY "]}}}", R(), 1, "zeta"},
        {"{'policies':{'a':{'permissions':[" ANY "],'principals':[" ANY "]},'B':{'permissions':["
         ANY "],'principals':[" ANY "]}}}", R(), 1, "B"},
        {"{'policies':{'a9':{'permissions':[" ANY "],'principals':[" ANY "]},'a10':{'permissions':"
         "[" ANY "],'principals':[" ANY "]}}}", R(), 1, "a10"},
        {"{'action':'DENY','policies':{'z-deny':{'permissions':[" ANY "],'principals':[" ANY "]},"
         "'m-deny':{'permissions':[{'url_path':{'path':{'prefix':'/a'}}}],'principals':[" ANY
         "]}}}", R(.path = "/a"), 0, "m-deny"},
        {"{'action':'DENY','policies':{'z-deny':{'permissions':[" ANY "],'principals':[" ANY "]},"
         "'m-deny':{'permissions':[{'url_path':{'path':{'prefix':'/a'}}}],'principals':[" ANY
         "]}}}", R(.path = "/b"), 0, "z-deny"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pt_arena_t a = {0};
        const char *policy = "unset";
        int got = check(cases[i].json, &cases[i].req, &policy, &a);
        int ok = got == cases[i].allowed &&
                 (cases[i].policy ? policy && strcmp(policy, cases[i].policy) == 0
                                  : policy == NULL);
        if (!ok)
            fprintf(stderr, "  case %zu: got %d policy %s: %s\n", i, got,
                    policy ? policy : "(none)", cases[i].json);
        pt_arena_dispose(&a);
        PT_CHECK(ok);
    }
}

/* A map larger than the config reader's per-object field table: every policy is read, and
 * the first in name order wins. */
static void test_many_policies(void)
{
    char *json = malloc(64 * 1024);
    size_t o = (size_t)sprintf(json, "{'action':'DENY','policies':{");
    for (int i = 199; i >= 0; i--)
        o += (size_t)sprintf(json + o, "%s'pol-%03d':{'permissions':[{'destination_port':%d}],"
                                       "'principals':[" ANY "]}",
                             i == 199 ? "" : ",", i, 1000 + i % 100);
    sprintf(json + o, "}}");
    pt_arena_t a = {0};
    pt_rbac_rules_t *rules = rules_from(&a, json, 0);
    free(json);
    PT_CHECK(rules != NULL);
    PT_CHECK_INT(pt_rbac_rules_npolicies(rules), 200);
    PT_CHECK_INT(pt_rbac_rules_action(rules), PT_RBAC_ACTION_DENY);
    built_t b;
    build(&b, &R(.port = 1042));
    const char *policy = NULL;
    PT_CHECK_INT(pt_rbac_rules_check(rules, &b.ctx, &policy), 0);
    PT_CHECK_STR(policy, "pol-042"); /* pol-142 matches too, and comes later */
    pt_arena_dispose(&b.arena);
    build(&b, &R(.port = 999));
    PT_CHECK_INT(pt_rbac_rules_check(rules, &b.ctx, &policy), 1);
    PT_CHECK(policy == NULL);
    pt_arena_dispose(&b.arena);
    pt_arena_dispose(&a);
}

/* ---- filter configs: shadow rules, details, needs ------------------------------------ */

/* Parses a filter config into a (policy names and details live there) and evaluates q. */
static void eval_config(pt_arena_t *a, const char *json, pt_rbac_filter_kind_t kind,
                        const req_t *q, pt_rbac_result_t *res, unsigned *needs)
{
    int ok;
    pt_rbac_config_t *c = config_from(a, json, kind, NULL, &ok);
    memset(res, 0xff, sizeof(*res));
    if (c == NULL) {
        fprintf(stderr, "  does not parse: %s\n", json);
        abort();
    }
    built_t b;
    build(&b, q);
    pt_rbac_evaluate(c, &b.ctx, res);
    if (needs)
        *needs = c->needs;
    pt_arena_dispose(&b.arena);
}

static void test_shadow(void)
{
    pt_arena_t a = {0};
    pt_rbac_result_t res;
    /* enforced ALLOW matches, shadow DENY matches: allowed, shadow denied */
    eval_config(&a, "{'rules':{'policies':{'allow-all':{'permissions':[" ANY "],'principals':[" ANY
                "]}}},'shadow_rules':{'action':'DENY','policies':{'no admin':{'permissions':["
                "{'url_path':{'path':{'prefix':'/admin'}}}],'principals':[" ANY "]}}}}",
                HTTP, &R(.path = "/admin/x"), &res, NULL);
    PT_CHECK_INT(res.enforced.verdict, PT_RBAC_ALLOWED);
    PT_CHECK_STR(res.enforced.policy, "allow-all");
    PT_CHECK_INT(res.shadow.verdict, PT_RBAC_DENIED);
    PT_CHECK_STR(res.shadow.policy, "no admin");
    PT_CHECK_STR(res.shadow.details, "rbac_access_denied_matched_policy[no_admin]");
    /* the same request elsewhere: shadow allows, no policy matched */
    eval_config(&a, "{'rules':{'policies':{'allow-all':{'permissions':[" ANY "],'principals':[" ANY
                "]}}},'shadow_rules':{'action':'DENY','policies':{'no admin':{'permissions':["
                "{'url_path':{'path':{'prefix':'/admin'}}}],'principals':[" ANY "]}}}}",
                HTTP, &R(.path = "/x"), &res, NULL);
    PT_CHECK_INT(res.enforced.verdict, PT_RBAC_ALLOWED);
    PT_CHECK_INT(res.shadow.verdict, PT_RBAC_ALLOWED);
    PT_CHECK(res.shadow.policy == NULL);
    /* shadow rules only: nothing enforced */
    eval_config(&a, "{'shadow_rules':{'action':'ALLOW'}}", HTTP, &R(), &res, NULL);
    PT_CHECK_INT(res.enforced.verdict, PT_RBAC_NO_RULES);
    PT_CHECK_INT(res.shadow.verdict, PT_RBAC_DENIED);
    PT_CHECK_STR(res.shadow.details, "rbac_access_denied_matched_policy[none]");
    /* enforced deny, shadow allow: independent */
    eval_config(&a, "{'rules':{'action':'DENY','policies':{'deny\\tall':{'permissions':[" ANY
                "],'principals':[" ANY "]}}},'shadow_rules':{'action':'DENY'}}",
                HTTP, &R(), &res, NULL);
    PT_CHECK_INT(res.enforced.verdict, PT_RBAC_DENIED);
    PT_CHECK_STR(res.enforced.policy, "deny\tall");
    PT_CHECK_STR(res.enforced.details, "rbac_access_denied_matched_policy[deny_all]");
    PT_CHECK_INT(res.shadow.verdict, PT_RBAC_ALLOWED);
    /* ALLOW without a match: denied, details name no policy */
    eval_config(&a, "{'rules':{'policies':{'p':{'permissions':[{'destination_port':1}],"
                "'principals':[" ANY "]}}}}", HTTP, &R(), &res, NULL);
    PT_CHECK_INT(res.enforced.verdict, PT_RBAC_DENIED);
    PT_CHECK(res.enforced.policy == NULL);
    PT_CHECK_STR(res.enforced.details, "rbac_access_denied_matched_policy[none]");
    PT_CHECK_INT(res.shadow.verdict, PT_RBAC_NO_RULES);
    /* no rules at all */
    eval_config(&a, "{}", HTTP, &R(), &res, NULL);
    PT_CHECK_INT(res.enforced.verdict, PT_RBAC_NO_RULES);
    PT_CHECK_INT(res.shadow.verdict, PT_RBAC_NO_RULES);
    eval_config(&a, "{'stat_prefix':'t'}", NET, &R(.no_http = 1), &res, NULL);
    PT_CHECK_INT(res.enforced.verdict, PT_RBAC_NO_RULES);
    /* network: connection facts only */
    eval_config(&a, "{'stat_prefix':'t','rules':{'policies':{'local':{'permissions':[{'destination_"
                "port':80}],'principals':[{'direct_remote_ip':{'address_prefix':'127.0.0.0',"
                "'prefix_len':8}}]}}}}", NET, &R(.no_http = 1, .direct = "10.0.0.1"), &res, NULL);
    PT_CHECK_INT(res.enforced.verdict, PT_RBAC_DENIED);
    eval_config(&a, "{'stat_prefix':'t','rules':{'policies':{'local':{'permissions':[{'destination_"
                "port':80}],'principals':[{'direct_remote_ip':{'address_prefix':'127.0.0.0',"
                "'prefix_len':8}}]}}}}", NET, &R(.no_http = 1), &res, NULL);
    PT_CHECK_INT(res.enforced.verdict, PT_RBAC_ALLOWED);
    PT_CHECK_STR(res.enforced.policy, "local");
    pt_arena_dispose(&a);
}

static void test_needs(void)
{
    static const struct {
        const char *json;
        unsigned needs;
    } cases[] = {
        {"{}", 0},
        {POL(ANY, ANY), 0},
        {POL("{'header':{'name':'x'}}", ANY), PT_RBAC_NEEDS_HEADERS},
        {POL("{'url_path':{'path':{'exact':'/'}}}", ANY), PT_RBAC_NEEDS_HEADERS},
        {POL("{'destination_port':1}", "{'source_ip':{'address_prefix':'::'}}"),
         PT_RBAC_NEEDS_LOCAL | PT_RBAC_NEEDS_DIRECT_REMOTE},
        {POL("{'not_rule':{'requested_server_name':{'exact':'a'}}}",
             "{'or_ids':{'ids':[{'remote_ip':{'address_prefix':'::'}},{'authenticated':{}}]}}"),
         PT_RBAC_NEEDS_SNI | PT_RBAC_NEEDS_REMOTE | PT_RBAC_NEEDS_PEER},
        {"{'shadow_rules':{'policies':{'p':{'permissions':[{'destination_ip':{'address_prefix':"
         "'::'}}],'principals':[{'direct_remote_ip':{'address_prefix':'::'}}]}}}}",
         PT_RBAC_NEEDS_LOCAL | PT_RBAC_NEEDS_DIRECT_REMOTE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pt_arena_t a = {0};
        pt_rbac_result_t res;
        unsigned needs = ~0u;
        eval_config(&a, cases[i].json, HTTP, &R(), &res, &needs);
        pt_arena_dispose(&a);
        if (needs != cases[i].needs)
            fprintf(stderr, "  case %zu: needs %#x, want %#x\n", i, needs, cases[i].needs);
        PT_CHECK_INT(needs, cases[i].needs);
    }
}

/* ---- stats --------------------------------------------------------------------------- */

static void test_stats_names(void)
{
    static const struct {
        pt_rbac_filter_kind_t kind;
        const char *json, *hcm_prefix;
        const char *allowed, *denied, *shadow_allowed, *shadow_denied;
        const char *prom_allowed;
    } cases[] = {
        {HTTP, "{}", "ingress", "http.ingress.rbac.allowed", "http.ingress.rbac.denied",
         "http.ingress.rbac.shadow_allowed", "http.ingress.rbac.shadow_denied",
         "envoy_http_rbac_allowed"},
        {HTTP, "{'rules_stat_prefix':'r1','shadow_rules_stat_prefix':'s1.'}", "ing2",
         "http.ing2.rbac.r1.allowed", "http.ing2.rbac.r1.denied",
         "http.ing2.rbac.s1.shadow_allowed", "http.ing2.rbac.s1.shadow_denied",
         "envoy_http_rbac_r1_allowed"},
        {NET, "{'stat_prefix':'tcp.'}", NULL, "tcp.rbac.allowed", "tcp.rbac.denied",
         "tcp.rbac.shadow_allowed", "tcp.rbac.shadow_denied", "envoy_tcp_rbac_allowed"},
        {NET, "{'stat_prefix':'net_rbac','shadow_rules_stat_prefix':'canary_'}", NULL,
         "net_rbac.rbac.allowed", "net_rbac.rbac.denied", "net_rbac.rbac.canary_.shadow_allowed",
         "net_rbac.rbac.canary_.shadow_denied", "envoy_net_rbac_rbac_allowed"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pt_arena_t a = {0};
        int ok;
        pt_rbac_config_t *c = config_from(&a, cases[i].json, cases[i].kind, NULL, &ok);
        PT_CHECK(c != NULL);
        pt_rbac_config_register_stats(c, cases[i].hcm_prefix);
        PT_CHECK(c->stats.allowed != 0);
        PT_CHECK_STR(full_name(c->stats.allowed), cases[i].allowed);
        PT_CHECK_STR(full_name(c->stats.denied), cases[i].denied);
        PT_CHECK_STR(full_name(c->stats.shadow_allowed), cases[i].shadow_allowed);
        PT_CHECK_STR(full_name(c->stats.shadow_denied), cases[i].shadow_denied);
        PT_CHECK_STR(pt_stat_family(pt_stats_info(c->stats.allowed))->prom_name, cases[i].prom_allowed);
        if (cases[i].kind == HTTP) {
            PT_CHECK_STR(pt_stat_family(pt_stats_info(c->stats.allowed))->tag, "envoy_http_conn_manager_prefix");
            PT_CHECK_STR(pt_stat_tag_value(pt_stats_info(c->stats.allowed)), cases[i].hcm_prefix);
        }
        pt_arena_dispose(&a);
    }
}

static void test_stats_counting(void)
{
    pt_arena_t a = {0};
    int ok;
    pt_rbac_config_t *c = config_from(
        &a,
        "{'stat_prefix':'count_test','rules':{'action':'DENY','policies':{'p':{'permissions':["
        "{'destination_port':81}],'principals':[" ANY "]}}},'shadow_rules':{'action':'ALLOW',"
        "'policies':{'q':{'permissions':[{'destination_port':81}],'principals':[" ANY "]}}}}",
        NET, NULL, &ok);
    PT_CHECK(c != NULL);
    pt_rbac_config_register_stats(c, NULL);
    static const unsigned ports[] = {80, 81, 81, 82};
    for (size_t i = 0; i < 4; i++) {
        built_t b;
        build(&b, &R(.no_http = 1, .port = ports[i]));
        pt_rbac_result_t res;
        pt_rbac_evaluate(c, &b.ctx, &res);
        pt_rbac_account(c, &res, "connection");
        pt_arena_dispose(&b.arena);
    }
    PT_CHECK_INT(pt_stats_value(pt_stats_find("count_test.rbac.allowed")), 2);
    PT_CHECK_INT(pt_stats_value(pt_stats_find("count_test.rbac.denied")), 2);
    PT_CHECK_INT(pt_stats_value(pt_stats_find("count_test.rbac.shadow_allowed")), 2);
    PT_CHECK_INT(pt_stats_value(pt_stats_find("count_test.rbac.shadow_denied")), 2);
    /* no rules: nothing counted */
    pt_rbac_config_t *none = config_from(&a, "{'stat_prefix':'count_none'}", NET, NULL, &ok);
    PT_CHECK(none != NULL);
    pt_rbac_config_register_stats(none, NULL);
    pt_rbac_result_t res;
    built_t b;
    build(&b, &R(.no_http = 1));
    pt_rbac_evaluate(none, &b.ctx, &res);
    pt_rbac_account(none, &res, "connection");
    pt_arena_dispose(&b.arena);
    PT_CHECK_INT(pt_stats_value(pt_stats_find("count_none.rbac.allowed")), 0);
    PT_CHECK_INT(pt_stats_value(pt_stats_find("count_none.rbac.shadow_allowed")), 0);
    pt_arena_dispose(&a);
}

int main(void)
{
    if (pt_stats_thread_init() != 0) {
        fprintf(stderr, "pt_stats_thread_init failed\n");
        return 1;
    }
    PT_RUN(test_config_errors);
    PT_RUN(test_config_valid);
    PT_RUN(test_permissions_headers);
    PT_RUN(test_permissions_url_path);
    PT_RUN(test_permissions_sets);
    PT_RUN(test_permissions_destination);
    PT_RUN(test_principals);
    PT_RUN(test_actions);
    PT_RUN(test_many_policies);
    PT_RUN(test_shadow);
    PT_RUN(test_needs);
    PT_RUN(test_stats_names);
    PT_RUN(test_stats_counting);
    PT_TEST_EXIT();
}
