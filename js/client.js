// runcast-client: the runcast wire contract (docs/protocol.md) for browsers and Node, with
// reconnecting, exact resume and rate-limit waits done once. No dependencies: give it a
// WebSocket class, or it takes the global one (index.js picks `ws` in Node without one).

const TERMINAL = new Set(['run_completed', 'run_failed', 'run_cancelled']);
const FINISHED = new Set(['completed', 'failed', 'cancelled']);
const HIGH_WATER = 10_000; // events held for a slow consumer before the subscription pauses
const REFRESH_BEFORE = 30; // seconds before a signed token's `exp` that a fresh one is asked for
const PING_EVERY_MS = 20_000; // a silent half-open connection is only noticed by writing to it
const PONG_WITHIN_MS = 10_000;

/** An error of the contract: `code` is its error code (`run_not_found`, `unauthorized`, ...). */
export class RuncastError extends Error {
  constructor(code, message, retryAfter = undefined) {
    super(message);
    this.name = 'RuncastError';
    this.code = code;
    if (retryAfter !== undefined) this.retryAfter = retryAfter;
  }
}

const END = Symbol('end'); // what an Inbox gives once nothing more will come

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** When a JWT expires (seconds since the epoch), or null for another kind of token. */
function expiryOf(token) {
  const payload = typeof token === 'string' ? token.split('.')[1] : undefined;
  if (!payload) return null;
  try {
    const text = payload.replace(/-/g, '+').replace(/_/g, '/');
    const json = typeof atob === 'function' ? atob(text) : Buffer.from(text, 'base64').toString();
    const exp = JSON.parse(json).exp;
    return typeof exp === 'number' ? exp : null;
  } catch {
    return null;
  }
}

/** A queue an async iterator reads: `push` never blocks; `next` waits for an item. */
class Inbox {
  constructor() {
    this.items = [];
    this.head = 0; // items before it have been read (shift() would copy the rest each time)
    this.waiting = null;
    this.failure = null;
  }

  get size() {
    return this.items.length - this.head;
  }

  push(item) {
    this.items.push(item);
    this.wake();
  }

  fail(error) {
    this.failure = error;
    this.wake();
  }

  end() {
    this.push(END);
  }

  wake() {
    const waiting = this.waiting;
    this.waiting = null;
    waiting?.();
  }

  async next() {
    while (this.size === 0) {
      if (this.failure) throw this.failure;
      await new Promise((resolve) => {
        this.waiting = resolve;
      });
    }
    return this.take();
  }

  /** The next item, when there is one (size > 0): no promise, for a reader that is behind. */
  take() {
    const item = this.items[this.head++];
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}

/**
 * A server's WebSocket URL as people paste it: the dashboard's `http(s)://host:port` is
 * `ws(s)://host:port/ws`, a bare `host:port` is `ws://`, a URL with no path gets `/ws`, and a
 * fragment (`#/runs/...`) is dropped; any other path is left as it is.
 */
function wsUrl(text) {
  const url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `ws://${text}`);
  url.protocol = { 'http:': 'ws:', 'https:': 'wss:' }[url.protocol] ?? url.protocol;
  if (url.pathname === '/' || url.pathname === '') url.pathname = '/ws';
  url.hash = '';
  return url.toString();
}

