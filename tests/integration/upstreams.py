"""Controllable peers for integration tests: TCP echo/sink/source servers, an HTTP/1.1 upstream
with byte-level behaviours, and WebSocket client helpers.

Every server listens on 127.0.0.1, port 0 (ephemeral) unless told otherwise, exposes ``.port``,
starts accepting in a daemon thread as soon as it is constructed, handles each connection in its
own daemon thread, and is a context manager; ``close()`` stops the listener and every live
connection. Every socket operation has a timeout (``timeout`` for I/O, ``idle_timeout`` while
waiting for a peer that may legitimately be quiet; both scaled by ``harness.SLOW``). Pass
``ssl_context`` (a server-side ``ssl.SSLContext``) to wrap accepted connections in TLS.

Common attributes of all servers:
  ``.port``, ``.accepted`` (== ``.connections``: connections accepted so far), ``.active``
  (open now), ``.errors`` (list of (conn_id, repr(exception)) from handler threads),
  ``.conn_info`` ({conn_id: {'peer', and with TLS 'tls_version', 'alpn', 'cipher'}}),
  ``wait_accepted(n, timeout=10)``, ``drop_connections()``, ``close()``.
"""

import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
from http import HTTPStatus

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (BadMessage, ConnectionClosed, SockReader, StreamSha256,  # noqa: E402
                     get_header, pattern_chunks, read_chunked, read_head, scaled,
                     shutdown_write, _abort_socket, _header_tokens, parse_head_bytes, Response,
                     recv_exact)

__all__ = ['TcpEchoServer', 'TcpSinkServer', 'TcpSourceServer', 'HttpUpstream',
           'RequestRecord', 'websocket_client_handshake', 'ws_send', 'ws_recv',
           'ws_encode_frame', 'ws_read_frame', 'ws_accept_key', 'WS_OP_CONT', 'WS_OP_TEXT',
           'WS_OP_BINARY', 'WS_OP_CLOSE', 'WS_OP_PING', 'WS_OP_PONG']


class _Abort(Exception):
    """Raised inside a handler to end a connection that was already closed/reset on purpose."""


def _drain_and_close(sock, timeout):
    """After our FIN, read (and drop) until the peer closes or ``timeout`` passes, so closing
    does not turn into a RST because of unread input (e.g. a pipelined request)."""
    try:
        sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                break
    except (OSError, ssl.SSLError, ValueError):
        pass


# ---------------------------------------------------------------------------------------------
# Server base
# ---------------------------------------------------------------------------------------------

