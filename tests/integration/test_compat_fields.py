"""Fields every mesh bootstrap carries, each with its effect, its bad value and its fault:
listener bypass_overload_manager, DirectResponseAction.body_format (and %LOCAL_REPLY_BODY%),
Http1ProtocolOptions.ignore_http_11_upgrade (and h2c upgrades, always ignored), the
%DOWNSTREAM_PEER_*% certificate operators in Envoy's formats.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_compat_fields.py -v
"""

import datetime
import hashlib
import json
import os
import ssl
import subprocess
import sys
import tempfile
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import certs as C  # noqa: E402
import harness as h  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer  # noqa: E402

STDOUT_LOG_TYPE = 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog'
MONITOR = {'resource_monitors': [{
    'name': 'envoy.resource_monitors.global_downstream_max_connections',
    'typed_config': {
        '@type': 'type.googleapis.com/envoy.extensions.resource_monitors.'
                 'downstream_connections.v3.DownstreamConnectionsConfig',
        'max_active_downstream_connections': 1}}]}


def stdout_log(fmt):
    lf = {'json_format': fmt} if isinstance(fmt, dict) else {
        'text_format_source': {'inline_string': fmt}}
    return {'name': 'envoy.access_loggers.stdout',
            'typed_config': {'@type': STDOUT_LOG_TYPE, 'log_format': lf}}


def validate(cfg):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, 'c.json')
        with open(path, 'w') as f:
            json.dump(cfg, f)
        return h.run_petrel(['--mode', 'validate', '-c', path])


def hcm_of(cfg, i=0):
    return cfg['static_resources']['listeners'][i]['filter_chains'][0]['filters'][0][
        'typed_config']


def listener_stat(port, name):
    return 'listener.127.0.0.1_%d.%s' % (port, name)


# ---- bypass_overload_manager ----------------------------------------------------------------

class BypassOverloadManagerTest(unittest.TestCase):

    def relay(self, port):
        s = h.tcp_connect(port)
        s.sendall(b'ping')
        self.assertEqual(h.recv_exact(s, 4), b'ping')
        return s

    def refused(self, port):
        with h.tcp_connect(port) as s:
            try:
                s.sendall(b'ping')
                return h.recv_until_eof(s) == b''
            except OSError:
                return True

    def config(self, echo_port, port, other, admin, **top):
        cfg = h.bootstrap([h.listener('tcp', port, [h.tcp_proxy('tcp', 'up')]),
                           h.listener('bypass', other, [h.tcp_proxy('bypass', 'up')],
                                      bypass_overload_manager=True)],
                          [h.cluster('up', [echo_port])], admin_port=admin)
        cfg.update(top)
        return cfg

    def test_bypass_listener_is_not_limited_by_the_overload_manager(self):
        with TcpEchoServer() as echo:
            port, other, admin = h.free_ports(3)
            with h.Petrel(self.config(echo.port, port, other, admin,
                                      overload_manager=MONITOR)) as p:
                held = [self.relay(port)]
                self.assertTrue(self.refused(port))  # the limit (1) is reached
                held += [self.relay(other) for _ in range(3)]  # the bypass listener still takes
                p.wait_stat(listener_stat(other, 'downstream_cx_active'), 3)
                self.assertEqual(p.stat(listener_stat(other, 'downstream_global_cx_overflow'),
                                        0), 0)
                # Its connections hold no place: closing them frees none.
                for s in held[1:]:
                    s.close()
                p.wait_stat(listener_stat(other, 'downstream_cx_active'), 0)
                self.assertTrue(self.refused(port))
                held[0].close()

    def test_runtime_limit_still_applies(self):
        # The runtime key is not the overload manager: Envoy applies it to every listener.
        rt = {'layers': [{'name': 'static', 'static_layer': {
            'overload.global_downstream_max_connections': 1}}]}
        with TcpEchoServer() as echo:
            port, other, admin = h.free_ports(3)
            with h.Petrel(self.config(echo.port, port, other, admin, layered_runtime=rt)) as p:
                held = self.relay(port)
                self.assertTrue(self.refused(other))
                p.wait_stat(listener_stat(other, 'downstream_global_cx_overflow'), 1)
                held.close()

    def test_bad_value(self):
        cfg = self.config(1, 2, 3, 4)
        cfg['static_resources']['listeners'][1]['bypass_overload_manager'] = 'yes'
        rc, _, err = validate(cfg)
        self.assertEqual(rc, 1)
        self.assertIn('static_resources.listeners[1].bypass_overload_manager: "yes" is not a '
                      'boolean', err)


