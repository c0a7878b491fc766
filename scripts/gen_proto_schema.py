#!/usr/bin/env python3
"""Writes proxy/proto_schema_tables.c: the protobuf schema of the messages petrel reads.

The tables are facts of Envoy's published API (message and field names, numbers, types),
read from its .proto files; comments and text of those files are not carried over. The
output is committed, so building petrel never runs this script.

    scripts/gen_proto_schema.py PROTO_ROOT... > proxy/proto_schema_tables.c

Each PROTO_ROOT is a directory that .proto import paths are relative to; the pinned copy
the schema test installs (tests/proto_schema, `npm ci`) has them all:

    D=tests/proto_schema/node_modules/@grpc/grpc-js-xds/deps
    scripts/gen_proto_schema.py $D/envoy-api $D/xds $D/googleapis $D/protoc-gen-validate

What goes in: the messages in ROOTS below and every message and enum their fields reach,
with all of their fields (so a field petrel does not implement still decodes by its name
and the config reader reports it as not supported, with its path). The well-known types
(google.protobuf.*) are written by hand in proxy/proto_schema.c: their JSON form is special.
A message reached only through a google.protobuf.Any is not followed; the messages an Any
may hold are the roots.

The parser reads what Envoy's API files use: package, import, option, message (nested),
enum, oneof, map<K, V>, optional/repeated, reserved, extend and service blocks (skipped).
"""
import os
import re
import sys

# The resources petrel takes, the xDS envelopes, and every type an Any may hold in a
# config petrel reads (typed_config of filters, transport sockets, access logs, ...).
ROOTS = [
    # The bootstrap: every config starts there, so each field of it (and of what it
    # reaches) that petrel does not read is refused as not supported, not as unknown.
    "envoy.config.bootstrap.v3.Bootstrap",
    "envoy.service.discovery.v3.DiscoveryRequest",
    "envoy.service.discovery.v3.DiscoveryResponse",
    "envoy.service.discovery.v3.DeltaDiscoveryRequest",
    "envoy.service.discovery.v3.DeltaDiscoveryResponse",
    "envoy.service.discovery.v3.Resource",
    "envoy.config.cluster.v3.Cluster",
    "envoy.config.endpoint.v3.ClusterLoadAssignment",
    "envoy.config.listener.v3.Listener",
    "envoy.config.route.v3.RouteConfiguration",
    "envoy.extensions.transport_sockets.tls.v3.Secret",
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    "envoy.extensions.filters.network.sni_cluster.v3.SniCluster",
    "envoy.extensions.filters.network.rbac.v3.RBAC",
    "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit",
    "envoy.extensions.filters.http.router.v3.Router",
    "envoy.extensions.filters.http.rbac.v3.RBAC",
    "envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
    # typed_per_filter_config's wrapper around any filter's per-route config.
    "envoy.config.route.v3.FilterConfig",
    "envoy.extensions.filters.http.fault.v3.HTTPFault",
    "envoy.extensions.filters.http.health_check.v3.HealthCheck",
    "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
    "envoy.extensions.filters.http.buffer.v3.Buffer",
    "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
    # The compressor filter and the libraries its compressor_library may hold.
    "envoy.extensions.filters.http.compressor.v3.Compressor",
    "envoy.extensions.filters.http.compressor.v3.CompressorPerRoute",
    "envoy.extensions.compression.gzip.compressor.v3.Gzip",
    "envoy.extensions.compression.brotli.compressor.v3.Brotli",
    "envoy.extensions.compression.zstd.compressor.v3.Zstd",
    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
    # Listener filters every Istio sidecar's listeners carry, which petrel refuses (as not
    # supported listener filters): decoded, so that the refusal is the parser's.
    "envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
    "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
    "envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol",
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    # Cluster.load_balancing_policy's typed policies petrel has (discovery/lb_hash.c).
    "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin",
    "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
    "envoy.extensions.load_balancing_policies.random.v3.Random",
    "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash",
    "envoy.extensions.load_balancing_policies.maglev.v3.Maglev",
    "envoy.extensions.access_loggers.file.v3.FileAccessLog",
    "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
    "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
    # The HCM's tracing provider: the two petrel has, and two it refuses (decoded, so that
    # the refusal is the parser's).
    "envoy.config.trace.v3.ZipkinConfig",
    "envoy.config.trace.v3.OpenTelemetryConfig",
    "envoy.config.trace.v3.DatadogConfig",
    "envoy.config.trace.v3.SkyWalkingConfig",
    # The bootstrap's stats sinks petrel has.
    "envoy.config.metrics.v3.StatsdSink",
    "envoy.config.metrics.v3.MetricsServiceConfig",
    "envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig",
    # A cluster's typed_dns_resolver_config and its health checks' event_logger.
    "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
    "envoy.extensions.health_check.event_sinks.file.v3.HealthCheckEventFileSink",
    # Access loggers petrel knows and refuses as not supported (proxy/access_log.c): decoded,
    # so that the refusal is the parser's, word for word as for a JSON config.
    "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
    "envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig",
    "envoy.extensions.access_loggers.fluentd.v3.FluentdAccessLogConfig",
    "envoy.extensions.access_loggers.wasm.v3.WasmAccessLog",
    "google.rpc.Status",
]

