#!/usr/bin/env python3
"""Instructions (callgrind Ir) to decode and to encode a typical request header block, h2load's
GET, with petrel's HPACK (proxy/hpack.c) and with libnghttp2's inflater/deflater: both
deterministic, in one run.

Runs build/hpack_cost (bench/hpack_cost.c, built with petrel) under
`valgrind --tool=callgrind --toggle-collect=measured`: only the measured loop is counted.
Ir per block = the function's inclusive instructions / blocks; it includes the loop and a
consumer that reads each decoded field (the same for both).

Run: /usr/bin/python3 bench/hpack_cost.py   (needs valgrind; HPACK_COST=path/to/hpack_cost)
Writes bench/results/<date>-hpack.md.
"""

import datetime
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get('HPACK_COST', os.path.join(ROOT, 'build', 'hpack_cost'))
BLOCKS = 20000
MODES = [
    ('decode', 'decode, one connection (indexed references after the first block)'),
    ('encode', 'encode, one connection'),
    ('decode-first', 'decode the first block of a new connection (context created and freed)'),
    ('encode-first', 'encode the first block of a new connection (context created and freed)'),
    ('encode-proxied', 'encode as a proxy forwards it upstream, a new x-request-id each time '
                       '(the table churns, ~50 entries)'),
]


def ir_total(path):
    best = 0
    with open(path) as f:
        for line in f:
            if line.startswith(('summary:', 'totals:')):
                best = max(best, int(line.split()[1]))
    return best


def measure(tmp, impl, mode):
    out = os.path.join(tmp, 'cg.%s.%s' % (impl, mode))
    cmd = ['valgrind', '--tool=callgrind', '--toggle-collect=measured',
           '--callgrind-out-file=' + out, BIN, impl, mode, str(BLOCKS)]
    cp = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    if cp.returncode != 0:
        raise RuntimeError('%s failed:\n%s' % (' '.join(cmd), cp.stderr.decode()[-2000:]))
    return ir_total(out) / BLOCKS


def main():
    if shutil.which('valgrind') is None:
        sys.exit('hpack_cost: needs valgrind (apt-get install valgrind)')
    if not os.access(BIN, os.X_OK):
        sys.exit('hpack_cost: %s not found: build petrel first (cmake --build build)' % BIN)
    tmp = tempfile.mkdtemp(prefix='petrel-hpack-')
    rows = []
    try:
        for mode, what in MODES:
            p = measure(tmp, 'petrel', mode)
            n = measure(tmp, 'nghttp2', mode)
            rows.append((mode, what, p, n))
            print('%-13s petrel %8.1f  nghttp2 %8.1f  ratio %.2f' % (mode, p, n, p / n),
                  flush=True)
    finally:
        shutil.rmtree(tmp, True)
    commit = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL).stdout.decode().strip()
    ng = subprocess.run(['pkg-config', '--modversion', 'libnghttp2'], stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL).stdout.decode().strip()
    now = datetime.datetime.now()
    lines = ['# HPACK cost: petrel vs libnghttp2 (callgrind instructions per header block)', '',
             '- %s, commit %s, %s, libnghttp2 %s' % (now.strftime('%Y-%m-%d %H:%M'),
                                                     commit or '?', os.uname().machine,
                                                     ng or '?'),
             '- block: h2load\'s GET (:path /tiny, :scheme http, :authority 127.0.0.1:18531, '
             ':method GET, user-agent h2load nghttp2/1.52.0), 38 bytes first, 10 after; '
             '%d blocks per measurement' % BLOCKS,
             '- encode-proxied: :method GET, :scheme http, :authority '
             'backend.default.svc.cluster.local:8080, :path /tiny, user-agent, '
             'x-forwarded-proto http, x-request-id (36 bytes, new each block), '
             'x-envoy-expected-rq-timeout-ms 15000', '',
             '| what | petrel | libnghttp2 | petrel / libnghttp2 |', '|---|---|---|---|']
    for mode, what, p, n in rows:
        lines.append('| %s | %.0f | %.0f | %.2f |' % (what, p, n, p / n))
    os.makedirs(os.path.join(ROOT, 'bench', 'results'), exist_ok=True)
    path = os.path.join(ROOT, 'bench', 'results', now.strftime('%Y-%m-%d-%H%M') + '-hpack.md')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('wrote', os.path.relpath(path, ROOT))


if __name__ == '__main__':
    main()
