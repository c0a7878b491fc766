"""Priorities and localities end to end (Envoy's priority levels, locality weighted load
balancing and zone aware routing): a cluster with priority 0 and priority 1 endpoints sends
everything to a healthy P=0; when P=0 hosts fail their active health checks, or an EDS update
says they are UNHEALTHY, traffic spills to P=1 in the proportion Envoy computes (health x the
overprovisioning factor 1.4), all of it when P=0 is down, and comes back when P=0 recovers.
Locality weights split traffic; zone aware routing keeps it in the proxy's zone; an assignment
older than endpoint_stale_after is dropped; /clusters shows locality, priority, weight and
Envoy's health flags (text and JSON); a bad assignment is refused with a precise error.

Proportions are counted over hundreds of requests under round robin, whose priority draw is
random: bounds are wide (many standard deviations).

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_lb_priority.py -v
"""

import collections
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

CLA_TYPE = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment'


def lb_endpoint(port, health=None, weight=None, hostname=None, metadata=None):
    e = {'endpoint': {'address': h.socket_address('127.0.0.1', port)}}
    if hostname:
        e['endpoint']['hostname'] = hostname
    if health:
        e['health_status'] = health
    if weight:
        e['load_balancing_weight'] = weight
    if metadata:
        e['metadata'] = metadata
    return e


def locality(priority, zone, endpoints, weight=None, region='r1'):
    d = {'priority': priority, 'locality': {'region': region, 'zone': zone, 'sub_zone': 's'},
         'lb_endpoints': endpoints}
    if weight:
        d['load_balancing_weight'] = weight
    return d


def hc():
    """An HTTP health check every 0.1 s: one failure or success decides."""
    return {'timeout': '1s', 'interval': '0.1s', 'no_traffic_interval': '0.1s',
            'unhealthy_threshold': 1, 'healthy_threshold': 1,
            'http_health_check': {'path': '/healthz'}}


def proxy(port, admin, clusters, **extra):
    hcm = h.http_connection_manager('ingress', h.route_config([
        h.vhost('all', ['*'], [h.route_prefix('/', 'c', timeout='5s')])]))
    return h.bootstrap([h.listener('http', port, [hcm])], clusters, admin_port=admin, **extra)


def spread(port, n):
    """How many of n requests each upstream answered (by x-upstream-name)."""
    counts = collections.Counter()
    with h.HttpClientConn(port) as conn:
        for _ in range(n):
            r = conn.request('GET', '/app')
            counts[r.get('x-upstream-name') if r.status == 200 else r.status] += 1
    return counts


def share(counts, prefix):
    return sum(v for k, v in counts.items() if isinstance(k, str) and k.startswith(prefix))


def clusters_text(p):
    return p.admin_get('/clusters')[2].decode()


def host_lines(p, port):
    """{'key': 'value'} of one host's /clusters text lines."""
    out = {}
    for line in clusters_text(p).splitlines():
        parts = line.split('::')
        if len(parts) == 4 and parts[1] == '127.0.0.1:%d' % port:
            out[parts[2]] = parts[3]
    return out


class Upstreams:
    """P=0 upstreams p0-0..p0-3 (zone a) and P=1 upstreams p1-0, p1-1 (zone b)."""

    def __init__(self, test):
        self.p0 = [HttpUpstream(name='p0-%d' % i) for i in range(4)]
        self.p1 = [HttpUpstream(name='p1-%d' % i) for i in range(2)]
        for u in self.p0 + self.p1:
            test.addCleanup(u.close)

    def endpoints(self, health=None):
        """LocalityLbEndpoints: P=0 in zone a, P=1 in zone b; health[i] for P=0 host i."""
        health = health or {}
        return [locality(0, 'a', [lb_endpoint(u.port, health.get(i))
                                  for i, u in enumerate(self.p0)]),
                locality(1, 'b', [lb_endpoint(u.port) for u in self.p1])]