export class RuncastClient {
  /**
   * @param {string | string[]} urls `ws://host:port/ws` (or the dashboard's `http://host:port`), or
   *   several (a cluster's nodes, tried in order)
   * @param {import('./index.js').ClientOptions} options
   */
  constructor(urls, options = {}) {
    this.urls = (Array.isArray(urls) ? urls : [urls]).map(wsUrl);
    this.token = options.token ?? null;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this.WebSocket) throw new Error('no WebSocket: pass options.WebSocket (in Node: the `ws` package)');
    this.maxDelayMs = options.maxDelayMs ?? 5000;
    this.onState = options.onState ?? null;
    this.onAuthNeeded = options.onAuthNeeded ?? null;
    this.onRunChanged = options.onRunChanged ?? null;
    this.ws = null;
    this.ready = null; // a promise of the open, authenticated socket
    this.connected = false; // welcomed, and authenticated if there is a token
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject}
    this.runs = new Map(); // run_id -> the events() following it (a Set of RunFeed)
    this.watchers = new Set(); // runs feeds
    this.closed = false;
    this.persistent = false; // connect() was called: stay connected even when nothing is followed
    this.dialing = false; // a dial loop is under way: it sees its own socket's failures
    this.everConnected = false;
    this.attempt = 0;
    this.refreshTimer = null;
    this.pingTimer = null;
    this.wake = null; // ends the current backoff wait early (retryNow)
    this.tokenGiven = null; // resolves a wait for setToken() (with onAuthNeeded)
    this.online = () => this.retryNow();
    globalThis.addEventListener?.('online', this.online);
  }

  // ---- the connection ------------------------------------------------------------------

  /** Connect now and stay connected (reconnecting as needed) until close(), even while
   * nothing is followed: for pages that show whether they are connected. */
  connect() {
    this.persistent = true;
    return this.connection();
  }

  /** The open socket, connecting (and reconnecting, with backoff over the URLs) as needed. */
  connection() {
    if (this.closed) return Promise.reject(new RuncastError('closed', 'the client is closed'));
    this.ready ??= this.dial();
    return this.ready;
  }

  state(name, detail = {}) {
    this.onState?.(name, detail);
  }

  async dial() {
    this.dialing = true;
    try {
      return await this.dialLoop();
    } finally {
      this.dialing = false;
    }
  }

  async dialLoop() {
    for (;;) {
      const url = this.urls[this.attempt % this.urls.length];
      this.state(this.everConnected ? 'reconnecting' : 'connecting');
      let ws = null;
      try {
        ws = await this.openSocket(url);
        this.attempt = 0;
        await this.authenticate(ws);
      } catch (error) {
        if (error instanceof RuncastError && error.code === 'unauthorized') {
          if (ws) this.discard(ws);
          if (this.onAuthNeeded) {
            await this.tokenNeeded('That token was not accepted.');
            continue;
          }
          this.ready = null;
          this.failAll(error); // a refused token: nobody waits for a connection that cannot be
          throw error;
        }
        if (this.closed) throw new RuncastError('closed', 'the client is closed');
        this.attempt += 1;
        const full = Math.min(this.maxDelayMs, 100 * 2 ** Math.min(this.attempt, 10));
        const delayMs = this.attempt % this.urls.length === 0 ? full / 2 + Math.random() * (full / 2) : 0;
        if (delayMs > 0) this.state('reconnecting', { delayMs });
        await new Promise((resolve) => {
          this.wake = resolve;
          setTimeout(resolve, delayMs);
        });
        this.wake = null;
        continue;
      }
      this.usable(ws);
      return ws;
    }
  }

  /** The connection may be used: say so, keep it alive, follow again what was followed. */
  usable(ws) {
    this.connected = true;
    this.everConnected = true;
    this.startPings(ws);
    this.state('connected');
    this.resubscribe();
  }

  /** Stop using a socket (without it counting as a drop). */
  discard(ws) {
    if (this.ws === ws) this.ws = null;
    ws.close();
  }

  /** With onAuthNeeded: say a token is needed, and wait for setToken(). */
  tokenNeeded(message) {
    this.connected = false;
    this.state('token', { message });
    const given = new Promise((resolve) => {
      this.tokenGiven = resolve;
    });
    this.onAuthNeeded(message);
    return given;
  }

  /**
   * Use this token (a string, or a function giving one) from now on: the open connection is
   * authenticated with it at once, or the client reconnects now.
   */
  setToken(token) {
    this.token = token;
    const given = this.tokenGiven;
    this.tokenGiven = null;
    if (given) given();
    else if (this.ws) this.reauthenticate(this.ws);
    else this.retryNow();
  }

  async reauthenticate(ws) {
    try {
      await this.authenticate(ws);
      if (this.ws === ws) this.usable(ws);
    } catch (error) {
      if (error.code !== 'unauthorized' || this.ws !== ws) return;
      if (this.onAuthNeeded) await this.tokenNeeded('That token was not accepted.');
      else this.failAll(error);
      if (this.ws === ws) this.reauthenticate(ws);
    }
  }

  /** Skip the rest of a wait before reconnecting (the network came back). */
  retryNow() {
    this.attempt = 0;
    if (this.wake) this.wake();
    else if (!this.ws && !this.closed && this.persistent) this.connection().catch(() => {});
  }

  openSocket(url) {
    return new Promise((resolve, reject) => {
      const ws = new this.WebSocket(url);
      let welcomed = false;
      ws.onmessage = (message) => {
        const frame = JSON.parse(typeof message.data === 'string' ? message.data : message.data.toString());
        if (!welcomed && frame.type === 'welcome') {
          welcomed = true;
          this.ws = ws;
          resolve(ws);
          return;
        }
        this.receive(frame);
      };
      ws.onerror = () => {};
      ws.onclose = (event) => {
        if (!welcomed) reject(new Error(`could not connect to ${url} (${event.code})`));
        else this.dropped(ws, event);
      };
    });
  }

  async currentToken() {
    return typeof this.token === 'function' ? await this.token() : this.token;
  }

  async authenticate(ws) {
    const token = await this.currentToken();
    if (!token) return;
    await this.send(ws, { type: 'auth', token });
    clearTimeout(this.refreshTimer);
    const exp = expiryOf(token);
    if (exp !== null && typeof this.token === 'function') {
      const inMs = Math.max(1000, (exp - REFRESH_BEFORE) * 1000 - Date.now());
      this.refreshTimer = setTimeout(() => this.refresh(ws), inMs);
      this.refreshTimer.unref?.();
    }
  }

  async refresh(ws) {
    if (this.ws === ws && !this.closed) await this.authenticate(ws).catch(() => {});
  }

  /** A ping now and then; a socket that does not answer within PONG_WITHIN_MS is closed. */
  startPings(ws) {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (this.ws !== ws) return;
      const timer = setTimeout(() => ws.close(), PONG_WITHIN_MS);
      this.send(ws, { type: 'ping' })
        .catch(() => {}) // a lost connection is handled by `dropped`
        .finally(() => clearTimeout(timer));
    }, PING_EVERY_MS);
    this.pingTimer.unref?.();
  }

  dropped(ws, event) {
    if (this.ws !== ws) return;
    this.ws = null;
    this.connected = false;
    clearTimeout(this.refreshTimer);
    clearInterval(this.pingTimer);
    const error = new RuncastError('disconnected', `the connection closed (${event.code})`);
    for (const { reject } of this.pending.values()) reject(error);
    this.pending.clear();
    if (this.dialing || this.closed) return; // a dial under way tries again by itself
    this.ready = null;
    if (this.persistent || this.runs.size > 0 || this.watchers.size > 0) this.connection().catch(() => {});
    else this.state('disconnected');
  }

  /** Every events() and watchRuns() of this client ends with `error`. */
  failAll(error) {
    for (const feeds of this.runs.values()) for (const feed of feeds) feed.inbox.fail(error);
    for (const watcher of this.watchers) watcher.inbox.fail(error);
  }

  /** Send one message on `ws` and wait for its reply; an `error` reply is a RuncastError. */
  send(ws, message) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, type: message.type });
      ws.send(JSON.stringify({ ...message, id }));
    });
  }

  /** A request on the current connection; `rate_limited` is waited out and sent again. */
  async request(message) {
    for (;;) {
      const ws = await this.connection();
      try {
        return await this.send(ws, message);
      } catch (error) {
        if (error.code === 'rate_limited') await sleep((error.retryAfter ?? 0.1) * 1000);
        else if (error.code !== 'disconnected' || message.type === 'start') throw error;
      }
    }
  }

  receive(frame) {
    if (frame.id !== undefined && this.pending.has(frame.id)) {
      const { resolve, reject, type } = this.pending.get(frame.id);
      this.pending.delete(frame.id);
      if (frame.type === 'error') {
        reject(new RuncastError(frame.code, frame.message, frame.retry_after));
        if (frame.code === 'unauthorized' && type !== 'auth') this.refused();
      } else {
        resolve(frame);
      }
      return;
    }
    switch (frame.type) {
      case 'event':
        for (const feed of this.runs.get(frame.run_id) ?? []) feed.take([frame]);
        break;
      case 'events':
        for (const feed of this.runs.get(frame.run_id) ?? []) feed.take(frame.events);
        break;
      case 'run_changed':
        for (const watcher of this.watchers) watcher.take(frame.run);
        this.onRunChanged?.(frame.run);
        break;
      default:
        break; // a newer server's frame: ignored, as the contract says
    }
  }

  /** A request was refused for want of a token: with onAuthNeeded, ask for one (once). */
  refused() {
    if (!this.onAuthNeeded || this.tokenGiven || !this.connected) return;
    this.tokenNeeded(this.token ? 'That token was not accepted.' : 'This server needs a token.').then(() => {
      if (this.ws) this.reauthenticate(this.ws);
      else this.retryNow();
    });
  }

  /** After a (re)connect: every followed run from its last seq, every runs feed afresh. */
  resubscribe() {
    for (const runId of this.runs.keys()) this.subscribe(runId);
    for (const watcher of this.watchers) watcher.subscribe();
  }

  /**
   * One subscription per run and connection (a second one replaces the first, on the
   * server): from the smallest seq any events() of the run still wants. Each takes only the
   * event right after its own last, so replays for another one are not repeated.
   */
  subscribe(runId) {
    const wanting = [...(this.runs.get(runId) ?? [])].filter((feed) => feed.wants());
    const ws = this.ws;
    if (!ws) return;
    if (wanting.length === 0) {
      if (this.runs.has(runId)) this.send(ws, { type: 'unsubscribe', run_id: runId }).catch(() => {});
      return;
    }
    const after = Math.min(...wanting.map((feed) => feed.last));
    this.send(ws, { type: 'subscribe', run_id: runId, after, batch: true })
      .then((reply) => {
        for (const feed of wanting) feed.subscribed(reply.run);
      })
      .catch((error) => {
        if (error.code === 'disconnected') return; // followed again once reconnected
        if (error.code === 'unauthorized' && this.onAuthNeeded) return; // and once a token is given
        for (const feed of wanting) feed.inbox.fail(error);
      });
  }

  close() {
    this.closed = true;
    this.connected = false;
    clearTimeout(this.refreshTimer);
    clearInterval(this.pingTimer);
    globalThis.removeEventListener?.('online', this.online);
    this.wake?.();
    this.failAll(new RuncastError('closed', 'the client is closed'));
    this.ws?.close();
    this.ws = null;
  }

  // ---- the operations --------------------------------------------------------------------

  /** Start a run; resolves to its snapshot (and subscribes to nothing: see events()). */
  async start(workflow, input = null, options = {}) {
    const message = { type: 'start', workflow, input, subscribe: false };
    if (options.runId !== undefined) message.run_id = options.runId;
    if (options.delay !== undefined) message.delay = options.delay;
    if (options.startAt !== undefined) message.start_at = options.startAt;
    if (options.priority !== undefined) message.priority = options.priority;
    if (options.concurrencyKey !== undefined) message.concurrency_key = options.concurrencyKey;
    return (await this.request(message)).run;
  }

  async poll(runId) {
    return (await this.request({ type: 'poll', run_id: runId })).run;
  }

  async cancel(runId) {
    return (await this.request({ type: 'cancel', run_id: runId })).run;
  }

  async respond(runId, requestId, value) {
    return (await this.request({ type: 'respond', run_id: runId, request_id: requestId, value })).run;
  }

  /** The schedules (8.3): those in code, and those made over the wire that the caller reaches. */
  async listSchedules() {
    return (await this.request({ type: 'list_schedules' })).schedules;
  }

  /** Start a workflow on a clock: `{name, workflow, input?, cron | every, timezone?, catchup?}`. */
  async createSchedule(schedule) {
    return (await this.request({ ...schedule, type: 'create_schedule' })).schedule;
  }

  async deleteSchedule(name) {
    return (await this.request({ type: 'delete_schedule', name })).schedule;
  }

  async listWorkflows() {
    return (await this.request({ type: 'list_workflows' })).workflows;
  }

  async listRuns(filters = {}) {
    const { runs, next } = await this.request({ type: 'list_runs', ...filters });
    return { runs, next };
  }

  /**
   * Each event of the run with seq > `after`, exactly once and in order, up to and including
   * the terminal event; across dropped connections and server restarts it resubscribes from
   * the last seq it yielded. A slow consumer holds at most about HIGH_WATER events: past
   * that it stops taking them, and catches up from the store once it has read them.
   * `signal` (an AbortSignal) ends it at once, wherever it waits.
   */
  async *events(runId, { after = 0, signal = undefined, onSnapshot = undefined } = {}) {
    const feed = new RunFeed(this, runId, after, onSnapshot);
    if (!this.runs.has(runId)) this.runs.set(runId, new Set());
    this.runs.get(runId).add(feed);
    const abort = () => feed.inbox.fail(new RuncastError('aborted', 'events() was aborted'));
    signal?.addEventListener('abort', abort);
    try {
      if (signal?.aborted) return;
      await this.connection();
      this.subscribe(runId);
      for (;;) {
        if (signal?.aborted) return; // at once, even with events still queued
        const event = feed.inbox.size > 0 ? feed.inbox.take() : await feed.inbox.next();
        if (event === END) return;
        feed.consumed();
        yield event;
        if (TERMINAL.has(event.event)) return;
      }
    } catch (error) {
      if (!signal?.aborted) throw error;
    } finally {
      signal?.removeEventListener('abort', abort);
      const feeds = this.runs.get(runId);
      feeds?.delete(feed);
      if (feeds?.size === 0) {
        this.runs.delete(runId);
        if (!feed.done && this.ws) this.send(this.ws, { type: 'unsubscribe', run_id: runId }).catch(() => {});
      }
    }
  }

  /** The matching runs that exist, then every change: a run only when its last_seq grew. */
  async *watchRuns(filters = {}, { signal = undefined } = {}) {
    const watcher = new RunsWatcher(this, filters);
    this.watchers.add(watcher);
    const abort = () => watcher.inbox.fail(new RuncastError('aborted', 'watchRuns() was aborted'));
    signal?.addEventListener('abort', abort);
    try {
      if (signal?.aborted) return;
      await this.connection();
      watcher.subscribe();
      for (;;) yield await watcher.inbox.next();
    } catch (error) {
      if (!signal?.aborted) throw error;
    } finally {
      signal?.removeEventListener('abort', abort);
      this.watchers.delete(watcher);
      if (this.ws && this.watchers.size === 0) this.send(this.ws, { type: 'unsubscribe_runs' }).catch(() => {});
    }
  }
}

