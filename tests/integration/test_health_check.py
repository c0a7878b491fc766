"""Active health checking (cluster.health_checks, envoy.config.core.v3.HealthCheck) end to end:
HTTP and TCP checks against real upstreams, Envoy's state rules (first success marks a host
healthy at start; unhealthy_threshold / healthy_threshold; non-retriable statuses fail at once;
timeouts count as failures), the load balancer avoiding hosts that fail, panic mode, /clusters
(text and JSON) and the cluster.<name>.health_check.* stats.

Checks run every 0.1s (no_traffic_interval too, so traffic does not matter unless a test says
so). Every wait is for a condition with a generous timeout; nothing asserts an upper bound on
time.
"""

import contextlib
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer  # noqa: E402

HC_PATH = '/healthz'
APP_PATH = '/app'


def hc_http(path=HC_PATH, unhealthy=2, healthy=2, timeout='1s', **http_extra):
    """An HTTP health check every 0.1s (with or without traffic); extra keys go into
    http_health_check, or to the top level when prefixed with ``top_``."""
    top = {k[4:]: v for k, v in http_extra.items() if k.startswith('top_')}
    http = {k: v for k, v in http_extra.items() if not k.startswith('top_')}
    http['path'] = path
    d = {'timeout': timeout, 'interval': '0.1s', 'no_traffic_interval': '0.1s',
         'unhealthy_threshold': unhealthy, 'healthy_threshold': healthy,
         'http_health_check': http}
    d.update(top)
    return d


def hc_tcp(send=None, receive=None, unhealthy=1, healthy=1, timeout='0.3s', **top):
    """A TCP health check; ``send`` / ``receive`` are bytes (sent as hex text)."""
    tcp = {}
    if send is not None:
        tcp['send'] = {'text': send.hex()}
    if receive is not None:
        tcp['receive'] = [{'text': r.hex()} for r in receive]
    d = {'timeout': timeout, 'interval': '0.1s', 'no_traffic_interval': '0.1s',
         'unhealthy_threshold': unhealthy, 'healthy_threshold': healthy,
         'tcp_health_check': tcp}
    d.update(top)
    return d


def http_proxy_config(port, admin, clusters, route_cluster='c'):
    hcm = h.http_connection_manager('ingress', h.route_config([
        h.vhost('all', ['*'], [h.route_prefix('/', route_cluster, timeout='5s')])]))
    return h.bootstrap([h.listener('http', port, [hcm])], clusters, admin_port=admin)


def health_flags(p, cluster=None):
    """{(cluster, 'ip:port'): health_flags} from GET /clusters (or {'ip:port': flags} for one
    cluster)."""
    status, _, body = p.admin_get('/clusters')
    assert status == 200, status
    out = {}
    for line in body.decode().splitlines():
        parts = line.split('::')
        if len(parts) == 4 and parts[2] == 'health_flags':
            if cluster is None:
                out[(parts[0], parts[1])] = parts[3]
            elif parts[0] == cluster:
                out[parts[1]] = parts[3]
    return out


def addr(port):
    return '127.0.0.1:%d' % port


def wait_flag(p, cluster, port, want, timeout=15):
    """Wait until the host's /clusters health_flags equal ``want``."""
    return h.wait_until(lambda: health_flags(p, cluster).get(addr(port)) == want, timeout, 0.05,
                        'cluster %s host %s health_flags never became %r (now %r)'
                        % (cluster, addr(port), want, health_flags(p, cluster).get(addr(port))))


def app_requests(up):
    return [r for r in list(up.requests) if r['path'] == APP_PATH]


def hc_requests(up, path=HC_PATH):
    return [r for r in list(up.requests) if r['path'] == path]


class SlowableUpstream(HttpUpstream):
    """An HttpUpstream that waits ``.delay`` seconds before every answer while it is set."""

    delay = 0

    def _respond(self, ctx, path):
        if self.delay:
            self._closing.wait(self.delay)
        return super()._respond(ctx, path)


class ReplyServer(TcpEchoServer):
    """Answers every read with the fixed bytes ``reply`` (a server that says the wrong
    thing, or the right thing, regardless of what it was sent)."""

    def __init__(self, reply, **kw):
        self.reply = reply
        super().__init__(**kw)

    def handle(self, sock, cid):
        sock.settimeout(self.idle_timeout)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                sock.sendall(self.reply)
        except OSError:
            return


