"""EDS from a watched file: clusters of type EDS get their endpoints from a file holding
ClusterLoadAssignments (a DiscoveryResponse). Endpoint changes apply while requests flow; a
host that stays keeps its health verdict (a health-checked cluster keeps serving through an
update that adds a host, which waits for its first check); a bad assignment changes nothing
and is counted; several clusters share one file; EDS clusters can come from CDS.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_eds_file.py -v
"""

import json
import re
import os
import shutil
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

CLA_TYPE = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment'
CLUSTER_TYPE = 'type.googleapis.com/envoy.config.cluster.v3.Cluster'


def cla(name, *ports):
    return {'@type': CLA_TYPE, 'cluster_name': name, 'endpoints': [{'lb_endpoints': [
        {'endpoint': {'address': h.socket_address('127.0.0.1', p)}} for p in ports]}]}


def response(version, *resources):
    return json.dumps({'version_info': version, 'resources': list(resources)})


def eds_cluster(name, path, service_name=None, **extra):
    c = {'name': name, 'type': 'EDS', 'connect_timeout': '1s',
         'eds_cluster_config': {'eds_config': {'path_config_source': {'path': path},
                                               'resource_api_version': 'V3'}}}
    if service_name:
        c['eds_cluster_config']['service_name'] = service_name
    c.update(extra)
    return c