# ---- direct_response body_format -----------------------------------------------------------

class DirectResponseBodyFormatTest(unittest.TestCase):

    def start(self, routes, up_port=None, log=None):
        port, admin = h.free_ports(2)
        extra = {'access_log': [stdout_log(log)]} if log else {}
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], routes)]), **extra)
        cfg = h.bootstrap([h.listener('http', port, [hcm])],
                          [h.cluster('a', [up_port or h.dead_port()])], admin_port=admin)
        p = h.Petrel(cfg)
        p.start()
        self.addCleanup(p.close)
        return p, port

    def test_text_and_json_formats(self):
        routes = [
            {'match': {'prefix': '/gone'}, 'direct_response': {
                'status': 410, 'body': {'inline_string': 'it went away'},
                'body_format': {'text_format': 'Error: %LOCAL_REPLY_BODY% (%REQ(:PATH)%)\n'}}},
            {'match': {'prefix': '/json'}, 'direct_response': {
                'status': 503, 'body': {'inline_string': 'maintenance'},
                'body_format': {'json_format': {'message': '%LOCAL_REPLY_BODY%',
                                                'path': '%REQ(:PATH)%', 'v': 1}}}},
            {'match': {'prefix': '/typed'}, 'direct_response': {
                'status': 403, 'body_format': {
                    'text_format': '{"denied":"%LOCAL_REPLY_BODY%"}',
                    'content_type': 'application/problem+json'}}},
            {'match': {'prefix': '/plain'}, 'direct_response': {
                'status': 200, 'body': {'inline_string': 'as is'}}},
        ]
        p, port = self.start(routes)
        r = h.http_request(port, 'GET', '/gone/x')
        self.assertEqual((r.status, r.body), (410, b'Error: it went away (/gone/x)\n'))
        self.assertEqual(r.get('content-type'), 'text/plain')
        r = h.http_request(port, 'GET', '/json?q=1')
        self.assertEqual(r.status, 503)
        self.assertEqual(r.get('content-type'), 'application/json')
        self.assertEqual(json.loads(r.body), {'message': 'maintenance', 'path': '/json?q=1',
                                              'v': 1})
        r = h.http_request(port, 'GET', '/typed')
        self.assertEqual((r.status, r.body), (403, b'{"denied":""}'))  # no body: ""
        self.assertEqual(r.get('content-type'), 'application/problem+json')
        r = h.http_request(port, 'GET', '/plain')
        self.assertEqual(r.body, b'as is')  # without body_format: the body itself

    def test_local_reply_body_in_access_log_on_upstream_failure(self):
        # Fault: the upstream is down; the 503's body is what %LOCAL_REPLY_BODY% logs.
        p, port = self.start([h.route_prefix('/', 'a')], log='LRB %RESPONSE_CODE% '
                                                             '%LOCAL_REPLY_BODY%\n')
        r = h.http_request(port, 'GET', '/x')
        self.assertEqual(r.status, 503)
        h.wait_until(lambda: 'LRB ' in p.stdout())
        line = [x for x in p.stdout().splitlines() if x.startswith('LRB ')][0]
        self.assertEqual(line, 'LRB 503 ' + r.body.decode())
        self.assertTrue(r.body.startswith(b'upstream connect error'))

    def test_bad_format(self):
        port = h.free_port()
        hcm = h.http_connection_manager('ingress', h.route_config([h.vhost('all', ['*'], [
            {'match': {'prefix': '/'}, 'direct_response': {
                'status': 200, 'body_format': {'text_format': '%NOPE%'}}}])]))
        rc, _, err = validate(h.bootstrap([h.listener('http', port, [hcm])], []))
        self.assertEqual(rc, 1)
        self.assertIn('virtual_hosts[0].routes[0].direct_response.body_format.text_format: '
                      'unknown command operator "%NOPE%"', err)


