"""Downstream HTTP/2 (the HTTP/2 server codec and codec_type): prior knowledge with curl on
AUTO and HTTP2 listeners, h2 by ALPN on TLS, HTTP/1 still on AUTO, many concurrent streams on
one connection, large bodies both ways with small windows, trailers, a client RST_STREAM
mid-response and an unreachable upstream affecting only their stream, GOAWAY on drain and on
max_connection_duration, per-stream request headers timeout, and filters on HTTP/2 streams.
The upstream is HTTP/1 (requests are translated: :authority -> Host).

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_http2_downstream.py -v
"""

import json
import os
import signal
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import certs as C  # noqa: E402
from h2client import H2Client  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

FAULT_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault'
RBAC_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC'
LRL_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit'
HC_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck'


def hcm(stat_prefix='ingress', cluster='app', routes=None, **extra):
    routes = routes or [h.route_prefix('/', cluster, timeout='10s')]
    return h.http_connection_manager(stat_prefix, h.route_config([
        h.vhost('all', ['*'], routes)]), **extra)


def curl(*args, timeout=20):
    r = subprocess.run(['curl', '-sS', '--max-time', str(timeout)] + list(args),
                       capture_output=True, timeout=timeout + 10)
    return r


def http_stat(prefix, name):
    return 'http.%s.%s' % (prefix, name)


class Http2Base(unittest.TestCase):

    def start(self, *hcms_extra, clusters=None, up=None, listeners=None, **kw):
        """Starts petrel with one listener per HCM config dict given (extra HCM fields)."""
        if up is None:
            up = HttpUpstream(name='app')
            self.addCleanup(up.close)
        ports = h.free_ports(len(hcms_extra) + 1)
        admin = ports[-1]
        lns = listeners or [h.listener('l%d' % i, ports[i], [hcm(**extra)])
                            for i, extra in enumerate(hcms_extra)]
        cfg = h.bootstrap(lns, clusters or [h.cluster('app', [up.port])], admin_port=admin)
        p = h.Petrel(cfg, **kw)
        p.start()
        self.addCleanup(p.close)
        return p, ports[:-1], up


