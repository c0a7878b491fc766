"""The runtime keys petrel reads besides connection limits: Istio's pilot-agent runtime layer
loads unchanged; envoy.reloadable_features.http_reject_path_with_fragment is honoured for
HTTP/1.1 and HTTP/2 (a '#' fragment refused by default, stripped with false); bad values and
unknown keys are errors naming the key.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_runtime.py -v
"""

import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from h2client import H2Client  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

ISTIO_LAYERS = [
    {'name': 'global config', 'static_layer': {
        'envoy.deprecated_features:envoy.config.listener.v3.Listener.'
        'hidden_envoy_deprecated_use_original_dst': 'true',
        'envoy.reloadable_features.http_reject_path_with_fragment': 'false',
        'envoy.reloadable_features.no_extension_lookup_by_name': 'false',
        'overload.global_downstream_max_connections': '2147483647',
        're2.max_program_size.error_level': '32768'}},
    {'name': 'admin', 'admin_layer': {}},
]


class Runtime(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.up = HttpUpstream(name='app')

    @classmethod
    def tearDownClass(cls):
        cls.up.close()

    def config(self, layers):
        self.port, admin = h.free_ports(2)
        hcm = h.http_connection_manager(
            'ingress', h.route_config([h.vhost('a', ['*'], [h.route_prefix('/', 'app')])]),
            codec_type='AUTO')
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster('app', [self.up.port])], admin_port=admin)
        if layers is not None:
            cfg['layered_runtime'] = {'layers': layers}
        return cfg

    def h2_status(self, path):
        with H2Client(self.port) as c:
            return c.response(c.request('GET', path)).status

    def test_istio_runtime_strips_fragments(self):
        with h.Petrel(self.config(ISTIO_LAYERS)):
            r = h.http_request(self.port, 'GET', '/a/b#frag?x')
            self.assertEqual(r.status, 200)
            self.assertEqual(self.up.last['path'], '/a/b')
            self.assertEqual(self.h2_status('/c#d'), 200)
            self.assertEqual(self.up.last['path'], '/c')

    def test_fragments_refused_by_default(self):
        with h.Petrel(self.config(None)):
            self.assertEqual(h.http_request(self.port, 'GET', '/a#frag').status, 400)
            self.assertEqual(self.h2_status('/c#d'), 400)
            self.assertEqual(h.http_request(self.port, 'GET', '/ok').status, 200)

    def validate(self, layers):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'c.json')
            with open(path, 'w') as f:
                json.dump(self.config(layers), f)
            return h.run_petrel(['--mode', 'validate', '-c', path])

    def test_bad_values_and_unknown_keys(self):
        rc, out, err = self.validate([{'name': 'x', 'static_layer': {
            'envoy.reloadable_features.http_reject_path_with_fragment': 'maybe',
            'envoy.reloadable_features.some_feature_petrel_lacks': True}}])
        self.assertEqual(rc, 1, err)
        self.assertIn('layered_runtime.layers[0]: runtime key envoy.reloadable_features.'
                      'http_reject_path_with_fragment: expected true or false', out + err)
        self.assertIn('layered_runtime.layers[0]: runtime key envoy.reloadable_features.'
                      'some_feature_petrel_lacks is not supported', out + err)


if __name__ == '__main__':
    unittest.main()
