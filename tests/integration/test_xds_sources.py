"""xDS sources with a control plane of their own (api_config_source over gRPC), and SDS over
gRPC, against tools/xds-control-plane (Envoy's own .proto files, not petrel's schema).

Covered:
- CDS and EDS each from its own source (`api_config_source`, GRPC and DELTA_GRPC): one stream
  per type on the type's own service (ClusterDiscoveryService/StreamClusters or
  DeltaClusters, EndpointDiscoveryService/...), EDS by name; pushes; a NACK of a bad resource
  on its own stream with the last good config serving; the control plane's streams closed
  and the control plane killed and restarted (reconnect, every type asked for again);
- LDS and RDS from their own sources, and sources of several kinds mixed (ADS and a source's
  own stream in one petrel);
- SDS over gRPC on a Unix socket, as Istio's sidecar bootstrap has it (`sds-grpc`, a STATIC
  cluster with a pipe address and HTTP/2, secrets "default" and "ROOTCA"): a TLS listener
  whose certificate comes by SDS is not serving before it comes (connections refused: the
  listener warms) and serves once it does; a rotation is seen by the next handshake while
  an established connection carries on; an mTLS upstream cluster whose client certificate
  and CA come by SDS (combined_validation_context, as Istio writes it); SDS over ADS; a
  secret that never comes: the listener warms until initial_fetch_timeout, then is active
  and refuses handshakes (downstream_context_secrets_not_ready);
- config errors naming the field: a control plane's cluster that does not exist or is not
  static (EDS), google_grpc, REST without refresh_delay, a type without a service.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_xds_sources.py -v
"""

import json
import os
import shutil
import socket
import ssl
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import certs as C  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402
from test_xds_ads import (CP_MISSING, ControlPlane, HCM, ROUTER, HPO, LDS, RDS, CDS, EDS,  # noqa: E402
                          routes, assignment)

SECRET = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret'
DTLS = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext'
UTLS = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext'


def own(cluster='xds', delta=False, **extra):
    """A ConfigSource with its own control plane (api_config_source over gRPC)."""
    api = {'api_type': 'DELTA_GRPC' if delta else 'GRPC', 'transport_api_version': 'V3',
           'grpc_services': [{'envoy_grpc': {'cluster_name': cluster}}]}
    api.update(extra)
    return {'api_config_source': api, 'resource_api_version': 'V3'}


def xds_cluster(name, port=None, pipe=None):
    c = h.cluster(name, [port or 1])
    c['typed_extension_protocol_options'] = {HPO: {
        '@type': 'type.googleapis.com/' + HPO,
        'explicit_http_config': {'http2_protocol_options': {}}}}
    if pipe is not None:
        c['load_assignment']['endpoints'][0]['lb_endpoints'][0]['endpoint']['address'] = {
            'pipe': {'path': pipe}}
    return c


def eds_cluster(name, source):
    return {'name': name, 'type': 'EDS', 'connect_timeout': '1s',
            'eds_cluster_config': {'eds_config': source}}


def http_listener(port, route_source=None, inline_cluster=None, name='ingress',
                  transport_socket=None):
    hcm = {'@type': HCM, 'stat_prefix': name,
           'http_filters': [{'name': 'envoy.filters.http.router',
                             'typed_config': {'@type': ROUTER}}]}
    if route_source is not None:
        hcm['rds'] = {'route_config_name': 'routes', 'config_source': route_source}
    else:
        hcm['route_config'] = dict(routes(inline_cluster), validate_clusters=False)
    chain = {'filters': [{'name': 'envoy.filters.network.http_connection_manager',
                          'typed_config': hcm}]}
    if transport_socket is not None:
        chain['transport_socket'] = transport_socket
    return {'name': name,
            'address': {'socket_address': {'address': '127.0.0.1', 'port_value': port}},
            'filter_chains': [chain]}


def served_by(port, path='/x'):
    try:
        r = h.http_request(port, 'GET', path)
    except OSError:
        return None, None
    return r.status, (r.json()['name'] if r.status == 200 else None)


def stream_services(cp, kind='connect'):
    return [(e.get('service'), e.get('protocol')) for e in cp.events(kind)]