class PriorKnowledgeTest(Http2Base):

    def test_curl_prior_knowledge_auto_and_http2(self):
        p, (auto, only), up = self.start({'stat_prefix': 'auto'},
                                         {'stat_prefix': 'only', 'codec_type': 'HTTP2'})
        for port in (auto, only):
            r = curl('--http2-prior-knowledge', '-i', '-d', 'hello',
                     'http://127.0.0.1:%d/echo?a=1' % port)
            out = r.stdout.decode()
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(out.startswith('HTTP/2 200'), out[:200])
            body = json.loads(out.split('\r\n\r\n', 1)[1])
            self.assertEqual(body['body_len'], 5)
            self.assertEqual(body['path'], '/echo?a=1')
            hdrs = dict((n, v) for n, v in body['headers'])
            # :authority became Host on the HTTP/1 upstream; no pseudo-header leaked.
            self.assertEqual(hdrs['host'], '127.0.0.1:%d' % port)
            self.assertFalse(any(n.startswith(':') for n in hdrs))
        p.wait_stat(http_stat('auto', 'downstream_rq_http2_total'), 1)
        p.wait_stat(http_stat('only', 'downstream_rq_http2_total'), 1)
        p.wait_stat(http_stat('auto', 'downstream_cx_http2_total'), 1)
        self.assertEqual(p.stat(http_stat('auto', 'downstream_rq_http1_total')), 0)
        p.wait_stat(http_stat('auto', 'downstream_cx_http2_active'), 0)

    def test_access_log_protocol(self):
        log = {'name': 'envoy.access_loggers.stdout', 'typed_config': {
            '@type': 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.'
                     'StdoutAccessLog',
            'log_format': {'text_format_source': {
                'inline_string': 'ACCESS %PROTOCOL% %REQ(:METHOD)% %REQ(:PATH)% %REQ(:AUTHORITY)% '
                                 '%RESPONSE_CODE% %BYTES_RECEIVED% %BYTES_SENT%\n'}}}}
        p, (auto,), up = self.start({'stat_prefix': 'al', 'access_log': [log]})
        with H2Client(auto) as c:
            st = c.response(c.request('POST', '/bytes/7', body=b'12345', authority='h.test'))
            self.assertEqual(st.status, 200)
        h.http_request(auto, 'GET', '/h1')
        h.wait_until(lambda: p.stdout().count('ACCESS') >= 2, 10)
        self.assertIn('ACCESS HTTP/2 POST /bytes/7 h.test 200 5 7', p.stdout())
        self.assertIn('ACCESS HTTP/1.1 GET /h1', p.stdout())

    def test_http1_still_served_on_auto(self):
        p, (auto,), up = self.start({'stat_prefix': 'auto'})
        r = h.http_request(auto, 'POST', '/echo', body=b'abc')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_len'], 3)
        # A request whose method starts like the preface is still HTTP/1.
        r = h.http_request(auto, 'PRI', '/x')
        self.assertEqual(r.status, 200)
        p.wait_stat(http_stat('auto', 'downstream_rq_http1_total'), 2)
        p.wait_stat(http_stat('auto', 'downstream_cx_http1_total'), 2)
        self.assertEqual(p.stat(http_stat('auto', 'downstream_rq_http2_total')), 0)

    def test_http1_to_http2_only_listener_is_refused(self):
        p, (only,), up = self.start({'stat_prefix': 'only', 'codec_type': 'HTTP2'})
        with h.tcp_connect(only) as s:
            s.sendall(b'GET / HTTP/1.1\r\nhost: x\r\n\r\n')
            data = h.recv_until_eof(s)
        # A GOAWAY (type 7) after the server's SETTINGS, then the close; no HTTP/1 answer.
        self.assertNotIn(b'HTTP/1.1', data)
        self.assertIn(b'\x07\x00\x00\x00\x00\x00', data)
        p.wait_stat(http_stat('only', 'downstream_cx_protocol_error'), 1)
        self.assertEqual(len(up.requests), 0)

    def test_partial_preface_then_close(self):
        p, (auto,), up = self.start({'stat_prefix': 'auto'})
        with h.tcp_connect(auto) as s:
            s.sendall(b'PRI * HTTP/2')
            s.shutdown(1)
            self.assertEqual(h.recv_until_eof(s), b'')
        p.wait_stat(http_stat('auto', 'downstream_cx_active'), 0)
        r = curl('--http2-prior-knowledge', 'http://127.0.0.1:%d/' % auto, '-o', '/dev/null',
                 '-w', '%{http_code}')
        self.assertEqual(r.stdout, b'200')

    def test_trailers_and_headers_both_ways(self):
        p, (auto,), up = self.start({'stat_prefix': 'auto'})
        with H2Client(auto) as c:
            # Response trailers from a chunked HTTP/1 upstream come back as HEADERS.
            sid = c.request('GET', '/chunked/40000')
            st = c.response(sid)
            self.assertEqual(st.status, 200)
            self.assertEqual(bytes(st.data), h.pattern_bytes(0, 40000))
            self.assertEqual(dict(st.trailers or []).get('x-trailer'), 'done')
            # Request trailers go to the upstream (chunked).
            sid = c.request('POST', '/echo', headers=[('te', 'trailers')], body=b'x' * 1000,
                            trailers=[('x-req-trailer', 'yes')])
            st = c.response(sid)
            self.assertEqual(st.status, 200)
            body = json.loads(bytes(st.data))
            self.assertEqual(body['body_len'], 1000)
            self.assertIn(['x-req-trailer', 'yes'], body['trailers'])
            # Cookies split into fields are joined for the HTTP/1 upstream.
            sid = c.request('GET', '/echo', headers=[('cookie', 'a=1'), ('cookie', 'b=2')])
            body = json.loads(bytes(c.response(sid).data))
            self.assertEqual([v for n, v in body['headers'] if n == 'cookie'], ['a=1; b=2'])
            # HEAD: headers only, the stream ends.
            sid = c.request('HEAD', '/bytes/100')
            st = c.response(sid)
            self.assertEqual(st.status, 200)
            self.assertTrue(st.ended)
            self.assertEqual(bytes(st.data), b'')


