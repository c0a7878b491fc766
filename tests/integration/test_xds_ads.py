"""xDS over gRPC: petrel takes listeners, routes, clusters and endpoints from a control plane
over ADS (state of the world), against tools/xds-control-plane, which speaks the protocol
from Envoy's own .proto files (npm's @grpc/grpc-js-xds), not from petrel's schema.

Covered: everything from the control plane, with the node petrel announces and an ACK for
every type; pushes of endpoints, routes and clusters taking effect; a NACK naming the
field, with the last good config still serving; the control plane going away (the stream
closed, then the process killed) and coming back (a new stream, every type asked for again
with the version petrel has); config errors for ADS sources.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_xds_ads.py -v
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CP_DIR = os.environ.get('PT_XDS_CP_DIR') or os.path.join(ROOT, 'tools', 'xds-control-plane')
HCM = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.' \
      'HttpConnectionManager'
ROUTER = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router'
HPO = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions'
T = 'type.googleapis.com/envoy.config.'
LDS, RDS = T + 'listener.v3.Listener', T + 'route.v3.RouteConfiguration'
CDS, EDS = T + 'cluster.v3.Cluster', T + 'endpoint.v3.ClusterLoadAssignment'


def control_plane_ready():
    """Installs the control plane's pinned packages once (npm ci); why not, or None."""
    if shutil.which('node') is None or shutil.which('npm') is None:
        return 'node and npm are needed (scripts/install-deps.sh test)'
    if not os.path.isdir(os.path.join(CP_DIR, 'node_modules', '@grpc', 'grpc-js-xds')):
        r = subprocess.run(['npm', 'ci', '--no-audit', '--no-fund'], cwd=CP_DIR,
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            return 'npm ci failed: ' + r.stderr[-500:]
    return None


CP_MISSING = control_plane_ready()


class ControlPlane:
    """tools/xds-control-plane/server.js over a resource directory."""

    def __init__(self, resources, port=0):
        self.dir = tempfile.mkdtemp(prefix='petrel-xds-')
        self.port, self.admin = (port, h.free_port()) if port else h.free_ports(2)
        self.write(resources)
        self.start()

    def start(self):
        if getattr(self, 'out', None) is not None:
            self.out.close()
        self.out = open(os.path.join(self.dir, 'cp.log'), 'a')
        self.proc = subprocess.Popen(
            ['node', os.path.join(CP_DIR, 'server.js'), '--dir', self.dir, '--port',
             str(self.port), '--admin-port', str(self.admin)],
            stdout=subprocess.PIPE, stderr=self.out, text=True)
        for line in self.proc.stdout:
            self.out.write(line)
            if line.startswith('listening'):
                break
        else:
            raise AssertionError('control plane did not start: ' + self.logtext())
        # keep draining its stdout so it never blocks on a full pipe
        import threading
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()

    def _drain(self, proc):
        for line in proc.stdout:
            self.out.write(line)
            self.out.flush()

    def logtext(self):
        self.out.flush()
        with open(os.path.join(self.dir, 'cp.log')) as f:
            return f.read()[-3000:]

    def write(self, resources):
        for name, items in resources.items():
            tmp = os.path.join(self.dir, '.' + name + '.json')
            with open(tmp, 'w') as f:
                json.dump(items, f)
            os.rename(tmp, os.path.join(self.dir, name + '.json'))

    def push(self, **resources):
        self.write(resources)
        self.post('/reload')

    def post(self, path):
        req = urllib.request.Request('http://127.0.0.1:%d%s' % (self.admin, path), data=b'',
                                     method='POST')
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def log(self):
        with urllib.request.urlopen('http://127.0.0.1:%d/log' % self.admin, timeout=10) as r:
            return json.loads(r.read())

    def events(self, kind, type_url=None):
        return [e for e in self.log()
                if e['event'] == kind and (type_url is None or e.get('type_url') == type_url)]

    def acked(self, type_url, version):
        return any(e.get('version') == version for e in self.events('ack', type_url))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self):
        self.kill()
        self.out.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def listener(port, route_name='routes'):
    return {'name': 'ingress',
            'address': {'socket_address': {'address': '127.0.0.1', 'port_value': port}},
            'filter_chains': [{'filters': [{
                'name': 'envoy.filters.network.http_connection_manager',
                'typed_config': {'@type': HCM, 'stat_prefix': 'ingress',
                                 'rds': {'route_config_name': route_name,
                                         'config_source': {'ads': {},
                                                           'resource_api_version': 'V3'}},
                                 'http_filters': [{'name': 'envoy.filters.http.router',
                                                   'typed_config': {'@type': ROUTER}}]}}]}]}


