"""Distributed tracing: HCM tracing, bootstrap tracing, route decorator/tracing, B3 and W3C
propagation, x-request-id sampling, the Zipkin exporter (v2 JSON and proto), %TRACE_ID%, and a
collector that is down or stalled.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_tracing.py -v
"""

import json
import os
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402
from otlp_collector import OtlpCollector  # noqa: E402
from zipkin_collector import ZipkinCollector  # noqa: E402

ZIPKIN_TYPE = 'type.googleapis.com/envoy.config.trace.v3.ZipkinConfig'
FILE_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog'
# Reports go out as soon as a span is there (Envoy's runtime keys).
FAST_FLUSH = {'layers': [{'name': 'static', 'static_layer': {
    'tracing.zipkin.min_flush_spans': 1, 'tracing.zipkin.flush_interval_ms': 100,
    'tracing.opentelemetry.min_flush_spans': 1,
    'tracing.opentelemetry.flush_interval_ms': 100}}]}
OTEL_TYPE = 'type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig'
ENV_DETECTOR = ('type.googleapis.com/envoy.extensions.tracers.opentelemetry.resource_detectors.'
                'v3.EnvironmentResourceDetectorConfig')


def otel_http(port, **extra):
    tc = {'@type': OTEL_TYPE, 'http_service': {'http_uri': {
        'uri': 'http://otel.example:%d/v1/traces' % port, 'cluster': 'zipkin',
        'timeout': '2s'}}}
    tc.update(extra)
    return {'name': 'envoy.tracers.opentelemetry', 'typed_config': tc}


def otel_grpc(**extra):
    tc = {'@type': OTEL_TYPE, 'grpc_service': {'envoy_grpc': {'cluster_name': 'zipkin'},
                                               'timeout': '2s'}}
    tc.update(extra)
    return {'name': 'envoy.tracers.opentelemetry', 'typed_config': tc}


def zipkin(**extra):
    tc = {'@type': ZIPKIN_TYPE, 'collector_cluster': 'zipkin',
          'collector_endpoint': '/api/v2/spans'}
    tc.update(extra)
    return {'name': 'envoy.tracers.zipkin', 'typed_config': tc}


def hop(port, admin, upstream_port, collector_port, tracing=None, direction=None, name='a',
        route_extra=None, hcm_extra=None, boot_extra=None):
    """One petrel: a listener on port routing everything to upstream_port, tracing to the
    collector."""
    route = h.route_prefix('/', 'next', timeout='5s')
    route.update(route_extra or {})
    extra = dict(hcm_extra or {})
    if tracing is not None:
        extra['tracing'] = tracing
    hcm = h.http_connection_manager('ingress', h.route_config([h.vhost('all', ['*'], [route])]),
                                    **extra)
    lextra = {'traffic_direction': direction} if direction else {}
    boot = {'node': {'id': 'node-' + name, 'cluster': 'svc-' + name,
                     'locality': {'zone': 'zone-' + name}},
            'layered_runtime': FAST_FLUSH}
    boot.update(boot_extra or {})
    return h.bootstrap([h.listener('http', port, [hcm], **lextra)],
                       [h.cluster('next', [upstream_port]),
                        h.cluster('zipkin', [collector_port])], admin_port=admin, **boot)


def read_log(path):
    def text():
        if not os.path.exists(path):
            return ''
        with open(path) as f:
            return f.read().strip()
    h.wait_until(text)
    return text()


def span_by(spans, **kv):
    return [s for s in spans if all(s.get(k) == v for k, v in kv.items())]


class TracingCase(unittest.TestCase):

    def setUp(self):
        self.up = HttpUpstream(name='app')
        self.addCleanup(self.up.close)
        self.zk = ZipkinCollector()
        self.addCleanup(self.zk.close)

    def assertValidSpans(self):
        self.assertEqual(self.zk.invalid, [], 'the collector refused spans')

    def upstream_header(self, name):
        hs = dict((k.lower(), v) for k, v in self.up.last['headers'])
        return hs.get(name)

    def start_two_hops(self, tracing_a=None, tracing_b=None, zipkin_a=None, zipkin_b=None,
                       route_a=None, route_b=None):
        """petrel A (an outbound sidecar) -> petrel B (inbound) -> the app."""
        pa, aa, pb, ab = h.free_ports(4)
        ta = dict(tracing_a or {}, provider=zipkin(**(zipkin_a or {})))
        tb = dict(tracing_b or {}, provider=zipkin(**(zipkin_b or {})))
        b = h.Petrel(hop(pb, ab, self.up.port, self.zk.port, tb, 'INBOUND', 'b',
                         route_extra=route_b))
        b.start()
        self.addCleanup(b.close)
        a = h.Petrel(hop(pa, aa, pb, self.zk.port, ta, 'OUTBOUND', 'a', route_extra=route_a))
        a.start()
        self.addCleanup(a.close)
        return a, b, pa


