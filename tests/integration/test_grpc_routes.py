"""gRPC over petrel's routes: local replies, retries on gRPC status, grpc-timeout, and the
answer when the route's cluster is missing.

petrel's own answers to gRPC requests: every local reply (no route, no healthy upstream,
an upstream that refuses connections, a timeout, an RBAC denial, a direct response) to a
request whose content-type is application/grpc is a trailers-only gRPC response, as Envoy
makes it: 200, content-type application/grpc, grpc-status mapped from the HTTP status
(404 UNIMPLEMENTED, 403 PERMISSION_DENIED, 503/504 UNAVAILABLE, others UNKNOWN), the body
as a percent-encoded grpc-message, and no body. Requests that are not gRPC keep the HTTP
answer; a gRPC status a filter names itself (fault) is kept.

Retries on the grpc-status of a trailers-only answer (retry_on cancelled, deadline-exceeded,
internal, resource-exhausted, unavailable; x-envoy-retry-grpc-on), not on other statuses,
and not on the HTTP conditions given in x-envoy-retry-grpc-on. A route with max_grpc_timeout
takes a gRPC request's grpc-timeout (less grpc_timeout_offset, capped) as its timeout and
tells the upstream in grpc-timeout. cluster_not_found_response_code picks the status of a
route whose cluster does not exist (NC).

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_grpc_routes.py -v
"""

import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

RBAC_HTTP_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC'
GRPC = {'content-type': 'application/grpc', 'te': 'trailers'}


class GrpcLocalReplyTest(unittest.TestCase):

    def setUp(self):
        self.up = HttpUpstream(name='A')
        self.addCleanup(self.up.close)
        self.port, self.admin = h.free_ports(2)
        deny_path = {'policies': {'deny': {
            'permissions': [{'url_path': {'path': {'prefix': '/denied/'}}}],
            'principals': [{'any': True}]}}, 'action': 'DENY'}
        routes = [
            h.route_prefix('/ok/', 'a'),
            h.route_prefix('/delay/', 'a', timeout='0.2s'),
            h.route_prefix('/down/', 'down'),
            h.route_prefix('/empty/', 'empty'),
            h.route_prefix('/denied/', 'a'),
            {'match': {'prefix': '/direct/'},
             'direct_response': {'status': 503, 'body': {'inline_string': 'closed 100%'}}},
        ]
        log = {'name': 'envoy.access_loggers.stdout', 'typed_config': {
            '@type': 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.'
                     'StdoutAccessLog',
            'log_format': {'text_format_source': {'inline_string':
                'GRPC %REQ(:PATH)% %RESPONSE_CODE% %GRPC_STATUS% %GRPC_STATUS_NUMBER%\n'}}}}
        hcm = h.http_connection_manager(
            'ingress', h.route_config([h.vhost('all', ['*'], routes)]),
            http_filters=[{'name': 'envoy.filters.http.rbac', 'typed_config': {
                '@type': RBAC_HTTP_TYPE, 'rules': deny_path}}, h.router_filter()],
            access_log=[log])
        empty = h.cluster('empty', [])
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster('a', [self.up.port]), h.cluster('down', [h.dead_port()]),
                           empty], admin_port=self.admin)
        self.p = h.Petrel(cfg)
        self.addCleanup(self.p.close)
        self.p.start()

    def grpc(self, path, **kw):
        return h.http_request(self.port, 'POST', path, headers=dict(GRPC, **kw),
                              body=b'\x00\x00\x00\x00\x00')

    def assertGrpc(self, r, status, message):
        self.assertEqual(r.status, 200)
        self.assertEqual(r.get('content-type'), 'application/grpc')
        self.assertEqual(r.get('grpc-status'), str(status))
        self.assertEqual(r.get('grpc-message'), message)
        self.assertEqual(r.body, b'')

    def test_each_local_reply_is_a_grpc_status(self):
        self.assertEqual(self.grpc('/ok/x').status, 200)  # proxied as it is
        self.assertGrpc(self.grpc('/nowhere'), 12, None)  # 404 no route: UNIMPLEMENTED
        self.assertGrpc(self.grpc('/empty/x'), 14, 'no healthy upstream')
        r = self.grpc('/down/x')  # connection refused: 503 UNAVAILABLE
        self.assertEqual((r.status, r.get('grpc-status')), (200, '14'))
        self.assertIn('connect', r.get('grpc-message'))
        self.assertGrpc(self.grpc('/denied/x'), 7, 'RBAC: access denied')
        self.assertGrpc(self.grpc('/direct/x'), 14, 'closed 100%25')  # percent-encoded
        # %GRPC_STATUS%: the answer's (a proxied 200 without one maps to Unknown)
        for line in ('GRPC /ok/x 200 Unknown 2', 'GRPC /nowhere 200 Unimplemented 12',
                     'GRPC /empty/x 200 Unavailable 14', 'GRPC /denied/x 200 PermissionDenied 7'):
            self.wait_access(line)
        h.http_request(self.port, 'GET', '/empty/x')
        self.wait_access('GRPC /empty/x 503 - -')

    def wait_access(self, line):
        h.wait_until(lambda: line in self.p.stdout(), message='access log %r' % line)

    def test_timeout_is_unavailable(self):
        self.assertGrpc(self.grpc('/delay/3000'), 14, 'upstream request timeout')

    def test_grpc_web_and_parameters_count_as_grpc(self):
        for ct in ('application/grpc+proto', 'application/grpc;charset=utf-8'):
            r = h.http_request(self.port, 'POST', '/empty/x', headers={'content-type': ct})
            self.assertEqual((r.status, r.get('grpc-status')), (200, '14'), ct)
        r = h.http_request(self.port, 'POST', '/empty/x',
                           headers={'content-type': 'application/grpcx'})
        self.assertEqual(r.status, 503)

    def test_other_requests_keep_the_http_answer(self):
        r = h.http_request(self.port, 'GET', '/empty/x')
        self.assertEqual(r.status, 503)
        self.assertEqual(r.body, b'no healthy upstream')
        self.assertIsNone(r.get('grpc-status'))
        self.assertEqual(h.http_request(self.port, 'GET', '/nowhere').status, 404)


