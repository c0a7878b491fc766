/* Unit tests for discovery/discovery_response and discovery/file_subscription: good
 * DiscoveryResponse files in JSON and YAML (plain and Resource-wrapped resources, proto3
 * camelCase), each kind of bad file with its exact error, a resource's fields read with
 * their path in the file; the subscription's outcomes (accepted, failed, rejected by the
 * envelope or by the consumer) with Envoy's counters and version_text, a change delivered
 * from the loop once, an identical rewrite not at all, and freeing from the callback. */
#include "discovery/discovery_response.h"
#include "discovery/file_subscription.h"
#include "proxy/stats.h"
#include "pt_test.h"
#include "pt_test_json.h"

#include <ev.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CLUSTER_TYPE  "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define CLA_TYPE      "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
#define LISTENER_TYPE "type.googleapis.com/envoy.config.listener.v3.Listener"
#define WRAPPER_TYPE  "type.googleapis.com/envoy.service.discovery.v3.Resource"

static char tmp_root[PATH_MAX];
static struct ev_loop *loop;

static void fmt(char *out, size_t len, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *out, size_t len, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(out, len, f, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= len) {
        fprintf(stderr, "test string too long: %s\n", out);
        abort();
    }
}

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static int atomic_write(const char *path, const char *text)
{
    char tmp[PATH_MAX];
    fmt(tmp, sizeof(tmp), "%s.tmp", path);
    return write_file(tmp, text) == 0 ? rename(tmp, path) : -1;
}

/* Parses s as a response of type type_url; the joined errors (or "" when accepted). */
static char errbuf[4096];
static const char *parse_errors(const char *s, const char *type_url)
{
    json_t *doc = J(s);
    pt_discovery_response_t resp;
    errbuf[0] = '\0';
    if (pt_discovery_response_parse(doc, type_url, &resp, errbuf, sizeof(errbuf)) == 0)
        errbuf[0] = '\0';
    else if (errbuf[0] == '\0')
        fmt(errbuf, sizeof(errbuf), "(failed without a reason)");
    pt_discovery_response_dispose(&resp);
    json_decref(doc);
    return errbuf;
}

/* ---- the envelope ------------------------------------------------------------------- */

static void test_response_good(void)
{
    json_t *doc =
        J("{'version_info': 'v7', 'type_url': '" CLUSTER_TYPE "', 'nonce': 'n1', "
          "'canary': false, 'control_plane': {'identifier': 'cp-1'}, 'resources': ["
          "{'@type': '" CLUSTER_TYPE "', 'name': 'a', 'connect_timeout': '1s'},"
          "{'@type': '" WRAPPER_TYPE "', 'name': 'b', 'version': '3', 'resource': "
          "{'@type': '" CLUSTER_TYPE "', 'name': 'b'}},"
          "{'@type': '" WRAPPER_TYPE "', 'resource': {'@type': '" CLUSTER_TYPE "', 'name': 'c'}},"
          "{'@type': '" CLUSTER_TYPE "'}]}");
    pt_discovery_response_t resp;
    char err[512];
    PT_CHECK_INT(pt_discovery_response_parse(doc, CLUSTER_TYPE, &resp, err, sizeof(err)), 0);
    json_decref(doc); /* the response holds its own reference */
    PT_CHECK_STR(resp.version_info, "v7");
    PT_CHECK_INT(resp.nresources, 4);
    PT_CHECK_STR(resp.resources[0].name, "a");
    PT_CHECK_STR(resp.resources[0].path, "resources[0]");
    PT_CHECK(resp.resources[0].version == NULL);
    PT_CHECK_STR(json_string_value(json_object_get(resp.resources[0].json, "connect_timeout")),
                 "1s");
    PT_CHECK_STR(resp.resources[1].name, "b");
    PT_CHECK_STR(resp.resources[1].version, "3");
    PT_CHECK_STR(resp.resources[1].path, "resources[1].resource");
    PT_CHECK_STR(json_string_value(json_object_get(resp.resources[1].json, "@type")), CLUSTER_TYPE);
    PT_CHECK_STR(resp.resources[2].name, "c"); /* the wrapper says none: the resource's */
    PT_CHECK(resp.resources[3].name == NULL);  /* nameless: the consumer will say so */
    pt_discovery_response_dispose(&resp);

    /* proto3 JSON spellings; no version, no resources: an empty update. */
    doc = J("{'versionInfo': '9', 'typeUrl': '" CLUSTER_TYPE "'}");
    PT_CHECK_INT(pt_discovery_response_parse(doc, CLUSTER_TYPE, &resp, err, sizeof(err)), 0);
    PT_CHECK_STR(resp.version_info, "9");
    PT_CHECK_INT(resp.nresources, 0);
    pt_discovery_response_dispose(&resp);
    json_decref(doc);
    doc = J("{}");
    PT_CHECK_INT(pt_discovery_response_parse(doc, CLUSTER_TYPE, &resp, err, sizeof(err)), 0);
    PT_CHECK_STR(resp.version_info, "");
    pt_discovery_response_dispose(&resp);
    json_decref(doc);

    /* A ClusterLoadAssignment is named by its cluster_name. */
    doc = J("{'resources': [{'@type': '" CLA_TYPE "', 'cluster_name': 'x'},"
            "{'@type': '" CLA_TYPE "', 'clusterName': 'y'}]}");
    PT_CHECK_INT(pt_discovery_response_parse(doc, CLA_TYPE, &resp, err, sizeof(err)), 0);
    PT_CHECK_STR(resp.resources[0].name, "x");
    PT_CHECK_STR(resp.resources[1].name, "y");
    pt_discovery_response_dispose(&resp);
    json_decref(doc);
}

