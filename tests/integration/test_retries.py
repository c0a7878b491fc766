"""Retries end to end: which outcomes retry under which retry_on conditions, how many times
(num_retries counts retries, not attempts), the retry counters and the URX flag, the request
headers that refine a policy (x-envoy-retry-on, x-envoy-max-retries,
x-envoy-retriable-status-codes), virtual host vs route policies, the previous_hosts
predicate, the jittered exponential backoff (bounds only), body replay and its buffer limit,
x-envoy-attempt-count both ways, and how the route timeout and per_try_timeout bound the
attempts.

Timing is asserted as lower bounds plus generous upper bounds only (see tests/integration/
README.md). See docs/resilience.md for the semantics under test.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_retries.py -v
"""

import os
import re
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

FILE_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog'
LOG_FORMAT = ('%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_REQUEST_ATTEMPT_COUNT% '
              '%REQ(:PATH)%\n')
PREVIOUS_HOSTS = [{'name': 'envoy.retry_host_predicates.previous_hosts', 'typed_config': {
    '@type': 'type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.'
             'PreviousHostsPredicate'}}]
SLACK = 0.05            # timers may fire a hair early relative to our clock
FAST = {'base_interval': '0.005s', 'max_interval': '0.02s'}   # quick backoff for most tests


def access_log(path='access.log'):
    return [{'name': 'envoy.access_loggers.file', 'typed_config': {
        '@type': FILE_LOG, 'path': path, 'log_format': {'text_format_source': {
            'inline_string': LOG_FORMAT}}}}]


def policy(retry_on='5xx', num_retries=None, back_off=FAST, **extra):
    """A RetryPolicy dict (fast backoff unless told otherwise)."""
    p = {'retry_on': retry_on}
    if num_retries is not None:
        p['num_retries'] = num_retries
    if back_off is not None:
        p['retry_back_off'] = back_off
    p.update(extra)
    return p


class FirstSlowUpstream(HttpUpstream):
    """An HttpUpstream whose first ``slow`` requests wait ``delay`` seconds before being
    answered as usual (an attempt that outlives per_try_timeout, then fast retries)."""

    def __init__(self, slow=1, delay=3.0, **kw):
        self.slow_left = slow
        self.delay = delay
        super().__init__(**kw)

    def _respond(self, ctx, path):
        with self._cond:
            slow = self.slow_left > 0
            self.slow_left -= 1 if slow else 0
        if slow:
            self._closing.wait(h.scaled(self.delay))
        return super()._respond(ctx, path)


class RetryCase(unittest.TestCase):
    """One petrel per test: a listener on self.port, cluster 'up' over the given upstreams
    (or ports), routes given by the test, an access log in petrel's temp dir."""

    def start(self, routes, endpoints, concurrency=1, vhost_extra=None, cluster_extra=None):
        self.port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], routes, **(vhost_extra or {}))]), access_log=access_log())
        eps = [e if isinstance(e, int) else e.port for e in endpoints]
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster('up', eps, **(cluster_extra or {}))], admin_port=admin)
        self.p = h.Petrel(cfg, concurrency=concurrency)
        self.p.__enter__()
        self.addCleanup(self.p.__exit__, None, None, None)
        return self.p

    def upstream(self, name='up', cls=HttpUpstream, **kw):
        up = cls(name=name, **kw)
        self.addCleanup(up.close)
        return up

    def get(self, path, headers=None, **kw):
        return h.http_request(self.port, 'GET', path, headers=headers, **kw)

    def log_lines(self):
        try:
            with open(self.p.path('access.log')) as f:
                return f.read().splitlines()
        except OSError:
            return []

    def wait_log(self, pattern, count=1):
        """Wait until ``count`` access-log lines match ``pattern`` (the log is flushed
        about every second); returns the matching lines."""
        rx = re.compile(pattern)
        return h.wait_until(
            lambda: (lambda m: m if len(m) >= count else None)(
                [ln for ln in self.log_lines() if rx.search(ln)]),
            10, 0.1, 'access log: %d line(s) matching %r' % (count, pattern))

    def hits(self, up, path):
        """How many attempts for ``path`` the upstream saw."""
        return sum(1 for r in up.requests if r['path'] == path)