class HealthCheckFailover(unittest.TestCase):

    def test_p0_failing_health_checks_spills_to_p1_and_back(self):
        ups = Upstreams(self)
        port, admin = h.free_ports(2)
        cluster = {'name': 'c', 'type': 'STATIC', 'connect_timeout': '1s',
                   'health_checks': [hc()],
                   'load_assignment': {'cluster_name': 'c', 'endpoints': ups.endpoints()}}
        with h.Petrel(proxy(port, admin, [cluster])) as p:
            p.wait_stat('cluster.c.membership_healthy', 6, timeout=15)
            counts = spread(port, 200)
            self.assertEqual(share(counts, 'p0-'), 200, counts)
            # Half of P=0 fails its checks: 50% x 1.4 = 70% stays on P=0, 30% spills.
            ups.p0[0].set_status(503)
            ups.p0[1].set_status(503)
            p.wait_stat('cluster.c.membership_healthy', 4, timeout=15)
            counts = spread(port, 1000)
            self.assertEqual(counts['p0-0'] + counts['p0-1'], 0, counts)
            self.assertTrue(600 <= share(counts, 'p0-') <= 800, counts)
            self.assertTrue(200 <= share(counts, 'p1-') <= 400, counts)
            # Three of four: 25% x 1.4 = 35% stays.
            ups.p0[2].set_status(503)
            p.wait_stat('cluster.c.membership_healthy', 3, timeout=15)
            counts = spread(port, 1000)
            self.assertTrue(250 <= share(counts, 'p0-') <= 450, counts)
            # All of P=0: everything goes to P=1 (which is fully healthy: no panic).
            ups.p0[3].set_status(503)
            p.wait_stat('cluster.c.membership_healthy', 2, timeout=15)
            counts = spread(port, 200)
            self.assertEqual(share(counts, 'p1-'), 200, counts)
            self.assertFalse(p.stat('cluster.c.lb_healthy_panic'))  # made on its first count
            # And back.
            for u in ups.p0:
                u.set_status(None)
            p.wait_stat('cluster.c.membership_healthy', 6, timeout=15)
            counts = spread(port, 200)
            self.assertEqual(share(counts, 'p0-'), 200, counts)
            self.assertEqual(host_lines(p, ups.p1[0].port)['priority'], '1')
            self.assertEqual(host_lines(p, ups.p0[0].port)['zone'], 'a')


