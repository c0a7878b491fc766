'use strict';
/*
 * proto3 JSON (as Envoy users write it) -> protobuf.
 *
 * protobufjs' Type.fromObject does not implement the proto3 JSON mapping for well-known types
 * (Duration "1.5s", wrappers written as plain values, Struct/Value, Any with "@type"), so this
 * walks the protobufjs Type itself and builds an object whose every value is already in the
 * form fromObject takes verbatim. Anything it does not understand (an unknown field, an unknown
 * Any type, a value of the wrong kind) is an error naming the JSON path, never dropped.
 */
const protobuf = require('protobufjs');
const { lookupTypeUrl } = require('./protos');

class ConvertError extends Error {
  constructor(where, message) {
    super(`${where}: ${message}`);
    this.name = 'ConvertError';
  }
}

const WRAPPERS = new Set([
  '.google.protobuf.DoubleValue', '.google.protobuf.FloatValue', '.google.protobuf.Int64Value',
  '.google.protobuf.UInt64Value', '.google.protobuf.Int32Value', '.google.protobuf.UInt32Value',
  '.google.protobuf.BoolValue', '.google.protobuf.StringValue', '.google.protobuf.BytesValue',
]);

/* Types whose JSON form is not an object of fields; inside an Any they sit under "value". */
const SPECIAL_JSON = new Set([
  ...WRAPPERS, '.google.protobuf.Duration', '.google.protobuf.Timestamp', '.google.protobuf.Struct',
  '.google.protobuf.Value', '.google.protobuf.ListValue', '.google.protobuf.FieldMask',
]);

const INT32_RANGE = {
  int32: [-2147483648, 2147483647], sint32: [-2147483648, 2147483647], sfixed32: [-2147483648, 2147483647],
  uint32: [0, 4294967295], fixed32: [0, 4294967295],
};
const INT64_TYPES = new Set(['int64', 'sint64', 'sfixed64', 'uint64', 'fixed64']);

const isPlainObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const describe = (v) => (v === null ? 'null' : Array.isArray(v) ? 'a list' : typeof v === 'object' ? 'an object' : JSON.stringify(v));
const snakeToCamel = (s) => s.replace(/_([a-z0-9])/g, (m, c) => c.toUpperCase());
const camelToSnake = (s) => s.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());

/* Field lookup by proto name or by its lowerCamelCase JSON name; built once per type. */
const fieldMaps = new WeakMap();
function fieldByJsonKey(type, key) {
  let map = fieldMaps.get(type);
  if (!map) {
    map = new Map();
    for (const field of type.fieldsArray) {
      map.set(field.name, field);
      map.set(snakeToCamel(field.name), field);
    }
    fieldMaps.set(type, map);
  }
  return map.get(key);
}

/* Entry point: the object for type.fromObject; `where` names the value in error messages. */
function convertMessage(type, json, where) {
  const full = type.fullName;
  if (full === '.google.protobuf.Any') return convertAny(type.root, json, where);
  if (full === '.google.protobuf.Duration') return withoutZeros(convertDuration(json, where));
  if (full === '.google.protobuf.Timestamp') return withoutZeros(convertTimestamp(json, where));
  if (full === '.google.protobuf.Struct') return convertStruct(json, where);
  if (full === '.google.protobuf.Value') return convertValue(json, where);
  if (full === '.google.protobuf.ListValue') return convertListValue(json, where);
  if (full === '.google.protobuf.FieldMask') return convertFieldMask(json, where);
  if (WRAPPERS.has(full)) return withoutZeros({ value: convertScalar(type.fields.value, json, where) });
  return convertFields(type, json, where);
}

