// The runs view: one page of recent runs (newest first), filters, paging, live status.
//
// Only the current page is in the DOM. Each unfinished run on it is followed from the seq the
// listing saw, so its row changes when its run starts or ends; runs created elsewhere appear
// on the next listing (opening the view, Refresh, a filter, or a reconnect).

import { el, replaceChildren, show } from './dom.js';
import { FINISHED, elapsed, formatDuration, formatTime } from './format.js';

const PAGE_SIZE = 50;

const STATUS_OF_EVENT = {
  run_started: 'running',
  run_resumed: 'running',
  run_completed: 'completed',
  run_failed: 'failed',
  run_cancelled: 'cancelled',
};

export class RunsView {
  constructor({ socket, feeds, announce }) {
    this.socket = socket;
    this.feeds = feeds;
    this.announce = announce;
    this.cursors = []; // `before` cursors of the pages above this one; empty on the first page
    this.next = null;
    this.rows = new Map(); // run_id -> {run, tr, listener}
    this.generation = 0; // a listing answered after a newer one was asked for is dropped
    this.visible = false;

    this.body = document.getElementById('runs-body');
    this.workflowFilter = document.getElementById('filter-workflow');
    this.statusFilter = document.getElementById('filter-status');
    this.empty = document.getElementById('runs-empty');
    this.error = document.getElementById('runs-error');
    this.pageLabel = document.getElementById('runs-page');
    this.olderButton = document.getElementById('runs-older');
    this.newerButton = document.getElementById('runs-newer');
    this.newestButton = document.getElementById('runs-newest');

    for (const filter of [this.workflowFilter, this.statusFilter]) {
      filter.addEventListener('change', () => this.firstPage());
    }
    document.getElementById('runs-refresh').addEventListener('click', () => this.load());
    this.newestButton.addEventListener('click', () => this.firstPage());
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
    // Durations of running runs grow while the view is open.
    setInterval(() => {
      if (!this.visible) return;
      for (const row of this.rows.values()) if (row.run.status === 'running') this.paintDuration(row);
    }, 1000);
  }

  /** The workflow filter offers the server's workflows (and keeps a choice it does not know). */
  setWorkflows(workflows) {
    const current = this.workflowFilter.value;
    const names = workflows.map((wf) => wf.name);
    if (current && !names.includes(current)) names.push(current);
    replaceChildren(
      this.workflowFilter,
      el('option', { value: '' }, 'All workflows'),
      ...names.map((name) => el('option', { value: name }, name)),
    );
    this.workflowFilter.value = current;
  }

  setVisible(visible) {
    this.visible = visible;
    if (!visible) this.clear();
  }

  firstPage() {
    this.cursors = [];
    this.load();
  }

  load() {
    if (!this.visible || !this.socket.usable) return; // onReady lists again
    const generation = ++this.generation;
    const query = { type: 'list_runs', limit: PAGE_SIZE };
    if (this.workflowFilter.value) query.workflow = this.workflowFilter.value;
    if (this.statusFilter.value) query.status = this.statusFilter.value;
    if (this.cursors.length > 0) query.before = this.cursors[this.cursors.length - 1];
    this.socket
      .request(query)
      .then((reply) => {
        if (generation !== this.generation || !this.visible) return;
        show(this.error, false);
        this.render(reply.runs, reply.next);
      })
      .catch((err) => {
        if (generation !== this.generation || err.code === 'disconnected' || err.code === 'unauthorized') return;
        this.error.textContent = `Could not list runs: ${err.message}`;
        show(this.error, true);
      });
  }

  render(runs, next) {
    const old = this.rows;
    this.rows = new Map();
    for (const run of runs) {
      const row = this.buildRow(run);
      this.rows.set(run.run_id, row);
      if (!FINISHED.has(run.status)) {
        row.listener = this.feeds.watch(run.run_id, run.last_seq, { onEvents: (events) => this.update(row, events) });
      }
    }
    // Let go of the old rows' runs after following the new ones, so that a run on both
    // pages keeps its subscription instead of unsubscribing and subscribing again.
    for (const row of old.values()) if (row.listener) this.feeds.unwatch(row.listener);
    replaceChildren(this.body, ...[...this.rows.values()].map((row) => row.tr));

    this.next = next;
    show(this.empty, runs.length === 0);
    this.pageLabel.textContent = `Page ${this.cursors.length + 1}`;
    this.olderButton.disabled = next === null;
    this.newerButton.disabled = this.cursors.length === 0;
    this.newestButton.disabled = this.cursors.length === 0;
  }

  clear() {
    this.generation++;
    for (const row of this.rows.values()) if (row.listener) this.feeds.unwatch(row.listener);
    this.rows = new Map();
  }

  /** A row's element and the cells that change later. */
  buildRow(run) {
    const href = `#/runs/${encodeURIComponent(run.run_id)}`;
    const status = el('span', { class: `status status-${run.status}` }, run.status);
    const duration = el('td', { class: 'duration' });
    const tr = el(
      'tr',
      { dataset: { runId: run.run_id, status: run.status } },
      el('td', {}, el('a', { href, class: 'mono run-link' }, run.run_id)),
      el('td', { class: 'workflow-cell' }, run.workflow),
      el('td', {}, status),
      el('td', { class: 'created' }, el('time', { datetime: run.created_at }, formatTime(run.created_at))),
      duration,
    );
    const row = { run, tr, status, duration, listener: null };
    this.paintDuration(row);
    return row;
  }

  paintDuration(row) {
    const { run } = row;
    row.duration.textContent = run.started_at ? formatDuration(elapsed(run.started_at, run.finished_at)) : '';
  }

  /** Events of a run on this page: only those that change its status matter here. */
  update(row, events) {
    const { run } = row;
    const before = run.status;
    for (const event of events) {
      const status = STATUS_OF_EVENT[event.event];
      if (!status) continue;
      run.status = status;
      if (event.event === 'run_started') run.started_at = event.ts;
      if (FINISHED.has(status)) run.finished_at = event.ts;
    }
    if (run.status === before) return;
    row.status.className = `status status-${run.status}`;
    row.status.textContent = run.status;
    row.tr.dataset.status = run.status;
    this.paintDuration(row);
    if (FINISHED.has(run.status)) this.announce(`Run ${run.run_id} ${run.status}`);
  }
}
