"""HTTP/1.1 L7 proxy end to end: requests and bodies through petrel, connection reuse on both
sides, pipelining, chunked bodies and trailers, Expect: 100-continue, HTTP/1.0, HEAD and
bodiless statuses, 256 MiB bodies with bounded memory, Envoy's request/response header rules
and the http.* / cluster.* stats that describe all of it.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_http_basic.py -v
"""

import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

MiB = 1 << 20
LARGE = 256 * MiB
UUID4 = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$')


def http_config(port, admin, upstream_port, route_extra=None, cluster_extra=None, **hcm_extra):
    """One HTTP listener (stat prefix "ingress"), every path routed to cluster "up"."""
    route = h.route_prefix('/', 'up', timeout='20s', **(route_extra or {}))
    hcm = h.http_connection_manager('ingress', h.route_config([h.vhost('all', ['*'], [route])]),
                                    **hcm_extra)
    return h.bootstrap([h.listener('http', port, [hcm])],
                       [h.cluster('up', [upstream_port], **(cluster_extra or {}))],
                       admin_port=admin)


class ProxyCase(unittest.TestCase):
    """Each test gets a fresh upstream; ``start()`` runs petrel in front of it."""

    def setUp(self):
        self.up = HttpUpstream(name='up')
        self.addCleanup(self.up.close)

    def start(self, **kw):
        self.port, admin = h.free_ports(2)
        p = h.Petrel(http_config(self.port, admin, self.up.port, **kw))
        p.__enter__()
        self.addCleanup(p.__exit__, None, None, None)
        return p

    def request(self, *args, **kw):
        return h.http_request(self.port, *args, **kw)


