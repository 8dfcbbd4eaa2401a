// The run view (#/runs/<run_id>): the questions a waiting run asks, a waterfall of its steps'
// attempts, and each step's progress, tool calls, streamed text and other events; the result.
//
// Events only change a plain model and mark what changed; the DOM is updated at most once
// per animation frame, so a run with tens of thousands of events costs a few DOM writes a
// frame however fast its events arrive. State comes from the events (seq 1 onwards), folded
// into a snapshot by fold.js (the server's rules); the snapshot of `subscribed` names the
// steps. An event this page does not know is shown as it came (name and JSON), in its step
// or under the run.

import { Asks } from './asks.js';
import { el, show } from './dom.js';
import { fold, newRun } from '/js/fold.js';
import { FINISHED, elapsed, formatDuration, formatTime, formatValue } from './format.js';
import { Waterfall } from './waterfall.js';

const TOOL_CALL_STATUS = {
  tool_call_started: 'running',
  tool_call_completed: 'completed',
  tool_call_failed: 'failed',
};
const CALL_TEXT = 120; // characters of a call's arguments, and of its result or error, shown
const OTHER_SHOWN = 500; // unknown events shown per step (and for the run); the rest are counted
const LIVE = new Set(['running', 'waiting', 'sleeping', 'pending']);

/** A value on one line, as JSON unless a string, cut to `limit` characters. */
function short(value, limit = CALL_TEXT) {
  const text = (typeof value === 'string' ? value : (JSON.stringify(value) ?? '')).replace(/\s+/g, ' ');
  return text.length <= limit ? text : `${text.slice(0, limit - 1)}…`;
}

function newStep(name, index) {
  return {
    name,
    index,
    status: 'pending',
    attempt: 0,
    retrying: false, // it failed, and will be tried again
    startedAt: null,
    finishedAt: null,
    hasText: false,
    pendingText: '', // streamed text not yet in the DOM
    resetText: false, // a new attempt starts its text over
    progress: null,
    calls: new Map(), // call_id -> {tool, args, result, error, status}: an agent step's tool calls
    callsDirty: false,
    others: [], // events this page does not know, as they came
    othersShown: 0,
    output: undefined,
    error: null,
    node: null,
  };
}

export class RunView {
  constructor({ client, announce }) {
    this.client = client;
    this.announce = announce;
    this.runId = null;
    this.following = null; // aborts the events() of the open run
    this.frame = 0;
    this.warned = new Set(); // unknown event names already reported in the console
    this.root = document.getElementById('view-run');
    this.timeline = document.getElementById('timeline');
    this.statusBadge = document.getElementById('run-status');
    this.cancelButton = document.getElementById('run-cancel');
    this.message = document.getElementById('run-message');
    this.otherList = document.getElementById('run-other-events');
    this.waterfall = new Waterfall(document.getElementById('waterfall'));
    this.asks = new Asks({ root: document.getElementById('run-asks'), client, announce });
    this.cancelButton.addEventListener('click', () => this.cancel());
    // Durations of running steps and the waterfall's running bars grow: repaint once a second.
    setInterval(() => {
      if (this.runId === null || !LIVE.has(this.model.status)) return;
      this.model.runDirty = true;
      this.model.barsDirty = true;
      for (const step of this.model.steps.values()) {
        if (['running', 'waiting', 'sleeping'].includes(step.status)) this.model.dirty.add(step);
      }
      this.schedule();
    }, 1000);
    this.reset(null);
  }

