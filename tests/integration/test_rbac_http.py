"""RBAC end to end, without TLS: the HTTP filter (envoy.filters.http.rbac) allowing and denying
by path, method and source address, shadow rules that only count, the network filter
(envoy.filters.network.rbac) closing a TCP connection before tcp_proxy sees it, and config
errors. Principals from peer certificates are covered once the TLS transport exists.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_rbac_http.py -v
"""

import json
import os
import ssl
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer  # noqa: E402

RBAC_HTTP_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC'
RBAC_NET_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC'
STDOUT_LOG_TYPE = 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog'

ANY = {'any': True}


def policy(permissions, principals):
    return {'permissions': list(permissions), 'principals': list(principals)}


def rbac_http(**typed):
    tc = {'@type': RBAC_HTTP_TYPE}
    tc.update(typed)
    return {'name': 'envoy.filters.http.rbac', 'typed_config': tc}


def rbac_network(stat_prefix, **typed):
    tc = {'@type': RBAC_NET_TYPE, 'stat_prefix': stat_prefix}
    tc.update(typed)
    return {'name': 'envoy.filters.network.rbac', 'typed_config': tc}


def cidr(prefix, length):
    return {'address_prefix': prefix, 'prefix_len': length}


def http_config(port, admin, up_port, rbac_filter, **hcm_extra):
    """One HTTP listener: rbac filter, router, to cluster "a"; an access log on stdout with
    the response code and its details."""
    log = {'name': 'envoy.access_loggers.stdout',
           'typed_config': {'@type': STDOUT_LOG_TYPE, 'log_format': {'text_format_source': {
               'inline_string': 'ACCESS %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\n'}}}}
    hcm = h.http_connection_manager(
        'ingress', h.route_config([h.vhost('all', ['*'], [h.route_prefix('/', 'a')])]),
        http_filters=[rbac_filter, h.router_filter()], access_log=[log], **hcm_extra)
    return h.bootstrap([h.listener('http', port, [hcm])], [h.cluster('a', [up_port])],
                       admin_port=admin)


