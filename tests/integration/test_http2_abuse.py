"""Downstream HTTP/2 against hostile and broken clients: malformed requests (missing
pseudo-headers, connection-specific headers, content-length against DATA, uppercase names),
with and without override_stream_error_on_invalid_http_message; header lists over the limits;
and the flood limits of Http2ProtocolOptions (PING, SETTINGS, RST_STREAM, empty DATA,
PRIORITY, WINDOW_UPDATE), each closing only the offending connection and counting Envoy's
http2.* counter. Raw frames are written by hand where the h2 package would refuse to.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_http2_abuse.py -v
"""

import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from h2client import (H2Client, PING, SETTINGS_EMPTY, frame, priority_frame,  # noqa: E402
                      rst_frame)
from hpack import Encoder  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402


def hcm(stat_prefix, h2opts=None, **extra):
    if h2opts is not None:
        extra['http2_protocol_options'] = h2opts
    return h.http_connection_manager(stat_prefix, h.route_config([
        h.vhost('all', ['*'], [h.route_prefix('/', 'app', timeout='10s')])]), **extra)


def headers_frame(sid, hdrs, end_stream=True, enc=None):
    block = (enc or Encoder()).encode(hdrs)
    return frame(1, 0x4 | (0x1 if end_stream else 0), sid, block)


def request_headers(path='/echo', method='GET', extra=()):
    return [(':method', method), (':path', path), (':scheme', 'http'),
            (':authority', 'test')] + list(extra)


class AbuseBase(unittest.TestCase):

    def start(self, stat_prefix='ab', h2opts=None, **extra):
        up = HttpUpstream(name='app')
        self.addCleanup(up.close)
        port, admin = h.free_ports(2)
        cfg = h.bootstrap([h.listener('l', port, [hcm(stat_prefix, h2opts, **extra)])],
                          [h.cluster('app', [up.port])], admin_port=admin)
        p = h.Petrel(cfg)
        p.start()
        self.addCleanup(p.close)
        self.port = port
        return p, port, up

    def still_serving(self, port):
        with H2Client(port) as c:
            self.assertEqual(c.response(c.request('GET', '/echo')).status, 200)


class MalformedTest(AbuseBase):

    BAD = {
        'no_path': [(':method', 'GET'), (':scheme', 'http'), (':authority', 'x')],
        'connection_header': request_headers(extra=[('connection', 'keep-alive')]),
        'transfer_encoding': request_headers(extra=[('transfer-encoding', 'chunked')]),
        'te_not_trailers': request_headers(extra=[('te', 'gzip')]),
        'uppercase_name': request_headers(extra=[('X-Upper', '1')]),
        'pseudo_after_regular': [(':method', 'GET'), ('x-a', '1'), (':path', '/'),
                                 (':scheme', 'http'), (':authority', 'x')],
        'unknown_pseudo': request_headers(extra=[(':foo', 'bar')]),
    }

    def test_malformed_request_ends_the_connection_by_default(self):
        # Envoy's default: an invalid HEADERS frame ends the whole connection (GOAWAY).
        p, port, up = self.start('mf')
        for i, (name, hdrs) in enumerate(sorted(self.BAD.items())):
            with self.subTest(name):
                with H2Client(port) as c:
                    ok = c.request('GET', '/delay/200/echo')
                    c.send_raw(headers_frame(3, hdrs))
                    c.wait_goaway()
                    self.assertEqual(c.goaway.error_code, 1)   # PROTOCOL_ERROR
                    self.assertTrue(c.wait_closed())
                p.wait_stat('http2.rx_messaging_error', lambda v, i=i: v >= i + 1)
        self.assertFalse(any(r['path'] == '/' for r in up.requests))
        self.still_serving(port)

    def test_override_resets_only_the_stream(self):
        p, port, up = self.start('ov', {'override_stream_error_on_invalid_http_message': True})
        with H2Client(port) as c:
            slow = c.request('GET', '/delay/100/echo')
            sid = 3
            for name, hdrs in sorted(self.BAD.items()):
                c.conn.get_next_available_stream_id()   # keep h2's numbering in step
                c.conn.highest_outbound_stream_id = sid
                c.send_raw(headers_frame(sid, hdrs, enc=c.conn.encoder))
                c.streams.setdefault(sid, __import__('h2client').Stream(sid))
                st = c.response(sid)
                self.assertIsNotNone(st.reset, name)
                sid += 2
            self.assertEqual(c.response(slow).status, 200)
            self.assertIsNone(c.goaway)
            ok = c.request('GET', '/echo')
            self.assertEqual(c.response(ok).status, 200)
        p.wait_stat('http2.rx_messaging_error', lambda v: v >= len(self.BAD))

    def test_content_length_mismatch(self):
        # DATA that contradicts content-length resets the stream (nghttp2 finds it at the end
        # of the stream, not in the HEADERS frame, so the connection stays, as in Envoy).
        p, port, up = self.start('cl')
        with H2Client(port) as c:
            sid = c.request('POST', '/echo', headers=[('content-length', '10')], body=b'abc')
            st = c.response(sid)
            self.assertIsNotNone(st.reset)
            ok = c.request('POST', '/echo', headers=[('content-length', '3')], body=b'abc')
            self.assertEqual(c.response(ok).status, 200)
            self.assertIsNone(c.goaway)
        p.wait_stat('http2.tx_reset', lambda v: v >= 1)
        p.wait_stat('http.cl.downstream_rq_active', 0)

    def test_connect_is_refused(self):
        # Without upgrade_configs CONNECT, a CONNECT is an upgrade that is not enabled.
        p, port, up = self.start('cn')
        with H2Client(port) as c:
            sid = c.conn.get_next_available_stream_id()
            c.streams[sid] = __import__('h2client').Stream(sid)
            c.conn.send_headers(sid, [(':method', 'CONNECT'), (':authority', 'x:443')])
            c.flush()
            self.assertEqual(c.response(sid).status, 403)
            self.assertEqual(c.response(c.request('GET', '/echo')).status, 200)

    def test_header_overflow_resets_the_stream(self):
        p, port, up = self.start('ho', max_request_headers_kb=2)
        with H2Client(port) as c:
            big = c.request('GET', '/echo', headers=[('x-big', 'a' * 4000)])
            st = c.response(big)
            self.assertIsNotNone(st.reset)
            ok = c.request('GET', '/echo')
            self.assertEqual(c.response(ok).status, 200)
            many = c.request('GET', '/echo', headers=[('x-h%d' % i, 'v') for i in range(150)])
            self.assertIsNotNone(c.response(many).reset)
        p.wait_stat('http2.header_overflow', 2)

    def test_underscore_headers_rejected(self):
        p, port, up = self.start('us', common_http_protocol_options={
            'headers_with_underscores_action': 'REJECT_REQUEST'})
        with H2Client(port) as c:
            bad = c.request('GET', '/echo', headers=[('x_under', '1')])
            self.assertIsNotNone(c.response(bad).reset)
            ok = c.request('GET', '/echo')
            self.assertEqual(c.response(ok).status, 200)
        p.wait_stat('http2.requests_rejected_with_underscores_in_headers', 1)

    def test_garbage_after_preface(self):
        p, port, up = self.start('gb')
        with h.tcp_connect(port) as s:
            s.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + b'\xff' * 64)
            data = h.recv_until_eof(s)
        self.assertIn(b'\x07\x00\x00\x00\x00\x00', data)   # a GOAWAY
        self.still_serving(port)


