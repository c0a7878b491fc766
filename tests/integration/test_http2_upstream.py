"""HTTP/2 to upstreams: HTTP/1.1 requests from clients go to h2c (prior knowledge) and h2
(TLS, ALPN) upstreams, multiplexed on shared connections up to the peer's
SETTINGS_MAX_CONCURRENT_STREAMS; flow control both ways with bodies larger than the windows;
response trailers to HTTP/1 chunked trailers; RST_STREAM on one stream (503, or a retry)
while the others go on; GOAWAY (new requests on a new connection, refused streams retried);
a connection closed under a request (503 UC); config errors naming the field. The upstream
is a small server on python3-h2 (h2upstream.py).

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_http2_upstream.py -v
"""

import concurrent.futures
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import certs as C  # noqa: E402
from h2upstream import H2Upstream  # noqa: E402

HPO = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions'
FILE_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog'


def protocol_options(**fields):
    d = {'@type': 'type.googleapis.com/' + HPO}
    d.update(fields)
    return {'typed_extension_protocol_options': {HPO: d}}


def explicit_h2(**h2opts):
    return protocol_options(explicit_http_config={'http2_protocol_options': h2opts})


def cstat(name):
    return 'cluster.up.' + name


class H2Case(unittest.TestCase):

    def start(self, cluster_extra, route_extra=None, upstream_port=None):
        self.port, admin = h.free_ports(2)
        route = h.route_prefix('/', 'up', timeout='30s', **(route_extra or {}))
        hcm = h.http_connection_manager(
            'ingress', h.route_config([h.vhost('all', ['*'], [route])]),
            access_log=[{'name': 'envoy.access_loggers.file', 'typed_config': {
                '@type': FILE_LOG, 'path': 'access.log', 'log_format': {
                    'text_format_source': {'inline_string':
                                           '%RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(:PATH)%\n'}}}}])
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster('up', [upstream_port], **cluster_extra)], admin_port=admin)
        self.p = h.Petrel(cfg)
        self.p.start()
        self.addCleanup(self.p.close)
        return self.p

    def upstream(self, **kw):
        srv = H2Upstream(**kw)
        self.addCleanup(srv.close)
        return srv

    def access_lines(self):
        try:
            with open(self.p.path('access.log')) as f:
                return f.read().splitlines()
        except OSError:
            return []

    def parallel(self, fn, args):
        with concurrent.futures.ThreadPoolExecutor(len(args)) as ex:
            return list(ex.map(fn, args))


