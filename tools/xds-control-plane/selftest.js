#!/usr/bin/env node
'use strict';
/*
 * Self-test: starts server.js on free ports over a temporary resource directory and talks to it
 * as an xDS client would, with grpc-js and the same Envoy protos, then checks the admin API.
 * Exits 0 when every check passes; otherwise prints what failed and exits 1.
 *
 *   cd tools/xds-control-plane && npm ci && node selftest.js
 */
const assert = require('assert');
const { spawn } = require('child_process');
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const { loadEnvoyRoot, loadAdsPackage, lookupTypeUrl } = require('./lib/protos');

const T = 'type.googleapis.com/';
const CDS = T + 'envoy.config.cluster.v3.Cluster';
const EDS = T + 'envoy.config.endpoint.v3.ClusterLoadAssignment';
const LDS = T + 'envoy.config.listener.v3.Listener';
const RDS = T + 'envoy.config.route.v3.RouteConfiguration';
const SDS = T + 'envoy.extensions.transport_sockets.tls.v3.Secret';
const HCM = T + 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const ROUTER = T + 'envoy.extensions.filters.http.router.v3.Router';
const HTTP_OPTIONS = T + 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';
const WAIT_MS = 5000;

/* ---- the resources, written as an Envoy user writes them ---- */

const cluster = (name, timeout) => ({
  name,
  connect_timeout: timeout,
  type: 'EDS',
  lb_policy: 'LEAST_REQUEST',
  eds_cluster_config: { eds_config: { ads: {}, resource_api_version: 'V3' } },
  per_connection_buffer_limit_bytes: 32768, /* a UInt32Value written as a plain number */
  circuit_breakers: { thresholds: [{ priority: 'HIGH', max_requests: '100' }] },
  metadata: { filter_metadata: { selftest: { owner: 'team-a', weight: 3, tags: ['x', true, null] } } },
  typed_extension_protocol_options: {
    'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
      '@type': HTTP_OPTIONS,
      explicitHttpConfig: { http2ProtocolOptions: { maxConcurrentStreams: 50 } }, /* lowerCamelCase spellings */
    },
  },
});

const endpoints = (port) => [{
  cluster_name: 'c1',
  endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } }, load_balancing_weight: 2 }] }],
}];

const listeners = [{
  name: 'l1',
  address: { socket_address: { address: '127.0.0.1', port_value: 10000 } },
  filter_chains: [{
    filters: [{
      name: 'envoy.filters.network.http_connection_manager',
      typed_config: {
        '@type': HCM,
        stat_prefix: 'ingress',
        codec_type: 'AUTO',
        rds: { route_config_name: 'r1', config_source: { ads: {}, resource_api_version: 'V3' } },
        http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } }],
        stream_idle_timeout: '0.25s',
      },
    }],
  }],
}];

const routes = [{
  name: 'r1',
  virtual_hosts: [{
    name: 'all',
    domains: ['*'],
    routes: [{ match: { prefix: '/', headers: [{ name: 'x-n', range_match: { start: '10', end: 9007199254740991 } }] }, route: { cluster: 'c1', timeout: '3s', retry_policy: { num_retries: 2, retry_on: '5xx' } } }],
  }],
}];

const secrets = [{
  name: 's1',
  tls_certificate: { certificate_chain: { inline_bytes: Buffer.from('not a real certificate').toString('base64') }, private_key: { inline_string: 'key' } },
}];

/* Replace a file the way the server expects: write aside, then rename over. */
function writeResources(dir, file, list) {
  const tmp = path.join(dir, `.${file}.tmp`);
  fs.writeFileSync(tmp, typeof list === 'string' ? list : JSON.stringify(list, null, 2));
  fs.renameSync(tmp, path.join(dir, file));
}

/* ---- plumbing ---- */

