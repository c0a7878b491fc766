"""Integration-test harness for petrel: run the real binary, build configs, talk to it.

Everything here uses only the Python 3.11 standard library. Tests live next to this file as
``tests/integration/test_*.py`` (plain ``unittest`` modules, run as
``/usr/bin/python3 tests/integration/test_x.py``); the script directory is on ``sys.path`` so a
test simply does ``import harness`` / ``import upstreams``. See README.md for a walkthrough.

Main pieces
-----------
* ``Petrel``           -- context manager that writes a config, starts petrel, waits until it is
                          ready, offers admin/stats helpers, stops it and checks its stderr for
                          sanitizer reports.
* ``run_petrel``       -- one-shot runs (``--version``, ``--mode validate`` ...).
* config builders      -- ``bootstrap``, ``listener``, ``tcp_proxy``, ``cluster``,
                          ``http_connection_manager``, ``route_config``, ``vhost``,
                          ``route_prefix``, ``to_yaml``.
* clients              -- ``tcp_connect``, ``http_request``, ``HttpClientConn`` (keep-alive,
                          pipelining, raw bytes), ``Response``.
* data helpers         -- ``pattern_bytes``/``pattern_chunks``/``sha256_pattern`` (deterministic
                          stream), ``StreamSha256``, ``PatternVerifier``.
* timing               -- ``SLOW`` (3 under sanitizers, else 1), ``scaled``, ``wait_until``.

All timeouts passed to harness functions are *unscaled* seconds; the harness multiplies them by
``SLOW`` itself. A test that sleeps or uses its own timeouts should use ``scaled(t)``.
"""

import atexit
import hashlib
import json
import os
import resource
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

__all__ = [
    'SANITIZE', 'SLOW', 'scaled', 'PETREL_BIN', 'REPO_ROOT', 'DATA_DIR',
    'PetrelError', 'ConnectionClosed', 'IncompleteResponse', 'BadMessage',
    'Petrel', 'run_petrel', 'wait_until',
    'free_port', 'free_ports', 'tcp_connect', 'wait_port', 'port_listening', 'wait_listening',
    'recv_exact', 'recv_until_eof', 'shutdown_write',
    'socket_address', 'TCP_PROXY_TYPE', 'HCM_TYPE', 'ROUTER_TYPE', 'admin', 'listener', 'tcp_proxy', 'cluster', 'bootstrap', 'http_connection_manager',
    'router_filter', 'route_config', 'vhost', 'route_prefix', 'to_yaml',
    'Response', 'HttpClientConn', 'http_request', 'SockReader', 'read_head', 'read_chunked',
    'read_response', 'send_request', 'get_header', 'parse_head_bytes',
    'pattern_bytes', 'pattern_chunks', 'sha256_pattern', 'sha256_hex', 'StreamSha256',
    'PatternVerifier', 'PROMTOOL', 'promtool_check', 'histograms_json', 'histogram_text',
]


# ---------------------------------------------------------------------------------------------
# Environment and timing
# ---------------------------------------------------------------------------------------------

def _env_true(value):
    """True for the usual CMake/env spellings of "on" (1, ON, TRUE, YES, Y)."""
    return str(value or '').strip().upper() in ('1', 'ON', 'TRUE', 'YES', 'Y')


#: True when petrel was built with sanitizers (env PT_SANITIZE=1/ON/TRUE).
SANITIZE = _env_true(os.environ.get('PT_SANITIZE'))
#: Factor every harness timeout is multiplied by (sanitized builds are ~3x slower).
SLOW = 3 if SANITIZE else 1

_HERE = os.path.dirname(os.path.abspath(__file__))
#: Root of the source tree.
REPO_ROOT = os.path.normpath(os.path.join(_HERE, '..', '..'))
#: Shared test data (certificates, sample configs): env PT_TEST_DATA or tests/data.
DATA_DIR = os.environ.get('PT_TEST_DATA') or os.path.join(REPO_ROOT, 'tests', 'data')
#: The petrel binary under test: env PETREL_BIN, else build/petrel in the source tree.
PETREL_BIN = os.environ.get('PETREL_BIN') or os.path.join(REPO_ROOT, 'build', 'petrel')

#: Markers of a sanitizer report in petrel's stderr; any of them fails the test.
SANITIZER_MARKERS = ('ERROR: AddressSanitizer', 'runtime error:', 'LeakSanitizer',
                     'WARNING: ThreadSanitizer', 'ERROR: MemorySanitizer')


def scaled(seconds):
    """Return ``seconds`` multiplied by ``SLOW`` (for tests' own sleeps and timeouts)."""
    return seconds * SLOW


def wait_until(fn, timeout=10, interval=0.02, message=None):
    """Poll ``fn()`` until it returns a truthy value and return that value.

    ``timeout`` is scaled by SLOW. Raises AssertionError (with ``message`` and the last value)
    when time runs out. Exceptions raised by ``fn`` propagate.
    """
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError('%s (timed out after %.1fs; last value %r)'
                                 % (message or 'condition not met', scaled(timeout), value))
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

class PetrelError(AssertionError):
    """petrel failed to start, did not become ready, or reported a sanitizer error."""


class BadMessage(ValueError):
    """A peer sent bytes that do not parse as HTTP/1.x."""


class ConnectionClosed(ConnectionError):
    """The peer closed the connection (clean EOF) where more bytes were expected."""


class IncompleteResponse(ConnectionError):
    """The connection ended (EOF or reset) in the middle of a response body.

    ``.partial`` is the Response read so far (body truncated), ``.cause`` the underlying error.
    """

    def __init__(self, message, partial=None, cause=None):
        super().__init__(message)
        self.partial = partial
        self.cause = cause


# ---------------------------------------------------------------------------------------------
# Deterministic data: a pattern stream and sha256 helpers
# ---------------------------------------------------------------------------------------------

_BLOCK = 1 << 20        # the pattern repeats a 1 MiB block ...
_ROTATE = 7919          # ... rotated by this many bytes more in each successive block
_pattern_lock = threading.Lock()
_pattern_block2 = None  # the block twice over, so any rotation is one contiguous slice