class MultiplexTest(H2Case):

    def test_concurrent_requests_share_one_connection(self):
        up = self.upstream()
        p = self.start(explicit_h2(), upstream_port=up.port)
        n = 8

        def hold(i):
            return h.http_request(self.port, 'GET', '/hold/%d' % i, timeout=h.scaled(30))
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            futs = [ex.submit(hold, i) for i in range(n)]
            # Every request is open upstream at once before any is answered.
            h.wait_until(lambda: up.max_open.get(1, 0) >= n, h.scaled(20),
                         message='%d concurrent streams (have %r)' % (n, up.max_open))
            r = h.http_request(self.port, 'GET', '/release')
            self.assertEqual(r.status, 200)
            results = [f.result() for f in futs]
        self.assertEqual([r.status for r in results], [200] * n)
        self.assertEqual({r.json()['conn_id'] for r in results}, {1})
        self.assertEqual(up.accepted, 1)
        self.assertEqual(p.stat(cstat('upstream_cx_total')), 1)
        self.assertEqual(p.stat(cstat('upstream_cx_http2_total')), 1)
        self.assertEqual(p.stat(cstat('upstream_cx_http1_total')), 0)
        p.wait_stat(cstat('upstream_rq_total'), n + 1)
        p.wait_stat(cstat('upstream_cx_active'), 1)
        p.wait_stat(cstat('http2.streams_active'), 0)
        # Pseudo-headers from the HTTP/1 request; no connection-specific headers.
        rec = up.requests[-1]
        self.assertEqual((rec['method'], rec['scheme'], rec['path']), ('GET', 'http', '/release'))
        self.assertEqual(rec['authority'], '127.0.0.1:%d' % self.port)
        names = {k for k, _ in rec['headers']}
        for hop in ('connection', 'keep-alive', 'transfer-encoding', 'host', 'upgrade'):
            self.assertNotIn(hop, names)

    def test_max_concurrent_streams_honoured(self):
        # The peer allows 2 streams a connection: petrel never opens more on one, and the
        # requests beyond go on further connections (as Envoy does).
        up = self.upstream(max_concurrent_streams=2)
        p = self.start(explicit_h2(), upstream_port=up.port)
        n = 6
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            futs = [ex.submit(h.http_request, self.port, 'GET', '/hold/%d' % i)
                    for i in range(n)]
            h.wait_until(lambda: sum(up.max_open.values()) >= n, h.scaled(20),
                         message='%d held streams (have %r)' % (n, up.max_open))
            up.release_all()
            results = [f.result() for f in futs]
        self.assertEqual([r.status for r in results], [200] * n)
        self.assertTrue(all(v <= 2 for v in up.max_open.values()), up.max_open)
        self.assertGreaterEqual(up.accepted, 3)
        self.assertEqual(p.stat(cstat('upstream_rq_total')) >= n, True)

    def test_configured_max_concurrent_streams(self):
        up = self.upstream(max_concurrent_streams=100)
        self.start(explicit_h2(max_concurrent_streams=1), upstream_port=up.port)
        rs = self.parallel(lambda i: h.http_request(self.port, 'GET', '/echo/%d' % i), range(4))
        self.assertEqual([r.status for r in rs], [200] * 4)
        self.assertEqual(max(up.max_open.values()), 1)

    def test_max_requests_per_connection_counts_streams(self):
        up = self.upstream()
        opts = protocol_options(
            common_http_protocol_options={'max_requests_per_connection': 2},
            explicit_http_config={'http2_protocol_options': {}})
        p = self.start(opts, upstream_port=up.port)
        for i in range(5):
            self.assertEqual(h.http_request(self.port, 'GET', '/echo/%d' % i).status, 200)
        self.assertEqual(up.accepted, 3)
        p.wait_stat(cstat('upstream_cx_max_requests'), 2)


    def test_circuit_breakers_count_streams_and_connections(self):
        # max_connections 1 does not bound HTTP/2 streams; max_requests does.
        up = self.upstream()
        opts = explicit_h2()
        opts['circuit_breakers'] = {'thresholds': [{'max_connections': 1, 'max_requests': 3}]}
        p = self.start(opts, upstream_port=up.port)
        with concurrent.futures.ThreadPoolExecutor(3) as ex:
            futs = [ex.submit(h.http_request, self.port, 'GET', '/hold/%d' % i)
                    for i in range(3)]
            h.wait_until(lambda: up.max_open.get(1, 0) >= 3, h.scaled(20))
            r = h.http_request(self.port, 'GET', '/echo/over')
            self.assertEqual(r.status, 503)
            self.assertEqual(r.get('x-envoy-overloaded'), 'true')
            up.release_all()
            self.assertEqual([f.result().status for f in futs], [200] * 3)
        self.assertEqual(up.accepted, 1)
        self.assertEqual(p.stat(cstat('upstream_cx_overflow')), 0)
        p.wait_stat(cstat('upstream_rq_pending_overflow'), 1)


class BodiesTest(H2Case):

    def test_bodies_larger_than_the_windows_both_ways(self):
        up = self.upstream()
        p = self.start(explicit_h2(initial_stream_window_size=65535,
                                   initial_connection_window_size=65535),
                       upstream_port=up.port)
        n = 1024 * 1024 + 17
        body = h.pattern_bytes(0, n)
        r = h.http_request(self.port, 'POST', '/echo', body=body)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_len'], n)
        self.assertEqual(r.json()['body_sha256'], h.sha256_pattern(n))
        # Chunked request body (no content-length) too.
        r = h.http_request(self.port, 'POST', '/echo', body=h.pattern_chunks(n, chunk=70000),
                           chunked=True)
        self.assertEqual(r.json()['body_sha256'], h.sha256_pattern(n))
        r = h.http_request(self.port, 'GET', '/bytes/%d' % (3 * n))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body_sha256, h.sha256_pattern(3 * n))
        self.assertEqual(p.stat(cstat('upstream_cx_total')), 1)

    def test_slow_reader_withholds_its_stream_window_only(self):
        # A client that does not read its download stalls that stream's window upstream;
        # another request on the same connection goes through meanwhile, and the download
        # completes once the client reads.
        up = self.upstream()
        self.start(explicit_h2(), upstream_port=up.port)
        n = 32 * 1024 * 1024
        c = h.HttpClientConn(self.port, timeout=h.scaled(60))
        self.addCleanup(c.close)
        c.send_request('GET', '/bytes/%d' % n)
        h.wait_until(lambda: any(k[2] == '/bytes/%d' % n for k in up.stalled), h.scaled(30),
                     message='the download to stall on its window')
        r = h.http_request(self.port, 'GET', '/echo/other')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['conn_id'], 1)
        big = c.read_response(store_body=False)
        self.assertEqual(big.status, 200)
        self.assertEqual(big.body_sha256, h.sha256_pattern(n))
        self.assertEqual(up.accepted, 1)

    def test_request_trailers_and_response_trailers(self):
        up = self.upstream()
        p = self.start(explicit_h2(), upstream_port=up.port)
        r = h.http_request(self.port, 'POST', '/echo', body=[b'abc', b'def'], chunked=True,
                           trailers=[('x-req-trailer', 'yes')])
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_len'], 6)
        self.assertEqual(r.json()['trailers'], [['x-req-trailer', 'yes']])
        r = h.http_request(self.port, 'GET', '/trailers', headers=[('TE', 'trailers')])
        self.assertEqual((r.status, r.body), (200, b'hello'))
        self.assertEqual(r.trailer('grpc-status'), '0')
        self.assertEqual(r.trailer('x-trailer'), 'done')
        te = [v for k, v in up.requests[-1]['headers'] if k == 'te']
        self.assertEqual(te, ['trailers'])
        p.wait_stat(cstat('http2.trailers'), 1)


