"""stats_config end to end: stats_tags (custom regexes and fixed values), use_all_default_tags
and stats_matcher, as /stats, /stats/prometheus and the process's memory show them.

- Envoy's default tag extraction on a real config: response codes and classes, cluster
  names, the connection manager's prefix, the listener's address become labels.
- stats_tags: a custom regex (first group removed, second the value) and a fixed value show
  in /stats/prometheus; use_all_default_tags false leaves only them; promtool still passes.
- stats_matcher: exclusion and inclusion lists and reject_all remove stats from /stats and
  /stats/prometheus while traffic flows as before; with many clusters the rejected stats'
  memory is not spent (RSS with and without the matcher, printed).
- Bad input (a bad regex, a regex without a group, a tag given twice, a matcher without
  patterns) is an error naming the path.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_stats_config.py -v
"""

import json
import os
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402


def http_config(port, admin, up_port, clusters=('web',), **extra):
    rc = h.route_config([h.vhost('all', ['*'], [h.route_prefix('/', clusters[0])])])
    return h.bootstrap([h.listener('http', port, [h.http_connection_manager('ingress', rc)])],
                       [h.cluster(c, [up_port]) for c in clusters], admin_port=admin,
                       stats_flush_on_admin=True, **extra)


class Running:
    """A petrel with an HTTP listener to one upstream, and requests through it."""

    def __init__(self, up, **extra):
        self.port, self.admin = h.free_ports(2)
        self.p = h.Petrel(http_config(self.port, self.admin, up.port, **extra), concurrency=1)
        self.p.start()

    def get(self, path='/'):
        r = h.http_request(self.port, 'GET', path)
        return r.status

    def prom(self):
        status, _, body = self.p.admin_get('/stats/prometheus')
        assert status == 200, status
        return body

    def stats_text(self):
        return self.p.admin_get('/stats')[2].decode()


class TagsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = HttpUpstream(name='web')

    @classmethod
    def tearDownClass(cls):
        cls.up.close()

    def test_default_tags(self):
        r = Running(self.up)
        try:
            self.assertEqual(r.get('/status/404'), 404)
            self.assertEqual(r.get('/'), 200)
            prom = r.prom()
            # cluster.web.upstream_rq_404 -> the response code and the cluster are labels.
            self.assertIn(b'envoy_cluster_upstream_rq{envoy_response_code="404",'
                          b'envoy_cluster_name="web"} 1\n', prom)
            # Envoy's names, no suffix added: upstream_rq_total keeps its own family.
            self.assertIn(b'envoy_cluster_upstream_rq_total{envoy_cluster_name="web"} 2\n', prom)
            self.assertIn(b'envoy_cluster_upstream_rq_xx{envoy_response_code_class="4",'
                          b'envoy_cluster_name="web"} 1\n', prom)
            self.assertIn(b'envoy_http_downstream_rq_xx{envoy_response_code_class="2",'
                          b'envoy_http_conn_manager_prefix="ingress"} 1\n', prom)
            self.assertIn(b'envoy_listener_downstream_cx_total{envoy_listener_address='
                          b'"127.0.0.1_%d"}' % r.port, prom)
            self.assertIsNone(h.promtool_check(prom))
            # The dotted names are unchanged.
            self.assertIn('cluster.web.upstream_rq_404: 1\n', r.stats_text())
        finally:
            r.p.stop()

    def test_custom_regex_and_fixed_value(self):
        tags = {'stats_tags': [
            # The "v<N>" token of a cluster name is its version: removed with its dot.
            {'tag_name': 'version', 'regex': r'^cluster\.((v\d+)_)'},
            {'tag_name': 'mesh', 'fixed_value': 'east-1'},
        ]}
        r = Running(self.up, clusters=('v2_web',), stats_config=tags)
        try:
            self.assertEqual(r.get('/'), 200)
            prom = r.prom()
            # Fixed values first, then the defaults, then the custom regexes (Envoy's order);
            # both regexes cut from the original name: "v2_" and "v2_web.".
            self.assertIn(b'envoy_cluster_upstream_rq{mesh="east-1",envoy_response_code='
                          b'"200",envoy_cluster_name="v2_web",version="v2"} 1\n', prom)
            # Every stat carries the fixed value, untagged ones too.
            self.assertIn(b'envoy_cluster_manager_active_clusters{mesh="east-1"} 1\n', prom)
            self.assertIsNone(h.promtool_check(prom))
        finally:
            r.p.stop()

    def test_no_default_tags(self):
        tags = {'use_all_default_tags': False,
                'stats_tags': [{'tag_name': 'cluster', 'regex': r'^cluster\.((.+?)\.)'}]}
        r = Running(self.up, stats_config=tags)
        try:
            self.assertEqual(r.get('/'), 200)
            prom = r.prom()
            # The custom tag alone: the response code stays in the name, the connection
            # manager's prefix and the listener's address too.
            self.assertIn(b'envoy_cluster_upstream_rq_200{cluster="web"} 1\n', prom)
            self.assertIn(b'envoy_http_ingress_downstream_rq_2xx 1\n', prom)
            self.assertNotIn(b'envoy_cluster_name=', prom)
            self.assertNotIn(b'envoy_response_code', prom)
            self.assertIsNone(h.promtool_check(prom))
        finally:
            r.p.stop()


class MatcherTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = HttpUpstream(name='web')

    @classmethod
    def tearDownClass(cls):
        cls.up.close()

    def test_exclusion_list(self):
        m = {'stats_matcher': {'exclusion_list': {'patterns': [
            {'prefix': 'cluster.web.'}, {'safe_regex': {'regex': r'.*\.downstream_rq_\dxx'}}]}}}
        r = Running(self.up, clusters=('web', 'other'), stats_config=m)
        try:
            for _ in range(3):
                self.assertEqual(r.get('/'), 200)  # traffic to a cluster without stats
            text = r.stats_text()
            self.assertNotIn('cluster.web.', text)
            self.assertNotIn('downstream_rq_2xx', text)
            self.assertIn('cluster.other.upstream_cx_total: 0\n', text)
            self.assertIn('http.ingress.downstream_rq_total: 3\n', text)
            prom = r.prom()
            self.assertNotIn(b'envoy_cluster_name="web"', prom)
            self.assertIn(b'envoy_cluster_name="other"', prom)
            self.assertNotIn(b'envoy_http_downstream_rq_xx', prom)
            self.assertIsNone(h.promtool_check(prom))
        finally:
            r.p.stop()

    def test_inclusion_list_and_reject_all(self):
        m = {'stats_matcher': {'inclusion_list': {'patterns': [
            {'prefix': 'cluster_manager.'}, {'exact': 'http.ingress.downstream_rq_total'}]}}}
        r = Running(self.up, stats_config=m)
        try:
            self.assertEqual(r.get('/'), 200)
            names = [l.split(':')[0] for l in r.stats_text().splitlines()]
            self.assertIn('http.ingress.downstream_rq_total', names)
            self.assertTrue(all(n.startswith('cluster_manager.') or
                                n == 'http.ingress.downstream_rq_total' for n in names), names)
        finally:
            r.p.stop()
        r = Running(self.up, stats_config={'stats_matcher': {'reject_all': True}})
        try:
            self.assertEqual(r.get('/'), 200)
            self.assertEqual(r.stats_text(), '')
            self.assertEqual(r.prom(), b'')
        finally:
            r.p.stop()

    def test_memory_not_spent(self):
        """Many clusters, with and without a matcher rejecting their stats: the rejected
        stats' memory is not spent."""
        n = 3000
        clusters = ['c%04d' % i for i in range(n)]
        rss = {}
        for label, sc in (('all stats', None),
                          ('cluster.* rejected',
                           {'stats_matcher': {'exclusion_list': {
                               'patterns': [{'prefix': 'cluster.'}]}}})):
            extra = {'stats_config': sc} if sc else {}
            r = Running(self.up, clusters=clusters, **extra)
            try:
                self.assertEqual(r.get('/'), 200)
                time.sleep(0.3)
                rss[label] = r.p.rss_kb()
                live = len(r.stats_text().splitlines())
                sys.stderr.write('\n  %d clusters, %s: RSS %d KiB, %d stats\n'
                                 % (n, label, rss[label], live))
            finally:
                r.p.stop()
        # ~50 stats a cluster: at least a few MiB of names, infos and slots saved.
        self.assertLess(rss['cluster.* rejected'] + 2048, rss['all stats'], rss)


class BadInputTest(unittest.TestCase):
    def validate(self, stats_config):
        cfg = http_config(1, 2, 3, stats_config=stats_config)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'c.json')
            with open(path, 'w') as f:
                json.dump(cfg, f)
            rc, out, err = h.run_petrel(['--mode', 'validate', '-c', path])
        self.assertEqual(rc, 1, out + err)
        return out + err

    def test_errors_name_the_path(self):
        self.assertIn('stats_config.stats_tags[0].regex: "(x" is not a valid regex',
                      self.validate({'stats_tags': [{'tag_name': 'a', 'regex': '(x'}]}))
        self.assertIn('stats_config.stats_tags[1].regex: "abc" has no capture group',
                      self.validate({'stats_tags': [{'tag_name': 'a', 'fixed_value': 'b'},
                                                    {'tag_name': 'c', 'regex': 'abc'}]}))
        self.assertIn('stats_config.stats_tags[0].tag_name: "envoy.cluster_name" is specified '
                      'twice', self.validate({'stats_tags': [
                          {'tag_name': 'envoy.cluster_name', 'regex': '(x)'}]}))
        self.assertIn('stats_config.stats_matcher.exclusion_list.patterns: must list at least '
                      'one StringMatcher',
                      self.validate({'stats_matcher': {'exclusion_list': {'patterns': []}}}))
        self.assertIn('stats_config.stats_matcher: only one of',
                      self.validate({'stats_matcher': {'reject_all': True, 'inclusion_list': {
                          'patterns': [{'prefix': 'a'}]}}}))


if __name__ == '__main__':
    unittest.main()
