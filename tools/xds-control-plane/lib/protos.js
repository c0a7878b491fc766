'use strict';
/*
 * Envoy's .proto files, as published by Envoy and shipped inside @grpc/grpc-js-xds (deps/).
 *
 * Two views of the same files are loaded:
 *  - the gRPC service (ADS) through @grpc/proto-loader, so grpc-js gets a normal service
 *    definition;
 *  - a protobufjs Root holding every v3 Envoy message, so that any resource or typed_config
 *    a user writes (an Any naming any Envoy type) can be converted from JSON and encoded.
 */
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const protobuf = require('protobufjs');
const protoLoader = require('@grpc/proto-loader');

const DEPS = path.join(path.dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
const INCLUDE_DIRS = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => path.join(DEPS, d));

/* Files loaded besides the Envoy v3 API files: the typed structs users may put in an Any. */
const EXTRA_FILES = ['xds/type/v3/typed_struct.proto', 'udpa/type/v1/typed_struct.proto'];

const TYPE_URL_PREFIX = 'type.googleapis.com/';

/* Loader options shared by both views: keepCase keeps Envoy's snake_case field names. */
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  arrays: true, /* empty repeated fields as [], so a response with no resources still has a list */
  oneofs: true,
  includeDirs: INCLUDE_DIRS,
};

function findInclude(target) {
  for (const dir of INCLUDE_DIRS) {
    const full = path.join(dir, target);
    if (fs.existsSync(full)) return full;
  }
  return null;
}

/* The file names (relative to an include dir) of every Envoy v3 API file. */
function listEnvoyV3Files() {
  const base = path.join(DEPS, 'envoy-api');
  const out = [];
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (/\/v3(alpha)?\/[^/]+\.proto$/.test(full)) out.push(path.relative(base, full));
    }
  };
  walk(path.join(base, 'envoy'));
  return out.sort();
}

/*
 * The package ships a subset of Envoy's dependencies (no opencensus, opentelemetry or
 * prometheus protos). A file that imports a missing one, directly or not, must be left out:
 * loading it would leave unresolvable types in the shared Root and break every later file.
 */
function makeAvailability() {
  const memo = new Map();
  const available = (file) => {
    if (memo.has(file)) return memo.get(file);
    memo.set(file, true); /* cycles (none expected) count as available */
    const full = findInclude(file);
    let ok = full !== null || file.startsWith('google/protobuf/');
    if (ok && full !== null) {
      const text = fs.readFileSync(full, 'utf8');
      for (const m of text.matchAll(/^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;/gm)) {
        if (!available(m[1])) {
          ok = false;
          break;
        }
      }
    }
    memo.set(file, ok);
    return ok;
  };
  return available;
}

/* protobufjs bundles the well-known types except descriptor.proto, which Envoy's options need. */
let commonAdded = false;
function addDescriptorProto() {
  if (commonAdded) return;
  const descriptor = require('protobufjs/google/protobuf/descriptor.json');
  protobuf.common('descriptor', descriptor.nested.google.nested.protobuf.nested);
  commonAdded = true;
}

/*
 * A protobufjs Root with every loadable Envoy v3 message; `skipped` lists files left out.
 * Parsing ~350 .proto files takes over a second, and tests start this server often, so the
 * parsed Root is cached as JSON (three times faster to load) under node_modules/.cache, keyed
 * by the package versions and the file list; a cache that cannot be written is only skipped.
 */
