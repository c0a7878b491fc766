"""A Zipkin collector stand-in: POST /api/v2/spans with a v2 JSON list of spans, or a
zipkin.proto3 ListOfSpans (Content-Type application/x-protobuf), decoded by hand.

Every span is checked against the v2 schema (zipkin-api's zipkin2-api.yaml): lowercase hex ids
of the right lengths, a known kind, integer microsecond timestamp and duration (>= 1), a
localEndpoint with a serviceName, string tags, and no field the schema does not define. A span
that fails is kept in ``.invalid`` with why; a test asserts that list is empty.

``ZipkinCollector(mode='ok')``: 202 to each report. ``mode='stall'``: read the report and never
answer (the connection stays open until close()). ``mode='status:<code>'``: answer that status.
"""

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEX16 = re.compile(r'^[0-9a-f]{16}$')
HEX32 = re.compile(r'^[0-9a-f]{32}$')
KINDS = {'CLIENT', 'SERVER', 'PRODUCER', 'CONSUMER'}
SPAN_KEYS = {'traceId', 'id', 'parentId', 'name', 'kind', 'timestamp', 'duration',
             'localEndpoint', 'remoteEndpoint', 'annotations', 'tags', 'debug', 'shared'}
ENDPOINT_KEYS = {'serviceName', 'ipv4', 'ipv6', 'port'}


def validate_span(s):
    """Returns None, or why the span is not a valid Zipkin v2 span."""
    if not isinstance(s, dict):
        return 'not an object'
    extra = set(s) - SPAN_KEYS
    if extra:
        return 'unknown fields %s' % sorted(extra)
    tid = s.get('traceId')
    if not isinstance(tid, str) or not (HEX16.match(tid) or HEX32.match(tid)):
        return 'bad traceId %r' % (tid,)
    for k in ('id', 'parentId'):
        if k in s and (not isinstance(s[k], str) or not HEX16.match(s[k])):
            return 'bad %s %r' % (k, s.get(k))
    if 'id' not in s:
        return 'no id'
    if s.get('kind') not in KINDS:
        return 'bad kind %r' % (s.get('kind'),)
    if not isinstance(s.get('name'), str):
        return 'bad name'
    for k in ('timestamp', 'duration'):
        if not isinstance(s.get(k), int) or isinstance(s.get(k), bool) or s[k] < 1:
            return 'bad %s %r' % (k, s.get(k))
    ep = s.get('localEndpoint')
    if not isinstance(ep, dict) or set(ep) - ENDPOINT_KEYS or not isinstance(ep.get('serviceName'), str):
        return 'bad localEndpoint %r' % (ep,)
    tags = s.get('tags', {})
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        return 'bad tags'
    for k in ('debug', 'shared'):
        if k in s and not isinstance(s[k], bool):
            return 'bad %s' % k
    return None


# ---- zipkin.proto3, by hand ----------------------------------------------------------------

def _varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7f) << shift
        shift += 7
        if c < 0x80:
            return v, i


def _fields(b):
    i = 0
    while i < len(b):
        key, i = _varint(b, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 1:
            v = int.from_bytes(b[i:i + 8], 'little')
            i += 8
        elif wt == 2:
            n, i = _varint(b, i)
            v = b[i:i + n]
            if len(v) != n:
                raise ValueError('truncated')
            i += n
        elif wt == 5:
            v = int.from_bytes(b[i:i + 4], 'little')
            i += 4
        else:
            raise ValueError('wire type %d' % wt)
        yield field, wt, v


def decode_proto(body):
    """ListOfSpans -> the same dicts as v2 JSON (so one validator checks both)."""
    spans = []
    for f, wt, v in _fields(body):
        if f != 1 or wt != 2:
            raise ValueError('ListOfSpans: field %d' % f)
        s = {'tags': {}}
        for sf, swt, sv in _fields(v):
            if sf == 1:
                if len(sv) not in (8, 16):
                    raise ValueError('trace_id of %d bytes' % len(sv))
                s['traceId'] = sv.hex()
            elif sf in (2, 3):
                if len(sv) != 8:
                    raise ValueError('span id of %d bytes' % len(sv))
                s['parentId' if sf == 2 else 'id'] = sv.hex()
            elif sf == 4:
                s['kind'] = {1: 'CLIENT', 2: 'SERVER', 3: 'PRODUCER', 4: 'CONSUMER'}[sv]
            elif sf == 5:
                s['name'] = sv.decode()
            elif sf == 6:
                if swt != 1:
                    raise ValueError('timestamp is not fixed64')
                s['timestamp'] = sv
            elif sf == 7:
                s['duration'] = sv
            elif sf == 8:
                ep = {}
                for ef, _, ev in _fields(sv):
                    if ef == 1:
                        ep['serviceName'] = ev.decode()
                    elif ef == 2:
                        ep['ipv4'] = socket.inet_ntop(socket.AF_INET, ev)
                    elif ef == 3:
                        ep['ipv6'] = socket.inet_ntop(socket.AF_INET6, ev)
                    else:
                        raise ValueError('Endpoint: field %d' % ef)
                s['localEndpoint'] = ep
            elif sf == 11:
                kv = dict((ef, ev.decode()) for ef, _, ev in _fields(sv))
                s['tags'][kv[1]] = kv[2]
            elif sf == 12:
                s['debug'] = bool(sv)
            elif sf == 13:
                s['shared'] = bool(sv)
            else:
                raise ValueError('Span: field %d' % sf)
        spans.append(s)
    return spans


class ZipkinCollector:

    def __init__(self, mode='ok'):
        self.mode = mode
        self.spans = []
        self.invalid = []
        self.reports = []  # (path, content_type, host, number of spans)
        self.lock = threading.Lock()
        self.stalled = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get('content-length', '0'))
                body = self.rfile.read(n)
                ctype = self.headers.get('content-type', '')
                try:
                    if ctype == 'application/x-protobuf':
                        spans = decode_proto(body)
                    else:
                        spans = json.loads(body)
                        if not isinstance(spans, list):
                            raise ValueError('not a list')
                    bad = [(s, validate_span(s)) for s in spans if validate_span(s)]
                except (ValueError, KeyError, IndexError, UnicodeDecodeError) as e:
                    spans, bad = [], [(body[:200], 'undecodable: %s' % e)]
                with collector.lock:
                    collector.reports.append((self.path, ctype, self.headers.get('host'),
                                              len(spans)))
                    collector.spans.extend(spans)
                    collector.invalid.extend(bad)
                if collector.mode == 'stall':
                    ev = threading.Event()
                    collector.stalled.append(ev)
                    ev.wait(60)
                    self.close_connection = True
                    return
                code = 202
                if collector.mode.startswith('status:'):
                    code = int(collector.mode.split(':')[1])
                self.send_response(code)
                self.send_header('content-length', '0')
                self.end_headers()

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def snapshot(self):
        with self.lock:
            return list(self.spans)

    def wait_spans(self, n, timeout=10, where=None):
        """Waits until at least n spans (matching where, when given) came; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            spans = [s for s in self.snapshot() if where is None or where(s)]
            if len(spans) >= n or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)

    def close(self):
        for ev in self.stalled:
            ev.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