class RetryCounts(RetryCase):

    def test_fail_n_succeeds_iff_n_within_num_retries(self):
        # num_retries 2 = at most 3 attempts: /fail/<key>/<n>/503 succeeds iff n <= 2.
        up = self.upstream()
        p = self.start([h.route_prefix('/', 'up', retry_policy=policy('5xx', 2))], [up])
        for n in range(5):
            path = '/fail/k%d/%d/503' % (n, n)
            r = self.get(path)
            self.assertEqual(r.status, 200 if n <= 2 else 503, path)
            self.assertEqual(self.hits(up, path), min(n, 2) + 1, path)
            if n <= 2:
                self.assertEqual(r.json()['path'], path)
        # Retries: 0 + 1 + 2 + 2 + 2; successes after a retry: n = 1, 2; exhausted: n = 3, 4.
        p.wait_stat('cluster.up.upstream_rq_retry', 7)
        stats = p.stats()
        self.assertEqual(stats['cluster.up.upstream_rq_retry'], 7)
        self.assertEqual(stats['cluster.up.upstream_rq_retry_success'], 2)
        self.assertEqual(stats['cluster.up.upstream_rq_retry_limit_exceeded'], 2)
        self.assertEqual(stats['cluster.up.upstream_rq_retry_overflow'], 0)
        self.assertEqual(stats['cluster.up.upstream_rq_retry_backoff_exponential'], 7)
        self.assertEqual(stats['cluster.up.upstream_rq_total'], 1 + 2 + 3 + 3 + 3)
        self.assertEqual(stats['cluster.up.upstream_rq_503'], 0 + 1 + 2 + 3 + 3)
        # The exhausted ones carry URX (the upstream's own 503 is passed on).
        self.wait_log(r'^503 URX 3 /fail/k3/3/503$')
        self.wait_log(r'^503 URX 3 /fail/k4/4/503$')
        self.wait_log(r'^200 - 3 /fail/k2/2/503$')
        self.wait_log(r'^200 - 1 /fail/k0/0/503$')

    def test_num_retries_defaults_to_one(self):
        up = self.upstream()
        p = self.start([h.route_prefix('/', 'up', retry_policy=policy('5xx'))], [up])
        self.assertEqual(self.get('/fail/a/1/503').status, 200)
        self.assertEqual(self.get('/fail/b/2/503').status, 503)
        self.assertEqual(self.hits(up, '/fail/b/2/503'), 2)
        p.wait_stat('cluster.up.upstream_rq_retry', 2)
        self.assertEqual(p.stat('cluster.up.upstream_rq_retry_limit_exceeded'), 1)

    def test_num_retries_zero_never_retries(self):
        # As in Envoy: a retriable outcome with no retry left counts limit_exceeded and URX.
        up = self.upstream()
        p = self.start([h.route_prefix('/', 'up', retry_policy=policy('5xx', 0))], [up])
        self.assertEqual(self.get('/fail/z/1/503').status, 503)
        self.assertEqual(self.hits(up, '/fail/z/1/503'), 1)
        p.wait_stat('cluster.up.upstream_rq_retry_limit_exceeded', 1)
        self.assertEqual(p.stat('cluster.up.upstream_rq_retry'), 0)
        self.wait_log(r'^503 URX 1 /fail/z/1/503$')

    def test_no_policy_no_retry(self):
        up = self.upstream()
        p = self.start([h.route_prefix('/', 'up')], [up])
        self.assertEqual(self.get('/fail/n/1/503').status, 503)
        self.assertEqual(self.hits(up, '/fail/n/1/503'), 1)
        self.wait_log(r'^503 - 1 /fail/n/1/503$')
        self.assertEqual(p.stat('cluster.up.upstream_rq_retry_limit_exceeded'), 0)


