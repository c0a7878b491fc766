"""Log lines on stderr: "[<UTC timestamp>][<thread>][<level>] message", thread "main" or
"w<N>" for worker N, filtered by -l.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_logs.py -v
"""

import datetime
import os
import re
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import TcpEchoServer  # noqa: E402

LINE = re.compile(r'^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z\]\[(main|w\d+)\]'
                  r'\[(trace|debug|info|warning|error|critical)\] \S.*$')


def proxy_config(port, admin, endpoints):
    return h.bootstrap([h.listener('tcp', port, [h.tcp_proxy('tcp', 'up')])],
                       [h.cluster('up', endpoints)], admin_port=admin)


def parse(test, log):
    """Every line must match the format; returns [(time, thread, level, line)]."""
    out = []
    for line in log.splitlines():
        m = LINE.match(line)
        test.assertIsNotNone(m, 'badly formatted log line: %r' % line)
        ts = datetime.datetime.strptime(m.group(1), '%Y-%m-%dT%H:%M:%S.%f')
        out.append((ts, m.group(2), m.group(3), line))
    return out



class LogFormatTest(unittest.TestCase):

    def test_format_timestamps_and_main_thread(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(proxy_config(port, admin, [echo.port])) as p:
                before = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
                p.signal(signal.SIGTERM)
                self.assertEqual(p.wait(10), 0)
                lines = parse(self, p.log())
        self.assertTrue(lines)
        # Start-up and shutdown are logged by the main thread.
        self.assertTrue(any(t == 'main' and 'started' in l for _, t, _, l in lines))
        self.assertTrue(any(t == 'main' and 'caught SIGTERM' in l for _, t, _, l in lines))
        self.assertTrue(any('listener tcp on 127.0.0.1:%d' % port in l for *_, l in lines))
        # UTC timestamps, non-decreasing, close to now (loose: just not another zone).
        times = [ts for ts, *_ in lines]
        self.assertEqual(times, sorted(times))
        self.assertLess(abs((times[-1] - before).total_seconds()), 600)

    def test_worker_ids(self):
        # Debug lines from the workers: a dead upstream makes each connection log its
        # connect failure on the worker that accepted it.
        dead = h.dead_port()
        port, admin = h.free_ports(2)
        with h.Petrel(proxy_config(port, admin, [dead]), concurrency=2, log_level='debug') as p:
            seen = set()
            for _ in range(200):
                with h.tcp_connect(port) as s:
                    s.settimeout(h.scaled(5))
                    try:
                        s.recv(1)
                    except ConnectionResetError:
                        pass
                seen = {t for _, t, _, l in parse(self, p.log())
                        if 'tcp_proxy: connect to' in l}
                if seen == {'w0', 'w1'}:
                    break
            self.assertEqual(seen, {'w0', 'w1'})
            threads = {t for _, t, _, _ in parse(self, p.log())}
            self.assertEqual(threads, {'main', 'w0', 'w1'})

    def test_warning_suppresses_info(self):
        dead = h.dead_port()
        port, admin = h.free_ports(2)
        with h.Petrel(proxy_config(port, admin, [dead]), log_level='warning') as p:
            with h.tcp_connect(port) as s:
                s.settimeout(h.scaled(5))
                try:
                    s.recv(1)
                except ConnectionResetError:
                    pass
            p.wait_stat('cluster.up.upstream_cx_connect_fail', 1)
            self.assertEqual(p.stop(), 0)
            lines = parse(self, p.log())
        self.assertFalse([l for _, _, lvl, l in lines if lvl in ('trace', 'debug', 'info')])

    def test_debug_shows_debug_lines(self):
        dead = h.dead_port()
        port, admin = h.free_ports(2)
        with h.Petrel(proxy_config(port, admin, [dead]), log_level='debug') as p:
            with h.tcp_connect(port) as s:
                s.settimeout(h.scaled(5))
                try:
                    s.recv(1)
                except ConnectionResetError:
                    pass
            p.wait_log(r'\[w0\]\[debug\] tcp_proxy: connect to 127\.0\.0\.1:%d failed' % dead)
            lines = parse(self, p.log())
        levels = {lvl for _, _, lvl, _ in lines}
        self.assertIn('debug', levels)
        self.assertIn('info', levels)
        self.assertNotIn('trace', levels)

    def test_info_hides_debug(self):
        dead = h.dead_port()
        port, admin = h.free_ports(2)
        with h.Petrel(proxy_config(port, admin, [dead])) as p:
            with h.tcp_connect(port) as s:
                s.settimeout(h.scaled(5))
                try:
                    s.recv(1)
                except ConnectionResetError:
                    pass
            p.wait_stat('cluster.up.upstream_cx_connect_fail', 1)
            lines = parse(self, p.log())
        self.assertEqual({lvl for _, _, lvl, _ in lines}, {'info'})

    def test_lines_do_not_interleave(self):
        # Many workers logging at once: each line stays whole (one write per line).
        dead = h.dead_port()
        port, admin = h.free_ports(2)
        with h.Petrel(proxy_config(port, admin, [dead]), concurrency=2, log_level='trace') as p:
            import threading

            def burst():
                for _ in range(20):
                    try:
                        with h.tcp_connect(port) as s:
                            s.settimeout(h.scaled(5))
                            s.recv(1)
                    except OSError:
                        pass

            threads = [threading.Thread(target=burst) for _ in range(5)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(h.scaled(30))
            p.wait_stat('cluster.up.upstream_cx_connect_fail', 100)
            self.assertEqual(p.stop(), 0)
            parse(self, p.log())


if __name__ == '__main__':
    unittest.main()
