/* Unit tests for the compressor filter's config (filters/compressor.c, filters/compression.c)
 * through the whole config build, so that every error carries the path a user sees: each
 * library's fields with Envoy's ranges and enums, the unsupported zstd dictionary, an unknown
 * library, the direction configs and the deprecated top-level fields. */
#include "filters/http_filter.h"
#include "proxy/config.h"
#include "proxy/stats.h"
#include "pt_test.h"
#include "pt_test_boot.h"
#include "pt_test_json.h"

#define COMP_TYPE   "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor"
#define GZIP_TYPE   "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip"
#define BROTLI_TYPE "type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli"
#define ZSTD_TYPE   "type.googleapis.com/envoy.extensions.compression.zstd.compressor.v3.Zstd"
#define ROUTER_TYPE "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
#define HCM_TYPE                                                                                   \
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."             \
    "HttpConnectionManager"
#define P                                                                                          \
    "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0]."      \
    "typed_config"
#define L P ".compressor_library.typed_config"

/* A bootstrap whose first HTTP filter is a compressor with the given typed_config fields. */
static json_t *bootstrap(const char *fields)
{
    char doc[8192];
    snprintf(doc, sizeof(doc),
             "{'static_resources':{'listeners':[{'name':'l','address':{'socket_address':{"
             "'address':'127.0.0.1','port_value':10000}},'filter_chains':[{'filters':[{'name':"
             "'hcm','typed_config':{'@type':'" HCM_TYPE "','stat_prefix':'ingress',"
             "'route_config':{'virtual_hosts':[{'name':'v','domains':['*'],'routes':[{'match':{"
             "'prefix':'/'},'route':{'cluster':'a'}}]}]},'http_filters':[{'name':'comp',"
             "'typed_config':{'@type':'" COMP_TYPE "'%s%s}},{'name':'router','typed_config':{"
             "'@type':'" ROUTER_TYPE "'}}]}}]}]}],'clusters':[{'name':'a','connect_timeout':'1s',"
             "'load_assignment':{'cluster_name':'a','endpoints':[{'lb_endpoints':[{'endpoint':{"
             "'address':{'socket_address':{'address':'127.0.0.1','port_value':1}}}}]}]}}]}}",
             fields[0] ? "," : "", fields);
    return J(doc);
}

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
#define LIB(type, fields)                                                                          \
    "'compressor_library':{'name':'text','typed_config':{'@type':'" type "'" fields "}}"

static void test_valid(void)
{
    CHECK(LIB(GZIP_TYPE, ""), OK);
    CHECK(LIB(GZIP_TYPE, ",'compression_level':'best_speed','compression_strategy':'huffman_only',"
                         "'memory_level':1,'window_bits':9,'chunk_size':65536"),
          OK);
    CHECK(LIB(BROTLI_TYPE, ",'quality':11,'window_bits':24,'input_block_bits':16,"
                           "'encoder_mode':'FONT','disable_literal_context_modeling':true"),
          OK);
    CHECK(LIB(ZSTD_TYPE, ",'compression_level':22,'enable_checksum':true,'strategy':'BTULTRA2',"
                         "'chunk_size':4096"),
          OK);
    CHECK(LIB(GZIP_TYPE, "") ",'response_direction_config':{'common_config':{'enabled':{"
                             "'default_value':false,'runtime_key':'k'},'min_content_length':0,"
                             "'content_type':['text/html']},'disable_on_etag_header':true,"
                             "'remove_accept_encoding_header':true},'request_direction_config':{"
                             "'common_config':{'enabled':{'default_value':true,'runtime_key':'r'}"
                             "}},'choose_first':true",
          OK);
    /* Envoy's deprecated top-level fields still load */
    CHECK(LIB(GZIP_TYPE, "") ",'content_length':100,'content_type':['text/plain'],"
                             "'disable_on_etag_header':true,'remove_accept_encoding_header':true,"
                             "'runtime_enabled':{'default_value':true,'runtime_key':'x'}",
          OK);
}

