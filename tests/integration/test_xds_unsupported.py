"""xDS features petrel does not support: each is refused with an error naming its field, and
that error is the one docs/xds-unsupported.md shows.

For every feature (ECDS, VHDS, scoped routes, xDS-TP names and locators, LEDS, HDS, RTDS,
on-demand CDS, and the ApiConfigSource variants petrel lacks), a bootstrap using it is checked
with `petrel --mode validate`: it fails (exit 1) with exactly the documented error lines, and
each line is in the page word for word (so the page cannot drift from the code). The last
test sends an unsupported field from a control plane: the same error, NACKed with the
resource's path.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_xds_unsupported.py -v
"""

import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from test_xds_ads import CP_MISSING, ControlPlane, HCM, ROUTER, HPO, RDS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, 'docs', 'xds-unsupported.md')
ADS = {'ads': {}, 'resource_api_version': 'V3'}
LST = 'static_resources.listeners[0]'
HCM_PATH = LST + '.filter_chains[0].filters[0].typed_config'


def base(cp_port=18000):
    """A valid bootstrap: ADS to a static cluster, CDS over it, a listener with inline
    routes."""
    hcm = {'@type': HCM, 'stat_prefix': 'ingress',
           'route_config': {'name': 'r', 'virtual_hosts': [{
               'name': 'all', 'domains': ['*'],
               'routes': [{'match': {'prefix': '/'}, 'route': {'cluster': 'app'}}]}]},
           'http_filters': [{'name': 'envoy.filters.http.router',
                             'typed_config': {'@type': ROUTER}}]}
    xds = h.cluster('xds', [cp_port], typed_extension_protocol_options={HPO: {
        '@type': 'type.googleapis.com/' + HPO,
        'explicit_http_config': {'http2_protocol_options': {}}}})
    return {'dynamic_resources': {
                'ads_config': {'api_type': 'GRPC', 'transport_api_version': 'V3',
                               'grpc_services': [{'envoy_grpc': {'cluster_name': 'xds'}}]},
                'cds_config': dict(ADS)},
            'static_resources': {
                'listeners': [{'name': 'ingress',
                               'address': {'socket_address': {'address': '127.0.0.1',
                                                              'port_value': 10000}},
                               'filter_chains': [{'filters': [{
                                   'name': 'envoy.filters.network.http_connection_manager',
                                   'typed_config': hcm}]}]}],
                'clusters': [xds, h.cluster('app', [8080])]}}


def hcm(c):
    return c['static_resources']['listeners'][0]['filter_chains'][0]['filters'][0][
        'typed_config']


def ecds(c):
    hcm(c)['http_filters'].insert(0, {'name': 'fault', 'config_discovery': {
        'config_source': ADS,
        'type_urls': ['type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault']}})


def ecds_network(c):
    c['static_resources']['listeners'][0]['filter_chains'][0]['filters'].insert(0, {
        'name': 'rbac', 'config_discovery': {'config_source': ADS, 'type_urls': [
            'type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC']}})


def ecds_listener(c):
    c['static_resources']['listeners'][0]['listener_filters'] = [{
        'name': 'tls', 'config_discovery': {'config_source': ADS, 'type_urls': [
            'type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.'
            'TlsInspector']}}]


def vhds(c):
    hcm(c)['route_config']['vhds'] = {'config_source': ADS}


def srds(c):
    del hcm(c)['route_config']
    hcm(c)['scoped_routes'] = {
        'name': 'scopes', 'rds_config_source': ADS,
        'scope_key_builder': {'fragments': [{'header_value_extractor': {'name': 'x-scope'}}]},
        'scoped_rds': {'scoped_rds_config_source': ADS}}


def xdstp_rds(c):
    del hcm(c)['route_config']
    hcm(c)['rds'] = {'route_config_name':
                     'xdstp://cp.example/envoy.config.route.v3.RouteConfiguration/main',
                     'config_source': ADS}


def xdstp_eds(c):
    c['static_resources']['clusters'].append({
        'name': 'e', 'type': 'EDS', 'connect_timeout': '1s', 'eds_cluster_config': {
            'service_name': 'xdstp://cp.example/envoy.config.endpoint.v3.'
                            'ClusterLoadAssignment/e',
            'eds_config': ADS}})


def xdstp_sds(c):
    c['static_resources']['clusters'][1]['transport_socket'] = {
        'name': 'envoy.transport_sockets.tls', 'typed_config': {
            '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.'
                     'UpstreamTlsContext',
            'common_tls_context': {'tls_certificate_sds_secret_configs': [{
                'name': 'xdstp://cp.example/envoy.extensions.transport_sockets.tls.v3.'
                        'Secret/default',
                'sds_config': ADS}]}}}


def cds_locator(c):
    c['dynamic_resources']['cds_resources_locator'] = \
        'xdstp://cp.example/envoy.config.cluster.v3.Cluster/*'


def lds_locator(c):
    c['dynamic_resources']['lds_resources_locator'] = \
        'xdstp://cp.example/envoy.config.listener.v3.Listener/*'