class EdsCase(unittest.TestCase):

    def setUp(self):
        self.ups = [HttpUpstream(name=n) for n in ('A', 'B', 'C')]
        for u in self.ups:
            self.addCleanup(u.close)
        self.port, self.admin = h.free_ports(2)
        self.dir = tempfile.mkdtemp(prefix='petrel-eds-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.eds_path = os.path.join(self.dir, 'eds.json')

    def write(self, text, name='eds.json'):
        path = os.path.join(self.dir, name)
        with open(path + '.tmp', 'w') as f:
            f.write(text)
        os.replace(path + '.tmp', path)
        return path

    def start(self, clusters, routes=('a',), dynamic=None, wait_ready=True):
        rts = [h.route_prefix('/%s/' % n, n, timeout='5s') for n in routes]
        rc = h.route_config([h.vhost('all', ['*'], rts)], validate_clusters=False)
        extra = {'dynamic_resources': dynamic} if dynamic else {}
        cfg = h.bootstrap([h.listener('http', self.port, [
            h.http_connection_manager('ingress', rc)])], clusters, admin_port=self.admin,
            **extra)
        self.p = h.Petrel(cfg, wait_ready=wait_ready)
        self.addCleanup(self.p.close)
        self.p.start()
        return self.p

    def names(self, path, n=6):
        return {h.http_request(self.port, 'GET', path).get('x-upstream-name') for _ in range(n)}


class EdsTest(EdsCase):

    def test_endpoints_follow_the_file(self):
        self.write(response('1', cla('a', self.ups[0].port)))
        p = self.start([eds_cluster('a', self.eds_path)])
        self.assertEqual(self.names('/a/x'), {'A'})
        self.write(response('2', cla('a', self.ups[1].port, self.ups[2].port)))
        h.wait_until(lambda: self.names('/a/x') == {'B', 'C'}, 10)
        self.assertEqual(p.stat('cluster.a.update_success'), 2)
        self.assertEqual(p.stat('cluster.a.membership_total'), 2)
        # An empty assignment: no hosts, 503 no healthy upstream.
        self.write(response('3', cla('a')))
        h.wait_until(lambda: h.http_request(self.port, 'GET', '/a/x').status == 503, 10)

    def test_bad_assignment_changes_nothing(self):
        self.write(response('1', cla('a', self.ups[0].port)))
        p = self.start([eds_cluster('a', self.eds_path)])
        bad = cla('a', self.ups[1].port)
        bad['endpoints'][0]['lb_endpoints'][0]['endpoint']['address']['socket_address'][
            'address'] = 'not-an-ip'
        self.write(response('2', bad))
        p.wait_stat('cluster_manager.eds.update_rejected', 1)
        p.wait_log(r'resources\[0\]\.endpoints\[0\]\.lb_endpoints\[0\]\.endpoint\.address')
        self.assertEqual(p.stat('cluster.a.update_rejected'), 1)
        self.assertEqual(self.names('/a/x'), {'A'})

    def test_bad_files_read_resource_by_resource(self):
        # A JSON file is read one assignment at a time; what is wrong is still found
        # whole-or-nothing: a bad element rejects the update (even after a good one that
        # would change a cluster), text that is not JSON is a failure, as read whole.
        self.write(response('1', cla('a', self.ups[0].port), cla('b', self.ups[1].port)))
        p = self.start([eds_cluster('a', self.eds_path), eds_cluster('b', self.eds_path)],
                       routes=('a', 'b'))
        good = cla('a', self.ups[2].port)
        self.write(json.dumps({'version_info': '2', 'resources': [good, {'@type': 'x'}]}))
        p.wait_stat('cluster_manager.eds.update_rejected', 1)
        p.wait_log(r'resources\[1\]\.@type: is x, expected')
        self.write(json.dumps({'version_info': '3', 'resources': [good, cla('a', 1)]}))
        p.wait_stat('cluster_manager.eds.update_rejected', 2)
        p.wait_log(r'resources\[1\]: duplicate name "a" \(resources\[0\] has it too\)')
        self.write('{"version_info": "4", "resources": [%s %s]}' % (
            json.dumps(good), json.dumps(cla('b', self.ups[2].port))))
        p.wait_stat('cluster_manager.eds.update_failure', 1)
        self.write('{"version_info": "5", "resources": [%s, {"@type": ]}' % json.dumps(good))
        p.wait_stat('cluster_manager.eds.update_failure', 2)
        self.assertEqual(self.names('/a/x'), {'A'})
        self.assertEqual(self.names('/b/x'), {'B'})
        self.assertEqual(p.stat('cluster.a.update_success'), 1)
        # A good one after them applies, wrapped resources and all.
        self.write(json.dumps({'version_info': '6', 'resources': [good, {
            '@type': 'type.googleapis.com/envoy.service.discovery.v3.Resource', 'name': 'b',
            'resource': cla('b', self.ups[2].port)}]}))
        h.wait_until(lambda: self.names('/a/x') == {'C'} and self.names('/b/x') == {'C'}, 10)
        self.assertEqual(p.stat('cluster_manager.eds.update_success'), 2)

    def test_unchanged_assignments_known_by_their_text(self):
        # A JSON file's assignments whose bytes are those in force are taken as they are,
        # not parsed again; duplicates among them and the parsed ones are still refused.
        a, b = cla('a', self.ups[0].port), cla('b', self.ups[1].port)
        self.write(response('1', a, b))
        p = self.start([eds_cluster('a', self.eds_path), eds_cluster('b', self.eds_path)],
                       routes=('a', 'b'))
        self.write(response('2', a, cla('b', self.ups[2].port)))
        p.wait_log(r'eds: version 2 of .*: endpoints of 1 cluster changed')
        h.wait_until(lambda: self.names('/b/x') == {'C'}, 10)
        # The same bytes twice, and known bytes then a new assignment of the same name.
        self.write(response('3', a, a))
        p.wait_stat('cluster_manager.eds.update_rejected', 1)
        p.wait_log(r'resources\[1\]: duplicate name "a" \(resources\[0\] has it too\)')
        self.write(response('4', a, cla('a', self.ups[1].port)))
        p.wait_stat('cluster_manager.eds.update_rejected', 2)
        self.assertEqual(len(re.findall(r'resources\[1\]: duplicate name "a"', p.log())), 2)
        # Written differently, the same assignment changes nothing; then a real change.
        self.write(json.dumps({'version_info': '5', 'resources': [a]}, indent=3))
        p.wait_log(r'eds: version 5 of .*: endpoints of 0 clusters changed')
        self.write(json.dumps({'version_info': '6', 'resources': [
            cla('a', self.ups[2].port)]}, indent=3))
        h.wait_until(lambda: self.names('/a/x') == {'C'}, 10)
        self.assertEqual(self.names('/b/x'), {'C'})

    def test_assignments_moved_added_and_removed_in_a_shared_file(self):
        # The assignments known from the last read are looked for where they were (after
        # the one recognized last): insertions, removals, moves and a change of the same
        # length must each still be read right.
        A, B, C = (u.port for u in self.ups)
        names = ('a', 'b', 'c', 'd')
        self.write(response('1', cla('a', A), cla('b', B), cla('c', A), cla('d', B)))
        p = self.start([eds_cluster(n, self.eds_path) for n in names], routes=names)

        def changed(version, count):
            p.wait_log(r'eds: version %s of .*: endpoints of %d clusters? changed' % (
                version, count))

        # an unknown assignment first, c changed
        self.write(response('2', cla('x', C), cla('a', A), cla('b', B), cla('c', C),
                            cla('d', B)))
        changed(2, 1)
        # b left out (it keeps its endpoints), d moved first: nothing changes
        self.write(response('3', cla('d', B), cla('a', A), cla('c', C)))
        changed(3, 0)
        # a's port for another of the same length: its text is as long as before
        self.assertEqual(len(str(A)), len(str(C)))
        self.write(response('4', cla('d', B), cla('a', C), cla('c', C)))
        changed(4, 1)
        want = {'a': {'C'}, 'b': {'B'}, 'c': {'C'}, 'd': {'B'}}
        for n in names:
            self.assertEqual(self.names('/%s/x' % n), want[n], n)
        # A member after the list: read whole, rejected once for what it is (an invalid
        # envelope, which no cluster's counts see: the first reading left no trace).
        self.write(response('5', cla('d', A), cla('a', A))[:-1] + ', "bogus": []}')
        p.wait_stat('cluster_manager.eds.update_rejected', 1)
        p.wait_log(r'bogus: unknown field')
        self.assertEqual(p.stat('cluster_manager.eds.update_attempt'), 5)
        self.assertEqual(p.stat('cluster.a.update_attempt'), 4)
        self.assertEqual(p.stat('cluster.a.update_rejected'), 0)
        # The resources before the version: read whole, applied.
        self.write('{"resources": [%s], "version_info": "6"}' % json.dumps(cla('a', A)))
        changed(6, 1)
        self.assertEqual(self.names('/a/x'), {'A'})
        self.assertEqual(p.stat('cluster_manager.eds.update_success'), 5)
        self.assertEqual(p.stat('cluster.a.update_attempt'), 5)

    def test_shared_file_and_service_name(self):
        self.write(response('1', cla('svc-a', self.ups[0].port), cla('b', self.ups[1].port)))
        self.start([eds_cluster('a', self.eds_path, service_name='svc-a'),
                    eds_cluster('b', self.eds_path)], routes=('a', 'b'))
        self.assertEqual(self.names('/a/x'), {'A'})
        self.assertEqual(self.names('/b/x'), {'B'})
        # An update naming only b: a keeps its endpoints (EDS resources are not all resent).
        self.write(response('2', cla('b', self.ups[2].port)))
        h.wait_until(lambda: self.names('/b/x') == {'C'}, 10)
        self.assertEqual(self.names('/a/x'), {'A'})

    def test_health_checked_cluster_keeps_serving_through_an_update(self):
        hc = {'timeout': '1s', 'interval': '0.1s', 'no_traffic_interval': '0.1s',
              'unhealthy_threshold': 2, 'healthy_threshold': 1,
              'http_health_check': {'path': '/healthz'}}
        self.write(response('1', cla('a', self.ups[0].port, self.ups[1].port)))
        # Hosts the file drops go at once (the default keeps healthy ones: next test).
        p = self.start([eds_cluster('a', self.eds_path, health_checks=[hc],
                                    ignore_health_on_host_removal=True)])
        p.wait_stat('cluster.a.membership_healthy', 2)
        failures = []
        stop = threading.Event()

        def load():
            while not stop.is_set():
                r = h.http_request(self.port, 'GET', '/a/x')
                if r.status != 200:
                    failures.append(r.status)

        t = threading.Thread(target=load)
        t.start()
        try:
            # Add a host (waits for its first check), then change weights: the hosts that
            # stay keep their verdict, no request finds no healthy host.
            for v, ports in enumerate([(0, 1, 2), (1, 2), (0, 1, 2), (0, 1)], start=2):
                self.write(response(str(v), cla('a', *[self.ups[i].port for i in ports])))
                p.wait_stat('cluster.a.update_success', v)
                p.wait_stat('cluster.a.membership_healthy', len(ports))
        finally:
            stop.set()
            t.join(h.scaled(10))
        self.assertEqual(failures, [])

    def test_removed_host_stays_while_healthy(self):
        # Envoy's default: a host the assignment drops stays, pending removal, while active
        # health checks find it healthy, and takes traffic; it goes once it fails them.
        hc = {'timeout': '1s', 'interval': '0.1s', 'no_traffic_interval': '0.1s',
              'unhealthy_threshold': 1, 'healthy_threshold': 1,
              'http_health_check': {'path': '/healthz'}}
        a, b = self.ups[0], self.ups[1]
        self.write(response('1', cla('a', a.port, b.port)))
        p = self.start([eds_cluster('a', self.eds_path, health_checks=[hc])])
        p.wait_stat('cluster.a.membership_healthy', 2)
        self.write(response('2', cla('a', a.port)))
        p.wait_stat('cluster.a.update_success', 2)
        self.assertEqual(p.stat('cluster.a.membership_total'), 2)
        self.assertEqual(self.names('/a/x', 10), {'A', 'B'})
        clusters = p.admin_get('/clusters')[2].decode()
        self.assertIn('a::127.0.0.1:%d::health_flags::/pending_dynamic_removal' % b.port,
                      clusters)
        self.assertIn('a::127.0.0.1:%d::health_flags::healthy' % a.port, clusters)
        # An update that keeps it dropped (and adds c): still pending.
        c = self.ups[2]
        self.write(response('3', cla('a', a.port, c.port)))
        p.wait_stat('cluster.a.update_success', 3)
        self.assertEqual(p.stat('cluster.a.membership_total'), 3)
        p.wait_stat('cluster.a.membership_healthy', 3)
        # It fails its checks: removed.
        b.set_status(503)
        p.wait_stat('cluster.a.membership_total', 2, timeout=10)
        self.assertEqual(self.names('/a/x', 10), {'A', 'C'})
        self.assertIn('failed health checks: removed', p.log())
        b.set_status(None)
        # Listed again, it is an ordinary host (checked first).
        self.write(response('4', cla('a', a.port, b.port, c.port)))
        p.wait_stat('cluster.a.membership_healthy', 3)
        self.assertNotIn('pending_dynamic_removal', p.admin_get('/clusters')[2].decode())

    def test_removed_unhealthy_host_and_ignore_health_go_at_once(self):
        hc = {'timeout': '1s', 'interval': '0.1s', 'no_traffic_interval': '0.1s',
              'unhealthy_threshold': 1, 'healthy_threshold': 1,
              'http_health_check': {'path': '/healthz'}}
        a, b, c = self.ups
        self.write(response('1', cla('a', a.port, b.port), cla('i', a.port, c.port)))
        p = self.start([eds_cluster('a', self.eds_path, health_checks=[hc]),
                        eds_cluster('i', self.eds_path, health_checks=[hc],
                                    ignore_health_on_host_removal=True)], routes=('a', 'i'))
        p.wait_stat('cluster.a.membership_healthy', 2)
        p.wait_stat('cluster.i.membership_healthy', 2)
        # b fails first, then is dropped: no reason to keep it.
        b.set_status(503)
        p.wait_stat('cluster.a.membership_healthy', 1)
        self.write(response('2', cla('a', a.port), cla('i', a.port)))
        p.wait_stat('cluster.a.update_success', 2)
        self.assertEqual(p.stat('cluster.a.membership_total'), 1)
        # ignore_health_on_host_removal: the healthy c goes at once too.
        self.assertEqual(p.stat('cluster.i.membership_total'), 1)
        self.assertEqual(self.names('/i/x'), {'A'})

    def test_tls_context_made_once(self):
        # The cluster's TLS context (its certificates read, its SSL context made) is made
        # when the cluster is, and kept by every version with the same transport_socket:
        # with the CA file gone, endpoint updates and unrelated CDS changes still apply (they
        # would fail if the context were made again); a changed transport_socket is made
        # anew, and with the file gone that update is refused.
        import certs as C
        pki = C.standard_pki()
        srv = HttpUpstream(name='T', ssl_context=C.server_context(pki['backend']))
        self.addCleanup(srv.close)
        ca_path = os.path.join(self.dir, 'ca.pem')
        shutil.copy(pki['ca'].cert, ca_path)

        def tls_cluster(timeout='1s', sni=None):
            c = dict(eds_cluster('t', self.eds_path, connect_timeout=timeout),
                     transport_socket=C.upstream_tls(ca=ca_path, sni=sni))
            c['@type'] = CLUSTER_TYPE
            return c
        self.write(response('1', cla('t', srv.port)))
        cds_path = self.write(json.dumps({'version_info': '1', 'resources': [tls_cluster()]}),
                              'cds.json')
        p = self.start([], routes=('t',),
                       dynamic={'cds_config': {'path_config_source': {'path': cds_path}}})
        self.assertEqual(h.http_request(self.port, 'GET', '/t/x').status, 200)
        os.unlink(ca_path)
        self.write(response('2', cla('t', srv.port, self.ups[0].port)))
        p.wait_stat('cluster.t.update_success', 2)
        self.assertEqual(p.stat('cluster.t.update_rejected', 0), 0)
        self.write(json.dumps({'version_info': '2', 'resources': [tls_cluster('2s')]}),
                   'cds.json')
        p.wait_stat('cluster_manager.cds.update_success', 2)
        self.write(response('3', cla('t', srv.port)))
        p.wait_stat('cluster.t.update_success', 3)
        self.assertEqual(h.http_request(self.port, 'GET', '/t/x').status, 200)
        self.assertEqual(p.stat('ssl.context_config_update_by_sds', 0), 0)
        # A new transport_socket: made again, which needs the file.
        self.write(json.dumps({'version_info': '3', 'resources': [tls_cluster('2s', 'x.test')]}),
                   'cds.json')
        p.wait_stat('cluster_manager.cds.update_rejected', 1)
        self.assertIn('ca.pem', p.log())
        self.assertEqual(h.http_request(self.port, 'GET', '/t/x').status, 200)

    def ready(self):
        status, _, body = self.p.admin_get('/ready')
        return status, body.decode().strip()

    def test_ready_waits_for_the_first_endpoints(self):
        # At start the file has no assignment for a: petrel initializes (/ready 503), as
        # Envoy's server does until its clusters warmed, and goes live when it comes.
        self.write(response('1', cla('other', self.ups[0].port)))
        self.start([eds_cluster('a', self.eds_path)], wait_ready=False)
        self.assertEqual(self.ready(), (503, 'INITIALIZING'))
        self.assertIn('1 cluster waiting for endpoints', self.p.log())
        self.write(response('2', cla('a', self.ups[0].port)))
        h.wait_until(lambda: self.ready() == (200, 'LIVE'), 10)
        self.assertEqual(self.names('/a/x'), {'A'})
        info = json.loads(self.p.admin_get('/server_info')[2])
        self.assertEqual(info['state'], 'LIVE')

    def test_ready_after_initial_fetch_timeout(self):
        # No assignment ever comes: live once initial_fetch_timeout runs out; the cluster
        # has no hosts (503 UH).
        self.write(response('1'))
        c = eds_cluster('a', self.eds_path)
        c['eds_cluster_config']['eds_config']['initial_fetch_timeout'] = '1s'
        self.start([c], wait_ready=False)
        self.assertEqual(self.ready(), (503, 'INITIALIZING'))
        h.wait_until(lambda: self.ready() == (200, 'LIVE'), 10)
        r = h.http_request(self.port, 'GET', '/a/x')
        self.assertEqual(r.status, 503)

    def test_wait_for_warm_on_init_false(self):
        # Not waited for: live at once although no assignment came (the initial fetch
        # timeout, an hour, has not run out); no hosts until one comes.
        self.write(response('1'))
        c = eds_cluster('a', self.eds_path, wait_for_warm_on_init=False)
        c['eds_cluster_config']['eds_config']['initial_fetch_timeout'] = '3600s'
        self.start([c])
        self.assertEqual(self.ready(), (200, 'LIVE'))
        self.assertEqual(h.http_request(self.port, 'GET', '/a/x').status, 503)
        self.write(response('2', cla('a', self.ups[0].port)))
        h.wait_until(lambda: self.names('/a/x') == {'A'}, 10)

    def test_new_cluster_warms_after_start(self):
        # A CDS cluster whose assignment has not come is warming (dynamic_warming_clusters);
        # the server, live already, stays live; the assignment makes it active.
        self.write(response('1'))
        cds_path = self.write(json.dumps({'version_info': '1', 'resources': []}), 'cds.json')
        self.start([], dynamic={'cds_config': {'path_config_source': {'path': cds_path}}})
        self.write(json.dumps({'version_info': '2', 'resources': [
            dict(eds_cluster('a', self.eds_path), **{'@type': CLUSTER_TYPE})]}), 'cds.json')
        self.p.wait_stat('cluster_manager.cluster_added', 1)

        def clusters_dump():
            dump = json.loads(self.p.admin_get('/config_dump')[2])
            return [c for c in dump['configs'] if c['@type'].endswith('ClustersConfigDump')][0]
        d = clusters_dump()
        self.assertEqual([c['cluster']['name'] for c in d['dynamic_warming_clusters']], ['a'])
        self.assertEqual(d['dynamic_active_clusters'], [])
        self.assertEqual(self.ready(), (200, 'LIVE'))
        self.write(response('2', cla('a', self.ups[1].port)))
        h.wait_until(lambda: self.names('/a/x') == {'B'}, 10)
        d = clusters_dump()
        self.assertEqual(d['dynamic_warming_clusters'], [])
        self.assertEqual([c['cluster']['name'] for c in d['dynamic_active_clusters']], ['a'])

    def test_eds_cluster_from_cds(self):
        self.write(response('1', cla('a', self.ups[0].port), cla('b', self.ups[2].port)))
        cds_path = self.write(json.dumps({'version_info': '1', 'resources': [
            dict(eds_cluster('a', self.eds_path), **{'@type': CLUSTER_TYPE})]}), 'cds.json')
        self.start([], routes=('a', 'b'),
                   dynamic={'cds_config': {'path_config_source': {'path': cds_path}}})
        self.assertEqual(self.names('/a/x'), {'A'})
        self.assertEqual(h.http_request(self.port, 'GET', '/b/x').status, 503)
        # The CDS update changes the cluster's settings: its endpoints are kept. A cluster
        # added by it joins the file already read and gets its assignment from it.
        self.write(json.dumps({'version_info': '2', 'resources': [
            dict(eds_cluster('a', self.eds_path, connect_timeout='3s'),
                 **{'@type': CLUSTER_TYPE}),
            dict(eds_cluster('b', self.eds_path), **{'@type': CLUSTER_TYPE})]}), 'cds.json')
        self.p.wait_stat('cluster_manager.cluster_modified', 1)
        self.assertEqual(self.names('/a/x'), {'A'})
        self.assertEqual(self.names('/b/x'), {'C'})
        # The read for b is not a change of the file: a's update count stays.
        self.assertEqual(self.p.stat('cluster.a.update_success'), 1)
        self.write(response('2', cla('a', self.ups[1].port)))
        h.wait_until(lambda: self.names('/a/x') == {'B'}, 10)
        # Removed from CDS: gone, its subscription too (no crash on later changes).
        self.write(json.dumps({'version_info': '3', 'resources': []}), 'cds.json')
        self.p.wait_stat('cluster_manager.cluster_removed', 2)
        self.write(response('3', cla('a', self.ups[2].port)))
        self.assertEqual(h.http_request(self.port, 'GET', '/a/x').status, 503)

    def test_a_file_per_cluster(self):
        # Envoy's file-per-cluster layout, from CDS: a change of one file is work for its
        # own cluster only (the others' update counts stay), and files of clusters CDS
        # removes are no longer read.
        n = 200
        paths = [self.write(response('1', cla('c%d' % i, self.ups[i % 2].port)),
                            'eds-%d.json' % i) for i in range(n)]

        def cds(version, count):
            return json.dumps({'version_info': version, 'resources': [
                dict(eds_cluster('c%d' % i, paths[i]), **{'@type': CLUSTER_TYPE})
                for i in range(count)]})
        cds_path = self.write(cds('1', n), 'cds.json')
        self.start([], routes=('c7', 'c8', 'c150'),
                   dynamic={'cds_config': {'path_config_source': {'path': cds_path}}})
        self.assertEqual(self.names('/c7/x'), {'B'})
        self.assertEqual(self.names('/c8/x'), {'A'})
        self.assertEqual(self.p.stat('cluster.c8.update_attempt'), 1)
        self.write(response('2', cla('c7', self.ups[2].port)), 'eds-7.json')
        h.wait_until(lambda: self.names('/c7/x') == {'C'}, 10)
        self.assertEqual(self.p.stat('cluster.c7.update_success'), 2)
        stats = self.p.stats()
        self.assertEqual([i for i in range(n) if i != 7 and
                          stats.get('cluster.c%d.update_attempt' % i) != 1], [])
        # Half the clusters go: their files are not read any more, the others' are.
        self.write(cds('2', n // 2), 'cds.json')
        self.p.wait_stat('cluster_manager.cluster_removed', n // 2)
        self.write(response('2', cla('c150', self.ups[2].port)), 'eds-150.json')
        self.write(response('3', cla('c8', self.ups[2].port)), 'eds-8.json')
        h.wait_until(lambda: self.names('/c8/x') == {'C'}, 10)
        self.assertEqual(h.http_request(self.port, 'GET', '/c150/x').status, 503)
        self.assertEqual(self.p.stat('cluster_manager.eds.update_rejected', 0), 0)

    def test_config_errors(self):
        cases = [
            ({'name': 'a', 'type': 'EDS'},
             'clusters[0].eds_cluster_config: is required for a cluster of type EDS'),
            (dict(eds_cluster('a', '/x'), load_assignment=cla('a', 1)),
             'clusters[0].load_assignment: is not used by a cluster of type EDS'),
            ({'name': 'a', 'eds_cluster_config': {'eds_config': {'path': '/x'}}},
             'clusters[0].eds_cluster_config: applies only to a cluster of type EDS'),
            (eds_cluster('a', os.path.join(self.dir, 'nope.json')), None),
        ]
        for c, want in cases:
            with self.subTest(want=want):
                cfg_path = self.write(json.dumps(h.bootstrap([], [c])), 'boot.json')
                rc, out, err = h.run_petrel(['--mode', 'validate', '-c', cfg_path])
                if want is None:
                    # A missing EDS file is no config error: the cluster has no hosts until
                    # the file comes (as Envoy after initial_fetch_timeout).
                    self.assertEqual(rc, 0, err)
                else:
                    self.assertEqual(rc, 1)
                    self.assertIn(want, err)


if __name__ == '__main__':
    unittest.main()
