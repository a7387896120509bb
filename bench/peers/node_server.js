// A Node `ws` broadcast server: the peer Switchyard is compared with.
//
// - WebSocket /ws/events?events=alert.*,camera.status_changed: patterns `*`,
//   `domain.*` and exact names; no `events` parameter = receive everything.
//   On connect it sends {"type":"subscribed",...} like Switchyard.
// - POST /api/events: one event {"type","payload","correlation_id"?} or an
//   array; each gets a per-channel sequence (the channel is the type's domain)
//   and an RFC 3339 millisecond timestamp at accept; the same envelope JSON as
//   Switchyard is sent to every matching subscriber.
//   202 {"accepted":n,"sequences":[{"channel","sequence"}]}.
//
// No schema validation, history, auth or bounded queues. Run:
//   NODE_PATH=scratch/node/node_modules node bench/peers/node_server.js --port 8092
'use strict';

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');
const { stamp } = require('./stamp');

const portArg = process.argv.indexOf('--port');
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 8092;

const clients = new Set(); // { ws, patterns: string[] | null }
const sequences = new Map();

function matches(pattern, type) {
  if (pattern === '*') return true;
  if (pattern.endsWith('.*')) return type.split('.', 1)[0] === pattern.slice(0, -2);
  return pattern === type;
}

function broadcast(type, text) {
  for (const c of clients) {
    if (c.ws.readyState !== WebSocket.OPEN) continue;
    if (c.patterns === null || c.patterns.some((p) => matches(p, type))) c.ws.send(text);
  }
}

function reply(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/api/events') {
    return reply(res, 404, { error: { code: 'not_found' } });
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const { error, stamped, out } = stamp(Buffer.concat(chunks).toString('utf8'), sequences);
    if (error) return reply(res, error[0], { error: { code: error[1] } });
    for (const { type, text } of stamped) broadcast(type, text);
    reply(res, 202, { accepted: out.length, sequences: out });
  });
});

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname !== '/ws/events') {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const events = url.searchParams.get('events');
    const patterns = events === null ? null : events.split(',').filter(Boolean);
    const client = { ws, patterns };
    clients.add(client);
    ws.on('close', () => clients.delete(client));
    ws.on('error', () => clients.delete(client));
    ws.on('message', (data) => {
      try {
        const msg = JSON.parse(data.toString());
        if (msg && (msg.action === 'ping' || msg.type === 'ping')) {
          ws.send(JSON.stringify({ type: 'pong', timestamp: new Date().toISOString() }));
        }
      } catch {
        // not JSON: ignored
      }
    });
    ws.send(JSON.stringify({ type: 'subscribed', action: 'subscribed', events: patterns, warnings: [] }));
  });
});

server.keepAliveTimeout = 65000; // publishers keep their connections between bursts
server.listen(port, '127.0.0.1');