class RetryConditions(RetryCase):

    def check(self, up, path, status, attempts):
        r = self.get(path)
        self.assertEqual(r.status, status, path)
        self.assertEqual(self.hits(up, path), attempts, path)
        return r

    def test_5xx(self):
        up = self.upstream()
        self.start([h.route_prefix('/', 'up', retry_policy=policy('5xx', 1))], [up])
        for code in (500, 501, 502, 503, 504, 599):
            self.check(up, '/fail/x%d/1/%d' % (code, code), 200, 2)
        for code in (404, 409, 429):
            self.check(up, '/fail/x%d/1/%d' % (code, code), code, 1)

    def test_gateway_error_retries_502_503_504_only(self):
        up = self.upstream()
        self.start([h.route_prefix('/', 'up', retry_policy=policy('gateway-error', 1))], [up])
        for code in (502, 503, 504):
            self.check(up, '/fail/g%d/1/%d' % (code, code), 200, 2)
        for code in (500, 501, 505, 409):
            self.check(up, '/fail/g%d/1/%d' % (code, code), code, 1)

    def test_retriable_4xx_retries_409_only(self):
        up = self.upstream()
        self.start([h.route_prefix('/', 'up', retry_policy=policy('retriable-4xx', 1))], [up])
        self.check(up, '/fail/c409/1/409', 200, 2)
        for code in (400, 404, 408, 429, 503):
            self.check(up, '/fail/c%d/1/%d' % (code, code), code, 1)

    def test_retriable_status_codes_from_policy(self):
        up = self.upstream()
        self.start([h.route_prefix('/', 'up', retry_policy=policy(
            'retriable-status-codes', 1, retriable_status_codes=[418, 429]))], [up])
        self.check(up, '/fail/s418/1/418', 200, 2)
        self.check(up, '/fail/s429/1/429', 200, 2)
        self.check(up, '/fail/s503/1/503', 503, 1)
        self.check(up, '/fail/s409/1/409', 409, 1)

    def test_retriable_status_codes_from_headers(self):
        # No route policy: x-envoy-retry-on turns the condition on and
        # x-envoy-retriable-status-codes lists the codes (num_retries defaults to 1).
        up = self.upstream()
        self.start([h.route_prefix('/', 'up')], [up])
        hdrs = {'x-envoy-retry-on': 'retriable-status-codes',
                'x-envoy-retriable-status-codes': '418, 429'}
        r = self.get('/fail/h429/1/429', hdrs)
        self.assertEqual(r.status, 200)
        self.assertEqual(self.hits(up, '/fail/h429/1/429'), 2)
        self.assertEqual(self.get('/fail/h418/1/418', hdrs).status, 200)
        self.assertEqual(self.get('/fail/h503/1/503', hdrs).status, 503)
        self.assertEqual(self.hits(up, '/fail/h503/1/503'), 1)
        # The codes alone (without the condition) retry nothing.
        only_codes = {'x-envoy-retriable-status-codes': '429'}
        self.assertEqual(self.get('/fail/h2/1/429', only_codes).status, 429)
        self.assertEqual(self.hits(up, '/fail/h2/1/429'), 1)

    def test_retriable_status_codes_header_adds_to_policy(self):
        up = self.upstream()
        self.start([h.route_prefix('/', 'up', retry_policy=policy(
            'retriable-status-codes', 1, retriable_status_codes=[418]))], [up])
        hdrs = {'x-envoy-retriable-status-codes': '429'}
        self.assertEqual(self.get('/fail/a418/1/418', hdrs).status, 200)
        self.assertEqual(self.get('/fail/a429/1/429', hdrs).status, 200)
        self.assertEqual(self.get('/fail/b429/1/429').status, 429)

    def test_x_envoy_retry_on_adds_to_policy(self):
        up = self.upstream()
        self.start([h.route_prefix('/', 'up', retry_policy=policy('retriable-4xx', 1))], [up])
        self.assertEqual(self.get('/fail/p1/1/503').status, 503)
        self.assertEqual(self.get('/fail/p2/1/503', {'x-envoy-retry-on': '5xx'}).status, 200)
        self.assertEqual(self.get('/fail/p3/1/409', {'x-envoy-retry-on': '5xx'}).status, 200)

    def test_x_envoy_retry_on_unknown_token_keeps_known_ones(self):
        # BUG (filters/router.c read_retry_headers): Envoy applies every known token of
        # x-envoy-retry-on and ignores unknown ones (RetryStateImpl::parseRetryOn); petrel
        # drops the whole header when one token is unknown, so "5xx,bogus" retries nothing.
        up = self.upstream()
        self.start([h.route_prefix('/', 'up')], [up])
        r = self.get('/fail/u/1/503', {'x-envoy-retry-on': '5xx,bogus'})
        self.assertEqual(self.hits(up, '/fail/u/1/503'), 2)
        self.assertEqual(r.status, 200)

    def test_reset_retries(self):
        # /reset always resets: with reset and num_retries 2, three attempts, then 503 with
        # URX (and the reset's own flag).
        up = self.upstream()
        p = self.start([h.route_prefix('/', 'up', retry_policy=policy('reset', 2))], [up])
        r = self.get('/reset')
        self.assertEqual(r.status, 503)
        self.assertEqual(self.hits(up, '/reset'), 3)
        p.wait_stat('cluster.up.upstream_rq_retry', 2)
        self.assertEqual(p.stat('cluster.up.upstream_rq_retry_limit_exceeded'), 1)
        line = self.wait_log(r'^503 \S+ 3 /reset$')[0]
        flags = line.split()[1].split(',')
        self.assertIn('URX', flags)
        self.assertTrue({'UC', 'UR'} & set(flags), line)

    def test_5xx_and_gateway_error_retry_resets_too(self):
        # As in Envoy, a reset counts as a 5xx and as a gateway error.
        for cond in ('5xx', 'gateway-error'):
            with self.subTest(cond=cond):
                up = self.upstream()
                p = self.start([h.route_prefix('/', 'up', retry_policy=policy(cond, 1))], [up])
                self.assertEqual(self.get('/reset').status, 503)
                self.assertEqual(self.hits(up, '/reset'), 2)
                p.close()

    def test_reset_not_retried_by_other_conditions(self):
        up = self.upstream()
        p = self.start([h.route_prefix('/', 'up', retry_policy=policy(
            'retriable-4xx,retriable-status-codes,connect-failure', 3,
            retriable_status_codes=[503]))], [up])
        self.assertEqual(self.get('/reset').status, 503)
        self.assertEqual(self.hits(up, '/reset'), 1)
        self.assertEqual(p.stat('cluster.up.upstream_rq_retry'), 0)

    def test_connect_failure_retries_dead_host(self):
        # Two hosts, one dead (connection refused). With connect-failure every request
        # reaches the live host; each connect failure costs exactly one retry.
        up = self.upstream('live')
        dead = h.dead_port()
        p = self.start([h.route_prefix('/', 'up', retry_policy=policy('connect-failure', 1))],
                       [dead, up])
        for i in range(6):
            r = self.get('/echo/%d' % i)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.get('x-upstream-name'), 'live')
        self.assertEqual(len(up.requests), 6)
        stats = p.stats()
        fails = stats['cluster.up.upstream_cx_connect_fail']
        self.assertGreaterEqual(fails, 3)       # round robin sends every other attempt there
        self.assertEqual(stats['cluster.up.upstream_rq_retry'], fails)
        self.assertEqual(stats['cluster.up.upstream_rq_retry_success'], fails)

    def test_no_connect_failure_retry_without_condition(self):
        up = self.upstream('live')
        dead = h.dead_port()
        self.start([h.route_prefix('/', 'up', retry_policy=policy('retriable-4xx', 1))],
                   [dead, up])
        statuses = [self.get('/echo/%d' % i).status for i in range(4)]
        self.assertEqual(sorted(statuses), [200, 200, 503, 503])
        self.wait_log(r'^503 UF \d /echo/\d$', 2)

    def test_connect_failures_count_as_attempts_in_log(self):
        # BUG (filters/router.c: s->info.upstream_attempts is only set in
        # on_connection_ready): Envoy counts an attempt when it starts (Filter::decodeHeaders
        # and doRetry set the stream info's attempt count before asking the pool for a
        # connection), so three failed connects log %UPSTREAM_REQUEST_ATTEMPT_COUNT% 3;
        # petrel logs 0.
        dead = h.dead_port()
        self.start([h.route_prefix('/', 'up', retry_policy=policy('connect-failure', 2))],
                   [dead])
        self.assertEqual(self.get('/echo/cf').status, 503)
        line = self.wait_log(r'^503 \S+ \d+ /echo/cf$')[0]
        self.assertEqual(line.split()[1], 'UF,URX')
        self.assertEqual(line.split()[2], '3', line)

    def test_attempt_count_on_local_reply(self):
        # BUG (filters/router.c fail()): Envoy's router adds x-envoy-attempt-count
        # (include_attempt_count_in_response) to its own local replies too (the
        # modify_headers callback given to sendLocalReply); petrel only adds it to upstream
        # responses, so the 503 after three failed connects has none.
        dead = h.dead_port()
        self.start([h.route_prefix('/', 'up', retry_policy=policy('connect-failure', 2))],
                   [dead], vhost_extra={'include_attempt_count_in_response': True})
        r = self.get('/echo/lr')
        self.assertEqual(r.status, 503)
        self.assertEqual(r.get('x-envoy-attempt-count'), '3')

    def test_x_envoy_max_retries_overrides_num_retries(self):
        up = self.upstream()
        self.start([h.route_prefix('/', 'up', retry_policy=policy('5xx', 1))], [up])
        r = self.get('/fail/m3/3/503', {'x-envoy-max-retries': '3'})
        self.assertEqual(r.status, 200)
        self.assertEqual(self.hits(up, '/fail/m3/3/503'), 4)
        r = self.get('/fail/m0/1/503', {'x-envoy-max-retries': '0'})
        self.assertEqual(r.status, 503)
        self.assertEqual(self.hits(up, '/fail/m0/1/503'), 1)
        # Garbage is ignored: the policy's num_retries stays.
        r = self.get('/fail/mx/1/503', {'x-envoy-max-retries': 'lots'})
        self.assertEqual(r.status, 200)
        self.assertEqual(self.hits(up, '/fail/mx/1/503'), 2)

    def test_x_envoy_max_retries_needs_a_condition(self):
        up = self.upstream()
        self.start([h.route_prefix('/', 'up')], [up])
        r = self.get('/fail/q/1/503', {'x-envoy-max-retries': '3'})
        self.assertEqual(r.status, 503)
        self.assertEqual(self.hits(up, '/fail/q/1/503'), 1)

    def test_retry_headers_not_forwarded(self):
        # BUG (filters/router.c read_retry_headers): Envoy's router consumes x-envoy-retry-on,
        # x-envoy-max-retries and x-envoy-retriable-status-codes (RetryStateImpl::create
        # removes them); petrel forwards them to the upstream.
        up = self.upstream()
        self.start([h.route_prefix('/', 'up')], [up])
        self.get('/echo', {'x-envoy-retry-on': '5xx', 'x-envoy-max-retries': '2',
                           'x-envoy-retriable-status-codes': '418'})
        names = {n.lower() for n, _ in up.last['headers']}
        self.assertFalse(names & {'x-envoy-retry-on', 'x-envoy-max-retries',
                                  'x-envoy-retriable-status-codes'}, names)

    def test_retriable_request_headers_limit_retries(self):
        # BUG (proxy/retry.c parses retriable_request_headers, filters/router.c never uses
        # them): in Envoy a request matching none of retriable_request_headers is not
        # retried at all. petrel accepts the field and ignores it, so this request retries.
        up = self.upstream()
        self.start([h.route_prefix('/', 'up', retry_policy=policy(
            '5xx', 1, retriable_request_headers=[{'name': 'x-retry-ok',
                                                  'present_match': True}]))], [up])
        self.assertEqual(self.get('/fail/rh1/1/503', {'x-retry-ok': '1'}).status, 200)
        r = self.get('/fail/rh2/1/503')
        self.assertEqual(self.hits(up, '/fail/rh2/1/503'), 1)
        self.assertEqual(r.status, 503)


