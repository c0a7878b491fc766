"""Cross-region failover through an east-west gateway, end to end in network namespaces.

Two regions, each a network namespace with its own addresses, joined by one veth link (the
"WAN"). Region A reaches only region B's east-west gateway address over it, never B's pods:

    region A (ns pt-ra-*)                         region B (ns pt-rb-*)
    client -> sidecar A 127.0.0.1:8080            gateway 10.92.2.100:15443
              cluster svc-b (mTLS, SNI             tls_inspector, sni_cluster, tcp_proxy:
              outbound_.8080_._.svc-b...)          TLS passes through untouched
                P0: pod a1 10.92.1.11:15006  -->   pod b1 10.92.2.11:15006 (sidecar B)
                    pod a2 10.92.1.12:15006          -> backend b1
                P1: gateway 10.92.2.100:15443      pod c1 10.92.2.21:15006 (wrong identity)
    pods' sidecars (one petrel) -> a1, a2            -> backend c1

Every hop between workloads is mTLS with SPIFFE identities, as Istio lays it out: sidecar A
presents spiffe://cluster.local/ns/default/sa/frontend and accepts only
spiffe://cluster.local/ns/default/sa/backend (match_typed_subject_alt_names), whichever
priority it picks; the pods' sidecars require a client certificate of the mesh. The gateway
holds no key: it reads the SNI, picks the cluster of that name and relays the bytes, so the
handshake is between sidecar A and pod b1's sidecar. Sidecar A's svc-b cluster is made as
Istio makes it: transport_socket_matches picks mTLS for endpoints whose metadata says
tlsMode: istio (all of them here), and the gateway's endpoint names its network
(filter_metadata.istio.network), which /clusters shows.

Sidecar A health checks every host (through the gateway too), ejects on errors (outlier
detection) and retries. Under a steady stream of requests the test takes region A's pods away
and brings them back, counting which backend answered each request: deleted (SIGTERM, their
sidecars drain) not one request fails; crashed (SIGKILL) only a response already on its way
to the client when its pod died may be cut (a proxy cannot take back what it sent), every
other request succeeds. Region B answers while region A is gone, region A again once back. A pod in region B with the wrong identity fails sidecar A's handshake (counted in
ssl.fail_verify_san; its backend sees nothing), and with the gateway gone as well requests end
at once with a 503.

Everything the test creates (namespaces, hence their links and addresses; processes) is
removed by cleanups that run even when a step fails. Without root or `ip netns` the test is
skipped, saying why.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_cross_region.py -v
"""

import collections
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import certs  # noqa: E402
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

CLONE_NEWNET = 0x40000000
WAN_A, WAN_B = '172.31.92.1', '172.31.92.2'     # the link between the regions (/30)
POD_A1, POD_A2 = '10.92.1.11', '10.92.1.12'     # region A's pods of svc-b
POD_B1, POD_C1 = '10.92.2.11', '10.92.2.21'     # region B's pods of svc-b and svc-c
GATEWAY_B = '10.92.2.100'                       # region B's east-west gateway
INBOUND, EAST_WEST, SIDECAR = 15006, 15443, 8080
ADMIN_SIDECAR, ADMIN_PODS, ADMIN_GATEWAY, ADMIN_PODS_B = 15000, 15001, 15000, 15001
SVC_B = 'svc-b.default.svc.cluster.local'
SVC_C = 'svc-c.default.svc.cluster.local'
SNI_B = 'outbound_.8080_._.' + SVC_B              # Istio's SNI for port 8080 of svc-b
SNI_C = 'outbound_.8080_._.' + SVC_C
ISTIO_NETWORK = 'network-b'

_libc = ctypes.CDLL(None, use_errno=True)


def _sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


def _why_no_netns():
    """Why this machine cannot run the test, or None."""
    if os.geteuid() != 0:
        return 'needs root (network namespaces)'
    if shutil.which('ip') is None:
        return 'ip is not installed (apt-get install iproute2)'
    name = 'pt-probe-%s' % uuid.uuid4().hex[:8]
    r = _sh('ip', 'netns', 'add', name, check=False)
    if r.returncode != 0:
        return 'ip netns is unavailable: ' + (r.stderr.strip() or 'exit %d' % r.returncode)
    _sh('ip', 'netns', 'del', name, check=False)
    return None