def _block2():
    global _pattern_block2
    with _pattern_lock:
        if _pattern_block2 is None:
            block = b''.join(hashlib.sha256(b'petrel-pattern-%d' % i).digest()
                             for i in range(_BLOCK // 32))
            _pattern_block2 = block + block
        return _pattern_block2


def pattern_bytes(offset, n):
    """Return ``n`` bytes of the deterministic test stream starting at stream ``offset``.

    Byte ``i`` of the stream is a pseudo-random function of ``i`` (a 1 MiB block derived from
    sha256, rotated differently in each MiB), so a shifted, duplicated or reordered range is
    detected. ``pattern_bytes(a, n)[k] == pattern_bytes(a + k, 1)[0]``. 64 MiB takes well under
    a second.
    """
    dbl = _block2()
    out = []
    pos, end = offset, offset + n
    while pos < end:
        k, j = divmod(pos, _BLOCK)
        take = min(_BLOCK - j, end - pos)
        start = j + (k * _ROTATE) % _BLOCK
        out.append(dbl[start:start + take])
        pos += take
    return b''.join(out)


def pattern_chunks(n, chunk=256 * 1024, offset=0):
    """Yield the stream range [offset, offset+n) in pieces of at most ``chunk`` bytes."""
    pos, end = offset, offset + n
    while pos < end:
        take = min(chunk, end - pos)
        yield pattern_bytes(pos, take)
        pos += take


def sha256_hex(data):
    """Hex sha256 of ``data`` (bytes-like)."""
    return hashlib.sha256(data).hexdigest()


def sha256_pattern(n, offset=0):
    """Hex sha256 of ``pattern_bytes(offset, n)``, computed without holding it all in memory."""
    h = hashlib.sha256()
    for piece in pattern_chunks(n, 1 << 20, offset):
        h.update(piece)
    return h.hexdigest()


class StreamSha256:
    """Incremental sha256 plus byte count: ``update(data)``, ``.n``, ``hexdigest()``."""

    def __init__(self):
        self._h = hashlib.sha256()
        self.n = 0

    def update(self, data):
        self._h.update(data)
        self.n += len(data)

    def hexdigest(self):
        return self._h.hexdigest()


class PatternVerifier:
    """Check bytes received piecewise against the pattern stream.

    ``feed(data)`` compares as data arrives; ``.n`` counts bytes, ``.mismatch_at`` is the first
    stream offset that differed (None if all matched). ``ok(expected_n)`` is True when exactly
    ``expected_n`` bytes arrived with no mismatch.
    """

    def __init__(self, offset=0):
        self.offset = offset
        self.n = 0
        self.mismatch_at = None

    def feed(self, data):
        if self.mismatch_at is None and data:
            want = pattern_bytes(self.offset + self.n, len(data))
            if want != bytes(data):
                i = next(i for i in range(len(data)) if data[i] != want[i])
                self.mismatch_at = self.offset + self.n + i
        self.n += len(data)

    def ok(self, expected_n=None):
        return self.mismatch_at is None and (expected_n is None or self.n == expected_n)


# ---------------------------------------------------------------------------------------------
# Sockets
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Stats formats: histograms, promtool
# ---------------------------------------------------------------------------------------------

PROMTOOL = '/usr/bin/promtool'
_PROMTOOL_MS = re.compile(r'^envoy_\w+_ms metric names should not contain abbreviated units$')
# The lints Envoy's own names draw: its counters keep their names (most without "_total"),
# and some gauges end in "_total" (membership_total).
_PROMTOOL_ENVOY_LINTS = (
    _PROMTOOL_MS,
    re.compile(r'^envoy_\w+ counter metrics should have "_total" suffix$'),
    re.compile(r'^envoy_\w+_total non-counter metrics should not have "_total" suffix$'),
)


def promtool_check(body):
    """``promtool check metrics`` on a Prometheus exposition (bytes): None when it passes,
    else what promtool said. Raises unittest.SkipTest when promtool is not installed.

    Passing is what it is for Envoy's own output: well formed (exit 1 is a parse error) and no
    lint problem but those Envoy's names make unavoidable (exit 3): promtool calls the "ms" of
    upstream_cx_connect_ms, upstream_cx_length_ms and downstream_cx_length_ms an abbreviated
    unit, wants "_total" on every counter (Envoy's upstream_rq_completed has none) and on no
    gauge (Envoy's membership_total is one). Those names are Envoy's and its dashboards use
    them; any other problem fails."""
    import unittest
    if not os.path.exists(PROMTOOL):
        raise unittest.SkipTest('promtool not installed')
    r = subprocess.run([PROMTOOL, 'check', 'metrics'], input=body, capture_output=True,
                       timeout=60)
    said = (r.stdout + r.stderr).decode(errors='replace')
    if r.returncode == 0:
        return None
    if r.returncode == 3 and all(any(rx.match(l) for rx in _PROMTOOL_ENVOY_LINTS)
                                 for l in said.splitlines() if l):
        return None
    return 'promtool exit %d:\n%s' % (r.returncode, said)


def histograms_json(body):
    """From ``/stats?format=json``: ({name: value} of counters, gauges and text readouts,
    {histogram name: [{"interval": x, "cumulative": y}, ...]}, supported_quantiles or None)."""
    stats, hists, supported = {}, {}, None
    for s in json.loads(body)['stats']:
        if 'histograms' in s:
            supported = s['histograms']['supported_quantiles']
            for q in s['histograms']['computed_quantiles']:
                hists[q['name']] = q['values']
        else:
            stats[s['name']] = s['value']
    return stats, hists, supported


_HIST_Q = re.compile(r'P([\d.]+)\(([^,]+),([^)]+)\)')


def histogram_text(body, name):
    """From ``/stats`` text: a histogram's line as {quantile: (interval, cumulative)} (floats,
    nan for an empty interval), None for "No recorded values", KeyError when absent."""
    for line in body.decode().splitlines():
        n, sep, rest = line.partition(': ')
        if n != name:
            continue
        if rest == 'No recorded values':
            return None
        return {float(q): (float(a), float(b)) for q, a, b in _HIST_Q.findall(rest)}
    raise KeyError(name)


def free_port():
    """An unused TCP port on 127.0.0.1 (bound to port 0 then released; a small race remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# Sockets that keep dead ports reserved for the life of the test process.
_DEAD_PORT_HOLDERS = []


def dead_port():
    """A loopback port where a connect is always refused.

    The port stays bound (never listening) by this process until it exits, so no other test
    can start listening there and the kernel never picks it as an ephemeral source port (a
    connect from 127.0.0.1:P to 127.0.0.1:P would otherwise "succeed" as a self-connect).
    A port that was merely free a moment ago gives flaky tests when suites run in parallel.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(('127.0.0.1', 0))
    _DEAD_PORT_HOLDERS.append(s)
    return s.getsockname()[1]


def free_ports(n):
    """``n`` distinct unused ports (all held open until every one is chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(('127.0.0.1', 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tcp_connect(port, host='127.0.0.1', timeout=5, ssl_context=None, server_hostname=None):
    """Connect to host:port and return the socket, its timeout set to ``scaled(timeout)``.

    With ``ssl_context`` the socket is wrapped in TLS (``server_hostname`` sets SNI).
    """
    sock = socket.create_connection((host, port), timeout=scaled(timeout))
    sock.settimeout(scaled(timeout))
    if ssl_context is not None:
        try:
            sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname)
        except BaseException:
            sock.close()
            raise
    return sock


def wait_port(port, timeout=10, host='127.0.0.1'):
    """Poll until a TCP connect to host:port succeeds (the probe connection is closed at once).

    Note the probe is a real connection: against a petrel listener it is proxied. Prefer
    ``wait_listening`` (reads /proc) when connection counts matter.
    """
    def probe():
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False
    return wait_until(probe, timeout, 0.02, 'port %s:%d not accepting' % (host, port))


def port_listening(port):
    """True if some socket in this network namespace LISTENs on TCP ``port`` (via /proc/net)."""
    suffix = ':%04X' % port
    for path in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(path) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == '0A' and fields[1].endswith(suffix):
                        return True
        except OSError:
            continue
    return False


def wait_listening(port, timeout=10):
    """Wait until TCP ``port`` is in LISTEN state, without connecting to it."""
    return wait_until(lambda: port_listening(port), timeout, 0.02, 'port %d not listening' % port)


def recv_exact(sock, n):
    """Receive exactly ``n`` bytes; ConnectionClosed on EOF first."""
    parts, got = [], 0
    while got < n:
        data = sock.recv(min(n - got, 1 << 20))
        if not data:
            raise ConnectionClosed('EOF after %d of %d bytes' % (got, n))
        parts.append(data)
        got += len(data)
    return b''.join(parts)


def recv_until_eof(sock, limit=None):
    """Receive until the peer closes (FIN); returns the bytes. A TLS ragged EOF counts as EOF.

    With ``limit``, stops (without waiting for EOF) once that many bytes arrived.
    """
    parts, got = [], 0
    while limit is None or got < limit:
        try:
            data = sock.recv(1 << 20 if limit is None else min(1 << 20, limit - got))
        except ssl.SSLEOFError:
            break
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b''.join(parts)


def shutdown_write(sock, tls_close_notify=False):
    """Half-close: send FIN (no more data from us), keep reading possible.

    For a TLS socket the TCP FIN is sent without close_notify unless ``tls_close_notify`` (which
    may wait up to the socket timeout for the peer's close_notify, so only use it once the peer
    is done sending).
    """
    if isinstance(sock, ssl.SSLSocket) and tls_close_notify and sock._sslobj is not None:
        try:
            sock.unwrap()
        except (ssl.SSLError, OSError, ValueError):
            pass
    try:
        socket.socket.shutdown(sock, socket.SHUT_WR)
    except OSError:
        pass


def _abort_socket(sock):
    """Close ``sock`` with a TCP RST (SO_LINGER 0) instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
    except OSError:
        pass
    try:
        socket.socket.close(sock)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# HTTP/1.x byte-level reading and writing (shared by the clients here and upstreams.py)
# ---------------------------------------------------------------------------------------------

class SockReader:
    """Buffered reader over a socket (plain or TLS) for line- and length-delimited parsing.

    All reads honour the socket's timeout. A TLS ragged EOF (no close_notify) counts as EOF.
    """

    def __init__(self, sock, bufsize=65536):
        self.sock = sock
        self.bufsize = bufsize
        self.buf = bytearray()
        self.eof = False

    def _recv(self, n):
        if self.eof:
            return b''
        try:
            data = self.sock.recv(n)
        except ssl.SSLEOFError:
            data = b''
        if not data:
            self.eof = True
        return data

    def pending(self):
        """Bytes already buffered but not yet consumed."""
        return bytes(self.buf)

    def has_pending(self):
        return len(self.buf) > 0

    def read_line(self, limit=1 << 20):
        """Next line without its LF/CRLF; None on EOF at a line boundary.

        ConnectionClosed on EOF mid-line, BadMessage if longer than ``limit``.
        """
        start = 0
        while True:
            i = self.buf.find(b'\n', start)
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 1]
                return line[:-1] if line.endswith(b'\r') else line
            if len(self.buf) > limit:
                raise BadMessage('line longer than %d bytes' % limit)
            start = len(self.buf)
            data = self._recv(self.bufsize)
            if not data:
                if self.buf:
                    raise ConnectionClosed('EOF in the middle of a line: %r' % bytes(self.buf[:80]))
                return None
            self.buf += data

    def read_some(self, n=65536):
        """Up to ``n`` bytes (buffered first); b'' at EOF."""
        if self.buf:
            data = bytes(self.buf[:n])
            del self.buf[:n]
            return data
        return self._recv(n)

    def read_exact(self, n):
        """Exactly ``n`` bytes; ConnectionClosed on EOF first."""
        parts, got = [], 0
        while got < n:
            data = self.read_some(min(n - got, 1 << 20))
            if not data:
                raise ConnectionClosed('EOF after %d of %d bytes' % (got, n))
            parts.append(data)
            got += len(data)
        return b''.join(parts)

    def read_to_eof(self, sink=None):
        """Everything until EOF; with ``sink`` each piece goes to ``sink(piece)`` instead."""
        parts = []
        while True:
            data = self.read_some(1 << 20)
            if not data:
                break
            if sink is None:
                parts.append(data)
            else:
                sink(data)
        return b''.join(parts)


def _hdr_text(b):
    return b.decode('latin-1')


def get_header(headers, name, default=None):
    """First value of header ``name`` (case-insensitive) in a list of (name, value) pairs."""
    lname = name.lower()
    for n, v in headers:
        if n.lower() == lname:
            return v
    return default


def _header_tokens(headers, name):
    """Lower-cased comma-separated tokens of every ``name`` header (e.g. Connection)."""
    out = []
    lname = name.lower()
    for n, v in headers:
        if n.lower() == lname:
            out.extend(t.strip().lower() for t in v.split(',') if t.strip())
    return out


def _parse_header_lines(lines):
    headers = []
    for line in lines:
        if line[:1] in (b' ', b'\t') and headers:        # obs-fold: continuation line
            n, v = headers[-1]
            headers[-1] = (n, v + ' ' + _hdr_text(line.strip()))
            continue
        name, sep, value = line.partition(b':')
        if not sep or not name or name != name.strip():
            raise BadMessage('bad header line %r' % line[:200])
        headers.append((_hdr_text(name), _hdr_text(value.strip(b' \t'))))
    return headers


def read_head(reader, skip_blank=False, limit=1 << 20):
    """Read a start line and header block: ``(start_line_str, [(name, value), ...])``.

    Returns None on clean EOF before any byte. ``skip_blank`` skips empty lines before the start
    line (allowed between pipelined requests). Names/values are latin-1 decoded (byte exact).
    """
    line = reader.read_line(limit)
    while skip_blank and line == b'':
        line = reader.read_line(limit)
    if line is None:
        return None
    lines, total = [], len(line)
    while True:
        h = reader.read_line(limit)
        if h is None:
            raise ConnectionClosed('EOF inside header block')
        if h == b'':
            break
        total += len(h)
        if total > limit:
            raise BadMessage('header block larger than %d bytes' % limit)
        lines.append(h)
    return _hdr_text(line), _parse_header_lines(lines)


def parse_head_bytes(data):
    """Parse a complete head (bytes up to and including the blank line) like ``read_head``."""
    text = bytes(data).split(b'\r\n\r\n', 1)[0].split(b'\n\n', 1)[0]
    lines = [l[:-1] if l.endswith(b'\r') else l for l in text.split(b'\n')]
    return _hdr_text(lines[0]), _parse_header_lines(lines[1:])


def read_chunked(reader, sink):
    """Read a chunked body: each data piece goes to ``sink(piece)``; returns the trailer list."""
    while True:
        line = reader.read_line()
        if line is None:
            raise ConnectionClosed('EOF before chunk size')
        size_txt = line.split(b';', 1)[0].strip()
        try:
            size = int(size_txt, 16)
        except ValueError:
            raise BadMessage('bad chunk size %r' % line[:80]) from None
        if size_txt.startswith((b'-', b'+', b'0x', b'0X')) or size < 0:
            raise BadMessage('bad chunk size %r' % line[:80])
        if size == 0:
            break
        left = size
        while left:
            data = reader.read_some(min(left, 1 << 20))
            if not data:
                raise ConnectionClosed('EOF inside a chunk')
            sink(data)
            left -= len(data)
        end = reader.read_line(16)
        if end is None:
            raise ConnectionClosed('EOF after chunk data')
        if end != b'':
            raise BadMessage('chunk not followed by CRLF')
    trailers = []
    while True:
        line = reader.read_line()
        if line is None:
            raise ConnectionClosed('EOF in trailers')
        if line == b'':
            return trailers
        trailers.extend(_parse_header_lines([line]))


class Response:
    """An HTTP/1.x response.

    Attributes: ``version`` ('HTTP/1.1'), ``status`` (int), ``reason``, ``headers`` (list of
    (name, value) in wire order), ``body`` (bytes; b'' when not stored), ``body_len``,
    ``body_sha256`` (hex, always computed), ``trailers`` (list), ``interim`` (1xx responses that
    preceded it), ``eof_delimited`` (body ended by connection close).
    """

    def __init__(self, version, status, reason, headers, body=b'', trailers=None):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.body_len = len(body)
        self.body_sha256 = sha256_hex(body)
        self.trailers = trailers or []
        self.interim = []
        self.eof_delimited = False

    def get(self, name, default=None):
        """First value of header ``name`` (case-insensitive), else ``default``."""
        return get_header(self.headers, name, default)

    def get_all(self, name):
        """All values of header ``name`` in order."""
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]

    def header_dict(self):
        """Lower-cased name -> value; repeated headers joined with ', '."""
        d = {}
        for n, v in self.headers:
            k = n.lower()
            d[k] = d[k] + ', ' + v if k in d else v
        return d

    def trailer(self, name, default=None):
        return get_header(self.trailers, name, default)

    @property
    def text(self):
        return self.body.decode('utf-8', 'replace')

    def json(self):
        return json.loads(self.body)

    @property
    def will_close(self):
        """True when the server will close the connection after this response."""
        tokens = _header_tokens(self.headers, 'connection')
        if self.eof_delimited or 'close' in tokens:
            return True
        return self.version == 'HTTP/1.0' and 'keep-alive' not in tokens

    def __repr__(self):
        return '<Response %d %s, %d headers, body %d bytes>' % (
            self.status, self.reason, len(self.headers), self.body_len)


