"""A small HTTP/2 client for the tests, on Python's `h2` package (Debian python3-h2).

``H2Client(port, ssl_context=None, settings=None)`` connects (prior knowledge, or TLS with
ALPN h2 when an SSLContext is given) and sends the preface. Requests are started with
``request()``; ``pump(pred, timeout)`` reads and processes frames until ``pred()`` is true
(waiting for conditions, never for a fixed time). Each stream's events are kept in
``streams[sid]`` (a ``Stream``). ``raw_frames`` keeps every frame received, for tests that
look at GOAWAY and RST_STREAM codes. ``send_raw(bytes)`` writes hand-made frames.
"""

import socket
import ssl
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

import harness

PING = b'\x00\x00\x08\x06\x00\x00\x00\x00\x00' + b'\x00' * 8
SETTINGS_EMPTY = b'\x00\x00\x00\x04\x00\x00\x00\x00\x00'


def frame(ftype, flags, sid, payload=b''):
    """One raw frame."""
    n = len(payload)
    return bytes([n >> 16 & 255, n >> 8 & 255, n & 255, ftype, flags]) + \
        (sid & 0x7fffffff).to_bytes(4, 'big') + payload


def priority_frame(sid, dep=0, weight=15):
    return frame(2, 0, sid, dep.to_bytes(4, 'big') + bytes([weight]))


def rst_frame(sid, code=8):
    return frame(3, 0, sid, code.to_bytes(4, 'big'))


class GoAway:
    def __init__(self, last_stream_id, error_code):
        self.last_stream_id = last_stream_id
        self.error_code = error_code

    def __repr__(self):
        return 'GoAway(last_stream_id=%d, error_code=%d)' % (self.last_stream_id,
                                                              self.error_code)


class Stream:
    def __init__(self, sid):
        self.sid = sid
        self.headers = None
        self.interim = []
        self.data = bytearray()
        self.trailers = None
        self.ended = False
        self.reset = None       # error code of a RST_STREAM from the server

    @property
    def done(self):
        return self.ended or self.reset is not None

    @property
    def status(self):
        return int(self.header(':status')) if self.headers else None

    def header(self, name, default=None):
        for n, v in self.headers or []:
            if n == name:
                return v
        return default


