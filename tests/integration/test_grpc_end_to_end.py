"""gRPC end to end through petrel with real gRPC peers (python3-grpcio on both sides): the
client speaks HTTP/2 (h2c) to an AUTO listener, petrel speaks HTTP/2 to the gRPC server.

Unary, client-streaming, server-streaming and bidirectional calls; every status code the
server can return, with its message (trailers-only and after messages); 4 MiB messages both
ways over the flow-control windows; many concurrent calls multiplexed on one upstream
connection; deadlines (the client's grpc-timeout reaches the server, which sees it run out,
and max_grpc_timeout caps it); petrel's own answers as gRPC statuses the client reads (no
healthy upstream: UNAVAILABLE; no route: UNIMPLEMENTED); retries on UNAVAILABLE; a gRPC call
to an HTTP/1.1 upstream that answers trailers-only (h2 -> h1); the server going away mid-call
(UNAVAILABLE, the next call on a new connection).

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_grpc_end_to_end.py -v
"""

import concurrent.futures
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

try:
    import grpc
except ImportError:  # python3-grpcio (scripts/install-deps.sh test)
    grpc = None

HPO = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions'
MIB = 1024 * 1024
OPTIONS = [('grpc.max_receive_message_length', 8 * MIB),
           ('grpc.max_send_message_length', 8 * MIB)]


def h2_cluster(name, port, **extra):
    opts = {'typed_extension_protocol_options': {HPO: {
        '@type': 'type.googleapis.com/' + HPO,
        'explicit_http_config': {'http2_protocol_options': {}}}}}
    opts.update(extra)
    return h.cluster(name, [port], **opts)


class EchoServer:
    """A gRPC server with the test.Echo methods (raw bytes, no protobuf)."""

    def __init__(self):
        self.deadlines = []      # time_remaining() the server saw on Slow calls
        self.calls = 0
        self.lock = threading.Lock()

        def count():
            with self.lock:
                self.calls += 1

        def unary(request, context):
            count()
            if request.startswith(b'status:'):
                code = int(request[7:])
                status = [s for s in grpc.StatusCode if s.value[0] == code][0]
                context.abort(status, 'status %d from the server' % code)
            if request.startswith(b'flaky:'):
                key = request[6:]
                with self.lock:
                    n = self.flaky.get(key, 0)
                    self.flaky[key] = n + 1
                if n < 2:
                    context.abort(grpc.StatusCode.UNAVAILABLE, 'try again')
            return b'echo:' + request

        def slow(request, context):
            count()
            self.deadlines.append(context.time_remaining())
            deadline = time.monotonic() + float(request)
            while time.monotonic() < deadline and context.is_active():
                time.sleep(0.01)
            return b'done'

        def client_stream(requests, context):
            count()
            total, n = 0, 0
            for r in requests:
                total += len(r)
                n += 1
            return ('%d messages, %d bytes' % (n, total)).encode()

        def server_stream(request, context):
            count()
            n, size = (int(x) for x in request.split(b'x'))
            for i in range(n):
                yield bytes([i % 256]) * size
            if n == 3:
                context.abort(grpc.StatusCode.DATA_LOSS, 'after three')

        def bidi(requests, context):
            count()
            for r in requests:
                yield b're:' + r

        self.flaky = {}
        handler = grpc.method_handlers_generic_handler('test.Echo', {
            'Unary': grpc.unary_unary_rpc_method_handler(unary),
            'Slow': grpc.unary_unary_rpc_method_handler(slow),
            'ClientStream': grpc.stream_unary_rpc_method_handler(client_stream),
            'ServerStream': grpc.unary_stream_rpc_method_handler(server_stream),
            'Bidi': grpc.stream_stream_rpc_method_handler(bidi),
        })
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(16), options=OPTIONS)
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port('127.0.0.1:0')
        self.server.start()

    def stop(self):
        self.server.stop(None)