def authorities(c):
    c['dynamic_resources']['cds_config']['authorities'] = [{'name': 'cp.example'}]


def config_sources(c):
    c['config_sources'] = [{'authorities': [{'name': 'cp.example'}], 'ads': {}}]


def default_config_source(c):
    c['default_config_source'] = dict(ADS)


def leds(c):
    c['static_resources']['clusters'][1]['load_assignment']['endpoints'] = [{
        'leds_cluster_locality_config': {
            'leds_config': ADS,
            'leds_collection_name': 'xdstp://cp.example/envoy.config.endpoint.v3.'
                                    'LbEndpoint/app/*'}}]


def hds(c):
    c['hds_config'] = {'api_type': 'GRPC', 'transport_api_version': 'V3',
                       'grpc_services': [{'envoy_grpc': {'cluster_name': 'xds'}}]}


def rtds(c):
    c['layered_runtime'] = {'layers': [{'name': 'rtds', 'rtds_layer': {
        'name': 'rt', 'rtds_config': ADS}}]}


def odcds(c):
    hcm(c)['http_filters'].insert(0, {'name': 'envoy.filters.http.on_demand', 'typed_config': {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.on_demand.v3.OnDemand',
        'odcds': {'source': ADS}}})


def aggregated_grpc(c):
    c['dynamic_resources']['ads_config']['api_type'] = 'AGGREGATED_GRPC'


def self_source(c):
    c['dynamic_resources']['cds_config'] = {'self': {}, 'resource_api_version': 'V3'}


def google_grpc(c):
    c['dynamic_resources']['ads_config']['grpc_services'] = [{'google_grpc': {
        'target_uri': 'cp.example:18000', 'stat_prefix': 'xds'}}]


def rate_limit_settings(c):
    c['dynamic_resources']['ads_config']['rate_limit_settings'] = {'max_tokens': 10}


def config_validators(c):
    c['dynamic_resources']['ads_config']['config_validators'] = [{
        'name': 'minimum', 'typed_config': {
            '@type': 'type.googleapis.com/envoy.extensions.config.validators.'
                     'minimum_clusters.v3.MinimumClustersValidator'}}]


def v2(c):
    c['dynamic_resources']['cds_config']['resource_api_version'] = 'V2'


def dynamic_parameters(c):
    c['node'] = {'id': 'n1', 'dynamic_parameters': {'x': {'params': {}}}}


def xds_delegate(c):
    c['xds_delegate_extension'] = {'name': 'd', 'typed_config': {
        '@type': 'type.googleapis.com/google.protobuf.Struct'}}


def xds_config_tracker(c):
    c['xds_config_tracker_extension'] = {'name': 't', 'typed_config': {
        '@type': 'type.googleapis.com/google.protobuf.Struct'}}


NOT_SUPPORTED = 'field is not supported'
XDSTP = 'xDS-TP names (xdstp://) are not supported'
ON_DEMAND = 'type.googleapis.com/envoy.extensions.filters.http.on_demand.v3.OnDemand'

# feature -> (what the config does, the error lines petrel gives, in order)
CASES = {
    'ECDS (HTTP filter)': (ecds, [
        HCM_PATH + '.http_filters[0].config_discovery: ' + NOT_SUPPORTED]),
    'ECDS (network filter)': (ecds_network, [
        LST + '.filter_chains[0].filters[0].config_discovery: ' + NOT_SUPPORTED]),
    'ECDS (listener filter)': (ecds_listener, [
        LST + '.listener_filters[0].config_discovery: ' + NOT_SUPPORTED]),
    'VHDS': (vhds, [HCM_PATH + '.route_config.vhds: ' + NOT_SUPPORTED]),
    'SRDS (scoped routes)': (srds, [HCM_PATH + '.scoped_routes: ' + NOT_SUPPORTED]),
    'xDS-TP name (RDS)': (xdstp_rds, [
        HCM_PATH + '.rds.route_config_name: "xdstp://cp.example/envoy.config.route.v3.'
        'RouteConfiguration/main": ' + XDSTP]),
    'xDS-TP name (EDS)': (xdstp_eds, [
        'static_resources.clusters[2].eds_cluster_config.service_name: "xdstp://cp.example/'
        'envoy.config.endpoint.v3.ClusterLoadAssignment/e": ' + XDSTP]),
    'xDS-TP name (SDS)': (xdstp_sds, [
        'static_resources.clusters[1].transport_socket.typed_config.common_tls_context.'
        'tls_certificate_sds_secret_configs[0].name: "xdstp://cp.example/envoy.extensions.'
        'transport_sockets.tls.v3.Secret/default": ' + XDSTP]),
    'xDS-TP collection (CDS)': (cds_locator, [
        'dynamic_resources.cds_resources_locator: ' + NOT_SUPPORTED]),
    'xDS-TP collection (LDS)': (lds_locator, [
        'dynamic_resources.lds_resources_locator: ' + NOT_SUPPORTED]),
    'authorities': (authorities, [
        'dynamic_resources.cds_config.authorities: ' + NOT_SUPPORTED]),
    'config_sources': (config_sources, ['config_sources: ' + NOT_SUPPORTED]),
    'default_config_source': (default_config_source, [
        'default_config_source: ' + NOT_SUPPORTED]),
    'LEDS': (leds, ['static_resources.clusters[1].load_assignment.endpoints[0].'
                    'leds_cluster_locality_config: ' + NOT_SUPPORTED]),
    'HDS': (hds, ['hds_config: ' + NOT_SUPPORTED]),
    'RTDS': (rtds, ['layered_runtime.layers[0].rtds_layer: ' + NOT_SUPPORTED]),
    'on-demand CDS': (odcds, [
        HCM_PATH + '.http_filters[0].typed_config.@type: "' + ON_DEMAND +
        '" is not a supported HTTP filter']),
    'AGGREGATED_GRPC': (aggregated_grpc, [
        'dynamic_resources.ads_config.api_type: "AGGREGATED_GRPC" is not supported']),
    'self config source': (self_source, [
        'dynamic_resources.cds_config: needs path_config_source, ads or api_config_source',
        'dynamic_resources.cds_config.self: ' + NOT_SUPPORTED]),
    'google_grpc': (google_grpc, [
        'dynamic_resources.ads_config.grpc_services[0].envoy_grpc: is required',
        'dynamic_resources.ads_config.grpc_services[0].google_grpc: ' + NOT_SUPPORTED]),
    'rate_limit_settings': (rate_limit_settings, [
        'dynamic_resources.ads_config.rate_limit_settings: ' + NOT_SUPPORTED]),
    'config_validators': (config_validators, [
        'dynamic_resources.ads_config.config_validators: ' + NOT_SUPPORTED]),
    'resource_api_version V2': (v2, [
        'dynamic_resources.cds_config.resource_api_version: "V2" is not supported']),
    'node.dynamic_parameters': (dynamic_parameters, [
        'node.dynamic_parameters: ' + NOT_SUPPORTED]),
    'xds_delegate_extension': (xds_delegate, ['xds_delegate_extension: ' + NOT_SUPPORTED]),
    'xds_config_tracker_extension': (xds_config_tracker, [
        'xds_config_tracker_extension: ' + NOT_SUPPORTED]),
}