class H2Client:
    def __init__(self, port, ssl_context=None, settings=None, timeout=10, host='127.0.0.1',
                 auto_ack=True):
        sock = socket.create_connection((host, port), timeout=harness.scaled(timeout))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname='localhost')
        self.sock = sock
        cfg = h2.config.H2Configuration(client_side=True, header_encoding='utf-8',
                                        validate_outbound_headers=False,
                                        normalize_outbound_headers=False,
                                        validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(cfg)
        self.conn.initiate_connection()
        if settings:
            # A SETTINGS frame of its own: h2 applies changes when they are acknowledged.
            self.conn.update_settings(settings)
        self.streams = {}
        self.events = []
        self.goaway = None       # the last GOAWAY (a GoAway)
        self.inbuf = b''
        self.goaways = []
        self.closed = False      # EOF or reset from the server
        # Window given back for received data at once: True (stream and connection), 'conn'
        # (the connection's only: a stream that is not read stalls alone), False (none).
        self.auto_ack = auto_ack
        self.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.send_raw(data)

    def send_raw(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    # -- requests --------------------------------------------------------------------------

    def request(self, method='GET', path='/', headers=(), body=None, authority='test',
                end=None, trailers=None):
        """Starts a stream; returns its id. ``body`` (bytes) is sent as flow control allows
        (``pump`` keeps sending); ``end`` False leaves the stream open for send_data."""
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(':method', method), (':path', path), (':scheme', 'http'),
                (':authority', authority)] + list(headers)
        st = Stream(sid)
        self.streams[sid] = st
        st.pending = bytearray(body or b'')
        st.pending_end = end if end is not None else True
        st.pending_trailers = trailers
        no_body = not body and trailers is None
        self.conn.send_headers(sid, hdrs, end_stream=no_body and st.pending_end)
        if no_body:
            st.pending_end = False
        self._send_pending()
        self.flush()
        return sid

    def send_data(self, sid, data, end=False):
        st = self.streams[sid]
        st.pending += data
        st.pending_end = end
        self._send_pending()
        self.flush()

    def reset(self, sid, code=8):
        self.conn.reset_stream(sid, code)
        self.flush()

    def _send_pending(self):
        for st in self.streams.values():
            if not hasattr(st, 'pending'):
                continue
            while st.pending:
                try:
                    win = self.conn.local_flow_control_window(st.sid)
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    st.pending = bytearray()
                    break
                n = min(win, self.conn.max_outbound_frame_size, len(st.pending))
                if n <= 0:
                    break
                last = n == len(st.pending) and st.pending_end and st.pending_trailers is None
                self.conn.send_data(st.sid, bytes(st.pending[:n]), end_stream=last)
                del st.pending[:n]
                if last:
                    st.pending_end = False
            if not st.pending and st.pending_end:
                try:
                    if st.pending_trailers is not None:
                        self.conn.send_headers(st.sid, st.pending_trailers, end_stream=True)
                    else:
                        self.conn.end_stream(st.sid)
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    pass
                st.pending_end = False

    # -- receiving -------------------------------------------------------------------------

    def _handle(self, ev):
        self.events.append(ev)
        sid = getattr(ev, 'stream_id', None)
        st = self.streams.get(sid) if sid else None
        if isinstance(ev, h2.events.ResponseReceived) and st:
            st.headers = ev.headers
        elif isinstance(ev, h2.events.InformationalResponseReceived) and st:
            st.interim.append(ev.headers)
        elif isinstance(ev, h2.events.TrailersReceived) and st:
            st.trailers = ev.headers
        elif isinstance(ev, h2.events.DataReceived):
            if st:
                st.data += ev.data
            if self.auto_ack and ev.flow_controlled_length:
                try:
                    if self.auto_ack == 'conn':   # the connection's window only
                        self.conn.increment_flow_control_window(ev.flow_controlled_length)
                    else:
                        self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    pass
        elif isinstance(ev, h2.events.StreamEnded) and st:
            st.ended = True
        elif isinstance(ev, h2.events.StreamReset) and st:
            st.reset = ev.error_code

    def read_once(self, timeout):
        """Reads what arrives within timeout; returns False on EOF."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(262144)
        except socket.timeout:
            return True
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        # GOAWAY frames are taken out here: h2 treats the first one as the end of the
        # connection, while a graceful one lets the streams below its last id finish.
        # RST_STREAM codes are read here too (h2 drops those for streams it did not open,
        # the ones tests write by hand). Frames go to h2 one by one, so one it refuses does
        # not hide the others.
        self.inbuf += data
        events = []
        while len(self.inbuf) >= 9:
            n = int.from_bytes(self.inbuf[:3], 'big')
            if len(self.inbuf) < 9 + n:
                break
            fr, self.inbuf = self.inbuf[:9 + n], self.inbuf[9 + n:]
            if fr[3] == 7 and n >= 8:
                g = GoAway(int.from_bytes(fr[9:13], 'big') & 0x7fffffff,
                           int.from_bytes(fr[13:17], 'big'))
                self.goaway = g
                self.goaways.append(g)
                continue
            if fr[3] == 3 and n == 4:
                sid = int.from_bytes(fr[5:9], 'big') & 0x7fffffff
                if sid in self.streams:
                    self.streams[sid].reset = int.from_bytes(fr[9:13], 'big')
            try:
                events += self.conn.receive_data(fr)
            except h2.exceptions.ProtocolError:
                pass
        for ev in events:
            self._handle(ev)
        self._send_pending()
        self.flush()
        return True

    def pump(self, pred, timeout=10, message='condition'):
        deadline = time.monotonic() + harness.scaled(timeout)
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError('timed out waiting for %s' % message)
            if not self.read_once(min(left, 0.2)) and not pred():
                raise AssertionError('connection closed while waiting for %s' % message)
        return True

    def response(self, sid, timeout=10):
        st = self.streams[sid]
        self.pump(lambda: st.done, timeout, 'stream %d' % sid)
        return st

    def wait_closed(self, timeout=10):
        """Reads (and drops) until the server closes; True if it did."""
        deadline = time.monotonic() + harness.scaled(timeout)
        while time.monotonic() < deadline:
            if not self.read_once(0.2):
                return True
        return False

    def wait_goaway(self, timeout=10):
        self.pump(lambda: self.goaway is not None, timeout, 'GOAWAY')
        return self.goaway
