"""envoy.filters.http.health_check: petrel answers load balancer health checks itself,
fails them on POST /healthcheck/fail (and while draining), passes them through to the
upstream in pass_through_mode, and fails them when a cluster has too few healthy hosts.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_http_health_check_filter.py -v
"""

import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

HC_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck'


def hc_filter(pass_through=False, **extra):
    tc = {'@type': HC_TYPE, 'pass_through_mode': pass_through,
          'headers': [{'name': ':path', 'string_match': {'exact': '/healthz'}}]}
    tc.update(extra)
    return {'name': 'envoy.filters.http.health_check', 'typed_config': tc}


class HealthCheckFilterTest(unittest.TestCase):

    def setUp(self):
        self.up = HttpUpstream(name='app')
        self.addCleanup(self.up.close)

    def config(self, filt, endpoints=None, cluster_extra=None):
        self.port, self.admin = h.free_ports(2)
        hcm = h.http_connection_manager('in', h.route_config([
            h.vhost('all', ['*'], [h.route_prefix('/', 'app')])]),
            http_filters=[filt, h.router_filter()])
        return h.bootstrap([h.listener('http', self.port, [hcm])],
                           [h.cluster('app', endpoints or [self.up.port],
                                      **(cluster_extra or {}))],
                           admin_port=self.admin)

    def get(self, path):
        return h.http_request(self.port, 'GET', path)

    def test_answered_here_and_failed_from_the_admin(self):
        with h.Petrel(self.config(hc_filter())) as p:
            r = self.get('/healthz')
            self.assertEqual(r.status, 200)
            self.assertIsNone(r.get('x-envoy-immediate-health-check-fail'))
            self.assertEqual(self.get('/other').status, 200)
            self.assertEqual([rec['path'] for rec in self.up.requests], ['/other'])
            self.assertEqual(p.admin_post('/healthcheck/fail')[0], 200)
            r = self.get('/healthz')
            self.assertEqual(r.status, 503)
            self.assertEqual(r.get('x-envoy-immediate-health-check-fail'), 'true')
            self.assertEqual(self.get('/other').status, 200)   # only health checks fail
            self.assertEqual(p.admin_post('/healthcheck/ok')[0], 200)
            self.assertEqual(self.get('/healthz').status, 200)
            self.assertEqual(p.admin_get('/healthcheck/fail')[0], 405)   # POST only

    def test_pass_through_mode(self):
        with h.Petrel(self.config(hc_filter(pass_through=True))) as p:
            self.assertEqual(self.get('/healthz').status, 200)
            self.assertEqual(self.up.last['path'], '/healthz')
            p.admin_post('/healthcheck/fail')
            r = self.get('/healthz')
            self.assertEqual(r.status, 503)
            self.assertEqual(len(self.up.requests), 1)   # not sent upstream this time

    def test_cluster_min_healthy_percentages(self):
        dead = h.dead_port()
        hc = {'timeout': '0.5s', 'interval': '0.2s', 'unhealthy_threshold': 1,
              'healthy_threshold': 1, 'tcp_health_check': {}}
        for percent, status in ((60.0, 503), (50.0, 200)):
            filt = hc_filter(cluster_min_healthy_percentages={'app': {'value': percent}})
            cfg = self.config(filt, endpoints=[self.up.port, dead],
                              cluster_extra={'health_checks': [hc]})
            with h.Petrel(cfg) as p:
                p.wait_stat('cluster.app.membership_healthy', 1)
                self.assertEqual(self.get('/healthz').status, status, percent)

    def test_unknown_cluster_fails_the_check(self):
        # As in Envoy: a cluster that does not exist is no error in the config (it may come
        # later from a control plane), but the health check fails while it is missing.
        filt = hc_filter(cluster_min_healthy_percentages={'nope': {'value': 0}})
        with h.Petrel(self.config(filt)):
            r = self.get('/healthz')
            self.assertEqual(r.status, 503)
            self.assertEqual(r.get('x-envoy-immediate-health-check-fail'), 'true')

    def test_config_errors(self):
        cases = [
            (hc_filter(cache_time='5s'), 'cache_time: field is not supported'),
            ({'name': 'envoy.filters.http.health_check', 'typed_config': {
                '@type': HC_TYPE, 'headers': [{'name': ':path', 'exact_match': '/h'}]}},
             'pass_through_mode: is required'),
            ({'name': 'envoy.filters.http.health_check', 'typed_config': {
                '@type': HC_TYPE, 'pass_through_mode': False}},
             'headers: is required'),
        ]
        for filt, message in cases:
            with self.subTest(message=message):
                with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
                    json.dump(self.config(filt), f)
                self.addCleanup(os.unlink, f.name)
                rc, out, err = h.run_petrel(['--mode', 'validate', '-c', f.name])
                self.assertEqual(rc, 1, err)
                self.assertIn(message, err)


if __name__ == '__main__':
    unittest.main(verbosity=2)
