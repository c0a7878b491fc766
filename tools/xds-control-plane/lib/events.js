'use strict';
/*
 * The event log: what happened on every stream, in order. Tests read it through the admin
 * API (GET /log) instead of scraping stdout; people read the one-line form on stdout.
 */

const SHORT_TYPE = (typeUrl) => (typeUrl ? typeUrl.slice(typeUrl.lastIndexOf('.') + 1) : '');

class EventLog {
  constructor(out) {
    this.out = out; /* (line) => void */
    this.events = [];
  }

  /* Records {event, stream, ...fields}; fields left undefined are omitted from the JSON. */
  add(event, stream, fields) {
    const entry = Object.assign({ seq: this.events.length + 1, time: new Date().toISOString(), event, stream }, fields);
    for (const k of Object.keys(entry)) if (entry[k] === undefined) delete entry[k];
    this.events.push(entry);
    this.out(formatLine(entry));
    return entry;
  }

  list() {
    return this.events;
  }
}

/* "[stream 3] ack Cluster version=2 nonce=5 names=[a,b] ..." */
function formatLine(e) {
  const parts = [`[stream ${e.stream}]`, e.event];
  if (e.type_url) parts.push(SHORT_TYPE(e.type_url));
  if (e.version !== undefined) parts.push(`version=${JSON.stringify(e.version)}`);
  if (e.nonce !== undefined) parts.push(`nonce=${JSON.stringify(e.nonce)}`);
  if (e.resource_names) parts.push(`names=[${e.resource_names.join(',')}]`);
  if (e.removed_resources && e.removed_resources.length) parts.push(`removed=[${e.removed_resources.join(',')}]`);
  if (e.error_detail) parts.push(`error_detail=${JSON.stringify(e.error_detail)}`);
  if (e.event === 'connect' || e.event === 'disconnect') parts.push(`(${e.service ? e.service + ' ' : ''}${e.protocol || ''}${e.reason ? ': ' + e.reason : ''})`);
  if (e.node && e.event === 'request' && e.first) parts.push(`node=${JSON.stringify(e.node)}`);
  if (e.note) parts.push(`(${e.note})`);
  return parts.join(' ');
}

module.exports = { EventLog };