@unittest.skipIf(CP_MISSING is not None, CP_MISSING or '')
class OwnSourcesTest(unittest.TestCase):
    """CDS and EDS each on a stream of its own (api_config_source), state of the world."""
    DELTA = False

    def setUp(self):
        self.a = HttpUpstream(name='a')
        self.addCleanup(self.a.close)
        self.b = HttpUpstream(name='b')
        self.addCleanup(self.b.close)
        self.port, self.admin = h.free_ports(2)
        self.src = own(delta=self.DELTA)
        self.cp = ControlPlane({'clusters': [eds_cluster('app', self.src)],
                                'endpoints': [assignment('app', self.a.port)]})
        self.addCleanup(self.cp.close)

    def bootstrap(self, **dyn):
        cfg = {'node': {'id': 'sidecar-1', 'cluster': 'test'},
               'admin': h.admin(self.admin),
               'dynamic_resources': dict({'cds_config': self.src}, **dyn),
               'static_resources': {
                   'clusters': [xds_cluster('xds', self.cp.port)],
                   'listeners': [http_listener(self.port, inline_cluster='app')]}}
        return cfg

    def start(self, cfg=None):
        self.p = h.Petrel(cfg or self.bootstrap())
        self.addCleanup(self.p.close)
        self.p.start()
        h.wait_until(lambda: self.cp.acked(EDS, '1'), 20, message='EDS not ACKed')

    def test_one_stream_per_type_on_its_own_service(self):
        self.start()
        h.wait_until(lambda: served_by(self.port) == (200, 'a'), 10)
        proto = 'delta' if self.DELTA else 'sotw'
        self.assertEqual(sorted(stream_services(self.cp)), [('CDS', proto), ('EDS', proto)])
        first = [e for e in self.cp.events('request') if e.get('first')]
        self.assertEqual(len(first), 2)  # each stream's first request carries the node
        for e in first:
            self.assertEqual(e['node']['id'], 'sidecar-1')
            self.assertEqual(e['node']['user_agent_name'], 'petrel')
        self.assertEqual([e['resource_names'] for e in self.cp.events('request', EDS)][0],
                         ['app'])
        self.assertTrue(self.cp.acked(CDS, '1'))
        self.assertEqual(self.p.stat('cluster_manager.cds.control_plane.connected_state'), 1)
        self.assertEqual(self.p.stat('cluster_manager.eds.control_plane.connected_state'), 1)
        self.assertEqual(self.p.stat('cluster_manager.cds.update_success'), 1)
        self.assertEqual(self.cp.events('nack'), [])
        # no ADS stream: none was configured
        self.assertIsNone(self.p.stat('control_plane.connected_state', None))

    def test_pushes_and_a_nack_per_stream(self):
        self.start()
        h.wait_until(lambda: served_by(self.port) == (200, 'a'), 10)
        self.cp.push(endpoints=[assignment('app', self.b.port)])
        h.wait_until(lambda: served_by(self.port) == (200, 'b'), 10)
        # a bad cluster: NACKed on the CDS stream, the EDS stream unaffected
        bad = eds_cluster('app', self.src)
        bad['preconnect_policy'] = {'per_upstream_preconnect_ratio': 1.5}
        self.cp.push(clusters=[bad])
        h.wait_until(lambda: self.cp.events('nack', CDS), 10)
        nack = self.cp.events('nack', CDS)[0]
        self.assertEqual(nack['error_detail']['code'], 3)
        self.assertIn('preconnect_policy', nack['error_detail']['message'])
        cds_stream = [e['stream'] for e in self.cp.events('connect') if e['service'] == 'CDS']
        self.assertEqual(nack['stream'], cds_stream[0])
        self.assertEqual(served_by(self.port), (200, 'b'))
        self.assertEqual(self.p.stat('cluster_manager.cds.update_rejected'), 1)
        # a bad assignment: NACKed on the EDS stream
        bad_cla = assignment('app', self.a.port)
        bad_cla['endpoints'][0]['lb_endpoints'][0]['endpoint']['address'][
            'socket_address']['port_value'] = 70000
        self.cp.push(endpoints=[bad_cla])
        h.wait_until(lambda: self.cp.events('nack', EDS), 10)
        self.assertIn('port_value', self.cp.events('nack', EDS)[0]['error_detail']['message'])
        self.assertEqual(served_by(self.port), (200, 'b'))
        # fixed: both accepted
        self.cp.push(clusters=[eds_cluster('app', self.src)],
                     endpoints=[assignment('app', self.a.port)])
        h.wait_until(lambda: served_by(self.port) == (200, 'a'), 10)
        h.wait_until(lambda: self.cp.acked(CDS, '3'), 10)

    def test_reconnect(self):
        self.start()
        h.wait_until(lambda: served_by(self.port) == (200, 'a'), 10)
        self.cp.post('/close-streams')
        h.wait_until(lambda: len(self.cp.events('connect')) == 4, 20)
        h.wait_until(lambda: [e for e in self.cp.events('ack', EDS) if e['stream'] > 2], 20)
        if not self.DELTA:
            resumed = {e['type_url']: e.get('version') for e in self.cp.events('request')
                       if e['stream'] > 2}
            self.assertEqual(resumed.get(CDS), '1')
            self.assertEqual(resumed.get(EDS), '1')
        # killed: the last config serves; back: petrel reconnects and takes a push
        self.cp.kill()
        h.wait_until(lambda: self.p.stat(
            'cluster_manager.cds.control_plane.connected_state') == 0, 10)
        self.assertEqual(served_by(self.port), (200, 'a'))
        self.cp.start()
        h.wait_until(lambda: self.p.stat(
            'cluster_manager.eds.control_plane.connected_state') == 1, 40)
        h.wait_until(lambda: self.cp.acked(EDS, '1'), 20)
        self.cp.push(endpoints=[assignment('app', self.b.port)])
        h.wait_until(lambda: served_by(self.port) == (200, 'b'), 20)

    def test_eds_stream_closes_with_its_last_cluster(self):
        self.start()
        h.wait_until(lambda: served_by(self.port) == (200, 'a'), 10)
        self.cp.push(clusters=[])
        h.wait_until(lambda: [e for e in self.cp.events('disconnect')
                              if e.get('service') == 'EDS'], 10)
        self.assertEqual(self.p.stat('cluster_manager.eds.control_plane.connected_state'), 0)
        # and opens again for a new one
        self.cp.push(clusters=[eds_cluster('app', self.src)])
        h.wait_until(lambda: len([e for e in self.cp.events('connect')
                                  if e.get('service') == 'EDS']) == 2, 10)
        h.wait_until(lambda: served_by(self.port) == (200, 'a'), 10)


@unittest.skipIf(CP_MISSING is not None, CP_MISSING or '')
class OwnDeltaSourcesTest(OwnSourcesTest):
    """The same over delta (DeltaClusters, DeltaEndpoints)."""
    DELTA = True