function loadEnvoyRoot() {
  const files = listEnvoyV3Files().concat(EXTRA_FILES);
  const cacheFile = cachePath(files);
  try {
    const cached = JSON.parse(fs.readFileSync(cacheFile, 'utf8'));
    const root = protobuf.Root.fromJSON(cached.root);
    root.resolveAll();
    return { root, skipped: cached.skipped };
  } catch (e) {
    /* no cache yet, or an unreadable one: parse the files */
  }
  const loaded = parseEnvoyRoot(files);
  try {
    fs.mkdirSync(path.dirname(cacheFile), { recursive: true });
    const tmp = `${cacheFile}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ skipped: loaded.skipped, root: loaded.root.toJSON() }));
    fs.renameSync(tmp, cacheFile); /* whole or not at all, if two servers start at once */
  } catch (e) {
    /* a read-only tree: no cache */
  }
  return loaded;
}

function cachePath(files) {
  const version = (pkg) => require(`${pkg}/package.json`).version;
  const key = crypto.createHash('sha256')
    .update([version('protobufjs'), version('@grpc/grpc-js-xds'), fs.readFileSync(__filename, 'utf8'), ...files].join('\n'))
    .digest('hex').slice(0, 16);
  return path.join(__dirname, '..', 'node_modules', '.cache', 'xds-control-plane', `envoy-root-${key}.json`);
}

function parseEnvoyRoot(files) {
  addDescriptorProto();
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    if (path.isAbsolute(target)) return target;
    return findInclude(target) || target;
  };
  const available = makeAvailability();
  const skipped = [];
  for (const file of files) {
    if (available(file)) root.loadSync(file, { keepCase: true });
    else skipped.push(file);
  }
  root.resolveAll();
  return { root, skipped };
}

/*
 * The non-aggregated discovery services, one per type (a client's api_config_source streams):
 * short type name -> [proto file, package path, service name].
 */
const TYPE_SERVICES = {
  LDS: ['envoy/service/listener/v3/lds.proto', 'envoy.service.listener.v3', 'ListenerDiscoveryService', 'Listeners'],
  CDS: ['envoy/service/cluster/v3/cds.proto', 'envoy.service.cluster.v3', 'ClusterDiscoveryService', 'Clusters'],
  RDS: ['envoy/service/route/v3/rds.proto', 'envoy.service.route.v3', 'RouteDiscoveryService', 'Routes'],
  EDS: ['envoy/service/endpoint/v3/eds.proto', 'envoy.service.endpoint.v3', 'EndpointDiscoveryService', 'Endpoints'],
  SDS: ['envoy/service/secret/v3/sds.proto', 'envoy.service.secret.v3', 'SecretDiscoveryService', 'Secrets'],
};

/* The grpc-js package definition of ADS (SotW and delta) and of the per-type services. */
function loadAdsPackage() {
  addDescriptorProto();
  return protoLoader.loadSync(['envoy/service/discovery/v3/ads.proto'].concat(Object.values(TYPE_SERVICES).map((s) => s[0])), LOADER_OPTIONS);
}

/* The message type an Any's type_url names, or null. */
function lookupTypeUrl(root, typeUrl) {
  const slash = typeUrl.lastIndexOf('/');
  const name = slash >= 0 ? typeUrl.slice(slash + 1) : typeUrl;
  try {
    return root.lookupType(name.startsWith('.') ? name : '.' + name);
  } catch (e) {
    return null;
  }
}

/* The xDS resource types served, by short name, with the field that names a resource. */
const RESOURCE_TYPES = [
  { file: 'listeners.json', short: 'LDS', message: 'envoy.config.listener.v3.Listener', nameField: 'name', wildcard: true },
  { file: 'clusters.json', short: 'CDS', message: 'envoy.config.cluster.v3.Cluster', nameField: 'name', wildcard: true },
  { file: 'routes.json', short: 'RDS', message: 'envoy.config.route.v3.RouteConfiguration', nameField: 'name', wildcard: false },
  { file: 'endpoints.json', short: 'EDS', message: 'envoy.config.endpoint.v3.ClusterLoadAssignment', nameField: 'cluster_name', wildcard: false },
  { file: 'secrets.json', short: 'SDS', message: 'envoy.extensions.transport_sockets.tls.v3.Secret', nameField: 'name', wildcard: false },
].map((t) => Object.assign(t, { typeUrl: TYPE_URL_PREFIX + t.message }));

module.exports = {
  DEPS,
  INCLUDE_DIRS,
  LOADER_OPTIONS,
  TYPE_URL_PREFIX,
  RESOURCE_TYPES,
  TYPE_SERVICES,
  loadEnvoyRoot,
  loadAdsPackage,
  lookupTypeUrl,
};
