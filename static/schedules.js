// The schedules view (#/schedules): the workflows started on a clock (contract 8.3), when
// each runs next and what it ran last, a form that makes one, and delete for those made here.

import { el, replaceChildren, show } from './dom.js';
import { formatTime } from './format.js';

const REFRESH_MS = 5000; // while shown: next and last runs move on

function when(schedule) {
  return schedule.cron ? `cron ${schedule.cron} (${schedule.timezone})` : `every ${schedule.every} s`;
}

export class SchedulesView {
  constructor({ client, announce }) {
    this.client = client;
    this.announce = announce;
    this.visible = false;
    this.timer = null;
    this.body = document.getElementById('schedule-rows');
    this.empty = document.getElementById('schedules-empty');
    this.listError = document.getElementById('schedules-error');
    this.form = document.getElementById('schedule-form');
    this.formError = document.getElementById('schedule-error');
    this.workflow = document.getElementById('schedule-workflow');
    this.kind = document.getElementById('schedule-kind');
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.create();
    });
    this.kind.addEventListener('change', () => this.showKind());
    // One delegated listener for the table: each "Delete" button names its schedule.
    this.body.addEventListener('click', (e) => {
      const button = e.target.closest('button[data-delete]');
      if (button) this.remove(button.dataset.delete);
    });
    this.showKind();
  }

  setWorkflows(workflows) {
    const chosen = this.workflow.value;
    replaceChildren(this.workflow, ...workflows.map((w) => el('option', { value: w.name }, w.name)));
    if (workflows.some((w) => w.name === chosen)) this.workflow.value = chosen;
  }

  setVisible(visible) {
    this.visible = visible;
    clearInterval(this.timer);
    this.timer = visible ? setInterval(() => this.load(), REFRESH_MS) : null;
    if (visible) this.load();
  }

  showKind() {
    const cron = this.kind.value === 'cron';
    show(document.getElementById('schedule-cron-field'), cron);
    show(document.getElementById('schedule-every-field'), !cron);
  }

  async load() {
    try {
      const reply = await this.client.request({ type: 'list_schedules' });
      show(this.listError, false);
      this.render(reply.schedules);
    } catch (err) {
      this.listError.textContent = `The schedules could not be listed: ${err.message}`;
      show(this.listError, true);
    }
  }

  render(schedules) {
    show(this.empty, schedules.length === 0);
    replaceChildren(
      this.body,
      ...schedules.map((s) => {
        const last = s.last_run_id
          ? el('a', { href: `#/runs/${encodeURIComponent(s.last_run_id)}` }, s.last_run_id)
          : el('span', { class: 'hint' }, 'none yet');
        const remove =
          s.source === 'api'
            ? el('button', { type: 'button', dataset: { delete: s.name }, 'aria-label': `Delete schedule ${s.name}` }, 'Delete')
            : el('span', { class: 'hint', title: 'Defined in code: change it there' }, 'in code');
        return el(
          'tr',
          { dataset: { schedule: s.name } },
          // data-label: on a phone each row is a card, each cell under its column's name (app.css).
          el('td', { class: 'mono', dataset: { label: 'Name' } }, s.name),
          el('td', { dataset: { label: 'Workflow' } }, s.workflow),
          el('td', { class: 'mono', dataset: { label: 'When' } }, when(s)),
          el('td', { class: 'next', dataset: { label: 'Next run' } }, el('time', { datetime: s.next_at }, formatTime(s.next_at))),
          el('td', { class: 'last', dataset: { label: 'Last run' } }, last),
          el('td', {}, remove),
        );
      }),
    );
  }

  async create() {
    const data = new FormData(this.form);
    const message = {
      type: 'create_schedule',
      name: String(data.get('name')).trim(),
      workflow: String(data.get('workflow')),
      catchup: String(data.get('catchup')),
    };
    if (this.kind.value === 'cron') {
      message.cron = String(data.get('cron')).trim();
      message.timezone = String(data.get('timezone')).trim() || 'UTC';
    } else {
      message.every = Number(data.get('every'));
    }
    const input = String(data.get('input')).trim();
    try {
      message.input = input === '' ? null : JSON.parse(input);
    } catch (err) {
      this.fail(`The input is not valid JSON: ${err.message}`);
      return;
    }
    try {
      const reply = await this.client.request(message);
      show(this.formError, false);
      this.announce(`Schedule ${reply.schedule.name} made; it runs next at ${formatTime(reply.schedule.next_at)}`);
      this.form.reset();
      this.showKind();
      await this.load();
    } catch (err) {
      this.fail(err.message);
    }
  }

  async remove(name) {
    try {
      await this.client.request({ type: 'delete_schedule', name });
      this.announce(`Schedule ${name} deleted`);
      await this.load();
    } catch (err) {
      this.listError.textContent = `Schedule ${name} could not be deleted: ${err.message}`;
      show(this.listError, true);
    }
  }

  fail(message) {
    this.formError.textContent = message;
    show(this.formError, true);
  }
}
