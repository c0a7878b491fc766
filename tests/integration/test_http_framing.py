"""HTTP/1 message framing end to end: what petrel forwards when it has interpreted a framing
header, in both directions, byte for byte.

- Transfer-Encoding: petrel implements only ``chunked`` (once, last). A request that lists
  another coding before it (``gzip, chunked``) is answered 501 (RFC 9112 section 6.1) and
  nothing reaches the upstream; one whose final coding is not chunked stays a 400 (6.3). An
  upstream response that lists any other coding is a 502, as in Envoy: petrel re-frames every
  body and Transfer-Encoding is hop-by-hop, so forwarding it would deliver coded bytes as
  plain ones.
- Content-Length: identical repeated values (``5, 5``, two lines, ``05``) are accepted and
  forwarded as one plain ``content-length: 5`` (RFC 9110 section 8.6), both ways; differing
  ones are a 400 (request) or a 502 (response). A list is never forwarded.
- Empty lines before a request line are skipped, any number of them (RFC 9112 section 2.2).

The upstream here is a raw socket that records each request head exactly as it arrived, and
answers with scripted bytes; responses are read raw on the client side too.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_http_framing.py -v
"""

import os
import re
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

FILE_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog'
LOG_FORMAT = '%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n'
OK = b'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'


def framing_lines(head):
    """The Content-Length and Transfer-Encoding lines of a raw head, exactly as sent."""
    return [line for line in head.split(b'\r\n')
            if line.lower().startswith((b'content-length:', b'transfer-encoding:'))]


class RecordingUpstream:
    """A strict HTTP/1.1 upstream on raw sockets, keep-alive, one request at a time.

    Each request is recorded in ``.requests`` as a dict: ``head`` (the bytes of the request
    head, blank line included, as received), ``body`` (the payload) and ``complete``. The
    body is framed by exactly one ``content-length`` line of plain digits or exactly one
    ``transfer-encoding: chunked`` line; any other framing is recorded with ``complete``
    False and the connection is dropped. The answer is ``reply`` (bytes) sent as it is; the
    connection stays open unless ``close`` is set."""

    def __init__(self, reply=OK, close=False):
        self.reply, self.close_after = reply, close
        self.requests, self.accepted = [], 0
        self.lsock = socket.socket()
        self.lsock.bind(('127.0.0.1', 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.conns = []
        self.cond = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            with self.cond:
                self.accepted += 1
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(h.scaled(10))
        reader = h.SockReader(c)
        try:
            while True:
                lines = []
                while True:
                    line = reader.read_line()
                    if line is None:
                        return
                    lines.append(line)
                    if line == b'':
                        break
                head = b'\r\n'.join(lines) + b'\r\n'
                rec = {'head': head, 'body': b'', 'complete': False}
                with self.cond:
                    self.requests.append(rec)
                    self.cond.notify_all()
                framing = [(ln.split(b':', 1)[0].strip().lower(), ln.split(b':', 1)[1].strip())
                           for ln in framing_lines(head)]
                if framing == [(b'transfer-encoding', b'chunked')]:
                    body = b''
                    while True:
                        size = int(reader.read_line().split(b';')[0], 16)
                        if size == 0:
                            while reader.read_line() != b'':
                                pass
                            break
                        body += reader.read_exact(size)
                        if reader.read_line() != b'':
                            return
                elif not framing:
                    body = b''
                elif (len(framing) == 1 and framing[0][0] == b'content-length'
                      and framing[0][1].isdigit()):
                    body = reader.read_exact(int(framing[0][1]))
                else:
                    return          # ambiguous for a strict server: drop the connection
                with self.cond:
                    rec['body'], rec['complete'] = body, True
                    self.cond.notify_all()
                c.sendall(self.reply)
                if self.close_after:
                    c.shutdown(socket.SHUT_WR)
                    return
        except (OSError, ValueError, h.ConnectionClosed):
            pass

    def wait_requests(self, n):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.requests) >= n and
                                      all(r['complete'] for r in self.requests[:n]),
                                      h.scaled(10)):
                raise AssertionError('upstream got %r' % self.requests)
        return self.requests

    def close(self):
        self.lsock.close()
        with self.cond:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass


def read_raw_response(reader):
    """One response read raw: (head bytes, body bytes). The body is framed by the head's
    single content-length (no other framing is expected in these tests)."""
    lines = []
    while True:
        line = reader.read_line()
        if line is None:
            raise h.ConnectionClosed('EOF in response head after %r' % lines)
        lines.append(line)
        if line == b'':
            break
    head = b'\r\n'.join(lines) + b'\r\n'
    cl = [ln for ln in framing_lines(head) if ln.lower().startswith(b'content-length:')]
    n = int(cl[0].split(b':', 1)[1]) if len(cl) == 1 else 0
    return head, reader.read_exact(n)


