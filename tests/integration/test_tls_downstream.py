"""Downstream TLS (DownstreamTlsContext on a listener's filter chain): termination with curl,
`openssl s_client` and Python clients; the served chain, SNI and ALPN; client certificates
(require_client_certificate, trust, SAN matchers, ACCEPT_UNTRUSTED); protocol versions and
cipher suites; session resumption; the TLS access-log fields; x-forwarded-client-cert in every
forward_client_cert_details mode and x-forwarded-proto; hostile and broken clients (garbage,
truncated ClientHello, plaintext to TLS and TLS to plaintext, disconnects mid-handshake).

The PKI is made at test time by certs.py (openssl CLI, temp dir).

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_tls_downstream.py -v
"""

import base64
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import certs as C  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer, TcpSinkServer, TcpSourceServer  # noqa: E402

PKI = None
STDERR_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog'
FRONTEND = C.spiffe('default', 'frontend')
GATEWAY = C.spiffe('default', 'gateway')


def setUpModule():
    global PKI
    PKI = C.standard_pki()


def ssl_stat(port, name):
    """Downstream TLS stats are scoped by listener address: listener.127.0.0.1_<port>.ssl.*"""
    return 'listener.127.0.0.1_%d.ssl.%s' % (port, name)


def listener_stat(port, name):
    return 'listener.127.0.0.1_%d.%s' % (port, name)


def tls_listener(name, port, filters, tls, **extra):
    ln = h.listener(name, port, filters, **extra)
    ln['filter_chains'][0]['transport_socket'] = tls
    return ln


def hcm(cluster='app', **extra):
    return h.http_connection_manager('ingress', h.route_config([
        h.vhost('all', ['*'], [h.route_prefix('/', cluster, timeout='5s')])]), **extra)


def stderr_log(fmt):
    return [{'name': 'envoy.access_loggers.stderr', 'typed_config': {
        '@type': STDERR_LOG, 'log_format': {'text_format_source': {'inline_string': fmt}}}}]


def curl(args, timeout=20):
    cp = subprocess.run(['curl', '-sS', '--max-time', str(h.scaled(10))] + list(args),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=h.scaled(timeout))
    return cp.returncode, cp.stdout.decode('utf-8', 'replace'), cp.stderr.decode('utf-8', 'replace')


def s_client(port, *args, servername='petrel.test', ca=True, input=b'', timeout=20):
    """`openssl s_client` to 127.0.0.1:port; returns (rc, combined output)."""
    argv = ['s_client', '-connect', '127.0.0.1:%d' % port]
    if servername:
        argv += ['-servername', servername]
    if ca:
        argv += ['-CAfile', PKI['ca'].cert]
    return C.run_openssl(argv + list(args), input=input, timeout=h.scaled(timeout))


def tls_request(port, cert=None, path='/', headers=None, server_hostname='petrel.test', **kw):
    """One HTTPS request with Python's client (verifying petrel against the test CA)."""
    ctx = C.client_context(ca=PKI['ca'], cert=cert)
    return h.http_request(port, 'GET', path, headers=headers, ssl_context=ctx,
                          server_hostname=server_hostname, **kw)


def handshake_fails(port, cert=None, server_hostname='petrel.test'):
    """True if a TLS client (optionally presenting ``cert``) cannot complete an HTTP exchange.

    With TLS 1.3 the client's side of the handshake completes before the server has checked
    the client certificate, so the rejection (an alert, or a close) shows on the first read.
    """
    ctx = C.client_context(ca=PKI['ca'], cert=cert)
    try:
        r = h.http_request(port, 'GET', '/', ssl_context=ctx, server_hostname=server_hostname,
                           timeout=5)
    except (ssl.SSLError, OSError, h.ConnectionClosed):
        return True
    raise AssertionError('request unexpectedly answered: %r' % r)


def client_hello_bytes(server_hostname='petrel.test', alpn=None):
    """The bytes of a real ClientHello (from Python's TLS stack over memory BIOs)."""
    ctx = C.client_context()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def wait_closed(sock, timeout=10):
    """True once the peer closes (EOF or reset) within timeout (scaled); data is discarded."""
    deadline = time.monotonic() + h.scaled(timeout)
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            return False
        except OSError:
            return True
    return False


class TlsCase(unittest.TestCase):
    """One petrel with an HTTPS listener in front of an HttpUpstream (per test)."""

    def setUp(self):
        self.up = HttpUpstream(name='app')
        self.addCleanup(self.up.close)

    def start(self, tls, hcm_extra=None, listeners_extra=(), clusters_extra=(), concurrency=1):
        self.port, admin = h.free_ports(2)
        ln = tls_listener('https', self.port, [hcm(**(hcm_extra or {}))], tls)
        cfg = h.bootstrap([ln] + list(listeners_extra),
                          [h.cluster('app', [self.up.port])] + list(clusters_extra),
                          admin_port=admin)
        self.p = h.Petrel(cfg, concurrency=concurrency)
        self.p.start()
        self.addCleanup(self.p.close)
        return self.p

    def stat(self, name):
        return self.p.stat(ssl_stat(self.port, name), 0)


# ---------------------------------------------------------------------------------------------