class TwoHops(TracingCase):

    def test_no_incoming_context_parent_child_across_hops(self):
        spawn = {'spawn_upstream_span': True}
        a, b, port = self.start_two_hops(spawn, spawn)
        r = h.http_request(port, 'GET', '/shop?item=1', headers={'user-agent': 'tester'})
        self.assertEqual(r.status, 200)
        spans = self.zk.wait_spans(4)
        self.assertValidSpans()
        self.assertEqual(len(spans), 4, spans)
        trace = {s['traceId'] for s in spans}
        self.assertEqual(len(trace), 1, 'one trace across both hops')
        sa = span_by(spans, kind='SERVER', localEndpoint={'serviceName': 'svc-a', 'ipv4': '127.0.0.1'})
        self.assertEqual(len(sa), 1, spans)
        sa = sa[0]
        self.assertNotIn('parentId', sa, 'the first hop starts the trace')
        ca = [s for s in spans if s['kind'] == 'CLIENT' and s.get('parentId') == sa['id']]
        self.assertEqual(len(ca), 1, spans)
        ca = ca[0]
        # B's server span is the server side of A's client span (shared_span_context).
        sb = [s for s in spans if s['kind'] == 'SERVER' and s is not sa]
        self.assertEqual(len(sb), 1)
        sb = sb[0]
        self.assertEqual(sb['id'], ca['id'])
        self.assertTrue(sb.get('shared'))
        self.assertEqual(sb['parentId'], sa['id'])
        cb = [s for s in spans if s['kind'] == 'CLIENT' and s.get('parentId') == sb['id']]
        self.assertEqual(len(cb), 1, spans)
        cb = cb[0]
        self.assertEqual(cb['localEndpoint']['serviceName'], 'svc-b')
        # The app sees B's client span as its parent.
        self.assertEqual(self.upstream_header('x-b3-traceid'), sa['traceId'])
        self.assertEqual(self.upstream_header('x-b3-spanid'), cb['id'])
        self.assertEqual(self.upstream_header('x-b3-parentspanid'), sb['id'])
        self.assertEqual(self.upstream_header('x-b3-sampled'), '1')
        self.assertEqual(len(sa['traceId']), 16, '64-bit ids unless trace_id_128bit')
        # Envoy's tags on the server span.
        t = sa['tags']
        self.assertEqual(t['component'], 'proxy')
        self.assertEqual(t['node_id'], 'node-a')
        self.assertEqual(t['zone'], 'zone-a')
        self.assertEqual(t['http.method'], 'GET')
        self.assertEqual(t['http.url'], 'http://127.0.0.1:%d/shop?item=1' % port)
        self.assertEqual(t['http.protocol'], 'HTTP/1.1')
        self.assertEqual(t['http.status_code'], '200')
        self.assertEqual(t['upstream_cluster'], 'next')
        self.assertEqual(t['upstream_cluster.name'], 'next')
        self.assertEqual(t['response_flags'], '-')
        self.assertEqual(t['peer.address'], '127.0.0.1')
        self.assertEqual(t['user_agent'], 'tester')
        self.assertEqual(t['downstream_cluster'], '-')
        self.assertIn('request_size', t)
        self.assertIn('response_size', t)
        self.assertNotIn('error', t)
        self.assertEqual(t['guid:x-request-id'], self.upstream_header('x-request-id'))
        self.assertEqual(self.upstream_header('x-request-id')[14], '9',
                         'the request id carries the sampling decision')
        self.assertEqual(ca['name'], 'router next egress')
        self.assertEqual(ca['tags']['http.status_code'], '200')

    def test_http2_client_through_a_gateway(self):
        """client (HTTP/2) -> sidecar A (outbound) -> gateway G (spawns a span per try) ->
        sidecar B (inbound) -> app: one trace, each hop's span under the previous one."""
        from h2client import H2Client
        pa, aa, pg, ag, pb, ab = h.free_ports(6)
        b = h.Petrel(hop(pb, ab, self.up.port, self.zk.port, {'provider': zipkin()}, 'INBOUND',
                         'b'))
        b.start()
        self.addCleanup(b.close)
        g = h.Petrel(hop(pg, ag, pb, self.zk.port, {'provider': zipkin(),
                                                     'spawn_upstream_span': True}, None, 'g'))
        g.start()
        self.addCleanup(g.close)
        a = h.Petrel(hop(pa, aa, pg, self.zk.port, {'provider': zipkin()}, 'OUTBOUND', 'a'))
        a.start()
        self.addCleanup(a.close)
        with H2Client(pa) as c:
            sid = c.request('GET', '/h2', authority='shop.example')
            self.assertEqual(c.response(sid).status, 200)
        spans = self.zk.wait_spans(4)
        self.assertValidSpans()
        self.assertEqual(len(spans), 4, spans)
        self.assertEqual(len({s['traceId'] for s in spans}), 1)
        by_svc = lambda svc, kind: [s for s in spans if s['kind'] == kind and  # noqa: E731
                                    s['localEndpoint']['serviceName'] == svc]
        sa, = by_svc('svc-a', 'CLIENT')
        sg, = by_svc('svc-g', 'SERVER')
        cg, = by_svc('svc-g', 'CLIENT')
        sb, = by_svc('svc-b', 'SERVER')
        self.assertNotIn('parentId', sa)
        self.assertEqual(sa['tags']['http.protocol'], 'HTTP/2')
        self.assertEqual(sa['name'], 'shop.example')
        self.assertEqual(sg['id'], sa['id'])          # the server side of A's client span
        self.assertTrue(sg['shared'])
        self.assertEqual(cg['parentId'], sg['id'])
        self.assertEqual(sb['id'], cg['id'])
        self.assertEqual(sb['parentId'], sg['id'])
        self.assertEqual(sg['tags']['http.protocol'], 'HTTP/1.1')

    def test_not_shared_span_context(self):
        z = {'shared_span_context': False}
        a, b, port = self.start_two_hops(None, None, z, z)
        self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
        spans = self.zk.wait_spans(2)
        self.assertValidSpans()
        self.assertEqual(len(spans), 2)
        client = span_by(spans, kind='CLIENT')[0]   # A is outbound: its span is the client one
        server = span_by(spans, kind='SERVER')[0]
        self.assertEqual(server['parentId'], client['id'])
        self.assertNotEqual(server['id'], client['id'])
        self.assertNotIn('shared', server)

    def test_b3_multi_input_continues_the_trace(self):
        a, b, port = self.start_two_hops()
        tid, sid = '463ac35c9f6413ad48485a3953bb6124', 'a2fb4a1d1a96d312'
        r = h.http_request(port, 'GET', '/', headers={
            'x-b3-traceid': tid, 'x-b3-spanid': sid, 'x-b3-sampled': '1'})
        self.assertEqual(r.status, 200)
        spans = self.zk.wait_spans(2)
        self.assertValidSpans()
        self.assertEqual({s['traceId'] for s in spans}, {tid})
        client = span_by(spans, kind='CLIENT')[0]
        self.assertEqual(client['parentId'], sid)
        self.assertEqual(self.upstream_header('x-b3-traceid'), tid)

    def test_b3_single_input_and_its_sampling_decision(self):
        a, b, port = self.start_two_hops()
        tid, sid = '80f198ee56343ba864fe8b2a57d3eff7', 'e457b5a2e4d86bd1'
        r = h.http_request(port, 'GET', '/', headers={'b3': '%s-%s-1-05e3ac9a4f6e3b90' % (tid, sid)})
        self.assertEqual(r.status, 200)
        spans = self.zk.wait_spans(2)
        self.assertEqual({s['traceId'] for s in spans}, {tid})
        self.assertIsNone(self.upstream_header('b3'), 'B3 goes on as multi-header')
        # b3 "0": the caller decided not to sample; nothing is reported, the decision goes on.
        before = len(self.zk.snapshot())
        r = h.http_request(port, 'GET', '/', headers={'b3': '%s-%s-0' % (tid, sid)})
        self.assertEqual(r.status, 200)
        self.assertEqual(self.upstream_header('x-b3-sampled'), '0')
        time.sleep(0.6)
        self.assertEqual(len(self.zk.snapshot()), before)

    def test_w3c_input_with_b3_and_w3c_propagation(self):
        z = {'trace_context_option': 'USE_B3_WITH_W3C_PROPAGATION'}
        a, b, port = self.start_two_hops(None, None, z, z)
        tid, pid = '0af7651916cd43dd8448eb211c80319c', 'b7ad6b7169203331'
        r = h.http_request(port, 'GET', '/', headers={
            'traceparent': '00-%s-%s-01' % (tid, pid), 'tracestate': 'congo=t61rcWkgMzE'})
        self.assertEqual(r.status, 200)
        spans = self.zk.wait_spans(2)
        self.assertValidSpans()
        self.assertEqual({s['traceId'] for s in spans}, {tid})
        client = span_by(spans, kind='CLIENT')[0]
        self.assertEqual(client['parentId'], pid)
        tp = self.upstream_header('traceparent')
        self.assertRegex(tp, r'^00-%s-[0-9a-f]{16}-01$' % tid)
        self.assertEqual(tp.split('-')[2], self.upstream_header('x-b3-spanid'))
        self.assertEqual(self.upstream_header('tracestate'), 'congo=t61rcWkgMzE')

    def test_bad_traceparent_is_ignored_and_a_new_trace_starts(self):
        z = {'trace_context_option': 'USE_B3_WITH_W3C_PROPAGATION'}
        a, b, port = self.start_two_hops(None, None, z, z)
        bad = ['00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331',      # no flags
               '00-00000000000000000000000000000000-b7ad6b7169203331-01',   # zero trace id
               'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',   # version ff
               '00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01',   # uppercase
               'garbage']
        for i, tp in enumerate(bad):
            r = h.http_request(port, 'GET', '/', headers={'traceparent': tp})
            self.assertEqual(r.status, 200)
            spans = self.zk.wait_spans(2 * (i + 1))
            self.assertValidSpans()
            self.assertNotIn('0af7651916cd43dd8448eb211c80319c', {s['traceId'] for s in spans})
            self.assertNotIn('parentId', span_by(spans, kind='CLIENT')[-1])
        self.assertEqual(len({s['traceId'] for s in self.zk.snapshot()}), len(bad))

    def test_decorator_names_the_spans_and_propagates(self):
        deco = {'decorator': {'operation': 'checkout'}}
        a, b, port = self.start_two_hops(route_a=deco)
        r = h.http_request(port, 'GET', '/')
        self.assertEqual(r.status, 200)
        spans = self.zk.wait_spans(2)
        self.assertEqual(sorted(s['name'] for s in spans), ['checkout', 'checkout'],
                         'B names its span after the operation A propagated')
        self.assertIsNone(self.upstream_header('x-envoy-decorator-operation'),
                          'the inbound hop consumes the header')

    def test_decorator_without_propagation(self):
        deco = {'decorator': {'operation': 'checkout', 'propagate': False}}
        a, b, port = self.start_two_hops(route_a=deco)
        self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
        spans = self.zk.wait_spans(2)
        self.assertEqual(span_by(spans, kind='CLIENT')[0]['name'], 'checkout')
        self.assertEqual(span_by(spans, kind='SERVER')[0]['name'], '127.0.0.1:%d' % port,
                         'without the operation, a span is named after the host')


