"""xDS at scale: an ADS push of N clusters and N routes from a control plane (petrel alone:
HAProxy and nginx have no xDS client).

    /usr/bin/python3 bench/xds.py          # N=10000 clusters; BENCH_XDS_N to change
    PETREL_BIN=build/petrel ... (default build/petrel)
    BENCH_XDS_CALLGRIND=/tmp/cg BENCH_XDS_N=2000 /usr/bin/python3 bench/xds.py
                                           # instead: instructions of the full push

The control plane is tools/xds-control-plane (Node.js, Envoy's own .proto files), as in the
integration tests. Measures, in one run, writing bench/results/<date>-xds.md:

  push      one push of N clusters (type EDS over ADS, EP endpoints each) and one route
            configuration of N routes (RDS over ADS), delta ADS (Istio's default) and state of
            the world: for each response, the time from its last byte received to its ACK,
            everything applied (petrel's own log line for the response says it); their sum;
            and the wall time from the control plane's push to every cluster active
  memory    RSS growth per cluster (stats included; after the push settled) and per endpoint
            (the same again with 2 x EP endpoints: the difference over N x EP)
  one       one endpoint changed among N clusters: a delta push of that one assignment, its
            last byte to its ACK (and the same as a state-of-the-world push of all N)
  latency   p50/p99 of a steady 500 req/s stream to an unrelated static cluster, without
            pushes and then during UPDATES one-endpoint delta pushes

Times come from petrel's log: "ads: <type> version V accepted (B bytes, applied and ACKed in
T ms)", measured by petrel from the moment the whole gRPC message is in hand to the moment the
ACK is queued, with every change applied and published to the workers.
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
sys.path.insert(0, HERE)
import harness as h  # noqa: E402
from reload import Upstream, heap, ptload  # noqa: E402
from test_xds_ads import CP_MISSING, ControlPlane, HPO, CDS, EDS, RDS  # noqa: E402

N = int(os.environ.get('BENCH_XDS_N', '10000'))
EP = 10
UPDATES = int(os.environ.get('BENCH_XDS_UPDATES', '100'))
LAT_RATE = 500
ADS = {'ads': {}, 'resource_api_version': 'V3'}
ACCEPTED = re.compile(r'\[(\d{4}-\d\d-\d\dT[\d:.]+)Z\]\[main\]\[info\] ads: (\S+) version (\S+) '
                      r'accepted \((\d+) bytes, applied and ACKed in ([\d.]+) ms\)')


def cluster(i):
    return {'name': 'c%d' % i, 'type': 'EDS', 'connect_timeout': '1s',
            'eds_cluster_config': {'eds_config': ADS}}


def assignment(i, ep, base=20000):
    return {'cluster_name': 'c%d' % i, 'endpoints': [{'lb_endpoints': [
        {'endpoint': {'address': h.socket_address(
            '10.%d.%d.%d' % (i >> 16 & 255, i >> 8 & 255, i & 255), base + k)}}
        for k in range(ep)]}]}


def routes(n):
    rts = [h.route_prefix('/c%d/' % i, 'c%d' % i, timeout='1s') for i in range(n)]
    rts.append(h.route_prefix('/', 'steady', timeout='5s'))
    return h.route_config([h.vhost('all', ['*'], rts)], name='main')


def accepted(p, after=0):
    """Every "accepted" line of the log from offset `after`: (utc time, type, version, bytes,
    ms)."""
    out = []
    for m in ACCEPTED.finditer(p.log(), after):
        ts = datetime.datetime.strptime(m.group(1), '%Y-%m-%dT%H:%M:%S.%f')
        out.append((ts.replace(tzinfo=datetime.timezone.utc).timestamp(), m.group(2),
                    m.group(3), int(m.group(4)), float(m.group(5))))
    return out


def hwm_kb(p):
    """petrel's peak RSS so far in KiB (VmHWM)."""
    with open('/proc/%d/status' % p.pid) as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1])
    return 0