class TerminationTest(TlsCase):

    def test_curl_https_with_sni(self):
        p = self.start(C.downstream_tls(PKI['server']))
        rc, out, err = curl(['--cacert', PKI['ca'].cert, '--resolve',
                             'petrel.test:%d:127.0.0.1' % self.port, '-w', '\n%{http_code}',
                             'https://petrel.test:%d/hello' % self.port])
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.endswith('\n200'), out)
        rec = self.up.last
        self.assertEqual(rec['path'], '/hello')
        self.assertEqual(rec.header('x-forwarded-proto'), 'https')
        p.wait_stat(ssl_stat(self.port, 'handshake'), 1)
        self.assertEqual(self.stat('connection_error'), 0)
        # The same certificate by IP SAN, and Python's verifying client.
        rc, out, err = curl(['--cacert', PKI['ca'].cert, 'https://127.0.0.1:%d/ip' % self.port])
        self.assertEqual(rc, 0, err)
        r = tls_request(self.port, path='/py')
        self.assertEqual(r.status, 200)
        self.assertEqual(self.up.last['path'], '/py')

    def test_inline_bytes_and_inline_string_sources(self):
        # The key as base64 inline_bytes (proto3 JSON bytes), the chain and the CA as
        # inline_string: the same handshake as with files, and client certificates verify.
        with open(PKI['server'].cert) as f:
            chain = f.read()
        with open(PKI['server'].key, 'rb') as f:
            key_b64 = base64.b64encode(f.read()).decode()
        with open(PKI['ca'].cert) as f:
            ca = f.read()
        tls = C.downstream_tls(require_client=True)
        tls['typed_config']['common_tls_context'] = {
            'tls_certificates': [{'certificate_chain': {'inline_string': chain},
                                  'private_key': {'inline_bytes': key_b64}}],
            'validation_context': {'trusted_ca': {'inline_string': ca}}}
        self.start(tls)
        r = tls_request(self.port, cert=PKI['frontend'], path='/inline')
        self.assertEqual(r.status, 200)
        self.assertTrue(handshake_fails(self.port))  # no client certificate: refused
        self.assertEqual(self.up.last['path'], '/inline')

    def test_s_client_serves_chain_and_reports_sni(self):
        # The leaf is issued by an intermediate; only the root is trusted by the client, so
        # verification succeeds only if petrel serves the whole chain from the file.
        fmt = 'AL sni=%REQUESTED_SERVER_NAME% local=%DOWNSTREAM_LOCAL_URI_SAN%\n'
        p = self.start(C.downstream_tls(PKI['chained']),
                       hcm_extra={'access_log': stderr_log(fmt)})
        rc, out = s_client(self.port, '-showcerts', '-verify_return_error',
                           servername='sni.petrel.test')
        self.assertEqual(rc, 0, out)
        self.assertIn('Verify return code: 0 (ok)', out)
        self.assertRegex(out, r'0 s:.*CN = chained\.petrel\.test')
        self.assertRegex(out, r'1 s:.*CN = petrel test intermediate')
        # The SNI the client sent is what the access log reports (keep-alive request: the
        # connection is still open when the line is written).
        ctx = C.client_context(ca=PKI['ca'])
        with h.HttpClientConn(self.port, ssl_context=ctx,
                              server_hostname='sni.petrel.test') as c:
            self.assertEqual(c.request('GET', '/x').status, 200)
            p.wait_log(r'AL sni=sni\.petrel\.test local=%s' % re.escape(GATEWAY))

    # The stream's TLS fields must be copies: with "Connection: close" the codec closes the
    # connection (and frees the TLS state) before the access log line is written.
    def test_access_log_tls_fields_with_connection_close(self):
        fmt = 'AL sni=%REQUESTED_SERVER_NAME% peer=%DOWNSTREAM_PEER_URI_SAN% ' \
              'local=%DOWNSTREAM_LOCAL_URI_SAN%\n'
        p = self.start(C.downstream_tls(PKI['server'], ca=PKI['ca']),
                       hcm_extra={'access_log': stderr_log(fmt)})
        r = tls_request(self.port, PKI['frontend'], headers={'connection': 'close'},
                        server_hostname='close.petrel.test')
        self.assertEqual(r.status, 200)
        try:
            p.wait_log(r'AL sni=close\.petrel\.test peer=%s local=%s'
                       % (re.escape(FRONTEND), re.escape(GATEWAY)), timeout=5)
        finally:
            p.stop()        # a sanitizer report fails here (inside the expected failure)

    def test_without_the_chain_the_client_cannot_verify(self):
        # Control for the test above: the leaf alone does not verify against the root.
        p = self.start(C.downstream_tls(PKI['chained_leaf']))
        rc, out = s_client(self.port, '-verify_return_error')
        self.assertNotEqual(rc, 0, out)
        self.assertRegex(out, r'unable to get local issuer certificate|verify error')
        self.assertTrue(p.alive())

    def test_alpn_follows_server_preference(self):
        with TcpEchoServer() as echo:
            port2 = h.free_port()
            tcp_ln = tls_listener('tcp-tls', port2, [h.tcp_proxy('tcp', 'echo')],
                                  C.downstream_tls(PKI['server'], alpn=['h2', 'http/1.1']))
            self.start(C.downstream_tls(PKI['server'], alpn=['http/1.1', 'h2']),
                       listeners_extra=[tcp_ln], clusters_extra=[h.cluster('echo', [echo.port])])
            # The client prefers h2, the server's list puts http/1.1 first: http/1.1.
            rc, out = s_client(self.port, '-alpn', 'h2,http/1.1')
            self.assertEqual(rc, 0, out)
            self.assertIn('ALPN protocol: http/1.1', out)
            # The other listener prefers h2.
            rc, out = s_client(port2, '-alpn', 'http/1.1,h2', input=b'ping\n')
            self.assertEqual(rc, 0, out)
            self.assertIn('ALPN protocol: h2', out)
            # No overlap: the handshake still succeeds, without ALPN (Envoy's behaviour).
            rc, out = s_client(port2, '-alpn', 'foo', input=b'ping\n')
            self.assertEqual(rc, 0, out)
            self.assertIn('No ALPN negotiated', out)
            # curl asks for http/1.1 and gets it; the request works.
            rc, body, err = curl(['--http1.1', '--cacert', PKI['ca'].cert, '-w',
                                  '\n%{http_version}', 'https://localhost:%d/' % self.port])
            self.assertEqual(rc, 0, err)
            self.assertTrue(body.endswith('\n1.1'), body)


    def test_http_chains_offer_only_what_they_speak(self):
        # Envoy's edge config writes one comma-joined entry; an HTTP chain offers only the
        # protocols its codec_type speaks (h2 is not negotiated to then fail the connection),
        # while a tcp_proxy chain passes any protocol through.
        with TcpEchoServer() as echo:
            port2 = h.free_port()
            tcp_ln = tls_listener('tcp-tls', port2, [h.tcp_proxy('tcp', 'echo')],
                                  C.downstream_tls(PKI['server'], alpn=['h2,http/1.1']))
            p = self.start(C.downstream_tls(PKI['server'], alpn=['h2,http/1.1']),
                           hcm_extra={'codec_type': 'HTTP1'},
                           listeners_extra=[tcp_ln], clusters_extra=[h.cluster('echo', [echo.port])])
            p.wait_log(r'ALPN protocol "h2" is not offered: '
                       r'envoy.filters.network.http_connection_manager does not speak it')
            rc, body, err = curl(['--http2', '--cacert', PKI['ca'].cert, '-w',
                                  '\n%{http_version}', 'https://localhost:%d/' % self.port])
            self.assertEqual(rc, 0, err)
            self.assertTrue(body.endswith('\n1.1'), body)
            rc, out = s_client(self.port, '-alpn', 'h2')
            self.assertEqual(rc, 0, out)
            self.assertIn('No ALPN negotiated', out)
            rc, out = s_client(port2, '-alpn', 'http/1.1,h2', input=b'ping\n')
            self.assertEqual(rc, 0, out)
            self.assertIn('ALPN protocol: h2', out)
            rc, out = s_client(port2, '-alpn', 'http/1.1', input=b'ping\n')
            self.assertIn('ALPN protocol: http/1.1', out)

    def test_auto_codec_offers_h2_and_speaks_it(self):
        # codec_type AUTO (the default) speaks h2 too: curl --http2 gets HTTP/2 by ALPN.
        p = self.start(C.downstream_tls(PKI['server'], alpn=['h2,http/1.1']))
        rc, body, err = curl(['--http2', '--cacert', PKI['ca'].cert, '-w',
                              '\n%{http_version}', 'https://localhost:%d/' % self.port])
        self.assertEqual(rc, 0, err)
        self.assertTrue(body.endswith('\n2'), body)
        rc, out = s_client(self.port, '-alpn', 'h2')
        self.assertIn('ALPN protocol: h2', out)