class RequestsAndBodies(ProxyCase):

    def test_get_and_post_echo(self):
        self.start()
        r = self.request('GET', '/echo/get?x=1')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.get('x-upstream-name'), 'up')
        self.assertEqual(r.json()['method'], 'GET')
        self.assertEqual(r.json()['path'], '/echo/get?x=1')
        self.assertEqual(self.up.last['body_len'], 0)

        body = h.pattern_bytes(0, 3 * MiB + 7)
        r = self.request('POST', '/echo/post', body=body)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_len'], len(body))
        self.assertEqual(r.json()['body_sha256'], h.sha256_hex(body))
        self.assertEqual(self.up.last['method'], 'POST')
        self.assertEqual(self.up.last.header('content-length'), str(len(body)))

        r = self.request('PUT', '/echo/empty', body=b'')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_len'], 0)

    def test_download_content_length(self):
        self.start()
        r = self.request('GET', '/bytes/%d' % (5 * MiB + 3))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.get('content-length'), str(5 * MiB + 3))
        self.assertEqual(r.body_sha256, h.sha256_pattern(5 * MiB + 3))

    def test_pipelining_answers_in_order(self):
        p = self.start()
        n = 8
        with h.HttpClientConn(self.port) as c:
            raw = b''.join(b'GET /echo/%d HTTP/1.1\r\nHost: x\r\n\r\n' % i for i in range(n - 1))
            raw += b'POST /echo/last HTTP/1.1\r\nHost: x\r\ncontent-length: 5\r\n\r\nhello'
            c.send_raw(raw)
            paths = [c.read_response().json()['path'] for _ in range(n)]
        self.assertEqual(paths, ['/echo/%d' % i for i in range(n - 1)] + ['/echo/last'])
        self.assertEqual(self.up.last['body'], b'hello')
        self.assertEqual(p.stat('http.ingress.downstream_cx_total'), 1)
        p.wait_stat('http.ingress.downstream_rq_total', n)

    def test_chunked_upload_with_trailers(self):
        self.start()
        pieces = [h.pattern_bytes(0, 1000), h.pattern_bytes(1000, 70000), b'x',
                  h.pattern_bytes(70001, 5)]
        data = b''.join(pieces)
        r = self.request('POST', '/echo/chunked', body=pieces, chunked=True,
                         trailers=[('x-checksum', 'abc'), ('x-other', '2')])
        self.assertEqual(r.status, 200)
        rec = self.up.last
        self.assertEqual(rec['body_len'], len(data))
        self.assertEqual(rec['body_sha256'], h.sha256_hex(data))
        self.assertEqual(rec.header('transfer-encoding'), 'chunked')
        self.assertIsNone(rec.header('content-length'))
        self.assertIn(('x-checksum', 'abc'), rec['trailers'])
        self.assertIn(('x-other', '2'), rec['trailers'])

    def test_chunked_uploads_with_trailers_keepalive(self):
        # The first upload waits for a new upstream connection (body and trailers held), the
        # later ones go out on the pooled connection at once.
        self.start()
        with h.HttpClientConn(self.port) as c:
            for i in range(4):
                r = c.request('POST', '/echo/%d' % i, body=[b'abc', b'defg' * i], chunked=True,
                              trailers=[('x-t', str(i))])
                self.assertEqual(r.json()['body_len'], 3 + 4 * i)
                self.assertEqual(r.json()['trailers'], [['x-t', str(i)]])
                self.assertEqual(r.json()['conn_id'], 1)
            r = c.request('POST', '/echo/trailers-only', body=[], chunked=True,
                          trailers=[('x-only', '1')])
            self.assertEqual((r.json()['body_len'], r.json()['trailers']), (0, [['x-only', '1']]))

    def test_chunked_upload_without_trailers(self):
        self.start()
        pieces = [b'a' * 10, b'b' * 100000]
        r = self.request('POST', '/echo', body=iter(pieces))     # iterable body: chunked
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_len'], 100010)
        self.assertEqual(self.up.last['trailers'], [])

    def test_chunked_download_reframed(self):
        self.start()
        n = 300 * 1024 + 17
        with h.HttpClientConn(self.port) as c:
            r = c.request('GET', '/chunked/%d' % n)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.get('transfer-encoding'), 'chunked')
            self.assertIsNone(r.get('content-length'))
            self.assertEqual(r.body_len, n)
            self.assertEqual(r.body_sha256, h.sha256_pattern(n))
            self.assertEqual(r.trailer('x-trailer'), 'done')
            # The connection is still good after a chunked response with trailers.
            self.assertEqual(c.request('GET', '/echo').status, 200)

    def test_expect_100_continue(self):
        self.start()
        with h.HttpClientConn(self.port) as c:
            r = c.request('POST', '/echo/expect', body=b'z' * 5000, expect_100=True)
            self.assertEqual(r.status, 200)
            self.assertEqual([i.status for i in r.interim], [100])
            self.assertEqual(r.json()['body_len'], 5000)
            rec = self.up.last
            self.assertIsNone(rec.header('expect'))
            self.assertFalse(rec['continue_sent'])
            # Same connection, next request fine.
            self.assertEqual(c.request('GET', '/echo').status, 200)

    def test_head_and_bodiless_statuses(self):
        self.start()
        with h.HttpClientConn(self.port) as c:
            r = c.request('HEAD', '/bytes/1000')
            self.assertEqual(r.status, 200)
            self.assertEqual(r.get('content-length'), '1000')
            self.assertEqual(r.body, b'')
            self.assertEqual(self.up.last['method'], 'HEAD')
            r = c.request('GET', '/status/204')
            self.assertEqual(r.status, 204)
            self.assertIsNone(r.get('transfer-encoding'))
            r = c.request('GET', '/status/304')
            self.assertEqual(r.status, 304)
            self.assertIsNone(r.get('transfer-encoding'))
            # If any of these had carried a stray body the next response would be garbage.
            r = c.request('GET', '/echo/after')
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()['path'], '/echo/after')
            c.settimeout(0.3)
            with self.assertRaises(socket.timeout):
                c.read_some(1)                 # nothing left over on the connection

    def test_no_content_length_in_204(self):
        # RFC 9110 8.6: a 204 never carries Content-Length, even if the upstream sent one.
        self.start()
        with h.HttpClientConn(self.port) as c:
            r = c.request('GET', '/status/204',
                          headers={'x-test-response-headers': 'content-length=0'})
            self.assertEqual(r.status, 204)
            self.assertEqual(r.get_all('content-length'), [])
            self.assertEqual(c.request('GET', '/echo').status, 200)

    def test_upstream_error_statuses_pass_through(self):
        self.start()
        for code in (201, 302, 404, 418, 500, 503):
            r = self.request('GET', '/status/%d' % code)
            self.assertEqual(r.status, code)
            self.assertEqual(r.body, b'status %d\n' % code)

    def test_interim_1xx_from_upstream_is_not_forwarded_as_final(self):
        self.start()
        r = self.request('GET', '/status/103')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['path'], '/status/103')


