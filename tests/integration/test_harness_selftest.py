"""Self-test of the integration harness: the upstream servers and the clients are exercised
against each other, and the Petrel process wrapper against a small fake binary, so this passes
without petrel itself. Run: /usr/bin/python3 tests/integration/test_harness_selftest.py -v
"""

import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import upstreams  # noqa: E402
from harness import (HttpClientConn, http_request, pattern_bytes, sha256_pattern,  # noqa: E402
                     tcp_connect)


class PatternTest(unittest.TestCase):

    def test_offsets_are_consistent(self):
        whole = pattern_bytes(0, 3 * (1 << 20) + 1000)
        for off, n in ((0, 10), (12345, 70000), ((1 << 20) - 5, 10), (2 * (1 << 20) + 7, 999)):
            self.assertEqual(pattern_bytes(off, n), whole[off:off + n])
        self.assertEqual(b''.join(harness.pattern_chunks(len(whole), 100000)), whole)
        # Successive MiB blocks differ (rotation), so a 1 MiB shift is detected.
        self.assertNotEqual(whole[:1000], whole[1 << 20:(1 << 20) + 1000])

    def test_sha256(self):
        # No timing assertion (machines are shared); 64 MiB takes ~0.1 s on an idle core.
        data = pattern_bytes(0, 64 << 20)
        self.assertEqual(len(data), 64 << 20)
        self.assertEqual(sha256_pattern(5 << 20), hashlib.sha256(data[:5 << 20]).hexdigest())
        self.assertEqual(sha256_pattern(100, 7), hashlib.sha256(data[7:107]).hexdigest())

    def test_verifier(self):
        v = harness.PatternVerifier()
        v.feed(pattern_bytes(0, 1000))
        v.feed(pattern_bytes(1000, 5000))
        self.assertTrue(v.ok(6000))
        bad = bytearray(pattern_bytes(6000, 100))
        bad[42] ^= 1
        v.feed(bytes(bad))
        self.assertEqual(v.mismatch_at, 6042)
        self.assertFalse(v.ok())


class ConfigTest(unittest.TestCase):

    def test_builders(self):
        cfg = harness.bootstrap(
            [harness.listener('l1', 10000, [harness.tcp_proxy('tcp', 'c1', idle_timeout='5s')]),
             harness.listener('l2', 10001, [harness.http_connection_manager(
                 'ingress', harness.route_config([harness.vhost('all', ['*'], [
                     harness.route_prefix('/', 'c1', timeout='3s')])]))])],
            [harness.cluster('c1', [('127.0.0.1', 9000), 9001])], admin_port=9901)
        self.assertEqual(cfg['admin']['address']['socket_address']['port_value'], 9901)
        l1 = cfg['static_resources']['listeners'][0]
        f = l1['filter_chains'][0]['filters'][0]
        self.assertEqual(f['name'], 'envoy.filters.network.tcp_proxy')
        self.assertEqual(f['typed_config']['@type'], harness.TCP_PROXY_TYPE)
        self.assertEqual(f['typed_config']['idle_timeout'], '5s')
        hcm = cfg['static_resources']['listeners'][1]['filter_chains'][0]['filters'][0]
        tc = hcm['typed_config']
        self.assertTrue(tc['@type'].endswith('HttpConnectionManager'))
        self.assertEqual(tc['http_filters'][0]['typed_config']['@type'], harness.ROUTER_TYPE)
        self.assertEqual(tc['route_config']['virtual_hosts'][0]['routes'][0],
                         {'match': {'prefix': '/'}, 'route': {'cluster': 'c1', 'timeout': '3s'}})
        c = cfg['static_resources']['clusters'][0]
        self.assertEqual(c['type'], 'STATIC')
        lbe = c['load_assignment']['endpoints'][0]['lb_endpoints']
        self.assertEqual(lbe[1]['endpoint']['address']['socket_address'],
                         {'address': '127.0.0.1', 'port_value': 9001})
        json.dumps(cfg)

    def test_yaml(self):
        doc = {'a': 1, 'b': [{'@type': 'x', 'n': [1, 2]}, 'q"s\n', [True, None]], 'e': {},
               'f': [], 'g': 1.5}
        self.assertEqual(harness.to_yaml(doc), '\n'.join([
            '"a": 1',
            '"b":',
            '  - "@type": "x"',
            '    "n":',
            '      - 1',
            '      - 2',
            '  - "q\\"s\\n"',
            '  - - true',
            '    - null',
            '"e": {}',
            '"f": []',
            '"g": 1.5', '']))


