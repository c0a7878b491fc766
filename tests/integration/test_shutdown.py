"""Graceful shutdown: SIGTERM/SIGINT close the listeners, let open connections finish (up to
--drain-time-s), then exit 0; a second signal stops at once. SIGHUP stops nothing.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_shutdown.py -v
"""

import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer  # noqa: E402

SIGNALS = (('SIGTERM', signal.SIGTERM), ('SIGINT', signal.SIGINT))


def proxy_config(port, admin, upstream_port):
    return h.bootstrap([h.listener('tcp', port, [h.tcp_proxy('tcp', 'up')])],
                       [h.cluster('up', [upstream_port])], admin_port=admin)


def ping(test, sock, data=b'ping'):
    sock.sendall(data)
    test.assertEqual(h.recv_exact(sock, len(data)), data)


def assert_refused(test, port):
    """The listener is closed: wait until nothing LISTENs, then a connect is refused."""
    h.wait_until(lambda: not h.port_listening(port), 10,
                 message='port %d still listening during the drain' % port)
    with test.assertRaises(ConnectionRefusedError):
        socket.create_connection(('127.0.0.1', port), timeout=h.scaled(5)).close()


def closed_by_peer(sock, timeout=5):
    sock.settimeout(h.scaled(timeout))
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


class ShutdownTest(unittest.TestCase):

    def test_signal_without_connections_exits_zero(self):
        for name, sig in SIGNALS:
            with self.subTest(name), TcpEchoServer() as echo:
                port, admin = h.free_ports(2)
                with h.Petrel(proxy_config(port, admin, echo.port), concurrency=2) as p:
                    p.signal(sig)
                    self.assertEqual(p.wait(10), 0)
                    self.assertIn('caught %s' % name, p.log())
                    self.assertIn('drain complete', p.log())

    def test_drain_waits_for_open_connection(self):
        for name, sig in SIGNALS:
            with self.subTest(name), TcpEchoServer() as echo:
                port, admin = h.free_ports(2)
                with h.Petrel(proxy_config(port, admin, echo.port), concurrency=2) as p:
                    with h.tcp_connect(port) as s:
                        ping(self, s)
                        p.signal(sig)
                        p.wait_log('draining')
                        assert_refused(self, port)
                        # The open connection still relays, both ways, for a while.
                        for i in range(5):
                            ping(self, s, b'still here %d' % i)
                            time.sleep(0.05)
                        self.assertTrue(p.alive())
                        status, _, body = p.admin_get('/ready')
                        self.assertEqual((status, body), (503, b'DRAINING\n'))
                        # A clean end of the last connection ends petrel.
                        h.shutdown_write(s)
                        self.assertEqual(h.recv_until_eof(s), b'')
                    self.assertEqual(p.wait(10), 0)
                    self.assertIn('drain complete', p.log())

    def test_drain_time_limits_the_wait(self):
        for name, sig in SIGNALS:
            with self.subTest(name), TcpEchoServer() as echo:
                port, admin = h.free_ports(2)
                cfg = proxy_config(port, admin, echo.port)
                with h.Petrel(cfg, extra_args=['--drain-time-s', '1']) as p:
                    with h.tcp_connect(port) as s:
                        ping(self, s)
                        start = time.monotonic()
                        p.signal(sig)
                        rc = p.wait(20)
                        elapsed = time.monotonic() - start
                        self.assertEqual(rc, 0)
                        # Not before the drain time (a lower bound only; no tight timing).
                        self.assertGreaterEqual(elapsed, 0.9)
                        # The connection that never closed was closed by petrel.
                        self.assertTrue(closed_by_peer(s))
                    self.assertIn('drain time over with 1 connections open', p.log())
                self.assertTrue(echo.wait_results(1))

    def test_second_signal_stops_at_once(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, echo.port), concurrency=2) as p:
                socks = [h.tcp_connect(port) for _ in range(4)]
                try:
                    for s in socks:
                        ping(self, s)
                    p.signal(signal.SIGTERM)          # default drain time: 600 s
                    p.wait_log('draining')
                    self.assertTrue(p.alive())
                    p.signal(signal.SIGTERM)
                    self.assertEqual(p.wait(10), 0)
                    for s in socks:
                        self.assertTrue(closed_by_peer(s))
                finally:
                    for s in socks:
                        s.close()

    def test_sigterm_after_drain_listeners_still_drains(self):
        # The usual preStop sequence: POST /drain_listeners, then SIGTERM. The SIGTERM must
        # not count as the "second signal" that cuts open connections.
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, echo.port)) as p:
                with h.tcp_connect(port) as s:
                    ping(self, s)
                    self.assertEqual(p.admin_post('/drain_listeners')[0], 200)
                    assert_refused(self, port)
                    p.signal(signal.SIGTERM)
                    p.wait_log('caught SIGTERM')
                    time.sleep(0.2)
                    self.assertTrue(p.alive())
                    ping(self, s, b'after SIGTERM')
                    h.shutdown_write(s)
                    self.assertEqual(h.recv_until_eof(s), b'')
                self.assertEqual(p.wait(10), 0)

    def test_sigint_then_sigterm(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, echo.port)) as p:
                with h.tcp_connect(port) as s:
                    ping(self, s)
                    p.signal(signal.SIGINT)
                    p.wait_log('draining')
                    p.signal(signal.SIGTERM)
                    self.assertEqual(p.wait(10), 0)

    def test_drain_with_busy_connection(self):
        # A connection in the middle of a transfer when the drain time runs out: petrel
        # still exits 0 and frees everything (the sanitizer build checks for leaks).
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            cfg = proxy_config(port, admin, echo.port)
            with h.Petrel(cfg, concurrency=2, extra_args=['--drain-time-s', '1']) as p:
                with h.tcp_connect(port) as s:
                    # Fill the pipes: send without reading the echo.
                    s.setblocking(False)
                    sent = 0
                    try:
                        while sent < 64 << 20:
                            sent += s.send(h.pattern_bytes(sent, 65536))
                    except BlockingIOError:
                        pass
                    s.setblocking(True)
                    p.signal(signal.SIGTERM)
                    self.assertEqual(p.wait(20), 0)
                    self.assertTrue(closed_by_peer(s, timeout=10))

    def test_drain_ends_a_connection_still_connecting(self):
        # The upstream never answers the connect (its accept queue is full); when the drain
        # time is over the half-open pair is torn down cleanly.
        hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        hole.bind(('127.0.0.1', 0))
        hole.listen(0)
        filler = socket.create_connection(hole.getsockname(), timeout=5)
        try:
            port, admin = h.free_ports(2)
            cfg = h.bootstrap([h.listener('tcp', port, [h.tcp_proxy('tcp', 'up')])],
                              [h.cluster('up', [hole.getsockname()[1]], '60s')],
                              admin_port=admin)
            with h.Petrel(cfg, extra_args=['--drain-time-s', '1']) as p:
                with h.tcp_connect(port) as s:
                    s.sendall(b'held while connecting')
                    p.wait_stat('cluster.up.upstream_cx_active', 1)
                    p.signal(signal.SIGTERM)
                    self.assertEqual(p.wait(20), 0)
                    self.assertTrue(closed_by_peer(s))
        finally:
            filler.close()
            hole.close()

    def test_connection_accepted_during_drain_window_is_served(self):
        # Connections already accepted when the signal comes are drained, not dropped.
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, echo.port), concurrency=2) as p:
                socks = [h.tcp_connect(port) for _ in range(10)]
                try:
                    for s in socks:
                        ping(self, s)
                    p.signal(signal.SIGTERM)
                    assert_refused(self, port)
                    for i, s in enumerate(socks):
                        ping(self, s, b'conn %d' % i)
                    for s in socks:
                        h.shutdown_write(s)
                        self.assertEqual(h.recv_until_eof(s), b'')
                finally:
                    for s in socks:
                        s.close()
                self.assertEqual(p.wait(10), 0)



