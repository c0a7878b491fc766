"""HTTP faults end to end: upstream connect failure (503 UF), upstream resets before and after
the response head, protocol garbage from the upstream (502), clients that disconnect in the
middle of a request or a response, and an upstream closing an idle pooled connection. After
each fault petrel keeps serving, streams and upstream requests are back to zero and no
upstream connection is leaked.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_http_faults.py -v
"""

import os
import re
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

FILE_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog'
LOG_FORMAT = '%RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(:PATH)% %UPSTREAM_HOST%\n'
MiB = 1 << 20


class RawServer:
    """A TCP server that reads one request head per connection, then sends ``reply`` (bytes)
    and closes (``close=True``) or keeps the connection open."""

    def __init__(self, reply, close=True):
        self.reply, self.close_after = reply, close
        self.lsock = socket.socket()
        self.lsock.bind(('127.0.0.1', 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.conns, self.accepted = [], 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            try:
                c.settimeout(5)
                data = b''
                while b'\r\n\r\n' not in data:
                    piece = c.recv(65536)
                    if not piece:
                        break
                    data += piece
                if self.reply:
                    c.sendall(self.reply)
                if self.close_after:
                    c.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self):
        self.lsock.close()
        for c in self.conns:
            c.close()


class FaultCase(unittest.TestCase):

    def start(self, endpoints, ports=None, **route_extra):
        self.port, admin = ports or h.free_ports(2)
        route_extra.setdefault('timeout', '5s')
        hcm = h.http_connection_manager(
            'ingress', h.route_config([h.vhost('all', ['*'], [
                h.route_prefix('/', 'up', **route_extra)])]),
            access_log=[{'name': 'envoy.access_loggers.file', 'typed_config': {
                '@type': FILE_LOG, 'path': 'access.log',
                'log_format': {'text_format_source': {'inline_string': LOG_FORMAT}}}}])
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster('up', endpoints, connect_timeout='1s')], admin_port=admin)
        self.p = h.Petrel(cfg)
        self.p.__enter__()
        self.addCleanup(self.p.__exit__, None, None, None)
        return self.p

    def wait_log_line(self, pattern):
        rx = re.compile(pattern, re.M)

        def find():
            try:
                with open(self.p.path('access.log')) as f:
                    return rx.search(f.read())
            except OSError:
                return None
        return h.wait_until(find, 10, 0.1, 'access log never matched %r' % pattern)

    def assert_settled(self, idle_upstream_cx=None):
        """No stream and no upstream request left; upstream connections back to the idle pool
        (``idle_upstream_cx``, any small number when None)."""
        self.p.wait_stat('http.ingress.downstream_rq_active', 0)
        self.p.wait_stat('http.ingress.downstream_cx_active', 0)
        self.p.wait_stat('cluster.up.upstream_rq_active', 0)
        self.p.wait_stat('cluster.up.upstream_rq_pending_active', 0)
        if idle_upstream_cx is not None:
            self.p.wait_stat('cluster.up.upstream_cx_active', idle_upstream_cx)


class UpstreamFailures(FaultCase):

    def test_connect_failure_503_uf(self):
        # One call, so the dead port cannot be petrel's own listener (a proxy loop).
        port, listen, admin = h.free_ports(3)
        p = self.start([port], ports=(listen, admin))
        r = h.http_request(self.port, 'GET', '/dead')
        self.assertEqual(r.status, 503)
        self.assertIn(b'upstream connect error', r.body)
        self.wait_log_line(r'^503 UF /dead 127\.0\.0\.1:%d$' % port)
        p.wait_stat('cluster.up.upstream_cx_connect_fail', 1)
        self.assert_settled(0)
        # Keep-alive survives a local 503.
        with h.HttpClientConn(self.port) as c:
            for _ in range(3):
                self.assertEqual(c.request('GET', '/dead').status, 503)
        p.wait_stat('http.ingress.downstream_rq_5xx', 4)

    def test_reset_before_response_503(self):
        with HttpUpstream(name='up') as up:
            p = self.start([up.port])
            r = h.http_request(self.port, 'GET', '/reset')
            self.assertEqual(r.status, 503)
            self.assertIn(b'upstream connect error or disconnect/reset before headers', r.body)
            self.wait_log_line(r'^503 (UR|UC) /reset ')
            p.wait_stat('cluster.up.upstream_rq_rx_reset', 1)
            self.assert_settled(0)
            self.assertEqual(h.http_request(self.port, 'GET', '/echo').status, 200)
            self.assert_settled(1)

    def test_reset_after_headers_cuts_downstream(self):
        with HttpUpstream(name='up') as up:
            p = self.start([up.port])
            with h.HttpClientConn(self.port) as c:
                c.send_request('GET', '/reset-after-headers')
                with self.assertRaises(h.IncompleteResponse) as cm:
                    c.read_response()
                partial = cm.exception.partial
                self.assertEqual(partial.status, 200)
                self.assertEqual(partial.get('content-length'), '100000')
                self.assertLess(partial.body_len, 100000)
            self.wait_log_line(r'^200 (UR|UC) /reset-after-headers ')
            p.wait_stat('http.ingress.rq_reset_after_downstream_response_started', 1)
            self.assert_settled(0)
            self.assertEqual(h.http_request(self.port, 'GET', '/echo').status, 200)

    def test_upstream_closes_without_answer_503(self):
        srv = RawServer(b'')
        self.addCleanup(srv.close)
        p = self.start([srv.port])
        r = h.http_request(self.port, 'GET', '/silent')
        self.assertEqual(r.status, 503)
        self.wait_log_line(r'^503 UC /silent ')
        self.assert_settled(0)