def _parse_status_line(line):
    parts = line.split(' ', 2)
    if len(parts) < 2 or not parts[0].startswith('HTTP/') or not parts[1].isdigit():
        raise BadMessage('bad status line %r' % line[:200])
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ''


def read_response(reader, head_request=False, skip_interim=True, store_body=True, sink=None):
    """Read one response from ``reader`` (a SockReader).

    Framing per RFC 9112: no body for HEAD/1xx/204/304, chunked (with trailers), Content-Length,
    else read to EOF. With ``skip_interim`` 1xx responses (except 101) are collected in
    ``.interim``; otherwise a 1xx is returned as the response. ``store_body=False`` keeps only
    ``body_len``/``body_sha256`` (for huge bodies); ``sink(piece)`` also receives each piece.
    Raises ConnectionClosed on EOF before a status line, IncompleteResponse when the body is cut.
    """
    interim = []
    while True:
        head = read_head(reader)
        if head is None:
            raise ConnectionClosed('connection closed before a response')
        version, status, reason = _parse_status_line(head[0])
        resp = Response(version, status, reason, head[1])
        if 100 <= status < 200 and status != 101 and skip_interim:
            interim.append(resp)
            continue
        break
    resp.interim = interim
    if head_request or status < 200 or status in (204, 304):
        return resp

    hasher = StreamSha256()
    parts = []

    def take(piece):
        hasher.update(piece)
        if store_body:
            parts.append(piece)
        if sink is not None:
            sink(piece)

    def finish():
        resp.body = b''.join(parts)
        resp.body_len = hasher.n
        resp.body_sha256 = hasher.hexdigest()

    te = _header_tokens(resp.headers, 'transfer-encoding')
    cls = set(v.strip() for v in resp.get_all('content-length'))
    try:
        if te:
            if te[-1] != 'chunked':
                raise BadMessage('unsupported transfer-encoding %r' % te)
            resp.trailers = read_chunked(reader, take)
        elif cls:
            if len(cls) != 1 or not next(iter(cls)).isdigit():
                raise BadMessage('bad content-length %r' % sorted(cls))
            left = int(next(iter(cls)))
            while left:
                data = reader.read_some(min(left, 1 << 20))
                if not data:
                    raise ConnectionClosed('EOF with %d body bytes missing' % left)
                take(data)
                left -= len(data)
        else:
            resp.eof_delimited = True
            reader.read_to_eof(take)
    except (ConnectionError, socket.timeout) as e:
        finish()
        raise IncompleteResponse('response body incomplete after %d bytes: %r'
                                 % (hasher.n, e), resp, e) from e
    finish()
    return resp


