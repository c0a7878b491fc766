"""DNS clusters (STRICT_DNS, LOGICAL_DNS, cluster_type envoy.cluster.dns) against a small DNS
server written here: UDP on 127.0.0.1 at a random port, named to petrel through
typed_dns_resolver_config. Its answers come from a dict the tests change; a name can be made
to answer SERVFAIL or NXDOMAIN, to go unanswered, or to wait until the test lets it through.

Upstreams listen on 127.0.0.2, 127.0.0.3 and 127.0.0.4 at one port, so that the addresses a
name resolves to are the hosts (a DNS cluster's hosts take the endpoint's port).

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_dns.py -v
"""

import ipaddress
import json
import os
import socket
import struct
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

CARES_TYPE = ('type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.'
              'CaresDnsResolverConfig')
DNS_CLUSTER_TYPE = 'type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster'
NAME = 'backend.petrel.test'
QTYPE_A, QTYPE_AAAA = 1, 28


class FakeDns:
    """A DNS server for the tests: ``records[name]`` lists the addresses (v4 and v6 strings)
    a name has, ``ttl`` their TTL; ``modes[name]`` (or ``default_mode``) is 'answer',
    'servfail', 'nxdomain', 'drop' or 'hold' (queries wait until ``release()``). A name with
    no records answers NXDOMAIN. ``queries`` counts the queries seen per (name, qtype)."""

    def __init__(self):
        # TCP too, on the same port (use_tcp_for_dns_lookups): the TCP port first, then UDP
        # on its number.
        for _ in range(20):
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.tcp.bind(('127.0.0.1', 0))
            self.port = self.tcp.getsockname()[1]
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                self.sock.bind(('127.0.0.1', self.port))
                break
            except OSError:
                self.sock.close()
                self.tcp.close()
        self.tcp.listen(16)
        self.tcp_queries = 0
        self.records = {}
        self.ttl = 30
        self.modes = {}
        self.default_mode = 'answer'
        self.queries = {}
        self.held = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.closed = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.tcp_thread = threading.Thread(target=self._serve_tcp, daemon=True)
        self.tcp_thread.start()

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.sock.close()
        try:
            self.tcp.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.tcp.close()
        self.thread.join(5)
        self.tcp_thread.join(5)

    def _serve_tcp(self):
        while not self.closed:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True).start()

    def _tcp_conn(self, conn):
        # Each message is preceded by its length (two bytes), both ways.
        with conn:
            buf = b''
            while not self.closed:
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while len(buf) >= 2 and len(buf) >= 2 + struct.unpack('!H', buf[:2])[0]:
                    n = struct.unpack('!H', buf[:2])[0]
                    msg, buf = buf[2:2 + n], buf[2 + n:]
                    with self.lock:
                        self.tcp_queries += 1

                    def send(reply, conn=conn):
                        conn.sendall(struct.pack('!H', len(reply)) + reply)
                    try:
                        self._answer(msg, None, send)
                    except (ValueError, struct.error, OSError):
                        return

    def count(self, name=NAME):
        with self.lock:
            return sum(n for (q, _), n in self.queries.items() if q == name)

    def set(self, name, addresses, mode='answer'):
        with self.lock:
            self.records[name] = list(addresses)
            self.modes[name] = mode

    def set_mode(self, name, mode):
        with self.lock:
            self.modes[name] = mode

    def release(self):
        """Answer the held queries now (by the records and modes in force)."""
        with self.lock:
            held, self.held = self.held, []
            for name in list(self.modes):
                if self.modes[name] == 'hold':
                    self.modes[name] = 'answer'
        for data, addr in held:
            self._answer(data, addr)

    def _serve(self):
        while not self.closed:
            try:
                data, addr = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                self._answer(data, addr)
            except (ValueError, struct.error, OSError):
                continue

    @staticmethod
    def _question(data):
        i, labels = 12, []
        while data[i] != 0:
            n = data[i]
            labels.append(data[i + 1:i + 1 + n].decode('ascii').lower())
            i += 1 + n
        qtype, = struct.unpack('!H', data[i + 1:i + 3])
        return '.'.join(labels), qtype, data[12:i + 5]

    def _answer(self, data, addr, send=None):
        qid, flags = struct.unpack('!HH', data[:4])
        name, qtype, question = self._question(data)
        with self.lock:
            self.queries[(name, qtype)] = self.queries.get((name, qtype), 0) + 1
            mode = self.modes.get(name, self.default_mode)
            records = list(self.records.get(name, ()))
            ttl = self.ttl
            if mode == 'hold' and send is None:
                self.held.append((data, addr))
                self.cond.notify_all()
                return
        if mode == 'drop':
            return
        rcode, answers = 0, []
        if mode == 'servfail':
            rcode = 2
        elif mode == 'nxdomain' or name not in self.records:
            rcode = 3
        else:
            for a in records:
                ip = ipaddress.ip_address(a)
                if (qtype == QTYPE_A and ip.version == 4) or (qtype == QTYPE_AAAA and
                                                               ip.version == 6):
                    answers.append(struct.pack('!HHHIH', 0xC00C, qtype, 1, ttl,
                                               len(ip.packed)) + ip.packed)
        out_flags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
        head = struct.pack('!6H', qid, out_flags, 1, len(answers), 0, 0)
        reply = head + question + b''.join(answers)
        if send is not None:
            send(reply)
            return
        try:
            self.sock.sendto(reply, addr)
        except OSError:
            pass

    def wait_held(self, n=1, timeout=10):
        with self.lock:
            ok = self.cond.wait_for(lambda: len(self.held) >= n, h.scaled(timeout))
        if not ok:
            raise AssertionError('no query was held within %ss' % timeout)


