"""Hot reload at scale (petrel alone: HAProxy and nginx have no counterpart to CDS/EDS files).

    /usr/bin/python3 bench/reload.py            # N=10000 clusters; BENCH_RELOAD_N to change
    /usr/bin/python3 bench/reload.py memory     # the memory measure alone (below), printed
    PETREL_BIN=build/petrel ... (default build/petrel)

Measures, in one run, writing bench/results/<date>-reload.md:

  apply     one update adding N clusters (type EDS, EP endpoints each, their assignments in one
            EDS file) and N routes (one RDS route configuration): time from the CDS file's
            rename to petrel's log line for the applied update, and to the RDS one
  memory    RSS growth per cluster (stats included; 3 s after the update, heap trimmed as
            petrel does on its own), and per endpoint (the same again with 2 x EP endpoints:
            the difference over N x EP)
  one       one endpoint changed among N clusters: file rename to the applied log line
  latency   p50/p99 of a steady 500 req/s stream to an unrelated static cluster for 20 s,
            without updates and then during UPDATES EDS updates of the N-cluster file
  removal   every dynamic cluster removed: RSS against the start
  per-cluster files
            the same N clusters with an assignment file each (Envoy's file-per-cluster
            layout, and the shape of an xDS EDS update): apply, memory, one endpoint changed
            (one file), and the steady stream's latency during UPDATES one-file changes

Times come from petrel's own log (UTC timestamps with milliseconds) against the time the file
was renamed into place, so polling costs nothing in what is measured.
"""
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration'))
import harness as h  # noqa: E402

N = int(os.environ.get('BENCH_RELOAD_N', '10000'))
EP = 10
UPDATES = int(os.environ.get('BENCH_RELOAD_UPDATES', '100'))
LAT_RATE, LAT_SECONDS = 500, 20
CLUSTER_TYPE = 'type.googleapis.com/envoy.config.cluster.v3.Cluster'
CLA_TYPE = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment'
ROUTE_TYPE = 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration'


class Run:
    """One petrel's files. `per_cluster`: each cluster's assignment in a file of its own (a
    layout Envoy's file subscriptions allow, and the shape of an xDS EDS update, which carries
    only the assignments that changed); otherwise all of them in one file."""

    def __init__(self, d, ep, per_cluster=False):
        self.d, self.ep, self.per_cluster = d, ep, per_cluster
        self.cds, self.eds, self.rds = (os.path.join(d, n) for n in ('cds.json', 'eds.json',
                                                                      'rds.json'))
        if per_cluster:
            os.mkdir(os.path.join(d, 'eds'))

    def eds_path(self, i):
        return os.path.join(self.d, 'eds', 'c%d.json' % i) if self.per_cluster else self.eds

    def cluster(self, i):
        return {'@type': CLUSTER_TYPE, 'name': 'c%d' % i, 'type': 'EDS', 'connect_timeout': '1s',
                'eds_cluster_config': {'eds_config': {'path_config_source': {
                    'path': self.eds_path(i)}}}}

    def write_assignments(self, version, n):
        """Every cluster's assignment, before the clusters come."""
        if not self.per_cluster:
            write(self.eds, {'version_info': version, 'resources': [self.cla(i) for i in range(n)]})
            return
        for i in range(n):
            write(self.eds_path(i), {'version_info': version, 'resources': [self.cla(i)]})

    def cla(self, i, base=20000):
        return {'@type': CLA_TYPE, 'cluster_name': 'c%d' % i, 'endpoints': [{'lb_endpoints': [
            {'endpoint': {'address': h.socket_address(
                '10.%d.%d.%d' % (i >> 16 & 255, i >> 8 & 255, i & 255), base + k)}}
            for k in range(self.ep)]}]}

    def routes(self, n):
        rts = [h.route_prefix('/c%d/' % i, 'c%d' % i, timeout='1s') for i in range(n)]
        rts.append(h.route_prefix('/', 'steady', timeout='5s'))
        rc = h.route_config([h.vhost('all', ['*'], rts)], name='main')
        rc['@type'] = ROUTE_TYPE
        return rc


