"""CDS from a watched file (bootstrap dynamic_resources.cds_config.path_config_source): the
file holds a DiscoveryResponse; each change is applied whole or not at all, while requests
keep flowing. Covers adding, changing and removing clusters (a removed cluster's requests are
answered 503 NC), state that survives an update (pooled upstream connections), an invalid
update that changes nothing and is counted and logged with its path, the three ways a file
changes (atomic rename, in-place write, a Kubernetes ..data symlink swap) each picked up
once, and continuous load across many updates without a failed request.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_cds_file.py -v
"""

import json
import os
import shutil
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

CLUSTER_TYPE = 'type.googleapis.com/envoy.config.cluster.v3.Cluster'


def cluster(name, port, **extra):
    c = h.cluster(name, [port], **extra)
    c['@type'] = CLUSTER_TYPE
    return c


def cds(version, *clusters):
    return json.dumps({'version_info': version, 'resources': list(clusters)})


def config(port, admin, cds_path, watched_dir=None, routes=('a', 'b')):
    rts = [h.route_prefix('/%s/' % n, n, timeout='5s') for n in routes]
    rc = h.route_config([h.vhost('all', ['*'], rts)], validate_clusters=False)
    pcs = {'path': cds_path}
    if watched_dir:
        pcs['watched_directory'] = {'path': watched_dir}
    return h.bootstrap([h.listener('http', port, [h.http_connection_manager('ingress', rc)])],
                       [], admin_port=admin,
                       dynamic_resources={'cds_config': {'path_config_source': pcs,
                                                         'resource_api_version': 'V3'}})