class TlsAlpnTest(Http2Base):

    @classmethod
    def setUpClass(cls):
        cls.pki = C.standard_pki()

    def tls_start(self, codec_type=None, alpn=('h2', 'http/1.1')):
        up = HttpUpstream(name='app')
        self.addCleanup(up.close)
        port, admin = h.free_ports(2)
        extra = {'stat_prefix': 'tls'}
        if codec_type:
            extra['codec_type'] = codec_type
        ln = h.listener('tls', port, [hcm(**extra)])
        ln['filter_chains'][0]['transport_socket'] = C.downstream_tls(
            cert=self.pki.certs['server'], alpn=list(alpn))
        cfg = h.bootstrap([ln], [h.cluster('app', [up.port])], admin_port=admin)
        p = h.Petrel(cfg)
        p.start()
        self.addCleanup(p.close)
        return p, port

    def test_curl_http2_by_alpn(self):
        p, port = self.tls_start()
        r = curl('-k', '--http2', '-i', 'https://127.0.0.1:%d/echo' % port)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith(b'HTTP/2 200'), r.stdout[:200])
        body = json.loads(r.stdout.split(b'\r\n\r\n', 1)[1])
        hdrs = dict(body['headers'])
        self.assertEqual(hdrs['x-forwarded-proto'], 'https')
        r = curl('-k', '--http1.1', '-i', 'https://127.0.0.1:%d/echo' % port)
        self.assertTrue(r.stdout.startswith(b'HTTP/1.1 200'), r.stdout[:200])
        p.wait_stat(http_stat('tls', 'downstream_rq_http2_total'), 1)
        p.wait_stat(http_stat('tls', 'downstream_rq_http1_total'), 1)

    def test_python_h2_over_tls(self):
        p, port = self.tls_start(codec_type='HTTP2')
        ctx = C.client_context(alpn=['h2'])
        with H2Client(port, ssl_context=ctx) as c:
            self.assertEqual(c.sock.selected_alpn_protocol(), 'h2')
            sids = [c.request('GET', '/echo') for _ in range(5)]
            for sid in sids:
                self.assertEqual(c.response(sid).status, 200)

    def test_http1_codec_does_not_offer_h2(self):
        p, port = self.tls_start(codec_type='HTTP1')
        r = curl('-k', '--http2', '-i', 'https://127.0.0.1:%d/echo' % port)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith(b'HTTP/1.1 200'), r.stdout[:200])


