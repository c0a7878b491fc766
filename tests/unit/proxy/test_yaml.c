/* Unit tests for proxy/yaml.c: YAML and JSON of one document give the same tree, scalar
 * typing (YAML 1.2 core schema), anchors, aliases and merge keys, and every rejection with
 * its message (duplicate keys, several documents, empty input, syntax errors with line and
 * column), and the document bounds: nesting, values, alias bombs, size. */
#include "proxy/config_reader.h"
#include "pt_test.h"


static char err[512];

static json_t *Y(const char *text)
{
    err[0] = '\0';
    return pt_yaml_parse(text, strlen(text), err, sizeof(err));
}

static json_t *J(const char *text)
{
    json_error_t je;
    json_t *v = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (v == NULL) {
        fprintf(stderr, "bad test JSON: line %d: %s\n", je.line, je.text);
        abort();
    }
    return v;
}

/* Compares two trees; on a mismatch prints both. */
static int same_tree(json_t *a, json_t *b)
{
    if (a != NULL && b != NULL && json_equal(a, b))
        return 1;
    char *sa = a ? json_dumps(a, JSON_INDENT(2) | JSON_ENCODE_ANY) : NULL;
    char *sb = b ? json_dumps(b, JSON_INDENT(2) | JSON_ENCODE_ANY) : NULL;
    fprintf(stderr, "  trees differ:\n%s\n  ---- vs ----\n%s\n  (yaml error: %s)\n",
            sa ? sa : "(null)", sb ? sb : "(null)", err);
    free(sa);
    free(sb);
    return 0;
}

/* A realistic bootstrap: admin, a TCP and an HTTP listener, static clusters. */
static const char *const bootstrap_yaml =
    "# petrel sidecar\n"
    "node:\n"
    "  id: sidecar~10.0.0.5~web-1.default~default.svc.cluster.local\n"
    "  cluster: web\n"
    "  locality: {region: eu-west-1, zone: eu-west-1a}\n"
    "admin:\n"
    "  address:\n"
    "    socket_address: { address: 127.0.0.1, port_value: 9901 }\n"
    "static_resources:\n"
    "  listeners:\n"
    "  - name: tcp_in\n"
    "    address:\n"
    "      socket_address:\n"
    "        address: 0.0.0.0\n"
    "        port_value: 15001\n"
    "    per_connection_buffer_limit_bytes: 32768\n"
    "    filter_chains:\n"
    "    - filters:\n"
    "      - name: envoy.filters.network.tcp_proxy\n"
    "        typed_config:\n"
    "          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n"
    "          stat_prefix: tcp_in\n"
    "          cluster: backend\n"
    "          idle_timeout: 300s\n"
    "          max_connect_attempts: 3\n"
    "  - name: http_in\n"
    "    address: {socket_address: {address: '::', port_value: 8080}}\n"
    "    filter_chains:\n"
    "    - filters:\n"
    "      - name: envoy.filters.network.http_connection_manager\n"
    "        typed_config:\n"
    "          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
    "          stat_prefix: ingress_http\n"
    "          codec_type: AUTO\n"
    "          use_remote_address: true\n"
    "          xff_num_trusted_hops: 0\n"
    "          route_config:\n"
    "            name: local_route\n"
    "            virtual_hosts:\n"
    "            - name: all\n"
    "              domains: [\"*\"]\n"
    "              routes:\n"
    "              - match: {prefix: /}\n"
    "                route:\n"
    "                  cluster: backend\n"
    "                  timeout: 0.25s\n"
    "                  retry_policy: {retry_on: \"5xx,reset\", num_retries: 2}\n"
    "          http_filters:\n"
    "          - name: envoy.filters.http.router\n"
    "            typed_config:\n"
    "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n"
    "  clusters:\n"
    "  - name: backend\n"
    "    type: STATIC\n"
    "    connect_timeout: 1.5s\n"
    "    lb_policy: ROUND_ROBIN\n"
    "    per_connection_buffer_limit_bytes: '65536'\n"
    "    load_assignment:\n"
    "      cluster_name: backend\n"
    "      endpoints:\n"
    "      - priority: 0\n"
    "        load_balancing_weight: 10\n"
    "        lb_endpoints:\n"
    "        - endpoint:\n"
    "            address:\n"
    "              socket_address: {address: 10.0.0.1, port_value: 80}\n"
    "          load_balancing_weight: 3\n"
    "        - endpoint: {address: {socket_address: {address: 10.0.0.2, port_value: 80}}}\n"
    "          metadata: null\n"
    "          health_status: ~\n"
    "        - endpoint:\n"
    "            address: {socket_address: {address: \"fd00::1\", port_value: 8443}}\n"
    "            hostname: |-\n"
    "              backend-3\n"
    "    health_checks: []\n"
    "    ratio: 0.5\n"
    "    big: 1e3\n";