def resolver_config(dns, **options):
    tc = {'@type': CARES_TYPE,
          'resolvers': [h.socket_address('127.0.0.1', dns.port)],
          'dns_resolver_options': {'no_default_search_domain': True},
          'query_timeout_seconds': 1, 'query_tries': 1}
    tc.update(options)
    return {'name': 'envoy.network.dns_resolver.cares', 'typed_config': tc}


def dns_cluster(name, dns, hostnames, port, type='STRICT_DNS', **extra):
    c = {'name': name, 'type': type, 'connect_timeout': '1s',
         'dns_refresh_rate': '0.2s',
         'typed_dns_resolver_config': resolver_config(dns),
         'load_assignment': {'cluster_name': name, 'endpoints': [{'lb_endpoints': [
             {'endpoint': {'address': h.socket_address(n, port)}} for n in hostnames]}]}}
    c.update(extra)
    return c


def hosts_of(p, cluster):
    """{address: {stat: value}} from /clusters?format=json."""
    status, _, body = p.admin_get('/clusters?format=json')
    assert status == 200, body
    for c in json.loads(body)['cluster_statuses']:
        if c['name'] != cluster:
            continue
        out = {}
        for hs in c.get('host_statuses', []):
            sa = hs['address']['socket_address']
            key = '%s:%d' % (sa['address'], sa['port_value'])
            stats = {s['name']: int(s.get('value', 0)) for s in hs['stats']}
            stats['hostname'] = hs.get('hostname')
            stats['health'] = hs['health_status']
            out[key] = stats
        return out
    return None


class DnsBase(unittest.TestCase):

    def setUp(self):
        self.dns = FakeDns()
        self.addCleanup(self.dns.close)
        self.up_port = h.free_port()
        self.ups = {}
        for ip, name in (('127.0.0.2', 'A'), ('127.0.0.3', 'B'), ('127.0.0.4', 'C')):
            u = HttpUpstream(name=name, host=ip, port=self.up_port)
            self.addCleanup(u.close)
            self.ups[ip] = u
        self.port, self.admin = h.free_ports(2)

    def config(self, clusters):
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], [h.route_prefix('/', clusters[0]['name'], timeout='5s')])]))
        return h.bootstrap([h.listener('http', self.port, [hcm])], clusters,
                           admin_port=self.admin)

    def names_seen(self, n):
        """Which upstreams n requests (on fresh connections) reach ('status <code>' for one
        that got no upstream's answer)."""
        seen = set()
        for _ in range(n):
            r = h.http_request(self.port, 'GET', '/echo')
            seen.add(r.get('x-upstream-name') if r.status == 200 else 'status %d' % r.status)
        return seen

    def wait_names(self, want, timeout=10):
        h.wait_until(lambda: self.names_seen(8) == want, timeout=timeout,
                     message='requests never reached exactly %s' % sorted(want))

    def addr(self, ip):
        return '%s:%d' % (ip, self.up_port)


