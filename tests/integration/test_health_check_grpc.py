"""gRPC health checking (HealthCheck.grpc_health_check) against a real gRPC server
(python3-grpcio) serving grpc.health.v1.Health/Check: a host is healthy while its answer is
SERVING; NOT_SERVING, SERVICE_UNKNOWN, a gRPC error status (the service unknown to the
server) and a server that is gone each fail it, and it comes back when the server serves
again. The Check carries service_name, :authority (authority, or the cluster's name),
initial_metadata and user-agent Envoy/HC; with reuse_connection the Checks share one HTTP/2
connection. A bad grpc_health_check field is an error naming it.

Checks run every 0.1s; every wait is for a condition, nothing asserts an upper bound on time.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_health_check_grpc.py -v
"""

import concurrent.futures
import json
import os
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

try:
    import grpc
except ImportError:  # python3-grpcio (scripts/install-deps.sh test)
    grpc = None

SERVING, NOT_SERVING, SERVICE_UNKNOWN = 1, 2, 3


class HealthServer:
    """grpc.health.v1.Health/Check without protobuf: the request's service name is read
    from its bytes, the answer is HealthCheckResponse{status} written by hand."""

    def __init__(self, port=0):
        self.status = {'': SERVING, 'backend': SERVING}
        self.checks = []   # (service, metadata dict) per Check
        self.peers = set()  # client connections seen
        self.lock = threading.Lock()

        def check(request, context):
            service = request[2:].decode() if request[:1] == b'\x0a' else ''
            with self.lock:
                self.checks.append((service, dict(context.invocation_metadata())))
                self.peers.add(context.peer())
                status = self.status.get(service)
            if status is None:
                context.abort(grpc.StatusCode.NOT_FOUND, 'unknown service')
            return bytes([0x08, status])

        handler = grpc.method_handlers_generic_handler('grpc.health.v1.Health', {
            'Check': grpc.unary_unary_rpc_method_handler(check)})
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port('127.0.0.1:%d' % port)
        self.server.start()

    def set(self, service, status):
        with self.lock:
            if status is None:
                self.status.pop(service, None)
            else:
                self.status[service] = status

    def stop(self):
        self.server.stop(None)


def grpc_hc(**grpc_fields):
    return {'timeout': '1s', 'interval': '0.1s', 'no_traffic_interval': '0.1s',
            'unhealthy_threshold': 1, 'healthy_threshold': 1,
            'grpc_health_check': grpc_fields}


@unittest.skipUnless(grpc is not None, 'python3-grpcio is not installed')
class GrpcHealthCheckTest(unittest.TestCase):

    def setUp(self):
        self.srv = HealthServer()
        self.addCleanup(lambda: self.srv.stop())
        self.port, self.admin = h.free_ports(2)

    def start(self, hc):
        cluster = h.cluster('c', [self.srv.port], health_checks=[hc])
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], [h.route_prefix('/', 'c')])]))
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])], [cluster],
                          admin_port=self.admin)
        self.p = h.Petrel(cfg)
        self.addCleanup(self.p.close)
        self.p.start()
        return self.p

    def test_serving_and_not(self):
        p = self.start(grpc_hc(service_name='backend', authority='health.test',
                               initial_metadata=[{'header': {'key': 'x-hc', 'value': 'yes'}}]))
        p.wait_stat('cluster.c.membership_healthy', 1)
        service, md = self.srv.checks[-1]
        self.assertEqual(service, 'backend')
        self.assertEqual(md.get('x-hc'), 'yes')
        self.assertIn('Envoy/HC', md.get('user-agent', ''))
        # NOT_SERVING, then SERVICE_UNKNOWN, then an error status: each fails the host
        for status in (NOT_SERVING, SERVICE_UNKNOWN, None):
            self.srv.set('backend', status)
            p.wait_stat('cluster.c.membership_healthy', 0)
            self.srv.set('backend', SERVING)
            p.wait_stat('cluster.c.membership_healthy', 1)
        self.assertGreaterEqual(p.stat('cluster.c.health_check.failure'), 3)
        self.assertEqual(p.stat('cluster.c.health_check.network_failure'), 0)
        # reuse_connection (the default): the Checks went on one connection
        self.assertEqual(len(self.srv.peers), 1)

    def test_server_gone_and_back(self):
        p = self.start(grpc_hc())
        p.wait_stat('cluster.c.membership_healthy', 1)
        port = self.srv.port
        self.srv.stop()
        p.wait_stat('cluster.c.membership_healthy', 0)
        h.wait_until(lambda: p.stat('cluster.c.health_check.network_failure') >= 1, 10)
        self.srv = HealthServer(port)
        p.wait_stat('cluster.c.membership_healthy', 1, timeout=20)
        self.assertEqual(self.srv.checks[-1][0], '')  # no service_name: the server's health

    def test_no_reuse_opens_a_connection_per_check(self):
        p = self.start(grpc_hc(**{}) | {'reuse_connection': False})
        h.wait_until(lambda: len(self.srv.checks) >= 3, 10)
        self.assertGreaterEqual(len(self.srv.peers), 2)
        self.assertEqual(p.stat('cluster.c.membership_healthy'), 1)

    def test_config_errors(self):
        for fields, want in [({'service_nam': 'x'}, 'grpc_health_check.service_nam: unknown field'),
                             ({'authority': 'a\r\nb'}, 'authority: must not contain CR or LF'),
                             ({'initial_metadata': [{'header': {'key': ''}}]},
                              'initial_metadata[0]')]:
            cluster = h.cluster('c', [self.srv.port], health_checks=[grpc_hc(**fields)])
            cfg = h.bootstrap([], [cluster])
            with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
                json.dump(cfg, f)
            self.addCleanup(os.unlink, f.name)
            rc, out, err = h.run_petrel(['--mode', 'validate', '-c', f.name])
            self.assertEqual(rc, 1, fields)
            self.assertIn(want, err)


if __name__ == '__main__':
    unittest.main()