class OneHopBase(TracingCase):

    def start(self, tracing, route_extra=None, zipkin_extra=None, hcm_extra=None,
              boot_extra=None, collector_port=None):
        port, admin = h.free_ports(2)
        t = dict(tracing)
        if t.get('provider', 1) is not None:
            t['provider'] = zipkin(**(zipkin_extra or {}))
        else:
            del t['provider']
        p = h.Petrel(hop(port, admin, self.up.port,
                         collector_port if collector_port else self.zk.port, t,
                         route_extra=route_extra, hcm_extra=hcm_extra, boot_extra=boot_extra))
        p.start()
        self.addCleanup(p.close)
        return p, port

    def send(self, port, n, headers=None):
        rids = []
        with h.HttpClientConn(port) as c:
            for _ in range(n):
                rid = str(uuid.uuid4())
                hd = {'x-request-id': rid}
                hd.update(headers or {})
                self.assertEqual(c.request('GET', '/', headers=hd).status, 200)
                rids.append(rid)
        return rids

class OneHop(OneHopBase):

    def test_random_sampling_by_request_id(self):
        p, port = self.start({'random_sampling': {'value': 50}})
        rids = self.send(port, 300)
        expected = {r for r in rids if int(r[:8], 16) % 10000 < 5000}
        p.wait_stat('tracing.zipkin.spans_sent', len(expected))
        time.sleep(0.3)
        got = {s['tags']['guid:x-request-id'] for s in self.zk.snapshot()}
        # The id that came back has its trace bit set: compare all but that character.
        strip = lambda r: r[:14] + r[15:]  # noqa: E731
        self.assertEqual({strip(r) for r in got}, {strip(r) for r in expected})
        self.assertTrue(all(r[14] == '9' for r in got))
        self.assertLess(abs(len(expected) - 150), 45, 'about half')
        self.assertValidSpans()

    def test_random_sampling_0_and_100(self):
        p, port = self.start({'random_sampling': {'value': 0}})
        self.send(port, 40)
        time.sleep(0.5)
        self.assertEqual(self.zk.snapshot(), [])
        self.assertEqual(self.upstream_header('x-b3-sampled'), '0')
        self.assertEqual(self.upstream_header('x-request-id')[14], '4')
        p.close()
        p, port = self.start({'random_sampling': {'value': 100}})
        self.send(port, 40)
        self.assertEqual(len(self.zk.wait_spans(40)), 40)

    def test_overall_sampling_0_wins(self):
        p, port = self.start({'overall_sampling': {'value': 0}})
        self.send(port, 20, {'x-envoy-force-trace': '1'})
        time.sleep(0.5)
        self.assertEqual(self.zk.snapshot(), [])

    def test_force_trace_and_client_trace_id(self):
        p, port = self.start({'random_sampling': {'value': 0}})
        self.send(port, 3, {'x-envoy-force-trace': 'true'})
        spans = self.zk.wait_spans(3)
        self.assertEqual(len(spans), 3)
        self.assertTrue(all(s['tags']['guid:x-request-id'][14] == 'a' for s in spans))
        self.send(port, 2, {'x-client-trace-id': 'abc'})
        spans = self.zk.wait_spans(5)
        self.assertEqual(sum(s['tags']['guid:x-request-id'][14] == 'b' for s in spans), 2)

    def test_client_sampling_0_ignores_client_trace_id(self):
        p, port = self.start({'random_sampling': {'value': 0}, 'client_sampling': {'value': 0}})
        self.send(port, 5, {'x-client-trace-id': 'abc'})
        time.sleep(0.5)
        self.assertEqual(self.zk.snapshot(), [])

    def test_force_trace_is_ignored_from_an_external_client(self):
        p, port = self.start({'random_sampling': {'value': 0}},
                             hcm_extra={'use_remote_address': True,
                                        'preserve_external_request_id': True})
        # 127.0.0.1 is internal: honoured. (An external address cannot be made on loopback;
        # the rule is checked through its internal side here.)
        self.send(port, 1, {'x-envoy-force-trace': '1'})
        self.assertEqual(len(self.zk.wait_spans(1)), 1)

    def test_route_tracing_overrides_sampling(self):
        p, port = self.start({'random_sampling': {'value': 100}},
                             route_extra={'tracing': {'random_sampling': {
                                 'numerator': 0, 'denominator': 'HUNDRED'}}})
        self.send(port, 20)
        time.sleep(0.5)
        self.assertEqual(self.zk.snapshot(), [])

    def test_custom_tags_and_path_length(self):
        os.environ['PT_TRACE_TEST_ENV'] = 'from-env'
        p, port = self.start({
            'max_path_tag_length': 30,
            'custom_tags': [
                {'tag': 'lit', 'literal': {'value': 'v1'}},
                {'tag': 'env', 'environment': {'name': 'PT_TRACE_TEST_ENV'}},
                {'tag': 'env-missing', 'environment': {'name': 'PT_NO_SUCH_ENV',
                                                       'default_value': 'dflt'}},
                {'tag': 'hdr', 'request_header': {'name': 'X-Tenant'}},
                {'tag': 'hdr-missing', 'request_header': {'name': 'x-none',
                                                          'default_value': 'none'}},
                {'tag': 'latin', 'request_header': {'name': 'x-latin'}},
                {'tag': 'component', 'literal': {'value': 'mine'}}]},
            route_extra={'tracing': {'custom_tags': [{'tag': 'route', 'literal': {'value': 'r'}}]}})
        with h.HttpClientConn(port) as c:
            r = c.request('GET', '/' + 'x' * 100, headers={
                'x-tenant': 'a"c\\m\teé'.encode('utf-8'),
                'x-latin': 'café'.encode('latin-1')})
            self.assertEqual(r.status, 200)
        t = self.zk.wait_spans(1)[0]['tags']
        self.assertEqual(t['lit'], 'v1')
        self.assertEqual(t['env'], 'from-env')
        self.assertEqual(t['env-missing'], 'dflt')
        self.assertEqual(t['hdr'], 'a"c\\m\teé', 'escaped in JSON, UTF-8 kept')
        self.assertEqual(t['latin'], 'caf\ufffd', 'a byte that is not UTF-8 is replaced')
        self.assertEqual(t['component'], 'mine', 'a custom tag replaces a built-in one')
        self.assertEqual(t['hdr-missing'], 'none')
        self.assertEqual(t['route'], 'r')
        self.assertEqual(len(t['http.url']), 30)

    def test_error_tag_on_5xx_and_response_flags(self):
        p, port = self.start({})
        r = h.http_request(port, 'GET', '/status/503')
        self.assertEqual(r.status, 503)
        t = self.zk.wait_spans(1)[0]['tags']
        self.assertEqual(t['error'], 'true')
        self.assertEqual(t['http.status_code'], '503')
        self.up.close()  # the upstream is gone: petrel answers 503 UF
        r = h.http_request(port, 'GET', '/')
        self.assertEqual(r.status, 503)
        spans = self.zk.wait_spans(2)
        self.assertEqual(spans[1]['tags']['response_flags'], 'UF')
        self.assertEqual(spans[1]['tags']['error'], 'true')

    def test_upstream_reset_is_an_error_span(self):
        p, port = self.start({'spawn_upstream_span': True})
        r = h.http_request(port, 'GET', '/reset')
        self.assertEqual(r.status, 503)
        spans = self.zk.wait_spans(2)
        self.assertValidSpans()
        server = span_by(spans, kind='SERVER')[0]
        attempt = span_by(spans, kind='CLIENT')[0]
        self.assertEqual(server['tags']['response_flags'], 'UR')
        self.assertEqual(server['tags']['error'], 'true')
        self.assertEqual(attempt['tags']['http.status_code'], '0', 'no response came')
        self.assertEqual(attempt['tags']['error'], 'true')
        self.assertEqual(attempt['parentId'], server['id'])

    def test_client_gone_mid_request_still_ends_the_span(self):
        p, port = self.start({})
        s = h.tcp_connect(port)
        s.sendall(b'GET /delay/2000 HTTP/1.1\r\nhost: x\r\n\r\n')
        h.wait_until(lambda: p.stat('http.ingress.downstream_rq_active') == 1)
        s.close()
        spans = self.zk.wait_spans(1)
        self.assertEqual(len(spans), 1)
        self.assertEqual(spans[0]['tags']['response_flags'], 'DC')
        self.assertEqual(spans[0]['tags']['http.status_code'], '0')
        self.assertEqual(spans[0]['tags']['error'], 'true')

    def test_trace_id_in_access_log(self):
        log = {'name': 'envoy.access_loggers.file', 'typed_config': {
            '@type': FILE_LOG, 'path': '/dev/null',
            'log_format': {'text_format_source': {'inline_string': '%TRACE_ID%\n'}}}}
        port, admin = h.free_ports(2)
        logpath = os.path.join(h.tempfile.mkdtemp(prefix='pt-trace-'), 'a.log')
        log['typed_config']['path'] = logpath
        t = {'provider': zipkin(trace_id_128bit=True)}
        p = h.Petrel(hop(port, admin, self.up.port, self.zk.port, t,
                         hcm_extra={'access_log': [log]}))
        p.start()
        self.addCleanup(p.close)
        self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
        span = self.zk.wait_spans(1)[0]
        self.assertEqual(len(span['traceId']), 32)
        self.assertEqual(read_log(logpath), span['traceId'])

    def test_trace_id_is_a_dash_without_tracing(self):
        port, admin = h.free_ports(2)
        logpath = os.path.join(h.tempfile.mkdtemp(prefix='pt-trace-'), 'a.log')
        log = {'name': 'envoy.access_loggers.file', 'typed_config': {
            '@type': FILE_LOG, 'path': logpath,
            'log_format': {'text_format_source': {'inline_string': '%TRACE_ID%\n'}}}}
        p = h.Petrel(hop(port, admin, self.up.port, self.zk.port, None,
                         hcm_extra={'access_log': [log]}))
        p.start()
        self.addCleanup(p.close)
        self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
        self.assertIsNone(self.upstream_header('x-b3-traceid'))
        self.assertEqual(read_log(logpath), '-')

    def test_bootstrap_provider_is_the_fallback(self):
        p, port = self.start({'provider': None}, boot_extra={'tracing': {'http': zipkin()}})
        self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
        self.assertEqual(len(self.zk.wait_spans(1)), 1)
        self.assertEqual(self.zk.reports[0][0], '/api/v2/spans')
        self.assertEqual(self.zk.reports[0][1], 'application/json')
        self.assertEqual(self.zk.reports[0][2], 'zipkin')

    def test_http_proto_reports(self):
        p, port = self.start({'spawn_upstream_span': True},
                             zipkin_extra={'collector_endpoint_version': 'HTTP_PROTO',
                                           'collector_hostname': 'zipkin.example',
                                           'trace_id_128bit': True})
        self.assertEqual(h.http_request(port, 'GET', '/p').status, 200)
        spans = self.zk.wait_spans(2)
        self.assertValidSpans()
        self.assertEqual(len(spans), 2)
        self.assertTrue(all(r[1] == 'application/x-protobuf' for r in self.zk.reports))
        self.assertEqual(self.zk.reports[0][2], 'zipkin.example')
        server, client = span_by(spans, kind='SERVER')[0], span_by(spans, kind='CLIENT')[0]
        self.assertEqual(len(server['traceId']), 32)
        self.assertEqual(client['parentId'], server['id'])
        self.assertEqual(server['tags']['http.url'], 'http://127.0.0.1:%d/p' % port)
        self.assertEqual(server['localEndpoint'], {'serviceName': 'svc-a', 'ipv4': '127.0.0.1'})

    def test_start_child_span_gives_a_client_span_per_try(self):
        router = {'name': 'envoy.filters.http.router', 'typed_config': {
            '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
            'start_child_span': True}}
        p, port = self.start({}, hcm_extra={'http_filters': [router]},
                             route_extra={'route': {'cluster': 'next', 'timeout': '5s',
                                                    'retry_policy': {'retry_on': '5xx',
                                                                     'num_retries': 2}}})
        r = h.http_request(port, 'GET', '/fail/k1/1/503')
        self.assertEqual(r.status, 200)
        spans = self.zk.wait_spans(3)
        self.assertValidSpans()
        server = span_by(spans, kind='SERVER')[0]
        tries = span_by(spans, kind='CLIENT')
        self.assertEqual(len(tries), 2, 'one span per try')
        self.assertTrue(all(t['parentId'] == server['id'] for t in tries))
        self.assertEqual(sorted(t['tags']['http.status_code'] for t in tries), ['200', '503'])
        self.assertEqual([t['tags'].get('error') for t in tries
                          if t['tags']['http.status_code'] == '503'], ['true'])
        # The upstream saw the last try's span as its parent.
        last = [t for t in tries if t['tags']['http.status_code'] == '200'][0]
        self.assertEqual(self.upstream_header('x-b3-spanid'), last['id'])

    def test_stats(self):
        p, port = self.start({})
        self.send(port, 3)
        p.wait_stat('tracing.zipkin.reports_sent', lambda v: v >= 1)
        p.wait_stat('tracing.zipkin.spans_sent', 3)
        self.assertEqual(p.stat('tracing.zipkin.reports_failed'), 0)
        self.assertEqual(p.stat('tracing.zipkin.spans_dropped'), 0)


