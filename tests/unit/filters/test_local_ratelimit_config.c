/* Unit tests for the local rate limit filters' configs (filters/local_ratelimit_http.c and
 * filters/local_ratelimit_network.c) through the whole config build, so errors carry the
 * full path: exact messages for every bad field, descriptors and the other unsupported
 * fields, valid configs building, and the stats names Envoy uses. */
#include "filters/http_filter.h"
#include "proxy/config.h"
#include "proxy/stats.h"
#include "pt_test.h"
#include "pt_test_boot.h"
#include "pt_test_json.h"

#define LRL_TYPE                                                                                   \
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
#define LRL_NET_TYPE                                                                               \
    "type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit"
#define TCP_TYPE    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
#define ROUTER_TYPE "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
#define HCM_TYPE                                                                                   \
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."             \
    "HttpConnectionManager"
#define P                                                                                          \
    "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0]."      \
    "typed_config"
#define N  "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
#define TB "'token_bucket':{'max_tokens':5,'fill_interval':'1s'}"
#define CLUSTERS                                                                                   \
    "'clusters':[{'name':'a','connect_timeout':'1s','load_assignment':{'cluster_name':'a',"        \
    "'endpoints':[{'lb_endpoints':[{'endpoint':{'address':{'socket_address':{'address':"           \
    "'127.0.0.1','port_value':1}}}}]}]}}]"
#define LISTENER_HEAD                                                                              \
    "{'static_resources':{'listeners':[{'name':'l','address':{'socket_address':{'address':"        \
    "'127.0.0.1','port_value':10000}},'filter_chains':[{'filters':["

static json_t *http_bootstrap(const char *fields)
{
    char doc[8192];
    snprintf(doc, sizeof(doc),
             LISTENER_HEAD "{'name':'hcm','typed_config':{'@type':'" HCM_TYPE "','stat_prefix':"
                           "'ingress','route_config':{'virtual_hosts':[{'name':'v','domains':["
                           "'*'],'routes':[{'match':{'prefix':'/'},'route':{'cluster':'a'}}]}]},"
                           "'http_filters':[{'name':'rl','typed_config':{'@type':'" LRL_TYPE
                           "'%s%s}},{'name':'router','typed_config':{'@type':'" ROUTER_TYPE
                           "'}}]}}]}]}]," CLUSTERS "}}",
             fields[0] ? "," : "", fields);
    return J(doc);
}

static json_t *net_bootstrap(const char *fields)
{
    char doc[8192];
    snprintf(doc, sizeof(doc),
             LISTENER_HEAD "{'name':'rl','typed_config':{'@type':'" LRL_NET_TYPE "'%s%s}},"
                           "{'name':'tcp','typed_config':{'@type':'" TCP_TYPE "','stat_prefix':"
                           "'tcp','cluster':'a'}}]}]}]," CLUSTERS "}}",
             fields[0] ? "," : "", fields);
    return J(doc);
}

static int check(int line, json_t *root, const char *fields, const char *const *want)
{
    pt_cfg_t r;
    pt_cfg_init(&r, root);
    pt_boot_t *c = pt_test_boot(root, &r);
    json_decref(root);
    size_t n = 0;
    while (want[n] != NULL)
        n++;
    int same = (n == 0) == (c != NULL) && r.nerrors == n;
    for (size_t i = 0; same && i < n; i++)
        same = strcmp(r.errors[i], want[i]) == 0;
    if (!same) {
        fprintf(stderr, "  line %d: %s: got %zu error(s):\n", line, fields, r.nerrors);
        for (size_t i = 0; i < r.nerrors; i++)
            fprintf(stderr, "    %s\n", r.errors[i]);
        fprintf(stderr, "  want %zu:\n", n);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "    %s\n", want[i]);
    }
    if (c != NULL)
        pt_boot_free(c);
    pt_cfg_dispose(&r);
    return same;
}

