"""Filter chain selection (FilterChainMatch) with the TLS inspector: server_names (exact and
wildcard, most specific wins), transport_protocol (TLS and plaintext on one port),
application_protocols, destination_port, source_prefix_ranges, default_filter_chain, no match,
explicit and automatic tls_inspector, listener_filters_timeout (close, or continue to the raw
chain), and config errors (duplicate matches, bad server names).

Chains mostly use tcp_proxy without TLS termination (stat_prefix = chain name) to a TCP echo
server per chain: the test sends a real ClientHello (made by Python's TLS stack) and checks
which echo server got it and which chain's stats counted it.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_tls_filter_chains.py -v
"""

import json
import os
import socket
import ssl
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import certs as C  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer, TcpSourceServer  # noqa: E402

PKI = None


def setUpModule():
    global PKI
    PKI = C.standard_pki()


def listener_stat(port, name):
    return 'listener.127.0.0.1_%d.%s' % (port, name)


def client_hello(sni=None, alpn=None):
    """A real ClientHello (bytes) with this SNI / ALPN list."""
    ctx = C.client_context()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def chain(name, match=None, cluster=None, tls=None, filters=None):
    fc = {'name': name, 'filters': filters or [h.tcp_proxy(name, cluster or name)]}
    if match is not None:
        fc['filter_chain_match'] = match
    if tls is not None:
        fc['transport_socket'] = tls
    return fc


def tls_listener(port, chains, default=None, **extra):
    ln = {'name': 'l', 'address': h.socket_address('127.0.0.1', port),
          'filter_chains': list(chains)}
    if default is not None:
        ln['default_filter_chain'] = default
    ln.update(extra)
    return ln


def wait_closed(sock, timeout=10):
    deadline = time.monotonic() + h.scaled(timeout)
    got = b''
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return False
        except OSError:
            return True
        if not data:
            return True
        got += data
    return False


class ChainCase(unittest.TestCase):
    """Echo servers named after chains; ``self.route(data)`` tells which one got ``data``."""

    def setUp(self):
        self.echos = {}

    def echo(self, name):
        e = TcpEchoServer()
        self.addCleanup(e.close)
        self.echos[name] = e
        return e

    def start(self, chains, default=None, clusters=(), **ln_extra):
        self.port, admin = h.free_ports(2)
        cl = [h.cluster(n, [e.port]) for n, e in self.echos.items()] + list(clusters)
        cfg = h.bootstrap([tls_listener(self.port, chains, default, **ln_extra)], cl,
                          admin_port=admin)
        self.p = h.Petrel(cfg)
        self.p.start()
        self.addCleanup(self.p.close)
        return self.p

    def send(self, data, source=None):
        """Send ``data``, expect it echoed back; returns the name of the echo server (chain)
        that served it, or None if petrel closed the connection instead."""
        before = {n: e.accepted for n, e in self.echos.items()}
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(h.scaled(5))
        try:
            if source:
                s.bind((source, 0))
            s.connect(('127.0.0.1', self.port))
            s.sendall(data)
            try:
                got = h.recv_exact(s, len(data))
            except (h.ConnectionClosed, ConnectionResetError):
                return None
            self.assertEqual(got, data)
        finally:
            s.close()
        hit = [n for n, e in self.echos.items() if e.accepted > before[n]]
        self.assertEqual(len(hit), 1, hit)
        return hit[0]

    def sni(self, name, alpn=None, source=None):
        return self.send(client_hello(name, alpn), source)


