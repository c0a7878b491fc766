"""CONNECT, terminated as Envoy terminates it: with the connection manager's upgrade_configs
listing CONNECT and a route that matches CONNECT (`match: {connect_matcher: {}}`) and has
`upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]`, petrel opens a TCP
connection to a host of the route's cluster, answers 200 once it is up, and carries bytes
both ways: over the HTTP/1.1 connection itself, or over the HTTP/2 stream's DATA frames.
Ends and resets travel across; CONNECT not enabled is a 403, a CONNECT no route matches a
404, an unreachable upstream a 503; a connect_matcher route that would forward CONNECT
upstream is a config error naming the field.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_http_connect.py -v
"""

import json
import os
import socket
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from h2client import H2Client, Stream  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer, TcpSourceServer  # noqa: E402

CONNECT_UPGRADE = [{'upgrade_type': 'CONNECT'}]
TERMINATE = [{'upgrade_type': 'CONNECT', 'connect_config': {}}]


def connect_route(cluster='echo', **extra):
    return {'match': {'connect_matcher': {}},
            'route': dict({'cluster': cluster, 'upgrade_configs': TERMINATE}, **extra)}


def read_head(sock):
    data = b''
    while b'\r\n\r\n' not in data:
        b = sock.recv(1)
        if not b:
            break
        data += b
    return data


class Base(unittest.TestCase):

    def start(self, routes, clusters, **hcm_extra):
        self.port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], routes)]), **hcm_extra)
        p = h.Petrel(h.bootstrap([h.listener('l', self.port, [hcm])], clusters,
                                 admin_port=admin))
        p.start()
        self.addCleanup(p.close)
        return p

    def start_echo(self, **hcm_extra):
        self.echo = TcpEchoServer()
        self.addCleanup(self.echo.close)
        self.web = HttpUpstream(name='web')
        self.addCleanup(self.web.close)
        hcm_extra.setdefault('upgrade_configs', CONNECT_UPGRADE)
        return self.start([connect_route(), h.route_prefix('/', 'web')],
                          [h.cluster('echo', [self.echo.port]), h.cluster('web', [self.web.port])],
                          **hcm_extra)

    def h1_connect(self, target='echo.test:443'):
        s = h.tcp_connect(self.port)
        self.addCleanup(s.close)
        s.sendall(('CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' % (target, target)).encode())
        return s, read_head(s)

    def h2_connect(self, c, authority='echo.test:443'):
        sid = c.conn.get_next_available_stream_id()
        st = c.streams.setdefault(sid, Stream(sid))
        st.pending, st.pending_end, st.pending_trailers = bytearray(), False, None
        c.conn.send_headers(sid, [(':method', 'CONNECT'), (':authority', authority)])
        c.flush()
        c.pump(lambda: st.headers is not None or st.reset is not None or c.closed,
               message='answer to CONNECT')
        return sid, st


