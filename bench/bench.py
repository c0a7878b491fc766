#!/usr/bin/env python3
"""Side-by-side benchmarks: petrel vs HAProxy (and nginx for HTTP). Driven by bench/run.sh.

    bench.py [tcp|http|tls|resilience|abuse|h2|instr|all]...
                                        (all = tcp http tls resilience abuse)

Environment (all optional):
    BENCH_DURATION  seconds per measurement (default 10)
    BENCH_REPS      repetitions of every measurement (default 3); contenders are interleaved
                    within each repetition and their order rotates between repetitions
    BENCH_RATE      fixed request rate of the latency test, req/s (default 2000)
    BENCH_RES_RATE  request rate of the resilience suite, req/s (default 1000)
    BENCH_ABUSE_SECONDS length of each attack in the abuse suite (default 5)
    BENCH_IDLE_CONNS idle keep-alive connections opened per proxy (default 10000)
    BENCH_H2_IDLE_CONNS idle h2 connections opened per proxy in the h2 suite (default 2000)
    BENCH_PIN       1: pin the proxy under test to the last CPU and everything else (clients,
                    upstreams) to the others; 0: let the scheduler place them (default 1 when
                    there are at least 2 CPUs)
    PETREL_BIN      petrel binary (default build/petrel)
    BENCH_NICE      run everything under `nice -n BENCH_NICE` (e.g. -10 as root: less
                    interference from other work on a shared machine; default 0, off)
    BENCH_KEEP      1: keep the temp dir with configs and logs

Every figure is a median over BENCH_REPS; ratios are medians of per-repetition ratios (each
repetition runs the contenders back to back, so a ratio compares measurements taken under the
same background load).
"""
import atexit
import datetime
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, 'results')
RAW_DIR = os.path.join(RESULTS_DIR, 'raw')

DURATION = int(os.environ.get('BENCH_DURATION', '10'))
REPS = int(os.environ.get('BENCH_REPS', '3'))
RATE = int(os.environ.get('BENCH_RATE', '2000'))
IDLE_CONNS = int(os.environ.get('BENCH_IDLE_CONNS', '10000'))
DEFAULT_PETREL = os.path.join(ROOT, 'build', 'petrel')
PETREL_BIN = os.path.abspath(os.environ.get('PETREL_BIN', DEFAULT_PETREL))
KEEP = os.environ.get('BENCH_KEEP') == '1'
NCPU = os.cpu_count() or 1
PIN = os.environ.get('BENCH_PIN', '1' if NCPU >= 2 else '0') == '1' and NCPU >= 2
NICE = int(os.environ.get('BENCH_NICE', '0'))
PROXY_CPU = str(NCPU - 1)
LOAD_CPUS = ','.join(str(i) for i in range(NCPU - 1)) if NCPU >= 2 else '0'
HZ = os.sysconf('SC_CLK_TCK')
WRK_CONNS = 50
LAT_CONNS = 10
BODY_SIZE = 1024

TMP = os.environ.get('BENCH_TMP') or tempfile.mkdtemp(prefix='petrel-bench-')
os.chmod(TMP, 0o755)   # nginx workers may run as another user and read www/ from here
PIDFILE = os.path.join(TMP, 'pids')
_procs = []


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------

def _descendants(pid):
    """pid and all its descendants (scans /proc; fine for a handful of processes)."""
    children = {}
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(')') + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _kill_tree(proc):
    if proc.poll() is not None:
        return
    tree = _descendants(proc.pid)
    for p in tree:
        try:
            os.kill(p, signal.SIGTERM)
        except OSError:
            pass
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        pass
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        pass


@atexit.register
def cleanup():
    for p in reversed(_procs):
        _kill_tree(p)
    _procs.clear()
    if os.path.isdir(TMP):
        _write_pids()
    if KEEP:
        log('kept temp dir %s' % TMP)
    else:
        shutil.rmtree(TMP, ignore_errors=True)


def _on_signal(signum, frame):
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def pinned(cmd, role):
    """Prefix cmd with taskset (role 'proxy' goes to the last CPU, 'load' to the others) and,
    with BENCH_NICE, with nice."""
    if NICE:
        cmd = ['nice', '-n', str(NICE)] + cmd
    if not PIN:
        return cmd
    return ['taskset', '-c', PROXY_CPU if role == 'proxy' else LOAD_CPUS] + cmd


def spawn(name, cmd, role, cwd=None):
    """Start a long-lived process that dies with us; stdout/stderr go to TMP/<name>.log."""
    logf = open(os.path.join(TMP, name + '.log'), 'wb')
    full = pinned(cmd, role)
    if shutil.which('setpriv'):
        full = ['setpriv', '--pdeathsig', 'KILL', '--'] + full
    p = subprocess.Popen(full, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         cwd=cwd or TMP)
    logf.close()
    p.bench_name = name
    _procs.append(p)
    _write_pids()
    return p


def _write_pids():
    """Keep TMP/pids equal to the processes still running, for run.sh's trap (a stale pid
    there could by now belong to someone else)."""
    with open(PIDFILE + '.new', 'w') as f:
        f.write(''.join('%d\n' % p.pid for p in _procs if p.poll() is None))
    os.replace(PIDFILE + '.new', PIDFILE)


def stop(p):
    _kill_tree(p)
    if p in _procs:
        _procs.remove(p)
    _write_pids()


def log_tail(name, n=20):
    try:
        with open(os.path.join(TMP, name + '.log'), errors='replace') as f:
            return ''.join(f.readlines()[-n:])
    except OSError:
        return ''


def run(cmd, role='load', timeout=None):
    """Run a client to completion; returns (rc, stdout, stderr)."""
    cp = subprocess.run(pinned(cmd, role), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        timeout=timeout, stdin=subprocess.DEVNULL)
    return cp.returncode, cp.stdout.decode(errors='replace'), cp.stderr.decode(errors='replace')


# ---------------------------------------------------------------------------------------------
# /proc sampling
# ---------------------------------------------------------------------------------------------

def cpu_ticks(pid):
    """(utime, stime) in clock ticks summed over pid's process tree (all threads included)."""
    u = s = 0
    for p in _descendants(pid):
        try:
            with open('/proc/%d/stat' % p) as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(')') + 2:].split()
        u += int(fields[11])
        s += int(fields[12])
    return u, s


def rss_kib(pid):
    """VmRSS summed over pid's process tree, KiB."""
    total = 0
    for p in _descendants(pid):
        try:
            with open('/proc/%d/status' % p) as f:
                for line in f:
                    if line.startswith('VmRSS:'):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def mem_pid(proc):
    """The process whose RSS we report: the process itself, or for nginx its (only) worker.

    nginx runs a master plus one worker; their RSS mostly overlaps (shared, copy-on-write
    pages), so summing them would double-count. The master's own RSS is recorded separately.
    """
    kids = [p for p in _descendants(proc.pid) if p != proc.pid]
    return kids[0] if len(kids) == 1 and 'nginx' in proc.bench_name else proc.pid


