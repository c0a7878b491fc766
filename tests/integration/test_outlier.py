"""Outlier detection end to end: a sick upstream (HttpUpstream answering 503, or a port that
refuses connections) among healthy ones is ejected after its consecutive failures, traffic
avoids it, it comes back after base_ejection_time x times ejected; max_ejection_percent and
enforcement are honoured; connect failures count as local-origin failures (split mode) or as
5xx. Clusters from a watched CDS file: an ejection survives an update that keeps the host, a
removed host stops counting, a host listed again is new, and removing outlier_detection brings
the hosts back. Timing assertions are lower bounds (plus generous upper bounds)."""

import json
import os
import re
import shutil
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer  # noqa: E402

OD = 'cluster.svc.outlier_detection.'



def http_config(port, admin, endpoints, od):
    hcm = h.http_connection_manager('ingress', h.route_config([
        h.vhost('all', ['*'], [h.route_prefix('/', 'svc', timeout='5s')])]))
    return h.bootstrap([h.listener('http', port, [hcm])],
                       [h.cluster('svc', endpoints, outlier_detection=od)], admin_port=admin)


def send(port, n):
    """n sequential GETs; their statuses."""
    return [h.http_request(port, 'GET', '/echo').status for _ in range(n)]


def clusters_text(p):
    status, _, body = p.admin_get('/clusters')
    assert status == 200, status
    return body.decode()


def ejected_hosts(p):
    return re.findall(r'^svc::(\S+)::health_flags::\S*failed_outlier_check', clusters_text(p),
                      re.M)


class ConsecutiveTest(unittest.TestCase):

    def test_eject_avoid_return_and_backoff(self):
        base = 2.0 * h.SLOW  # seconds; short, but long enough to watch traffic avoid the host
        base_ms = int(base * 1000)
        with HttpUpstream(name='a') as a, HttpUpstream(name='b') as b, \
                HttpUpstream(name='bad', default_status=503) as bad:
            port, admin = h.free_ports(2)
            cfg = http_config(port, admin, [a.port, b.port, bad.port],
                              {'base_ejection_time': '%gs' % base, 'interval': '300s'})
            with h.Petrel(cfg, admin_port=admin) as p:
                self.assertEqual(p.stat(OD + 'ejections_active'), 0)
                # Round robin over three hosts: the bad one sees its fifth 503 by request 15.
                t_before = time.monotonic()
                statuses = send(port, 15)
                self.assertEqual(statuses.count(503), 5)
                p.wait_stat(OD + 'ejections_active', 1)
                t_seen = time.monotonic()
                self.assertEqual(p.stat(OD + 'ejections_detected_consecutive_5xx'), 1)
                self.assertEqual(p.stat(OD + 'ejections_enforced_consecutive_5xx'), 1)
                self.assertEqual(p.stat(OD + 'ejections_enforced_total'), 1)
                # 503 is a gateway failure too: detected, not enforced by default.
                self.assertEqual(p.stat(OD + 'ejections_detected_consecutive_gateway_failure'), 1)
                self.assertEqual(p.stat(OD + 'ejections_enforced_consecutive_gateway_failure'), 0)
                self.assertEqual(ejected_hosts(p), ['127.0.0.1:%d' % bad.port])
                self.assertEqual(p.stat('cluster.svc.membership_healthy'), 2)

                # Traffic avoids it (checked only if the window ended before the earliest
                # possible return: the ejection cannot have started before t_before).
                bad_before = len(bad.requests)
                statuses = send(port, 20)
                if time.monotonic() < t_before + base:
                    self.assertEqual(statuses, [200] * 20)
                    self.assertEqual(len(bad.requests), bad_before)
                    self.assertEqual(len(a.requests) + len(b.requests), 10 + 20)

                # Back after base_ejection_time, not before.
                p.wait_stat(OD + 'ejections_active', 0, timeout=base + 20)
                t_back = time.monotonic()
                self.assertGreaterEqual(t_back - t_before, base)
                self.assertLess(t_back - t_seen, base + 20 * h.SLOW)
                self.assertEqual(ejected_hosts(p), [])
                p.wait_log(r'host 127\.0\.0\.1:%d is back' % bad.port)

                # Still sick: ejected again, for twice as long (no healthy interval between).
                t_before2 = time.monotonic()
                send(port, 15)
                p.wait_stat(OD + 'ejections_enforced_consecutive_5xx', 2)
                p.wait_log(r'ejected host 127\.0\.0\.1:%d \(consecutive_5xx\), ejection 2, '
                           r'for %dms' % (bad.port, 2 * base_ms))
                p.wait_stat(OD + 'ejections_active', 0, timeout=2 * base + 20)
                self.assertGreaterEqual(time.monotonic() - t_before2, 2 * base)
                self.assertEqual(p.stat(OD + 'ejections_enforced_total'), 2)

    def test_max_ejection_percent_ejects_at_least_one(self):
        # Three sick hosts, default max_ejection_percent 10%: 10% of three hosts is not one
        # host, but one may always go; the others overflow.
        with HttpUpstream(name='a', default_status=503) as a, \
                HttpUpstream(name='b', default_status=503) as b, \
                HttpUpstream(name='c', default_status=503) as c:
            port, admin = h.free_ports(2)
            cfg = http_config(port, admin, [a.port, b.port, c.port], {})
            with h.Petrel(cfg, admin_port=admin) as p:
                send(port, 15)
                p.wait_stat(OD + 'ejections_active', 1)
                send(port, 20)
                p.wait_stat(OD + 'ejections_overflow', lambda v: v is not None and v >= 2)
                self.assertEqual(p.stat(OD + 'ejections_active'), 1)
                self.assertEqual(p.stat(OD + 'ejections_enforced_total'), 1)
                self.assertGreaterEqual(p.stat(OD + 'ejections_detected_consecutive_5xx'), 3)
                self.assertEqual(len(ejected_hosts(p)), 1)

    def test_enforcing_zero_detects_without_ejecting(self):
        with HttpUpstream(name='a') as a, HttpUpstream(name='b') as b, \
                HttpUpstream(name='bad') as bad:
            bad.set_status(503)
            port, admin = h.free_ports(2)
            cfg = http_config(port, admin, [a.port, b.port, bad.port],
                              {'enforcing_consecutive_5xx': 0})
            with h.Petrel(cfg, admin_port=admin) as p:
                # The main thread restarts the count when it handles a detection: the next
                # run of five is sent after that, or its failures would add to the first run.
                statuses = send(port, 15)
                p.wait_stat(OD + 'ejections_detected_consecutive_5xx', 1)
                statuses += send(port, 15)
                p.wait_stat(OD + 'ejections_detected_consecutive_5xx', 2)
                self.assertEqual(p.stat(OD + 'ejections_enforced_consecutive_5xx'), 0)
                self.assertEqual(p.stat(OD + 'ejections_enforced_total'), 0)
                self.assertEqual(p.stat(OD + 'ejections_active'), 0)
                self.assertEqual(ejected_hosts(p), [])
                # The sick host kept its share of the traffic.
                self.assertEqual(len(bad.requests), 10)
                self.assertEqual(statuses.count(503), 10)