class MultiplexTest(Http2Base):

    def test_many_concurrent_streams(self):
        p, (auto,), up = self.start({'stat_prefix': 'mx'})
        n = 60
        with H2Client(auto) as c:
            sids = []
            for i in range(n):
                if i % 3 == 0:
                    sids.append(c.request('POST', '/echo/%d' % i, body=h.pattern_bytes(i, 5000)))
                elif i % 3 == 1:
                    sids.append(c.request('GET', '/bytes/%d' % (1000 + i)))
                else:
                    sids.append(c.request('GET', '/delay/20/echo/%d' % i))
            c.pump(lambda: all(c.streams[s].done for s in sids), timeout=30,
                   message='all streams')
            for i, sid in enumerate(sids):
                st = c.streams[sid]
                self.assertTrue(st.ended, 'stream %d reset' % sid)
                self.assertEqual(st.status, 200)
                if i % 3 == 0:
                    self.assertEqual(json.loads(bytes(st.data))['body_len'], 5000)
                elif i % 3 == 1:
                    self.assertEqual(bytes(st.data), h.pattern_bytes(0, 1000 + i))
        p.wait_stat(http_stat('mx', 'downstream_rq_http2_total'), n)
        p.wait_stat(http_stat('mx', 'downstream_cx_http2_total'), 1)
        p.wait_stat(http_stat('mx', 'downstream_rq_active'), 0)

    def test_max_concurrent_streams_advertised_and_enforced(self):
        p, (auto,), up = self.start({'stat_prefix': 'mcs',
                                     'http2_protocol_options': {'max_concurrent_streams': 3}})
        with H2Client(auto) as c:
            c.pump(lambda: c.conn.remote_settings.max_concurrent_streams == 3,
                   message='SETTINGS')
            sids = [c.request('GET', '/delay/50/echo') for _ in range(3)]
            for sid in sids:
                self.assertEqual(c.response(sid).status, 200)

    def test_large_bodies_with_small_windows(self):
        size = 3 * 1024 * 1024 + 123
        p, (auto,), up = self.start({'stat_prefix': 'fc', 'http2_protocol_options': {
            'initial_stream_window_size': 65535, 'initial_connection_window_size': 65535}})
        with H2Client(auto, settings={4: 65535}) as c:
            down = c.request('GET', '/bytes/%d' % size)
            upl = c.request('POST', '/echo', body=h.pattern_bytes(0, size))
            st = c.response(down, timeout=60)
            self.assertEqual(st.status, 200)
            self.assertEqual(len(st.data), size)
            self.assertEqual(h.sha256_hex(bytes(st.data)), h.sha256_pattern(size))
            st = c.response(upl, timeout=60)
            self.assertEqual(st.status, 200)
            body = json.loads(bytes(st.data))
            self.assertEqual(body['body_len'], size)
            self.assertEqual(body['body_sha256'], h.sha256_pattern(size))

    def test_large_windows_many_downloads(self):
        # The client grants far more window than petrel's write queue limit: each send stops
        # at the limit and goes on as the queue drains, and every body arrives whole.
        size = 6 * 1024 * 1024
        p, (auto,), up = self.start({'stat_prefix': 'lw'})
        with H2Client(auto, settings={4: 2147483647}) as c:
            c.conn.increment_flow_control_window(1 << 30)
            c.flush()
            sids = [c.request('GET', '/bytes/%d' % size) for _ in range(4)]
            c.pump(lambda: all(c.streams[s].done for s in sids), timeout=90,
                   message='all downloads')
            for sid in sids:
                st = c.streams[sid]
                self.assertEqual(st.status, 200)
                self.assertEqual(h.sha256_hex(bytes(st.data)), h.sha256_pattern(size))

    def test_slow_reader_stream_does_not_block_others(self):
        # One stream's download stalls on a closed window (the client does not read it); a
        # second stream on the same connection still completes, then the first one resumes.
        p, (auto,), up = self.start({'stat_prefix': 'sr'})
        with H2Client(auto, auto_ack='conn') as c:
            big = c.request('GET', '/bytes/%d' % (2 * 1024 * 1024))
            c.pump(lambda: len(c.streams[big].data) >= 60000, message='first window')
            small = c.request('GET', '/echo')
            st = c.response(small)
            self.assertEqual(st.status, 200)
            self.assertFalse(c.streams[big].done)
            c.auto_ack = True
            c.conn.increment_flow_control_window(len(c.streams[big].data), big)
            c.flush()
            st = c.response(big, timeout=60)
            self.assertEqual(len(st.data), 2 * 1024 * 1024)


class UploadBackpressureTest(Http2Base):

    def test_upstream_that_does_not_read_withholds_the_window(self):
        # The upstream accepts nothing (a listen queue only): petrel's upstream queue fills,
        # the router read-disables the stream and the codec stops giving window back, so the
        # client is held to about what the buffers hold; the connection's other streams go on.
        import socket
        up = HttpUpstream(name='app')
        self.addCleanup(up.close)
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        stuck.bind(('127.0.0.1', 0))
        stuck.listen(8)
        self.addCleanup(stuck.close)
        routes = [h.route_prefix('/stuck', 'stuck', timeout='0s'),
                  h.route_prefix('/', 'app', timeout='10s')]
        port, admin = h.free_ports(2)
        cfg = h.bootstrap(
            [h.listener('l', port, [hcm('bp', routes=routes, stream_idle_timeout='0s',
                                        http2_protocol_options={
                                            'initial_stream_window_size': 65535,
                                            'initial_connection_window_size': 16777216})])],
            [h.cluster('app', [up.port]), h.cluster('stuck', [stuck.getsockname()[1]])],
            admin_port=admin)
        total = 64 * 1024 * 1024
        with h.Petrel(cfg) as p:
            with H2Client(port) as c:
                sid = c.request('POST', '/stuck', body=h.pattern_bytes(0, total))
                # Until the client has been blocked by the window for a few reads in a row.
                blocked = 0
                while blocked < 5:
                    before = len(c.streams[sid].pending)
                    c.read_once(0.3)
                    blocked = blocked + 1 if len(c.streams[sid].pending) == before else 0
                sent = total - len(c.streams[sid].pending)
                self.assertLess(sent, 24 * 1024 * 1024)
                self.assertFalse(c.streams[sid].done)
                ok = c.request('POST', '/echo', body=b'z' * 100000)
                st = c.response(ok)
                self.assertEqual(st.status, 200)
                self.assertEqual(json.loads(bytes(st.data))['body_len'], 100000)
                c.reset(sid)
                p.wait_stat(http_stat('bp', 'downstream_rq_active'), 0)