class BulkTest(TlsCase):

    def test_large_bodies_through_tls_termination(self):
        # Many TLS records per read: bytes buffered inside OpenSSL must be delivered even
        # when the socket goes quiet (the read budget is smaller than the body).
        self.start(C.downstream_tls(PKI['server']))
        n = 8 << 20
        ctx = C.client_context(ca=PKI['ca'])
        with h.HttpClientConn(self.port, ssl_context=ctx, server_hostname='petrel.test',
                              timeout=30) as c:
            r = c.request('GET', '/bytes/%d' % n, store_body=False)
            self.assertEqual((r.status, r.body_len), (200, n))
            self.assertEqual(r.body_sha256, h.sha256_pattern(n))
            r = c.request('POST', '/upload', body=h.pattern_chunks(n, 100000))
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()['body_sha256'], h.sha256_pattern(n))
            self.assertEqual(self.up.last['body_len'], n)
            r = c.request('GET', '/chunked/%d' % n, store_body=False)
            self.assertEqual(r.body_sha256, h.sha256_pattern(n))

    def test_tcp_bulk_both_ways(self):
        with TcpEchoServer() as echo:
            port = h.free_port()
            ln = tls_listener('tcp-tls', port, [h.tcp_proxy('tcp', 'echo')],
                              C.downstream_tls(PKI['server']))
            self.start(C.downstream_tls(PKI['server']), listeners_extra=[ln],
                       clusters_extra=[h.cluster('echo', [echo.port])])
            n, step = 16 << 20, 256 * 1024
            ctx = C.client_context(ca=PKI['ca'])
            # One thread per SSL object (OpenSSL's are not safe to share between threads):
            # send a piece, read its echo, in lockstep; each piece is many TLS records.
            verifier = h.PatternVerifier()
            with h.tcp_connect(port, ssl_context=ctx, server_hostname='petrel.test',
                               timeout=30) as s:
                for off in range(0, n, step):
                    s.sendall(h.pattern_bytes(off, step))
                    verifier.feed(h.recv_exact(s, step))
                h.shutdown_write(s)
                self.assertEqual(h.recv_until_eof(s), b'')
            self.assertTrue(verifier.ok(n))


class TcpOverTlsTest(TlsCase):
    """tcp_proxy behind TLS termination: bytes and half-close cross the TLS layer."""

    def test_half_close_without_close_notify(self):
        # Many clients end their side with a bare FIN (no close_notify). That is the end of
        # the client's stream, not an error: the FIN goes upstream and the reply still
        # comes back over TLS.
        with TcpSinkServer(reply=True) as sink:
            port = h.free_port()
            ln = tls_listener('tcp-tls', port, [h.tcp_proxy('tcp', 'sink')],
                              C.downstream_tls(PKI['server']))
            p = self.start(C.downstream_tls(PKI['server']), listeners_extra=[ln],
                           clusters_extra=[h.cluster('sink', [sink.port])])
            data = h.pattern_bytes(0, 300000)
            ctx = C.client_context(ca=PKI['ca'])
            with h.tcp_connect(port, ssl_context=ctx, server_hostname='petrel.test') as s:
                s.sendall(data)
                h.shutdown_write(s)                 # FIN only, no close_notify
                reply = h.recv_until_eof(s)
            self.assertEqual(reply, b'%d %s\n' % (len(data), h.sha256_hex(data).encode()))
            self.assertTrue(sink.wait_results(1)[0]['eof'])
            self.assertEqual(p.stat(ssl_stat(port, 'connection_error'), 0), 0)

    def test_close_notify_on_close(self):
        # petrel ends the TLS stream properly (close_notify) when the upstream closes, so a
        # strict client (OpenSSL 3 s_client) sees a clean end, not "unexpected eof".
        with TcpSourceServer(5000) as src:
            port = h.free_port()
            ln = tls_listener('tcp-tls', port, [h.tcp_proxy('tcp', 'src')],
                              C.downstream_tls(PKI['server']))
            self.start(C.downstream_tls(PKI['server']), listeners_extra=[ln],
                       clusters_extra=[h.cluster('src', [src.port])])
            cp = subprocess.run([C.OPENSSL, 's_client', '-connect', '127.0.0.1:%d' % port,
                                 '-ign_eof', '-quiet'], input=b'', stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, timeout=h.scaled(20))
            err = cp.stderr.decode('utf-8', 'replace')
            self.assertEqual(cp.returncode, 0, err)
            self.assertEqual(cp.stdout, h.pattern_bytes(0, 5000))
            self.assertNotIn('unexpected eof', err)