class RetryPolicyScope(RetryCase):

    def test_vhost_policy_applies_and_route_policy_replaces_it(self):
        up = self.upstream()
        route_own = h.route_prefix('/fail/own', 'up',
                                   retry_policy=policy('gateway-error', 1))
        route_inherit = h.route_prefix('/', 'up')
        self.start([route_own, route_inherit], [up],
                   vhost_extra={'retry_policy': policy('5xx', 3)})
        # Inherited: 5xx, 3 retries.
        self.assertEqual(self.get('/fail/v/3/500').status, 200)
        self.assertEqual(self.hits(up, '/fail/v/3/500'), 4)
        # The route's own policy replaces the vhost's wholesale (nothing merges): 500 is not
        # a gateway error, and num_retries is the route's 1, not the vhost's 3.
        self.assertEqual(self.get('/fail/own-a/1/500').status, 500)
        self.assertEqual(self.hits(up, '/fail/own-a/1/500'), 1)
        self.assertEqual(self.get('/fail/own-b/2/503').status, 503)
        self.assertEqual(self.hits(up, '/fail/own-b/2/503'), 2)
        self.assertEqual(self.get('/fail/own-c/1/503').status, 200)


class PreviousHosts(RetryCase):

    def test_retry_goes_to_a_different_host(self):
        # Three hosts, two of them sick (503 on everything). With previous_hosts and
        # num_retries 2 every request's attempts go to three different hosts, so each ends on
        # the healthy one, even with requests interleaving over the round robin. (The retry
        # circuit breaker is raised: its default of 3 concurrent retries would turn some
        # retries away.)
        ups = [self.upstream(n) for n in ('a', 'b', 'c')]
        ups[0].set_status(503)
        ups[1].set_status(503)
        p = self.start([h.route_prefix('/', 'up', retry_policy=policy(
            '5xx', 2, retry_host_predicate=PREVIOUS_HOSTS,
            host_selection_retry_max_attempts=3))], ups,
            cluster_extra={'circuit_breakers': {'thresholds': [{'max_retries': 100}]}})
        results = {}

        def one(i):
            try:
                r = self.get('/echo', {'x-req': str(i)})
                results[i] = (r.status, r.get('x-upstream-name'))
            except Exception as e:  # reported below
                results[i] = (repr(e), None)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(h.scaled(30))
        self.assertEqual(sorted(results), list(range(12)))
        for i, (status, name) in results.items():
            self.assertEqual((status, name), (200, 'c'), 'request %d' % i)
        # Per request: which hosts saw it, in order. No host twice.
        seen = {}
        for up in ups:
            for rec in up.requests:
                seen.setdefault(rec.header('x-req'), []).append(up.name)
        for rid, names in seen.items():
            self.assertEqual(len(names), len(set(names)), 'request %s hit %s' % (rid, names))
        # Each request that did not start on the healthy host succeeded after retries.
        p.wait_stat('cluster.up.upstream_rq_retry_success',
                    sum(1 for names in seen.values() if len(names) > 1))
        self.assertEqual(p.stat('cluster.up.upstream_rq_retry'),
                         sum(len(names) - 1 for names in seen.values()))

    def test_first_failure_then_other_host(self):
        ups = [self.upstream(n) for n in ('a', 'b', 'c')]
        for up in ups:
            up.set_status(503)
        self.start([h.route_prefix('/', 'up', retry_policy=policy(
            '5xx', 2, retry_host_predicate=PREVIOUS_HOSTS))], ups)
        for i in range(4):
            r = self.get('/echo', {'x-req': str(i)})
            self.assertEqual(r.status, 503)
            hosts = sorted(up.name for up in ups for rec in up.requests
                           if rec.header('x-req') == str(i))
            self.assertEqual(hosts, ['a', 'b', 'c'], 'request %d' % i)