class _Server:
    """Listening socket + accept thread + one daemon thread per connection."""

    def __init__(self, host='127.0.0.1', port=0, ssl_context=None, timeout=10, idle_timeout=60,
                 backlog=128):
        self.host = host
        self.ssl_context = ssl_context
        self.timeout = scaled(timeout)
        self.idle_timeout = scaled(idle_timeout)
        self.accepted = 0
        self.errors = []
        self.conn_info = {}
        self._cond = threading.Condition()
        self._conns = {}                    # conn_id -> fd of the live socket
        self._threads = []
        self._closing = threading.Event()
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        self._lsock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._lsock.bind((host, port))
            self._lsock.listen(backlog)
            self._lsock.settimeout(0.5)     # accept loop re-checks _closing at least this often
        except BaseException:
            self._lsock.close()
            raise
        self.port = self._lsock.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name='%s:%d' % (type(self).__name__, self.port),
            daemon=True)
        self._accept_thread.start()

    # -- public ---------------------------------------------------------------------------------

    @property
    def connections(self):
        """Number of connections accepted so far (alias of ``accepted``)."""
        return self.accepted

    @property
    def active(self):
        """Number of connections currently open."""
        with self._cond:
            return len(self._conns)

    @property
    def address(self):
        return (self.host, self.port)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def wait_for(self, predicate, timeout=10, message='condition'):
        """Wait (scaled timeout) until ``predicate()`` is true, re-checked whenever the server's
        state changes; returns its value or raises AssertionError."""
        with self._cond:
            ok = self._cond.wait_for(predicate, scaled(timeout))
        if not ok:
            raise AssertionError('%s: %s not reached within %.0fs'
                                 % (type(self).__name__, message, scaled(timeout)))
        return ok

    def wait_accepted(self, n, timeout=10):
        """Wait until at least ``n`` connections were accepted."""
        return self.wait_for(lambda: self.accepted >= n, timeout, '%d accepted' % n)

    def wait_idle(self, timeout=10):
        """Wait until no connection is open."""
        return self.wait_for(lambda: not self._conns, timeout, 'no open connection') or True

    def drop_connections(self):
        """Shut down (FIN both ways) every open connection; the server keeps listening."""
        fds = []
        with self._cond:                    # dup under the lock: the fds cannot be reused yet
            for fd in self._conns.values():
                try:
                    fds.append(os.dup(fd))
                except OSError:
                    pass
        for fd in fds:
            s = socket.socket(fileno=fd)
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        """Stop listening, shut every connection down and join the threads (bounded)."""
        if self._closing.is_set():
            return
        self._closing.set()
        try:
            self._lsock.shutdown(socket.SHUT_RDWR)      # wakes accept() on Linux
        except OSError:
            pass
        self._lsock.close()
        self.drop_connections()
        deadline = time.monotonic() + 5
        for t in [self._accept_thread] + list(self._threads):
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))

    # -- internals ------------------------------------------------------------------------------

    def _unregister(self, cid):
        """Forget connection ``cid`` (call before closing its socket out of band)."""
        with self._cond:
            self._conns.pop(cid, None)
            self._cond.notify_all()

    def _accept_loop(self):
        while not self._closing.is_set():
            try:
                conn, addr = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._closing.is_set():
                    break
                time.sleep(0.01)
                continue
            try:
                # Responses go out in several writes; without this Nagle adds ~40 ms.
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            with self._cond:
                if self._closing.is_set():
                    conn.close()
                    break
                self.accepted += 1
                cid = self.accepted
                self._conns[cid] = conn.fileno()
                self.conn_info[cid] = {'peer': addr}
                self._cond.notify_all()
            t = threading.Thread(target=self._conn_main, args=(conn, cid),
                                 name='%s:%d#%d' % (type(self).__name__, self.port, cid),
                                 daemon=True)
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def _conn_main(self, conn, cid):
        sock = conn
        try:
            conn.settimeout(self.timeout)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(conn, server_side=True)
                self.conn_info[cid].update(tls_version=sock.version(),
                                           alpn=sock.selected_alpn_protocol(),
                                           cipher=sock.cipher(),
                                           sni=getattr(sock, 'petrel_sni', None))
            self.handle(sock, cid)
        except _Abort:
            pass
        except Exception as e:   # a peer misbehaving (or the test closing us) is not fatal
            if not self._closing.is_set():
                self.errors.append((cid, repr(e)))
        finally:
            self._unregister(cid)
            try:
                sock.close()
            except OSError:
                pass

    def handle(self, sock, cid):
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# TCP servers
# ---------------------------------------------------------------------------------------------

class TcpEchoServer(_Server):
    """Echoes every byte back. On the client's FIN it finishes echoing, then half-closes its
    own side (FIN), so FIN propagation can be checked both ways.

    ``TcpEchoServer(host='127.0.0.1', port=0, ssl_context=None, timeout=10, idle_timeout=60)``.
    ``.results``: per finished connection {'conn_id', 'bytes', 'peer_fin'}.
    """

    def __init__(self, **kw):
        self.results = []
        super().__init__(**kw)

    def handle(self, sock, cid):
        sock.settimeout(self.idle_timeout)
        total, fin = 0, False
        try:
            while True:
                try:
                    data = sock.recv(65536)
                except ssl.SSLEOFError:
                    data = b''
                if not data:
                    fin = True
                    break
                sock.sendall(data)
                total += len(data)
            sock.settimeout(scaled(1))
            shutdown_write(sock, tls_close_notify=True)
        finally:
            with self._cond:
                self.results.append({'conn_id': cid, 'bytes': total, 'peer_fin': fin})
                self._cond.notify_all()

    def wait_results(self, n, timeout=10):
        """Wait until ``n`` connections finished; returns ``.results``."""
        self.wait_for(lambda: len(self.results) >= n, timeout, '%d finished' % n)
        return self.results


