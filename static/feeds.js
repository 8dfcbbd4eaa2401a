// Run subscriptions shared by the views, resumed after every reconnect, exactly once per listener.
//
// The server keeps one subscription per run and connection (subscribing again replaces it), so
// several views that follow the same run share one: it starts after the smallest seq any of
// them has seen, and each listener takes only the event right after its own last seq. That
// drops repeats (a replay for another listener, a resume) and frames still in flight from a
// replaced subscription; the new subscription delivers those again, in order.

import { FINISHED, TERMINAL_EVENTS } from './format.js';

export class Feeds {
  constructor(socket) {
    this.socket = socket;
    this.byRun = new Map(); // run_id -> Set of listeners
  }

  /**
   * Follow a run from seq `after` (exclusive). Returns a handle for `unwatch`.
   * callbacks: onEvents(events) with consecutive new events; onSnapshot(run) on each
   * `subscribed`; onError(err) when the server refuses (e.g. run_not_found).
   */
  watch(runId, after, callbacks) {
    const listener = { runId, last: after, done: false, ...callbacks };
    if (!this.byRun.has(runId)) this.byRun.set(runId, new Set());
    this.byRun.get(runId).add(listener);
    this.subscribe(runId);
    return listener;
  }

  unwatch(listener) {
    const listeners = this.byRun.get(listener.runId);
    if (!listeners || !listeners.delete(listener)) return;
    if (listeners.size > 0) return;
    this.byRun.delete(listener.runId);
    if (!listener.done && this.socket.usable) {
      this.socket.request({ type: 'unsubscribe', run_id: listener.runId }).catch(() => {}); // best effort
    }
  }

  /** After a (re)connect: continue every run someone still follows from what they have seen. */
  resume() {
    for (const runId of this.byRun.keys()) this.subscribe(runId);
  }

  subscribe(runId) {
    const wanting = [...(this.byRun.get(runId) ?? [])].filter((l) => !l.done);
    if (wanting.length === 0 || !this.socket.usable) return; // resume() does it once connected
    const after = Math.min(...wanting.map((l) => l.last));
    this.socket
      .request({ type: 'subscribe', run_id: runId, after, batch: true })
      .then((reply) => {
        for (const listener of this.byRun.get(runId) ?? []) {
          // A finished run with nothing after `last` sends no more events: this listener is done.
          if (FINISHED.has(reply.run.status) && reply.run.last_seq <= listener.last) listener.done = true;
          listener.onSnapshot?.(reply.run);
        }
      })
      .catch((err) => {
        if (err.code === 'disconnected') return; // resume() subscribes again
        for (const listener of wanting) listener.onError?.(err);
      });
  }

  /** Events from the socket (an `event` or `events` frame). */
  receive(runId, events) {
    for (const listener of this.byRun.get(runId) ?? []) {
      const fresh = [];
      for (const event of events) {
        if (listener.done || event.seq !== listener.last + 1) continue; // a repeat, or ahead of a replay
        fresh.push(event);
        listener.last = event.seq;
        if (TERMINAL_EVENTS.has(event.event)) listener.done = true;
      }
      if (fresh.length > 0) listener.onEvents(fresh);
    }
  }
}