def rss_one(pid, field='VmRSS'):
    """VmRSS (or RssAnon, RssFile, ...) of one process, KiB."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid):
    n = 0
    for p in _descendants(pid):
        try:
            n += len(os.listdir('/proc/%d/fd' % p))
        except OSError:
            pass
    return n


class CpuMeter:
    """CPU seconds a process tree spends between start() and stop()."""

    def __init__(self, pid):
        self.pid = pid

    def __enter__(self):
        self.t0 = cpu_ticks(self.pid)
        return self

    def __exit__(self, *exc):
        t1 = cpu_ticks(self.pid)
        self.user = (t1[0] - self.t0[0]) / HZ
        self.sys = (t1[1] - self.t0[1]) / HZ
        self.total = self.user + self.sys


# ---------------------------------------------------------------------------------------------
# Ports and readiness
# ---------------------------------------------------------------------------------------------

def pick_ports(n):
    """n consecutive free TCP ports above the ephemeral range (so clients never collide)."""
    lo = 61000
    try:
        with open('/proc/sys/net/ipv4/ip_local_port_range') as f:
            lo = max(lo, int(f.read().split()[1]) + 1)
    except OSError:
        pass
    for _ in range(200):
        base = random.randint(lo, 65535 - n)
        ok = True
        for port in range(base, base + n):
            s = socket.socket()
            try:
                s.bind(('127.0.0.1', port))
            except OSError:
                ok = False
            finally:
                s.close()
            if not ok:
                break
        if ok:
            return list(range(base, base + n))
    raise SystemExit('bench: no %d consecutive free ports in %d-65535' % (n, lo))


def wait_port(port, proc, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError('%s exited (rc %s):\n%s' % (proc.bench_name, proc.returncode,
                                                           log_tail(proc.bench_name)))
        try:
            socket.create_connection(('127.0.0.1', port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError('%s: port %d not listening after %ss:\n%s' % (
        proc.bench_name, port, timeout, log_tail(proc.bench_name)))


def get_status(sock, path):
    """Sends one GET (Connection: close) on a connected socket, plain or TLS; returns
    (status code or None, the bytes read up to the end of the status line)."""
    sock.sendall(b'GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n'
                 % path.encode())
    data = b''
    while b'\r\n' not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    m = re.match(rb'HTTP/1\.[01] (\d{3})', data)
    return (int(m.group(1)) if m else None), data


def http_status(port, path='/', timeout=3):
    """Status code of one GET (new connection), or an error string."""
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=timeout) as s:
            status, data = get_status(s, path)
            return status if status is not None else 'bad response %r' % data[:60]
    except OSError as e:
        return 'error: %s' % e


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------

def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, 'w') as f:
        f.write(text)
    return path


def nginx_upstream(port):
    """nginx serving a 1 KiB and a 3-byte static file, keep-alive, 1 worker, no logs."""
    root = os.path.join(TMP, 'www')
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, '1k'), 'wb') as f:
        f.write((b'0123456789abcdef' * 64)[:BODY_SIZE])
    with open(os.path.join(root, 'tiny'), 'wb') as f:
        f.write(b'ok\n')
    return write('nginx-upstream.conf', NGINX_COMMON % {'name': 'up', 'wc': NGINX_CONNS} + """
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:%(port)d backlog=4096 reuseport;
        root %(root)s;
        location / { }
    }
}
""" % {'port': port, 'root': root})


NGINX_COMMON = """
%(user)s
worker_processes 1;
daemon off;
pid %(tmp)s/nginx-%%(name)s.pid;
error_log %(tmp)s/nginx-%%(name)s.error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections %%(wc)d; multi_accept on; }
""" % {'user': 'user root root;' if os.geteuid() == 0 else '', 'tmp': TMP}
NGINX_CONNS = 19000   # room for the idle test (client and upstream connections both count)


def nginx_proxy(port, upstream, single_process=False, conns=NGINX_CONNS, name=None):
    """nginx as an HTTP reverse proxy: 1 worker, proxy_pass with upstream keep-alive.

    single_process: master_process off (one process doing the work: for valgrind/strace)."""
    d = os.path.join(TMP, 'nginx-proxy-temp')
    os.makedirs(d, exist_ok=True)
    name = name or ('proxy1' if single_process else 'proxy')
    return write('nginx-%s.conf' % name, NGINX_COMMON % {'name': name, 'wc': conns} +
                 ('master_process off;\n' if single_process else '') + """
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
}
""" % {'port': port, 'up': upstream, 'd': d})


def haproxy_cfg(name, mode, pairs, maxconn):
    """HAProxy, 1 thread; pairs = [(listen_port, upstream_port)]. Defaults otherwise."""
    out = ["""global
    nbthread 1
    maxconn %d
    # HAProxy wants 2 fds per maxconn; the idle test needs maxconn > 10k but the fd hard
    # limit may be 20000: warn instead of refusing to start.
    no strict-limits
    pidfile %s/haproxy-%s.pid
defaults
    mode %s
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-request 300s
    timeout http-keep-alive 300s
""" % (maxconn, TMP, name, mode)]
    for i, (port, up) in enumerate(pairs):
        out.append("""listen l%d
    bind 127.0.0.1:%d
    server s1 127.0.0.1:%d
