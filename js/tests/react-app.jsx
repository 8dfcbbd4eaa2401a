// A small React app on runcast-client/react, bundled by esbuild in tests/test_js_browser.py.
import React, { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';

import { RuncastClient } from '../index.js';
import { useRun, useRuns } from '../react.js';

function App({ client, runId }) {
  const { events, status, run, error } = useRun(client, runId);
  const { runs } = useRuns(client, { workflow: 'count' });
  window.state = { seqs: events.map((e) => e.seq), status, folded: run?.status ?? null, runs: runs.length, error: String(error) };
  return <p id="status">{status ?? 'loading'}</p>;
}

window.show = (url, runId) => {
  const client = new RuncastClient(url);
  createRoot(document.getElementById('root')).render(
    <StrictMode>
      <App client={client} runId={runId} />
    </StrictMode>,
  );
};
