"""WebSocket over HTTP/2 (RFC 8441 extended CONNECT), as Envoy carries it.

With http2_protocol_options.allow_connect the HTTP/2 server codec sends
SETTINGS_ENABLE_CONNECT_PROTOCOL and takes `:method CONNECT` + `:protocol websocket`; the
connection manager sees an upgrade (GET, `upgrade: websocket`, `connection: upgrade`), so
upgrade_configs and route upgrade_configs decide. To an HTTP/1.1 upstream it goes as that
GET and its 101 comes back as a 200 on the stream; to an HTTP/2 upstream it stays an extended
CONNECT; an HTTP/1.1 client's upgrade to an HTTP/2 upstream becomes one (200 -> 101). Frames
flow both ways over DATA; a reset on one side ends the tunnel on the other. Without
allow_connect, a :protocol request is a protocol error (the codec's, as in Envoy).

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_http2_websocket.py -v
"""

import base64
import os
import socket
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from h2client import H2Client, Stream  # noqa: E402
from upstreams import (HttpUpstream, WS_OP_BINARY, WS_OP_CLOSE, WS_OP_TEXT,  # noqa: E402
                       websocket_client_handshake, ws_encode_frame, ws_read_frame, ws_recv,
                       ws_send)

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.settings  # noqa: E402

WS = [{'upgrade_type': 'websocket'}]
H2_CONNECT = {'allow_connect': True}
ENABLE_CONNECT_PROTOCOL = 8


def ws_headers(path='/ws'):
    key = base64.b64encode(os.urandom(16)).decode()
    # RFC 8441 clients send no Sec-WebSocket-Key; the test upstream (an HTTP/1.1 WebSocket
    # server) needs one, and petrel passes it through like any other header.
    return [(':method', 'CONNECT'), (':protocol', 'websocket'), (':path', path),
            (':scheme', 'http'), (':authority', 'ws.test'), ('sec-websocket-version', '13'),
            ('sec-websocket-key', key)]


def open_ws(client, path='/ws'):
    sid = client.conn.get_next_available_stream_id()
    st = client.streams.setdefault(sid, Stream(sid))
    st.pending, st.pending_end, st.pending_trailers = bytearray(), False, None
    client.conn.send_headers(sid, ws_headers(path), end_stream=False)
    client.flush()
    client.pump(lambda: st.headers is not None or st.reset is not None or client.closed,
                message='answer to the extended CONNECT')
    return sid, st


class StreamReader:
    """read_exact over one stream's received DATA (for ws_read_frame)."""

    def __init__(self, client, st):
        self.client, self.st, self.pos = client, st, 0

    def read_exact(self, n):
        self.client.pump(lambda: len(self.st.data) - self.pos >= n, message='%d bytes' % n)
        b = bytes(self.st.data[self.pos:self.pos + n])
        self.pos += n
        return b


def ws_recv_stream(reader):
    _, op, payload = ws_read_frame(reader.read_exact)
    return op, payload


class H2WsUpstream:
    """An HTTP/2 server (prior knowledge) that accepts extended CONNECT when `enable` and
    echoes the stream's DATA back; `reset_after` bytes received makes it reset the stream."""

    def __init__(self, enable=True, status=200):
        self.enable, self.status = enable, status
        self.requests = []
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(('127.0.0.1', 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.closing = False
        self.conns = []
        self.reset_on = None
        self.resets = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def close(self):
        self.closing = True
        try:
            self.lsock.close()
        except OSError:
            pass
        for s in list(self.conns):
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while not self.closing:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            self.conns.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        cfg = h2.config.H2Configuration(client_side=False, header_encoding='utf-8',
                                        validate_inbound_headers=False)
        c = h2.connection.H2Connection(cfg)
        c.initiate_connection()
        if self.enable:
            c.update_settings({ENABLE_CONNECT_PROTOCOL: 1})
        try:
            s.sendall(c.data_to_send())
            while True:
                data = s.recv(65536)
                if not data:
                    return
                for ev in c.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        hd = dict(ev.headers)
                        self.requests.append(hd)
                        if ':protocol' not in hd:      # a plain request
                            c.send_headers(ev.stream_id, [(':status', '200')], end_stream=True)
                        elif self.enable:
                            c.send_headers(ev.stream_id, [(':status', str(self.status))],
                                           end_stream=self.status != 200)
                        else:
                            c.reset_stream(ev.stream_id, 1)
                    elif isinstance(ev, h2.events.DataReceived):
                        c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        if self.reset_on is not None and self.reset_on in ev.data:
                            c.reset_stream(ev.stream_id, 8)
                        else:
                            c.send_data(ev.stream_id, ev.data)
                    elif isinstance(ev, h2.events.StreamReset):
                        self.resets.append(ev.error_code)
                    elif isinstance(ev, h2.events.StreamEnded):
                        try:
                            c.end_stream(ev.stream_id)
                        except Exception:
                            pass
                out = c.data_to_send()
                if out:
                    s.sendall(out)
        except (OSError, Exception):
            return
        finally:
            s.close()


class Base(unittest.TestCase):

    def start(self, upstream_port, h2_opts=H2_CONNECT, routes=None, cluster_extra=None,
              **hcm_extra):
        self.port, self.admin = h.free_ports(2)
        routes = routes or [h.route_prefix('/', 'up', timeout='5s')]
        if h2_opts is not None:
            hcm_extra['http2_protocol_options'] = h2_opts
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], routes)]), **hcm_extra)
        cfg = h.bootstrap([h.listener('l', self.port, [hcm])],
                          [h.cluster('up', [upstream_port], **(cluster_extra or {}))],
                          admin_port=self.admin)
        p = h.Petrel(cfg)
        p.start()
        self.addCleanup(p.close)
        return p

    def client(self):
        c = H2Client(self.port)
        self.addCleanup(c.close)
        c.pump(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in c.events),
               message='server SETTINGS')
        return c


