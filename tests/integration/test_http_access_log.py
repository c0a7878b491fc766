"""HTTP access logs end to end: Envoy's default line for proxied requests, direct responses and
errors, custom text formats with command operators, JSON formats, and the file, stdout and
stderr loggers. The logger flushes about every second, so every check polls.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_http_access_log.py -v
"""

import calendar
import json
import os
import re
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from upstreams import HttpUpstream  # noqa: E402

FILE_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog'
STDOUT_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog'
STDERR_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog'

# Envoy's default format:
# [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
# %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%
# "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%"
# "%UPSTREAM_HOST%"
DEFAULT_LINE = re.compile(
    r'^\[(?P<start>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\] '
    r'"(?P<method>\S+) (?P<path>\S+) (?P<protocol>\S+)" (?P<code>\d+) (?P<flags>\S+) '
    r'(?P<rx>\d+) (?P<tx>\d+) (?P<duration>\d+) (?P<ust>\S+) "(?P<xff>[^"]*)" '
    r'"(?P<ua>[^"]*)" "(?P<rid>[^"]*)" "(?P<authority>[^"]*)" "(?P<upstream>[^"]*)"$')
UUID4 = r'[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}'


def file_log(path='access.log', text=None, json_format=None):
    tc = {'@type': FILE_LOG, 'path': path}
    if text is not None:
        tc['log_format'] = {'text_format_source': {'inline_string': text}}
    if json_format is not None:
        tc['log_format'] = {'json_format': json_format}
    return {'name': 'envoy.access_loggers.file', 'typed_config': tc}


def stream_log(kind, text=None):
    tc = {'@type': STDOUT_LOG if kind == 'stdout' else STDERR_LOG}
    if text is not None:
        tc['log_format'] = {'text_format_source': {'inline_string': text}}
    return {'name': 'envoy.access_loggers.' + kind, 'typed_config': tc}


