"""Metadata (config.core.v3.Metadata) end to end: kept on the node, listener, filter chain,
cluster, endpoint, route configuration, virtual host and route, shown in /config_dump and
/server_info as configured, read by the access log's %CLUSTER_METADATA%,
%UPSTREAM_METADATA%, %ROUTE_METADATA%, %METADATA(TYPE:...)% and %DYNAMIC_METADATA%
(Envoy's output: a string as itself, anything else as JSON, '-' or null when absent, cut at
the operator's length), and by RBAC's metadata and sourced_metadata matchers. The dynamic
metadata comes from a real producer: the RBAC filter's shadow verdict, written under
envoy.filters.http.rbac as in Envoy.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_metadata.py -v
"""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

RBAC_HTTP_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC'
STDOUT_LOG_TYPE = 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog'
ANY = {'any': True}

CLUSTER_MD = {'filter_metadata': {'istio': {'service': 'reviews', 'port': 9080,
                                            'labels': {'app': 'reviews', 'version': 'v2'}}},
              'typed_filter_metadata': {'envoy.lb': {
                  '@type': 'type.googleapis.com/google.protobuf.Struct', 'value': {'x': 1}}}}
ENDPOINT_MD = {'filter_metadata': {'envoy.lb': {'canary': True, 'zone': 'eu-west-1a'}}}
ROUTE_MD = {'filter_metadata': {'acme': {'tier': 'gold', 'owner': {'team': 'payments'},
                                         'weight': 2.5, 'tags': ['a', 'b']}}}
VHOST_MD = {'filter_metadata': {'acme': {'site': 'shop'}}}

LOG_JSON = {
    'path': '%REQ(:PATH)%',
    'code': '%RESPONSE_CODE%',
    'svc': '%CLUSTER_METADATA(istio:service)%',
    'port': '%CLUSTER_METADATA(istio:port)%',
    'labels': '%CLUSTER_METADATA(istio:labels)%',
    'version': '%CLUSTER_METADATA(istio:labels:version)%',
    'canary': '%UPSTREAM_METADATA(envoy.lb:canary)%',
    'zone': '%UPSTREAM_METADATA(envoy.lb:zone)%',
    'tier': '%ROUTE_METADATA(acme:tier)%',
    'team': '%ROUTE_METADATA(acme:owner:team)%',
    'weight': '%ROUTE_METADATA(acme:weight)%',
    'tags': '%ROUTE_METADATA(acme:tags)%',
    'site': '%METADATA(VIRTUAL_HOST:acme:site)%',
    'listener': '%METADATA(LISTENER:acme:listener)%',
    'cut': '%CLUSTER_METADATA(istio:service):3%',
    'absent': '%CLUSTER_METADATA(istio:nope)%',
    'shadow': '%DYNAMIC_METADATA(envoy.filters.http.rbac:shadow_engine_result)%',
    'shadow_policy': '%DYNAMIC_METADATA(envoy.filters.http.rbac:shadow_effective_policy_id)%',
    'rbac_ns': '%DYNAMIC_METADATA(envoy.filters.http.rbac)%',
    'fault_reason': '%DYNAMIC_METADATA(envoy.filters.http.fault:reason)%',
    'fault_level': '%DYNAMIC_METADATA(envoy.filters.http.fault:drill:level)%',
}
LOG_TEXT = ('TEXT %CLUSTER_METADATA(istio:service)% %CLUSTER_METADATA(istio:labels)% '
            '%ROUTE_METADATA(acme:weight)% %CLUSTER_METADATA(istio:nope)% '
            '%UPSTREAM_METADATA(envoy.lb:canary)% %ROUTE_METADATA(acme:owner):10%\n')


def stdout_log(fmt):
    lf = {'json_format': fmt} if isinstance(fmt, dict) else {
        'text_format_source': {'inline_string': fmt}}
    return {'name': 'envoy.access_loggers.stdout',
            'typed_config': {'@type': STDOUT_LOG_TYPE, 'log_format': lf}}


def rbac(**typed):
    tc = {'@type': RBAC_HTTP_TYPE}
    tc.update(typed)
    return {'name': 'envoy.filters.http.rbac', 'typed_config': tc}


def shadow_rbac():
    """Shadow rules that would deny /admin (policy "no-admin"): nothing is enforced, the
    verdict goes to dynamic metadata."""
    return rbac(shadow_rules={'action': 'DENY', 'policies': {'no-admin': {
        'permissions': [{'url_path': {'path': {'prefix': '/admin'}}}], 'principals': [ANY]}}})