class HttpHealthCheckTest(unittest.TestCase):

    def test_first_success_marks_healthy_at_start(self):
        # healthy_threshold is huge: only Envoy's start-up rule (the first success counts
        # at once) can make these hosts healthy within the test's patience.
        with HttpUpstream(name='a') as a, HttpUpstream(name='b') as b:
            port, admin = h.free_ports(2)
            cfg = http_proxy_config(port, admin, [
                h.cluster('c', [a.port, b.port], health_checks=[hc_http(healthy=100000)])])
            with h.Petrel(cfg) as p:
                wait_flag(p, 'c', a.port, 'healthy')
                wait_flag(p, 'c', b.port, 'healthy')
                p.wait_stat('cluster.c.health_check.healthy', 2)
                p.wait_stat('cluster.c.membership_healthy', 2)
                self.assertGreaterEqual(p.stat('cluster.c.health_check.success'), 2)
                self.assertEqual(p.stat('cluster.c.health_check.failure'), 0)
                for _ in range(6):
                    r = h.http_request(port, 'GET', APP_PATH)
                    self.assertEqual(r.status, 200)
                self.assertEqual(len(app_requests(a)), 3)
                self.assertEqual(len(app_requests(b)), 3)

    def test_not_used_before_first_check_passes(self):
        # The first check takes a while to answer: until it does the host is
        # failed_active_hc, and with healthy_panic_threshold 0 it gets no traffic.
        delay_ms = int(h.scaled(3) * 1000)
        with HttpUpstream(name='a') as a:
            port, admin = h.free_ports(2)
            cfg = http_proxy_config(port, admin, [
                h.cluster('c', [a.port],
                          health_checks=[hc_http(path='/delay/%d' % delay_ms, timeout='30s')],
                          common_lb_config={'healthy_panic_threshold': {'value': 0}})])
            with h.Petrel(cfg) as p:
                self.assertEqual(health_flags(p, 'c')[addr(a.port)], '/failed_active_hc')
                status, _, body = p.admin_get('/clusters?format=json')
                self.assertEqual(status, 200)
                hs = json.loads(body)['cluster_statuses'][0]['host_statuses'][0]
                self.assertTrue(hs['health_status']['failed_active_health_check'])
                # As Envoy: eds_health_status is what the assignment says, not the check.
                self.assertEqual(hs['health_status']['eds_health_status'], 'HEALTHY')
                r = h.http_request(port, 'GET', APP_PATH)
                self.assertEqual(r.status, 503)
                self.assertIn(b'no healthy upstream', r.body)
                self.assertIsNone(r.get('x-upstream-name'))
                self.assertEqual(app_requests(a), [])
                self.assertGreaterEqual(p.stat('cluster.c.upstream_cx_none_healthy'), 1)
                self.assertEqual(p.stat('cluster.c.membership_healthy'), 0)
                # Then the first answer arrives: healthy, used.
                wait_flag(p, 'c', a.port, 'healthy', timeout=30)
                status, _, body = p.admin_get('/clusters?format=json')
                hs = json.loads(body)['cluster_statuses'][0]['host_statuses'][0]
                self.assertNotIn('failed_active_health_check', hs['health_status'])
                self.assertEqual(hs['health_status']['eds_health_status'], 'HEALTHY')
                r = h.http_request(port, 'GET', APP_PATH)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.get('x-upstream-name'), 'a')

    def test_unhealthy_after_threshold_then_recovers(self):
        # 503 is retriable here, so it counts toward unhealthy_threshold like a network
        # failure; traffic avoids the host once it is marked, and returns after
        # healthy_threshold successes.
        with HttpUpstream(name='a') as a, HttpUpstream(name='b') as b:
            port, admin = h.free_ports(2)
            check = hc_http(unhealthy=3, healthy=2,
                            retriable_statuses=[{'start': 503, 'end': 504}])
            cfg = http_proxy_config(port, admin, [
                h.cluster('c', [a.port, b.port], health_checks=[check])])
            with h.Petrel(cfg) as p:
                wait_flag(p, 'c', a.port, 'healthy')
                wait_flag(p, 'c', b.port, 'healthy')
                self.assertEqual(p.stat('cluster.c.health_check.failure'), 0)
                b.set_status(503)
                wait_flag(p, 'c', b.port, '/failed_active_hc')
                # Only b failed, and it took unhealthy_threshold consecutive failures.
                self.assertGreaterEqual(p.stat('cluster.c.health_check.failure'), 3)
                self.assertEqual(p.stat('cluster.c.health_check.network_failure'), 0)
                p.wait_stat('cluster.c.health_check.healthy', 1)
                p.wait_stat('cluster.c.membership_healthy', 1)
                self.assertEqual(health_flags(p, 'c')[addr(a.port)], 'healthy')
                before_b = len(app_requests(b))
                for _ in range(8):
                    r = h.http_request(port, 'GET', APP_PATH)
                    self.assertEqual(r.status, 200)
                    self.assertEqual(r.get('x-upstream-name'), 'a')
                self.assertEqual(len(app_requests(b)), before_b)

                b.set_status(None)
                successes = p.stat('cluster.c.health_check.success')
                wait_flag(p, 'c', b.port, 'healthy')
                self.assertGreaterEqual(p.stat('cluster.c.health_check.success') - successes, 2)
                p.wait_stat('cluster.c.membership_healthy', 2)
                names = [h.http_request(port, 'GET', APP_PATH).get('x-upstream-name')
                         for _ in range(6)]
                self.assertEqual(sorted(set(names)), ['a', 'b'])

    def test_event_log(self):
        # Envoy's health check event log (the file sink, and the older event_log_path):
        # a host's first check that passes is an add_healthy_event with first_check; the
        # failure that marks it an eject_unhealthy_event (ACTIVE: a wrong status), and with
        # always_log_health_check_failures every failure too; its return add_healthy_event.
        import tempfile
        with HttpUpstream(name='a') as a, tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, 'hc.log')
            port, admin = h.free_ports(2)
            check = hc_http(unhealthy=1, healthy=1, top_always_log_health_check_failures=True,
                            top_event_logger=[{
                                'name': 'envoy.health_check.event_sinks.file',
                                'typed_config': {
                                    '@type': 'type.googleapis.com/envoy.extensions.health_check.'
                                             'event_sinks.file.v3.HealthCheckEventFileSink',
                                    'event_log_path': log}}])
            cfg = http_proxy_config(port, admin, [h.cluster('c', [a.port], health_checks=[check])])
            with h.Petrel(cfg) as p:
                wait_flag(p, 'c', a.port, 'healthy')
                a.set_status(500)
                wait_flag(p, 'c', a.port, '/failed_active_hc')
                p.wait_stat('cluster.c.health_check.failure', lambda v: v is not None and v >= 2)
                a.set_status(None)
                wait_flag(p, 'c', a.port, 'healthy')

            def lines():
                with open(log) as f:
                    return [json.loads(x) for x in f.read().splitlines()]
            events = lines()
        kinds = [next(k for k in e if k.endswith('_event')) for e in events]
        for e in events:
            self.assertEqual(e['health_checker_type'], 'HTTP')
            self.assertEqual(e['cluster_name'], 'c')
            self.assertEqual(e['host'], {'socket_address': {
                'protocol': 'TCP', 'address': '127.0.0.1', 'resolver_name': '',
                'ipv4_compat': False, 'port_value': a.port}})
            self.assertRegex(e['timestamp'], r'^\d{4}-\d\d-\d\dT[\d:]{8}\.\d{3}Z$')
        self.assertEqual(events[0]['add_healthy_event'], {'first_check': True})
        i = kinds.index('eject_unhealthy_event')
        self.assertEqual(events[i]['eject_unhealthy_event'], {'failure_type': 'ACTIVE'})
        # Every failure logged (always_log_health_check_failures), not first checks.
        fails = [e['health_check_failure_event'] for e in events
                 if 'health_check_failure_event' in e]
        self.assertGreaterEqual(len(fails), 2)
        self.assertEqual(fails[0], {'failure_type': 'ACTIVE', 'first_check': False})
        self.assertEqual(kinds[-1], 'add_healthy_event')
        self.assertEqual(events[-1]['add_healthy_event'], {'first_check': False})
        self.assertNotIn('successful_health_check_event', kinds)

    def test_event_log_that_cannot_be_opened(self):
        # Said once in petrel's log; checking goes on without it.
        with HttpUpstream(name='a') as a:
            port, admin = h.free_ports(2)
            check = hc_http(top_event_log_path='/nonexistent-dir/hc.log')
            cfg = http_proxy_config(port, admin, [h.cluster('c', [a.port], health_checks=[check])])
            with h.Petrel(cfg) as p:
                wait_flag(p, 'c', a.port, 'healthy')
                self.assertEqual(p.log().count('event log /nonexistent-dir/hc.log cannot be '
                                               'opened'), 1)

    def test_event_log_bad_values(self):
        port, admin = h.free_ports(2)
        check = hc_http(top_event_logger=[{'name': 'x', 'typed_config': {
            '@type': 'type.googleapis.com/envoy.extensions.health_check.event_sinks.grpc.v3.'
                     'HealthCheckEventGrpcSink'}}])
        cfg = http_proxy_config(port, admin, [h.cluster('c', [1234], health_checks=[check])])
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'c.json')
            with open(path, 'w') as f:
                json.dump(cfg, f)
            rc, _, err = h.run_petrel(['--mode', 'validate', '-c', path])
        self.assertEqual(rc, 1)
        self.assertIn('static_resources.clusters[0].health_checks[0].event_logger[0].'
                      'typed_config.@type: "type.googleapis.com/envoy.extensions.health_check.'
                      'event_sinks.grpc.v3.HealthCheckEventGrpcSink" is not supported', err)

    def test_unexpected_status_fails_at_once(self):
        # A status that is neither expected nor retriable marks the host unhealthy on the
        # spot, whatever unhealthy_threshold says (Envoy's rule).
        with HttpUpstream(name='a') as a, HttpUpstream(name='b') as b:
            port, admin = h.free_ports(2)
            cfg = http_proxy_config(port, admin, [
                h.cluster('c', [a.port, b.port], health_checks=[hc_http(unhealthy=100000)])])
            with h.Petrel(cfg) as p:
                wait_flag(p, 'c', b.port, 'healthy')
                b.set_status(503)
                wait_flag(p, 'c', b.port, '/failed_active_hc')
                self.assertEqual(health_flags(p, 'c')[addr(a.port)], 'healthy')
                for _ in range(4):
                    self.assertEqual(h.http_request(port, 'GET', APP_PATH).get('x-upstream-name'),
                                     'a')

    def test_expected_statuses(self):
        # One upstream, several clusters checking different paths against different ranges
        # (Int64Range: end exclusive).
        with HttpUpstream(name='u') as u:
            port, admin = h.free_ports(2)
            clusters = [
                h.cluster('default_200', [u.port], health_checks=[hc_http('/status/200')]),
                h.cluster('default_204', [u.port], health_checks=[hc_http('/status/204')]),
                h.cluster('range_203', [u.port], health_checks=[
                    hc_http('/status/203', expected_statuses=[{'start': 200, 'end': 204}])]),
                h.cluster('range_end_204', [u.port], health_checks=[
                    hc_http('/status/204', expected_statuses=[{'start': 200, 'end': 204}])]),
                h.cluster('second_range_404', [u.port], health_checks=[
                    hc_http('/status/404', expected_statuses=[{'start': 200, 'end': 201},
                                                              {'start': 404, 'end': 405}])]),
            ]
            cfg = http_proxy_config(port, admin, clusters, route_cluster='default_200')
            with h.Petrel(cfg) as p:
                for name in ('default_204', 'range_end_204'):
                    p.wait_stat('cluster.%s.health_check.failure' % name, lambda v: v and v >= 2)
                for name in ('default_200', 'range_203', 'second_range_404'):
                    wait_flag(p, name, u.port, 'healthy')
                for name in ('default_204', 'range_end_204'):
                    self.assertEqual(health_flags(p, name)[addr(u.port)], '/failed_active_hc')
                    self.assertEqual(p.stat('cluster.%s.health_check.success' % name), 0)

    def test_request_shape_and_connection_reuse(self):
        with HttpUpstream(name='a') as a, HttpUpstream(name='b') as b, \
                HttpUpstream(name='d') as d:
            port, admin = h.free_ports(2)
            custom = hc_http('/hc/check?x=1', host='svc.example',
                             request_headers_to_add=[
                                 {'header': {'key': 'X-HC-Id', 'value': '42'}},
                                 {'header': {'key': 'x-multi', 'value': 'one'}},
                                 {'header': {'key': 'x-multi', 'value': 'two'}},
                                 # Envoy decides every append_action against the request
                                 # before the list's own additions: both are added.
                                 {'header': {'key': 'x-once', 'value': 'a'}},
                                 {'header': {'key': 'x-once', 'value': 'b'},
                                  'append_action': 'ADD_IF_ABSENT'}],
                             request_headers_to_remove=['user-agent'])
            cfg = http_proxy_config(port, admin, [
                h.cluster('custom', [a.port], health_checks=[custom]),
                h.cluster('plain', [b.port], health_checks=[hc_http()]),
                h.cluster('fresh', [d.port],
                          health_checks=[hc_http(method='HEAD', top_reuse_connection=False)]),
            ], route_cluster='plain')
            with h.Petrel(cfg) as p:
                a.wait_for(lambda: len(hc_requests(a, '/hc/check?x=1')) >= 3, 15, 'a checks')
                b.wait_for(lambda: len(hc_requests(b)) >= 3, 15, 'b checks')
                d.wait_for(lambda: len(hc_requests(d)) >= 3, 15, 'd checks')
                wait_flag(p, 'custom', a.port, 'healthy')
                wait_flag(p, 'fresh', d.port, 'healthy')

                ra = hc_requests(a, '/hc/check?x=1')[0]
                self.assertEqual(ra['method'], 'GET')
                self.assertEqual(ra.header('host'), 'svc.example')
                self.assertEqual(ra.header('x-hc-id'), '42')
                self.assertEqual([v for n, v in ra['headers'] if n.lower() == 'x-multi'],
                                 ['one', 'two'])
                self.assertEqual([v for n, v in ra['headers'] if n.lower() == 'x-once'],
                                 ['a', 'b'])
                self.assertIsNone(ra.header('user-agent'))

                rb = hc_requests(b)[0]
                self.assertEqual(rb['method'], 'GET')
                self.assertEqual(rb['version'], 'HTTP/1.1')
                self.assertEqual(rb.header('host'), 'plain')     # the cluster's name
                self.assertEqual(rb.header('user-agent'), 'Envoy/HC')
                # reuse_connection (default true): every check on one keep-alive connection.
                self.assertEqual(len(set(r['conn_id'] for r in hc_requests(b))), 1)
                self.assertEqual(b.connections, 1)

                # reuse_connection false: a new connection per check; HEAD answered bodiless.
                rd = hc_requests(d)
                self.assertEqual(rd[0]['method'], 'HEAD')
                self.assertEqual(len(set(r['conn_id'] for r in rd)), len(rd))

    def test_response_bodies_and_server_close(self):
        # The checker reads whole responses (chunked, long) before reusing the connection,
        # and copes with a server that closes after every answer.
        with HttpUpstream(name='a') as a, HttpUpstream(name='b') as b:
            port, admin = h.free_ports(2)
            cfg = http_proxy_config(port, admin, [
                h.cluster('chunked', [a.port], health_checks=[hc_http('/chunked/100000')]),
                h.cluster('closing', [b.port], health_checks=[hc_http('/close')]),
            ], route_cluster='chunked')
            with h.Petrel(cfg) as p:
                a.wait_for(lambda: len(hc_requests(a, '/chunked/100000')) >= 4, 15, 'checks')
                b.wait_for(lambda: len(hc_requests(b, '/close')) >= 4, 15, 'checks')
                self.assertEqual(health_flags(p, 'chunked')[addr(a.port)], 'healthy')
                self.assertEqual(health_flags(p, 'closing')[addr(b.port)], 'healthy')
                self.assertEqual(a.connections, 1)
                self.assertGreaterEqual(b.connections, 4)
                self.assertEqual(p.stat('cluster.chunked.health_check.failure'), 0)
                self.assertEqual(p.stat('cluster.closing.health_check.failure'), 0)

    def test_timeout_counts_as_failure(self):
        with SlowableUpstream(name='a') as a, HttpUpstream(name='b') as b:
            port, admin = h.free_ports(2)
            check = hc_http(unhealthy=2, healthy=1, timeout='0.3s')
            cfg = http_proxy_config(port, admin, [
                h.cluster('c', [a.port, b.port], health_checks=[check])])
            with h.Petrel(cfg) as p:
                wait_flag(p, 'c', a.port, 'healthy')
                wait_flag(p, 'c', b.port, 'healthy')
                a.delay = h.scaled(2)
                wait_flag(p, 'c', a.port, '/failed_active_hc')
                self.assertGreaterEqual(p.stat('cluster.c.health_check.failure'), 2)
                self.assertGreaterEqual(p.stat('cluster.c.health_check.network_failure'), 2)
                before = len(app_requests(a))
                for _ in range(4):
                    self.assertEqual(h.http_request(port, 'GET', APP_PATH).get('x-upstream-name'),
                                     'b')
                self.assertEqual(len(app_requests(a)), before)
                a.delay = 0
                wait_flag(p, 'c', a.port, 'healthy')

    def test_connect_failure_counts_as_network_failure(self):
        with HttpUpstream(name='a') as a:
            dead = h.dead_port()        # nothing listens there
            port, admin = h.free_ports(2)
            cfg = http_proxy_config(port, admin, [
                h.cluster('c', [a.port, dead], health_checks=[hc_http()])])
            with h.Petrel(cfg) as p:
                wait_flag(p, 'c', a.port, 'healthy')
                p.wait_stat('cluster.c.health_check.network_failure', lambda v: v and v >= 3)
                self.assertEqual(health_flags(p, 'c')[addr(dead)], '/failed_active_hc')
                for _ in range(4):
                    self.assertEqual(h.http_request(port, 'GET', APP_PATH).status, 200)

    def test_no_traffic_interval(self):
        # Envoy's no_traffic_interval (60s by default) applies until the cluster has opened
        # an upstream connection: after the first check, the next one is a minute away.
        with HttpUpstream(name='a') as a:
            port, admin = h.free_ports(2)
            check = hc_http()
            del check['no_traffic_interval']
            cfg = http_proxy_config(port, admin, [h.cluster('c', [a.port],
                                                            health_checks=[check])])
            with h.Petrel(cfg) as p:
                wait_flag(p, 'c', a.port, 'healthy')
                time.sleep(h.scaled(1))
                self.assertEqual(p.stat('cluster.c.health_check.attempt'), 1)
                self.assertEqual(len(hc_requests(a)), 1)

    def test_stats_and_shutdown_with_check_in_flight(self):
        with HttpUpstream(name='a') as a:
            port, admin = h.free_ports(2)
            cfg = http_proxy_config(port, admin, [
                h.cluster('c', [a.port], health_checks=[hc_http('/delay/60000', timeout='60s')])])
            p = h.Petrel(cfg)
            with p:
                a.wait_requests(1)
                stats = p.stats()
                for name in ('attempt', 'success', 'failure', 'passive_failure',
                             'network_failure', 'verify_cluster', 'healthy', 'degraded'):
                    self.assertIn('cluster.c.health_check.%s' % name, stats)
                self.assertEqual(stats['cluster.c.health_check.attempt'], 1)
                self.assertEqual(stats['cluster.c.health_check.healthy'], 0)
                self.assertEqual(stats['cluster.c.health_check.degraded'], 0)
                status, _, body = p.admin_get('/stats/prometheus')
                if status == 200:
                    self.assertIn(b'envoy_cluster_health_check_attempt'
                                  b'{envoy_cluster_name="c"} 1', body)
                    self.assertIn(b'envoy_cluster_health_check_healthy{envoy_cluster_name="c"} 0',
                                  body)
            # Stopped (SIGTERM) with the check's request still open: a clean exit.
            self.assertEqual(p.returncode, 0)