class TcpSinkServer(_Server):
    """Reads each connection until EOF, recording its byte count and sha256.

    ``TcpSinkServer(reply=False, **server_kw)``: with ``reply=True``, after the client's FIN it
    sends one line ``b"<nbytes> <sha256hex>\\n"`` and closes (half-close test: the client shuts
    down its write side and still reads the reply).
    ``.results``: per connection {'conn_id', 'bytes', 'sha256', 'eof' (clean FIN seen),
    'error'}; ``wait_results(n)``.
    """

    def __init__(self, reply=False, **kw):
        self.reply = reply
        self.results = []
        super().__init__(**kw)

    def handle(self, sock, cid):
        sock.settimeout(self.idle_timeout)
        h = StreamSha256()
        rec = {'conn_id': cid, 'bytes': 0, 'sha256': None, 'eof': False, 'error': None}
        try:
            while True:
                try:
                    data = sock.recv(1 << 20)
                except ssl.SSLEOFError:
                    data = b''
                if not data:
                    rec['eof'] = True
                    break
                h.update(data)
        except Exception as e:
            rec['error'] = repr(e)
        rec['bytes'], rec['sha256'] = h.n, h.hexdigest()
        with self._cond:
            self.results.append(rec)
            self._cond.notify_all()
        if self.reply and rec['eof']:
            sock.settimeout(self.timeout)
            sock.sendall(b'%d %s\n' % (h.n, h.hexdigest().encode()))
            shutdown_write(sock)

    def wait_results(self, n, timeout=10):
        """Wait until ``n`` connections finished; returns ``.results``."""
        self.wait_for(lambda: len(self.results) >= n, timeout, '%d finished' % n)
        return self.results


class TcpSourceServer(_Server):
    """On accept sends ``nbytes`` of the pattern stream (``harness.pattern_bytes(offset, n)``),
    then half-closes (FIN); keeps reading until the peer closes.

    ``TcpSourceServer(nbytes, offset=0, **server_kw)``.
    ``.results``: per connection {'conn_id', 'sent', 'send_error', 'received',
    'received_sha256', 'peer_fin' (True if the peer's FIN arrived, False on reset/timeout)}.
    """

    def __init__(self, nbytes, offset=0, **kw):
        self.nbytes = nbytes
        self.offset = offset
        self.results = []
        super().__init__(**kw)

    def handle(self, sock, cid):
        rec = {'conn_id': cid, 'sent': 0, 'send_error': None, 'received': 0,
               'received_sha256': None, 'peer_fin': False}

        def sender():
            try:
                for piece in pattern_chunks(self.nbytes, 256 * 1024, self.offset):
                    sock.sendall(piece)
                    rec['sent'] += len(piece)
                shutdown_write(sock)
            except Exception as e:
                rec['send_error'] = repr(e)

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        h = StreamSha256()
        idle_since = time.monotonic()
        try:
            while True:
                try:
                    data = sock.recv(1 << 20)
                except ssl.SSLEOFError:
                    data = b''
                except socket.timeout:
                    # Keep waiting while still sending (slow reader) or the peer is merely idle.
                    if t.is_alive():
                        idle_since = time.monotonic()
                        continue
                    if time.monotonic() - idle_since < self.idle_timeout:
                        continue
                    raise
                if not data:
                    rec['peer_fin'] = True
                    break
                h.update(data)
        except Exception:
            pass
        finally:
            t.join(self.timeout)
            rec['received'], rec['received_sha256'] = h.n, h.hexdigest()
            with self._cond:
                self.results.append(rec)
                self._cond.notify_all()

    def wait_results(self, n, timeout=10):
        """Wait until ``n`` connections finished; returns ``.results``."""
        self.wait_for(lambda: len(self.results) >= n, timeout, '%d finished' % n)
        return self.results


# ---------------------------------------------------------------------------------------------
# WebSocket framing (RFC 6455)
# ---------------------------------------------------------------------------------------------

WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
WS_OP_CONT, WS_OP_TEXT, WS_OP_BINARY = 0x0, 0x1, 0x2
WS_OP_CLOSE, WS_OP_PING, WS_OP_PONG = 0x8, 0x9, 0xA


def ws_accept_key(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode('ascii')).digest()).decode()