# Hand-written in proxy/proto_schema.c (proto3 JSON gives them their own forms).
WKT = {
    "google.protobuf.Any": "pt_pb_any",
    "google.protobuf.Duration": "pt_pb_duration",
    "google.protobuf.Timestamp": "pt_pb_timestamp",
    "google.protobuf.Struct": "pt_pb_struct",
    "google.protobuf.Value": "pt_pb_value",
    "google.protobuf.ListValue": "pt_pb_list_value",
    "google.protobuf.Empty": "pt_pb_empty",
    "google.protobuf.FieldMask": "pt_pb_field_mask",
    "google.protobuf.DoubleValue": "pt_pb_double_value",
    "google.protobuf.FloatValue": "pt_pb_float_value",
    "google.protobuf.Int64Value": "pt_pb_int64_value",
    "google.protobuf.UInt64Value": "pt_pb_uint64_value",
    "google.protobuf.Int32Value": "pt_pb_int32_value",
    "google.protobuf.UInt32Value": "pt_pb_uint32_value",
    "google.protobuf.BoolValue": "pt_pb_bool_value",
    "google.protobuf.StringValue": "pt_pb_string_value",
    "google.protobuf.BytesValue": "pt_pb_bytes_value",
}
WKT_ENUMS = {"google.protobuf.NullValue": "pt_pb_null_value_enum"}

SCALARS = {
    "double": "PT_PB_DOUBLE", "float": "PT_PB_FLOAT", "int64": "PT_PB_INT64",
    "uint64": "PT_PB_UINT64", "int32": "PT_PB_INT32", "fixed64": "PT_PB_FIXED64",
    "fixed32": "PT_PB_FIXED32", "bool": "PT_PB_BOOL", "string": "PT_PB_STRING",
    "bytes": "PT_PB_BYTES", "uint32": "PT_PB_UINT32", "sfixed32": "PT_PB_SFIXED32",
    "sfixed64": "PT_PB_SFIXED64", "sint32": "PT_PB_SINT32", "sint64": "PT_PB_SINT64",
}

TOKEN = re.compile(r'''\s+|//[^\n]*|/\*.*?\*/|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([A-Za-z_][\w.]*|\.[A-Za-z_][\w.]*|-?\d[\w.+-]*|[{}\[\]()<>=;,:.+-])''', re.S)


def tokenize(text):
    out = []
    pos = 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m:
            raise SyntaxError("cannot read %r" % text[pos:pos + 30])
        pos = m.end()
        tok = m.group(1) or m.group(2)
        if tok:
            out.append(tok)
    return out


class Message:
    def __init__(self, name):
        self.name = name        # full name
        self.fields = []        # dicts: name, number, type (scalar or unresolved), label, oneof, key
        self.oneofs = []
        self.map_entry = None   # (key type, value type) for synthesized map entries
        self.scope = name


class Enum:
    def __init__(self, name):
        self.name = name
        self.values = []        # (name, number)


