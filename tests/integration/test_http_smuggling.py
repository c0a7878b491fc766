"""Request smuggling and malformed requests: every ambiguous or malformed framing vector is
answered 400 (505 for an unsupported version, 431 for oversized heads, 501 for a transfer
coding petrel does not implement in front of chunked) and the connection is
closed, nothing of the bad request is forwarded as a complete request, and petrel keeps
serving every other connection.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_http_smuggling.py -v
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

MAX_HEADERS_KB = 4
MAX_HEADERS_COUNT = 20


def req(head, body=b''):
    """A raw request: request line + header lines (CRLF added) + blank line + body."""
    return b'\r\n'.join(head) + b'\r\n\r\n' + body


# name -> (raw request, expected status). Head vectors: rejected before any routing.
HEAD_VECTORS = {
    # Content-Length / Transfer-Encoding ambiguity (CL.TE / TE.CL desync)
    'cl_and_te': (req([b'POST /v HTTP/1.1', b'Host: a', b'Content-Length: 5',
                       b'Transfer-Encoding: chunked'], b'0\r\n\r\n'), 400),
    'te_and_cl': (req([b'POST /v HTTP/1.1', b'Host: a', b'Transfer-Encoding: chunked',
                       b'Content-Length: 5'], b'0\r\n\r\n'), 400),
    'duplicate_cl_differing': (req([b'POST /v HTTP/1.1', b'Host: a', b'Content-Length: 5',
                                    b'Content-Length: 6'], b'hello!'), 400),
    'cl_list_differing': (req([b'POST /v HTTP/1.1', b'Host: a', b'Content-Length: 5, 6'],
                              b'hello!'), 400),
    'cl_plus_sign': (req([b'POST /v HTTP/1.1', b'Host: a', b'Content-Length: +5'], b'hello'), 400),
    'cl_negative': (req([b'POST /v HTTP/1.1', b'Host: a', b'Content-Length: -1'], b'hello'), 400),
    'cl_hex': (req([b'POST /v HTTP/1.1', b'Host: a', b'Content-Length: 0x5'], b'hello'), 400),
    'cl_overflow': (req([b'POST /v HTTP/1.1', b'Host: a',
                         b'Content-Length: 99999999999999999999999'], b'hello'), 400),
    'te_chunked_not_final': (req([b'POST /v HTTP/1.1', b'Host: a',
                                  b'Transfer-Encoding: chunked, gzip'], b'0\r\n\r\n'), 400),
    'te_gzip_only': (req([b'POST /v HTTP/1.1', b'Host: a', b'Transfer-Encoding: gzip'],
                         b'0\r\n\r\n'), 400),
    # Well framed, but with a coding before chunked that petrel does not implement (501,
    # RFC 9112 6.1); forwarding it re-chunked would drop the coding.
    'te_gzip_chunked': (req([b'POST /v HTTP/1.1', b'Host: a', b'Transfer-Encoding: gzip, chunked'],
                            b'0\r\n\r\n'), 501),
    'te_gzip_line_then_chunked': (req([b'POST /v HTTP/1.1', b'Host: a', b'Transfer-Encoding: gzip',
                                       b'Transfer-Encoding: chunked'], b'0\r\n\r\n'), 501),
    'te_chunked_twice': (req([b'POST /v HTTP/1.1', b'Host: a', b'Transfer-Encoding: chunked',
                              b'Transfer-Encoding: chunked'], b'0\r\n\r\n'), 400),
    'te_xchunked': (req([b'POST /v HTTP/1.1', b'Host: a', b'Transfer-Encoding: xchunked'],
                        b'0\r\n\r\n'), 400),
    'te_in_http10': (req([b'POST /v HTTP/1.0', b'Host: a', b'Transfer-Encoding: chunked'],
                         b'0\r\n\r\n'), 400),
    'te_space_before_colon': (req([b'POST /v HTTP/1.1', b'Host: a',
                                   b'Transfer-Encoding : chunked'], b'0\r\n\r\n'), 400),
    # Header syntax
    'obs_fold_space': (req([b'GET /v HTTP/1.1', b'Host: a', b'X-A: 1', b'  folded']), 400),
    'obs_fold_tab': (req([b'GET /v HTTP/1.1', b'Host: a', b'X-A: 1', b'\tfolded']), 400),
    'space_before_colon': (req([b'GET /v HTTP/1.1', b'Host: a', b'X-A : 1']), 400),
    'bare_cr_in_value': (req([b'GET /v HTTP/1.1', b'Host: a', b'X-A: a\rb']), 400),
    'bare_cr_line_end': (b'GET /v HTTP/1.1\rHost: a\r\n\r\n', 400),
    'bare_lf_everywhere': (b'GET /v HTTP/1.1\nHost: a\n\n', 400),
    'bare_lf_mixed': (b'GET /v HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n', 400),
    'nul_in_value': (req([b'GET /v HTTP/1.1', b'Host: a', b'X-A: a\x00b']), 400),
    'ctl_in_value': (req([b'GET /v HTTP/1.1', b'Host: a', b'X-A: a\x01b']), 400),
    'del_in_value': (req([b'GET /v HTTP/1.1', b'Host: a', b'X-A: a\x7fb']), 400),
    'nul_in_name': (req([b'GET /v HTTP/1.1', b'Host: a', b'X\x00A: b']), 400),
    'space_in_name': (req([b'GET /v HTTP/1.1', b'Host: a', b'X A: b']), 400),
    'empty_name': (req([b'GET /v HTTP/1.1', b'Host: a', b': b']), 400),
    'ctl_in_target': (req([b'GET /v\x01w HTTP/1.1', b'Host: a']), 400),
    'nul_in_target': (req([b'GET /v\x00w HTTP/1.1', b'Host: a']), 400),
    'missing_host': (req([b'GET /v HTTP/1.1']), 400),
    'two_hosts': (req([b'GET /v HTTP/1.1', b'Host: a', b'Host: b']), 400),
    'invalid_host': (req([b'GET /v HTTP/1.1', b'Host: a b']), 400),
    # Request line
    'invalid_method': (req([b'G@T /v HTTP/1.1', b'Host: a']), 400),
    'empty_method': (req([b' /v HTTP/1.1', b'Host: a']), 400),
    'double_space': (req([b'GET  /v HTTP/1.1', b'Host: a']), 400),
    'http09_line': (b'GET /v\r\n\r\n', 400),
    'version_garbage': (req([b'GET /v HTTX/1.1', b'Host: a']), 400),
    'version_lowercase': (req([b'GET /v http/1.1', b'Host: a']), 400),
    'version_trailing_space': (req([b'GET /v HTTP/1.1 ', b'Host: a']), 400),
    'version_2_0': (req([b'GET /v HTTP/2.0', b'Host: a']), 505),
    'version_1_2': (req([b'GET /v HTTP/1.2', b'Host: a']), 505),
}

# Vectors in the chunked body: the (valid) head may already have gone upstream when the body
# turns out bad, but never a complete request.
CHUNKED = [b'POST /v HTTP/1.1', b'Host: a', b'Transfer-Encoding: chunked']
BODY_VECTORS = {
    'chunk_size_not_hex': (req(CHUNKED, b'zz\r\nhello\r\n0\r\n\r\n'), 400),
    'chunk_size_overflow': (req(CHUNKED, b'fffffffffffffffff1\r\nhello\r\n0\r\n\r\n'), 400),
    'chunk_size_negative': (req(CHUNKED, b'-5\r\nhello\r\n0\r\n\r\n'), 400),
    'chunk_size_0x': (req(CHUNKED, b'0x5\r\nhello\r\n0\r\n\r\n'), 400),
    'chunk_size_empty': (req(CHUNKED, b'\r\nhello\r\n0\r\n\r\n'), 400),
    'chunk_size_trailing_space': (req(CHUNKED, b'5 \r\nhello\r\n0\r\n\r\n'), 400),
    'chunk_data_too_long': (req(CHUNKED, b'5\r\nhelloXX\r\n0\r\n\r\n'), 400),
    'chunk_size_bare_lf': (req(CHUNKED, b'5\nhello\r\n0\r\n\r\n'), 400),
    'chunk_ext_ctl': (req(CHUNKED, b'5;a=\x01\r\nhello\r\n0\r\n\r\n'), 400),
    'trailer_obs_fold': (req(CHUNKED, b'5\r\nhello\r\n0\r\nX-T: 1\r\n folded\r\n\r\n'), 400),
}


class Smuggling(unittest.TestCase):
    """One petrel (max_request_headers_kb 4, max_headers_count 20) for the whole class."""

    @classmethod
    def setUpClass(cls):
        cls.up = HttpUpstream(name='up')
        cls.port, admin = h.free_ports(2)
        hcm = h.http_connection_manager(
            'ingress', h.route_config([h.vhost('all', ['*'], [
                h.route_prefix('/', 'up', timeout='5s')])]),
            max_request_headers_kb=MAX_HEADERS_KB,
            common_http_protocol_options={'max_headers_count': MAX_HEADERS_COUNT})
        cfg = h.bootstrap([h.listener('http', cls.port, [hcm])], [h.cluster('up', [cls.up.port])],
                          admin_port=admin)
        cls.p = h.Petrel(cfg)
        try:
            cls.p.start()
        except BaseException:
            cls.p.close()
            cls.up.close()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.p.close()
        finally:
            cls.up.close()

    def setUp(self):
        # A bystander keep-alive connection, open across the bad request. Its first request
        # also leaves an idle upstream connection in the pool, so a forwarded head would
        # reach the upstream at once (the worst case for these tests).
        self.bystander = h.HttpClientConn(self.port)
        self.addCleanup(self.bystander.close)
        self.assertEqual(self.bystander.request('GET', '/before').status, 200)
        self.up.clear()
        self.errors_before = self.p.stat('http.ingress.downstream_cx_protocol_error')

    def send_bad(self, raw, status, pieces=None):
        """Send ``raw`` on a fresh connection (in ``pieces`` if given); expect ``status`` and the
        connection closed."""
        with h.HttpClientConn(self.port, timeout=5) as c:
            if pieces:
                for i in range(0, len(raw), pieces):
                    c.send_raw(raw[i:i + pieces])
            else:
                c.send_raw(raw)
            r = c.read_response()
            self.assertEqual(r.status, status, r)
            self.assertEqual(r.get('connection'), 'close')
            self.assertTrue(c.wait_closed(5), 'petrel kept the connection open after %d' % status)
        return r

    def assert_still_serving(self):
        r = self.bystander.request('GET', '/after')
        self.assertEqual(r.status, 200)
        self.assertEqual(h.http_request(self.port, 'GET', '/fresh').status, 200)

    def upstream_records(self):
        return [r for r in self.up.requests if r['path'] not in ('/after', '/fresh', '/before')]

    def check_head_vector(self, raw, status, pieces=None):
        self.send_bad(raw, status, pieces)
        time.sleep(h.scaled(0.05))       # a (wrongly) forwarded request would show up by now
        self.assertEqual(self.upstream_records(), [])
        self.assert_still_serving()
        self.assertEqual(self.upstream_records(), [])
        self.p.wait_stat('http.ingress.downstream_cx_protocol_error',
                         lambda v: v is not None and v > self.errors_before)

    def check_body_vector(self, raw, status):
        self.send_bad(raw, status)
        self.assert_still_serving()
        # The head may have been forwarded (bodies stream), but the upstream connection was
        # dropped mid-body: no complete request, nothing parsed as a second request.
        time.sleep(h.scaled(0.1))
        recs = self.upstream_records()
        self.assertLessEqual(len(recs), 1, recs)
        for rec in recs:
            self.assertEqual(rec['path'], '/v')
            self.assertFalse(rec['complete'], rec)

    # -- oversized heads --------------------------------------------------------------------

    def test_headers_at_size_limit_accepted(self):
        line = b'X-Big: ' + b'b' * (MAX_HEADERS_KB * 1024 - 100)
        r = h.HttpClientConn(self.port)
        self.addCleanup(r.close)
        r.send_raw(req([b'GET /big HTTP/1.1', b'Host: a', line]))
        self.assertEqual(r.read_response().status, 200)

    def test_headers_too_large(self):
        line = b'X-Big: ' + b'b' * (MAX_HEADERS_KB * 1024 + 10)
        self.check_head_vector(req([b'GET /v HTTP/1.1', b'Host: a', line]), 431)
        self.p.wait_stat('http.ingress.downstream_rq_too_large', lambda v: v and v >= 1)

    def test_unterminated_head_too_large(self):
        # No blank line ever: petrel must give up once the limit is passed, not buffer on.
        raw = b'GET /v HTTP/1.1\r\nHost: a\r\nX-Big: ' + b'b' * (MAX_HEADERS_KB * 1024 * 3)
        self.check_head_vector(raw, 431)

    def test_header_count_at_limit_accepted(self):
        lines = [b'GET /count HTTP/1.1', b'Host: a'] + [b'X-H%d: v' % i
                                                       for i in range(MAX_HEADERS_COUNT - 1)]
        with h.HttpClientConn(self.port) as c:
            c.send_raw(req(lines))
            self.assertEqual(c.read_response().status, 200)
        self.assertEqual(len(self.up.last.header_all('x-h0')), 1)

    def test_too_many_headers(self):
        lines = [b'GET /v HTTP/1.1', b'Host: a'] + [b'X-H%d: v' % i
                                                   for i in range(MAX_HEADERS_COUNT)]
        self.check_head_vector(req(lines), 431)

    # -- framing that must stay unambiguous ---------------------------------------------------

    def test_request_in_body_stays_body(self):
        inner = b'GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n'
        with h.HttpClientConn(self.port) as c:
            c.send_raw(req([b'POST /outer HTTP/1.1', b'Host: a',
                            b'Content-Length: %d' % len(inner)], inner))
            r = c.read_response()
            self.assertEqual(r.json()['path'], '/outer')
            self.assertEqual(r.json()['body_len'], len(inner))
            self.assertEqual(c.request('GET', '/next').json()['path'], '/next')
        paths = [rec['path'] for rec in self.upstream_records()]
        self.assertEqual(paths, ['/outer', '/next'])
        self.assertEqual(self.up.requests[0]['body'], inner)

    def test_pipelined_after_chunked_body(self):
        with h.HttpClientConn(self.port) as c:
            c.send_raw(req(CHUNKED, b'5\r\nhello\r\n0\r\n\r\n') +
                       req([b'GET /second HTTP/1.1', b'Host: a']))
            r1, r2 = c.read_response(), c.read_response()
        self.assertEqual((r1.json()['path'], r1.json()['body_len']), ('/v', 5))
        self.assertEqual(r2.json()['path'], '/second')

    def test_valid_request_then_bad_one_pipelined(self):
        with h.HttpClientConn(self.port) as c:
            c.send_raw(req([b'GET /ok HTTP/1.1', b'Host: a']) +
                       req([b'POST /v HTTP/1.1', b'Host: a', b'Content-Length: 3',
                            b'Transfer-Encoding: chunked'], b'0\r\n\r\n'))
            self.assertEqual(c.read_response().status, 200)
            self.assertEqual(c.read_response().status, 400)
            self.assertTrue(c.wait_closed(5))
        self.assertEqual([rec['path'] for rec in self.upstream_records()], ['/ok'])

    def test_byte_by_byte_valid_request(self):
        with h.HttpClientConn(self.port) as c:
            raw = req([b'POST /slow HTTP/1.1', b'Host: a', b'Content-Length: 2'], b'ok')
            for i in range(len(raw)):
                c.send_raw(raw[i:i + 1])
            r = c.read_response()
        self.assertEqual((r.status, r.json()['body_len']), (200, 2))

    def test_byte_by_byte_cl_and_te(self):
        # The head only: petrel answers as soon as it is complete, and closes, so body bytes
        # sent after that would meet a reset.
        self.check_head_vector(req([b'POST /v HTTP/1.1', b'Host: a', b'Content-Length: 5',
                                    b'Transfer-Encoding: chunked']), 400, pieces=1)

    def test_identical_duplicate_cl_forwarded_once(self):
        # RFC 9112 6.3 lets a recipient accept identical Content-Length values; whichever
        # way petrel goes, the upstream must never see an ambiguous message.
        with h.HttpClientConn(self.port) as c:
            c.send_raw(req([b'POST /dup HTTP/1.1', b'Host: a', b'Content-Length: 5',
                            b'Content-Length: 5'], b'hello'))
            r = c.read_response()
        if r.status == 400:
            self.assertEqual(self.upstream_records(), [])
        else:
            self.assertEqual(r.status, 200)
            self.assertEqual(self.up.last['body'], b'hello')
            self.assertEqual(self.up.last.header_all('content-length'), ['5'])


def _add_vector_tests():
    for name, (raw, status) in HEAD_VECTORS.items():
        def t(self, raw=raw, status=status):
            self.check_head_vector(raw, status)
        t.__name__ = 'test_head_' + name
        setattr(Smuggling, t.__name__, t)
    for name, (raw, status) in BODY_VECTORS.items():
        def t(self, raw=raw, status=status):
            self.check_body_vector(raw, status)
        t.__name__ = 'test_body_' + name
        setattr(Smuggling, t.__name__, t)


_add_vector_tests()

if __name__ == '__main__':
    unittest.main()
