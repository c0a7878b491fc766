"""East-west gateway TLS passthrough: a listener with the TLS inspector, then
envoy.filters.network.sni_cluster and tcp_proxy, and no TLS termination. The client's SNI
(Istio style, outbound_.<port>_._.<service>.<ns>.svc.cluster.local) names the cluster; the TLS
session runs end to end between the client and the workload (the gateway holds no keys), so
the client sees the workload's certificate and the workload sees the client's SNI (and, with
mTLS, the client's certificate).

Unknown SNI: sni_cluster names a cluster that does not exist; tcp_proxy then has no route and
closes the connection (tcp.<prefix>.downstream_cx_no_route), as in Envoy. No SNI at all (or
plaintext): tcp_proxy's own cluster.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_tls_sni_passthrough.py -v
"""

import json
import os
import socket
import ssl
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import certs as C  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer  # noqa: E402

PKI = None
REVIEWS = 'outbound_.8080_._.reviews.default.svc.cluster.local'
RATINGS = 'outbound_.9080_._.ratings.default.svc.cluster.local'
UNKNOWN = 'outbound_.8080_._.nosuch.default.svc.cluster.local'


def setUpModule():
    global PKI
    PKI = C.standard_pki()


class PassthroughTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.reviews_snis, cls.ratings_snis, cls.default_snis = [], [], []
        # Each workload terminates TLS itself with its own certificate; reviews wants mTLS.
        cls.reviews = HttpUpstream(name='reviews', ssl_context=C.server_context(
            PKI['backend'], client_ca=PKI['ca'], sni_log=cls.reviews_snis))
        cls.ratings = HttpUpstream(name='ratings', ssl_context=C.server_context(
            PKI['server2'], sni_log=cls.ratings_snis))
        cls.default = TcpEchoServer()
        cls.port, admin = h.free_ports(2)
        ln = h.listener('eastwest', cls.port, [C.sni_cluster_filter(),
                                               h.tcp_proxy('ew', 'default')],
                        listener_filters=[C.tls_inspector()])
        cls.p = h.Petrel(h.bootstrap([ln], [
            h.cluster(REVIEWS, [cls.reviews.port]),
            h.cluster(RATINGS, [cls.ratings.port]),
            h.cluster('default', [cls.default.port])], admin_port=admin))
        try:
            cls.p.start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.p.close()
        finally:
            for s in (cls.reviews, cls.ratings, cls.default):
                s.close()

    def request(self, sni, path, cert=None):
        """An HTTPS request through the gateway; returns (response, served cert serial)."""
        ctx = C.client_context(ca=PKI['ca'], cert=cert)
        with h.HttpClientConn(self.port, ssl_context=ctx, server_hostname=sni) as c:
            serial = C.peer_cert_serial(c.sock)
            return c.request('GET', path), serial

    def test_sni_routes_to_the_named_cluster_end_to_end(self):
        r, serial = self.request(REVIEWS, '/reviews/1', cert=PKI['frontend'])
        self.assertEqual((r.status, r.get('x-upstream-name')), (200, 'reviews'))
        self.assertEqual(serial, PKI['backend'].serial)
        self.assertIn(REVIEWS, self.reviews_snis)
        r, serial = self.request(RATINGS, '/ratings/1')
        self.assertEqual((r.status, r.get('x-upstream-name')), (200, 'ratings'))
        self.assertEqual(serial, PKI['server2'].serial)
        self.assertIn(RATINGS, self.ratings_snis)
        self.assertIn('/reviews/1', [x['path'] for x in self.reviews.requests])
        self.assertIn('/ratings/1', [x['path'] for x in self.ratings.requests])
        self.assertNotIn('/ratings/1', [x['path'] for x in self.reviews.requests])
        # The workload saw TLS, not petrel's plaintext: x-forwarded-* were not added.
        rec = [x for x in self.reviews.requests if x['path'] == '/reviews/1'][0]
        self.assertIsNone(rec.header('x-forwarded-proto'))
        self.assertGreaterEqual(self.p.stat('cluster.%s.upstream_cx_total' % REVIEWS), 1)

    def test_mtls_passes_through(self):
        # reviews requires a client certificate: only the client has one, so the request
        # works only if the handshake really runs between client and workload.
        r, _ = self.request(REVIEWS, '/reviews/mtls', cert=PKI['frontend'])
        self.assertEqual(r.status, 200)
        with self.assertRaises((OSError, h.ConnectionClosed)):
            self.request(REVIEWS, '/reviews/nocert')
        self.assertNotIn('/reviews/nocert', [x['path'] for x in self.reviews.requests])

    def test_gateway_holds_no_keys(self):
        status, _, body = self.p.admin_get('/certs')
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)['certificates'], [])

    def test_unknown_sni_is_closed_with_no_route(self):
        before = self.p.stat('tcp.ew.downstream_cx_no_route', 0)
        echo_before = self.default.accepted
        with self.assertRaises((OSError, h.ConnectionClosed)):
            self.request(UNKNOWN, '/x')
        self.p.wait_stat('tcp.ew.downstream_cx_no_route', before + 1)
        # Not sent to tcp_proxy's own cluster either.
        self.assertEqual(self.default.accepted, echo_before)

    def test_no_sni_uses_tcp_proxy_cluster(self):
        hello = b'plaintext, no ClientHello\n'
        with h.tcp_connect(self.port) as s:
            s.sendall(hello)
            self.assertEqual(h.recv_exact(s, len(hello)), hello)
        # A TLS ClientHello without SNI goes there too (the echo returns it unchanged).
        ctx = C.client_context()
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname=None)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        ch = out.read()
        with h.tcp_connect(self.port) as s:
            s.sendall(ch)
            self.assertEqual(h.recv_exact(s, len(ch)), ch)

    def test_sni_case_from_client(self):
        # petrel's inspector lowercases the SNI (DNS names are case-insensitive), so a client
        # spelling the name in capitals still reaches the lowercase cluster. (Envoy hands
        # sni_cluster the name as sent, so there this would be "no route".)
        r, serial = self.request(RATINGS.upper(), '/ratings/upper')
        self.assertEqual(r.status, 200)
        self.assertEqual(serial, PKI['server2'].serial)

    def test_parallel_connections_to_both_services(self):
        results = []
        lock = threading.Lock()

        def worker(i):
            sni, name, cert = ((REVIEWS, 'reviews', PKI['frontend']) if i % 2 else
                               (RATINGS, 'ratings', None))
            r, _ = self.request(sni, '/par/%d' % i, cert=cert)
            with lock:
                results.append((r.status, r.get('x-upstream-name') == name))
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(h.scaled(30))
        self.assertEqual(sorted(results), [(200, True)] * 12)

    def test_bytes_relayed_unchanged(self):
        # A large body both ways through the tunnel.
        body = h.pattern_bytes(0, 3 << 20)
        ctx = C.client_context(ca=PKI['ca'])
        with h.HttpClientConn(self.port, ssl_context=ctx, server_hostname=RATINGS) as c:
            r = c.request('POST', '/echo-big', body=body)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()['body_sha256'], h.sha256_hex(body))
            r = c.request('GET', '/bytes/%d' % (2 << 20), store_body=False)
            self.assertEqual(r.body_sha256, h.sha256_pattern(2 << 20))

    def test_garbage_after_valid_sni_is_the_workloads_problem(self):
        # The gateway only reads the ClientHello; what follows is relayed. A client that
        # sends a valid hello and then junk gets the workload's TLS alert, and the gateway
        # stays fine.
        ctx = C.client_context()
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname=RATINGS)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        with socket.create_connection(('127.0.0.1', self.port), timeout=h.scaled(5)) as s:
            s.sendall(out.read())
            s.recv(65536)                   # the workload's ServerHello flight
            s.sendall(b'\x17\x03\x03\x00\x10' + os.urandom(16))
            s.settimeout(h.scaled(5))
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
        r, _ = self.request(RATINGS, '/after-junk')
        self.assertEqual(r.status, 200)


