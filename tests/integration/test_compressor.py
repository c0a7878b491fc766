"""envoy.filters.http.compressor with gzip, brotli and zstd, through real peers.

Responses are decoded by Python's gzip, brotli (python3-brotli) and zstandard
(python3-zstandard) and compared with what the upstream sent; large bodies stream (with
content-length and chunked, with trailers), over HTTP/1.1 and HTTP/2. Every rule that
leaves a response alone is checked with its stat (no Accept-Encoding, q=0, identity, HEAD,
204, 304, content-encoding, no-transform, too small, content type), as are ETag, Vary,
Accept-Encoding negotiation among three compressor filters, request compression, config
errors naming their fields, and an upstream that resets mid-body.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_compressor.py -v
"""

import gzip
import json
import os
import sys
import tempfile
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from h2client import H2Client  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

import brotli  # noqa: E402  (python3-brotli)
import zstandard  # noqa: E402  (python3-zstandard)

COMPRESSOR = 'type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor'
GZIP = 'type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip'
BROTLI = 'type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli'
ZSTD = 'type.googleapis.com/envoy.extensions.compression.zstd.compressor.v3.Zstd'
LIBS = {'gzip': GZIP, 'brotli': BROTLI, 'zstd': ZSTD}

TYPES = ['application/json', 'application/octet-stream', 'text/plain']


def compressor(lib='gzip', lib_fields=None, name=None, **cfg):
    tc = {'@type': COMPRESSOR,
          'compressor_library': {'name': name or lib,
                                 'typed_config': dict(lib_fields or {}, **{'@type': LIBS[lib]})}}
    tc.update(cfg)
    return {'name': 'envoy.filters.http.compressor', 'typed_config': tc}


def response_config(types=TYPES, **fields):
    common = {'content_type': types}
    if 'min_content_length' in fields:
        common['min_content_length'] = fields.pop('min_content_length')
    return dict(fields, common_config=common)


def decode(encoding, body):
    if encoding == 'gzip':
        return gzip.decompress(body)
    if encoding == 'br':
        return brotli.decompress(body)
    if encoding == 'zstd':
        # A streamed frame has no content size in its header: read it as a stream.
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    raise AssertionError('unexpected encoding %r' % encoding)


def stat(lib, name, hcm='in', root='compressor', direction='response.'):
    return 'http.%s.%s.%s.%s.%s%s' % (hcm, root, lib, {'gzip': 'gzip', 'brotli': 'brotli',
                                                        'zstd': 'zstd'}[lib], direction, name)