class FailAppUpstream(HttpUpstream):
    """An HttpUpstream that answers 503 to traffic (APP_PATH) while ``.fail_app`` is set, and
    keeps passing its health checks."""

    fail_app = False

    def _respond(self, ctx, path):
        if self.fail_app and path == APP_PATH:
            return self._echo(ctx, 503)
        return super()._respond(ctx, path)


class OutlierInteractionTest(unittest.TestCase):
    OD = 'cluster.c.outlier_detection.'

    @contextlib.contextmanager
    def _ejected(self, uneject_on_hc):
        """petrel with host b ejected by outlier detection while passing its health checks;
        yields (petrel, a, b)."""
        with HttpUpstream(name='a') as a, FailAppUpstream(name='b') as b:
            port, admin = h.free_ports(2)
            od = {'consecutive_5xx': 3, 'base_ejection_time': '300s', 'interval': '300s',
                  'successful_active_health_check_uneject_host': uneject_on_hc}
            cfg = http_proxy_config(port, admin, [
                h.cluster('c', [a.port, b.port], health_checks=[hc_http()],
                          outlier_detection=od)])
            p = h.Petrel(cfg)
            with p:
                wait_flag(p, 'c', a.port, 'healthy')
                wait_flag(p, 'c', b.port, 'healthy')
                b.fail_app = True
                for _ in range(6):
                    h.http_request(port, 'GET', APP_PATH)
                p.wait_stat(self.OD + 'ejections_enforced_total', 1)
                b.fail_app = False
                yield p, a, b

    def test_passing_check_brings_ejected_host_back(self):
        # successful_active_health_check_uneject_host (default true): the next passing active
        # check ends the ejection, long before base_ejection_time (300s).
        with self._ejected(True) as (p, a, b):
            p.wait_stat(self.OD + 'ejections_active', 0, timeout=20)
            wait_flag(p, 'c', b.port, 'healthy')

    def test_uneject_off_keeps_host_ejected(self):
        with self._ejected(False) as (p, a, b):
            successes = p.stat('cluster.c.health_check.success')
            p.wait_stat('cluster.c.health_check.success', lambda v: v and v >= successes + 6)
            self.assertEqual(p.stat(self.OD + 'ejections_active'), 1)
            self.assertIn('failed_outlier_check', health_flags(p, 'c')[addr(b.port)])