class FaultTest(H2Case):

    def test_rst_stream_fails_one_request_others_complete(self):
        up = self.upstream()
        p = self.start(explicit_h2(), upstream_port=up.port)
        n = 3
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            futs = [ex.submit(h.http_request, self.port, 'GET', '/hold/%d' % i)
                    for i in range(n)]
            h.wait_until(lambda: up.max_open.get(1, 0) >= n, h.scaled(20))
            r = h.http_request(self.port, 'GET', '/rst/2')
            self.assertEqual(r.status, 503)
            self.assertIn(b'reset before headers', r.body)
            self.assertEqual(h.http_request(self.port, 'GET', '/release').status, 200)
            results = [f.result() for f in futs]
        self.assertEqual([x.status for x in results], [200] * n)
        self.assertEqual(up.accepted, 1)
        self.assertEqual(p.stat(cstat('upstream_cx_total')), 1)
        p.wait_stat(cstat('http2.rx_reset'), 1)
        p.wait_stat(cstat('upstream_rq_rx_reset'), 1)
        h.wait_until(lambda: '503 UR /rst/2' in self.access_lines())

    def test_rst_stream_retried_with_reset_policy(self):
        up = self.upstream()
        policy = {'retry_on': 'reset', 'num_retries': 1,
                  'retry_back_off': {'base_interval': '0.01s', 'max_interval': '0.02s'}}
        p = self.start(explicit_h2(), route_extra={'retry_policy': policy},
                       upstream_port=up.port)
        r = h.http_request(self.port, 'GET', '/rst/2')
        self.assertEqual(r.status, 503)
        self.assertEqual(len([x for x in up.requests if x['path'] == '/rst/2']), 2)
        p.wait_stat(cstat('upstream_rq_retry'), 1)
        self.assertEqual(up.accepted, 1)

    def test_client_gone_resets_only_its_stream(self):
        up = self.upstream()
        p = self.start(explicit_h2(), upstream_port=up.port)
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            fut = ex.submit(h.http_request, self.port, 'GET', '/hold/keep')
            h.wait_until(lambda: up.max_open.get(1, 0) >= 1, h.scaled(20))
            c = h.HttpClientConn(self.port)
            c.send_request('GET', '/hold/gone')
            h.wait_until(lambda: up.max_open.get(1, 0) >= 2, h.scaled(20))
            c.close()
            h.wait_until(lambda: len(up.client_resets) >= 1, h.scaled(20))
            p.wait_stat(cstat('http2.tx_reset'), 1)
            self.assertEqual(h.http_request(self.port, 'GET', '/release').status, 200)
            self.assertEqual(fut.result().status, 200)
        self.assertEqual(up.accepted, 1)

    def test_goaway_moves_new_requests_to_a_new_connection(self):
        up = self.upstream()
        p = self.start(explicit_h2(), upstream_port=up.port)
        self.assertEqual(h.http_request(self.port, 'GET', '/goaway').status, 200)
        p.wait_stat(cstat('upstream_cx_close_notify'), 1)
        r = h.http_request(self.port, 'GET', '/echo')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['conn_id'], 2)
        p.wait_stat(cstat('upstream_cx_total'), 2)
        p.wait_stat(cstat('upstream_cx_active'), 1)

    def test_goaway_refused_stream_is_retried(self):
        # /hold is stream 1, /goaway stream 3: GOAWAY names 1, so /goaway was refused and
        # goes again on a new connection (retry_on refused-stream), and /hold completes.
        up = self.upstream()
        policy = {'retry_on': 'refused-stream', 'num_retries': 2,
                  'retry_back_off': {'base_interval': '0.01s', 'max_interval': '0.02s'}}
        p = self.start(explicit_h2(), route_extra={'retry_policy': policy},
                       upstream_port=up.port)
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            fut = ex.submit(h.http_request, self.port, 'GET', '/hold/1')
            h.wait_until(lambda: up.max_open.get(1, 0) >= 1, h.scaled(20))
            r = h.http_request(self.port, 'GET', '/goaway')
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()['conn_id'], 2)
            held = fut.result()
        self.assertEqual((held.status, held.json()['conn_id']), (200, 1))
        p.wait_stat(cstat('upstream_rq_retry'), 1)
        p.wait_stat(cstat('http2.stream_refused_errors'), 1)

    def test_goaway_refused_stream_without_retry_is_503(self):
        up = self.upstream()
        self.start(explicit_h2(), upstream_port=up.port)
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            fut = ex.submit(h.http_request, self.port, 'GET', '/hold/1')
            h.wait_until(lambda: up.max_open.get(1, 0) >= 1, h.scaled(20))
            r = h.http_request(self.port, 'GET', '/goaway')
            self.assertEqual(r.status, 503)
            self.assertIn(b'refused stream', r.body)
            self.assertEqual(fut.result().status, 200)

    def test_upstream_closes_mid_stream_is_503_uc(self):
        up = self.upstream()
        p = self.start(explicit_h2(), upstream_port=up.port)
        r = h.http_request(self.port, 'GET', '/close')
        self.assertEqual(r.status, 503)
        h.wait_until(lambda: '503 UC /close' in self.access_lines(),
                     message='access log %r' % self.access_lines())
        p.wait_stat(cstat('upstream_cx_destroy'), 1)
        self.assertEqual(h.http_request(self.port, 'GET', '/echo').status, 200)

    def test_http1_only_upstream_fails_the_waiting_requests(self):
        # An HTTP/1 server answers the HTTP/2 preface with junk: the connection fails before
        # its SETTINGS, and every request that waited for it gets 503 at once.
        from upstreams import HttpUpstream
        up = HttpUpstream()
        self.addCleanup(up.close)
        p = self.start(explicit_h2(), upstream_port=up.port)
        rs = self.parallel(lambda i: h.http_request(self.port, 'GET', '/x%d' % i), range(3))
        self.assertEqual([r.status for r in rs], [503] * 3)
        p.wait_stat(cstat('upstream_rq_pending_failure_eject'), lambda v: v >= 1)

    def test_keepalive_pings(self):
        up = self.upstream()
        opts = explicit_h2(connection_keepalive={'interval': '0.05s', 'timeout': '5s'})
        p = self.start(opts, upstream_port=up.port)
        self.assertEqual(h.http_request(self.port, 'GET', '/echo').status, 200)
        # The connection stays up across many PING rounds.
        p.wait_stat(cstat('upstream_rq_total'), 1)
        self.assertEqual(p.stat(cstat('http2.keepalive_timeout')), 0)
        self.assertEqual(h.http_request(self.port, 'GET', '/echo').status, 200)
        self.assertEqual(up.accepted, 1)


