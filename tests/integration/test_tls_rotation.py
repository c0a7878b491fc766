"""Certificate rotation without a restart: SDS secrets from files (sds_config.path_config_source)
holding a DiscoveryResponse of envoy.extensions.transport_sockets.tls.v3.Secret resources.

Covered: a new serial served after an atomic rename of the secret file (JSON and YAML); after a
Kubernetes-style symlink swap of a mounted secret directory (..data -> ..ts1 swapped to ..ts2),
both for the secret file itself and for certificate files it names; established keep-alive
connections keep working across a rotation; bad updates keep the old certificate and are
counted as Envoy counts a subscription's updates (the initial read is the first
update_success; an unparsable or deleted file is an update_failure; key mismatch, expired,
missing secret, wrong type are update_rejected; a bad rotation of the files a secret names is
key_rotation_failed), each change counted once (update_attempt), version_text following the
file's version_info; /certs shows serials, SANs and days_until_expiration and follows
rotations; rotating the trusted CA (validation_context_sds_secret_config); a secret that cannot
be loaded at start-up is a config error.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_tls_rotation.py -v
"""

import json
import os
import re
import shutil
import ssl
import sys
import tempfile
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import certs as C  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

PKI = None


def setUpModule():
    global PKI
    PKI = C.standard_pki()


def atomic_write(path, text):
    """Write a temp file next to ``path`` and rename it over ``path`` (one inotify move)."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.rename(tmp, path)


class K8sSecretDir:
    """A directory laid out like a Kubernetes secret volume:

        dir/..ts<N>/<files>      the real files of version N
        dir/..data -> ..ts<N>    the current version
        dir/<name> -> ..data/<name>

    ``swap(files)`` writes version N+1 and atomically renames a new ``..data_tmp`` symlink
    over ``..data``, exactly as the kubelet's atomic writer does."""

    def __init__(self, root, files):
        self.dir = os.path.join(root, 'secret-volume')
        os.makedirs(self.dir)
        self.version = 0
        self._write_version(files)
        os.symlink('..ts1', os.path.join(self.dir, '..data'))
        for name in files:
            os.symlink(os.path.join('..data', name), os.path.join(self.dir, name))

    def _write_version(self, files):
        self.version += 1
        d = os.path.join(self.dir, '..ts%d' % self.version)
        os.makedirs(d)
        for name, text in files.items():
            with open(os.path.join(d, name), 'w') as f:
                f.write(text)
        return d

    def path(self, name):
        return os.path.join(self.dir, name)

    def swap(self, files):
        old = os.readlink(os.path.join(self.dir, '..data'))
        self._write_version(files)
        tmp = os.path.join(self.dir, '..data_tmp')
        os.symlink('..ts%d' % self.version, tmp)
        os.rename(tmp, os.path.join(self.dir, '..data'))
        shutil.rmtree(os.path.join(self.dir, old))


def served_serial(port, server_hostname='petrel.test', cert=None):
    """Serial of the certificate a new TLS connection to ``port`` is served."""
    ctx = C.client_context(ca=PKI['ca'], cert=cert)
    with h.tcp_connect(port, ssl_context=ctx, server_hostname=server_hostname) as s:
        return C.peer_cert_serial(s)