class Backoff(RetryCase):

    def gaps(self, up, path):
        times = [r['time'] for r in up.requests if r['path'] == path]
        return [b - a for a, b in zip(times, times[1:])]

    def test_backoff_within_jittered_bounds(self):
        # base 0.1 s, max 1 s (10 x base): the wait before retry n is uniform in
        # [0, (2^n - 1) x 0.1 s), never more than 1 s. Each gap between attempts also holds
        # an attempt's round trip, hence the slack.
        up = self.upstream()
        self.start([h.route_prefix('/', 'up', retry_policy=policy(
            '5xx', 3, back_off={'base_interval': '0.1s'}))], [up])
        slack = h.scaled(0.5)
        total = 0.0
        for k in range(4):
            path = '/fail/b%d/3/503' % k
            self.assertEqual(self.get(path).status, 200)
            gaps = self.gaps(up, path)
            self.assertEqual(len(gaps), 3)
            for n, g in enumerate(gaps, 1):
                self.assertGreaterEqual(g, 0)
                self.assertLess(g, min((2 ** n - 1) * 0.1, 1.0) + slack, (n, gaps))
            total += sum(gaps)
        # Twelve backoffs averaging ~0.18 s: the sum being under 0.1 s would mean no backoff.
        self.assertGreater(total, 0.1)

    def test_backoff_capped_at_max_interval(self):
        # base 0.4 s, max 0.4 s: without the cap retry 3 could wait up to 2.8 s.
        up = self.upstream()
        self.start([h.route_prefix('/', 'up', retry_policy=policy(
            '5xx', 3, back_off={'base_interval': '0.4s', 'max_interval': '0.4s'}))], [up])
        slack = h.scaled(0.5)
        for k in range(2):
            path = '/fail/c%d/3/503' % k
            self.assertEqual(self.get(path).status, 200)
            for g in self.gaps(up, path):
                self.assertLess(g, 0.4 + slack)


