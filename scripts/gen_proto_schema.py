#!/usr/bin/env python3
"""Writes proxy/proto_schema_tables.c: the protobuf schema of the messages petrel reads.

The tables are facts of Envoy's published API (message and field names, numbers, types),
read from its .proto files; comments and text of those files are not carried over. The
output is committed, so building petrel never runs this script.

    scripts/gen_proto_schema.py [--additions FILE] PROTO_ROOT... > proxy/proto_schema_tables.c

Each PROTO_ROOT is a directory that .proto import paths are relative to; the pinned copy
the schema test installs (tests/proto_schema, `npm ci`) has them all:

    D=tests/proto_schema/node_modules/@grpc/grpc-js-xds/deps
    scripts/gen_proto_schema.py $D/envoy-api $D/xds $D/googleapis $D/protoc-gen-validate

The tables are those files plus scripts/proto_schema_additions.txt (or --additions FILE):
the fields, enum values, messages and enums of a newer Envoy API that the pinned files lack
(see "Additions" below). That file is written by this script too, from a newer tree of
Envoy's API (a checkout of envoyproxy/data-plane-api), compared with the pinned files:

    scripts/gen_proto_schema.py --additions-from NEWER_DIR [--label TEXT] \
        $D/envoy-api $D/xds $D/googleapis $D/protoc-gen-validate \
        > scripts/proto_schema_additions.txt

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


def package_dirs(full):
    """The directories a full name's package may live in, longest first: its leading
    lower-case components (Envoy's convention), envoy.config.core.v3.X -> envoy/config/core/v3."""
    parts = full.split(".")
    n = 0
    while n < len(parts) and re.match(r"^[a-z0-9_]+$", parts[n]):
        n += 1
    return ["/".join(parts[:k]) for k in range(n, 0, -1)]


def load_package(p, roots, d):
    """Every .proto of directory d (relative to the roots) into parser p."""
    for root in roots:
        if os.path.isdir(os.path.join(root, d)):
            for fn in sorted(os.listdir(os.path.join(root, d))):
                if fn.endswith(".proto"):
                    # A neighbour of a root's file may import what the roots given do not
                    # hold (trace/v3/opencensus.proto): its own messages still load, and a
                    # type the closure needs but cannot find stops it there.
                    try:
                        p.load(d + "/" + fn)
                    except FileNotFoundError:
                        pass


def find(p, roots, full):
    """The message or enum of that full name, loading its package's files if needed, or
    None when the roots do not have it."""
    for d in package_dirs(full):
        if full in p.messages or full in p.enums:
            break
        load_package(p, roots, d)
    return p.messages.get(full) or p.enums.get(full)


def parse_tree(roots):
    """A parser holding the files of every root message's package (imports follow)."""
    p = Parser(roots)
    for r in ROOTS:
        load_package(p, roots, "/".join(r.split(".")[:-1]))
    for r in ROOTS:
        if r not in p.messages:
            raise KeyError("root %s not found" % r)
    return p


def closure(p, skip=None):
    """The messages (in the order found) and enums the roots reach through message- and
    enum-typed fields, not following a field skip(message, field) is true of."""
    want, enums, todo, seen = [], set(), list(ROOTS), set()
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
            if skip and skip(m, f):
                continue
            if t in p.messages:
                todo.append(t)
            elif t in p.enums:
                enums.add(t)
    return want, enums


# ---- Additions: what Envoy's newer API has that the pinned files lack ----
#
# scripts/proto_schema_additions.txt lists fields, enum values, messages and enums of a
# newer copy of Envoy's API that the pinned .proto files do not have, for the messages the
# schema holds, in a .proto-like syntax (full type names, one fact a line):
#
#     message envoy.config.route.v3.DirectResponseAction      (a message of the pinned files)
#         envoy.config.core.v3.SubstitutionFormatString body_format = 3;
#     new message envoy.config.core.v3.TlvEntry               (a message they lack)
#         uint32 type = 1;
#     enum envoy.config.accesslog.v3.ComparisonFilter.Op      (new values of a pinned enum)
#         NE = 3;
#     new enum envoy.config.trace.v3.ZipkinConfig.TraceContextOption
#         USE_B3 = 0;
#
# A field line is `[oneof NAME] [repeated|optional] TYPE NAME = NUMBER;` or
# `map<KEY, VALUE> NAME = NUMBER;`. `--additions-from DIR` writes the file by comparing the
# newer tree DIR with the pinned files; the tables are the pinned files plus the file.

ADDITIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "proto_schema_additions.txt")

