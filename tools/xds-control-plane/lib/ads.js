'use strict';
/*
 * Aggregated Discovery Service: state-of-the-world (StreamAggregatedResources) and incremental
 * (DeltaAggregatedResources) streams, following the xDS protocol as Envoy's control planes
 * implement it (envoy/api/envoy/service/discovery/v3/discovery.proto and the xDS protocol doc):
 *
 *  SotW  - a request of a type with no response_nonce subscribes (again) and is answered at once;
 *          a request with the nonce of the last response of its type is an ACK or, with
 *          error_detail, a NACK; if it also names other resources they are sent; a request with
 *          an older nonce is stale and ignored. LDS/CDS with no names are wildcard; "*" is
 *          wildcard for any type.
 *  Delta - subscribe/unsubscribe lists change what a stream watches at any time; a response
 *          carries only resources whose version the client does not have, and names removed.
 *
 * Every response gets a fresh nonce; a type whose files change is pushed to every stream
 * subscribed to it.
 */
const grpc = require('@grpc/grpc-js');

const CONTROL_PLANE_ID = 'petrel-xds-control-plane';
/* Types a stream with no resource names subscribes to as a whole (legacy wildcard). */
const LEGACY_WILDCARD = new Set(['LDS', 'CDS']);

class Ads {
  constructor(store, events) {
    this.store = store;
    this.events = events;
    this.streams = new Map(); /* id -> stream */
    this.nextStreamId = 1;
    this.nextNonce = 1;
    store.on('change', (typeUrls) => this.push(typeUrls));
  }

  /* The handlers for grpc-js' addService. */
  handlers() {
    return {
      StreamAggregatedResources: (call) => this.open(call, 'sotw'),
      DeltaAggregatedResources: (call) => this.open(call, 'delta'),
    };
  }

  /*
   * The handlers of one type's own service (ClusterDiscoveryService, ...: Stream<X>s and
   * Delta<X>s), for clients whose source is an api_config_source rather than ADS: the same
   * protocol on a stream that carries that type only.
   */
  typeHandlers(spec, plural) {
    return {
      [`Stream${plural}`]: (call) => this.open(call, 'sotw', spec),
      [`Delta${plural}`]: (call) => this.open(call, 'delta', spec),
    };
  }

  open(call, protocol, only = null) {
    const stream = { id: this.nextStreamId++, protocol, call, node: null, subs: new Map(), closed: false, requests: 0, only };
    this.streams.set(stream.id, stream);
    /* service: "ADS", or the type's own service ("CDS", "EDS", "SDS", ...) */
    this.events.add('connect', stream.id, { protocol, service: only ? only.short : 'ADS', peer: call.getPeer() });
    const handle = protocol === 'sotw' ? (req) => this.onSotwRequest(stream, req) : (req) => this.onDeltaRequest(stream, req);
    const onRequest = !only ? handle : (req) => {
      /* A type's own stream: its requests may leave type_url out; another type is an error. */
      if (!req.type_url) req.type_url = only.typeUrl;
      if (req.type_url !== only.typeUrl) {
        this.events.add('request', stream.id, { type_url: req.type_url, note: `type not served on the ${only.short} stream; ignored` });
        return;
      }
      handle(req);
    };
    call.on('data', (req) => {
      /* A bug here must end this stream, not the server. */
      try {
        onRequest(req);
      } catch (e) {
        this.events.out(`[stream ${stream.id}] internal error: ${e.stack}`);
        this.close(stream, grpc.status.INTERNAL, `internal error: ${e.message}`);
      }
    });
    call.on('end', () => {
      this.forget(stream, 'client closed the stream');
      call.end();
    });
    call.on('cancelled', () => this.forget(stream, 'cancelled by the client'));
    call.on('close', () => this.forget(stream, 'closed'));
    call.on('error', () => {}); /* grpc-js turns it into the stream's status; logged by forget */
  }

  /* Ends a stream with a status (the admin API uses UNAVAILABLE to make clients reconnect). */
  close(stream, code, details) {
    if (stream.closed) return;
    this.forget(stream, `closed by the server: ${details}`);
    stream.call.emit('error', { code, details });
  }

  closeAll(code, details) {
    const open = [...this.streams.values()];
    for (const stream of open) this.close(stream, code, details);
    return open.length;
  }