class RotationCase(unittest.TestCase):

    def setUp(self):
        self.up = HttpUpstream(name='app')
        self.addCleanup(self.up.close)
        self.dir = tempfile.mkdtemp(prefix='petrel-sds-')
        self.addCleanup(shutil.rmtree, self.dir, True)

    def start(self, tls_typed_extra=None, common=None, require_client=False):
        """An HTTPS listener whose DownstreamTlsContext's common_tls_context is ``common``."""
        self.port, admin = h.free_ports(2)
        tc = {'@type': C.DOWNSTREAM_TLS, 'common_tls_context': common}
        if require_client:
            tc['require_client_certificate'] = True
        tc.update(tls_typed_extra or {})
        ln = h.listener('https', self.port, [h.http_connection_manager(
            'ingress', h.route_config([h.vhost('all', ['*'], [h.route_prefix('/', 'app')])]))])
        ln['filter_chains'][0]['transport_socket'] = {'name': 'envoy.transport_sockets.tls',
                                                      'typed_config': tc}
        self.p = h.Petrel(h.bootstrap([ln], [h.cluster('app', [self.up.port])],
                                      admin_port=admin))
        self.p.start()
        self.addCleanup(self.p.close)
        return self.p

    def wait_serial(self, serial, **kw):
        return h.wait_until(lambda: served_serial(self.port, **kw) == serial, 10,
                            message='serial %s never served' % serial)

    def text_stat(self, name):
        """A text readout from ``GET /stats`` (``name: "value"``), or None when absent."""
        status, _, body = self.p.admin_get(
            '/stats?filter=' + urllib.parse.quote('^%s$' % re.escape(name)))
        self.assertEqual(status, 200)
        for line in body.decode().splitlines():
            key, _, value = line.partition(': ')
            if key == name:
                return json.loads(value)
        return None

    def sds_counts(self, secret):
        """The subscription counters of one secret, as a dict."""
        st = self.p.stats()
        return {k: st.get('sds.%s.%s' % (secret, k)) for k in (
            'update_attempt', 'update_success', 'update_failure', 'update_rejected',
            'key_rotation_failed')}

    def certs_json(self):
        status, _, body = self.p.admin_get('/certs')
        self.assertEqual(status, 200)
        return json.loads(body)

    def cert_entries(self):
        """[(kind, entry)] for every certificate /certs lists (kind cert_chain or ca_cert)."""
        out = []
        for c in self.certs_json()['certificates']:
            for kind in ('cert_chain', 'ca_cert'):
                out.extend((kind, e) for e in c.get(kind) or [])
        return out


