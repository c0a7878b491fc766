"""tls suite: petrel vs HAProxy with TLS (1 worker/thread each). Run by bench.py (`bench/run.sh
tls`), which passes itself in as `b`; see bench/README.md, "What each suite measures".

1. Full handshakes/s: bench/tlsload.c (a new connection, a full TLS handshake and one request
   with `Connection: close` per iteration, never resuming) against a TLS-terminating proxy;
   with the proxy's CPU-us per handshake.
1b. Resumed handshakes/s: the same with libssl as the client offering, on each reconnect, the
   newest ticket of its previous connection, each ticket once (tlsload -r, as wrk's reconnects
   do); with the share of reconnects the proxy let resume.
2. Keep-alive TLS requests/s: wrk over https, 50 connections; with the proxy's CPU-us/request.
3. Sidecar-to-sidecar mTLS: client --HTTP--> A --mTLS--> B --HTTP--> nginx, at a fixed rate
   (ptload): p50/p99, and the latency added over the direct client -> nginx path.

The certificates are made at run time in the temp dir (ECDSA P-256, by the openssl CLI, through
tests/integration/certs.py); no key is stored anywhere else.
"""
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time

LABEL = {'petrel': 'petrel', 'haproxy': 'HAProxy', 'direct': 'direct'}
HS_CONNS = 50            # concurrent connections of the handshake client (as wrk -c50)
FRONTEND = 'spiffe://cluster.local/ns/default/sa/frontend'
BACKEND = 'spiffe://cluster.local/ns/default/sa/backend'
SERVER_DNS = ['backend.test', 'localhost']
HCM_TYPE = ('type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.'
            'HttpConnectionManager')
ROUTER_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router'
DOWNSTREAM_TLS = ('type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.'
                  'DownstreamTlsContext')
UPSTREAM_TLS = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext'


# ---------------------------------------------------------------------------------------------
# Certificates and the handshake client
# ---------------------------------------------------------------------------------------------

def make_pki(b):
    """CA, server and client certificates in TMP/pki; returns {name: path}."""
    if not shutil.which('openssl'):
        raise RuntimeError('the tls suite needs the openssl CLI (apt-get install openssl)')
    sys.path.insert(0, os.path.join(b.ROOT, 'tests', 'integration'))
    import certs
    d = os.path.join(b.TMP, 'pki')
    os.makedirs(d, exist_ok=True)
    pki = certs.Pki(d)
    ca = pki.ca('ca', 'petrel bench root')
    srv = pki.issue(ca, 'server', uris=[BACKEND], dns=SERVER_DNS, ips=['127.0.0.1'],
                    cn='backend.test')
    cli = pki.issue(ca, 'client', uris=[FRONTEND], cn='frontend')
    p = {'ca': ca.cert, 'server_crt': srv.cert, 'server_key': srv.key,
         'client_crt': cli.cert, 'client_key': cli.key,
         # HAProxy wants certificate and key in one file.
         'server_pem': pki.chain_file(srv, name='server.pem'),
         'client_pem': pki.chain_file(cli, name='client.pem')}
    for name, c in (('server.pem', srv), ('client.pem', cli)):
        with open(os.path.join(d, name), 'a') as f:
            f.write(c.key_pem)
    return p