# A newer field whose type the schema would not otherwise have (a new message tree, or a new
# enum) is added only when petrel reads it or names it in a "not supported" list: then it
# decodes by its name and is read, or refused, as in a JSON config. Any other such field is
# left out (the additions file lists it as left out) and stays `unknown field number N`.
NEWER_FIELDS_WITH_NEW_TYPES = [
    "envoy.config.trace.v3.ZipkinConfig.trace_context_option",  # read: proxy/zipkin.c
    "envoy.config.rbac.v3.Permission.sourced_metadata",  # named: filters/rbac.c
    "envoy.config.rbac.v3.Principal.sourced_metadata",
    "envoy.config.rbac.v3.Policy.cel_config",
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.proxy_protocol_tlvs",  # tcp_proxy.c
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.upstream_connect_mode",
    "envoy.extensions.load_balancing_policies.common.v3.LocalityLbConfig.ZoneAwareLbConfig"
    ".force_local_zone",  # named: proxy/cluster.c
    "envoy.extensions.load_balancing_policies.common.v3.LocalityLbConfig.ZoneAwareLbConfig"
    ".locality_basis",
    "envoy.extensions.transport_sockets.tls.v3.TlsParameters.compliance_policies",  # tls/settings.c
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.outlier_detection",  # proxy/cluster.c
]

FIELD_LINE = re.compile(r"^(?:oneof (\w+) )?(?:(repeated|optional) )?"
                        r"(?:map<(\w+), ([\w.]+)>|([\w.]+)) (\w+) = (\d+);$")
VALUE_LINE = re.compile(r"^(\w+) = (-?\d+);$")
BLOCK_LINE = re.compile(r"^(new )?(message|enum) ([\w.]+)$")


class Additions:
    def __init__(self):
        self.fields = {}        # message -> [field]: name, number, label, type, key, oneof
        self.values = {}        # enum -> [(name, number)]
        self.new_messages = {}  # message -> [field]
        self.new_enums = {}     # enum -> [(name, number)]
        self.left_out = []      # (message.field, number, type) a newer field not added


def read_additions(path):
    a = Additions()
    block = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            where = "%s:%d" % (path, n)
            b = BLOCK_LINE.match(text)
            if b:
                table = {("", "message"): a.fields, ("new ", "message"): a.new_messages,
                         ("", "enum"): a.values, ("new ", "enum"): a.new_enums}[
                             (b.group(1) or "", b.group(2))]
                if b.group(3) in table:
                    raise SyntaxError("%s: %s listed twice" % (where, b.group(3)))
                block = table.setdefault(b.group(3), [])
                is_enum = b.group(2) == "enum"
                continue
            if block is None:
                raise SyntaxError("%s: a field or value outside a message or enum" % where)
            m = (VALUE_LINE if is_enum else FIELD_LINE).match(text)
            if not m:
                raise SyntaxError("%s: cannot read %r" % (where, text))
            if is_enum:
                block.append((m.group(1), int(m.group(2))))
            else:
                oneof, label, key, value, typ, name, number = m.groups()
                block.append(dict(name=name, number=int(number), oneof=oneof,
                                  label="map" if key else (label or ""),
                                  key=key, type=value if key else typ))
    return a


def field_line(f):
    if f["label"] == "map":
        return "map<%s, %s> %s = %d;" % (f["key"], f["type"], f["name"], f["number"])
    words = ["oneof " + f["oneof"]] if f["oneof"] else []
    if f["label"]:
        words.append(f["label"])
    return " ".join(words + ["%s %s = %d;" % (f["type"], f["name"], f["number"])])


def write_additions(a, label, out):
    w = out.append
    w("# The schema's additions to the pinned .proto files (@grpc/grpc-js-xds, tests/proto_schema):")
    w("# fields, enum values, messages and enums of a newer Envoy API that those files lack, for")
    w("# the messages petrel's schema holds. Facts of the API only (names, numbers, types).")
    w("# Written by `scripts/gen_proto_schema.py --additions-from DIR ...` (docs/protobuf.md);")
    w("# regenerate, do not edit.")
    if label:
        w("# Newer API: %s." % label)
    for title, table, kind in (("", a.fields, "message"), ("new ", a.new_messages, "message"),
                               ("", a.values, "enum"), ("new ", a.new_enums, "enum")):
        for name in sorted(table):
            w("")
            w("%s%s %s" % (title, kind, name))
            for item in table[name]:
                w("    " + (field_line(item) if kind == "message" else "%s = %d;" % item))
    if a.left_out:
        w("")
        w("# Left out: newer fields whose type the schema does not have, which petrel neither")
        w("# reads nor names (NEWER_FIELDS_WITH_NEW_TYPES in the generator); a control plane")
        w("# sending one gets `unknown field number N`.")
        for key, number, typ in sorted(a.left_out):
            w("#   %s = %d (%s)" % (key, number, typ))
    return out