class DegradableUpstream(HttpUpstream):
    """An HttpUpstream whose health check answers carry ``x-envoy-degraded`` while
    ``.degraded`` is set."""

    degraded = False

    def _respond(self, ctx, path):
        if self.degraded and path == HC_PATH:
            ctx.extra_headers.append(('x-envoy-degraded', ''))
        return super()._respond(ctx, path)


def served_by(port, n):
    """{upstream name: count} over n requests to APP_PATH, all of which must succeed."""
    out = {}
    for _ in range(n):
        r = h.http_request(port, 'GET', APP_PATH)
        assert r.status == 200, r.status
        out[r.get('x-upstream-name')] = out.get(r.get('x-upstream-name'), 0) + 1
    return out


class DegradedTest(unittest.TestCase):
    """A passing HTTP check whose answer has x-envoy-degraded marks the host degraded
    (Envoy's /degraded_active_hc): it takes only the load its priority's healthy hosts
    cannot (healthy share x overprovisioning factor 1.4), as an EDS DEGRADED host."""

    def test_degraded_host_takes_no_load_while_healthy_hosts_cover_it(self):
        import tempfile
        ups = [DegradableUpstream(name=n) for n in 'abcd']
        with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
            for u in ups:
                stack.enter_context(u)
            a, b, c, d = ups
            log = os.path.join(tmp, 'hc.log')
            port, admin = h.free_ports(2)
            check = hc_http(top_event_log_path=log)
            cfg = http_proxy_config(port, admin, [
                h.cluster('c', [u.port for u in ups], health_checks=[check])])
            with h.Petrel(cfg) as p:
                for u in ups:
                    wait_flag(p, 'c', u.port, 'healthy')
                d.degraded = True
                wait_flag(p, 'c', d.port, '/degraded_active_hc')
                p.wait_stat('cluster.c.health_check.degraded', 1)
                p.wait_stat('cluster.c.membership_degraded', 1)
                self.assertEqual(p.stat('cluster.c.health_check.healthy'), 4)
                self.assertEqual(p.stat('cluster.c.membership_healthy'), 3)
                # 3 of 4 healthy x 1.4 covers all the load: d gets none.
                self.assertNotIn('d', served_by(port, 40))
                _, _, body = p.admin_get('/clusters?format=json')
                hs = {x['address']['socket_address']['port_value']: x['health_status']
                      for x in json.loads(body)['cluster_statuses'][0]['host_statuses']}
                self.assertTrue(hs[d.port].get('failed_active_degraded_check'))
                self.assertNotIn('failed_active_degraded_check', hs[a.port])
                d.degraded = False
                wait_flag(p, 'c', d.port, 'healthy')
                p.wait_stat('cluster.c.health_check.degraded', 0)
                p.wait_stat('cluster.c.membership_healthy', 4)
                self.assertIn('d', served_by(port, 40))
            with open(log) as f:
                kinds = [next(k for k in json.loads(x) if k not in (
                    'health_checker_type', 'host', 'cluster_name', 'timestamp'))
                    for x in f.read().splitlines()]
            self.assertIn('degraded_healthy_host', kinds)
            self.assertIn('no_longer_degraded_host', kinds)
            self.assertLess(kinds.index('degraded_healthy_host'),
                            kinds.index('no_longer_degraded_host'))

    def test_degraded_host_takes_what_healthy_hosts_cannot(self):
        # 1 of 2 healthy: 50% x 1.4 = 70% of the load to the healthy host, 30% to the
        # degraded one; all degraded: they take it all (no panic, no 503).
        with DegradableUpstream(name='a') as a, DegradableUpstream(name='b') as b:
            port, admin = h.free_ports(2)
            cfg = http_proxy_config(port, admin, [
                h.cluster('c', [a.port, b.port], health_checks=[hc_http()])])
            with h.Petrel(cfg) as p:
                wait_flag(p, 'c', a.port, 'healthy')
                wait_flag(p, 'c', b.port, 'healthy')
                a.degraded = True
                wait_flag(p, 'c', a.port, '/degraded_active_hc')
                p.wait_stat('cluster.c.membership_degraded', 1)
                got = served_by(port, 100)
                self.assertTrue(10 <= got.get('a', 0) <= 50, got)   # binomial(100, 0.3)
                b.degraded = True
                wait_flag(p, 'c', b.port, '/degraded_active_hc')
                p.wait_stat('cluster.c.membership_degraded', 2)
                got = served_by(port, 40)
                self.assertEqual(sorted(got), ['a', 'b'], got)
                self.assertEqual(p.stat('cluster.c.upstream_cx_none_healthy') or 0, 0)

    def test_degraded_host_that_fails_is_unhealthy(self):
        # Failing takes precedence: a degraded host that fails its check gets nothing, and
        # keeps its degraded flag until a passing answer says otherwise (as Envoy).
        with DegradableUpstream(name='a') as a, DegradableUpstream(name='b') as b:
            port, admin = h.free_ports(2)
            cfg = http_proxy_config(port, admin, [
                h.cluster('c', [a.port, b.port], health_checks=[hc_http(unhealthy=1)])])
            with h.Petrel(cfg) as p:
                wait_flag(p, 'c', a.port, 'healthy')
                wait_flag(p, 'c', b.port, 'healthy')
                a.degraded = True
                wait_flag(p, 'c', a.port, '/degraded_active_hc')
                a.set_status(503)
                wait_flag(p, 'c', a.port, '/failed_active_hc/degraded_active_hc')
                p.wait_stat('cluster.c.membership_degraded', 0)
                p.wait_stat('cluster.c.health_check.degraded', 0)
                self.assertEqual(served_by(port, 30), {'b': 30})
                a.degraded = False
                a.set_status(None)
                wait_flag(p, 'c', a.port, 'healthy')


