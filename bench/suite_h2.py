"""h2 suite: petrel vs HAProxy vs nginx over HTTP/2 (1 worker/thread each). Run by bench.py
(`bench/run.sh h2`), which passes itself in as `b`; see bench/README.md, "What each suite
measures".

1. Requests/s and proxy CPU per request: h2load -c H2_CONNS -m H2_STREAMS (h2c, prior
   knowledge) for BENCH_DURATION s through petrel (codec_type AUTO downstream; an h2c cluster:
   HttpProtocolOptions explicit_http_config http2_protocol_options), HAProxy (`bind ... proto h2`,
   `server ... proto h2`) and nginx (`listen ... http2`; HTTP/1.1 upstream with keep-alive, as
   nginx 1.22 cannot proxy to h2). The upstream is one nginx answering `200 ok` from the config
   (no file I/O) on two ports: h2c (`listen ... http2`, prior knowledge) for petrel and HAProxy,
   HTTP/1.1 for nginx as proxy.
2. RSS per idle h2 connection: H2_IDLE_CONNS connections that send the client preface and an
   empty SETTINGS, read the proxy's SETTINGS, acknowledge it, see their own acknowledged, then
   sit idle; the proxy's RSS growth divided by their number.
3. gRPC unary: h2load POSTing a gRPC message (5-byte frame header + GRPC_REQ_LEN bytes,
   content-type application/grpc, te: trailers) through petrel and HAProxy to bench/grpc_echo.c
   (compiled here), a single-threaded nghttp2 h2c server answering each request with a fixed
   gRPC message and `grpc-status: 0` trailers.
"""
import json
import os
import re
import resource
import shutil
import socket
import struct
import subprocess
import time
import urllib.request

LABEL = {'petrel': 'petrel', 'haproxy': 'HAProxy', 'nginx': 'nginx', 'direct': 'direct'}
NAMES = ['petrel', 'haproxy', 'nginx']
H2_CONNS = 50                    # h2load -c
H2_STREAMS = 10                  # h2load -m: concurrent streams per connection
H2_IDLE_CONNS = int(os.environ.get('BENCH_H2_IDLE_CONNS', '2000'))
GRPC_REQ_LEN = 32                # gRPC request payload, bytes (the answer carries 32 too)
GRPC_PATH = '/bench.Echo/Unary'
PATH = '/tiny'
HPO = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions'
HCM_TYPE = ('type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.'
            'HttpConnectionManager')
ROUTER_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router'
PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'


# ---------------------------------------------------------------------------------------------
# The gRPC upstream and h2load
# ---------------------------------------------------------------------------------------------