@unittest.skipUnless(grpc is not None, 'python3-grpcio is not installed')
class GrpcEndToEndTest(unittest.TestCase):

    def setUp(self):
        self.srv = EchoServer()
        self.addCleanup(self.srv.stop)
        self.h1 = HttpUpstream(name='h1')
        self.addCleanup(self.h1.close)
        self.port, self.admin = h.free_ports(2)
        retry = {'retry_on': 'unavailable', 'num_retries': 3,
                 'retry_back_off': {'base_interval': '0.001s'}}
        routes = [
            h.route_prefix('/test.Echo/Slow', 'grpc', max_grpc_timeout='1s'),
            h.route_prefix('/retry/', 'grpc', prefix_rewrite='/', retry_policy=retry),
            h.route_prefix('/test.Echo/', 'grpc', timeout='30s'),
            h.route_prefix('/down.Svc/', 'down'),
            h.route_prefix('/grpc-fail/', 'h1'),
            h.route_prefix('/slow-h1/', 'h1', max_grpc_timeout='1s',
                           prefix_rewrite='/delay/5000/'),
        ]
        hcm = h.http_connection_manager(
            'ingress', h.route_config([h.vhost('all', ['*'], routes)]))
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h2_cluster('grpc', self.srv.port), h.cluster('h1', [self.h1.port]),
                           h2_cluster('down', h.dead_port())], admin_port=self.admin)
        self.p = h.Petrel(cfg)
        self.addCleanup(self.p.close)
        self.p.start()
        self.ch = grpc.insecure_channel('127.0.0.1:%d' % self.port, options=OPTIONS)
        self.addCleanup(self.ch.close)

    def unary(self, method='/test.Echo/Unary'):
        return self.ch.unary_unary(method)

    def status_of(self, fn, *args, **kw):
        try:
            fn(*args, **kw)
        except grpc.RpcError as e:
            return e.code(), e.details()
        return grpc.StatusCode.OK, None

    def test_four_kinds_of_call(self):
        self.assertEqual(self.unary()(b'hi', timeout=h.scaled(10)), b'echo:hi')
        cs = self.ch.stream_unary('/test.Echo/ClientStream')
        self.assertEqual(cs(iter([b'a' * 10, b'b' * 20, b'c' * 30]), timeout=h.scaled(10)),
                         b'3 messages, 60 bytes')
        ss = self.ch.unary_stream('/test.Echo/ServerStream')
        self.assertEqual(list(ss(b'5x4', timeout=h.scaled(10))),
                         [bytes([i]) * 4 for i in range(5)])
        bidi = self.ch.stream_stream('/test.Echo/Bidi')
        self.assertEqual(list(bidi(iter([b'1', b'2', b'3']), timeout=h.scaled(10))),
                         [b're:1', b're:2', b're:3'])
        self.assertEqual(self.p.stat('http.ingress.downstream_rq_http2_total'), 4)
        self.assertEqual(self.p.stat('cluster.grpc.upstream_cx_http2_total'), 1)

    def test_every_status_reaches_the_client(self):
        for code in range(1, 17):
            want = [s for s in grpc.StatusCode if s.value[0] == code][0]
            got = self.status_of(self.unary(), b'status:%d' % code, timeout=h.scaled(10))
            self.assertEqual(got, (want, 'status %d from the server' % code))
        # after messages: the status comes in trailers
        ss = self.ch.unary_stream('/test.Echo/ServerStream')
        it = ss(b'3x8', timeout=h.scaled(10))
        got = []
        with self.assertRaises(grpc.RpcError) as cm:
            for m in it:
                got.append(m)
        self.assertEqual(len(got), 3)
        self.assertEqual((cm.exception.code(), cm.exception.details()),
                         (grpc.StatusCode.DATA_LOSS, 'after three'))

    def test_four_mib_messages_both_ways(self):
        big = h.pattern_bytes(0, 4 * MIB)
        self.assertEqual(self.unary()(big, timeout=h.scaled(30)), b'echo:' + big)
        ss = self.ch.unary_stream('/test.Echo/ServerStream')
        out = list(ss(b'2x%d' % (4 * MIB), timeout=h.scaled(30)))
        self.assertEqual([len(m) for m in out], [4 * MIB, 4 * MIB])
        self.assertEqual(out[1], bytes([1]) * (4 * MIB))

    def test_concurrent_calls_share_one_upstream_connection(self):
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            rs = list(ex.map(lambda i: self.unary()(b'%d' % i, timeout=h.scaled(20)),
                             range(64)))
        self.assertEqual(rs, [b'echo:%d' % i for i in range(64)])
        self.assertEqual(self.p.stat('cluster.grpc.upstream_cx_total'), 1)

    def test_deadlines(self):
        slow = self.unary('/test.Echo/Slow')
        # the client's deadline reaches the server (grpc-timeout) and runs out there; petrel
        # keeps the same deadline (as Envoy does with max_grpc_timeout), so its timer, the
        # server's and the client's own run out together and any of them may answer first
        code, _ = self.status_of(slow, b'5', timeout=0.5)
        self.assertIn(code, (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED))
        # max_grpc_timeout 1s caps a 30 s deadline: the server is told at most 1 s. Its own
        # deadline and petrel's timer then run out together, so either may answer.
        code, _ = self.status_of(slow, b'5', timeout=30)
        self.assertIn(code, (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED))
        h.wait_until(lambda: len(self.srv.deadlines) == 2, 10)
        # gRPC's server reckons time_remaining() on another clock than the one that turned
        # grpc-timeout into its deadline: it may read a fraction of a millisecond over.
        # 10 ms of slack still tells the client's 0.5 s from the 1 s cap, and the cap from 30 s.
        self.assertLessEqual(self.srv.deadlines[0], 0.5 + 0.01)
        self.assertLessEqual(self.srv.deadlines[1], 1.0 + 0.01)

    def test_petrels_timer_ends_a_capped_call(self):
        # An upstream that does not keep deadlines (HTTP/1.1, answers after 5 s): the call
        # ends by petrel's timeout at the 1 s cap, as UNAVAILABLE, upstream request timeout
        code, details = self.status_of(self.unary('/slow-h1/k'), b'x', timeout=30)
        self.assertEqual((code, details), (grpc.StatusCode.UNAVAILABLE,
                                           'upstream request timeout'))
        self.assertEqual(self.p.stat('cluster.h1.upstream_rq_timeout'), 1)
        req = self.h1.requests[-1]
        self.assertEqual(req['path'], '/delay/5000/k')
        self.assertEqual(req.header('grpc-timeout'), '1000m')

    def test_petrels_own_answers(self):
        code, details = self.status_of(self.unary('/down.Svc/Call'), b'x', timeout=h.scaled(10))
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)
        self.assertIn('connect', details)
        code, _ = self.status_of(self.unary('/nowhere.Svc/Call'), b'x', timeout=h.scaled(10))
        self.assertEqual(code, grpc.StatusCode.UNIMPLEMENTED)

    def test_retry_on_unavailable(self):
        # the server fails the first two calls of a key with UNAVAILABLE; retried: OK
        self.assertEqual(self.unary('/retry/test.Echo/Unary')(b'flaky:k', timeout=h.scaled(10)),
                         b'echo:flaky:k')
        self.assertEqual(self.srv.flaky[b'k'], 3)

    def test_h2_client_to_http1_upstream(self):
        # trailers-only answers from an HTTP/1.1 upstream reach the h2 client as statuses
        code, details = self.status_of(self.unary('/grpc-fail/k/1/8'), b'x',
                                       timeout=h.scaled(10))
        self.assertEqual((code, details), (grpc.StatusCode.RESOURCE_EXHAUSTED, 'fail 1 of 1'))
        self.assertEqual(self.h1.requests[-1]['version'], 'HTTP/1.1')

    def test_server_gone_mid_call(self):
        slow = self.unary('/test.Echo/Slow')
        fut = slow.future(b'10', timeout=h.scaled(20))
        h.wait_until(lambda: len(self.srv.deadlines) == 1, 10)
        self.srv.stop()
        code = fut.exception().code() if fut.exception() else grpc.StatusCode.OK
        # petrel's answer to the reset (UNAVAILABLE), or the status the server sent as it
        # cancelled its calls on the way out
        self.assertIn(code, (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED))
        # with the server gone, the next call finds no connection: UNAVAILABLE
        code, details = self.status_of(self.unary(), b'x', timeout=h.scaled(10))
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)


if __name__ == '__main__':
    unittest.main()
