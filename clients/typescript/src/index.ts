/**
 * @switchyard/client — a client for the Switchyard event router (SPEC §3, §11).
 *
 * No runtime dependencies. Runs in browsers and in Node 20+ (pass a `WebSocket`
 * constructor, e.g. the `ws` package's, where there is no global one).
 */

/** A channel's position: its epoch and the last sequence delivered (or announced). */
export interface Position {
  epoch: string;
  sequence: number;
}

/** Channel name → position. Persist it to recover across page reloads. */
export type Positions = Record<string, Position>;

/** The event envelope (SPEC §2). */
export interface Envelope<T extends string = string, P = unknown> {
  type: T;
  payload: P;
  timestamp: string;
  channel: string;
  sequence: number;
  correlation_id?: string;
}

/** Event names of `M` that a pattern matches: `"*"`, `"domain.*"` or an exact name. */
export type MatchingNames<M, P extends string> = P extends "*"
  ? keyof M & string
  : P extends `${infer D}.*`
    ? Extract<keyof M & string, `${D}.${string}`>
    : Extract<keyof M & string, P>;

/** The envelope union a pattern delivers. */
export type EventFor<M, P extends string> = {
  [K in MatchingNames<M, P>]: Envelope<K, M[K]>;
}[MatchingNames<M, P>];

export type ClientState = "connecting" | "connected" | "disconnected";
export type Transport = "websocket" | "sse";

/** A gap the client could not fill: reload these channels' state over REST. */
export interface GapEvent {
  channels: string[];
  /** The reason of the first channel (`too_old`, `epoch_changed`, `invalid_position`, `unknown_channel`, `lagged`). */
  reason: string;
  /** The reason per channel. */
  reasons: Record<string, string>;
}

export interface Warning {
  pattern: string;
  message: string;
  did_you_mean?: string;
}

export interface RecoveryResult {
  recovered: boolean;
  replayed?: number;
  reason?: string;
}

/** The `subscribed` reply. */
export interface SubscribedReply {
  type: "subscribed";
  action: "subscribed";
  events: string[] | null;
  warnings: Warning[];
  recovery?: Record<string, RecoveryResult>;
  id?: string | number;
}

/** The `unsubscribed` reply. */
export interface UnsubscribedReply {
  type: "unsubscribed";
  action: "unsubscribed";
  events: string[] | null;
  id?: string | number;
}

/** A server `error` message. */
export interface ServerError {
  type: "error";
  payload: { code: string; message: string; [k: string]: unknown };
  id?: string | number;
}

/** Thrown (rejected) by subscribe/unsubscribe when the server answers with `error`. */
export class SwitchyardError extends Error {
  readonly code: string;
  readonly payload: ServerError["payload"];
  readonly id?: string | number;
  constructor(err: ServerError) {
    super(`${err.payload.code}: ${err.payload.message}`);
    this.name = "SwitchyardError";
    this.code = err.payload.code;
    this.payload = err.payload;
    this.id = err.id;
  }
}

/** A connection ended (WebSocket close code, or an SSE stream's `connection.closed`). */
export interface ClosedEvent {
  code: number;
  reason: string;
  transport: Transport;
}

/** `connection.established` payload. */
export interface EstablishedPayload {
  connection_id: string;
  endpoint: string;
  protocol_version: number;
  heartbeat_interval_s: number;
  user: string | null;
  expires_at: string | null;
  channels: Positions;
}

export type TokenProvider = () => Promise<string | undefined | null> | string | undefined | null;

/** Minimal WebSocket shape this client uses (browsers' and `ws`'s both fit). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: { data: any }) => any) | null;
  onerror: ((ev: any) => any) | null;
  onclose: ((ev: { code: number; reason: string }) => any) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Minimal EventSource shape this client uses. */
export interface EventSourceLike {
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: { data: string }) => any) | null;
  onerror: ((ev: any) => any) | null;
  close(): void;
}
export type EventSourceConstructor = new (url: string, init?: { withCredentials?: boolean }) => EventSourceLike;

