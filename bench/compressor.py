#!/usr/bin/env python3
"""Compressor throughput and CPU per MiB: petrel's gzip compressor filter vs nginx's gzip
module, same level (6), same window (15 bits) and memory level (8: nginx's defaults), one
worker each, pinned to the last CPU, behind each the same nginx upstream serving a JSON body
(256 KiB, plain).

    /usr/bin/python3 bench/compressor.py            # PETREL_BIN (build/petrel), BENCH_DURATION (8)

For each proxy: requests/s with 4 keep-alive connections asking for gzip (wrk), the
proxy's CPU seconds (utime + stime from /proc) per MiB of uncompressed body, and the
compressed size. Contenders run one after the other, twice, in alternating order; the
medians are printed with the ratio petrel/nginx.
"""
import gzip
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PETREL = os.environ.get('PETREL_BIN', os.path.join(HERE, '..', 'build', 'petrel'))
DURATION = int(os.environ.get('BENCH_DURATION', '8'))
BODY = 256 * 1024
TICK = os.sysconf('SC_CLK_TCK')
NCPU = os.cpu_count() or 1
PROXY_CPU = str(NCPU - 1)
LOAD_CPUS = ','.join(str(i) for i in range(NCPU - 1)) or '0'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError('port %d never opened' % port)


def body():
    """A JSON document with the redundancy of a real API answer (keys repeat, values vary)."""
    rnd = random.Random(7)
    items, size = [], 0
    while size < BODY:
        item = {'id': rnd.randrange(10 ** 9), 'name': 'user-%d' % rnd.randrange(10 ** 6),
                'email': 'u%d@example.com' % rnd.randrange(10 ** 6),
                'score': rnd.random(), 'active': rnd.random() < 0.5,
                'tags': rnd.sample(['a', 'b', 'c', 'd', 'e', 'f', 'g'], 3)}
        s = json.dumps(item)
        items.append(s)
        size += len(s) + 1
    return ('[' + ','.join(items) + ']').encode()[:BODY]


def cpu_seconds(pid):
    """utime + stime of pid and its children still running (nginx's worker)."""
    total = 0
    pids = [pid] + [int(p) for p in open('/proc/%d/task/%d/children' % (pid, pid)).read().split()]
    for p in pids:
        f = open('/proc/%d/stat' % p).read().rsplit(')', 1)[1].split()
        total += int(f[11]) + int(f[12])
    return total / TICK


def wrk(port):
    out = subprocess.run(['taskset', '-c', LOAD_CPUS, 'wrk', '-t1', '-c4', '-d%ds' % DURATION,
                          '-H', 'Accept-Encoding: gzip', 'http://127.0.0.1:%d/body.json' % port],
                         capture_output=True, text=True, check=True).stdout
    n = int(re.search(r'(\d+) requests in', out).group(1))
    return n


