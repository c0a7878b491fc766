"""The HTTP inspector listener filter on one port: HTTP/1.1, HTTP/1.0 and h2c go to the HTTP
chain (filter_chain_match.application_protocols), anything else to the default chain (TCP);
a prefix that could still be a request line waits until listener_filters_timeout, then goes
on as TCP (continue_on_listener_filters_timeout) or is closed. Without interception: see
test_sidecar_interception.py for the same behind iptables.
"""
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from h2client import H2Client  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer  # noqa: E402

HTTP_INSPECTOR = {'name': 'envoy.filters.listener.http_inspector', 'typed_config': {
    '@type': 'type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.'
             'HttpInspector'}}


class HttpInspectorTest(unittest.TestCase):

    def start(self, **listener_extra):
        self.up = HttpUpstream(name='http')
        self.addCleanup(self.up.close)
        self.echo = TcpEchoServer()
        self.addCleanup(self.echo.close)
        port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('detected', h.route_config([h.vhost('all', ['*'], [
            h.route_prefix('/', 'http', timeout='5s')])]), codec_type='AUTO')
        lst = {'name': 'shared', 'address': h.socket_address('127.0.0.1', port),
               'listener_filters': [HTTP_INSPECTOR],
               'filter_chains': [{'filter_chain_match': {
                   'application_protocols': ['http/1.1', 'http/1.0', 'h2c']},
                   'filters': [hcm]}],
               'default_filter_chain': {'filters': [h.tcp_proxy('raw', 'echo')]}}
        lst.update(listener_extra)
        cfg = h.bootstrap([lst], [h.cluster('http', [self.up.port]),
                                  h.cluster('echo', [self.echo.port])], admin_port=admin)
        self.p = h.Petrel(cfg)
        self.p.start()
        self.addCleanup(self.p.close)
        return port

    def test_protocols_on_one_port(self):
        port = self.start()
        r = h.http_request(port, path='/one')
        self.assertEqual((r.status, r.get('x-upstream-name')), (200, 'http'))
        # HTTP/1.0 reaches the connection manager, which refuses it as Envoy's does by default
        # (426): not the TCP chain's echo.
        r = h.http_request(port, path='/zero', version='HTTP/1.0')
        self.assertEqual(r.status, 426)
        with H2Client(port) as c:
            st = c.response(c.request('GET', '/two'))
            self.assertEqual(st.status, 200)
            self.assertEqual(st.header('x-upstream-name'), 'http')
        with h.tcp_connect(port) as s:
            s.sendall(b'\x00\x01binary, not HTTP')
            h.shutdown_write(s)
            self.assertEqual(h.recv_until_eof(s), b'\x00\x01binary, not HTTP')
        self.assertEqual(sorted(q['path'] for q in self.up.requests), ['/one', '/two'])
        for name in ('http11_found', 'http10_found', 'http2_found', 'http_not_found'):
            self.p.wait_stat('http_inspector.' + name, 1)
        self.p.wait_stat('tcp.raw.downstream_cx_total', 1)

    def test_request_line_split_across_packets(self):
        port = self.start()
        with h.tcp_connect(port) as s:
            for part in (b'GE', b'T /sl', b'ow HTTP/1', b'.1\r\nHost: x\r\n\r\n'):
                s.sendall(part)
                time.sleep(h.scaled(0.05))
            data = s.recv(65536)
            self.assertTrue(data.startswith(b'HTTP/1.1 200'), data[:40])
        self.assertEqual(self.up.last['path'], '/slow')

    def test_undecided_prefix_times_out_to_tcp(self):
        port = self.start(listener_filters_timeout='0.3s',
                          continue_on_listener_filters_timeout=True)
        with h.tcp_connect(port) as s:
            s.sendall(b'hello world')  # could still become "hello world HTTP/1.1"
            self.p.wait_stat('listener.127.0.0.1_%d.downstream_pre_cx_timeout' % port, 1)
            h.shutdown_write(s)
            self.assertEqual(h.recv_until_eof(s), b'hello world')
        self.assertEqual(self.p.stat('http_inspector.http_not_found', 0), 0)

    def test_undecided_prefix_then_fin_is_tcp_at_once(self):
        # After its FIN the client sends nothing more: the prefix will never be a request
        # line, so it goes on as TCP without waiting for the (long) timeout.
        port = self.start(listener_filters_timeout='60s')
        with h.tcp_connect(port, timeout=20) as s:
            s.sendall(b'hello world')
            h.shutdown_write(s)
            self.assertEqual(h.recv_until_eof(s), b'hello world')
        self.p.wait_stat('http_inspector.http_not_found', 1)
        self.assertEqual(self.p.stat('listener.127.0.0.1_%d.downstream_pre_cx_timeout' % port), 0)

    def test_undecided_prefix_times_out_closed(self):
        port = self.start(listener_filters_timeout='0.3s')
        with h.tcp_connect(port) as s:
            s.sendall(b'hello world')
            try:
                self.assertEqual(h.recv_until_eof(s), b'')
            except ConnectionResetError:
                pass
        self.p.wait_stat('listener.127.0.0.1_%d.downstream_pre_cx_timeout' % port, 1)
        self.assertEqual(self.echo.accepted, 0)

    def test_client_gone_while_inspecting(self):
        port = self.start()
        s = socket.create_connection(('127.0.0.1', port))
        s.sendall(b'GET /')
        self.p.wait_stat('listener.127.0.0.1_%d.downstream_cx_active' % port, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
        s.close()  # a reset: noticed at once, not at listener_filters_timeout (15 s)
        self.p.wait_stat('listener.127.0.0.1_%d.downstream_cx_destroy' % port, 1, timeout=5)
        self.assertEqual(len(self.up.requests), 0)


if __name__ == '__main__':
    unittest.main()