  reset(runId) {
    this.runId = runId;
    this.model = {
      status: null, // unknown until the snapshot or the first event
      workflow: '',
      createdAt: null,
      scheduledFor: null, // when a delayed run may start (8.2)
      trace: null, // its trace context (run_started's `trace`), when the server traces
      wakeAt: null, // while the run sleeps (8.1): when it wakes
      priority: 0,
      concurrencyKey: null, // at most its limit of runs with this key run at once (8.2)
      startedAt: null,
      finishedAt: null,
      input: undefined,
      output: undefined,
      error: null,
      lastSeq: 0,
      run: null, // the run as the server keeps it, folded from the events (fold.js)
      early: [], // events that came before the snapshot that names the steps
      resumed: null,
      steps: new Map(), // name -> step
      dirty: new Set(), // steps to repaint
      runDirty: true,
      asks: new Map(), // request_id -> {request_id, prompt, schema, step}: open questions, in order
      asksDirty: true,
      bars: [], // every attempt of every step, in the order they started (waterfall.js)
      openBars: new Map(), // step path -> its attempt still going on
      barsDirty: true,
      lastTs: null, // ms of the latest event: where an attempt cut off by a crash is drawn to end
      skew: 0, // how far the server's clock is seen ahead of ours (ts - arrival), in ms; never behind
      others: [], // run-level events this page does not know
      othersShown: 0,
    };
    this.renderedStatus = null;
    this.renderedInput = undefined;
    this.cancelling = false;
    this.timeline.replaceChildren();
    this.waterfall.clear();
    this.asks.reset(runId);
    this.otherList.replaceChildren();
    show(document.getElementById('run-other'), false);
    document.getElementById('run-input').textContent = '';
    delete this.root.dataset.missing;
    this.setMessage(null);
  }

  open(runId) {
    if (runId === this.runId) return;
    this.close();
    this.reset(runId);
    document.getElementById('run-id').textContent = runId;
    this.following = new AbortController();
    this.stream(runId, this.following.signal);
    this.schedule();
  }

  /** Every event of the run from seq 1, once each, across reconnects (the package's events()). */
  async stream(runId, signal) {
    try {
      const events = this.client.events(runId, { signal, onSnapshot: (run) => this.snapshot(run) });
      for await (const event of events) this.apply([event]);
    } catch (err) {
      if (signal.aborted) return;
      if (err.code === 'run_not_found') {
        this.root.dataset.missing = ''; // nothing of a run to show: no badge, no empty sections
        this.setMessage(`There is no run with id ${runId}. Check the link, or find the run in the list of runs.`);
      } else {
        this.setMessage(err.message);
      }
    }
  }

  close() {
    this.following?.abort();
    this.following = null;
    this.runId = null;
    cancelAnimationFrame(this.frame);
    this.frame = 0;
  }

  step(name, index) {
    let step = this.model.steps.get(name);
    if (!step) {
      step = newStep(name, index ?? this.model.steps.size);
      this.model.steps.set(name, step);
    } else if (index !== undefined && index !== null) {
      step.index = index;
    }
    this.model.dirty.add(step);
    return step;
  }

  snapshot(run) {
    const m = this.model;
    m.workflow = run.workflow;
    m.createdAt = run.created_at;
    m.scheduledFor = run.scheduled_for ?? null;
    m.priority = run.priority ?? 0;
    m.concurrencyKey = run.concurrency_key ?? null;
    m.input = run.input;
    if (m.status === null) m.status = run.status === 'pending' ? 'pending' : 'loading';
    run.steps?.forEach((s, index) => this.step(s.name, index));
    if (m.run === null && run.steps) {
      const names = run.steps.map((s) => s.name);
      m.run = newRun(run.run_id, run.workflow, run.input, names, run.created_at, run.owner, run);
      for (const e of m.early) fold(m.run, e);
      m.early = [];
      this.follow();
    }
    m.runDirty = true;
    this.schedule();
  }