/* An ordinary message: every key must be a field; at most one member of each oneof. */
function convertFields(type, json, where) {
  if (!isPlainObject(json)) throw new ConvertError(where, `expected an object for ${type.fullName.slice(1)}, got ${describe(json)}`);
  const out = {};
  const oneofSeen = new Map();
  for (const [key, value] of Object.entries(json)) {
    const at = `${where}.${key}`;
    const field = fieldByJsonKey(type, key);
    if (!field) throw new ConvertError(at, `unknown field "${key}" in ${type.fullName.slice(1)}`);
    if (Object.prototype.hasOwnProperty.call(out, field.name)) throw new ConvertError(at, `field "${field.name}" given twice`);
    /* proto3 JSON: null means "not set", except for google.protobuf.Value where it is a value. */
    if (value === null && !(field.resolvedType && field.resolvedType.fullName === '.google.protobuf.Value' && !field.repeated && !field.map)) continue;
    if (field.partOf) {
      const other = oneofSeen.get(field.partOf.name);
      if (other) throw new ConvertError(at, `"${field.name}" and "${other}" are both set but belong to oneof "${field.partOf.name}"`);
      oneofSeen.set(field.partOf.name, field.name);
    }
    const converted = convertField(field, value, at);
    if (!isImplicitZero(field, converted)) out[field.name] = converted;
  }
  return out;
}

/*
 * proto3 does not put a zero scalar of a field without presence on the wire (Go's and C++'s
 * encoders omit it); protobufjs would write it because it was set. Leaving it out keeps the
 * bytes the same as other control planes send. Oneof members and `optional` fields keep theirs.
 */
function isImplicitZero(field, value) {
  if (field.repeated || field.map || field.hasPresence) return false;
  if (field.resolvedType instanceof protobuf.Type) return false;
  return isZeroScalar(value);
}

function isZeroScalar(value) {
  if (typeof value === 'number') return Object.is(value, 0);
  if (value === false || value === '') return true;
  if (Buffer.isBuffer(value)) return value.length === 0;
  if (protobuf.util.Long && value instanceof protobuf.util.Long) return value.isZero();
  return false;
}

/* Drops the zero members of a well-known type built here (Duration, wrappers, ...). */
function withoutZeros(object) {
  for (const k of Object.keys(object)) if (isZeroScalar(object[k])) delete object[k];
  return object;
}

function convertField(field, value, where) {
  if (field.map) {
    if (!isPlainObject(value)) throw new ConvertError(where, `expected an object (map), got ${describe(value)}`);
    const out = {};
    for (const [k, v] of Object.entries(value)) out[convertMapKey(field.keyType, k, `${where}["${k}"]`)] = convertSingle(field, v, `${where}["${k}"]`);
    return out;
  }
  if (field.repeated) {
    if (!Array.isArray(value)) throw new ConvertError(where, `expected a list, got ${describe(value)}`);
    return value.map((v, i) => convertSingle(field, v, `${where}[${i}]`));
  }
  return convertSingle(field, value, where);
}

function convertMapKey(keyType, key, where) {
  if (keyType === 'string') return key;
  if (keyType === 'bool') {
    if (key !== 'true' && key !== 'false') throw new ConvertError(where, `map key must be "true" or "false"`);
    return key;
  }
  convertScalarType(keyType, key, where); /* validates the integer */
  return key;
}

/* One value of a field (an element, for a repeated field). */
function convertSingle(field, value, where) {
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Type) return convertMessage(resolved, value, where);
  if (resolved instanceof protobuf.Enum) return convertEnum(resolved, value, where);
  return convertScalar(field, value, where);
}

/* Enums by name (the JSON form) or by number. */
function convertEnum(enumType, value, where) {
  if (typeof value === 'string') {
    if (!Object.prototype.hasOwnProperty.call(enumType.values, value)) {
      throw new ConvertError(where, `"${value}" is not a value of ${enumType.fullName.slice(1)} (one of ${Object.keys(enumType.values).join(', ')})`);
    }
    return enumType.values[value];
  }
  if (Number.isInteger(value)) return value; /* proto3 enums are open: unknown numbers are kept */
  throw new ConvertError(where, `expected an enum name of ${enumType.fullName.slice(1)}, got ${describe(value)}`);
}

function convertScalar(field, value, where) {
  return convertScalarType(field.type, value, where);
}

