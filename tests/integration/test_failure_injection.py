"""Failure injection: petrel under load while its system and library calls fail at random.

petrel runs with petrel-fault-inject.so preloaded (tests/fault/fault_inject.c, built beside
the binary): socket, accept4, connect (at once or later through SO_ERROR), reads and writes on
sockets (errors, EAGAIN without readiness, short transfers), petrel's own allocations and the
OpenSSL calls fail with a seeded per-call probability. Clients meanwhile send HTTP/1 over
new and keep-alive connections, HTTPS to a TLS listener whose cluster is TLS too, and echo
traffic through tcp_proxy; the clusters have several hosts, retries (connect-failure, 5xx,
reset), active health checks, outlier detection and keep-alive pools.

Asserted: petrel never crashes and exits 0 on SIGTERM with no sanitizer report (LeakSanitizer
runs at exit in the ASan build); every class of call really failed; most requests still
succeeded while failures were injected; and once injection is switched off, after the hosts
are healthy again, every request succeeds (nothing stays broken: breaker counts, pools,
paused listeners).

Injection is on while a control file exists, so start-up runs clean. Environment:
  PT_FAULT_SEED     replay a seed (printed by the test and in petrel's stderr on failure)
  PT_FAULT_SECONDS  total injection time (default 20), split into rounds of at most 60 s,
                    each a fresh petrel with the next seed (make fault: 600)
  PT_FAULT_RATE     per-call probability (see the shim) for every round; unset, the first
                    round uses DEFAULT_RATE and later ones cycle through PROFILES: high rates
                    of a few classes, to hunt crashes and leaks (no share of successes is
                    asserted then)
  PT_FAULT_CALLS    the classes to inject (default all, or the profile's)
  PT_FAULT_LOG_LEVEL  petrel's log level (default info; debug to follow a replay)

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_failure_injection.py -v
"""

import math
import os
import random
import ssl
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import certs as C  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer  # noqa: E402

SHIM = os.path.join(os.path.dirname(os.path.abspath(h.PETREL_BIN)), 'petrel-fault-inject.so')
CLASSES = ('socket', 'accept', 'connect', 'read', 'write', 'malloc', 'ssl')
DEFAULT_RATE = '0.02,read=0.01,write=0.01,malloc=0.002,ssl=0.01'
# (rate, classes) of the rounds after the first when PT_FAULT_RATE is unset.
PROFILES = [('0.05', 'all'), ('0.2', 'malloc'), ('0.1', 'read,write,ssl'),
            ('0.3', 'socket,accept,connect'), (DEFAULT_RATE, 'all')]
ROUND_MAX_S = 60
RETRY_ON = 'connect-failure,5xx,reset'
FILE_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog'
ACCESS_FORMAT = ('%START_TIME% %RESPONSE_CODE% %RESPONSE_FLAGS% %DURATION% %UPSTREAM_HOST% '
                 '%UPSTREAM_CLUSTER% %REQ(:PATH)% %UPSTREAM_TRANSPORT_FAILURE_REASON%\n')


def env_seconds():
    return float(os.environ.get('PT_FAULT_SECONDS') or 20)


def env_seed():
    s = os.environ.get('PT_FAULT_SEED')
    return int(s) if s else random.SystemRandom().randrange(1, 10 ** 9)


def hc_http():
    return {'timeout': '1s', 'interval': '0.2s', 'no_traffic_interval': '0.2s',
            'unhealthy_threshold': 2, 'healthy_threshold': 1,
            'http_health_check': {'path': '/healthz'}}


def hc_tcp():
    return {'timeout': '1s', 'interval': '0.2s', 'no_traffic_interval': '0.2s',
            'unhealthy_threshold': 2, 'healthy_threshold': 1, 'tcp_health_check': {}}


OUTLIER = {'consecutive_5xx': 5, 'interval': '1s', 'base_ejection_time': '1s',
           'max_ejection_percent': 50}


def health_flags(p):
    """{(cluster, 'ip:port'): flags} from GET /clusters."""
    status, _, body = p.admin_get('/clusters')
    if status != 200:
        return {}
    out = {}
    for line in body.decode().splitlines():
        parts = line.split('::')
        if len(parts) == 4 and parts[2] == 'health_flags':
            out[(parts[0], parts[1])] = parts[3]
    return out