  apply(events) {
    const m = this.model;
    m.runDirty = true; // at least the seq shown changes
    const arrived = Date.now();
    for (const e of events) {
      m.lastSeq = e.seq;
      const data = e.data ?? {};
      const ts = Date.parse(e.ts);
      if (m.run === null) m.early.push(e);
      else fold(m.run, e);
      switch (e.event) {
        case 'run_started':
          m.startedAt = e.ts;
          m.trace = typeof data.trace === 'string' ? data.trace : null; // a W3C traceparent, when traced
          m.runDirty = true;
          break;
        case 'run_resumed':
          m.resumed = data.from_step ?? null;
          m.startedAt ??= e.ts;
          // The attempts the crash cut off ended, as far as anyone knows, at the last event before;
          // a step waiting for an answer was not cut off: it still waits.
          for (const [path, bar] of [...m.openBars]) {
            if (!bar.waits.some((w) => w.end === null)) this.endBar(path, m.lastTs ?? ts, 'interrupted');
          }
          break;
        case 'step_started': {
          const step = this.step(e.step, data.index);
          const wasCompleted = step.output !== undefined; // its output stays until it starts again
          const asked = this.asksOf(e.step).length > 0; // asked before a restart, not answered yet
          step.attempt = data.attempt ?? step.attempt + 1;
          Object.assign(step, { startedAt: e.ts, finishedAt: null, error: null, progress: null, output: undefined });
          // A step that runs again (a retry, or after a restart) streams its text from the start.
          Object.assign(step, { hasText: false, pendingText: '', resetText: true });
          // An agent run again keeps the calls it had made (they are not made again); a step
          // that starts over after completing (a loop's next iteration) makes new ones.
          if (wasCompleted) step.calls = new Map();
          step.callsDirty = true;
          this.startBar(e.step, step.attempt, ts, asked);
          break;
        }
        case 'tool_call_started':
        case 'tool_call_completed':
        case 'tool_call_failed': {
          const step = this.step(e.step);
          const call = step.calls.get(data.call_id) ?? { tool: data.tool, args: undefined, text: '' };
          Object.assign(call, { tool: data.tool ?? call.tool, status: TOOL_CALL_STATUS[e.event] });
          // A coordinating team's member names itself: its calls show under its name, and
          // under the leader's call that gave it the task.
          if (typeof data.parent_call_id === 'string') {
            call.agent = data.agent;
            call.parent = data.parent_call_id;
          }
          if ('args' in data) call.args = data.args;
          if ('result' in data) call.result = data.result;
          if ('error' in data) call.error = data.error;
          step.calls.set(data.call_id, call);
          step.callsDirty = true;
          break;
        }
        case 'step_output': {
          const step = this.step(e.step);
          const task = typeof data.parent_call_id === 'string' ? step.calls.get(data.parent_call_id) : undefined;
          if (task && typeof data.delta === 'string') {
            // A team member's text, shown under the leader's call that gave it the task.
            task.speaker = data.agent;
            task.text = (task.text ?? '') + data.delta;
            step.callsDirty = true;
          } else if (typeof data.delta === 'string' && data.delta !== '') {
            step.pendingText += data.delta;
            step.hasText = true;
          }
          break;
        }
        case 'progress':
          this.step(e.step).progress = data;
          break;
        case 'step_skipped':
          this.step(e.step).finishedAt = e.ts;
          break;
        case 'input_requested': {
          m.asks.set(data.request_id, { ...data, schema: data.schema ?? null, step: e.step });
          m.asksDirty = true;
          if (e.step) {
            const bar = m.openBars.get(e.step);
            if (bar && !bar.waits.some((w) => w.end === null)) bar.waits.push({ start: ts, end: null });
            m.barsDirty = true;
          }
          break;
        }
        case 'input_received': {
          const asked = m.asks.get(data.request_id);
          m.asks.delete(data.request_id);
          m.asksDirty = true;
          const path = e.step ?? asked?.step;
          if (path && this.asksOf(path).length === 0) {
            const bar = m.openBars.get(path);
            for (const wait of bar?.waits ?? []) wait.end ??= ts;
            m.barsDirty = true;
          }
          break;
        }
        case 'sleep_started': {
          // A sleep is a bar of its own kind, drawn over its step's attempt until it ends.
          const bar = e.step ? m.openBars.get(e.step) : undefined;
          if (bar) bar.waits.push({ start: ts, end: null, kind: 'sleep', until: data.until });
          m.barsDirty = true;
          break;
        }
        case 'sleep_ended': {
          const bar = e.step ? m.openBars.get(e.step) : undefined;
          for (const sleep of bar?.waits ?? []) if (sleep.kind === 'sleep') sleep.end ??= ts;
          m.barsDirty = true;
          break;
        }
        case 'step_completed':
          Object.assign(this.step(e.step), { output: data.output, finishedAt: e.ts });
          this.endBar(e.step, ts, 'completed');
          break;
        case 'step_failed':
          Object.assign(this.step(e.step), {
            retrying: data.will_retry === true,
            error: data.error ?? 'failed',
            finishedAt: e.ts,
          });
          this.endBar(e.step, ts, 'failed');
          break;
        case 'run_completed':
          m.output = data.output;
          this.finish(e.ts, null);
          break;
        case 'run_failed':
          m.error = data.error ?? 'failed';
          this.finish(e.ts, m.error);
          break;
        case 'run_cancelled':
          this.finish(e.ts, 'cancelled');
          break;
        default: {
          // Never dropped: a newer server's event is shown as it came, in its step or for the run.
          const holder = e.step ? this.step(e.step) : m;
          holder.others.push(e);
          if (!e.step) m.runDirty = true;
          if (!this.warned.has(e.event)) {
            this.warned.add(e.event);
            console.warn('runcast: an event this page does not know, shown as it is:', e.event);
          }
        }
      }
      if (Number.isFinite(ts)) {
        m.lastTs = Math.max(m.lastTs ?? ts, ts);
        m.skew = Math.max(m.skew, ts - arrived);
      }
    }
    this.follow();
    this.schedule();
  }