def wait_accepted(p, type_url, version, after, after_time=0):
    """The first accepted line for type_url from log offset `after` (of that version, or any
    version logged at or after after_time)."""
    def find():
        for a in accepted(p, after):
            if a[1] == type_url and (version is None or a[2] == version) and a[0] >= after_time:
                return a
        return None
    return h.wait_until(find, 900, interval=0.1, message='%s version %s not accepted' % (
        type_url, version))


class Setup:
    """A control plane and a petrel taking clusters (CDS, EDS) and routes (RDS) from it over
    ADS; a static listener whose routes send /steady to a static cluster."""

    def __init__(self, delta, steady_port):
        self.cp = ControlPlane({'clusters': [], 'endpoints': [], 'routes': [routes(0)]})
        self.bases = {}  # assignment -> the first port of its endpoints, when moved
        self.port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('ingress', None, rds={
            'route_config_name': 'main', 'config_source': ADS})
        del hcm['typed_config']['route_config']
        xds = h.cluster('xds', [self.cp.port], typed_extension_protocol_options={HPO: {
            '@type': 'type.googleapis.com/' + HPO,
            'explicit_http_config': {'http2_protocol_options': {}}}})
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [xds, h.cluster('steady', [steady_port])], admin_port=admin,
                          dynamic_resources={
                              'ads_config': {'api_type': 'DELTA_GRPC' if delta else 'GRPC',
                                             'transport_api_version': 'V3',
                                             'grpc_services': [{'envoy_grpc': {
                                                 'cluster_name': 'xds'}}]},
                              'cds_config': ADS})
        self.p = h.Petrel(cfg, wait_ready=False)
        self.p.start()
        wait_accepted(self.p, RDS, '1', 0)

    def push_all(self, ep):
        """Every cluster, assignment and route in one push: the log's accepted lines for them
        and the wall time from the push to the last of them. The control plane watches its
        files too: the assignments and routes are written first, then the clusters, whose
        arrival makes petrel ask for the assignments by name."""
        perf = None
        if os.environ.get('BENCH_XDS_PERF'):  # a profile of petrel during the push
            perf = subprocess.Popen(['perf', 'record', '-g', '-o', os.environ['BENCH_XDS_PERF'],
                                     '-p', str(self.p.pid)], stderr=subprocess.DEVNULL)
            time.sleep(1)
        mark = len(self.p.log())
        t0 = time.time()
        self.cp.write({'endpoints': [assignment(i, ep) for i in range(N)],
                       'routes': [routes(N)]})
        self.cp.write({'clusters': [cluster(i) for i in range(N)]})
        self.cp.post('/reload')
        got = [wait_accepted(self.p, t, '2', mark) for t in (CDS, RDS)]
        got.insert(1, wait_accepted(self.p, EDS, None, mark, after_time=got[0][0]))
        if perf is not None:
            perf.send_signal(2)
            perf.wait()
        return got, max(g[0] for g in got) - t0

    def close(self):
        self.p.close()
        self.cp.close()


def one_endpoint(s, version, k, ep):
    """Assignment k moves (all its endpoints to other ports, which is one endpoint's worth of
    change for each of them): the control plane's push of it (delta: that one assignment;
    state of the world: all N), petrel's accepted line for it. Assignments moved before
    stay where they went."""
    s.bases[k] = 30000 + (version % 2) * 1000
    s.cp.write({'endpoints': [assignment(i, ep, base=s.bases.get(i, 20000))
                              for i in range(N)]})
    mark = len(s.p.log())
    s.cp.post('/reload')
    return wait_accepted(s.p, EDS, str(version), mark)