class TcpServersTest(unittest.TestCase):

    def test_echo_and_half_close(self):
        with upstreams.TcpEchoServer() as srv:
            with tcp_connect(srv.port) as s:
                s.sendall(b'hello ')
                self.assertEqual(harness.recv_exact(s, 6), b'hello ')
                payload = pattern_bytes(0, 300000)
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                # Echo continues after our FIN, then the server's FIN ends the stream.
                self.assertEqual(harness.recv_until_eof(s), payload)
            res = srv.wait_results(1)
            self.assertEqual(res[0], {'conn_id': 1, 'bytes': 300006, 'peer_fin': True})
            self.assertEqual(srv.accepted, 1)

    def test_sink_digest_reply(self):
        n = 3 * (1 << 20) + 17
        with upstreams.TcpSinkServer(reply=True) as srv:
            with tcp_connect(srv.port) as s:
                for piece in harness.pattern_chunks(n):
                    s.sendall(piece)
                s.shutdown(socket.SHUT_WR)
                reply = harness.recv_until_eof(s)
            self.assertEqual(reply, b'%d %s\n' % (n, sha256_pattern(n).encode()))
            r = srv.wait_results(1)[0]
            self.assertEqual((r['bytes'], r['sha256'], r['eof']), (n, sha256_pattern(n), True))

    def test_source(self):
        n = 2 * (1 << 20) + 5
        with upstreams.TcpSourceServer(n) as srv:
            with tcp_connect(srv.port) as s:
                v = harness.PatternVerifier()
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    v.feed(d)
                self.assertTrue(v.ok(n))
                s.sendall(b'after-fin')        # the server still reads after its FIN
            r = srv.wait_results(1)[0]
            self.assertEqual((r['sent'], r['received'], r['peer_fin']), (n, 9, True))

    def test_close_stops_everything(self):
        srv = upstreams.TcpEchoServer()
        s = tcp_connect(srv.port)
        srv.wait_accepted(1)
        t0 = time.monotonic()
        srv.close()
        self.assertLess(time.monotonic() - t0, 2)
        self.assertEqual(harness.recv_until_eof(s), b'')
        s.close()
        self.assertRaises(OSError, tcp_connect, srv.port, timeout=1)

    def test_port_helpers(self):
        with upstreams.TcpEchoServer() as srv:
            self.assertTrue(harness.port_listening(srv.port))
            harness.wait_listening(srv.port, 1)
            harness.wait_port(srv.port, 1)
        a, b = harness.free_ports(2)
        self.assertNotEqual(a, b)
        self.assertFalse(harness.port_listening(harness.free_port()))


class HttpUpstreamTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = upstreams.HttpUpstream(name='up1')

    @classmethod
    def tearDownClass(cls):
        cls.up.close()

    def setUp(self):
        self.up.clear()
        self.up.reset_counters()
        self.up.set_status(None)

    def test_echo(self):
        r = http_request(self.up.port, 'POST', '/echo/x?y=1', headers={'X-A': 'b'}, body=b'abc')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.get('X-Upstream-Name'), 'up1')
        self.assertEqual(r.get('content-type'), 'application/json')
        j = r.json()
        self.assertEqual((j['method'], j['path'], j['body_len']), ('POST', '/echo/x?y=1', 3))
        self.assertEqual(j['body_sha256'], hashlib.sha256(b'abc').hexdigest())
        self.assertIn(['X-A', 'b'], j['headers'])
        rec = self.up.wait_requests(1)[0]
        self.assertEqual(rec['body'], b'abc')
        self.assertEqual(rec.header('x-a'), 'b')
        self.assertEqual(rec['status'], 200)

    def test_keep_alive_reuses_connection(self):
        before = self.up.connections
        with HttpClientConn(self.up.port) as c:
            ids = {c.request('GET', '/echo/%d' % i).json()['conn_id'] for i in range(3)}
            r = c.request('HEAD', '/bytes/1000')
            self.assertEqual((r.get('content-length'), r.body), ('1000', b''))
            self.assertEqual(c.request('GET', '/status/204').status, 204)
        self.assertEqual(len(ids), 1)
        self.assertEqual(self.up.connections, before + 1)

    def test_pipelining(self):
        with HttpClientConn(self.up.port) as c:
            c.send_raw(b'GET /delay/100/echo/a HTTP/1.1\r\nHost: x\r\n\r\n'
                       b'POST /echo/b HTTP/1.1\r\nHost: x\r\ncontent-length: 2\r\n\r\nhi')
            a, b = c.read_response(), c.read_response()
        self.assertEqual(a.json()['path'], '/delay/100/echo/a')
        self.assertEqual((b.json()['path'], b.json()['body_len']), ('/echo/b', 2))
        self.assertEqual(self.up.requests[0]['conn_id'], self.up.requests[1]['conn_id'])

    def test_chunked_upload_with_trailers(self):
        n = 1 << 20
        r = http_request(self.up.port, 'PUT', '/echo', body=harness.pattern_chunks(n, 50000),
                         trailers=[('x-sum', 'abc')])
        j = r.json()
        self.assertEqual((j['body_len'], j['body_sha256']), (n, sha256_pattern(n)))
        self.assertEqual(j['trailers'], [['x-sum', 'abc']])
        self.assertEqual(self.up.last.header('transfer-encoding'), 'chunked')

    def test_100_continue(self):
        r = http_request(self.up.port, 'POST', '/echo', body=b'x' * 1000, expect_100=True)
        self.assertEqual(r.status, 200)
        self.assertEqual([i.status for i in r.interim], [100])
        self.assertEqual(r.json()['body_len'], 1000)
        self.assertTrue(self.up.last['continue_sent'])
        # No 100 from the server: the client gives up waiting and sends the body anyway.
        r = http_request(self.up.port, 'POST', '/echo?no-continue', body=b'y' * 10,
                         expect_100=True, continue_timeout=0.2)
        self.assertEqual((r.status, r.interim, r.json()['body_len']), (200, [], 10))
        r = http_request(self.up.port, 'POST', '/echo?reject-continue=417', body=b'z',
                         expect_100=True)
        self.assertEqual(r.status, 417)
        self.assertEqual(self.up.last['body_len'], 0)

    def test_downloads(self):
        n = 5 * (1 << 20) + 3
        r = http_request(self.up.port, 'GET', '/bytes/%d' % n, store_body=False)
        self.assertEqual((r.status, r.body_len, r.body_sha256), (200, n, sha256_pattern(n)))
        r = http_request(self.up.port, 'GET', '/chunked/%d' % n)
        self.assertEqual(r.get('transfer-encoding'), 'chunked')
        self.assertEqual((r.body_len, r.body_sha256), (n, sha256_pattern(n)))
        self.assertEqual(r.trailer('x-trailer'), 'done')

    def test_status_delay_and_headers(self):
        r = http_request(self.up.port, 'GET', '/status/404',
                         headers={'x-test-response-headers': 'a=1;b=two'})
        self.assertEqual((r.status, r.body, r.get('a'), r.get('b')), (404, b'status 404\n',
                                                                     '1', 'two'))
        r = http_request(self.up.port, 'GET', '/status/103')
        self.assertEqual((r.status, [i.status for i in r.interim]), (200, [103]))
        t0 = time.monotonic()
        r = http_request(self.up.port, 'GET', '/delay/150/status/201')
        self.assertGreaterEqual(time.monotonic() - t0, 0.15)
        self.assertEqual(r.status, 201)
        self.up.set_status(503)
        self.assertEqual(http_request(self.up.port, 'GET', '/bytes/10').status, 503)
        self.up.set_status(None)
        self.assertEqual(http_request(self.up.port, 'GET', '/bytes/10').status, 200)

    def test_fail_counter(self):
        codes = [http_request(self.up.port, 'GET', '/fail/k1/2/503').status for _ in range(4)]
        self.assertEqual(codes, [503, 503, 200, 200])
        self.assertEqual(self.up.counters['k1'], 4)
        self.up.reset_counters()
        self.assertEqual(http_request(self.up.port, 'GET', '/fail/k1/2/502').status, 502)

    def test_reset_and_close(self):
        with self.assertRaises(ConnectionError):
            http_request(self.up.port, 'GET', '/reset')
        with self.assertRaises(harness.IncompleteResponse) as cm:
            http_request(self.up.port, 'GET', '/reset-after-headers')
        self.assertEqual((cm.exception.partial.status, cm.exception.partial.body_len), (200, 10))
        with HttpClientConn(self.up.port) as c:
            r = c.request('GET', '/close')
            self.assertEqual(r.get('connection'), 'close')
            self.assertTrue(r.will_close)
            self.assertTrue(c.wait_closed(2))

    def test_http10_and_bad_request(self):
        with HttpClientConn(self.up.port) as c:
            r = c.request('GET', '/echo', version='HTTP/1.0')
            self.assertEqual((r.status, r.get('connection')), (200, 'close'))
            self.assertTrue(c.wait_closed(2))
        with HttpClientConn(self.up.port) as c:
            c.send_raw(b'NONSENSE\r\n\r\n')
            self.assertEqual(c.read_response().status, 400)

    def test_websocket(self):
        with tcp_connect(self.up.port) as s:
            r = upstreams.websocket_client_handshake(s, 'x', '/ws')
            self.assertEqual(r.get('x-upstream-name'), 'up1')
            upstreams.ws_send(s, 'hello')
            self.assertEqual(upstreams.ws_recv(s), (upstreams.WS_OP_TEXT, b'hello'))
            big = pattern_bytes(0, 70000)
            upstreams.ws_send(s, big, upstreams.WS_OP_BINARY)
            self.assertEqual(upstreams.ws_recv(s), (upstreams.WS_OP_BINARY, big))
            upstreams.ws_send(s, b'p', upstreams.WS_OP_PING)
            self.assertEqual(upstreams.ws_recv(s), (upstreams.WS_OP_PONG, b'p'))
            upstreams.ws_send(s, b'\x03\xe8', upstreams.WS_OP_CLOSE)
            self.assertEqual(upstreams.ws_recv(s), (upstreams.WS_OP_CLOSE, b'\x03\xe8'))
            self.assertEqual(harness.recv_until_eof(s), b'')
        self.assertEqual(self.up.last['ws_frames'], 4)
        self.assertEqual(http_request(self.up.port, 'GET', '/ws').status, 426)