class BodyReplay(RetryCase):

    def test_body_replayed_on_every_attempt(self):
        up = self.upstream()
        self.start([h.route_prefix('/', 'up', retry_policy=policy('5xx', 2))], [up])
        n = 300 * 1024
        body = h.pattern_bytes(0, n)
        r = h.http_request(self.port, 'POST', '/fail/body/2/503', body=body)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_sha256'], h.sha256_pattern(n))
        recs = [x for x in up.requests if x['path'] == '/fail/body/2/503']
        self.assertEqual(len(recs), 3)
        for rec in recs:
            self.assertTrue(rec['complete'])
            self.assertEqual(rec['body_len'], n)
            self.assertEqual(rec['body_sha256'], h.sha256_pattern(n))

    def test_chunked_body_replayed(self):
        up = self.upstream()
        self.start([h.route_prefix('/', 'up', retry_policy=policy('5xx', 1))], [up])
        n = 70000
        r = h.http_request(self.port, 'POST', '/fail/chunked/1/503',
                           body=h.pattern_chunks(n, 7000), chunked=True)
        self.assertEqual(r.status, 200)
        recs = [x for x in up.requests if x['path'] == '/fail/chunked/1/503']
        self.assertEqual(len(recs), 2)
        for rec in recs:
            self.assertEqual((rec['body_len'], rec['body_sha256']), (n, h.sha256_pattern(n)))

    def test_trailers_replayed(self):
        up = self.upstream()
        self.start([h.route_prefix('/', 'up', retry_policy=policy('5xx', 1))], [up])
        r = h.http_request(self.port, 'POST', '/fail/tr/1/503', body=[b'abc', b'defg'],
                           chunked=True, trailers=[('x-checksum', '42')])
        self.assertEqual(r.status, 200)
        recs = [x for x in up.requests if x['path'] == '/fail/tr/1/503']
        self.assertEqual(len(recs), 2)
        for rec in recs:
            self.assertEqual(rec['body'], b'abcdefg')
            self.assertEqual(rec['trailers'], [('x-checksum', '42')])

    def test_body_over_buffer_limit_not_retried(self):
        up = self.upstream()
        route = h.route_prefix('/', 'up', retry_policy=policy('5xx', 3))
        route['per_request_buffer_limit_bytes'] = 4096
        p = self.start([route], [up])
        # Within the limit: replayed.
        r = h.http_request(self.port, 'POST', '/fail/small/1/503', body=b's' * 4000)
        self.assertEqual(r.status, 200)
        self.assertEqual(self.hits(up, '/fail/small/1/503'), 2)
        # Larger than the limit: streamed once, the 503 goes back, no retry.
        r = h.http_request(self.port, 'POST', '/fail/big/1/503', body=b'B' * 20000)
        self.assertEqual(r.status, 503)
        self.assertEqual(self.hits(up, '/fail/big/1/503'), 1)
        self.assertEqual(up.requests[-1]['body_len'], 20000)
        self.assertEqual(p.stat('cluster.up.upstream_rq_retry'), 1)
        self.wait_log(r'^503 - 1 /fail/big/1/503$')

    def test_vhost_buffer_limit_applies(self):
        up = self.upstream()
        self.start([h.route_prefix('/', 'up', retry_policy=policy('5xx', 3))], [up],
                   vhost_extra={'per_request_buffer_limit_bytes': 1024})
        r = h.http_request(self.port, 'POST', '/fail/vb/1/503', body=b'v' * 5000)
        self.assertEqual(r.status, 503)
        self.assertEqual(self.hits(up, '/fail/vb/1/503'), 1)


