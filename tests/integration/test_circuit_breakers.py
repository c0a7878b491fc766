"""Circuit breakers end to end, with exact counters: max_requests, max_pending_requests,
max_connections (cluster and per host), max_retries and retry budgets, per priority; the
circuit_breakers.* gauges (open flags and, with track_remaining, what is left) and the
limits /clusters shows.

The counts are shared by all workers (atomics), so most tests run petrel with
--concurrency 2 and still expect exact numbers: load is offered by client threads, held at
the upstream with /delay/<ms> long enough that every request of a burst arrives while the
first ones are still in flight. Only lower bounds on time are asserted.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_circuit_breakers.py -v
"""

import os
import re
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

FILE_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog'
LOG_FORMAT = '%RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(:PATH)%\n'
OVERFLOW_BODY = (b'upstream connect error or disconnect/reset before headers. reset reason: '
                 b'overflow')
FAST = {'base_interval': '0.005s', 'max_interval': '0.02s'}
CB = 'cluster.up.circuit_breakers.'


def ms(seconds):
    """An upstream /delay in ms, scaled for sanitizer builds."""
    return int(h.scaled(seconds) * 1000)


def access_log():
    return [{'name': 'envoy.access_loggers.file', 'typed_config': {
        '@type': FILE_LOG, 'path': 'access.log', 'log_format': {'text_format_source': {
            'inline_string': LOG_FORMAT}}}}]


def breakers(*thresholds, per_host=None):
    cb = {'thresholds': list(thresholds)}
    if per_host is not None:
        cb['per_host_thresholds'] = per_host
    return {'circuit_breakers': cb}


class Burst:
    """Runs ``fn(i)`` for i in range(n) on n threads at once; ``.results[i]`` is its return
    value (or the exception)."""

    def __init__(self, n, fn):
        self.results = {}
        self._lock = threading.Lock()
        self._go = threading.Event()

        def run(i):
            self._go.wait()
            try:
                res = fn(i)
            except Exception as e:  # the test inspects it
                res = e
            with self._lock:
                self.results[i] = res

        self.threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()
        self._go.set()

    def done(self):
        with self._lock:
            return len(self.results)

    def wait(self, count=None, timeout=30):
        count = len(self.threads) if count is None else count
        h.wait_until(lambda: self.done() >= count, timeout, 0.01,
                     '%d of %d burst requests answered' % (count, len(self.threads)))
        return self.results

    def join(self, timeout=60):
        self.wait(timeout=timeout)
        for t in self.threads:
            t.join(h.scaled(5))
        return [self.results[i] for i in range(len(self.threads))]


class BreakerCase(unittest.TestCase):

    def start(self, endpoints, routes=None, cluster_extra=None, concurrency=2, timeout='15s'):
        self.port, admin = h.free_ports(2)
        routes = routes or [h.route_prefix('/', 'up', timeout=timeout)]
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], routes)]), access_log=access_log())
        eps = [e if isinstance(e, int) else e.port for e in endpoints]
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster('up', eps, **(cluster_extra or {}))], admin_port=admin)
        self.p = h.Petrel(cfg, concurrency=concurrency)
        self.p.__enter__()
        self.addCleanup(self.p.__exit__, None, None, None)
        return self.p

    def upstream(self, name='up'):
        up = HttpUpstream(name=name)
        self.addCleanup(up.close)
        return up

    def get(self, path, headers=None, timeout=30):
        return h.http_request(self.port, 'GET', path, headers=headers, timeout=timeout)

    def burst(self, n, path_fn, headers=None):
        return Burst(n, lambda i: self.get(path_fn(i), headers))

    def log_lines(self):
        try:
            with open(self.p.path('access.log')) as f:
                return f.read().splitlines()
        except OSError:
            return []

    def wait_log_count(self, pattern, count):
        rx = re.compile(pattern)
        return h.wait_until(lambda: len([x for x in self.log_lines() if rx.search(x)]) == count,
                            10, 0.1, 'access log: %d lines matching %r (have: %r)'
                            % (count, pattern, self.log_lines()[-5:]))

    def assert_overflowed(self, r):
        self.assertNotIsInstance(r, Exception)
        self.assertEqual(r.status, 503)
        self.assertEqual(r.get('x-envoy-overloaded'), 'true')
        self.assertEqual(r.body, OVERFLOW_BODY)

    def split(self, results):
        """(answered 200, overflowed 503 UO, others) from a list of responses."""
        ok = [r for r in results if not isinstance(r, Exception) and r.status == 200]
        over = [r for r in results if not isinstance(r, Exception) and r.status == 503
                and r.get('x-envoy-overloaded') == 'true']
        rest = [r for r in results if r not in ok and r not in over]
        return ok, over, rest