static const char *const bootstrap_json =
    "{\n"
    " \"node\": {\"id\": \"sidecar~10.0.0.5~web-1.default~default.svc.cluster.local\",\n"
    "   \"cluster\": \"web\", \"locality\": {\"region\": \"eu-west-1\", \"zone\": \"eu-west-1a\"}},\n"
    " \"admin\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": 9901}}},\n"
    " \"static_resources\": {\n"
    "  \"listeners\": [\n"
    "   {\"name\": \"tcp_in\",\n"
    "    \"address\": {\"socket_address\": {\"address\": \"0.0.0.0\", \"port_value\": 15001}},\n"
    "    \"per_connection_buffer_limit_bytes\": 32768,\n"
    "    \"filter_chains\": [{\"filters\": [{\"name\": \"envoy.filters.network.tcp_proxy\",\n"
    "      \"typed_config\": {\"@type\": \"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\",\n"
    "       \"stat_prefix\": \"tcp_in\", \"cluster\": \"backend\", \"idle_timeout\": \"300s\",\n"
    "       \"max_connect_attempts\": 3}}]}]},\n"
    "   {\"name\": \"http_in\",\n"
    "    \"address\": {\"socket_address\": {\"address\": \"::\", \"port_value\": 8080}},\n"
    "    \"filter_chains\": [{\"filters\": [{\"name\": \"envoy.filters.network.http_connection_manager\",\n"
    "      \"typed_config\": {\"@type\": \"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\",\n"
    "       \"stat_prefix\": \"ingress_http\", \"codec_type\": \"AUTO\", \"use_remote_address\": true,\n"
    "       \"xff_num_trusted_hops\": 0,\n"
    "       \"route_config\": {\"name\": \"local_route\", \"virtual_hosts\": [{\"name\": \"all\",\n"
    "         \"domains\": [\"*\"], \"routes\": [{\"match\": {\"prefix\": \"/\"},\n"
    "         \"route\": {\"cluster\": \"backend\", \"timeout\": \"0.25s\",\n"
    "          \"retry_policy\": {\"retry_on\": \"5xx,reset\", \"num_retries\": 2}}}]}]},\n"
    "       \"http_filters\": [{\"name\": \"envoy.filters.http.router\", \"typed_config\":\n"
    "         {\"@type\": \"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\"}}]}}]}]}\n"
    "  ],\n"
    "  \"clusters\": [\n"
    "   {\"name\": \"backend\", \"type\": \"STATIC\", \"connect_timeout\": \"1.5s\",\n"
    "    \"lb_policy\": \"ROUND_ROBIN\", \"per_connection_buffer_limit_bytes\": \"65536\",\n"
    "    \"load_assignment\": {\"cluster_name\": \"backend\", \"endpoints\": [{\"priority\": 0,\n"
    "     \"load_balancing_weight\": 10, \"lb_endpoints\": [\n"
    "      {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"10.0.0.1\", \"port_value\": 80}}},\n"
    "       \"load_balancing_weight\": 3},\n"
    "      {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"10.0.0.2\", \"port_value\": 80}}},\n"
    "       \"metadata\": null, \"health_status\": null},\n"
    "      {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"fd00::1\", \"port_value\": 8443}},\n"
    "       \"hostname\": \"backend-3\"}}]}]},\n"
    "    \"health_checks\": [], \"ratio\": 0.5, \"big\": 1000.0}\n"
    "  ]\n"
    " }\n"
    "}\n";