class ProtocolChoiceTest(H2Case):

    def test_deprecated_cluster_http2_protocol_options(self):
        up = self.upstream()
        p = self.start({'http2_protocol_options': {}}, upstream_port=up.port)
        self.assertEqual(h.http_request(self.port, 'GET', '/echo').status, 200)
        p.wait_stat(cstat('upstream_cx_http2_total'), 1)

    def test_use_downstream_protocol_with_http1_downstream_is_http1(self):
        from upstreams import HttpUpstream
        up = HttpUpstream()
        self.addCleanup(up.close)
        opts = protocol_options(use_downstream_protocol_config={
            'http_protocol_options': {}, 'http2_protocol_options': {}})
        p = self.start(opts, upstream_port=up.port)
        self.assertEqual(h.http_request(self.port, 'GET', '/echo').status, 200)
        p.wait_stat(cstat('upstream_cx_http1_total'), 1)

    def test_auto_config_on_plain_is_http1(self):
        from upstreams import HttpUpstream
        up = HttpUpstream()
        self.addCleanup(up.close)
        opts = protocol_options(auto_config={'http2_protocol_options': {}})
        p = self.start(opts, upstream_port=up.port)
        self.assertEqual(h.http_request(self.port, 'GET', '/echo').status, 200)
        p.wait_stat(cstat('upstream_cx_http1_total'), 1)

    def test_auto_config_tls_alpn_h2(self):
        pki = C.standard_pki()
        ctx = C.server_context(pki['backend'], alpn=['h2', 'http/1.1'])
        up = self.upstream(ssl_context=ctx)
        opts = protocol_options(auto_config={'http2_protocol_options': {}})
        opts['transport_socket'] = C.upstream_tls(ca=pki['ca'], sni='backend.test')
        p = self.start(opts, upstream_port=up.port)
        # Until ALPN has picked, a connection is expected to take one request: the first
        # connection's h2 then carries the rest.
        self.assertEqual(h.http_request(self.port, 'GET', '/echo').status, 200)
        rs = self.parallel(lambda i: h.http_request(self.port, 'GET', '/echo/%d' % i), range(3))
        self.assertEqual([r.status for r in rs], [200] * 3)
        self.assertEqual(rs[0].json()['scheme'], 'http')  # the request's own
        self.assertEqual(up.alpn[0], 'h2')
        p.wait_stat(cstat('upstream_cx_http2_total'), 1)
        self.assertEqual(p.stat(cstat('upstream_cx_http1_total')), 0)

    def test_explicit_h2_over_tls_offers_h2(self):
        pki = C.standard_pki()
        ctx = C.server_context(pki['backend'], alpn=['h2'])
        up = self.upstream(ssl_context=ctx)
        opts = explicit_h2()
        opts['transport_socket'] = C.upstream_tls(ca=pki['ca'], sni='backend.test')
        self.start(opts, upstream_port=up.port)
        self.assertEqual(h.http_request(self.port, 'GET', '/echo').status, 200)
        self.assertEqual(up.alpn, ['h2'])


