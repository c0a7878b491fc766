"""Fault injection end to end (envoy.filters.http.fault): aborts (100%: status, body, FI in the
access log, nothing upstream; 50% within 5 binomial sigmas over 1000 requests; gRPC),
fixed delays (lower bound only, DI), delay then abort, header-controlled faults honoured only
when header_abort / header_delay is configured, max_active_faults overflow, upstream_cluster
and header-matcher scoping, and a client that disconnects during a delay (no crash,
active_faults back to 0).

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_fault.py -v
"""

import math
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

FAULT_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault'
STDOUT_LOG_TYPE = 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog'
ACTIVE = 'http.ingress.fault.active_faults'


def fault(**typed):
    tc = {'@type': FAULT_TYPE}
    tc.update(typed)
    return {'name': 'envoy.filters.http.fault', 'typed_config': tc}


def percentage(numerator, denominator='HUNDRED'):
    return {'numerator': numerator, 'denominator': denominator}


def access_log():
    return {'name': 'envoy.access_loggers.stdout',
            'typed_config': {'@type': STDOUT_LOG_TYPE, 'log_format': {'text_format_source': {
                'inline_string': 'ACCESS %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% '
                                 '%RESPONSE_CODE_DETAILS%\n'}}}}


class FaultTest(unittest.TestCase):

    def start(self, fault_filter, routes=None, clusters=('a',)):
        """petrel with the fault filter and the router, routes (default: everything to
        cluster "a"), one HttpUpstream per cluster; returns petrel, its port and the first
        upstream."""
        ups = {}
        for name in clusters:
            up = HttpUpstream(name=name)
            self.addCleanup(up.close)
            ups[name] = up
        port, admin = h.free_ports(2)
        routes = routes or [h.route_prefix('/', clusters[0])]
        hcm = h.http_connection_manager(
            'ingress', h.route_config([h.vhost('all', ['*'], routes)]),
            http_filters=[fault_filter, h.router_filter()], access_log=[access_log()])
        cfg = h.bootstrap([h.listener('http', port, [hcm])],
                          [h.cluster(n, [u.port]) for n, u in ups.items()], admin_port=admin)
        p = h.Petrel(cfg)
        p.start()
        self.addCleanup(p.close)
        return p, port, ups[clusters[0]]

    def wait_access(self, p, needle, count=1):
        h.wait_until(lambda: p.stdout().count(needle) >= count,
                     message='access log %r x%d' % (needle, count))

    # -- aborts -----------------------------------------------------------------------------

    def test_abort_all(self):
        p, port, up = self.start(fault(abort={'http_status': 503,
                                              'percentage': percentage(100)}))
        r = h.http_request(port, 'GET', '/x')
        self.assertEqual(r.status, 503)
        self.assertEqual(r.body, b'fault filter abort')
        self.assertEqual(r.get('content-type'), 'text/plain')
        self.wait_access(p, 'ACCESS /x 503 FI fault_filter_abort')
        self.assertEqual(up.requests, [])
        p.wait_stat('http.ingress.fault.aborts_injected', 1)
        self.assertEqual(p.stat('http.ingress.fault.delays_injected'), 0)
        p.wait_stat(ACTIVE, 0)

    def test_abort_half_within_tolerance(self):
        # A direct_response route behind the filter keeps 1000 requests quick (the test
        # upstream pays a delayed ACK per response).
        n = 1000
        direct = {'match': {'prefix': '/'},
                  'direct_response': {'status': 200, 'body': {'inline_string': 'direct'}}}
        p, port, up = self.start(fault(abort={'http_status': 500,
                                              'percentage': percentage(5000, 'TEN_THOUSAND')}),
                                 routes=[direct])
        aborted = 0
        with h.HttpClientConn(port) as c:
            for _ in range(n):
                r = c.request('GET', '/')
                self.assertIn(r.status, (200, 500))
                self.assertEqual(r.body, b'fault filter abort' if r.status == 500 else b'direct')
                aborted += r.status == 500
        sd = math.sqrt(n * 0.25)
        self.assertLessEqual(abs(aborted - n / 2), 5 * sd, '%d of %d aborted' % (aborted, n))
        p.wait_stat('http.ingress.fault.aborts_injected', aborted)

    def test_percentage_zero_and_unset(self):
        # A percentage of 0, or none at all (FractionalPercent defaults to 0), never fires.
        p, port, up = self.start(fault(abort={'http_status': 500},
                                       delay={'fixed_delay': '5s',
                                              'percentage': percentage(0)}))
        with h.HttpClientConn(port) as c:
            for _ in range(20):
                self.assertEqual(c.request('GET', '/').status, 200)
        self.assertEqual(p.stat('http.ingress.fault.aborts_injected'), 0)

    def test_grpc_abort(self):
        p, port, up = self.start(fault(abort={'grpc_status': 14, 'percentage': percentage(100)}))
        r = h.http_request(port, 'POST', '/pkg.Svc/Method',
                           headers={'content-type': 'application/grpc', 'te': 'trailers'},
                           body=b'\x00\x00\x00\x00\x00')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.get('content-type'), 'application/grpc')
        self.assertEqual(r.get('grpc-status'), '14')
        self.assertEqual(r.get('grpc-message'), 'fault filter abort')
        self.assertEqual(r.body, b'')
        self.wait_access(p, 'ACCESS /pkg.Svc/Method 200 FI fault_filter_abort')
        # An HTTP abort on a gRPC request maps the status (503 -> UNAVAILABLE).
        self.assertEqual(up.requests, [])

    def test_http_abort_on_grpc_request_maps_status(self):
        p, port, up = self.start(fault(abort={'http_status': 503, 'percentage': percentage(100)}))
        r = h.http_request(port, 'POST', '/pkg.Svc/Method',
                           headers={'content-type': 'application/grpc'}, body=b'')
        self.assertEqual((r.status, r.get('grpc-status')), (200, '14'))

    # -- delays -------------------------------------------------------------------------------

    def test_fixed_delay(self):
        p, port, up = self.start(fault(delay={'fixed_delay': '0.3s',
                                              'percentage': percentage(100)}))
        t0 = time.monotonic()
        r = h.http_request(port, 'POST', '/slow', body=b'hello body')
        elapsed = time.monotonic() - t0
        self.assertEqual(r.status, 200)
        self.assertGreaterEqual(elapsed, 0.3)
        self.assertEqual(r.json()['body_len'], 10)
        self.wait_access(p, 'ACCESS /slow 200 DI via_upstream')
        p.wait_stat('http.ingress.fault.delays_injected', 1)
        p.wait_stat(ACTIVE, 0)

    def test_delay_then_abort(self):
        p, port, up = self.start(fault(delay={'fixed_delay': '0.2s',
                                              'percentage': percentage(100)},
                                       abort={'http_status': 429,
                                              'percentage': percentage(100)}))
        t0 = time.monotonic()
        r = h.http_request(port, 'GET', '/both')
        self.assertGreaterEqual(time.monotonic() - t0, 0.2)
        self.assertEqual(r.status, 429)
        self.wait_access(p, 'ACCESS /both 429 DI,FI fault_filter_abort')
        self.assertEqual(up.requests, [])
        p.wait_stat('http.ingress.fault.delays_injected', 1)
        p.wait_stat('http.ingress.fault.aborts_injected', 1)
        p.wait_stat(ACTIVE, 0)

    # -- header control -------------------------------------------------------------------------

    def test_header_abort_honoured_when_configured(self):
        p, port, up = self.start(fault(abort={'header_abort': {},
                                              'percentage': percentage(100)}))
        self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
        r = h.http_request(port, 'GET', '/h', headers={'x-envoy-fault-abort-request': '418'})
        self.assertEqual(r.status, 418)
        self.wait_access(p, 'ACCESS /h 418 FI fault_filter_abort')
        # Out of range or not a number: no abort.
        for v in ('199', '600', 'abc', '-500'):
            self.assertEqual(h.http_request(
                port, 'GET', '/', headers={'x-envoy-fault-abort-request': v}).status, 200, v)
        # The percentage header can only lower the configured percentage.
        with h.HttpClientConn(port) as c:
            for _ in range(20):
                self.assertEqual(c.request('GET', '/', headers={
                    'x-envoy-fault-abort-request': '503',
                    'x-envoy-fault-abort-request-percentage': '0'}).status, 200)
        # gRPC status from its header.
        r = h.http_request(port, 'POST', '/g', headers={'x-envoy-fault-abort-grpc-request': '5',
                                                        'content-type': 'application/grpc'})
        self.assertEqual((r.status, r.get('grpc-status')), (200, '5'))

    def test_header_abort_percentage_capped_by_config(self):
        # Configured 0%: a header asking for 100% cannot raise it.
        p, port, up = self.start(fault(abort={'header_abort': {},
                                              'percentage': percentage(0)}))
        with h.HttpClientConn(port) as c:
            for _ in range(20):
                self.assertEqual(c.request('GET', '/', headers={
                    'x-envoy-fault-abort-request': '503',
                    'x-envoy-fault-abort-request-percentage': '100'}).status, 200)

    def test_header_delay_honoured_when_configured(self):
        p, port, up = self.start(fault(delay={'header_delay': {},
                                              'percentage': percentage(100)}))
        t0 = time.monotonic()
        r = h.http_request(port, 'GET', '/d', headers={'x-envoy-fault-delay-request': '250'})
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        self.assertEqual(r.status, 200)
        self.wait_access(p, 'ACCESS /d 200 DI via_upstream')
        # No header, or 0: no delay.
        self.assertEqual(h.http_request(port, 'GET', '/n').status, 200)
        self.assertEqual(h.http_request(port, 'GET', '/z', headers={
            'x-envoy-fault-delay-request': '0'}).status, 200)
        self.wait_access(p, 'ACCESS /n 200 - via_upstream')
        self.wait_access(p, 'ACCESS /z 200 - via_upstream')
        self.assertEqual(p.stat('http.ingress.fault.delays_injected'), 1)

    def test_fault_headers_ignored_without_header_config(self):
        # Fixed faults configured at 0%: the x-envoy-fault-* headers must not inject anything.
        p, port, up = self.start(fault(abort={'http_status': 503, 'percentage': percentage(0)},
                                       delay={'fixed_delay': '1s', 'percentage': percentage(0)}))
        r = h.http_request(port, 'GET', '/ignored', headers={
            'x-envoy-fault-abort-request': '503',
            'x-envoy-fault-abort-request-percentage': '100',
            'x-envoy-fault-abort-grpc-request': '14',
            'x-envoy-fault-delay-request': '5000',
            'x-envoy-fault-delay-request-percentage': '100'})
        self.assertEqual(r.status, 200)
        self.wait_access(p, 'ACCESS /ignored 200 - via_upstream')
        self.assertEqual(p.stat('http.ingress.fault.aborts_injected'), 0)
        self.assertEqual(p.stat('http.ingress.fault.delays_injected'), 0)
        # And a filter with no faults at all ignores them too.

    def test_no_faults_configured(self):
        p, port, up = self.start(fault())
        r = h.http_request(port, 'GET', '/', headers={'x-envoy-fault-abort-request': '503'})
        self.assertEqual(r.status, 200)

    # -- limits and scoping -------------------------------------------------------------------

    def test_max_active_faults_overflow(self):
        p, port, up = self.start(fault(delay={'fixed_delay': '3s', 'percentage': percentage(100)},
                                       max_active_faults=1))
        first = {}

        def slow():
            first['r'] = h.http_request(port, 'GET', '/first', timeout=30)

        t = threading.Thread(target=slow)
        t.start()
        try:
            p.wait_stat(ACTIVE, 1)
            # The limit is reached: this one goes through without a fault.
            r = h.http_request(port, 'GET', '/second')
            self.assertEqual(r.status, 200)
            self.wait_access(p, 'ACCESS /second 200 - via_upstream')
            self.assertNotIn('/first', p.stdout())  # still delayed
            self.assertEqual(p.stat('http.ingress.fault.faults_overflow'), 1)
            self.assertEqual(p.stat('http.ingress.fault.delays_injected'), 1)
        finally:
            t.join()
        self.assertEqual(first['r'].status, 200)
        self.wait_access(p, 'ACCESS /first 200 DI via_upstream')
        p.wait_stat(ACTIVE, 0)
        # Below the limit again: faults resume.
        t0 = time.monotonic()
        self.assertEqual(h.http_request(port, 'GET', '/third', timeout=30).status, 200)
        self.assertGreaterEqual(time.monotonic() - t0, 3)
        p.wait_stat('http.ingress.fault.delays_injected', 2)

    def test_upstream_cluster_scoping(self):
        p, port, up = self.start(
            fault(upstream_cluster='b', abort={'http_status': 503,
                                               'percentage': percentage(100)}),
            routes=[h.route_prefix('/a', 'a'), h.route_prefix('/b', 'b')], clusters=('a', 'b'))
        self.assertEqual(h.http_request(port, 'GET', '/a/x').status, 200)
        self.assertEqual(h.http_request(port, 'GET', '/b/x').status, 503)
        # No route: no cluster, no fault (the router answers 404).
        self.assertEqual(h.http_request(port, 'GET', '/c').status, 404)
        self.wait_access(p, 'ACCESS /c 404 NR')

    def test_header_matchers(self):
        p, port, up = self.start(fault(
            headers=[{'name': 'x-chaos', 'exact_match': 'on'},
                     {'name': 'x-user', 'string_match': {'prefix': 'test-'}}],
            abort={'http_status': 502, 'percentage': percentage(100)}))
        self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
        self.assertEqual(h.http_request(port, 'GET', '/', headers={'x-chaos': 'on'}).status, 200)
        self.assertEqual(h.http_request(port, 'GET', '/', headers={
            'x-chaos': 'on', 'x-user': 'prod-1'}).status, 200)
        self.assertEqual(h.http_request(port, 'GET', '/', headers={
            'x-chaos': 'on', 'x-user': 'test-1'}).status, 502)

    def test_downstream_cluster_stats(self):
        p, port, up = self.start(fault(abort={'http_status': 503,
                                              'percentage': percentage(100)}))
        h.http_request(port, 'GET', '/', headers={'x-envoy-downstream-service-cluster': 'web'})
        p.wait_stat('http.ingress.fault.web.aborts_injected', 1)
        p.wait_stat('http.ingress.fault.aborts_injected', 1)

    # -- robustness -----------------------------------------------------------------------------

    def test_client_disconnect_during_delay(self):
        p, port, up = self.start(fault(delay={'fixed_delay': '2s',
                                              'percentage': percentage(100)}))
        for i in range(3):
            c = h.HttpClientConn(port)
            c.send_request('POST', '/gone%d' % i, body=b'abc')
            p.wait_stat(ACTIVE, 1)
            c.close()
            p.wait_stat(ACTIVE, 0)
        # Many at once, all dropped.
        conns = []
        for i in range(10):
            c = h.HttpClientConn(port)
            c.send_request('GET', '/many%d' % i)
            conns.append(c)
        p.wait_stat(ACTIVE, 10)
        for c in conns:
            c.close()
        p.wait_stat(ACTIVE, 0)
        # Nothing reached the upstream once the timers would have fired, and petrel is well.
        time.sleep(h.scaled(2.5))
        self.assertEqual(up.requests, [])
        self.assertTrue(p.alive())
        self.wait_access(p, 'ACCESS /gone0 0 DI,DC', 1)
        p.wait_stat('http.ingress.downstream_rq_active', 0)


if __name__ == '__main__':
    unittest.main()