class CdsCase(unittest.TestCase):

    def setUp(self):
        self.up_a = HttpUpstream(name='A')
        self.up_b = HttpUpstream(name='B')
        self.addCleanup(self.up_a.close)
        self.addCleanup(self.up_b.close)
        self.port, self.admin = h.free_ports(2)
        self.dir = tempfile.mkdtemp(prefix='petrel-cds-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.cds_path = os.path.join(self.dir, 'cds.json')

    def write(self, text, name='cds.json'):
        """Atomically (a rename), as a control loop writing the file would."""
        path = os.path.join(self.dir, name)
        with open(path + '.tmp', 'w') as f:
            f.write(text)
        os.replace(path + '.tmp', path)
        return path

    def start(self, first):
        self.write(first)
        self.p = h.Petrel(config(self.port, self.admin, self.cds_path))
        self.addCleanup(self.p.close)
        self.p.start()
        return self.p

    def get(self, path):
        return h.http_request(self.port, 'GET', path)

    def wait_version(self, version):
        h.wait_until(lambda: self.p.admin_get('/stats')[2].decode().find(
            'cluster_manager.cds.version_text: "%s"' % version) >= 0, 10,
            message='cds version %s applied' % version)


class CdsTest(CdsCase):

    def test_add_change_remove(self):
        p = self.start(cds('1', cluster('a', self.up_a.port)))
        r = self.get('/a/x')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.get('x-upstream-name'), 'A')
        # b does not exist yet: 503 NC, as Envoy answers a missing cluster.
        r = self.get('/b/x')
        self.assertEqual(r.status, 503)
        p.wait_stat('http.ingress.no_cluster', 1)
        # Add b, point a at B: both picked up.
        self.write(cds('2', cluster('a', self.up_b.port),
                                     cluster('b', self.up_a.port)))
        self.wait_version('2')
        self.assertEqual(self.get('/a/x').get('x-upstream-name'), 'B')
        self.assertEqual(self.get('/b/x').get('x-upstream-name'), 'A')
        self.assertEqual(p.stat('cluster_manager.cluster_added'), 2)
        self.assertEqual(p.stat('cluster_manager.cluster_modified'), 1)
        status, _, body = p.admin_get('/clusters')
        self.assertIn(b'a::added_via_api::true', body)
        # Remove a.
        self.write(cds('3', cluster('b', self.up_a.port)))
        self.wait_version('3')
        self.assertEqual(self.get('/a/x').status, 503)
        self.assertEqual(self.get('/b/x').status, 200)
        self.assertEqual(p.stat('cluster_manager.cluster_removed'), 1)
        self.assertEqual(p.stat('cluster_manager.cds.update_success'), 3)
        self.assertEqual(p.stat('cluster_manager.active_clusters'), 1)
        # /config_dump in Envoy's shape: b from update 2, unchanged by update 3.
        dump = json.loads(p.admin_get('/config_dump')[2])
        cds_dump = [c for c in dump['configs']
                    if c['@type'] == 'type.googleapis.com/envoy.admin.v3.ClustersConfigDump'][0]
        self.assertEqual(cds_dump['version_info'], '3')
        self.assertEqual(cds_dump['static_clusters'], [])
        active = cds_dump['dynamic_active_clusters']
        self.assertEqual([(c['cluster']['name'], c['version_info']) for c in active],
                         [('b', '2')])
        self.assertRegex(active[0]['last_updated'], r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$')
        # The cluster as configured, its type URL included (the text kept of it leaves the
        # URL out and puts it back).
        self.assertEqual(active[0]['cluster'], cluster('b', self.up_a.port))
        eds = [c for c in dump['configs']
               if c['@type'] == 'type.googleapis.com/envoy.admin.v3.EndpointsConfigDump'][0]
        self.assertEqual(eds['static_endpoint_configs'][0]['endpoint_config']['cluster_name'], 'b')

    def test_invalid_update_changes_nothing(self):
        p = self.start(cds('1', cluster('a', self.up_a.port)))
        self.assertEqual(self.get('/a/x').status, 200)
        bad = cluster('b', self.up_b.port)
        bad['connect_timeout'] = 'soon'
        self.write(cds('2', cluster('a', self.up_b.port), bad))
        p.wait_stat('cluster_manager.cds.update_rejected', 1)
        p.wait_log(r'resources\[1\]\.connect_timeout: "soon" is not a duration')
        # Nothing of update 2 took effect: a still goes to A, b does not exist.
        self.assertEqual(self.get('/a/x').get('x-upstream-name'), 'A')
        self.assertEqual(self.get('/b/x').status, 503)
        self.assertIn(b'"1"', [l for l in p.admin_get('/stats')[2].splitlines()
                               if b'cds.version_text' in l][0])
        dump = json.loads(p.admin_get('/config_dump')[2])
        cds_dump = [c for c in dump['configs'] if 'dynamic_active_clusters' in c][0]
        self.assertEqual(cds_dump['version_info'], '1')
        self.assertEqual(cds_dump['last_rejected_update']['version_info'], '2')
        self.assertIn('resources[1].connect_timeout', cds_dump['last_rejected_update']['details'])
        # Not parsable at all: a failure, also changing nothing.
        self.write('{not json')
        p.wait_stat('cluster_manager.cds.update_failure', 1)
        self.assertEqual(self.get('/a/x').get('x-upstream-name'), 'A')
        # A good update after them is applied.
        self.write(cds('3', cluster('a', self.up_b.port)))
        self.wait_version('3')
        self.assertEqual(self.get('/a/x').get('x-upstream-name'), 'B')

    def test_unchanged_host_keeps_its_pooled_connection(self):
        p = self.start(cds('1', cluster('a', self.up_a.port, connect_timeout='1s')))
        for _ in range(5):
            self.assertEqual(self.get('/a/x').status, 200)
        conns = self.up_a.connections
        # A new version of the cluster (another connect timeout), same host: same pool.
        self.write(cds('2', cluster('a', self.up_a.port, connect_timeout='2s')))
        self.wait_version('2')
        for _ in range(5):
            self.assertEqual(self.get('/a/x').status, 200)
        self.assertEqual(self.up_a.connections, conns)

    def test_ways_a_file_changes(self):
        p = self.start(cds('1', cluster('a', self.up_a.port)))
        attempts = p.stat('cluster_manager.cds.update_attempt')
        # In place: truncate and write.
        with open(self.cds_path, 'w') as f:
            f.write(cds('2', cluster('a', self.up_b.port)))
        self.wait_version('2')
        self.assertEqual(self.get('/a/x').get('x-upstream-name'), 'B')
        # Atomic rename (write_file).
        self.write(cds('3', cluster('a', self.up_a.port)))
        self.wait_version('3')
        # Each change counted once: two changes, two attempts.
        time.sleep(h.scaled(0.3))
        self.assertEqual(p.stat('cluster_manager.cds.update_attempt'), attempts + 2)
        # The same bytes again: nothing to apply, nothing counted.
        self.write(cds('3', cluster('a', self.up_a.port)))
        time.sleep(h.scaled(0.3))
        self.assertEqual(p.stat('cluster_manager.cds.update_attempt'), attempts + 2)

    def test_kubernetes_configmap_swap(self):
        # A ConfigMap volume: the file is a symlink into ..data, itself a symlink to a
        # timestamped directory swapped atomically by rename.
        d = os.path.join(self.dir, 'cm')
        os.makedirs(os.path.join(d, '..v1'))
        with open(os.path.join(d, '..v1', 'cds.json'), 'w') as f:
            f.write(cds('1', cluster('a', self.up_a.port)))
        os.symlink('..v1', os.path.join(d, '..data'))
        os.symlink('..data/cds.json', os.path.join(d, 'cds.json'))
        cfg = config(self.port, self.admin, os.path.join(d, 'cds.json'), watched_dir=d)
        with h.Petrel(cfg) as p:
            self.p = p
            self.assertEqual(self.get('/a/x').get('x-upstream-name'), 'A')
            os.makedirs(os.path.join(d, '..v2'))
            with open(os.path.join(d, '..v2', 'cds.json'), 'w') as f:
                f.write(cds('2', cluster('a', self.up_b.port)))
            os.symlink('..v2', os.path.join(d, '..data_tmp'))
            os.rename(os.path.join(d, '..data_tmp'), os.path.join(d, '..data'))
            self.wait_version('2')
            self.assertEqual(self.get('/a/x').get('x-upstream-name'), 'B')
            self.assertEqual(p.stat('cluster_manager.cds.update_success'), 2)

    def test_removed_cluster_with_pooled_connections_lets_go(self):
        # Requests left pooled connections to a on both workers; a is removed: the idle ones
        # close at once, and with the pools gone a's last version and its stats go too.
        self.p = h.Petrel(config(self.port, self.admin, self.cds_path), concurrency=2)
        self.write(cds('1', cluster('a', self.up_a.port)))
        self.addCleanup(self.p.close)
        p = self.p
        p.start()
        for _ in range(4):
            with h.HttpClientConn(self.port) as c:
                self.assertEqual(c.request('GET', '/a/x').status, 200)
        p.wait_stat('cluster.a.upstream_rq_active', 0)
        self.assertEqual(p.stat('cluster.a.upstream_cx_destroy'), 0)
        self.write(cds('2'))
        self.wait_version('2')
        h.wait_until(lambda: p.stat('cluster.a.upstream_cx_total') is None, 10,
                     message='the removed cluster\'s stats released')
        # Added again: a new cluster, counting from zero.
        self.write(cds('3', cluster('a', self.up_a.port)))
        self.wait_version('3')
        self.assertEqual(self.get('/a/x').status, 200)
        self.assertEqual(p.stat('cluster.a.upstream_cx_total'), 1)

    def test_request_in_flight_across_removal_completes(self):
        # A request whose body is still coming holds one upstream connection; a second
        # request left another one idle. a is removed: the idle connection closes at once,
        # the busy one carries its request to the end (the stream pins the cluster version
        # it resolved), then closes, and a's stats go.
        p = self.start(cds('1', cluster('a', self.up_a.port)))
        busy = h.HttpClientConn(self.port)
        self.addCleanup(busy.close)
        busy.send_raw(b'POST /a/x HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n12345')
        p.wait_stat('cluster.a.upstream_rq_active', 1)
        self.assertEqual(self.get('/a/x').status, 200)
        p.wait_stat('cluster.a.upstream_cx_active', 2)
        self.write(cds('2'))
        self.wait_version('2')
        p.wait_stat('cluster.a.upstream_cx_active', 1)
        self.assertEqual(p.stat('cluster.a.upstream_cx_destroy'), 1)
        self.assertEqual(p.stat('cluster.a.upstream_rq_active'), 1)
        busy.send_raw(b'67890')
        r = busy.read_response()
        self.assertEqual(r.status, 200)
        self.assertEqual(self.up_a.requests[-1]['body_len'], 10)
        busy.close()  # (an open downstream connection pins the view it started with)
        h.wait_until(lambda: p.stat('cluster.a.upstream_cx_total') is None, 10,
                     message='the removed cluster\'s stats released')

    def test_thousands_added_and_removed_leave_nothing(self):
        # 2,000 clusters with 10 endpoints each (EDS), added, then removed: their versions,
        # hosts and stats go, and the memory returns (within 4 MiB of where it was: what
        # the allocator and the tables keep). Under sanitizers only the leak check applies
        # (the sanitizer's quarantine holds freed memory).
        n = 2000
        eds_path = os.path.join(self.dir, 'eds.json')

        def eds_cluster(i):
            return {'@type': CLUSTER_TYPE, 'name': 'c%d' % i, 'type': 'EDS',
                    'connect_timeout': '1s', 'eds_cluster_config': {'eds_config': {
                        'path_config_source': {'path': eds_path}}}}
        cla_type = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment'
        assignments = [{'@type': cla_type, 'cluster_name': 'c%d' % i, 'endpoints': [
            {'lb_endpoints': [{'endpoint': {'address': h.socket_address(
                '10.0.%d.%d' % (i >> 8, i & 255), 20000 + k)}} for k in range(10)]}]}
            for i in range(n)]
        self.write(json.dumps({'version_info': '1', 'resources': assignments}), 'eds.json')
        p = self.start(cds('1'))
        time.sleep(h.scaled(2.5))  # two housekeeping ticks: a settled baseline
        base = p.rss_kb()
        self.write(cds('2', *[eds_cluster(i) for i in range(n)]))
        self.wait_version('2')
        self.assertEqual(p.stat('cluster_manager.active_clusters'), n)
        self.assertEqual(p.stat('cluster.c1999.membership_total'), 10)
        grown = p.rss_kb() - base
        self.write(cds('3'))
        self.wait_version('3')
        h.wait_until(lambda: p.stat('cluster.c0.membership_total') is None, 10,
                     message='the removed clusters\' stats released')
        self.assertEqual(p.stat('cluster_manager.active_clusters'), 0)
        if not h.SANITIZE:
            self.assertGreater(grown, 8 * 1024)  # the clusters did take memory
            h.wait_until(lambda: p.rss_kb() - base < 4 * 1024, 10,
                         message='RSS back within 4 MiB of %d KiB (now %d)' % (base, p.rss_kb()))

    def test_bad_file_at_start_fails_the_start(self):
        bad = cluster('a', self.up_a.port)
        bad['lb_policy'] = 'NOPE'
        self.write(cds('1', bad))
        boot = self.write(json.dumps(config(self.port, self.admin, self.cds_path)), 'boot.json')
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', boot])
        self.assertEqual(rc, 1)
        self.assertIn('dynamic_resources.cds_config', err)
        self.assertIn('resources[0].lb_policy', err)
        os.unlink(self.cds_path)
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', boot])
        self.assertEqual(rc, 1)
        self.assertIn('cds.json', err)


class CdsUnderLoadTest(CdsCase):

    def test_no_request_fails_across_updates(self):
        p = self.start(cds('0', cluster('a', self.up_a.port), cluster('b', self.up_b.port)))
        stop = threading.Event()
        results = {'ok': 0, 'failed': []}
        lock = threading.Lock()

        def load(path):
            while not stop.is_set():
                try:
                    with h.HttpClientConn(self.port) as c:
                        for _ in range(50):
                            r = c.request('GET', path)
                            with lock:
                                if r.status == 200:
                                    results['ok'] += 1
                                else:
                                    results['failed'].append(r.status)
                            if r.will_close or stop.is_set():
                                break
                except (OSError, h.ConnectionClosed, h.IncompleteResponse) as e:
                    with lock:
                        results['failed'].append(repr(e))

        threads = [threading.Thread(target=load, args=(path,))
                   for path in ('/a/x', '/a/y', '/b/x', '/b/y')]
        for t in threads:
            t.start()
        try:
            # Endpoints, settings and the set of clusters change under the load (a stays).
            for v in range(1, 31):
                # Updates land while requests flow: wait for a few between each, whatever
                # the machine's speed.
                with lock:
                    before = results['ok']
                h.wait_until(lambda: results['ok'] >= before + 4 or results['failed'], 20,
                             message='requests before update %d' % v)
                ups = (self.up_a.port, self.up_b.port) if v % 2 else (self.up_b.port,
                                                                      self.up_a.port)
                extra = {'connect_timeout': '%ds' % (1 + v % 3)}
                clusters = [cluster('a', ups[0], **extra), cluster('b', ups[1])]
                if v % 5 == 0:
                    clusters.append(cluster('spare%d' % v, ups[0]))
                self.write(cds(str(v), *clusters))
                self.wait_version(str(v))
        finally:
            stop.set()
            for t in threads:
                t.join(h.scaled(20))
        self.assertEqual(results['failed'], [])
        self.assertGreaterEqual(results['ok'], 120)
        self.assertEqual(p.stat('cluster_manager.cds.update_success'), 31)


if __name__ == '__main__':
    unittest.main()