  /** Show the statuses of the folded run: the run's, and each step's (a failed step that
   * will be tried again shows as retrying). */
  follow() {
    const m = this.model;
    if (m.run === null || m.run.last_seq === 0) return; // nothing folded yet: the snapshot's status stands
    m.status = m.run.status;
    m.run.steps.forEach((folded, index) => {
      const step = m.steps.get(folded.name) ?? this.step(folded.name, index);
      const status = folded.status === 'failed' && step.retrying ? 'retrying' : folded.status;
      if (step.status === status) return;
      step.status = status;
      if (status === 'failed') step.error ??= folded.error;
      if (folded.finished_at) step.finishedAt ??= folded.finished_at;
      m.dirty.add(step);
    });
  }

  /** The server's --trace-url template ({trace_id} in it), from /dashboard.json. */
  setTraceUrl(template) {
    this.traceUrl = typeof template === 'string' && template.includes('{trace_id}') ? template : null;
    this.model.runDirty = true;
    this.schedule();
  }

  /** A link to the run's trace: when the server has a --trace-url and the run was traced. */
  paintTrace() {
    const link = document.getElementById('run-trace');
    const traceId = this.model.trace?.split('-')[1];
    const shown = Boolean(this.traceUrl && traceId && /^[0-9a-f]{32}$/.test(traceId));
    if (shown) link.href = this.traceUrl.replace('{trace_id}', traceId);
    show(link, shown);
  }

  /** The open questions a step asked. */
  asksOf(path) {
    return [...this.model.asks.values()].filter((ask) => ask.step === path);
  }

  startBar(path, attempt, ts, waiting) {
    const m = this.model;
    const before = m.openBars.get(path);
    if (before) this.endBar(path, m.lastTs ?? ts, 'interrupted');
    const bar = { step: path, attempt, start: ts, end: null, status: 'running', waits: [] };
    if (waiting) bar.waits.push({ start: ts, end: null });
    m.bars.push(bar);
    m.openBars.set(path, bar);
    m.barsDirty = true;
  }

  endBar(path, ts, status) {
    const bar = this.model.openBars.get(path);
    if (!bar) return;
    this.model.openBars.delete(path);
    bar.end = Math.max(ts, bar.start);
    bar.status = status;
    for (const wait of bar.waits) wait.end ??= bar.end;
    this.model.barsDirty = true;
  }

  endBars(ts, status) {
    for (const path of [...this.model.openBars.keys()]) this.endBar(path, ts, status);
  }

