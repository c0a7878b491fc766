"""Cluster.transport_socket_matches: a transport socket per endpoint, chosen by the endpoint's
filter_metadata["envoy.transport_socket_match"], as Istio's outbound clusters are made: mTLS
(tlsMode: istio) to workloads with a sidecar, plain text to the others, in one cluster.

Checked: each endpoint gets its own transport (an mTLS server and a plain one behind one
cluster, both answering, the TLS one through a verified handshake with the SNI of its match);
an endpoint no match takes uses the cluster's transport_socket; health checks connect the way
requests do; an EDS update that changes an endpoint's metadata changes its transport on the
next connection; a match's TLS peer with the wrong identity fails alone; bad matches are
refused with their path.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_transport_socket_matches.py -v
"""

import collections
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import certs  # noqa: E402
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

CLA_TYPE = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment'
ISTIO = {'filter_metadata': {'envoy.transport_socket_match': {'tlsMode': 'istio'}}}
RAW = {'name': 'envoy.transport_sockets.raw_buffer', 'typed_config': {
    '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer'}}
SNI = 'outbound_.80_._.svc.default.svc.cluster.local'


def mtls(san='backend', sni=SNI):
    pki = certs.standard_pki()
    return certs.upstream_tls(cert=pki['frontend'], ca=pki['ca'], sni=sni,
                              san=[certs.san_uri(exact=certs.spiffe('default', san))])


def istio_matches(san='backend'):
    """Istio's two matches: mTLS for tlsMode istio, plain text for every other endpoint."""
    return [{'name': 'tlsMode-istio', 'match': {'tlsMode': 'istio'},
             'transport_socket': mtls(san)},
            {'name': 'tlsMode-disabled', 'match': {}, 'transport_socket': RAW}]


def endpoint(port, metadata=None):
    e = {'endpoint': {'address': h.socket_address('127.0.0.1', port)}}
    if metadata is not None:
        e['metadata'] = metadata
    return e


def cluster(endpoints, **extra):
    c = {'name': 'svc', 'type': 'STATIC', 'connect_timeout': '1s',
         'load_assignment': {'cluster_name': 'svc', 'endpoints': [{'lb_endpoints': endpoints}]}}
    c.update(extra)
    return c


def proxy(port, admin, clusters):
    hcm = h.http_connection_manager('ingress', h.route_config([
        h.vhost('all', ['*'], [h.route_prefix('/', 'svc', timeout='5s')])]))
    return h.bootstrap([h.listener('http', port, [hcm])], clusters, admin_port=admin)


def spread(port, n):
    counts = collections.Counter()
    with h.HttpClientConn(port) as conn:
        for _ in range(n):
            r = conn.request('GET', '/app')
            counts[r.get('x-upstream-name') if r.status == 200 else r.status] += 1
    return counts


