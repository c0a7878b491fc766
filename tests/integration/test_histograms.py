"""Histograms end to end: Envoy's latency histograms recorded by petrel's workers and shown
by the admin in Envoy's three formats.

An upstream with known delays (10 ms and 100 ms answers) gives quantiles that must lie within
a bucket of the truth in /stats text and JSON (the truth for each request lies between its
delay and what the client measured); /stats/prometheus has the _bucket/_sum/_count series with
the cluster's label and passes promtool; intervals end at each stats flush (an idle interval
shows nan, the cumulative values stay); filter and usedonly select histograms as counters;
stats_config.histogram_bucket_settings picks the Prometheus buckets; and a cluster removed by
a CDS file update takes its histograms, on every worker, with it.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_histograms.py -v
"""

import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer  # noqa: E402

QUANTILES = [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100]
CLUSTER_TYPE = 'type.googleapis.com/envoy.config.cluster.v3.Cluster'


def bucket_width(v):
    """The width of petrel's histogram bucket holding the value v (proxy/histogram.h): 1
    below 32, then 1/16 of the power of two below v."""
    v = int(v)
    if v < 32:
        return 1
    return 1 << (v.bit_length() - 1 - 4)


def quantile(sorted_values, q):
    """The value of rank ceil(q/100 * n) (the smallest for q = 0)."""
    n = len(sorted_values)
    k = max(1, math.ceil(q / 100.0 * n))
    return sorted_values[k - 1]


def http_config(port, admin, up_port, **extra):
    rc = h.route_config([h.vhost('all', ['*'], [h.route_prefix('/', 'slow', timeout='10s')])])
    return h.bootstrap([h.listener('http', port, [h.http_connection_manager('ingress', rc)])],
                       [h.cluster('slow', [up_port])], admin_port=admin, **extra)


