"""An HTTP/2 upstream for integration tests (h2c, or h2 over TLS by ALPN), on python3-h2.

One thread per connection runs the h2 state machine; streams on a connection are answered
by path once their request has ended:

  /echo...            200, JSON {method, path, authority, scheme, headers, body_len,
                      body_sha256, trailers, conn_id, stream_id}
  /bytes/<n>          n pattern bytes (harness.pattern_bytes), within the client's windows
  /trailers           200, body "hello", trailers grpc-status: 0, x-trailer: done
  /hold               answered (echo) by a /release or /goaway on the same connection, or 504
                      after `hold_timeout` seconds
  /release            answers every /hold on the connection, then itself
                      (`release_all()` answers the holds of every connection)
  /rst/<code>         RST_STREAM with that error code, no answer
  /goaway             GOAWAY with last_stream_id = the lowest open stream; the streams up to it
                      are answered (holds too), the others abandoned; the connection closes
                      when they are done
  /close              closes the TCP connection without an answer

The server records every request (`requests`), each connection's peak of concurrently open
streams (`max_open[conn_id]`), connections accepted (`accepted`), streams reset by the
client (`client_resets`).
"""
import hashlib
import json
import os
import select
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.errors  # noqa: E402
import h2.exceptions  # noqa: E402
import h2.settings  # noqa: E402


class _Stream:
    def __init__(self, sid, headers):
        self.id = sid
        self.headers = headers
        self.body = hashlib.sha256()
        self.body_len = 0
        self.trailers = []
        self.ended = False
        self.held_since = None
        self.out = b''          # response body to send, from out_pos on
        self.out_pos = 0
        self.out_trailers = None
        self.out_end = False

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v
        return None