def _norm_headers(headers):
    if headers is None:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return [tuple(h) for h in headers]


def _enc(v):
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    v = str(v)
    try:
        return v.encode('latin-1')
    except UnicodeEncodeError:
        return v.encode('utf-8')


def _body_pieces(body):
    if body is None:
        return []
    if isinstance(body, str):
        return [body.encode('utf-8')]
    if isinstance(body, (bytes, bytearray, memoryview)):
        return [bytes(body)]
    return body                                        # any iterable of bytes


def _request_head(method, path, headers, body, host_header, chunked, version, auto_headers):
    """Build the request head; returns (bytes, chunked_flag)."""
    hdrs = _norm_headers(headers)
    names = {n.lower() for n, _ in hdrs}
    is_bytes = isinstance(body, (bytes, bytearray, memoryview, str))
    if chunked is None:
        chunked = 'chunked' in _header_tokens(hdrs, 'transfer-encoding') or (
            body is not None and not is_bytes and 'content-length' not in names)
    if auto_headers:
        if 'host' not in names and host_header is not None:
            hdrs.insert(0, ('Host', host_header))
        if chunked and 'transfer-encoding' not in names:
            hdrs.append(('Transfer-Encoding', 'chunked'))
        elif (not chunked and body is not None and is_bytes and 'content-length' not in names
              and 'transfer-encoding' not in names):
            blen = len(body.encode('utf-8') if isinstance(body, str) else body)
            hdrs.append(('Content-Length', str(blen)))
    out = [_enc('%s %s %s\r\n' % (method, path, version))]
    for n, v in hdrs:
        out.append(_enc(n) + b': ' + _enc(v) + b'\r\n')
    out.append(b'\r\n')
    return b''.join(out), chunked


