"""xDS pushes under continuous load: a fixed-rate stream of at least 100,000 requests
(bench/ptload.c, open loop over keep-alive connections) runs while the control plane
(tools/xds-control-plane) pushes more than 100 updates over ADS, changing endpoints (EDS),
clusters (CDS: settings changed, a cluster added and removed), routes (RDS: the route the
load takes moves between clusters, others come and go) and listeners (LDS: a second
listener added, changed and removed). Every update must be ACKed (none NACKed) and not one
request may fail: no 5xx, no reset, no unanswered request. Once over the state of the world
protocol, once over delta.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_xds_under_load.py -v
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from test_reload_under_load import build_ptload  # noqa: E402
from test_xds_ads import (CDS, CP_MISSING, EDS, LDS, RDS, ControlPlane,  # noqa: E402
                          assignment, bootstrap, eds_cluster)
from upstreams import HttpUpstream  # noqa: E402

UPDATES = 104                  # at least 100
REQUESTS = 100000              # at least this many, all answered 2xx
RATE = 1250 if h.SANITIZE else 2500
CONNS = 16
KINDS = ['endpoints', 'clusters', 'routes', 'listeners']
TYPE_OF = {'endpoints': EDS, 'clusters': CDS, 'routes': RDS, 'listeners': LDS}


@unittest.skipIf(CP_MISSING is not None, CP_MISSING or '')
class XdsUnderLoadTest(unittest.TestCase):

    def setUp(self):
        self.ups = [HttpUpstream(name='U%d' % i) for i in range(4)]
        for u in self.ups:
            self.addCleanup(u.close)
        self.port, self.port2, self.admin = h.free_ports(3)
        self.dir = tempfile.mkdtemp(prefix='petrel-xds-load-')
        self.addCleanup(shutil.rmtree, self.dir, True)

    # ---- resources: the u-th update of each kind differs from the one before -----------

    def routes(self, u):
        # The load's route moves between a and b; an extra route comes and goes.
        rts = [{'match': {'prefix': '/load/'},
                'route': {'cluster': 'a' if u % 2 else 'b', 'timeout': '10s'}}]
        if u % 3 == 0:
            rts.insert(0, {'match': {'prefix': '/extra%d/' % u},
                           'route': {'cluster': 'b', 'timeout': '10s'}})
        return [{'name': 'main', 'virtual_hosts': [{'name': 'all', 'domains': ['*'],
                                                    'routes': rts}]}]

    def listeners(self, u):
        # The load's listener, always the same; a second one absent, then present with one
        # cluster, then the other.
        load = h.listener('load', self.port, [h.http_connection_manager('ingress', None, rds={
            'route_config_name': 'main',
            'config_source': {'ads': {}, 'resource_api_version': 'V3'}})])
        hcm = load['filter_chains'][0]['filters'][0]['typed_config']
        hcm.pop('route_config', None)
        out = [load]
        if u % 3 != 0:
            out.append(h.listener('second', self.port2, [h.http_connection_manager(
                'second', h.route_config([h.vhost('all', ['*'], [
                    h.route_prefix('/', 'a' if u % 3 == 1 else 'b', timeout='10s')])]))]))
        return out

    def clusters(self, u):
        a = eds_cluster('a')
        a['connect_timeout'] = '%ds' % (1 + u % 3)
        cs = [a, eds_cluster('b')]
        if u % 4 == 0:
            cs.append(eds_cluster('spare'))
        return cs

    def endpoints(self, u):
        # Every cluster always has a live endpoint; which ones changes.
        sets = [(0,), (1,), (0, 1), (2, 0)]
        port = lambda i: self.ups[i].port  # noqa: E731
        return [assignment('a', *[port(i) for i in sets[u % 4]]),
                assignment('b', *[port(i) for i in sets[(u + 1) % 4]]),
                assignment('spare', port(3))]

    # ---- the test ----------------------------------------------------------------------

    def run_load(self, delta):
        ptload = build_ptload(self.dir)
        cp = ControlPlane({k: getattr(self, k)(0) for k in KINDS})
        self.addCleanup(cp.close)
        cfg = bootstrap(cp.port, self.admin, delta=delta)
        p = h.Petrel(cfg, concurrency=2, extra_args=['--drain-time-s', '2'])
        self.addCleanup(p.close)
        p.start()
        h.wait_until(lambda: all(cp.acked(t, '1') for t in TYPE_OF.values()), 20,
                     message='the first push not ACKed')
        h.wait_until(lambda: h.port_listening(self.port), 10)
        h.wait_until(lambda: h.http_request(self.port, 'GET', '/load/x').status == 200, 10)

        seconds = REQUESTS // RATE + 4
        load = subprocess.Popen([ptload, 'rate', '127.0.0.1', str(self.port), '/load/x',
                                 str(RATE), str(seconds), str(CONNS), '0'],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: load.poll() is None and load.kill())
        versions = {k: 1 for k in KINDS}
        start = time.monotonic()
        spacing = seconds * 0.75 / UPDATES
        for v in range(1, UPDATES + 1):
            kind = KINDS[v % len(KINDS)]
            cp.push(**{kind: getattr(self, kind)(versions[kind])})
            versions[kind] += 1
            want = str(versions[kind])
            h.wait_until(lambda: cp.acked(TYPE_OF[kind], want), 10,
                         message='%s version %s not ACKed' % (kind, want))
            delay = start + v * spacing - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        out, err = load.communicate(timeout=h.scaled(seconds + 60))
        result = json.loads(out.strip().splitlines()[-1])
        self.assertEqual(result['errors'], 0, 'ptload: %s %s' % (result, err[-300:]))
        self.assertGreaterEqual(result['completed'], REQUESTS, result)
        self.assertEqual(cp.events('nack'), [])
        stats = p.stats()
        for name in ('cluster_manager.cds.update_rejected', 'listener_manager.lds.update_rejected',
                     'http.ingress.rds.main.update_rejected', 'cluster.a.update_rejected'):
            self.assertEqual(stats.get(name, 0), 0, name)
        self.assertEqual(stats['control_plane.connected_state'], 1)
        # The last state serves.
        self.assertEqual(h.http_request(self.port, 'GET', '/load/y').status, 200)

    # Under the sanitizers (twice as long at half the rate) delta alone runs: after decoding,
    # both protocols apply through the same path, and the suite stays short.
    @unittest.skipIf(h.SANITIZE, 'the delta variant covers the sanitized run')
    def test_state_of_the_world(self):
        self.run_load(delta=False)

    def test_delta(self):
        self.run_load(delta=True)


if __name__ == '__main__':
    unittest.main(verbosity=2)