class MaxRequests(BreakerCase):

    def test_max_requests_overflow_exact(self):
        # max_requests 5, 20 concurrent slow requests over two workers: exactly 5 reach the
        # upstream, 15 fail fast with 503, x-envoy-overloaded and UO.
        up = self.upstream()
        p = self.start([up], cluster_extra=breakers({'max_requests': 5,
                                                     'track_remaining': True}))
        self.assertEqual(p.stat(CB + 'default.rq_open'), 0)
        self.assertEqual(p.stat(CB + 'default.remaining_rq'), 5)
        b = self.burst(20, lambda i: '/delay/%d/echo/%d' % (ms(2), i))
        b.wait(15)                                  # the 15 rejected ones come back first
        up.wait_requests(5)
        # Saturated: open, nothing left.
        self.assertEqual(p.stat(CB + 'default.rq_open'), 1)
        self.assertEqual(p.stat(CB + 'default.remaining_rq'), 0)
        self.assertEqual(p.stat('cluster.up.upstream_rq_active'), 5)
        results = b.join()
        ok, over, rest = self.split(results)
        self.assertEqual((len(ok), len(over), rest), (5, 15, []))
        for r in over:
            self.assert_overflowed(r)
        self.assertEqual(len(up.requests), 5)
        stats = p.stats()
        self.assertEqual(stats['cluster.up.upstream_rq_pending_overflow'], 15)
        self.assertEqual(stats['cluster.up.upstream_rq_total'], 5)
        self.assertEqual(stats[CB + 'default.rq_open'], 0)
        self.assertEqual(stats[CB + 'default.remaining_rq'], 5)
        self.wait_log_count(r'^503 UO /delay/', 15)
        self.wait_log_count(r'^200 - /delay/', 5)

    def test_gauges_without_track_remaining(self):
        up = self.upstream()
        p = self.start([up], cluster_extra=breakers({'max_requests': 2}))
        stats = p.stats()
        for g in ('cx_open', 'rq_pending_open', 'rq_open', 'rq_retry_open'):
            self.assertEqual(stats[CB + 'default.' + g], 0)
            self.assertEqual(stats[CB + 'high.' + g], 0)
        self.assertFalse([k for k in stats if k.startswith(CB) and '.remaining_' in k])
        b = self.burst(2, lambda i: '/delay/%d' % ms(1.5))
        up.wait_requests(2)
        self.assertEqual(p.stat(CB + 'default.rq_open'), 1)
        b.join()
        p.wait_stat(CB + 'default.rq_open', 0)

    def test_max_requests_does_not_count_queued_requests(self):
        # BUG (filters/router.c takes the max_requests slot in router_decode_headers, for
        # the stream's whole life): in Envoy max_requests counts requests attached to an
        # upstream connection (ConnPoolImplBase::attachStreamToClient); one waiting for a
        # connection counts only against max_pending_requests. Here max_requests 1 and
        # max_connections 1: the second request should queue behind the first and be
        # served, not be rejected with 503 UO.
        up = self.upstream()
        p = self.start([up], cluster_extra=breakers({'max_requests': 1, 'max_connections': 1,
                                                     'max_pending_requests': 10}),
                       concurrency=1)
        first = self.burst(1, lambda i: '/delay/%d' % ms(1))
        up.wait_requests(1)
        r = self.get('/echo/queued')
        first.join()
        self.assertEqual(r.status, 200)
        self.assertEqual(p.stat('cluster.up.upstream_rq_pending_overflow'), 0)


