"""abuse suite: petrel, HAProxy and nginx under the same attacks; what do they hold, shed and
answer? Run by bench.py (`bench/run.sh abuse`), which passes itself in as `b`; see
bench/README.md, "What each suite measures".

Every measurement starts one proxy fresh in front of a shared nginx upstream (1 KiB, 16 MiB
and 3-byte static files), warms it up with 1 s of ordinary requests, takes its RSS as the baseline,
then runs one attack for ABUSE_SECONDS from bench/ptload.c, all on loopback:

  pipeline  PIPE_CLIENTS connections, each writing PIPE_REQS pipelined `GET /1k` as fast as
            the socket takes them and never reading a response
  slow      SLOW_CLIENTS connections, each asking for `/big` (BIG_SIZE) and reading SLOW_READ_BPS
  fd        the proxy runs under `prlimit --nofile=FD_LIMIT`; FLOOD_CONNS connects are issued
            at once, each sends `GET /tiny` and holds its connection once answered; with 1 and
            with 2 workers (petrel --concurrency, HAProxy nbthread, nginx worker_processes)

Throughout, a thread asks the proxy's own health endpoint every PROBE_INTERVAL s (petrel admin
`/ready`, HAProxy `monitor-uri`, nginx `stub_status`, each on its own port) and times the answer
(a new connection, up to the status line; PROBE_TIMEOUT s at most). The proxy's RSS is sampled
every 0.1 s during the attack (peak) and AFTER_S s after the attacking clients have left; its
CPU time (utime+stime, /proc/<pid>/stat) is taken over the attack. After the fd attack a normal
request is retried until it gets a 200 (recovery).
"""
import json
import os
import select
import shutil
import socket
import subprocess
import threading
import time

ABUSE_SECONDS = int(os.environ.get('BENCH_ABUSE_SECONDS', '5'))
PIPE_CLIENTS = 200
PIPE_REQS = 30000
SLOW_CLIENTS = 200
SLOW_READ_BPS = 4096       # per client
CLIENT_RCVBUF = 8192       # the attackers' receive buffer (the kernel doubles it): responses
                           # they do not read pile up in the proxy, not in their sockets
FD_LIMIT = 256
FLOOD_CONNS = 3000
AFTER_S = 3
PROBE_INTERVAL = 0.1
PROBE_TIMEOUT = 2.0
RECOVER_TIMEOUT = 10.0
# The slow readers' response. On loopback the proxy's socket send buffer grows to tcp_wmem's
# maximum (4 MiB by default) and took all of a 1 MiB response at once, so nothing of it waited
# in the proxy: the response must be well above that for the proxy's own buffering to show.
BIG_SIZE = 16 << 20
# per_connection_buffer_limit_bytes in the slow32k attack: what Envoy's edge best-practice
# config sets, a buffer budget like HAProxy's 16 KiB bufsize and nginx's 32 KiB proxy_buffers
# (the slow attack keeps Envoy's default, 1 MiB).
EDGE_BUFFER_LIMIT = 32768
NGINX_CONNS = 4096         # nginx worker_connections and HAProxy maxconn (not in the fd attack)

ATTACKS = [
    ('pipeline', 1, 'pipelining non-readers: %d connections x %d pipelined GET /1k, responses '
                    'never read' % (PIPE_CLIENTS, PIPE_REQS)),
    ('slow', 1, 'slow readers: %d connections x GET /big (%d MiB), each read at %d B/s' % (
        SLOW_CLIENTS, BIG_SIZE >> 20, SLOW_READ_BPS)),
    ('slow32k', 1, 'slow readers, petrel with per_connection_buffer_limit_bytes %d (Envoy\'s '
                   'edge best-practice value; HAProxy and nginx as above)' % EDGE_BUFFER_LIMIT),
    ('fd', 1, 'descriptor limit %d, 1 worker: %d connects at once, each GET /tiny, held' % (
        FD_LIMIT, FLOOD_CONNS)),
    ('fd', 2, 'descriptor limit %d, 2 workers: %d connects at once, each GET /tiny, held' % (
        FD_LIMIT, FLOOD_CONNS)),
]
NAMES = ['petrel', 'haproxy', 'nginx']
HEALTH_PATH = '/ready'     # on each proxy's health port (see start_proxy)


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------

