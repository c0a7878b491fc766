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

import concurrent.futures
import json
import os
import struct
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

try:
    import grpc
except ImportError:  # pragma: no cover
    grpc = None

STATSD = 'type.googleapis.com/envoy.config.metrics.v3.StatsdSink'
METRICS_SERVICE = 'type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig'
OTLP = 'type.googleapis.com/envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig'
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
                # and allocator noise are all that may. Not under sanitizers: ASan's
                # quarantine holds freed memory, so RSS grows with what was freed.
                if not h.SANITIZE:
                    self.assertLess(rss1 - rss0, 2048)
                self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
                conn.close()
            finally:
                p.stop()
                srv.close()


# ---- metrics_service ----------------------------------------------------------------------

def pb_fields(buf):
    """The fields of a protobuf message: [(number, value)], value an int (varint), a float
    (fixed64 read as a double), or bytes (length-delimited)."""
    out, i = [], 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(buf, i)
        elif wt == 1:
            v = struct.unpack('<d', buf[i:i + 8])[0]
            i += 8
        elif wt == 2:
            n, i = varint(buf, i)
            v = buf[i:i + n]
            i += n
        elif wt == 5:
            v = struct.unpack('<f', buf[i:i + 4])[0]
            i += 4
        else:
            raise ValueError('wire type %d' % wt)
        out.append((num, v))
    return out


def varint(buf, i):
    v, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7f) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def decode_family(b):
    """io.prometheus.client.MetricFamily -> dict (one metric, as Envoy sends them)."""
    f = {'labels': {}}
    for num, v in pb_fields(b):
        if num == 1:
            f['name'] = v.decode()
        elif num == 3:
            f['type'] = {0: 'COUNTER', 1: 'GAUGE', 2: 'SUMMARY', 3: 'UNTYPED',
                         4: 'HISTOGRAM'}[v]
        elif num == 4:
            for mn, mv in pb_fields(v):
                if mn == 1:
                    lp = dict(pb_fields(mv))
                    f['labels'][lp[1].decode()] = lp[2].decode()
                elif mn in (2, 3):
                    f['value'] = dict(pb_fields(mv)).get(1, 0.0)
                elif mn == 4:
                    sm = pb_fields(mv)
                    f['count'] = dict(sm).get(1, 0)
                    f['sum'] = dict(sm).get(2, 0.0)
                    f['quantiles'] = [(dict(pb_fields(q)).get(1, 0.0), dict(pb_fields(q)).get(2, 0.0))
                                      for n_, q in sm if n_ == 3]
                elif mn == 7:
                    hm = pb_fields(mv)
                    f['count'] = dict(hm).get(1, 0)
                    f['sum'] = dict(hm).get(2, 0.0)
                    f['buckets'] = [(dict(pb_fields(bk)).get(2, 0.0), dict(pb_fields(bk)).get(1, 0))
                                    for n_, bk in hm if n_ == 3]
                elif mn == 6:
                    f['timestamp_ms'] = mv
    return f


class MetricsCollector:
    """envoy.service.metrics.v3.MetricsService: every StreamMetricsMessage decoded, per call."""

    def __init__(self, port=0):
        self.lock = threading.Lock()
        self.calls = []  # one list of messages per call
        self.port = port
        self.start()

    def start(self):
        def stream(requests, context):
            msgs = []
            with self.lock:
                self.calls.append(msgs)
            for r in requests:
                ident, fams = None, []
                for num, v in pb_fields(r):
                    if num == 1:
                        node = dict(pb_fields(dict(pb_fields(v))[1]))
                        ident = {k: node[n].decode() for k, n in (('id', 1), ('cluster', 2))
                                 if n in node}
                    elif num == 2:
                        fams.append(decode_family(v))
                with self.lock:
                    msgs.append((ident, fams))
            return b''

        handler = grpc.method_handlers_generic_handler('envoy.service.metrics.v3.MetricsService', {
            'StreamMetrics': grpc.stream_unary_rpc_method_handler(stream)})
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port('127.0.0.1:%d' % self.port)
        self.server.start()

    def stop(self):
        self.server.stop(None)

    def messages(self):
        with self.lock:
            return [m for c in self.calls for m in c]

    def families(self, name):
        return [f for _, fams in self.messages() for f in fams if f['name'] == name]


def metrics_sink(cluster='collector', **cfg):
    d = {'@type': METRICS_SERVICE, 'transport_api_version': 'V3',
         'grpc_service': {'envoy_grpc': {'cluster_name': cluster}}}
    d.update(cfg)
    return {'name': 'envoy.stat_sinks.metrics_service', 'typed_config': d}


