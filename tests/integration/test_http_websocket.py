"""WebSocket through the HTTP connection manager: the 101 handshake passes, frames flow both
ways byte-exact, close and aborts end the tunnel on both sides; without upgrade_configs, or
with the route disabling it, the upgrade is refused with 403 and nothing reaches the upstream.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_http_websocket.py -v
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import (HttpUpstream, WS_OP_BINARY, WS_OP_CLOSE, WS_OP_PING,  # noqa: E402
                       WS_OP_PONG, WS_OP_TEXT, websocket_client_handshake, ws_recv, ws_send)

MiB = 1 << 20
WS = [{'upgrade_type': 'websocket'}]


class WebSocketCase(unittest.TestCase):

    def setUp(self):
        self.up = HttpUpstream(name='up')
        self.addCleanup(self.up.close)

    def start(self, routes=None, **hcm_extra):
        self.port, admin = h.free_ports(2)
        routes = routes or [h.route_prefix('/', 'up', timeout='5s')]
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], routes)]), **hcm_extra)
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster('up', [self.up.port])], admin_port=admin)
        self.p = h.Petrel(cfg)
        self.p.__enter__()
        self.addCleanup(self.p.__exit__, None, None, None)
        return self.p

    def connect(self, path='/ws', check=True):
        s = h.tcp_connect(self.port)
        self.addCleanup(s.close)
        r = websocket_client_handshake(s, 'ws.test', path, check=check)
        return s, r

    def refused(self, path='/ws'):
        s, r = self.connect(path, check=False)
        return r


class Upgrade(WebSocketCase):

    def test_echo_text_binary_ping_close(self):
        p = self.start(upgrade_configs=WS)
        s, r = self.connect()
        self.assertEqual(r.status, 101)
        self.assertEqual(r.get('upgrade', '').lower(), 'websocket')
        self.assertIn('upgrade', r.get('connection', '').lower())
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 1)
        rec = self.up.wait_requests(1)[0]
        self.assertEqual(rec.header('upgrade'), 'websocket')
        self.assertIn('upgrade', rec.header('connection').lower())
        self.assertIsNotNone(rec.header('sec-websocket-key'))

        ws_send(s, 'hello petrel')
        self.assertEqual(ws_recv(s), (WS_OP_TEXT, b'hello petrel'))
        blob = h.pattern_bytes(0, 70000)
        ws_send(s, blob, WS_OP_BINARY)
        self.assertEqual(ws_recv(s), (WS_OP_BINARY, blob))
        ws_send(s, b'are you there', WS_OP_PING)
        self.assertEqual(ws_recv(s), (WS_OP_PONG, b'are you there'))
        for i in range(50):                               # many small frames, in order
            ws_send(s, 'msg %d' % i)
        for i in range(50):
            self.assertEqual(ws_recv(s), (WS_OP_TEXT, b'msg %d' % i))

        ws_send(s, b'\x03\xe8bye', WS_OP_CLOSE)
        self.assertEqual(ws_recv(s), (WS_OP_CLOSE, b'\x03\xe8bye'))
        self.assertEqual(h.recv_until_eof(s), b'')        # petrel closes after the upstream
        p.wait_stat('http.ingress.downstream_cx_upgrades_total', 1)
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 0)
        p.wait_stat('http.ingress.downstream_rq_active', 0)
        p.wait_stat('http.ingress.downstream_cx_active', 0)
        p.wait_stat('cluster.up.upstream_cx_active', 0)
        self.up.wait_idle()

    def test_large_frames_both_ways(self):
        self.start(upgrade_configs=WS)
        s, _ = self.connect()
        for n in (1 * MiB, 3 * MiB + 5):
            data = h.pattern_bytes(n, n)
            ws_send(s, data, WS_OP_BINARY)
            op, got = ws_recv(s)
            self.assertEqual(op, WS_OP_BINARY)
            self.assertEqual(h.sha256_hex(got), h.sha256_hex(data))

    def test_several_tunnels_at_once(self):
        p = self.start(upgrade_configs=WS)
        socks = [self.connect()[0] for _ in range(5)]
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 5)
        for i, s in enumerate(socks):
            ws_send(s, 'to %d' % i)
        for i, s in enumerate(socks):
            self.assertEqual(ws_recv(s), (WS_OP_TEXT, b'to %d' % i))
        for s in socks:
            ws_send(s, b'', WS_OP_CLOSE)
            self.assertEqual(ws_recv(s)[0], WS_OP_CLOSE)
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 0)

    def test_client_aborts_tunnel(self):
        p = self.start(upgrade_configs=WS)
        s, _ = self.connect()
        ws_send(s, 'x')
        self.assertEqual(ws_recv(s), (WS_OP_TEXT, b'x'))
        h._abort_socket(s)
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 0)
        p.wait_stat('http.ingress.downstream_rq_active', 0)
        p.wait_stat('cluster.up.upstream_cx_active', 0)
        self.up.wait_idle()
        s2, _ = self.connect()                             # still serving
        ws_send(s2, 'again')
        self.assertEqual(ws_recv(s2), (WS_OP_TEXT, b'again'))

    def test_client_half_closes_tunnel(self):
        # The client's FIN goes upstream; the upstream then closes, and so does petrel.
        p = self.start(upgrade_configs=WS)
        s, _ = self.connect()
        ws_send(s, 'last words')
        h.shutdown_write(s)
        self.assertEqual(ws_recv(s), (WS_OP_TEXT, b'last words'))
        s.settimeout(h.scaled(5))
        self.assertEqual(h.recv_until_eof(s), b'')
        self.up.wait_idle()
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 0)
        p.wait_stat('http.ingress.downstream_cx_active', 0)
        p.wait_stat('cluster.up.upstream_cx_active', 0)

    def test_upstream_drops_tunnel(self):
        p = self.start(upgrade_configs=WS)
        s, _ = self.connect()
        ws_send(s, 'x')
        self.assertEqual(ws_recv(s), (WS_OP_TEXT, b'x'))
        self.up.drop_connections()
        s.settimeout(h.scaled(5))
        self.assertEqual(h.recv_until_eof(s), b'')
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 0)
        p.wait_stat('http.ingress.downstream_cx_active', 0)

    def test_route_timeout_does_not_end_tunnel(self):
        # The route timeout covers the handshake only; a quiet tunnel outlives it.
        self.start(routes=[h.route_prefix('/', 'up', timeout='0.3s')], upgrade_configs=WS)
        s, _ = self.connect()
        time.sleep(h.scaled(0.8))
        ws_send(s, 'still here')
        self.assertEqual(ws_recv(s), (WS_OP_TEXT, b'still here'))

    def test_stream_idle_timeout_ends_quiet_tunnel(self):
        p = self.start(upgrade_configs=WS, stream_idle_timeout='0.5s')
        s, _ = self.connect()
        for _ in range(4):                              # traffic keeps it alive ...
            ws_send(s, 'tick')
            self.assertEqual(ws_recv(s), (WS_OP_TEXT, b'tick'))
            time.sleep(0.25)
        s.settimeout(h.scaled(10))                      # ... silence ends it (FIN or RST)
        try:
            self.assertEqual(h.recv_until_eof(s), b'')
        except ConnectionResetError:
            pass
        p.wait_stat('http.ingress.downstream_rq_idle_timeout', 1)
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 0)
        p.wait_stat('cluster.up.upstream_cx_active', 0)

    def test_upstream_declines_upgrade(self):
        # The upstream answers a normal response (426 here) instead of 101: it is passed on
        # as an ordinary response.
        p = self.start(upgrade_configs=WS)
        with h.HttpClientConn(self.port) as c:
            c.send_raw(b'GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n'
                       b'Connection: Upgrade\r\n\r\n')
            r = c.read_response()
            self.assertEqual(r.status, 426)
            self.assertEqual(r.body, b'upgrade required\n')
        p.wait_stat('http.ingress.downstream_rq_active', 0)
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 0)
        self.assertEqual(h.http_request(self.port, 'GET', '/echo').status, 200)


class Refused(WebSocketCase):

    def test_without_upgrade_configs_403(self):
        p = self.start()
        r = self.refused()
        self.assertEqual(r.status, 403)
        p.wait_stat('http.ingress.downstream_rq_ws_on_non_ws_route', 1)
        self.assertEqual(self.up.requests, [])
        self.assertEqual(h.http_request(self.port, 'GET', '/echo').status, 200)

    def test_route_disables_upgrade_403(self):
        no_ws = h.route_prefix('/nows', 'up', timeout='5s')
        no_ws['route']['upgrade_configs'] = [{'upgrade_type': 'websocket', 'enabled': False}]
        p = self.start(routes=[no_ws, h.route_prefix('/', 'up', timeout='5s')],
                       upgrade_configs=WS)
        r = self.refused('/nows/ws')
        self.assertEqual(r.status, 403)
        p.wait_stat('http.ingress.downstream_rq_ws_on_non_ws_route', 1)
        self.assertEqual(self.up.requests, [])
        s, r = self.connect('/ws')                         # other routes still upgrade
        self.assertEqual(r.status, 101)
        ws_send(s, 'ok')
        self.assertEqual(ws_recv(s), (WS_OP_TEXT, b'ok'))

    def test_route_enables_upgrade_disabled_globally(self):
        # Envoy: a route entry overrides the connection manager's enabled flag.
        ws = h.route_prefix('/ws', 'up', timeout='5s')
        ws['route']['upgrade_configs'] = [{'upgrade_type': 'websocket', 'enabled': True}]
        self.start(routes=[ws, h.route_prefix('/', 'up', timeout='5s')],
                   upgrade_configs=[{'upgrade_type': 'websocket', 'enabled': False}])
        self.assertEqual(self.refused('/other').status, 403)
        s, r = self.connect('/ws')
        self.assertEqual(r.status, 101)

    def test_unknown_upgrade_type_403(self):
        self.start(upgrade_configs=WS)
        with h.HttpClientConn(self.port) as c:
            c.send_raw(b'GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\n'
                       b'Connection: Upgrade\r\n\r\n')
            self.assertEqual(c.read_response().status, 403)
        self.assertEqual(self.up.requests, [])


if __name__ == '__main__':
    unittest.main()
