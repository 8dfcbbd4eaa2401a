// The workflows view: what can run (list_workflows) and the form that starts a run.

import { el, replaceChildren, show } from './dom.js';

// Example input per built-in workflow (PROTOCOL.md section 6); others start from null.
const EXAMPLES = {
  echo: { hello: 'world' },
  count: { n: 5, delay: 0.2 },
  chain: { n: 3, delay: 0.5 },
  sleep: { seconds: 30 },
  fail: { message: 'boom' },
  content: { topic: 'AI trends' },
};

function exampleFor(name) {
  return JSON.stringify(name in EXAMPLES ? EXAMPLES[name] : null, null, 2);
}

export class WorkflowsView {
  /** onStarted(run): a run was started from the form; onWorkflows(list): the list arrived. */
  constructor({ client, announce, onStarted, onWorkflows }) {
    this.client = client;
    this.announce = announce;
    this.onStarted = onStarted;
    this.onWorkflows = onWorkflows;
    this.workflows = [];
    this.example = null; // the example last put in the editor: replaced on a switch unless edited

    this.list = document.getElementById('workflow-list');
    this.form = document.getElementById('start-form');
    this.select = document.getElementById('start-workflow');
    this.description = document.getElementById('start-description');
    this.input = document.getElementById('start-input');
    this.inputError = document.getElementById('input-error');
    this.startError = document.getElementById('start-error');
    this.button = document.getElementById('start-button');
    this.listError = document.getElementById('workflows-error');

    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });
    this.select.addEventListener('change', () => this.choose(this.select.value, false));
    document.getElementById('start-example').addEventListener('click', () => this.choose(this.select.value, true));
    this.input.addEventListener('input', () => this.setInputError(null));
    // One delegated listener for the whole list: "Use" buttons pick the workflow in the form.
    this.list.addEventListener('click', (e) => {
      const button = e.target.closest('button[data-workflow]');
      if (!button) return;
      this.choose(button.dataset.workflow, false);
      this.input.focus();
    });
  }

  load() {
    this.client
      .request({ type: 'list_workflows' })
      .then((reply) => {
        show(this.listError, false);
        this.setWorkflows(reply.workflows);
      })
      .catch((err) => {
        if (err.code === 'disconnected' || err.code === 'unauthorized') return; // reloaded when ready
        this.listError.textContent = `Could not list workflows: ${err.message}`;
        show(this.listError, true);
      });
  }

  setWorkflows(workflows) {
    this.workflows = workflows;
    replaceChildren(
      this.list,
      ...workflows.map((wf) =>
        el(
          'li',
          { class: 'workflow', dataset: { workflow: wf.name } },
          el(
            'div',
            { class: 'workflow-head' },
            el('h3', {}, wf.name),
            el('button', { type: 'button', dataset: { workflow: wf.name }, 'aria-label': `Use ${wf.name}` }, 'Use'),
          ),
          wf.description ? el('p', { class: 'hint' }, wf.description) : null,
          el(
            'ol',
            { class: 'step-names', 'aria-label': `Steps of ${wf.name}` },
            ...wf.steps.map((step) => el('li', {}, step)),
          ),
        ),
      ),
    );
    const current = this.select.value;
    replaceChildren(this.select, ...workflows.map((wf) => el('option', { value: wf.name }, wf.name)));
    const keep = workflows.some((wf) => wf.name === current);
    const initial = keep ? current : workflows.some((wf) => wf.name === 'content') ? 'content' : workflows[0]?.name;
    if (initial) this.choose(initial, false);
    this.onWorkflows(workflows);
  }

  /** Pick a workflow; its example replaces the input unless the user edited it (or `force`). */
  choose(name, force) {
    this.select.value = name;
    const wf = this.workflows.find((w) => w.name === name);
    this.description.textContent = wf?.description ?? '';
    if (force || this.example === null || this.input.value === this.example || this.input.value.trim() === '') {
      this.example = exampleFor(name);
      this.input.value = this.example;
      this.setInputError(null);
    }
  }

  setInputError(message) {
    this.inputError.textContent = message ?? '';
    show(this.inputError, Boolean(message));
    this.input.setAttribute('aria-invalid', message ? 'true' : 'false');
  }

  setStartError(message) {
    this.startError.textContent = message ?? '';
    show(this.startError, Boolean(message));
  }

  submit() {
    this.setStartError(null);
    let input;
    try {
      input = JSON.parse(this.input.value);
    } catch (err) {
      // Checked here so that nothing malformed is ever sent.
      this.setInputError(`The input is not valid JSON: ${err.message}`);
      this.input.focus();
      return;
    }
    this.setInputError(null);
    const workflow = this.select.value;
    if (!workflow) {
      this.setStartError('Pick a workflow first.');
      return;
    }
    this.button.disabled = true;
    this.button.textContent = 'Starting…';
    // subscribe: false — the run view subscribes itself, from seq 0, like for any other run.
    this.client
      .request({ type: 'start', workflow, input, subscribe: false })
      .then((reply) => {
        this.announce(`Started ${workflow} run ${reply.run.run_id}`);
        this.onStarted(reply.run);
      })
      .catch((err) => {
        const text =
          err.code === 'disconnected'
            ? 'The connection dropped before the server answered; the run may have started: see Runs.'
            : `${err.code}: ${err.message}`;
        this.setStartError(text);
      })
      .finally(() => {
        this.button.disabled = false;
        this.button.textContent = 'Start run';
      });
  }
}