class ClientCertTest(TlsCase):

    def test_required_client_cert_accepted(self):
        fmt = 'AL peer=%DOWNSTREAM_PEER_URI_SAN% local=%DOWNSTREAM_LOCAL_URI_SAN% ' \
              'sni=%REQUESTED_SERVER_NAME%\n'
        p = self.start(C.downstream_tls(PKI['server'], ca=PKI['ca'], require_client=True),
                       hcm_extra={'access_log': stderr_log(fmt)})
        rc, out, err = curl(['--cacert', PKI['ca'].cert, '--cert', PKI['frontend'].cert,
                             '--key', PKI['frontend'].key, '--resolve',
                             'petrel.test:%d:127.0.0.1' % self.port,
                             'https://petrel.test:%d/mtls' % self.port])
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.up.last['path'], '/mtls')
        p.wait_log(r'AL peer=%s local=%s sni=petrel\.test'
                   % (re.escape(FRONTEND), re.escape(GATEWAY)))
        self.assertEqual(self.stat('no_certificate'), 0)
        self.assertEqual(self.stat('fail_verify_error'), 0)

    def test_no_client_cert_is_refused(self):
        p = self.start(C.downstream_tls(PKI['server'], ca=PKI['ca'], require_client=True))
        self.assertTrue(handshake_fails(self.port))
        rc, out, err = curl(['--cacert', PKI['ca'].cert, 'https://localhost:%d/' % self.port])
        self.assertNotEqual(rc, 0)
        p.wait_stat(ssl_stat(self.port, 'fail_verify_no_cert'), 2)
        p.wait_stat(ssl_stat(self.port, 'connection_error'), 2)
        self.assertEqual(self.up.requests, [])
        p.wait_stat(listener_stat(self.port, 'downstream_cx_active'), 0)

    def test_client_cert_from_untrusted_ca_is_refused(self):
        p = self.start(C.downstream_tls(PKI['server'], ca=PKI['ca'], require_client=True))
        self.assertTrue(handshake_fails(self.port, PKI['other_ca']))
        p.wait_stat(ssl_stat(self.port, 'fail_verify_error'), 1)
        p.wait_stat(ssl_stat(self.port, 'connection_error'), 1)
        self.assertEqual(self.stat('fail_verify_san'), 0)
        self.assertEqual(self.up.requests, [])

    def test_expired_and_not_yet_valid_client_certs_are_refused(self):
        p = self.start(C.downstream_tls(PKI['server'], ca=PKI['ca'], require_client=True))
        self.assertTrue(handshake_fails(self.port, PKI['expired']))
        self.assertTrue(handshake_fails(self.port, PKI['not_yet_valid']))
        p.wait_stat(ssl_stat(self.port, 'fail_verify_error'), 2)
        # A good one still works on the same listener.
        self.assertEqual(tls_request(self.port, PKI['frontend']).status, 200)

    def test_optional_client_cert(self):
        # validation_context without require_client_certificate: a certificate is asked
        # for, verified if sent, and its absence is fine.
        fmt = 'AL peer=[%DOWNSTREAM_PEER_URI_SAN%]\n'
        p = self.start(C.downstream_tls(PKI['server'], ca=PKI['ca']),
                       hcm_extra={'access_log': stderr_log(fmt)})
        self.assertEqual(tls_request(self.port).status, 200)
        p.wait_log(r'AL peer=\[-\]')
        self.assertEqual(tls_request(self.port, PKI['frontend']).status, 200)
        p.wait_log(r'AL peer=\[%s\]' % re.escape(FRONTEND))
        self.assertTrue(handshake_fails(self.port, PKI['other_ca']))
        p.wait_stat(ssl_stat(self.port, 'fail_verify_error'), 1)

    def _san_case(self, matchers, accepted, rejected):
        p = self.start(C.downstream_tls(PKI['server'], ca=PKI['ca'], require_client=True,
                                        san=matchers))
        for name in accepted:
            r = tls_request(self.port, PKI[name], path='/' + name)
            self.assertEqual(r.status, 200, name)
        for i, name in enumerate(rejected):
            self.assertTrue(handshake_fails(self.port, PKI[name]), name)
            p.wait_stat(ssl_stat(self.port, 'fail_verify_san'), i + 1)
        self.assertEqual([r['path'] for r in self.up.requests], ['/' + n for n in accepted])
        self.assertEqual(self.stat('fail_verify_error'), 0)

    def test_san_uri_prefix(self):
        self._san_case([C.san_uri(prefix='spiffe://cluster.local/ns/default/')],
                       ['frontend', 'backend'], ['wrong_domain'])

    def test_san_uri_exact(self):
        self._san_case([C.san_uri(exact=FRONTEND)], ['frontend'], ['backend', 'wrong_domain'])

    def test_san_uri_safe_regex(self):
        rx = r'^spiffe://cluster\.local/ns/default/sa/(frontend|backend)$'
        self._san_case([C.san_uri(safe_regex={'regex': rx})], ['frontend', 'backend'],
                       ['rogue', 'wrong_domain'])

    def test_san_dns_exact_and_list_is_any_of(self):
        # Several matchers: any one matching accepts. The DNS matcher does not look at URIs.
        self._san_case([C.san_dns(exact='frontend.test'), C.san_dns(exact='backend.test')],
                       ['frontend', 'backend'], ['rogue'])

    def test_san_type_mismatch_rejects(self):
        # A URI matcher with a DNS name's value matches nothing.
        self._san_case([C.san_uri(exact='frontend.test')], [], ['frontend'])

    def test_accept_untrusted(self):
        tls = C.downstream_tls(PKI['server'], ca=PKI['ca'], require_client=True,
                               validation_extra={'trust_chain_verification':
                                                 'ACCEPT_UNTRUSTED'})
        p = self.start(tls)
        # A certificate from an unrelated CA, and an expired one, are accepted...
        self.assertEqual(tls_request(self.port, PKI['other_ca']).status, 200)
        self.assertEqual(tls_request(self.port, PKI['expired']).status, 200)
        self.assertEqual(self.stat('fail_verify_error'), 0)
        # ...but a client certificate is still required.
        self.assertTrue(handshake_fails(self.port))
        p.wait_stat(ssl_stat(self.port, 'fail_verify_no_cert'), 1)

    def test_accept_untrusted_still_checks_sans(self):
        tls = C.downstream_tls(PKI['server'], ca=PKI['ca'], require_client=True,
                               san=[C.san_uri(exact=FRONTEND)],
                               validation_extra={'trust_chain_verification':
                                                 'ACCEPT_UNTRUSTED'})
        p = self.start(tls)
        self.assertEqual(tls_request(self.port, PKI['other_ca']).status, 200)
        self.assertTrue(handshake_fails(self.port, PKI['other_ca_rogue']))
        self.assertTrue(handshake_fails(self.port, PKI['rogue']))
        p.wait_stat(ssl_stat(self.port, 'fail_verify_san'), 2)
        self.assertEqual(len(self.up.requests), 1)


