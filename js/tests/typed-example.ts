// Type-checked by tests/test_js.py (tsc --noEmit --strict): the declarations describe the API.
import { RuncastClient, RuncastError, fold, newRun, type Run, type RunEvent, type Schedule } from '../index.js';
import { useRun, useRuns } from '../react.js';

export async function follow(url: string): Promise<number[]> {
  const client = new RuncastClient([url], { token: async () => 'token', maxDelayMs: 1000 });
  const run: Run = await client.start('count', { n: 3 }, { runId: 'r1', priority: 1 });
  const seqs: number[] = [];
  let folded = newRun(run.run_id, run.workflow, run.input, [], run.created_at);
  for await (const event of client.events(run.run_id, { after: 0 })) {
    const e: RunEvent = event;
    folded = fold(folded, e);
    seqs.push(e.seq);
  }
  try {
    await client.poll('missing');
  } catch (error) {
    if (error instanceof RuncastError) console.log(error.code);
  }
  const { runs, next } = await client.listRuns({ workflow: 'count', limit: 10 });
  const nightly: Schedule = await client.createSchedule({ name: 'nightly', workflow: 'count', cron: '0 3 * * *' });
  const schedules: Schedule[] = await client.listSchedules();
  console.log(nightly.next_at, schedules.length, (await client.deleteSchedule('nightly')).last_run_id);
  const page = new RuncastClient('ws://127.0.0.1:8000/ws', {
    onState: (state, { delayMs, message }) => console.log(state, delayMs, message),
    onAuthNeeded: (message: string) => console.log(message),
    onRunChanged: (changed: Run) => console.log(changed.status),
  });
  await page.connect();
  page.setToken(() => 'fresh');
  const reply = await page.request<{ type: string; pong?: boolean }>({ type: 'ping' });
  const signal = new AbortController().signal;
  for await (const e of page.events('r1', { signal, onSnapshot: (r: Run) => console.log(r.last_seq) })) {
    console.log(e.event, reply.type, page.connected);
  }
  for await (const changed of client.watchRuns({ status: 'running' })) console.log(changed.last_seq, runs.length, next);
  client.close();
  return seqs;
}

export function hooks(client: RuncastClient): string | null {
  const { run, events, status, waitingFor, error } = useRun(client, 'r1');
  const { runs } = useRuns(client, { workflow: 'count' });
  return status ?? run?.status ?? String(events.length + waitingFor.length + runs.length) + String(error);
}