class Parser:
    def __init__(self, roots):
        self.roots = roots
        self.messages = {}
        self.enums = {}
        self.loaded = set()

    def load(self, path):
        if path in self.loaded:
            return
        self.loaded.add(path)
        for root in self.roots:
            full = os.path.join(root, path)
            if os.path.exists(full):
                break
        else:
            if path.startswith("google/protobuf/"):
                return  # the well-known types are built in
            raise FileNotFoundError(path)
        with open(full, encoding="utf-8") as f:
            self.toks = tokenize(f.read())
        self.i = 0
        package = ""
        imports = []
        while self.i < len(self.toks):
            t = self.next()
            if t == "package":
                package = self.next()
                self.expect(";")
            elif t == "import":
                nxt = self.next()
                if nxt in ("public", "weak"):
                    nxt = self.next()
                imports.append(nxt.strip("\"'"))
                self.expect(";")
            elif t in ("syntax", "option", "edition"):
                self.skip_statement()
            elif t == "message":
                self.message(package)
            elif t == "enum":
                self.enum(package)
            elif t in ("service", "extend"):
                self.next_until("{")
                self.skip_block()
            elif t == ";":
                pass
            else:
                raise SyntaxError("%s: unexpected %r" % (path, t))
        for imp in imports:
            self.load(imp)

    def next(self):
        t = self.toks[self.i]
        self.i += 1
        return t

    def peek(self):
        return self.toks[self.i]

    def expect(self, t):
        got = self.next()
        if got != t:
            raise SyntaxError("expected %r, got %r" % (t, got))

    def next_until(self, t):
        while self.next() != t:
            pass

    def skip_block(self):
        """After a '{': to its matching '}'."""
        depth = 1
        while depth:
            t = self.next()
            depth += (t == "{") - (t == "}")

    def skip_statement(self):
        depth = 0
        while True:
            t = self.next()
            if t in "{[(":
                depth += 1
            elif t in "}])":
                depth -= 1
            elif t == ";" and depth == 0:
                return

    def skip_options(self):
        if self.peek() == "[":
            depth = 0
            while True:
                t = self.next()
                depth += (t == "[") - (t == "]")
                if depth == 0:
                    return

    def message(self, scope):
        name = self.next()
        full = scope + "." + name if scope else name
        m = Message(full)
        self.messages[full] = m
        self.expect("{")
        self.body(m, None)

    def body(self, m, oneof):
        while True:
            t = self.next()
            if t == "}":
                return
            if t == ";":
                continue
            if t == "message":
                self.message(m.name)
            elif t == "enum":
                self.enum(m.name)
            elif t in ("option", "reserved", "extensions"):
                self.skip_statement()
            elif t in ("extend",):
                self.next_until("{")
                self.skip_block()
            elif t == "oneof":
                oname = self.next()
                m.oneofs.append(oname)
                self.expect("{")
                self.body(m, len(m.oneofs) - 1)
            elif t == "map":
                self.expect("<")
                k = self.next()
                self.expect(",")
                v = self.next()
                self.expect(">")
                fname = self.next()
                self.expect("=")
                num = int(self.next(), 0)
                self.skip_options()
                self.expect(";")
                entry = Message(m.name + "." + camel_entry(fname))
                entry.map_entry = True
                entry.fields = [
                    dict(name="key", number=1, type=k, label="", oneof=None, scope=m.name),
                    dict(name="value", number=2, type=v, label="", oneof=None, scope=m.name),
                ]
                self.messages[entry.name] = entry
                m.fields.append(dict(name=fname, number=num, type=entry.name, label="map",
                                     oneof=oneof, scope=m.name, resolved=entry.name))
            else:
                label = ""
                if t in ("repeated", "optional", "required"):
                    label = t
                    t = self.next()
                if t == "group":
                    raise SyntaxError("groups are not supported")
                fname = self.next()
                self.expect("=")
                num = int(self.next(), 0)
                self.skip_options()
                self.expect(";")
                m.fields.append(dict(name=fname, number=num, type=t, label=label,
                                     oneof=oneof, scope=m.name))

    def enum(self, scope):
        name = self.next()
        e = Enum(scope + "." + name if scope else name)
        self.enums[e.name] = e
        self.expect("{")
        while True:
            t = self.next()
            if t == "}":
                return
            if t == ";":
                continue
            if t in ("option", "reserved"):
                self.skip_statement()
                continue
            self.expect("=")
            num = int(self.next(), 0)
            self.skip_options()
            self.expect(";")
            e.values.append((t, num))

    def resolve(self, typename, scope):
        if typename in SCALARS:
            return typename
        if typename.startswith("."):
            cands = [typename[1:]]
        else:
            parts = scope.split(".")
            cands = [".".join(parts[:n] + [typename]) for n in range(len(parts), -1, -1)]
            cands = [c.lstrip(".") for c in cands]
        for c in cands:
            if c in self.messages or c in self.enums or c in WKT or c in WKT_ENUMS:
                return c
        raise KeyError("cannot resolve %s in %s" % (typename, scope))


def camel_entry(field):
    """protoc's name for a map field's entry message: foo_bar -> FooBarEntry."""
    return "".join(p[:1].upper() + p[1:] for p in field.split("_")) + "Entry"


def cname(full, kind):
    return kind + "_" + re.sub(r"[^A-Za-z0-9]", "_", full)