""" % (i, port, up))
    return write('haproxy-%s.cfg' % name, ''.join(out))


def _sa(port):
    return {'socket_address': {'address': '127.0.0.1', 'port_value': port}}


def _cluster(name, port):
    return {'name': name, 'type': 'STATIC', 'connect_timeout': '5s',
            'load_assignment': {'cluster_name': name, 'endpoints': [
                {'lb_endpoints': [{'endpoint': {'address': _sa(port)}}]}]}}


def petrel_tcp_cfg(pairs):
    listeners, clusters = [], []
    for i, (port, up) in enumerate(pairs):
        listeners.append({'name': 'l%d' % i, 'address': _sa(port), 'filter_chains': [{'filters': [{
            'name': 'envoy.filters.network.tcp_proxy',
            'typed_config': {
                '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy',
                'stat_prefix': 'l%d' % i, 'cluster': 'c%d' % i}}]}]})
        clusters.append(_cluster('c%d' % i, up))
    return write('petrel-tcp.json', json.dumps(
        {'static_resources': {'listeners': listeners, 'clusters': clusters}}, indent=1))


def petrel_http_cfg(port, up):
    hcm = {
        '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.'
                 'v3.HttpConnectionManager',
        'stat_prefix': 'bench',
        'route_config': {'name': 'local_route', 'virtual_hosts': [
            {'name': 'all', 'domains': ['*'],
             'routes': [{'match': {'prefix': '/'}, 'route': {'cluster': 'upstream'}}]}]},
        'http_filters': [{'name': 'envoy.filters.http.router', 'typed_config': {
            '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router'}}]}
    cfg = {'static_resources': {
        'listeners': [{'name': 'http', 'address': _sa(port), 'filter_chains': [{'filters': [
            {'name': 'envoy.filters.network.http_connection_manager', 'typed_config': hcm}]}]}],
        'clusters': [_cluster('upstream', up)]}}
    return write('petrel-http.json', json.dumps(cfg, indent=1))


def start_petrel(name, cfg):
    if not os.access(PETREL_BIN, os.X_OK):
        raise RuntimeError('petrel binary %s not found (build it: cmake -S . -B build && '
                           'cmake --build build, or set PETREL_BIN)' % PETREL_BIN)
    return spawn(name, [PETREL_BIN, '-c', cfg, '--concurrency', '1', '-l', 'warning'], 'proxy')


def start_haproxy(name, cfg):
    return spawn(name, ['haproxy', '-db', '-f', cfg], 'proxy')


def start_nginx(name, cfg, role):
    return spawn(name, ['nginx', '-p', TMP, '-c', cfg, '-e', os.path.join(TMP, name + '.err')],
                 role)


# ---------------------------------------------------------------------------------------------
# Load generators
# ---------------------------------------------------------------------------------------------

PTLOAD = os.path.join(TMP, 'ptload')


def build_ptload():
    cc = shutil.which('cc') or shutil.which('gcc') or shutil.which('clang')
    if not cc:
        raise SystemExit('bench: no C compiler (cc) to build bench/ptload.c')
    rc = subprocess.call([cc, '-O2', '-o', PTLOAD, os.path.join(BENCH_DIR, 'ptload.c')])
    if rc != 0:
        raise SystemExit('bench: building bench/ptload.c failed')


_UNITS = {'us': 1, 'ms': 1000, 's': 1000000}


def _lat_us(text):
    m = re.match(r'([\d.]+)(us|ms|s)$', text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def wrk(port, path, conns, seconds, close=False, scheme='http'):
    cmd = ['wrk', '-t1', '-c%d' % conns, '-d%ds' % seconds, '--latency']
    if close:
        cmd += ['-H', 'Connection: close']
    cmd.append('%s://127.0.0.1:%d%s' % (scheme, port, path))
    rc, out, err = run(cmd, timeout=seconds + 30)
    r = {'cmd': ' '.join(cmd), 'rc': rc}
    m = re.search(r'(\d+) requests in ([\d.]+)(\w+)', out)
    r['requests'] = int(m.group(1)) if m else 0
    m = re.search(r'Requests/sec:\s+([\d.]+)', out)
    r['rps'] = float(m.group(1)) if m else 0.0
    m = re.search(r'Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)', out)
    r['socket_errors'] = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r'Non-2xx or 3xx responses: (\d+)', out)
    r['non2xx'] = int(m.group(1)) if m else 0
    for q in ('50', '99'):
        m = re.search(r'^\s+%s(?:\.000)?%%\s+(\S+)' % q, out, re.M)
        r['p%s_us' % q] = _lat_us(m.group(1)) if m else None
    if rc != 0 or r['requests'] == 0:
        r['error'] = (err or out)[-400:]
    return r


def iperf(port, seconds, reverse=False):
    cmd = ['iperf3', '-c', '127.0.0.1', '-p', str(port), '-t', str(seconds), '-J']
    if reverse:
        cmd.append('-R')
    rc, out, err = run(cmd, timeout=seconds + 30)
    r = {'cmd': ' '.join(cmd), 'rc': rc}
    try:
        j = json.loads(out)
        r['gbps'] = j['end']['sum_received']['bits_per_second'] / 1e9
        r['bytes'] = j['end']['sum_received']['bytes']
        if 'error' in j:
            r['error'] = j['error']
    except (ValueError, KeyError) as e:
        r['gbps'], r['bytes'] = 0.0, 0
        r['error'] = 'iperf3: %s %s' % (e, (err or out)[-300:])
    return r


def ptload_rate(port, path, rate, seconds, conns):
    cmd = [PTLOAD, 'rate', '127.0.0.1', str(port), path, str(rate), str(seconds), str(conns), '1']
    rc, out, err = run(cmd, timeout=seconds + 30)
    try:
        r = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        r = {'error': (err or out)[-300:]}
    r['rc'] = rc
    if rc != 0 and 'error' not in r:
        r['error'] = 'errors: %s %s' % (r.get('errors'), err[-200:])
    return r


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio_median(a, b):
    """Median of per-repetition ratios a[i]/b[i] (paired by repetition)."""
    rs = [x / y for x, y in zip(a, b) if x is not None and y]
    return statistics.median(rs) if rs else None


def fmt(v, digits=None):
    if v is None:
        return 'not measured'
    if isinstance(v, str):
        return v
    if digits is None:
        digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    return '{:,.{}f}'.format(v, digits)


def fmt_ratio(v):
    return 'n/a' if v is None else '%.2f' % v


def table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: '| ' + ' | '.join(str(c).ljust(w) for c, w in zip(cells, widths)) + ' |'
    out = [line(headers), '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
    out += [line(r) for r in rows]
    return '\n'.join(out)


def machine_info():
    model = ''
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        # The commit of the tree the binary sits in (a build/ dir inside a checkout or worktree).
        rev = subprocess.run(['git', '-C', os.path.dirname(os.path.abspath(PETREL_BIN)),
                              'rev-parse', '--short', 'HEAD'],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().strip()
    except OSError:
        rev = '?'
    ver = lambda cmd: (subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                       .stdout.decode(errors='replace').splitlines() or ['?'])[0]
    built = (datetime.datetime.fromtimestamp(os.stat(PETREL_BIN).st_mtime).strftime('%Y-%m-%d %H:%M')
             if os.path.exists(PETREL_BIN) else 'missing')
    return {
        'date': datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
        'cpu': '%d x %s' % (NCPU, model), 'kernel': os.uname().release,
        'loadavg_at_start': open('/proc/loadavg').read().split()[:3],
        'git_head': rev, 'petrel_bin': PETREL_BIN, 'petrel_built': built,
        'haproxy': ver(['haproxy', '-v']), 'nginx': ver(['nginx', '-v']),
        'duration_s': DURATION, 'reps': REPS, 'pinning': (
            'proxy on CPU %s, clients and upstreams on CPU %s' % (PROXY_CPU, LOAD_CPUS)
            if PIN else 'none') + ('; nice %d' % NICE if NICE else ''),
    }


def save(suite, info, md_body, raw):
    os.makedirs(RAW_DIR, exist_ok=True)
    stamp = datetime.datetime.now().strftime('%Y-%m-%d-%H%M')
    md_path = os.path.join(RESULTS_DIR, '%s-%s.md' % (stamp, suite))
    raw_path = os.path.join(RAW_DIR, '%s-%s.json' % (stamp, suite))
    head = ['# petrel bench: %s suite, %s' % (suite, info['date']), '',
            '- machine: %s, kernel %s, load average at start %s' % (
                info['cpu'], info['kernel'], ' '.join(info['loadavg_at_start'])),
            '- petrel: `%s` (built %s, HEAD of its checkout: %s; uncommitted edits not shown)' % (
                os.path.relpath(info['petrel_bin'], ROOT) if info['petrel_bin'].startswith(ROOT)
                else info['petrel_bin'], info['petrel_built'], info['git_head']),
            '- %s; %s' % (info['haproxy'], info['nginx']),
            ('- %d repetitions x %d s per measurement, contenders interleaved; pinning: %s' % (
                info['reps'], info['duration_s'], info['pinning'])) if suite != 'instr' else
            '- counts under callgrind/strace, one run per proxy; pinning: %s' % info['pinning'],
            '- reproduce: `%sbench/run.sh %s` (raw numbers: bench/results/raw/%s)' % (
                '' if PETREL_BIN == DEFAULT_PETREL else 'PETREL_BIN=%s ' % PETREL_BIN,
                suite, os.path.basename(raw_path)), '']
    with open(md_path, 'w') as f:
        f.write('\n'.join(head) + '\n' + md_body + '\n')
    with open(raw_path, 'w') as f:
        json.dump({'info': info, 'results': raw}, f, indent=1)
    log('wrote %s' % os.path.relpath(md_path, ROOT))


def died(name, c, notes):
    """Mark a contender that exited mid-run; later measurements skip it."""
    c['dead'] = True
    msg = '%s exited during the run (rc %s); its later measurements were skipped' % (
        name, c['proc'].returncode)
    log('  %s; log tail:\n%s' % (msg, log_tail(c['proc'].bench_name)))
    notes.append(msg)
    return msg


def rotate(items, k):
    k %= len(items)
    return items[k:] + items[:k]


# ---------------------------------------------------------------------------------------------
# TCP suite
# ---------------------------------------------------------------------------------------------

def suite_tcp():
    info = machine_info()
    log('== tcp suite: petrel tcp_proxy vs HAProxy mode tcp (1 worker/thread each), '
        '%d x %ds ==' % (REPS, DURATION))
    p_iperf, p_web, pe_iperf, pe_web, ha_iperf, ha_web = pick_ports(6)
    iperf_srv = spawn('iperf3-server', ['iperf3', '-s', '-p', str(p_iperf)], 'load')
    web = start_nginx('nginx-upstream', nginx_upstream(p_web), 'load')
    wait_port(p_iperf, iperf_srv)
    wait_port(p_web, web)

    contenders, notes = {}, []
    try:
        pe = start_petrel('petrel-tcp', petrel_tcp_cfg([(pe_iperf, p_iperf), (pe_web, p_web)]))
        wait_port(pe_iperf, pe)
        wait_port(pe_web, pe)
        contenders['petrel'] = {'proc': pe, 'iperf': pe_iperf, 'web': pe_web}
    except RuntimeError as e:
        log('petrel: not measured: %s' % e)
        notes.append('petrel did not start: %s' % str(e).splitlines()[0])
    ha = start_haproxy('haproxy-tcp', haproxy_cfg('tcp', 'tcp', [(ha_iperf, p_iperf),
                                                                 (ha_web, p_web)], 4096))
    wait_port(ha_iperf, ha)
    wait_port(ha_web, ha)
    contenders['haproxy'] = {'proc': ha, 'iperf': ha_iperf, 'web': ha_web}
    time.sleep(0.5)
    names = list(contenders)
    raw = {n: {'rss_kib_start': rss_kib(c['proc'].pid),
               'rss_anon_kib_start': rss_one(c['proc'].pid, 'RssAnon')}
           for n, c in contenders.items()}
    raw['direct'] = {}
    for n in raw:
        for k in ('fwd', 'rev', 'conn'):
            raw[n][k] = []

    # A short warm-up through each path (first-touch page faults, upstream's first accept).
    for n, c in contenders.items():
        run(['wrk', '-t1', '-c10', '-d1s', '-H', 'Connection: close',
             'http://127.0.0.1:%d/tiny' % c['web']], timeout=30)

    for rep in range(REPS):
        for test in ('fwd', 'rev', 'conn'):
            order = rotate(names + (['direct'] if test != 'rev' else []), rep)
            for n in order:
                c = contenders.get(n)
                if c and c.get('dead'):
                    continue
                pid = c['proc'].pid if c else os.getpid()
                with CpuMeter(pid) as cpu:
                    if test == 'conn':
                        r = wrk(c['web'] if c else p_web, '/tiny', WRK_CONNS, DURATION, close=True)
                    else:
                        r = iperf(c['iperf'] if c else p_iperf, DURATION, reverse=test == 'rev')
                if c:
                    r['cpu_user_s'], r['cpu_sys_s'] = cpu.user, cpu.sys
                    if test == 'conn' and r['requests']:
                        r['cpu_us_per_conn'] = cpu.total * 1e6 / r['requests']
                    elif test != 'conn' and r.get('bytes'):
                        r['cpu_s_per_gib'] = cpu.total / (r['bytes'] / 2**30)
                    if c['proc'].poll() is not None:
                        r['error'] = died(n, c, notes)
                raw[n][test].append(r)
                val = ('%.2f Gbit/s' % r['gbps']) if test != 'conn' else ('%.0f conn/s' % r['rps'])
                extra = ''
                if 'cpu_us_per_conn' in r:
                    extra = ', %.1f CPU-us/conn' % r['cpu_us_per_conn']
                elif 'cpu_s_per_gib' in r:
                    extra = ', %.3f CPU-s/GiB' % r['cpu_s_per_gib']
                err = ('  ERROR: %s' % r['error'].strip()[:200]) if r.get('error') else ''
                if test == 'conn' and r.get('socket_errors'):
                    err += '  (%d socket errors)' % r['socket_errors']
                log('  rep %d %-4s %-8s %s%s%s' % (rep + 1, test, n, val, extra, err))
    for n, c in contenders.items():
        raw[n]['rss_kib_end'] = None if c.get('dead') else rss_kib(c['proc'].pid)

    def series(n, test, key):
        return [r.get(key) if not r.get('error') else None for r in raw.get(n, {}).get(test, [])]

    have_pe = 'petrel' in contenders
    rows = []
    spec = [('Throughput client->upstream, Gbit/s (iperf3)', 'fwd', 'gbps', True, 'higher'),
            ('Throughput upstream->client, Gbit/s (iperf3 -R)', 'rev', 'gbps', False, 'higher'),
            ('Proxy CPU per GiB client->upstream, CPU-s', 'fwd', 'cpu_s_per_gib', False, 'lower'),
            ('Proxy CPU per GiB upstream->client, CPU-s', 'rev', 'cpu_s_per_gib', False, 'lower'),
            ('New connections/s (wrk -c%d, Connection: close)' % WRK_CONNS, 'conn', 'rps', True,
             'higher'),
            ('Proxy CPU per connection, CPU-us', 'conn', 'cpu_us_per_conn', False, 'lower')]
    for label, test, key, direct, better in spec:
        pe_s, ha_s = series('petrel', test, key), series('haproxy', test, key)
        rat = ratio_median(pe_s, ha_s) if have_pe else None
        ok = '' if rat is None else ('yes' if (rat >= 1.0 if better == 'higher' else rat <= 1.0)
                                     else 'NO')
        rows.append([label, fmt(med(pe_s)) if have_pe else 'not measured', fmt(med(ha_s)),
                     fmt_ratio(rat), ok or '-',
                     fmt(med(series('direct', test, key))) if direct else ''])
    for label, key in (('RSS after start, KiB', 'rss_kib_start'),
                       ('  of which anonymous (heap, stacks), KiB', 'rss_anon_kib_start')):
        rows.append([label, fmt(raw['petrel'][key]) if have_pe else 'not measured',
                     fmt(raw['haproxy'][key]),
                     fmt_ratio(raw['petrel'][key] / raw['haproxy'][key])
                     if have_pe and raw['haproxy'][key] else 'n/a', '-', ''])
    headers = ['metric (median)', 'petrel', 'HAProxy', 'petrel/HAProxy', 'petrel >= HAProxy?',
               'direct (no proxy)']
    md = table(headers, rows)
    log('\n' + md + '\n')
    body = '## Results\n\n' + md + '\n\n' + TCP_NOTES
    if notes:
        body += '\nNotes from this run:\n' + ''.join('- %s\n' % x for x in notes)
    save('tcp', info, body, raw)
    for c in contenders.values():
        stop(c['proc'])
    stop(web)
    stop(iperf_srv)


TCP_NOTES = """Ratios are medians of per-repetition ratios. "petrel >= HAProxy?" reads the ratio the
right way round (throughput and conn/s: higher is better; CPU: lower is better). CPU figures are
utime+stime of the proxy process from /proc/<pid>/stat over the whole measurement, divided by
the bytes or connections it carried; they are the least noisy numbers here. The "direct" column
is the same client talking to the upstream without a proxy: the ceiling the clients allow.
"""


# ---------------------------------------------------------------------------------------------
# HTTP suite
# ---------------------------------------------------------------------------------------------

def idle_test(name, port, proc, n):
    """RSS growth per idle keep-alive connection: connected-only, then after one request each."""
    pid, mpid = proc.pid, mem_pid(proc)
    fd0, rss0 = fd_count(pid), rss_one(mpid)
    r = {'conns': n, 'rss0_kib': rss0, 'fd0': fd0}
    cl = subprocess.Popen(pinned([PTLOAD, 'idle', '127.0.0.1', str(port), '/1k', str(n)], 'load'),
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    _procs.append(cl)
    cl.bench_name = 'ptload-idle'
    try:
        line = cl.stdout.readline().split()
        if not line or line[0] != 'connected':
            raise RuntimeError('ptload idle: %s' % cl.stderr.read()[-300:])
        r['connected'] = int(line[1])
        # The kernel completes handshakes before the proxy accepts: wait for the proxy's fds.
        deadline = time.time() + 15
        while time.time() < deadline and fd_count(pid) < fd0 + 0.99 * r['connected']:
            time.sleep(0.2)
        time.sleep(1.0)
        r['fd1'], r['rss1_kib'] = fd_count(pid), rss_one(mpid)
        cl.stdin.write('request\n')
        cl.stdin.flush()
        line = cl.stdout.readline().split()
        if not line or line[0] != 'requested':
            raise RuntimeError('ptload idle requests: %s' % cl.stderr.read()[-300:])
        r['requested_ok'], r['requested_failed'] = int(line[1]), int(line[2])
        time.sleep(1.0)
        r['fd2'], r['rss2_kib'] = fd_count(pid), rss_one(mpid)
        if proc.poll() is not None:
            raise RuntimeError('%s died during the idle test:\n%s' % (name,
                                                                      log_tail(proc.bench_name)))
    except RuntimeError as e:
        r['error'] = str(e)
    finally:
        try:
            cl.stdin.write('close\n')
            cl.stdin.close()
        except OSError:
            pass
        try:
            cl.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _kill_tree(cl)
        _procs.remove(cl)
    if 'rss1_kib' in r and r.get('connected'):
        r['bytes_per_conn_connected'] = (r['rss1_kib'] - rss0) * 1024 / r['connected']
    if 'rss2_kib' in r and r.get('requested_ok'):
        r['bytes_per_conn_after_request'] = (r['rss2_kib'] - rss0) * 1024 / r['requested_ok']
    # Let the proxy notice the closes before the next test.
    deadline = time.time() + 10
    while time.time() < deadline and fd_count(pid) > fd0 + 100:
        time.sleep(0.2)
    return r


SMALL_CONNS = 1024


def baseline_small(p_pe, p_ha, p_ng, p_up):
    """RSS right after start of each proxy sized for SMALL_CONNS connections (HAProxy maxconn,
    nginx worker_connections; petrel has no such knob), no traffic. HAProxy and nginx
    preallocate per-connection tables, so the big configs the rest of the suite needs would
    overstate their baseline. Returns {name: (rss_kib, anon_kib)}."""
    out = {}
    for n, port, start in [
            ('petrel', p_pe, lambda: start_petrel('petrel-small', petrel_http_cfg(p_pe, p_up))),
            ('haproxy', p_ha, lambda: start_haproxy('haproxy-small', haproxy_cfg(
                'small', 'http', [(p_ha, p_up)], SMALL_CONNS))),
            ('nginx', p_ng, lambda: start_nginx('nginx-small', nginx_proxy(
                p_ng, p_up, conns=SMALL_CONNS, name='small'), 'proxy'))]:
        try:
            proc = start()
            wait_port(port, proc)
            time.sleep(0.5)
            mp = mem_pid(proc)
            out[n] = (rss_one(mp), rss_one(mp, 'RssAnon'))
            stop(proc)
            # The port must be free again before the real contender binds it.
            deadline = time.time() + 5
            while time.time() < deadline:
                try:
                    socket.create_connection(('127.0.0.1', port), timeout=0.2).close()
                    time.sleep(0.1)
                except OSError:
                    break
        except RuntimeError as e:
            log('%s (small config): not measured: %s' % (n, str(e).splitlines()[0]))
    return out


def suite_http():
    info = machine_info()
    log('== http suite: petrel vs HAProxy vs nginx (1 worker/thread each), %d x %ds ==' % (
        REPS, DURATION))
    p_up, p_pe, p_ha, p_ng = pick_ports(4)
    up = start_nginx('nginx-upstream', nginx_upstream(p_up), 'load')
    wait_port(p_up, up)
    if http_status(p_up, '/1k') != 200:
        raise RuntimeError('upstream nginx does not answer 200: %s' % http_status(p_up, '/1k'))

    contenders, raw, notes = {}, {}, []
    small = baseline_small(p_pe, p_ha, p_ng, p_up)
    starters = [
        ('petrel', p_pe, lambda: start_petrel('petrel-http', petrel_http_cfg(p_pe, p_up))),
        ('haproxy', p_ha, lambda: start_haproxy('haproxy-http',
                                                haproxy_cfg('http', 'http', [(p_ha, p_up)],
                                                            IDLE_CONNS + 500))),
        ('nginx', p_ng, lambda: start_nginx('nginx-proxy', nginx_proxy(p_ng, p_up), 'proxy')),
    ]
    for n, port, start in starters:
        try:
            proc = start()
            wait_port(port, proc)
        except RuntimeError as e:
            log('%s: not measured: %s' % (n, e))
            notes.append('%s did not start: %s' % (n, str(e).splitlines()[0]))
            continue
        time.sleep(0.5)
        rss_start = rss_one(mem_pid(proc))
        st = http_status(port, '/1k')
        if st != 200:
            log('%s: not measured: GET /1k through it returned %s' % (n, st))
            notes.append('%s: GET /1k through it returned %s, so it was not measured' % (n, st))
            stop(proc)
            continue
        time.sleep(0.2)
        contenders[n] = {'proc': proc, 'port': port}
        raw[n] = {'rss_kib_start': rss_start,
                  'rss_anon_kib_start': rss_one(mem_pid(proc), 'RssAnon'),
                  'rss_kib_after_first_request':
                  rss_one(mem_pid(proc)), 'rss_kib_start_all_processes': rss_kib(proc.pid),
                  'rps': [], 'lat': []}
    raw['direct'] = {'rps': [], 'lat': []}
    names = list(contenders)

    # Warm-up: fill upstream keep-alive pools and first-touch memory on every path.
    for n, c in contenders.items():
        run(['wrk', '-t1', '-c%d' % WRK_CONNS, '-d2s', 'http://127.0.0.1:%d/1k' % c['port']],
            timeout=30)

    for rep in range(REPS):
        for test in ('rps', 'lat'):
            for n in rotate(names + ['direct'], rep):
                c = contenders.get(n)
                if c and c.get('dead'):
                    continue
                port = c['port'] if c else p_up
                pid = c['proc'].pid if c else os.getpid()
                with CpuMeter(pid) as cpu:
                    if test == 'rps':
                        r = wrk(port, '/1k', WRK_CONNS, DURATION)
                        done = r['requests']
                    else:
                        r = ptload_rate(port, '/1k', RATE, DURATION, LAT_CONNS)
                        done = r.get('completed', 0)
                if c:
                    r['cpu_user_s'], r['cpu_sys_s'] = cpu.user, cpu.sys
                    if done:
                        r['cpu_us_per_req'] = cpu.total * 1e6 / done
                    if c['proc'].poll() is not None:
                        r['error'] = died(n, c, notes)
                if test == 'rps' and (r.get('socket_errors') or r.get('non2xx')):
                    r['error'] = '%d socket errors, %d non-2xx' % (r['socket_errors'], r['non2xx'])
                raw[n][test].append(r)
                if test == 'rps':
                    val = '%.0f req/s, p99 %s us' % (r['rps'], fmt(r.get('p99_us')))
                else:
                    val = 'p50 %s us, p99 %s us at %s req/s' % (
                        fmt(r.get('p50_us')), fmt(r.get('p99_us')), fmt(r.get('achieved_rps')))
                extra = (', %.1f CPU-us/req' % r['cpu_us_per_req']) if 'cpu_us_per_req' in r else ''
                err = ('  ERROR: %s' % r['error'].strip()[:200]) if r.get('error') else ''
                log('  rep %d %-4s %-8s %s%s%s' % (rep + 1, test, n, val, extra, err))

    # Idle keep-alive connections last: pools are warm, as in steady state.
    n_idle = IDLE_CONNS
    for n, (rss, anon) in small.items():
        if n in raw:
            raw[n]['small_rss_kib'], raw[n]['small_anon_kib'] = rss, anon
    for n, c in contenders.items():
        if c.get('dead'):
            continue
        r = idle_test(n, c['port'], c['proc'], n_idle)
        raw[n]['idle'] = r
        if r.get('error'):
            log('  idle %-8s ERROR: %s' % (n, r['error'][:300]))
        else:
            log('  idle %-8s %d conns: %+.0f B/conn connected, %+.0f B/conn after one request '
                '(fds %d -> %d -> %d)' % (n, r['connected'], r['bytes_per_conn_connected'],
                                          r.get('bytes_per_conn_after_request') or 0, r['fd0'],
                                          r['fd1'], r['fd2']))
    for n, c in contenders.items():
        raw[n]['rss_kib_end'] = None if c.get('dead') else rss_one(mem_pid(c['proc']))

    def series(n, test, key):
        return [r.get(key) if not r.get('error') else None for r in raw.get(n, {}).get(test, [])]

    def single(n, *keys):
        d = raw.get(n)
        for k in keys:
            d = d.get(k) if isinstance(d, dict) else None
        return d

    have = lambda n: n in contenders
    rows = []
    spec = [('Requests/s (wrk -t1 -c%d keep-alive, 1 KiB body)' % WRK_CONNS, 'rps', 'rps',
             'higher', 1.2),
            ('Proxy CPU per request, CPU-us (during the req/s run)', 'rps', 'cpu_us_per_req',
             'lower', 0.8),
            ('Latency p50, us (fixed %d req/s, %d conns, ptload)' % (RATE, LAT_CONNS), 'lat',
             'p50_us', 'lower', None),
            ('Latency p99, us (fixed %d req/s, %d conns, ptload)' % (RATE, LAT_CONNS), 'lat',
             'p99_us', 'lower', None),
            ('Latency p99, us (wrk -c%d, saturated)' % WRK_CONNS, 'rps', 'p99_us', 'lower', None),
            ('Proxy CPU per request at fixed rate, CPU-us', 'lat', 'cpu_us_per_req', 'lower',
             None)]
    for label, test, key, better, goal in spec:
        s = {n: series(n, test, key) for n in ('petrel', 'haproxy', 'nginx', 'direct')}
        r_ha = ratio_median(s['petrel'], s['haproxy']) if have('petrel') and have('haproxy') else None
        r_ng = ratio_median(s['petrel'], s['nginx']) if have('petrel') and have('nginx') else None
        if goal is None or r_ha is None:
            g = '-' if goal is None else 'not measured'
        else:
            met = r_ha >= goal if better == 'higher' else r_ha <= goal
            g = '%s %.1fx HAProxy: %s' % ('>=' if better == 'higher' else '<=', goal,
                                          'met' if met else 'NOT met')
        rows.append([label] + [fmt(med(s[n])) if have(n) else 'not measured'
                               for n in ('petrel', 'haproxy', 'nginx')] +
                    [fmt_ratio(r_ha), fmt_ratio(r_ng), g,
                     fmt(med(s['direct'])) if 'cpu' not in key else ''])
    for label, keys, goal in [
            ('RSS per idle keep-alive conn, connected, no request, bytes',
             ('idle', 'bytes_per_conn_connected'), 1024),
            ('RSS per idle keep-alive conn, after one request, bytes',
             ('idle', 'bytes_per_conn_after_request'), 1024),
            ('RSS after start, sized for %d conns (no traffic), KiB' % SMALL_CONNS,
             ('small_rss_kib',), 4096),
            ('  of which anonymous (heap, stacks; the rest is mapped files), KiB',
             ('small_anon_kib',), None),
            ('RSS after start, sized for %d+ conns as in this run, KiB' % IDLE_CONNS,
             ('rss_kib_start',), None),
            ('RSS at the end (after all tests), KiB', ('rss_kib_end',), None)]:
        v = {n: single(n, *keys) if have(n) else None for n in ('petrel', 'haproxy', 'nginx')}
        rh = v['petrel'] / v['haproxy'] if v['petrel'] is not None and v['haproxy'] else None
        rn = v['petrel'] / v['nginx'] if v['petrel'] is not None and v['nginx'] else None
        if goal is None:
            g = '-'
        elif v['petrel'] is None:
            g = 'not measured'
        else:
            g = '<= %s: %s' % ('1 KiB' if goal == 1024 else '4 MiB',
                               'met' if v['petrel'] <= goal else 'NOT met')
        rows.append([label] + [fmt(v[n]) if have(n) else 'not measured'
                               for n in ('petrel', 'haproxy', 'nginx')] +
                    [fmt_ratio(rh), fmt_ratio(rn), g, ''])
    headers = ['metric (median)', 'petrel', 'HAProxy', 'nginx', 'petrel/HAProxy',
               'petrel/nginx', 'goal (issue 3)', 'direct (no proxy)']
    md = table(headers, rows)
    log('\n' + md + '\n')
    body = '## Results\n\n' + md + '\n\n' + HTTP_NOTES % {'n': n_idle}
    if notes:
        body += '\nNotes from this run:\n' + ''.join('- %s\n' % x for x in notes)
    idle_lines = []
    for n in names:
        r = raw[n].get('idle', {})
        if 'fd2' in r:
            idle_lines.append('- %s: %d connections; proxy fds %d -> %d (connected) -> %d '
                              '(after one request each); RSS %s -> %s -> %s KiB' % (
                                  n, r['connected'], r['fd0'], r['fd1'], r['fd2'],
                                  fmt(r['rss0_kib']), fmt(r['rss1_kib']), fmt(r['rss2_kib'])))
    if idle_lines:
        body += '\nIdle-connection test detail:\n' + '\n'.join(idle_lines) + '\n'
    save('http', info, body, raw)
    for c in contenders.values():
        stop(c['proc'])
    stop(up)


HTTP_NOTES = """Ratios are medians of per-repetition ratios (RSS rows: one measurement each).
Every proxy runs 1 worker (petrel --concurrency 1, HAProxy nbthread 1, nginx worker_processes 1)
in front of the same upstream (nginx, 1 worker, serving a 1 KiB static file, keep-alive); nginx
as proxy uses proxy_pass with an upstream keep-alive pool. petrel does Envoy's default
per-request work (x-request-id UUID, x-forwarded-proto); HAProxy and nginx in their default
configs add no headers. CPU figures are utime+stime of the proxy's process tree
(/proc/<pid>/stat) over the run divided by the requests completed. Fixed-rate latency comes from
bench/ptload.c (open loop: latency counts from each request's due time, so queueing shows up;
first second discarded). Idle connections: %(n)d connections opened to each proxy and held; RSS
growth divided by the number of connections, first with nothing sent, then after one
request/response on each (at most 32 in flight). RSS is VmRSS of the process serving traffic
(for nginx the worker; its master adds ~7 MiB of mostly shared pages). Baseline RSS depends on
how HAProxy and nginx are sized (they preallocate connection tables), hence the two rows: the
10k-connection sizing this suite needs, and a small one. The "direct" column is the client
talking to the upstream without a proxy.
"""


# ---------------------------------------------------------------------------------------------
# instr suite: deterministic per-request costs (callgrind instructions, strace syscalls)
# ---------------------------------------------------------------------------------------------

INSTR_RATE, INSTR_SECONDS, INSTR_CONNS = 500, 4, 10


def _callgrind_total(path):
    """Total Ir of a callgrind dump (the larger of its `summary:` and `totals:` lines)."""
    best = None
    with open(path) as f:
        for line in f:
            if line.startswith(('totals:', 'summary:')):
                v = int(line.split()[1])
                best = v if best is None else max(best, v)
    return best


def _top_functions(path, per, n=15):
    """The n functions with the most self instructions, as (Ir per unit, name)."""
    rc, out, err = run(['callgrind_annotate', '--auto=no', '--threshold=95', path], timeout=120)
    rows = []
    for line in out.splitlines():
        m = re.match(r'\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S.*)$', line)
        if m and 'PROGRAM TOTALS' not in line:
            name = m.group(2).split(' [')[0]
            name = re.sub(r'^.*?:', '', name) if ':' in name else name
            rows.append((int(m.group(1).replace(',', '')) / per, name))
    merged = {}
    for v, name in rows:   # one function can appear under several source files
        merged[name] = merged.get(name, 0) + v
    return sorted(((v, k) for k, v in merged.items()), reverse=True)[:n]


def _strace_counts(path):
    """{syscall: calls} from an `strace -c` summary."""
    counts = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 5 and parts[0].replace('.', '').isdigit() and parts[-1] != 'total':
                    calls = parts[3]
                    if calls.isdigit():
                        counts[parts[-1]] = int(calls)
    except OSError:
        pass
    return counts


def _fixed_load(port, close, rate=INSTR_RATE, seconds=INSTR_SECONDS):
    args = [PTLOAD, 'rate', '127.0.0.1', str(port), '/1k' if not close else '/tiny', str(rate),
            str(seconds), str(INSTR_CONNS), '0'] + (['close'] if close else [])
    rc, out, err = run(args, timeout=seconds + 120)
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError('ptload failed: %s' % (err or out)[-300:])


def instr_one(name, cmd, port, close):
    """Ir and syscalls per request for one proxy command listening on port."""
    r = {}
    # 1. callgrind: instrumentation only while the fixed load runs.
    cg = os.path.join(TMP, 'callgrind.%s' % name)
    p = spawn('cg-' + name, ['valgrind', '--tool=callgrind', '--instr-atstart=no',
                             '--callgrind-out-file=' + cg] + cmd, 'proxy')
    try:
        wait_port(port, p, timeout=60)
        _fixed_load(port, close, rate=100, seconds=1)
        run(['callgrind_control', '-i', 'on', str(p.pid)], timeout=60)
        lr = _fixed_load(port, close)
        run(['callgrind_control', '-i', 'off', str(p.pid)], timeout=60)
        run(['callgrind_control', '-d', str(p.pid)], timeout=60)
        dumps = sorted(f for f in os.listdir(TMP) if f.startswith('callgrind.%s.' % name))
        if not dumps:
            raise RuntimeError('%s: callgrind wrote no dump:\n%s' % (name, log_tail('cg-' + name)))
        path = os.path.join(TMP, dumps[-1])
        total = _callgrind_total(path)
        r['requests'] = lr['completed']
        r['load_errors'] = lr['errors']
        r['ir_per_req'] = total / lr['completed'] if total and lr['completed'] else None
        r['top'] = _top_functions(path, lr['completed']) if name.startswith('petrel') else []
    finally:
        stop(p)
    # 2. strace -c, attached while the same fixed load runs (on the unmodified process).
    p = spawn('st-' + name, cmd, 'proxy')
    try:
        wait_port(port, p)
        _fixed_load(port, close, rate=200, seconds=1)
        st = os.path.join(TMP, 'strace.%s' % name)
        tr = subprocess.Popen(['strace', '-f', '-c', '-o', st, '-p', str(p.pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _procs.append(tr)
        tr.bench_name = 'strace'
        time.sleep(1.0)
        lr = _fixed_load(port, close)
        time.sleep(0.5)
        tr.send_signal(signal.SIGINT)
        tr.wait(timeout=30)
        _procs.remove(tr)
        counts = _strace_counts(st)
        # epoll_wait calls while idle (before/after the load) are noise: small at this rate.
        r['syscalls_per_req'] = (sum(counts.values()) / lr['completed']) if counts else None
        r['syscalls'] = {k: v / lr['completed'] for k, v in sorted(
            counts.items(), key=lambda kv: -kv[1])}
    finally:
        stop(p)
    return r


def hist_record_ir():
    """Instructions per histogram value recorded (pt_hist_record), counted by callgrind on
    bench/hist_record.c built from the stats sources: only its measured loop is collected."""
    cc = shutil.which('cc') or shutil.which('gcc') or shutil.which('clang')
    if not cc:
        raise RuntimeError('no C compiler')
    exe = os.path.join(TMP, 'hist_record')
    srcs = [os.path.join(BENCH_DIR, 'hist_record.c')] + [
        os.path.join(ROOT, 'proxy', f) for f in ('stats.c', 'histogram.c', 'hash.c')]
    rc, out, err = run([cc, '-O2', '-std=gnu11', '-I', ROOT, '-o', exe] + srcs +
                       ['-lpthread', '-lm', '-ljansson'], timeout=120)
    if rc != 0:
        raise RuntimeError('building bench/hist_record.c failed: %s' % err[-300:])
    cg = os.path.join(TMP, 'callgrind.hist_record')
    rc, out, err = run(['valgrind', '--tool=callgrind', '--toggle-collect=record_many*',
                        '--callgrind-out-file=' + cg, exe], timeout=300)
    m = re.search(r'values (\d+) recorded (\d+)', out)
    if rc != 0 or not m:
        raise RuntimeError('hist_record failed: %s' % (err or out)[-300:])
    total = _callgrind_total(cg)
    return total / int(m.group(1)) if total else None


def syscall_table(by_proxy):
    """Syscalls per unit, every syscall that any proxy makes at least 0.05 times per unit."""
    names = [n for n in ('petrel', 'haproxy', 'nginx') if n in by_proxy]
    calls = set()
    for n in names:
        calls |= {s for s, v in by_proxy[n].get('syscalls', {}).items() if v >= 0.05}
    order = sorted(calls, key=lambda s: -max(by_proxy[n]['syscalls'].get(s, 0) for n in names))
    rows = [[s] + ['%.2f' % by_proxy[n]['syscalls'].get(s, 0) for n in names] for s in order]
    rows.append(['total'] + ['%.2f' % (by_proxy[n].get('syscalls_per_req') or 0) for n in names])
    return table(['syscall'] + names, rows)


def suite_instr():
    for tool in ('valgrind', 'callgrind_control', 'callgrind_annotate', 'strace'):
        if not shutil.which(tool):
            raise RuntimeError('the instr suite needs %s (apt-get install valgrind strace)' % tool)
    info = machine_info()
    log('== instr suite: user-space instructions (callgrind) and syscalls (strace) per request, '
        '%d requests at %d req/s over %d connections ==' % (INSTR_RATE * INSTR_SECONDS,
                                                            INSTR_RATE, INSTR_CONNS))
    p_up, p_pe_h, p_ha_h, p_ng_h, p_pe_t, p_ha_t = pick_ports(6)
    up = start_nginx('nginx-upstream', nginx_upstream(p_up), 'load')
    wait_port(p_up, up)
    pe_cmd = lambda cfg: [PETREL_BIN, '-c', cfg, '--concurrency', '1', '-l', 'warning']
    cases = [
        ('http', 'petrel', pe_cmd(petrel_http_cfg(p_pe_h, p_up)), p_pe_h, False),
        ('http', 'haproxy', ['haproxy', '-db', '-f', haproxy_cfg('ihttp', 'http', [(p_ha_h, p_up)],
                                                                 4096)], p_ha_h, False),
        ('http', 'nginx', ['nginx', '-p', TMP, '-c', nginx_proxy(p_ng_h, p_up, True), '-e',
                           os.path.join(TMP, 'nginx-proxy1.err')], p_ng_h, False),
        ('tcp', 'petrel', pe_cmd(petrel_tcp_cfg([(p_pe_t, p_up)])), p_pe_t, True),
        ('tcp', 'haproxy', ['haproxy', '-db', '-f', haproxy_cfg('itcp', 'tcp', [(p_ha_t, p_up)],
                                                                4096)], p_ha_t, True),
    ]
    raw = {'http': {}, 'tcp': {}}
    for kind, n, cmd, port, close in cases:
        try:
            r = instr_one('%s-%s' % (n, kind), cmd, port, close)
        except RuntimeError as e:
            log('  %s %s: not measured: %s' % (kind, n, str(e)[:300]))
            continue
        raw[kind][n] = r
        log('  %-4s %-8s %s Ir/%s, %.1f syscalls/%s' % (
            kind, n, fmt(r.get('ir_per_req')), 'req' if kind == 'http' else 'conn',
            r.get('syscalls_per_req') or 0, 'req' if kind == 'http' else 'conn'))

    def val(kind, n, key):
        return raw[kind].get(n, {}).get(key)

    def rat(a, b):
        return fmt_ratio(a / b) if a is not None and b else 'n/a'

    rows = []
    for kind, label in (('http', 'per HTTP request (keep-alive, 1 KiB body)'),
                        ('tcp', 'per TCP connection (tcp_proxy, one HTTP request, then close)')):
        for key, what in (('ir_per_req', 'user-space instructions (callgrind Ir)'),
                          ('syscalls_per_req', 'syscalls (strace -c)')):
            pe, ha, ng = (val(kind, n, key) for n in ('petrel', 'haproxy', 'nginx'))
            rows.append(['%s %s' % (what, label), fmt(pe), fmt(ha),
                         fmt(ng) if kind == 'http' else '-', rat(pe, ha),
                         rat(pe, ng) if kind == 'http' else '-'])
    try:
        raw['hist_record_ir'] = hist_record_ir()
        log('  histogram record: %s Ir/value' % fmt(raw['hist_record_ir']))
    except RuntimeError as e:
        log('  histogram record: not measured: %s' % str(e)[:300])
        raw['hist_record_ir'] = None
    rows.append(['user-space instructions (callgrind Ir) per histogram value recorded '
                 '(pt_hist_record, bench/hist_record.c, its loop included)',
                 fmt(raw['hist_record_ir']), '-', '-', '-', '-'])
    md = table(['metric', 'petrel', 'HAProxy', 'nginx', 'petrel/HAProxy', 'petrel/nginx'], rows)
    log('\n' + md + '\n')
    body = ['## Results', '', md, '', INSTR_NOTES % {
        'n': INSTR_RATE * INSTR_SECONDS, 'rate': INSTR_RATE, 'conns': INSTR_CONNS}]
    for kind in ('http', 'tcp'):
        r = raw[kind].get('petrel')
        if not r:
            continue
        unit = 'request' if kind == 'http' else 'connection'
        body += ['', '### petrel %s: top functions by self instructions per %s' % (kind, unit), '',
                 table(['Ir per %s' % unit, 'function'],
                       [[fmt(v), '`%s`' % f] for v, f in r.get('top', [])]), '',
                 '### %s: syscalls per %s' % (kind, unit), '',
                 syscall_table(raw[kind])]
    save('instr', info, '\n'.join(body) + '\n', raw)
    stop(up)


INSTR_NOTES = """Both figures are counts, not times, so they barely move with machine load: the most
reproducible numbers in this directory. Each proxy (1 worker) gets %(n)d requests at a fixed
%(rate)d req/s over %(conns)d connections from bench/ptload.c, once under valgrind --tool=callgrind
(instrumentation switched on only for the load) and once natively with `strace -f -c` attached.
Instructions are user space only (kernel work shows up as syscalls); they include the event
loop's own wake-ups at this rate. nginx runs with master_process off here (one process).
The histogram row is petrel's pt_hist_record alone: bench/hist_record.c records 200,000
latency-like values in a loop, and only that loop is counted (its own increment, compare and
load per value included).
"""


def _external_suite(module):
    """Suites that live in their own file (bench/suite_<name>.py) and reuse this module's
    helpers: imported only when asked for, so one suite's imports cannot break the others."""
    def run_suite():
        sys.path.insert(0, BENCH_DIR)
        __import__(module).run(sys.modules[__name__])
    return run_suite


SUITES = {
    'tcp': suite_tcp,
    'http': suite_http,
    'instr': suite_instr,
    'tls': _external_suite('suite_tls'),
    'resilience': _external_suite('suite_resilience'),
    'abuse': _external_suite('suite_abuse'),
    'h2': _external_suite('suite_h2'),
    'tracing': _external_suite('suite_tracing'),
}
ALL_SUITES = ['tcp', 'http', 'tls', 'resilience', 'abuse']


def main(argv):
    suites = argv or ['all']
    for s in suites:
        if s not in SUITES and s != 'all':
            raise SystemExit('usage: bench/run.sh [%s|all]...' % '|'.join(SUITES))
    expanded = []
    for s in suites:
        for t in (ALL_SUITES if s == 'all' else [s]):
            if t not in expanded:
                expanded.append(t)
    suites = expanded
    build_ptload()
    log('bench: temp dir %s; pinning: %s' % (TMP, 'proxy on CPU %s, load on CPU %s' % (
        PROXY_CPU, LOAD_CPUS) if PIN else 'off'))
    failed = False
    for s in suites:
        try:
            SUITES[s]()
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            log('bench: %s suite failed: %s' % (s, e))
            failed = True
        finally:
            for p in list(_procs):
                stop(p)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
