// The one WebSocket to /ws: reconnects with backoff, authenticates first, matches replies by id.
//
// Views never touch the WebSocket. They call `request(msg)` (a promise of the reply with the
// same id) and re-issue what they need from `onReady`, which runs after every (re)connect
// once the connection may be used. Events go to `onEvents(runId, events)`.

const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 5000;
const PING_EVERY_MS = 20000; // a silent half-open connection is only noticed by writing to it
const PONG_WITHIN_MS = 10000;
const TOKEN_KEY = 'runcast.token';
const PROTOCOL_VERSION = 1;

/** An error reply from the server (`code` is the contract's code), or `disconnected`. */
export class ServerError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'ServerError';
    this.code = code;
  }
}

/** The /ws URL of the page's own server: ws: or wss: like the page. */
export function socketUrl(loc = window.location) {
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}

/**
 * A token handed over in the page's address (`#token=...`, or `#/runs/ID?token=...`): keep
 * it for this tab and take it out of the address. The fragment never reaches the server
 * or its logs. Returns the address's fragment without it.
 */
export function takeTokenFromAddress(loc = window.location, history = window.history) {
  const match = /^(.*?)[#?&]token=([^&]*)(.*)$/.exec(loc.hash);
  if (!match) return loc.hash;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[2]));
  const rest = `${match[1]}${match[3].replace(/^&/, match[1].includes('?') ? '&' : '?')}`;
  const hash = rest === '' || rest === '#' ? '#/' : rest;
  history.replaceState(null, '', `${loc.pathname}${loc.search}${hash}`);
  return hash;
}

/** Who the tab's token says it is: a signed token's `sub`, or null (a server token, or none). */
export function signedInAs() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const payload = token?.split('.')[1];
  if (!payload) return null;
  try {
    const claims = JSON.parse(atob(payload.replace(/-/g, '+').replace(/_/g, '/')));
    return typeof claims.sub === 'string' ? claims.sub : null;
  } catch {
    return null; // not a JWT: a server's --token
  }
}