def _send_body(sock, body, chunked, trailers):
    if chunked:
        for piece in _body_pieces(body):
            if piece:
                sock.sendall(b'%x\r\n' % len(piece) + bytes(piece) + b'\r\n')
        tail = [b'0\r\n']
        for n, v in _norm_headers(trailers):
            tail.append(_enc(n) + b': ' + _enc(v) + b'\r\n')
        tail.append(b'\r\n')
        sock.sendall(b''.join(tail))
    else:
        for piece in _body_pieces(body):
            if piece:
                sock.sendall(piece)


def send_request(sock, method='GET', path='/', headers=None, body=None, host_header=None,
                 chunked=None, trailers=None, version='HTTP/1.1', auto_headers=True):
    """Write one request to ``sock``.

    ``headers``: dict or list of (name, value) (values may be bytes for byte-exact tests).
    ``body``: None, bytes/str, or an iterable of bytes pieces (streamed). With ``auto_headers``
    a Host header (``host_header``) and Content-Length or Transfer-Encoding are added if
    missing; an iterable body without Content-Length is sent chunked. ``chunked=True`` forces
    chunked encoding (each piece one chunk) and ``trailers`` are sent after the last chunk.
    """
    head, chunked = _request_head(method, path, headers, body, host_header, chunked, version,
                                  auto_headers)
    sock.sendall(head)
    _send_body(sock, body, chunked, trailers)


class HttpClientConn:
    """One client connection kept open across requests (keep-alive, pipelining, raw bytes).

    ``HttpClientConn(port, host='127.0.0.1', timeout=10, ssl_context=None, server_hostname=None,
    host_header=None)``; timeout scaled by SLOW, applies to every socket operation. Use as a
    context manager or call ``close()``.
    """

    def __init__(self, port, host='127.0.0.1', timeout=10, ssl_context=None,
                 server_hostname=None, host_header=None):
        self.port = port
        self.host = host
        self.host_header = host_header or ('[%s]:%d' if ':' in host else '%s:%d') % (host, port)
        self.sock = tcp_connect(port, host, timeout, ssl_context, server_hostname)
        self.reader = SockReader(self.sock)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def settimeout(self, seconds):
        """Set the socket timeout (scaled by SLOW)."""
        self.sock.settimeout(scaled(seconds))

    def send_raw(self, data):
        """Send raw bytes as they are."""
        self.sock.sendall(_enc(data))

    def send_request(self, method='GET', path='/', headers=None, body=None, **kw):
        """Write a request without reading anything (see module-level ``send_request``)."""
        kw.setdefault('host_header', self.host_header)
        send_request(self.sock, method, path, headers, body, **kw)

    def request(self, method='GET', path='/', headers=None, body=None, chunked=None,
                trailers=None, version='HTTP/1.1', expect_100=False, continue_timeout=None,
                store_body=True, auto_headers=True):
        """Send a request and read its response (interim 1xx collected in ``.interim``).

        ``expect_100``: send ``Expect: 100-continue`` and the head only, wait for the server's
        answer; on 100 send the body and return the final response (the 100 is in
        ``.interim``); on a final status return it without sending the body. With
        ``continue_timeout`` (seconds, scaled) the body is sent anyway if no answer arrives in
        time (like curl).
        """
        hdrs = _norm_headers(headers)
        if expect_100 and get_header(hdrs, 'expect') is None:
            hdrs.append(('Expect', '100-continue'))
        head, chunked = _request_head(method, path, hdrs, body, self.host_header, chunked,
                                      version, auto_headers)
        is_head = method.upper() == 'HEAD'
        self.sock.sendall(head)
        first = None
        if expect_100 and (continue_timeout is None or self._readable(scaled(continue_timeout))):
            first = self.read_response(is_head, skip_interim=False, store_body=store_body)
            if first.status != 100:
                return first
        final = self._send_body_then_read(body, chunked, trailers, is_head, store_body)
        if first is not None:
            final.interim.insert(0, first)
        return final

    def _send_body_then_read(self, body, chunked, trailers, is_head, store_body):
        # A server may answer early (413, 400, ...) and close/reset while the body is still
        # being sent: then return that answer if it can be read, else raise the send error.
        try:
            _send_body(self.sock, body, chunked, trailers)
        except (BrokenPipeError, ConnectionResetError) as e:
            try:
                return self.read_response(is_head, store_body=store_body)
            except (OSError, ValueError):
                raise e from None
        return self.read_response(is_head, store_body=store_body)

    def _readable(self, timeout):
        if self.reader.has_pending():
            return True
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        r, _, _ = select.select([self.sock], [], [], timeout)
        return bool(r)

    def read_response(self, head_request=False, skip_interim=True, store_body=True, sink=None):
        """Read the next response on this connection (see module-level ``read_response``)."""
        return read_response(self.reader, head_request, skip_interim, store_body, sink)

    def read_exact(self, n):
        return self.reader.read_exact(n)

    def read_some(self, n=65536):
        return self.reader.read_some(n)

    def read_to_eof(self):
        return self.reader.read_to_eof()

    def wait_closed(self, timeout=5):
        """Wait until the peer closes (EOF or reset); True if it did within ``timeout``.

        Any data received meanwhile is discarded and returned in ``self.discarded``.
        """
        old = self.sock.gettimeout()
        deadline = time.monotonic() + scaled(timeout)
        self.discarded = b''
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                try:
                    data = self.reader.read_some(65536)
                except socket.timeout:
                    return False
                except (ConnectionError, ssl.SSLError, OSError):
                    return True
                if not data:
                    return True
                self.discarded += data
        finally:
            try:
                self.sock.settimeout(old)
            except OSError:
                pass

    def shutdown_write(self):
        """Half-close our side (FIN)."""
        shutdown_write(self.sock)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def http_request(port, method='GET', path='/', headers=None, body=None, host='127.0.0.1',
                 timeout=10, **kw):
    """One request on a fresh connection, then close it; returns a ``Response``.

    Extra keyword arguments go to ``HttpClientConn`` (ssl_context, server_hostname,
    host_header) or ``HttpClientConn.request`` (chunked, trailers, version, expect_100,
    continue_timeout, store_body, auto_headers).
    """
    conn_kw = {k: kw.pop(k) for k in ('ssl_context', 'server_hostname', 'host_header')
               if k in kw}
    with HttpClientConn(port, host, timeout, **conn_kw) as c:
        return c.request(method, path, headers, body, **kw)


# ---------------------------------------------------------------------------------------------
# Envoy v3 config builders
# ---------------------------------------------------------------------------------------------

TCP_PROXY_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy'
HCM_TYPE = ('type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.'
            'HttpConnectionManager')
ROUTER_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router'


def socket_address(host, port):
    """``{"socket_address": {"address": host, "port_value": port}}``."""
    return {'socket_address': {'address': host, 'port_value': port}}


def admin(port, address='127.0.0.1'):
    """The bootstrap ``admin`` block listening on address:port."""
    return {'address': socket_address(address, port)}


def listener(name, port, filters, address='127.0.0.1', **extra):
    """A Listener with one filter chain holding ``filters``; ``extra`` keys merge at top level."""
    d = {'name': name, 'address': socket_address(address, port),
         'filter_chains': [{'filters': list(filters)}]}
    d.update(extra)
    return d