class NetNs:
    """Runs the calling thread (and what it starts: threads, processes) in a namespace."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.prev = os.open('/proc/thread-self/ns/net', os.O_RDONLY)
        fd = os.open('/run/netns/' + self.name, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, 'setns %s: %s' % (self.name, os.strerror(err)))
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc):
        try:
            if _libc.setns(self.prev, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), 'setns back')
        finally:
            os.close(self.prev)


# --- configs ---------------------------------------------------------------------------------

def _pki():
    return certs.standard_pki()


def mesh_client_tls(sni):
    """Sidecar A's UpstreamTlsContext: its own identity, the mesh CA, the service's identity
    required of whichever pod answers, Istio's SNI for the gateway to route by."""
    pki = _pki()
    return certs.upstream_tls(cert=pki['frontend'], ca=pki['ca'],
                              san=[certs.san_uri(exact=certs.spiffe('default', 'backend'))],
                              sni=sni)


def pod_listener(name, address, cert, app_cluster):
    """A pod's inbound: mTLS terminated (a mesh client certificate required), then HTTP to the
    application beside it."""
    pki = _pki()
    tls = certs.downstream_tls(cert=cert, ca=pki['ca'], require_client=True,
                               san=[certs.san_uri(prefix='spiffe://cluster.local/')])
    # The application learns its caller's identity (x-forwarded-client-cert), as Istio sets.
    hcm = h.http_connection_manager('inbound_' + name, h.route_config([h.vhost(
        'inbound', ['*'], [h.route_prefix('/', app_cluster, timeout='5s')])]),
        forward_client_cert_details='SANITIZE_SET',
        set_current_client_cert_details={'uri': True})
    return {'name': 'inbound_' + name, 'address': h.socket_address(address, INBOUND),
            'filter_chains': [{'transport_socket': tls, 'filters': [hcm]}]}


def pods_config(admin_port, pods):
    """One petrel standing for the sidecars of several pods: pods is [(name, address, cert,
    app port)]."""
    listeners, clusters = [], []
    for name, address, cert, app_port in pods:
        listeners.append(pod_listener(name, address, cert, 'app_' + name))
        clusters.append(h.cluster('app_' + name, [('127.0.0.1', app_port)]))
    return h.bootstrap(listeners, clusters, admin_port=admin_port)


def gateway_config():
    """Region B's east-west gateway: SNI-routed TLS passthrough (examples/east-west.yaml)."""
    chain = {'filter_chain_match': {'transport_protocol': 'tls',
                                    'server_names': ['*.svc.cluster.local']},
             'filters': [certs.sni_cluster_filter(),
                         h.tcp_proxy('east_west', 'blackhole', max_connect_attempts=2)]}
    gw = {'name': 'east_west', 'address': h.socket_address(GATEWAY_B, EAST_WEST),
          'listener_filters': [certs.tls_inspector()], 'listener_filters_timeout': '5s',
          'filter_chains': [chain]}
    clusters = [h.cluster(SNI_B, [(POD_B1, INBOUND)]),
                h.cluster(SNI_C, [(POD_C1, INBOUND)]),
                {'name': 'blackhole', 'type': 'STATIC', 'connect_timeout': '1s'}]
    return h.bootstrap([gw], clusters, admin_port=ADMIN_GATEWAY)


def endpoint(address, port, metadata=None):
    e = {'endpoint': {'address': h.socket_address(address, port)}}
    if metadata:
        e['metadata'] = metadata
    return e


RAW_BUFFER = {'name': 'envoy.transport_sockets.raw_buffer', 'typed_config': {
    '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer'}}


def mesh_endpoint(address, port, network=None):
    """An endpoint as Istio's EDS lists a workload with a sidecar (tlsMode istio), or another
    network's east-west gateway standing for that network's workloads (its network named)."""
    md = {'envoy.transport_socket_match': {'tlsMode': 'istio'}}
    if network is not None:
        md['istio'] = {'network': network}
    return endpoint(address, port, {'filter_metadata': md})