class RbacHttpTest(unittest.TestCase):

    def start(self, rbac_filter, **hcm_extra):
        up = HttpUpstream(name='a')
        self.addCleanup(up.close)
        port, admin = h.free_ports(2)
        p = h.Petrel(http_config(port, admin, up.port, rbac_filter, **hcm_extra))
        p.start()
        self.addCleanup(p.close)
        return p, port, up

    def wait_access(self, p, line):
        h.wait_until(lambda: line in p.stdout(), message='access log line %r' % line)

    def test_deny_by_path(self):
        p, port, up = self.start(rbac_http(rules={'action': 'DENY', 'policies': {
            'deny-admin': policy([{'url_path': {'path': {'prefix': '/admin'}}}], [ANY])}}))
        r = h.http_request(port, 'GET', '/admin/users?x=1')
        self.assertEqual(r.status, 403)
        self.assertEqual(r.body, b'RBAC: access denied')
        self.assertEqual(up.requests, [])
        r = h.http_request(port, 'GET', '/public')
        self.assertEqual(r.status, 200)
        self.assertEqual(up.last['path'], '/public')
        p.wait_stat('http.ingress.rbac.denied', 1)
        p.wait_stat('http.ingress.rbac.allowed', 1)
        self.assertEqual(p.stat('http.ingress.rbac.shadow_denied'), 0)
        self.wait_access(p, 'ACCESS /admin/users?x=1 403 '
                            'rbac_access_denied_matched_policy[deny-admin]')

    def test_allow_by_method(self):
        p, port, up = self.start(rbac_http(rules={'action': 'ALLOW', 'policies': {
            'readers': policy([{'header': {'name': ':method',
                                           'string_match': {'safe_regex': {'regex': 'GET|HEAD'}}}}],
                              [ANY])}}))
        self.assertEqual(h.http_request(port, 'GET', '/a').status, 200)
        self.assertEqual(h.http_request(port, 'HEAD', '/a').status, 200)
        r = h.http_request(port, 'POST', '/a', body=b'x')
        self.assertEqual(r.status, 403)
        self.assertEqual(len(up.requests), 2)
        p.wait_stat('http.ingress.rbac.allowed', 2)
        p.wait_stat('http.ingress.rbac.denied', 1)
        self.wait_access(p, 'ACCESS /a 403 rbac_access_denied_matched_policy[none]')

    def test_keepalive_connection_survives_a_denial(self):
        p, port, up = self.start(rbac_http(rules={'action': 'DENY', 'policies': {
            'no-delete': policy([{'header': {'name': ':method', 'exact_match': 'DELETE'}}],
                                [ANY])}}))
        conn = h.HttpClientConn(port)
        self.addCleanup(conn.close)
        self.assertEqual(conn.request('DELETE', '/x').status, 403)
        self.assertEqual(conn.request('GET', '/x').status, 200)
        self.assertEqual(len(up.requests), 1)

    def test_direct_remote_ip(self):
        # The client is 127.0.0.1: allowed by 127.0.0.1/32, denied by 10.0.0.0/8.
        p, port, _ = self.start(rbac_http(rules={'policies': {
            'loopback': policy([ANY], [{'direct_remote_ip': cidr('127.0.0.1', 32)}])}}))
        self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
        p.close()
        p, port, up = self.start(rbac_http(rules={'policies': {
            'tens': policy([ANY], [{'direct_remote_ip': cidr('10.0.0.0', 8)}])}}))
        self.assertEqual(h.http_request(port, 'GET', '/').status, 403)
        # x-forwarded-for changes the remote address, never the direct one.
        r = h.http_request(port, 'GET', '/', headers=[('X-Forwarded-For', '10.1.2.3')])
        self.assertEqual(r.status, 403)
        self.assertEqual(up.requests, [])

    def test_remote_ip_follows_x_forwarded_for(self):
        p, port, up = self.start(rbac_http(rules={'policies': {
            'tens': policy([ANY], [{'remote_ip': cidr('10.0.0.0', 8)}])}}))
        self.assertEqual(h.http_request(port, 'GET', '/').status, 403)
        r = h.http_request(port, 'GET', '/', headers=[('X-Forwarded-For', '10.1.2.3')])
        self.assertEqual(r.status, 200)
        # The direct peer is still 127.0.0.1 while remote_ip is the forwarded address.
        p.close()
        p, port, up = self.start(rbac_http(rules={'policies': {
            'both': policy([ANY], [{'and_ids': {'ids': [
                {'remote_ip': cidr('10.0.0.0', 8)},
                {'direct_remote_ip': cidr('127.0.0.1', 32)}]}}])}}))
        r = h.http_request(port, 'GET', '/', headers=[('X-Forwarded-For', '10.1.2.3')])
        self.assertEqual(r.status, 200)
        # With use_remote_address the peer is the remote address: the XFF entry is ignored.
        p.close()
        p, port, up = self.start(rbac_http(rules={'policies': {
            'tens': policy([ANY], [{'remote_ip': cidr('10.0.0.0', 8)}])}}),
            use_remote_address=True)
        r = h.http_request(port, 'GET', '/', headers=[('X-Forwarded-For', '10.1.2.3')])
        self.assertEqual(r.status, 403)

    def test_shadow_rules_only_count(self):
        p, port, up = self.start(rbac_http(
            shadow_rules={'action': 'DENY', 'policies': {
                'deny-all': policy([ANY], [ANY])}},
            shadow_rules_stat_prefix='canary.'))
        for _ in range(3):
            self.assertEqual(h.http_request(port, 'GET', '/x').status, 200)
        self.assertEqual(len(up.requests), 3)
        p.wait_stat('http.ingress.rbac.canary.shadow_denied', 3)
        self.assertEqual(p.stat('http.ingress.rbac.canary.shadow_allowed'), 0)
        # Without `rules` nothing is enforced, so nothing is counted as allowed or denied.
        self.assertEqual(p.stat('http.ingress.rbac.allowed'), 0)
        self.assertEqual(p.stat('http.ingress.rbac.denied'), 0)

    def test_shadow_and_enforced_rules_are_independent(self):
        p, port, up = self.start(rbac_http(
            rules={'action': 'ALLOW', 'policies': {'gets': policy(
                [{'header': {'name': ':method', 'exact_match': 'GET'}}], [ANY])}},
            shadow_rules={'action': 'ALLOW', 'policies': {'admin-only': policy(
                [{'url_path': {'path': {'prefix': '/admin'}}}], [ANY])}},
            rules_stat_prefix='enforced'))
        self.assertEqual(h.http_request(port, 'GET', '/admin').status, 200)
        self.assertEqual(h.http_request(port, 'GET', '/x').status, 200)
        self.assertEqual(h.http_request(port, 'DELETE', '/admin').status, 403)
        p.wait_stat('http.ingress.rbac.enforced.allowed', 2)
        p.wait_stat('http.ingress.rbac.enforced.denied', 1)
        p.wait_stat('http.ingress.rbac.shadow_allowed', 2)
        p.wait_stat('http.ingress.rbac.shadow_denied', 1)

    def test_prometheus_names(self):
        p, port, _ = self.start(rbac_http(rules={'policies': {'all': policy([ANY], [ANY])}}))
        self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
        p.wait_stat('http.ingress.rbac.allowed', 1)
        status, _, body = p.admin_get('/stats/prometheus')
        self.assertEqual(status, 200)
        self.assertIn('envoy_http_rbac_allowed{envoy_http_conn_manager_prefix="ingress"} 1',
                      body.decode())