def http_config(port, admin, upstream_port):
    hcm = h.http_connection_manager('ingress', h.route_config([h.vhost('all', ['*'], [
        h.route_prefix('/', 'up', timeout='5s')])]))
    return h.bootstrap([h.listener('http', port, [hcm])], [h.cluster('up', [upstream_port])],
                       admin_port=admin)


class HttpDrainTest(unittest.TestCase):
    """A drain never loses a request written on an established connection: idle keep-alive
    connections stay open for the drain time (a close could cross a request on its way), a
    request that arrives is answered with "connection: close", and connections still idle
    when the drain time ends are closed then."""

    def test_keepalive_load_loses_nothing(self):
        clients, results = 20, []
        lock = threading.Lock()
        with HttpUpstream(name='up') as up:
            port, admin = h.free_ports(2)
            with h.Petrel(http_config(port, admin, up.port), concurrency=2,
                          extra_args=['--drain-time-s', '20']) as p:
                started = threading.Barrier(clients + 1)
                signalled = threading.Event()

                def client(i):
                    sent = answered = after_signal = 0
                    lost = None
                    closed_by_server = False
                    with h.HttpClientConn(port) as c:
                        started.wait()
                        # Back-to-back requests with short pauses, so the signal finds some
                        # connections idle and some busy, until petrel says close.
                        for k in range(10000):
                            try:
                                sent += 1
                                r = c.request('GET', '/echo/%d/%d' % (i, k))
                            except (OSError, h.ConnectionClosed, h.IncompleteResponse) as e:
                                lost = repr(e)
                                break
                            answered += 1
                            if signalled.is_set():
                                after_signal += 1
                            if r.will_close:
                                closed_by_server = True
                                break
                            time.sleep(0.002 * (k % 5))
                    with lock:
                        results.append((i, sent, answered, after_signal, closed_by_server, lost))

                threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
                for t in threads:
                    t.start()
                started.wait()
                time.sleep(0.3)
                p.signal(signal.SIGTERM)
                signalled.set()
                for t in threads:
                    t.join(h.scaled(30))
                # Every client ended on petrel's "connection: close", never on a request
                # that went unanswered.
                self.assertEqual(len(results), clients)
                for i, sent, answered, after, closed, lost in results:
                    self.assertIsNone(lost, 'client %d lost a request after %d answers' % (
                        i, answered))
                    self.assertEqual(sent, answered)
                    self.assertTrue(closed)
                # With every connection closed, the drain completes before its time.
                self.assertEqual(p.wait(15), 0)
                self.assertIn('drain complete: no open connections', p.log())

    def test_idle_connection_answered_then_closed(self):
        with HttpUpstream(name='up') as up:
            port, admin = h.free_ports(2)
            with h.Petrel(http_config(port, admin, up.port),
                          extra_args=['--drain-time-s', '20']) as p:
                with h.HttpClientConn(port) as c:
                    self.assertEqual(c.request('GET', '/before').status, 200)
                    p.signal(signal.SIGTERM)
                    p.wait_log('draining')
                    time.sleep(0.3)
                    # Still open after the signal; the next request is answered, and closes.
                    self.assertTrue(p.alive())
                    r = c.request('GET', '/after')
                    self.assertEqual(r.status, 200)
                    self.assertTrue(r.will_close)
                    self.assertEqual(r.get('connection'), 'close')
                    self.assertTrue(c.wait_closed(h.scaled(5)))
                self.assertEqual(p.wait(15), 0)

    def test_idle_connection_closed_when_drain_time_ends(self):
        with HttpUpstream(name='up') as up:
            port, admin = h.free_ports(2)
            with h.Petrel(http_config(port, admin, up.port),
                          extra_args=['--drain-time-s', '1']) as p:
                with h.HttpClientConn(port) as c:
                    self.assertEqual(c.request('GET', '/before').status, 200)
                    start = time.monotonic()
                    p.signal(signal.SIGTERM)
                    self.assertEqual(p.wait(20), 0)
                    self.assertGreaterEqual(time.monotonic() - start, 0.9)
                    self.assertTrue(closed_by_peer(c.sock))
                self.assertIn('drain time over with 1 connections open', p.log())