def tcp_proxy(stat_prefix, cluster, **extra):
    """A tcp_proxy network filter; ``extra`` keys merge into typed_config (e.g. idle_timeout)."""
    tc = {'@type': TCP_PROXY_TYPE, 'stat_prefix': stat_prefix, 'cluster': cluster}
    tc.update(extra)
    return {'name': 'envoy.filters.network.tcp_proxy', 'typed_config': tc}


def cluster(name, endpoints, connect_timeout='1s', **extra):
    """A STATIC cluster; ``endpoints`` is a list of (host, port) or bare ports (127.0.0.1).

    ``extra`` keys merge at top level (lb_policy, circuit_breakers, type override, ...).
    """
    lb = []
    for ep in endpoints:
        host, port = ('127.0.0.1', ep) if isinstance(ep, int) else ep
        lb.append({'endpoint': {'address': socket_address(host, port)}})
    d = {'name': name, 'type': 'STATIC', 'connect_timeout': connect_timeout,
         'load_assignment': {'cluster_name': name, 'endpoints': [{'lb_endpoints': lb}]}}
    d.update(extra)
    return d


def router_filter():
    """The HTTP router filter entry for ``http_filters``."""
    return {'name': 'envoy.filters.http.router', 'typed_config': {'@type': ROUTER_TYPE}}


def http_connection_manager(stat_prefix, route_config, http_filters=None, **extra):
    """An http_connection_manager network filter with an inline ``route_config``.

    ``http_filters`` defaults to ``[router_filter()]``; ``extra`` keys merge into typed_config
    (codec_type, stream_idle_timeout, common_http_protocol_options, ...).
    """
    tc = {'@type': HCM_TYPE, 'stat_prefix': stat_prefix, 'route_config': route_config,
          'http_filters': list(http_filters) if http_filters is not None else [router_filter()]}
    tc.update(extra)
    return {'name': 'envoy.filters.network.http_connection_manager', 'typed_config': tc}


def route_config(virtual_hosts, name='local_route', **extra):
    """A RouteConfiguration with the given virtual hosts."""
    d = {'name': name, 'virtual_hosts': list(virtual_hosts)}
    d.update(extra)
    return d


def vhost(name, domains, routes, **extra):
    """A VirtualHost; ``domains`` e.g. ``['*']``."""
    d = {'name': name, 'domains': list(domains), 'routes': list(routes)}
    d.update(extra)
    return d


def route_prefix(prefix, cluster, **extra):
    """A route matching ``prefix`` to ``cluster``; ``extra`` merges into the route action
    (timeout, retry_policy, prefix_rewrite, ...). Add route-level keys to the returned dict."""
    action = {'cluster': cluster}
    action.update(extra)
    return {'match': {'prefix': prefix}, 'route': action}


def bootstrap(listeners, clusters, admin_port=None, **extra):
    """A bootstrap with static listeners/clusters and (if ``admin_port``) an admin block."""
    d = {}
    if admin_port is not None:
        d['admin'] = admin(admin_port)
    d['static_resources'] = {'listeners': list(listeners), 'clusters': list(clusters)}
    d.update(extra)
    return d


# ---------------------------------------------------------------------------------------------
# A minimal dict -> YAML emitter (block style, every scalar string double-quoted)
# ---------------------------------------------------------------------------------------------

def _yaml_str(s):
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == '\\':
            out.append('\\\\')
        elif ch == '\n':
            out.append('\\n')
        elif ch == '\t':
            out.append('\\t')
        elif (o < 0x20 or 0x7f <= o < 0xa0 or 0xd800 <= o < 0xe000
              or o in (0xfeff, 0xfffe, 0xffff)):
            out.append('\\u%04x' % o if o <= 0xffff else '\\U%08x' % o)
        else:
            out.append(ch)
    out.append('"')
    return ''.join(out)


def _yaml_scalar(v):
    if v is None:
        return 'null'
    if v is True:
        return 'true'
    if v is False:
        return 'false'
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return '.nan'
        if v in (float('inf'), float('-inf')):
            return '.inf' if v > 0 else '-.inf'
        return repr(v)
    if isinstance(v, dict):
        return '{}'
    if isinstance(v, (list, tuple)):
        return '[]'
    return _yaml_str(str(v))


def _yaml_emit(obj, indent, out):
    pad = ' ' * indent
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = _yaml_str(str(k))
            if isinstance(v, (dict, list, tuple)) and v:
                out.append('%s%s:' % (pad, key))
                _yaml_emit(v, indent + 2, out)
            else:
                out.append('%s%s: %s' % (pad, key, _yaml_scalar(v)))
    else:
        for item in obj:
            if isinstance(item, (dict, list, tuple)) and item:
                sub = []
                _yaml_emit(item, indent + 2, sub)
                sub[0] = pad + '- ' + sub[0][indent + 2:]
                out.extend(sub)
            else:
                out.append('%s- %s' % (pad, _yaml_scalar(item)))


def to_yaml(obj):
    """Render dicts/lists/scalars as block-style YAML (strings JSON-style double-quoted)."""
    if not isinstance(obj, (dict, list, tuple)) or not obj:
        return _yaml_scalar(obj) + '\n'
    out = []
    _yaml_emit(obj, 0, out)
    return '\n'.join(out) + '\n'


# ---------------------------------------------------------------------------------------------
# Running petrel
# ---------------------------------------------------------------------------------------------

# Kill petrel if this Python process dies (setpriv sets PR_SET_PDEATHSIG, then execs petrel, so
# the pid is petrel's own). Caveat: the signal fires when the *thread* that started petrel exits.
_SETPRIV = shutil.which('setpriv')
_live = set()          # Petrel instances not yet cleaned up (killed and removed at exit)
_live_lock = threading.Lock()


@atexit.register
def _cleanup_leftovers():
    with _live_lock:
        left = list(_live)
    for p in left:
        try:
            p._cleanup()
        except Exception:
            pass


def _sanitizer_excerpt(text, lines=60):
    """The sanitizer report in ``text`` (from its first marker, ``lines`` long) or None."""
    pos = min((i for i in (text.find(m) for m in SANITIZER_MARKERS) if i >= 0), default=-1)
    if pos < 0:
        return None
    start = text.rfind('\n', 0, pos) + 1
    return '\n'.join(text[start:].splitlines()[:lines])


def _tail(text, n=100):
    return '\n'.join(text.splitlines()[-n:])


def _dig(d, *keys):
    for k in keys:
        if isinstance(d, dict) and k in d:
            d = d[k]
        elif isinstance(d, list) and isinstance(k, int) and k < len(d):
            d = d[k]
        else:
            return None
    return d