class CertRotationTest(RotationCase):

    def secret_file(self, cert, name='sds.json', secret='server_cert', version='1'):
        path = os.path.join(self.dir, name)
        text = C.discovery_response(C.secret_tls(secret, cert), version=version)
        if name.endswith('.yaml'):
            text = h.to_yaml(json.loads(text))
        atomic_write(path, text)
        return path

    def start_sds(self, path, secret='server_cert'):
        return self.start(common={'tls_certificate_sds_secret_configs': [
            C.sds_ref(secret, path)]})

    def test_atomic_rename_rotation(self):
        path = self.secret_file(PKI['server'], version='v1')
        p = self.start_sds(path)
        self.assertEqual(served_serial(self.port), PKI['server'].serial)
        self.assertEqual(h.http_request(self.port, 'GET', '/', ssl_context=C.client_context(
            ca=PKI['ca']), server_hostname='petrel.test').status, 200)
        # The initial read is the subscription's first update, as in Envoy.
        self.assertEqual(self.sds_counts('server_cert'), {
            'update_attempt': 1, 'update_success': 1, 'update_failure': 0,
            'update_rejected': 0, 'key_rotation_failed': 0})
        self.assertEqual(self.text_stat('sds.server_cert.version_text'), 'v1')
        self.secret_file(PKI['server2'], version='v2')
        self.wait_serial(PKI['server2'].serial)
        p.wait_stat('sds.server_cert.update_success', 2)
        self.assertEqual(self.text_stat('sds.server_cert.version_text'), 'v2')
        # And back again.
        self.secret_file(PKI['server'], version='v3')
        self.wait_serial(PKI['server'].serial)
        p.wait_stat('sds.server_cert.update_success', 3)
        p.wait_log(r'secret "server_cert" updated')
        # Each rename was one update: the temporary file's events are not the secret's.
        self.assertEqual(self.sds_counts('server_cert'), {
            'update_attempt': 3, 'update_success': 3, 'update_failure': 0,
            'update_rejected': 0, 'key_rotation_failed': 0})
        self.assertEqual(self.text_stat('sds.server_cert.version_text'), 'v3')

    def test_yaml_secret_file(self):
        path = self.secret_file(PKI['server'], name='sds.yaml')
        self.start_sds(path)
        self.assertEqual(served_serial(self.port), PKI['server'].serial)
        self.secret_file(PKI['server2'], name='sds.yaml')
        self.wait_serial(PKI['server2'].serial)

    def test_established_connection_survives_rotation(self):
        path = self.secret_file(PKI['server'])
        self.start_sds(path)
        ctx = C.client_context(ca=PKI['ca'])
        with h.HttpClientConn(self.port, ssl_context=ctx, server_hostname='petrel.test') as c:
            self.assertEqual(c.request('GET', '/before').status, 200)
            self.assertEqual(C.peer_cert_serial(c.sock), PKI['server'].serial)
            self.secret_file(PKI['server2'])
            self.wait_serial(PKI['server2'].serial)
            for i in range(3):
                self.assertEqual(c.request('GET', '/after%d' % i).status, 200)
            self.assertEqual(C.peer_cert_serial(c.sock), PKI['server'].serial)
        ids = {r['conn_id'] for r in self.up.requests if r['path'].startswith(('/before',
                                                                                '/after'))}
        self.assertEqual(len(self.up.requests), 4)
        self.assertTrue(ids)

    def test_sessions_do_not_outlive_the_certificate(self):
        # A session belongs to the material it was made with (as in Envoy, whose session ID
        # context hashes the certificates): after a rotation, a client offering an old
        # session gets a full handshake and the new certificate.
        path = self.secret_file(PKI['server'])
        p = self.start_sds(path)
        ctx = C.client_context(ca=PKI['ca'], maximum=ssl.TLSVersion.TLSv1_2)
        with h.tcp_connect(self.port, ssl_context=ctx, server_hostname='petrel.test') as s:
            session = s.session
        with h.tcp_connect(self.port) as raw:
            s = ctx.wrap_socket(raw, server_hostname='petrel.test', session=session)
            self.assertTrue(s.session_reused)
            s.close()
        self.secret_file(PKI['server2'])
        self.wait_serial(PKI['server2'].serial)
        raw = h.tcp_connect(self.port)
        s = ctx.wrap_socket(raw, server_hostname='petrel.test', session=session)
        try:
            self.assertFalse(s.session_reused)
            self.assertEqual(C.peer_cert_serial(s), PKI['server2'].serial)
        finally:
            s.close()
        self.assertEqual(p.stat('listener.127.0.0.1_%d.ssl.session_reused' % self.port), 1)

    def test_bad_updates_are_rejected(self):
        path = self.secret_file(PKI['server'])
        p = self.start_sds(path)
        # (why, file text, counter): a file that cannot be parsed is no update received
        # (update_failure); one received and invalid is update_rejected.
        bad = [
            ('unparsable', '{"resources": [ {"@type": ', 'update_failure'),
            ('key mismatch', C.discovery_response(C.secret_tls(
                'server_cert', cert_pem=PKI['server2'].pem, key_pem=PKI['server'].key_pem)),
             'update_rejected'),
            ('expired', C.discovery_response(C.secret_tls('server_cert', PKI['expired'])),
             'update_rejected'),
            ('not yet valid', C.discovery_response(C.secret_tls('server_cert',
                                                                PKI['not_yet_valid'])),
             'update_rejected'),
            ('not a certificate', C.discovery_response(C.secret_tls(
                'server_cert', cert_pem='-----BEGIN CERTIFICATE-----\nAAAA\n'
                '-----END CERTIFICATE-----\n', key_pem=PKI['server'].key_pem)),
             'update_rejected'),
            ('secret missing', C.discovery_response(C.secret_tls('other_name', PKI['server2'])),
             'update_rejected'),
            ('wrong type', C.discovery_response(C.secret_ca('server_cert', PKI['ca'])),
             'update_rejected'),
            ('not a Secret', C.discovery_response(dict(C.secret_tls('server_cert',
                                                                     PKI['server2']),
                                                       **{'@type': C.DOWNSTREAM_TLS})),
             'update_rejected'),
        ]
        want = {'update_failure': 0, 'update_rejected': 0}
        for why, text, counter in bad:
            atomic_write(path, text)
            want[counter] += 1
            p.wait_stat('sds.server_cert.' + counter, want[counter])
            self.assertEqual(served_serial(self.port), PKI['server'].serial, why)
        p.wait_log(r'cannot read update of secret "server_cert": .*sds.json: line 1 column')
        p.wait_log(r'rejected update of secret "server_cert": .*sds.json: '
                   r'resources\[0\].tls_certificate: .*; keeping the current one')
        p.wait_log(r'rejected update of secret "server_cert": .*sds.json: '
                   r'no secret named "server_cert"')
        p.wait_log(r'rejected update of secret "server_cert": .*sds.json: resources\[0\].@type: '
                   r'is type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.'
                   r'DownstreamTlsContext, expected type.googleapis.com/envoy.extensions.'
                   r'transport_sockets.tls.v3.Secret')
        self.assertEqual(self.sds_counts('server_cert'), {
            'update_attempt': 1 + len(bad), 'update_success': 1, 'update_failure': 1,
            'update_rejected': len(bad) - 1, 'key_rotation_failed': 0})
        # A good update after all that is taken.
        self.secret_file(PKI['server2'])
        self.wait_serial(PKI['server2'].serial)
        p.wait_stat('sds.server_cert.update_success', 2)

    def test_deleted_secret_file_keeps_the_certificate(self):
        path = self.secret_file(PKI['server'])
        p = self.start_sds(path)
        os.unlink(path)
        # Envoy's update_failure: nothing could be read.
        p.wait_stat('sds.server_cert.update_failure', 1)
        p.wait_log(r'cannot read update of secret "server_cert": .*sds.json: No such file')
        self.assertEqual(served_serial(self.port), PKI['server'].serial)
        self.secret_file(PKI['server2'])
        self.wait_serial(PKI['server2'].serial)
        p.wait_stat('sds.server_cert.update_success', 2)
        self.assertEqual(p.stat('sds.server_cert.update_rejected'), 0)

    def test_certs_endpoint_follows_rotation(self):
        path = self.secret_file(PKI['server'])
        self.start_sds(path)

        def listed():
            return [e for kind, e in self.cert_entries() if kind == 'cert_chain']
        entries = listed()
        self.assertEqual(len(entries), 1, entries)
        e = entries[0]
        self.assertEqual(e['serial_number'].upper(), PKI['server'].serial)
        sans = e['subject_alt_names']
        self.assertIn({'uri': C.spiffe('default', 'gateway')}, sans)
        for d in C.SERVER_DNS:
            self.assertIn({'dns': d}, sans)
        self.assertIn(int(e['days_until_expiration']), (363, 364, 365))
        self.assertIn('server_cert', e['path'])
        self.secret_file(PKI['server2'])
        h.wait_until(lambda: [x['serial_number'].upper() for x in listed()] ==
                     [PKI['server2'].serial], 10)