class ResetTest(Http2Base):

    def test_client_rst_mid_response_leaves_other_streams(self):
        p, (auto,), up = self.start({'stat_prefix': 'rst'})
        with H2Client(auto, auto_ack='conn') as c:
            big = c.request('GET', '/bytes/%d' % (8 * 1024 * 1024))
            other = c.request('GET', '/delay/100/echo')
            c.pump(lambda: len(c.streams[big].data) >= 30000, message='response started')
            c.reset(big)
            c.auto_ack = True
            st = c.response(other)
            self.assertEqual(st.status, 200)
            sid = c.request('GET', '/echo')
            self.assertEqual(c.response(sid).status, 200)
        p.wait_stat('http2.rx_reset', lambda v: v >= 1)
        p.wait_stat(http_stat('rst', 'downstream_rq_rx_reset'), lambda v: v >= 1)
        p.wait_stat(http_stat('rst', 'downstream_rq_active'), 0)

    def test_upstream_down_is_503_on_that_stream_only(self):
        up = HttpUpstream(name='app')
        self.addCleanup(up.close)
        dead = h.dead_port()
        routes = [h.route_prefix('/dead', 'dead', timeout='5s'),
                  h.route_prefix('/', 'app', timeout='5s')]
        port, admin = h.free_ports(2)
        cfg = h.bootstrap([h.listener('l', port, [hcm('down', routes=routes)])],
                          [h.cluster('app', [up.port]), h.cluster('dead', [dead])],
                          admin_port=admin)
        with h.Petrel(cfg) as p:
            with H2Client(port) as c:
                a = c.request('GET', '/dead/x')
                b = c.request('GET', '/echo')
                self.assertEqual(c.response(a).status, 503)
                self.assertEqual(c.response(b).status, 200)
                self.assertEqual(c.streams[a].header('content-type'), 'text/plain')
                self.assertIsNone(c.goaway)

    def test_upstream_reset_after_headers_resets_the_stream(self):
        p, (auto,), up = self.start({'stat_prefix': 'ur'})
        with H2Client(auto) as c:
            a = c.request('GET', '/reset-after-headers')
            st = c.response(a)
            self.assertIsNotNone(st.reset)
            b = c.request('GET', '/echo')
            self.assertEqual(c.response(b).status, 200)
        p.wait_stat('http2.tx_reset', lambda v: v >= 1)