class MaxPending(BreakerCase):

    def test_max_pending_overflow_exact(self):
        # One connection allowed and busy with a slow request; a burst of 8: exactly 3 queue
        # (max_pending_requests), 5 overflow. One worker: with more, a worker whose pool has
        # no connection may open one (see test_max_connections_across_workers).
        up = self.upstream()
        p = self.start([up], timeout='%gs' % h.scaled(3), concurrency=1, cluster_extra=breakers(
            {'max_connections': 1, 'max_pending_requests': 3, 'track_remaining': True}))
        first = self.burst(1, lambda i: '/delay/%d/first' % ms(1))
        up.wait_requests(1)
        b = self.burst(8, lambda i: '/delay/20/queued/%d' % i)
        b.wait(5)
        self.assertEqual(p.stat(CB + 'default.rq_pending_open'), 1)
        self.assertEqual(p.stat(CB + 'default.remaining_pending'), 0)
        self.assertEqual(p.stat(CB + 'default.cx_open'), 1)
        self.assertEqual(p.stat('cluster.up.upstream_rq_pending_active'), 3)
        results = b.join()
        self.assertEqual(first.join()[0].status, 200)
        ok, over, rest = self.split(results)
        self.assertEqual(len(over), 5)
        for r in over:
            self.assert_overflowed(r)
        # The 3 queued ones were served in turn.
        self.assertEqual(len(ok), 3)
        self.assertEqual(rest, [])
        stats = p.stats()
        self.assertEqual(stats['cluster.up.upstream_rq_pending_overflow'], 5)
        self.assertEqual(stats['cluster.up.upstream_rq_pending_total'], 1 + 3)
        self.assertEqual(up.connections, 1)
        self.wait_log_count(r'^503 UO /delay/20/queued/', 5)
        p.wait_stat(CB + 'default.rq_pending_open', 0)
        self.assertEqual(p.stat(CB + 'default.remaining_pending'), 3)

    def test_pending_requests_served_in_turn(self):
        # One worker: the queued requests are served one after the other on the single
        # connection; each tried to open a connection of its own and was turned away.
        up = self.upstream()
        p = self.start([up], concurrency=1, cluster_extra=breakers(
            {'max_connections': 1, 'max_pending_requests': 3}))
        first = self.burst(1, lambda i: '/delay/%d/first' % ms(1))
        up.wait_requests(1)
        b = self.burst(5, lambda i: '/delay/50/queued/%d' % i)
        results = b.join()
        self.assertEqual(first.join()[0].status, 200)
        ok, over, rest = self.split(results)
        self.assertEqual((len(ok), len(over), rest), (3, 2, []))
        self.assertEqual(up.connections, 1)
        self.assertEqual(len(up.requests), 4)
        self.assertEqual({r['conn_id'] for r in up.requests}, {1})
        stats = p.stats()
        self.assertEqual(stats['cluster.up.upstream_rq_pending_overflow'], 2)
        self.assertEqual(stats['cluster.up.upstream_cx_overflow'], 3)
        self.assertEqual(stats['cluster.up.upstream_cx_total'], 1)