# ---- ignore_http_11_upgrade -----------------------------------------------------------------

class IgnoreHttp11UpgradeTest(unittest.TestCase):

    def start(self, **hpo):
        up = HttpUpstream(name='a')
        self.addCleanup(up.close)
        port, admin = h.free_ports(2)
        extra = {'http_protocol_options': hpo} if hpo else {}
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], [h.route_prefix('/', 'a')])]), **extra)
        cfg = h.bootstrap([h.listener('http', port, [hcm])], [h.cluster('a', [up.port])],
                          admin_port=admin)
        p = h.Petrel(cfg)
        p.start()
        self.addCleanup(p.close)
        return port, up

    def send(self, port, upgrade, extra=b''):
        with h.HttpClientConn(port) as c:
            c.send_raw(b'GET /x HTTP/1.1\r\nHost: a\r\nUpgrade: ' + upgrade +
                       b'\r\nConnection: Upgrade\r\n' + extra + b'\r\n')
            return c.read_response()

    def test_matching_upgrade_is_ignored(self):
        # Istio's case: a client that sends "Upgrade: TLS/1.2" on a plaintext request.
        port, up = self.start(ignore_http_11_upgrade=[{'exact': 'TLS/1.2'},
                                                      {'prefix': 'foo', 'ignore_case': True}])
        self.assertEqual(self.send(port, b'TLS/1.2').status, 200)
        self.assertEqual(self.send(port, b'FOOBAR').status, 200)
        for req in up.requests:
            names = {k.lower() for k, _ in req['headers']} if isinstance(
                req['headers'], list) else {k.lower() for k in req['headers']}
            self.assertNotIn('upgrade', names)
        self.assertEqual(self.send(port, b'websocket').status, 403)  # not matched: refused

    def test_without_the_option_the_upgrade_is_refused(self):
        port, up = self.start()
        self.assertEqual(self.send(port, b'TLS/1.2').status, 403)
        self.assertEqual(up.requests, [])

    def test_h2c_upgrade_always_ignored(self):
        port, up = self.start()
        r = self.send(port, b'h2c', b'HTTP2-Settings: AAMAAABkAAQAAP__\r\n')
        self.assertEqual(r.status, 200)
        req = up.requests[-1]
        hdrs = req['headers']
        names = {k.lower() for k, _ in hdrs} if isinstance(hdrs, list) else \
            {k.lower() for k in hdrs}
        self.assertNotIn('upgrade', names)
        self.assertNotIn('http2-settings', names)

    def test_bad_matcher(self):
        port = h.free_port()
        hcm = h.http_connection_manager('ingress', h.route_config([h.vhost('all', ['*'], [
            h.route_prefix('/', 'a')])]), http_protocol_options={
                'ignore_http_11_upgrade': [{'exact': 'a', 'prefix': 'b'}]})
        rc, _, err = validate(h.bootstrap([h.listener('http', port, [hcm])],
                                          [h.cluster('a', [1])]))
        self.assertEqual(rc, 1)
        self.assertIn('http_protocol_options.ignore_http_11_upgrade[0]: only one of', err)


# ---- %DOWNSTREAM_PEER_*% ------------------------------------------------------------------

PEER_LOG = {
    'issuer': '%DOWNSTREAM_PEER_ISSUER%',
    'subject': '%DOWNSTREAM_PEER_SUBJECT%',
    'fp256': '%DOWNSTREAM_PEER_FINGERPRINT_256%',
    'fp1': '%DOWNSTREAM_PEER_FINGERPRINT_1%',
    'serial': '%DOWNSTREAM_PEER_SERIAL%',
    'cert': '%DOWNSTREAM_PEER_CERT%',
    'vstart': '%DOWNSTREAM_PEER_CERT_V_START%',
    'vend': '%DOWNSTREAM_PEER_CERT_V_END(%Y/%m/%d %s)%',
    'dns': '%DOWNSTREAM_PEER_DNS_SAN%',
}


def der_of(pem):
    return ssl.PEM_cert_to_DER_cert(pem)