H2_CLUSTER = {'typed_extension_protocol_options': {
    'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
        '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
        'explicit_http_config': {'http2_protocol_options': {'allow_connect': True}}}}}


class ToHttp1Upstream(Base):

    def setUp(self):
        self.up = HttpUpstream(name='up')
        self.addCleanup(self.up.close)

    def test_echo_over_h2_stream(self):
        p = self.start(self.up.port, upgrade_configs=WS)
        c = self.client()
        self.assertEqual(c.conn.remote_settings.get(ENABLE_CONNECT_PROTOCOL), 1)
        sid, st = open_ws(c)
        self.assertEqual(st.status, 200, st.headers)
        hdrs = dict(st.headers)
        self.assertNotIn('upgrade', hdrs)
        self.assertNotIn('connection', hdrs)
        rec = self.up.wait_requests(1)[0]
        self.assertEqual(rec['method'], 'GET')
        self.assertEqual(rec['path'], '/ws')
        self.assertEqual(rec.header('upgrade'), 'websocket')
        self.assertIn('upgrade', rec.header('connection').lower())
        self.assertEqual(rec.header('host'), 'ws.test')
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 1)

        r = StreamReader(c, st)
        c.send_data(sid, ws_encode_frame('hello over h2'))
        self.assertEqual(ws_recv_stream(r), (WS_OP_TEXT, b'hello over h2'))
        blob = h.pattern_bytes(0, 300000)       # beyond the default 64 KiB stream window
        c.send_data(sid, ws_encode_frame(blob, WS_OP_BINARY))
        self.assertEqual(ws_recv_stream(r), (WS_OP_BINARY, blob))
        # A second tunnel on the same connection, alongside plain requests.
        sid2, st2 = open_ws(c)
        self.assertEqual(st2.status, 200)
        r2 = StreamReader(c, st2)
        plain = c.request('GET', '/echo')
        c.send_data(sid2, ws_encode_frame('second'))
        self.assertEqual(ws_recv_stream(r2), (WS_OP_TEXT, b'second'))
        self.assertEqual(c.response(plain).status, 200)
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 2)

        c.send_data(sid, ws_encode_frame(b'\x03\xe8bye', WS_OP_CLOSE))
        self.assertEqual(ws_recv_stream(r), (WS_OP_CLOSE, b'\x03\xe8bye'))
        c.pump(lambda: st.ended or st.reset is not None, message='tunnel end')
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 1)
        c.send_data(sid2, ws_encode_frame('still here'))
        self.assertEqual(ws_recv_stream(r2), (WS_OP_TEXT, b'still here'))
        p.wait_stat('http.ingress.downstream_cx_upgrades_total', 2)

    def test_client_reset_closes_upstream(self):
        p = self.start(self.up.port, upgrade_configs=WS)
        c = self.client()
        sid, st = open_ws(c)
        self.assertEqual(st.status, 200)
        r = StreamReader(c, st)
        c.send_data(sid, ws_encode_frame('x'))
        self.assertEqual(ws_recv_stream(r), (WS_OP_TEXT, b'x'))
        c.reset(sid)
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 0)
        self.up.wait_for(lambda: self.up.active == 0, message='upstream connection closed')
        # The connection goes on.
        self.assertEqual(c.response(c.request('GET', '/echo')).status, 200)

    def test_upstream_close_ends_stream(self):
        p = self.start(self.up.port, upgrade_configs=WS)
        c = self.client()
        sid, st = open_ws(c)
        self.assertEqual(st.status, 200)
        self.up.drop_connections()
        c.pump(lambda: st.ended or st.reset is not None, message='tunnel end')
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 0)
        self.assertEqual(c.response(c.request('GET', '/echo')).status, 200)

    def test_not_enabled_is_403(self):
        p = self.start(self.up.port)           # allow_connect, but no upgrade_configs
        c = self.client()
        sid, st = open_ws(c)
        c.response(sid)
        self.assertEqual(st.status, 403)
        p.wait_stat('http.ingress.downstream_rq_ws_on_non_ws_route', 1)
        self.assertEqual(len(self.up.requests), 0)

    def test_route_disables_it(self):
        routes = [h.route_prefix('/off', 'up', upgrade_configs=[
            {'upgrade_type': 'websocket', 'enabled': False}]), h.route_prefix('/', 'up')]
        self.start(self.up.port, routes=routes, upgrade_configs=WS)
        c = self.client()
        sid, st = open_ws(c, '/off')
        c.response(sid)
        self.assertEqual(st.status, 403)
        sid, st = open_ws(c, '/on')
        self.assertEqual(st.status, 200)

    def test_upstream_refuses_upgrade(self):
        self.start(self.up.port, upgrade_configs=WS)
        c = self.client()
        sid, st = open_ws(c, '/status/404')   # not a 101: an ordinary answer
        c.response(sid)
        self.assertEqual(st.status, 404)

    def test_upstream_down(self):
        self.start(h.dead_port(), upgrade_configs=WS)
        c = self.client()
        sid, st = open_ws(c)
        c.response(sid)
        self.assertEqual(st.status, 503)
        self.assertEqual(c.response(c.request('GET', '/echo')).status, 503)

    def test_without_allow_connect_protocol_error(self):
        p = self.start(self.up.port, h2_opts=None, upgrade_configs=WS)
        c = self.client()
        self.assertIn(c.conn.remote_settings.get(ENABLE_CONNECT_PROTOCOL), (None, 0))
        sid, st = open_ws(c)
        c.pump(lambda: c.goaway is not None or st.reset is not None or c.closed,
               message='refusal')
        self.assertEqual(c.goaway.error_code if c.goaway else st.reset, 1)  # PROTOCOL_ERROR
        p.wait_stat('http2.rx_messaging_error', 1)
        self.assertEqual(len(self.up.requests), 0)


