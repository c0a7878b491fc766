"""TCP proxy end to end: bulk relaying (byte-exact, both directions), many connections,
connect failures and timeouts with max_connect_attempts, idle timeout, and the listener /
cluster / tcp stats that describe all of it.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_tcp_proxy.py -v
"""

import os
import re
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import TcpEchoServer, TcpSinkServer, TcpSourceServer  # noqa: E402

MiB = 1 << 20
BULK = 64 * MiB


def listener_stat(port, name):
    """Envoy names listener stats after the address: listener.127.0.0.1_<port>.<name>."""
    return 'listener.127.0.0.1_%d.%s' % (port, name)


def proxy_config(port, admin, endpoints, cluster='up', connect_timeout='1s', cluster_extra=None,
                 **tcp_extra):
    """One listener with a tcp_proxy (stat prefix "tcp") to one STATIC cluster."""
    return h.bootstrap([h.listener('tcp', port, [h.tcp_proxy('tcp', cluster, **tcp_extra)])],
                       [h.cluster(cluster, endpoints, connect_timeout, **(cluster_extra or {}))],
                       admin_port=admin)



class Blackhole:
    """A loopback listener whose accept queue is full, so a connect to it never completes.

    A listening socket with backlog 0 queues one connection; with that one queued (and never
    accepted) the kernel drops every further SYN, so the next connect stays in SYN_SENT until
    the connecting side gives up: a deterministic connect timeout without any routing tricks.
    """

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(('127.0.0.1', 0))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        self.fillers = []
        # Fill the queue, then prove a further connect really hangs.
        self.fillers.append(socket.create_connection(('127.0.0.1', self.port), timeout=5))
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.setblocking(False)
        self.fillers.append(probe)
        if probe.connect_ex(('127.0.0.1', self.port)) == 0:
            raise AssertionError('blackhole accepted a second connection')
        import select
        _, w, _ = select.select([], [probe], [], 0.3)
        if w and probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            raise AssertionError('blackhole did not hang a connect (accept queue not full)')

    def close(self):
        for s in self.fillers:
            s.close()
        self.lsock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def echo_transfer(port, n, offset=0, chunk=256 * 1024):
    """Send n pattern bytes while concurrently reading the echo; half-close after sending and
    read to EOF. Returns (sha256 of what came back, its length)."""
    sock = h.tcp_connect(port, timeout=60)
    err = []

    def sender():
        try:
            for piece in h.pattern_chunks(n, chunk, offset):
                sock.sendall(piece)
            h.shutdown_write(sock)
        except Exception as e:  # reported by the caller
            err.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    got = h.StreamSha256()
    try:
        while True:
            data = sock.recv(MiB)
            if not data:
                break
            got.update(data)
    finally:
        t.join(h.scaled(60))
        sock.close()
    if err:
        raise err[0]
    return got.hexdigest(), got.n


