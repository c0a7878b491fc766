"""A throwaway test PKI made at test time with the openssl CLI (no private keys in git), plus
builders for the Envoy v3 TLS config pieces and Python ``ssl`` contexts that use it.

``Pki()`` makes a temp dir; ``pki.ca(name)`` a self-signed ECDSA P-256 CA; ``pki.issue(ca,
name, uris=[...], dns=[...])`` a leaf (P-256, serverAuth+clientAuth) signed by it, optionally
with explicit validity (``not_before`` / ``not_after`` as datetimes, so expired and not yet
valid certificates are easy). Every certificate gets a random serial, so a rotation is visible
as a serial change. ``standard_pki()`` builds (once per process) the set most tests use:

=================  ==========================================================================
``ca``, ``ca2``    two unrelated CAs
``server``         ca; DNS localhost, petrel.test, *.wild.test; IP 127.0.0.1;
                   URI spiffe://cluster.local/ns/default/sa/gateway
``server2``        ca; same names, another key/serial (rotation target)
``frontend``       ca; URI spiffe://cluster.local/ns/default/sa/frontend; DNS frontend.test
``backend``        ca; URI spiffe://cluster.local/ns/default/sa/backend; DNS backend.test
``rogue``          ca; URI spiffe://cluster.local/ns/default/sa/rogue (valid, wrong identity)
``other_ca``       ca2; URI .../sa/frontend (right name, untrusted issuer)
``other_ca_rogue`` ca2; URI .../sa/rogue (wrong name, untrusted issuer)
``wrong_domain``   ca; URI spiffe://other.domain/ns/default/sa/frontend
``expired``        ca; .../sa/frontend + the server names, notAfter yesterday
``not_yet_valid``  ca; .../sa/frontend + the server names, notBefore tomorrow
``ca2_server``     ca2; the server names (rotation of the whole trust chain)
``inter``          an intermediate CA under ca
``chained``        leaf under ``inter`` (CN chained.petrel.test, server names); its
                   ``.cert`` file holds leaf + intermediate (the chain to serve)
``chained_leaf``   the same leaf alone (its file lacks the intermediate)
=================  ==========================================================================

Files: ``cert.cert`` / ``cert.key`` (paths), ``cert.pem`` / ``cert.key_pem`` (text),
``cert.serial`` (upper-case hex, as /certs prints it), ``cert.sha256`` (hex DER digest, as
x-forwarded-client-cert's Hash).
"""

import datetime
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import threading

OPENSSL = shutil.which('openssl') or '/usr/bin/openssl'
TD = 'cluster.local'

DOWNSTREAM_TLS = ('type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.'
                  'DownstreamTlsContext')
UPSTREAM_TLS = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext'
SECRET_TYPE = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret'
SNI_CLUSTER_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.sni_cluster.v3.SniCluster'
TLS_INSPECTOR_TYPE = ('type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.'
                      'TlsInspector')


def spiffe(ns, sa, td=TD):
    """``spiffe://<td>/ns/<ns>/sa/<sa>``."""
    return 'spiffe://%s/ns/%s/sa/%s' % (td, ns, sa)


def _run(args, cwd):
    cp = subprocess.run([OPENSSL] + args, cwd=cwd, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, timeout=60)
    if cp.returncode != 0:
        raise RuntimeError('openssl %s failed (%d):\n%s' % (' '.join(args), cp.returncode,
                                                           cp.stderr.decode('utf-8', 'replace')))
    return cp.stdout.decode('utf-8', 'replace')


def _asn1_time(dt):
    return dt.astimezone(datetime.timezone.utc).strftime('%Y%m%d%H%M%SZ')


class Cert:
    """A certificate and its key on disk (``.cert``, ``.key``) and in memory."""

    def __init__(self, name, cert, key, ca=None):
        self.name = name
        self.cert = cert
        self.key = key
        self.ca = ca
        with open(cert) as f:
            self.pem = f.read()
        with open(key) as f:
            self.key_pem = f.read()
        end = '-----END CERTIFICATE-----'
        first = self.pem[:self.pem.index(end) + len(end)]      # the leaf of a chain file
        self.sha256 = hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()
        out = _run(['x509', '-in', cert, '-noout', '-serial'], os.path.dirname(cert))
        self.serial = out.strip().split('=', 1)[1].upper()

    def __repr__(self):
        return '<Cert %s serial %s>' % (self.name, self.serial)