class ChainsBySniTest(unittest.TestCase):
    """Passthrough chains chosen by server_names, as a gateway with several routes does."""

    def test_wildcard_chain_with_sni_cluster_and_exact_chain(self):
        snis = []
        a = HttpUpstream(name='a', ssl_context=C.server_context(PKI['backend'], sni_log=snis))
        b = TcpEchoServer()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        port, admin = h.free_ports(2)
        ln = {'name': 'ew', 'address': h.socket_address('127.0.0.1', port),
              'listener_filters': [C.tls_inspector()],
              'filter_chains': [
                  {'filter_chain_match': {'server_names': ['*.svc.cluster.local']},
                   'filters': [C.sni_cluster_filter(), h.tcp_proxy('mesh', 'blackhole')]},
                  {'filter_chain_match': {'server_names': ['legacy.example.com']},
                   'filters': [h.tcp_proxy('legacy', 'legacy')]}]}
        p = h.Petrel(h.bootstrap([ln], [h.cluster(REVIEWS, [a.port]),
                                        h.cluster('legacy', [b.port]),
                                        h.cluster('blackhole', [1])], admin_port=admin))
        p.start()
        self.addCleanup(p.close)
        ctx = C.client_context(ca=PKI['ca'])
        r = h.http_request(port, 'GET', '/w', ssl_context=ctx, server_hostname=REVIEWS)
        self.assertEqual((r.status, r.get('x-upstream-name')), (200, 'a'))
        self.assertEqual(snis, [REVIEWS])
        # The exact chain has no sni_cluster: its own cluster (an echo: the ClientHello
        # comes back, so the TLS client fails, but the bytes went there).
        with self.assertRaises((OSError, h.ConnectionClosed)):
            h.http_request(port, 'GET', '/l', ssl_context=ctx,
                           server_hostname='legacy.example.com', timeout=5)
        p.wait_stat('tcp.legacy.downstream_cx_total', 1)
        self.assertEqual(b.accepted, 1)
        # An unknown name under the wildcard: no such cluster, closed.
        with self.assertRaises((OSError, h.ConnectionClosed)):
            h.http_request(port, 'GET', '/u', ssl_context=ctx, server_hostname=UNKNOWN,
                           timeout=5)
        p.wait_stat('tcp.mesh.downstream_cx_no_route', 1)
        # A name no chain takes: no filter chain match.
        with self.assertRaises((OSError, h.ConnectionClosed)):
            h.http_request(port, 'GET', '/n', ssl_context=ctx, server_hostname='x.org',
                           timeout=5)
        p.wait_stat('listener.127.0.0.1_%d.no_filter_chain_match' % port, 1)


if __name__ == '__main__':
    unittest.main()
