"""Load balancing policies through the real binary: LEAST_REQUEST sends new tcp_proxy
sessions to the host with the fewest open ones; RANDOM spreads HTTP requests evenly
(health and retries: tests/unit/discovery/test_lb.c); typed_extension_protocol_options set
the upstream HTTP/1.1 options. Distributions are checked with wide bounds.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_load_balancing.py -v
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream, TcpEchoServer  # noqa: E402


def open_session(port, servers):
    """A tcp_proxy session with one echo round trip; returns (socket, index of the server
    that accepted it)."""
    before = [s.accepted for s in servers]
    s = h.tcp_connect(port)
    s.sendall(b'x')
    if h.recv_exact(s, 1) != b'x':
        raise AssertionError('no echo')
    h.wait_until(lambda: sum(x.accepted for x in servers) > sum(before), timeout=5,
                 message='upstream accept')
    after = [x.accepted for x in servers]
    return s, [i for i in range(len(servers)) if after[i] > before[i]][0]


class LeastRequestTest(unittest.TestCase):

    def test_new_sessions_go_to_the_least_loaded_host(self):
        with TcpEchoServer() as a, TcpEchoServer() as b:
            servers = [a, b]
            port, admin = h.free_ports(2)
            cfg = h.bootstrap([h.listener('tcp', port, [h.tcp_proxy('tcp', 'up')])],
                              [h.cluster('up', [a.port, b.port], lb_policy='LEAST_REQUEST',
                                         least_request_lb_config={'choice_count': 100})],
                              admin_port=admin)
            with h.Petrel(cfg) as p:
                sessions = [open_session(port, servers) for _ in range(6)]
                # Every second session breaks a tie; the other goes to the emptier host.
                self.assertEqual(sorted(i for _, i in sessions).count(0), 3)
                # Close the sessions on one host: the next three all go there.
                emptied = sessions[0][1]
                for s, i in sessions:
                    if i == emptied:
                        s.close()
                p.wait_stat('cluster.up.upstream_cx_active', 3)
                more = [open_session(port, servers) for _ in range(3)]
                self.assertEqual([i for _, i in more], [emptied] * 3)
                for s, _ in sessions + more:
                    s.close()


class RandomTest(unittest.TestCase):

    def test_requests_spread_evenly(self):
        ups = [HttpUpstream(name=n) for n in ('a', 'b', 'c')]
        try:
            port, admin = h.free_ports(2)
            hcm = h.http_connection_manager('in', h.route_config([
                h.vhost('all', ['*'], [h.route_prefix('/', 'up')])]))
            cfg = h.bootstrap([h.listener('http', port, [hcm])],
                              [h.cluster('up', [u.port for u in ups], lb_policy='RANDOM')],
                              admin_port=admin)
            with h.Petrel(cfg):
                counts = {'a': 0, 'b': 0, 'c': 0}
                with h.HttpClientConn(port) as c:
                    for _ in range(600):
                        r = c.request('GET', '/')
                        self.assertEqual(r.status, 200)
                        counts[r.get('x-upstream-name')] += 1
                # 200 expected each; 11 standard deviations is 130.
                for name, n in counts.items():
                    self.assertTrue(70 < n < 330, counts)
        finally:
            for u in ups:
                u.close()


class HttpProtocolOptionsTest(unittest.TestCase):

    def test_max_requests_per_connection_from_typed_extension_protocol_options(self):
        up = HttpUpstream(name='a')
        self.addCleanup(up.close)
        port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('in', h.route_config([
            h.vhost('all', ['*'], [h.route_prefix('/', 'up')])]))
        opts = {'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
            '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
            'common_http_protocol_options': {'max_requests_per_connection': 2},
            'explicit_http_config': {'http_protocol_options': {}}}}
        cfg = h.bootstrap([h.listener('http', port, [hcm])],
                          [h.cluster('up', [up.port], typed_extension_protocol_options=opts)],
                          admin_port=admin)
        with h.Petrel(cfg) as p:
            with h.HttpClientConn(port) as c:
                for _ in range(6):
                    self.assertEqual(c.request('GET', '/').status, 200)
            # Two requests per upstream connection: three connections for six requests.
            self.assertEqual(p.stat('cluster.up.upstream_cx_total'), 3)


if __name__ == '__main__':
    unittest.main(verbosity=2)