def upstream_cfg(b, port):
    """nginx (1 worker) serving /1k, /big and /tiny, with stub_status at /upstream_status so the
    suite can count the requests that reached it."""
    root = os.path.join(b.TMP, 'www')
    os.makedirs(root, exist_ok=True)
    for name, data in (('1k', (b'0123456789abcdef' * 64)[:b.BODY_SIZE]), ('tiny', b'ok\n'),
                       ('big', b'0123456789abcdef' * (BIG_SIZE // 16))):
        with open(os.path.join(root, name), 'wb') as f:
            f.write(data)
    return b.write('nginx-abuse-up.conf', b.NGINX_COMMON % {'name': 'abuse-up', 'wc': 19000} + """
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:%(port)d backlog=4096 reuseport;
        root %(root)s;
        location / { }
        location = /upstream_status { stub_status; }
    }
}
""" % {'port': port, 'root': root})


def petrel_cfg(b, port, admin, up, buffer_limit=None):
    """The http suite's config (route / to the upstream, router filter) plus an admin address;
    with buffer_limit, per_connection_buffer_limit_bytes on every listener and cluster."""
    with open(b.petrel_http_cfg(port, up)) as f:
        cfg = json.load(f)
    cfg['admin'] = {'address': b._sa(admin)}
    if buffer_limit is not None:
        for kind in ('listeners', 'clusters'):
            for x in cfg['static_resources'][kind]:
                x['per_connection_buffer_limit_bytes'] = buffer_limit
    return b.write('petrel-abuse.json', json.dumps(cfg, indent=1))


HAPROXY_CFG = """global
    nbthread %(threads)d
%(maxconn)s    pidfile %(tmp)s/haproxy-abuse-%(name)s.pid
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-request 300s
    timeout http-keep-alive 300s
frontend health
    bind 127.0.0.1:%(admin)d
    monitor-uri /ready
listen l0
    bind 127.0.0.1:%(port)d
    server s1 127.0.0.1:%(up)d
"""


def haproxy_cfg(b, name, port, admin, up, threads, fd_limited):
    """HAProxy in front of the upstream with a monitor-uri frontend. Under the descriptor limit
    it has no maxconn: it then sizes maxconn from the limit it was started with (as root, a
    configured maxconn would make it raise the limit instead)."""
    return b.write('haproxy-abuse-%s.cfg' % name, HAPROXY_CFG % {
        'threads': threads, 'tmp': b.TMP, 'name': name, 'admin': admin, 'port': port, 'up': up,
        'maxconn': '' if fd_limited else '    maxconn %d\n' % NGINX_CONNS})


NGINX_PROXY = """
http {
    access_log off;
    client_body_temp_path %(d)s/body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_header_timeout 300s;
    upstream backend {
        server 127.0.0.1:%(up)d;
        keepalive 64;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:%(port)d backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    server {
        listen 127.0.0.1:%(admin)d;
        location = /ready { stub_status; }
    }
}
"""


def nginx_cfg(b, name, port, admin, up, workers, fd_limited):
    """The http suite's nginx proxy (proxy_pass, upstream keepalive 64) plus a stub_status
    server. Under the descriptor limit, worker_rlimit_nofile is left out so the workers keep
    the limit they were started with (as root they could raise it)."""
    d = os.path.join(b.TMP, 'nginx-abuse-temp-%s' % name)
    os.makedirs(d, exist_ok=True)
    head = b.NGINX_COMMON % {'name': 'abuse-' + name, 'wc': NGINX_CONNS}
    head = head.replace('worker_processes 1;', 'worker_processes %d;' % workers)
    if fd_limited:
        head = '\n'.join(line for line in head.splitlines()
                         if not line.startswith('worker_rlimit_nofile')) + '\n'
    return b.write('nginx-abuse-%s.conf' % name, head + NGINX_PROXY % {
        'd': d, 'up': up, 'port': port, 'admin': admin}), d


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------

def proxy_rss(b, name, proc):
    """VmRSS of the processes serving traffic, KiB: nginx's workers (not the master, whose
    pages they share), otherwise the proxy process."""
    if name == 'nginx':
        return sum(b.rss_one(p) for p in b._descendants(proc.pid) if p != proc.pid)
    return b.rss_one(proc.pid)


def upstream_requests(port):
    """The upstream's request counter (stub_status), or None."""
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=3) as s:
            s.sendall(b'GET /upstream_status HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n')
            data = b''
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        lines = data.split(b'\r\n\r\n', 1)[1].decode().splitlines()
        return int(lines[2].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def mem_available_kib():
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith('MemAvailable:'):
                return int(line.split()[1])
    return 0


class Prober(threading.Thread):
    """Asks the health endpoint every PROBE_INTERVAL s, each time on a new connection from a
    thread of its own, so a probe that hangs does not delay the next (as a health checker
    with a timeout would do). Records (phase, seconds to the status line or None when there
    was no 200 within PROBE_TIMEOUT)."""

    def __init__(self, b, port, path):
        super().__init__(daemon=True)
        self.b, self.port, self.path = b, port, path
        self.phase = 'before'
        self.samples = []
        self.halt = threading.Event()
        self.probes = []

    def probe(self, phase):
        t0 = time.monotonic()
        dt = None
        try:
            with socket.create_connection(('127.0.0.1', self.port), timeout=PROBE_TIMEOUT) as s:
                s.settimeout(max(0.01, PROBE_TIMEOUT - (time.monotonic() - t0)))
                status, _ = self.b.get_status(s, self.path)
                if status == 200:
                    dt = time.monotonic() - t0
        except OSError:
            pass
        self.samples.append((phase, dt))   # list.append is atomic

    def run(self):
        next_t = time.monotonic()
        while not self.halt.is_set():
            t = threading.Thread(target=self.probe, args=(self.phase,), daemon=True)
            t.start()
            self.probes.append(t)
            next_t += PROBE_INTERVAL
            self.halt.wait(max(0.0, next_t - time.monotonic()))

    def stop(self):
        self.halt.set()
        self.join(timeout=5)
        for t in self.probes:
            t.join(timeout=PROBE_TIMEOUT + 2)

    def summary(self, phase):
        got = [dt for ph, dt in self.samples if ph == phase]
        ok = [dt * 1000 for dt in got if dt is not None]
        failed = len(got) - len(ok)
        # An unanswered probe counts as PROBE_TIMEOUT (a lower bound) in the median and max.
        ms = sorted(ok + [PROBE_TIMEOUT * 1000] * failed)
        return {'probes': len(got), 'failed': failed,
                'median_ms': self.b.med(ms), 'max_ms': ms[-1] if ms else None}


def start_proxy(b, name, attack, workers, ports, run_id):
    """Starts one contender fresh, listening on port with its health endpoint on admin;
    returns (proc, extra info)."""
    port, admin, up = ports
    fd_limited = attack == 'fd'
    pre = ['prlimit', '--nofile=%d:%d' % (FD_LIMIT, FD_LIMIT), '--'] if fd_limited else []
    extra = {}
    if name == 'petrel':
        limit = EDGE_BUFFER_LIMIT if attack == 'slow32k' else None
        cmd = [b.PETREL_BIN, '-c', petrel_cfg(b, port, admin, up, limit), '--concurrency',
               str(workers), '-l', 'warning']
    elif name == 'haproxy':
        cmd = ['haproxy', '-db', '-f', haproxy_cfg(b, run_id, port, admin, up, workers,
                                                   fd_limited)]
    else:
        cfg, extra['temp_dir'] = nginx_cfg(b, run_id, port, admin, up, workers, fd_limited)
        cmd = ['nginx', '-p', b.TMP, '-c', cfg, '-e',
               os.path.join(b.TMP, 'nginx-abuse-%s.err' % run_id)]
    proc = b.spawn('%s-abuse-%s' % (name, run_id), pre + cmd, 'proxy')
    b.wait_port(port, proc)
    b.wait_port(admin, proc)
    return proc, extra


def _attack_cmd(b, attack, port):
    if attack == 'pipeline':
        return [b.PTLOAD, 'pipeline', '127.0.0.1', str(port), '/1k', str(PIPE_CLIENTS),
                str(PIPE_REQS), str(CLIENT_RCVBUF)], 'connected'
    if attack in ('slow', 'slow32k'):
        return [b.PTLOAD, 'slow', '127.0.0.1', str(port), '/big', str(SLOW_CLIENTS),
                str(SLOW_READ_BPS), str(CLIENT_RCVBUF)], 'connected'
    return [b.PTLOAD, 'flood', '127.0.0.1', str(port), '/tiny', str(FLOOD_CONNS)], 'burst'


def _read_line(p, timeout):
    """One line of the attacker's stdout within timeout, or ''."""
    r, _, _ = select.select([p.stdout], [], [], timeout)
    return p.stdout.readline() if r else ''


def _spooled_bytes(b, proc, d):
    """Bytes in the temp files under d that proc's processes hold open (nginx unlinks its
    proxy temp files as soon as it creates them, so they are found through /proc/<pid>/fd)."""
    total = 0
    for pid in b._descendants(proc.pid):
        fds = '/proc/%d/fd' % pid
        try:
            names = os.listdir(fds)
        except OSError:
            continue
        for fd in names:
            try:
                if os.readlink(os.path.join(fds, fd)).startswith(d):
                    total += os.stat(os.path.join(fds, fd)).st_size
            except OSError:
                pass
    return total


def recover(b, port):
    """Seconds until a normal request through the proxy gets a 200 (None: not within
    RECOVER_TIMEOUT), and the last status seen."""
    t0 = time.monotonic()
    st = None
    while time.monotonic() - t0 < RECOVER_TIMEOUT:
        st = b.http_status(port, '/tiny', timeout=1)
        if st == 200:
            return time.monotonic() - t0, st
        time.sleep(0.05)
    return None, st


def measure(b, name, attack, workers, up_port, run_id):
    """One attack on one fresh proxy; stops everything it starts."""
    port, admin = b.pick_ports(2)
    r = {'attack': attack, 'workers': workers}
    proc = prober = cl = None
    try:
        proc, extra = start_proxy(b, name, attack, workers, (port, admin, up_port), run_id)
        st = b.http_status(port, '/1k')
        if st != 200:
            raise RuntimeError('GET /1k through it returned %s' % st)
        # Warm-up (not measured): upstream keep-alive connections, first-touch memory.
        b.run([b.PTLOAD, 'rate', '127.0.0.1', str(port), '/1k', '500', '1', str(b.LAT_CONNS),
               '0'], timeout=60)
        time.sleep(0.5)
        prober = Prober(b, admin, HEALTH_PATH)
        prober.start()
        time.sleep(1.0)
        r['rss_base_kib'] = proxy_rss(b, name, proc)
        r['fds_base'] = b.fd_count(proc.pid)
        up0 = upstream_requests(up_port)
        cap_kib = min(4 << 20, mem_available_kib() // 4)

        cmd, ready = _attack_cmd(b, attack, port)
        prober.phase = 'attack'
        cpu0 = b.cpu_ticks(proc.pid)
        t0 = time.monotonic()
        cl = subprocess.Popen(b.pinned(cmd, 'load'), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        b._procs.append(cl)
        cl.bench_name = 'ptload-' + attack
        line = _read_line(cl, 30).split()
        if not line or line[0] != ready:
            b.stop(cl)   # then its stderr ends, and can be read whole
            raise RuntimeError('ptload %s did not start: %s %s' % (attack, ' '.join(line),
                                                                    cl.stderr.read()[-300:]))
        if ready == 'connected':
            r['connected'] = int(line[1])
        peak, series, capped = 0, [], False
        while time.monotonic() - t0 < ABUSE_SECONDS:
            rss = proxy_rss(b, name, proc)
            peak = max(peak, rss)
            series.append((round(time.monotonic() - t0, 2), rss))
            if proc.poll() is not None:
                raise RuntimeError('exited during the attack (rc %s):\n%s' % (
                    proc.returncode, b.log_tail(proc.bench_name)))
            if rss > cap_kib:
                capped = True   # the machine comes first: stop before it runs out of memory
                break
            time.sleep(0.1)
        cpu1 = b.cpu_ticks(proc.pid)
        r['attack_s'] = time.monotonic() - t0
        r['cpu_s'] = (cpu1[0] + cpu1[1] - cpu0[0] - cpu0[1]) / b.HZ
        r['cpu_pct'] = 100.0 * r['cpu_s'] / r['attack_s']
        r['rss_peak_kib'], r['rss_capped'], r['rss_cap_kib'] = peak, capped, cap_kib
        r['rss_series'] = series[::5]
        # Still growing at the end: the last second's growth, KiB.
        r['rss_growth_last_s_kib'] = series[-1][1] - min(
            (v for t, v in series if t >= series[-1][0] - 1.0), default=series[-1][1])
        r['fds_attack'] = b.fd_count(proc.pid)
        up1 = upstream_requests(up_port)
        if up0 is not None and up1 is not None:
            r['upstream_requests'] = up1 - up0 - 1   # minus the stub_status request itself
        if 'temp_dir' in extra:
            r['spooled_bytes'] = _spooled_bytes(b, proc, extra['temp_dir'])
        prober.phase = 'after'

        cl.stdin.write('close\n')
        cl.stdin.flush()
        out = _read_line(cl, 30)
        try:
            r['client'] = json.loads(out)
        except ValueError:
            b.stop(cl)
            raise RuntimeError('ptload %s: %r %s' % (attack, out, cl.stderr.read()[-300:]))
        cl.wait(timeout=30)
        b._procs.remove(cl)
        cl = None
        t_left = time.monotonic()
        if attack == 'fd':
            r['recover_s'], r['recover_status'] = recover(b, port)
        else:
            time.sleep(max(0.0, AFTER_S - (time.monotonic() - t_left)))
        r['rss_after_kib'] = proxy_rss(b, name, proc)
        r['fds_after'] = b.fd_count(proc.pid)
        if proc.poll() is not None:
            raise RuntimeError('exited after the attack (rc %s):\n%s' % (
                proc.returncode, b.log_tail(proc.bench_name)))
        prober.stop()
        r['probe'] = {ph: prober.summary(ph) for ph in ('before', 'attack', 'after')}
        prober = None
        n = r.get('connected') or 0
        if attack in ('pipeline', 'slow', 'slow32k') and n:
            r['kib_per_client'] = (r['rss_peak_kib'] - r['rss_base_kib']) / n
        r['rss_left_kib'] = r['rss_after_kib'] - r['rss_base_kib']
        if attack == 'fd':
            c = r['client']
            r['shed_per_s'] = c['shed'] / r['attack_s']
            r['hanging'] = c['waiting_answer'] + c['waiting_connect']
        return r
    finally:
        if prober:
            prober.stop()
        if cl:
            b.stop(cl)
        if proc:
            b.stop(proc)


# ---------------------------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------------------------

def _best(vals, better):
    """Best of HAProxy's and nginx's values (the goal's yardstick); None if neither."""
    vs = [v for v in vals if v is not None]
    if not vs:
        return None
    return min(vs) if better == 'lower' else max(vs)


def _ratio(pe, best):
    if pe is None or best is None:
        return None
    if best == 0:
        return 1.0 if pe == 0 else float('inf')
    return pe / best


def _fmt_ratio(v):
    if v is None:
        return 'n/a'
    return 'inf' if v == float('inf') else '%.2f' % v


def _probe(k):
    return lambda r: r.get('probe', {}).get('attack', {}).get(k)


def _unanswered_pct(r):
    p = r.get('probe', {}).get('attack', {})
    return 100.0 * p['failed'] / p['probes'] if p.get('probes') else None


def _recover(r):
    """Seconds to the first 200 after the attack, to 0.1 s: a request's own round trip (a
    few ms) is not a difference between proxies."""
    s = r.get('recover_s')
    return round(s, 1) if s is not None else RECOVER_TIMEOUT


# Goal rows: (label, value of one result, which way is better, digits or None for automatic).
HEALTH_ROWS = [
    ('health endpoint answer time during the attack, median, ms', _probe('median_ms'), 'lower',
     None),
    ('health endpoint answer time during the attack, max, ms', _probe('max_ms'), 'lower', None),
    ('health probes unanswered within %g s during the attack, %%' % PROBE_TIMEOUT,
     _unanswered_pct, 'lower', 1),
]
ROWS = {
    'mem': [
        ('proxy RSS growth per attacking connection, KiB (peak - baseline) / connections',
         lambda r: r.get('kib_per_client'), 'lower', None),
        ('proxy RSS left %d s after the clients left, KiB over baseline' % AFTER_S,
         lambda r: r.get('rss_left_kib'), 'lower', 0),
        ('proxy CPU during the attack, % of one core', lambda r: r.get('cpu_pct'), 'lower',
         None),
    ] + HEALTH_ROWS,
    'fd': [
        ('connections shed per second (closed before any answer)',
         lambda r: r.get('shed_per_s'), 'higher', 0),
        ('connections left hanging at the end (no answer, no close)',
         lambda r: r.get('hanging'), 'lower', 0),
        ('proxy CPU during the attack, % of one core', lambda r: r.get('cpu_pct'), 'lower',
         None),
        ('recovery: a normal request gets a 200 after the attack, s (%g: never)' %
         RECOVER_TIMEOUT, _recover, 'lower', 1),
    ] + HEALTH_ROWS,
}
# Context rows (no goal): what happened, for reading the figures above.
EACH_GROWTH = ('  growth per attacking connection, each repetition, KiB',
               lambda r: r.get('kib_per_client'), 'each')
INFO = {
    'pipeline': [
        EACH_GROWTH,
        ('requests forwarded upstream during the attack', lambda r: r.get('upstream_requests')),
        ('proxy RSS at peak, KiB', lambda r: r.get('rss_peak_kib')),
        ('proxy RSS growth in the attack\'s last second, KiB',
         lambda r: r.get('rss_growth_last_s_kib')),
        ('connections the proxy closed during the attack',
         lambda r: r['client'].get('closed_by_server')),
    ],
    'slow': [
        EACH_GROWTH,
        ('proxy RSS at peak, KiB', lambda r: r.get('rss_peak_kib')),
        ('proxy RSS growth in the attack\'s last second, KiB',
         lambda r: r.get('rss_growth_last_s_kib')),
        ('response bytes spooled to temp files (nginx), KiB',
         lambda r: r['spooled_bytes'] / 1024 if 'spooled_bytes' in r else None),
        ('bytes the clients read', lambda r: r['client'].get('bytes_read')),
        ('connections the proxy closed during the attack',
         lambda r: r['client'].get('closed_by_server')),
    ],
    'slow32k': None,  # as 'slow', set below
    'fd': [
        ('connections answered (any status)', lambda r: r['client'].get('answered')),
        ('  of which 5xx', lambda r: r['client'].get('status_5xx')),
        ('connections shed', lambda r: r['client'].get('shed')),
        ('  ms from the burst to the median / last shed', lambda r: '%s / %s' % (
            r['client'].get('shed_ms_p50'), r['client'].get('shed_ms_max'))
            if r['client'].get('shed') else '-'),
        ('  hanging: waiting for an answer / for the connect', lambda r: '%d / %d' % (
            r['client']['waiting_answer'], r['client']['waiting_connect'])),
        ('  hanging, each repetition', lambda r: r.get('hanging'), 'each'),
        ('proxy descriptors in use during the attack', lambda r: r.get('fds_attack')),
    ],
}


def run(b):
    for tool in ('haproxy', 'nginx', 'prlimit'):
        if not shutil.which(tool):
            raise RuntimeError('the abuse suite needs %s' % tool)
    info = b.machine_info()
    info['duration_s'] = ABUSE_SECONDS   # the length of each attack
    b.log('== abuse suite: petrel vs HAProxy vs nginx under attack, %d x %d s per attack ==' % (
        b.REPS, ABUSE_SECONDS))
    (p_up,) = b.pick_ports(1)
    up = b.start_nginx('nginx-abuse-up', upstream_cfg(b, p_up), 'load')
    b.wait_port(p_up, up)
    for path in ('/1k', '/big', '/tiny'):
        if b.http_status(p_up, path) != 200:
            raise RuntimeError('upstream nginx does not answer 200 on %s' % path)
    keys = ['%s-%d' % (a, w) for a, w, _ in ATTACKS]
    raw = {k: {n: [] for n in NAMES} for k in keys}
    notes = []
    n_run = 0
    for rep in range(b.REPS):
        for (attack, workers, _), key in zip(ATTACKS, keys):
            for n in b.rotate(NAMES, rep):
                n_run += 1
                try:
                    r = measure(b, n, attack, workers, p_up, '%d' % n_run)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    msg = 'rep %d %s %s: not measured: %s' % (rep + 1, key, n, str(e)[:300])
                    b.log('  ' + msg)
                    notes.append(msg.splitlines()[0])
                    raw[key][n].append({'error': str(e)})
                    continue
                raw[key][n].append(r)
                pr = r['probe']['attack']
                if attack == 'fd':
                    c = r['client']
                    what = ('answered %d (5xx %d), shed %d (median %s ms), hanging %d; '
                            'recovered in %s s' % (
                                c['answered'], c['status_5xx'], c['shed'], c['shed_ms_p50'],
                                r['hanging'], b.fmt(r.get('recover_s'))))
                else:
                    what = ('%+.1f KiB/conn (peak %s KiB, base %s), left %+d KiB; upstream '
                            'requests %s' % (r.get('kib_per_client') or 0,
                                             b.fmt(r['rss_peak_kib']), b.fmt(r['rss_base_kib']),
                                             r['rss_left_kib'],
                                             b.fmt(r.get('upstream_requests'))))
                if r.get('rss_capped'):
                    notes.append('rep %d %s %s: RSS passed %d MiB, the attack was stopped '
                                 'after %.1f s' % (rep + 1, key, n, r['rss_cap_kib'] >> 10,
                                                   r['attack_s']))
                b.log('  rep %d %-10s %-8s %s; CPU %.0f%%; health %s/%s ms (%d/%d failed)%s' % (
                    rep + 1, key, n, what, r['cpu_pct'], b.fmt(pr['median_ms']),
                    b.fmt(pr['max_ms']), pr['failed'], pr['probes'],
                    '; RSS CAPPED' if r.get('rss_capped') else ''))
    b.stop(up)
    b.save('abuse', info, report(b, raw, notes), raw)


INFO['slow32k'] = INFO['slow']


def report(b, raw, notes):
    """The tables (markdown) from raw = {attack key: {name: [result per repetition]}}."""
    body = ['## Results', '']
    tables = []
    for attack, workers, title in ATTACKS:
        key = '%s-%d' % (attack, workers)
        ok = {n: [r for r in raw[key][n] if 'error' not in r] for n in NAMES}
        reps = max(len(raw[key][n]) for n in NAMES)
        paired = [i for i in range(reps) if all(
            i < len(raw[key][n]) and 'error' not in raw[key][n][i] for n in NAMES)]
        rows = []
        for label, f, better, digits in ROWS['fd' if attack == 'fd' else 'mem']:
            vals = {n: b.med([f(r) for r in ok[n]]) for n in NAMES}
            # The ratio is the median of per-repetition ratios (same background load).
            per = [_ratio(f(raw[key]['petrel'][i]),
                          _best([f(raw[key]['haproxy'][i]), f(raw[key]['nginx'][i])], better))
                   for i in paired]
            per = [x for x in per if x is not None]
            rat = b.med(per) if per else None
            if rat is None:
                goal = 'not measured'
            else:
                goal = '%s is better: %s' % (better, 'met' if (
                    rat <= 1 if better == 'lower' else rat >= 1) else '**NOT met**')
            rows.append([label] + [b.fmt(vals[n], digits) if ok[n] else 'not measured'
                                   for n in NAMES] + [_fmt_ratio(rat), goal])
        for label, f, *each in INFO[attack]:
            if each:   # every repetition's value, for a goal row whose median hides a spread
                rows.append([label] + [', '.join(
                    b.fmt(f(r), 0 if isinstance(f(r), int) else None) if 'error' not in r
                    else 'failed' for r in raw[key][n])
                    for n in NAMES] + ['', ''])
                continue

            def cell(n):
                vs = [f(r) for r in ok[n]]
                if not vs or vs[0] is None:
                    return '-' if ok[n] else 'not measured'
                if isinstance(vs[0], str):
                    return vs[len(vs) // 2]
                return b.fmt(b.med(vs), 0 if isinstance(vs[0], int) else None)
            rows.append([label] + [cell(n) for n in NAMES] + ['', ''])
        md = b.table([title, 'petrel', 'HAProxy', 'nginx', 'petrel/best of HAProxy, nginx',
                      'goal: petrel at or better than the best'], rows)
        tables.append(md)
        body += ['### ' + title, '', md, '']
    b.log('\n' + '\n\n'.join(tables) + '\n')
    body.append(NOTES % {
        'secs': ABUSE_SECONDS, 'rcvbuf': CLIENT_RCVBUF, 'after': AFTER_S,
        'interval': PROBE_INTERVAL * 1000, 'timeout': PROBE_TIMEOUT, 'fd': FD_LIMIT,
        'nconn': NGINX_CONNS, 'recover': RECOVER_TIMEOUT})
    if notes:
        body += ['', 'Notes from this run:'] + ['- %s' % x for x in notes]
    return '\n'.join(body) + '\n'


NOTES = """Method: every measurement starts one proxy fresh (1 worker unless the attack says 2: petrel
`--concurrency`, HAProxy `nbthread`, nginx `worker_processes`) in front of one shared nginx
upstream, warms it up with 1 s of ordinary requests, then attacks it for %(secs)d s from
bench/ptload.c. Attacking clients shrink their receive buffer (SO_RCVBUF %(rcvbuf)d), so what
they do not read waits in the proxy, not in their own sockets. RSS is VmRSS of the process
serving traffic (for nginx the sum of its workers), sampled every 0.1 s; "growth per attacking
connection" is (peak - baseline) / connections, the baseline taken after the warm-up. "Left
after" is RSS %(after)d s after the clients closed everything, minus the baseline. CPU is
utime+stime of the proxy's process tree over the attack. The health endpoint (petrel admin
`/ready`, HAProxy `monitor-uri /ready` on its own frontend, nginx `stub_status` on its own
server) is asked every %(interval).0f ms on a new connection; an unanswered probe counts as
%(timeout)g s (a lower bound) in the median and max. Ratios are petrel / the better of HAProxy
and nginx, the median of per-repetition ratios; "inf" means both others scored 0.

Configs: the http suite's, plus the health endpoints; HAProxy `maxconn %(nconn)d`, nginx
`worker_connections %(nconn)d`. Descriptor limit: every proxy starts under
`prlimit --nofile=%(fd)d:%(fd)d`. HAProxy then has no `maxconn` (it derives one from the
limit; as root a configured one would make it raise the limit), nginx no
`worker_rlimit_nofile` (same reason). A connection counts as shed when the proxy closes or
resets it before any answer; hanging when at the end it has neither an answer nor a close
(accepted and stalled, or still in the listen queue). Recovery: once the clients have left, a
`GET /tiny` is retried every 50 ms, for up to %(recover)g s, until it gets a 200.
"""