class EarlyResponse(FaultCase):

    def test_upstream_answers_before_request_body_ends(self):
        # The upstream rejects a 20 MiB upload after the head: the client gets the answer
        # (with Connection: close, the rest of its body cannot be skipped) and petrel settles.
        srv = RawServer(b'HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n'
                        b'connection: close\r\n\r\nbig!')
        self.addCleanup(srv.close)
        p = self.start([srv.port])
        n = 20 * MiB
        r = h.http_request(self.port, 'POST', '/upload', body=h.pattern_chunks(n),
                           headers={'Content-Length': str(n)})
        self.assertEqual((r.status, r.body), (413, b'big!'))
        self.assertEqual(r.get('connection'), 'close')
        p.wait_stat('http.ingress.downstream_rq_response_before_rq_complete', 1)
        self.assert_settled(0)
        self.assertLess(p.stat('cluster.up.upstream_cx_tx_bytes_total'), n)


class ProtocolGarbage(FaultCase):

    def check_502(self, reply, close=True):
        srv = RawServer(reply, close)
        self.addCleanup(srv.close)
        p = self.start([srv.port])
        r = h.http_request(self.port, 'GET', '/garbage')
        self.assertEqual(r.status, 502, r.body)
        self.wait_log_line(r'^502 UPE /garbage ')
        p.wait_stat('cluster.up.upstream_cx_protocol_error', 1)
        self.assert_settled(0)
        return p

    def test_junk_head(self):
        self.check_502(b'this is not http\r\n\r\n')

    def test_junk_without_blank_line(self):
        self.check_502(b'\x00\x01\x02 garbage garbage')

    def test_binary_noise_kept_open(self):
        self.check_502(os.urandom(512) + b'\r\n\r\n', close=False)

    def test_ambiguous_response_framing(self):
        self.check_502(b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n'
                       b'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n')

    def test_bad_status_line(self):
        self.check_502(b'HTTP/1.1 2OO OK\r\ncontent-length: 0\r\n\r\n')

    def test_bad_chunk_in_response_after_headers(self):
        # The head is fine and already forwarded; the body is garbage: the downstream
        # response is cut (it cannot become a 502 any more).
        srv = RawServer(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'
                        b'5\r\nhello\r\nzz\r\n', close=False)
        self.addCleanup(srv.close)
        self.start([srv.port])
        with h.HttpClientConn(self.port) as c:
            c.send_request('GET', '/badchunk')
            # Head, body and the failure can fall in one loop turn: then the reset may come
            # before any byte of the head. Either way, never a complete response.
            with self.assertRaises(ConnectionError) as cm:
                c.read_response()
            if isinstance(cm.exception, h.IncompleteResponse):
                self.assertEqual(cm.exception.partial.status, 200)
        self.wait_log_line(r'^200 UPE /badchunk ')
        self.assert_settled(0)