class H2Upstream:
    def __init__(self, max_concurrent_streams=100, ssl_context=None, hold_timeout=None,
                 initial_window_size=65535):
        self.max_concurrent_streams = max_concurrent_streams
        self.initial_window_size = initial_window_size
        self.ssl_context = ssl_context
        self.hold_timeout = hold_timeout if hold_timeout is not None else h.scaled(20)
        self.requests = []
        self.max_open = {}
        self.accepted = 0
        self.client_resets = []
        self.stalled = set()    # (conn_id, stream_id, path) waiting for the client's window
        self.alpn = []
        self.errors = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(('127.0.0.1', 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self._stop = False
        self._release_gen = 0
        self._threads = []
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._stop = True
        try:
            self._sock.close()
        except OSError:
            pass
        for t in self._threads:
            t.join(5)

    def release_all(self):
        """Answers every /hold open now, on every connection."""
        with self._lock:
            self._release_gen += 1

    def wait_requests(self, n, timeout=10):
        return h.wait_until(lambda: len(self.requests) >= n, timeout,
                            message='%d requests (have %d)' % (n, len(self.requests)))

    def _accept_loop(self):
        while not self._stop:
            try:
                r, _, _ = select.select([self._sock], [], [], 0.05)
            except (OSError, ValueError):
                return
            if not r:
                continue
            try:
                s, _ = self._sock.accept()
            except OSError:
                return
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.accepted += 1
                cid = self.accepted
            t = threading.Thread(target=self._serve, args=(s, cid), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, s, cid):
        try:
            if self.ssl_context is not None:
                s = self.ssl_context.wrap_socket(s, server_side=True)
                self.alpn.append(s.selected_alpn_protocol())
            _Conn(self, s, cid).run()
        except Exception as e:  # noqa: BLE001 - recorded for the test to see
            self.errors.append(repr(e))
        finally:
            try:
                s.close()
            except OSError:
                pass


class _Conn:
    def __init__(self, srv, sock, cid):
        self.srv = srv
        self.sock = sock
        self.cid = cid
        cfg = h2.config.H2Configuration(client_side=False, header_encoding='utf-8',
                                        validate_inbound_headers=True)
        self.h2 = h2.connection.H2Connection(config=cfg)
        self.streams = {}
        self.goaway_last = None
        self.closed = False
        self.release_seen = srv._release_gen

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def run(self):
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.srv.max_concurrent_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.srv.initial_window_size,
        })
        self.h2.initiate_connection()
        self.flush()
        self.sock.settimeout(0.05)
        while not self.srv._stop and not self.closed:
            try:
                data = self.sock.recv(65536)
                if not data:
                    return
            except (socket.timeout, ssl.SSLWantReadError):
                data = None
            except OSError:
                return
            if data:
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as e:
                    self.srv.errors.append('protocol error: %r' % e)
                    self.flush()
                    return
                for ev in events:
                    self.on_event(ev)
            self.check_holds()
            self.pump()
            self.flush()
            if self.goaway_last is not None and not self.streams:
                return

    def on_event(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            st = _Stream(ev.stream_id, ev.headers)
            self.streams[ev.stream_id] = st
            with self.srv._lock:
                peak = self.srv.max_open.get(self.cid, 0)
                self.srv.max_open[self.cid] = max(peak, len(self.streams))
            if ev.stream_ended:
                self.on_end(st)
        elif isinstance(ev, h2.events.DataReceived):
            st = self.streams.get(ev.stream_id)
            self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if st is not None:
                st.body.update(ev.data)
                st.body_len += len(ev.data)
                if ev.stream_ended:
                    self.on_end(st)
        elif isinstance(ev, h2.events.TrailersReceived):
            st = self.streams.get(ev.stream_id)
            if st is not None:
                st.trailers = ev.headers
                self.on_end(st)
        elif isinstance(ev, h2.events.StreamEnded):
            st = self.streams.get(ev.stream_id)
            if st is not None and not st.ended:
                self.on_end(st)
        elif isinstance(ev, h2.events.StreamReset):
            self.srv.client_resets.append((self.cid, ev.stream_id, ev.error_code))
            self.streams.pop(ev.stream_id, None)

    def record(self, st):
        rec = {'conn_id': self.cid, 'stream_id': st.id, 'method': st.header(':method'),
               'path': st.header(':path'), 'authority': st.header(':authority'),
               'scheme': st.header(':scheme'), 'headers': st.headers,
               'body_len': st.body_len, 'body_sha256': st.body.hexdigest(),
               'trailers': st.trailers}
        with self.srv._lock:
            self.srv.requests.append(rec)
        return rec

    def on_end(self, st):
        st.ended = True
        rec = self.record(st)
        path = rec['path'] or '/'
        if path.startswith('/hold'):
            st.held_since = time.monotonic()
        elif path.startswith('/release'):
            for other in list(self.streams.values()):
                if other.held_since is not None:
                    self.answer_echo(other)
            self.answer_echo(st)
        elif path.startswith('/goaway'):
            # The answers go out before the GOAWAY: h2 sends nothing after it.
            last = min(self.streams)
            self.goaway_last = last
            for other in list(self.streams.values()):
                if other.id <= last and (other.held_since is not None or other is st):
                    self.answer_echo(other)
            self.pump()
            self.h2.close_connection(last_stream_id=last)
            self.streams.clear()
        elif path.startswith('/rst/'):
            code = int(path.split('/')[2])
            self.h2.reset_stream(st.id, error_code=code)
            del self.streams[st.id]
        elif path.startswith('/close'):
            self.closed = True
            self.sock.close()
        elif path.startswith('/bytes/'):
            n = int(path.split('/')[2])
            self.h2.send_headers(st.id, [(':status', '200'), ('content-length', str(n))])
            st.out = h.pattern_bytes(0, n)
            st.out_end = True
        elif path.startswith('/trailers'):
            self.h2.send_headers(st.id, [(':status', '200'), ('content-type', 'text/plain')])
            st.out = b'hello'
            st.out_trailers = [('grpc-status', '0'), ('x-trailer', 'done')]
            st.out_end = True
        else:
            self.answer_echo(st)

    def answer_echo(self, st):
        rec = {'method': st.header(':method'), 'path': st.header(':path'),
               'authority': st.header(':authority'), 'scheme': st.header(':scheme'),
               'headers': st.headers, 'body_len': st.body_len,
               'body_sha256': st.body.hexdigest(), 'trailers': st.trailers,
               'conn_id': self.cid, 'stream_id': st.id}
        body = json.dumps(rec).encode()
        self.h2.send_headers(st.id, [(':status', '200'), ('content-type', 'application/json'),
                                     ('content-length', str(len(body)))])
        st.held_since = None
        st.out = body
        st.out_end = True

    def check_holds(self):
        if self.srv._release_gen != self.release_seen:
            self.release_seen = self.srv._release_gen
            for st in list(self.streams.values()):
                if st.held_since is not None:
                    self.answer_echo(st)
        now = time.monotonic()
        for st in list(self.streams.values()):
            if st.held_since is not None and now - st.held_since > self.srv.hold_timeout:
                st.held_since = None
                self.h2.send_headers(st.id, [(':status', '504')], end_stream=True)
                del self.streams[st.id]

    def pump(self):
        """Sends what response bodies the windows allow."""
        for st in list(self.streams.values()):
            if not st.out_end:
                continue
            key = (self.cid, st.id, st.header(':path'))
            while st.out_pos < len(st.out):
                try:
                    window = self.h2.local_flow_control_window(st.id)
                except h2.exceptions.StreamClosedError:
                    st.out_pos = len(st.out)
                    break
                n = min(window, self.h2.max_outbound_frame_size, len(st.out) - st.out_pos)
                if n <= 0:
                    self.srv.stalled.add(key)
                    break
                self.srv.stalled.discard(key)
                self.h2.send_data(st.id, st.out[st.out_pos:st.out_pos + n])
                st.out_pos += n
                self.flush()
            if st.out_pos >= len(st.out):
                self.srv.stalled.discard(key)
                try:
                    if st.out_trailers:
                        self.h2.send_headers(st.id, st.out_trailers, end_stream=True)
                    else:
                        self.h2.end_stream(st.id)
                except h2.exceptions.StreamClosedError:
                    pass
                del self.streams[st.id]