class RbacNetworkTest(unittest.TestCase):

    def start(self, rbac_filter, echo):
        port, admin = h.free_ports(2)
        cfg = h.bootstrap([h.listener('tcp', port, [rbac_filter, h.tcp_proxy('tcp', 'echo')])],
                          [h.cluster('echo', [echo.port])], admin_port=admin)
        p = h.Petrel(cfg)
        p.start()
        self.addCleanup(p.close)
        return p, port

    def assert_closed(self, port):
        """The connection is closed by petrel without a byte: EOF or a reset."""
        with h.tcp_connect(port) as s:
            try:
                s.sendall(b'hello')
                data = h.recv_until_eof(s)
            except (ConnectionResetError, BrokenPipeError):
                data = b''
            self.assertEqual(data, b'')

    def test_deny_closes_the_connection(self):
        with TcpEchoServer() as echo:
            p, port = self.start(rbac_network('net', rules={'action': 'DENY', 'policies': {
                'no-loopback': policy([ANY], [{'direct_remote_ip': cidr('127.0.0.0', 8)}])}}),
                echo)
            self.assert_closed(port)
            p.wait_stat('net.rbac.denied', 1)
            self.assertEqual(p.stat('net.rbac.allowed'), 0)
            self.assertEqual(echo.accepted, 0)
            # tcp_proxy never saw the connection.
            self.assertEqual(p.stat('tcp.tcp.downstream_cx_total'), 0)

    def test_allow_passes_to_tcp_proxy(self):
        with TcpEchoServer() as echo:
            p, port = self.start_allow(echo)
            with h.tcp_connect(port) as s:
                s.sendall(b'ping')
                self.assertEqual(h.recv_exact(s, 4), b'ping')
            p.wait_stat('net.rbac.allowed', 1)
            self.assertEqual(p.stat('net.rbac.denied'), 0)

    def start_allow(self, echo):
        # The policy names the listener's own port, so destination_port is exercised too.
        port, admin = h.free_ports(2)
        flt = rbac_network('net.', enforcement_type='CONTINUOUS', rules={
            'action': 'ALLOW', 'policies': {'local': policy(
                [{'destination_port': port}], [{'direct_remote_ip': cidr('127.0.0.1', 32)}])}})
        cfg = h.bootstrap([h.listener('tcp', port, [flt, h.tcp_proxy('tcp', 'echo')])],
                          [h.cluster('echo', [echo.port])], admin_port=admin)
        p = h.Petrel(cfg)
        p.start()
        self.addCleanup(p.close)
        return p, port

    def test_allow_list_miss_denies(self):
        with TcpEchoServer() as echo:
            p, port = self.start(rbac_network('net', rules={'policies': {
                'other-port': policy([{'destination_port_range': {'start': 1, 'end': 2}}],
                                     [ANY])}},
                shadow_rules={'action': 'DENY', 'policies': {'x': policy([ANY], [ANY])}}),
                echo)
            self.assert_closed(port)
            p.wait_stat('net.rbac.denied', 1)
            p.wait_stat('net.rbac.shadow_denied', 1)
            self.assertEqual(echo.accepted, 0)