class Http1Connect(Base):

    def test_tunnel_echo_and_fin(self):
        p = self.start_echo()
        s, head = self.h1_connect()
        self.assertTrue(head.startswith(b'HTTP/1.1 200 '), head)
        self.assertNotIn(b'transfer-encoding', head.lower())
        self.assertNotIn(b'content-length', head.lower())
        blob = h.pattern_bytes(0, 200000)
        s.sendall(blob)
        self.assertEqual(h.recv_exact(s, len(blob)), blob)
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 1)
        h.shutdown_write(s)                  # our FIN reaches the upstream, its FIN comes back
        self.assertEqual(h.recv_until_eof(s), b'')
        res = self.echo.wait_results(1)[0]
        self.assertEqual(res['bytes'], len(blob))
        self.assertTrue(res['peer_fin'])
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 0)
        p.wait_stat('cluster.echo.upstream_cx_active', 0)

    def test_client_close_closes_upstream(self):
        p = self.start_echo()
        s, head = self.h1_connect()
        self.assertTrue(head.startswith(b'HTTP/1.1 200 '), head)
        s.sendall(b'x')
        self.assertEqual(h.recv_exact(s, 1), b'x')
        s.close()
        self.echo.wait_results(1)
        p.wait_stat('cluster.echo.upstream_cx_active', 0)

    def test_upstream_close_ends_tunnel(self):
        p = self.start_echo()
        s, head = self.h1_connect()
        self.assertTrue(head.startswith(b'HTTP/1.1 200 '), head)
        self.echo.wait_for(lambda: self.echo.active >= 1, message='upstream connection')
        self.echo.drop_connections()
        self.assertEqual(h.recv_until_eof(s), b'')
        p.wait_stat('cluster.echo.upstream_cx_active', 0)

    def test_connect_not_enabled_is_403(self):
        p = self.start_echo(upgrade_configs=[])
        s, head = self.h1_connect()
        self.assertTrue(head.startswith(b'HTTP/1.1 403 '), head)
        self.assertEqual(p.stat('cluster.echo.upstream_cx_total', 0), 0)

    def test_other_requests_do_not_match_connect_route(self):
        self.start_echo()
        r = h.http_request(self.port, 'GET', '/echo')
        self.assertEqual(r.status, 200)          # the prefix route, not connect_matcher
        self.assertEqual(json.loads(r.body)['method'], 'GET')

    def test_connect_without_connect_route_is_404(self):
        self.web = HttpUpstream(name='web')
        self.addCleanup(self.web.close)
        self.start([h.route_prefix('/', 'web')], [h.cluster('web', [self.web.port])],
                   upgrade_configs=CONNECT_UPGRADE)
        s, head = self.h1_connect()
        self.assertTrue(head.startswith(b'HTTP/1.1 404 '), head)

    def test_bad_target_is_400(self):
        self.start_echo()
        for target in ('/path', 'no-port', 'a:1/x'):
            s, head = self.h1_connect(target)
            self.assertTrue(head.startswith(b'HTTP/1.1 400 '), (target, head))

    def test_circuit_breaker_max_connections(self):
        # Each tunnel is a connection of its own: over max_connections, 503 UO.
        self.echo = TcpEchoServer()
        self.addCleanup(self.echo.close)
        p = self.start([connect_route()], [h.cluster('echo', [self.echo.port], circuit_breakers={
            'thresholds': [{'max_connections': 1}]})], upgrade_configs=CONNECT_UPGRADE)
        s1, head = self.h1_connect()
        self.assertTrue(head.startswith(b'HTTP/1.1 200 '), head)
        s2, head = self.h1_connect()
        self.assertTrue(head.startswith(b'HTTP/1.1 503 '), head)
        self.assertIn(b'x-envoy-overloaded: true', head.lower())
        p.wait_stat('cluster.echo.upstream_cx_overflow', 1)
        s1.close()                               # the slot comes back with the tunnel
        p.wait_stat('cluster.echo.upstream_cx_active', 0)
        s3, head = self.h1_connect()
        self.assertTrue(head.startswith(b'HTTP/1.1 200 '), head)

    def test_upstream_down_is_503(self):
        self.web = HttpUpstream(name='web')
        self.addCleanup(self.web.close)
        p = self.start([connect_route()], [h.cluster('echo', [h.dead_port()])],
                       upgrade_configs=CONNECT_UPGRADE)
        s, head = self.h1_connect()
        self.assertTrue(head.startswith(b'HTTP/1.1 503 '), head)
        p.wait_stat('cluster.echo.upstream_cx_connect_fail', 1)


