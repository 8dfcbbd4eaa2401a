// The runs view, a live control room: counts by status, filters (one of them "waiting for
// input"), paging, and a table whose rows change in place through the runs feed.
//
// The feed (`subscribe_runs`) sends a `run_changed` frame whenever a run is created or changes
// status, or its step does. As the contract says, after every (re)connect the view subscribes
// first and lists second, and keeps for each run the snapshot with the highest `last_seq`, so a
// frame that crosses the listing is never lost nor shown twice. The first page takes new runs
// at its top (up to MAX_LIVE_ROWS); a run that stops matching the filters leaves the table.
// The counts are of the most recent runs this page has listed or seen (the scope is shown).

import { el, replaceChildren, show } from './dom.js';
import { FINISHED, elapsed, formatDuration, formatTime } from './format.js';

const PAGE_SIZE = 50;
const RECENT = 500; // runs listed for the counts
const MAX_LIVE_ROWS = 200; // new runs added to the first page before "show newest" is offered
const MAX_KNOWN = 5000; // snapshots kept for merging; the oldest unused go first
const COUNTED = ['waiting', 'running', 'sleeping', 'pending', 'completed', 'failed', 'cancelled'];
const COUNT_LABEL = { waiting: 'waiting for input' };

/**
 * Of two snapshots of one run, the one with the higher last_seq; at the same last_seq, the
 * newer one's fields over the older's (a listing's entry may lack what a frame had).
 */
export function keepNewest(old, run) {
  if (!old || run.last_seq > old.last_seq) return run;
  if (run.last_seq < old.last_seq) return old;
  return { ...old, ...run };
}

/** The order of the table: newest first (creation time, then id, as the server stores them). */
function newer(a, b) {
  if (a.created_at !== b.created_at) return (a.created_at ?? '') > (b.created_at ?? '');
  return a.run_id > b.run_id;
}

export class RunsView {
  constructor({ client, announce }) {
    this.client = client;
    this.announce = announce;
    this.cursors = []; // `before` cursors of the pages above this one; empty on the first page
    this.next = null;
    this.rows = new Map(); // run_id -> row, in table order
    this.known = new Map(); // run_id -> the snapshot with the highest last_seq seen
    this.recent = new Map(); // run_id -> snapshot: the runs the counts are of
    this.stepsOf = new Map(); // workflow -> its step names (list_workflows), for progress
    this.generation = 0; // a listing answered after a newer one was asked for is dropped
    this.crossing = null; // frames that came while a listing was on its way: applied after it
    this.feedWorkflow = null; // the workflow filter the feed has on this connection, '' for all
    this.visible = false;
    this.unshown = new Set(); // ids of new runs not added because the first page is full
    this.countsFrame = 0; // the counts are repainted at most once per animation frame

    this.body = document.getElementById('runs-body');
    this.workflowFilter = document.getElementById('filter-workflow');
    this.statusFilter = document.getElementById('filter-status');
    this.empty = document.getElementById('runs-empty');
    this.error = document.getElementById('runs-error');
    this.pageLabel = document.getElementById('runs-page');
    this.olderButton = document.getElementById('runs-older');
    this.newerButton = document.getElementById('runs-newer');
    this.newestButton = document.getElementById('runs-newest');
    this.counts = document.getElementById('runs-counts');
    this.countsScope = document.getElementById('counts-scope');
    this.more = document.getElementById('runs-more');

    for (const filter of [this.workflowFilter, this.statusFilter]) {
      filter.addEventListener('change', () => this.firstPage());
    }
    document.getElementById('runs-refresh').addEventListener('click', () => this.load());
    this.newestButton.addEventListener('click', () => this.firstPage());
    this.more.addEventListener('click', () => this.firstPage());
    this.newerButton.addEventListener('click', () => {
      this.cursors.pop();
      this.load();
    });
    this.olderButton.addEventListener('click', () => {
      if (this.next === null) return;
      this.cursors.push(this.next);
      this.load();
    });
    // One delegated listener for all rows: a click anywhere on a row opens the run. The id
    // cell holds a real link, which is what keyboards and screen readers use.
    this.body.addEventListener('click', (e) => {
      const tr = e.target.closest('tr[data-run-id]');
      if (!tr || e.target.closest('a')) return;
      location.hash = `#/runs/${encodeURIComponent(tr.dataset.runId)}`;
    });
    // One for the counts: each is a button that filters the table by its status.
    this.counts.addEventListener('click', (e) => {
      const button = e.target.closest('button[data-status]');
      if (!button) return;
      const status = button.dataset.status;
      this.statusFilter.value = this.statusFilter.value === status ? '' : status;
      this.firstPage();
    });
    // Durations of unfinished runs grow while the view is open.
    setInterval(() => {
      if (!this.visible) return;
      for (const row of this.rows.values()) if (!FINISHED.has(row.run.status)) this.paintDuration(row);
    }, 1000);
    this.paintCounts();
  }

