// React hooks for runcast-client: `react` is a peer dependency, never bundled.
import { useEffect, useState } from 'react';

import { fold, newRun } from './fold.js';

const START = { run: null, events: [], status: null, waitingFor: [], error: null };

/**
 * A run kept live: `{ run, events, status, waitingFor, error }`. `events` is every event from
 * seq 1, each once (whatever reconnects, restarts or StrictMode's double effects happen);
 * `run` is its snapshot folded from them (the server's rules). Stops on unmount and when
 * `runId` changes.
 */
export function useRun(client, runId) {
  const [state, setState] = useState(START);
  useEffect(() => {
    setState(START);
    if (!client || !runId) return undefined;
    const controller = new AbortController();
    (async () => {
      try {
        const snapshot = await client.poll(runId);
        if (controller.signal.aborted) return;
        const steps = (snapshot.steps ?? []).map((step) => step.name);
        let run = newRun(
          snapshot.run_id,
          snapshot.workflow,
          snapshot.input,
          steps,
          snapshot.created_at,
          snapshot.owner,
          snapshot, // its scheduled_for, priority, concurrency_key and concurrency_limit
        );
        const events = [];
        for await (const event of client.events(runId, { signal: controller.signal })) {
          events.push(event);
          run = fold(structuredClone(run), event);
          setState({ run, events: [...events], status: run.status, waitingFor: run.waiting_for, error: null });
        }
      } catch (error) {
        if (!controller.signal.aborted) setState((before) => ({ ...before, error }));
      }
    })();
    return () => controller.abort();
  }, [client, runId]);
  return state;
}

/** The runs that match `filters` (workflow, status, owner), kept live: `{ runs, error }`, newest first. */
export function useRuns(client, filters = {}) {
  const key = JSON.stringify(filters);
  const [state, setState] = useState({ runs: [], error: null });
  useEffect(() => {
    setState({ runs: [], error: null });
    if (!client) return undefined;
    const controller = new AbortController();
    const byId = new Map();
    (async () => {
      try {
        for await (const run of client.watchRuns(JSON.parse(key), { signal: controller.signal })) {
          byId.set(run.run_id, run);
          const runs = [...byId.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
          setState({ runs, error: null });
        }
      } catch (error) {
        if (!controller.signal.aborted) setState((before) => ({ ...before, error }));
      }
    })();
    return () => controller.abort();
  }, [client, key]);
  return state;
}