class K8sSymlinkSwapTest(RotationCase):

    def test_secret_file_in_swapped_volume(self):
        # The DiscoveryResponse itself is a projected file: dir/sds.json -> ..data/sds.json.
        vol = K8sSecretDir(self.dir, {'sds.json': C.discovery_response(
            C.secret_tls('server_cert', PKI['server']))})
        p = self.start(common={'tls_certificate_sds_secret_configs': [
            C.sds_ref('server_cert', vol.path('sds.json'))]})
        self.assertEqual(served_serial(self.port), PKI['server'].serial)
        vol.swap({'sds.json': C.discovery_response(C.secret_tls('server_cert',
                                                                 PKI['server2']))})
        self.wait_serial(PKI['server2'].serial)
        p.wait_stat('sds.server_cert.update_success', 2)
        vol.swap({'sds.json': C.discovery_response(C.secret_tls('server_cert',
                                                                 PKI['server']))})
        self.wait_serial(PKI['server'].serial)
        p.wait_stat('sds.server_cert.update_success', 3)
        # One update per swap, though each swap is several directory events.
        self.assertEqual(p.stat('sds.server_cert.update_attempt'), 3)

    def test_certificate_files_in_swapped_volume(self):
        # The secret names tls.crt / tls.key files of a mounted volume; the secret file does
        # not change, the files behind it do (watched_directory is the volume).
        vol = K8sSecretDir(self.dir, {'tls.crt': PKI['server'].pem,
                                      'tls.key': PKI['server'].key_pem})
        sds = os.path.join(self.dir, 'sds.json')
        atomic_write(sds, C.discovery_response(C.secret_tls(
            'server_cert', cert_path=vol.path('tls.crt'), key_path=vol.path('tls.key'))))
        p = self.start(common={'tls_certificate_sds_secret_configs': [
            C.sds_ref('server_cert', sds, watched_directory=vol.dir)]})
        ctx = C.client_context(ca=PKI['ca'])
        with h.HttpClientConn(self.port, ssl_context=ctx, server_hostname='petrel.test') as c:
            self.assertEqual(c.request('GET', '/one').status, 200)
            self.assertEqual(served_serial(self.port), PKI['server'].serial)
            vol.swap({'tls.crt': PKI['server2'].pem, 'tls.key': PKI['server2'].key_pem})
            self.wait_serial(PKI['server2'].serial)
            self.assertEqual(c.request('GET', '/two').status, 200)
        p.wait_log(r'secret "server_cert" updated from .*tls\.(crt|key)')
        # A swap to a mismatched pair is refused as a whole.
        vol.swap({'tls.crt': PKI['server'].pem, 'tls.key': PKI['server2'].key_pem})
        p.wait_stat('sds.server_cert.key_rotation_failed', 1)
        p.wait_log(r'rejected rotation of secret "server_cert"')
        self.assertEqual(served_serial(self.port), PKI['server2'].serial)
        # The secret file never changed: its subscription saw the swaps in the watched
        # directory and delivered nothing (Envoy counts the files' rotations apart).
        self.assertEqual(self.sds_counts('server_cert'), {
            'update_attempt': 1, 'update_success': 1, 'update_failure': 0,
            'update_rejected': 0, 'key_rotation_failed': 1})