static void test_yaml_equals_json(void)
{
    json_t *y = Y(bootstrap_yaml);
    json_t *j = J(bootstrap_json);
    PT_CHECK(same_tree(y, j));
    /* JSON is YAML: the JSON text through the YAML parser gives the same tree too. */
    json_t *yj = Y(bootstrap_json);
    PT_CHECK(same_tree(yj, j));
    /* Key order is the document's. */
    const char *first = NULL;
    void *it = json_object_iter(y);
    first = json_object_iter_key(it);
    PT_CHECK_STR(first, "node");
    json_decref(y);
    json_decref(j);
    json_decref(yj);
}

static void test_scalar_typing(void)
{
    json_t *y = Y("i: 42\n"
                  "neg: -7\n"
                  "plus: +3\n"
                  "zero: 0\n"
                  "lead: 0123\n"
                  "f: 1.5\n"
                  "fe: 2.5e-3\n"
                  "fdot: .5\n"
                  "t: true\n"
                  "t2: True\n"
                  "t3: TRUE\n"
                  "f1: false\n"
                  "n1: null\n"
                  "n2: ~\n"
                  "n3: Null\n"
                  "n4:\n"
                  "qi: '8080'\n"
                  "qi2: \"8080\"\n"
                  "qt: 'true'\n"
                  "qn: \"null\"\n"
                  "dur: 0.25s\n"
                  "qdur: \"0.25s\"\n"
                  "yes1: yes\n"
                  "on1: on\n"
                  "hex: 0x1F\n"
                  "big: 99999999999999999999\n"
                  "bigneg: -99999999999999999999\n"
                  "max: 9223372036854775807\n"
                  "inf: .inf\n"
                  "ip: 10.0.0.1\n"
                  "ver: 1.2.3\n"
                  "empty: ''\n"
                  "lit: |\n"
                  "  line1\n"
                  "  line2\n"
                  "fold: >-\n"
                  "  a\n"
                  "  b\n");
    PT_CHECK(y != NULL);
    json_t *j = J("{\"i\": 42, \"neg\": -7, \"plus\": 3, \"zero\": 0, \"lead\": 123, \"f\": 1.5,"
                  " \"fe\": 0.0025, \"fdot\": 0.5, \"t\": true, \"t2\": true, \"t3\": true,"
                  " \"f1\": false, \"n1\": null, \"n2\": null, \"n3\": null, \"n4\": null,"
                  " \"qi\": \"8080\", \"qi2\": \"8080\", \"qt\": \"true\", \"qn\": \"null\","
                  " \"dur\": \"0.25s\", \"qdur\": \"0.25s\", \"yes1\": \"yes\", \"on1\": \"on\","
                  " \"hex\": \"0x1F\", \"big\": \"99999999999999999999\","
                  " \"bigneg\": \"-99999999999999999999\", \"max\": 9223372036854775807,"
                  " \"inf\": \".inf\", \"ip\": \"10.0.0.1\", \"ver\": \"1.2.3\", \"empty\": \"\","
                  " \"lit\": \"line1\\nline2\\n\", \"fold\": \"a b\"}");
    PT_CHECK(same_tree(y, j));
    /* Types, not only values: 42 is an integer, 1.5 a real, quoted numbers strings. */
    PT_CHECK(json_is_integer(json_object_get(y, "i")));
    PT_CHECK(json_is_real(json_object_get(y, "f")));
    PT_CHECK(json_is_string(json_object_get(y, "qi")));
    json_decref(y);
    json_decref(j);

    /* Top-level scalars and lists are trees too (the config reader rejects them). */
    y = Y("hello");
    PT_CHECK(json_is_string(y));
    PT_CHECK_STR(json_string_value(y), "hello");
    json_decref(y);
    y = Y("- 1\n- a\n");
    PT_CHECK(json_is_array(y));
    PT_CHECK_INT(json_array_size(y), 2);
    json_decref(y);
}