def rfc2253(path, which):
    out = subprocess.run([C.OPENSSL, 'x509', '-in', path, '-noout', which, '-nameopt',
                          'RFC2253'], capture_output=True, text=True, check=True).stdout
    return out.strip().split('=', 1)[1]


def cert_dates(path):
    out = subprocess.run([C.OPENSSL, 'x509', '-in', path, '-noout', '-startdate', '-enddate'],
                         capture_output=True, text=True, check=True).stdout
    d = dict(line.split('=', 1) for line in out.strip().splitlines())
    fmt = '%b %d %H:%M:%S %Y %Z'
    return (datetime.datetime.strptime(' '.join(d['notBefore'].split()), fmt),
            datetime.datetime.strptime(' '.join(d['notAfter'].split()), fmt))


class DownstreamPeerOperatorsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.pki = C.standard_pki()

    def start(self, log, tcp=False):
        pki = self.pki
        port, admin = h.free_ports(2)
        if tcp:
            self.echo = TcpEchoServer()
            self.addCleanup(self.echo.close)
            flt = h.tcp_proxy('tcp', 'a', access_log=[stdout_log(log)])
            cl = h.cluster('a', [self.echo.port])
        else:
            self.up = HttpUpstream(name='a')
            self.addCleanup(self.up.close)
            flt = h.http_connection_manager('ingress', h.route_config([
                h.vhost('all', ['*'], [h.route_prefix('/', 'a')])]),
                access_log=[stdout_log(log)])
            cl = h.cluster('a', [self.up.port])
        lst = h.listener('tls', port, [flt])
        lst['filter_chains'][0]['transport_socket'] = C.downstream_tls(
            pki['server'], ca=pki['ca'], require_client=False)
        p = h.Petrel(h.bootstrap([lst], [cl], admin_port=admin))
        p.start()
        self.addCleanup(p.close)
        return p, port

    def lines(self, p, n):
        def get():
            return [json.loads(x) for x in p.stdout().splitlines() if x.startswith('{')]
        h.wait_until(lambda: len(get()) >= n)
        return get()

    def test_http_with_client_certificate(self):
        pki = self.pki
        client = pki['frontend']
        p, port = self.start(PEER_LOG)
        ctx = C.client_context(ca=pki['ca'], cert=client)
        self.assertEqual(h.http_request(port, 'GET', '/', ssl_context=ctx,
                                        server_hostname='localhost').status, 200)
        line = self.lines(p, 1)[0]
        der = der_of(client.pem)
        self.assertEqual(line['fp256'], hashlib.sha256(der).hexdigest())
        self.assertEqual(line['fp1'], hashlib.sha1(der).hexdigest())
        # Envoy prints the serial as BN_bn2hex does, lower-cased: whole bytes, so a leading
        # 0 digit stays ("0b2e..."); `openssl x509 -serial` may add a 00 byte in front of a
        # serial whose top bit is set (the DER sign byte), which BN_bn2hex does not print.
        want = client.serial.lower()
        while want.startswith('00') and len(want) > 2:
            want = want[2:]
        self.assertEqual(line['serial'], want)
        self.assertEqual(line['issuer'], rfc2253(client.cert, '-issuer'))
        self.assertEqual(line['subject'], rfc2253(client.cert, '-subject'))
        self.assertEqual(urllib.parse.unquote(line['cert']), client.pem)
        self.assertNotIn('\n', line['cert'])
        self.assertEqual(line['dns'], 'frontend.test')
        nb, na = cert_dates(client.cert)
        self.assertEqual(line['vstart'], nb.strftime('%Y-%m-%dT%H:%M:%S.000Z'))
        na_epoch = int(na.replace(tzinfo=datetime.timezone.utc).timestamp())
        self.assertEqual(line['vend'], na.strftime('%Y/%m/%d ') + str(na_epoch))

    def test_no_client_certificate(self):
        pki = self.pki
        p, port = self.start(PEER_LOG)
        ctx = C.client_context(ca=pki['ca'])
        self.assertEqual(h.http_request(port, 'GET', '/', ssl_context=ctx,
                                        server_hostname='localhost').status, 200)
        line = self.lines(p, 1)[0]
        for k in PEER_LOG:
            self.assertIsNone(line[k], k)

    def test_tcp_proxy(self):
        pki = self.pki
        client = pki['backend']
        p, port = self.start({'fp256': '%DOWNSTREAM_PEER_FINGERPRINT_256%',
                              'dns': '%DOWNSTREAM_PEER_DNS_SAN%'}, tcp=True)
        ctx = C.client_context(ca=pki['ca'], cert=client)
        with h.tcp_connect(port, ssl_context=ctx, server_hostname='localhost') as s:
            s.sendall(b'ping')
            self.assertEqual(h.recv_exact(s, 4), b'ping')
        line = self.lines(p, 1)[0]
        self.assertEqual(line['fp256'], hashlib.sha256(der_of(client.pem)).hexdigest())
        self.assertEqual(line['dns'], 'backend.test')

    def test_bad_operator(self):
        port = h.free_port()
        hcm = h.http_connection_manager('ingress', h.route_config([h.vhost('all', ['*'], [
            h.route_prefix('/', 'a')])]), access_log=[stdout_log('%DOWNSTREAM_PEER_SERIAL(x)%')])
        rc, _, err = validate(h.bootstrap([h.listener('http', port, [hcm])],
                                          [h.cluster('a', [1])]))
        self.assertEqual(rc, 1)
        self.assertIn('%DOWNSTREAM_PEER_SERIAL% takes no parameter', err)