class AccessLogCase(unittest.TestCase):

    def setUp(self):
        self.up = HttpUpstream(name='up')
        self.addCleanup(self.up.close)

    def start(self, loggers, routes=None, **hcm_extra):
        self.port, admin = h.free_ports(2)
        routes = routes or [h.route_prefix('/', 'up', timeout='5s')]
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], routes)]), access_log=loggers, **hcm_extra)
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster('up', [self.up.port])], admin_port=admin)
        self.p = h.Petrel(cfg)
        self.p.__enter__()
        self.addCleanup(self.p.__exit__, None, None, None)
        return self.p

    def file_text(self, name='access.log'):
        try:
            with open(self.p.path(name), encoding='utf-8', errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def wait_lines(self, n, source=None):
        """Wait until ``source()`` (default: the access.log file) holds ``n`` lines."""
        source = source or self.file_text
        text = h.wait_until(lambda: source() if source().count('\n') >= n else None, 10, 0.1,
                            'fewer than %d access log lines' % n)
        lines = text.splitlines()
        self.assertEqual(len(lines), n, text)
        return lines

    def default_line(self, line):
        m = DEFAULT_LINE.match(line)
        self.assertIsNotNone(m, 'not the default format: %r' % line)
        return m.groupdict()

    def check_start_time(self, text, fmt='%Y-%m-%dT%H:%M:%S'):
        t = calendar.timegm(time.strptime(text.split('.')[0].rstrip('Z'), fmt))
        self.assertLess(abs(t - time.time()), 120, text)


class DefaultFormat(AccessLogCase):

    def test_proxied_request(self):
        self.start([file_log()])
        r = h.http_request(self.port, 'POST', '/echo/logged?q=1', body=b'hello',
                           headers={'User-Agent': 'petrel-test/1.0'}, host_header='logged.test')
        self.assertEqual(r.status, 200)
        d = self.default_line(self.wait_lines(1)[0])
        self.check_start_time(d['start'])
        self.assertEqual((d['method'], d['path'], d['protocol']),
                         ('POST', '/echo/logged?q=1', 'HTTP/1.1'))
        self.assertEqual((d['code'], d['flags']), ('200', '-'))
        self.assertEqual(int(d['rx']), 5)
        self.assertEqual(int(d['tx']), r.body_len)
        self.assertGreaterEqual(int(d['duration']), 0)
        self.assertRegex(d['ust'], r'^\d+$')
        self.assertEqual(d['xff'], '-')
        self.assertEqual(d['ua'], 'petrel-test/1.0')
        self.assertRegex(d['rid'], '^' + UUID4 + '$')
        self.assertEqual(d['rid'], self.up.last.header('x-request-id'))
        self.assertEqual(d['authority'], 'logged.test')
        self.assertEqual(d['upstream'], '127.0.0.1:%d' % self.up.port)

    def test_direct_response_and_errors(self):
        routes = [{'match': {'path': '/direct'}, 'direct_response': {
                      'status': 200, 'body': {'inline_string': 'direct!'}}},
                  {'match': {'path': '/teapot'}, 'direct_response': {'status': 418}},
                  h.route_prefix('/up', 'up', timeout='5s', prefix_rewrite='/echo')]
        self.start([file_log()], routes=routes)
        self.assertEqual(h.http_request(self.port, 'GET', '/direct').status, 200)
        self.assertEqual(h.http_request(self.port, 'HEAD', '/teapot').status, 418)
        self.assertEqual(h.http_request(self.port, 'GET', '/nowhere').status, 404)
        self.assertEqual(h.http_request(self.port, 'GET', '/up/x').status, 200)
        with h.HttpClientConn(self.port) as c:
            c.send_raw(b'GET /bad HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n')
            self.assertEqual(c.read_response().status, 400)
        lines = [self.default_line(l) for l in self.wait_lines(5)]
        d = lines[0]
        self.assertEqual((d['method'], d['path'], d['code'], d['flags']),
                         ('GET', '/direct', '200', '-'))
        self.assertEqual((d['rx'], d['tx'], d['ust'], d['upstream']), ('0', '7', '-', '-'))
        d = lines[1]
        self.assertEqual((d['method'], d['path'], d['code'], d['tx']),
                         ('HEAD', '/teapot', '418', '0'))
        d = lines[2]
        self.assertEqual((d['path'], d['code'], d['flags'], d['upstream']),
                         ('/nowhere', '404', 'NR', '-'))
        d = lines[3]                                   # the original path, not the rewrite
        self.assertEqual((d['path'], d['code'], d['upstream']),
                         ('/up/x', '200', '127.0.0.1:%d' % self.up.port))
        self.assertEqual(self.up.last['path'], '/echo/x')
        d = lines[4]
        self.assertEqual((d['code'], d['flags']), ('400', 'DPE'))

    def test_upstream_failure_flags(self):
        dead = h.dead_port()   # reserved: never petrel's own listener, never taken
        self.port, admin = h.free_ports(2)
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], [h.route_prefix('/', 'dead', timeout='5s')])]),
            access_log=[file_log()])
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])], [h.cluster('dead', [dead])],
                          admin_port=admin)
        with h.Petrel(cfg) as p:
            self.p = p
            self.assertEqual(h.http_request(self.port, 'GET', '/x').status, 503)
            d = self.default_line(self.wait_lines(1)[0])
            self.assertEqual((d['code'], d['flags'], d['upstream']),
                             ('503', 'UF', '127.0.0.1:%d' % dead))
            self.assertGreater(int(d['tx']), 0)

    def test_transport_failure_reason(self):
        dead = h.dead_port()
        self.port, admin = h.free_ports(2)
        fmt = 'code=%RESPONSE_CODE% why=%UPSTREAM_TRANSPORT_FAILURE_REASON% ' \
              'term=%CONNECTION_TERMINATION_DETAILS%\n'
        hcm = h.http_connection_manager('ingress', h.route_config([
            h.vhost('all', ['*'], [h.route_prefix('/dead', 'dead', timeout='5s'),
                                   h.route_prefix('/', 'up', timeout='5s')])]),
            access_log=[file_log(text=fmt)])
        cfg = h.bootstrap([h.listener('http', self.port, [hcm])],
                          [h.cluster('dead', [dead]), h.cluster('up', [self.up.port])],
                          admin_port=admin)
        with h.Petrel(cfg) as p:
            self.p = p
            self.assertEqual(h.http_request(self.port, 'GET', '/dead').status, 503)
            self.assertEqual(h.http_request(self.port, 'GET', '/ok').status, 200)
            self.assertEqual(self.wait_lines(2), [
                'code=503 why=delayed_connect_error:_Connection_refused term=-',
                'code=200 why=- term=-'])

    def test_xff_logged(self):
        self.start([file_log()], use_remote_address=True)
        h.http_request(self.port, 'GET', '/echo', headers={'X-Forwarded-For': '192.0.2.1'})
        d = self.default_line(self.wait_lines(1)[0])
        self.assertEqual([x.strip() for x in d['xff'].split(',')], ['192.0.2.1', '127.0.0.1'])


