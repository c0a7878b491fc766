"""HTTP timeouts end to end: the route timeout (504, UT), route idle_timeout and the connection
manager's stream_idle_timeout (408, SI), request_timeout (408 for a slow body),
request_headers_timeout (408 for a slowloris head) and the connection idle timeout.

Timing is asserted only as lower bounds, plus the fact that petrel answered before the
upstream (which would have answered 200) did.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_http_timeouts.py -v
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
LOG_FORMAT = '%RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(:PATH)% %RESPONSE_CODE_DETAILS%\n'
SLACK = 0.05    # timers may fire a hair early relative to our clock


def access_log(path='access.log', fmt=LOG_FORMAT):
    """A file access log (relative paths land in petrel's temp dir, its cwd)."""
    return [{'name': 'envoy.access_loggers.file', 'typed_config': {
        '@type': FILE_LOG, 'path': path, 'log_format': {'text_format_source': {
            'inline_string': fmt}}}}]


class TimeoutCase(unittest.TestCase):

    def setUp(self):
        self.up = HttpUpstream(name='up')
        self.addCleanup(self.up.close)

    def start(self, route_extra=None, route_level=None, **hcm_extra):
        self.port, admin = h.free_ports(2)
        route = h.route_prefix('/', 'up', **(route_extra or {}))
        route.update(route_level or {})
        hcm_extra.setdefault('access_log', access_log())
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], [route])]), **hcm_extra)
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster('up', [self.up.port])], admin_port=admin)
        self.p = h.Petrel(cfg)
        self.p.__enter__()
        self.addCleanup(self.p.__exit__, None, None, None)
        return self.p

    def timed(self, fn):
        t0 = time.monotonic()
        r = fn()
        return r, time.monotonic() - t0

    def wait_log_line(self, pattern):
        """Poll the access log (flushed every second) for a line matching ``pattern``."""
        rx = re.compile(pattern, re.M)

        def find():
            try:
                with open(self.p.path('access.log')) as f:
                    return rx.search(f.read())
            except OSError:
                return None
        return h.wait_until(find, 10, 0.1, 'access log never matched %r' % pattern)


class RouteTimeout(TimeoutCase):

    def test_route_timeout_504(self):
        p = self.start(route_extra={'timeout': '0.3s'})
        r, took = self.timed(lambda: h.http_request(self.port, 'GET', '/delay/5000/slow'))
        self.assertEqual(r.status, 504)
        self.assertEqual(r.body, b'upstream request timeout')
        self.assertGreaterEqual(took, 0.3 - SLACK)
        p.wait_stat('cluster.up.upstream_rq_timeout', 1)
        p.wait_stat('http.ingress.downstream_rq_5xx', 1)
        p.wait_stat('cluster.up.upstream_rq_active', 0)
        self.wait_log_line(r'^504 UT /delay/5000/slow ')
        # The timed-out upstream connection is not reused; the next request is fine.
        r = h.http_request(self.port, 'GET', '/delay/10')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['conn_id'], 2)

    def test_fast_response_within_route_timeout(self):
        self.start(route_extra={'timeout': '3s'})
        self.assertEqual(h.http_request(self.port, 'GET', '/delay/100').status, 200)

    def test_route_timeout_zero_disables(self):
        self.start(route_extra={'timeout': '0s'})
        r = h.http_request(self.port, 'GET', '/delay/1200', timeout=20)
        self.assertEqual(r.status, 200)

    def test_route_timeout_counts_from_request_end(self):
        # The body takes longer than the route timeout to arrive; the timer only starts when
        # the request is complete, so this succeeds.
        self.start(route_extra={'timeout': '0.4s'})

        def body():
            for _ in range(6):
                yield b'x' * 10
                time.sleep(0.15)
        r = h.http_request(self.port, 'POST', '/echo', body=body(),
                           headers={'Content-Length': '60'})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_len'], 60)

    def test_route_timeout_after_response_headers_resets(self):
        # The upstream sends its head at once and then stalls: the route timeout (a whole
        # response budget) ends the stream; the head is already out, so the downstream sees
        # the connection cut rather than a 504.
        srv = StallingServer()
        self.addCleanup(srv.close)
        port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('ingress2', h.route_config([
            h.vhost('all', ['*'], [h.route_prefix('/', 'stall', timeout='0.3s')])]))
        cfg = h.bootstrap([h.listener('http', port, [hcm])],
                          [h.cluster('stall', [srv.port])], admin_port=admin)
        with h.Petrel(cfg) as p2:
            with h.HttpClientConn(port) as c:
                c.send_request('GET', '/')
                with self.assertRaises(h.IncompleteResponse) as cm:
                    c.read_response()
                self.assertEqual(cm.exception.partial.status, 200)
                self.assertEqual(cm.exception.partial.body_len, 5)
            p2.wait_stat('cluster.stall.upstream_rq_timeout', 1)
            p2.wait_stat('http.ingress2.downstream_rq_active', 0)