def write(path, obj):
    with open(path + '.tmp', 'w') as f:
        json.dump(obj, f)
    t = time.time()
    os.replace(path + '.tmp', path)
    return t


def applied_at(p, pattern, after=0):
    """The UTC time of the first log line matching pattern at or after offset `after`."""
    rx = re.compile(r'\[(\d{4}-\d\d-\d\dT[\d:.]+)Z\]\[main\]\[info\] ' + pattern)
    m = h.wait_until(lambda: rx.search(p.log(), after), 600, interval=0.05)
    ts = datetime.datetime.strptime(m.group(1), '%Y-%m-%dT%H:%M:%S.%f')
    return ts.replace(tzinfo=datetime.timezone.utc).timestamp()


def heap(p):
    return int(json.loads(p.admin_get('/memory')[2])['allocated'])


def ptload(binary, port, seconds):
    out = subprocess.run([binary, 'rate', '127.0.0.1', str(port), '/steady', str(LAT_RATE),
                          str(seconds), '10', '1'], capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    return json.loads(out.strip().splitlines()[-1])


class Upstream:
    """The steady stream's upstream, in a process of its own: in this one it would share the
    interpreter lock with the writing of 10 MB update files, and stall with it."""

    def __init__(self):
        code = ('import sys, time; sys.path.insert(0, %r); from upstreams import HttpUpstream; '
                'u = HttpUpstream(name="steady"); print(u.port, flush=True); time.sleep(1e6)'
                % os.path.join(ROOT, 'tests', 'integration'))
        self.proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE,
                                     text=True)
        self.port = int(self.proc.stdout.readline())

    def close(self):
        self.proc.kill()
        self.proc.wait()


def start_config(r, hcm, up):
    """A bootstrap with the listener, the steady stream's static cluster and r's CDS file;
    its port."""
    port, admin = h.free_ports(2)
    cfg = h.bootstrap([h.listener('http', port, [hcm])], [h.cluster('steady', [up.port])],
                      admin_port=admin,
                      dynamic_resources={'cds_config': {'path_config_source': {'path': r.cds}}})
    return cfg, port


def apply_clusters(p, r):
    """Every assignment first (read when the clusters come), then N clusters by CDS: the
    seconds from the CDS file's rename to the applied update."""
    r.write_assignments('1', N)
    mark = len(p.log())
    t0 = write(r.cds, {'version_info': '1', 'resources': [r.cluster(i) for i in range(N)]})
    return applied_at(p, r'cds: version 1: ', mark) - t0