class CustomFormats(AccessLogCase):

    def test_text_format_operators(self):
        fmt = ('start=%START_TIME% day=%START_TIME(%Y/%m/%d)% method=%REQ(:METHOD)% '
               'hdr=%REQ(X-Custom)% missing=%REQ(X-Missing)% fb=%REQ(X-Missing?User-Agent)% '
               'trunc=%REQ(X-Long):4% resp=%RESP(X-Upstream-Name)% rh=%RESP(X-Resp-Extra)% '
               'code=%RESPONSE_CODE% flags=%RESPONSE_FLAGS% rx=%BYTES_RECEIVED% '
               'tx=%BYTES_SENT% dur=%DURATION% uh=%UPSTREAM_HOST% uc=%UPSTREAM_CLUSTER% '
               'dra=%DOWNSTREAM_REMOTE_ADDRESS% proto=%PROTOCOL% pct=100%%\n')
        self.start([file_log(text=fmt)])
        r = h.http_request(self.port, 'PUT', '/echo/custom', body=b'0123456789',
                           headers={'X-Custom': 'custom value', 'User-Agent': 'ua/2',
                                    'X-Long': 'abcdefgh',
                                    'x-test-response-headers': 'x-resp-extra=yes'})
        self.assertEqual(r.status, 200)
        line = self.wait_lines(1)[0]
        m = re.match(
            r'^start=(?P<start>\S+) day=(?P<day>\S+) method=PUT hdr=custom value missing=- '
            r'fb=ua/2 trunc=abcd resp=up rh=yes code=200 flags=- rx=10 tx=(?P<tx>\d+) '
            r'dur=(?P<dur>\d+) uh=127\.0\.0\.1:(?P<uport>\d+) uc=up '
            r'dra=127\.0\.0\.1:(?P<dport>\d+) proto=HTTP/1\.1 pct=100%$', line)
        self.assertIsNotNone(m, line)
        self.check_start_time(m['start'])
        self.assertEqual(m['day'], time.strftime('%Y/%m/%d', time.gmtime()))
        self.assertEqual(int(m['tx']), r.body_len)
        self.assertEqual(int(m['uport']), self.up.port)

    def test_json_format(self):
        self.start([file_log(json_format={
            'start': '%START_TIME%', 'method': '%REQ(:METHOD)%', 'path': '%REQ(:PATH)%',
            'code': '%RESPONSE_CODE%', 'flags': '%RESPONSE_FLAGS%', 'rx': '%BYTES_RECEIVED%',
            'tx': '%BYTES_SENT%', 'duration': '%DURATION%', 'upstream': '%UPSTREAM_HOST%',
            'cluster': '%UPSTREAM_CLUSTER%', 'missing': '%REQ(X-Missing)%',
            'mixed': 'code=%RESPONSE_CODE%', 'constant': 'petrel', 'nested': {
                'proto': '%PROTOCOL%', 'client': '%DOWNSTREAM_REMOTE_ADDRESS%'}})])
        h.http_request(self.port, 'POST', '/echo/json', body=b'abc')
        h.http_request(self.port, 'GET', '/status/404')
        lines = self.wait_lines(2)
        docs = [json.loads(l) for l in lines]
        d = docs[0]
        self.assertEqual((d['method'], d['path'], d['code'], d['flags']),
                         ('POST', '/echo/json', 200, '-'))
        self.assertEqual(d['rx'], 3)
        self.assertIsInstance(d['tx'], int)
        self.assertIsInstance(d['duration'], int)
        self.assertEqual(d['upstream'], '127.0.0.1:%d' % self.up.port)
        self.assertEqual(d['cluster'], 'up')
        self.assertIsNone(d['missing'])
        self.assertEqual(d['mixed'], 'code=200')
        self.assertEqual(d['constant'], 'petrel')
        self.assertEqual(d['nested']['proto'], 'HTTP/1.1')
        self.assertRegex(d['nested']['client'], r'^127\.0\.0\.1:\d+$')
        self.check_start_time(d['start'])
        self.assertEqual((docs[1]['code'], docs[1]['path']), (404, '/status/404'))