def abort_socket(sock):
    """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    sock.close()


def assert_closed_by_peer(test, sock, timeout=5):
    """The peer (petrel) closes `sock` (EOF or reset) within `timeout` (scaled), having sent
    nothing."""
    sock.settimeout(h.scaled(timeout))
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return
    except socket.timeout:
        test.fail('petrel did not close the client connection within %ss' % h.scaled(timeout))
    test.assertEqual(data, b'', 'expected EOF, got data')


class BulkTransferTest(unittest.TestCase):
    """64 MiB each way through one connection, byte-exact, with exact byte stats."""

    def check_echo(self, concurrency):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [echo.port]), concurrency=concurrency) as p:
                sha, n = echo_transfer(port, BULK)
                self.assertEqual(n, BULK)
                self.assertEqual(sha, h.sha256_pattern(BULK))
                res = echo.wait_results(1)
                self.assertEqual(res[0]['bytes'], BULK)
                self.assertTrue(res[0]['peer_fin'], 'the client FIN did not reach upstream')
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                p.wait_stat('cluster.up.upstream_cx_active', 0)
                st = p.stats()
                self.assertEqual(st[listener_stat(port, 'downstream_cx_total')], 1)
                self.assertEqual(st['cluster.up.upstream_cx_total'], 1)
                self.assertEqual(st['cluster.up.upstream_cx_tx_bytes_total'], BULK)
                self.assertEqual(st['cluster.up.upstream_cx_rx_bytes_total'], BULK)
                self.assertEqual(st['cluster.up.upstream_cx_connect_fail'], 0)
                self.assertEqual(st['tcp.tcp.downstream_cx_total'], 1)
                self.assertEqual(st['tcp.tcp.downstream_cx_rx_bytes_total'], BULK)
                self.assertEqual(st['tcp.tcp.downstream_cx_tx_bytes_total'], BULK)

    def test_echo_64mib_both_ways_concurrency_1(self):
        self.check_echo(1)

    def test_echo_64mib_both_ways_concurrency_2(self):
        self.check_echo(2)

    def test_upload_64mib_to_sink(self):
        with TcpSinkServer() as sink:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [sink.port]), concurrency=2) as p:
                with h.tcp_connect(port, timeout=60) as s:
                    for piece in h.pattern_chunks(BULK):
                        s.sendall(piece)
                    h.shutdown_write(s)
                    res = sink.wait_results(1, timeout=60)
                    # The sink closes after our FIN: petrel passes that on as EOF.
                    self.assertEqual(h.recv_until_eof(s), b'')
                self.assertEqual(res[0]['bytes'], BULK)
                self.assertEqual(res[0]['sha256'], h.sha256_pattern(BULK))
                self.assertTrue(res[0]['eof'])
                self.assertIsNone(res[0]['error'])
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                st = p.stats()
                self.assertEqual(st['cluster.up.upstream_cx_tx_bytes_total'], BULK)
                self.assertEqual(st['cluster.up.upstream_cx_rx_bytes_total'], 0)
                self.assertEqual(st['tcp.tcp.downstream_cx_rx_bytes_total'], BULK)
                self.assertEqual(st['tcp.tcp.downstream_cx_tx_bytes_total'], 0)
                self.assertEqual(st['cluster.up.upstream_cx_active'], 0)

    def test_download_64mib_from_source(self):
        with TcpSourceServer(BULK) as src:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [src.port]), concurrency=2) as p:
                with h.tcp_connect(port, timeout=60) as s:
                    got = h.StreamSha256()
                    while True:
                        data = s.recv(MiB)
                        if not data:
                            break
                        got.update(data)
                    self.assertEqual(got.n, BULK)
                    self.assertEqual(got.hexdigest(), h.sha256_pattern(BULK))
                # Our close (FIN) reaches the source, which was waiting for it.
                res = src.wait_results(1)
                self.assertEqual(res[0]['sent'], BULK)
                self.assertIsNone(res[0]['send_error'])
                self.assertTrue(res[0]['peer_fin'])
                self.assertEqual(res[0]['received'], 0)
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                st = p.stats()
                self.assertEqual(st['cluster.up.upstream_cx_rx_bytes_total'], BULK)
                self.assertEqual(st['cluster.up.upstream_cx_tx_bytes_total'], 0)
                self.assertEqual(st['tcp.tcp.downstream_cx_tx_bytes_total'], BULK)
                self.assertEqual(st['cluster.up.upstream_cx_active'], 0)

    def test_small_buffer_limits_still_byte_exact(self):
        # 16 KiB watermarks on both sides: flow control pauses and resumes all the time.
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            cfg = proxy_config(port, admin, [echo.port],
                               cluster_extra={'per_connection_buffer_limit_bytes': 16384})
            cfg['static_resources']['listeners'][0]['per_connection_buffer_limit_bytes'] = 16384
            with h.Petrel(cfg) as p:
                n = 16 * MiB
                sha, got = echo_transfer(port, n, offset=12345, chunk=100000)
                self.assertEqual(got, n)
                self.assertEqual(sha, h.sha256_pattern(n, 12345))
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                self.assertEqual(p.stat('cluster.up.upstream_cx_tx_bytes_total'), n)


class ManyConnectionsTest(unittest.TestCase):

    def test_50_concurrent_connections_1mib_each(self):
        count, size = 50, MiB
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [echo.port]), concurrency=2) as p:
                results = [None] * count

                def one(i):
                    try:
                        # Distinct data per connection, so crossed streams are detected.
                        results[i] = echo_transfer(port, size, offset=i * size, chunk=64 * 1024)
                    except Exception as e:
                        results[i] = e

                threads = [threading.Thread(target=one, args=(i,), daemon=True)
                           for i in range(count)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(h.scaled(60))
                for i, r in enumerate(results):
                    self.assertIsInstance(r, tuple, 'connection %d: %r' % (i, r))
                    self.assertEqual(r, (h.sha256_pattern(size, i * size), size),
                                     'connection %d corrupted' % i)
                self.assertEqual(len(echo.wait_results(count)), count)
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                p.wait_stat('cluster.up.upstream_cx_active', 0)
                st = p.stats()
                self.assertEqual(st[listener_stat(port, 'downstream_cx_total')], count)
                self.assertEqual(st['tcp.tcp.downstream_cx_total'], count)
                self.assertEqual(st['cluster.up.upstream_cx_total'], count)
                self.assertEqual(st['cluster.up.upstream_cx_tx_bytes_total'], count * size)
                self.assertEqual(st['cluster.up.upstream_cx_rx_bytes_total'], count * size)


class ConnectFailureTest(unittest.TestCase):
    """Hosts that refuse or never answer. With --concurrency 1 round robin starts at the first
    endpoint, so "the first host is dead" is deterministic."""

    def test_connect_failure_falls_through_to_next_host(self):
        dead = h.dead_port()
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            cfg = proxy_config(port, admin, [dead, echo.port], max_connect_attempts=2)
            with h.Petrel(cfg) as p:
                with h.tcp_connect(port) as s:
                    s.sendall(b'hello through the second host')
                    self.assertEqual(h.recv_exact(s, 29), b'hello through the second host')
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                st = p.stats()
                self.assertEqual(st['cluster.up.upstream_cx_connect_fail'], 1)
                self.assertEqual(st['cluster.up.upstream_cx_total'], 2)
                self.assertEqual(st['cluster.up.upstream_cx_connect_attempts_exceeded'], 0)
                self.assertEqual(st['cluster.up.upstream_cx_connect_timeout'], 0)
                self.assertEqual(echo.accepted, 1)
                # /clusters charges the failure to the dead host only.
                _, _, body = p.admin_get('/clusters')
                text = body.decode()
                self.assertIn('up::127.0.0.1:%d::cx_connect_fail::1' % dead, text)
                self.assertIn('up::127.0.0.1:%d::cx_connect_fail::0' % echo.port, text)

    def test_one_attempt_dead_first_host_closes_client(self):
        dead = h.dead_port()
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            cfg = proxy_config(port, admin, [dead, echo.port], max_connect_attempts=1)
            with h.Petrel(cfg) as p:
                with h.tcp_connect(port) as s:
                    s.sendall(b'lost')
                    assert_closed_by_peer(self, s)
                p.wait_stat('cluster.up.upstream_cx_connect_attempts_exceeded', 1)
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                st = p.stats()
                self.assertEqual(st['cluster.up.upstream_cx_connect_fail'], 1)
                self.assertEqual(st['cluster.up.upstream_cx_active'], 0)
                self.assertEqual(echo.accepted, 0)
                # Only that connection suffered: the next one goes to the live host.
                with h.tcp_connect(port) as s:
                    s.sendall(b'next')
                    self.assertEqual(h.recv_exact(s, 4), b'next')

    def test_connect_timeout_is_counted_and_client_closed(self):
        with Blackhole() as hole:
            port, admin = h.free_ports(2)
            cfg = proxy_config(port, admin, [hole.port], connect_timeout='0.25s')
            with h.Petrel(cfg) as p:
                with h.tcp_connect(port) as s:
                    s.sendall(b'waiting')
                    assert_closed_by_peer(self, s, timeout=10)
                p.wait_stat('cluster.up.upstream_cx_connect_timeout', 1)
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                st = p.stats()
                self.assertEqual(st['cluster.up.upstream_cx_connect_fail'], 1)
                self.assertEqual(st['cluster.up.upstream_cx_connect_attempts_exceeded'], 1)
                self.assertEqual(st['cluster.up.upstream_cx_active'], 0)

    def test_connect_timeout_then_next_host(self):
        with Blackhole() as hole, TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            cfg = proxy_config(port, admin, [hole.port, echo.port], connect_timeout='0.25s',
                               max_connect_attempts=2)
            with h.Petrel(cfg) as p:
                with h.tcp_connect(port, timeout=10) as s:
                    # Sent while petrel is still waiting on the blackhole: held, then relayed.
                    s.sendall(b'early bytes')
                    self.assertEqual(h.recv_exact(s, 11), b'early bytes')
                st = p.stats()
                self.assertEqual(st['cluster.up.upstream_cx_connect_timeout'], 1)
                self.assertEqual(st['cluster.up.upstream_cx_connect_fail'], 1)
                self.assertEqual(st['cluster.up.upstream_cx_connect_attempts_exceeded'], 0)

    def test_bulk_sent_during_slow_connect_arrives_intact(self):
        # The client pushes 8 MiB while petrel waits on the first (hanging) host: petrel
        # holds at most its buffer limit, then passes everything on once connected.
        n = 8 * MiB
        with Blackhole() as hole, TcpSinkServer(reply=True) as sink:
            port, admin = h.free_ports(2)
            cfg = proxy_config(port, admin, [hole.port, sink.port], connect_timeout='0.5s',
                               max_connect_attempts=2)
            with h.Petrel(cfg) as p:
                with h.tcp_connect(port, timeout=30) as s:
                    for piece in h.pattern_chunks(n):
                        s.sendall(piece)
                    h.shutdown_write(s)
                    reply = h.recv_until_eof(s)
                self.assertEqual(reply, b'%d %s\n' % (n, h.sha256_pattern(n).encode()))
                self.assertEqual(p.stat('cluster.up.upstream_cx_connect_timeout'), 1)
                self.assertEqual(p.stat('cluster.up.upstream_cx_tx_bytes_total'), n)

    def test_client_resets_while_connecting(self):
        with Blackhole() as hole:
            port, admin = h.free_ports(2)
            cfg = proxy_config(port, admin, [hole.port], connect_timeout='30s')
            with h.Petrel(cfg) as p:
                s = h.tcp_connect(port)
                s.sendall(b'x')
                p.wait_stat('cluster.up.upstream_cx_active', 1)
                abort_socket(s)
                # The pending upstream connect is abandoned along with the client, long
                # before the 30 s connect timeout.
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                p.wait_stat('cluster.up.upstream_cx_active', 0)
                self.assertEqual(p.stat('cluster.up.upstream_cx_connect_timeout'), 0)

    def test_upstream_down_entirely(self):
        dead = h.dead_port()
        port, admin = h.free_ports(2)
        cfg = proxy_config(port, admin, [dead], max_connect_attempts=3)
        with h.Petrel(cfg) as p:
            for i in range(3):
                with h.tcp_connect(port) as s:
                    assert_closed_by_peer(self, s)
            p.wait_stat('cluster.up.upstream_cx_connect_attempts_exceeded', 3)
            p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
            st = p.stats()
            # Three attempts per client, all on the only (dead) host.
            self.assertEqual(st['cluster.up.upstream_cx_connect_fail'], 9)
            self.assertEqual(st['cluster.up.upstream_cx_active'], 0)
            self.assertEqual(st[listener_stat(port, 'downstream_cx_total')], 3)
            self.assertTrue(p.alive())

    def test_empty_cluster_closes_client(self):
        port, admin = h.free_ports(2)
        cfg = proxy_config(port, admin, [])
        with h.Petrel(cfg) as p:
            with h.tcp_connect(port) as s:
                assert_closed_by_peer(self, s)
            p.wait_stat('cluster.up.upstream_cx_none_healthy', 1)
            p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)


class FdExhaustionTest(unittest.TestCase):

    def open_fds(self, pid):
        return len(os.listdir('/proc/%d/fd' % pid))

    def test_out_of_descriptors(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [echo.port])) as p:
                # Count the idle descriptors (the fewest seen: the readiness probe's admin
                # connection may still be closing), then allow exactly two proxied
                # connections (two descriptors each).
                samples = []
                for _ in range(10):
                    samples.append(self.open_fds(p.pid))
                    time.sleep(0.03)
                nfd = min(samples)
                old = resource.prlimit(p.pid, resource.RLIMIT_NOFILE)
                resource.prlimit(p.pid, resource.RLIMIT_NOFILE, (nfd + 4, old[1]))
                held = []
                try:
                    for i in range(2):
                        held.append(h.tcp_connect(port))
                        held[-1].sendall(b'held %d' % i)
                        self.assertEqual(h.recv_exact(held[-1], 6), b'held %d' % i)
                    start = time.monotonic()
                    # Further clients are turned away at once instead of hanging in the
                    # accept queue while petrel spins on accept.
                    for _ in range(5):
                        with h.tcp_connect(port) as s:
                            assert_closed_by_peer(self, s)
                    # An admin request waits for a descriptor rather than failing.
                    answer = []
                    t = threading.Thread(target=lambda: answer.append(
                        h.http_request(admin, 'GET', '/ready', timeout=20).status))
                    t.start()
                    time.sleep(0.3)
                    # The connections already open keep working.
                    for i, s in enumerate(held):
                        s.sendall(b'still %d' % i)
                        self.assertEqual(h.recv_exact(s, 7), b'still %d' % i)
                    warnings = p.log().count('Too many open files')
                    elapsed = time.monotonic() - start
                finally:
                    resource.prlimit(p.pid, resource.RLIMIT_NOFILE, old)
                    for s in held:
                        s.close()
                t.join(h.scaled(20))
                self.assertEqual(answer, [200])
                # Rate-limited: about one line a second, not one per accept attempt.
                self.assertGreaterEqual(warnings, 1)
                self.assertLessEqual(warnings, elapsed + 2)
                self.assertEqual(p.stat(listener_stat(port, 'downstream_cx_overflow')), 5)
                with h.tcp_connect(port) as s:
                    s.sendall(b'recovered')
                    self.assertEqual(h.recv_exact(s, 9), b'recovered')


class IdleTimeoutTest(unittest.TestCase):

    def test_idle_pair_closed_and_counted(self):
        with TcpSinkServer() as sink:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [sink.port], idle_timeout='1s')) as p:
                with h.tcp_connect(port) as s:
                    s.sendall(b'then silence')
                    start = time.monotonic()
                    assert_closed_by_peer(self, s, timeout=10)
                    elapsed = time.monotonic() - start
                # Not before the timeout (a lower bound only: machines are noisy).
                self.assertGreaterEqual(elapsed, 0.9)
                p.wait_stat('tcp.tcp.idle_timeout', 1)
                res = sink.wait_results(1)
                self.assertEqual(res[0]['bytes'], 12)
                self.assertTrue(res[0]['eof'], 'upstream side not closed by the idle timeout')
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                p.wait_stat('cluster.up.upstream_cx_active', 0)

    def test_activity_keeps_the_pair_open(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [echo.port], idle_timeout='2s')) as p:
                with h.tcp_connect(port) as s:
                    # 3 s of traffic, a byte every 0.2 s: longer than the timeout in total.
                    for i in range(15):
                        s.sendall(b'%c' % (65 + i))
                        self.assertEqual(h.recv_exact(s, 1), b'%c' % (65 + i))
                        time.sleep(0.2)
                    self.assertEqual(p.stat('tcp.tcp.idle_timeout'), 0)
                    h.shutdown_write(s)
                    self.assertEqual(h.recv_until_eof(s), b'')

    def test_idle_timeout_zero_disables(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [echo.port], idle_timeout='0s')) as p:
                with h.tcp_connect(port) as s:
                    s.sendall(b'a')
                    self.assertEqual(h.recv_exact(s, 1), b'a')
                    time.sleep(1.5)
                    s.sendall(b'b')
                    self.assertEqual(h.recv_exact(s, 1), b'b')
                self.assertEqual(p.stat('tcp.tcp.idle_timeout'), 0)


class StatsTest(unittest.TestCase):

    def test_active_gauges_follow_open_connections(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [echo.port])) as p:
                socks = [h.tcp_connect(port) for _ in range(3)]
                try:
                    for i, s in enumerate(socks):
                        s.sendall(b'%d' % i)
                        self.assertEqual(h.recv_exact(s, 1), b'%d' % i)
                    st = p.stats()
                    self.assertEqual(st[listener_stat(port, 'downstream_cx_active')], 3)
                    self.assertEqual(st['cluster.up.upstream_cx_active'], 3)
                    self.assertEqual(st[listener_stat(port, 'downstream_cx_total')], 3)
                    self.assertEqual(st['cluster.up.upstream_cx_total'], 3)
                    _, _, body = p.admin_get('/clusters')
                    self.assertIn('up::127.0.0.1:%d::cx_active::3' % echo.port, body.decode())
                finally:
                    for s in socks:
                        s.close()
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                p.wait_stat('cluster.up.upstream_cx_active', 0)
                st = p.stats()
                self.assertEqual(st[listener_stat(port, 'downstream_cx_destroy')], 3)
                self.assertEqual(st['cluster.up.upstream_cx_destroy'], 3)
                self.assertEqual(st['tcp.tcp.downstream_cx_total'], 3)
                self.assertEqual(st['cluster.up.upstream_cx_rx_bytes_total'], 3)
                self.assertEqual(st['cluster.up.upstream_cx_tx_bytes_total'], 3)


class AccessLogTest(unittest.TestCase):

    def _log_config(self, port, admin, endpoints, path, **extra):
        return proxy_config(port, admin, endpoints, access_log=[{
            'name': 'envoy.access_loggers.file',
            'typed_config': {
                '@type': 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog',
                'path': path,
                'log_format': {'text_format_source': {'inline_string':
                    'TCP %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %BYTES_RECEIVED% %BYTES_SENT% '
                    '%RESPONSE_FLAGS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\n'}}}}], **extra)

    def _wait_line(self, path, prefix):
        def ready():
            try:
                with open(path) as f:
                    return [l for l in f.read().splitlines() if l.startswith(prefix)]
            except FileNotFoundError:
                return []
        h.wait_until(ready, timeout=10, message='access log line %r' % prefix)
        return ready()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='petrel-tcplog-')
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_one_line_per_connection_with_bytes(self):
        path = os.path.join(self.tmp, 'tcp.log')
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(self._log_config(port, admin, [echo.port], path)):
                s = h.tcp_connect(port)
                s.sendall(b'x' * 1000)
                self.assertEqual(len(h.recv_exact(s, 1000)), 1000)
                h.shutdown_write(s)
                h.recv_until_eof(s)
                s.close()
                lines = self._wait_line(path, 'TCP up 127.0.0.1:%d ' % echo.port)
                self.assertEqual(lines[0].split()[3:], ['1000', '1000', '-', '127.0.0.1'])

    def test_connect_failure_is_flagged_uf(self):
        path = os.path.join(self.tmp, 'tcp.log')
        port, admin = h.free_ports(2)
        with h.Petrel(self._log_config(port, admin, [h.dead_port()], path)):
            s = h.tcp_connect(port)
            self.assertEqual(h.recv_until_eof(s), b'')
            s.close()
            lines = self._wait_line(path, 'TCP up ')
            self.assertEqual(lines[0].split()[5], 'UF')


class UpstreamSocketOptionsTest(unittest.TestCase):
    """upstream_connection_options.tcp_keepalive, seen on petrel's upstream socket by ss."""

    @staticmethod
    def keepalive_timer_s(upstream_port):
        """Seconds left on the keepalive timer of the connection to upstream_port, or None
        when it has none (`ss -o` prints timer:(keepalive,1min59sec,0))."""
        out = subprocess.run(['ss', '-tnoH', 'state', 'established', 'dst',
                              '127.0.0.1:%d' % upstream_port], stdout=subprocess.PIPE,
                             universal_newlines=True, check=True).stdout
        m = re.search(r'timer:\(keepalive,(?:(\d+)min)?(?:([\d.]+)sec)?(?:(\d+)ms)?,', out)
        if m is None:
            return None
        return int(m.group(1) or 0) * 60 + float(m.group(2) or 0) + int(m.group(3) or 0) / 1000

    def relay_once(self, port):
        s = h.tcp_connect(port)
        s.sendall(b'x')
        self.assertEqual(h.recv_exact(s, 1), b'x')
        return s

    def test_tcp_keepalive(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            cfg = proxy_config(port, admin, [echo.port], cluster_extra={
                'upstream_connection_options': {'tcp_keepalive': {
                    'keepalive_time': 120, 'keepalive_interval': 7, 'keepalive_probes': 3}}})
            with h.Petrel(cfg):
                with self.relay_once(port):
                    left = self.keepalive_timer_s(echo.port)
                    self.assertIsNotNone(left)
                    self.assertTrue(60 < left <= 120, left)   # not the system's 2 hours

    def test_no_keepalive_by_default(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [echo.port])):
                with self.relay_once(port):
                    self.assertIsNone(self.keepalive_timer_s(echo.port))