def main():
    tmp = tempfile.mkdtemp(prefix='pt-bench-comp-')
    procs = []
    try:
        www = os.path.join(tmp, 'www')
        os.makedirs(www)
        data = body()
        with open(os.path.join(www, 'body.json'), 'wb') as f:
            f.write(data)
        common = ('%sworker_processes 1; daemon off; pid %s/%%s.pid; error_log %s/%%s.err warn;\n'
                  'events { worker_connections 1024; }\n' %
                  ('user root root;\n' if os.geteuid() == 0 else '', tmp, tmp))
        p_up, p_ng, p_pt = free_port(), free_port(), free_port()
        temp = ''.join('%s_temp_path %s/%s;\n' % (k, tmp, k)
                       for k in ('client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'))
        up_cfg = os.path.join(tmp, 'up.conf')
        with open(up_cfg, 'w') as f:
            f.write(common % ('up', 'up') + 'http { access_log off; %s default_type '
                    'application/json; server { listen 127.0.0.1:%d; root %s; } }\n'
                    % (temp, p_up, www))
        ng_cfg = os.path.join(tmp, 'ng.conf')
        with open(ng_cfg, 'w') as f:
            f.write(common % ('ng', 'ng') + 'http { access_log off; %s'
                    'upstream b { server 127.0.0.1:%d; keepalive 16; }\n'
                    'gzip on; gzip_comp_level 6; '
                    'gzip_types application/json; gzip_proxied any; gzip_vary on;\n'
                    'server { listen 127.0.0.1:%d; location / { proxy_pass http://b; '
                    'proxy_http_version 1.1; proxy_set_header Connection ""; } } }\n'
                    % (temp, p_up, p_ng))
        pt_cfg = os.path.join(tmp, 'petrel.json')
        hcm = {'@type': 'type.googleapis.com/envoy.extensions.filters.network.'
                        'http_connection_manager.v3.HttpConnectionManager',
               'stat_prefix': 'in',
               'route_config': {'virtual_hosts': [{'name': 'v', 'domains': ['*'], 'routes': [
                   {'match': {'prefix': '/'}, 'route': {'cluster': 'up'}}]}]},
               'http_filters': [
                   {'name': 'envoy.filters.http.compressor', 'typed_config': {
                       '@type': 'type.googleapis.com/envoy.extensions.filters.http.compressor.'
                                'v3.Compressor',
                       'response_direction_config': {'common_config': {
                           'content_type': ['application/json']}},
                       'compressor_library': {'name': 'json', 'typed_config': {
                           '@type': 'type.googleapis.com/envoy.extensions.compression.gzip.'
                                    'compressor.v3.Gzip',
                           'compression_level': 'COMPRESSION_LEVEL_6', 'window_bits': 15,
                           'memory_level': 8}}}},
                   {'name': 'envoy.filters.http.router', 'typed_config': {
                       '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.'
                                'Router'}}]}
        with open(pt_cfg, 'w') as f:
            json.dump({'static_resources': {
                'listeners': [{'name': 'l', 'address': {'socket_address': {
                    'address': '127.0.0.1', 'port_value': p_pt}},
                    'filter_chains': [{'filters': [{'name': 'hcm', 'typed_config': hcm}]}]}],
                'clusters': [{'name': 'up', 'connect_timeout': '1s', 'load_assignment': {
                    'cluster_name': 'up', 'endpoints': [{'lb_endpoints': [{'endpoint': {
                        'address': {'socket_address': {'address': '127.0.0.1',
                                                       'port_value': p_up}}}}]}]}}]}}, f)

        def spawn(cpus, argv):
            p = subprocess.Popen(['taskset', '-c', cpus] + argv, stdout=subprocess.DEVNULL,
                                 stderr=open(os.path.join(tmp, 'stderr.log'), 'a'))
            procs.append(p)
            return p

        spawn(LOAD_CPUS, ['nginx', '-p', tmp, '-c', up_cfg, '-e', tmp + '/up.e'])
        ng = spawn(PROXY_CPU, ['nginx', '-p', tmp, '-c', ng_cfg, '-e', tmp + '/ng.e'])
        pt = spawn(PROXY_CPU, [PETREL, '-c', pt_cfg, '--concurrency', '1', '-l', 'warn'])
        try:
            for port in (p_up, p_ng, p_pt):
                wait_port(port)
        except RuntimeError:
            sys.stderr.write(open(os.path.join(tmp, 'stderr.log')).read())
            raise
        sizes = {}
        for name, port in (('petrel', p_pt), ('nginx', p_ng)):
            out = subprocess.run(['curl', '-s', '-H', 'Accept-Encoding: gzip',
                                  'http://127.0.0.1:%d/body.json' % port],
                                 capture_output=True, check=True).stdout
            assert gzip.decompress(out) == data, name
            sizes[name] = len(out)
        results = {'petrel': [], 'nginx': []}
        order = [('petrel', p_pt, pt.pid), ('nginx', p_ng, ng.pid)]
        for rep in range(2):
            for name, port, pid in (order if rep % 2 == 0 else order[::-1]):
                c0 = cpu_seconds(pid)
                n = wrk(port)
                c1 = cpu_seconds(pid)
                mib = n * BODY / (1 << 20)
                results[name].append((n / DURATION, (c1 - c0) / mib * 1000, mib / DURATION))
        print('gzip level 6, window 15, memlevel 8; body %d KiB JSON; wrk 4 connections, '
              '%d s x 2 each' % (BODY // 1024, DURATION))
        print('| proxy | req/s | MiB/s in | CPU ms per MiB | compressed bytes |')
        print('|---|---|---|---|---|')
        med = {}
        for name in ('petrel', 'nginx'):
            r = sorted(results[name])
            rps = sorted(x[0] for x in r)[len(r) // 2]
            cpu = sorted(x[1] for x in r)[len(r) // 2]
            mibs = sorted(x[2] for x in r)[len(r) // 2]
            med[name] = (rps, cpu)
            print('| %s | %.0f | %.1f | %.2f | %d |' % (name, rps, mibs, cpu, sizes[name]))
        print('petrel/nginx: throughput %.2f, CPU per MiB %.2f' % (
            med['petrel'][0] / med['nginx'][0], med['petrel'][1] / med['nginx'][1]))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
