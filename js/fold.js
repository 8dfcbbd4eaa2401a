// How a run's events make its snapshot: the rules of server/fold.py, written once for
// JavaScript (docs/protocol.md, "How events make a snapshot"): runcast-client's useRun and
// the dashboard (which imports it from /js/) fold with it. tests/test_fold.py checks that both
// folds agree after every event of the same recorded runs. Pure: no DOM, no clock.

const LIVE_STEP = new Set(['running', 'waiting', 'sleeping']);
const HELD_STEP = new Set(['waiting', 'sleeping']); // suspended until the run goes on

/** A step as a run is created with it: pending, never tried. */
export function newStep(name) {
  return { name, status: 'pending', output: null, error: null, attempts: 0, started_at: null, finished_at: null };
}

/** A run as it is created (before any event): pending, every step pending. */
export function newRun(runId, workflow, input, steps, createdAt, owner = null, order = {}) {
  return {
    run_id: runId,
    workflow,
    status: 'pending',
    input,
    output: null,
    error: null,
    created_at: createdAt,
    started_at: null,
    finished_at: null,
    last_seq: 0,
    steps: steps.map(newStep),
    waiting_for: [],
    wake_at: null,
    owner,
    scheduled_for: order.scheduled_for ?? null,
    priority: order.priority ?? 0,
    concurrency_key: order.concurrency_key ?? null,
    concurrency_limit: order.concurrency_limit ?? null,
  };
}

function ended(status, { output = false, error = false } = {}) {
  return (run, data, ts) => {
    const why = error ? (data.error ?? null) : null;
    for (const step of run.steps) {
      delete step.wake_at;
      if (LIVE_STEP.has(step.status)) Object.assign(step, { status: 'failed', error: why || status, finished_at: ts });
      else if (step.status === 'pending') step.status = 'skipped';
    }
    Object.assign(run, { status, finished_at: ts, waiting_for: [], wake_at: null });
    run.output = output ? (data.output ?? null) : null;
    run.error = why;
  };
}

const RUN_RULES = {
  run_started: (run, data, ts) => Object.assign(run, { status: 'running', started_at: ts }),
  run_resumed: (run) => { run.status = 'running'; },
  run_completed: ended('completed', { output: true }),
  run_failed: ended('failed', { error: true }),
  run_cancelled: ended('cancelled'),
};

/**
 * A suspended run's status once one of its asks or sleeps opens or closes: `waiting` while
 * anything it asked is open, else `sleeping` (with `wake_at`, the earliest time a step
 * sleeps until) while any step sleeps; once neither, it goes on, and so do its held steps.
 */
function settle(run) {
  const sleeps = run.steps.map((s) => s.wake_at).filter((t) => t !== undefined && t !== null);
  run.wake_at = null;
  if ((run.waiting_for ?? []).length > 0) run.status = 'waiting';
  else if (sleeps.length > 0) Object.assign(run, { status: 'sleeping', wake_at: sleeps.reduce((a, b) => (b < a ? b : a)) });
  else {
    run.status = 'running';
    for (const s of run.steps) if (HELD_STEP.has(s.status)) s.status = 'running';
  }
}

const inside = (run, path) => run.steps.filter((s) => s.name.startsWith(`${path}/`));

/**
 * Apply one event (an event frame) to `run`, in place, and return it. Step objects are
 * changed in place, never replaced. Unknown events change nothing but `last_seq`.
 */
export function fold(run, event) {
  const { event: name, step: path = null, ts = null } = event;
  const data = event.data ?? {};
  if (event.seq !== undefined && event.seq !== null) run.last_seq = event.seq;
  if (Object.hasOwn(RUN_RULES, name)) {
    RUN_RULES[name](run, data, ts);
    return run;
  }
  const step = path === null ? undefined : run.steps.find((s) => s.name === path);
  if (step === undefined) return run;
  switch (name) {
    case 'step_started':
      Object.assign(step, { status: 'running', started_at: ts, finished_at: null, error: null });
      step.attempts = Number.isInteger(data.attempt) ? data.attempt : step.attempts + 1;
      break;
    case 'step_completed':
      Object.assign(step, { status: 'completed', output: data.output ?? null, finished_at: ts });
      break;
    case 'step_failed':
      Object.assign(step, { status: 'failed', error: data.error ?? null, finished_at: ts });
      break;
    case 'step_skipped':
      Object.assign(step, { status: 'skipped', finished_at: ts });
      for (const child of inside(run, path)) if (child.status === 'pending') child.status = 'skipped';
      break;
    case 'progress': {
      // A Loop's next iteration (a step with steps inside): the steps inside start over.
      const children = inside(run, path);
      if (children.length > 0 && Number.isInteger(data.iteration) && data.iteration > step.attempts) {
        step.attempts = data.iteration;
        for (const child of children) Object.assign(child, { status: 'pending', output: null, error: null });
      }
      break;
    }
    case 'input_requested':
      step.status = 'waiting';
      run.waiting_for = [...(run.waiting_for ?? [])];
      if (!run.waiting_for.some((w) => w.request_id === data.request_id)) run.waiting_for.push({ ...data, step: path });
      settle(run);
      break;
    case 'input_received':
      run.waiting_for = (run.waiting_for ?? []).filter((w) => w.request_id !== data.request_id);
      settle(run);
      break;
    case 'sleep_started':
      Object.assign(step, { status: 'sleeping', wake_at: data.until ?? null });
      settle(run);
      break;
    case 'sleep_ended':
      delete step.wake_at;
      settle(run);
      break;
    default:
      break; // step_output, progress of a step, tool calls, and what this page does not know
  }
  return run;
}

/** `fold` each event in turn. */
export function foldAll(run, events) {
  for (const event of events) fold(run, event);
  return run;
}
