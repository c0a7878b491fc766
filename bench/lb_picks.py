#!/usr/bin/env python3
"""The cost of one host pick, per load balancing policy and cluster shape, in user-space
instructions (callgrind Ir), at 100, 1,000 and 10,000 hosts: petrel alone, deterministic.

Runs build/lb_pick_cost (bench/lb_pick_cost.c, built with petrel) under
`valgrind --tool=callgrind --toggle-collect=measured_picks`: only the measured picks are
counted, after as many warm-up picks (the worker's schedules are made on its first pick in a
subset). Ir per pick = the function's inclusive instructions / picks; it includes the
benchmark's own loop (about 9 instructions) and the pt_cluster_pick_host call.

Goal (issue 12): under 200 instructions per pick at 10,000 hosts, and no cost that grows with
the host count. Weighted LEAST_REQUEST is Envoy's EDF over the hosts, kept by classes of
equal step (weight, active requests): O(log classes), not O(log hosts).

Run: /usr/bin/python3 bench/lb_picks.py   (needs valgrind; LB_PICK_COST=path/to/lb_pick_cost)
Writes bench/results/<date>-picks.md.
"""

import datetime
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get('LB_PICK_COST', os.path.join(ROOT, 'build', 'lb_pick_cost'))
PICKS = 20000
HOSTS = (100, 1000, 10000)
SCENARIOS = [
    ('rr', 'ROUND_ROBIN, equal weights, one priority and locality'),
    ('rr_weighted', 'ROUND_ROBIN, weights 1..10 (runs of equal weight, one period of '
                    'their EDF)'),
    ('lr', 'LEAST_REQUEST, equal weights (P2C)'),
    ('lr_weighted', 'LEAST_REQUEST, weights 1..10 (EDF over hosts by classes, '
                    'active_request_bias 1)'),
    ('lr_weighted_busy', 'lr_weighted, each pick a request ending 64 picks later '
                         '(with ~15 of bookkeeping)'),
    ('random', 'RANDOM'),
    ('rr_priorities', 'ROUND_ROBIN, P=0 60% failed: priority drawn on every pick'),
    ('rr_localities', 'ROUND_ROBIN, locality_weighted_lb_config, 8 localities'),
    ('rr_zone', 'ROUND_ROBIN, zone aware routing (residual mode), 4 zones'),
]


def ir_total(path):
    best = 0
    with open(path) as f:
        for line in f:
            if line.startswith(('summary:', 'totals:')):
                best = max(best, int(line.split()[1]))
    return best


def measure(tmp, scenario, hosts):
    out = os.path.join(tmp, 'cg.%s.%d' % (scenario, hosts))
    cmd = ['valgrind', '--tool=callgrind', '--toggle-collect=measured_picks',
           '--callgrind-out-file=' + out, BIN, scenario, str(hosts), str(PICKS)]
    cp = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    if cp.returncode != 0:
        raise RuntimeError('%s failed:\n%s' % (' '.join(cmd), cp.stderr.decode()[-2000:]))
    return ir_total(out) / PICKS


def main():
    if shutil.which('valgrind') is None:
        sys.exit('lb_picks: needs valgrind (apt-get install valgrind)')
    if not os.access(BIN, os.X_OK):
        sys.exit('lb_picks: %s not found: build petrel first (cmake --build build)' % BIN)
    tmp = tempfile.mkdtemp(prefix='petrel-picks-')
    try:
        rows = []
        for sc, what in SCENARIOS:
            costs = [measure(tmp, sc, n) for n in HOSTS]
            rows.append((sc, what, costs))
            print('%-14s %s' % (sc, '  '.join('%7.1f' % c for c in costs)), flush=True)
    finally:
        shutil.rmtree(tmp, True)
    commit = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().strip()
    now = datetime.datetime.now()
    lines = ['# Host pick cost per policy (callgrind instructions per pick)', '',
             '- %s, commit %s, %s' % (now.strftime('%Y-%m-%d %H:%M'), commit or '?',
                                      os.uname().machine),
             '- %d picks measured after %d warm-up picks; the count includes the benchmark loop '
             '(~9) and the pt_cluster_pick_host call' % (PICKS, PICKS), '',
             '| scenario | %s | |' % ' | '.join('%d hosts' % n for n in HOSTS),
             '|---|%s|---|' % '|'.join('---:' for _ in HOSTS)]
    for sc, what, costs in rows:
        lines.append('| `%s` | %s | %s |' % (sc, ' | '.join('%.0f' % c for c in costs), what))
    body = '\n'.join(lines) + '\n'
    os.makedirs(os.path.join(ROOT, 'bench', 'results'), exist_ok=True)
    path = os.path.join(ROOT, 'bench', 'results', now.strftime('%Y-%m-%d-%H%M') + '-picks.md')
    with open(path, 'w') as f:
        f.write(body)
    print('\n' + body + '\nwrote ' + os.path.relpath(path, ROOT))


if __name__ == '__main__':
    main()
