"""HTTP routing end to end: virtual host domain matching, route matching (prefix, path, regex,
headers, query parameters, case sensitivity, 2,000 routes in one virtual host), no route /
unknown cluster, direct responses, redirects, path and host rewrites, header mutations at
every level, and weighted clusters.

Upstreams are named after their clusters, so ``x-upstream-name`` says where a request went.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_http_routing.py -v
"""

import json
import math
import os
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

NAMES = ('a', 'b', 'c', 'd')


def to(cluster, match, **action):
    """A forwarding route with an arbitrary ``match``."""
    a = {'cluster': cluster, 'timeout': '5s'}
    a.update(action)
    return {'match': match, 'route': a}


def direct(match, status, body=None, **extra):
    d = {'match': match, 'direct_response': {'status': status}}
    if body is not None:
        d['direct_response']['body'] = {'inline_string': body}
    d.update(extra)
    return d


def redirect(match, **rd):
    return {'match': match, 'redirect': rd}


def hdr(key, value, action=None):
    d = {'header': {'key': key, 'value': value}}
    if action:
        d['append_action'] = action
    return d


class RoutingCase(unittest.TestCase):
    """Four upstreams (a-d) and their clusters; ``start(vhosts)`` runs petrel."""

    @classmethod
    def setUpClass(cls):
        cls.ups = {}
        try:
            for n in NAMES:
                cls.ups[n] = HttpUpstream(name=n)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for u in cls.ups.values():
            u.close()

    def setUp(self):
        for u in self.ups.values():
            u.clear()

    def start(self, vhosts, rc_extra=None, concurrency=1, **hcm_extra):
        self.port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('ingress', h.route_config(vhosts, **(rc_extra or {})),
                                        **hcm_extra)
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster(n, [u.port]) for n, u in self.ups.items()],
                          admin_port=admin)
        p = h.Petrel(cfg, concurrency=concurrency)
        p.__enter__()
        self.addCleanup(p.__exit__, None, None, None)
        return p

    def get(self, path='/', host=None, headers=None, method='GET'):
        return h.http_request(self.port, method, path, headers=headers,
                              host_header=host or 'test.local')

    def where(self, path='/', host=None, headers=None):
        r = self.get(path, host, headers)
        self.assertEqual(r.status, 200, '%s %s -> %r %r' % (host, path, r, r.body[:200]))
        return r.get('x-upstream-name')


class DomainMatching(RoutingCase):

    def test_domain_precedence(self):
        self.start([
            h.vhost('default', ['*'], [h.route_prefix('/', 'd')]),
            h.vhost('prefix', ['shop.*'], [h.route_prefix('/', 'c')]),
            h.vhost('suffix', ['*.example.com'], [h.route_prefix('/', 'b')]),
            h.vhost('deep', ['*.api.example.com'], [h.route_prefix('/', 'c')]),
            h.vhost('exact', ['api.example.com', 'www.example.org'], [h.route_prefix('/', 'a')]),
            h.vhost('ported', ['port.example:9000'], [h.route_prefix('/', 'b')]),
        ])
        cases = [
            ('api.example.com', 'a'),             # exact beats *.example.com
            ('www.example.org', 'a'),             # second domain of the vhost
            ('API.Example.COM', 'a'),             # case-insensitive
            ('api.example.com:8080', 'a'),        # port stripped when nothing matches with it
            ('x.example.com', 'b'),               # suffix wildcard
            ('x.api.example.com', 'c'),           # longest suffix wins
            ('shop.example.com', 'b'),            # suffix before prefix wildcard
            ('shop.local', 'c'),                  # prefix wildcard
            ('shop.local:81', 'c'),
            ('port.example:9000', 'b'),           # a configured port must match
            ('port.example:9001', 'd'),
            ('other.test', 'd'),                  # default vhost
            ('example.com', 'd'),                 # *.example.com needs a non-empty label
        ]
        got = [(host, self.where('/', host)) for host, _ in cases]
        self.assertEqual(got, cases)

    def test_absolute_form_target_selects_vhost(self):
        # RFC 9112 3.2.2: the authority of an absolute-form target replaces Host.
        self.start([
            h.vhost('default', ['*'], [h.route_prefix('/', 'd')]),
            h.vhost('exact', ['api.example.com'], [h.route_prefix('/', 'a')]),
        ])
        with h.HttpClientConn(self.port) as c:
            c.send_raw(b'GET http://api.example.com/abs?x=1 HTTP/1.1\r\nHost: other\r\n\r\n')
            r = c.read_response()
        self.assertEqual(r.get('x-upstream-name'), 'a')
        self.assertEqual(self.ups['a'].last['path'], '/abs?x=1')
        self.assertEqual(self.ups['a'].last.header_all('host'), ['api.example.com'])

    def test_no_matching_vhost_is_404(self):
        p = self.start([h.vhost('only', ['only.example'], [h.route_prefix('/', 'a')])])
        self.assertEqual(self.where('/', 'only.example'), 'a')
        r = self.get('/', 'elsewhere.example')
        self.assertEqual(r.status, 404)
        p.wait_stat('http.ingress.no_route', 1)
        self.assertEqual(self.ups['a'].requests[1:], [])