@unittest.skipUnless(grpc is not None, 'python3-grpcio is not installed')
class MetricsServiceTest(unittest.TestCase):
    def start(self, col_port, **cfg):
        self.up = HttpUpstream(name='web')
        self.addCleanup(self.up.close)
        self.port, admin = h.free_ports(2)
        c = config(self.port, admin, self.up.port, [metrics_sink(**cfg)],
                   clusters=[h.cluster('collector', [col_port])])
        c['node'] = {'id': 'n1', 'cluster': 'mesh'}
        self.p = h.Petrel(c, concurrency=2)
        self.p.start()
        self.addCleanup(self.p.stop)

    def test_tags_and_deltas(self):
        col = MetricsCollector()
        self.addCleanup(col.stop)
        self.start(col.port, report_counters_as_deltas=True, emit_tags_as_labels=True)
        for path in ('/', '/', '/delay/60'):
            self.assertEqual(h.http_request(self.port, 'GET', path).status, 200)
        lbl = {'envoy.http_conn_manager_prefix': 'ingress'}
        wait_for(lambda: sum(f['value'] for f in col.families('http.downstream_rq_total')
                             if f['labels'] == lbl) == 3)
        first = col.messages()[0]
        self.assertEqual(first[0], {'id': 'n1', 'cluster': 'mesh'})
        self.assertTrue(all(ident is None for ident, _ in col.messages()[1:]))
        fams = col.messages()[-1][1]
        self.assertTrue(all(f['timestamp_ms'] > 1.7e12 for f in fams))
        g = [f for f in fams if f['name'] == 'cluster.membership_healthy' and
             f['labels'] == {'envoy.cluster_name': 'web'}]
        self.assertEqual(g[0]['type'], 'GAUGE')
        self.assertEqual(g[0]['value'], 1.0)
        # The histogram: a SUMMARY of an interval and a HISTOGRAM of everything.
        wait_for(lambda: [f for f in col.families('cluster.upstream_rq_time')
                          if f['type'] == 'HISTOGRAM' and f['count'] == 3])
        hist = [f for f in col.families('cluster.upstream_rq_time') if f['type'] == 'HISTOGRAM'][-1]
        le = dict(hist['buckets'])
        self.assertLessEqual(le[50.0], 2)  # the 60 ms request is above 50
        self.assertEqual(le[3600000.0], 3)
        self.assertEqual(sorted(le.values()), [le[b] for b in sorted(le)])  # cumulative
        self.assertGreaterEqual(hist['sum'], 60)
        summaries = [f for f in col.families('cluster.upstream_rq_time') if f['type'] == 'SUMMARY']
        self.assertEqual(sum(f['count'] for f in summaries), 3)
        self.assertEqual([q for q, _ in summaries[0]['quantiles']],
                         [0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1])

    def test_names_and_totals(self):
        col = MetricsCollector()
        self.addCleanup(col.stop)
        self.start(col.port, histogram_emit_mode='HISTOGRAM')
        for _ in range(2):
            self.assertEqual(h.http_request(self.port, 'GET', '/').status, 200)
        wait_for(lambda: [f for f in col.families('cluster.web.upstream_rq_total')
                          if f['value'] == 2])
        f = col.families('cluster.web.upstream_rq_total')[-1]
        self.assertEqual((f['type'], f['labels']), ('COUNTER', {}))
        self.assertFalse([f for f in col.families('cluster.web.upstream_rq_time')
                          if f['type'] == 'SUMMARY'])

    def test_collector_down_then_restarted(self):
        probe = socket.socket()
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
        probe.close()
        self.start(port)  # nobody there yet
        self.p.wait_stat('metrics_service.call_failures', lambda v: v is not None and v > 1)
        self.assertEqual(h.http_request(self.port, 'GET', '/').status, 200)
        col = MetricsCollector(port)
        wait_for(lambda: col.families('cluster.web.upstream_rq_total'))
        self.assertEqual(col.messages()[0][0], {'id': 'n1', 'cluster': 'mesh'})
        # Restarted mid-run: a new call, identified again, and the totals go on.
        col.stop()
        self.assertEqual(h.http_request(self.port, 'GET', '/').status, 200)
        col2 = MetricsCollector(port)
        self.addCleanup(col2.stop)
        wait_for(lambda: [f for f in col2.families('cluster.web.upstream_rq_total')
                          if f['value'] == 2])
        self.assertEqual(col2.messages()[0][0], {'id': 'n1', 'cluster': 'mesh'})