static void test_anchors_and_aliases(void)
{
    json_t *y = Y("defs:\n"
                  "  timeout: &t 0.25s\n"
                  "  ep: &ep {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}\n"
                  "  list: &l [1, 2]\n"
                  "a: *t\n"
                  "b: [*ep, *ep]\n"
                  "c: *l\n");
    PT_CHECK(y != NULL);
    json_t *j = J("{\"defs\": {\"timeout\": \"0.25s\",\n"
                  "  \"ep\": {\"address\": {\"socket_address\": {\"address\": \"10.0.0.1\", \"port_value\": 80}}},\n"
                  "  \"list\": [1, 2]},\n"
                  " \"a\": \"0.25s\",\n"
                  " \"b\": [{\"address\": {\"socket_address\": {\"address\": \"10.0.0.1\", \"port_value\": 80}}},\n"
                  "       {\"address\": {\"socket_address\": {\"address\": \"10.0.0.1\", \"port_value\": 80}}}],\n"
                  " \"c\": [1, 2]}");
    PT_CHECK(same_tree(y, j));
    /* Aliased subtrees are copies: changing one leaves the others alone. */
    json_t *b0 = json_array_get(json_object_get(y, "b"), 0);
    json_t *b1 = json_array_get(json_object_get(y, "b"), 1);
    PT_CHECK(b0 != b1);
    json_object_set_new(b0, "x", json_true());
    PT_CHECK(json_object_get(b1, "x") == NULL);
    PT_CHECK(json_object_get(json_object_get(json_object_get(y, "defs"), "ep"), "x") == NULL);
    json_decref(y);
    json_decref(j);

    /* An alias to an anchor not (yet) defined. */
    PT_CHECK(Y("a: *nope\n") == NULL);
    PT_CHECK_STR(err, "line 1 column 4: found undefined alias *nope");
    /* An alias before its anchor is as undefined as one never anchored. */
    PT_CHECK(Y("a: *x\nb: &x 1\n") == NULL);
    PT_CHECK_STR(err, "line 1 column 4: found undefined alias *x");
    /* An alias inside its own anchor's collection: a cycle, which has no JSON form. */
    PT_CHECK(Y("a: &x [*x]\n") == NULL);
    PT_CHECK_STR(err, "line 1 column 8: alias *x refers to a node that contains it (anchored at "
                      "line 1 column 4)");
    PT_CHECK(Y("a: 1\nb: &m\n  c: 1\n  <<: *m\n") == NULL);
    PT_CHECK_STR(err, "line 4 column 7: alias *m refers to a node that contains it (anchored at "
                      "line 2 column 4)");
    /* One name, one anchor. */
    PT_CHECK(Y("a: &x 1\nb: &x 2\n") == NULL);
    PT_CHECK_STR(err, "line 2 column 4: anchor &x is already defined at line 1 column 4");

    /* A scalar anchored as a key or as a value may be used as either. */
    y = Y("&k name: &v web\n*v : *k\nc: [*k, *v]\n");
    PT_CHECK(y != NULL);
    j = J("{\"name\": \"web\", \"web\": \"name\", \"c\": [\"name\", \"web\"]}");
    PT_CHECK(same_tree(y, j));
    json_decref(y);
    json_decref(j);
    /* An alias to a collection is no key. */
    PT_CHECK(Y("l: &l [1]\n*l : 2\n") == NULL);
    PT_CHECK_STR(err, "line 2 column 1: mapping keys must be scalars");
}

static void test_merge_keys(void)
{
    json_t *y = Y("base: &base {connect_timeout: 1s, lb_policy: ROUND_ROBIN, type: STATIC}\n"
                  "extra: &extra {lb_policy: RANDOM, name: fromextra, x: 1}\n"
                  "c1:\n"
                  "  <<: *base\n"
                  "  name: c1\n"
                  "  lb_policy: LEAST_REQUEST\n" /* explicit keys win over merged ones */
                  "c2:\n"
                  "  name: c2\n"
                  "  <<: [*base, *extra]\n"   /* earlier maps in the list win */
                  "c3: {'<<': *base}\n");     /* a quoted << is an ordinary key */
    PT_CHECK(y != NULL);
    json_t *j = J("{\"base\": {\"connect_timeout\": \"1s\", \"lb_policy\": \"ROUND_ROBIN\", \"type\": \"STATIC\"},"
                  " \"extra\": {\"lb_policy\": \"RANDOM\", \"name\": \"fromextra\", \"x\": 1},"
                  " \"c1\": {\"name\": \"c1\", \"lb_policy\": \"LEAST_REQUEST\", \"connect_timeout\": \"1s\","
                  "   \"type\": \"STATIC\"},"
                  " \"c2\": {\"name\": \"c2\", \"connect_timeout\": \"1s\", \"lb_policy\": \"ROUND_ROBIN\","
                  "   \"type\": \"STATIC\", \"x\": 1},"
                  " \"c3\": {\"<<\": {\"connect_timeout\": \"1s\", \"lb_policy\": \"ROUND_ROBIN\","
                  "   \"type\": \"STATIC\"}}}");
    PT_CHECK(same_tree(y, j));
    json_decref(y);
    json_decref(j);

    PT_CHECK(Y("a: 1\nb:\n  <<: [1, 2]\n") == NULL);
    PT_CHECK_STR(err, "line 3 column 7: merge key value is not a mapping");
    PT_CHECK(Y("a: 1\nb:\n  <<: 5\n") == NULL);
    PT_CHECK_STR(err, "line 3 column 7: merge key value is not a mapping");
    PT_CHECK(Y("a: &a {x: 1}\nb:\n  <<: [*a, [*a]]\n") == NULL);
    PT_CHECK_STR(err, "line 3 column 7: merge key value is not a mapping");
    /* Two merge keys in one mapping: the first would be lost. */
    PT_CHECK(Y("a: &a {x: 1}\nb:\n  <<: *a\n  y: 2\n  <<: *a\n") == NULL);
    PT_CHECK_STR(err, "line 5 column 3: duplicate key \"<<\"");
    /* A mapping written in place merges like an alias. */
    json_t *m = Y("b: {<<: {x: 1, y: 2}, y: 3}\n");
    PT_CHECK(m != NULL);
    json_t *mj = J("{\"b\": {\"y\": 3, \"x\": 1}}");
    PT_CHECK(same_tree(m, mj));
    json_decref(m);
    json_decref(mj);
}