class GrpcRouteTest(unittest.TestCase):

    def setUp(self):
        self.up = HttpUpstream(name='A')
        self.addCleanup(self.up.close)
        self.port, self.admin = h.free_ports(2)

    def start(self, routes):
        hcm = h.http_connection_manager(
            'ingress', h.route_config([h.vhost('all', ['*'], routes)], validate_clusters=False))
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster('a', [self.up.port])], admin_port=self.admin)
        self.p = h.Petrel(cfg)
        self.addCleanup(self.p.close)
        self.p.start()
        return self.p

    def call(self, path, headers=None):
        return h.http_request(self.port, 'POST', path, headers=dict(GRPC, **(headers or {})),
                              body=b'\x00\x00\x00\x00\x00')

    def test_retry_on_grpc_status(self):
        retry = {'retry_on': 'unavailable,resource-exhausted', 'num_retries': 3,
                 'retry_back_off': {'base_interval': '0.001s'}}
        p = self.start([h.route_prefix('/', 'a', retry_policy=retry)])
        r = self.call('/grpc-fail/u/2/14')  # UNAVAILABLE twice, then the echo
        self.assertEqual((r.status, r.get('grpc-status')), (200, None))
        self.assertEqual(self.up.counters['u'], 3)
        r = self.call('/grpc-fail/x/1/8')  # RESOURCE_EXHAUSTED once
        self.assertEqual((r.status, r.get('grpc-status')), (200, None))
        # INTERNAL is not in retry_on: answered as it came, once.
        r = self.call('/grpc-fail/i/1/13')
        self.assertEqual((r.get('grpc-status'), r.get('grpc-message')), ('13', 'fail 1 of 1'))
        self.assertEqual(self.up.counters['i'], 1)
        # Retries run out: the last answer goes back.
        r = self.call('/grpc-fail/e/9/14')
        self.assertEqual((r.get('grpc-status'), r.get('grpc-message')), ('14', 'fail 4 of 9'))
        self.assertEqual(p.stat('cluster.a.upstream_rq_retry'), 2 + 1 + 3)

    def test_retry_grpc_on_header(self):
        self.start([h.route_prefix('/', 'a')])
        r = self.call('/grpc-fail/c/1/1', {'x-envoy-retry-grpc-on': 'cancelled,bogus'})
        self.assertEqual((r.status, r.get('grpc-status')), (200, None))
        self.assertEqual(self.up.counters['c'], 2)
        # deadline-exceeded asked for, internal came: not retried.
        r = self.call('/grpc-fail/d/1/13', {'x-envoy-retry-grpc-on': 'deadline-exceeded'})
        self.assertEqual(r.get('grpc-status'), '13')
        # The header takes gRPC conditions only: 5xx there means nothing.
        r = self.call('/fail/f/1/503', {'x-envoy-retry-grpc-on': '5xx'})
        self.assertEqual(r.status, 503)  # the upstream's own answer, passed on as it is
        self.assertEqual(self.up.counters['f'], 1)
        # Neither header reaches the upstream.
        r = self.call('/echo', {'x-envoy-retry-grpc-on': 'cancelled'})
        names = {n for n, _ in r.json()['headers']}
        self.assertNotIn('x-envoy-retry-grpc-on', names)

    def test_grpc_timeout(self):
        self.start([
            h.route_prefix('/capped/', 'a', max_grpc_timeout='0.3s', prefix_rewrite='/'),
            h.route_prefix('/offset/', 'a', max_grpc_timeout='0s', grpc_timeout_offset='0.1s',
                           prefix_rewrite='/'),
            h.route_prefix('/plain/', 'a', timeout='0.3s', prefix_rewrite='/'),
        ])

        def upstream_header(r, name):
            return dict((n, v) for n, v in r.json()['headers']).get(name)

        # grpc-timeout above the cap: the cap, and the upstream is told so
        r = self.call('/capped/echo', {'grpc-timeout': '10S'})
        self.assertEqual(upstream_header(r, 'grpc-timeout'), '300m')
        # below it: its own; none: the cap
        self.assertEqual(upstream_header(self.call('/capped/echo', {'grpc-timeout': '200000u'}),
                                         'grpc-timeout'), '200m')
        self.assertEqual(upstream_header(self.call('/capped/echo'), 'grpc-timeout'), '300m')
        # the cap applies: an upstream taking 3 s times out
        r = self.call('/capped/delay/3000', {'grpc-timeout': '10S'})
        self.assertEqual((r.status, r.get('grpc-status'), r.get('grpc-message')),
                         (200, '14', 'upstream request timeout'))
        # no cap (0s), offset 0.1 s off the header's 5 s
        r = self.call('/offset/echo', {'grpc-timeout': '5S'})
        self.assertEqual(upstream_header(r, 'grpc-timeout'), '4900m')
        self.assertEqual(upstream_header(r, 'x-envoy-expected-rq-timeout-ms'), '4900')
        # no cap and no header: no timeout at all
        r = self.call('/offset/echo')
        self.assertIsNone(upstream_header(r, 'grpc-timeout'))
        self.assertIsNone(upstream_header(r, 'x-envoy-expected-rq-timeout-ms'))
        # a malformed header counts as none
        r = self.call('/capped/echo', {'grpc-timeout': '12x'})
        self.assertEqual(upstream_header(r, 'grpc-timeout'), '300m')
        # without max_grpc_timeout grpc-timeout passes untouched and the route timeout rules
        r = self.call('/plain/echo', {'grpc-timeout': '10S'})
        self.assertEqual(upstream_header(r, 'grpc-timeout'), '10S')
        self.assertEqual(upstream_header(r, 'x-envoy-expected-rq-timeout-ms'), '300')

    def test_cluster_not_found_response_code(self):
        p = self.start([
            h.route_prefix('/404/', 'nope', cluster_not_found_response_code='NOT_FOUND'),
            h.route_prefix('/500/', 'nope', cluster_not_found_response_code='INTERNAL_SERVER_ERROR'),
            h.route_prefix('/503/', 'nope'),
        ])
        for code in (404, 500, 503):
            self.assertEqual(h.http_request(self.port, 'GET', '/%d/x' % code).status, code)
        self.assertEqual(p.stat('http.ingress.no_cluster'), 3)

    def test_config_errors(self):
        for extra, want in [
                ({'cluster_not_found_response_code': 'TEAPOT'},
                 'cluster_not_found_response_code: "TEAPOT" is not a valid value'),
                ({'max_grpc_timeout': 'soon'}, 'max_grpc_timeout'),
                ({'retry_policy': {'retry_on': 'unavailable,sometimes'}}, 'sometimes')]:
            cfg = h.bootstrap([h.listener('http', self.port, [h.http_connection_manager(
                'ingress', h.route_config([h.vhost('all', ['*'], [
                    h.route_prefix('/', 'a', **extra)])]))])], [h.cluster('a', [self.up.port])])
            rc, out, err = self.validate(cfg)
            self.assertEqual(rc, 1, extra)
            self.assertIn(want, err)

    def validate(self, cfg):
        with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
            json.dump(cfg, f)
        self.addCleanup(os.unlink, f.name)
        return h.run_petrel(['--mode', 'validate', '-c', f.name])


if __name__ == '__main__':
    unittest.main()
