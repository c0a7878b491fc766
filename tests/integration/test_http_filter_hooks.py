"""HTTP filters that work on bodies and trailers, through real peers.

envoy.filters.http.buffer holds a request until its whole body arrived: the upstream sees
nothing of a slow upload before its last byte, then one framed request (content-length
added to a chunked one); a body over max_request_bytes is answered 413; a client that
gives up mid-upload leaves the upstream untouched. Trailers pass after the held body.

envoy.filters.http.grpc_stats counts gRPC calls by status and their messages both ways
(request body: decoders; response body and trailers: encoders), per method when asked,
for the cluster the route chose, including petrel's own trailers-only answers.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_http_filter_hooks.py -v
"""

import json
import os
import socket
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

try:
    import grpc
    from test_grpc_end_to_end import EchoServer, h2_cluster, OPTIONS  # noqa: E402
except ImportError:  # python3-grpcio (scripts/install-deps.sh test)
    grpc = None

BUFFER = 'type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer'
GRPC_STATS = 'type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig'


def buffer_filter(max_bytes):
    return {'name': 'envoy.filters.http.buffer',
            'typed_config': {'@type': BUFFER, 'max_request_bytes': max_bytes}}


def grpc_stats_filter(**cfg):
    return {'name': 'envoy.filters.http.grpc_stats', 'typed_config': dict(cfg, **{
        '@type': GRPC_STATS})}


def validate_error(test, cfg):
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
        json.dump(cfg, f)
    test.addCleanup(os.unlink, f.name)
    rc, out, err = h.run_petrel(['--mode', 'validate', '-c', f.name])
    test.assertEqual(rc, 1, err)
    return err