class MaxConnections(BreakerCase):

    def test_max_connections_caps_upstream_connections(self):
        # max_connections 2: two slow requests hold both; 8 more queue (each one's attempt
        # to open a connection counts upstream_cx_overflow) and are served on those two.
        up = self.upstream()
        p = self.start([up], concurrency=1, cluster_extra=breakers(
            {'max_connections': 2, 'track_remaining': True}))
        first = self.burst(2, lambda i: '/delay/%d/first/%d' % (ms(1), i))
        up.wait_requests(2)
        self.assertEqual(p.stat(CB + 'default.cx_open'), 1)
        self.assertEqual(p.stat(CB + 'default.remaining_cx'), 0)
        b = self.burst(8, lambda i: '/delay/20/more/%d' % i)
        results = b.join() + first.join()
        self.assertEqual([r.status for r in results], [200] * 10)
        self.assertEqual(up.connections, 2)
        stats = p.stats()
        self.assertEqual(stats['cluster.up.upstream_cx_overflow'], 8)
        self.assertEqual(stats['cluster.up.upstream_cx_total'], 2)
        self.assertEqual(stats['cluster.up.upstream_rq_pending_overflow'], 0)

    def test_max_connections_across_workers(self):
        # Two workers, max_connections 2, 8 concurrent slow requests. As in Envoy, a pool
        # with no connection at all opens one even over the limit (otherwise a request could
        # wait for a slot that another pool never gives back), so the cap is
        # max_connections + workers - 1 = 3, and every request is served, none overflows.
        up = self.upstream()
        p = self.start([up], timeout='%gs' % h.scaled(5),
                       cluster_extra=breakers({'max_connections': 2}))
        b = self.burst(8, lambda i: '/delay/%d/%d' % (ms(0.25), i))
        up.wait_requests(2)
        self.assertEqual(p.stat(CB + 'default.cx_open'), 1)
        results = b.join()
        self.assertLessEqual(up.connections, 3)
        self.assertGreaterEqual(up.connections, 2)
        self.assertLessEqual(p.stat('cluster.up.upstream_cx_total'), 3)
        ok, over, rest = self.split(results)
        self.assertEqual(over, [])
        self.assertEqual(rest, [])
        self.assertEqual(len(ok), 8)

    def test_queued_request_served_when_slot_is_held_by_another_pool(self):
        # BUG (proxy/pool.c pt_pool_acquire/start_connect): a request whose pool has no
        # connection, blocked by max_connections, waits for a slot, but nothing ever wakes
        # it: a slot freed (or held idle) by another pool -- another host, or the same host
        # on another worker -- does not call its start_connect. Envoy opens a connection
        # anyway when the pool has none (ConnPoolImplBase::tryCreateNewConnection), so the
        # request is served. Here: max_connections 1, two hosts, one worker; the first
        # request leaves an idle connection to host a; the next one, for host b, waits
        # until the route timeout (504) although nothing at all is in flight.
        a, b = self.upstream('a'), self.upstream('b')
        p = self.start([a, b], timeout='2s', concurrency=1,
                       cluster_extra=breakers({'max_connections': 1}))
        self.assertEqual(self.get('/echo/1').status, 200)
        r = self.get('/echo/2')
        self.assertEqual(p.stat('cluster.up.upstream_cx_overflow'), 1)
        self.assertEqual(r.status, 200)

    def test_per_host_max_connections(self):
        # per_host_thresholds max_connections 1 with the cluster limit high: one connection
        # to the host; queued requests are served on it one by one.
        up = self.upstream()
        p = self.start([up], concurrency=1, cluster_extra=breakers(
            {'max_connections': 100}, per_host=[{'max_connections': 1}]))
        first = self.burst(1, lambda i: '/delay/%d/first' % ms(1))
        up.wait_requests(1)
        b = self.burst(3, lambda i: '/delay/20/more/%d' % i)
        results = b.join() + first.join()
        self.assertEqual([r.status for r in results], [200] * 4)
        self.assertEqual(up.connections, 1)
        stats = p.stats()
        self.assertEqual(stats['cluster.up.upstream_cx_overflow'], 3)
        # The per-host limit is not the cluster's: the cluster gauge stays closed.
        self.assertEqual(stats[CB + 'default.cx_open'], 0)

    def test_per_host_max_connections_each_host(self):
        a, b = self.upstream('a'), self.upstream('b')
        self.start([a, b], concurrency=1, cluster_extra=breakers(
            {'max_connections': 100}, per_host=[{'max_connections': 1}]))
        burst = self.burst(8, lambda i: '/delay/%d/%d' % (ms(0.3), i))
        results = burst.join()
        self.assertEqual([r.status for r in results], [200] * 8)
        self.assertEqual((a.connections, b.connections), (1, 1))
        self.assertEqual(len(a.requests) + len(b.requests), 8)

    def test_per_host_limit_on_another_worker(self):
        # BUG (proxy/pool.c pt_pool_acquire): with per_host_thresholds max_connections 1
        # and two workers, the host's one connection lives on one worker; a request on the
        # other worker finds its pool empty, start_connect refuses (per-host limit), and
        # since the *cluster* breaker is not full the pool treats it as "no socket could
        # be made": 503 UF at once, with nothing in flight. Envoy opens the connection
        # (a pool with no connection always may) and serves every request.
        up = self.upstream()
        self.start([up], cluster_extra=breakers(
            {'max_connections': 100}, per_host=[{'max_connections': 1}]))
        statuses = [self.get('/echo/%d' % i).status for i in range(16)]
        self.assertEqual(statuses, [200] * 16)


