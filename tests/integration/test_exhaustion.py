"""Out of file descriptors: petrel started with a low RLIMIT_NOFILE and filled up with idle
client connections until it sheds one. Then every way petrel opens a connection has to fail
cleanly: an HTTP request that needs an upstream socket (plain and TLS cluster) gets a 503
with UF, a tcp_proxy session is closed with UF, active health checks skip their round
without failing healthy hosts; nothing crashes, the admin endpoint keeps answering, and
everything works again once clients leave. With two workers, a burst of connections far
beyond the limit is shed promptly without spinning, logged at most once a second.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_exhaustion.py -v
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
import certs as C  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer  # noqa: E402

NOFILE = 64
FILE_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog'
EMFILE_LINE = 'Too many open files: closing new connections'


def access_log(fmt):
    return [{'name': 'envoy.access_loggers.file', 'typed_config': {
        '@type': FILE_LOG, 'path': 'access.log', 'log_format': {'text_format_source': {
            'inline_string': fmt}}}}]


def lstat(port, name):
    return 'listener.127.0.0.1_%d.%s' % (port, name)


def cpu_seconds(pid):
    """User + system CPU time petrel has used so far."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def open_fds(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


def closed_by_peer(sock):
    """True if the peer closed (EOF or reset), False if the connection is still open."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b''
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


class Exhausted(object):
    """Connections opened to ``port`` until petrel sheds some: ``held`` are the ones it
    accepted and keeps open (petrel is then at its descriptor limit)."""

    def __init__(self, p, port, attempts=NOFILE + 40):
        self.held = []
        socks = [h.tcp_connect(port) for _ in range(attempts)]
        # Every attempt is either accepted (downstream_cx_total) or shed (overflow).
        h.wait_until(lambda: (p.stat(lstat(port, 'downstream_cx_total'), 0) +
                              p.stat(lstat(port, 'downstream_cx_overflow'), 0)) >= attempts,
                     15, message='petrel accepted or shed every connection')
        shed = 0
        for s in socks:
            if closed_by_peer(s):
                shed += 1
                s.close()
            else:
                self.held.append(s)
        self.shed = shed

    def top_up(self, p, port):
        """Takes any descriptor freed since (an admin connection that closed): petrel then
        has none left, checked twice 100 ms apart (no admin requests from here on)."""
        full = 0
        deadline = time.monotonic() + h.scaled(10)
        while full < 2:
            assert time.monotonic() < deadline, 'petrel never stayed at its limit'
            time.sleep(0.1)
            if open_fds(p.pid) >= NOFILE:
                full += 1
                continue
            full = 0
            s = h.tcp_connect(port)
            time.sleep(0.02)
            if closed_by_peer(s):
                s.close()
            else:
                self.held.append(s)

    def release(self, n=None):
        n = len(self.held) if n is None else n
        for s in self.held[:n]:
            s.close()
        del self.held[:n]


class FdLimitCase(unittest.TestCase):

    def start(self, clusters, listeners, concurrency=1):
        self.admin = h.free_port()
        self.p = h.Petrel(h.bootstrap(listeners, clusters, admin_port=self.admin),
                          nofile=NOFILE, concurrency=concurrency)
        self.p.start()
        self.started = time.monotonic()
        self.addCleanup(self.p.close)
        return self.p

    def http_listener(self, port, cluster):
        hcm = h.http_connection_manager(
            'ingress', h.route_config([h.vhost('all', ['*'], [
                h.route_prefix('/', cluster, timeout='3s')])]),
            access_log=access_log('%RESPONSE_CODE% %RESPONSE_FLAGS%\n'))
        return h.listener('http', port, [hcm])

    def access_lines(self):
        try:
            with open(self.p.path('access.log')) as f:
                return f.read().splitlines()
        except OSError:
            return []

    def assert_recovers(self, port, full):
        full.release()
        h.wait_until(lambda: self.p.stat(lstat(port, 'downstream_cx_active')) == 0, 10)
        r = h.http_request(port, 'GET', '/after')
        self.assertEqual(r.status, 200)

    def request_at_limit(self, cluster, **cluster_extra):
        """Fills petrel up, then sends a request on a connection it already accepted: the
        upstream socket cannot be made. Returns (response, petrel)."""
        port = h.free_port()
        p = self.start([cluster], [self.http_listener(port, cluster['name'])])
        full = Exhausted(p, port)
        self.assertGreater(full.shed, 0)
        self.assertGreater(len(full.held), 10)
        full.top_up(p, port)
        s = full.held[0]
        s.sendall(b'GET /at-limit HTTP/1.1\r\nhost: x\r\n\r\n')
        data = b''
        s.settimeout(h.scaled(10))
        while b'\r\n\r\n' not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        # The admin endpoint answers while petrel is at its limit.
        status, _, _ = p.admin_get('/ready')
        self.assertEqual(status, 200)
        self.assertTrue(p.alive())
        # Nothing is left counted for the connection that could not be made.
        name = cluster['name']
        self.assertEqual(p.stat('cluster.%s.upstream_cx_active' % name), 0)
        self.assertEqual(p.stat('cluster.%s.upstream_rq_pending_active' % name), 0)
        self.assert_recovers(port, full)
        return data, p


class UpstreamSocketTest(FdLimitCase):

    def test_http_plain_cluster(self):
        with HttpUpstream(name='a') as up:
            data, p = self.request_at_limit(h.cluster('a', [up.port]))
            self.assertTrue(data.startswith(b'HTTP/1.1 503'), data)
            self.assertIn(b'connection failure', data)
            h.wait_until(lambda: '503 UF' in self.access_lines(), 10)
            self.assertGreaterEqual(p.stat('cluster.a.upstream_cx_connect_fail'), 1)

    def test_http_tls_cluster(self):
        pki = C.standard_pki()
        ctx = C.server_context(pki['backend'])
        with HttpUpstream(name='a', ssl_context=ctx) as up:
            cluster = h.cluster('a', [up.port], transport_socket=C.upstream_tls(
                ca=pki['ca'], sni='backend.test'))
            data, p = self.request_at_limit(cluster)
            self.assertTrue(data.startswith(b'HTTP/1.1 503'), data)
            h.wait_until(lambda: '503 UF' in self.access_lines(), 10)
            # The TLS cluster works again afterwards (assert_recovers sent /after).
            self.assertGreaterEqual(len(up.requests), 1)

    def test_retries_do_not_help_but_do_not_hang(self):
        with HttpUpstream(name='a') as up:
            cluster = h.cluster('a', [up.port])
            port = h.free_port()
            hcm = h.http_connection_manager(
                'ingress', h.route_config([h.vhost('all', ['*'], [
                    h.route_prefix('/', 'a', timeout='0s', retry_policy={
                        'retry_on': 'connect-failure', 'num_retries': 2,
                        'retry_back_off': {'base_interval': '0.01s'}})])]))
            p = self.start([cluster], [h.listener('http', port, [hcm])])
            full = Exhausted(p, port)
            full.top_up(p, port)
            s = full.held[0]
            s.settimeout(h.scaled(10))
            # No route timeout: without a connection under way the request must still end.
            s.sendall(b'GET /retry HTTP/1.1\r\nhost: x\r\n\r\n')
            self.assertTrue(s.recv(4096).startswith(b'HTTP/1.1 503'))
            self.assertEqual(p.stat('cluster.a.upstream_rq_retry'), 2)
            self.assert_recovers(port, full)


class TcpProxyTest(FdLimitCase):

    def test_tcp_proxy_upstream_socket(self):
        with TcpEchoServer() as echo:
            http_port, tcp_port = h.free_ports(2)
            tcp = h.listener('tcp', tcp_port, [h.tcp_proxy(
                'tcp', 'echo', access_log=access_log('tcp %RESPONSE_FLAGS%\n'))])
            p = self.start([h.cluster('echo', [echo.port])],
                           [self.http_listener(http_port, 'echo'), tcp])
            full = Exhausted(p, http_port)
            # One descriptor free: the tcp_proxy connection is accepted, its upstream
            # socket cannot be made. (No admin requests from here on: they would take the
            # free descriptor for a moment.)
            full.release(1)
            h.wait_until(lambda: open_fds(p.pid) == NOFILE - 1, 10)
            with h.tcp_connect(tcp_port) as s:
                s.settimeout(h.scaled(10))
                try:
                    self.assertEqual(s.recv(1), b'')
                except ConnectionResetError:
                    pass
            h.wait_until(lambda: 'tcp UF' in self.access_lines(), 10)
            self.assertGreaterEqual(p.stat('cluster.echo.upstream_cx_connect_fail'), 1)
            self.assertEqual(p.stat('cluster.echo.upstream_cx_active'), 0)
            self.assertTrue(p.alive())
            full.release()
            h.wait_until(lambda: p.stat(lstat(http_port, 'downstream_cx_active')) == 0, 10)
            with h.tcp_connect(tcp_port) as s:
                s.sendall(b'again')
                self.assertEqual(h.recv_exact(s, 5), b'again')


class HealthCheckTest(FdLimitCase):

    def test_checks_skip_rounds_without_failing_hosts(self):
        with HttpUpstream(name='a') as up:
            check = {'timeout': '1s', 'interval': '0.05s', 'no_traffic_interval': '0.05s',
                     'unhealthy_threshold': 1, 'healthy_threshold': 1,
                     'reuse_connection': False, 'http_health_check': {'path': '/healthz'}}
            port = h.free_port()
            p = self.start([h.cluster('a', [up.port], health_checks=[check])],
                           [self.http_listener(port, 'a')])
            p.wait_stat('cluster.a.health_check.healthy', 1)
            full = Exhausted(p, port)
            # Each round needs a new connection (reuse_connection false), and each round's
            # connection frees its descriptor when it ends: keep clients coming until one of
            # them takes that descriptor between two rounds.
            before = p.stat('cluster.a.health_check.attempt')
            line = re.compile(r'health check: cluster a host .*: cannot open a connection')
            deadline = time.monotonic() + h.scaled(15)
            while not line.search(p.log()):
                self.assertLess(time.monotonic(), deadline, 'no skipped round logged')
                s = h.tcp_connect(port)
                time.sleep(0.01)
                if closed_by_peer(s):
                    s.close()
                else:
                    full.held.append(s)
            p.wait_stat('cluster.a.health_check.attempt', lambda v: v >= before + 5, 15)
            # petrel's own shortage is no verdict on the host.
            self.assertEqual(p.stat('cluster.a.health_check.healthy'), 1)
            self.assertEqual(p.stat('cluster.a.membership_healthy'), 1)
            self.assertTrue(p.alive())
            self.assert_recovers(port, full)
            success = p.stat('cluster.a.health_check.success')
            p.wait_stat('cluster.a.health_check.success', lambda v: v > success, 10)


class TwoWorkersTest(FdLimitCase):

    def test_burst_is_shed_without_spinning(self):
        with HttpUpstream(name='a') as up:
            port = h.free_port()
            p = self.start([h.cluster('a', [up.port])], [self.http_listener(port, 'a')],
                           concurrency=2)
            burst = 1500
            socks = []
            for _ in range(burst):
                s = socket.socket()
                s.setblocking(False)
                try:
                    s.connect(('127.0.0.1', port))
                except BlockingIOError:
                    pass
                socks.append(s)
            self.addCleanup(lambda: [s.close() for s in socks])
            # All but what fits under the limit are closed by petrel, none left hanging.
            h.wait_until(lambda: sum(closed_by_peer(s) for s in socks) >= burst - NOFILE,
                         30, interval=0.2, message='connections shed')
            # The admin endpoint answers at the limit.
            status, _, _ = p.admin_get('/ready')
            self.assertEqual(status, 200)
            # More clients keep coming: each is shed, and petrel does not spin.
            start, cpu0 = time.monotonic(), cpu_seconds(p.pid)
            for _ in range(100):
                with h.tcp_connect(port) as s:
                    s.settimeout(h.scaled(10))
                    try:
                        self.assertEqual(s.recv(1), b'')
                    except ConnectionResetError:
                        pass
                time.sleep(0.01)
            elapsed, cpu = time.monotonic() - start, cpu_seconds(p.pid) - cpu0
            # A spinning worker burns a whole core; shedding 100 connections costs little.
            self.assertLess(cpu, 0.5 * elapsed, 'petrel used %.2fs CPU in %.2fs' % (
                cpu, elapsed))
            lines = p.log().count(EMFILE_LINE)
            self.assertGreaterEqual(lines, 1)
            # Rate-limited to one a second, not one per connection shed.
            self.assertLessEqual(lines, time.monotonic() - self.started + 1)
            for s in socks:
                s.close()
            h.wait_until(lambda: p.stat(lstat(port, 'downstream_cx_active')) == 0, 15)
            r = h.http_request(port, 'GET', '/after')
            self.assertEqual(r.status, 200)


if __name__ == '__main__':
    unittest.main()
