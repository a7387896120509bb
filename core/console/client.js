// Built from clients/typescript/src/index.ts by `npm run build` and
// clients/typescript/scripts/console-copy.mjs; do not edit: the test suite checks it.
/**
 * @switchyard/client — a client for the Switchyard event router (SPEC §3, §11).
 *
 * No runtime dependencies. Runs in browsers and in Node 20+ (pass a `WebSocket`
 * constructor, e.g. the `ws` package's, where there is no global one).
 */
/** Thrown (rejected) by subscribe/unsubscribe when the server answers with `error`. */
export class SwitchyardError extends Error {
    constructor(err) {
        super(`${err.payload.code}: ${err.payload.message}`);
        this.name = "SwitchyardError";
        this.code = err.payload.code;
        this.payload = err.payload;
        this.id = err.id;
    }
}
/**
 * After how many attempts in a row that fell back to SSE the client stops
 * trying WebSocket first. One is not enough: a router restarting refuses
 * the WebSocket and is up again when the stream is asked for a moment later.
 * Two in a row means WebSockets are blocked on the way (a proxy).
 */
const SSE_AFTER_FALLBACKS = 2;
/** The longest delay `setTimeout` honours (2^31 - 1 ms); a longer one fires at once. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;
const AUTH_1008 = /invalid token|authentication required|requires authentication/i;
function matches(pattern, type) {
    if (pattern === "*")
        return true;
    if (pattern.endsWith(".*"))
        return type.startsWith(pattern.slice(0, -1));
    return pattern === type;
}
/**
 * The client. `M` maps event type names to payload types (e.g. `EventMap` from the
 * router's `GET /api/websocket/types.ts`).
 */
