/* Unit tests for proxy/cluster_manager: CDS updates applied whole or not at all, the work of
 * an update following what changed (an unchanged resource keeps its version), state and
 * hosts kept across versions, views published after each applied change, and every way an
 * update is rejected, with its path. */
#include "discovery/discovery_response.h"
#include "proxy/cluster.h"
#include "proxy/cluster_manager.h"
#include "proxy/config.h"
#include "pt_test.h"
#include "pt_test_boot.h"
#include "pt_test_json.h"

#define TYPE "'@type':'type.googleapis.com/envoy.config.cluster.v3.Cluster'"
#define EP(port)                                                                           \
    "{'endpoint':{'address':{'socket_address':{'address':'127.0.0.1','port_value':" #port "}}}}"
#define FIELDS(name, timeout, port)                                                        \
    "'name':'" name "','connect_timeout':'" timeout "','load_assignment':"                  \
    "{'cluster_name':'" name "','endpoints':[{'lb_endpoints':[" EP(port) "]}]}"
#define CLUSTER(name, timeout, port) "{" TYPE "," FIELDS(name, timeout, port) "}"

typedef struct published {
    pt_view_t *last;
    int count;
} published_t;

static void on_publish(void *data, pt_view_t *v)
{
    published_t *p = data;
    pt_view_unref(p->last);
    p->last = v;
    p->count++;
}

/* Checks a response's envelope as a subscription does, then applies it; returns the errors
 * (caller frees) or NULL when applied. */