static void test_duplicate_keys(void)
{
    PT_CHECK(Y("a: 1\nb: 2\na: 3\n") == NULL);
    PT_CHECK_STR(err, "line 3 column 1: duplicate key \"a\"");
    PT_CHECK(Y("top:\n  x:\n    name: a\n    port: 1\n    name: b\n") == NULL);
    PT_CHECK_STR(err, "line 5 column 5: duplicate key \"name\"");
    PT_CHECK(Y("l: [{a: 1, a: 2}]\n") == NULL);
    PT_CHECK_STR(err, "line 1 column 12: duplicate key \"a\"");
    /* "1" and 1 are the same JSON key. */
    PT_CHECK(Y("1: a\n'1': b\n") == NULL);
    PT_CHECK_STR(err, "line 2 column 1: duplicate key \"1\"");
    /* Complex keys have no JSON form. */
    PT_CHECK(Y("? [a, b]\n: 1\n") == NULL);
    PT_CHECK_STR(err, "line 1 column 3: mapping keys must be scalars");
    PT_CHECK(Y("{a: 1, {b: 2}: 3}\n") == NULL);
    PT_CHECK_STR(err, "line 1 column 8: mapping keys must be scalars");
}

static void test_documents_and_empty(void)
{
    PT_CHECK(Y("a: 1\n---\nb: 2\n") == NULL);
    PT_CHECK_STR(err, "the file holds more than one YAML document");
    /* A broken second document is an error, not silently ignored. */
    PT_CHECK(Y("a: 1\n---\nb: [1\n") == NULL);
    PT_CHECK_STR(err, "line 4 column 1: did not find expected ',' or ']' while parsing a flow "
                      "sequence started at line 3 column 4");
    /* Explicit start and end markers around one document are fine. */
    json_t *y = Y("---\na: 1\n...\n");
    PT_CHECK(y != NULL);
    PT_CHECK_INT(json_integer_value(json_object_get(y, "a")), 1);
    json_decref(y);

    PT_CHECK(Y("") == NULL);
    PT_CHECK_STR(err, "the file is empty");
    PT_CHECK(Y("# just a comment\n\n") == NULL);
    PT_CHECK_STR(err, "the file is empty");
    PT_CHECK(pt_yaml_parse(NULL, 0, err, sizeof(err)) == NULL);
    PT_CHECK_STR(err, "the file is empty");
}

/* A string of n copies of `open`, then `middle`, then n copies of `close`. */
static char *nest(const char *open, int n, const char *middle, const char *close)
{
    size_t lo = strlen(open), lm = strlen(middle), lc = strlen(close);
    char *t = malloc((size_t)n * (lo + lc) + lm + 1), *p = t;
    for (int i = 0; i < n; i++, p += lo)
        memcpy(p, open, lo);
    memcpy(p, middle, lm);
    p += lm;
    for (int i = 0; i < n; i++, p += lc)
        memcpy(p, close, lc);
    *p = '\0';
    return t;
}