  forget(stream, reason) {
    if (stream.closed) return;
    stream.closed = true;
    this.streams.delete(stream.id);
    this.events.add('disconnect', stream.id, { protocol: stream.protocol, service: stream.only ? stream.only.short : 'ADS', reason, node: stream.node || undefined });
  }

  /*
   * Node identity, recorded from the first request that carries one (Envoy sends it on the
   * first request of a stream only). Returns true for the stream's first request.
   */
  recordNode(stream, req) {
    const first = stream.requests++ === 0;
    if (stream.node || !req.node) return first;
    const n = req.node;
    stream.node = {
      id: n.id || '',
      cluster: n.cluster || '',
      user_agent_name: n.user_agent_name || '',
      user_agent_version: n.user_agent_version || undefined,
      user_agent_build_version: n.user_agent_build_version || undefined,
      metadata: n.metadata || undefined, /* a Struct: what a control plane such as istiod reads */
    };
    return first;
  }

  /* ---- state of the world ---- */

  onSotwRequest(stream, req) {
    const first = this.recordNode(stream, req);
    const typeUrl = req.type_url;
    const names = req.resource_names || [];
    const base = { type_url: typeUrl, version: req.version_info, nonce: req.response_nonce, resource_names: names, node: stream.node || undefined };
    const state = this.store.get(typeUrl);
    if (!state) {
      this.events.add('request', stream.id, Object.assign(base, { first: first || undefined, note: 'type not served; ignored' }));
      return;
    }
    let sub = stream.subs.get(typeUrl);
    if (!sub || !req.response_nonce) {
      /* A new subscription, or a client starting over on this type: answer with all it asks. */
      sub = { nonce: null, version: null, acked_version: null, nacked_version: null };
      setSotwNames(sub, state.spec, names);
      stream.subs.set(typeUrl, sub);
      this.events.add('request', stream.id, Object.assign(base, { first: first || undefined }));
      this.sendSotw(stream, typeUrl);
      return;
    }
    if (req.response_nonce !== sub.nonce) {
      this.events.add('request', stream.id, Object.assign(base, { note: `stale nonce (last sent ${sub.nonce}); ignored` }));
      return;
    }
    if (req.error_detail) {
      sub.nacked_version = sub.version;
      this.events.add('nack', stream.id, Object.assign(base, { error_detail: errorDetail(req.error_detail) }));
    } else {
      sub.acked_version = req.version_info;
      this.events.add('ack', stream.id, base);
    }
    if (setSotwNames(sub, state.spec, names)) this.sendSotw(stream, typeUrl);
  }

  sendSotw(stream, typeUrl) {
    const sub = stream.subs.get(typeUrl);
    const state = this.store.get(typeUrl);
    const names = sub.wildcard ? [...state.byName.keys()] : [...sub.names].filter((n) => state.byName.has(n));
    const nonce = String(this.nextNonce++);
    sub.nonce = nonce;
    sub.version = String(state.version);
    stream.call.write({
      version_info: sub.version,
      resources: names.map((n) => state.byName.get(n).any),
      type_url: typeUrl,
      nonce,
      control_plane: { identifier: CONTROL_PLANE_ID },
    });
    this.events.add('response', stream.id, { type_url: typeUrl, version: sub.version, nonce, resource_names: names, node: stream.node || undefined });
  }

  /* ---- delta ---- */

  onDeltaRequest(stream, req) {
    const first = this.recordNode(stream, req);
    const typeUrl = req.type_url;
    const subscribe = req.resource_names_subscribe || [];
    const unsubscribe = req.resource_names_unsubscribe || [];
    const base = {
      type_url: typeUrl, nonce: req.response_nonce, resource_names: subscribe,
      resource_names_unsubscribe: unsubscribe.length ? unsubscribe : undefined, node: stream.node || undefined,
    };
    const state = this.store.get(typeUrl);
    if (!state) {
      this.events.add('request', stream.id, Object.assign(base, { first: first || undefined, note: 'type not served; ignored' }));
      return;
    }
    let sub = stream.subs.get(typeUrl);
    const isNew = !sub;
    if (isNew) {
      /* initial_resource_versions: what the client already has (after a reconnect). */
      sub = { wildcard: false, names: new Set(), sent: new Map(Object.entries(req.initial_resource_versions || {})), nonce: null, version: null };
      sub.wildcard = LEGACY_WILDCARD.has(state.spec.short) && subscribe.length === 0;
      stream.subs.set(typeUrl, sub);
    }
    /* Acknowledgements are per response; subscription changes count whatever the nonce. */
    if (!isNew && req.response_nonce && req.response_nonce === sub.nonce) {
      if (req.error_detail) this.events.add('nack', stream.id, Object.assign(base, { version: sub.version, error_detail: errorDetail(req.error_detail) }));
      else this.events.add('ack', stream.id, Object.assign(base, { version: sub.version }));
    } else {
      const note = !isNew && req.response_nonce ? `stale nonce (last sent ${sub.nonce})` : undefined;
      this.events.add('request', stream.id, Object.assign(base, { first: first || undefined, note }));
    }
    const added = [];
    for (const name of subscribe) {
      if (name === '*') sub.wildcard = true;
      else if (!sub.names.has(name)) {
        sub.names.add(name);
        added.push(name);
      }
    }
    for (const name of unsubscribe) {
      if (name === '*') sub.wildcard = false;
      else sub.names.delete(name);
      sub.sent.delete(name); /* a later subscribe must get it again */
    }
    this.sendDelta(stream, typeUrl, added, isNew);
  }