class ConnectionReuse(ProxyCase):

    def test_downstream_keepalive_many_requests(self):
        p = self.start()
        with h.HttpClientConn(self.port) as c:
            for i in range(30):
                r = c.request('GET', '/echo/%d' % i)
                self.assertEqual(r.status, 200)
                self.assertFalse(r.will_close)
        p.wait_stat('http.ingress.downstream_rq_total', 30)
        self.assertEqual(p.stat('http.ingress.downstream_cx_total'), 1)
        self.assertEqual(p.stat('http.ingress.downstream_cx_http1_total'), 1)

    def test_upstream_keepalive_single_connection(self):
        p = self.start()
        for i in range(10):
            r = self.request('GET', '/echo/%d' % i)      # a fresh client connection each time
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()['conn_id'], 1)
        self.assertEqual(p.stat('cluster.up.upstream_cx_total'), 1)
        self.assertEqual(p.stat('cluster.up.upstream_cx_http1_total'), 1)
        self.assertEqual(self.up.connections, 1)
        self.assertEqual(p.stat('cluster.up.upstream_cx_active'), 1)   # idle in the pool

    def test_max_requests_per_connection(self):
        p = self.start(cluster_extra={'max_requests_per_connection': 3})
        ids = [self.request('GET', '/echo').json()['conn_id'] for _ in range(7)]
        self.assertEqual(ids, [1, 1, 1, 2, 2, 2, 3])
        self.assertEqual(self.up.connections, 3)
        self.assertEqual(p.stat('cluster.up.upstream_cx_total'), 3)
        p.wait_stat('cluster.up.upstream_cx_max_requests', 2)

    def test_max_requests_per_connection_common_options(self):
        p = self.start(cluster_extra={
            'common_http_protocol_options': {'max_requests_per_connection': 2}})
        ids = [self.request('GET', '/echo').json()['conn_id'] for _ in range(5)]
        self.assertEqual(ids, [1, 1, 2, 2, 3])
        self.assertEqual(p.stat('cluster.up.upstream_cx_total'), 3)

    def test_upstream_idle_timeout(self):
        p = self.start(cluster_extra={'common_http_protocol_options': {'idle_timeout': '0.3s'}})
        self.assertEqual(self.request('GET', '/echo').json()['conn_id'], 1)
        p.wait_stat('cluster.up.upstream_cx_idle_timeout', 1)
        p.wait_stat('cluster.up.upstream_cx_active', 0)
        self.up.wait_idle()                       # the upstream saw the close
        self.assertEqual(self.request('GET', '/echo').json()['conn_id'], 2)
        self.assertEqual(p.stat('cluster.up.upstream_cx_total'), 2)

    def test_downstream_max_requests_per_connection(self):
        p = self.start(common_http_protocol_options={'max_requests_per_connection': 3})
        with h.HttpClientConn(self.port) as c:
            rs = [c.request('GET', '/echo/%d' % i) for i in range(3)]
            self.assertEqual([r.status for r in rs], [200, 200, 200])
            self.assertEqual([r.get('connection') for r in rs], [None, None, 'close'])
            self.assertTrue(c.wait_closed(5))
        p.wait_stat('http.ingress.downstream_cx_active', 0)

    def test_many_concurrent_clients(self):
        p = self.start()
        errors, done = [], []

        def client(i):
            try:
                with h.HttpClientConn(self.port) as c:
                    for j in range(10):
                        body = b'%d-%d' % (i, j)
                        r = c.request('POST', '/echo', body=body)
                        if r.status != 200 or r.json()['body_sha256'] != h.sha256_hex(body):
                            errors.append((i, j, r.status))
                done.append(i)
            except Exception as e:       # noqa: BLE001 - reported below
                errors.append((i, repr(e)))
        threads = [threading.Thread(target=client, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(h.scaled(60))
        self.assertEqual(errors, [])
        self.assertEqual(len(done), 40)
        p.wait_stat('http.ingress.downstream_rq_total', 400)
        p.wait_stat('http.ingress.downstream_rq_active', 0)
        p.wait_stat('cluster.up.upstream_rq_active', 0)
        # Upstream connections are pooled: no more than one per concurrent client.
        self.assertLessEqual(p.stat('cluster.up.upstream_cx_total'), 40)

    def test_connection_close_honoured(self):
        p = self.start()
        with h.HttpClientConn(self.port) as c:
            r = c.request('GET', '/echo', headers={'Connection': 'close'})
            self.assertEqual(r.status, 200)
            self.assertEqual(r.get('connection'), 'close')
            self.assertTrue(c.wait_closed(5))
        # The upstream connection is not closed by a downstream Connection: close.
        self.assertIsNone(self.up.last.header('connection'))
        p.wait_stat('http.ingress.downstream_cx_active', 0)
        self.assertEqual(self.request('GET', '/echo').json()['conn_id'], 1)

    def test_requests_after_connection_close_ignored(self):
        self.start()
        with h.HttpClientConn(self.port) as c:
            c.send_raw(b'GET /first HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
                       b'GET /second HTTP/1.1\r\nHost: a\r\n\r\n')
            r = c.read_response()
            self.assertEqual((r.status, r.get('connection')), (200, 'close'))
            self.assertTrue(c.wait_closed(5))
            self.assertEqual(c.discarded, b'')
        self.assertEqual([rec['path'] for rec in self.up.requests], ['/first'])

    def test_upstream_connection_close_response(self):
        p = self.start()
        r = self.request('GET', '/close')
        self.assertEqual(r.status, 200)
        self.assertNotEqual(r.get('connection'), 'close')   # hop-by-hop: not forwarded
        p.wait_stat('cluster.up.upstream_cx_active', 0)
        self.assertEqual(self.request('GET', '/echo').json()['conn_id'], 2)


class Http10(ProxyCase):

    def test_http10_rejected_by_default(self):
        p = self.start()
        with h.HttpClientConn(self.port) as c:
            r = c.request('GET', '/echo', version='HTTP/1.0')
            self.assertEqual(r.status, 426)
            self.assertTrue(c.wait_closed(5))
        self.assertEqual(self.up.requests, [])
        p.wait_stat('http.ingress.downstream_rq_4xx', 1)

    def test_http10_accepted(self):
        self.start(http_protocol_options={'accept_http_10': True})
        with h.HttpClientConn(self.port) as c:
            r = c.request('GET', '/echo/10', version='HTTP/1.0')
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()['path'], '/echo/10')
            self.assertTrue(r.will_close)
            self.assertTrue(c.wait_closed(5))

    def test_http10_keepalive(self):
        self.start(http_protocol_options={'accept_http_10': True})
        with h.HttpClientConn(self.port) as c:
            for i in range(3):
                r = c.request('GET', '/echo/%d' % i, version='HTTP/1.0',
                              headers={'Connection': 'keep-alive'})
                self.assertEqual(r.status, 200)
                self.assertIn('keep-alive', r.get('connection', '').lower())
                self.assertFalse(r.will_close)
            r = c.request('POST', '/echo', version='HTTP/1.0', body=b'abc',
                          headers={'Connection': 'keep-alive'})
            self.assertEqual(r.json()['body_len'], 3)

    def test_http10_close_delimited_body(self):
        self.start(http_protocol_options={'accept_http_10': True})
        n = 200 * 1024 + 1
        with h.HttpClientConn(self.port) as c:
            r = c.request('GET', '/chunked/%d' % n, version='HTTP/1.0',
                          headers={'Connection': 'keep-alive'})
            self.assertEqual(r.status, 200)
            self.assertIsNone(r.get('transfer-encoding'))
            self.assertTrue(r.eof_delimited)
            self.assertEqual(r.body_len, n)
            self.assertEqual(r.body_sha256, h.sha256_pattern(n))

    def test_http10_without_host(self):
        self.start(http_protocol_options={'accept_http_10': True,
                                          'default_host_for_http_10': 'default.example'})
        with h.HttpClientConn(self.port) as c:
            c.send_raw(b'GET /echo HTTP/1.0\r\n\r\n')
            r = c.read_response()
            self.assertEqual(r.status, 200)
        self.assertEqual(self.up.last.header('host'), 'default.example')


class LargeBodies(ProxyCase):
    """256 MiB each way: byte-exact, and petrel's memory stays bounded (backpressure)."""

    def _watch_rss(self, p, stop, peak):
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], p.rss_kb())
            except (OSError, h.PetrelError):
                return
            time.sleep(0.02)

    def _run_bounded(self, p, fn):
        for _ in range(3):                      # warm up pools, buffers and free lists
            self.request('POST', '/echo', body=h.pattern_bytes(0, 4 * MiB))
            self.request('GET', '/bytes/%d' % (4 * MiB))
        base = p.rss_kb()
        stop, peak = threading.Event(), [base]
        t = threading.Thread(target=self._watch_rss, args=(p, stop, peak), daemon=True)
        t.start()
        try:
            result = fn()
        finally:
            stop.set()
            t.join()
        growth_mib = (peak[0] - base) / 1024.0
        self.assertLess(growth_mib, 64, 'petrel RSS grew by %.1f MiB (from %d KiB)'
                        % (growth_mib, base))
        return result

    def test_large_upload(self):
        p = self.start()
        expect = h.sha256_pattern(LARGE)

        def upload():
            return self.request('POST', '/echo/upload', body=h.pattern_chunks(LARGE),
                                headers={'Content-Length': str(LARGE)}, timeout=120)
        r = self._run_bounded(p, upload)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_len'], LARGE)
        self.assertEqual(r.json()['body_sha256'], expect)

    def test_slow_reader_backpressure(self):
        # A client that stops reading a 512 MiB download: petrel stops reading the upstream
        # instead of buffering the body.
        p = self.start()
        self.request('GET', '/bytes/%d' % (4 * MiB))
        base = p.rss_kb()
        s = socket.socket()
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.settimeout(h.scaled(10))
        s.connect(('127.0.0.1', self.port))
        s.sendall(b'GET /bytes/%d HTTP/1.1\r\nHost: a\r\n\r\n' % (512 * MiB))
        got = 0
        while got < MiB:
            got += len(s.recv(65536))
        time.sleep(h.scaled(1.5))      # stalled: the upstream pushes what petrel would take
        growth_mib = (p.rss_kb() - base) / 1024.0
        self.assertLess(growth_mib, 64, 'petrel buffered %.1f MiB for a stalled reader'
                        % growth_mib)
        self.assertEqual(p.stat('http.ingress.downstream_rq_active'), 1)
        s.close()
        p.wait_stat('http.ingress.downstream_rq_active', 0)

    def test_large_download(self):
        p = self.start()
        expect = h.sha256_pattern(LARGE)

        def download():
            return self.request('GET', '/bytes/%d' % LARGE, store_body=False, timeout=120)
        r = self._run_bounded(p, download)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body_len, LARGE)
        self.assertEqual(r.body_sha256, expect)