class FramingCase(unittest.TestCase):

    def start(self, upstream, **hcm_extra):
        self.up = upstream
        self.addCleanup(upstream.close)
        self.port, admin = h.free_ports(2)
        hcm = h.http_connection_manager(
            'ingress', h.route_config([h.vhost('all', ['*'], [
                h.route_prefix('/', 'up', timeout='5s')])]),
            access_log=[{'name': 'envoy.access_loggers.file', 'typed_config': {
                '@type': FILE_LOG, 'path': 'access.log',
                'log_format': {'text_format_source': {'inline_string': LOG_FORMAT}}}}],
            **hcm_extra)
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster('up', [upstream.port])], admin_port=admin)
        self.p = h.Petrel(cfg)
        self.p.__enter__()
        self.addCleanup(self.p.__exit__, None, None, None)
        return self.p

    def wait_log_line(self, pattern):
        rx = re.compile(pattern, re.M)

        def find():
            try:
                with open(self.p.path('access.log')) as f:
                    return rx.search(f.read())
            except OSError:
                return None
        return h.wait_until(find, 10, 0.1, 'access log never matched %r' % pattern)

    def refused(self, raw, status):
        """Send ``raw`` on a fresh connection: ``status`` comes back, the connection closes,
        and the upstream sees nothing."""
        with h.HttpClientConn(self.port) as c:
            c.send_raw(raw)
            r = c.read_response()
            self.assertEqual(r.status, status, r)
            self.assertEqual(r.get('connection'), 'close')
            self.assertTrue(c.wait_closed(5))
        time.sleep(h.scaled(0.05))      # a (wrongly) forwarded request would show up by now
        self.assertEqual(self.up.requests, [])
        return r

    def forwarded(self, raw):
        """Send ``raw`` (a request with body ``hello``): 200, and the upstream's record."""
        with h.HttpClientConn(self.port) as c:
            c.send_raw(raw)
            self.assertEqual(c.read_response().status, 200)
        rec = self.up.wait_requests(1)[-1]
        self.assertEqual(rec['body'], b'hello')
        return rec


class RequestTransferCodings(FramingCase):

    def test_gzip_then_chunked_is_501(self):
        p = self.start(RecordingUpstream())
        r = self.refused(b'POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n'
                         b'\r\n5\r\nhello\r\n0\r\n\r\n', 501)
        self.assertEqual(r.reason, 'Not Implemented')
        self.wait_log_line(r'^501 DPE unsupported transfer coding$')
        p.wait_stat('http.ingress.downstream_cx_protocol_error', 1)
        p.wait_stat('http.ingress.downstream_rq_5xx', 1)
        self.assertEqual(p.stat('http.ingress.downstream_rq_4xx'), 0)
        p.wait_stat('http.ingress.downstream_cx_active', 0)

    def test_coding_on_its_own_line_is_501(self):
        p = self.start(RecordingUpstream())
        self.refused(b'POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n'
                     b'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n', 501)
        p.wait_stat('http.ingress.downstream_rq_5xx', 1)

    def test_framing_errors_stay_400(self):
        # RFC 9112 6.3: in a request, chunked not final (or absent) is a 400, whatever else
        # is listed; only a well-framed request with an extra coding gets the 501.
        p = self.start(RecordingUpstream())
        for te in (b'gzip', b'chunked, gzip', b'gzip, chunked, chunked'):
            self.refused(b'POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ' + te +
                         b'\r\n\r\n0\r\n\r\n', 400)
        p.wait_stat('http.ingress.downstream_rq_4xx', 3)
        self.assertEqual(p.stat('http.ingress.downstream_rq_5xx'), 0)

    def test_chunked_forwarded_as_one_chunked_line(self):
        self.start(RecordingUpstream())
        rec = self.forwarded(b'POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n'
                             b'\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n')
        self.assertEqual(framing_lines(rec['head']), [b'transfer-encoding: chunked'])


class RequestContentLength(FramingCase):

    def test_list_of_identical_values_forwarded_as_one(self):
        self.start(RecordingUpstream())
        rec = self.forwarded(b'POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello')
        self.assertEqual(framing_lines(rec['head']), [b'content-length: 5'])

    def test_repeated_lines_forwarded_as_one(self):
        self.start(RecordingUpstream())
        rec = self.forwarded(b'POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n'
                             b'Content-Length: 5,5\r\n\r\nhello')
        self.assertEqual(framing_lines(rec['head']), [b'content-length: 5'])

    def test_plain_value_forwarded_as_is(self):
        self.start(RecordingUpstream())
        rec = self.forwarded(b'POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello')
        self.assertEqual(framing_lines(rec['head']), [b'content-length: 5'])

    def test_differing_values_are_400(self):
        p = self.start(RecordingUpstream())
        r = self.refused(b'POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!',
                         400)
        self.assertEqual(r.reason, 'Bad Request')
        self.refused(b'POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n'
                     b'Content-Length: 6\r\n\r\nhello!', 400)
        self.wait_log_line(r'^400 DPE conflicting content-length$')
        p.wait_stat('http.ingress.downstream_cx_protocol_error', 2)