export class Socket {
  /**
   * @param {object} handlers
   *   onState(state, detail): 'connecting' | 'connected' | 'reconnecting' {delayMs} | 'token'
   *   onReady(): the connection may be used (after welcome, and after `authed` if needed)
   *   onEvents(runId, events): events of a run, in the order received
 *   onRunChanged(run): a `run_changed` frame of the runs feed (`subscribe_runs`)
   *   onAuthNeeded(message): the server wants a (new) token
   *   onNotice(message): an error no request is waiting for
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.ws = null;
    this.pending = new Map(); // message id -> {resolve, reject}
    this.nextId = 1; // never reset: a late reply from an old connection cannot match a new request
    this.backoff = BACKOFF_FIRST_MS;
    this.retryTimer = null;
    this.pingTimer = null;
    this.everConnected = false;
    this.usable = false; // welcomed, and authenticated if a token was sent
    this.authInFlight = false; // an `auth` was sent on this connection and is not answered yet
    this.needsToken = false; // the server said `unauthorized` and we have no working token
    window.addEventListener('online', () => this.retryNow());
  }

  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  start() {
    this.connect();
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.usable = false;
    this.handlers.onState(this.everConnected ? 'reconnecting' : 'connecting', {});
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener('open', () => {
      // The contract: with a token, `auth` is the first message on every connection.
      if (this.token) this.authenticate(this.token);
    });
    ws.addEventListener('message', (e) => {
      if (ws === this.ws) this.receive(e.data);
    });
    ws.addEventListener('close', (e) => this.closed(ws, e));
    // 'error' is always followed by 'close', which decides what to do; the browser logs the cause.
  }

  /** Send a message with a fresh id; resolves with the reply, rejects with a ServerError. */
  request(message) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject(new ServerError('disconnected', 'not connected to the server'));
        return;
      }
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ ...message, id }));
    });
  }

  /** A token typed by the user: keep it for this tab and use it at once. */
  setToken(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.authenticate(token);
    else this.retryNow();
  }

  authenticate(token) {
    this.authInFlight = true;
    this.request({ type: 'auth', token })
      .then(() => {
        this.authInFlight = false;
        this.needsToken = false;
        this.becomeUsable();
      })
      .catch((err) => {
        this.authInFlight = false;
        if (err.code === 'disconnected') return; // the next connection tries again
        sessionStorage.removeItem(TOKEN_KEY);
        this.needsToken = true;
        this.handlers.onAuthNeeded(err.code === 'unauthorized' ? 'That token was not accepted.' : err.message);
      });
  }

  receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.warn('runcast: a frame that is not JSON', data);
      return;
    }
    switch (msg.type) {
      case 'welcome':
        if (msg.protocol !== PROTOCOL_VERSION) console.warn('runcast: server speaks protocol', msg.protocol);
        this.backoff = BACKOFF_FIRST_MS;
        this.everConnected = true;
        this.startPings();
        // With a token, wait for `authed` (the auth request was sent on open).
        if (!this.authInFlight) this.becomeUsable();
        break;
      case 'event':
        this.handlers.onEvents(msg.run_id, [msg]);
        break;
      case 'events':
        this.handlers.onEvents(msg.run_id, msg.events);
        break;
      case 'run_changed':
        this.handlers.onRunChanged?.(msg.run);
        break;
      case 'error':
        this.failed(msg);
        break;
      case 'authed':
      case 'started':
      case 'subscribed':
      case 'unsubscribed':
      case 'run':
      case 'runs':
      case 'workflows':
      case 'cancel_requested':
      case 'responded':
      case 'runs_subscribed':
      case 'runs_unsubscribed':
      case 'pong':
        this.settle(msg);
        break;
      default:
        console.warn('runcast: unknown message type', msg.type, msg);
    }
  }

  becomeUsable() {
    this.usable = true;
    this.handlers.onState('connected', {});
    this.handlers.onReady();
  }

  settle(msg) {
    const waiting = this.pending.get(msg.id);
    if (!waiting) return; // a reply nobody waits for any more (its request was abandoned)
    this.pending.delete(msg.id);
    waiting.resolve(msg);
  }

  failed(msg) {
    const waiting = this.pending.get(msg.id);
    if (msg.code === 'unauthorized' && !this.authInFlight && !this.token) {
      this.needsToken = true;
      this.handlers.onAuthNeeded('This server needs a token.');
    }
    if (waiting) {
      this.pending.delete(msg.id);
      waiting.reject(new ServerError(msg.code, msg.message));
    } else if (msg.code !== 'unauthorized') {
      this.handlers.onNotice(`${msg.code}: ${msg.message}`);
    }
  }

  closed(ws, event) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.usable = false;
    clearInterval(this.pingTimer);
    this.authInFlight = false;
    for (const waiting of this.pending.values()) {
      waiting.reject(new ServerError('disconnected', 'the connection to the server was lost'));
    }
    this.pending.clear();
    if (this.needsToken && !this.token) {
      // Retrying without a token only fails again: wait for the user (setToken reconnects).
      this.handlers.onState('token', { code: event.code });
      return;
    }
    const delayMs = this.backoff;
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    this.handlers.onState('reconnecting', { delayMs });
    this.retryTimer = setTimeout(() => this.connect(), delayMs);
  }

  /** Skip the rest of the backoff wait (the network came back, or the user gave a token). */
  retryNow() {
    if (this.ws) return;
    this.backoff = BACKOFF_FIRST_MS;
    this.connect();
  }

  startPings() {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      const ws = this.ws;
      const timer = setTimeout(() => ws && ws.close(), PONG_WITHIN_MS);
      this.request({ type: 'ping' })
        .catch(() => {}) // a lost connection is handled by `closed`
        .finally(() => clearTimeout(timer));
    }, PING_EVERY_MS);
  }
}