class ConnectionLimitTest(unittest.TestCase):
    """Global (overload manager, runtime) and per-listener (runtime) connection limits."""

    def relay(self, port):
        s = h.tcp_connect(port)
        s.sendall(b'ping')
        self.assertEqual(h.recv_exact(s, 4), b'ping')
        return s

    def refused(self, port):
        """A connection over the limit: accepted by the kernel, closed by petrel at once."""
        with h.tcp_connect(port) as s:
            try:
                s.sendall(b'ping')
                return h.recv_until_eof(s) == b''
            except OSError:
                return True

    def check_limit(self, cfg_extra, stat, limit):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            cfg = proxy_config(port, admin, [echo.port])
            cfg.update(cfg_extra)
            with h.Petrel(cfg) as p:
                held = [self.relay(port) for _ in range(limit)]
                self.assertTrue(self.refused(port))
                p.wait_stat(listener_stat(port, stat), 1)
                # A place frees up when a connection ends.
                held.pop().close()
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), limit - 1)
                held.append(self.relay(port))
                self.assertTrue(self.refused(port))
                p.wait_stat(listener_stat(port, stat), 2)
                for s in held:
                    s.close()

    def test_global_limit_from_the_overload_manager(self):
        self.check_limit({'overload_manager': {'resource_monitors': [{
            'name': 'envoy.resource_monitors.global_downstream_max_connections',
            'typed_config': {
                '@type': 'type.googleapis.com/envoy.extensions.resource_monitors.'
                         'downstream_connections.v3.DownstreamConnectionsConfig',
                'max_active_downstream_connections': 2}}]}},
            'downstream_global_cx_overflow', 2)

    def test_listener_that_ignores_the_global_limit(self):
        # Global limit 1: the first listener's connection takes it; the second listener
        # (ignore_global_conn_limit) still takes connections, and they hold no place.
        # max_connections_to_accept_per_socket_event is honoured alongside (1 per event).
        with TcpEchoServer() as echo:
            port, other, admin = h.free_ports(3)
            cfg = proxy_config(port, admin, [echo.port])
            cfg['static_resources']['listeners'].append(h.listener(
                'health', other, [h.tcp_proxy('health', 'up')], ignore_global_conn_limit=True,
                max_connections_to_accept_per_socket_event=1))
            cfg['overload_manager'] = {'resource_monitors': [{
                'name': 'envoy.resource_monitors.global_downstream_max_connections',
                'typed_config': {
                    '@type': 'type.googleapis.com/envoy.extensions.resource_monitors.'
                             'downstream_connections.v3.DownstreamConnectionsConfig',
                    'max_active_downstream_connections': 1}}]}
            with h.Petrel(cfg) as p:
                held = [self.relay(port)]
                self.assertTrue(self.refused(port))
                held += [self.relay(other) for _ in range(3)]
                p.wait_stat(listener_stat(other, 'downstream_cx_active'), 3)
                self.assertEqual(p.stat(listener_stat(other, 'downstream_global_cx_overflow'), 0), 0)
                # Closing the exempt connections frees no global place: still full.
                for s in held[1:]:
                    s.close()
                p.wait_stat(listener_stat(other, 'downstream_cx_active'), 0)
                self.assertTrue(self.refused(port))
                held[0].close()
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                self.relay(port).close()

    def test_listener_limit_from_the_runtime(self):
        self.check_limit({'layered_runtime': {'layers': [{'name': 'static', 'static_layer': {
            'envoy.resource_limits.listener.tcp.connection_limit': 3}}]}},
            'downstream_cx_overflow', 3)


class CircuitBreakerTest(unittest.TestCase):

    def test_max_connections_closes_the_overflow(self):
        # max_connections 1: the first client relays; the second is closed at once and
        # upstream_cx_overflow counts; once the first ends, a new client relays again.
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            cfg = proxy_config(port, admin, [echo.port], cluster_extra={
                'circuit_breakers': {'thresholds': [{'max_connections': 1}]}})
            with h.Petrel(cfg) as p:
                first = h.tcp_connect(port)
                first.sendall(b'one')
                self.assertEqual(h.recv_exact(first, 3), b'one')
                second = h.tcp_connect(port)
                self.assertEqual(h.recv_until_eof(second), b'')
                second.close()
                p.wait_stat('cluster.up.upstream_cx_overflow', 1)
                first.sendall(b'still')
                self.assertEqual(h.recv_exact(first, 5), b'still')
                first.close()
                p.wait_stat('cluster.up.upstream_cx_active', 0)
                third = h.tcp_connect(port)
                third.sendall(b'three')
                self.assertEqual(h.recv_exact(third, 5), b'three')
                third.close()
                self.assertEqual(p.stat('cluster.up.upstream_cx_overflow'), 1)


if __name__ == '__main__':
    unittest.main()