class PanicTest(unittest.TestCase):

    def _run(self, panic_threshold):
        with HttpUpstream(name='a') as a, HttpUpstream(name='b') as b:
            port, admin = h.free_ports(2)
            extra = {}
            if panic_threshold is not None:
                extra['common_lb_config'] = {'healthy_panic_threshold': {'value': panic_threshold}}
            cfg = http_proxy_config(port, admin, [
                h.cluster('c', [a.port, b.port], health_checks=[hc_http(unhealthy=1)], **extra)])
            with h.Petrel(cfg) as p:
                wait_flag(p, 'c', a.port, 'healthy')
                wait_flag(p, 'c', b.port, 'healthy')
                a.set_status(503)
                b.set_status(503)
                wait_flag(p, 'c', a.port, '/failed_active_hc')
                wait_flag(p, 'c', b.port, '/failed_active_hc')
                p.wait_stat('cluster.c.membership_healthy', 0)
                responses = [h.http_request(port, 'GET', APP_PATH) for _ in range(6)]
                return p, a, b, responses, p.stat('cluster.c.upstream_cx_none_healthy')

    def test_all_unhealthy_default_threshold_panics(self):
        # Default healthy_panic_threshold 50%: with no host healthy, health is ignored and
        # traffic spreads over all hosts (they answer 503 themselves here).
        _, a, b, responses, none_healthy = self._run(None)
        self.assertEqual(sorted(set(r.get('x-upstream-name') for r in responses)), ['a', 'b'])
        self.assertEqual(len(app_requests(a)), 3)
        self.assertEqual(len(app_requests(b)), 3)
        self.assertEqual(none_healthy, 0)

    def test_all_unhealthy_threshold_zero_no_healthy_upstream(self):
        _, a, b, responses, none_healthy = self._run(0)
        for r in responses:
            self.assertEqual(r.status, 503)
            self.assertIsNone(r.get('x-upstream-name'))
            self.assertIn(b'no healthy upstream', r.body)
        self.assertEqual(app_requests(a) + app_requests(b), [])
        self.assertEqual(none_healthy, 6)