  /** The workflow filter offers the server's workflows (and keeps a choice it does not know). */
  setWorkflows(workflows) {
    const current = this.workflowFilter.value;
    const names = workflows.map((wf) => wf.name);
    this.stepsOf = new Map(workflows.map((wf) => [wf.name, wf.steps ?? []]));
    if (current && !names.includes(current)) names.push(current);
    replaceChildren(
      this.workflowFilter,
      el('option', { value: '' }, 'All workflows'),
      ...names.map((name) => el('option', { value: name }, name)),
    );
    this.workflowFilter.value = current;
    for (const row of this.rows.values()) this.paint(row);
  }

  setVisible(visible) {
    if (visible === this.visible) return;
    this.visible = visible;
    if (visible) return; // the router calls load()
    this.generation++;
    this.crossing = null;
    if (this.feedWorkflow !== null && this.client.connected) {
      this.client.request({ type: 'unsubscribe_runs' }).catch(() => {}); // best effort
    }
    this.feedWorkflow = null;
  }

  /** A new connection has no feed yet: the next load subscribes again. */
  connected() {
    this.feedWorkflow = null;
    this.load();
  }

  firstPage() {
    this.cursors = [];
    this.load();
  }

  matches(run) {
    const workflow = this.workflowFilter.value;
    const status = this.statusFilter.value;
    return (!workflow || run.workflow === workflow) && (!status || run.status === status);
  }

  /** Subscribe first, then list (the contract's order), and merge what crossed the listing. */
  load() {
    if (!this.visible || !this.client.connected) return; // connected() lists again
    const generation = ++this.generation;
    const workflow = this.workflowFilter.value;
    this.crossing = [];
    const page = { type: 'list_runs', limit: PAGE_SIZE };
    const recent = { type: 'list_runs', limit: RECENT };
    if (workflow) page.workflow = recent.workflow = workflow;
    if (this.statusFilter.value) page.status = this.statusFilter.value;
    if (this.cursors.length > 0) page.before = this.cursors[this.cursors.length - 1];
    this.subscribeFeed(workflow)
      .then(() => Promise.all([this.client.request(page), this.client.request(recent)]))
      .then(([pageReply, recentReply]) => {
        if (generation !== this.generation || !this.visible) return;
        show(this.error, false);
        this.recent = new Map();
        for (const run of recentReply.runs) this.recent.set(run.run_id, this.remember(run));
        this.render(pageReply.runs.map((run) => this.remember(run)), pageReply.next);
        const crossed = this.crossing;
        this.crossing = null;
        for (const run of crossed) this.changed(run);
        this.paintCounts();
      })
      .catch((err) => {
        if (generation !== this.generation) return;
        this.crossing = null;
        if (err.code === 'disconnected' || err.code === 'unauthorized') return; // listed again when ready
        this.error.textContent = `Could not list runs: ${err.message}`;
        show(this.error, true);
      });
  }

  subscribeFeed(workflow) {
    if (this.feedWorkflow === workflow) return Promise.resolve();
    const message = { type: 'subscribe_runs' };
    if (workflow) message.workflow = workflow;
    return this.client.request(message).then(() => {
      this.feedWorkflow = workflow; // a second subscribe_runs replaces the filters
    });
  }

  /** Keep the snapshot with the highest last_seq; returns the one kept. */
  remember(run) {
    const kept = keepNewest(this.known.get(run.run_id), run);
    this.known.delete(run.run_id); // re-inserted last: the map's order is the order of use
    this.known.set(run.run_id, kept);
    if (this.known.size > MAX_KNOWN) {
      for (const id of this.known.keys()) {
        if (this.known.size <= MAX_KNOWN) break;
        if (!this.rows.has(id) && !this.recent.has(id)) this.known.delete(id);
      }
    }
    return kept;
  }

