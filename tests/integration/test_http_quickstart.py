"""examples/quickstart.yaml, as shipped (only its ports moved to free ones): the direct
response, the /admin/ route proxied to petrel's own admin port, the TCP proxy to it, and the
stdout access log.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_http_quickstart.py -v
"""

import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

QUICKSTART = os.path.join(h.REPO_ROOT, 'examples', 'quickstart.yaml')
PORTS = {'admin': 9901, 'http': 10000, 'tcp': 10001}


def quickstart_with_free_ports():
    """The quickstart text with each of its ports replaced; returns (text, {role: port})."""
    with open(QUICKSTART) as f:
        text = f.read()
    new = dict(zip(PORTS, h.free_ports(len(PORTS))))
    for role, old in PORTS.items():
        pattern = r'port_value: %d\b' % old
        if not re.search(pattern, text):
            raise AssertionError('quickstart.yaml no longer uses port %d for %s' % (old, role))
        text = re.sub(pattern, 'port_value: %d' % new[role], text)
    return text, new


class Quickstart(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        text, cls.ports = quickstart_with_free_ports()
        cls.p = h.Petrel(text, fmt='yaml', admin_port=cls.ports['admin'])
        try:
            cls.p.start()
            h.wait_listening(cls.ports['http'])
            h.wait_listening(cls.ports['tcp'])
        except BaseException:
            cls.p.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.p.close()

    def test_validates(self):
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', QUICKSTART])
        self.assertEqual(rc, 0, out + err)

    def test_direct_response(self):
        r = h.http_request(self.ports['http'], 'GET', '/')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b'hello from petrel\n')
        r = h.http_request(self.ports['http'], 'GET', '/anything/else?x=1')
        self.assertEqual(r.body, b'hello from petrel\n')

    def test_proxied_admin_ready(self):
        direct = h.http_request(self.ports['admin'], 'GET', '/ready')
        r = h.http_request(self.ports['http'], 'GET', '/admin/ready')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, direct.body)
        self.assertIsNotNone(r.get('x-envoy-upstream-service-time'))
        self.p.wait_stat('cluster.admin.upstream_rq_200', lambda v: v and v >= 1)
        self.p.wait_stat('http.ingress_http.downstream_rq_2xx', lambda v: v and v >= 1)

    def test_keepalive_mixed(self):
        with h.HttpClientConn(self.ports['http']) as c:
            for path in ('/', '/admin/ready', '/', '/admin/ready'):
                self.assertEqual(c.request('GET', path).status, 200)

    def test_access_log_on_stdout(self):
        h.http_request(self.ports['http'], 'GET', '/logged-by-quickstart')
        h.wait_until(lambda: '"GET /logged-by-quickstart HTTP/1.1" 200 -' in self.p.stdout(),
                     10, 0.1, 'quickstart access log line not on stdout')

    def test_tcp_proxy_to_admin(self):
        with h.tcp_connect(self.ports['tcp']) as s:
            s.sendall(b'GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
            data = h.recv_until_eof(s)
        self.assertTrue(data.startswith(b'HTTP/1.1 200'), data[:100])


if __name__ == '__main__':
    unittest.main()