class AttemptCount(RetryCase):

    def test_attempt_count_upstream_and_downstream(self):
        up = self.upstream()
        self.start([h.route_prefix('/', 'up', retry_policy=policy('5xx', 2))], [up],
                   vhost_extra={'include_request_attempt_count': True,
                                'include_attempt_count_in_response': True})
        r = self.get('/fail/ac/2/503')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.get('x-envoy-attempt-count'), '3')
        recs = [x for x in up.requests if x['path'] == '/fail/ac/2/503']
        self.assertEqual([x.header('x-envoy-attempt-count') for x in recs], ['1', '2', '3'])
        r = self.get('/echo')
        self.assertEqual(r.get('x-envoy-attempt-count'), '1')
        self.assertEqual(up.last.header('x-envoy-attempt-count'), '1')
        # Exhausted: the passed-on 503 says how many attempts it took.
        r = self.get('/fail/ax/5/503')
        self.assertEqual((r.status, r.get('x-envoy-attempt-count')), (503, '3'))

    def test_no_attempt_count_by_default(self):
        up = self.upstream()
        self.start([h.route_prefix('/', 'up', retry_policy=policy('5xx', 2))], [up])
        r = self.get('/fail/nd/1/503')
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.get('x-envoy-attempt-count'))
        self.assertIsNone(up.last.header('x-envoy-attempt-count'))