class StrictDnsTest(DnsBase):

    def test_requests_reach_resolved_hosts_and_follow_changes(self):
        self.dns.set(NAME, ['127.0.0.2', '127.0.0.3'])
        cfg = self.config([dns_cluster('web', self.dns, [NAME], self.up_port)])
        with h.Petrel(cfg) as p:
            self.wait_names({'A', 'B'})
            self.assertEqual(p.stat('cluster.web.membership_total'), 2)
            hosts = hosts_of(p, 'web')
            self.assertEqual(set(hosts), {self.addr('127.0.0.2'), self.addr('127.0.0.3')})
            self.assertEqual(hosts[self.addr('127.0.0.2')]['hostname'], NAME)
            # A refresh that adds one address and drops another moves the traffic.
            changes = p.stat('cluster.web.membership_change')
            self.dns.set(NAME, ['127.0.0.3', '127.0.0.4'])
            p.wait_stat('cluster.web.membership_change', lambda v: v is not None and
                        v > changes)
            self.wait_names({'B', 'C'})
            self.assertEqual(set(hosts_of(p, 'web')),
                             {self.addr('127.0.0.3'), self.addr('127.0.0.4')})
            self.assertGreaterEqual(p.stat('cluster.web.update_success'), 2)
            self.assertEqual(p.stat('cluster.web.update_failure'), 0)

    def test_same_addresses_keep_hosts_and_pooled_connections(self):
        self.dns.set(NAME, ['127.0.0.2', '127.0.0.3'])
        cfg = self.config([dns_cluster('web', self.dns, [NAME], self.up_port)])
        with h.Petrel(cfg) as p:
            self.wait_names({'A', 'B'})
            before = hosts_of(p, 'web')
            conns = {ip: u.connections for ip, u in self.ups.items()}
            rebuilds = p.stat('cluster.web.update_no_rebuild')
            changes = p.stat('cluster.web.membership_change')
            # Several refreshes that return the same addresses rebuild nothing.
            p.wait_stat('cluster.web.update_no_rebuild', lambda v: v >= rebuilds + 3)
            self.assertEqual(p.stat('cluster.web.membership_change'), changes)
            self.names_seen(10)
            after = hosts_of(p, 'web')
            for a in before:
                # The same host objects: their counters go on from where they were.
                self.assertGreaterEqual(after[a]['rq_total'], before[a]['rq_total'])
                self.assertGreater(after[a]['rq_total'] + 0, 0)
            self.assertEqual(sum(after[a]['rq_total'] for a in after),
                             sum(before[a]['rq_total'] for a in before) + 10)
            # The upstream connections in the pools were reused, none opened again.
            self.assertEqual({ip: u.connections for ip, u in self.ups.items()}, conns)

    def test_host_that_stays_keeps_its_health_and_connections(self):
        # Health checked: a host that stays across a change keeps its verdict (no new first
        # check), and its pooled connection.
        self.dns.set(NAME, ['127.0.0.2'])
        hc = [{'timeout': '1s', 'interval': '0.2s', 'unhealthy_threshold': 1,
               'healthy_threshold': 1, 'http_health_check': {'path': '/hc'}}]
        cfg = self.config([dns_cluster('web', self.dns, [NAME], self.up_port,
                                       health_checks=hc)])
        with h.Petrel(cfg) as p:
            self.wait_names({'A'})
            a = self.addr('127.0.0.2')
            rq_before = hosts_of(p, 'web')[a]['rq_total']
            conns = self.ups['127.0.0.2'].connections
            self.dns.set(NAME, ['127.0.0.2', '127.0.0.3'])
            self.wait_names({'A', 'B'})
            hosts = hosts_of(p, 'web')
            self.assertEqual(hosts[a]['health']['eds_health_status'], 'HEALTHY')
            self.assertGreater(hosts[a]['rq_total'], rq_before)
            # Health checks run on their own connection; requests reuse theirs: at most the
            # ones that were open.
            self.assertEqual(self.ups['127.0.0.2'].connections, conns)

    def test_two_names_make_one_cluster(self):
        self.dns.set('a.petrel.test', ['127.0.0.2'])
        self.dns.set('b.petrel.test', ['127.0.0.3', '127.0.0.4'])
        cfg = self.config([dns_cluster('web', self.dns, ['a.petrel.test', 'b.petrel.test'],
                                       self.up_port)])
        with h.Petrel(cfg) as p:
            self.wait_names({'A', 'B', 'C'})
            hosts = hosts_of(p, 'web')
            self.assertEqual(hosts[self.addr('127.0.0.2')]['hostname'], 'a.petrel.test')
            self.assertEqual(hosts[self.addr('127.0.0.4')]['hostname'], 'b.petrel.test')

    def test_many_names_changing_together(self):
        # 300 names (one listed twice: one host), every address changing between two
        # refreshes: the cluster ends with exactly the new addresses, each with its name.
        names = ['n%d.petrel.test' % i for i in range(300)]

        def addrs(flip):
            return {n: '10.%d.%d.%d' % (1 + flip, i >> 8, i & 255) for i, n in enumerate(names)}

        for n, a in addrs(0).items():
            self.dns.set(n, [a])
        cfg = self.config([dns_cluster('web', self.dns, names + names[:1], 80)])
        with h.Petrel(cfg) as p:
            def now():
                return {k: v['hostname'] for k, v in (hosts_of(p, 'web') or {}).items()}
            want0 = {'%s:80' % a: n for n, a in addrs(0).items()}
            h.wait_until(lambda: now() == want0, 30, message='first addresses')
            changes = p.stat('cluster.web.membership_change')
            for n, a in addrs(1).items():
                self.dns.set(n, [a])
            want1 = {'%s:80' % a: n for n, a in addrs(1).items()}
            h.wait_until(lambda: now() == want1, 30, message='the new addresses')
            self.assertEqual(p.stat('cluster.web.membership_total'), 300)
            self.assertGreater(p.stat('cluster.web.membership_change'), changes)

    def test_cluster_type_envoy_cluster_dns(self):
        self.dns.set(NAME, ['127.0.0.2', '127.0.0.4'])
        c = {'name': 'web', 'connect_timeout': '1s',
             'cluster_type': {'name': 'envoy.cluster.dns', 'typed_config': {
                 '@type': DNS_CLUSTER_TYPE, 'dns_refresh_rate': '0.2s',
                 'typed_dns_resolver_config': resolver_config(self.dns),
                 'dns_lookup_family': 'V4_ONLY'}},
             'load_assignment': {'cluster_name': 'web', 'endpoints': [{'lb_endpoints': [
                 {'endpoint': {'address': h.socket_address(NAME, self.up_port)}}]}]}}
        with h.Petrel(self.config([c])) as p:
            self.wait_names({'A', 'C'})
            # V4_ONLY asks for A records only.
            self.assertEqual(self.dns.queries.get((NAME, QTYPE_AAAA), 0), 0)
            self.assertEqual(p.stat('cluster.web.membership_total'), 2)

    def test_auto_falls_back_to_v4_and_v4_only_asks_only_a(self):
        self.dns.set(NAME, ['127.0.0.2'])
        cfg = self.config([dns_cluster('web', self.dns, [NAME], self.up_port)])
        with h.Petrel(cfg):
            self.wait_names({'A'})
            # AUTO: AAAA first, then A when that found nothing.
            self.assertGreater(self.dns.queries.get((NAME, QTYPE_AAAA), 0), 0)
            self.assertGreater(self.dns.queries.get((NAME, QTYPE_A), 0), 0)


    def test_bootstrap_resolver_is_the_default(self):
        # A cluster without a resolver of its own uses the bootstrap's.
        self.dns.set(NAME, ['127.0.0.3'])
        c = dns_cluster('web', self.dns, [NAME], self.up_port)
        del c['typed_dns_resolver_config']
        cfg = self.config([c])
        cfg['typed_dns_resolver_config'] = resolver_config(self.dns)
        with h.Petrel(cfg):
            self.wait_names({'B'})
            self.assertGreater(self.dns.count(), 0)

    def test_respect_dns_ttl(self):
        # The TTL (1 s) rather than dns_refresh_rate (an hour) decides when to ask again.
        self.dns.ttl = 1
        self.dns.set(NAME, ['127.0.0.2'])
        cfg = self.config([dns_cluster('web', self.dns, [NAME], self.up_port,
                                       dns_refresh_rate='3600s', respect_dns_ttl=True,
                                       dns_lookup_family='V4_ONLY')])
        with h.Petrel(cfg) as p:
            self.wait_names({'A'})
            p.wait_stat('cluster.web.update_attempt', lambda v: v >= 3)
            self.dns.set(NAME, ['127.0.0.3'])
            self.wait_names({'B'})

    def test_families(self):
        # ALL takes both families; V6_ONLY the AAAA records; V4_PREFERRED asks for AAAA only
        # when A found nothing.
        self.dns.set(NAME, ['127.0.0.2', '::1'])
        self.dns.set('v6.petrel.test', ['::1'])
        clusters = [dns_cluster('all', self.dns, [NAME], self.up_port,
                                dns_lookup_family='ALL'),
                    dns_cluster('v6', self.dns, [NAME], self.up_port,
                                dns_lookup_family='V6_ONLY'),
                    dns_cluster('v4p', self.dns, [NAME], self.up_port,
                                dns_lookup_family='V4_PREFERRED'),
                    dns_cluster('v4p6', self.dns, ['v6.petrel.test'], self.up_port,
                                dns_lookup_family='V4_PREFERRED')]
        with h.Petrel(self.config(clusters)) as p:
            p.wait_stat('cluster.all.membership_total', 2)
            p.wait_stat('cluster.v6.membership_total', 1)
            p.wait_stat('cluster.v4p.membership_total', 1)
            p.wait_stat('cluster.v4p6.membership_total', 1)
            self.assertEqual(set(hosts_of(p, 'v6')), {'::1:%d' % self.up_port})
            self.assertEqual(set(hosts_of(p, 'v4p')), {self.addr('127.0.0.2')})
            self.assertEqual(set(hosts_of(p, 'v4p6')), {'::1:%d' % self.up_port})
            self.assertEqual(set(hosts_of(p, 'all')),
                             {self.addr('127.0.0.2'), '::1:%d' % self.up_port})

    def test_use_tcp_for_dns_lookups(self):
        self.dns.set(NAME, ['127.0.0.4'])
        c = dns_cluster('web', self.dns, [NAME], self.up_port, dns_lookup_family='V4_ONLY')
        c['typed_dns_resolver_config']['typed_config']['dns_resolver_options'][
            'use_tcp_for_dns_lookups'] = True
        with h.Petrel(self.config([c])):
            self.wait_names({'C'})
            self.assertGreater(self.dns.tcp_queries, 0)
            self.assertEqual(self.dns.tcp_queries, self.dns.count())

    def test_ip_literal_endpoint(self):
        # An IP literal in a DNS cluster resolves to itself (no query reaches the server).
        cfg = self.config([dns_cluster('web', self.dns, ['127.0.0.3'], self.up_port)])
        with h.Petrel(cfg) as p:
            self.wait_names({'B'})
            self.assertEqual(self.dns.count('127.0.0.3'), 0)
            n = p.stat('cluster.web.update_no_rebuild')
            p.wait_stat('cluster.web.update_no_rebuild', lambda v: v >= n + 2)

    def test_dns_cluster_from_cds(self):
        # A DNS cluster that comes with a CDS update resolves like a static one; a change of
        # its configuration keeps its hosts until the new one resolves, then applies it.
        self.dns.set(NAME, ['127.0.0.2'])
        self.dns.set('other.petrel.test', ['127.0.0.4'])
        cds_path = os.path.join(self.tmp(), 'cds.json')

        def cds(version, hostname):
            c = dns_cluster('web', self.dns, [hostname], self.up_port)
            c['@type'] = 'type.googleapis.com/envoy.config.cluster.v3.Cluster'
            with open(cds_path + '.tmp', 'w') as f:
                json.dump({'version_info': version, 'resources': [c]}, f)
            os.replace(cds_path + '.tmp', cds_path)

        cds('1', NAME)
        hcm = h.http_connection_manager('ingress', h.route_config(
            [h.vhost('all', ['*'], [h.route_prefix('/', 'web', timeout='5s')])],
            validate_clusters=False))
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])], [], admin_port=self.admin,
                          dynamic_resources={'cds_config': {
                              'path_config_source': {'path': cds_path},
                              'resource_api_version': 'V3'}})
        with h.Petrel(cfg) as p:
            self.wait_names({'A'})
            cds('2', 'other.petrel.test')
            self.wait_names({'C'})
            self.assertEqual(p.stat('cluster_manager.cluster_modified'), 1)
            self.assertEqual(set(hosts_of(p, 'web')), {self.addr('127.0.0.4')})

    def tmp(self):
        import shutil
        import tempfile
        d = tempfile.mkdtemp(prefix='petrel-dns-')
        self.addCleanup(shutil.rmtree, d, True)
        return d