def routes(cluster, name='routes', extra=()):
    return {'name': name, 'virtual_hosts': [{'name': 'all', 'domains': ['*'], 'routes': list(
        extra) + [{'match': {'prefix': '/'}, 'route': {'cluster': cluster}}]}]}


def eds_cluster(name):
    return {'name': name, 'type': 'EDS', 'connect_timeout': '1s',
            'eds_cluster_config': {'eds_config': {'ads': {}, 'resource_api_version': 'V3'}}}


def assignment(name, *ports):
    return {'cluster_name': name, 'endpoints': [{'lb_endpoints': [
        {'endpoint': {'address': {'socket_address': {'address': '127.0.0.1',
                                                     'port_value': p}}}} for p in ports]}]}


def bootstrap(cp_port, admin_port, node_first_only=False, delta=False):
    return {
        'node': {'id': 'sidecar-1', 'cluster': 'test', 'locality': {'zone': 'z1'}},
        'admin': h.admin(admin_port),
        'dynamic_resources': {
            'ads_config': {'api_type': 'DELTA_GRPC' if delta else 'GRPC',
                           'transport_api_version': 'V3',
                           'set_node_on_first_message_only': node_first_only,
                           'grpc_services': [{'envoy_grpc': {'cluster_name': 'xds'}}]},
            'cds_config': {'ads': {}, 'resource_api_version': 'V3'},
            'lds_config': {'ads': {}, 'resource_api_version': 'V3'}},
        'static_resources': {'clusters': [h.cluster('xds', [cp_port], **{
            'typed_extension_protocol_options': {HPO: {
                '@type': 'type.googleapis.com/' + HPO,
                'explicit_http_config': {'http2_protocol_options': {}}}}})]}}