class BufferFilterTest(unittest.TestCase):

    def setUp(self):
        self.up = HttpUpstream(name='app')
        self.addCleanup(self.up.close)

    def config(self, filters):
        self.port, self.admin = h.free_ports(2)
        hcm = h.http_connection_manager('in', h.route_config([
            h.vhost('all', ['*'], [h.route_prefix('/', 'app')])]),
            http_filters=filters + [h.router_filter()])
        return h.bootstrap([h.listener('http', self.port, [hcm])],
                           [h.cluster('app', [self.up.port])], admin_port=self.admin)

    def test_slow_upload_reaches_the_upstream_whole(self):
        with h.Petrel(self.config([buffer_filter(1 << 20)])) as p:
            with h.HttpClientConn(self.port) as c:
                c.send_raw(b'POST /up HTTP/1.1\r\nHost: x\r\n'
                           b'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n')
                # the head and the first chunk are held: nothing reaches the upstream
                time.sleep(h.scaled(0.3))
                self.assertEqual(self.up.requests, [])
                c.send_raw(b'6\r\n world\r\n0\r\n\r\n')
                r = c.read_response()
            self.assertEqual(r.status, 200)
            rec = self.up.requests[-1]
            self.assertEqual(rec['body'], b'hello world')
            self.assertEqual(rec.header('content-length'), '11')
            self.assertIsNone(rec.header('transfer-encoding'))
            self.assertEqual(p.stat('http.in.downstream_rq_too_large'), 0)

    def test_requests_without_body_pass_at_once(self):
        with h.Petrel(self.config([buffer_filter(16)])):
            r = h.http_request(self.port, 'GET', '/plain')
            self.assertEqual(r.status, 200)
            self.assertEqual(self.up.requests[-1]['path'], '/plain')

    def test_trailers_follow_the_held_body(self):
        with h.Petrel(self.config([buffer_filter(1 << 20)])):
            with h.HttpClientConn(self.port) as c:
                r = c.request('POST', '/t', body=[b'abc', b'def'], chunked=True,
                              trailers=[('x-check', 'done')])
            self.assertEqual(r.status, 200)
            rec = self.up.requests[-1]
            self.assertEqual(rec['body'], b'abcdef')
            self.assertEqual(h.get_header(rec['trailers'], 'x-check'), 'done')

    def test_body_over_the_limit_is_413(self):
        with h.Petrel(self.config([buffer_filter(1000)])) as p:
            r = h.http_request(self.port, 'POST', '/big', body=b'x' * 5000)
            self.assertEqual(r.status, 413)
            self.assertEqual(r.body, b'Payload Too Large')
            self.assertEqual(p.stat('http.in.downstream_rq_too_large'), 1)
            # chunked, no length announced: refused when the held bytes pass the limit
            with h.HttpClientConn(self.port) as c:
                c.send_raw(b'POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n'
                           + (b'258\r\n' + b'z' * 600 + b'\r\n') * 2)
                r = c.read_response()
            self.assertEqual(r.status, 413)
            self.assertEqual(p.stat('http.in.downstream_rq_too_large'), 2)
            self.assertEqual(self.up.requests, [])
            # a body at the limit passes
            r = h.http_request(self.port, 'POST', '/fits', body=b'y' * 1000)
            self.assertEqual(r.status, 200)
            self.assertEqual(self.up.requests[-1]['body_len'], 1000)

    def test_client_gone_mid_upload(self):
        with h.Petrel(self.config([buffer_filter(1 << 20)])) as p:
            s = h.tcp_connect(self.port)
            s.sendall(b'POST /gone HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n12345')
            h.wait_until(lambda: p.stat('http.in.downstream_rq_active') == 1, 10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
            s.close()
            p.wait_stat('http.in.downstream_rq_active', 0)
            self.assertEqual(self.up.requests, [])
            self.assertEqual(h.http_request(self.port, 'GET', '/after').status, 200)

    def test_with_a_held_chain_before_it(self):
        # a fault delay holds the chain first; the buffer filter still gets the body whole
        fault = {'name': 'envoy.filters.http.fault', 'typed_config': {
            '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault',
            'delay': {'fixed_delay': '0.2s', 'percentage': {'numerator': 100}}}}
        with h.Petrel(self.config([fault, buffer_filter(1 << 20)])):
            with h.HttpClientConn(self.port) as c:
                r = c.request('POST', '/d', body=[b'a' * 7000, b'b' * 9000], chunked=True)
            self.assertEqual(r.status, 200)
            rec = self.up.requests[-1]
            self.assertEqual(rec['body'], b'a' * 7000 + b'b' * 9000)
            self.assertEqual(rec.header('content-length'), '16000')

    def test_config_errors(self):
        err = validate_error(self, self.config([{'name': 'envoy.filters.http.buffer',
                                                 'typed_config': {'@type': BUFFER}}]))
        self.assertIn('max_request_bytes: is required', err)
        err = validate_error(self, self.config([{'name': 'envoy.filters.http.buffer',
                                                 'typed_config': {'@type': BUFFER,
                                                                  'max_request_bytes': 10,
                                                                  'max_request_time': '1s'}}]))
        self.assertIn('max_request_time', err)


@unittest.skipUnless(grpc is not None, 'python3-grpcio is not installed')
class GrpcStatsFilterTest(unittest.TestCase):

    def setUp(self):
        self.srv = EchoServer()
        self.addCleanup(self.srv.stop)

    def start(self, stats_cfg):
        self.port, self.admin = h.free_ports(2)
        routes = [h.route_prefix('/down.Svc/', 'down'),
                  h.route_prefix('/', 'grpc', timeout='30s')]
        hcm = h.http_connection_manager(
            'in', h.route_config([h.vhost('all', ['*'], routes)]),
            http_filters=[grpc_stats_filter(**stats_cfg), h.router_filter()])
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h2_cluster('grpc', self.srv.port), h2_cluster('down', h.dead_port())],
                          admin_port=self.admin, stats_flush_on_admin=True)
        self.p = h.Petrel(cfg)
        self.addCleanup(self.p.close)
        self.p.start()
        self.ch = grpc.insecure_channel('127.0.0.1:%d' % self.port, options=OPTIONS)
        self.addCleanup(self.ch.close)

    def fails(self, fn, *args):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, timeout=h.scaled(10))
        return cm.exception.code()

    def test_per_method_stats_for_all_methods(self):
        self.start({'stats_for_all_methods': True})
        unary = self.ch.unary_unary('/test.Echo/Unary')
        self.assertEqual(unary(b'hi', timeout=h.scaled(10)), b'echo:hi')
        self.assertEqual(self.fails(unary, b'status:5'), grpc.StatusCode.NOT_FOUND)
        bidi = self.ch.stream_stream('/test.Echo/Bidi')
        msgs = [b'm%d' % i for i in range(7)]
        self.assertEqual(len(list(bidi(iter(msgs), timeout=h.scaled(10)))), 7)
        ss = self.ch.unary_stream('/test.Echo/ServerStream')
        # three messages of 40 KB, split across DATA frames, then DATA_LOSS in trailers
        with self.assertRaises(grpc.RpcError):
            list(ss(b'3x40000', timeout=h.scaled(10)))
        u = 'cluster.grpc.grpc.test.Echo.Unary.'
        b = 'cluster.grpc.grpc.test.Echo.Bidi.'
        s = 'cluster.grpc.grpc.test.Echo.ServerStream.'
        p = self.p
        self.assertEqual([p.stat(u + n) for n in ('total', 'success', 'failure', '0', '5')],
                         [2, 1, 1, 1, 1])
        self.assertEqual(p.stat(u + 'request_message_count'), 2)
        self.assertEqual(p.stat(u + 'response_message_count'), 1)
        self.assertEqual([p.stat(b + n) for n in ('total', 'success', 'request_message_count',
                                                  'response_message_count')], [1, 1, 7, 7])
        self.assertEqual([p.stat(s + n) for n in ('total', 'failure', '15',
                                                  'response_message_count')], [1, 1, 1, 3])
        self.assertIsNone(p.stat('cluster.grpc.grpc.total'))

    def test_allowlist_and_the_generic_stats(self):
        self.start({'individual_method_stats_allowlist': {
            'services': [{'name': 'test.Echo', 'method_names': ['Unary']}]},
            'replace_dots_in_grpc_service_name': True})
        self.ch.unary_unary('/test.Echo/Unary')(b'a', timeout=h.scaled(10))
        cs = self.ch.stream_unary('/test.Echo/ClientStream')
        cs(iter([b'x', b'y', b'z']), timeout=h.scaled(10))
        self.assertEqual(self.p.stat('cluster.grpc.grpc.test_Echo.Unary.success'), 1)
        # not on the list: the stats without service and method
        self.assertEqual(self.p.stat('cluster.grpc.grpc.success'), 1)
        self.assertEqual(self.p.stat('cluster.grpc.grpc.request_message_count'), 3)
        self.assertIsNone(self.p.stat('cluster.grpc.grpc.test_Echo.ClientStream.total'))

    def test_petrels_own_answer_counts(self):
        self.start({})
        down = self.ch.unary_unary('/down.Svc/Call')
        self.assertEqual(self.fails(down, b'x'), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(self.p.stat('cluster.down.grpc.14'), 1)
        self.assertEqual(self.p.stat('cluster.down.grpc.failure'), 1)

    def test_upstream_stats(self):
        # enable_upstream_stats: the histogram upstream_rq_time beside the counters, from the
        # request's end sent upstream to the response's end; none for petrel's own answers.
        self.start({'stats_for_all_methods': True, 'enable_upstream_stats': True})
        slow = self.ch.unary_unary('/test.Echo/Slow')
        for _ in range(2):
            self.assertEqual(slow(b'0.15', timeout=h.scaled(10)), b'done')
        down = self.ch.unary_unary('/down.Svc/Call')
        self.assertEqual(self.fails(down, b'x'), grpc.StatusCode.UNAVAILABLE)
        body = self.p.admin_get('/stats')[2]
        hist = h.histogram_text(body, 'cluster.grpc.grpc.test.Echo.Slow.upstream_rq_time')
        self.assertIsNotNone(hist)
        self.assertGreaterEqual(hist[0][1], 150 - 8)   # within its bucket (144..151)
        self.assertLess(hist[100][1], 150 + 2000)
        self.assertNotIn(b'upstream_rq_time', b'\n'.join(
            l for l in body.splitlines() if l.startswith(b'cluster.down.grpc.')))
        prom = self.p.admin_get('/stats/prometheus?filter=grpc.*upstream_rq_time')[2]
        # Envoy's default extractors on the dotted name: the gRPC bridge's service and
        # method tags take the tokens after "grpc." ("test" and "Echo"), the rest stays.
        self.assertIn(b'envoy_cluster_grpc_Slow_upstream_rq_time_count'
                      b'{envoy_grpc_bridge_method="Echo",envoy_grpc_bridge_service="test",'
                      b'envoy_cluster_name="grpc"} 2\n', prom)

    def test_not_grpc_counts_nothing(self):
        self.start({'stats_for_all_methods': True})
        r = h.http_request(self.port, 'GET', '/test.Echo/Unary')
        self.assertNotEqual(r.status, 0)
        self.assertFalse([n for n in self.p.stats() if '.grpc.' in n and
                          n.startswith('cluster.grpc.grpc')])

    def test_config_errors(self):
        port, admin = h.free_ports(2)

        def cfg(stats):
            hcm = h.http_connection_manager(
                'in', h.route_config([h.vhost('all', ['*'], [h.route_prefix('/', 'grpc')])]),
                http_filters=[grpc_stats_filter(**stats), h.router_filter()])
            return h.bootstrap([h.listener('http', port, [hcm])],
                               [h.cluster('grpc', [1])], admin_port=admin)
        self.assertIn('emit_filter_state: is not supported',
                      validate_error(self, cfg({'emit_filter_state': True})))
        err = validate_error(self, cfg({'stats_for_all_methods': True,
                                        'individual_method_stats_allowlist': {'services': []}}))
        self.assertIn('stats_for_all_methods', err)
        err = validate_error(self, cfg({'individual_method_stats_allowlist': {
            'services': [{'method_names': ['']}]}}))
        self.assertIn('name: is required', err)
        self.assertIn('method_names[0]: must be a non-empty string', err)


if __name__ == '__main__':
    unittest.main(verbosity=2)
