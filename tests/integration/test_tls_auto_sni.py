"""UpstreamHttpProtocolOptions on a cluster (typed_extension_protocol_options'
HttpProtocolOptions.upstream_http_protocol_options, and the deprecated Cluster field):
auto_sni sends each request's host (after the route's host rewrite, without its port) as the
upstream SNI, or the value of override_auto_sni_header; auto_san_validation requires the
upstream certificate to carry that name as a SAN; connections are pooled per name, so a
connection made for one name never carries a request for another. Against a real TLS server
(Python ssl) that records the SNI of each connection.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_tls_auto_sni.py -v
"""

import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import certs as C  # noqa: E402
from h2upstream import H2Upstream  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer  # noqa: E402

PKI = None
HPO = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions'
FILE_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog'


def setUpModule():
    global PKI
    PKI = C.standard_pki()


def cstat(cluster, name):
    return 'cluster.%s.%s' % (cluster, name)


def protocol_options(**uhpo):
    """typed_extension_protocol_options with these upstream_http_protocol_options."""
    return {HPO: {'@type': 'type.googleapis.com/' + HPO,
                  'explicit_http_config': {'http_protocol_options': {}},
                  'upstream_http_protocol_options': uhpo}}


def tls_cluster(name, port, tls=None, **uhpo):
    extra = {}
    if tls is not None:
        extra['transport_socket'] = tls
    if uhpo:
        extra['typed_extension_protocol_options'] = protocol_options(**uhpo)
    return h.cluster(name, [port], **extra)


def validate(cfg):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, 'c.json')
        with open(path, 'w') as f:
            json.dump(cfg, f)
        return h.run_petrel(['--mode', 'validate', '-c', path])


class AutoSniCase(unittest.TestCase):

    def tls_server(self, cert=None):
        """A TLS HTTP server presenting ``cert`` (the PKI's 'server': DNS localhost,
        petrel.test, *.wild.test, IP 127.0.0.1); conn_info[id]['sni'] is each connection's
        SNI."""
        snis = []
        srv = HttpUpstream(ssl_context=C.server_context(cert or PKI['server'], sni_log=snis))
        srv.snis = snis
        self.addCleanup(srv.close)
        return srv

    def config(self, clusters, routes=None, log=True):
        self.port, admin = h.free_ports(2)
        if routes is None:
            routes = [h.route_prefix('/%s/' % c['name'], c['name'], timeout='3s')
                      for c in clusters]
        # (validate-only configs have none: it would be opened in the current directory)
        logs = [{'name': 'envoy.access_loggers.file', 'typed_config': {
            '@type': FILE_LOG, 'path': 'access.log', 'log_format': {'text_format_source': {
                'inline_string': '%RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(:PATH)%\n'}}}}]
        return h.bootstrap([h.listener('http', self.port, [h.http_connection_manager(
            'ingress', h.route_config([h.vhost('all', ['*'], routes)]),
            access_log=logs if log else [])])],
            clusters, admin_port=admin)

    def start(self, clusters, routes=None):
        self.p = h.Petrel(self.config(clusters, routes))
        self.p.start()
        self.addCleanup(self.p.close)
        return self.p

    def get(self, path, host, headers=None):
        hdrs = {'host': host}
        hdrs.update(headers or {})
        return h.http_request(self.port, 'GET', path, headers=hdrs)

    def sni_of(self, srv, req):
        return srv.conn_info[req['conn_id']].get('sni')

    def access_lines(self):
        try:
            with open(self.p.path('access.log')) as f:
                return f.read().splitlines()
        except OSError:
            return []

    def wait_access(self, line):
        return h.wait_until(lambda: line in self.access_lines(), 10,
                            message='access log line %r (have %r)' % (line, self.access_lines()))