export class SwitchyardClient {
    constructor(options) {
        this.listeners = new Map();
        this.pending = new Map();
        this.nextId = 1;
        this.conn = null;
        this.closedByUser = false;
        this.attempt = 0;
        this.timers = new Set();
        this.retryTimer = null;
        this.stableTimer = null;
        this.refreshTimer = null;
        this.pingTimer = null;
        this.watchdog = null;
        this.heartbeatMs = 30000;
        /** Attempts in a row whose WebSocket failed to open and whose SSE then worked. */
        this.sseFallbacks = 0;
        this.lastAuthFailure = null;
        this.expiresAt = null;
        this._state = "disconnected";
        this._connectionId = null;
        this._transport = null;
        /** Set while the connect-time (or lag) recovery reply is awaited: events are held until it. */
        this.recovering = null;
        this.held = [];
        /** Channels whose `connection.lagged` recovery is awaited, with its request id. */
        this.lagRecovery = new Map();
        this.lagHeld = new Map();
        /** Resolvers waiting for the next connect-time `subscribed` (SSE subscribe). */
        this.connectWaiters = [];
        /** The checks of {@link ready} calls still waiting, run by `close()` too. */
        this.readyChecks = new Set();
        this.opening = false;
        this.refreshAfterReply = false;
        this.opts = { endpoint: "/ws/events", transport: "auto", autoConnect: true, ...options };
        this.patterns = options.events ? [...options.events] : null;
        this._positions = {};
        for (const [ch, p] of Object.entries(options.positions ?? {}))
            this._positions[ch] = { ...p };
        if (this.opts.autoConnect)
            this.connect();
    }
    /** `connecting`, `connected` or `disconnected`. */
    get state() {
        return this._state;
    }
    /** Last delivered (or announced) position per channel: a copy, to persist. */
    get positions() {
        const out = {};
        for (const [ch, p] of Object.entries(this._positions))
            out[ch] = { ...p };
        return out;
    }
    /** The current connection's id (from `connection.established`), or null. */
    get connectionId() {
        return this._connectionId;
    }
    /** The transport in use, or null when not connected. */
    get transport() {
        return this._transport;
    }
    /** The patterns held (null = receive everything on the endpoint). */
    get events() {
        return this.patterns ? [...this.patterns] : null;
    }
    on(name, fn) {
        let set = this.listeners.get(name);
        if (!set)
            this.listeners.set(name, (set = new Set()));
        set.add(fn);
        return () => this.off(name, fn);
    }
    off(name, fn) {
        this.listeners.get(name)?.delete(fn);
    }
    /** Opens the connection (done by the constructor unless `autoConnect: false`). */
    connect() {
        this.closedByUser = false;
        if (this.conn || this.retryTimer || this.opening)
            return;
        void this.open();
    }
    /** Closes for good: no reconnect. Pending requests are rejected. */
    close() {
        this.closedByUser = true;
        this.clearTimers();
        if (this.retryTimer)
            clearTimeout(this.retryTimer);
        this.retryTimer = null;
        const c = this.conn;
        this.conn = null;
        if (c) {
            c.dead = true;
            c.close(1000, "client closed");
        }
        this.failPending(new Error("client closed"));
        this._connectionId = null;
        this._transport = null;
        this.setState("disconnected");
        // Closed before it ever connected (`autoConnect: false`), the state was already
        // `disconnected` and no state event woke the requests waiting to be sent.
        for (const check of [...this.readyChecks])
            check();
    }
    /**
     * Adds patterns. Resolves with the `subscribed` reply (all patterns now held, warnings),
     * rejects with a {@link SwitchyardError} when the server answers `error` for it.
     * Over SSE it reconnects with the new `events`.
     */
    async subscribe(events) {
        const conn = await this.ready();
        if (conn.transport === "websocket") {
            const reply = (await this.request({ action: "subscribe", events }, "subscribed"));
            this.patterns = reply.events;
            return reply;
        }
        const next = [...(this.patterns ?? [])];
        for (const e of events)
            if (!next.includes(e))
                next.push(e);
        this.patterns = next;
        return (await this.reconnectForPatterns());
    }
    /** Removes patterns (all without an argument). Resolves with the `unsubscribed` reply. */
    async unsubscribe(events) {
        const conn = await this.ready();
        if (conn.transport === "websocket") {
            const msg = { action: "unsubscribe" };
            if (events)
                msg.events = events;
            const reply = (await this.request(msg, "unsubscribed"));
            this.patterns = reply.events;
            return reply;
        }
        if (!events)
            this.patterns = [];
        else if (this.patterns)
            this.patterns = this.patterns.filter((p) => !events.includes(p));
        const sub = (await this.reconnectForPatterns());
        return { type: "unsubscribed", action: "unsubscribed", events: sub.events };
    }
    // ---------------------------------------------------------------- internals
    emit(name, arg) {
        for (const fn of [...(this.listeners.get(name) ?? [])]) {
            try {
                fn(arg);
            }
            catch (e) {
                setTimeout(() => {
                    throw e;
                });
            }
        }
    }
    setState(s) {
        if (this._state === s)
            return;
        this._state = s;
        this.emit("state", s);
    }
    timer(fn, ms) {
        const t = setTimeout(() => {
            this.timers.delete(t);
            fn();
        }, ms);
        this.timers.add(t);
        return t;
    }
    clearTimers() {
        for (const t of this.timers)
            clearTimeout(t);
        this.timers.clear();
        if (this.pingTimer)
            clearInterval(this.pingTimer);
        this.pingTimer = null;
        this.stableTimer = this.refreshTimer = this.watchdog = null;
    }
    failPending(err) {
        for (const p of this.pending.values())
            p.reject(err);
        this.pending.clear();
        this.lagRecovery.clear();
        for (const w of this.connectWaiters)
            w.reject(err);
        this.connectWaiters = [];
    }
    /** Waits until connected. */
    ready() {
        if (this.closedByUser)
            return Promise.reject(new Error("client closed"));
        if (this.conn && this._state === "connected" && !this.recovering)
            return Promise.resolve(this.conn);
        return new Promise((resolve, reject) => {
            const done = () => {
                off();
                offGap();
                this.readyChecks.delete(check);
            };
            const check = () => {
                if (this.closedByUser) {
                    done();
                    reject(new Error("client closed"));
                }
                else if (this.conn && this._state === "connected" && !this.recovering) {
                    done();
                    resolve(this.conn);
                }
            };
            const off = this.on("state", () => queueMicrotask(check));
            // `recovering` ends with the connect-time reply, after the state change.
            const offGap = this.on("control", () => queueMicrotask(check));
            this.readyChecks.add(check);
        });
    }
    request(msg, kind) {
        const conn = this.conn;
        if (!conn?.send)
            return Promise.reject(new Error("not connected over WebSocket"));
        const id = `c${this.nextId++}`;
        return new Promise((resolve, reject) => {
            this.pending.set(id, { resolve, reject, kind });
            conn.send({ ...msg, id });
        });
    }
    reconnectForPatterns() {
        return new Promise((resolve, reject) => {
            this.connectWaiters.push({ resolve, reject, kind: "subscribed" });
            const c = this.conn;
            if (c) {
                c.dead = true;
                c.close(1000, "changing subscriptions");
                this.conn = null;
            }
            this.clearTimers();
            if (this.retryTimer)
                clearTimeout(this.retryTimer);
            this.retryTimer = null;
            this.attempt = 0;
            void this.open();
        });
    }
    baseUrl(ws) {
        let u = this.opts.url.replace(/\/+$/, "");
        if (ws)
            u = u.replace(/^http(s?):/i, "ws$1:");
        else
            u = u.replace(/^ws(s?):/i, "http$1:");
        return u + this.opts.endpoint;
    }
    query(token) {
        const q = [];
        if (this.patterns)
            q.push("events=" + this.patterns.map(encodeURIComponent).join(","));
        const since = Object.entries(this._positions)
            .map(([ch, p]) => `${ch}:${p.epoch}:${p.sequence}`)
            .map(encodeURIComponent)
            .join(",");
        if (since)
            q.push("since=" + since);
        if (token)
            q.push("token=" + encodeURIComponent(token));
        return q.length ? "?" + q.join("&") : "";
    }
    async getToken() {
        if (!this.opts.token)
            return undefined;
        const t = await this.opts.token();
        return t ?? undefined;
    }
    async open() {
        if (this.closedByUser || this.opening)
            return;
        this.retryTimer = null;
        this.opening = true;
        try {
            await this.openInner();
        }
        finally {
            this.opening = false;
        }
    }
    async openInner() {
        this.setState("connecting");
        let token;
        try {
            token = await this.getToken();
        }
        catch (e) {
            this.emit("error", e instanceof Error ? e : new Error(String(e)));
            this.scheduleRetry();
            return;
        }
        if (this.closedByUser || this.conn)
            return;
        if (this.lastAuthFailure && this.lastAuthFailure.token === token && this.attempt > 0) {
            // The provider gave the token that was just refused: do not hammer the router.
            this.lastAuthFailure = null;
            this.scheduleRetry(this.opts.backoff?.maxMs ?? 20000);
            return;
        }
        this.lastAuthFailure = null;
        this.lastToken = token;
        const mode = this.opts.transport ?? "auto";
        const WS = this.opts.WebSocket ?? globalThis.WebSocket;
        if (mode === "sse" || (mode === "auto" && (this.sseFallbacks >= SSE_AFTER_FALLBACKS || !WS))) {
            this.openSse(token);
        }
        else {
            this.openWs(WS, token, mode === "auto");
        }
    }
    beginConn(conn) {
        this.conn = conn;
        this.recovering = null;
        this.held = [];
        this.lagHeld.clear();
    }
    openWs(WS, token, fallback) {
        let ws;
        const url = this.baseUrl(true) + this.query();
        try {
            ws = token ? new WS(url, ["bearer", token]) : new WS(url);
        }
        catch (e) {
            if (fallback)
                return this.fallBack(token);
            this.emit("error", e instanceof Error ? e : new Error(String(e)));
            return this.scheduleRetry();
        }
        const conn = {
            transport: "websocket",
            dead: false,
            opened: false,
            close: (code, reason) => {
                try {
                    ws.close(code, reason);
                }
                catch {
                    ws.close();
                }
            },
            send: (msg) => ws.send(JSON.stringify(msg)),
        };
        this.beginConn(conn);
        ws.onopen = () => {
            conn.opened = true;
            this.sseFallbacks = 0;
            this.alive();
        };
        ws.onmessage = (ev) => {
            if (conn.dead)
                return;
            this.alive();
            if (typeof ev.data !== "string") {
                // ws delivers Buffers unless told otherwise.
                const d = ev.data;
                if (d && typeof d.toString === "function")
                    return this.input(d.toString());
                return;
            }
            this.input(ev.data);
        };
        ws.onerror = () => { };
        ws.onclose = (ev) => {
            if (conn.dead)
                return;
            conn.dead = true;
            if (!conn.opened && fallback) {
                this.conn = null;
                return this.fallBack(token);
            }
            this.ended({ code: ev.code, reason: ev.reason ?? "", transport: "websocket" });
        };
    }
    fallBack(token) {
        this.conn = null;
        this.openSse(token, true);
    }
    openSse(token, isFallback = false) {
        const ES = this.opts.EventSource ?? globalThis.EventSource;
        // EventSource cannot send headers: its token goes in the query (`fetch` sends Authorization).
        const url = this.baseUrl(false) + this.query(ES ? token : undefined);
        const conn = { transport: "sse", dead: false, opened: false, close: () => { } };
        this.beginConn(conn);
        const onFail = (closed) => {
            if (conn.dead)
                return;
            conn.dead = true;
            conn.close();
            this.ended(closed ?? { code: 1006, reason: conn.opened ? "stream ended" : "stream could not be opened", transport: "sse" });
        };
        const onData = (data) => {
            if (conn.dead)
                return;
            if (isFallback && !conn.opened)
                this.sseFallbacks++;
            conn.opened = true;
            this.alive();
            let msg;
            try {
                msg = JSON.parse(data);
            }
            catch {
                return;
            }
            if (msg?.type === "connection.closed") {
                const p = msg.payload ?? {};
                return onFail({ code: Number(p.code) || 1006, reason: String(p.reason ?? ""), transport: "sse" });
            }
            this.handle(msg);
        };
        if (ES) {
            const es = new ES(url);
            conn.close = () => es.close();
            conn.pingsHidden = true;
            es.onmessage = (ev) => onData(ev.data);
            // The browser's own retry would skip our backoff and positions: we reconnect ourselves.
            es.onerror = () => onFail();
            return;
        }
        const ctl = new AbortController();
        conn.close = () => ctl.abort();
        const headers = { Accept: "text/event-stream" };
        if (token)
            headers.Authorization = `Bearer ${token}`;
        (async () => {
            const res = await fetch(url, { headers, signal: ctl.signal, cache: "no-store" });
            const ct = res.headers.get("content-type") ?? "";
            if (res.status !== 200 || !ct.startsWith("text/event-stream") || !res.body) {
                try {
                    await res.body?.cancel();
                }
                catch { }
                throw new Error(`SSE refused: HTTP ${res.status} ${ct}`);
            }
            const reader = res.body.getReader();
            const dec = new TextDecoder();
            let buf = "";
            let data = [];
            for (;;) {
                const { value, done } = await reader.read();
                if (done)
                    break;
                buf += dec.decode(value, { stream: true });
                let nl;
                while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
                    const line = buf.slice(0, nl);
                    buf = buf.slice(nl + (buf[nl] === "\r" && buf[nl + 1] === "\n" ? 2 : 1));
                    if (line === "") {
                        if (data.length)
                            onData(data.join("\n"));
                        data = [];
                    }
                    else if (line.startsWith(":")) {
                        this.alive(); // `: ping`
                    }
                    else if (line.startsWith("data")) {
                        const v = line.slice(5);
                        data.push(v.startsWith(" ") ? v.slice(1) : v);
                    }
                    if (conn.dead)
                        return;
                }
            }
        })().then(() => onFail(), (e) => {
            if (!conn.dead && !conn.opened)
                this.emit("error", e instanceof Error ? e : new Error(String(e)));
            onFail();
        });
    }
    /** Any frame received: the connection is alive. */
    alive() {
        if (this.watchdog)
            clearTimeout(this.watchdog);
        this.timers.delete(this.watchdog);
        const conn = this.conn;
        // An idle EventSource stream is silent to us however alive it is: no watchdog.
        if (conn?.pingsHidden)
            return;
        this.watchdog = this.timer(() => {
            if (this.conn !== conn || !conn || conn.dead)
                return;
            // Silent for 2 × heartbeat: dead.
            conn.dead = true;
            conn.close(4000, "heartbeat timeout");
            this.ended({ code: 4000, reason: "heartbeat timeout (client)", transport: conn.transport });
        }, 2 * this.heartbeatMs);
    }
    ended(closed) {
        this.conn = null;
        this.clearTimers();
        this._connectionId = null;
        this._transport = null;
        this.recovering = null;
        // Held events were received: deliver them rather than lose them.
        this.flushHeld();
        // Live events held behind a lag's hole are not delivered: that would move the channel's
        // position past the hole. The reconnect asks again from the lag's position.
        this.lagHeld.clear();
        for (const p of this.pending.values())
            p.reject(new Error(`connection closed (${closed.code} ${closed.reason})`));
        this.pending.clear();
        this.lagRecovery.clear();
        this.emit("closed", closed);
        if (this.closedByUser)
            return this.setState("disconnected");
        this.setState("disconnected");
        const { code, reason } = closed;
        if (code === 4001) {
            // Token expired: a new token, at once.
            this.attempt = 0;
            return this.scheduleRetry(0);
        }
        if (code === 1008 && AUTH_1008.test(reason)) {
            this.lastAuthFailure = { token: this.lastToken };
            this.attempt = Math.max(this.attempt, 1) + 1;
        }
        this.scheduleRetry();
    }
    scheduleRetry(fixed) {
        if (this.closedByUser)
            return;
        const initial = this.opts.backoff?.initialMs ?? 500;
        const max = this.opts.backoff?.maxMs ?? 20000;
        const cap = Math.min(max, initial * 2 ** this.attempt);
        const delay = fixed ?? Math.random() * cap; // full jitter
        this.attempt++;
        this.setState("connecting");
        this.retryTimer = setTimeout(() => void this.open(), delay);
    }
    input(text) {
        let msg;
        try {
            msg = JSON.parse(text);
        }
        catch {
            return;
        }
        this.handle(msg);
    }
    handle(msg) {
        if (!msg || typeof msg.type !== "string")
            return;
        switch (msg.type) {
            case "connection.established":
                return this.onEstablished(msg.payload, msg);
            case "connection.channels":
                return this.onChannels(msg.payload?.channels ?? {}, msg);
            case "connection.lagged":
                return this.onLagged(msg.payload ?? {}, msg);
            case "subscribed":
            case "unsubscribed":
            case "refreshed":
                return this.onReply(msg);
            case "error":
                return this.onError(msg);
            case "pong":
                return;
            default:
                if (msg.type.startsWith("connection."))
                    return this.emit("control", msg);
                if (typeof msg.channel === "string" && typeof msg.sequence === "number")
                    this.onEvent(msg);
        }
    }
    onEstablished(p, msg) {
        const conn = this.conn;
        if (!conn)
            return;
        this._connectionId = p.connection_id;
        this._transport = conn.transport;
        this.heartbeatMs = Math.max(1, p.heartbeat_interval_s || 30) * 1000;
        this.alive();
        const gap = {};
        const announced = p.channels ?? {};
        const sinceSent = Object.keys(this._positions).length > 0;
        for (const [ch, pos] of Object.entries(announced)) {
            const mine = this._positions[ch];
            if (!mine)
                this._positions[ch] = { ...pos };
            else if (mine.epoch !== pos.epoch) {
                gap[ch] = "epoch_changed";
                this._positions[ch] = { ...pos };
            }
        }
        // With `events` or `since`, the connect-time `subscribed` reply follows: hold events until it.
        if (this.patterns || sinceSent)
            this.recovering = { sinceSent, announced, gap };
        else
            this.reportGap(gap);
        if (conn.transport === "websocket") {
            // Browsers do not expose Ping frames: ask for a pong so that silence can be seen.
            this.pingTimer = setInterval(() => {
                try {
                    conn.send?.({ action: "ping" });
                }
                catch { }
            }, this.heartbeatMs);
        }
        this.stableTimer = this.timer(() => {
            this.attempt = 0;
        }, this.opts.backoff?.stableMs ?? 10000);
        this.scheduleRefresh(p.expires_at);
        this.emit("control", msg);
        this.setState("connected");
    }
    scheduleRefresh(expiresAt) {
        if (this.refreshTimer)
            clearTimeout(this.refreshTimer);
        this.refreshTimer = null;
        if (!expiresAt || !this.opts.token)
            return;
        const exp = Date.parse(expiresAt);
        if (!Number.isFinite(exp))
            return;
        if (this.expiresAt !== null && exp <= this.expiresAt && this.refreshAfterReply) {
            this.refreshAfterReply = false;
            return; // the provider gave no newer token: let the server close with 4001
        }
        this.refreshAfterReply = false;
        this.expiresAt = exp;
        const remaining = exp - Date.now();
        const before = this.opts.refreshBeforeMs ?? Math.min(60000, remaining / 3);
        const conn = this.conn;
        if (conn?.transport !== "websocket")
            return; // SSE: 4001 → reconnect with a new token
        const refresh = async () => {
            if (this.conn !== conn || conn.dead)
                return;
            let token;
            try {
                token = await this.getToken();
            }
            catch (e) {
                return this.emit("error", e instanceof Error ? e : new Error(String(e)));
            }
            if (!token || this.conn !== conn || conn.dead)
                return;
            this.lastToken = token;
            try {
                const reply = (await this.request({ action: "refresh", token }, "refreshed"));
                this.emit("refreshed", reply);
                this.refreshAfterReply = true;
                this.scheduleRefresh(reply.expires_at);
            }
            catch (e) {
                this.emit("error", e instanceof Error ? e : new Error(String(e)));
            }
        };
        // Timers fire at once for a delay past MAX_TIMEOUT_MS (about 24.8 days), which
        // would refresh a long-lived token right after connecting: wait in steps.
        const wait = (left) => {
            this.refreshTimer = left > MAX_TIMEOUT_MS ? this.timer(() => wait(left - MAX_TIMEOUT_MS), MAX_TIMEOUT_MS) : this.timer(refresh, left);
        };
        wait(Math.max(0, remaining - before));
    }
    onChannels(channels, msg) {
        const gap = {};
        for (const [ch, pos] of Object.entries(channels)) {
            const mine = this._positions[ch];
            if (mine && mine.epoch !== pos.epoch)
                gap[ch] = "epoch_changed";
            if (!mine || mine.epoch !== pos.epoch)
                this._positions[ch] = { ...pos };
        }
        this.emit("control", msg);
        this.reportGap(gap);
    }
    onLagged(p, msg) {
        this.emit("control", msg);
        const since = {};
        const chans = [];
        for (const [ch, pos] of Object.entries(p.channels ?? {})) {
            const mine = this._positions[ch];
            if (mine && mine.epoch !== pos.epoch)
                continue;
            since[ch] = { epoch: pos.epoch, sequence: Math.min(pos.sequence, mine?.sequence ?? pos.sequence) };
            this._positions[ch] = { ...since[ch] };
            chans.push(ch);
            if (!this.lagHeld.has(ch))
                this.lagHeld.set(ch, []);
        }
        if (!chans.length)
            return;
        const conn = this.conn;
        if (conn?.transport !== "websocket" || !conn.send) {
            // SSE: recover by reconnecting from the positions (the URL's `since`).
            conn?.close();
            if (conn) {
                conn.dead = true;
                this.ended({ code: 4008, reason: "lagged: recovering", transport: "sse" });
            }
            return;
        }
        const id = `lag${this.nextId++}`;
        this.lagRecovery.set(id, chans);
        conn.send({ action: "subscribe", events: this.patterns ?? ["*"], since, id });
    }
    onReply(msg) {
        const id = msg.id;
        if (id !== undefined && this.lagRecovery.has(id)) {
            const chans = this.lagRecovery.get(id);
            this.lagRecovery.delete(id);
            if (this.patterns === null && Array.isArray(msg.events))
                this.patterns = msg.events;
            const gap = {};
            for (const ch of chans) {
                const r = msg.recovery?.[ch];
                if (!r?.recovered)
                    gap[ch] = r?.reason ?? "lagged";
                this.deliverSorted(ch, this.lagHeld.get(ch) ?? []);
                this.lagHeld.delete(ch);
            }
            this.reportGap(gap);
            return;
        }
        if (id !== undefined && this.pending.has(id)) {
            const p = this.pending.get(id);
            this.pending.delete(id);
            return p.resolve(msg);
        }
        if (msg.type === "subscribed" && this.recovering && id === undefined) {
            const rec = this.recovering;
            this.recovering = null;
            const gap = { ...rec.gap };
            for (const [ch, r] of Object.entries((msg.recovery ?? {}))) {
                if (r.reason === "unknown_channel")
                    delete this._positions[ch];
                else if (!r.recovered)
                    gap[ch] ?? (gap[ch] = r.reason ?? "unknown");
            }
            this.flushHeld();
            for (const [ch, r] of Object.entries((msg.recovery ?? {}))) {
                const ann = rec.announced[ch];
                const mine = this._positions[ch];
                if (ann && mine && mine.epoch === ann.epoch && mine.sequence < ann.sequence && r.reason !== "invalid_position") {
                    mine.sequence = ann.sequence;
                }
                if (r.reason === "invalid_position" && ann)
                    this._positions[ch] = { ...ann };
            }
            if (Array.isArray(msg.events) || msg.events === null)
                this.patterns = msg.events;
            this.emit("control", msg);
            this.reportGap(gap);
            const waiters = this.connectWaiters;
            this.connectWaiters = [];
            for (const w of waiters)
                w.resolve(msg);
            return;
        }
    }
    onError(err) {
        const id = err.id;
        if (id !== undefined && this.pending.has(id)) {
            const p = this.pending.get(id);
            this.pending.delete(id);
            return p.reject(new SwitchyardError(err));
        }
        if (id === undefined && this.recovering && this.connectWaiters.length) {
            const waiters = this.connectWaiters;
            this.connectWaiters = [];
            for (const w of waiters)
                w.reject(new SwitchyardError(err));
        }
        this.emit("error", err);
    }
    onEvent(e) {
        if (this.recovering) {
            this.held.push(e);
            return;
        }
        const lag = this.lagHeld.get(e.channel);
        if (lag) {
            lag.push(e);
            return;
        }
        this.deliver(e);
    }
    flushHeld() {
        const byChannel = new Map();
        for (const e of this.held) {
            let l = byChannel.get(e.channel);
            if (!l)
                byChannel.set(e.channel, (l = []));
            l.push(e);
        }
        this.held = [];
        for (const [ch, evs] of byChannel)
            this.deliverSorted(ch, evs);
    }
    deliverSorted(_ch, evs) {
        evs.sort((a, b) => a.sequence - b.sequence);
        for (const e of evs)
            this.deliver(e);
    }
    /** Delivers once: a sequence at or below the channel's position is a duplicate. */
    deliver(e) {
        const pos = this._positions[e.channel];
        if (pos && e.sequence <= pos.sequence)
            return;
        if (pos)
            pos.sequence = e.sequence;
        else
            this._positions[e.channel] = { epoch: "", sequence: e.sequence };
        for (const [name, set] of this.listeners) {
            if (name === "gap" || name === "state" || name === "closed" || name === "error" || name === "control" || name === "refreshed")
                continue;
            if (!matches(name, e.type))
                continue;
            for (const fn of [...set]) {
                try {
                    fn(e);
                }
                catch (err) {
                    setTimeout(() => {
                        throw err;
                    });
                }
            }
        }
    }
    reportGap(gap) {
        const channels = Object.keys(gap);
        if (!channels.length)
            return;
        this.emit("gap", { channels, reason: gap[channels[0]], reasons: gap });
    }
}
export default SwitchyardClient;