  /** Our best guess at the server's "now": our clock, or later if an event's ts was ahead of it.
   * (Replayed events are old, so they cannot tell whether the server's clock is behind ours.) */
  now() {
    const m = this.model;
    const guess = Date.now() + m.skew;
    return m.lastTs === null ? guess : Math.max(guess, m.lastTs);
  }

  /** The run ended: its attempts' bars end and its questions close (fold.js ends its steps). */
  finish(ts, error) {
    this.model.finishedAt = ts;
    this.endBars(Date.parse(ts), error === 'cancelled' ? 'cancelled' : 'failed');
    if (this.model.asks.size > 0) {
      this.model.asks.clear(); // nobody can answer a finished run
      this.model.asksDirty = true;
    }
  }

  cancel() {
    const runId = this.runId;
    this.cancelling = true;
    this.model.runDirty = true;
    this.schedule();
    this.client
      .request({ type: 'cancel', run_id: runId })
      .then(() => this.announce(`Cancelling run ${runId}`))
      .catch((err) => {
        if (runId !== this.runId) return;
        this.cancelling = false;
        this.model.runDirty = true;
        this.schedule();
        this.setMessage(`Could not cancel: ${err.code === 'disconnected' ? 'not connected' : err.message}`);
      });
  }

  setMessage(text) {
    this.message.textContent = text ?? '';
    show(this.message, Boolean(text));
  }

  schedule() {
    if (this.frame === 0 && this.runId !== null) this.frame = requestAnimationFrame(() => this.render());
  }

  render() {
    this.frame = 0;
    const m = this.model;
    if (m.runDirty) this.renderRun();
    if (m.asksDirty) {
      m.asksDirty = false;
      this.asks.set([...m.asks.values()]);
    }
    if (m.barsDirty) this.renderBars();
    // Steps in index order: new step nodes go in the right place.
    const dirty = [...m.dirty].sort((a, b) => a.index - b.index);
    m.dirty.clear();
    for (const step of dirty) this.renderStep(step);
  }

  renderRun() {
    const m = this.model;
    m.runDirty = false;
    const status = m.status ?? 'loading';
    this.statusBadge.textContent = status;
    this.statusBadge.className = `status status-${status}`;
    this.root.dataset.status = status;
    this.root.dataset.seq = String(m.lastSeq);
    document.getElementById('run-workflow').textContent = m.workflow;
    document.getElementById('run-created').textContent = formatTime(m.createdAt);
    document.getElementById('run-scheduled-for').textContent = formatTime(m.scheduledFor);
    show(document.getElementById('run-scheduled'), m.scheduledFor !== null);
    this.paintTrace();
    const wakeAt = m.run?.status === 'sleeping' ? m.run.wake_at : null;
    document.getElementById('run-wake-at').textContent = formatTime(wakeAt);
    show(document.getElementById('run-sleeping'), wakeAt !== null && wakeAt !== undefined);
    document.getElementById('run-priority-value').textContent = String(m.priority);
    show(document.getElementById('run-priority'), m.priority !== 0);
    document.getElementById('run-key-value').textContent = m.concurrencyKey ?? '';
    show(document.getElementById('run-key'), m.concurrencyKey !== null);
    document.getElementById('run-seq').textContent = String(m.lastSeq);
    document.getElementById('run-duration').textContent = formatDuration(elapsed(m.startedAt, m.finishedAt));
    if (this.renderedInput !== m.input) {
      this.renderedInput = m.input;
      document.getElementById('run-input').textContent = m.input === undefined ? '' : formatValue(m.input);
    }

    const finished = FINISHED.has(status);
    show(this.cancelButton, !finished && m.status !== null && status !== 'loading');
    this.cancelButton.disabled = this.cancelling;
    this.cancelButton.textContent = this.cancelling ? 'Cancelling…' : 'Cancel run';

    if (m.others.length > m.othersShown) {
      appendOthers(m, this.otherList);
      show(document.getElementById('run-other'), true);
    }

    const resumed = document.getElementById('run-resumed');
    resumed.textContent = m.resumed ? `Resumed after a server restart, from step ${m.resumed}.` : '';
    show(resumed, Boolean(m.resumed));

    const result = document.getElementById('run-result');
    const title = document.getElementById('run-result-title');
    const output = document.getElementById('run-output');
    show(result, finished);
    if (finished) {
      title.textContent = { completed: 'Output', failed: 'Error', cancelled: 'Cancelled' }[status];
      output.textContent = status === 'completed' ? formatValue(m.output) : (m.error ?? 'The run was cancelled.');
      output.classList.toggle('error', status !== 'completed');
      output.classList.toggle('text-value', status !== 'completed' || typeof m.output === 'string');
    }

    // Announce changes, not the state found on opening a run.
    if (this.renderedStatus !== null && this.renderedStatus !== status && status !== 'loading') {
      this.announce(`Run ${this.runId} ${status}`);
    }
    if (status !== 'loading') this.renderedStatus = status;
  }