class Retries(BreakerCase):

    def retry_route(self, num_retries=1, timeout='15s'):
        return [h.route_prefix('/', 'up', timeout=timeout, retry_policy={
            'retry_on': '5xx', 'num_retries': num_retries, 'retry_back_off': FAST})]

    def test_max_retries_default_three(self):
        # 20 concurrent requests whose attempts all fail slowly: when the first attempts
        # fail (at about the same time), only 3 retries may run at once (the default
        # max_retries); the other 17 are not retried.
        up = self.upstream()
        p = self.start([up], routes=self.retry_route())
        b = self.burst(20, lambda i: '/delay/%d/status/503' % ms(1))
        results = b.join()
        self.assertEqual([r.status for r in results], [503] * 20)
        stats = p.stats()
        self.assertEqual(stats['cluster.up.upstream_rq_retry'], 3)
        self.assertEqual(stats['cluster.up.upstream_rq_retry_overflow'], 17)
        self.assertEqual(stats['cluster.up.upstream_rq_retry_limit_exceeded'], 3)
        self.assertEqual(len(up.requests), 23)
        self.assertEqual(stats[CB + 'default.rq_retry_open'], 0)

    def test_max_retries_zero_disables_retries(self):
        up = self.upstream()
        p = self.start([up], routes=self.retry_route(3), concurrency=1,
                       cluster_extra=breakers({'max_retries': 0}))
        self.assertEqual(self.get('/fail/z/1/503').status, 503)
        self.assertEqual(len(up.requests), 1)
        self.assertEqual(p.stat('cluster.up.upstream_rq_retry_overflow'), 1)
        self.assertEqual(p.stat('cluster.up.upstream_rq_retry'), 0)
        self.assertEqual(p.stat(CB + 'default.rq_retry_open'), 1)   # 0 >= 0: always open

    def test_retry_overflow_flag(self):
        # BUG (filters/router.c maybe_retry): when the retry circuit breaker turns a retry
        # away, Envoy sets the UO response flag on the request
        # (Filter::onUpstreamHeaders / maybeRetryReset: RetryStatus::NoOverflow); petrel
        # only counts upstream_rq_retry_overflow and logs "-".
        up = self.upstream()
        self.start([up], routes=self.retry_route(3), concurrency=1,
                   cluster_extra=breakers({'max_retries': 0}))
        self.assertEqual(self.get('/fail/uo/1/503').status, 503)
        self.wait_log_count(r'^503 \S+ /fail/uo/1/503$', 1)
        self.assertIn('503 UO /fail/uo/1/503', self.log_lines())

    def test_retry_budget_limits_concurrent_retries(self):
        # A budget replaces max_retries (1 here): 20% of the active (attached) and pending
        # requests. With 20 in flight the budget is 4; each request leaving its connection to
        # back off lowers the count (as in Envoy, where a request counts while attached to a
        # connection), so 3 or 4 retries start depending on how the answers interleave.
        up = self.upstream()
        p = self.start([up], routes=self.retry_route(), cluster_extra=breakers(
            {'max_retries': 1, 'track_remaining': True,
             'retry_budget': {'budget_percent': {'value': 20.0},
                              'min_retry_concurrency': 2}}))
        self.assertEqual(p.stat(CB + 'default.remaining_retries'), 2)   # min concurrency
        b = self.burst(20, lambda i: '/delay/%d/status/503' % ms(1))
        up.wait_requests(20)
        self.assertEqual(p.stat(CB + 'default.remaining_retries'), 4)   # 20% of 20
        results = b.join()
        self.assertEqual([r.status for r in results], [503] * 20)
        stats = p.stats()
        retries = stats['cluster.up.upstream_rq_retry']
        self.assertIn(retries, (3, 4))
        self.assertEqual(stats['cluster.up.upstream_rq_retry_overflow'], 20 - retries)
        self.assertEqual(len(up.requests), 20 + retries)

    def test_retry_budget_min_retry_concurrency(self):
        # 20% of 5 active requests is 1, below min_retry_concurrency 3: 3 retries.
        up = self.upstream()
        p = self.start([up], routes=self.retry_route(), cluster_extra=breakers(
            {'retry_budget': {'budget_percent': {'value': 20.0},
                              'min_retry_concurrency': 3}}))
        results = self.burst(5, lambda i: '/delay/%d/status/503' % ms(1)).join()
        self.assertEqual([r.status for r in results], [503] * 5)
        stats = p.stats()
        self.assertEqual(stats['cluster.up.upstream_rq_retry'], 3)
        self.assertEqual(stats['cluster.up.upstream_rq_retry_overflow'], 2)

    def test_retry_slot_released_after_retry(self):
        # max_retries 1, requests one after the other: each may retry (the slot is held
        # from the retry decision until that retry's outcome, then given back).
        up = self.upstream()
        p = self.start([up], routes=self.retry_route(2), concurrency=1,
                       cluster_extra=breakers({'max_retries': 1}))
        for i in range(4):
            self.assertEqual(self.get('/fail/s%d/2/503' % i).status, 200)
        stats = p.stats()
        self.assertEqual(stats['cluster.up.upstream_rq_retry'], 8)
        self.assertEqual(stats['cluster.up.upstream_rq_retry_overflow'], 0)
        self.assertEqual(stats[CB + 'default.rq_retry_open'], 0)