def validate(cfg):
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
        json.dump(cfg, f)
    try:
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', f.name])
    finally:
        os.unlink(f.name)
    prefix = 'error: %s: ' % f.name
    lines = [l[len(prefix):] if l.startswith(prefix) else l for l in err.splitlines() if l]
    return rc, lines


class UnsupportedXdsTest(unittest.TestCase):
    def setUp(self):
        with open(DOC) as f:
            self.doc = f.read()

    def test_the_base_config_is_valid(self):
        # what each case adds is what makes it fail
        self.assertEqual(validate(base()), (0, []))

    def test_each_feature_gives_the_documented_error(self):
        for feature, (apply, want) in CASES.items():
            with self.subTest(feature=feature):
                cfg = base()
                apply(cfg)
                rc, lines = validate(cfg)
                self.assertEqual(rc, 1, lines)
                self.assertEqual(lines, want)
                for line in want:
                    self.assertIn('`%s`' % line, self.doc,
                                  'docs/xds-unsupported.md lacks the error of ' + feature)

    def test_every_documented_feature_is_checked(self):
        # each "### <feature>" section of the page has its case here
        sections = [l[4:].strip() for l in self.doc.splitlines() if l.startswith('### ')]
        self.assertEqual(sorted(sections), sorted(CASES))


@unittest.skipIf(CP_MISSING is not None, CP_MISSING or '')
class UnsupportedFromTheControlPlaneTest(unittest.TestCase):
    def test_vhds_from_the_control_plane_is_nacked(self):
        # A route configuration with vhds over RDS: NACKed with the same error at the
        # resource's path; the listener warms no longer (a rejected first update) and
        # answers 404 (no route).
        port, admin = h.free_ports(2)
        bad = {'name': 'main', 'vhds': {'config_source': ADS}, 'virtual_hosts': []}
        cp = ControlPlane({'routes': [bad]})
        self.addCleanup(cp.close)
        cfg = base(cp.port)
        cfg['admin'] = h.admin(admin)
        del cfg['dynamic_resources']['cds_config']
        cfg['static_resources']['listeners'][0]['address']['socket_address'][
            'port_value'] = port
        del hcm(cfg)['route_config']
        hcm(cfg)['rds'] = {'route_config_name': 'main', 'config_source': ADS}
        p = h.Petrel(cfg, wait_ready=False, wait_listeners=False)
        self.addCleanup(p.close)
        p.start()
        h.wait_until(lambda: cp.events('nack', RDS), 20, message='RDS not NACKed')
        message = cp.events('nack', RDS)[0]['error_detail']['message']
        self.assertIn('resources[0].vhds: ' + NOT_SUPPORTED, message)
        with open(DOC) as f:
            self.assertIn('`resources[0].vhds: %s`' % NOT_SUPPORTED, f.read())
        h.wait_until(lambda: h.port_listening(port), 10)
        self.assertEqual(h.http_request(port, 'GET', '/').status, 404)


if __name__ == '__main__':
    unittest.main()
