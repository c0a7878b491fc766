"""Per-route HTTP filter configs end to end: typed_per_filter_config on routes, virtual hosts
and route configurations (the most specific wins), envoy.config.route.v3.FilterConfig
(disabled, is_optional, config), HttpFilter.disabled and is_optional, for the filters that
take a per-route config: local_ratelimit (a bucket of its own per route; the filter's may be
left out), fault (the route's HTTPFault replaces the filter's) and rbac (RBACPerRoute).

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_per_route_filters.py -v
"""

import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

T = 'type.googleapis.com/'
LRL = T + 'envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit'
FAULT = T + 'envoy.extensions.filters.http.fault.v3.HTTPFault'
RBAC = T + 'envoy.extensions.filters.http.rbac.v3.RBAC'
RBAC_ROUTE = T + 'envoy.extensions.filters.http.rbac.v3.RBACPerRoute'
FILTER_CONFIG = T + 'envoy.config.route.v3.FilterConfig'
ALL = {'numerator': 100, 'denominator': 'HUNDRED'}


def lrl(stat_prefix, tokens=None):
    c = {'@type': LRL, 'stat_prefix': stat_prefix,
         'filter_enabled': {'default_value': ALL, 'runtime_key': 'e'},
         'filter_enforced': {'default_value': ALL, 'runtime_key': 'f'}}
    if tokens is not None:
        c['token_bucket'] = {'max_tokens': tokens, 'tokens_per_fill': 1, 'fill_interval': '3600s'}
    return c


def abort(status):
    return {'@type': FAULT, 'abort': {'http_status': status, 'percentage': ALL}}


def route(prefix, per_filter=None, **extra):
    r = h.route_prefix(prefix, 'app', **extra)
    if per_filter is not None:
        r['typed_per_filter_config'] = per_filter
    return r


def rbac_allow_header(name, typed=True):
    c = {'rules': {'action': 'ALLOW', 'policies': {'hdr': {
        'permissions': [{'header': {'name': name, 'present_match': True}}],
        'principals': [{'any': True}]}}}}
    if typed:
        c['@type'] = RBAC
    return c