class DnsFaultTest(DnsBase):

    def test_servfail_and_silence_keep_last_good_hosts(self):
        self.dns.set(NAME, ['127.0.0.2', '127.0.0.3'])
        cfg = self.config([dns_cluster('web', self.dns, [NAME], self.up_port,
                                       dns_failure_refresh_rate={'base_interval': '0.1s',
                                                                 'max_interval': '0.3s'})])
        with h.Petrel(cfg) as p:
            self.wait_names({'A', 'B'})
            self.dns.set_mode(NAME, 'servfail')
            p.wait_stat('cluster.web.update_failure', lambda v: v is not None and v >= 2)
            self.assertEqual(self.names_seen(8), {'A', 'B'})
            self.assertEqual(p.stat('cluster.web.membership_total'), 2)
            # The server stops answering: lookups time out, the hosts stay.
            failures = p.stat('cluster.web.update_failure')
            self.dns.set_mode(NAME, 'drop')
            p.wait_stat('cluster.web.update_failure', lambda v: v >= failures + 1)
            self.assertEqual(self.names_seen(8), {'A', 'B'})
            # Back: the new answer applies.
            self.dns.set(NAME, ['127.0.0.4'])
            self.wait_names({'C'})
            self.assertEqual(p.stat('cluster.web.membership_total'), 1)

    def test_server_down_keeps_hosts(self):
        self.dns.set(NAME, ['127.0.0.2'])
        cfg = self.config([dns_cluster('web', self.dns, [NAME], self.up_port)])
        with h.Petrel(cfg) as p:
            self.wait_names({'A'})
            failures = p.stat('cluster.web.update_failure')
            self.dns.close()  # nothing listens on its port any more
            p.wait_stat('cluster.web.update_failure', lambda v: v >= failures + 2)
            self.assertEqual(self.names_seen(4), {'A'})

    def test_nxdomain_empties_a_strict_dns_cluster(self):
        # Envoy's c-ares resolver takes NXDOMAIN as a completed lookup with no address: the
        # STRICT_DNS cluster has no hosts then (503, no healthy upstream).
        self.dns.set(NAME, ['127.0.0.2'])
        cfg = self.config([dns_cluster('web', self.dns, [NAME], self.up_port)])
        with h.Petrel(cfg) as p:
            self.wait_names({'A'})
            self.dns.set_mode(NAME, 'nxdomain')
            p.wait_stat('cluster.web.membership_total', 0)
            r = h.http_request(self.port, 'GET', '/echo')
            self.assertEqual(r.status, 503)
            self.assertEqual(p.stat('cluster.web.update_failure'), 0)
            self.dns.set(NAME, ['127.0.0.3'])
            self.wait_names({'B'})

    def test_first_lookup_gates_readiness(self):
        # The first lookup happens before the cluster is warm: /ready answers 503 until it
        # ends, then requests reach the resolved host.
        self.dns.set(NAME, ['127.0.0.2'], mode='hold')
        cfg = self.config([dns_cluster(
            'web', self.dns, [NAME], self.up_port, dns_lookup_family='V4_ONLY',
            typed_dns_resolver_config=resolver_config(self.dns, query_timeout_seconds=60))])
        with h.Petrel(cfg, wait_ready=False, wait_listeners=False) as p:
            self.dns.wait_held(1)
            status, _, _ = p.admin_get('/ready')
            self.assertEqual(status, 503)
            self.dns.release()
            h.wait_until(lambda: p.admin_get('/ready')[0] == 200, timeout=10)
            h.wait_listening(self.port)
            self.wait_names({'A'})

    def test_wait_for_warm_on_init_false(self):
        # Not waited for: ready while the first lookup is still held, 503 until it ends.
        self.dns.set(NAME, ['127.0.0.2'], mode='hold')
        cfg = self.config([dns_cluster(
            'web', self.dns, [NAME], self.up_port, dns_lookup_family='V4_ONLY',
            wait_for_warm_on_init=False,
            typed_dns_resolver_config=resolver_config(self.dns, query_timeout_seconds=60))])
        with h.Petrel(cfg):
            self.dns.wait_held(1)
            r = h.http_request(self.port, 'GET', '/echo')
            self.assertEqual(r.status, 503)
            self.dns.release()
            self.wait_names({'A'})

    def test_unresolvable_at_start_answers_503(self):
        # No address yet (the name does not exist): the cluster is initialized with no host,
        # and a request gets 503 with no healthy upstream.
        cfg = self.config([dns_cluster('web', self.dns, ['missing.petrel.test'],
                                       self.up_port)])
        with h.Petrel(cfg) as p:
            r = h.http_request(self.port, 'GET', '/echo')
            self.assertEqual(r.status, 503)
            self.assertIn(b'no healthy upstream', r.body)
            self.assertEqual(p.stat('cluster.web.membership_total'), 0)