def additions_field(p, f, oneofs):
    """One of parser p's fields in the additions' terms (full type names)."""
    t = f.get("resolved") or p.resolve(f["type"], f["scope"])
    out = dict(name=f["name"], number=f["number"], label=f["label"], key=None, type=t,
               oneof=oneofs[f["oneof"]] if f["oneof"] is not None else None)
    if f["label"] == "map":
        entry = p.messages[t]
        out["key"] = entry.fields[0]["type"]
        v = entry.fields[1]
        out["type"] = v.get("resolved") or p.resolve(v["type"], v["scope"])
    return out


def diff_newer(pinned_roots, newer_dir):
    """The additions: what the newer tree's closure of ROOTS has that the pinned files lack."""
    old = parse_tree(pinned_roots)
    new_roots = [newer_dir] + pinned_roots
    new = parse_tree(new_roots)
    old_want, old_enums = closure(old)
    known = {m.name for m in old_want} | old_enums | set(WKT) | set(WKT_ENUMS) | set(SCALARS)
    follow = set(NEWER_FIELDS_WITH_NEW_TYPES)
    for key in sorted(follow):
        msg, name = key.rsplit(".", 1)
        m = find(new, new_roots, msg)
        if not isinstance(m, Message) or not any(f["name"] == name for f in m.fields):
            raise KeyError("NEWER_FIELDS_WITH_NEW_TYPES: %s is not in %s" % (key, newer_dir))

    def pinned_field(msg, name):
        om = find(old, pinned_roots, msg)
        if not isinstance(om, Message):
            return "message is new"
        return next((f for f in om.fields if f["name"] == name), None)

    # A newer field is skipped when its type is not yet known and it is not to be followed;
    # a field skipped only because a followed one had not brought its type in yet is taken
    # on the next round (ProxyProtocolConfig.added_tlvs, once TcpProxy's TlvEntry is in).
    while True:
        skipped = []

        def skip(m, f):
            if m.map_entry or pinned_field(m.name, f["name"]) is not None:
                return False  # a pinned field, or one of a message the pinned files lack
            t = f["resolved"]
            if f["label"] == "map":  # its entry is made up; the value's type is what counts
                v = new.messages[t].fields[1]
                t = new.resolve(v["type"], v["scope"])
            if t in known or "%s.%s" % (m.name, f["name"]) in follow:
                return False
            skipped.append((m.name, f))
            return True

        want, enums = closure(new, skip)
        grown = known | {m.name for m in want} | enums
        if grown == known:
            break
        known = grown

    a = Additions()
    for m in want:
        if m.map_entry:
            continue  # written as its map field
        om = find(old, pinned_roots, m.name)
        if not isinstance(om, Message):
            a.new_messages[m.name] = [additions_field(new, f, m.oneofs)
                                      for f in sorted(m.fields, key=lambda f: f["number"])]
            continue
        added = []
        skipped_here = {f["name"] for n, f in skipped if n == m.name}
        for f in sorted(m.fields, key=lambda f: f["number"]):
            of = pinned_field(m.name, f["name"])
            if of is None:
                if f["name"] not in skipped_here:
                    added.append(additions_field(new, f, m.oneofs))
                continue
            mine = additions_field(new, f, m.oneofs)
            theirs = additions_field(old, of, om.oneofs)
            if mine != theirs:
                raise ValueError("%s.%s differs in the newer tree: %s, pinned %s" % (
                    m.name, f["name"], field_line(mine), field_line(theirs)))
        numbers = {f["number"] for f in om.fields}
        for f in added:
            if f["number"] in numbers:
                raise ValueError("%s.%s: number %d is another field's in the pinned files" % (
                    m.name, f["name"], f["number"]))
        for of in om.fields:
            if not any(f["name"] == of["name"] for f in m.fields):
                sys.stderr.write("note: %s.%s is gone from the newer tree; kept\n" % (
                    m.name, of["name"]))
        if added:
            a.fields[m.name] = added
    for e in sorted(enums):
        oe = find(old, pinned_roots, e)
        if not isinstance(oe, Enum):
            a.new_enums[e] = list(new.enums[e].values)
            continue
        have = dict(oe.values)
        added = [(n, v) for n, v in new.enums[e].values if n not in have]
        for n, v in new.enums[e].values:
            if n in have and have[n] != v:
                raise ValueError("%s.%s: %d in the newer tree, pinned %d" % (e, n, v, have[n]))
        if added:
            a.values[e] = added
    for msg, f in skipped:
        a.left_out.append(("%s.%s" % (msg, f["name"]), f["number"], f["resolved"]))
    a.left_out = sorted(set(a.left_out))
    return a