class ConfigErrorTest(unittest.TestCase):

    def validate(self, cluster_extra):
        cfg = h.bootstrap([], [h.cluster('up', [1], **cluster_extra)])
        with _TmpFile(cfg) as path:
            return h.run_petrel(['--mode', 'validate', '-c', path])

    def test_unsupported_http2_option_names_the_field(self):
        rc, out, err = self.validate(explicit_h2(allow_metadata=True))
        self.assertEqual(rc, 1)
        self.assertIn('explicit_http_config.http2_protocol_options.allow_metadata', err)

    def test_allow_connect_is_taken(self):
        rc, out, err = self.validate(explicit_h2(allow_connect=True))
        self.assertEqual(rc, 0, err)
        rc, out, err = self.validate(explicit_h2(allow_connect='no'))
        self.assertEqual(rc, 1)
        self.assertIn('explicit_http_config.http2_protocol_options.allow_connect', err)

    def test_unknown_field_names_the_field(self):
        rc, out, err = self.validate(explicit_h2(max_concurent_streams=3))
        self.assertEqual(rc, 1)
        self.assertIn('http2_protocol_options.max_concurent_streams', err)

    def test_bad_window_size(self):
        rc, out, err = self.validate(explicit_h2(initial_stream_window_size=100))
        self.assertEqual(rc, 1)
        self.assertIn('initial_stream_window_size', err)

    def test_http3_is_not_supported(self):
        rc, out, err = self.validate(protocol_options(
            explicit_http_config={'http3_protocol_options': {}}))
        self.assertEqual(rc, 1)
        self.assertIn('http3_protocol_options', err)

    def test_two_protocol_choices(self):
        rc, out, err = self.validate(protocol_options(
            explicit_http_config={'http2_protocol_options': {}}, auto_config={}))
        self.assertEqual(rc, 1)
        self.assertIn('only one of', err)

    def test_valid(self):
        rc, out, err = self.validate(explicit_h2(
            max_concurrent_streams=10, hpack_table_size=0, initial_stream_window_size=65535,
            initial_connection_window_size=1048576,
            connection_keepalive={'interval': '10s', 'timeout': '1s'}))
        self.assertEqual(rc, 0, err)


class _TmpFile:
    def __init__(self, cfg):
        import json
        import tempfile
        fd, self.path = tempfile.mkstemp(suffix='.json')
        with os.fdopen(fd, 'w') as f:
            json.dump(cfg, f)

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        os.unlink(self.path)


if __name__ == '__main__':
    unittest.main()
