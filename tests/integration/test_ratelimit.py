"""Local rate limiting end to end: the HTTP filter (envoy.filters.http.local_ratelimit) and the
network filter (envoy.filters.network.local_ratelimit).

HTTP: 429 "local_rate_limited" (flag RL) once the bucket is empty, with x-ratelimit-* headers
when enabled and response_headers_to_add on the 429; refill after fill_interval; the
filter_enabled / filter_enforced fractions within 5 binomial sigmas over 1000 requests;
request_headers_to_add_when_not_enforced; one bucket exact across two workers (many
connections); per-connection buckets; gRPC answers. Network: connections beyond the bucket
are closed at once, before tcp_proxy.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_ratelimit.py -v
"""

import json
import math
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer  # noqa: E402

LRL_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit'
LRL_NET_TYPE = ('type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.'
                'LocalRateLimit')
STDOUT_LOG_TYPE = 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog'


def pct(numerator, denominator='HUNDRED'):
    return {'runtime_key': 'ignored', 'default_value': {'numerator': numerator,
                                                        'denominator': denominator}}


def bucket(max_tokens, fill_interval='3600s', tokens_per_fill=None):
    b = {'max_tokens': max_tokens, 'fill_interval': fill_interval}
    if tokens_per_fill is not None:
        b['tokens_per_fill'] = tokens_per_fill
    return b


def lrl_filter(stat_prefix='rl', token_bucket=None, enabled=100, enforced=100, **typed):
    tc = {'@type': LRL_TYPE, 'stat_prefix': stat_prefix,
          'token_bucket': token_bucket or bucket(3)}
    if enabled is not None:
        tc['filter_enabled'] = pct(enabled)
    if enforced is not None:
        tc['filter_enforced'] = pct(enforced)
    tc.update(typed)
    return {'name': 'envoy.filters.http.local_ratelimit', 'typed_config': tc}


def access_log():
    return {'name': 'envoy.access_loggers.stdout',
            'typed_config': {'@type': STDOUT_LOG_TYPE, 'log_format': {'text_format_source': {
                'inline_string': 'ACCESS %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% '
                                 '%RESPONSE_CODE_DETAILS%\n'}}}}


def binomial_ok(count, n, p, sigmas=5):
    mean = n * p
    sd = math.sqrt(n * p * (1 - p))
    return abs(count - mean) <= sigmas * sd, '%d of %d, expected %.1f +- %.1f' % (
        count, n, mean, sigmas * sd)


