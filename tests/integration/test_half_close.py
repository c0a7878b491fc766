"""TCP proxy half-close and reset propagation: a FIN from either side is passed on after the
bytes before it while the other direction keeps flowing; a reset from either side ends the
pair.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_half_close.py -v
"""

import os
import socket
import struct
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import TcpEchoServer, TcpSinkServer, TcpSourceServer  # noqa: E402

MiB = 1 << 20


def listener_stat(port, name):
    return 'listener.127.0.0.1_%d.%s' % (port, name)


def proxy_config(port, admin, endpoints, connect_timeout='1s', **tcp_extra):
    return h.bootstrap([h.listener('tcp', port, [h.tcp_proxy('tcp', 'up', **tcp_extra)])],
                       [h.cluster('up', endpoints, connect_timeout)], admin_port=admin)


def abort_socket(sock):
    """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    sock.close()


def closed_by_peer(sock, timeout=5):
    """Wait for EOF or a reset on `sock`, discarding data; True if it came in time."""
    sock.settimeout(h.scaled(timeout))
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


class RawUpstream:
    """A one-connection upstream the test drives by hand: `accept()` returns the socket."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(('127.0.0.1', 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.conns = []

    def accept(self, timeout=10):
        self.lsock.settimeout(h.scaled(timeout))
        conn, _ = self.lsock.accept()
        conn.settimeout(h.scaled(timeout))
        self.conns.append(conn)
        return conn

    def close(self):
        for c in self.conns:
            c.close()
        self.lsock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class HalfCloseTest(unittest.TestCase):

    def test_client_fin_then_reply_from_upstream(self):
        n = 3 * MiB + 17
        with TcpSinkServer(reply=True) as sink:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [sink.port])) as p:
                with h.tcp_connect(port, timeout=30) as s:
                    for piece in h.pattern_chunks(n):
                        s.sendall(piece)
                    h.shutdown_write(s)
                    # Our direction is closed; the upstream's answer still comes back.
                    reply = h.recv_until_eof(s)
                self.assertEqual(reply, b'%d %s\n' % (n, h.sha256_pattern(n).encode()))
                res = sink.wait_results(1)
                self.assertTrue(res[0]['eof'])
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                p.wait_stat('cluster.up.upstream_cx_active', 0)
                self.assertEqual(p.stat('cluster.up.upstream_cx_tx_bytes_total'), n)
                self.assertEqual(p.stat('cluster.up.upstream_cx_rx_bytes_total'), len(reply))

    def test_upstream_fin_then_client_keeps_sending(self):
        n, m = 2 * MiB + 5, 1 * MiB + 3
        with TcpSourceServer(n) as src:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [src.port])) as p:
                with h.tcp_connect(port, timeout=30) as s:
                    got = h.recv_until_eof(s)
                    # EOF after exactly the n bytes the upstream sent before its FIN.
                    self.assertEqual(len(got), n)
                    self.assertEqual(h.sha256_hex(got), h.sha256_pattern(n))
                    # The other direction is still open.
                    for piece in h.pattern_chunks(m, offset=777):
                        s.sendall(piece)
                    self.assertEqual(p.stat(listener_stat(port, 'downstream_cx_active')), 1)
                    h.shutdown_write(s)
                    res = src.wait_results(1)
                    self.assertEqual(h.recv_until_eof(s), b'')
                self.assertEqual(res[0]['received'], m)
                self.assertEqual(res[0]['received_sha256'], h.sha256_pattern(m, 777))
                self.assertTrue(res[0]['peer_fin'], 'the client FIN did not reach upstream')
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                p.wait_stat('cluster.up.upstream_cx_active', 0)

    def test_echo_fin_both_ways(self):
        # The echo upstream answers our FIN with its own after the last echoed byte.
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [echo.port])) as p:
                with h.tcp_connect(port) as s:
                    s.sendall(b'abc' * 1000)
                    h.shutdown_write(s)
                    self.assertEqual(h.recv_until_eof(s), b'abc' * 1000)
                self.assertTrue(echo.wait_results(1)[0]['peer_fin'])
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)

    def test_client_fin_while_upstream_connecting(self):
        # The first host never completes a connect; the bytes and the FIN the client sent
        # meanwhile go to the second host once connected.
        blackhole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        blackhole.bind(('127.0.0.1', 0))
        blackhole.listen(0)
        filler = socket.create_connection(blackhole.getsockname(), timeout=5)
        try:
            with TcpSinkServer(reply=True) as sink:
                port, admin = h.free_ports(2)
                cfg = proxy_config(port, admin, [blackhole.getsockname()[1], sink.port],
                                   connect_timeout='0.3s', max_connect_attempts=2)
                with h.Petrel(cfg) as p:
                    with h.tcp_connect(port, timeout=10) as s:
                        s.sendall(b'sent before the upstream exists')
                        h.shutdown_write(s)
                        reply = h.recv_until_eof(s)
                    self.assertEqual(reply, b'31 %s\n' % h.sha256_hex(
                        b'sent before the upstream exists').encode())
                    self.assertEqual(p.stat('cluster.up.upstream_cx_connect_timeout'), 1)
                    p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
        finally:
            filler.close()
            blackhole.close()

    def test_no_data_fin_both_ways(self):
        # A connection that carries nothing: FINs alone still end it cleanly.
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [echo.port])) as p:
                with h.tcp_connect(port) as s:
                    echo.wait_accepted(1)
                    h.shutdown_write(s)
                    self.assertEqual(h.recv_until_eof(s), b'')
                res = echo.wait_results(1)
                self.assertEqual(res[0]['bytes'], 0)
                self.assertTrue(res[0]['peer_fin'])
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                p.wait_stat('cluster.up.upstream_cx_active', 0)