class TcpHealthCheckTest(unittest.TestCase):

    def test_connect_only(self):
        with TcpEchoServer() as echo:
            dead = h.dead_port()
            port, admin = h.free_ports(2)
            cfg = h.bootstrap([h.listener('tcp', port, [h.tcp_proxy('tcp', 'c')])],
                              [h.cluster('c', [echo.port, dead], health_checks=[hc_tcp()])],
                              admin_port=admin)
            with h.Petrel(cfg) as p:
                wait_flag(p, 'c', echo.port, 'healthy')
                p.wait_stat('cluster.c.health_check.network_failure', lambda v: v and v >= 2)
                self.assertEqual(health_flags(p, 'c')[addr(dead)], '/failed_active_hc')
                echo.wait_accepted(3)       # a new connection per check
                # Traffic goes to the live host only (one of two healthy: no panic).
                for i in range(4):
                    with h.tcp_connect(port) as s:
                        s.sendall(b'ping%d' % i)
                        self.assertEqual(h.recv_exact(s, 5), b'ping%d' % i)

    def test_send_receive(self):
        with TcpEchoServer() as echo, ReplyServer(b'NOPE') as wrong, \
                ReplyServer(b'xxPOyyNGzz') as spread:
            port, admin = h.free_ports(2)
            clusters = [
                h.cluster('echo', [echo.port],
                          health_checks=[hc_tcp(send=b'PING', receive=[b'PING'])]),
                h.cluster('wrong', [wrong.port],
                          health_checks=[hc_tcp(send=b'PING', receive=[b'PONG'])]),
                # Several payloads: each must be found, in order, not necessarily contiguous.
                h.cluster('spread', [spread.port],
                          health_checks=[hc_tcp(send=b'hi', receive=[b'PO', b'NG'])]),
                h.cluster('spread_order', [spread.port],
                          health_checks=[hc_tcp(send=b'hi', receive=[b'NG', b'PO'])]),
                # Binary (base64) payloads.
                h.cluster('binary', [echo.port], health_checks=[{
                    'timeout': '0.3s', 'interval': '0.1s', 'no_traffic_interval': '0.1s',
                    'unhealthy_threshold': 1, 'healthy_threshold': 1,
                    'tcp_health_check': {'send': {'binary': 'AAEC/w=='},
                                         'receive': [{'binary': 'AAEC/w=='}]}}]),
            ]
            cfg = h.bootstrap([h.listener('tcp', port, [h.tcp_proxy('tcp', 'echo')])],
                              clusters, admin_port=admin)
            with h.Petrel(cfg) as p:
                for name, srv in (('echo', echo), ('spread', spread), ('binary', echo)):
                    wait_flag(p, name, srv.port, 'healthy')
                for name in ('wrong', 'spread_order'):
                    # The wrong answer never matches: the check times out, again and again.
                    p.wait_stat('cluster.%s.health_check.failure' % name, lambda v: v and v >= 2)
                    self.assertEqual(health_flags(p, name)[addr(wrong.port if name == 'wrong'
                                                                else spread.port)],
                                     '/failed_active_hc')
                    self.assertEqual(p.stat('cluster.%s.health_check.success' % name), 0)
                # reuse_connection (default): the echo checks share one connection.
                p.wait_stat('cluster.echo.health_check.success', lambda v: v and v >= 3)
                self.assertGreaterEqual(echo.accepted, 1)
                self.assertLessEqual(echo.accepted, 2)   # echo + binary clusters

    def test_http_and_tcp_checks_must_all_pass(self):
        # Two checks on one cluster: the host is healthy only while both pass.
        with HttpUpstream(name='a') as a:
            port, admin = h.free_ports(2)
            both_pass = [hc_http(), hc_tcp()]
            tcp_fails = [hc_http(), hc_tcp(send=b'GET / HTTP/1.1\r\n\r\n', receive=[b'ZZZZ'])]
            cfg = http_proxy_config(port, admin, [
                h.cluster('c', [a.port], health_checks=both_pass),
                h.cluster('d', [a.port], health_checks=tcp_fails)])
            with h.Petrel(cfg) as p:
                wait_flag(p, 'c', a.port, 'healthy')
                p.wait_stat('cluster.d.health_check.failure', lambda v: v and v >= 2)
                p.wait_stat('cluster.d.health_check.success', lambda v: v and v >= 2)
                self.assertEqual(health_flags(p, 'd')[addr(a.port)], '/failed_active_hc')
                self.assertEqual(h.http_request(port, 'GET', APP_PATH).status, 200)