/** One events() of a run: where it is, and what waits to be read. */
class RunFeed {
  constructor(client, runId, after, onSnapshot) {
    this.client = client;
    this.runId = runId;
    this.onSnapshot = onSnapshot; // called with the run's snapshot on each (re)subscription
    this.last = after; // the last seq handed to the inbox
    this.inbox = new Inbox();
    this.full = false; // its reader is behind: it takes nothing until it catches up
    this.done = false; // its terminal event is in the inbox, or the run has nothing after `last`
  }

  wants() {
    return !this.done && !this.full;
  }

  subscribed(run) {
    this.onSnapshot?.(run);
    if (FINISHED.has(run.status) && run.last_seq <= this.last) {
      this.done = true; // a finished run with nothing after `last`: nothing will come
      this.inbox.end();
    }
  }

  take(events) {
    for (const event of events) {
      if (!this.wants() || event.seq !== this.last + 1) continue; // a repeat, or past a pause
      this.last = event.seq;
      this.inbox.push(event);
      if (TERMINAL.has(event.event)) this.done = true;
    }
    if (!this.done && !this.full && this.inbox.size > HIGH_WATER) {
      this.full = true;
      this.client.subscribe(this.runId); // without this one (unsubscribed if it was the last)
    }
  }

  consumed() {
    if (this.full && this.inbox.size < HIGH_WATER / 2) {
      this.full = false;
      this.client.subscribe(this.runId); // from the store, where it left off
    }
  }
}

/** One watchRuns(): the recipe of the contract (subscribe_runs, then list_runs), after each connect. */
class RunsWatcher {
  constructor(client, filters) {
    this.client = client;
    this.filters = filters;
    this.seen = new Map(); // run_id -> the highest last_seq yielded
    this.inbox = new Inbox();
  }

  take(run) {
    if ((this.seen.get(run.run_id) ?? -1) >= run.last_seq) return;
    this.seen.set(run.run_id, run.last_seq);
    this.inbox.push(run);
  }

  async subscribe() {
    const ws = this.client.ws;
    if (!ws) return;
    try {
      await this.client.send(ws, { type: 'subscribe_runs', ...this.filters });
      let before;
      do {
        const page = await this.client.send(ws, { type: 'list_runs', ...this.filters, before });
        for (const run of page.runs) this.take(run);
        before = page.next ?? undefined;
      } while (before !== undefined);
    } catch (error) {
      if (error.code === 'disconnected') return;
      if (error.code === 'unauthorized' && this.client.onAuthNeeded) return;
      this.inbox.fail(error);
    }
  }
}