class CompressorTest(unittest.TestCase):

    def setUp(self):
        self.up = HttpUpstream(name='app')
        self.addCleanup(self.up.close)

    def config(self, filters, routes=None, **hcm_extra):
        self.port, self.admin = h.free_ports(2)
        hcm = h.http_connection_manager('in', h.route_config([
            h.vhost('all', ['*'], (routes or []) + [h.route_prefix('/', 'app')])]),
            http_filters=filters + [h.router_filter()], **hcm_extra)
        return h.bootstrap([h.listener('http', self.port, [hcm])],
                           [h.cluster('app', [self.up.port])], admin_port=self.admin)

    def get(self, path, accept='gzip', method='GET', headers=None):
        hdrs = list(headers or [])
        if accept is not None:
            hdrs.append(('Accept-Encoding', accept))
        return h.http_request(self.port, method, path, headers=hdrs)

    # -- each library ---------------------------------------------------------------------------

    def test_each_library_compresses_and_decodes(self):
        for lib, enc, fields in (('gzip', 'gzip', {'compression_level': 'BEST_COMPRESSION',
                                                   'compression_strategy': 'RLE',
                                                   'memory_level': 9, 'window_bits': 15,
                                                   'chunk_size': 8192}),
                                 ('brotli', 'br', {'quality': 5, 'window_bits': 20,
                                                   'input_block_bits': 20,
                                                   'encoder_mode': 'TEXT',
                                                   'disable_literal_context_modeling': True}),
                                 ('zstd', 'zstd', {'compression_level': 10,
                                                   'enable_checksum': True,
                                                   'strategy': 'BTOPT'})):
            with self.subTest(lib=lib):
                cfg = self.config([compressor(lib, fields,
                                              response_direction_config=response_config())])
                with h.Petrel(cfg) as p:
                    r = self.get('/bytes/200000', accept=enc)
                    self.assertEqual(r.status, 200)
                    self.assertEqual(r.get('content-encoding'), enc)
                    self.assertIsNone(r.get('content-length'))
                    self.assertEqual(r.get('vary'), 'Accept-Encoding')
                    self.assertEqual(decode(enc, r.body), h.pattern_bytes(0, 200000))
                    # JSON compresses a lot: the encoder really ran
                    r = self.get('/echo?' + 'a' * 2000, accept=enc)
                    self.assertLess(len(r.body), 1500)
                    self.assertEqual(json.loads(decode(enc, r.body))['method'], 'GET')
                    self.assertEqual(p.stat(stat(lib, 'compressed')), 2)
                    self.assertEqual(p.stat(stat(lib, 'compressed', direction='')), 2)
                    self.assertEqual(p.stat(stat(lib, 'header_compressor_used')), 2)
                    self.assertGreaterEqual(p.stat(stat(lib, 'total_uncompressed_bytes')),
                                            200000)
                    self.assertGreater(p.stat(stat(lib, 'total_compressed_bytes')), 0)

    def test_large_chunked_response_with_trailers_streams(self):
        cfg = self.config([compressor('gzip', response_direction_config=response_config())])
        with h.Petrel(cfg):
            r = self.get('/chunked/3000000')
            self.assertEqual(r.status, 200)
            self.assertEqual(r.get('content-encoding'), 'gzip')
            self.assertEqual(zlib.decompress(r.body, 16 + 15), h.pattern_bytes(0, 3000000))
            self.assertEqual(r.trailer('x-trailer'), 'done')

    def test_http2_downstream(self):
        cfg = self.config([compressor('brotli', response_direction_config=response_config())],
                          codec_type='AUTO')
        with h.Petrel(cfg) as p:
            with H2Client(self.port) as c:
                st = c.response(c.request('GET', '/bytes/500000',
                                          headers=[('accept-encoding', 'gzip;q=0.5, br')]))
                self.assertEqual(st.status, 200)
                self.assertEqual(st.header('content-encoding'), 'br')
                self.assertIsNone(st.header('content-length'))
                self.assertEqual(brotli.decompress(bytes(st.data)), h.pattern_bytes(0, 500000))
                st = c.response(c.request('GET', '/chunked/100000',
                                          headers=[('accept-encoding', 'br')]))
                self.assertEqual(brotli.decompress(bytes(st.data)), h.pattern_bytes(0, 100000))
                self.assertEqual(dict(st.trailers or []).get('x-trailer'), 'done')
            self.assertEqual(p.stat(stat('brotli', 'compressed')), 2)

    # -- negotiation among several filters ------------------------------------------------------

    def test_accept_encoding_negotiation_across_filters(self):
        rc = response_config()
        cfg = self.config([compressor('gzip', response_direction_config=rc),
                           compressor('brotli', response_direction_config=rc),
                           compressor('zstd', response_direction_config=rc)])
        cases = [('br', 'br'), ('gzip, br;q=0.5', 'gzip'), ('zstd;q=1, gzip;q=0.9', 'zstd'),
                 ('*', 'gzip'), ('gzip;q=0, *', 'br'), ('identity', None),
                 ('gzip;q=0', None), ('deflate', None), ('GZIP', 'gzip'),
                 ('br;q=0.2, identity;q=0.5', None), ('*;q=0', None)]
        with h.Petrel(cfg) as p:
            for accept, want in cases:
                with self.subTest(accept=accept):
                    r = self.get('/bytes/1000', accept=accept)
                    self.assertEqual(r.get('content-encoding'), want)
                    self.assertEqual(r.get('vary'), 'Accept-Encoding')
                    if want:
                        self.assertEqual(decode(want, r.body), h.pattern_bytes(0, 1000))
                    else:
                        self.assertEqual(r.body, h.pattern_bytes(0, 1000))
            # The last filter encodes first (reverse order) and sees every response: zstd's
            # view. Its own coding chosen once; another's three times (br, gzip, GZIP).
            self.assertEqual(p.stat(stat('zstd', 'header_compressor_used')), 1)
            self.assertEqual(p.stat(stat('zstd', 'header_compressor_overshadowed')), 3)
            self.assertEqual(p.stat(stat('zstd', 'header_wildcard')), 2)
            self.assertEqual(p.stat(stat('zstd', 'header_identity')), 2)
            self.assertEqual(p.stat(stat('zstd', 'header_not_valid')), 3)
            # A filter after one that compressed leaves the response alone (content-encoding
            # is set): gzip sees only what br and zstd did not take.
            self.assertEqual(p.stat(stat('gzip', 'header_compressor_used')), 2)
            self.assertEqual(p.stat(stat('gzip', 'header_wildcard')), 1)
            self.assertEqual(p.stat(stat('brotli', 'compressed')), 2)
            self.assertEqual(p.stat(stat('zstd', 'compressed')), 1)

    def test_choose_first_wins_ties(self):
        rc = response_config()
        cfg = self.config([compressor('gzip', response_direction_config=rc),
                           compressor('zstd', response_direction_config=rc, choose_first=True)])
        with h.Petrel(cfg):
            self.assertEqual(self.get('/bytes/100', accept='gzip, zstd').get('content-encoding'),
                             'zstd')
            self.assertEqual(self.get('/bytes/100', accept='*').get('content-encoding'), 'zstd')
            self.assertEqual(self.get('/bytes/100', accept='gzip, zstd;q=0.5')
                             .get('content-encoding'), 'gzip')

    # -- responses left alone -------------------------------------------------------------------

    def test_no_compression_rules(self):
        cfg = self.config([compressor('gzip', response_direction_config=response_config(
            types=['application/json', 'text/plain; charset=utf-8'], min_content_length=100))])
        with h.Petrel(cfg) as p:
            r = self.get('/echo', accept=None)                     # no accept-encoding
            self.assertIsNone(r.get('content-encoding'))
            self.assertEqual(r.get('vary'), 'Accept-Encoding')
            self.assertEqual(p.stat(stat('gzip', 'no_accept_header')), 1)
            r = self.get('/echo', accept='gzip;q=0')
            self.assertIsNone(r.get('content-encoding'))
            self.assertEqual(p.stat(stat('gzip', 'header_not_valid')), 1)
            # no body: not compressed, but varies as the full response would
            with h.HttpClientConn(self.port) as c:
                c.send_raw(b'HEAD /echo HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n')
                r = c.read_response(head_request=True)
            self.assertIsNone(r.get('content-encoding'))
            self.assertIsNotNone(r.get('content-length'))
            self.assertEqual(r.get('vary'), 'Accept-Encoding')
            for code in (204, 304):
                r = self.get('/status/%d' % code)
                self.assertEqual(r.status, code)
                self.assertIsNone(r.get('content-encoding'))
            r = self.get('/echo', headers=[('x-test-response-headers', 'content-encoding=br')])
            self.assertEqual(r.get('content-encoding'), 'br')
            json.loads(r.body)
            r = self.get('/echo', headers=[('x-test-response-headers',
                                            'cache-control=public, No-Transform')])
            self.assertIsNone(r.get('content-encoding'))
            self.assertIsNone(r.get('vary'))
            json.loads(r.body)
            r = self.get('/bytes/99')                             # octet-stream: not listed
            self.assertIsNone(r.get('content-encoding'))
            r = self.get('/status/200')                           # text/plain, 11 bytes
            self.assertIsNone(r.get('content-encoding'))
            # checked first, as in Envoy: /bytes/99 counts though its type is not listed
            self.assertEqual(p.stat(stat('gzip', 'content_length_too_small')), 2)
            self.assertEqual(p.stat(stat('gzip', 'compressed')), 0)
            self.assertEqual(p.stat(stat('gzip', 'not_compressed')), 9)
            # and one that qualifies, to show the rules above were the reason
            r = self.get('/echo?' + 'x' * 200)
            self.assertEqual(r.get('content-encoding'), 'gzip')

    def test_listed_types_compare_without_parameters(self):
        cfg = self.config([compressor('gzip', response_direction_config=response_config(
            types=[' Text/Plain ; charset=utf-8'], min_content_length=0))])
        with h.Petrel(cfg):
            r = self.get('/status/200')  # content-type: text/plain
            self.assertEqual(r.get('content-encoding'), 'gzip')
            self.assertEqual(gzip.decompress(r.body), b'status 200\n')
            self.assertIsNone(self.get('/echo').get('content-encoding'))

    def test_min_content_length_boundary(self):
        cfg = self.config([compressor('gzip', response_direction_config=response_config(
            min_content_length=100))])
        with h.Petrel(cfg) as p:
            self.assertIsNone(self.get('/bytes/99').get('content-encoding'))
            self.assertEqual(self.get('/bytes/100').get('content-encoding'), 'gzip')
            self.assertEqual(p.stat(stat('gzip', 'content_length_too_small')), 1)
            # without a content-length (chunked) the body may be long: compressed
            self.assertEqual(self.get('/chunked/10').get('content-encoding'), 'gzip')

    def test_etag_made_weak_or_compression_skipped(self):
        cfg = self.config([compressor('gzip', response_direction_config=response_config())])
        with h.Petrel(cfg):
            r = self.get('/echo', headers=[('x-test-response-headers', 'etag="v1"')])
            self.assertEqual(r.get('content-encoding'), 'gzip')
            self.assertEqual(r.get('etag'), 'W/"v1"')
            r = self.get('/echo', headers=[('x-test-response-headers', 'etag=W/"v2"')])
            self.assertEqual(r.get('etag'), 'W/"v2"')
        cfg = self.config([compressor('gzip', response_direction_config=response_config(
            disable_on_etag_header=True))])
        with h.Petrel(cfg) as p:
            r = self.get('/echo', headers=[('x-test-response-headers', 'etag="v1"')])
            self.assertIsNone(r.get('content-encoding'))
            self.assertEqual(r.get('etag'), '"v1"')
            self.assertEqual(p.stat(stat('gzip', 'not_compressed_etag')), 1)

    def test_vary_appended(self):
        cfg = self.config([compressor('gzip', response_direction_config=response_config())])
        with h.Petrel(cfg):
            r = self.get('/echo', headers=[('x-test-response-headers', 'vary=Origin')])
            self.assertEqual(r.get('vary'), 'Origin, Accept-Encoding')
            r = self.get('/echo', headers=[('x-test-response-headers', 'vary=accept-encoding')])
            self.assertEqual(r.get('vary'), 'accept-encoding')

    def test_deprecated_top_level_fields(self):
        cfg = self.config([compressor('gzip', content_length=500, content_type=['text/plain'],
                                      disable_on_etag_header=True,
                                      remove_accept_encoding_header=True,
                                      runtime_enabled={'default_value': True,
                                                       'runtime_key': 'compressor.on'})])
        with h.Petrel(cfg) as p:
            self.assertIsNone(self.get('/echo').get('content-encoding'))  # json: not listed
            self.assertNotIn('accept-encoding',
                             [n.lower() for n, _ in self.up.requests[-1]['headers']])
            self.assertEqual(p.stat(stat('gzip', 'not_compressed')), 1)
        cfg = self.config([compressor('gzip', runtime_enabled={'default_value': False,
                                                               'runtime_key': 'k'})])
        with h.Petrel(cfg):
            self.assertIsNone(self.get('/echo?' + 'y' * 100).get('content-encoding'))

    def test_request_compression(self):
        cfg = self.config([compressor('zstd', request_direction_config={'common_config': {
            'enabled': {'default_value': True, 'runtime_key': 'rq'}}},
            response_direction_config={'common_config': {'enabled': {
                'default_value': False, 'runtime_key': 'rs'}}})])
        body = b'{"k": "' + b'v' * 5000 + b'"}'
        with h.Petrel(cfg) as p:
            r = h.http_request(self.port, 'POST', '/echo', body=body,
                               headers=[('Content-Type', 'application/json'),
                                        ('Accept-Encoding', 'zstd')])
            self.assertEqual(r.status, 200)
            self.assertIsNone(r.get('content-encoding'))  # responses: disabled
            rec = self.up.requests[-1]
            self.assertEqual(rec.header('content-encoding'), 'zstd')
            self.assertEqual(decode('zstd', rec['body']), body)
            self.assertLess(len(rec['body']), 200)
            # chunked with trailers: the last bytes come before the trailers
            with h.HttpClientConn(self.port) as c:
                r = c.request('POST', '/echo', headers=[('Content-Type', 'text/plain')],
                              body=[b'abc' * 100, b'def' * 100], chunked=True,
                              trailers=[('x-check', 'done')])
            rec = self.up.requests[-1]
            self.assertEqual(decode('zstd', rec['body']), b'abc' * 100 + b'def' * 100)
            self.assertEqual(h.get_header(rec['trailers'], 'x-check'), 'done')
            # not a listed type: as it was
            h.http_request(self.port, 'POST', '/echo', body=b'z' * 100,
                           headers=[('Content-Type', 'image/png')])
            self.assertIsNone(self.up.requests[-1].header('content-encoding'))
            self.assertEqual(p.stat(stat('zstd', 'compressed', direction='request.')), 2)
            self.assertEqual(p.stat(stat('zstd', 'not_compressed', direction='request.')), 1)

    def test_per_route_disabled_and_overrides(self):
        per_route = 'type.googleapis.com/envoy.extensions.filters.http.compressor.v3.' \
                    'CompressorPerRoute'
        off = h.route_prefix('/off', 'app', prefix_rewrite='/')
        off['typed_per_filter_config'] = {'comp': {'@type': per_route, 'disabled': True}}
        keep = h.route_prefix('/keep', 'app', prefix_rewrite='/')
        keep['typed_per_filter_config'] = {'comp': {'@type': per_route, 'overrides': {
            'response_direction_config': {'remove_accept_encoding_header': False}}}}
        filt = compressor('gzip', response_direction_config=response_config(
            remove_accept_encoding_header=True))
        filt['name'] = 'comp'
        with h.Petrel(self.config([filt], routes=[off, keep])) as p:
            r = self.get('/off')
            self.assertIsNone(r.get('content-encoding'))
            self.assertIsNone(r.get('vary'))
            self.assertEqual(self.up.requests[-1].header('accept-encoding'), 'gzip')
            r = self.get('/keep')
            self.assertEqual(r.get('content-encoding'), 'gzip')
            self.assertEqual(self.up.requests[-1].header('accept-encoding'), 'gzip')
            r = self.get('/echo')
            self.assertEqual(r.get('content-encoding'), 'gzip')
            self.assertIsNone(self.up.requests[-1].header('accept-encoding'))
            self.assertEqual(p.stat(stat('gzip', 'compressed')), 2)
            self.assertEqual(p.stat(stat('gzip', 'not_compressed')), 1)

    # -- faults ---------------------------------------------------------------------------------

    def test_upstream_reset_mid_body(self):
        cfg = self.config([compressor('gzip', response_direction_config=response_config())])
        with h.Petrel(cfg) as p:
            with h.HttpClientConn(self.port) as c:
                c.send_raw(b'GET /reset-after-headers HTTP/1.1\r\nHost: x\r\n'
                           b'Accept-Encoding: gzip\r\n\r\n')
                try:
                    r = c.read_response()
                    self.assertEqual(r.get('content-encoding'), 'gzip')
                    # the client never sees a complete stream
                    with self.assertRaises(Exception):
                        gzip.decompress(r.body)
                except (h.IncompleteResponse, h.ConnectionClosed, OSError):
                    pass
            # petrel goes on serving
            r = self.get('/bytes/5000')
            self.assertEqual(decode('gzip', r.body), h.pattern_bytes(0, 5000))
            self.assertEqual(p.stat(stat('gzip', 'compressed')), 2)

    def test_client_gone_mid_body(self):
        cfg = self.config([compressor('zstd', response_direction_config=response_config())],
                          codec_type='AUTO')
        with h.Petrel(cfg) as p:
            # HTTP/1.1: the client reads a little of a long response, then closes
            with h.HttpClientConn(self.port) as c:
                c.send_raw(b'GET /bytes/20000000 HTTP/1.1\r\nHost: x\r\n'
                           b'Accept-Encoding: zstd\r\n\r\n')
                self.assertIn(b'content-encoding: zstd', c.read_some(65536).lower())
            # HTTP/2: the stream is reset mid-body, the connection goes on
            with H2Client(self.port) as c:
                sid = c.request('GET', '/bytes/20000000', headers=[('accept-encoding', 'zstd')])
                c.pump(lambda: len(c.streams[sid].data) > 0, 10, 'first bytes')
                c.reset(sid)
                st = c.response(c.request('GET', '/bytes/3000',
                                          headers=[('accept-encoding', 'zstd')]))
                self.assertEqual(decode('zstd', bytes(st.data)), h.pattern_bytes(0, 3000))
            r = self.get('/bytes/3000', accept='zstd')
            self.assertEqual(decode('zstd', r.body), h.pattern_bytes(0, 3000))
            self.assertEqual(p.stat(stat('zstd', 'compressed')), 4)

    # -- bad config -----------------------------------------------------------------------------

    def validate_error(self, filt):
        cfg = self.config([filt])
        with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
            json.dump(cfg, f)
        self.addCleanup(os.unlink, f.name)
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', f.name])
        self.assertEqual(rc, 1, err)
        return err

    def test_config_errors_name_the_field(self):
        at = ('static_resources.listeners[0].filter_chains[0].filters[0].typed_config.'
              'http_filters[0].typed_config.')
        bad_lib = compressor('gzip')
        bad_lib['typed_config']['compressor_library']['typed_config'] = {
            '@type': 'type.googleapis.com/envoy.extensions.compression.lz4.v3.Lz4'}
        cases = [
            (bad_lib, at + 'compressor_library.typed_config.@type'),
            (compressor('brotli', {'quality': 12}), at + 'compressor_library.typed_config.quality'),
            (compressor('gzip', {'compression_level': 'LEVEL_10'}),
             at + 'compressor_library.typed_config.compression_level'),
            (compressor('gzip', {'window_bits': 8}),
             at + 'compressor_library.typed_config.window_bits'),
            (compressor('zstd', {'compression_level': 23}),
             at + 'compressor_library.typed_config.compression_level'),
            (compressor('zstd', {'dictionary': {'inline_string': 'abc'}}),
             at + 'compressor_library.typed_config.dictionary'),
            (compressor('gzip', {'chunk_size': 100}),
             at + 'compressor_library.typed_config.chunk_size'),
            (compressor('gzip', response_direction_config={'common_config': {
                'enabled': {'runtime_key': 'x'}}}),
             at + 'response_direction_config.common_config.enabled.default_value'),
            (compressor('gzip', response_direction_config={'uncompressible_response_codes': [99]}),
             at + 'response_direction_config.uncompressible_response_codes[0]'),
        ]
        for filt, path in cases:
            with self.subTest(path=path):
                err = self.validate_error(filt)
                self.assertIn(path, err)
        bad_route = h.route_prefix('/x', 'app')
        bad_route['typed_per_filter_config'] = {'envoy.filters.http.compressor': {
            '@type': 'type.googleapis.com/envoy.extensions.filters.http.compressor.v3.'
                     'CompressorPerRoute', 'disabled': False}}
        cfg = self.config([compressor('gzip')], routes=[bad_route])
        with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
            json.dump(cfg, f)
        self.addCleanup(os.unlink, f.name)
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', f.name])
        self.assertEqual(rc, 1)
        self.assertIn("typed_per_filter_config.envoy.filters.http.compressor.disabled: must be "
                      "true", err)
        err = self.validate_error({'name': 'c', 'typed_config': {'@type': COMPRESSOR}})
        self.assertIn(at + 'compressor_library: is required', err)


if __name__ == '__main__':
    unittest.main()