class Pki:
    """A temp dir of CAs and leaves; ``close()`` removes it."""

    def __init__(self, dir=None):
        self.dir = dir or tempfile.mkdtemp(prefix='petrel-pki-')
        self._owned = dir is None
        self.certs = {}

    def close(self):
        if self._owned:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getitem__(self, name):
        return self.certs[name]

    def path(self, name):
        return os.path.join(self.dir, name)

    def _key(self, name):
        key = self.path(name + '.key')
        _run(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256',
              '-out', key], self.dir)
        return key

    def ca(self, name, cn=None, days=3650):
        """A self-signed ECDSA P-256 CA."""
        key = self._key(name)
        crt = self.path(name + '.crt')
        _run(['req', '-x509', '-new', '-key', key, '-out', crt, '-days', str(days),
              '-subj', '/O=petrel-test/CN=%s' % (cn or name), '-sha256',
              '-addext', 'basicConstraints=critical,CA:TRUE',
              '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
              '-addext', 'subjectKeyIdentifier=hash'], self.dir)
        c = Cert(name, crt, key)
        self.certs[name] = c
        return c

    def issue(self, ca, name, uris=(), dns=(), ips=(), cn=None, not_before=None,
              not_after=None, days=365, is_ca=False):
        """A leaf (or with ``is_ca`` an intermediate CA) signed by ``ca`` with the given SANs.
        Validity: ``not_before`` .. ``not_after`` (datetimes) or now-1h .. now+days."""
        key = self._key(name)
        csr = self.path(name + '.csr')
        crt = self.path(name + '.crt')
        _run(['req', '-new', '-key', key, '-out', csr,
              '-subj', '/O=petrel-test/CN=%s' % (cn or name)], self.dir)
        now = datetime.datetime.now(datetime.timezone.utc)
        nb = not_before or now - datetime.timedelta(hours=1)
        na = not_after or now + datetime.timedelta(days=days)
        sans = (['URI:%s' % u for u in uris] + ['DNS:%s' % d for d in dns] +
                ['IP:%s' % i for i in ips])
        ext = self.path(name + '.ext')
        with open(ext, 'w') as f:
            if is_ca:
                f.write('[v3]\nbasicConstraints=critical,CA:TRUE\n'
                        'keyUsage=critical,keyCertSign,cRLSign\n'
                        'subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n')
            else:
                f.write('[v3]\nbasicConstraints=critical,CA:FALSE\n'
                        'keyUsage=critical,digitalSignature,keyEncipherment\n'
                        'extendedKeyUsage=serverAuth,clientAuth\n'
                        'authorityKeyIdentifier=keyid\n')
            if sans:
                f.write('subjectAltName=%s\n' % ','.join(sans))
        # `openssl ca` is the CLI that takes explicit start/end dates (x509 -req cannot in 3.0).
        cadir = self.path('ca-db-' + name)
        os.makedirs(cadir, exist_ok=True)
        open(os.path.join(cadir, 'index.txt'), 'w').close()
        with open(os.path.join(cadir, 'serial'), 'w') as f:
            f.write('01\n')
        cnf = os.path.join(cadir, 'ca.cnf')
        with open(cnf, 'w') as f:
            f.write('[ca]\ndefault_ca=d\n[d]\ndir=%s\ndatabase=$dir/index.txt\n'
                    'new_certs_dir=$dir\nserial=$dir/serial\ndefault_md=sha256\npolicy=p\n'
                    'unique_subject=no\n'
                    'copy_extensions=none\n[p]\norganizationName=optional\n'
                    'commonName=supplied\n' % cadir)
        _run(['ca', '-batch', '-config', cnf, '-cert', ca.cert, '-keyfile', ca.key,
              '-in', csr, '-out', crt, '-notext', '-rand_serial',
              '-startdate', _asn1_time(nb), '-enddate', _asn1_time(na),
              '-extfile', ext, '-extensions', 'v3'], self.dir)
        c = Cert(name, crt, key, ca)
        self.certs[name] = c
        return c

    def chain_file(self, *certs, name=None):
        """Concatenate PEMs (e.g. two CAs as one trusted_ca bundle); returns the path."""
        path = self.path(name or ('bundle-' + '-'.join(c.name for c in certs) + '.pem'))
        with open(path, 'w') as f:
            for c in certs:
                f.write(c.pem)
        return path


SERVER_DNS = ('localhost', 'petrel.test', '*.wild.test')
_std_lock = threading.Lock()
_std = None


