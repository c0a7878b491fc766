"""petrel's own answers to gRPC requests: every local reply (no route, no healthy upstream,
an upstream that refuses connections, a timeout, an RBAC denial, a direct response) to a
request whose content-type is application/grpc is a trailers-only gRPC response, as Envoy
makes it: 200, content-type application/grpc, grpc-status mapped from the HTTP status
(404 UNIMPLEMENTED, 403 PERMISSION_DENIED, 503/504 UNAVAILABLE, others UNKNOWN), the body
as a percent-encoded grpc-message, and no body. Requests that are not gRPC keep the HTTP
answer; a gRPC status a filter names itself (fault) is kept.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_grpc_local_reply.py -v
"""

import os
import sys
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
        hcm = h.http_connection_manager(
            'ingress', h.route_config([h.vhost('all', ['*'], routes)]),
            http_filters=[{'name': 'envoy.filters.http.rbac', 'typed_config': {
                '@type': RBAC_HTTP_TYPE, 'rules': deny_path}}, h.router_filter()])
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


if __name__ == '__main__':
    unittest.main()
