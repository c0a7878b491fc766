"""resilience suite: one of three upstreams fails mid-run; what does the client see?

Called by bench.py as run(b), where b is the bench module (helpers, settings, process control).

For every measurement everything is started fresh: three nginx upstreams (1 worker each,
answering "ok" to every request), then one proxy in front of them (petrel or HAProxy, one
worker), with retries, passive health checking (petrel outlier detection, HAProxy `observe
layer7`) and active HTTP health checks configured the same way on both (see petrel_cfg()
and HAPROXY_CFG below, and bench/README.md). Once the proxy reports all three upstreams healthy,
ptload sends BENCH_RES_RATE req/s over LAT_CONNS keep-alive connections for BENCH_DURATION
seconds. At a third of the run the fault is injected into the third upstream:

  healthy  nothing happens (the control: latency of the same path without a failure)
  503      from then on it answers 503 to every request (health checks included)
  kill     it is killed (SIGKILL, master and worker): connections reset, connects refused

ptload counts every request's outcome (2xx, other statuses, broken connections, unanswered),
so the success rate (2xx / sent) is exact. After the run the proxy's counters are read
(petrel admin /stats, HAProxy stats socket), then everything is stopped.
"""
import json
import os
import socket
import threading
import time
import urllib.request

RES_RATE = int(os.environ.get('BENCH_RES_RATE', '1000'))
GOAL = 99.9                  # percent of requests answered 2xx (the issue's goal)
SCENARIOS = [
    ('healthy', 'control: no fault'),
    ('503', 'A: one upstream answers 503 to every request from 1/3 of the run on'),
    ('kill', 'B: one upstream is killed (SIGKILL) at 1/3 of the run'),
]
# Settings both proxies share (the README states them side by side).
NUM_RETRIES = 2
HC_INTERVAL_S = 1
HC_TIMEOUT_S = 1
HC_FALL = 2
HC_RISE = 2
ERRORS_TO_EJECT = 5
CONNECT_TIMEOUT_S = 1
ROUTE_TIMEOUT_S = 15
MAX_RETRIES_IN_FLIGHT = 1000   # petrel's retry circuit breaker; HAProxy has no such limit

_PREVIOUS_HOSTS = [{'name': 'envoy.retry_host_predicates.previous_hosts', 'typed_config': {
    '@type': 'type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.'
             'PreviousHostsPredicate'}}]


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------

def nginx_upstream_cfg(b, name, port, fail_file):
    """nginx answering "ok" to everything, or 503 while fail_file exists (one stat() per
    request, so the fault switches on without a reload or a dropped connection)."""
    return b.write('nginx-%s.conf' % name, b.NGINX_COMMON % {'name': name, 'wc': 1024} + """
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    default_type text/plain;
    server {
        listen 127.0.0.1:%(port)d backlog=4096;
        location / {
            if (-f %(fail)s) { return 503; }
            return 200 "ok\\n";
        }
    }
}
""" % {'port': port, 'fail': fail_file})


def petrel_cfg(b, port, admin, ups):
    route = {'cluster': 'backend', 'timeout': '%ds' % ROUTE_TIMEOUT_S, 'retry_policy': {
        'retry_on': '5xx,reset,connect-failure',
        'num_retries': NUM_RETRIES,
        'retry_host_predicate': _PREVIOUS_HOSTS}}
    hcm = {
        '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.'
                 'v3.HttpConnectionManager',
        'stat_prefix': 'res',
        'route_config': {'name': 'local_route', 'virtual_hosts': [
            {'name': 'all', 'domains': ['*'],
             'routes': [{'match': {'prefix': '/'}, 'route': route}]}]},
        'http_filters': [{'name': 'envoy.filters.http.router', 'typed_config': {
            '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router'}}]}
    cluster = {
        'name': 'backend', 'type': 'STATIC', 'lb_policy': 'ROUND_ROBIN',
        'connect_timeout': '%ds' % CONNECT_TIMEOUT_S,
        'load_assignment': {'cluster_name': 'backend', 'endpoints': [{'lb_endpoints': [
            {'endpoint': {'address': b._sa(u)}} for u in ups]}]},
        'health_checks': [{
            'timeout': '%ds' % HC_TIMEOUT_S, 'interval': '%ds' % HC_INTERVAL_S,
            'no_traffic_interval': '%ds' % HC_INTERVAL_S,
            'unhealthy_threshold': HC_FALL, 'healthy_threshold': HC_RISE,
            'http_health_check': {'path': '/'}}],
        'outlier_detection': {
            'consecutive_5xx': ERRORS_TO_EJECT, 'interval': '%ds' % HC_INTERVAL_S,
            'base_ejection_time': '30s', 'max_ejection_percent': 50},
        'circuit_breakers': {'thresholds': [
            {'priority': 'DEFAULT', 'max_retries': MAX_RETRIES_IN_FLIGHT}]}}
    cfg = {'admin': {'address': b._sa(admin)}, 'static_resources': {
        'listeners': [{'name': 'http', 'address': b._sa(port), 'filter_chains': [{'filters': [
            {'name': 'envoy.filters.network.http_connection_manager', 'typed_config': hcm}]}]}],
        'clusters': [cluster]}}
    return b.write('petrel-resilience.json', json.dumps(cfg, indent=1))