class LogicalDnsTest(DnsBase):

    def test_first_address_and_changes(self):
        self.dns.set(NAME, ['127.0.0.2', '127.0.0.3'])
        cfg = self.config([dns_cluster('web', self.dns, [NAME], self.up_port,
                                       type='LOGICAL_DNS')])
        with h.Petrel(cfg) as p:
            self.wait_names({'A'})
            self.assertEqual(p.stat('cluster.web.membership_total'), 1)
            # An unchanged answer rebuilds nothing.
            n = p.stat('cluster.web.update_no_rebuild')
            p.wait_stat('cluster.web.update_no_rebuild', lambda v: v >= n + 2)
            # A new first address takes the new connections.
            self.dns.set(NAME, ['127.0.0.4', '127.0.0.2'])
            self.wait_names({'C'})
            # NXDOMAIN keeps the address and counts a failure.
            failures = p.stat('cluster.web.update_failure')
            self.dns.set_mode(NAME, 'nxdomain')
            p.wait_stat('cluster.web.update_failure', lambda v: v >= failures + 2)
            self.assertEqual(self.names_seen(4), {'C'})

    def test_existing_connection_kept_across_address_change(self):
        self.dns.set(NAME, ['127.0.0.2'])
        cfg = self.config([dns_cluster('web', self.dns, [NAME], self.up_port,
                                       type='LOGICAL_DNS')])
        with h.Petrel(cfg) as p:
            self.wait_names({'A'})
            with h.HttpClientConn(self.port) as conn:
                r = conn.request('GET', '/echo')
                self.assertEqual(r.get('x-upstream-name'), 'A')
                changes = p.stat('cluster.web.membership_change')
                self.dns.set(NAME, ['127.0.0.3'])
                p.wait_stat('cluster.web.membership_change', lambda v: v > changes)
                self.wait_names({'B'})
                # The downstream connection still works; new requests go to the new address.
                r = conn.request('GET', '/echo')
                self.assertEqual(r.status, 200)
                self.assertEqual(r.get('x-upstream-name'), 'B')