@unittest.skipIf(CP_MISSING is not None, CP_MISSING or '')
class EverythingFromOwnSourcesTest(unittest.TestCase):
    """LDS, RDS, CDS and EDS each from its own source (no ADS), and sources mixed."""

    def setUp(self):
        self.a = HttpUpstream(name='a')
        self.addCleanup(self.a.close)
        self.b = HttpUpstream(name='b')
        self.addCleanup(self.b.close)
        self.port, self.admin = h.free_ports(2)

    def start(self, src, dyn):
        self.cp = ControlPlane({
            'listeners': [http_listener(self.port, route_source=src)],
            'routes': [routes('app')],
            'clusters': [eds_cluster('app', src)],
            'endpoints': [assignment('app', self.a.port)]})
        self.addCleanup(self.cp.close)
        cfg = {'node': {'id': 'n1', 'cluster': 'c1'}, 'admin': h.admin(self.admin),
               'dynamic_resources': dyn,
               'static_resources': {'clusters': [xds_cluster('xds', self.cp.port)]}}
        self.p = h.Petrel(cfg)
        self.addCleanup(self.p.close)
        self.p.start()
        h.wait_until(lambda: served_by(self.port) == (200, 'a'), 20,
                     message='not served: %s' % self.cp.events('nack'))

    def test_four_streams(self):
        src = own(delta=True)
        self.start(src, {'lds_config': src, 'cds_config': src})
        self.assertEqual(sorted(s for s, _ in stream_services(self.cp)),
                         ['CDS', 'EDS', 'LDS', 'RDS'])
        self.assertEqual(self.cp.events('nack'), [])
        self.assertEqual(self.p.stat('listener_manager.lds.control_plane.connected_state'), 1)
        self.assertEqual(self.p.stat('http.rds_file.control_plane.connected_state'), 1)
        # a route pushed on its own stream
        self.cp.push(routes=[routes('app', extra=[{'match': {'prefix': '/d'},
                                                   'direct_response': {'status': 204}}])])
        h.wait_until(lambda: served_by(self.port, '/d')[0] == 204, 10)
        # a listener whose route source names a cluster that is not static: NACKed on the
        # LDS stream with the field's path
        bad = http_listener(self.port, route_source=own('app'))
        self.cp.push(listeners=[bad])
        h.wait_until(lambda: self.cp.events('nack', LDS), 10)
        self.assertIn('rds.config_source.api_config_source.grpc_services[0].envoy_grpc.'
                      'cluster_name: "app" is not a cluster of static_resources',
                      self.cp.events('nack', LDS)[0]['error_detail']['message'])
        self.assertEqual(served_by(self.port)[0], 200)

    def test_mixed_with_ads(self):
        # listeners and routes over ADS, clusters and endpoints from their own streams
        src = own()
        ads = {'ads': {}, 'resource_api_version': 'V3'}
        self.cp = ControlPlane({
            'listeners': [http_listener(self.port, route_source=ads)],
            'routes': [routes('app')],
            'clusters': [eds_cluster('app', src)],
            'endpoints': [assignment('app', self.a.port)]})
        self.addCleanup(self.cp.close)
        cfg = {'node': {'id': 'n1', 'cluster': 'c1'}, 'admin': h.admin(self.admin),
               'dynamic_resources': {
                   'ads_config': dict(own()['api_config_source'], api_type='DELTA_GRPC'),
                   'lds_config': ads, 'cds_config': src},
               'static_resources': {'clusters': [xds_cluster('xds', self.cp.port)]}}
        self.p = h.Petrel(cfg)
        self.addCleanup(self.p.close)
        self.p.start()
        h.wait_until(lambda: served_by(self.port) == (200, 'a'), 20,
                     message='not served: %s' % self.cp.events('nack'))
        self.assertEqual(sorted(stream_services(self.cp)),
                         [('ADS', 'delta'), ('CDS', 'sotw'), ('EDS', 'sotw')])
        ads_stream = [e['stream'] for e in self.cp.events('connect') if e['service'] == 'ADS']
        self.assertEqual({e['type_url'] for e in self.cp.events('ack')
                          if e['stream'] == ads_stream[0]}, {LDS, RDS})
        self.cp.push(endpoints=[assignment('app', self.b.port)])
        h.wait_until(lambda: served_by(self.port) == (200, 'b'), 10)



def rest(cluster='xds-rest', refresh='0.2s', timeout='1s'):
    """A ConfigSource polling a REST-JSON control plane."""
    return {'api_config_source': {'api_type': 'REST', 'transport_api_version': 'V3',
                                  'cluster_names': [cluster], 'refresh_delay': refresh,
                                  'request_timeout': timeout},
            'resource_api_version': 'V3'}


@unittest.skipIf(CP_MISSING is not None, CP_MISSING or '')
class RestSourcesTest(unittest.TestCase):
    """REST-JSON: CDS and EDS polled (POST /v3/discovery:clusters and :endpoints) every
    refresh_delay; 304 when nothing changed; ACK by the next poll's version, NACK by its
    error_detail; a control plane gone: the last config serves, failures are counted."""

    def setUp(self):
        self.a = HttpUpstream(name='a')
        self.addCleanup(self.a.close)
        self.b = HttpUpstream(name='b')
        self.addCleanup(self.b.close)
        self.port, self.admin = h.free_ports(2)
        self.src = rest()
        self.cp = ControlPlane({'clusters': [eds_cluster('app', self.src)],
                                'endpoints': [assignment('app', self.a.port)]}, rest=True)
        self.addCleanup(self.cp.close)
        cfg = {'node': {'id': 'rest-1', 'cluster': 'test'},
               'admin': h.admin(self.admin),
               'dynamic_resources': {'cds_config': self.src},
               'static_resources': {
                   'clusters': [h.cluster('xds-rest', [self.cp.rest])],
                   'listeners': [http_listener(self.port, inline_cluster='app')]}}
        self.p = h.Petrel(cfg)
        self.addCleanup(self.p.close)
        self.p.start()

    def rest_events(self, kind, type_url=None):
        return [e for e in self.cp.events(kind, type_url) if e.get('protocol') == 'rest']

    def test_polling(self):
        h.wait_until(lambda: served_by(self.port) == (200, 'a'), 10)
        h.wait_until(lambda: self.rest_events('ack', CDS) and self.rest_events('ack', EDS), 10)
        # nothing changed: 304s, and nothing applied again
        h.wait_until(lambda: len([e for e in self.rest_events('response', EDS)
                                  if e.get('status') == 304]) >= 2, 10)
        self.assertEqual(self.p.stat('cluster_manager.cds.update_success'), 1)
        asks = [e for e in self.rest_events('request', EDS)]
        self.assertEqual(asks[0]['resource_names'], ['app'])
        self.assertEqual(asks[0]['node']['id'], 'rest-1')
        self.assertEqual(asks[0]['node']['user_agent_name'], 'petrel')
        # a push is seen within a refresh_delay or so
        self.cp.push(endpoints=[assignment('app', self.b.port)])
        h.wait_until(lambda: served_by(self.port) == (200, 'b'), 5)
        # a bad cluster: NACKed with its path by the next poll, the config in force stays
        bad = eds_cluster('app', self.src)
        bad['preconnect_policy'] = {'per_upstream_preconnect_ratio': 1.5}
        self.cp.push(clusters=[bad])
        h.wait_until(lambda: self.rest_events('nack', CDS), 10)
        nack = self.rest_events('nack', CDS)[0]
        self.assertIn('preconnect_policy', nack['error_detail']['message'])
        self.assertEqual(nack['version'], '1')
        self.assertEqual(served_by(self.port), (200, 'b'))
        self.assertGreaterEqual(self.p.stat('cluster_manager.cds.update_rejected'), 1)

    def test_control_plane_away(self):
        h.wait_until(lambda: served_by(self.port) == (200, 'a'), 10)
        self.cp.kill()
        h.wait_until(lambda: self.p.stat('cluster_manager.eds.update_failure', 0) >= 2, 10)
        self.assertEqual(served_by(self.port), (200, 'a'))
        self.cp.start()
        self.cp.push(endpoints=[assignment('app', self.b.port)])
        h.wait_until(lambda: served_by(self.port) == (200, 'b'), 10)