def shimmed_petrel(test, cfg, seed, rate, calls, **env):
    """A Petrel (not started) with the shim preloaded, injection off until its
    ``fault.on`` file exists; counts land in ``fault.report``."""
    p = h.Petrel(cfg, concurrency=2, extra_args=['--drain-time-s', '1'],
                 log_level=os.environ.get('PT_FAULT_LOG_LEVEL') or 'info')
    test.addCleanup(p.close)
    asan = os.environ.get('ASAN_OPTIONS', '')
    p.env.update({
        'LD_PRELOAD': SHIM,
        'PT_FAULT_SEED': str(seed),
        'PT_FAULT_RATE': rate,
        'PT_FAULT_CALLS': calls,
        'PT_FAULT_CONTROL': p.path('fault.on'),
        'PT_FAULT_REPORT': p.path('fault.report'),
        # The shim goes first (ahead of ASan's runtime), and an allocation failing is an
        # answer, not an ASan error.
        'ASAN_OPTIONS': ':'.join(x for x in (asan, 'verify_asan_link_order=0',
                                             'allocator_may_return_null=1') if x),
    })
    p.env.update(env)
    return p


def read_report(path):
    """{class: (calls, injected)} from the shim's report file."""
    with open(path) as f:
        return {ln.split()[0]: (int(ln.split()[1]), int(ln.split()[2])) for ln in f if ln.strip()}


def access_log(fmt):
    return [{'name': 'envoy.access_loggers.file', 'typed_config': {
        '@type': FILE_LOG, 'path': 'access.log', 'log_format': {
            'text_format_source': {'inline_string': fmt}}}}]


def skip_without_shim():
    if not os.path.exists(SHIM):
        raise unittest.SkipTest('%s not built' % SHIM)