class AutoSniTest(AutoSniCase):

    def test_each_host_gets_its_own_sni_and_connections(self):
        srv = self.tls_server()
        p = self.start([tls_cluster('c', srv.port, C.upstream_tls(ca=PKI['ca'], sni='petrel.test'),
                                    auto_sni=True)])
        hosts = ['a.wild.test', 'b.wild.test:8443', 'a.wild.test:80', 'b.wild.test',
                 'A.wild.test']
        for i, host in enumerate(hosts):
            r = self.get('/c/%d' % i, host)
            self.assertEqual(r.status, 200, host)
        reqs = srv.wait_requests(len(hosts))
        # The Host header goes upstream unchanged; the SNI is its name without the port.
        self.assertEqual([r.header('host') for r in reqs], hosts)
        self.assertEqual([self.sni_of(srv, r) for r in reqs],
                         ['a.wild.test', 'b.wild.test', 'a.wild.test', 'b.wild.test',
                          'A.wild.test'])
        # One connection per name, reused for that name only (a and b alternate above).
        by_conn = {}
        for r in reqs:
            by_conn.setdefault(r['conn_id'], set()).add(self.sni_of(srv, r))
        self.assertEqual(sorted(map(sorted, by_conn.values())),
                         [['A.wild.test'], ['a.wild.test'], ['b.wild.test']])
        self.assertEqual(srv.accepted, 3)
        self.assertEqual(p.stat(cstat('c', 'upstream_cx_total')), 3)

    def test_host_rewrite_literal_is_the_sni(self):
        srv = self.tls_server()
        cl = tls_cluster('c', srv.port, C.upstream_tls(ca=PKI['ca']), auto_sni=True)
        routes = [h.route_prefix('/rw/', 'c', host_rewrite_literal='rewritten.wild.test'),
                  h.route_prefix('/c/', 'c')]
        self.start([cl], routes)
        self.assertEqual(self.get('/rw/x', 'client.wild.test').status, 200)
        self.assertEqual(self.get('/c/x', 'client.wild.test').status, 200)
        reqs = srv.wait_requests(2)
        self.assertEqual([r.header('host') for r in reqs],
                         ['rewritten.wild.test', 'client.wild.test'])
        self.assertEqual([self.sni_of(srv, r) for r in reqs],
                         ['rewritten.wild.test', 'client.wild.test'])

    def test_override_auto_sni_header(self):
        srv = self.tls_server()
        self.start([tls_cluster('c', srv.port, C.upstream_tls(ca=PKI['ca']), auto_sni=True,
                                override_auto_sni_header='X-Upstream-SNI')])
        self.assertEqual(self.get('/c/1', 'a.wild.test',
                                  {'x-upstream-sni': 'o.wild.test:9443'}).status, 200)
        # Absent or empty: the host.
        self.assertEqual(self.get('/c/2', 'a.wild.test').status, 200)
        self.assertEqual(self.get('/c/3', 'b.wild.test', {'x-upstream-sni': ''}).status, 200)
        reqs = srv.wait_requests(3)
        self.assertEqual([self.sni_of(srv, r) for r in reqs],
                         ['o.wild.test', 'a.wild.test', 'b.wild.test'])

    def test_ip_address_host_keeps_the_contexts_sni(self):
        # Envoy sends no IP address as SNI: the UpstreamTlsContext's sni stays.
        srv = self.tls_server()
        self.start([tls_cluster('c', srv.port, C.upstream_tls(ca=PKI['ca'], sni='petrel.test'),
                                auto_sni=True)])
        for host in ('127.0.0.1:%d' % srv.port, '[::1]:80', 'a.wild.test'):
            self.assertEqual(self.get('/c/', host).status, 200, host)
        reqs = srv.wait_requests(3)
        self.assertEqual([self.sni_of(srv, r) for r in reqs],
                         ['petrel.test', 'petrel.test', 'a.wild.test'])

    def test_without_auto_sni_the_cluster_sni_is_used(self):
        srv = self.tls_server()
        self.start([tls_cluster('c', srv.port, C.upstream_tls(ca=PKI['ca'], sni='petrel.test'))])
        for host in ('a.wild.test', 'b.wild.test', 'c.wild.test'):
            self.assertEqual(self.get('/c/', host).status, 200)
        reqs = srv.wait_requests(3)
        self.assertEqual({self.sni_of(srv, r) for r in reqs}, {'petrel.test'})
        self.assertEqual(srv.accepted, 1)  # one pool: the connection is reused

    def test_deprecated_cluster_field(self):
        srv = self.tls_server()
        cl = h.cluster('c', [srv.port], transport_socket=C.upstream_tls(ca=PKI['ca']),
                       upstream_http_protocol_options={'auto_sni': True})
        self.start([cl])
        self.assertEqual(self.get('/c/', 'd.wild.test').status, 200)
        self.assertEqual(self.sni_of(srv, srv.wait_requests(1)[0]), 'd.wild.test')

    def test_a_name_whose_connections_closed_gets_new_ones(self):
        # Idle connections close after idle_timeout; the name's pool, empty then, is freed
        # and made again by the next request for that name.
        srv = self.tls_server()
        cl = tls_cluster('c', srv.port, C.upstream_tls(ca=PKI['ca']), auto_sni=True)
        cl['typed_extension_protocol_options'][HPO]['common_http_protocol_options'] = {
            'idle_timeout': '0.2s'}
        p = self.start([cl])
        for i in range(20):
            self.assertEqual(self.get('/c/', 'n%d.wild.test' % i).status, 200)
        p.wait_stat(cstat('c', 'upstream_cx_destroy'), 20)
        for i in range(3):
            self.assertEqual(self.get('/c/', 'n%d.wild.test' % i).status, 200)
        reqs = srv.wait_requests(23)
        self.assertEqual([self.sni_of(srv, r) for r in reqs[20:]],
                         ['n0.wild.test', 'n1.wild.test', 'n2.wild.test'])
        self.assertEqual(srv.accepted, 23)

    def test_http2_by_alpn_one_connection_per_name(self):
        snis = []
        srv = H2Upstream(ssl_context=C.server_context(PKI['server'], alpn=['h2'], sni_log=snis))
        self.addCleanup(srv.close)
        cl = h.cluster('c', [srv.port], transport_socket=C.upstream_tls(ca=PKI['ca']),
                       typed_extension_protocol_options={HPO: {
                           '@type': 'type.googleapis.com/' + HPO, 'auto_config': {
                               'http_protocol_options': {}, 'http2_protocol_options': {}},
                           'upstream_http_protocol_options': {'auto_sni': True,
                                                              'auto_san_validation': True}}})
        self.start([cl])
        hosts = ['a.wild.test', 'b.wild.test', 'a.wild.test', 'b.wild.test', 'a.wild.test']
        for i, host in enumerate(hosts):
            r = self.get('/c/echo/%d' % i, host)
            self.assertEqual(r.status, 200)
            self.assertEqual(json.loads(r.body)['authority'], host)
        srv.wait_requests(len(hosts))
        self.assertEqual(snis, ['a.wild.test', 'b.wild.test'])
        # Handshakes in order: connection 1 is a's, 2 is b's; each carried its name only.
        self.assertEqual([r['conn_id'] for r in srv.requests], [1, 2, 1, 2, 1])
        self.assertEqual(srv.accepted, 2)
        self.assertEqual(self.get('/c/echo/bad', 'evil.test').status, 503)

    def test_terminated_connect_tunnel_takes_the_name(self):
        # A CONNECT the route terminates opens its own TLS connection: its SNI is the
        # CONNECT's authority without the port, and auto_san_validation checks it.
        snis = []
        echo = TcpEchoServer(ssl_context=C.server_context(PKI['server'], sni_log=snis))
        self.addCleanup(echo.close)
        cl = tls_cluster('t', echo.port, C.upstream_tls(ca=PKI['ca']), auto_sni=True,
                         auto_san_validation=True)
        route = {'match': {'connect_matcher': {}}, 'route': {
            'cluster': 't', 'upgrade_configs': [{'upgrade_type': 'CONNECT',
                                                 'connect_config': {}}]}}
        self.port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], [route])]), upgrade_configs=[{'upgrade_type': 'CONNECT'}])
        p = h.Petrel(h.bootstrap([h.listener('l', self.port, [hcm])], [cl], admin_port=admin))
        p.start()
        self.addCleanup(p.close)

        def connect(target):
            s = h.tcp_connect(self.port)
            self.addCleanup(s.close)
            s.sendall(('CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' % (target, target)).encode())
            head = b''
            while b'\r\n\r\n' not in head:
                b = s.recv(1)
                if not b:
                    break
                head += b
            return s, head

        s, head = connect('t.wild.test:443')
        self.assertTrue(head.startswith(b'HTTP/1.1 200'), head)
        s.sendall(b'ping')
        self.assertEqual(h.recv_exact(s, 4), b'ping')
        self.assertEqual(snis, ['t.wild.test'])
        _, head = connect('evil.test:443')
        self.assertTrue(head.startswith(b'HTTP/1.1 503'), head)
        p.wait_stat(cstat('t', 'ssl.fail_verify_san'), 1)

    def test_upstream_down_is_503_uf(self):
        port = h.free_ports(1)[0]
        p = self.start([tls_cluster('c', port, C.upstream_tls(ca=PKI['ca']), auto_sni=True,
                                    auto_san_validation=True)])
        self.assertEqual(self.get('/c/down', 'a.wild.test').status, 503)
        self.wait_access('503 UF /c/down')
        p.wait_stat(cstat('c', 'upstream_cx_connect_fail'), lambda v: v and v >= 1)