class CollectorFaults(OneHopBase):

    def test_collector_down_costs_no_request(self):
        p, port = self.start({}, collector_port=h.dead_port())
        self.send(port, 30)
        p.wait_stat('tracing.zipkin.reports_failed', lambda v: v >= 1)
        self.assertEqual(p.stat('tracing.zipkin.reports_sent'), 0)

    def test_collector_answering_an_error_counts_dropped_reports(self):
        self.zk.mode = 'status:500'
        p, port = self.start({})
        self.send(port, 3)
        p.wait_stat('tracing.zipkin.reports_dropped', lambda v: v >= 1)
        self.assertEqual(p.stat('tracing.zipkin.reports_sent'), 0)

    def test_stalled_collector_bounds_memory_and_counts_drops(self):
        self.zk.mode = 'stall'
        p, port = self.start({})
        # One report goes out and never comes back; the rest wait, up to the bound, then
        # are dropped and counted. Requests are not slowed or failed meanwhile.
        self.send(port, 20)
        h.wait_until(lambda: len(self.zk.reports) >= 1)
        rss0 = p.rss_kb()
        n = 6000
        self.send(port, n)
        # What is held is bounded (4096 spans): everything else is dropped. (A report that
        # stays unanswered for 5 s fails, and the next one may go: on a slow machine, more
        # than one report, but never two at once.)
        p.wait_stat('tracing.zipkin.spans_dropped', lambda v: v >= n + 20 - 4096 - p.stat(
            'tracing.zipkin.spans_sent'))
        self.assertLessEqual(len(self.zk.reports), 1 + p.stat('tracing.zipkin.reports_failed'),
                             'one report in flight at a time')
        self.assertLess(p.rss_kb() - rss0, 16 * 1024, 'memory bounded while stalled')


