"""gRPC through petrel to a real gRPC server (python3-grpcio) over an HTTP/2 cluster, from
an HTTP/1.1 client (h1 -> h2).

The client here is an HTTP/1.1 client that carries gRPC's framing (length-prefixed
messages, content-type application/grpc, te: trailers): petrel turns the request into an
HTTP/2 stream to the gRPC server, and the response's grpc-status and grpc-message trailers
come back as HTTP/1.1 chunked trailers. Unary and server-streaming calls, a status other
than OK (trailers-only response), and a large message over the flow control windows; and
one grpcio client call end to end (h2 -> h2, covered at length by
test_grpc_end_to_end.py).

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_grpc_upstream.py -v
"""

import concurrent.futures
import os
import struct
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

try:
    import grpc
except ImportError:  # python3-grpcio (scripts/install-deps.sh test)
    grpc = None

HPO = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions'


def frame(payload):
    return b'\x00' + struct.pack('>I', len(payload)) + payload


def unframe(body):
    out = []
    while body:
        n = struct.unpack('>I', body[1:5])[0]
        out.append(body[5:5 + n])
        body = body[5 + n:]
    return out


@unittest.skipUnless(grpc is not None, 'python3-grpcio is not installed')
class GrpcTest(unittest.TestCase):

    def setUp(self):
        def unary(request, context):
            if request == b'fail':
                context.abort(grpc.StatusCode.NOT_FOUND, 'no such thing')
            return b'echo:' + request

        def stream(request, context):
            n = int(request)
            for i in range(n):
                yield ('message %d' % i).encode()

        handler = grpc.method_handlers_generic_handler('test.Echo', {
            'Unary': grpc.unary_unary_rpc_method_handler(unary),
            'Stream': grpc.unary_stream_rpc_method_handler(stream),
        })
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers((handler,))
        gport = self.server.add_insecure_port('127.0.0.1:0')
        self.server.start()
        self.addCleanup(self.server.stop, None)
        self.port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('ingress', h.route_config([h.vhost('all', ['*'], [
            h.route_prefix('/', 'grpc', timeout='20s')])]))
        opts = {'typed_extension_protocol_options': {HPO: {
            '@type': 'type.googleapis.com/' + HPO,
            'explicit_http_config': {'http2_protocol_options': {}}}}}
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster('grpc', [gport], **opts)], admin_port=admin)
        self.p = h.Petrel(cfg)
        self.p.start()
        self.addCleanup(self.p.close)

    def call(self, method, payload):
        return h.http_request(self.port, 'POST', '/test.Echo/' + method, body=frame(payload),
                              headers=[('content-type', 'application/grpc'),
                                       ('te', 'trailers')])

    def test_unary(self):
        r = self.call('Unary', b'hello')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.get('content-type'), 'application/grpc')
        self.assertEqual(unframe(r.body), [b'echo:hello'])
        self.assertEqual(r.trailer('grpc-status'), '0')
        self.p.wait_stat('cluster.grpc.upstream_cx_http2_total', 1)

    def test_server_streaming(self):
        r = self.call('Stream', b'5')
        self.assertEqual(r.status, 200)
        self.assertEqual(unframe(r.body), [('message %d' % i).encode() for i in range(5)])
        self.assertEqual(r.trailer('grpc-status'), '0')

    def test_error_status(self):
        r = self.call('Unary', b'fail')
        self.assertEqual(r.status, 200)
        # A trailers-only response: the status travels in the one header block.
        status = r.get('grpc-status') or r.trailer('grpc-status')
        message = r.get('grpc-message') or r.trailer('grpc-message')
        self.assertEqual(status, '5')
        self.assertEqual(message, 'no such thing')

    def test_large_message_and_concurrent_calls(self):
        big = h.pattern_bytes(0, 3 * 1024 * 1024)

        def one(i):
            return self.call('Unary', big if i == 0 else str(i).encode())
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            rs = list(ex.map(one, range(4)))
        self.assertEqual(unframe(rs[0].body), [b'echo:' + big])
        for i in range(1, 4):
            self.assertEqual(unframe(rs[i].body), [b'echo:' + str(i).encode()])
        self.assertEqual([r.trailer('grpc-status') for r in rs], ['0'] * 4)
        self.assertEqual(self.p.stat('cluster.grpc.upstream_cx_total'), 1)

    def test_grpcio_client_end_to_end(self):
        with grpc.insecure_channel('127.0.0.1:%d' % self.port) as ch:
            unary = ch.unary_unary('/test.Echo/Unary')
            self.assertEqual(unary(b'hi', timeout=h.scaled(10)), b'echo:hi')
            stream = ch.unary_stream('/test.Echo/Stream')
            self.assertEqual(list(stream(b'3', timeout=h.scaled(10))),
                             [b'message 0', b'message 1', b'message 2'])


if __name__ == '__main__':
    unittest.main()