function startServer(dir) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'server.js'), '--dir', dir, '--port', '0', '--admin-port', '0', '--rest-port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const output = [];
    let adminPort = null;
    let restPort = null;
    let buffered = '';
    const timer = setTimeout(() => reject(new Error(`server did not print "listening" within 20s:\n${output.join('\n')}`)), 20000);
    child.stdout.on('data', (chunk) => {
      buffered += chunk;
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        output.push(line);
        if (process.env.SELFTEST_VERBOSE) process.stdout.write(`  server: ${line}\n`);
        let m;
        if ((m = /^admin (\d+)$/.exec(line))) adminPort = Number(m[1]);
        if ((m = /^rest (\d+)$/.exec(line))) restPort = Number(m[1]);
        if ((m = /^listening (\d+)$/.exec(line))) {
          clearTimeout(timer);
          resolve({ child, port: Number(m[1]), adminPort, restPort, output });
        }
      }
    });
    child.stderr.on('data', (chunk) => output.push(`stderr: ${chunk}`));
    child.on('exit', (code) => reject(new Error(`server exited (${code}):\n${output.join('\n')}`)));
  });
}

function adminRequest(port, method, urlPath, send = null) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => {
        if (res.statusCode === 304) return resolve({ status: 304, body: null });
        try {
          resolve({ status: res.statusCode, body: JSON.parse(body) });
        } catch (e) {
          reject(new Error(`${method} ${urlPath}: not JSON: ${body}`));
        }
      });
    });
    req.on('error', reject);
    req.end(send !== null ? JSON.stringify(send) : undefined);
  });
}