class TrustedCaRotationTest(RotationCase):

    def test_validation_context_rotation(self):
        ca_path = os.path.join(self.dir, 'ca.json')
        atomic_write(ca_path, C.discovery_response(C.secret_ca('mesh_ca', PKI['ca'])))
        p = self.start(common={
            'tls_certificates': [C.tls_certificate(PKI['server'])],
            'validation_context_sds_secret_config': C.sds_ref('mesh_ca', ca_path)},
            require_client=True)

        def ok(cert):
            ctx = C.client_context(ca=PKI['ca'], cert=cert)
            try:
                return h.http_request(self.port, 'GET', '/', ssl_context=ctx,
                                      server_hostname='petrel.test', timeout=5).status == 200
            except (OSError, h.ConnectionClosed):
                return False
        self.assertTrue(ok(PKI['frontend']))
        self.assertFalse(ok(PKI['other_ca']))
        # A session of the frontend, verified against the first root (kept for later).
        ctx12 = C.client_context(ca=PKI['ca'], cert=PKI['frontend'],
                                 maximum=ssl.TLSVersion.TLSv1_2)
        with h.tcp_connect(self.port, ssl_context=ctx12, server_hostname='petrel.test') as s:
            old_session = s.session
        # Both roots during a migration...
        bundle = PKI['ca'].pem + PKI['ca2'].pem
        atomic_write(ca_path, C.discovery_response(C.secret_ca('mesh_ca', ca_pem=bundle)))
        h.wait_until(lambda: ok(PKI['other_ca']), 10)
        self.assertTrue(ok(PKI['frontend']))
        # ...then only the new one.
        atomic_write(ca_path, C.discovery_response(C.secret_ca('mesh_ca', PKI['ca2'])))
        h.wait_until(lambda: not ok(PKI['frontend']), 10)
        self.assertTrue(ok(PKI['other_ca']))
        # The frontend's old session does not resume past the removal of its root.
        raw = h.tcp_connect(self.port)
        try:
            s = ctx12.wrap_socket(raw, server_hostname='petrel.test', session=old_session)
            try:
                h.send_request(s, 'GET', '/old-session', host_header='petrel.test')
                h.read_response(h.SockReader(s))
                self.fail('a session verified by the removed root was resumed')
            except (ssl.SSLError, OSError, h.ConnectionClosed):
                pass
            finally:
                s.close()
        except (ssl.SSLError, OSError):
            pass
        finally:
            raw.close()
        self.assertEqual([r for r in self.up.requests if r['path'] == '/old-session'], [])
        p.wait_stat('sds.mesh_ca.update_success', 3)
        # The server's own certificate was not touched.
        self.assertEqual(served_serial(self.port, cert=PKI['other_ca']), PKI['server'].serial)
        cas = [e for kind, e in self.cert_entries() if kind == 'ca_cert']
        self.assertEqual([e['serial_number'].upper() for e in cas], [PKI['ca2'].serial])
        # A bad CA update is refused and the current root stays.
        atomic_write(ca_path, C.discovery_response(C.secret_ca('mesh_ca', ca_pem='junk')))
        p.wait_stat('sds.mesh_ca.update_rejected', lambda v: v and v >= 1)
        self.assertTrue(ok(PKI['other_ca']))

    def test_upstream_validation_and_client_cert_by_sds(self):
        # The same secrets drive an upstream context: petrel's client certificate and the CA
        # it verifies the upstream with.
        snis = []
        srv = HttpUpstream(name='tls-up', ssl_context=C.server_context(
            PKI['backend'], client_ca=PKI['ca'], sni_log=snis))
        self.addCleanup(srv.close)
        cert_path = os.path.join(self.dir, 'client.json')
        ca_path = os.path.join(self.dir, 'ca.json')
        atomic_write(cert_path, C.discovery_response(C.secret_tls('client', PKI['frontend'])))
        atomic_write(ca_path, C.discovery_response(C.secret_ca('upstream_ca', PKI['ca2'])))
        port, admin = h.free_ports(2)
        tls = {'name': 'envoy.transport_sockets.tls', 'typed_config': {
            '@type': C.UPSTREAM_TLS, 'sni': 'backend.test', 'common_tls_context': {
                'tls_certificate_sds_secret_configs': [C.sds_ref('client', cert_path)],
                'validation_context_sds_secret_config': C.sds_ref('upstream_ca', ca_path)}}}
        hcm = h.http_connection_manager('ingress', h.route_config([h.vhost(
            'all', ['*'], [h.route_prefix('/', 'up', timeout='3s')])]))
        p = h.Petrel(h.bootstrap([h.listener('http', port, [hcm])],
                                 [h.cluster('up', [srv.port], transport_socket=tls)],
                                 admin_port=admin))
        p.start()
        self.addCleanup(p.close)
        # Trusting only ca2, petrel refuses the upstream's ca-issued certificate.
        self.assertEqual(h.http_request(port, 'GET', '/a').status, 503)
        p.wait_stat('cluster.up.ssl.fail_verify_error', lambda v: v and v >= 1)
        atomic_write(ca_path, C.discovery_response(C.secret_ca('upstream_ca', PKI['ca'])))
        p.wait_stat('sds.upstream_ca.update_success', 2)
        self.assertEqual(h.http_request(port, 'GET', '/b').status, 200)
        self.assertEqual([r['path'] for r in srv.requests], ['/b'])