def measure(delta, ep, ptload_bin, full):
    up = Upstream()
    s = Setup(delta, up.port)
    out = {}
    try:
        time.sleep(2)
        base, base_heap = s.p.rss_kb(), heap(s.p)
        got, wall = s.push_all(ep)
        out['push'] = {t.rsplit('.', 1)[-1]: {'bytes': b, 'ms': ms} for _, t, _, b, ms in got}
        out['push_ms'] = sum(g[4] for g in got)
        out['push_wall_s'] = wall
        h.wait_until(lambda: s.p.admin_get('/ready')[0] == 200, 60)
        time.sleep(5)  # past petrel's heap trim (a few seconds after a change)
        out['rss_kib'] = s.p.rss_kb() - base
        out['peak_rss_kib'] = hwm_kb(s.p) - base  # the push's high-water mark
        out['heap_kib'] = (heap(s.p) - base_heap) / 1024.0
        if not full:
            return out
        # one endpoint among N, then UPDATES of them under a steady stream
        version = 3
        a = one_endpoint(s, version, N // 2, ep)
        out['one_ms'], out['one_bytes'] = a[4], a[3]
        version += 1
        quiet = ptload(ptload_bin, s.port, 20)
        # the control plane re-reads and re-encodes all N assignments for each push (seconds
        # of its CPU at N = 10,000): the stream lasts as long as UPDATES pushes take, and the
        # pushes go on until it ends, so that all of it sees them
        t = time.time()
        for _ in range(3):
            one_endpoint(s, version, 1 + version, ep)
            version += 1
        per_push = (time.time() - t) / 3
        seconds = int(per_push * UPDATES) + 10
        load = subprocess.Popen([ptload_bin, 'rate', '127.0.0.1', str(s.port), '/steady',
                                 str(LAT_RATE), str(seconds), '10', '1'],
                                stdout=subprocess.PIPE, text=True)
        t_end = time.time() + seconds
        time.sleep(2)
        times = []
        v = 0
        while v < UPDATES or time.time() < t_end - per_push - 2:
            times.append(one_endpoint(s, version, (v * 97) % N, ep)[4])
            version += 1
            v += 1
        busy_out = load.communicate(timeout=seconds + 120)[0]
        busy = json.loads(busy_out.strip().splitlines()[-1]) if busy_out.strip() else {}
        times.sort()
        out['updates'] = len(times)
        out['update_p50_ms'], out['update_max_ms'] = times[len(times) // 2], times[-1]
        out['stream_s'] = seconds
        out['p50_quiet_us'], out['p99_quiet_us'] = quiet.get('p50_us'), quiet.get('p99_us')
        out['p50_busy_us'], out['p99_busy_us'] = busy.get('p50_us'), busy.get('p99_us')
        out['errors'] = quiet.get('errors', 0) + busy.get('errors', 0)
        return out
    finally:
        s.close()
        up.close()


def callgrind(out_dir):
    """The full push alone, petrel under callgrind counting only the handling of each
    response (on_message: decoding, judging, applying, the ACK), delta and state of the
    world: instructions, which this shared machine does not blur as it blurs times."""
    orig = h.Petrel.command

    def command(self):
        return ['valgrind', '--tool=callgrind', '--toggle-collect=on_message',
                '--callgrind-out-file=' + self.callgrind_out] + orig(self)
    h.Petrel.command = command
    os.makedirs(out_dir, exist_ok=True)
    for delta in (False, True):
        how = 'delta' if delta else 'sotw'
        out = os.path.join(out_dir, 'callgrind.%s.%d' % (how, N))
        h.Petrel.callgrind_out = out
        up = Upstream()
        s = Setup(delta, up.port)
        try:
            got, _ = s.push_all(EP)
        finally:
            s.close()
            up.close()
        total = subprocess.run(['callgrind_annotate', out], capture_output=True,
                               text=True).stdout
        m = re.search(r'([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS', total)
        ir = int(m.group(1).replace(',', '')) if m else 0
        print('%s: %d clusters: %s instructions (%.0f a cluster with its endpoints and route); '
              'responses: %s' % (how, N, format(ir, ','), ir / N,
                                 ', '.join('%s %d bytes' % (t.rsplit('.', 1)[-1], b)
                                           for _, t, _, b, _ in got)))


def main():
    if CP_MISSING is not None:
        sys.exit('control plane unavailable: ' + CP_MISSING)
    if os.environ.get('BENCH_XDS_CALLGRIND'):
        callgrind(os.environ['BENCH_XDS_CALLGRIND'])
        return
    tmp = tempfile.mkdtemp(prefix='petrel-ptload-')
    ptload_bin = os.path.join(tmp, 'ptload')
    subprocess.check_call(['cc', '-O2', '-o', ptload_bin, os.path.join(HERE, 'ptload.c')])
    only = os.environ.get('BENCH_XDS_ONLY')  # 'delta': the delta run alone (profiling)
    d = measure(True, EP, ptload_bin, full=True)
    d2 = measure(True, 2 * EP, ptload_bin, full=False) if only != 'delta' else None
    w = measure(False, EP, ptload_bin, full=False) if only != 'delta' else None
    subprocess.call(['rm', '-rf', tmp])
    head = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'],
                          capture_output=True, text=True).stdout.strip()
    per_cluster = d['rss_kib'] * 1024.0 / N
    rows = []

    def push_rows(r, how):
        rows.append(('%s: push of %d clusters (EDS, %d endpoints each) and %d routes, each '
                     'response\'s last byte to its ACK: CDS / EDS / RDS' % (how, N, EP, N),
                     ' / '.join('%.0f ms (%.1f MB)' % (r['push'][k]['ms'],
                                                       r['push'][k]['bytes'] / 1e6)
                                for k in ('Cluster', 'ClusterLoadAssignment',
                                          'RouteConfiguration')), ''))
        rows.append(('%s: the three together (petrel\'s work for the full push)' % how,
                     '%.3f s' % (r['push_ms'] / 1e3), '< 1 s'))
        rows.append(('%s: wall time, control plane push to every cluster active (includes '
                     'the control plane encoding and sending)' % how,
                     '%.2f s' % r['push_wall_s'], ''))
    push_rows(d, 'delta ADS')
    if w is not None:
        push_rows(w, 'state-of-the-world ADS')
    rows.append(('RSS per cluster, stats included (%d endpoints each)' % EP,
                 '%.0f B' % per_cluster, ''))
    rows.append(('peak RSS during the push, over the start: delta%s' % (
        ' / state of the world' if w is not None else ''),
        ' / '.join('%.0f MiB' % (r['peak_rss_kib'] / 1024.0) for r in (d, w) if r is not None),
        ''))
    if d2 is not None:
        per_endpoint = (d2['rss_kib'] - d['rss_kib']) * 1024.0 / (N * EP)
        rows.append(('RSS per cluster without its endpoints', '%.0f B' % (
            per_cluster - EP * per_endpoint), '<= 4 KiB'))
        rows.append(('RSS per endpoint', '%.0f B' % per_endpoint, '<= 200 B'))
    rows.append(('one endpoint changed among %d clusters: delta push (%d bytes), last byte to '
                 'ACK' % (N, d['one_bytes']), '%.2f ms' % d['one_ms'], '< 10 ms'))
    rows.append(('%d such pushes: median / slowest' % d['updates'],
                 '%.2f / %.2f ms' % (d['update_p50_ms'], d['update_max_ms']), '< 10 ms'))
    rows.append(('steady stream to an unrelated cluster, p50 / p99, no pushes',
                 '%s / %s us' % (d['p50_quiet_us'], d['p99_quiet_us']), ''))
    rows.append(('the same during the %d pushes (%d s stream)' % (d['updates'], d['stream_s']),
                 '%s / %s us' % (d['p50_busy_us'], d['p99_busy_us']), 'p99 unchanged'))
    rows.append(('requests failed in both streams', '%d' % d['errors'], '0'))
    lines = ['# petrel bench: xds, %s' % datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
             '', '- petrel: %s (HEAD %s); one worker; reproduce: `/usr/bin/python3 bench/xds.py`'
             % (h.PETREL_BIN, head), '',
             '| measurement | petrel | goal |', '|---|---|---|']
    lines += ['| %s | %s | %s |' % row for row in rows]
    lines += ['', 'raw: `%s`' % json.dumps({'delta': d, 'delta_2ep': d2, 'sotw': w, 'n': N})]
    text = '\n'.join(lines) + '\n'
    print(text)
    os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
    name = datetime.datetime.now().strftime('%Y-%m-%d-%H%M') + '-xds.md'
    with open(os.path.join(HERE, 'results', name), 'w') as f:
        f.write(text)


if __name__ == '__main__':
    main()