class LocalOriginTest(unittest.TestCase):

    def test_connect_failures_split(self):
        with HttpUpstream(name='a') as a, HttpUpstream(name='b') as b:
            dead = h.dead_port()
            port, admin = h.free_ports(2)
            cfg = http_config(port, admin, [a.port, b.port, dead],
                              {'split_external_local_origin_errors': True})
            with h.Petrel(cfg, admin_port=admin) as p:
                statuses = send(port, 15)
                # The dead host's requests fail (503, or 504 if the pool keeps retrying the
                # connection until the route timeout); the healthy hosts answer theirs.
                self.assertGreaterEqual(statuses.count(200), 10)
                self.assertTrue(all(st in (200, 503, 504) for st in statuses), statuses)
                p.wait_stat(OD + 'ejections_enforced_consecutive_local_origin_failure', 1)
                self.assertEqual(
                    p.stat(OD + 'ejections_detected_consecutive_local_origin_failure'), 1)
                self.assertEqual(p.stat(OD + 'ejections_detected_consecutive_5xx'), 0)
                self.assertEqual(p.stat(OD + 'ejections_detected_consecutive_gateway_failure'),
                                 0)
                self.assertEqual(p.stat(OD + 'ejections_active'), 1)
                self.assertEqual(ejected_hosts(p), ['127.0.0.1:%d' % dead])
                self.assertEqual(send(port, 10), [200] * 10)

    def test_connect_failures_count_as_5xx_when_not_split(self):
        with HttpUpstream(name='a') as a, HttpUpstream(name='b') as b:
            dead = h.dead_port()
            port, admin = h.free_ports(2)
            cfg = http_config(port, admin, [a.port, b.port, dead], {})
            with h.Petrel(cfg, admin_port=admin) as p:
                send(port, 15)
                p.wait_stat(OD + 'ejections_enforced_consecutive_5xx', 1)
                self.assertEqual(p.stat(OD + 'ejections_detected_consecutive_gateway_failure'),
                                 1)
                self.assertEqual(
                    p.stat(OD + 'ejections_detected_consecutive_local_origin_failure'), 0)
                self.assertEqual(ejected_hosts(p), ['127.0.0.1:%d' % dead])
                self.assertEqual(send(port, 10), [200] * 10)

    def test_tcp_proxy_connect_failures(self):
        with TcpEchoServer() as echo:
            dead = h.dead_port()
            port, admin = h.free_ports(2)
            cfg = h.bootstrap([h.listener('tcp', port, [h.tcp_proxy('tcp', 'svc')])],
                              [h.cluster('svc', [echo.port, dead],
                                         outlier_detection={
                                             'split_external_local_origin_errors': True})],
                              admin_port=admin)
            with h.Petrel(cfg, admin_port=admin) as p:
                for _ in range(10):
                    with h.tcp_connect(port) as s:
                        s.settimeout(h.scaled(5))
                        try:
                            s.sendall(b'x')
                            s.recv(1)
                        except OSError:
                            pass
                p.wait_stat(OD + 'ejections_enforced_consecutive_local_origin_failure', 1)
                self.assertEqual(ejected_hosts(p), ['127.0.0.1:%d' % dead])
                for _ in range(4):
                    with h.tcp_connect(port) as s:
                        s.sendall(b'ping')
                        self.assertEqual(h.recv_exact(s, 4), b'ping')