def ws_encode_frame(payload, opcode=WS_OP_TEXT, mask=True, fin=True):
    """One frame; clients must mask (``mask=True``), servers must not."""
    if isinstance(payload, str):
        payload = payload.encode('utf-8')
    head = bytearray([(0x80 if fin else 0) | opcode])
    mbit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head.append(mbit | n)
    elif n < 65536:
        head.append(mbit | 126)
        head += struct.pack('!H', n)
    else:
        head.append(mbit | 127)
        head += struct.pack('!Q', n)
    if mask:
        key = os.urandom(4)
        head += key
        payload = _ws_mask(payload, key)
    return bytes(head) + bytes(payload)


def _ws_mask(data, key):
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, 'big') ^ int.from_bytes(k, 'big')).to_bytes(n, 'big')


def ws_read_frame(read_exact):
    """Read one frame with ``read_exact(n)``; returns (fin, opcode, payload unmasked)."""
    b0, b1 = read_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack('!H', read_exact(2))[0]
    elif n == 127:
        n = struct.unpack('!Q', read_exact(8))[0]
    key = read_exact(4) if b1 & 0x80 else None
    payload = read_exact(n) if n else b''
    if key:
        payload = _ws_mask(payload, key)
    return bool(b0 & 0x80), b0 & 0x0F, payload


def websocket_client_handshake(sock, host, path='/ws', headers=None, check=True):
    """Send a WebSocket upgrade request on ``sock`` and read the answer head byte by byte (so
    no frame bytes are consumed). Returns the ``harness.Response`` (head only). With ``check``
    raises AssertionError unless it is a 101 with the right Sec-WebSocket-Accept."""
    key = base64.b64encode(os.urandom(16)).decode()
    req = ['GET %s HTTP/1.1' % path, 'Host: %s' % host, 'Upgrade: websocket',
           'Connection: Upgrade', 'Sec-WebSocket-Key: %s' % key, 'Sec-WebSocket-Version: 13']
    req += ['%s: %s' % (n, v) for n, v in harness._norm_headers(headers)]
    sock.sendall(('\r\n'.join(req) + '\r\n\r\n').encode('latin-1'))
    data = bytearray()
    while not data.endswith(b'\r\n\r\n'):
        b = sock.recv(1)
        if not b:
            raise ConnectionClosed('EOF during websocket handshake: %r' % bytes(data[:200]))
        data += b
        if len(data) > 65536:
            raise BadMessage('websocket handshake response too large')
    start, hdrs = parse_head_bytes(data)
    version, status, reason = harness._parse_status_line(start)
    resp = Response(version, status, reason, hdrs)
    if check:
        if status != 101:
            raise AssertionError('websocket handshake answered %d %s' % (status, reason))
        if get_header(hdrs, 'sec-websocket-accept') != ws_accept_key(key):
            raise AssertionError('bad Sec-WebSocket-Accept %r'
                                 % get_header(hdrs, 'sec-websocket-accept'))
    return resp


def ws_send(sock, payload, opcode=WS_OP_TEXT, mask=True, fin=True):
    """Send one (client, masked by default) frame."""
    sock.sendall(ws_encode_frame(payload, opcode, mask, fin))


def ws_recv(sock):
    """Receive one frame; returns (opcode, payload bytes). ``sock`` may be a socket or anything
    with ``read_exact(n)`` (a ``harness.SockReader`` or ``harness.HttpClientConn``)."""
    read = sock.read_exact if hasattr(sock, 'read_exact') else (lambda n: recv_exact(sock, n))
    _, opcode, payload = ws_read_frame(read)
    return opcode, payload


# ---------------------------------------------------------------------------------------------
# HTTP/1.1 upstream
# ---------------------------------------------------------------------------------------------

class RequestRecord(dict):
    """One request as the upstream saw it (a dict; see HttpUpstream) plus ``header(name)``."""

    def header(self, name, default=None):
        """First value of request header ``name`` (case-insensitive)."""
        return get_header(self['headers'], name, default)

    def header_all(self, name):
        lname = name.lower()
        return [v for n, v in self['headers'] if n.lower() == lname]