/* A bidirectional stream whose responses are taken one at a time, each within WAIT_MS. */
function openStream(call) {
  const queue = [];
  const waiters = [];
  let ended = null;
  const deliver = (item) => (waiters.length ? waiters.shift()(item) : queue.push(item));
  call.on('data', (msg) => deliver({ msg }));
  call.on('error', (err) => {
    ended = err;
    deliver({ err });
  });
  return {
    send: (req) => call.write(req),
    next(what) {
      const item = queue.shift();
      if (item) return item.err ? Promise.reject(item.err) : Promise.resolve(item.msg);
      if (ended) return Promise.reject(ended);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no response (${what}) within ${WAIT_MS} ms`)), WAIT_MS);
        waiters.push((it) => {
          clearTimeout(timer);
          it.err ? reject(it.err) : resolve(it.msg);
        });
      });
    },
    /* True if nothing arrives within ms (the server must stay silent). */
    async quiet(ms) {
      if (queue.length) return false;
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(fn), 1);
          resolve(true);
        }, ms);
        const fn = (it) => {
          clearTimeout(timer);
          queue.unshift(it);
          resolve(false);
        };
        waiters.push(fn);
      });
    },
    call,
  };
}

/* ---- the checks ---- */

let passed = 0;
const checks = [];
async function check(name, fn) {
  checks.push(name);
  await fn();
  passed += 1;
  process.stdout.write(`ok ${passed} - ${name}\n`);
}

function decodeAny(root, any, expectedTypeUrl) {
  assert.strictEqual(any.type_url, expectedTypeUrl, 'Any type_url');
  const type = lookupTypeUrl(root, any.type_url);
  /* An empty message has no value field on the wire, so the decoded Any may lack it. */
  return type.toObject(type.decode(any.value || Buffer.alloc(0)), { longs: String, enums: String });
}

const NODE = {
  id: 'selftest-node',
  cluster: 'selftest-cluster',
  user_agent_name: 'selftest',
  user_agent_build_version: { version: { major_number: 1, minor_number: 2, patch: 3 } },
};

async function run(ctx) {
  const { root, dir, server } = ctx;
  const adsPackage = grpc.loadPackageDefinition(loadAdsPackage());
  const Service = adsPackage.envoy.service.discovery.v3.AggregatedDiscoveryService;
  const client = new Service(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
  ctx.client = client;
  const admin = (method, p) => adminRequest(server.adminPort, method, p);
  const sotw = openStream(client.StreamAggregatedResources());
  let cds;
  let eds;

  await check('CDS wildcard subscription returns the cluster, decoded as Envoy wrote it', async () => {
    sotw.send({ node: NODE, type_url: CDS, resource_names: [] });
    cds = await sotw.next('CDS');
    assert.strictEqual(cds.type_url, CDS);
    assert.strictEqual(cds.version_info, '1');
    assert.ok(cds.nonce, 'a nonce');
    assert.strictEqual(cds.resources.length, 1);
    const c = decodeAny(root, cds.resources[0], CDS);
    assert.strictEqual(c.name, 'c1');
    assert.deepStrictEqual(c.connect_timeout, { seconds: '1', nanos: 500000000 });
    assert.strictEqual(c.type, 'EDS');
    assert.strictEqual(c.lb_policy, 'LEAST_REQUEST');
    assert.deepStrictEqual(c.eds_cluster_config.eds_config.ads, {});
    assert.strictEqual(c.eds_cluster_config.eds_config.resource_api_version, 'V3');
    assert.deepStrictEqual(c.per_connection_buffer_limit_bytes, { value: 32768 });
    assert.deepStrictEqual(c.circuit_breakers.thresholds[0], { priority: 'HIGH', max_requests: { value: 100 } });
    const meta = c.metadata.filter_metadata.selftest.fields;
    assert.strictEqual(meta.owner.stringValue, 'team-a');
    assert.strictEqual(meta.weight.numberValue, 3);
    assert.strictEqual(meta.tags.listValue.values.length, 3);
    const opts = decodeAny(root, c.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'], HTTP_OPTIONS);
    assert.deepStrictEqual(opts.explicit_http_config.http2_protocol_options.max_concurrent_streams, { value: 50 });
  });

  await check('CDS ACK', async () => {
    sotw.send({ type_url: CDS, version_info: cds.version_info, response_nonce: cds.nonce });
    assert.ok(await sotw.quiet(200), 'an ACK is not answered');
  });

  await check('EDS subscription by name returns only that ClusterLoadAssignment', async () => {
    sotw.send({ type_url: EDS, resource_names: ['c1', 'missing'] });
    eds = await sotw.next('EDS');
    assert.strictEqual(eds.type_url, EDS);
    assert.strictEqual(eds.resources.length, 1);
    const cla = decodeAny(root, eds.resources[0], EDS);
    assert.strictEqual(cla.cluster_name, 'c1');
    const lb = cla.endpoints[0].lb_endpoints[0];
    assert.strictEqual(lb.endpoint.address.socket_address.port_value, 8080);
    assert.deepStrictEqual(lb.load_balancing_weight, { value: 2 });
  });

  await check('EDS NACK with an error_detail', async () => {
    sotw.send({ type_url: EDS, version_info: '', resource_names: ['c1', 'missing'], response_nonce: eds.nonce, error_detail: { code: 3, message: 'selftest: rejected on purpose' } });
    assert.ok(await sotw.quiet(200), 'a NACK is not answered');
  });

  await check('LDS: the listener with its HttpConnectionManager and router as Anys', async () => {
    sotw.send({ type_url: LDS });
    const lds = await sotw.next('LDS');
    assert.strictEqual(lds.resources.length, 1);
    const l = decodeAny(root, lds.resources[0], LDS);
    assert.strictEqual(l.name, 'l1');
    assert.strictEqual(l.address.socket_address.port_value, 10000);
    const hcm = decodeAny(root, l.filter_chains[0].filters[0].typed_config, HCM);
    assert.strictEqual(hcm.stat_prefix, 'ingress');
    assert.strictEqual(hcm.rds.route_config_name, 'r1');
    assert.deepStrictEqual(hcm.rds.config_source.ads, {});
    assert.deepStrictEqual(hcm.stream_idle_timeout, { nanos: 250000000 }); /* zero seconds are not on the wire */
    assert.strictEqual('codec_type' in hcm, false, 'codec_type AUTO (0) is not on the wire, as proto3 encoders do');
    assert.strictEqual(hcm.http_filters[0].name, 'envoy.filters.http.router');
    assert.deepStrictEqual(decodeAny(root, hcm.http_filters[0].typed_config, ROUTER), {});
    sotw.send({ type_url: LDS, version_info: lds.version_info, response_nonce: lds.nonce });
  });

  await check('RDS by name', async () => {
    sotw.send({ type_url: RDS, resource_names: ['r1'] });
    const rds = await sotw.next('RDS');
    const r = decodeAny(root, rds.resources[0], RDS);
    assert.strictEqual(r.name, 'r1');
    const route = r.virtual_hosts[0].routes[0];
    assert.strictEqual(route.match.prefix, '/');
    assert.deepStrictEqual(route.match.headers[0].range_match, { start: '10', end: '9007199254740991' }); /* int64 from a string and a number */
    assert.strictEqual(route.route.cluster, 'c1');
    assert.deepStrictEqual(route.route.timeout, { seconds: '3' });
    assert.deepStrictEqual(route.route.retry_policy.num_retries, { value: 2 });
    sotw.send({ type_url: RDS, version_info: rds.version_info, response_nonce: rds.nonce, resource_names: ['r1'] });
  });

  await check('SDS by name; bytes written as base64', async () => {
    sotw.send({ type_url: SDS, resource_names: ['s1'] });
    const sds = await sotw.next('SDS');
    const secret = decodeAny(root, sds.resources[0], SDS);
    assert.strictEqual(secret.name, 's1');
    assert.strictEqual(Buffer.from(secret.tls_certificate.certificate_chain.inline_bytes).toString(), 'not a real certificate');
    sotw.send({ type_url: SDS, version_info: sds.version_info, response_nonce: sds.nonce, resource_names: ['s1'] });
  });

  await check('a request with a stale nonce is ignored', async () => {
    sotw.send({ type_url: CDS, version_info: '1', response_nonce: 'stale-nonce', resource_names: ['c1'] });
    assert.ok(await sotw.quiet(200), 'no response to a stale nonce');
  });

  await check('GET /log shows the connect, the node, the ACK and the NACK with its message', async () => {
    const { status, body } = await admin('GET', '/log');
    assert.strictEqual(status, 200);
    const first = (pred, what) => {
      const e = body.find(pred);
      assert.ok(e, `${what} in ${JSON.stringify(body, null, 1)}`);
      return e;
    };
    first((e) => e.event === 'connect', 'a connect event');
    const req = first((e) => e.event === 'request' && e.type_url === CDS, 'the CDS request');
    assert.strictEqual(req.node.id, 'selftest-node');
    assert.strictEqual(req.node.cluster, 'selftest-cluster');
    assert.strictEqual(req.node.user_agent_name, 'selftest');
    assert.strictEqual(req.node.user_agent_build_version.version.minor_number, 2);
    const ack = first((e) => e.event === 'ack' && e.type_url === CDS, 'the CDS ack');
    assert.strictEqual(ack.version, '1');
    assert.strictEqual(ack.nonce, cds.nonce);
    const nack = first((e) => e.event === 'nack' && e.type_url === EDS, 'the EDS nack');
    assert.deepStrictEqual(nack.error_detail, { code: 3, message: 'selftest: rejected on purpose' });
    assert.strictEqual(nack.nonce, eds.nonce);
    first((e) => e.event === 'response' && e.type_url === EDS && e.nonce === eds.nonce, 'the EDS response');
    first((e) => e.event === 'request' && e.nonce === 'stale-nonce' && /stale/.test(e.note), 'the stale request');
  });

  await check('a changed clusters.json is pushed with a new version', async () => {
    writeResources(dir, 'clusters.json', [cluster('c1', '2s'), cluster('c2', '1s')]);
    const push = await sotw.next('CDS push');
    assert.strictEqual(push.type_url, CDS);
    assert.strictEqual(push.version_info, '2');
    assert.notStrictEqual(push.nonce, cds.nonce);
    assert.deepStrictEqual(push.resources.map((a) => decodeAny(root, a, CDS).name), ['c1', 'c2']);
    assert.deepStrictEqual(decodeAny(root, push.resources[0], CDS).connect_timeout, { seconds: '2' });
    sotw.send({ type_url: CDS, version_info: push.version_info, response_nonce: push.nonce, resource_names: [] });
    cds = push;
  });

  await check('an identical rewrite pushes nothing', async () => {
    writeResources(dir, 'clusters.json', [cluster('c1', '2s'), cluster('c2', '1s')]);
    await admin('POST', '/reload');
    assert.ok(await sotw.quiet(300), 'no push for unchanged content');
  });

  await check('POST /reload picks up endpoints.json at once and EDS is pushed', async () => {
    writeResources(dir, 'endpoints.json', endpoints(9090));
    const { status } = await admin('POST', '/reload');
    assert.strictEqual(status, 200);
    const push = await sotw.next('EDS push');
    assert.strictEqual(push.type_url, EDS);
    assert.strictEqual(push.version_info, '2');
    const cla = decodeAny(root, push.resources[0], EDS);
    assert.strictEqual(cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value, 9090);
    sotw.send({ type_url: EDS, version_info: push.version_info, response_nonce: push.nonce, resource_names: ['c1'] });
  });

  await check('a bad clusters.json is reported with its path and nothing is pushed', async () => {
    const bad = [cluster('c1', '2s'), Object.assign(cluster('c2', '1s'), { connect_timeout: 'soon' })];
    writeResources(dir, 'clusters.json', bad);
    const { body } = await admin('POST', '/reload');
    const state = body.types[CDS];
    assert.strictEqual(state.version, '2');
    assert.match(state.error, /clusters\.json\[1\]\.connect_timeout: "soon" is not a duration/);
    writeResources(dir, 'clusters.json', [cluster('c1', '2s'), Object.assign(cluster('c2', '1s'), { no_such_field: 1 })]);
    const again = (await admin('POST', '/reload')).body.types[CDS];
    assert.match(again.error, /clusters\.json\[1\]\.no_such_field: unknown field "no_such_field" in envoy\.config\.cluster\.v3\.Cluster/);
    assert.ok(await sotw.quiet(300), 'no push of a bad file');
  });

  await check('GET /state shows the versions and the open stream with its node', async () => {
    const { body } = await admin('GET', '/state');
    assert.strictEqual(body.types[CDS].version, '2');
    assert.strictEqual(body.types[EDS].version, '2');
    assert.strictEqual(body.streams.length, 1);
    assert.strictEqual(body.streams[0].node.id, 'selftest-node');
    assert.strictEqual(body.streams[0].subscriptions[CDS].wildcard, true);
    assert.strictEqual(body.streams[0].subscriptions[CDS].acked_version, '2');
    assert.deepStrictEqual(body.streams[0].subscriptions[EDS].resource_names, ['c1']);
  });

  await check('POST /close-streams ends the stream with UNAVAILABLE', async () => {
    const { body } = await admin('POST', '/close-streams');
    assert.strictEqual(body.closed, 1);
    await assert.rejects(sotw.next('close'), (err) => err.code === grpc.status.UNAVAILABLE);
    const log = (await admin('GET', '/log')).body;
    assert.ok(log.some((e) => e.event === 'disconnect'), 'a disconnect event');
  });

  await check('a client that reconnects gets the current versions', async () => {
    const again = openStream(client.StreamAggregatedResources());
    again.send({ node: NODE, type_url: CDS, version_info: '2', resource_names: [] });
    const resp = await again.next('CDS after reconnect');
    assert.strictEqual(resp.version_info, '2');
    assert.deepStrictEqual(resp.resources.map((a) => decodeAny(root, a, CDS).name), ['c1', 'c2']);
    again.call.cancel();
    await assert.rejects(again.next('cancel'), (err) => err.code === grpc.status.CANCELLED);
  });

  await check('the example directory converts without errors', async () => {
    const { ResourceStore } = require('./lib/resources');
    const lines = [];
    const store = new ResourceStore(root, path.join(__dirname, 'example'), (line) => lines.push(line));
    store.reload();
    const errors = lines.filter((l) => l.startsWith('error'));
    assert.deepStrictEqual(errors, []);
    const types = store.summary();
    for (const typeUrl of [CDS, EDS, LDS, RDS]) assert.strictEqual(types[typeUrl].resources.length > 0, true, typeUrl);
  });

  await check('conversion errors name the JSON path and the reason', async () => {
    const { resourceToAny } = require('./lib/json2pb');
    const bad = [
      [{ name: 'x', typed_extension_protocol_options: { k: { '@type': T + 'no.such.Type' } } }, /x\.typed_extension_protocol_options\["k"\]\["@type"\]: unknown type "type\.googleapis\.com\/no\.such\.Type"/],
      [{ name: 'x', type: 'EDS', cluster_type: { name: 'y' } }, /x\.cluster_type: "cluster_type" and "type" are both set but belong to oneof "cluster_discovery_type"/],
      [{ name: 'x', lb_policy: 'FASTEST' }, /x\.lb_policy: "FASTEST" is not a value of envoy\.config\.cluster\.v3\.Cluster\.LbPolicy/],
      [{ name: 'x', connectTimeout: '1s', connect_timeout: '2s' }, /x\.connect_timeout: field "connect_timeout" given twice/],
      [{ name: 'x', per_connection_buffer_limit_bytes: -1 }, /x\.per_connection_buffer_limit_bytes: -1 is out of range for uint32/],
      [{ name: 'x', metadata: { filter_metadata: { a: 1 } } }, /x\.metadata\.filter_metadata\["a"\]: expected an object \(Struct\), got 1/],
      [{ name: 'x', '@type': LDS }, /x\["@type"\]: "type\.googleapis\.com\/envoy\.config\.listener\.v3\.Listener" is not type\.googleapis\.com\/envoy\.config\.cluster\.v3\.Cluster/],
    ];
    for (const [json, message] of bad) assert.throws(() => resourceToAny(root, CDS, json, 'x'), message);
    /* and the lenient forms proto3 JSON allows */
    const ok = resourceToAny(root, CDS, { '@type': CDS, name: 'x', connectTimeout: '0.000000001s', lbPolicy: 1, dns_refresh_rate: null }, 'x');
    assert.deepStrictEqual(decodeAny(root, ok, CDS), { name: 'x', connect_timeout: { nanos: 1 }, lb_policy: 'LEAST_REQUEST' });
  });

  await check('delta: wildcard CDS, then a removal; EDS by name with a missing one', async () => {
    writeResources(dir, 'clusters.json', [cluster('c1', '2s'), cluster('c2', '1s')]);
    await admin('POST', '/reload');
    const delta = openStream(client.DeltaAggregatedResources());
    delta.send({ node: NODE, type_url: CDS });
    const first = await delta.next('delta CDS');
    assert.deepStrictEqual(first.resources.map((r) => r.name).sort(), ['c1', 'c2']);
    assert.strictEqual(decodeAny(root, first.resources[0].resource, CDS).name, first.resources[0].name);
    assert.ok(first.resources[0].version);
    delta.send({ type_url: CDS, response_nonce: first.nonce });
    writeResources(dir, 'clusters.json', [cluster('c1', '2s')]);
    await admin('POST', '/reload');
    const removal = await delta.next('delta CDS removal');
    assert.deepStrictEqual(removal.resources, []);
    assert.deepStrictEqual(removal.removed_resources, ['c2']);
    delta.send({ type_url: CDS, response_nonce: removal.nonce });
    delta.send({ type_url: EDS, resource_names_subscribe: ['c1', 'nope'] });
    const eds2 = await delta.next('delta EDS');
    assert.deepStrictEqual(eds2.resources.map((r) => r.name), ['c1']);
    assert.deepStrictEqual(eds2.removed_resources, ['nope']);
    delta.send({ type_url: EDS, response_nonce: eds2.nonce, error_detail: { code: 13, message: 'delta nack' } });
    await new Promise((r) => setTimeout(r, 100));
    const log = (await admin('GET', '/log')).body;
    assert.ok(log.some((e) => e.event === 'ack' && e.type_url === CDS && e.nonce === removal.nonce), 'delta ack logged');
    assert.ok(log.some((e) => e.event === 'nack' && e.error_detail && e.error_detail.message === 'delta nack'), 'delta nack logged');
    delta.call.cancel();
  });

  await check('a type\'s own service (ClusterDiscoveryService/StreamClusters) serves that type only', async () => {
    const Cds = adsPackage.envoy.service.cluster.v3.ClusterDiscoveryService;
    const cdsClient = new Cds(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
    const own = openStream(cdsClient.StreamClusters());
    own.send({ node: NODE, type_url: CDS });
    const first = await own.next('CDS on its own service');
    assert.deepStrictEqual(first.resources.map((r) => decodeAny(root, r, CDS).name), ['c1']);
    own.send({ type_url: EDS, resource_names: ['c1'] }); /* another type: ignored */
    assert.ok(await own.quiet(300), 'an EDS request on the CDS stream is not answered');
    const state = (await admin('GET', '/state')).body;
    assert.ok(state.streams.some((st) => st.service === 'CDS'), 'the stream is shown as CDS');
    own.call.cancel();
    cdsClient.close();
  });

  await check('REST: POST /v3/discovery:clusters answers 200, then 304 for the same version, logs ACK and NACK', async () => {
    const rest = (body) => adminRequest(server.restPort, 'POST', '/v3/discovery:clusters', body);
    const first = await rest({ node: NODE, type_url: CDS });
    assert.strictEqual(first.status, 200);
    assert.deepStrictEqual(first.body.resources.map((r) => [r['@type'], r.name]), [[CDS, 'c1']]);
    const again = await rest({ node: NODE, type_url: CDS, version_info: first.body.version_info });
    assert.strictEqual(again.status, 304);
    const nack = await rest({ node: NODE, type_url: CDS, version_info: '0', error_detail: { code: 3, message: 'rest nack' } });
    assert.strictEqual(nack.status, 200);
    const log = (await admin('GET', '/log')).body;
    assert.ok(log.some((e) => e.event === 'ack' && e.protocol === 'rest' && e.type_url === CDS), 'rest ack logged');
    assert.ok(log.some((e) => e.event === 'nack' && e.protocol === 'rest' && e.error_detail.message === 'rest nack'), 'rest nack logged');
    const eds = await adminRequest(server.restPort, 'POST', '/v3/discovery:endpoints', { node: NODE, resource_names: ['c1', 'nope'] });
    assert.deepStrictEqual(eds.body.resources.map((r) => r.cluster_name), ['c1']);
  });
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xds-cp-selftest-'));
  const ctx = { dir, server: null, client: null, root: null };
  const deadline = setTimeout(() => fail(ctx, new Error('selftest took over 60s')), 60000);
  try {
    writeResources(dir, 'clusters.json', [cluster('c1', '1.5s')]);
    writeResources(dir, 'endpoints.json', endpoints(8080));
    writeResources(dir, 'listeners.json', listeners);
    writeResources(dir, 'routes.json', routes);
    writeResources(dir, 'secrets.json', secrets);
    ctx.root = loadEnvoyRoot().root;
    ctx.server = await startServer(dir);
    await run(ctx);
    clearTimeout(deadline);
    cleanup(ctx);
    process.stdout.write(`selftest: ${passed} passed, 0 failed\n`);
    process.exit(0);
  } catch (e) {
    fail(ctx, e);
  }
}

function fail(ctx, err) {
  process.stdout.write(`not ok ${passed + 1} - ${checks[passed] || 'setup'}\n  ${String(err.stack || err).replace(/\n/g, '\n  ')}\n`);
  if (ctx.server) process.stdout.write(`server output:\n  ${ctx.server.output.join('\n  ')}\n`);
  cleanup(ctx);
  process.stdout.write(`selftest: ${passed} passed, 1 failed\n`);
  process.exit(1);
}

function cleanup(ctx) {
  if (ctx.client) ctx.client.close();
  if (ctx.server) {
    ctx.server.child.removeAllListeners('exit');
    ctx.server.child.kill('SIGTERM');
  }
  fs.rmSync(ctx.dir, { recursive: true, force: true });
}

main();