class StallingServer:
    """Answers every connection with a 200 head (content-length 1000) and 5 bytes, then
    stalls until closed."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.bind(('127.0.0.1', 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.conns = []
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self.conns.append(c)
            try:
                c.settimeout(5)
                data = b''
                while b'\r\n\r\n' not in data:
                    piece = c.recv(65536)
                    if not piece:
                        break
                    data += piece
                c.sendall(b'HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nhello')
            except OSError:
                pass

    def close(self):
        self.lsock.close()
        for c in self.conns:
            c.close()


class StreamIdleTimeouts(TimeoutCase):

    def test_route_idle_timeout_408(self):
        p = self.start(route_extra={'timeout': '10s', 'idle_timeout': '0.3s'})
        r, took = self.timed(lambda: h.http_request(self.port, 'GET', '/delay/5000/idle'))
        self.assertEqual(r.status, 408)
        self.assertGreaterEqual(took, 0.3 - SLACK)
        p.wait_stat('http.ingress.downstream_rq_idle_timeout', 1)
        self.wait_log_line(r'^408 SI /delay/5000/idle ')

    def test_stream_idle_timeout_408(self):
        p = self.start(route_extra={'timeout': '10s'}, stream_idle_timeout='0.3s')
        r, took = self.timed(lambda: h.http_request(self.port, 'GET', '/delay/5000/sidle'))
        self.assertEqual(r.status, 408)
        self.assertGreaterEqual(took, 0.3 - SLACK)
        p.wait_stat('http.ingress.downstream_rq_idle_timeout', 1)
        p.wait_stat('http.ingress.downstream_rq_active', 0)
        self.wait_log_line(r'^408 SI /delay/5000/sidle ')

    def test_route_idle_timeout_overrides_connection_manager(self):
        self.start(route_extra={'timeout': '10s', 'idle_timeout': '3s'},
                   stream_idle_timeout='0.2s')
        self.assertEqual(h.http_request(self.port, 'GET', '/delay/600').status, 200)

    def test_stream_idle_timeout_reset_by_activity(self):
        # A body trickling in (every 0.1 s) keeps the stream alive past the idle timeout.
        self.start(route_extra={'timeout': '10s'}, stream_idle_timeout='0.5s')

        def body():
            for _ in range(10):
                yield b'y' * 10
                time.sleep(0.1)
        r = h.http_request(self.port, 'POST', '/echo', body=body(),
                           headers={'Content-Length': '100'})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_len'], 100)


class RequestTimeouts(TimeoutCase):

    def test_request_timeout_slow_body(self):
        p = self.start(request_timeout='0.5s')
        with h.HttpClientConn(self.port) as c:
            t0 = time.monotonic()
            c.send_raw(b'POST /slowbody HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n' +
                       b'z' * 10)
            r = c.read_response()
            took = time.monotonic() - t0
            self.assertEqual(r.status, 408)
            self.assertGreaterEqual(took, 0.5 - SLACK)
            self.assertTrue(c.wait_closed(5))
        p.wait_stat('http.ingress.downstream_rq_timeout', 1)
        p.wait_stat('http.ingress.downstream_rq_active', 0)
        p.wait_stat('cluster.up.upstream_rq_active', 0)
        self.wait_log_line(r'^408 \S+ /slowbody ')

    def test_request_timeout_not_applied_after_request_end(self):
        self.start(request_timeout='0.3s')
        self.assertEqual(h.http_request(self.port, 'GET', '/delay/800').status, 200)

    def test_max_stream_duration(self):
        p = self.start(route_extra={'timeout': '10s'},
                       common_http_protocol_options={'max_stream_duration': '0.5s'})
        r, took = self.timed(lambda: h.http_request(self.port, 'GET', '/delay/5000/msd'))
        self.assertEqual(r.status, 408)
        self.assertGreaterEqual(took, 0.5 - SLACK)
        p.wait_stat('http.ingress.downstream_rq_active', 0)
        self.wait_log_line(r'^408 DT /delay/5000/msd ')

    def test_max_stream_duration_outlives_request_timeout(self):
        # Both share a timer: once the request is complete, request_timeout is over but
        # max_stream_duration still runs (from the stream's start).
        p = self.start(route_extra={'timeout': '10s'}, request_timeout='0.3s',
                       common_http_protocol_options={'max_stream_duration': '1.2s'})
        self.assertEqual(h.http_request(self.port, 'GET', '/delay/600').status, 200)
        r, took = self.timed(lambda: h.http_request(self.port, 'GET', '/delay/5000/both'))
        self.assertEqual(r.status, 408)
        self.assertGreaterEqual(took, 1.2 - SLACK)
        self.wait_log_line(r'^408 DT /delay/5000/both ')
        p.wait_stat('http.ingress.downstream_rq_active', 0)

    def test_request_headers_timeout_slowloris(self):
        p = self.start(request_headers_timeout='0.5s')
        with h.HttpClientConn(self.port) as c:
            t0 = time.monotonic()
            c.send_raw(b'GET /loris HTTP/1.1\r\nHost: a\r\n')
            r = c.read_response()
            took = time.monotonic() - t0
            self.assertEqual(r.status, 408)
            self.assertGreaterEqual(took, 0.5 - SLACK)
            self.assertTrue(c.wait_closed(5))
        p.wait_stat('http.ingress.downstream_rq_header_timeout', 1)
        self.assertEqual(self.up.requests, [])

    def test_request_headers_timeout_not_reset_by_dribbling(self):
        # One header byte every 0.1 s: activity must not extend the head deadline.
        p = self.start(request_headers_timeout='0.5s')
        with h.HttpClientConn(self.port) as c:
            c.send_raw(b'GET /dribble HTTP/1.1\r\nHost: a\r\nX-Slow: ')
            t0 = time.monotonic()
            got = None
            for _ in range(100):
                try:
                    c.send_raw(b'a')
                except OSError:
                    break
                c.settimeout(0.1)
                try:
                    got = c.read_response()
                    break
                except socket.timeout:
                    continue
            took = time.monotonic() - t0
            self.assertIsNotNone(got, 'no 408 while dribbling for %.1fs' % took)
            self.assertEqual(got.status, 408)
            self.assertLess(took, h.scaled(8))
        p.wait_stat('http.ingress.downstream_rq_header_timeout', 1)
        self.assertEqual(self.up.requests, [])

    def test_partial_head_ends_at_stream_idle_timeout(self):
        # Without request_headers_timeout a head that stops arriving is still bounded: by
        # stream_idle_timeout, counted from its first byte (not reset by more head bytes).
        p = self.start(stream_idle_timeout='0.5s')
        with h.HttpClientConn(self.port) as c:
            t0 = time.monotonic()
            c.send_raw(b'GET /partial HTTP/1.1\r\nHost: a\r\nX-Slow: ')
            got = None
            for _ in range(100):
                c.settimeout(0.1)
                try:
                    got = c.read_response()
                    break
                except socket.timeout:
                    pass
                try:
                    c.send_raw(b'a')
                except OSError:
                    break
            took = time.monotonic() - t0
            self.assertIsNotNone(got, 'no 408 for a partial head after %.1fs' % took)
            self.assertEqual(got.status, 408)
            self.assertEqual(got.body, b'stream timeout')
            self.assertGreaterEqual(took, 0.5 - SLACK)
            self.assertTrue(c.wait_closed(5))
        p.wait_stat('http.ingress.downstream_rq_idle_timeout', 1)
        self.assertEqual(p.stat('http.ingress.downstream_rq_header_timeout'), 0)
        self.assertEqual(p.stat('http.ingress.downstream_cx_protocol_error'), 0)
        self.wait_log_line(r'^408 SI \S+ stream_idle_timeout$')
        self.assertEqual(self.up.requests, [])

    def test_request_headers_timeout_complete_head_ok(self):
        self.start(request_headers_timeout='0.5s')
        with h.HttpClientConn(self.port) as c:
            for _ in range(3):
                self.assertEqual(c.request('GET', '/echo').status, 200)
                time.sleep(0.3)        # idle between requests is not head time
            time.sleep(0.4)
            self.assertEqual(c.request('GET', '/echo').status, 200)


class ConnectionIdleTimeout(TimeoutCase):

    def test_idle_keepalive_connection_closed(self):
        p = self.start(common_http_protocol_options={'idle_timeout': '0.5s'})
        with h.HttpClientConn(self.port) as c:
            self.assertEqual(c.request('GET', '/echo').status, 200)
            t0 = time.monotonic()
            self.assertTrue(c.wait_closed(10), 'idle connection not closed')
            self.assertGreaterEqual(time.monotonic() - t0, 0.5 - SLACK)
        p.wait_stat('http.ingress.downstream_cx_idle_timeout', 1)
        p.wait_stat('http.ingress.downstream_cx_active', 0)

    def test_silent_connection_closed(self):
        p = self.start(common_http_protocol_options={'idle_timeout': '0.4s'})
        with h.HttpClientConn(self.port) as c:
            self.assertTrue(c.wait_closed(10))
            self.assertEqual(c.discarded, b'')
        p.wait_stat('http.ingress.downstream_cx_idle_timeout', 1)

    def test_active_connection_not_idle(self):
        # Requests every 0.2 s, and one in flight longer than the idle timeout.
        p = self.start(common_http_protocol_options={'idle_timeout': '0.5s'})
        with h.HttpClientConn(self.port) as c:
            for _ in range(4):
                self.assertEqual(c.request('GET', '/echo').status, 200)
                time.sleep(0.2)
            self.assertEqual(c.request('GET', '/delay/900').status, 200)
            self.assertEqual(c.request('GET', '/echo').status, 200)
        self.assertEqual(p.stat('http.ingress.downstream_cx_idle_timeout'), 0)


if __name__ == '__main__':
    unittest.main()