#define E(...)             ((const char *const[]){__VA_ARGS__, NULL})
#define OK                 ((const char *const[]){NULL})
#define HTTP(fields, want) PT_CHECK(check(__LINE__, http_bootstrap(fields), fields, want))
#define NET(fields, want)  PT_CHECK(check(__LINE__, net_bootstrap(fields), fields, want))

static void test_http_valid(void)
{
    HTTP("'stat_prefix':'rl'," TB, OK);
    HTTP("'stat_prefix':'rl'," TB ",'filter_enabled':{'runtime_key':'k','default_value':{"
         "'numerator':100,'denominator':'HUNDRED'}},'filter_enforced':{'default_value':{"
         "'numerator':5000,'denominator':'TEN_THOUSAND'}},'status':{'code':'ServiceUnavailable'},"
         "'response_headers_to_add':[{'append_action':'OVERWRITE_IF_EXISTS_OR_ADD','header':{"
         "'key':'x-rl','value':'yes'}},{'header':{'key':'x-path','value':'%REQ(:PATH)%'}}],"
         "'request_headers_to_add_when_not_enforced':[{'header':{'key':'x-over','value':'1'}}],"
         "'enable_x_ratelimit_headers':'DRAFT_VERSION_03','local_rate_limit_per_downstream_"
         "connection':true,'rate_limited_as_resource_exhausted':true",
         OK);
    /* Fields that only shape descriptors: accepted, validated. */
    HTTP("'stat_prefix':'rl'," TB ",'descriptors':[],'stage':10,'vh_rate_limits':'INCLUDE',"
         "'always_consume_default_token_bucket':false,'max_dynamic_descriptors':5,"
         "'status':{'code':200},'enable_x_ratelimit_headers':1",
         OK);
    PT_CHECK(pt_stats_find("rl.http_local_rate_limit.enabled") != 0);
    PT_CHECK(pt_stats_find("rl.http_local_rate_limit.ok") != 0);
    PT_CHECK(pt_stats_find("rl.http_local_rate_limit.rate_limited") != 0);
    PT_CHECK(pt_stats_find("rl.http_local_rate_limit.enforced") != 0);
}