class RouteMatching(RoutingCase):

    def test_match_kinds(self):
        routes = [
            to('a', {'path': '/exact'}),
            to('b', {'prefix': '/Case/', 'case_sensitive': False}),
            to('c', {'safe_regex': {'regex': '/re/[0-9]+'}}),
            to('b', {'prefix': '/h', 'headers': [{'name': 'x-canary', 'exact_match': 'yes'}]}),
            to('c', {'prefix': '/h', 'headers': [{'name': 'x-present', 'present_match': True}]}),
            to('d', {'prefix': '/h', 'headers': [
                {'name': 'x-ver', 'safe_regex_match': {'regex': 'v[0-9]+'}}]}),
            to('a', {'prefix': '/h'}),
            to('c', {'prefix': '/q', 'query_parameters': [
                {'name': 'v', 'string_match': {'exact': '2'}}]}),
            to('b', {'prefix': '/q', 'query_parameters': [
                {'name': 'debug', 'present_match': True}]}),
            to('a', {'prefix': '/q'}),
            to('d', {'prefix': '/sensitive'}),
            to('b', {'prefix': '/inv', 'headers': [
                {'name': 'x-env', 'exact_match': 'prod', 'invert_match': True}]}),
            to('a', {'prefix': '/inv'}),
        ]
        self.start([h.vhost('all', ['*'], routes)])
        cases = [
            ('/exact', {}, 'a'),
            ('/exact?x=1', {}, 'a'),             # path ignores the query string
            ('/Case/x', {}, 'b'),
            ('/case/X', {}, 'b'),
            ('/CASE/', {}, 'b'),
            ('/re/123', {}, 'c'),
            ('/h', {'x-canary': 'yes'}, 'b'),
            ('/h', {'x-canary': 'no'}, 'a'),
            ('/h', {'x-present': ''}, 'c'),
            ('/h', {'x-ver': 'v12'}, 'd'),
            ('/h', {'x-ver': 'v12x'}, 'a'),      # safe_regex_match is a full match
            ('/h', {}, 'a'),
            ('/q?v=2', {}, 'c'),
            ('/q?a=1&v=2&b', {}, 'c'),
            ('/q?v=3', {}, 'a'),
            ('/q?debug', {}, 'b'),
            ('/q', {}, 'a'),
            ('/sensitive/x', {}, 'd'),
            ('/inv', {'x-env': 'dev'}, 'b'),
            ('/inv', {'x-env': 'prod'}, 'a'),
        ]
        got = [(path, hd, self.where(path, headers=hd)) for path, hd, _ in cases]
        self.assertEqual(got, cases)

    def test_many_routes_first_match_wins(self):
        # 2,000 prefixes: the virtual host's routes are indexed (docs/routing.md), and the
        # first matching route still wins, whatever kind of match comes first.
        routes = [
            to('d', {'safe_regex': {'regex': '/svc7/special.*'}}),
            to('b', {'prefix': '/svc9/',
                     'headers': [{'name': 'x-canary', 'present_match': True}]}),
            to('c', {'prefix': '/Upper/', 'case_sensitive': False}),
            to('d', {'path': '/exact', 'case_sensitive': False}),
        ]
        routes += [to(NAMES[i % 4], {'prefix': '/svc%d/' % i}) for i in range(2000)]
        routes += [to('c', {'prefix': '/svc7/'}),   # shadowed by the earlier /svc7/
                   to('c', {'safe_regex': {'regex': '/late/.*'}}),
                   to('b', {'prefix': '/'})]
        p = self.start([h.vhost('all', ['*'], routes)], normalize_path=True)
        cases = [
            ('/svc7/special/x', {}, 'd'),       # an earlier regex beats a later prefix
            ('/svc7/plain', {}, NAMES[7 % 4]),
            ('/svc9/x', {'x-canary': '1'}, 'b'),  # an earlier header condition too
            ('/svc9/x', {}, NAMES[9 % 4]),
            ('/svc1999/x?q=1', {}, NAMES[1999 % 4]),
            ('/svc12/../svc13/x', {}, NAMES[13 % 4]),  # matched after normalization
            ('/UPPER/x', {}, 'c'),
            ('/EXACT?x=1', {}, 'd'),
            ('/exact/', {}, 'b'),
            ('/svc2000/x', {}, 'b'),            # the catch-all, last of 2,007
            ('/late/x', {}, 'c'),
        ]
        got = [(path, hd, self.where(path, headers=hd)) for path, hd, _ in cases]
        self.assertEqual(got, cases)
        self.assertEqual(p.stat('http.ingress.no_route'), 0)

    def test_unmatched_paths_are_404(self):
        p = self.start([h.vhost('all', ['*'], [
            to('a', {'path': '/exact'}),
            to('c', {'safe_regex': {'regex': '/re/[0-9]+'}}),
            to('d', {'prefix': '/sensitive'}),
        ])])
        for path in ('/exact/more', '/EXACT', '/re/12a', '/re/', '/Sensitive/x', '/nothing'):
            r = self.get(path)
            self.assertEqual(r.status, 404, path)
        p.wait_stat('http.ingress.no_route', 6)
        p.wait_stat('http.ingress.downstream_rq_4xx', 6)
        self.assertTrue(all(u.requests == [] for u in self.ups.values()))