  /** A `run_changed` frame: update its row, add it, or take it out; recount. */
  changed(frame) {
    if (!this.visible) return;
    if (this.crossing) this.crossing.push(frame); // applied again once the listing is in
    const run = this.remember(frame);
    const workflow = this.workflowFilter.value;
    if (!workflow || run.workflow === workflow) this.keepRecent(run);
    const row = this.rows.get(run.run_id);
    if (row) {
      const before = row.run.status;
      row.run = run;
      if (this.matches(run)) this.paint(row);
      else this.drop(row);
      if (before !== run.status) this.announceStatus(run);
    } else if (this.matches(run) && this.belongsHere(run)) {
      if (this.rows.size >= MAX_LIVE_ROWS) {
        this.unshown.add(run.run_id);
        this.paintMore();
      } else {
        this.insert(this.buildRow(run));
      }
    }
    if (this.countsFrame === 0) {
      this.countsFrame = requestAnimationFrame(() => {
        this.countsFrame = 0;
        this.paintCounts();
      });
    }
  }

  /** Count this run; past twice RECENT runs, only the RECENT newest are counted. */
  keepRecent(run) {
    this.recent.set(run.run_id, run);
    if (this.recent.size <= 2 * RECENT) return;
    const newest = [...this.recent.values()].sort((a, b) => (newer(a, b) ? -1 : 1)).slice(0, RECENT);
    this.recent = new Map(newest.map((r) => [r.run_id, r]));
  }

  /** Only the first page takes runs it was not listed with, and only those within its range. */
  belongsHere(run) {
    if (this.cursors.length > 0 || this.crossing) return false;
    if (this.next === null || this.rows.size === 0) return true;
    const last = [...this.rows.values()].at(-1).run;
    return newer(run, last);
  }

  announceStatus(run) {
    if (run.status === 'waiting') this.announce(`Run ${run.run_id} is waiting for input`);
    else if (FINISHED.has(run.status)) this.announce(`Run ${run.run_id} ${run.status}`);
  }

  render(runs, next) {
    this.rows = new Map();
    for (const run of runs) this.rows.set(run.run_id, this.buildRow(run));
    replaceChildren(this.body, ...[...this.rows.values()].map((row) => row.tr));
    this.next = next;
    this.unshown = new Set();
    this.paintMore();
    this.pageLabel.textContent = `Page ${this.cursors.length + 1}`;
    this.olderButton.disabled = next === null;
    this.newerButton.disabled = this.cursors.length === 0;
    this.newestButton.disabled = this.cursors.length === 0;
  }

  /** Put a new row where it belongs in newest-first order (usually the top). */
  insert(row) {
    const entries = [...this.rows.values()];
    const before = entries.find((other) => newer(row.run, other.run));
    this.body.insertBefore(row.tr, before ? before.tr : null);
    const ordered = new Map();
    for (const other of entries) {
      if (other === before) ordered.set(row.run.run_id, row);
      ordered.set(other.run.run_id, other);
    }
    if (!before) ordered.set(row.run.run_id, row);
    this.rows = ordered;
    row.tr.classList.add('fresh');
    this.paintMore();
  }

  drop(row) {
    row.tr.remove();
    this.rows.delete(row.run.run_id);
    this.paintMore();
  }

  paintMore() {
    show(this.empty, this.rows.size === 0);
    const n = this.unshown.size;
    this.more.textContent = `${n} newer run${n === 1 ? '' : 's'} not shown: show the newest`;
    show(this.more, n > 0);
  }

  paintCounts() {
    const counts = Object.fromEntries(COUNTED.map((status) => [status, 0]));
    for (const run of this.recent.values()) counts[run.status] = (counts[run.status] ?? 0) + 1;
    const workflow = this.workflowFilter.value;
    const n = this.recent.size;
    const recent = n === 1 ? 'Of the most recent run' : `Of the ${n} most recent runs`;
    this.countsScope.textContent = `${recent}${workflow ? ` of ${workflow}` : ''}:`;
    const statuses = [...COUNTED, ...Object.keys(counts).filter((s) => !COUNTED.includes(s))];
    const current = this.statusFilter.value;
    const buttons = statuses.map((status) =>
      el(
        'li',
        {},
        el(
          'button',
          {
            type: 'button',
            class: `count count-${status}`,
            dataset: { status, count: String(counts[status]) },
            'aria-pressed': current === status ? 'true' : 'false',
          },
          el('span', { class: 'count-n' }, String(counts[status])),
          ` ${COUNT_LABEL[status] ?? status}`,
        ),
      ),
    );
    replaceChildren(document.getElementById('count-list'), ...buttons);
  }