function convertScalarType(type, value, where) {
  switch (type) {
    case 'string':
      if (typeof value !== 'string') throw new ConvertError(where, `expected a string, got ${describe(value)}`);
      return value;
    case 'bool':
      if (typeof value !== 'boolean') throw new ConvertError(where, `expected true or false, got ${describe(value)}`);
      return value;
    case 'bytes':
      return convertBytes(value, where);
    case 'double':
    case 'float':
      return convertFloat(value, where);
    default:
      if (INT32_RANGE[type]) return convertInt32(type, value, where);
      if (INT64_TYPES.has(type)) return convertInt64(type, value, where);
      throw new ConvertError(where, `unsupported scalar type ${type}`);
  }
}

function convertFloat(value, where) {
  if (typeof value === 'number') return value;
  if (value === 'NaN') return NaN;
  if (value === 'Infinity') return Infinity;
  if (value === '-Infinity') return -Infinity;
  if (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value))) return Number(value);
  throw new ConvertError(where, `expected a number, got ${describe(value)}`);
}

function convertInt32(type, value, where) {
  const n = typeof value === 'string' && /^-?\d+$/.test(value) ? Number(value) : value;
  if (!Number.isInteger(n)) throw new ConvertError(where, `expected an integer (${type}), got ${describe(value)}`);
  const [lo, hi] = INT32_RANGE[type];
  if (n < lo || n > hi) throw new ConvertError(where, `${n} is out of range for ${type}`);
  return n;
}

/* 64-bit integers as numbers or decimal strings; kept as strings so no precision is lost. */
function convertInt64(type, value, where) {
  let s;
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new ConvertError(where, `expected an integer (${type}), got ${describe(value)}; write large values as strings`);
    s = String(value);
  } else if (typeof value === 'string' && /^-?\d+$/.test(value)) {
    s = value;
  } else {
    throw new ConvertError(where, `expected an integer (${type}), got ${describe(value)}`);
  }
  const big = BigInt(s);
  const unsigned = type === 'uint64' || type === 'fixed64';
  const [lo, hi] = unsigned ? [0n, 2n ** 64n - 1n] : [-(2n ** 63n), 2n ** 63n - 1n];
  if (big < lo || big > hi) throw new ConvertError(where, `${s} is out of range for ${type}`);
  return protobuf.util.Long.fromString(s, unsigned);
}

