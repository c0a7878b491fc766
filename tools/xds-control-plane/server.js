#!/usr/bin/env node
'use strict';
/*
 * A small xDS control plane: serves the Envoy v3 resources found in a directory of JSON files
 * over ADS (gRPC) and over each type's own discovery service (CDS, LDS, RDS, EDS, SDS), and
 * pushes every change to the files to the clients subscribed to it.
 *
 *   node server.js --dir <resource dir> --port <grpc port> [--admin-port <http port>] [--host 127.0.0.1]
 *
 * Port 0 picks a free port. Prints "admin <port>" (when an admin port is given), "rest <port>"
 * (when a REST port is given: REST-JSON xDS, POST /v3/discovery:<type>), and then
 * "listening <port>" once the servers accept connections; tests wait for that last line.
 */
const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const { loadEnvoyRoot, loadAdsPackage, RESOURCE_TYPES, TYPE_SERVICES } = require('./lib/protos');
const { ResourceStore } = require('./lib/resources');
const { EventLog } = require('./lib/events');
const { Ads } = require('./lib/ads');
const { createAdminServer } = require('./lib/admin');
const { createRestServer } = require('./lib/rest');

const USAGE = 'usage: node server.js --dir <resource dir> --port <grpc port> [--admin-port <http port>] [--host 127.0.0.1]\n' +
  '       [--tls-cert <pem> --tls-key <pem> [--client-ca <pem>]]   (TLS; with --client-ca, mTLS: clients must present a certificate it signed)\n' +
  '       [--unix <socket path>]   (gRPC on a Unix socket instead of --host/--port; --port then may be omitted)\n' +
  '       [--rest-port <http port>]   (REST-JSON xDS too: POST /v3/discovery:<type>)';

function parseArgs(argv) {
  const opts = { dir: null, port: null, adminPort: null, restPort: null, host: '127.0.0.1', tlsCert: null, tlsKey: null, clientCa: null, unix: null };
  const keys = {
    '--dir': 'dir', '--port': 'port', '--admin-port': 'adminPort', '--host': 'host',
    '--tls-cert': 'tlsCert', '--tls-key': 'tlsKey', '--client-ca': 'clientCa', '--unix': 'unix',
    '--rest-port': 'restPort',
  };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s);
    const key = keys[flag];
    if (argv[i] === '-h' || argv[i] === '--help') usageExit(0);
    if (!key) usageExit(2, `unknown argument ${argv[i]}`);
    const value = inline !== undefined ? inline : argv[++i];
    if (value === undefined) usageExit(2, `${flag} needs a value`);
    opts[key] = value;
  }
  if (!opts.dir || (opts.port === null && opts.unix === null)) usageExit(2, '--dir and --port (or --unix) are required');
  for (const k of ['port', 'adminPort', 'restPort']) {
    if (opts[k] === null) continue;
    if (!/^\d+$/.test(opts[k]) || Number(opts[k]) > 65535) usageExit(2, `bad port ${opts[k]}`);
    opts[k] = Number(opts[k]);
  }
  if (!fs.existsSync(opts.dir) || !fs.statSync(opts.dir).isDirectory()) usageExit(2, `${opts.dir} is not a directory`);
  if (!opts.tlsCert !== !opts.tlsKey) usageExit(2, '--tls-cert and --tls-key go together');
  if (opts.clientCa && !opts.tlsCert) usageExit(2, '--client-ca needs --tls-cert and --tls-key');
  return opts;
}

function usageExit(code, message) {
  if (message) process.stderr.write(`error: ${message}\n`);
  process.stderr.write(USAGE + '\n');
  process.exit(code);
}

const say = (line) => process.stdout.write(line + '\n');

function listenAdmin(server, host, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server.address().port));
  });
}

/* Plain text, TLS, or mTLS (a client certificate signed by --client-ca is required). */
function serverCredentials(opts) {
  if (!opts.tlsCert) return grpc.ServerCredentials.createInsecure();
  const clientCa = opts.clientCa ? fs.readFileSync(opts.clientCa) : null;
  return grpc.ServerCredentials.createSsl(clientCa,
    [{ cert_chain: fs.readFileSync(opts.tlsCert), private_key: fs.readFileSync(opts.tlsKey) }],
    clientCa !== null);
}

function bindGrpc(server, host, port, creds) {
  return new Promise((resolve, reject) => {
    server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, creds, (err, bound) => (err ? reject(err) : resolve(bound)));
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const { root, skipped } = loadEnvoyRoot();
  if (skipped.length) say(`protos: left out (their imports are not shipped): ${skipped.join(', ')}`);
  const adsPackage = grpc.loadPackageDefinition(loadAdsPackage());

  const events = new EventLog(say);
  const store = new ResourceStore(root, opts.dir, say);
  store.reload();
  store.watch();
  const ads = new Ads(store, events);

  const grpcServer = new grpc.Server();
  grpcServer.addService(adsPackage.envoy.service.discovery.v3.AggregatedDiscoveryService.service, ads.handlers());
  /* Each type's own service too, for clients whose sources are api_config_source streams. */
  for (const spec of RESOURCE_TYPES) {
    const [, pkg, service, plural] = TYPE_SERVICES[spec.short];
    const def = pkg.split('.').reduce((o, k) => o[k], adsPackage)[service];
    grpcServer.addService(def.service, ads.typeHandlers(spec, plural));
  }

  let admin = null;
  if (opts.adminPort !== null) {
    admin = createAdminServer({ store, ads, events });
    say(`admin ${await listenAdmin(admin, opts.host, opts.adminPort)}`);
  }
  let rest = null;
  if (opts.restPort !== null) {
    rest = createRestServer({ store, events });
    say(`rest ${await listenAdmin(rest, opts.host, opts.restPort)}`);
  }
  if (opts.unix !== null) {
    await new Promise((resolve, reject) => grpcServer.bindAsync(`unix:${opts.unix}`, serverCredentials(opts),
      (err) => (err ? reject(err) : resolve())));
    say(`listening unix:${opts.unix}`);
  } else {
    const port = await bindGrpc(grpcServer, opts.host, opts.port, serverCredentials(opts));
    say(`listening ${port}`);
  }

  const stop = () => {
    store.close();
    grpcServer.forceShutdown();
    if (admin) admin.close();
    if (rest) rest.close();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((e) => {
  process.stderr.write(`error: ${e.message}\n`);
  process.exit(1);
});