def sidecar_config():
    """Region A's client sidecar: svc-b with region A's pods at priority 0 and region B's
    gateway at priority 1, its transport chosen per endpoint as Istio's outbound clusters
    choose it (transport_socket_matches: mTLS for tlsMode istio, else plain text); svc-c only
    through the gateway, with a plain transport_socket."""
    svc_b = {
        'name': 'svc-b', 'type': 'STATIC', 'connect_timeout': '1s', 'lb_policy': 'ROUND_ROBIN',
        'transport_socket_matches': [
            {'name': 'tlsMode-istio', 'match': {'tlsMode': 'istio'},
             'transport_socket': mesh_client_tls(SNI_B)},
            {'name': 'tlsMode-disabled', 'match': {}, 'transport_socket': RAW_BUFFER}],
        'load_assignment': {'cluster_name': 'svc-b', 'endpoints': [
            {'priority': 0, 'locality': {'region': 'region-a', 'zone': 'a1'},
             'lb_endpoints': [mesh_endpoint(POD_A1, INBOUND), mesh_endpoint(POD_A2, INBOUND)]},
            {'priority': 1, 'locality': {'region': 'region-b'},
             'lb_endpoints': [mesh_endpoint(GATEWAY_B, EAST_WEST, ISTIO_NETWORK)]}]},
        # A pod answers its health check through its sidecar; the gateway's through region
        # B's pod, which is what a failover would reach.
        'health_checks': [{'timeout': '1s', 'interval': '0.2s', 'no_traffic_interval': '0.2s',
                           'unhealthy_threshold': 1, 'healthy_threshold': 1,
                           'http_health_check': {'path': '/healthz'}}],
        'outlier_detection': {'consecutive_5xx': 1, 'interval': '1s',
                              'base_ejection_time': '0.5s', 'max_ejection_time': '1s',
                              'max_ejection_percent': 100},
    }
    svc_c = {
        'name': 'svc-c', 'type': 'STATIC', 'connect_timeout': '1s',
        'transport_socket': mesh_client_tls(SNI_C),
        'load_assignment': {'cluster_name': 'svc-c', 'endpoints': [
            {'lb_endpoints': [mesh_endpoint(GATEWAY_B, EAST_WEST, ISTIO_NETWORK)]}]},
    }
    retry = {'retry_on': 'connect-failure,reset,5xx', 'num_retries': 10,
             'per_try_timeout': '2s',
             'retry_back_off': {'base_interval': '0.05s', 'max_interval': '0.2s'},
             'retry_host_predicate': [{
                 'name': 'envoy.retry_host_predicates.previous_hosts',
                 'typed_config': {'@type': 'type.googleapis.com/envoy.extensions.retry.host.'
                                           'previous_hosts.v3.PreviousHostsPredicate'}}],
             'host_selection_retry_max_attempts': 3,
             # A retry after a failure in region A goes to region B at once, before health
             # checks or outlier detection have said anything.
             'retry_priority': {
                 'name': 'envoy.retry_priorities.previous_priorities',
                 'typed_config': {'@type': 'type.googleapis.com/envoy.extensions.retry.'
                                           'priority.previous_priorities.v3.'
                                           'PreviousPrioritiesConfig',
                                  'update_frequency': 1}}}
    routes = [
        {'match': {'prefix': '/c/'}, 'route': {'cluster': 'svc-c', 'timeout': '5s'}},
        {'match': {'prefix': '/'}, 'route': {'cluster': 'svc-b', 'timeout': '10s',
                                             'retry_policy': retry}},
    ]
    hcm = h.http_connection_manager('sidecar', h.route_config([h.vhost('all', ['*'], routes)]))
    ln = h.listener('outbound_svc', SIDECAR, [hcm])
    return h.bootstrap([ln], [svc_b, svc_c], admin_port=ADMIN_SIDECAR)


# --- the test --------------------------------------------------------------------------------

