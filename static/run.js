// The run view (#/runs/<run_id>): a timeline of steps, progress, tool calls, streamed text, the result.
//
// Events only change a plain model and mark what changed; the DOM is updated at most once
// per animation frame, so a run with tens of thousands of events costs a few DOM writes a
// frame however fast its events arrive. State comes from the events (seq 1 onwards); the
// snapshot of `subscribed` only names the steps that have not started yet.

import { el, show } from './dom.js';
import { FINISHED, elapsed, formatDuration, formatTime, formatValue } from './format.js';

const RUN_STATUS_OF_EVENT = {
  run_started: 'running',
  run_resumed: 'running',
  run_completed: 'completed',
  run_failed: 'failed',
  run_cancelled: 'cancelled',
};

const TOOL_CALL_STATUS = {
  tool_call_started: 'running',
  tool_call_completed: 'completed',
  tool_call_failed: 'failed',
};
const CALL_TEXT = 120; // characters of a call's arguments, and of its result or error, shown

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
    startedAt: null,
    finishedAt: null,
    hasText: false,
    pendingText: '', // streamed text not yet in the DOM
    resetText: false, // a new attempt starts its text over
    progress: null,
    calls: new Map(), // call_id -> {tool, args, result, error, status}: an agent step's tool calls
    callsDirty: false,
    output: undefined,
    error: null,
    node: null,
  };
}

export class RunView {
  constructor({ socket, feeds, announce }) {
    this.socket = socket;
    this.feeds = feeds;
    this.announce = announce;
    this.runId = null;
    this.listener = null;
    this.frame = 0;
    this.root = document.getElementById('view-run');
    this.timeline = document.getElementById('timeline');
    this.statusBadge = document.getElementById('run-status');
    this.cancelButton = document.getElementById('run-cancel');
    this.message = document.getElementById('run-message');
    this.cancelButton.addEventListener('click', () => this.cancel());
    // Durations of running steps grow: repaint them once a second.
    setInterval(() => {
      if (this.runId === null || this.model.status !== 'running') return;
      this.model.runDirty = true;
      for (const step of this.model.steps.values()) if (step.status === 'running') this.model.dirty.add(step);
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
      startedAt: null,
      finishedAt: null,
      input: undefined,
      output: undefined,
      error: null,
      lastSeq: 0,
      resumed: null,
      steps: new Map(), // name -> step
      dirty: new Set(), // steps to repaint
      runDirty: true,
    };
    this.renderedStatus = null;
    this.renderedInput = undefined;
    this.cancelling = false;
    this.timeline.replaceChildren();
    document.getElementById('run-input').textContent = '';
    this.setMessage(null);
  }

  open(runId) {
    if (runId === this.runId) return;
    this.close();
    this.reset(runId);
    document.getElementById('run-id').textContent = runId;
    this.listener = this.feeds.watch(runId, 0, {
      onEvents: (events) => this.apply(events),
      onSnapshot: (run) => this.snapshot(run),
      onError: (err) => this.setMessage(err.code === 'run_not_found' ? `There is no run with id ${runId}.` : err.message),
    });
    this.schedule();
  }

  close() {
    if (this.listener) this.feeds.unwatch(this.listener);
    this.listener = null;
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
    m.input = run.input;
    if (m.status === null) m.status = run.status === 'pending' ? 'pending' : 'loading';
    run.steps?.forEach((s, index) => this.step(s.name, index));
    m.runDirty = true;
    this.schedule();
  }

  apply(events) {
    const m = this.model;
    m.runDirty = true; // at least the seq shown changes
    for (const e of events) {
      m.lastSeq = e.seq;
      const data = e.data ?? {};
      const runStatus = RUN_STATUS_OF_EVENT[e.event];
      if (runStatus) m.status = runStatus;
      switch (e.event) {
        case 'run_started':
          m.startedAt = e.ts;
          break;
        case 'run_resumed':
          m.resumed = data.from_step ?? null;
          m.startedAt ??= e.ts;
          break;
        case 'step_started': {
          const step = this.step(e.step, data.index);
          const wasCompleted = step.status === 'completed';
          Object.assign(step, { status: 'running', attempt: data.attempt ?? step.attempt + 1, startedAt: e.ts });
          Object.assign(step, { finishedAt: null, error: null, progress: null, output: undefined });
          // A step that runs again (a retry, or after a restart) streams its text from the start.
          Object.assign(step, { hasText: false, pendingText: '', resetText: true });
          // An agent run again keeps the calls it had made (they are not made again); a step
          // that starts over after completing (a loop's next iteration) makes new ones.
          if (wasCompleted) step.calls = new Map();
          step.callsDirty = true;
          break;
        }
        case 'tool_call_started':
        case 'tool_call_completed':
        case 'tool_call_failed': {
          const step = this.step(e.step);
          const call = step.calls.get(data.call_id) ?? { tool: data.tool, args: undefined, text: '' };
          Object.assign(call, { tool: data.tool ?? call.tool, status: TOOL_CALL_STATUS[e.event] });
          // A coordinating team's member names itself: its calls show under its name.
          if (typeof data.parent_call_id === 'string') call.agent = data.agent;
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
        case 'step_completed':
          Object.assign(this.step(e.step), { status: 'completed', output: data.output, finishedAt: e.ts });
          break;
        case 'step_failed':
          Object.assign(this.step(e.step), {
            status: data.will_retry ? 'retrying' : 'failed',
            error: data.error ?? 'failed',
            finishedAt: e.ts,
          });
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
        default:
          console.warn('runcast: unknown event', e.event, e);
      }
    }
    this.schedule();
  }

  /** The run ended: like the server, a step still running failed and the rest were skipped. */
  finish(ts, error) {
    this.model.finishedAt = ts;
    for (const step of this.model.steps.values()) {
      if (step.status === 'running') Object.assign(step, { status: 'failed', error: error ?? 'stopped', finishedAt: ts });
      else if (step.status === 'pending') step.status = 'skipped';
      else continue;
      this.model.dirty.add(step);
    }
  }

  cancel() {
    const runId = this.runId;
    this.cancelling = true;
    this.model.runDirty = true;
    this.schedule();
    this.socket
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

  renderStep(step) {
    if (!step.node) this.buildStep(step);
    const n = step.node;
    n.li.dataset.status = step.status;
    n.status.textContent = step.status;
    n.status.className = `status status-${step.status}`;
    n.attempt.textContent = step.attempt > 1 ? `attempt ${step.attempt}` : '';
    n.duration.textContent = formatDuration(elapsed(step.startedAt, step.finishedAt));

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
    { class: 'tool-call', dataset: { status: call.status } },
    call.agent ? el('span', { class: 'tool-agent' }, `${call.agent} › `) : null,
    el('code', { class: 'tool-name' }, call.tool ?? '?'),
    el('span', { class: `status status-${call.status}` }, call.status),
    el('code', { class: 'tool-args' }, `(${call.args === undefined ? '' : short(call.args)})`),
    ended,
    spoken,
  );
}