class DnsConfigErrorTest(unittest.TestCase):

    def validate(self, clusters):
        cfg = h.bootstrap([], clusters)
        d = os.path.join(os.environ.get('TMPDIR', '/tmp'), 'petrel-dns-%d' % os.getpid())
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, 'config.json')
        with open(path, 'w') as f:
            json.dump(cfg, f)
        rc, _, err = h.run_petrel(['--mode', 'validate', '-c', path])
        os.unlink(path)
        os.rmdir(d)
        return rc, err

    def cluster(self, **extra):
        c = {'name': 'web', 'type': 'STRICT_DNS', 'connect_timeout': '1s',
             'load_assignment': {'cluster_name': 'web', 'endpoints': [{'lb_endpoints': [
                 {'endpoint': {'address': h.socket_address(NAME, 80)}}]}]}}
        c.update(extra)
        return c

    def assertRejected(self, clusters, *messages):
        rc, err = self.validate(clusters)
        self.assertEqual(rc, 1, err)
        for m in messages:
            self.assertIn(m, err)

    def test_valid_dns_config_loads(self):
        rc, err = self.validate([self.cluster(
            dns_refresh_rate='3s', respect_dns_ttl=True, dns_lookup_family='V4_PREFERRED',
            dns_failure_refresh_rate={'base_interval': '1s', 'max_interval': '10s'},
            typed_dns_resolver_config={'name': 'envoy.network.dns_resolver.cares',
                                       'typed_config': {
                                           '@type': CARES_TYPE,
                                           'resolvers': [h.socket_address('10.0.0.53', 53)],
                                           'use_resolvers_as_fallback': True,
                                           'dns_resolver_options': {
                                               'use_tcp_for_dns_lookups': True,
                                               'no_default_search_domain': True}}})])
        self.assertEqual(rc, 0, err)

    def test_hostname_in_static_cluster(self):
        self.assertRejected([self.cluster(type='STATIC')],
                            'static_resources.clusters[0].load_assignment.endpoints[0].'
                            'lb_endpoints[0].endpoint.address.socket_address.address: '
                            '"%s" is not an IP address' % NAME)

    def test_logical_dns_with_two_endpoints(self):
        c = self.cluster(type='LOGICAL_DNS')
        c['load_assignment']['endpoints'][0]['lb_endpoints'].append(
            {'endpoint': {'address': h.socket_address('other.petrel.test', 80)}})
        self.assertRejected([c], 'static_resources.clusters[0].load_assignment: LOGICAL_DNS '
                                 'clusters must have a single locality_lb_endpoint and a '
                                 'single lb_endpoint')

    def test_bad_resolver_address(self):
        self.assertRejected(
            [self.cluster(typed_dns_resolver_config={
                'name': 'envoy.network.dns_resolver.cares',
                'typed_config': {'@type': CARES_TYPE,
                                 'resolvers': [h.socket_address('dns.example', 53)]}})],
            'static_resources.clusters[0].typed_dns_resolver_config.typed_config.resolvers[0].'
            'socket_address.address: "dns.example" is not an IP address')

    def test_other_resolver_type(self):
        self.assertRejected(
            [self.cluster(typed_dns_resolver_config={
                'name': 'envoy.network.dns_resolver.getaddrinfo',
                'typed_config': {'@type': 'type.googleapis.com/envoy.extensions.network.'
                                          'dns_resolver.getaddrinfo.v3.'
                                          'GetAddrInfoDnsResolverConfig'}})],
            'static_resources.clusters[0].typed_dns_resolver_config.typed_config.@type: '
            '"type.googleapis.com/envoy.extensions.network.dns_resolver.getaddrinfo.v3.'
            'GetAddrInfoDnsResolverConfig" is not supported')

    def test_bad_refresh_rates(self):
        self.assertRejected(
            [self.cluster(dns_failure_refresh_rate={'base_interval': '2s',
                                                    'max_interval': '1s'})],
            'static_resources.clusters[0].dns_failure_refresh_rate.max_interval: must be '
            'greater than or equal to the base_interval')
        self.assertRejected([self.cluster(dns_refresh_rate='0s')],
                            'static_resources.clusters[0].dns_refresh_rate: must be at least '
                            '1ms')
        self.assertRejected([self.cluster(dns_failure_refresh_rate={})],
                            'static_resources.clusters[0].dns_failure_refresh_rate.'
                            'base_interval: is required')

    def test_cluster_type_and_type_together(self):
        self.assertRejected(
            [self.cluster(cluster_type={'name': 'envoy.cluster.dns', 'typed_config': {
                '@type': DNS_CLUSTER_TYPE}})],
            'static_resources.clusters[0]: only one of type, cluster_type may be given')

    def test_unknown_cluster_type(self):
        c = self.cluster(cluster_type={'name': 'envoy.clusters.redis', 'typed_config': {
            '@type': 'type.googleapis.com/envoy.extensions.clusters.redis.v3.'
                     'RedisClusterConfig'}})
        del c['type']
        self.assertRejected([c], 'static_resources.clusters[0].cluster_type.typed_config.'
                                 '@type: "type.googleapis.com/envoy.extensions.clusters.'
                                 'redis.v3.RedisClusterConfig" is not supported')


if __name__ == '__main__':
    unittest.main()