  /*
   * Sends what the client lacks: resources in scope whose version differs from what it has,
   * and as removed the names it has that no longer exist or that it asked for and do not
   * exist (so it does not wait for them). `always` answers even with nothing to say.
   */
  sendDelta(stream, typeUrl, requested, always) {
    const sub = stream.subs.get(typeUrl);
    const state = this.store.get(typeUrl);
    const inScope = (name) => sub.wildcard || sub.names.has(name);
    const resources = [];
    for (const [name, r] of state.byName) {
      if (inScope(name) && sub.sent.get(name) !== r.version) resources.push({ name, version: r.version, resource: r.any });
    }
    const removed = new Set();
    for (const name of sub.sent.keys()) if (!state.byName.has(name)) removed.add(name);
    for (const name of requested) if (!state.byName.has(name) && !sub.sent.has(name)) removed.add(name);
    if (!resources.length && !removed.size && !always) return;
    for (const r of resources) sub.sent.set(r.name, r.version);
    for (const name of removed) sub.sent.delete(name);
    const nonce = String(this.nextNonce++);
    sub.nonce = nonce;
    sub.version = String(state.version);
    stream.call.write({
      system_version_info: sub.version,
      resources,
      type_url: typeUrl,
      removed_resources: [...removed],
      nonce,
      control_plane: { identifier: CONTROL_PLANE_ID },
    });
    this.events.add('response', stream.id, {
      type_url: typeUrl, version: sub.version, nonce, resource_names: resources.map((r) => r.name),
      removed_resources: [...removed], node: stream.node || undefined,
    });
  }

  /* ---- pushes ---- */

  push(typeUrls) {
    for (const stream of this.streams.values()) {
      for (const typeUrl of typeUrls) {
        if (!stream.subs.has(typeUrl)) continue;
        if (stream.protocol === 'sotw') this.sendSotw(stream, typeUrl);
        else this.sendDelta(stream, typeUrl, [], false);
      }
    }
  }

  /* Open streams and what each watches, for the admin API. */
  summary() {
    return [...this.streams.values()].map((s) => ({
      stream: s.id,
      protocol: s.protocol,
      service: s.only ? s.only.short : 'ADS',
      node: s.node,
      subscriptions: Object.fromEntries([...s.subs].map(([typeUrl, sub]) => [typeUrl, {
        wildcard: sub.wildcard,
        resource_names: [...sub.names],
        last_nonce: sub.nonce,
        last_version_sent: sub.version,
        acked_version: sub.acked_version,
        nacked_version: sub.nacked_version,
      }])),
    }));
  }
}

/*
 * SotW resource names: empty means wildcard for LDS/CDS only; "*" is wildcard for any type.
 * Returns true if the client now asks for something it did not (new names, or wildcard): the
 * request then needs an answer. Names only dropped need none; the client forgets them itself.
 */
function setSotwNames(sub, spec, names) {
  const wildcard = names.includes('*') || (names.length === 0 && LEGACY_WILDCARD.has(spec.short));
  const set = new Set(names.filter((n) => n !== '*'));
  const changed = sub.names === undefined || (wildcard && !sub.wildcard) || (!wildcard && [...set].some((n) => !sub.names.has(n)));
  sub.wildcard = wildcard;
  sub.names = set;
  return changed;
}

function errorDetail(status) {
  return { code: status.code || 0, message: status.message || '' };
}

module.exports = { Ads };