class PerRouteFilters(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = HttpUpstream(name='app')

    @classmethod
    def tearDownClass(cls):
        cls.up.close()

    def start(self, vhosts, filters, **rc_extra):
        self.port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('ingress', h.route_config(vhosts, **rc_extra),
                                        http_filters=filters + [h.router_filter()])
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster('app', [self.up.port])], admin_port=admin)
        p = h.Petrel(cfg)
        p.__enter__()
        self.addCleanup(p.__exit__, None, None, None)
        return p

    def status(self, path, host='a', headers=None):
        return h.http_request(self.port, 'GET', path, headers=headers, host_header=host).status

    def test_local_ratelimit_per_route(self):
        # The filter has no bucket of its own: only routes with one are limited, each by its
        # own bucket and stats.
        p = self.start([h.vhost('a', ['*'], [
            route('/two', {'rl': lrl('two', tokens=2)}),
            route('/one', {'rl': {'@type': FILTER_CONFIG, 'config': lrl('one', tokens=1)}}),
            route('/'),
        ])], [{'name': 'rl', 'typed_config': lrl('filter')}])
        self.assertEqual([self.status('/two') for _ in range(3)], [200, 200, 429])
        self.assertEqual([self.status('/one') for _ in range(2)], [200, 429])
        self.assertEqual([self.status('/free') for _ in range(5)], [200] * 5)
        p.wait_stat('two.http_local_rate_limit.rate_limited', 1)
        p.wait_stat('one.http_local_rate_limit.rate_limited', 1)
        self.assertEqual(p.stat('two.http_local_rate_limit.ok'), 2)
        self.assertEqual(p.stat('filter.http_local_rate_limit.enabled', 0), 0)

    def test_fault_most_specific_wins_and_disabled_filters(self):
        # A fault filter disabled by default; a virtual host enables it (FilterConfig without
        # a config: the filter's own abort 503), one route replaces its config (418), one
        # route disables it again; another virtual host never enables it.
        self.start([
            h.vhost('a', ['a'], [
                route('/teapot', {'fault': abort(418)}),
                route('/off', {'fault': {'@type': FILTER_CONFIG, 'disabled': True}}),
                route('/'),
            ], typed_per_filter_config={'fault': {'@type': FILTER_CONFIG}}),
            h.vhost('b', ['b'], [route('/')]),
        ], [{'name': 'fault', 'disabled': True, 'typed_config': abort(503)}])
        self.assertEqual(self.status('/x', host='a'), 503)
        self.assertEqual(self.status('/teapot', host='a'), 418)
        self.assertEqual(self.status('/off', host='a'), 200)
        self.assertEqual(self.status('/x', host='b'), 200)

    def test_route_configuration_level(self):
        # typed_per_filter_config on the route configuration applies to every virtual host
        # that does not say otherwise.
        self.start([h.vhost('a', ['a'], [route('/')]),
                    h.vhost('b', ['b'], [route('/')],
                            typed_per_filter_config={'fault': abort(429)})],
                   [{'name': 'fault', 'typed_config': {'@type': FAULT}}],
                   typed_per_filter_config={'fault': abort(418)})
        self.assertEqual(self.status('/', host='a'), 418)
        self.assertEqual(self.status('/', host='b'), 429)

    def test_rbac_per_route(self):
        # The filter allows only requests with x-ok; /public has an RBACPerRoute without
        # rules (not checked), /strict one of its own (x-admin).
        p = self.start([h.vhost('a', ['*'], [
            route('/public', {'rbac': {'@type': RBAC_ROUTE}}),
            route('/strict', {'rbac': {'@type': RBAC_ROUTE,
                                       'rbac': rbac_allow_header('x-admin', typed=False)}}),
            route('/'),
        ])], [{'name': 'rbac', 'typed_config': rbac_allow_header('x-ok')}])
        self.assertEqual(self.status('/x'), 403)
        self.assertEqual(self.status('/x', headers={'x-ok': '1'}), 200)
        self.assertEqual(self.status('/public'), 200)
        self.assertEqual(self.status('/strict', headers={'x-ok': '1'}), 403)
        self.assertEqual(self.status('/strict', headers={'x-admin': '1'}), 200)
        # The filter's stats count the route's decisions too.
        p.wait_stat('http.ingress.rbac.denied', 2)

    def test_optional_filters(self):
        # An optional HTTP filter petrel does not have is left out; so is an optional
        # per-route config of one.
        cors = T + 'envoy.extensions.filters.http.cors.v3.Cors'
        cors_route = T + 'envoy.extensions.filters.http.cors.v3.CorsPolicy'
        self.start([h.vhost('a', ['*'], [route('/', {'cors': {
            '@type': FILTER_CONFIG, 'is_optional': True, 'config': {'@type': cors_route}}})])],
            [{'name': 'cors', 'is_optional': True, 'typed_config': {'@type': cors}}])
        self.assertEqual(self.status('/'), 200)

    def validate(self, vhosts, filters):
        port = h.free_port()
        hcm = h.http_connection_manager('ingress', h.route_config(vhosts),
                                        http_filters=filters + [h.router_filter()])
        cfg = h.bootstrap([h.listener('http', port, [hcm])], [h.cluster('app', [self.up.port])])
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'c.json')
            with open(path, 'w') as f:
                json.dump(cfg, f)
            rc, out, err = h.run_petrel(['--mode', 'validate', '-c', path])
        return rc, out + err

    def test_bad_input(self):
        rc, out = self.validate([h.vhost('a', ['*'], [route('/', {'x': {
            '@type': T + 'envoy.extensions.filters.http.cors.v3.CorsPolicy'}})])], [])
        self.assertEqual(rc, 1, out)
        self.assertIn('routes[0].typed_per_filter_config.x.@type: "type.googleapis.com/envoy.'
                      'extensions.filters.http.cors.v3.CorsPolicy" is not the per-route config '
                      'of an HTTP filter petrel has', out)
        rc, out = self.validate([h.vhost('a', ['*'], [route('/', {'rl': lrl('r')})])], [])
        self.assertEqual(rc, 1, out)
        self.assertIn('typed_per_filter_config.rl.token_bucket: is required in a route\'s '
                      'local rate limit config', out)
        rc, out = self.validate([h.vhost('a', ['*'], [route('/')])],
                                [{'name': 'cors', 'typed_config': {
                                    '@type': T + 'envoy.extensions.filters.http.cors.v3.Cors'}}])
        self.assertEqual(rc, 1, out)
        self.assertIn('is not a supported HTTP filter', out)


if __name__ == '__main__':
    unittest.main()
