#!/usr/bin/env node
/* Checks petrel's protobuf schema against Envoy's real .proto files.
 *
 *   node check_schema.js DUMP_SCHEMA_EXE WORK_DIR
 *
 * The .proto files are those @grpc/grpc-js-xds ships (Envoy's API, xds, googleapis,
 * protoc-gen-validate), parsed by protobufjs: both pinned by package-lock.json beside this
 * file and installed with `npm ci` into WORK_DIR (the build tree) on first use. Without npm
 * or without the registry the check is skipped (exit 77), saying why.
 *
 * For every message of the schema (as DUMP_SCHEMA_EXE prints it) the .proto files must have
 * the message; each field must be there with the same number, type (scalar, or the same
 * message or enum), label (repeated, map with the same key and value types, proto3
 * optional) and oneof; and the message must have no field the schema lacks. Every enum
 * value must be the .proto's. And proxy/proto_schema_tables.c must be what
 * scripts/gen_proto_schema.py writes from the same files. Any difference fails the test,
 * listing every one found.
 *
 * The one exception: scripts/proto_schema_additions.txt, the fields, enum values, messages
 * and enums of a newer Envoy API that the pinned files lack. A field or value of the schema
 * that the .proto files do not have must be listed there, with the same number, type, label
 * and oneof; a message or enum they do not have must be listed as new, with exactly its
 * fields or values. And every addition must be in the schema and absent from the .proto
 * files: a package bump that brings one in fails until the list is pruned. */
'use strict';

const fs = require('fs');
const path = require('path');
const child = require('child_process');

const SKIP = 77;
const [dumpExe, workArg] = process.argv.slice(2);
const workDir = workArg && path.resolve(workArg);
if (!dumpExe || !workArg) {
  console.error('usage: check_schema.js DUMP_SCHEMA_EXE WORK_DIR');
  process.exit(2);
}

/* ---- the pinned packages ---- */

function install() {
  const here = __dirname;
  const lock = fs.readFileSync(path.join(here, 'package-lock.json'));
  const stamp = path.join(workDir, 'node_modules', '.petrel-lock');
  if (fs.existsSync(stamp) && fs.readFileSync(stamp).equals(lock)) return;
  fs.mkdirSync(workDir, { recursive: true });
  for (const f of ['package.json', 'package-lock.json'])
    fs.copyFileSync(path.join(here, f), path.join(workDir, f));
  const r = child.spawnSync('npm', ['ci', '--ignore-scripts', '--no-audit', '--no-fund'], {
    cwd: workDir,
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 300000,
    encoding: 'utf8',
  });
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : (r.stderr || '').trim().split('\n').slice(-3).join(' / ');
    console.log(`SKIP: cannot install the pinned .proto files with npm ci (${why})`);
    process.exit(SKIP);
  }
  fs.writeFileSync(stamp, lock);
}

install();
const nm = path.join(workDir, 'node_modules');
const protobuf = require(path.join(nm, 'protobufjs'));
const deps = path.join(nm, '@grpc', 'grpc-js-xds', 'deps');
const includeDirs = [
  path.join(deps, 'envoy-api'),
  path.join(deps, 'xds'),
  path.join(deps, 'googleapis'),
  path.join(deps, 'protoc-gen-validate'),
  path.join(nm, 'protobufjs'), /* google/protobuf/descriptor.proto */
];

/* ---- petrel's schema ---- */

const dump = child.execFileSync(dumpExe, { encoding: 'utf8', maxBuffer: 64 << 20 });
const messages = new Map(); /* name -> {kind, fields: [...]} */
const enums = new Map(); /* name -> Map(value -> number) */
for (const line of dump.split('\n')) {
  const w = line.split(' ');
  if (w[0] === 'M') messages.set(w[1], messages.get(w[1]) || { kind: w[2], fields: [] });
  else if (w[0] === 'F')
    messages.get(w[1]).fields.push({
      name: w[2], number: Number(w[3]), type: w[4], label: w[5], ref: w[6], oneof: w[7],
    });
  else if (w[0] === 'E') {
    if (!enums.has(w[1])) enums.set(w[1], new Map());
    enums.get(w[1]).set(w[2], Number(w[3]));
  }
}

/* ---- the additions (scripts/proto_schema_additions.txt; its syntax: gen_proto_schema.py) ---- */