class Clusters(RoutingCase):

    def test_cluster_header_routing(self):
        route = {'match': {'prefix': '/'}, 'route': {'cluster_header': 'x-cluster',
                                                     'timeout': '5s'}}
        p = self.start([h.vhost('all', ['*'], [route])])
        self.assertEqual(self.where('/', headers={'x-cluster': 'b'}), 'b')
        self.assertEqual(self.where('/', headers={'x-cluster': 'c'}), 'c')
        r = self.get('/', headers={'x-cluster': 'missing'})
        self.assertEqual(r.status, 503)
        p.wait_stat('http.ingress.no_cluster', 1)
        r = self.get('/')                                     # header absent
        self.assertEqual(r.status, 503)
        p.wait_stat('http.ingress.no_cluster', 2)
        p.wait_stat('http.ingress.downstream_rq_5xx', 2)

    def test_unknown_cluster_is_a_config_error(self):
        port = h.free_port()
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], [h.route_prefix('/', 'nope')])]))
        cfg = h.bootstrap([h.listener('http', port, [hcm])],
                          [h.cluster('a', [self.ups['a'].port])])
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'config.json')
            with open(path, 'w') as f:
                json.dump(cfg, f)
            rc, _, err = h.run_petrel(['--mode', 'validate', '-c', path])
        self.assertEqual(rc, 1, err)
        self.assertIn('nope', err)
        # validate_clusters: false accepts it and answers 503 at run time.
        admin = h.free_port()
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], [h.route_prefix('/', 'nope')])], validate_clusters=False))
        cfg = h.bootstrap([h.listener('http', port, [hcm])],
                          [h.cluster('a', [self.ups['a'].port])], admin_port=admin)
        with h.Petrel(cfg) as p2:
            r = h.http_request(port, 'GET', '/')
            self.assertEqual(r.status, 503)
            p2.wait_stat('http.ingress.no_cluster', 1)

    def test_weighted_clusters_split(self):
        n, weights = 2000, {'a': 80, 'b': 20, 'c': 0}
        route = {'match': {'prefix': '/'}, 'route': {'timeout': '5s', 'weighted_clusters': {
            'clusters': [
                {'name': 'a', 'weight': 80,
                 'request_headers_to_add': [hdr('x-weighted', 'to-a')]},
                {'name': 'b', 'weight': 20, 'host_rewrite_literal': 'b.internal'},
                {'name': 'c', 'weight': 0},
            ]}}}
        self.start([h.vhost('all', ['*'], [route])])
        counts = dict.fromkeys(weights, 0)
        with h.HttpClientConn(self.port, host_header='test.local') as conn:
            for _ in range(n):
                r = conn.request('GET', '/w')
                self.assertEqual(r.status, 200)
                counts[r.get('x-upstream-name')] += 1
        self.assertEqual(counts['c'], 0)
        sigma = math.sqrt(n * 0.8 * 0.2)
        self.assertLessEqual(abs(counts['a'] - 0.8 * n), 5 * sigma, counts)
        self.assertEqual(counts['a'] + counts['b'], n)
        self.assertEqual(self.ups['a'].last.header('x-weighted'), 'to-a')
        self.assertIsNone(self.ups['b'].last.header('x-weighted'))
        self.assertEqual(self.ups['b'].last.header('host'), 'b.internal')
        self.assertEqual(self.ups['a'].last.header('host'), 'test.local')