def run_petrel(args, timeout=30, env=None, input=None, binary=None, check_sanitizer=True):
    """Run petrel once with ``args``; returns ``(rc, stdout_text, stderr_text)``.

    ``timeout`` (scaled) expiring kills it and raises PetrelError; a sanitizer report in its
    stderr raises PetrelError too (unless ``check_sanitizer=False``).
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    cmd = [binary or PETREL_BIN] + [str(a) for a in args]
    try:
        cp = subprocess.run(cmd, input=input if input is None or isinstance(input, bytes)
                            else input.encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=full_env, timeout=scaled(timeout))
    except subprocess.TimeoutExpired as e:
        raise PetrelError('petrel %s timed out after %ss; stderr:\n%s' % (
            ' '.join(map(str, args)), scaled(timeout),
            _tail((e.stderr or b'').decode('utf-8', 'replace')))) from None
    out = cp.stdout.decode('utf-8', 'replace')
    err = cp.stderr.decode('utf-8', 'replace')
    if check_sanitizer:
        rep = _sanitizer_excerpt(err)
        if rep:
            raise PetrelError('sanitizer report from petrel %s:\n%s' % (' '.join(cmd[1:]), rep))
    return cp.returncode, out, err


class Petrel:
    """A petrel process under test.

    ``Petrel(config, concurrency=1, extra_args=(), fmt='json', log_level='info', env=None,
    admin_port=None, binary=None, start_timeout=10, wait_listeners=True, die_with_parent=True)``

    ``config``: a dict (written as JSON, or as YAML with ``fmt='yaml'``) or a str written
    verbatim (``fmt`` picks the extension). Files live in a fresh temp dir (``.tmpdir``, also
    petrel's cwd): config.json|yaml, stdout.log, stderr.log. Start with ``with Petrel(cfg) as p:``
    (or ``start()``); ``start`` waits until ``GET /ready`` on the admin port answers 200 (admin
    port taken from ``admin.address.socket_address.port_value`` or the ``admin_port`` argument)
    and until every static listener port is in LISTEN state (``wait_listeners``); it raises
    PetrelError with petrel's stderr if petrel exits or is not ready within ``start_timeout``.

    Leaving the ``with`` block stops petrel (SIGTERM, then SIGKILL after 15 s), raises if its
    stderr holds a sanitizer report, prints the last 100 stderr lines if the block raised, and
    removes the temp dir (kept, with its path printed, when env PT_KEEP_LOGS=1).
    All timeouts are scaled by ``SLOW``.
    """

    def __init__(self, config, concurrency=1, extra_args=(), fmt='json', log_level='info',
                 env=None, admin_port=None, binary=None, start_timeout=10, wait_listeners=True,
                 die_with_parent=True, nofile=None, wait_ready=True):
        if fmt not in ('json', 'yaml'):
            raise ValueError('fmt must be json or yaml')
        self.config = config
        self.concurrency = concurrency
        self.extra_args = [str(a) for a in extra_args]
        self.fmt = fmt
        self.log_level = log_level
        self.env = dict(env or {})
        self.binary = binary or PETREL_BIN
        self.start_timeout = start_timeout
        self.wait_listeners = wait_listeners
        self.wait_ready = wait_ready
        self.die_with_parent = die_with_parent
        self.nofile = nofile
        self.proc = None
        self.returncode = None
        self._exit_reported = False
        self._sanitizer_reported = False
        self._cleaned = False
        self.tmpdir = tempfile.mkdtemp(prefix='petrel-it-')
        with _live_lock:
            _live.add(self)
        self.stdout_path = os.path.join(self.tmpdir, 'stdout.log')
        self.stderr_path = os.path.join(self.tmpdir, 'stderr.log')
        self.config_path = self.write_config(config, fmt)

        parsed = config if isinstance(config, dict) else None
        if parsed is None and fmt == 'json':
            try:
                parsed = json.loads(config)
            except ValueError:
                parsed = None
        self._parsed = parsed if isinstance(parsed, dict) else {}
        if admin_port is None:
            admin_port = _dig(self._parsed, 'admin', 'address', 'socket_address', 'port_value')
        self.admin_port = int(admin_port) if admin_port else None
        host = _dig(self._parsed, 'admin', 'address', 'socket_address', 'address')
        self.admin_host = {None: '127.0.0.1', '0.0.0.0': '127.0.0.1', '::': '::1'}.get(host, host)

    # -- files ----------------------------------------------------------------------------------

    def path(self, name):
        """Absolute path of ``name`` inside the temp dir."""
        return os.path.join(self.tmpdir, name)

    def write_file(self, name, data):
        """Write ``data`` (str or bytes) to ``name`` in the temp dir atomically (rename); returns
        the path. Use for certificates, EDS files, watched configs."""
        path = self.path(name)
        tmp = path + '.tmp%d' % os.getpid()
        with open(tmp, 'wb') as f:
            f.write(data.encode('utf-8') if isinstance(data, str) else data)
        os.replace(tmp, path)
        return path

    def write_config(self, config, fmt=None):
        """(Re)write the config file (atomically); returns its path."""
        fmt = fmt or self.fmt
        if isinstance(config, (dict, list)):
            text = to_yaml(config) if fmt == 'yaml' else json.dumps(config, indent=2)
        else:
            text = config
        return self.write_file('config.' + fmt, text)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def command(self):
        """The argv petrel is started with."""
        return ([self.binary, '-c', self.config_path, '--concurrency', str(self.concurrency),
                 '-l', self.log_level] + self.extra_args)

    def start(self):
        """Start petrel and wait until ready (see class doc). Returns self."""
        if self.proc is not None:
            raise RuntimeError('petrel already started')
        if not os.path.exists(self.binary):
            raise PetrelError('petrel binary %r not found (build it, or set PETREL_BIN)'
                              % self.binary)
        env = dict(os.environ)
        env.update(self.env)
        cmd = self.command()
        if self.die_with_parent and _SETPRIV:
            cmd = [_SETPRIV, '--pdeathsig', 'KILL', '--'] + cmd
        with open(self.stdout_path, 'wb') as out, open(self.stderr_path, 'wb') as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=env, cwd=self.tmpdir, close_fds=True,
                                         preexec_fn=self._preexec())
        try:
            self._wait_started()
        except BaseException:
            self._kill_quietly()
            raise
        return self

    def _preexec(self):
        """What runs in the child before exec: the descriptor limit (``nofile``), if any."""
        if self.nofile is None:
            return None
        n = int(self.nofile)

        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        return limit

    def _fail_start(self, why):
        self._kill_quietly()
        raise PetrelError('%s\ncommand: %s\n----- petrel stderr (last 100 lines) -----\n%s'
                          % (why, ' '.join(self.command()), _tail(self.log())))

    def _wait_started(self):
        limit = scaled(self.start_timeout)
        deadline = time.monotonic() + limit

        def check_alive(what):
            rc = self.proc.poll()
            if rc is not None:
                self._fail_start('petrel exited with code %s while %s' % (rc, what))
            if time.monotonic() > deadline:
                self._fail_start('petrel not %s within %.0fs' % (what, limit))

        if self.admin_port:
            while True:
                check_alive('waiting for GET /ready')
                if not self.wait_ready:
                    # Only that the admin answers (a petrel still initializing says 503).
                    try:
                        http_request(self.admin_port, 'GET', '/ready', host=self.admin_host,
                                     timeout=1.0 / SLOW)
                        break
                    except (OSError, ValueError):
                        time.sleep(0.05)
                        continue
                try:
                    r = http_request(self.admin_port, 'GET', '/ready', host=self.admin_host,
                                     timeout=1.0 / SLOW)
                    if r.status == 200:
                        break
                except (OSError, ValueError):
                    pass
                time.sleep(0.05)
        if self.wait_listeners:
            for ln in _dig(self._parsed, 'static_resources', 'listeners') or []:
                port = _dig(ln, 'address', 'socket_address', 'port_value')
                proto = _dig(ln, 'address', 'socket_address', 'protocol')
                if not port or ln.get('bind_to_port') is False or proto == 'UDP':
                    continue
                while not port_listening(int(port)):
                    check_alive('listening on port %s' % port)
                    time.sleep(0.02)

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        failed = exc_type is not None
        try:
            try:
                self.stop()
            except AssertionError as e:
                if failed:                # keep the test's own error; still show the report
                    sys.stderr.write('\n%s\n' % e)
                else:
                    failed = True
                    raise
        finally:
            if failed:
                self.dump_log()
            self._cleanup()
        return False

    def dump_log(self, lines=100):
        """Print the last ``lines`` lines of petrel's stderr to our stderr."""
        sys.stderr.write('\n----- petrel stderr (last %d lines; %s) -----\n%s\n----- end -----\n'
                         % (lines, self.stderr_path, _tail(self.log(), lines)))

    def signal(self, sig):
        """Send signal ``sig`` (e.g. signal.SIGHUP) to petrel."""
        self.proc.send_signal(sig)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout=10):
        """Wait for petrel to exit and return its exit code (negative = killed by signal).
        Raises PetrelError if it is still running after ``timeout`` (scaled)."""
        try:
            self.returncode = self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            raise PetrelError('petrel still running after %.0fs' % scaled(timeout)) from None
        return self.returncode

    def stop(self):
        """SIGTERM, and if petrel is still draining after 2 s (scaled; idle keep-alive clients
        keep a drain going for --drain-time-s), a second SIGTERM, which stops it at once and
        still lets it exit cleanly (leak reports included); SIGKILL only if it has not
        exited 15 s (scaled) later. Returns the exit code.

        Raises PetrelError (once) if petrel's stderr holds a sanitizer report, and
        PetrelError if petrel, stopped here, does not exit 0 (a crash or abort while
        shutting down is a failure like any other).
        """
        if self.proc is None:
            return None
        stopped_here = self.proc.poll() is None
        if stopped_here:
            try:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(scaled(2))
                except subprocess.TimeoutExpired:
                    self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(scaled(15))
            except subprocess.TimeoutExpired:
                sys.stderr.write('petrel did not exit on SIGTERM within %ds, killing it\n'
                                 % scaled(15))
                self.proc.kill()
                self.proc.wait(10)
        self.returncode = self.proc.returncode
        self.check_sanitizer()
        if stopped_here and self.returncode != 0 and not self._exit_reported:
            self._exit_reported = True
            raise PetrelError('petrel exited with status %d on SIGTERM (%s)'
                              % (self.returncode, self.stderr_path))
        return self.returncode

    def check_sanitizer(self):
        """Raise PetrelError if petrel's stderr contains a sanitizer report (only once)."""
        if self._sanitizer_reported:
            return
        rep = _sanitizer_excerpt(self.log())
        if rep:
            self._sanitizer_reported = True
            raise PetrelError('sanitizer report in petrel stderr (%s):\n%s'
                              % (self.stderr_path, rep))

    def close(self):
        """``stop()`` and remove the temp dir (for setUp/addCleanup style tests)."""
        try:
            self.stop()
        finally:
            self._cleanup()

    def _kill_quietly(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.kill()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc is not None:
            self.returncode = self.proc.returncode

    def _cleanup(self):
        if self._cleaned:
            return
        self._kill_quietly()
        self._cleaned = True
        with _live_lock:
            _live.discard(self)
        if _env_true(os.environ.get('PT_KEEP_LOGS')):
            sys.stderr.write('petrel files kept in %s\n' % self.tmpdir)
        else:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    # -- logs -----------------------------------------------------------------------------------

    def log(self):
        """petrel's stderr so far, as text."""
        try:
            with open(self.stderr_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def stdout(self):
        """petrel's stdout so far, as text."""
        try:
            with open(self.stdout_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def wait_log(self, pattern, timeout=10):
        """Wait until regex ``pattern`` matches petrel's stderr; returns the match."""
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.log()), timeout, 0.05,
                          'petrel stderr never matched %r' % pattern)

    # -- admin ----------------------------------------------------------------------------------

    def _admin(self, method, path, timeout):
        if not self.admin_port:
            raise PetrelError('this config has no admin port')
        r = http_request(self.admin_port, method, path, host=self.admin_host, timeout=timeout)
        return r.status, r.header_dict(), r.body

    def admin_get(self, path, timeout=5):
        """``GET path`` on the admin port -> (status, {lower-case name: value}, body bytes)."""
        return self._admin('GET', path, timeout)

    def admin_post(self, path, timeout=5):
        """``POST path`` on the admin port -> (status, headers dict, body bytes)."""
        return self._admin('POST', path, timeout)

    def stats(self):
        """All integer stats from ``GET /stats`` as {name: int} (non-integer lines skipped)."""
        status, _, body = self.admin_get('/stats')
        if status != 200:
            raise PetrelError('GET /stats answered %d: %r' % (status, body[:200]))
        out = {}
        for line in body.decode('utf-8', 'replace').splitlines():
            name, sep, value = line.rpartition(': ')
            if not sep:
                continue
            value = value.strip()
            if re.fullmatch(r'-?\d+', value):
                out[name.strip()] = int(value)
        return out

    def stat(self, name, default=None):
        """One stat's value, or ``default`` when petrel does not report it."""
        return self.stats().get(name, default)

    def wait_stat(self, name, predicate_or_value, timeout=10):
        """Poll stat ``name`` until it equals the value (or satisfies the callable, which gets
        None while the stat is absent); returns the value, else raises AssertionError."""
        if callable(predicate_or_value):
            pred = predicate_or_value
            want = getattr(pred, '__name__', 'predicate')
        else:
            pred = lambda v: v == predicate_or_value  # noqa: E731
            want = repr(predicate_or_value)
        last = [None]
        deadline = time.monotonic() + scaled(timeout)
        while True:
            try:
                last[0] = self.stat(name)
            except OSError:
                last[0] = None
            if pred(last[0]):
                return last[0]
            if time.monotonic() >= deadline:
                raise AssertionError('stat %s: last value %r never matched %s within %.0fs'
                                     % (name, last[0], want, scaled(timeout)))
            if self.proc.poll() is not None:
                raise PetrelError('petrel exited (%s) while waiting for stat %s'
                                  % (self.proc.returncode, name))
            time.sleep(0.05)

    def rss_kb(self):
        """Resident set size of petrel in KiB (VmRSS from /proc/<pid>/status)."""
        with open('/proc/%d/status' % self.pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
        raise PetrelError('no VmRSS for pid %d' % self.pid)