const top = path.join(__dirname, '..', '..');
const additionsFile = path.join(top, 'scripts', 'proto_schema_additions.txt');
const added = {
  fields: new Map() /* message -> Map(field -> {number, label, key, type, oneof}) */,
  values: new Map() /* enum -> Map(value -> number) */,
  newMessages: new Map() /* message -> Map(field -> ...) */,
  newEnums: new Map() /* enum -> Map(value -> number) */,
};
const fieldLine = /^(?:oneof (\w+) )?(?:(repeated|optional) )?(?:map<(\w+), ([\w.]+)>|([\w.]+)) (\w+) = (\d+);$/;
const valueLine = /^(\w+) = (-?\d+);$/;
const blockLine = /^(new )?(message|enum) ([\w.]+)$/;
{
  let block = null;
  let isEnum = false;
  fs.readFileSync(additionsFile, 'utf8')
    .split('\n')
    .forEach((raw, i) => {
      const text = raw.trim();
      const where = `scripts/proto_schema_additions.txt:${i + 1}`;
      if (text === '' || text.startsWith('#')) return;
      let m = blockLine.exec(text);
      if (m) {
        isEnum = m[2] === 'enum';
        const table = m[1] ? (isEnum ? added.newEnums : added.newMessages) : isEnum ? added.values : added.fields;
        if (table.has(m[3])) throw new Error(`${where}: ${m[3]} listed twice`);
        block = new Map();
        table.set(m[3], block);
        return;
      }
      m = block && (isEnum ? valueLine : fieldLine).exec(text);
      if (!m) throw new Error(`${where}: cannot read ${JSON.stringify(text)}`);
      if (isEnum) block.set(m[1], Number(m[2]));
      else
        block.set(m[6], {
          number: Number(m[7]),
          label: m[3] ? 'map' : m[2] || 'single',
          key: m[3] || null,
          type: m[3] ? m[4] : m[5],
          oneof: m[1] || '-',
        });
    });
}
const nadditions =
  [...added.fields.values(), ...added.newMessages.values(), ...added.values.values(), ...added.newEnums.values()]
    .map((b) => b.size)
    .reduce((x, y) => x + y, 0);

/* ---- Envoy's files: every .proto of each message's package ---- */

/* The package of a full name: its leading lower-case components (Envoy's convention; the
 * .proto files' own `package` statements decide in the end, through protobufjs). */
function packageOf(name) {
  const parts = name.split('.');
  let n = 0;
  while (n < parts.length && /^[a-z0-9_]+$/.test(parts[n])) n++;
  return parts.slice(0, n).join('.');
}

const files = new Set();
for (const name of messages.keys()) {
  const dir = packageOf(name).split('.').join('/');
  if (dir.startsWith('google/protobuf')) continue; /* protobufjs's own definitions */
  for (const inc of includeDirs) {
    const d = path.join(inc, dir);
    if (!fs.existsSync(d)) continue;
    for (const f of fs.readdirSync(d)) if (f.endsWith('.proto')) files.add(path.join(dir, f));
  }
}
for (const wkt of ['any', 'duration', 'empty', 'field_mask', 'struct', 'timestamp', 'wrappers'])
  files.add(`google/protobuf/${wkt}.proto`);

/* Each file parsed into one root, its imports after it. A file the package does not ship
 * (opencensus, imported by tracers petrel does not read) is left out: a field that needs it
 * fails to resolve below, if the schema has one. google/protobuf files are protobufjs's own
 * definitions. */
const root = new protobuf.Root();
const queue = [...files];
const loaded = new Set();
while (queue.length > 0) {
  const name = queue.shift();
  if (loaded.has(name)) continue;
  loaded.add(name);
  const bundled = protobuf.common.get(name);
  if (bundled) {
    root.addJSON(bundled.nested);
    continue;
  }
  const dir = includeDirs.find((inc) => fs.existsSync(path.join(inc, name)));
  if (!dir) continue;
  const parsed = protobuf.parse(fs.readFileSync(path.join(dir, name), 'utf8'), root, { keepCase: true });
  queue.push(...(parsed.imports || []), ...(parsed.weakImports || []));
}

/* ---- the comparison ---- */

const errors = [];
const bad = (what) => errors.push(what);

function scalarOrRef(pf) {
  try {
    pf.resolve();
  } catch (e) {
    return { type: 'unresolved', ref: pf.type };
  }
  if (pf.resolvedType) return { type: pf.resolvedType instanceof protobuf.Enum ? 'enum' : 'message', ref: pf.resolvedType.fullName.slice(1) };
  return { type: pf.type, ref: '-' };
}

/* An addition's type as the dump spells it: a scalar, or a message or enum of the .proto
 * files or of the additions. */
const SCALARS = new Set(['double', 'float', 'int64', 'uint64', 'int32', 'fixed64', 'fixed32', 'bool', 'string',
  'bytes', 'uint32', 'sfixed32', 'sfixed64', 'sint32', 'sint64']);