class DirectAndRedirect(RoutingCase):

    def test_direct_response(self):
        p = self.start([h.vhost('all', ['*'], [
            direct({'path': '/hello'}, 200, 'hello world\n'),
            direct({'path': '/forbidden'}, 403),
            direct({'path': '/teapot'}, 418, 'short and stout'),
            direct({'prefix': '/'}, 503, 'down for maintenance\n'),
        ])])
        r = self.get('/hello')
        self.assertEqual((r.status, r.body), (200, b'hello world\n'))
        self.assertEqual(r.get('content-length'), '12')
        self.assertTrue(r.get('content-type', '').startswith('text/plain'))
        self.assertEqual(r.get('server'), 'petrel')
        self.assertEqual(self.get('/forbidden').status, 403)
        self.assertEqual(self.get('/forbidden').body, b'')
        self.assertEqual(self.get('/teapot').body, b'short and stout')
        r = self.get('/any/thing')
        self.assertEqual((r.status, r.body), (503, b'down for maintenance\n'))
        r = self.get('/hello', method='HEAD')
        self.assertEqual((r.status, r.body), (200, b''))
        p.wait_stat('http.ingress.rq_direct_response', 6)
        self.assertTrue(all(u.requests == [] for u in self.ups.values()))
        # Keep-alive across direct responses.
        with h.HttpClientConn(self.port) as c:
            for _ in range(3):
                self.assertEqual(c.request('GET', '/hello').body, b'hello world\n')

    def test_redirects(self):
        p = self.start([h.vhost('all', ['*'], [
            redirect({'prefix': '/secure'}, https_redirect=True),
            redirect({'prefix': '/moved'}, host_redirect='new.example'),
            redirect({'prefix': '/old'}, path_redirect='/new'),
            redirect({'prefix': '/strip'}, path_redirect='/stripped', strip_query=True),
            redirect({'prefix': '/found'}, path_redirect='/x', response_code='FOUND'),
            redirect({'prefix': '/see'}, path_redirect='/x', response_code='SEE_OTHER'),
            redirect({'prefix': '/temp'}, path_redirect='/x', response_code='TEMPORARY_REDIRECT'),
            redirect({'prefix': '/perm'}, path_redirect='/x', response_code='PERMANENT_REDIRECT'),
            redirect({'prefix': '/pfx/'}, prefix_rewrite='/other/'),
            redirect({'prefix': '/port'}, host_redirect='h.example', port_redirect=8443),
            redirect({'prefix': '/scheme'}, scheme_redirect='https', host_redirect='s.example'),
        ])])
        cases = [
            ('/secure/a?b=1', 301, 'https://test.local/secure/a?b=1'),
            ('/moved/p', 301, 'http://new.example/moved/p'),
            ('/old?x=1', 301, 'http://test.local/new?x=1'),
            ('/strip?x=1', 301, 'http://test.local/stripped'),
            ('/found', 302, 'http://test.local/x'),
            ('/see', 303, 'http://test.local/x'),
            ('/temp', 307, 'http://test.local/x'),
            ('/perm', 308, 'http://test.local/x'),
            ('/pfx/a/b?c', 301, 'http://test.local/other/a/b?c'),
            ('/port', 301, 'http://h.example:8443/port'),
            ('/scheme', 301, 'https://s.example/scheme'),
        ]
        got = []
        for path, _, _ in cases:
            r = self.get(path)
            got.append((path, r.status, r.get('location')))
        self.assertEqual(got, cases)
        p.wait_stat('http.ingress.rq_redirect', len(cases))
        p.wait_stat('http.ingress.downstream_rq_3xx', len(cases))
        self.assertTrue(all(u.requests == [] for u in self.ups.values()))