static void test_response_bad(void)
{
    static const struct {
        const char *json, *errors;
    } cases[] = {
        {"[]", "(root): a DiscoveryResponse must be an object"},
        {"{'resources': {}}", "resources: {} is not a list"},
        {"{'resources': [5]}", "resources[0]: 5 is not an object"},
        {"{'resources': [{'name': 'a'}]}", "resources[0].@type: is required"},
        {"{'resources': [{'@type': 5, 'name': 'a'}]}", "resources[0].@type: 5 is not a string"},
        {"{'resources': [{'@type': '" CLUSTER_TYPE "', 'name': 'a'}, {'@type': '" LISTENER_TYPE
         "', 'name': 'b'}]}",
         "resources[1].@type: is " LISTENER_TYPE ", expected " CLUSTER_TYPE},
        {"{'type_url': '" LISTENER_TYPE "'}",
         "type_url: is " LISTENER_TYPE ", expected " CLUSTER_TYPE},
        {"{'version_info': 5}", "version_info: 5 is not a string"},
        {"{'resources': [], 'version': '1'}", "version: unknown field"},
        {"{'control_plane': {'identifier': 'x', 'id': 1}}", "control_plane.id: unknown field"},
        {"{'canary': 'yes'}", "canary: \"yes\" is not a boolean"},
        {"{'resources': [{'@type': '" WRAPPER_TYPE "', 'name': 'a'}]}",
         "resources[0].resource: is required"},
        {"{'resources': [{'@type': '" WRAPPER_TYPE "', 'resource': {'name': 'a'}}]}",
         "resources[0].resource.@type: is required"},
        {"{'resources': [{'@type': '" WRAPPER_TYPE "', 'resource': {'@type': '" LISTENER_TYPE
         "', 'name': 'a'}}]}",
         "resources[0].resource.@type: is " LISTENER_TYPE ", expected " CLUSTER_TYPE},
        {"{'resources': [{'@type': '" WRAPPER_TYPE
         "', 'name': 'a', 'resource': {'@type': '" CLUSTER_TYPE "', 'name': 'b'}}]}",
         "resources[0].name: \"a\" is not the resource's name \"b\""},
        {"{'resources': [{'@type': '" WRAPPER_TYPE
         "', 'ttl': '5s', 'resource': {'@type': '" CLUSTER_TYPE "', 'name': 'b'}}]}",
         "resources[0].ttl: field is not supported"},
        {"{'resources': [{'@type': '" WRAPPER_TYPE
         "', 'colour': 1, 'resource': {'@type': '" CLUSTER_TYPE "', 'name': 'b'}}]}",
         "resources[0].colour: unknown field"},
        {"{'resources': [{'@type': '" CLUSTER_TYPE "', 'name': 'a'}, {'@type': '" CLUSTER_TYPE
         "', 'name': 'b'}, {'@type': '" WRAPPER_TYPE "', 'resource': {'@type': '" CLUSTER_TYPE
         "', 'name': 'a'}}]}",
         "resources[2]: duplicate name \"a\" (resources[0] has it too)"},
        /* Every error, in the order of the file. */
        {"{'version_info': 1, 'resources': [{'@type': 'x'}, 7], 'extra': true}",
         "version_info: 1 is not a string; resources[0].@type: is x, expected " CLUSTER_TYPE
         "; resources[1]: 7 is not an object; extra: unknown field"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = parse_errors(cases[i].json, CLUSTER_TYPE);
        if (strcmp(got, cases[i].errors) != 0)
            fprintf(stderr, "  case %zu: %s\n", i, cases[i].json);
        PT_CHECK_STR(got, cases[i].errors);
    }
}

/* A resource's own fields are read with paths that say where the resource is. */
static void test_resource_reader(void)
{
    json_t *doc = J("{'resources': [{'@type': '" CLUSTER_TYPE "', 'name': 'a'},"
                    "{'@type': '" WRAPPER_TYPE "', 'resource': {'@type': '" CLUSTER_TYPE
                    "', 'name': 'b', 'connectTimeout': 'abc', 'bogus': 1}}]}");
    pt_discovery_response_t resp;
    char err[512];
    PT_CHECK_INT(pt_discovery_response_parse(doc, CLUSTER_TYPE, &resp, err, sizeof(err)), 0);
    for (size_t i = 0; i < resp.nresources; i++) {
        pt_cfg_t r;
        pt_discovery_resource_reader(&resp.resources[i], &r);
        const char *name;
        uint64_t ms;
        pt_cfg_string(&r, "name", &name, NULL);
        pt_cfg_duration_ms(&r, "connect_timeout", &ms, 5000);
        pt_cfg_finish(&r);
        if (i == 0) {
            PT_CHECK_INT(r.nerrors, 0);
        } else {
            char *all = pt_cfg_errors_joined(&r);
            PT_CHECK_STR(all, "resources[1].resource.connect_timeout: \"abc\" is not a duration "
                              "(expected a string like \"1.5s\")\n"
                              "resources[1].resource.bogus: unknown field\n");
            free(all);
        }
        pt_cfg_dispose(&r);
    }
    pt_discovery_response_dispose(&resp);
    json_decref(doc);
}

/* ---- the subscription --------------------------------------------------------------- */

typedef struct consumer {
    int calls;
    char version[64];
    char names[256];                 /* the resources' names, comma-separated */
    const char *reject;              /* when set, refuse with this reason */
    pt_file_subscription_t *free_me; /* when set, free it from the callback */
} consumer_t;

static int on_update(void *data, const pt_discovery_response_t *resp, char *err, size_t errlen)
{
    consumer_t *c = data;
    c->calls++;
    fmt(c->version, sizeof(c->version), "%s", resp->version_info);
    c->names[0] = '\0';
    for (size_t i = 0; i < resp->nresources; i++) {
        size_t used = strlen(c->names);
        fmt(c->names + used, sizeof(c->names) - used, "%s%s", i ? "," : "",
            resp->resources[i].name ? resp->resources[i].name : "?");
    }
    if (c->free_me != NULL) {
        pt_file_subscription_free(c->free_me);
        c->free_me = NULL;
    }
    if (c->reject != NULL) {
        fmt(err, errlen, "%s", c->reject);
        return -1;
    }
    return 0;
}

static uint64_t stat_of(const char *name)
{
    pt_stat_t id = pt_stats_find(name);
    return id ? pt_stats_value(id) : (uint64_t)-1;
}

/* attempt, success, failure, rejected of cluster_manager.<api>. as "a/s/f/r". */
static const char *counts(const char *api)
{
    static char out[96];
    char n[4][96];
    static const char *const which[] = {"update_attempt", "update_success", "update_failure",
                                        "update_rejected"};
    for (int i = 0; i < 4; i++)
        fmt(n[i], sizeof(n[i]), "cluster_manager.%s.%s", api, which[i]);
    fmt(out, sizeof(out), "%llu/%llu/%llu/%llu", (unsigned long long)stat_of(n[0]),
        (unsigned long long)stat_of(n[1]), (unsigned long long)stat_of(n[2]),
        (unsigned long long)stat_of(n[3]));
    return out;
}

static const char *version_text(const char *api)
{
    static char out[64];
    char n[96];
    fmt(n, sizeof(n), "cluster_manager.%s.version_text", api);
    char *v = pt_stats_text_value(pt_stats_find(n), NULL);
    fmt(out, sizeof(out), "%s", v ? v : "(none)");
    free(v);
    return out;
}

static pt_file_subscription_t *subscribe(const char *path, const char *api, consumer_t *c)
{
    char prefix[32];
    fmt(prefix, sizeof(prefix), "%s.", api);
    const pt_file_subscription_config_t cfg = {
        .path = path,
        .type_url = CLUSTER_TYPE,
        .stat_scope = "cluster_manager",
        .stat_prefix = prefix,
        .what = "clusters",
    };
    return pt_file_subscription_new(&cfg, on_update, c);
}

#define GOOD_JSON(v, names) "{\"version_info\": \"" v "\", \"resources\": [" names "]}"
#define CL(n)               "{\"@type\": \"" CLUSTER_TYPE "\", \"name\": \"" n "\"}"

static void test_subscription_load(void)
{
    char path[PATH_MAX], err[2048], want[PATH_MAX + 256];
    fmt(path, sizeof(path), "%s/cds.json", tmp_root);
    PT_CHECK(write_file(path, GOOD_JSON("1", CL("a") "," CL("b"))) == 0);
    consumer_t c = {0};
    pt_file_subscription_t *s = subscribe(path, "cds_load", &c);
    PT_CHECK(s != NULL);
    PT_CHECK_STR(counts("cds_load"), "0/0/0/0");
    PT_CHECK_STR(pt_file_subscription_version(s), "");
    PT_CHECK_INT(pt_file_subscription_load(s, err, sizeof(err)), PT_UPDATE_ACCEPTED);
    PT_CHECK_INT(c.calls, 1);
    PT_CHECK_STR(c.version, "1");
    PT_CHECK_STR(c.names, "a,b");
    PT_CHECK_STR(counts("cds_load"), "1/1/0/0");
    PT_CHECK_STR(version_text("cds_load"), "1");
    PT_CHECK_STR(pt_file_subscription_version(s), "1");

    /* Not read at all: update_failure, the consumer is not called. */
    PT_CHECK(unlink(path) == 0);
    PT_CHECK_INT(pt_file_subscription_load(s, err, sizeof(err)), PT_UPDATE_FAILED);
    fmt(want, sizeof(want), "%s: No such file or directory", path);
    PT_CHECK_STR(err, want);
    PT_CHECK(write_file(path, "{\"resources\": [") == 0);
    PT_CHECK_INT(pt_file_subscription_load(s, err, sizeof(err)), PT_UPDATE_FAILED);
    fmt(want, sizeof(want), "%s: line 1 column 15: ", path);
    PT_CHECK(strncmp(err, want, strlen(want)) == 0);
    PT_CHECK_INT(c.calls, 1);
    PT_CHECK_STR(counts("cds_load"), "3/1/2/0");

    /* Read and invalid: update_rejected; the version stays the last accepted one. */
    PT_CHECK(write_file(path,
                        "{\"version_info\": \"2\", \"resources\": [{\"@type\": \"" LISTENER_TYPE
                        "\"}]}") == 0);
    PT_CHECK_INT(pt_file_subscription_load(s, err, sizeof(err)), PT_UPDATE_REJECTED);
    fmt(want, sizeof(want), "%s: resources[0].@type: is %s, expected %s", path, LISTENER_TYPE,
        CLUSTER_TYPE);
    PT_CHECK_STR(err, want);
    PT_CHECK_INT(c.calls, 1);
    c.reject = "resources[1].connect_timeout: \"abc\" is not a duration";
    PT_CHECK(write_file(path, GOOD_JSON("3", CL("a") "," CL("c"))) == 0);
    PT_CHECK_INT(pt_file_subscription_load(s, err, sizeof(err)), PT_UPDATE_REJECTED);
    fmt(want, sizeof(want), "%s: resources[1].connect_timeout: \"abc\" is not a duration", path);
    PT_CHECK_STR(err, want);
    PT_CHECK_INT(c.calls, 2);
    PT_CHECK_STR(counts("cds_load"), "5/1/2/2");
    PT_CHECK_STR(version_text("cds_load"), "1");
    PT_CHECK_STR(pt_file_subscription_version(s), "1");
    c.reject = NULL;

    /* YAML, by the extension. */
    char ypath[PATH_MAX];
    fmt(ypath, sizeof(ypath), "%s/cds.yaml", tmp_root);
    PT_CHECK(write_file(ypath, "version_info: y1\n"
                               "resources:\n"
                               "- \"@type\": " CLUSTER_TYPE "\n"
                               "  name: ya\n"
                               "- \"@type\": " WRAPPER_TYPE "\n"
                               "  name: yb\n"
                               "  resource:\n"
                               "    \"@type\": " CLUSTER_TYPE "\n"
                               "    name: yb\n") == 0);
    consumer_t cy = {0};
    pt_file_subscription_t *sy = subscribe(ypath, "cds_yaml", &cy);
    PT_CHECK_INT(pt_file_subscription_load(sy, err, sizeof(err)), PT_UPDATE_ACCEPTED);
    PT_CHECK_STR(cy.version, "y1");
    PT_CHECK_STR(cy.names, "ya,yb");
    PT_CHECK(write_file(ypath, "resources: [\n") == 0);
    PT_CHECK_INT(pt_file_subscription_load(sy, err, sizeof(err)), PT_UPDATE_FAILED);
    fmt(want, sizeof(want), "%s: line 2 column 1: ", ypath);
    PT_CHECK(strncmp(err, want, strlen(want)) == 0);
    PT_CHECK_STR(counts("cds_yaml"), "2/1/1/0");
    pt_file_subscription_free(sy);

    /* Freed by its own consumer while loading: the outcome is still counted. */
    PT_CHECK(write_file(path, GOOD_JSON("4", CL("a"))) == 0);
    c.free_me = s;
    PT_CHECK_INT(pt_file_subscription_load(s, err, sizeof(err)), PT_UPDATE_ACCEPTED);
    PT_CHECK_INT(c.calls, 3);
    PT_CHECK_STR(counts("cds_load"), "6/2/2/2");
}

static int expired;
static void on_guard(struct ev_loop *l, ev_timer *t, int revents)
{
    (void)l, (void)t, (void)revents;
    expired = 1;
}

static int run_until(const int *counter, int want)
{
    ev_timer guard;
    ev_timer_init(&guard, on_guard, 60.0, 0);
    expired = 0;
    ev_timer_start(loop, &guard);
    while (*counter < want && !expired)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &guard);
    return *counter >= want;
}

