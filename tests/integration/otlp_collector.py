"""An OTLP trace collector stand-in: ExportTraceServiceRequest over HTTP (POST
application/x-protobuf, answers 200 with an empty ExportTraceServiceResponse) or over gRPC
(python3-grpcio, the unary method opentelemetry.proto.collector.trace.v1.TraceService/Export
with raw bytes), decoded by hand against opentelemetry/proto/trace/v1/trace.proto.

Each decoded span is a dict: trace_id / span_id / parent_span_id (hex), name, kind (2 SERVER,
3 CLIENT), start / end (ns), attributes {key: string}, status_code; the resource's attributes
land in ``.resources``. A message that does not decode is kept in ``.invalid``.
"""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from zipkin_collector import _fields


def _kv(b):
    key = val = None
    for f, _, v in _fields(b):
        if f == 1:
            key = v.decode()
        elif f == 2:
            for af, _, av in _fields(v):
                if af == 1:
                    val = av.decode()
                else:
                    raise ValueError('AnyValue: only string_value expected, got %d' % af)
    if key is None or val is None:
        raise ValueError('KeyValue without key or value')
    return key, val


def decode_export(body):
    resources, spans = [], []
    for f, wt, rs in _fields(body):
        if f != 1 or wt != 2:
            raise ValueError('ExportTraceServiceRequest: field %d' % f)
        for rf, _, rv in _fields(rs):
            if rf == 1:
                resources.append(dict(_kv(a) for af, _, a in _fields(rv) if af == 1))
            elif rf == 2:
                for sf, _, sv in _fields(rv):
                    if sf == 1:
                        continue  # InstrumentationScope
                    if sf != 2:
                        raise ValueError('ScopeSpans: field %d' % sf)
                    s = {'attributes': {}, 'status_code': 0}
                    for pf, pwt, pv in _fields(sv):
                        if pf == 1:
                            if len(pv) != 16:
                                raise ValueError('trace_id of %d bytes' % len(pv))
                            s['trace_id'] = pv.hex()
                        elif pf in (2, 4):
                            if len(pv) != 8:
                                raise ValueError('span id of %d bytes' % len(pv))
                            s['span_id' if pf == 2 else 'parent_span_id'] = pv.hex()
                        elif pf == 5:
                            s['name'] = pv.decode()
                        elif pf == 6:
                            s['kind'] = pv
                        elif pf in (7, 8):
                            if pwt != 1:
                                raise ValueError('time is not fixed64')
                            s['start' if pf == 7 else 'end'] = pv
                        elif pf == 9:
                            k, v = _kv(pv)
                            s['attributes'][k] = v
                        elif pf == 15:
                            for cf, _, cv in _fields(pv):
                                if cf == 3:
                                    s['status_code'] = cv
                        else:
                            raise ValueError('Span: field %d' % pf)
                    for k in ('trace_id', 'span_id', 'name', 'kind', 'start', 'end'):
                        if k not in s:
                            raise ValueError('span without %s' % k)
                    if s['end'] < s['start']:
                        raise ValueError('span ends before it starts')
                    spans.append(s)
            else:
                raise ValueError('ResourceSpans: field %d' % rf)
    return resources, spans


class OtlpCollector:

    def __init__(self, grpc_mode=False):
        self.spans, self.resources, self.invalid, self.requests = [], [], [], []
        self.lock = threading.Lock()
        self.grpc_mode = grpc_mode
        if grpc_mode:
            import grpc
            from concurrent import futures

            def export(request, context):
                self._take(request, dict(context.invocation_metadata()))
                return b''

            handler = grpc.method_handlers_generic_handler(
                'opentelemetry.proto.collector.trace.v1.TraceService',
                {'Export': grpc.unary_unary_rpc_method_handler(
                    export, request_deserializer=None, response_serializer=None)})
            self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
            self.server.add_generic_rpc_handlers((handler,))
            self.port = self.server.add_insecure_port('127.0.0.1:0')
            self.server.start()
            return
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get('content-length', '0')))
                collector._take(body, {'path': self.path,
                                       'content-type': self.headers.get('content-type'),
                                       'host': self.headers.get('host')})
                self.send_response(200)
                self.send_header('content-type', 'application/x-protobuf')
                self.send_header('content-length', '0')
                self.end_headers()

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _take(self, body, meta):
        try:
            resources, spans = decode_export(body)
        except (ValueError, KeyError, IndexError, UnicodeDecodeError) as e:
            resources, spans = [], []
            with self.lock:
                self.invalid.append(str(e))
        with self.lock:
            self.requests.append(meta)
            self.resources.extend(resources)
            self.spans.extend(spans)

    def wait_spans(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                spans = list(self.spans)
            if len(spans) >= n or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)

    def close(self):
        if self.grpc_mode:
            self.server.stop(0)
        else:
            self.server.shutdown()
            self.server.server_close()