/* Standard or URL-safe base64, padding optional. */
function convertBytes(value, where) {
  if (typeof value !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(value)) {
    throw new ConvertError(where, `expected base64 bytes, got ${describe(value)}`);
  }
  return Buffer.from(value.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}

/* "1.5s", "-0.000000001s", "300s"; at most nine fractional digits, as proto3 JSON says. */
function convertDuration(value, where) {
  const m = typeof value === 'string' ? /^(-)?(\d+)(?:\.(\d{1,9}))?s$/.exec(value) : null;
  if (!m) throw new ConvertError(where, `${describe(value)} is not a duration (write e.g. "1.5s")`);
  const sign = m[1] ? -1 : 1;
  const seconds = BigInt(m[2]);
  if (seconds > 315576000000n) throw new ConvertError(where, `${value} is out of range for a duration`);
  const nanos = m[3] ? Number(m[3].padEnd(9, '0')) : 0;
  return { seconds: protobuf.util.Long.fromString((sign < 0 && seconds > 0n ? '-' : '') + m[2]), nanos: sign * nanos };
}

/* RFC 3339 with "Z" or an offset; fractional seconds up to nanoseconds. */
function convertTimestamp(value, where) {
  const m = typeof value === 'string' ? /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(value) : null;
  const ms = m ? Date.parse(m[1] + (m[3] === 'Z' ? 'Z' : m[3])) : NaN;
  if (!m || Number.isNaN(ms)) throw new ConvertError(where, `${describe(value)} is not an RFC 3339 timestamp`);
  return { seconds: protobuf.util.Long.fromNumber(Math.floor(ms / 1000)), nanos: m[2] ? Number(m[2].padEnd(9, '0')) : 0 };
}

function convertStruct(value, where) {
  if (!isPlainObject(value)) throw new ConvertError(where, `expected an object (Struct), got ${describe(value)}`);
  const fields = {};
  for (const [k, v] of Object.entries(value)) fields[k] = convertValue(v, `${where}.${k}`);
  return { fields };
}

/*
 * protobufjs bundles google/protobuf/struct.proto with camelCase field names (numberValue)
 * whatever keepCase says, so the key is taken from the loaded type rather than assumed.
 */
const valueKeys = new Map();
function valueKey(snake) {
  if (!valueKeys.size) {
    const names = protobuf.common.get('google/protobuf/struct.proto').nested.google.nested.protobuf.nested.Value.fields;
    for (const s of ['null_value', 'number_value', 'string_value', 'bool_value', 'struct_value', 'list_value']) {
      valueKeys.set(s, names[s] ? s : snakeToCamel(s));
    }
  }
  return valueKeys.get(snake);
}

function convertValue(value, where) {
  if (value === null) return { [valueKey('null_value')]: 0 };
  if (typeof value === 'number') return { [valueKey('number_value')]: value };
  if (typeof value === 'string') return { [valueKey('string_value')]: value };
  if (typeof value === 'boolean') return { [valueKey('bool_value')]: value };
  if (Array.isArray(value)) return { [valueKey('list_value')]: convertListValue(value, where) };
  if (isPlainObject(value)) return { [valueKey('struct_value')]: convertStruct(value, where) };
  throw new ConvertError(where, `cannot be a google.protobuf.Value: ${describe(value)}`);
}

function convertListValue(value, where) {
  if (!Array.isArray(value)) throw new ConvertError(where, `expected a list (ListValue), got ${describe(value)}`);
  return { values: value.map((v, i) => convertValue(v, `${where}[${i}]`)) };
}

function convertFieldMask(value, where) {
  if (typeof value !== 'string') throw new ConvertError(where, `expected a comma-separated field mask string, got ${describe(value)}`);
  return { paths: value === '' ? [] : value.split(',').map(camelToSnake) };
}

/*
 * {"@type": url, ...fields}: the named type is converted from the remaining keys (or from
 * "value" for a type with a special JSON form) and encoded; the Any carries the bytes.
 */
function convertAny(root, json, where) {
  if (!isPlainObject(json)) throw new ConvertError(where, `expected an object with "@type" (Any), got ${describe(json)}`);
  const typeUrl = json['@type'];
  if (typeof typeUrl !== 'string' || typeUrl === '') throw new ConvertError(where, `an Any needs "@type"`);
  const type = lookupTypeUrl(root, typeUrl);
  if (!type) throw new ConvertError(`${where}["@type"]`, `unknown type "${typeUrl}" (not in the loaded Envoy protos)`);
  const rest = Object.assign({}, json);
  delete rest['@type'];
  let inner;
  if (SPECIAL_JSON.has(type.fullName)) {
    const keys = Object.keys(rest);
    if (keys.length !== 1 || keys[0] !== 'value') throw new ConvertError(where, `an Any of ${type.fullName.slice(1)} holds exactly "value"`);
    inner = convertMessage(type, rest.value, `${where}.value`);
  } else {
    inner = convertMessage(type, rest, where);
  }
  return withoutZeros({ type_url: typeUrl, value: encode(type, inner) });
}

/* Encodes the output of convertMessage; fromObject only copies here, it has nothing to infer. */
function encode(type, object) {
  return Buffer.from(type.encode(type.fromObject(object)).finish());
}

/* A resource as an Any ({type_url, value}) for a DiscoveryResponse. */
function resourceToAny(root, typeUrl, json, where) {
  const type = lookupTypeUrl(root, typeUrl);
  if (!type) throw new ConvertError(where, `unknown resource type ${typeUrl}`);
  let body = json;
  if (isPlainObject(json) && Object.prototype.hasOwnProperty.call(json, '@type')) {
    /* A resource may be written as an Any of its own type, as in a DiscoveryResponse. */
    if (lookupTypeUrl(root, json['@type']) !== type) throw new ConvertError(`${where}["@type"]`, `"${json['@type']}" is not ${typeUrl}`);
    body = Object.assign({}, json);
    delete body['@type'];
  }
  return { type_url: typeUrl, value: encode(type, convertMessage(type, body, where)) };
}

module.exports = { ConvertError, convertMessage, resourceToAny, encode };