@unittest.skipUnless(shutil.which('openssl'), 'openssl CLI not available')
class TlsTest(unittest.TestCase):

    def test_tls_upstreams(self):
        d = tempfile.mkdtemp()
        try:
            cert, key = os.path.join(d, 'c.pem'), os.path.join(d, 'k.pem')
            subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                            'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out',
                            cert, '-days', '1', '-subj', '/CN=localhost'],
                           check=True, capture_output=True, timeout=30)
            sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            sctx.load_cert_chain(cert, key)
            cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            cctx.load_verify_locations(cert)
            with upstreams.HttpUpstream(ssl_context=sctx) as up:
                r = http_request(up.port, 'GET', '/chunked/100000', ssl_context=cctx,
                                 server_hostname='localhost')
                self.assertEqual(r.body_sha256, sha256_pattern(100000))
                self.assertEqual(up.conn_info[1]['tls_version'][:3], 'TLS')
            with upstreams.TcpEchoServer(ssl_context=sctx) as srv:
                with tcp_connect(srv.port, ssl_context=cctx, server_hostname='localhost') as s:
                    s.sendall(b'tls-echo')
                    self.assertEqual(harness.recv_exact(s, 8), b'tls-echo')
        finally:
            shutil.rmtree(d)


FAKE_PETREL = r'''#!/usr/bin/python3
# Fake petrel for the harness self-test: serves /ready and /stats on the admin port.
import http.server, os, re, signal, sys, threading
args = sys.argv[1:]
if '--version' in args:
    print('petrel 0.0-fake'); sys.exit(0)
cfg = open(args[args.index('-c') + 1]).read()
if os.environ.get('FAKE_FAIL'):
    sys.stderr.write('config error: static_resources: bad\n'); sys.exit(1)
port = int(re.search(r'"admin":.*?"port_value":\s*(\d+)', cfg, re.S).group(1))
hits = [0]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == '/stats':
            hits[0] += 1
            body = ('a.b: 7\nhits: %d\nh: P0(nan,1)\n' % hits[0]).encode()
        else:
            body = b'LIVE\n'
        self.send_response(200); self.send_header('content-length', str(len(body)))
        self.end_headers(); self.wfile.write(body)
    do_POST = do_GET
    def log_message(self, *a): pass
srv = http.server.HTTPServer(('127.0.0.1', port), H)
def term(*_):
    if os.environ.get('FAKE_ASAN'):
        sys.stderr.write('==1==ERROR: AddressSanitizer: heap-use-after-free\n#0 0x1 in f\n')
    sys.stderr.flush(); os._exit(0)
signal.signal(signal.SIGTERM, term)
sys.stderr.write('fake petrel started, concurrency %s\n' % args[args.index('--concurrency') + 1])
sys.stderr.flush()
srv.serve_forever()
'''