class DelaysTest(unittest.TestCase):
    """Requests of 10 ms and 100 ms through two workers; the quantiles of upstream_rq_time and
    downstream_rq_time lie within a bucket of the truth."""

    N = 24  # requests of each delay

    @classmethod
    def setUpClass(cls):
        cls.up = HttpUpstream(name='slow')
        cls.port, cls.admin = h.free_ports(2)
        cls.p = h.Petrel(http_config(cls.port, cls.admin, cls.up.port, stats_flush_on_admin=True),
                         concurrency=2)
        try:
            cls.p.start()
            cls.low, cls.high = [], []  # (delay, client-measured) in ms

            def run(delay, out):
                # Keep-alive connections; each thread's requests land on one worker, the
                # threads' on both (SO_REUSEPORT spreads connections).
                with h.HttpClientConn(cls.port) as c:
                    for _ in range(cls.N // 4):
                        t0 = time.monotonic()
                        r = c.request('GET', '/delay/%d' % delay)
                        elapsed = (time.monotonic() - t0) * 1000
                        assert r.status == 200, r.status
                        out.append((delay, elapsed))

            threads = [threading.Thread(target=run, args=(d, cls.low if d == 10 else cls.high))
                       for d in (10, 100) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(cls.low) == cls.N and len(cls.high) == cls.N
        except BaseException:
            cls.p.close()
            cls.up.close()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.p.close()
        finally:
            cls.up.close()

    def truth_bounds(self, q):
        """The q-quantile of the true times lies between that of the delays and that of what
        the client measured (each request's true time lies between the two)."""
        reqs = self.low + self.high
        lo = quantile(sorted(d for d, _ in reqs), q)
        hi = quantile(sorted(e for _, e in reqs), q)
        return lo, hi

    def check_quantiles(self, name, values):
        """values: {quantile: estimate}."""
        for q in QUANTILES:
            lo, hi = self.truth_bounds(q)
            est = values[q]
            # One bucket either side of the true range, and 1 ms below: times are whole
            # milliseconds, rounded down.
            self.assertGreaterEqual(est, lo - bucket_width(lo) - 1,
                                    '%s P%s = %s, truth in [%s, %.1f]' % (name, q, est, lo, hi))
            self.assertLessEqual(est, hi + bucket_width(hi),
                                 '%s P%s = %s, truth in [%s, %.1f]' % (name, q, est, lo, hi))

    def test_text_quantiles(self):
        status, _, body = self.p.admin_get('/stats')
        self.assertEqual(status, 200)
        for name in ('cluster.slow.upstream_rq_time', 'http.ingress.downstream_rq_time'):
            hist = h.histogram_text(body, name)
            self.assertIsNotNone(hist, name)
            self.assertEqual(sorted(hist), QUANTILES)
            self.check_quantiles(name, {q: c for q, (i, c) in hist.items()})
        # The halves: P25 is a 10 ms request, P75 a 100 ms one.
        hist = h.histogram_text(body, 'cluster.slow.upstream_rq_time')
        self.assertLess(hist[25][1], 50)
        self.assertGreaterEqual(hist[75][1], 99)
        # Connections: made once per client connection (8), open while the test runs.
        self.assertIsNotNone(h.histogram_text(body, 'cluster.slow.upstream_cx_connect_ms'))
        # Histograms come after the counters and gauges, as in Envoy.
        lines = body.decode().splitlines()
        first_hist = min(i for i, l in enumerate(lines) if re.search(r': (P0\(|No recorded)', l))
        self.assertTrue(all(re.search(r': (P0\(|No recorded)', l) for l in lines[first_hist:]))

    def test_json_quantiles(self):
        status, hdrs, body = self.p.admin_get('/stats?format=json')
        self.assertEqual(status, 200)
        stats, hists, supported = h.histograms_json(body)
        self.assertEqual(supported, QUANTILES)
        self.assertEqual(stats['cluster.slow.upstream_rq_completed'], 2 * self.N)
        for name in ('cluster.slow.upstream_rq_time', 'http.ingress.downstream_rq_time'):
            values = hists[name]
            self.assertEqual(len(values), 10)
            self.check_quantiles(name, {q: v['cumulative'] for q, v in zip(QUANTILES, values)})

    def test_prometheus(self):
        status, hdrs, body = self.p.admin_get('/stats/prometheus')
        self.assertEqual(status, 200)
        text = body.decode()
        n = 2 * self.N
        series = dict(re.findall(r'^(envoy_cluster_upstream_rq_time_\S+) (\d+)$', text, re.M))
        lab = 'envoy_cluster_name="slow"'
        self.assertIn('# TYPE envoy_cluster_upstream_rq_time histogram\n', text)
        self.assertEqual(int(series['envoy_cluster_upstream_rq_time_count{%s}' % lab]), n)
        self.assertEqual(int(series['envoy_cluster_upstream_rq_time_bucket{%s,le="+Inf"}' % lab]), n)
        self.assertEqual(int(series['envoy_cluster_upstream_rq_time_bucket{%s,le="5"}' % lab]), 0)
        # At most the 10 ms requests are under 50 ms (100 ms ones take 100 or more); at
        # least those the client saw answered in under 50 ms (petrel's time is shorter).
        le50 = int(series['envoy_cluster_upstream_rq_time_bucket{%s,le="50"}' % lab])
        self.assertLessEqual(le50, self.N)
        self.assertGreaterEqual(le50, sum(1 for _, e in self.low if e < 50))
        self.assertEqual(int(series['envoy_cluster_upstream_rq_time_bucket{%s,le="3600000"}' % lab]),
                         n)
        total = int(series['envoy_cluster_upstream_rq_time_sum{%s}' % lab])
        self.assertGreaterEqual(total, 10 * self.N + 100 * self.N - n)
        self.assertLessEqual(total, sum(e for _, e in self.low + self.high) + n)
        # Envoy's default bounds, in order, counts never decreasing.
        les = re.findall(r'^envoy_cluster_upstream_rq_time_bucket\{%s,le="([^"]+)"\} (\d+)$'
                         % re.escape(lab), text, re.M)
        self.assertEqual([le for le, _ in les],
                         ['0.5', '1', '5', '10', '25', '50', '100', '250', '500', '1000', '2500',
                          '5000', '10000', '30000', '60000', '300000', '600000', '1800000',
                          '3600000', '+Inf'])
        counts = [int(c) for _, c in les]
        self.assertEqual(counts, sorted(counts))
        self.assertIn('envoy_http_downstream_rq_time_count{envoy_http_conn_manager_prefix='
                      '"ingress"} %d\n' % n, text)
        self.assertIn('# TYPE envoy_listener_downstream_cx_length_ms histogram\n', text)
        self.assertIsNone(h.promtool_check(body))

    def test_filter_and_usedonly(self):
        status, _, body = self.p.admin_get('/stats?filter=upstream_rq_time$')
        self.assertEqual(status, 200)
        self.assertEqual([l.split(':')[0] for l in body.decode().splitlines()],
                         ['cluster.slow.upstream_rq_time'])
        # No connection closed yet: upstream_cx_length_ms has no value.
        status, _, body = self.p.admin_get('/stats?filter=upstream_cx_length_ms')
        self.assertEqual(body.decode(), 'cluster.slow.upstream_cx_length_ms: No recorded values\n')
        status, _, body = self.p.admin_get('/stats?filter=upstream_cx_length_ms&usedonly')
        self.assertEqual(body, b'')
        status, _, body = self.p.admin_get('/stats?filter=upstream_cx&usedonly&format=json')
        stats, hists, _ = h.histograms_json(body)
        self.assertIn('cluster.slow.upstream_cx_connect_ms', hists)
        self.assertNotIn('cluster.slow.upstream_cx_length_ms', hists)
        status, _, body = self.p.admin_get('/stats/prometheus?usedonly&filter=cx_length_ms')
        self.assertNotIn(b'envoy_cluster_upstream_cx_length_ms', body)
        status, _, body = self.p.admin_get('/stats/prometheus?filter=cx_length_ms')
        self.assertIn(b'envoy_cluster_upstream_cx_length_ms_count{envoy_cluster_name="slow"} 0\n',
                      body)


class FlushIntervalTest(unittest.TestCase):
    """Without stats_flush_on_admin, histograms are merged every stats_flush_interval: values
    show after the next flush; an interval without values shows nan while the cumulative
    values stay."""

    def test_intervals(self):
        with HttpUpstream(name='slow') as up:
            port, admin = h.free_ports(2)
            cfg = http_config(port, admin, up.port, stats_flush_interval='0.2s')
            with h.Petrel(cfg, concurrency=2) as p:
                for _ in range(5):
                    self.assertEqual(h.http_request(port, 'GET', '/delay/20').status, 200)

                def hist():
                    return h.histogram_text(p.admin_get('/stats')[2],
                                            'cluster.slow.upstream_rq_time')
                h.wait_until(lambda: hist() is not None, 5, message='the values merged')
                cum = hist()[50][1]
                self.assertGreaterEqual(cum, 19)
                self.assertLessEqual(cum, 20 + 40)
                # An idle interval: nan, and the cumulative value unchanged.
                h.wait_until(lambda: math.isnan(hist()[50][0]), 5,
                             message='an interval without values')
                self.assertEqual(hist()[50][1], cum)
                # A new value: the next interval has it alone.
                self.assertEqual(h.http_request(port, 'GET', '/delay/60').status, 200)
                h.wait_until(lambda: not math.isnan(hist()[50][0]), 5,
                             message='the next interval')
                # One value: every quantile within its bucket (60..61).
                last = hist()
                self.assertGreaterEqual(last[100][0], 60 - bucket_width(60))
                self.assertLess(last[100][0] - last[0][0], bucket_width(last[100][0]))

    def test_tcp_proxy_connections(self):
        # tcp_proxy's upstream connections: connect time and length, per cluster; the
        # listener's connection length.
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            cfg = h.bootstrap([h.listener('tcp', port, [h.tcp_proxy('tcp', 'echo')])],
                              [h.cluster('echo', [echo.port])], admin_port=admin,
                              stats_flush_on_admin=True)
            with h.Petrel(cfg) as p:
                with h.tcp_connect(port) as s:
                    s.sendall(b'ping')
                    self.assertEqual(h.recv_exact(s, 4), b'ping')
                    time.sleep(0.3)
                p.wait_stat('cluster.echo.upstream_cx_destroy', 1)
                body = p.admin_get('/stats')[2]
                length = h.histogram_text(body, 'cluster.echo.upstream_cx_length_ms')
                self.assertIsNotNone(length)
                # At least the 0.3 s the client held it, within a bucket (288..303).
                self.assertGreaterEqual(length[0][1], 300 - bucket_width(300))
                self.assertIsNotNone(h.histogram_text(body, 'cluster.echo.upstream_cx_connect_ms'))
                lst = h.histogram_text(body, 'listener.127.0.0.1_%d.downstream_cx_length_ms' % port)
                self.assertGreaterEqual(lst[100][1], 300 - bucket_width(300))


class BucketSettingsTest(unittest.TestCase):

    def test_custom_buckets(self):
        with HttpUpstream(name='slow') as up:
            port, admin = h.free_ports(2)
            cfg = http_config(port, admin, up.port, stats_flush_on_admin=True, stats_config={
                'histogram_bucket_settings': [
                    {'match': {'suffix': 'upstream_rq_time'}, 'buckets': [40, 200, 5000]}]})
            with h.Petrel(cfg, fmt='yaml') as p:
                for d in (0, 80, 400):
                    self.assertEqual(h.http_request(port, 'GET', '/delay/%d' % d).status, 200)
                body = p.admin_get('/stats/prometheus')[2].decode()
                les = re.findall(r'^envoy_cluster_upstream_rq_time_bucket\{[^}]*le="([^"]+)"\} '
                                 r'(\d+)$', body, re.M)
                self.assertEqual([le for le, _ in les], ['40', '200', '5000', '+Inf'])
                self.assertEqual([int(c) for _, c in les], [1, 2, 3, 3])
                # Others keep Envoy's defaults.
                self.assertIn('envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_'
                              'prefix="ingress",le="0.5"}', body)
                self.assertIsNone(h.promtool_check(body.encode()))

    def test_bad_settings_name_the_field(self):
        port, admin = h.free_ports(2)
        cfg = http_config(port, admin, 9, stats_config={'histogram_bucket_settings': [
            {'match': {'prefix': 'cluster.'}, 'buckets': [10, 5]},
            {'match': {'prefix': 'http.'}, 'buckets': []}]})
        d = tempfile.mkdtemp(prefix='petrel-hist-')
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, 'bad.json')
        with open(path, 'w') as f:
            json.dump(cfg, f)
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', path])
        self.assertEqual(rc, 1)
        self.assertIn('stats_config.histogram_bucket_settings[0].buckets[1]: must be greater '
                      'than the bucket before it', err)
        self.assertIn('stats_config.histogram_bucket_settings[1].buckets: must list at least '
                      'one bucket', err)


def cds(version, *clusters):
    return json.dumps({'version_info': version, 'resources': list(clusters)})


class CdsReleaseTest(unittest.TestCase):
    """A cluster removed by a CDS file update takes its histograms: the names leave /stats and
    every worker's copy is freed (/memory's histogram counts go back); made again, the cluster's
    histograms start from nothing."""

    def test_removed_cluster_releases_histograms(self):
        with HttpUpstream(name='A') as up:
            port, admin = h.free_ports(2)
            d = tempfile.mkdtemp(prefix='petrel-hist-cds-')
            self.addCleanup(shutil.rmtree, d, True)
            cds_path = os.path.join(d, 'cds.json')

            def write(text):
                with open(cds_path + '.tmp', 'w') as f:
                    f.write(text)
                os.replace(cds_path + '.tmp', cds_path)

            n = 40
            clusters = []
            for i in range(n):
                c = h.cluster('c%d' % i, [up.port])
                c['@type'] = CLUSTER_TYPE
                clusters.append(c)
            # The upstream closes each connection after its answer (its /close): no pooled
            # connection keeps a removed cluster (and its stats) alive.
            routes = [h.route_prefix('/c%d/' % i, 'c%d' % i, timeout='5s',
                                     prefix_rewrite='/close') for i in range(n)]
            rc = h.route_config([h.vhost('all', ['*'], routes)], validate_clusters=False)
            cfg = h.bootstrap(
                [h.listener('http', port, [h.http_connection_manager('ingress', rc)])], [],
                admin_port=admin, stats_flush_on_admin=True,
                dynamic_resources={'cds_config': {'path_config_source': {'path': cds_path},
                                                  'resource_api_version': 'V3'}})
            write(cds('1'))
            with h.Petrel(cfg, concurrency=2) as p:
                def memory():
                    return {k: int(v) for k, v in json.loads(p.admin_get('/memory')[2]).items()}
                base = memory()
                write(cds('2', *clusters))
                p.wait_stat('cluster_manager.active_clusters', n)
                # Requests to every cluster on both workers (two connections each), each
                # upstream connection closed after its answer (cx_length recorded too).
                for conn in range(4):
                    with h.HttpClientConn(port) as c:
                        for i in range(n):
                            self.assertEqual(c.request('GET', '/c%d/' % i).status, 200)
                self.assertEqual(memory()['histograms'], base['histograms'] + 3 * n)
                # Every cluster's three on some worker (cx_length once petrel saw the close).
                h.wait_until(lambda: memory()['histogram_thread_copies'] >=
                             base['histogram_thread_copies'] + 3 * n, 10,
                             message='thread copies made (%s)' % memory())
                before = memory()['histogram_thread_copies']
                body = p.admin_get('/stats?filter=^cluster\\.c7\\.')[2]
                self.assertIsNotNone(h.histogram_text(body, 'cluster.c7.upstream_rq_time'))
                # Removed: names and memory go (once the last version is released, on the
                # main thread's next tick).
                write(cds('3'))
                p.wait_stat('cluster_manager.active_clusters', 0)
                h.wait_until(lambda: b'cluster.c7.' not in p.admin_get('/stats')[2], 10,
                             message='the removed clusters\' stats released')
                h.wait_until(lambda: memory()['histograms'] == base['histograms'], 10,
                             message='histograms released (%s)' % memory())
                # Every cluster's copies went; what is left is the listener's and the
                # connection manager's three histograms, on at most both workers.
                after = memory()['histogram_thread_copies']
                self.assertGreaterEqual(before - after, 3 * n)
                self.assertLessEqual(after, 3 * 2)
                # Back again: from nothing.
                write(cds('4', clusters[7]))
                p.wait_stat('cluster_manager.active_clusters', 1)
                body = p.admin_get('/stats?filter=^cluster\\.c7\\.upstream_rq_time$')[2]
                self.assertEqual(body, b'cluster.c7.upstream_rq_time: No recorded values\n')

    def test_pooled_connections_let_go(self):
        # A removed cluster's idle pooled connections close, on every worker, and its stats
        # and histograms go with its last version; a request in flight finishes first.
        with HttpUpstream(name='A') as up:
            port, admin = h.free_ports(2)
            d = tempfile.mkdtemp(prefix='petrel-hist-cds-')
            self.addCleanup(shutil.rmtree, d, True)
            cds_path = os.path.join(d, 'cds.json')

            def write(text):
                with open(cds_path + '.tmp', 'w') as f:
                    f.write(text)
                os.replace(cds_path + '.tmp', cds_path)

            a = h.cluster('a', [up.port])
            a['@type'] = CLUSTER_TYPE
            rc = h.route_config([h.vhost('all', ['*'], [h.route_prefix('/', 'a', timeout='5s')])],
                                validate_clusters=False)
            cfg = h.bootstrap(
                [h.listener('http', port, [h.http_connection_manager('ingress', rc)])], [],
                admin_port=admin, stats_flush_on_admin=True,
                dynamic_resources={'cds_config': {'path_config_source': {'path': cds_path},
                                                  'resource_api_version': 'V3'}})
            write(cds('1', a))
            with h.Petrel(cfg, concurrency=2) as p:
                for _ in range(4):
                    with h.HttpClientConn(port) as c:
                        self.assertEqual(c.request('GET', '/x').status, 200)
                slow = h.HttpClientConn(port)
                slow.send_request('GET', '/delay/600')
                h.wait_until(lambda: len(up.requests) == 5, 5)
                self.assertEqual(p.stat('cluster.a.upstream_cx_destroy'), 0)
                write(cds('2'))
                p.wait_stat('cluster_manager.active_clusters', 0)
                # The idle ones close now; the busy one after its answer.
                p.wait_stat('cluster.a.upstream_cx_destroy', lambda v: v and v >= 1)
                r = slow.read_response()
                self.assertEqual(r.status, 200)
                slow.close()
                h.wait_until(lambda: p.stat('cluster.a.upstream_cx_total') is None, 10,
                             message='the removed cluster\'s stats released')
                self.assertNotIn(b'cluster.a.', p.admin_get('/stats')[2])
                self.assertEqual(json.loads(p.admin_get('/memory')[2])['histograms'], '3')


if __name__ == '__main__':
    unittest.main()