def standard_pki():
    """The shared PKI described in the module doc (built once per process, removed at exit)."""
    global _std
    with _std_lock:
        if _std is not None:
            return _std
        p = Pki()
        import atexit
        atexit.register(p.close)
        now = datetime.datetime.now(datetime.timezone.utc)
        day = datetime.timedelta(days=1)
        ca = p.ca('ca', 'petrel test root')
        ca2 = p.ca('ca2', 'unrelated root')
        p.issue(ca, 'server', uris=[spiffe('default', 'gateway')], dns=SERVER_DNS,
                ips=['127.0.0.1'], cn='petrel.test')
        p.issue(ca, 'server2', uris=[spiffe('default', 'gateway')], dns=SERVER_DNS,
                ips=['127.0.0.1'], cn='petrel.test')
        p.issue(ca, 'frontend', uris=[spiffe('default', 'frontend')], dns=['frontend.test'])
        p.issue(ca, 'backend', uris=[spiffe('default', 'backend')], dns=['backend.test'],
                ips=['127.0.0.1'])
        p.issue(ca, 'rogue', uris=[spiffe('default', 'rogue')], dns=['rogue.test'])
        p.issue(ca2, 'other_ca', uris=[spiffe('default', 'frontend')], dns=['frontend.test'])
        p.issue(ca2, 'other_ca_rogue', uris=[spiffe('default', 'rogue')], dns=['rogue.test'])
        p.issue(ca, 'wrong_domain', uris=[spiffe('default', 'frontend', 'other.domain')])
        p.issue(ca, 'expired', uris=[spiffe('default', 'frontend')], dns=SERVER_DNS,
                not_before=now - 30 * day, not_after=now - day)
        p.issue(ca, 'not_yet_valid', uris=[spiffe('default', 'frontend')], dns=SERVER_DNS,
                not_before=now + day, not_after=now + 30 * day)
        inter = p.issue(ca, 'inter', cn='petrel test intermediate', is_ca=True, days=3000)
        leaf = p.issue(inter, 'chained_leaf', uris=[spiffe('default', 'gateway')],
                       dns=SERVER_DNS, ips=['127.0.0.1'], cn='chained.petrel.test')
        # The served chain: leaf then intermediate, in one file (certificate_chain).
        p.certs['chained'] = Cert('chained', p.chain_file(leaf, inter, name='chained.crt'),
                                  leaf.key, inter)
        p.issue(ca2, 'ca2_server', uris=[spiffe('default', 'gateway')], dns=SERVER_DNS,
                ips=['127.0.0.1'])
        _std = p
        return p


# ---------------------------------------------------------------------------------------------
# Envoy config pieces
# ---------------------------------------------------------------------------------------------

def tls_certificate(cert):
    """A TlsCertificate with file data sources."""
    return {'certificate_chain': {'filename': cert.cert},
            'private_key': {'filename': cert.key}}


def validation_context(ca=None, san=None, **extra):
    """A CertificateValidationContext: ``ca`` a Cert or a path; ``san`` a list of
    match_typed_subject_alt_names entries (see ``san_uri`` / ``san_dns``)."""
    v = {}
    if ca is not None:
        v['trusted_ca'] = {'filename': ca if isinstance(ca, str) else ca.cert}
    if san:
        v['match_typed_subject_alt_names'] = list(san)
    v.update(extra)
    return v


def san_uri(**matcher):
    """``{'san_type': 'URI', 'matcher': {...}}``, e.g. ``san_uri(prefix='spiffe://x/')``."""
    return {'san_type': 'URI', 'matcher': dict(matcher)}


def san_dns(**matcher):
    return {'san_type': 'DNS', 'matcher': dict(matcher)}


def downstream_tls(cert=None, ca=None, require_client=None, san=None, alpn=None,
                   tls_params=None, validation_extra=None, common_extra=None, **extra):
    """A transport_socket with a DownstreamTlsContext."""
    common = {}
    if cert is not None:
        common['tls_certificates'] = [tls_certificate(cert)]
    if ca is not None or san:
        common['validation_context'] = validation_context(ca, san, **(validation_extra or {}))
    if alpn:
        common['alpn_protocols'] = list(alpn)
    if tls_params:
        common['tls_params'] = dict(tls_params)
    common.update(common_extra or {})
    tc = {'@type': DOWNSTREAM_TLS, 'common_tls_context': common}
    if require_client is not None:
        tc['require_client_certificate'] = require_client
    tc.update(extra)
    return {'name': 'envoy.transport_sockets.tls', 'typed_config': tc}