class TimeoutsAndRetries(RetryCase):

    def test_route_timeout_covers_all_attempts(self):
        # Every attempt is slow and fails (0.3 s, then 503); 20 retries would take over 6 s,
        # but the route timeout (1 s) covers them all: 504 UT.
        up = self.upstream()
        p = self.start([h.route_prefix('/', 'up', timeout='1s',
                                       retry_policy=policy('5xx', 20))], [up])
        t0 = time.monotonic()
        r = self.get('/delay/300/status/503', timeout=30)
        took = time.monotonic() - t0
        self.assertEqual(r.status, 504)
        self.assertEqual(r.body, b'upstream request timeout')
        self.assertGreaterEqual(took, 1.0 - SLACK)
        self.assertLess(took, 1.0 + h.scaled(3))
        attempts = self.hits(up, '/delay/300/status/503')
        self.assertGreaterEqual(attempts, 2)
        self.assertLessEqual(attempts, 4)
        p.wait_stat('cluster.up.upstream_rq_timeout', 1)
        p.wait_stat('cluster.up.upstream_rq_active', 0)
        line = self.wait_log(r'^504 \S+ \d+ /delay/300/status/503$')[0]
        self.assertIn('UT', line.split()[1].split(','))

    def test_route_timeout_with_per_try_timeouts(self):
        # per_try_timeout 0.3 s, route timeout 1 s: attempts time out one after the other
        # until the route timeout ends it all.
        up = self.upstream()
        p = self.start([h.route_prefix('/', 'up', timeout='1s', retry_policy=policy(
            '5xx', 20, per_try_timeout='0.3s'))], [up])
        t0 = time.monotonic()
        r = self.get('/delay/5000/slowfail', timeout=30)
        took = time.monotonic() - t0
        self.assertEqual(r.status, 504)
        self.assertGreaterEqual(took, 1.0 - SLACK)
        self.assertLess(took, 1.0 + h.scaled(3))
        p.wait_stat('cluster.up.upstream_rq_per_try_timeout', lambda v: v is not None and v >= 2)
        p.wait_stat('cluster.up.upstream_rq_timeout', 1)
        attempts = self.hits(up, '/delay/5000/slowfail')
        self.assertGreaterEqual(attempts, 3)
        self.assertEqual(p.stat('cluster.up.upstream_rq_retry'), attempts - 1)

    def test_per_try_timeout_then_fast_retry(self):
        # The first attempt stalls beyond per_try_timeout; the retry answers at once.
        up = self.upstream(cls=FirstSlowUpstream, slow=1, delay=5)
        p = self.start([h.route_prefix('/', 'up', timeout='10s', retry_policy=policy(
            '5xx', 1, per_try_timeout='0.3s'))], [up])
        t0 = time.monotonic()
        r = self.get('/echo/ptt')
        took = time.monotonic() - t0
        self.assertEqual(r.status, 200)
        self.assertGreaterEqual(took, 0.3 - SLACK)
        self.assertLess(took, h.scaled(4))
        self.assertEqual(self.hits(up, '/echo/ptt'), 2)
        p.wait_stat('cluster.up.upstream_rq_per_try_timeout', 1)
        stats = p.stats()
        self.assertEqual(stats['cluster.up.upstream_rq_retry'], 1)
        self.assertEqual(stats['cluster.up.upstream_rq_retry_success'], 1)
        self.assertEqual(stats['cluster.up.upstream_rq_timeout'], 0)
        self.wait_log(r'^200 - 2 /echo/ptt$')

    def test_per_try_timeout_retried_by_reset_condition(self):
        # A per-try timeout is an upstream failure without a response: reset, 5xx and
        # gateway-error retry it, other conditions do not.
        up = self.upstream(cls=FirstSlowUpstream, slow=1, delay=5)
        p = self.start([h.route_prefix('/', 'up', timeout='10s', retry_policy=policy(
            'retriable-4xx', 1, per_try_timeout='0.3s'))], [up])
        r = self.get('/echo/noretry')
        self.assertEqual(r.status, 504)
        self.assertEqual(self.hits(up, '/echo/noretry'), 1)
        p.wait_stat('cluster.up.upstream_rq_per_try_timeout', 1)
        self.wait_log(r'^504 UT 1 /echo/noretry$')


if __name__ == '__main__':
    unittest.main()