class Http2Connect(Base):

    def client(self):
        c = H2Client(self.port)
        self.addCleanup(c.close)
        return c

    def test_tunnel_over_stream(self):
        p = self.start_echo()
        c = self.client()
        sid, st = self.h2_connect(c)
        self.assertEqual(st.status, 200)
        blob = h.pattern_bytes(0, 300000)     # beyond the client's initial stream window
        c.send_data(sid, blob)
        c.pump(lambda: len(st.data) >= len(blob), message='echo')
        self.assertEqual(bytes(st.data), blob)
        # Another request on the same connection meanwhile.
        self.assertEqual(c.response(c.request('GET', '/x')).status, 200)
        c.send_data(sid, b'', end=True)
        c.pump(lambda: st.ended, message='END_STREAM after the upstream FIN')
        res = self.echo.wait_results(1)[0]
        self.assertTrue(res['peer_fin'])
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 0)
        p.wait_stat('cluster.echo.upstream_cx_active', 0)

    def test_slow_reader_backpressure(self):
        # The client grants no window: petrel stops reading the upstream (it does not buffer
        # the whole download), and everything arrives intact once the client reads.
        total = 8 << 20
        src = TcpSourceServer(total)
        self.addCleanup(src.close)
        p = self.start([connect_route()], [h.cluster('echo', [src.port])],
                       upgrade_configs=CONNECT_UPGRADE)
        c = H2Client(self.port, auto_ack=False)
        self.addCleanup(c.close)
        sid, st = self.h2_connect(c)
        self.assertEqual(st.status, 200)
        stat = 'cluster.echo.upstream_cx_rx_bytes_total'
        last = -1
        while True:                               # until petrel's reading stalls
            c.read_once(0.3)
            now = p.stat(stat, 0)
            if now == last:
                break
            last = now
        self.assertLess(last, total)
        c.auto_ack = True
        c.conn.acknowledge_received_data(len(st.data), sid)
        c.flush()
        c.pump(lambda: st.ended, timeout=60, message='whole download')
        self.assertEqual(len(st.data), total)
        self.assertEqual(h.sha256_hex(bytes(st.data)), h.sha256_pattern(total))

    def test_client_reset_closes_upstream(self):
        p = self.start_echo()
        c = self.client()
        sid, st = self.h2_connect(c)
        self.assertEqual(st.status, 200)
        c.send_data(sid, b'abc')
        c.pump(lambda: len(st.data) >= 3, message='echo')
        c.reset(sid)
        self.echo.wait_results(1)
        p.wait_stat('cluster.echo.upstream_cx_active', 0)
        self.assertEqual(c.response(c.request('GET', '/x')).status, 200)

    def test_upstream_close_ends_stream(self):
        p = self.start_echo()
        c = self.client()
        sid, st = self.h2_connect(c)
        self.assertEqual(st.status, 200)
        self.echo.wait_for(lambda: self.echo.active >= 1, message='upstream connection')
        self.echo.drop_connections()
        c.pump(lambda: st.ended or st.reset is not None, message='stream end')
        p.wait_stat('cluster.echo.upstream_cx_active', 0)

    def test_not_enabled_and_down(self):
        self.start_echo(upgrade_configs=[])
        c = self.client()
        sid, st = self.h2_connect(c)
        c.response(sid)
        self.assertEqual(st.status, 403)

    def test_connect_with_path_is_malformed(self):
        # A CONNECT without :protocol must not have :path or :scheme (RFC 9113 8.5).
        self.start_echo()
        c = self.client()
        sid = c.conn.get_next_available_stream_id()
        st = c.streams.setdefault(sid, Stream(sid))
        c.conn.send_headers(sid, [(':method', 'CONNECT'), (':authority', 'echo.test:443'),
                                  (':path', '/x'), (':scheme', 'http')])
        c.flush()
        c.pump(lambda: c.goaway is not None or st.reset is not None or c.closed,
               message='refusal')
        self.assertEqual(c.goaway.error_code if c.goaway else st.reset, 1)
        self.assertEqual(len(self.echo.results) + self.echo.active, 0)
        c2 = self.client()
        self.assertEqual(c2.response(c2.request('GET', '/x')).status, 200)

    def test_upstream_down(self):
        self.start([connect_route()], [h.cluster('echo', [h.dead_port()])],
                   upgrade_configs=CONNECT_UPGRADE)
        c = self.client()
        sid, st = self.h2_connect(c)
        c.response(sid)
        self.assertEqual(st.status, 503)


class Config(unittest.TestCase):

    def validate(self, routes, **hcm_extra):
        hcm = h.http_connection_manager('x', h.route_config([h.vhost('all', ['*'], routes)]),
                                        **hcm_extra)
        cfg = h.bootstrap([h.listener('l', 1, [hcm])], [h.cluster('c', [9])])
        d = tempfile.mkdtemp()
        self.addCleanup(lambda: [os.unlink(os.path.join(d, f)) for f in os.listdir(d)] and
                        os.rmdir(d))
        path = os.path.join(d, 'c.json')
        with open(path, 'w') as f:
            json.dump(cfg, f)
        return h.run_petrel(['--mode', 'validate', '-c', path])

    def test_terminating_route_loads(self):
        rc, _, err = self.validate([connect_route('c')], upgrade_configs=CONNECT_UPGRADE)
        self.assertEqual(rc, 0, err)

    def test_forwarding_connect_is_an_error(self):
        rc, _, err = self.validate([{'match': {'connect_matcher': {}}, 'route': {'cluster': 'c'}}],
                                   upgrade_configs=CONNECT_UPGRADE)
        self.assertEqual(rc, 1)
        self.assertIn('routes[0].route.upgrade_configs', err)

    def test_connect_config_only_for_connect(self):
        rc, _, err = self.validate([{'match': {'prefix': '/'}, 'route': {
            'cluster': 'c', 'upgrade_configs': [{'upgrade_type': 'websocket',
                                                 'connect_config': {}}]}}])
        self.assertEqual(rc, 1)
        self.assertIn('upgrade_configs[0].connect_config: is only for upgrade_type CONNECT', err)

    def test_connect_config_fields_not_supported(self):
        rc, _, err = self.validate([{'match': {'connect_matcher': {}}, 'route': {
            'cluster': 'c', 'upgrade_configs': [{'upgrade_type': 'CONNECT',
                                                 'connect_config': {'allow_post': True}}]}}])
        self.assertEqual(rc, 1)
        self.assertIn('connect_config.allow_post', err)


if __name__ == '__main__':
    unittest.main()