class ProtocolTest(TlsCase):

    def test_tls11_client_refused_by_default(self):
        p = self.start(C.downstream_tls(PKI['server']))
        rc, out = s_client(self.port, '-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0')
        self.assertNotEqual(rc, 0, out)
        self.assertRegex(out, r'alert protocol version|unsupported protocol|no protocols')
        p.wait_stat(ssl_stat(self.port, 'connection_error'), 1)
        self.assertEqual(self.stat('handshake'), 0)
        # TLS 1.2 and 1.3 are fine.
        rc, out = s_client(self.port, '-tls1_2')
        self.assertEqual(rc, 0, out)
        self.assertIn('New, TLSv1.2', out)
        rc, out = s_client(self.port, '-tls1_3')
        self.assertEqual(rc, 0, out)
        self.assertIn('New, TLSv1.3', out)

    def test_maximum_tls12(self):
        self.start(C.downstream_tls(PKI['server'],
                                    tls_params={'tls_maximum_protocol_version': 'TLSv1_2'}))
        rc, out = s_client(self.port)
        self.assertEqual(rc, 0, out)
        self.assertIn('New, TLSv1.2', out)
        rc, out = s_client(self.port, '-tls1_3')
        self.assertNotEqual(rc, 0, out)
        ctx = C.client_context(ca=PKI['ca'])
        with h.HttpClientConn(self.port, ssl_context=ctx, server_hostname='petrel.test') as c:
            self.assertEqual(c.sock.version(), 'TLSv1.2')
            self.assertEqual(c.request('GET', '/').status, 200)

    def test_minimum_tls13(self):
        self.start(C.downstream_tls(PKI['server'],
                                    tls_params={'tls_minimum_protocol_version': 'TLSv1_3'}))
        rc, out = s_client(self.port, '-tls1_2')
        self.assertNotEqual(rc, 0, out)
        rc, out = s_client(self.port)
        self.assertEqual(rc, 0, out)
        self.assertIn('New, TLSv1.3', out)

    def test_cipher_suites_restriction(self):
        # Envoy's BoringSSL equal-preference group syntax is accepted too.
        tls = C.downstream_tls(PKI['server'], tls_params={
            'tls_maximum_protocol_version': 'TLSv1_2',
            'cipher_suites': ['[ECDHE-ECDSA-CHACHA20-POLY1305|ECDHE-ECDSA-AES256-GCM-SHA384]']})
        p = self.start(tls)
        rc, out = s_client(self.port, '-cipher', 'ECDHE-ECDSA-AES256-GCM-SHA384')
        self.assertEqual(rc, 0, out)
        self.assertIn('Cipher is ECDHE-ECDSA-AES256-GCM-SHA384', out)
        rc, out = s_client(self.port, '-cipher', 'ECDHE-ECDSA-AES128-GCM-SHA256')
        self.assertNotEqual(rc, 0, out)
        self.assertRegex(out, r'handshake failure|no shared cipher')
        p.wait_stat(ssl_stat(self.port, 'connection_error'), 1)

    def test_bad_tls_config_is_rejected_at_validation(self):
        port = h.free_port()
        cases = [
            (C.downstream_tls(PKI['server'], tls_params={'cipher_suites': ['NOT-A-CIPHER']}),
             r'cipher'),
            (C.downstream_tls(PKI['server'],
                              tls_params={'tls_minimum_protocol_version': 'TLSv1_3',
                                          'tls_maximum_protocol_version': 'TLSv1_2'}),
             r'tls_minimum_protocol_version'),
            (C.downstream_tls(PKI['server'], ca=None, require_client=True),
             r'require_client_certificate'),
            (C.downstream_tls(None, ca=PKI['ca']), r'certificate'),
            (C.downstream_tls(PKI['server'], alpn=['h2,,http/1.1']),
             r'alpn_protocols\[0\]: "h2,,http/1\.1": each comma-separated protocol name must '
             r'have 1 to 255 characters'),
            (C.downstream_tls(PKI['server'], alpn=['']), r'alpn_protocols\[0\]: is not a '
                                                         r'protocol name'),
            ({'name': 'envoy.transport_sockets.tls', 'typed_config': {
                '@type': C.DOWNSTREAM_TLS, 'common_tls_context': {'tls_certificates': [{
                    'certificate_chain': {'filename': PKI['server'].cert},
                    'private_key': {'filename': PKI['frontend'].key}}]}}},
             r'does not match'),
            ({'name': 'envoy.transport_sockets.tls', 'typed_config': {
                '@type': C.DOWNSTREAM_TLS, 'common_tls_context': {'tls_certificates': [{
                    'certificate_chain': {'filename': '/nonexistent/cert.pem'},
                    'private_key': {'filename': PKI['server'].key}}]}}},
             r'/nonexistent/cert\.pem'),
            (C.downstream_tls(PKI['server'], common_extra={'unknown_field': 1}),
             r'unknown_field'),
        ]
        with tempfile.TemporaryDirectory() as d:
            for i, (tls, pattern) in enumerate(cases):
                cfg = h.bootstrap([tls_listener('https', port, [hcm()], tls)],
                                  [h.cluster('app', [self.up.port])])
                path = os.path.join(d, 'c%d.json' % i)
                with open(path, 'w') as f:
                    json.dump(cfg, f)
                rc, out, err = h.run_petrel(['--mode', 'validate', '-c', path])
                self.assertEqual(rc, 1, (i, out, err))
                self.assertRegex(out + err, pattern, i)
                self.assertIn('transport_socket', out + err, i)