class SighupTest(unittest.TestCase):
    """SIGHUP is logged and ignored, as Envoy does: it used to end petrel (exit 129) with
    requests in flight and no word in the log."""

    def test_sighup_under_load_is_ignored(self):
        with HttpUpstream(name='up') as up:
            port, admin = h.free_ports(2)
            hcm = h.http_connection_manager('ingress', h.route_config([
                h.vhost('all', ['*'], [h.route_prefix('/', 'up', timeout='10s')])]))
            cfg = h.bootstrap([h.listener('http', port, [hcm])], [h.cluster('up', [up.port])],
                              admin_port=admin)
            with h.Petrel(cfg, concurrency=2) as p:
                stop = threading.Event()
                statuses = {'keep-alive': [], 'new': []}
                errors = []

                def keep_alive():
                    # One connection for every request: it must never be closed under us.
                    try:
                        with h.HttpClientConn(port) as c:
                            while not stop.is_set():
                                statuses['keep-alive'].append(c.request('GET', '/delay/20').status)
                    except Exception as e:  # noqa: BLE001 (reported below)
                        errors.append('keep-alive: %r' % e)

                def new_connections():
                    try:
                        while not stop.is_set():
                            statuses['new'].append(h.http_request(port, 'GET', '/delay/5').status)
                    except Exception as e:  # noqa: BLE001
                        errors.append('new connections: %r' % e)

                threads = [threading.Thread(target=keep_alive),
                           threading.Thread(target=new_connections),
                           threading.Thread(target=new_connections)]
                for t in threads:
                    t.start()
                try:
                    def answered(n):
                        return lambda: errors or all(len(v) >= n for v in statuses.values())
                    h.wait_until(answered(5), 20, message='no load before the signal')
                    for i in range(1, 4):
                        # A request is in flight on the keep-alive connection most of the time.
                        p.signal(signal.SIGHUP)
                        h.wait_until(lambda: p.log().count('caught SIGHUP') >= i, 10)
                        seen = min(len(v) for v in statuses.values())
                        h.wait_until(answered(seen + 5), 20,
                                     message='requests stopped after SIGHUP %d' % i)
                finally:
                    stop.set()
                    for t in threads:
                        t.join(h.scaled(30))
                self.assertEqual(errors, [])
                for kind, got in statuses.items():
                    self.assertEqual(set(got), {200}, kind)
                self.assertTrue(p.alive())
                # Fresh connections are still accepted, and the server is still LIVE.
                self.assertEqual(h.http_request(port, 'GET', '/after').status, 200)
                self.assertEqual(p.admin_get('/ready')[0], 200)
                lines = [l for l in p.log().splitlines() if 'SIGHUP' in l]
                self.assertEqual(len(lines), 3, lines)
                for line in lines:
                    self.assertRegex(line, r'\[main\]\[info\] caught SIGHUP: ignored \(')
                self.assertEqual(p.stop(), 0)


if __name__ == '__main__':
    unittest.main()