class HeaderRules(ProxyCase):

    def test_xff_appended_with_use_remote_address(self):
        self.start(use_remote_address=True)
        self.request('GET', '/echo')
        self.assertEqual(self.up.last.header('x-forwarded-for'), '127.0.0.1')
        self.request('GET', '/echo', headers={'X-Forwarded-For': '10.1.2.3'})
        xff = [x.strip() for x in self.up.last.header('x-forwarded-for').split(',')]
        self.assertEqual(xff, ['10.1.2.3', '127.0.0.1'])
        # x-forwarded-proto is set from the connection, whatever the client claims.
        self.request('GET', '/echo', headers={'X-Forwarded-Proto': 'https'})
        self.assertEqual(self.up.last.header('x-forwarded-proto'), 'http')

    def test_xff_untouched_without_use_remote_address(self):
        self.start(use_remote_address=False)
        self.request('GET', '/echo')
        self.assertIsNone(self.up.last.header('x-forwarded-for'))
        self.request('GET', '/echo', headers={'X-Forwarded-For': '10.1.2.3, 10.0.0.9'})
        self.assertEqual(self.up.last.header('x-forwarded-for'), '10.1.2.3, 10.0.0.9')
        self.assertEqual(self.up.last.header('x-forwarded-proto'), 'http')
        self.request('GET', '/echo', headers={'X-Forwarded-Proto': 'https'})
        self.assertEqual(self.up.last.header('x-forwarded-proto'), 'https')

    def test_request_id_generated_and_preserved(self):
        self.start(use_remote_address=False)
        ids = set()
        for _ in range(5):
            self.request('GET', '/echo')
            rid = self.up.last.header('x-request-id')
            self.assertRegex(rid, UUID4)
            ids.add(rid)
        self.assertEqual(len(ids), 5)
        self.request('GET', '/echo', headers={'x-request-id': 'my-own-id-42'})
        self.assertEqual(self.up.last.header('x-request-id'), 'my-own-id-42')
        self.assertEqual(len(self.up.last.header_all('x-request-id')), 1)

    def test_hop_by_hop_request_headers_removed(self):
        self.start()
        self.request('GET', '/echo', headers=[
            ('Connection', 'X-Hop, keep-alive'), ('X-Hop', '1'), ('Keep-Alive', 'timeout=5'),
            ('Proxy-Connection', 'keep-alive'), ('TE', 'gzip'), ('X-End-To-End', 'yes')])
        rec = self.up.last
        for name in ('x-hop', 'keep-alive', 'proxy-connection', 'te'):
            self.assertIsNone(rec.header(name), name)
        self.assertNotIn('x-hop', (rec.header('connection') or '').lower())
        self.assertEqual(rec.header('x-end-to-end'), 'yes')
        self.request('GET', '/echo', headers={'TE': 'trailers'})
        self.assertEqual(self.up.last.header('te'), 'trailers')

    def test_hop_by_hop_response_headers_removed(self):
        self.start()
        r = self.request('GET', '/echo', headers={
            'x-test-response-headers': 'keep-alive=timeout=9;proxy-connection=x;x-kept=1'})
        self.assertIsNone(r.get('keep-alive'))
        self.assertIsNone(r.get('proxy-connection'))
        self.assertEqual(r.get('x-kept'), '1')

    def test_server_header_default_overwrites(self):
        self.start()
        r = self.request('GET', '/echo')
        self.assertEqual(r.get_all('server'), ['petrel'])
        r = self.request('GET', '/echo', headers={'x-test-response-headers': 'server=backend'})
        self.assertEqual(r.get_all('server'), ['petrel'])

    def test_server_name_option(self):
        self.start(server_name='edge-gw')
        r = self.request('GET', '/echo', headers={'x-test-response-headers': 'server=backend'})
        self.assertEqual(r.get_all('server'), ['edge-gw'])

    def test_server_header_pass_through(self):
        self.start(server_header_transformation='PASS_THROUGH')
        r = self.request('GET', '/echo', headers={'x-test-response-headers': 'server=backend'})
        self.assertEqual(r.get_all('server'), ['backend'])
        r = self.request('GET', '/echo')
        self.assertEqual(r.get_all('server'), [])

    def test_server_header_append_if_absent(self):
        self.start(server_header_transformation='APPEND_IF_ABSENT')
        r = self.request('GET', '/echo', headers={'x-test-response-headers': 'server=backend'})
        self.assertEqual(r.get_all('server'), ['backend'])
        r = self.request('GET', '/echo')
        self.assertEqual(r.get_all('server'), ['petrel'])

    def test_upstream_service_time(self):
        self.start()
        r = self.request('GET', '/delay/50')
        ms = r.get('x-envoy-upstream-service-time')
        self.assertIsNotNone(ms)
        self.assertRegex(ms, r'^\d+$')
        self.assertGreaterEqual(int(ms), 40)

    def test_host_header_forwarded(self):
        self.start()
        self.request('GET', '/echo', host_header='svc.example:8080')
        self.assertEqual(self.up.last.header_all('host'), ['svc.example:8080'])