  renderBars() {
    const m = this.model;
    m.barsDirty = false;
    show(document.getElementById('run-waterfall'), m.bars.length > 0);
    if (m.bars.length === 0) return;
    const now = this.now();
    const origin = Math.min(Date.parse(m.startedAt ?? '') || Infinity, m.bars[0].start);
    const finished = Date.parse(m.finishedAt ?? '');
    const end = Number.isFinite(finished) ? finished : LIVE.has(m.status) ? now : (m.lastTs ?? now);
    this.waterfall.render(m.bars, origin, Math.max(end, ...m.bars.map((b) => b.end ?? end)), now);
  }

  /** The time a step took, all its attempts together, as the timeline shows it (null before its bars). */
  timeSpent(step) {
    const bars = this.model.bars.filter((bar) => bar.step === step.name);
    if (bars.length === 0) return null;
    const now = this.now();
    return bars.reduce((sum, bar) => sum + Math.max(0, (bar.end ?? now) - bar.start), 0);
  }

  renderStep(step) {
    if (!step.node) this.buildStep(step);
    const n = step.node;
    n.li.dataset.status = step.status;
    n.status.textContent = step.status;
    n.status.className = `status status-${step.status}`;
    n.attempt.textContent = step.attempt > 1 ? `attempt ${step.attempt}` : '';
    n.duration.textContent = formatDuration(this.timeSpent(step) ?? elapsed(step.startedAt, step.finishedAt));

    show(n.progressBox, step.progress !== null);
    if (step.progress !== null) {
      const { current, total, message } = step.progress;
      const known = Number.isFinite(total) && total > 0 && Number.isFinite(current);
      if (known) {
        n.progress.max = total;
        n.progress.value = Math.min(current, total);
      } else {
        n.progress.removeAttribute('value'); // indeterminate
      }
      const count = known ? `${current} / ${total}` : Number.isFinite(current) ? String(current) : '';
      // Custom fields a step reports (e.g. a loop's iteration) are shown as they are.
      const extra = Object.entries(step.progress)
        .filter(([key]) => !['current', 'total', 'message'].includes(key))
        .map(([key, value]) => `${key}: ${typeof value === 'string' ? value : JSON.stringify(value)}`)
        .join(', ');
      n.progressLabel.textContent = [count, typeof message === 'string' ? message : '', extra]
        .filter(Boolean)
        .join(' · ');
    }

    if (step.callsDirty) {
      step.callsDirty = false;
      n.calls.replaceChildren(...[...step.calls.values()].map(renderCall));
      show(n.calls, step.calls.size > 0);
    }

    appendOthers(step, n.others);

    if (step.resetText) {
      n.textNode.data = '';
      step.resetText = false;
    }
    if (step.pendingText) {
      // Follow the end of the text unless the reader scrolled up to read.
      const atEnd = n.text.scrollTop + n.text.clientHeight >= n.text.scrollHeight - 4;
      n.textNode.appendData(step.pendingText);
      step.pendingText = '';
      if (atEnd) n.text.scrollTop = n.text.scrollHeight;
    }
    show(n.text, step.hasText);

    // Streamed steps show their text; others their output, once they have one.
    const showOutput = step.output !== undefined && !step.hasText;
    n.output.textContent = showOutput ? formatValue(step.output) : '';
    show(n.output, showOutput);
    n.error.textContent = step.error ?? '';
    show(n.error, Boolean(step.error) && step.status !== 'completed');
  }