def build_grpc_echo(b):
    cc = shutil.which('cc') or shutil.which('gcc') or shutil.which('clang')
    out = os.path.join(b.TMP, 'grpc_echo')
    pc = subprocess.run(['pkg-config', '--cflags', '--libs', 'libnghttp2'],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    flags = pc.stdout.decode().split() if pc.returncode == 0 else ['-lnghttp2']
    cp = subprocess.run([cc or 'cc', '-O2', '-o', out, os.path.join(b.BENCH_DIR, 'grpc_echo.c')]
                        + flags, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if cp.returncode != 0:
        raise RuntimeError('building bench/grpc_echo.c failed (needs the nghttp2 headers: '
                           'apt-get install libnghttp2-dev pkg-config):\n%s'
                           % cp.stdout.decode()[-600:])
    return out


def grpc_body(b):
    """The request h2load sends: one length-prefixed, uncompressed gRPC message."""
    path = os.path.join(b.TMP, 'grpc-request.bin')
    payload = bytes((0x61 + i % 26) for i in range(GRPC_REQ_LEN))
    with open(path, 'wb') as f:
        f.write(b'\x00' + struct.pack('>I', len(payload)) + payload)
    return path


def h2load_cmd(port, path, body=None, conns=H2_CONNS, streams=H2_STREAMS, seconds=None,
               requests=None):
    cmd = ['h2load', '-t1', '-c%d' % conns, '-m%d' % streams]
    cmd += ['-D%d' % seconds] if seconds else ['-n%d' % requests]
    if body:
        cmd += ['-d', body, '-H', 'content-type: application/grpc', '-H', 'te: trailers']
    return cmd + ['http://127.0.0.1:%d%s' % (port, path)]


def h2load(b, port, path, seconds, body=None):
    """h2load at saturation for `seconds`: requests, req/s, failures, mean request time."""
    cmd = h2load_cmd(port, path, body, seconds=seconds)
    rc, out, err = b.run(cmd, timeout=seconds + 60)
    return parse_h2load(cmd, rc, out, err)


def parse_h2load(cmd, rc, out, err):
    r = {'cmd': ' '.join(cmd), 'rc': rc}
    m = re.search(r'finished in ([\d.]+)s, ([\d.]+) req/s', out)
    r['seconds'], r['rps'] = (float(m.group(1)), float(m.group(2))) if m else (None, 0.0)
    m = re.search(r'requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, '
                  r'(\d+) failed, (\d+) errored, (\d+) timeout', out)
    keys = ('total', 'started', 'done', 'succeeded', 'failed', 'errored', 'timeout')
    for k, v in zip(keys, m.groups() if m else [0] * 7):
        r[k] = int(v)
    r['requests'] = r['succeeded']
    m = re.search(r'status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx', out)
    r['status_2xx'] = int(m.group(1)) if m else 0
    r['non2xx'] = sum(int(x) for x in m.groups()[1:]) if m else 0
    m = re.search(r'time for request:\s+(\S+)\s+(\S+)\s+(\S+)', out)
    r['mean_ms'] = b_lat_ms(m.group(3)) if m else None
    r['max_ms'] = b_lat_ms(m.group(2)) if m else None
    bad = r['failed'] + r['errored'] + r['timeout'] + r['non2xx']
    if rc != 0 or r['succeeded'] == 0 or bad:
        r['error'] = '%d succeeded, %d failed, %d errored, %d timeout, %d non-2xx%s' % (
            r['succeeded'], r['failed'], r['errored'], r['timeout'], r['non2xx'],
            ('; ' + (err or out).strip()[-300:]) if rc != 0 or r['succeeded'] == 0 else '')
    return r


def b_lat_ms(text):
    m = re.match(r'([\d.]+)(us|ms|s)$', text)
    return float(m.group(1)) * {'us': 1e-3, 'ms': 1.0, 's': 1e3}[m.group(2)] if m else None


def h2_check(b, port, path, body=None, n=200):
    """None when n requests over 2 connections all succeed with a 2xx, else what went wrong."""
    cmd = h2load_cmd(port, path, body, conns=2, streams=4, requests=n)
    try:
        rc, out, err = b.run(cmd, timeout=30)
    except subprocess.TimeoutExpired:
        return 'h2load -n%d timed out' % n
    r = parse_h2load(cmd, rc, out, err)
    return r.get('error')


def grpc_trailers(b, port, body):
    """grpc-status/grpc-message trailers of one gRPC call (nghttp -v), or None."""
    if not shutil.which('nghttp'):
        return None
    try:
        rc, out, err = b.run(['nghttp', '-v', '-d', body, '-H', 'content-type: application/grpc',
                              '-H', 'te: trailers', 'http://127.0.0.1:%d%s' % (port, GRPC_PATH)],
                             timeout=15)
    except subprocess.TimeoutExpired:
        return 'nghttp timed out'
    got = re.findall(r'recv \(stream_id=\d+\) (grpc-status|grpc-message): (\S*)', out)
    return ', '.join('%s: %s' % kv for kv in got) or 'no grpc-status received'


def sched_wait(pid):
    """Seconds pid's process tree spent runnable but waiting for a CPU (schedstat, 2nd field):
    how much the rest of the machine got in its way."""
    total = 0
    for p in _tree(pid):
        try:
            tids = os.listdir('/proc/%d/task' % p)
        except OSError:
            continue
        for tid in tids:
            try:
                with open('/proc/%d/task/%s/schedstat' % (p, tid)) as f:
                    total += int(f.read().split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return total / 1e9


_tree = None     # b._descendants, set by run()


def petrel_counters(admin, cluster):
    """The cluster's upstream request counters from petrel's admin /stats ({} if unreachable)."""
    out = {}
    try:
        with urllib.request.urlopen('http://127.0.0.1:%d/stats' % admin, timeout=5) as f:
            text = f.read().decode(errors='replace')
    except OSError:
        return out
    for line in text.splitlines():
        k, _, v = line.partition(': ')
        if k.startswith('cluster.%s.upstream_rq_' % cluster) and v.strip().isdigit():
            out[k.split('.', 2)[2]] = int(v)
    return out


def children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------

def upstream_cfg(b, p_h2, p_h1):
    """nginx, 1 worker: `200 ok` from the config on an h2c port and on an HTTP/1.1 port."""
    return b.write('nginx-h2-upstream.conf', b.NGINX_COMMON % {'name': 'h2up', 'wc': 4096} + """
http {
    access_log off;
    default_type text/plain;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    http2_max_concurrent_streams 128;
    server {
        listen 127.0.0.1:%(h2)d http2 backlog=4096;
        location / { return 200 "ok\\n"; }
    }
    server {
        listen 127.0.0.1:%(h1)d backlog=4096;
        location / { return 200 "ok\\n"; }
    }
}
""" % {'h2': p_h2, 'h1': p_h1})


def _hcm(prefix, cluster):
    return {'name': 'envoy.filters.network.http_connection_manager', 'typed_config': {
        '@type': HCM_TYPE, 'stat_prefix': prefix, 'codec_type': 'AUTO',
        'route_config': {'name': 'local_route', 'virtual_hosts': [
            {'name': 'all', 'domains': ['*'],
             'routes': [{'match': {'prefix': '/'}, 'route': {'cluster': cluster}}]}]},
        'http_filters': [{'name': 'envoy.filters.http.router',
                          'typed_config': {'@type': ROUTER_TYPE}}]}}


def _h2_cluster(b, name, port):
    c = b._cluster(name, port)
    c['typed_extension_protocol_options'] = {HPO: {
        '@type': 'type.googleapis.com/' + HPO,
        'explicit_http_config': {'http2_protocol_options': {}}}}
    return c


def petrel_cfg(b, port, grpc_port, admin, up, grpc_up):
    """Two listeners: HTTP (h2c or HTTP/1, codec AUTO) -> the nginx h2c port, and the same for
    gRPC -> grpc_echo; both clusters h2c."""
    listeners = [{'name': n, 'address': b._sa(p), 'filter_chains': [{'filters': [_hcm(n, c)]}]}
                 for n, p, c in (('h2', port, 'upstream'), ('grpc', grpc_port, 'grpc'))]
    cfg = {'admin': {'address': b._sa(admin)},
           'static_resources': {'listeners': listeners,
                                'clusters': [_h2_cluster(b, 'upstream', up),
                                             _h2_cluster(b, 'grpc', grpc_up)]}}
    return b.write('petrel-h2.json', json.dumps(cfg, indent=1))


HAPROXY_CFG = """global
    nbthread 1
    maxconn %(maxconn)d
    no strict-limits
    pidfile %(tmp)s/haproxy-h2.pid
defaults
    mode http
    # Share upstream h2 connections between client connections, as petrel's per-worker pools
    # do (the default, safe, keeps the first request of each client connection on its own).
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-request 300s
    timeout http-keep-alive 300s
listen h2
    bind 127.0.0.1:%(port)d proto h2
    server s1 127.0.0.1:%(up)d proto h2
listen grpc
    bind 127.0.0.1:%(grpc_port)d proto h2
    server s1 127.0.0.1:%(grpc_up)d proto h2
"""


def haproxy_cfg(b, port, grpc_port, up, grpc_up, maxconn):
    return b.write('haproxy-h2.cfg', HAPROXY_CFG % {
        'maxconn': maxconn, 'tmp': b.TMP, 'port': port, 'grpc_port': grpc_port, 'up': up,
        'grpc_up': grpc_up})


def nginx_cfg(b, port, up, conns):
    """nginx as proxy: h2c downstream (`listen ... http2`), HTTP/1.1 keep-alive upstream."""
    d = os.path.join(b.TMP, 'nginx-proxy-temp')
    os.makedirs(d, exist_ok=True)
    return b.write('nginx-h2-proxy.conf', b.NGINX_COMMON % {'name': 'h2proxy', 'wc': conns} + """
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
        # One upstream request per connection at a time: room for every stream in flight
        # (-c x -m), or nginx would close and reopen upstream connections all the time.
        keepalive 1024;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:%(port)d http2 backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
""" % {'port': port, 'up': up, 'd': d})


# ---------------------------------------------------------------------------------------------
# Idle h2 connections
# ---------------------------------------------------------------------------------------------

def _frames(buf):
    """Complete frames at the start of buf: ([(type, flags)], bytes consumed)."""
    out, off = [], 0
    while len(buf) - off >= 9:
        n = int.from_bytes(buf[off:off + 3], 'big')
        if len(buf) - off < 9 + n:
            break
        out.append((buf[off + 3], buf[off + 4]))
        off += 9 + n
    return out, off


def h2_handshake(port, timeout=10):
    """A connection that has sent the preface and an empty SETTINGS, read the server's
    SETTINGS, acknowledged it and seen its own acknowledged. Returns the socket."""
    s = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    s.sendall(PREFACE + b'\x00\x00\x00\x04\x00\x00\x00\x00\x00')
    buf, got_settings, got_ack = b'', False, False
    while not (got_settings and got_ack):
        chunk = s.recv(65536)
        if not chunk:
            s.close()
            raise OSError('closed during the SETTINGS exchange')
        buf += chunk
        frames, used = _frames(buf)
        buf = buf[used:]
        for typ, flags in frames:
            if typ == 4 and flags & 1:
                got_ack = True
            elif typ == 4:
                got_settings = True
                s.sendall(b'\x00\x00\x00\x04\x01\x00\x00\x00\x00')
            elif typ == 7:
                s.close()
                raise OSError('GOAWAY during the SETTINGS exchange')
    return s


def idle_h2(b, name, port, proc, n):
    """RSS growth per idle h2 connection (preface and SETTINGS exchanged, nothing else)."""
    pid, mpid = proc.pid, b.mem_pid(proc)
    fd0, rss0 = b.fd_count(pid), b.rss_one(mpid)
    r = {'conns': n, 'rss0_kib': rss0, 'fd0': fd0}
    socks = []
    try:
        t0 = time.time()
        for _ in range(n):
            socks.append(h2_handshake(port))
        r['handshake_s'] = time.time() - t0
        r['connected'] = len(socks)
        deadline = time.time() + 15
        while time.time() < deadline and b.fd_count(pid) < fd0 + 0.99 * n:
            time.sleep(0.2)
        time.sleep(1.0)
        r['fd1'], r['rss1_kib'] = b.fd_count(pid), b.rss_one(mpid)
        r['rss1_anon_kib'] = b.rss_one(mpid, 'RssAnon')
        # Still there? Every connection must be open and quiet (no GOAWAY, no close).
        lost = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(65536) == b'':
                    lost += 1
            except BlockingIOError:
                pass
            except OSError:
                lost += 1
        r['lost_while_idle'] = lost
        if proc.poll() is not None:
            raise RuntimeError('%s died during the idle test:\n%s' % (name,
                                                                      b.log_tail(proc.bench_name)))
    except (OSError, RuntimeError) as e:
        r['error'] = '%s after %d connections' % (e, len(socks))
    finally:
        for s in socks:
            s.close()
    if 'rss1_kib' in r and r.get('connected'):
        r['bytes_per_conn'] = (r['rss1_kib'] - rss0) * 1024 / r['connected']
    deadline = time.time() + 10
    while time.time() < deadline and b.fd_count(pid) > fd0 + 100:
        time.sleep(0.2)
    return r


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

def run(b):
    global _tree
    _tree = b._descendants
    if not shutil.which('h2load'):
        raise RuntimeError('the h2 suite needs h2load (apt-get install nghttp2-client)')
    info = b.machine_info()
    info['h2load'] = (subprocess.run(['h2load', '--version'], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT).stdout.decode().strip()
                      .splitlines() or ['?'])[0]
    b.log('== h2 suite: petrel vs HAProxy vs nginx over HTTP/2 (1 worker/thread each), h2load '
          '-c%d -m%d, %d x %ds; %d idle h2 connections; gRPC unary ==' % (
              H2_CONNS, H2_STREAMS, b.REPS, b.DURATION, H2_IDLE_CONNS))
    echo = build_grpc_echo(b)
    body = grpc_body(b)
    (p_up2, p_up1, p_grpc, pe, pe_g, pe_adm, ha, ha_g, ng) = b.pick_ports(9)
    up = b.start_nginx('nginx-h2-upstream', upstream_cfg(b, p_up2, p_up1), 'load')
    gup = b.spawn('grpc-echo', [echo, str(p_grpc)], 'load')
    b.wait_port(p_up2, up)
    b.wait_port(p_up1, up)
    b.wait_port(p_grpc, gup)
    for port, path, bd, what in ((p_up2, PATH, None, 'nginx h2c upstream'),
                                 (p_grpc, GRPC_PATH, body, 'grpc_echo')):
        bad = h2_check(b, port, path, bd)
        if bad:
            raise RuntimeError('%s does not answer h2load: %s' % (what, bad))
    if b.http_status(p_up1, PATH) != 200:
        raise RuntimeError('HTTP/1.1 upstream: %s' % b.http_status(p_up1, PATH))

    conns = H2_IDLE_CONNS + 1000
    starters = [
        ('petrel', pe, pe_g, lambda: b.start_petrel('petrel-h2', petrel_cfg(
            b, pe, pe_g, pe_adm, p_up2, p_grpc))),
        ('haproxy', ha, ha_g, lambda: b.start_haproxy('haproxy-h2', haproxy_cfg(
            b, ha, ha_g, p_up2, p_grpc, conns))),
        ('nginx', ng, None, lambda: b.start_nginx('nginx-h2-proxy', nginx_cfg(b, ng, p_up1, conns),
                                                  'proxy')),
    ]
    contenders, raw, notes = {}, {}, []
    for n, port, gport, start in starters:
        try:
            proc = start()
            b.wait_port(port, proc)
        except RuntimeError as e:
            b.log('%s: not measured: %s' % (n, e))
            notes.append('%s did not start: %s' % (n, str(e).splitlines()[0]))
            continue
        time.sleep(0.3)
        raw[n] = {'rss_kib_start': b.rss_one(b.mem_pid(proc)), 'rps': [], 'grpc': []}
        bad = h2_check(b, port, PATH)
        if bad:
            b.log('%s: not measured: h2load through it: %s' % (n, bad))
            notes.append('%s: h2load through it failed (%s), so it was not measured' % (n, bad))
            b.stop(proc)
            continue
        c = {'proc': proc, 'port': port, 'grpc': gport}
        if gport:
            bad = h2_check(b, gport, GRPC_PATH, body)
            tr = grpc_trailers(b, gport, body)
            raw[n]['grpc_trailers'] = tr
            if bad:
                b.log('%s: gRPC not measured: %s' % (n, bad))
                notes.append('%s: gRPC through it failed (%s), so it was not measured' % (n, bad))
                c['grpc'] = None
            elif tr:
                b.log('%s: one gRPC call through it received %s' % (n, tr))
        contenders[n] = c
    raw['direct'] = {'rps': [], 'grpc': []}
    names = list(contenders)

    # Idle h2 connections on the fresh processes (only the checks above have run through them),
    # and again after the load runs, when their heaps and pools are warm.
    idle_round(b, contenders, raw, notes, 'idle_fresh')

    # Warm-up: upstream connections and first-touch memory on every path.
    for n, c in contenders.items():
        b.run(h2load_cmd(c['port'], PATH, seconds=2), timeout=60)
        if c['grpc']:
            b.run(h2load_cmd(c['grpc'], GRPC_PATH, body, seconds=1), timeout=60)

    for rep in range(b.REPS):
        for test in ('rps', 'grpc'):
            for n in b.rotate(names + ['direct'], rep):
                c = contenders.get(n)
                if c and (c.get('dead') or (test == 'grpc' and not c['grpc'])):
                    continue
                if c:
                    port = c['port'] if test == 'rps' else c['grpc']
                else:
                    port = p_up2 if test == 'rps' else p_grpc
                pid = c['proc'].pid if c else os.getpid()
                upstream = up if test == 'rps' else gup
                wait0, cl0 = sched_wait(pid), children_cpu()
                cl_name = 'upstream' if test == 'rps' else 'grpc'
                st0 = petrel_counters(pe_adm, cl_name) if n == 'petrel' else {}
                with b.CpuMeter(upstream.pid) as ucpu, b.CpuMeter(pid) as cpu:
                    r = h2load(b, port, PATH if test == 'rps' else GRPC_PATH, b.DURATION,
                               body if test == 'grpc' else None)
                secs = r.get('seconds') or b.DURATION
                r['client_cpu_pct'] = 100.0 * (children_cpu() - cl0) / secs
                r['upstream_cpu_pct'] = 100.0 * ucpu.total / secs
                if c:
                    r['cpu_user_s'], r['cpu_sys_s'] = cpu.user, cpu.sys
                    r['proxy_cpu_pct'] = 100.0 * cpu.total / secs
                    r['proxy_wait_pct'] = 100.0 * (sched_wait(pid) - wait0) / secs
                    if r['requests']:
                        r['cpu_us_per_req'] = cpu.total * 1e6 / r['requests']
                    if c['proc'].poll() is not None:
                        r['error'] = b.died(n, c, notes)
                if st0:
                    # h2load counts a trailers-only gRPC error (e.g. petrel's own reply to a
                    # circuit-breaker overflow) as a 2xx: check what reached the upstream.
                    st1 = petrel_counters(pe_adm, cl_name)
                    d = {k: st1.get(k, 0) - v for k, v in st0.items()}
                    r['petrel_upstream'] = d
                    if (d.get('upstream_rq_pending_overflow') or
                            d.get('upstream_rq_2xx', 0) < r['requests']) and not r.get('error'):
                        r['error'] = ('petrel forwarded %d requests with a 2xx answer for %d '
                                      'that h2load counted as succeeded (overflow %d)' % (
                                          d.get('upstream_rq_2xx', 0), r['requests'],
                                          d.get('upstream_rq_pending_overflow', 0)))
                raw[n][test].append(r)
                val = '%.0f req/s, mean %s ms' % (r['rps'], b.fmt(r.get('mean_ms')))
                extra = ((', %.1f CPU-us/req, proxy CPU %.0f%% (waiting %.0f%%)' % (
                    r['cpu_us_per_req'], r['proxy_cpu_pct'], r['proxy_wait_pct']))
                    if 'cpu_us_per_req' in r else '')
                extra += ', h2load CPU %.0f%%, upstream CPU %.0f%%' % (r['client_cpu_pct'],
                                                                       r['upstream_cpu_pct'])
                err = ('  ERROR: %s' % r['error'].strip()[:300]) if r.get('error') else ''
                b.log('  rep %d %-4s %-8s %s%s%s' % (rep + 1, test, n, val, extra, err))
                if r.get('error') and n == 'petrel':
                    notes.append('petrel, rep %d, %s: %s (`%s`)' % (rep + 1, test,
                                                                   r['error'].strip()[:300],
                                                                   r['cmd']))

    idle_round(b, contenders, raw, notes, 'idle')
    for n, c in contenders.items():
        raw[n]['rss_kib_end'] = None if c.get('dead') else b.rss_one(b.mem_pid(c['proc']))
        if n == 'petrel' and c['proc'].poll() is None:
            raw[n]['log_tail'] = b.log_tail(c['proc'].bench_name, 40)
    report(b, info, raw, contenders, notes)
    for c in contenders.values():
        b.stop(c['proc'])
    b.stop(gup)
    b.stop(up)


def idle_round(b, contenders, raw, notes, key):
    when = 'fresh' if key == 'idle_fresh' else 'after the load'
    for n, c in contenders.items():
        if c.get('dead'):
            continue
        r = idle_h2(b, n, c['port'], c['proc'], H2_IDLE_CONNS)
        raw[n][key] = r
        if r.get('error'):
            b.log('  idle (%s) %-8s ERROR: %s' % (when, n, r['error'][:300]))
            notes.append('%s: idle test (%s): %s' % (n, when, r['error'][:300]))
        else:
            b.log('  idle (%s) %-8s %d h2 conns: %+.0f B/conn (fds %d -> %d, RSS %d -> %d KiB, '
                  '%d lost while idle, handshakes took %.1f s)' % (
                      when, n, r['connected'], r['bytes_per_conn'], r['fd0'], r['fd1'],
                      r['rss0_kib'], r['rss1_kib'], r['lost_while_idle'], r['handshake_s']))
            if r['lost_while_idle']:
                notes.append('%s closed %d of the idle h2 connections (%s) within ~2 s' % (
                    n, r['lost_while_idle'], when))
        if c['proc'].poll() is not None:
            b.died(n, c, notes)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def report(b, info, raw, contenders, notes):
    have = lambda n: n in contenders

    def series(n, test, key):
        return [r.get(key) if not r.get('error') else None for r in raw.get(n, {}).get(test, [])]

    def cell(n, test, key):
        if not raw.get(n, {}).get(test):
            return '' if n == 'direct' else 'not measured'
        return b.fmt(b.med(series(n, test, key)))

    def per_rep(a, c):
        rs = ['%.2f' % (x / y) for x, y in zip(a, c) if x is not None and y]
        return ('per-rep ' + ', '.join(rs)) if len(rs) > 1 else ''

    rows = []
    spec = [
        ('Requests/s (h2load -c%d -m%d, h2c; nginx: HTTP/1.1 upstream)' % (H2_CONNS, H2_STREAMS),
         'rps', 'rps', 'higher', 1.2, True),
        ('Proxy CPU per request, CPU-us', 'rps', 'cpu_us_per_req', 'lower', 0.8, False),
        ('  proxy CPU use during the run, % of one CPU', 'rps', 'proxy_cpu_pct', None, None,
         False),
        ('  proxy runnable but waiting for a CPU (other work), % of the run', 'rps',
         'proxy_wait_pct', None, None, False),
        ('  h2load CPU, % of one CPU (shares its CPU with the upstream)', 'rps',
         'client_cpu_pct', None, None, True),
        ('  upstream nginx CPU, % of one CPU', 'rps', 'upstream_cpu_pct', None, None, True),
        ('  mean request time, ms (h2load, at saturation)', 'rps', 'mean_ms', 'lower', None,
         True),
        ('gRPC unary calls/s (h2load -c%d -m%d, POST %d+5 bytes, grpc_echo upstream)' % (
            H2_CONNS, H2_STREAMS, GRPC_REQ_LEN), 'grpc', 'rps', 'higher', 1.2, True),
        ('Proxy CPU per gRPC call, CPU-us', 'grpc', 'cpu_us_per_req', 'lower', 0.8, False),
        ('  proxy CPU use during the run, % of one CPU', 'grpc', 'proxy_cpu_pct', None, None,
         False),
        ('  proxy runnable but waiting for a CPU (other work), % of the run', 'grpc',
         'proxy_wait_pct', None, None, False),
        ('  h2load CPU, % of one CPU (shares its CPU with the upstream)', 'grpc',
         'client_cpu_pct', None, None, True),
        ('  grpc_echo CPU, % of one CPU', 'grpc', 'upstream_cpu_pct', None, None, True),
        ('  mean call time, ms (h2load, at saturation)', 'grpc', 'mean_ms', 'lower', None, True),
    ]
    for label, test, key, better, goal, direct in spec:
        s = {n: series(n, test, key) for n in NAMES}
        r_ha = b.ratio_median(s['petrel'], s['haproxy']) if have('petrel') else None
        r_ng = (b.ratio_median(s['petrel'], s['nginx'])
                if have('petrel') and test == 'rps' else None)
        if goal is None:
            g = '-'
        elif r_ha is None:
            g = 'not measured'
        else:
            met = r_ha >= goal if better == 'higher' else r_ha <= goal
            g = '%s %.1fx HAProxy: %s' % ('>=' if better == 'higher' else '<=', goal,
                                          'met' if met else 'NOT met')
        note = per_rep(s['petrel'], s['haproxy']) if better and r_ha is not None else ''
        rows.append([label, cell('petrel', test, key), cell('haproxy', test, key),
                     cell('nginx', test, key) if test == 'rps' else '-',
                     b.fmt_ratio(r_ha) if better else '-',
                     b.fmt_ratio(r_ng) if better and test == 'rps' else '-', g,
                     cell('direct', test, key) if direct else '', note])

    def idle(n, key):
        r = raw.get(n, {}).get(key, {})
        return None if r.get('error') else r.get('bytes_per_conn')

    for key, label in (('idle_fresh', 'RSS per idle h2 connection, fresh process, bytes'),
                       ('idle', 'RSS per idle h2 connection, after the load runs, bytes')):
        v = {n: idle(n, key) for n in NAMES}
        rh = v['petrel'] / v['haproxy'] if v['petrel'] is not None and v['haproxy'] else None
        rn = v['petrel'] / v['nginx'] if v['petrel'] is not None and v['nginx'] else None
        if v['petrel'] is None or v['haproxy'] is None:
            g = 'not measured'
        else:
            g = '<= HAProxy: %s' % ('met' if v['petrel'] <= v['haproxy'] else 'NOT met')
        rows.append(['%s (%d conns, preface + SETTINGS exchanged)' % (label, H2_IDLE_CONNS)] +
                    [b.fmt(v[n]) if have(n) else 'not measured' for n in NAMES] +
                    [b.fmt_ratio(rh), b.fmt_ratio(rn), g, '', 'one measurement'])
    for label, key in (('RSS after start, KiB', 'rss_kib_start'),
                       ('RSS at the end (after all tests), KiB', 'rss_kib_end')):
        vals = {n: raw.get(n, {}).get(key) for n in NAMES}
        rows.append([label] + [b.fmt(vals[n]) if have(n) else 'not measured' for n in NAMES]
                    + ['-', '-', '-', '', 'HAProxy and nginx sized for %d connections'
                       % (H2_IDLE_CONNS + 1000)])
    headers = ['metric (median)', 'petrel', 'HAProxy', 'nginx', 'petrel/HAProxy',
               'petrel/nginx', 'goal (issue 10)', 'direct (no proxy)', 'notes']
    md = b.table(headers, rows)
    b.log('\n' + md + '\n')

    run_notes = []
    for test, what in (('rps', 'requests/s'), ('grpc', 'gRPC calls/s')):
        busy = {n: (b.med(series(n, test, 'proxy_cpu_pct')) or 0) +
                (b.med(series(n, test, 'proxy_wait_pct')) or 0)
                for n in NAMES if raw.get(n, {}).get(test)}
        if busy and max(busy.values()) < 90:
            run_notes.append('%s: no proxy was the bottleneck (CPU use + waiting for a CPU: %s '
                             'of one CPU); the load CPU (h2load and the upstream, with the '
                             "machine's other work) was, so these rows compare how each proxy "
                             "adds latency more than what it can carry. Compare the CPU per "
                             'request.' % (what, ', '.join('%s %.0f%%' % (LABEL[n], v)
                                                          for n, v in busy.items())))
    waits = {n: b.med(series(n, t, 'proxy_wait_pct')) for n in NAMES for t in ('rps',)
             if raw.get(n, {}).get('rps')}
    if waits and max(v or 0 for v in waits.values()) >= 20:
        run_notes.append('The proxies were runnable but waiting for their CPU (taken by other '
                         'work on this shared machine) %s of the requests/s runs: the '
                         'requests/s rows follow the CPU share each proxy got as much as its '
                         'own cost. CPU per request depends on it less, but still moves with '
                         'batching (fewer requests per wake-up cost more each).' % ', '.join(
                             '%s %s%%' % (LABEL[n], b.fmt(v)) for n, v in waits.items()))
    tr = {n: raw[n].get('grpc_trailers') for n in ('petrel', 'haproxy') if raw.get(n)}
    tr = {n: t for n, t in tr.items() if t}
    if tr:
        run_notes.append('One gRPC call (nghttp -v) through each proxy received the trailers '
                         '%s.' % '; '.join('%s: %s' % (LABEL[n], t) for n, t in tr.items()))
    idle_lines = []
    for n, key in ((n, k) for k in ('idle_fresh', 'idle') for n in NAMES):
        r = raw.get(n, {}).get(key, {})
        if 'rss1_kib' in r:
            idle_lines.append('- %s, %s: %d connections in %.1f s; proxy fds %d -> %d; RSS %s -> '
                              '%s KiB (anonymous %s KiB after); %d closed by the proxy while '
                              'idle' % (
                                  LABEL[n], 'fresh' if key == 'idle_fresh' else 'after the load',
                                  r['connected'], r['handshake_s'], r['fd0'], r['fd1'],
                                  b.fmt(r['rss0_kib']), b.fmt(r['rss1_kib']),
                                  b.fmt(r['rss1_anon_kib']), r['lost_while_idle']))
    body = '## Results\n\n' + md + '\n\n' + H2_NOTES % {
        'c': H2_CONNS, 'm': H2_STREAMS, 'idle': H2_IDLE_CONNS, 'grpc': GRPC_REQ_LEN,
        'pin': ('Pinning: the proxy under test on CPU %s; h2load, the nginx upstream and '
                'grpc_echo on CPU %s.' % (b.PROXY_CPU, b.LOAD_CPUS))
        if b.PIN else 'Pinning: off.', 'h2load': info['h2load']}
    notes_all = run_notes + notes
    if notes_all:
        body += '\nNotes from this run:\n' + ''.join('- %s\n' % x for x in notes_all)
    if idle_lines:
        body += '\nIdle-connection test detail:\n' + '\n'.join(idle_lines) + '\n'
    b.save('h2', info, body, raw)


H2_NOTES = """\
Ratios are medians of per-repetition ratios (the RSS row: one measurement); within a repetition
the contenders run back to back, in an order that rotates between repetitions. Every proxy runs
1 worker (petrel --concurrency 1, HAProxy nbthread 1, nginx worker_processes 1). The client is
%(h2load)s, one thread, %(c)d connections with up to %(m)d concurrent streams each, h2c with
prior knowledge, for the whole measurement (no warm-up inside it; a 2 s warm-up per path runs
before the first repetition). CPU per request is the proxy's utime+stime (/proc/<pid>/stat, its
process tree; for nginx the master too) over the run divided by the requests that succeeded.
"direct" is h2load against the upstream without a proxy: the ceiling the client and upstream
allow on their CPU.

- Upstream for requests/s: one nginx (1 worker) answering `200 ok\\n` from its config (no file
  I/O), on an h2c port (`listen ... http2`, prior knowledge; nginx 1.22 serves it to h2load and
  curl --http2-prior-knowledge) for petrel and HAProxy, and on an HTTP/1.1 port for nginx as
  proxy (proxy_pass, upstream keep-alive 1024), since nginx 1.22 cannot proxy over h2. nginx's
  row therefore measures h2 downstream translated to HTTP/1.1 upstream, petrel's and HAProxy's
  h2 on both sides.
- petrel: codec_type AUTO (the client preface selects HTTP/2), clusters with
  HttpProtocolOptions explicit_http_config http2_protocol_options (h2c), defaults otherwise
  (Envoy's per-request work: x-request-id, x-forwarded-proto). HAProxy: `bind ... proto h2`,
  `server ... proto h2`, `http-reuse always` (upstream connections shared between client
  connections, as petrel's pool does).
- gRPC unary: h2load POSTs one %(grpc)d-byte message in a gRPC frame (content-type
  application/grpc, te: trailers) to bench/grpc_echo.c, a single-threaded nghttp2 h2c server
  built at run time, which answers each call with HEADERS, one DATA frame (a %(grpc)d-byte
  message) and trailers `grpc-status: 0`, `grpc-message: OK`. nginx is not in this test (it
  cannot proxy h2 upstream; grpc_pass would be its gRPC module, not the proxy compared here).
- Idle h2 connections: %(idle)d connections opened one after the other; each sends the client
  preface and an empty SETTINGS, reads the proxy's SETTINGS, acknowledges it, waits for the
  acknowledgement of its own, then sends nothing. RSS is VmRSS of the process serving traffic
  (for nginx the worker), 1 s after the proxy holds them all, minus before. Measured twice:
  on the fresh processes (only 200 check requests have passed through them), and after all
  load runs, when memory freed by the load (streams, buffers) is there to be reused.

%(pin)s

The machine is shared: other work runs on both CPUs, so absolute figures move between runs;
CPU per request moves least, and the ratios compare measurements taken back to back. The
"waiting for a CPU" rows (schedstat) say how much other work took the proxy's CPU.
For petrel, each run's upstream counters (admin /stats) are checked against h2load's count:
h2load takes a trailers-only gRPC error (petrel's own reply to a circuit-breaker overflow, for
one) for a success.
"""