def metadata_rbac():
    """Enforced: deny what the shadow rules would have denied (read from dynamic metadata),
    and deny routes whose metadata says tier "blocked" (sourced_metadata ROUTE)."""
    shadow_denied = {'metadata': {
        'filter': 'envoy.filters.http.rbac', 'path': [{'key': 'shadow_engine_result'}],
        'value': {'string_match': {'exact': 'denied'}}}}
    blocked_route = {'sourced_metadata': {'metadata_source': 'ROUTE', 'metadata_matcher': {
        'filter': 'acme', 'path': [{'key': 'tier'}],
        'value': {'or_match': {'value_matchers': [{'string_match': {'exact': 'blocked'}},
                                                  {'string_match': {'exact': 'banned'}}]}}}}}
    return rbac(rules={'action': 'DENY', 'policies': {
        'shadow-says-no': {'permissions': [ANY], 'principals': [shadow_denied]},
        'blocked-tier': {'permissions': [blocked_route], 'principals': [ANY]}}})


def config(port, admin, up_port, filters=None, log=LOG_JSON, endpoint_md=ENDPOINT_MD):
    routes = [{'match': {'prefix': '/blocked'}, 'route': {'cluster': 'a'},
               'metadata': {'filter_metadata': {'acme': {'tier': 'banned'}}}},
              {'match': {'prefix': '/'}, 'route': {'cluster': 'a'}, 'metadata': ROUTE_MD}]
    rc = h.route_config([h.vhost('all', ['*'], routes, metadata=VHOST_MD)],
                        metadata={'filter_metadata': {'acme': {'rc': 1}}})
    hcm = h.http_connection_manager('ingress', rc, http_filters=(filters or []) + [
        h.router_filter()], access_log=[stdout_log(log)])
    lst = h.listener('http', port, [hcm],
                     metadata={'filter_metadata': {'acme': {'listener': 'edge'}}})
    lst['filter_chains'][0]['metadata'] = {'filter_metadata': {'acme': {'chain': 'plain'}}}
    cl = h.cluster('a', [up_port], metadata=CLUSTER_MD)
    if endpoint_md is not None:
        cl['load_assignment']['endpoints'][0]['lb_endpoints'][0]['metadata'] = endpoint_md
    return h.bootstrap([lst], [cl], admin_port=admin,
                       node={'id': 'sidecar~10.0.0.1~reviews-v2.default~default.svc',
                             'cluster': 'reviews.default',
                             'metadata': {'ISTIO_VERSION': '1.22.0', 'LABELS': {'app': 'x'},
                                          'CLUSTER_ID': 'Kubernetes'}})