/* Y() on an allocated text, which is freed. */
static json_t *Yfree(char *text)
{
    json_t *v = Y(text);
    free(text);
    return v;
}

/* Nesting is judged at the first collection too deep, whatever the style, so a document
 * nested 100k levels is rejected after reading a few thousand characters of it (loaded
 * whole, libyaml took tens of seconds over one; the limit's message proves the early stop:
 * libyaml itself has no such message). */
static void test_nesting_limit(void)
{
    /* 128 levels are fine, in flow and block style, sequences and mappings. */
    json_t *y = Yfree(nest("[", PT_DOC_MAX_DEPTH, "1", "]"));
    PT_CHECK(y != NULL);
    json_t *cur = y;
    for (int i = 1; i < PT_DOC_MAX_DEPTH; i++)
        cur = json_array_get(cur, 0);
    PT_CHECK_INT(json_integer_value(json_array_get(cur, 0)), 1);
    json_decref(y);
    y = Yfree(nest("{a: ", PT_DOC_MAX_DEPTH, "1", "}"));
    PT_CHECK(y != NULL);
    json_decref(y);
    y = Yfree(nest("- ", PT_DOC_MAX_DEPTH, "1\n", ""));
    PT_CHECK(y != NULL);
    json_decref(y);

    /* The 129th level is rejected where it begins. */
    PT_CHECK(Yfree(nest("[", PT_DOC_MAX_DEPTH + 1, "1", "]")) == NULL);
    PT_CHECK_STR(err, "line 1 column 129: nesting deeper than 128 levels");

    /* 100k levels, flow and block, sequences and mappings. */
    PT_CHECK(Yfree(nest("[", 100000, "", "]")) == NULL);
    PT_CHECK_STR(err, "line 1 column 129: nesting deeper than 128 levels");
    PT_CHECK(Yfree(nest("{a: ", 100000, "1", "}")) == NULL);
    PT_CHECK_STR(err, "line 1 column 513: nesting deeper than 128 levels");
    PT_CHECK(Yfree(nest("- ", 100000, "1\n", "")) == NULL);
    PT_CHECK_STR(err, "line 1 column 257: nesting deeper than 128 levels");
    /* Mixed: each "a: [" opens a mapping and a sequence (in flow, a single pair). */
    PT_CHECK(Yfree(nest("a: [", 100000, "", "]")) == NULL);
    PT_CHECK_STR(err, "line 1 column 257: nesting deeper than 128 levels");
    /* Block mappings, one level per indented line. */
    size_t cap = 200 * 204 + 16, o = 0;
    char *deep = malloc(cap);
    for (int i = 0; i < 200; i++)
        o += (size_t)sprintf(deep + o, "%*sk:\n", i, "");
    sprintf(deep + o, "%*sv: 1\n", 200, "");
    PT_CHECK(Yfree(deep) == NULL);
    PT_CHECK_STR(err, "line 129 column 129: nesting deeper than 128 levels");

    /* A second document is read for its errors only, within the same bound. */
    char *two = malloc(100000 * 2 + 16);
    strcpy(two, "a: 1\n---\n");
    char *inner = nest("[", 100000, "", "]");
    strcat(two, inner);
    free(inner);
    PT_CHECK(Yfree(two) == NULL);
    PT_CHECK_STR(err, "line 3 column 129: nesting deeper than 128 levels");
}

/* Every value of the tree counts, aliases once per expansion: a document stops at the first
 * value past the bound, and an alias is checked before it is copied. */
static void test_value_limit(void)
{
    /* [1,1,...,1]: the list and its items, exactly the bound, then one more. */
    size_t n = PT_DOC_MAX_VALUES - 1;
    char *text = malloc(2 * n + 8);
    text[0] = '[';
    for (size_t i = 0; i < n; i++) {
        text[1 + 2 * i] = '1';
        text[2 + 2 * i] = ',';
    }
    strcpy(text + 2 * n, "]");
    json_t *y = Y(text);
    PT_CHECK(y != NULL);
    PT_CHECK_INT(json_array_size(y), n);
    json_decref(y);
    strcpy(text + 2 * n, ",1]");
    y = Y(text);
    free(text);
    PT_CHECK(y == NULL);
    PT_CHECK_STR(err, "line 1 column 8388608: the document holds more than 4194304 values");

    /* Mapping keys are not values, mappings are. */
    y = Y("a: {b: 1, c: [x, y]}\n");
    PT_CHECK(y != NULL);
    json_decref(y);
}