class EdsHealthStatus(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='petrel-lbp-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, 'eds.json')

    def write(self, version, endpoints, **extra):
        res = {'@type': CLA_TYPE, 'cluster_name': 'c', 'endpoints': endpoints}
        res.update(extra)
        with open(self.path + '.tmp', 'w') as f:
            json.dump({'version_info': version, 'resources': [res]}, f)
        os.replace(self.path + '.tmp', self.path)

    def eds_cluster(self):
        return {'name': 'c', 'type': 'EDS', 'connect_timeout': '1s',
                'eds_cluster_config': {'eds_config': {
                    'path_config_source': {'path': self.path}, 'resource_api_version': 'V3'}}}

    def test_unhealthy_in_an_update_spills_to_p1_and_back(self):
        ups = Upstreams(self)
        port, admin = h.free_ports(2)
        self.write('1', ups.endpoints())
        with h.Petrel(proxy(port, admin, [self.eds_cluster()])) as p:
            counts = spread(port, 200)
            self.assertEqual(share(counts, 'p0-'), 200, counts)
            # The control plane says two of P=0 are UNHEALTHY: 70/30.
            self.write('2', ups.endpoints({0: 'UNHEALTHY', 1: 'UNHEALTHY'}))
            p.wait_stat('cluster.c.membership_healthy', 4)
            counts = spread(port, 1000)
            self.assertEqual(counts['p0-0'] + counts['p0-1'], 0, counts)
            self.assertTrue(600 <= share(counts, 'p0-') <= 800, counts)
            flags = host_lines(p, ups.p0[0].port)['health_flags']
            self.assertEqual(flags, '/failed_eds_health')
            status = json.loads(p.admin_get('/clusters?format=json')[2])
            hosts = {hs['address']['socket_address']['port_value']: hs
                     for hs in status['cluster_statuses'][0]['host_statuses']}
            self.assertEqual(hosts[ups.p0[0].port]['health_status']['eds_health_status'],
                             'UNHEALTHY')
            self.assertEqual(hosts[ups.p0[2].port]['health_status']['eds_health_status'],
                             'HEALTHY')
            # All of P=0 (TIMEOUT and DRAINING too): everything to P=1.
            self.write('3', ups.endpoints({0: 'UNHEALTHY', 1: 'TIMEOUT', 2: 'DRAINING',
                                           3: 'UNHEALTHY'}))
            p.wait_stat('cluster.c.membership_healthy', 2)
            self.assertEqual(p.stat('cluster.c.membership_excluded'), 1)
            counts = spread(port, 200)
            self.assertEqual(share(counts, 'p1-'), 200, counts)
            self.assertEqual(host_lines(p, ups.p0[2].port)['health_flags'],
                             '/eds_status_draining')
            # DEGRADED hosts take only what healthy ones of every priority cannot: P=0's one
            # healthy host 25% x 1.4 = 35%, the healthy P=1 the other 65%, degraded none.
            self.write('4', ups.endpoints({1: 'DEGRADED', 2: 'DEGRADED', 3: 'DEGRADED'}))
            p.wait_stat('cluster.c.membership_degraded', 3)
            counts = spread(port, 1000)
            self.assertTrue(250 <= counts['p0-0'] <= 450, counts)
            self.assertEqual(share(counts, 'p0-'), counts['p0-0'], counts)
            self.assertEqual(host_lines(p, ups.p0[1].port)['health_flags'],
                             '/degraded_eds_health')
            # Back to healthy.
            self.write('5', ups.endpoints())
            p.wait_stat('cluster.c.membership_healthy', 6)
            counts = spread(port, 200)
            self.assertEqual(share(counts, 'p0-'), 200, counts)

    def test_stale_assignment_is_dropped(self):
        up = HttpUpstream(name='u')
        self.addCleanup(up.close)
        port, admin = h.free_ports(2)
        self.write('1', [locality(0, 'a', [lb_endpoint(up.port)])],
                   policy={'endpoint_stale_after': '1s'})
        with h.Petrel(proxy(port, admin, [self.eds_cluster()])) as p:
            self.assertEqual(h.http_request(port, 'GET', '/app').status, 200)
            self.assertEqual(p.stat('cluster.c.assignment_timeout_received'), 1)
            p.wait_stat('cluster.c.assignment_stale', 1, timeout=10)
            self.assertEqual(h.http_request(port, 'GET', '/app').status, 503)
            self.assertEqual(p.stat('cluster.c.membership_total'), 0)
            # A new assignment brings the endpoints back.
            self.write('2', [locality(0, 'a', [lb_endpoint(up.port)])])
            p.wait_stat('cluster.c.membership_total', 1)
            self.assertEqual(h.http_request(port, 'GET', '/app').status, 200)


class Localities(unittest.TestCase):

    def test_locality_weights_split_traffic(self):
        a = [HttpUpstream(name='x-%d' % i) for i in range(2)]
        b = [HttpUpstream(name='y-%d' % i) for i in range(2)]
        for u in a + b:
            self.addCleanup(u.close)
        port, admin = h.free_ports(2)
        cluster = {'name': 'c', 'type': 'STATIC', 'connect_timeout': '1s',
                   'common_lb_config': {'locality_weighted_lb_config': {}},
                   'load_assignment': {'cluster_name': 'c', 'endpoints': [
                       locality(0, 'x', [lb_endpoint(u.port) for u in a], weight=1),
                       locality(0, 'y', [lb_endpoint(u.port) for u in b], weight=3)]}}
        with h.Petrel(proxy(port, admin, [cluster])) as p:
            # Localities by a weighted round robin: exactly 1 in 4 to x.
            counts = spread(port, 400)
            self.assertTrue(95 <= share(counts, 'x-') <= 105, counts)
            self.assertTrue(295 <= share(counts, 'y-') <= 305, counts)
            self.assertEqual(h.http_request(port, 'GET', '/app').status, 200)
            self.assertEqual(host_lines(p, b[0].port)['zone'], 'y')

    def test_zone_aware_routing_stays_in_the_zone(self):
        # This proxy is in zone a; the local cluster (the proxies like it) has 1 of 4 in a,
        # the upstream 3 of 6: a can take all of this proxy's traffic (LocalityDirect).
        a = [HttpUpstream(name='a-%d' % i) for i in range(3)]
        b = [HttpUpstream(name='b-%d' % i) for i in range(3)]
        for u in a + b:
            self.addCleanup(u.close)
        port, admin = h.free_ports(2)
        upstream = {'name': 'c', 'type': 'STATIC', 'connect_timeout': '1s',
                    'load_assignment': {'cluster_name': 'c', 'endpoints': [
                        locality(0, 'a', [lb_endpoint(u.port) for u in a]),
                        locality(0, 'b', [lb_endpoint(u.port) for u in b])]}}
        local = {'name': 'local', 'type': 'STATIC', 'connect_timeout': '1s',
                 'load_assignment': {'cluster_name': 'local', 'endpoints': [
                     locality(0, 'a', [lb_endpoint(1)]),
                     locality(0, 'b', [lb_endpoint(p) for p in (2, 3, 4)])]}}
        cfg = proxy(port, admin, [upstream, local],
                    node={'id': 'n1', 'cluster': 'local',
                          'locality': {'region': 'r1', 'zone': 'a', 'sub_zone': 's'}},
                    cluster_manager={'local_cluster_name': 'local'})
        with h.Petrel(cfg) as p:
            counts = spread(port, 300)
            self.assertEqual(share(counts, 'a-'), 300, counts)
            self.assertGreaterEqual(p.stat('cluster.c.lb_zone_routing_all_directly'), 300)


class ClustersOutput(unittest.TestCase):

    def test_clusters_shows_locality_priority_weight_and_metadata(self):
        up = HttpUpstream(name='u')
        self.addCleanup(up.close)
        port, admin = h.free_ports(2)
        md = {'filter_metadata': {'istio': {'network': 'n1'}}}
        cluster = {'name': 'c', 'type': 'STATIC', 'connect_timeout': '1s',
                   'load_assignment': {'cluster_name': 'c', 'endpoints': [
                       locality(0, 'z1', [lb_endpoint(up.port, weight=7, hostname='web-1',
                                                      metadata=md)], weight=2),
                       locality(1, 'z2', [lb_endpoint(1, health='DEGRADED')],
                                region='r2')]}}
        with h.Petrel(proxy(port, admin, [cluster])) as p:
            lines = host_lines(p, up.port)
            self.assertEqual(lines['region'], 'r1')
            self.assertEqual(lines['zone'], 'z1')
            self.assertEqual(lines['sub_zone'], 's')
            self.assertEqual(lines['priority'], '0')
            self.assertEqual(lines['weight'], '7')
            self.assertEqual(lines['hostname'], 'web-1')
            self.assertEqual(lines['health_flags'], 'healthy')
            self.assertEqual(lines['canary'], 'false')
            self.assertEqual(lines['cx_total'], '0')
            other = host_lines(p, 1)
            self.assertEqual(other['priority'], '1')
            self.assertEqual(other['region'], 'r2')
            self.assertEqual(other['health_flags'], '/degraded_eds_health')
            status = json.loads(p.admin_get('/clusters?format=json')[2])
            hosts = {hs['address']['socket_address']['port_value']: hs
                     for hs in status['cluster_statuses'][0]['host_statuses']}
            u = hosts[up.port]
            self.assertEqual(u['locality'], {'region': 'r1', 'zone': 'z1', 'sub_zone': 's'})
            self.assertEqual(u['priority'], 0)
            self.assertEqual(u['weight'], 7)
            self.assertEqual(u['hostname'], 'web-1')
            self.assertEqual(u['metadata'], md)
            self.assertEqual(hosts[1]['priority'], 1)
            self.assertEqual(hosts[1]['health_status']['eds_health_status'], 'DEGRADED')
            # The config dump's endpoints: one LocalityLbEndpoints per priority and locality.
            dump = json.loads(p.admin_get('/config_dump')[2])
            eps = [c for c in dump['configs'] if c['@type'].endswith('EndpointsConfigDump')]
            cla = eps[0]['static_endpoint_configs'][0]['endpoint_config']
            self.assertEqual(len(cla['endpoints']), 2)
            self.assertEqual(cla['endpoints'][0]['load_balancing_weight'], 2)
            self.assertEqual(cla['endpoints'][1]['priority'], 1)
            self.assertEqual(cla['endpoints'][0]['lb_endpoints'][0]['metadata'], md)

    def test_bad_assignment_is_refused_precisely(self):
        port, admin = h.free_ports(2)
        cluster = {'name': 'c', 'type': 'STATIC', 'connect_timeout': '1s',
                   'load_assignment': {'cluster_name': 'c',
                                       'policy': {'overprovisioning_factor': 0},
                                       'endpoints': [locality(0, 'a', [
                                           lb_endpoint(1, health='SICK')])]}}
        d = tempfile.mkdtemp(prefix='petrel-lbp-')
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, 'bad.json')
        with open(path, 'w') as f:
            json.dump(proxy(port, admin, [cluster]), f)
        rc, _, err = h.run_petrel(['--mode', 'validate', '-c', path])
        self.assertNotEqual(rc, 0)
        self.assertIn('static_resources.clusters[0].load_assignment.policy.'
                      'overprovisioning_factor: must be greater than 0', err)
        self.assertIn('static_resources.clusters[0].load_assignment.endpoints[0].'
                      'lb_endpoints[0].health_status: "SICK" is not a valid value', err)



