"""Transparent interception end to end: petrel as a sidecar in a network namespace.

The test makes two namespaces joined by a veth pair, the "pod" (10.89.0.2, where petrel, the
application and its client run) and the "outside" (10.89.0.1, where the services the pod
calls live), and installs scripts/petrel-iptables.sh's REDIRECT rules in the pod: outbound
connections go to petrel's 15001, inbound ones to its 15006, petrel's own (uid 0) are left
alone. The client application runs as another user (nobody), so its connections are
intercepted. It calls a service VIP (10.88.0.10:80, a listener of that exact address), the
wildcard port listener 0.0.0.0_80 (HTTP/1.1, h2c and raw TCP told apart by the HTTP
inspector) and a raw TCP service by its own address (no listener: PassthroughCluster,
ORIGINAL_DST); the outside calls the pod's application through the inbound listener. The
access logs show each connection's original destination (%DOWNSTREAM_LOCAL_ADDRESS%).

Everything the test creates (namespaces, with their links and rules) has a unique name and
goes in cleanups that run even when a step fails. Without iptables or the right to make
namespaces (not root, no CAP_NET_ADMIN) the test is skipped, saying why.
"""
import ctypes
import json
import os
import shutil
import subprocess
import sys
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness as h  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer  # noqa: E402

SCRIPT = os.path.join(h.REPO_ROOT, 'scripts', 'petrel-iptables.sh')
CLONE_NEWNET = 0x40000000
NOBODY = 65534
POD_IP, OUT_IP = '10.89.0.2', '10.89.0.1'
POD_IP6, OUT_IP6 = 'fd89::2', 'fd89::1'
VIP6 = 'fd88::10'          # an IPv6 service, through the [::]_80 wildcard listener
VIP_B = '10.88.0.10'      # a service with a listener of its own address
VIP_A = '10.88.0.12'      # reached through the wildcard listener 0.0.0.0_80
ADMIN, OUTBOUND, INBOUND = 15000, 15001, 15006
APP_HTTP, APP_TCP = 8000, 9000

HCM_TYPE = h.HCM_TYPE
ODST_FILTER = 'type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst'
HTTP_INSPECTOR = ('type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.'
                  'HttpInspector')
TLS_INSPECTOR = ('type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.'
                 'TlsInspector')
FILE_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog'
LOG_FORMAT = '%DOWNSTREAM_LOCAL_ADDRESS% %UPSTREAM_HOST% %UPSTREAM_CLUSTER% %PROTOCOL%\n'

_libc = ctypes.CDLL(None, use_errno=True)


def _sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


def _why_no_netns():
    """Why this machine cannot run the test, or None."""
    if os.geteuid() != 0:
        return 'needs root (network namespaces and iptables)'
    for tool in ('ip', 'iptables'):
        if shutil.which(tool) is None:
            return '%s is not installed (apt-get install iproute2 iptables)' % tool
    name = 'pt-probe-%s' % uuid.uuid4().hex[:8]
    r = _sh('ip', 'netns', 'add', name, check=False)
    if r.returncode != 0:
        return 'cannot make a network namespace: ' + r.stderr.strip()
    try:
        r = _sh('ip', 'netns', 'exec', name, 'iptables', '-t', 'nat', '-L', '-n', check=False)
        if r.returncode != 0:
            return 'cannot use iptables in a network namespace: ' + r.stderr.strip()
    finally:
        _sh('ip', 'netns', 'del', name, check=False)
    return None


