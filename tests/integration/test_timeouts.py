"""Resilience timeouts end to end, complementing test_http_timeouts.py (which covers the
route timeout's basic 504/UT, route and stream idle timeouts, request timeouts and the
connection idle timeout): per_try_timeout and per_try_idle_timeout (alone, against the
route timeout, after the connect, with retries), the cluster connect_timeout (503 UF,
upstream_cx_connect_timeout; against a listener whose accept queue is full, so the connect
hangs) and the route timeout bounding a connect or a backoff.

Timing is asserted as lower bounds plus generous upper bounds only.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_timeouts.py -v
"""

import os
import re
import select
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
SLACK = 0.05            # timers may fire a hair early relative to our clock
FAST = {'base_interval': '0.005s', 'max_interval': '0.02s'}
TIMEOUT_BODY = b'upstream request timeout'
CONNECT_TIMEOUT_BODY = (b'upstream connect error or disconnect/reset before headers. reset '
                        b'reason: connection timeout')
CONNECT_FAILURE_BODY = (b'upstream connect error or disconnect/reset before headers. reset '
                        b'reason: connection failure')


def access_log():
    return [{'name': 'envoy.access_loggers.file', 'typed_config': {
        '@type': FILE_LOG, 'path': 'access.log', 'log_format': {'text_format_source': {
            'inline_string': LOG_FORMAT}}}}]