export interface ClientOptions {
  /** Router base URL, `http(s)://host:port` (ws(s):// also accepted). */
  url: string;
  /** Endpoint path (default `/ws/events`). */
  endpoint?: string;
  /** Patterns to subscribe at connect time. Absent: receive everything on the endpoint. */
  events?: string[];
  /** Called at every connect and before `expires_at` (for `refresh`). */
  token?: TokenProvider;
  /** WebSocket implementation (default `globalThis.WebSocket`). */
  WebSocket?: WebSocketConstructor;
  /** EventSource implementation (default `globalThis.EventSource`; without one, SSE is read over `fetch`). */
  EventSource?: EventSourceConstructor;
  /** `auto` (default): WebSocket, falling back to SSE when a WebSocket cannot be opened. */
  transport?: "auto" | Transport;
  /** Positions to recover from (e.g. saved from a previous page's `client.positions`). */
  positions?: Positions;
  /** Start connecting at once (default true); otherwise call `connect()`. */
  autoConnect?: boolean;
  /**
   * Reconnect backoff, in ms. Each delay is random (full jitter) below a cap that starts at
   * `initialMs` (default 500) and doubles per attempt up to `maxMs` (default 20000); the cap
   * starts again from `initialMs` once a connection has stayed up for `stableMs` (default 10000).
   */
  backoff?: { initialMs?: number; maxMs?: number; stableMs?: number };
  /** How long before `expires_at` the token is refreshed (ms, default: min(60 s, a third of the remaining time)). */
  refreshBeforeMs?: number;
}

type Listener = (arg: any) => void;

interface Pending {
  resolve: (v: any) => void;
  reject: (e: unknown) => void;
  kind: "subscribed" | "unsubscribed" | "refreshed";
}

interface Conn {
  transport: Transport;
  close(code?: number, reason?: string): void;
  send?(msg: object): void;
  /** Set when the connection ended; further input is ignored. */
  dead: boolean;
  opened: boolean;
  /** An EventSource: the router's `: ping` comments never reach us, so silence says nothing. */
  pingsHidden?: boolean;
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

function matches(pattern: string, type: string): boolean {
  if (pattern === "*") return true;
  if (pattern.endsWith(".*")) return type.startsWith(pattern.slice(0, -1));
  return pattern === type;
}

/**
 * The client. `M` maps event type names to payload types (e.g. `EventMap` from the
 * router's `GET /api/websocket/types.ts`).
 */
export class SwitchyardClient<M = Record<string, unknown>> {
  private readonly opts: ClientOptions;
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly pending = new Map<string | number, Pending>();
  private nextId = 1;
  private conn: Conn | null = null;
  private closedByUser = false;
  private attempt = 0;
  private timers = new Set<ReturnType<typeof setTimeout>>();
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private stableTimer: ReturnType<typeof setTimeout> | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private watchdog: ReturnType<typeof setTimeout> | null = null;
  private heartbeatMs = 30_000;
  /** Attempts in a row whose WebSocket failed to open and whose SSE then worked. */
  private sseFallbacks = 0;
  private lastToken: string | undefined;
  private lastAuthFailure: { token: string | undefined } | null = null;
  private expiresAt: number | null = null;
  /** Held patterns (null = receive all). */
  private patterns: string[] | null;
  private _positions: Positions;
  private _state: ClientState = "disconnected";
  private _connectionId: string | null = null;
  private _transport: Transport | null = null;
  /** Set while the connect-time (or lag) recovery reply is awaited: events are held until it. */
  private recovering: { sinceSent: boolean; announced: Positions; gap: Record<string, string> } | null = null;
  private held: Envelope[] = [];
  /** Channels whose `connection.lagged` recovery is awaited, with its request id. */
  private lagRecovery = new Map<string | number, string[]>();
  private lagHeld = new Map<string, Envelope[]>();
  /** Resolvers waiting for the next connect-time `subscribed` (SSE subscribe). */
  private connectWaiters: Pending[] = [];
  /** The checks of {@link ready} calls still waiting, run by `close()` too. */
  private readyChecks = new Set<() => void>();

