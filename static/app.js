// The dashboard's entry point: wires the client (the runcast-client package, as any web app
// would use it), the views and the router.
//
//   #/               runs table          (runs.js)
//   #/workflows      workflows and the start form (workflows.js)
//   #/schedules      schedules and the form that makes one (schedules.js)
//   #/runs/<run_id>  one run, live       (run.js)

import { RuncastClient } from '/js/client.js';
import { show } from './dom.js';
import { RunView } from './run.js';
import { RunsView } from './runs.js';
import { SchedulesView } from './schedules.js';
import { forgetToken, keepToken, signedInAs, socketUrl, storedToken, takeTokenFromAddress } from './session.js';
import { WorkflowsView } from './workflows.js';

const announcer = document.getElementById('announcer');
const connection = document.getElementById('connection');
const authForm = document.getElementById('auth-form');
const authMessage = document.getElementById('auth-message');
const authToken = document.getElementById('auth-token');
const identity = document.getElementById('identity');

takeTokenFromAddress(); // before anything reads the address or connects

/** Say something to screen-reader users (the polite live region). */
function announce(text) {
  // Clearing first makes a repeated message be read again.
  announcer.textContent = '';
  requestAnimationFrame(() => {
    announcer.textContent = text;
  });
}

function showConnection(state, detail) {
  const was = connection.dataset.state;
  connection.dataset.state = state;
  switch (state) {
    case 'connecting':
      connection.textContent = 'Connecting…';
      break;
    case 'connected':
      connection.textContent = 'Connected';
      if (was === 'reconnecting') announce('Reconnected to the server');
      break;
    case 'reconnecting': {
      const wait = detail.delayMs ? ` in ${(detail.delayMs / 1000).toFixed(detail.delayMs < 1000 ? 2 : 0)} s` : '';
      connection.textContent = `Offline: reconnecting${wait}…`;
      if (was !== 'reconnecting') announce('Connection to the server lost; reconnecting');
      break;
    }
    case 'token':
      connection.textContent = 'Token needed';
      break;
    default:
      console.warn('runcast: unknown connection state', state);
  }
}

/** Connected again (or for the first time): who we are, and every view afresh. */
function ready() {
  const who = signedInAs();
  identity.textContent = who === null ? '' : `Signed in as ${who}`;
  show(identity, who !== null);
  show(authForm, false);
  workflowsView.load();
  runsView.connected();
}

const client = new RuncastClient(socketUrl(), {
  token: storedToken,
  onState(state, detail) {
    showConnection(state, detail);
    if (state === 'connected') ready();
  },
  onAuthNeeded(message) {
    forgetToken();
    authMessage.textContent = message;
    if (authForm.hidden) {
      show(authForm, true);
      authToken.focus();
    }
  },
  onRunChanged: (run) => runsView.changed(run),
});
const runView = new RunView({ client, announce });
const runsView = new RunsView({ client, announce });
const workflowsView = new WorkflowsView({
  client,
  announce,
  onStarted: (run) => {
    location.hash = `#/runs/${encodeURIComponent(run.run_id)}`;
  },
  onWorkflows: (workflows) => {
    runsView.setWorkflows(workflows);
    schedulesView.setWorkflows(workflows);
  },
});
const schedulesView = new SchedulesView({ client, announce });

authForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const token = authToken.value.trim();
  if (!token) return;
  authMessage.textContent = 'Checking the token…';
  authToken.value = '';
  keepToken(token);
  client.setToken(storedToken);
});

const views = {
  runs: document.getElementById('view-runs'),
  workflows: document.getElementById('view-workflows'),
  schedules: document.getElementById('view-schedules'),
  run: document.getElementById('view-run'),
};

// A link's run id as written when it is not valid percent-encoding (`#/runs/%`): the
// server then says what is wrong with it, and the page stays alive.
function decoded(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function route(focus) {
  const hash = location.hash || '#/';
  const match = hash.match(/^#\/runs\/(.+)$/);
  const pages = { '#/workflows': 'workflows', '#/schedules': 'schedules' };
  const name = match ? 'run' : (pages[hash] ?? 'runs');
  for (const [key, view] of Object.entries(views)) show(view, key === name);
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (name === 'run') {
    const runId = decoded(match[1]);
    runView.open(runId);
    document.title = `Run ${runId} · runcast`;
  } else {
    runView.close();
    const titles = { workflows: 'Start a run', schedules: 'Schedules', runs: 'Runs' };
    document.title = `${titles[name]} · runcast`;
  }
  runsView.setVisible(name === 'runs');
  schedulesView.setVisible(name === 'schedules');
  if (name === 'runs') runsView.load();
  // After a navigation, move focus to the new view's heading, as a page load would.
  if (focus) views[name].querySelector('h1')?.focus();
}

// What the server's flags tell the page: a link from each run to its trace (--trace-url).
fetch('/dashboard.json')
  .then((response) => (response.ok ? response.json() : {}))
  .then((config) => runView.setTraceUrl(config.trace_url))
  .catch(() => {});

window.addEventListener('hashchange', () => route(true));
route(false);
client.connect();
