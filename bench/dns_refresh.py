"""DNS refreshes of a large STRICT_DNS cluster against worker latency (petrel alone).

    /usr/bin/python3 bench/dns_refresh.py     # 1,000 hostnames; BENCH_DNS_HOSTS to change
    PETREL_BIN=build/petrel ... (default build/petrel)

One STRICT_DNS cluster of BENCH_DNS_HOSTS endpoints, each its own hostname, resolved by
c-ares on petrel's main thread every dns_refresh_rate (1 s) against bench/dns_responder.c
(UDP on loopback; in C so that answering a refresh's queries costs the two cores next to
nothing, where a Python server would compete with petrel for them): a refresh is that many
queries and, when answers changed, a host-set update published to the workers. Meanwhile a steady stream
of 500 req/s (bench/ptload.c) goes to an unrelated static cluster for 20 s, and its p50/p99
are compared across five petrels, with the CPU petrel used meanwhile (its main thread's,
where the lookups and host-set updates run, and the whole process's):

  none      no DNS cluster (the baseline)
  same      the DNS cluster, every refresh answering the same addresses (hosts kept)
  changing  the DNS cluster, every host's address changing between refreshes (each refresh
            replaces the whole host set: the worst case for the update path)
  same+jitter, changing+jitter
            the same with dns_jitter equal to the refresh rate (Envoy's way to spread the
            lookups of many names over the period)

Writes bench/results/<date>-dns.md and prints it.
"""
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration'))
import harness as h  # noqa: E402
from test_dns import resolver_config  # noqa: E402
from reload import Upstream, ptload, LAT_SECONDS  # noqa: E402

N = int(os.environ.get('BENCH_DNS_HOSTS', '1000'))
REFRESH_S = 1.0


def hostname(i):
    return 'h%d.petrel.test' % i


class Responder:
    """bench/dns_responder.c, running: `same` answers, or addresses `changing` every second."""

    def __init__(self, binary, mode):
        self.proc = subprocess.Popen([binary, mode], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())

    def answered(self):
        self.proc.stdin.write('count\n')
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)


def config(port, admin, up, dns, jitter=False):
    hcm = h.http_connection_manager('ingress', h.route_config([h.vhost('all', ['*'], [
        h.route_prefix('/', 'steady', timeout='5s')])]))
    clusters = [h.cluster('steady', [up.port])]
    if dns is not None:
        clusters.append({
            'name': 'dns', 'type': 'STRICT_DNS', 'connect_timeout': '1s',
            'dns_refresh_rate': '%gs' % REFRESH_S, 'dns_lookup_family': 'V4_ONLY',
            # dns_jitter: each refresh waits up to a refresh more, so the names' lookups
            # spread over the period instead of leaving together.
            **({'dns_jitter': '%gs' % REFRESH_S} if jitter else {}),
            'typed_dns_resolver_config': resolver_config(dns),
            'load_assignment': {'cluster_name': 'dns', 'endpoints': [{'lb_endpoints': [
                {'endpoint': {'address': h.socket_address(hostname(i), 8080)}}
                for i in range(N)]}]}})
    return h.bootstrap([h.listener('http', port, [hcm])], clusters, admin_port=admin)


def cpu_ms(pid, tid=None):
    """User + system CPU of the process (or of one of its threads) so far, in ms."""
    path = '/proc/%d/stat' % pid if tid is None else '/proc/%d/task/%d/stat' % (pid, tid)
    with open(path) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 // os.sysconf('SC_CLK_TCK')


def measure(mode, bins, up):
    answers, _, jitter = mode.partition('+')
    dns = Responder(bins['dns_responder'], answers) if mode != 'none' else None
    try:
        port, admin = h.free_ports(2)
        with h.Petrel(config(port, admin, up, dns, jitter == 'jitter')) as p:
            if dns is not None:
                h.wait_until(lambda: p.stat('cluster.dns.membership_total') == N, 60,
                             message='the DNS cluster resolved')
            time.sleep(2)
            q0 = dns.answered() if dns else 0
            s0 = p.stat('cluster.dns.update_success') or 0
            c0 = p.stat('cluster.dns.membership_change') or 0
            m0, t0 = cpu_ms(p.pid, p.pid), cpu_ms(p.pid)
            r = ptload(bins['ptload'], port, LAT_SECONDS)
            out = {'p50_us': r.get('p50_us'), 'p99_us': r.get('p99_us'),
                   'errors': r.get('errors', 0), 'completed': r.get('completed'),
                   'main_cpu_ms': cpu_ms(p.pid, p.pid) - m0, 'cpu_ms': cpu_ms(p.pid) - t0}
            if dns is not None:
                out['queries'] = dns.answered() - q0
                out['refreshes'] = (p.stat('cluster.dns.update_success') or 0) - s0
                out['changes'] = (p.stat('cluster.dns.membership_change') or 0) - c0
                out['failures'] = p.stat('cluster.dns.update_failure') or 0
            return out
    finally:
        if dns:
            dns.close()


def main():
    tmp = tempfile.mkdtemp(prefix='petrel-ptload-')
    bins = {}
    for name in ('ptload', 'dns_responder'):
        bins[name] = os.path.join(tmp, name)
        subprocess.check_call(['cc', '-O2', '-o', bins[name], os.path.join(HERE, name + '.c')])
    up = Upstream()
    try:
        res = {m: measure(m, bins, up) for m in ('none', 'same', 'changing', 'same+jitter',
                                                  'changing+jitter')}
    finally:
        up.close()
        subprocess.call(['rm', '-rf', tmp])
    head = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'],
                          capture_output=True, text=True).stdout.strip()
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = ['# dns refresh, %s UTC, petrel %s, load average %s' % (
        now.strftime('%Y-%m-%d %H:%M'), head, ' '.join('%.2f' % x for x in os.getloadavg())),
        '', '`/usr/bin/python3 bench/dns_refresh.py` (%d hostnames, dns_refresh_rate %gs, a '
        'steady 500 req/s for %d s to an unrelated cluster)' % (N, REFRESH_S, LAT_SECONDS), '',
        '| petrel | p50 | p99 | failed requests | queries answered | refreshes | host-set '
        'changes | main thread CPU | petrel CPU |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    names = {'none': 'no DNS cluster', 'same': '%d hostnames, same answers' % N,
             'changing': '%d hostnames, every address changing' % N,
             'same+jitter': '%d hostnames, same answers, dns_jitter %gs' % (N, REFRESH_S),
             'changing+jitter': '%d hostnames, every address changing, dns_jitter %gs'
             % (N, REFRESH_S)}
    for m, r in res.items():
        lines.append('| %s | %s us | %s us | %d | %s | %s | %s | %d ms | %d ms |' % (
            names[m], r['p50_us'], r['p99_us'], r['errors'], r.get('queries', '-'),
            r.get('refreshes', '-'), r.get('changes', '-'), r['main_cpu_ms'], r['cpu_ms']))
    text = '\n'.join(lines) + '\n'
    path = os.path.join(HERE, 'results', now.strftime('%Y-%m-%d-%H%M') + '-dns.md')
    with open(path, 'w') as f:
        f.write(text)
    print(text)
    print(json.dumps(res))


if __name__ == '__main__':
    main()