  constructor(options: ClientOptions) {
    this.opts = { endpoint: "/ws/events", transport: "auto", autoConnect: true, ...options };
    this.patterns = options.events ? [...options.events] : null;
    this._positions = {};
    for (const [ch, p] of Object.entries(options.positions ?? {})) this._positions[ch] = { ...p };
    if (this.opts.autoConnect) this.connect();
  }

  /** `connecting`, `connected` or `disconnected`. */
  get state(): ClientState {
    return this._state;
  }
  /** Last delivered (or announced) position per channel: a copy, to persist. */
  get positions(): Positions {
    const out: Positions = {};
    for (const [ch, p] of Object.entries(this._positions)) out[ch] = { ...p };
    return out;
  }
  /** The current connection's id (from `connection.established`), or null. */
  get connectionId(): string | null {
    return this._connectionId;
  }
  /** The transport in use, or null when not connected. */
  get transport(): Transport | null {
    return this._transport;
  }
  /** The patterns held (null = receive everything on the endpoint). */
  get events(): string[] | null {
    return this.patterns ? [...this.patterns] : null;
  }

  /** Events matching a pattern (`*`, `domain.*` or an exact name), typed by `M`. */
  on<P extends "gap">(name: P, fn: (gap: GapEvent) => void): () => void;
  on<P extends "state">(name: P, fn: (state: ClientState) => void): () => void;
  on<P extends "closed">(name: P, fn: (closed: ClosedEvent) => void): () => void;
  on<P extends "error">(name: P, fn: (error: ServerError | Error) => void): () => void;
  on<P extends "control">(name: P, fn: (msg: { type: string; payload: any }) => void): () => void;
  on<P extends "refreshed">(name: P, fn: (reply: { expires_at: string }) => void): () => void;
  on<P extends string>(pattern: P, fn: (event: EventFor<M, P>) => void): () => void;
  on(name: string, fn: Listener): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(fn);
    return () => this.off(name, fn);
  }

  off(name: string, fn: Listener): void {
    this.listeners.get(name)?.delete(fn);
  }

  /** Opens the connection (done by the constructor unless `autoConnect: false`). */
  connect(): void {
    this.closedByUser = false;
    if (this.conn || this.retryTimer || this.opening) return;
    void this.open();
  }

  /** Closes for good: no reconnect. Pending requests are rejected. */
  close(): void {
    this.closedByUser = true;
    this.clearTimers();
    if (this.retryTimer) clearTimeout(this.retryTimer);
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
    for (const check of [...this.readyChecks]) check();
  }

  /**
   * Adds patterns. Resolves with the `subscribed` reply (all patterns now held, warnings),
   * rejects with a {@link SwitchyardError} when the server answers `error` for it.
   * Over SSE it reconnects with the new `events`.
   */
  async subscribe(events: string[]): Promise<SubscribedReply> {
    const conn = await this.ready();
    if (conn.transport === "websocket") {
      const reply = (await this.request({ action: "subscribe", events }, "subscribed")) as SubscribedReply;
      this.patterns = reply.events;
      return reply;
    }
    const next = [...(this.patterns ?? [])];
    for (const e of events) if (!next.includes(e)) next.push(e);
    this.patterns = next;
    return (await this.reconnectForPatterns()) as SubscribedReply;
  }

  /** Removes patterns (all without an argument). Resolves with the `unsubscribed` reply. */
  async unsubscribe(events?: string[]): Promise<UnsubscribedReply> {
    const conn = await this.ready();
    if (conn.transport === "websocket") {
      const msg: Record<string, unknown> = { action: "unsubscribe" };
      if (events) msg.events = events;
      const reply = (await this.request(msg, "unsubscribed")) as UnsubscribedReply;
      this.patterns = reply.events;
      return reply;
    }
    if (!events) this.patterns = [];
    else if (this.patterns) this.patterns = this.patterns.filter((p) => !events.includes(p));
    const sub = (await this.reconnectForPatterns()) as SubscribedReply;
    return { type: "unsubscribed", action: "unsubscribed", events: sub.events };
  }