class RbacSniTest(unittest.TestCase):
    """requested_server_name against the SNI tls_inspector reads from the ClientHello. No TLS is
    terminated: the echo upstream just sees the ClientHello bytes when the filter allows."""

    TLS_INSPECTOR = {'name': 'envoy.filters.listener.tls_inspector', 'typed_config': {
        '@type': 'type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.'
                 'TlsInspector'}}

    def hello(self, port, sni):
        """Sends a ClientHello with this SNI; returns the bytes echoed before EOF."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        raw = h.tcp_connect(port)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        with raw:
            raw.sendall(outgoing.read())
            try:
                return h.recv_until_eof(raw, limit=1)
            except (ConnectionResetError, BrokenPipeError):
                return b''

    def test_requested_server_name(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            flt = rbac_network('sni', rules={'policies': {'api': policy(
                [{'requested_server_name': {'suffix': '.api.example.com'}}], [ANY])}})
            cfg = h.bootstrap([h.listener('tcp', port, [flt, h.tcp_proxy('tcp', 'echo')],
                                          listener_filters=[self.TLS_INSPECTOR])],
                              [h.cluster('echo', [echo.port])], admin_port=admin)
            with h.Petrel(cfg) as p:
                self.assertEqual(self.hello(port, 'www.example.com'), b'')
                p.wait_stat('sni.rbac.denied', 1)
                self.assertEqual(echo.accepted, 0)
                self.assertEqual(self.hello(port, 'v1.api.example.com'), b'\x16')  # echoed
                p.wait_stat('sni.rbac.allowed', 1)


class RbacConfigTest(unittest.TestCase):

    def validate(self, cfg):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'c.json')
            with open(path, 'w') as f:
                json.dump(cfg, f)
            return h.run_petrel(['--mode', 'validate', '-c', path])

    def test_errors_name_the_field(self):
        port = h.free_port()
        flt = rbac_http(rules={'action': 'LOG', 'policies': {'p': policy(
            [{'matcher': {}}], [{'direct_remote_ip': cidr('10.0.0.0', 33)}])}})
        hcm = h.http_connection_manager(
            'ingress', h.route_config([h.vhost('all', ['*'], [h.route_prefix('/', 'a')])]),
            http_filters=[flt, h.router_filter()])
        cfg = h.bootstrap([h.listener('http', port, [hcm])], [h.cluster('a', [1])])
        rc, out, err = self.validate(cfg)
        self.assertNotEqual(rc, 0)
        prefix = ('static_resources.listeners[0].filter_chains[0].filters[0].typed_config.'
                  'http_filters[0].typed_config.rules.')
        self.assertIn(prefix + 'action: "LOG" is not supported', err)
        self.assertIn(prefix + 'policies.p.permissions[0].matcher: field is not supported', err)
        self.assertIn(prefix + 'policies.p.principals[0].direct_remote_ip.prefix_len: 33 is out '
                      'of range for an IPv4 address (at most 32)', err)

    def test_network_filter_rejects_header_rules(self):
        port = h.free_port()
        flt = rbac_network('net', rules={'policies': {'p': policy(
            [{'header': {'name': ':path', 'exact_match': '/'}}], [ANY])}})
        cfg = h.bootstrap([h.listener('tcp', port, [flt, h.tcp_proxy('tcp', 'a')])],
                          [h.cluster('a', [1])])
        rc, out, err = self.validate(cfg)
        self.assertNotEqual(rc, 0)
        self.assertIn('filters[0].typed_config.rules.policies.p.permissions[0].header: is not '
                      'supported by the RBAC network filter', err)
        # The network filter must not be last: tcp_proxy terminates the chain.
        cfg = h.bootstrap([h.listener('tcp', port, [rbac_network('net')])], [h.cluster('a', [1])])
        rc, out, err = self.validate(cfg)
        self.assertNotEqual(rc, 0)
        self.assertIn('the last filter must be a terminal filter', err)


if __name__ == '__main__':
    unittest.main()