def apply_additions(p, roots, a, path):
    """Parser p (the pinned files) with the additions: their new messages and enums, and
    their fields and values in the pinned messages and enums. An addition the pinned files
    already have is an error: the list is to be pruned (the package was bumped)."""
    def bad(what):
        raise ValueError("%s: %s: prune or regenerate it (docs/protobuf.md)" % (path, what))

    def add_field(m, f):
        if f["oneof"] and f["oneof"] not in m.oneofs:
            m.oneofs.append(f["oneof"])
        field = dict(name=f["name"], number=f["number"], label=f["label"], scope=m.name,
                     oneof=m.oneofs.index(f["oneof"]) if f["oneof"] else None,
                     type=f["type"], resolved=f["type"])
        if f["label"] == "map":
            entry = Message(m.name + "." + camel_entry(f["name"]))
            entry.map_entry = True
            entry.fields = [
                dict(name="key", number=1, type=f["key"], resolved=f["key"], label="",
                     oneof=None, scope=m.name),
                dict(name="value", number=2, type=f["type"], resolved=f["type"], label="",
                     oneof=None, scope=m.name),
            ]
            p.messages[entry.name] = entry
            field["type"] = field["resolved"] = entry.name
        m.fields.append(field)

    for name, fields in a.new_messages.items():
        if find(p, roots, name) is not None:
            bad("new message %s is in the .proto files" % name)
        p.messages[name] = Message(name)
    for name, values in a.new_enums.items():
        if find(p, roots, name) is not None:
            bad("new enum %s is in the .proto files" % name)
        e = p.enums[name] = Enum(name)
        e.values = list(values)
    for name, fields in a.new_messages.items():
        for f in fields:
            add_field(p.messages[name], f)
    for name, fields in a.fields.items():
        m = find(p, roots, name)
        if not isinstance(m, Message):
            bad("message %s is not in the .proto files" % name)
        for f in fields:
            if any(g["name"] == f["name"] or g["number"] == f["number"] for g in m.fields):
                bad("%s.%s (%d) is in the .proto files" % (name, f["name"], f["number"]))
            add_field(m, f)
    for name, values in a.values.items():
        e = find(p, roots, name)
        if not isinstance(e, Enum):
            bad("enum %s is not in the .proto files" % name)
        for v, n in values:
            if any(v == x for x, _ in e.values):
                bad("%s.%s is in the .proto files" % (name, v))
            e.values.append((v, n))
    # Every type an addition names must be known (from the pinned files or the additions).
    for fields in list(a.new_messages.values()) + list(a.fields.values()):
        for f in fields:
            if f["type"] not in SCALARS and f["type"] not in WKT and f["type"] not in WKT_ENUMS \
                    and find(p, roots, f["type"]) is None:
                bad("type %s of %s is neither in the .proto files nor added" % (
                    f["type"], f["name"]))


USAGE = """usage: gen_proto_schema.py [--additions FILE] PROTO_ROOT... > proxy/proto_schema_tables.c
       gen_proto_schema.py --additions-from NEWER_DIR [--label TEXT] PROTO_ROOT...
           > scripts/proto_schema_additions.txt
"""


def main(argv):
    args = argv[1:]
    additions, newer, label = ADDITIONS, None, None
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        if not args:
            sys.stderr.write(USAGE)
            return 2
        if opt == "--additions":
            additions = args.pop(0)
        elif opt == "--additions-from":
            newer = args.pop(0)
        elif opt == "--label":
            label = args.pop(0)
        else:
            sys.stderr.write(USAGE)
            return 2
    roots = args
    if not roots:
        sys.stderr.write(__doc__)
        return 2
    if newer:
        a = diff_newer(roots, newer)
        sys.stdout.write("\n".join(write_additions(a, label, [])) + "\n")
        sys.stderr.write("%d fields in %d messages, %d new messages, %d enum values, "
                         "%d new enums; %d fields left out\n" % (
                             sum(len(f) for f in a.fields.values()), len(a.fields),
                             len(a.new_messages), sum(len(v) for v in a.values.values()),
                             len(a.new_enums), len(a.left_out)))
        return 0
    p = parse_tree(roots)
    apply_additions(p, roots, read_additions(additions), additions)
    want, enums = closure(p)
    want.sort(key=lambda m: m.name)
    names = {}
    for m in want:
        c = cname(m.name, "m")
        if c in names:
            raise KeyError("two messages map to %s" % c)
        names[c] = m.name

    out = []
    w = out.append
    w("/* Generated by scripts/gen_proto_schema.py from Envoy's API .proto files and")
    w(" * scripts/proto_schema_additions.txt: do not edit.")
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
    try:
        sys.exit(main(sys.argv))
    except (KeyError, ValueError, SyntaxError, FileNotFoundError) as e:
        sys.stderr.write("gen_proto_schema.py: %s\n" % (e.args[0] if e.args else e))
        sys.exit(1)
