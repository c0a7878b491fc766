"""HTTP/2 flow control tied to backpressure, with memory that stays flat: a 1 GiB download
and a 1 GiB upload stream through petrel between an HTTP/2 client and an HTTP/1.1 upstream
while petrel's RSS stays within a few MiB of where it started; a client that stops reading
(gives no window back) holds the upstream back instead of growing petrel's memory, and the
connection's other streams go on. Under the sanitizers the transfers are 256 MiB.

petrel's receive windows are set small here (1 MiB per stream, 2 MiB per connection), as an
edge or sidecar deployment sets them: with Envoy's defaults (256 MiB) a client may lawfully
have 256 MiB of upload in flight while the upstream reads slowly, and petrel holds what the
window allowed; the bound under test is that nothing beyond the window is ever held.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_http2_flow_control.py -v
"""

import hashlib
import os
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.settings  # noqa: E402

MIB = 1 << 20
SIZE = (256 if h.SANITIZE else 1024) * MIB
WINDOW = 4 * MIB               # the client's stream window
GROWTH_LIMIT_KIB = 24 * 1024  # what petrel may grow by while gigabytes pass (1-5 MiB seen)


class RssWatch:
    """Samples petrel's RSS every 0.2 s in a thread; .peak is the highest seen."""

    def __init__(self, p):
        self.p, self.peak, self.stop = p, p.rss_kb(), threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.wait(0.2):
            try:
                self.peak = max(self.peak, self.p.rss_kb())
            except Exception:
                return

    def done(self):
        self.stop.set()
        self.t.join()
        return self.peak


class BigClient:
    """An h2 connection for big bodies: counts and hashes what it receives, keeps nothing."""

    def __init__(self, port):
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=h.scaled(30))
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding='utf-8'))
        self.conn.initiate_connection()
        # (a SETTINGS of its own: h2 writes its defaults into the first one)
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW})
        self.conn.increment_flow_control_window(16 * MIB)
        self.sock.sendall(self.conn.data_to_send())
        self.got = {}      # sid -> bytes received
        self.sha = {}
        self.ended = set()
        self.status = {}
        self.ack = True    # give window back as data arrives

    def request(self, method, path, end=True, headers=()):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(':method', method), (':path', path), (':scheme', 'http'),
                                     (':authority', 'test')] + list(headers), end_stream=end)
        self.got[sid], self.sha[sid] = 0, hashlib.sha256()
        self.sock.sendall(self.conn.data_to_send())
        return sid

    def read(self, timeout=0.2):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return
        if not data:
            raise AssertionError('petrel closed the connection')
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                self.status[ev.stream_id] = dict(ev.headers).get(':status')
            elif isinstance(ev, h2.events.DataReceived):
                self.got[ev.stream_id] += len(ev.data)
                self.sha[ev.stream_id].update(ev.data)
                if self.ack:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.ended.add(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                raise AssertionError('stream %d reset' % ev.stream_id)
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def upload(self, sid, n):
        """Sends n pattern bytes on sid as the windows allow, reading meanwhile."""
        sent = 0
        while sent < n:
            win = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if win <= 0:
                self.read(0.05)
                continue
            take = min(win, n - sent, 256 * 1024)
            chunk = h.pattern_bytes(sent, take)
            for i in range(0, take, self.conn.max_outbound_frame_size):
                piece = chunk[i:i + self.conn.max_outbound_frame_size]
                self.conn.send_data(sid, piece, end_stream=sent + i + len(piece) == n)
            sent += take
            self.sock.sendall(self.conn.data_to_send())
        return sent

    def close(self):
        self.sock.close()


class FlowControlTest(unittest.TestCase):

    def setUp(self):
        self.up = HttpUpstream(name='A', store_body_limit=0)
        self.addCleanup(self.up.close)
        self.port, self.admin = h.free_ports(2)
        hcm = h.http_connection_manager('ingress', h.route_config([h.vhost('all', ['*'], [
            h.route_prefix('/', 'a', timeout='0s', idle_timeout='60s')])]),
            http2_protocol_options={'initial_stream_window_size': MIB,
                                    'initial_connection_window_size': 2 * MIB})
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])], [h.cluster('a', [self.up.port])],
                          admin_port=self.admin)
        self.p = h.Petrel(cfg)
        self.addCleanup(self.p.close)
        self.p.start()
        # warm: one small exchange, so first-use allocations are in the baseline
        c = BigClient(self.port)
        sid = c.request('GET', '/bytes/%d' % MIB)
        h.wait_until(lambda: c.read() or sid in c.ended, 30)
        c.close()
        time.sleep(h.scaled(1.5))  # a housekeeping tick: buffers given back
        self.base = self.p.rss_kb()

    def test_download_one_gib(self):
        c = BigClient(self.port)
        self.addCleanup(c.close)
        watch = RssWatch(self.p)
        sid = c.request('GET', '/bytes/%d' % SIZE)
        h.wait_until(lambda: c.read() or sid in c.ended, 300, interval=0,
                     message='the download to end')
        peak = watch.done()
        self.assertEqual(c.status[sid], '200')
        self.assertEqual(c.got[sid], SIZE)
        self.assertEqual(c.sha[sid].hexdigest(), h.sha256_pattern(SIZE))
        if not h.SANITIZE:
            self.assertLess(peak - self.base, GROWTH_LIMIT_KIB,
                            'RSS grew %d KiB over %d' % (peak - self.base, self.base))

    def test_upload_one_gib(self):
        c = BigClient(self.port)
        self.addCleanup(c.close)
        watch = RssWatch(self.p)
        sid = c.request('POST', '/echo', end=False,
                        headers=[('content-length', str(SIZE))])
        c.upload(sid, SIZE)
        h.wait_until(lambda: c.read() or sid in c.ended, 300, interval=0,
                     message='the answer to the upload')
        peak = watch.done()
        self.assertEqual(c.status[sid], '200')
        rec = self.up.requests[-1]
        self.assertEqual(rec['body_len'], SIZE)
        self.assertEqual(rec['body_sha256'], h.sha256_pattern(SIZE))
        if not h.SANITIZE:
            self.assertLess(peak - self.base, GROWTH_LIMIT_KIB,
                            'RSS grew %d KiB over %d' % (peak - self.base, self.base))

    def test_reader_that_stops_holds_the_upstream_back(self):
        c = BigClient(self.port)
        self.addCleanup(c.close)
        c.ack = False  # no window back: the stream's 4 MiB and the connection's 16 MiB
        sid = c.request('GET', '/bytes/%d' % SIZE)
        h.wait_until(lambda: c.read() or c.got[sid] >= 4 * MIB, 60)
        # stalled: nothing more arrives, petrel does not buffer the gigabyte
        time.sleep(h.scaled(2))
        got = c.got[sid]
        c.read(0.5)
        self.assertLessEqual(c.got[sid], 4 * MIB + 64 * 1024)
        if not h.SANITIZE:
            self.assertLess(self.p.rss_kb() - self.base, GROWTH_LIMIT_KIB)
        # another stream on the connection still completes (the connection window has room)
        other = c.request('GET', '/bytes/1000')
        h.wait_until(lambda: c.read() or other in c.ended, 30)
        self.assertEqual(c.got[other], 1000)
        self.assertGreaterEqual(got, 4 * MIB - 64 * 1024)
        # reading again: the rest flows
        c.ack = True
        c.conn.acknowledge_received_data(c.got[sid], sid)
        c.sock.sendall(c.conn.data_to_send())
        h.wait_until(lambda: c.read() or c.got[sid] >= 64 * MIB, 120)


if __name__ == '__main__':
    unittest.main()