class AutoSanValidationTest(AutoSniCase):

    def test_matching_certificate_accepted_mismatch_is_503_uf(self):
        srv = self.tls_server()
        p = self.start([tls_cluster('c', srv.port, C.upstream_tls(ca=PKI['ca']), auto_sni=True,
                                    auto_san_validation=True)])
        # Exact DNS SAN, wildcard DNS SAN (one label), IP SAN.
        for host in ('petrel.test', 'x.wild.test', '127.0.0.1'):
            self.assertEqual(self.get('/c/ok', host).status, 200, host)
        self.assertEqual(p.stat(cstat('c', 'ssl.fail_verify_san')), 0)
        for host in ('evil.test', 'a.b.wild.test'):
            r = self.get('/c/bad', host)
            self.assertEqual(r.status, 503, host)
        self.wait_access('503 UF /c/bad')
        p.wait_stat(cstat('c', 'ssl.fail_verify_san'), 2)
        p.wait_stat(cstat('c', 'upstream_cx_connect_fail'), lambda v: v and v >= 2)
        self.assertEqual(len(srv.requests), 3)
        # A good name still works after the failures (its own pool).
        self.assertEqual(self.get('/c/again', 'petrel.test').status, 200)

    def test_in_addition_to_the_contexts_san_matchers(self):
        srv = self.tls_server()
        both = C.upstream_tls(ca=PKI['ca'], san=[C.san_dns(exact='petrel.test')])
        other = C.upstream_tls(ca=PKI['ca'], san=[C.san_dns(exact='nope.test')])
        p = self.start([tls_cluster('both', srv.port, both, auto_san_validation=True),
                        tls_cluster('other', srv.port, other, auto_san_validation=True)])
        # The name matches and so does the context's matcher.
        self.assertEqual(self.get('/both/', 'x.wild.test').status, 200)
        # The name matches, the context's matcher does not: refused.
        self.assertEqual(self.get('/other/', 'x.wild.test').status, 503)
        # The context's matcher matches, the name does not: refused.
        self.assertEqual(self.get('/both/', 'evil.test').status, 503)
        p.wait_stat(cstat('other', 'ssl.fail_verify_san'), 1)
        p.wait_stat(cstat('both', 'ssl.fail_verify_san'), 1)

    def test_without_auto_sni_no_sni_but_the_san_is_checked(self):
        srv = self.tls_server()
        p = self.start([tls_cluster('c', srv.port, C.upstream_tls(ca=PKI['ca']),
                                    auto_san_validation=True)])
        self.assertEqual(self.get('/c/', 'x.wild.test').status, 200)
        self.assertEqual(self.sni_of(srv, srv.wait_requests(1)[0]), None)
        self.assertEqual(self.get('/c/', 'evil.test').status, 503)
        p.wait_stat(cstat('c', 'ssl.fail_verify_san'), 1)

    def test_without_validation_context_the_name_is_still_checked(self):
        # No trusted CA: the chain is not verified (as without auto_san_validation), but
        # the certificate must still carry the request's name.
        srv = self.tls_server(PKI['ca2_server'])
        p = self.start([tls_cluster('c', srv.port, C.upstream_tls(), auto_sni=True,
                                    auto_san_validation=True)])
        self.assertEqual(self.get('/c/ok', 'x.wild.test').status, 200)
        self.assertEqual(self.get('/c/bad', 'evil.test').status, 503)
        self.wait_access('503 UF /c/bad')
        p.wait_stat(cstat('c', 'ssl.fail_verify_san'), 1)