# ---- SDS over gRPC --------------------------------------------------------------------------

PKI = None


def pki():
    global PKI
    if PKI is None:
        PKI = C.standard_pki()
    return PKI


def sds_source(delta=False, timeout=None, ads=False):
    """Istio's sds_config: the sds-grpc cluster (a Unix socket), node on the first message."""
    if ads:
        src = {'ads': {}, 'resource_api_version': 'V3'}
    else:
        src = own('sds-grpc', delta=delta, set_node_on_first_message_only=True)
    if timeout is not None:
        src['initial_fetch_timeout'] = timeout
    return src


def sds_secret(name, source):
    return {'name': name, 'sds_config': source}


def server_tls(source, client_ca=False):
    """A DownstreamTlsContext whose certificate (and, for mTLS, CA) come by SDS."""
    common = {'tls_certificate_sds_secret_configs': [sds_secret('default', source)]}
    tc = {'@type': DTLS, 'common_tls_context': common}
    if client_ca:
        common['combined_validation_context'] = {
            'default_validation_context': {'match_subject_alt_names': [
                {'prefix': 'spiffe://cluster.local/'}]},
            'validation_context_sds_secret_config': sds_secret('ROOTCA', source)}
        tc['require_client_certificate'] = True
    return {'name': 'envoy.transport_sockets.tls', 'typed_config': tc}


def client_tls(source, san):
    """An UpstreamTlsContext as Istio writes it: the client certificate "default" and the CA
    "ROOTCA" by SDS, the peer's SAN in default_validation_context."""
    return {'name': 'envoy.transport_sockets.tls', 'typed_config': {
        '@type': UTLS, 'common_tls_context': {
            'tls_certificate_sds_secret_configs': [sds_secret('default', source)],
            'combined_validation_context': {
                'default_validation_context': {'match_typed_subject_alt_names': [
                    C.san_uri(exact=san)]},
                'validation_context_sds_secret_config': sds_secret('ROOTCA', source)}}}}


def tls_secret(name, cert):
    return {'name': name, 'tls_certificate': {
        'certificate_chain': {'inline_string': cert.pem},
        'private_key': {'inline_string': cert.key_pem}}}


def ca_secret(name, ca):
    return {'name': name, 'validation_context': {'trusted_ca': {'inline_string': ca.pem}}}


def tls_get(port, ctx, sock=None):
    """A GET over TLS; (status, name, the server certificate's serial, the socket)."""
    if sock is None:
        raw = socket.create_connection(('127.0.0.1', port), timeout=5)
        sock = ctx.wrap_socket(raw, server_hostname='petrel.test')
    sock.sendall(b'GET /x HTTP/1.1\r\nhost: a\r\n\r\n')
    r = h.read_response(h.SockReader(sock))
    return r.status, (r.json()['name'] if r.status == 200 else None), C.peer_cert_serial(sock), sock


def tls_serial(port, ctx):
    """The serial a new handshake gets, or None when it fails."""
    try:
        status, name, serial, sock = tls_get(port, ctx)
        sock.close()
        return serial if status == 200 else None
    except (OSError, ssl.SSLError):
        return None


def secret_asked(cp, name):
    """Whether petrel asked for the secret (a delta subscription may ride on an ACK)."""
    return any(name in (e.get('resource_names') or []) for e in cp.log()
               if e.get('type_url') == SECRET and e['event'] in ('request', 'ack', 'nack'))


