"""docs/envoy-compat.md is what tools/envoy_compat.py prints from the code, so the page cannot
go stale: a change that supports or rejects a field fails here until the page is regenerated
(`tools/envoy_compat.py > docs/envoy-compat.md`). Also checks that the table says what the
binary does for a few fields of each status.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_envoy_compat_doc.py -v
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, 'tools', 'envoy_compat.py')
PAGE = os.path.join(ROOT, 'docs', 'envoy-compat.md')


def generated():
    return subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True,
                          check=True).stdout


def rows(text):
    """{(message, field): (status, note)} of the fields table."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(' | ')]
        if len(cells) == 4 and cells[0].startswith('| `envoy.') and cells[1].startswith('`'):
            out[(cells[0][3:-1], cells[1][1:-1])] = (cells[2], cells[3].rstrip(' |'))
    return out


class EnvoyCompatDocTest(unittest.TestCase):

    def test_committed_page_is_the_generated_one(self):
        with open(PAGE, encoding='utf-8') as f:
            committed = f.read()
        self.assertEqual(committed, generated(),
                         'docs/envoy-compat.md is stale: run tools/envoy_compat.py > '
                         'docs/envoy-compat.md')

    def test_statuses_match_the_binary(self):
        """A field the table says is rejected is refused by petrel with "field is not
        supported"; one it says is supported is accepted (checked on Listener fields)."""
        table = rows(generated())
        listener = 'envoy.config.listener.v3.Listener'
        self.assertEqual(table[(listener, 'bypass_overload_manager')][0], 'partial')
        self.assertEqual(table[(listener, 'metadata')][0], 'supported')
        self.assertEqual(table[(listener, 'freebind')][0], 'rejected')
        port = h.free_port()

        def validate(extra):
            lst = h.listener('tcp', port, [h.tcp_proxy('tcp', 'a')], **extra)
            cfg = h.bootstrap([lst], [h.cluster('a', [1])])
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, 'c.json')
                with open(path, 'w') as f:
                    json.dump(cfg, f)
                return h.run_petrel(['--mode', 'validate', '-c', path])

        rc, _, err = validate({'freebind': True})
        self.assertEqual(rc, 1)
        self.assertIn('static_resources.listeners[0].freebind: field is not supported', err)
        for field, value in [('metadata', {'filter_metadata': {'a': {'b': 1}}}),
                             ('bypass_overload_manager', True),
                             ('ignore_global_conn_limit', True)]:
            self.assertIn(table[(listener, field)][0], ('supported', 'partial'))
            rc, _, err = validate({field: value})
            self.assertEqual(rc, 0, err)


    def test_every_status_of_the_main_messages_matches_the_binary(self):
        """Each field of the messages a bootstrap is made of, set to an object petrel cannot
        take: a field the table says is rejected fails with "field is not supported", any
        other fails otherwise (or not at all)."""
        table = rows(generated())

        def base():
            hcm = h.http_connection_manager('x', h.route_config([h.vhost(
                'a', ['*'], [h.route_prefix('/', 'c')])]))
            return h.bootstrap([h.listener('l', 10000, [hcm])], [h.cluster('c', [1])])

        def hcm(c):
            return c['static_resources']['listeners'][0]['filter_chains'][0]['filters'][0][
                'typed_config']
        where = {
            'envoy.config.bootstrap.v3.Bootstrap': lambda c: c,
            'envoy.config.listener.v3.Listener':
                lambda c: c['static_resources']['listeners'][0],
            'envoy.config.cluster.v3.Cluster': lambda c: c['static_resources']['clusters'][0],
            'envoy.extensions.filters.network.http_connection_manager.v3.'
            'HttpConnectionManager': hcm,
            'envoy.config.route.v3.RouteConfiguration': lambda c: hcm(c)['route_config'],
            'envoy.config.route.v3.VirtualHost':
                lambda c: hcm(c)['route_config']['virtual_hosts'][0],
            'envoy.config.route.v3.RouteAction':
                lambda c: hcm(c)['route_config']['virtual_hosts'][0]['routes'][0]['route'],
        }
        structural = {'static_resources', 'filter_chains', 'name', 'address', 'route_config',
                      'virtual_hosts', 'routes', 'cluster', 'http_filters', 'stat_prefix',
                      'domains', 'admin'}
        wrong = []
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'c.json')
            for (msg, field), (status, _note) in sorted(table.items()):
                if msg not in where or field in structural:
                    continue
                cfg = base()
                where[msg](cfg)[field] = {'__not_a_value': 1}
                with open(path, 'w') as f:
                    json.dump(cfg, f)
                _, _, err = h.run_petrel(['--mode', 'validate', '-c', path])
                refused = re.search(r'(^|[.: ])%s: field is not supported' % field, err,
                                    re.M) is not None
                if (status == 'rejected') != refused:
                    wrong.append('%s.%s: table %s, petrel: %s' % (
                        msg, field, status, err.strip().splitlines()[0] if err.strip()
                        else 'accepted'))
        self.assertEqual(wrong, [])


if __name__ == '__main__':
    unittest.main()