class MetadataTest(unittest.TestCase):

    def start(self, up_port, **kw):
        port, admin = h.free_ports(2)
        p = h.Petrel(config(port, admin, up_port, **kw))
        p.start()
        self.addCleanup(p.close)
        return p, port

    def log_lines(self, p, n):
        def lines():
            return [json.loads(line) for line in p.stdout().splitlines()
                    if line.startswith('{')]
        h.wait_until(lambda: len(lines()) >= n, message='%d access log lines' % n)
        return lines()

    def test_access_log_operators(self):
        with HttpUpstream(name='a') as up:
            p, port = self.start(up.port, filters=[shadow_rbac()])
            self.assertEqual(h.http_request(port, 'GET', '/x').status, 200)
            self.assertEqual(h.http_request(port, 'GET', '/admin/y').status, 200)  # shadow only
            first, second = self.log_lines(p, 2)[:2]
            self.assertEqual(first['svc'], 'reviews')
            self.assertEqual(first['port'], 9080)
            self.assertEqual(first['labels'], {'app': 'reviews', 'version': 'v2'})
            self.assertEqual(first['version'], 'v2')
            self.assertIs(first['canary'], True)
            self.assertEqual(first['zone'], 'eu-west-1a')
            self.assertEqual(first['tier'], 'gold')
            self.assertEqual(first['team'], 'payments')
            self.assertEqual(first['weight'], 2.5)
            self.assertEqual(first['tags'], ['a', 'b'])
            self.assertEqual(first['site'], 'shop')
            self.assertEqual(first['listener'], 'edge')
            self.assertEqual(first['cut'], 'rev')
            self.assertIsNone(first['absent'])
            # Shadow rules ran on both: allowed /x (no policy matched), denied /admin/y.
            self.assertEqual(first['shadow'], 'allowed')
            self.assertIsNone(first['shadow_policy'])
            self.assertEqual(first['rbac_ns'], {'shadow_engine_result': 'allowed'})
            self.assertEqual(second['shadow'], 'denied')
            self.assertEqual(second['shadow_policy'], 'no-admin')
            self.assertEqual(second['rbac_ns'], {'shadow_effective_policy_id': 'no-admin',
                                                 'shadow_engine_result': 'denied'})

    def test_text_format_and_absent(self):
        with HttpUpstream(name='a') as up:
            p, port = self.start(up.port, log=LOG_TEXT)
            self.assertEqual(h.http_request(port, 'GET', '/x').status, 200)
            h.wait_until(lambda: 'TEXT ' in p.stdout())
            line = [x for x in p.stdout().splitlines() if x.startswith('TEXT ')][0]
            self.assertEqual(line, 'TEXT reviews {"app":"reviews","version":"v2"} 2.5 - true '
                                   '{"team":"p')

    def test_no_dynamic_metadata_without_producer(self):
        with HttpUpstream(name='a') as up:
            p, port = self.start(up.port, endpoint_md=None)
            self.assertEqual(h.http_request(port, 'GET', '/x').status, 200)
            line = self.log_lines(p, 1)[0]
            self.assertIsNone(line['shadow'])
            self.assertIsNone(line['rbac_ns'])
            self.assertIsNone(line['canary'])  # the endpoint has no metadata
            self.assertEqual(line['svc'], 'reviews')

    def test_upstream_down_still_logs_cluster_and_endpoint_metadata(self):
        dead = h.dead_port()
        p, port = self.start(dead)
        r = h.http_request(port, 'GET', '/x')
        self.assertEqual(r.status, 503)
        line = self.log_lines(p, 1)[0]
        self.assertEqual(line['code'], 503)
        self.assertEqual(line['svc'], 'reviews')
        self.assertEqual(line['zone'], 'eu-west-1a')  # the host it tried

    def test_fault_filter_metadata(self):
        """An injected abort writes the fault's filter_metadata (Envoy's fault filter); a
        request the fault does not hit gets none."""
        fault = {'name': 'envoy.filters.http.fault', 'typed_config': {
            '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault',
            'abort': {'http_status': 418, 'percentage': {'numerator': 100}},
            'headers': [{'name': 'x-chaos', 'present_match': True}],
            'filter_metadata': {'reason': 'chaos', 'drill': {'level': 3}}}}
        with HttpUpstream(name='a') as up:
            p, port = self.start(up.port, filters=[fault])
            self.assertEqual(h.http_request(port, 'GET', '/calm').status, 200)
            self.assertEqual(h.http_request(port, 'GET', '/x', headers={'x-chaos': '1'}).status,
                             418)
            calm, hit = self.log_lines(p, 2)[:2]
            self.assertIsNone(calm['fault_reason'])
            self.assertEqual(hit['fault_reason'], 'chaos')
            self.assertEqual(hit['fault_level'], 3)

    def test_rbac_reads_dynamic_and_route_metadata(self):
        with HttpUpstream(name='a') as up:
            p, port = self.start(up.port, filters=[shadow_rbac(), metadata_rbac()])
            self.assertEqual(h.http_request(port, 'GET', '/ok').status, 200)
            r = h.http_request(port, 'GET', '/admin/users')
            self.assertEqual(r.status, 403)  # the shadow verdict, enforced by the second filter
            r = h.http_request(port, 'GET', '/blocked')
            self.assertEqual(r.status, 403)  # the route's metadata says tier "banned"
            self.assertEqual([q['path'] for q in up.requests], ['/ok'])
            p.wait_stat('http.ingress.rbac.denied', 2)

    def test_config_dump_and_server_info(self):
        with HttpUpstream(name='a') as up:
            p, port = self.start(up.port)
            dump = json.loads(p.admin_get('/config_dump')[2])
            text = json.dumps(dump)
            for needle in ('"listener": "edge"', '"chain": "plain"', '"service": "reviews"',
                           '"canary": true', '"tier": "gold"', '"site": "shop"',
                           '"ISTIO_VERSION": "1.22.0"', 'google.protobuf.Struct'):
                self.assertIn(needle, text)
            info = json.loads(p.admin_get('/server_info')[2])
            self.assertEqual(info['node']['metadata']['CLUSTER_ID'], 'Kubernetes')


