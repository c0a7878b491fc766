"""The admin endpoint: every path answers in Envoy's formats, methods are enforced, and bad
or hostile admin requests get a 4xx without disturbing petrel.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_admin.py -v
"""

import json
import tempfile
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import TcpEchoServer  # noqa: E402

PROMTOOL = '/usr/bin/promtool'
VALGRIND = shutil.which('valgrind')
STAT_LINE = re.compile(r'^(\S+): (-?\d+)$')
HIST_LINE = re.compile(r'^(\S+): (No recorded values|P0\(\S+,\S+\)( P[\d.]+\(\S+,\S+\)){9})$')


def config(port, admin, echo_port, cluster='echo', prefix='tcp'):
    # stats_flush_on_admin: histograms show what was recorded up to the request.
    return h.bootstrap([h.listener('tcp', port, [h.tcp_proxy(prefix, cluster)])],
                       [h.cluster(cluster, [echo_port])], admin_port=admin,
                       node={'id': 'node-1', 'cluster': 'mesh'}, stats_flush_on_admin=True)


def raw_admin(port, data, timeout=5):
    """Send raw bytes to the admin port and read until it closes; returns (status, bytes).
    status is None when petrel closed without an answer."""
    with h.tcp_connect(port, timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            resp = h.recv_until_eof(s)
        except ConnectionResetError:
            resp = b''
    m = re.match(rb'HTTP/1\.[01] (\d{3}) ', resp)
    return (int(m.group(1)) if m else None), resp


class AdminEndpointsTest(unittest.TestCase):
    """One petrel, with traffic through it, serving every read-only endpoint."""

    @classmethod
    def setUpClass(cls):
        cls.echo = TcpEchoServer()
        cls.port, cls.admin = h.free_ports(2)
        cls.cfg = config(cls.port, cls.admin, cls.echo.port)
        cls.p = h.Petrel(cls.cfg, concurrency=2)
        try:
            cls.p.start()
            with h.tcp_connect(cls.port) as s:
                s.sendall(b'hello')
                h.recv_exact(s, 5)
            cls.p.wait_stat('cluster.echo.upstream_cx_active', 0)
        except BaseException:
            cls.p.close()
            cls.echo.close()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.p.close()
        finally:
            cls.echo.close()

    def get(self, path):
        return self.p.admin_get(path)

    def test_ready(self):
        status, hdrs, body = self.get('/ready')
        self.assertEqual((status, body), (200, b'LIVE\n'))
        self.assertTrue(hdrs['content-type'].startswith('text/plain'))

    def test_help(self):
        status, _, body = self.get('/')
        self.assertEqual(status, 200)
        for path in ('/clusters', '/config_dump', '/listeners', '/ready', '/server_info',
                     '/stats', '/stats/prometheus', '/quitquitquit', '/logging', '/memory'):
            self.assertIn(path + ':', body.decode())

    def test_server_info(self):
        status, hdrs, body = self.get('/server_info')
        self.assertEqual(status, 200)
        self.assertEqual(hdrs['content-type'], 'application/json')
        info = json.loads(body)
        self.assertEqual(info['state'], 'LIVE')
        self.assertRegex(info['version'], r'^\d+\.\d+\.\d+')
        self.assertRegex(info['uptime_current_epoch'], r'^\d+s$')
        self.assertIn(self.p.config_path, info['command_line'])
        self.assertIn('--concurrency 2', info['command_line'])
        self.assertEqual(info['command_line_options']['concurrency'], 2)
        self.assertEqual(info['command_line_options']['config_path'], self.p.config_path)
        self.assertEqual(info['node'], {'id': 'node-1', 'cluster': 'mesh'})

    def test_stats_text(self):
        status, hdrs, body = self.get('/stats')
        self.assertEqual(status, 200)
        all_lines = body.decode().splitlines()
        self.assertTrue(all_lines)
        # Counters and gauges, then histograms (Envoy's order), each sorted by name.
        lines = [l for l in all_lines if STAT_LINE.match(l)]
        hists = all_lines[len(lines):]
        self.assertEqual(all_lines, lines + hists)
        for line in hists:
            self.assertRegex(line, HIST_LINE)
        hnames = [HIST_LINE.match(l).group(1) for l in hists]
        self.assertEqual(hnames, sorted(hnames))
        self.assertIn('cluster.echo.upstream_cx_connect_ms', hnames)
        names = [STAT_LINE.match(l).group(1) for l in lines]
        self.assertEqual(names, sorted(names))
        st = dict((STAT_LINE.match(l).group(1), int(STAT_LINE.match(l).group(2)))
                  for l in lines)
        lst = 'listener.127.0.0.1_%d.' % self.port
        for name in (lst + 'downstream_cx_total', lst + 'downstream_cx_active',
                     'cluster.echo.upstream_cx_total', 'cluster.echo.upstream_cx_active',
                     'cluster.echo.upstream_cx_connect_fail',
                     'cluster.echo.upstream_cx_rx_bytes_total',
                     'cluster.echo.upstream_cx_tx_bytes_total',
                     'cluster.echo.membership_total', 'tcp.tcp.downstream_cx_total',
                     'tcp.tcp.idle_timeout'):
            self.assertIn(name, st)
        self.assertEqual(st[lst + 'downstream_cx_total'], 1)
        self.assertEqual(st['cluster.echo.upstream_cx_tx_bytes_total'], 5)
        self.assertEqual(st['cluster.echo.membership_total'], 1)

    def test_stats_json(self):
        status, hdrs, body = self.get('/stats?format=json')
        self.assertEqual(status, 200)
        self.assertEqual(hdrs['content-type'], 'application/json')
        stats, hists, supported = h.histograms_json(body)
        self.assertEqual(stats['tcp.tcp.downstream_cx_total'], 1)
        self.assertEqual(stats, self.p.stats())
        # Envoy's histograms object: the quantiles, and each histogram's values per quantile.
        self.assertEqual(supported, [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100])
        self.assertIn('cluster.echo.upstream_cx_connect_ms', hists)
        for values in hists.values():
            self.assertEqual(len(values), 10)
            for v in values:
                self.assertEqual(set(v), {'interval', 'cumulative'})

    def test_stats_filter(self):
        status, _, body = self.get('/stats?filter=^cluster\\.echo\\.upstream_cx_(total|active)$')
        self.assertEqual(status, 200)
        self.assertEqual(body.decode(), 'cluster.echo.upstream_cx_active: 0\n'
                                        'cluster.echo.upstream_cx_total: 1\n')
        # Percent-encoded regex, combined with JSON.
        status, _, body = self.get('/stats?format=json&filter=%5Etcp%5C.')
        self.assertEqual(status, 200)
        names = [s['name'] for s in json.loads(body)['stats']]
        self.assertTrue(names)
        self.assertTrue(all(n.startswith('tcp.') for n in names), names)
        status, _, body = self.get('/stats?filter=no_such_stat_anywhere')
        self.assertEqual((status, body), (200, b''))

    def test_stats_usedonly(self):
        status, _, body = self.get('/stats?usedonly')
        self.assertEqual(status, 200)
        st = dict(l.split(': ') for l in body.decode().splitlines())
        self.assertIn('tcp.tcp.downstream_cx_total', st)
        self.assertNotIn('tcp.tcp.idle_timeout', st)

    def test_stats_bad_regex(self):
        status, _, body = self.get('/stats?filter=(')
        self.assertEqual(status, 400)
        status, _, _ = self.get('/stats/prometheus?filter=%5B')
        self.assertEqual(status, 400)
        self.assertEqual(self.get('/ready')[0], 200)

    def test_prometheus(self):
        status, hdrs, body = self.get('/stats/prometheus')
        self.assertEqual(status, 200)
        self.assertTrue(hdrs['content-type'].startswith('text/plain; version=0.0.4'))
        text = body.decode()
        self.assertIn('envoy_cluster_upstream_cx_total{envoy_cluster_name="echo"} 1\n', text)
        self.assertIn('# TYPE envoy_cluster_upstream_cx_total counter\n', text)
        self.assertIn('# TYPE envoy_cluster_upstream_cx_active gauge\n', text)
        self.assertEqual(self.get('/stats?format=prometheus')[2], body)
        self.assertIn('# TYPE envoy_cluster_upstream_cx_connect_ms histogram\n', text)
        self.assertIn('envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name="echo",'
                      'le="+Inf"} 1\n', text)
        self.assertIsNone(h.promtool_check(body))

    def test_config_dump(self):
        status, hdrs, body = self.get('/config_dump')
        self.assertEqual(status, 200)
        self.assertEqual(hdrs['content-type'], 'application/json')
        dump = json.loads(body)
        self.assertEqual(dump['configs'][0]['@type'],
                         'type.googleapis.com/envoy.admin.v3.BootstrapConfigDump')
        self.assertEqual(dump['configs'][0]['bootstrap'], self.cfg)

    def test_listeners(self):
        status, _, body = self.get('/listeners')
        self.assertEqual((status, body.decode()), (200, 'tcp::127.0.0.1:%d\n' % self.port))
        status, _, body = self.get('/listeners?format=json')
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body), {'listener_statuses': [{
            'name': 'tcp', 'local_address': h.socket_address('127.0.0.1', self.port)}]})

    def test_clusters(self):
        status, _, body = self.get('/clusters')
        self.assertEqual(status, 200)
        lines = body.decode().splitlines()
        host = 'echo::127.0.0.1:%d::' % self.echo.port
        self.assertIn(host + 'cx_total::1', lines)
        self.assertIn(host + 'cx_active::0', lines)
        self.assertIn(host + 'cx_connect_fail::0', lines)
        self.assertIn(host + 'health_flags::healthy', lines)
        self.assertIn('echo::observability_name::echo', lines)
        for line in lines:
            self.assertRegex(line, r'^echo::')
        status, _, body = self.get('/clusters?format=json')
        self.assertEqual(status, 200)
        cs = json.loads(body)['cluster_statuses']
        self.assertEqual([c['name'] for c in cs], ['echo'])
        hs = cs[0]['host_statuses']
        self.assertEqual(hs[0]['address'], h.socket_address('127.0.0.1', self.echo.port))
        self.assertEqual({s['name']: s['value'] for s in hs[0]['stats']}['cx_total'], 1)
        self.assertEqual(hs[0]['health_status']['eds_health_status'], 'HEALTHY')

    def test_memory(self):
        status, hdrs, body = self.get('/memory')
        self.assertEqual(status, 200)
        mem = json.loads(body)
        for key in ('allocated', 'heap_size', 'buffer_chunks'):
            self.assertRegex(mem[key], r'^\d+$')
        if not h.SANITIZE:          # ASan's allocator does not feed mallinfo2()
            self.assertGreater(int(mem['allocated']), 0)

    def test_head(self):
        status, resp = raw_admin(self.admin, b'HEAD /ready HTTP/1.1\r\nHost: x\r\n\r\n')
        self.assertEqual(status, 200)
        self.assertTrue(resp.endswith(b'\r\n\r\n'), resp)     # no body

    def test_unknown_path_404(self):
        for path in ('/nope', '/stats/', '/readyz', '/' + 'x' * 2000):
            self.assertEqual(self.get(path)[0], 404, path)

    def test_post_only_endpoints_reject_get(self):
        for path in ('/quitquitquit', '/logging', '/drain_listeners'):
            status, hdrs, _ = self.get(path)
            self.assertEqual(status, 405, path)
            self.assertEqual(hdrs.get('allow'), 'POST', path)
        # ... and read-only ones reject POST (nothing changes).
        status, hdrs, _ = self.p.admin_post('/stats')
        self.assertEqual(status, 405)
        self.assertIn('GET', hdrs.get('allow'))
        self.assertTrue(self.p.alive())
        self.assertEqual(self.get('/ready')[0], 200)

    def test_bad_requests_get_4xx_and_petrel_keeps_serving(self):
        cases = [
            ('garbage', b'\x00\x01\x02 not http at all\r\n\r\n'),
            ('no version', b'GET /ready\r\n\r\n'),
            ('oversized header', b'GET /ready HTTP/1.1\r\nHost: x\r\nX-Big: ' +
             b'a' * 20000 + b'\r\n\r\n'),
            ('too many headers', b'GET /ready HTTP/1.1\r\nHost: x\r\n' +
             b''.join(b'H%d: v\r\n' % i for i in range(200)) + b'\r\n'),
            ('huge target', b'GET /' + b'a' * 20000 + b' HTTP/1.1\r\nHost: x\r\n\r\n'),
            ('bad header line', b'GET /ready HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n'),
            ('missing host', b'GET /ready HTTP/1.1\r\n\r\n'),
            ('unknown method', b'BREW /ready HTTP/1.1\r\nHost: x\r\n\r\n'),
        ]
        for what, data in cases:
            with self.subTest(what):
                status, resp = raw_admin(self.admin, data)
                self.assertIsNotNone(status, 'no answer: %r' % resp[:200])
                self.assertTrue(400 <= status < 500, '%s -> %r' % (what, resp[:200]))
                self.assertEqual(self.get('/ready')[:3:2], (200, b'LIVE\n'))
        # An unsupported HTTP version is answered too (505 is the precise status).
        status, _ = raw_admin(self.admin, b'GET /ready HTTP/9.9\r\nHost: x\r\n\r\n')
        self.assertIn(status, (400, 505))
        self.assertTrue(self.p.alive())

    def test_half_requests_and_disconnects(self):
        # Clients that go away mid-request, or send nothing, cost nothing lasting.
        for data in (b'', b'GET /rea', b'GET /ready HTTP/1.1\r\nHost: x\r\n'):
            s = h.tcp_connect(self.admin)
            if data:
                s.sendall(data)
            s.close()
        with h.tcp_connect(self.admin) as s:
            s.sendall(b'GET /ready HTTP/1.1\r\nHost: x\r\n')
            s.shutdown(socket.SHUT_WR)             # EOF before the blank line
            self.assertEqual(h.recv_until_eof(s), b'')   # closed, nothing to answer
        self.assertEqual(self.get('/ready')[0], 200)

    def test_many_concurrent_admin_requests(self):
        results = []

        def one():
            try:
                results.append(self.get('/stats?format=json')[0])
            except Exception as e:
                results.append(repr(e))

        threads = [threading.Thread(target=one) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(h.scaled(30))
        self.assertEqual(results, [200] * 30)


class AdminControlTest(unittest.TestCase):
    """Endpoints that change petrel: each gets its own process."""

    def test_quitquitquit_exits_zero(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(config(port, admin, echo.port)) as p:
                # An open proxied connection does not hold the exit up.
                with h.tcp_connect(port) as s:
                    s.sendall(b'x')
                    h.recv_exact(s, 1)
                    status, _, body = p.admin_post('/quitquitquit')
                    self.assertEqual((status, body), (200, b'OK\n'))
                    self.assertEqual(p.wait(10), 0)
                    self.assertEqual(h.recv_until_eof(s), b'')
                self.assertIn('/quitquitquit', p.log())

    @unittest.skipIf(h.SANITIZE or not VALGRIND, 'needs valgrind and a build without sanitizers')
    def test_stop_with_admin_requests_half_sent(self):
        # Clients still sending their admin requests when petrel stops: their state used to be
        # freed with its request timer still in the event loop's timer heap, and later timer
        # changes (outlier detection stopping) wrote into the freed memory, which made the
        # loop's destruction crash in free() now and then. The writes happen in libev, which
        # ASan does not see; valgrind does, every time.
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            cfg = config(port, admin, echo.port)
            cfg['static_resources']['clusters'][0]['outlier_detection'] = {'interval': '1s'}
            p = h.Petrel(cfg, start_timeout=60)
            self.addCleanup(p.close)
            wrapper = p.write_file('valgrind-petrel', '#!/bin/sh\nexec %s -q --error-exitcode=99 '
                                   '%s "$@"\n' % (VALGRIND, p.binary))
            os.chmod(wrapper, 0o755)
            p.binary = wrapper
            p.start()
            socks = [h.tcp_connect(admin) for _ in range(8)]
            try:
                for s in socks:
                    s.sendall(b'GET /ready HTTP/1.1\r\nHost: x\r\n')  # no blank line
                self.assertEqual(p.admin_get('/ready', timeout=30)[0], 200)
                self.assertEqual(p.stop(), 0, p.log()[-3000:])
            finally:
                for s in socks:
                    s.close()

    def test_quit_while_a_response_is_still_flushing(self):
        # A big answer to a client that stops reading is left flushing; petrel must still
        # exit (promptly, and without leaking it).
        port, admin = h.free_ports(2)
        clusters = [h.cluster('c%d' % i, [1000 + i % 1000]) for i in range(4000)]
        cfg = h.bootstrap([h.listener('tcp', port, [h.tcp_proxy('tcp', 'c0')])], clusters,
                          admin_port=admin)
        with h.Petrel(cfg, start_timeout=30) as p:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.addCleanup(s.close)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(h.scaled(30))
            s.connect(('127.0.0.1', admin))
            s.sendall(b'GET /stats?format=json HTTP/1.1\r\nHost: x\r\n\r\n')
            self.assertTrue(s.recv(100).startswith(b'HTTP/1.1 200'))
            # ~9 MiB answered, a few MiB in socket buffers: the rest waits in petrel.
            status, _, _ = p.admin_post('/quitquitquit')
            self.assertEqual(status, 200)
            self.assertEqual(p.wait(10), 0)

    def test_logging_level(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(config(port, admin, echo.port)) as p:
                self.assertNotIn('][debug]', p.log())
                status, _, body = p.admin_post('/logging?level=debug')
                self.assertEqual(status, 200)
                self.assertIn(b'debug', body)
                p.admin_get('/ready')
                p.wait_log(r'\]\[debug\] admin: GET /ready -> 200')
                status, _, body = p.admin_post('/logging')
                self.assertEqual((status, body.count(b'debug')), (200, 1))
                status, _, _ = p.admin_post('/logging?level=warning')
                self.assertEqual(status, 200)
                n = p.log().count('][debug]')
                p.admin_get('/ready')
                self.assertEqual(p.log().count('][debug]'), n)
                status, _, body = p.admin_post('/logging?level=loud')
                self.assertEqual(status, 400)
                self.assertIn(b'loud', body)
                _, _, body = p.admin_post('/logging')
                self.assertIn(b'warning', body)          # unchanged by the bad request
                info = json.loads(p.admin_get('/server_info')[2])
                self.assertEqual(info['command_line_options']['log_level'], 'warning')

    def test_drain_listeners(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(config(port, admin, echo.port)) as p:
                with h.tcp_connect(port) as s:
                    s.sendall(b'1')
                    h.recv_exact(s, 1)
                    status, _, _ = p.admin_post('/drain_listeners')
                    self.assertEqual(status, 200)
                    h.wait_until(lambda: not h.port_listening(port), 10,
                                 message='listener still open after /drain_listeners')
                    with self.assertRaises(ConnectionRefusedError):
                        socket.create_connection(('127.0.0.1', port), timeout=5).close()
                    status, _, body = p.admin_get('/ready')
                    self.assertEqual((status, body), (503, b'DRAINING\n'))
                    self.assertEqual(json.loads(p.admin_get('/server_info')[2])['state'],
                                     'DRAINING')
                    # The open connection still relays.
                    s.sendall(b'2')
                    self.assertEqual(h.recv_exact(s, 1), b'2')

    def test_prometheus_escapes_odd_names(self):
        # Cluster names and stat prefixes are user text; the exposition must stay valid.
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            cfg = config(port, admin, echo.port, cluster='we"ird\\name', prefix='pre-fix.x')
            with h.Petrel(cfg) as p:
                status, _, body = p.admin_get('/stats/prometheus')
                self.assertEqual(status, 200)
                self.assertIn(b'envoy_cluster_name="we\\"ird\\\\name"', body)
                self.assertIsNone(h.promtool_check(body))

    def test_config_dump_of_yaml_config(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            cfg = config(port, admin, echo.port)
            with h.Petrel(cfg, fmt='yaml') as p:
                dump = json.loads(p.admin_get('/config_dump')[2])
                self.assertEqual(dump['configs'][0]['bootstrap'], cfg)


class AdminAccessLogTest(unittest.TestCase):
    """admin.access_log and the deprecated access_log_path: every admin request is logged."""

    def test_admin_requests_are_logged(self):
        with TcpEchoServer() as echo, tempfile.TemporaryDirectory() as d:
            port, admin = h.free_ports(2)
            cfg = config(port, admin, echo.port)
            custom, legacy = os.path.join(d, 'admin.log'), os.path.join(d, 'legacy.log')
            cfg['admin']['access_log'] = [{
                'name': 'envoy.access_loggers.file',
                'typed_config': {
                    '@type': 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.'
                             'FileAccessLog',
                    'path': custom,
                    'log_format': {'text_format_source': {'inline_string':
                        'ADMIN %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %BYTES_SENT% '
                        '%REQ(USER-AGENT)% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\n'}}}}]
            cfg['admin']['access_log_path'] = legacy
            cfg['admin']['profile_path'] = os.path.join(d, 'envoy.prof')  # accepted
            with h.Petrel(cfg) as p:
                self.assertEqual(p.admin_get('/ready')[0], 200)
                self.assertEqual(p.admin_get('/nope')[0], 404)

                def lines(path):
                    try:
                        with open(path) as f:
                            return f.read().splitlines()
                    except FileNotFoundError:
                        return []
                h.wait_until(lambda: any('/nope' in l for l in lines(custom)) and
                             any('/nope' in l for l in lines(legacy)), 10)
            got = [l for l in lines(custom) if l.startswith('ADMIN ')]
            self.assertRegex(got[0], r'^ADMIN GET /ready 200 \d+ \S+ 127\.0\.0\.1$')
            self.assertRegex(got[-1], r'^ADMIN GET /nope 404 \d+ ')
            # Envoy's default format: [time] "GET /ready HTTP/1.1" 200 ...
            self.assertRegex(lines(legacy)[0], r'"GET /ready HTTP/1\.1" 200 ')

    def test_bad_access_log_path(self):
        with TcpEchoServer() as echo, tempfile.TemporaryDirectory() as d:
            port, admin = h.free_ports(2)
            cfg = config(port, admin, echo.port)
            cfg['admin']['access_log_path'] = os.path.join(d, 'no', 'such', 'dir', 'a.log')
            path = os.path.join(d, 'c.json')
            with open(path, 'w') as f:
                json.dump(cfg, f)
            rc, out, err = h.run_petrel(['--mode', 'validate', '-c', path])
            self.assertEqual(rc, 1, err)
            self.assertIn('admin.access_log_path: cannot open', out + err)


if __name__ == '__main__':
    unittest.main()