class OpenTelemetry(unittest.TestCase):

    def setUp(self):
        self.up = HttpUpstream(name='app')
        self.addCleanup(self.up.close)

    def upstream_header(self, name):
        return dict((k.lower(), v) for k, v in self.up.last['headers']).get(name)

    def collector(self, grpc_mode=False):
        c = OtlpCollector(grpc_mode)
        self.addCleanup(c.close)
        return c

    def test_http_two_hops_continue_a_w3c_trace(self):
        col = self.collector()
        pa, aa, pb, ab = h.free_ports(4)
        b = h.Petrel(hop(pb, ab, self.up.port, col.port, {
            'provider': otel_http(col.port, service_name='svc-b-otel',
                                  resource_detectors=[{'name': 'env', 'typed_config': {
                                      '@type': ENV_DETECTOR}}])}, 'INBOUND', 'b'),
            env={'OTEL_RESOURCE_ATTRIBUTES': 'deployment.environment=test,team=mesh'})
        b.start()
        self.addCleanup(b.close)
        a = h.Petrel(hop(pa, aa, pb, col.port, {'provider': otel_http(col.port)},
                         'OUTBOUND', 'a'))
        a.start()
        self.addCleanup(a.close)
        tid, pid = '4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b7'
        r = h.http_request(pa, 'GET', '/o', headers={
            'traceparent': '00-%s-%s-01' % (tid, pid), 'tracestate': 'rojo=00f067aa0ba902b7'})
        self.assertEqual(r.status, 200)
        spans = col.wait_spans(2)
        self.assertEqual(col.invalid, [])
        self.assertEqual(len(spans), 2, spans)
        self.assertEqual({s['trace_id'] for s in spans}, {tid})
        client = [s for s in spans if s['kind'] == 3][0]
        server = [s for s in spans if s['kind'] == 2][0]
        self.assertEqual(client['parent_span_id'], pid)
        self.assertEqual(server['parent_span_id'], client['span_id'], 'no shared spans in OTel')
        self.assertEqual(server['attributes']['http.method'], 'GET')
        self.assertEqual(server['attributes']['node_id'], 'node-b')
        tp = self.upstream_header('traceparent')
        self.assertEqual(tp, '00-%s-%s-01' % (tid, server['span_id']))
        self.assertEqual(self.upstream_header('tracestate'), 'rojo=00f067aa0ba902b7')
        self.assertIsNone(self.upstream_header('x-b3-traceid'), 'OpenTelemetry propagates W3C')
        names = sorted(r.get('service.name') for r in col.resources)
        self.assertIn('svc-b-otel', names)
        self.assertIn('unknown_service:envoy', names)
        env = [r for r in col.resources if r.get('service.name') == 'svc-b-otel'][0]
        self.assertEqual(env.get('deployment.environment'), 'test')
        self.assertEqual(env.get('team'), 'mesh')
        self.assertTrue(all(m['path'] == '/v1/traces' for m in col.requests))
        self.assertTrue(all(m['content-type'] == 'application/x-protobuf' for m in col.requests))
        self.assertEqual(col.requests[0]['host'], 'otel.example:%d' % col.port)
        a.wait_stat('tracing.opentelemetry.reports_sent', lambda v: v >= 1)

    def test_grpc_export_and_error_status(self):
        col = self.collector(grpc_mode=True)
        port, admin = h.free_ports(2)
        p = h.Petrel(hop(port, admin, self.up.port, col.port,
                         {'provider': otel_grpc(), 'spawn_upstream_span': True}))
        p.start()
        self.addCleanup(p.close)
        self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
        self.assertEqual(h.http_request(port, 'GET', '/status/503').status, 503)
        spans = col.wait_spans(4)
        self.assertEqual(col.invalid, [])
        self.assertEqual(len(spans), 4)
        self.assertEqual(len({s['trace_id'] for s in spans}), 2)
        for srv in [s for s in spans if s['kind'] == 2]:
            kids = [s for s in spans if s.get('parent_span_id') == srv['span_id']]
            self.assertEqual(len(kids), 1)
            self.assertEqual(kids[0]['kind'], 3)
        failed = [s for s in spans if s['kind'] == 2 and
                  s['attributes']['http.status_code'] == '503'][0]
        self.assertEqual(failed['status_code'], 2, 'a 5xx span has status ERROR')
        p.wait_stat('tracing.opentelemetry.reports_sent', lambda v: v >= 1)
        self.assertEqual(p.stat('tracing.opentelemetry.reports_failed'), 0)
        self.assertEqual(p.stat('tracing.opentelemetry.reports_dropped'), 0)

    def test_grpc_collector_down(self):
        port, admin = h.free_ports(2)
        p = h.Petrel(hop(port, admin, self.up.port, h.dead_port(), {'provider': otel_grpc()}))
        p.start()
        self.addCleanup(p.close)
        for _ in range(5):
            self.assertEqual(h.http_request(port, 'GET', '/').status, 200)
        p.wait_stat('tracing.opentelemetry.reports_failed', lambda v: v >= 1)


