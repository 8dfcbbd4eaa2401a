// bench/js.py's Node side: read one run's events with runcast-client, or with a bare `ws`
// socket (the baseline), or follow many runs at once; prints one JSON line.
import WebSocket from 'ws';

import { RuncastClient } from '../node.js';

const [mode, url, arg] = process.argv.slice(2);

async function client(runId) {
  const c = new RuncastClient(url);
  const began = performance.now();
  let n = 0;
  for await (const event of c.events(runId)) n += event.seq > 0 ? 1 : 0;
  const seconds = (performance.now() - began) / 1000;
  c.close();
  return { events: n, seconds };
}

function bare(runId) {
  return new Promise((resolve) => {
    const began = performance.now(); // from the same moment as client(): before connecting
    const ws = new WebSocket(url);
    let n = 0;
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type === 'welcome') {
        ws.send(JSON.stringify({ type: 'subscribe', run_id: runId, after: 0, batch: true, id: 1 }));
      } else if (frame.type === 'events') {
        n += frame.events.length;
        if (frame.events.some((e) => e.event === 'run_completed')) {
          ws.close();
          resolve({ events: n, seconds: (performance.now() - began) / 1000 });
        }
      }
    });
  });
}

async function many(runIds) {
  const c = new RuncastClient(url);
  const before = process.memoryUsage().rss;
  const iterators = runIds.map((id) => c.events(id)[Symbol.asyncIterator]());
  await Promise.all(iterators.map((it) => it.next())); // every run followed: its first event in
  global.gc?.();
  const after = process.memoryUsage().rss;
  await Promise.all(iterators.map((it) => it.return()));
  c.close();
  return { runs: runIds.length, rss_kb: (after - before) / 1024 };
}

const result = mode === 'client' ? await client(arg) : mode === 'bare' ? await bare(arg) : await many(arg.split(','));
console.log(JSON.stringify(result));