class RateLimitHttpTest(unittest.TestCase):

    def start(self, http_filters, concurrency=1, log_level='info', direct=False):
        """petrel with these HTTP filters before the router, routing everything to an
        HttpUpstream, or with ``direct`` to a direct_response 200 that echoes the request's
        x-rl-shadow header as x-echo-shadow (for runs of 1000 requests: the test upstream
        answers in two writes and pays a delayed ACK on each request)."""
        up = HttpUpstream(name='a')
        self.addCleanup(up.close)
        port, admin = h.free_ports(2)
        route = h.route_prefix('/', 'a')
        if direct:
            route = {'match': {'prefix': '/'},
                     'direct_response': {'status': 200, 'body': {'inline_string': 'direct'}},
                     'response_headers_to_add': [{'header': {
                         'key': 'x-echo-shadow', 'value': '%REQ(x-rl-shadow)%'}}]}
        hcm = h.http_connection_manager(
            'ingress', h.route_config([h.vhost('all', ['*'], [route])]),
            http_filters=list(http_filters) + [h.router_filter()], access_log=[access_log()])
        cfg = h.bootstrap([h.listener('http', port, [hcm])], [h.cluster('a', [up.port])],
                          admin_port=admin)
        p = h.Petrel(cfg, concurrency=concurrency, log_level=log_level)
        p.start()
        self.addCleanup(p.close)
        return p, port, up

    def wait_access(self, p, needle, count=1):
        h.wait_until(lambda: p.stdout().count(needle) >= count,
                     message='access log %r x%d' % (needle, count))

    def test_429_after_bucket_empties_with_x_ratelimit_headers(self):
        p, port, up = self.start([lrl_filter(
            token_bucket=bucket(3), enable_x_ratelimit_headers='DRAFT_VERSION_03',
            response_headers_to_add=[{'append_action': 'OVERWRITE_IF_EXISTS_OR_ADD',
                                      'header': {'key': 'x-local-rate-limit',
                                                 'value': 'true'}}])])
        with h.HttpClientConn(port) as c:
            for left in (2, 1, 0):
                r = c.request('GET', '/ok')
                self.assertEqual(r.status, 200)
                self.assertEqual(r.get('x-ratelimit-limit'), '3')
                self.assertEqual(r.get('x-ratelimit-remaining'), str(left))
                reset = int(r.get('x-ratelimit-reset'))
                self.assertTrue(0 <= reset <= 3600, reset)
                self.assertIsNone(r.get('x-local-rate-limit'))
            r = c.request('GET', '/limited')
            self.assertEqual(r.status, 429)
            self.assertEqual(r.body, b'local_rate_limited')
            self.assertEqual(r.get('x-local-rate-limit'), 'true')
            self.assertEqual(r.get('x-ratelimit-limit'), '3')
            self.assertEqual(r.get('x-ratelimit-remaining'), '0')
            self.assertIsNotNone(r.get('x-ratelimit-reset'))
            # Envoy's local rate limit does not set x-envoy-ratelimited (the global one does).
            self.assertIsNone(r.get('x-envoy-ratelimited'))
            # The connection stays usable.
            self.assertEqual(c.request('GET', '/limited2').status, 429)
        self.assertEqual(len(up.requests), 3)
        self.wait_access(p, 'ACCESS /limited 429 RL local_rate_limited')
        self.wait_access(p, 'ACCESS /ok 200 - ', 3)
        p.wait_stat('rl.http_local_rate_limit.enabled', 5)
        self.assertEqual(p.stat('rl.http_local_rate_limit.ok'), 3)
        self.assertEqual(p.stat('rl.http_local_rate_limit.rate_limited'), 2)
        self.assertEqual(p.stat('rl.http_local_rate_limit.enforced'), 2)
        self.assertEqual(p.stat('http.ingress.downstream_rq_4xx'), 2)

    def test_no_x_ratelimit_headers_unless_enabled(self):
        p, port, up = self.start([lrl_filter(token_bucket=bucket(1))])
        r = h.http_request(port, 'GET', '/')
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.get('x-ratelimit-limit'))
        r = h.http_request(port, 'GET', '/')
        self.assertEqual(r.status, 429)
        self.assertIsNone(r.get('x-ratelimit-remaining'))

    def test_disabled_by_default(self):
        # filter_enabled unset is 0% (Envoy's default, "for safety"): nothing is limited or
        # counted, and no headers are added.
        p, port, up = self.start([lrl_filter(token_bucket=bucket(1), enabled=None,
                                             enable_x_ratelimit_headers='DRAFT_VERSION_03')])
        with h.HttpClientConn(port) as c:
            for _ in range(5):
                r = c.request('GET', '/')
                self.assertEqual(r.status, 200)
                self.assertIsNone(r.get('x-ratelimit-limit'))
        self.assertEqual(p.stat('rl.http_local_rate_limit.enabled'), 0)

    def test_refill_after_fill_interval(self):
        p, port, up = self.start([lrl_filter(
            token_bucket=bucket(2, fill_interval='2s', tokens_per_fill=2),
            enable_x_ratelimit_headers='DRAFT_VERSION_03')])
        with h.HttpClientConn(port) as c:
            statuses = [c.request('GET', '/').status for _ in range(3)]
            self.assertEqual(statuses, [200, 200, 429])
            t0 = time.monotonic()
            # Poll until the next fill (at most one interval away, whatever the phase).
            r = h.wait_until(lambda: (lambda r: r if r.status == 200 else None)(
                c.request('GET', '/poll')), timeout=6, interval=0.05,
                message='a 200 after the refill')
            self.assertEqual(r.get('x-ratelimit-remaining'), '1')
            # Exactly tokens_per_fill came back: one more, then limited again.
            self.assertEqual(c.request('GET', '/').status, 200)
            self.assertEqual(c.request('GET', '/').status, 429)
            self.assertLess(time.monotonic() - t0, h.scaled(60))

    def test_filter_enabled_fraction(self):
        # 30% of requests enabled (they take a token and count in `enabled`); the bucket is
        # big enough never to limit.
        n = 1000
        p, port, up = self.start([lrl_filter(token_bucket=bucket(1000000), enabled=30,
                                             enable_x_ratelimit_headers='DRAFT_VERSION_03')],
                                 direct=True)
        with_headers = 0
        with h.HttpClientConn(port) as c:
            for _ in range(n):
                r = c.request('GET', '/')
                self.assertEqual(r.status, 200)
                with_headers += r.get('x-ratelimit-limit') is not None
        ok, why = binomial_ok(with_headers, n, 0.30)
        self.assertTrue(ok, why)
        p.wait_stat('rl.http_local_rate_limit.enabled', with_headers)
        self.assertEqual(p.stat('rl.http_local_rate_limit.ok'), with_headers)
        self.assertEqual(p.stat('rl.http_local_rate_limit.rate_limited'), 0)

    def test_filter_enforced_fraction_and_headers_when_not_enforced(self):
        # One token; then every request is rate limited, 50% of them enforced (429); the
        # others go upstream with request_headers_to_add_when_not_enforced.
        n = 1000
        p, port, up = self.start([lrl_filter(
            token_bucket=bucket(1), enforced=50,
            request_headers_to_add_when_not_enforced=[
                {'header': {'key': 'x-rl-shadow', 'value': 'over %REQ(:PATH)%'}}])],
            direct=True)
        limited = 0
        with h.HttpClientConn(port) as c:
            r = c.request('GET', '/first')
            self.assertEqual(r.status, 200)
            self.assertIsNone(r.get('x-echo-shadow'))
            for i in range(n):
                r = c.request('GET', '/r%d' % i)
                self.assertIn(r.status, (200, 429))
                if r.status == 429:
                    limited += 1
                    self.assertEqual(r.body, b'local_rate_limited')
                else:
                    # Let through, with the shadow header (the route echoes it back).
                    self.assertEqual(r.body, b'direct')
                    self.assertEqual(r.get('x-echo-shadow'), 'over /r%d' % i)
        ok, why = binomial_ok(limited, n, 0.5)
        self.assertTrue(ok, why)
        # Upstream-bound requests get the header too.
        p2, port2, up2 = self.start([lrl_filter(
            token_bucket=bucket(1), enforced=0,
            request_headers_to_add_when_not_enforced=[
                {'header': {'key': 'x-rl-shadow', 'value': 'over %REQ(:PATH)%'}}])])
        with h.HttpClientConn(port2) as c:
            for i in range(3):
                self.assertEqual(c.request('GET', '/u%d' % i).status, 200)
        self.assertIsNone(up2.requests[0].header('x-rl-shadow'))
        self.assertEqual([rec.header('x-rl-shadow') for rec in up2.requests[1:]],
                         ['over /u1', 'over /u2'])
        p.wait_stat('rl.http_local_rate_limit.enabled', n + 1)
        self.assertEqual(p.stat('rl.http_local_rate_limit.ok'), 1)
        self.assertEqual(p.stat('rl.http_local_rate_limit.rate_limited'), n)
        self.assertEqual(p.stat('rl.http_local_rate_limit.enforced'), limited)

    def test_shared_bucket_exact_across_workers(self):
        # Two workers, many client connections at once (SO_REUSEPORT spreads them over both
        # workers; the debug log, whose lines name the worker, shows both took part): N
        # tokens give exactly N 200s in total.
        tokens, nconns, per_conn = 50, 24, 6
        p, port, up = self.start([lrl_filter(token_bucket=bucket(tokens))], concurrency=2,
                                 log_level='debug')
        results = []
        lock = threading.Lock()
        start = threading.Barrier(nconns)

        def client():
            got = []
            with h.HttpClientConn(port, timeout=30) as c:
                start.wait()
                for _ in range(per_conn):
                    got.append(c.request('GET', '/').status)
            with lock:
                results.extend(got)

        threads = [threading.Thread(target=client) for _ in range(nconns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(results), nconns * per_conn)
        self.assertEqual(results.count(200), tokens)
        self.assertEqual(results.count(429), nconns * per_conn - tokens)
        self.assertEqual(len(up.requests), tokens)
        p.wait_stat('rl.http_local_rate_limit.ok', tokens)
        p.wait_stat('rl.http_local_rate_limit.enforced', nconns * per_conn - tokens)
        log = p.log()
        for w in ('w0', 'w1'):
            self.assertRegex(log, r'\[%s\]\[debug\] local_rate_limit rl: ' % w)

    def test_per_connection_buckets(self):
        p, port, up = self.start([lrl_filter(token_bucket=bucket(2),
                                             local_rate_limit_per_downstream_connection=True,
                                             enable_x_ratelimit_headers='DRAFT_VERSION_03')])
        a = h.HttpClientConn(port)
        b = h.HttpClientConn(port)
        try:
            self.assertEqual([a.request('GET', '/').status for _ in range(3)], [200, 200, 429])
            # Another connection has its own full bucket.
            r = b.request('GET', '/')
            self.assertEqual(r.status, 200)
            self.assertEqual(r.get('x-ratelimit-remaining'), '1')
            self.assertEqual([b.request('GET', '/').status for _ in range(2)], [200, 429])
            self.assertEqual(a.request('GET', '/').status, 429)
        finally:
            a.close()
            b.close()
        # New connections (reusing whatever the closed ones left) start full.
        for _ in range(5):
            with h.HttpClientConn(port) as c:
                self.assertEqual([c.request('GET', '/').status for _ in range(3)],
                                 [200, 200, 429])
        p.wait_stat('rl.http_local_rate_limit.enforced', 2 + 1 + 5)

    def test_per_connection_buckets_many_connections(self):
        # Enough connections, some overlapping, to make the per-worker table sweep the
        # entries of closed ones several times; each new connection starts full.
        p, port, up = self.start([lrl_filter(token_bucket=bucket(1),
                                             local_rate_limit_per_downstream_connection=True)],
                                 concurrency=2, direct=True)
        held = []
        for i in range(300):
            with h.HttpClientConn(port) as c:
                self.assertEqual(c.request('GET', '/').status, 200)
                self.assertEqual(c.request('GET', '/').status, 429)
            if i % 10 == 0:
                k = h.HttpClientConn(port)
                self.assertEqual(k.request('GET', '/').status, 200)
                held.append(k)
        for k in held:
            self.assertEqual(k.request('GET', '/').status, 429)
            k.close()
        p.wait_stat('rl.http_local_rate_limit.ok', 300 + len(held))
        p.wait_stat('rl.http_local_rate_limit.enforced', 300 + len(held))

    def test_grpc_request_gets_trailers_only_answer(self):
        grpc = {'content-type': 'application/grpc', 'te': 'trailers'}
        p, port, up = self.start([
            lrl_filter('plain', token_bucket=bucket(1)),
        ])
        self.assertEqual(h.http_request(port, 'POST', '/svc/M', headers=grpc, body=b'').status,
                         200)
        r = h.http_request(port, 'POST', '/svc/M', headers=grpc, body=b'')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.get('content-type'), 'application/grpc')
        self.assertEqual(r.get('grpc-status'), '14')  # UNAVAILABLE, from 429
        self.assertEqual(r.get('grpc-message'), 'local_rate_limited')
        self.assertEqual(r.body, b'')

    def test_grpc_resource_exhausted(self):
        grpc = {'content-type': 'application/grpc+proto'}
        p, port, up = self.start([lrl_filter(token_bucket=bucket(1),
                                             rate_limited_as_resource_exhausted=True)])
        h.http_request(port, 'POST', '/svc/M', headers=grpc, body=b'')
        r = h.http_request(port, 'POST', '/svc/M', headers=grpc, body=b'')
        self.assertEqual((r.status, r.get('grpc-status')), (200, '8'))
        # A plain HTTP request still gets the status.
        self.assertEqual(h.http_request(port, 'GET', '/').status, 429)
        self.wait_access(p, 'ACCESS /svc/M 200 RL local_rate_limited')

    def test_custom_status(self):
        p, port, up = self.start([lrl_filter(token_bucket=bucket(1),
                                             status={'code': 'ServiceUnavailable'})])
        h.http_request(port, 'GET', '/')
        self.assertEqual(h.http_request(port, 'GET', '/').status, 503)

    def test_config_errors_exit_1(self):
        port, admin = h.free_ports(2)
        hcm = h.http_connection_manager(
            'ingress', h.route_config([h.vhost('all', ['*'], [h.route_prefix('/', 'a')])]),
            http_filters=[lrl_filter(descriptors=[{'entries': [{'key': 'k', 'value': 'v'}],
                                                   'token_bucket': bucket(1)}]),
                          h.router_filter()])
        cfg = h.bootstrap([h.listener('http', port, [hcm])], [h.cluster('a', [1])])
        d = tempfile.mkdtemp(prefix='petrel-rl-')
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, 'bad.json')
        with open(path, 'w') as f:
            json.dump(cfg, f)
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', path])
        self.assertEqual(rc, 1, err)
        self.assertIn('http_filters[0].typed_config.descriptors: descriptors are not supported',
                      err + out)