def refused(port):
    try:
        socket.create_connection(('127.0.0.1', port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


@unittest.skipIf(CP_MISSING is not None, CP_MISSING or '')
class SdsOverGrpcTest(unittest.TestCase):
    """Secrets from a control plane on a Unix socket, as Istio's sidecar bootstrap has them."""
    DELTA = False

    def setUp(self):
        self.up = HttpUpstream(name='a')
        self.addCleanup(self.up.close)
        self.port, self.admin = h.free_ports(2)
        d = tempfile.mkdtemp(prefix='petrel-sds-')
        self.addCleanup(shutil.rmtree, d, True)
        self.sock = os.path.join(d, 'socket')
        self.cp = ControlPlane({'secrets': []}, extra_args=['--unix', self.sock])
        self.addCleanup(self.cp.close)

    def bootstrap(self, listeners=(), clusters=(), **dyn):
        return {'node': {'id': 'sidecar~10.0.0.1~app.default~default.svc.cluster.local',
                         'cluster': 'app.default'},
                'admin': h.admin(self.admin),
                'static_resources': {
                    'clusters': [xds_cluster('sds-grpc', pipe=self.sock)] + list(clusters),
                    'listeners': list(listeners)}}

    def start(self, cfg):
        p = h.Petrel(cfg, wait_ready=False, wait_listeners=False)
        self.addCleanup(p.close)
        p.start()
        return p

    def sds_asked(self, name):
        return secret_asked(self.cp, name)

    def test_a_listener_serves_once_its_certificate_comes_and_rotates(self):
        P = pki()
        lst = http_listener(self.port, inline_cluster='a',
                            transport_socket=server_tls(sds_source(self.DELTA, '0s')))
        p = self.start(self.bootstrap([lst], [h.cluster('a', [self.up.port])]))
        h.wait_until(lambda: self.sds_asked('default'), 20, message='SDS not asked for')
        # warming: bound, not listening; not ready
        self.assertTrue(refused(self.port))
        self.assertEqual(p.admin_get('/ready')[0], 503)
        self.assertEqual(sorted(stream_services(self.cp)),
                         [('SDS', 'delta' if self.DELTA else 'sotw')])
        first = [e for e in self.cp.events('request') if e.get('first')][0]
        self.assertTrue(first['node']['id'].startswith('sidecar~'), first)
        # the certificate comes: listening, serving, ready
        self.cp.push(secrets=[tls_secret('default', P['server'])])
        h.wait_until(lambda: not refused(self.port), 10)
        ctx = C.client_context(ca=P['ca'])
        status, name, serial, kept = tls_get(self.port, ctx)
        self.addCleanup(kept.close)
        self.assertEqual((status, name, serial), (200, 'a', P['server'].serial))
        h.wait_until(lambda: p.admin_get('/ready')[0] == 200, 10)
        self.assertTrue(self.cp.acked(SECRET, '2'))
        # (delta: the control plane's first answer, that it has no "default", is an update)
        first_updates = p.stat('sds.default.update_success')
        self.assertEqual(first_updates, 2 if self.DELTA else 1)
        p.wait_log('secret "default" came from')
        # rotation: a new handshake gets the new certificate, the connection made before
        # carries on with the old one
        self.cp.push(secrets=[tls_secret('default', P['server2'])])
        h.wait_until(lambda: tls_serial(self.port, ctx) == P['server2'].serial, 10)
        status, name, serial, kept = tls_get(self.port, ctx, kept)
        self.assertEqual((status, name, serial), (200, 'a', P['server'].serial))
        self.assertEqual(p.stat('sds.default.update_success'), first_updates + 1)
        self.assertGreaterEqual(p.stat(
            'listener.127.0.0.1_%d.server_ssl_socket_factory.ssl_context_update_by_sds'
            % self.port), 2)
        # a bad secret: NACKed, the certificate in force stays
        self.cp.push(secrets=[tls_secret('default', P['expired'])])
        h.wait_until(lambda: self.cp.events('nack', SECRET), 10)
        self.assertIn('expired', self.cp.events('nack', SECRET)[0]['error_detail']['message'])
        self.assertEqual(tls_serial(self.port, ctx), P['server2'].serial)

    def test_mtls_listener_and_upstream_by_sds(self):
        # An upstream that wants a client certificate from the CA; petrel's client
        # certificate and the CA it checks the upstream with come by SDS.
        P = pki()
        up = HttpUpstream(name='tls-up', ssl_context=C.server_context(P['backend'],
                                                                    client_ca=P['ca']))
        self.addCleanup(up.close)
        src = sds_source(self.DELTA, '0s')
        backend = h.cluster('backend', [up.port],
                            transport_socket=client_tls(src, C.spiffe('default', 'backend')))
        lst = http_listener(self.port, inline_cluster='backend',
                            transport_socket=server_tls(src, client_ca=True))
        p = self.start(self.bootstrap([lst], [backend]))
        h.wait_until(lambda: self.sds_asked('ROOTCA') and self.sds_asked('default'), 20)
        self.assertTrue(refused(self.port))
        status, headers, body = p.admin_get('/config_dump')
        self.assertIn(b'backend', body)
        self.assertEqual(p.admin_get('/ready')[0], 503)
        self.cp.push(secrets=[tls_secret('default', P['frontend']), ca_secret('ROOTCA', P['ca'])])
        h.wait_until(lambda: not refused(self.port), 10)
        ctx = C.client_context(ca=P['ca'], cert=P['frontend'])
        status, name, serial, s = tls_get(self.port, ctx)
        s.close()
        self.assertEqual((status, name), (200, 'tls-up'))
        self.assertEqual(serial, P['frontend'].serial)  # the listener serves "default"
        self.assertGreater(p.stat('cluster.backend.ssl.handshake', 0), 0)
        h.wait_until(lambda: p.admin_get('/ready')[0] == 200, 10)
        # both secrets on one stream, each subscribed once
        self.assertEqual(len(self.cp.events('connect')), 1)

    def test_an_upstream_secret_not_come_fails_its_connections(self):
        P = pki()
        up = HttpUpstream(name='tls-up', ssl_context=C.server_context(P['backend'],
                                                                    client_ca=P['ca']))
        self.addCleanup(up.close)
        src = sds_source(self.DELTA, '1s')
        backend = h.cluster('backend', [up.port],
                            transport_socket=client_tls(src, C.spiffe('default', 'backend')))
        lst = http_listener(self.port, inline_cluster='backend')
        p = self.start(self.bootstrap([lst], [backend]))
        # warming until the timeout, then live with the cluster failing its connections
        self.assertEqual(p.admin_get('/ready')[0], 503)
        h.wait_until(lambda: p.admin_get('/ready')[0] == 200, 10)
        self.assertEqual(served_by(self.port)[0], 503)
        self.assertGreater(p.stat('cluster.backend.client_ssl_socket_factory.'
                                  'upstream_context_secrets_not_ready'), 0)
        self.assertEqual(up.requests if hasattr(up, 'requests') else [], [])
        self.cp.push(secrets=[tls_secret('default', P['frontend']), ca_secret('ROOTCA', P['ca'])])
        h.wait_until(lambda: served_by(self.port) == (200, 'tls-up'), 10)

    def test_a_secret_that_never_comes(self):
        lst = http_listener(self.port, inline_cluster='a',
                            transport_socket=server_tls(sds_source(self.DELTA, '2s')))
        p = self.start(self.bootstrap([lst], [h.cluster('a', [self.up.port])]))
        h.wait_until(lambda: self.sds_asked('default'), 20)
        self.assertTrue(refused(self.port))
        self.assertEqual(p.admin_get('/ready')[0], 503)
        p.wait_log('1 listener waiting for TLS secrets')
        # the timeout runs out: listening, live, but no handshake without a certificate
        h.wait_until(lambda: not refused(self.port), 10)
        h.wait_until(lambda: p.admin_get('/ready')[0] == 200, 10)
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            tls_get(self.port, C.client_context())
        h.wait_until(lambda: p.stat('listener.127.0.0.1_%d.server_ssl_socket_factory.'
                                    'downstream_context_secrets_not_ready' % self.port, 0) > 0, 5)
        # it comes late: served
        self.cp.push(secrets=[tls_secret('default', pki()['server'])])
        h.wait_until(lambda: tls_serial(self.port, C.client_context()) == pki()['server'].serial,
                     10)


@unittest.skipIf(CP_MISSING is not None, CP_MISSING or '')
class DeltaSdsOverGrpcTest(SdsOverGrpcTest):
    """The same over delta (SecretDiscoveryService/DeltaSecrets)."""
    DELTA = True



@unittest.skipIf(CP_MISSING is not None, CP_MISSING or '')
class SdsOverAdsTest(unittest.TestCase):
    """Listeners from LDS whose certificates come by SDS on the same ADS stream (delta, as
    Istio): a new listener warms until its secret comes, the others serve meanwhile."""

    def test_lds_listeners_warm_for_their_secrets(self):
        P = pki()
        up = HttpUpstream(name='a')
        self.addCleanup(up.close)
        port1, port2, admin = h.free_ports(3)
        ads = sds_source(ads=True)

        def tls_listener(name, port, secret):
            l = http_listener(port, inline_cluster='a', name=name,
                              transport_socket=server_tls(ads))
            common = l['filter_chains'][0]['transport_socket']['typed_config'][
                'common_tls_context']
            common['tls_certificate_sds_secret_configs'][0]['name'] = secret
            return l

        cp = ControlPlane({'listeners': [tls_listener('one', port1, 'default')],
                           'secrets': []})
        self.addCleanup(cp.close)
        cfg = {'node': {'id': 'n1', 'cluster': 'c1'}, 'admin': h.admin(admin),
               'dynamic_resources': {
                   'ads_config': dict(own()['api_config_source'], api_type='DELTA_GRPC'),
                   'lds_config': {'ads': {}, 'resource_api_version': 'V3'}},
               'static_resources': {'clusters': [xds_cluster('xds', cp.port),
                                                 h.cluster('a', [up.port])]}}
        p = h.Petrel(cfg, wait_ready=False)
        self.addCleanup(p.close)
        p.start()
        h.wait_until(lambda: cp.acked(LDS, '1'), 20)
        h.wait_until(lambda: secret_asked(cp, 'default'), 10)
        self.assertTrue(refused(port1))
        self.assertEqual(p.admin_get('/ready')[0], 503)  # its first listener warms
        cp.push(secrets=[tls_secret('default', P['server'])])
        ctx = C.client_context(ca=P['ca'])
        h.wait_until(lambda: tls_serial(port1, ctx) == P['server'].serial, 10)
        h.wait_until(lambda: p.admin_get('/ready')[0] == 200, 10)
        # a second listener with a secret of its own: it warms, the first serves
        cp.push(listeners=[tls_listener('one', port1, 'default'),
                           tls_listener('two', port2, 'other')])
        h.wait_until(lambda: cp.acked(LDS, '2'), 10)
        h.wait_until(lambda: secret_asked(cp, 'other'), 10)
        self.assertTrue(refused(port2))
        self.assertEqual(tls_serial(port1, ctx), P['server'].serial)
        cp.push(secrets=[tls_secret('default', P['server']), tls_secret('other', P['server2'])])
        h.wait_until(lambda: tls_serial(port2, ctx) == P['server2'].serial, 10)
        # listener one changed in place to a secret that has not come: the version in force
        # serves until it comes (Envoy's warming of a modified listener)
        cp.push(listeners=[tls_listener('one', port1, 'third'),
                           tls_listener('two', port2, 'other')])
        h.wait_until(lambda: cp.acked(LDS, '3'), 10)
        h.wait_until(lambda: secret_asked(cp, 'third'), 10)
        self.assertEqual(tls_serial(port1, ctx), P['server'].serial)
        dump = json.loads(p.admin_get('/config_dump')[2])
        one = [l for c in dump['configs'] for l in c.get('dynamic_listeners', [])
               if l['name'] == 'one'][0]
        self.assertIn('active_state', one)
        self.assertEqual(one['warming_state']['version_info'], '3')
        cp.push(secrets=[tls_secret('default', P['server']), tls_secret('other', P['server2']),
                         tls_secret('third', P['server2'])])
        h.wait_until(lambda: tls_serial(port1, ctx) == P['server2'].serial, 10)
        dump = json.loads(p.admin_get('/config_dump')[2])
        one = [l for c in dump['configs'] for l in c.get('dynamic_listeners', [])
               if l['name'] == 'one'][0]
        self.assertNotIn('warming_state', one)
        self.assertEqual(one['active_state']['version_info'], '3')
        self.assertEqual(cp.events('nack'), [])
        # one stream for all of it
        self.assertEqual(stream_services(cp), [('ADS', 'delta')])


@unittest.skipIf(CP_MISSING is not None, CP_MISSING or '')
class RdsWarmingTest(unittest.TestCase):
    """A listener whose connection manager takes its routes by RDS from a control plane warms
    (bound, not accepting; /ready 503; listener_manager.total_listeners_warming) until its
    route configuration comes, its first update is rejected, or initial_fetch_timeout runs
    out; a listener changed in place keeps serving as it was until the new one warmed."""
    DELTA = False

    def setUp(self):
        self.a = HttpUpstream(name='a')
        self.addCleanup(self.a.close)
        self.b = HttpUpstream(name='b')
        self.addCleanup(self.b.close)
        self.port, self.admin = h.free_ports(2)

    def ads(self, timeout=None):
        src = {'ads': {}, 'resource_api_version': 'V3'}
        if timeout is not None:
            src['initial_fetch_timeout'] = timeout
        return src

    def start(self, resources, static_listeners=(), lds=True, cp_down=False):
        self.cp = ControlPlane(resources)
        self.addCleanup(self.cp.close)
        if cp_down:
            self.cp.kill()  # its port known, nothing listening on it
        dyn = {'ads_config': dict(own()['api_config_source'],
                                  api_type='DELTA_GRPC' if self.DELTA else 'GRPC')}
        if lds:
            dyn['lds_config'] = self.ads()
        cfg = {'node': {'id': 'n1', 'cluster': 'c1'}, 'admin': h.admin(self.admin),
               'dynamic_resources': dyn,
               'static_resources': {
                   'clusters': [xds_cluster('xds', self.cp.port), h.cluster('a', [self.a.port]),
                                h.cluster('b', [self.b.port])],
                   'listeners': list(static_listeners)}}
        self.p = h.Petrel(cfg, wait_ready=False, wait_listeners=False)
        self.addCleanup(self.p.close)
        self.p.start()
        return self.p

    def rds_asked(self, name):
        return any(name in (e.get('resource_names') or []) for e in self.cp.log()
                   if e.get('type_url') == RDS and e['event'] in ('request', 'ack', 'nack'))

    def warming_gauges(self):
        return (self.p.stat('listener_manager.total_listeners_warming'),
                self.p.stat('listener_manager.total_listeners_active'))

    def dynamic_listener(self, name):
        dump = json.loads(self.p.admin_get('/config_dump')[2])
        return [l for c in dump['configs'] for l in c.get('dynamic_listeners', [])
                if l['name'] == name][0]

    def test_an_lds_listener_accepts_once_its_routes_come(self):
        p = self.start({'listeners': [http_listener(self.port, self.ads())], 'routes': []})
        h.wait_until(lambda: self.cp.acked(LDS, '1'), 20, message='LDS not ACKed')
        h.wait_until(lambda: self.rds_asked('routes'), 10, message='RDS not asked for')
        # warming: bound but refusing, not ready, counted as warming, shown as warming
        self.assertTrue(refused(self.port))
        self.assertEqual(p.admin_get('/ready')[0], 503)
        self.assertEqual(self.warming_gauges(), (1, 0))
        self.assertIn('warming_state', self.dynamic_listener('ingress'))
        self.assertNotIn('active_state', self.dynamic_listener('ingress'))
        # the routes come: accepting, served, ready, active
        self.cp.push(routes=[routes('a')])
        h.wait_until(lambda: served_by(self.port) == (200, 'a'), 10)
        h.wait_until(lambda: p.admin_get('/ready')[0] == 200, 10)
        self.assertEqual(self.warming_gauges(), (0, 1))
        self.assertIn('active_state', self.dynamic_listener('ingress'))
        p.wait_log('listener ingress: warmed')

    def test_initial_fetch_timeout_makes_a_static_listener_active_without_routes(self):
        # A static listener whose routes come from ADS and never come: after its source's
        # initial_fetch_timeout it accepts and answers 404 (no route, NR), as Envoy's.
        lst = http_listener(self.port, self.ads('2s'))
        p = self.start({'routes': []}, static_listeners=[lst], lds=False)
        h.wait_until(lambda: self.rds_asked('routes'), 20, message='RDS not asked for')
        self.assertTrue(refused(self.port))
        self.assertEqual(p.admin_get('/ready')[0], 503)
        p.wait_log('1 listener waiting for TLS secrets or route configurations')
        h.wait_until(lambda: not refused(self.port), 10)
        h.wait_until(lambda: p.admin_get('/ready')[0] == 200, 10)
        self.assertEqual(served_by(self.port), (404, None))
        self.assertEqual(p.stat('http.ingress.no_route'), 1)
        self.assertEqual(self.warming_gauges(), (0, 1))
        # they come late: served
        self.cp.push(routes=[routes('b')])
        h.wait_until(lambda: served_by(self.port) == (200, 'b'), 10)

    def test_a_rejected_first_update_ends_the_warming(self):
        # Envoy lets a listener go on when the first update of its routes is rejected: it
        # accepts and has no route (404) until a good one comes.
        bad = routes('a')
        bad['virtual_hosts'][0]['routes'][0]['match'] = {'safe_regex': {'regex': '('}}
        p = self.start({'listeners': [http_listener(self.port, self.ads())], 'routes': [bad]})
        h.wait_until(lambda: self.cp.events('nack', RDS), 20, message='RDS not NACKed')
        self.assertIn('safe_regex', self.cp.events('nack', RDS)[0]['error_detail']['message'])
        h.wait_until(lambda: not refused(self.port), 10)
        self.assertEqual(served_by(self.port), (404, None))
        self.cp.push(routes=[routes('a')])
        h.wait_until(lambda: served_by(self.port) == (200, 'a'), 10)

    def test_a_listener_changed_in_place_serves_until_the_new_one_warmed(self):
        self.start({'listeners': [http_listener(self.port, self.ads())],
                    'routes': [routes('a')]})
        h.wait_until(lambda: served_by(self.port) == (200, 'a'), 20)
        # the listener now names route configuration "next", which has not come
        changed = http_listener(self.port, self.ads())
        changed['filter_chains'][0]['filters'][0]['typed_config']['rds'][
            'route_config_name'] = 'next'
        self.cp.push(listeners=[changed])
        h.wait_until(lambda: self.cp.acked(LDS, '2'), 10)
        h.wait_until(lambda: self.rds_asked('next'), 10)
        # the version in force serves meanwhile; the new one is warming
        for _ in range(20):
            self.assertEqual(served_by(self.port), (200, 'a'))
        self.assertEqual(self.warming_gauges(), (1, 1))
        one = self.dynamic_listener('ingress')
        self.assertEqual(one['active_state']['version_info'], '1')
        self.assertEqual(one['warming_state']['version_info'], '2')
        # "next" comes: the new version takes over
        self.cp.push(routes=[routes('a'), routes('b', name='next')])
        h.wait_until(lambda: served_by(self.port) == (200, 'b'), 10)
        self.assertEqual(self.warming_gauges(), (0, 1))
        one = self.dynamic_listener('ingress')
        self.assertNotIn('warming_state', one)
        self.assertEqual(one['active_state']['version_info'], '2')

    def test_the_control_plane_down_at_start(self):
        # Nothing answers: the listener warms until its RDS source's initial_fetch_timeout,
        # then accepts without routes (404); the control plane comes up and the routes come.
        lst = http_listener(self.port, self.ads('2s'))
        p = self.start({'routes': [routes('a')]}, static_listeners=[lst], lds=False,
                       cp_down=True)
        self.assertTrue(refused(self.port))
        self.assertEqual(p.admin_get('/ready')[0], 503)
        h.wait_until(lambda: not refused(self.port), 10)
        self.assertEqual(served_by(self.port), (404, None))
        self.assertEqual(p.stat('control_plane.connected_state'), 0)
        self.cp.start()
        h.wait_until(lambda: served_by(self.port) == (200, 'a'), 40)


@unittest.skipIf(CP_MISSING is not None, CP_MISSING or '')
class DeltaRdsWarmingTest(RdsWarmingTest):
    """The same over delta ADS."""
    DELTA = True


# ---- config errors ----------------------------------------------------------------------------

class ConfigErrorsTest(unittest.TestCase):
    """What petrel refuses in a source's api_config_source, each naming its field."""

    def errors(self, cfg):
        with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
            json.dump(cfg, f)
        self.addCleanup(os.unlink, f.name)
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', f.name])
        self.assertEqual(rc, 1, err)
        return err

    def bootstrap(self, src, clusters=None):
        return {'admin': h.admin(h.free_port()),
                'dynamic_resources': {'cds_config': src},
                'static_resources': {'clusters': clusters if clusters is not None else [
                    xds_cluster('xds', 1)]}}

    CDS_API = 'dynamic_resources.cds_config.api_config_source.'

    def test_the_cluster_must_be_static_and_not_eds(self):
        err = self.errors(self.bootstrap(own('nope')))
        self.assertIn(self.CDS_API + 'grpc_services[0].envoy_grpc.cluster_name: "nope" is not a '
                      'cluster of static_resources', err)
        eds = {'name': 'xds', 'type': 'EDS', 'connect_timeout': '1s',
               'eds_cluster_config': {'eds_config': {'path_config_source': {
                   'path': '/nonexistent/eds.json'}}}}
        err = self.errors(self.bootstrap(own('xds'), clusters=[eds]))
        self.assertIn(self.CDS_API + 'grpc_services[0].envoy_grpc.cluster_name: "xds" is a '
                      'cluster of type EDS', err)
        # the same for ads_config, and for an SDS secret's own source
        cfg = self.bootstrap({'ads': {}})
        cfg['dynamic_resources']['ads_config'] = own('nope')['api_config_source']
        self.assertIn('dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name: '
                      '"nope" is not a cluster of static_resources', self.errors(cfg))
        cfg = self.bootstrap(own('xds'))
        cfg['static_resources']['listeners'] = [http_listener(
            h.free_port(), inline_cluster='a', transport_socket=server_tls(own('sds-grpc')))]
        self.assertIn('static_resources.listeners[0].filter_chains[0].transport_socket.'
                      'typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].'
                      'sds_config.api_config_source.grpc_services[0].envoy_grpc.cluster_name: '
                      '"sds-grpc" is not a cluster of static_resources', self.errors(cfg))

    def test_grpc_services(self):
        src = own('xds')
        src['api_config_source']['grpc_services'] = [{'google_grpc': {
            'target_uri': 'x:1', 'stat_prefix': 'x'}}]
        err = self.errors(self.bootstrap(src))
        self.assertIn(self.CDS_API + 'grpc_services[0].google_grpc: field is not supported', err)
        src = own('xds')
        src['api_config_source']['grpc_services'].append({'envoy_grpc': {'cluster_name': 'xds'}})
        self.assertIn(self.CDS_API + 'grpc_services: must name exactly one service (has 2)',
                      self.errors(self.bootstrap(src)))
        src = own('xds')
        src['api_config_source']['cluster_names'] = ['xds']
        self.assertIn(self.CDS_API + 'cluster_names: is for api_type REST',
                      self.errors(self.bootstrap(src)))
        src = own('xds')
        src['api_config_source']['api_type'] = 'AGGREGATED_GRPC'
        self.assertIn(self.CDS_API + 'api_type: "AGGREGATED_GRPC" is not supported',
                      self.errors(self.bootstrap(src)))

    def test_rest(self):
        src = rest('xds')
        del src['api_config_source']['refresh_delay']
        self.assertIn(self.CDS_API + 'refresh_delay: is required for api_type REST',
                      self.errors(self.bootstrap(src)))
        src = rest('xds')
        src['api_config_source']['grpc_services'] = [{'envoy_grpc': {'cluster_name': 'xds'}}]
        self.assertIn(self.CDS_API + 'grpc_services: is for gRPC sources',
                      self.errors(self.bootstrap(src)))
        src = rest('nope')
        self.assertIn(self.CDS_API + 'cluster_names[0]: "nope" is not a cluster of '
                      'static_resources', self.errors(self.bootstrap(src)))
        cfg = self.bootstrap({'ads': {}})
        cfg['dynamic_resources']['ads_config'] = rest('xds')['api_config_source']
        self.assertIn('dynamic_resources.ads_config.api_type: "REST" is not supported',
                      self.errors(cfg))

    def test_one_source(self):
        src = own('xds')
        src['ads'] = {}
        self.assertIn('dynamic_resources.cds_config: only one of ads, api_config_source and '
                      'path_config_source may be given (found ads, api_config_source)',
                      self.errors(self.bootstrap(src)))

if __name__ == '__main__':
    unittest.main(verbosity=2)