class TlsHealthCheckTest(unittest.TestCase):

    def test_http_check_over_tls(self):
        try:
            import certs
        except ImportError as e:     # pragma: no cover
            self.skipTest('certs helper unavailable: %s' % e)
        pki = certs.standard_pki()
        ctx = certs.server_context(pki['server'])
        with HttpUpstream(name='tls', ssl_context=ctx) as up:
            port, admin = h.free_ports(2)
            cfg = http_proxy_config(port, admin, [
                h.cluster('c', [up.port], health_checks=[hc_http()],
                          transport_socket=certs.upstream_tls(ca=pki['ca'], sni='localhost'))])
            with h.Petrel(cfg) as p:
                wait_flag(p, 'c', up.port, 'healthy')
                up.wait_for(lambda: len(hc_requests(up)) >= 2, 15, 'checks over TLS')
                cid = hc_requests(up)[0]['conn_id']
                self.assertTrue(up.conn_info[cid].get('tls_version'))
                r = h.http_request(port, 'GET', APP_PATH)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.get('x-upstream-name'), 'tls')


class PassiveFailureTest(unittest.TestCase):
    """x-envoy-immediate-health-check-fail from an upstream (a peer proxy that fails its own
    health checks) takes the host out at once; the active checks bring it back."""

    def test_immediate_health_check_fail_header(self):
        with HttpUpstream(name='a') as a, HttpUpstream(name='b') as b:
            ups = {'a': a, 'b': b}
            port, admin = h.free_ports(2)
            # Checks every 30 s after the first: the passive failure stays until the next.
            hc = hc_http(unhealthy=1, healthy=1, top_interval='30s',
                         top_no_traffic_interval='30s')
            cfg = http_proxy_config(port, admin, [h.cluster('c', [a.port, b.port],
                                                            health_checks=[hc])])
            with h.Petrel(cfg) as p:
                wait_flag(p, 'c', a.port, 'healthy')
                wait_flag(p, 'c', b.port, 'healthy')
                r = h.http_request(port, 'GET', APP_PATH, headers={
                    'x-test-response-headers': 'x-envoy-immediate-health-check-fail=true'})
                self.assertEqual(r.status, 200)
                failed = r.get('x-upstream-name')
                other = 'b' if failed == 'a' else 'a'
                wait_flag(p, 'c', ups[failed].port, '/failed_active_hc')
                self.assertEqual(health_flags(p, 'c')[addr(ups[other].port)], 'healthy')
                p.wait_stat('cluster.c.health_check.passive_failure', 1)
                for _ in range(4):
                    self.assertEqual(h.http_request(port, 'GET', APP_PATH)
                                     .get('x-upstream-name'), other)

    def test_ignored_without_active_health_checks(self):
        with HttpUpstream(name='a') as a:
            port, admin = h.free_ports(2)
            with h.Petrel(http_proxy_config(port, admin, [h.cluster('c', [a.port])])) as p:
                for _ in range(3):
                    r = h.http_request(port, 'GET', APP_PATH, headers={
                        'x-test-response-headers': 'x-envoy-immediate-health-check-fail=true'})
                    self.assertEqual(r.status, 200)
                self.assertEqual(health_flags(p, 'c')[addr(a.port)], 'healthy')

if __name__ == '__main__':
    unittest.main()