class ConfigTest(unittest.TestCase):

    def test_validate(self):
        port, admin = h.free_ports(2)
        cfg = http_config(port, admin, [1234], {'max_ejection_percent': 101,
                                                'base_ejection_time': '10s',
                                                'max_ejection_time': '5s',
                                                'monitors': {}})
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'c.json')
            with open(path, 'w') as f:
                json.dump(cfg, f)
            rc, _, err = h.run_petrel(['--mode', 'validate', '-c', path])
        self.assertEqual(rc, 1)
        od = 'static_resources.clusters[0].outlier_detection'
        self.assertIn(od + '.max_ejection_percent: 101 is out of range [0, 100]', err)
        self.assertIn(od + '.max_ejection_time: cannot be smaller than base_ejection_time', err)
        self.assertIn(od + '.monitors: field is not supported', err)


def read_lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


class EventLogTest(unittest.TestCase):
    """cluster_manager.outlier_detection.event_log_path: Envoy's outlier event log, one
    OutlierDetectionEvent JSON line per ejection (enforced or not) and per return."""

    def test_ejection_and_return_are_logged(self):
        with tempfile.TemporaryDirectory() as d, HttpUpstream(name='a') as a, \
                HttpUpstream(name='bad', default_status=503) as bad:
            log = os.path.join(d, 'outlier.log')
            port, admin = h.free_ports(2)
            cfg = http_config(port, admin, [a.port, bad.port],
                              {'base_ejection_time': '1s', 'interval': '300s'})
            cfg['cluster_manager'] = {'outlier_detection': {'event_log_path': log}}
            with h.Petrel(cfg, admin_port=admin) as p:
                self.assertEqual(send(port, 10).count(503), 5)
                p.wait_stat(OD + 'ejections_active', 1)
                p.wait_stat(OD + 'ejections_active', 0, timeout=30)  # back after ~1 s
                h.wait_until(lambda: len(read_lines(log)) >= 3, 10,
                             message='three events logged')
            events = [json.loads(line) for line in read_lines(log)]
        url = '127.0.0.1:%d' % bad.port
        for e in events:
            self.assertEqual(e['cluster_name'], 'svc')
            self.assertEqual(e['upstream_url'], url)
            self.assertRegex(e['timestamp'], r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$')
        # 503 is a gateway failure too: detected first, not enforced by default, logged so.
        gw, five, back = events[:3]
        self.assertEqual((gw['action'], gw['type'], gw['enforced']),
                         ('EJECT', 'CONSECUTIVE_GATEWAY_FAILURE', False))
        self.assertEqual((five['action'], five['type'], five['enforced']),
                         ('EJECT', 'CONSECUTIVE_5XX', True))
        self.assertEqual(five['num_ejections'], 1)
        self.assertEqual(five['eject_consecutive_event'], {})
        self.assertNotIn('secs_since_last_action', five)  # its first action
        self.assertEqual((back['action'], back['enforced']), ('UNEJECT', False))
        self.assertEqual(back['num_ejections'], 1)
        self.assertIn(back['secs_since_last_action'], (0, 1, 2))
        self.assertNotIn('eject_consecutive_event', back)

    def test_bad_values(self):
        port, admin = h.free_ports(2)
        cfg = http_config(port, admin, [1234], {})
        cfg['cluster_manager'] = {'outlier_detection': {
            'event_logger': [{'name': 'x', 'typed_config': {}}]}}
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'c.json')
            with open(path, 'w') as f:
                json.dump(cfg, f)
            rc, _, err = h.run_petrel(['--mode', 'validate', '-c', path])
            self.assertEqual(rc, 1)
            self.assertIn('cluster_manager.outlier_detection.event_logger: field is not '
                          'supported', err)
            # A file that cannot be opened fails the start, naming the field.
            cfg['cluster_manager'] = {'outlier_detection': {
                'event_log_path': os.path.join(d, 'no', 'such', 'dir', 'od.log')}}
            p = h.Petrel(cfg, admin_port=admin)
            with self.assertRaises(Exception):
                p.start()
            text = p.log()
            p.close()
            self.assertIn('cluster_manager.outlier_detection.event_log_path: cannot open', text)