class Rewrites(RoutingCase):

    def test_prefix_rewrite(self):
        self.start([h.vhost('all', ['*'], [
            h.route_prefix('/api/', 'a', prefix_rewrite='/'),
            h.route_prefix('/v1', 'b', prefix_rewrite='/v2'),
            h.route_prefix('/', 'c'),
        ])])
        self.assertEqual(self.where('/api/users/7?full=1'), 'a')
        rec = self.ups['a'].last
        self.assertEqual(rec['path'], '/users/7?full=1')
        self.assertEqual(rec.header('x-envoy-original-path'), '/api/users/7?full=1')
        self.assertEqual(self.where('/v1/items'), 'b')
        self.assertEqual(self.ups['b'].last['path'], '/v2/items')
        self.assertEqual(self.where('/plain'), 'c')
        self.assertEqual(self.ups['c'].last['path'], '/plain')
        self.assertIsNone(self.ups['c'].last.header('x-envoy-original-path'))

    def test_regex_rewrite(self):
        self.start([h.vhost('all', ['*'], [
            to('a', {'prefix': '/users/'}, regex_rewrite={
                'pattern': {'regex': '^/users/([0-9]+)/profile$'},
                'substitution': '/profiles/\\1'}),
        ])])
        self.assertEqual(self.where('/users/42/profile'), 'a')
        self.assertEqual(self.ups['a'].last['path'], '/profiles/42')

    def test_re2_semantics_as_envoy(self):
        # What Istio's VirtualServices produce: case-insensitive matches, lazy repetition,
        # Unicode classes; with the program size limit raised in the runtime, as Istio's
        # bootstrap does (the Unicode class alone is over Envoy's default of 100).
        vhosts = [h.vhost('all', ['*'], [
            to('a', {'safe_regex': {'regex': '(?i)/API/v[0-9]+/.*'}}),
            to('b', {'prefix': '/lazy/'}, regex_rewrite={
                'pattern': {'regex': '^/lazy/(.+?)(/.*)?$'}, 'substitution': '/first/\\1'}),
            to('c', {'prefix': '/', 'headers': [
                {'name': 'x-name', 'safe_regex_match': {'regex': '\\pL+'}}]}),
            to('d', {'prefix': '/'}),
        ])]
        self.port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('ingress', h.route_config(vhosts))
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster(n, [u.port]) for n, u in self.ups.items()],
                          admin_port=admin)
        cfg['layered_runtime'] = {'layers': [{'name': 'global config', 'static_layer': {
            're2.max_program_size.error_level': '32768'}}]}
        with tempfile.TemporaryDirectory() as d:
            # Without the runtime layer the Unicode class is too complex, as in Envoy.
            plain = dict(cfg)
            del plain['layered_runtime']
            path = os.path.join(d, 'plain.json')
            with open(path, 'w') as f:
                json.dump(plain, f)
            rc, out, err = h.run_petrel(['--mode', 'validate', '-c', path])
            self.assertEqual(rc, 1, err)
            self.assertIn('headers[0].safe_regex_match.regex: "\\\\pL+" is too complex: '
                          'its RE2 program size', out + err)
            self.assertIn('(the runtime key re2.max_program_size.error_level)', out + err)
        with h.Petrel(cfg):
            self.assertEqual(self.where('/api/V2/users'), 'a')
            self.assertEqual(self.where('/lazy/x/y/z'), 'b')
            self.assertEqual(self.ups['b'].last['path'], '/first/x')
            self.assertEqual(self.where('/g', headers={'x-name': '\u03b1\u03b2'.encode()}), 'c')
            self.assertEqual(self.where('/g', headers={'x-name': 'ab1'}), 'd')

    def test_regexes_on_two_workers_at_once(self):
        # Each worker matches with its own compiled copy of a regex: requests spread over
        # both workers, from four clients at once, all route and rewrite correctly.
        self.start([h.vhost('all', ['*'], [
            to('a', {'safe_regex': {'regex': '/users/[0-9]+/profile'}}, regex_rewrite={
                'pattern': {'regex': '^/users/([0-9]+)/profile$'},
                'substitution': '/profiles/\\1'}),
            to('b', {'prefix': '/', 'headers': [
                {'name': 'x-ver', 'safe_regex_match': {'regex': 'v[0-9]+'}}]}),
            h.route_prefix('/', 'c'),
        ])], concurrency=2)
        errors = []

        def client(k):
            try:
                for i in range(25):
                    n = k * 100 + i
                    r = h.http_request(self.port, 'GET', '/users/%d/profile' % n,
                                       headers={'connection': 'close'})
                    if r.status != 200 or r.get('x-upstream-name') != 'a':
                        errors.append(('a', n, r.status, r.get('x-upstream-name')))
                    r = h.http_request(self.port, 'GET', '/x', headers={
                        'x-ver': 'v%d' % n, 'connection': 'close'})
                    if r.get('x-upstream-name') != 'b':
                        errors.append(('b', n, r.status, r.get('x-upstream-name')))
                    r = h.http_request(self.port, 'GET', '/x', headers={
                        'x-ver': 'w%d' % n, 'connection': 'close'})
                    if r.get('x-upstream-name') != 'c':
                        errors.append(('c', n, r.status, r.get('x-upstream-name')))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        paths = [rec['path'] for rec in self.ups['a'].requests]
        self.assertEqual(sorted(paths), sorted('/profiles/%d' % (k * 100 + i)
                                               for k in range(4) for i in range(25)))

    def test_host_rewrite_literal(self):
        self.start([h.vhost('all', ['*'], [
            h.route_prefix('/', 'a', host_rewrite_literal='backend.internal')])])
        self.assertEqual(self.where('/x', host='public.example'), 'a')
        self.assertEqual(self.ups['a'].last.header_all('host'), ['backend.internal'])