def upstream_tls(cert=None, ca=None, san=None, sni=None, alpn=None, tls_params=None,
                 common_extra=None, **extra):
    """A transport_socket with an UpstreamTlsContext."""
    common = {}
    if cert is not None:
        common['tls_certificates'] = [tls_certificate(cert)]
    if ca is not None or san:
        common['validation_context'] = validation_context(ca, san)
    if alpn:
        common['alpn_protocols'] = list(alpn)
    if tls_params:
        common['tls_params'] = dict(tls_params)
    common.update(common_extra or {})
    tc = {'@type': UPSTREAM_TLS, 'common_tls_context': common}
    if sni is not None:
        tc['sni'] = sni
    tc.update(extra)
    return {'name': 'envoy.transport_sockets.tls', 'typed_config': tc}


def sds_ref(name, path, watched_directory=None):
    """An SdsSecretConfig that reads ``name`` from the file ``path`` (path_config_source)."""
    pcs = {'path': path}
    if watched_directory:
        pcs['watched_directory'] = {'path': watched_directory}
    return {'name': name, 'sds_config': {'path_config_source': pcs,
                                         'resource_api_version': 'V3'}}


def secret_tls(name, cert=None, cert_pem=None, key_pem=None, cert_path=None, key_path=None):
    """A Secret resource with a tls_certificate (inline PEM by default, or file paths)."""
    if cert_path is not None:
        tc = {'certificate_chain': {'filename': cert_path},
              'private_key': {'filename': key_path}}
    else:
        tc = {'certificate_chain': {'inline_string': cert_pem if cert_pem is not None
                                    else cert.pem},
              'private_key': {'inline_string': key_pem if key_pem is not None
                              else cert.key_pem}}
    return {'@type': SECRET_TYPE, 'name': name, 'tls_certificate': tc}


def secret_ca(name, ca=None, ca_pem=None, ca_path=None):
    """A Secret resource with a validation_context (trusted CA)."""
    src = ({'filename': ca_path} if ca_path is not None
           else {'inline_string': ca_pem if ca_pem is not None else ca.pem})
    return {'@type': SECRET_TYPE, 'name': name, 'validation_context': {'trusted_ca': src}}


def discovery_response(*resources, version='1'):
    """The JSON text of a DiscoveryResponse holding ``resources``."""
    return json.dumps({'version_info': version, 'resources': list(resources)}, indent=1)


def tls_inspector():
    return {'name': 'envoy.filters.listener.tls_inspector',
            'typed_config': {'@type': TLS_INSPECTOR_TYPE}}


def sni_cluster_filter():
    return {'name': 'envoy.filters.network.sni_cluster',
            'typed_config': {'@type': SNI_CLUSTER_TYPE}}


# ---------------------------------------------------------------------------------------------
# Python ssl contexts
# ---------------------------------------------------------------------------------------------

def client_context(ca=None, cert=None, alpn=None, check_hostname=False, minimum=None,
                   maximum=None):
    """A client SSLContext: trust ``ca`` (verify the server) or verify nothing; present
    ``cert`` if given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = check_hostname
    if ca is not None:
        ctx.load_verify_locations(ca if isinstance(ca, str) else ca.cert)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


def server_context(cert, client_ca=None, alpn=None, sni_log=None):
    """A server SSLContext presenting ``cert``; with ``client_ca`` a client certificate is
    required. ``sni_log``: a list that receives the SNI of every handshake (None if none)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert.cert, cert.key)
    if client_ca is not None:
        ctx.load_verify_locations(client_ca if isinstance(client_ca, str) else client_ca.cert)
        ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if sni_log is not None:
        def on_sni(sock, name, c):
            sni_log.append(name)
            sock.petrel_sni = name  # per connection: conn_info's 'sni' (upstreams.py)
            return None
        ctx.sni_callback = on_sni
    return ctx


def peer_cert_serial(sock):
    """Serial (upper-case hex) of the certificate the peer of an SSLSocket presented."""
    der = sock.getpeercert(binary_form=True)
    pem = ssl.DER_cert_to_PEM_cert(der)
    cp = subprocess.run([OPENSSL, 'x509', '-noout', '-serial'], input=pem.encode(),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    return cp.stdout.decode().strip().split('=', 1)[1].upper()


def run_openssl(args, input=b'', timeout=20):
    """Run the openssl CLI; returns (rc, stdout+stderr text)."""
    cp = subprocess.run([OPENSSL] + list(args), input=input, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, timeout=timeout)
    return cp.returncode, cp.stdout.decode('utf-8', 'replace')