@unittest.skipUnless(grpc is not None, 'python3-grpcio is not installed')
class SlowMetricsCollectorTest(unittest.TestCase):
    def test_memory_bounded(self):
        """A collector that takes the call and never reads it: HTTP/2 flow control stops the
        bytes, petrel drops (and counts) the flushes that would queue behind them, and its
        memory stays put; requests are served meanwhile."""
        release = threading.Event()

        def stream(requests, context):
            release.wait(60)  # never reads the messages
            return b''

        handler = grpc.method_handlers_generic_handler('envoy.service.metrics.v3.MetricsService', {
            'StreamMetrics': grpc.stream_unary_rpc_method_handler(stream)})
        srv = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
        srv.add_generic_rpc_handlers((handler,))
        col_port = srv.add_insecure_port('127.0.0.1:0')
        srv.start()
        try:
            with HttpUpstream(name='web') as up:
                many = [h.cluster('c%03d' % i, [up.port]) for i in range(400)]
                many.append(h.cluster('collector', [col_port]))
                port, admin = h.free_ports(2)
                p = h.Petrel(config(port, admin, up.port, [metrics_sink()], clusters=many,
                                    interval='0.01s'))
                p.start()
                try:
                    p.wait_stat('metrics_service.dropped_flushes',
                                lambda v: v is not None and v > 0, timeout=30)
                    rss0 = p.rss_kb()
                    n0 = p.stat('metrics_service.dropped_flushes')
                    p.wait_stat('metrics_service.dropped_flushes',
                                lambda v: v is not None and v > n0 + 300, timeout=60)
                    rss1 = p.rss_kb()
                    sys.stderr.write('\n  slow gRPC collector: RSS %d KiB at the first dropped '
                                     'flush, %d KiB 300 flushes later\n' % (rss0, rss1))
                    # 300 flushes of ~100 KB each, kept, would be 30 MB. Not under
                    # sanitizers (ASan's quarantine holds freed memory).
                    if not h.SANITIZE:
                        self.assertLess(rss1 - rss0, 4096)
                    self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
                finally:
                    p.stop()
        finally:
            release.set()
            srv.stop(None)


# ---- OpenTelemetry ---------------------------------------------------------------------------