class Priorities(BreakerCase):

    def test_high_priority_route_uses_high_thresholds(self):
        # DEFAULT allows 2 requests, HIGH 3. Six slow requests on the HIGH route and four
        # on the default one, all at once: 3 + 2 reach the upstream.
        up = self.upstream()
        routes = [h.route_prefix('/high/', 'up', priority='HIGH', prefix_rewrite='/'),
                  h.route_prefix('/', 'up')]
        p = self.start([up], routes=routes, cluster_extra=breakers(
            {'priority': 'DEFAULT', 'max_requests': 2},
            {'priority': 'HIGH', 'max_requests': 3, 'track_remaining': True}))
        hi = self.burst(6, lambda i: '/high/delay/%d/h%d' % (ms(2), i))
        lo = self.burst(4, lambda i: '/delay/%d/d%d' % (ms(2), i))
        up.wait_requests(5)
        self.assertEqual(p.stat(CB + 'high.rq_open'), 1)
        self.assertEqual(p.stat(CB + 'high.remaining_rq'), 0)
        self.assertEqual(p.stat(CB + 'default.rq_open'), 1)
        hi_ok, hi_over, hi_rest = self.split(hi.join())
        lo_ok, lo_over, lo_rest = self.split(lo.join())
        self.assertEqual((len(hi_ok), len(hi_over), hi_rest), (3, 3, []))
        self.assertEqual((len(lo_ok), len(lo_over), lo_rest), (2, 2, []))
        self.assertEqual(p.stat('cluster.up.upstream_rq_pending_overflow'), 5)
        self.assertEqual(p.stat(CB + 'high.remaining_rq'), 3)

    def test_high_priority_has_its_own_default_limits(self):
        # Only DEFAULT is configured (max_requests 1): HIGH keeps Envoy's default 1024.
        up = self.upstream()
        routes = [h.route_prefix('/high/', 'up', priority='HIGH', prefix_rewrite='/'),
                  h.route_prefix('/', 'up')]
        self.start([up], routes=routes, cluster_extra=breakers({'max_requests': 1}))
        results = self.burst(4, lambda i: '/high/delay/%d/%d' % (ms(0.5), i)).join()
        self.assertEqual([r.status for r in results], [200] * 4)


class ClustersEndpoint(BreakerCase):

    def test_clusters_shows_configured_limits(self):
        up = self.upstream()
        p = self.start([up], cluster_extra=breakers(
            {'priority': 'DEFAULT', 'max_connections': 7, 'max_pending_requests': 8,
             'max_requests': 9, 'max_retries': 10},
            {'priority': 'HIGH', 'max_connections': 11, 'max_pending_requests': 12,
             'max_requests': 13, 'max_retries': 14}))
        status, _, body = p.admin_get('/clusters')
        self.assertEqual(status, 200)
        lines = set(body.decode().splitlines())
        for prio, vals in (('default_priority', (7, 8, 9, 10)),
                           ('high_priority', (11, 12, 13, 14))):
            for name, v in zip(('max_connections', 'max_pending_requests', 'max_requests',
                                'max_retries'), vals):
                self.assertIn('up::%s::%s::%d' % (prio, name, v), lines)

    def test_clusters_shows_defaults(self):
        up = self.upstream()
        p = self.start([up])
        lines = set(p.admin_get('/clusters')[2].decode().splitlines())
        for prio in ('default_priority', 'high_priority'):
            for name, v in (('max_connections', 1024), ('max_pending_requests', 1024),
                            ('max_requests', 1024), ('max_retries', 3)):
                self.assertIn('up::%s::%s::%d' % (prio, name, v), lines)


if __name__ == '__main__':
    unittest.main()