class ClientDisconnects(FaultCase):

    def test_client_gone_mid_request_body(self):
        with HttpUpstream(name='up') as up:
            p = self.start([up.port])
            self.assertEqual(h.http_request(self.port, 'GET', '/warm').status, 200)
            c = h.HttpClientConn(self.port)
            c.send_raw(b'POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n' +
                       b'q' * 50000)
            up.wait_for(lambda: any(r['path'] == '/upload' for r in up.requests) or
                        up.active >= 1, 5)
            time.sleep(h.scaled(0.1))
            h._abort_socket(c.sock)
            p.wait_stat('http.ingress.downstream_rq_rx_reset', lambda v: v and v >= 1)
            self.assert_settled(0)   # the half-sent upstream request cannot be reused
            self.wait_log_line(r'^0 DC /upload ')
            up.wait_requests(2)
            rec = [r for r in up.requests if r['path'] == '/upload'][0]
            self.assertFalse(rec['complete'])
            self.assertEqual(h.http_request(self.port, 'GET', '/after').status, 200)

    def test_client_gone_while_waiting_for_response(self):
        # A plain close (FIN) while the upstream is still working. As in Envoy (and nginx),
        # HTTP/1 has no half-closed requests: the stream is reset and the upstream request
        # cancelled, not answered into the void.
        with HttpUpstream(name='up') as up:
            p = self.start([up.port])
            c = h.HttpClientConn(self.port)
            c.send_request('GET', '/delay/1500/waiting')
            up.wait_accepted(1)
            time.sleep(h.scaled(0.2))
            c.close()
            p.wait_stat('http.ingress.downstream_rq_rx_reset', lambda v: v and v >= 1)
            self.assert_settled(0)
            self.wait_log_line(r'^0 DC /delay/1500/waiting ')
            p.wait_stat('cluster.up.upstream_rq_tx_reset', 1)
            self.assertEqual(h.http_request(self.port, 'GET', '/after').status, 200)
            self.assert_settled(1)

    def test_client_gone_mid_response_body(self):
        with HttpUpstream(name='up') as up:
            p = self.start([up.port])
            c = h.HttpClientConn(self.port)
            c.send_request('GET', '/bytes/%d' % (64 * MiB))
            got = 0
            while got < 256 * 1024:
                got += len(c.read_some(65536))
            h._abort_socket(c.sock)
            p.wait_stat('http.ingress.downstream_rq_rx_reset', lambda v: v and v >= 1)
            self.assert_settled(0)
            self.wait_log_line(r'^200 DC /bytes/%d ' % (64 * MiB))
            up.wait_idle()              # the upstream connection was closed too
            self.assertEqual(h.http_request(self.port, 'GET', '/after').status, 200)

    def test_many_aborts_leave_nothing_behind(self):
        with HttpUpstream(name='up') as up:
            p = self.start([up.port])
            for i in range(20):
                c = h.HttpClientConn(self.port)
                if i % 3 == 0:
                    c.send_raw(b'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nab')
                elif i % 3 == 1:
                    c.send_request('GET', '/delay/300')
                else:
                    c.send_raw(b'GET /half HTTP/1.1\r\nHost')
                time.sleep(0.01)
                h._abort_socket(c.sock)
            self.assert_settled()
            p.wait_stat('cluster.up.upstream_cx_active', lambda v: v is not None and v <= 1)
            with h.HttpClientConn(self.port) as c:
                for _ in range(5):
                    self.assertEqual(c.request('GET', '/echo').status, 200)
            self.assertTrue(p.alive())


class PooledConnections(FaultCase):

    def test_upstream_closes_idle_pooled_connection(self):
        with HttpUpstream(name='up') as up:
            p = self.start([up.port])
            self.assertEqual(h.http_request(self.port, 'GET', '/echo').json()['conn_id'], 1)
            p.wait_stat('cluster.up.upstream_cx_active', 1)
            up.drop_connections()
            # The pool notices the close while the connection is idle ...
            p.wait_stat('cluster.up.upstream_cx_active', 0)
            p.wait_stat('cluster.up.upstream_cx_destroy_remote', 1)
            # ... so the next request goes out on a new connection and succeeds.
            r = h.http_request(self.port, 'GET', '/echo')
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()['conn_id'], 2)
            self.assertEqual(p.stat('cluster.up.upstream_cx_total'), 2)

    def test_close_delimited_upstream_response(self):
        # An upstream body that ends at the close is re-framed (chunked) for an HTTP/1.1
        # client, and that upstream connection is of course not reused.
        body = h.pattern_bytes(0, 100000)
        srv = RawServer(b'HTTP/1.1 200 OK\r\ncontent-type: x/y\r\n\r\n' + body)
        self.addCleanup(srv.close)
        p = self.start([srv.port])
        with h.HttpClientConn(self.port) as c:
            for _ in range(2):
                r = c.request('GET', '/eof')
                self.assertEqual(r.status, 200)
                self.assertEqual(r.get('transfer-encoding'), 'chunked')
                self.assertEqual(r.body, body)
        self.assertEqual(srv.accepted, 2)
        self.assert_settled(0)

    def test_http10_upstream_not_reused(self):
        srv = RawServer(b'HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok', close=False)
        self.addCleanup(srv.close)
        p = self.start([srv.port])
        for _ in range(2):
            r = h.http_request(self.port, 'GET', '/ten')
            self.assertEqual((r.status, r.body), (200, b'ok'))
        self.assertEqual(srv.accepted, 2)
        self.assert_settled(0)

    def test_upstream_sends_junk_on_idle_connection(self):
        srv = RawServer(b'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokJUNK', close=False)
        self.addCleanup(srv.close)
        p = self.start([srv.port])
        r = h.http_request(self.port, 'GET', '/one')
        self.assertEqual((r.status, r.body), (200, b'ok'))
        # The stray bytes make the connection unusable: it is closed, not reused.
        p.wait_stat('cluster.up.upstream_cx_active', 0)
        r = h.http_request(self.port, 'GET', '/two')
        self.assertEqual(r.status, 200)
        self.assertEqual(srv.accepted, 2)


if __name__ == '__main__':
    unittest.main()