class MetadataErrorsTest(unittest.TestCase):

    def check(self, mutate, expected):
        cfg = config(1, 2, 3)
        mutate(cfg)
        rc, _, err = _validate(cfg)
        self.assertEqual(rc, 1, err)
        self.assertIn(expected, err)

    def test_bad_metadata(self):
        def listener_md(c):
            c['static_resources']['listeners'][0]['metadata'] = 'x'
        self.check(listener_md, 'static_resources.listeners[0].metadata: must be an object '
                                '(config.core.v3.Metadata)')

        def ns_not_object(c):
            c['static_resources']['clusters'][0]['metadata'] = {'filter_metadata': {'istio': 3}}
        self.check(ns_not_object, 'static_resources.clusters[0].metadata: filter_metadata'
                                  '["istio"] must be an object')

        def typed_no_type(c):
            c['static_resources']['clusters'][0]['metadata'] = {
                'typed_filter_metadata': {'x': {'value': 1}}}
        self.check(typed_no_type, 'static_resources.clusters[0].metadata: typed_filter_metadata'
                                  '["x"] must be an Any with an "@type"')

        def unknown_key(c):
            rc = c['static_resources']['listeners'][0]['filter_chains'][0]['filters'][0][
                'typed_config']['route_config']
            rc['virtual_hosts'][0]['routes'][1]['metadata'] = {'filter_meta': {}}
        self.check(unknown_key, 'virtual_hosts[0].routes[1].metadata: unknown field '
                                '"filter_meta" (expected filter_metadata or typed_filter_metadata)')

        def node_md(c):
            c['node']['metadata'] = ['a']
        self.check(node_md, 'node.metadata: must be an object (google.protobuf.Struct)')

    def test_bad_operators(self):
        for fmt, err in [('%CLUSTER_METADATA()%', '%CLUSTER_METADATA()% needs a metadata namespace'),
                         ('%ROUTE_METADATA(a::b)%', '%ROUTE_METADATA(a::b)%: empty namespace or key'),
                         ('%METADATA(NODE:a:b)%', '%METADATA(NODE:a:b)%: type "NODE" '
                                                  'is not supported'),
                         ('%METADATA(ROUTE)%', '%METADATA(ROUTE)% needs a metadata namespace'),
                         ('%DYNAMIC_METADATA(a:b):0%', '%DYNAMIC_METADATA%: length must be at '
                                                       'least 1')]:
            cfg = config(1, 2, 3, log=fmt + '\n')
            rc, _, out = _validate(cfg)
            self.assertEqual(rc, 1, fmt)
            self.assertIn(err, out, fmt)

    def test_bad_rbac_matchers(self):
        def no_filter(c):
            f = metadata_rbac()
            pol = f['typed_config']['rules']['policies']['shadow-says-no']
            del pol['principals'][0]['metadata']['filter']
            _hcm(c)['http_filters'].insert(0, f)
        self.check(no_filter, "principals[0].metadata.filter: is required (the metadata "
                              "namespace)")

        def bad_source(c):
            f = metadata_rbac()
            pol = f['typed_config']['rules']['policies']['blocked-tier']
            pol['permissions'][0]['sourced_metadata']['metadata_source'] = 'LISTENER'
            _hcm(c)['http_filters'].insert(0, f)
        self.check(bad_source, 'sourced_metadata.metadata_source')

        def bad_range(c):
            f = metadata_rbac()
            pol = f['typed_config']['rules']['policies']['shadow-says-no']
            pol['principals'][0]['metadata']['value'] = {
                'double_match': {'range': {'start': 5, 'end': 1}}}
            _hcm(c)['http_filters'].insert(0, f)
        self.check(bad_range, 'double_match.range: start (5) must be less than end (1)')


def _hcm(cfg):
    return cfg['static_resources']['listeners'][0]['filter_chains'][0]['filters'][0][
        'typed_config']


def _validate(cfg):
    import tempfile
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
        json.dump(cfg, f)
    try:
        return h.run_petrel(['--mode', 'validate', '-c', f.name])
    finally:
        os.unlink(f.name)


if __name__ == '__main__':
    unittest.main()