class ConfigErrors(unittest.TestCase):

    def check(self, tracing, fragment, boot_extra=None, route_extra=None):
        port, admin = h.free_ports(2)
        cfg = hop(port, admin, 1, 2, tracing, route_extra=route_extra, boot_extra=boot_extra)
        d = h.tempfile.mkdtemp(prefix='pt-trace-cfg-')
        path = os.path.join(d, 'petrel.json')
        with open(path, 'w') as f:
            json.dump(cfg, f)
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', path])
        self.assertEqual(rc, 1, err)
        self.assertIn(fragment, err)

    def test_unsupported_providers_name_the_field(self):
        hcm = ('static_resources.listeners[0].filter_chains[0].filters[0].typed_config.'
               'tracing.provider.typed_config.@type')
        for t in ('envoy.config.trace.v3.DatadogConfig', 'envoy.config.trace.v3.SkyWalkingConfig',
                  'envoy.config.trace.v3.LightstepConfig'):
            self.check({'provider': {'name': 'x', 'typed_config': {
                '@type': 'type.googleapis.com/' + t}}}, hcm)
        self.check(None, 'tracing.http.typed_config.@type',
                   boot_extra={'tracing': {'http': {'name': 'x', 'typed_config': {
                       '@type': 'type.googleapis.com/envoy.config.trace.v3.DatadogConfig'}}}})

    def test_opentelemetry_errors(self):
        base = ('static_resources.listeners[0].filter_chains[0].filters[0].typed_config.tracing.'
                'provider.typed_config')
        self.check({'provider': {'name': 'o', 'typed_config': {'@type': OTEL_TYPE}}},
                   base + ': one of grpc_service or http_service is required')
        self.check({'provider': otel_grpc(sampler={'name': 's'})}, base + '.sampler')
        bad = otel_http(1)
        bad['typed_config']['http_service']['http_uri']['uri'] = 'collector/v1/traces'
        self.check({'provider': bad}, base + '.http_service.http_uri.uri: "collector/v1/traces" '
                   'is not an absolute URI')
        bad = otel_grpc()
        bad['typed_config']['grpc_service']['envoy_grpc']['cluster_name'] = 'nope'
        self.check({'provider': bad}, base + '.grpc_service.envoy_grpc.cluster_name: cluster '
                   '"nope" does not exist')
        self.check({'provider': otel_grpc(resource_detectors=[{'name': 'd', 'typed_config': {
            '@type': 'type.googleapis.com/x.Dynatrace'}}])},
            base + '.resource_detectors[0].typed_config.@type')

    def test_bad_values(self):
        base = 'static_resources.listeners[0].filter_chains[0].filters[0].typed_config.tracing'
        self.check({'random_sampling': {'value': 101}, 'provider': zipkin()},
                   base + '.random_sampling.value')
        self.check({'provider': zipkin(collector_cluster='nope')},
                   base + '.provider.typed_config.collector_cluster: cluster "nope" does not exist')
        self.check({'provider': zipkin(collector_endpoint='')},
                   base + '.provider.typed_config.collector_endpoint: is required')
        self.check({'provider': zipkin(collector_endpoint_version='GRPC')},
                   base + '.provider.typed_config.collector_endpoint_version')
        self.check({'provider': zipkin(), 'verbose': True}, base + '.verbose')
        self.check({'provider': zipkin(), 'custom_tags': [{'tag': 't', 'metadata': {}}]},
                   base + '.custom_tags[0].metadata')
        self.check({'provider': zipkin(), 'custom_tags': [{'literal': {'value': 'v'}}]},
                   base + '.custom_tags[0].tag: is required')
        self.check({'provider': zipkin(bogus=1)}, base + '.provider.typed_config.bogus')
        self.check({'provider': zipkin(), 'custom_tags': [
            {'tag': 't%d' % i, 'literal': {'value': 'v'}} for i in range(17)]},
            base + '.custom_tags: has 17 entries; at most 16 are supported')
        self.check({'provider': zipkin(trace_context_option='USE_W3C')},
                   base + '.provider.typed_config.trace_context_option')
        self.check({'provider': zipkin()}, 'routes[0].decorator.operation: is required',
                   route_extra={'decorator': {}})
        self.check({'provider': zipkin()}, 'routes[0].tracing.random_sampling.denominator',
                   route_extra={'tracing': {'random_sampling': {'numerator': 1,
                                                                'denominator': 'BILLION'}}})


if __name__ == '__main__':
    unittest.main()