class ResponseFraming(FramingCase):

    def get_raw(self, n=1):
        """``n`` GETs on one keep-alive connection, each response read raw."""
        out = []
        with h.HttpClientConn(self.port) as c:
            for i in range(n):
                c.send_raw(b'GET /r%d HTTP/1.1\r\nHost: a\r\n\r\n' % i)
                out.append(read_raw_response(c.reader))
        return out

    def check_502(self, reply):
        p = self.start(RecordingUpstream(reply, close=True))
        r = h.http_request(self.port, 'GET', '/bad')
        self.assertEqual(r.status, 502, r.body)
        self.wait_log_line(r'^502 UPE ')
        p.wait_stat('cluster.up.upstream_cx_protocol_error', 1)
        p.wait_stat('cluster.up.upstream_rq_active', 0)
        return p

    def test_gzip_then_chunked_is_502(self):
        self.check_502(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n'
                       b'5\r\nhello\r\n0\r\n\r\n')

    def test_gzip_until_close_is_502(self):
        self.check_502(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello')

    def test_coding_after_chunked_is_502(self):
        self.check_502(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n'
                       b'Transfer-Encoding: gzip\r\n\r\nhello')

    def test_differing_content_lengths_are_502(self):
        self.check_502(b'HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok!')

    def test_differing_content_length_lines_are_502(self):
        self.check_502(b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!')

    def test_list_of_identical_values_forwarded_as_one(self):
        p = self.start(RecordingUpstream(b'HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok'))
        for head, body in self.get_raw(2):
            self.assertEqual(framing_lines(head), [b'content-length: 2'])
            self.assertEqual(body, b'ok')
        self.assertEqual(self.up.accepted, 1)       # the upstream connection was reused
        self.assertEqual(p.stat('cluster.up.upstream_cx_protocol_error'), 0)

    def test_repeated_lines_forwarded_as_one(self):
        self.start(RecordingUpstream(b'HTTP/1.1 200 OK\r\nContent-Length: 02\r\n'
                                     b'content-length: 2\r\n\r\nok'))
        head, body = self.get_raw()[0]
        self.assertEqual(framing_lines(head), [b'content-length: 2'])
        self.assertEqual(body, b'ok')

    def test_head_response_length_normalized(self):
        self.start(RecordingUpstream(b'HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n'))
        with h.HttpClientConn(self.port) as c:
            c.send_raw(b'HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n')
            lines = []
            while lines[-1:] != [b'']:
                lines.append(c.reader.read_line())
        self.assertEqual(framing_lines(b'\r\n'.join(lines)), [b'content-length: 7'])

    def test_chunked_response_rechunked_once(self):
        self.start(RecordingUpstream(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'
                                     b'5\r\nhello\r\n0\r\n\r\n'))
        r = h.http_request(self.port, 'GET', '/c')
        self.assertEqual((r.status, r.body), (200, b'hello'))
        self.assertEqual(r.get_all('transfer-encoding'), ['chunked'])
        self.assertEqual(r.get_all('content-length'), [])


class EmptyLinesBeforeRequest(FramingCase):
    """RFC 9112 2.2: a server SHOULD ignore at least one empty line before a request line.
    petrel ignores any number: they are dropped as they are read, so they hold no memory,
    do not count in max_request_headers_kb, and do not start a request (the connection idle
    timeout still runs)."""

    def serve_after(self, prefix):
        with h.HttpClientConn(self.port) as c:
            c.send_raw(prefix + b'GET /after HTTP/1.1\r\nHost: a\r\n\r\n')
            self.assertEqual(c.read_response().status, 200)
            # And between keep-alive requests.
            c.send_raw(prefix + b'GET /again HTTP/1.1\r\nHost: a\r\n\r\n')
            self.assertEqual(c.read_response().status, 200)

    def test_one_two_and_many_empty_lines_are_skipped(self):
        p = self.start(RecordingUpstream(), max_request_headers_kb=1)
        for n in (1, 2, 3, 5000):       # 5000 CRLFs: ten times max_request_headers_kb
            self.serve_after(b'\r\n' * n)
        self.assertEqual(len(self.up.wait_requests(8)), 8)
        self.assertEqual(p.stat('http.ingress.downstream_cx_protocol_error'), 0)

    def test_bare_lf_is_not_an_empty_line(self):
        self.start(RecordingUpstream())
        self.refused(b'\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n', 400)

    def test_only_empty_lines_do_not_keep_a_connection_open(self):
        # Empty lines start no request: the connection idle timeout still closes a client
        # that sends nothing else, without an answer.
        p = self.start(RecordingUpstream(),
                       common_http_protocol_options={'idle_timeout': '0.5s'})
        with h.HttpClientConn(self.port) as c:
            closed = False
            for _ in range(200):
                try:
                    c.send_raw(b'\r\n')
                except OSError:
                    closed = True
                    break
                if c.wait_closed(0.1):
                    closed = True
                    break
            self.assertTrue(closed, 'a connection sending only empty lines was kept open')
            self.assertEqual(c.discarded, b'')
        p.wait_stat('http.ingress.downstream_cx_idle_timeout', 1)
        self.assertEqual(p.stat('http.ingress.downstream_rq_total'), 0)


if __name__ == '__main__':
    unittest.main()
