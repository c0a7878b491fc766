'use strict';
/*
 * The resources served, read from a directory of JSON files (one per xDS type).
 *
 * A type's resources are replaced as a whole when its file changes, and get a new version
 * only when what would be sent changed (the encoded bytes), so touching a file or rewriting
 * it identically pushes nothing. A file that does not parse or convert is reported and the
 * type keeps its last good resources: a control plane must not push half a config.
 */
const crypto = require('crypto');
const EventEmitter = require('events');
const fs = require('fs');
const path = require('path');
const { RESOURCE_TYPES } = require('./protos');
const { resourceToAny } = require('./json2pb');

const POLL_MS = 100;
const WATCH_DEBOUNCE_MS = 10;

class ResourceStore extends EventEmitter {
  /* root: the protobufjs Root of Envoy's protos; log(line): where errors are reported. */
  constructor(root, dir, log) {
    super();
    this.root = root;
    this.dir = dir;
    this.log = log;
    /* typeUrl -> {version, digest, byName: Map(name -> {any, version}), text, error} */
    this.types = new Map();
    for (const t of RESOURCE_TYPES) {
      this.types.set(t.typeUrl, { spec: t, version: 0, digest: null, byName: new Map(), text: undefined, error: null });
    }
    this.watcher = null;
    this.pollTimer = null;
    this.debounceTimer = null;
  }

  /* Reads every file; emits 'change' with the list of type URLs whose version moved. */
  reload() {
    const changed = [];
    for (const [typeUrl, state] of this.types) {
      if (this.reloadType(state)) changed.push(typeUrl);
    }
    if (changed.length) this.emit('change', changed);
    return changed;
  }

  /* True if the type got a new version. */
  reloadType(state) {
    const file = path.join(this.dir, state.spec.file);
    let text;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      if (e.code !== 'ENOENT') {
        this.log(`error: ${file}: ${e.message}`);
        return false;
      }
      text = null; /* a missing file: no resources of this type */
    }
    if (text === state.text) return false; /* unchanged since the last read, good or bad */
    state.text = text;
    let parsed;
    try {
      parsed = this.parse(state.spec, text);
    } catch (e) {
      state.error = e.message;
      this.log(`error: ${file}: ${e.message} (keeping version ${state.version})`);
      return false;
    }
    state.error = null;
    const digest = digestOf(parsed);
    if (digest === state.digest) return false;
    state.version += 1;
    state.digest = digest;
    const version = String(state.version);
    for (const [name, { any, json }] of parsed) {
      const old = state.byName.get(name);
      /* A resource keeps its own version while its bytes stay the same (for delta xDS). */
      parsed.set(name, { any, json, version: old && old.any.value.equals(any.value) ? old.version : version });
    }
    state.byName = parsed;
    this.log(`loaded ${state.spec.file}: ${parsed.size} ${state.spec.short} resource(s), version ${version}`);
    return true;
  }

  /*
   * The file's text -> Map(name -> {any, json}): the Any sent over gRPC, and the resource as
   * written (its proto3 JSON, with "@type"), sent by REST; throws with the file and JSON path
   * on any error.
   */
  parse(spec, text) {
    const out = new Map();
    if (text === null) return out;
    let list;
    try {
      list = JSON.parse(text);
    } catch (e) {
      throw new Error(`not valid JSON: ${e.message}`);
    }
    if (!Array.isArray(list)) throw new Error(`expected a JSON list of ${spec.message} resources`);
    list.forEach((json, i) => {
      const where = `${spec.file}[${i}]`;
      const name = json && typeof json === 'object' ? json[spec.nameField] : undefined;
      if (typeof name !== 'string' || name === '') throw new Error(`${where}: "${spec.nameField}" must be a non-empty string`);
      if (out.has(name)) throw new Error(`${where}: duplicate ${spec.nameField} "${name}"`);
      out.set(name, { any: resourceToAny(this.root, spec.typeUrl, json, where), json: Object.assign({ '@type': spec.typeUrl }, json) });
    });
    return out;
  }

  /* Watches the directory: fs.watch for speed, a stat poll because fs.watch can miss renames. */
  watch() {
    const schedule = () => {
      clearTimeout(this.debounceTimer);
      this.debounceTimer = setTimeout(() => this.reload(), WATCH_DEBOUNCE_MS);
    };
    try {
      this.watcher = fs.watch(this.dir, schedule);
      this.watcher.on('error', (e) => this.log(`warning: watching ${this.dir}: ${e.message}; polling only`));
    } catch (e) {
      this.log(`warning: cannot watch ${this.dir}: ${e.message}; polling only`);
    }
    let last = this.statSignature();
    this.pollTimer = setInterval(() => {
      const now = this.statSignature();
      if (now !== last) {
        last = now;
        this.reload();
      }
    }, POLL_MS);
    this.pollTimer.unref();
  }

  /* Identity of every file's current version: inode (a rename gives a new one), size, mtime. */
  statSignature() {
    return RESOURCE_TYPES.map((t) => {
      try {
        const st = fs.statSync(path.join(this.dir, t.file));
        return `${st.ino}:${st.size}:${st.mtimeMs}`;
      } catch (e) {
        return '-';
      }
    }).join('|');
  }

  close() {
    if (this.watcher) this.watcher.close();
    clearInterval(this.pollTimer);
    clearTimeout(this.debounceTimer);
  }

  /* The type's state, or undefined for a type this server does not serve. */
  get(typeUrl) {
    return this.types.get(typeUrl);
  }

  /* Current versions and resource names per type, for the admin API. */
  summary() {
    const out = {};
    for (const [typeUrl, s] of this.types) {
      out[typeUrl] = { version: String(s.version), resources: [...s.byName.keys()], error: s.error };
    }
    return out;
  }
}

/* A digest of names and encoded bytes, in file order (order is part of what is sent). */
function digestOf(byName) {
  const h = crypto.createHash('sha256');
  for (const [name, { any }] of byName) {
    h.update(name).update('\0').update(any.value).update('\0');
  }
  return h.digest('hex');
}

module.exports = { ResourceStore };