class Load:
    """Client threads that loop until stopped, counting successes and failures per kind."""

    def __init__(self, port, tls_port, tcp_port, admin_port, client_ctx):
        self.port, self.tls_port, self.tcp_port = port, tls_port, tcp_port
        self.admin_port = admin_port
        self.ctx = client_ctx
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = {}
        self.failed = {}
        self.errors = {}
        self.wrong_answers = []
        self.threads = []
        self.timeout = h.scaled(45)  # beyond the route timeout

    def count(self, kind, ok, why=None):
        with self.lock:
            d = self.ok if ok else self.failed
            d[kind] = d.get(kind, 0) + 1
            if why is not None:
                key = '%s: %s' % (kind, why)
                self.errors[key] = self.errors.get(key, 0) + 1

    def start(self):
        for name, fn in (('http-keepalive', self.http_keepalive),
                         ('http-keepalive-2', self.http_keepalive),
                         ('http-new', self.http_new), ('https-keepalive', self.https_keepalive),
                         ('https-new', self.https_new), ('tcp', self.tcp_echo),
                         ('admin', self.admin)):
            t = threading.Thread(target=self.guard, args=(name, fn), name=name, daemon=True)
            t.start()
            self.threads.append(t)

    def wrong(self, name, what):
        """An answer no failure excuses: corrupt, misrouted, or never coming."""
        self.count(name, False, what)
        with self.lock:
            self.wrong_answers.append('%s: %s' % (name, what))

    def guard(self, name, fn):
        n = 0
        while not self.stop.is_set():
            try:
                fn(name, n)
            except TimeoutError:
                self.wrong(name, 'no answer within %.0f s' % self.timeout)
            except h.BadMessage as e:
                self.wrong(name, 'malformed response: %s' % e)
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as e:
                self.count(name, False, type(e).__name__)  # the connection ended
            except ssl.SSLError as e:  # an alert, a record that does not decrypt: corrupt
                self.wrong(name, 'TLS error: %s' % (e.reason or e))
            except Exception as e:  # the connection failed: the request failed
                self.count(name, False, type(e).__name__)
            n += 1

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(self.timeout * 3)
            if t.is_alive():
                raise AssertionError('client thread %s hung' % t.name)

    HEADERS = {'x-load-%02d' % i: 'value-%d' % i for i in range(40)}

    @staticmethod
    def request_args(n):
        """(method, path, body, headers, chunked) of the n-th request: mostly GETs; every
        8th a POST whose body the router keeps for retries, sent chunked every 16th; every
        8th (another one) with 40 more headers, all of which must reach the upstream."""
        if n % 8 == 7:
            return 'POST', '/echo/%d' % n, h.pattern_bytes(n, 20000), None, n % 16 == 15
        if n % 8 == 3:
            return 'GET', '/echo/%d' % n, None, Load.HEADERS, None
        return 'GET', '/echo/%d' % n, None, None, None

    def check(self, name, r, path, body, upstream, headers=None):
        """A 200 must be the upstream's echo of this very request, every header there; the
        only other answer a failure explains is a 503 (no upstream could take it)."""
        if r.status != 200:
            if r.status == 503:
                self.count(name, False, 'status 503')
            else:
                self.wrong(name, 'status %d' % r.status)
            return False
        echo = r.json()
        want = (path, len(body or b''), h.sha256_hex(body or b''))
        got = (echo['path'], echo['body_len'], echo['body_sha256'])
        if got != want or not echo['name'].startswith(upstream):
            self.wrong(name, 'echo of another request: %r from %s' % (got, echo['name']))
            return False
        missing = set(headers or ()) - {n for n, _ in echo['headers']}
        if missing:
            self.wrong(name, 'request headers lost on the way: %s' % sorted(missing))
            return False
        self.count(name, True)
        return True

    def keepalive(self, name, port, ctx):
        with h.HttpClientConn(port, timeout=self.timeout, ssl_context=ctx,
                              server_hostname='petrel.test' if ctx else None) as c:
            for i in range(50):
                if self.stop.is_set():
                    return
                method, path, body, headers, chunked = self.request_args(i)
                r = c.request(method, path, headers=headers, body=body, chunked=chunked)
                if not self.check(name, r, path, body, 'tls' if ctx else 'web', headers) or \
                        r.will_close:
                    return

    def http_keepalive(self, name, n):
        self.keepalive(name, self.port, None)

    def https_keepalive(self, name, n):
        self.keepalive(name, self.tls_port, self.ctx)

    def http_new(self, name, n):
        method, path, body, headers, chunked = self.request_args(n)
        self.check(name, h.http_request(self.port, method, path, headers=headers, body=body,
                                        chunked=chunked, timeout=self.timeout),
                   path, body, 'web', headers)

    def https_new(self, name, n):
        method, path, body, headers, chunked = self.request_args(n)
        self.check(name, h.http_request(self.tls_port, method, path, headers=headers,
                                        body=body, chunked=chunked, timeout=self.timeout,
                                        ssl_context=self.ctx, server_hostname='petrel.test'),
                   path, body, 'tls', headers)

    ADMIN_PATHS = ('/stats', '/clusters', '/listeners', '/server_info', '/certs', '/ready',
                   '/config_dump', '/stats/prometheus')

    def admin(self, name, n):
        path = self.ADMIN_PATHS[n % len(self.ADMIN_PATHS)]
        r = h.http_request(self.admin_port, 'GET', path, timeout=self.timeout)
        if r.status not in (200, 503):  # 503: out of memory
            self.wrong(name, '%s: status %d' % (path, r.status))
        self.count(name, r.status == 200, None if r.status == 200 else 'status %d' % r.status)

    def tcp_echo(self, name, n):
        with h.tcp_connect(self.tcp_port, timeout=self.timeout) as s:
            for i in range(5):
                data = h.pattern_bytes(n * 5 + i, 4096)
                s.sendall(data)
                got = h.recv_exact(s, len(data))
                if got != data:
                    self.wrong(name, 'echo of other bytes')
                    return
                self.count(name, True)

    def error_summary(self):
        with self.lock:
            return ', '.join('%s %d' % kv for kv in sorted(self.errors.items()))

    def summary(self):
        with self.lock:
            kinds = sorted(set(self.ok) | set(self.failed))
            return ', '.join('%s %d/%d' % (k, self.ok.get(k, 0),
                                           self.ok.get(k, 0) + self.failed.get(k, 0))
                             for k in kinds)


class FailureInjectionTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        skip_without_shim()
        cls.pki = C.Pki()
        ca = cls.pki.ca('ca', 'fault injection root')
        cls.server = cls.pki.issue(ca, 'server', dns=['petrel.test', 'localhost'],
                                   ips=['127.0.0.1'])
        cls.ca = ca

    @classmethod
    def tearDownClass(cls):
        cls.pki.close()

    def upstreams(self):
        plain = [HttpUpstream(name='web%d' % i) for i in range(3)]
        tls = [HttpUpstream(name='tls%d' % i, ssl_context=C.server_context(self.server))
               for i in range(2)]
        echo = [TcpEchoServer() for _ in range(2)]
        for u in plain + tls + echo:
            self.addCleanup(u.close)
        return plain, tls, echo

    def config(self, port, tls_port, tcp_port, admin, plain, tls, echo):
        def route(cluster):
            return h.route_prefix('/', cluster, timeout='%ds' % h.scaled(30), retry_policy={
                'retry_on': RETRY_ON, 'num_retries': 3})

        def hcm(prefix, cluster):
            return h.http_connection_manager(prefix, h.route_config(
                [h.vhost('all', ['*'], [route(cluster)])]), access_log=access_log(ACCESS_FORMAT))

        upstream_tls = C.upstream_tls(ca=self.ca, sni='petrel.test')
        downstream_tls = C.downstream_tls(cert=self.server)
        listeners = [
            h.listener('http', port, [hcm('http', 'web')]),
            # The TLS inspector peeks at the ClientHello (reads that may come short) and
            # picks the chain by SNI.
            {'name': 'https', 'address': h.socket_address('127.0.0.1', tls_port),
             'listener_filters': [C.tls_inspector()],
             'filter_chains': [{'filter_chain_match': {'server_names': ['petrel.test']},
                                'filters': [hcm('https', 'web_tls')],
                                'transport_socket': downstream_tls}]},
            h.listener('tcp', tcp_port, [h.tcp_proxy('tcp', 'echo', max_connect_attempts=3)]),
        ]
        clusters = [
            h.cluster('web', [u.port for u in plain], health_checks=[hc_http()],
                      outlier_detection=OUTLIER),
            h.cluster('web_tls', [u.port for u in tls], health_checks=[hc_http()],
                      outlier_detection=OUTLIER, transport_socket=upstream_tls),
            h.cluster('echo', [e.port for e in echo], health_checks=[hc_tcp()]),
        ]
        return h.bootstrap(listeners, clusters, admin_port=admin)

    def wait_all_healthy(self, p, nhosts, what):
        def healthy():
            flags = health_flags(p)
            return len(flags) == nhosts and all(v == 'healthy' for v in flags.values())
        try:
            h.wait_until(healthy, 30, 0.1)
        except AssertionError:
            self.fail('%s: not every host healthy: %r' % (what, health_flags(p)))

    def test_survives_injected_failures(self):
        total = env_seconds()
        rounds = max(1, math.ceil(total / ROUND_MAX_S))
        seed = env_seed()
        for r in range(rounds):
            rate, calls = DEFAULT_RATE, 'all'
            if r > 0 and not os.environ.get('PT_FAULT_RATE'):
                rate, calls = PROFILES[(r - 1) % len(PROFILES)]
            rate = os.environ.get('PT_FAULT_RATE') or rate
            calls = os.environ.get('PT_FAULT_CALLS') or calls
            with self.subTest(round=r, seed=seed + r, rate=rate, calls=calls):
                self.round(seed + r, total / rounds, rate, calls)

    def round(self, seed, seconds, rate, calls):
        self.rate = rate
        self.calls = CLASSES if calls == 'all' else tuple(calls.split(','))
        replay = 'PT_FAULT_SEED=%d PT_FAULT_RATE=%s PT_FAULT_CALLS=%s' % (seed, rate, calls)
        sys.stderr.write('\nfailure injection: %.0f s (replay: %s)\n' % (seconds, replay))
        plain, tls, echo = self.upstreams()
        port, tls_port, tcp_port, admin = h.free_ports(4)
        cfg = self.config(port, tls_port, tcp_port, admin, plain, tls, echo)
        p = shimmed_petrel(self, cfg, seed, rate, calls)
        control, report = p.path('fault.on'), p.path('fault.report')
        failed = True
        try:
            p.start()
            self.wait_all_healthy(p, len(plain) + len(tls) + len(echo), 'at start')
            ctx = C.client_context(ca=self.ca)
            load = Load(port, tls_port, tcp_port, admin, ctx)
            self.verify(p, load, 'before injection', 5)

            load.start()
            self.switch(p, control, True)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and p.alive():
                time.sleep(0.2)
            self.assertTrue(p.alive(), 'petrel died under injection (seed %d)' % seed)
            self.switch(p, control, False)
            load.join()
            sys.stderr.write('under injection: %s\nfailures: %s\n'
                             % (load.summary(), load.error_summary()))
            self.assertTrue(p.alive(), 'petrel died (seed %d)' % seed)
            self.check_injected(report, seed)
            self.assertEqual(load.wrong_answers, [], 'wrong answers under injection (seed %d)'
                             % seed)
            self.check_share(load, seed)

            # Nothing stays broken: hosts healthy again, then every request succeeds.
            self.wait_all_healthy(p, len(plain) + len(tls) + len(echo), 'after injection')
            self.verify(p, Load(port, tls_port, tcp_port, admin, ctx), 'after injection', 100)
            self.wait_nothing_held(p, seed)
            if self.calls == CLASSES:  # connect failures and resets, with pools in play
                self.assertGreater(p.stat('cluster.web.upstream_rq_retry', 0), 0,
                                   'no retry happened (seed %d)' % seed)

            # Shutting down while calls fail: the drain and the teardown must not crash or
            # leak either (the sanitizers check at exit).
            load = Load(port, tls_port, tcp_port, admin, ctx)
            load.start()
            self.switch(p, control, True)
            time.sleep(h.scaled(1))
            rc = p.stop()
            load.join()
            self.assertEqual(rc, 0, 'petrel exit code (seed %d)' % seed)
            self.assertEqual(load.wrong_answers, [], 'wrong answers while stopping (seed %d)'
                             % seed)
            failed = False
        finally:
            if failed:
                sys.stderr.write('failure injection: failed (replay: %s)\n' % replay)
                p.dump_log(60)

    @staticmethod
    def switch(p, control, on):
        """Creates or removes the control file and waits until the shim followed."""
        what = 'petrel-fault-inject: %s: ' % ('on' if on else 'off')
        before = p.log().count(what)
        if on:
            with open(control, 'w'):
                pass
        else:
            os.unlink(control)
        h.wait_until(lambda: p.log().count(what) > before, 10,
                     message='the shim never said %r' % what)

    def check_injected(self, report, seed):
        counts = read_report(report)
        sys.stderr.write('injected/calls: %s\n' % ', '.join(
            '%s %d/%d' % (k, counts[k][1], counts[k][0]) for k in CLASSES if k in counts))
        for k in self.calls:
            self.assertGreater(counts.get(k, (0, 0))[1], 0,
                               'no %s failure injected (seed %d): %r' % (k, seed, counts))

    def check_share(self, load, seed):
        # At the default rates most requests touch no failing call, and retries hide many
        # that do. Other rates are for hunting crashes and leaks: no share is expected.
        if self.rate != DEFAULT_RATE or self.calls != CLASSES:
            return
        for kind in sorted(set(load.ok) | set(load.failed)):
            ok, bad = load.ok.get(kind, 0), load.failed.get(kind, 0)
            self.assertGreater(ok, (ok + bad) / 2,
                               '%s: only %d of %d succeeded under injection (seed %d); '
                               'errors %r' % (kind, ok, ok + bad, seed, load.errors))

    def wait_nothing_held(self, p, seed):
        """With every client gone, no gauge still counts a connection, request, pending
        request or breaker slot (HTTP clusters may keep idle pooled connections)."""
        def held():
            out = {}
            for k, v in p.stats().items():
                last = k.rsplit('.', 1)[-1]
                if v and (last in ('downstream_cx_active', 'downstream_rq_active',
                                   'upstream_rq_active', 'upstream_rq_pending_active')
                          or '.circuit_breakers.' in k and last.endswith('open')
                          or k == 'cluster.echo.upstream_cx_active'):
                    out[k] = v
            status, _, body = p.admin_get('/clusters')
            for line in body.decode().splitlines():
                parts = line.split('::')
                if len(parts) == 4 and parts[2] in ('rq_active', 'cx_active') and \
                        parts[3] != '0' and (parts[2] == 'rq_active' or parts[0] == 'echo'):
                    out['::'.join(parts[:3])] = parts[3]
            return out
        try:
            h.wait_until(lambda: not held(), 30, 0.1)
        except AssertionError:
            self.fail('still held after injection (seed %d): %r' % (seed, held()))

    def verify(self, p, load, what, n):
        """n rounds of each kind of client, all of which must succeed."""
        load.stop.clear()
        for i in range(n):
            load.http_new('http-new', i)
            load.https_new('https-new', i)
            if i % 10 == 0:
                load.tcp_echo('tcp', i)
                load.admin('admin', i // 10)
        load.keepalive('http-keepalive', load.port, None)
        load.keepalive('https-keepalive', load.tls_port, load.ctx)
        self.assertEqual(load.failed, {}, '%s: requests failed: %r (%s)'
                         % (what, load.errors, load.summary()))


class TargetedFailureTest(unittest.TestCase):
    """Failure paths the random runs found, each hit every time: the shim fails only the
    allocations of one size (PT_FAULT_MALLOC_SIZE), chosen to be the one under test."""

    @classmethod
    def setUpClass(cls):
        skip_without_shim()

    def start(self, route_extra, size):
        self.up = HttpUpstream(name='up')
        self.addCleanup(self.up.close)
        self.port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('ingress', h.route_config([h.vhost('all', ['*'], [
            h.route_prefix('/', 'up', timeout='60s', **route_extra)])]),
            access_log=access_log('%RESPONSE_CODE% %RESPONSE_CODE_DETAILS% %REQ(:PATH)%\n'))
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster('up', [self.up.port])], admin_port=admin)
        p = shimmed_petrel(self, cfg, 1, 'malloc=1', 'malloc', PT_FAULT_MALLOC_SIZE=str(size))
        p.start()
        return p

    def hits(self, path):
        return sum(1 for r in list(self.up.requests) if r['path'] == path)

    def access_lines(self, p):
        try:
            with open(p.path('access.log')) as f:
                return f.read().splitlines()
        except OSError:
            return []

    def test_stats_without_memory_answer_503(self):
        # The admin's stats pages sort the stat ids in an array of one id (4 bytes) per stat.
        # Without it they used to pass NULL to qsort; now they answer 503.
        port, admin = h.free_ports(2)
        cfg = h.bootstrap([h.listener('tcp', port, [h.tcp_proxy('tcp', 'c')])],
                          [h.cluster('c', [h.free_port()])], admin_port=admin)
        with h.Petrel(cfg) as plain:
            nstats = len(plain.admin_get('/stats')[2].decode().splitlines())
        p = shimmed_petrel(self, cfg, 1, 'malloc=1', 'malloc',
                           PT_FAULT_MALLOC_SIZE=str(4 * nstats))
        p.start()
        FailureInjectionTest.switch(p, p.path('fault.on'), True)
        for path in ('/stats', '/stats?format=json', '/stats?format=prometheus',
                     '/stats/prometheus'):
            status, _, body = p.admin_get(path)
            self.assertEqual((status, body), (503, b'out of memory\n'), path)
        FailureInjectionTest.switch(p, p.path('fault.on'), False)
        self.assertGreaterEqual(read_report(p.path('fault.report'))['malloc'][1], 4)
        status, _, body = p.admin_get('/stats')
        self.assertEqual(status, 200)
        self.assertEqual(len(body.decode().splitlines()), nstats)
        self.assertEqual(p.stop(), 0)

    def test_drain_and_stop_need_no_memory(self):
        # Every allocation of petrel's fails from SIGTERM on. The main thread used to tell
        # workers to close their listeners, drain and stop by posting allocated calls; a post
        # that could not be allocated was lost, and a worker that missed its stop was joined
        # for ever.
        port, admin = h.free_ports(2)
        with TcpEchoServer() as echo:
            cfg = h.bootstrap([h.listener('tcp', port, [h.tcp_proxy('tcp', 'echo')])],
                              [h.cluster('echo', [echo.port])], admin_port=admin)
            p = shimmed_petrel(self, cfg, 1, 'malloc=1', 'malloc')
            p.start()
            with h.tcp_connect(port) as s:  # open during the drain: closed at its end
                s.sendall(b'ping')
                self.assertEqual(h.recv_exact(s, 4), b'ping')
                FailureInjectionTest.switch(p, p.path('fault.on'), True)
                self.assertEqual(p.stop(), 0)
        self.assertIn('drain time over with 1 connections open', p.log())

    def test_request_missing_a_header_is_refused(self):
        # 140 headers: the stream's header map grows to 256 entries, one array of 6144 bytes
        # that the arena allocates on its own (6176 with its block header). Without it the
        # request used to go on without the headers that did not fit (or without :path, and
        # then matched no route): a policy could depend on any of them.
        self.up = HttpUpstream(name='up')
        self.addCleanup(self.up.close)
        port, admin = h.free_ports(2)
        hcm = h.http_connection_manager(
            'ingress', h.route_config([h.vhost('all', ['*'], [
                h.route_prefix('/', 'up', timeout='60s')])]),
            common_http_protocol_options={'max_headers_count': 200})
        cfg = h.bootstrap([h.listener('http', port, [hcm])],
                          [h.cluster('up', [self.up.port])], admin_port=admin)
        p = shimmed_petrel(self, cfg, 1, 'malloc=1', 'malloc', PT_FAULT_MALLOC_SIZE='6176')
        p.start()
        headers = {'x-h%03d' % i: 'v%d' % i for i in range(140)}
        FailureInjectionTest.switch(p, p.path('fault.on'), True)
        r = h.http_request(port, 'GET', '/many', headers=headers)
        self.assertEqual(r.status, 503)
        self.assertEqual(self.hits('/many'), 0)
        FailureInjectionTest.switch(p, p.path('fault.on'), False)
        self.assertGreaterEqual(read_report(p.path('fault.report'))['malloc'][1], 1)
        r = h.http_request(port, 'GET', '/many', headers=headers)
        self.assertEqual(r.status, 200)
        got = {n for n, _ in r.json()['headers']}
        self.assertEqual(set(headers) - got, set())
        self.assertEqual(p.stop(), 0)

    def test_edge_rules_that_cannot_apply_refuse_the_request(self):
        # use_remote_address: petrel appends the client's address to its x-forwarded-for.
        # With a client value of 5000 bytes the new value ("<value>,127.0.0.1", 5011 bytes
        # with its NUL, 5024 in the arena) gets an arena block of its own: 5056 bytes. The
        # request used to go on with the client's x-forwarded-for alone, as if the client
        # were the hop it claims.
        self.up = HttpUpstream(name='up')
        self.addCleanup(self.up.close)
        port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('ingress', h.route_config([h.vhost('all', ['*'], [
            h.route_prefix('/', 'up', timeout='60s')])]), use_remote_address=True)
        cfg = h.bootstrap([h.listener('http', port, [hcm])],
                          [h.cluster('up', [self.up.port])], admin_port=admin)
        p = shimmed_petrel(self, cfg, 1, 'malloc=1', 'malloc', PT_FAULT_MALLOC_SIZE='5056')
        p.start()
        xff = ','.join(['10.1.2.3'] * 555) + ',10.99'  # 5000 bytes
        self.assertEqual(len(xff), 5000)
        FailureInjectionTest.switch(p, p.path('fault.on'), True)
        r = h.http_request(port, 'GET', '/xff', headers={'x-forwarded-for': xff})
        self.assertEqual(r.status, 503)
        self.assertEqual(self.hits('/xff'), 0)
        FailureInjectionTest.switch(p, p.path('fault.on'), False)
        self.assertGreaterEqual(read_report(p.path('fault.report'))['malloc'][1], 1)
        r = h.http_request(port, 'GET', '/xff', headers={'x-forwarded-for': xff})
        self.assertEqual(r.status, 200)
        self.assertEqual(self.up.last.header('x-forwarded-for'), xff + ',127.0.0.1')
        self.assertEqual(p.stop(), 0)

    def test_retry_without_memory_for_the_body_fails_at_once(self):
        # A retry resends the body from the replay copy, through a buffer of the body's size.
        # Without it the retry used to announce the body and send none: the upstream waited
        # for it until something timed out.
        size = 23456
        p = self.start({'retry_policy': {'retry_on': '5xx', 'num_retries': 1}}, size)
        body = h.pattern_bytes(0, size)
        FailureInjectionTest.switch(p, p.path('fault.on'), True)
        r = h.http_request(self.port, 'POST', '/fail/a/1/503', body=body)
        self.assertEqual(r.status, 503)
        h.wait_until(lambda: '503 out_of_memory /fail/a/1/503' in self.access_lines(p), 10,
                     message='access log: %r' % self.access_lines(p))
        self.assertEqual(self.hits('/fail/a/1/503'), 1)  # the retry sent nothing
        FailureInjectionTest.switch(p, p.path('fault.on'), False)
        self.assertGreaterEqual(read_report(p.path('fault.report'))['malloc'][1], 1)
        # With the memory there, the same request is retried with its whole body.
        r = h.http_request(self.port, 'POST', '/fail/b/1/503', body=body)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()['body_len'], size)
        self.assertEqual(self.hits('/fail/b/1/503'), 2)
        self.assertEqual(p.stop(), 0)


if __name__ == '__main__':
    unittest.main()
