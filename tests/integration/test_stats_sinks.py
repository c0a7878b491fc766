"""stats_sinks end to end: envoy.stat_sinks.statsd to a UDP statsd listener and to a TCP
statsd cluster, with Envoy's line format, and the sinks Envoy has that petrel does not refused
by name.

- UDP: counters as their change since the last flush (`|c`), gauges (`|g`), one `|ms` line a
  value a histogram recorded in the interval (a request through a 60 ms upstream), the
  prefix, no tags; every stats_flush_interval.
- TCP: the same lines over a connection to a cluster's host; the collector stopping and
  coming back on the same port (reconnects refused and counted meanwhile, the lines kept,
  bounded, and delivered when it is back: the deltas add up), requests unaffected.
- A UDP collector that is down: sends refused are counted, requests unaffected.
- Bad input: an unknown sink type, a sink petrel lacks, a bad address, both targets.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_stats_sinks.py -v
"""

import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

STATSD = 'type.googleapis.com/envoy.config.metrics.v3.StatsdSink'
LINE = re.compile(r'^([^:|@\s]+):(\d+)\|(c|g|ms)(\|@[0-9.e-]+)?$')


def statsd_sink(**cfg):
    d = {'@type': STATSD}
    d.update(cfg)
    return {'name': 'envoy.stat_sinks.statsd', 'typed_config': d}


def config(port, admin, up_port, sinks, clusters=(), interval='0.2s'):
    rc = h.route_config([h.vhost('all', ['*'], [h.route_prefix('/', 'web', timeout='5s')])])
    return h.bootstrap([h.listener('http', port, [h.http_connection_manager('ingress', rc)])],
                       [h.cluster('web', [up_port])] + list(clusters), admin_port=admin,
                       stats_sinks=sinks, stats_flush_interval=interval)