class RateLimitNetworkTest(unittest.TestCase):

    def test_connections_beyond_bucket_are_closed(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            rl = {'name': 'envoy.filters.network.local_ratelimit', 'typed_config': {
                '@type': LRL_NET_TYPE, 'stat_prefix': 'tcp_rl', 'token_bucket': bucket(3)}}
            cfg = h.bootstrap([h.listener('tcp', port, [rl, h.tcp_proxy('tcp', 'echo')])],
                              [h.cluster('echo', [echo.port])], admin_port=admin)
            with h.Petrel(cfg, concurrency=2) as p:
                socks = []
                for i in range(3):
                    s = h.tcp_connect(port)
                    socks.append(s)
                    s.sendall(b'hi%d' % i)
                    self.assertEqual(h.recv_exact(s, 3), b'hi%d' % i)
                for _ in range(4):
                    s = h.tcp_connect(port)
                    s.settimeout(h.scaled(5))
                    try:
                        s.sendall(b'x')
                        data = s.recv(10)
                    except (ConnectionError, socket.timeout) as e:
                        self.assertNotIsInstance(e, socket.timeout)
                        data = b''
                    self.assertEqual(data, b'')
                    s.close()
                p.wait_stat('local_rate_limit.tcp_rl.rate_limited', 4)
                self.assertEqual(echo.accepted, 3)
                # The allowed connections are unaffected.
                socks[0].sendall(b'again')
                self.assertEqual(h.recv_exact(socks[0], 5), b'again')
                for s in socks:
                    s.close()
                self.assertEqual(p.stat('tcp.tcp.downstream_cx_total'), 3)

    def test_runtime_disabled(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            rl = {'name': 'envoy.filters.network.local_ratelimit', 'typed_config': {
                '@type': LRL_NET_TYPE, 'stat_prefix': 'off', 'token_bucket': bucket(1),
                'runtime_enabled': {'default_value': False, 'runtime_key': 'k'}}}
            cfg = h.bootstrap([h.listener('tcp', port, [rl, h.tcp_proxy('tcp', 'echo')])],
                              [h.cluster('echo', [echo.port])], admin_port=admin)
            with h.Petrel(cfg) as p:
                for i in range(3):
                    with h.tcp_connect(port) as s:
                        s.sendall(b'ok')
                        self.assertEqual(h.recv_exact(s, 2), b'ok')
                self.assertEqual(p.stat('local_rate_limit.off.rate_limited'), 0)


if __name__ == '__main__':
    unittest.main()