def build_tlsload(b):
    cc = shutil.which('cc') or shutil.which('gcc') or shutil.which('clang')
    out = os.path.join(b.TMP, 'tlsload')
    cp = subprocess.run([cc or 'cc', '-O2', '-o', out, os.path.join(b.BENCH_DIR, 'tlsload.c'),
                         '-lssl', '-lcrypto'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if cp.returncode != 0:
        raise RuntimeError('building bench/tlsload.c failed (needs the OpenSSL headers: '
                           'apt-get install libssl-dev):\n%s' % cp.stdout.decode()[-600:])
    return out


def tlsload(b, exe, port, seconds, path='/tiny', openssl=False, resume=False):
    """Full handshakes at saturation. With more than one load CPU, one client process per
    CPU (up to 4), so the client side scales; their results are summed. openssl: use libssl
    as the client (tlsload -o) instead of tlsload's own minimal TLS 1.3 client; resume: libssl
    offering each slot's newest ticket once (tlsload -r)."""
    flag = ['-r'] if resume else ['-o'] if openssl else []
    nproc = 1 if flag else max(1, min(4, b.NCPU - 1))
    per = [HS_CONNS // nproc + (1 if i < HS_CONNS % nproc else 0) for i in range(nproc)]
    procs = []
    for conns in per:
        cmd = b.pinned([exe] + flag +
                       ['127.0.0.1', str(port), path, str(conns), str(seconds), '1'], 'load')
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
        p.bench_name = 'tlsload'
        b._procs.append(p)
        procs.append(p)
    outs = []
    try:
        for p in procs:
            try:
                o, e = p.communicate(timeout=seconds + 60)
            except subprocess.TimeoutExpired:
                b.stop(p)
                o, e = b'', b'timed out'
            outs.append((p.returncode, o.decode(errors='replace'), e.decode(errors='replace')))
    finally:
        for p in procs:
            if p in b._procs:
                b.stop(p)
    r = {'cmd': 'tlsload %s127.0.0.1 %d %s %s %d 1' % (''.join(f + ' ' for f in flag), port, path,
                                                        '+'.join(map(str, per)), seconds),
         'procs': []}
    for rc, out, err in outs:
        try:
            j = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            r['error'] = 'tlsload: %s' % (err or out or 'no output')[-300:]
            continue
        j['rc'] = rc
        r['procs'].append(j)
        if err.strip():
            r.setdefault('stderr', err.strip()[-300:])
    ps = r['procs']
    if not ps:
        return r
    for k in ('completed', 'completed_total', 'rate', 'errors', 'bad_status', 'resumed',
              'tickets', 'client_cpu_s'):
        r[k] = sum(p[k] for p in ps)
    for k in ('p50_us', 'p99_us', 'hs_p50_us', 'hs_p99_us'):
        r[k] = b.med([p[k] for p in ps])
    r['client_cpu_pct'] = 100.0 * r['client_cpu_s'] / (seconds * len(ps))
    for k in ('protocol', 'cipher', 'group'):
        r[k] = ps[0][k]
    if 'error' not in r and (r['completed'] == 0 or r['errors'] or r['bad_status']):
        r['error'] = '%d completed, %d errors, %d non-200%s' % (
            r['completed'], r['errors'], r['bad_status'],
            (': ' + r['stderr']) if r.get('stderr') else '')
    return r


def wrk_https(b, port, path, conns, seconds):
    """wrk over https, keep-alive: b.wrk's fields, and socket errors or non-2xx as an error."""
    r = b.wrk(port, path, conns, seconds, scheme='https')
    if 'error' not in r and (r['socket_errors'] or r['non2xx']):
        r['error'] = '%d socket errors, %d non-2xx' % (r['socket_errors'], r['non2xx'])
    return r


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------

def _tls_cert(crt, key):
    return {'certificate_chain': {'filename': crt}, 'private_key': {'filename': key}}


def _hcm(prefix, cluster):
    return {'name': 'envoy.filters.network.http_connection_manager', 'typed_config': {
        '@type': HCM_TYPE, 'stat_prefix': prefix,
        'route_config': {'name': 'local_route', 'virtual_hosts': [
            {'name': 'all', 'domains': ['*'],
             'routes': [{'match': {'prefix': '/'}, 'route': {'cluster': cluster}}]}]},
        'http_filters': [{'name': 'envoy.filters.http.router',
                          'typed_config': {'@type': ROUTER_TYPE}}]}}


def _petrel_cfg(b, name, port, admin, chain_tls, cluster):
    chain = {'filters': [_hcm(name, cluster['name'])]}
    if chain_tls:
        chain['transport_socket'] = {'name': 'envoy.transport_sockets.tls',
                                     'typed_config': chain_tls}
    cfg = {'admin': {'address': b._sa(admin)},
           'static_resources': {'listeners': [{'name': name, 'address': b._sa(port),
                                               'filter_chains': [chain]}],
                                'clusters': [cluster]}}
    return b.write('petrel-%s.json' % name, json.dumps(cfg, indent=1))


def petrel_term_cfg(b, pki, port, admin, up):
    """TLS termination (server certificate only) -> HTTP to the upstream."""
    tls = {'@type': DOWNSTREAM_TLS, 'common_tls_context': {
        'tls_certificates': [_tls_cert(pki['server_crt'], pki['server_key'])]}}
    return _petrel_cfg(b, 'term', port, admin, tls, b._cluster('upstream', up))


def petrel_sidecar_a_cfg(b, pki, port, admin, b_port):
    """Outbound sidecar: plain HTTP in; mTLS to B with the client certificate, B's certificate
    verified against the CA and its SPIFFE URI SAN."""
    c = b._cluster('mesh_backend', b_port)
    c['transport_socket'] = {'name': 'envoy.transport_sockets.tls', 'typed_config': {
        '@type': UPSTREAM_TLS, 'sni': 'backend.test', 'common_tls_context': {
            'tls_certificates': [_tls_cert(pki['client_crt'], pki['client_key'])],
            'validation_context': {
                'trusted_ca': {'filename': pki['ca']},
                'match_typed_subject_alt_names': [
                    {'san_type': 'URI', 'matcher': {'exact': BACKEND}}]}}}}
    return _petrel_cfg(b, 'sidecar-a', port, admin, None, c)


def petrel_sidecar_b_cfg(b, pki, port, admin, up):
    """Inbound sidecar: mTLS in (client certificate required, verified against the CA and its
    SPIFFE URI SAN) -> HTTP to the upstream."""
    tls = {'@type': DOWNSTREAM_TLS, 'require_client_certificate': True, 'common_tls_context': {
        'tls_certificates': [_tls_cert(pki['server_crt'], pki['server_key'])],
        'validation_context': {
            'trusted_ca': {'filename': pki['ca']},
            'match_typed_subject_alt_names': [
                {'san_type': 'URI', 'matcher': {'exact': FRONTEND}}]}}}
    return _petrel_cfg(b, 'sidecar-b', port, admin, tls, b._cluster('upstream', up))


HAPROXY_HEAD = """global
    nbthread 1
    maxconn 4096
    pidfile %(tmp)s/haproxy-%(name)s.pid
defaults
    mode http
    # Share idle upstream connections between client connections, as petrel's per-worker
    # pools do. With the default (safe), the first request of every client connection
    # opens a new upstream connection, which the handshake test would then also measure.
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-request 300s
    timeout http-keep-alive 300s
"""


def haproxy_tls_cfg(b, name, body):
    return b.write('haproxy-%s.cfg' % name, HAPROXY_HEAD % {'tmp': b.TMP, 'name': name} + body)


def haproxy_term_cfg(b, pki, port, up):
    return haproxy_tls_cfg(b, 'term', """listen term
    bind 127.0.0.1:%d ssl crt %s
    server s1 127.0.0.1:%d
""" % (port, pki['server_pem'], up))


def haproxy_sidecar_a_cfg(b, pki, port, b_port):
    # HAProxy 2.6 cannot match URI SANs; verifyhost checks B's DNS SAN instead.
    return haproxy_tls_cfg(b, 'sidecar-a', """listen sidecar_a
    bind 127.0.0.1:%d
    server b 127.0.0.1:%d ssl crt %s ca-file %s verify required sni str(backend.test) \
        verifyhost backend.test
""" % (port, b_port, pki['client_pem'], pki['ca']))


def haproxy_sidecar_b_cfg(b, pki, port, up):
    return haproxy_tls_cfg(b, 'sidecar-b', """listen sidecar_b
    bind 127.0.0.1:%d ssl crt %s ca-file %s verify required
    server s1 127.0.0.1:%d
""" % (port, pki['server_pem'], pki['ca'], up))


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

def https_get(b, port, path, ctx, timeout=5):
    """(status, version, cipher) of one GET over TLS with ctx; raises OSError/ssl.SSLError."""
    with socket.create_connection(('127.0.0.1', port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname='backend.test') as s:
            status, _ = b.get_status(s, path)
            return status, s.version(), s.cipher()[0]


def check_mtls(b, pki, port):
    """B must serve the mesh client certificate and refuse a client without one. Returns
    (problem or None, 'version cipher' seen with the client certificate)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki['ca'])
    ctx.load_cert_chain(pki['client_crt'], pki['client_key'])
    try:
        st, ver, cipher = https_get(b, port, '/tiny', ctx)
    except (OSError, ssl.SSLError) as e:
        return 'with the client certificate: %s' % e, None
    if st != 200:
        return 'with the client certificate: status %s' % st, None
    anon = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anon.load_verify_locations(pki['ca'])
    try:
        st2, _, _ = https_get(b, port, '/tiny', anon)
        if st2 is not None:
            return 'a client without a certificate got status %s' % st2, None
    except (OSError, ssl.SSLError):
        pass
    return None, '%s %s' % (ver, cipher)


def petrel_stats(port, prefix):
    """{name: int} of the admin /stats lines starting with prefix ({} if unreachable)."""
    try:
        c = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
        c.request('GET', '/stats')
        body = c.getresponse().read().decode(errors='replace')
        c.close()
    except OSError:
        return {}
    out = {}
    for line in body.splitlines():
        name, sep, val = line.rpartition(': ')
        if sep and name.startswith(prefix) and val.strip().isdigit():
            out[name[len(prefix):]] = int(val)
    return out


# ---------------------------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------------------------

def run(b):
    for tool in ('wrk', 'haproxy', 'nginx'):
        if not shutil.which(tool):
            raise RuntimeError('the tls suite needs %s' % tool)
    info = b.machine_info()
    info['openssl'] = ' '.join(subprocess.run(
        ['openssl', 'version'], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT).stdout.decode().split()[:2])     # "OpenSSL 3.0.x"
    b.log('== tls suite: petrel vs HAProxy with TLS (1 worker/thread each), %d x %ds ==' % (
        b.REPS, b.DURATION))
    pki = make_pki(b)
    exe = build_tlsload(b)
    (p_up, pe_term, pe_term_adm, ha_term, pe_a, pe_a_adm, pe_b, pe_b_adm, ha_a,
     ha_b) = b.pick_ports(10)
    up = b.start_nginx('nginx-upstream', b.nginx_upstream(p_up), 'load')
    b.wait_port(p_up, up)
    if b.http_status(p_up, '/1k') != 200:
        raise RuntimeError('upstream nginx does not answer 200: %s' % b.http_status(p_up, '/1k'))

    notes, raw = [], {'petrel': {}, 'haproxy': {}, 'direct': {}}
    term, pairs = {}, {}

    def start(name, starter, port):
        try:
            p = starter()
            b.wait_port(port, p)
            return p
        except RuntimeError as e:
            b.log('%s: not measured: %s' % (name, e))
            notes.append('%s did not start: %s' % (name, str(e).splitlines()[0]))
            return None

    # TLS termination (tests 1 and 2).
    p = start('petrel (termination)', lambda: b.start_petrel(
        'petrel-term', petrel_term_cfg(b, pki, pe_term, pe_term_adm, p_up)), pe_term)
    if p:
        term['petrel'] = {'proc': p, 'port': pe_term}
    p = start('HAProxy (termination)', lambda: b.start_haproxy(
        'haproxy-term', haproxy_term_cfg(b, pki, ha_term, p_up)), ha_term)
    if p:
        term['haproxy'] = {'proc': p, 'port': ha_term}
    # Sidecar pairs (test 3): B first, so A's first connection finds it.
    pb = start('petrel sidecar B', lambda: b.start_petrel(
        'petrel-sidecar-b', petrel_sidecar_b_cfg(b, pki, pe_b, pe_b_adm, p_up)), pe_b)
    pa = pb and start('petrel sidecar A', lambda: b.start_petrel(
        'petrel-sidecar-a', petrel_sidecar_a_cfg(b, pki, pe_a, pe_a_adm, pe_b)), pe_a)
    if pa:
        pairs['petrel'] = {'procs': [pa, pb], 'port': pe_a, 'b_port': pe_b}
    hb = start('HAProxy sidecar B', lambda: b.start_haproxy(
        'haproxy-sidecar-b', haproxy_sidecar_b_cfg(b, pki, ha_b, p_up)), ha_b)
    ha = hb and start('HAProxy sidecar A', lambda: b.start_haproxy(
        'haproxy-sidecar-a', haproxy_sidecar_a_cfg(b, pki, ha_a, ha_b)), ha_a)
    if ha:
        pairs['haproxy'] = {'procs': [ha, hb], 'port': ha_a, 'b_port': ha_b}

    # Every path must answer 200 before it is measured; B must enforce mTLS.
    time.sleep(0.3)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki['ca'])
    for n, c in list(term.items()):
        try:
            st, ver, cipher = https_get(b, c['port'], '/1k', ctx)
        except (OSError, ssl.SSLError) as e:
            st, ver, cipher = 'error: %s' % e, None, None
        if st != 200:
            notes.append('%s (termination): GET /1k over TLS returned %s: not measured' % (n, st))
            b.log('  ' + notes[-1])
            b.stop(c['proc'])
            del term[n]
    for n, c in list(pairs.items()):
        st = b.http_status(c['port'], '/1k')
        problem, seen = check_mtls(b, pki, c['b_port'])
        if st != 200 or problem:
            notes.append('%s sidecars: %s: not measured' % (
                n, problem or 'GET /1k through A returned %s' % st))
            b.log('  ' + notes[-1])
            for p in c['procs']:
                b.stop(p)
            del pairs[n]
        else:
            c['b_tls'] = seen
    for n in raw:
        raw[n].update({'hs': [], 'res': [], 'ka': [], 'mtls': []})

    def tree_cpu(procs):
        t = [b.cpu_ticks(p.pid) for p in procs]
        return sum(u + s for u, s in t) / b.HZ

    def tree_wait(procs):
        """Seconds the processes' threads spent runnable but waiting for a CPU
        (/proc/<pid>/task/<tid>/schedstat, second field): how much the box got in the way."""
        total = 0
        for proc in procs:
            for pid in b._descendants(proc.pid):
                try:
                    tids = os.listdir('/proc/%d/task' % pid)
                except OSError:
                    continue
                for tid in tids:
                    try:
                        with open('/proc/%d/task/%s/schedstat' % (pid, tid)) as f:
                            total += int(f.read().split()[1])
                    except (OSError, ValueError, IndexError):
                        pass
        return total / 1e9

    # Warm-up: first-touch memory, upstream pools, A->B connections. The handshake warm-up
    # uses OpenSSL as the client (tlsload -o): it shows what a stock client negotiates, and
    # the proxy's CPU per handshake with it cross-checks tlsload's own client.
    for n, c in term.items():
        wrk_https(b, c['port'], '/1k', b.WRK_CONNS, 1)
        cpu0 = tree_cpu([c['proc']])
        r = tlsload(b, exe, c['port'], 1, openssl=True)
        if r.get('completed_total'):
            r['cpu_us_per_req'] = (tree_cpu([c['proc']]) - cpu0) * 1e6 / r['completed_total']
        raw[n]['openssl_client_check'] = r
    for n, c in pairs.items():
        b.ptload_rate(c['port'], '/1k', b.RATE, 1, b.LAT_CONNS)
    names_t = list(term)
    hs_before = petrel_stats(pe_term_adm, 'listener.127.0.0.1_%d.ssl.' % pe_term)

    for rep in range(b.REPS):
        for test in ('hs', 'res', 'ka', 'mtls'):
            names = names_t if test != 'mtls' else list(pairs) + ['direct']
            for n in b.rotate(names, rep) if names else []:
                if test == 'mtls':
                    c = pairs.get(n)
                    procs = c['procs'] if c else []
                else:
                    c = term[n]
                    procs = [c['proc']]
                if c and c.get('dead'):
                    continue
                cpu0 = tree_cpu(procs) if procs else 0
                wait0 = tree_wait(procs) if procs else 0
                if test == 'hs':
                    r = tlsload(b, exe, c['port'], b.DURATION)
                    done = r.get('completed_total', 0)
                elif test == 'res':
                    r = tlsload(b, exe, c['port'], b.DURATION, resume=True)
                    done = r.get('completed_total', 0)
                    if done:
                        r['resumed_pct'] = 100.0 * r.get('resumed', 0) / done
                elif test == 'ka':
                    r = wrk_https(b, c['port'], '/1k', b.WRK_CONNS, b.DURATION)
                    done = r['requests']
                else:
                    r = b.ptload_rate(c['port'] if c else p_up, '/1k', b.RATE, b.DURATION,
                                      b.LAT_CONNS)
                    done = r.get('completed', 0)
                    if r.get('errors') and not r.get('error'):
                        r['error'] = '%d errors' % r['errors']
                if procs:
                    cpu = tree_cpu(procs) - cpu0
                    r['proxy_cpu_s'] = cpu
                    if done:
                        r['cpu_us_per_req'] = cpu * 1e6 / done
                    if test == 'hs':
                        r['proxy_cpu_pct'] = 100.0 * cpu / (b.DURATION + 1)
                        r['proxy_wait_pct'] = 100.0 * (tree_wait(procs) - wait0) / (
                            b.DURATION + 1)
                    if any(p.poll() is not None for p in procs):
                        c['dead'] = True
                        r['error'] = '%s exited during the run' % n
                        notes.append(r['error'] + '; its later measurements were skipped')
                        b.log('  %s; log tails:\n%s' % (r['error'], ''.join(
                            b.log_tail(p.bench_name) for p in procs)))
                raw[n][test].append(r)
                if test == 'hs':
                    val = ('%s handshakes/s (client CPU %s%%, proxy CPU %s%%, proxy waiting '
                           'for a CPU %s%%)' % (b.fmt(r.get('rate')),
                                                b.fmt(r.get('client_cpu_pct')),
                                                b.fmt(r.get('proxy_cpu_pct')),
                                                b.fmt(r.get('proxy_wait_pct'))))
                elif test == 'res':
                    val = '%s handshakes/s, %s%% resumed' % (b.fmt(r.get('rate')),
                                                            b.fmt(r.get('resumed_pct')))
                elif test == 'ka':
                    val = '%.0f req/s, p99 %s us' % (r['rps'], b.fmt(r.get('p99_us')))
                else:
                    val = 'p50 %s us, p99 %s us at %s req/s' % (
                        b.fmt(r.get('p50_us')), b.fmt(r.get('p99_us')),
                        b.fmt(r.get('achieved_rps')))
                extra = ((', %.1f CPU-us/%s' % (r['cpu_us_per_req'],
                                                'handshake' if test in ('hs', 'res')
                                                else 'req'))
                         if 'cpu_us_per_req' in r else '')
                err = ('  ERROR: %s' % str(r['error']).strip()[:200]) if r.get('error') else ''
                b.log('  rep %d %-4s %-8s %s%s%s' % (rep + 1, test, n, val, extra, err))

    hs_after = petrel_stats(pe_term_adm, 'listener.127.0.0.1_%d.ssl.' % pe_term)

    # ---- table ----
    def series(n, test, key):
        return [r.get(key) if not r.get('error') else None for r in raw[n][test]]

    def added(n, q):
        return [x - d if x is not None and d is not None else None
                for x, d in zip(series(n, 'mtls', q), series('direct', 'mtls', q))]

    def per_rep(a, c):
        rs = ['%.2f' % (x / y) for x, y in zip(a, c) if x is not None and y]
        return ('per-rep ' + ', '.join(rs)) if len(rs) > 1 else ''

    def first(n, test, key):
        for r in raw[n][test]:
            if r.get(key):
                return r[key]
        return None

    have = lambda n, test: bool(raw[n][test])
    hs_tls = {n: '%s %s %s' % (first(n, 'hs', 'protocol'), first(n, 'hs', 'cipher'),
                               first(n, 'hs', 'group')) for n in ('petrel', 'haproxy')
              if first(n, 'hs', 'protocol')}
    tickets = {}
    for n in ('petrel', 'haproxy'):
        t = sum(r.get('tickets', 0) for r in raw[n]['hs'])
        d = sum(r.get('completed_total', 0) for r in raw[n]['hs'])
        resumed = sum(r.get('resumed', 0) for r in raw[n]['hs'])
        if d:
            tickets[n] = (t / d, resumed)
    rows = []

    def row(label, pe, ha, note, ratio_series=None):
        rat = b.ratio_median(*ratio_series) if ratio_series else None
        if ratio_series and any(x is not None and x <= 0 for s in ratio_series for x in s):
            rat = None      # an added latency at or below zero: no meaningful ratio
            note = '; '.join(x for x in (note, 'a repetition at or below 0 (the direct path '
                                         'was slower: noise), so no ratio') if x)
        extra = per_rep(*ratio_series) if ratio_series and rat is not None else ''
        rows.append([label, pe, ha, b.fmt_ratio(rat), '; '.join(x for x in (note, extra) if x)])

    def cell(n, test, key, src=None):
        if not have(n, test):
            return 'not measured'
        return b.fmt(b.med(src if src is not None else series(n, test, key)))

    pe_hs_pct = b.med(series('petrel', 'hs', 'proxy_cpu_pct'))
    ha_hs_pct = b.med(series('haproxy', 'hs', 'proxy_cpu_pct'))
    cl_pct = b.med(series('petrel', 'hs', 'client_cpu_pct') + series('haproxy', 'hs',
                                                                      'client_cpu_pct'))
    # The proxy is the bottleneck when it ran or waited for its CPU nearly all the time.
    busy = [(x or 0) + (b.med(series(n, 'hs', 'proxy_wait_pct')) or 0)
            for n, x in (('petrel', pe_hs_pct), ('haproxy', ha_hs_pct)) if x is not None]
    client_bound = cl_pct is not None and cl_pct >= 90 and max(busy + [0]) < 90
    if len(set(hs_tls.values())) == 1:
        neg = 'negotiated (both): %s' % list(hs_tls.values())[0]
    else:
        neg = 'negotiated: ' + '; '.join('%s: %s' % (LABEL[n], v) for n, v in hs_tls.items())
    row('Full TLS handshakes/s (new connection + 1 request each, %d conns)' % HS_CONNS,
        cell('petrel', 'hs', 'rate'), cell('haproxy', 'hs', 'rate'),
        neg + ('; CLIENT-BOUND (client CPU %s%%): compare CPU per handshake instead'
               % b.fmt(cl_pct) if client_bound else ''),
        (series('petrel', 'hs', 'rate'), series('haproxy', 'hs', 'rate')))
    row('Proxy CPU per full handshake, CPU-us', cell('petrel', 'hs', 'cpu_us_per_req'),
        cell('haproxy', 'hs', 'cpu_us_per_req'), 'lower is better',
        (series('petrel', 'hs', 'cpu_us_per_req'), series('haproxy', 'hs', 'cpu_us_per_req')))
    row('  proxy CPU use during the handshake run, % of one CPU',
        cell('petrel', 'hs', 'proxy_cpu_pct'), cell('haproxy', 'hs', 'proxy_cpu_pct'),
        'client: %s%% of its CPU' % b.fmt(cl_pct), None)
    row('  proxy runnable but waiting for a CPU (other work), % of the run',
        cell('petrel', 'hs', 'proxy_wait_pct'), cell('haproxy', 'hs', 'proxy_wait_pct'),
        'CPU use + wait near 100%: the proxy was the bottleneck', None)
    row('  handshake time p50, us (client: connect to handshake done)',
        cell('petrel', 'hs', 'hs_p50_us'), cell('haproxy', 'hs', 'hs_p50_us'),
        'at saturation, so mostly queueing', None)
    row('Resumed TLS handshakes/s (libssl client, each ticket offered once, %d conns)'
        % HS_CONNS, cell('petrel', 'res', 'rate'), cell('haproxy', 'res', 'rate'),
        'a client of its own (tlsload -r): client-bound where the client is the slower side',
        (series('petrel', 'res', 'rate'), series('haproxy', 'res', 'rate')))
    row('  reconnects that resumed, %', cell('petrel', 'res', 'resumed_pct'),
        cell('haproxy', 'res', 'resumed_pct'), 'goal: petrel >= HAProxy', None)
    row('Proxy CPU per resumed handshake, CPU-us', cell('petrel', 'res', 'cpu_us_per_req'),
        cell('haproxy', 'res', 'cpu_us_per_req'), 'lower is better',
        (series('petrel', 'res', 'cpu_us_per_req'), series('haproxy', 'res', 'cpu_us_per_req')))
    row('TLS keep-alive requests/s (wrk -t1 -c%d https, 1 KiB body)' % b.WRK_CONNS,
        cell('petrel', 'ka', 'rps'), cell('haproxy', 'ka', 'rps'), '',
        (series('petrel', 'ka', 'rps'), series('haproxy', 'ka', 'rps')))
    row('Proxy CPU per keep-alive TLS request, CPU-us', cell('petrel', 'ka', 'cpu_us_per_req'),
        cell('haproxy', 'ka', 'cpu_us_per_req'), 'lower is better',
        (series('petrel', 'ka', 'cpu_us_per_req'), series('haproxy', 'ka', 'cpu_us_per_req')))
    lat_what = '%d req/s, %d conns' % (b.RATE, b.LAT_CONNS)
    for q in ('p50', 'p99'):
        row('Sidecar mTLS latency %s, us (client->A->B->nginx, %s)' % (q, lat_what),
            cell('petrel', 'mtls', q + '_us'), cell('haproxy', 'mtls', q + '_us'),
            'direct client->nginx: %s us' % b.fmt(b.med(series('direct', 'mtls', q + '_us'))),
            (series('petrel', 'mtls', q + '_us'), series('haproxy', 'mtls', q + '_us')))
    for q in ('p50', 'p99'):
        pa_, ha_ = added('petrel', q + '_us'), added('haproxy', q + '_us')
        row('  added by the two sidecars, %s, us (minus direct)' % q,
            cell('petrel', 'mtls', None, pa_), cell('haproxy', 'mtls', None, ha_), '',
            (pa_, ha_))
    row('Sidecar pair CPU per request (A+B), CPU-us', cell('petrel', 'mtls', 'cpu_us_per_req'),
        cell('haproxy', 'mtls', 'cpu_us_per_req'), 'at the fixed rate; lower is better',
        (series('petrel', 'mtls', 'cpu_us_per_req'),
         series('haproxy', 'mtls', 'cpu_us_per_req')))
    md = b.table(['metric (median)', 'petrel', 'HAProxy', 'petrel/HAProxy', 'notes'], rows)
    b.log('\n' + md + '\n')

    # ---- notes ----
    run_notes = []
    if tickets:
        run_notes.append('Handshake client: %s; resumed handshakes: %s (no session is ever '
                         'offered).' % (', '.join(
                             '%s sent %.1f session tickets per handshake' % (LABEL[n], t)
                             for n, (t, _) in tickets.items()),
                             ', '.join('%s %d' % (LABEL[n], r)
                                       for n, (_, r) in tickets.items())))
    chk = {n: raw[n].get('openssl_client_check') for n in ('petrel', 'haproxy')}
    chk = {n: r for n, r in chk.items() if r and r.get('completed_total')}
    if chk:
        run_notes.append('Cross-check with libssl (%s) as the client (tlsload -o, 1 s + 1 s '
                         'warm-up, client-bound): negotiated %s; proxy CPU per handshake %s.' % (
                             info['openssl'], '; '.join('%s: %s %s %s' % (
                                 LABEL[n], r['protocol'], r['cipher'], r['group'])
                                 for n, r in chk.items()),
                             ', '.join('%s %s us' % (LABEL[n], b.fmt(r.get('cpu_us_per_req')))
                                       for n, r in chk.items())))
    if hs_after and 'handshake' in hs_after:
        run_notes.append('petrel counted %d handshakes on the termination listener during the '
                         'measured runs (handshake and keep-alive tests), %d of them '
                         'resumed.' % (
                             hs_after['handshake'] - hs_before.get('handshake', 0),
                             hs_after.get('session_reused', 0) -
                             hs_before.get('session_reused', 0)))
    seen = {n: c['b_tls'] for n, c in pairs.items() if c.get('b_tls')}
    if seen:
        run_notes.append('Sidecar B accepted the mesh client certificate and refused a client '
                         'without one; a Python/OpenSSL client with the client certificate '
                         'negotiated %s.' % '; '.join('%s: %s' % (LABEL[n], v)
                                                      for n, v in seen.items()))
    if client_bound:
        run_notes.append('The handshake client used %s%% of its CPU while the proxies used %s%% '
                         '(petrel) and %s%% (HAProxy) of theirs: the handshakes/s row measures '
                         'the client. Compare the CPU per handshake.' % (
                             b.fmt(cl_pct), b.fmt(pe_hs_pct), b.fmt(ha_hs_pct)))
    body = '## Results\n\n' + md + '\n\n' + TLS_NOTES % {
        'pin': ('Pinning: all proxies (both sidecars of a pair included) on CPU %s; clients, '
                'handshake client and nginx on CPU %s.' % (b.PROXY_CPU, b.LOAD_CPUS))
        if b.PIN else 'Pinning: off.', 'openssl': info['openssl']}
    notes_all = run_notes + notes
    if notes_all:
        body += '\nNotes from this run:\n' + ''.join('- %s\n' % x for x in notes_all)
    b.save('tls', info, body, raw)
    for c in term.values():
        b.stop(c['proc'])
    for c in pairs.values():
        for p in c['procs']:
            b.stop(p)
    b.stop(up)


TLS_NOTES = """\
Ratios are medians of per-repetition ratios; within a repetition the contenders run back to
back, in an order that rotates between repetitions. Both proxies run 1 worker (petrel
--concurrency 1, HAProxy nbthread 1) with the same ECDSA P-256 certificates, made for this run
(CA, server certificate with DNS and SPIFFE URI SANs, client certificate with a SPIFFE URI SAN),
and their TLS defaults: TLS 1.2-1.3, OpenSSL's TLS 1.3 suites and groups (%(openssl)s for both).
HAProxy runs with `http-reuse always`, so that, like petrel, it forwards over pooled upstream
connections (its default, `safe`, opens a new upstream connection for the first request of every
client connection). The upstream is nginx (1 worker) serving static files.

- Full handshakes: bench/tlsload.c, 50 connections in a closed loop, each iteration a new TCP
  connection, a full TLS 1.3 handshake (no session offered, so nothing resumes; wrk would
  resume), `GET /tiny` (3 bytes) with `Connection: close`, close_notify and close. tlsload is
  its own minimal TLS 1.3 client on libcrypto (x25519, AES-GCM suites, SNI, psk_dhe_ke so
  servers send tickets as usual), because OpenSSL 3.0 as a client costs more CPU per handshake
  than the server (certificate decoding, signature check). It does not parse the server's
  certificate, does not check the CertificateVerify signature (it checks the Finished MAC) and
  reuses one x25519 key share; the server's work is unchanged. The warm-up runs OpenSSL as the
  client once per proxy as a cross-check (see the notes from this run). CPU per handshake is the
  proxy's utime+stime over the whole run (1 s warm-up included) divided by the handshakes
  completed in it. HAProxy keeps its default server-side session cache; petrel has none (tickets
  only).
- Keep-alive: wrk -t1 -c50 over https to `/1k` (1 KiB); 50 handshakes at the start, then only
  records.
- Sidecars: ptload at a fixed rate over 10 keep-alive connections to A (plain HTTP); A holds
  pooled mTLS connections to B, which forwards to nginx. petrel verifies the peer's SPIFFE URI
  SAN on both sides; HAProxy 2.6 cannot match URI SANs (verifyhost checks DNS SANs and the CN),
  so it checks the chain on both sides and B's DNS name (`verifyhost backend.test`) on A. Those
  checks run once per connection, not per request. The added latency is the sidecar path minus
  the direct client->nginx path in the same repetition.

%(pin)s
"""