class NetNs:
    """Runs the calling thread (and what it starts: threads, processes) in a namespace."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.prev = os.open('/proc/thread-self/ns/net', os.O_RDONLY)
        fd = os.open('/run/netns/' + self.name, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, 'setns %s: %s' % (self.name, os.strerror(err)))
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc):
        try:
            if _libc.setns(self.prev, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), 'setns back')
        finally:
            os.close(self.prev)


# What the pod's application does, as another user: one call, its outcome as JSON.
CLIENT = r'''
import json, socket, sys, time
sys.path.insert(0, sys.argv[1])
import harness as h
from h2client import H2Client
op = json.loads(sys.argv[2])
out = {}
try:
    if op['kind'] == 'http':
        r = h.http_request(op['port'], host=op['host'], path=op.get('path', '/'), timeout=5)
        out = {'status': r.status, 'upstream': r.get('x-upstream-name'), 'body': r.text}
    elif op['kind'] == 'h2c':
        with H2Client(op['port'], host=op['host'], timeout=5) as c:
            sid = c.request('GET', op.get('path', '/'), authority=op['host'])
            st = c.response(sid, timeout=5)
            out = {'status': st.status, 'upstream': st.header('x-upstream-name'),
                   'body': bytes(st.data).decode()}
    else:
        s = socket.create_connection((op['host'], op['port']), timeout=30)
        time.sleep(op.get('hold', 0))
        s.sendall(op['data'].encode())
        s.shutdown(socket.SHUT_WR)
        got = b''
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
        out = {'echo': got.decode(errors='replace')}
except Exception as e:  # the test reads what failed
    out = {'error': '%s: %s' % (type(e).__name__, e)}
print(json.dumps(out))
'''


def file_log(path):
    return [{'name': 'envoy.access_loggers.file',
             'typed_config': {'@type': FILE_LOG, 'path': path,
                              'log_format': {'text_format_source': {'inline_string': LOG_FORMAT}}}}]


def hcm(prefix, cluster, log):
    return {'name': 'envoy.filters.network.http_connection_manager',
            'typed_config': {'@type': HCM_TYPE, 'stat_prefix': prefix, 'codec_type': 'AUTO',
                             'route_config': h.route_config([h.vhost('all', ['*'], [
                                 h.route_prefix('/', cluster, timeout='5s')])]),
                             'http_filters': [h.router_filter()],
                             'access_log': file_log(log)}}


def tcp(prefix, cluster, log):
    return h.tcp_proxy(prefix, cluster, access_log=file_log(log))


def odst_cluster(name, **extra):
    c = {'name': name, 'type': 'ORIGINAL_DST', 'lb_policy': 'CLUSTER_PROVIDED',
         'connect_timeout': '2s', 'cleanup_interval': '1s'}
    c.update(extra)
    return c


def sidecar_config(up_a, up_b, log, up_b6):
    """Istio's shape: virtualOutbound and virtualInbound, virtual listeners per destination."""
    lf = lambda name, t: {'name': name, 'typed_config': {'@type': t}}  # noqa: E731
    outbound = {
        'name': 'virtualOutbound', 'address': h.socket_address('0.0.0.0', OUTBOUND),
        'use_original_dst': True, 'traffic_direction': 'OUTBOUND',
        'listener_filters': [lf('envoy.filters.listener.original_dst', ODST_FILTER)],
        # A connection made to 15001 itself would come back for ever: Istio sends it nowhere.
        'filter_chains': [{'name': 'virtualOutbound-blackhole',
                           'filter_chain_match': {'destination_port': OUTBOUND},
                           'filters': [tcp('BlackHoleCluster', 'BlackHoleCluster', log)]}],
        'default_filter_chain': {'name': 'PassthroughFilterChain',
                                 'filters': [tcp('PassthroughCluster', 'PassthroughCluster', log)]},
    }
    vip_b = {
        'name': VIP_B + '_80', 'address': h.socket_address(VIP_B, 80), 'bind_to_port': False,
        'traffic_direction': 'OUTBOUND',
        'filter_chains': [{'filters': [hcm('outbound_b', 'svc-b', log)]}],
    }
    wildcard_80 = {
        'name': '0.0.0.0_80', 'address': h.socket_address('0.0.0.0', 80), 'bind_to_port': False,
        'traffic_direction': 'OUTBOUND',
        'listener_filters': [lf('envoy.filters.listener.tls_inspector', TLS_INSPECTOR),
                             lf('envoy.filters.listener.http_inspector', HTTP_INSPECTOR)],
        'listener_filters_timeout': '5s', 'continue_on_listener_filters_timeout': True,
        'filter_chains': [{'filter_chain_match': {
            'application_protocols': ['http/1.1', 'http/1.0', 'h2c']},
            'filters': [hcm('outbound_80', 'svc-a', log)]}],
        'default_filter_chain': {'filters': [tcp('outbound_80_tcp', 'PassthroughCluster', log)]},
    }
    # IPv6: listeners are IPV6_V6ONLY, so the outbound port has a [::] listener of its own.
    outbound6 = dict(outbound, name='virtualOutbound6',
                     address=h.socket_address('::', OUTBOUND),
                     filter_chains=[dict(outbound['filter_chains'][0],
                                         name='virtualOutbound6-blackhole')])
    wildcard6_80 = {
        'name': '[::]_80', 'address': h.socket_address('::', 80), 'bind_to_port': False,
        'listener_filters': [lf('envoy.filters.listener.http_inspector', HTTP_INSPECTOR)],
        'filter_chains': [{'filter_chain_match': {'application_protocols': ['http/1.1', 'h2c']},
                           'filters': [hcm('outbound6_80', 'svc-b6', log)]}],
        'default_filter_chain': {'filters': [tcp('outbound6_80_tcp', 'PassthroughCluster', log)]},
    }
    inbound = {
        'name': 'virtualInbound', 'address': h.socket_address('0.0.0.0', INBOUND),
        'traffic_direction': 'INBOUND',
        'listener_filters': [lf('envoy.filters.listener.original_dst', ODST_FILTER),
                             lf('envoy.filters.listener.http_inspector', HTTP_INSPECTOR)],
        'filter_chains': [
            {'filter_chain_match': {'destination_port': INBOUND},
             'filters': [tcp('BlackHoleCluster', 'BlackHoleCluster', log)]},
            # The port's HTTP chain wins over its TCP one only when the inspector saw HTTP.
            {'name': 'inbound_8000_http',
             'filter_chain_match': {'destination_port': APP_HTTP,
                                    'application_protocols': ['http/1.1', 'h2c']},
             'filters': [hcm('inbound_8000', 'InboundPassthroughCluster', log)]},
            {'name': 'inbound_8000_tcp', 'filter_chain_match': {'destination_port': APP_HTTP},
             'filters': [tcp('inbound_8000_tcp', 'InboundPassthroughCluster', log)]},
            {'name': 'inbound_9000', 'filter_chain_match': {'destination_port': APP_TCP},
             'filters': [tcp('inbound_9000', 'InboundPassthroughCluster', log)]},
        ],
    }
    clusters = [
        h.cluster('svc-a', [(OUT_IP, up_a.port)]),
        h.cluster('svc-b', [(OUT_IP, up_b.port)]),
        h.cluster('svc-b6', [(OUT_IP6, up_b6.port)]),
        odst_cluster('PassthroughCluster'),
        {'name': 'BlackHoleCluster', 'type': 'STATIC', 'connect_timeout': '1s'},
        odst_cluster('InboundPassthroughCluster'),
    ]
    return h.bootstrap([outbound, outbound6, vip_b, wildcard_80, wildcard6_80, inbound], clusters,
                       admin_port=ADMIN)


class SidecarInterceptionTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        why = _why_no_netns()
        if why is not None:
            raise unittest.SkipTest(why)
        tag = uuid.uuid4().hex[:8]
        cls.pod, cls.out = 'pt-pod-' + tag, 'pt-out-' + tag
        # Cleanups run in reverse, even when a later step fails.
        for ns in (cls.pod, cls.out):
            _sh('ip', 'netns', 'add', ns)
            cls.addClassCleanup(_sh, 'ip', 'netns', 'del', ns, check=False)
        cls.addClassCleanup(_sh, SCRIPT, 'clean', '-n', cls.pod, check=False)
        pod, out = ['ip', '-n', cls.pod], ['ip', '-n', cls.out]
        _sh(*pod, 'link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth0',
            'netns', cls.out)
        for ip, addr in ((pod, POD_IP), (out, OUT_IP)):
            _sh(*ip, 'addr', 'add', addr + '/24', 'dev', 'veth0')
            _sh(*ip, 'link', 'set', 'veth0', 'up')
            _sh(*ip, 'link', 'set', 'lo', 'up')
        _sh(*pod, 'route', 'add', 'default', 'via', OUT_IP)
        _sh(*out, 'addr', 'add', VIP_A + '/32', 'dev', 'lo')
        # IPv6 beside it (nodad: usable at once, no duplicate address detection wait).
        for ip, addr in ((pod, POD_IP6), (out, OUT_IP6)):
            _sh(*ip, '-6', 'addr', 'add', addr + '/64', 'dev', 'veth0', 'nodad')
        _sh(*pod, '-6', 'route', 'add', 'default', 'via', OUT_IP6)
        # Services outside the pod.
        with NetNs(cls.out):
            cls.up_a = HttpUpstream(name='svc-a', host=OUT_IP)
            cls.addClassCleanup(cls.up_a.close)
            cls.up_b = HttpUpstream(name='svc-b', host=OUT_IP)
            cls.addClassCleanup(cls.up_b.close)
            cls.echo = TcpEchoServer(host=OUT_IP)
            cls.addClassCleanup(cls.echo.close)
            cls.echo_vip = TcpEchoServer(host=VIP_A, port=80)
            cls.addClassCleanup(cls.echo_vip.close)
            cls.up_b6 = HttpUpstream(name='svc-b6', host=OUT_IP6)
            cls.addClassCleanup(cls.up_b6.close)
            cls.echo6 = TcpEchoServer(host=OUT_IP6)
            cls.addClassCleanup(cls.echo6.close)
        _sh(SCRIPT, 'install', '-6', '-n', cls.pod, '-u', '0', '-a', str(ADMIN))
        # The pod's application and petrel, in the pod (this thread enters it for the
        # class: the harness then reaches the admin port and sees the listeners there).
        cls.ns = NetNs(cls.pod)
        cls.ns.__enter__()
        cls.addClassCleanup(cls.ns.__exit__, None, None, None)
        cls.app = HttpUpstream(name='app', host='0.0.0.0', port=APP_HTTP)
        cls.addClassCleanup(cls.app.close)
        cls.app_tcp = TcpEchoServer(host='0.0.0.0', port=APP_TCP)
        cls.addClassCleanup(cls.app_tcp.close)
        cls.p = h.Petrel(sidecar_config(cls.up_a, cls.up_b, 'access.log', cls.up_b6),
                         admin_port=ADMIN)
        cls.p.start()
        cls.addClassCleanup(cls.p.close)
        cls.log_path = cls.p.path('access.log')

    def client(self, **op):
        """One call by the pod's application (uid nobody: intercepted)."""
        r = subprocess.run([sys.executable, '-c', CLIENT, HERE, json.dumps(op)], user=NOBODY,
                           capture_output=True, text=True, timeout=h.scaled(60))
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def client_start(self, **op):
        """The same, running while the test goes on; .communicate() gives its outcome."""
        proc = subprocess.Popen([sys.executable, '-c', CLIENT, HERE, json.dumps(op)],
                                user=NOBODY, stdout=subprocess.PIPE, text=True)
        self.addCleanup(proc.kill)
        return proc

    def log_lines(self, needle, n=1):
        def found():
            try:
                with open(self.log_path) as f:
                    lines = [ln.strip() for ln in f if needle in ln]
            except FileNotFoundError:
                return None
            return lines if len(lines) >= n else None
        return h.wait_until(found, message='access log line with %r' % needle)

    def test_service_vip_goes_to_its_own_listener(self):
        r = self.client(kind='http', host=VIP_B, port=80, path='/vip')
        self.assertEqual(r.get('status'), 200, r)
        self.assertEqual(r['upstream'], 'svc-b')
        self.assertEqual(self.up_b.last['path'], '/vip')
        line = self.log_lines(VIP_B + ':80 ')[-1]
        self.assertEqual(line.split()[1:], ['%s:%d' % (OUT_IP, self.up_b.port), 'svc-b',
                                            'HTTP/1.1'])
        self.p.wait_stat('listener.%s_80.downstream_cx_total' % VIP_B, lambda v: v >= 1)

    def test_protocol_detection_on_the_wildcard_port_listener(self):
        base = {n: self.p.stat('http_inspector.' + n, 0)
                for n in ('http11_found', 'http2_found', 'http_not_found')}
        r = self.client(kind='http', host=VIP_A, port=80, path='/h1')
        self.assertEqual((r.get('status'), r.get('upstream')), (200, 'svc-a'), r)
        r = self.client(kind='h2c', host=VIP_A, port=80, path='/h2')
        self.assertEqual((r.get('status'), r.get('upstream')), (200, 'svc-a'), r)
        self.assertEqual(json.loads(r['body'])['version'], 'HTTP/1.1')  # h2c down, h1 up
        r = self.client(kind='tcp', host=VIP_A, port=80, data='not http at all\r\n')
        self.assertEqual(r.get('echo'), 'not http at all\r\n', r)
        for n in base:
            self.p.wait_stat('http_inspector.' + n, base[n] + 1)
        self.assertIn('/h1', [q['path'] for q in self.up_a.requests])
        self.assertIn('/h2', [q['path'] for q in self.up_a.requests])
        protos = [ln.split()[3] for ln in self.log_lines(VIP_A + ':80 ', 3)]
        self.assertIn('HTTP/1.1', protos)
        self.assertIn('HTTP/2', protos)
        self.assertIn('-', protos)  # the raw TCP connection, passed through
        tcp_line = [ln for ln in self.log_lines(VIP_A + ':80 ', 3) if ln.split()[3] == '-'][0]
        self.assertEqual(tcp_line.split()[1:3], [VIP_A + ':80', 'PassthroughCluster'])

    def test_raw_tcp_passes_through_to_its_original_destination(self):
        dest = '%s:%d' % (OUT_IP, self.echo.port)
        r = self.client(kind='tcp', host=OUT_IP, port=self.echo.port, data='ping ' * 1000)
        self.assertEqual(r.get('echo'), 'ping ' * 1000, r)
        line = self.log_lines(dest + ' ')[-1]
        self.assertEqual(line.split()[1:3], [dest, 'PassthroughCluster'])

    def test_original_destination_host_kept_while_used_then_cleaned(self):
        # A connection held open keeps its host through several cleanups (1s apart); once it
        # is gone the host goes too.
        self.p.wait_stat('cluster.PassthroughCluster.membership_total', 0, timeout=15)
        proc = self.client_start(kind='tcp', host=OUT_IP, port=self.echo.port, data='late',
                                 hold=h.scaled(3))
        self.p.wait_stat('cluster.PassthroughCluster.upstream_cx_active', 1)
        self.p.wait_stat('cluster.PassthroughCluster.membership_total', 1)
        out, _ = proc.communicate(timeout=h.scaled(30))
        self.assertEqual(json.loads(out).get('echo'), 'late')
        self.p.wait_stat('cluster.PassthroughCluster.upstream_cx_active', 0)
        self.p.wait_stat('cluster.PassthroughCluster.membership_total', 0, timeout=15)

    def test_ipv6(self):
        # IP6T_SO_ORIGINAL_DST: a VIP through the [::]_80 listener, TCP passed through.
        r = self.client(kind='http', host=VIP6, port=80, path='/v6')
        self.assertEqual((r.get('status'), r.get('upstream')), (200, 'svc-b6'), r)
        self.assertEqual(self.up_b6.last['path'], '/v6')
        line = self.log_lines('[%s]:80 ' % VIP6)[-1]
        self.assertEqual(line.split()[1:], ['[%s]:%d' % (OUT_IP6, self.up_b6.port), 'svc-b6',
                                            'HTTP/1.1'])
        dest = '[%s]:%d' % (OUT_IP6, self.echo6.port)
        r = self.client(kind='tcp', host=OUT_IP6, port=self.echo6.port, data='six')
        self.assertEqual(r.get('echo'), 'six', r)
        self.assertEqual(self.log_lines(dest + ' ')[-1].split()[1:3], [dest, 'PassthroughCluster'])

    def test_inbound_reaches_the_application(self):
        # From outside the pod: to the pod's address, redirected to 15006.
        with NetNs(self.out):
            conn = h.HttpClientConn(APP_HTTP, host=POD_IP, timeout=10)
            tcp_sock = h.tcp_connect(APP_TCP, host=POD_IP)
        try:
            r = conn.request('GET', '/inbound')
            self.assertEqual(r.status, 200)
            self.assertEqual(r.get('x-upstream-name'), 'app')
            # Not the start of a request line, so the HTTP inspector decides at once (a prefix
            # of one would wait for more bytes, as Envoy's does).
            tcp_sock.sendall(b'{"inbound": 1}')
            h.shutdown_write(tcp_sock)
            self.assertEqual(h.recv_until_eof(tcp_sock), b'{"inbound": 1}')
        finally:
            conn.close()
            tcp_sock.close()
        self.assertEqual(self.app.last['path'], '/inbound')
        # The request came from the outside client, through the HTTP chain of port 8000.
        http_line = self.log_lines('%s:%d ' % (POD_IP, APP_HTTP))[-1]
        self.assertEqual(http_line.split()[1:], ['%s:%d' % (POD_IP, APP_HTTP),
                                                 'InboundPassthroughCluster', 'HTTP/1.1'])
        tcp_line = self.log_lines('%s:%d ' % (POD_IP, APP_TCP))[-1]
        self.assertEqual(tcp_line.split()[1:], ['%s:%d' % (POD_IP, APP_TCP),
                                                'InboundPassthroughCluster', '-'])
        self.p.wait_stat('http.inbound_8000.downstream_rq_total', lambda v: v >= 1)

    def test_connection_to_the_outbound_port_itself_goes_nowhere(self):
        # Not redirected: original_dst finds nothing to restore, the connection stays on
        # virtualOutbound and its 15001 chain (BlackHoleCluster, no hosts) closes it.
        before = self.p.stat('cluster.BlackHoleCluster.upstream_cx_none_healthy', 0)
        with h.tcp_connect(OUTBOUND) as s:
            s.sendall(b'loop?')
            try:  # closed at once: a FIN, or a reset when our bytes were still unread
                self.assertEqual(h.recv_until_eof(s), b'')
            except ConnectionResetError:
                pass
        self.p.wait_stat('cluster.BlackHoleCluster.upstream_cx_none_healthy', before + 1)


if __name__ == '__main__':
    unittest.main()
