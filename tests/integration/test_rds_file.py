"""RDS from a watched file: an HTTP connection manager names its route configuration
(`rds: {route_config_name, config_source}`) instead of holding it inline. A change applies to
the next request, on a keep-alive connection too; an invalid change (a bad regex, an unknown
cluster with validate_clusters) changes nothing and is counted; a name the file does not
have routes nothing (404 NR) until it comes; requests flow without a failure across updates.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_rds_file.py -v
"""

import json
import os
import shutil
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

ROUTE_TYPE = 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration'


def routes(name, cluster, prefix='/', **extra):
    rc = h.route_config([h.vhost('all', ['*'], [h.route_prefix(prefix, cluster,
                                                                 timeout='5s')])],
                        name=name, **extra)
    rc['@type'] = ROUTE_TYPE
    return rc


def response(version, *resources):
    return json.dumps({'version_info': version, 'resources': list(resources)})


class RdsCase(unittest.TestCase):

    def setUp(self):
        self.up_a = HttpUpstream(name='A')
        self.up_b = HttpUpstream(name='B')
        self.addCleanup(self.up_a.close)
        self.addCleanup(self.up_b.close)
        self.port, self.admin = h.free_ports(2)
        self.dir = tempfile.mkdtemp(prefix='petrel-rds-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, 'rds.json')

    def write(self, text, name='rds.json'):
        path = os.path.join(self.dir, name)
        with open(path + '.tmp', 'w') as f:
            f.write(text)
        os.replace(path + '.tmp', path)
        return path

    def config(self, route_name='main'):
        hcm = h.http_connection_manager('ingress', None, rds={
            'route_config_name': route_name,
            'config_source': {'path_config_source': {'path': self.path},
                              'resource_api_version': 'V3'}})
        del hcm['typed_config']['route_config']
        return h.bootstrap([h.listener('http', self.port, [hcm])],
                           [h.cluster('a', [self.up_a.port]), h.cluster('b', [self.up_b.port])],
                           admin_port=self.admin)

    def start(self, first, route_name='main'):
        self.write(first)
        self.p = h.Petrel(self.config(route_name))
        self.addCleanup(self.p.close)
        self.p.start()
        return self.p


class RdsTest(RdsCase):

    def test_change_seen_by_the_next_request_on_a_keepalive_connection(self):
        p = self.start(response('1', routes('main', 'a')))
        with h.HttpClientConn(self.port) as c:
            self.assertEqual(c.request('GET', '/x').get('x-upstream-name'), 'A')
            self.write(response('2', routes('main', 'b')))
            p.wait_stat('http.ingress.rds.main.config_reload', 2)
            # Same connection, next request: the new routes.
            self.assertEqual(c.request('GET', '/x').get('x-upstream-name'), 'B')
        self.assertEqual(p.stat('http.ingress.rds.main.update_success'), 2)
        dump = json.loads(p.admin_get('/config_dump')[2])
        rds = [c for c in dump['configs']
               if c['@type'] == 'type.googleapis.com/envoy.admin.v3.RoutesConfigDump'][0]
        self.assertEqual([(r['route_config']['name'], r['version_info'])
                          for r in rds['dynamic_route_configs']], [('main', '2')])

    def test_invalid_change_changes_nothing(self):
        p = self.start(response('1', routes('main', 'a')))
        bad = routes('main', 'b')
        bad['virtual_hosts'][0]['routes'][0]['match'] = {'safe_regex': {'regex': '(unclosed'}}
        self.write(response('2', bad))
        p.wait_stat('http.ingress.rds.main.update_rejected', 1)
        p.wait_log(r'resources\[0\]\.virtual_hosts\[0\]\.routes\[0\]\.match\.safe_regex')
        self.assertEqual(h.http_request(self.port, 'GET', '/x').get('x-upstream-name'), 'A')
        # validate_clusters in the resource: an unknown cluster rejects it.
        self.write(response('3', routes('main', 'nope', validate_clusters=True)))
        p.wait_stat('http.ingress.rds.main.update_rejected', 2)
        p.wait_log(r'unknown cluster "nope"')
        self.assertEqual(h.http_request(self.port, 'GET', '/x').get('x-upstream-name'), 'A')
        # Without it (the RDS default), an unknown cluster is a run-time 503 NC.
        self.write(response('4', routes('main', 'nope')))
        p.wait_stat('http.ingress.rds.main.config_reload', 2)
        self.assertEqual(h.http_request(self.port, 'GET', '/x').status, 503)

    def test_name_not_in_the_file_routes_nothing_until_it_comes(self):
        p = self.start(response('1', routes('other', 'a')))
        r = h.http_request(self.port, 'GET', '/x')
        self.assertEqual(r.status, 404)
        self.write(response('2', routes('other', 'a'), routes('main', 'b')))
        p.wait_stat('http.ingress.rds.main.config_reload', 1)
        self.assertEqual(h.http_request(self.port, 'GET', '/x').get('x-upstream-name'), 'B')

    def test_bad_file_at_start_fails_the_start(self):
        self.write('{"resources": 3}')
        boot = self.write(json.dumps(self.config()), 'boot.json')
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', boot])
        self.assertEqual(rc, 1)
        self.assertIn('rds main', err)
        both = self.config()
        hcm = both['static_resources']['listeners'][0]['filter_chains'][0]['filters'][0]
        hcm['typed_config']['route_config'] = h.route_config([])
        boot = self.write(json.dumps(both), 'boot2.json')
        rc, out, err = h.run_petrel(['--mode', 'validate', '-c', boot])
        self.assertEqual(rc, 1)
        self.assertIn('only one of route_config, rds may be given', err)


class RdsUnderLoadTest(RdsCase):

    def test_no_request_fails_across_updates(self):
        p = self.start(response('0', routes('main', 'a')))
        stop = threading.Event()
        failed, ok = [], [0]

        def load():
            while not stop.is_set():
                try:
                    with h.HttpClientConn(self.port) as c:
                        for _ in range(100):
                            r = c.request('GET', '/x')
                            if r.status == 200:
                                ok[0] += 1
                            else:
                                failed.append(r.status)
                            if stop.is_set():
                                break
                except (OSError, h.ConnectionClosed, h.IncompleteResponse) as e:
                    failed.append(repr(e))

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for v in range(1, 21):
                # Updates land while requests flow: wait for a few between each, whatever
                # the machine's speed.
                before = ok[0]
                h.wait_until(lambda: ok[0] >= before + 3 or failed, 20,
                             message='requests before update %d' % v)
                self.write(response(str(v), routes('main', 'a' if v % 2 == 0 else 'b')))
                p.wait_stat('http.ingress.rds.main.config_reload', v + 1)
        finally:
            stop.set()
            for t in threads:
                t.join(h.scaled(20))
        self.assertEqual(failed, [])
        self.assertGreaterEqual(ok[0], 60)


if __name__ == '__main__':
    unittest.main()
