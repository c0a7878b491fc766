"""Upstream max_connection_duration (HttpProtocolOptions.common_http_protocol_options), as
Envoy drains: once a pooled connection is that old it takes no new request; an idle one is
closed at once, a busy HTTP/1.1 one after its response, an HTTP/2 one sends GOAWAY and closes
once its streams finished. Each counts in cluster.<name>.upstream_cx_max_duration_reached,
and the next request opens a new connection.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_upstream_connection_duration.py -v
"""

import json
import os
import socket
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402

HPO = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions'


def protocol_options(h2_upstream=False, **common):
    explicit = {'http2_protocol_options': {}} if h2_upstream else {'http_protocol_options': {}}
    return {'typed_extension_protocol_options': {HPO: {
        '@type': 'type.googleapis.com/' + HPO,
        'common_http_protocol_options': common,
        'explicit_http_config': explicit}}}


class HoldingH2Server:
    """HTTP/2 upstream (prior knowledge) that answers 200 with the connection's number as
    body; /hold requests wait for release(). GOAWAY frames from the client are recorded in
    `goaways` (and kept from the h2 state machine, which would refuse to answer after one)."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(('127.0.0.1', 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.accepted = 0
        self.closed = 0
        self.goaways = []
        self.requests = 0
        self.released = threading.Event()
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.stop = True
        self.released.set()
        try:
            self.lsock.close()
        except OSError:
            pass

    def _accept(self):
        while not self.stop:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(s, self.accepted), daemon=True).start()

    def _serve(self, s, cid):
        c = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding='utf-8'))
        c.initiate_connection()
        held = []
        buf = b''
        preface = False
        s.settimeout(0.05)
        try:
            s.sendall(c.data_to_send())
            while not self.stop:
                try:
                    data = s.recv(65536)
                    if not data:
                        return
                except socket.timeout:
                    data = b''
                buf += data
                events = []
                if not preface:
                    if len(buf) < 24:
                        continue
                    events += c.receive_data(buf[:24])
                    buf, preface = buf[24:], True
                while len(buf) >= 9:
                    n = int.from_bytes(buf[:3], 'big')
                    if len(buf) < 9 + n:
                        break
                    fr, buf = buf[:9 + n], buf[9 + n:]
                    if fr[3] == 7:
                        self.goaways.append((cid, int.from_bytes(fr[13:17], 'big')))
                        continue
                    events += c.receive_data(fr)
                for ev in events:
                    if isinstance(ev, h2.events.RequestReceived):
                        self.requests += 1
                        path = dict(ev.headers).get(':path', '/')
                        if path.startswith('/hold'):
                            held.append(ev.stream_id)
                        else:
                            self._answer(c, ev.stream_id, cid)
                if held and self.released.is_set():
                    for sid in held:
                        self._answer(c, sid, cid)
                    held = []
                out = c.data_to_send()
                if out:
                    s.sendall(out)
        except OSError:
            return
        finally:
            self.closed += 1
            s.close()

    @staticmethod
    def _answer(c, sid, cid):
        body = json.dumps({'conn_id': cid}).encode()
        c.send_headers(sid, [(':status', '200'), ('content-length', str(len(body)))])
        c.send_data(sid, body, end_stream=True)


class Base(unittest.TestCase):

    def start(self, upstream_port, h2_upstream=False, **common):
        self.port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], [h.route_prefix('/', 'up', timeout='30s')])]))
        cl = h.cluster('up', [upstream_port], **protocol_options(h2_upstream, **common))
        p = h.Petrel(h.bootstrap([h.listener('l', self.port, [hcm])], [cl], admin_port=admin))
        p.start()
        self.addCleanup(p.close)
        return p


class Http1Upstream(Base):

    def setUp(self):
        self.up = HttpUpstream(name='up')
        self.addCleanup(self.up.close)

    def conn_id(self, path='/echo'):
        r = h.http_request(self.port, 'GET', path)
        self.assertEqual(r.status, 200)
        return json.loads(r.body)['conn_id']

    def test_idle_connection_closed_when_old(self):
        p = self.start(self.up.port, max_connection_duration='0.3s')
        first = self.conn_id()
        p.wait_stat('cluster.up.upstream_cx_max_duration_reached', 1)
        self.up.wait_for(lambda: self.up.active == 0, message='upstream connection closed')
        p.wait_stat('cluster.up.upstream_cx_destroy_local', 1)
        self.assertNotEqual(self.conn_id(), first)

    def test_busy_connection_closes_after_its_response(self):
        # The request is under way when the duration runs out: it completes, then the
        # connection closes and is not reused.
        p = self.start(self.up.port, max_connection_duration='0.2s')
        result = {}

        def slow():
            result['r'] = h.http_request(self.port, 'GET', '/delay/2000')
        t = threading.Thread(target=slow)
        t.start()
        p.wait_stat('cluster.up.upstream_cx_max_duration_reached', 1)
        t.join(h.scaled(30))
        self.assertEqual(result['r'].status, 200)
        first = json.loads(result['r'].body)['conn_id']
        self.up.wait_for(lambda: self.up.active == 0, message='upstream connection closed')
        self.assertNotEqual(self.conn_id(), first)
        self.assertEqual(p.stat('cluster.up.upstream_cx_max_duration_reached'), 1)

    def test_without_it_connection_is_reused(self):
        p = self.start(self.up.port)
        first = self.conn_id()
        self.assertEqual(self.conn_id(), first)
        self.assertEqual(p.stat('cluster.up.upstream_cx_max_duration_reached', 0), 0)

    def test_upstream_down(self):
        p = self.start(h.dead_port(), max_connection_duration='0.2s')
        self.assertEqual(h.http_request(self.port, 'GET', '/').status, 503)
        p.wait_stat('cluster.up.upstream_cx_connect_fail', 1)
        self.assertEqual(p.stat('cluster.up.upstream_cx_max_duration_reached', 0), 0)

    def test_upstream_closes_first(self):
        # The upstream closes the connection before the duration: nothing left to drain.
        p = self.start(self.up.port, max_connection_duration='0.5s')
        self.assertEqual(h.http_request(self.port, 'GET', '/close').status, 200)
        self.up.wait_for(lambda: self.up.active == 0, message='upstream connection closed')
        p.wait_stat('cluster.up.upstream_cx_destroy', 1)
        self.assertEqual(self.conn_id() > 0, True)


class Http2Upstream(Base):

    def setUp(self):
        self.up = HoldingH2Server()
        self.addCleanup(self.up.close)

    def get(self, path='/x'):
        r = h.http_request(self.port, 'GET', path)
        self.assertEqual(r.status, 200)
        return json.loads(r.body)['conn_id']

    def test_goaway_then_close_after_streams(self):
        p = self.start(self.up.port, h2_upstream=True, max_connection_duration='0.2s')
        result = {}

        def held():
            result['r'] = h.http_request(self.port, 'GET', '/hold')
        t = threading.Thread(target=held)
        t.start()
        h.wait_until(lambda: self.up.requests >= 1, message='held request upstream')
        p.wait_stat('cluster.up.upstream_cx_max_duration_reached', 1)
        h.wait_until(lambda: self.up.goaways, message='GOAWAY from petrel')
        self.assertEqual(self.up.goaways[0], (1, 0))          # NO_ERROR
        # A request now goes on a new connection, while the old one still finishes.
        self.assertEqual(self.get(), 2)
        self.up.released.set()
        t.join(h.scaled(30))
        self.assertEqual(result['r'].status, 200)
        self.assertEqual(json.loads(result['r'].body)['conn_id'], 1)
        h.wait_until(lambda: self.up.closed >= 1, message='first connection closed')
        p.wait_stat('cluster.up.upstream_cx_destroy_local', lambda v: v >= 1)

    def test_idle_h2_connection_closed(self):
        p = self.start(self.up.port, h2_upstream=True, max_connection_duration='0.2s')
        self.assertEqual(self.get(), 1)
        p.wait_stat('cluster.up.upstream_cx_max_duration_reached', 1)
        h.wait_until(lambda: self.up.closed >= 1, message='connection closed')
        self.assertEqual(self.get(), 2)


class Config(unittest.TestCase):

    def test_bad_duration_names_the_field(self):
        cfg = h.bootstrap([], [h.cluster('up', [1], **protocol_options(
            max_connection_duration='forever'))])
        import tempfile
        d = tempfile.mkdtemp()
        path = os.path.join(d, 'c.json')
        with open(path, 'w') as f:
            json.dump(cfg, f)
        rc, _, err = h.run_petrel(['--mode', 'validate', '-c', path])
        self.assertEqual(rc, 1)
        self.assertIn('common_http_protocol_options.max_connection_duration', err)


if __name__ == '__main__':
    unittest.main()