class PathNormalization(RoutingCase):
    """normalize_path, merge_slashes, path_with_escaped_slashes_action: before routing."""

    def routes(self):
        return [h.vhost('all', ['*'], [h.route_prefix('/admin', 'a'),
                                       h.route_prefix('/public', 'b'),
                                       h.route_prefix('/', 'c')])]

    def test_dot_segments_cannot_hide_a_path_from_routing(self):
        p = self.start(self.routes(), normalize_path=True)
        self.assertEqual(self.where('/public/../admin/x'), 'a')
        self.assertEqual(self.ups['a'].last['path'], '/admin/x')
        self.assertEqual(self.where('/public/%2e%2e/admin?q=/../z'), 'a')
        self.assertEqual(self.ups['a'].last['path'], '/admin?q=/../z')
        self.assertEqual(self.where('/public/./x'), 'b')
        self.assertEqual(self.ups['b'].last['path'], '/public/x')
        self.assertEqual(p.stat('http.ingress.downstream_rq_failed_path_normalization'), 0)

    def test_without_normalize_path_the_path_is_forwarded_as_sent(self):
        self.start(self.routes())
        self.assertEqual(self.where('/public/../admin'), 'b')
        self.assertEqual(self.ups['b'].last['path'], '/public/../admin')

    def test_merge_slashes(self):
        self.start(self.routes(), merge_slashes=True)
        self.assertEqual(self.where('//admin///x'), 'a')
        self.assertEqual(self.ups['a'].last['path'], '/admin/x')

    def test_escaped_slashes_reject(self):
        p = self.start(self.routes(), path_with_escaped_slashes_action='REJECT_REQUEST')
        self.assertEqual(self.get('/public%2F..%2Fadmin').status, 400)
        self.assertEqual(p.stat('http.ingress.downstream_rq_failed_path_normalization'), 1)
        self.assertEqual(self.where('/public/x%41'), 'b')   # other escapes are fine

    def test_escaped_slashes_unescape_and_redirect(self):
        p = self.start(self.routes(), normalize_path=True,
                       path_with_escaped_slashes_action='UNESCAPE_AND_REDIRECT')
        r = self.get('/public%2F..%2Fadmin?x=1')
        self.assertEqual(r.status, 307)
        self.assertEqual(r.get('location'), '/admin?x=1')
        self.assertEqual(p.stat('http.ingress.downstream_rq_redirected_with_normalized_path'), 1)

    def test_escaped_slashes_unescape_and_forward(self):
        self.start(self.routes(), path_with_escaped_slashes_action='UNESCAPE_AND_FORWARD')
        self.assertEqual(self.where('/admin%2fx%5Cy'), 'a')
        self.assertEqual(self.ups['a'].last['path'], '/admin/x\\y')