class MalformedExtendedConnect(Base):
    """Extended CONNECT that breaks RFC 8441's rules is refused by the codec (the connection
    ends with GOAWAY PROTOCOL_ERROR, Envoy's default); petrel serves the next client."""

    def setUp(self):
        self.up = HttpUpstream(name='up')
        self.addCleanup(self.up.close)

    def bad(self, headers):
        p = self.start(self.up.port, upgrade_configs=WS)
        c = self.client()
        sid = c.conn.get_next_available_stream_id()
        st = c.streams.setdefault(sid, Stream(sid))
        c.conn.send_headers(sid, headers, end_stream=False)
        c.flush()
        c.pump(lambda: c.goaway is not None or st.reset is not None or c.closed,
               message='refusal')
        self.assertEqual(c.goaway.error_code if c.goaway else st.reset, 1)
        self.assertEqual(len(self.up.requests), 0)
        c2 = self.client()
        self.assertEqual(c2.response(c2.request('GET', '/echo')).status, 200)
        return p

    def test_missing_path(self):
        self.bad([(':method', 'CONNECT'), (':protocol', 'websocket'), (':scheme', 'http'),
                  (':authority', 'ws.test')])

    def test_protocol_without_connect(self):
        self.bad([(':method', 'GET'), (':protocol', 'websocket'), (':path', '/ws'),
                  (':scheme', 'http'), (':authority', 'ws.test')])


