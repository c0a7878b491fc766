"""Two petrels as mesh sidecars with SPIFFE identities:

    client --HTTP--> petrel A (outbound sidecar of "frontend")
           --mTLS--> petrel B (inbound sidecar of "backend") --HTTP--> app

A's cluster originates TLS with the frontend's certificate and checks that B is the backend
(SAN); B requires a client certificate from the mesh CA whose URI SAN is the frontend's SPIFFE
ID, and tells the app who called in x-forwarded-client-cert. A third workload identity (same
CA, wrong service account), a client without a certificate, an impostor server and an
unrelated CA are all refused.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_tls_sidecars.py -v
"""

import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import certs as C  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

PKI = None
FILE_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog'
FRONTEND = C.spiffe('default', 'frontend')
BACKEND = C.spiffe('default', 'backend')


def setUpModule():
    global PKI
    PKI = C.standard_pki()


def access_log(fmt):
    return [{'name': 'envoy.access_loggers.file', 'typed_config': {
        '@type': FILE_LOG, 'path': 'access.log', 'log_format': {'text_format_source': {
            'inline_string': fmt}}}}]


def read_log(p):
    try:
        with open(p.path('access.log')) as f:
            return f.read().splitlines()
    except OSError:
        return []


class SidecarTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.app = HttpUpstream(name='app')
        cls.b_port, b_admin, cls.a_port, a_admin = h.free_ports(4)
        # Inbound sidecar B: mTLS, only the frontend may call.
        b_tls = C.downstream_tls(PKI['backend'], ca=PKI['ca'], require_client=True,
                                 san=[C.san_uri(exact=FRONTEND)])
        b_hcm = h.http_connection_manager('inbound', h.route_config([h.vhost(
            'app', ['*'], [h.route_prefix('/', 'local_app', timeout='5s')])]),
            forward_client_cert_details='SANITIZE_SET',
            set_current_client_cert_details={'uri': True},
            access_log=access_log('B %DOWNSTREAM_PEER_URI_SAN% %REQ(:PATH)% %RESPONSE_CODE%\n'))
        b_ln = h.listener('inbound', cls.b_port, [b_hcm])
        b_ln['filter_chains'][0]['transport_socket'] = b_tls
        cls.b = h.Petrel(h.bootstrap([b_ln], [h.cluster('local_app', [cls.app.port])],
                                     admin_port=b_admin))
        # Outbound sidecar A: plain HTTP in, mTLS out to B under several identities.
        good = C.upstream_tls(cert=PKI['frontend'], ca=PKI['ca'], sni='backend.test',
                              san=[C.san_uri(exact=BACKEND)])
        rogue = C.upstream_tls(cert=PKI['rogue'], ca=PKI['ca'], sni='backend.test',
                               san=[C.san_uri(exact=BACKEND)])
        wrong_domain = C.upstream_tls(cert=PKI['wrong_domain'], ca=PKI['ca'],
                                      san=[C.san_uri(exact=BACKEND)])
        other_ca = C.upstream_tls(cert=PKI['other_ca'], ca=PKI['ca'],
                                  san=[C.san_uri(exact=BACKEND)])
        no_cert = C.upstream_tls(ca=PKI['ca'], san=[C.san_uri(exact=BACKEND)])
        impostor = C.upstream_tls(cert=PKI['frontend'], ca=PKI['ca'],
                                  san=[C.san_uri(exact=C.spiffe('default', 'reviews'))])
        clusters = [h.cluster(name, [cls.b_port], transport_socket=tls) for name, tls in (
            ('backend', good), ('rogue', rogue), ('wrong_domain', wrong_domain),
            ('other_ca', other_ca), ('no_cert', no_cert), ('impostor', impostor))]
        routes = [h.route_prefix('/%s/' % c['name'], c['name'], timeout='5s') for c in clusters]
        a_hcm = h.http_connection_manager('outbound', h.route_config([h.vhost(
            'mesh', ['*'], routes)]),
            access_log=access_log('A %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS%\n'))
        cls.a = h.Petrel(h.bootstrap([h.listener('outbound', cls.a_port, [a_hcm])], clusters,
                                     admin_port=a_admin))
        try:
            cls.b.start()
            cls.a.start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for x in (cls.a, cls.b, cls.app):
            try:
                x.close()
            except Exception as e:      # report, but close the others
                sys.stderr.write('close: %r\n' % e)
                raise

    def b_stat(self, name):
        return 'listener.127.0.0.1_%d.ssl.%s' % (self.b_port, name)

    def app_requests(self, path):
        return [r for r in self.app.requests if r['path'] == path]

    def test_frontend_reaches_app_with_identity(self):
        r = h.http_request(self.a_port, 'POST', '/backend/hello', body=b'payload',
                           headers={'x-forwarded-client-cert': 'URI=spiffe://forged'})
        self.assertEqual(r.status, 200, r.body[:200])
        self.assertEqual(r.get('x-upstream-name'), 'app')
        rec = self.app_requests('/backend/hello')[-1]
        self.assertEqual(rec['body'], b'payload')
        # B replaced the forged header with what it verified itself.
        self.assertEqual(rec.header('x-forwarded-client-cert'),
                         'By=%s;Hash=%s;URI=%s' % (BACKEND, PKI['frontend'].sha256, FRONTEND))
        # The scheme the client used at the edge (A), which B (not an edge proxy:
        # use_remote_address false) keeps, as Envoy does.
        self.assertEqual(rec.header('x-forwarded-proto'), 'http')
        h.wait_until(lambda: 'B %s /backend/hello 200' % FRONTEND in read_log(self.b), 10)

    def test_connection_reuse_and_parallel_requests(self):
        before = self.b.stat('listener.127.0.0.1_%d.downstream_cx_total' % self.b_port, 0)
        results = []

        def worker(i):
            with h.HttpClientConn(self.a_port) as c:
                for j in range(5):
                    results.append(c.request('GET', '/backend/p%d-%d' % (i, j)).status)
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(h.scaled(30))
        self.assertEqual(results, [200] * 20)
        after = self.b.stat('listener.127.0.0.1_%d.downstream_cx_total' % self.b_port, 0)
        # A pools its mTLS connections to B: at most one per concurrent request.
        self.assertLessEqual(after - before, 4)
        self.assertGreaterEqual(self.a.stat('cluster.backend.ssl.handshake'), 1)

    def assert_refused_by_b(self, cluster, stat):
        before = self.b.stat(self.b_stat(stat), 0)
        r = h.http_request(self.a_port, 'GET', '/%s/x' % cluster)
        self.assertEqual(r.status, 503, cluster)
        self.assertEqual(self.app_requests('/%s/x' % cluster), [])
        self.b.wait_stat(self.b_stat(stat), lambda v: v is not None and v > before)
        h.wait_until(lambda: 'A /%s/x 503 UF' % cluster in read_log(self.a) or
                     'A /%s/x 503 UC' % cluster in read_log(self.a) or
                     'A /%s/x 503 UR' % cluster in read_log(self.a), 10)

    def test_wrong_service_account_rejected(self):
        self.assert_refused_by_b('rogue', 'fail_verify_san')

    def test_wrong_trust_domain_rejected(self):
        self.assert_refused_by_b('wrong_domain', 'fail_verify_san')

    def test_other_ca_rejected(self):
        self.assert_refused_by_b('other_ca', 'fail_verify_error')

    def test_no_client_cert_rejected(self):
        self.assert_refused_by_b('no_cert', 'fail_verify_no_cert')

    def test_impostor_server_rejected_by_a(self):
        # A expects to reach "reviews" but B is "backend": A refuses B (no request leaves).
        r = h.http_request(self.a_port, 'GET', '/impostor/x')
        self.assertEqual(r.status, 503)
        self.a.wait_stat('cluster.impostor.ssl.fail_verify_san', lambda v: v and v >= 1)
        self.a.wait_stat('cluster.impostor.upstream_cx_connect_fail', lambda v: v and v >= 1)
        self.assertEqual(self.app_requests('/impostor/x'), [])
        h.wait_until(lambda: 'A /impostor/x 503 UF' in read_log(self.a), 10)

    def test_direct_client_must_present_mesh_identity(self):
        ctx = C.client_context(ca=PKI['ca'], cert=PKI['frontend'])
        r = h.http_request(self.b_port, 'GET', '/direct', ssl_context=ctx,
                           server_hostname='backend.test')
        self.assertEqual(r.status, 200)
        ctx = C.client_context(ca=PKI['ca'], cert=PKI['backend'])
        with self.assertRaises((OSError, h.ConnectionClosed)):
            h.http_request(self.b_port, 'GET', '/direct2', ssl_context=ctx,
                           server_hostname='backend.test', timeout=5)
        self.assertEqual(self.app_requests('/direct2'), [])

    def test_sidecars_survive_refusals(self):
        for c in ('rogue', 'no_cert', 'other_ca', 'backend', 'impostor', 'backend'):
            h.http_request(self.a_port, 'GET', '/%s/mix' % c)
        self.assertEqual(len(self.app_requests('/backend/mix')), 2)
        self.assertTrue(self.a.alive() and self.b.alive())


if __name__ == '__main__':
    unittest.main()
