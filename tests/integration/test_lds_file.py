"""LDS from a watched file: listeners added (bound on every worker), changed in place (the
socket is kept: no accept gap, no refused connection; new connections get the new filter
chains while the old ones drain) and removed (no longer accepting; their connections get
"connection: close" and are closed when the drain time ends). Invalid updates and a port in
use change nothing and are counted.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_lds_file.py -v
"""

import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

LISTENER_TYPE = 'type.googleapis.com/envoy.config.listener.v3.Listener'


def http_listener(name, port, cluster, **hcm_extra):
    hcm = h.http_connection_manager(name, h.route_config([h.vhost('all', ['*'], [
        h.route_prefix('/', cluster, timeout='5s')])]), **hcm_extra)
    l = h.listener(name, port, [hcm])
    l['@type'] = LISTENER_TYPE
    return l


def response(version, *listeners):
    return json.dumps({'version_info': version, 'resources': list(listeners)})


class LdsCase(unittest.TestCase):

    def setUp(self):
        self.up_a = HttpUpstream(name='A')
        self.up_b = HttpUpstream(name='B')
        self.addCleanup(self.up_a.close)
        self.addCleanup(self.up_b.close)
        self.port1, self.port2, self.admin = h.free_ports(3)
        self.dir = tempfile.mkdtemp(prefix='petrel-lds-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, 'lds.json')

    def write(self, text, name='lds.json'):
        path = os.path.join(self.dir, name)
        with open(path + '.tmp', 'w') as f:
            f.write(text)
        os.replace(path + '.tmp', path)
        return path

    def config(self):
        return h.bootstrap([], [h.cluster('a', [self.up_a.port]), h.cluster('b', [self.up_b.port])],
                           admin_port=self.admin,
                           dynamic_resources={'lds_config': {'path_config_source': {
                               'path': self.path}, 'resource_api_version': 'V3'}})

    def start(self, first, concurrency=2):
        self.write(first)
        self.p = h.Petrel(self.config(), concurrency=concurrency,
                          extra_args=['--drain-time-s', '2'])
        self.addCleanup(self.p.close)
        self.p.start()
        return self.p

    def wait_version(self, v):
        h.wait_until(lambda: 'listener_manager.lds.version_text: "%s"' % v in
                     self.p.admin_get('/stats')[2].decode(), 10,
                     message='lds version %s applied' % v)


class LdsTest(LdsCase):

    def test_add_change_remove(self):
        p = self.start(response('1', http_listener('l1', self.port1, 'a')))
        h.wait_listening(self.port1)
        self.assertEqual(h.http_request(self.port1, 'GET', '/').get('x-upstream-name'), 'A')
        self.assertFalse(h.port_listening(self.port2))
        # Add l2.
        self.write(response('2', http_listener('l1', self.port1, 'a'),
                            http_listener('l2', self.port2, 'b')))
        self.wait_version('2')
        h.wait_listening(self.port2)
        self.assertEqual(h.http_request(self.port2, 'GET', '/').get('x-upstream-name'), 'B')
        self.assertEqual(p.stat('listener_manager.listener_added'), 1)
        # Change l1 in place, with a keep-alive connection open on it.
        with h.HttpClientConn(self.port1) as old:
            self.assertEqual(old.request('GET', '/').get('x-upstream-name'), 'A')
            self.write(response('3', http_listener('l1', self.port1, 'b'),
                                http_listener('l2', self.port2, 'b')))
            self.wait_version('3')
            # New connections get the new chain...
            self.assertEqual(h.http_request(self.port1, 'GET', '/').get('x-upstream-name'), 'B')
            # ...the old one is answered by its own chain, told to close, and closes.
            r = old.request('GET', '/')
            self.assertEqual(r.get('x-upstream-name'), 'A')
            self.assertTrue(r.will_close)
            self.assertTrue(old.wait_closed(h.scaled(5)))
        self.assertEqual(p.stat('listener_manager.listener_modified'), 1)
        # Remove l2: it stops accepting; its idle connection closes with the drain time.
        idle = h.HttpClientConn(self.port2)
        self.addCleanup(idle.close)
        self.assertEqual(idle.request('GET', '/').status, 200)
        self.write(response('4', http_listener('l1', self.port1, 'b')))
        self.wait_version('4')
        h.wait_until(lambda: not h.port_listening(self.port2), 10)
        self.assertTrue(idle.wait_closed(h.scaled(10)))
        self.assertEqual(p.stat('listener_manager.listener_removed'), 1)
        status, _, body = p.admin_get('/listeners')
        self.assertEqual(body.decode().strip(), 'l1::127.0.0.1:%d' % self.port1)
        dump = json.loads(p.admin_get('/config_dump')[2])
        lds = [c for c in dump['configs'] if c['@type'].endswith('ListenersConfigDump')][0]
        self.assertEqual([(d['name'], d['active_state']['version_info'])
                          for d in lds['dynamic_listeners']], [('l1', '3')])

    def test_bind_to_port_false_listeners(self):
        # Istio's per-destination listeners: never bound, shown, and bound once an update
        # makes them ordinary listeners (a new socket; the name and address stay).
        virtual = http_listener('v', self.port2, 'b', )
        virtual['bind_to_port'] = False
        virtual['traffic_direction'] = 'OUTBOUND'
        p = self.start(response('1', http_listener('l1', self.port1, 'a'), virtual))
        h.wait_listening(self.port1)
        self.assertFalse(h.port_listening(self.port2))
        status, _, body = p.admin_get('/listeners')
        self.assertIn('v::127.0.0.1:%d' % self.port2, body.decode())
        dump = json.loads(p.admin_get('/config_dump')[2])
        lds = [c for c in dump['configs'] if c['@type'].endswith('ListenersConfigDump')][0]
        shown = {d['name']: d['active_state']['listener'] for d in lds['dynamic_listeners']}
        self.assertEqual(shown['v'].get('traffic_direction'), 'OUTBOUND')
        self.assertIs(shown['v'].get('bind_to_port'), False)
        del virtual['bind_to_port']
        self.write(response('2', http_listener('l1', self.port1, 'a'), virtual))
        self.wait_version('2')
        h.wait_listening(self.port2)
        self.assertEqual(h.http_request(self.port2, 'GET', '/').get('x-upstream-name'), 'B')
        # And unbound again.
        virtual['bind_to_port'] = False
        self.write(response('3', http_listener('l1', self.port1, 'a'), virtual))
        self.wait_version('3')
        h.wait_until(lambda: not h.port_listening(self.port2), 10)
        self.assertEqual(h.http_request(self.port1, 'GET', '/').get('x-upstream-name'), 'A')

    def test_in_place_updates_refuse_no_connection(self):
        p = self.start(response('0', http_listener('l1', self.port1, 'a')))
        h.wait_listening(self.port1)
        stop = threading.Event()
        errors, ok = [], [0]

        def connect_loop():
            while not stop.is_set():
                try:
                    r = h.http_request(self.port1, 'GET', '/')
                    if r.status == 200:
                        ok[0] += 1
                    else:
                        errors.append(r.status)
                except (OSError, h.ConnectionClosed, h.IncompleteResponse) as e:
                    errors.append(repr(e))

        threads = [threading.Thread(target=connect_loop) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for v in range(1, 16):
                # Each update lands while the clients are connecting: wait for a few
                # requests before and after it rather than trusting the machine's speed.
                before = ok[0]
                h.wait_until(lambda: ok[0] >= before + 3 or errors, 20,
                             message='requests before update %d' % v)
                self.write(response(str(v), http_listener('l1', self.port1,
                                                          'a' if v % 2 else 'b')))
                self.wait_version(str(v))
        finally:
            stop.set()
            for t in threads:
                t.join(h.scaled(20))
        self.assertEqual(errors, [])
        self.assertGreaterEqual(ok[0], 45)

    def test_invalid_updates_change_nothing(self):
        p = self.start(response('1', http_listener('l1', self.port1, 'a')))
        h.wait_listening(self.port1)
        bad = http_listener('l2', self.port2, 'a')
        bad['per_connection_buffer_limit_bytes'] = 'lots'
        self.write(response('2', http_listener('l1', self.port1, 'b'), bad))
        p.wait_stat('listener_manager.lds.update_rejected', 1)
        p.wait_log(r'resources\[1\]\.per_connection_buffer_limit_bytes')
        self.assertFalse(h.port_listening(self.port2))
        self.assertEqual(h.http_request(self.port1, 'GET', '/').get('x-upstream-name'), 'A')
        # A port another process holds: the whole update is refused.
        holder = socket.socket()
        holder.bind(('127.0.0.1', self.port2))
        holder.listen(1)
        self.addCleanup(holder.close)
        self.write(response('3', http_listener('l1', self.port1, 'b'),
                            http_listener('l2', self.port2, 'a')))
        p.wait_stat('listener_manager.lds.update_rejected', 2)
        self.assertEqual(h.http_request(self.port1, 'GET', '/').get('x-upstream-name'), 'A')
        holder.close()
        # The same update once the port is free is applied.
        self.write(response('4', http_listener('l1', self.port1, 'b'),
                            http_listener('l2', self.port2, 'a')))
        self.wait_version('4')
        self.assertEqual(h.http_request(self.port1, 'GET', '/').get('x-upstream-name'), 'B')


if __name__ == '__main__':
    unittest.main()