class ResetTest(unittest.TestCase):

    def test_upstream_reset_closes_client(self):
        with RawUpstream() as up:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [up.port])) as p:
                with h.tcp_connect(port) as s:
                    conn = up.accept()
                    s.sendall(b'ping')
                    self.assertEqual(h.recv_exact(conn, 4), b'ping')
                    conn.sendall(b'pong')
                    self.assertEqual(h.recv_exact(s, 4), b'pong')
                    abort_socket(conn)
                    self.assertTrue(closed_by_peer(s), 'client not closed after upstream RST')
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                p.wait_stat('cluster.up.upstream_cx_active', 0)
                self.assertEqual(p.stat('cluster.up.upstream_cx_destroy_remote'), 1)

    def test_upstream_reset_while_client_sends(self):
        # The reset arrives while the client streams: petrel must not wedge or crash.
        with RawUpstream() as up:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [up.port])) as p:
                s = h.tcp_connect(port)
                conn = up.accept()
                stop = threading.Event()

                def flood():
                    try:
                        while not stop.is_set():
                            s.sendall(h.pattern_bytes(0, 256 * 1024))
                    except OSError:
                        pass

                t = threading.Thread(target=flood, daemon=True)
                t.start()
                h.recv_exact(conn, MiB)
                abort_socket(conn)
                try:
                    p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                finally:
                    stop.set()
                    s.close()
                    t.join(h.scaled(10))
                p.wait_stat('cluster.up.upstream_cx_active', 0)
                self.assertTrue(p.alive())

    def test_client_reset_closes_upstream(self):
        with TcpSinkServer() as sink:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [sink.port])) as p:
                s = h.tcp_connect(port)
                s.sendall(b'x' * 1000)
                sink.wait_accepted(1)
                p.wait_stat('tcp.tcp.downstream_cx_rx_bytes_total', 1000)
                abort_socket(s)
                res = sink.wait_results(1)   # the upstream side ended (FIN or reset)
                self.assertEqual(res[0]['bytes'], 1000)
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                p.wait_stat('cluster.up.upstream_cx_active', 0)
                self.assertEqual(p.stat('cluster.up.upstream_cx_destroy_local'), 1)

    def test_client_reset_while_upstream_sends(self):
        with TcpSourceServer(256 * MiB) as src:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [src.port])) as p:
                s = h.tcp_connect(port)
                h.recv_exact(s, MiB)
                abort_socket(s)
                res = src.wait_results(1, timeout=30)
                # The source saw its peer go away before it could send everything.
                self.assertLess(res[0]['sent'], 256 * MiB)
                self.assertIsNotNone(res[0]['send_error'])
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                p.wait_stat('cluster.up.upstream_cx_active', 0)

    def test_reset_does_not_disturb_other_connections(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [echo.port])) as p:
                with h.tcp_connect(port) as keep:
                    keep.sendall(b'1')
                    self.assertEqual(h.recv_exact(keep, 1), b'1')
                    for _ in range(5):
                        s = h.tcp_connect(port)
                        s.sendall(b'bye')
                        h.recv_exact(s, 3)
                        abort_socket(s)
                    p.wait_stat(listener_stat(port, 'downstream_cx_active'), 1)
                    time.sleep(0.05)
                    keep.sendall(b'2')
                    self.assertEqual(h.recv_exact(keep, 1), b'2')


if __name__ == '__main__':
    unittest.main()