class Sinks(AccessLogCase):

    def test_stdout_logger(self):
        p = self.start([stream_log('stdout', '%REQ(:PATH)% %RESPONSE_CODE%\n')])
        for i in range(3):
            h.http_request(self.port, 'GET', '/stdout/%d' % i)
        lines = self.wait_lines(3, p.stdout)
        self.assertEqual(lines, ['/stdout/%d 200' % i for i in range(3)])

    def test_stdout_default_format(self):
        p = self.start([stream_log('stdout')])
        h.http_request(self.port, 'GET', '/stdout-default')
        d = self.default_line(self.wait_lines(1, p.stdout)[0])
        self.assertEqual((d['path'], d['code']), ('/stdout-default', '200'))

    def test_stderr_logger(self):
        p = self.start([stream_log('stderr', 'ACCESS %REQ(:PATH)% %RESPONSE_CODE%\n')])
        h.http_request(self.port, 'GET', '/to-stderr')
        p.wait_log(r'(?m)^ACCESS /to-stderr 200$')

    def test_several_loggers_and_files(self):
        p = self.start([file_log('one.log', '%REQ(:PATH)%\n'),
                        file_log('two.log', '%RESPONSE_CODE%\n'),
                        stream_log('stdout', 'out %REQ(:PATH)%\n')])
        with h.HttpClientConn(self.port) as c:
            for path in ('/a', '/status/500', '/b'):
                c.request('GET', path)
        self.assertEqual(self.wait_lines(3, lambda: self.file_text('one.log')),
                         ['/a', '/status/500', '/b'])
        self.assertEqual(self.wait_lines(3, lambda: self.file_text('two.log')),
                         ['200', '500', '200'])
        self.assertEqual(self.wait_lines(3, p.stdout), ['out /a', 'out /status/500', 'out /b'])

    def test_many_lines_all_logged(self):
        self.start([file_log(text='%REQ(:PATH)%\n')])
        with h.HttpClientConn(self.port) as c:
            for i in range(300):
                c.request('GET', '/n/%d' % i)
        lines = self.wait_lines(300)
        self.assertEqual(lines, ['/n/%d' % i for i in range(300)])

    def test_aborted_request_logged(self):
        self.start([file_log(text='%RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(:PATH)%\n')])
        s = h.tcp_connect(self.port)
        s.sendall(b'GET /delay/2000/gone HTTP/1.1\r\nHost: a\r\n\r\n')
        self.up.wait_accepted(1)
        h._abort_socket(s)
        self.assertEqual(self.wait_lines(1), ['0 DC /delay/2000/gone'])


class Rotation(AccessLogCase):
    """logrotate's `create` mode: the file is renamed away, then SIGUSR1 (as in Envoy) or
    POST /reopen_logs makes petrel write what it holds to the old file and open a new one."""

    def rotate(self, trigger):
        p = self.start([file_log(text='%REQ(:PATH)%\n')])
        h.http_request(self.port, 'GET', '/before')
        self.wait_lines(1)
        os.rename(p.path('access.log'), p.path('access.log.1'))
        # Logged after the rename, before the reopen: still the old file's.
        h.http_request(self.port, 'GET', '/between')
        trigger(p)
        # The new file exists once the reopen ran (a request sent before that could still
        # be flushed to the old file).
        h.wait_until(lambda: os.path.exists(p.path('access.log')), 10,
                     message='access.log not created again')
        h.http_request(self.port, 'GET', '/after')
        self.assertEqual(self.wait_lines(1), ['/after'])
        self.assertEqual(self.wait_lines(2, lambda: self.file_text('access.log.1')),
                         ['/before', '/between'])
        self.assertTrue(p.alive())
        return p

    def test_sigusr1_reopens(self):
        line = re.compile(r'\[main\]\[info\] caught SIGUSR1: reopening access logs\n')

        def sigusr1(p):
            before = len(line.findall(p.log()))
            p.signal(signal.SIGUSR1)
            h.wait_until(lambda: len(line.findall(p.log())) == before + 1, 10)
        p = self.rotate(sigusr1)
        # Again: each signal reopens (and the process still serves).
        os.rename(p.path('access.log'), p.path('access.log.2'))
        sigusr1(p)
        h.wait_until(lambda: os.path.exists(p.path('access.log')), 10)
        h.http_request(self.port, 'GET', '/third')
        self.assertEqual(self.wait_lines(1), ['/third'])
        self.assertEqual(self.wait_lines(1, lambda: self.file_text('access.log.2')), ['/after'])
        self.assertEqual(p.stop(), 0)

    def test_reopen_logs_endpoint(self):
        def post(p):
            self.assertEqual(p.admin_post('/reopen_logs')[::2], (200, b'OK\n'))
        self.rotate(post)


if __name__ == '__main__':
    unittest.main()