class _Ctx:
    """Per-request state while answering."""

    def __init__(self, sock, reader, rec, query, keep, head, extra_headers):
        self.sock, self.reader, self.rec, self.query = sock, reader, rec, query
        self.keep, self.head, self.extra_headers = keep, head, extra_headers


def _reason(code):
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return 'Unknown'


class HttpUpstream(_Server):
    """HTTP/1.1 server on raw sockets: keep-alive, pipelining (requests answered in order),
    Content-Length and chunked request bodies (with trailers), ``Expect: 100-continue``.

    ``HttpUpstream(name='upstream', default_status=None, store_body_limit=1 MiB, host, port,
    ssl_context, timeout=10, idle_timeout=60)``

    Behaviour is chosen by the request path (a query string is allowed and ignored unless noted):

    ``/echo...`` and any path not listed below
        200 with JSON {method, path, version, headers: [[n, v]...], body_len, body_sha256,
        trailers: [[n, v]...], conn_id, name}; ``content-type: application/json``.
    ``/status/<code>``
        that status, body ``b"status <code>\\n"`` (none for 204/304). A 1xx code (not 101) is
        sent as an interim response followed by a 200 echo.
    ``/delay/<ms>[/<then-path>]``
        wait, then answer as ``/<then-path>`` (default echo).
    ``/bytes/<n>``
        n pattern bytes (``harness.pattern_bytes(0, n)``) with Content-Length.
    ``/chunked/<n>``
        the same, chunked in 16 KiB chunks, trailer ``x-trailer: done``.
    ``/fail/<key>/<n>/<code>[/<then-path>]``
        the first n requests for key (counted across connections) get <code>, later ones are
        answered as then-path (default echo). ``.counters[key]`` counts every hit;
        ``reset_counters()``.
    ``/grpc-fail/<key>/<n>/<grpc-status>[/<then-path>]``
        as ``/fail``, the first n answered as a gRPC server answers a failed call when it
        has no message to send: 200, ``content-type: application/grpc``, ``grpc-status`` and
        ``grpc-message`` in the head (trailers-only), no body.
    ``/reset``
        reset the connection (RST, SO_LINGER 0) without answering.
    ``/reset-after-headers``
        send a 200 head with ``content-length: 100000`` and 10 body bytes, then RST.
    ``/close``
        echo with ``Connection: close``, then close.
    ``/ws`` with ``Upgrade: websocket``
        101 handshake, then echo frames unmasked (text/binary/continuation keep opcode and FIN;
        ping -> pong; close -> close frame echoed, then the connection closes). Without the
        upgrade header: 426.

    Query flags: ``?no-continue`` reads an ``Expect: 100-continue`` body without sending 100;
    ``?reject-continue=<code>`` answers <code> (default 417) without reading the body and closes.

    On every response: ``x-upstream-name: <name>``; request header
    ``x-test-response-headers: n1=v1;n2=v2`` adds those response headers. ``default_status``
    (or ``set_status(code)``, ``set_status(None)`` to clear) forces that status on every request,
    with the echo JSON as body (no body for 204/304).

    Requests without Content-Length / Transfer-Encoding have no body. HTTP/1.0 connections close
    after the response unless the request says ``Connection: keep-alive``. A malformed request
    gets 400 and the connection closes.

    Records: ``.requests`` -- list of ``RequestRecord`` dicts in arrival order with keys
    ``time`` (time.monotonic() when the request head was read), ``index``, ``conn_id``,
    ``method``, ``path`` (the full request target), ``version``, ``headers`` (list of (n, v)),
    ``body_len``, ``body_sha256``, ``body`` (bytes if at most ``store_body_limit``, else None),
    ``trailers``, ``continue_sent``, ``complete`` (False if the body was cut off), ``status``
    (what was answered; None for resets), ``ws_frames``. ``.connections`` counts accepted
    connections. ``wait_requests(n)``, ``clear()``.
    """

    def __init__(self, name='upstream', default_status=None, store_body_limit=1 << 20, **kw):
        self.name = name
        self.default_status = default_status
        self.store_body_limit = store_body_limit
        self.requests = []
        self.counters = {}
        super().__init__(**kw)

    # -- public ---------------------------------------------------------------------------------

    def set_status(self, code):
        """Force ``code`` on every following request (None: back to path behaviours)."""
        self.default_status = code

    def reset_counters(self):
        """Forget the ``/fail/<key>/...`` counters."""
        with self._cond:
            self.counters.clear()

    def clear(self):
        """Forget recorded requests (connection counts stay)."""
        with self._cond:
            self.requests = []

    def wait_requests(self, n, timeout=10):
        """Wait until at least ``n`` requests are recorded; returns ``.requests``."""
        self.wait_for(lambda: len(self.requests) >= n, timeout, '%d requests' % n)
        return self.requests

    @property
    def last(self):
        """The most recent request record (or None)."""
        return self.requests[-1] if self.requests else None

    # -- connection loop ------------------------------------------------------------------------

    def handle(self, sock, cid):
        reader = SockReader(sock)
        while not self._closing.is_set():
            sock.settimeout(self.idle_timeout)
            try:
                head = read_head(reader, skip_blank=True)
            except socket.timeout:
                if not reader.has_pending():
                    return                      # idle keep-alive connection: close quietly
                raise
            except BadMessage:
                self._bad_request(sock)
                return
            if head is None:
                return
            sock.settimeout(self.timeout)
            if not self._serve(sock, reader, cid, head, time.monotonic()):
                return

    def _bad_request(self, sock):
        try:
            sock.sendall(b'HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n'
                         b'connection: close\r\nx-upstream-name: ' + self.name.encode() +
                         b'\r\n\r\n')
            shutdown_write(sock)
            _drain_and_close(sock, scaled(1))
        except OSError:
            pass

    def _serve(self, sock, reader, cid, head, arrival):
        """Read one request's body and answer it; returns True to keep the connection."""
        start, headers = head
        parts = start.split(' ')
        if len(parts) != 3 or not parts[2].startswith('HTTP/1.'):
            self._bad_request(sock)
            return False
        method, target, version = parts
        conn_tokens = _header_tokens(headers, 'connection')
        if version == 'HTTP/1.1':
            keep = 'close' not in conn_tokens
        else:
            keep = 'keep-alive' in conn_tokens
        path, _, qs = target.partition('?')
        query = urllib.parse.parse_qs(qs, keep_blank_values=True)
        rec = RequestRecord(time=arrival, index=None, conn_id=cid, method=method, path=target,
                            version=version, headers=headers, body_len=0,
                            body_sha256=hashlib.sha256(b'').hexdigest(), body=b'', trailers=[],
                            continue_sent=False, complete=False, status=None, ws_frames=0)
        ctx = _Ctx(sock, reader, rec, query, keep, method == 'HEAD',
                   self._extra_headers(headers))

        # Body framing (RFC 9112 section 6).
        te = _header_tokens(headers, 'transfer-encoding')
        cls = set(v.strip() for n, v in headers if n.lower() == 'content-length')
        chunked, length = False, 0
        if te:
            if te[-1] != 'chunked':
                self._record(rec)
                self._bad_request(sock)
                return False
            chunked = True
        elif cls:
            if len(cls) != 1 or not next(iter(cls)).isdigit():
                self._record(rec)
                self._bad_request(sock)
                return False
            length = int(next(iter(cls)))

        expect = (get_header(headers, 'expect') or '').lower()
        if expect == '100-continue' and version == 'HTTP/1.1' and (chunked or length):
            if 'reject-continue' in query:
                code = int(query['reject-continue'][0] or 417)
                rec['complete'] = True
                self._record(rec)
                ctx.keep = False
                self._send(ctx, code, [('content-type', 'text/plain')], b'rejected\n')
                return False
            if 'no-continue' not in query:
                sock.sendall(b'HTTP/1.1 100 Continue\r\n\r\n')
                rec['continue_sent'] = True

        h = StreamSha256()
        stored = []

        def take(piece):
            h.update(piece)
            if h.n <= self.store_body_limit:
                stored.append(piece)

        try:
            if chunked:
                rec['trailers'] = read_chunked(reader, take)
            else:
                left = length
                while left:
                    data = reader.read_some(min(left, 1 << 20))
                    if not data:
                        raise ConnectionClosed('EOF with %d body bytes missing' % left)
                    take(data)
                    left -= len(data)
        except BadMessage:
            self._finish_body(rec, h, stored)
            self._record(rec)
            self._bad_request(sock)
            return False
        except Exception:
            self._finish_body(rec, h, stored)
            self._record(rec)
            raise
        self._finish_body(rec, h, stored)
        rec['complete'] = True
        self._record(rec)
        return self._respond(ctx, path)

    def _finish_body(self, rec, h, stored):
        rec['body_len'], rec['body_sha256'] = h.n, h.hexdigest()
        rec['body'] = b''.join(stored) if h.n <= self.store_body_limit else None

    def _record(self, rec):
        with self._cond:
            rec['index'] = len(self.requests)
            self.requests.append(rec)
            self._cond.notify_all()

    @staticmethod
    def _extra_headers(headers):
        out = []
        for v in (n_v[1] for n_v in headers if n_v[0].lower() == 'x-test-response-headers'):
            for item in v.split(';'):
                name, sep, value = item.partition('=')
                if sep and name.strip():
                    out.append((name.strip(), value.strip()))
        return out

    # -- answering ------------------------------------------------------------------------------

    def _respond(self, ctx, path):
        """Answer by path; returns True to keep the connection open."""
        forced = self.default_status
        if forced is not None:
            return self._echo(ctx, forced)
        seg = path.split('/')
        first = seg[1] if len(seg) > 1 else ''

        def rest(i):
            tail = '/'.join(seg[i:])
            return '/' + tail if tail else '/echo'

        if first == 'status' and len(seg) >= 3 and seg[2].isdigit():
            code = int(seg[2])
            if 100 <= code < 200 and code != 101:
                ctx.sock.sendall(('HTTP/1.1 %d %s\r\n\r\n' % (code, _reason(code))).encode())
                return self._echo(ctx, 200)
            return self._send(ctx, code, [('content-type', 'text/plain')],
                              b'status %d\n' % code)
        if first == 'delay' and len(seg) >= 3 and seg[2].isdigit():
            self._closing.wait(int(seg[2]) / 1000.0)
            return self._respond(ctx, rest(3))
        if first == 'bytes' and len(seg) >= 3 and seg[2].isdigit():
            n = int(seg[2])
            return self._send(ctx, 200, [('content-type', 'application/octet-stream')],
                              pattern_chunks(n), length=n)
        if first == 'chunked' and len(seg) >= 3 and seg[2].isdigit():
            n = int(seg[2])
            return self._send(ctx, 200, [('content-type', 'application/octet-stream'),
                                         ('trailer', 'x-trailer')],
                              pattern_chunks(n, 16 * 1024), chunked=True,
                              trailers=[('x-trailer', 'done')])
        if first == 'fail' and len(seg) >= 5 and seg[3].isdigit() and seg[4].isdigit():
            key, n, code = seg[2], int(seg[3]), int(seg[4])
            with self._cond:
                hits = self.counters.get(key, 0)
                self.counters[key] = hits + 1
            if hits < n:
                return self._send(ctx, code, [('content-type', 'text/plain')],
                                  b'fail %d of %d\n' % (hits + 1, n))
            return self._respond(ctx, rest(5))
        if first == 'grpc-fail' and len(seg) >= 5 and seg[3].isdigit() and seg[4].isdigit():
            key, n, grpc_status = seg[2], int(seg[3]), seg[4]
            with self._cond:
                hits = self.counters.get(key, 0)
                self.counters[key] = hits + 1
            if hits < n:
                return self._send(ctx, 200, [('content-type', 'application/grpc'),
                                             ('grpc-status', grpc_status),
                                             ('grpc-message', 'fail %d of %d' % (hits + 1, n))],
                                  length=0)
            return self._respond(ctx, rest(5))
        if path == '/reset':
            self._unregister(ctx.rec['conn_id'])
            _abort_socket(ctx.sock)
            raise _Abort()
        if path == '/reset-after-headers':
            ctx.rec['status'] = 200
            ctx.sock.sendall(b'HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n'
                             b'content-type: application/octet-stream\r\nx-upstream-name: ' +
                             self.name.encode() + b'\r\n\r\n' + harness.pattern_bytes(0, 10))
            time.sleep(scaled(0.1))     # let the peer read the bytes before the RST
            self._unregister(ctx.rec['conn_id'])
            _abort_socket(ctx.sock)
            raise _Abort()
        if path == '/close':
            ctx.keep = False
            return self._echo(ctx, 200)
        if path == '/ws':
            upgrade = _header_tokens(ctx.rec['headers'], 'upgrade')
            if 'websocket' in upgrade and ctx.rec.header('sec-websocket-key'):
                self._websocket(ctx)
                return False
            return self._send(ctx, 426, [('content-type', 'text/plain')], b'upgrade required\n')
        return self._echo(ctx, 200)

    def _echo(self, ctx, status):
        rec = ctx.rec
        body = json.dumps({
            'method': rec['method'], 'path': rec['path'], 'version': rec['version'],
            'headers': [[n, v] for n, v in rec['headers']], 'body_len': rec['body_len'],
            'body_sha256': rec['body_sha256'], 'trailers': [[n, v] for n, v in rec['trailers']],
            'conn_id': rec['conn_id'], 'name': self.name}).encode()
        return self._send(ctx, status, [('content-type', 'application/json')], body)

    def _send(self, ctx, status, headers, body=b'', length=None, chunked=False, trailers=None):
        """Write a response (streaming iterable bodies); closes when ``ctx.keep`` is False.
        Returns ``ctx.keep``."""
        ctx.rec['status'] = status
        no_body = status in (204, 304) or 100 <= status < 200
        hdrs = list(headers) + [('x-upstream-name', self.name)] + ctx.extra_headers
        if no_body:
            pieces, chunked = [], False
        elif chunked:
            hdrs.append(('transfer-encoding', 'chunked'))
            pieces = body
        else:
            pieces = [body] if isinstance(body, bytes) else body
            hdrs.append(('content-length', str(len(body) if length is None else length)))
        if not ctx.keep:
            hdrs.append(('connection', 'close'))
        elif ctx.rec['version'] == 'HTTP/1.0':
            hdrs.append(('connection', 'keep-alive'))
        head = ['HTTP/1.1 %d %s\r\n' % (status, _reason(status))]
        head += ['%s: %s\r\n' % (n, v) for n, v in hdrs]
        head.append('\r\n')
        ctx.sock.sendall(''.join(head).encode('latin-1'))
        if not ctx.head and not no_body:
            if chunked:
                for piece in pieces:
                    if piece:
                        ctx.sock.sendall(b'%x\r\n' % len(piece) + piece + b'\r\n')
                tail = b'0\r\n' + b''.join(b'%s: %s\r\n' % (n.encode(), v.encode())
                                           for n, v in trailers or []) + b'\r\n'
                ctx.sock.sendall(tail)
            else:
                for piece in pieces:
                    if piece:
                        ctx.sock.sendall(piece)
        if not ctx.keep:
            shutdown_write(ctx.sock)
            _drain_and_close(ctx.sock, scaled(2))
        return ctx.keep

    def _websocket(self, ctx):
        key = ctx.rec.header('sec-websocket-key').strip()
        hdrs = [('upgrade', 'websocket'), ('connection', 'Upgrade'),
                ('sec-websocket-accept', ws_accept_key(key)),
                ('x-upstream-name', self.name)] + ctx.extra_headers
        ctx.rec['status'] = 101
        ctx.sock.sendall(('HTTP/1.1 101 Switching Protocols\r\n' +
                          ''.join('%s: %s\r\n' % hv for hv in hdrs) + '\r\n').encode('latin-1'))
        ctx.sock.settimeout(self.idle_timeout)
        while True:
            try:
                fin, op, payload = ws_read_frame(ctx.reader.read_exact)
            except (ConnectionClosed, socket.timeout):
                return
            ctx.rec['ws_frames'] += 1
            if op in (WS_OP_CONT, WS_OP_TEXT, WS_OP_BINARY):
                ctx.sock.sendall(ws_encode_frame(payload, op, mask=False, fin=fin))
            elif op == WS_OP_PING:
                ctx.sock.sendall(ws_encode_frame(payload, WS_OP_PONG, mask=False))
            elif op == WS_OP_CLOSE:
                ctx.sock.sendall(ws_encode_frame(payload[:125], WS_OP_CLOSE, mask=False))
                shutdown_write(ctx.sock)
                _drain_and_close(ctx.sock, scaled(2))
                return