# ---- an RSA + ECDSA certificate pair on one context -------------------------------------------

def rsa_cert(pki, name, dns):
    """An RSA-2048 leaf for `dns`, signed by the standard test CA (certs.py makes ECDSA ones)."""
    ca = pki['ca']
    key, csr, crt, ext = (pki.path(name + s) for s in ('.key', '.csr', '.crt', '.ext'))
    with open(ext, 'w') as f:
        f.write('subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' % dns)
    subprocess.run([C.OPENSSL, 'req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', key,
                    '-out', csr, '-subj', '/O=petrel-test/CN=%s' % name], check=True,
                   capture_output=True)
    subprocess.run([C.OPENSSL, 'x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key,
                    '-CAcreateserial', '-out', crt, '-days', '30', '-sha256', '-extfile', ext],
                   check=True, capture_output=True)
    return C.Cert(name, crt, key, ca)


class CertificatePairTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.pki = C.standard_pki()
        cls.rsa = rsa_cert(cls.pki, 'pair-rsa', 'localhost')

    def config(self, certs, port, admin, echo_port):
        lst = h.listener('tls', port, [h.tcp_proxy('tcp', 'a')])
        ts = C.downstream_tls()
        ts['typed_config']['common_tls_context'] = {
            'tls_certificates': [C.tls_certificate(c) for c in certs]}
        lst['filter_chains'][0]['transport_socket'] = ts
        return h.bootstrap([lst], [h.cluster('a', [echo_port])], admin_port=admin)

    def served_key(self, port, *args):
        """The server certificate's key type as `openssl s_client` sees it: "RSA" or "EC"."""
        r = subprocess.run([C.OPENSSL, 's_client', '-connect', '127.0.0.1:%d' % port,
                            '-servername', 'localhost'] + list(args),
                           input='', capture_output=True, text=True, timeout=h.scaled(10))
        pem = r.stdout[r.stdout.find('-----BEGIN CERTIFICATE-----'):
                       r.stdout.find('-----END CERTIFICATE-----') + 25]
        if not pem.startswith('-----BEGIN'):
            return None
        out = subprocess.run([C.OPENSSL, 'x509', '-noout', '-text'], input=pem,
                             capture_output=True, text=True).stdout
        return 'RSA' if 'rsaEncryption' in out else 'EC' if 'id-ecPublicKey' in out else '?'

    def test_chosen_by_signature_algorithms_and_ciphers(self):
        ec = self.pki['server']
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            with h.Petrel(self.config([self.rsa, ec], port, admin, echo.port)) as p:
                # TLS 1.3: the signature algorithms decide.
                self.assertEqual(self.served_key(port, '-tls1_3', '-sigalgs',
                                                 'ECDSA+SHA256'), 'EC')
                self.assertEqual(self.served_key(port, '-tls1_3', '-sigalgs',
                                                 'rsa_pss_rsae_sha256'), 'RSA')
                # TLS 1.2: the cipher suite's authentication decides.
                self.assertEqual(self.served_key(port, '-tls1_2', '-cipher',
                                                 'ECDHE-ECDSA-AES128-GCM-SHA256'), 'EC')
                self.assertEqual(self.served_key(port, '-tls1_2', '-cipher',
                                                 'ECDHE-RSA-AES128-GCM-SHA256'), 'RSA')
                # /certs lists both.
                certs = json.loads(p.admin_get('/certs')[2])['certificates']
                self.assertEqual(len(certs[0]['cert_chain']), 2)
                # A client that allows neither: the handshake fails, petrel goes on.
                self.assertIsNone(self.served_key(port, '-tls1_3', '-sigalgs', 'ed25519'))
                self.assertEqual(self.served_key(port, '-tls1_3'), 'EC')

    def test_bad_pairs(self):
        ec = self.pki['server']
        for certs, err in [
                ([ec, self.pki['server2']], 'tls_certificates: both certificates have ECDSA '
                                            'keys; a second certificate must be of the other '
                                            'key type (one RSA and one ECDSA)'),
                ([self.rsa, ec, self.pki['server2']], 'common_tls_context.tls_certificates: at '
                                                      'most two certificates are supported (one '
                                                      'RSA and one ECDSA)')]:
            rc, _, out = validate(self.config(certs, 1, 2, 3))
            self.assertEqual(rc, 1, out)
            self.assertIn(err, out)