class PetrelWrapperTest(unittest.TestCase):
    """The Petrel class against a fake binary (real petrel is not needed for the self-test)."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp()
        cls.fake = os.path.join(cls.dir, 'fake-petrel')
        with open(cls.fake, 'w') as f:
            f.write(FAKE_PETREL)
        os.chmod(cls.fake, 0o755)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def config(self):
        return harness.bootstrap([], [], admin_port=harness.free_port())

    def test_lifecycle_json_and_yaml(self):
        for fmt in ('json', 'yaml'):
            with harness.Petrel(self.config(), concurrency=2, fmt=fmt, binary=self.fake) as p:
                self.assertTrue(p.config_path.endswith('config.' + fmt))
                self.assertEqual(p.admin_get('/ready')[0], 200)
                stats = p.stats()
                self.assertEqual(stats['a.b'], 7)
                self.assertNotIn('h', stats)
                self.assertEqual(p.wait_stat('hits', lambda v: v and v >= 3), 3)
                self.assertGreater(p.rss_kb(), 0)
                p.wait_log('concurrency 2')
                tmp = p.tmpdir
            self.assertFalse(os.path.exists(tmp))
            self.assertEqual(p.returncode, 0)

    def test_start_failure_includes_log(self):
        with self.assertRaises(harness.PetrelError) as cm:
            with harness.Petrel(self.config(), binary=self.fake, env={'FAKE_FAIL': '1'}):
                pass
        self.assertIn('config error: static_resources: bad', str(cm.exception))

    def test_sanitizer_report_fails(self):
        p = harness.Petrel(self.config(), binary=self.fake, env={'FAKE_ASAN': '1'})
        with self.assertRaises(harness.PetrelError) as cm:
            with open(os.devnull, 'w') as devnull:
                old, sys.stderr = sys.stderr, devnull
                try:
                    with p:
                        pass
                finally:
                    sys.stderr = old
        self.assertIn('heap-use-after-free', str(cm.exception))

    def test_run_petrel_and_signal(self):
        rc, out, _ = harness.run_petrel(['--version'], binary=self.fake)
        self.assertEqual((rc, out.strip()), (0, 'petrel 0.0-fake'))
        p = harness.Petrel(self.config(), binary=self.fake).start()
        try:
            p.signal(signal.SIGKILL)
            self.assertEqual(p.wait(5), -signal.SIGKILL)
        finally:
            p.close()


if __name__ == '__main__':
    unittest.main()