static char *apply(pt_cluster_manager_t *cm, const char *json)
{
    json_t *root = J(json);
    char err[4096];
    pt_discovery_response_t resp;
    int rc = pt_discovery_response_parse(root, "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                                         &resp, err, sizeof(err));
    if (rc == 0)
        rc = pt_cluster_manager_apply_cds(cm, &resp, err, sizeof(err));
    pt_discovery_response_dispose(&resp);
    json_decref(root);
    return rc == 0 ? NULL : strdup(err[0] ? err : "rejected without errors");
}

static pt_cluster_manager_t *with_static(published_t *p, pt_boot_t **cfg)
{
    pt_cfg_t r;
    json_t *root = J("{'static_resources':{'clusters':[{" FIELDS("boot", "1s", 9000) "}]}}");
    pt_cfg_init(&r, root);
    *cfg = pt_test_boot(root, &r);
    json_decref(root);
    pt_cfg_dispose(&r);
    if (*cfg == NULL)
        abort();
    pt_cluster_manager_t *cm = pt_cluster_manager_new(on_publish, p);
    if (cm == NULL || pt_cluster_manager_set_static(cm, (*cfg)->view) != 0)
        abort();
    return cm;
}

static void test_add_change_remove(void)
{
    published_t p = {0};
    pt_boot_t *cfg;
    pt_cluster_manager_t *cm = with_static(&p, &cfg);
    PT_CHECK_INT(p.count, 1);
    PT_CHECK_INT(p.last->nclusters, 1);

    char *err = apply(cm, "{'version_info':'1','resources':[" CLUSTER("a", "1s", 9001) ","
                          CLUSTER("b", "1s", 9002) "]}");
    PT_CHECK(err == NULL);
    free(err);
    PT_CHECK_INT(p.count, 2);
    PT_CHECK_INT(p.last->nclusters, 3);
    pt_cluster_t *a1 = pt_view_find_cluster(p.last, "a");
    pt_cluster_t *b1 = pt_view_find_cluster(p.last, "b");
    PT_CHECK(a1 != NULL && b1 != NULL && pt_view_find_cluster(p.last, "boot") != NULL);
    PT_CHECK_STR(pt_cluster_manager_cds_version(cm), "1");

    /* Same resources, new version string: nothing is rebuilt. */
    err = apply(cm, "{'version_info':'2','resources':[" CLUSTER("a", "1s", 9001) ","
                    CLUSTER("b", "1s", 9002) "]}");
    PT_CHECK(err == NULL);
    PT_CHECK(pt_view_find_cluster(p.last, "a") == a1);
    PT_CHECK(pt_view_find_cluster(p.last, "b") == b1);

    /* One changes: a new version of it, sharing its state and host; the other stays. */
    pt_host_t *host_a = a1->hosts[0];
    atomic_store(&host_a->rq_total, 42);
    pt_view_t *old = pt_view_ref(p.last);
    err = apply(cm, "{'version_info':'3','resources':[" CLUSTER("a", "2s", 9001) ","
                    CLUSTER("b", "1s", 9002) "]}");
    PT_CHECK(err == NULL);
    pt_cluster_t *a2 = pt_view_find_cluster(p.last, "a");
    PT_CHECK(a2 != NULL && a2 != a1);
    PT_CHECK_INT(a2->connect_timeout_ms, 2000);
    PT_CHECK(a2->state == a1->state);
    PT_CHECK(a2->hosts[0] == host_a);
    PT_CHECK_INT(atomic_load(&a2->hosts[0]->rq_total), 42);
    PT_CHECK(pt_view_find_cluster(p.last, "b") == b1);
    /* A request that pinned the old view still has the old version. */
    PT_CHECK(pt_view_find_cluster(old, "a") == a1);
    PT_CHECK_INT(a1->connect_timeout_ms, 1000);
    pt_view_unref(old);

    /* b leaves; the static cluster stays whatever CDS says. A request still holding b
     * keeps its stats; they go with the last version of b. */
    PT_CHECK(pt_stats_find("cluster.b.upstream_rq_total") != 0);
    pt_cluster_t *b_held = pt_cluster_ref(b1);
    err = apply(cm, "{'version_info':'4','resources':[" CLUSTER("a", "2s", 9001) "]}");
    PT_CHECK(err == NULL);
    PT_CHECK(pt_view_find_cluster(p.last, "b") == NULL);
    PT_CHECK(pt_stats_find("cluster.b.upstream_rq_total") != 0);
    pt_cluster_unref(b_held);
    PT_CHECK_INT(pt_stats_find("cluster.b.upstream_rq_total"), 0);
    PT_CHECK_INT(pt_stats_find("cluster.b.membership_total"), 0);
    PT_CHECK(pt_stats_find("cluster.a.upstream_rq_total") != 0);
    PT_CHECK(pt_view_find_cluster(p.last, "boot") != NULL);
    PT_CHECK_INT(p.last->nclusters, 2);
    /* An empty update removes every dynamic cluster. */
    err = apply(cm, "{'version_info':'5','resources':[]}");
    PT_CHECK(err == NULL);
    PT_CHECK_INT(p.last->nclusters, 1);

    pt_cluster_manager_free(cm);
    pt_view_unref(p.last);
    pt_boot_free(cfg);
}

static void test_rejections_change_nothing(void)
{
    published_t p = {0};
    pt_boot_t *cfg;
    pt_cluster_manager_t *cm = with_static(&p, &cfg);
    char *err = apply(cm, "{'version_info':'1','resources':[" CLUSTER("a", "1s", 9001) "]}");
    PT_CHECK(err == NULL);
    pt_cluster_t *a1 = pt_view_find_cluster(p.last, "a");
    int published = p.count;
    struct {
        const char *json, *error;
    } cases[] = {
        /* One bad cluster among good ones: the whole update goes. */
        {"{'version_info':'2','resources':[" CLUSTER("a", "3s", 9001) ","
         "{" TYPE ",'name':'b','connect_timeout':'abc'}]}",
         "resources[1].connect_timeout: \"abc\" is not a duration"},
        {"{'version_info':'2','resources':[{" TYPE ",'name':'c','type':'ORIGINAL_DST'}]}",
         "resources[0].lb_policy: ROUND_ROBIN is not valid for a cluster of type ORIGINAL_DST"},
        {"{'version_info':'2','resources':[" CLUSTER("boot", "1s", 9000) "]}",
         "resources[0].name: \"boot\" is a static cluster of the bootstrap: CDS cannot change it"},
        {"{'version_info':'2','resources':[" CLUSTER("d", "1s", 1) "," CLUSTER("d", "2s", 1) "]}",
         "resources[1]"},
        {"{'version_info':'2','resources':[{'@type':'type.googleapis.com/envoy.config.listener."
         "v3.Listener','name':'l'}]}",
         "resources[0].@type"},
        {"{'version_info':'2','resources':[{" TYPE ",'name':'e','lb_policy':'NOPE'}]}",
         "resources[0].lb_policy: "},
        {"{'version_info':'2','resources':[{" TYPE ",'name':'e','spare':1}]}",
         "resources[0].spare: unknown field"},
        {"{'version_info':'2','resources':7}", "resources"},
        {"{'version_info':'2','resourcez':[]}", "resourcez: unknown field"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err = apply(cm, cases[i].json);
        PT_CHECK(err != NULL);
        if (err != NULL && strstr(err, cases[i].error) == NULL) {
            fprintf(stderr, "  case %zu: want \"%s\" in:\n%s\n", i, cases[i].error, err);
            PT_CHECK(0);
        }
        free(err);
        /* Nothing changed, nothing was published. */
        PT_CHECK_INT(p.count, published);
        PT_CHECK(pt_view_find_cluster(p.last, "a") == a1);
        PT_CHECK_INT(p.last->nclusters, 2);
        PT_CHECK_STR(pt_cluster_manager_cds_version(cm), "1");
    }
    const char *v;
    const char *last = pt_cluster_manager_last_rejected(cm, &v);
    /* The manager keeps the last update it refused (envelope errors are its source's). */
    PT_CHECK(last != NULL && strstr(last, "resources[0].spare: unknown field") != NULL);
    PT_CHECK_STR(v, "2");
    pt_cluster_manager_free(cm);
    pt_view_unref(p.last);
    pt_boot_free(cfg);
}

int main(void)
{
    if (pt_stats_thread_init() != 0)
        return 1;
    PT_RUN(test_add_change_remove);
    PT_RUN(test_rejections_change_nothing);
    PT_TEST_EXIT();
}