  /** A row's element and the cells that change later. */
  buildRow(run) {
    const href = `#/runs/${encodeURIComponent(run.run_id)}`;
    const cells = {
      status: el('td', { class: 'status-cell' }),
      step: el('td', { class: 'step-cell' }),
      duration: el('td', { class: 'duration' }),
    };
    const tr = el(
      'tr',
      { dataset: { runId: run.run_id, workflow: run.workflow } },
      el('td', {}, el('a', { href, class: 'mono run-link' }, run.run_id)),
      el('td', { class: 'workflow-cell' }, run.workflow),
      cells.status,
      cells.step,
      el('td', { class: 'created' }, el('time', { datetime: run.created_at }, formatTime(run.created_at))),
      cells.duration,
    );
    const row = { run, tr, href, ...cells };
    this.paint(row);
    return row;
  }

  paint(row) {
    const { run } = row;
    row.tr.dataset.status = run.status;
    row.tr.dataset.seq = String(run.last_seq);
    const badge = el('span', { class: `status status-${run.status}` }, run.status);
    if (run.status === 'waiting') {
      const asks = Array.isArray(run.waiting_for) ? run.waiting_for : [];
      const prompt = asks.length > 0 && typeof asks[0].prompt === 'string' ? asks[0].prompt : '';
      const more = asks.length > 1 ? ` (+${asks.length - 1})` : '';
      replaceChildren(
        row.status,
        badge,
        el('a', { href: row.href, class: 'answer-link' }, prompt ? `Answer: ${prompt}${more}` : 'Answer'),
      );
    } else {
      replaceChildren(row.status, badge);
    }
    this.paintStep(row);
    this.paintDuration(row);
  }

  /** The step running now and how far the run is, as a bar when that is known. */
  paintStep(row) {
    const { run } = row;
    const progress = this.progressOf(run);
    const step = typeof run.current_step === 'string' ? run.current_step : '';
    const label = [step, progress ? `${progress.done}/${progress.total} steps` : ''].filter(Boolean).join(' · ');
    if (run.status === 'pending') {
      const later = run.scheduled_for && Date.parse(run.scheduled_for) > Date.now();
      const text = later ? `scheduled for ${formatTime(run.scheduled_for)}` : 'queued';
      const priority = run.priority ? ` · priority ${run.priority}` : '';
      const key = run.concurrency_key ? ` · key ${run.concurrency_key}` : '';
      replaceChildren(row.step, el('span', { class: 'hint' }, text + priority + key));
      return;
    }
    if (run.status === 'sleeping' && run.wake_at) {
      const where = step ? `${step} · ` : '';
      replaceChildren(row.step, el('span', { class: 'hint' }, `${where}sleeping until ${formatTime(run.wake_at)}`));
      return;
    }
    if (FINISHED.has(run.status) && run.status !== 'completed') {
      // How far a failed or cancelled run got ("1/2 steps"), and in which step when known.
      replaceChildren(row.step, label ? el('span', { class: 'step-now' }, label) : null);
      return;
    }
    const bar = el('progress', { 'aria-label': `Progress of run ${run.run_id}` });
    if (progress) {
      bar.max = progress.total;
      bar.value = Math.min(progress.done, progress.total);
    } else if (run.status === 'completed') {
      bar.max = 1;
      bar.value = 1;
    } // else indeterminate: running, but how far is not known
    replaceChildren(row.step, bar, label ? el('span', { class: 'step-now' }, label) : null);
  }

  progressOf(run) {
    if (Number.isFinite(run.steps_total) && run.steps_total > 0) {
      return { done: Number.isFinite(run.steps_done) ? run.steps_done : 0, total: run.steps_total };
    }
    const steps = this.stepsOf.get(run.workflow);
    if (!steps || steps.length === 0) return null;
    if (run.status === 'completed') return { done: steps.length, total: steps.length };
    const top = typeof run.current_step === 'string' ? run.current_step.split('/')[0] : null;
    const index = top === null ? -1 : steps.indexOf(top);
    return index < 0 ? null : { done: index, total: steps.length };
  }

  paintDuration(row) {
    const { run } = row;
    row.duration.textContent = run.started_at ? formatDuration(elapsed(run.started_at, run.finished_at)) : '';
  }
}