class TransportSocketMatches(unittest.TestCase):

    def tls_upstream(self, name, cert='backend', sni_log=None):
        pki = certs.standard_pki()
        up = HttpUpstream(name=name, ssl_context=certs.server_context(
            pki[cert], client_ca=pki['ca'], sni_log=sni_log))
        self.addCleanup(up.close)
        return up

    def plain_upstream(self, name):
        up = HttpUpstream(name=name)
        self.addCleanup(up.close)
        return up

    def test_each_endpoint_gets_the_transport_its_metadata_picks(self):
        snis = []
        sec = self.tls_upstream('mesh', sni_log=snis)
        plain = self.plain_upstream('legacy')
        port, admin = h.free_ports(2)
        c = cluster([endpoint(sec.port, ISTIO), endpoint(plain.port)],
                    transport_socket_matches=istio_matches())
        with h.Petrel(proxy(port, admin, [c])) as p:
            counts = spread(port, 20)
            self.assertEqual(counts, {'mesh': 10, 'legacy': 10})
            self.assertGreaterEqual(p.stat('cluster.svc.ssl.handshake'), 1)
            self.assertEqual(p.stat('cluster.svc.ssl.fail_verify_san', 0), 0)
            self.assertEqual(set(snis), {SNI})
            # The plain upstream saw HTTP, not a ClientHello.
            self.assertTrue(all(q['path'] == '/app' for q in plain.requests))

    def test_an_endpoint_no_match_takes_uses_the_cluster_transport_socket(self):
        snis = []
        sec = self.tls_upstream('default-tls', sni_log=snis)
        mesh = self.tls_upstream('mesh')
        port, admin = h.free_ports(2)
        other = {'filter_metadata': {'envoy.transport_socket_match': {'tlsMode': 'other'}}}
        # Only tlsMode istio matches: the other endpoint takes transport_socket (its own SNI).
        c = cluster([endpoint(sec.port, other), endpoint(mesh.port, ISTIO)],
                    transport_socket=mtls(sni='default.example'),
                    transport_socket_matches=istio_matches()[:1])
        with h.Petrel(proxy(port, admin, [c])):
            self.assertEqual(spread(port, 10), {'default-tls': 5, 'mesh': 5})
            self.assertEqual(set(snis), {'default.example'})

    def test_health_checks_connect_as_requests_do(self):
        sec = self.tls_upstream('mesh')
        plain = self.plain_upstream('legacy')
        port, admin = h.free_ports(2)
        hc = {'timeout': '1s', 'interval': '0.1s', 'no_traffic_interval': '0.1s',
              'unhealthy_threshold': 1, 'healthy_threshold': 1,
              'http_health_check': {'path': '/healthz'}}
        c = cluster([endpoint(sec.port, ISTIO), endpoint(plain.port)],
                    transport_socket_matches=istio_matches(), health_checks=[hc])
        with h.Petrel(proxy(port, admin, [c])) as p:
            # Both pass: each was checked over its own transport.
            p.wait_stat('cluster.svc.membership_healthy', 2)
            sec.wait_for(lambda: any(q['path'] == '/healthz' for q in sec.requests), 10,
                         'a health check over TLS')
            self.assertEqual(spread(port, 10), {'mesh': 5, 'legacy': 5})

    def test_auto_config_speaks_h2_to_the_tls_endpoint_and_http1_to_the_plain_one(self):
        # Istio's sidecar-to-sidecar HTTP/2: ALPN on the mTLS endpoints, HTTP/1.1 on the
        # others, in one cluster: each host's pool takes the protocol of its own transport.
        from h2upstream import H2Upstream
        pki = certs.standard_pki()
        h2 = H2Upstream(ssl_context=certs.server_context(pki['backend'], client_ca=pki['ca'],
                                                         alpn=['h2', 'http/1.1']))
        self.addCleanup(h2.close)
        plain = self.plain_upstream('legacy')
        port, admin = h.free_ports(2)
        hpo = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions'
        c = cluster([endpoint(h2.port, ISTIO), endpoint(plain.port)],
                    transport_socket_matches=istio_matches(),
                    typed_extension_protocol_options={hpo: {
                        '@type': 'type.googleapis.com/' + hpo,
                        'auto_config': {'http2_protocol_options': {}}}})
        with h.Petrel(proxy(port, admin, [c])) as p:
            statuses = collections.Counter()
            for i in range(6):
                r = h.http_request(port, path='/echo/%d' % i)
                statuses[(r.status, 'legacy' if r.get('x-upstream-name') else 'h2')] += 1
            self.assertEqual(statuses, {(200, 'h2'): 3, (200, 'legacy'): 3})
            self.assertEqual(h2.alpn[0], 'h2')
            p.wait_stat('cluster.svc.upstream_cx_http2_total', 1)
            p.wait_stat('cluster.svc.upstream_cx_http1_total', 1)

    def test_wrong_identity_behind_a_match_fails_alone(self):
        rogue = self.tls_upstream('rogue', cert='rogue')
        plain = self.plain_upstream('legacy')
        port, admin = h.free_ports(2)
        c = cluster([endpoint(rogue.port, ISTIO), endpoint(plain.port)],
                    transport_socket_matches=istio_matches())
        with h.Petrel(proxy(port, admin, [c])) as p:
            counts = spread(port, 10)
            self.assertEqual(counts, {'legacy': 5, 503: 5})
            self.assertGreaterEqual(p.stat('cluster.svc.ssl.fail_verify_san'), 5)
            self.assertEqual(rogue.requests, [])

    def test_metadata_changed_by_eds_changes_the_transport(self):
        d = tempfile.mkdtemp(prefix='petrel-tsm-')
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, 'eds.json')

        def write(version, endpoints):
            res = {'@type': CLA_TYPE, 'cluster_name': 'svc',
                   'endpoints': [{'lb_endpoints': endpoints}]}
            with open(path + '.tmp', 'w') as f:
                json.dump({'version_info': version, 'resources': [res]}, f)
            os.replace(path + '.tmp', path)

        sec = self.tls_upstream('mesh')
        port, admin = h.free_ports(2)
        # The same address, first without metadata (plain text: the TLS server refuses it),
        # then with tlsMode istio (mTLS).
        write('1', [endpoint(sec.port)])
        c = {'name': 'svc', 'type': 'EDS', 'connect_timeout': '1s',
             'transport_socket_matches': istio_matches(),
             'eds_cluster_config': {'eds_config': {'path_config_source': {'path': path},
                                                   'resource_api_version': 'V3'}}}
        with h.Petrel(proxy(port, admin, [c])) as p:
            self.assertEqual(h.http_request(port, path='/app').status, 503)
            self.assertEqual(p.stat('cluster.svc.ssl.handshake', 0), 0)
            write('2', [endpoint(sec.port, ISTIO)])
            p.wait_stat('cluster.svc.update_success', lambda v: v >= 2)
            r = h.http_request(port, path='/app')
            self.assertEqual((r.status, r.get('x-upstream-name')), (200, 'mesh'))
            self.assertGreaterEqual(p.stat('cluster.svc.ssl.handshake'), 1)

    def validate(self, clusters):
        d = tempfile.mkdtemp(prefix='petrel-tsm-')
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, 'boot.json')
        with open(path, 'w') as f:
            json.dump(h.bootstrap([], clusters), f)
        return h.run_petrel(['--mode', 'validate', '-c', path])

    def test_bad_matches_are_refused_with_their_path(self):
        base = 'static_resources.clusters[0].transport_socket_matches'
        cases = [
            ([{'match': {'tlsMode': 'istio'}, 'transport_socket': RAW}],
             base + '[0].name: is required'),
            ([{'name': 'm', 'match': 'tlsMode=istio'}],
             base + '[0].match: must be an object'),
            ([{'name': 'm', 'transport_socket': certs.upstream_tls(common_extra={
                'tls_certificates': [{'certificate_chain': {'filename': '/nonexistent/c.pem'},
                                      'private_key': {'filename': '/nonexistent/k.pem'}}]})}],
             base + '[0].transport_socket'),
            ([{'name': 'm', 'transport_socket': {'name': 'x', 'typed_config': {
                '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.alts.v3.Alts'}}}],
             base + '[0].transport_socket.typed_config.@type'),
            ([{'name': 'm', 'unknown': 1}], base + '[0].unknown'),
        ]
        for matches, want in cases:
            with self.subTest(want=want):
                rc, out, err = self.validate([cluster([endpoint(1)],
                                                      transport_socket_matches=matches)])
                self.assertEqual(rc, 1, out + err)
                self.assertIn(want, out + err)


if __name__ == '__main__':
    unittest.main()
