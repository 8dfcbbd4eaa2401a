// The questions a waiting run asks (`input_requested`), each with a form made from its schema.
//
// A yes-or-no question (a boolean schema, e.g. a step's confirmation) gets two buttons
// instead of a checkbox. A form is sent as `respond`; if the server refuses the answer (`invalid_input`, `conflict`)
// its message is shown next to the form and the run keeps waiting. A form goes away when its
// request is answered, by this page or anyone else (`input_received`), which run.js reports by
// calling `set` with the requests still open.

import { el, show } from './dom.js';
import { FieldError, buildAnswer, widgetKind } from './schemaform.js';

export class Asks {
  constructor({ root, client, announce }) {
    this.root = root;
    this.client = client;
    this.announce = announce;
    this.runId = null;
    this.forms = new Map(); // request_id -> {form, field, buttons, error, status, sending}
    // One delegated listener for every form in the list.
    root.addEventListener('submit', (e) => {
      const form = e.target.closest('form[data-request-id]');
      if (!form) return;
      e.preventDefault();
      this.send(form.dataset.requestId, e.submitter?.dataset.answer);
    });
  }

  /** The run whose questions are shown: a new run starts with none. */
  reset(runId) {
    this.runId = runId;
    this.forms.clear();
    this.root.replaceChildren();
    show(this.root, false);
  }

  /** `requests`: the open ones, in the order asked ({request_id, prompt, schema, step}). */
  set(requests) {
    const open = new Set(requests.map((r) => r.request_id));
    for (const [id, entry] of this.forms) {
      if (open.has(id)) continue;
      // Focus in a form that goes would fall to the page's start: keep the reader in the run.
      if (entry.form.contains(document.activeElement)) document.getElementById('run-title')?.focus();
      entry.form.remove();
      this.forms.delete(id);
    }
    for (const request of requests) {
      if (!this.forms.has(request.request_id)) this.add(request);
    }
    show(this.root, this.forms.size > 0);
  }

  add(request) {
    const id = `ask-${this.forms.size}-${String(request.request_id).replace(/[^A-Za-z0-9_-]/g, '_')}`;
    const yesNo = widgetKind(request.schema) === 'boolean';
    const field = yesNo ? null : buildAnswer(request.schema, id);
    const buttons = yesNo
      ? [
          el('button', { type: 'submit', class: 'primary', dataset: { answer: 'true' } }, 'Yes'),
          el('button', { type: 'submit', dataset: { answer: 'false' } }, 'No'),
        ]
      : [el('button', { type: 'submit', class: 'primary' }, 'Send answer')];
    const error = el('p', { class: 'error ask-error', role: 'alert', hidden: true });
    const status = el('p', { class: 'hint ask-status', 'aria-live': 'polite' });
    const prompt = typeof request.prompt === 'string' ? request.prompt : JSON.stringify(request.prompt);
    const form = el(
      'form',
      { class: 'card ask', novalidate: true, dataset: { requestId: request.request_id, step: request.step ?? '' } },
      el(
        'fieldset',
        {},
        el('legend', { class: 'ask-prompt' }, prompt || 'This run is waiting for input'),
        request.step ? el('p', { class: 'hint' }, 'Asked by step ', el('code', {}, request.step)) : null,
        deadline(request),
        field?.node,
      ),
      el('div', { class: 'row' }, ...buttons, status),
      error,
    );
    this.forms.set(request.request_id, { form, field, buttons, error, status, sending: false });
    this.root.append(form);
  }

  setError(entry, text, input) {
    entry.error.textContent = text ?? '';
    show(entry.error, Boolean(text));
    for (const node of entry.form.querySelectorAll('[aria-invalid]')) node.removeAttribute('aria-invalid');
    if (input) {
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    }
  }

  /** Send the form's answer; `pressed` is the answer of a yes-or-no button ('true', 'false'). */
  send(requestId, pressed) {
    const entry = this.forms.get(requestId);
    if (!entry || entry.sending || (!entry.field && pressed === undefined)) return;
    let value;
    try {
      value = entry.field ? entry.field.read() : pressed === 'true';
    } catch (err) {
      if (!(err instanceof FieldError)) throw err;
      this.setError(entry, err.message, err.input);
      return;
    }
    this.setError(entry, null);
    const runId = this.runId;
    entry.sending = true;
    for (const button of entry.buttons) button.disabled = true;
    entry.status.textContent = 'Sending…';
    this.client
      .request({ type: 'respond', run_id: runId, request_id: requestId, value })
      .then(() => {
        if (runId !== this.runId) return;
        entry.status.textContent = 'Answer sent.';
        this.announce(`Answer sent to run ${runId}`);
        // The form stays, disabled, until the run's `input_received` takes it away.
      })
      .catch((err) => {
        if (runId !== this.runId) return;
        entry.sending = false;
        for (const button of entry.buttons) button.disabled = false;
        entry.status.textContent = '';
        const reason = err.code === 'disconnected' ? 'not connected to the server; try again' : err.message;
        this.setError(entry, `The answer was not accepted (${err.code}): ${reason}`);
      });
  }
}

/** "Answer by 10:42:03; after that the step goes on with false", when the question has a timeout. */
function deadline(request) {
  if (!Number.isFinite(request.expires_at)) return null;
  const by = new Date(request.expires_at * 1000).toLocaleTimeString();
  const after = 'default' in request ? `the step goes on with ${JSON.stringify(request.default)}` : 'the step fails';
  return el('p', { class: 'hint ask-deadline' }, `Answer by ${by}; after that ${after}.`);
}
