"""tracing suite: what tracing costs petrel per HTTP request, off, at 1% and at 100% sampling
(Zipkin provider), in one run. Run by bench.py (`bench/run.sh tracing`), which passes itself
in as `b`; see bench/README.md.

For each of the three configs (the same HTTP keep-alive path as the instr suite: one nginx
upstream serving 1 KiB, petrel with 1 worker), in BENCH_REPS rounds taken in turn, the
median of the rounds:
1. user-space instructions per request: callgrind, instrumentation on only during a fixed
   ptload run (INSTR_RATE req/s for INSTR_SECONDS s over INSTR_CONNS connections). All of
   petrel's threads are counted, so the main thread's batching and JSON encoding of the
   spans are in the figure;
   and, from the same dump, the instructions of tracing's own code: the inclusive cost of
   its entry points (TRACING_ENTRY_POINTS: the decision and span at the request's headers,
   the propagation into each upstream request, the span's record at the end, and the main
   thread's drain, encoding and report). This one does not move with the event loop's
   batching, which shifts the whole-process figure by a few hundred Ir/req between runs;
   it leaves out the codec writing the propagated headers and the collector connection's
   reads, which the whole-process difference includes;
2. CPU per request, natively: the proxy's utime + stime (/proc/<pid>/stat) across a ptload
   run at CPU_RATE req/s for BENCH_DURATION s.
The collector cluster is the nginx upstream itself: a report is encoded and sent in full
(nginx answers 405, counted as reports_dropped), which is what a real collector costs petrel.
Sampling is random_sampling on the x-request-id, which petrel generates for each request.
"""
import json
import os
import re
import statistics
import time

CPU_RATE = 4000
CASES = [('off', None), ('1%', 1), ('100%', 100)]


def tracing_cfg(b, name, port, up, percent):
    hcm = {
        '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.'
                 'v3.HttpConnectionManager',
        'stat_prefix': 'bench',
        'route_config': {'name': 'local_route', 'virtual_hosts': [
            {'name': 'all', 'domains': ['*'],
             'routes': [{'match': {'prefix': '/'}, 'route': {'cluster': 'upstream'}}]}]},
        'http_filters': [{'name': 'envoy.filters.http.router', 'typed_config': {
            '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router'}}]}
    if percent is not None:
        hcm['tracing'] = {'random_sampling': {'value': percent}, 'provider': {
            'name': 'envoy.tracers.zipkin', 'typed_config': {
                '@type': 'type.googleapis.com/envoy.config.trace.v3.ZipkinConfig',
                'collector_cluster': 'upstream', 'collector_endpoint': '/api/v2/spans'}}}
    cfg = {'node': {'id': 'bench', 'cluster': 'bench'}, 'static_resources': {
        'listeners': [{'name': 'http', 'address': b._sa(port), 'filter_chains': [{'filters': [
            {'name': 'envoy.filters.network.http_connection_manager', 'typed_config': hcm}]}]}],
        'clusters': [b._cluster('upstream', up)]}}
    return b.write('petrel-tracing-%s.json' % name, json.dumps(cfg, indent=1))