CLUSTER_TYPE = 'type.googleapis.com/envoy.config.cluster.v3.Cluster'


class UpdateTest(unittest.TestCase):
    """Cluster 'svc' from a watched CDS file: outlier detection follows its updates."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='petrel-od-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.cds_path = os.path.join(self.dir, 'cds.json')
        self.version = 0

    def publish(self, *clusters):
        """Writes the next CDS version (atomically) and returns it."""
        self.version += 1
        resources = []
        for c in clusters:
            c = dict(c)
            c['@type'] = CLUSTER_TYPE
            resources.append(c)
        with open(self.cds_path + '.tmp', 'w') as f:
            json.dump({'version_info': str(self.version), 'resources': resources}, f)
        os.replace(self.cds_path + '.tmp', self.cds_path)
        return str(self.version)

    def wait_version(self, p, version):
        h.wait_until(lambda: p.admin_get('/stats')[2].decode().find(
            'cluster_manager.cds.version_text: "%s"' % version) >= 0, 10,
            message='cds version %s applied' % version)

    def config(self, port, admin, static_port):
        """svc from CDS beside a static cluster."""
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], [h.route_prefix('/', 'svc', timeout='5s')])],
            validate_clusters=False))
        return h.bootstrap([h.listener('http', port, [hcm])],
                           [h.cluster('local', [static_port])], admin_port=admin,
                           dynamic_resources={'cds_config': {
                               'path_config_source': {'path': self.cds_path},
                               'resource_api_version': 'V3'}})

    def test_ejection_survives_unrelated_update(self):
        od = {'base_ejection_time': '300s', 'interval': '300s'}
        with HttpUpstream(name='a') as a, HttpUpstream(name='b') as b, \
                HttpUpstream(name='bad', default_status=503) as bad:
            bad_addr = '127.0.0.1:%d' % bad.port
            eps = [a.port, b.port, bad.port]
            self.publish(h.cluster('svc', eps, outlier_detection=od))
            port, admin = h.free_ports(2)
            with h.Petrel(self.config(port, admin, a.port), admin_port=admin) as p:
                send(port, 15)
                p.wait_stat(OD + 'ejections_active', 1)
                self.assertEqual(ejected_hosts(p), [bad_addr])
                # A new version of svc (another connect_timeout) and a new cluster: the host
                # stays out, traffic keeps avoiding it.
                v = self.publish(h.cluster('svc', eps, connect_timeout='2s', outlier_detection=od),
                                 h.cluster('other', [a.port]))
                self.wait_version(p, v)
                self.assertEqual(p.stat('cluster_manager.cluster_modified'), 1)
                self.assertEqual(ejected_hosts(p), [bad_addr])
                self.assertEqual(p.stat(OD + 'ejections_active'), 1)
                seen = len(bad.requests)
                self.assertEqual(send(port, 10), [200] * 10)
                self.assertEqual(len(bad.requests), seen)
                # The host removed: its ejection no longer counts.
                v = self.publish(h.cluster('svc', eps[:2], outlier_detection=od))
                self.wait_version(p, v)
                self.assertEqual(p.stat(OD + 'ejections_active'), 0)
                self.assertEqual(send(port, 6), [200] * 6)
                # Listed again: a new host, in the rotation (and detected again from zero).
                v = self.publish(h.cluster('svc', eps, outlier_detection=od))
                self.wait_version(p, v)
                self.assertEqual(ejected_hosts(p), [])
                statuses = send(port, 15)
                self.assertEqual(statuses.count(503), 5)
                p.wait_stat(OD + 'ejections_active', 1)
                self.assertEqual(p.stat(OD + 'ejections_enforced_total'), 2)
                # outlier_detection removed: the host is back at once.
                v = self.publish(h.cluster('svc', eps))
                self.wait_version(p, v)
                self.assertEqual(ejected_hosts(p), [])
                self.assertEqual(p.stat(OD + 'ejections_active'), 0)
                self.assertEqual(send(port, 6).count(503), 2)


if __name__ == '__main__':
    unittest.main()