class FloodTest(AbuseBase):
    """Each flood is written in one burst without reading, so the answers pile up (or the
    limit of inbound frames is passed) whatever the machine's speed; the connection must end
    and the counter count it. Another connection is served all along."""

    def flood(self, p, port, payload, stat, goaway=True):
        with H2Client(port) as c:
            stop = threading.Event()

            def writer():
                while not stop.is_set() and not c.closed:
                    c.send_raw(payload)

            t = threading.Thread(target=writer, daemon=True)
            t.start()
            try:
                self.assertTrue(c.wait_closed(timeout=30), 'connection not closed')
            finally:
                stop.set()
                t.join(10)
            if goaway:
                self.assertIsNotNone(c.goaway)
                self.assertEqual(c.goaway.error_code, 11)  # ENHANCE_YOUR_CALM
        p.wait_stat(stat, lambda v: v >= 1)
        self.still_serving(port)

    def test_ping_flood(self):
        p, port, up = self.start('pf', {'max_outbound_control_frames': 100})
        self.flood(p, port, PING * 500, 'http2.outbound_control_flood', goaway=False)

    def test_outbound_frames_flood(self):
        # All frames queued count, not only control frames: with the general limit the
        # lower one, the same unread PING answers trip http2.outbound_flood.
        p, port, up = self.start('of', {'max_outbound_frames': 100,
                                        'max_outbound_control_frames': 100000})
        self.flood(p, port, PING * 500, 'http2.outbound_flood', goaway=False)
        self.assertEqual(p.stat('http2.outbound_control_flood'), 0)

    def test_settings_flood(self):
        p, port, up = self.start('sf', {'max_outbound_control_frames': 100})
        self.flood(p, port, SETTINGS_EMPTY * 500, 'http2.outbound_control_flood',
                   goaway=False)

    def test_rst_flood(self):
        # Requests the server must refuse with RST_STREAM (headers over the limit), sent
        # faster than the resets are read.
        p, port, up = self.start('rf', {'max_outbound_control_frames': 50,
                                        'override_stream_error_on_invalid_http_message': True},
                                 max_request_headers_kb=1)
        enc = Encoder()
        burst = b''.join(headers_frame(sid, request_headers(extra=[('x-big', 'a' * 1200)]),
                                       enc=enc) for sid in range(1, 400, 2))
        with H2Client(port) as c:
            c.send_raw(burst)
            self.assertTrue(c.wait_closed(timeout=30))
        p.wait_stat('http2.outbound_control_flood', lambda v: v >= 1)
        self.assertGreaterEqual(p.stat('http2.tx_reset'), 1)
        self.still_serving(port)

    def test_empty_data_frames_flood(self):
        p, port, up = self.start('ed')
        with H2Client(port) as c:
            sid = c.request('POST', '/delay/5000/echo', end=False)
            c.send_raw(frame(0, 0, sid) * 10)
            c.wait_goaway()
            self.assertEqual(c.goaway.error_code, 11)
            self.assertTrue(c.wait_closed())
        p.wait_stat('http2.inbound_empty_frames_flood', 1)
        self.still_serving(port)

    def test_priority_flood(self):
        p, port, up = self.start('pr', {'max_inbound_priority_frames_per_stream': 10})
        with H2Client(port) as c:
            c.send_raw(b''.join(priority_frame(sid) for sid in range(1, 200, 2)))
            c.wait_goaway()
            self.assertEqual(c.goaway.error_code, 11)
            self.assertTrue(c.wait_closed())
        p.wait_stat('http2.inbound_priority_frames_flood', 1)
        self.still_serving(port)

    def test_window_update_flood(self):
        p, port, up = self.start('wu')
        with H2Client(port) as c:
            c.send_raw(frame(8, 0, 0, (1).to_bytes(4, 'big')) * 100)
            c.wait_goaway()
            self.assertEqual(c.goaway.error_code, 11)
            self.assertTrue(c.wait_closed())
        p.wait_stat('http2.inbound_window_update_frames_flood', 1)
        self.still_serving(port)

    def test_empty_continuation_flood(self):
        # A header block that never ends, one empty CONTINUATION after another
        # (CVE-2024-27316's shape): cut at max_consecutive_inbound_frames_with_empty_payload.
        p, port, up = self.start('ec')
        with H2Client(port) as c:
            block = Encoder().encode(request_headers())
            c.send_raw(frame(1, 0x1, 1, block))  # HEADERS, END_STREAM, no END_HEADERS
            c.send_raw(b''.join(frame(9, 0, 1) for _ in range(1000)))
            c.wait_closed()
        p.wait_stat('http2.inbound_empty_frames_flood', 1)
        self.assertEqual(up.requests, [])
        self.still_serving(port)

    def test_rapid_reset_closes_the_connection(self):
        # CVE-2023-44487: streams opened and reset at once, over and over. Envoy's rule: once
        # 500 streams have ended on a connection, half of them reset by the client early and
        # before any response, the connection is closed.
        p, port, up = self.start('rapid')
        enc = Encoder()
        with H2Client(port) as c:
            burst = b''
            for i in range(700):
                sid = 2 * i + 1
                burst += headers_frame(sid, request_headers('/delay/1000/echo'), enc=enc)
                burst += rst_frame(sid)
            c.send_raw(burst)
            self.assertTrue(c.wait_closed(timeout=20))
        p.wait_stat('http.rapid.downstream_rq_too_many_premature_resets', 1)
        self.assertGreaterEqual(p.stat('http.rapid.downstream_rq_rx_reset'), 500)
        self.still_serving(port)
        # A client that reads its answers is not cut, however many streams it opens.
        with H2Client(port) as c:
            for _ in range(3):
                sids = [c.request('GET', '/echo') for _ in range(200)]
                for sid in sids:
                    self.assertEqual(c.response(sid).status, 200)
            c.reset(c.request('GET', '/delay/1000/echo'))
            self.assertEqual(c.response(c.request('GET', '/echo')).status, 200)
        self.assertEqual(p.stat('http.rapid.downstream_rq_too_many_premature_resets'), 1)

    def test_rapid_client_resets_are_counted(self):
        p, port, up = self.start('rr')
        with H2Client(port) as c:
            for _ in range(20):
                sid = c.request('GET', '/delay/1000/echo')
                c.reset(sid)
            ok = c.request('GET', '/echo')
            self.assertEqual(c.response(ok).status, 200)
        p.wait_stat('http2.rx_reset', lambda v: v >= 20)
        p.wait_stat('http.rr.downstream_rq_active', 0)

    def test_keepalive_ping_timeout(self):
        p, port, up = self.start('ka', {'connection_keepalive': {'interval': '0.2s',
                                                                 'timeout': '0.3s'}})
        with H2Client(port) as c:
            # Reading but never answering PINGs (h2 answers them: frames are read raw).
            c.sock.settimeout(h.scaled(10))
            got_ping = False
            data = b''
            while True:
                try:
                    d = c.sock.recv(65536)
                except OSError:
                    break
                if not d:
                    break
                data += d
                got_ping = got_ping or b'\x00\x00\x08\x06\x00\x00\x00\x00\x00' in data
        self.assertTrue(got_ping)
        p.wait_stat('http2.keepalive_timeout', 1)
        with H2Client(port) as c:
            sid = c.request('GET', '/delay/600/echo')  # answered PINGs keep it open
            self.assertEqual(c.response(sid).status, 200)


if __name__ == '__main__':
    unittest.main()