HAPROXY_CFG = """global
    nbthread 1
    maxconn 4096
    pidfile %(tmp)s/haproxy-resilience.pid
    stats socket %(sock)s mode 600 level admin
defaults
    mode http
    timeout connect %(ct)ds
    timeout client 60s
    timeout server %(rt)ds
    timeout check %(hct)ds
    timeout http-request 60s
    timeout http-keep-alive 300s
    retries %(retries)d
    option redispatch 1
    retry-on conn-failure empty-response junk-response response-timeout 500 502 503 504
listen res
    bind 127.0.0.1:%(port)d
    balance roundrobin
    option httpchk GET /
    http-check expect status 200
    default-server check inter %(inter)ds fall %(fall)d rise %(rise)d observe layer7 error-limit %(el)d on-error mark-down
    server s0 127.0.0.1:%(u0)d
    server s1 127.0.0.1:%(u1)d
    server s2 127.0.0.1:%(u2)d
"""


def haproxy_cfg(b, port, ups, sock):
    return b.write('haproxy-resilience.cfg', HAPROXY_CFG % {
        'tmp': b.TMP, 'sock': sock, 'ct': CONNECT_TIMEOUT_S, 'rt': ROUTE_TIMEOUT_S,
        'hct': HC_TIMEOUT_S, 'retries': NUM_RETRIES, 'port': port, 'inter': HC_INTERVAL_S,
        'fall': HC_FALL, 'rise': HC_RISE, 'el': ERRORS_TO_EJECT,
        'u0': ups[0], 'u1': ups[1], 'u2': ups[2]})


# ---------------------------------------------------------------------------------------------
# Proxy counters
# ---------------------------------------------------------------------------------------------

def petrel_stats(admin):
    """{name: value} of petrel's non-zero stats (admin /stats?usedonly)."""
    out = {}
    try:
        with urllib.request.urlopen('http://127.0.0.1:%d/stats?usedonly' % admin,
                                    timeout=3) as r:
            for line in r.read().decode(errors='replace').splitlines():
                name, _, val = line.partition(': ')
                try:
                    out[name] = int(val)
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def haproxy_stats(sock):
    """`show stat` over the stats socket: {svname: {field: value}} for the `res` proxy."""
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(3)
        s.connect(sock)
        s.sendall(b'show stat\n')
        data = b''
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
    except OSError:
        return {}
    lines = data.decode(errors='replace').splitlines()
    if not lines or not lines[0].startswith('# '):
        return {}
    head = lines[0][2:].split(',')
    out = {}
    for line in lines[1:]:
        row = dict(zip(head, line.split(',')))
        if row.get('pxname') == 'res':
            out[row['svname']] = row
    return out