class HandshakeTimeoutTest(TlsCase):
    """transport_socket_connect_timeout bounds the downstream TLS handshake."""

    def start_with_timeout(self, timeout):
        self.port, admin = h.free_ports(2)
        ln = tls_listener('https', self.port, [hcm()], C.downstream_tls(PKI['server']))
        ln['filter_chains'][0]['transport_socket_connect_timeout'] = timeout
        self.p = h.Petrel(h.bootstrap([ln], [h.cluster('app', [self.up.port])],
                                      admin_port=admin))
        self.p.start()
        self.addCleanup(self.p.close)

    def test_stalled_handshakes_are_closed_and_counted(self):
        self.start_with_timeout('0.3s')
        hello = client_hello_bytes()
        silent = socket.create_connection(('127.0.0.1', self.port), timeout=h.scaled(5))
        half = socket.create_connection(('127.0.0.1', self.port), timeout=h.scaled(5))
        try:
            half.sendall(hello[:len(hello) // 2])
            # Both are closed by petrel (not by a client timeout: wait_closed waits 10 s).
            self.assertTrue(wait_closed(silent))
            self.assertTrue(wait_closed(half))
        finally:
            silent.close()
            half.close()
        self.p.wait_stat(listener_stat(self.port, 'downstream_cx_transport_socket_connect_timeout'), 2)
        # A client that completes its handshake in time is served as usual, and keeps its
        # connection beyond the handshake timeout.
        ctx = C.client_context(ca=PKI['ca'])
        conn = h.HttpClientConn(self.port, ssl_context=ctx, server_hostname='petrel.test')
        try:
            self.assertEqual(conn.request('GET', '/a').status, 200)
            time.sleep(0.6)
            self.assertEqual(conn.request('GET', '/b').status, 200)
        finally:
            conn.close()
        self.assertEqual(self.p.stat(listener_stat(
            self.port, 'downstream_cx_transport_socket_connect_timeout')), 2)

    def test_bad_timeout_is_a_config_error(self):
        port, admin = h.free_ports(2)
        ln = tls_listener('https', port, [hcm()], C.downstream_tls(PKI['server']))
        ln['filter_chains'][0]['transport_socket_connect_timeout'] = 'soon'
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'c.json')
            with open(path, 'w') as f:
                json.dump(h.bootstrap([ln], [h.cluster('app', [self.up.port])],
                                      admin_port=admin), f)
            rc, out, err = h.run_petrel(['--mode', 'validate', '-c', path])
        self.assertEqual(rc, 1, (out, err))
        self.assertIn('static_resources.listeners[0].filter_chains[0]'
                      '.transport_socket_connect_timeout', out + err)


class ResumptionTest(TlsCase):

    def test_session_resumption_with_s_client(self):
        p = self.start(C.downstream_tls(PKI['server']))
        req = b'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
        with tempfile.TemporaryDirectory() as d:
            for version in ('-tls1_3', '-tls1_2'):
                sess = os.path.join(d, 'sess' + version)
                # The request keeps s_client reading until petrel closes, so a TLS 1.3
                # ticket (sent after the handshake) is received and saved.
                rc, out = s_client(self.port, version, '-sess_out', sess, '-ign_eof',
                                   input=req)
                self.assertEqual(rc, 0, out)
                self.assertRegex(out, r'\nNew, TLSv1\.[23]')
                self.assertTrue(os.path.getsize(sess) > 0)
                rc, out = s_client(self.port, version, '-sess_in', sess, '-ign_eof', input=req)
                self.assertEqual(rc, 0, out)
                self.assertRegex(out, r'\nReused, TLSv1\.[23]', out)
                self.assertIn('HTTP/1.1 200', out)
        p.wait_stat(ssl_stat(self.port, 'session_reused'), 2)
        self.assertEqual(self.stat('handshake'), 4)

    def test_every_tls13_reconnect_resumes(self):
        # A TLS 1.3 client uses each ticket once (RFC 8446, appendix C.4; OpenSSL's client,
        # and so wrk, does), so every handshake, resumed ones too, must hand out a fresh
        # ticket: otherwise only every other reconnect resumes.
        p = self.start(C.downstream_tls(PKI['server']))
        ctx = C.client_context(ca=PKI['ca'], minimum=ssl.TLSVersion.TLSv1_3)
        with h.HttpClientConn(self.port, ssl_context=ctx, server_hostname='petrel.test') as c:
            self.assertEqual(c.request('GET', '/full').status, 200)
            session = c.sock.session
            self.assertFalse(c.sock.session_reused)
        seen = {session.id}
        for i in range(4):
            s = resume(self.port, ctx, session)
            try:
                self.assertTrue(s.session_reused, i)
                h.send_request(s, 'GET', '/r%d' % i, host_header='petrel.test')
                self.assertEqual(h.read_response(h.SockReader(s)).status, 200)
                # The ticket that came after this handshake (a session's id is the hash of
                # its ticket) is a new one: the next reconnect offers it.
                session = s.session
            finally:
                s.close()
            self.assertNotIn(session.id, seen, i)
            seen.add(session.id)
        p.wait_stat(ssl_stat(self.port, 'session_reused'), 4)
        self.assertEqual(self.stat('handshake'), 5)

    def test_resumed_mtls_session_keeps_the_identity(self):
        p = self.start(C.downstream_tls(PKI['server'], ca=PKI['ca'], require_client=True),
                       hcm_extra={'forward_client_cert_details': 'SANITIZE_SET',
                                  'set_current_client_cert_details': {'uri': True}})
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = C.client_context(ca=PKI['ca'], cert=PKI['frontend'], maximum=version)
            with h.HttpClientConn(self.port, ssl_context=ctx,
                                  server_hostname='petrel.test') as c:
                self.assertEqual(c.request('GET', '/full').status, 200)
                session = c.sock.session
                self.assertFalse(c.sock.session_reused)
            s = resume(self.port, ctx, session)
            try:
                self.assertTrue(s.session_reused, version)
                h.send_request(s, 'GET', '/resumed', host_header='petrel.test')
                self.assertEqual(h.read_response(h.SockReader(s)).status, 200)
            finally:
                s.close()
            # The identity verified in the full handshake comes with the session.
            rec = self.up.last
            self.assertEqual(rec['path'], '/resumed')
            self.assertEqual(rec.header('x-forwarded-client-cert'), 'By=%s;Hash=%s;URI=%s' % (
                GATEWAY, PKI['frontend'].sha256, FRONTEND))
        p.wait_stat(ssl_stat(self.port, 'session_reused'), 2)

    def test_resumption_across_workers(self):
        # Ticket keys belong to the process: whichever worker the kernel hands the next
        # connection to can resume the session.
        p = self.start(C.downstream_tls(PKI['server'], ca=PKI['ca'], require_client=True),
                       concurrency=3)
        ctx = C.client_context(ca=PKI['ca'], cert=PKI['frontend'],
                               maximum=ssl.TLSVersion.TLSv1_2)
        with h.HttpClientConn(self.port, ssl_context=ctx, server_hostname='petrel.test') as c:
            self.assertEqual(c.request('GET', '/full').status, 200)
            session = c.sock.session
        results = []

        def worker(i):
            s = resume(self.port, ctx, session)
            try:
                h.send_request(s, 'GET', '/r%d' % i, host_header='petrel.test')
                results.append((s.session_reused,
                                h.read_response(h.SockReader(s)).status))
            finally:
                s.close()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(h.scaled(20))
        self.assertEqual(results, [(True, 200)] * 12)
        p.wait_stat(ssl_stat(self.port, 'session_reused'), 12)

    def test_session_does_not_cross_into_stricter_listener(self):
        # Ticket keys are shared by the process; a session from a listener that asks for no
        # client certificate, or trusts another CA, must not resume on an mTLS listener (that
        # would skip its client verification entirely).
        open_port, other_ca_port = h.free_ports(2)
        lst = [tls_listener('open', open_port, [hcm()], C.downstream_tls(PKI['server'])),
               tls_listener('ca2', other_ca_port, [hcm()],
                            C.downstream_tls(PKI['server'], ca=PKI['ca2'], require_client=True))]
        p = self.start(C.downstream_tls(PKI['server'], ca=PKI['ca'], require_client=True),
                       listeners_extra=lst)
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            # No certificate at all: the open listener's session on the mTLS one.
            ctx = C.client_context(ca=PKI['ca'], maximum=version)
            with h.HttpClientConn(open_port, ssl_context=ctx,
                                  server_hostname='petrel.test') as c:
                self.assertEqual(c.request('GET', '/open').status, 200)
                session = c.sock.session
            self.assertTrue(resumed_request_fails(self.port, ctx, session), version)
            # A certificate trusted by the mTLS listener (ca) is not thereby trusted by the
            # listener that trusts only ca2.
            ctx = C.client_context(ca=PKI['ca'], cert=PKI['frontend'], maximum=version)
            with h.HttpClientConn(self.port, ssl_context=ctx,
                                  server_hostname='petrel.test') as c:
                self.assertEqual(c.request('GET', '/mtls').status, 200)
                session = c.sock.session
            self.assertTrue(resumed_request_fails(other_ca_port, ctx, session), version)
        self.assertEqual(sorted(r['path'] for r in self.up.requests),
                         ['/mtls', '/mtls', '/open', '/open'])
        self.assertEqual(self.stat('session_reused'), 0)
        self.assertEqual(p.stat(ssl_stat(other_ca_port, 'session_reused'), 0), 0)


def resume(port, ctx, session):
    raw = socket.create_connection(('127.0.0.1', port), timeout=h.scaled(5))
    try:
        return ctx.wrap_socket(raw, server_hostname='petrel.test', session=session)
    except BaseException:
        raw.close()
        raise


def resumed_request_fails(port, ctx, session):
    """True if offering ``session`` to ``port`` does not get a request through."""
    try:
        s = resume(port, ctx, session)
    except (ssl.SSLError, OSError):
        return True
    try:
        h.send_request(s, 'GET', '/resumed-elsewhere', host_header='petrel.test')
        r = h.read_response(h.SockReader(s))
    except (ssl.SSLError, OSError, h.ConnectionClosed):
        return True
    finally:
        s.close()
    raise AssertionError('resumed on port %d and answered %d' % (port, r.status))


class XfccTest(unittest.TestCase):
    """x-forwarded-client-cert in each forward_client_cert_details mode, one listener each."""

    MODES = ('SANITIZE', 'SANITIZE_SET', 'APPEND_FORWARD', 'FORWARD_ONLY')
    CLIENT_XFCC = 'By=spiffe://evil/sa/x;URI=spiffe://cluster.local/ns/default/sa/admin'

    @classmethod
    def setUpClass(cls):
        cls.up = HttpUpstream(name='app')
        ports = h.free_ports(len(cls.MODES) + 1)
        cls.ports = dict(zip(cls.MODES, ports))
        listeners = []
        for mode, port in cls.ports.items():
            extra = {'forward_client_cert_details': mode}
            if mode in ('SANITIZE_SET', 'APPEND_FORWARD'):
                extra['set_current_client_cert_details'] = {'uri': True}
            # Client certificates optional, so each mode is seen with and without mTLS.
            listeners.append(tls_listener(mode.lower(), port, [hcm(**extra)],
                                          C.downstream_tls(PKI['server'], ca=PKI['ca'])))
        cfg = h.bootstrap(listeners, [h.cluster('app', [cls.up.port])], admin_port=ports[-1])
        cls.p = h.Petrel(cfg)
        cls.p.start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.p.close()
        finally:
            cls.up.close()

    def xfcc_seen(self, mode, cert, sent=True):
        path = '/%s/%s' % (mode, cert.name if cert else 'none')
        headers = {'x-forwarded-client-cert': self.CLIENT_XFCC} if sent else None
        r = tls_request(self.ports[mode], cert, path=path, headers=headers)
        self.assertEqual(r.status, 200)
        rec = [x for x in self.up.requests if x['path'] == path][-1]
        self.assertEqual(rec.header('x-forwarded-proto'), 'https')
        values = [v for n, v in rec['headers'] if n.lower() == 'x-forwarded-client-cert']
        self.assertLessEqual(len(values), 1, values)
        return values[0] if values else None

    def own_element(self):
        return 'By=%s;Hash=%s;URI=%s' % (GATEWAY, PKI['frontend'].sha256, FRONTEND)

    def test_sanitize(self):
        self.assertIsNone(self.xfcc_seen('SANITIZE', PKI['frontend']))
        self.assertIsNone(self.xfcc_seen('SANITIZE', None))

    def test_sanitize_set(self):
        self.assertEqual(self.xfcc_seen('SANITIZE_SET', PKI['frontend']), self.own_element())
        self.assertEqual(self.xfcc_seen('SANITIZE_SET', PKI['frontend'], sent=False),
                         self.own_element())
        # Without a client certificate there is nothing to set, and the client's is dropped.
        self.assertIsNone(self.xfcc_seen('SANITIZE_SET', None))

    def test_append_forward(self):
        self.assertEqual(self.xfcc_seen('APPEND_FORWARD', PKI['frontend']),
                         self.CLIENT_XFCC + ',' + self.own_element())
        self.assertEqual(self.xfcc_seen('APPEND_FORWARD', PKI['frontend'], sent=False),
                         self.own_element())
        self.assertIsNone(self.xfcc_seen('APPEND_FORWARD', None))

    def test_forward_only(self):
        self.assertEqual(self.xfcc_seen('FORWARD_ONLY', PKI['frontend']), self.CLIENT_XFCC)
        self.assertIsNone(self.xfcc_seen('FORWARD_ONLY', PKI['frontend'], sent=False))
        # Not mTLS: the client's claim is not forwarded.
        self.assertIsNone(self.xfcc_seen('FORWARD_ONLY', None))

    def test_hash_is_of_the_presented_certificate(self):
        v = self.xfcc_seen('SANITIZE_SET', PKI['backend'], sent=False)
        self.assertEqual(v, 'By=%s;Hash=%s;URI=%s' % (GATEWAY, PKI['backend'].sha256,
                                                     C.spiffe('default', 'backend')))


class FaultTest(unittest.TestCase):
    """Broken and hostile clients end only their own connection."""

    @classmethod
    def setUpClass(cls):
        cls.up = HttpUpstream(name='app')
        cls.tls_port, cls.plain_port, admin = h.free_ports(3)
        cfg = h.bootstrap([
            tls_listener('https', cls.tls_port, [hcm()],
                         C.downstream_tls(PKI['server'], ca=PKI['ca'])),
            h.listener('http', cls.plain_port, [hcm()])],
            [h.cluster('app', [cls.up.port])], admin_port=admin)
        cls.p = h.Petrel(cfg)
        cls.p.start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.p.close()
        finally:
            cls.up.close()

    def setUp(self):
        # A keep-alive mTLS connection open across each test: it must not notice anything.
        ctx = C.client_context(ca=PKI['ca'], cert=PKI['frontend'])
        self.good = h.HttpClientConn(self.tls_port, ssl_context=ctx,
                                     server_hostname='petrel.test')
        self.addCleanup(self.good.close)
        self.assertEqual(self.good.request('GET', '/before').status, 200)

    def tearDown(self):
        self.assertTrue(self.p.alive())
        self.assertEqual(self.good.request('GET', '/after').status, 200)
        self.assertEqual(tls_request(self.tls_port).status, 200)
        self.assertEqual(h.http_request(self.plain_port, 'GET', '/plain').status, 200)

    def errors(self):
        return self.p.stat(ssl_stat(self.tls_port, 'connection_error'), 0)

    def test_garbage_bytes(self):
        before = self.errors()
        for junk in (os.urandom(300), b'\x16\x03\x01\x00\x05hello' + os.urandom(64),
                     b'\x16\x03\x01\xff\xff' + b'\x01' * 100, b'\x00' * 4096):
            with socket.create_connection(('127.0.0.1', self.tls_port),
                                          timeout=h.scaled(5)) as s:
                s.sendall(junk)
                self.assertTrue(wait_closed(s), junk[:16])
        self.p.wait_stat(ssl_stat(self.tls_port, 'connection_error'), lambda v: v >= before + 3)

    def test_plaintext_http_to_tls_port(self):
        with socket.create_connection(('127.0.0.1', self.tls_port), timeout=h.scaled(5)) as s:
            s.sendall(b'GET /plaintext-probe HTTP/1.1\r\nHost: a\r\n\r\n')
            s.settimeout(h.scaled(5))
            data = b''
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            # Never an HTTP answer in the clear; at most a TLS alert record.
            self.assertFalse(data.startswith(b'HTTP/'), data[:80])
        self.assertEqual([r for r in self.up.requests if r['path'] == '/plaintext-probe'], [])

    def test_truncated_client_hello(self):
        hello = client_hello_bytes()
        self.assertGreater(len(hello), 100)
        held = []
        try:
            # Several half ClientHellos held open while other clients get served.
            for _ in range(3):
                s = socket.create_connection(('127.0.0.1', self.tls_port), timeout=h.scaled(5))
                held.append(s)
                s.sendall(hello[:len(hello) // 2])
            results = []

            def good(i):
                results.append(tls_request(self.tls_port, PKI['frontend'], path='/p%d' % i).status)
            threads = [threading.Thread(target=good, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(h.scaled(15))
            self.assertEqual(results, [200] * 4)
            self.assertEqual(self.good.request('GET', '/during').status, 200)
            # The rest never comes: the client's FIN ends the handshake and the connection.
            for s in held:
                s.shutdown(socket.SHUT_WR)
                self.assertTrue(wait_closed(s))
        finally:
            for s in held:
                s.close()

    def test_client_hello_then_reset(self):
        before = self.p.stat(listener_stat(self.tls_port, 'downstream_cx_destroy'), 0)
        hello = client_hello_bytes()
        n = 0
        for how in ('rst-after-hello', 'fin-after-hello', 'rst-half-hello', 'rst-immediately'):
            s = socket.create_connection(('127.0.0.1', self.tls_port), timeout=h.scaled(5))
            if how != 'rst-immediately':
                s.sendall(hello if 'half' not in how else hello[:40])
            if how == 'fin-after-hello':
                s.shutdown(socket.SHUT_WR)
                s.settimeout(h.scaled(2))
                try:
                    s.recv(65536)       # the ServerHello flight
                except OSError:
                    pass
                s.close()
            else:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             b'\x01\x00\x00\x00\x00\x00\x00\x00')
                s.close()
            n += 1
        self.p.wait_stat(listener_stat(self.tls_port, 'downstream_cx_destroy'),
                         lambda v: v is not None and v >= before + n)

    def test_client_disconnects_after_server_hello(self):
        # A client that reads the server's first flight and vanishes before finishing.
        ctx = C.client_context(ca=PKI['ca'])
        for _ in range(3):
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = ctx.wrap_bio(inc, out, server_hostname='petrel.test')
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            s = socket.create_connection(('127.0.0.1', self.tls_port), timeout=h.scaled(5))
            s.sendall(out.read())
            s.settimeout(h.scaled(5))
            self.assertTrue(s.recv(65536))
            s.close()

    def test_tls_to_plaintext_port(self):
        # A TLS client on the plaintext port: petrel's HTTP/1 codec waits for a request line
        # that never comes, so the client gives up; petrel must just survive it.
        ctx = C.client_context()
        with socket.create_connection(('127.0.0.1', self.plain_port), timeout=h.scaled(5)) as s:
            s.settimeout(h.scaled(1))
            with self.assertRaises((ssl.SSLError, OSError)):
                with ctx.wrap_socket(s, server_hostname='petrel.test') as t:
                    t.recv(1)

        def answer(data, fin):
            with socket.create_connection(('127.0.0.1', self.plain_port),
                                          timeout=h.scaled(5)) as s:
                s.sendall(data)
                if fin:
                    s.shutdown(socket.SHUT_WR)
                out = b''
                try:
                    while True:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        out += chunk
                except OSError:
                    pass
                return out
        # A ClientHello, then the client's FIN: an error answer or a close, never a crash.
        out = answer(client_hello_bytes(), fin=True)
        self.assertTrue(out == b'' or out.startswith(b'HTTP/1.1 400'), out[:80])
        # A ClientHello that happens to be followed by an empty line: a bad request line.
        out = answer(client_hello_bytes() + b'\r\n\r\n', fin=False)
        self.assertTrue(out == b'' or out.startswith(b'HTTP/1.1 400'), out[:80])


# ---------------------------------------------------------------------------------------------

def mapped_files(pid):
    """The file names in /proc/<pid>/maps (shared objects the process has mapped)."""
    with open('/proc/%d/maps' % pid) as f:
        return {os.path.basename(line.split()[5]) for line in f if len(line.split()) >= 6}


def maps_openssl(pid):
    return any(n.startswith(('libssl.so', 'libcrypto.so')) for n in mapped_files(pid))


class TlsModuleTest(unittest.TestCase):
    """OpenSSL lives in petrel-tls.so beside the binary, loaded only when a config uses TLS
    (tls/module.h). Without TLS nothing of it is mapped; with TLS and no usable module the
    config is refused with the reason."""

    def plain_config(self, port, admin, upstream):
        return h.bootstrap([h.listener('tcp', port, [h.tcp_proxy('tcp', 'up')])],
                           [h.cluster('up', [upstream])], admin_port=admin)

    def tls_config(self, port, admin, upstream):
        ln = tls_listener('https', port, [hcm()], C.downstream_tls(PKI['server']))
        return h.bootstrap([ln], [h.cluster('app', [upstream])], admin_port=admin)

    def lone_binary(self, module=None):
        """A copy of petrel alone in a temp dir; ``module`` (a path) is copied beside it."""
        d = tempfile.mkdtemp(prefix='petrel-mod-')
        self.addCleanup(shutil.rmtree, d, True)
        binary = os.path.join(d, 'petrel')
        shutil.copy2(h.PETREL_BIN, binary)
        if module is not None:
            shutil.copy2(module, os.path.join(d, 'petrel-tls.so'))
        return d, binary

    def test_plaintext_config_maps_no_openssl(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(self.plain_config(port, admin, echo.port)) as p:
                with h.tcp_connect(port) as s:
                    s.sendall(b'ping')
                    self.assertEqual(h.recv_exact(s, 4), b'ping')
                self.assertFalse(maps_openssl(p.pid), sorted(mapped_files(p.pid)))
                self.assertNotIn('petrel-tls.so', mapped_files(p.pid))
                # /certs answers (no certificates) without loading the module.
                status, _, body = p.admin_get('/certs')
                self.assertEqual(status, 200)
                self.assertEqual(json.loads(body), {'certificates': []})
                self.assertFalse(maps_openssl(p.pid))

    def test_tls_config_loads_the_module(self):
        up = HttpUpstream(name='app')
        self.addCleanup(up.close)
        port, admin = h.free_ports(2)
        with h.Petrel(self.tls_config(port, admin, up.port)) as p:
            self.assertIn('petrel-tls.so', mapped_files(p.pid))
            self.assertTrue(maps_openssl(p.pid))
            self.assertEqual(tls_request(port, path='/m').status, 200)

    def test_missing_module_refuses_a_tls_config_only(self):
        d, binary = self.lone_binary()
        port, admin = h.free_ports(2)
        files = tempfile.mkdtemp(prefix='petrel-mod-cfg-')
        self.addCleanup(shutil.rmtree, files, True)
        cfg = os.path.join(files, 'tls.json')
        with open(cfg, 'w') as f:
            json.dump(self.tls_config(port, admin, 9), f)
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', cfg], binary=binary)
        self.assertEqual(rc, 1, err)
        self.assertIn('static_resources.listeners[0].filter_chains[0].transport_socket: '
                      'TLS module: cannot load %s/petrel-tls.so: ' % d, err)
        # The same lone binary serves a plaintext config.
        with TcpEchoServer() as echo:
            with h.Petrel(self.plain_config(port, admin, echo.port), binary=binary):
                with h.tcp_connect(port) as s:
                    s.sendall(b'ping')
                    self.assertEqual(h.recv_exact(s, 4), b'ping')

    def test_foreign_module_is_refused(self):
        # A shared object that is not petrel's TLS module (no pt_tls_module table).
        work = tempfile.mkdtemp(prefix='petrel-mod-so-')
        self.addCleanup(shutil.rmtree, work, True)
        src, so = os.path.join(work, 'x.c'), os.path.join(work, 'x.so')
        with open(src, 'w') as f:
            f.write('int not_petrel_tls(void) { return 1; }\n')
        subprocess.run(['cc', '-shared', '-fPIC', '-o', so, src], check=True)
        d, binary = self.lone_binary(module=so)
        port, admin = h.free_ports(2)
        cfg = os.path.join(work, 'tls.json')
        with open(cfg, 'w') as f:
            json.dump(self.tls_config(port, admin, 9), f)
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', cfg], binary=binary)
        self.assertEqual(rc, 1, err)
        self.assertIn('TLS module: %s/petrel-tls.so has no pt_tls_module' % d, err)

if __name__ == '__main__':
    unittest.main()