# ---- application_log_config ------------------------------------------------------------------

class ApplicationLogConfigTest(unittest.TestCase):

    def start(self, log_format, log_level='info'):
        up = HttpUpstream(name='a')
        self.addCleanup(up.close)
        port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], [h.route_prefix('/', 'a')])]))
        cfg = h.bootstrap([h.listener('http', port, [hcm])], [h.cluster('a', [up.port])],
                          admin_port=admin, application_log_config={'log_format': log_format})
        p = h.Petrel(cfg, log_level=log_level)
        p.start()
        self.addCleanup(p.close)
        return p, port

    def test_json_format(self):
        # Istio's bootstrap shape.
        p, port = self.start({'json_format': {
            'level': '%l', 'time': '%Y-%m-%dT%T.%eZ', 'scope': 'envoy %n', 'msg': '%j',
            'thread': '%t'}})
        h.wait_until(lambda: 'started' in p.log())
        lines = [json.loads(x) for x in p.log().splitlines() if x.strip()]
        started = [x for x in lines if 'started' in x['msg']]
        self.assertEqual(len(started), 1)
        self.assertEqual(started[0]['level'], 'info')
        self.assertEqual(started[0]['scope'], 'envoy main')
        self.assertEqual(started[0]['thread'], 'main')
        datetime.datetime.strptime(started[0]['time'], '%Y-%m-%dT%H:%M:%S.%fZ')

    def test_text_format(self):
        p, port = self.start({'text_format': '%L|%t|%l|%v'})
        h.wait_until(lambda: 'started' in p.log())
        line = [x for x in p.log().splitlines() if 'started' in x][0]
        self.assertTrue(line.startswith('i|main|info|petrel '), line)

    def test_bad_formats(self):
        for lf, err in [
                ({'text_format': '%Q'}, 'application_log_config.log_format.text_format: "%Q": '
                                        'flag "%Q" is not supported'),
                ({'json_format': {'m': '%v'}}, 'application_log_config.log_format.json_format: '
                                               '"%v": usage of %v is unavailable for JSON log '
                                               'formats (use %j)'),
                ({'json_format': {'m': 3}}, 'application_log_config.log_format.json_format: '
                                            '"m": must be a string (a log pattern)'),
                ({}, 'application_log_config.log_format: one of json_format or text_format is '
                     'required'),
                ({'text_format': 'a', 'json_format': {}}, 'application_log_config.log_format: '
                                                          'only one of')]:
            cfg = h.bootstrap([], [], application_log_config={'log_format': lf})
            rc, _, out = validate(cfg)
            self.assertEqual(rc, 1, lf)
            self.assertIn(err, out, lf)


if __name__ == '__main__':
    unittest.main()
