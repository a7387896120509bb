// A uWebSockets.js broadcast server using uWS's *native* pub/sub: the fastest
// peer Switchyard is compared with. It speaks exactly what node_server.js
// speaks:
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
// Broadcasting is uWS's own: each subscriber is `ws.subscribe(topic)`d to
// topics, and an event of type `d.x` is `app.publish`ed to the three topics
// `*`, `d.*` and `d.x` (the last only when it differs from `d.*`), so uWS
// matches, batches and writes in C++ with no JavaScript loop per recipient.
// An event is published to three topics, so a subscriber on two of them
// would get it twice; the rule that prevents it: a subscriber's patterns are
// reduced to topics no two of which an event can match together —
//   - no `events` parameter, or `*` among the patterns: the topic `*` only;
//   - otherwise every `d.*` pattern, plus every exact name whose domain `d`
//     has no `d.*` pattern among them (`bench.*,bench.tick` = `bench.*`).
// Every event then reaches a subscriber through at most one topic: exactly
// once when a pattern matches, never otherwise (as in node_server.js, `a.b.*`
// matches nothing: a `domain.*` pattern names a domain, the part before the
// first dot).
//
// Backpressure: uWS skips a subscriber whose unsent bytes pass
// `maxBackpressure` (64 KiB by default) — a silent drop. The other peers
// buffer without bound, so this one does too (1 GiB), and a burst loses
// nothing. No idle timeout (the other peers have none either); no
// permessage-deflate. No schema validation, history, auth or bounded queues.
//
// uWebSockets.js is not on the npm registry under its own name; scripts/compare
// installs a registry copy with prebuilt binaries (@trufflesuite/uws-js-unofficial,
// uWS v20.30) into scratch/uws. Run:
//   NODE_PATH=scratch/uws/node_modules node bench/peers/uws_server.js --port 8093
'use strict';

const uWS = require(process.env.UWS_MODULE || '@trufflesuite/uws-js-unofficial');
const { stamp } = require('./stamp');

const portArg = process.argv.indexOf('--port');
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 8093;

const sequences = new Map();
const decoder = new TextDecoder();

/** The topics a subscriber with these patterns (null = everything) is subscribed to. */
function topicsFor(patterns) {
  if (patterns === null || patterns.includes('*')) return ['*'];
  const unique = [...new Set(patterns)];
  const domains = new Set(unique.filter((p) => p.endsWith('.*')).map((p) => p.slice(0, -2)));
  return unique.filter((p) => p.endsWith('.*') || !domains.has(p.split('.', 1)[0]));
}

function reply(res, status, body) {
  res.cork(() => {
    res.writeStatus(status).writeHeader('content-type', 'application/json').end(JSON.stringify(body));
  });
}

const STATUS = { 400: '400 Bad Request', 422: '422 Unprocessable Entity' };

function publishEvents(res, text) {
  const { error, stamped, out } = stamp(text, sequences);
  if (error) return reply(res, STATUS[error[0]], { error: { code: error[1] } });
  for (const { type, channel, text: envelope } of stamped) {
    const domainTopic = `${channel}.*`;
    app.publish('*', envelope, false);
    app.publish(domainTopic, envelope, false);
    if (type !== domainTopic) app.publish(type, envelope, false);
  }
  reply(res, '202 Accepted', { accepted: out.length, sequences: out });
}

const app = uWS.App();

app.post('/api/events', (res) => {
  let aborted = false;
  const chunks = [];
  res.onAborted(() => {
    aborted = true;
  });
  res.onData((chunk, isLast) => {
    // The chunk's memory is uWS's and is reused once this returns: copy it.
    chunks.push(Buffer.from(chunk.slice(0)));
    if (!isLast || aborted) return;
    publishEvents(res, decoder.decode(Buffer.concat(chunks)));
  });
});

app.ws('/ws/events', {
  compression: uWS.DISABLED,
  idleTimeout: 0,
  maxBackpressure: 1024 * 1024 * 1024,
  maxPayloadLength: 64 * 1024,
  upgrade: (res, req, context) => {
    // `req` is only valid inside this call: read everything now.
    const events = new URLSearchParams(req.getQuery() || '').get('events');
    const patterns = events === null ? null : events.split(',').filter(Boolean);
    res.upgrade(
      { patterns },
      req.getHeader('sec-websocket-key'),
      req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'),
      context,
    );
  },
  open: (ws) => {
    const { patterns } = ws.getUserData();
    for (const topic of topicsFor(patterns)) ws.subscribe(topic);
    ws.send(JSON.stringify({ type: 'subscribed', action: 'subscribed', events: patterns, warnings: [] }), false);
  },
  message: (ws, data) => {
    try {
      const msg = JSON.parse(decoder.decode(data));
      if (msg && (msg.action === 'ping' || msg.type === 'ping')) {
        ws.send(JSON.stringify({ type: 'pong', timestamp: new Date().toISOString() }), false);
      }
    } catch {
      // not JSON: ignored
    }
  },
});

app.any('/*', (res) => reply(res, '404 Not Found', { error: { code: 'not_found' } }));

app.listen('127.0.0.1', port, (listenSocket) => {
  if (!listenSocket) {
    console.error(`uws_server: cannot listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
});
