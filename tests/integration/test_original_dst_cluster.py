"""ORIGINAL_DST clusters without interception: the override header (use_http_header,
http_header_name), upstream_port_override, what happens without any destination, and
configurations Envoy refuses (refused here too, naming the field).

With iptables, see test_sidecar_interception.py; these need nothing but loopback.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer  # noqa: E402


def odst(name, **extra):
    c = {'name': name, 'type': 'ORIGINAL_DST', 'lb_policy': 'CLUSTER_PROVIDED',
         'connect_timeout': '1s'}
    c.update(extra)
    return c


class OriginalDstHeaderTest(unittest.TestCase):

    def setUp(self):
        self.up = HttpUpstream(name='up')
        self.addCleanup(self.up.close)
        self.other = HttpUpstream(name='other')
        self.addCleanup(self.other.close)

    def start(self, cluster, **hcm_extra):
        port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('odst', h.route_config([h.vhost('all', ['*'], [
            h.route_prefix('/', cluster['name'], timeout='5s')])]), **hcm_extra)
        cfg = h.bootstrap([h.listener('http', port, [hcm])], [cluster], admin_port=admin)
        p = h.Petrel(cfg, concurrency=2)  # each worker keeps its own copy of the hosts
        p.start()
        self.addCleanup(p.close)
        return p, port

    def test_default_header_picks_the_host(self):
        p, port = self.start(odst('dst', original_dst_lb_config={'use_http_header': True}))
        for up in (self.up, self.other, self.up):
            r = h.http_request(port, path='/x', headers={
                'x-envoy-original-dst-host': '127.0.0.1:%d' % up.port})
            self.assertEqual(r.status, 200)
            self.assertEqual(r.get('x-upstream-name'), up.name)
        # One host per destination, the same one again for the repeated address.
        p.wait_stat('cluster.dst.membership_total', 2)
        self.assertEqual(p.stat('cluster.dst.upstream_rq_total'), 3)
        # /clusters lists the hosts made on demand, with their counters.
        status, _, body = p.admin_get('/clusters')
        self.assertEqual(status, 200)
        text = body.decode()
        self.assertIn('dst::127.0.0.1:%d::rq_total::2\n' % self.up.port, text)
        self.assertIn('dst::127.0.0.1:%d::rq_total::1\n' % self.other.port, text)
        status, _, body = p.admin_get('/clusters?format=json')
        dst = [c for c in __import__('json').loads(body)['cluster_statuses']
               if c['name'] == 'dst'][0]
        self.assertEqual(sorted(hs['address']['socket_address']['port_value']
                                for hs in dst['host_statuses']),
                         sorted([self.up.port, self.other.port]))

    def test_named_header_and_port_override(self):
        p, port = self.start(odst('dst', original_dst_lb_config={
            'use_http_header': True, 'http_header_name': 'X-Target',
            'upstream_port_override': self.other.port}))
        r = h.http_request(port, headers={'x-target': '127.0.0.1:1'})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.get('x-upstream-name'), 'other')  # the port is the override's
        # The default header means nothing to this cluster.
        r = h.http_request(port, headers={'x-envoy-original-dst-host': '127.0.0.1:%d'
                                          % self.up.port})
        self.assertEqual(r.status, 503)

    def test_bad_or_missing_destination_is_503(self):
        p, port = self.start(odst('dst', original_dst_lb_config={'use_http_header': True}))
        for value in ('not-an-address', '127.0.0.1', '[::1', '127.0.0.1:99999'):
            r = h.http_request(port, headers={'x-envoy-original-dst-host': value})
            self.assertEqual(r.status, 503, value)
        p.wait_stat('cluster.dst.original_dst_host_invalid', 4)
        # No header, and a connection that original_dst did not restore: no host at all.
        r = h.http_request(port)
        self.assertEqual(r.status, 503)
        self.assertIn(b'no healthy upstream', r.body)
        p.wait_stat('cluster.dst.upstream_cx_none_healthy', 5)
        self.assertEqual(len(self.up.requests), 0)

    def test_upstream_down(self):
        dead = h.free_port()
        p, port = self.start(odst('dst', original_dst_lb_config={'use_http_header': True}))
        r = h.http_request(port, headers={'x-envoy-original-dst-host': '127.0.0.1:%d' % dead})
        self.assertEqual(r.status, 503)
        p.wait_stat('cluster.dst.upstream_cx_connect_fail', 1)

    def test_many_requests_many_connections(self):
        # New connections land on either worker; every one finds the same two hosts.
        p, port = self.start(odst('dst', original_dst_lb_config={'use_http_header': True}))
        for i in range(40):
            up = (self.up, self.other)[i % 2]
            r = h.http_request(port, headers={'x-envoy-original-dst-host':
                                              '127.0.0.1:%d' % up.port})
            self.assertEqual(r.get('x-upstream-name'), up.name)
        self.assertEqual(p.stat('cluster.dst.membership_total'), 2)
        self.assertEqual(len(self.up.requests) + len(self.other.requests), 40)

    def test_idle_hosts_are_cleaned(self):
        p, port = self.start(odst('dst', cleanup_interval='1s',
                                  original_dst_lb_config={'use_http_header': True},
                                  common_http_protocol_options={'idle_timeout': '0.5s'}))
        r = h.http_request(port, headers={'x-envoy-original-dst-host':
                                          '127.0.0.1:%d' % self.up.port})
        self.assertEqual(r.status, 200)
        p.wait_stat('cluster.dst.membership_total', 1)
        # Its pooled connection times out, then two cleanups later the host is gone.
        p.wait_stat('cluster.dst.upstream_cx_active', 0)
        p.wait_stat('cluster.dst.membership_total', 0, timeout=15)
        # And it comes back on demand.
        r = h.http_request(port, headers={'x-envoy-original-dst-host':
                                          '127.0.0.1:%d' % self.up.port})
        self.assertEqual(r.status, 200)
        p.wait_stat('cluster.dst.membership_total', 1)


class OriginalDstTcpTest(unittest.TestCase):

    def test_tcp_proxy_without_original_destination_closes(self):
        with TcpEchoServer() as echo:
            port, admin = h.free_ports(2)
            cfg = h.bootstrap([h.listener('tcp', port, [h.tcp_proxy('tcp', 'dst')])],
                              [odst('dst')], admin_port=admin)
            with h.Petrel(cfg) as p:
                with h.tcp_connect(port) as s:
                    s.sendall(b'x')
                    try:
                        self.assertEqual(h.recv_until_eof(s), b'')
                    except ConnectionResetError:
                        pass
                p.wait_stat('cluster.dst.upstream_cx_none_healthy', 1)
                self.assertEqual(echo.accepted, 0)


class OriginalDstConfigTest(unittest.TestCase):

    def validate(self, clusters, listeners=()):
        cfg = h.bootstrap(list(listeners), clusters)
        p = h.Petrel(cfg)  # only for its config file
        path = p.write_config(cfg)
        try:
            return h.run_petrel(['--mode', 'validate', '-c', path])
        finally:
            p.close()

    def assertRejected(self, clusters, *errors, listeners=()):
        rc, _, err = self.validate(clusters, listeners)
        self.assertEqual(rc, 1, err)
        for e in errors:
            self.assertIn(e, err)

    def test_refused(self):
        C = 'static_resources.clusters[0].'
        self.assertRejected([odst('d', load_assignment={'cluster_name': 'd', 'endpoints': []})],
                            C + 'load_assignment: ORIGINAL_DST clusters must have no load '
                                'assignment configured')
        self.assertRejected([odst('d', lb_policy='ROUND_ROBIN')],
                            C + 'lb_policy: ROUND_ROBIN is not valid for a cluster of type '
                                'ORIGINAL_DST: only CLUSTER_PROVIDED is allowed')
        self.assertRejected([{'name': 'd', 'type': 'ORIGINAL_DST'}], C + 'lb_policy: ')
        self.assertRejected([h.cluster('s', [1], lb_policy='CLUSTER_PROVIDED')],
                            C + 'lb_policy: CLUSTER_PROVIDED is allowed only with a cluster '
                                'of type ORIGINAL_DST')
        self.assertRejected([odst('d', original_dst_lb_config={'http_header_name': 'x'})],
                            C + 'original_dst_lb_config.http_header_name: "x" is set but '
                                'use_http_header is false')
        self.assertRejected([odst('d', original_dst_lb_config={'metadata_key': {'key': 'k'}})],
                            C + 'original_dst_lb_config.metadata_key: field is not supported')
        self.assertRejected([odst('d', original_dst_lb_config={'use_http_headers': True})],
                            C + 'original_dst_lb_config.use_http_headers: unknown field')
        self.assertRejected([h.cluster('s', [1], original_dst_lb_config={})],
                            C + 'original_dst_lb_config: applies only to a cluster of type '
                                'ORIGINAL_DST')
        self.assertRejected([odst('d', cleanup_interval='0s')],
                            C + 'cleanup_interval: must be greater than 0')
        self.assertRejected([odst('d', outlier_detection={})],
                            C + 'outlier_detection: is not supported for a cluster of type '
                                'ORIGINAL_DST')

    def test_listener_refused(self):
        L = 'static_resources.listeners[0].'
        port = h.free_port()
        lst = h.listener('l', port, [h.tcp_proxy('t', 'd')],
                         listener_filters=[{'name': 'envoy.filters.listener.original_dst',
                                            'typed_config': {
                                                '@type': 'type.googleapis.com/envoy.extensions.'
                                                'filters.listener.original_dst.v3.OriginalDst',
                                                'traffic_direction': 'INBOUND'}}])
        self.assertRejected([odst('d')], L + 'listener_filters[0].typed_config.'
                                             'traffic_direction: unknown field',
                            listeners=[lst])
        lst = h.listener('l', port, [h.tcp_proxy('t', 'd')], use_original_dst=True,
                         bind_to_port=False)
        self.assertRejected([odst('d')], L + 'use_original_dst: has no effect on a listener '
                                             'with bind_to_port false', listeners=[lst])
        lst = h.listener('l', port, [h.tcp_proxy('t', 'd')], traffic_direction='SIDEWAYS')
        self.assertRejected([odst('d')], L + 'traffic_direction: "SIDEWAYS" is not a valid '
                                             'value', listeners=[lst])
        lst = h.listener('l', port, [h.tcp_proxy('t', 'd')], listener_filters=[
            {'name': 'envoy.filters.listener.proxy_protocol', 'typed_config': {
                '@type': 'type.googleapis.com/envoy.extensions.filters.listener.'
                         'proxy_protocol.v3.ProxyProtocol'}}])
        self.assertRejected([odst('d')], L + 'listener_filters[0].typed_config.@type: '
                                             '"type.googleapis.com/envoy.extensions.filters.'
                                             'listener.proxy_protocol.v3.ProxyProtocol" is not '
                                             'a supported listener filter', listeners=[lst])

    def test_istio_passthrough_and_blackhole_accepted(self):
        clusters = [
            odst('PassthroughCluster', connect_timeout='10s',
                 circuit_breakers={'thresholds': [{'max_connections': 4294967295,
                                                   'max_pending_requests': 4294967295,
                                                   'max_requests': 4294967295,
                                                   'max_retries': 4294967295,
                                                   'track_remaining': True}]},
                 typed_extension_protocol_options={
                     'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
                         '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.'
                                  'HttpProtocolOptions',
                         'use_downstream_protocol_config': {
                             'http_protocol_options': {}, 'http2_protocol_options': {}}}}),
            {'name': 'BlackHoleCluster', 'type': 'STATIC', 'connect_timeout': '10s'},
            odst('InboundPassthroughCluster', original_dst_lb_config={
                'upstream_port_override': 8080}),
        ]
        rc, _, err = self.validate(clusters)
        self.assertEqual(rc, 0, err)


if __name__ == '__main__':
    unittest.main()