/* "Billion laughs": nine lines aliasing aliases would expand to 10^9 values; the document is
 * stopped at the alias that would pass the bound, before copying it. */
static void test_alias_bomb(void)
{
    const char *bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                       "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                       "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                       "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                       "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                       "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                       "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
                       "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
                       "i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n";
    /* a..f hold 11 + 111 + ... + 1111111 = 1234566 values, each *f adds 1111111: the 4th
     * would pass 4194304. */
    PT_CHECK(Y(bomb) == NULL);
    PT_CHECK_STR(err, "line 7 column 16: alias *f expands the document to more than 4194304 "
                      "values");

    /* Legitimate reuse: one anchored block merged into 5000 clusters is well within. */
    size_t cap = 5000 * 64 + 256, o = 0;
    char *text = malloc(cap);
    o += (size_t)sprintf(text + o, "defaults: &d {connect_timeout: 1s, type: STATIC, "
                                   "lb_policy: ROUND_ROBIN, per_connection_buffer_limit_bytes: 1024}\n"
                                   "clusters:\n");
    for (int i = 0; i < 5000; i++)
        o += (size_t)sprintf(text + o, "- {<<: *d, name: c%d}\n", i);
    json_t *y = Y(text);
    free(text);
    PT_CHECK(y != NULL);
    json_t *cl = json_object_get(y, "clusters");
    PT_CHECK_INT(json_array_size(cl), 5000);
    PT_CHECK_STR(json_string_value(json_object_get(json_array_get(cl, 4999), "name")), "c4999");
    PT_CHECK_STR(json_string_value(json_object_get(json_array_get(cl, 4999), "type")), "STATIC");
    json_decref(y);
}

static void test_size_limit(void)
{
    /* The length is judged before a byte is read: a text that claims to be larger is
     * refused as such. */
    PT_CHECK(pt_yaml_parse("a: 1\n", (size_t)PT_DOC_MAX_BYTES + 1, err, sizeof(err)) == NULL);
    PT_CHECK_STR(err, "larger than 67108864 bytes (64 MiB)");
}

static void test_syntax_errors(void)
{
    /* Tabs cannot indent YAML. */
    PT_CHECK(Y("a:\n\tb: 1\n") == NULL);
    PT_CHECK_STR(err, "line 2 column 1: found character that cannot start any token while "
                      "scanning for the next token");
    PT_CHECK(Y("a: 1\n b: 2\n") == NULL);
    PT_CHECK_STR(err, "line 2 column 3: mapping values are not allowed in this context");
    PT_CHECK(Y("a: 'unterminated\n") == NULL);
    PT_CHECK_STR(err, "line 2 column 1: found unexpected end of stream while scanning a quoted "
                      "scalar started at line 1 column 4");
    PT_CHECK(Y("a: {b: 1\n") == NULL);
    PT_CHECK_STR(err, "line 2 column 1: did not find expected ',' or '}' while parsing a flow "
                      "mapping started at line 1 column 4");
    PT_CHECK(Y("- a\nb: 1\n") == NULL);
    PT_CHECK_STR(err, "line 2 column 1: did not find expected '-' indicator while parsing a "
                      "block collection started at line 1 column 1");
    /* A NUL byte is not YAML text. */
    PT_CHECK(pt_yaml_parse("a: 1\0b", 6, err, sizeof(err)) == NULL);
    PT_CHECK_STR(err, "line 1 column 5: control characters are not allowed");
}

int main(void)
{
    PT_RUN(test_yaml_equals_json);
    PT_RUN(test_scalar_typing);
    PT_RUN(test_anchors_and_aliases);
    PT_RUN(test_merge_keys);
    PT_RUN(test_duplicate_keys);
    PT_RUN(test_documents_and_empty);
    PT_RUN(test_nesting_limit);
    PT_RUN(test_value_limit);
    PT_RUN(test_alias_bomb);
    PT_RUN(test_size_limit);
    PT_RUN(test_syntax_errors);
    PT_TEST_EXIT();
}