class DelayedClose(ProxyCase):
    """delayed_close_timeout: petrel sends its FIN after the last response and waits for the
    client's, dropping what the client still sends, instead of closing with unread bytes
    (which sends a RST that can destroy the response)."""

    def exchange(self):
        """A request with Connection: close, then 1 MiB more from another thread: petrel
        stops reading after that request, so bytes are left unread in its socket. The
        upstream answers after 300 ms, so the bytes are there before the response is.
        Returns (response bytes, how the stream ended: 'fin' or 'reset')."""
        s = h.tcp_connect(self.port)
        s.sendall(b'GET /delay/300/first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')

        def flood():
            try:
                s.sendall(b'x' * (1 << 20))
            except OSError:
                pass  # the reset case: petrel is gone

        t = threading.Thread(target=flood)
        t.start()
        data, end = b'', None
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    end = 'fin'
                    break
                data += chunk
        except ConnectionResetError:
            end = 'reset'
        t.join()
        s.close()
        return data, end

    def test_fin_then_wait_instead_of_reset(self):
        p = self.start(delayed_close_timeout='1s')
        data, end = self.exchange()
        self.assertTrue(data.startswith(b'HTTP/1.1 200 '), data[:100])
        self.assertEqual(end, 'fin')
        self.assertEqual(self.up.last['path'], '/delay/300/first')
        self.assertEqual(p.stat('http.ingress.downstream_cx_delayed_close_timeout'), 0)

    def test_zero_closes_at_once_with_a_reset(self):
        # The control: without the delay the unread pipelined request makes the close a RST.
        self.start(delayed_close_timeout='0s')
        data, end = self.exchange()
        self.assertTrue(data.startswith(b'HTTP/1.1 200 '), data[:100])
        self.assertEqual(end, 'reset')

    def test_a_client_that_never_closes_is_closed_after_the_timeout(self):
        p = self.start(delayed_close_timeout='0.3s')
        s = h.tcp_connect(self.port)
        s.sendall(b'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        self.assertTrue(h.recv_until_eof(s).startswith(b'HTTP/1.1 200 '))  # FIN after it
        p.wait_stat('http.ingress.downstream_cx_delayed_close_timeout', 1)
        s.close()


class MaxConnectionDuration(ProxyCase):
    """common_http_protocol_options.max_connection_duration drains the connection."""

    def test_idle_connection_is_closed(self):
        p = self.start(common_http_protocol_options={'max_connection_duration': '0.3s'})
        s = h.tcp_connect(self.port)
        s.sendall(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
        self.assertTrue(h.recv_until_eof(s).startswith(b'HTTP/1.1 200 '))  # then the FIN
        s.close()
        p.wait_stat('http.ingress.downstream_cx_max_duration_reached', 1)

    def test_response_in_flight_carries_connection_close(self):
        p = self.start(common_http_protocol_options={'max_connection_duration': '0.3s'})
        with h.HttpClientConn(self.port) as c:
            r = c.request('GET', '/delay/800')
            self.assertEqual(r.status, 200)
            self.assertEqual(r.get('connection'), 'close')
        self.assertEqual(p.stat('http.ingress.downstream_cx_max_duration_reached'), 1)


class RouterOptions(ProxyCase):
    """The router filter's own fields."""

    ROUTER = {'name': 'envoy.filters.http.router', 'typed_config': {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router'}}

    def router(self, **fields):
        r = json.loads(json.dumps(self.ROUTER))
        r['typed_config'].update(fields)
        return [r]

    def test_suppress_envoy_headers(self):
        self.start(http_filters=self.router(suppress_envoy_headers=True,
                                            start_child_span=False, upstream_log=[]))
        r = self.request('GET', '/')
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.get('x-envoy-upstream-service-time'))

    def test_envoy_headers_by_default(self):
        self.start(http_filters=self.router())
        self.assertIsNotNone(self.request('GET', '/').get('x-envoy-upstream-service-time'))

    def test_start_child_span_true_is_accepted(self):
        # What it does is tested with a tracer in test_tracing.py.
        port, admin = h.free_ports(2)
        with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
            json.dump(http_config(port, admin, self.up.port,
                                  http_filters=self.router(start_child_span=True)), f)
        self.addCleanup(os.unlink, f.name)
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', f.name])
        self.assertEqual(rc, 0, err)


class HostPortAndVia(ProxyCase):
    """strip_any_host_port, strip_matching_host_port and via."""

    def test_strip_any_host_port(self):
        self.start(strip_any_host_port=True)
        self.assertEqual(self.request('GET', '/', host_header='app.example:8443').status, 200)
        self.assertEqual(self.up.last.header('host'), 'app.example')
        self.request('GET', '/', host_header='[::1]')
        self.assertEqual(self.up.last.header('host'), '[::1]')

    def test_strip_matching_host_port_only_for_the_listener_port(self):
        self.start(strip_matching_host_port=True)
        self.request('GET', '/', host_header='app.example:%d' % self.port)
        self.assertEqual(self.up.last.header('host'), 'app.example')
        self.request('GET', '/', host_header='app.example:1')
        self.assertEqual(self.up.last.header('host'), 'app.example:1')
        self.request('GET', '/', host_header='[::1]:%d' % self.port)
        self.assertEqual(self.up.last.header('host'), '[::1]')

    def test_both_strip_modes_is_a_config_error(self):
        port, admin = h.free_ports(2)
        with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
            json.dump(http_config(port, admin, self.up.port, strip_any_host_port=True,
                                  strip_matching_host_port=True), f)
        self.addCleanup(os.unlink, f.name)
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', f.name])
        self.assertEqual(rc, 1)
        self.assertIn('strip_matching_host_port: cannot be set together with '
                      'strip_any_host_port', err)

    def test_bad_values_are_config_errors(self):
        tc = 'static_resources.listeners[0].filter_chains[0].filters[0].typed_config.'
        cases = [
            ({'delayed_close_timeout': '3601s'}, tc + 'delayed_close_timeout: must be at most '
                                                      '3600s'),
            ({'path_with_escaped_slashes_action': 'DECODE'},
             tc + 'path_with_escaped_slashes_action: "DECODE" is not a valid value (expected '
                  'one of: IMPLEMENTATION_SPECIFIC_DEFAULT, KEEP_UNCHANGED, REJECT_REQUEST, '
                  'UNESCAPE_AND_REDIRECT, UNESCAPE_AND_FORWARD)'),
            ({'normalize_path': 'yes'}, tc + 'normalize_path: "yes" is not a bool'),
            ({'via': 5}, tc + 'via: 5 is not a string'),
            ({'common_http_protocol_options': {'max_connection_duration': '-1s'}},
             tc + 'common_http_protocol_options.max_connection_duration: "-1s" is not a '
                  'duration'),
        ]
        port, admin = h.free_ports(2)
        for extra, message in cases:
            with self.subTest(extra=extra):
                with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
                    json.dump(http_config(port, admin, self.up.port, **extra), f)
                self.addCleanup(os.unlink, f.name)
                rc, out, err = h.run_petrel(['--mode', 'validate', '-c', f.name])
                self.assertEqual(rc, 1, err)
                self.assertIn(message, err)

    def test_via_on_requests_and_responses(self):
        self.start(via='petrel-edge')
        r = self.request('GET', '/')
        self.assertEqual(self.up.last.header('via'), 'petrel-edge')
        self.assertEqual(r.get('via'), 'petrel-edge')
        # Appended to what the client and the upstream already said.
        r = self.request('GET', '/', headers={'via': '1.1 client',
                                              'x-test-response-headers': 'via=1.1 app'})
        self.assertEqual(self.up.last.header('via'), '1.1 client, petrel-edge')
        self.assertEqual(r.get('via'), '1.1 app, petrel-edge')


class Stats(ProxyCase):

    def test_http_and_cluster_stats(self):
        p = self.start()
        with h.HttpClientConn(self.port) as c:
            for path, code in (('/echo', 200), ('/echo', 200), ('/status/201', 201),
                               ('/status/404', 404), ('/status/503', 503)):
                self.assertEqual(c.request('GET', path).status, code)
        self.assertEqual(self.request('GET', '/echo').status, 200)
        p.wait_stat('http.ingress.downstream_rq_total', 6)
        p.wait_stat('http.ingress.downstream_rq_active', 0)
        p.wait_stat('http.ingress.downstream_cx_active', 0)
        s = p.stats()
        want = {
            'http.ingress.downstream_rq_2xx': 4,
            'http.ingress.downstream_rq_4xx': 1,
            'http.ingress.downstream_rq_5xx': 1,
            'http.ingress.downstream_rq_completed': 6,
            'http.ingress.downstream_cx_total': 2,
            'http.ingress.downstream_cx_http1_total': 2,
            'http.ingress.downstream_cx_destroy': 2,
            'cluster.up.upstream_rq_total': 6,
            'cluster.up.upstream_rq_completed': 6,
            'cluster.up.upstream_rq_200': 3,
            'cluster.up.upstream_rq_201': 1,
            'cluster.up.upstream_rq_404': 1,
            'cluster.up.upstream_rq_503': 1,
            'cluster.up.upstream_rq_2xx': 4,
            'cluster.up.upstream_rq_4xx': 1,
            'cluster.up.upstream_rq_5xx': 1,
            'cluster.up.upstream_rq_active': 0,
            'cluster.up.upstream_cx_total': 1,
            'cluster.up.upstream_cx_http1_total': 1,
        }
        got = {k: s.get(k) for k in want}
        self.assertEqual(got, want)
        self.assertGreater(s['http.ingress.downstream_cx_rx_bytes_total'], 0)
        self.assertGreater(s['http.ingress.downstream_cx_tx_bytes_total'], 0)


if __name__ == '__main__':
    unittest.main()