def cpu_seconds(pid):
    with open('/proc/%d/stat' % pid) as f:
        parts = f.read().rsplit(')', 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf('SC_CLK_TCK')


# Where tracing starts in petrel's code: each one's inclusive instructions (callgrind) are
# tracing's own, whatever the event loop did around them.
TRACING_ENTRY_POINTS = [
    'proxy/tracing.c:pt_tracing_begin', 'proxy/tracing.c:pt_tracing_response_headers',
    'proxy/tracing.c:pt_tracing_upstream_start', 'proxy/tracing.c:pt_tracing_upstream_end',
    'proxy/tracing.c:pt_tracing_end', 'proxy/span_queue.c:on_drain']


def tracing_ir(b, dump):
    """Inclusive Ir of the tracing entry points in a callgrind dump."""
    rc, out, err = b.run(['callgrind_annotate', '--inclusive=yes', '--auto=no',
                          '--threshold=100', dump], timeout=120)
    # Run from the checkout, callgrind_annotate may list a function twice (by absolute and
    # by relative path): each entry point counts once, at its larger figure.
    best = {}
    for line in out.splitlines():
        m = re.match(r'\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S+)', line)
        for e in TRACING_ENTRY_POINTS:
            if m and m.group(2).endswith(e):
                best[e] = max(best.get(e, 0), int(m.group(1).replace(',', '')))
    return sum(best.values())


def ir_per_request(b, name, cmd, port):
    cg = os.path.join(b.TMP, 'callgrind.%s' % name)
    p = b.spawn('cg-' + name, ['valgrind', '--tool=callgrind', '--instr-atstart=no',
                               '--callgrind-out-file=' + cg] + cmd, 'proxy')
    try:
        b.wait_port(port, p, timeout=60)
        b._fixed_load(port, False, rate=100, seconds=1)
        b.run(['callgrind_control', '-i', 'on', str(p.pid)], timeout=60)
        lr = b._fixed_load(port, False)
        b.run(['callgrind_control', '-i', 'off', str(p.pid)], timeout=60)
        b.run(['callgrind_control', '-d', str(p.pid)], timeout=60)
        dumps = sorted(f for f in os.listdir(b.TMP) if f.startswith('callgrind.%s.' % name))
        if not dumps:
            raise RuntimeError('%s: callgrind wrote no dump' % name)
        dump = os.path.join(b.TMP, dumps[-1])
        total = b._callgrind_total(dump)
        if not total or not lr['completed']:
            return None, None
        return total / lr['completed'], (dump, lr['completed'])
    finally:
        b.stop(p)


def cpu_per_request(b, name, cmd, port):
    p = b.spawn('cpu-' + name, cmd, 'proxy')
    try:
        b.wait_port(port, p)
        b._fixed_load(port, False, rate=500, seconds=1)
        time.sleep(0.3)
        c0 = cpu_seconds(p.pid)
        lr = b._fixed_load(port, False, rate=CPU_RATE, seconds=b.DURATION)
        time.sleep(0.3)
        c1 = cpu_seconds(p.pid)
        return (c1 - c0) * 1e6 / lr['completed'] if lr['completed'] else None
    finally:
        b.stop(p)


def run(b):
    info = b.machine_info()
    b.log('== tracing suite: petrel per HTTP request with tracing off, 1%, 100% ==')
    ports = b.pick_ports(1 + len(CASES))
    up = b.start_nginx('nginx-upstream', b.nginx_upstream(ports[0]), 'load')
    b.wait_port(ports[0], up)
    # The cases take turns, BENCH_REPS rounds, and each figure is the median of its rounds:
    # under callgrind the event loop batches differently from run to run, which moves a
    # single run's Ir/req by a few hundred, as much as the 1% case's whole cost.
    runs = {label: {'ir_per_req': [], 'tracing_ir_per_req': [], 'cpu_us_per_req': []}
            for label, _ in CASES}
    for rep in range(b.REPS):
        for (label, pct), port in zip(CASES, ports[1:]):
            name = 'tracing-' + label.rstrip('%')
            cmd = [b.PETREL_BIN, '-c', tracing_cfg(b, name, port, ports[0], pct),
                   '--concurrency', '1', '-l', 'warning']
            ir, dump = ir_per_request(b, '%s-%d' % (name, rep), cmd, port)
            # Read once petrel has exited and the dump is final.
            own = tracing_ir(b, dump[0]) / dump[1] if dump else None
            cpu = cpu_per_request(b, '%s-%d' % (name, rep), cmd, port)
            runs[label]['ir_per_req'].append(ir)
            runs[label]['tracing_ir_per_req'].append(own)
            runs[label]['cpu_us_per_req'].append(cpu)
            b.log('  %-4s round %d: %s Ir/req (tracing code %s), %s CPU us/req'
                  % (label, rep + 1, b.fmt(ir), b.fmt(own), b.fmt(cpu, 2)))
    b.stop(up)
    raw = {}
    for label, _ in CASES:
        med = {}
        for k, xs in runs[label].items():
            xs = [x for x in xs if x is not None]
            med[k] = statistics.median(xs) if xs else None
        raw[label] = dict(med, runs=runs[label])
    off = raw['off']
    rows = []
    for label, _ in CASES:
        r = raw[label]
        rel = lambda k: ('%+.1f%%' % ((r[k] / off[k] - 1) * 100)  # noqa: E731
                         if r[k] and off[k] else 'n/a')
        irs = [x for x in r['runs']['ir_per_req'] if x]
        spread = '%s-%s' % (b.fmt(min(irs)), b.fmt(max(irs))) if irs else 'n/a'
        own = r['tracing_ir_per_req']
        own_rel = ('%.1f%%' % (own / off['ir_per_req'] * 100)
                   if own is not None and off['ir_per_req'] else 'n/a')
        rows.append([label, b.fmt(r['ir_per_req']), rel('ir_per_req'), spread,
                     b.fmt(own), own_rel, b.fmt(r['cpu_us_per_req'], 2), rel('cpu_us_per_req')])
    md = b.table(['tracing', 'Ir/req (callgrind, median)', 'vs off', 'Ir/req range',
                  'tracing code Ir/req', 'of off', 'CPU us/req', 'vs off'], rows)
    b.log('\n' + md + '\n')
    b.save('tracing', info, '## Results\n\n' + md + '\n\n%d rounds, medians.\n\n' % b.REPS +
           (__doc__ or '') + '\n', raw)