  buildStep(step) {
    const textNode = document.createTextNode('');
    const n = {
      status: el('span', { class: 'status' }),
      attempt: el('span', { class: 'step-attempt' }),
      duration: el('span', { class: 'step-duration' }),
      progress: el('progress', { 'aria-label': `Progress of ${step.name}` }),
      progressLabel: el('span', { class: 'progress-label' }),
      text: el('pre', { class: 'step-text', tabindex: '0', 'aria-label': `Text of ${step.name}` }, textNode),
      calls: el('ul', { class: 'step-tools', 'aria-label': `Tool calls of ${step.name}`, hidden: true }),
      others: el('ul', { class: 'other-events', 'aria-label': `Other events of ${step.name}`, hidden: true }),
      output: el('pre', { class: 'step-output' }),
      error: el('p', { class: 'step-error error' }),
      textNode,
    };
    n.progressBox = el('div', { class: 'step-progress' }, n.progress, n.progressLabel);
    n.li = el(
      'li',
      { class: 'step', dataset: { step: step.name, index: String(step.index) } },
      el('div', { class: 'step-head' }, el('h4', { class: 'step-name' }, step.name), n.status, n.attempt, n.duration),
      n.progressBox,
      n.calls,
      n.others,
      n.text,
      n.output,
      n.error,
    );
    step.node = n;
    const after = [...this.timeline.children].find((li) => Number(li.dataset.index) > step.index);
    this.timeline.insertBefore(n.li, after ?? null);
  }
}

/** One tool call as a list item: who made it (a team member), its name, status and arguments, then
 * its result or error, and the text a member streamed while working on it (text only). */
function renderCall(call) {
  const ended =
    call.status === 'failed'
      ? el('span', { class: 'tool-error error' }, `✗ ${short(call.error)}`)
      : call.status === 'completed'
        ? el('span', { class: 'tool-result' }, `→ ${short(call.result)}`)
        : null;
  const spoken = call.text
    ? el('p', { class: 'tool-text', 'aria-label': `Text of ${call.speaker ?? 'a member'}` }, call.text)
    : null;
  return el(
    'li',
    { class: call.parent === undefined ? 'tool-call' : 'tool-call tool-nested', dataset: { status: call.status } },
    call.agent ? el('span', { class: 'tool-agent' }, `${call.agent} › `) : null,
    el('code', { class: 'tool-name' }, call.tool ?? '?'),
    el('span', { class: `status status-${call.status}` }, call.status),
    el('code', { class: 'tool-args' }, `(${call.args === undefined ? '' : short(call.args)})`),
    ended,
    spoken,
  );
}

/** Add the events of `holder.others` not shown yet to `list`, up to OTHER_SHOWN, then a count. */
function appendOthers(holder, list) {
  if (holder.others.length === holder.othersShown) return;
  const fresh = holder.others.slice(holder.othersShown, OTHER_SHOWN).map(renderOther);
  list.append(...fresh);
  holder.othersShown = holder.others.length;
  const more = holder.others.length - OTHER_SHOWN;
  if (more > 0) {
    let note = list.querySelector('.other-more');
    if (!note) note = list.appendChild(el('li', { class: 'other-more hint' }));
    note.textContent = `and ${more} more (all are in /api/runs/…/events)`;
  }
  show(list, true);
}

/** An event this page does not know: its name and its data as JSON, as they came. */
function renderOther(event) {
  const json = JSON.stringify(event.data ?? null) ?? 'null';
  return el(
    'li',
    { class: 'other-event', dataset: { event: String(event.event), seq: String(event.seq) } },
    el('code', { class: 'event-name' }, String(event.event)),
    ' ',
    el('code', { class: 'event-data', title: json }, short(event.data ?? null, 400)),
  );
}