class UdpCollector:
    """A statsd server: every line of every datagram, in order."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.lines, self.datagrams = [], 0
        self.lock = threading.Lock()
        self.stopping = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stopping:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.datagrams += 1
                self.lines.extend(data.decode().split('\n'))

    def snapshot(self):
        with self.lock:
            return list(self.lines)

    def close(self):
        self.stopping = True
        self.t.join()
        self.sock.close()


class TcpCollector:
    """A TCP statsd server on a fixed port: lines as they come; stop() and start() again."""

    def __init__(self, port=0):
        self.lines = []
        self.lock = threading.Lock()
        self.port = port
        self.start()

    def start(self):
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(('127.0.0.1', self.port))
        self.port = self.srv.getsockname()[1]
        self.srv.listen(8)
        self.srv.settimeout(0.1)
        self.stopping = False
        self.conns = []
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        bufs = {}
        while not self.stopping:
            try:
                c, _ = self.srv.accept()
                c.settimeout(0.05)
                self.conns.append(c)
                bufs[c] = b''
            except socket.timeout:
                pass
            except OSError:
                return
            for c in list(self.conns):
                try:
                    data = c.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    data = b''
                if not data:
                    self.conns.remove(c)
                    c.close()
                    continue
                bufs[c] += data
                *done, bufs[c] = bufs[c].split(b'\n')
                with self.lock:
                    self.lines.extend(l.decode() for l in done)

    def snapshot(self):
        with self.lock:
            return list(self.lines)

    def stop(self):
        self.stopping = True
        self.t.join()
        for c in self.conns:
            c.close()
        self.srv.close()


def parse(lines):
    """[(name, value, type, rate)] of well formed lines; raises on any other."""
    out = []
    for l in lines:
        if l == '':
            continue
        m = LINE.match(l)
        assert m, 'not a statsd line: %r' % l
        out.append((m.group(1), int(m.group(2)), m.group(3), m.group(4)))
    return out


def wait_for(pred, timeout=10):
    deadline = time.monotonic() + h.scaled(timeout)
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError('condition not met within %ss' % timeout)


class UdpStatsdTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = HttpUpstream(name='web')
        cls.col = UdpCollector()
        cls.port, cls.admin = h.free_ports(2)
        cls.p = h.Petrel(config(cls.port, cls.admin, cls.up.port,
                                [statsd_sink(address={'socket_address': {
                                    'address': '127.0.0.1', 'port_value': cls.col.port}},
                                    prefix='pfx')]), concurrency=2)
        cls.p.start()

    @classmethod
    def tearDownClass(cls):
        cls.p.stop()
        cls.col.close()
        cls.up.close()

    def test_lines(self):
        for _ in range(3):
            self.assertEqual(h.http_request(self.port, 'GET', '/').status, 200)
        self.assertEqual(h.http_request(self.port, 'GET', '/delay/60').status, 200)
        key = 'pfx.http.ingress.downstream_rq_total'
        # Counter deltas add up to the total, flush after flush.
        wait_for(lambda: sum(v for n, v, t, _ in parse(self.col.snapshot())
                             if n == key and t == 'c') == 4)
        lines = parse(self.col.snapshot())
        # Every line is prefixed; no tags (Envoy's statsd sink has none).
        self.assertTrue(all(n.startswith('pfx.') for n, _, _, _ in lines))
        self.assertTrue(all('|#' not in l for l in self.col.snapshot()))
        # An idle flush sends a used counter's delta 0.
        n_before = len(self.col.snapshot())
        wait_for(lambda: len(self.col.snapshot()) > n_before + 10)
        later = parse(self.col.snapshot()[n_before:])
        self.assertIn((key, 0, 'c', None), later)
        # Gauges: their values.
        self.assertIn(('pfx.cluster.web.membership_healthy', 1, 'g', None), later)
        # A counter never counted is not sent.
        self.assertNotIn('pfx.cluster.web.upstream_cx_connect_fail',
                         [n for n, _, _, _ in lines])
        # Timers: the 60 ms request's upstream_rq_time, once, within its bucket (60..61).
        times = [v for n, v, t, _ in lines if n == 'pfx.cluster.web.upstream_rq_time']
        self.assertEqual(len(times), 4, times)
        self.assertEqual(len([v for v in times if 60 <= v <= 60 + 500]), 1, times)
        self.assertTrue(all(t == 'ms' for n, _, t, _ in lines if n.endswith('_rq_time')))
        # Its own stats.
        st = self.p.stats()
        self.assertGreaterEqual(st['statsd.flushed'], 2)
        self.assertEqual(st['statsd.send_failed'], 0)


class UdpCollectorDownTest(unittest.TestCase):
    def test_refused_sends_are_counted(self):
        with HttpUpstream(name='web') as up:
            dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            dead.bind(('127.0.0.1', 0))
            dead_port = dead.getsockname()[1]
            dead.close()  # nobody there: the kernel refuses (ICMP port unreachable)
            port, admin = h.free_ports(2)
            p = h.Petrel(config(port, admin, up.port, [statsd_sink(address={
                'socket_address': {'address': '127.0.0.1', 'port_value': dead_port}})]))
            p.start()
            try:
                for _ in range(5):
                    self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
                    time.sleep(0.1)
                p.wait_stat('statsd.send_failed', lambda v: v is not None and v > 0)
                self.assertGreater(p.stat('statsd.dropped_lines'), 0)
                self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
            finally:
                p.stop()


class TcpStatsdTest(unittest.TestCase):
    def test_tcp_cluster_and_restart(self):
        with HttpUpstream(name='web') as up:
            col = TcpCollector()
            port, admin = h.free_ports(2)
            p = h.Petrel(config(port, admin, up.port,
                                [statsd_sink(tcp_cluster_name='statsd')],
                                clusters=[h.cluster('statsd', [col.port])]))
            p.start()
            try:
                self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
                key = 'envoy.http.ingress.downstream_rq_total'
                wait_for(lambda: sum(v for n, v, t, _ in parse(col.snapshot())
                                     if n == key) == 1)
                # The collector goes away: flushes go on, their lines wait (bounded) while
                # petrel tries to connect again at each flush.
                col.stop()
                for _ in range(3):
                    self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
                p.wait_stat('statsd.cx_connect_fail', lambda v: v is not None and v > 0)
                # It comes back on the same port: a new connection takes the waiting lines,
                # so the deltas still add up to every request.
                col.start()
                self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
                wait_for(lambda: sum(v for n, v, t, _ in parse(col.snapshot())
                                     if n == key) == 5)
                self.assertEqual(p.stat('statsd.dropped_lines'), 0)
            finally:
                p.stop()
                col.stop()


class SlowTcpCollectorTest(unittest.TestCase):
    def test_memory_bounded(self):
        """A collector that accepts and never reads: once the socket's buffers are full,
        flushes are dropped and counted (cx_overflow) and petrel's memory stops growing;
        requests are served meanwhile."""
        with HttpUpstream(name='web') as up:
            srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            srv.bind(('127.0.0.1', 0))
            srv.listen(1)
            # 400 clusters: each flush has ~1,200 gauge lines (~60 KB), every 10 ms.
            many = [h.cluster('c%03d' % i, [up.port]) for i in range(400)]
            many.append(h.cluster('statsd', [srv.getsockname()[1]]))
            port, admin = h.free_ports(2)
            p = h.Petrel(config(port, admin, up.port, [statsd_sink(tcp_cluster_name='statsd')],
                                clusters=many, interval='0.01s'))
            p.start()
            try:
                conn, _ = srv.accept()  # accepted, never read
                p.wait_stat('statsd.cx_overflow', lambda v: v is not None and v > 0, timeout=30)
                rss0 = p.rss_kb()
                n0 = p.stat('statsd.dropped_lines')
                p.wait_stat('statsd.dropped_lines', lambda v: v is not None and v > n0 + 50000,
                            timeout=30)
                rss1 = p.rss_kb()
                sys.stderr.write('\n  slow collector: RSS %d KiB at the first overflow, %d KiB '
                                 'after 50,000 more lines dropped\n' % (rss0, rss1))
                # 50,000 lines are ~2.5 MB: kept, they would show; the queue's bound (1 MiB)
                # and allocator noise are all that may.
                self.assertLess(rss1 - rss0, 2048)
                self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
                conn.close()
            finally:
                p.stop()
                srv.close()


class BadInputTest(unittest.TestCase):
    def validate(self, sinks):
        cfg = config(1, 2, 3, sinks)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'c.json')
            with open(path, 'w') as f:
                json.dump(cfg, f)
            rc, out, err = h.run_petrel(['--mode', 'validate', '-c', path])
        self.assertEqual(rc, 1, out + err)
        return out + err

    def test_errors(self):
        self.assertIn('stats_sinks[0].typed_config: envoy.config.metrics.v3.MetricsServiceConfig '
                      'envoy.stat_sinks.metrics_service is not supported',
                      self.validate([{'name': 'envoy.stat_sinks.metrics_service', 'typed_config': {
                          '@type': 'type.googleapis.com/envoy.config.metrics.v3.'
                                   'MetricsServiceConfig'}}]))
        self.assertIn('stats_sinks[0].typed_config: x.y.Z is not supported',
                      self.validate([{'name': 'x', 'typed_config': {
                          '@type': 'type.googleapis.com/x.y.Z'}}]))
        self.assertIn('stats_sinks[0].typed_config: is required',
                      self.validate([{'name': 'envoy.stat_sinks.statsd'}]))
        self.assertIn('stats_sinks[0].typed_config.address.socket_address.address: "statsd.local" '
                      'is not an IP address',
                      self.validate([statsd_sink(address={'socket_address': {
                          'address': 'statsd.local', 'port_value': 8125}})]))
        self.assertIn('stats_sinks[1].typed_config: only one of address, tcp_cluster_name',
                      self.validate([statsd_sink(tcp_cluster_name='a'),
                                     statsd_sink(tcp_cluster_name='a', address={
                                         'socket_address': {'address': '127.0.0.1',
                                                            'port_value': 1}})]))


if __name__ == '__main__':
    unittest.main()
