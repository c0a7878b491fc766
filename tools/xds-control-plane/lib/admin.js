'use strict';
/*
 * Admin HTTP API, for tests and people: what the control plane saw and sent, and a few levers.
 *
 *   GET  /log            every event so far, in order (JSON list)
 *   GET  /state          versions and resource names per type, open streams and subscriptions
 *   POST /close-streams  ends every open stream with UNAVAILABLE (clients should reconnect)
 *   POST /reload         re-reads the resource directory now, without waiting for the watcher
 */
const http = require('http');
const grpc = require('@grpc/grpc-js');

function createAdminServer({ store, ads, events }) {
  const routes = {
    'GET /log': () => events.list(),
    'GET /state': () => ({ types: store.summary(), streams: ads.summary() }),
    'POST /close-streams': () => ({ closed: ads.closeAll(grpc.status.UNAVAILABLE, 'closed by the admin API') }),
    'POST /reload': () => ({ changed: store.reload(), types: store.summary() }),
  };
  return http.createServer((req, res) => {
    const path = req.url.split('?')[0];
    const route = routes[`${req.method} ${path}`];
    /* Drain any body; none is used. */
    req.resume();
    req.on('end', () => {
      if (!route) {
        const allowed = Object.keys(routes).filter((k) => k.endsWith(' ' + path));
        const status = allowed.length ? 405 : 404;
        return reply(res, status, { error: allowed.length ? `use ${allowed.join(' or ')}` : `no such path; try ${Object.keys(routes).join(', ')}` });
      }
      try {
        reply(res, 200, route());
      } catch (e) {
        reply(res, 500, { error: e.message });
      }
    });
  });
}

function reply(res, status, body) {
  const text = JSON.stringify(body, null, 1) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

module.exports = { createAdminServer };