class ConfigTest(AutoSniCase):

    def test_plaintext_cluster_accepts_the_options_and_shares_one_pool(self):
        # As in Envoy, a raw transport has no SNI and no certificate: accepted, no effect.
        srv = HttpUpstream()
        self.addCleanup(srv.close)
        self.start([tls_cluster('c', srv.port, auto_sni=True, auto_san_validation=True)])
        for host in ('a.test', 'b.test', 'evil.test'):
            self.assertEqual(self.get('/c/', host).status, 200)
        self.assertEqual(srv.accepted, 1)

    def test_invalid_override_header_name(self):
        for bad in ('bad header', 'x-sni\r\n', ':authority'):
            cfg = self.config([tls_cluster('c', 1, C.upstream_tls(), auto_sni=True,
                                           override_auto_sni_header=bad)], log=False)
            rc, _, err = validate(cfg)
            self.assertEqual(rc, 1, bad)
            self.assertIn('upstream_http_protocol_options.override_auto_sni_header', err)
            self.assertIn('not a valid header name', err)
        cfg = self.config([h.cluster('c', [1], transport_socket=C.upstream_tls(),
                                     upstream_http_protocol_options={
                                         'override_auto_sni_header': 'a b'})], log=False)
        rc, _, err = validate(cfg)
        self.assertEqual(rc, 1)
        self.assertIn('clusters[0].upstream_http_protocol_options.override_auto_sni_header',
                      err)

    def test_wrong_type(self):
        cfg = self.config([tls_cluster('c', 1, C.upstream_tls(), auto_sni='yes')], log=False)
        rc, _, err = validate(cfg)
        self.assertEqual(rc, 1)
        self.assertIn('auto_sni', err)


if __name__ == '__main__':
    unittest.main()