@unittest.skipIf(CP_MISSING is not None, CP_MISSING or '')
class AdsTest(unittest.TestCase):
    DELTA = False

    def setUp(self):
        self.a = HttpUpstream(name='a')
        self.addCleanup(self.a.close)
        self.b = HttpUpstream(name='b')
        self.addCleanup(self.b.close)
        self.port, self.admin = h.free_ports(2)
        self.cp = ControlPlane({'listeners': [listener(self.port)],
                                'routes': [routes('app')],
                                'clusters': [eds_cluster('app')],
                                'endpoints': [assignment('app', self.a.port)]})
        self.addCleanup(self.cp.close)

    def start(self, **kw):
        self.p = h.Petrel(bootstrap(self.cp.port, self.admin, delta=self.DELTA, **kw))
        self.addCleanup(self.p.close)
        self.p.start()
        h.wait_until(lambda: self.cp.acked(EDS, '1'), 20, message='EDS not ACKed')

    def version_text(self):
        status, headers, body = self.p.admin_get('/stats')
        line = [l for l in body.decode().splitlines() if l.startswith('cluster_manager.cds.version_text')]
        return line[0].split(': ', 1)[1].strip('"') if line else None

    def served_by(self, path='/x'):
        r = h.http_request(self.port, 'GET', path)
        return r.status, (r.json()['name'] if r.status == 200 else None)

    def test_everything_from_the_control_plane(self):
        self.start()
        h.wait_until(lambda: h.port_listening(self.port), 10)
        h.wait_until(lambda: self.served_by() == (200, 'a'), 10)
        for t in (LDS, RDS, CDS, EDS):
            self.assertTrue(self.cp.acked(t, '1'), t)
        first = [e for e in self.cp.events('request') if e.get('first')][0]
        self.assertEqual(first['node']['id'], 'sidecar-1')
        self.assertEqual(first['node']['cluster'], 'test')
        self.assertEqual(first['node']['user_agent_name'], 'petrel')
        eds_asks = [e['resource_names'] for e in self.cp.events('request', EDS)]
        self.assertEqual(eds_asks[0], ['app'])   # by name, never a wildcard
        self.assertEqual(self.p.stat('control_plane.connected_state'), 1)
        self.assertEqual(self.p.stat('cluster_manager.cds.update_success'), 1)
        self.assertEqual(self.version_text(), '1')
        self.assertEqual(self.cp.events('nack'), [])

    def test_pushes_take_effect(self):
        self.start()
        h.wait_until(lambda: self.served_by() == (200, 'a'), 10)
        # endpoints move
        self.cp.push(endpoints=[assignment('app', self.b.port)])
        h.wait_until(lambda: self.served_by() == (200, 'b'), 10)
        # a new cluster and a route to it, in one push each
        self.cp.push(clusters=[eds_cluster('app'), eds_cluster('other')],
                     endpoints=[assignment('app', self.b.port),
                                assignment('other', self.a.port)])
        h.wait_until(lambda: self.cp.acked(CDS, '2'), 10)
        self.cp.push(routes=[routes('app', extra=[
            {'match': {'prefix': '/other'}, 'route': {'cluster': 'other'}}])])
        h.wait_until(lambda: self.served_by('/other') == (200, 'a'), 10)
        self.assertEqual(self.served_by('/x'), (200, 'b'))
        # the cluster goes: its route answers 503 (cluster not found)
        self.cp.push(clusters=[eds_cluster('app')])
        h.wait_until(lambda: self.served_by('/other')[0] == 503, 10)
        self.assertEqual(self.cp.events('nack'), [])

    def test_nack_keeps_the_last_good_config(self):
        self.start()
        h.wait_until(lambda: self.served_by() == (200, 'a'), 10)
        bad = eds_cluster('app')
        bad['preconnect_policy'] = {'per_upstream_preconnect_ratio': 1.5}
        self.cp.push(clusters=[bad])
        h.wait_until(lambda: self.cp.events('nack', CDS), 10)
        nack = self.cp.events('nack', CDS)[0]
        self.assertEqual(nack['error_detail']['code'], 3)
        self.assertIn('preconnect_policy', nack['error_detail']['message'])
        if not self.DELTA:
            self.assertEqual(nack['version'], '1')  # the version petrel still has
        self.assertEqual(self.served_by(), (200, 'a'))
        self.assertEqual(self.p.stat('cluster_manager.cds.update_rejected'), 1)
        self.assertEqual(self.version_text(), '1')
        # fixed: accepted
        self.cp.push(clusters=[eds_cluster('app')])
        h.wait_until(lambda: self.cp.acked(CDS, '3'), 10)
        self.assertEqual(self.served_by(), (200, 'a'))

    def test_control_plane_outage(self):
        self.start(node_first_only=True)
        h.wait_until(lambda: self.served_by() == (200, 'a'), 10)
        # the stream ends: petrel opens another and asks for every type again, with the
        # versions it has
        self.cp.post('/close-streams')
        h.wait_until(lambda: len(self.cp.events('connect')) == 2, 20)
        h.wait_until(lambda: [e for e in self.cp.events('ack', EDS) if e['stream'] == 2], 20)
        again = [e for e in self.cp.events('request') if e['stream'] == 2 and e.get('first')]
        self.assertEqual(len(again), 1)
        self.assertIn('node', again[0])
        if not self.DELTA:
            resumed = {e['type_url']: e.get('version') for e in self.cp.events('request')
                       if e['stream'] == 2}
            self.assertEqual(resumed.get(CDS), '1')
        else:
            # what petrel has is not sent again (initial_resource_versions)
            self.assertEqual([e for e in self.cp.events('response', EDS) if e['stream'] == 2
                              and e.get('resource_names')], [])
        # the process dies: traffic goes on with the last config
        self.cp.kill()
        h.wait_until(lambda: self.p.stat('control_plane.connected_state') == 0, 10)
        self.assertEqual(self.served_by(), (200, 'a'))
        # and comes back: petrel reconnects (backoff), and takes what it pushes next (a
        # restarted control plane numbers its versions afresh, so it pushes after the
        # reconnect, as a real one would for a change)
        self.cp.start()
        h.wait_until(lambda: self.p.stat('control_plane.connected_state') == 1, 40)
        h.wait_until(lambda: self.cp.acked(EDS, '1'), 20)
        self.cp.push(endpoints=[assignment('app', self.b.port)])
        h.wait_until(lambda: self.served_by() == (200, 'b'), 20)

    def test_ready_waits_for_the_first_clusters_and_listeners(self):
        # The control plane is up: ready once its first answers are in.
        self.start()
        h.wait_until(lambda: self.p.admin_get('/ready')[0] == 200, 20)
        # None answers: not ready until initial_fetch_timeout runs out, then ready with what
        # there is (nothing), as Envoy's init manager gives up waiting.
        port, admin = h.free_ports(2)
        cfg = bootstrap(h.dead_port(), admin, delta=self.DELTA)
        for src in ('cds_config', 'lds_config'):
            cfg['dynamic_resources'][src]['initial_fetch_timeout'] = '3s'
        p = h.Petrel(cfg, wait_ready=False)
        self.addCleanup(p.close)
        p.start()
        self.assertEqual(p.admin_get('/ready')[0], 503)
        p.wait_log('waiting for the control plane')
        h.wait_until(lambda: p.admin_get('/ready')[0] == 200, 20)
        p.wait_log('initial resources in: live')
        self.assertEqual(p.stat('control_plane.connected_state'), 0)

    def test_config_errors(self):
        def errors(cfg):
            with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
                json.dump(cfg, f)
            self.addCleanup(os.unlink, f.name)
            rc, out, err = h.run_petrel(['--mode', 'validate', '-c', f.name])
            self.assertEqual(rc, 1, err)
            return err
        cfg = bootstrap(self.cp.port, self.admin)
        del cfg['dynamic_resources']['ads_config']
        self.assertIn('no dynamic_resources.ads_config', errors(cfg))
        cfg = bootstrap(self.cp.port, self.admin)
        cfg['dynamic_resources']['ads_config']['api_type'] = 'REST'
        self.assertIn('ads_config.api_type', errors(cfg))
        cfg = bootstrap(self.cp.port, self.admin)
        cfg['dynamic_resources']['ads_config']['grpc_services'].append(
            {'envoy_grpc': {'cluster_name': 'xds'}})
        self.assertIn('grpc_services: must name exactly one service', errors(cfg))
        cfg = bootstrap(self.cp.port, self.admin)
        cfg['dynamic_resources']['cds_config'] = {'ads': {}, 'path_config_source': {
            'path': '/tmp/x.yaml'}}
        self.assertIn('and path_config_source are both given', errors(cfg))


@unittest.skipIf(CP_MISSING is not None, CP_MISSING or '')
class DeltaAdsTest(AdsTest):
    """The same over delta xDS (DeltaAggregatedResources, Istio's default): resources
    added, changed and removed one by one, the set in force handed to the watches whole."""
    DELTA = True

    def test_config_errors(self):
        pass  # the same bootstrap checks as the state-of-the-world class


if __name__ == '__main__':
    unittest.main(verbosity=2)