class HeaderMutations(RoutingCase):

    def test_request_and_response_headers_at_every_level(self):
        route = h.route_prefix('/', 'a')
        route.update(
            request_headers_to_add=[hdr('x-route', 'r'), hdr('x-level', 'route',
                                                             'OVERWRITE_IF_EXISTS_OR_ADD')],
            request_headers_to_remove=['x-drop-route'],
            response_headers_to_add=[hdr('x-resp-route', 'r'),
                                     hdr('x-resp-level', 'route', 'OVERWRITE_IF_EXISTS_OR_ADD')],
            response_headers_to_remove=['x-secret-route'])
        vh = h.vhost('all', ['*'], [route],
                     request_headers_to_add=[hdr('x-vhost', 'v'),
                                             hdr('x-level', 'vhost', 'OVERWRITE_IF_EXISTS_OR_ADD')],
                     request_headers_to_remove=['x-drop-vhost'],
                     response_headers_to_add=[hdr('x-resp-vhost', 'v'),
                                              hdr('x-resp-level', 'vhost',
                                                  'OVERWRITE_IF_EXISTS_OR_ADD')],
                     response_headers_to_remove=['x-secret-vhost'])
        rc = {'request_headers_to_add': [hdr('x-rc', 'c'),
                                         hdr('x-level', 'rc', 'OVERWRITE_IF_EXISTS_OR_ADD')],
              'request_headers_to_remove': ['x-drop-rc'],
              'response_headers_to_add': [hdr('x-resp-rc', 'c'),
                                          hdr('x-resp-level', 'rc', 'OVERWRITE_IF_EXISTS_OR_ADD')],
              'response_headers_to_remove': ['x-secret-rc']}
        self.start([vh], rc_extra=rc)
        r = self.get('/m', headers=[
            ('x-drop-route', '1'), ('x-drop-vhost', '1'), ('x-drop-rc', '1'), ('x-keep', '1'),
            ('x-route', 'client'),
            ('x-test-response-headers',
             'x-secret-route=1;x-secret-vhost=1;x-secret-rc=1;x-public=1')])
        self.assertEqual(r.status, 200)
        rec = self.ups['a'].last
        for name in ('x-drop-route', 'x-drop-vhost', 'x-drop-rc'):
            self.assertIsNone(rec.header(name), name)
        self.assertEqual(rec.header('x-keep'), '1')
        self.assertEqual(rec.header_all('x-route'), ['client', 'r'])   # default: append
        self.assertEqual(rec.header('x-vhost'), 'v')
        self.assertEqual(rec.header('x-rc'), 'c')
        # Least specific applied last by default: the route config's overwrite wins.
        self.assertEqual(rec.header_all('x-level'), ['rc'])
        for name in ('x-secret-route', 'x-secret-vhost', 'x-secret-rc'):
            self.assertIsNone(r.get(name), name)
        self.assertEqual(r.get('x-public'), '1')
        self.assertEqual((r.get('x-resp-route'), r.get('x-resp-vhost'), r.get('x-resp-rc')),
                         ('r', 'v', 'c'))
        self.assertEqual(r.get_all('x-resp-level'), ['rc'])

    def test_most_specific_header_mutations_wins(self):
        route = h.route_prefix('/', 'a')
        route['request_headers_to_add'] = [hdr('x-level', 'route', 'OVERWRITE_IF_EXISTS_OR_ADD')]
        route['response_headers_to_add'] = [hdr('x-resp-level', 'route',
                                                'OVERWRITE_IF_EXISTS_OR_ADD')]
        vh = h.vhost('all', ['*'], [route],
                     request_headers_to_add=[hdr('x-level', 'vhost',
                                                 'OVERWRITE_IF_EXISTS_OR_ADD')])
        rc = {'most_specific_header_mutations_wins': True,
              'request_headers_to_add': [hdr('x-level', 'rc', 'OVERWRITE_IF_EXISTS_OR_ADD')],
              'response_headers_to_add': [hdr('x-resp-level', 'rc',
                                              'OVERWRITE_IF_EXISTS_OR_ADD')]}
        self.start([vh], rc_extra=rc)
        r = self.get('/m')
        self.assertEqual(self.ups['a'].last.header_all('x-level'), ['route'])
        self.assertEqual(r.get_all('x-resp-level'), ['route'])

    def test_formatted_header_value(self):
        route = h.route_prefix('/', 'a')
        route['request_headers_to_add'] = [hdr('x-client', '%DOWNSTREAM_REMOTE_ADDRESS%'),
                                           hdr('x-copied', '%REQ(x-in)%')]
        self.start([h.vhost('all', ['*'], [route])])
        self.get('/f', headers={'x-in': 'copied-value'})
        rec = self.ups['a'].last
        self.assertRegex(rec.header('x-client') or '', r'^127\.0\.0\.1:\d+$')
        self.assertEqual(rec.header('x-copied'), 'copied-value')

    def test_response_headers_on_direct_response_and_redirect(self):
        self.start([h.vhost('all', ['*'], [
            direct({'path': '/d'}, 200, 'ok', response_headers_to_add=[hdr('x-d', '1')]),
            dict(redirect({'path': '/r'}, path_redirect='/x'),
                 response_headers_to_add=[hdr('x-r', '1')]),
        ], response_headers_to_add=[hdr('x-vh', '1')])])
        r = self.get('/d')
        self.assertEqual((r.get('x-d'), r.get('x-vh')), ('1', '1'))
        r = self.get('/r')
        self.assertEqual((r.status, r.get('x-r'), r.get('x-vh')), (301, '1', '1'))


if __name__ == '__main__':
    unittest.main()
