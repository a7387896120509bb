// What every Node peer does with the body of POST /api/events, as Switchyard
// does: one event or an array, each stamped with a per-channel sequence (the
// channel is the type's domain) and an RFC 3339 millisecond timestamp at
// accept, into the same envelope JSON. Shared by node_server.js and
// uws_server.js.
'use strict';

/**
 * Stamps the events of a request body (text). Returns
 * `{ error: [status, code] }` for a body that is not JSON or an event without
 * a dotted type, else `{ stamped: [{ type, channel, text }], out: [{ channel, sequence }] }`.
 */
function stamp(bodyText, sequences) {
  let body;
  try {
    body = JSON.parse(bodyText);
  } catch {
    return { error: [400, 'invalid_json'] };
  }
  const events = Array.isArray(body) ? body : [body];
  const stamped = [];
  const out = [];
  for (const ev of events) {
    if (!ev || typeof ev.type !== 'string' || !ev.type.includes('.')) {
      return { error: [422, 'invalid_payload'] };
    }
    const channel = ev.type.split('.', 1)[0];
    const sequence = (sequences.get(channel) || 0) + 1;
    sequences.set(channel, sequence);
    const envelope = {
      type: ev.type,
      payload: ev.payload === undefined ? {} : ev.payload,
      timestamp: new Date().toISOString(),
      channel,
      sequence,
    };
    if (ev.correlation_id != null) envelope.correlation_id = ev.correlation_id;
    stamped.push({ type: ev.type, channel, text: JSON.stringify(envelope) });
    out.push({ channel, sequence });
  }
  return { stamped, out };
}

module.exports = { stamp };