def decode_otlp_metric(b):
    """opentelemetry.proto.metrics.v1.Metric -> dict (one data point, as Envoy sends them)."""
    m = {'attributes': {}}
    for num, v in pb_fields(b):
        if num == 1:
            m['name'] = v.decode()
        elif num in (5, 7, 9):
            m['kind'] = {5: 'gauge', 7: 'sum', 9: 'histogram'}[num]
            for dn, dv in pb_fields(v):
                if dn == 2:
                    m['temporality'] = {1: 'DELTA', 2: 'CUMULATIVE'}[dv]
                elif dn == 3:
                    m['monotonic'] = bool(dv)
                elif dn == 1:
                    attr_field = 9 if num == 9 else 7
                    for pn, pv in pb_fields(dv):
                        if pn == attr_field:
                            kv = dict(pb_fields(pv))
                            m['attributes'][kv[1].decode()] = dict(pb_fields(kv[2]))[1].decode()
                        elif pn == 2:
                            m['start'] = struct.unpack('<Q', struct.pack('<d', pv))[0]
                        elif pn == 3:
                            m['time'] = struct.unpack('<Q', struct.pack('<d', pv))[0]
                        elif num != 9 and pn == 6:
                            m['value'] = struct.unpack('<q', struct.pack('<d', pv))[0]
                        elif num == 9 and pn == 4:
                            m['count'] = struct.unpack('<Q', struct.pack('<d', pv))[0]
                        elif num == 9 and pn == 5:
                            m['sum'] = pv
                        elif num == 9 and pn == 6:
                            m['buckets'] = list(struct.unpack('<%dQ' % (len(pv) // 8), pv))
                        elif num == 9 and pn == 7:
                            m['bounds'] = list(struct.unpack('<%dd' % (len(pv) // 8), pv))
    return m


class OtlpCollector:
    """opentelemetry.proto.collector.metrics.v1.MetricsService/Export: every request's
    metrics, decoded."""

    def __init__(self, port=0):
        self.lock = threading.Lock()
        self.exports = []

        def export(req, context):
            metrics = []
            for num, rm in pb_fields(req):
                assert num == 1
                for n2, sm in pb_fields(rm):
                    if n2 == 2:
                        metrics += [decode_otlp_metric(mb) for n3, mb in pb_fields(sm)
                                    if n3 == 2]
            with self.lock:
                self.exports.append(metrics)
            return b''

        handler = grpc.method_handlers_generic_handler(
            'opentelemetry.proto.collector.metrics.v1.MetricsService',
            {'Export': grpc.unary_unary_rpc_method_handler(export)})
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port('127.0.0.1:%d' % port)
        self.server.start()

    def stop(self):
        self.server.stop(None)

    def metrics(self, name):
        with self.lock:
            return [m for e in self.exports for m in e if m['name'] == name]


def otlp_sink(cluster='collector', **cfg):
    d = {'@type': OTLP, 'grpc_service': {'envoy_grpc': {'cluster_name': cluster}}}
    d.update(cfg)
    return {'name': 'envoy.stat_sinks.open_telemetry', 'typed_config': d}


@unittest.skipUnless(grpc is not None, 'python3-grpcio is not installed')
class OpenTelemetryTest(unittest.TestCase):
    def start(self, col_port, stats_config=None, **cfg):
        self.up = HttpUpstream(name='web')
        self.addCleanup(self.up.close)
        self.port, admin = h.free_ports(2)
        c = config(self.port, admin, self.up.port, [otlp_sink(**cfg)],
                   clusters=[h.cluster('collector', [col_port])])
        if stats_config:
            c['stats_config'] = stats_config
        self.p = h.Petrel(c, concurrency=2)
        self.p.start()
        self.addCleanup(self.p.stop)

    def test_defaults(self):
        col = OtlpCollector()
        self.addCleanup(col.stop)
        self.start(col.port)
        for path in ('/', '/', '/delay/60'):
            self.assertEqual(h.http_request(self.port, 'GET', path).status, 200)
        lbl = {'envoy.http_conn_manager_prefix': 'ingress'}
        wait_for(lambda: [m for m in col.metrics('http.downstream_rq_total')
                          if m['attributes'] == lbl and m['value'] == 3])
        c = col.metrics('http.downstream_rq_total')[-1]
        self.assertEqual((c['kind'], c['temporality'], c['monotonic']),
                         ('sum', 'CUMULATIVE', True))
        self.assertLess(c['start'], c['time'])
        g = [m for m in col.metrics('cluster.membership_healthy')
             if m['attributes'] == {'envoy.cluster_name': 'web'}]
        self.assertEqual((g[-1]['kind'], g[-1]['value']), ('gauge', 1))
        wait_for(lambda: [m for m in col.metrics('cluster.upstream_rq_time')
                          if m.get('count') == 3])
        hm = [m for m in col.metrics('cluster.upstream_rq_time') if m.get('count') == 3][-1]
        self.assertEqual(hm['temporality'], 'CUMULATIVE')
        self.assertEqual(len(hm['bounds']), 19)          # Envoy's default bounds
        self.assertEqual(len(hm['buckets']), 20)         # and one past the last
        self.assertEqual(sum(hm['buckets']), 3)
        i50 = hm['bounds'].index(50.0)
        self.assertGreaterEqual(sum(hm['buckets'][i50 + 1:]), 1)  # the 60 ms one
        self.assertGreaterEqual(hm['sum'], 60)
        self.assertEqual(self.p.stat('open_telemetry.export_failures'), 0)

    def test_stats_tags_reach_the_sink(self):
        """stats_config.stats_tags applies to the sinks as to Prometheus: a fixed value and a
        custom regex are attributes, the custom regex's part is cut from the name."""
        col = OtlpCollector()
        self.addCleanup(col.stop)
        self.start(col.port, stats_config={'stats_tags': [
            {'tag_name': 'mesh', 'fixed_value': 'east'},
            {'tag_name': 'kind', 'regex': r'^cluster\.[^.]+\.upstream_((rq)_)'}]})
        self.assertEqual(h.http_request(self.port, 'GET', '/').status, 200)
        want = {'mesh': 'east', 'envoy.cluster_name': 'web', 'kind': 'rq'}
        wait_for(lambda: [m for m in col.metrics('cluster.upstream_total')
                          if m['attributes'] == want and m['value'] == 1])
        g = col.metrics('cluster_manager.active_clusters')[-1]
        self.assertEqual(g['attributes'], {'mesh': 'east'})

    def test_deltas_prefix_names(self):
        col = OtlpCollector()
        self.addCleanup(col.stop)
        self.start(col.port, report_counters_as_deltas=True, report_histograms_as_deltas=True,
                   use_tag_extracted_name=False, emit_tags_as_attributes=False, prefix='pfx')
        for _ in range(4):
            self.assertEqual(h.http_request(self.port, 'GET', '/').status, 200)
        name = 'pfx.cluster.web.upstream_rq_total'
        wait_for(lambda: sum(m['value'] for m in col.metrics(name)) == 4)
        self.assertTrue(all(m['temporality'] == 'DELTA' and m['attributes'] == {}
                            for m in col.metrics(name)))
        hist = col.metrics('pfx.cluster.web.upstream_rq_time')
        wait_for(lambda: sum(m['count'] for m in col.metrics('pfx.cluster.web.upstream_rq_time'))
                 == 4)
        hist = col.metrics('pfx.cluster.web.upstream_rq_time')
        self.assertTrue(all(m['temporality'] == 'DELTA' and sum(m['buckets']) == m['count']
                            for m in hist))

    def test_collector_down_then_up(self):
        probe = socket.socket()
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
        probe.close()
        self.start(port)
        self.p.wait_stat('open_telemetry.export_failures', lambda v: v is not None and v > 1)
        self.assertEqual(h.http_request(self.port, 'GET', '/').status, 200)
        col = OtlpCollector(port)
        self.addCleanup(col.stop)
        wait_for(lambda: [m for m in col.metrics('cluster.upstream_rq_total')
                          if m['value'] == 1])
        self.p.wait_stat('open_telemetry.exported', lambda v: v is not None and v > 0)


@unittest.skipUnless(grpc is not None, 'python3-grpcio is not installed')
class SlowOtlpCollectorTest(unittest.TestCase):
    def test_hung_export_given_up(self):
        """A collector that takes exports and never answers: one export in flight at a time
        (flushes meanwhile dropped and counted), given up after grpc_service.timeout, then a
        new one; requests are served meanwhile."""
        release = threading.Event()
        seen = []

        def export(req, context):
            seen.append(len(req))
            release.wait(60)
            return b''

        handler = grpc.method_handlers_generic_handler(
            'opentelemetry.proto.collector.metrics.v1.MetricsService',
            {'Export': grpc.unary_unary_rpc_method_handler(export)})
        srv = grpc.server(concurrent.futures.ThreadPoolExecutor(8))
        srv.add_generic_rpc_handlers((handler,))
        col_port = srv.add_insecure_port('127.0.0.1:0')
        srv.start()
        try:
            with HttpUpstream(name='web') as up:
                port, admin = h.free_ports(2)
                sink = otlp_sink()
                sink['typed_config']['grpc_service']['timeout'] = '0.5s'
                p = h.Petrel(config(port, admin, up.port, [sink],
                                    clusters=[h.cluster('collector', [col_port])],
                                    interval='0.1s'))
                p.start()
                try:
                    p.wait_stat('open_telemetry.export_failures',
                                lambda v: v is not None and v >= 2, timeout=30)
                    st = p.stats()
                    self.assertGreater(st['open_telemetry.dropped_flushes'], 0)
                    self.assertEqual(st['open_telemetry.exported'], 0)
                    # One export at a time: every one that reached the collector was given
                    # up before the next began.
                    self.assertLessEqual(len(seen), st['open_telemetry.export_failures'] + 1)
                    self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
                finally:
                    p.stop()
        finally:
            release.set()
            srv.stop(None)


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
        self.assertIn('stats_sinks[0].typed_config: envoy.config.metrics.v3.DogStatsdSink '
                      'envoy.stat_sinks.dog_statsd is not supported',
                      self.validate([{'name': 'envoy.stat_sinks.dog_statsd', 'typed_config': {
                          '@type': 'type.googleapis.com/envoy.config.metrics.v3.'
                                   'DogStatsdSink'}}]))
        self.assertIn('stats_sinks[0].typed_config.grpc_service: is required',
                      self.validate([{'name': 'envoy.stat_sinks.metrics_service', 'typed_config': {
                          '@type': METRICS_SERVICE}}]))
        self.assertIn('stats_sinks[0].typed_config.grpc_service.google_grpc: field is not '
                      'supported',
                      self.validate([metrics_sink(grpc_service={'google_grpc': {}})]))
        self.assertIn('stats_sinks[0].typed_config.http_service: field is not supported',
                      self.validate([otlp_sink(http_service={})]))
        self.assertIn('stats_sinks[0].typed_config.grpc_service: is required',
                      self.validate([{'name': 'envoy.stat_sinks.open_telemetry',
                                      'typed_config': {'@type': OTLP}}]))
        self.assertIn('stats_sinks[0].typed_config.histogram_emit_mode',
                      self.validate([metrics_sink(histogram_emit_mode='BOTH')]))
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