function lookup(kind, name) {
  try {
    return kind === 'message' ? root.lookupType(name) : root.lookupEnum(name);
  } catch (e) {
    return null;
  }
}
function addedType(name) {
  if (SCALARS.has(name)) return { type: name, ref: '-' };
  if (added.newMessages.has(name) || lookup('message', name)) return { type: 'message', ref: name };
  if (added.newEnums.has(name) || lookup('enum', name)) return { type: 'enum', ref: name };
  return { type: 'unresolved', ref: name };
}

/* A field of the schema against the additions' line for it. */
function compareAdded(where, f, a) {
  if (a.number !== f.number) bad(`${where}: number ${f.number}, the additions say ${a.number}`);
  if (a.label !== f.label) bad(`${where}: ${f.label}, the additions say ${a.label}`);
  if (a.oneof !== f.oneof) bad(`${where}: oneof ${f.oneof}, the additions say ${a.oneof}`);
  if (a.label === 'map') {
    const entry = messages.get(f.ref);
    const key = entry && entry.fields.find((x) => x.number === 1);
    const value = entry && entry.fields.find((x) => x.number === 2);
    const av = addedType(a.type);
    if (!key || !value) bad(`${where}: map entry ${f.ref} lacks key or value`);
    else if (key.type !== a.key || value.type !== av.type || value.ref !== av.ref)
      bad(`${where}: map<${key.type}, ${value.ref}>, the additions say map<${a.key}, ${a.type}>`);
  } else {
    const at = addedType(a.type);
    if (f.type !== at.type || f.ref !== at.ref) bad(`${where}: ${f.type} ${f.ref}, the additions say ${at.type} ${at.ref}`);
  }
}

let nfields = 0;
const usedAdditions = new Set(); /* "message.field" and "enum.value" of the additions found in the schema */
for (const [name, m] of messages) {
  if (m.kind === 'map_entry') continue; /* checked through the map field that uses it */
  const pm = lookup('message', name);
  if (added.newMessages.has(name)) {
    /* A message the pinned files lack: exactly its fields in the additions. */
    if (pm) bad(`${name}: in the .proto files, listed as new in the additions: prune it`);
    const af = added.newMessages.get(name);
    for (const f of m.fields) {
      nfields++;
      const a = af.get(f.name);
      if (!a) bad(`${name}.${f.name}: not in the additions' new message`);
      else compareAdded(`${name}.${f.name}`, f, a);
    }
    for (const n of af.keys())
      if (!m.fields.some((f) => f.name === n)) bad(`${name}.${n}: in the additions, not in the schema`);
    usedAdditions.add(name);
    continue;
  }
  if (!pm) {
    bad(`${name}: no such message in the .proto files`);
    continue;
  }
  const af = added.fields.get(name) || new Map();
  if (added.fields.has(name)) usedAdditions.add(name);
  /* protobufjs's built-in google.protobuf definitions spell some fields in lowerCamelCase
   * (Value.nullValue); the .proto files, and petrel, use snake_case. */
  const camel = (s) => s.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
  const pfield = (n) => pm.fields[n] || (name.startsWith('google.protobuf.') ? pm.fields[camel(n)] : undefined);
  const seen = new Set();
  for (const f of m.fields) {
    nfields++;
    const where = `${name}.${f.name}`;
    const pf = pfield(f.name);
    if (!pf) {
      /* Newer than the pinned files: the additions must list it. */
      if (af.has(f.name)) {
        usedAdditions.add(where);
        compareAdded(where, f, af.get(f.name));
        if (pm.fieldsById[f.number]) bad(`${where}: number ${f.number} is ${pm.fieldsById[f.number].name}'s in the .proto files`);
      } else bad(`${where}: no such field in the .proto files (nor in the additions)`);
      continue;
    }
    if (af.has(f.name)) {
      usedAdditions.add(where);
      bad(`${where}: in the .proto files now: prune it from the additions`);
    }
    seen.add(pf.name);
    if (pf.id !== f.number) bad(`${where}: number ${f.number}, the .proto says ${pf.id}`);
    if (pf.map) {
      if (f.label !== 'map') {
        bad(`${where}: ${f.label}, the .proto says map`);
        continue;
      }
      const entry = messages.get(f.ref);
      const key = entry && entry.fields.find((x) => x.number === 1);
      const value = entry && entry.fields.find((x) => x.number === 2);
      if (!key || !value) {
        bad(`${where}: map entry ${f.ref} lacks key or value`);
        continue;
      }
      if (key.type !== pf.keyType) bad(`${where}: map key ${key.type}, the .proto says ${pf.keyType}`);
      const pv = scalarOrRef(pf);
      if (value.type !== pv.type || value.ref !== pv.ref)
        bad(`${where}: map value ${value.type} ${value.ref}, the .proto says ${pv.type} ${pv.ref}`);
    } else {
      const label = pf.repeated ? 'repeated' : pf.options && pf.options.proto3_optional ? 'optional' : 'single';
      if (label !== f.label) bad(`${where}: ${f.label}, the .proto says ${label}`);
      const pv = scalarOrRef(pf);
      if (f.type !== pv.type || f.ref !== pv.ref)
        bad(`${where}: ${f.type} ${f.ref}, the .proto says ${pv.type} ${pv.ref}`);
      const oneof = pf.partOf && !(pf.options && pf.options.proto3_optional) ? pf.partOf.name : '-';
      if (oneof !== f.oneof) bad(`${where}: oneof ${f.oneof}, the .proto says ${oneof}`);
    }
  }
  for (const pf of pm.fieldsArray)
    if (!seen.has(pf.name)) bad(`${name}.${pf.name} (${pf.id}): in the .proto files, not in the schema`);
}