class DrainTest(Http2Base):

    def test_drain_sends_goaway_and_finishes_streams(self):
        p, (auto,), up = self.start({'stat_prefix': 'dr', 'drain_timeout': '0.3s'})
        with H2Client(auto) as c:
            slow = c.request('GET', '/delay/300/echo')
            up.wait_requests(1)
            p.signal(signal.SIGTERM)
            c.wait_goaway()
            self.assertEqual(c.goaways[0].error_code, 0)
            st = c.response(slow)
            self.assertEqual(st.status, 200)
            # The final GOAWAY names the last stream processed; then the connection closes.
            c.pump(lambda: len(c.goaways) >= 2, message='final GOAWAY')
            self.assertEqual(c.goaways[-1].last_stream_id, slow)
            self.assertEqual(len(c.goaways), 2)
            # (No stat read after this: with its last connection gone, petrel exits.)
            self.assertTrue(c.wait_closed())

    def test_max_connection_duration_goaway(self):
        p, (auto,), up = self.start({'stat_prefix': 'md', 'drain_timeout': '0.2s',
                                     'common_http_protocol_options': {
                                         'max_connection_duration': '0.3s'}})
        with H2Client(auto) as c:
            sid = c.request('GET', '/echo')
            self.assertEqual(c.response(sid).status, 200)
            c.wait_goaway()
            self.assertTrue(c.wait_closed())
        p.wait_stat(http_stat('md', 'downstream_cx_max_duration_reached'), 1)

    def test_max_requests_per_connection(self):
        p, (auto,), up = self.start({'stat_prefix': 'mr', 'drain_timeout': '0.2s',
                                     'common_http_protocol_options': {
                                         'max_requests_per_connection': 2}})
        with H2Client(auto) as c:
            for _ in range(2):
                sid = c.request('GET', '/echo')
                self.assertEqual(c.response(sid).status, 200)
            c.wait_goaway()
            self.assertTrue(c.wait_closed())

    def test_idle_timeout_closes_with_goaway(self):
        p, (auto,), up = self.start({'stat_prefix': 'it', 'common_http_protocol_options': {
            'idle_timeout': '0.3s'}})
        with H2Client(auto) as c:
            sid = c.request('GET', '/echo')
            self.assertEqual(c.response(sid).status, 200)
            c.wait_goaway()
            self.assertTrue(c.wait_closed())
        p.wait_stat(http_stat('it', 'downstream_cx_idle_timeout'), 1)

    def test_request_headers_timeout_per_stream(self):
        p, (auto,), up = self.start({'stat_prefix': 'ht', 'request_headers_timeout': '0.3s'})
        with H2Client(auto) as c:
            ok = c.request('GET', '/echo')
            self.assertEqual(c.response(ok).status, 200)
            # HEADERS without END_HEADERS: the block never ends.
            from hpack import Encoder
            from h2client import frame
            block = Encoder().encode([(':method', 'GET'), (':path', '/'), (':scheme', 'http'),
                                      (':authority', 'x')])
            c.send_raw(frame(1, 0x1, 101, block))   # END_STREAM, no END_HEADERS
            p.wait_stat(http_stat('ht', 'downstream_rq_header_timeout'), 1)
        p.wait_stat(http_stat('ht', 'downstream_rq_active'), 0)


class FiltersTest(Http2Base):

    def test_filters_on_http2_streams(self):
        up = HttpUpstream(name='app')
        self.addCleanup(up.close)
        port, admin = h.free_ports(2)
        filters = [
            {'name': 'envoy.filters.http.health_check', 'typed_config': {
                '@type': HC_TYPE, 'pass_through_mode': False,
                'headers': [{'name': ':path', 'string_match': {'exact': '/healthz'}}]}},
            {'name': 'envoy.filters.http.rbac', 'typed_config': {
                '@type': RBAC_TYPE, 'rules': {'action': 'DENY', 'policies': {'deny-admin': {
                    'permissions': [{'url_path': {'path': {'prefix': '/admin'}}}],
                    'principals': [{'any': True}]}}}}},
            {'name': 'envoy.filters.http.fault', 'typed_config': {
                '@type': FAULT_TYPE, 'abort': {'percentage': {
                    'numerator': 100, 'denominator': 'HUNDRED'}, 'header_abort': {}}}},
            {'name': 'envoy.filters.http.local_ratelimit', 'typed_config': {
                '@type': LRL_TYPE, 'stat_prefix': 'rl',
                'token_bucket': {'max_tokens': 3, 'fill_interval': '3600s'},
                'filter_enabled': {'runtime_key': 'x', 'default_value': {'numerator': 100}},
                'filter_enforced': {'runtime_key': 'x', 'default_value': {'numerator': 100}}}},
            h.router_filter()]
        hc = h.http_connection_manager('flt', h.route_config([h.vhost('all', ['*'], [
            h.route_prefix('/', 'app', timeout='5s')])]), http_filters=filters)
        cfg = h.bootstrap([h.listener('l', port, [hc])], [h.cluster('app', [up.port])],
                          admin_port=admin)
        with h.Petrel(cfg) as p:
            with H2Client(port) as c:
                self.assertEqual(c.response(c.request('GET', '/healthz')).status, 200)
                self.assertEqual(c.response(c.request('GET', '/admin/x')).status, 403)
                st = c.response(c.request('GET', '/f', headers=[('x-envoy-fault-abort-request',
                                                                   '503')]))
                self.assertEqual(st.status, 503)
                codes = [c.response(c.request('GET', '/echo')).status for _ in range(4)]
                self.assertIn(200, codes)
                self.assertEqual(codes[-1], 429)
                self.assertIsNone(c.goaway)
            self.assertEqual(len([r for r in up.requests if r['path'] == '/healthz']), 0)


if __name__ == '__main__':
    unittest.main()