  // ---------------------------------------------------------------- internals

  private emit(name: string, arg: unknown): void {
    for (const fn of [...(this.listeners.get(name) ?? [])]) {
      try {
        fn(arg);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }

  private setState(s: ClientState): void {
    if (this._state === s) return;
    this._state = s;
    this.emit("state", s);
  }

  private timer(fn: () => void, ms: number): ReturnType<typeof setTimeout> {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
    return t;
  }

  private clearTimers(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
    this.stableTimer = this.refreshTimer = this.watchdog = null;
  }

  private failPending(err: unknown): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.lagRecovery.clear();
    for (const w of this.connectWaiters) w.reject(err);
    this.connectWaiters = [];
  }

  /** Waits until connected. */
  private ready(): Promise<Conn> {
    if (this.closedByUser) return Promise.reject(new Error("client closed"));
    if (this.conn && this._state === "connected" && !this.recovering) return Promise.resolve(this.conn);
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
        } else if (this.conn && this._state === "connected" && !this.recovering) {
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

  private request(msg: Record<string, unknown>, kind: Pending["kind"]): Promise<unknown> {
    const conn = this.conn;
    if (!conn?.send) return Promise.reject(new Error("not connected over WebSocket"));
    const id = `c${this.nextId++}`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, kind });
      conn.send!({ ...msg, id });
    });
  }

  private reconnectForPatterns(): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.connectWaiters.push({ resolve, reject, kind: "subscribed" });
      const c = this.conn;
      if (c) {
        c.dead = true;
        c.close(1000, "changing subscriptions");
        this.conn = null;
      }
      this.clearTimers();
      if (this.retryTimer) clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.attempt = 0;
      void this.open();
    });
  }

  private baseUrl(ws: boolean): string {
    let u = this.opts.url.replace(/\/+$/, "");
    if (ws) u = u.replace(/^http(s?):/i, "ws$1:");
    else u = u.replace(/^ws(s?):/i, "http$1:");
    return u + this.opts.endpoint;
  }

  private query(token?: string): string {
    const q: string[] = [];
    if (this.patterns) q.push("events=" + this.patterns.map(encodeURIComponent).join(","));
    const since = Object.entries(this._positions)
      .map(([ch, p]) => `${ch}:${p.epoch}:${p.sequence}`)
      .map(encodeURIComponent)
      .join(",");
    if (since) q.push("since=" + since);
    if (token) q.push("token=" + encodeURIComponent(token));
    return q.length ? "?" + q.join("&") : "";
  }

  private async getToken(): Promise<string | undefined> {
    if (!this.opts.token) return undefined;
    const t = await this.opts.token();
    return t ?? undefined;
  }

  private opening = false;

  private async open(): Promise<void> {
    if (this.closedByUser || this.opening) return;
    this.retryTimer = null;
    this.opening = true;
    try {
      await this.openInner();
    } finally {
      this.opening = false;
    }
  }

  private async openInner(): Promise<void> {
    this.setState("connecting");
    let token: string | undefined;
    try {
      token = await this.getToken();
    } catch (e) {
      this.emit("error", e instanceof Error ? e : new Error(String(e)));
      this.scheduleRetry();
      return;
    }
    if (this.closedByUser || this.conn) return;
    if (this.lastAuthFailure && this.lastAuthFailure.token === token && this.attempt > 0) {
      // The provider gave the token that was just refused: do not hammer the router.
      this.lastAuthFailure = null;
      this.scheduleRetry(this.opts.backoff?.maxMs ?? 20_000);
      return;
    }
    this.lastAuthFailure = null;
    this.lastToken = token;
    const mode = this.opts.transport ?? "auto";
    const WS = this.opts.WebSocket ?? (globalThis as any).WebSocket;
    if (mode === "sse" || (mode === "auto" && (this.sseFallbacks >= SSE_AFTER_FALLBACKS || !WS))) {
      this.openSse(token);
    } else {
      this.openWs(WS, token, mode === "auto");
    }
  }

  private beginConn(conn: Conn): void {
    this.conn = conn;
    this.recovering = null;
    this.held = [];
    this.lagHeld.clear();
  }

  private openWs(WS: WebSocketConstructor, token: string | undefined, fallback: boolean): void {
    let ws: WebSocketLike;
    const url = this.baseUrl(true) + this.query();
    try {
      ws = token ? new WS(url, ["bearer", token]) : new WS(url);
    } catch (e) {
      if (fallback) return this.fallBack(token);
      this.emit("error", e instanceof Error ? e : new Error(String(e)));
      return this.scheduleRetry();
    }
    const conn: Conn = {
      transport: "websocket",
      dead: false,
      opened: false,
      close: (code, reason) => {
        try {
          ws.close(code, reason);
        } catch {
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
      if (conn.dead) return;
      this.alive();
      if (typeof ev.data !== "string") {
        // ws delivers Buffers unless told otherwise.
        const d: any = ev.data;
        if (d && typeof d.toString === "function") return this.input(d.toString());
        return;
      }
      this.input(ev.data);
    };
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (conn.dead) return;
      conn.dead = true;
      if (!conn.opened && fallback) {
        this.conn = null;
        return this.fallBack(token);
      }
      this.ended({ code: ev.code, reason: ev.reason ?? "", transport: "websocket" });
    };
  }

  private fallBack(token: string | undefined): void {
    this.conn = null;
    this.openSse(token, true);
  }

  private openSse(token: string | undefined, isFallback = false): void {
    const ES = this.opts.EventSource ?? (globalThis as any).EventSource;
    // EventSource cannot send headers: its token goes in the query (`fetch` sends Authorization).
    const url = this.baseUrl(false) + this.query(ES ? token : undefined);
    const conn: Conn = { transport: "sse", dead: false, opened: false, close: () => {} };
    this.beginConn(conn);
    const onFail = (closed?: ClosedEvent) => {
      if (conn.dead) return;
      conn.dead = true;
      conn.close();
      this.ended(closed ?? { code: 1006, reason: conn.opened ? "stream ended" : "stream could not be opened", transport: "sse" });
    };
    const onData = (data: string) => {
      if (conn.dead) return;
      if (isFallback && !conn.opened) this.sseFallbacks++;
      conn.opened = true;
      this.alive();
      let msg: any;
      try {
        msg = JSON.parse(data);
      } catch {
        return;
      }
      if (msg?.type === "connection.closed") {
        const p = msg.payload ?? {};
        return onFail({ code: Number(p.code) || 1006, reason: String(p.reason ?? ""), transport: "sse" });
      }
      this.handle(msg);
    };
    if (ES) {
      const es: EventSourceLike = new ES(url);
      conn.close = () => es.close();
      conn.pingsHidden = true;
      es.onmessage = (ev) => onData(ev.data);
      // The browser's own retry would skip our backoff and positions: we reconnect ourselves.
      es.onerror = () => onFail();
      return;
    }
    const ctl = new AbortController();
    conn.close = () => ctl.abort();
    const headers: Record<string, string> = { Accept: "text/event-stream" };
    if (token) headers.Authorization = `Bearer ${token}`;
    (async () => {
      const res = await fetch(url, { headers, signal: ctl.signal, cache: "no-store" } as RequestInit);
      const ct = res.headers.get("content-type") ?? "";
      if (res.status !== 200 || !ct.startsWith("text/event-stream") || !res.body) {
        try {
          await res.body?.cancel();
        } catch {}
        throw new Error(`SSE refused: HTTP ${res.status} ${ct}`);
      }
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      let data: string[] = [];
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let nl: number;
        while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + (buf[nl] === "\r" && buf[nl + 1] === "\n" ? 2 : 1));
          if (line === "") {
            if (data.length) onData(data.join("\n"));
            data = [];
          } else if (line.startsWith(":")) {
            this.alive(); // `: ping`
          } else if (line.startsWith("data")) {
            const v = line.slice(5);
            data.push(v.startsWith(" ") ? v.slice(1) : v);
          }
          if (conn.dead) return;
        }
      }
    })().then(
      () => onFail(),
      (e) => {
        if (!conn.dead && !conn.opened) this.emit("error", e instanceof Error ? e : new Error(String(e)));
        onFail();
      },
    );
  }

  /** Any frame received: the connection is alive. */
  private alive(): void {
    if (this.watchdog) clearTimeout(this.watchdog);
    this.timers.delete(this.watchdog!);
    const conn = this.conn;
    // An idle EventSource stream is silent to us however alive it is: no watchdog.
    if (conn?.pingsHidden) return;
    this.watchdog = this.timer(() => {
      if (this.conn !== conn || !conn || conn.dead) return;
      // Silent for 2 × heartbeat: dead.
      conn.dead = true;
      conn.close(4000, "heartbeat timeout");
      this.ended({ code: 4000, reason: "heartbeat timeout (client)", transport: conn.transport });
    }, 2 * this.heartbeatMs);
  }

  private ended(closed: ClosedEvent): void {
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
    for (const p of this.pending.values()) p.reject(new Error(`connection closed (${closed.code} ${closed.reason})`));
    this.pending.clear();
    this.lagRecovery.clear();
    this.emit("closed", closed);
    if (this.closedByUser) return this.setState("disconnected");
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

  private scheduleRetry(fixed?: number): void {
    if (this.closedByUser) return;
    const initial = this.opts.backoff?.initialMs ?? 500;
    const max = this.opts.backoff?.maxMs ?? 20_000;
    const cap = Math.min(max, initial * 2 ** this.attempt);
    const delay = fixed ?? Math.random() * cap; // full jitter
    this.attempt++;
    this.setState("connecting");
    this.retryTimer = setTimeout(() => void this.open(), delay);
  }

  private input(text: string): void {
    let msg: any;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    this.handle(msg);
  }

  private handle(msg: any): void {
    if (!msg || typeof msg.type !== "string") return;
    switch (msg.type) {
      case "connection.established":
        return this.onEstablished(msg.payload as EstablishedPayload, msg);
      case "connection.channels":
        return this.onChannels(msg.payload?.channels ?? {}, msg);
      case "connection.lagged":
        return this.onLagged(msg.payload ?? {}, msg);
      case "subscribed":
      case "unsubscribed":
      case "refreshed":
        return this.onReply(msg);
      case "error":
        return this.onError(msg as ServerError);
      case "pong":
        return;
      default:
        if (msg.type.startsWith("connection.")) return this.emit("control", msg);
        if (typeof msg.channel === "string" && typeof msg.sequence === "number") this.onEvent(msg as Envelope);
    }
  }

  private onEstablished(p: EstablishedPayload, msg: unknown): void {
    const conn = this.conn;
    if (!conn) return;
    this._connectionId = p.connection_id;
    this._transport = conn.transport;
    this.heartbeatMs = Math.max(1, p.heartbeat_interval_s || 30) * 1000;
    this.alive();
    const gap: Record<string, string> = {};
    const announced = p.channels ?? {};
    const sinceSent = Object.keys(this._positions).length > 0;
    for (const [ch, pos] of Object.entries(announced)) {
      const mine = this._positions[ch];
      if (!mine) this._positions[ch] = { ...pos };
      else if (mine.epoch !== pos.epoch) {
        gap[ch] = "epoch_changed";
        this._positions[ch] = { ...pos };
      }
    }
    // With `events` or `since`, the connect-time `subscribed` reply follows: hold events until it.
    if (this.patterns || sinceSent) this.recovering = { sinceSent, announced, gap };
    else this.reportGap(gap);
    if (conn.transport === "websocket") {
      // Browsers do not expose Ping frames: ask for a pong so that silence can be seen.
      this.pingTimer = setInterval(() => {
        try {
          conn.send?.({ action: "ping" });
        } catch {}
      }, this.heartbeatMs);
    }
    this.stableTimer = this.timer(() => {
      this.attempt = 0;
    }, this.opts.backoff?.stableMs ?? 10_000);
    this.scheduleRefresh(p.expires_at);
    this.emit("control", msg);
    this.setState("connected");
  }

  private scheduleRefresh(expiresAt: string | null): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    if (!expiresAt || !this.opts.token) return;
    const exp = Date.parse(expiresAt);
    if (!Number.isFinite(exp)) return;
    if (this.expiresAt !== null && exp <= this.expiresAt && this.refreshAfterReply) {
      this.refreshAfterReply = false;
      return; // the provider gave no newer token: let the server close with 4001
    }
    this.refreshAfterReply = false;
    this.expiresAt = exp;
    const remaining = exp - Date.now();
    const before = this.opts.refreshBeforeMs ?? Math.min(60_000, remaining / 3);
    const conn = this.conn;
    if (conn?.transport !== "websocket") return; // SSE: 4001 → reconnect with a new token
    const refresh = async () => {
      if (this.conn !== conn || conn.dead) return;
      let token: string | undefined;
      try {
        token = await this.getToken();
      } catch (e) {
        return this.emit("error", e instanceof Error ? e : new Error(String(e)));
      }
      if (!token || this.conn !== conn || conn.dead) return;
      this.lastToken = token;
      try {
        const reply = (await this.request({ action: "refresh", token }, "refreshed")) as { expires_at: string };
        this.emit("refreshed", reply);
        this.refreshAfterReply = true;
        this.scheduleRefresh(reply.expires_at);
      } catch (e) {
        this.emit("error", e instanceof Error ? e : new Error(String(e)));
      }
    };
    // Timers fire at once for a delay past MAX_TIMEOUT_MS (about 24.8 days), which
    // would refresh a long-lived token right after connecting: wait in steps.
    const wait = (left: number): void => {
      this.refreshTimer = left > MAX_TIMEOUT_MS ? this.timer(() => wait(left - MAX_TIMEOUT_MS), MAX_TIMEOUT_MS) : this.timer(refresh, left);
    };
    wait(Math.max(0, remaining - before));
  }
  private refreshAfterReply = false;

  private onChannels(channels: Positions, msg: unknown): void {
    const gap: Record<string, string> = {};
    for (const [ch, pos] of Object.entries(channels)) {
      const mine = this._positions[ch];
      if (mine && mine.epoch !== pos.epoch) gap[ch] = "epoch_changed";
      if (!mine || mine.epoch !== pos.epoch) this._positions[ch] = { ...pos };
    }
    this.emit("control", msg);
    this.reportGap(gap);
  }

  private onLagged(p: { dropped?: number; channels?: Positions }, msg: unknown): void {
    this.emit("control", msg);
    const since: Positions = {};
    const chans: string[] = [];
    for (const [ch, pos] of Object.entries(p.channels ?? {})) {
      const mine = this._positions[ch];
      if (mine && mine.epoch !== pos.epoch) continue;
      since[ch] = { epoch: pos.epoch, sequence: Math.min(pos.sequence, mine?.sequence ?? pos.sequence) };
      this._positions[ch] = { ...since[ch] };
      chans.push(ch);
      if (!this.lagHeld.has(ch)) this.lagHeld.set(ch, []);
    }
    if (!chans.length) return;
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

  private onReply(msg: any): void {
    const id = msg.id;
    if (id !== undefined && this.lagRecovery.has(id)) {
      const chans = this.lagRecovery.get(id)!;
      this.lagRecovery.delete(id);
      if (this.patterns === null && Array.isArray(msg.events)) this.patterns = msg.events;
      const gap: Record<string, string> = {};
      for (const ch of chans) {
        const r: RecoveryResult | undefined = msg.recovery?.[ch];
        if (!r?.recovered) gap[ch] = r?.reason ?? "lagged";
        this.deliverSorted(ch, this.lagHeld.get(ch) ?? []);
        this.lagHeld.delete(ch);
      }
      this.reportGap(gap);
      return;
    }
    if (id !== undefined && this.pending.has(id)) {
      const p = this.pending.get(id)!;
      this.pending.delete(id);
      return p.resolve(msg);
    }
    if (msg.type === "subscribed" && this.recovering && id === undefined) {
      const rec = this.recovering;
      this.recovering = null;
      const gap = { ...rec.gap };
      for (const [ch, r] of Object.entries((msg.recovery ?? {}) as Record<string, RecoveryResult>)) {
        if (r.reason === "unknown_channel") delete this._positions[ch];
        else if (!r.recovered) gap[ch] ??= r.reason ?? "unknown";
      }
      this.flushHeld();
      for (const [ch, r] of Object.entries((msg.recovery ?? {}) as Record<string, RecoveryResult>)) {
        const ann = rec.announced[ch];
        const mine = this._positions[ch];
        if (ann && mine && mine.epoch === ann.epoch && mine.sequence < ann.sequence && r.reason !== "invalid_position") {
          mine.sequence = ann.sequence;
        }
        if (r.reason === "invalid_position" && ann) this._positions[ch] = { ...ann };
      }
      if (Array.isArray(msg.events) || msg.events === null) this.patterns = msg.events;
      this.emit("control", msg);
      this.reportGap(gap);
      const waiters = this.connectWaiters;
      this.connectWaiters = [];
      for (const w of waiters) w.resolve(msg);
      return;
    }
  }

  private onError(err: ServerError): void {
    const id = err.id;
    if (id !== undefined && this.pending.has(id)) {
      const p = this.pending.get(id)!;
      this.pending.delete(id);
      return p.reject(new SwitchyardError(err));
    }
    if (id === undefined && this.recovering && this.connectWaiters.length) {
      const waiters = this.connectWaiters;
      this.connectWaiters = [];
      for (const w of waiters) w.reject(new SwitchyardError(err));
    }
    this.emit("error", err);
  }

  private onEvent(e: Envelope): void {
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

  private flushHeld(): void {
    const byChannel = new Map<string, Envelope[]>();
    for (const e of this.held) {
      let l = byChannel.get(e.channel);
      if (!l) byChannel.set(e.channel, (l = []));
      l.push(e);
    }
    this.held = [];
    for (const [ch, evs] of byChannel) this.deliverSorted(ch, evs);
  }

  private deliverSorted(_ch: string, evs: Envelope[]): void {
    evs.sort((a, b) => a.sequence - b.sequence);
    for (const e of evs) this.deliver(e);
  }

  /** Delivers once: a sequence at or below the channel's position is a duplicate. */
  private deliver(e: Envelope): void {
    const pos = this._positions[e.channel];
    if (pos && e.sequence <= pos.sequence) return;
    if (pos) pos.sequence = e.sequence;
    else this._positions[e.channel] = { epoch: "", sequence: e.sequence };
    for (const [name, set] of this.listeners) {
      if (name === "gap" || name === "state" || name === "closed" || name === "error" || name === "control" || name === "refreshed") continue;
      if (!matches(name, e.type)) continue;
      for (const fn of [...set]) {
        try {
          fn(e);
        } catch (err) {
          setTimeout(() => {
            throw err;
          });
        }
      }
    }
  }

  private reportGap(gap: Record<string, string>): void {
    const channels = Object.keys(gap);
    if (!channels.length) return;
    this.emit("gap", { channels, reason: gap[channels[0]!]!, reasons: gap } satisfies GapEvent);
  }
}

export default SwitchyardClient;