let nvalues = 0;
for (const [name, values] of enums) {
  if (added.newEnums.has(name)) {
    /* An enum the pinned files lack: exactly its values in the additions. */
    usedAdditions.add(name);
    if (lookup('enum', name)) bad(`${name}: in the .proto files, listed as new in the additions: prune it`);
    const av = added.newEnums.get(name);
    for (const [v, n] of values) {
      nvalues++;
      if (av.get(v) !== n) bad(`${name}.${v}: ${n}, the additions say ${av.has(v) ? av.get(v) : 'nothing'}`);
    }
    for (const v of av.keys()) if (!values.has(v)) bad(`${name}.${v}: in the additions, not in the schema`);
    continue;
  }
  const pe = lookup('enum', name);
  if (!pe) {
    bad(`${name}: no such enum in the .proto files`);
    continue;
  }
  const av = added.values.get(name) || new Map();
  if (added.values.has(name)) usedAdditions.add(name);
  for (const [v, n] of values) {
    nvalues++;
    if (v in pe.values) {
      if (av.has(v)) {
        usedAdditions.add(`${name}.${v}`);
        bad(`${name}.${v}: in the .proto files now: prune it from the additions`);
      }
      if (pe.values[v] !== n) bad(`${name}.${v}: ${n}, the .proto says ${pe.values[v]}`);
    } else if (av.has(v)) {
      usedAdditions.add(`${name}.${v}`);
      if (av.get(v) !== n) bad(`${name}.${v}: ${n}, the additions say ${av.get(v)}`);
    } else bad(`${name}.${v}: no such value in the .proto files (nor in the additions)`);
  }
  for (const v of Object.keys(pe.values)) if (!values.has(v)) bad(`${name}.${v}: in the .proto files, not in the schema`);
}

/* Every addition is in the schema (else it is stale, or its message left the schema). */
for (const [name, block] of added.fields)
  for (const f of block.keys()) if (!usedAdditions.has(`${name}.${f}`)) bad(`additions: ${name}.${f} is not in the schema`);
for (const [name, block] of added.values)
  for (const v of block.keys()) if (!usedAdditions.has(`${name}.${v}`)) bad(`additions: ${name}.${v} is not in the schema`);
for (const name of [...added.newMessages.keys(), ...added.newEnums.keys()])
  if (!usedAdditions.has(name)) bad(`additions: new ${name} is not in the schema`);

/* The committed tables are what the generator writes from these files (a root added to
 * the script, or the package bumped, without regenerating shows here). */
const gen = child.spawnSync('python3', [path.join(top, 'scripts', 'gen_proto_schema.py'), '--additions', additionsFile, ...includeDirs.slice(0, 4)], {
  encoding: 'utf8',
  maxBuffer: 64 << 20,
});
if (gen.error) console.log(`note: python3 not found (${gen.error.message}): the generated tables were not compared`);
else if (gen.status !== 0) bad(`scripts/gen_proto_schema.py failed: ${(gen.stderr || '').trim()}`);
else if (gen.stdout !== fs.readFileSync(path.join(top, 'proxy', 'proto_schema_tables.c'), 'utf8'))
  bad('proxy/proto_schema_tables.c is not what scripts/gen_proto_schema.py writes from these files and the additions: regenerate it (docs/protobuf.md)');

if (errors.length > 0) {
  for (const e of errors) console.log(e);
  console.log(`FAIL: ${errors.length} difference(s) between the schema and the .proto files`);
  process.exit(1);
}
console.log(
  `ok: ${messages.size} messages, ${nfields} fields, ${enums.size} enums (${nvalues} values) match ${files.size} .proto files` +
    ` and ${nadditions} additions (fields and values)`,
);