static void test_http_errors(void)
{
    HTTP(TB, E(P ".stat_prefix: is required"));
    HTTP("'stat_prefix':''," TB, E(P ".stat_prefix: is required"));
    HTTP("'stat_prefix':'rl','token_bucket':{'max_tokens':0,'fill_interval':'0.01s'}",
         E(P ".token_bucket.max_tokens: must be greater than 0",
           P ".token_bucket.fill_interval: must be at least 50ms (as in Envoy)"));
    HTTP("'stat_prefix':'rl'," TB ",'descriptors':[{'entries':[{'key':'k','value':'v'}],"
         "'token_bucket':{'max_tokens':1,'fill_interval':'1s'}}]",
         E(P ".descriptors: descriptors are not supported"));
    HTTP("'stat_prefix':'rl'," TB ",'rate_limits':[]", E(P ".rate_limits: field is not supported"));
    HTTP("'stat_prefix':'rl'," TB ",'local_cluster_rate_limit':{}",
         E(P ".local_cluster_rate_limit: field is not supported"));
    HTTP("'stat_prefix':'rl'," TB ",'filter_enabled':{'runtime_key':'k'}",
         E(P ".filter_enabled.default_value: is required"));
    HTTP("'stat_prefix':'rl'," TB ",'filter_enforced':{'default_value':{'numerator':1,"
         "'denominator':'BILLION'}}",
         E(P ".filter_enforced.default_value.denominator: \"BILLION\" is not a valid value "
             "(expected one of: HUNDRED, TEN_THOUSAND, MILLION)"));
    HTTP("'stat_prefix':'rl'," TB ",'status':{}", E(P ".status.code: is required"));
    HTTP("'stat_prefix':'rl'," TB ",'status':{'code':499}",
         E(P ".status.code: 499 is not a defined HTTP status code (StatusCode)"));
    HTTP("'stat_prefix':'rl'," TB ",'status':{'code':'Teapot'}",
         E(P ".status.code: \"Teapot\" is not a defined HTTP status code (StatusCode)"));
    HTTP("'stat_prefix':'rl'," TB ",'enable_x_ratelimit_headers':'DRAFT_VERSION_04'",
         E(P ".enable_x_ratelimit_headers: \"DRAFT_VERSION_04\" is not a valid value (expected "
             "one of: OFF, DRAFT_VERSION_03)"));
    HTTP("'stat_prefix':'rl'," TB ",'stage':11", E(P ".stage: 11 is out of range [0, 10]"));
    HTTP("'stat_prefix':'rl'," TB ",'response_headers_to_add':[{'header':{'key':':status',"
         "'value':'200'}},{'header':{'key':'host','value':'x'}},{'header':{'value':'x'}},{},"
         "{'header':{'key':'a b','value':'x'}},{'header':{'key':'x','value':'%BOGUS%'}}]",
         E(P ".response_headers_to_add[0].header.key: \":status\" may not be modified: "
             "pseudo-headers and host are not mutable (as in Envoy)",
           P ".response_headers_to_add[1].header.key: \"host\" may not be modified: "
             "pseudo-headers and host are not mutable (as in Envoy)",
           P ".response_headers_to_add[2].header.key: is required",
           P ".response_headers_to_add[3].header: is required",
           P ".response_headers_to_add[4].header.key: \"a b\" is not a valid header name",
           P ".response_headers_to_add[5].header.value: unknown command operator \"%BOGUS%\""));
    HTTP("'stat_prefix':'rl'," TB ",'request_headers_to_add_when_not_enforced':[{'header':{"
         "'key':'x','value':'1'},'append':true,'append_action':'ADD_IF_ABSENT'}]",
         E(P ".request_headers_to_add_when_not_enforced[0]: append and append_action may not "
             "both be set (append is deprecated: use append_action)"));
    HTTP("'stat_prefix':'rl'," TB ",'response_headers_to_add':[{'header':{'key':'a','value':'1'}},"
         "{'header':{'key':'a','value':'1'}},{'header':{'key':'a','value':'1'}},{'header':{'key':"
         "'a','value':'1'}},{'header':{'key':'a','value':'1'}},{'header':{'key':'a','value':'1'}},"
         "{'header':{'key':'a','value':'1'}},{'header':{'key':'a','value':'1'}},{'header':{'key':"
         "'a','value':'1'}},{'header':{'key':'a','value':'1'}},{'header':{'key':'a','value':'1'}}]",
         E(P ".response_headers_to_add: has 11 entries; at most 10 are allowed (as in Envoy)"));
    HTTP("'stat_prefix':'rl'," TB ",'local_rate_limit_per_downstream_connection':'yes'",
         E(P ".local_rate_limit_per_downstream_connection: \"yes\" is not a boolean"));
}

static void test_network(void)
{
    NET("'stat_prefix':'net'," TB, OK);
    NET("'stat_prefix':'net'," TB ",'runtime_enabled':{'default_value':false,'runtime_key':'k'},"
        "'share_key':'s'",
        OK);
    PT_CHECK(pt_stats_find("local_rate_limit.net.rate_limited") != 0);
    NET(TB, E(N ".stat_prefix: is required"));
    NET("'stat_prefix':'net'", E(N ".token_bucket: is required"));
    NET("'stat_prefix':'net','token_bucket':{'max_tokens':1,'fill_interval':'0.02s'}",
        E(N ".token_bucket.fill_interval: must be at least 50ms (as in Envoy)"));
    NET("'stat_prefix':'net'," TB ",'runtime_enabled':{}",
        E(N ".runtime_enabled.default_value: is required",
          N ".runtime_enabled.runtime_key: is required"));
    NET("'stat_prefix':'net'," TB ",'descriptors':[]", E(N ".descriptors: unknown field"));
}

int main(void)
{
    if (pt_stats_thread_init() != 0) {
        fprintf(stderr, "pt_stats_thread_init failed\n");
        return 1;
    }
    PT_RUN(test_http_valid);
    PT_RUN(test_http_errors);
    PT_RUN(test_network);
    PT_TEST_EXIT();
}