class Load:
    """A bounded stream of requests to sidecar A from a thread of its own (in region A's
    namespace, as the thread that starts it): each outcome recorded as (status, backend)."""

    def __init__(self, limit=5000):
        self.limit = limit
        self.results = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        conn = None
        for i in range(self.limit):
            if self.stop.is_set():
                break
            try:
                if conn is None:
                    conn = h.HttpClientConn(SIDECAR, timeout=20)
                r = conn.request('GET', '/load/%d' % i)
                self.results.append((r.status, r.get('x-upstream-name')))
                if r.will_close:
                    conn.close()
                    conn = None
            except Exception as e:  # counted as a failure
                self.results.append((None, '%s: %s' % (type(e).__name__, e)))
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.005)
        if conn is not None:
            conn.close()

    def count(self):
        return len(self.results)

    def wait_for(self, pred, message, timeout=30):
        """Waits until pred(results) holds, the load still running."""
        try:
            return h.wait_until(lambda: pred(self.results) or None, timeout=timeout,
                                message=message)
        except AssertionError as e:
            tail = collections.Counter(self.results[-100:])
            raise AssertionError('%s; the last 100 outcomes: %s' % (e, dict(tail))) from None

    def finish(self):
        self.stop.set()
        self.thread.join(h.scaled(60))
        return list(self.results)


class CrossRegionTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        why = _why_no_netns()
        if why is not None:
            raise unittest.SkipTest(why)
        tag = uuid.uuid4().hex[:8]
        cls.ra, cls.rb = 'pt-ra-' + tag, 'pt-rb-' + tag
        # Cleanups run in reverse, even when a later step fails; deleting a namespace takes
        # its links and addresses with it.
        for ns in (cls.ra, cls.rb):
            _sh('ip', 'netns', 'add', ns)
            cls.addClassCleanup(_sh, 'ip', 'netns', 'del', ns, check=False)
        ra, rb = ['ip', '-n', cls.ra], ['ip', '-n', cls.rb]
        _sh(*ra, 'link', 'add', 'wan0', 'type', 'veth', 'peer', 'name', 'wan0', 'netns', cls.rb)
        for ip, wan, addrs in ((ra, WAN_A, (POD_A1, POD_A2)),
                               (rb, WAN_B, (POD_B1, POD_C1, GATEWAY_B))):
            _sh(*ip, 'link', 'set', 'lo', 'up')
            _sh(*ip, 'addr', 'add', wan + '/30', 'dev', 'wan0')
            _sh(*ip, 'link', 'set', 'wan0', 'up')
            for a in addrs:
                _sh(*ip, 'addr', 'add', a + '/32', 'dev', 'lo')
        # Region A reaches region B's gateway and nothing else of region B; region B answers.
        _sh(*ra, 'route', 'add', GATEWAY_B + '/32', 'via', WAN_B)
        _sh(*rb, 'route', 'add', '10.92.1.0/24', 'via', WAN_A)
        pki = _pki()

        # Region B: backends, the pods' sidecars, the gateway.
        with NetNs(cls.rb):
            cls.b1 = HttpUpstream(name='b1', host='127.0.0.1')
            cls.addClassCleanup(cls.b1.close)
            cls.c1 = HttpUpstream(name='c1', host='127.0.0.1')
            cls.addClassCleanup(cls.c1.close)
            cls.pods_b = h.Petrel(pods_config(ADMIN_PODS_B, [
                ('b1', POD_B1, pki['backend'], cls.b1.port),
                # svc-c's pod presents a valid certificate of another identity.
                ('c1', POD_C1, pki['rogue'], cls.c1.port)]))
            cls.pods_b.start()
            cls.addClassCleanup(cls.pods_b.close)
            cls.gateway = h.Petrel(gateway_config())
            cls.gateway.start()
            cls.addClassCleanup(cls.gateway.close)

        # Region A: this thread stays in it for the class (the harness then reaches the
        # sidecar's admin port and listener).
        cls.ns = NetNs(cls.ra)
        cls.ns.__enter__()
        cls.addClassCleanup(cls.ns.__exit__, None, None, None)
        cls.a1 = HttpUpstream(name='a1', host='127.0.0.1')
        cls.addClassCleanup(cls.a1.close)
        cls.a2 = HttpUpstream(name='a2', host='127.0.0.1')
        cls.addClassCleanup(cls.a2.close)
        cls.pods_a = cls.start_pods_a()
        cls.sidecar = h.Petrel(sidecar_config())
        cls.sidecar.start()
        cls.addClassCleanup(cls.sidecar.close)
        # Every host healthy before a test begins (health checks have run through the gateway).
        cls.wait_hosts(healthy={POD_A1, POD_A2, GATEWAY_B})

    @classmethod
    def start_pods_a(cls):
        pki = _pki()
        p = h.Petrel(pods_config(ADMIN_PODS, [('a1', POD_A1, pki['backend'], cls.a1.port),
                                              ('a2', POD_A2, pki['backend'], cls.a2.port)]),
                     extra_args=['--drain-time-s', '2'])
        p.start()
        cls.addClassCleanup(p.close)
        return p

    @classmethod
    def hosts(cls):
        """svc-b's hosts in sidecar A's /clusters?format=json, by address."""
        status = json.loads(cls.sidecar.admin_get('/clusters?format=json')[2])
        c = [c for c in status['cluster_statuses'] if c['name'] == 'svc-b'][0]
        return {hs['address']['socket_address']['address']: hs for hs in c['host_statuses']}

    @classmethod
    def wait_hosts(cls, healthy=(), unhealthy=(), timeout=20):
        def check():
            hosts = cls.hosts()
            ok = all(hosts[a]['health_status'].get('eds_health_status') == 'HEALTHY' and
                     len(hosts[a]['health_status']) == 1 for a in healthy)
            bad = all(len(hosts[a]['health_status']) > 1 for a in unhealthy)
            return (ok and bad) or None
        h.wait_until(check, timeout=h.scaled(timeout),
                     message='svc-b hosts healthy %s, unhealthy %s' % (sorted(healthy),
                                                                       sorted(unhealthy)))

    def backend_counts(self, results):
        return collections.Counter(name for status, name in results if status == 200)

    def test_01_local_region_first_and_metadata_shown(self):
        answered = collections.Counter()
        for i in range(20):
            r = h.http_request(SIDECAR, path='/local/%d' % i, timeout=10)
            self.assertEqual(r.status, 200, r.body)
            answered[r.get('x-upstream-name')] += 1
        # Round robin over region A's two pods; region B takes nothing while they are well.
        self.assertEqual(answered, {'a1': 10, 'a2': 10})
        self.assertEqual([q for q in self.b1.requests if q['path'].startswith('/local/')], [])
        hosts = self.hosts()
        gw = hosts[GATEWAY_B]
        self.assertEqual(gw['priority'], 1)
        self.assertEqual(gw['locality'], {'region': 'region-b'})
        self.assertEqual(gw['metadata']['filter_metadata']['istio'], {'network': ISTIO_NETWORK})
        self.assertEqual(hosts[POD_A1]['priority'], 0)
        # The handshakes verified the pods' SPIFFE identity (none refused so far).
        self.assertEqual(self.sidecar.stat('cluster.svc-b.ssl.fail_verify_san', 0), 0)
        self.assertGreater(self.sidecar.stat('cluster.svc-b.ssl.handshake', 0), 0)

    def failover_under_load(self, stop_pods):
        """Region A's pods go away under load (stop_pods(process)), then come back. Returns
        (every outcome, index of the first request after they were stopped, the number of
        requests before they stopped)."""
        cls = type(self)
        load = Load()
        self.addCleanup(load.stop.set)
        load.wait_for(lambda res: len(res) >= 30, 'requests before the failure')
        before = load.count()
        stop_pods(cls.pods_a)
        killed_at = load.count()
        self.wait_hosts(healthy={GATEWAY_B}, unhealthy={POD_A1, POD_A2})
        load.wait_for(lambda res: len(res) >= killed_at + 50 and
                      all(n == 'b1' for _, n in res[-30:]),
                      'region B answering everything')
        # The pods come back: health checks find them and traffic returns to region A.
        cls.pods_a = cls.start_pods_a()
        back_at = load.count()
        self.wait_hosts(healthy={POD_A1, POD_A2, GATEWAY_B})
        load.wait_for(lambda res: len(res) >= back_at + 30 and
                      all(n in ('a1', 'a2') for _, n in res[-30:]),
                      'region A answering everything again')
        results = load.finish()
        self.assertEqual(set(self.backend_counts(results[:before])), {'a1', 'a2'})
        during = self.backend_counts(results[killed_at:back_at])
        self.assertGreaterEqual(during['b1'], 50)
        self.assertEqual(set(self.backend_counts(results[-30:])), {'a1', 'a2'})
        # The requests region B answered came through the gateway, as TLS it passed through.
        self.assertGreaterEqual(len([q for q in self.b1.requests
                                     if q['path'].startswith('/load/')]), during['b1'])
        with NetNs(self.rb):
            self.assertGreater(self.gateway.stat('cluster.%s.upstream_cx_total' % SNI_B), 0)
            self.assertEqual(self.gateway.stat('tcp.east_west.downstream_cx_no_route', 0), 0)
            self.assertGreater(self.pods_b.stat('listener.%s_%d.ssl.handshake' %
                                                (POD_B1, INBOUND), 0), 0)
        # The pod's sidecar saw sidecar A's own certificate: the gateway relayed the
        # handshake rather than ending it (it holds no key to end it with).
        xfcc = h.get_header(self.b1.last['headers'], 'x-forwarded-client-cert')
        self.assertIn('URI=' + certs.spiffe('default', 'frontend'), xfcc or '')
        self.assertGreater(self.sidecar.stat('cluster.svc-b.upstream_rq_retry', 0), 0)
        return results, before, killed_at

    def test_02_pods_deleted_under_load_fail_over_and_back_without_a_failure(self):
        # Deleted as a platform deletes a pod: SIGTERM, its sidecar drains (listeners closed,
        # requests in flight answered with connection: close).
        def delete(p):
            p.signal(signal.SIGTERM)
            p.wait(timeout=h.scaled(20))
        results, before, killed_at = self.failover_under_load(delete)
        failed = [(i, r) for i, r in enumerate(results) if r[0] != 200]
        self.assertEqual(failed, [], 'requests failed (pods deleted after request %d)' % before)

    def test_03_pods_crashing_under_load_fail_over_and_back(self):
        # SIGKILL: connections reset and refused. Every request not yet answered is retried
        # elsewhere; only a response whose head was already on its way to the client when its
        # pod died cannot be (a proxy cannot take back what it sent; Envoy neither): at most
        # the one request in flight at that instant, cut after its head.
        def crash(p):
            p.proc.kill()
            p.wait(timeout=h.scaled(10))
        results, before, killed_at = self.failover_under_load(crash)
        failed = [(i, r) for i, r in enumerate(results) if r[0] != 200]
        cut = [(i, r) for i, r in failed if before <= i <= killed_at and
               r[1].startswith('IncompleteResponse')]
        self.assertEqual(failed, cut[:1], 'requests failed (pods killed during requests '
                         '%d..%d)' % (before, killed_at))

    def test_04_wrong_identity_in_the_far_region_fails_the_handshake(self):
        before = self.sidecar.stat('cluster.svc-c.ssl.fail_verify_san', 0)
        for i in range(3):
            r = h.http_request(SIDECAR, path='/c/%d' % i, timeout=10)
            self.assertEqual(r.status, 503, r.body)
        self.sidecar.wait_stat('cluster.svc-c.ssl.fail_verify_san', lambda v: v >= before + 3)
        self.assertEqual(self.sidecar.stat('cluster.svc-c.upstream_rq_200', 0), 0)
        # Nothing reached the application behind the impostor.
        self.assertEqual([q for q in self.c1.requests if q['path'].startswith('/c/')], [])
        # The gateway did route it (the connection went through), to svc-c's pod.
        with NetNs(self.rb):
            self.assertGreaterEqual(self.gateway.stat('cluster.%s.upstream_cx_total' % SNI_C),
                                    3)

    def test_05_no_region_left_fails_fast_with_503(self):
        cls = type(self)
        cls.pods_a.proc.kill()
        cls.pods_a.wait(timeout=h.scaled(10))
        with NetNs(self.rb):
            cls.gateway.proc.kill()
            cls.gateway.wait(timeout=h.scaled(10))
        self.wait_hosts(unhealthy={POD_A1, POD_A2, GATEWAY_B})
        for i in range(3):
            # Refused connections end each try at once: a 503, where a hang would reach the
            # per-try or route timeout and answer 504 (or this client's timeout).
            r = h.http_request(SIDECAR, path='/gone/%d' % i, timeout=30)
            self.assertEqual(r.status, 503, r.body)
            self.assertIn(b'upstream', r.body)
        self.assertEqual(len([q for q in self.b1.requests if q['path'].startswith('/gone/')]), 0)


if __name__ == '__main__':
    unittest.main()