static void test_subscription_watch(void)
{
    char dir[PATH_MAX], path[PATH_MAX], err[2048];
    fmt(dir, sizeof(dir), "%s/watch", tmp_root);
    PT_CHECK(mkdir(dir, 0755) == 0);
    fmt(path, sizeof(path), "%s/cds.json", dir);
    PT_CHECK(write_file(path, GOOD_JSON("1", CL("a"))) == 0);
    consumer_t c = {0};
    pt_file_subscription_t *s = subscribe(path, "cds_watch", &c);
    PT_CHECK_INT(pt_file_subscription_load(s, err, sizeof(err)), PT_UPDATE_ACCEPTED);
    /* Changed between the load and the watch: delivered when watching starts. */
    PT_CHECK(atomic_write(path, GOOD_JSON("2", CL("a") "," CL("b"))) == 0);
    PT_CHECK_INT(pt_file_subscription_watch(s, loop, err, sizeof(err)), 0);
    PT_CHECK_INT(c.calls, 2);
    PT_CHECK_STR(c.version, "2");
    PT_CHECK_STR(counts("cds_watch"), "2/2/0/0");
    /* Watching twice is watching once. */
    PT_CHECK_INT(pt_file_subscription_watch(s, loop, err, sizeof(err)), 0);
    /* A change, from the loop. */
    PT_CHECK(atomic_write(path, GOOD_JSON("3", CL("c"))) == 0);
    PT_CHECK(run_until(&c.calls, 3));
    PT_CHECK_STR(c.version, "3");
    PT_CHECK_STR(c.names, "c");
    PT_CHECK_STR(version_text("cds_watch"), "3");
    /* The same bytes again, then a real change: only the change is an update. */
    PT_CHECK(write_file(path, GOOD_JSON("3", CL("c"))) == 0);
    PT_CHECK(write_file(path, GOOD_JSON("4", CL("d"))) == 0);
    PT_CHECK(run_until(&c.calls, 4));
    PT_CHECK_STR(c.version, "4");
    PT_CHECK_STR(counts("cds_watch"), "4/4/0/0");
    /* Removed: one failure, however long it stays away. */
    PT_CHECK(unlink(path) == 0);
    int failures_before = (int)stat_of("cluster_manager.cds_watch.update_failure");
    int failures = failures_before;
    ev_timer guard;
    ev_timer_init(&guard, on_guard, 60.0, 0);
    expired = 0;
    ev_timer_start(loop, &guard);
    while (failures == failures_before && !expired) {
        ev_run(loop, EVRUN_ONCE);
        failures = (int)stat_of("cluster_manager.cds_watch.update_failure");
    }
    ev_timer_stop(loop, &guard);
    PT_CHECK_INT(failures, 1);
    PT_CHECK(atomic_write(path, GOOD_JSON("5", CL("e"))) == 0);
    PT_CHECK(run_until(&c.calls, 5));
    PT_CHECK_STR(counts("cds_watch"), "6/5/1/0");
    /* Freed from its callback on the loop. */
    c.free_me = s;
    PT_CHECK(atomic_write(path, GOOD_JSON("6", CL("f"))) == 0);
    PT_CHECK(run_until(&c.calls, 6));
    PT_CHECK_STR(counts("cds_watch"), "7/6/1/0");

    /* Watching a directory that is not there. */
    char missing[PATH_MAX], want[PATH_MAX * 2 + 64];
    fmt(missing, sizeof(missing), "%s/nodir/cds.json", dir);
    consumer_t cm = {0};
    pt_file_subscription_t *sm = subscribe(missing, "cds_missing", &cm);
    PT_CHECK_INT(pt_file_subscription_load(sm, err, sizeof(err)), PT_UPDATE_FAILED);
    PT_CHECK_INT(pt_file_subscription_watch(sm, loop, err, sizeof(err)), -1);
    fmt(want, sizeof(want), "%s: cannot watch %s/nodir: No such file or directory", missing, dir);
    PT_CHECK_STR(err, want);
    pt_file_subscription_free(sm);
}

int main(void)
{
    if (pt_stats_thread_init() != 0)
        return 1;
    fmt(tmp_root, sizeof(tmp_root), "/tmp/pt_ut_file_subscription_XXXXXX");
    if (mkdtemp(tmp_root) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    loop = ev_loop_new(EVFLAG_AUTO);
    PT_RUN(test_response_good);
    PT_RUN(test_response_bad);
    PT_RUN(test_resource_reader);
    PT_RUN(test_subscription_load);
    PT_RUN(test_subscription_watch);
    ev_loop_destroy(loop);
    char cmd[PATH_MAX + 16];
    fmt(cmd, sizeof(cmd), "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0)
        return 1;
    PT_TEST_EXIT();
}
