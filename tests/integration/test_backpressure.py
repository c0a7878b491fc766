"""TCP proxy flow control: a peer that stops reading makes petrel stop reading from the other
side (TCP backpressure end to end) instead of buffering; petrel's memory stays bounded while
hundreds of MiB wait, and everything still arrives byte-exact once the reader resumes.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_backpressure.py -v
"""

import os
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import TcpSourceServer  # noqa: E402

MiB = 1 << 20
OFFERED = 256 * MiB          # what the flooding side tries to push through
RSS_BOUND_KB = 16 * 1024     # petrel may grow by less than this per stalled connection


def listener_stat(port, name):
    return 'listener.127.0.0.1_%d.%s' % (port, name)


def proxy_config(port, admin, endpoints):
    return h.bootstrap([h.listener('tcp', port, [h.tcp_proxy('tcp', 'up')])],
                       [h.cluster('up', endpoints)], admin_port=admin)


def wait_stalled(p, stat, quiet=0.5, timeout=60):
    """Wait until stat `stat` is > 0 and has not moved for `quiet` (scaled) seconds: the
    flow through petrel has stopped. Returns its value."""
    last, since = None, time.monotonic()
    deadline = time.monotonic() + h.scaled(timeout)
    while True:
        v = p.stat(stat, 0)
        now = time.monotonic()
        if v != last:
            last, since = v, now
        elif v > 0 and now - since >= h.scaled(quiet):
            return v
        if now > deadline:
            raise AssertionError('%s never settled (last %r)' % (stat, v))
        time.sleep(0.05)


def warm_up(port):
    """One small connection first, so one-time allocations are in the RSS baseline."""
    with h.tcp_connect(port) as s:
        s.recv(1)


def read_all_sha(sock, n):
    got = h.StreamSha256()
    while got.n < n:
        data = sock.recv(min(MiB, n - got.n))
        if not data:
            break
        got.update(data)
    return got


class HeldUpstream:
    """An upstream that accepts and then reads only when the test says so."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(('127.0.0.1', 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.conns = []

    def accept(self, timeout=10):
        self.lsock.settimeout(h.scaled(timeout))
        conn, _ = self.lsock.accept()
        conn.settimeout(h.scaled(60))
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


class BackpressureTest(unittest.TestCase):

    def test_download_client_stops_reading(self):
        with TcpSourceServer(OFFERED) as src:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [src.port])) as p:
                # The warm-up connection gets the source's stream too; it is closed at once.
                warm_up(port)
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                base_rx = p.stat('cluster.up.upstream_cx_rx_bytes_total')
                rss0 = p.rss_kb()
                with h.tcp_connect(port, timeout=60) as s:
                    moved = wait_stalled(p, 'cluster.up.upstream_cx_rx_bytes_total') - base_rx
                    rss1 = p.rss_kb()
                    # Only socket buffers and petrel's bounded queues hold the data in flight.
                    self.assertLess(moved, OFFERED // 4,
                                    'petrel kept reading from upstream: %d bytes' % moved)
                    self.assertLess(rss1 - rss0, RSS_BOUND_KB,
                                    'RSS grew %d KiB while the client did not read'
                                    % (rss1 - rss0))
                    got = read_all_sha(s, OFFERED)
                    self.assertEqual(got.n, OFFERED)
                    self.assertEqual(got.hexdigest(), h.sha256_pattern(OFFERED))
                    self.assertEqual(s.recv(1), b'')      # then the source's FIN
                res = src.wait_results(2, timeout=30)
                self.assertEqual(sorted(r['sent'] for r in res)[-1], OFFERED)
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                self.assertEqual(p.stat('cluster.up.upstream_cx_rx_bytes_total') - base_rx,
                                 OFFERED)

    def test_upload_upstream_stops_reading(self):
        with HeldUpstream() as up:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [up.port])) as p:
                with h.tcp_connect(port) as w:        # warm-up, through the held upstream
                    up.accept().close()
                    h.recv_until_eof(w)
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                rss0 = p.rss_kb()
                s = h.tcp_connect(port, timeout=60)
                self.addCleanup(s.close)
                conn = up.accept()
                sent = [0]
                err = []

                def flood():
                    try:
                        for piece in h.pattern_chunks(OFFERED, MiB):
                            s.sendall(piece)
                            sent[0] += len(piece)
                        h.shutdown_write(s)
                    except Exception as e:
                        err.append(e)

                t = threading.Thread(target=flood, daemon=True)
                t.start()
                moved = wait_stalled(p, 'tcp.tcp.downstream_cx_rx_bytes_total')
                rss1 = p.rss_kb()
                self.assertLess(moved, OFFERED // 4,
                                'petrel kept reading from the client: %d bytes' % moved)
                self.assertTrue(t.is_alive(), 'the client could push everything: no backpressure')
                self.assertLess(rss1 - rss0, RSS_BOUND_KB,
                                'RSS grew %d KiB while upstream did not read' % (rss1 - rss0))
                self.assertGreater(p.stat('tcp.tcp.downstream_flow_control_paused_reading_total'),
                                   0)
                # Now the upstream reads everything.
                got = read_all_sha(conn, OFFERED)
                t.join(h.scaled(60))
                self.assertFalse(err, err)
                self.assertEqual(sent[0], OFFERED)
                self.assertEqual(got.n, OFFERED)
                self.assertEqual(got.hexdigest(), h.sha256_pattern(OFFERED))
                self.assertEqual(conn.recv(1), b'')       # the client's FIN
                self.assertGreater(
                    p.stat('tcp.tcp.downstream_flow_control_resumed_reading_total'), 0)
                self.assertEqual(p.stat('cluster.up.upstream_cx_tx_bytes_total'), OFFERED)
                conn.close()
                self.assertEqual(h.recv_until_eof(s), b'')
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)

    def test_many_stalled_connections_stay_bounded(self):
        count, each = 8, 32 * MiB
        with TcpSourceServer(each) as src:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [src.port]), concurrency=2) as p:
                warm_up(port)
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)
                base_rx = p.stat('cluster.up.upstream_cx_rx_bytes_total')
                rss0 = p.rss_kb()
                socks = [h.tcp_connect(port, timeout=60) for _ in range(count)]
                try:
                    src.wait_accepted(count + 1)
                    moved = wait_stalled(p, 'cluster.up.upstream_cx_rx_bytes_total') - base_rx
                    rss1 = p.rss_kb()
                    self.assertLess(moved, count * each // 2)
                    self.assertLess(rss1 - rss0, 2 * RSS_BOUND_KB,
                                    'RSS grew %d KiB with %d stalled connections'
                                    % (rss1 - rss0, count))
                    results = [None] * count

                    def drain(i):
                        results[i] = read_all_sha(socks[i], each)

                    threads = [threading.Thread(target=drain, args=(i,), daemon=True)
                               for i in range(count)]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join(h.scaled(60))
                    for i, got in enumerate(results):
                        self.assertIsNotNone(got, 'connection %d still reading' % i)
                        self.assertEqual((got.n, got.hexdigest()),
                                         (each, h.sha256_pattern(each)), 'connection %d' % i)
                finally:
                    for s in socks:
                        s.close()
                p.wait_stat(listener_stat(port, 'downstream_cx_active'), 0)


if __name__ == '__main__':
    unittest.main()