class StartupTest(unittest.TestCase):

    def validate(self, sds_path, secret='server_cert'):
        port = h.free_port()
        ln = h.listener('https', port, [h.tcp_proxy('t', 'c')])
        ln['filter_chains'][0]['transport_socket'] = {
            'name': 'envoy.transport_sockets.tls', 'typed_config': {
                '@type': C.DOWNSTREAM_TLS, 'common_tls_context': {
                    'tls_certificate_sds_secret_configs': [C.sds_ref(secret, sds_path)]}}}
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'c.json')
            with open(path, 'w') as f:
                json.dump(h.bootstrap([ln], [h.cluster('c', [1])]), f)
            return h.run_petrel(['--mode', 'validate', '-c', path])

    def test_secret_problems_at_startup_are_config_errors(self):
        with tempfile.TemporaryDirectory() as d:
            good = os.path.join(d, 'good.json')
            atomic_write(good, C.discovery_response(C.secret_tls('server_cert',
                                                                 PKI['server'])))
            rc, out, err = self.validate(good)
            self.assertEqual(rc, 0, out + err)
            missing = os.path.join(d, 'missing.json')
            rc, out, err = self.validate(missing)
            self.assertEqual(rc, 1)
            self.assertIn('missing.json', out + err)
            rc, out, err = self.validate(good, secret='nope')
            self.assertEqual(rc, 1)
            self.assertIn('nope', out + err)
            expired = os.path.join(d, 'expired.json')
            atomic_write(expired, C.discovery_response(C.secret_tls('server_cert',
                                                                    PKI['expired'])))
            rc, out, err = self.validate(expired)
            self.assertEqual(rc, 1)
            self.assertRegex(out + err, r'expired')


if __name__ == '__main__':
    unittest.main()