static void test_library_errors(void)
{
    CHECK("", E(P ".compressor_library: is required"));
    CHECK("'compressor_library':{'name':'x'}", E(P ".compressor_library.typed_config: is required"));
    CHECK("'compressor_library':{'name':'x','typed_config':{'@type':'type.googleapis.com/"
          "envoy.extensions.compression.lz4.v3.Lz4','level':3}}",
          E(L ".@type: \"type.googleapis.com/envoy.extensions.compression.lz4.v3.Lz4\" is not a "
              "compressor library petrel has (gzip, brotli or zstd)"));
    CHECK(LIB(GZIP_TYPE, ",'compression_level':'COMPRESSION_LEVEL_10'"),
          E(L ".compression_level: \"COMPRESSION_LEVEL_10\" is not a valid value (expected one "
              "of: DEFAULT_COMPRESSION, BEST_SPEED, COMPRESSION_LEVEL_1, COMPRESSION_LEVEL_2, "
              "COMPRESSION_LEVEL_3, COMPRESSION_LEVEL_4, COMPRESSION_LEVEL_5, "
              "COMPRESSION_LEVEL_6, COMPRESSION_LEVEL_7, COMPRESSION_LEVEL_8, "
              "COMPRESSION_LEVEL_9, BEST_COMPRESSION)"));
    CHECK(LIB(GZIP_TYPE, ",'memory_level':10"),
          E(L ".memory_level: 10 is out of range [1, 9]"));
    CHECK(LIB(GZIP_TYPE, ",'window_bits':8"), E(L ".window_bits: 8 is out of range [9, 15]"));
    CHECK(LIB(GZIP_TYPE, ",'chunk_size':4095"),
          E(L ".chunk_size: 4095 is out of range [4096, 65536]"));
    CHECK(LIB(BROTLI_TYPE, ",'quality':12"), E(L ".quality: 12 is out of range [0, 11]"));
    CHECK(LIB(BROTLI_TYPE, ",'window_bits':25"), E(L ".window_bits: 25 is out of range [10, 24]"));
    CHECK(LIB(BROTLI_TYPE, ",'input_block_bits':15"),
          E(L ".input_block_bits: 15 is out of range [16, 24]"));
    CHECK(LIB(ZSTD_TYPE, ",'compression_level':23"),
          E(L ".compression_level: 23 is out of range [0, 22]"));
    CHECK(LIB(ZSTD_TYPE, ",'dictionary':{'inline_string':'abc'}"),
          E(L ".dictionary: field is not supported"));
    CHECK(LIB(ZSTD_TYPE, ",'strategy':'SLOW'"),
          E(L ".strategy: \"SLOW\" is not a valid value (expected one of: DEFAULT, FAST, DFAST, "
              "GREEDY, LAZY, LAZY2, BTLAZY2, BTOPT, BTULTRA, BTULTRA2)"));
}

static void test_direction_errors(void)
{
    CHECK(LIB(GZIP_TYPE, "") ",'response_direction_config':{'common_config':{'enabled':{"
                             "'runtime_key':'k'}}}",
          E(P ".response_direction_config.common_config.enabled.default_value: is required"));
    CHECK(LIB(GZIP_TYPE, "") ",'response_direction_config':{'common_config':{'content_type':"
                             "['text/html','']}}",
          E(P ".response_direction_config.common_config.content_type[1]: must be a non-empty "
              "string"));
    CHECK(LIB(GZIP_TYPE, "") ",'response_direction_config':{'uncompressible_response_codes':"
                             "[206,99]}",
          E(P ".response_direction_config.uncompressible_response_codes[1]: must be a status "
              "code from 200 to 599"));
    CHECK(LIB(GZIP_TYPE, "") ",'response_direction_config':{'status_header_enabled':true}",
          E(P ".response_direction_config.status_header_enabled: is not supported (petrel adds "
              "no compression status header)"));
    CHECK(LIB(GZIP_TYPE, "") ",'content_length':-1",
          E(P ".content_length: -1 is not a non-negative integer"));
}

int main(void)
{
    if (pt_stats_thread_init() != 0) {
        fprintf(stderr, "pt_stats_thread_init failed\n");
        return 1;
    }
    PT_RUN(test_valid);
    PT_RUN(test_library_errors);
    PT_RUN(test_direction_errors);
    PT_TEST_EXIT();
}
