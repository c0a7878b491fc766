/* Unit tests for the fault filter's config (filters/fault.c), through the whole config build
 * so that every error carries the full path a user sees: each bad field is rejected with
 * its exact message, unsupported fields say so, runtime keys are accepted, and valid
 * configs build (stats registered under http.<hcm stat_prefix>.fault.). */
#include "filters/http_filter.h"
#include "proxy/config.h"
#include "proxy/stats.h"
#include "pt_test.h"
#include "pt_test_boot.h"
#include "pt_test_json.h"

#define FAULT_TYPE  "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
#define ROUTER_TYPE "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
#define HCM_TYPE                                                                                   \
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."             \
    "HttpConnectionManager"
/* The path of the fault filter's typed_config in the bootstrap below. */
#define P                                                                                          \
    "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0]."      \
    "typed_config"

/* A bootstrap with one HTTP listener whose first HTTP filter is the fault filter with the
 * given typed_config body (the fields after @type, JSON with single quotes). */
static json_t *bootstrap(const char *fault_fields)
{
    char doc[8192];
    snprintf(doc, sizeof(doc),
             "{'static_resources':{'listeners':[{'name':'l','address':{'socket_address':{"
             "'address':'127.0.0.1','port_value':10000}},'filter_chains':[{'filters':[{'name':"
             "'hcm','typed_config':{'@type':'" HCM_TYPE "','stat_prefix':'ingress',"
             "'route_config':{'virtual_hosts':[{'name':'v','domains':['*'],'routes':[{'match':{"
             "'prefix':'/'},'route':{'cluster':'a'}}]}]},'http_filters':[{'name':'fault',"
             "'typed_config':{'@type':'" FAULT_TYPE "'%s%s}},{'name':'router','typed_config':{"
             "'@type':'" ROUTER_TYPE "'}}]}}]}]}],'clusters':[{'name':'a','connect_timeout':'1s',"
             "'load_assignment':{'cluster_name':'a','endpoints':[{'lb_endpoints':[{'endpoint':{"
             "'address':{'socket_address':{'address':'127.0.0.1','port_value':1}}}}]}]}}]}}",
             fault_fields[0] ? "," : "", fault_fields);
    return J(doc);
}

