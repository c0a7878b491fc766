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
import re
import shutil
import signal
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
    """Installs the control plane's pinned packages once (npm ci); why not, or None. The
    suites that use it run in parallel under ctest: one installs while the others wait."""
    if shutil.which('node') is None or shutil.which('npm') is None:
        return 'node and npm are needed (scripts/install-deps.sh test)'
    import fcntl
    with open(os.path.join(tempfile.gettempdir(), 'petrel-xds-cp-npm.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isdir(os.path.join(CP_DIR, 'node_modules', '@grpc', 'grpc-js-xds')):
            r = subprocess.run(['npm', 'ci', '--no-audit', '--no-fund'], cwd=CP_DIR,
                               capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                return 'npm ci failed: ' + r.stderr[-500:]
    return None


CP_MISSING = control_plane_ready()


class ControlPlane:
    """tools/xds-control-plane/server.js over a resource directory."""

    def __init__(self, resources, port=0, extra_args=(), rest=False):
        self.extra_args = list(extra_args)
        self.rest = 0 if rest else None  # REST-JSON's port (0: the control plane picks one)
        self.dir = tempfile.mkdtemp(prefix='petrel-xds-')
        # 0: the control plane picks free ports and says which (no race with other tests
        # for a port chosen here and bound later); a restart binds the same ones again.
        self.port, self.admin = port, 0
        self.write(resources)
        self.start()

    def start(self):
        if getattr(self, 'out', None) is not None:
            self.out.close()
        self.out = open(os.path.join(self.dir, 'cp.log'), 'a')
        self.proc = subprocess.Popen(
            ['node', os.path.join(CP_DIR, 'server.js'), '--dir', self.dir, '--port',
             str(self.port), '--admin-port', str(self.admin)] + self.extra_args +
            (['--rest-port', str(self.rest)] if self.rest is not None else []),
            stdout=subprocess.PIPE, stderr=self.out, text=True)
        for line in self.proc.stdout:
            self.out.write(line)
            if line.startswith('admin '):
                self.admin = int(line.split()[1])
            if line.startswith('rest '):
                self.rest = int(line.split()[1])
            if line.startswith('listening'):
                where = line.split()[1]
                if where.isdigit():
                    self.port = int(where)
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


def bootstrap(cp_port, admin_port, node_first_only=False, delta=False, transport_socket=None):
    xds_extra = {'transport_socket': transport_socket} if transport_socket else {}
    return {
        'node': {'id': 'sidecar-1', 'cluster': 'test', 'locality': {'zone': 'z1'},
                 'metadata': {'ISTIO_VERSION': '1.22.0', 'LABELS': {'app': 'reviews'}}},
        'admin': h.admin(admin_port),
        'dynamic_resources': {
            'ads_config': {'api_type': 'DELTA_GRPC' if delta else 'GRPC',
                           'transport_api_version': 'V3',
                           'set_node_on_first_message_only': node_first_only,
                           'grpc_services': [{'envoy_grpc': {'cluster_name': 'xds'}}]},
            'cds_config': {'ads': {}, 'resource_api_version': 'V3'},
            'lds_config': {'ads': {}, 'resource_api_version': 'V3'}},
        'static_resources': {'clusters': [h.cluster('xds', [cp_port], **dict({
            'typed_extension_protocol_options': {HPO: {
                '@type': 'type.googleapis.com/' + HPO,
                'explicit_http_config': {'http2_protocol_options': {}}}}}, **xds_extra))]}}


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
        # node.metadata (a Struct) reaches the control plane, as istiod needs it.
        md = first['node']['metadata']['fields']
        self.assertEqual(md['ISTIO_VERSION']['stringValue'], '1.22.0')
        self.assertEqual(md['LABELS']['structValue']['fields']['app']['stringValue'], 'reviews')
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

    def hosts(self, cluster):
        """The ports of the cluster's hosts, as /clusters lists them."""
        body = self.p.admin_get('/clusters')[2].decode()
        return sorted({int(m) for m in re.findall(
            r'^%s::127\.0\.0\.1:(\d+)::' % re.escape(cluster), body, re.M)})

    def test_one_bad_resource_among_many_is_nacked_whole(self):
        """A response of many resources with one invalid in the middle is NACKed and
        nothing of it applies: neither the resources before it nor those after it (each
        resource is decoded and checked in turn, and applied only once all are)."""
        self.start()
        h.wait_until(lambda: self.served_by() == (200, 'a'), 10)
        names = ['c%d' % i for i in range(40)]
        self.cp.push(clusters=[eds_cluster('app')] + [eds_cluster(n) for n in names],
                     endpoints=[assignment(n, self.a.port) for n in ['app'] + names])
        h.wait_until(lambda: self.cp.acked(CDS, '2'), 10)
        h.wait_until(lambda: all(self.hosts(n) == [self.a.port] for n in ('c0', 'c39')), 10)
        version = self.version_text()
        # every assignment moves to b, but the one in the middle is invalid
        moved = [assignment(n, self.b.port) for n in ['app'] + names]
        moved[21]['endpoints'][0]['lb_endpoints'][0]['endpoint']['health_check_config'] = {
            'port_value': 9}
        self.cp.push(endpoints=moved)
        h.wait_until(lambda: self.cp.events('nack', EDS), 10)
        nack = self.cp.events('nack', EDS)[0]
        self.assertEqual(nack['error_detail']['code'], 3)
        self.assertIn('health_check_config', nack['error_detail']['message'])
        self.assertEqual(self.served_by(), (200, 'a'))
        for n in ('c0', 'c19', 'c21', 'c39'):  # before and after the bad one
            self.assertEqual(self.hosts(n), [self.a.port], n)
        # clusters: new ones around one invalid change, none of them applied
        bad = eds_cluster('c20')
        bad['preconnect_policy'] = {'per_upstream_preconnect_ratio': 1.5}
        fresh = ['n%d' % i for i in range(20)]
        self.cp.push(clusters=[eds_cluster('app')] + [eds_cluster(n) for n in fresh[:10]] +
                     [eds_cluster(n) for n in names[:20]] + [bad] +
                     [eds_cluster(n) for n in names[21:]] + [eds_cluster(n) for n in fresh[10:]])
        h.wait_until(lambda: self.cp.events('nack', CDS), 10)
        nack = self.cp.events('nack', CDS)[0]
        self.assertIn('preconnect_policy', nack['error_detail']['message'])
        if not self.DELTA:
            self.assertEqual(nack['version'], '2')  # the version petrel still has
        listed = self.p.admin_get('/clusters')[2].decode()
        for n in fresh:
            self.assertNotIn('\n%s::' % n, '\n' + listed, n)
        self.assertEqual(self.hosts('c20'), [self.a.port])
        self.assertEqual(self.p.stat('cluster_manager.cds.update_rejected'), 1)
        self.assertEqual(self.version_text(), version)
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

    def test_a_control_plane_that_hangs(self):
        # The ADS cluster's connection_keepalive PINGs the connection; a control plane that
        # stops answering (stopped, not gone: no FIN, no RST) is found out by the unanswered
        # PING, the stream ends, and petrel reconnects once it answers again.
        cfg = bootstrap(self.cp.port, self.admin, delta=self.DELTA)
        xds = cfg['static_resources']['clusters'][0]
        xds['typed_extension_protocol_options'][HPO]['explicit_http_config'] = {
            'http2_protocol_options': {'connection_keepalive': {'interval': '0.5s',
                                                                'timeout': '0.5s'}}}
        self.p = h.Petrel(cfg)
        self.addCleanup(self.p.close)
        self.p.start()
        h.wait_until(lambda: self.served_by() == (200, 'a'), 20)
        self.cp.proc.send_signal(signal.SIGSTOP)
        try:
            h.wait_until(lambda: self.p.stat('control_plane.connected_state') == 0, 20)
            self.assertGreaterEqual(self.p.stat('cluster.xds.http2.keepalive_timeout'), 1)
            self.assertEqual(self.served_by(), (200, 'a'))   # the last config serves
        finally:
            self.cp.proc.send_signal(signal.SIGCONT)
        h.wait_until(lambda: self.p.stat('control_plane.connected_state') == 1, 40)
        self.cp.push(endpoints=[assignment('app', self.b.port)])
        h.wait_until(lambda: self.served_by() == (200, 'b'), 20)

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
        self.assertIn('only one of ads, api_config_source and path_config_source may be given '
                      '(found ads, path_config_source)', errors(cfg))


@unittest.skipIf(CP_MISSING is not None, CP_MISSING or '')
class DeltaAdsTest(AdsTest):
    """The same over delta xDS (DeltaAggregatedResources, Istio's default): resources
    added, changed and removed one by one, the set in force handed to the watches whole."""
    DELTA = True

    def test_config_errors(self):
        pass  # the same bootstrap checks as the state-of-the-world class


@unittest.skipIf(CP_MISSING is not None, CP_MISSING or '')
class AdsOverMtlsTest(unittest.TestCase):
    """The control plane over TLS with client certificates (mTLS), as a mesh runs it: petrel
    presents its SPIFFE identity and checks the control plane's; a control plane it cannot
    verify, or one that does not take its certificate, gets no stream and no config."""

    def setUp(self):
        import certs as C
        self.C = C
        self.pki = C.standard_pki()
        self.up = HttpUpstream(name='a')
        self.addCleanup(self.up.close)
        self.port, self.admin = h.free_ports(2)
        srv = self.pki['server']
        self.cp = ControlPlane(
            {'listeners': [listener(self.port)], 'routes': [routes('app')],
             'clusters': [eds_cluster('app')], 'endpoints': [assignment('app', self.up.port)]},
            extra_args=['--tls-cert', srv.cert, '--tls-key', srv.key,
                        '--client-ca', self.pki['ca'].cert])
        self.addCleanup(self.cp.close)

    def tls(self, cert, san):
        return self.C.upstream_tls(cert=self.pki[cert], ca=self.pki['ca'], alpn=['h2'],
                                   san=[self.C.san_uri(exact=self.C.spiffe('default', san))])

    def start(self, cert, san):
        p = h.Petrel(bootstrap(self.cp.port, self.admin,
                               transport_socket=self.tls(cert, san)), wait_ready=False)
        self.addCleanup(p.close)
        p.start()
        return p

    def test_mtls_both_ways(self):
        p = self.start('frontend', 'gateway')
        h.wait_until(lambda: self.cp.acked(EDS, '1'), 20)
        h.wait_until(lambda: h.port_listening(self.port), 10)
        r = h.http_request(self.port, 'GET', '/x')
        self.assertEqual((r.status, r.json()['name']), (200, 'a'))
        self.assertEqual(p.stat('control_plane.connected_state'), 1)
        self.assertGreater(p.stat('cluster.xds.ssl.handshake', 0), 0)

    def test_a_control_plane_that_is_not_the_expected_one(self):
        p = self.start('frontend', 'rogue')   # petrel expects another identity
        p.wait_log('stream to xds closed')
        self.assertEqual(self.cp.events('request'), [])
        self.assertEqual(p.stat('control_plane.connected_state'), 0)
        self.assertGreater(p.stat('cluster.xds.ssl.fail_verify_san', 0), 0)

    def test_a_client_certificate_the_control_plane_refuses(self):
        p = self.start('other_ca', 'gateway')  # signed by a CA the control plane does not trust
        p.wait_log('stream to xds closed')
        self.assertEqual(self.cp.events('request'), [])
        self.assertEqual(p.stat('control_plane.connected_state'), 0)


@unittest.skipIf(CP_MISSING is not None, CP_MISSING or '')
class AdsOverUnixSocketTest(unittest.TestCase):
    """The control plane on a Unix socket (a `pipe` address), as local agents serve it."""

    def test_config_from_a_unix_socket(self):
        up = HttpUpstream(name='a')
        self.addCleanup(up.close)
        port, admin = h.free_ports(2)
        sock = os.path.join(tempfile.mkdtemp(prefix='petrel-uds-'), 'xds.sock')
        self.addCleanup(shutil.rmtree, os.path.dirname(sock), True)
        cp = ControlPlane({'listeners': [listener(port)], 'routes': [routes('app')],
                           'clusters': [eds_cluster('app')],
                           'endpoints': [assignment('app', up.port)]},
                          extra_args=['--unix', sock])
        self.addCleanup(cp.close)
        cfg = bootstrap(1, admin)
        xds = cfg['static_resources']['clusters'][0]
        xds['load_assignment']['endpoints'][0]['lb_endpoints'][0]['endpoint']['address'] = {
            'pipe': {'path': sock, 'mode': 0o600}}
        p = h.Petrel(cfg)
        self.addCleanup(p.close)
        p.start()
        h.wait_until(lambda: cp.acked(EDS, '1'), 20)
        h.wait_until(lambda: h.port_listening(port), 10)
        r = h.http_request(port, 'GET', '/x')
        self.assertEqual((r.status, r.json()['name']), (200, 'a'))
        status, headers, body = p.admin_get('/clusters')
        self.assertIn(('xds::%s::' % sock).encode(), body)

    def test_pipe_errors(self):
        port, admin = h.free_ports(2)
        cfg = bootstrap(1, admin)
        ep = cfg['static_resources']['clusters'][0]['load_assignment']['endpoints'][0]
        ep['lb_endpoints'][0]['endpoint']['address'] = {'pipe': {'path': 'x' * 200}}
        with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
            json.dump(cfg, f)
        self.addCleanup(os.unlink, f.name)
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', f.name])
        self.assertEqual(rc, 1, err)
        self.assertIn('pipe.path: "xxxx', err)
        self.assertIn('is too long for a Unix socket', err)
        # only a cluster's endpoint may be a Unix socket: not a listener
        cfg = bootstrap(1, admin)
        cfg['static_resources']['listeners'] = [listener(port)]
        cfg['static_resources']['listeners'][0]['address'] = {'pipe': {'path': '/tmp/l.sock'}}
        with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
            json.dump(cfg, f)
        self.addCleanup(os.unlink, f.name)
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', f.name])
        self.assertEqual(rc, 1, err)
        self.assertIn('static_resources.listeners[0].address.pipe: field is not supported', err)


# ---- the same resources from a file and from the control plane ----------------------------

FAULT = 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault'
RBAC = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC'
LRL = 'type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit'
FILE_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog'


def rich_resources(source, log_path):
    """Resources using much of what petrel supports; `source` is the ConfigSource their
    references use (ads, or a file). Fields newer than the control plane's pinned protos
    (http_protocol_options.ignore_http_11_upgrade, direct_response.body_format, ...) cannot
    be encoded by it, so they are not here: test_discovery_protobuf.c checks them."""
    clusters = [
        {'name': 'app', 'type': 'EDS', 'connect_timeout': '0.25s',
         'eds_cluster_config': {'eds_config': source('eds'), 'service_name': 'app-svc'},
         'lb_policy': 'LEAST_REQUEST',
         'least_request_lb_config': {'choice_count': 3},
         'circuit_breakers': {'thresholds': [{'priority': 'HIGH', 'max_connections': 100,
                                              'max_pending_requests': 50,
                                              'max_retries': 3}]},
         'outlier_detection': {'consecutive_5xx': 7, 'interval': '3s',
                               'base_ejection_time': '30s', 'max_ejection_percent': 20},
         'common_lb_config': {'healthy_panic_threshold': {'value': 40}},
         'per_connection_buffer_limit_bytes': 65536,
         'typed_extension_protocol_options': {HPO: {
             '@type': 'type.googleapis.com/' + HPO,
             'common_http_protocol_options': {'idle_timeout': '60s',
                                              'max_requests_per_connection': 1000},
             'explicit_http_config': {'http2_protocol_options': {
                 'max_concurrent_streams': 100, 'initial_stream_window_size': 65536}}}}},
        {'name': 'static-ish', 'type': 'STATIC', 'connect_timeout': '1s',
         'load_assignment': {'cluster_name': 'static-ish', 'endpoints': [{
             'locality': {'region': 'r1', 'zone': 'z1'},
             'lb_endpoints': [{'endpoint': {'address': {'socket_address': {
                 'address': '127.0.0.1', 'port_value': 9}}}, 'load_balancing_weight': 3}]}]},
         'health_checks': [{'timeout': '1s', 'interval': '5s', 'unhealthy_threshold': 2,
                            'healthy_threshold': 1,
                            'http_health_check': {'path': '/healthz', 'host': 'hc'},
                            'event_logger': [{
                                'name': 'envoy.health_check.event_sinks.file',
                                'typed_config': {
                                    '@type': 'type.googleapis.com/envoy.extensions.'
                                             'health_check.event_sinks.file.v3.'
                                             'HealthCheckEventFileSink',
                                    'event_log_path': log_path + '.hc'}}]}]},
        {'name': 'dns', 'type': 'STRICT_DNS', 'connect_timeout': '1s',
         'dns_lookup_family': 'V4_ONLY',
         'typed_dns_resolver_config': {
             'name': 'envoy.network.dns_resolver.cares',
             'typed_config': {
                 '@type': 'type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.'
                          'CaresDnsResolverConfig',
                 'resolvers': [{'socket_address': {'address': '127.0.0.1', 'port_value': 9}}],
                 'dns_resolver_options': {'use_tcp_for_dns_lookups': True}}},
         'load_assignment': {'cluster_name': 'dns', 'endpoints': [{'lb_endpoints': [
             {'endpoint': {'address': {'socket_address': {
                 'address': '127.0.0.1', 'port_value': 11}}}}]}]}},
    ]
    endpoints = [{'cluster_name': 'app-svc', 'endpoints': [{'lb_endpoints': [
        {'endpoint': {'address': {'socket_address': {'address': '127.0.0.1',
                                                     'port_value': 10}}},
         'load_balancing_weight': 2}]}]}]
    routes = [{'name': 'routes', 'virtual_hosts': [{
        'name': 'all', 'domains': ['*', 'example.com:80'],
        'request_headers_to_add': [{'header': {'key': 'x-vh', 'value': 'yes'},
                                    'append_action': 'OVERWRITE_IF_EXISTS_OR_ADD'}],
        'routes': [
            {'match': {'safe_regex': {'regex': '^/re/[0-9]+$'},
                       'headers': [{'name': 'x-a', 'string_match': {'prefix': 'b'}}]},
             'route': {'cluster': 'app', 'timeout': '3.5s', 'prefix_rewrite': '/',
                       'retry_policy': {'retry_on': '5xx,reset', 'num_retries': 4,
                                        'per_try_timeout': '1s',
                                        'retry_back_off': {'base_interval': '0.1s',
                                                           'max_interval': '1s'}}}},
            {'match': {'prefix': '/w', 'query_parameters': [
                {'name': 'q', 'string_match': {'exact': 'v'}}]},
             'route': {'weighted_clusters': {'clusters': [
                 {'name': 'app', 'weight': 30}, {'name': 'static-ish', 'weight': 70}]}}},
            {'match': {'path': '/moved'},
             'redirect': {'host_redirect': 'example.org', 'response_code': 'PERMANENT_REDIRECT'}},
            {'match': {'prefix': '/direct'},
             'direct_response': {'status': 418, 'body': {'inline_string': 'teapot'}}},
            {'match': {'prefix': '/'}, 'route': {'cluster': 'app'}}]}]}]
    hcm = {'@type': HCM, 'stat_prefix': 'rich', 'codec_type': 'HTTP1',
           'use_remote_address': True, 'xff_num_trusted_hops': 1,
           'stream_idle_timeout': '120s', 'request_timeout': '30s',
           'common_http_protocol_options': {'idle_timeout': '300s',
                                            'headers_with_underscores_action': 'REJECT_REQUEST'},
           'rds': {'route_config_name': 'routes', 'config_source': source('rds')},
           'tracing': {'random_sampling': {'value': 10}, 'provider': {
               'name': 'envoy.tracers.zipkin', 'typed_config': {
                   '@type': 'type.googleapis.com/envoy.config.trace.v3.ZipkinConfig',
                   'collector_cluster': 'static-ish',
                   'collector_endpoint': '/api/v2/spans',
                   'collector_endpoint_version': 'HTTP_PROTO',
                   'trace_id_128bit': True}}},
           'access_log': [{'name': 'envoy.access_loggers.file', 'typed_config': {
               '@type': FILE_LOG, 'path': log_path,
               'log_format': {'text_format_source': {
                   'inline_string': '%REQ(:METHOD)% %RESPONSE_CODE% %DURATION%\n'}}}}],
           'http_filters': [
               {'name': 'envoy.filters.http.fault', 'typed_config': {
                   '@type': FAULT, 'abort': {'http_status': 503, 'percentage': {
                       'numerator': 1, 'denominator': 'MILLION'}}}},
               {'name': 'envoy.filters.http.rbac', 'typed_config': {'@type': RBAC, 'rules': {
                   'action': 'DENY', 'policies': {'no-admin': {
                       'permissions': [{'url_path': {'path': {'prefix': '/admin'}}}],
                       'principals': [{'any': True}]}}}}},
               {'name': 'envoy.filters.http.local_ratelimit', 'typed_config': {
                   '@type': LRL, 'stat_prefix': 'rl', 'token_bucket': {
                       'max_tokens': 1000, 'tokens_per_fill': 1000, 'fill_interval': '1s'},
                   'filter_enabled': {'default_value': {'numerator': 100}},
                   'filter_enforced': {'default_value': {'numerator': 100}}}},
               {'name': 'envoy.filters.http.router', 'typed_config': {'@type': ROUTER}}]}
    return {'clusters': clusters, 'endpoints': endpoints, 'routes': routes}, hcm


@unittest.skipIf(CP_MISSING is not None, CP_MISSING or '')
class WireEquivalenceTest(unittest.TestCase):
    maxDiff = None
    """The same resources, encoded by protobufjs from Envoy's protos and sent over ADS, and
    written as JSON files: petrel's /config_dump shows the same clusters, listeners, routes
    and endpoints (the references to their sources aside), so a resource means the same
    whichever way it arrives. proto3 leaves a field at its default off the wire (an enum's
    first value, 0, false), so these resources write none: a file that spells one out shows
    it, the wire cannot."""

    def dump(self, p):
        status, headers, body = p.admin_get('/config_dump')
        self.assertEqual(status, 200)
        out = {}
        for c in json.loads(body)['configs']:
            for key, items in c.items():
                if isinstance(items, list) and key.startswith('dynamic'):
                    for it in items:
                        it = it.get('active_state', it)
                        res = it.get('cluster') or it.get('listener') or \
                            it.get('route_config') or it.get('endpoint_config')
                        if res is not None:
                            out[res.get('name') or res.get('cluster_name')] = res
        return out

    @staticmethod
    def sources_out(tree):
        """The config sources (ads, or a file's path) replaced by one marker, and durations
        by their value: "0.25s" as written in a file is "0.250s" in proto3 JSON's canonical
        form, which is what a Duration decodes to."""
        if isinstance(tree, dict):
            return {k: ('SOURCE' if k in ('eds_config', 'config_source') else
                        WireEquivalenceTest.sources_out(v)) for k, v in tree.items()}
        if isinstance(tree, list):
            return [WireEquivalenceTest.sources_out(v) for v in tree]
        if isinstance(tree, str) and re.fullmatch(r'[0-9]+(\.[0-9]+)?s', tree):
            return ('duration', float(tree[:-1]))
        return tree

    def test_same_config_dump_both_ways(self):
        d = tempfile.mkdtemp(prefix='petrel-wire-')
        self.addCleanup(shutil.rmtree, d, True)
        log = os.path.join(d, 'access.log')
        files = {k: os.path.join(d, k + '.json') for k in ('cds', 'eds', 'rds', 'lds')}
        port_a, port_b, admin_a, admin_b = h.free_ports(4)

        def ads(kind):
            return {'ads': {}, 'resource_api_version': 'V3'}

        def path(kind):
            return {'path_config_source': {'path': files[kind]}, 'resource_api_version': 'V3'}

        # Over ADS.
        res, hcm = rich_resources(ads, log)
        lst = {'name': 'rich', 'address': {'socket_address': {'address': '127.0.0.1',
                                                              'port_value': port_a}},
               'filter_chains': [{'filters': [{
                   'name': 'envoy.filters.network.http_connection_manager',
                   'typed_config': hcm}]}]}
        cp = ControlPlane(dict(res, listeners=[lst]))
        self.addCleanup(cp.close)
        pa = h.Petrel(bootstrap(cp.port, admin_a))
        self.addCleanup(pa.close)
        pa.start()
        h.wait_until(lambda: all(cp.acked(t, '1') for t in (LDS, RDS, CDS, EDS)), 20,
                     message='not all ACKed: %s' % cp.events('nack'))

        # From files.
        res_f, hcm_f = rich_resources(path, log)
        lst_f = json.loads(json.dumps(lst))
        lst_f['filter_chains'][0]['filters'][0]['typed_config'] = hcm_f
        lst_f['address']['socket_address']['port_value'] = port_b
        types = {'cds': CDS, 'eds': EDS, 'rds': RDS, 'lds': LDS}
        for kind, items in (('cds', res_f['clusters']), ('eds', res_f['endpoints']),
                            ('rds', res_f['routes']), ('lds', [lst_f])):
            with open(files[kind], 'w') as f:
                json.dump({'version_info': '1', 'resources': [
                    dict(r, **{'@type': types[kind]}) for r in items]}, f)
        cfg = {'node': {'id': 'n', 'cluster': 'c'}, 'admin': h.admin(admin_b),
               'dynamic_resources': {'cds_config': path('cds'), 'lds_config': path('lds')}}
        pb = h.Petrel(cfg)
        self.addCleanup(pb.close)
        pb.start()

        a, b = self.sources_out(self.dump(pa)), self.sources_out(self.dump(pb))
        b['rich']['address']['socket_address']['port_value'] = port_a
        self.assertEqual(sorted(a), sorted(b))
        for name in a:
            self.assertEqual(a[name], b[name], name)
        self.assertEqual(sorted(a), ['app', 'app-svc', 'dns', 'rich', 'routes', 'static-ish'])


if __name__ == '__main__':
    unittest.main(verbosity=2)