def _int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def wait_ready(name, proc, ready, timeout=15):
    """Poll ready() until true: all three upstreams healthy in the proxy's own view."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError('%s exited while starting' % name)
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError('%s: upstreams not all healthy after %ds' % (name, timeout))


# ---------------------------------------------------------------------------------------------
# One measurement
# ---------------------------------------------------------------------------------------------

def _kill_now(b, proc):
    for pid in b._descendants(proc.pid):
        try:
            os.kill(pid, 9)
        except OSError:
            pass


def _load(b, port, seconds, warmup=0):
    args = [b.PTLOAD, 'rate', '127.0.0.1', str(port), '/', str(RES_RATE), str(seconds),
            str(b.LAT_CONNS), str(warmup)]
    rc, out, err = b.run(args, timeout=seconds + warmup + 60)
    try:
        r = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError('ptload failed (rc %d): %s' % (rc, (err or out)[-300:]))
    r['rc'] = rc
    return r


def measure(b, contender, scenario, run_id):
    """Fresh upstreams and proxy, load, fault at DURATION/3, counters; stops all it starts."""
    ports = b.pick_ports(5)
    ups, port, admin = ports[:3], ports[3], ports[4]
    fail_file = os.path.join(b.TMP, 'fail-%s' % run_id)
    procs = []
    try:
        for i, u in enumerate(ups):
            name = 'res-up%d-%s' % (i, run_id)
            p = b.start_nginx(name, nginx_upstream_cfg(b, name, u, fail_file if i == 2 else
                                                       fail_file + '-never'), 'load')
            procs.append(p)
        for u, p in zip(ups, procs):
            b.wait_port(u, p)
        if contender == 'petrel':
            proxy = b.start_petrel('petrel-res-%s' % run_id, petrel_cfg(b, port, admin, ups))
            procs.append(proxy)
            b.wait_port(port, proxy)
            b.wait_port(admin, proxy)
            wait_ready('petrel', proxy, lambda: petrel_stats(admin).get(
                'cluster.backend.membership_healthy') == 3)
        else:
            sock = os.path.join(b.TMP, 'haproxy-res-%s.sock' % run_id)
            proxy = b.start_haproxy('haproxy-res-%s' % run_id, haproxy_cfg(b, port, ups, sock))
            procs.append(proxy)
            b.wait_port(port, proxy)
            wait_ready('haproxy', proxy, lambda: [
                r.get('check_status') for k, r in haproxy_stats(sock).items()
                if k.startswith('s')] == ['L7OK'] * 3)
        st = b.http_status(port, '/')
        if st != 200:
            raise RuntimeError('%s: GET / through it returned %s' % (contender, st))
        # Warm-up (not counted): upstream keep-alive connections, first-touch memory.
        _load(b, port, 1)

        fault_at = b.DURATION / 3.0
        fired = {}

        def fault():
            fired['t'] = time.time()
            if scenario == '503':
                open(fail_file, 'w').close()
            elif scenario == 'kill':
                _kill_now(b, procs[2])

        timer = threading.Timer(fault_at, fault) if scenario != 'healthy' else None
        t0 = time.time()
        if timer:
            timer.start()
        try:
            r = _load(b, port, b.DURATION)
        finally:
            if timer:
                timer.cancel()
                timer.join()
        if 't' in fired:
            r['fault_at_s'] = round(fired['t'] - t0, 3)
        if proxy.poll() is not None:
            raise RuntimeError('%s exited during the run (rc %s):\n%s' % (
                contender, proxy.returncode, b.log_tail(proxy.bench_name)))
        time.sleep(0.2)
        if contender == 'petrel':
            s = petrel_stats(admin)
            c = 'cluster.backend.'
            r['proxy'] = {k: v for k, v in s.items() if k.startswith((c, 'http.res.'))}
            r['retries'] = s.get(c + 'upstream_rq_retry', 0)
            r['ejections'] = s.get(c + 'outlier_detection.ejections_enforced_total', 0)
            r['hc_down'] = s.get(c + 'health_check.failure', 0)
            r['retry_overflow'] = s.get(c + 'upstream_rq_retry_overflow', 0)
            r['retry_limit_exceeded'] = s.get(c + 'upstream_rq_retry_limit_exceeded', 0)
        else:
            s = haproxy_stats(sock)
            keep = ('status', 'check_status', 'wretr', 'wredis', 'hrsp_2xx', 'hrsp_5xx', 'econ',
                    'eresp', 'chkfail', 'chkdown', 'lastchg', 'stot')
            r['proxy'] = {k: {f: v.get(f) for f in keep} for k, v in s.items()}
            be = s.get('BACKEND', {})
            r['retries'] = _int(be.get('wretr'))
            r['redispatches'] = _int(be.get('wredis'))
            r['ejections'] = _int(s.get('s2', {}).get('chkdown'))
            r['hc_down'] = _int(s.get('s2', {}).get('chkfail'))
        return r
    finally:
        for p in reversed(procs):
            b.stop(p)
        for f in (fail_file,):
            try:
                os.unlink(f)
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------------------------

def _failed(r):
    return r['requests'] - r.get('status_2xx', r.get('completed', 0))


def _pct(ok, sent):
    return 100.0 * ok / sent if sent else None


def _fmt_pct(v):
    if v is None:
        return 'not measured'
    return '100%' if v == 100.0 else '%.3f%%' % v


def run(b):
    info = b.machine_info()
    info['rate_rps'] = RES_RATE
    b.log('== resilience suite: one of three upstreams fails at 1/3 of the run; petrel vs '
          'HAProxy (1 worker each), %d req/s over %d conns, %d x %ds ==' % (
              RES_RATE, b.LAT_CONNS, b.REPS, b.DURATION))
    names = ['petrel', 'haproxy']
    raw = {sc: {n: [] for n in names} for sc, _ in SCENARIOS}
    notes = []
    n_run = 0
    for rep in range(b.REPS):
        for sc, _ in SCENARIOS:
            for n in b.rotate(names, rep):
                n_run += 1
                try:
                    r = measure(b, n, sc, '%d' % n_run)
                except RuntimeError as e:
                    msg = 'rep %d %s %s: not measured: %s' % (rep + 1, sc, n, str(e)[:300])
                    b.log('  ' + msg)
                    notes.append(msg.splitlines()[0])
                    raw[sc][n].append({'error': str(e)})
                    continue
                raw[sc][n].append(r)
                b.log('  rep %d %-7s %-8s sent %d, 2xx %d (%s), 5xx %d, broken %d, unanswered %d;'
                      ' p50 %s us, p99 %s us, max %s us; retries %d, ejections/mark-downs %d%s' % (
                          rep + 1, sc, n, r['requests'], r.get('status_2xx', 0),
                          _fmt_pct(_pct(r.get('status_2xx', 0), r['requests'])),
                          r.get('status_5xx', 0), r.get('failed_io', 0), r.get('unanswered', 0),
                          b.fmt(r.get('p50_us')), b.fmt(r.get('p99_us')), b.fmt(r.get('max_us')),
                          r.get('retries', 0), r.get('ejections', 0),
                          ('; fault at %.2fs' % r['fault_at_s']) if 'fault_at_s' in r else ''))

    def ok_runs(sc, n):
        return [r for r in raw[sc][n] if 'error' not in r]

    body = ['## Results', '']
    tables = []
    for sc, title in SCENARIOS:
        rows = []

        def cell(n, f):
            rs = ok_runs(sc, n)
            return f(rs) if rs else 'not measured'

        def pooled(rs):
            sent = sum(r['requests'] for r in rs)
            ok = sum(r.get('status_2xx', 0) for r in rs)
            per = ', '.join(_fmt_pct(_pct(r.get('status_2xx', 0), r['requests'])) for r in rs)
            return '%s (%s)' % (_fmt_pct(_pct(ok, sent)), per) if len(rs) > 1 else \
                _fmt_pct(_pct(ok, sent))

        def goal(rs):
            sent = sum(r['requests'] for r in rs)
            ok = sum(r.get('status_2xx', 0) for r in rs)
            worst = min(_pct(r.get('status_2xx', 0), r['requests']) for r in rs)
            return 'met' if worst >= GOAL else 'NOT met (pooled %s)' % _fmt_pct(_pct(ok, sent))

        def total(key):
            return lambda rs: '{:,}'.format(sum(r.get(key, 0) for r in rs))

        def failed(rs):
            return '{:,}'.format(sum(_failed(r) for r in rs))

        def lat(key):
            return lambda rs: b.fmt(b.med([r.get(key) for r in rs]))

        def retries(rs):
            v = b.fmt(b.med([r.get('retries') for r in rs]), 0)
            if any('redispatches' in r for r in rs):
                v += ', %s' % b.fmt(b.med([r.get('redispatches') for r in rs]), 0)
            return v

        def per_run(key):
            return lambda rs: b.fmt(b.med([r.get(key) for r in rs]), 0)

        spec = [('requests sent (all repetitions)', total('requests')),
                ('success rate, 2xx / sent (per repetition)', pooled),
                ('success rate >= %.1f%% in every repetition' % GOAL, goal),
                ('failed requests (all repetitions)', failed),
                ('  of which 5xx responses', total('status_5xx')),
                ('  of which broken connections', total('failed_io')),
                ('  of which unanswered after 10 s', total('unanswered')),
                ('latency p50, us (median of repetitions)', lat('p50_us')),
                ('latency p99, us', lat('p99_us')),
                ('latency p99.9, us', lat('p999_us')),
                ('latency max, us', lat('max_us')),
                ('proxy retries per run (median; HAProxy: wretr, wredis)', retries),
                ('proxy ejections / mark-downs per run (median)', per_run('ejections'))]
        for label, f in spec:
            rows.append([label] + [cell(n, f) for n in names])
        md = b.table(['%s' % title, 'petrel', 'HAProxy'], rows)
        tables.append(md)
        body += ['### ' + title, '', md, '']
    b.log('\n' + '\n\n'.join(tables) + '\n')
    body.append(NOTES % {
        'rate': RES_RATE, 'conns': b.LAT_CONNS, 'dur': b.DURATION, 'at': b.DURATION / 3.0,
        'petrel': PETREL_DESC, 'haproxy': HAPROXY_DESC})
    if notes:
        body += ['', 'Notes from this run:'] + ['- %s' % x for x in notes]
    b.save('resilience', info, '\n'.join(body) + '\n', raw)


PETREL_DESC = ('route `retry_policy`: `retry_on: "5xx,reset,connect-failure"`, `num_retries: %d`, '
               '`previous_hosts` host predicate, default backoff (25 ms base), route timeout '
               '%ds; cluster: `ROUND_ROBIN`, `connect_timeout: %ds`, `outlier_detection` '
               '{`consecutive_5xx: %d`, `interval: %ds`, `base_ejection_time: 30s`, '
               '`max_ejection_percent: 50`}, `health_checks` [HTTP `GET /`, `interval: %ds`, '
               '`timeout: %ds`, `unhealthy_threshold: %d`, `healthy_threshold: %d`, '
               '`no_traffic_interval: %ds`], `circuit_breakers` `max_retries: %d`' % (
                   NUM_RETRIES, ROUTE_TIMEOUT_S, CONNECT_TIMEOUT_S, ERRORS_TO_EJECT,
                   HC_INTERVAL_S, HC_INTERVAL_S, HC_TIMEOUT_S, HC_FALL, HC_RISE, HC_INTERVAL_S,
                   MAX_RETRIES_IN_FLIGHT))
HAPROXY_DESC = ('`retries %d`, `option redispatch 1`, `retry-on conn-failure empty-response '
                'junk-response response-timeout 500 502 503 504`, `balance roundrobin`, '
                '`timeout connect %ds`, `timeout server %ds`, `option httpchk GET /` + '
                '`http-check expect status 200`, servers `check inter %ds fall %d rise %d '
                'observe layer7 error-limit %d on-error mark-down`, `timeout check %ds`' % (
                    NUM_RETRIES, CONNECT_TIMEOUT_S, ROUTE_TIMEOUT_S, HC_INTERVAL_S, HC_FALL,
                    HC_RISE, ERRORS_TO_EJECT, HC_TIMEOUT_S))

NOTES = """Method: for every measurement, three nginx upstreams (1 worker each, `return 200 "ok"`) and
one proxy (1 worker) are started fresh; once the proxy sees all three upstreams healthy and a
1 s warm-up has run, bench/ptload.c sends %(rate)d req/s over %(conns)d keep-alive connections
for %(dur)d s (open loop; latency from each request's due time). At %(at).1f s the third
upstream fails: "503" makes it answer 503 to every request (health checks included); "kill"
SIGKILLs its master and worker. "control" injects nothing. Afterwards everything is stopped.
Every request is counted once: 2xx, another status, a broken connection, or no answer 10 s
after the last request was due. The success rate is 2xx / sent, pooled over the repetitions,
with each repetition's own rate in parentheses. Latency percentiles cover all requests that
ended (failed ones at the moment they failed); they are medians over repetitions and, on this
shared box, mostly scheduling noise (compare with the control).

petrel: %(petrel)s.

HAProxy: %(haproxy)s.

"proxy retries" is petrel's `cluster.backend.upstream_rq_retry`, and HAProxy's backend `wretr`
(retries) and `wredis` (redispatches to another server) from `show stat`. "ejections /
mark-downs" is petrel's `outlier_detection.ejections_enforced_total` and HAProxy's `chkdown` of
the failing server (transitions to DOWN, by health check or by `on-error mark-down`).
HAProxy 2.6's `observe layer7` does not count a response that was retried (it adjusts only the
last server tried, haproxy/haproxy#2679, since fixed upstream), so in scenario A only its health checks
mark the failing server down. petrel's retry circuit breaker is raised from Envoy's default of 3
retries at once, which fails requests under load (flag UO), so that neither proxy limits
concurrent retries.
"""
