"""Hot reload under continuous load: a fixed-rate stream of at least 100,000 requests
(bench/ptload.c, open loop over keep-alive connections) runs while more than 100 updates
change every kind of dynamic resource from watched files: endpoints (EDS), clusters (CDS:
settings changed, a cluster added and removed), routes (RDS: the route the load takes moves
between clusters, others come and go), listeners (LDS: a second listener added, changed
and removed) and a secret (SDS: the trusted CA bundle of the TLS cluster b, which the load
reaches every other route update, rotated). Every update must apply (counted as a success)
and not one request may fail: no 5xx, no reset, no unanswered request.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_reload_under_load.py -v
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import certs as C  # noqa: E402
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER_TYPE = 'type.googleapis.com/envoy.config.cluster.v3.Cluster'
CLA_TYPE = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment'
ROUTE_TYPE = 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration'
LISTENER_TYPE = 'type.googleapis.com/envoy.config.listener.v3.Listener'

UPDATES = 120                  # at least 100
REQUESTS = 100000              # at least this many, all answered 2xx
# Requests per second (open loop); a sanitized petrel is slower, so it gets longer instead.
RATE = 1250 if h.SANITIZE else 2500
CONNS = 16


def build_ptload(directory):
    out = os.path.join(directory, 'ptload')
    subprocess.check_call(['cc', '-O2', '-o', out, os.path.join(ROOT, 'bench', 'ptload.c')])
    return out


class ReloadUnderLoadTest(unittest.TestCase):

    def setUp(self):
        self.pki = C.standard_pki()
        self.ups = [HttpUpstream(name='U%d' % i) for i in range(3)]
        # b's upstreams speak TLS (verified against the CA of the SDS secret).
        self.tls_ups = [HttpUpstream(name='T%d' % i,
                                     ssl_context=C.server_context(self.pki['backend']))
                        for i in range(3)]
        for u in self.ups + self.tls_ups:
            self.addCleanup(u.close)
        self.port, self.port2, self.admin = h.free_ports(3)
        self.dir = tempfile.mkdtemp(prefix='petrel-reload-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.files = {k: os.path.join(self.dir, k + '.json')
                      for k in ('cds', 'eds', 'rds', 'lds', 'sds')}

    def write(self, kind, version, resources):
        path = self.files[kind]
        with open(path + '.tmp', 'w') as f:
            json.dump({'version_info': str(version), 'resources': resources}, f)
        os.replace(path + '.tmp', path)

    # ---- resources --------------------------------------------------------------------

    def cluster(self, name, timeout='1s'):
        return {'@type': CLUSTER_TYPE, 'name': name, 'type': 'EDS', 'connect_timeout': timeout,
                'eds_cluster_config': {'eds_config': {'path_config_source': {
                    'path': self.files['eds']}}}}

    def cla(self, name, ups, servers=None):
        servers = servers or self.ups
        return {'@type': CLA_TYPE, 'cluster_name': name, 'endpoints': [{'lb_endpoints': [
            {'endpoint': {'address': h.socket_address('127.0.0.1', servers[i].port)}}
            for i in ups]}]}

    def secrets(self, v):
        # The CA bundle b trusts: the test CA alone, or with an unrelated one added.
        pem = self.pki['ca'].pem + (self.pki['ca2'].pem if v % 2 else '')
        return [C.secret_ca('upstream_ca', ca_pem=pem)]

    def routes(self, v):
        # The load's route moves between a and b; an extra route comes and goes.
        rts = [h.route_prefix('/load/', 'a' if v % 2 else 'b', timeout='10s')]
        if v % 3 == 0:
            rts.insert(0, h.route_prefix('/extra%d/' % v, 'b', timeout='10s'))
        rc = h.route_config([h.vhost('all', ['*'], rts)], name='main')
        rc['@type'] = ROUTE_TYPE
        return [rc]

    def listeners(self, v):
        # The second listener: absent, then present with one cluster, then the other.
        if v % 3 == 0:
            return []
        hcm = h.http_connection_manager('second', h.route_config([h.vhost('all', ['*'], [
            h.route_prefix('/', 'a' if v % 3 == 1 else 'b', timeout='10s')])]))
        l = h.listener('second', self.port2, [hcm])
        l['@type'] = LISTENER_TYPE
        return [l]

    def clusters(self, v):
        b = self.cluster('b')
        b['transport_socket'] = C.upstream_tls(common_extra={
            'validation_context_sds_secret_config': C.sds_ref('upstream_ca', self.files['sds'])})
        cs = [self.cluster('a', '%ds' % (1 + v % 3)), b]
        if v % 4 == 0:
            cs.append(self.cluster('spare'))
        return cs

    def assignments(self, v):
        # Every cluster always has a live endpoint; which ones changes.
        sets = [(0,), (1,), (0, 1), (2, 0)]
        return [self.cla('a', sets[v % 4]), self.cla('b', sets[(v + 1) % 4], self.tls_ups),
                self.cla('spare', (2,))]

    def config(self):
        hcm = h.http_connection_manager('ingress', None, rds={
            'route_config_name': 'main',
            'config_source': {'path_config_source': {'path': self.files['rds']},
                              'resource_api_version': 'V3'}})
        del hcm['typed_config']['route_config']
        return h.bootstrap(
            [h.listener('load', self.port, [hcm])], [], admin_port=self.admin,
            dynamic_resources={
                'cds_config': {'path_config_source': {'path': self.files['cds']},
                               'resource_api_version': 'V3'},
                'lds_config': {'path_config_source': {'path': self.files['lds']},
                               'resource_api_version': 'V3'}})

    # ---- the test ----------------------------------------------------------------------

    def test_no_request_fails_across_updates_of_every_kind(self):
        ptload = build_ptload(self.dir)
        self.write('sds', 0, self.secrets(0))
        self.write('eds', 0, self.assignments(0))
        self.write('cds', 0, self.clusters(0))
        self.write('rds', 0, self.routes(0))
        self.write('lds', 0, self.listeners(0))
        p = h.Petrel(self.config(), concurrency=2, extra_args=['--drain-time-s', '2'])
        self.addCleanup(p.close)
        p.start()
        self.assertEqual(h.http_request(self.port, 'GET', '/load/x').status, 200)

        seconds = REQUESTS // RATE + 4
        load = subprocess.Popen([ptload, 'rate', '127.0.0.1', str(self.port), '/load/x',
                                 str(RATE), str(seconds), str(CONNS), '0'],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: load.poll() is None and load.kill())
        kinds = ['eds', 'cds', 'rds', 'lds', 'sds']
        counts = {k: 0 for k in kinds}
        builders = {'eds': self.assignments, 'cds': self.clusters, 'rds': self.routes,
                    'lds': self.listeners, 'sds': self.secrets}
        stat_of = {'eds': 'cluster.a.update_success',
                   'cds': 'cluster_manager.cds.update_success',
                   'rds': 'http.ingress.rds.main.update_success',
                   'lds': 'listener_manager.lds.update_success',
                   'sds': 'sds.upstream_ca.update_success'}
        start = time.monotonic()
        # Spread over the first three quarters of the load, so every update lands under it.
        spacing = seconds * 0.75 / UPDATES
        for v in range(1, UPDATES + 1):
            kind = kinds[v % len(kinds)]
            before = p.stat(stat_of[kind], 0)
            self.write(kind, v, builders[kind](v))
            counts[kind] += 1
            p.wait_stat(stat_of[kind], lambda x, b=before: x is not None and x > b, timeout=10)
            delay = start + v * spacing - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        out, err = load.communicate(timeout=h.scaled(seconds + 60))
        result = json.loads(out.strip().splitlines()[-1])
        self.assertEqual(result['errors'], 0, 'ptload: %s %s' % (result, err[-300:]))
        self.assertGreaterEqual(result['completed'], REQUESTS, result)
        self.assertGreaterEqual(sum(counts.values()), 100)
        # Every update applied: none rejected, none failed to read.
        stats = p.stats()
        for name in ('cluster_manager.cds.update_rejected', 'listener_manager.lds.update_rejected',
                     'http.ingress.rds.main.update_rejected', 'cluster.a.update_rejected',
                     'cluster_manager.cds.update_failure', 'listener_manager.lds.update_failure',
                     'sds.upstream_ca.update_rejected', 'sds.upstream_ca.update_failure'):
            self.assertEqual(stats.get(name, 0), 0, name)
        self.assertEqual(stats['cluster_manager.cds.update_success'], counts['cds'] + 1)
        self.assertEqual(stats['listener_manager.lds.update_success'], counts['lds'] + 1)
        self.assertEqual(stats['http.ingress.rds.main.update_success'], counts['rds'] + 1)
        self.assertEqual(stats['sds.upstream_ca.update_success'], counts['sds'] + 1)
        # The load went through b, over TLS, across the secret's rotations.
        self.assertGreater(stats.get('cluster.b.ssl.handshake', 0), 0)
        self.assertEqual(stats.get('cluster.b.ssl.fail_verify_error', 0), 0)
        # The last state serves: routes, clusters and the second listener as last written.
        self.assertEqual(h.http_request(self.port, 'GET', '/load/y').status, 200)


if __name__ == '__main__':
    unittest.main()