def measure(ep, with_latency, ptload_bin):
    d = tempfile.mkdtemp(prefix='petrel-reload-')
    r = Run(d, ep)
    up = Upstream()
    out = {}
    try:
        write(r.cds, {'version_info': '0', 'resources': []})
        write(r.eds, {'version_info': '0', 'resources': []})
        write(r.rds, {'version_info': '0', 'resources': [r.routes(0)]})
        hcm = h.http_connection_manager('ingress', None, rds={
            'route_config_name': 'main',
            'config_source': {'path_config_source': {'path': r.rds}}})
        del hcm['typed_config']['route_config']
        cfg, port = start_config(r, hcm, up)
        with h.Petrel(cfg) as p:
            time.sleep(2)
            base_rss, base_heap = p.rss_kb(), heap(p)
            out['apply_cds_s'] = apply_clusters(p, r)  # then the routes, below
            time.sleep(3)
            out['rss_kib'] = p.rss_kb() - base_rss
            out['heap_kib'] = (heap(p) - base_heap) / 1024.0
            if not with_latency:
                return out
            mark = len(p.log())
            t0 = write(r.rds, {'version_info': '1', 'resources': [r.routes(N)]})
            out['apply_rds_s'] = applied_at(p, r'rds: route configuration main updated '
                                            r'\(version 1\)', mark) - t0
            time.sleep(3)
            out['routes_rss_kib'] = p.rss_kb() - base_rss - out['rss_kib']
            # one endpoint among N
            res = [r.cla(i) for i in range(N)]
            res[N // 2] = r.cla(N // 2, base=30000)
            mark = len(p.log())
            t0 = write(r.eds, {'version_info': '2', 'resources': res})
            out['one_endpoint_s'] = applied_at(p, r'eds: version 2 of ', mark) - t0
            # latency without, then with updates: UPDATES changes spread over the stream's
            # middle, as with a file per cluster (measure_per_cluster), so that the stream
            # sees petrel's work and not a writer of 13 MB files back to back.
            quiet = ptload(ptload_bin, port, LAT_SECONDS)
            busy_seconds = LAT_SECONDS
            load = subprocess.Popen([ptload_bin, 'rate', '127.0.0.1', str(port), '/steady',
                                     str(LAT_RATE), str(busy_seconds), '10', '1'],
                                    stdout=subprocess.PIPE, text=True)
            time.sleep(2)
            t_start = time.time()
            done = 0
            # The two files alternated, serialized up front.
            variants = []
            for k in range(2):
                res[N // 2] = r.cla(N // 2, base=30000 + k * 1000)
                variants.append(json.dumps({'version_info': 'VERSION', 'resources': res}))
            times = []
            for v in range(UPDATES):
                if time.time() - t_start > busy_seconds - 5:
                    break
                begun = time.time()
                mark = len(p.log())
                with open(r.eds + '.tmp', 'w') as f:
                    f.write(variants[v % 2].replace('"VERSION"', '"%d"' % (3 + v), 1))
                t0 = time.time()
                os.replace(r.eds + '.tmp', r.eds)
                times.append(applied_at(p, r'eds: version %d of ' % (3 + v), mark) - t0)
                done += 1
                time.sleep(max(0.0, (busy_seconds - 6) / UPDATES - (time.time() - begun)))
            times.sort()
            out['updates'] = done
            out['update_p50_s'], out['update_max_s'] = times[len(times) // 2], times[-1]
            out['updates_s'] = time.time() - t_start
            busy_out = load.communicate(timeout=busy_seconds + 60)[0]
            busy = json.loads(busy_out.strip().splitlines()[-1]) if busy_out.strip() else {}
            out['p50_quiet_us'], out['p99_quiet_us'] = quiet.get('p50_us'), quiet.get('p99_us')
            out['p50_busy_us'], out['p99_busy_us'] = busy.get('p50_us'), busy.get('p99_us')
            out['errors'] = quiet.get('errors', 0) + busy.get('errors', 0)
            # removal: the routes, then the clusters
            mark = len(p.log())
            write(r.rds, {'version_info': '99', 'resources': [r.routes(0)]})
            applied_at(p, r'rds: route configuration main updated \(version 99\)', mark)
            mark = len(p.log())
            t0 = write(r.cds, {'version_info': '99', 'resources': []})
            out['remove_s'] = applied_at(p, r'cds: version 99: ', mark) - t0
            time.sleep(4)
            out['rss_after_removal_kib'] = p.rss_kb() - base_rss
        return out
    finally:
        up.close()
        subprocess.call(['rm', '-rf', d])


def measure_per_cluster(ptload_bin):
    """The same N clusters with an assignment file each: apply, memory, one endpoint changed
    (one file), and the steady stream's latency during UPDATES such changes."""
    d = tempfile.mkdtemp(prefix='petrel-reload-')
    r = Run(d, EP, per_cluster=True)
    up = Upstream()
    out = {}
    try:
        write(r.cds, {'version_info': '0', 'resources': []})
        hcm = h.http_connection_manager('ingress', h.route_config([h.vhost('all', ['*'], [
            h.route_prefix('/', 'steady', timeout='5s')])]))
        cfg, port = start_config(r, hcm, up)
        with h.Petrel(cfg) as p:
            time.sleep(2)
            base_rss = p.rss_kb()
            out['apply_cds_s'] = apply_clusters(p, r)
            time.sleep(3)
            out['rss_kib'] = p.rss_kb() - base_rss
            k = N // 2
            mark = len(p.log())
            t0 = write(r.eds_path(k), {'version_info': '2', 'resources': [r.cla(k, base=30000)]})
            out['one_endpoint_s'] = applied_at(p, r'eds: version 2 of %s' % re.escape(
                r.eds_path(k)), mark) - t0
            quiet = ptload(ptload_bin, port, LAT_SECONDS)
            load = subprocess.Popen([ptload_bin, 'rate', '127.0.0.1', str(port), '/steady',
                                     str(LAT_RATE), str(LAT_SECONDS), '10', '1'],
                                    stdout=subprocess.PIPE, text=True)
            time.sleep(2)
            # UPDATES changes, one file each, spread over the stream's middle.
            times = []
            for v in range(UPDATES):
                i = (v * 97) % N
                mark = len(p.log())
                t0 = write(r.eds_path(i), {'version_info': str(3 + v), 'resources': [
                    r.cla(i, base=30000 + (v % 2) * 1000)]})
                times.append(applied_at(p, r'eds: version %d of %s' % (
                    3 + v, re.escape(r.eds_path(i))), mark) - t0)
                time.sleep(max(0.0, (LAT_SECONDS - 6) / UPDATES - times[-1]))
            times.sort()
            out['updates'] = len(times)
            out['update_p50_s'], out['update_max_s'] = times[len(times) // 2], times[-1]
            busy_out = load.communicate(timeout=LAT_SECONDS + 60)[0]
            busy = json.loads(busy_out.strip().splitlines()[-1]) if busy_out.strip() else {}
            out['p50_quiet_us'], out['p99_quiet_us'] = quiet.get('p50_us'), quiet.get('p99_us')
            out['p50_busy_us'], out['p99_busy_us'] = busy.get('p50_us'), busy.get('p99_us')
            out['errors'] = quiet.get('errors', 0) + busy.get('errors', 0)
        return out
    finally:
        up.close()
        subprocess.call(['rm', '-rf', d])


def ms(seconds):
    """A time from the log: its timestamps have milliseconds, so under 1 ms reads as such."""
    return '< 1 ms' if seconds < 0.001 else '%.1f ms' % (seconds * 1e3)


def memory_only():
    """The memory measure alone (no latency streams, no file written under results/): RSS and
    heap (mallinfo, petrel's /memory) per cluster and per endpoint, for quick comparisons
    between builds. Prints one JSON line."""
    a = measure(EP, False, None)
    b = measure(2 * EP, False, None)
    per_ep_rss = (b['rss_kib'] - a['rss_kib']) * 1024.0 / (N * EP)
    per_ep_heap = (b['heap_kib'] - a['heap_kib']) * 1024.0 / (N * EP)
    out = {'n': N, 'ep': EP,
           'rss_per_cluster_b': round(a['rss_kib'] * 1024.0 / N),
           'rss_per_cluster_without_endpoints_b': round(a['rss_kib'] * 1024.0 / N
                                                         - EP * per_ep_rss),
           'rss_per_endpoint_b': round(per_ep_rss),
           'heap_per_cluster_b': round(a['heap_kib'] * 1024.0 / N),
           'heap_per_cluster_without_endpoints_b': round(a['heap_kib'] * 1024.0 / N
                                                          - EP * per_ep_heap),
           'heap_per_endpoint_b': round(per_ep_heap),
           'apply_cds_s': round(a['apply_cds_s'], 3)}
    print(json.dumps(out))


def main():
    if sys.argv[1:] == ['memory']:
        memory_only()
        return
    tmp = tempfile.mkdtemp(prefix='petrel-ptload-')
    ptload_bin = os.path.join(tmp, 'ptload')
    subprocess.check_call(['cc', '-O2', '-o', ptload_bin, os.path.join(HERE, 'ptload.c')])
    a = measure(EP, True, ptload_bin)
    b = measure(2 * EP, False, ptload_bin)
    f = measure_per_cluster(ptload_bin)
    per_cluster = a['rss_kib'] * 1024.0 / N
    per_endpoint = (b['rss_kib'] - a['rss_kib']) * 1024.0 / (N * EP)
    head = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'],
                          capture_output=True, text=True).stdout.strip()
    rows = [
        ('apply %d clusters (CDS, EDS with %d endpoints each): file change to active' % (N, EP),
         '%.3f s' % a['apply_cds_s'], '< 1 s'),
        ('apply %d routes (RDS, one route configuration): file change to active' % N,
         '%.3f s' % a['apply_rds_s'], '< 1 s'),
        ('RSS per route', '%.0f B' % (a['routes_rss_kib'] * 1024.0 / N), ''),
        ('RSS per cluster, stats included (%d endpoints each)' % EP,
         '%.0f B' % per_cluster, '<= 4 KiB'),
        ('RSS per cluster without its endpoints', '%.0f B' % (per_cluster - EP * per_endpoint),
         ''),
        ('RSS per endpoint', '%.0f B' % per_endpoint, '<= 200 B'),
        ('one endpoint changed among %d clusters (one file of all assignments): file change '
         'to active' % N, ms(a['one_endpoint_s']), '< 10 ms'),
        ('%d such changes, one after the other: median / slowest' % a['updates'],
         '%s / %s' % (ms(a['update_p50_s']), ms(a['update_max_s'])), '< 10 ms'),
        ('steady stream to an unrelated cluster, p50 / p99, no updates',
         '%s / %s us' % (a['p50_quiet_us'], a['p99_quiet_us']), ''),
        ('the same during %d EDS updates of the %d-cluster file' % (a['updates'], N),
         '%s / %s us' % (a['p50_busy_us'], a['p99_busy_us']), 'p99 unchanged'),
        ('requests failed in both streams', '%d' % a['errors'], '0'),
        ('remove all %d clusters: file change to active' % N, '%.3f s' % a['remove_s'], ''),
        ('**an assignment file per cluster**: apply %d clusters (CDS, %d files read)' % (N, N),
         '%.3f s' % f['apply_cds_s'], '< 1 s'),
        ('RSS per cluster, stats and its file subscription included (%d endpoints each)' % EP,
         '%.0f B' % (f['rss_kib'] * 1024.0 / N), ''),
        ('one endpoint changed among %d clusters (its file): file change to active' % N,
         ms(f['one_endpoint_s']), '< 10 ms'),
        ('%d such changes, one file each: median / slowest' % f['updates'],
         '%s / %s' % (ms(f['update_p50_s']), ms(f['update_max_s'])), '< 10 ms'),
        ('steady stream to an unrelated cluster, p50 / p99, no updates',
         '%s / %s us' % (f['p50_quiet_us'], f['p99_quiet_us']), ''),
        ('the same during those %d changes' % f['updates'],
         '%s / %s us' % (f['p50_busy_us'], f['p99_busy_us']), 'p99 unchanged'),
        ('requests failed in both streams', '%d' % f['errors'], '0'),
        ('RSS after removing them and their routes, against the start',
         '%+d KiB' % a['rss_after_removal_kib'],
         'back to start'),
    ]
    lines = ['# petrel bench: reload, %s' % datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
             '', '- petrel: %s (HEAD %s); one worker; reproduce: `/usr/bin/python3 bench/reload.py`'
             % (h.PETREL_BIN, head), '',
             '| measurement | petrel | goal |', '|---|---|---|']
    lines += ['| %s | %s | %s |' % row for row in rows]
    lines += ['', 'raw: `%s`' % json.dumps({'ep': a, 'ep2': b, 'per_cluster': f, 'n': N})]
    text = '\n'.join(lines) + '\n'
    print(text)
    os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
    name = datetime.datetime.now().strftime('%Y-%m-%d-%H%M') + '-reload.md'
    with open(os.path.join(HERE, 'results', name), 'w') as f:
        f.write(text)
    subprocess.call(['rm', '-rf', tmp])


if __name__ == '__main__':
    main()