/* Builds; checks the errors are exactly `want` (NULL-terminated; empty = must build). */
static int check(int line, const char *fields, const char *const *want)
{
    json_t *root = bootstrap(fields);
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

#define E(...)              ((const char *const[]){__VA_ARGS__, NULL})
#define OK                  ((const char *const[]){NULL})
#define CHECK(fields, want) PT_CHECK(check(__LINE__, fields, want))

static void test_valid(void)
{
    CHECK("", OK);
    CHECK("'delay':{'fixed_delay':'0.2s','percentage':{'numerator':50}}", OK);
    CHECK("'delay':{'header_delay':{},'percentage':{'numerator':100,'denominator':'HUNDRED'}}", OK);
    CHECK("'abort':{'http_status':503,'percentage':{'numerator':10,'denominator':"
          "'TEN_THOUSAND'}}",
          OK);
    CHECK("'abort':{'grpc_status':14,'percentage':{'numerator':1,'denominator':'MILLION'}}", OK);
    CHECK("'abort':{'header_abort':{},'percentage':{'numerator':100,'denominator':2}}", OK);
    CHECK("'upstream_cluster':'a','max_active_faults':3,'headers':[{'name':'x-fault',"
          "'exact_match':'yes'},{'name':'x-user','string_match':{'prefix':'test-'}}]",
          OK);
    /* lowerCamelCase and wrapper forms */
    CHECK("'maxActiveFaults':{'value':2},'abort':{'httpStatus':500,'percentage':{"
          "'numerator':'100'}}",
          OK);
    /* runtime keys: accepted (and ignored) */
    CHECK("'delay_percent_runtime':'a','abort_percent_runtime':'b','delay_duration_runtime':'c',"
          "'abort_http_status_runtime':'d','max_active_faults_runtime':'e',"
          "'response_rate_limit_percent_runtime':'f','abort_grpc_status_runtime':'g'",
          OK);
    CHECK("'disable_downstream_cluster_stats':true,'downstream_nodes':[]", OK);
    PT_CHECK(pt_stats_find("http.ingress.fault.delays_injected") != 0);
    PT_CHECK(pt_stats_find("http.ingress.fault.aborts_injected") != 0);
    PT_CHECK(pt_stats_find("http.ingress.fault.faults_overflow") != 0);
    PT_CHECK(pt_stats_find("http.ingress.fault.active_faults") != 0);
    PT_CHECK_INT(pt_stat_family(pt_stats_info(pt_stats_find("http.ingress.fault.active_faults")))->kind,
                 PT_STAT_GAUGE);
}

static void test_delay_errors(void)
{
    CHECK("'delay':{}", E(P ".delay: one of fixed_delay or header_delay is required"));
    CHECK("'delay':{'fixed_delay':'1s','header_delay':{}}",
          E(P ".delay: only one of fixed_delay, header_delay may be given (found fixed_delay, "
              "header_delay)"));
    CHECK("'delay':{'fixed_delay':'0s'}", E(P ".delay.fixed_delay: must be greater than 0s"));
    CHECK("'delay':{'fixed_delay':'-1s'}",
          E(P ".delay.fixed_delay: \"-1s\" is not a duration (expected a string like \"1.5s\")"));
    CHECK("'delay':{'fixed_delay':'fast'}",
          E(P ".delay.fixed_delay: \"fast\" is not a duration (expected a string like \"1.5s\")"));
    CHECK("'delay':{'header_delay':{'max':3}}", E(P ".delay.header_delay.max: unknown field"));
    CHECK("'delay':{'header_delay':3}", E(P ".delay.header_delay: 3 is not an object"));
    CHECK("'delay':{'fixed_delay':'1s','percentage':{'numerator':-5}}",
          E(P ".delay.percentage.numerator: -5 is not a non-negative integer"));
    CHECK("'delay':{'fixed_delay':'1s','percentage':{'numerator':5,'denominator':'THOUSAND'}}",
          E(P ".delay.percentage.denominator: \"THOUSAND\" is not a valid value (expected one "
              "of: HUNDRED, TEN_THOUSAND, MILLION)"));
    CHECK("'delay':{'fixed_delay':'1s','percentage':{'numerator':5,'denominator':3}}",
          E(P ".delay.percentage.denominator: 3 is not a valid enum value"));
    CHECK("'delay':{'fixed_delay':'1s','type':'FIXED'}", E(P ".delay.type: unknown field"));
    CHECK("'delay':'1s'", E(P ".delay: \"1s\" is not an object"));
}

static void test_abort_errors(void)
{
    CHECK("'abort':{'percentage':{'numerator':100}}",
          E(P ".abort: one of http_status, grpc_status or header_abort is required"));
    CHECK("'abort':{'http_status':503,'grpc_status':14}",
          E(P ".abort: only one of http_status, grpc_status, header_abort may be given (found "
              "http_status, grpc_status)"));
    CHECK("'abort':{'http_status':199}", E(P ".abort.http_status: 199 is out of range [200, 599]"));
    CHECK("'abort':{'http_status':600}", E(P ".abort.http_status: 600 is out of range [200, 599]"));
    CHECK("'abort':{'http_status':'x'}",
          E(P ".abort.http_status: \"x\" is not a non-negative integer"));
    CHECK("'abort':{'grpc_status':-1}",
          E(P ".abort.grpc_status: -1 is not a non-negative integer"));
    CHECK("'abort':{'header_abort':{'x':1}}", E(P ".abort.header_abort.x: unknown field"));
    CHECK("'abort':{'http_status':500,'percentage':3}",
          E(P ".abort.percentage: 3 is not an object"));
}

static void test_other_errors(void)
{
    CHECK("'response_rate_limit':{'fixed_limit':{'limit_kbps':1}}",
          E(P ".response_rate_limit: field is not supported"));
    CHECK("'filter_metadata':'x'", E(P ".filter_metadata: must be an object (google.protobuf.Struct)"));
    CHECK("'downstream_nodes':['n1']", E(P ".downstream_nodes: is not supported"));
    CHECK("'max_active_faults':-1", E(P ".max_active_faults: -1 is not a non-negative integer"));
    CHECK("'max_active_faults':4294967296",
          E(P ".max_active_faults: 4294967296 is out of range [0, 4294967295]"));
    CHECK("'upstream_cluster':3", E(P ".upstream_cluster: 3 is not a string"));
    CHECK("'headers':[{'exact_match':'x'}]", E(P ".headers[0].name: is required"));
    CHECK("'headers':[{'name':'x','exact_match':'a','prefix_match':'b'}]",
          E(P ".headers[0]: only one of exact_match, safe_regex_match, range_match, "
              "present_match, prefix_match, suffix_match, contains_match, string_match may be "
              "given (found exact_match, prefix_match)"));
    CHECK("'headers':{}", E(P ".headers: {} is not a list"));
    CHECK("'delay_percent_runtime':5", E(P ".delay_percent_runtime: 5 is not a string"));
    CHECK("'colour':'red'", E(P ".colour: unknown field"));
    /* Every error is reported, in one pass. */
    CHECK("'delay':{},'abort':{'http_status':1},'response_rate_limit':{}",
          E(P ".delay: one of fixed_delay or header_delay is required",
            P ".abort.http_status: 1 is out of range [200, 599]",
            P ".response_rate_limit: field is not supported"));
}

int main(void)
{
    if (pt_stats_thread_init() != 0) {
        fprintf(stderr, "pt_stats_thread_init failed\n");
        return 1;
    }
    PT_RUN(test_valid);
    PT_RUN(test_delay_errors);
    PT_RUN(test_abort_errors);
    PT_RUN(test_other_errors);
    PT_TEST_EXIT();
}