def main(argv):
    roots = argv[1:]
    if not roots:
        sys.stderr.write(__doc__)
        return 2
    p = Parser(roots)
    # Find each root's file by its package path: envoy.config.cluster.v3.Cluster lives in
    # envoy/config/cluster/v3/*.proto; load them all (imports follow).
    for r in ROOTS:
        d = "/".join(r.split(".")[:-1]).replace(".", "/")
        for root in roots:
            if os.path.isdir(os.path.join(root, d)):
                for fn in sorted(os.listdir(os.path.join(root, d))):
                    if fn.endswith(".proto"):
                        # A neighbour of a root's file may import what the roots
                        # given do not hold (trace/v3/opencensus.proto): its own
                        # messages still load, and a type the closure below needs
                        # but cannot find stops it there.
                        try:
                            p.load(d + "/" + fn)
                        except FileNotFoundError:
                            pass
    for r in ROOTS:
        if r not in p.messages:
            raise KeyError("root %s not found" % r)
    # The closure of the roots through message- and enum-typed fields.
    want, enums, todo = [], set(), list(ROOTS)
    seen = set()
    while todo:
        name = todo.pop(0)
        if name in seen or name in WKT:
            continue
        seen.add(name)
        m = p.messages[name]
        want.append(m)
        for f in m.fields:
            t = f.get("resolved") or p.resolve(f["type"], f["scope"])
            f["resolved"] = t
            if t in p.messages:
                todo.append(t)
            elif t in p.enums:
                enums.add(t)
    want.sort(key=lambda m: m.name)
    names = {}
    for m in want:
        c = cname(m.name, "m")
        if c in names:
            raise KeyError("two messages map to %s" % c)
        names[c] = m.name

    out = []
    w = out.append
    w("/* Generated by scripts/gen_proto_schema.py from Envoy's API .proto files: do not edit.")
    w(" * The protobuf schema (names, numbers, types) of the messages petrel reads; see")
    w(" * proxy/proto_schema.h and docs/protobuf.md. */")
    w('#include "proxy/proto_schema.h"')
    w("")
    w("/* clang-format off */")
    for e in sorted(enums):
        en = p.enums[e]
        w("static const pt_pb_enum_value_t %s_values[] = {" % cname(e, "e"))
        for vn, vv in en.values:
            w("    {.name = \"%s\", .number = %d}," % (vn, vv))
        w("};")
        w("static const pt_pb_enum_t %s = {" % cname(e, "e"))
        w("    .full_name = \"%s\"," % e)
        w("    .values = %s_values," % cname(e, "e"))
        w("    .nvalues = %d," % len(en.values))
        w("};")
    w("")
    for m in want:
        w("static const pt_pb_message_t %s;" % cname(m.name, "m"))
    w("")
    for m in want:
        c = cname(m.name, "m")
        if m.oneofs:
            w("static const char *const %s_oneofs[] = {%s};" % (
                c, ", ".join('"%s"' % o for o in m.oneofs)))
        fields = sorted(m.fields, key=lambda f: f["number"])
        w("static const pt_pb_field_t %s_fields[] = {" % c)
        for f in fields:
            t = f["resolved"]
            parts = ['.name = "%s"' % f["name"], ".number = %d" % f["number"]]
            if t in SCALARS:
                parts.append(".type = " + SCALARS[t])
            elif t in p.enums or t in WKT_ENUMS:
                parts.append(".type = PT_PB_ENUM")
                parts.append(".enumeration = &" + (WKT_ENUMS.get(t) or cname(t, "e")))
            else:
                parts.append(".type = PT_PB_MESSAGE")
                parts.append(".message = &" + (WKT.get(t) or cname(t, "m")))
            flags = []
            if f["label"] == "repeated":
                flags.append("PT_PB_REPEATED")
            elif f["label"] == "map":
                flags.append("PT_PB_MAP")
            elif f["label"] == "optional":
                flags.append("PT_PB_PRESENCE")
            if flags:
                parts.append(".flags = " + " | ".join(flags))
            parts.append(".oneof = %d" % (-1 if f["oneof"] is None else f["oneof"]))
            w("    {%s}," % ", ".join(parts))
        w("};")
        w("static const pt_pb_message_t %s = {" % c)
        w("    .full_name = \"%s\"," % m.name)
        w("    .fields = %s_fields," % c)
        w("    .nfields = %d," % len(fields))
        if m.oneofs:
            w("    .oneofs = %s_oneofs," % c)
            w("    .noneofs = %d," % len(m.oneofs))
        if m.map_entry:
            w("    .kind = PT_PB_KIND_MAP_ENTRY,")
        w("};")
    w("")
    w("/* Every generated message, sorted by full name (pt_pb_message_find searches it). */")
    w("const pt_pb_message_t *const pt_pb_generated_messages[] = {")
    for m in want:
        w("    &%s," % cname(m.name, "m"))
    w("};")
    w("const size_t pt_pb_generated_nmessages = %d;" % len(want))
    sys.stdout.write("\n".join(out) + "\n")
    sys.stderr.write("%d messages, %d enums, %d fields\n" % (
        len(want), len(enums), sum(len(m.fields) for m in want)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