class ToHttp2Upstream(Base):

    def test_h2_client_stays_extended_connect(self):
        up = H2WsUpstream()
        self.addCleanup(up.close)
        p = self.start(up.port, upgrade_configs=WS, cluster_extra=H2_CLUSTER)
        c = self.client()
        sid, st = open_ws(c)
        self.assertEqual(st.status, 200, st.headers)
        rq = up.requests[0]
        self.assertEqual(rq[':method'], 'CONNECT')
        self.assertEqual(rq[':protocol'], 'websocket')
        self.assertEqual(rq[':path'], '/ws')
        self.assertNotIn('upgrade', rq)
        self.assertNotIn('connection', rq)
        r = StreamReader(c, st)
        c.send_data(sid, b'ping-pong')
        r.client.pump(lambda: len(st.data) >= 9, message='echo')
        self.assertEqual(bytes(st.data), b'ping-pong')
        c.send_data(sid, b'', end=True)
        c.pump(lambda: st.ended or st.reset is not None, message='tunnel end')
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 0)

    def test_client_reset_resets_upstream_stream(self):
        up = H2WsUpstream()
        self.addCleanup(up.close)
        p = self.start(up.port, upgrade_configs=WS, cluster_extra=H2_CLUSTER)
        c = self.client()
        sid, st = open_ws(c)
        self.assertEqual(st.status, 200)
        c.send_data(sid, b'abc')
        c.pump(lambda: len(st.data) >= 3, message='echo')
        c.reset(sid)
        h.wait_until(lambda: up.resets, message='RST_STREAM at the upstream')
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 0)
        self.assertEqual(c.response(c.request('GET', '/x')).status, 200)

    def test_h1_client_becomes_extended_connect(self):
        up = H2WsUpstream()
        self.addCleanup(up.close)
        p = self.start(up.port, upgrade_configs=WS, cluster_extra=H2_CLUSTER)
        s = h.tcp_connect(self.port)
        self.addCleanup(s.close)
        resp = websocket_client_handshake(s, 'ws.test', '/ws', check=False)
        self.assertEqual(resp.status, 101)
        self.assertEqual(resp.get('upgrade', '').lower(), 'websocket')
        self.assertIn('upgrade', resp.get('connection', '').lower())
        rq = up.requests[0]
        self.assertEqual(rq[':method'], 'CONNECT')
        self.assertEqual(rq[':protocol'], 'websocket')
        s.sendall(b'raw tunnel bytes')
        self.assertEqual(h.recv_exact(s, 16), b'raw tunnel bytes')
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 1)
        s.close()
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 0)

    def test_h1_client_upstream_refuses(self):
        # A non-200 answer to the extended CONNECT is an ordinary response: no tunnel.
        up = H2WsUpstream(status=403)
        self.addCleanup(up.close)
        p = self.start(up.port, upgrade_configs=WS, cluster_extra=H2_CLUSTER)
        s = h.tcp_connect(self.port)
        self.addCleanup(s.close)
        resp = websocket_client_handshake(s, 'ws.test', '/ws', check=False)
        self.assertEqual(resp.status, 403)
        self.assertEqual(p.stat('http.ingress.downstream_cx_upgrades_total', 0), 0)

    def test_upstream_reset_ends_tunnel(self):
        up = H2WsUpstream()
        up.reset_on = b'reset-me'
        self.addCleanup(up.close)
        p = self.start(up.port, upgrade_configs=WS, cluster_extra=H2_CLUSTER)
        c = self.client()
        sid, st = open_ws(c)
        self.assertEqual(st.status, 200)
        c.send_data(sid, b'reset-me')
        c.pump(lambda: st.reset is not None, message='stream reset')
        p.wait_stat('http.ingress.downstream_cx_upgrades_active', 0)
        self.assertEqual(c.response(c.request('GET', '/x')).status, 200)

    def test_upstream_without_extended_connect(self):
        # The upstream did not enable extended CONNECT: it refuses the stream
        # (RST_STREAM PROTOCOL_ERROR, as nghttp2 does), and the client gets the router's
        # answer for an upstream protocol error before a response.
        up = H2WsUpstream(enable=False)
        self.addCleanup(up.close)
        self.start(up.port, upgrade_configs=WS, cluster_extra=H2_CLUSTER)
        c = self.client()
        sid, st = open_ws(c)
        c.response(sid)
        self.assertEqual(st.status, 502)
        self.assertEqual(c.response(c.request('GET', '/x')).status, 200)


class Config(unittest.TestCase):

    def test_allow_connect_must_be_bool(self):
        port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('x', h.route_config([
            h.vhost('all', ['*'], [h.route_prefix('/', 'up')])]),
            http2_protocol_options={'allow_connect': 'yes'})
        cfg = h.bootstrap([h.listener('l', port, [hcm])], [h.cluster('up', [9])],
                          admin_port=admin)
        path = os.path.join(h.tmp_dir(self), 'c.json') if hasattr(h, 'tmp_dir') else None
        if path is None:
            import tempfile
            d = tempfile.mkdtemp()
            path = os.path.join(d, 'c.json')
        import json
        with open(path, 'w') as f:
            json.dump(cfg, f)
        rc, _, err = h.run_petrel(['--mode', 'validate', '-c', path])
        self.assertEqual(rc, 1, err)
        self.assertIn('http2_protocol_options.allow_connect', err)


if __name__ == '__main__':
    unittest.main()
