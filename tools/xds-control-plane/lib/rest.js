'use strict';
/*
 * REST-JSON xDS: a client (api_type REST) polls with a DiscoveryRequest as JSON, POSTed to
 * /v3/discovery:listeners, :clusters, :routes, :endpoints or :secrets, every refresh_delay.
 *
 *  - The answer is 200 with a DiscoveryResponse as JSON (version_info, the resources the
 *    request names, or all of them for LDS and CDS when it names none, each with "@type"),
 *    or 304 when the request's version_info is the current version and it asks for no name
 *    it was not answered for before (nothing changed for it).
 *  - A request carrying the version last sent to that node, without error_detail, is an ACK;
 *    one with error_detail is a NACK (logged with the error). REST has no streams: events
 *    carry "stream": 0 and "protocol": "rest", and the node identifies the client.
 */
const http = require('http');
const { RESOURCE_TYPES } = require('./protos');

const CONTROL_PLANE_ID = 'petrel-xds-control-plane';
const BY_PATH = {
  '/v3/discovery:listeners': 'LDS',
  '/v3/discovery:clusters': 'CDS',
  '/v3/discovery:routes': 'RDS',
  '/v3/discovery:endpoints': 'EDS',
  '/v3/discovery:secrets': 'SDS',
};

function createRestServer({ store, events }) {
  /* node id + type URL -> {version, names} last answered with a 200 */
  const answered = new Map();
  const specs = new Map(RESOURCE_TYPES.map((t) => [t.short, t]));

  const handle = (req, body) => {
    const short = BY_PATH[req.url.split('?')[0]];
    if (req.method !== 'POST' || !short) return [404, { error: 'POST /v3/discovery:<listeners|clusters|routes|endpoints|secrets>' }];
    let dr;
    try {
      dr = JSON.parse(body);
    } catch (e) {
      return [400, { error: `not JSON: ${e.message}` }];
    }
    const spec = specs.get(short);
    const typeUrl = dr.type_url || dr.typeUrl || spec.typeUrl;
    if (typeUrl !== spec.typeUrl) return [400, { error: `type_url ${typeUrl} is not ${spec.typeUrl}` }];
    const node = dr.node || {};
    const who = { id: node.id || '', cluster: node.cluster || '', user_agent_name: node.user_agent_name || node.userAgentName || '' };
    const names = dr.resource_names || dr.resourceNames || [];
    const version = dr.version_info || dr.versionInfo || '';
    const error = dr.error_detail || dr.errorDetail;
    const key = `${who.id}\0${typeUrl}`;
    const last = answered.get(key);
    const base = { type_url: typeUrl, version, resource_names: names, node: who, protocol: 'rest' };
    if (error) {
      events.add('nack', 0, Object.assign(base, { error_detail: { code: error.code || 0, message: error.message || '' } }));
    } else if (last && version === last.version && !last.acked) {
      last.acked = true;
      events.add('ack', 0, base);
    } else {
      events.add('request', 0, base);
    }
    const state = store.get(typeUrl);
    const current = String(state.version);
    const wildcard = names.length === 0 ? spec.wildcard : names.includes('*');
    const wanted = wildcard ? [...state.byName.keys()] : names.filter((n) => state.byName.has(n));
    const newNames = last === undefined || names.some((n) => !last.names.includes(n));
    if (version === current && !error && !newNames) {
      events.add('response', 0, { type_url: typeUrl, version: current, status: 304, protocol: 'rest', node: who });
      return [304, null];
    }
    answered.set(key, { version: current, names: [...names], acked: false });
    events.add('response', 0, { type_url: typeUrl, version: current, resource_names: wanted, status: 200, protocol: 'rest', node: who });
    return [200, {
      version_info: current,
      resources: wanted.map((n) => state.byName.get(n).json),
      type_url: typeUrl,
      control_plane: { identifier: CONTROL_PLANE_ID },
    }];
  };

  return http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let status;
      let out;
      try {
        [status, out] = handle(req, Buffer.concat(chunks).toString('utf8'));
      } catch (e) {
        [status, out] = [500, { error: e.message }];
      }
      if (status === 304) {
        res.writeHead(304);
        res.end();
        return;
      }
      const text = JSON.stringify(out);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  });
}

module.exports = { createRestServer };