class Blackhole:
    """A loopback listener whose accept queue is full, so a connect to it never completes
    (the technique of test_tcp_proxy.py: backlog 0 queues one connection; with that one
    queued and never accepted, the kernel drops every further SYN)."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(('127.0.0.1', 0))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        self.fillers = [socket.create_connection(('127.0.0.1', self.port), timeout=5)]
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.setblocking(False)
        self.fillers.append(probe)
        if probe.connect_ex(('127.0.0.1', self.port)) == 0:
            raise AssertionError('blackhole accepted a second connection')
        _, w, _ = select.select([], [probe], [], 0.3)
        if w and probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            raise AssertionError('blackhole did not hang a connect (accept queue not full)')

    def close(self):
        for s in self.fillers:
            s.close()
        self.lsock.close()


class ScriptedServer:
    """For every connection: read one request head, then play ``script``, a list of
    (sleep_seconds, bytes) steps, then keep the connection open until closed."""

    def __init__(self, script):
        self.script = script
        self.lsock = socket.socket()
        self.lsock.bind(('127.0.0.1', 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.conns = []
        self.closing = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(5)
            data = b''
            while b'\r\n\r\n' not in data:
                piece = c.recv(65536)
                if not piece:
                    return
                data += piece
            for delay, out in self.script:
                if self.closing.wait(delay):
                    return
                c.sendall(out)
        except OSError:
            pass

    def close(self):
        self.closing.set()
        self.lsock.close()
        for c in self.conns:
            c.close()


class FirstSlowUpstream(HttpUpstream):
    """An HttpUpstream whose first ``slow`` requests wait ``delay`` seconds (scaled) before
    being answered as usual."""

    def __init__(self, slow=1, delay=3.0, **kw):
        self.slow_left = slow
        self.delay = delay
        super().__init__(**kw)

    def _respond(self, ctx, path):
        with self._cond:
            slow = self.slow_left > 0
            self.slow_left -= 1 if slow else 0
        if slow:
            self._closing.wait(h.scaled(self.delay))
        return super()._respond(ctx, path)


class TimeoutCase(unittest.TestCase):

    def start(self, endpoint, route_extra=None, connect_timeout='1s', **hcm_extra):
        self.port, admin = h.free_ports(2)
        port = endpoint if isinstance(endpoint, int) else endpoint.port
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], [h.route_prefix('/', 'up', **(route_extra or {}))])]),
            access_log=access_log(), **hcm_extra)
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster('up', [port], connect_timeout=connect_timeout)],
                          admin_port=admin)
        self.p = h.Petrel(cfg)
        self.p.__enter__()
        self.addCleanup(self.p.__exit__, None, None, None)
        return self.p

    def upstream(self, cls=HttpUpstream, **kw):
        up = cls(name='up', **kw)
        self.addCleanup(up.close)
        return up

    def timed_get(self, path, **kw):
        t0 = time.monotonic()
        r = h.http_request(self.port, 'GET', path, **kw)
        return r, time.monotonic() - t0

    def log_line(self, pattern):
        """The first access-log line matching ``pattern`` (waits for the flush)."""
        rx = re.compile(pattern)

        def find():
            try:
                with open(self.p.path('access.log')) as f:
                    return next((ln for ln in f.read().splitlines() if rx.search(ln)), None)
            except OSError:
                return None
        return h.wait_until(find, 10, 0.1, 'access log never matched %r' % pattern)


class PerTryTimeout(TimeoutCase):

    def test_per_try_timeout_without_retries(self):
        up = self.upstream()
        p = self.start(up, {'timeout': '10s', 'retry_policy': {'per_try_timeout': '0.3s'}})
        r, took = self.timed_get('/delay/5000/ptt')
        self.assertEqual(r.status, 504)
        self.assertEqual(r.body, TIMEOUT_BODY)
        self.assertGreaterEqual(took, 0.3 - SLACK)
        self.assertLess(took, h.scaled(4))
        p.wait_stat('cluster.up.upstream_rq_per_try_timeout', 1)
        stats = p.stats()
        self.assertEqual(stats['cluster.up.upstream_rq_timeout'], 0)   # not the route's
        self.assertEqual(stats['cluster.up.upstream_rq_retry'], 0)
        self.log_line(r'^504 UT /delay/5000/ptt upstream_per_try_timeout$')
        p.wait_stat('cluster.up.upstream_rq_active', 0)

    def test_route_timeout_shorter_than_per_try_timeout(self):
        up = self.upstream()
        p = self.start(up, {'timeout': '0.3s', 'retry_policy': {
            'retry_on': '5xx', 'num_retries': 3, 'per_try_timeout': '5s'}})
        r, took = self.timed_get('/delay/5000/rt')
        self.assertEqual(r.status, 504)
        self.assertGreaterEqual(took, 0.3 - SLACK)
        self.assertLess(took, h.scaled(4))
        p.wait_stat('cluster.up.upstream_rq_timeout', 1)
        self.assertEqual(p.stat('cluster.up.upstream_rq_per_try_timeout'), 0)
        self.assertEqual(len(up.requests), 1)
        self.log_line(r'^504 UT /delay/5000/rt upstream_response_timeout$')

    def test_per_try_timeout_counts_from_request_end(self):
        # The body takes longer than per_try_timeout to arrive; the per-try timer only
        # starts once the whole request went upstream, so the attempt succeeds.
        up = self.upstream()
        self.start(up, {'timeout': '10s', 'retry_policy': {'per_try_timeout': '0.3s'}})

        def body():
            for _ in range(6):
                yield b'x' * 10
                time.sleep(0.12)
        r = h.http_request(self.port, 'POST', '/echo', body=body(),
                           headers={'Content-Length': '60'})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_len'], 60)
        self.assertEqual(self.p.stat('cluster.up.upstream_rq_per_try_timeout'), 0)

    def test_per_try_timeout_starts_after_connect(self):
        # The connect hangs for connect_timeout (0.6 s), longer than per_try_timeout
        # (0.2 s): the attempt ends as a connect timeout (503 UF), not a per-try timeout,
        # because the per-try timer starts only once the request went out on a connection.
        bh = Blackhole()
        self.addCleanup(bh.close)
        p = self.start(bh.port, {'timeout': '10s', 'retry_policy': {'per_try_timeout': '0.2s'}},
                       connect_timeout='0.6s')
        r, took = self.timed_get('/ptc')
        self.assertEqual(r.status, 503)
        self.assertEqual(r.body, CONNECT_TIMEOUT_BODY)
        self.assertGreaterEqual(took, 0.6 - SLACK)
        p.wait_stat('cluster.up.upstream_cx_connect_timeout', 1)
        self.assertEqual(p.stat('cluster.up.upstream_rq_per_try_timeout'), 0)
        self.log_line(r'^503 UF /ptc ')


class PerTryIdleTimeout(TimeoutCase):

    def test_idle_timeout_without_response(self):
        up = self.upstream()
        p = self.start(up, {'timeout': '10s', 'retry_policy': {'per_try_idle_timeout': '0.3s'}})
        r, took = self.timed_get('/delay/5000/idle')
        self.assertEqual(r.status, 504)
        self.assertEqual(r.body, TIMEOUT_BODY)
        self.assertGreaterEqual(took, 0.3 - SLACK)
        self.assertLess(took, h.scaled(4))
        p.wait_stat('cluster.up.upstream_rq_per_try_idle_timeout', 1)
        stats = p.stats()
        self.assertEqual(stats['cluster.up.upstream_rq_per_try_timeout'], 0)
        self.assertEqual(stats['cluster.up.upstream_rq_timeout'], 0)
        self.log_line(r'^504 UT /delay/5000/idle upstream_per_try_\S*timeout$')

    def test_idle_timeout_response_code_details(self):
        # BUG (filters/router.c on_per_try): Envoy reports an idle per-try timeout as
        # %RESPONSE_CODE_DETAILS% upstream_per_try_idle_timeout; petrel says
        # upstream_per_try_timeout for both.
        up = self.upstream()
        self.start(up, {'timeout': '10s', 'retry_policy': {'per_try_idle_timeout': '0.2s'}})
        self.assertEqual(self.timed_get('/delay/5000/idd')[0].status, 504)
        line = self.log_line(r'^504 UT /delay/5000/idd ')
        self.assertEqual(line.split()[3], 'upstream_per_try_idle_timeout')

    def test_idle_timeout_retried(self):
        up = self.upstream(cls=FirstSlowUpstream, slow=1, delay=5)
        p = self.start(up, {'timeout': '10s', 'retry_policy': {
            'retry_on': 'reset', 'num_retries': 1, 'per_try_idle_timeout': '0.3s',
            'retry_back_off': FAST}})
        r, took = self.timed_get('/echo/idle-retry')
        self.assertEqual(r.status, 200)
        self.assertGreaterEqual(took, 0.3 - SLACK)
        self.assertEqual(len(up.requests), 2)
        p.wait_stat('cluster.up.upstream_rq_per_try_idle_timeout', 1)
        self.assertEqual(p.stat('cluster.up.upstream_rq_retry_success'), 1)

    def test_steady_response_not_cut(self):
        # A response that keeps coming (a piece every 0.1 s) never idles 0.4 s.
        head = b'HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n'
        srv = ScriptedServer([(0.1, head)] + [(0.1, b'x')] * 10)
        self.addCleanup(srv.close)
        self.start(srv.port, {'timeout': '0s', 'retry_policy': {'per_try_idle_timeout': '0.4s'}})
        r = h.http_request(self.port, 'GET', '/steady')
        self.assertEqual((r.status, r.body), (200, b'x' * 10))

    def test_idle_timeout_covers_streaming_response(self):
        # BUG (filters/router.c up_on_headers stops the per_try timer, and on_per_try
        # returns once R_RESP_HEADERS is set): Envoy's per_try_idle_timeout "continues once
        # the response starts streaming back to the downstream client", so a response that
        # stalls mid-body is cut after 0.3 s of silence. petrel lets it hang until a
        # connection manager timeout (stream_idle_timeout, 3 s here).
        srv = ScriptedServer([(0, b'HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nhello')])
        self.addCleanup(srv.close)
        p = self.start(srv.port, {'timeout': '0s',
                                  'retry_policy': {'per_try_idle_timeout': '0.3s'}},
                       stream_idle_timeout='3s')
        with h.HttpClientConn(self.port, timeout=2) as c:
            c.send_request('GET', '/stall')
            with self.assertRaises(h.IncompleteResponse) as cm:
                c.read_response()
            self.assertEqual(cm.exception.partial.status, 200)
            self.assertIsInstance(cm.exception.cause, ConnectionError)   # cut, not our timeout
        p.wait_stat('cluster.up.upstream_rq_per_try_idle_timeout', 1, timeout=1)

    def test_idle_timeout_alongside_per_try_timeout(self):
        # BUG (filters/router.c start_per_try/on_per_try use per_try_idle_timeout only when
        # per_try_timeout is 0): Envoy runs both timers; a silent upstream hits the idle
        # one (0.3 s) long before per_try_timeout (1.5 s). petrel ignores the idle timeout.
        up = self.upstream()
        p = self.start(up, {'timeout': '10s', 'retry_policy': {
            'per_try_timeout': '1.5s', 'per_try_idle_timeout': '0.3s'}})
        r, took = self.timed_get('/delay/5000/both')
        self.assertEqual(r.status, 504)
        self.assertEqual(p.stat('cluster.up.upstream_rq_per_try_timeout'), 0)
        self.assertEqual(p.stat('cluster.up.upstream_rq_per_try_idle_timeout'), 1)


class ConnectTimeout(TimeoutCase):

    def test_connect_timeout_503_uf(self):
        bh = Blackhole()
        self.addCleanup(bh.close)
        p = self.start(bh.port, {'timeout': '10s'}, connect_timeout='0.5s')
        r, took = self.timed_get('/ct')
        self.assertEqual(r.status, 503)
        self.assertEqual(r.body, CONNECT_TIMEOUT_BODY)
        self.assertGreaterEqual(took, 0.5 - SLACK)
        self.assertLess(took, h.scaled(5))
        p.wait_stat('cluster.up.upstream_cx_connect_timeout', 1)
        stats = p.stats()
        self.assertEqual(stats['cluster.up.upstream_cx_connect_fail'], 1)
        self.assertEqual(stats['cluster.up.upstream_rq_timeout'], 0)
        self.assertEqual(stats['cluster.up.upstream_rq_pending_failure_eject'], 1)
        self.assertEqual(stats['cluster.up.upstream_rq_total'], 0)
        self.log_line(r'^503 UF /ct ')
        p.wait_stat('cluster.up.upstream_cx_active', 0)
        p.wait_stat('cluster.up.upstream_rq_pending_active', 0)

    def test_connect_timeout_retried(self):
        # connect-failure covers connect timeouts: two attempts, two timeouts, then UF,URX.
        bh = Blackhole()
        self.addCleanup(bh.close)
        p = self.start(bh.port, {'timeout': '10s', 'retry_policy': {
            'retry_on': 'connect-failure', 'num_retries': 1, 'retry_back_off': FAST}},
            connect_timeout='0.4s')
        r, took = self.timed_get('/ct2')
        self.assertEqual(r.status, 503)
        self.assertGreaterEqual(took, 0.8 - 2 * SLACK)
        p.wait_stat('cluster.up.upstream_cx_connect_timeout', 2)
        self.assertEqual(p.stat('cluster.up.upstream_rq_retry'), 1)
        self.log_line(r'^503 UF,URX /ct2 ')

    def test_refused_connect_is_not_a_timeout(self):
        dead = h.dead_port()
        p = self.start(dead, {'timeout': '10s'}, connect_timeout='5s')
        r, took = self.timed_get('/refused')
        self.assertEqual(r.status, 503)
        self.assertEqual(r.body, CONNECT_FAILURE_BODY)
        self.assertLess(took, h.scaled(4))             # refused at once, not after 5 s
        p.wait_stat('cluster.up.upstream_cx_connect_fail', 1)
        self.assertEqual(p.stat('cluster.up.upstream_cx_connect_timeout'), 0)
        self.log_line(r'^503 UF /refused ')

    def test_route_timeout_during_connect(self):
        # The route timeout also bounds the wait for a connection.
        bh = Blackhole()
        self.addCleanup(bh.close)
        p = self.start(bh.port, {'timeout': '0.4s'}, connect_timeout='5s')
        r, took = self.timed_get('/rtc')
        self.assertEqual(r.status, 504)
        self.assertEqual(r.body, TIMEOUT_BODY)
        self.assertGreaterEqual(took, 0.4 - SLACK)
        self.assertLess(took, h.scaled(4))
        p.wait_stat('cluster.up.upstream_rq_timeout', 1)
        p.wait_stat('cluster.up.upstream_rq_pending_active', 0)
        stats = p.stats()
        self.assertEqual(stats['cluster.up.upstream_rq_cancelled'], 1)
        self.assertEqual(stats['cluster.up.upstream_cx_connect_timeout'], 0)
        self.log_line(r'^504 UT /rtc upstream_response_timeout$')


class RouteTimeoutAndBackoff(TimeoutCase):

    def test_route_timeout_during_backoff(self):
        # Every attempt fails at once, and the backoff before each retry may be seconds
        # long; the route timeout (0.5 s) still ends the request on time.
        up = self.upstream()
        p = self.start(up, {'timeout': '0.5s', 'retry_policy': {
            'retry_on': '5xx', 'num_retries': 5,
            'retry_back_off': {'base_interval': '2s', 'max_interval': '2s'}}})
        r, took = self.timed_get('/fail/bk/10/503')
        self.assertEqual(r.status, 504)
        self.assertGreaterEqual(took, 0.5 - SLACK)
        self.assertLess(took, 0.5 + h.scaled(3))
        p.wait_stat('cluster.up.upstream_rq_timeout', 1)
        self.assertGreaterEqual(len(up.requests), 1)
        self.log_line(r'^504 UT /fail/bk/10/503 upstream_response_timeout$')

    def test_route_timeout_after_last_retry_is_ut_only(self):
        # BUG (filters/router.c fail(): "if (st->attempt > 1 && st->retries_left == 0)
        # flags |= URX"): the one retry allowed is out and hangs, then the route timeout
        # fires. Envoy flags that UT only (URX is set only when a retriable outcome finds
        # no retry left, RetryStatus::NoRetryLimitExceeded); petrel logs UT,URX. The same
        # rule adds URX to a no-healthy-host or overflow failure of a last retry.
        up = self.upstream()
        self.start(up, {'timeout': '0.5s', 'retry_policy': {
            'retry_on': '5xx', 'num_retries': 1, 'retry_back_off': FAST}})
        r, _ = self.timed_get('/fail/lr/1/503/delay/5000')
        self.assertEqual(r.status, 504)
        self.assertEqual(len(up.requests), 2)
        line = self.log_line(r'^504 \S+ /fail/lr/1/503/delay/5000 ')
        self.assertEqual(line.split()[1], 'UT', line)


class TimeoutHeaders(TimeoutCase):

    def test_x_envoy_upstream_rq_timeout_ms(self):
        # BUG / gap (filters/router.c): Envoy's router honours x-envoy-upstream-rq-timeout-ms
        # (a per-request route timeout, trusted from internal clients); petrel ignores it,
        # so this request waits for the route's 10 s timeout instead of 0.3 s.
        up = self.upstream()
        self.start(up, {'timeout': '10s'})
        r, took = self.timed_get('/delay/1500/hdr',
                                 headers={'x-envoy-upstream-rq-timeout-ms': '300'})
        self.assertEqual(r.status, 504)


if __name__ == '__main__':
    unittest.main()