class ServerNamesTest(ChainCase):

    def test_exact_and_wildcards_most_specific_wins(self):
        for n in ('exact', 'wild', 'subwild', 'any'):
            self.echo(n)
        # Order on purpose: the catch-all and the shorter wildcard come first.
        p = self.start([
            chain('any'),
            chain('wild', {'server_names': ['*.example.com']}),
            chain('exact', {'server_names': ['api.example.com', 'other.test']}),
            chain('subwild', {'server_names': ['*.sub.example.com']}),
        ])
        cases = [('api.example.com', 'exact'), ('other.test', 'exact'),
                 ('API.Example.COM', 'exact'), ('www.example.com', 'wild'),
                 ('a.b.example.com', 'wild'), ('x.sub.example.com', 'subwild'),
                 ('sub.example.com', 'wild'), ('example.com', 'any'),
                 ('notexample.com', 'any'), ('unrelated.org', 'any'), (None, 'any')]
        for sni, want in cases:
            self.assertEqual(self.sni(sni), want, sni)
        p.wait_stat('tcp.exact.downstream_cx_total', 3)
        self.assertEqual(p.stat('tcp.wild.downstream_cx_total'), 3)
        self.assertEqual(p.stat('tcp.subwild.downstream_cx_total'), 1)
        self.assertEqual(p.stat('tcp.any.downstream_cx_total'), 4)
        # The inspector was turned on by the server_names matches (no listener_filters).
        self.assertEqual(p.stat('tls_inspector.tls_found'), len(cases))
        self.assertEqual(p.stat('tls_inspector.sni_found'), len(cases) - 1)

    def test_no_match_closes_and_counts(self):
        self.echo('exact')
        p = self.start([chain('exact', {'server_names': ['api.example.com']})])
        self.assertEqual(self.sni('api.example.com'), 'exact')
        self.assertIsNone(self.sni('www.example.com'))
        self.assertIsNone(self.sni(None))
        self.assertIsNone(self.send(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n'))
        p.wait_stat(listener_stat(self.port, 'no_filter_chain_match'), 3)
        p.wait_stat(listener_stat(self.port, 'downstream_cx_active'), 0)
        self.assertEqual(self.echos['exact'].accepted, 1)

    def test_default_filter_chain(self):
        self.echo('exact')
        self.echo('fallback')
        p = self.start([chain('exact', {'server_names': ['api.example.com']})],
                       default=chain('fallback'))
        self.assertEqual(self.sni('api.example.com'), 'exact')
        self.assertEqual(self.sni('www.example.com'), 'fallback')
        self.assertEqual(self.send(b'plain bytes, not TLS\n'), 'fallback')
        self.assertEqual(p.stat(listener_stat(self.port, 'no_filter_chain_match')), 0)


class TransportProtocolTest(ChainCase):

    def test_tls_and_plaintext_on_one_port(self):
        tls_app = HttpUpstream(name='tls-app')
        plain_app = HttpUpstream(name='plain-app')
        self.addCleanup(tls_app.close)
        self.addCleanup(plain_app.close)

        def hcm(cluster):
            return h.http_connection_manager(cluster, h.route_config([h.vhost(
                'all', ['*'], [h.route_prefix('/', cluster)])]))
        p = self.start([
            chain('raw', {'transport_protocol': 'raw_buffer'}, filters=[hcm('plain-app')]),
            chain('tls', {'transport_protocol': 'tls'}, filters=[hcm('tls-app')],
                  tls=C.downstream_tls(PKI['server']))],
            clusters=[h.cluster('tls-app', [tls_app.port]),
                      h.cluster('plain-app', [plain_app.port])])
        r = h.http_request(self.port, 'GET', '/plain')
        self.assertEqual((r.status, r.get('x-upstream-name')), (200, 'plain-app'))
        self.assertEqual(plain_app.last.header('x-forwarded-proto'), 'http')
        ctx = C.client_context(ca=PKI['ca'])
        r = h.http_request(self.port, 'GET', '/tls', ssl_context=ctx,
                           server_hostname='petrel.test')
        self.assertEqual((r.status, r.get('x-upstream-name')), (200, 'tls-app'))
        self.assertEqual(tls_app.last.header('x-forwarded-proto'), 'https')
        # Without SNI too: transport_protocol does not need a name.
        r = h.http_request(self.port, 'GET', '/tls2', ssl_context=ctx)
        self.assertEqual(r.get('x-upstream-name'), 'tls-app')
        self.assertEqual(p.stat('tls_inspector.tls_found'), 2)
        self.assertEqual(p.stat('tls_inspector.tls_not_found'), 1)
        self.assertEqual([x['path'] for x in plain_app.requests], ['/plain'])
        self.assertEqual([x['path'] for x in tls_app.requests], ['/tls', '/tls2'])

    def test_sni_chains_with_tls_termination_pick_their_certificate(self):
        # Two terminating chains by SNI with different certificates: the client sees the one
        # of the chain its SNI selected.
        self.echo('a')
        self.echo('b')
        p = self.start([
            chain('a', {'server_names': ['petrel.test']},
                  tls=C.downstream_tls(PKI['server'])),
            chain('b', {'server_names': ['chained.petrel.test']},
                  tls=C.downstream_tls(PKI['chained']))])
        ctx = C.client_context(ca=PKI['ca'])
        for name, cert in (('petrel.test', PKI['server']),
                           ('chained.petrel.test', PKI['chained'])):
            with h.tcp_connect(self.port, ssl_context=ctx, server_hostname=name) as s:
                self.assertEqual(C.peer_cert_serial(s), cert.serial)
                s.sendall(b'ping')
                self.assertEqual(h.recv_exact(s, 4), b'ping')
        self.assertEqual(p.stat('tcp.a.downstream_cx_total'), 1)
        self.assertEqual(p.stat('tcp.b.downstream_cx_total'), 1)


class AlpnTest(ChainCase):

    def test_application_protocols(self):
        for n in ('h2', 'h1', 'other'):
            self.echo(n)
        self.start([chain('h1', {'application_protocols': ['http/1.1']}),
                    chain('h2', {'application_protocols': ['h2']}),
                    chain('other')])
        self.assertEqual(self.sni('a.test', ['h2']), 'h2')
        self.assertEqual(self.sni('a.test', ['http/1.1']), 'h1')
        self.assertEqual(self.sni('a.test', ['spdy/3', 'http/1.1']), 'h1')
        self.assertEqual(self.sni('a.test', ['imap']), 'other')
        self.assertEqual(self.sni('a.test'), 'other')

    def test_client_preference_order_decides(self):
        # A client offering both picks the chain of its first protocol, as Envoy does (it
        # walks the client's ALPN list in order), whatever the order of the chains.
        for n in ('h2', 'h1'):
            self.echo(n)
        self.start([chain('h1', {'application_protocols': ['http/1.1']}),
                    chain('h2', {'application_protocols': ['h2']})])
        self.assertEqual(self.sni('a.test', ['h2', 'http/1.1']), 'h2')
        self.assertEqual(self.sni('a.test', ['http/1.1', 'h2']), 'h1')

    def test_server_names_narrow_before_alpn(self):
        for n in ('named', 'alpn'):
            self.echo(n)
        self.start([chain('alpn', {'application_protocols': ['h2']}),
                    chain('named', {'server_names': ['a.test']})])
        # server_names is evaluated first: the named chain wins even though ALPN would
        # match the other.
        self.assertEqual(self.sni('a.test', ['h2']), 'named')
        self.assertEqual(self.sni('b.test', ['h2']), 'alpn')


class AddressMatchTest(ChainCase):

    def test_destination_port(self):
        for n in ('port', 'otherport', 'any'):
            self.echo(n)
        self.port = h.free_port()
        # The listener port is known before start: chains can name it.
        port, admin = self.port, h.free_port()
        chains = [chain('any'), chain('otherport', {'destination_port': 1}),
                  chain('port', {'destination_port': port})]
        cl = [h.cluster(n, [e.port]) for n, e in self.echos.items()]
        self.p = h.Petrel(h.bootstrap([tls_listener(port, chains)], cl, admin_port=admin))
        self.p.start()
        self.addCleanup(self.p.close)
        self.assertEqual(self.send(b'hello'), 'port')
        self.assertEqual(self.sni('x.test'), 'port')

    def test_source_prefix_ranges_longest_prefix(self):
        for n in ('host', 'net', 'elsewhere', 'any'):
            self.echo(n)
        self.start([chain('any'),
                    chain('net', {'source_prefix_ranges': [
                        {'address_prefix': '127.0.0.0', 'prefix_len': 8}]}),
                    chain('host', {'source_prefix_ranges': [
                        {'address_prefix': '127.0.0.1', 'prefix_len': 32}]}),
                    chain('elsewhere', {'source_prefix_ranges': [
                        {'address_prefix': '10.0.0.0', 'prefix_len': 8}]})])
        self.assertEqual(self.send(b'a', source='127.0.0.1'), 'host')
        self.assertEqual(self.send(b'b', source='127.0.0.2'), 'net')
        self.assertEqual(self.sni('x.test', source='127.0.0.3'), 'net')

    def test_source_prefix_with_no_fallback(self):
        self.echo('host')
        p = self.start([chain('host', {'source_prefix_ranges': [
            {'address_prefix': '127.0.0.1', 'prefix_len': 32}]})])
        self.assertEqual(self.send(b'a', source='127.0.0.1'), 'host')
        self.assertIsNone(self.send(b'b', source='127.0.0.9'))
        p.wait_stat(listener_stat(self.port, 'no_filter_chain_match'), 1)


class InspectorTest(ChainCase):

    def test_explicit_tls_inspector(self):
        self.echo('only')
        p = self.start([chain('only')], listener_filters=[C.tls_inspector()])
        self.assertEqual(self.sni('a.test', ['h2']), 'only')
        self.assertEqual(self.send(b'not tls'), 'only')
        p.wait_stat('tls_inspector.tls_found', 1)
        self.assertEqual(p.stat('tls_inspector.sni_found'), 1)
        self.assertEqual(p.stat('tls_inspector.alpn_found'), 1)
        self.assertEqual(p.stat('tls_inspector.tls_not_found'), 1)

    def test_inspector_by_name_only(self):
        # The inspector named without typed_config (an older spelling) is accepted.
        self.echo('a')
        self.echo('b')
        self.start([chain('a', {'server_names': ['a.test']}),
                    chain('b', {'server_names': ['b.test']})],
                   listener_filters=[{'name': 'envoy.filters.listener.tls_inspector'}])
        self.assertEqual(self.sni('b.test'), 'b')
        self.assertEqual(self.sni('a.test'), 'a')

    def test_no_inspector_without_need(self):
        # Nothing asks for the inspector: the connection goes straight to the chain (a
        # server-speaks-first protocol works without the client sending anything).
        src = TcpSourceServer(1000)
        self.addCleanup(src.close)
        p = self.start([chain('src')], clusters=[h.cluster('src', [src.port])])
        with h.tcp_connect(self.port) as s:
            self.assertEqual(h.recv_exact(s, 1000), h.pattern_bytes(0, 1000))
        self.assertEqual(p.stat('tls_inspector.tls_not_found', 0), 0)

    def test_listener_filters_timeout_closes(self):
        self.echo('only')
        p = self.start([chain('only')], listener_filters=[C.tls_inspector()],
                       listener_filters_timeout='0.3s')
        t0 = time.monotonic()
        with socket.create_connection(('127.0.0.1', self.port), timeout=h.scaled(5)) as s:
            self.assertTrue(wait_closed(s))
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        # A partial ClientHello is no better.
        with socket.create_connection(('127.0.0.1', self.port), timeout=h.scaled(5)) as s:
            s.sendall(client_hello('a.test')[:20])
            self.assertTrue(wait_closed(s))
        p.wait_stat(listener_stat(self.port, 'downstream_pre_cx_timeout'), 2)
        p.wait_stat(listener_stat(self.port, 'downstream_cx_active'), 0)
        self.assertEqual(self.echos['only'].accepted, 0)
        # A client that speaks in time is unaffected.
        self.assertEqual(self.sni('a.test'), 'only')

    def test_listener_filters_timeout_continue_to_raw_chain(self):
        # A server-speaks-first protocol behind an inspecting listener: after the timeout
        # the connection continues as plaintext and reaches the raw chain.
        src = TcpSourceServer(1000)
        self.addCleanup(src.close)
        self.echo('tls')
        p = self.start([chain('tls', {'transport_protocol': 'tls'}),
                        chain('src', {'transport_protocol': 'raw_buffer'})],
                       clusters=[h.cluster('src', [src.port])],
                       listener_filters_timeout='0.3s',
                       continue_on_listener_filters_timeout=True)
        with h.tcp_connect(self.port) as s:
            self.assertEqual(h.recv_exact(s, 1000), h.pattern_bytes(0, 1000))
        p.wait_stat(listener_stat(self.port, 'downstream_pre_cx_timeout'), 1)
        self.assertEqual(p.stat('tcp.src.downstream_cx_total'), 1)
        self.assertEqual(self.sni('a.test'), 'tls')

    # BUG (proxy/listener.c, inspect_peek): a ClientHello larger than the inspector's limit
    # comes back from pt_client_hello_parse as PT_CH_ERROR (the parser reports the max_bytes
    # limit as soon as a length shows it), which inspect_peek maps to "not TLS" like any
    # malformed hello: the connection goes on to a raw_buffer / catch-all chain, and
    # tls_inspector.client_hello_too_large never counts. Envoy closes such connections.
    def test_oversized_client_hello_is_refused(self):
        self.echo('only')
        p = self.start([chain('only')], listener_filters=[C.tls_inspector()])
        # A handshake record announcing a ClientHello of 64 KiB + 16 bytes, then 70 KiB of
        # records: the inspector gives up at its limit.
        body = b'\x01' + (0x10010).to_bytes(3, 'big') + os.urandom(0x4000 - 4)
        big = b'\x16\x03\x01\x40\x00' + body
        for _ in range(4):
            big += b'\x16\x03\x01\x40\x00' + os.urandom(0x4000)
        try:
            with socket.create_connection(('127.0.0.1', self.port),
                                          timeout=h.scaled(5)) as s:
                try:
                    s.sendall(big)
                except OSError:
                    pass
                closed = wait_closed(s, timeout=3)
            self.assertEqual(self.sni('a.test'), 'only')
            self.assertTrue(closed)
            self.assertEqual(self.echos['only'].accepted, 1)
            p.wait_stat('tls_inspector.client_hello_too_large', 1, timeout=3)
        finally:
            p.stop()

    def test_malformed_tls_record_is_not_tls(self):
        # A handshake record that is not a ClientHello: like Envoy, "TLS not found", and
        # the connection continues to a chain that accepts plaintext.
        self.echo('raw')
        self.echo('tls')
        p = self.start([chain('tls', {'transport_protocol': 'tls'}),
                        chain('raw', {'transport_protocol': 'raw_buffer'})])
        junk = b'\x16\x03\x01\x00\x08\x02\x00\x00\x04abcd'
        self.assertEqual(self.send(junk), 'raw')
        self.assertEqual(self.sni('a.test'), 'tls')
        self.assertEqual(p.stat('tls_inspector.tls_not_found'), 1)


class ValidationTest(unittest.TestCase):

    def validate(self, chains, default=None):
        port = h.free_port()
        ln = tls_listener(port, chains, default)
        cfg = h.bootstrap([ln], [h.cluster(n, [1]) for n in ('a', 'b')])
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'c.json')
            with open(path, 'w') as f:
                json.dump(cfg, f)
            return h.run_petrel(['--mode', 'validate', '-c', path])

    def test_good_config_validates(self):
        rc, out, err = self.validate([chain('a', {'server_names': ['a.test']}),
                                      chain('b', {'server_names': ['*.test']})])
        self.assertEqual(rc, 0, out + err)

    def test_duplicate_matches_rejected(self):
        for m in ({'server_names': ['a.test']}, {}, {'transport_protocol': 'tls'},
                  {'source_prefix_ranges': [{'address_prefix': '10.0.0.0', 'prefix_len': 8}]},
                  {'destination_port': 443, 'application_protocols': ['h2']}):
            rc, out, err = self.validate([chain('a', m), chain('b', dict(m))])
            self.assertEqual(rc, 1, (m, out, err))
            self.assertRegex(out + err, r'filter_chains.*same filter_chain_match', m)

    # BUG (proxy/config.c, build_tls): a secret that cannot be loaded for the
    # default_filter_chain's transport socket is reported at
    # "filter_chains[<nchains>].transport_socket", a chain that does not exist (the
    # pt_tls_context_new error path right above it names default_filter_chain correctly).
    def test_default_chain_secret_error_names_the_default_chain(self):
        tls = {'name': 'envoy.transport_sockets.tls', 'typed_config': {
            '@type': C.DOWNSTREAM_TLS, 'common_tls_context': {
                'tls_certificate_sds_secret_configs': [
                    C.sds_ref('x', '/nonexistent/petrel-sds.json')]}}}
        rc, out, err = self.validate([chain('a', {'server_names': ['a.test']})],
                                     default=chain('b', tls=tls))
        self.assertEqual(rc, 1)
        self.assertIn('petrel-sds.json', out + err)
        self.assertIn('default_filter_chain.transport_socket', out + err)

    def test_bad_matches_rejected(self):
        for m, pattern in (({'server_names': ['a.*.test']}, r'wildcard'),
                           ({'server_names': ['*test']}, r'wildcard'),
                           ({'transport_protocol': 'quic'}, r'transport_protocol'),
                           ({'destination_port': 70000}, r'destination_port'),
                           ({'source_prefix_ranges': [{'address_prefix': 'nope'}]},
                            r'address_prefix|CIDR|nope'),
                           ({'server_names': ['a.test'], 'no_such_field': 1},
                            r'no_such_field')):
            rc, out, err = self.validate([chain('a', m)])
            self.assertEqual(rc, 1, (m, out, err))
            self.assertRegex(out + err, pattern, m)
            self.assertIn('filter_chain_match', out + err, m)


if __name__ == '__main__':
    unittest.main()