class RetryPriority(unittest.TestCase):
    """retry_priority previous_priorities: a retry leaves out the priorities tried."""

    PREV_PRIO = ('type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.'
                 'PreviousPrioritiesConfig')
    PREV_HOSTS = ('type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.'
                  'PreviousHostsPredicate')

    def run_with(self, retry_priority):
        # P=0's two hosts answer 503 and no health check or outlier detection says so:
        # P=0 keeps all the load; only a retry can reach P=1.
        p0 = [HttpUpstream(name='p0-%d' % i, default_status=503) for i in range(2)]
        p1 = HttpUpstream(name='p1')
        for u in p0 + [p1]:
            self.addCleanup(u.close)
        port, admin = h.free_ports(2)
        retry = {'retry_on': '5xx', 'num_retries': 1,
                 'retry_back_off': {'base_interval': '0.001s'},
                 'retry_host_predicate': [{'name': 'envoy.retry_host_predicates.previous_hosts',
                                           'typed_config': {'@type': self.PREV_HOSTS}}]}
        if retry_priority:
            retry['retry_priority'] = {'name': 'envoy.retry_priorities.previous_priorities',
                                       'typed_config': {'@type': self.PREV_PRIO,
                                                        'update_frequency': 1}}
        cluster = {'name': 'c', 'type': 'STATIC', 'connect_timeout': '1s',
                   'load_assignment': {'cluster_name': 'c', 'endpoints': [
                       locality(0, 'a', [lb_endpoint(u.port) for u in p0]),
                       locality(1, 'b', [lb_endpoint(p1.port)])]}}
        hcm = h.http_connection_manager('ingress', h.route_config([h.vhost('all', ['*'], [
            h.route_prefix('/', 'c', timeout='5s', retry_policy=retry)])]))
        cfg = h.bootstrap([h.listener('http', port, [hcm])], [cluster], admin_port=admin)
        with h.Petrel(cfg):
            return spread(port, 20), sum(len(u.requests) for u in p0)

    def test_a_retry_goes_to_the_next_priority(self):
        counts, p0_hits = self.run_with(True)
        self.assertEqual(counts, {'p1': 20})
        self.assertEqual(p0_hits, 20)  # each request tried P=0 once, then P=1

    def test_without_it_the_retry_stays_in_priority_0(self):
        counts, p0_hits = self.run_with(False)
        self.assertEqual(counts, {503: 20})
        self.assertEqual(p0_hits, 40)  # both tries in P=0 (the other host of it)

if __name__ == '__main__':
    unittest.main()
